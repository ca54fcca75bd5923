import { randomBytes } from 'node:crypto';
import { StrataError } from './errors.js';

/** Cancellation for long operations: every I/O method takes it and stops promptly when it fires. */
export interface Abortable {
  readonly signal?: AbortSignal;
}

/** Options of {@link Storage.put}. */
export interface PutOptions extends Abortable {
  /**
   * At most how many bytes the body holds, when the caller knows a bound (an artifact's raw
   * size): an object store that uploads in a limited number of parts sizes them from it.
   */
  readonly sizeHint?: number;
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

/** A part of an object: bytes `start` (inclusive) to `end` (exclusive; the object's end when absent). */
export interface ByteRange {
  readonly start: number;
  readonly end?: number;
}

/** Options of {@link Storage.get}. */
export interface GetOptions extends Abortable {
  /** Only these bytes. A range past the object's end yields what there is (possibly nothing). */
  readonly range?: ByteRange;
}

/**
 * Who may read what a storage creates: its owner only (`private`: folders 0700, files 0600 on a
 * local disk), or also the owner's group (`group-readable`: 0750 and 0640), for operators who
 * copy or check backups under another account of the same group. Only the owner ever writes.
 */
export type StorageAccess = 'private' | 'group-readable';

/** What a storage can do beyond the required methods; core branches on these, never on a kind. */
export interface StorageCapabilities {
  /** `space()` reports the capacity of the underlying medium. */
  readonly space: boolean;
}

/**
 * Where a repository lives. Storage moves opaque bytes and never looks inside them. The contract
 * is what an S3-compatible object store promises; docs/implementing-a-storage.md explains each
 * point and test/conformance/storage-conformance.ts checks them.
 *
 * - `put` writes a whole object atomically: readers see no object, the previous one, or the
 *   complete new one, never a prefix. If `body` fails or the signal fires, the key is left as it
 *   was (nothing new is visible) and no temporary data of it stays behind.
 * - `get`, `read` and `stat` reject with a StrataError whose details have `notFound: true` (see
 *   {@link isNotFound}) when the key does not exist. The caller consumes or destroys a stream.
 * - `list(prefix)` yields every object whose key starts with `prefix`, each once, in no particular
 *   order, never a temporary object of an unfinished put. A storage whose listing comes in pages
 *   (an object store's 1,000 keys per request) fetches the next page itself as the caller iterates.
 * - `delete` is idempotent: deleting a missing key succeeds.
 * - `createExclusive` writes a small object only if the key does not exist yet, atomically with
 *   respect to every other process on every host (S3's `If-None-Match: *`), and returns false if
 *   it existed. Locks, catalog generations and backups' claims of their ids rely on it. A store
 *   without such a conditional write must build it from linearizable operations (the S3
 *   storage's claim protocol) or refuse to hold a repository that several processes write to;
 *   see docs/implementing-a-storage.md.
 * - There is no rename and no append: core only ever writes whole, immutable objects (the
 *   journal is one object per record, the catalog one object per generation).
 */
export interface Storage {
  readonly capabilities: StorageCapabilities;
  /** A human-readable location for messages (a folder path, a bucket URL without credentials). */
  readonly location: string;
  /**
   * Writes a whole object. A storage may keep a piece of `body` after asking for the next one (to
   * write while the body produces more), so a body never writes again to a piece it has yielded.
   */
  put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: PutOptions): Promise<ObjectInfo>;
  get(key: string, options?: GetOptions): Promise<AsyncIterable<Uint8Array>>;
  /** Reads a whole small object into memory (catalog, config, lock files). */
  read(key: string, options?: Abortable): Promise<Uint8Array>;
  stat(key: string, options?: Abortable): Promise<ObjectInfo>;
  list(prefix: string, options?: Abortable): AsyncIterable<ObjectInfo>;
  delete(key: string, options?: Abortable): Promise<void>;
  createExclusive(key: string, body: Uint8Array, options?: Abortable): Promise<boolean>;
  /** Capacity of the medium. Only when `capabilities.space`. */
  space?(): Promise<SpaceInfo>;
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
  /**
   * The repository is open: from now on a write never makes its root again (a folder that went
   * away with an unmounted disk is not recreated, empty, for backups to go into); such a write
   * fails with REPO_NOT_FOUND. For storages whose root can vanish.
   */
  holdRoot?(): void;
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

/** One kind of storage, selected by the scheme of a repository location. */
export interface StorageKind {
  /** The URL scheme without `:` (`file`, `s3`). */
  readonly scheme: string;
  /** One line for help texts: what a location of this kind looks like. */
  readonly description: string;
  /** Opens the storage a location names; `location` is the whole string the user gave. */
  open(location: string): Storage;
}

/**
 * The storages a program knows, by URL scheme. A location without a scheme (`/path`, `./path`,
 * `backups`) belongs to the kind registered with `{ paths: true }` (local folders).
 */
export class StorageRegistry {
  readonly #kinds = new Map<string, StorageKind>();
  #forPaths: StorageKind | undefined;

  register(kind: StorageKind, options: { readonly paths?: boolean } = {}): this {
    if (this.#kinds.has(kind.scheme)) throw new Error(`storage ${kind.scheme}:// is already registered`);
    this.#kinds.set(kind.scheme, kind);
    if (options.paths) this.#forPaths = kind;
    return this;
  }

  /** Every registered kind, for help texts: `file:// or a path — a local folder`. */
  kinds(): readonly StorageKind[] {
    return [...this.#kinds.values()];
  }

  /** The storage a location names. An unknown scheme fails with USAGE naming the supported ones. */
  open(location: string): Storage {
    const scheme = schemeOf(location);
    const kind = scheme === undefined ? this.#forPaths : this.#kinds.get(scheme);
    if (!kind) {
      const known = this.kinds().map((k) => `${k.scheme}://`);
      throw new StrataError(
        'USAGE',
        scheme === undefined
          ? `repository location ${JSON.stringify(location)} has no scheme and no storage takes plain paths (supported: ${known.join(', ')})`
          : `repository location ${JSON.stringify(redactLocation(location))}: no storage for ${scheme}:// (supported: ${[...known, ...(this.#forPaths ? ['a folder path'] : [])].join(', ')})`,
      );
    }
    return kind.open(location);
  }
}

/**
 * The scheme of a location, lower-cased, or undefined for a plain path. A Windows drive letter
 * (`C:\backups`) is a path, not a scheme; so is anything whose "scheme" is one character long.
 */
export function schemeOf(location: string): string | undefined {
  const match = /^([A-Za-z][A-Za-z0-9+.-]+):/.exec(location);
  return match ? match[1]!.toLowerCase() : undefined;
}

/** A location as messages may show it: without a password in its user part. */
function redactLocation(location: string): string {
  // Up to the last '@': a secret (an AWS secret key, say) may hold '/'.
  return location.replace(/^([^:]+:\/\/[^/@:]*):.*@/, '$1:***@');
}

/**
 * Whether two storages are one: the same location, or a marker written through `a` is seen
 * through `b` (a link to the folder, a path or a bucket prefix written two ways). Writes only when
 * asked; a storage that cannot be written to (a reader's) answers false.
 */
export async function isSameStorage(a: Storage, b: Storage): Promise<boolean> {
  if (a.location === b.location) return true;
  const key = `.tmp/same-storage-${randomBytes(8).toString('hex')}`;
  try {
    await a.put(key, Buffer.from('strata: a marker to tell whether two locations are one repository\n'));
  } catch {
    return false;
  }
  try {
    return await b.stat(key).then(
      () => true,
      () => false,
    );
  } finally {
    await a.delete(key).catch(() => undefined);
  }
}
