import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_RETENTION, StrataError, validateDatabaseName, validatePolicy } from '@strata/core';
import type { RetentionPolicy } from '@strata/core';

/** The name of the config file Strata looks for, from the current folder upwards. */
export const CONFIG_FILE = 'strata.config.json';

/** One database as a user writes it in strata.config.json. */
export interface DatabaseConfig {
  /** A SQLite path, `sqlite:PATH`, or a server URL (`postgres://...`). */
  readonly url: string;
  /** Retention for this database (overrides the top-level `retention`). */
  readonly retention?: RetentionPolicy;
}

/** strata.config.json as a user writes it. Relative paths are relative to the file's folder. */
export interface StrataConfig {
  readonly repository?: string;
  readonly databases?: Readonly<Record<string, DatabaseConfig>>;
  /** Retention for every database without its own (default: daily 7, weekly 8, monthly 12). */
  readonly retention?: RetentionPolicy;
}

/** A config file that was found and checked. */
export interface LoadedConfig {
  readonly file: string | undefined;
  readonly config: StrataConfig;
}

/** Finds and parses the config file; a missing file is fine, a malformed one is a usage error. */
export function loadConfig(explicit: string | undefined, cwd = process.cwd()): LoadedConfig {
  const file = explicit ? path.resolve(cwd, explicit) : findUp(cwd);
  if (!file) return { file: undefined, config: {} };
  if (!existsSync(file)) throw new StrataError('USAGE', `config: ${file} does not exist`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new StrataError('USAGE', `config: ${file} is not valid JSON (${(err as Error).message})`);
  }
  return { file, config: validateConfig(raw, file) };
}

function findUp(start: string): string | undefined {
  let dir = path.resolve(start);
  for (;;) {
    const candidate = path.join(dir, CONFIG_FILE);
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

function validateConfig(raw: unknown, file: string): StrataConfig {
  const problem = (where: string, what: string): never => {
    throw new StrataError('USAGE', `config: ${file}: ${where}: ${what}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) problem('top level', 'expected an object');
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!['repository', 'databases', 'retention', '$schema'].includes(key)) problem(key, 'unknown setting (expected repository, databases, retention)');
  }
  if (obj['repository'] !== undefined && typeof obj['repository'] !== 'string') problem('repository', `expected a folder path (got ${JSON.stringify(obj['repository'])})`);
  const databases: Record<string, DatabaseConfig> = {};
  if (obj['databases'] !== undefined) {
    if (typeof obj['databases'] !== 'object' || obj['databases'] === null) problem('databases', 'expected an object of name → { "url": ... }');
    for (const [name, value] of Object.entries(obj['databases'] as Record<string, unknown>)) {
      try {
        validateDatabaseName(name);
      } catch (err) {
        problem(`databases.${name}`, (err as Error).message);
      }
      const url = (value as { url?: unknown } | null)?.url;
      if (typeof url !== 'string' || url.length === 0) problem(`databases.${name}.url`, 'expected a SQLite path or a database URL');
      const retention = (value as { retention?: unknown }).retention;
      databases[name] = { url: resolveLocator(url as string, path.dirname(file)), ...(retention !== undefined ? { retention: checkRetention(retention, `databases.${name}.retention`, problem) } : {}) };
    }
  }
  const retention = obj['retention'] !== undefined ? checkRetention(obj['retention'], 'retention', problem) : undefined;
  const repository = typeof obj['repository'] === 'string' ? path.resolve(path.dirname(file), obj['repository']) : undefined;
  return { ...(repository ? { repository } : {}), databases, ...(retention ? { retention } : {}) };
}

const RETENTION_KEYS = ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly', 'keepWithin', 'keepLabels'];

function checkRetention(raw: unknown, where: string, problem: (where: string, what: string) => never): RetentionPolicy {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) problem(where, 'expected an object such as { "keepDaily": 7, "keepWeekly": 8 }');
  for (const key of Object.keys(raw as object)) if (!RETENTION_KEYS.includes(key)) problem(`${where}.${key}`, `unknown rule (expected ${RETENTION_KEYS.join(', ')})`);
  try {
    validatePolicy(raw as RetentionPolicy);
  } catch (err) {
    problem(where, (err as Error).message.replace(/^retention: /, ''));
  }
  return raw as RetentionPolicy;
}

/** Makes a relative SQLite path absolute against `base`; URLs pass through unchanged. */
export function resolveLocator(locator: string, base: string): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(locator) && !locator.startsWith('sqlite://')) return locator;
  const prefix = locator.startsWith('sqlite://') ? 'sqlite://' : locator.startsWith('sqlite:') ? 'sqlite:' : '';
  const file = locator.slice(prefix.length);
  return `${prefix || 'sqlite:'}${path.resolve(base, file)}`;
}

/**
 * A database named on the command line: a config name, or a path/URL with a name derived from its
 * file or database name (`derived`: the repository may then make it unique, see BackupOptions).
 */
export function resolveDatabase(arg: string, config: StrataConfig, nameOverride?: string): { name: string; locator: string; derived: boolean } {
  const configured = config.databases?.[arg];
  if (configured) return { name: nameOverride ?? arg, locator: configured.url, derived: false };
  const looksLikeLocation = arg.includes('/') || arg.includes('\\') || arg.includes(':') || /\.(db|sqlite3?|db3)$/i.test(arg) || existsSync(arg);
  if (!looksLikeLocation) {
    const known = Object.keys(config.databases ?? {});
    throw new StrataError(
      'USAGE',
      `database ${JSON.stringify(arg)} is not in ${CONFIG_FILE}${known.length ? ` (known: ${known.join(', ')})` : ''} and is not a file path or URL`,
    );
  }
  const locator = resolveLocator(arg, process.cwd());
  // A server URL's query (?sslmode=require) is not part of the database's name.
  const file = /^[a-z][a-z0-9+.-]*:\/\//i.test(locator) && !locator.startsWith('sqlite:') ? locator.replace(/[?#].*$/, '') : locator.replace(/^sqlite:(\/\/)?/, '');
  return { name: validateDatabaseName(nameOverride ?? databaseNameFromPath(file)), locator, derived: nameOverride === undefined };
}

/** A database name derived from a file path: its base name without extension, made safe. */
export function databaseNameFromPath(file: string): string {
  const base = file.split(/[\\/]/).pop() ?? 'database';
  const stem = base.replace(/\.(db|sqlite3?|db3)$/i, '');
  const safe = stem.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);
  return safe.length > 0 ? safe : 'database';
}

/** The retention of one database: its own in the config, else the config's top-level one, else the built-in tiers. */
export function retentionFor(config: StrataConfig, database: string): RetentionPolicy {
  return config.databases?.[database]?.retention ?? config.retention ?? DEFAULT_RETENTION;
}
