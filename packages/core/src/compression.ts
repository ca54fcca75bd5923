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
  compress(source: AsyncIterable<Uint8Array>, level: number, signal?: AbortSignal, options?: CompressOptions): AsyncIterable<Uint8Array>;
  decompress(source: AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncIterable<Uint8Array>;
}

export interface CompressOptions {
  /**
   * Compress on the calling thread: for one input of a few blocks in a short-lived process (a log
   * file handed to an archive command), where starting worker threads costs more CPU than the
   * compression itself (zstd level 3 does 16 MiB in some tens of milliseconds).
   */
  readonly onThisThread?: boolean;
}

/** How many blocks are compressed at the same time: one per core, at least two. */
function concurrency(): number {
  return Math.max(2, Math.min(availableParallelism(), 4));
}

/**
 * Reusable block buffers. Compression takes a fresh 4 MiB block every few milliseconds; letting
 * each become garbage made glibc keep tens of MiB of freed blocks resident. Blocks come back
 * here once compressed, so a backup uses the same handful of buffers from start to end.
 *
 * Shared memory, so that a block lent to a compression worker is not moved there and back: V8
 * counts every buffer that arrives in a thread as new memory outside its heap, and starts a
 * garbage collection for each 64 MiB of it; the round trips of 1.5 GB of blocks alone started
 * dozens in a backup.
 */
class BlockPool {
  readonly #free: SharedArrayBuffer[] = [];

  take(): SharedArrayBuffer {
    return this.#free.pop() ?? new SharedArrayBuffer(BLOCK_BYTES);
  }

  give(buffer: ArrayBufferLike): void {
    if (buffer instanceof SharedArrayBuffer && buffer.byteLength === BLOCK_BYTES && this.#free.length < 8) this.#free.push(buffer);
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
  else blockPool.give(block.buffer);
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
        blockPool.give(block.buffer);
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
          blockPool.give(block.buffer);
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

/** Its low-level binding, which the workers compress with (and this thread, for one short block). */
interface ZstdBinding {
  CCtx: new () => { compress(out: Uint8Array, input: Uint8Array, level: number): number };
  compressBound(length: number): number;
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
    // The worker compresses into one reused output buffer and sends back the result (a
    // right-sized copy); the input block is shared memory, back in the pool once answered.
    const source = `
      const { parentPort } = require('node:worker_threads');
      const zstd = require(${JSON.stringify(this.bindingPath)});
      const cctx = new zstd.CCtx();
      let out = Buffer.alloc(0);
      parentPort.on('message', ({ id, level, data, length }) => {
        try {
          const input = new Uint8Array(data, 0, length);
          const bound = zstd.compressBound(length);
          if (out.length < bound) out = Buffer.allocUnsafeSlow(bound);
          const n = cctx.compress(out, input, level);
          const result = new ArrayBuffer(n);
          new Uint8Array(result).set(out.subarray(0, n));
          parentPort.postMessage({ id, data: result }, [result]);
        } catch (err) {
          parentPort.postMessage({ id, error: String(err && err.message || err) });
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

  async compress(block: Buffer, level: number): Promise<Buffer> {
    const worker = await this.#take();
    try {
      return await new Promise<Buffer>((resolve, reject) => {
        const id = Math.random();
        const onMessage = (msg: { id: number; data?: ArrayBuffer; error?: string }): void => {
          if (msg.id !== id) return;
          worker.off('message', onMessage);
          worker.off('error', onError);
          // The worker is done reading the block.
          blockPool.give(block.buffer);
          if (msg.error !== undefined) reject(new StrataError('IO', `compress: zstd failed: ${msg.error}`));
          else resolve(Buffer.from(msg.data!));
        };
        const onError = (err: Error): void => {
          worker.off('message', onMessage);
          reject(new StrataError('IO', `compress: zstd worker failed: ${err.message}`, { cause: err }));
        };
        worker.on('message', onMessage);
        worker.on('error', onError);
        // Pooled blocks own their whole 4 MiB of shared memory: the worker reads it where it is.
        worker.postMessage({ id, level, data: block.buffer, length: block.byteLength });
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
let hereContext: { bindingPath: string; binding: ZstdBinding; cctx: InstanceType<ZstdBinding['CCtx']> } | undefined;

/** One block compressed on this thread, as a worker would compress it (one zstd frame); the block returns to the pool. */
function compressHere(bindingPath: string, block: Buffer, level: number): Buffer {
  try {
    if (hereContext?.bindingPath !== bindingPath) {
      const binding = require(bindingPath) as ZstdBinding;
      hereContext = { bindingPath, binding, cctx: new binding.CCtx() };
    }
    const out = Buffer.allocUnsafeSlow(hereContext.binding.compressBound(block.byteLength));
    const n = hereContext.cctx.compress(out, block, level);
    return out.subarray(0, n);
  } catch (err) {
    throw new StrataError('IO', `compress: zstd failed: ${(err as Error).message}`, { cause: err });
  } finally {
    blockPool.give(block.buffer);
  }
}

/** `first`, then the rest of `rest` (whose return() an early stop still reaches). */
async function* withFirst(first: Buffer, rest: AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
  yield first;
  yield* rest;
}

function napiZstdCodec(): Codec | undefined {
  const loaded = loadZstdNapi();
  if (!loaded) return undefined;
  return {
    name: 'zstd',
    extension: '.zst',
    compress: (source, level, signal, options) =>
      (async function* () {
        const input = blocks(source);
        if (options?.onThisThread) {
          for await (const block of input) {
            throwIfAborted(signal, 'compress');
            yield compressHere(loaded.bindingPath, block, level);
          }
          return;
        }
        const first = await input.next();
        if (first.done) return;
        // A short first block is the whole input (a key check, a small database, a segment of
        // replicate): compressed here in a millisecond or so, where starting the workers would cost
        // a hundred times that, once in every strata process.
        if (first.value.byteLength < BLOCK_BYTES) {
          throwIfAborted(signal, 'compress');
          yield compressHere(loaded.bindingPath, first.value, level);
          return;
        }
        zstdPool ??= new ZstdWorkerPool(loaded.bindingPath, concurrency());
        const pool = zstdPool;
        pool.acquire();
        try {
          // Twice as many blocks as workers: a worker that finishes finds its next block already
          // copied, instead of waiting while this thread encrypts and writes (measured: 1.5 GB
          // backed up in 9.2 s instead of 9.9 s, for one more 4 MiB block per worker).
          yield* ordered(withFirst(first.value, input), pool.size * 2, (block) => pool.compress(block, level), signal);
        } finally {
          pool.release();
        }
      })(),
    // Decompression is several times faster than compression, so one stream on the main thread keeps up.
    decompress: (source) => through(source, new loaded.module.DecompressStream() as unknown as Duplex),
  };
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
      // This machine's lack, not a fault of the repository or of what was asked: a backup read
      // here is not damaged, and verify must not record it as failed.
      throw new StrataError(
        'TOOL_MISSING',
        'compression: zstd is not available in this runtime (Node has no zlib zstd before 22.15 and the zstd-napi addon is not installed or does not load); install zstd-napi (npm rebuild zstd-napi where strata is installed), or use gzip for a new repository',
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
