import type { Chunking } from '../engine.js';
import { StrataError } from '../errors.js';

/**
 * Cuts a byte stream into chunks. Fixed chunking yields equal blocks (the last one may be
 * shorter); writer and reader share this so they always agree on boundaries.
 */
export async function* splitChunks(source: AsyncIterable<Uint8Array>, chunking: Chunking): AsyncGenerator<Buffer> {
  if (chunking.kind === 'content-defined') {
    yield* rowChunks(source, chunking.averageSize);
    return;
  }
  if (chunking.kind !== 'fixed') {
    throw new StrataError('ARTIFACT_FOREIGN', `chunking ${JSON.stringify((chunking as { kind: string }).kind)} is not supported by this version of Strata`);
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
      yield buf.subarray(offset, offset + size);
      offset += size;
    }
    // Copy the remainder: the producer may reuse its buffer once we ask for the next piece.
    if (offset < buf.length) carry = Buffer.from(buf.subarray(offset));
  }
  if (carry && carry.length > 0) yield carry;
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
async function* rowChunks(source: AsyncIterable<Uint8Array>, averageSize: number): AsyncGenerator<Buffer> {
  if (!Number.isInteger(averageSize) || averageSize < 1024 || averageSize > 16 * 1024 * 1024) {
    throw new StrataError('ARTIFACT_CORRUPT', `average chunk size ${averageSize} is out of range`);
  }
  const min = averageSize >> 2;
  const max = averageSize * 4;
  // Expected rows per chunk is unknown, so the mask is tuned on bytes: a boundary chance per row
  // proportional to the row's length keeps chunks near averageSize whatever the row width.
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let hash = 0;
  const flush = (): Buffer => {
    const out = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    hash = 0;
    return out;
  };
  let carry: Buffer | undefined;
  for await (const piece of source) {
    let buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    if (carry) {
      buf = Buffer.concat([carry, buf]);
      carry = undefined;
    }
    let rowStart = 0;
    let cutFrom = 0;
    for (;;) {
      const newline = buf.indexOf(10, rowStart);
      if (newline < 0) break;
      const rowEnd = newline + 1;
      const rowLength = rowEnd - rowStart;
      // A row as long as a chunk starts a chunk of its own, so changes to the rows before it
      // never drag it into an incremental (and it is cut after too, below).
      if (rowLength >= averageSize && pendingBytes + (rowStart - cutFrom) > 0) {
        if (rowStart > cutFrom) {
          pending.push(buf.subarray(cutFrom, rowStart));
          pendingBytes += rowStart - cutFrom;
        }
        yield flush();
        cutFrom = rowStart;
      }
      // The row's feature: up to 4 bytes from its start and 4 before its newline.
      let feature = 0;
      for (let i = rowStart; i < Math.min(rowStart + 4, newline); i++) feature = (feature * 31 + buf[i]!) >>> 0;
      for (let i = Math.max(rowStart, newline - 4); i < newline; i++) feature = (feature * 31 + buf[i]!) >>> 0;
      hash = ((hash << 1) + GEAR[(feature ^ (feature >>> 8) ^ (feature >>> 16) ^ (feature >>> 24)) & 0xff]!) >>> 0;
      const size = pendingBytes + (rowEnd - cutFrom);
      // Probability of a cut at this row ~ rowLength / averageSize: compare against a threshold.
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
    // Keep the unfinished row for the next piece; whole rows not yet cut wait in `pending`.
    if (rowStart > cutFrom) {
      pending.push(Buffer.from(buf.subarray(cutFrom, rowStart)));
      pendingBytes += rowStart - cutFrom;
    }
    if (rowStart < buf.length) carry = Buffer.from(buf.subarray(rowStart));
  }
  if (carry && carry.length > 0) {
    pending.push(carry);
    pendingBytes += carry.length;
  }
  if (pendingBytes > 0) yield flush();
}
