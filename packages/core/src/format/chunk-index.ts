import * as crypto from 'node:crypto';
import { createHash } from 'node:crypto';
import { StrataError, named, redactable } from '../errors.js';
import type { MessageText } from '../errors.js';
import type { Chunking } from '../engine.js';

/**
 * Binary chunk lists inside artifacts. Both are small fixed-width records so that a 1 GiB database
 * file (262,144 pages of 4 KiB) costs 5 MiB of layout, not 20 MiB of JSON.
 *
 * layout/<stream>.idx   "STLAYOUT" u32 version u32 hashBytes u64 count, then per chunk: u32 size, hash
 *                       version 1: the complete layout, as above;
 *                       version 2: a delta against the parent's complete layout: after the count,
 *                       the parent layout's digest (16 bytes) and u64 changed, then per changed
 *                       position: u64 position, u32 size, hash
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
export const LAYOUT_HEADER_BYTES = HEADER_BYTES;
export const LAYOUT_RECORD_BYTES = LAYOUT_RECORD;
const SEGMENT_RECORD = 8 + 4 + CHUNK_HASH_BYTES;
const LAYOUT_VERSION = 1;
const DELTA_VERSION = 2;
const DELTA_HEADER_BYTES = HEADER_BYTES + CHUNK_HASH_BYTES + 8;
const DELTA_RECORD = 8 + 4 + CHUNK_HASH_BYTES;

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

  // A layout never changes once built, and the artifact entry, the catalog digest, the cache
  // and a child's delta all need its encoding: made once, it is not copied four times over.
  #encoded: Buffer | undefined;
  #digest: Buffer | undefined;

  /** First 16 bytes of the SHA-256 of `encode()`: how a delta names the layout it applies to. */
  digest(): Buffer {
    this.#digest ??= createHash('sha256').update(this.encode()).digest().subarray(0, CHUNK_HASH_BYTES);
    return this.#digest;
  }

  /** Whether chunk `i` of this layout and chunk `j` of `other` are the same chunk. */
  sameChunk(i: number, other: ChunkLayout, j: number): boolean {
    return this.sizes[i] === other.sizes[j] && this.hashes.compare(other.hashes, j * CHUNK_HASH_BYTES, (j + 1) * CHUNK_HASH_BYTES, i * CHUNK_HASH_BYTES, (i + 1) * CHUNK_HASH_BYTES) === 0;
  }

  encode(): Buffer {
    if (this.#encoded) return this.#encoded;
    const out = Buffer.alloc(HEADER_BYTES + this.count * LAYOUT_RECORD);
    this.#encoded = out;
    LAYOUT_MAGIC.copy(out, 0);
    out.writeUInt32LE(LAYOUT_VERSION, 8);
    out.writeUInt32LE(CHUNK_HASH_BYTES, 12);
    out.writeBigUInt64LE(BigInt(this.count), 16);
    for (let i = 0; i < this.count; i++) {
      const at = HEADER_BYTES + i * LAYOUT_RECORD;
      out.writeUInt32LE(this.sizes[i]!, at);
      this.hashAt(i).copy(out, at + 4);
    }
    return out;
  }

  static decode(bytes: Buffer, where: MessageText): ChunkLayout {
    const count = readHeader(bytes, LAYOUT_MAGIC, LAYOUT_RECORD, where, LAYOUT_VERSION);
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
  #hashes: Buffer;
  #sizes: Uint32Array;
  #count = 0;

  /**
   * `expected`: the chunk count when it is known up front (a fixed-size chunking of a stream of
   * known size). Sized exactly, the arrays neither grow (each growth copies them) nor end up to
   * twice as large as needed, which at 4 GiB of pages is 20 MiB.
   */
  constructor(expected = 1024) {
    const capacity = Number.isSafeInteger(expected) && expected > 0 ? expected : 1024;
    this.#hashes = Buffer.alloc(capacity * CHUNK_HASH_BYTES);
    this.#sizes = new Uint32Array(capacity);
  }

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

  /** The layout, as views of the builder's arrays (no copy: the builder is done with them). */
  build(): ChunkLayout {
    return new ChunkLayout(this.#hashes.subarray(0, this.#count * CHUNK_HASH_BYTES), this.#sizes.subarray(0, this.#count));
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

export function decodeSegmentIndex(bytes: Buffer, where: MessageText): SegmentRecord[] {
  const count = readHeader(bytes, SEGMENT_MAGIC, SEGMENT_RECORD, where, 1);
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

function readHeader(bytes: Buffer, magic: Buffer, record: number, where: MessageText, version: number): number {
  if (bytes.length < HEADER_BYTES || !bytes.subarray(0, 8).equals(magic)) {
    throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: not a chunk index (bad magic)`);
  }
  if (bytes.readUInt32LE(8) !== version || bytes.readUInt32LE(12) !== CHUNK_HASH_BYTES) {
    throw new StrataError('ARTIFACT_FOREIGN', redactable`${where}: chunk index version ${bytes.readUInt32LE(8)} is not supported`);
  }
  const count = bytes.readBigUInt64LE(16);
  if (count !== BigInt((bytes.length - HEADER_BYTES) / record) || (bytes.length - HEADER_BYTES) % record !== 0) {
    throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: chunk index declares ${count} records but holds ${(bytes.length - HEADER_BYTES) / record}`);
  }
  return Number(count);
}

/**
 * A layout stored as its differences from the parent's: the new chunk count and every position
 * whose chunk is not the parent's chunk at that position (all positions past the parent's end
 * among them). Fixed-size chunking keeps positions stable, so an incremental of a database in
 * which little changed stores a few entries instead of one per page: a 1 GiB database file has
 * 262,144 pages, whose complete layout is 5 MiB of mostly random hashes that no compressor shrinks.
 */
export class LayoutDelta {
  constructor(
    readonly count: number,
    /** `digest()` of the parent's complete layout. */
    readonly parentDigest: Buffer,
    readonly positions: Float64Array,
    readonly sizes: Uint32Array,
    readonly hashes: Buffer,
  ) {
    if (hashes.length !== sizes.length * CHUNK_HASH_BYTES || positions.length !== sizes.length) throw new StrataError('INTERNAL', 'layout delta: record counts differ');
  }

  /** The positions of `current` whose chunk differs from `parent`'s at the same position. */
  static between(parent: ChunkLayout, current: ChunkLayout): LayoutDelta {
    const changed: number[] = [];
    for (let i = 0; i < current.count; i++) if (i >= parent.count || !current.sameChunk(i, parent, i)) changed.push(i);
    const hashes = Buffer.alloc(changed.length * CHUNK_HASH_BYTES);
    const sizes = new Uint32Array(changed.length);
    changed.forEach((position, n) => {
      sizes[n] = current.sizes[position]!;
      current.hashes.copy(hashes, n * CHUNK_HASH_BYTES, position * CHUNK_HASH_BYTES, (position + 1) * CHUNK_HASH_BYTES);
    });
    return new LayoutDelta(current.count, parent.digest(), Float64Array.from(changed), sizes, hashes);
  }

  get changed(): number {
    return this.positions.length;
  }

  encode(): Buffer {
    const out = Buffer.alloc(DELTA_HEADER_BYTES + this.changed * DELTA_RECORD);
    LAYOUT_MAGIC.copy(out, 0);
    out.writeUInt32LE(DELTA_VERSION, 8);
    out.writeUInt32LE(CHUNK_HASH_BYTES, 12);
    out.writeBigUInt64LE(BigInt(this.count), 16);
    this.parentDigest.copy(out, HEADER_BYTES);
    out.writeBigUInt64LE(BigInt(this.changed), HEADER_BYTES + CHUNK_HASH_BYTES);
    for (let n = 0; n < this.changed; n++) {
      const at = DELTA_HEADER_BYTES + n * DELTA_RECORD;
      out.writeBigUInt64LE(BigInt(this.positions[n]!), at);
      out.writeUInt32LE(this.sizes[n]!, at + 8);
      this.hashes.copy(out, at + 12, n * CHUNK_HASH_BYTES, (n + 1) * CHUNK_HASH_BYTES);
    }
    return out;
  }

  static decode(bytes: Buffer, where: MessageText): LayoutDelta {
    if (bytes.length < DELTA_HEADER_BYTES) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: layout delta is truncated`);
    const count = bytes.readBigUInt64LE(16);
    const changed = bytes.readBigUInt64LE(HEADER_BYTES + CHUNK_HASH_BYTES);
    const body = bytes.length - DELTA_HEADER_BYTES;
    if (body % DELTA_RECORD !== 0 || changed !== BigInt(body / DELTA_RECORD) || changed > count || count > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: layout delta declares ${changed} changed of ${count} chunks but holds ${Math.floor(body / DELTA_RECORD)}`);
    }
    const n = Number(changed);
    const positions = new Float64Array(n);
    const sizes = new Uint32Array(n);
    const hashes = Buffer.alloc(n * CHUNK_HASH_BYTES);
    let previous = -1;
    for (let i = 0; i < n; i++) {
      const at = DELTA_HEADER_BYTES + i * DELTA_RECORD;
      const position = Number(bytes.readBigUInt64LE(at));
      // Ascending and inside the layout: applying it can then neither grow without bound nor overlap.
      if (position <= previous || position >= Number(count)) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: layout delta position ${position} is out of order or past ${count} chunks`);
      previous = position;
      positions[i] = position;
      sizes[i] = bytes.readUInt32LE(at + 8);
      bytes.copy(hashes, i * CHUNK_HASH_BYTES, at + 12, at + 12 + CHUNK_HASH_BYTES);
    }
    return new LayoutDelta(Number(count), Buffer.from(bytes.subarray(HEADER_BYTES, HEADER_BYTES + CHUNK_HASH_BYTES)), positions, sizes, hashes);
  }

  /** The complete layout: `parent` with this delta's changes, cut or grown to `count`. */
  applyTo(parent: ChunkLayout, where: MessageText): ChunkLayout {
    if (!parent.digest().equals(this.parentDigest)) {
      throw new StrataError('CHAIN_BROKEN', redactable`${where}: its layout is a delta against a parent layout that is not its parent's (the chain is mixed up or damaged)`);
    }
    const grown = this.count - Math.min(this.count, parent.count);
    let pastParent = 0;
    for (let n = this.changed - 1; n >= 0 && this.positions[n]! >= parent.count; n--) pastParent++;
    if (pastParent !== grown) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: layout delta leaves ${grown - pastParent} new chunk positions unnamed`);
    const kept = Math.min(this.count, parent.count);
    const hashes = Buffer.alloc(this.count * CHUNK_HASH_BYTES);
    parent.hashes.copy(hashes, 0, 0, kept * CHUNK_HASH_BYTES);
    const sizes = new Uint32Array(this.count);
    sizes.set(parent.sizes.subarray(0, kept));
    for (let n = 0; n < this.changed; n++) {
      const position = this.positions[n]!;
      sizes[position] = this.sizes[n]!;
      this.hashes.copy(hashes, position * CHUNK_HASH_BYTES, n * CHUNK_HASH_BYTES, (n + 1) * CHUNK_HASH_BYTES);
    }
    return new ChunkLayout(hashes, sizes);
  }
}

/** What a `layout/<stream>.idx` entry holds: the complete layout, or a delta against the parent's. */
export type LayoutEntry = ChunkLayout | LayoutDelta;

export function decodeLayoutEntry(bytes: Buffer, where: MessageText): LayoutEntry {
  if (bytes.length >= HEADER_BYTES && bytes.subarray(0, 8).equals(LAYOUT_MAGIC) && bytes.readUInt32LE(8) === DELTA_VERSION && bytes.readUInt32LE(12) === CHUNK_HASH_BYTES) {
    return LayoutDelta.decode(bytes, where);
  }
  return ChunkLayout.decode(bytes, where);
}

/** The smaller way to store `current`: complete, or as a delta when there is a parent to apply it to. */
export function layoutEntryFor(current: ChunkLayout, parent: ChunkLayout | undefined): LayoutEntry {
  if (!parent) return current;
  const delta = LayoutDelta.between(parent, current);
  return DELTA_HEADER_BYTES + delta.changed * DELTA_RECORD < HEADER_BYTES + current.count * LAYOUT_RECORD ? delta : current;
}

/**
 * Complete layouts from a backup's layout entries and its parent's complete layouts. Deltas are
 * applied; complete entries stand as they are.
 */
export function resolveLayouts(entries: ReadonlyMap<string, LayoutEntry>, parents: ReadonlyMap<string, ChunkLayout> | undefined, where: MessageText): Map<string, ChunkLayout> {
  const out = new Map<string, ChunkLayout>();
  for (const [name, entry] of entries) {
    if (entry instanceof ChunkLayout) {
      out.set(name, entry);
      continue;
    }
    const parent = parents?.get(name);
    if (!parent) throw new StrataError('CHAIN_BROKEN', redactable`${where}: stream ${named(name, 'stream')} is stored as a delta, but its parent has no such stream`);
    out.set(name, entry.applyTo(parent, redactable`${where}: stream ${named(name, 'stream')}`));
  }
  return out;
}

export function hasDeltas(entries: ReadonlyMap<string, LayoutEntry>): boolean {
  for (const entry of entries.values()) if (entry instanceof LayoutDelta) return true;
  return false;
}

/** The chunk count a complete layout's header declares, after checking its magic and version. */
export function completeLayoutCount(header: Buffer, where: MessageText): number {
  if (header.length < HEADER_BYTES || !header.subarray(0, 8).equals(LAYOUT_MAGIC)) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: not a chunk index (bad magic)`);
  if (header.readUInt32LE(8) !== LAYOUT_VERSION || header.readUInt32LE(12) !== CHUNK_HASH_BYTES) {
    throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: a stream stored whole must have a complete layout (version ${LAYOUT_VERSION}), not version ${header.readUInt32LE(8)}`);
  }
  const count = header.readBigUInt64LE(16);
  if (count > BigInt(Number.MAX_SAFE_INTEGER)) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: layout declares ${count} chunks`);
  return Number(count);
}

/** How many chunks a stream of `size` bytes has under `chunking`, when that is known before reading it. */
export function expectedChunks(size: number, chunking: Chunking): number | undefined {
  return chunking.kind === 'fixed' && chunking.size > 0 ? Math.ceil(size / chunking.size) : undefined;
}
