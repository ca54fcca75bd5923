import { readCatalog, readCatalogContents, writeCatalog } from './catalog.js';
import type { BackupRecord, SegmentRecord } from './catalog.js';
import { chainBreak } from './segments.js';
import { StrataError, throwIfAborted } from './errors.js';
import { backupCacheKeys } from './carry-cache.js';
import { withRepositoryLock } from './lock.js';
import { compactJournal } from './journal.js';
import type { PendingWrite } from './pending-writes.js';
import { catalogKeys, readPendingDeletions, writePendingDeletions } from './recovery.js';
import type { RepositoryContext } from './repository-context.js';
import type { Storage } from './storage.js';

/**
 * Every change of the catalog, and so every commit of a written artifact, happens here: under
 * the repository lock, in an order a kill at any point leaves recoverable (recovery.ts finishes or
 * undoes what a killed process left).
 */

/** Changes the catalog under the repository lock (read, change, write atomically). */
export async function updateCatalog(ctx: RepositoryContext, operation: string, change: (records: BackupRecord[]) => BackupRecord[] | Promise<BackupRecord[]>): Promise<void> {
  await withRepositoryLock(
    ctx.storage,
    operation,
    async () => {
      const current = (await readCatalog(ctx.storage)) ?? (await ctx.catalog.rebuildHoldingLock());
      await writeCatalog(ctx.storage, await change(current));
      // Holding the lock anyway: fold the journal's records once there are many. Best effort:
      // the change above is made, and an unfolded journal only reads slower.
      await compactJournal(ctx.storage).catch(() => undefined);
    },
    ctx.options.lock,
  );
}

/** A new backup whose objects are written (announced by `pending`), and its catalog record. */
export interface WrittenBackup {
  /** The restore point it builds on, which must still be in the catalog. */
  readonly parent: BackupRecord | undefined;
  readonly record: BackupRecord;
  readonly pending: PendingWrite;
}

/**
 * Records a written backup in the catalog, under the lock: the new catalog generation is the
 * commit, and only then does its pending note go. On failure nothing of it remains (artifact,
 * cached layout and facts, note) and the error is rethrown; an error after the commit point (the
 * catalog lists the backup) is no failure of the backup, which stays. A kill at any point leaves the note,
 * and the next open decides by the catalog (recovery.ts).
 */
export async function commitBackup(ctx: RepositoryContext, backup: WrittenBackup): Promise<void> {
  const { parent, record, pending } = backup;
  try {
    await updateCatalog(ctx, 'backup', async (records) => {
      if (parent && !records.some((r) => r.id === parent.id)) {
        throw new StrataError('CHAIN_BROKEN', `backup: its parent ${parent.id} was removed while the backup ran; take the backup again`);
      }
      return [...records, record];
    });
  } catch (err) {
    // An error does not prove the commit did not happen: the new generation may have been
    // written before a later step failed (deleting the older generations, releasing the lock),
    // or written by a request whose answer was lost (an object store's 500 after the write).
    // The catalog decides. Listed: the backup is committed, only its note goes. Not listed: it is
    // undone. Unknown (the catalog does not read): everything stays for the next open to decide.
    const listed = await readCatalog(ctx.storage).then(
      (records) => records?.some((r) => r.key === record.key) ?? false,
      () => undefined,
    );
    if (listed === true) {
      await pending.committed().catch(() => undefined);
      return;
    }
    if (listed === false) await pending.abandon().catch(() => undefined);
    throw err;
  }
  await pending.committed();
}

/** An imported artifact, written under its final key (announced by `pending`), with its catalog record. */
export interface WrittenImport {
  readonly record: BackupRecord;
  readonly pending: PendingWrite;
}

/** An imported segment, written under its final key (announced by `pending`), with its catalog record. */
export interface WrittenSegmentImport {
  readonly record: SegmentRecord;
  readonly pending: PendingWrite;
}

/**
 * Records written imports in the catalog, under the lock, in one generation; those another
 * process imported meanwhile are in it already (under the same key, with the same bytes: both
 * checked them against the same record). Then their notes go. Segments join the chains of their
 * bases, which must stay unbroken (CHAIN_BROKEN and nothing committed otherwise).
 */
export async function commitImport(ctx: RepositoryContext, placed: readonly WrittenImport[], segments: readonly WrittenSegmentImport[] = []): Promise<void> {
  await withRepositoryLock(
    ctx.storage,
    'import',
    async () => {
      const current = (await readCatalogContents(ctx.storage)) ?? { backups: await ctx.catalog.rebuildHoldingLock(), segments: [] };
      const fresh = placed.filter((p) => !current.backups.some((r) => r.id === p.record.id));
      const backups = [...current.backups, ...fresh.map((p) => p.record)];
      const listed = new Set(current.segments.map((s) => s.id));
      const freshSegments = segments.filter((p) => !listed.has(p.record.id)).map((p) => p.record);
      for (const baseId of new Set(freshSegments.map((s) => s.base))) {
        const base = backups.find((b) => b.id === baseId);
        const chain = [...current.segments, ...freshSegments].filter((s) => s.base === baseId).sort((a, b) => a.sequence - b.sequence);
        const broken = base ? chainBreak(base, chain) : `its base ${baseId} is not in the repository`;
        if (broken) throw new StrataError('CHAIN_BROKEN', `import: the segments after ${baseId} would not form one chain here (${broken}); nothing was imported`);
      }
      await writeCatalog(ctx.storage, backups, [...current.segments, ...freshSegments]);
      await compactJournal(ctx.storage).catch(() => undefined);
    },
    ctx.options.lock,
  );
  for (const p of [...placed, ...segments]) await p.pending.committed();
}

/**
 * Undoes written imports that were not committed: their artifacts and notes go, except artifacts
 * the catalog lists (another process imported and committed the same backup meanwhile).
 */
export async function abandonImport(ctx: RepositoryContext, placed: readonly PendingWrite[]): Promise<void> {
  const catalog = await readCatalogContents(ctx.storage).catch(() => undefined);
  const listed = new Set([...(catalog?.backups ?? []), ...(catalog?.segments ?? [])].map((r) => r.key));
  for (const p of placed) await p.abandon(listed).catch(() => undefined);
}

/**
 * Drops backups from the catalog and deletes their files; the caller holds the lock. Crash-safe
 * order: note what is about to go, drop it from the catalog (which then only lists complete
 * restore points), delete the files, forget the note. Killed (or interrupted) anywhere, it leaves
 * at worst files listed in the note, which the next open of the repository removes.
 */
export async function removeBackups(storage: Storage, records: readonly BackupRecord[], doomed: ReadonlySet<string>, segmentsOf: ReadonlySet<string> = new Set(), options: { signal?: AbortSignal; step?: string } = {}): Promise<void> {
  const step = options.step ?? 'remove';
  const gone = records.filter((r) => doomed.has(r.id));
  // Segments go with their base (without it they replay onto nothing), and those of the chains
  // in `segmentsOf`, whose bases stay.
  const allSegments = (await readCatalogContents(storage))?.segments ?? [];
  const segmentGoes = (s: SegmentRecord): boolean => doomed.has(s.base) || segmentsOf.has(s.base);
  const segments = allSegments.filter((s) => !segmentGoes(s));
  const keys = [...gone.flatMap((r) => [r.key, ...backupCacheKeys(r)]), ...allSegments.filter(segmentGoes).map((s) => s.key)];
  // A note left by a killed prune counts only for files the catalog no longer lists: if that
  // prune died before its catalog write, it did not happen, and its note must not delete the
  // artifacts of backups that are still listed (and restorable).
  const kept = catalogKeys(records.filter((r) => !doomed.has(r.id)), segments);
  const leftovers = (await readPendingDeletions(storage)).filter((key) => !kept.has(key));
  // Once each: a leftover of an earlier note can name a file this removal names again.
  const pending = [...new Set([...leftovers, ...keys])];
  // Interrupted before this point, nothing has changed.
  throwIfAborted(options.signal, step);
  await writePendingDeletions(storage, pending);
  await writeCatalog(storage, records.filter((r) => !doomed.has(r.id)), segments);
  for (const [deleted, key] of pending.entries()) {
    // The catalog no longer lists them: interrupted now, their files stay in the note, which the
    // next open of the repository (any strata command) finishes.
    if (options.signal?.aborted) {
      throw new StrataError('ABORTED', `${step}: interrupted after removing ${gone.length} backup(s) from the catalog and deleting ${deleted} of their ${pending.length} files; the next strata command on this repository deletes the rest`, {
        cause: options.signal.reason,
        details: { removed: gone.map((r) => r.id) },
      });
    }
    await storage.delete(key);
  }
  await writePendingDeletions(storage, []);
}
