import { StrataError, exitCodeFor } from '@strata/sdk';
import type { PolicyFlags } from './commands.js';
import type { CommandContext } from './context.js';
import type { KeyAction, KeyCommandOptions } from './key-commands.js';
import { databaseLocationLines, engineDisplays, repositoryLocationPhrase } from './locations.js';

/**
 * The whole command line, declared once: commander is built from this table (program.ts), the
 * help of every command comes from it, and the tests iterate it. A command is added here or
 * nowhere.
 */

/** One option. `flags` as commander reads them: `-y, --yes`, `--type <type>`. */
export interface OptionSpec {
  readonly flags: string;
  readonly description: string;
  /** May be given several times; the values come as a list. */
  readonly repeatable?: boolean;
}

/** What a command's action gets. */
export interface Invocation {
  /** The positional arguments, in order (after `--` too). */
  readonly args: readonly string[];
  /** The options by commander's attribute name (`dry-run` → `dryRun`). */
  readonly opts: Readonly<Record<string, unknown>>;
  /** Everything after the command's name(s), as typed: `--` matters to `run`. */
  readonly argv: readonly string[];
  readonly signal: AbortSignal;
}

export interface CommandSpec {
  /** The words that name it: `['backup']`, `['key', 'add']`. */
  readonly path: readonly string[];
  /** Positional arguments as shown in help: `<db>`, `[<db>...]`. The action checks them, so its message says what to give. */
  readonly args?: readonly ArgumentSpec[];
  /** One line for the list of commands. */
  readonly summary: string;
  /** More about it, shown after its options (optional). */
  readonly details?: string;
  readonly options: readonly OptionSpec[];
  /** Command lines a person can copy, without the leading `strata`. At least one. */
  readonly examples: readonly string[];
  readonly run: (ctx: CommandContext, invocation: Invocation) => Promise<number>;
}

export interface ArgumentSpec {
  /** Its name in help: `db`, `id|latest`. */
  readonly name: string;
  /** Shown as `<name>` (the action refuses to run without it) or `[name]`. */
  readonly required: boolean;
  readonly variadic?: boolean;
  /** Given after `--`, so that its own options are not read as Strata's (`strata run`). */
  readonly afterDoubleDash?: boolean;
}

/** A command that only groups others (`key`): its text is part of each subcommand's help too. */
export interface GroupSpec {
  readonly name: string;
  readonly summary: string;
  readonly details: string;
}

/**
 * A command's code, loaded when it runs: the table (what the help shows, what commander parses)
 * loads none of it, so `strata --help` and each command pay only for the code they use.
 */
function lazily<A extends unknown[], R>(load: () => Promise<(...args: A) => R | Promise<R>>): (...args: A) => Promise<R> {
  return async (...args) => (await load())(...args);
}

const backupCommand = lazily(async () => (await import('./commands.js')).backupCommand);
const deleteCommand = lazily(async () => (await import('./commands.js')).deleteCommand);
const exportCommand = lazily(async () => (await import('./commands.js')).exportCommand);
const healthCommand = lazily(async () => (await import('./commands.js')).healthCommand);
const importCommand = lazily(async () => (await import('./commands.js')).importCommand);
const initCommand = lazily(async () => (await import('./commands.js')).initCommand);
const inventoryCommand = lazily(async () => (await import('./commands.js')).inventoryCommand);
const listByTier = lazily(async () => (await import('./commands.js')).listByTier);
const pruneCommand = lazily(async () => (await import('./commands.js')).pruneCommand);
const restoreCommand = lazily(async () => (await import('./commands.js')).restoreCommand);
const runCommand = lazily(async () => (await import('./commands.js')).runCommand);
const statsCommand = lazily(async () => (await import('./commands.js')).statsCommand);
const verifyCommand = lazily(async () => (await import('./commands.js')).verifyCommand);
const keyCommand = lazily(async () => (await import('./key-commands.js')).keyCommand);
const copyCommand = lazily(async () => (await import('./copy-command.js')).copyCommand);
const replicateCommand = lazily(async () => (await import('./replicate-command.js')).replicateCommand);
const daemonCommand = lazily(async () => (await import('./daemon-commands.js')).daemonCommand);
const metricsCommand = lazily(async () => (await import('./daemon-commands.js')).metricsCommand);
const scheduleCommand = lazily(async () => (await import('./daemon-commands.js')).scheduleCommand);
const walPushCommand = lazily(async () => (await import('./wal-commands.js')).walPushCommand);
const walFetchCommand = lazily(async () => (await import('./wal-commands.js')).walFetchCommand);
const walReceiveCommand = lazily(async () => (await import('./wal-receive-command.js')).walReceiveCommand);
const walDaemonCommand = lazily(async () => (await import('./wal-daemon.js')).walDaemonCommand);

/** How many restore points of each database `strata list` shows on a terminal unless told otherwise. */
export const DEFAULT_ROWS_PER_DATABASE = 10;

const DATABASE_LOCATIONS = (): string => databaseLocationLines().map((line) => `  ${line}`).join('\n');

export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  { flags: '--repo <location>', description: `the repository: ${repositoryLocationPhrase()} (or STRATA_REPO, or "repository" in strata.config.json)` },
  { flags: '--config <file>', description: 'config file (default: strata.config.json here or in a parent folder)' },
  { flags: '--passphrase-file <file>', description: 'read the passphrase from FILE' },
  {
    flags: '--passphrase-command <cmd>',
    description:
      'run CMD (with sh -c) and use what it prints as the passphrase (a flag wins over STRATA_PASSPHRASE_COMMAND, STRATA_PASSPHRASE_FILE and STRATA_PASSPHRASE; without any, a terminal prompt, 3 tries)',
  },
  { flags: '--lock-wait <seconds>', description: "wait this long for another process's repository lock (default 60)" },
  { flags: '--json', description: 'print one JSON document on stdout, and nothing else there' },
];

const POLICY_OPTIONS: readonly OptionSpec[] = [
  { flags: '--keep-last <n>', description: 'keep the newest N backups' },
  { flags: '--keep-hourly <n>', description: 'keep the newest backup of each of the last N hours that hold one' },
  { flags: '--keep-daily <n>', description: 'the same per day' },
  { flags: '--keep-weekly <n>', description: 'the same per week' },
  { flags: '--keep-monthly <n>', description: 'the same per month' },
  { flags: '--keep-yearly <n>', description: 'the same per year' },
  { flags: '--keep-within <dur>', description: 'keep every backup within DUR of the newest one' },
  { flags: '--keep-within-pitr <dur>', description: 'keep restoring to any moment of the last DUR: the bases of segments (strata replicate) reaching into it, with their segments; where no segments cover it, every backup within DUR and the newest before it' },
  { flags: '--keep-label <label=dur>', description: 'keep backups labelled LABEL for DUR, or forever (repeatable)', repeatable: true },
];

function str(opts: Readonly<Record<string, unknown>>, key: string): string | undefined {
  const v = opts[key];
  return typeof v === 'string' ? v : undefined;
}

/** Only the options that were given, so that optional properties stay absent. */
function given<T extends Record<string, unknown>>(entries: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: Exclude<T[K], undefined> };
}

export function parseNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new StrataError('USAGE', `${flag} expects a number (got ${JSON.stringify(value)})`);
  return n;
}

/** The database of `list`: named first or with --db (both is fine when they agree). */
function listDatabase(positional: string | undefined, flag: string | undefined): string | undefined {
  if (positional !== undefined && flag !== undefined && positional !== flag) {
    throw new StrataError('USAGE', `list: two databases named (${positional} and --db ${flag}); name one`);
  }
  return positional ?? flag;
}

function policyFlags(opts: Readonly<Record<string, unknown>>): PolicyFlags {
  const count = (flag: string, key: string): number | undefined => {
    const v = parseNumber(str(opts, key), `--${flag}`);
    if (v !== undefined && !Number.isInteger(v)) throw new StrataError('USAGE', `--${flag} expects a whole number (got ${v})`);
    return v;
  };
  return {
    ...given({
      keepLast: count('keep-last', 'keepLast'),
      keepHourly: count('keep-hourly', 'keepHourly'),
      keepDaily: count('keep-daily', 'keepDaily'),
      keepWeekly: count('keep-weekly', 'keepWeekly'),
      keepMonthly: count('keep-monthly', 'keepMonthly'),
      keepYearly: count('keep-yearly', 'keepYearly'),
      keepWithin: str(opts, 'keepWithin'),
      keepWithinPitr: str(opts, 'keepWithinPitr'),
    }),
    keepLabels: (opts['keepLabel'] as string[] | undefined) ?? [],
  };
}

const KEY_NEW_PASSPHRASE: readonly OptionSpec[] = [
  { flags: '--new-passphrase-file <file>', description: 'read the new passphrase from FILE' },
  { flags: '--new-passphrase-command <cmd>', description: 'run CMD (with sh -c) and use what it prints as the new passphrase' },
];

export const KEY_GROUP: GroupSpec = {
  name: 'key',
  summary:
    'passphrases and data keys: several passphrases can open a repository; add, change or revoke them, or rotate the data key, without re-encrypting any backup',
  details: `Backups are encrypted under a data key (a random OpenPGP password). Each passphrase opens one key
file in keys/ (an OpenPGP message that gpg reads) holding the data keys it grants, so passphrases
come and go, and the data key changes, without re-encrypting any backup. docs/FORMAT.md shows how
to recover with gpg alone: your key file first, then the artifact.

  list      key files and data keys; no passphrase is needed
  add       a new passphrase: a key file holding the data keys yours holds
  remove    revoke a key file's passphrase
  passwd    change your passphrase (a new key file replaces yours in one atomic step)
  rotate    a new current data key for new backups (--also-passphrase-file FILE: also into the
            key files of those passphrases); nothing is re-encrypted
  migrate   move a repository made before key files onto them

The passphrase that unlocks comes from the usual sources (--passphrase-file, ...). The new one for
add and passwd comes from --new-passphrase-command, --new-passphrase-file,
STRATA_NEW_PASSPHRASE_COMMAND, STRATA_NEW_PASSPHRASE_FILE, STRATA_NEW_PASSPHRASE, or a prompt
(asked twice), never from the command line. Every change takes the repository lock and is
journaled (ids and labels only).`,
};

function key(action: KeyAction, spec: Omit<CommandSpec, 'path' | 'run'>, options: (invocation: Invocation) => Partial<KeyCommandOptions> = () => ({})): CommandSpec {
  return {
    path: ['key', action],
    ...spec,
    run: (ctx, invocation) => keyCommand(ctx, { force: false, alsoPassphraseFiles: [], ...options(invocation), action }),
  };
}

function newPassphraseOptions(opts: Readonly<Record<string, unknown>>): Partial<KeyCommandOptions> {
  return given({ newPassphraseFile: str(opts, 'newPassphraseFile'), newPassphraseCommand: str(opts, 'newPassphraseCommand') });
}

export const COMMANDS: readonly CommandSpec[] = [
  {
    path: ['init'],
    summary: 'create a repository (encrypted unless --no-encryption)',
    options: [
      { flags: '--encryption <profile>', description: 'compat (default: gpg --decrypt opens every artifact) or modern (AEAD, RFC 9580: faster, authenticated per chunk, but GnuPG cannot read it; key files stay gpg-readable)' },
      { flags: '--no-encryption', description: 'an unencrypted repository' },
      { flags: '--compression <codec>', description: 'zstd, gzip or none (default: zstd level 3 when this Node can do zstd, else gzip level 6)' },
      { flags: '--compression-level <n>', description: 'the codec level' },
      { flags: '--group-readable', description: 'your group may read it too (folders 0750, files 0640)' },
      { flags: '--label <text>', description: 'names its first key file' },
    ],
    details: `Encryption is OpenPGP with AES-256, under a random data key that a key file sealed with your
passphrase holds (keys/; strata key --help). The passphrase comes from --passphrase-command,
--passphrase-file, STRATA_PASSPHRASE_COMMAND, STRATA_PASSPHRASE_FILE, STRATA_PASSPHRASE, or a prompt
(asked twice), in that order.
The repository is private to you: folders 0700, files 0600, whatever the umask. With
--group-readable your group may read it too (folders 0750, files 0640: copy, sync, recover by
hand; only you write). repository.json records the choice, so every later command keeps it.`,
    examples: ['init --repo ./backups', 'init --repo ./backups --encryption modern --label laptop', 'init --repo ./backups --no-encryption --compression gzip'],
    run: (ctx, { opts, argv }) => {
      // commander gives --encryption and --no-encryption one attribute, so "both" is seen in argv.
      const both = argv.includes('--no-encryption') && argv.some((a) => a === '--encryption' || a.startsWith('--encryption='));
      if (both) throw new StrataError('USAGE', 'init: --no-encryption and --encryption contradict each other');
      return initCommand(ctx, {
        ...given({ encryption: str(opts, 'encryption'), compression: str(opts, 'compression'), label: str(opts, 'label') }),
        noEncryption: opts['encryption'] === false,
        ...given({ compressionLevel: parseNumber(str(opts, 'compressionLevel'), '--compression-level') }),
        groupReadable: opts['groupReadable'] === true,
      });
    },
  },
  {
    path: ['backup'],
    args: [{ name: 'db', required: true }],
    summary: 'back up a database (a name from strata.config.json, a file path or a URL): full, incremental, differential or schema-only',
    options: [
      { flags: '--type <type>', description: 'full (default): self-contained; incremental: only what changed since the newest restore point of <db>; differential: only what changed since the newest full backup; schema-only: the schema, no rows' },
      { flags: '--auto-full', description: 'for incremental/differential: take a full backup if there is none yet' },
      { flags: '--label <text>', description: 'a note kept with the backup' },
      { flags: '--tag <tag>', description: 'a tag (repeatable)', repeatable: true },
      { flags: '--time <iso>', description: 'record the backup at this time instead of now (imports, tests)' },
      { flags: '--name <name>', description: 'the database name to file a path or URL under (default: its file or database name)' },
    ],
    details: `<db> is a name from strata.config.json, or one of:\n${DATABASE_LOCATIONS()}\nWith --json, prints { "id": ..., "backup": { ... } }.`,
    examples: [
      'backup app',
      'backup ./app.db --type incremental --auto-full',
      // A server database's URL as its engine shows one: no engine is named here.
      ...engineDisplays()
        .filter((d) => d.locator === 'url')
        .slice(0, 1)
        .map((d) => `backup ${d.example} --name app --tag nightly`),
    ],
    run: (ctx, { args, opts, signal }) => {
      if (args.length === 0) throw new StrataError('USAGE', 'backup: name the database to back up (see strata backup --help)');
      return backupCommand(
        ctx,
        {
          database: args[0]!,
          ...given({ type: str(opts, 'type'), label: str(opts, 'label'), time: str(opts, 'time'), name: str(opts, 'name') }),
          tags: (opts['tag'] as string[] | undefined) ?? [],
          autoFull: opts['autoFull'] === true,
        },
        signal,
      );
    },
  },
  {
    path: ['list'],
    args: [{ name: 'db', required: false }],
    summary: 'list restore points, newest chains first; filter by database, time, type, tag or label',
    options: [
      { flags: '--db <name>', description: 'only this database (the same as naming it first)' },
      { flags: '--since <time>', description: 'only those taken at or after TIME: an ISO date or time (2026-11-01, 2026-11-01T12:00:00Z) or a duration back from now (12h, 7d, 2w)' },
      { flags: '--type <type>', description: 'only this type: full, incremental, differential or schema (repeatable, or a,b)', repeatable: true },
      { flags: '--tag <tag>', description: 'only those carrying this tag (repeatable: any of them)', repeatable: true },
      { flags: '--label <text>', description: 'only those with exactly this label' },
      { flags: '--limit <n>', description: 'the newest N of each database (also with --json)' },
      { flags: '--all', description: 'every restore point, also on a terminal' },
      { flags: '--wide', description: 'columns at full width, also on a terminal' },
      { flags: '--by-tier', description: 'group them under the retention rule that keeps each (policy as for prune)' },
      ...POLICY_OPTIONS,
    ],
    details: `Shows id, database, engine, type, time, sizes, chain, last verification. A * marks each
database's newest good restore point (the newest with data whose last verification did not fail:
the one health measures and retention always keeps; "newestGood" in --json).
On a terminal, list shows the newest ${DEFAULT_ROWS_PER_DATABASE} restore points of each database and says how many more
there are, and cuts long columns (label, chain, verification) to the terminal's width; --all
and --wide lift either. Piped, or with --json, it prints everything the filters match, whole.
--limit applies everywhere; --json then says per database how many it left out ("omitted").
Filters combine: --db app --type full --since 30d lists app's full backups of the last 30 days.`,
    examples: ['list', 'list app --since 7d', 'list --db app --type full --limit 5', 'list --tag nightly --json', 'list --by-tier --keep-daily 7'],
    run: async (ctx, { args, opts }) => {
      const database = listDatabase(args[0], str(opts, 'db'));
      if (opts['byTier'] === true) {
        const filters = ['since', 'type', 'tag', 'label', 'limit', 'all', 'wide'].filter((k) => opts[k] !== undefined);
        if (filters.length > 0) throw new StrataError('USAGE', `list: --by-tier shows how retention treats every restore point; it does not combine with --${filters.join(', --')}`);
        return listByTier(ctx, database, policyFlags(opts));
      }
      const limit = parseNumber(str(opts, 'limit'), '--limit');
      if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw new StrataError('USAGE', `--limit expects a whole number of at least 1 (got ${limit})`);
      const since = str(opts, 'since');
      const { listCommand, parseSince, parseTypes } = await import('./list-command.js');
      return listCommand(ctx, {
        ...given({ database, limit, label: str(opts, 'label'), since: since === undefined ? undefined : parseSince(since) }),
        types: parseTypes((opts['type'] as string[] | undefined) ?? []),
        tags: (opts['tag'] as string[] | undefined) ?? [],
        all: opts['all'] === true,
        wide: opts['wide'] === true,
      });
    },
  },
  {
    path: ['replicate'],
    args: [{ name: 'db', required: true, variadic: true }],
    summary: 'continuous protection: ship each committed transaction into the repository within a second, until stopped (Ctrl-C, SIGTERM)',
    options: [
      { flags: '--interval <seconds>', description: 'ship at least this often: seconds (1, 0.5), 500ms, or 5s (default 1 s); a crash loses at most about this much' },
      { flags: '--switch-mode', description: "switch a database into the journal mode replication reads (SQLite: WAL) instead of refusing it" },
      { flags: '--no-checkpoint-lock', description: "SQLite: leave the checkpoints to the application, as without the os-lock addon: its explicit wal_checkpoint then runs rather than giving up at once (by default replicate holds SQLite's checkpoint lock and does them itself)" },
      { flags: '--base-every <dur>', description: 'take a new base restore point when the chain of segments is this old (default 24h): a restore replays at most this much, and prune can drop older chains' },
      { flags: '--compact <windows>', description: 'merge the segments of each closed window of these lengths, shortest first (default 1min,1h); off keeps every segment' },
      { flags: '--mirror-every <seconds>', description: 'with a mirror configured, copy new segments to it at least this often (default 10 s; off: only at the next backup)' },
      { flags: '--verbose', description: 'a line for every segment shipped and every merge' },
    ],
    details: `Runs in the foreground until SIGINT or SIGTERM, then ships what it has and exits 0.
Transactions are shipped as segments (compressed and encrypted like every artifact) chained to a
base restore point: the chain of the last run when the database's log still continues it, else a
new incremental (or full) backup taken at exactly the point the segments start from. Then
\`strata restore --db <name> --as-of <time>\` restores to any moment the segments cover, to the
last transaction seen committed at or before it. Applications keep writing as they like; give
their connections a busy timeout (replicate holds the write lock for a few milliseconds about
once a second). While it runs replicate does the checkpoints: it holds SQLite's checkpoint lock,
so an application's checkpoint returns busy at once (with the optional os-lock addon installed;
without it, a checkpoint that must wait for every reader, such as wal_checkpoint(TRUNCATE), waits
for replicate's reader to move on). --no-checkpoint-lock leaves them to the application, as
without the addon: for an application that checkpoints explicitly and needs those to run.
Compaction merges the segments of each closed minute into one, then those of each hour, so the
catalog stays short and a restore reads a few objects; a merge joins what was seen committed
within each slot of at most half the interval and at most 500 ms into one transaction that writes each
page once, so a restore reads a fraction of the bytes and, inside a merged segment, stops at the
end of a slot (it says from which moment on it may lack what was committed).
With a mirror in strata.config.json, new segments (and new bases) are copied to it every
--mirror-every; a failed copy is journaled (strata health reports it) and made good by the next.`,
    examples: ['replicate app', 'replicate ./app.db --interval 0.5', 'replicate app orders --verbose', 'replicate app --base-every 6h --compact 30s,10min,1h'],
    run: (ctx, { args, opts, signal }) =>
      replicateCommand(
        ctx,
        { databases: args, ...given({ interval: str(opts, 'interval'), baseEvery: str(opts, 'baseEvery'), compact: str(opts, 'compact'), mirrorEvery: str(opts, 'mirrorEvery') }), switchMode: opts['switchMode'] === true, leaveCheckpoints: opts['checkpointLock'] === false, verbose: opts['verbose'] === true },
        signal,
      ),
  },
  {
    path: ['schedule'],
    summary: 'print the jobs of strata.config.json ("schedules") with their next runs',
    options: [{ flags: '--count <n>', description: 'how many next runs of each job (default 3)' }],
    details: `Jobs come from "schedules" (every database) and each database's own "schedules" (added, replaced
by name, or dropped with false). Times are printed in UTC; a job's "timezone" is the zone its
cron expression is read in. See strata daemon --help.`,
    examples: ['schedule', 'schedule --count 5 --json'],
    run: async (ctx, { opts }) => {
      const count = parseNumber(str(opts, 'count'), '--count') ?? 3;
      if (!Number.isInteger(count) || count < 1 || count > 100) throw new StrataError('USAGE', `schedule: --count expects a whole number from 1 to 100 (got ${count})`);
      return scheduleCommand(ctx, { count });
    },
  },
  {
    path: ['daemon'],
    summary: 'run the jobs of strata.config.json ("schedules") in the foreground: backups, verifications, prune, health, copies, replication',
    options: [
      { flags: '--log-format <format>', description: 'text (default): one line per event on stderr; json: one JSON object per line' },
      { flags: '--metrics-listen <host:port>', description: 'also serve the metrics (those of daemon.metricsFile) at http://HOST:PORT/metrics; a loopback address such as 127.0.0.1:9187' },
      { flags: '--metrics-allow-remote', description: 'let --metrics-listen take an address other machines reach (the metrics are served without authentication)' },
    ],
    details: `Runs until SIGTERM or SIGINT; made for systemd or a supervisor (strata-daemon.service in
the installed strata-backup package, docs/ of a clone).
The repository is opened once at start, so its passphrase must come from --passphrase-file,
--passphrase-command or the STRATA_PASSPHRASE* variables (or a terminal, at start).

  Jobs of one database never overlap: a run due while another runs is skipped (daemon.overlap
  "skip", the default) or queued (one waiting run per job); either is journaled.
  Jobs of different databases run at once up to daemon.concurrency (default 2). A replicate job
  runs all the time, apart from the others, and is started again after a failure.
  Every run is a "job" entry in the journal: due and start time, hooks with exit status and
  output, the outcome. Hooks (before/after/onFailure, sh -c) get the job's facts as STRATA_*
  variables and as JSON on stdin; a failing before hook stops the job.
  SIGTERM/SIGINT: no new job starts; running jobs are aborted (journaled as interrupted) or, with
  daemon.onStop "finish", finish; then it exits 0. SIGHUP reads the config again (a bad one is
  reported and the running one kept).
  Runs missed while the daemon was down: skipped (daemon.missedRuns "skip", the default), or,
  with "run-once", each job whose last run in the journal is older than its last due time, or
  was cut off by a kill or a stop, runs once at start.
  Secrets of the notification channels are read at start (and at SIGHUP): one missing is a usage
  error (exit 2) naming the setting. Hooks get neither those variables nor STRATA_*PASSPHRASE*.
  Metrics: daemon.metricsFile for node_exporter's textfile collector; --metrics-listen serves the
  same text over HTTP (GET /metrics), on a loopback address unless --metrics-allow-remote.`,
    examples: ['daemon', 'daemon --log-format json --passphrase-file /etc/strata/passphrase', 'daemon --metrics-listen 127.0.0.1:9187'],
    run: (ctx, { opts, signal }) => daemonCommand(ctx, { ...given({ logFormat: str(opts, 'logFormat'), metricsListen: str(opts, 'metricsListen') }), metricsAllowRemote: opts['metricsAllowRemote'] === true }, signal),
  },
  {
    path: ['restore'],
    args: [{ name: 'id|latest', required: false }],
    summary: 'restore a restore point (and its chain) to a target; also as of a time, or only some tables',
    options: [
      { flags: '--to <target>', description: 'where to restore (created if missing; an existing one needs --force)' },
      { flags: '--as-of <time>', description: 'restore the database as of TIME (ISO 8601): replayed to the last transaction seen committed at or before it (inside merged segments, to the end of a slot of at most half the interval) where replicate shipped segments, else the newest restore point taken at or before it' },
      { flags: '--db <name>', description: 'with "latest" or --as-of: which database' },
      { flags: '--tables <a,b>', description: 'only these tables (with their indexes and triggers; "a name, with commas" in double quotes): into a new database, or replacing just them in an existing one, in one transaction' },
      { flags: '--force', description: 'replace an existing target; it stays intact until the new one is complete' },
      { flags: '-y, --yes', description: 'do not ask before replacing (needed when not on a terminal)' },
      {
        flags: '--table-lock-wait <duration>',
        description: "into a live database (--tables with --force, or a MySQL database replaced by --force): how long to wait for other sessions' locks on the tables it replaces (an application's open transaction; in SQLite, any write transaction) before giving up and changing nothing; whole seconds, e.g. 10s or 5min (default 30s)",
      },
      { flags: '--lsn <lsn>', description: 'physical backups: recover to this WAL position (e.g. 0/3000060)' },
      { flags: '--xid <xid>', description: 'physical backups: recover through this transaction id' },
      { flags: '--name <restore-point>', description: 'physical backups: recover to this restore point (made with pg_create_restore_point)' },
      { flags: '--immediate', description: 'physical backups: recover only until the base backup is consistent' },
      { flags: '--target-action <action>', description: 'physical backups: at the target pause (default), promote or shutdown' },
      { flags: '--timeline <timeline>', description: 'physical backups: the timeline to recover along when a failover left several: latest (default, the newest one that continues the base), current (the base\'s own) or a number' },
      { flags: '--start', description: 'physical backups: start a temporary server on a free port, wait until recovery reaches the target, report what it reached, stop it' },
      {
        flags: '--archive-mode <mode>',
        description: "physical backups: off (default: the restored cluster archives nothing, so a copy started beside the original never writes into its archive) or preserve (it keeps the backed-up cluster's archive_command: for a cluster that replaces the original)",
      },
      {
        flags: '--tablespace-map <old=new>',
        description: 'physical backups: restore the tablespace that was in folder OLD into folder NEW (empty or new) instead (repeatable); without it each goes back where it was, refused when that folder is not empty',
        repeatable: true,
      },
    ],
    details: `A target is one of:\n${DATABASE_LOCATIONS()}\nNothing is written to the target until every checksum and the decryption check passed.`,
    examples: [
      'restore latest --db app --to ./restored.db',
      'restore --as-of 2026-01-02T12:00:00Z --db app --to ./app.db --force --yes',
      'restore app_full_20260101_120000_ab12 --to ./orders.db --tables orders,customers',
      'restore --db cluster --as-of 2026-01-02T12:00:00Z --tables public.orders --to postgres://app@db/shop --force --yes',
      'restore latest --db cluster --to /var/lib/postgresql/15/restored --as-of 2026-01-02T12:00:00Z --start',
      'restore latest --db cluster --to /srv/pg/restored --tablespace-map /srv/pg/fast=/srv/pg/restored-fast',
    ],
    run: (ctx, { args, opts, signal }) =>
      restoreCommand(
        ctx,
        {
          ...given({
            id: args[0],
            asOf: str(opts, 'asOf'),
            tables: str(opts, 'tables'),
            to: str(opts, 'to'),
            database: str(opts, 'db'),
            lsn: str(opts, 'lsn'),
            xid: str(opts, 'xid'),
            restorePoint: str(opts, 'name'),
            targetAction: str(opts, 'targetAction'),
            timeline: str(opts, 'timeline'),
            archiveMode: str(opts, 'archiveMode'),
            tableLockWait: str(opts, 'tableLockWait'),
          }),
          force: opts['force'] === true,
          yes: opts['yes'] === true,
          immediate: opts['immediate'] === true,
          start: opts['start'] === true,
          tablespaceMap: (opts['tablespaceMap'] as string[] | undefined) ?? [],
        },
        signal,
      ),
  },
  {
    path: ['wal-push'],
    args: [{ name: 'path', required: true }],
    summary: "archive one write-ahead log file of a physical PostgreSQL entry (archive_command = 'strata wal-push %p --db NAME')",
    options: [
      { flags: '--db <name>', description: 'the physical entry of strata.config.json the cluster is filed under' },
      { flags: '--socket <path>', description: 'hand the file to the strata wal-daemon listening there (the warm mode); without one, push it here' },
    ],
    details:
      'Stores the file compressed, encrypted and with its SHA-256 in its name. Pushing the same file again succeeds without writing (PostgreSQL retries); a different file under a name already archived fails (exit 1) and replaces nothing. A file under a WAL segment\'s name must be that segment of this cluster: its first page header says its size, position, timeline and system identifier, and a truncated copy, a stray file, a segment under another name or another cluster\'s segment fails (exit 1) with nothing stored. With --socket, a running wal-daemon stores it and this process exits as soon as the daemon says it is stored.',
    examples: [
      'wal-push pg_wal/000000010000000000000003 --db cluster --config /etc/strata/strata.config.json --passphrase-file /etc/strata/passphrase',
      'wal-push %p --db cluster --socket /run/postgresql/strata-wal.sock --config /etc/strata/strata.config.json --passphrase-file /etc/strata/passphrase',
    ],
    run: (ctx, { args, opts, signal }) => walPushCommand(ctx, { file: args[0], database: str(opts, 'db'), socket: str(opts, 'socket') }, signal),
  },
  {
    path: ['wal-daemon'],
    args: [],
    summary: 'store the write-ahead log files that wal-push --socket hands over, from one long-running process (the warm mode of archiving)',
    options: [
      { flags: '--db <name>', description: 'the physical entry of strata.config.json the cluster is filed under' },
      { flags: '--socket <path>', description: 'the Unix socket to listen on (created mode 0600; the same path as in archive_command)' },
      { flags: '--read-ahead <n>', description: 'segments the server has marked ready to store ahead of its asking (default 2, 0 for none)' },
    ],
    details:
      "A wal-push process per segment starts Node, loads Strata and unlocks the repository's key each time; the daemon does that once, and answers each wal-push only once the segment is stored. Run it as the server's user, beside the server (a systemd unit, say); if it is not running, wal-push --socket pushes by itself. Stops on SIGTERM or Ctrl-C after storing what it was handed.",
    examples: ['wal-daemon --db cluster --socket /run/postgresql/strata-wal.sock --config /etc/strata/strata.config.json --passphrase-file /etc/strata/passphrase'],
    run: (ctx, { opts, signal }) => walDaemonCommand(ctx, { database: str(opts, 'db'), socket: str(opts, 'socket'), readAhead: str(opts, 'readAhead') }, signal),
  },
  {
    path: ['wal-fetch'],
    args: [
      { name: 'name', required: true },
      { name: 'path', required: true },
    ],
    summary: "write one archived write-ahead log file where PostgreSQL asks for it (restore_command = 'strata wal-fetch %f %p --db NAME')",
    options: [{ flags: '--db <name>', description: 'the physical entry the cluster is filed under' }],
    details:
      'Checks the bytes against the SHA-256 they were archived with. A file the archive does not hold is exit 1 with one line on stderr, which PostgreSQL takes as "not there". Every other failure (a wrong or missing passphrase, a damaged segment, storage or configuration) is exit 128 with its message on stderr: PostgreSQL takes any status up to 125 as "not there" and would end recovery short of the archive\'s end, while above 125 it stops with a fatal error (fix the cause and start the server again).',
    examples: ['wal-fetch 000000010000000000000003 pg_wal/RECOVERYXLOG --db cluster'],
    run: (ctx, { args, opts, signal }) => walFetchCommand(ctx, { name: args[0], file: args[1], database: str(opts, 'db') }, signal),
  },
  {
    path: ['wal-receive'],
    args: [{ name: 'db', required: true }],
    summary: 'stream the WAL of a physical PostgreSQL entry into the repository continuously (a lower RPO than archive_command), until stopped (Ctrl-C, SIGTERM)',
    options: [
      { flags: '--slot <name>', description: 'the physical replication slot to stream through (created if missing; default strata_<db>)' },
      { flags: '--interval <seconds>', description: 'archive the segment in progress this often when it grew: seconds (5, 0.5), 500ms or 2s (default 5 s); a lost machine loses at most about this much' },
      { flags: '--spool <dir>', description: 'the private folder pg_receivewal writes into (default: the state folder, wal-receive/<db>)' },
      { flags: '--verbose', description: 'a line for every segment and partial archived' },
    ],
    details: `Runs in the foreground until SIGINT or SIGTERM, then archives what it received and exits 0.
pg_receivewal (of the server's major version) streams the WAL through a replication slot, so the
server keeps every segment until it is received, even while wal-receive is down. Each completed
segment is archived exactly as wal-push archives it (it can run beside archive_command: the same
segment from both is stored once); the segment in progress is archived as a partial every
--interval when it grew, and a restore or wal-fetch uses a partial only when the complete segment
is not archived. The spool (mode 0700) keeps what was received and not yet archived across runs.
A dropped connection is retried with backoff (1 s doubling to 60 s), said on stderr. The user
needs the REPLICATION attribute and a replication line in pg_hba.conf (else exit 7); the
password comes from the URL, PGPASSWORD or ~/.pgpass and reaches pg_receivewal in its environment.
The state folder is STRATA_STATE_DIR, else $XDG_STATE_HOME/strata, else ~/.local/state/strata.`,
    examples: ['wal-receive cluster', 'wal-receive cluster --interval 2 --slot strata_main --passphrase-file /etc/strata/passphrase'],
    run: (ctx, { args, opts, signal }) =>
      walReceiveCommand(ctx, { database: args[0], ...given({ slot: str(opts, 'slot'), interval: str(opts, 'interval'), spool: str(opts, 'spool') }), verbose: opts['verbose'] === true }, signal),
  },
  {
    path: ['verify'],
    args: [{ name: 'id|latest', required: false }],
    summary: 'check backups: artifacts and hashes (quick), or also restore into a scratch database and compare (full)',
    options: [
      { flags: '--all', description: 'every restore point' },
      { flags: '--level <level>', description: 'quick (default) or full' },
      { flags: '--db <name>', description: 'with "latest": which database' },
    ],
    details: `Checks, each reported as passed, failed or skipped:
  file-accessibility   the artifacts exist with their recorded sizes
  checksum-match       artifact SHA-256 and every stream and chunk hash inside
  database-readable    (full) restores into a scratch database
  schema-integrity     (full) schema fingerprint and integrity check
  data-consistency     (full) per-table row counts, content checksums, foreign keys
Exit status 3 when any check failed.`,
    examples: ['verify latest --db app', 'verify --all --level full'],
    run: (ctx, { args, opts, signal }) =>
      verifyCommand(ctx, { ...given({ id: args[0], level: str(opts, 'level'), database: str(opts, 'db') }), all: opts['all'] === true }, signal),
  },
  {
    path: ['prune'],
    args: [{ name: 'db', required: false }],
    summary: 'remove backups no retention rule keeps (--dry-run shows the plan)',
    options: [{ flags: '--dry-run', description: 'print every backup with keep/remove and the reasons, and delete nothing' }, ...POLICY_OPTIONS],
    details: `Without policy flags the policy comes from strata.config.json ("retention", per database or top
level), else daily 7, weekly 8, monthly 12 (and backups labelled pre-update for 30d). Counts keep
the newest backup of each of the last N hours/days/weeks/months/years that hold one; windows count
back from the newest backup, not from now. Always kept: the newest good backup, backups tagged
"pinned", and every backup a kept one depends on (its chain). A policy that keeps nothing is
refused. DUR: 30min, 12h, 30d, 2w, 6mo, 1y.`,
    examples: ['prune --dry-run', 'prune app --keep-daily 7 --keep-weekly 4 --keep-label pre-update=30d'],
    run: (ctx, { args, opts, signal }) => pruneCommand(ctx, { ...policyFlags(opts), ...given({ database: args[0] }), dryRun: opts['dryRun'] === true }, signal),
  },
  {
    path: ['run'],
    args: [{ name: 'command', required: true, variadic: true, afterDoubleDash: true }],
    summary: 'back up, run a command, pass its exit status through (and restore the backup if it fails, when asked)',
    options: [
      { flags: '--db <name>', description: 'the database the command changes' },
      { flags: '--type <type>', description: 'incremental (default; a full if there is none yet), differential or full' },
      { flags: '--rollback-on-failure', description: 'restore the backup in place when the command fails (stop other writers first)' },
    ],
    details: `Put the command after --. Takes a backup (label pre-update), refuses to run the command if it
failed, runs it, and exits with its exit status. The journal records the outcome and the exact
restore command that undoes the change.`,
    examples: ['run --db app -- npm run migrate', 'run --db app --rollback-on-failure -- ./deploy.sh --fast'],
    run: (ctx, { args, opts, argv, signal }) => {
      if (!argv.includes('--')) throw new StrataError('USAGE', 'run: put the command after --, e.g. strata run --db app -- npm run migrate');
      return runCommand(ctx, { ...given({ database: str(opts, 'db'), type: str(opts, 'type') }), rollbackOnFailure: opts['rollbackOnFailure'] === true, command: args }, signal);
    },
  },
  {
    path: ['stats'],
    summary: 'backups per day and type: count, success rate, time, size, ratio; --html writes a report with charts',
    options: [
      { flags: '--since <dur>', description: 'how far back (default 30d)' },
      { flags: '--html <file>', description: 'write one self-contained HTML page to FILE: runs per day by type and outcome, and per database the duration, stored size and compression ratio of each run' },
    ],
    details: `Reads the journal, so failed runs count too. The HTML report needs nothing but a browser: its
charts are inline SVG, with no script and no link to anything outside the file.`,
    examples: ['stats', 'stats --since 7d --json', 'stats --since 90d --html backups.html'],
    run: (ctx, { opts }) => statsCommand(ctx, given({ since: str(opts, 'since'), html: str(opts, 'html') })),
  },
  {
    path: ['health'],
    summary: "exit 3 if a database's newest good backup is too old, a verification failed or is overdue, a backup took too long, the disk is too full, or continuous protection broke or lags",
    options: [
      { flags: '--max-lag <seconds>', description: 'how long after a transaction strata replicate may ship it (default 60)' },
      { flags: '--max-age <dur>', description: "the newest good backup's age limit (default 25h)" },
      { flags: '--max-unverified <dur>', description: 'how long without a passed verification (default 8d)' },
      { flags: '--max-duration <dur>', description: 'how long a backup may take (default 2h)' },
      { flags: '--max-disk <percent>', description: "how full the repository's disk may be (default 85)" },
      { flags: '--max-archive-age <dur>', description: "for a log archive (physical PostgreSQL): the newest archived file's age limit (default 1h)" },
      { flags: '--max-archive-lag-bytes <bytes>', description: "physical PostgreSQL: how far the archive may be behind the server's current WAL position, in bytes or with a unit (64MB; default 64MB, four 16 MB segments)" },
    ],
    details: `Exit status 3 when anything is unhealthy, so cron and monitoring can alert. For databases
under strata replicate: a chain of segments with a break, a replicator that died or failed, or one
whose segments are shipped later than --max-lag after their transactions. For physical PostgreSQL
clusters: the newest archived WAL file older than --max-archive-age, a gap in the archived WAL,
the archive more than --max-archive-lag-bytes behind the server's current WAL position (measured
when the server answers at the entry's URL; an unreachable server is reported, not counted), and
wal-push calls that failed since the newest file was archived (from the journal, and from this
machine's state folder when the repository itself failed), and a wal-receive whose last run
failed or died.`,
    examples: ['health', 'health --max-age 2h --json'],
    run: (ctx, { opts }) =>
      healthCommand(ctx, {
        ...given({ maxAge: str(opts, 'maxAge'), maxUnverified: str(opts, 'maxUnverified'), maxDuration: str(opts, 'maxDuration'), maxLag: str(opts, 'maxLag') }),
        ...given({ maxDisk: parseNumber(str(opts, 'maxDisk'), '--max-disk'), maxArchiveAge: str(opts, 'maxArchiveAge'), maxArchiveLagBytes: str(opts, 'maxArchiveLagBytes') }),
      }),
  },
  {
    path: ['inventory'],
    summary: 'per database: latest backup, count, stored size, last verification',
    options: [],
    examples: ['inventory', 'inventory --json'],
    run: (ctx) => inventoryCommand(ctx),
  },
  {
    path: ['metrics'],
    summary: 'the repository in the Prometheus text format: per database backup and verification age, last backup duration, size and ratio, failures, replication and mirror lag',
    options: [{ flags: '--textfile <file>', description: "write it to FILE (ending in .prom) as node_exporter's textfile collector wants: a temporary file renamed over it" }],
    details: `Metrics (labels: database; strata_job_failures_total also job):
  strata_backups, strata_stored_bytes, strata_repository_stored_bytes
  strata_newest_backup_timestamp_seconds, strata_newest_good_backup_timestamp_seconds,
  strata_newest_good_backup_age_seconds
  strata_last_verification_timestamp_seconds, strata_last_verification_age_seconds,
  strata_last_verification_passed
  strata_last_backup_duration_seconds, strata_last_backup_stored_bytes,
  strata_last_backup_compression_ratio
  strata_backup_failures_total, strata_job_failures_total (from the journal)
  strata_replication_lag_seconds, strata_mirror_reachable, strata_mirror_lag_seconds
  strata_metrics_timestamp_seconds
No network listener here: strata daemon keeps the file of daemon.metricsFile up to date (and
serves it with --metrics-listen), or run this from cron with --textfile. Alert on the *_timestamp_seconds gauges (time() - ...), which do not go
stale between two writes.`,
    examples: ['metrics', 'metrics --textfile /var/lib/node_exporter/textfile/strata.prom'],
    run: (ctx, { opts }) => metricsCommand(ctx, given({ textfile: str(opts, 'textfile') })),
  },
  {
    path: ['export'],
    args: [{ name: 'db', required: false, variadic: true }],
    summary: 'the newest good restore point of each database with its chain, catalog entries and RESTORE.md, as .tar.gz or .zip',
    options: [
      { flags: '--out <file>', description: 'the export file (.tar.gz or .zip); an existing one needs --force' },
      { flags: '--all', description: 'every database' },
      { flags: '--force', description: 'replace an existing --out file (only once the export is complete)' },
    ],
    examples: ['export app --out app.tar.gz', 'export --all --out everything.zip'],
    run: (ctx, { args, opts, signal }) => exportCommand(ctx, { databases: args, all: opts['all'] === true, force: opts['force'] === true, ...given({ out: str(opts, 'out') }) }, signal),
  },
  {
    path: ['import'],
    args: [{ name: 'file', required: true }],
    summary: 'bring an export into this repository (checksums verified)',
    options: [],
    examples: ['import app.tar.gz --repo ./backups'],
    run: (ctx, { args, signal }) => importCommand(ctx, args[0], signal),
  },
  {
    path: ['copy'],
    args: [{ name: 'db', required: false, variadic: true }],
    summary: 'copy restore points with their chains into another repository: only what it lacks, every checksum checked',
    options: [
      { flags: '--from <location>', description: 'the repository to copy from (default: --repo, STRATA_REPO or "repository" in strata.config.json)' },
      { flags: '--to <location>', description: 'the repository to copy into; it must exist (strata init)' },
      { flags: '--since <time>', description: 'only restore points taken at or after TIME (ISO 8601), or within a duration back from now (7d); their chains come along' },
      { flags: '--to-passphrase-file <file>', description: "read the target repository's passphrase from FILE" },
      { flags: '--to-passphrase-command <cmd>', description: "run CMD (with sh -c) and use what it prints as the target repository's passphrase" },
    ],
    details: `Copies every restore point of the source (or of the databases named) that the target lacks,
with the backups each one builds on, by backup id: ids, parents, times, labels and tags stay as
they are, and a second run copies nothing. Every artifact's SHA-256 and size are checked against
the source's catalog and its decryption's integrity check is run on the way; a damaged one is not
copied (nor what builds on it), the rest is, and the command fails naming it (exit 1). Each backup
becomes visible on the target only once it is whole: a killed copy leaves nothing half-written,
and the next run finishes.

The target's passphrase comes from --to-passphrase-command, --to-passphrase-file,
STRATA_TO_PASSPHRASE_COMMAND, STRATA_TO_PASSPHRASE_FILE, STRATA_TO_PASSPHRASE, else the source's
passphrase is tried (then, on a terminal, you are asked). When the target's key file holds the
data key an artifact is encrypted under, its bytes are copied as they are; otherwise they are
re-encrypted, streaming, under the target's current data key. An encrypted source is never
copied into an unencrypted target.`,
    examples: [
      'copy --from ./backups --to /mnt/offsite/backups',
      'copy app --to /mnt/offsite/backups --since 7d --to-passphrase-file ~/.offsite-passphrase',
      'copy --to /mnt/offsite/backups --json',
    ],
    run: (ctx, { args, opts, signal }) =>
      copyCommand(
        ctx,
        {
          databases: args,
          ...given({ from: str(opts, 'from'), to: str(opts, 'to'), since: str(opts, 'since'), toPassphraseFile: str(opts, 'toPassphraseFile'), toPassphraseCommand: str(opts, 'toPassphraseCommand') }),
        },
        signal,
      ),
  },
  {
    path: ['delete'],
    args: [{ name: 'id', required: true, variadic: true }],
    summary: 'delete restore points (--with-dependents to also delete the backups that build on them and the segments after them)',
    options: [
      { flags: '--with-dependents', description: 'also delete the backups that build on them, and the segments of continuous protection after them' },
      { flags: '--dry-run', description: 'show what would go, and delete nothing' },
      { flags: '-y, --yes', description: 'do not ask (needed when not on a terminal)' },
    ],
    details: `Deletes their artifacts and catalog entries. It lists everything that will go, and warns when
that includes a database's newest good restore point. For routine clean-up use prune, which
follows the retention policy.`,
    examples: ['delete app_full_20260101_120000_ab12 --dry-run', 'delete app_full_20260101_120000_ab12 --with-dependents --yes'],
    run: (ctx, { args, opts, signal }) => deleteCommand(ctx, { ids: args, withDependents: opts['withDependents'] === true, yes: opts['yes'] === true, dryRun: opts['dryRun'] === true }, signal),
  },
  {
    path: ['serve'],
    summary: 'run the Strata server (JSON-RPC) for the VS Code extension; it starts this itself',
    options: [
      { flags: '--stdio', description: 'talk JSON-RPC on stdin and stdout (what the extension uses)' },
      { flags: '--node-ipc', description: "talk on Node's IPC channel (when started by a Node parent with fork)" },
    ],
    details: `The VS Code extension runs \`strata serve --stdio\` and talks to it with the Language Server
Protocol's base protocol plus the strata/... requests. It runs here, under the Node strata was
installed with, because the database drivers are native modules built for that Node. It reads
strata.config.json of the folders the editor opens; the options for every command are not used.
It ends when the editor closes the connection.`,
    examples: ['serve --stdio'],
    run: async (_ctx, { opts, signal }) => {
      const transports = (['stdio', 'nodeIpc'] as const).filter((flag) => opts[flag] === true);
      if (transports.length !== 1) throw new StrataError('USAGE', 'serve: give one of --stdio or --node-ipc (the VS Code extension runs strata serve --stdio)');
      // Loaded here, so that no other command pays for the language server library.
      const { serve } = await import('@strata/server/serve');
      serve(transports[0] === 'stdio' ? 'stdio' : 'node-ipc');
      // The connection ends the process when the client closes it; an interrupt ends it here.
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      process.exit(exitCodeFor('ABORTED'));
    },
  },
  key('list', { summary: 'key files (the one your passphrase opens, if given) and data keys; no passphrase is needed', options: [], examples: ['key list', 'key list --json'] }),
  key(
    'add',
    {
      summary: 'a new passphrase: a key file holding the data keys yours holds',
      options: [{ flags: '--label <text>', description: 'names the new key file' }, ...KEY_NEW_PASSPHRASE],
      examples: ['key add --label bob', 'key add --label ci --new-passphrase-file ./ci-passphrase'],
    },
    ({ opts }) => ({ ...given({ label: str(opts, 'label') }), ...newPassphraseOptions(opts) }),
  ),
  key(
    'remove',
    {
      args: [{ name: 'key-file-id', required: true }],
      summary: "revoke a key file's passphrase",
      options: [{ flags: '--force', description: 'also when it is the key file your passphrase opens' }],
      details: `Refused for the last key file, for yours (unless --force), and when no other key file would hold
a data key a backup needs. A copy of the key file, or keys read from it, still open older backups:
rotate afterwards if it may have leaked.`,
      examples: ['key remove 1a2b3c4d'],
    },
    ({ args, opts }) => ({ ...given({ id: args[0] }), force: opts['force'] === true }),
  ),
  key(
    'passwd',
    { summary: 'change your passphrase (a new key file replaces yours in one atomic step)', options: KEY_NEW_PASSPHRASE, examples: ['key passwd', 'key passwd --new-passphrase-command "pass show strata"'] },
    ({ opts }) => newPassphraseOptions(opts),
  ),
  key(
    'rotate',
    {
      summary: 'a new current data key for new backups; nothing is re-encrypted',
      options: [{ flags: '--also-passphrase-file <file>', description: 'also write it into the key file this passphrase opens (repeatable)', repeatable: true }],
      details: `Written into your key file and into those whose passphrases --also-passphrase-file gives (they
also get every data key yours holds); other key files keep opening older backups, but backups
with their passphrases fail (exit 4) until they hold it.`,
      examples: ['key rotate', 'key rotate --also-passphrase-file ./bob-passphrase'],
    },
    ({ opts }) => ({ alsoPassphraseFiles: (opts['alsoPassphraseFile'] as string[] | undefined) ?? [] }),
  ),
  key(
    'migrate',
    {
      summary: 'move a repository made before key files onto them',
      options: [{ flags: '--label <text>', description: 'names the new key file' }],
      details: 'Makes a key file for your passphrase holding a new current data key and the passphrase itself (older backups need it).',
      examples: ['key migrate --label laptop'],
    },
    ({ opts }) => given({ label: str(opts, 'label') }),
  ),
];

/** The groups of subcommands, by their first word. */
export const GROUPS: readonly GroupSpec[] = [KEY_GROUP];

/** What `strata --help` ends with. */
export function topLevelDetails(): string {
  return `Database locations (<db>, --to, "url" in strata.config.json):
${DATABASE_LOCATIONS()}
  or a database name from strata.config.json

Repository locations (--repo, STRATA_REPO, "repository" in strata.config.json):
  ${repositoryLocationPhrase()}

Exit status:
  0  ok
  1  the operation failed (details on stderr, or in the JSON "error")
  2  usage error (bad arguments or configuration)
  3  verification failed (a check failed), or strata health found a problem
  4  wrong or missing passphrase, or its key file lacks the data key needed
  5  the repository is locked by another live process
  6  no repository at the location (folder or bucket missing, or no strata init yet)
  7  the storage denied access (check the credentials, the profile, the bucket's policy)
  128  wal-fetch: any failure but "the archive does not hold that file" (1), so that PostgreSQL stops its recovery instead of ending it early`;
}
