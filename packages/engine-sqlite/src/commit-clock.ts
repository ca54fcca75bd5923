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

class ClockThread {
  readonly worker: Worker;
  readonly taps = new Set<number>();
  readonly #removed = new Map<number, () => void>();
  #nextId = 0;
  alive = true;

  constructor() {
    this.worker = new Worker(new URL('./clock-worker.js', import.meta.url), { workerData: { everyMs: CLOCK_READ_MS } });
    this.worker.unref();
    // A thread that fails leaves the readings to the feeds' own threads; its exit says so below.
    this.worker.on('error', () => undefined);
    this.worker.on('message', (message: ClockMessage) => {
      if (message.kind === 'removed') this.#removed.get(message.id)?.();
    });
    this.worker.once('exit', () => {
      this.alive = false;
      if (clockThread === this) clockThread = undefined;
      for (const done of this.#removed.values()) done();
    });
  }

  add(shm: number, written: SharedArrayBuffer, slots: SharedArrayBuffer): number {
    const id = this.#nextId++;
    this.taps.add(id);
    this.worker.postMessage({ kind: 'add', id, shm, written, slots } satisfies ClockMessage);
    return id;
  }

  /** Resolves once the thread will never read that tap's descriptor again. */
  async remove(id: number): Promise<void> {
    this.taps.delete(id);
    if (this.alive) {
      // Held open meanwhile: a process whose last work is closing a feed must not exit before it has.
      this.worker.ref();
      try {
        await new Promise<void>((resolve) => {
          this.#removed.set(id, resolve);
          this.worker.postMessage({ kind: 'remove', id } satisfies ClockMessage);
        });
      } finally {
        this.#removed.delete(id);
        this.worker.unref();
      }
    }
    if (this.taps.size === 0 && clockThread === this) {
      clockThread = undefined;
      await this.worker.terminate().catch(() => undefined);
    }
  }
}

let clockThread: ClockThread | undefined;

/** The readings of one database's commit end, taken on the clock's thread. */
export class ClockTap {
  readonly #thread: ClockThread;
  readonly #id: number;
  readonly #written: Uint32Array;
  readonly #slots: Float64Array;
  #read = 0;
  #closed = false;

  private constructor(thread: ClockThread, written: SharedArrayBuffer, slots: SharedArrayBuffer, shm: number) {
    this.#thread = thread;
    this.#written = new Uint32Array(written);
    this.#slots = new Float64Array(slots);
    this.#id = thread.add(shm, written, slots);
  }

  /**
   * Starts reading the wal-index header through `shm` (a -shm descriptor the caller keeps open
   * until close() has resolved). Undefined where no thread can start: the caller's own readings
   * are then the only ones, as they were before.
   */
  static open(shm: number): ClockTap | undefined {
    try {
      clockThread ??= new ClockThread();
    } catch {
      return undefined;
    }
    const written = new SharedArrayBuffer(Uint32Array.BYTES_PER_ELEMENT);
    const slots = new SharedArrayBuffer(RING_SLOTS * SLOT_FIELDS * Float64Array.BYTES_PER_ELEMENT);
    return new ClockTap(clockThread, written, slots, shm);
  }

  /** The readings taken since the last drain, oldest first; those the ring no longer holds are skipped. */
  drain(): ClockSample[] {
    if (this.#closed) return [];
    const written = Atomics.load(this.#written, 0);
    let unread = (written - this.#read) >>> 0;
    // Slots older than the ring's length were overwritten; the one about to be is left too.
    if (unread > RING_SLOTS - 1) unread = RING_SLOTS - 1;
    const samples: ClockSample[] = [];
    for (let i = unread; i > 0; i--) {
      const at = (((written - i) >>> 0) % RING_SLOTS) * SLOT_FIELDS;
      const s = this.#slots;
      samples.push({ salt: [s[at]!, s[at + 1]!], maxFrame: s[at + 2]!, before: s[at + 3]!, after: s[at + 4]! });
    }
    // The thread may have written slots again while they were copied: the oldest ones it can
    // have reached (from the slot it writes next, RING_SLOTS - 1 - unread of them are spare) may be
    // torn, so they are left out; dropping a reading only makes times less exact.
    const overtaken = (Atomics.load(this.#written, 0) - written) >>> 0;
    const torn = Math.max(0, overtaken - (RING_SLOTS - 1 - unread));
    this.#read = written;
    return torn === 0 ? samples : samples.slice(Math.min(samples.length, torn));
  }

  /** Stops the readings; resolves once the thread no longer reads the descriptor, so the caller may close it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#thread.remove(this.#id);
  }
}
