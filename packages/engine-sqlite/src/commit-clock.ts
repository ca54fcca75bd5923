import { Worker } from 'node:worker_threads';

/**
 * The commit clock read from a thread of its own. A transaction's times come from readings of how
 * far the log was committed (see WalFeed in wal-capture.ts); read only on the replicator's thread,
 * a reading is as late as that thread is busy (a large read, a checkpoint, the garbage collector),
 * and every transaction committed meanwhile is filed as that late. One thread for the whole
 * process reads every captured database's wal-index header every CLOCK_READ_MS and leaves the
 * readings in a ring in shared memory that the feed drains whenever it reads.
 *
 * Hand-written rather than a library: it is a single-writer, single-reader ring of five numbers
 * a slot, and what matters is that a slot is never read half-written (see drain()).
 */

/** How often the clock's thread reads each database's commit end. */
export const CLOCK_READ_MS = 50;
/** Readings a ring holds: 51 s at CLOCK_READ_MS. Older ones unread by then are dropped, which only makes times less exact. */
export const RING_SLOTS = 1024;
/** A slot: salt 1, salt 2, maxFrame, the reading's start and end (ms since the epoch). */
export const SLOT_FIELDS = 5;

export type ClockMessage =
  | { kind: 'add'; id: number; shm: number; written: SharedArrayBuffer; slots: SharedArrayBuffer }
  | { kind: 'remove'; id: number }
  | { kind: 'removed'; id: number };

/** One reading taken on the clock's thread. */
export interface ClockSample {
  readonly salt: readonly [number, number];
  readonly maxFrame: number;
  readonly before: number;
  readonly after: number;
}

/** How long close() waits for the thread to let go of a descriptor before it stops the thread. */
const RELEASE_WAIT_MS = 2000;

const within = <T>(ms: number, promise: Promise<T>): Promise<T | 'late'> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
};

class ClockThread {
  readonly worker: Worker;
  readonly taps = new Set<number>();
  readonly #removed = new Map<number, () => void>();
  readonly #exited: Promise<void>;
  #nextId = 0;
  /** Removals waiting for the thread's answer: the thread keeps the process alive while any is. */
  #waiting = 0;
  #stopping = false;
  alive = true;

  constructor() {
    this.worker = new Worker(new URL('./clock-worker.js', import.meta.url), { workerData: { everyMs: CLOCK_READ_MS } });
    this.worker.unref();
    // A thread that fails leaves the readings to the feeds' own threads; its exit says so below.
    this.worker.on('error', () => undefined);
    this.worker.on('message', (message: ClockMessage) => {
      if (message.kind === 'removed') this.#removed.get(message.id)?.();
    });
    this.#exited = new Promise((resolve) => {
      this.worker.once('exit', () => {
        this.alive = false;
        // Not stopped by us: it could not load or it failed; the next feeds do without it.
        if (!this.#stopping) clockThreadFailed = true;
        if (clockThread === this) clockThread = undefined;
        for (const done of this.#removed.values()) done();
        resolve();
      });
    });
  }

  add(shm: number, written: SharedArrayBuffer, slots: SharedArrayBuffer): number {
    const id = this.#nextId++;
    this.taps.add(id);
    this.worker.postMessage({ kind: 'add', id, shm, written, slots } satisfies ClockMessage);
    return id;
  }

  /**
   * Resolves once the thread will never read that tap's descriptor again: true when it said so
   * or has stopped; false when it could not be stopped in time (a read stuck in the kernel), and
   * the descriptor must then stay open, or the thread could read whatever file gets its number.
   */
  async remove(id: number): Promise<boolean> {
    this.taps.delete(id);
    if (this.alive) {
      // Held alive meanwhile: a process whose last work is closing a feed must not exit before it has.
      if (this.#waiting++ === 0) this.worker.ref();
      try {
        const answer = await within(
          RELEASE_WAIT_MS,
          new Promise<void>((resolve) => {
            this.#removed.set(id, resolve);
            this.worker.postMessage({ kind: 'remove', id } satisfies ClockMessage);
          }),
        );
        if (answer === 'late') return this.#stop();
      } finally {
        this.#removed.delete(id);
        if (--this.#waiting === 0) this.worker.unref();
      }
    }
    if (this.taps.size === 0 && clockThread === this) await this.#stop();
    return true;
  }

  /** Stops the thread; false when it has not stopped within RELEASE_WAIT_MS. */
  async #stop(): Promise<boolean> {
    this.#stopping = true;
    if (clockThread === this) clockThread = undefined;
    void this.worker.terminate().catch(() => undefined);
    return (await within(RELEASE_WAIT_MS, this.#exited)) !== 'late';
  }
}

let clockThread: ClockThread | undefined;
/** Set once a clock thread failed on its own: later feeds read the clock on their own threads. */
let clockThreadFailed = false;

/** The readings of one database's commit end, taken on the clock's thread. */
export class ClockTap {
  readonly #thread: ClockThread;
  readonly #id: number;
  readonly #written: Uint32Array;
  /**
   * Each field is written and read with Atomics (64-bit integers, since Float64Array has none):
   * plain reads could be torn or reordered past the counter's check that finds an overwritten slot.
   */
  readonly #slots: BigInt64Array;
  #read = 0;
  #closed = false;

  private constructor(thread: ClockThread, written: SharedArrayBuffer, slots: SharedArrayBuffer, shm: number) {
    this.#thread = thread;
    this.#written = new Uint32Array(written);
    this.#slots = new BigInt64Array(slots);
    this.#id = thread.add(shm, written, slots);
  }

  /**
   * Starts reading the wal-index header through `shm` (a -shm descriptor the caller keeps open
   * until close() has resolved). Undefined where no thread can run: the caller's own readings
   * are then the only ones, as they were before.
   */
  static open(shm: number): ClockTap | undefined {
    if (clockThreadFailed) return undefined;
    try {
      clockThread ??= new ClockThread();
    } catch {
      clockThreadFailed = true;
      return undefined;
    }
    const written = new SharedArrayBuffer(Uint32Array.BYTES_PER_ELEMENT);
    const slots = new SharedArrayBuffer(RING_SLOTS * SLOT_FIELDS * BigInt64Array.BYTES_PER_ELEMENT);
    return new ClockTap(clockThread, written, slots, shm);
  }

  /** Whether the thread is still taking readings (a caller without them reads the clock itself). */
  get live(): boolean {
    return !this.#closed && this.#thread.alive;
  }

  /** The readings taken since the last drain, oldest first; those the ring no longer holds are skipped. */
  drain(): ClockSample[] {
    if (this.#closed) return [];
    const written = Atomics.load(this.#written, 0);
    let unread = (written - this.#read) >>> 0;
    // Slots older than the ring's length were overwritten; the one about to be is left too.
    if (unread > RING_SLOTS - 1) unread = RING_SLOTS - 1;
    const samples: ClockSample[] = [];
    const field = (at: number, k: number): number => Number(Atomics.load(this.#slots, at + k));
    for (let i = unread; i > 0; i--) {
      const at = (((written - i) >>> 0) % RING_SLOTS) * SLOT_FIELDS;
      samples.push({ salt: [field(at, 0), field(at, 1)], maxFrame: field(at, 2), before: field(at, 3), after: field(at, 4) });
    }
    // The thread may have written slots again while they were copied: the oldest ones it can
    // have reached (from the slot it writes next, RING_SLOTS - 1 - unread of them are spare) may be
    // torn, so they are left out; dropping a reading only makes times less exact.
    const overtaken = (Atomics.load(this.#written, 0) - written) >>> 0;
    const torn = Math.max(0, overtaken - (RING_SLOTS - 1 - unread));
    this.#read = written;
    return torn === 0 ? samples : samples.slice(Math.min(samples.length, torn));
  }

  /**
   * Stops the readings. Resolves true once the thread no longer reads the descriptor, so the
   * caller may close it; false when it must stay open (see ClockThread.remove).
   */
  async close(): Promise<boolean> {
    if (this.#closed) return true;
    this.#closed = true;
    return this.#thread.remove(this.#id);
  }
}
