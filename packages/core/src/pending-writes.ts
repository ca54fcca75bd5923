import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { defaultIsAlive } from './journal.js';
import type { Abortable, Storage } from './storage.js';
import { isNotFound } from './storage.js';

/**
 * Notes of artifacts being written: `pending/<name>.json`. An object store has no rename, so a
 * backup (or an import) writes its artifact under its final key, long before the catalog
 * generation that lists it (the commit) exists. The note, written before the artifact's first
 * byte and deleted only after the commit, is what tells such an uncommitted artifact from a
 * committed one when the writer died:
 *
 * - an artifact named by a note is never listed by a catalog rebuild, so a lost catalog never
 *   brings back a backup whose run failed;
 * - the next open removes what a dead writer's note names unless the catalog lists it (the commit
 *   happened and only the note's deletion was lost), then the note.
 */
export const PENDING_PREFIX = 'pending/';

interface PendingNote {
  /** Artifacts, in backups/. */
  readonly keys: readonly string[];
  /** Cached copies (layouts, facts) that go with them, in cache/. */
  readonly cacheKeys: readonly string[];
  readonly pid: number;
  readonly host: string;
  readonly at: string;
}

/** One announced write: remove its objects if it fails, or its note once it is committed. */
export interface PendingWrite {
  /** The commit listed the artifacts: the note goes, the objects stay. */
  committed(): Promise<void>;
  /**
   * The write failed or was cancelled: its objects go first, then the note. Keys in `keep` stay:
   * an import's artifact that another process imported and committed meanwhile (same key, same bytes).
   */
  abandon(keep?: ReadonlySet<string>): Promise<void>;
}

/** Writes the note for `keys` (and their cached copies) before any of them is written. */
export async function announceWrite(storage: Storage, name: string, keys: readonly string[], cacheKeys: readonly string[]): Promise<PendingWrite> {
  const noteKey = `${PENDING_PREFIX}${name}-${randomBytes(4).toString('hex')}.json`;
  await storage.put(noteKey, noteBytes(keys, cacheKeys));
  return pendingWrite(storage, noteKey, keys, cacheKeys);
}

/** A name held for a write that has not started: {@link claimWrite}. */
export interface Claim {
  /** Names what the write will store, before its first byte: from here on it is announced. */
  announce(keys: readonly string[], cacheKeys: readonly string[]): Promise<PendingWrite>;
  /** Gives the name back before anything was written (only the note goes). */
  withdraw(): Promise<void>;
}

/**
 * Holds `name` for a write, with a note named `name` alone (`pending/<name>.json`) that only one
 * writer can create (`createExclusive`); undefined when another writer's note has that name. A
 * backup claims its new id this way, so two processes that draw the same id in the same second
 * cannot both write under it. The note names no key until {@link Claim.announce}: a claim given
 * up because its id turned out to be taken (a committed backup's) must never name that backup's
 * objects, or a catalog rebuild would leave them out and the next open delete them.
 */
export async function claimWrite(storage: Storage, name: string, options: Abortable = {}): Promise<Claim | undefined> {
  const noteKey = `${PENDING_PREFIX}${name}.json`;
  if (!(await storage.createExclusive(noteKey, noteBytes([], []), options))) return undefined;
  return {
    announce: async (keys, cacheKeys) => {
      await storage.put(noteKey, noteBytes(keys, cacheKeys), options);
      return pendingWrite(storage, noteKey, keys, cacheKeys);
    },
    withdraw: () => storage.delete(noteKey),
  };
}

function noteBytes(keys: readonly string[], cacheKeys: readonly string[]): Buffer {
  const note: PendingNote = { keys, cacheKeys, pid: process.pid, host: hostname(), at: new Date().toISOString() };
  return Buffer.from(JSON.stringify(note) + '\n');
}

function pendingWrite(storage: Storage, noteKey: string, keys: readonly string[], cacheKeys: readonly string[]): PendingWrite {
  return {
    committed: () => storage.delete(noteKey),
    abandon: async (keep) => {
      // The note last: a kill in the middle leaves it, and the next open finishes the removal.
      for (const key of [...keys, ...cacheKeys]) if (!keep?.has(key)) await storage.delete(key);
      await storage.delete(noteKey);
    },
  };
}

async function readNotes(storage: Storage): Promise<{ key: string; note: PendingNote | undefined }[]> {
  const out: { key: string; note: PendingNote | undefined }[] = [];
  for await (const object of storage.list(PENDING_PREFIX)) {
    if (!object.key.endsWith('.json')) continue;
    try {
      const parsed = JSON.parse(Buffer.from(await storage.read(object.key)).toString('utf8')) as Partial<PendingNote>;
      const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((k): k is string => typeof k === 'string') : []);
      out.push({
        key: object.key,
        note: {
          // Only keys of the places a note may name: a hand-made note must not delete anything else.
          keys: strings(parsed.keys).filter((k) => k.startsWith('backups/')),
          cacheKeys: strings(parsed.cacheKeys).filter((k) => k.startsWith('cache/')),
          pid: typeof parsed.pid === 'number' ? parsed.pid : -1,
          host: typeof parsed.host === 'string' ? parsed.host : '',
          at: typeof parsed.at === 'string' ? parsed.at : '',
        },
      });
    } catch (err) {
      if (isNotFound(err)) continue; // its writer finished meanwhile
      // Unreadable: written whole by put, so damaged by hand; what it named is unknown.
      out.push({ key: object.key, note: undefined });
    }
  }
  return out;
}

/** Artifacts that notes name (of live or dead writers): a catalog rebuild leaves them out. */
export async function pendingArtifactKeys(storage: Storage): Promise<Set<string>> {
  const keys = new Set<string>();
  for (const { note } of await readNotes(storage)) for (const key of note?.keys ?? []) keys.add(key);
  return keys;
}

/**
 * Finishes the notes of writers that are gone (their pid no longer runs on this host): what the
 * catalog lists stays, the rest goes, then the note. `listed` returns the catalog's artifact keys,
 * or undefined when there is no readable catalog: then nothing is decided (the rebuild leaves the
 * noted artifacts out; a later open, with a catalog, removes them). Notes of live writers and of
 * other hosts are left alone.
 */
export async function finishAbandonedWrites(storage: Storage, listed: () => Promise<Set<string> | undefined>): Promise<number> {
  let finished = 0;
  let catalogKeys: Set<string> | undefined | null = null;
  for (const { key, note } of await readNotes(storage)) {
    if (!note || note.host !== hostname() || defaultIsAlive(note.pid, note.host)) continue;
    catalogKeys ??= (await listed()) ?? undefined;
    if (catalogKeys === undefined) return finished;
    const committed = note.keys.length > 0 && note.keys.every((k) => catalogKeys!.has(k));
    if (!committed) for (const k of [...note.keys.filter((k) => !catalogKeys!.has(k)), ...note.cacheKeys]) await storage.delete(k);
    await storage.delete(key);
    finished++;
  }
  return finished;
}
