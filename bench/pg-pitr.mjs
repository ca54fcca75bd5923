// Benchmark: physical backup and point-in-time recovery of a PostgreSQL cluster, Strata against the
// by-hand pipelines (issue #20), in a cluster of the benchmark's own (initdb, a free port; the
// shared server is never touched):
//   backup:   strata backup cluster (a "method": "physical" entry)
//             pg_basebackup -Ft -D - -X none --checkpoint=fast | zstd -3 | gpg --symmetric ... -o BASE.tar.zst.gpg && sync   (by hand)
//   recovery: strata restore latest --db cluster --to DIR --as-of T --start    (T: the end of --traffic-minutes of pgbench traffic after the base)
//             by hand: gpg -d BASE | zstd -d | tar -x, recovery.signal, recovery_target_time = T, pause,
//             restore_command = 'bash hand-restore.sh %f %p' (gpg -d SEG.zst.gpg | zstd -d > %p),
//             pg_ctl start, wait until paused at T, pg_ctl stop (what --start does)
//   wal-push: N archived segments pushed one `strata wal-push` process at a time (as the archiver
//             runs archive_command), against `zstd -3 | gpg` per segment (the by-hand archive_command)
//
//   node bench/pg-pitr.mjs [--size-mb 1430] [--traffic-minutes 60] [--rate 60] [--rounds 3]
//                          [--push-segments 32] [--quiet-wait 30] [--keep] [--rebuild]
//
// The cluster (bench/.data/pg-pitr-cluster-<N>mb, the database of bench/lib/pg-app-database.mjs
// loaded into it) is built once and reused while its marker table matches (--rebuild: afresh).
// During the build archive_command is `true`; then it becomes
//   strata wal-push %p --db cluster --config C --passphrase-file P && cp %p RAW/%f
// (the raw copy feeds the by-hand archive and the wal-push timing, untimed itself).
// Results go to bench/.data/results-pg-pitr-<N>mb.json. As root, the cluster, every strata command
// and the by-hand pipelines run as the postgres user (PostgreSQL refuses root).
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DATA } from './lib/app-database.mjs';
import { startCpuSampler, waitQuiet } from './lib/cpu-sampler.mjs';
import { CLI, disturbanceWarning, distFingerprint, fmtMB, fmtS, gitCommit, machineInfo, median, requireTools, run } from './lib/measure.mjs';
import { APP_DB, connect, ensurePgDatabase } from './lib/pg-app-database.mjs';

const PASSPHRASE = 'strata-bench correct horse battery staple';
const CLUSTER_NAME = 'strata_bench_pitr';
const ENTRY = 'cluster';

const { values: opts } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1430' },
    'traffic-minutes': { type: 'string', default: '60' },
    rate: { type: 'string', default: '60' },
    rounds: { type: 'string', default: '3' },
    'push-segments': { type: 'string', default: '32' },
    'quiet-wait': { type: 'string', default: '30' },
    bindir: { type: 'string', default: process.env.STRATA_PG_BINDIR ?? '/usr/lib/postgresql/15/bin' },
    keep: { type: 'boolean', default: false },
    rebuild: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(fs.readFileSync(new URL(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n'));
  process.exit(0);
}
const num = (name, min) => {
  const n = Number(opts[name]);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number of at least ${min}, not ${JSON.stringify(opts[name])}`);
  return n;
};
const SIZE_MB = num('size-mb', 16), TRAFFIC_MIN = num('traffic-minutes', 0.1), RATE = num('rate', 1), ROUNDS = num('rounds', 1), PUSH_N = num('push-segments', 1);
const BIN = (p) => path.join(opts.bindir, p);

const isRoot = process.getuid?.() === 0;
/** argv for running as the server's user (postgres when we are root). */
const asPg = (cmd, args) => (isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]);
const chownPg = (p) => { if (isRoot) spawnSync('chown', ['-R', 'postgres:postgres', p]); };
const syncPg = (cmd, args, env) => {
  const [c, a] = asPg(cmd, args);
  const r = spawnSync(c, a, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}\n${r.stdout}${r.stderr}`);
  return r.stdout;
};

/** The major version of the server programs: PostgreSQL 17 and later also run the block-level differential case. */
const MAJOR = Number(/\(PostgreSQL\) (\d+)/.exec(spawnSync(BIN('postgres'), ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1] ?? 0);
const BLOCK_LEVEL = MAJOR >= 17;
// A cluster of another major version lives in a folder of its own (PostgreSQL 15's keeps its old name).
const CLUSTER = path.join(DATA, MAJOR === 15 || MAJOR === 0 ? `pg-pitr-cluster-${SIZE_MB}mb` : `pg-pitr-cluster-pg${MAJOR}-${SIZE_MB}mb`);
const PGDATA = path.join(CLUSTER, 'data');
const WORK = path.join(DATA, `work-pg-pitr-${SIZE_MB}mb`);
/** Present once a run's traffic has changed the cluster's database. */
const TRAFFIC_MARK = path.join(CLUSTER, 'traffic-ran');
const F = {
  config: path.join(WORK, 'strata.config.json'),
  passfile: path.join(WORK, 'passphrase'),
  repo: path.join(WORK, 'repo'),
  raw: path.join(WORK, 'raw-wal'),
  hand: path.join(WORK, 'hand-wal'),
  handBase: path.join(WORK, 'hand-base.tar.zst.gpg'),
  handManifest: path.join(WORK, 'hand-base.backup_manifest'),
  handDifferential: path.join(WORK, 'hand-differential.tar.zst.gpg'),
  gnupg: path.join(WORK, 'gnupg'),
  restoreScript: path.join(WORK, 'hand-restore.sh'),
  pushRepo: path.join(WORK, 'push-repo'),
  pushConfig: path.join(WORK, 'push.config.json'),
  pushHand: path.join(WORK, 'push-hand'),
  strataRestored: path.join(WORK, 'restored-strata'),
  handRestored: path.join(WORK, 'restored-hand'),
  sockets: path.join(WORK, 'sockets'),
};

let port = 0;
const SERVER = () => ({ host: '127.0.0.1', port, user: 'postgres' });
const loadAvg = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// ---------------------------------------------------------------------------------------------
// Measured runs (as the postgres user), with the machine's CPU and load average recorded

const SERVER_DBS = new RegExp(CLUSTER_NAME);
let waited = 0;
async function settle() {
  spawnSync('sync');
  waited += await waitQuiet({ limitSeconds: Number(opts['quiet-wait']), serverDb: SERVER_DBS });
}

async function measured(cmd, args, env = {}) {
  const [c, a] = asPg(cmd, args);
  const load = loadAvg()[0];
  const sampler = startCpuSampler({ serverDb: SERVER_DBS });
  let res;
  try {
    res = await run(c, a, { env: { ...process.env, GNUPGHOME: F.gnupg, ...env }, measureRss: true });
  } finally {
    const cpu = sampler.stop();
    if (res) { res.cpu = cpu; res.load1 = load; res.loadAfter = loadAvg()[0]; }
  }
  return res;
}
const strata = (args, config = F.config) => measured(process.execPath, [CLI, ...args, '--config', config, '--passphrase-file', F.passfile]);
// The by-hand side runs the programs of --bindir (a pg_basebackup older than the server refuses it).
const shPg = (script, env) => measured('bash', ['-c', `set -euo pipefail\n${script}`], { PATH: `${opts.bindir}:${process.env.PATH}`, ...env });

/** What a run measured so far, kept in case a later phase fails (an hour of traffic is dear). */
const partial = (what) => fs.writeFileSync(path.join(DATA, `partial-pg-pitr-${SIZE_MB}mb.json`), JSON.stringify({ at: new Date().toISOString(), ...what }, null, 2) + '\n');

// ---------------------------------------------------------------------------------------------
// The cluster

function writeConfig(file, repo) {
  fs.writeFileSync(file, JSON.stringify({ repository: repo, databases: { [ENTRY]: { url: `postgres://postgres@127.0.0.1:${port}/postgres`, method: 'physical' } } }, null, 2) + '\n');
}

const archiveCommand = () => `${process.execPath} ${CLI} wal-push %p --db ${ENTRY} --config ${F.config} --passphrase-file ${F.passfile} && cp %p ${F.raw}/%f`;

function startCluster() {
  fs.mkdirSync(F.sockets, { recursive: true });
  chownPg(F.sockets);
  syncPg(BIN('pg_ctl'), ['start', '-D', PGDATA, '-l', path.join(CLUSTER, 'server.log'), '-w', '-t', '600',
    '-o', `-c port=${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${F.sockets}`]);
}
function stopCluster() {
  if (fs.existsSync(path.join(PGDATA, 'postmaster.pid'))) spawnSync(...asPg(BIN('pg_ctl'), ['stop', '-D', PGDATA, '-m', 'fast', '-w', '-t', '600']), { stdio: 'inherit' });
}

async function sql(query, params, database = 'postgres') {
  const c = await connect(SERVER(), database, 'strata bench pitr');
  try { return (await c.query(query, params)).rows; } finally { await c.end(); }
}

async function setArchiveCommand(cmd) {
  await sql(`ALTER SYSTEM SET archive_command = '${cmd.replace(/'/g, "''")}'`);
  await sql('SELECT pg_reload_conf()');
}

/** Initialises the cluster when there is none (or --rebuild), starts it, and loads the benchmark database into it. */
async function ensureCluster() {
  // Traffic changes the database (it grew from 1495 to 1562 MB in a 40-minute run): a cluster
  // that has had traffic is built again, so that every run starts from the same database.
  const trafficRan = fs.existsSync(TRAFFIC_MARK);
  if (trafficRan && !opts.rebuild) console.log('the cached cluster has had an earlier run\'s traffic: building it again');
  if (opts.rebuild || trafficRan || !fs.existsSync(path.join(PGDATA, 'PG_VERSION'))) {
    if (fs.existsSync(path.join(PGDATA, 'postmaster.pid'))) stopCluster();
    fs.rmSync(CLUSTER, { recursive: true, force: true });
    fs.mkdirSync(CLUSTER, { recursive: true });
    chownPg(CLUSTER);
    syncPg(BIN('initdb'), ['-D', PGDATA, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C']);
    // archive_mode needs a restart to change; archive_command only a reload, so it is `true` while
    // the database is loaded (that WAL is before every base backup) and Strata's afterwards.
    fs.appendFileSync(path.join(PGDATA, 'postgresql.auto.conf'), [
      `cluster_name = '${CLUSTER_NAME}'`,
      'archive_mode = on',
      "archive_command = 'true'",
      "max_wal_size = '2GB'",
      // What block-level incrementals need (PostgreSQL 17 and later).
      ...(BLOCK_LEVEL ? ['summarize_wal = on'] : []),
      '',
    ].join('\n'));
  }
  startCluster();
  await setArchiveCommand('true');
  const { meta, cached } = await ensurePgDatabase({ server: SERVER(), sizeMb: SIZE_MB, rebuild: opts.rebuild || trafficRan });
  return { meta, cached };
}

/** Waits until the archiver has archived `wal` (a segment name) or later, or throws after `seconds`. */
async function waitArchived(wal, seconds = 1800) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const [r] = await sql('SELECT last_archived_wal AS w, last_failed_wal AS f, failed_count AS n FROM pg_stat_archiver');
    // Names compare as (log, segment) past the timeline; a .backup or .history file names its segment first.
    if (r.w && /^[0-9A-F]{24}/.test(r.w) && r.w.slice(8, 24) >= wal.slice(8, 24)) return;
    if (Date.now() > deadline) throw new Error(`the archiver has not archived ${wal} after ${seconds} s (last archived ${r.w}, last failed ${r.f}, ${r.n} failures; see ${CLUSTER}/server.log)`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}
async function switchAndWait() {
  const [{ w }] = await sql('SELECT pg_walfile_name(pg_switch_wal()) AS w');
  await waitArchived(w);
  return w;
}

// ---------------------------------------------------------------------------------------------
// The by-hand side

const GPG_ENC = 'gpg --batch --yes --quiet --symmetric --cipher-algo AES256 -z 0 --pinentry-mode loopback --passphrase-fd 3';
const GPG_DEC = 'gpg --batch --quiet --pinentry-mode loopback --passphrase-fd 3 --decrypt';

function writeRestoreScript() {
  // The restore_command of the by-hand recovery: a missing file is exit 1 (the server asks for
  // files that do not exist, such as the next timeline's history); written beside, then renamed.
  fs.writeFileSync(F.restoreScript, `#!/bin/bash
set -euo pipefail
src="${F.hand}/$1.zst.gpg"
[ -f "$src" ] || exit 1
export GNUPGHOME="${F.gnupg}"
${GPG_DEC} "$src" 3<"${F.passfile}" | zstd -q -d -c > "$2.part"
mv "$2.part" "$2"
`, { mode: 0o755 });
}

/** The by-hand recovery, timed as a whole: unpack, configure, start, wait for the pause at the target, report, stop. */
function handRecoveryScript(targetTime, recoveryPort) {
  const opts = `-c port=${recoveryPort} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${F.sockets} -c archive_mode=off -c hot_standby=on`;
  return `
umask 077
D="${F.handRestored}"
mkdir "$D"
${GPG_DEC} "${F.handBase}" 3<"${F.passfile}" | zstd -q -d -c | tar -x -C "$D"
mkdir -p "$D/pg_wal/archive_status"
cat >> "$D/postgresql.auto.conf" <<'EOF'
restore_command = 'bash ${F.restoreScript} %f %p'
recovery_target_time = '${targetTime}'
recovery_target_action = 'pause'
EOF
touch "$D/recovery.signal"
${BIN('pg_ctl')} start -D "$D" -l "$D/recovery.log" -w -t 600 -o '${opts}' > /dev/null
q() { psql -h 127.0.0.1 -p ${recoveryPort} -U postgres -d postgres -XAtq -c "$1" 2>/dev/null || true; }
until [ "$(q "SELECT pg_get_wal_replay_pause_state()")" = paused ]; do
  if ! [ -f "$D/postmaster.pid" ]; then tail -n 20 "$D/recovery.log" >&2; exit 1; fi
  sleep 0.3
done
q "SELECT pg_last_wal_replay_lsn()::text || ' ' || to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\\"T\\"HH24:MI:SS.US')"
${BIN('pg_ctl')} stop -D "$D" -m fast -w -t 600 > /dev/null
`;
}

// ---------------------------------------------------------------------------------------------

async function main() {
  requireTools(['pgbench', 'psql', 'zstd', 'gpg', 'gpgconf', 'tar', BIN('initdb'), BIN('pg_ctl'), BIN('pg_basebackup')]);
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);
  const startedAt = new Date();
  const loads = [];
  const loadTimer = setInterval(() => loads.push(loadAvg()[0]), 10_000);
  console.log(`pg-pitr benchmark, commit ${gitCommit()}, ${startedAt.toISOString()}, load average ${loadAvg().join(' / ')}`);

  // The postgres user must reach its folders in bench/.data: passing through (not listing) is enough.
  fs.mkdirSync(DATA, { recursive: true });
  if (isRoot) fs.chmodSync(DATA, fs.statSync(DATA).mode | 0o711);
  fs.rmSync(WORK, { recursive: true, force: true });
  for (const d of [WORK, F.raw, F.hand, F.gnupg, F.pushHand]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  fs.writeFileSync(F.passfile, PASSPHRASE, { mode: 0o600 });
  port = await freePort();
  writeConfig(F.config, F.repo);
  writeConfig(F.pushConfig, F.pushRepo);
  writeRestoreScript();
  chownPg(WORK);

  const dist = distFingerprint();
  let meta, cached;
  try {
    ({ meta, cached } = await ensureCluster());
    console.log(`cluster ${PGDATA} on port ${port}; database ${APP_DB} (${fmtMB(meta.bytes)}: tables ${fmtMB(meta.tableBytes)}, indexes ${fmtMB(meta.indexBytes)}; ` +
      `${cached ? 'cached' : `built in ${meta.buildSeconds} s`})`);
    const [{ n: clusterBytes }] = await sql('SELECT sum(pg_database_size(datname))::bigint AS n FROM pg_database');

    await strata(['init', '--json']);
    await setArchiveCommand(archiveCommand());
    await switchAndWait();

    // 1. Base backups, alternating.
    const r = { strataBackup: [], handBackup: [], strataDifferential: [], handDifferential: [], strataPush: [], handPush: [], strataRecovery: [], handRecovery: [] };
    const rec = (k, res, extra = {}) => { r[k].push({ wallMs: res.wallMs, rssKiB: res.rssKiB, cpuSec: res.cpuSec, cpu: res.cpu, load1: res.load1, ...extra }); return res; };
    let strataBase;
    for (let round = 1; round <= ROUNDS; round++) {
      await settle();
      const b = await strata(['backup', ENTRY, '--json']);
      strataBase = JSON.parse(b.stdout).backup;
      rec('strataBackup', b, { bytes: strataBase.storedBytes, id: strataBase.id });
      await settle();
      fs.rmSync(F.handBase, { force: true });
      const h = await shPg(`pg_basebackup -h 127.0.0.1 -p ${port} -U postgres --no-password -Ft -D - -X none --checkpoint=fast --label=by-hand \\
  | zstd -3 -q -c | ${GPG_ENC} -o "${F.handBase}" 3<"${F.passfile}"
sync "${F.handBase}"`);
      rec('handBackup', h, { bytes: fs.statSync(F.handBase).size });
      partial({ r });
      console.log(`round ${round}/${ROUNDS} backup: strata ${fmtS(b.wallMs)} (${fmtMB(strataBase.storedBytes)}), by hand ${fmtS(h.wallMs)} (${fmtMB(fs.statSync(F.handBase).size)}); load ${b.load1}/${h.load1}`);
    }

    // 2. Traffic after the base backups: pgbench at --rate against the application's tables.
    const [ids] = await sql('SELECT (SELECT max(id) FROM customers) AS c, (SELECT max(id) FROM orders) AS o, (SELECT max(id) FROM products) AS p', [], APP_DB);
    const script = path.join(WORK, 'traffic.sql');
    fs.writeFileSync(script, `\\set cid random(1, ${ids.c})
\\set oid random(1, ${ids.o})
\\set pid random(1, ${ids.p})
BEGIN;
UPDATE orders SET status = 'shipped', updated_at = now() WHERE id = :oid;
INSERT INTO order_items (order_id, product_id, sku, quantity, unit_price_cents) VALUES (:oid, :pid, 'pgbench', 1, 100);
INSERT INTO events (customer_id, type, ts, payload) VALUES (:cid, 'pgbench', now(), jsonb_build_object('order', :oid, 'note', md5(random()::text)));
END;
`);
    chownPg(script);
    const [before] = await sql('SELECT pg_current_wal_lsn()::text AS lsn, archived_count AS n FROM pg_stat_archiver');
    const trafficSeconds = Math.round(TRAFFIC_MIN * 60);
    console.log(`traffic: pgbench --rate ${RATE} -c 2 for ${trafficSeconds} s (${TRAFFIC_MIN} min), from ${new Date().toISOString()}`);
    fs.writeFileSync(TRAFFIC_MARK, `${new Date().toISOString()}\n`);
    const trafficLoads = [loadAvg()[0]];
    const tl = setInterval(() => trafficLoads.push(loadAvg()[0]), 10_000);
    const pgb = await run(...asPg('pgbench', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-n', '-c', '2', '-j', '1', '-T', String(trafficSeconds), '-R', String(RATE), '-P', '300', '-f', script, APP_DB]), {});
    clearInterval(tl);
    trafficLoads.push(loadAvg()[0]);
    const [{ t: targetTime }] = await sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') || '+00' AS t");
    // A commit after the target, so that recovery finds the first record past it and stops there.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await sql('CREATE TABLE IF NOT EXISTS bench_after_target (at timestamptz); INSERT INTO bench_after_target VALUES (now())', [], APP_DB);
    const [after] = await sql('SELECT pg_current_wal_lsn()::text AS lsn, pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint AS bytes', [before.lsn]);
    const lastSeg = await switchAndWait();
    const [archived] = await sql('SELECT archived_count AS n, failed_count AS f FROM pg_stat_archiver');
    const tps = /tps = ([\d.]+)/.exec(pgb.stdout)?.[1];
    const lat = /latency average = ([\d.]+) ms/.exec(pgb.stdout)?.[1];
    const rawFiles = fs.readdirSync(F.raw).filter((f) => /^[0-9A-F]{24}$/.test(f)).sort();
    const traffic = {
      minutes: TRAFFIC_MIN, rate: RATE, tps: Number(tps), latencyMs: Number(lat), targetTime, walBytes: Number(after.bytes),
      segmentsArchived: archived.n - before.n, archiveFailures: archived.f, lastSegment: lastSeg,
      loadAverage: { min: Math.min(...trafficLoads), median: median(trafficLoads), max: Math.max(...trafficLoads) },
    };
    partial({ r, traffic });
    console.log(`traffic done: ${tps} tps (latency ${lat} ms), ${fmtMB(traffic.walBytes)} of WAL, ${traffic.segmentsArchived} segments archived through strata wal-push; target ${targetTime}; load ${JSON.stringify(traffic.loadAverage)}`);

    // 2b. PostgreSQL 17 and later: a block-level differential on the last full, after the traffic,
    //     alternating with pg_basebackup --incremental given the by-hand full's manifest | zstd | gpg.
    //     Strata reads its parent's backup_manifest back from the repository (a read of the full),
    //     the by-hand side has it at hand (taken out of its base, untimed).
    if (BLOCK_LEVEL) {
      await shPg(`export GNUPGHOME="${F.gnupg}"; ${GPG_DEC} "${F.handBase}" 3<"${F.passfile}" | zstd -q -d -c | tar -x -O -f - backup_manifest > "${F.handManifest}"`);
      for (let round = 1; round <= ROUNDS; round++) {
        await settle();
        const d = await strata(['backup', ENTRY, '--type', 'differential', '--json']);
        const made = JSON.parse(d.stdout).backup;
        rec('strataDifferential', d, { bytes: made.storedBytes, id: made.id, incrementalMethod: made.incrementalMethod });
        await settle();
        fs.rmSync(F.handDifferential, { force: true });
        const h = await shPg(`pg_basebackup -h 127.0.0.1 -p ${port} -U postgres --no-password -Ft -D - -X none --checkpoint=fast --label=by-hand --incremental="${F.handManifest}" \\
  | zstd -3 -q -c | ${GPG_ENC} -o "${F.handDifferential}" 3<"${F.passfile}"
sync "${F.handDifferential}"`);
        rec('handDifferential', h, { bytes: fs.statSync(F.handDifferential).size });
        partial({ r, traffic });
        console.log(`round ${round}/${ROUNDS} differential: strata ${fmtS(d.wallMs)} (${fmtMB(made.storedBytes)}, ${made.incrementalMethod}), by hand ${fmtS(h.wallMs)} (${fmtMB(fs.statSync(F.handDifferential).size)}); load ${d.load1}/${h.load1}`);
        if (made.incrementalMethod !== 'block-level') throw new Error(`the differential was taken by ${made.incrementalMethod}, not block-level: is summarize_wal on?`);
      }
    }

    // 3. wal-push segments per second: N raw segments pushed one process at a time into a fresh
    //    repository, against zstd | gpg per segment; then the by-hand archive of every segment (untimed).
    const pushSet = rawFiles.slice(-Math.min(PUSH_N, rawFiles.length));
    const list = pushSet.map((f) => path.join(F.raw, f)).join(' ');
    for (let round = 1; round <= ROUNDS; round++) {
      fs.rmSync(F.pushRepo, { recursive: true, force: true });
      await strata(['init', '--json'], F.pushConfig);
      await settle();
      const s = await shPg(`for f in ${list}; do ${process.execPath} ${CLI} wal-push "$f" --db ${ENTRY} --config ${F.pushConfig} --passphrase-file ${F.passfile}; done`);
      rec('strataPush', s, { segments: pushSet.length });
      await settle();
      const h = await shPg(`for f in ${list}; do zstd -3 -q -c "$f" | ${GPG_ENC} -o "${F.pushHand}/$(basename "$f").zst.gpg" 3<"${F.passfile}"; done
sync -f "${F.pushHand}"`);
      rec('handPush', h, { segments: pushSet.length });
      console.log(`round ${round}/${ROUNDS} wal-push of ${pushSet.length} segments: strata ${fmtS(s.wallMs)} (${(pushSet.length / (s.wallMs / 1000)).toFixed(2)}/s), zstd | gpg ${fmtS(h.wallMs)} (${(pushSet.length / (h.wallMs / 1000)).toFixed(2)}/s)`);
    }
    await shPg(`cd "${F.raw}"; for f in ${rawFiles.join(' ')}; do zstd -3 -q -c "$f" | ${GPG_ENC} -o "${F.hand}/$f.zst.gpg" 3<"${F.passfile}"; done; for f in *.history; do [ -f "$f" ] && zstd -3 -q -c "$f" | ${GPG_ENC} -o "${F.hand}/$f.zst.gpg" 3<"${F.passfile}"; done; true`);

    // 4. Recovery to the end of the traffic, alternating.
    const reached = [];
    const mismatches = [];
    for (let round = 1; round <= ROUNDS; round++) {
      for (const d of [F.strataRestored, F.handRestored]) fs.rmSync(d, { recursive: true, force: true });
      await settle();
      const s = await strata(['restore', 'latest', '--db', ENTRY, '--to', F.strataRestored, '--as-of', targetTime.replace(' ', 'T').replace('+00', 'Z'), '--start', '--json']);
      const sj = JSON.parse(s.stdout);
      // Each `strata wal-fetch` the server fell back to says so in the recovery's log, one line per process.
      const fetches = (() => {
        try {
          return fs.readFileSync(path.join(F.strataRestored, 'strata-recovery.log'), 'utf8').split('\n').filter((l) => l.startsWith('strata wal-fetch: '));
        } catch {
          return [];
        }
      })();
      rec('strataRecovery', s, { walSegments: sj.walSegments, reached: sj.reached, walFetches: fetches });
      fs.rmSync(F.strataRestored, { recursive: true, force: true });
      await settle();
      const h = await shPg(handRecoveryScript(targetTime, await freePort()));
      const [lsn, last] = h.stdout.trim().split('\n').pop().split(' ');
      rec('handRecovery', h, { reached: { lsn, lastCommit: `${last.slice(0, 23)}Z` } });
      fs.rmSync(F.handRestored, { recursive: true, force: true });
      reached.push({ strata: sj.reached, hand: { lsn, last } });
      console.log(`round ${round}/${ROUNDS} recovery: strata ${fmtS(s.wallMs)} (reached ${sj.reached.lsn}, last commit ${sj.reached.lastCommit}, ${sj.walSegments} segments checked, ${fetches.length} wal-fetch process(es): ${fetches.map((l) => l.split(' ')[2]).join(', ') || 'none'}), ` +
        `by hand ${fmtS(h.wallMs)} (reached ${lsn}, last commit ${last}); load ${s.load1}/${h.load1}`);
      // Reported, not thrown: an hour of traffic is not thrown away over it; the report says so.
      if (sj.reached.state !== 'paused' || sj.reached.lsn !== lsn) mismatches.push(`round ${round}: strata ${JSON.stringify(sj.reached)}, by hand ${lsn} ${last}`);
      partial({ r, traffic, reached, mismatches });
    }
    if (mismatches.length) console.log(`WARNING: the two recoveries stopped at different places:\n  ${mismatches.join('\n  ')}`);

    const rebuilt = distFingerprint() !== dist;
    if (rebuilt) console.log('WARNING: packages/<pkg>/dist changed while the benchmark ran (someone rebuilt); the Strata runs used different builds');
    if (!mismatches.length) console.log('checks: in every round both recoveries paused at the same LSN (the first commit after the target)');
    clearInterval(loadTimer);
    report(r, { meta, clusterBytes: Number(clusterBytes), traffic, dist, rebuilt, startedAt, loads, cached, reached, mismatches });
  } finally {
    clearInterval(loadTimer);
    stopCluster();
    spawnSync(...asPg('gpgconf', ['--kill', 'all']), { env: { ...process.env, GNUPGHOME: F.gnupg } });
    if (!opts.keep) fs.rmSync(WORK, { recursive: true, force: true });
  }
}

function report(r, { meta, clusterBytes, traffic, dist, rebuilt, startedAt, loads, cached, reached, mismatches }) {
  const m = (xs, f) => median(xs.map(f));
  const med = Object.fromEntries(Object.entries(r).filter(([, xs]) => xs.length > 0).map(([k, xs]) => [k, {
    wallMs: m(xs, (x) => x.wallMs), bytes: xs[0].bytes === undefined ? undefined : m(xs, (x) => x.bytes),
    rssKiB: m(xs, (x) => x.rssKiB), maxRssKiB: Math.max(...xs.map((x) => x.rssKiB)),
    cpuSec: m(xs, (x) => x.cpuSec), serverCpu: m(xs, (x) => x.cpu.server), machineCpu: m(xs, (x) => x.cpu.total),
    otherCpuPerSec: Math.max(...xs.map((x) => x.cpu.other / (x.wallMs / 1000))), load1: m(xs, (x) => x.load1),
  }]));
  const segs = r.strataPush[0].segments;
  const commit = gitCommit();
  const loadAverage = { min: Math.min(...loads), median: median(loads), max: Math.max(...loads) };
  const result = {
    date: startedAt.toISOString(), ended: new Date().toISOString(), commit, dist, distRebuiltDuringRun: rebuilt, waitedForQuietSeconds: waited,
    sizeMb: SIZE_MB, rounds: ROUNDS, database: meta, databaseCached: cached, clusterBytes, traffic, pushSegments: segs, reached, recoveryMismatches: mismatches, loadAverage,
    machine: { ...machineInfo(), postgres: syncPg(BIN('postgres'), ['--version']).trim(), zstd: spawnSync('zstd', ['--version'], { encoding: 'utf8' }).stdout.trim(), gpg: spawnSync('gpg', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] },
    runs: r, medians: med,
  };
  fs.writeFileSync(path.join(DATA, `results-pg-pitr-${SIZE_MB}mb.json`), JSON.stringify(result, null, 2) + '\n');

  const row = (c, s, p, ratio, target) => {
    const ok = target === '' ? '' : ratio <= Number(target.replace('<= ', '')) ? 'yes' : 'NO';
    return `| ${c} | ${s} | ${p} | ${ratio.toFixed(2)} | ${target} | ${ok} |`;
  };
  const perSec = (x) => segs / (x.wallMs / 1000);
  const lines = [
    `cluster ${fmtMB(clusterBytes)} (${APP_DB} ${fmtMB(meta.bytes)}), ${ROUNDS} rounds, medians; traffic ${traffic.minutes} min at ${traffic.tps} tps, ${fmtMB(traffic.walBytes)} of WAL, ${traffic.segmentsArchived} segments archived`,
    '',
    '| case | Strata | by hand | Strata / by hand | target | met |',
    '| --- | ---: | ---: | ---: | --- | --- |',
    row('physical full backup vs `pg_basebackup -Ft -X none \\| zstd -3 \\| gpg`', fmtS(med.strataBackup.wallMs), fmtS(med.handBackup.wallMs), med.strataBackup.wallMs / med.handBackup.wallMs, '<= 1.0'),
    row('backup size', fmtMB(med.strataBackup.bytes), fmtMB(med.handBackup.bytes), med.strataBackup.bytes / med.handBackup.bytes, ''),
    ...(med.strataDifferential
      ? [
          row(`block-level differential after ${traffic.minutes} min of traffic vs \`pg_basebackup --incremental \\| zstd -3 \\| gpg\``, fmtS(med.strataDifferential.wallMs), fmtS(med.handDifferential.wallMs), med.strataDifferential.wallMs / med.handDifferential.wallMs, ''),
          row('differential size', fmtMB(med.strataDifferential.bytes), fmtMB(med.handDifferential.bytes), med.strataDifferential.bytes / med.handDifferential.bytes, ''),
        ]
      : []),
    row(`recovery to the end of ${traffic.minutes} min of traffic vs by hand with a restore_command`, fmtS(med.strataRecovery.wallMs), fmtS(med.handRecovery.wallMs), med.strataRecovery.wallMs / med.handRecovery.wallMs, '<= 1.2'),
    row(`archiving ${segs} segments one process each (segments/s)`, perSec(med.strataPush).toFixed(2), perSec(med.handPush).toFixed(2), perSec(med.strataPush) / perSec(med.handPush), ''),
    '',
    `CPU per archived segment: strata wal-push ${(med.strataPush.cpuSec / segs).toFixed(2)} s, zstd | gpg ${(med.handPush.cpuSec / segs).toFixed(2)} s`,
    'CPU seconds (median; tool = the measured process tree, server = the benchmark cluster and the recovering copies, machine = all CPUs busy):',
    ...[['Strata backup', 'strataBackup'], ['by-hand backup', 'handBackup'], ...(med.strataDifferential ? [['Strata differential', 'strataDifferential'], ['by-hand differential', 'handDifferential']] : []), ['Strata recovery', 'strataRecovery'], ['by-hand recovery', 'handRecovery'], ['strata wal-push xN', 'strataPush'], ['zstd | gpg xN', 'handPush']]
      .map(([label, k]) => `  ${label.padEnd(20)}wall ${fmtS(med[k].wallMs).padStart(9)}   tool ${med[k].cpuSec.toFixed(1).padStart(6)}   server ${med[k].serverCpu.toFixed(1).padStart(6)}   machine ${med[k].machineCpu.toFixed(1).padStart(6)}   load1 ${med[k].load1.toFixed(2)}`),
    '',
    `load average (1 min, every 10 s): whole run ${loadAverage.min.toFixed(2)}–${loadAverage.max.toFixed(2)} (median ${loadAverage.median.toFixed(2)}); during the traffic ${traffic.loadAverage.min.toFixed(2)}–${traffic.loadAverage.max.toFixed(2)}`,
    `commit ${commit}, dist ${dist}; ${((Date.now() - startedAt) / 60000).toFixed(1)} min in all, ${waited.toFixed(0)} s of it waiting for a quiet machine`,
  ];
  lines.push(...disturbanceWarning(med));
  console.log('\n' + lines.join('\n'));
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
