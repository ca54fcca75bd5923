/**
 * The commit clock's thread (see commit-clock.ts): every few milliseconds it reads the wal-index
 * header of each database being captured and appends the reading, with the moments it started and
 * ended, to that database's ring in shared memory. It reads through the feed's own -shm descriptor
 * (see wal-index.ts) and never opens or closes one: it is told to stop reading a descriptor, and
 * says so, before the feed closes it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { readIndexHeader } from './wal-index.js';
import { RING_SLOTS, SLOT_FIELDS, type ClockMessage } from './commit-clock.js';

interface Ring {
  readonly shm: number;
  readonly written: Uint32Array;
  readonly slots: BigInt64Array;
}

const { everyMs } = workerData as { everyMs: number };
const rings = new Map<number, Ring>();

parentPort!.on('message', (message: ClockMessage) => {
  if (message.kind === 'add') {
    rings.set(message.id, { shm: message.shm, written: new Uint32Array(message.written), slots: new BigInt64Array(message.slots) });
  } else {
    rings.delete(message.id);
    parentPort!.postMessage({ kind: 'removed', id: message.id } satisfies ClockMessage);
  }
});

setInterval(() => {
  for (const ring of rings.values()) {
    const before = Date.now();
    let index;
    try {
      index = readIndexHeader(ring.shm);
    } catch {
      // A reading missed: the replicator's own readings go on regardless.
      continue;
    }
    if (!index) continue;
    const after = Date.now();
    const n = Atomics.load(ring.written, 0);
    const at = (n % RING_SLOTS) * SLOT_FIELDS;
    const fields = [index.salt[0], index.salt[1], index.maxFrame, before, after];
    for (let k = 0; k < SLOT_FIELDS; k++) Atomics.store(ring.slots, at + k, BigInt(fields[k]!));
    // Published only once its fields are written.
    Atomics.store(ring.written, 0, (n + 1) >>> 0);
  }
}, everyMs);
