import { createHash, randomBytes } from 'node:crypto';
import { close, createReadStream, createWriteStream, fsync, open } from 'node:fs';
import { promisify } from 'node:util';
import * as fs from 'node:fs/promises';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import type yauzl from 'yauzl';
import type { BackupRecord, SegmentRecord } from './catalog.js';
import { StrataError, errorText, isAbortError, redactable } from './errors.js';
import type { Abortable } from './storage.js';
import { readTar, tarHeaderBytes, tarPadding, tarTrailer } from './format/tar.js';

/**
 * The container of `strata export`: `.tar.gz` (a tar of the files, gzip-compressed) or `.zip`
 * (stored, not compressed again: artifacts already are). Both hold the same files:
 *
 *   strata-export.json          which backups, their catalog entries, the repository's key check
 *   RESTORE.md                  how to restore each database, with Strata and without it
 *   backups/<database>/<file>   the artifacts, byte for byte as in the repository
 *   backups/<database>/segments/<file>   the segments of the bases among them, likewise
 *   backups/<database>/log/<file>        the archived log (write-ahead log) those bases replay, likewise
 */
export type ExportFormat = 'tar.gz' | 'zip';

export function exportFormatOf(file: string, operation: 'export' | 'import' = 'export'): ExportFormat {
  if (/\.tar\.gz$|\.tgz$/i.test(file)) return 'tar.gz';
  if (/\.zip$/i.test(file)) return 'zip';
  throw new StrataError('USAGE', operation === 'export' ? `export: ${file} must end in .tar.gz or .zip` : `import: ${file} is not an export of Strata (its name ends neither in .tar.gz nor in .zip)`);
}

/** A file to put into the container: a name, its size, and its bytes on demand. */
export interface ExportEntry {
  readonly name: string;
  readonly size: number;
  open(options: Abortable): Promise<AsyncIterable<Uint8Array>>;
}

/** Options of {@link writeExportContainer}. */
export interface ExportContainerOptions extends Abortable {
  /**
   * Whether a file that appears at `file` while the export runs (another export, or any program)
   * is replaced by this one. Without it the export fails with TARGET_EXISTS and leaves that file
   * as it is: a caller that refused to replace a file found before the export must not replace
   * one that came later.
   */
  readonly replace?: boolean;
}

/**
 * Writes the container to `file` through a temporary file of this run's own in the same folder,
 * put in place only when complete. When `signal` aborts, reading and writing stop, the temporary
 * file goes, and the export fails with ABORTED.
 */
export async function writeExportContainer(file: string, entries: readonly ExportEntry[], options: ExportContainerOptions = {}): Promise<void> {
  const { signal, replace = true } = options;
  if (signal?.aborted) throw interruption(signal);
  const format = exportFormatOf(file);
  // A name no other run uses (two exports to the same --out each write their own file, and
  // neither removes or renames the other's), created exclusively, so it is never opened through
  // whatever else is at that name, such as a link planted in a shared folder. Created first, so a
  // folder that cannot be written to is an error that says so, not a stream failing after the
  // backups were read. Same folder: the rename that puts it in place stays on one filesystem.
  const temp = `${file}.${randomBytes(6).toString('hex')}.partial`;
  const fd = await promisify(open)(temp, 'wx', 0o600).catch((err: NodeJS.ErrnoException) => {
    throw new StrataError('IO', `export: cannot write ${file} (${err.code ?? err.message}); give --out a file in a folder you can write to`, { cause: err });
  });
  // Written, synced and closed through this one descriptor: nothing is opened by name again. (A
  // stream over a FileHandle it does not close keeps the handle's close() waiting for ever.)
  const out = createWriteStream('', { fd, autoClose: false });
  // Ends every wait of the export at once, its reason the error the export fails with: a write
  // that fails later (a full disk) rather than the process, or an interruption. (Racing each wait
  // against a promise that never settles kept every race alive until the export ended.)
  const stop = new AbortController();
  out.once('error', (err: NodeJS.ErrnoException) => stop.abort(new StrataError('IO', `export: writing ${file} failed (${err.code ?? err.message}); nothing was kept`, { cause: err })));
  const onAbort = (): void => stop.abort(interruption(signal));
  signal?.addEventListener('abort', onAbort, { once: true });
  const halted = { signal: stop.signal };
  let gzip: zlib.Gzip | undefined;
  let placed = false;
  try {
    if (format === 'tar.gz') {
      const compressor = (gzip = zlib.createGzip({ level: 1 }));
      const piped = compressor.pipe(out);
      const gz = async (chunk: Uint8Array): Promise<void> => {
        if (!compressor.write(chunk)) await once(compressor, 'drain', halted);
      };
      for (const entry of entries) {
        await gz(tarHeaderBytes({ name: entry.name, size: entry.size, mtime: new Date() }));
        stop.signal.throwIfAborted();
        for await (const chunk of exactly(await entry.open(halted), entry.size, entry.name)) await gz(chunk);
        const pad = tarPadding(entry.size);
        if (pad.length > 0) await gz(pad);
      }
      await gz(tarTrailer());
      compressor.end();
      await once(piped, 'finish', halted);
    } else {
      await writeZip(entries, out, stop.signal);
    }
    await promisify(fsync)(fd);
    // Interrupted while the file was made durable: it is still not put in place.
    stop.signal.throwIfAborted();
    await putInPlace(temp, file, replace);
    placed = true;
  } catch (err) {
    // Decided before the streams go: destroying one with a write in flight fails that write too.
    const reason: unknown = stop.signal.aborted ? stop.signal.reason : err;
    gzip?.destroy();
    out.destroy();
    throw reason;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await promisify(close)(fd).catch(() => undefined);
    if (!placed) await fs.rm(temp, { force: true }).catch(() => undefined);
  }
}

/**
 * Renames the complete temporary file to `file`; without `replace`, links it there instead, which
 * fails rather than replace a file that appeared meanwhile. A filesystem without hard links
 * checks first and renames (a narrower window, the best it allows).
 */
async function putInPlace(temp: string, file: string, replace: boolean): Promise<void> {
  if (replace) return fs.rename(temp, file);
  const appeared = (): StrataError =>
    new StrataError('TARGET_EXISTS', `export: ${file} appeared while this export ran (another export or program wrote it) and was left as it is; give another --out, or --force to replace it`);
  try {
    await fs.link(temp, file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw appeared();
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
    if (await fs.lstat(file).then(() => true, () => false)) throw appeared();
    return fs.rename(temp, file);
  }
  await fs.rm(temp, { force: true });
}

function interruption(signal: AbortSignal | undefined): StrataError {
  return new StrataError('ABORTED', 'export: interrupted; nothing was kept', { cause: signal?.reason });
}

/**
 * A zip of stored (uncompressed: artifacts are compressed already) entries, through yazl, which
 * writes ZIP64 records when an entry or the archive passes 4 GiB, and computes CRC-32 itself on
 * every Node this project supports.
 */
async function writeZip(entries: readonly ExportEntry[], out: NodeJS.WritableStream, stop: AbortSignal): Promise<void> {
  // yazl and yauzl are loaded by the zip's writer and reader: every other run of strata goes without them.
  const { default: yazl } = await import('yazl');
  const zip = new yazl.ZipFile();
  const sources: Readable[] = [];
  let fail: (err: unknown) => void = () => undefined;
  const done = new Promise<void>((resolve, reject) => {
    fail = reject;
    // yazl reports a stream that was not as long as it was told on the zip itself.
    zip.on('error', reject);
    zip.outputStream.on('error', reject);
    out.on('error', reject);
    out.on('finish', resolve);
  });
  // Awaited once every entry is added; a write that fails before then must not go unhandled meanwhile.
  done.catch(() => undefined);
  const onStop = (): void => fail(stop.reason);
  stop.addEventListener('abort', onStop, { once: true });
  zip.outputStream.pipe(out);
  // yazl reads each entry's stream only when it writes that entry, and never listens for its
  // errors: a read that fails (a storage connection cut, a size that does not match) would
  // otherwise be an unhandled 'error' that ends the process and leaves the partial file. Each
  // entry is opened only when yazl reaches it (opening all of them first held a file or a
  // connection per object for the whole export), and its size is checked as it passes so a
  // changed artifact cannot make a zip that lies about itself.
  for (const entry of entries) {
    const source = Readable.from(openedWhenRead(entry, stop));
    source.once('error', fail);
    sources.push(source);
    zip.addReadStream(source, entry.name, { compress: false, size: entry.size, mtime: new Date() });
  }
  zip.end();
  try {
    await done;
  } catch (err) {
    // Nothing more is read once the export has failed: the entry being written lets go of its
    // file or connection, and the later ones were never opened.
    for (const source of sources) source.destroy();
    zip.outputStream.unpipe();
    throw err;
  } finally {
    stop.removeEventListener('abort', onStop);
  }
}

async function* openedWhenRead(entry: ExportEntry, stop: AbortSignal): AsyncGenerator<Uint8Array> {
  stop.throwIfAborted();
  yield* exactly(await entry.open({ signal: stop }), entry.size, entry.name);
}

/** An entry's bytes, checked to be as many as its header said; a read that fails says which entry. */
async function* exactly(source: AsyncIterable<Uint8Array>, size: number, name: string): AsyncGenerator<Uint8Array> {
  let seen = 0;
  try {
    for await (const chunk of source) {
      seen += chunk.byteLength;
      yield chunk;
    }
  } catch (err) {
    if (isAbortError(err)) throw err instanceof StrataError ? err : interruption(undefined);
    // A storage's own error (an object store's broken download) keeps its code and words, and says what it means for the export.
    if (err instanceof StrataError) {
      throw new StrataError(err.code, redactable`export: reading ${name} failed after ${seen} of its ${size} bytes: ${errorText(err)}; nothing was kept, try the export again`, { cause: err, details: err.details });
    }
    const cause = err as NodeJS.ErrnoException;
    throw new StrataError('IO', `export: reading ${name} failed after ${seen} of its ${size} bytes (${cause.code ?? cause.message}); nothing was kept, try the export again`, { cause: err });
  }
  if (seen !== size) throw new StrataError('ARTIFACT_CORRUPT', `export: ${name} has ${seen} bytes, expected ${size}`);
}

/** One file read back from a container; consume `body` before asking for the next. */
export interface ImportedEntry {
  readonly name: string;
  readonly size: number;
  readonly body: AsyncIterable<Uint8Array>;
}

/** Reads a container written by {@link writeExportContainer} (or any tar.gz / stored zip). */
export async function* readExportContainer(file: string): AsyncGenerator<ImportedEntry> {
  let size: number;
  try {
    const st = await fs.stat(file);
    if (!st.isFile()) throw new StrataError('USAGE', `import: ${file} is not a file`);
    size = st.size;
  } catch (err) {
    if (err instanceof StrataError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new StrataError('USAGE', code === 'ENOENT' ? `import: ${file} does not exist` : `import: ${file} cannot be read (${code ?? (err as Error).message})`, { cause: err });
  }
  if (exportFormatOf(file, 'import') === 'tar.gz') {
    yield* readTarGz(file);
    return;
  }
  yield* readZip(file);
}

/** The entries of a .tar.gz; a file that is not gzip, or a damaged one, is a clear error. */
async function* readTarGz(file: string): AsyncGenerator<ImportedEntry> {
  const source = createReadStream(file);
  const gunzip = zlib.createGunzip();
  // pipe() does not forward errors: a read error must end the gunzip stream, not the process.
  source.on('error', (err) => gunzip.destroy(err));
  source.pipe(gunzip);
  try {
    for await (const entry of readTar(gunzip)) yield entry;
  } catch (err) {
    if (err instanceof StrataError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('Z_')) {
      throw new StrataError('ARTIFACT_FOREIGN', `import: ${file} is not a gzip-compressed tar (${(err as Error).message}); give the .tar.gz or .zip that strata export wrote`, { cause: err });
    }
    throw new StrataError('IO', `import: reading ${file} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    source.destroy();
  }
}

/**
 * The entries of a zip, in the order of its directory, through yauzl, which checks every offset and
 * size against the file (a crafted directory size of 0xFFFFFFF0 once made a hand-written reader's
 * allocation abort the process) and reads ZIP64. Strata writes stored entries; a compressed one
 * is inflated by yauzl like any other.
 */
async function* readZip(file: string): AsyncGenerator<ImportedEntry> {
  const { default: zipReader } = await import('yauzl');
  let zip: yauzl.ZipFile;
  try {
    zip = await new Promise<yauzl.ZipFile>((resolve, reject) => zipReader.open(file, { lazyEntries: true, autoClose: false, strictFileNames: true, validateEntrySizes: true }, (err, z) => (err ? reject(err) : resolve(z))));
  } catch (err) {
    throw new StrataError('ARTIFACT_FOREIGN', `import: ${file} is not a zip Strata can read (${(err as Error).message})`, { cause: err });
  }
  try {
    for (;;) {
      const entry = await new Promise<yauzl.Entry | undefined>((resolve, reject) => {
        const onEntry = (e: yauzl.Entry): void => {
          zip.off('end', onEnd);
          zip.off('error', onError);
          resolve(e);
        };
        const onEnd = (): void => {
          zip.off('entry', onEntry);
          zip.off('error', onError);
          resolve(undefined);
        };
        const onError = (err: Error): void => {
          zip.off('entry', onEntry);
          zip.off('end', onEnd);
          reject(new StrataError('ARTIFACT_CORRUPT', `import: ${file} has a damaged zip directory (${err.message})`, { cause: err }));
        };
        zip.once('entry', onEntry);
        zip.once('end', onEnd);
        zip.once('error', onError);
        zip.readEntry();
      });
      if (!entry) return;
      if (entry.fileName.endsWith('/')) continue;
      const body = await new Promise<NodeJS.ReadableStream>((resolve, reject) =>
        zip.openReadStream(entry, (err, stream) => (err ? reject(new StrataError('ARTIFACT_CORRUPT', `import: ${entry.fileName} in ${file} does not read (${err.message})`, { cause: err })) : resolve(stream))),
      );
      yield { name: entry.fileName, size: entry.uncompressedSize, body: body as AsyncIterable<Uint8Array> };
    }
  } finally {
    zip.close();
  }
}

/** SHA-256 of bytes as they pass, for checking artifacts on the way in. */
export async function* hashing(source: AsyncIterable<Uint8Array>, sha: ReturnType<typeof createHash>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    sha.update(chunk);
    yield chunk;
  }
}

/** What strata-export.json says. */
export interface ExportManifest {
  readonly format: 'strata-export';
  readonly version: 1;
  readonly createdAt: string;
  /**
   * How the artifacts are encrypted: the profile, and what opens them: the key check of a
   * repository from before key files, or the key files (armored OpenPGP messages, safe to carry)
   * that hold the data keys the backups need.
   */
  readonly encryption: {
    profile: string;
    keyCheck?: string;
    keyCheckSha256?: string;
    keyFiles?: readonly { id: string; label: string | null; createdAt: string; dataKeys: readonly string[]; message: string }[];
  };
  readonly backups: readonly BackupRecord[];
  /**
   * The segments of continuous protection after the bases among `backups`, chain order (absent
   * when there are none): restores as of a time reach as far in the importing repository.
   */
  readonly segments?: readonly SegmentRecord[];
  /**
   * The archived log files (a server's write-ahead log, see log-archive.ts) the base backups among
   * `backups` replay, byte for byte as in the repository (absent when there are none): without
   * them a base backup of a server's files cannot even become consistent.
   */
  readonly logFiles?: readonly ExportedLogFile[];
}

/** One archived log file in an export. */
export interface ExportedLogFile {
  readonly database: string;
  /** The name the server gave it. */
  readonly name: string;
  /** SHA-256 of its bytes (decrypted and decompressed); also part of its key. */
  readonly sha256: string;
  /** Its key, in the repository and in the export. */
  readonly key: string;
  readonly storedBytes: number;
  /** The data key it is encrypted under (absent when unencrypted). */
  readonly keyId?: string;
}
