import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { parseS3Location } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { finished, sqliteDump, strataAsync, useSuiteDir } from './helpers/env.js';
import type { CliResult } from './helpers/env.js';
import { FaultProxy } from './helpers/fault-proxy.js';
import type { FaultRates } from './helpers/fault-proxy.js';
import { Buckets, requireS3, s3Configured } from './helpers/s3.js';
import { repositoryLeftovers } from './reliability/s3-sweep.js';

// Backups with the real CLI to a real S3 server through the fault proxy (test/helpers/fault-proxy.ts):
// each run succeeds or fails cleanly, a backup is never half visible, the next run recovers, and
// every backup whose CLI said it was done is listed and verifies. The CLI runs asynchronously:
// the proxy lives in this process and must keep serving while a child waits on it.

const SEED = 20261203;
const MIB = 1024 * 1024;
/** Transient faults: the storage's retries (5 attempts) absorb them all. */
const TRANSIENT: FaultRates = { resetUpload: 0.08, resetDownload: 0.08, errorBefore: 0.08, errorAfter: 0.08, delay: 0.05, delayMs: 500, maxConsecutive: 2 };
/** An outage in all but name: half the requests fail, up to 8 times in a row, so some backups fail. */
const HEAVY: FaultRates = { resetUpload: 0.2, resetDownload: 0.2, errorBefore: 0.25, errorAfter: 0.25, maxConsecutive: 8 };
/** Exit statuses a failed backup may have (README "Exit status"): failed, locked. */
const CLEAN_FAILURES = [1, 5];

const buckets = new Buckets();
let bucket = '';
let proxy: FaultProxy | undefined;
let made = 0;
const work = useSuiteDir();

async function cli(args: string[], through: 'proxy' | 'direct', cwd?: string): Promise<CliResult> {
  // (AWS_ENDPOINT_URL_S3 would win over it: the tests take the server from AWS_ENDPOINT_URL.)
  const env = through === 'proxy' ? { AWS_ENDPOINT_URL: proxy!.url } : {};
  return finished(strataAsync(args, { env, ...(cwd ? { cwd } : {}) }));
}

async function listed(location: string): Promise<BackupRecord[]> {
  const run = await cli(['list', '--repo', location, '--json'], 'direct');
  assert.equal(run.status, 0, `the catalog reads: ${run.stderr}`);
  return (JSON.parse(run.stdout) as { backups: BackupRecord[] }).backups;
}

function assertCleanFailure(run: CliResult, what: string): void {
  assert.ok(CLEAN_FAILURES.includes(run.status), `${what}: exit ${run.status} is a documented failure status (${run.stderr})`);
  assert.match(run.stderr, /storage|locked/i, `${what}: the message says what failed`);
  assert.doesNotMatch(run.stderr, /^\s+at .*\.js:\d+/m, `${what}: no stack trace`);
}

describe('backups to S3 through a faulty network (fault proxy, real CLI)', function () {
  this.timeout(1_200_000);
  before(async function () {
    requireS3(this);
    bucket = await buckets.create();
    proxy = await FaultProxy.start({ target: (process.env['AWS_ENDPOINT_URL_S3'] || process.env['AWS_ENDPOINT_URL'])!, seed: SEED });
  });
  after(async () => {
    if (!proxy) return;
    console.log(`      fault proxy (seed ${SEED}): ${proxy.counts.requests} requests, injected ${JSON.stringify(proxy.counts.injected)}`);
    await proxy.stop();
    if (s3Configured()) await buckets.removeAll();
  });

  it('each backup succeeds or fails cleanly; none is half visible; the next run recovers; every one reported done lists and verifies', async () => {
    const location = `s3://${bucket}/faults-${++made}`;
    const db = path.join(work.path, 'app.db');
    buildRichDatabase(db, { rows: 200 });
    assert.equal((await cli(['init', '--repo', location], 'direct')).status, 0);
    const done: string[] = [];
    const failed: string[] = [];
    const phases: [string, FaultRates, number][] = [
      ['transient', TRANSIENT, 3],
      ['heavy', HEAVY, 3],
    ];
    let step = 0;
    for (const [phase, faults, runs] of phases) {
      for (let i = 0; i < runs; i++) {
        mutate(db, ++step);
        proxy!.setFaults(faults);
        const type = i === 0 ? 'full' : 'incremental';
        const run = await cli(['backup', db, '--repo', location, '--type', type, '--json'], 'proxy');
        proxy!.setFaults({});
        if (run.status === 0) done.push((JSON.parse(run.stdout) as { id: string }).id);
        else {
          assertCleanFailure(run, `${phase} backup ${i}`);
          failed.push(`${phase} ${type}: exit ${run.status}`);
        }
        // Whatever happened, what is listed is whole (checked without faults).
        const now = await listed(location);
        for (const id of done) assert.ok(now.some((b) => b.id === id), `${id}, reported done, is listed`);
        const verify = await cli(['verify', '--all', '--level', 'quick', '--repo', location], 'direct');
        assert.equal(verify.status, 0, `every listed backup verifies after the ${phase} backup ${i}: ${verify.stdout}${verify.stderr}`);
      }
    }
    console.log(`      ${done.length} backups done, ${failed.length} failed cleanly (${failed.join('; ') || 'none'})`);
    assert.ok(proxy!.failures > 0, 'faults were injected');

    // The next run, on a healthy network, recovers what the failed ones left and succeeds.
    mutate(db, ++step);
    const next = await cli(['backup', db, '--repo', location, '--json'], 'direct');
    assert.equal(next.status, 0, next.stderr);
    const last = (JSON.parse(next.stdout) as { id: string }).id;
    const backups = await listed(location);
    for (const id of [...done, last]) assert.ok(backups.some((b) => b.id === id), `${id} is listed`);
    assert.deepEqual(await repositoryLeftovers(location, backups), [], 'no note, lock, stale generation or orphan artifact is left');
    const { root } = parseS3Location(location);
    assert.deepEqual((await buckets.uploads(bucket)).filter((k) => k.startsWith(root)), [], 'no multipart upload is left incomplete');
    // The newest restores to the database as it was (sqlite3's own dump as the oracle).
    const target = path.join(work.path, 'restored.db');
    const restore = await cli(['restore', last, '--repo', location, '--to', target], 'direct');
    assert.equal(restore.status, 0, restore.stderr);
    assert.equal(sqliteDump(target), sqliteDump(db));
  });

  it('a backup killed while parts of its multipart upload are in flight leaves nothing visible; the next run recovers', async () => {
    const location = `s3://${bucket}/killed-${++made}`;
    const cwd = path.join(work.path, 'kill');
    const db = path.join(work.path, 'big.db');
    // 16 MiB of random pages: four parts of 5 MiB, the smallest S3 allows.
    const big = new Database(db);
    big.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)');
    const insert = big.prepare('INSERT INTO blobs(data) VALUES (randomblob(65536))');
    big.transaction(() => {
      for (let i = 0; i < 256; i++) insert.run();
    })();
    big.close();
    await import('node:fs').then((fs) => fs.mkdirSync(cwd, { recursive: true }));
    writeFileSync(path.join(cwd, 'strata.config.json'), JSON.stringify({ storage: { partSize: 5 * MIB, concurrency: 2 } }));
    assert.equal((await cli(['init', '--repo', location], 'direct', cwd)).status, 0);
    const first = await cli(['backup', db, '--repo', location, '--json'], 'direct', cwd);
    assert.equal(first.status, 0, first.stderr);

    // Parts are slowed down (not failed), so the kill finds them in flight.
    proxy!.setFaults({ delay: 1, delayMs: 1500, methods: ['PUT'] });
    const parts = proxy!.whenRequests((method, url) => method === 'PUT' && url.searchParams.has('partNumber'), 2);
    const child = strataAsync(['backup', db, '--repo', location, '--json'], { cwd, env: { AWS_ENDPOINT_URL: proxy!.url } });
    const ended = finished(child);
    const which = await Promise.race([parts.then(() => 'parts' as const), ended.then(() => 'ended' as const)]);
    assert.equal(which, 'parts', 'the backup reached its multipart upload');
    child.kill('SIGKILL');
    assert.equal((await ended).signal, 'SIGKILL');
    proxy!.setFaults({});

    const { root } = parseS3Location(location);
    const inFlight = (await buckets.uploads(bucket)).filter((k) => k.startsWith(root));
    console.log(`      killed with ${proxy!.counts.uploadParts} part requests seen; ${inFlight.length} multipart upload(s) left incomplete by the kill`);
    const afterKill = await listed(location);
    assert.deepEqual(
      afterKill.map((b) => b.id),
      [(JSON.parse(first.stdout) as { id: string }).id],
      'only the finished backup is listed',
    );
    assert.equal((await cli(['verify', '--all', '--level', 'quick', '--repo', location], 'direct', cwd)).status, 0);

    // The next run: recovery deletes what the dead writer announced, then a backup goes through.
    const next = await cli(['backup', db, '--repo', location, '--json'], 'direct', cwd);
    assert.equal(next.status, 0, next.stderr);
    const backups = await listed(location);
    assert.equal(backups.length, 2);
    assert.deepEqual(await repositoryLeftovers(location, backups), [], 'the killed backup left no note, lock or orphan artifact after recovery');
    assert.equal((await cli(['verify', '--all', '--level', 'quick', '--repo', location], 'direct', cwd)).status, 0);
    // The killed writer's upload is aborted by the next open (its mark under .uploads/ names a dead pid).
    assert.deepEqual((await buckets.uploads(bucket)).filter((k) => k.startsWith(root)), [], 'no multipart upload is left incomplete');
    assert.deepEqual(await buckets.keys(bucket, `${root}.uploads/`), [], 'no upload mark is left');
  });
});
