import type { BackupRecord } from './catalog.js';
import type { Engine, LogArchiveRules } from './engine.js';
import { isStrataError, throwIfAborted } from './errors.js';
import { LogArchive } from './log-archive.js';
import type { LogFile } from './log-archive.js';
import type { HealthCheck, HealthThresholds } from './operator-reports.js';
import type { JournalOperation } from './journal.js';
import type { RepositoryContext } from './repository-context.js';

/**
 * What the log archive makes of each base backup whose restores replay it (a snapshot with a
 * `logRange`): the moments a recovery from it reaches, and, when verified, whether every file on
 * the way is there and intact. `list`, `health`, `verify` and `prune` read it; the engine's
 * {@link LogArchiveRules} say which files follow which.
 */

/** One base backup and the archived log after it. */
export interface LogWindow {
  readonly database: string;
  readonly base: string;
  /** The first moment a recovery from the base reaches (when the base backup ended). */
  readonly from: string;
  /**
   * When the newest file a recovery from the base can replay without a gap was archived: no
   * moment after it is reachable (moments shortly before it may not be either, when their log
   * was not yet archived). Undefined when even the base's own range is incomplete.
   */
  readonly to?: string;
  /** Files a recovery to the newest moment reads, and their stored size. */
  readonly files: number;
  readonly storedBytes: number;
  /** Names of files it would read that the archive lacks. */
  readonly missing: readonly string[];
  /** Why a recovery from the base stops early, one sentence each (gaps, missing history, damaged files). */
  readonly problems: readonly string[];
  /** What is worth knowing and not wrong: a gap that a later base backup bridges. */
  readonly notes: readonly string[];
  /** When the newest file of the database's archive was stored (the archive's lag behind the server). */
  readonly lastArchivedAt?: string;
}

/** A {@link LogWindow} after every file of it was read back and checked. */
export interface LogVerifyReport extends LogWindow {
  readonly outcome: 'passed' | 'failed';
}

/** The log's base backups by database (a snapshot with a log range, and an engine with rules for it). */
function bases(ctx: RepositoryContext, backups: readonly BackupRecord[]): { record: BackupRecord; rules: LogArchiveRules }[] {
  const out: { record: BackupRecord; rules: LogArchiveRules }[] = [];
  for (const record of backups) {
    if (!record.logRange) continue;
    const engine: Engine | undefined = ctx.options.engines.get(record.engine);
    if (engine?.logArchive) out.push({ record, rules: engine.logArchive });
  }
  return out.sort((a, b) => a.record.database.localeCompare(b.record.database) || a.record.logRange!.endedAt.localeCompare(b.record.logRange!.endedAt));
}

/** "A, B and 3 more (… Z)". */
function someNames(names: readonly string[]): string {
  if (names.length <= 3) return names.join(', ');
  return `${names.slice(0, 2).join(', ')} … ${names.at(-1)} (${names.length} files)`;
}

/**
 * The window of every base backup of `backups` whose engine has log rules. Reads only what the
 * rules ask for (small history files), not the segments. `check`, when given, reads and checks
 * each file a window needs (once, however many windows need it): its SHA-256, what the rules'
 * `inspect` finds wrong with its content, and that it is of the same server's log as the window's
 * other files; and adds what fails to problems.
 */
export async function logWindows(
  ctx: RepositoryContext,
  backups: readonly BackupRecord[],
  options: { signal?: AbortSignal; check?: boolean; only?: ReadonlySet<string>; checked?: Map<string, string | null>; identities?: Map<string, string> } = {},
): Promise<(LogWindow & { readonly needed: readonly LogFile[] })[]> {
  const all = bases(ctx, backups);
  const found = options.only ? all.filter((b) => options.only!.has(b.record.id)) : all;
  const archive = new LogArchive(ctx);
  const listed = new Map<string, LogFile[]>();
  // What reading each file found (null: intact), by key: base backups share most of the log.
  const checked = options.checked ?? new Map<string, string | null>();
  // What each file read says of the server whose log it is (LogArchiveRules.inspect), by key.
  const identities = options.identities ?? new Map<string, string>();
  const read = async (file: LogFile): Promise<Uint8Array> => archive.read(file, options.signal ? { signal: options.signal } : {});
  const out: (LogWindow & { needed: readonly LogFile[] })[] = [];
  let pruned: ReadonlyMap<string, readonly { first: string; last: string }[]> | undefined;
  for (const { record, rules } of found) {
    throwIfAborted(options.signal, 'log archive');
    let files = listed.get(record.database);
    if (!files) listed.set(record.database, (files = await archive.list(record.database, options.signal ? { signal: options.signal } : {})));
    const range = record.logRange!;
    const walk = await rules.walk(range, files, read);
    const lastArchivedAt = files.reduce<string | undefined>((latest, f) => (f.storedAt && (!latest || f.storedAt > latest) ? f.storedAt : latest), undefined);
    const problems = [...walk.problems];
    let damaged: LogFile | undefined;
    if (options.check) {
      // The first file of the window whose content names its server: every other one must name the same.
      let reference: { name: string; identity: string } | undefined;
      for (const file of walk.needed) {
        throwIfAborted(options.signal, 'verify');
        if (!checked.has(file.key)) {
          try {
            const seen = rules.inspect?.(file, await read(file), range);
            checked.set(file.key, seen?.problem ?? null);
            if (seen?.identity !== undefined) identities.set(file.key, seen.identity);
          } catch (err) {
            // A file that could not be read here (the storage failing to answer, a codec this
            // machine lacks) is no finding about it: an error, never a file recorded damaged.
            const ofThisMachine = ['ABORTED', 'KEY_MISSING', 'PASSPHRASE_WRONG', 'IO', 'ACCESS_DENIED', 'REPO_NOT_FOUND', 'TOOL_MISSING', 'NO_SPACE', 'CONNECTION_FAILED', 'AUTH_FAILED'] as const;
            if (ofThisMachine.some((code) => isStrataError(err, code))) throw err;
            checked.set(file.key, err instanceof Error ? err.message : String(err));
          }
        }
        let failure = checked.get(file.key);
        const identity = identities.get(file.key);
        if (!failure && identity !== undefined) {
          reference ??= { name: file.name, identity };
          if (identity !== reference.identity) failure = `it is of another server's log (${identity}) than ${reference.name} (${reference.identity}) before it`;
        }
        if (failure) {
          problems.push(`${file.name} is damaged (${failure})`);
          damaged ??= file;
        }
      }
    }
    // A recovery replays in order and stops at the first file it lacks or cannot use.
    const stops = [walk.missing[0] !== undefined ? rules.position(walk.missing[0], range) : undefined, damaged ? rules.position(damaged.name, range) : undefined].filter((p): p is bigint => p !== undefined);
    const stop = stops.length > 0 ? stops.reduce((a, b) => (a < b ? a : b)) : undefined;
    const reachable = stop === undefined ? walk.needed : walk.needed.filter((f) => (rules.position(f.name, range) ?? -1n) < stop);
    const span = rules.span(range);
    const baseComplete = stop === undefined || stop > span.last;
    // Files of the base's own range may have been archived before it ended: the window starts at its end.
    const newestReachable = reachable.reduce<string | undefined>((latest, f) => (f.storedAt && (!latest || f.storedAt > latest) ? f.storedAt : latest), undefined);
    const to = baseComplete ? (newestReachable !== undefined && newestReachable > range.endedAt ? newestReachable : range.endedAt) : undefined;
    // Missing files that all lie before a later base backup's start: the log between them was
    // pruned on purpose (a point-in-time window keeps older bases as restore points of their own
    // moment) or lost; either way every moment after the gap is recovered from the later base.
    const later = all.filter((b) => b.record.database === record.database && b.record.logRange!.endedAt > range.endedAt);
    const positions = walk.missing.map((name) => rules.position(name, range));
    const bridged = later.find((b) => positions.every((p) => p !== undefined && p < b.rules.span(b.record.logRange!).first));
    const notes: string[] = [];
    // The moments from the gap until the later base ended are recovered from neither: a prune
    // under a point-in-time window gives them up on purpose (and says so in the journal); a file
    // no prune removed was lost, and those moments with it.
    pruned ??= await prunedLogRanges(ctx);
    const ranges = pruned.get(record.database) ?? [];
    const byPrune = walk.missing.every((name) => ranges.some((r) => r.first <= name && name <= r.last));
    if (walk.missing.length > 0 && baseComplete && bridged && byPrune) {
      notes.push(`the archive lacks ${someNames(walk.missing)} (pruned): a recovery from ${record.id} reaches moments up to ${to}; later moments are recovered from ${bridged.record.id}`);
    } else if (walk.missing.length > 0 && baseComplete && bridged) {
      problems.unshift(
        `the archive lacks ${someNames(walk.missing)}, which no prune removed: a recovery from ${record.id} reaches moments up to ${to}, and moments from then until ${bridged.record.id} ended (${bridged.record.logRange!.endedAt}) cannot be recovered; later ones are recovered from ${bridged.record.id}`,
      );
    } else if (walk.missing.length > 0) {
      problems.unshift(
        baseComplete
          ? `the archive lacks ${someNames(walk.missing)}: a recovery from ${record.id} stops before the first of them, at moments up to ${to}`
          : `the archive lacks ${someNames(walk.missing)}, which ${record.id} itself needs to become consistent: it cannot be restored`,
      );
    } else if (damaged && !baseComplete) {
      problems.push(`${record.id} cannot be restored: a file it needs to become consistent is damaged`);
    }
    out.push({
      database: record.database,
      base: record.id,
      from: range.endedAt,
      ...(to !== undefined ? { to } : {}),
      files: walk.needed.length,
      storedBytes: walk.needed.reduce((sum, f) => sum + f.storedBytes, 0),
      missing: walk.missing,
      problems,
      notes,
      ...(lastArchivedAt ? { lastArchivedAt } : {}),
      needed: walk.needed,
    });
  }
  return out;
}

/** The archived log files each prune removed, by database, as the journal recorded them (first and last name). */
async function prunedLogRanges(ctx: RepositoryContext): Promise<Map<string, { first: string; last: string }[]>> {
  const out = new Map<string, { first: string; last: string }[]>();
  for (const r of await ctx.journal.records().catch(() => [])) {
    if (r.kind !== 'prune') continue;
    const removed = (r.details as { logRemoved?: unknown } | undefined)?.logRemoved;
    if (!Array.isArray(removed)) continue;
    for (const d of removed as { database?: unknown; first?: unknown; last?: unknown }[]) {
      if (typeof d?.database !== 'string' || typeof d.first !== 'string' || typeof d.last !== 'string') continue;
      out.set(d.database, [...(out.get(d.database) ?? []), { first: d.first, last: d.last }]);
    }
  }
  return out;
}

/** The archive's newest file may be this old before health reports it (archive_timeout on an idle server keeps it younger). */
export const DEFAULT_MAX_ARCHIVE_AGE_MS = 3_600_000;

/**
 * The health of each database's log archive: the newest file archived within
 * `thresholds.maxArchiveAgeMs` (a server whose archiving fails or stopped falls behind), and no
 * gap on the way from any base backup to it.
 */
export function assessLogArchive(windows: readonly LogWindow[], thresholds: HealthThresholds, now: Date): HealthCheck[] {
  const maxAge = thresholds.maxArchiveAgeMs ?? DEFAULT_MAX_ARCHIVE_AGE_MS;
  const checks: HealthCheck[] = [];
  const span = (ms: number): string => (ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : ms < 7_200_000 ? `${Math.round(ms / 60_000)} min` : `${(ms / 3_600_000).toFixed(1)} h`);
  for (const database of [...new Set(windows.map((w) => w.database))].sort()) {
    const mine = windows.filter((w) => w.database === database);
    const last = mine.find((w) => w.lastArchivedAt)?.lastArchivedAt;
    const age = last ? now.getTime() - Date.parse(last) : undefined;
    const reach = recoverableRange(mine);
    checks.push({
      check: 'log-archive',
      database,
      status: age !== undefined && age <= maxAge ? 'ok' : 'unhealthy',
      message:
        age === undefined
          ? 'nothing archived yet: is the server handing its log files to strata?'
          : `newest file archived ${span(Math.max(0, age))} ago${age > maxAge ? ` (more than ${span(maxAge)}: is the server still archiving? its log says why not)` : ''}${reach ? `; recoverable to moments from ${reach.from} to the last commit archived by ${reach.to}` : ''}`,
    });
    const broken = mine.filter((w) => w.problems.length > 0);
    checks.push({
      check: 'log-gaps',
      database,
      status: broken.length === 0 ? 'ok' : 'unhealthy',
      message: broken.length === 0 ? `no gap in the archived log after ${mine.length} base backup(s)` : broken.map((w) => `after ${w.base}: ${w.problems.join('; ')}`).join('; '),
    });
  }
  return checks;
}

/** The moments a database's log windows reach, from the oldest base's end to the newest reach. */
export function recoverableRange(windows: readonly LogWindow[]): { from: string; to: string } | undefined {
  const usable = windows.filter((w) => w.to !== undefined);
  if (usable.length === 0) return undefined;
  return { from: usable.map((w) => w.from).sort()[0]!, to: usable.map((w) => w.to!).sort().at(-1)! };
}

/** The archive may be this far behind its server by default: four 16 MiB WAL segments. */
export const DEFAULT_MAX_ARCHIVE_LAG_BYTES = 64 * 1024 * 1024;

/** How far one database's log archive is behind its server, as the engine measured it, or why it could not. */
export type ArchiveLagMeasure =
  | {
      readonly database: string;
      readonly serverPosition: string;
      readonly archivedPosition?: string;
      readonly archivedFile?: string;
      readonly bytesBehind: number;
      readonly filesBehind: number;
    }
  | { readonly database: string; readonly unreachable: string };

/**
 * `archive-lag`: unhealthy when the archive is more than `maxArchiveLagBytes` behind the server.
 * A server that cannot be reached is reported and not counted as lag: it writes no log while down,
 * and its being down is for the database's own monitoring.
 */
export function assessArchiveLag(measures: readonly ArchiveLagMeasure[], thresholds: HealthThresholds): HealthCheck[] {
  const limit = thresholds.maxArchiveLagBytes ?? DEFAULT_MAX_ARCHIVE_LAG_BYTES;
  const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
  return measures.map((m) => {
    if ('unreachable' in m) return { check: 'archive-lag', database: m.database, status: 'ok', message: `the lag was not measured: the server could not be asked where its log stands (${m.unreachable})` } satisfies HealthCheck;
    const where = m.archivedPosition ? `the archive ends at ${m.archivedPosition} (${m.archivedFile})` : 'the archive holds no segment yet';
    return {
      check: 'archive-lag',
      database: m.database,
      status: m.bytesBehind <= limit ? 'ok' : 'unhealthy',
      message: `the server is at ${m.serverPosition}, ${where}: ${mib(m.bytesBehind)} and ${m.filesBehind} completed segment(s) behind (limit ${mib(limit)})${m.bytesBehind > limit ? ': is archive_command failing, or wal-receive stopped?' : ''}`,
    } satisfies HealthCheck;
  });
}

/** A failed push of one log file, from the journal or from the machine's own record. */
export interface PushFailure {
  readonly at: string;
  readonly code: string;
  readonly message: string;
  readonly recordedIn: 'journal' | 'local';
}

/**
 * `failed-pushes`: the pushes that failed after the newest file of the archive was stored (the
 * last push that succeeded), unhealthy when there is any.
 */
export function assessFailedPushes(database: string, failures: readonly PushFailure[], files: readonly LogFile[]): HealthCheck {
  const lastStored = files.filter((f) => !f.partial).reduce<string | undefined>((latest, f) => (f.storedAt && (!latest || f.storedAt > latest) ? f.storedAt : latest), undefined);
  const since = failures.filter((f) => lastStored === undefined || f.at > lastStored).sort((a, b) => a.at.localeCompare(b.at));
  if (since.length === 0) {
    return { check: 'failed-pushes', database, status: 'ok', message: failures.length === 0 ? 'no failed wal-push recorded' : `no wal-push failed since the newest file was archived${lastStored ? ` (${lastStored})` : ''}` };
  }
  const last = since.at(-1)!;
  const local = since.filter((f) => f.recordedIn === 'local').length;
  return {
    check: 'failed-pushes',
    database,
    status: 'unhealthy',
    message: `${since.length} wal-push call(s) failed since ${lastStored ? `the newest file was archived (${lastStored})` : 'ever (nothing is archived)'}${local > 0 ? `, ${local} of them recorded on this machine only (the repository failed)` : ''}; the last at ${last.at}: ${last.code}: ${last.message}`,
  };
}

/**
 * `log-streaming`, for a database some `wal-receive` ran for: its newest run is running, or
 * stopped cleanly; unhealthy when it failed or its process died (the slot then holds the server's
 * log until a run resumes, and nothing newer reaches the archive but by archive_command).
 */
export function assessLogStreaming(database: string, operations: readonly JournalOperation[]): HealthCheck | undefined {
  const last = operations.filter((op) => op.kind === 'wal-receive' && op.last.database === database).sort((a, b) => a.startedAt.localeCompare(b.startedAt)).at(-1);
  if (!last) return undefined;
  if (last.status === 'RUNNING') return { check: 'log-streaming', database, status: 'ok', message: `wal-receive streams since ${last.startedAt} (pid ${last.last.pid} on ${last.last.host})` };
  if (last.status === 'COMPLETED') return { check: 'log-streaming', database, status: 'ok', message: `the last wal-receive stopped cleanly at ${last.last.at}` };
  return {
    check: 'log-streaming',
    database,
    status: 'unhealthy',
    message: last.interrupted
      ? `the last wal-receive (pid ${last.last.pid} on ${last.last.host}, started ${last.startedAt}) died without stopping: start it again (its slot kept the log meanwhile)`
      : `the last wal-receive failed at ${last.last.at}: ${last.last.error?.code ?? 'INTERNAL'}: ${last.last.error?.message ?? 'no error recorded'}`,
  };
}
