import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setImmediate as yieldToLoop, setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isNotFound, isStrataError } from '@strata/sdk';
import type { Storage } from '@strata/sdk';

/**
 * What a storage's test file provides to run the shared suite (restic's backend test suite is the
 * model): every storage must pass the same specification of the contract in
 * packages/core/src/storage.ts; only how to make an empty one differs.
 */
export interface StorageFixture {
  /**
   * A new, empty storage, and the location string that opens the same storage in another process
   * (through the SDK's storage registry). `listPageSize` makes the storage list in pages of that
   * many keys, so a test can cross page boundaries with a few objects.
   */
  create(options?: { readonly listPageSize?: number }): Promise<{ storage: Storage; location: string }>;
  /** What unfinished writes may have left that the storage would not list (a local folder's `.tmp/`). */
  hiddenLeftovers?(storage: Storage): Promise<string[]>;
  /** How often the race test looks for the racers' outcomes (default 5 ms; a remote store wants fewer requests). */
  readonly pollMs?: number;
  /** How long the exclusive-create race may take (default 300 s; a slow remote store needs longer). */
  readonly raceTimeoutMs?: number;
  /**
   * Rounds of the exclusive-create race (default 25). Each round is a fresh key four processes
   * create at once; a store whose every request costs a second (a remote store behind a fault
   * proxy) may run fewer, as long as the same race also runs in full where requests are cheap.
   */
  readonly raceRounds?: number;
}

const RACER = fileURLToPath(new URL('../helpers/storage-racer.js', import.meta.url));

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of source) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

async function keys(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const object of storage.list(prefix)) out.push(object.key);
  return out.sort();
}

async function rejectsNotFound(promise: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => isNotFound(err), `${what} rejects with a not-found error`);
}

/** A body that yields `chunks` pieces of `size` bytes of `fill`, giving the event loop a turn between them. */
async function* slowBody(fill: number, chunks: number, size: number, afterChunk?: (n: number) => void): AsyncGenerator<Uint8Array> {
  for (let n = 0; n < chunks; n++) {
    yield Buffer.alloc(size, fill);
    afterChunk?.(n);
    await yieldToLoop();
  }
}

/** Runs the shared storage specification against `fixture`. */
export function describeStorageConformance(name: string, fixture: StorageFixture): void {
  describe(`storage conformance: ${name}`, () => {
    it('put then read, get and stat return the whole object; put replaces an object whole', async () => {
      const { storage } = await fixture.create();
      const info = await storage.put('a/b/object', Buffer.from('first version'));
      assert.equal(info.size, 13);
      assert.equal(Buffer.from(await storage.read('a/b/object')).toString(), 'first version');
      assert.equal((await collect(await storage.get('a/b/object'))).toString(), 'first version');
      const st = await storage.stat('a/b/object');
      assert.equal(st.size, 13);
      assert.ok(st.modified instanceof Date && !Number.isNaN(st.modified.getTime()));
      await storage.put('a/b/object', slowBody(0x41, 3, 4));
      assert.equal(Buffer.from(await storage.read('a/b/object')).toString(), 'AAAAAAAAAAAA');
    });

    it('put keeps every byte of a body of pieces of every size, in order', async () => {
      const { storage } = await fixture.create();
      // Empty pieces, single bytes and pieces larger than any buffer a storage may gather them in.
      const sizes = [0, 1, 3, 0, 64 * 1024, 1, 1536 * 1024, 7, 0, 3 * 1024 * 1024 + 5, 2, 512 * 1024 - 1, 1];
      const pieces = sizes.map((size, n) => randomBytes(size).fill(n, 0, Math.min(size, 1)));
      const body = (async function* () {
        for (const piece of pieces) {
          yield piece;
          await yieldToLoop();
        }
      })();
      const expected = Buffer.concat(pieces);
      const info = await storage.put('pieces/object', body);
      assert.equal(info.size, expected.length);
      const read = Buffer.from(await storage.read('pieces/object'));
      assert.equal(read.length, expected.length);
      assert.ok(read.equals(expected), 'the object is the pieces, whole and in order');
    });

    it('a reader during a put sees the old object or the new one whole, never a part', async () => {
      const { storage } = await fixture.create();
      const size = 64 * 1024;
      const chunks = 64;
      await storage.put('atomic', Buffer.alloc(size * chunks, 0x61));
      const seen = new Set<string>();
      let writing = true;
      let reads = 0;
      const reader = (async () => {
        while (writing) {
          const bytes = Buffer.from(await storage.read('atomic'));
          const whole = bytes.length === size * chunks && (bytes.every((b) => b === 0x61) || bytes.every((b) => b === 0x62));
          seen.add(whole ? String.fromCharCode(bytes[0]!) : `partial (${bytes.length} bytes)`);
          reads++;
          await yieldToLoop();
        }
      })();
      // The body holds back its last chunk until a read has finished while the put was under way,
      // so the two overlap however slow the reads are (a remote store behind a fault proxy).
      async function* bodyWaitingForAReader(): AsyncGenerator<Uint8Array> {
        let n = 0;
        for await (const chunk of slowBody(0x62, chunks, size)) {
          if (++n === chunks) while (reads === 0) await delay(10);
          yield chunk;
        }
      }
      await storage.put('atomic', bodyWaitingForAReader());
      writing = false;
      await reader;
      assert.deepEqual([...seen].filter((s) => s !== 'a' && s !== 'b'), [], 'no read returned part of an object');
      assert.ok(seen.has('a'), 'the reader read while the put was under way');
      assert.ok((await storage.read('atomic')).every((b) => b === 0x62));
    });

    it('reading, getting or stating a missing object fails as not found; a missing prefix lists nothing', async () => {
      const { storage } = await fixture.create();
      await rejectsNotFound(storage.read('missing'), 'read');
      await rejectsNotFound(storage.get('missing'), 'get');
      await rejectsNotFound(storage.stat('missing/deeper'), 'stat');
      await rejectsNotFound(storage.get('missing', { range: { start: 0, end: 1 } }), 'a ranged get');
      assert.deepEqual(await keys(storage, 'nothing/'), []);
    });

    it('lists every object under a prefix exactly once across many pages, and only those', async () => {
      const { storage } = await fixture.create({ listPageSize: 3 });
      const expected: string[] = [];
      for (let i = 0; i < 23; i++) expected.push(`many/${String(i).padStart(2, '0')}`);
      for (let i = 0; i < 5; i++) expected.push(`many/sub/${i}`);
      for (const key of expected) await storage.put(key, Buffer.from(key));
      await storage.put('manymore/x', Buffer.from('x'));
      await storage.put('other/y', Buffer.from('y'));
      // (No object is named like a folder of others, `many` beside `many/00`: core never does, so a
      // storage may map keys to the paths of a filesystem.)
      await storage.put('manyfold', Buffer.from('a key the prefix without its slash matches'));
      const listed: string[] = [];
      for await (const object of storage.list('many/')) {
        listed.push(object.key);
        assert.equal(object.size, Buffer.byteLength(object.key), `${object.key} is listed with its size`);
      }
      assert.deepEqual(listed.sort(), expected.sort());
      assert.deepEqual(await keys(storage, 'many/sub/'), expected.filter((k) => k.startsWith('many/sub/')));
      // A prefix is a string prefix, not a folder.
      assert.deepEqual(await keys(storage, 'many'), [...expected, 'manyfold', 'manymore/x'].sort());
      assert.deepEqual(await keys(storage, 'many/0'), expected.filter((k) => k.startsWith('many/0')));
    });

    it('gets byte ranges: a middle part, the tail, past the end, and an empty range', async () => {
      const { storage } = await fixture.create();
      const body = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
      await storage.put('ranged', body);
      const range = async (start: number, end?: number): Promise<Buffer> => collect(await storage.get('ranged', { range: { start, ...(end !== undefined ? { end } : {}) } }));
      assert.deepEqual(await range(0, 10), body.subarray(0, 10));
      assert.deepEqual(await range(250, 750), body.subarray(250, 750));
      assert.deepEqual(await range(990), body.subarray(990));
      assert.deepEqual(await range(995, 2000), body.subarray(995));
      assert.deepEqual(await range(500, 500), Buffer.alloc(0));
      assert.deepEqual(await range(1000), Buffer.alloc(0));
    });

    it('creates an object exclusively: exactly one of several processes wins each race, and its content stays', async function () {
      this.timeout(fixture.raceTimeoutMs ?? 300_000);
      const { storage, location } = await fixture.create();
      assert.equal(await storage.createExclusive('once', Buffer.from('mine')), true);
      assert.equal(await storage.createExclusive('once', Buffer.from('theirs')), false);
      assert.equal(Buffer.from(await storage.read('once')).toString(), 'mine');

      const rounds = fixture.raceRounds ?? 25;
      const processes = 4;
      const racers = Array.from(
        { length: processes },
        () =>
          new Promise<void>((resolve, reject) => {
            const child = spawn(process.execPath, [RACER, location, String(rounds)], { stdio: ['ignore', 'inherit', 'inherit'] });
            child.on('error', reject);
            child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`racer exited ${code}`))));
          }),
      );
      // Settles only when a racer fails. Racers that finish their last round may well exit
      // before this process has seen their outcomes (a slow listing), which is no failure.
      const failed = new Promise<never>((_, reject) => {
        for (const racer of racers) racer.catch((err: unknown) => reject(new Error(`a racer failed: ${err instanceof Error ? err.message : String(err)}`)));
      });
      failed.catch(() => undefined);
      for (let round = 0; round < rounds; round++) {
        await storage.put(`race/go-${round}`, Buffer.from('go'));
        while ((await keys(storage, `race/done-${round}-`)).length < processes) await Promise.race([delay(fixture.pollMs ?? 5), failed]);
        const outcomes = new Map<string, string>();
        for (const key of await keys(storage, `race/done-${round}-`)) outcomes.set(key.slice(`race/done-${round}-`.length), Buffer.from(await storage.read(key)).toString());
        const winners = [...outcomes].filter(([, outcome]) => outcome === 'won').map(([pid]) => pid);
        assert.equal(winners.length, 1, `round ${round}: ${winners.length} processes created the object (${JSON.stringify([...outcomes])})`);
        assert.equal(Buffer.from(await storage.read(`race/key-${round}`)).toString(), winners[0], `round ${round}: the object holds its creator's content`);
      }
      await Promise.all(racers);
    });

    it('delete is idempotent: a missing object, and the same object twice', async () => {
      const { storage } = await fixture.create();
      await storage.delete('never-was');
      await storage.delete('deep/never/was');
      await storage.put('doomed', Buffer.from('x'));
      await storage.delete('doomed');
      await storage.delete('doomed');
      await rejectsNotFound(storage.stat('doomed'), 'stat after delete');
      assert.deepEqual(await keys(storage, 'doomed'), []);
    });

    it('a put cancelled or failed midway leaves nothing visible, and an older object as it was', async () => {
      const { storage } = await fixture.create();
      const controller = new AbortController();
      await assert.rejects(
        storage.put('cancelled/new', slowBody(0x63, 50, 16 * 1024, (n) => n === 10 && controller.abort()), { signal: controller.signal }),
        (err: unknown) => isStrataError(err, 'ABORTED'),
        'a cancelled put rejects with ABORTED',
      );
      await rejectsNotFound(storage.stat('cancelled/new'), 'the cancelled object');
      assert.deepEqual(await keys(storage, 'cancelled'), []);

      await storage.put('cancelled/old', Buffer.from('old content'));
      const again = new AbortController();
      await assert.rejects(storage.put('cancelled/old', slowBody(0x64, 50, 16 * 1024, (n) => n === 10 && again.abort()), { signal: again.signal }));
      assert.equal(Buffer.from(await storage.read('cancelled/old')).toString(), 'old content');

      const failing = (async function* () {
        yield Buffer.alloc(1024, 0x65);
        throw new Error('the source broke');
      })();
      await assert.rejects(storage.put('cancelled/failed', failing));
      await rejectsNotFound(storage.stat('cancelled/failed'), 'the object whose body failed');
      // A body that fails after several MiB (a storage may be writing part of it meanwhile).
      const failingLater = (async function* () {
        for (let n = 0; n < 12; n++) yield Buffer.alloc(512 * 1024, 0x66);
        throw new Error('the source broke later');
      })();
      await assert.rejects(storage.put('cancelled/failed-later', failingLater));
      await rejectsNotFound(storage.stat('cancelled/failed-later'), 'the object whose body failed after several MiB');
      assert.deepEqual(await keys(storage, 'cancelled/'), ['cancelled/old']);

      // An aborted signal stops a put and an exclusive create before they write anything.
      const aborted = AbortSignal.abort();
      await assert.rejects(storage.put('cancelled/late', Buffer.from('x'), { signal: aborted }));
      await assert.rejects(storage.createExclusive('cancelled/lock', Buffer.from('x'), { signal: aborted }));
      assert.deepEqual(await keys(storage, 'cancelled/'), ['cancelled/old']);
      assert.deepEqual((await fixture.hiddenLeftovers?.(storage)) ?? [], [], 'no temporary data of the failed puts stays');
    });

    it('exists() tells a storage location that is there from one that is not', async () => {
      const { storage } = await fixture.create();
      await storage.put('something', Buffer.from('x'));
      assert.equal(await storage.exists(), true);
    });
  });
}
