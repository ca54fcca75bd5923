import { createHash } from 'node:crypto';
import type { Chunking } from '../engine.js';
import { getCodec } from '../compression.js';
import type { CodecName } from '../compression.js';
import { decryptStream } from '../encryption.js';
import type { Passphrase } from '../encryption.js';
import { StrataError, isStrataError, named, redactable, throwIfAborted, wrapError } from '../errors.js';
import type { MessageText } from '../errors.js';
import type { Storage } from '../storage.js';
import { ChunkLayout, ChunkLayoutBuilder, LAYOUT_HEADER_BYTES, LAYOUT_RECORD_BYTES, chunkHash, completeLayoutCount, decodeLayoutEntry, decodeSegmentIndex, expectedChunks } from './chunk-index.js';
import type { LayoutEntry, SegmentRecord } from './chunk-index.js';
import { splitChunks } from './chunker.js';
import { MANIFEST_ENTRY, MAX_MANIFEST_BYTES, README_ENTRY, SCHEMA_ENTRY, parseManifest } from './manifest.js';
import type { Manifest, StreamDescriptor } from './manifest.js';
import { readTar } from './tar.js';
import type { TarEntry } from './tar.js';

/** Small entries (schema, layouts, descriptors) are read into memory, up to this size each. */
const MAX_SMALL_ENTRY = 256 * 1024 * 1024;

/** Where an artifact is and what we expect of it (from the catalog, when there is one). */
export interface ArtifactLocation {
  readonly key: string;
  readonly codec: CodecName;
  readonly encrypted: boolean;
  readonly expectedSha256?: string;
  readonly expectedSize?: number;
  /** Refuse to decompress more than this (a decompression bomb or a tampered artifact). */
  readonly maxRawBytes?: number;
}

/** Receives a whole stream's bytes in order (a restore target). */
export interface StreamWriter {
  write(chunk: Buffer): Promise<void>;
  end(): Promise<void>;
}

export interface ReadArtifactOptions {
  readonly storage: Storage;
  readonly location: ArtifactLocation;
  readonly passphrase?: Passphrase;
  readonly signal?: AbortSignal;
  /** Bytes of the artifact read so far. */
  readonly onBytes?: (storedBytes: number) => void;
  /** Receives the schema as soon as its entry is read (before any stream data). */
  readonly onSchema?: (schemaSql: string) => Promise<void>;
  /** Where a whole stream's bytes go; undefined (or no callback) means only check them. */
  readonly streamWriter?: (name: string) => Promise<StreamWriter | undefined>;
  /**
   * Also check every chunk of whole streams against the layout (default true). A restore turns
   * it off: the stream's SHA-256 already proves every byte, and skipping the per-page work keeps
   * it fast and light on memory.
   */
  readonly verifyChunks?: boolean;
  /**
   * Receives each verified chunk the artifact stores: chunks of segments, and chunks of whole
   * streams for which `streamWriter` gave no writer (chain restores collect them by hash).
   */
  readonly onChunk?: (stream: string, record: SegmentRecord, bytes: Buffer) => Promise<void>;
}

/** What reading an artifact to its end established. */
export interface ArtifactContents {
  readonly manifest: Manifest;
  readonly schemaSql: string;
  /**
   * Each stream's layout entry: complete, or (in incrementals and differentials) a delta that
   * only the parent's complete layout turns into one; see `resolveLayouts`.
   */
  readonly layouts: ReadonlyMap<string, LayoutEntry>;
  readonly sha256: string;
  readonly storedBytes: number;
  readonly rawBytes: number;
}

/** Counts and hashes bytes as they pass. */
async function* meter(source: AsyncIterable<Uint8Array>, state: { sha: ReturnType<typeof createHash>; bytes: number }, onBytes?: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    state.sha.update(chunk);
    state.bytes += chunk.byteLength;
    onBytes?.(state.bytes);
    yield chunk;
  }
}

async function* limit(source: AsyncIterable<Uint8Array>, max: number | undefined, counter: { bytes: number }, key: string): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    counter.bytes += chunk.byteLength;
    if (max !== undefined && counter.bytes > max) {
      throw new StrataError('ARTIFACT_HOSTILE', `read ${key}: decompresses to more than the ${max} bytes recorded for it (altered artifact or decompression bomb)`);
    }
    yield chunk;
  }
}

async function readSmall(entry: TarEntry, what: string): Promise<Buffer> {
  if (entry.size > MAX_SMALL_ENTRY) throw new StrataError('ARTIFACT_HOSTILE', redactable`${what}: entry ${named(entry.name, 'entry')} declares ${entry.size} bytes, more than a Strata artifact ever holds there`);
  const parts: Buffer[] = [];
  for await (const piece of entry.body) parts.push(piece);
  return Buffer.concat(parts);
}

/**
 * Reads an artifact from storage to its very end: decrypts, decompresses, walks the tar, checks
 * every chunk and stream hash against the layouts and manifest, and the artifact's own SHA-256
 * and size against the catalog. Stream bytes go to `streamWriter` as they arrive, so callers must
 * treat them as unverified until this resolves.
 */
export async function readArtifact(options: ReadArtifactOptions): Promise<ArtifactContents> {
  const { storage, location } = options;
  const where = `read ${location.key}`;
  const state = { sha: createHash('sha256'), bytes: 0 };
  const raw = { bytes: 0 };
  try {
    const source = await storage.get(location.key, { signal: options.signal });
    let bytes: AsyncIterable<Uint8Array> = meter(source, state, options.onBytes);
    if (location.encrypted) {
      if (!options.passphrase) throw new StrataError('PASSPHRASE_MISSING', `${where}: the artifact is encrypted and no passphrase was given`);
      bytes = decryptStream(bytes, options.passphrase);
    }
    bytes = getCodec(location.codec).decompress(bytes, options.signal);
    bytes = limit(bytes, location.maxRawBytes, raw, location.key);
    const contents = await walk(readTar(bytes), options, where);
    const sha256 = state.sha.digest('hex');
    if (location.expectedSize !== undefined && state.bytes !== location.expectedSize) {
      throw new StrataError('ARTIFACT_CORRUPT', `${where}: artifact is ${state.bytes} bytes but the catalog recorded ${location.expectedSize}`);
    }
    if (location.expectedSha256 !== undefined && sha256 !== location.expectedSha256) {
      throw new StrataError('ARTIFACT_CORRUPT', `${where}: artifact SHA-256 ${sha256} differs from the catalog's ${location.expectedSha256}`);
    }
    return { ...contents, sha256, storedBytes: state.bytes, rawBytes: raw.bytes };
  } catch (err) {
    throw await diagnose(err, options, where);
  }
}

/**
 * A failure in the middle of decryption or decompression usually means the bytes were altered.
 * When the catalog has the artifact's hash we check it, so the user hears "damaged" rather than
 * a decoder's message; a matching hash with a decryption failure means a wrong passphrase.
 */
async function diagnose(err: unknown, options: ReadArtifactOptions, where: string): Promise<StrataError> {
  // A cancelled read fails wherever the signal caught it (often inside openpgp); say so plainly.
  if (options.signal?.aborted) return new StrataError('ABORTED', `${where}: cancelled`, { cause: err });
  // System errors (a full target disk, a permission problem) are about the target, not the artifact.
  const systemError = typeof (err as { syscall?: unknown })?.syscall === 'string';
  // Other errors here are the decompressor's or openpgp's, about bytes ("Modification detected"),
  // so the journal keeps their words; a restore target's errors arrive wrapped (see chain-restore).
  const wrapped = isStrataError(err)
    ? err
    : systemError
      ? wrapError(where, err)
      : new StrataError('ARTIFACT_CORRUPT', `${where}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  if (!['ARTIFACT_CORRUPT', 'ARTIFACT_HOSTILE', 'ARTIFACT_FOREIGN', 'PASSPHRASE_WRONG'].includes(wrapped.code)) return wrapped;
  if ((wrapped.details as { notFound?: boolean }).notFound) return wrapped;
  const expected = options.location.expectedSha256;
  if (expected === undefined || wrapped.message.includes('differs from the catalog')) return wrapped;
  try {
    const sha = createHash('sha256');
    for await (const chunk of await options.storage.get(options.location.key, { signal: options.signal })) sha.update(chunk);
    if (sha.digest('hex') !== expected) {
      return new StrataError('ARTIFACT_CORRUPT', `${where}: the artifact is damaged (its SHA-256 differs from the catalog's)`, { cause: wrapped });
    }
  } catch {
    return wrapped;
  }
  return wrapped;
}

async function walk(entries: AsyncGenerator<TarEntry>, options: ReadArtifactOptions, where: string): Promise<Omit<ArtifactContents, 'sha256' | 'storedBytes' | 'rawBytes'>> {
  let manifest: Manifest | undefined;
  let schemaSql: string | undefined;
  const descriptors = new Map<string, StreamDescriptor>();
  const computed = new Map<string, { sha256: string; size: number; layout?: ChunkLayout; stored: { count: number; bytes: number } }>();
  const layouts = new Map<string, LayoutEntry>();
  const tallies = new Map<string, LayoutTally>();
  const segmentChecks = new Map<string, SegmentRecord[]>();
  for await (const entry of entries) {
    throwIfAborted(options.signal, where);
    if (manifest) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: entry ${named(entry.name, 'entry')} follows the manifest, which must be last`);
    const name = entry.name;
    if (name === README_ENTRY) {
      await readSmall(entry, where);
    } else if (name === SCHEMA_ENTRY) {
      schemaSql = (await readSmall(entry, where)).toString('utf8');
      await options.onSchema?.(schemaSql);
    } else if (name === MANIFEST_ENTRY) {
      if (entry.size > MAX_MANIFEST_BYTES) throw new StrataError('ARTIFACT_HOSTILE', `${where}: manifest of ${entry.size} bytes is too large`);
      manifest = parseManifest(await readSmall(entry, where), where);
    } else if (name.startsWith('streams/') && name.endsWith('.json')) {
      const descriptor = parseDescriptor(await readSmall(entry, where), where);
      if (`streams/${descriptor.name}.json` !== name) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: descriptor ${named(name, 'entry')} names stream ${named(descriptor.name, 'stream')}`);
      descriptors.set(descriptor.name, descriptor);
    } else if (name.startsWith('data/')) {
      const stream = name.slice('data/'.length);
      const descriptor = descriptors.get(stream);
      if (!descriptor || descriptor.payload !== 'whole') throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: data for stream ${named(stream, 'stream')} without its descriptor`);
      if (descriptor.size !== null && descriptor.size !== entry.size) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(stream, 'stream')} holds ${entry.size} bytes, its descriptor says ${descriptor.size}`);
      computed.set(stream, await readWhole(entry, descriptor.chunking, stream, options));
    } else if (name.startsWith('chunks/') && name.endsWith('.idx')) {
      const stream = name.slice('chunks/'.length, name.lastIndexOf('/'));
      segmentChecks.set(stream, decodeSegmentIndex(await readSmall(entry, where), redactable`${where}: ${named(name, 'entry')}`));
    } else if (name.startsWith('chunks/') && name.endsWith('.bin')) {
      const stream = name.slice('chunks/'.length, name.lastIndexOf('/'));
      const records = segmentChecks.get(stream);
      if (!records || !descriptors.has(stream)) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: segment ${named(name, 'entry')} without its index`);
      segmentChecks.delete(stream);
      const tally = computed.get(stream) ?? { sha256: '', size: 0, stored: { count: 0, bytes: 0 } };
      await readSegment(entry, records, stream, options, where);
      tally.stored.count += records.length;
      tally.stored.bytes += entry.size;
      computed.set(stream, tally);
    } else if (name.startsWith('layout/') && name.endsWith('.idx')) {
      const stream = name.slice('layout/'.length, -'.idx'.length);
      // A restore that wrote a whole stream straight through needs only the layout's totals to
      // check it; gathering and decoding it would hold ~40 bytes per chunk at the very end.
      if (options.streamWriter && options.verifyChunks === false && descriptors.get(stream)?.payload === 'whole') {
        tallies.set(stream, await tallyLayout(entry, redactable`${where}: ${named(name, 'entry')}`));
      } else {
        layouts.set(stream, decodeLayoutEntry(await readSmall(entry, where), redactable`${where}: ${named(name, 'entry')}`));
      }
    } else {
      throw new StrataError('ARTIFACT_FOREIGN', redactable`${where}: unexpected entry ${named(JSON.stringify(name.slice(0, 200)), 'entry')} (not written by Strata format 1)`);
    }
  }
  if (!manifest) throw new StrataError('ARTIFACT_CORRUPT', `${where}: the artifact ends without a manifest (truncated?)`);
  if (schemaSql === undefined) throw new StrataError('ARTIFACT_CORRUPT', `${where}: the artifact has no ${SCHEMA_ENTRY}`);
  checkAgainstManifest(manifest, computed, layouts, tallies, where);
  return { manifest, schemaSql, layouts };
}

/** A complete layout's chunk count and byte total, without its hashes. */
class LayoutTally {
  constructor(
    readonly count: number,
    readonly bytes: number,
  ) {}
}

/** Reads a complete (version 1) layout entry as it streams past, keeping only its totals. */
async function tallyLayout(entry: TarEntry, where: MessageText): Promise<LayoutTally> {
  if (entry.size > MAX_SMALL_ENTRY) throw new StrataError('ARTIFACT_HOSTILE', redactable`${where}: entry ${named(entry.name, 'entry')} declares ${entry.size} bytes, more than a Strata artifact ever holds there`);
  let header: Buffer | undefined;
  let declared = 0;
  let carry = Buffer.alloc(0);
  let count = 0;
  let bytes = 0;
  for await (const piece of entry.body) {
    let data = carry.length > 0 ? Buffer.concat([carry, piece]) : piece;
    if (!header) {
      if (data.length < LAYOUT_HEADER_BYTES) {
        carry = Buffer.from(data);
        continue;
      }
      header = Buffer.from(data.subarray(0, LAYOUT_HEADER_BYTES));
      declared = completeLayoutCount(header, where);
      data = data.subarray(LAYOUT_HEADER_BYTES);
    }
    const whole = data.length - (data.length % LAYOUT_RECORD_BYTES);
    for (let at = 0; at < whole; at += LAYOUT_RECORD_BYTES) bytes += data.readUInt32LE(at);
    count += whole / LAYOUT_RECORD_BYTES;
    carry = Buffer.from(data.subarray(whole));
  }
  if (!header) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: layout entry is truncated`);
  if (carry.length !== 0 || declared !== count) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: layout entry declares ${declared} chunks but holds ${count}`);
  return new LayoutTally(count, bytes);
}

function parseDescriptor(bytes: Buffer, where: string): StreamDescriptor {
  try {
    const d = JSON.parse(bytes.toString('utf8')) as StreamDescriptor;
    if (typeof d.name === 'string' && (d.payload === 'whole' || d.payload === 'segments') && typeof d.chunking?.kind === 'string') return d;
  } catch {
    // fall through to the error below
  }
  throw new StrataError('ARTIFACT_CORRUPT', `${where}: malformed stream descriptor`);
}

async function readWhole(entry: TarEntry, chunking: Chunking, stream: string, options: ReadArtifactOptions): Promise<{ sha256: string; size: number; layout?: ChunkLayout; stored: { count: number; bytes: number } }> {
  const writer = options.streamWriter ? await options.streamWriter(stream) : undefined;
  const sha = createHash('sha256');
  if (writer && options.verifyChunks === false) {
    let size = 0;
    for await (const piece of entry.body) {
      throwIfAborted(options.signal, 'read');
      sha.update(piece);
      size += piece.length;
      await writer.write(piece);
    }
    await writer.end();
    return { sha256: sha.digest('hex'), size, stored: { count: -1, bytes: size } };
  }
  // Sized from the entry's declared size, but never beyond what honest artifacts need up front:
  // the size and chunking come from the archive itself, and a hostile one could declare anything.
  const layout = new ChunkLayoutBuilder(Math.min(expectedChunks(entry.size, chunking) ?? 1024, 2 ** 21));
  let size = 0;
  for await (const chunk of splitChunks(entry.body, chunking)) {
    throwIfAborted(options.signal, 'read');
    sha.update(chunk);
    const hash = chunkHash(chunk);
    const position = layout.add(hash, chunk.length);
    size += chunk.length;
    if (writer) await writer.write(chunk);
    else await options.onChunk?.(stream, { position, size: chunk.length, hash }, chunk);
  }
  if (writer) await writer.end();
  const built = layout.build();
  return { sha256: sha.digest('hex'), size, layout: built, stored: { count: built.count, bytes: size } };
}

async function readSegment(entry: TarEntry, records: SegmentRecord[], stream: string, options: ReadArtifactOptions, where: string): Promise<void> {
  const expected = records.reduce((sum, r) => sum + r.size, 0);
  if (expected !== entry.size) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: segment ${named(entry.name, 'entry')} holds ${entry.size} bytes, its index says ${expected}`);
  let index = 0;
  let carry: Buffer[] = [];
  let carried = 0;
  for await (const piece of entry.body) {
    carry.push(piece);
    carried += piece.length;
    while (index < records.length && carried >= records[index]!.size) {
      const all = carry.length === 1 ? carry[0]! : Buffer.concat(carry);
      const record = records[index]!;
      const bytes = all.subarray(0, record.size);
      if (!chunkHash(bytes).equals(record.hash)) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: chunk ${record.position} of stream ${named(stream, 'stream')} does not match its hash`);
      await options.onChunk?.(stream, record, bytes);
      const rest = all.subarray(record.size);
      carry = rest.length > 0 ? [rest] : [];
      carried = rest.length;
      index++;
    }
  }
}

function checkAgainstManifest(
  manifest: Manifest,
  computed: Map<string, { sha256: string; size: number; layout?: ChunkLayout; stored: { count: number; bytes: number } }>,
  layouts: Map<string, LayoutEntry>,
  tallies: Map<string, LayoutTally>,
  where: string,
): void {
  const names = new Set(manifest.streams.map((s) => s.name));
  for (const name of computed.keys()) if (!names.has(name)) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(name, 'stream')} is not in the manifest`);
  for (const s of manifest.streams) {
    const got = computed.get(s.name);
    const layout = layouts.get(s.name) ?? tallies.get(s.name);
    if (!layout) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(s.name, 'stream')} has no layout`);
    if (layout.count !== s.chunkCount) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(s.name, 'stream')} layout has ${layout.count} chunks, manifest says ${s.chunkCount}`);
    // A delta's byte count is known only once applied to the parent's layout (checked then).
    if (layout instanceof ChunkLayout || layout instanceof LayoutTally) {
      const layoutBytes = layout instanceof LayoutTally ? layout.bytes : layout.sizes.reduce((sum, n) => sum + n, 0);
      if (layoutBytes !== s.size) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(s.name, 'stream')} layout covers ${layoutBytes} bytes, manifest says ${s.size}`);
    } else if (s.payload === 'whole') {
      throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(s.name, 'stream')} is stored whole but its layout is a delta`);
    }
    if (s.payload === 'whole') {
      if (!got) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(s.name, 'stream')} is missing its data`);
      if (got.size !== s.size || got.sha256 !== s.sha256) {
        throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(s.name, 'stream')} does not match the SHA-256 in the manifest`);
      }
      if (got.layout && layout instanceof ChunkLayout && !got.layout.hashes.equals(layout.hashes)) throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(s.name, 'stream')} chunks do not match their layout`);
    } else {
      const stored = got?.stored ?? { count: 0, bytes: 0 };
      if (stored.count !== s.storedChunks || stored.bytes !== s.storedBytes) {
        throw new StrataError('ARTIFACT_CORRUPT', redactable`${where}: stream ${named(s.name, 'stream')} holds ${stored.count} chunks, manifest says ${s.storedChunks}`);
      }
    }
  }
}
