import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { DEFAULT_RETENTION, StrataError, parseDuration, validateDatabaseName, validatePolicy } from '@strata/core';
import type { EngineDisplay, RetentionPolicy } from '@strata/core';

/** The name of the config file Strata looks for, from the current folder upwards. */
export const CONFIG_FILE = 'strata.config.json';

/** One database as a user writes it in strata.config.json. */
export interface DatabaseConfig {
  /** A SQLite path, `sqlite:PATH`, or a server URL (`postgres://...`). */
  readonly url: string;
  /** Retention for this database (overrides the top-level `retention`). */
  readonly retention?: RetentionPolicy;
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

const RETENTION_DESCRIPTION =
  'What prune keeps (default: keepDaily 7, keepWeekly 8, keepMonthly 12). The newest good backup, backups tagged pinned and every backup a kept one depends on are always kept.';

/** `parseDuration`'s grammar, for editors; the check itself is parseDuration's, so its messages are the ones people see. */
const DURATION_PATTERN = '^([0-9]+(min|mo|[smhdwy]))+$';

const got = (input: unknown): string => (input === undefined ? 'nothing' : JSON.stringify(input));

function count(description: string) {
  return z.int({ error: (issue) => `must be a whole number ≥ 0 (got ${got(issue.input)})` }).min(0, { error: (issue) => `must be a whole number ≥ 0 (got ${got(issue.input)})` }).meta({ description });
}

const duration = z
  .string({ error: (issue) => `expected a duration such as "30d" (got ${got(issue.input)})` })
  .check((ctx) => {
    try {
      parseDuration(ctx.value, 'retention');
    } catch (err) {
      ctx.issues.push({ code: 'custom', input: ctx.value, message: (err as Error).message.replace(/^retention: /, '') });
    }
  })
  .meta({ id: 'duration', pattern: DURATION_PATTERN, description: 'A duration: 30min, 12h, 30d, 2w, 6mo, 1y, 1y6mo.' });

const RETENTION_SHAPE = {
  keepLast: count('The newest N backups.').optional(),
  keepHourly: count('The newest backup of each of the last N hours that hold one.').optional(),
  keepDaily: count('The newest backup of each of the last N days that hold one.').optional(),
  keepWeekly: count('The newest backup of each of the last N weeks that hold one.').optional(),
  keepMonthly: count('The newest backup of each of the last N months that hold one.').optional(),
  keepYearly: count('The newest backup of each of the last N years that hold one.').optional(),
  keepWithin: duration.optional().meta({ description: 'Every backup within this long of the newest one.' }),
  keepWithinPitr: duration.optional().meta({ description: 'The point-in-time window: every base restore point whose segments (strata replicate) reach into this long before the newest moment shipped, with its segments.' }),
  keepLabels: z
    .record(z.string(), z.union([duration, z.literal('forever')], {
        // A string that is almost a duration gets parseDuration's own words ("1m" is ambiguous ...).
        error: (issue) =>
          (issue.code === 'invalid_union' ? issue.errors.flat().find((inner) => inner.code === 'custom')?.message : undefined) ??
          `expected a duration such as "30d", or "forever" (got ${got(issue.input)})`,
      }), {
      error: 'expected an object of label → duration, such as { "pre-update": "30d" }',
    })
    .meta({ description: 'Backups with a label, kept for a duration or forever: { "pre-update": "30d" }.' })
    .optional(),
};

const retention = z
  .strictObject(RETENTION_SHAPE, {
    error: (issue) =>
      issue.code === 'unrecognized_keys' ? `unknown rule (expected ${Object.keys(RETENTION_SHAPE).join(', ')})` : 'expected an object such as { "keepDaily": 7, "keepWeekly": 8 }',
  })
  .check((ctx) => {
    // The rules one by one are checked above; whether together they keep anything is the core's rule.
    try {
      validatePolicy(ctx.value as RetentionPolicy);
    } catch (err) {
      ctx.issues.push({ code: 'custom', input: ctx.value, message: (err as Error).message.replace(/^retention: /, '') });
    }
  })
  .meta({ id: 'retention', description: RETENTION_DESCRIPTION });

/** How people name a database in "url", worded from the engines when the caller has them (the JSON schema). */
function urlDescription(engines: readonly EngineDisplay[]): { description: string; examples?: string[] } {
  if (engines.length === 0) return { description: 'A database file path or a database URL.' };
  const forms = engines.map((e) => (e.locator === 'file' ? `a ${e.name} file path (or ${e.schemes[0]}:PATH)` : `a ${e.schemes.map((s) => `${s}://`).join(' or ')} URL`));
  const passwords = engines.flatMap((e) => (e.passwordSources ? [e.passwordSources] : []));
  return {
    description: `Where the database is: ${forms.join(', ')}.${passwords.length > 0 ? ` Keep passwords out of this file: use ${passwords.join(', ')}.` : ''}`,
    examples: engines.map((e) => e.example),
  };
}

/** For editors; validateDatabaseName is the check (it also limits the length and refuses ".."). */
const DATABASE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]*$';

const DATABASE_SHAPE = (engines: readonly EngineDisplay[]) => ({
  url: z
    .string({ error: 'expected a SQLite path or a database URL' })
    .min(1, { error: 'expected a SQLite path or a database URL' })
    .meta(urlDescription(engines)),
  retention: retention.optional(),
});

const MIRROR_SHAPE = {
  repository: z
    .string({ error: (issue) => `expected the mirror's location, a folder path or a URL (got ${got(issue.input)})` })
    .min(1, { error: "expected the mirror's location, a folder path or a URL" })
    .meta({ description: "The mirror repository's location (create it with `strata init`): a folder path or a URL.", examples: ['/mnt/usb/strata'] }),
  passphraseFile: z
    .string({ error: (issue) => `expected a file path (got ${got(issue.input)})` })
    .meta({ description: "A file holding the mirror's passphrase. Without passphraseFile or passphraseCommand: STRATA_MIRROR_PASSPHRASE_COMMAND, STRATA_MIRROR_PASSPHRASE_FILE, STRATA_MIRROR_PASSPHRASE, else the repository's own passphrase." })
    .optional(),
  passphraseCommand: z
    .string({ error: (issue) => `expected a command (got ${got(issue.input)})` })
    .meta({ description: "A command (run with sh -c) whose output is the mirror's passphrase, e.g. `pass show strata-mirror`." })
    .optional(),
};

const mirror = z
  .union(
    [
      z.string().min(1),
      z.strictObject(MIRROR_SHAPE, {
        error: (issue) => (issue.code === 'unrecognized_keys' ? `unknown setting (expected ${Object.keys(MIRROR_SHAPE).join(', ')})` : undefined),
      }),
    ],
    {
      error: (issue) =>
        (issue.code === 'invalid_union' ? issue.errors.flat().find((inner) => inner.code === 'unrecognized_keys' || inner.path.length > 0)?.message : undefined) ??
        `expected the mirror's location, or { "repository": ..., "passphraseFile": ... } (got ${got(issue.input)})`,
    },
  )
  .meta({
    description:
      'A second repository (made with `strata init`) that every backup is copied to after it is complete, that restores fall back on when an artifact of the repository is missing or damaged, and that `strata health` checks. A location, or an object with its passphrase source.',
  });

const MIB = 1024 * 1024;

const STORAGE_SHAPE = {
  endpoint: z
    .url({ protocol: /^https?$/, error: (issue) => `expected an http:// or https:// URL such as "https://minio.example.com:9000" (got ${got(issue.input)})` })
    .check((ctx) => {
      // The URL would be shown in messages and kept in this file: no credentials in it.
      if (/^[a-z]+:\/\/[^/]*@/i.test(ctx.value)) ctx.issues.push({ code: 'custom', input: '‹redacted›', message: 'must not contain credentials (use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)' });
    })
    .meta({ description: 'The S3-compatible server, e.g. https://minio.example.com:9000. Default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, the profile\'s endpoint_url, else AWS.' })
    .optional(),
  region: z.string({ error: 'expected a region name such as "us-east-1"' }).min(1).meta({ description: 'The region. Default: AWS_REGION or the profile\'s region; us-east-1 for a custom endpoint without one.' }).optional(),
  pathStyle: z
    .boolean({ error: 'expected true or false' })
    .meta({ description: 'Path-style requests (https://host/bucket/key). Default: on when an endpoint is set (most S3-compatible servers have no per-bucket host names), off for AWS.' })
    .optional(),
  profile: z.string({ error: 'expected a profile name' }).min(1).meta({ description: 'A profile of ~/.aws/config and ~/.aws/credentials. Default: AWS_PROFILE, else default.' }).optional(),
  partSize: z
    .int({ error: (issue) => `expected a whole number of bytes (got ${got(issue.input)})` })
    .min(5 * MIB, { error: 'must be at least 5 MiB (5242880), the smallest part S3 accepts' })
    .max(5 * 1024 * MIB, { error: 'must be at most 5 GiB, the largest part S3 accepts' })
    .meta({ description: 'Bytes per multipart-upload part and per ranged GET (default 8388608, 8 MiB).' })
    .optional(),
  concurrency: z
    .int({ error: (issue) => `expected a whole number (got ${got(issue.input)})` })
    .min(1, { error: 'must be at least 1' })
    .max(64, { error: 'must be at most 64' })
    .meta({ description: 'Parts uploaded, and ranges downloaded, at once (default 4).' })
    .optional(),
  conditionalWrites: z
    .enum(['auto', 'required'], { error: 'expected "auto" or "required"' })
    .meta({
      description:
        'auto (default): exclusive creates use If-None-Match: * where the server has it, and a claim protocol where it answers 501 (safe only where listings are immediately consistent). required: refuse a server without conditional writes.',
    })
    .optional(),
};

const TOP_LEVEL_KEYS = ['repository', 'storage', 'mirror', 'databases', 'retention'];

/**
 * strata.config.json, described once: `loadConfig` validates with it and
 * extension/schemas/strata.config.schema.json is generated from it (`configJsonSchema`).
 * `engines` only words descriptions and examples.
 */
export function strataConfigSchema(engines: readonly EngineDisplay[] = []) {
  const databaseShape = DATABASE_SHAPE(engines);
  return z
    .strictObject(
      {
        $schema: z.string().optional(),
        repository: z
          .string({ error: (issue) => `expected a folder path (got ${got(issue.input)})` })
          .meta({ description: 'The repository the backups go to: a folder, or s3://BUCKET/PREFIX (create it with `strata init` or Strata: Add Database).', examples: ['./.backups', 's3://backups/prod'] })
          .optional(),
        storage: z
          .strictObject(STORAGE_SHAPE, {
            error: (issue) => (issue.code === 'unrecognized_keys' ? `unknown setting (expected ${Object.keys(STORAGE_SHAPE).join(', ')})` : 'expected an object such as { "endpoint": "https://minio.example.com:9000" }'),
          })
          .meta({ description: 'How Strata talks to an s3:// repository. No secrets here: credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the shared credentials file.' })
          .optional(),
        mirror: mirror.optional(),
        databases: z
          .record(
            z
              .string()
              .check((ctx) => {
                try {
                  validateDatabaseName(ctx.value);
                } catch (err) {
                  ctx.issues.push({ code: 'custom', input: ctx.value, message: (err as Error).message });
                }
              })
              .meta({ pattern: DATABASE_NAME_PATTERN }),
            z.strictObject(databaseShape, {
              error: (issue) =>
                issue.code === 'unrecognized_keys' ? `unknown setting (expected ${Object.keys(databaseShape).join(', ')})` : 'expected an object such as { "url": "./app.db" }',
            }),
            {
              // A bad name is reported with validateDatabaseName's own words.
              error: (issue) => (issue.code === 'invalid_key' ? issue.issues[0]?.message : 'expected an object of name → { "url": ... }'),
            },
          )
          .meta({ description: 'The databases, by the name their backups are filed under.' })
          .optional(),
        retention: retention.optional(),
      },
      {
        error: (issue) => (issue.code === 'unrecognized_keys' ? `unknown setting (expected ${TOP_LEVEL_KEYS.join(', ')})` : 'expected an object'),
      },
    )
    .meta({
      title: 'Strata configuration',
      description: "Which databases Strata backs up, where their backups go, and how long they are kept. Relative paths are relative to this file's folder.",
    });
}

/** The JSON Schema of strata.config.json (draft-07, as VS Code's jsonValidation reads it). */
export function configJsonSchema(engines: readonly EngineDisplay[]): Record<string, unknown> {
  const schema = z.toJSONSchema(strataConfigSchema(engines), { target: 'draft-7', unrepresentable: 'throw' }) as Record<string, unknown>;
  return { ...schema, $id: 'https://strata.invalid/schemas/strata.config.schema.json' };
}

const CONFIG_SCHEMA = strataConfigSchema();

/** The first problem, as `config: FILE: where: what` (the setting's path, what is wrong, what is expected). */
function validateConfig(raw: unknown, file: string): StrataConfig {
  const result = CONFIG_SCHEMA.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    // An unknown key is reported at the key itself, so the path names what to remove or fix.
    const at = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
    const where = at.length === 0 ? 'top level' : at.map(String).join('.');
    throw new StrataError('USAGE', `config: ${file}: ${where}: ${issue.message}`);
  }
  const parsed = result.data;
  const base = path.dirname(file);
  const databases: Record<string, DatabaseConfig> = {};
  for (const [name, db] of Object.entries(parsed.databases ?? {})) {
    databases[name] = { url: resolveLocator(db.url, base), ...(db.retention !== undefined ? { retention: db.retention as RetentionPolicy } : {}) };
  }
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
  };
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
