import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_RETENTION, StrataError, ownEntry, validateDatabaseName } from '@strata/core';
import type { EngineRegistry, RetentionPolicy } from '@strata/core';
import { isPostgresUrl, physicalLocator } from '@strata/engine-postgres';
import { configSchema } from './config-schema.js';
import { createDefaultEngines } from './engines.js';

/** The name of the config file Strata looks for, from the current folder upwards. */
export const CONFIG_FILE = 'strata.config.json';

/** One database as a user writes it in strata.config.json. */
export interface DatabaseConfig {
  /**
   * A SQLite path, `sqlite:PATH`, or a server URL (`postgres://...`). With `method: "physical"`
   * the loaded config holds the physical engine's locator (`postgres+physical://...`).
   */
  readonly url: string;
  /**
   * How a PostgreSQL server is backed up: `logical` (default: one database, as rows and schema) or
   * `physical` (the whole cluster's files over the replication protocol, with its write-ahead log
   * archived through `strata wal-push`, restorable to any moment).
   */
  readonly method?: 'logical' | 'physical';
  /** Retention for this database (overrides the top-level `retention`). */
  readonly retention?: RetentionPolicy;
  /** Jobs of this database for `strata daemon`, by name; they add to (or, by name, replace) the top-level `schedules`; `false` drops one. */
  readonly schedules?: Readonly<Record<string, JobConfig | false>>;
}

/** Commands a job runs around its work (with sh -c), each given the job's facts. */
export interface HooksConfig {
  /** Runs first; when it fails (or times out) the job is not run and counts as failed. */
  readonly before?: string;
  /** Runs after the job succeeded. */
  readonly after?: string;
  /** Runs after the job (or its before hook) failed. */
  readonly onFailure?: string;
  /** How long each hook may run (a duration, default 5min); then it is killed and counts as failed. */
  readonly timeout?: string;
}

/** What every scheduled job has. */
interface JobCommon {
  /** A cron expression of 5 fields (minute …) or 6 (second minute …). */
  readonly cron: string;
  /** The time zone the expression is read in (IANA name, default the machine's). */
  readonly timezone?: string;
  /** A run due while another job of the same database runs: skip it (default: daemon.overlap) or queue it. */
  readonly overlap?: 'skip' | 'queue';
  readonly hooks?: HooksConfig;
}

export type BackupJobConfig = JobCommon & { readonly job: 'backup'; readonly type?: 'full' | 'incremental' | 'differential' | 'schema-only' };
export type VerifyJobConfig = JobCommon & { readonly job: 'verify'; readonly level?: 'quick' | 'full'; readonly sample?: number };
export type PruneJobConfig = JobCommon & { readonly job: 'prune' };
export type HealthJobConfig = JobCommon & { readonly job: 'health'; readonly maxAge?: string; readonly maxUnverified?: string };
export type CopyJobConfig = JobCommon & { readonly job: 'copy' };
/** The continuous job: runs as long as the daemon does (no cron), restarted after a failure. */
export interface ReplicateJobConfig {
  readonly job: 'replicate';
  /** How often to ship, in milliseconds (default 1000). */
  readonly intervalMs?: number;
  readonly switchMode?: boolean;
  /** False: leave the database's checkpoints to its applications (ChangeCaptureOptions.leaveCheckpoints). */
  readonly checkpointLock?: boolean;
  /** How long to wait before starting it again after it failed (a duration, default 30s). */
  readonly restartAfter?: string;
}
export type ScheduledJobConfig = BackupJobConfig | VerifyJobConfig | PruneJobConfig | HealthJobConfig | CopyJobConfig;
export type JobConfig = ScheduledJobConfig | ReplicateJobConfig;

/** How `strata daemon` runs the jobs. */
export interface DaemonConfig {
  /** Jobs of different databases that may run at once (default 2). */
  readonly concurrency?: number;
  /** A run due while another job of the same database runs: skip (default) or queue it. */
  readonly overlap?: 'skip' | 'queue';
  /** Runs missed while the daemon was not running: skip them (default), or run each job once on start. */
  readonly missedRuns?: 'skip' | 'run-once';
  /** On SIGTERM: abort the running jobs (default; journaled as interrupted) or let them finish. */
  readonly onStop?: 'abort' | 'finish';
  /** A file the daemon keeps the metrics in (Prometheus text format), for node_exporter's textfile collector. */
  readonly metricsFile?: string;
}

/**
 * The mirror of the repository: a second repository (made with `strata init`) that every backup is
 * copied to, that restores fall back on, and that `strata health` watches.
 */
export interface MirrorConfig {
  /** Its location: a folder path (relative to the config file) or a URL of a supported storage. */
  readonly repository: string;
  /** A file holding its passphrase (relative to the config file). */
  readonly passphraseFile?: string;
  /** A command (run with sh -c) that prints its passphrase. */
  readonly passphraseCommand?: string;
}

/**
 * How Strata talks to an s3:// repository. Nothing secret: credentials come from the AWS
 * environment variables, the shared config and credentials files, or an instance role.
 */
export interface StorageConfig {
  readonly endpoint?: string;
  readonly region?: string;
  readonly pathStyle?: boolean;
  readonly profile?: string;
  readonly partSize?: number;
  readonly concurrency?: number;
  readonly conditionalWrites?: 'auto' | 'required';
}

/** strata.config.json as a user writes it. Relative paths are relative to the file's folder. */
export interface StrataConfig {
  readonly repository?: string;
  /** Settings of an s3:// repository (and an s3:// mirror). */
  readonly storage?: StorageConfig;
  /** A second repository that gets a copy of every backup (a string is its location). */
  readonly mirror?: MirrorConfig;
  readonly databases?: Readonly<Record<string, DatabaseConfig>>;
  /** Retention for every database without its own (default: daily 7, weekly 8, monthly 12). */
  readonly retention?: RetentionPolicy;
  /** Jobs every database gets from `strata daemon`, by name (a database's own `schedules` add to or replace them). */
  readonly schedules?: Readonly<Record<string, JobConfig>>;
  readonly daemon?: DaemonConfig;
  /** Where strata daemon reports failures, recoveries, escalations and (optionally) successes. */
  readonly notifications?: NotificationsConfig;
}

/** What a notification is about. */
export type NotificationEvent = 'failure' | 'recovery' | 'escalation' | 'success';

/** A secret: the name of an environment variable or a file (relative to the config file) holding it, never the value. */
export interface SecretSource {
  readonly env?: string;
  readonly file?: string;
}

export interface WebhookChannelConfig {
  readonly type: 'webhook';
  /** The URL (it usually holds a token), from the environment or a file. */
  readonly url: SecretSource;
  /** json (default): the job's facts; slack: { "text": ... } as Slack, Mattermost and Teams incoming webhooks take it. */
  readonly format?: 'json' | 'slack';
  readonly events: readonly NotificationEvent[];
}

export interface EmailChannelConfig {
  readonly type: 'email';
  readonly host: string;
  readonly port?: number;
  /** TLS from the first byte (port 465); otherwise STARTTLS when the server offers it. */
  readonly secure?: boolean;
  readonly user?: string;
  readonly password?: SecretSource;
  readonly from: string;
  readonly to: readonly string[];
  readonly events: readonly NotificationEvent[];
}

export type ChannelConfig = WebhookChannelConfig | EmailChannelConfig;

export interface NotificationsConfig {
  readonly channels: Readonly<Record<string, ChannelConfig>>;
  /** When a job's failures escalate: after this many in a row, or once they have lasted this long. */
  readonly escalation?: { readonly afterFailures?: number; readonly after?: string };
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


/** The first problem, as `config: FILE: where: what` (the setting's path, what is wrong, what is expected). */
function validateConfig(raw: unknown, file: string): StrataConfig {
  const result = configSchema().safeParse(raw);
  if (!result.success) {
    let issue = result.error.issues[0]!;
    // A database's job is a job or false: report what is wrong inside the job, at its own key.
    if (issue.code === 'invalid_union' && issue.path.includes('schedules')) {
      const inner = issue.errors[0]?.[0];
      if (inner && (inner.path.length > 0 || inner.code !== 'invalid_type')) issue = { ...inner, path: [...issue.path, ...inner.path] } as typeof issue;
    }
    // An unknown key is reported at the key itself, so the path names what to remove or fix.
    const at = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
    const where = at.length === 0 ? 'top level' : at.map(String).join('.');
    throw new StrataError('USAGE', `config: ${file}: ${where}: ${issue.message}`);
  }
  const parsed = result.data;
  const base = path.dirname(file);
  const databases: Record<string, DatabaseConfig> = {};
  for (const [name, db] of Object.entries(parsed.databases ?? {})) {
    if (db.method === 'physical' && !isPostgresUrl(db.url)) {
      throw new StrataError(
        'USAGE',
        `config: ${file}: databases.${name}.method: "physical" backs up a whole PostgreSQL cluster over the replication protocol, so "url" must be a postgres:// URL of it (such as "postgres://postgres@127.0.0.1:5432/postgres"); other databases are backed up logically (leave "method" out)`,
      );
    }
    databases[name] = {
      url: db.method === 'physical' ? physicalLocator(db.url) : resolveLocator(db.url, base),
      ...(db.method !== undefined ? { method: db.method } : {}),
      ...(db.retention !== undefined ? { retention: db.retention as RetentionPolicy } : {}),
      ...(db.schedules !== undefined ? { schedules: db.schedules as Record<string, JobConfig | false> } : {}),
    };
  }
  // A copy job copies to the mirror: without one it could never succeed.
  const copyJob = [
    ...Object.entries(parsed.schedules ?? {}).map(([job, config]) => ({ where: `schedules.${job}`, config })),
    ...Object.entries(parsed.databases ?? {}).flatMap(([db, c]) => Object.entries(c.schedules ?? {}).map(([job, config]) => ({ where: `databases.${db}.schedules.${job}`, config }))),
  ].find((j) => j.config !== false && j.config.job === 'copy');
  if (copyJob && parsed.mirror === undefined) throw new StrataError('USAGE', `config: ${file}: ${copyJob.where}: a copy job copies to the mirror; set "mirror" (a repository made with strata init)`);
  checkReplicateJobs(databases, (parsed.schedules ?? {}) as Record<string, JobConfig>, file);
  // A folder is relative to the config file; a URL (s3://…) is taken as it is.
  const location = (given: string): string => (/^[A-Za-z][A-Za-z0-9+.-]+:\/\//.test(given) ? given : path.resolve(base, given));
  const repository = parsed.repository === undefined ? undefined : location(parsed.repository);
  const mirrorConfig = parsed.mirror === undefined ? undefined : typeof parsed.mirror === 'string' ? { repository: parsed.mirror } : parsed.mirror;
  const mirror: MirrorConfig | undefined = mirrorConfig && {
    repository: location(mirrorConfig.repository),
    ...(mirrorConfig.passphraseFile !== undefined ? { passphraseFile: path.resolve(base, mirrorConfig.passphraseFile) } : {}),
    ...(mirrorConfig.passphraseCommand !== undefined ? { passphraseCommand: mirrorConfig.passphraseCommand } : {}),
  };
  return {
    ...(repository ? { repository } : {}),
    ...(parsed.storage ? { storage: parsed.storage as StorageConfig } : {}),
    ...(mirror ? { mirror } : {}),
    databases,
    ...(parsed.retention ? { retention: parsed.retention as RetentionPolicy } : {}),
    ...(parsed.schedules ? { schedules: parsed.schedules as Record<string, JobConfig> } : {}),
    ...(parsed.notifications ? { notifications: resolveNotifications(parsed.notifications as NotificationsConfig, base) } : {}),
    ...(parsed.daemon ? { daemon: { ...parsed.daemon, ...(parsed.daemon.metricsFile !== undefined ? { metricsFile: path.resolve(base, parsed.daemon.metricsFile) } : {}) } } : {}),
  };
}

/**
 * A replicate job follows a database's log of committed transactions: with the engine's continuous
 * capture, or, for an engine whose own log is archived (a physical cluster), by streaming that log
 * as `strata wal-receive` does. On any other database it could never run, so the config is refused
 * at load, naming the job (a top-level one by the database it would apply to).
 */
function checkReplicateJobs(databases: Readonly<Record<string, DatabaseConfig>>, defaults: Readonly<Record<string, JobConfig>>, file: string): void {
  let engines: EngineRegistry | undefined;
  for (const [database, db] of Object.entries(databases)) {
    for (const [name, job] of Object.entries(schedulesFor({ databases, schedules: defaults }, database))) {
      if (job.job !== 'replicate') continue;
      engines ??= createDefaultEngines();
      const engine = engines.forLocator(db.url);
      // A URL no engine takes is reported when a job uses it, as for any command.
      if (!engine || engine.changeCapture || engine.logArchive) continue;
      const own = ownEntry(db.schedules, name) !== undefined;
      const where = own ? `databases.${database}.schedules.${name}` : `schedules.${name} (for databases.${database})`;
      const capable = engines.kinds().flatMap((kind) => (engines!.get(kind)!.changeCapture || engines!.get(kind)!.logArchive ? [engines!.get(kind)!.display.name] : []));
      throw new StrataError(
        'USAGE',
        `config: ${file}: ${where}: continuous replication (job "replicate") is for ${capable.join(' and ')} databases only for now; ${database} is a ${engine.display.name} database. Schedule an incremental backup job for it instead${own ? '' : `, or drop the job for it with "schedules": { "${name}": false } in databases.${database}`}`,
      );
    }
  }
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
  const configured = ownEntry(config.databases, arg);
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
  return ownEntry(config.databases, database)?.retention ?? config.retention ?? DEFAULT_RETENTION;
}

/** The jobs of one database: the top-level `schedules` with its own added, replaced by name, or dropped (`false`). */
export function schedulesFor(config: StrataConfig, database: string): Record<string, JobConfig> {
  const merged: Record<string, JobConfig | false> = { ...(config.schedules ?? {}), ...(ownEntry(config.databases, database)?.schedules ?? {}) };
  return Object.fromEntries(Object.entries(merged).filter((entry): entry is [string, JobConfig] => entry[1] !== false));
}

/** Secret files relative to the config file's folder. */
function resolveNotifications(notifications: NotificationsConfig, base: string): NotificationsConfig {
  const resolve = (source: SecretSource): SecretSource => (source.file !== undefined ? { file: path.resolve(base, source.file) } : source);
  const channels: Record<string, ChannelConfig> = {};
  for (const [name, c] of Object.entries(notifications.channels)) {
    channels[name] = c.type === 'webhook' ? { ...c, url: resolve(c.url) } : { ...c, ...(c.password ? { password: resolve(c.password) } : {}) };
  }
  return { ...notifications, channels };
}

/** Reads a secret from where the config says it is; the error names the setting, never the value. */
export function readSecret(source: SecretSource, where: string): string {
  if (source.env !== undefined) {
    const value = process.env[source.env];
    if (value === undefined || value.trim() === '') {
      throw new StrataError(
        'USAGE',
        `${where}: the environment variable ${source.env} is ${value === undefined ? 'not set' : 'empty'}; set it in strata's environment (under systemd, in the unit's EnvironmentFile), or name a file holding the secret with { "file": "path" }`,
      );
    }
    return value.trim();
  }
  try {
    const value = readFileSync(source.file!, 'utf8').trim();
    if (value === '') throw new StrataError('USAGE', `${where}: ${source.file} is empty; put the secret in it`);
    return value;
  } catch (err) {
    if (err instanceof StrataError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const todo = code === 'ENOENT' ? 'create it with the secret in it' : code === 'EACCES' ? 'let the user strata runs as read it (and nobody else)' : 'check the path';
    throw new StrataError('USAGE', `${where}: cannot read ${source.file} (${code ?? (err as Error).message}); ${todo}`);
  }
}
