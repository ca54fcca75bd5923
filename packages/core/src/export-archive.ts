import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import type { BackupRecord } from './catalog.js';
import { StrataError } from './errors.js';
import { readTar, tarHeaderBytes, tarPadding, tarTrailer } from './format/tar.js';

/**
 * The container of `strata export`: `.tar.gz` (a tar of the files, gzip-compressed) or `.zip`
 * (stored, not compressed again: artifacts already are). Both hold the same files:
 *
 *   strata-export.json          which backups, their catalog entries, the repository's key check
 *   RESTORE.md                  how to restore each database, with Strata and without it
 *   backups/<database>/<file>   the artifacts, byte for byte as in the repository
 */
export type ExportFormat = 'tar.gz' | 'zip';

export function exportFormatOf(file: string): ExportFormat {
  if (/\.tar\.gz$|\.tgz$/i.test(file)) return 'tar.gz';
  if (/\.zip$/i.test(file)) return 'zip';
  throw new StrataError('USAGE', `export: ${file} must end in .tar.gz or .zip`);
}

/** A file to put into the container: a name, its size, and its bytes on demand. */
export interface ExportEntry {
  readonly name: string;
  readonly size: number;
  open(): Promise<AsyncIterable<Uint8Array>>;
}

/** Writes the container to `file` (through a temporary name, renamed when complete). */
export async function writeExportContainer(file: string, entries: readonly ExportEntry[]): Promise<void> {
  const temp = `${file}.partial`;
  const out = createWriteStream(temp, { mode: 0o600 });
  const write = async (chunk: Uint8Array): Promise<void> => {
    if (!out.write(chunk)) await once(out, 'drain');
  };
  try {
    if (exportFormatOf(file) === 'tar.gz') {
      const gzip = zlib.createGzip({ level: 1 });
      const piped = gzip.pipe(out);
      const gz = async (chunk: Uint8Array): Promise<void> => {
        if (!gzip.write(chunk)) await once(gzip, 'drain');
      };
      for (const entry of entries) {
        await gz(tarHeaderBytes({ name: entry.name, size: entry.size, mtime: new Date() }));
        let seen = 0;
        for await (const chunk of await entry.open()) {
          seen += chunk.byteLength;
          await gz(chunk);
        }
        if (seen !== entry.size) throw new StrataError('ARTIFACT_CORRUPT', `export: ${entry.name} has ${seen} bytes, expected ${entry.size}`);
        const pad = tarPadding(entry.size);
        if (pad.length > 0) await gz(pad);
      }
      await gz(tarTrailer());
      gzip.end();
      await once(piped, 'finish');
    } else {
      await writeZip(entries, write);
      out.end();
      await once(out, 'finish');
    }
    const handle = await fs.open(temp, 'r+');
    await handle.sync();
    await handle.close();
    await fs.rename(temp, file);
  } catch (err) {
    out.destroy();
    await fs.rm(temp, { force: true });
    throw err;
  }
}

/** Minimal zip writer: stored entries, sizes and CRC-32 in a data descriptor after each file. */
async function writeZip(entries: readonly ExportEntry[], write: (chunk: Uint8Array) => Promise<void>): Promise<void> {
  const central: Buffer[] = [];
  let offset = 0;
  const crc32 = (zlib as unknown as { crc32: (data: Uint8Array, value?: number) => number }).crc32;
  for (const entry of entries) {
    if (entry.size >= 0xffffffff || offset >= 0xffffffff) throw new StrataError('USAGE', 'export: the export is larger than 4 GiB; use .tar.gz, which has no such limit');
    const name = Buffer.from(entry.name, 'utf8');
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0808, 6); // data descriptor follows; names are UTF-8
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt16LE(name.length, 26);
    await write(local);
    await write(name);
    let crc = 0;
    let size = 0;
    for await (const chunk of await entry.open()) {
      crc = crc32(chunk, crc);
      size += chunk.byteLength;
      await write(chunk);
    }
    const descriptor = Buffer.alloc(16);
    descriptor.writeUInt32LE(0x08074b50, 0);
    descriptor.writeUInt32LE(crc >>> 0, 4);
    descriptor.writeUInt32LE(size, 8);
    descriptor.writeUInt32LE(size, 12);
    await write(descriptor);
    const header = Buffer.alloc(46);
    header.writeUInt32LE(0x02014b50, 0);
    header.writeUInt16LE(20, 4);
    header.writeUInt16LE(20, 6);
    header.writeUInt16LE(0x0808, 8);
    header.writeUInt32LE(crc >>> 0, 16);
    header.writeUInt32LE(size, 20);
    header.writeUInt32LE(size, 24);
    header.writeUInt16LE(name.length, 28);
    header.writeUInt32LE(offset, 42);
    central.push(header, name);
    offset += 30 + name.length + size + 16;
  }
  const directory = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  await write(directory);
  await write(end);
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
  if (exportFormatOf(file) === 'tar.gz') {
    yield* readTarGz(file);
    return;
  }
  yield* readZip(file, size);
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
 * The entries of a stored (uncompressed) zip as Strata writes it. Every offset and size read from
 * the file is checked against the file's size before it is used: a crafted directory size
 * (0xFFFFFFF0) once made the allocation itself abort the process.
 */
async function* readZip(file: string, size: number): AsyncGenerator<ImportedEntry> {
  const damaged = (what: string): StrataError => new StrataError('ARTIFACT_CORRUPT', `import: ${file} is not a zip Strata can read (${what})`);
  const handle = await fs.open(file, 'r');
  try {
    const tailSize = Math.min(size, 22 + 65535);
    const tail = Buffer.alloc(tailSize);
    await handle.read(tail, 0, tailSize, size - tailSize);
    const at = tail.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    if (at < 0 || at + 22 > tail.length) throw new StrataError('ARTIFACT_FOREIGN', `import: ${file} is not a zip file`);
    const count = tail.readUInt16LE(at + 10);
    const dirSize = tail.readUInt32LE(at + 12);
    const dirOffset = tail.readUInt32LE(at + 16);
    if (dirOffset + dirSize > size) throw damaged('its directory lies outside the file');
    const directory = Buffer.alloc(dirSize);
    await handle.read(directory, 0, dirSize, dirOffset);
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > directory.length || directory.readUInt32LE(p) !== 0x02014b50) throw new StrataError('ARTIFACT_CORRUPT', `import: ${file} has a damaged zip directory`);
      if (directory.readUInt16LE(p + 10) !== 0) throw new StrataError('ARTIFACT_FOREIGN', `import: ${file} holds compressed zip entries; Strata exports store them`);
      const entrySize = directory.readUInt32LE(p + 24);
      const nameLength = directory.readUInt16LE(p + 28);
      const extra = directory.readUInt16LE(p + 30) + directory.readUInt16LE(p + 32);
      const localOffset = directory.readUInt32LE(p + 42);
      if (p + 46 + nameLength > directory.length) throw damaged('an entry name runs past the directory');
      const name = directory.toString('utf8', p + 46, p + 46 + nameLength);
      p += 46 + nameLength + extra;
      if (localOffset + 30 > size) throw damaged(`entry ${name} starts outside the file`);
      const local = Buffer.alloc(30);
      await handle.read(local, 0, 30, localOffset);
      const dataStart = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
      if (dataStart + entrySize > size) throw damaged(`entry ${name} runs past the end of the file`);
      yield { name, size: entrySize, body: entrySize === 0 ? Readable.from([]) : createReadStream(file, { start: dataStart, end: dataStart + entrySize - 1 }) };
    }
  } finally {
    await handle.close();
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
  readonly encryption: { profile: string; keyCheck?: string; keyCheckSha256?: string };
  readonly backups: readonly BackupRecord[];
}
