/** Cancellation for long operations: every I/O method takes it and stops promptly when it fires. */
export interface Abortable {
  readonly signal?: AbortSignal;
}

/** What a storage knows about one object. Keys are `/`-separated relative paths. */
export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
  /** Last modification time, as the storage reports it. */
  readonly modified: Date;
}

/** Capacity of the medium holding the repository, for `strata health`. */
export interface SpaceInfo {
  readonly totalBytes: number;
  readonly freeBytes: number;
}

/**
 * Who may read what a storage creates: its owner only (`private`: folders 0700, files 0600 on a
 * local disk), or also the owner's group (`group-readable`: 0750 and 0640), for operators who
 * copy or check backups under another account of the same group. Only the owner ever writes.
 */
export type StorageAccess = 'private' | 'group-readable';

/** What a storage can do beyond the required methods; core branches on these, never on a kind. */
export interface StorageCapabilities {
  /** `append()` adds to an object in place (a local file); false means core rewrites objects. */
  readonly append: boolean;
  /** `space()` reports the capacity of the underlying medium. */
  readonly space: boolean;
}

/**
 * Where a repository lives. Storage moves opaque bytes and never looks inside them.
 *
 * Contract for implementers (see docs/implementing-a-storage.md):
 * - `put` is atomic: readers see either no object or the complete one, never a prefix. A local
 *   storage writes to a temporary name, fsyncs, renames and fsyncs the folder. If `body` fails or
 *   the signal fires, nothing is left under `key` and the temporary data is removed.
 * - `get`, `stat` reject with a StrataError whose details have `notFound: true` (see
 *   {@link isNotFound}) when the key does not exist. The caller consumes or destroys the stream.
 * - `delete` is idempotent: deleting a missing key succeeds.
 * - `createExclusive` writes a small object only if the key does not exist yet, atomically with
 *   respect to other processes, and returns false if it existed. Locks are built on it.
 * - `list(prefix)` yields every object whose key starts with `prefix`, in no particular order,
 *   and never yields temporary objects of unfinished puts.
 */
export interface Storage {
  readonly capabilities: StorageCapabilities;
  /** A human-readable location for messages (a folder path, a bucket URL without credentials). */
  readonly location: string;
  put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: Abortable): Promise<ObjectInfo>;
  get(key: string, options?: Abortable): Promise<AsyncIterable<Uint8Array>>;
  /** Reads a whole small object into memory (catalog, config, lock files). */
  read(key: string, options?: Abortable): Promise<Uint8Array>;
  stat(key: string, options?: Abortable): Promise<ObjectInfo>;
  list(prefix: string, options?: Abortable): AsyncIterable<ObjectInfo>;
  delete(key: string, options?: Abortable): Promise<void>;
  createExclusive(key: string, body: Uint8Array): Promise<boolean>;
  /** Appends bytes to an object, creating it if missing. Only when `capabilities.append`. */
  append?(key: string, body: Uint8Array): Promise<void>;
  /** Capacity of the medium. Only when `capabilities.space`. */
  space?(): Promise<SpaceInfo>;
  /**
   * Moves an object to another key, atomically replacing nothing (the target must not exist).
   * Backups stage artifacts under `staging/` and move them into `backups/` under the repository
   * lock, together with the catalog write, so the catalog and the folder never disagree.
   */
  rename(from: string, to: string): Promise<void>;
  /** Removes temporary objects of writers that crashed; returns how many. Optional. */
  sweepTemp?(): Promise<number>;
  /** True when the storage location exists at all (used to tell "no repository" apart). */
  exists(): Promise<boolean>;
  /**
   * Sets who may read the folders and objects this storage creates from now on (default
   * `private`), whatever the process's umask says. Core calls it with the repository's setting
   * before its first write, in every process. With `root`, the repository's own folder, if it
   * exists, is opened to the group too (`strata init --group-readable` into a folder made by hand).
   * A storage without permissions of its own leaves this out; core then refuses `group-readable`.
   */
  setAccess?(access: StorageAccess, options?: { readonly root?: boolean }): Promise<void>;
}

/** True when a storage error means "no such object". */
export function isNotFound(err: unknown): boolean {
  return (
    typeof err === 'object' &&
    err !== null &&
    'details' in err &&
    typeof (err as { details: unknown }).details === 'object' &&
    (err as { details: Record<string, unknown> }).details['notFound'] === true
  );
}
