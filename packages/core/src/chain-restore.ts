import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { BackupRecord } from './catalog.js';
import type { Passphrase } from './encryption.js';
import type { RestoreSession, StreamTarget } from './engine.js';
import { StrataError, errorText, isStrataError, named, redactable, throwIfAborted, wrapError } from './errors.js';
import type { MessageText } from './errors.js';
import { readArtifact } from './format/artifact-reader.js';
import type { ArtifactContents, ArtifactLocation, StreamWriter } from './format/artifact-reader.js';
import type { ChunkLayout, LayoutEntry } from './format/chunk-index.js';
import type { ProgressListener } from './progress.js';
import type { Storage } from './storage.js';

/** One restore point of a chain and where its artifact is. */
export interface ChainLink {
  readonly record: BackupRecord;
  readonly location: ArtifactLocation;
  /** Its artifact's OpenPGP password (a chain spans several data keys after a rotation). */
  readonly passphrase: Passphrase | undefined;
}

export interface ChainRestoreOptions {
  readonly storage: Storage;
  /** Oldest first; the last link is the restore point wanted. */
  readonly chain: readonly ChainLink[];
  readonly session: RestoreSession;
  readonly tempDir: string;
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
  /** Checks that an artifact's manifest is the backup the catalog says it is. */
  readonly checkManifest: (contents: ArtifactContents, record: BackupRecord) => void;
  /** The tip's complete layouts from its layout entries (deltas need the parent's layouts). */
  readonly completeLayouts: (entries: ReadonlyMap<string, LayoutEntry>) => Promise<ReadonlyMap<string, ChunkLayout>>;
  /** Restore only these streams (the session is asked for no other); all of them when absent. */
  readonly only?: ReadonlySet<string>;
}

/** Writes bytes at an offset of a file; page-sized writes are gathered while they are contiguous. */
class PositionalFile {
  #pending: Buffer[] = [];
  #pendingStart = -1;
  #pendingBytes = 0;

  private constructor(
    readonly handle: fs.FileHandle,
    readonly file: string,
  ) {}

  static async create(file: string): Promise<PositionalFile> {
    return new PositionalFile(await onTargetSide(file, () => fs.open(file, 'w+', 0o600)), file);
  }

  async writeAt(offset: number, bytes: Buffer): Promise<void> {
    if (this.#pendingBytes > 0 && offset === this.#pendingStart + this.#pendingBytes && this.#pendingBytes < 1024 * 1024) {
      this.#pending.push(bytes);
      this.#pendingBytes += bytes.length;
      return;
    }
    await this.flush();
    this.#pending = [bytes];
    this.#pendingStart = offset;
    this.#pendingBytes = bytes.length;
  }

  async flush(): Promise<void> {
    if (this.#pendingBytes === 0) return;
    const data = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending, this.#pendingBytes);
    let done = 0;
    await onTargetSide(this.file, async () => {
      while (done < data.length) done += (await this.handle.write(data, done, data.length - done, this.#pendingStart + done)).bytesWritten;
    });
    this.#pending = [];
    this.#pendingBytes = 0;
  }

  async close(): Promise<void> {
    await this.flush();
    await this.handle.close();
  }
}

/**
 * Restores the last link of a chain. The newest artifact is read first: its layouts say which
 * chunk belongs where, and its own chunks are kept aside. Then the ancestors are read, newest
 * first, and each chunk still missing is written at every position that needs it; reading stops
 * early once nothing is missing. Every stream is finally checked against the SHA-256 its manifest
 * recorded, before the engine's session commits anything.
 *
 * Memory holds the positions of missing chunks (a few bytes per chunk), never chunk data beyond
 * one artifact read buffer; chunk data goes through temporary files.
 */
export async function restoreChain(options: ChainRestoreOptions): Promise<{ contents: ArtifactContents; bytes: number }> {
  const { chain } = options;
  const session = targetSideSession(options.session);
  const tip = chain.at(-1)!;
  await fs.mkdir(options.tempDir, { recursive: true });
  const spoolFile = path.join(options.tempDir, `chunks-${randomBytes(6).toString('hex')}.spool`);
  const spool = await fs.open(spoolFile, 'w+', 0o600);
  const spooled = new Map<string, { offset: number; size: number }>();
  let spoolBytes = 0;
  const direct = new Map<string, StreamWriter>();
  const spooledStreams = new Set<string>();
  // Row streams of a lone full backup, written in order as their chunks arrive.
  const ordered = {
    hashes: new Map<string, string>(),
    current: undefined as { name: string; next: number; sha: ReturnType<typeof createHash>; writer: StreamWriter & { close(): Promise<void> } } | undefined,
    async write(name: string, position: number, chunk: Buffer): Promise<boolean> {
      if (!wanted(name)) return true;
      if (this.current && this.current.name !== name) await this.end();
      if (!this.current) {
        if (position !== 0 || this.hashes.has(name)) return false;
        const target = await session.streamTarget(name);
        targets.set(name, target);
        this.current = { name, next: 0, sha: createHash('sha256'), writer: await sequentialWriter(target, (n) => (bytes += n)) };
      }
      if (position !== this.current.next) throw new StrataError('ARTIFACT_CORRUPT', redactable`restore ${tip.record.id}: stream ${named(name, 'stream')} has chunks out of order`);
      this.current.next++;
      this.current.sha.update(chunk);
      await this.current.writer.write(chunk);
      return true;
    },
    async end(): Promise<void> {
      if (!this.current) return;
      await this.current.writer.end();
      this.hashes.set(this.current.name, this.current.sha.digest('hex'));
      this.current = undefined;
    },
    async finish(): Promise<void> {
      await this.end();
    },
  };
  const wanted = (name: string): boolean => !options.only || options.only.has(name);
  const assembled: PositionalFile[] = [];
  const targets = new Map<string, StreamTarget>();
  let bytes = 0;
  try {
    const progress = (link: ChainLink) => (n: number) =>
      options.onProgress?.({ operation: 'restore', phase: 'read', doneBytes: n, totalBytes: link.record.storedBytes, backupId: link.record.id });

    // 1. The tip: a lone full backup streams straight into its targets; otherwise keep its chunks aside.
    const contents = await readArtifact({
      storage: options.storage,
      location: tip.location,
      passphrase: tip.passphrase,
      signal: options.signal,
      onBytes: progress(tip),
      verifyChunks: false,
      onSchema: async (schemaSql) => session.prepare?.(schemaSql),
      streamWriter:
        chain.length === 1
          ? async (name) => {
              if (!wanted(name)) return { write: async () => undefined, end: async () => undefined };
              const target = await session.streamTarget(name);
              targets.set(name, target);
              const writer = await sequentialWriter(target, (n) => (bytes += n));
              direct.set(name, writer);
              return writer;
            }
          : undefined,
      onChunk: async (stream, record, chunk) => {
        // A lone full backup stores every chunk of a row stream in order: stream it straight
        // into its target, like a whole stream, instead of through the spool.
        if (chain.length === 1 && !spooledStreams.has(stream)) {
          const inOrder = await ordered.write(stream, record.position, chunk);
          if (inOrder) return;
          spooledStreams.add(stream);
        }
        const key = record.hash.toString('hex');
        if (spooled.has(key)) return;
        let done = 0;
        while (done < chunk.length) done += (await spool.write(chunk, done, chunk.length - done, spoolBytes + done)).bytesWritten;
        spooled.set(key, { offset: spoolBytes, size: chunk.length });
        spoolBytes += chunk.length;
      },
    });
    await ordered.finish();
    options.checkManifest(contents, tip.record);
    for (const [name, sha] of ordered.hashes) {
      if (!wanted(name)) continue;
      const expected = contents.manifest.streams.find((s) => s.name === name);
      if (!expected || sha !== expected.sha256) {
        throw new StrataError('ARTIFACT_CORRUPT', redactable`restore ${tip.record.id}: stream ${named(name, 'stream')} does not match the SHA-256 in its manifest`);
      }
    }
    const pending = contents.manifest.streams.filter((s) => wanted(s.name) && !direct.has(s.name) && !ordered.hashes.has(s.name));
    if (pending.length === 0) return { contents, bytes };

    // 2. Where every missing chunk goes: stream index and chunk index packed in one number.
    const complete = await options.completeLayouts(contents.layouts);
    const files: PositionalFile[] = [];
    const offsets: Float64Array[] = [];
    const layouts: ChunkLayout[] = [];
    const needed = new Map<string, number[]>();
    for (const [streamIndex, stream] of pending.entries()) {
      const layout = complete.get(stream.name);
      if (!layout || layout.count !== stream.chunkCount || layout.sizes.reduce((sum, n) => sum + n, 0) !== stream.size) {
        throw new StrataError('ARTIFACT_CORRUPT', redactable`restore ${tip.record.id}: the layout of stream ${named(stream.name, 'stream')} does not cover the ${stream.chunkCount} chunks and ${stream.size} bytes its manifest records`);
      }
      const target = await session.streamTarget(stream.name);
      targets.set(stream.name, target);
      const file = await PositionalFile.create(target.kind === 'file' ? target.path : path.join(options.tempDir, `assemble-${randomBytes(6).toString('hex')}`));
      assembled.push(file);
      files.push(file);
      layouts.push(layout);
      const starts = new Float64Array(layout.count);
      let at = 0;
      for (let i = 0; i < layout.count; i++) {
        starts[i] = at;
        at += layout.sizes[i]!;
      }
      offsets.push(starts);
      await file.handle.truncate(at);
      for (let i = 0; i < layout.count; i++) {
        const key = layout.hashAt(i).toString('hex');
        const slot = streamIndex * 2 ** 32 + i;
        const list = needed.get(key);
        if (list) list.push(slot);
        else needed.set(key, [slot]);
      }
    }
    const place = async (key: string, chunk: Buffer): Promise<void> => {
      const slots = needed.get(key);
      if (!slots) return;
      needed.delete(key);
      for (const slot of slots) {
        const streamIndex = Math.floor(slot / 2 ** 32);
        const chunkIndex = slot % 2 ** 32;
        if (layouts[streamIndex]!.sizes[chunkIndex] !== chunk.length) {
          throw new StrataError('ARTIFACT_CORRUPT', `restore ${tip.record.id}: chunk ${key} has ${chunk.length} bytes, the layout expects ${layouts[streamIndex]!.sizes[chunkIndex]}`);
        }
        await files[streamIndex]!.writeAt(offsets[streamIndex]![chunkIndex]!, chunk);
      }
    };

    // 3. Chunks the tip itself holds.
    for (const [key, where] of spooled) {
      if (!needed.has(key)) continue;
      const chunk = Buffer.alloc(where.size);
      await spool.read(chunk, 0, where.size, where.offset);
      await place(key, chunk);
    }

    // 4. The ancestors, newest first, until nothing is missing.
    for (let i = chain.length - 2; i >= 0 && needed.size > 0; i--) {
      throwIfAborted(options.signal, 'restore');
      const link = chain[i]!;
      try {
        const read = await readArtifact({
          storage: options.storage,
          location: link.location,
          passphrase: link.passphrase,
          signal: options.signal,
          onBytes: progress(link),
          onChunk: async (_stream, record, chunk) => place(record.hash.toString('hex'), chunk),
        });
        options.checkManifest(read, link.record);
      } catch (err) {
        // The user asked for the tip; what they must hear is which older restore point it builds
        // on is the damaged one, in the words a missing ancestor gets (ChainReader.checkPresent).
        if (!isStrataError(err, 'ARTIFACT_CORRUPT')) throw err;
        throw new StrataError('CHAIN_BROKEN', redactable`restore ${tip.record.id}: ancestor ${link.record.id} is damaged: ${errorText(err)}`, {
          cause: err,
          details: { ...err.details, damaged: link.record.id },
        });
      }
    }
    if (needed.size > 0) {
      throw new StrataError('CHAIN_BROKEN', `restore ${tip.record.id}: ${needed.size} chunk(s) are in no artifact of its chain (${chain.map((l) => l.record.id).join(' → ')})`);
    }

    // 5. Check each assembled stream against the manifest, then hand it to its target.
    for (const [streamIndex, stream] of pending.entries()) {
      const file = files[streamIndex]!;
      await file.flush();
      await file.handle.sync();
      const sha = createHash('sha256');
      const reader = await fs.open(file.file, 'r');
      try {
        const target = targets.get(stream.name)!;
        for await (const piece of reader.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false })) {
          sha.update(piece as Buffer);
          if (target.kind === 'sink') await target.write(piece as Buffer);
          bytes += (piece as Buffer).length;
        }
        if (target.kind === 'sink') await target.end();
      } finally {
        await reader.close();
      }
      if (sha.digest('hex') !== stream.sha256) {
        throw new StrataError('ARTIFACT_CORRUPT', redactable`restore ${tip.record.id}: assembled stream ${named(stream.name, 'stream')} does not match the SHA-256 in its manifest`);
      }
    }
    return { contents, bytes };
  } finally {
    await Promise.all([...direct.values()].map((w) => (w as { close?: () => Promise<void> }).close?.().catch(() => undefined)));
    await ordered.current?.writer.close().catch(() => undefined);
    for (const file of assembled) await file.close().catch(() => undefined);
    await spool.close().catch(() => undefined);
    await fs.rm(spoolFile, { force: true });
    // Assembly files of sink targets are ours to remove; file targets belong to the session.
    await Promise.all(
      assembled.filter((f) => path.dirname(f.file) === options.tempDir && path.basename(f.file).startsWith('assemble-')).map((f) => fs.rm(f.file, { force: true })),
    );
  }
}

/** Opens a restore target for sequential writing (the fast path of a lone full backup). */
export async function sequentialWriter(target: StreamTarget, onBytes: (n: number) => void): Promise<StreamWriter & { close(): Promise<void> }> {
  if (target.kind === 'sink') {
    return {
      write: async (chunk) => {
        await target.write(chunk);
        onBytes(chunk.length);
      },
      end: () => target.end(),
      close: async () => undefined,
    };
  }
  const handle = await onTargetSide(target.path, () => fs.open(target.path, 'w', 0o600));
  let open = true;
  // Writes are gathered to about 1 MiB: page-sized writes would cost a syscall per 4 KiB.
  let batch: Buffer[] = [];
  let batched = 0;
  const flush = async (): Promise<void> => {
    if (batched === 0) return;
    const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched);
    batch = [];
    batched = 0;
    let offset = 0;
    await onTargetSide(target.path, async () => {
      while (offset < data.length) offset += (await handle.write(data, offset, data.length - offset)).bytesWritten;
    });
  };
  return {
    write: async (chunk) => {
      // No copy: decoders hand out a fresh buffer for every piece they produce.
      batch.push(chunk);
      batched += chunk.length;
      onBytes(chunk.length);
      if (batched >= 1024 * 1024) await flush();
    },
    end: async () => {
      await flush();
      await onTargetSide(target.path, () => handle.sync());
      open = false;
      await handle.close();
    },
    close: async () => {
      if (open) {
        open = false;
        await handle.close();
      }
    },
  };
}

/**
 * Failures of the side that receives a restore (its folder, its disk, its server) are named as
 * such. Without this they surface inside the artifact reader and read as "read backups/...", which
 * sends a user looking for a damaged backup when the target folder is read-only or full.
 */
async function onTargetSide<T>(what: MessageText, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw targetFailure(what, err);
  }
}

function targetFailure(what: MessageText, err: unknown): StrataError {
  if (isStrataError(err)) return err;
  // System errors: a full disk becomes NO_SPACE, a permission problem IO, both naming the file.
  if (typeof (err as { syscall?: unknown })?.syscall === 'string') return wrapError(redactable`restore: write ${what}`, err);
  return new StrataError('RESTORE_FAILED', redactable`restore: ${what} did not take the data: ${errorText(err)}`, { cause: err });
}

/** The session with each sink's errors named as the target's (see {@link onTargetSide}). */
function targetSideSession(session: RestoreSession): RestoreSession {
  return {
    ...session,
    prepare: session.prepare?.bind(session),
    commit: session.commit.bind(session),
    abort: session.abort.bind(session),
    streamTarget: async (name) => {
      const target = await session.streamTarget(name);
      if (target.kind !== 'sink') return target;
      const what = redactable`the target's stream ${named(name, 'stream')}`;
      return { kind: 'sink', write: (chunk) => onTargetSide(what, () => target.write(chunk)), end: () => onTargetSide(what, () => target.end()) };
    },
  };
}
