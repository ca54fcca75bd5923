import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { readCatalog, writeCatalog } from './catalog.js';
import type { BackupRecord } from './catalog.js';
import { StrataError } from './errors.js';
import { factsCacheKey } from './facts-cache.js';
import { layoutCacheKey } from './layout-cache.js';
import { withRepositoryLock } from './lock.js';
import { commitNoteKey, readPendingDeletions, writePendingDeletions } from './recovery.js';
import type { RepositoryContext } from './repository-context.js';
import type { Storage } from './storage.js';

/**
 * Every change of the catalog, and every move of a staged artifact into backups/, happens here:
 * under the repository lock, in an order a kill at any point leaves recoverable (recovery.ts
 * finishes or undoes what a killed process left).
 */

/** Changes the catalog under the repository lock (read, change, write atomically). */
export async function updateCatalog(ctx: RepositoryContext, operation: string, change: (records: BackupRecord[]) => BackupRecord[] | Promise<BackupRecord[]>): Promise<void> {
  await withRepositoryLock(
    ctx.storage,
    operation,
    async () => {
      const current = (await readCatalog(ctx.storage)) ?? (await ctx.catalog.rebuildHoldingLock());
      await writeCatalog(ctx.storage, await change(current));
    },
    ctx.options.lock,
  );
}

/** A new backup's artifact, staged (see {@link stagingKey}), and what it adds to the catalog. */
export interface StagedBackup {
  readonly id: string;
  /** Where the artifact belongs in backups/. */
  readonly key: string;
  readonly staging: string;
  readonly cacheKey: string;
  readonly factsKey: string;
  /** The restore point it builds on, which must still be in the catalog. */
  readonly parent: BackupRecord | undefined;
  readonly record: BackupRecord;
}

/**
 * Moves a staged backup into backups/ and records it, under the lock. On failure nothing of it
 * remains (staged file, artifact, cached layout and facts, note) and the error is rethrown.
 */
export async function commitBackup(ctx: RepositoryContext, backup: StagedBackup): Promise<void> {
  const { id, key, staging, cacheKey, factsKey, parent } = backup;
  let moved = false;
  try {
    await updateCatalog(ctx, 'backup', async (records) => {
      if (parent && !records.some((r) => r.id === parent.id)) {
        throw new StrataError('CHAIN_BROKEN', `backup: its parent ${parent.id} was removed while the backup ran; take the backup again`);
      }
      // If the process dies between the move and the catalog write, this note tells the next
      // open that the artifact was never recorded (the journal says the backup failed).
      await ctx.storage.put(commitNoteKey(id), Buffer.from(JSON.stringify({ key, cacheKey, pid: process.pid, host: hostname() })));
      await ctx.storage.rename(staging, key);
      moved = true;
      return [...records, backup.record];
    });
    await ctx.storage.delete(commitNoteKey(id));
  } catch (err) {
    await ctx.storage.delete(commitNoteKey(id)).catch(() => undefined);
    await ctx.storage.delete(cacheKey).catch(() => undefined);
    await ctx.storage.delete(factsKey).catch(() => undefined);
    if (!moved) await ctx.storage.delete(staging).catch(() => undefined);
    // Without a catalog entry the backup did not happen; remove the artifact so the
    // repository and the journal agree.
    await ctx.storage.delete(key).catch(() => undefined);
    throw err;
  }
}

/** An imported artifact, staged, with its catalog record. */
export interface StagedImport {
  readonly record: BackupRecord;
  readonly staging: string;
}

/**
 * Moves staged imports into backups/ and records them, under the lock; those another process
 * imported meanwhile are skipped. Each artifact moved is added to `moved` as it goes, so a caller
 * whose commit failed can remove them again.
 */
export async function commitImport(ctx: RepositoryContext, placed: readonly StagedImport[], moved: string[]): Promise<void> {
  const noteKey = commitNoteKey(`import-${randomBytes(6).toString('hex')}`);
  await updateCatalog(ctx, 'import', async (records) => {
    const fresh = placed.filter((p) => !records.some((r) => r.id === p.record.id));
    // Killed between the moves and the catalog write, this note lets the next open remove
    // the moved artifacts, which no catalog entry vouches for (the journal says FAILED).
    await ctx.storage.put(noteKey, Buffer.from(JSON.stringify({ keys: fresh.map((p) => p.record.key), pid: process.pid, host: hostname() })));
    for (const p of fresh) {
      await ctx.storage.rename(p.staging, p.record.key);
      moved.push(p.record.key);
    }
    return [...records, ...fresh.map((p) => p.record)];
  });
  await ctx.storage.delete(noteKey).catch(() => undefined);
  // Staged copies of backups another process imported meanwhile are not needed.
  for (const p of placed) if (!moved.includes(p.record.key)) await ctx.storage.delete(p.staging).catch(() => undefined);
}

/**
 * Drops backups from the catalog and deletes their files; the caller holds the lock. Crash-safe
 * order: note what is about to go, drop it from the catalog (which then only lists complete
 * restore points), delete the files, forget the note. Killed anywhere, it leaves at worst files
 * listed in the note, which the next prune or delete removes.
 */
export async function removeBackups(storage: Storage, records: readonly BackupRecord[], doomed: ReadonlySet<string>): Promise<void> {
  const gone = records.filter((r) => doomed.has(r.id));
  const cacheKeys = (r: BackupRecord): string[] => [layoutCacheKey(r.database, r.id, r.encryption.profile !== 'none'), factsCacheKey(r.database, r.id, r.encryption.profile !== 'none')];
  const keys = gone.flatMap((r) => [r.key, ...cacheKeys(r)]);
  // A note left by a killed prune counts only for files the catalog no longer lists: if that
  // prune died before its catalog write, it did not happen, and its note must not delete the
  // artifacts of backups that are still listed (and restorable).
  const kept = new Set(records.filter((r) => !doomed.has(r.id)).flatMap((r) => [r.key, ...cacheKeys(r)]));
  const leftovers = (await readPendingDeletions(storage)).filter((key) => !kept.has(key));
  const pending = [...leftovers, ...keys];
  await writePendingDeletions(storage, pending);
  await writeCatalog(storage, records.filter((r) => !doomed.has(r.id)));
  for (const key of pending) await storage.delete(key);
  await writePendingDeletions(storage, []);
}
