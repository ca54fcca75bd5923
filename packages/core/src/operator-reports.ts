import type { BackupRecord } from './catalog.js';
import type { JournalOperation } from './journal.js';
import { newestGoodBackup } from './newest-good.js';
import type { SpaceInfo } from './storage.js';

/**
 * One backup run, as `strata stats --html` and the editor's Backup History show it: from the
 * journal (so failed runs count), with its restore point's facts when the catalog still has it.
 */
export interface BackupRun {
  readonly at: string;
  readonly day: string;
  readonly database: string;
  readonly type: string;
  readonly outcome: 'completed' | 'failed' | 'running';
  readonly durationMs: number | null;
  readonly backupId: string | null;
  readonly storedBytes: number | null;
  readonly rawBytes: number | null;
  readonly databaseBytes: number | null;
  /** stored / raw (lower is better). */
  readonly compressionRatio: number | null;
  readonly errorCode: string | null;
  /** The failure's redacted message (no schema names, SQL or values), for a failed run. */
  readonly errorMessage: string | null;
  /** The restore point's label, when the catalog still has it. */
  readonly label: string | null;
}

/** The backup runs started at or after `since`, oldest first. */
export function backupRuns(operations: readonly JournalOperation[], backups: readonly BackupRecord[], since: Date): BackupRun[] {
  const byId = new Map(backups.map((b) => [b.id, b]));
  return operations
    .filter((op) => op.kind === 'backup' && Date.parse(op.startedAt) >= since.getTime())
    .map((op) => {
      const record = op.last.backupId !== undefined ? byId.get(op.last.backupId) : undefined;
      const stored = op.last.storedBytes ?? record?.storedBytes ?? null;
      const raw = op.last.rawBytes ?? record?.rawBytes ?? null;
      return {
        at: op.startedAt,
        day: op.startedAt.slice(0, 10),
        database: op.last.database ?? record?.database ?? 'unknown',
        type: record?.type ?? op.last.type ?? 'unknown',
        outcome: op.status === 'COMPLETED' ? 'completed' : op.status === 'FAILED' ? 'failed' : 'running',
        durationMs: op.last.durationMs ?? null,
        backupId: op.status === 'COMPLETED' ? (op.last.backupId ?? null) : null,
        storedBytes: op.status === 'COMPLETED' ? stored : null,
        rawBytes: op.status === 'COMPLETED' ? raw : null,
        databaseBytes: record?.databaseBytes ?? null,
        compressionRatio: op.status === 'COMPLETED' && stored !== null && raw !== null && raw > 0 ? stored / raw : null,
        errorCode: op.last.error?.code ?? null,
        errorMessage: op.last.error?.message ?? null,
        label: op.status === 'COMPLETED' ? (record?.label ?? null) : null,
      } satisfies BackupRun;
    })
    .sort((a, b) => a.at.localeCompare(b.at));
}

/** One row of `strata stats`: backups of one type on one day. */
export interface StatsRow {
  readonly day: string;
  readonly type: string;
  readonly count: number;
  readonly succeeded: number;
  readonly failed: number;
  /** succeeded / count. */
  readonly successRate: number;
  readonly averageDurationMs: number;
  readonly averageStoredBytes: number;
  /** Average stored/raw of the successful ones (lower is better). */
  readonly averageCompressionRatio: number | null;
}

/** Backup statistics per day and type from the journal, for operations started at or after `since`. */
export function backupStats(operations: readonly JournalOperation[], since: Date): StatsRow[] {
  const groups = new Map<string, JournalOperation[]>();
  for (const op of operations) {
    if (op.kind !== 'backup' || Date.parse(op.startedAt) < since.getTime()) continue;
    const key = `${op.startedAt.slice(0, 10)}\u0000${op.last.type ?? 'unknown'}`;
    groups.set(key, [...(groups.get(key) ?? []), op]);
  }
  const avg = (xs: number[]): number => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
  return [...groups.entries()]
    .map(([key, ops]) => {
      const [day, type] = key.split('\u0000') as [string, string];
      const ok = ops.filter((o) => o.status === 'COMPLETED');
      const failed = ops.filter((o) => o.status === 'FAILED').length;
      const ratios = ok.map((o) => o.last.compressionRatio).filter((r): r is number => typeof r === 'number');
      return {
        day,
        type,
        count: ops.length,
        succeeded: ok.length,
        failed,
        successRate: ops.length === 0 ? 0 : ok.length / ops.length,
        averageDurationMs: Math.round(avg(ops.map((o) => o.last.durationMs ?? 0).filter((d) => d > 0))),
        averageStoredBytes: Math.round(avg(ok.map((o) => o.last.storedBytes ?? 0))),
        averageCompressionRatio: ratios.length > 0 ? avg(ratios) : null,
      };
    })
    .sort((a, b) => b.day.localeCompare(a.day) || a.type.localeCompare(b.type));
}

/** Thresholds of `strata health`. */
export interface HealthThresholds {
  /** The newest good backup of each database must be younger than this (ms). Default 25 h. */
  readonly maxAgeMs: number;
  /** No recent backup may have taken longer than this (ms). Default 2 h. */
  readonly maxDurationMs: number;
  /** The repository's disk may be at most this full (0–1). Default 0.85. */
  readonly maxDiskUse: number;
  /**
   * Some restore point of each database must have passed a verification within this long (ms);
   * a database whose backups are all older and were never verified is unhealthy. Default 8 days,
   * so a weekly verify keeps it green.
   */
  readonly maxUnverifiedMs?: number;
  /** The newest file of a log archive must be younger than this (ms). Default 1 h. */
  readonly maxArchiveAgeMs?: number;
  /** A log archive may be this many bytes behind its server's current log position. Default 64 MiB. */
  readonly maxArchiveLagBytes?: number;
  /**
   * A running `strata replicate` must have shipped each segment within this long of seeing its
   * last transaction committed (ms). Default 60 s.
   */
  readonly maxLagMs?: number;
}

export const DEFAULT_HEALTH: HealthThresholds = { maxAgeMs: 25 * 3_600_000, maxDurationMs: 2 * 3_600_000, maxDiskUse: 0.85, maxUnverifiedMs: 8 * 86_400_000, maxLagMs: 60_000 };

/** One finding of `strata health`. */
export interface HealthCheck {
  readonly check:
    | 'backup-age'
    | 'verification'
    | 'failed-verifications'
    | 'verification-age'
    | 'backup-duration'
    | 'disk-use'
    | 'failed-backups'
    | 'restorable'
    | 'failed-jobs'
    | 'mirror-reachable'
    | 'mirror-sync'
    | 'mirror-lag'
    | 'continuity'
    | 'replication'
    | 'log-archive'
    | 'log-gaps'
    | 'archive-lag'
    | 'failed-pushes'
    | 'log-streaming';
  /** Which repository the check is about, when the repository has a mirror. */
  readonly target?: 'primary' | 'mirror';
  readonly database: string | null;
  readonly status: 'ok' | 'unhealthy';
  readonly message: string;
}

/** The health report: unhealthy when any check is. */
export interface HealthReport {
  readonly healthy: boolean;
  readonly checks: readonly HealthCheck[];
}

/**
 * Failures of a backup run that never reached a database: none there, not one Strata reads, or a
 * server that did not answer or let it in (a mistyped host, port, user or password). A database
 * the config names is watched whatever its runs did, so a server down from the start still pages.
 */
const NO_SOURCE: ReadonlySet<string> = new Set(['DATABASE_NOT_FOUND', 'DATABASE_INVALID', 'ENGINE_UNKNOWN', 'USAGE', 'CONNECTION_FAILED', 'AUTH_FAILED']);

/**
 * The databases backup runs were attempted for, in the journal. A run that never found its source
 * (a mistyped path or URL) made no database to watch: counted, it would page forever, with no
 * restore point to prune or delete to make it stop.
 */
export function attemptedDatabases(operations: readonly JournalOperation[]): string[] {
  const attempted = operations.filter((o) => o.kind === 'backup' && o.last.database && !(o.status === 'FAILED' && NO_SOURCE.has(o.last.error?.code ?? '')));
  return [...new Set(attempted.map((o) => o.last.database!))].sort();
}

/**
 * Checks what an operator wants paged about: a database whose newest good backup is too old,
 * verification that failed twice in a row, a backup that took too long, a filling disk, and the
 * latest backup run having failed.
 */
export function assessHealth(
  backups: readonly BackupRecord[],
  operations: readonly JournalOperation[],
  space: SpaceInfo | undefined,
  thresholds: HealthThresholds,
  now: Date,
  configured: ConfiguredWork = { databases: [], jobs: [] },
): HealthReport {
  const checks: HealthCheck[] = [];
  const hours = (ms: number): string => `${(ms / 3_600_000).toFixed(1)} h`;
  // A database the config names but nobody backed up is the worst case of an old backup, not one health forgets.
  const databases = [...new Set([...configured.databases, ...backups.map((b) => b.database), ...attemptedDatabases(operations)])].sort();
  if (databases.length === 0) checks.push({ check: 'backup-age', database: null, status: 'unhealthy', message: 'the repository holds no backups at all' });
  for (const database of databases) {
    const mine = backups.filter((b) => b.database === database && b.type !== 'schema-only');
    const good = newestGoodBackup(mine);
    if (!good) {
      const ever = backups.some((b) => b.database === database) || operations.some((o) => o.kind === 'backup' && o.last.database === database);
      checks.push({ check: 'backup-age', database, status: 'unhealthy', message: ever ? `${database} has no good backup` : `${database} has never been backed up` });
    } else {
      const age = now.getTime() - Date.parse(good.createdAt);
      checks.push({
        check: 'backup-age',
        database,
        status: age <= thresholds.maxAgeMs ? 'ok' : 'unhealthy',
        message: `newest good backup ${good.id} is ${hours(age)} old (limit ${hours(thresholds.maxAgeMs)})`,
      });
      // A backup the engine said at its start that Strata cannot restore (Snapshot.unrestorable) is
      // no protection however new it is: said here until a newer restore point is not one of them.
      const taken = operations.find((o) => o.kind === 'backup' && o.status === 'COMPLETED' && o.last.backupId === good.id);
      const unrestorable = (taken?.last.details as { unrestorable?: unknown } | undefined)?.unrestorable;
      if (typeof unrestorable === 'string') {
        checks.push({ check: 'restorable', database, status: 'unhealthy', message: `Strata cannot restore the newest good backup ${good.id}: ${unrestorable}` });
      }
    }
    const verifies = operations.filter((o) => o.kind === 'verify' && o.last.database === database && o.status === 'COMPLETED');
    const lastTwo = verifies.slice(-2).map((o) => (o.last.details as { outcome?: string } | undefined)?.outcome);
    const twice = lastTwo.length === 2 && lastTwo.every((o) => o === 'failed');
    checks.push({
      check: 'verification',
      database,
      status: twice ? 'unhealthy' : 'ok',
      message: twice ? 'the last two verifications failed' : verifies.length === 0 ? 'never verified' : `last verification ${lastTwo.at(-1) ?? 'unknown'}`,
    });
    // A restore point whose last verification failed is broken now, whichever point it is: "never
    // verified" and "failed" must not pass for healthy while the newest backup happens to be fine.
    const broken = backups.filter((b) => b.database === database && b.verification?.outcome === 'failed');
    const verified = backups.filter((b) => b.database === database && b.verification !== null);
    checks.push({
      check: 'failed-verifications',
      database,
      status: broken.length === 0 ? 'ok' : 'unhealthy',
      message:
        broken.length === 0
          ? `no restore point failed its last verification (${verified.length} of ${backups.filter((b) => b.database === database).length} verified)`
          : `${broken.length} of ${verified.length} verified restore point(s) failed their last verification: ${broken.slice(-5).map((b) => b.id).join(', ')}${broken.length > 5 ? ', ...' : ''}`,
    });
    const maxUnverified = thresholds.maxUnverifiedMs ?? DEFAULT_HEALTH.maxUnverifiedMs!;
    // Of a restore point with rows: a schema-only backup that passed proves nothing of the data.
    const lastPassed = mine
      .filter((b) => b.verification?.outcome === 'passed')
      .map((b) => Date.parse(b.verification!.at))
      .sort((a, b) => a - b)
      .at(-1);
    const oldest = mine[0];
    const unverifiedFor = lastPassed !== undefined ? now.getTime() - lastPassed : oldest ? now.getTime() - Date.parse(oldest.createdAt) : 0;
    checks.push({
      check: 'verification-age',
      database,
      status: unverifiedFor <= maxUnverified ? 'ok' : 'unhealthy',
      message:
        lastPassed !== undefined
          ? `a restore point last passed verification ${hours(now.getTime() - lastPassed)} ago (limit ${hours(maxUnverified)})`
          : `no restore point has passed verification${oldest ? `; the oldest is ${hours(unverifiedFor)} old (limit ${hours(maxUnverified)})` : ''}`,
    });
    const runs = operations.filter((o) => o.kind === 'backup' && o.last.database === database);
    const slow = runs.filter((o) => (o.last.durationMs ?? 0) > thresholds.maxDurationMs && now.getTime() - Date.parse(o.startedAt) <= 7 * 86_400_000);
    checks.push({
      check: 'backup-duration',
      database,
      status: slow.length === 0 ? 'ok' : 'unhealthy',
      message: slow.length === 0 ? `no backup in the last 7 days took longer than ${hours(thresholds.maxDurationMs)}` : `${slow.length} backup(s) in the last 7 days took longer than ${hours(thresholds.maxDurationMs)}`,
    });
    const latest = runs.at(-1);
    if (latest && latest.status === 'FAILED') {
      checks.push({
        check: 'failed-backups',
        database,
        status: 'unhealthy',
        message: `the latest backup run failed${latest.interrupted ? ' (interrupted)' : ''}: ${latest.last.error?.message ?? 'no error recorded'}`,
      });
    }
    const jobs = latestJobRuns(operations, database, new Set(configured.jobs.filter((j) => j.database === database && j.kind !== 'health').map((j) => j.name)));
    if (jobs.size > 0) {
      // A scheduled job that keeps failing (a hook that stops it, a verify, prune or copy job) shows
      // nowhere else; one a daemon's stop interrupted did not fail, its next run tells.
      const failing = [...jobs].filter(([, o]) => o.status === 'FAILED' && !(o.last.details as { interrupted?: boolean } | undefined)?.interrupted);
      checks.push({
        check: 'failed-jobs',
        database,
        status: failing.length === 0 ? 'ok' : 'unhealthy',
        message:
          failing.length === 0
            ? `the latest run of each of its ${jobs.size} scheduled job(s) did not fail`
            : failing.map(([name, o]) => `the latest run of job ${name} (${o.startedAt}) failed${o.interrupted ? ' (its daemon died)' : ''}: ${o.last.error?.message ?? 'no error recorded'}`).join('; '),
      });
    }
  }
  if (space) {
    const used = 1 - space.freeBytes / space.totalBytes;
    checks.push({
      check: 'disk-use',
      database: null,
      status: used <= thresholds.maxDiskUse ? 'ok' : 'unhealthy',
      message: `the repository's disk is ${(used * 100).toFixed(0)}% full (limit ${(thresholds.maxDiskUse * 100).toFixed(0)}%)`,
    });
  }
  return { healthy: checks.every((c) => c.status === 'ok'), checks };
}

/**
 * What the config file says a repository should hold: its databases, and the jobs a daemon runs
 * on them (by name and kind). Health judges only the jobs named here: one renamed or removed from
 * the config never runs again, and its last failure must not count forever.
 */
export interface ConfiguredWork {
  readonly databases: readonly string[];
  readonly jobs: readonly { readonly database: string; readonly name: string; readonly kind: string }[];
}

/**
 * The latest run of each of a database's scheduled jobs named in `names` (a daemon's `job`
 * entries), by job name; runs it skipped or queued do not count. Health jobs are left out by the
 * caller: one fails exactly when a check fails, so it would only repeat what the others say.
 */
function latestJobRuns(operations: readonly JournalOperation[], database: string, names: ReadonlySet<string>): Map<string, JournalOperation> {
  const latest = new Map<string, JournalOperation>();
  for (const o of operations) {
    if (o.kind !== 'job' || o.last.database !== database) continue;
    const details = o.last.details as { job?: unknown; skipped?: boolean; queued?: boolean } | undefined;
    if (typeof details?.job !== 'string' || !names.has(details.job) || details.skipped || details.queued) continue;
    const seen = latest.get(details.job);
    if (!seen || seen.startedAt <= o.startedAt) latest.set(details.job, o);
  }
  return latest;
}

/** The mirror as `strata health` found it: its backups, or why it could not be read. */
export type MirrorState = { readonly location: string; readonly backups: readonly BackupRecord[] } | { readonly location: string; readonly error: string };

/**
 * The mirror's side of `strata health`: whether it can be opened, whether the last copy to it
 * failed (the primary's journal), and per database of the primary its newest good backup and what
 * it lacks (the primary's restore points it has no copy of, and how far its newest is behind).
 */
export function assessMirror(primary: readonly BackupRecord[], operations: readonly JournalOperation[], mirror: MirrorState, thresholds: HealthThresholds, now: Date): HealthCheck[] {
  const checks: HealthCheck[] = [];
  const hours = (ms: number): string => `${(ms / 3_600_000).toFixed(1)} h`;
  const sync = operations.filter((o) => o.kind === 'mirror').at(-1);
  // A failed copy that something since made good (a `strata copy --to` the mirror, which journals
  // in the mirror): the mirror holds every restore point of the repository.
  const caughtUp = !('error' in mirror) && primary.every((b) => mirror.backups.some((m) => m.id === b.id));
  // A refusal of the mirror itself (USAGE: it is the repository under another name) is never made good by what it holds.
  if (sync?.status === 'FAILED' && caughtUp && sync.last.error?.code !== 'USAGE') {
    checks.push({ check: 'mirror-sync', target: 'mirror', database: null, status: 'ok', message: `the last copy to the mirror failed at ${sync.last.at}, and the mirror has caught up since: it holds every restore point of the repository` });
  } else if (sync?.status === 'FAILED') {
    checks.push({ check: 'mirror-sync', target: 'mirror', database: null, status: 'unhealthy', message: `MIRROR FAILED at ${sync.last.at}${sync.interrupted ? ' (interrupted)' : ''}: ${sync.last.error?.message ?? 'no error recorded'}` });
  } else {
    checks.push({ check: 'mirror-sync', target: 'mirror', database: null, status: 'ok', message: sync ? `the last copy to the mirror completed at ${sync.last.at}` : 'nothing was copied to the mirror yet' });
  }
  if ('error' in mirror) {
    checks.push({ check: 'mirror-reachable', target: 'mirror', database: null, status: 'unhealthy', message: `the mirror ${mirror.location} cannot be read: ${mirror.error}` });
    return checks;
  }
  checks.push({ check: 'mirror-reachable', target: 'mirror', database: null, status: 'ok', message: `the mirror ${mirror.location} is reachable (${mirror.backups.length} backup(s))` });
  const held = new Set(mirror.backups.map((b) => b.id));
  for (const database of [...new Set(primary.map((b) => b.database))].sort()) {
    const mine = mirror.backups.filter((b) => b.database === database && b.type !== 'schema-only');
    const good = newestGoodBackup(mine);
    const age = good ? now.getTime() - Date.parse(good.createdAt) : undefined;
    checks.push({
      check: 'backup-age',
      target: 'mirror',
      database,
      status: age !== undefined && age <= thresholds.maxAgeMs ? 'ok' : 'unhealthy',
      message: good ? `the mirror's newest good backup ${good.id} is ${hours(age!)} old (limit ${hours(thresholds.maxAgeMs)})` : `the mirror has no good backup of ${database}`,
    });
    const ours = primary.filter((b) => b.database === database);
    const missing = ours.filter((b) => !held.has(b.id));
    const newestHere = ours.at(-1);
    const newestThere = mirror.backups.filter((b) => b.database === database).at(-1);
    const behind = newestHere && newestThere ? Math.max(0, Date.parse(newestHere.createdAt) - Date.parse(newestThere.createdAt)) : undefined;
    checks.push({
      check: 'mirror-lag',
      target: 'mirror',
      database,
      status: missing.length === 0 ? 'ok' : 'unhealthy',
      message:
        missing.length === 0
          ? `the mirror has all ${ours.length} restore point(s)`
          : `the mirror lacks ${missing.length} of ${ours.length} restore point(s) (${missing.slice(-3).map((b) => b.id).join(', ')}${missing.length > 3 ? ', ...' : ''}); its newest is ${behind === undefined ? 'missing' : `${hours(behind)} behind`}`,
    });
  }
  return checks;
}

/** One database in `strata inventory`. */
export interface InventoryEntry {
  readonly database: string;
  readonly engine: string;
  readonly backups: number;
  readonly storedBytes: number;
  readonly latest: { id: string; type: string; createdAt: string } | null;
  readonly lastVerified: { id: string; at: string; level: string; outcome: string } | null;
}

/** Per database: count, total stored size, latest backup, last verification. */
export function inventory(backups: readonly BackupRecord[]): InventoryEntry[] {
  const databases = [...new Set(backups.map((b) => b.database))].sort();
  return databases.map((database) => {
    const mine = backups.filter((b) => b.database === database);
    const latest = mine.at(-1)!;
    const verified = mine.filter((b) => b.verification).sort((a, b) => a.verification!.at.localeCompare(b.verification!.at)).at(-1);
    return {
      database,
      engine: latest.engine,
      backups: mine.length,
      storedBytes: mine.reduce((sum, b) => sum + b.storedBytes, 0),
      latest: { id: latest.id, type: latest.type, createdAt: latest.createdAt },
      lastVerified: verified ? { id: verified.id, at: verified.verification!.at, level: verified.verification!.level, outcome: verified.verification!.outcome } : null,
    };
  });
}
