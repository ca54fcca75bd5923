// Benchmark: the cost of `strata wal-push` as PostgreSQL's archive_command (one Node process per
// segment), and whether the archiver keeps up with a server writing WAL as fast as it can.
//
//   node bench/pg-wal-push.mjs [--scale 50] [--seconds 60] [--clients 2] [--modes cold,warm] [--read-ahead N] [--keep]
//
// Builds its own PostgreSQL cluster (initdb in a temporary folder, a free port; as root the server
// and wal-push run as the postgres user), archive_command = strata wal-push through the built CLI
// (packages/cli/dist/main.js) into an encrypted repository beside it, each call wrapped in GNU time
// (wall and CPU seconds per segment). Then two loads, back to back:
//   load     pgbench -i -s SCALE (bulk load: the most WAL per second a server makes)
//   tpcb     pgbench -c CLIENTS -j CLIENTS -T SECONDS (the built-in TPC-B-like script, full speed)
// and after them the time until the archiver has nothing left (.ready files in pg_wal/archive_status).
// Each mode on a cluster of its own: cold is `wal-push %p` (a whole push per process), warm is
// `wal-push %p --socket PATH` handing each segment to `strata wal-daemon` (its CPU read from /proc
// and added to the calls'; --read-ahead is the daemon's, default its own).
// Sampled every second: WAL position, pg_stat_archiver, .ready files, the machine's busy CPU.
// The server runs with fsync = off (more WAL per second: the harder case for the archiver).
// Results go to bench/.data/results-pg-wal-push.json.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { BENCH, CLI, gitCommit, machineBusySeconds, machineInfo, median } from './lib/measure.mjs';

const { values: opts } = parseArgs({
  options: {
    scale: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '60' },
    clients: { type: 'string', default: '2' },
    modes: { type: 'string', default: 'cold,warm' },
    'read-ahead': { type: 'string' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(fs.readFileSync(new URL(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n'));
  process.exit(0);
}
const scale = Number(opts.scale), seconds = Number(opts.seconds), clients = Number(opts.clients);
for (const [name, n] of Object.entries({ scale, seconds, clients })) if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive whole number`);
const modes = opts.modes.split(',');
for (const m of modes) if (!['cold', 'warm'].includes(m)) throw new Error(`--modes: cold and/or warm, not ${m}`);

const BINDIR = process.env.STRATA_TEST_PG_BINDIR ?? '/usr/lib/postgresql/15/bin';
const isRoot = process.getuid?.() === 0;
const DB = 'cluster';
const SEGMENT = 16 * 1024 * 1024;
for (const tool of [path.join(BINDIR, 'initdb'), path.join(BINDIR, 'pg_ctl'), '/usr/bin/time']) if (!fs.existsSync(tool)) throw new Error(`${tool} is missing (PostgreSQL 15 server programs, GNU time)`);
if (spawnSync('pgbench', ['--version']).status !== 0) throw new Error('pgbench is missing (Debian: postgresql-contrib or postgresql-client)');
if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run node scripts/setup.mjs first`);

const asServerUser = (cmd, args) => (isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]);
const runSync = (cmd, args) => {
  const [file, argv] = asServerUser(cmd, args);
  const r = spawnSync(file, argv, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
};
const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => { const a = s.address(); s.close(() => resolve(a.port)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const lsnBytes = (lsn) => { const [hi, lo] = lsn.split('/'); return Number((BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)); };

/** CPU seconds (user + system) a live process has used, from /proc/PID/stat. */
const procCpu = (pid) => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};

async function runMode(mode) {
const work = fs.mkdtempSync(path.join(os.tmpdir(), `strata-bench-walpush-${mode}-`));
fs.chmodSync(work, 0o755);
if (isRoot) spawnSync('chown', ['postgres', work]);
const dataDir = path.join(work, 'data');
const timesFile = path.join(work, 'wal-push-times');
const port = await freePort();
let started = false;
let daemon;
const cleanup = () => {
  if (started) spawnSync(...asServerUser(path.join(BINDIR, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'immediate', '-w']));
  if (daemon?.pid) { try { process.kill(daemon.pid, 'SIGTERM'); } catch { /* gone */ } }
  if (!opts.keep) fs.rmSync(work, { recursive: true, force: true });
};
process.once('SIGINT', () => { cleanup(); process.exit(130); });

try {
  runSync(path.join(BINDIR, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
  const passFile = path.join(work, 'passphrase');
  const config = path.join(work, 'strata.config.json');
  fs.writeFileSync(passFile, 'bench passphrase for wal-push', { mode: 0o600 });
  fs.writeFileSync(config, JSON.stringify({ repository: path.join(work, 'repo'), databases: { [DB]: { url: `postgres://postgres@127.0.0.1:${port}/postgres`, method: 'physical' } } }));
  fs.writeFileSync(timesFile, '');
  if (isRoot) spawnSync('chown', ['postgres', passFile, config, timesFile]);
  runSync(process.execPath, [CLI, 'init', '--config', config, '--passphrase-file', passFile]);
  const socket = path.join(work, 'run', 'wal.sock');
  const archive = `/usr/bin/time -a -o ${timesFile} -f "%e %U %S" ${process.execPath} ${CLI} wal-push %p --db ${DB}${mode === 'warm' ? ` --socket ${socket}` : ''} --config ${config} --passphrase-file ${passFile}`;
  if (mode === 'warm') {
    const [file, argv] = asServerUser(process.execPath, [CLI, 'wal-daemon', '--db', DB, '--socket', socket, ...(opts['read-ahead'] !== undefined ? ['--read-ahead', opts['read-ahead']] : []), '--config', config, '--passphrase-file', passFile, '--json']);
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    daemon = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const hello = out.split('\n').find((l) => l.includes('"listening"'));
        if (hello) resolve({ pid: JSON.parse(hello).pid, child, out: () => out });
      });
      child.on('close', (code) => reject(new Error(`wal-daemon exited (${code}) before listening`)));
    });
    daemon.cpu0 = procCpu(daemon.pid);
  }
  fs.appendFileSync(path.join(dataDir, 'postgresql.auto.conf'), [
    `port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${work}'`,
    'archive_mode = on', `archive_command = '${archive}'`, 'fsync = off', 'max_wal_size = 4GB', '',
  ].join('\n'));
  runSync(path.join(BINDIR, 'pg_ctl'), ['start', '-D', dataDir, '-l', path.join(work, 'server.log'), '-w', '-t', '300']);
  started = true;
  const db = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await db.connect();

  const readyDir = path.join(dataDir, 'pg_wal', 'archive_status');
  const sample = async () => {
    const row = (await db.query("SELECT pg_current_wal_lsn()::text AS lsn, archived_count::int AS archived, failed_count::int AS failed, last_archived_wal AS last FROM pg_stat_archiver")).rows[0];
    return { at: performance.now(), lsn: lsnBytes(row.lsn), archived: row.archived, failed: row.failed, ready: fs.readdirSync(readyDir).filter((f) => f.endsWith('.ready')).length, busy: machineBusySeconds() };
  };
  const samples = [];
  let sampling = true;
  const sampler = (async () => { while (sampling) { samples.push(await sample()); await sleep(1000); } })();
  const cores = machineInfo().nproc;

  /** One load: runs it, and says how much WAL it made and how much of it the archiver stored meanwhile. */
  const phase = async (name, args) => {
    const before = await sample();
    const load1 = os.loadavg()[0];
    await new Promise((resolve, reject) => {
      const child = spawn('pgbench', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', ...args, 'postgres'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => (err = (err + d).slice(-2000)));
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`pgbench ${args.join(' ')} failed:\n${err}`))));
    });
    const after = await sample();
    const s = (after.at - before.at) / 1000;
    const made = (after.lsn - before.lsn) / SEGMENT;
    const mine = samples.filter((x) => x.at >= before.at && x.at <= after.at);
    return {
      name, args: args.join(' '), seconds: +s.toFixed(1),
      walSegmentsMade: +made.toFixed(1), walSegmentsPerSecond: +(made / s).toFixed(2),
      archived: after.archived - before.archived, archivedPerSecond: +((after.archived - before.archived) / s).toFixed(2),
      readyAtEnd: after.ready, readyMax: Math.max(after.ready, ...mine.map((x) => x.ready)),
      machineBusyCores: +((after.busy - before.busy) / s).toFixed(2), loadavg1Before: +load1.toFixed(2), loadavg1After: +os.loadavg()[0].toFixed(2),
    };
  };

  console.log(`cluster on port ${port} in ${work}; ${cores} cores, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const phases = [];
  phases.push(await phase('load', ['-i', '-s', String(scale), '-q']));
  console.log(JSON.stringify(phases.at(-1)));
  phases.push(await phase('tpcb', ['-c', String(clients), '-j', String(clients), '-T', String(seconds)]));
  console.log(JSON.stringify(phases.at(-1)));
  // The archiver catches up once the writing stopped.
  await db.query('SELECT pg_switch_wal()');
  const stopped = performance.now();
  const busy0 = machineBusySeconds();
  let drained;
  for (;;) {
    const s = await sample();
    if (s.ready === 0) { drained = s; break; }
    await sleep(500);
  }
  const catchUpSeconds = (drained.at - stopped) / 1000;
  const catchUpBusyCores = (machineBusySeconds() - busy0) / Math.max(catchUpSeconds, 0.001);
  sampling = false;
  await sampler;
  const failed = drained.failed;
  await db.end();
  const daemonCpu = daemon ? procCpu(daemon.pid) - daemon.cpu0 : 0;
  const storedAhead = daemon ? daemon.out().split('\n').filter((l) => l.includes('"ahead":true')).length : 0;

  const calls = fs.readFileSync(timesFile, 'utf8').trim().split('\n').filter((l) => /^[\d.]+ [\d.]+ [\d.]+$/.test(l)).map((l) => { const [wall, user, sys] = l.split(' ').map(Number); return { wall, cpu: user + sys }; });
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const perCall = {
    calls: calls.length,
    daemonCpuSeconds: +daemonCpu.toFixed(2),
    storedAhead,
    cpuPerSegment: +((calls.reduce((a, c) => a + c.cpu, 0) + daemonCpu) / calls.length).toFixed(3),
    wallMedian: +median(calls.map((c) => c.wall)).toFixed(3), wallMean: +mean(calls.map((c) => c.wall)).toFixed(3),
    cpuMedian: +median(calls.map((c) => c.cpu)).toFixed(3), cpuMean: +mean(calls.map((c) => c.cpu)).toFixed(3),
  };
  const result = {
    mode,
    phases, catchUp: { seconds: +catchUpSeconds.toFixed(1), machineBusyCores: +catchUpBusyCores.toFixed(2) }, failedWalPush: failed,
    walPush: { ...perCall, segmentsPerSecondSerial: +(1 / perCall.wallMean).toFixed(2) },
  };
  console.log(`\n${mode}: wal-push: ${perCall.calls} calls, wall median ${perCall.wallMedian} s (mean ${perCall.wallMean}), CPU of the call median ${perCall.cpuMedian} s (mean ${perCall.cpuMean})${mode === 'warm' ? `, daemon ${perCall.daemonCpuSeconds} s in all, ${storedAhead} segments stored ahead` : ''}; CPU per segment ${perCall.cpuPerSegment} s; at most ${result.walPush.segmentsPerSecondSerial} segments/s one after the other, as the archiver calls it`);
  for (const p of phases) {
    console.log(`${p.name.padEnd(5)} ${p.args}: ${p.seconds} s, WAL made ${p.walSegmentsMade} segments (${p.walSegmentsPerSecond}/s), archived ${p.archived} (${p.archivedPerSecond}/s), .ready at end ${p.readyAtEnd} (max ${p.readyMax}); machine busy ${p.machineBusyCores} of ${cores} cores, load ${p.loadavg1Before} -> ${p.loadavg1After}`);
  }
  console.log(`after the writing stopped the archiver needed ${result.catchUp.seconds} s to store what was left (machine busy ${result.catchUp.machineBusyCores} cores); failed wal-push calls: ${failed}`);
  return result;
} finally {
  cleanup();
}
}

const results = [];
for (const mode of modes) results.push(await runMode(mode));
fs.mkdirSync(path.join(BENCH, '.data'), { recursive: true });
fs.writeFileSync(path.join(BENCH, '.data', 'results-pg-wal-push.json'), JSON.stringify({ date: new Date().toISOString(), commit: gitCommit(), machine: machineInfo(), scale, seconds, clients, readAhead: opts['read-ahead'] ?? 'default', results }, null, 2));
