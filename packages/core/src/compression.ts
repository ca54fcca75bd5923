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

/** Groups a byte stream into blocks of BLOCK_BYTES (the last one shorter). */
async function* blocks(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let size = 0;
  for await (const piece of source) {
    let buf = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    while (size + buf.length >= BLOCK_BYTES) {
      const take = BLOCK_BYTES - size;
      parts.push(buf.subarray(0, take));
      yield Buffer.concat(parts, BLOCK_BYTES);
      parts = [];
      size = 0;
      buf = buf.subarray(take);
    }
    if (buf.length > 0) {
      // Copy: the producer may reuse its buffer after we return control.
      parts.push(Buffer.from(buf));
      size += buf.length;
    }
  }
  if (size > 0) yield Buffer.concat(parts, size);
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
      inFlight.push(work(block));
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
  compress: (source, level, signal) => ordered(blocks(source), concurrency(), (block) => gzipAsync(block, { level }), signal),
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
      ordered(blocks(source), concurrency(), (block) => compressAsync(block, { params: { [levelParam]: level } }), signal),
    decompress: (source) => through(source, z.createZstdDecompress!() as unknown as Duplex),
  };
}

/** The zstd-napi addon's surface we use (an optional dependency; built from source on install). */
interface ZstdNapi {
  DecompressStream: new () => NodeJS.ReadWriteStream;
}

const require = createRequire(import.meta.url);

function loadZstdNapi(): { module: ZstdNapi; path: string } | undefined {
  try {
    const path = require.resolve('zstd-napi');
    return { module: require('zstd-napi') as ZstdNapi, path };
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
    readonly modulePath: string,
    readonly size: number,
  ) {}

  #spawn(): Worker {
    const source = `
      const { parentPort } = require('node:worker_threads');
      const zstd = require(${JSON.stringify(this.modulePath)});
      const compressors = new Map();
      parentPort.on('message', ({ id, level, data }) => {
        try {
          let c = compressors.get(level);
          if (!c) { c = new zstd.Compressor(); c.setParameters({ compressionLevel: level }); compressors.set(level, c); }
          const out = c.compress(new Uint8Array(data));
          const copy = out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
          parentPort.postMessage({ id, data: copy }, [copy]);
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
          if (msg.error !== undefined) reject(new StrataError('IO', `compress: zstd failed: ${msg.error}`));
          else resolve(Buffer.from(msg.data!));
        };
        const onError = (err: Error): void => {
          worker.off('message', onMessage);
          reject(new StrataError('IO', `compress: zstd worker failed: ${err.message}`, { cause: err }));
        };
        worker.on('message', onMessage);
        worker.on('error', onError);
        const data = (block.buffer as ArrayBuffer).slice(block.byteOffset, block.byteOffset + block.byteLength);
        worker.postMessage({ id, level, data }, [data]);
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
  return {
    name: 'zstd',
    extension: '.zst',
    compress: (source, level, signal) => {
      zstdPool ??= new ZstdWorkerPool(loaded.path, concurrency());
      const pool = zstdPool;
      return (async function* () {
        pool.acquire();
        try {
          yield* ordered(blocks(source), pool.size, (block) => pool.compress(block, level), signal);
        } finally {
          pool.release();
        }
      })();
    },
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
