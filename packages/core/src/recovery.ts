import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { readCatalog } from './catalog.js';
import { defaultIsAlive } from './journal.js';
import { withRepositoryLock } from './lock.js';
import type { LockOptions } from './lock.js';
import { layoutCacheKey } from './layout-cache.js';
import { factsCacheKey } from './facts-cache.js';
import { sweepPrivateTemps } from './private-temp.js';
import type { Storage } from './storage.js';

/**
 * What a killed process leaves behind and how the next open finishes it. Artifacts are staged
 * under staging/ (the writer's pid in the name) and moved into backups/ under the lock with the
 * catalog write; a note in locks/ covers the moment between the move and the catalog write
 * (commit notes) and between a prune's catalog write and its deletions (pending deletions).
 * The writing side of these notes is catalog-commit.ts.
 */

/**
 * Finishes or undoes what killed processes left, before this process writes anything: private
 * temporary folders, the storage's temporary files, staged artifacts, uncommitted artifacts,
 * unfinished deletions.
 */
export async function recoverInterruptedWork(storage: Storage, options: { tempDir?: string; lock?: LockOptions }): Promise<void> {
  await sweepPrivateTemps(options.tempDir);
  await storage.sweepTemp?.();
  await sweepStaging(storage);
  await finishInterruptedCommits(storage);
  await finishInterruptedDeletions(storage, options.lock);
}

/**
 * Where an artifact bound for `artifactKey` is written first: outside backups/, with the writer's
 * pid in the name so a sweep can tell a dead writer's leftovers.
 */
export function stagingKey(artifactKey: string): string {
  return `staging/${process.pid}-${randomBytes(6).toString('hex')}-${artifactKey.split('/').pop()}`;
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
      const catalog = await readCatalog(storage);
      if (pending.length === 0 || catalog === undefined) return;
      const listed = new Set(catalog.flatMap((r) => [r.key, layoutCacheKey(r.database, r.id, r.encryption.profile !== 'none'), factsCacheKey(r.database, r.id, r.encryption.profile !== 'none')]));
      for (const key of pending) if (!listed.has(key)) await storage.delete(key);
      await writePendingDeletions(storage, []);
    },
    lock,
  );
}

/** Removes staged artifacts of backups whose process is gone (killed before their commit). */
async function sweepStaging(storage: Storage): Promise<void> {
  for await (const object of storage.list('staging/')) {
    const pid = Number(/^staging\/(\d+)-/.exec(object.key)?.[1]);
    if (Number.isInteger(pid) && !defaultIsAlive(pid, hostname())) await storage.delete(object.key).catch(() => undefined);
  }
}

const COMMIT_NOTE_PREFIX = 'locks/committing-';

/** The note a commit in progress leaves (`id`: a backup's id, or `import-<random>`). */
export function commitNoteKey(id: string): string {
  return `${COMMIT_NOTE_PREFIX}${id}.json`;
}

/**
 * A backup killed while committing leaves a note: if its artifact made it into backups/ but not
 * into the catalog, the backup did not happen (its journal entry reads FAILED), so the artifact
 * goes. Notes of live processes are left alone.
 */
async function finishInterruptedCommits(storage: Storage): Promise<void> {
  for await (const object of storage.list(COMMIT_NOTE_PREFIX)) {
    let note: { key?: string; keys?: unknown; cacheKey?: string; pid?: number; host?: string };
    try {
      note = JSON.parse(Buffer.from(await storage.read(object.key)).toString('utf8')) as typeof note;
    } catch {
      continue;
    }
    if (typeof note.pid !== 'number' || defaultIsAlive(note.pid, note.host ?? hostname())) continue;
    const catalog = await readCatalog(storage);
    // Without a catalog there is nothing to tell an uncommitted artifact from a committed one:
    // the artifact is complete (it reached backups/ whole), so it stays and the rebuild lists it.
    // A backup's note names one artifact (and its cached layout); an import's names several.
    const keys = [note.key, ...(Array.isArray(note.keys) ? note.keys : [])].filter((k): k is string => typeof k === 'string' && k.startsWith('backups/'));
    for (const key of keys) {
      const recorded = catalog === undefined || catalog.some((r) => r.key === key);
      if (recorded) continue;
      await storage.delete(key);
      if (key === note.key && typeof note.cacheKey === 'string' && note.cacheKey.startsWith('cache/')) await storage.delete(note.cacheKey);
    }
    await storage.delete(object.key);
  }
}
