import type { BackupRecord } from './catalog.js';
import type { ContinuityWindow } from './continuity.js';
import type { LogArchiveRules } from './engine.js';
import type { LogFile } from './log-archive.js';
import type { RetentionDecision } from './retention.js';

/**
 * Retention of a log archive (files a server archived after its base backups, see
 * {@link LogArchiveRules}): pure planning, beside planRetention's plan for the backups.
 *
 * - Every kept base backup keeps the files from its start through its end: without them it cannot
 *   become consistent.
 * - A base backup that keeps its promise of recovery to later moments keeps every file from its
 *   start on: all kept ones, or with a point-in-time window only those the window keeps (and the
 *   newest), so older ones kept by the snapshot tiers stay restore points of their own moment.
 * - Files the engine gives no position (timeline histories, names it does not know) always stay,
 *   and so does everything when a database has no kept base backup.
 */

/** The log files of one database that a prune removes, and why. */
export interface LogRemovalDecision {
  readonly database: string;
  readonly files: number;
  readonly storedBytes: number;
  /** The first and last of them by name. */
  readonly first: string;
  readonly last: string;
  readonly reason: string;
}

/** A base backup whose restores replay the log, with its engine's rules. */
export interface LogBase {
  readonly record: BackupRecord;
  readonly rules: LogArchiveRules;
}

/**
 * The log files that copies of `bases` (base backups of one database, with the engine's `rules`)
 * need so that a recovery from them reaches as far as the source's would: every file from the
 * oldest one's start on, and the files the engine gives no position (timeline histories); a
 * partial only while its complete file is not archived. Copies (`copy`, the mirror, `export`)
 * take these and no older ones, so a target that pruned its old log does not receive it again.
 */
export function logFilesFor(bases: readonly BackupRecord[], rules: LogArchiveRules, files: readonly LogFile[]): LogFile[] {
  const mine = bases.filter((b) => b.logRange !== undefined);
  if (mine.length === 0) return [];
  const first = mine.map((b) => rules.span(b.logRange!).first).reduce((low, start) => (start < low ? start : low));
  const complete = new Set(files.filter((f) => !f.partial).map((f) => f.name));
  return files.filter((f) => {
    if (f.partial && complete.has(f.name)) return false;
    const position = rules.position(f.name, mine[0]!.logRange!);
    return position === undefined || position >= first;
  });
}

/**
 * Point-in-time windows of log base backups for planRetention's `keepWithinPitr`: each base
 * covers the moments from its end to the next base's end (the moments it is the best start for),
 * the newest one to the newest archived file. Their segment counts are 0: the log is not a chain
 * of one base, and what goes of it is planned by {@link planLogRetention}.
 */
export function logPitrWindows(bases: readonly LogBase[], files: ReadonlyMap<string, readonly LogFile[]>): ContinuityWindow[] {
  const out: ContinuityWindow[] = [];
  for (const database of [...new Set(bases.map((b) => b.record.database))]) {
    const mine = bases.filter((b) => b.record.database === database).sort((a, b) => a.record.logRange!.endedAt.localeCompare(b.record.logRange!.endedAt));
    const newestArchived = (files.get(database) ?? []).reduce<string | undefined>((latest, f) => (f.storedAt && (!latest || f.storedAt > latest) ? f.storedAt : latest), undefined);
    mine.forEach((base, i) => {
      const from = base.record.logRange!.endedAt;
      const next = mine[i + 1]?.record.logRange!.endedAt;
      const to = next ?? (newestArchived && newestArchived > from ? newestArchived : from);
      out.push({ database, base: base.record.id, from, to, segments: 0, transactions: 0, lastShippedAt: to, lastLagMs: 0, storedBytes: 0 });
    });
  }
  return out;
}

/**
 * The log files of one database that no kept base backup needs. `kept` are the plan's kept
 * decisions; `pitr` tells whether a point-in-time window was in the policy (then only the bases it
 * kept, and the newest, keep the log after them).
 */
export function planLogRetention(database: string, bases: readonly LogBase[], kept: readonly RetentionDecision[], files: readonly LogFile[], pitr: string | undefined): { decision?: LogRemovalDecision; remove: LogFile[] } {
  const keptIds = new Map(kept.map((d) => [d.id, d]));
  const mine = bases.filter((b) => b.record.database === database && keptIds.has(b.record.id)).sort((a, b) => a.record.logRange!.endedAt.localeCompare(b.record.logRange!.endedAt));
  if (mine.length === 0 || files.length === 0) return { remove: [] };
  const newest = mine.at(-1)!;
  const onward = (b: LogBase): boolean => pitr === undefined || b === newest || keptIds.get(b.record.id)!.reasons.some((r) => r.startsWith('point-in-time'));
  const spans = mine.map((b) => {
    const span = b.rules.span(b.record.logRange!);
    return { first: span.first, last: onward(b) ? undefined : span.last };
  });
  const remove = files.filter((f) => {
    const position = newest.rules.position(f.name, newest.record.logRange!);
    if (position === undefined) return false;
    return !spans.some((s) => position >= s.first && (s.last === undefined || position <= s.last));
  });
  if (remove.length === 0) return { remove };
  const oldestOnward = mine.find(onward)!;
  const reason =
    pitr === undefined
      ? `older than the start of ${oldestOnward.record.id}, the oldest kept base backup`
      : `not needed by a kept base backup: older than ${oldestOnward.record.id}, where the point-in-time window ${pitr} begins, and outside what older kept base backups need to become consistent`;
  const names = remove.map((f) => f.name).sort();
  return {
    decision: { database, files: remove.length, storedBytes: remove.reduce((sum, f) => sum + f.storedBytes, 0), first: names[0]!, last: names.at(-1)!, reason },
    remove,
  };
}
