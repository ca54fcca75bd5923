import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Cron } from 'croner';
import type { z as Zod } from 'zod';
import type * as CompactZod from './config-zod.js';
import { BACKUP_TYPES, DEFAULT_RETENTION, parseDuration, validateDatabaseName, validatePolicy } from '@strata/core';
import type { EngineDisplay, RetentionPolicy } from '@strata/core';

/**
 * strata.config.json's schema, in zod. zod is loaded, and the schema built, the first time one is
 * needed (a config file is read, or its JSON Schema generated): zod is about a hundred modules,
 * which every start of `strata` without a config file (a backup with --repo, an archive_command,
 * a hook) would otherwise load and build for nothing. Loaded with require (zod ships CommonJS
 * too) because loadConfig is synchronous; every schema here comes from that one copy of zod:
 * config-zod.cjs, the functions config-zod.ts names bundled into one file by
 * scripts/compact-zod.mjs (a tenth of the package's loading time), or, in a build that has not
 * made it (a bare `tsc -b`), the zod package, which has the same functions.
 */
const requireLazily = createRequire(import.meta.url);
const COMPACT_ZOD = new URL('./config-zod.cjs', import.meta.url);

/**
 * The functions of zod the schema is built with. The compact file must export each: passing it as
 * one is the check (named here, not with config-zod.ts's types, which the SDK's bundled type
 * declarations could not carry: they re-export `enum`).
 */
type ConfigZod = Pick<typeof Zod, 'array' | 'boolean' | 'discriminatedUnion' | 'enum' | 'int' | 'literal' | 'record' | 'strictObject' | 'string' | 'toJSONSchema' | 'union' | 'url'>;

type Schemas = ReturnType<typeof buildSchemas>;
let built: Schemas | undefined;

function schemas(): Schemas {
  return (built ??= buildSchemas(requireLazily(existsSync(COMPACT_ZOD) ? fileURLToPath(COMPACT_ZOD) : 'zod') as typeof CompactZod));
}

/**
 * strata.config.json, described once: `loadConfig` validates with it and
 * extension/schemas/strata.config.schema.json is generated from it (`configJsonSchema`).
 * `engines` only words descriptions and examples.
 */
export function strataConfigSchema(engines: readonly EngineDisplay[] = []): ReturnType<Schemas['strataConfigSchema']> {
  return schemas().strataConfigSchema(engines);
}

/** The JSON Schema of strata.config.json (draft-07, as VS Code's jsonValidation reads it). */
export function configJsonSchema(engines: readonly EngineDisplay[]): Record<string, unknown> {
  return schemas().configJsonSchema(engines);
}

/** The schema `loadConfig` checks a config file with (built once). */
export function configSchema(): Schemas['configSchema'] {
  return schemas().configSchema;
}

function buildSchemas(z: ConfigZod) {
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
    keepWithinPitr: duration.optional().meta({ description: 'The point-in-time window: every base restore point whose segments (strata replicate) reach into this long before the newest moment shipped, with its segments; where no segments cover it (a database that is not replicated), every restore point within it and the newest before it.' }),
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

  const OVERLAP = z.enum(['skip', 'queue'], { error: 'expected "skip" or "queue"' });

  const cron = z
    .string({ error: (issue) => `expected a cron expression such as "0 2 * * *" (got ${got(issue.input)})` })
    .check((ctx) => {
      // croner parses it, so what is accepted here is exactly what the daemon runs.
      try {
        new Cron(ctx.value, { mode: '5-or-6-parts', paused: true });
      } catch (err) {
        ctx.issues.push({ code: 'custom', input: ctx.value, message: `not a cron expression of 5 or 6 fields (${(err as Error).message.replace(/^CronPattern: /, '')})` });
      }
    })
    .meta({ description: 'When it runs: a cron expression of 5 fields (minute hour day-of-month month day-of-week) or 6 (a leading second).', examples: ['0 2 * * *', '*/30 * * * *', '0 0 3 * * 0'] });

  const timezone = z
    .string({ error: (issue) => `expected an IANA time zone such as "Europe/Berlin" (got ${got(issue.input)})` })
    .check((ctx) => {
      try {
        new Intl.DateTimeFormat('en', { timeZone: ctx.value });
      } catch {
        ctx.issues.push({ code: 'custom', input: ctx.value, message: `unknown time zone ${JSON.stringify(ctx.value)} (expected an IANA name such as "Europe/Berlin" or "UTC")` });
      }
    })
    .meta({ description: "The time zone the cron expression is read in (an IANA name; default the machine's)." });

  const HOOKS_SHAPE = {
    before: z.string({ error: 'expected a command' }).min(1).meta({ description: 'Runs (sh -c) before the job; a failure or timeout aborts the job.' }).optional(),
    after: z.string({ error: 'expected a command' }).min(1).meta({ description: 'Runs (sh -c) after the job succeeded.' }).optional(),
    onFailure: z.string({ error: 'expected a command' }).min(1).meta({ description: 'Runs (sh -c) after the job or its before hook failed.' }).optional(),
    timeout: duration.optional().meta({ description: 'How long each hook may run before it is killed (default 5min).' }),
  };

  const hooks = z
    .strictObject(HOOKS_SHAPE, {
      error: (issue) => (issue.code === 'unrecognized_keys' ? `unknown hook (expected ${Object.keys(HOOKS_SHAPE).join(', ')})` : 'expected an object such as { "before": "./maintenance on" }'),
    })
    .meta({ description: 'Commands run around the job. Each gets the job\'s facts as STRATA_* environment variables and as one JSON document on stdin; its exit status and output go to the journal.' });

  const JOB_COMMON = {
    cron,
    timezone: timezone.optional(),
    overlap: OVERLAP.optional().meta({ description: 'A run due while another job of the same database runs: skip it or queue it (default: daemon.overlap).' }),
    hooks: hooks.optional(),
  };

  function jobShape<K extends string, S extends Zod.core.$ZodLooseShape>(kind: K, description: string, shape: S) {
    const full = { job: z.literal(kind), ...shape };
    return z
      .strictObject(full, { error: (issue) => (issue.code === 'unrecognized_keys' ? `unknown setting of a ${kind} job (expected ${Object.keys(full).join(', ')})` : undefined) })
      .meta({ description });
  }

  const JOB_KINDS = ['backup', 'verify', 'prune', 'health', 'replicate', 'copy'] as const;

  const job = z
    .discriminatedUnion(
      'job',
      [
        jobShape('backup', 'A backup of the database.', {
          ...JOB_COMMON,
          type: z.enum(BACKUP_TYPES as unknown as ['full', 'incremental', 'differential', 'schema-only'], { error: `expected one of ${BACKUP_TYPES.join(', ')}` }).optional().meta({ description: 'full (default), incremental or differential (a full one when there is none yet), or schema-only.' }),
        }),
        jobShape('verify', 'A verification of restore points.', {
          ...JOB_COMMON,
          level: z.enum(['quick', 'full'], { error: 'expected "quick" or "full"' }).optional().meta({ description: 'quick (default): artifacts and hashes; full: also restore into a scratch database and compare.' }),
          sample: z
            .int({ error: (issue) => `expected a whole number ≥ 1 (got ${got(issue.input)})` })
            .min(1, { error: 'must be at least 1' })
            .optional()
            .meta({ description: 'Verify this many restore points per run, the oldest never verified at this level first (then the longest ago). Without it: the newest restore point.' }),
        }),
        jobShape('prune', 'Removes the backups the retention no longer keeps.', JOB_COMMON),
        jobShape('health', "Fails when the database's backups are unhealthy (what strata health checks, for this database).", {
          ...JOB_COMMON,
          maxAge: duration.optional().meta({ description: "The newest good backup's age limit (default 25h)." }),
          maxUnverified: duration.optional().meta({ description: 'How long without a passed verification (default 8d).' }),
        }),
        jobShape('copy', "Copies the database's restore points the mirror lacks into the mirror (the top-level \"mirror\").", JOB_COMMON),
        jobShape('replicate', 'Continuous protection (strata replicate): runs as long as the daemon does, no cron; started again after a failure.', {
          intervalMs: z
            .int({ error: (issue) => `expected a whole number of milliseconds (got ${got(issue.input)})` })
            .min(50, { error: 'must be at least 50' })
            .max(3_600_000, { error: 'must be at most 3600000 (1h)' })
            .optional()
            .meta({ description: 'Ship at least this often, in milliseconds (default 1000).' }),
          switchMode: z.boolean({ error: 'expected true or false' }).optional().meta({ description: 'Switch the database into the journal mode replication reads instead of refusing it.' }),
          checkpointLock: z
            .boolean({ error: 'expected true or false' })
            .optional()
            .meta({ description: "SQLite: false leaves the checkpoints to the application (strata replicate --no-checkpoint-lock); by default replicate holds SQLite's checkpoint lock and does them itself." }),
          restartAfter: duration.optional().meta({ description: 'How long to wait before starting it again after it failed (default 30s).' }),
        }),
      ],
      {
        error: (issue) =>
          issue.code === 'invalid_union' && (issue as { note?: string }).note === 'No matching discriminator'
            ? `"job" must be one of ${JOB_KINDS.join(', ')} (got ${got((issue.input as { job?: unknown } | undefined)?.job)})`
            : `expected a job such as { "job": "backup", "type": "full", "cron": "0 2 * * *" }`,
      },
    )
    .meta({ id: 'job' });

  function JOB_NAME_PATTERN_CHECK(what = 'channel') {
    return z.string().check((ctx) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(ctx.value)) ctx.issues.push({ code: 'custom', input: ctx.value, message: `${what} name ${JSON.stringify(ctx.value)} must be letters, digits, ".", "_" or "-" (up to 64, starting with a letter or digit)` });
    });
  }

  const NOTIFICATION_EVENTS = ['failure', 'recovery', 'escalation', 'success'] as const;

  const SECRET_SHAPE = {
    env: z.string({ error: 'expected the name of an environment variable' }).regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { error: 'expected the name of an environment variable' }).optional().meta({ description: 'The environment variable holding it.' }),
    file: z.string({ error: 'expected a file path' }).min(1).optional().meta({ description: "A file holding it (relative to this file's folder); surrounding whitespace is dropped." }),
  };

  const secret = (what: string) =>
    z
      .strictObject(SECRET_SHAPE, {
        error: (issue) =>
          issue.code === 'unrecognized_keys'
            ? `unknown setting (expected env or file)`
            : `${what} is a secret: give { "env": "VARIABLE" } or { "file": "path" }, never the value itself`,
      })
      .check((ctx) => {
        if ((ctx.value.env === undefined) === (ctx.value.file === undefined)) ctx.issues.push({ code: 'custom', input: ctx.value, message: `give one of env or file for ${what}` });
      })
      .meta({ description: `Where ${what} comes from: an environment variable or a file, so that it is never in this file.` });

  const events = z
    .array(z.enum(NOTIFICATION_EVENTS, { error: `expected one of ${NOTIFICATION_EVENTS.join(', ')}` }), { error: `expected a list of events such as ["failure", "recovery"]` })
    .min(1, { error: 'expected at least one event' })
    .meta({ description: 'What it is told: failure (every failed run), recovery (the first success after failures), escalation (once per run of failures, see escalation), success (every successful run).' });

  const WEBHOOK_SHAPE = {
    type: z.literal('webhook'),
    url: secret('the webhook URL'),
    format: z.enum(['json', 'slack'], { error: 'expected "json" or "slack"' }).optional().meta({ description: 'json (default): the facts of the job as a JSON object; slack: { "text": ... }, as Slack, Mattermost and Teams incoming webhooks take it.' }),
    events,
  };

  const EMAIL_SHAPE = {
    type: z.literal('email'),
    host: z.string({ error: 'expected the SMTP server host name' }).min(1).meta({ description: 'The SMTP server.' }),
    port: z.int({ error: 'expected a port number' }).min(1).max(65535, { error: 'expected a port number' }).optional().meta({ description: 'Default 587 (465 with secure).' }),
    secure: z.boolean({ error: 'expected true or false' }).optional().meta({ description: 'TLS from the first byte (port 465). Otherwise STARTTLS is used when the server offers it.' }),
    user: z.string({ error: 'expected a user name' }).min(1).optional().meta({ description: 'The SMTP user name (not secret).' }),
    password: secret('the SMTP password').optional(),
    from: z.string({ error: 'expected an address' }).min(3).meta({ description: 'The sender address.' }),
    to: z.array(z.string({ error: 'expected an address' }).min(3), { error: 'expected a list of addresses' }).min(1, { error: 'expected at least one address' }).meta({ description: 'The recipients.' }),
    events,
  };

  const channel = z
    .discriminatedUnion(
      'type',
      [
        z.strictObject(WEBHOOK_SHAPE, { error: (issue) => (issue.code === 'unrecognized_keys' ? `unknown setting of a webhook (expected ${Object.keys(WEBHOOK_SHAPE).join(', ')})` : undefined) }).meta({ description: 'An HTTP POST of a JSON body.' }),
        z.strictObject(EMAIL_SHAPE, { error: (issue) => (issue.code === 'unrecognized_keys' ? `unknown setting of an email channel (expected ${Object.keys(EMAIL_SHAPE).join(', ')})` : undefined) }).meta({ description: 'An email over SMTP.' }),
      ],
      {
        error: (issue) =>
          issue.code === 'invalid_union' && (issue as { note?: string }).note === 'No matching discriminator'
            ? `"type" must be webhook or email (got ${got((issue.input as { type?: unknown } | undefined)?.type)})`
            : 'expected a channel such as { "type": "webhook", "url": { "env": "SLACK_WEBHOOK_URL" }, "events": ["failure", "recovery"] }',
      },
    );

  const NOTIFICATIONS_SHAPE = {
    channels: z
      .record(JOB_NAME_PATTERN_CHECK(), channel, { error: (issue) => (issue.code === 'invalid_key' ? issue.issues[0]?.message : 'expected an object of channel name → channel') })
      .meta({ description: 'The channels, by name.' }),
    escalation: z
      .strictObject(
        {
          afterFailures: z.int({ error: 'expected a whole number' }).min(1, { error: 'must be at least 1' }).optional().meta({ description: 'Escalate when a job has failed this many times in a row (default 3).' }),
          after: duration.optional().meta({ description: 'Escalate once a job has been failing this long (e.g. 30min), whichever comes first.' }),
        },
        { error: (issue) => (issue.code === 'unrecognized_keys' ? 'unknown setting (expected afterFailures, after)' : 'expected an object such as { "afterFailures": 3, "after": "30min" }') },
      )
      .optional()
      .meta({ description: 'When a job\'s failures go to the channels with the "escalation" event: once per run of failures.' }),
  };

  /** Job and channel names: they appear in log lines, metric labels and environment variables. */
  const JOB_NAME = JOB_NAME_PATTERN_CHECK('job');

  const schedules = (withFalse: boolean) =>
    z
      .record(JOB_NAME, withFalse ? z.union([job, z.literal(false)], { error: (issue) => (issue.code === 'invalid_union' ? issue.errors.flat()[0]?.message : undefined) }) : job, {
        error: (issue) => (issue.code === 'invalid_key' ? issue.issues[0]?.message : 'expected an object of job name → { "job": ..., "cron": ... }'),
      })
      .meta({
        description: withFalse
          ? 'Jobs of this database for strata daemon, by name: they add to the top-level schedules, replace the one of the same name, or drop it with false.'
          : 'Jobs every database gets from strata daemon, by name (a database\'s own "schedules" add to, replace or drop them).',
      });

  const DAEMON_SHAPE = {
    concurrency: z
      .int({ error: (issue) => `expected a whole number (got ${got(issue.input)})` })
      .min(1, { error: 'must be at least 1' })
      .max(64, { error: 'must be at most 64' })
      .optional()
      .meta({ description: 'Jobs of different databases that may run at once (default 2). Jobs of one database never overlap.' }),
    overlap: OVERLAP.optional().meta({ description: 'A run due while another job of the same database runs: skip it (default) or queue it (one waiting run per job). Either is journaled.' }),
    missedRuns: z
      .enum(['skip', 'run-once'], { error: 'expected "skip" or "run-once"' })
      .optional()
      .meta({ description: 'Runs missed while the daemon was down: skip (default) waits for the next one; run-once runs each job that missed a run once on start (known from the journal).' }),
    onStop: z
      .enum(['abort', 'finish'], { error: 'expected "abort" or "finish"' })
      .optional()
      .meta({ description: 'On SIGTERM: abort the running jobs (default; their journal entries say interrupted) or let them finish; no new job starts either way.' }),
    metricsFile: z
      .string({ error: (issue) => `expected a file path ending in .prom (got ${got(issue.input)})` })
      .regex(/\.prom$/, { error: "expected a file path ending in .prom (node_exporter's textfile collector reads only those)" })
      .optional()
      .meta({ description: "A file (relative to this file's folder) the daemon keeps the metrics of strata metrics in, at start, after every job and every minute: point node_exporter's --collector.textfile.directory at its folder.", examples: ['/var/lib/node_exporter/textfile/strata.prom'] }),
  };

  /** For editors; validateDatabaseName is the check (it also limits the length and refuses ".."). */
  const DATABASE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]*$';

  const DATABASE_SHAPE = (engines: readonly EngineDisplay[]) => ({
    url: z
      .string({ error: 'expected a SQLite path or a database URL' })
      .min(1, { error: 'expected a SQLite path or a database URL' })
      .meta(urlDescription(engines)),
    method: z
      .enum(['logical', 'physical'], { error: (issue) => `expected "logical" or "physical" (got ${got(issue.input)})` })
      .optional()
      .meta({
        description:
          'How a PostgreSQL server is backed up: "logical" (default: the database in the URL, as rows and schema) or "physical" (the whole cluster over the replication protocol, with its write-ahead log archived by archive_command = \'strata wal-push %p --db NAME\', restorable to any moment).',
      }),
    retention: retention.optional(),
    schedules: schedules(true).optional(),
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

  const TOP_LEVEL_KEYS = ['repository', 'storage', 'mirror', 'databases', 'retention', 'schedules', 'daemon', 'notifications'];

  function strataConfigSchema(engines: readonly EngineDisplay[] = []) {
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
          schedules: schedules(false).optional(),
          daemon: z
            .strictObject(DAEMON_SHAPE, {
              error: (issue) => (issue.code === 'unrecognized_keys' ? `unknown setting (expected ${Object.keys(DAEMON_SHAPE).join(', ')})` : 'expected an object such as { "concurrency": 2 }'),
            })
            .meta({ description: 'How strata daemon runs the jobs of "schedules".' })
            .optional(),
          notifications: z
            .strictObject(NOTIFICATIONS_SHAPE, {
              error: (issue) => (issue.code === 'unrecognized_keys' ? 'unknown setting (expected channels, escalation)' : 'expected an object such as { "channels": { ... } }'),
            })
            .meta({ description: 'Where strata daemon reports failed runs, recoveries, escalations and (optionally) successes. Secrets (webhook URLs, SMTP passwords) come from the environment or files, never from this file.' })
            .optional(),
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

  function configJsonSchema(engines: readonly EngineDisplay[]): Record<string, unknown> {
    const schema = z.toJSONSchema(strataConfigSchema(engines), { target: 'draft-7', unrepresentable: 'throw' }) as Record<string, unknown>;
    return { ...schema, $id: 'https://strata.invalid/schemas/strata.config.schema.json' };
  }

  return { strataConfigSchema, configJsonSchema, configSchema: strataConfigSchema() };
}
