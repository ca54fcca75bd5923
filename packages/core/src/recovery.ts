import { errorText } from './errors.js';
import { readCatalogContents } from './catalog.js';
import type { BackupRecord, SegmentRecord } from './catalog.js';
import { finishAbandonedWrites } from './pending-writes.js';
import { withRepositoryLock } from './lock.js';
import type { LockOptions } from './lock.js';
import { backupCacheKeys } from './carry-cache.js';
import { sweepPrivateTemps } from './private-temp.js';
import { readSection, unlistedKeyFiles } from './key-file.js';
import type { EncryptionSection } from './key-file.js';
import type { Storage } from './storage.js';

/**
 * What a killed process leaves behind and how the next open finishes it. Artifacts are written
 * under their final keys, announced first by a note in pending/ that stays until the catalog
 * generation listing them is written (pending-writes.ts); a note in locks/ covers the moment
 * between a prune's catalog write and its deletions (pending deletions). The writing side of
 * these notes is catalog-commit.ts. (What the layout before format 3 left, staged files and
 * commit notes, is finished by layout-migration.ts.)
 */

/**
 * Finishes or undoes what killed processes left, before this process writes anything: private
 * temporary folders, the storage's temporary files, uncommitted artifacts, unfinished deletions.
 */
export async function recoverInterruptedWork(storage: Storage, options: { tempDir?: string; lock?: LockOptions; encryption?: EncryptionSection }): Promise<void> {
  if (options.encryption) {
    // Best effort: a reader that may not write here (a group member of a group-readable
    // repository) still reads; the file is named for whoever may remove it.
    await sweepUnlistedKeyFiles(storage, options.encryption, options.lock).catch((err: unknown) =>
      process.emitWarning(`could not remove key files repository.json does not list (${errorText(err).text}); they are a revoked passphrase's: their owner should remove them (strata key list names the listed ones)`, { code: 'STRATA_LEFTOVER' }),
    );
  }
  await sweepPrivateTemps(options.tempDir);
  await storage.sweepTemp?.();
  await finishAbandonedWrites(storage, async () => {
    const catalog = await readCatalogContents(storage);
    return catalog && new Set([...catalog.backups.map((r) => r.key), ...catalog.segments.map((s) => s.key)]);
  });
  await finishInterruptedDeletions(storage, options.lock);
}

/**
 * Every key a catalog's backups and segments hold (artifacts and their cache files): what a note
 * of pending deletions must never delete, whoever reads it.
 */
export function catalogKeys(backups: readonly BackupRecord[], segments: readonly SegmentRecord[]): Set<string> {
  return new Set([...backups.flatMap((r) => [r.key, ...backupCacheKeys(r)]), ...segments.map((s) => s.key)]);
}

/** Artifacts a prune dropped from the catalog but may not have deleted yet (it was killed). */
export const PENDING_DELETIONS_KEY = 'locks/pending-deletions.json';

/** The pending-deletions note's keys (only backups/ and cache/ ones); none when it is missing or torn. */
export async function readPendingDeletions(storage: Storage): Promise<string[]> {
  try {
    const parsed = JSON.parse(Buffer.from(await storage.read(PENDING_DELETIONS_KEY)).toString('utf8')) as unknown;
    return Array.isArray(parsed) ? parsed.filter((k): k is string => typeof k === 'string' && (k.startsWith('backups/') || k.startsWith('cache/'))) : [];
  } catch {
    // Missing, or unreadable (torn by a crash): nothing is lost, the files stay until removed by hand.
    return [];
  }
}

/** Writes the pending-deletions note; with no keys, removes it. */
export async function writePendingDeletions(storage: Storage, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) await storage.delete(PENDING_DELETIONS_KEY);
  else await storage.put(PENDING_DELETIONS_KEY, Buffer.from(JSON.stringify([...new Set(keys)])));
}

/**
 * Finishes what a killed prune or delete left in its note: under the lock (a live prune holds it
 * until it is done), the files the catalog no longer lists are deleted and the note goes. Files the
 * catalog still lists stay: that prune died before its catalog write, so it did not happen.
 */
async function finishInterruptedDeletions(storage: Storage, lock: LockOptions | undefined): Promise<void> {
  if ((await readPendingDeletions(storage)).length === 0) return;
  await withRepositoryLock(
    storage,
    'finish-deletions',
    async () => {
      const pending = await readPendingDeletions(storage);
      const contents = await readCatalogContents(storage);
      if (pending.length === 0 || contents === undefined) return;
      const listed = catalogKeys(contents.backups, contents.segments);
      for (const key of pending) if (!listed.has(key)) await storage.delete(key);
      await writePendingDeletions(storage, []);
    },
    lock,
  );
}

/**
 * Removes key files repository.json does not list, on every open, not only at the next key
 * change: the one a `key passwd` (or a `key remove` of an earlier version) killed after its
 * repository.json write left is a revoked passphrase's, which still decrypts every backup for
 * whoever holds that passphrase and a copy of the repository. Under the lock, read again: a key
 * change in progress writes its new key file before the repository.json that lists it, and holds
 * the lock until then. Said on stderr (a process warning), since a file disappears.
 */
async function sweepUnlistedKeyFiles(storage: Storage, section: EncryptionSection, lock: LockOptions | undefined): Promise<void> {
  if (!section.keyFiles || (await unlistedKeyFiles(storage, section)).length === 0) return;
  await withRepositoryLock(
    storage,
    'sweep-key-files',
    async () => {
      const now = (await readSection(storage)).section;
      for (const key of await unlistedKeyFiles(storage, now)) {
        await storage.delete(key);
        process.emitWarning(`removed ${key}: repository.json does not list it (a key change was killed before it finished), so its passphrase no longer opens the repository`, { code: 'STRATA_LEFTOVER' });
      }
    },
    lock,
  );
}
