import { StrataError, assessArchiveLag, assessFailedPushes, assessLogStreaming, resolveDatabase, walArchiveLag } from '@strata/sdk';
import type { ArchiveLagMeasure, HealthCheck, HealthThresholds, JournalOperation, PushFailure, Repository } from '@strata/sdk';
import type { CommandContext } from './context.js';
import { localPushFailures } from './state-folder.js';

/**
 * The WAL archive's side of `strata health` that needs more than the repository: how far the
 * archive is behind each physical entry's server (asked at the entry's URL), the wal-push calls
 * that failed, from the journal and from this machine's state folder, and whether wal-receive's
 * last run is still running or stopped cleanly.
 */
export async function assessWalArchives(ctx: CommandContext, repo: Repository, operations: readonly JournalOperation[], thresholds: HealthThresholds): Promise<HealthCheck[]> {
  const entries = Object.entries(ctx.loaded.config.databases ?? {}).filter(([, entry]) => entry.method === 'physical');
  const journaled = operations.filter((op) => op.kind === 'wal-push' && op.status === 'FAILED' && op.last.database);
  const local = localPushFailures(ctx.repositoryPath());
  const streamed = operations.filter((op) => op.kind === 'wal-receive' && op.last.database).map((op) => op.last.database!);
  const databases = [...new Set([...entries.map(([name]) => name), ...journaled.map((op) => op.last.database!), ...local.map((f) => f.database), ...streamed])].sort();
  const measures: ArchiveLagMeasure[] = [];
  const checks: HealthCheck[] = [];
  for (const database of databases) {
    const files = await repo.logArchive.list(database);
    if (entries.some(([name]) => name === database)) {
      try {
        const lag = await walArchiveLag(resolveDatabase(database, ctx.loaded.config).locator, files);
        measures.push({ database, serverPosition: lag.serverLsn, ...(lag.archivedLsn ? { archivedPosition: lag.archivedLsn, archivedFile: lag.archivedFile! } : {}), bytesBehind: lag.bytesBehind, filesBehind: lag.segmentsBehind });
      } catch (err) {
        measures.push({ database, unreachable: err instanceof Error ? err.message : String(err) });
      }
    }
    const failures: PushFailure[] = [
      ...journaled.filter((op) => op.last.database === database).map((op) => ({ at: op.last.at, code: op.last.error?.code ?? 'INTERNAL', message: op.last.error?.message ?? 'no error recorded', recordedIn: 'journal' as const })),
      ...local.filter((f) => f.database === database).map((f) => ({ at: f.at, code: f.code, message: f.message, recordedIn: 'local' as const })),
    ];
    checks.push(assessFailedPushes(database, failures, files));
    const streaming = assessLogStreaming(database, operations);
    if (streaming) checks.push(streaming);
  }
  return [...assessArchiveLag(measures, thresholds), ...checks];
}

/** `--max-archive-lag-bytes`: bytes, or with a unit (kB, MB, GB: powers of 1024, as PostgreSQL reads them). */
export function parseLagBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)?$/.exec(text.trim());
  const unit = m?.[2]?.[0]?.toUpperCase();
  const bytes = m ? Math.round(Number(m[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1)) : NaN;
  if (!(bytes > 0)) throw new StrataError('USAGE', `health: --max-archive-lag-bytes ${JSON.stringify(text)} must be a positive size (67108864, 64MB, 1GB)`);
  return bytes;
}
