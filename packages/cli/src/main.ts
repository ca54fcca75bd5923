#!/usr/bin/env node
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { EXIT, STRATA_VERSION, StrataError, exitCodeFor, isStrataError } from '@strata/sdk';
import type { StrataErrorCode } from '@strata/sdk';
import {
  backupCommand,
  deleteCommand,
  exportCommand,
  importCommand,
  healthCommand,
  initCommand,
  inventoryCommand,
  listByTier,
  listCommand,
  pruneCommand,
  restoreCommand,
  runCommand,
  statsCommand,
  verifyCommand,
} from './commands.js';
import type { PolicyFlags } from './commands.js';
import { CommandContext } from './context.js';
import { keyCommand } from './key-commands.js';
import type { GlobalOptions } from './context.js';

const HELP = `strata ${STRATA_VERSION}: database backups you can prove

Usage: strata <command> [options]

Commands:
  init                         create a repository (encrypted unless --no-encryption)
  backup <db>                  back up a database (a name from strata.config.json, a SQLite
                               file path, sqlite:PATH, or postgres://user@host:port/db): full,
                               incremental, differential or schema-only
  list [<db>]                  list restore points, newest chains first
  restore <id|latest> --to T   restore a restore point (and its chain) to T; also --as-of TIME,
                               --tables a,b
  verify <id|latest|--all>     check backups (--level quick: artifacts and hashes;
                               --level full: also restore into a scratch database and compare)
  prune [<db>]                 remove backups no retention rule keeps (--dry-run shows the plan)
  run --db NAME -- CMD [ARGS]  back up, run CMD, pass its exit status through; with
                               --rollback-on-failure restore the backup when CMD fails
  stats [--since 30d]          backups per day and type: count, success rate, time, size, ratio
  health                       exit 3 if a database's newest good backup is older than --max-age
                               (25h), any restore point failed its last verification, none passed
                               one within --max-unverified (8d), a backup took longer than
                               --max-duration (2h), or the disk is fuller than --max-disk (85%)
  inventory                    per database: latest backup, count, stored size, last verification
  export [<db>...|--all] --out FILE   the newest good restore point of each database with its
                               chain, catalog entries and RESTORE.md, as .tar.gz or .zip
  import FILE                  bring an export into this repository (checksums verified)
  delete <id>...               delete restore points (--with-dependents to also delete the
                               backups that build on them)
  key list|add|remove|passwd|rotate|migrate
                               passphrases and data keys: several passphrases can open a
                               repository; add, change or revoke them, or rotate the data key,
                               without re-encrypting any backup (strata key --help)

Options for every command:
  --repo DIR                   the repository (or STRATA_REPO, or "repository" in strata.config.json)
  --config FILE                config file (default: strata.config.json here or in a parent folder)
  --passphrase-file FILE       read the passphrase from FILE
  --passphrase-command CMD     run CMD (with sh -c) and use what it prints as the passphrase
                               (a flag wins over STRATA_PASSPHRASE_COMMAND, STRATA_PASSPHRASE_FILE
                               and STRATA_PASSPHRASE; without any, a terminal prompt, 3 tries)
  --lock-wait SECONDS          wait this long for another process's repository lock (default 60)
  --json                       print one JSON document on stdout, and nothing else there
  -h, --help                   show help (also: strata <command> --help)
  --version                    print the version

Exit status:
  0  ok
  1  the operation failed (details on stderr, or in the JSON "error")
  2  usage error (bad arguments or configuration)
  3  verification failed (a check failed), or strata health found a problem
  4  wrong or missing passphrase, or its key file lacks the data key needed
  5  the repository is locked by another live process
`;

const KEY_HELP = `Usage: strata key list [--json]
       strata key add [--label TEXT] [--new-passphrase-file FILE | --new-passphrase-command CMD]
       strata key remove <key-file-id> [--force]
       strata key passwd [--new-passphrase-file FILE | --new-passphrase-command CMD]
       strata key rotate [--also-passphrase-file FILE]...
       strata key migrate [--label TEXT]

Backups are encrypted under a data key (a random OpenPGP password). Each passphrase opens one key
file in keys/ (an OpenPGP message that gpg reads) holding the data keys it grants, so passphrases
come and go, and the data key changes, without re-encrypting any backup. docs/FORMAT.md shows how
to recover with gpg alone: your key file first, then the artifact.

  list      key files (id, label, data keys held, the one your passphrase opens, if given) and
            data keys (current, backups that need each, key files holding each); no passphrase
            is needed
  add       a new passphrase: a key file holding the data keys yours holds
  remove    revoke a key file's passphrase. Refused for the last key file, for yours (unless
            --force), and when no other key file would hold a data key a backup needs. A copy
            of the key file, or keys read from it, still open older backups: rotate afterwards
            if it may have leaked
  passwd    change your passphrase (a new key file replaces yours in one atomic step)
  rotate    a new current data key for new backups, written into your key file and into those
            whose passphrases --also-passphrase-file gives (repeatable; they also get every data
            key yours holds); other key files keep opening older backups, but backups with their
            passphrases fail (exit 4) until they hold it. Nothing is re-encrypted
  migrate   move a repository made before key files onto them: a key file for your passphrase
            holding a new current data key and the passphrase itself (older backups need it)

The passphrase that unlocks comes from the usual sources (--passphrase-file, ...). The new one for
add and passwd comes from --new-passphrase-command, --new-passphrase-file,
STRATA_NEW_PASSPHRASE_COMMAND, STRATA_NEW_PASSPHRASE_FILE, STRATA_NEW_PASSPHRASE, or a prompt
(asked twice), never from the command line. Every change takes the repository lock and is
journaled (ids and labels only).
`;

const COMMAND_HELP: Record<string, string> = {
  key: KEY_HELP,
  init: `Usage: strata init --repo DIR [--encryption compat|modern | --no-encryption] [--compression zstd|gzip|none] [--compression-level N] [--group-readable] [--label TEXT]

Creates a repository. Encryption is OpenPGP with AES-256, under a random data key that a key file
sealed with your passphrase holds (keys/; strata key --help):
  compat   (default) gpg --decrypt can open every artifact
  modern   AEAD (RFC 9580); faster, authenticated per chunk, but GnuPG cannot read it (key files
           are always gpg-readable)
The passphrase comes from --passphrase-command, --passphrase-file, STRATA_PASSPHRASE_COMMAND,
STRATA_PASSPHRASE_FILE, STRATA_PASSPHRASE, or a prompt (asked twice), in that order.
Compression defaults to zstd level 3 when this Node can do zstd, else gzip level 6.
The repository is private to you: folders 0700, files 0600, whatever the umask. With
--group-readable your group may read it too (folders 0750, files 0640: copy, sync, recover by
hand; only you write). repository.json records the choice, so every later command keeps it.
--label names its key file.
`,
  backup: `Usage: strata backup <db> [--type full|incremental|differential|schema-only] [--auto-full] [--label TEXT] [--tag TAG]... [--time ISO] [--name NAME] [--json]

  <db>          a name from strata.config.json, a SQLite file path, sqlite:PATH, or
                postgres://user@host:port/database (password in the URL or PGPASSWORD)
  --type        full (default): self-contained
                incremental: only what changed since the newest restore point of <db>
                differential: only what changed since the newest full backup of <db>
                schema-only: the schema, no rows
  --auto-full   for incremental/differential: take a full backup if there is none yet
  --label       a note kept with the backup
  --tag         a tag (repeatable)
  --time        record the backup at this time instead of now (imports, tests)
  --name        the database name to file a path under (default: the file name)
With --json, prints { "id": ..., "backup": { ... } }.
`,
  list: `Usage: strata list [<db>] [--by-tier [policy flags]] [--json]

Lists restore points, newest chains first: id, database, engine, type, time, sizes, chain, last
verification. A * marks each database's newest good restore point (the newest with data whose
last verification did not fail: the one health measures and retention always keeps; "newestGood"
in --json). --by-tier groups them under the retention rule that keeps each (policy as for prune).
`,
  run: `Usage: strata run --db NAME [--type incremental|differential|full] [--rollback-on-failure] [--json] -- COMMAND [ARGS]

Takes a backup (label pre-update; an incremental, or a full if there is none yet), refuses to run
COMMAND if it failed, runs COMMAND, and exits with COMMAND's exit status. The journal records the
outcome and the exact restore command that undoes the change. With --rollback-on-failure, a
failing COMMAND is undone at once by restoring the backup in place (stop other writers first).
`,
  prune: `Usage: strata prune [<db>] [--dry-run] [--keep-last N] [--keep-hourly N] [--keep-daily N]
                    [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--keep-within DUR]
                    [--keep-label LABEL=DUR|forever]... [--json]

Removes the backups no rule keeps. Without flags the policy comes from strata.config.json
("retention", per database or top level), else daily 7, weekly 8, monthly 12 (and backups
labelled pre-update for 30d). Counts keep the newest backup of each of the last N
hours/days/weeks/months/years that hold one; windows count back from the newest backup, not from
now. Always kept: the newest good backup, backups tagged "pinned", and every backup a kept one
depends on (its chain). A policy that keeps nothing is refused. DUR: 30min, 12h, 30d, 2w, 6mo, 1y.
--dry-run prints every backup with keep/remove and the reasons, and deletes nothing.
`,
  restore: `Usage: strata restore <id|latest> --to TARGET [--db NAME] [--tables a,b] [--force] [--yes] [--json]
       strata restore --as-of TIME --db NAME --to TARGET ...

  --to          where to restore: a SQLite file path or a postgres:// URL (created if missing;
                an existing one needs --force)
  --as-of       restore the newest restore point taken at or before TIME (ISO 8601)
  --db          with "latest" or --as-of: which database
  --tables      only these tables (with their indexes and triggers): into a new file, or
                replacing just them in an existing database, in one transaction
  --force       replace an existing target; it stays intact until the new one is complete
  --yes         do not ask before replacing (needed when not on a terminal)
Nothing is written to the target until every checksum and the decryption check passed.
`,
  delete: `Usage: strata delete <id>... [--with-dependents] [--dry-run] [--yes] [--json]

Deletes restore points from the repository: their artifacts and catalog entries. A backup that
incrementals or differentials build on is refused (deleting it would break them) unless
--with-dependents is given, which deletes those too. It lists everything that will go, and warns
when that includes a database's newest good restore point; it asks first on a terminal (pass
--yes otherwise). --dry-run shows the list and deletes nothing. For routine clean-up use prune,
which follows the retention policy.
`,
  verify: `Usage: strata verify <id|latest|--all> [--level quick|full] [--db NAME] [--json]

Checks, each reported as passed, failed or skipped:
  file-accessibility   the artifacts exist with their recorded sizes
  checksum-match       artifact SHA-256 and every stream and chunk hash inside
  database-readable    (full) restores into a scratch database
  schema-integrity     (full) schema fingerprint and integrity check
  data-consistency     (full) per-table row counts, content checksums, foreign keys
Exit status 3 when any check failed.
`,
};

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

function policyOptions(): ParseArgsConfig['options'] {
  return {
    'keep-last': { type: 'string' },
    'keep-hourly': { type: 'string' },
    'keep-daily': { type: 'string' },
    'keep-weekly': { type: 'string' },
    'keep-monthly': { type: 'string' },
    'keep-yearly': { type: 'string' },
    'keep-within': { type: 'string' },
    'keep-label': { type: 'string', multiple: true },
  };
}

function policyFlags(values: Values): PolicyFlags {
  const count = (flag: string): number | undefined => {
    const v = parseNumber(str(values, flag), `--${flag}`);
    if (v !== undefined && !Number.isInteger(v)) throw new StrataError('USAGE', `--${flag} expects a whole number (got ${v})`);
    return v;
  };
  return {
    ...(count('keep-last') !== undefined ? { keepLast: count('keep-last')! } : {}),
    ...(count('keep-hourly') !== undefined ? { keepHourly: count('keep-hourly')! } : {}),
    ...(count('keep-daily') !== undefined ? { keepDaily: count('keep-daily')! } : {}),
    ...(count('keep-weekly') !== undefined ? { keepWeekly: count('keep-weekly')! } : {}),
    ...(count('keep-monthly') !== undefined ? { keepMonthly: count('keep-monthly')! } : {}),
    ...(count('keep-yearly') !== undefined ? { keepYearly: count('keep-yearly')! } : {}),
    ...(str(values, 'keep-within') !== undefined ? { keepWithin: str(values, 'keep-within')! } : {}),
    keepLabels: (values['keep-label'] as string[] | undefined) ?? [],
  };
}

const GLOBAL_OPTIONS = {
  repo: { type: 'string' },
  config: { type: 'string' },
  'passphrase-file': { type: 'string' },
  'passphrase-command': { type: 'string' },
  'lock-wait': { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} satisfies ParseArgsConfig['options'];

const COMMAND_OPTIONS: Record<string, ParseArgsConfig['options']> = {
  init: {
    encryption: { type: 'string' },
    'no-encryption': { type: 'boolean', default: false },
    compression: { type: 'string' },
    'compression-level': { type: 'string' },
    'group-readable': { type: 'boolean', default: false },
    label: { type: 'string' },
  },
  key: {
    label: { type: 'string' },
    force: { type: 'boolean', default: false },
    'new-passphrase-file': { type: 'string' },
    'new-passphrase-command': { type: 'string' },
    'also-passphrase-file': { type: 'string', multiple: true },
  },
  backup: {
    type: { type: 'string' },
    label: { type: 'string' },
    tag: { type: 'string', multiple: true },
    time: { type: 'string' },
    name: { type: 'string' },
    'auto-full': { type: 'boolean', default: false },
  },
  list: { 'by-tier': { type: 'boolean', default: false }, ...policyOptions() },
  prune: { 'dry-run': { type: 'boolean', default: false }, ...policyOptions() },
  run: { db: { type: 'string' }, type: { type: 'string' }, 'rollback-on-failure': { type: 'boolean', default: false } },
  stats: { since: { type: 'string' } },
  health: { 'max-age': { type: 'string' }, 'max-duration': { type: 'string' }, 'max-unverified': { type: 'string' }, 'max-disk': { type: 'string' } },
  inventory: {},
  export: { out: { type: 'string' }, all: { type: 'boolean', default: false } },
  import: {},
  restore: {
    to: { type: 'string' },
    db: { type: 'string' },
    'as-of': { type: 'string' },
    tables: { type: 'string' },
    force: { type: 'boolean', default: false },
    yes: { type: 'boolean', short: 'y', default: false },
  },
  verify: { all: { type: 'boolean', default: false }, level: { type: 'string' }, db: { type: 'string' } },
  delete: { 'with-dependents': { type: 'boolean', default: false }, yes: { type: 'boolean', short: 'y', default: false }, 'dry-run': { type: 'boolean', default: false } },
};

function parseNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new StrataError('USAGE', `${flag} expects a number (got ${JSON.stringify(value)})`);
  return n;
}

function str(values: Values, key: string): string | undefined {
  const v = values[key];
  return typeof v === 'string' ? v : undefined;
}

/** Runs the CLI and returns its exit status (main() sets process.exitCode from it). */
export async function run(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined ? EXIT.usage : EXIT.ok;
  }
  if (command === '--version') {
    process.stdout.write(`${STRATA_VERSION}\n`);
    return EXIT.ok;
  }
  const wantsJson = rest.includes('--json');
  const controller = new AbortController();
  const onSignal = (): void => controller.abort(new StrataError('ABORTED', 'interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let ctx: CommandContext | undefined;
  try {
    const specific = COMMAND_OPTIONS[command];
    if (!specific) throw new StrataError('USAGE', `unknown command ${JSON.stringify(command)}; run strata --help`);
    let parsed: { values: Values; positionals: string[] };
    try {
      parsed = parseArgs({ args: rest, options: { ...GLOBAL_OPTIONS, ...specific }, allowPositionals: true, strict: true }) as { values: Values; positionals: string[] };
    } catch (err) {
      throw new StrataError('USAGE', `${command}: ${(err as Error).message.replace(/\. To specify a positional.*$/s, '')}`);
    }
    const { values, positionals } = parsed;
    if (values['help']) {
      process.stdout.write(COMMAND_HELP[command] ?? HELP);
      return EXIT.ok;
    }
    if (command === 'key' && positionals[0] === 'help') {
      process.stdout.write(KEY_HELP);
      return EXIT.ok;
    }
    const global: GlobalOptions = {
      json: values['json'] === true,
      ...(str(values, 'repo') !== undefined ? { repo: str(values, 'repo')! } : {}),
      ...(str(values, 'config') !== undefined ? { config: str(values, 'config')! } : {}),
      ...(str(values, 'passphrase-file') !== undefined ? { passphraseFile: str(values, 'passphrase-file')! } : {}),
      ...(str(values, 'passphrase-command') !== undefined ? { passphraseCommand: str(values, 'passphrase-command')! } : {}),
      ...(values['lock-wait'] !== undefined ? { lockWait: parseNumber(str(values, 'lock-wait'), '--lock-wait')! } : {}),
    };
    const maxPositionals: Record<string, number> = { init: 0, backup: 1, list: 1, restore: 1, verify: 1, prune: 1, run: Number.MAX_SAFE_INTEGER, stats: 0, health: 0, inventory: 0, export: Number.MAX_SAFE_INTEGER, import: 1, delete: Number.MAX_SAFE_INTEGER, key: 2 };
    if (positionals.length > maxPositionals[command]!) {
      throw new StrataError('USAGE', `${command}: unexpected argument ${JSON.stringify(positionals[maxPositionals[command]!])}`);
    }
    ctx = new CommandContext(global);
    switch (command) {
      case 'init':
        return await initCommand(ctx, {
          ...(str(values, 'encryption') !== undefined ? { encryption: str(values, 'encryption')! } : {}),
          noEncryption: values['no-encryption'] === true,
          ...(str(values, 'compression') !== undefined ? { compression: str(values, 'compression')! } : {}),
          ...(values['compression-level'] !== undefined ? { compressionLevel: parseNumber(str(values, 'compression-level'), '--compression-level')! } : {}),
          groupReadable: values['group-readable'] === true,
          ...(str(values, 'label') !== undefined ? { label: str(values, 'label')! } : {}),
        });
      case 'key':
        return await keyCommand(ctx, {
          ...(positionals[0] !== undefined ? { action: positionals[0] } : {}),
          ...(positionals[1] !== undefined ? { id: positionals[1] } : {}),
          ...(str(values, 'label') !== undefined ? { label: str(values, 'label')! } : {}),
          force: values['force'] === true,
          ...(str(values, 'new-passphrase-file') !== undefined ? { newPassphraseFile: str(values, 'new-passphrase-file')! } : {}),
          ...(str(values, 'new-passphrase-command') !== undefined ? { newPassphraseCommand: str(values, 'new-passphrase-command')! } : {}),
          alsoPassphraseFiles: (values['also-passphrase-file'] as string[] | undefined) ?? [],
        });
      case 'backup': {
        if (positionals.length === 0) throw new StrataError('USAGE', 'backup: name the database to back up (see strata backup --help)');
        return await backupCommand(
          ctx,
          {
            database: positionals[0]!,
            ...(str(values, 'type') !== undefined ? { type: str(values, 'type')! } : {}),
            ...(str(values, 'label') !== undefined ? { label: str(values, 'label')! } : {}),
            tags: (values['tag'] as string[] | undefined) ?? [],
            ...(str(values, 'time') !== undefined ? { time: str(values, 'time')! } : {}),
            ...(str(values, 'name') !== undefined ? { name: str(values, 'name')! } : {}),
            autoFull: values['auto-full'] === true,
          },
          controller.signal,
        );
      }
      case 'list':
        if (values['by-tier']) return await listByTier(ctx, positionals[0], policyFlags(values));
        return await listCommand(ctx, positionals[0] !== undefined ? { database: positionals[0] } : {});
      case 'run':
        if (!rest.includes('--')) throw new StrataError('USAGE', 'run: put the command after --, e.g. strata run --db app -- npm run migrate');
        return await runCommand(
          ctx,
          {
            ...(str(values, 'db') !== undefined ? { database: str(values, 'db')! } : {}),
            ...(str(values, 'type') !== undefined ? { type: str(values, 'type')! } : {}),
            rollbackOnFailure: values['rollback-on-failure'] === true,
            command: positionals,
          },
          controller.signal,
        );
      case 'stats':
        return await statsCommand(ctx, str(values, 'since') !== undefined ? { since: str(values, 'since')! } : {});
      case 'health':
        return await healthCommand(ctx, {
          ...(str(values, 'max-age') !== undefined ? { maxAge: str(values, 'max-age')! } : {}),
          ...(str(values, 'max-unverified') !== undefined ? { maxUnverified: str(values, 'max-unverified')! } : {}),
          ...(str(values, 'max-duration') !== undefined ? { maxDuration: str(values, 'max-duration')! } : {}),
          ...(values['max-disk'] !== undefined ? { maxDisk: parseNumber(str(values, 'max-disk'), '--max-disk')! } : {}),
        });
      case 'inventory':
        return await inventoryCommand(ctx);
      case 'export':
        return await exportCommand(ctx, { databases: positionals, all: values['all'] === true, ...(str(values, 'out') !== undefined ? { out: str(values, 'out')! } : {}) });
      case 'import':
        return await importCommand(ctx, positionals[0]);
      case 'delete':
        return await deleteCommand(ctx, { ids: positionals, withDependents: values['with-dependents'] === true, yes: values['yes'] === true, dryRun: values['dry-run'] === true });
      case 'prune':
        return await pruneCommand(ctx, { ...policyFlags(values), ...(positionals[0] !== undefined ? { database: positionals[0] } : {}), dryRun: values['dry-run'] === true });
      case 'restore':
        return await restoreCommand(
          ctx,
          {
            ...(positionals[0] !== undefined ? { id: positionals[0] } : {}),
            ...(str(values, 'as-of') !== undefined ? { asOf: str(values, 'as-of')! } : {}),
            ...(str(values, 'tables') !== undefined ? { tables: str(values, 'tables')! } : {}),
            ...(str(values, 'to') !== undefined ? { to: str(values, 'to')! } : {}),
            ...(str(values, 'db') !== undefined ? { database: str(values, 'db')! } : {}),
            force: values['force'] === true,
            yes: values['yes'] === true,
          },
          controller.signal,
        );
      case 'verify':
        return await verifyCommand(
          ctx,
          {
            ...(positionals[0] !== undefined ? { id: positionals[0] } : {}),
            all: values['all'] === true,
            ...(str(values, 'level') !== undefined ? { level: str(values, 'level')! } : {}),
            ...(str(values, 'db') !== undefined ? { database: str(values, 'db')! } : {}),
          },
          controller.signal,
        );
      default:
        throw new StrataError('USAGE', `unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    return report(err, wantsJson);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await ctx?.close().catch(() => undefined);
  }
}

/** Prints an error for people (stderr) and, with --json, as the JSON document on stdout. */
function report(err: unknown, json: boolean): number {
  const known = isStrataError(err);
  const code: StrataErrorCode = known ? err.code : 'INTERNAL';
  const message = known ? err.message : `unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\nThis is a bug in Strata; please report it.`;
  const exit = exitCodeFor(code);
  if (json) process.stdout.write(JSON.stringify({ error: { code, message: known ? err.message : String(err), exitCode: exit } }, null, 2) + '\n');
  process.stderr.write(`strata: ${message}\n`);
  return exit;
}

// Run when executed as a program (not when imported by tests).
const invokedDirectly = process.argv[1] !== undefined && import.meta.url === new URL(`file://${(await import('node:fs')).realpathSync(process.argv[1])}`).href;
if (invokedDirectly) {
  process.exitCode = await run(process.argv.slice(2));
}
