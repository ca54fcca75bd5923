import { newestGoodByDatabase, tierOf } from '@strata/sdk';
import type { BackupRecord, BackupRun, RetentionPlan } from '@strata/sdk';
import type { BackupHistory, HistoryFailure, HistoryPoint } from '@strata/protocol';

/**
 * The Backup History of `strata/history`: each restore point of the catalog with the retention
 * tier the plan gives it (the same grouping as `list --by-tier` and the tree), and each backup run
 * the journal records as failed. `backups` and `runs` are of the databases asked about.
 */
export function backupHistory(backups: readonly BackupRecord[], plan: RetentionPlan, runs: readonly BackupRun[], at: Date): BackupHistory {
  const tiers = new Map<string, { tier: string; reasons: readonly string[] }>([
    ...plan.keep.map((d) => [d.id, { tier: tierOf(d), reasons: d.reasons }] as const),
    ...plan.remove.map((d) => [d.id, { tier: 'not kept', reasons: d.reasons }] as const),
  ]);
  const good = new Set([...newestGoodByDatabase(backups).values()].map((b) => b.id));
  const points = [...backups]
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
    .map((b): HistoryPoint => {
      const v = b.verification;
      const retention = tiers.get(b.id);
      return {
        id: b.id,
        database: b.database,
        type: b.type,
        createdAt: b.createdAt,
        parent: b.parent,
        label: b.label,
        storedBytes: b.storedBytes,
        rawBytes: b.rawBytes,
        databaseBytes: b.databaseBytes,
        verification: v?.outcome ?? 'never',
        verifiedAt: v?.at ?? null,
        verificationLevel: v?.level ?? null,
        failedChecks: (v?.checks ?? []).filter((c) => c.status === 'failed').map((c) => `${c.name}: ${c.reason}`),
        // A restore point the plan does not name came after it was made: no rule has judged it yet.
        tier: retention?.tier ?? 'other',
        reasons: retention?.reasons ?? [],
        newestGood: good.has(b.id),
      };
    });
  const failures = runs
    .filter((r) => r.outcome === 'failed')
    .map((r): HistoryFailure => ({ at: r.at, database: r.database, type: r.type, durationMs: r.durationMs, errorCode: r.errorCode, errorMessage: r.errorMessage }));
  return { points, failures, at: at.toISOString() };
}
