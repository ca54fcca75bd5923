import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import {
  BACKUP_TYPES,
  DEFAULT_HEALTH,
  DEFAULT_LEVELS,
  describeLostWindows,
  StrataError,
  assessContinuity,
  assessLogArchive,
  assessHealth,
  assessMirror,
  isSameStorage,
  backupRuns,
  backupStats,
  defaultCompression,
  displayLocation,
  initRepository,
  inventory,
  isStrataError,
  writtenByNewerStrata,
  durationBefore,
  durationMs,
  parseDuration,
  parseTableList,
  resolveDatabase,
  resolveLocator,
  retentionFor,
  tierOf,
  validatePolicy,
  ownEntry,
  unchangedSinceParent,
} from '@strata/sdk';
import type { PointInTimeResult } from '@strata/sdk';
import type { BackupRecord, BackupType, CodecName, EncryptionProfile, HealthCheck, HealthThresholds, MirrorState, MirrorSyncResult, Repository, RestoreFallback, RetentionDecision, RetentionPolicy, VerifyReport } from '@strata/sdk';
import { writeFileAtomically } from './atomic-file.js';
import type { CommandContext } from './context.js';
import { physicalRestore, physicalTableRestore } from './wal-commands.js';
import type { PhysicalRestoreOptions } from './wal-commands.js';
import { renderStatsReport } from './stats-report.js';
import { warnOfFailedVerifications } from './restore-choice.js';
import { printTable } from './table.js';
import { ProgressBar, confirm, environmentWithoutSecrets, formatAge, formatBytes, interactive, printable, readPassphrase } from './terminal.js';

/** Options of `strata init`. */
export interface InitCommandOptions {
  readonly encryption?: string;
  readonly noEncryption: boolean;
  readonly compression?: string;
  readonly compressionLevel?: number;
  readonly groupReadable?: boolean;
  /** A label for the first key file. */
  readonly label?: string;
}

export async function initCommand(ctx: CommandContext, options: InitCommandOptions): Promise<number> {
  const location = ctx.repositoryPath();
  if (options.noEncryption && options.encryption !== undefined) {
    throw new StrataError('USAGE', 'init: --no-encryption and --encryption contradict each other');
  }
  const profile = (options.noEncryption ? 'none' : (options.encryption ?? 'compat')) as EncryptionProfile;
  if (profile === 'none' && options.label !== undefined) throw new StrataError('USAGE', 'init: --label names the key file of an encrypted repository; an unencrypted one has none');
  if (!['compat', 'modern', 'none'].includes(profile)) throw new StrataError('USAGE', `init: --encryption must be compat or modern (got ${profile})`);
  const codec = (options.compression ?? defaultCompression().codec) as CodecName;
  const level = options.compressionLevel ?? DEFAULT_LEVELS[codec] ?? 0;
  let passphrase;
  if (profile !== 'none') {
    passphrase = await readPassphrase(ctx.passphraseSources(interactive(ctx.json), true));
    if (!passphrase) {
      throw new StrataError(
        'PASSPHRASE_MISSING',
        'init: an encrypted repository needs a passphrase: set STRATA_PASSPHRASE, pass --passphrase-file FILE, or run on a terminal; for an unencrypted repository pass --no-encryption',
      );
    }
  }
  const groupReadable = options.groupReadable ?? false;
  await initRepository(location, {
    encryption: profile,
    ...(passphrase ? { passphrase } : {}),
    compression: { codec, level },
    groupReadable,
    ...(options.label !== undefined ? { keyLabel: options.label } : {}),
    storage: ctx.storageSettings(),
  });
  const access = groupReadable ? 'group-readable' : 'private';
  if (ctx.json) {
    ctx.printJson({ repository: location, encryption: profile, compression: { codec, level }, access });
  } else {
    process.stdout.write(
      `created repository ${location}\n  encryption: ${profile === 'none' ? 'none (unencrypted, as asked)' : `${profile} (AES-256)`}\n  compression: ${codec}${codec === 'none' ? '' : ` level ${level}`}\n  access: ${location.startsWith('s3://') ? "whoever the bucket's policy lets in" : groupReadable ? 'you, and your group reads (folders 0750, files 0640)' : 'only you (folders 0700, files 0600)'}\n`,
    );
    if (profile !== 'none') {
      process.stdout.write(
        'Keep the passphrase safe: without it (or another passphrase added with `strata key add`) no backup in this repository can be restored.\n',
      );
    }
  }
  return 0;
}

/** Options of `strata backup`. */
export interface BackupCommandOptions {
  readonly database: string;
  readonly type?: string;
  readonly label?: string;
  readonly tags: readonly string[];
  readonly time?: string;
  readonly name?: string;
  readonly autoFull: boolean;
}

export async function backupCommand(ctx: CommandContext, options: BackupCommandOptions, signal: AbortSignal): Promise<number> {
  const type = (options.type ?? 'full') as BackupType;
  if (!BACKUP_TYPES.includes(type)) throw new StrataError('USAGE', `backup: --type must be one of ${BACKUP_TYPES.join(', ')} (got ${options.type})`);
  let time: Date | undefined;
  if (options.time !== undefined) {
    time = new Date(options.time);
    if (Number.isNaN(time.getTime())) throw new StrataError('USAGE', `backup: --time ${JSON.stringify(options.time)} is not an ISO date/time`);
  }
  const db = resolveDatabase(options.database, ctx.loaded.config, options.name);
  const repo = await ctx.repository();
  await repo.unlock();
  const bar = new ProgressBar(`backup ${db.name}`, interactive(ctx.json));
  let record: BackupRecord;
  let mirrored: MirrorSyncResult | undefined;
  let warned = false;
  try {
    record = await repo.backup(db.locator, {
      database: db.name,
      nameIsDerived: db.derived,
      type,
      ...(options.label !== undefined ? { label: options.label } : {}),
      tags: options.tags,
      ...(time ? { time } : {}),
      autoFull: options.autoFull,
      signal,
      onProgress: bar.update,
      onWarning: (message) => {
        bar.done();
        warned = true;
        process.stderr.write(`strata: warning: ${message}\n`);
      },
      onMirror: (result) => {
        bar.done();
        mirrored = result;
      },
    });
  } finally {
    bar.done();
  }
  const unchanged = record.parent !== null && unchangedSinceParent(record, (await repo.list({ database: record.database })).find((b) => b.id === record.parent));
  if (mirrored && !mirrored.ok) {
    // The backup is complete; the mirror's failure is a warning here, journaled, and `health` fails.
    process.stderr.write(`strata: warning: MIRROR FAILED: ${mirrored.error?.message ?? 'unknown error'}; the backup is complete in the repository, and the next backup (or strata copy) copies what the mirror lacks\n`);
  }
  if (ctx.json) {
    ctx.printJson({ id: record.id, unchanged, backup: record, ...(mirrored ? { mirror: mirrored } : {}) });
  } else {
    const ratio = record.rawBytes > 0 ? ` (${((record.storedBytes / record.rawBytes) * 100).toFixed(0)}% of ${formatBytes(record.rawBytes)})` : '';
    const against = record.parent ? `, against ${record.parent}` : '';
    const fellBack = type !== record.type ? (warned ? ' (see the warning above)' : ` (no full backup existed, so a full one was taken)`) : '';
    process.stdout.write(`backup ${record.id} completed: ${record.type}${against}${fellBack}, database ${formatBytes(record.databaseBytes)}, stored ${formatBytes(record.storedBytes)}${ratio}\n`);
    if (unchanged) process.stdout.write(`nothing changed since ${record.parent}; recorded an empty ${record.type} so the schedule shows the database was checked\n`);
    else if (record.parent !== null && record.payloadBytes === 0) process.stdout.write(`no table's rows changed since ${record.parent}, its schema did: the ${record.type} holds the schema as it is now\n`);
    if (mirrored?.ok) process.stdout.write(`mirror ${printable(mirrored.mirror)}: ${mirrored.copied.length === 0 ? 'already up to date' : `copied ${mirrored.copied.length} backup(s)`}\n`);
  }
  return 0;
}

/** Options of `strata restore`. */
export interface RestoreCommandOptions {
  readonly id?: string;
  readonly asOf?: string;
  readonly tables?: string;
  readonly to?: string;
  readonly database?: string;
  readonly force: boolean;
  readonly yes: boolean;
  /** Physical backups: recovery targets other than --as-of, and a temporary server that proves the recovery. */
  readonly lsn?: string;
  readonly xid?: string;
  readonly restorePoint?: string;
  readonly immediate?: boolean;
  readonly start?: boolean;
  readonly targetAction?: string;
  readonly timeline?: string;
  /** off or preserve, as given. */
  readonly archiveMode?: string;
  /** --tablespace-map OLD=NEW, as given. */
  readonly tablespaceMap?: readonly string[];
  /** --table-lock-wait, as given (a duration). */
  readonly tableLockWait?: string;
}

/** --table-lock-wait as whole seconds: the servers take a lock wait in seconds. */
function lockWaitSecondsOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const duration = parseDuration(text, 'restore: --table-lock-wait');
  const ms = durationMs(duration);
  if (duration.months > 0 || ms % 1000 !== 0 || ms < 1000 || ms > 86_400_000) throw new StrataError('USAGE', `restore: --table-lock-wait takes whole seconds from 1s to 1d (e.g. 10s, 5min), not ${JSON.stringify(text)}`);
  return ms / 1000;
}

/** --tablespace-map OLD=NEW (repeatable): both absolute folders, each OLD once. */
function tablespaceMapOf(pairs: readonly string[]): Record<string, string> {
  const map: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    const [from, to] = at < 0 ? [pair, ''] : [pair.slice(0, at), pair.slice(at + 1)];
    if (!path.isAbsolute(from) || !path.isAbsolute(to)) throw new StrataError('USAGE', `restore: --tablespace-map takes OLD=NEW, two absolute folders (the tablespace's folder when it was backed up, and where to restore it), not ${JSON.stringify(pair)}`);
    if (path.resolve(from) in map) throw new StrataError('USAGE', `restore: --tablespace-map names ${from} twice`);
    map[path.resolve(from)] = path.resolve(to);
  }
  return map;
}

export async function restoreCommand(ctx: CommandContext, options: RestoreCommandOptions, signal: AbortSignal): Promise<number> {
  if (!options.to) throw new StrataError('USAGE', 'restore: --to TARGET is required (a new file, or an existing one with --force)');
  const lockWaitSeconds = lockWaitSecondsOf(options.tableLockWait);
  const physical = (): PhysicalRestoreOptions => ({
    ...given({ id: options.id, database: options.database, asOf: options.asOf, lsn: options.lsn, xid: options.xid, restorePoint: options.restorePoint, targetAction: options.targetAction, timeline: options.timeline, archiveMode: options.archiveMode }),
    to: options.to!,
    immediate: options.immediate === true,
    start: options.start === true,
    force: options.force,
    tablespaceMap: tablespaceMapOf(options.tablespaceMap ?? []),
  });
  const physicalOnly = (options.tablespaceMap ?? []).length > 0 || options.lsn !== undefined || options.xid !== undefined || options.restorePoint !== undefined || options.immediate === true || options.start === true || options.targetAction !== undefined || options.timeline !== undefined || options.archiveMode !== undefined;
  // A cluster's physical backups are restored by recovery, also when the config does not name it
  // (a copy, an import, a repository given with --repo): its catalog says so.
  // A physical backup named by its id is too, with or without --db.
  const namedPhysical = async (): Promise<boolean> =>
    options.id !== undefined && options.id !== 'latest' && (await (await ctx.repository()).list()).some((b) => b.id === options.id && b.logRange !== undefined);
  const physicalDatabase =
    (options.database !== undefined &&
      (ownEntry(ctx.loaded.config.databases, options.database)?.method === 'physical' || (await (await ctx.repository()).list({ database: options.database })).some((b) => b.logRange !== undefined))) ||
    (await namedPhysical());
  if (physicalOnly || physicalDatabase) {
    if (options.tables !== undefined) {
      const tables = parseTableList(options.tables, 'public.orders,public.customers');
      if (options.start === true || options.targetAction !== undefined || options.archiveMode !== undefined || (options.tablespaceMap ?? []).length > 0) {
        throw new StrataError('USAGE', 'restore: --tables recovers a scratch cluster of its own (its tablespaces in its own temporary folder); --start, --target-action, --archive-mode and --tablespace-map are for whole-cluster restores');
      }
      return physicalTableRestore(ctx, { ...physical(), tables, yes: options.yes === true, ...(lockWaitSeconds !== undefined ? { lockWaitSeconds } : {}) }, signal);
    }
    return physicalRestore(ctx, physical(), signal);
  }
  if ((options.id === undefined) === (options.asOf === undefined)) throw new StrataError('USAGE', 'restore: name the backup (an id, or latest), or give --as-of TIME');
  let asOf: Date | undefined;
  if (options.asOf !== undefined) {
    asOf = new Date(options.asOf);
    if (Number.isNaN(asOf.getTime())) throw new StrataError('USAGE', `restore: --as-of ${JSON.stringify(options.asOf)} is not an ISO date/time`);
  }
  const tables = options.tables === undefined ? undefined : parseTableList(options.tables, 'orders,customers');
  const target = resolveLocator(options.to, process.cwd());
  const repo = await ctx.repository();
  const selector = {
    ...(options.id !== undefined ? { id: options.id } : {}),
    ...(asOf ? { asOf } : {}),
    ...(options.database !== undefined ? { database: options.database } : {}),
  };
  const plan = asOf ? await repo.planAsOf({ ...selector, asOf }) : undefined;
  const record = plan?.restorePoint ?? (await repo.resolve({ ...selector, withRows: true, trusted: true }));
  // A physical base backup is only half a restore: the data directory must also recover from the WAL archive.
  if (record.logRange && !plan) return physicalRestore(ctx, { ...physical(), id: record.id }, signal);
  warnOfFailedVerifications(record, await repo.list({ database: record.database }), options.id !== undefined && options.id !== 'latest' ? 'named' : { asOf });
  if (plan && !ctx.json) {
    process.stderr.write(
      plan.segments.length > 0
        ? `--as-of ${plan.asOf.toISOString()}: ${record.id} (${record.type}, taken ${record.createdAt}) and ${plan.segments.length} segment(s) of transactions after it\n`
        : `--as-of ${plan.asOf.toISOString()}: no segments cover that time; chose ${record.id} (${record.type}, taken ${record.createdAt}), ${formatSpan(plan.asOf.getTime() - Date.parse(record.createdAt))} before it\n`,
    );
  }
  const { exists: inPlace, description, display } = await repo.restoreTarget(record.engine, target);
  const file = displayLocation(display, description);
  if (inPlace && !options.force) {
    throw new StrataError(
      'TARGET_EXISTS',
      tables
        ? `restore: ${file} exists; pass --force to replace the tables ${tables.join(', ')} in it`
        : `restore: ${file} already exists; pass --force to replace it (the old ${display.locator === 'file' ? 'file' : 'database'} stays until the new one is complete)`,
    );
  }
  await repo.unlock();
  if (inPlace && !options.yes) {
    if (!interactive(ctx.json) || !process.stdin.isTTY) {
      throw new StrataError('USAGE', `restore: replacing ${tables ? `tables in ${file}` : file} needs confirmation; pass --yes when not on a terminal`);
    }
    const what = tables ? `the tables ${tables.join(', ')} in ${file}` : file;
    if (!(await confirm(`Replace ${what} with backup ${record.id} (${record.createdAt})?`))) {
      process.stderr.write('restore cancelled; nothing was changed\n');
      return 1;
    }
  }
  const bar = new ProgressBar(`restore ${record.id}`, interactive(ctx.json));
  let chain: readonly BackupRecord[];
  let fromMirror: RestoreFallback | undefined;
  let pointInTime: PointInTimeResult | undefined;
  try {
    ({ chain, fromMirror, pointInTime } = await repo.restore(asOf ? selector : { id: record.id }, { to: target, force: options.force, signal, onProgress: bar.update, ...(tables ? { tables } : {}), ...(lockWaitSeconds !== undefined ? { lockWaitSeconds } : {}) }));
  } finally {
    bar.done();
  }
  if (fromMirror) {
    // Said on stderr in every mode: the repository's own copy is damaged and needs attention.
    process.stderr.write(`strata: restored from the mirror ${printable(fromMirror.mirror)}: the repository's own copy could not be used (${printable(fromMirror.reason.message)}). To repair it: strata verify --all shows what is damaged; strata delete those backups (--with-dependents), then strata copy --from ${printable(fromMirror.mirror)} --to ${printable(repo.settings.location)} brings the mirror's copies back\n`);
  }
  if (ctx.json) {
    ctx.printJson({
      ...(fromMirror ? { fromMirror } : {}),
      id: record.id,
      database: record.database,
      type: record.type,
      createdAt: record.createdAt,
      chain: chain.map((b) => b.id),
      target: file,
      replaced: inPlace,
      ...(tables ? { tables } : {}),
      ...(pointInTime ? { pointInTime } : {}),
    });
  } else {
    const via = chain.length > 1 ? ` through its chain ${chain.map((b) => b.id).join(' → ')}` : '';
    const what = tables ? `tables ${tables.join(', ')} of ${record.id}` : record.id;
    process.stdout.write(`restored ${what} (${record.type}, ${record.createdAt})${via}${fromMirror ? ` from the mirror ${printable(fromMirror.mirror)}` : ''} to ${file}${inPlace ? (tables ? ' (replaced those tables)' : display.locator === 'file' ? ' (replaced the old file)' : ' (replaced the old database)') : ''}\n`);
    if (pointInTime && pointInTime.transactions > 0) {
      process.stdout.write(
        `replayed ${pointInTime.transactions} transaction(s) from ${pointInTime.segments} segment(s): the database as of ${pointInTime.reachedAt}, when its last transaction was seen committed; it holds everything committed before ${pointInTime.completeThrough} (${formatSpan(pointInTime.behindMs)} before ${pointInTime.asOf})\n`,
      );
    } else if (pointInTime) {
      // Worded for a database that was never replicated too, where "shipped" would mean nothing.
      process.stdout.write(`the database as of ${pointInTime.reachedAt}, when ${record.id} was taken, ${formatSpan(pointInTime.behindMs)} before ${pointInTime.asOf}: no segment holds a transaction in between\n`);
    }
  }
  return 0;
}

/** Options of `strata verify`. */
export interface VerifyCommandOptions {
  readonly id?: string;
  readonly all: boolean;
  readonly level?: string;
  readonly database?: string;
}

/**
 * Refuses a --db that names neither a database of the repository nor one of the config: a typo in
 * a scheduled `prune` or `verify --all` would otherwise find nothing to do, exit 0, and keep doing
 * so while the real database's backups pile up unpruned and unverified.
 */
async function requireKnownDatabase(ctx: CommandContext, repo: Repository, database: string | undefined, command: string): Promise<void> {
  if (database === undefined || ownEntry(ctx.loaded.config.databases, database) !== undefined) return;
  const known = new Set((await repo.list()).map((b) => b.database));
  if (known.has(database)) return;
  for (const name of Object.keys(ctx.loaded.config.databases ?? {})) known.add(name);
  throw new StrataError('BACKUP_NOT_FOUND', `${command}: ${ctx.repositoryPath()} holds no backups of ${database}, and the config names no such database (known: ${[...known].sort().join(', ') || 'none'})`);
}

export async function verifyCommand(ctx: CommandContext, options: VerifyCommandOptions, signal: AbortSignal): Promise<number> {
  const level = options.level ?? 'quick';
  if (level !== 'quick' && level !== 'full') throw new StrataError('USAGE', `verify: --level must be quick or full (got ${level})`);
  if (options.all === (options.id !== undefined)) throw new StrataError('USAGE', 'verify: give a backup id (or latest), or --all');
  const repo = await ctx.repository();
  await repo.unlock();
  const bar = new ProgressBar('verify', interactive(ctx.json));
  let reports: VerifyReport[];
  // Backups whose data key the passphrase's key file lacks, or that a newer Strata wrote: not
  // verified (and not failed); --all goes on with the others.
  const unverified: { backupId: string; code: string; message: string }[] = [];
  // Backups a prune removed while this ran: gone, neither passed nor failed.
  const removed: string[] = [];
  try {
    if (options.all) {
      if (options.database !== undefined) await requireKnownDatabase(ctx, repo, options.database, 'verify');
      const all = await repo.list(options.database === undefined ? {} : { database: options.database });
      reports = [];
      for (const b of all) {
        try {
          reports.push(...(await repo.verify({ id: b.id }, { level, signal, onProgress: bar.update })));
        } catch (err) {
          if (isStrataError(err, 'BACKUP_NOT_FOUND') && !(await repo.list({ database: b.database })).some((other) => other.id === b.id)) {
            removed.push(b.id);
            continue;
          }
          if (!isStrataError(err) || (err.code !== 'KEY_MISSING' && !writtenByNewerStrata(err))) throw err;
          unverified.push({ backupId: b.id, code: err.code, message: err.message });
        }
      }
    } else {
      reports = await repo.verify({ id: options.id!, ...(options.database !== undefined ? { database: options.database } : {}) }, { level, signal, onProgress: bar.update });
    }
  } finally {
    bar.done();
  }
  // With --all, the chains of segments too (continuous protection): unbroken, every segment intact.
  const segmentReports = options.all ? await repo.verifySegments(options.database === undefined ? {} : { database: options.database }, { signal }) : [];
  const failedSegments = segmentReports.filter((r) => r.outcome === 'failed');
  // Base backups whose restores replay an archived log: that log, from each of them onwards.
  const logReports = await repo.verifyLog(options.all ? (options.database === undefined ? {} : { database: options.database }) : { backupId: reports[0]?.backupId ?? '', ...(reports[0] ? { database: reports[0].database } : {}) }, { signal });
  const failedLogs = logReports.filter((r) => r.outcome === 'failed');
  // A base backup whose own range of the log is lost cannot be restored, whatever its artifact's
  // checks said: its report says so (verifyLog recorded it so in the catalog).
  for (const log of logReports) {
    if (log.to !== undefined) continue;
    const at = reports.findIndex((r) => r.backupId === log.base);
    if (at < 0) continue;
    const reason = `the archived log it needs to become consistent cannot be read: ${log.problems.join('; ')}`;
    const checks = reports[at]!.checks.map((c) => (c.name === 'file-accessibility' ? { ...c, status: 'failed' as const, reason } : c));
    reports[at] = { ...reports[at]!, outcome: 'failed', checks };
  }
  const failed = reports.filter((r) => r.outcome === 'failed');
  const keyMissing = unverified.filter((u) => u.code === 'KEY_MISSING').length;
  const newer = unverified.length - keyMissing;
  if (ctx.json) {
    ctx.printJson({
      level,
      outcome: failed.length + failedSegments.length + failedLogs.length > 0 ? 'failed' : unverified.length > 0 ? 'incomplete' : 'passed',
      reports,
      ...(segmentReports.length > 0 ? { segments: segmentReports } : {}),
      ...(logReports.length > 0 ? { logs: logReports } : {}),
      ...(unverified.length > 0 ? { unverified } : {}),
      ...(removed.length > 0 ? { removedMeanwhile: removed } : {}),
    });
  } else {
    for (const report of reports) {
      const keys = report.dataKeys.length > 0 ? ` (data key${report.dataKeys.length > 1 ? 's' : ''} ${report.dataKeys.join(', ')})` : '';
      process.stdout.write(`${report.backupId}: ${report.outcome.toUpperCase()}${keys}\n`);
      for (const check of report.checks) process.stdout.write(`  ${check.status.padEnd(7)} ${check.name}: ${check.reason}\n`);
    }
    for (const u of unverified) process.stdout.write(`${u.backupId}: NOT VERIFIED\n  ${u.message}\n`);
    for (const id of removed) process.stdout.write(`${id}: REMOVED while this ran (by a prune or a delete)\n`);
    for (const r of segmentReports) {
      process.stdout.write(`segments after ${r.base}: ${r.outcome.toUpperCase()} (${r.segments} segment(s))\n`);
      for (const problem of r.problems) process.stdout.write(`  failed  ${problem}\n`);
    }
    for (const r of logReports) {
      const reach = r.to !== undefined ? `recoverable to moments from ${r.from} to the last commit archived by ${r.to}` : 'not recoverable';
      process.stdout.write(`archived log after ${r.base}: ${r.outcome.toUpperCase()} (${r.files} file(s) checked, ${r.missing.length} missing; ${reach})\n`);
      for (const problem of r.problems) process.stdout.write(`  failed  ${problem}\n`);
      for (const note of r.notes) process.stdout.write(`  note    ${note}\n`);
    }
    const otherFailures = [
      ...(failedSegments.length > 0 ? [`${failedSegments.length} chain(s) of segments failed`] : []),
      ...(failedLogs.length > 0 ? [`${failedLogs.length} archived log check(s) failed`] : []),
    ];
    if (reports.length + unverified.length === 0) process.stdout.write(`nothing to verify${otherFailures.length > 0 ? `; ${otherFailures.join('; ')}` : ''}\n`);
    else {
      process.stdout.write(
        `${reports.length - failed.length} of ${reports.length + unverified.length} backup(s) passed${keyMissing > 0 ? `; ${keyMissing} could not be verified with this passphrase's key file (exit 4)` : ''}${newer > 0 ? `; ${newer} written by a newer Strata could not be verified (upgrade Strata)` : ''}${otherFailures.length > 0 ? `; ${otherFailures.join('; ')}` : ''}\n`,
      );
    }
  }
  return failed.length + failedSegments.length + failedLogs.length > 0 ? 3 : keyMissing > 0 ? 4 : newer > 0 ? 1 : 0;
}

/** Policy flags of `strata prune` and `list --by-tier`: the policy's rules, labels as `LABEL=DURATION`. */
export type PolicyFlags = Omit<RetentionPolicy, 'keepLabels'> & { readonly keepLabels: readonly string[] };

/**
 * The policy for one database: flags if any were given, else the database's retention in the
 * config, else the config's top-level retention, else the built-in tiers.
 */
export function policyResolver(ctx: CommandContext, flags: PolicyFlags): (database: string) => RetentionPolicy {
  const fromFlags: Record<string, unknown> = {};
  for (const key of ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly', 'keepWithin', 'keepWithinPitr'] as const) {
    if (flags[key] !== undefined) fromFlags[key] = flags[key];
  }
  if (flags.keepLabels.length > 0) {
    fromFlags['keepLabels'] = Object.fromEntries(
      flags.keepLabels.map((entry) => {
        const eq = entry.indexOf('=');
        if (eq <= 0) throw new StrataError('USAGE', `prune: --keep-label expects LABEL=DURATION or LABEL=forever (got ${JSON.stringify(entry)})`);
        return [entry.slice(0, eq), entry.slice(eq + 1)];
      }),
    );
  }
  const config = ctx.loaded.config;
  return (database) => {
    const policy = Object.keys(fromFlags).length > 0 ? (fromFlags as RetentionPolicy) : retentionFor(config, database);
    validatePolicy(policy);
    return policy;
  };
}

/** Options of `strata prune`. */
export interface PruneCommandOptions extends PolicyFlags {
  readonly database?: string;
  readonly dryRun: boolean;
}

export async function pruneCommand(ctx: CommandContext, options: PruneCommandOptions, signal: AbortSignal): Promise<number> {
  const repo = await ctx.repository();
  const policyFor = policyResolver(ctx, options);
  await requireKnownDatabase(ctx, repo, options.database, 'prune');
  const plan = await repo.prune(policyFor, { ...(options.database !== undefined ? { database: options.database } : {}), dryRun: options.dryRun, signal });
  if (ctx.json) {
    ctx.printJson({
      dryRun: options.dryRun,
      keep: plan.keep.map((d) => ({ id: d.id, reasons: d.reasons })),
      remove: plan.remove.map((d) => ({ id: d.id, reasons: d.reasons })),
      removeSegments: plan.removeSegments,
      removeLog: plan.removeLog ?? [],
    });
    return 0;
  }
  const rows = [...plan.keep.map((d) => ({ d, action: 'keep' })), ...plan.remove.map((d) => ({ d, action: options.dryRun ? 'remove' : 'removed' }))].sort(
    (a, b) => b.d.createdAt.localeCompare(a.d.createdAt) || b.d.id.localeCompare(a.d.id),
  );
  printTable(
    ['ACTION', 'ID', 'TYPE', 'CREATED', 'REASONS'],
    rows.map(({ d, action }) => [action, d.id, d.type, d.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), d.reasons.join('; ')]),
  );
  process.stdout.write(
    options.dryRun
      ? `dry run: would keep ${plan.keep.length} and remove ${plan.remove.length} backup(s); nothing was deleted\n`
      : `kept ${plan.keep.length}, removed ${plan.remove.length} backup(s)\n`,
  );
  for (const d of plan.removeSegments) {
    process.stdout.write(
      `${options.dryRun ? 'would remove' : 'removed'} the ${d.segments} segment(s) after ${d.base} (restores to moments from ${d.from} to ${d.to}; the restore point itself stays): ${d.reason}\n`,
    );
  }
  for (const d of plan.removeLog ?? []) {
    process.stdout.write(`${options.dryRun ? 'would remove' : 'removed'} ${d.files} archived log file(s) of ${d.database}, ${d.first === d.last ? d.first : `${d.first} to ${d.last}`} (${formatBytes(d.storedBytes)}): ${d.reason}\n`);
  }
  return 0;
}

/** `list --by-tier`: restore points grouped under the longest-lived rule that keeps them. */
export async function listByTier(ctx: CommandContext, database: string | undefined, flags: PolicyFlags): Promise<number> {
  const repo = await ctx.repository();
  const plan = await repo.prune(policyResolver(ctx, flags), { ...(database !== undefined ? { database } : {}), dryRun: true });
  const groups = new Map<string, RetentionDecision[]>();
  for (const d of plan.keep) groups.set(tierOf(d), [...(groups.get(tierOf(d)) ?? []), d]);
  if (plan.remove.length > 0) groups.set('not kept (the next prune removes these)', [...plan.remove]);
  if (ctx.json) {
    ctx.printJson({ tiers: Object.fromEntries([...groups].map(([tier, list]) => [tier, list.map((d) => ({ id: d.id, reasons: d.reasons }))])) });
    return 0;
  }
  for (const [tier, list] of groups) {
    process.stdout.write(`${tier} (${list.length})\n`);
    for (const d of list) process.stdout.write(`  ${d.id}  ${d.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}  ${d.reasons.join('; ')}\n`);
  }
  return 0;
}

/** Options of `strata run`. */
export interface RunCommandOptions {
  readonly database?: string;
  readonly type?: string;
  readonly rollbackOnFailure: boolean;
  readonly command: readonly string[];
}

/**
 * `strata run --db NAME [--rollback-on-failure] -- COMMAND [ARGS]`: backs up, runs the command,
 * passes its exit status through, and undoes it on failure when asked.
 */
export async function runCommand(ctx: CommandContext, options: RunCommandOptions, signal: AbortSignal): Promise<number> {
  if (!options.database) throw new StrataError('USAGE', 'run: name the database with --db NAME (the one the command changes)');
  if (options.command.length === 0) throw new StrataError('USAGE', 'run: give the command after --, e.g. strata run --db app -- npm run migrate');
  const type = (options.type ?? 'incremental') as BackupType;
  if (!BACKUP_TYPES.includes(type) || type === 'schema-only') throw new StrataError('USAGE', `run: --type must be full, incremental or differential (got ${options.type})`);
  const db = resolveDatabase(options.database, ctx.loaded.config);
  const repo = await ctx.repository();
  await repo.unlock();
  const description = options.command.join(' ');
  // The journal is plain text, kept and copied with the repository, and a command line may carry a
  // password (a URL, -pSECRET, PGPASSWORD=...): it records the program only; the terminal, whose
  // user typed the command, gets it whole.
  const journaled = `${path.basename(options.command[0]!)}${options.command.length > 1 ? ` (${options.command.length - 1} argument(s), not recorded)` : ''}`;
  let result;
  try {
    result = await repo.guard(db.locator, () => runChild(options.command, ctx.json), {
      database: db.name,
      type,
      rollbackOnError: options.rollbackOnFailure,
      description: journaled,
      isFailure: (status: number) => status !== 0,
      signal,
    });
  } catch (err) {
    if (isStrataError(err) && !err.message.startsWith('guard:')) {
      throw new StrataError(err.code, `run: the safety backup failed, so the command was not run: ${err.message}`, { cause: err });
    }
    throw err;
  }
  const summary = {
    backupId: result.backup.id,
    command: description,
    exitCode: result.value,
    failed: result.failed,
    rolledBack: result.rolledBack,
    undo: result.undo,
  };
  if (ctx.json) ctx.printJson(summary);
  else {
    process.stderr.write(`strata: safety backup ${result.backup.id} taken before: ${description}\n`);
    if (result.rolledBack) process.stderr.write(`strata: the command failed (exit ${result.value}); the database was restored to ${result.backup.id}\n`);
    else if (result.failed) process.stderr.write(`strata: the command failed (exit ${result.value}); to undo it: ${result.undo}\n`);
    else process.stderr.write(`strata: to undo the change: ${result.undo}\n`);
  }
  return result.value;
}

/** Runs a command with the terminal; resolves with its exit status (128 + n when killed by signal n). */
function runChild(command: readonly string[], json: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    // With --json our stdout carries one JSON document, so the command's output goes to stderr.
    const child = spawn(command[0]!, command.slice(1), { stdio: ['inherit', json ? process.stderr : 'inherit', 'inherit'], env: environmentWithoutSecrets() });
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(new StrataError(err.code === 'ENOENT' ? 'USAGE' : 'IO', `run: cannot start ${command[0]}: ${err.code === 'ENOENT' ? 'command not found' : err.message}`)),
    );
    child.on('close', (code, sig) => resolve(code ?? 128 + (sig ? (osConstants.signals[sig] ?? 0) : 0)));
  });
}

/** Options of `strata stats`. */
export interface StatsCommandOptions {
  readonly since?: string;
  /** Also write the HTML report to this file. */
  readonly html?: string;
}

/** `strata stats [--since 30d] [--html FILE]`: backups per day and type, from the journal. */
export async function statsCommand(ctx: CommandContext, options: StatsCommandOptions): Promise<number> {
  const now = new Date();
  const since = durationBefore(now, parseDuration(options.since ?? '30d', 'stats: --since'));
  const repo = await ctx.repository();
  const operations = await repo.journal.operations();
  const rows = backupStats(operations, since);
  let report: { file: string; runs: number; databases: number } | undefined;
  if (options.html !== undefined) {
    const runs = backupRuns(operations, await repo.list(), since);
    const file = path.resolve(options.html);
    writeReport(file, renderStatsReport({ repository: repo.settings.location, since, now, runs }));
    report = { file, runs: runs.length, databases: new Set(runs.map((r) => r.database)).size };
  }
  if (ctx.json) {
    ctx.printJson({ since: since.toISOString(), rows, ...(report ? { html: report.file } : {}) });
    return 0;
  }
  if (report) process.stdout.write(`wrote ${report.file}: ${report.runs} backup run(s) of ${report.databases} database(s) since ${since.toISOString()}\n`);
  else if (rows.length === 0) process.stdout.write(`no backups since ${since.toISOString()}\n`);
  if (report || rows.length === 0) return 0;
  printTable(
    ['DAY', 'TYPE', 'COUNT', 'SUCCESS', 'AVG TIME', 'AVG SIZE', 'AVG RATIO'],
    rows.map((r) => [
      r.day,
      r.type,
      String(r.count),
      `${(r.successRate * 100).toFixed(0)}%${r.failed ? ` (${r.failed} failed)` : ''}`,
      `${(r.averageDurationMs / 1000).toFixed(1)} s`,
      formatBytes(r.averageStoredBytes),
      r.averageCompressionRatio === null ? '-' : `${(r.averageCompressionRatio * 100).toFixed(0)}%`,
    ]),
  );
  return 0;
}

/** Writes a whole file or nothing: a report half written by a killed run would look complete to whoever opens it. */
function writeReport(file: string, text: string): void {
  try {
    writeFileAtomically(file, text);
  } catch (err) {
    throw new StrataError('IO', `stats: cannot write ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); give --html a file in a folder you can write to`, { cause: err });
  }
}

/** `strata health`: exit 3 when anything is unhealthy, so cron and monitoring can alert. */
export async function healthCommand(ctx: CommandContext, options: { maxAge?: string; maxDuration?: string; maxUnverified?: string; maxDisk?: number; maxLag?: string; maxArchiveAge?: string; maxArchiveLagBytes?: string }): Promise<number> {
  const { assessWalArchives, parseLagBytes } = await import('./archive-health.js');
  const thresholds: HealthThresholds = {
    ...(options.maxArchiveLagBytes ? { maxArchiveLagBytes: parseLagBytes(options.maxArchiveLagBytes) } : {}),
    maxLagMs: options.maxLag ? parseLag(options.maxLag) : DEFAULT_HEALTH.maxLagMs!,
    ...(options.maxArchiveAge ? { maxArchiveAgeMs: durationMs(parseDuration(options.maxArchiveAge, 'health: --max-archive-age')) } : {}),
    maxAgeMs: options.maxAge ? durationMs(parseDuration(options.maxAge, 'health: --max-age')) : DEFAULT_HEALTH.maxAgeMs,
    maxDurationMs: options.maxDuration ? durationMs(parseDuration(options.maxDuration, 'health: --max-duration')) : DEFAULT_HEALTH.maxDurationMs,
    maxUnverifiedMs: options.maxUnverified ? durationMs(parseDuration(options.maxUnverified, 'health: --max-unverified')) : DEFAULT_HEALTH.maxUnverifiedMs!,
    maxDiskUse: options.maxDisk !== undefined ? options.maxDisk / 100 : DEFAULT_HEALTH.maxDiskUse,
  };
  if (thresholds.maxDiskUse <= 0 || thresholds.maxDiskUse > 1) throw new StrataError('USAGE', 'health: --max-disk is a percentage from 1 to 100');
  const repo = await ctx.repository();
  const space = repo.storage.capabilities.space && repo.storage.space ? await repo.storage.space() : undefined;
  const backups = await repo.list();
  const operations = await repo.journal.operations();
  const primary = assessHealth(backups, operations, space, thresholds, new Date(), ctx.configuredWork());
  let checks: HealthCheck[] = [...primary.checks, ...assessContinuity(backups, await repo.segments(), operations, thresholds, new Date()), ...assessLogArchive(await repo.logWindows(), thresholds, new Date()), ...(await assessWalArchives(ctx, repo, operations, thresholds))];
  const mirrorLocation = repo.mirrorLocation;
  if (mirrorLocation !== undefined) {
    let state: MirrorState;
    try {
      const mirror = (await repo.mirror())!;
      state =
        mirror.settings.id === repo.settings.id && (await isSameStorage(repo.storage, mirror.storage))
          ? { location: mirrorLocation, error: `it is the repository itself, reached by another name (a link, or the same folder or bucket prefix written two ways): there is no second copy. Give the mirror another disk or bucket` }
          : { location: mirrorLocation, backups: await mirror.list() };
    } catch (err) {
      state = { location: mirrorLocation, error: err instanceof Error ? err.message : String(err) };
    }
    checks = [...checks.map((c) => ({ ...c, target: 'primary' as const })), ...assessMirror(backups, operations, state, thresholds, new Date())];
  }
  const report = { healthy: checks.every((c) => c.status === 'ok'), checks, ...(mirrorLocation !== undefined ? { targets: { primary: repo.settings.location, mirror: mirrorLocation } } : {}) };
  if (ctx.json) ctx.printJson(report);
  else {
    const tag = (c: HealthCheck): string => (c.target ? `[${c.target}] ` : '');
    for (const c of report.checks) process.stdout.write(`${c.status === 'ok' ? 'ok       ' : 'UNHEALTHY'}  ${tag(c)}${c.check}${c.database ? ` (${c.database})` : ''}: ${c.message}\n`);
    process.stdout.write(report.healthy ? 'healthy\n' : 'UNHEALTHY\n');
  }
  return report.healthy ? 0 : 3;
}

/** `strata inventory`: per database, latest backup, count, stored size, last verification. */
export async function inventoryCommand(ctx: CommandContext): Promise<number> {
  const repo = await ctx.repository();
  const entries = inventory(await repo.list());
  if (ctx.json) {
    ctx.printJson({ repository: repo.settings.location, databases: entries });
    return 0;
  }
  if (entries.length === 0) process.stdout.write('no backups yet\n');
  else
    printTable(
      ['DATABASE', 'ENGINE', 'BACKUPS', 'STORED', 'LATEST', 'LAST VERIFIED'],
      entries.map((e) => [
        e.database,
        e.engine,
        String(e.backups),
        formatBytes(e.storedBytes),
        e.latest ? `${e.latest.id} (${formatAge(e.latest.createdAt)})` : '-',
        e.lastVerified ? `${e.lastVerified.outcome} ${e.lastVerified.level} ${formatAge(e.lastVerified.at)}` : 'never',
      ]),
    );
  return 0;
}

/** `strata export [<db>...|--all] --out FILE`. */
export async function exportCommand(ctx: CommandContext, options: { databases: readonly string[]; all: boolean; force: boolean; out?: string }, signal: AbortSignal): Promise<number> {
  if (!options.out) throw new StrataError('USAGE', 'export: --out FILE is required (.tar.gz or .zip)');
  if (options.all && options.databases.length > 0) throw new StrataError('USAGE', 'export: name databases or pass --all, not both');
  if (!options.all && options.databases.length === 0) throw new StrataError('USAGE', 'export: name the databases to export, or pass --all');
  // As a restore target: a file already there may be the only copy of something.
  const existing = await fs.lstat(options.out).catch(() => undefined);
  if (existing && !options.force) {
    throw new StrataError('TARGET_EXISTS', `export: ${path.resolve(options.out)} exists; give another --out, or --force to replace it (only once the export is complete)`);
  }
  if (existing?.isDirectory()) throw new StrataError('USAGE', `export: ${path.resolve(options.out)} is a folder; give --out a file name (.tar.gz or .zip)`);
  const repo = await ctx.repository();
  // Without --force, a file another run put there meanwhile is not replaced either.
  const result = await repo.export({ databases: options.databases, out: options.out, replace: options.force, signal });
  if (ctx.json) ctx.printJson({ file: result.file, backups: result.backups.map((b) => b.id), segments: result.segments.map((s) => s.id), logFiles: result.logFiles });
  else
    process.stdout.write(
      `exported ${result.backups.length} backup(s)${result.segments.length > 0 ? ` and ${result.segments.length} segment(s) of continuous protection` : ''}${result.logFiles > 0 ? ` and ${result.logFiles} archived log file(s)` : ''} to ${result.file}:\n${result.backups.map((b) => `  ${b.id}`).join('\n')}\nsee RESTORE.md inside for how to restore them\n`,
    );
  return 0;
}

/** `strata import FILE`. */
export async function importCommand(ctx: CommandContext, file: string | undefined, signal: AbortSignal): Promise<number> {
  if (!file) throw new StrataError('USAGE', 'import: name the export file');
  const repo = await ctx.repository();
  const result = await repo.import(file, { signal });
  if (ctx.json) ctx.printJson({ imported: result.imported.map((b) => b.id), skipped: result.skipped, segments: result.segments.map((s) => s.id), logFiles: result.logFiles });
  else {
    process.stdout.write(`imported ${result.imported.length} backup(s)${result.skipped.length ? `, ${result.skipped.length} already present` : ''}${result.segments.length > 0 ? `, and ${result.segments.length} segment(s) of continuous protection` : ''}${result.logFiles > 0 ? `, and ${result.logFiles} archived log file(s)` : ''}\n`);
    for (const b of result.imported) process.stdout.write(`  ${b.id}\n`);
  }
  return 0;
}

/** Options of `strata delete`. */
export interface DeleteCommandOptions {
  readonly ids: readonly string[];
  readonly withDependents: boolean;
  readonly yes: boolean;
  /** Show what would be deleted (and whether that includes a newest good backup), delete nothing. */
  readonly dryRun?: boolean;
}

export async function deleteCommand(ctx: CommandContext, options: DeleteCommandOptions, signal: AbortSignal): Promise<number> {
  if (options.ids.length === 0) throw new StrataError('USAGE', 'delete: name the restore points to delete (see strata delete --help)');
  const repo = await ctx.repository();
  const plan = await repo.planDelete(options.ids);
  if ((plan.dependents.length > 0 || plan.lostWindows.length > 0) && !options.withDependents) {
    // The core refuses too, under the lock; saying it here names them before any question.
    const what = [
      ...(plan.dependents.length > 0 ? [`${plan.dependents.length} restore point(s) build on what you asked to delete (${plan.dependents.map((d) => d.id).join(', ')}); deleting it would break them`] : []),
      ...(plan.lostWindows.length > 0 ? [`${describeLostWindows(plan.lostWindows)}; deleting it loses restores as of those moments`] : []),
    ];
    throw new StrataError('CHAIN_BROKEN', `delete: ${what.join('; and ')}. Delete them too (--with-dependents) or keep it`);
  }
  const lostSegments = plan.lostWindows.reduce((sum, w) => sum + w.segments, 0);
  const warning = [
    ...plan.newestGood.map((b) => `${b.id} is the newest good restore point of ${b.database}${b.verification?.outcome === 'passed' ? ` (verified ${b.verification.at})` : ''}`),
    ...(lostSegments > 0 ? [`${describeLostWindows(plan.lostWindows)}: restores as of those moments go with it`] : []),
  ];
  if (options.dryRun) {
    if (ctx.json) ctx.printJson({ dryRun: true, remove: plan.remove.map((r) => r.id), newestGood: plan.newestGood.map((r) => r.id), segments: lostSegments, lostWindows: plan.lostWindows });
    else {
      process.stdout.write(`dry run: would delete ${plan.remove.length} backup(s); nothing was deleted\n`);
      for (const r of plan.remove) process.stdout.write(`  ${r.id}  ${r.type}  ${r.createdAt}\n`);
      for (const w of warning) process.stdout.write(`warning: ${w}\n`);
    }
    return 0;
  }
  if (!options.yes) {
    if (!interactive(ctx.json) || !process.stdin.isTTY) {
      throw new StrataError('USAGE', 'delete: deleting backups needs confirmation; pass --yes when not on a terminal (see what would go with --dry-run)');
    }
    process.stderr.write(`This deletes ${plan.remove.length} backup(s):\n${plan.remove.map((r) => `  ${r.id}  ${r.type}  ${r.createdAt}\n`).join('')}`);
    for (const w of warning) process.stderr.write(`warning: ${w}\n`);
    if (!(await confirm('Delete them?'))) {
      process.stderr.write('delete cancelled; nothing was changed\n');
      return 1;
    }
  } else {
    for (const w of warning) process.stderr.write(`strata: warning: deleting ${w}\n`);
  }
  const removed = await repo.delete(
    plan.remove.filter((r) => !plan.dependents.includes(r)).map((r) => r.id),
    { withDependents: options.withDependents, signal },
  );
  if (ctx.json) ctx.printJson({ removed: removed.map((r) => r.id), segments: lostSegments });
  else process.stdout.write(`deleted ${removed.length} backup(s): ${removed.map((r) => r.id).join(', ')}${lostSegments > 0 ? `, and the ${lostSegments} segment(s) after them` : ''}\n`);
  return 0;
}

/** A span of time for people: 0.8 s, 42 s, 3 min 5 s, 9 h 30 min, 2 d 4 h. */
export function formatSpan(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min ${Math.round(s - min * 60)} s`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ${min - h * 60} min`;
  const d = Math.floor(h / 24);
  return `${d} d ${h - d * 24} h`;
}

/** `--max-lag`: seconds (30), or a duration (2min). */
function parseLag(text: string): number {
  const plain = /^(\d+(?:\.\d+)?)s?$/.exec(text);
  const ms = plain ? Number(plain[1]) * 1000 : durationMs(parseDuration(text, 'health: --max-lag'));
  if (!(ms > 0)) throw new StrataError('USAGE', `health: --max-lag ${JSON.stringify(text)} must be a positive number of seconds or a duration (30, 2min)`);
  return ms;
}

/** Only the entries that are set, so optional properties stay absent. */
function given<T extends Record<string, unknown>>(entries: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: Exclude<T[K], undefined> };
}
