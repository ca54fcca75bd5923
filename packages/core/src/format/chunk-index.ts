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

/** The chunk id: first 16 bytes of SHA-256. */
export function chunkHash(chunk: Uint8Array): Buffer {
  return createHash('sha256').update(chunk).digest().subarray(0, CHUNK_HASH_BYTES);
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

/** Grows a layout chunk by chunk while a stream is read. */
export class ChunkLayoutBuilder {
  #hashes: Buffer[] = [];
  #sizes: number[] = [];

  add(hash: Buffer, size: number): number {
    this.#hashes.push(hash);
    this.#sizes.push(size);
    return this.#sizes.length - 1;
  }

  build(): ChunkLayout {
    return new ChunkLayout(Buffer.concat(this.#hashes), Uint32Array.from(this.#sizes));
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
