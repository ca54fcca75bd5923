import type { BackupRecord, SegmentRecord } from './catalog.js';
import type { JournalOperation } from './journal.js';
import { DEFAULT_HEALTH } from './operator-reports.js';
import type { HealthCheck, HealthThresholds } from './operator-reports.js';
import { chainBreakAt } from './segments.js';

/**
 * What continuous protection covers, per chain of segments: from its base restore point to the
 * last transaction its segments hold. `list`, `health` and the tree view show it.
 */
export interface ContinuityWindow {
  readonly database: string;
  /** The restore point the segments replay onto. */
  readonly base: string;
  /** The base's time: restores to any moment from here ... */
  readonly from: string;
  /** ... to here, the last transaction shipped (the base's time when none was). */
  readonly to: string;
  readonly segments: number;
  readonly transactions: number;
  /** When the newest segment (or the base) was written to the repository. */
  readonly lastShippedAt: string;
  /** How long after its last transaction was seen committed the newest segment was written (ms). */
  readonly lastLagMs: number;
  readonly storedBytes: number;
  /** The first break in the chain, if a segment is missing from the catalog (restores stop before it). */
  readonly broken?: string;
  /** With a break: the last moment a restore reaches, that of the last segment before it (or the base's). */
  readonly reachable?: string;
}

/** Every chain of segments, oldest base first (within a database). */
export function continuityWindows(backups: readonly BackupRecord[], segments: readonly SegmentRecord[]): ContinuityWindow[] {
  const out: ContinuityWindow[] = [];
  for (const base of backups.filter((b) => b.changePosition)) {
    const mine = segments.filter((s) => s.base === base.id).sort((a, b) => a.sequence - b.sequence);
    const last = mine.at(-1);
    const breakAt = chainBreakAt(base, mine);
    const broken = breakAt?.reason;
    const reachable = breakAt ? (mine[breakAt.at - 1]?.lastAt ?? base.createdAt) : undefined;
    out.push({
      database: base.database,
      base: base.id,
      from: base.createdAt,
      to: last?.lastAt ?? base.createdAt,
      segments: mine.length,
      transactions: mine.reduce((sum, s) => sum + s.transactions, 0),
      lastShippedAt: last?.createdAt ?? base.createdAt,
      lastLagMs: last ? Date.parse(last.createdAt) - Date.parse(last.lastAt) : 0,
      storedBytes: mine.reduce((sum, s) => sum + s.storedBytes, 0),
      ...(broken ? { broken, reachable } : {}),
    });
  }
  return out.sort((a, b) => a.database.localeCompare(b.database) || a.from.localeCompare(b.from));
}

/**
 * The health of continuous protection, per database that has segments or ran `strata replicate`:
 * every chain unbroken (`continuity`), and the replicator running and shipping each segment
 * within `maxLagMs` of its last transaction (`replication`). A replicator that was stopped on
 * purpose (its run completed) is reported, not failed; one that died or failed is unhealthy.
 */
export function assessContinuity(backups: readonly BackupRecord[], segments: readonly SegmentRecord[], operations: readonly JournalOperation[], thresholds: HealthThresholds, now: Date): HealthCheck[] {
  const checks: HealthCheck[] = [];
  const maxLag = thresholds.maxLagMs ?? DEFAULT_HEALTH.maxLagMs!;
  const windows = continuityWindows(backups, segments);
  const runs = operations.filter((o) => o.kind === 'replicate' && o.last.database);
  const databases = [...new Set([...windows.map((w) => w.database), ...runs.map((o) => o.last.database!)])].sort();
  const seconds = (ms: number): string => (ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : ms < 7_200_000 ? `${Math.round(ms / 60_000)} min` : `${(ms / 3_600_000).toFixed(1)} h`);
  // What the newest verification of each chain of segments found (the catalog lists segments
  // that may since be missing or damaged in storage; only a verify reads them).
  const segmentChecks = new Map<string, JournalOperation>();
  for (const o of operations) {
    if (o.kind !== 'verify' || o.status !== 'COMPLETED' || !o.last.backupId || typeof o.last.details?.['segments'] !== 'number') continue;
    const seen = segmentChecks.get(o.last.backupId);
    if (!seen || Date.parse(o.last.at) >= Date.parse(seen.last.at)) segmentChecks.set(o.last.backupId, o);
  }
  for (const database of databases) {
    const mine = windows.filter((w) => w.database === database);
    const broken = mine.filter((w) => w.broken);
    const failed = mine.filter((w) => !w.broken && segmentChecks.get(w.base)?.last.details?.['outcome'] === 'failed');
    checks.push({
      check: 'continuity',
      database,
      status: broken.length === 0 && failed.length === 0 ? 'ok' : 'unhealthy',
      message:
        broken.length === 0 && failed.length === 0
          ? mine.length === 0
            ? 'no segments yet'
            : `${mine.length} chain(s) of segments, unbroken; continuous since ${mine[0]!.from}`
          : [
              ...(broken.length > 0 ? [`${broken.length} chain(s) of segments are broken (restores stop before the break): ${broken.map((w) => `${w.base}: ${w.broken}`).join('; ')}`] : []),
              ...(failed.length > 0
                ? [`the last verify of the segments after ${failed.map((w) => `${w.base} (${segmentChecks.get(w.base)!.last.at})`).join(', ')} found a segment missing or damaged (restores stop before it); strata verify --all says which`]
                : []),
            ].join('; '),
    });
    // A running replicator speaks for the database; else the run that ended last. Not simply the
    // newest started: a second replicate refused at its start (one was already shipping) is newer
    // than the one that goes on, and would report a healthy replication as failed.
    const mineRuns = runs.filter((o) => o.last.database === database);
    const run =
      mineRuns.filter((o) => o.status === 'RUNNING' && !o.interrupted).at(-1) ??
      mineRuns.reduce<JournalOperation | undefined>((latest, o) => (latest === undefined || Date.parse(o.last.at) >= Date.parse(latest.last.at) ? o : latest), undefined);
    const newest = mine.at(-1);
    const shipped = newest ? `last change shipped ${seconds(now.getTime() - Date.parse(newest.lastShippedAt))} ago` : 'nothing shipped yet';
    if (!run) continue;
    if (run.status === 'RUNNING' && !run.interrupted) {
      const lagging = newest !== undefined && newest.lastLagMs > maxLag;
      checks.push({
        check: 'replication',
        database,
        status: lagging ? 'unhealthy' : 'ok',
        message: lagging
          ? `replicate is running, but its newest segment was shipped ${seconds(newest!.lastLagMs)} after its last transaction (limit ${seconds(maxLag)}); ${shipped}`
          : `replicate is running since ${run.startedAt}; ${shipped}${newest ? ` (${seconds(newest.lastLagMs)} after it was seen committed)` : ''}`,
      });
    } else if (run.status === 'COMPLETED') {
      checks.push({ check: 'replication', database, status: 'ok', message: `replicate was stopped at ${run.last.at}; ${shipped}` });
    } else {
      checks.push({
        check: 'replication',
        database,
        status: 'unhealthy',
        message: `replicate ${run.interrupted ? 'died (its process is gone)' : `failed: ${run.last.error?.message ?? 'no error recorded'}`}; ${shipped}; start it again`,
      });
    }
  }
  return checks;
}
