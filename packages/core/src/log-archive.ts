import { createHash } from 'node:crypto';
import { getCodec } from './compression.js';
import type { CodecName } from './compression.js';
import { decryptStream, encryptStream } from './encryption.js';
import { StrataError, isStrataError, wrapError } from './errors.js';
import { validateDatabaseName } from './naming.js';
import type { RepositoryContext } from './repository-context.js';

/**
 * The log archive: files a database server hands over one by one as it writes its log (a
 * write-ahead log's segments and its small companion files), kept so that a restore can replay
 * the log from a base backup to any moment. The server names the files; core neither reads nor
 * orders them (the engine does: it knows which files follow which).
 *
 * Each file is one object, compressed then encrypted under the repository's data key, with no
 * container around it, so that `gpg -d | zstd -d` by hand gives the file back (docs/FORMAT.md):
 *
 *   `backups/{database}/log/{name}_{sha256 of the file}_{data key id | plain}{.zst|.gz}{.gpg}`
 *
 * The SHA-256 in the name makes a push idempotent without reading anything back (the server
 * retries a file whose earlier push it did not see succeed: same bytes, same name, nothing to
 * do) and lets a second file under the same name be refused by a listing alone, as pgBackRest
 * does. A fetch checks the bytes it decrypted against it. Files are not in the catalog: a push
 * per log file (every few seconds on a busy server) must not take the repository lock.
 *
 * A file still being written (streamed by `wal-receive`) is kept as a *partial*, under
 * `{name}.received-{bytes received so far, 8+ hex digits}`: written again whenever more arrived,
 * each new one removing the older ones, and used only while the complete file is absent. The
 * received count in the name orders the versions without reading them, and tells `health` how
 * far the archive reaches inside the file. {@link list} reports a partial under the name of the
 * file it stands for, with `partial` set, so that callers treat it as that file.
 */

/** One file of the log archive. */
export interface LogFile {
  /** The name the server gave it (`000000010000000000000003`). */
  readonly name: string;
  /** SHA-256 (hex) of the file's bytes. */
  readonly sha256: string;
  /** Its storage key. */
  readonly key: string;
  /** Bytes on storage (compressed, encrypted). */
  readonly storedBytes: number;
  /** When storage last wrote it (ISO), when it knows. */
  readonly storedAt?: string;
  /** Set for a partial: the file as received so far (its first `receivedBytes` bytes hold data). */
  readonly partial?: { readonly receivedBytes: number };
}

/** What a push did. */
export interface LogPushResult {
  /** `stored`: written now; `present`: the same bytes were already there (a retry). */
  readonly status: 'stored' | 'present';
  readonly file: LogFile;
}

/**
 * What the engine checks of a file before it is archived: it throws (and nothing is stored) when
 * `bytes` cannot be the file `name` of this database's log. Core stores whatever it is handed and
 * refuses a second file under a name it holds, so a wrong file accepted once would keep the right
 * one out for good; only the engine can tell the two apart. `peer` gives the first `length` bytes
 * of one other complete file of the same archive whose name `accept` takes (undefined when there is
 * none), for what every file of one server's log shares.
 */
export type LogFileCheck = (
  file: { readonly database: string; readonly name: string; readonly bytes: Uint8Array },
  peer: (accept: (name: string) => boolean, length: number) => Promise<{ name: string; head: Uint8Array } | undefined>,
) => Promise<void>;

const NAME = /^[A-Za-z0-9][A-Za-z0-9.-]{0,199}$/;
const KEY = /^backups\/([^/]+)\/log\/([A-Za-z0-9][A-Za-z0-9.-]*)_([0-9a-f]{64})_([A-Za-z0-9-]+)(\.zst|\.gz)?(\.gpg)?$/;
/** What stands in the key-id place for files written unencrypted, or under the passphrase itself. */
const NO_KEY_ID = 'plain';
/** Log files up to this size are compressed on the pushing thread (see CompressOptions.onThisThread). */
const MAX_COMPRESSED_HERE = 64 * 1024 * 1024;

/** What a partial's stored name adds to the name of the file it stands for. */
export const PARTIAL_MARK = '.received-';
const PARTIAL = /^(.+)\.received-([0-9a-f]{8,12})$/;

/** The stored name of a partial of `name` holding its first `receivedBytes` bytes. */
export function partialName(name: string, receivedBytes: number): string {
  return `${name}${PARTIAL_MARK}${receivedBytes.toString(16).padStart(8, '0')}`;
}

/** The folder of one database's log files. */
export function logPrefix(database: string): string {
  return `backups/${database}/log/`;
}

function checkName(name: string): void {
  if (!NAME.test(name)) throw new StrataError('USAGE', `log archive: ${JSON.stringify(name.slice(0, 80))} is not a log file name (letters, digits, dots and dashes)`);
}

function parseLogKey(key: string, size: number, modified?: Date): (LogFile & { keyId: string | undefined; codec: CodecName; encrypted: boolean }) | undefined {
  const m = KEY.exec(key);
  if (!m) return undefined;
  const partial = PARTIAL.exec(m[2]!);
  return {
    name: partial ? partial[1]! : m[2]!,
    ...(partial ? { partial: { receivedBytes: parseInt(partial[2]!, 16) } } : {}),
    sha256: m[3]!,
    key,
    storedBytes: size,
    ...(modified ? { storedAt: modified.toISOString() } : {}),
    keyId: m[4] === NO_KEY_ID ? undefined : m[4],
    codec: m[5] === '.zst' ? 'zstd' : m[5] === '.gz' ? 'gzip' : 'none',
    encrypted: m[6] !== undefined,
  };
}

/** What a log file's key says of it: its database, name, SHA-256 and data key; undefined for keys Strata never writes. */
export function describeLogKey(key: string): { database: string; name: string; sha256: string; keyId: string | undefined; encrypted: boolean } | undefined {
  const m = KEY.exec(key);
  if (!m || !NAME.test(m[2]!)) return undefined;
  const partial = PARTIAL.exec(m[2]!);
  return { database: m[1]!, name: partial ? partial[1]! : m[2]!, sha256: m[3]!, keyId: m[4] === NO_KEY_ID ? undefined : m[4], encrypted: m[6] !== undefined };
}

export class LogArchive {
  readonly #ctx: RepositoryContext;

  constructor(ctx: RepositoryContext) {
    this.#ctx = ctx;
  }

  /** Every file of a database's log archive, by name (then by key). */
  async list(database: string, options: { signal?: AbortSignal } = {}): Promise<LogFile[]> {
    validateDatabaseName(database);
    return (await this.#versions(logPrefix(database), options.signal)).map(({ name, sha256, key, storedBytes, storedAt, partial }) => ({ name, sha256, key, storedBytes, ...(storedAt ? { storedAt } : {}), ...(partial ? { partial } : {}) }));
  }

  async #versions(prefix: string, signal?: AbortSignal): Promise<NonNullable<ReturnType<typeof parseLogKey>>[]> {
    const out: NonNullable<ReturnType<typeof parseLogKey>>[] = [];
    for await (const object of this.#ctx.storage.list(prefix, signal ? { signal } : {})) {
      const parsed = parseLogKey(object.key, object.size, object.modified);
      if (parsed && parsed.key.startsWith(prefix)) out.push(parsed);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.key < b.key ? -1 : 1));
  }

  /** The stored versions of one name (normally one); partials not included. */
  async #named(database: string, name: string, signal?: AbortSignal) {
    return (await this.#versions(`${logPrefix(database)}${name}_`, signal)).filter((f) => f.name === name && !f.partial);
  }

  /** The partials of one name, the one holding the most first. */
  async #partials(database: string, name: string, signal?: AbortSignal) {
    const found = (await this.#versions(`${logPrefix(database)}${name}${PARTIAL_MARK}`, signal)).filter((f) => f.name === name && f.partial);
    return found.sort((a, b) => b.partial!.receivedBytes - a.partial!.receivedBytes || (b.storedAt ?? '').localeCompare(a.storedAt ?? ''));
  }

  /**
   * Stores one log file. Idempotent: the same bytes under the same name succeed without writing.
   * Different bytes under a name already stored fail (LOG_CONFLICT) and change nothing: a server
   * of another history archiving into the same place must not replace what a restore needs.
   * `check` (the engine's) runs before anything is stored, except on a retry of bytes already
   * stored, which changes nothing.
   */
  async push(database: string, name: string, bytes: Uint8Array, options: { signal?: AbortSignal; check?: LogFileCheck } = {}): Promise<LogPushResult> {
    validateDatabaseName(database);
    checkName(name);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const existing = await this.#named(database, name, options.signal);
    const same = existing.find((f) => f.sha256 === sha256);
    if (same) return { status: 'present', file: same };
    // Before the conflict test: a file refused for what it is gets the engine's reason, which says more.
    if (options.check) await options.check({ database, name, bytes }, (accept, length) => this.#peer(database, name, accept, length, options.signal));
    if (existing.length > 0) {
      throw new StrataError(
        'LOG_CONFLICT',
        `log archive: ${database} already holds a different ${name} (SHA-256 ${existing[0]!.sha256.slice(0, 16)}…, this one ${sha256.slice(0, 16)}…); it was not replaced. Is another server (or a restored copy promoted on the same timeline) archiving under the name ${database}?`,
        { details: { database, name } },
      );
    }
    const stored = await this.#store(database, name, name, sha256, bytes, options.signal);
    // Two pushes of different files under one name at once (a promoted copy and the old server)
    // both found none before storing. Without a conditional write, each looks again after its
    // store: one that finds another file removes its own and fails. The other may have looked
    // before this store and succeeded, so yielding is the only answer that leaves one file; when
    // both look late, both yield, and the server's retry of each finds the archive as it is.
    const rivals = (await this.#named(database, name, options.signal)).filter((f) => f.sha256 !== sha256);
    if (rivals.length > 0) {
      await this.remove([stored], options);
      throw new StrataError(
        'LOG_CONFLICT',
        `log archive: another push stored a different ${name} for ${database} at the same moment (SHA-256 ${rivals[0]!.sha256.slice(0, 16)}…, this one ${sha256.slice(0, 16)}…); this one was removed again. Is another server (or a restored copy promoted on the same timeline) archiving under the name ${database}?`,
        { details: { database, name } },
      );
    }
    return { status: 'stored', file: stored };
  }

  /**
   * The first `length` bytes of one complete file of the archive other than `name` whose name
   * `accept` takes: the first such file the listing gives (the listing stops there), read only as
   * far as those bytes, so a check costs one listing page and the start of one object.
   */
  async #peer(database: string, name: string, accept: (name: string) => boolean, length: number, signal?: AbortSignal): Promise<{ name: string; head: Uint8Array } | undefined> {
    const prefix = logPrefix(database);
    let found: NonNullable<ReturnType<typeof parseLogKey>> | undefined;
    for await (const object of this.#ctx.storage.list(prefix, signal ? { signal } : {})) {
      const parsed = parseLogKey(object.key, object.size, object.modified);
      if (parsed && parsed.key.startsWith(prefix) && !parsed.partial && parsed.name !== name && accept(parsed.name)) {
        found = parsed;
        break;
      }
    }
    if (!found) return undefined;
    try {
      return { name: found.name, head: await this.#head(found, length, signal) };
    } catch (err) {
      // A file that cannot be read back (damaged, under a data key this key file lacks) says
      // nothing either way; refusing the push for it would stop archiving.
      if (signal?.aborted || isStrataError(err, 'ABORTED')) throw err;
      return undefined;
    }
  }

  /** The first `length` bytes of a stored file (fewer when it is shorter), unchecked: the rest is not read. */
  async #head(file: NonNullable<ReturnType<typeof parseLogKey>>, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    // Aborted once enough is read: the object's body, decryption and decompression all stop.
    const stop = new AbortController();
    const onAbort = (): void => stop.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const parts: Uint8Array[] = [];
    let got = 0;
    try {
      let bytes: AsyncIterable<Uint8Array> = await this.#ctx.storage.get(file.key, { signal: stop.signal });
      if (file.encrypted) {
        await this.#ctx.unlock();
        const what = `log file ${file.name}`;
        const secret = this.#ctx.vault.keyFor({ id: what, encryption: { profile: this.#ctx.vault.section.profile, ...(file.keyId ? { keyId: file.keyId } : {}) } }, what);
        bytes = decryptStream(bytes, secret!);
      }
      for await (const chunk of getCodec(file.codec).decompress(bytes, stop.signal)) {
        parts.push(chunk);
        got += chunk.length;
        if (got >= length) break;
      }
    } catch (err) {
      throw isStrataError(err) ? err : wrapError(`log archive: reading ${file.key}`, err);
    } finally {
      stop.abort();
      signal?.removeEventListener('abort', onAbort);
    }
    return Buffer.concat(parts).subarray(0, length);
  }

  /** Compresses, encrypts and writes one object under `storedName` (the file's name, or a partial's). */
  async #store(database: string, name: string, storedName: string, sha256: string, bytes: Uint8Array, signal?: AbortSignal): Promise<LogFile> {
    await this.#ctx.unlock();
    const codec = getCodec(this.#ctx.config.compression.codec);
    await this.#ctx.vault.refuseUnencryptedOverKeys();
    const profile = this.#ctx.vault.section.profile;
    const dataKey = profile === 'none' ? undefined : this.#ctx.vault.current('log archive');
    const key = `${logPrefix(database)}${storedName}_${sha256}_${dataKey?.id ?? NO_KEY_ID}${codec.extension}${profile === 'none' ? '' : '.gpg'}`;
    // A log file is one segment (16 MiB by default), most often pushed by a process of its own.
    let body: AsyncIterable<Uint8Array> = codec.compress((async function* () { yield bytes; })(), this.#ctx.config.compression.level, signal, { onThisThread: bytes.byteLength <= MAX_COMPRESSED_HERE });
    if (profile !== 'none') body = encryptStream(body, dataKey!.secret, profile);
    try {
      const info = await this.#ctx.storage.put(key, body, signal ? { signal } : {});
      return { name, sha256, key, storedBytes: info.size };
    } catch (err) {
      throw isStrataError(err) ? err : wrapError(`log archive: storing ${storedName} of ${database}`, err);
    }
  }

  /**
   * Stores what was received so far of a file still being written (its first `receivedBytes`
   * bytes hold data; the rest may be anything, e.g. zeros), replacing the older partials of it.
   * Nothing is written when the complete file is archived already (`present`), or when a partial
   * with these bytes is. A partial never replaces or conflicts with the complete file: that one
   * is pushed with {@link push} as usual, then {@link dropPartials} removes the partials.
   */
  async pushPartial(database: string, name: string, bytes: Uint8Array, receivedBytes: number, options: { signal?: AbortSignal } = {}): Promise<LogPushResult> {
    validateDatabaseName(database);
    checkName(name);
    if (!Number.isSafeInteger(receivedBytes) || receivedBytes < 0 || receivedBytes > bytes.length) throw new StrataError('INTERNAL', `log archive: a partial of ${name} cannot hold ${receivedBytes} of ${bytes.length} bytes`);
    const complete = await this.#named(database, name, options.signal);
    if (complete.length > 0) return { status: 'present', file: complete[0]! };
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const older = await this.#partials(database, name, options.signal);
    const same = older.find((f) => f.sha256 === sha256);
    if (same) return { status: 'present', file: same };
    const file = await this.#store(database, name, partialName(name, receivedBytes), sha256, bytes, options.signal);
    // The new one is whole on storage before the older ones go: a reader always finds one.
    await this.remove(older, options);
    return { status: 'stored', file: { ...file, partial: { receivedBytes } } };
  }

  /** Removes the partials of `name` (once its complete file is archived). */
  async dropPartials(database: string, name: string, options: { signal?: AbortSignal } = {}): Promise<number> {
    validateDatabaseName(database);
    checkName(name);
    const partials = await this.#partials(database, name, options.signal);
    await this.remove(partials, options);
    return partials.length;
  }

  /** Whether the archive holds the complete file `name` (a listing of that name only). */
  async has(database: string, name: string, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    validateDatabaseName(database);
    checkName(name);
    return (await this.#named(database, name, options.signal)).length > 0;
  }

  /**
   * The bytes of one log file, checked against the SHA-256 they were stored under; when only
   * partials of it are archived, the newest partial's; undefined when the archive has neither (a
   * server asks for files that may not exist).
   */
  async fetch(database: string, name: string, options: { signal?: AbortSignal } = {}): Promise<Uint8Array | undefined> {
    validateDatabaseName(database);
    checkName(name);
    const versions = await this.#named(database, name, options.signal);
    if (versions.length === 0) {
      const newest = (await this.#partials(database, name, options.signal))[0];
      return newest ? this.#read(newest, options.signal) : undefined;
    }
    if (versions.length > 1) {
      throw new StrataError('LOG_CONFLICT', `log archive: ${database} holds ${versions.length} different files named ${name}; remove the wrong one (${versions.map((v) => v.key).join(', ')})`);
    }
    return this.#read(versions[0]!, options.signal);
  }

  /** Reads, decrypts, decompresses and checks one stored file (ARTIFACT_CORRUPT when its bytes are not the ones named). */
  async read(file: LogFile, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const parsed = parseLogKey(file.key, file.storedBytes);
    if (!parsed) throw new StrataError('ARTIFACT_FOREIGN', `log archive: ${file.key} is not a log file name Strata writes`);
    return this.#read(parsed, options.signal);
  }

  async #read(file: NonNullable<ReturnType<typeof parseLogKey>>, signal?: AbortSignal): Promise<Uint8Array> {
    const what = `log file ${file.name}`;
    // Set once the file's data key is open: a decryption that fails after that (OpenPGP's integrity
    // check, "Modification detected") means altered bytes, not a wrong passphrase. Files of a
    // repository from before key files are encrypted with the passphrase itself and keep that doubt.
    let keyOpened = false;
    try {
      let bytes: AsyncIterable<Uint8Array> = await this.#ctx.storage.get(file.key, signal ? { signal } : {});
      if (file.encrypted) {
        await this.#ctx.unlock();
        const secret = this.#ctx.vault.keyFor({ id: what, encryption: { profile: this.#ctx.vault.section.profile, ...(file.keyId ? { keyId: file.keyId } : {}) } }, what);
        keyOpened = file.keyId !== undefined;
        bytes = decryptStream(bytes, secret!);
      }
      bytes = getCodec(file.codec).decompress(bytes, signal);
      const parts: Uint8Array[] = [];
      const sha = createHash('sha256');
      for await (const chunk of bytes) {
        sha.update(chunk);
        parts.push(chunk);
      }
      if (sha.digest('hex') !== file.sha256) throw new StrataError('ARTIFACT_CORRUPT', `log archive: ${file.key} does not hold the bytes it was stored with (SHA-256 differs)`);
      return Buffer.concat(parts);
    } catch (err) {
      if (keyOpened && isStrataError(err, 'PASSPHRASE_WRONG')) {
        throw new StrataError('ARTIFACT_CORRUPT', `log archive: ${file.key} was altered: its data key opened, and its decryption's integrity check failed (${err.message})`, { cause: err });
      }
      if (isStrataError(err)) throw err;
      throw new StrataError('ARTIFACT_CORRUPT', `log archive: ${file.key} cannot be read back (${(err as Error).message})`, { cause: err });
    }
  }

  /**
   * Stores a log file byte for byte as another repository stored it (import), under the same key:
   * `present` when this archive holds the same file already (the bytes are drained). A different
   * file under the same name fails with LOG_CONFLICT, as a push does. The caller reads it back
   * ({@link read}) once the data key it is sealed with is in this repository's key file.
   */
  async placeAsIs(file: LogFile, body: AsyncIterable<Uint8Array>, options: { signal?: AbortSignal } = {}): Promise<'stored' | 'present'> {
    const parsed = parseLogKey(file.key, file.storedBytes);
    if (!parsed || parsed.name !== file.name || parsed.sha256 !== file.sha256) throw new StrataError('ARTIFACT_FOREIGN', `log archive: ${file.key} is not a log file name Strata writes`);
    const database = KEY.exec(file.key)![1]!;
    const existing = await this.#named(database, file.name, options.signal);
    const drain = async (): Promise<void> => {
      for await (const _ of body) void _;
    };
    // A partial is worth nothing beside the complete file, and never conflicts with it.
    if (parsed.partial && existing.length > 0) {
      await drain();
      return 'present';
    }
    if (parsed.partial) {
      await this.#ctx.storage.put(file.key, body, options.signal ? { signal: options.signal } : {});
      return 'stored';
    }
    if (existing.some((f) => f.sha256 === file.sha256)) {
      await drain();
      return 'present';
    }
    if (existing.length > 0) {
      await drain();
      throw new StrataError('LOG_CONFLICT', `log archive: ${database} already holds a different ${file.name} (SHA-256 ${existing[0]!.sha256.slice(0, 16)}…, the imported one ${file.sha256.slice(0, 16)}…); it was not replaced`, { details: { database, name: file.name } });
    }
    await this.#ctx.storage.put(file.key, body, options.signal ? { signal: options.signal } : {});
    return 'stored';
  }

  /** Removes log files (retention); missing ones are fine. */
  async remove(files: readonly LogFile[], options: { signal?: AbortSignal } = {}): Promise<void> {
    for (const file of files) {
      if (!parseLogKey(file.key, file.storedBytes)) throw new StrataError('INTERNAL', `log archive: ${file.key} is not a log file`);
      await this.#ctx.storage.delete(file.key, options.signal ? { signal: options.signal } : {});
    }
  }
}
