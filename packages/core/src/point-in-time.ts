import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { BackupRecord, CatalogContents, SegmentRecord } from './catalog.js';
import { readCatalogContents } from './catalog.js';
import { StrataError, isStrataError } from './errors.js';
import { contentFault } from './newest-good.js';
import type { RepositoryContext } from './repository-context.js';
import { chainBreak, readSegment } from './segments.js';
import type { SegmentManifest } from './segments.js';

/**
 * Restoring to a moment: the restore point and the segments after it that reach closest to it.
 * A chain of segments is replayed up to its last transaction seen committed at or before the
 * moment; a restore point without segments stands for its own time, as before segments existed.
 */
export interface PointInTimePlan {
  readonly asOf: Date;
  readonly restorePoint: BackupRecord;
  /** The segments to replay, sequence 1 to the one holding the last transaction wanted. */
  readonly segments: readonly SegmentRecord[];
}

/** What a restore to a moment reached. */
export interface PointInTimeResult {
  readonly asOf: string;
  /** The restore point restored, and replayed from when `transactions` > 0. */
  readonly restorePoint: string;
  readonly segments: number;
  /** Transactions replayed after the restore point. */
  readonly transactions: number;
  /**
   * The moment the restored database is of: when its last replayed transaction was seen committed,
   * or the restore point's time when none was replayed.
   */
  readonly reachedAt: string;
  /** Every transaction committed before this moment is in the restored database. */
  readonly completeThrough: string;
  /** How far before `asOf` that is (ms). */
  readonly behindMs: number;
}

/** Picks the restore point and segments for `asOf`; undefined when nothing of the database is that old. */
export function planPointInTime(catalog: CatalogContents, database: string, asOf: Date): PointInTimePlan | undefined {
  const limit = asOf.toISOString();
  // A restore point with a link whose verification found its restored data wrong is passed over, as `latest` passes it.
  const backups = catalog.backups.filter((b) => b.database === database && b.type !== 'schema-only' && b.createdAt <= limit && contentFault(b, catalog.backups) === undefined);
  let best: { plan: PointInTimePlan; reach: string } | undefined;
  for (const record of backups) {
    let reach = record.createdAt;
    let segments: SegmentRecord[] = [];
    if (record.changePosition) {
      const all = catalog.segments.filter((s) => s.base === record.id);
      const after = all.findIndex((s) => s.firstAt > limit);
      segments = after < 0 ? all : all.slice(0, after);
      // Segment times rise along the chain, so these are its first ones; a gap among them is a
      // broken chain (a segment missing from the catalog), reported before anything is restored.
      const broken = chainBreak(record, segments);
      if (broken) throw new StrataError('CHAIN_BROKEN', `restore ${database} as of ${limit}: ${broken}`);
      const last = segments.at(-1);
      if (last) reach = last.lastAt < limit ? last.lastAt : limit;
    }
    // The nearest reach wins; at a tie, the newer restore point (fewer segments to replay).
    if (!best || reach > best.reach || (reach === best.reach && record.createdAt >= best.plan.restorePoint.createdAt)) {
      best = { plan: { asOf, restorePoint: record, segments }, reach };
    }
  }
  return best?.plan;
}

/** The segments of a plan read and checked into private temporary files, ready to replay. */
export interface FetchedChanges {
  readonly result: PointInTimeResult;
  /** The transactions' bytes in order, up to the last one wanted. */
  changes(): AsyncIterable<Uint8Array>;
  remove(): Promise<void>;
}

/**
 * Reads every segment of the plan and checks it (catalog, checksums, manifest, chain) before any
 * restore starts: a damaged, missing or misplaced segment stops the restore with nothing written.
 * A replicator running beside the restore may merge planned segments into one and delete them
 * (compaction): a segment missing that the catalog no longer lists is planned again from it.
 */
export async function fetchChanges(ctx: RepositoryContext, plan: PointInTimePlan, signal?: AbortSignal): Promise<FetchedChanges> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetchPlanned(ctx, plan, signal);
    } catch (err) {
      if (attempt >= 4 || !isStrataError(err, 'CHAIN_BROKEN')) throw err;
      const contents = await readCatalogContents(ctx.storage);
      const listed = new Set(contents?.segments.map((s) => s.key));
      // Every planned segment still listed: it is really missing.
      if (!contents || plan.segments.every((s) => listed.has(s.key))) throw err;
      const again = planPointInTime(contents, plan.restorePoint.database, plan.asOf);
      if (!again || again.restorePoint.id !== plan.restorePoint.id) throw err;
      plan = again;
    }
  }
}

/**
 * What can still be restored when `missing` is gone: the moments before its first transaction,
 * and the newest other restore point taken at or before the moment asked for.
 */
async function withoutSegment(ctx: RepositoryContext, plan: PointInTimePlan, missing: SegmentRecord): Promise<string> {
  const before = new Date(Date.parse(missing.firstAt) - 1).toISOString();
  const limit = plan.asOf.toISOString();
  const all = await ctx.catalog.list({ database: plan.restorePoint.database }).catch(() => [] as BackupRecord[]);
  const others = all
    .filter((b) => b.id !== plan.restorePoint.id && b.type !== 'schema-only' && b.createdAt <= limit && contentFault(b, all) === undefined)
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  const other = others[0];
  return `--as-of ${before} or earlier restores what came before it${other ? `, and \`strata restore ${other.id}\` restores ${other.id} (${other.createdAt}), the newest other restore point at or before ${limit}` : ''}`;
}

async function fetchPlanned(ctx: RepositoryContext, plan: PointInTimePlan, signal?: AbortSignal): Promise<FetchedChanges> {
  const limit = plan.asOf.toISOString();
  const dir = path.join(await ctx.tempDir(), `segments-${randomBytes(6).toString('hex')}`);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const remove = (): Promise<void> => fs.rm(dir, { recursive: true, force: true });
  try {
    // Presence first, cheaply: a missing object is named before the first one is read.
    for (const segment of plan.segments) {
      const info = await ctx.storage.stat(segment.key).catch(() => undefined);
      if (!info) throw new StrataError('CHAIN_BROKEN', `restore ${plan.restorePoint.database} as of ${limit}: segment ${segment.sequence} (${segment.id}) after ${segment.base} is missing from the repository (${segment.key}); ${await withoutSegment(ctx, plan, segment)}`);
      if (info.size !== segment.storedBytes) throw new StrataError('ARTIFACT_CORRUPT', `restore ${plan.restorePoint.database} as of ${limit}: segment ${segment.sequence} (${segment.id}) has ${info.size} bytes, the catalog says ${segment.storedBytes}`);
    }
    const files: { file: string; bytes: number }[] = [];
    let transactions = 0;
    let reachedAt = plan.restorePoint.createdAt;
    let completeThrough = plan.restorePoint.createdAt;
    for (const [i, segment] of plan.segments.entries()) {
      const file = path.join(dir, `${String(i).padStart(8, '0')}.bin`);
      const manifest: SegmentManifest = await readSegment(ctx, segment, file, signal);
      let bytes = 0;
      for (const t of manifest.transactions) {
        if (t.observedAt > limit) break;
        bytes += t.bytes;
        transactions += t.commits ?? 1;
        reachedAt = t.observedAt;
        // A transaction may promise less than one before it (a replicator that resumed behind the
        // log's end knows little of when its backlog was committed); replaying more never takes
        // back what an earlier one promised.
        if (t.scannedAt > completeThrough) completeThrough = t.scannedAt;
      }
      files.push({ file, bytes });
    }
    const result: PointInTimeResult = {
      asOf: limit,
      restorePoint: plan.restorePoint.id,
      segments: plan.segments.length,
      transactions,
      reachedAt,
      completeThrough,
      behindMs: plan.asOf.getTime() - Date.parse(reachedAt),
    };
    return {
      result,
      remove,
      changes: async function* () {
        for (const { file, bytes } of files) {
          const handle = await fs.open(file, 'r');
          try {
            let offset = 0;
            while (offset < bytes) {
              const buffer = Buffer.allocUnsafe(Math.min(1024 * 1024, bytes - offset));
              const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
              if (bytesRead === 0) throw new StrataError('IO', `restore: the checked copy of a segment in ${dir} was cut short`);
              offset += bytesRead;
              yield buffer.subarray(0, bytesRead);
            }
          } finally {
            await handle.close();
          }
        }
      },
    };
  } catch (err) {
    await remove();
    throw err;
  }
}
