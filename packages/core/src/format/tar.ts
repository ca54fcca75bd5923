import { StrataError, named, redactable } from '../errors.js';
import { ByteReader } from './byte-reader.js';

/**
 * A minimal POSIX tar (ustar + pax) writer and a strict reader.
 *
 * We write only regular files, so the reader accepts only regular files (plus pax headers) and
 * refuses everything a hostile archive could use against a restore: links, devices, folders,
 * absolute names, `..` segments. GNU tar, bsdtar and busybox tar read what we write.
 */

const BLOCK = 512;
const ZERO_BLOCK = Buffer.alloc(BLOCK);
/** The longest entry name we accept; our own names are short, a giant one means a crafted archive. */
const MAX_NAME_BYTES = 1024;
/** Pax headers of our own are a few hundred bytes; a huge one is an attack on memory. */
const MAX_PAX_BYTES = 64 * 1024;

/** One entry to write: its name inside the archive and the exact number of body bytes. */
export interface TarEntryHeader {
  name: string;
  size: number;
  /** Modification time recorded in the header (defaults to the epoch so archives are reproducible). */
  mtime?: Date;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function writeString(block: Buffer, offset: number, width: number, value: string): void {
  block.write(value, offset, width, 'utf8');
}

function checksum(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum;
}

function ustarHeader(name: string, size: number, mtime: Date, type: string): Buffer {
  const block = Buffer.alloc(BLOCK);
  writeString(block, 0, 100, name);
  writeString(block, 100, 8, octal(0o644, 8));
  writeString(block, 108, 8, octal(0, 8));
  writeString(block, 116, 8, octal(0, 8));
  // Sizes past 8 GiB do not fit 11 octal digits; those go through the pax "size" record instead.
  writeString(block, 124, 12, octal(size < 0o77777777777 ? size : 0, 12));
  writeString(block, 136, 12, octal(Math.floor(mtime.getTime() / 1000), 12));
  writeString(block, 156, 1, type);
  writeString(block, 257, 6, 'ustar\0');
  writeString(block, 263, 2, '00');
  writeString(block, 148, 8, octal(checksum(block), 7) + ' ');
  return block;
}

function paxRecord(key: string, value: string): string {
  // Each record is "<len> <key>=<value>\n" where <len> counts itself, so iterate to a fixed point.
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

function padding(size: number): Buffer {
  const rest = size % BLOCK;
  return rest === 0 ? Buffer.alloc(0) : ZERO_BLOCK.subarray(0, BLOCK - rest);
}

/** The header bytes (pax extension if needed, then ustar) that precede an entry's body. */
export function tarHeaderBytes(entry: TarEntryHeader): Buffer {
  validateEntryName(entry.name);
  const mtime = entry.mtime ?? new Date(0);
  const needsPax = Buffer.byteLength(entry.name) > 99 || !/^[\x20-\x7e]*$/.test(entry.name) || entry.size >= 0o77777777777;
  const parts: Buffer[] = [];
  if (needsPax) {
    const records = paxRecord('path', entry.name) + paxRecord('size', String(entry.size));
    const pax = Buffer.from(records, 'utf8');
    parts.push(ustarHeader('PaxHeader/entry', pax.length, mtime, 'x'), pax, padding(pax.length));
  }
  const shortName = needsPax ? entry.name.replace(/[^\x20-\x7e]/g, '_').slice(0, 99) : entry.name;
  parts.push(ustarHeader(shortName, entry.size, mtime, '0'));
  return Buffer.concat(parts);
}

/** The zero padding that follows an entry body of `size` bytes. */
export function tarPadding(size: number): Buffer {
  return padding(size);
}

/** The end-of-archive marker: two zero blocks. */
export function tarTrailer(): Buffer {
  return Buffer.alloc(BLOCK * 2);
}

/**
 * Rejects names that could write outside the restore folder when extracted by Strata or by a
 * person with `tar x`: absolute paths, `..` segments, backslashes, NUL and empty segments.
 */
export function validateEntryName(name: string): void {
  const bad =
    name.length === 0 ||
    Buffer.byteLength(name) > MAX_NAME_BYTES ||
    name.startsWith('/') ||
    /^[A-Za-z]:/.test(name) ||
    name.includes('\\') ||
    name.includes('\0') ||
    name.split('/').some((seg) => seg === '..' || seg === '.' || seg === '');
  if (bad) {
    throw new StrataError('ARTIFACT_HOSTILE', redactable`archive: entry name ${named(JSON.stringify(name.slice(0, 200)), 'entry')} is not a plain relative path`);
  }
}

/** One entry as the reader yields it. Consume `body` fully (or not at all) before asking for the next. */
export interface TarEntry {
  readonly name: string;
  readonly size: number;
  readonly body: AsyncIterable<Buffer>;
}

function parseOctal(field: Buffer): number {
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new StrataError('ARTIFACT_CORRUPT', `archive: malformed number field ${JSON.stringify(text.slice(0, 20))}`);
  return parseInt(text, 8);
}

function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    if (space < 0) break;
    const len = parseInt(data.toString('latin1', offset, space), 10);
    if (!Number.isFinite(len) || len <= 0 || offset + len > data.length) {
      throw new StrataError('ARTIFACT_CORRUPT', 'archive: malformed pax header');
    }
    const record = data.toString('utf8', space + 1, offset + len - 1);
    const eq = record.indexOf('=');
    if (eq > 0) out.set(record.slice(0, eq), record.slice(eq + 1));
    offset += len;
  }
  return out;
}

/**
 * Reads a tar stream entry by entry. Throws ARTIFACT_HOSTILE for anything but regular files with
 * plain relative names, ARTIFACT_CORRUPT for bad checksums and truncation.
 */
export async function* readTar(source: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  const reader = new ByteReader(source);
  let pax: Map<string, string> | undefined;
  try {
    for (;;) {
      const header = await reader.readUpTo(BLOCK);
      if (header.length === 0) throw new StrataError('ARTIFACT_CORRUPT', 'archive: truncated (no end-of-archive marker)');
      if (header.length < BLOCK) throw new StrataError('ARTIFACT_CORRUPT', 'archive: truncated inside a header');
      if (header.equals(ZERO_BLOCK)) {
        // End of archive. Read on to the input's end: only zero padding may follow (anything else
        // means an altered or crafted file), and the layers under the tar see their last bytes
        // only when they are asked for them: decryption's integrity check at the end of the
        // message, and the count of bytes read that a reader compares with the catalog.
        for (;;) {
          const rest = await reader.readUpTo(64 * 1024);
          if (rest.length === 0) return;
          if (rest.some((b) => b !== 0)) throw new StrataError('ARTIFACT_CORRUPT', 'archive: data after the end-of-archive marker');
        }
      }
      const stored = parseOctal(header.subarray(148, 156));
      if (stored !== checksum(header)) throw new StrataError('ARTIFACT_CORRUPT', 'archive: header checksum mismatch');
      const type = String.fromCharCode(header[156]!);
      let size = parseOctal(header.subarray(124, 136));
      if (type === 'x' || type === 'g') {
        if (size > MAX_PAX_BYTES) throw new StrataError('ARTIFACT_HOSTILE', `archive: pax header of ${size} bytes is too large`);
        const data = await reader.readUpTo(size);
        if (data.length < size) throw new StrataError('ARTIFACT_CORRUPT', 'archive: truncated inside a pax header');
        await reader.readUpTo(padding(size).length);
        if (type === 'x') pax = parsePax(data);
        continue;
      }
      const rawName = header.toString('utf8', 0, 100).replace(/\0.*$/s, '');
      const prefix = header.toString('utf8', 345, 500).replace(/\0.*$/s, '');
      let name = prefix ? `${prefix}/${rawName}` : rawName;
      if (pax?.has('path')) name = pax.get('path')!;
      if (pax?.has('size')) {
        size = Number(pax.get('size'));
        if (!Number.isSafeInteger(size) || size < 0) throw new StrataError('ARTIFACT_CORRUPT', 'archive: malformed pax size');
      }
      pax = undefined;
      if (type !== '0' && type !== '\0') {
        const what = { '1': 'a hard link', '2': 'a symbolic link', '3': 'a device', '4': 'a device', '5': 'a folder', '6': 'a FIFO' }[type] ?? `type ${JSON.stringify(type)}`;
        throw new StrataError('ARTIFACT_HOSTILE', redactable`archive: entry ${named(JSON.stringify(name.slice(0, 200)), 'entry')} is ${what}; Strata artifacts hold only regular files`);
      }
      validateEntryName(name);
      let consumed = false;
      const body = (async function* () {
        let seen = 0;
        for await (const piece of reader.stream(size)) {
          seen += piece.length;
          yield piece;
        }
        if (seen < size) throw new StrataError('ARTIFACT_CORRUPT', redactable`archive: truncated inside entry ${named(name, 'entry')} (${seen} of ${size} bytes)`);
        consumed = true;
      })();
      yield { name, size, body };
      if (!consumed) {
        // The caller skipped this body: read past it so the next header lines up.
        for await (const _ of body) void _;
      }
      const pad = padding(size).length;
      if (pad > 0 && (await reader.readUpTo(pad)).length < pad) throw new StrataError('ARTIFACT_CORRUPT', 'archive: truncated after an entry');
    }
  } finally {
    await reader.close();
  }
}
