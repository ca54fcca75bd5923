import type { Chunking } from '../engine.js';
import { StrataError } from '../errors.js';

/**
 * Cuts a byte stream into chunks. Fixed chunking yields equal blocks (the last one may be
 * shorter); writer and reader share this so they always agree on boundaries.
 */
export async function* splitChunks(source: AsyncIterable<Uint8Array>, chunking: Chunking): AsyncGenerator<Buffer> {
  if (chunking.kind !== 'fixed') {
    throw new StrataError('ARTIFACT_FOREIGN', `chunking ${JSON.stringify(chunking.kind)} is not supported by this version of Strata`);
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
