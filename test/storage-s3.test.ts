import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import * as path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { S3Storage, isNotFound, isStrataError, openStorage, parseS3Location, supportedStorages } from '@strata/sdk';
import { describeStorageConformance } from './conformance/storage-conformance.js';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { TEST_PASSPHRASE, json, sqliteDump, strata, useSuiteDir } from './helpers/env.js';
import { Buckets, adminClient, requireS3, s3Configured } from './helpers/s3.js';

const buckets = new Buckets();
let bucket = '';
let made = 0;

describe('S3 storage (the real server of scripts/s3/start-s3.sh)', function () {
  before(async function () {
    requireS3(this);
    bucket = await buckets.create();
  });
  after(async () => {
    if (s3Configured()) await buckets.removeAll();
  });

  async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const chunk of source) parts.push(Buffer.from(chunk));
    return Buffer.concat(parts);
  }

  /** A fresh prefix of this file's bucket: a new, empty repository location. */
  function freshLocation(): string {
    return `s3://${bucket}/t${++made}-${randomBytes(3).toString('hex')}`;
  }

  describeStorageConformance('S3 (the real server of scripts/s3/start-s3.sh)', {
    async create(options = {}) {
      const location = freshLocation();
      return { storage: new S3Storage(location, { ...(options.listPageSize ? { listPageSize: options.listPageSize } : {}) }), location };
    },
    async hiddenLeftovers(storage) {
      const { root } = parseS3Location(storage.location);
      const uploads = (await buckets.uploads(bucket)).filter((key) => key.startsWith(root));
      const claims = await buckets.keys(bucket, `${root}.claims/`);
      return [...uploads.map((k) => `upload ${k}`), ...claims.map((k) => `claim ${k}`)];
    },
    pollMs: 250,
    // 25 rounds of four processes, each create a few requests, on a server doing ~40 writes a second.
    raceTimeoutMs: 900_000,
  });

  describe('S3 locations', () => {
    it('parses s3://bucket/prefix and shows it without a trailing slash', () => {
      assert.deepEqual(parseS3Location('s3://my-bucket/a/b/'), { bucket: 'my-bucket', root: 'a/b/', display: 's3://my-bucket/a/b' });
      assert.deepEqual(parseS3Location('s3://my-bucket'), { bucket: 'my-bucket', root: '', display: 's3://my-bucket' });
      assert.ok(supportedStorages().some((kind) => kind.scheme === 's3' && /s3:\/\/BUCKET\/PREFIX/.test(kind.description)));
    });

    it('refuses credentials in the location without repeating them, and bad bucket names', () => {
      assert.throws(
        () => openStorage('s3://AKIAEXAMPLE:wJalrXUtnFEMIsecret@bucket/prefix'),
        (err: unknown) => isStrataError(err, 'USAGE') && /credentials do not belong/.test(err.message) && !err.message.includes('wJalrXUtnFEMIsecret') && !err.message.includes('AKIAEXAMPLE'),
      );
      assert.throws(() => openStorage('s3://Bad_Bucket/x'), (err: unknown) => isStrataError(err, 'USAGE') && /not a valid bucket name/.test(err.message));
      assert.throws(() => openStorage('s3://bucket/../x'), (err: unknown) => isStrataError(err, 'USAGE'));
    });
  });

  describe('S3 storage on the real server', () => {
    it('round-trips a 20 MiB object through a multipart put (5 MiB parts) and parallel ranged gets, with the same sha256', async function () {
      this.timeout(300_000);
      const log = path.join(useTmp(), 'requests.log');
      const storage = withRequestLog(log, () => new S3Storage(freshLocation(), { partSize: 5 * 1024 * 1024, concurrency: 3 }));
      const body = randomBytes(20 * 1024 * 1024 + 12345);
      const sha = createHash('sha256').update(body).digest('hex');
      async function* chunks(): AsyncGenerator<Uint8Array> {
        for (let at = 0; at < body.length; at += 1024 * 1024) yield body.subarray(at, at + 1024 * 1024);
      }
      assert.equal((await storage.put('big/object', chunks())).size, body.length);
      assert.equal((await storage.stat('big/object')).size, body.length);
      const back = await collect(await storage.get('big/object'));
      assert.equal(createHash('sha256').update(back).digest('hex'), sha, 'the object read back whole has the same sha256');
      // A range across a part boundary, and a tail.
      const from = 5 * 1024 * 1024 - 100;
      assert.deepEqual(await collect(await storage.get('big/object', { range: { start: from, end: from + 11 * 1024 * 1024 } })), body.subarray(from, from + 11 * 1024 * 1024));
      assert.deepEqual(await collect(await storage.get('big/object', { range: { start: body.length - 10 } })), body.subarray(body.length - 10));
      const lines = readFileSync(log, 'utf8').trim().split('\n');
      const count = (op: string): number => lines.filter((l) => l.split(' ')[1] === op).length;
      assert.equal(count('UploadPart'), 5, 'five parts of at most 5 MiB were uploaded');
      assert.equal(count('CompleteMultipartUpload'), 1);
      assert.equal(count('GetObject'), 5 + 3 + 1, 'the whole object came in five ranged GETs');
    });

    it('a put with a cancel signal (as a backup passes) keeps none of the body it has sent, however long the body', async function () {
      this.timeout(600_000);
      const partSize = 5 * 1024 * 1024;
      const chunkSize = 1024 * 1024;
      const bodySize = 96 * 1024 * 1024;
      const storage = new S3Storage(freshLocation(), { partSize, concurrency: 2 });
      // Which of the body's buffers are still reachable, asked at checkpoints in the producer right
      // after a full collection: a count of memory kept, independent of how fast anything runs.
      // (Each chunk owns its ArrayBuffer; a part cut from it, or the chunk itself, keeps it alive.)
      const gc = fullCollection();
      const sent: WeakRef<ArrayBuffer>[] = [];
      const held: number[] = [];
      async function* body(): AsyncGenerator<Uint8Array> {
        for (let at = 0; at < bodySize; at += chunkSize) {
          if (at > 0 && at % (16 * chunkSize) === 0) {
            // A turn of the event loop first: a WeakRef made in this turn keeps its target until it ends.
            await new Promise((resolve) => setImmediate(resolve));
            gc();
            held.push(sent.filter((ref) => ref.deref() !== undefined).length * chunkSize);
          }
          const chunk = Buffer.alloc(chunkSize, at / chunkSize);
          sent.push(new WeakRef(chunk.buffer));
          yield chunk;
        }
      }
      const controller = new AbortController();
      assert.equal((await storage.put('big/bounded', body(), { signal: controller.signal })).size, bodySize);
      assert.equal((await storage.stat('big/bounded')).size, bodySize);
      // What may be kept: the part being filled, and a few chunks on their way to it.
      const bound = partSize + 4 * chunkSize;
      const mib = (n: number): string => `${n / 2 ** 20} MiB`;
      assert.equal(held.length, 5);
      assert.ok(Math.max(...held) <= bound, `the put kept ${held.map(mib).join(', ')} of the body at 16, 32, 48, 64 and 80 MiB of 96; at most ${mib(bound)} expected, whatever the body's length`);
    });

    it('a cancelled multipart put leaves no object and no unfinished upload', async function () {
      this.timeout(120_000);
      const location = freshLocation();
      const storage = new S3Storage(location, { partSize: 5 * 1024 * 1024 });
      const controller = new AbortController();
      async function* slow(): AsyncGenerator<Uint8Array> {
        for (let i = 0; i < 20; i++) {
          yield randomBytes(1024 * 1024);
          if (i === 12) controller.abort();
        }
      }
      await assert.rejects(storage.put('big/cancelled', slow(), { signal: controller.signal }), (err: unknown) => isStrataError(err, 'ABORTED'));
      await assert.rejects(storage.stat('big/cancelled'), (err: unknown) => isNotFound(err));
      const { root } = parseS3Location(location);
      assert.deepEqual((await buckets.uploads(bucket)).filter((k) => k.startsWith(root)), [], 'the multipart upload was aborted');
    });

    describe('exclusive create on a server without conditional writes (the claim protocol)', () => {
      it('falls back to claims after the 501, creates once, and leaves no claim behind', async () => {
        const log = path.join(useTmp(), 'requests.log');
        const location = freshLocation();
        const storage = withRequestLog(log, () => new S3Storage(location));
        assert.equal(await storage.createExclusive('locks/x.lock', Buffer.from('first')), true);
        assert.equal(await storage.createExclusive('locks/x.lock', Buffer.from('second')), false);
        assert.equal(Buffer.from(await storage.read('locks/x.lock')).toString(), 'first');
        const { root } = parseS3Location(location);
        assert.deepEqual(await buckets.keys(bucket, `${root}.claims/`), []);
        const ops = readFileSync(log, 'utf8').trim().split('\n').map((l) => `${l.split(' ')[1]} ${l.split(' ')[2]}`);
        // One conditional PUT learns that the server has none (501); then PUT claim, LIST, HEAD, PUT, DELETE claim.
        assert.deepEqual(ops.slice(0, 6), ['PutObject 501', 'PutObject 200', 'ListObjectsV2 200', 'HeadObject 404', 'PutObject 200', 'DeleteObject 204']);
        assert.equal(ops.filter((o) => o === 'PutObject 501').length, 1, 'the storage remembers that the server has no conditional writes');
      });

      it("removes a dead process's claim on this host and goes ahead", async () => {
        const location = freshLocation();
        const { root } = parseS3Location(location);
        const dead = deadPid();
        const stale = `${root}.claims/${encodeURIComponent('catalog/000000000002.json')}/000000000000001-deadbeef`;
        await adminClient().send(new PutObjectCommand({ Bucket: bucket, Key: stale, Body: JSON.stringify({ pid: dead, host: hostname(), time: new Date().toISOString() }) }));
        const storage = new S3Storage(location);
        assert.equal(await storage.createExclusive('catalog/000000000002.json', Buffer.from('{}')), true);
        assert.deepEqual(await buckets.keys(bucket, `${root}.claims/`), []);
      });

      it("waits for a live rival's claim and gives up naming the key (REPO_LOCKED) while it stays", async function () {
        this.timeout(120_000);
        const location = freshLocation();
        const { root } = parseS3Location(location);
        const rival = `${root}.claims/${encodeURIComponent('locks/repository.lock')}/000000000000001-live`;
        // This process is alive: a claim in its name is a live rival's.
        await adminClient().send(new PutObjectCommand({ Bucket: bucket, Key: rival, Body: JSON.stringify({ pid: process.pid, host: hostname(), time: new Date().toISOString() }) }));
        const storage = new S3Storage(location, {}, { staleMs: 120_000, giveUpMs: 3_000 });
        await assert.rejects(
          storage.createExclusive('locks/repository.lock', Buffer.from('x')),
          (err: unknown) => isStrataError(err, 'REPO_LOCKED') && err.message.includes('locks/repository.lock') && err.message.includes(location),
        );
        await assert.rejects(storage.stat('locks/repository.lock'), (err: unknown) => isNotFound(err));
        assert.deepEqual(await buckets.keys(bucket, `${root}.claims/`), [rival], 'only the rival claim is left; ours were removed');
      });

      it('with conditionalWrites "required", refuses a server without conditional writes and writes nothing', async () => {
        const location = freshLocation();
        const storage = new S3Storage(location, { conditionalWrites: 'required' });
        await assert.rejects(storage.createExclusive('locks/repository.lock', Buffer.from('x')), (err: unknown) => isStrataError(err, 'USAGE') && /does not support conditional writes/.test(err.message));
        await assert.rejects(storage.stat('locks/repository.lock'), (err: unknown) => isNotFound(err));
      });
    });

    it('sweepTemp aborts nothing young and reports a count', async () => {
      const storage = new S3Storage(freshLocation());
      await storage.put('x', Buffer.from('x'));
      assert.equal(await storage.sweepTemp(), 0);
    });
  });

  describe('strata on s3:// (the CLI, end to end)', function () {
    this.timeout(900_000);
    const dir = useSuiteDir();
    const secret = process.env['AWS_SECRET_ACCESS_KEY'] ?? '';
    const outputs: string[] = [];
    const counts: Record<string, Record<string, number>> = {};
    let location = '';
    let db = '';

    /** Runs strata with a request log and keeps what it printed, to look for the secret afterwards. */
    function run(step: string, args: string[], env: Record<string, string | undefined> = {}): ReturnType<typeof strata> {
      const log = path.join(dir.path, `requests-${step}.log`);
      rmSync(log, { force: true });
      const result = strata([...args], { env: { STRATA_S3_REQUEST_LOG: log, ...env } });
      outputs.push(result.stdout, result.stderr);
      let lines: string[] = [];
      try {
        lines = readFileSync(log, 'utf8').trim().split('\n');
      } catch {
        // No request made.
      }
      const byOp: Record<string, number> = { total: lines.length };
      for (const line of lines) byOp[line.split(' ')[1]!] = (byOp[line.split(' ')[1]!] ?? 0) + 1;
      counts[step] = byOp;
      return result;
    }

    before(() => {
      location = freshLocation();
      db = path.join(dir.path, 'app.db');
      buildRichDatabase(db, { rows: 100 });
    });

    after(() => {
      // The measured request counts, for the README's table.
      if (Object.keys(counts).length > 0) console.log(`      S3 requests per command: ${JSON.stringify(counts)}`);
    });

    it('init, full and incremental backups, list, verify --level full, restore (equal per sqlite3), prune and health all work', () => {
      const init = run('init', ['init', '--repo', location]);
      assert.equal(init.status, 0, init.stderr);
      assert.match(init.stdout, new RegExp(`created repository ${location}`));
      assert.doesNotMatch(init.stderr, /NodeVersionSupportWarning/, 'no SDK deprecation warning on every run');

      const full = run('backup-full', ['backup', db, '--repo', location, '--json']);
      assert.equal(full.status, 0, full.stderr);
      const fullId = json<{ id: string }>(full).id;
      const dumpFull = sqliteDump(db);
      mutate(db, 3);
      const incr = run('backup-incremental', ['backup', db, '--repo', location, '--type', 'incremental', '--json']);
      assert.equal(incr.status, 0, incr.stderr);
      const incrId = json<{ id: string; type: string }>(incr).id;
      const dumpIncr = sqliteDump(db);

      const list = run('list', ['list', '--repo', location, '--json']);
      assert.equal(list.status, 0, list.stderr);
      const listed = JSON.stringify(json(list));
      assert.ok(listed.includes(fullId) && listed.includes(incrId));

      const verify = run('verify', ['verify', '--all', '--repo', location, '--level', 'full']);
      assert.equal(verify.status, 0, verify.stdout + verify.stderr);

      const restored = path.join(dir.path, 'restored.db');
      const restore = run('restore', ['restore', incrId, '--repo', location, '--to', restored]);
      assert.equal(restore.status, 0, restore.stderr);
      assert.equal(sqliteDump(restored), dumpIncr, 'the incremental restore point comes back equal, per sqlite3');
      const restoredFull = path.join(dir.path, 'restored-full.db');
      assert.equal(strata(['restore', fullId, '--repo', location, '--to', restoredFull]).status, 0);
      assert.equal(sqliteDump(restoredFull), dumpFull);

      mutate(db, 4);
      assert.equal(run('backup-full-2', ['backup', db, '--repo', location]).status, 0);
      const prune = run('prune', ['prune', '--repo', location, '--keep-last', '1']);
      assert.equal(prune.status, 0, prune.stderr);
      const after = json<{ backups: unknown[] } | unknown[]>(strata(['list', '--repo', location, '--json']));
      assert.equal((Array.isArray(after) ? after : after.backups).length, 1, 'prune kept only the newest');

      const health = run('health', ['health', '--repo', location]);
      assert.ok(health.status === 0 || health.status === 3, health.stderr);
      assert.doesNotMatch(health.stderr, /error|failed/i);
    });

    it('keeps the secret key out of every object, the journal and every output', async () => {
      assert.ok(secret.length > 0);
      const { root } = parseS3Location(location);
      const keys = await buckets.keys(bucket, root);
      assert.ok(keys.some((k) => k.includes('journal/')) && keys.some((k) => k.includes('catalog/')));
      const storage = openStorage(location);
      for (const key of keys) {
        const bytes = Buffer.from(await storage.read(key.slice(root.length)));
        assert.equal(bytes.includes(Buffer.from(secret)), false, `${key} does not hold the secret`);
      }
      for (const text of outputs) assert.equal(text.includes(secret), false);
    });

    it('a wrong secret exits 7 (access denied) naming the bucket, without the secret', () => {
      const wrong = `${secret}-wrong`;
      const result = strata(['list', '--repo', location], { env: { AWS_SECRET_ACCESS_KEY: wrong } });
      assert.equal(result.status, 7, result.stderr);
      assert.match(result.stderr, /access denied/);
      assert.ok(result.stderr.includes(bucket));
      assert.ok(!result.stderr.includes(wrong) && !result.stderr.includes(secret));
    });

    it('a missing bucket exits 6 (no repository) naming the bucket, for init too', () => {
      const missing = `strata-test-missing-${randomBytes(4).toString('hex')}`;
      const list = strata(['list', '--repo', `s3://${missing}/x`]);
      assert.equal(list.status, 6, list.stderr);
      assert.ok(list.stderr.includes(missing));
      const init = strata(['init', '--repo', `s3://${missing}/x`]);
      assert.equal(init.status, 6, init.stderr);
      assert.match(init.stderr, new RegExp(`bucket ${missing} does not exist`));
    });

    it('refuses credentials in --repo with exit 2, without echoing them', () => {
      const result = strata(['list', '--repo', `s3://AKIAX:${TEST_PASSPHRASE}@${bucket}/x`]);
      assert.equal(result.status, 2);
      assert.ok(!result.stderr.includes(TEST_PASSPHRASE));
    });
  });

  /** Constructs with STRATA_S3_REQUEST_LOG set, so that storage's client logs every request to `file`. */
  function withRequestLog(file: string, make: () => S3Storage): S3Storage {
    const before = process.env['STRATA_S3_REQUEST_LOG'];
    process.env['STRATA_S3_REQUEST_LOG'] = file;
    try {
      return make();
    } finally {
      if (before === undefined) delete process.env['STRATA_S3_REQUEST_LOG'];
      else process.env['STRATA_S3_REQUEST_LOG'] = before;
    }
  }

  const tmpDirs: string[] = [];
  after(() => {
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  });
  function useTmp(): string {
    const d = mkdtempSync(path.join(tmpdir(), 'strata-s3-test-'));
    tmpDirs.push(d);
    return d;
  }

  /**
   * V8's full garbage collection, callable without starting the process with --expose-gc: after it
   * only what is still reachable holds memory, so what a test measures next is what is kept.
   */
  function fullCollection(): () => void {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  }

  /** A pid no process has on this host right now. */
  function deadPid(): number {
    for (let pid = 4_000_000; ; pid--) {
      try {
        process.kill(pid, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') return pid;
      }
    }
  }
});
