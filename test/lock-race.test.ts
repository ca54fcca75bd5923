import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { S3Storage, openStorage, withRepositoryLock } from '@strata/sdk';
import type { Storage } from '@strata/sdk';
import { useTempDir } from './helpers/env.js';
import { Buckets, requireS3, s3Configured } from './helpers/s3.js';

const RACER = fileURLToPath(new URL('./helpers/lock-racer.js', import.meta.url));

/** Starts a racer; resolves with how many times it found another holder inside the lock. */
function racer(location: string, markers: string, rounds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RACER, location, markers, String(rounds)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`racer exited ${code}`))));
  });
}

describe('the repository lock under a many-process race', () => {
  const dir = useTempDir();

  it("a dead holder's lock is taken over by exactly one of many processes judging it stale at once", async function () {
    this.timeout(600_000);
    const repo = path.join(dir.path, 'repo');
    mkdirSync(path.join(repo, 'locks'), { recursive: true });
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
    const rounds = 100;
    const processes = 6;
    const racers = Array.from({ length: processes }, () => racer(repo, repo, rounds));
    for (let round = 0; round < rounds; round++) {
      writeFileSync(
        path.join(repo, 'locks/repository.lock'),
        JSON.stringify({ token: `dead${String(round).padStart(8, '0')}`, pid: dead, host: hostname(), operation: 'backup', acquiredAt: new Date().toISOString() }),
      );
      writeFileSync(path.join(repo, `go-${round}`), '');
      while (readdirSync(repo).filter((f) => f.startsWith(`done-${round}-`)).length < processes) await delay(5);
    }
    const doubles = (await Promise.all(racers)).reduce((a, b) => a + b, 0);
    assert.equal(doubles, 0, `in ${doubles} of ${rounds * processes} acquisitions two processes held the lock at once`);
    // Nothing is left behind: no lock, no takeover markers.
    assert.deepEqual(readdirSync(path.join(repo, 'locks')).filter((f) => !f.startsWith('.')), []);
  });
});

describe('the repository lock under a many-process race on S3 (claims instead of conditional writes)', () => {
  const dir = useTempDir();
  const buckets = new Buckets();
  let bucket = '';

  before(async function () {
    requireS3(this);
    bucket = await buckets.create();
  });
  after(async () => {
    if (s3Configured()) await buckets.removeAll();
  });

  it("a dead holder's lock in a bucket is taken over by exactly one of several processes at once", async function () {
    this.timeout(900_000);
    const location = `s3://${bucket}/lock-race`;
    const storage = new S3Storage(location);
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
    // Fewer rounds than on a folder: each takeover is a few requests to a server doing ~40 writes a second.
    const rounds = 8;
    const processes = 4;
    const racers = Array.from({ length: processes }, () => racer(location, dir.path, rounds));
    // Settles when every racer has exited: with an error (a rejection), or after its last round.
    const ended = Promise.all(racers).then(() => 'ended' as const);
    ended.catch(() => undefined);
    for (let round = 0; round < rounds; round++) {
      await storage.put(
        'locks/repository.lock',
        Buffer.from(JSON.stringify({ token: `dead${String(round).padStart(8, '0')}`, pid: dead, host: hostname(), operation: 'backup', acquiredAt: new Date().toISOString() })),
      );
      writeFileSync(path.join(dir.path, `go-${round}`), '');
      const doneCount = (): number => readdirSync(dir.path).filter((f) => f.startsWith(`done-${round}-`)).length;
      while (doneCount() < processes) {
        // The racers exit right after the last round's markers, which may be before this loop sees them.
        if ((await Promise.race([delay(50), ended])) === 'ended' && doneCount() < processes) assert.fail(`the racers exited before round ${round + 1} of ${rounds} was done`);
      }
    }
    const doubles = (await Promise.all(racers)).reduce((a, b) => a + b, 0);
    assert.equal(doubles, 0, `in ${doubles} of ${rounds * processes} acquisitions two processes held the lock at once`);
    const left: string[] = [];
    for await (const object of storage.list('locks/')) left.push(object.key);
    assert.deepEqual(left, [], 'no lock and no takeover marker is left');
    assert.deepEqual(await buckets.keys(bucket, 'lock-race/.claims/'), [], 'no claim is left');
  });
});

describe('a lock held for longer than its stale age', () => {
  const dir = useTempDir();
  /** `storage` with some of its methods replaced. */
  const withStorage = (storage: Storage, replaced: Partial<Pick<Storage, 'read' | 'put'>>): Storage =>
    new Proxy(storage, {
      get: (target, name) => {
        if (name in replaced) return replaced[name as keyof typeof replaced];
        // Bound to the storage itself: its methods use its private fields.
        const value = Reflect.get(target, name) as unknown;
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  /** What a process on another host writes when it takes the lock. */
  const foreignLock = (token: string, acquiredAt: Date): string => JSON.stringify({ token, pid: 4_000_000, host: 'elsewhere.invalid', operation: 'prune', acquiredAt: acquiredAt.toISOString() });
  const lockedOrTaken = (p: Promise<string>): Promise<string> => p.catch((err: { code?: string }) => err.code ?? String(err));

  it('is not taken over by a process that judges it by age while its holder is still at work', async function () {
    this.timeout(120_000);
    const repo = path.join(dir.path, 'held');
    mkdirSync(repo, { recursive: true });
    const storage = openStorage(repo);
    const lockFile = path.join(repo, 'locks/repository.lock');
    // Generous against a loaded machine: the holder says it is alive every 0.75 s, and the
    // contender waits 6 s, twice the stale age, before it gives up.
    const staleAfterMs = 3_000;
    let contender: string | undefined;
    let signs = 0;
    await withRepositoryLock(
      storage,
      'prune',
      async () => {
        // Seen from another host, the lock is judged by its age and its holder's signs of life, not by a pid.
        writeFileSync(lockFile, JSON.stringify({ ...JSON.parse(readFileSync(lockFile, 'utf8')), host: 'elsewhere.invalid' }));
        contender = await lockedOrTaken(withRepositoryLock(storage, 'backup', async () => 'taken', { staleAfterMs, waitMs: 2 * staleAfterMs }));
        signs = readdirSync(path.join(repo, 'locks')).filter((f) => f.startsWith('repository.lock.alive-')).length;
      },
      { staleAfterMs },
    );
    assert.equal(contender, 'REPO_LOCKED', 'the contender must wait for a holder that is still at work, not take its lock over');
    assert.equal(signs, 1, "the holder's sign of life is beside its lock while it holds it");
    assert.deepEqual(readdirSync(path.join(repo, 'locks')).filter((f) => !f.startsWith('.')), [], 'the lock and its sign of life are gone once released');
  });

  it("is taken over once its holder's last sign of life is older than the stale age, and not before", async () => {
    const repo = path.join(dir.path, 'signs');
    mkdirSync(path.join(repo, 'locks'), { recursive: true });
    const storage = openStorage(repo);
    const hourAgo = new Date(Date.now() - 3_600_000);
    const sign = (token: string, at: Date): void =>
      writeFileSync(path.join(repo, `locks/repository.lock.alive-${token}`), JSON.stringify({ pid: 4_000_000, host: 'elsewhere.invalid', at: at.toISOString() }));

    writeFileSync(path.join(repo, 'locks/repository.lock'), foreignLock('recentsign0001', hourAgo));
    sign('recentsign0001', new Date(Date.now() - 5_000));
    assert.equal(await lockedOrTaken(withRepositoryLock(storage, 'backup', async () => 'taken', { staleAfterMs: 60_000, waitMs: 300 })), 'REPO_LOCKED');

    writeFileSync(path.join(repo, 'locks/repository.lock'), foreignLock('oldsign0000002', hourAgo));
    sign('oldsign0000002', new Date(Date.now() - 120_000));
    assert.equal(await lockedOrTaken(withRepositoryLock(storage, 'backup', async () => 'taken', { staleAfterMs: 60_000, waitMs: 300 })), 'taken');
    // The takeover removed the abandoned lock's sign of life with it (the first one's is still there, its lock was replaced by hand).
    assert.deepEqual(readdirSync(path.join(repo, 'locks')).filter((f) => !f.startsWith('.')).sort(), ['repository.lock.alive-recentsign0001']);

    // A sign cut short (not JSON) counts by when it was written: just now, so the holder is alive;
    // an hour ago, so it is not.
    writeFileSync(path.join(repo, 'locks/repository.lock'), foreignLock('tornsign000003', hourAgo));
    writeFileSync(path.join(repo, 'locks/repository.lock.alive-tornsign000003'), '{"pid": 4000');
    assert.equal(await lockedOrTaken(withRepositoryLock(storage, 'backup', async () => 'taken', { staleAfterMs: 60_000, waitMs: 300 })), 'REPO_LOCKED');
    utimesSync(path.join(repo, 'locks/repository.lock.alive-tornsign000003'), hourAgo, hourAgo);
    assert.equal(await lockedOrTaken(withRepositoryLock(storage, 'backup', async () => 'taken', { staleAfterMs: 60_000, waitMs: 300 })), 'taken');
    // No sign at all: judged by when the lock was taken, as before signs existed.
    writeFileSync(path.join(repo, 'locks/repository.lock'), foreignLock('nosign00000004', hourAgo));
    assert.equal(await lockedOrTaken(withRepositoryLock(storage, 'backup', async () => 'taken', { staleAfterMs: 60_000, waitMs: 300 })), 'taken');

    // A sign the storage fails to read counts as alive, and the wait's end says why it went on.
    writeFileSync(path.join(repo, 'locks/repository.lock'), foreignLock('unreadable0005', hourAgo));
    const failing = withStorage(storage, {
      read: async (key) => {
        if (key.includes('.alive-')) throw new Error('connection reset by peer');
        return storage.read(key);
      },
    });
    await assert.rejects(withRepositoryLock(failing, 'backup', async () => 'taken', { staleAfterMs: 60_000, waitMs: 300 }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'REPO_LOCKED');
      assert.match(err.message, /its sign of life could not be read, so it counts as alive: connection reset by peer/);
      return true;
    });
  });

  it('lets go of the lock at once when its sign of life cannot be written, and never queues signs behind a stuck write', async function () {
    this.timeout(120_000);
    const repo = path.join(dir.path, 'stuck');
    mkdirSync(repo, { recursive: true });
    const storage = openStorage(repo);
    let signs = 0;
    // A storage whose write of the sign never ends, whatever the signal says.
    const stuck = withStorage(storage, {
      put: async (key, body, options) => {
        if (!key.includes('.alive-')) return storage.put(key, body, options);
        signs++;
        return new Promise(() => undefined);
      },
    });
    const started = Date.now();
    // Signs due every 250 ms, held for 1.5 s: five of them would be due.
    await withRepositoryLock(stuck, 'prune', () => delay(1_500), { staleAfterMs: 1_000 });
    const heldAndReleased = Date.now() - started;
    assert.equal(signs, 1, 'a sign still being written is not followed by others queued behind it');
    // 1.5 s held, at most 2 s more for the stuck write; generous for a loaded machine, far from "never".
    assert.ok(heldAndReleased < 15_000, `the release took ${heldAndReleased} ms`);
    assert.deepEqual(readdirSync(path.join(repo, 'locks')).filter((f) => !f.startsWith('.')), [], 'the lock is gone');
  });
});
