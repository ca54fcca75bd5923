import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Readable, pipeline } from 'node:stream';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import { StrataError, throwIfAborted } from './errors.js';

export type CodecName = 'zstd' | 'gzip' | 'none';

/** Compression settings of a repository (chosen at `init`, recorded in every catalog entry). */
export interface CompressionConfig {
  readonly codec: CodecName;
  /** zstd 1–19 (default 3), gzip 1–9 (default 6). Ignored for `none`. */
  readonly level: number;
}

export const DEFAULT_LEVELS: Readonly<Record<CodecName, number>> = { zstd: 3, gzip: 6, none: 0 };

/**
 * Input is compressed in independent blocks of this size: each block becomes one zstd frame or
 * one gzip member. Concatenated frames/members are a valid .zst/.gz file for the standard tools,
 * and independent blocks can be compressed on both cores at once, which matters because
 * compression is the slowest stage of a backup (see reference/perf-anchors.md).
 */
const BLOCK_BYTES = 4 * 1024 * 1024;

/** A compression codec as the pipeline uses it. */
export interface Codec {
  readonly name: CodecName;
  /** File extension of its output (`.zst`, `.gz`, or empty). */
  readonly extension: string;
  compress(source: AsyncIterable<Uint8Array>, level: number, signal?: AbortSignal): AsyncIterable<Uint8Array>;
  decompress(source: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncIterable<Uint8Array>;
}

/** How many blocks are compressed at the same time: one per core, at least two. */
function concurrency(): number {
  return Math.max(2, Math.min(availableParallelism(), 4));
}

/**
 * Reusable block buffers. Compression takes a fresh 4 MiB block every few milliseconds; letting
 * each become garbage made glibc keep tens of MiB of freed blocks resident. Blocks come back
 * here once compressed, so a backup uses the same handful of buffers from start to end.
 */
class BlockPool {
  readonly #free: ArrayBuffer[] = [];

  take(): ArrayBuffer {
    return this.#free.pop() ?? new ArrayBuffer(BLOCK_BYTES);
  }

  give(buffer: ArrayBuffer): void {
    if (buffer.byteLength === BLOCK_BYTES && this.#free.length < 8) this.#free.push(buffer);
  }
}

const blockPool = new BlockPool();

/** Groups a byte stream into blocks of BLOCK_BYTES (the last one shorter), copied into pooled buffers. */
async function* blocks(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let block = Buffer.from(blockPool.take());
  let size = 0;
  for await (const piece of source) {
    let offset = 0;
    while (offset < piece.byteLength) {
      const take = Math.min(BLOCK_BYTES - size, piece.byteLength - offset);
      block.set(piece.subarray(offset, offset + take), size);
      size += take;
      offset += take;
      if (size === BLOCK_BYTES) {
        yield block;
        block = Buffer.from(blockPool.take());
        size = 0;
      }
    }
  }
  if (size > 0) yield block.subarray(0, size);
  else blockPool.give(block.buffer as ArrayBuffer);
}

/**
 * Marks a promise that is awaited later, in order, as handled now: a block that fails while
 * earlier ones are still awaited must not count as an unhandled rejection (which ends the
 * process), since its error still reaches whoever awaits it.
 */
function settledLater<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/**
 * Runs `work` on up to `limit` blocks at once and yields results in input order. Memory stays at
 * about `2 * limit` blocks whatever the input size.
 */
async function* ordered(source: AsyncIterable<Buffer>, limit: number, work: (block: Buffer) => Promise<Buffer>, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const inFlight: Promise<Buffer>[] = [];
  try {
    for await (const block of source) {
      throwIfAborted(signal, 'compress');
      inFlight.push(settledLater(work(block)));
      if (inFlight.length >= limit) yield await inFlight.shift()!;
    }
    while (inFlight.length > 0) yield await inFlight.shift()!;
  } finally {
    // On early exit, settle the rest so no rejection goes unhandled.
    for (const p of inFlight) p.catch(() => undefined);
  }
}

/**
 * Feeds a byte stream through a Node transform. `pipeline` (unlike `.pipe`) carries an error in
 * the source into the transform, so the reader's iteration rejects instead of the process
 * crashing on an unhandled 'error' event.
 */
function through(source: AsyncIterable<Uint8Array>, transform: Duplex): AsyncIterable<Uint8Array> {
  return pipeline(Readable.from(source), transform, () => undefined) as unknown as AsyncIterable<Uint8Array>;
}

const gzipAsync = promisify(zlib.gzip);

/** gzip through node:zlib; blocks run on libuv's thread pool, so several cores work at once. */
const gzipCodec: Codec = {
  name: 'gzip',
  extension: '.gz',
  compress: (source, level, signal) =>
    ordered(
      blocks(source),
      concurrency(),
      async (block) => {
        const out = await gzipAsync(block, { level });
        blockPool.give(block.buffer as ArrayBuffer);
        return out;
      },
      signal,
    ),
  decompress: (source) => through(source, zlib.createGunzip({ chunkSize: 1024 * 1024 })),
};

const noneCodec: Codec = {
  name: 'none',
  extension: '',
  compress: (source) => source,
  decompress: (source) => source,
};

type ZlibWithZstd = typeof zlib & {
  zstdCompress?: (buf: Buffer, options: object, cb: (err: Error | null, out: Buffer) => void) => void;
  createZstdDecompress?: () => NodeJS.ReadWriteStream;
  constants: typeof zlib.constants & { ZSTD_c_compressionLevel?: number };
};

/** zstd built into node:zlib (Node 22.15+ and 23.8+): async, on the thread pool. */
function nodeZstdCodec(): Codec | undefined {
  const z = zlib as ZlibWithZstd;
  if (typeof z.zstdCompress !== 'function' || typeof z.createZstdDecompress !== 'function' || z.constants.ZSTD_c_compressionLevel === undefined) {
    return undefined;
  }
  const compressAsync = promisify(z.zstdCompress);
  const levelParam = z.constants.ZSTD_c_compressionLevel;
  return {
    name: 'zstd',
    extension: '.zst',
    compress: (source, level, signal) =>
      ordered(
        blocks(source),
        concurrency(),
        async (block) => {
          const out = await compressAsync(block, { params: { [levelParam]: level } });
          blockPool.give(block.buffer as ArrayBuffer);
          return out;
        },
        signal,
      ),
    decompress: (source) => through(source, z.createZstdDecompress!() as unknown as Duplex),
  };
}

/** The zstd-napi addon's surface we use (an optional dependency; built from source on install). */
interface ZstdNapi {
  DecompressStream: new () => NodeJS.ReadWriteStream;
}

const require = createRequire(import.meta.url);

function loadZstdNapi(): { module: ZstdNapi; bindingPath: string } | undefined {
  try {
    // The package's low-level binding compresses into a buffer we provide (no allocation per block).
    const bindingPath = require.resolve('zstd-napi').replace(/dist[\\/]index\.js$/, 'binding.js');
    const module = require('zstd-napi') as ZstdNapi;
    require(bindingPath);
    return { module, bindingPath };
  } catch {
    return undefined;
  }
}

/**
 * A pool of worker threads that each compress blocks with zstd-napi. The addon only compresses
 * synchronously, so without workers it would hold the main thread (and one core) for the whole
 * backup; with them both cores compress while the main thread reads, encrypts and writes.
 */
class ZstdWorkerPool {
  readonly #workers: Worker[] = [];
  readonly #idle: Worker[] = [];
  readonly #waiting: ((w: Worker) => void)[] = [];
  #users = 0;

  constructor(
    readonly bindingPath: string,
    readonly size: number,
  ) {}

  #spawn(): Worker {
    // The worker compresses into one reused output buffer and sends back both the result (a
    // right-sized copy) and the input block, which returns to the pool. It also decompresses
    // single frames into a buffer of the size their header declares.
    const source = `
      const { parentPort } = require('node:worker_threads');
      const zstd = require(${JSON.stringify(this.bindingPath)});
      const cctx = new zstd.CCtx();
      const dctx = new zstd.DCtx();
      let out = Buffer.alloc(0);
      parentPort.on('message', ({ id, op, level, size, data, length }) => {
        try {
          const input = new Uint8Array(data, 0, length);
          let result;
          if (op === 'decompress') {
            // One whole frame whose header declared its size (checked before it was sent).
            result = new ArrayBuffer(size);
            const n = dctx.decompress(new Uint8Array(result), input);
            if (n !== size) throw new Error('a frame decompressed to ' + n + ' bytes, its header says ' + size);
          } else {
            const bound = zstd.compressBound(length);
            if (out.length < bound) out = Buffer.allocUnsafeSlow(bound);
            const n = cctx.compress(out, input, level);
            result = new ArrayBuffer(n);
            new Uint8Array(result).set(out.subarray(0, n));
          }
          parentPort.postMessage({ id, data: result, input: data }, [result, data]);
        } catch (err) {
          parentPort.postMessage({ id, error: String(err && err.message || err), input: data }, [data]);
        }
      });`;
    const worker = new Worker(source, { eval: true });
    worker.unref();
    this.#workers.push(worker);
    return worker;
  }

  async #take(): Promise<Worker> {
    const idle = this.#idle.pop();
    if (idle) return idle;
    if (this.#workers.length < this.size) return this.#spawn();
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #give(worker: Worker): void {
    const next = this.#waiting.shift();
    if (next) next(worker);
    else this.#idle.push(worker);
  }

  compress(block: Buffer, level: number): Promise<Buffer> {
    // Pooled blocks own their whole 4 MiB buffer; it moves to the worker and comes back.
    return this.#run({ op: 'compress', level, data: block.buffer as ArrayBuffer, length: block.byteLength }, 'compress');
  }

  /** Decompresses one whole zstd frame whose header declares `size` bytes of content. */
  decompress(frame: Buffer, size: number): Promise<Buffer> {
    // The frame's memory moves to the worker, so it must be an ArrayBuffer of its own: small
    // Buffers share Node's pool slab (which must never be transferred), and subarrays share their parent's.
    let data = frame.buffer as ArrayBuffer;
    if (frame.byteOffset !== 0 || data.byteLength !== frame.byteLength) {
      data = new ArrayBuffer(frame.byteLength);
      new Uint8Array(data).set(frame);
    }
    return this.#run({ op: 'decompress', size, data, length: frame.byteLength }, 'decompress');
  }

  async #run(message: { op: 'compress' | 'decompress'; level?: number; size?: number; data: ArrayBuffer; length: number }, what: string): Promise<Buffer> {
    const worker = await this.#take();
    try {
      return await new Promise<Buffer>((resolve, reject) => {
        const id = Math.random();
        const onMessage = (msg: { id: number; data?: ArrayBuffer; input?: ArrayBuffer; error?: string }): void => {
          if (msg.id !== id) return;
          worker.off('message', onMessage);
          worker.off('error', onError);
          if (msg.input) blockPool.give(msg.input);
          if (msg.error !== undefined) reject(new StrataError(what === 'compress' ? 'IO' : 'ARTIFACT_CORRUPT', `${what}: zstd failed: ${msg.error}`));
          else resolve(Buffer.from(msg.data!));
        };
        const onError = (err: Error): void => {
          worker.off('message', onMessage);
          reject(new StrataError('IO', `${what}: zstd worker failed: ${err.message}`, { cause: err }));
        };
        worker.on('message', onMessage);
        worker.on('error', onError);
        worker.postMessage({ id, ...message }, [message.data]);
      });
    } finally {
      this.#give(worker);
    }
  }

  /** Keeps the workers referenced while a backup runs so the process waits for them. */
  acquire(): void {
    if (this.#users++ === 0) for (const w of this.#workers) w.ref();
  }

  release(): void {
    if (--this.#users === 0) for (const w of this.#workers) w.unref();
  }
}

let zstdPool: ZstdWorkerPool | undefined;

function napiZstdCodec(): Codec | undefined {
  const loaded = loadZstdNapi();
  if (!loaded) return undefined;
  const pool = (): ZstdWorkerPool => (zstdPool ??= new ZstdWorkerPool(loaded.bindingPath, concurrency()));
  return {
    name: 'zstd',
    extension: '.zst',
    compress: (source, level, signal) => {
      const workers = pool();
      return (async function* () {
        workers.acquire();
        try {
          yield* ordered(blocks(source), workers.size, (block) => workers.compress(block, level), signal);
        } finally {
          workers.release();
        }
      })();
    },
    decompress: (source, signal) => {
      const workers = pool();
      return (async function* () {
        workers.acquire();
        try {
          yield* decompressFrames(source, workers, () => new loaded.module.DecompressStream() as unknown as Duplex, signal);
        } finally {
          workers.release();
        }
      })();
    },
  };
}

/**
 * Decompresses concatenated zstd frames on the worker pool, several at once, in order. Strata
 * compresses in independent 4 MiB blocks, one frame each with its size in the header, so the
 * frames can be cut apart from their headers alone; decompression then no longer holds the
 * main thread, which decrypts, hashes and writes meanwhile. At the first frame of another
 * shape (no declared size, larger than Strata writes, a skippable frame) the rest of the input
 * goes through one streaming decoder, as before.
 */
async function* decompressFrames(source: AsyncIterable<Uint8Array>, pool: ZstdWorkerPool, streaming: () => Duplex, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const frames = splitFrames(source);
  const inFlight: Promise<Buffer>[] = [];
  try {
    let next = await frames.next();
    while (!next.done) {
      throwIfAborted(signal, 'decompress');
      inFlight.push(settledLater(pool.decompress(next.value.frame, next.value.size)));
      if (inFlight.length >= pool.size * 2) yield await inFlight.shift()!;
      next = await frames.next();
    }
    while (inFlight.length > 0) yield await inFlight.shift()!;
    if (next.value) yield* through(next.value, streaming());
  } finally {
    for (const p of inFlight) p.catch(() => undefined);
  }
}

const ZSTD_MAGIC = 0xfd2fb528;
/** Frames declaring more content than this are not Strata's blocks: they go to the streaming decoder. */
const MAX_PARALLEL_FRAME = 2 * BLOCK_BYTES;

/** Bytes received but not yet handed out as frames, readable at any offset without joining them. */
class PendingBytes {
  // Pieces before #head are taken; the array is compacted now and then instead of shifted,
  // which would cost a copy of the array per piece when the input comes in small pieces.
  #pieces: Buffer[] = [];
  #head = 0;
  #length = 0;
  // Where the last read was: frames are scanned front to back, so the next read starts there.
  #cursorPiece = 0;
  #cursorStart = 0;

  get length(): number {
    return this.#length;
  }

  push(piece: Uint8Array): void {
    const buffer = Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    this.#pieces.push(buffer);
    this.#length += buffer.length;
  }

  /** The little-endian unsigned integer of `bytes` bytes at `offset` (callers check the length first). */
  uint(offset: number, bytes: number): number {
    let value = 0;
    for (let i = 0; i < bytes; i++) value += this.#byteAt(offset + i) * 2 ** (8 * i);
    return value;
  }

  #byteAt(offset: number): number {
    if (offset < this.#cursorStart || this.#cursorPiece < this.#head) this.#resetCursor();
    while (this.#cursorPiece < this.#pieces.length) {
      const piece = this.#pieces[this.#cursorPiece]!;
      if (offset < this.#cursorStart + piece.length) return piece[offset - this.#cursorStart]!;
      this.#cursorStart += piece.length;
      this.#cursorPiece++;
    }
    throw new StrataError('INTERNAL', 'zstd frames: read past the received bytes');
  }

  #resetCursor(): void {
    this.#cursorPiece = this.#head;
    this.#cursorStart = 0;
  }

  /** Removes and returns the first `n` bytes as one buffer. */
  take(n: number): Buffer {
    const parts: Buffer[] = [];
    let needed = n;
    while (needed > 0) {
      const piece = this.#pieces[this.#head]!;
      if (piece.length <= needed) {
        parts.push(piece);
        this.#head++;
        needed -= piece.length;
      } else {
        parts.push(piece.subarray(0, needed));
        this.#pieces[this.#head] = piece.subarray(needed);
        needed = 0;
      }
    }
    this.#length -= n;
    if (this.#head > 1024 && this.#head * 2 > this.#pieces.length) {
      this.#pieces = this.#pieces.slice(this.#head);
      this.#head = 0;
    }
    this.#resetCursor();
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** Everything not taken, followed by the rest of `source`. */
  async *rest(source: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
    const left = this.#pieces.slice(this.#head);
    this.#pieces = [];
    this.#head = 0;
    this.#length = 0;
    this.#resetCursor();
    yield* left;
    for (let next = await source.next(); !next.done; next = await source.next()) yield next.value;
  }
}

/**
 * Cuts a zstd stream into whole frames by walking frame and block headers (RFC 8878, section 3.1).
 * Yields frames that declare their content size (at most MAX_PARALLEL_FRAME); returns the
 * remaining input, untouched, at the first frame that does not, or undefined at the end.
 */
async function* splitFrames(source: AsyncIterable<Uint8Array>): AsyncGenerator<{ frame: Buffer; size: number }, AsyncIterable<Uint8Array> | undefined> {
  const input = source[Symbol.asyncIterator]();
  const pending = new PendingBytes();
  let ended = false;
  /** Waits until `n` bytes are pending; false when the input ends first. */
  const have = async (n: number): Promise<boolean> => {
    while (pending.length < n && !ended) {
      const next = await input.next();
      if (next.done) ended = true;
      else pending.push(next.value);
    }
    return pending.length >= n;
  };
  for (;;) {
    if (!(await have(1))) return undefined;
    // Too short for a frame header, or not a frame Strata writes: the streaming decoder judges it.
    if (!(await have(6)) || pending.uint(0, 4) !== ZSTD_MAGIC) return pending.rest(input);
    const descriptor = pending.uint(4, 1);
    const sizeField = [0, 2, 4, 8][descriptor >> 6]!;
    const singleSegment = (descriptor >> 5) & 1;
    const checksum = (descriptor >> 2) & 1;
    const dictionaryField = [0, 1, 2, 4][descriptor & 3]!;
    const contentSizeBytes = sizeField === 0 && singleSegment ? 1 : sizeField;
    const headerEnd = 5 + (singleSegment ? 0 : 1) + dictionaryField + contentSizeBytes;
    if (contentSizeBytes === 0 || !(await have(headerEnd))) return pending.rest(input);
    const declared = pending.uint(headerEnd - contentSizeBytes, contentSizeBytes) + (contentSizeBytes === 2 ? 256 : 0);
    if (declared > MAX_PARALLEL_FRAME) return pending.rest(input);
    let at = headerEnd;
    for (;;) {
      if (!(await have(at + 3))) return pending.rest(input);
      const header = pending.uint(at, 3);
      const type = (header >> 1) & 3;
      const blockSize = header >>> 3;
      if (type === 3) return pending.rest(input);
      at += 3 + (type === 1 ? 1 : blockSize);
      if (header & 1) break;
      if (at > MAX_PARALLEL_FRAME + 1024 * 1024) return pending.rest(input);
    }
    at += checksum ? 4 : 0;
    if (!(await have(at))) return pending.rest(input);
    yield { frame: pending.take(at), size: declared };
  }
}

let zstdCodec: Codec | undefined | null = null;

/** The zstd codec of this runtime: node:zlib's if it has one, else the zstd-napi addon, else none. */
export function findZstd(): Codec | undefined {
  if (zstdCodec === null) zstdCodec = nodeZstdCodec() ?? napiZstdCodec();
  return zstdCodec;
}

/** The codec for a name, or a clear error when this runtime cannot provide it. */
export function getCodec(name: CodecName): Codec {
  if (name === 'gzip') return gzipCodec;
  if (name === 'none') return noneCodec;
  if (name === 'zstd') {
    const codec = findZstd();
    if (!codec) {
      throw new StrataError(
        'USAGE',
        'compression: zstd is not available in this runtime (Node has no zlib zstd before 22.15 and the zstd-napi addon is not installed); use gzip or install zstd-napi',
      );
    }
    return codec;
  }
  throw new StrataError('USAGE', `compression: unknown codec ${JSON.stringify(name)} (use zstd, gzip or none)`);
}

/** The best codec available here: zstd when present, gzip otherwise. */
export function defaultCompression(): CompressionConfig {
  const codec: CodecName = findZstd() ? 'zstd' : 'gzip';
  return { codec, level: DEFAULT_LEVELS[codec] };
}

/** Checks a level against the codec's range. */
export function validateCompression(config: CompressionConfig): CompressionConfig {
  const ranges: Record<CodecName, [number, number]> = { zstd: [1, 19], gzip: [1, 9], none: [0, 0] };
  const range = ranges[config.codec];
  if (!range) throw new StrataError('USAGE', `compression: unknown codec ${JSON.stringify(config.codec)} (use zstd, gzip or none)`);
  if (config.codec === 'none') return { codec: 'none', level: 0 };
  if (!Number.isInteger(config.level) || config.level < range[0] || config.level > range[1]) {
    throw new StrataError('USAGE', `compression: ${config.codec} level must be an integer from ${range[0]} to ${range[1]} (got ${config.level})`);
  }
  return config;
}
