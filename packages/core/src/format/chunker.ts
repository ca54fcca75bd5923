import type { Chunking } from '../engine.js';
import { StrataError } from '../errors.js';

/**
 * Cuts a byte stream into chunks. Fixed chunking yields equal blocks (the last one may be
 * shorter); writer and reader share this so they always agree on boundaries.
 */
export async function* splitChunks(source: AsyncIterable<Uint8Array>, chunking: Chunking): AsyncGenerator<Buffer> {
  for await (const parts of chunkParts(source, chunking)) yield parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/**
 * The same chunks as {@link splitChunks}, each as the views of the source's pieces it spans. A
 * content-defined chunk of 64 KiB read from a pipe's 64 KiB pieces nearly always spans two, and
 * joining them copied (and allocated) the whole stream once more; the writer hashes the pieces
 * as they are, and the compressor copies them into its blocks anyway. Valid as long as the source
 * never reuses a piece it has yielded (SnapshotStream.open).
 */
export async function* chunkParts(source: AsyncIterable<Uint8Array>, chunking: Chunking): AsyncGenerator<Buffer[]> {
  if (chunking.kind === 'content-defined') {
    yield* rowChunks(source, chunking.averageSize);
    return;
  }
  if (chunking.kind !== 'fixed') {
    const kind = (chunking as { kind: string }).kind;
    throw new StrataError('ARTIFACT_FOREIGN', `chunking ${JSON.stringify(kind)} is not supported by this version of Strata; upgrade Strata`, { details: { newerFormat: kind } });
  }
  const size = chunking.size;
  if (!Number.isInteger(size) || size < 512 || size > 64 * 1024 * 1024) throw new StrataError('ARTIFACT_CORRUPT', `chunk size ${size} is out of range`);
  let carry: Buffer | undefined;
  for await (const piece of source) {
    let buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    if (carry) {
      buf = Buffer.concat([carry, buf]);
      carry = undefined;
    }
    let offset = 0;
    while (buf.length - offset >= size) {
      yield [buf.subarray(offset, offset + size)];
      offset += size;
    }
    // Copy the remainder: the producer may reuse its buffer once we ask for the next piece.
    if (offset < buf.length) carry = Buffer.from(buf.subarray(offset));
  }
  if (carry && carry.length > 0) yield [carry];
}

/** 256 random 32-bit values (fixed: boundaries must be the same in every backup and every version). */
const GEAR = (() => {
  const table = new Uint32Array(256);
  let x = 0x9e3779b9;
  for (let i = 0; i < 256; i++) {
    // xorshift32
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    table[i] = x;
  }
  return table;
})();

/**
 * Content-defined chunks of a line-oriented stream (a server engine's rows: one row per line).
 * Chunks end only at line ends, and where they end depends on the rows themselves: each row
 * contributes a value taken from its first and last bytes (the primary key usually leads a row)
 * to a gear-style rolling hash, and a chunk ends when the hash's low bits are zero. An inserted or
 * changed row therefore moves only the boundaries next to it, and an incremental re-stores about
 * one or two chunks per changed spot instead of everything after it.
 *
 * Sizes stay between a quarter of and four times the average; a single row longer than that is a
 * chunk on its own.
 */
async function* rowChunks(source: AsyncIterable<Uint8Array>, averageSize: number): AsyncGenerator<Buffer[]> {
  if (!Number.isInteger(averageSize) || averageSize < 1024 || averageSize > 16 * 1024 * 1024) {
    throw new StrataError('ARTIFACT_CORRUPT', `average chunk size ${averageSize} is out of range`);
  }
  const min = averageSize >> 2;
  const max = averageSize * 4;
  // The chunk being built and the row that runs past the end of a piece are held as views of the
  // pieces (a source never reuses a buffer it has yielded, see SnapshotStream.open): copying them
  // at every piece's end, and the piece itself behind a carried row, allocated several times the
  // stream's size, and the garbage collector's time grew with it.
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let hash = 0;
  const flush = (): Buffer[] => {
    const out = pending;
    pending = [];
    pendingBytes = 0;
    hash = 0;
    return out;
  };
  // A row begun in an earlier piece: its pieces, its length, and its first and last (up to) four
  // bytes, which are all of it the boundary rule reads.
  let carried: Buffer[] = [];
  let carriedBytes = 0;
  const head = new Uint8Array(4);
  let headLength = 0;
  const tail = new Uint8Array(4);
  let tailLength = 0;
  const remember = (bytes: Buffer): void => {
    for (let i = 0; headLength < 4 && i < bytes.length; i++) head[headLength++] = bytes[i]!;
    const last = bytes.subarray(Math.max(0, bytes.length - 4));
    const keep = Math.min(tailLength, 4 - last.length);
    tail.copyWithin(0, tailLength - keep, tailLength);
    tail.set(last, keep);
    tailLength = keep + last.length;
  };
  for await (const piece of source) {
    const buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    let rowStart = 0;
    let cutFrom = 0;
    for (;;) {
      const newline = buf.indexOf(10, rowStart);
      if (newline < 0) break;
      const rowEnd = newline + 1;
      const fromCarry = rowStart === 0 ? carriedBytes : 0;
      const rowLength = fromCarry + rowEnd - rowStart;
      if (rowLength >= averageSize && pendingBytes + (rowStart - cutFrom) > 0) {
        if (rowStart > cutFrom) {
          pending.push(buf.subarray(cutFrom, rowStart));
          pendingBytes += rowStart - cutFrom;
        }
        yield flush();
        cutFrom = rowStart;
      }
      let feature = 0;
      if (fromCarry > 0) {
        // The row's first bytes are (mostly) carried, its last ones may be too.
        for (let i = 0; i < headLength; i++) feature = (feature * 31 + head[i]!) >>> 0;
        for (let i = 0; i < Math.min(4 - headLength, newline); i++) feature = (feature * 31 + buf[i]!) >>> 0;
        const fromTail = Math.min(Math.max(0, 4 - newline), tailLength);
        for (let i = tailLength - fromTail; i < tailLength; i++) feature = (feature * 31 + tail[i]!) >>> 0;
        for (let i = Math.max(0, newline - 4); i < newline; i++) feature = (feature * 31 + buf[i]!) >>> 0;
        for (const part of carried) pending.push(part);
        pendingBytes += carriedBytes;
        carried = [];
        carriedBytes = 0;
      } else {
        for (let i = rowStart; i < Math.min(rowStart + 4, newline); i++) feature = (feature * 31 + buf[i]!) >>> 0;
        for (let i = Math.max(rowStart, newline - 4); i < newline; i++) feature = (feature * 31 + buf[i]!) >>> 0;
      }
      hash = ((hash << 1) + GEAR[(feature ^ (feature >>> 8) ^ (feature >>> 16) ^ (feature >>> 24)) & 0xff]!) >>> 0;
      const size = pendingBytes + (rowEnd - cutFrom);
      const threshold = Math.min(0xffffffff, Math.floor((rowLength / averageSize) * 0x100000000));
      const mixed = Math.imul(hash ^ (hash >>> 15), 0x2c1b3c6d) >>> 0;
      if ((size >= min && mixed < threshold) || size >= max) {
        pending.push(buf.subarray(cutFrom, rowEnd));
        pendingBytes += rowEnd - cutFrom;
        yield flush();
        cutFrom = rowEnd;
      }
      rowStart = rowEnd;
    }
    if (rowStart > cutFrom) {
      pending.push(buf.subarray(cutFrom, rowStart));
      pendingBytes += rowStart - cutFrom;
    }
    if (rowStart < buf.length) {
      if (carriedBytes === 0) headLength = tailLength = 0;
      const rest = buf.subarray(rowStart);
      carried.push(rest);
      carriedBytes += rest.length;
      remember(rest);
    }
  }
  if (carriedBytes > 0) {
    for (const part of carried) pending.push(part);
    pendingBytes += carriedBytes;
  }
  if (pendingBytes > 0) yield flush();
}
