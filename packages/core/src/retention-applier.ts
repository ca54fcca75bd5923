import { readCatalog, readCatalogContents } from './catalog.js';
import type { BackupRecord, CatalogContents, SegmentRecord } from './catalog.js';
import { continuityWindows } from './continuity.js';
import type { ContinuityWindow } from './continuity.js';
import { StrataError } from './errors.js';
import { lockFor, withRepositoryLock } from './lock.js';
import { newestGoodBackup } from './newest-good.js';
import { planRetention } from './retention.js';
import type { RetentionDecision, RetentionPlan, RetentionPolicy, SegmentsDecision } from './retention.js';
import { removeBackups } from './catalog-commit.js';
import { LogArchive } from './log-archive.js';
import type { LogFile } from './log-archive.js';
import { logPitrWindows, planLogRetention } from './log-retention.js';
import type { LogBase, LogRemovalDecision } from './log-retention.js';

/** The log archive as prune sees it: base backups that replay it, and its files by database. */
interface LogState {
  readonly bases: readonly LogBase[];
  readonly files: ReadonlyMap<string, readonly LogFile[]>;
}
import type { RepositoryContext } from './repository-context.js';
import type { JournalOutcome } from './journal.js';

/**
 * Applies what retention and `delete` decide: plans under the repository lock, then removes the
 * backups with {@link removeBackups} (crash-safe); {@link planDelete} shows a deletion without doing it.
 */
export class RetentionApplier {
  readonly #ctx: RepositoryContext;

  constructor(ctx: RepositoryContext) {
    this.#ctx = ctx;
  }

  /**
   * Applies retention: plans with {@link planRetention} under the repository lock (so the plan
   * sees the catalog as it is), deletes the artifacts and cached layouts of what the plan removes,
   * then drops them from the catalog. Safe to kill at any point: a re-run plans the same removals
   * and finishes them; nothing a kept backup needs is ever touched.
   */
  async prune(policyFor: (database: string) => RetentionPolicy, options: { database?: string; dryRun?: boolean; signal?: AbortSignal } = {}): Promise<RetentionPlan> {
    const plan = (records: readonly BackupRecord[], segments: readonly SegmentRecord[], logs: LogState): RetentionPlan & { logFiles: LogFile[] } => {
      const all = options.database === undefined ? records : records.filter((b) => b.database === options.database);
      const windows = [...continuityWindows(records, segments), ...logPitrWindows(logs.bases, logs.files)];
      const keep: RetentionDecision[] = [];
      const remove: RetentionDecision[] = [];
      const removeSegments: SegmentsDecision[] = [];
      const removeLog: LogRemovalDecision[] = [];
      const logFiles: LogFile[] = [];
      for (const database of [...new Set(all.map((b) => b.database))].sort()) {
        const policy = policyFor(database);
        const part = planRetention(all.filter((b) => b.database === database), policy, windows);
        keep.push(...part.keep);
        remove.push(...part.remove);
        removeSegments.push(...part.removeSegments);
        const log = planLogRetention(database, logs.bases, part.keep, logs.files.get(database) ?? [], policy.keepWithinPitr);
        if (log.decision) removeLog.push(log.decision);
        logFiles.push(...log.remove);
      }
      const newestFirst = (a: RetentionDecision, b: RetentionDecision): number => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id);
      return { keep: keep.sort(newestFirst), remove: remove.sort(newestFirst), removeSegments, removeLog, logFiles };
    };
    // The log archive of databases whose base backups replay one: listed, never read.
    const logState = async (records: readonly BackupRecord[]): Promise<LogState> => {
      const bases: LogBase[] = [];
      for (const record of records) {
        const rules = record.logRange ? this.#ctx.options.engines.get(record.engine)?.logArchive : undefined;
        if (rules && (options.database === undefined || record.database === options.database)) bases.push({ record, rules });
      }
      const files = new Map<string, LogFile[]>();
      const archive = new LogArchive(this.#ctx);
      for (const database of new Set(bases.map((b) => b.record.database))) files.set(database, await archive.list(database, options.signal ? { signal: options.signal } : {}));
      return { bases, files };
    };
    const publicPlan = ({ logFiles: _files, ...rest }: RetentionPlan & { logFiles: LogFile[] }): RetentionPlan => rest;
    // A wrong passphrase must not be able to delete what it cannot read (nor plan to).
    await this.#ctx.unlock();
    if (options.dryRun) {
      const records = await this.#ctx.catalog.list();
      return publicPlan(plan(records, (await readCatalogContents(this.#ctx.storage))?.segments ?? [], await logState(records)));
    }
    const op = await this.#ctx.journal.begin('prune', options.database ? { database: options.database } : {});
    try {
      const result = await withRepositoryLock(
        this.#ctx.storage,
        'prune',
        async () => {
          const contents = await this.#contentsHoldingLock();
          const records = contents.backups;
          const decided = plan(records, contents.segments, await logState(records));
          const doomed = new Set(decided.remove.map((d) => d.id));
          await removeBackups(this.#ctx.storage, records, doomed, new Set(decided.removeSegments.map((d) => d.base)), { ...(options.signal ? { signal: options.signal } : {}), step: 'prune' });
          // After the backups: a crash in between leaves log files a re-run removes, never a kept base without its log.
          // The ranges are journaled first: a prune that dies part way through leaves a gap the
          // next one cannot name (those files are gone), which would then read as log lost.
          const logRemoved = loggedRanges(decided.removeLog);
          if (logRemoved.length > 0) await op.note({ details: { logRemoved } });
          const logArchive = new LogArchive(this.#ctx);
          for (const [removed, file] of decided.logFiles.entries()) {
            // What is left is still beyond what any kept restore point needs: the next prune plans it again.
            if (options.signal?.aborted) {
              throw new StrataError('ABORTED', `prune: removed ${decided.remove.length} backup(s), then was interrupted after removing ${removed} of the ${decided.logFiles.length} archived log files no longer needed; the next prune removes the rest`, {
                cause: options.signal.reason,
                details: { removed: decided.remove.map((d) => d.id) },
              });
            }
            await logArchive.remove([file]);
          }
          return publicPlan(decided);
        },
        lockFor(this.#ctx.options.lock, options.signal),
      );
      await op.complete({
        details: {
          removed: result.remove.map((d) => d.id),
          kept: result.keep.length,
          ...(result.removeSegments.length > 0 ? { segmentsRemoved: result.removeSegments.map((d) => ({ base: d.base, segments: d.segments })) } : {}),
          ...(loggedRanges(result.removeLog).length > 0 ? { logRemoved: loggedRanges(result.removeLog) } : {}),
        },
      });
      return result;
    } catch (err) {
      await op.fail(err, interruptedOutcome(err)).catch(() => undefined);
      throw err;
    }
  }

  /**
   * The catalog as a removal must plan on, for a caller holding the lock: a missing or unreadable
   * one is rebuilt from the artifacts first, as every other writer does (updateCatalog). Planned
   * on nothing, a removal would write an empty catalog over every backup, which then reads as
   * valid and is never rebuilt: the backups would be on disk, listed nowhere, restorable by no one.
   */
  async #contentsHoldingLock(): Promise<CatalogContents> {
    const contents = await readCatalogContents(this.#ctx.storage);
    if (contents) return contents;
    await this.#ctx.catalog.rebuildHoldingLock();
    const rebuilt = await readCatalogContents(this.#ctx.storage);
    if (!rebuilt) throw new StrataError('INTERNAL', 'the catalog was rebuilt, and no catalog is there to read: nothing was removed');
    return rebuilt;
  }

  /**
   * Deletes restore points by id. A backup that others build on (their parent or base) is deleted
   * only with `withDependents`, which deletes those too; otherwise the call fails with
   * CHAIN_BROKEN naming them, and nothing is deleted. Crash-safe like {@link prune}.
   */
  async delete(ids: readonly string[], options: { withDependents?: boolean; signal?: AbortSignal } = {}): Promise<BackupRecord[]> {
    if (ids.length === 0) throw new StrataError('USAGE', 'delete: name at least one backup');
    await this.#ctx.unlock();
    const targets = await Promise.all(ids.map((id) => this.#ctx.catalog.resolve({ id })));
    const op = await this.#ctx.journal.begin('delete', { details: { requested: targets.map((t) => t.id) } });
    try {
      const removed = await withRepositoryLock(
        this.#ctx.storage,
        'delete',
        async () => {
          const contents = await this.#contentsHoldingLock();
          const records = contents.backups;
          const doomed = withDependentsOf(records, targets.map((t) => t.id));
          const dependents = records.filter((r) => doomed.has(r.id) && !targets.some((t) => t.id === r.id));
          // Segments replay onto their base and go with it: like a dependent restore point, they are never lost unasked.
          const lost = lostWindows(records, contents.segments, doomed);
          if ((dependents.length > 0 || lost.length > 0) && !options.withDependents) {
            const what = [
              ...(dependents.length > 0 ? [`${dependents.length} restore point(s) build on what you asked to delete (${dependents.map((d) => d.id).join(', ')}); deleting it would break them`] : []),
              ...(lost.length > 0 ? [`${describeLostWindows(lost)}; deleting it loses restores as of those moments`] : []),
            ];
            throw new StrataError('CHAIN_BROKEN', `delete: ${what.join('; and ')}. Delete them too (--with-dependents) or keep it`, {
              details: { dependents: dependents.map((d) => d.id), segments: lost.reduce((sum, w) => sum + w.segments, 0), windows: lost.map((w) => ({ base: w.base, from: w.from, to: w.to, segments: w.segments })) },
            });
          }
          const gone = records.filter((r) => doomed.has(r.id));
          await removeBackups(this.#ctx.storage, records, doomed, new Set(), { ...(options.signal ? { signal: options.signal } : {}), step: 'delete' });
          return gone;
        },
        lockFor(this.#ctx.options.lock, options.signal),
      );
      await op.complete({ details: { removed: removed.map((r) => r.id) } });
      return removed;
    } catch (err) {
      await op.fail(err, interruptedOutcome(err)).catch(() => undefined);
      throw err;
    }
  }

  /**
   * What {@link delete} would remove, changing nothing: the restore points asked for, those that
   * build on them, and for each database whether its newest good restore point is among them (after
   * which `restore latest` would pick an older one).
   */
  async planDelete(ids: readonly string[]): Promise<{ remove: BackupRecord[]; dependents: BackupRecord[]; newestGood: BackupRecord[]; lostWindows: ContinuityWindow[] }> {
    if (ids.length === 0) throw new StrataError('USAGE', 'delete: name at least one backup');
    const targets = await Promise.all(ids.map((id) => this.#ctx.catalog.resolve({ id })));
    const records = await this.#ctx.catalog.list();
    const segments = (await readCatalogContents(this.#ctx.storage))?.segments ?? [];
    const doomed = withDependentsOf(records, targets.map((t) => t.id));
    const remove = records.filter((r) => doomed.has(r.id));
    const newestGood = [...new Set(remove.map((r) => r.database))]
      .map((database) => newestGoodBackup(records.filter((r) => r.database === database)))
      .filter((b): b is BackupRecord => b !== undefined && doomed.has(b.id));
    return { remove, dependents: remove.filter((r) => !targets.some((t) => t.id === r.id)), newestGood, lostWindows: lostWindows(records, segments, doomed) };
  }
}

/** The windows of continuous protection whose base is among `doomed` and that have segments: what deleting them loses. */
function lostWindows(records: readonly BackupRecord[], segments: readonly SegmentRecord[], doomed: ReadonlySet<string>): ContinuityWindow[] {
  return continuityWindows(records, segments).filter((w) => doomed.has(w.base) && w.segments > 0);
}

/** "42 segment(s) of continuous protection replay onto it (app from 2026-12-02T09:00:00.000Z to 2026-12-02T09:30:00.000Z, after app_full_...)". */
export function describeLostWindows(windows: readonly ContinuityWindow[]): string {
  const count = windows.reduce((sum, w) => sum + w.segments, 0);
  return `${count} segment(s) of continuous protection replay onto it (${windows.map((w) => `${w.database} from ${w.from} to ${w.to}, ${w.segments} after ${w.base}`).join('; ')})`;
}

/** `ids` and every backup that needs one of them (its parent or base), until nothing more joins. */
function withDependentsOf(records: readonly BackupRecord[], ids: readonly string[]): Set<string> {
  const doomed = new Set(ids);
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of records) {
      if (doomed.has(r.id)) continue;
      if ((r.parent !== null && doomed.has(r.parent)) || (r.base !== null && doomed.has(r.base))) {
        doomed.add(r.id);
        grew = true;
      }
    }
  }
  return doomed;
}

/** What an interrupted prune or delete had already removed from the catalog, for its journal entry. */
function interruptedOutcome(err: unknown): JournalOutcome | undefined {
  const removed = err instanceof StrataError && err.code === 'ABORTED' ? err.details?.['removed'] : undefined;
  return Array.isArray(removed) ? { details: { removed, interrupted: true } } : undefined;
}

/** The archived log files a prune removes, as its journal keeps them (log-coverage.ts reads them back). */
function loggedRanges(removeLog: readonly LogRemovalDecision[] | undefined): { database: string; files: number; first: string; last: string }[] {
  return (removeLog ?? []).map((d) => ({ database: d.database, files: d.files, first: d.first, last: d.last }));
}
