import type { SnapshotFinish, SnapshotStream, TableStats } from '../engine.js';
import { createHash } from 'node:crypto';
import { chunkParts } from './chunker.js';
import { StrataError, named, redactable, throwIfAborted } from '../errors.js';
import { CHUNK_HASH_BYTES, ChunkLayout, ChunkLayoutBuilder, chunkHash, encodeSegmentIndex, expectedChunks, layoutEntryFor } from './chunk-index.js';
import type { LayoutEntry, SegmentRecord } from './chunk-index.js';
import { deltaFacts } from './facts-delta.js';
import type { CompleteFacts } from './facts-delta.js';
import { FACTS_DELTA_FORMAT_VERSION, MANIFEST_ENTRY, README_ENTRY, SCHEMA_ENTRY } from './manifest.js';
import type { Manifest, StreamDescriptor, StreamManifest } from './manifest.js';
import { tarHeaderBytes, tarPadding, tarTrailer } from './tar.js';

/** Stored chunks are gathered into tar entries of at most this many bytes (bounded memory). */
const SEGMENT_BYTES = 8 * 1024 * 1024;

/** What one stream of a new backup should reuse from its parent. */
export interface ParentStream {
  readonly layout: ChunkLayout;
}

/** Everything the writer needs besides the streams; the manifest is completed from what it measures. */
export interface ArtifactPlan {
  readonly manifest: Omit<Manifest, 'streams' | 'tables'>;
  /** Per-table facts, awaited after the streams (an engine may compute them meanwhile). */
  readonly tables: () => Promise<readonly TableStats[]>;
  /** Facts the source knows only once its streams were read (see `Snapshot.finish`). */
  readonly finish?: () => Promise<SnapshotFinish>;
  readonly streams: readonly SnapshotStream[];
  readonly schemaSql: string;
  /** The engine's paragraph for README.txt (see `HandRecovery.layout`). */
  readonly readme?: string;
  /** Per stream name: the parent's layout, for incrementals and differentials. */
  readonly parents: ReadonlyMap<string, ParentStream>;
  /** The parent's complete facts: given, the manifest stores only what changed since (format version 2). */
  readonly parentFacts?: CompleteFacts;
  readonly signal?: AbortSignal;
  /** Called with the bytes of source streams consumed so far. */
  readonly onBytes?: (n: number) => void;
}

/** The finished manifest, available once the archive generator has been read to its end. */
export interface ArtifactResult {
  manifest: Manifest | undefined;
  /** Every stream's complete chunk layout. */
  layouts: Map<string, ChunkLayout>;
  /** The layout entries as written: complete, or deltas against the parent's layouts. */
  layoutEntries: Map<string, LayoutEntry>;
  /** This restore point's complete facts (the manifest may hold only their changes). */
  facts: CompleteFacts | undefined;
}

type Recorded = { manifest?: StreamManifest; layout?: ChunkLayout; entry?: LayoutEntry };

/**
 * README.txt: what a person who opens the archive needs first. The engine's paragraph says what
 * its streams are; core knows none of them.
 */
export function readmeText(engineLayout: string | undefined): string {
  return `This is a Strata backup artifact: a tar archive (possibly compressed with zstd or gzip,
and encrypted with OpenPGP). manifest.json, the last entry, describes everything inside: the
backup's type, its parent and base (a full backup has none), and per stream its size and SHA-256.
schema.sql recreates the schema. streams/<stream>.json describes each stream; its bytes are in
data/<stream> when stored whole, or in chunks/<stream>/<n>.bin (which chunks: the matching .idx)
when stored as segments; layout/<stream>.idx says which chunk goes where.

${engineLayout ?? 'The engine that wrote it describes its streams in docs/FORMAT.md.'}

An incremental or differential holds only what changed since its parent, so it is recovered with
its whole chain (full, differential, incrementals): with Strata (strata restore), or without it
by docs/recover-chain.py of the Strata project (Python 3 and gpg, zstd or gzip), which checks
every chunk and stream against the manifests. docs/FORMAT.md documents the format and the
commands that load the result.
`;
}

/**
 * Produces the tar bytes of an artifact. Streams are read once: each is cut into chunks, every
 * chunk is hashed, and chunks the parent already has are left out. The manifest, which needs the
 * hashes, is the archive's last entry.
 */
export function writeArchive(plan: ArtifactPlan): { archive: AsyncGenerator<Uint8Array>; result: ArtifactResult } {
  const result: ArtifactResult = { manifest: undefined, layouts: new Map(), layoutEntries: new Map(), facts: undefined };
  // Entries carry the backup's time, so files extracted by hand show when the backup was taken.
  const mtime = new Date(plan.manifest.createdAt);
  async function* generate(): AsyncGenerator<Uint8Array> {
    yield* entry(README_ENTRY, Buffer.from(readmeText(plan.readme)), mtime);
    yield* entry(SCHEMA_ENTRY, Buffer.from(plan.schemaSql, 'utf8'), mtime);
    const streams: StreamManifest[] = [];
    for (const stream of plan.streams) {
      const parent = plan.parents.get(stream.name);
      const recorded: Recorded = {};
      const whole = !parent && stream.size !== undefined && !stream.inherited;
      // A small descriptor ahead of the payload tells a reader how to cut and check the chunks.
      const size = stream.inherited?.size ?? stream.size ?? null;
      const descriptor: StreamDescriptor = { name: stream.name, size, chunking: stream.chunking, payload: whole ? 'whole' : 'segments' };
      yield* entry(`streams/${stream.name}.json`, Buffer.from(JSON.stringify(descriptor) + '\n'), mtime);
      if (stream.inherited) yield* inheritedStream(stream, stream.inherited, parent, recorded, mtime);
      else if (whole) yield* wholeStream(stream, recorded, plan, mtime);
      else yield* segmentedStream(stream, parent, recorded, plan, mtime);
      streams.push(recorded.manifest!);
      result.layouts.set(stream.name, recorded.layout!);
      result.layoutEntries.set(stream.name, recorded.entry!);
    }
    const finished = { ...plan.manifest, ...(await plan.finish?.()) };
    const facts: CompleteFacts = { tables: await plan.tables(), ...(finished.schemaObjects ? { schemaObjects: finished.schemaObjects } : {}) };
    const delta = plan.parentFacts ? deltaFacts(facts, plan.parentFacts, plan.manifest.nonTableFacts) : undefined;
    const manifest: Manifest = delta
      ? { ...finished, formatVersion: FACTS_DELTA_FORMAT_VERSION, ...(delta.schemaObjects ? { schemaObjects: delta.schemaObjects } : {}), tables: delta.tables, factsDelta: delta.delta, streams }
      : { ...finished, tables: facts.tables, streams };
    result.manifest = manifest;
    result.facts = facts;
    yield* entry(MANIFEST_ENTRY, Buffer.from(JSON.stringify(manifest, null, 2) + '\n'), mtime);
    yield tarTrailer();
  }
  return { archive: generate(), result };
}

function* entry(name: string, body: Buffer, mtime: Date): Generator<Uint8Array> {
  yield tarHeaderBytes({ name, size: body.length, mtime });
  yield body;
  const pad = tarPadding(body.length);
  if (pad.length > 0) yield pad;
}

/** A chunk of a stream being backed up: the source's pieces it spans, its length and its id. */
interface HashedChunk {
  readonly parts: readonly Buffer[];
  readonly length: number;
  readonly hash: Buffer;
}

/**
 * The stream's chunks with their ids; `result.sha256` is the whole stream's SHA-256 once the
 * iteration has ended. Hashed here, on the thread that read the bytes a moment ago: a thread of
 * its own for the hashing (tried) cost more CPU than it saved, since its copy of every byte
 * arrived in another core's cache, and on two cores the total is what a backup waits for.
 */
async function* hashedChunks(stream: SnapshotStream, plan: ArtifactPlan, result: { sha256?: string }): AsyncGenerator<HashedChunk> {
  const sha = createHash('sha256');
  for await (const parts of chunkParts(stream.open({ signal: plan.signal }), stream.chunking)) {
    let length = 0;
    for (const part of parts) {
      sha.update(part);
      length += part.length;
    }
    yield { parts, length, hash: parts.length === 1 ? chunkHash(parts[0]!) : idOfParts(parts) };
  }
  result.sha256 = sha.digest('hex');
}

/** {@link chunkHash} of a chunk given as the pieces it spans, without joining them. */
function idOfParts(parts: readonly Buffer[]): Buffer {
  const sha = createHash('sha256');
  for (const part of parts) sha.update(part);
  return sha.digest().subarray(0, CHUNK_HASH_BYTES);
}

/** A full stream whose size is known: one tar entry with every byte, readable with plain `tar`. */
async function* wholeStream(stream: SnapshotStream, out: Recorded, plan: ArtifactPlan, mtime: Date): AsyncGenerator<Uint8Array> {
  const size = stream.size!;
  const name = `data/${stream.name}`;
  yield tarHeaderBytes({ name, size, mtime });
  const hashed: { sha256?: string } = {};
  const layout = new ChunkLayoutBuilder(expectedChunks(size, stream.chunking));
  let seen = 0;
  for await (const chunk of hashedChunks(stream, plan, hashed)) {
    throwIfAborted(plan.signal, 'backup');
    seen += chunk.length;
    if (seen > size) throw new StrataError('IO', redactable`backup: stream ${named(stream.name, 'stream')} grew while being read (expected ${size} bytes)`);
    layout.add(chunk.hash, chunk.length);
    plan.onBytes?.(chunk.length);
    yield* chunk.parts;
  }
  if (seen !== size) throw new StrataError('IO', redactable`backup: stream ${named(stream.name, 'stream')} ended after ${seen} of ${size} bytes`);
  const pad = tarPadding(size);
  if (pad.length > 0) yield pad;
  yield* finishStream(stream, layout.build(), undefined, { size, sha256: hashed.sha256!, storedChunks: -1, storedBytes: size, payload: 'whole' }, out, mtime);
}

/**
 * The parent's stream, unchanged (SnapshotStream.inherited): its layout is the parent's, no chunk
 * is stored, and nothing is read. The size and SHA-256 come from the parent's manifest; the size
 * is checked against the layout, the SHA-256 by every restore of the stream.
 */
function* inheritedStream(
  stream: SnapshotStream,
  inherited: { readonly size: number; readonly sha256: string },
  parent: ParentStream | undefined,
  out: Recorded,
  mtime: Date,
): Generator<Uint8Array> {
  if (!parent) throw new StrataError('INTERNAL', redactable`backup: stream ${named(stream.name, 'stream')} is said to be the parent's, and the parent has no such stream`);
  const size = parent.layout.sizes.reduce((sum, n) => sum + n, 0);
  if (size !== inherited.size) {
    throw new StrataError('INTERNAL', redactable`backup: the parent's stream ${named(stream.name, 'stream')} has ${size} bytes by its layout, not the ${inherited.size} its manifest records`);
  }
  yield* finishStream(stream, parent.layout, parent, { size, sha256: inherited.sha256, storedChunks: 0, storedBytes: 0, payload: 'segments' }, out, mtime);
}

/**
 * Writes a stream's layout entry (as a delta against the parent's layout when that is smaller)
 * and records its manifest entry (storedChunks -1: all of them).
 */
function* finishStream(
  stream: SnapshotStream,
  built: ChunkLayout,
  parent: ParentStream | undefined,
  facts: Pick<StreamManifest, 'size' | 'sha256' | 'storedChunks' | 'storedBytes' | 'payload'>,
  out: Recorded,
  mtime: Date,
): Generator<Uint8Array> {
  out.layout = built;
  out.entry = layoutEntryFor(built, parent?.layout);
  const layoutEntry = `layout/${stream.name}.idx`;
  yield* entry(layoutEntry, out.entry.encode(), mtime);
  out.manifest = {
    ...facts,
    name: stream.name,
    chunking: stream.chunking,
    chunkCount: built.count,
    storedChunks: facts.storedChunks < 0 ? built.count : facts.storedChunks,
    layoutEntry,
  };
}

/**
 * A stream stored as segments: only chunks the parent lacks, each segment an index entry (which
 * chunk positions follow) and a data entry. Also used for full backups of streams whose size is
 * unknown up front (server row streams).
 */
async function* segmentedStream(
  stream: SnapshotStream,
  parent: ParentStream | undefined,
  out: Recorded,
  plan: ArtifactPlan,
  mtime: Date,
): AsyncGenerator<Uint8Array> {
  const known = parent ? parent.layout.hashSet() : new Set<string>();
  const hashed: { sha256?: string } = {};
  const layout = new ChunkLayoutBuilder(stream.size !== undefined ? expectedChunks(stream.size, stream.chunking) : undefined);
  let size = 0;
  let storedChunks = 0;
  let storedBytes = 0;
  let segment = 0;
  let pending: Buffer[] = [];
  let pendingRecords: SegmentRecord[] = [];
  let pendingBytes = 0;
  const flush = function* (): Generator<Uint8Array> {
    if (pendingRecords.length === 0) return;
    const base = `chunks/${stream.name}/${String(segment).padStart(6, '0')}`;
    yield* entry(`${base}.idx`, encodeSegmentIndex(pendingRecords), mtime);
    yield tarHeaderBytes({ name: `${base}.bin`, size: pendingBytes, mtime });
    yield* pending;
    const pad = tarPadding(pendingBytes);
    if (pad.length > 0) yield pad;
    segment++;
    pending = [];
    pendingRecords = [];
    pendingBytes = 0;
  };
  for await (const chunk of hashedChunks(stream, plan, hashed)) {
    throwIfAborted(plan.signal, 'backup');
    size += chunk.length;
    const hash = chunk.hash;
    const position = layout.add(hash, chunk.length);
    plan.onBytes?.(chunk.length);
    const key = hash.toString('hex');
    if (known.has(key)) continue;
    // With a parent, a chunk that repeats inside this backup is stored once (restores place
    // chunks by hash). Without one, every chunk is stored in order, so the segments of a full
    // backup concatenate to the stream for a person recovering by hand.
    if (parent) known.add(key);
    // A full backup stores every chunk, so views are enough: the stream's pieces are never written
    // to again (SnapshotStream.open). With a parent only changed chunks are stored, a few of each
    // piece, and a view would keep its whole piece alive until the segment is written (a 1 MiB
    // read for one 4 KiB page): changes spread over a 1 GiB database pinned 270 MB. A copy keeps
    // the page alone.
    if (parent) pending.push(Buffer.concat(chunk.parts, chunk.length));
    else pending.push(...chunk.parts);
    pendingRecords.push({ position, size: chunk.length, hash });
    pendingBytes += chunk.length;
    storedChunks++;
    storedBytes += chunk.length;
    if (pendingBytes >= SEGMENT_BYTES) yield* flush();
  }
  yield* flush();
  yield* finishStream(stream, layout.build(), parent, { size, sha256: hashed.sha256!, storedChunks, storedBytes, payload: 'segments' }, out, mtime);
}
