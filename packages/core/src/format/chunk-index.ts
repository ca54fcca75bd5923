import * as crypto from 'node:crypto';
import { createHash } from 'node:crypto';
import { StrataError } from '../errors.js';

/**
 * Binary chunk lists inside artifacts. Both are small fixed-width records so that a 1 GiB SQLite
 * database (262,144 pages of 4 KiB) costs 5 MiB of layout, not 20 MiB of JSON.
 *
 * layout/<stream>.idx   "STLAYOUT" u32 version u32 hashBytes u64 count, then per chunk: u32 size, hash
 * chunks/<stream>/N.idx "STSEGIDX" u32 version u32 hashBytes u64 count, then per chunk: u64 position, u32 size, hash
 *
 * All integers little-endian. `position` is the chunk's ordinal in the stream's layout at this
 * restore point. Chunk hashes are the first 16 bytes of SHA-256: enough to tell changed chunks
 * apart; the integrity of a whole stream rests on its full SHA-256 in the manifest.
 */

export const CHUNK_HASH_BYTES = 16;
const LAYOUT_MAGIC = Buffer.from('STLAYOUT');
const SEGMENT_MAGIC = Buffer.from('STSEGIDX');
const HEADER_BYTES = 24;
const LAYOUT_RECORD = 4 + CHUNK_HASH_BYTES;
const SEGMENT_RECORD = 8 + 4 + CHUNK_HASH_BYTES;

const oneShot = (crypto as { hash?: (algorithm: string, data: Uint8Array, encoding: 'buffer') => Buffer }).hash;

/** The chunk id: first 16 bytes of SHA-256. */
export function chunkHash(chunk: Uint8Array): Buffer {
  // crypto.hash (Node 20.12+) skips creating a Hash object per 4 KiB page.
  const digest = oneShot ? oneShot('sha256', chunk, 'buffer') : createHash('sha256').update(chunk).digest();
  return digest.subarray(0, CHUNK_HASH_BYTES);
}

/** A stream's chunk list at one restore point: sizes and hashes in stream order. */
export class ChunkLayout {
  /** Packed 16-byte hashes, `count * 16` bytes. */
  readonly hashes: Buffer;
  readonly sizes: Uint32Array;

  constructor(hashes: Buffer, sizes: Uint32Array) {
    if (hashes.length !== sizes.length * CHUNK_HASH_BYTES) throw new StrataError('INTERNAL', 'chunk layout: hash and size counts differ');
    this.hashes = hashes;
    this.sizes = sizes;
  }

  get count(): number {
    return this.sizes.length;
  }

  hashAt(i: number): Buffer {
    return this.hashes.subarray(i * CHUNK_HASH_BYTES, (i + 1) * CHUNK_HASH_BYTES);
  }

  /** Hex keys of every chunk hash, for "does the parent already have this chunk" lookups. */
  hashSet(): Set<string> {
    const set = new Set<string>();
    for (let i = 0; i < this.count; i++) set.add(this.hashAt(i).toString('hex'));
    return set;
  }

  encode(): Buffer {
    const out = Buffer.alloc(HEADER_BYTES + this.count * LAYOUT_RECORD);
    LAYOUT_MAGIC.copy(out, 0);
    out.writeUInt32LE(1, 8);
    out.writeUInt32LE(CHUNK_HASH_BYTES, 12);
    out.writeBigUInt64LE(BigInt(this.count), 16);
    for (let i = 0; i < this.count; i++) {
      const at = HEADER_BYTES + i * LAYOUT_RECORD;
      out.writeUInt32LE(this.sizes[i]!, at);
      this.hashAt(i).copy(out, at + 4);
    }
    return out;
  }

  static decode(bytes: Buffer, where: string): ChunkLayout {
    const count = readHeader(bytes, LAYOUT_MAGIC, LAYOUT_RECORD, where);
    const hashes = Buffer.alloc(count * CHUNK_HASH_BYTES);
    const sizes = new Uint32Array(count);
    for (let i = 0; i < count; i++) {
      const at = HEADER_BYTES + i * LAYOUT_RECORD;
      sizes[i] = bytes.readUInt32LE(at);
      bytes.copy(hashes, i * CHUNK_HASH_BYTES, at + 4, at + 4 + CHUNK_HASH_BYTES);
    }
    return new ChunkLayout(hashes, sizes);
  }
}

/**
 * Grows a layout chunk by chunk while a stream is read. Hashes and sizes go into flat, doubling
 * arrays: a 1 GiB database has 262,144 pages, and an object per page would cost far more memory
 * (and garbage-collection time) than the 20 bytes each actually needs.
 */
export class ChunkLayoutBuilder {
  #hashes = Buffer.alloc(1024 * CHUNK_HASH_BYTES);
  #sizes = new Uint32Array(1024);
  #count = 0;

  #grow(): void {
    const hashes = Buffer.alloc(this.#hashes.length * 2);
    this.#hashes.copy(hashes);
    this.#hashes = hashes;
    const sizes = new Uint32Array(this.#sizes.length * 2);
    sizes.set(this.#sizes);
    this.#sizes = sizes;
  }

  /** Adds a chunk (copying its hash) and returns its position. */
  add(hash: Uint8Array, size: number): number {
    if (this.#count === this.#sizes.length) this.#grow();
    this.#hashes.set(hash.subarray(0, CHUNK_HASH_BYTES), this.#count * CHUNK_HASH_BYTES);
    this.#sizes[this.#count] = size;
    return this.#count++;
  }

  build(): ChunkLayout {
    return new ChunkLayout(Buffer.from(this.#hashes.subarray(0, this.#count * CHUNK_HASH_BYTES)), this.#sizes.slice(0, this.#count));
  }
}

/** One stored chunk inside a segment. */
export interface SegmentRecord {
  readonly position: number;
  readonly size: number;
  readonly hash: Buffer;
}

export function encodeSegmentIndex(records: readonly SegmentRecord[]): Buffer {
  const out = Buffer.alloc(HEADER_BYTES + records.length * SEGMENT_RECORD);
  SEGMENT_MAGIC.copy(out, 0);
  out.writeUInt32LE(1, 8);
  out.writeUInt32LE(CHUNK_HASH_BYTES, 12);
  out.writeBigUInt64LE(BigInt(records.length), 16);
  records.forEach((r, i) => {
    const at = HEADER_BYTES + i * SEGMENT_RECORD;
    out.writeBigUInt64LE(BigInt(r.position), at);
    out.writeUInt32LE(r.size, at + 8);
    r.hash.copy(out, at + 12);
  });
  return out;
}

export function decodeSegmentIndex(bytes: Buffer, where: string): SegmentRecord[] {
  const count = readHeader(bytes, SEGMENT_MAGIC, SEGMENT_RECORD, where);
  const records: SegmentRecord[] = [];
  for (let i = 0; i < count; i++) {
    const at = HEADER_BYTES + i * SEGMENT_RECORD;
    records.push({
      position: Number(bytes.readBigUInt64LE(at)),
      size: bytes.readUInt32LE(at + 8),
      hash: Buffer.from(bytes.subarray(at + 12, at + 12 + CHUNK_HASH_BYTES)),
    });
  }
  return records;
}

function readHeader(bytes: Buffer, magic: Buffer, record: number, where: string): number {
  if (bytes.length < HEADER_BYTES || !bytes.subarray(0, 8).equals(magic)) {
    throw new StrataError('ARTIFACT_CORRUPT', `${where}: not a chunk index (bad magic)`);
  }
  if (bytes.readUInt32LE(8) !== 1 || bytes.readUInt32LE(12) !== CHUNK_HASH_BYTES) {
    throw new StrataError('ARTIFACT_FOREIGN', `${where}: chunk index version ${bytes.readUInt32LE(8)} is not supported`);
  }
  const count = bytes.readBigUInt64LE(16);
  if (count !== BigInt((bytes.length - HEADER_BYTES) / record) || (bytes.length - HEADER_BYTES) % record !== 0) {
    throw new StrataError('ARTIFACT_CORRUPT', `${where}: chunk index declares ${count} records but holds ${(bytes.length - HEADER_BYTES) / record}`);
  }
  return Number(count);
}
