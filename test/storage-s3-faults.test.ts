import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { S3Client, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { S3Storage, isNotFound, parseS3Location } from '@strata/sdk';
import type { S3StorageSettings } from '@strata/sdk';
import { describeStorageConformance } from './conformance/storage-conformance.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import type { FaultRates } from './helpers/fault-proxy.js';
import { Buckets, requireS3, s3Configured } from './helpers/s3.js';

// The S3 storage on a network that fails the way real ones do: every request passes through the
// fault proxy (test/helpers/fault-proxy.ts) on its way to the real server, and a seeded share of
// them is reset mid-body, answered 500/503 before or after the server acted, or delayed. The
// storage's retries must absorb all of it: the whole conformance suite passes, racing processes
// (which go through the proxy too) included.

const SEED = 20261202;
/** Every fault on, at rates that hit each test many times; each passes after at most 2 in a row. */
const FAULTS: FaultRates = { resetUpload: 0.04, resetDownload: 0.04, errorBefore: 0.04, errorAfter: 0.04, delay: 0.04, delayMs: 400, maxConsecutive: 2 };

const buckets = new Buckets();
let bucket = '';
let proxy: FaultProxy | undefined;
let made = 0;
const saved: Record<string, string | undefined> = {};
const MIB = 1024 * 1024;

/** The real server, for checks that must not be faulted themselves. */
function direct(): S3Client {
  return new S3Client({ endpoint: saved['AWS_ENDPOINT_URL'] ?? saved['AWS_ENDPOINT_URL_S3'], forcePathStyle: true, region: process.env['AWS_REGION'] || 'us-east-1' });
}

async function incompleteUploads(prefix: string): Promise<string[]> {
  const client = direct();
  try {
    const page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
    return (page.Uploads ?? []).map((u) => u.Key ?? '?');
  } finally {
    client.destroy();
  }
}

function storageAt(location: string, settings: S3StorageSettings = {}): S3Storage {
  return new S3Storage(location, { endpoint: proxy!.url, ...settings });
}

function freshLocation(): string {
  return `s3://${bucket}/f${++made}-${randomBytes(3).toString('hex')}`;
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of source) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

describe('S3 storage through a faulty network (seeded fault proxy)', () => {
  before(async function () {
    requireS3(this);
    bucket = await buckets.create();
    for (const name of ['AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3']) saved[name] = process.env[name];
    proxy = await FaultProxy.start({ target: (saved['AWS_ENDPOINT_URL_S3'] || saved['AWS_ENDPOINT_URL'])!, seed: SEED, faults: FAULTS });
    // Processes the tests start (the exclusive-create racers) go through the proxy too.
    process.env['AWS_ENDPOINT_URL'] = proxy.url;
    delete process.env['AWS_ENDPOINT_URL_S3'];
  });
  after(async () => {
    if (!proxy) return;
    const counts = proxy.counts;
    console.log(`      fault proxy (seed ${SEED}): ${counts.requests} requests, injected ${JSON.stringify(counts.injected)}`);
    await proxy.stop();
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    if (s3Configured()) await buckets.removeAll();
  });
  afterEach(() => proxy?.setFaults(FAULTS));

  describeStorageConformance('S3 through the fault proxy', {
    async create(options = {}) {
      const location = freshLocation();
      // listPageSize: small pages, so listings cross page boundaries (and their faults).
      return { storage: storageAt(location, { ...(options.listPageSize ? { listPageSize: options.listPageSize } : {}) }), location };
    },
    async hiddenLeftovers(storage) {
      const { root } = parseS3Location(storage.location);
      const uploads = await incompleteUploads(root);
      const claims = await buckets.keys(bucket, `${root}.claims/`);
      const marks = await buckets.keys(bucket, `${root}.uploads/`);
      return [...uploads.map((k) => `upload ${k}`), ...claims.map((k) => `claim ${k}`), ...marks.map((k) => `upload mark ${k}`)];
    },
    // As on the server without the proxy (test/storage-s3.test.ts), and longer: retries add up.
    pollMs: 250,
    raceTimeoutMs: 1_200_000,
    // 25 rounds run without the proxy (test/storage-s3.test.ts); here the point is a race whose
    // requests fail and are retried, and 8 rounds of 4 racers meet dozens of injected faults,
    // in minutes instead of the better part of an hour on the test server.
    raceRounds: 8,
  });

  describe('the faults that make retries dangerous', () => {
    it('an exclusive create whose writes landed but were answered with 500 or 503 reports its own create, and a rival then loses', async () => {
      // Every PUT's first attempt reaches the server and is answered with an error; the retry gets
      // the real answer. The claim and the object are written twice, by the same process.
      proxy!.setFaults({ errorAfter: 1, maxConsecutive: 1, methods: ['PUT'] });
      const storage = storageAt(freshLocation());
      const before = proxy!.counts.injected;
      assert.equal(await storage.createExclusive('locks/repository.lock', Buffer.from('{"token":"mine"}')), true, 'our own create is not mistaken for a rival');
      const after = proxy!.counts.injected;
      assert.ok(after.error500After + after.error503After > before.error500After + before.error503After, 'the faults happened');
      assert.equal(Buffer.from(await storage.read('locks/repository.lock')).toString(), '{"token":"mine"}');
      assert.equal(await storage.createExclusive('locks/repository.lock', Buffer.from('{"token":"theirs"}')), false);
      assert.equal(Buffer.from(await storage.read('locks/repository.lock')).toString(), '{"token":"mine"}');
    });

    it('reads and gets cut off in the middle of the body still return the whole object', async () => {
      const storage = storageAt(freshLocation(), { partSize: 5 * MIB });
      const small = randomBytes(200_000);
      const big = randomBytes(12 * MIB + 777);
      proxy!.setFaults({});
      await storage.put('small', small);
      await storage.put('big', big);
      // Every download's first attempt breaks off after part of its body.
      proxy!.setFaults({ resetDownload: 1, maxConsecutive: 1 });
      const before = proxy!.counts.injected.resetDownload;
      assert.deepEqual(Buffer.from(await storage.read('small')), small);
      assert.deepEqual(await collect(await storage.get('small')), small);
      assert.deepEqual(await collect(await storage.get('small', { range: { start: 1000, end: 150_000 } })), small.subarray(1000, 150_000));
      const back = await collect(await storage.get('big'));
      assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(big).digest('hex'), 'the big object comes back whole');
      assert.ok(proxy!.counts.injected.resetDownload > before, 'the downloads were cut');
    });

    it('a multipart put through resets, lost answers and errors completes whole and leaves no incomplete upload', async () => {
      const location = freshLocation();
      const storage = storageAt(location, { partSize: 5 * MIB, concurrency: 2 });
      const body = randomBytes(16 * MIB + 4321);
      async function* chunks(): AsyncGenerator<Uint8Array> {
        for (let at = 0; at < body.length; at += MIB) yield body.subarray(at, at + MIB);
      }
      // Each request of the upload (create, every part, complete) fails once: before the server,
      // after it (the complete that landed is retried), or with its body cut off.
      for (const faults of [{ errorBefore: 1 }, { errorAfter: 1 }, { resetUpload: 1 }] as FaultRates[]) {
        proxy!.setFaults({ ...faults, maxConsecutive: 1, methods: ['PUT', 'POST'] });
        const key = `big-${Object.keys(faults)[0]}`;
        await storage.put(key, chunks());
        proxy!.setFaults({});
        assert.equal(createHash('sha256').update(Buffer.from(await storage.read(key))).digest('hex'), createHash('sha256').update(body).digest('hex'), `${key} is whole`);
      }
      const { root } = parseS3Location(location);
      assert.deepEqual(await incompleteUploads(root), [], 'no multipart upload is left incomplete');
      assert.deepEqual(await buckets.keys(bucket, `${root}.uploads/`), [], 'no upload mark is left');
    });

    it('a put that fails for good (the server keeps failing) leaves nothing visible, and says what failed', async () => {
      const storage = storageAt(freshLocation(), { maxAttempts: 2 });
      proxy!.setFaults({ errorBefore: 1, maxConsecutive: 100, methods: ['PUT'] });
      await assert.rejects(storage.put('doomed', Buffer.from('x')), (err: Error) => /storage: write .*doomed/.test(err.message) && /HTTP 50[03]/.test(err.message));
      proxy!.setFaults({});
      await assert.rejects(storage.stat('doomed'), (err: unknown) => isNotFound(err));
    });
  });
});
