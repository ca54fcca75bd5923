// Benchmark: Strata backup and restore of a SQLite database to an S3 repository (`s3://BUCKET/strata`)
// against the same to a local folder, and against the raw AWS SDK moving the same bytes:
//   S3 backup:   strata backup DB --repo s3://BUCKET/strata     (request log per run)
//   local:       strata backup DB --repo WORK/repo
//   SDK upload:  lib-storage's Upload of that round's local artifact (what `aws s3 cp FILE s3://...` does)
//   S3 restore:  strata restore ID --repo s3://BUCKET/strata --to T
//   local:       strata restore ID --repo WORK/repo --to T
//   SDK GET:     one plain GetObject of the uploaded artifact into a file, fsynced
//
//   node bench/s3.mjs [--size-mb 1024] [--rounds 2] [--part-size BYTES] [--concurrency N] [--keep] [--keep-server]
//
// The server: the one the standard AWS variables name (AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3,
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), else OpenStack Swift started with scripts/s3/start-s3.sh
// in $STRATA_BENCH_S3_DIR (default /tmp/strata-s3-bench) on S3_PORT 18083 and S3_BACKEND_PORT 16230
// (not the tests' 18080/16200), stopped and deleted afterwards unless it was already running or
// --keep-server is given. A bucket `strata-bench-<random>` is made for the run and emptied and
// deleted afterwards. Results go to bench/.data/results-s3-<size>mb.json.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DATA, ensureDatabase } from './lib/app-database.mjs';
import { startCpuSampler, waitQuiet } from './lib/cpu-sampler.mjs';
import { BENCH, CLI, ROOT, benchWorkspace, distFingerprint, fmtMB, fmtS, gitCommit, machineInfo, median, requireTools, run } from './lib/measure.mjs';

const PASSPHRASE = 'strata-bench correct horse battery staple';
const SDK_TRANSFER = path.join(BENCH, 'lib/s3-sdk-transfer.mjs');
const SDK_KEY = 'sdk-baseline/artifact';

const { values: opts } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '2' },
    'part-size': { type: 'string', default: String(8 * 1024 * 1024) },
    concurrency: { type: 'string', default: '4' },
    keep: { type: 'boolean', default: false },
    'keep-server': { type: 'boolean', default: false },
    'quiet-wait': { type: 'string', default: '60' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node bench/s3.mjs [--size-mb N (1024)] [--rounds N (2)] [--part-size BYTES (8 MiB)] [--concurrency N (4)] [--keep] [--keep-server] [--quiet-wait SECONDS (60)]\n' +
    'Before each run it waits (up to --quiet-wait seconds, 0: not at all) until other processes, the S3 server included, use under 0.2 cores over 2 s.');
  process.exit(0);
}
const SIZE_MB = Number(opts['size-mb']);
const ROUNDS = Number(opts.rounds);
const PART_SIZE = Number(opts['part-size']);
const CONCURRENCY = Number(opts.concurrency);
if (!(SIZE_MB >= 1) || !(ROUNDS >= 1)) throw new Error('--size-mb and --rounds must be positive numbers');
if (!Number.isInteger(PART_SIZE) || PART_SIZE < 5 * 1024 * 1024) throw new Error('--part-size must be a whole number of bytes, at least 5 MiB (S3\'s minimum part size)');
if (!Number.isInteger(CONCURRENCY) || CONCURRENCY < 1) throw new Error('--concurrency must be a whole number ≥ 1');
const QUIET_WAIT = Number(opts['quiet-wait']);
if (!(QUIET_WAIT >= 0)) throw new Error('--quiet-wait must be a number of seconds ≥ 0');
const PART_MIB = Number((PART_SIZE / 2 ** 20).toFixed(2));

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const sdkRequire = createRequire(path.join(ROOT, 'packages/storage-s3/package.json'));
const { S3Client, CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, ListObjectsV2Command, ListMultipartUploadsCommand, AbortMultipartUploadCommand } = sdkRequire('@aws-sdk/client-s3');

// ---------------------------------------------------------------------------------------------
// The server

/**
 * The S3 server to measure against: the one the AWS variables name, or Swift started here.
 * Returns { endpoint, pids (the server's processes, for its CPU; empty for an outside server), stop() }.
 */
function s3Server() {
  const configured = (process.env.AWS_ENDPOINT_URL || process.env.AWS_ENDPOINT_URL_S3) && process.env.AWS_ACCESS_KEY_ID && process.env.AWS_SECRET_ACCESS_KEY;
  if (configured) {
    console.log(`S3 server: ${process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL} (from the AWS variables; its CPU is not measured)`);
    return { endpoint: process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL, pids: [], stop() {} };
  }
  const dir = process.env.STRATA_BENCH_S3_DIR || path.join(os.tmpdir(), 'strata-s3-bench');
  const wasRunning = serverPids(dir).length === 4;
  const env = { ...process.env, S3_PORT: process.env.S3_PORT || '18083', S3_BACKEND_PORT: process.env.S3_BACKEND_PORT || '16230' };
  console.log(`S3 server: ${wasRunning ? 'reusing' : 'starting'} OpenStack Swift in ${dir} (scripts/s3/start-s3.sh; S3_PORT ${env.S3_PORT}, S3_BACKEND_PORT ${env.S3_BACKEND_PORT})`);
  const started = spawnSync('bash', [path.join(ROOT, 'scripts/s3/start-s3.sh'), dir], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (started.status !== 0) {
    throw new Error(`scripts/s3/start-s3.sh ${dir} failed (exit ${started.status}); start an S3 server yourself and export AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or set S3_PORT / S3_BACKEND_PORT to free ports`);
  }
  for (const line of started.stdout.split('\n')) {
    const m = /^(AWS_[A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) process.env[m[1]] = m[2];
  }
  const stopWhenDone = !wasRunning && !opts['keep-server'];
  return {
    endpoint: process.env.AWS_ENDPOINT_URL,
    pids: serverPids(dir),
    dir,
    stop() {
      if (!stopWhenDone) { console.log(`S3 server left running in ${dir} (stop it with: bash scripts/s3/stop-s3.sh ${dir} --purge)`); return; }
      spawnSync('bash', [path.join(ROOT, 'scripts/s3/stop-s3.sh'), dir, '--purge'], { stdio: 'inherit' });
    },
  };
}

/** The live processes start-s3.sh started from `dir` (its PID files, while their command line names the folder). */
function serverPids(dir) {
  const pids = [];
  for (const name of ['account', 'container', 'object', 'proxy']) {
    try {
      const pid = fs.readFileSync(path.join(dir, 'run', `${name}.pid`), 'utf8').trim();
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`${dir}/etc/${name}-server.conf`)) pids.push(Number(pid));
    } catch { /* not running */ }
  }
  return pids;
}

const adminClient = () => new S3Client({ forcePathStyle: true, region: process.env.AWS_REGION || 'us-east-1', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });

/** Empties and deletes the benchmark's bucket: unfinished multipart uploads, every key, the bucket. */
async function removeBucket(client, bucket) {
  const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  for (const u of uploads.Uploads ?? []) await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
  let token;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ...(token ? { ContinuationToken: token } : {}) }));
    for (const object of page.Contents ?? []) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: object.Key }));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/** Throws unless `dir`'s file system has `bytes` free, naming what needs the room. */
function requireFree(dir, bytes, what) {
  const st = fs.statfsSync(dir);
  const free = st.bavail * st.bsize;
  if (free < bytes) throw new Error(`${dir} has ${fmtMB(free)} free; ${what} needs about ${fmtMB(bytes)}: free some space or use a smaller --size-mb / --rounds`);
}

// ---------------------------------------------------------------------------------------------
// Measured runs

let waited = 0;

/**
 * Runs a measured node child (wall, peak RSS, CPU) while sampling where the machine's CPU went (the
 * S3 server's apart), after waiting (up to --quiet-wait) for the machine to be quiet.
 */
async function measuredNode(args, { env = {}, cwd, serverPids }) {
  waited += await waitQuiet({ limitSeconds: QUIET_WAIT, serverPids });
  const sampler = startCpuSampler({ serverPids });
  const startedAt = Date.now();
  const res = await run(process.execPath, args, { env: { ...process.env, ...env }, measureRss: true, cwd });
  const cpu = sampler.stop();
  return { ...res, startedAt, serverCpu: cpu.server, machineCpu: cpu.total, otherCpu: Math.max(0, cpu.total - cpu.bench - cpu.server - cpu.kernel) };
}

/**
 * Counts a request log's lines per operation, and the answers that were not 2xx; and splits the
 * run's wall time into phases by the times of the log's lines (each written when its answer came):
 * start-up (until the first answer), before the artifact (opening the repository, the lock, the
 * pending note, and for a backup producing the first part), the artifact's requests (first to last
 * answer about `backups/`), after it (cached copies, the catalog commit, the journal), and exit.
 */
function countRequests(file, startedAt, wallMs) {
  const byOperation = {};
  let total = 0, not2xx = 0;
  const times = [], artifactTimes = [];
  const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  for (const line of lines) {
    const [time, operation, status, key = ''] = line.split(' ');
    byOperation[operation] = (byOperation[operation] ?? 0) + 1;
    total++;
    if (!/^2\d\d$/.test(status)) not2xx++;
    const t = Date.parse(time) - startedAt;
    times.push(t);
    if (/^[^/]*\/?backups\//.test(key.replace(/^prefix=/, ''))) artifactTimes.push(t);
  }
  let phases = null;
  if (times.length > 0 && artifactTimes.length > 0) {
    const [first, last] = [Math.min(...times), Math.max(...times)];
    const [aFirst, aLast] = [Math.min(...artifactTimes), Math.max(...artifactTimes)];
    phases = { startup: first, beforeArtifact: aFirst - first, artifact: aLast - aFirst, afterArtifact: last - aLast, exit: wallMs - last };
  }
  return { total, not2xx, byOperation, phases };
}

const sha256File = (file) => {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
  for (let n; (n = fs.readSync(fd, buf)) > 0;) h.update(buf.subarray(0, n));
  fs.closeSync(fd);
  return h.digest('hex');
};

// ---------------------------------------------------------------------------------------------

async function main() {
  requireTools(['sqlite3']);
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);

  const { file: DB, meta, cached } = ensureDatabase(SIZE_MB);
  console.log(`database: ${DB} (${fmtMB(meta.bytes)}, ${cached ? 'cached' : `built in ${meta.buildSeconds} s`})`);

  const workspace = benchWorkspace(path.join(DATA, `work-s3-${SIZE_MB}mb`), PASSPHRASE);
  const { WORK, REPO } = workspace;
  const bucket = `strata-bench-${randomBytes(4).toString('hex')}`;
  const S3_REPO = `s3://${bucket}/strata`;
  let server, admin, bucketMade = false;
  const loadBefore = os.loadavg();
  try {
    server = s3Server();
    admin = adminClient();
    // Room: the server keeps every round's artifact and the SDK's copy; the work folder every
    // round's local artifact and the restored files. An artifact is at most about the database.
    const serverNeed = (ROUNDS + 1) * meta.bytes, workNeed = (ROUNDS + 3) * meta.bytes;
    const sameDisk = server.dir && fs.statSync(server.dir).dev === fs.statSync(WORK).dev;
    if (server.dir && !sameDisk) requireFree(server.dir, serverNeed, 'the S3 server');
    requireFree(WORK, workNeed + (sameDisk ? serverNeed : 0) + 2 ** 30, sameDisk ? 'the S3 server and the work folder' : 'the work folder');

    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
    bucketMade = true;

    // Strata reads its S3 settings from the config file in its working folder; the local runs
    // start in an empty folder, so neither sees a config file but its own.
    const s3Cwd = path.join(WORK, 's3-cwd'), localCwd = path.join(WORK, 'local-cwd');
    fs.mkdirSync(s3Cwd); fs.mkdirSync(localCwd);
    fs.writeFileSync(path.join(s3Cwd, 'strata.config.json'), JSON.stringify({ storage: { partSize: PART_SIZE, concurrency: CONCURRENCY } }, null, 2) + '\n');
    const strataEnv = { STRATA_PASSPHRASE: PASSPHRASE };
    const pids = server.pids;
    const strataLocal = (args) => measuredNode([CLI, ...args, '--repo', REPO, '--json'], { env: strataEnv, cwd: localCwd, serverPids: pids });
    let logNo = 0;
    const strataS3 = async (args) => {
      const log = path.join(WORK, `requests-${++logNo}.log`);
      const res = await measuredNode([CLI, ...args, '--repo', S3_REPO, '--json'], { env: { ...strataEnv, STRATA_S3_REQUEST_LOG: log }, cwd: s3Cwd, serverPids: pids });
      return { ...res, requests: countRequests(log, res.startedAt, res.wallMs) };
    };
    const sdk = async (args) => {
      const res = await measuredNode([SDK_TRANSFER, ...args], { serverPids: pids });
      const out = JSON.parse(res.stdout.trim().split('\n').pop());
      return { ...res, bytes: out.bytes, requests: { total: Object.values(out.requests).reduce((a, b) => a + b, 0), not2xx: 0, byOperation: out.requests } };
    };

    await run('sh', ['-c', `cat "$0" > /dev/null`, DB]); // page cache: every run reads the database from memory
    await strataLocal(['init']);
    await strataS3(['init']);

    const r = { localBackup: [], s3Backup: [], sdkUpload: [], localRestore: [], s3Restore: [], sdkGet: [] };
    const keep = (res, extra) => ({ wallMs: res.wallMs, rssKiB: res.rssKiB, cpuSec: res.cpuSec, serverCpu: res.serverCpu, otherCpu: res.otherCpu, machineCpu: res.machineCpu, requests: res.requests, ...extra });
    const restoredLocal = path.join(WORK, 'restored-local.db'), restoredS3 = path.join(WORK, 'restored-s3.db'), downloaded = path.join(WORK, 'sdk-get.bin');
    const dist = distFingerprint();
    let artifact;
    for (let round = 1; round <= ROUNDS; round++) {
      const lb = await strataLocal(['backup', DB]);
      const localBackup = JSON.parse(lb.stdout).backup;
      r.localBackup.push(keep(lb, { bytes: localBackup.storedBytes, id: localBackup.id }));
      const sb = await strataS3(['backup', DB]);
      const s3Backup = JSON.parse(sb.stdout).backup;
      r.s3Backup.push(keep(sb, { bytes: s3Backup.storedBytes, id: s3Backup.id }));
      // The SDK moves this round's local artifact: the same kind and size of bytes Strata sent.
      artifact = path.join(REPO, localBackup.key);
      const up = await sdk(['upload', artifact, bucket, SDK_KEY, String(PART_SIZE), String(CONCURRENCY)]);
      r.sdkUpload.push(keep(up, { bytes: up.bytes }));

      for (const f of [restoredLocal, restoredS3, downloaded]) fs.rmSync(f, { force: true });
      const lr = await strataLocal(['restore', localBackup.id, '--to', restoredLocal]);
      r.localRestore.push(keep(lr, { bytes: fs.statSync(restoredLocal).size }));
      const sr = await strataS3(['restore', s3Backup.id, '--to', restoredS3]);
      r.s3Restore.push(keep(sr, { bytes: fs.statSync(restoredS3).size }));
      const get = await sdk(['download', bucket, SDK_KEY, downloaded]);
      r.sdkGet.push(keep(get, { bytes: get.bytes }));

      console.log(`round ${round}/${ROUNDS}: backup S3 ${fmtS(sb.wallMs)} / local ${fmtS(lb.wallMs)} / SDK Upload ${fmtS(up.wallMs)}; ` +
        `restore S3 ${fmtS(sr.wallMs)} / local ${fmtS(lr.wallMs)} / SDK GET ${fmtS(get.wallMs)}; ` +
        `S3 peak RSS backup ${fmtMB(sb.rssKiB * 1024)}, restore ${fmtMB(sr.rssKiB * 1024)}; ` +
        `requests backup ${sb.requests.total}, restore ${sr.requests.total}; ${pids.length ? `server CPU s backup ${sb.serverCpu.toFixed(1)}, restore ${sr.serverCpu.toFixed(1)}; ` : ''}load ${os.loadavg()[0].toFixed(2)}`);
    }
    const loadAfter = os.loadavg();
    if (distFingerprint() !== dist) console.log('WARNING: packages/<pkg>/dist changed while the benchmark ran (someone rebuilt); the Strata runs used different builds');

    // Sanity: both restored files are sound databases with every order; the SDK's copy is the artifact.
    for (const f of [restoredLocal, restoredS3]) {
      const check = spawnSync('sqlite3', [f, 'PRAGMA quick_check; SELECT count(*) FROM orders;'], { encoding: 'utf8' });
      const [ok, n] = check.stdout.trim().split('\n');
      if (ok !== 'ok' || Number(n) !== meta.rows.orders) throw new Error(`restored ${f} is not sound: ${check.stdout}${check.stderr}`);
    }
    if (sha256File(downloaded) !== sha256File(artifact)) throw new Error('the SDK download differs from the uploaded artifact');

    report(r, meta, dist, server, { loadBefore, loadAfter });
  } finally {
    try {
      if (bucketMade) await removeBucket(admin, bucket);
    } catch (err) {
      console.error(`could not remove the bucket ${bucket}: ${err.message}`);
    }
    admin?.destroy();
    workspace.close(opts.keep);
    server?.stop();
  }
}

function report(r, meta, dist, server, load) {
  const m = (xs, k) => median(xs.map((x) => x[k]));
  const med = Object.fromEntries(Object.entries(r).map(([k, xs]) => [k, {
    wallMs: m(xs, 'wallMs'), bytes: m(xs, 'bytes'), maxRssKiB: Math.max(...xs.map((x) => x.rssKiB)),
    cpuSec: m(xs, 'cpuSec'), serverCpu: m(xs, 'serverCpu'), machineCpu: m(xs, 'machineCpu'), otherCpu: Math.max(...xs.map((x) => x.otherCpu)),
    otherCpuPerSec: Math.max(...xs.map((x) => x.otherCpu / (x.wallMs / 1000))),
    requests: xs[xs.length - 1].requests,
    phases: xs[0].requests?.phases ? Object.fromEntries(Object.keys(xs[0].requests.phases).map((p) => [p, median(xs.map((x) => x.requests.phases[p]))])) : null,
  }]));
  const commit = gitCommit();
  const result = {
    date: new Date().toISOString(), commit, dist, sizeMb: SIZE_MB, rounds: ROUNDS, databaseBytes: meta.bytes,
    partSize: PART_SIZE, concurrency: CONCURRENCY, endpoint: server.endpoint, load, waitedForQuietSeconds: waited,
    machine: machineInfo(), runs: r, medians: med,
  };
  fs.writeFileSync(path.join(DATA, `results-s3-${SIZE_MB}mb.json`), JSON.stringify(result, null, 2) + '\n');

  const { s3Backup: SB, localBackup: LB, sdkUpload: UP, s3Restore: SR, localRestore: LR, sdkGet: GET } = med;
  const rss = (x) => fmtMB(x.maxRssKiB * 1024);
  const rate = (x) => `${(x.bytes / 1e6 / (x.wallMs / 1000)).toFixed(0)} MB/s`;
  const lines = [
    `${SIZE_MB} MiB database (${fmtMB(meta.bytes)}), ${ROUNDS} round(s), medians; peak RSS is the largest of the rounds; ` +
      `S3: ${server.endpoint}, part size ${PART_MIB} MiB, concurrency ${CONCURRENCY}`,
    '',
    '| case | S3 | local folder | S3 / local | target | met | S3 peak RSS | local peak RSS |',
    '| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |',
    `| backup wall time | ${fmtS(SB.wallMs)} | ${fmtS(LB.wallMs)} | ${(SB.wallMs / LB.wallMs).toFixed(2)} | <= 1.20 | ${SB.wallMs / LB.wallMs <= 1.2 ? 'yes' : 'NO'} | ${rss(SB)} | ${rss(LB)} |`,
    `| restore wall time | ${fmtS(SR.wallMs)} | ${fmtS(LR.wallMs)} | ${(SR.wallMs / LR.wallMs).toFixed(2)} | <= 1.20 | ${SR.wallMs / LR.wallMs <= 1.2 ? 'yes' : 'NO'} | ${rss(SR)} | ${rss(LR)} |`,
    `| peak RSS backup to S3 | ${rss(SB)} | | | < 300 MB | ${SB.maxRssKiB * 1024 < 300e6 ? 'yes' : 'NO'} | | |`,
    `| peak RSS restore from S3 | ${rss(SR)} | | | < 300 MB | ${SR.maxRssKiB * 1024 < 300e6 ? 'yes' : 'NO'} | | |`,
    '',
    `The raw SDK moving the same bytes (the local artifact, ${fmtMB(UP.bytes)}; Strata's S3 artifact ${fmtMB(SB.bytes)}):`,
    '',
    '| case | wall | throughput | peak RSS | requests | Strata S3 / SDK |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    `| SDK Upload (multipart, ${PART_MIB} MiB parts, ${CONCURRENCY} at once) | ${fmtS(UP.wallMs)} | ${rate(UP)} | ${rss(UP)} | ${UP.requests.total} | backup ${(SB.wallMs / UP.wallMs).toFixed(2)} |`,
    `| plain GetObject into a file | ${fmtS(GET.wallMs)} | ${rate(GET)} | ${rss(GET)} | ${GET.requests.total} | restore ${(SR.wallMs / GET.wallMs).toFixed(2)} |`,
    '',
    'Requests per operation (the last round; from STRATA_S3_REQUEST_LOG, every HTTP attempt):',
    '',
    '| operation | requests | not 2xx | by kind |',
    '| --- | ---: | ---: | --- |',
    ...[['Strata backup to S3', SB], ['Strata restore from S3', SR], ['SDK Upload', UP], ['SDK GET', GET]].map(([label, x]) =>
      `| ${label} | ${x.requests.total} | ${x.requests.not2xx} | ${Object.entries(x.requests.byOperation).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')} |`),
    '',
    'Where the wall time of the S3 runs goes (medians, seconds; from the request log\'s times):',
    '',
    '| operation | start-up (to the first answer) | before the artifact | the artifact\'s requests | after the artifact (commit) | exit |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...[['Strata backup to S3', SB], ['Strata restore from S3', SR]].filter(([, x]) => x.phases).map(([label, x]) =>
      `| ${label} | ${Object.values(x.phases).map((ms) => (ms / 1000).toFixed(2)).join(' | ')} |`),
    '',
    'CPU seconds (medians; tool = the measured process, server = the S3 server\'s processes, machine = all busy CPU, both cores):',
    '',
    '| case | wall | tool | server | machine |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...[['Strata backup to S3', SB], ['Strata backup to a folder', LB], ['SDK Upload', UP], ['Strata restore from S3', SR], ['Strata restore from a folder', LR], ['SDK GET', GET]].map(([label, x]) =>
      `| ${label} | ${fmtS(x.wallMs)} | ${x.cpuSec.toFixed(1)} | ${server.pids.length ? x.serverCpu.toFixed(1) : '?'} | ${x.machineCpu.toFixed(1)} |`),
    '',
    `Load average (1, 5, 15 min): ${load.loadBefore.map((x) => x.toFixed(2)).join(', ')} before, ${load.loadAfter.map((x) => x.toFixed(2)).join(', ')} after; ${waited.toFixed(0)} s spent waiting for a quiet machine (commit ${commit})`,
  ];
  const noisy = Math.max(...Object.values(med).map((x) => x.otherCpuPerSec));
  if (noisy > 0.15) lines.push(`WARNING: other processes (not this benchmark, not its S3 server) kept up to ${noisy.toFixed(2)} cores busy during a run; the timings are disturbed`);
  console.log('\n' + lines.join('\n'));
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
