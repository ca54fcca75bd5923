import { hostname } from 'node:os';
import { LEGACY_CATALOG_KEY, newestCatalogGeneration, parseCatalog, writeCatalog } from './catalog.js';
import type { BackupRecord } from './catalog.js';
import { JOURNAL_PREFIX, LEGACY_JOURNAL_KEY, defaultIsAlive } from './journal.js';
import { withRepositoryLock } from './lock.js';
import type { LockOptions } from './lock.js';
import { readRawConfig, writeRawConfig } from './repository-config.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';
import { hasErrno } from './errors.js';

/**
 * The repository format this Strata writes: 3 is the object layout (catalog generations, one
 * journal object per record, artifacts written under their final key). Formats 1 and 2 (one
 * catalog.json replaced in place, journal.ndjson appended to, artifacts staged in staging/ and
 * renamed) are moved onto it the first time this Strata opens them.
 */
export const REPOSITORY_FORMAT_VERSION = 3;

/** Where a format 2 repository's old layout keeps the migrated journal: one segment, read like any. */
export const MIGRATED_JOURNAL_KEY = `${JOURNAL_PREFIX}legacy.ndjson`;

const LEGACY_STAGING_PREFIX = 'staging/';
const LEGACY_COMMIT_NOTE_PREFIX = 'locks/committing-';

/**
 * Moves a repository of format 1 or 2 onto the object layout, under the repository lock, in an
 * order where a kill at any point leaves a repository that both this Strata and (until the
 * version changes) the previous release open correctly, and that the next open finishes moving:
 *
 * 1. what the old layout left unfinished is finished as the previous release would have: staged
 *    artifacts of dead writers go, and a commit a kill interrupted is resolved against catalog.json;
 * 2. catalog.json becomes the first catalog generation, journal.ndjson a journal segment (copies:
 *    the old files stay, so the previous release still reads a complete repository);
 * 3. repository.json gets version 3, from which on the previous release refuses the repository
 *    ("written by a newer Strata") instead of appending to a journal nobody reads;
 * 4. the old files go.
 *
 * Returns the version of repository.json afterwards.
 */
export async function migrateLegacyLayout(storage: Storage, lock: LockOptions | undefined): Promise<number> {
  return withRepositoryLock(
    storage,
    'migrate-layout',
    async () => {
      const raw = await readRawConfig(storage);
      const version = Number(raw['version']) || 1;
      if (version < REPOSITORY_FORMAT_VERSION) {
        await sweepLegacyStaging(storage);
        const legacy = await readLegacyCatalog(storage);
        await finishLegacyCommits(storage, legacy);
        // A damaged or missing catalog.json is rebuilt from the artifacts later, as it always was.
        if (legacy !== undefined && (await newestCatalogGeneration(storage)) === undefined) await writeCatalog(storage, legacy);
        await copyLegacyJournal(storage);
        await writeRawConfig(storage, { ...raw, version: REPOSITORY_FORMAT_VERSION });
      } else {
        // A migration killed after the version changed: the copies are made; copying the journal
        // again is harmless (readers drop records they read twice).
        await copyLegacyJournal(storage);
      }
      await storage.delete(LEGACY_CATALOG_KEY);
      await storage.delete(LEGACY_JOURNAL_KEY);
      return REPOSITORY_FORMAT_VERSION;
    },
    lock,
  );
}

/** True when `err` (or one of its causes) says this process may not write there. */
function isWriteDenied(err: unknown): boolean {
  for (let at: unknown = err; at; at = (at as { cause?: unknown }).cause) {
    if (hasErrno(at, 'EACCES') || hasErrno(at, 'EPERM') || hasErrno(at, 'EROFS')) return true;
  }
  return false;
}

/**
 * Moves a repository of an earlier format onto the object layout if it is one (see
 * {@link migrateLegacyLayout}); returns the format version it has afterwards. A process that may
 * not write there (a member of a group-readable repository's group) leaves it as it is and reads
 * it through the old layout, which the catalog and journal readers still understand.
 */
export async function upgradeLayout(storage: Storage, version: number, lock: LockOptions | undefined): Promise<number> {
  if (!(await hasLegacyLayout(storage, version))) return version;
  try {
    return await migrateLegacyLayout(storage, lock);
  } catch (err) {
    if (isWriteDenied(err)) return version;
    throw err;
  }
}

/** True when the repository still has something of the old layout to move or remove. */
export async function hasLegacyLayout(storage: Storage, version: number): Promise<boolean> {
  if (version < REPOSITORY_FORMAT_VERSION) return true;
  const present = async (key: string): Promise<boolean> =>
    storage.stat(key).then(
      () => true,
      (err: unknown) => {
        if (isNotFound(err)) return false;
        throw err;
      },
    );
  return (await present(LEGACY_CATALOG_KEY)) || (await present(LEGACY_JOURNAL_KEY));
}

async function readLegacyCatalog(storage: Storage): Promise<BackupRecord[] | undefined> {
  try {
    return parseCatalog(await storage.read(LEGACY_CATALOG_KEY));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

async function copyLegacyJournal(storage: Storage): Promise<void> {
  let bytes: Uint8Array;
  try {
    bytes = await storage.read(LEGACY_JOURNAL_KEY);
  } catch (err) {
    if (isNotFound(err)) return;
    throw err;
  }
  await storage.put(MIGRATED_JOURNAL_KEY, bytes);
}

/** Staged artifacts of the old layout whose writer is gone (killed before its commit). */
async function sweepLegacyStaging(storage: Storage): Promise<void> {
  for await (const object of storage.list(LEGACY_STAGING_PREFIX)) {
    const pid = Number(/^staging\/(\d+)-/.exec(object.key)?.[1]);
    if (Number.isInteger(pid) && !defaultIsAlive(pid, hostname())) await storage.delete(object.key);
  }
}

/**
 * A backup or import of the old layout killed while committing left a note: an artifact it moved
 * into backups/ that catalog.json does not list was never committed (its journal entry reads
 * FAILED), so it goes. Without a catalog.json the artifacts stay, as the previous release kept
 * them: they reached backups/ whole, inside the commit.
 */
async function finishLegacyCommits(storage: Storage, catalog: readonly BackupRecord[] | undefined): Promise<void> {
  for await (const object of storage.list(LEGACY_COMMIT_NOTE_PREFIX)) {
    let note: { key?: string; keys?: unknown; cacheKey?: string; pid?: number; host?: string };
    try {
      note = JSON.parse(Buffer.from(await storage.read(object.key)).toString('utf8')) as typeof note;
    } catch {
      continue;
    }
    if (typeof note.pid !== 'number' || defaultIsAlive(note.pid, note.host ?? hostname())) continue;
    const keys = [note.key, ...(Array.isArray(note.keys) ? note.keys : [])].filter((k): k is string => typeof k === 'string' && k.startsWith('backups/'));
    for (const key of keys) {
      if (catalog === undefined || catalog.some((r) => r.key === key)) continue;
      await storage.delete(key);
      if (key === note.key && typeof note.cacheKey === 'string' && note.cacheKey.startsWith('cache/')) await storage.delete(note.cacheKey);
    }
    await storage.delete(object.key);
  }
}
