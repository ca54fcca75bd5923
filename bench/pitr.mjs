// Benchmark: continuous protection of a SQLite database (`strata replicate`, `restore --as-of`).
//
//   node bench/pitr.mjs [--base-mb 1024] [--minutes 60] [--rate 100] [--low-rate 1] [--low-minutes 10]
//                       [--interval 1] [--overhead-rounds 3] [--overhead-seconds 30] [--overhead-batch 1]
//                       [--restore-rounds 3]
//                       [--only lag,overhead,low] [--keep]
//
// Three parts (bench/README.md, "pitr.mjs", says what each measures and how):
//   lag      a copy of the cached benchmark database (--base-mb), replicated while a writer commits
//            --rate transactions per second for --minutes (real time); lag of each transaction
//            (when the segment holding it was committed minus when its COMMIT returned), storage
//            requests per hour, then `restore --as-of` the last second against restoring the base.
//   low      the same at --low-rate for --low-minutes on an empty database (lag and requests), at
//            the same time as `lag`.
//   overhead the writer as fast as it can for --overhead-seconds (--overhead-batch rows per
//            transaction), alone and with `strata replicate` (the CLI) beside it, alternating,
//            --overhead-rounds each; and with replicate beside a writer whose automatic
//            checkpoints start only past 10,000 pages (the README's advice for busy writers:
//            replicate checkpoints the log at 4,000).
// Results go to bench/.data/results-pitr-<base-mb>mb.json.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { parseArgs } from 'node:util';
import { DATA, betterSqlite3, ensureDatabase } from './lib/app-database.mjs';
import { BENCH, CLI, benchWorkspace, distFingerprint, fmtS, gitCommit, machineInfo, median, run } from './lib/measure.mjs';

const PARTS = ['lag', 'low', 'overhead'];
/**
 * The busy writer's wal_autocheckpoint in the overhead's third mode: above the 4,000 frames at
 * which replicate checkpoints the log itself, so the writer seldom tries to (see the README).
 */
const QUIET_AUTOCHECKPOINT = 10_000;
const { values: opts } = parseArgs({
  options: {
    'base-mb': { type: 'string', default: '1024' },
    minutes: { type: 'string', default: '60' },
    rate: { type: 'string', default: '100' },
    'low-rate': { type: 'string', default: '1' },
    'low-minutes': { type: 'string', default: '10' },
    interval: { type: 'string', default: '1' },
    'overhead-rounds': { type: 'string', default: '3' },
    'overhead-seconds': { type: 'string', default: '30' },
    'overhead-batch': { type: 'string', default: '1' },
    'restore-rounds': { type: 'string', default: '3' },
    only: { type: 'string', default: PARTS.join(',') },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log(fs.readFileSync(new URL(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n'));
  process.exit(0);
}
const parts = new Set(opts.only.split(','));
for (const p of parts) if (!PARTS.includes(p)) throw new Error(`--only: no part ${p} (there are: ${PARTS.join(', ')})`);
const num = (name) => {
  const n = Number(opts[name]);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number, not ${JSON.stringify(opts[name])}`);
  return n;
};
const baseMb = num('base-mb'), minutes = num('minutes'), rate = num('rate'), lowRate = num('low-rate'), lowMinutes = num('low-minutes');
const intervalMs = num('interval') * 1000, overheadRounds = num('overhead-rounds'), overheadSeconds = num('overhead-seconds'), restoreRounds = num('restore-rounds');
const overheadBatch = Math.max(1, Math.floor(num('overhead-batch')));
/** CPU seconds a live process has used so far (/proc/PID/stat utime + stime, at 100 ticks a second). */
const cpuSecondsOf = (pid) => {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch { return NaN; }
};

const PASSPHRASE = 'strata-bench correct horse battery staple';
const WRITER = path.join(BENCH, 'lib/pitr-writer.mjs');
const REPLICATOR = path.join(BENCH, 'lib/pitr-replicator.mjs');
const env = { ...process.env, STRATA_PASSPHRASE: PASSPHRASE };
const strata = (args) => run(process.execPath, [CLI, ...args], { env, measureRss: true });
const ws = benchWorkspace(path.join(DATA, 'pitr-work'), PASSPHRASE);
const dist0 = distFingerprint();
const startedAt = new Date();
const loadAvg = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' / ');
const load0 = loadAvg();
console.log(`pitr benchmark, commit ${gitCommit()}, ${startedAt.toISOString()}, load average ${load0}`);

/** A database holding the writer's table (created now, so it is in the base, not a transaction after it). */
function prepareDatabase(file, from) {
  if (from) fs.copyFileSync(from, file);
  const db = new (betterSqlite3())(file);
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE IF NOT EXISTS bench_marker (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, payload TEXT NOT NULL)');
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

/** Starts a child; resolves its exit with what it printed. */
function child(cmd, args, onLine) {
  const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  const lines = readline.createInterface({ input: proc.stdout });
  let stdout = '';
  lines.on('line', (line) => { stdout += `${line}\n`; onLine?.(line); });
  const done = new Promise((resolve, reject) => {
    proc.on('error', reject);
    proc.on('close', (code, signal) => resolve({ code, signal, stdout, stderr: () => stderr }));
  });
  return { proc, done, stderr: () => stderr };
}

const commitsOf = (log) => fs.readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => l.split(' ').map(Number));
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];

/**
 * One replication: the replicator child on `db`, the writer at `txRate` for `seconds` once the
 * base is committed, then SIGTERM. Returns the lag of every transaction shipped before the
 * SIGTERM, the storage calls per hour after the base, the base's id and the writer's log.
 */
async function replication(label, db, repo, txRate, seconds) {
  const log = `${db}.commits`;
  const events = [];
  let onBase;
  const baseCommitted = new Promise((resolve) => (onBase = resolve));
  const rep = child(process.execPath, [REPLICATOR, repo, db, String(intervalMs)], (line) => {
    const e = JSON.parse(line);
    events.push(e);
    if (e.kind === 'base') onBase(e);
  });
  rep.done.then((r) => { if (r.code !== 0) onBase(undefined); });
  const base = await baseCommitted;
  if (!base) throw new Error(`${label}: the replicator exited before it took a base:\n${rep.stderr()}`);
  console.log(`${label}: base ${base.id} committed; writing ${txRate} tx/s for ${seconds} s`);
  const writer = await child(process.execPath, [WRITER, db, log, String(txRate), String(seconds)]).done;
  if (writer.code !== 0) throw new Error(`${label}: the writer failed (${writer.code ?? writer.signal}):\n${writer.stderr()}`);
  const written = JSON.parse(writer.stdout);
  // Two intervals for the last transactions to ship on their own, then stop (SIGTERM ships the rest).
  await new Promise((resolve) => setTimeout(resolve, 2 * intervalMs + 500));
  const stopAt = Date.now();
  rep.proc.kill('SIGTERM');
  const result = await rep.done;
  if (result.code !== 0) throw new Error(`${label}: the replicator failed (${result.code ?? result.signal}):\n${result.stderr()}`);
  const stopped = events.find((e) => e.kind === 'stopped');
  const unexpected = events.filter((e) => e.kind === 'lost' || e.kind === 'retry' || (e.kind === 'base' && e !== base));
  const commits = commitsOf(log);
  if (commits.length !== written.transactions || stopped.summary.transactions !== commits.length || unexpected.length > 0) {
    throw new Error(`${label}: cannot attribute transactions to segments: the writer logged ${commits.length} of ${written.transactions} commits, the replicator shipped ${stopped.summary.transactions}; other events: ${JSON.stringify(unexpected)}`);
  }
  // Segment k holds the transactions after those of segments 1..k-1, in commit order (only the
  // writer writes, and it started after the base), so transaction seq is in the first segment
  // whose running total reaches seq. Durable = when the replicator process saw the segment event,
  // which it emits after the catalog generation listing the segment is written.
  const lags = [];
  let total = 0;
  let i = 0;
  for (const e of events) {
    if (e.kind !== 'segment') continue;
    total += e.transactions;
    for (; i < commits.length && commits[i][0] <= total; i++) if (e.t < stopAt) lags.push(e.t - commits[i][2]);
  }
  lags.sort((a, b) => a - b);
  const segments = events.filter((e) => e.kind === 'segment');
  const hours = (stopped.t - base.t) / 3_600_000;
  const perHour = Object.fromEntries(Object.keys(stopped.counts).map((k) => [k, (stopped.counts[k] - base.counts[k]) / hours]));
  return {
    label, txRate, seconds: written.seconds, transactions: commits.length, segments: segments.length,
    segmentBytes: segments.reduce((s, e) => s + e.storedBytes, 0),
    lag: { measured: lags.length, p50: pct(lags, 50), p99: pct(lags, 99), max: lags.at(-1) },
    requests: { minutes: (stopped.t - base.t) / 60_000, counted: Object.fromEntries(Object.keys(stopped.counts).map((k) => [k, stopped.counts[k] - base.counts[k]])), perHour },
    baseId: base.id, lastCommit: commits.at(-1)[2],
  };
}

/** PUT / GET / HEAD / LIST / DELETE per hour from the storage calls (createExclusive is a conditional PUT). */
const s3Requests = (r) => ({ PUT: r.put + r.createExclusive, GET: r.get + r.read, HEAD: r.stat, LIST: r.list, DELETE: r.delete });
const markerCount = (file) => {
  const db = new (betterSqlite3())(file, { readonly: true });
  try {
    const ok = db.pragma('quick_check', { simple: true });
    if (ok !== 'ok') throw new Error(`${file}: quick_check says ${ok}`);
    return db.prepare('SELECT count(*) AS n FROM bench_marker').get().n;
  } finally { db.close(); }
};

const results = { date: startedAt.toISOString(), commit: gitCommit(), machine: machineInfo(), loadBefore: load0, options: opts };
try {
  if (parts.has('overhead')) {
    // `quiet`: replicated, the writer's automatic checkpoints only past QUIET_AUTOCHECKPOINT pages.
    const rounds = { alone: [], replicated: [], quiet: [] };
    const details = [];
    for (let round = 0; round < overheadRounds; round++) {
      // Alternate which goes first, so a trend in the machine's load falls on both.
      const order = round % 2 === 0 ? ['alone', 'replicated', 'quiet'] : ['quiet', 'replicated', 'alone'];
      for (const mode of order) {
        const dir = path.join(ws.WORK, `overhead-${round}-${mode}`);
        fs.mkdirSync(dir, { recursive: true });
        const db = path.join(dir, 'app.db');
        prepareDatabase(db);
        let replicator;
        if (mode !== 'alone') {
          const repo = path.join(dir, 'repo');
          await strata(['init', '--repo', repo, '--json']);
          replicator = child(process.execPath, [CLI, 'replicate', db, '--repo', repo, '--interval', String(intervalMs / 1000)]);
          while (!/as the base/.test(replicator.stderr())) {
            if (replicator.proc.exitCode !== null) throw new Error(`strata replicate exited:\n${replicator.stderr()}`);
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
        const writer = await child(process.execPath, [WRITER, db, `${db}.commits`, '0', String(overheadSeconds), String(overheadBatch), ...(mode === 'quiet' ? [String(QUIET_AUTOCHECKPOINT)] : [])]).done;
        if (writer.code !== 0) throw new Error(`overhead writer failed:\n${writer.stderr()}`);
        const w = JSON.parse(writer.stdout);
        const replicatorCpu = replicator ? cpuSecondsOf(replicator.proc.pid) : undefined;
        details.push({ round, mode, ...w, replicatorCpu, load: loadAvg() });
        if (replicator) {
          replicator.proc.kill('SIGTERM');
          const r = await replicator.done;
          if (r.code !== 0) throw new Error(`strata replicate failed (${r.code ?? r.signal}):\n${r.stderr()}`);
        }
        rounds[mode].push(w.transactions / w.seconds);
        console.log(`overhead round ${round + 1} ${mode === 'quiet' ? `replicated, wal_autocheckpoint = ${QUIET_AUTOCHECKPOINT}` : mode}: ${w.transactions} transactions of ${overheadBatch} row(s) in ${w.seconds.toFixed(1)} s = ${(w.transactions / w.seconds).toFixed(0)} tx/s; commit p50 / p99 / max ${w.commitMs.p50} / ${w.commitMs.p99} / ${w.commitMs.max} ms, ${(w.stalledMs / 1000).toFixed(1)} s in commits over 50 ms${replicatorCpu !== undefined ? `; replicate used ${replicatorCpu.toFixed(1)} CPU s` : ''} (load ${loadAvg()})`);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
    results.overhead = { batch: overheadBatch, rounds, details, alone: median(rounds.alone), replicated: median(rounds.replicated), quiet: median(rounds.quiet) };
    results.overhead.slower = 1 - results.overhead.replicated / results.overhead.alone;
    results.overhead.quietSlower = 1 - results.overhead.quiet / results.overhead.alone;
  }

  const runs = [];
  if (parts.has('low')) {
    const dir = path.join(ws.WORK, 'low');
    fs.mkdirSync(dir, { recursive: true });
    prepareDatabase(path.join(dir, 'app.db'));
    await strata(['init', '--repo', path.join(dir, 'repo'), '--json']);
    runs.push(replication(`${lowRate} tx/s`, path.join(dir, 'app.db'), path.join(dir, 'repo'), lowRate, lowMinutes * 60).then((r) => (results.low = r)));
  }
  if (parts.has('lag')) {
    runs.push((async () => {
      const dir = path.join(ws.WORK, 'lag');
      fs.mkdirSync(dir, { recursive: true });
      const { file: source, meta } = ensureDatabase(baseMb);
      const db = path.join(dir, 'app.db');
      prepareDatabase(db, source);
      const repo = path.join(dir, 'repo');
      await strata(['init', '--repo', repo, '--json']);
      const r = await replication(`${rate} tx/s`, db, repo, rate, minutes * 60);
      r.baseBytes = meta.bytes;
      // The last second: a whole second at least 2 s after the last commit, so that the replicator
      // has seen it committed (its polling delay on a loaded machine is over a second) and the
      // restore must replay every transaction of the run.
      const asOf = new Date(Math.ceil((r.lastCommit + 2000) / 1000) * 1000).toISOString();
      r.restore = { asOf, asOfMs: [], baseMs: [] };
      for (let round = 0; round < restoreRounds; round++) {
        const order = round % 2 === 0 ? ['asOf', 'base'] : ['base', 'asOf'];
        for (const which of order) {
          const to = path.join(dir, `restored-${which}.db`);
          // The file and the side files the check's read-only open left (a stale -wal must never meet the next restore).
          const removeRestored = () => { for (const f of [to, `${to}-wal`, `${to}-shm`]) fs.rmSync(f, { force: true }); };
          removeRestored();
          const res = which === 'asOf'
            ? await strata(['restore', '--repo', repo, '--db', 'app', '--as-of', asOf, '--to', to, '--json'])
            : await strata(['restore', r.baseId, '--repo', repo, '--to', to, '--json']);
          const markers = markerCount(to);
          const expected = which === 'asOf' ? r.transactions : 0;
          if (markers !== expected) throw new Error(`restore ${which}: ${markers} transactions restored, expected ${expected}`);
          if (which === 'asOf') r.restore.pointInTime = JSON.parse(res.stdout).pointInTime;
          r.restore[`${which}Ms`].push(res.wallMs);
          console.log(`restore round ${round + 1} ${which === 'asOf' ? `--as-of ${asOf}` : 'base alone'}: ${fmtS(res.wallMs)} (${markers} transactions; load ${loadAvg()})`);
          removeRestored();
        }
      }
      r.restore.asOfMedian = median(r.restore.asOfMs);
      r.restore.baseMedian = median(r.restore.baseMs);
      results.lag = r;
    })());
  }
  await Promise.all(runs);
} finally {
  ws.close(opts.keep);
}

// ---------------------------------------------------------------------------------------------
// Report
results.loadAfter = loadAvg();
results.distRebuilt = distFingerprint() !== dist0;
const lines = ['', `pitr benchmark, commit ${results.commit}, ${results.date}, load average ${results.loadBefore} before, ${results.loadAfter} after`, ''];
const s = (ms) => `${(ms / 1000).toFixed(2)} s`;
lines.push('| case | measured | target | met |', '| --- | ---: | --- | --- |');
for (const r of [results.lag, results.low].filter(Boolean)) {
  lines.push(`| lag at ${r.txRate} tx/s, p50 / p99 / max (${r.lag.measured} transactions, ${r.segments} segments) | ${s(r.lag.p50)} / ${s(r.lag.p99)} / ${s(r.lag.max)} | p99 <= 1.5 s | ${r.lag.p99 <= 1500 ? 'yes' : 'NO'} |`);
}
if (results.overhead) {
  const o = results.overhead;
  lines.push(`| writer throughput (${o.batch} row(s) per transaction) alone / with replicate (median of ${o.rounds.alone.length}) | ${o.alone.toFixed(0)} / ${o.replicated.toFixed(0)} tx/s, ${(o.slower * 100).toFixed(1)}% slower | <= 10% slower | ${o.slower <= 0.1 ? 'yes' : 'NO'} |`);
  lines.push(`| the same writer alone / with replicate, its automatic checkpoints past 10,000 pages (wal_autocheckpoint = ${QUIET_AUTOCHECKPOINT}, the README's advice) | ${o.alone.toFixed(0)} / ${o.quiet.toFixed(0)} tx/s, ${(o.quietSlower * 100).toFixed(1)}% slower | <= 10% slower | ${o.quietSlower <= 0.1 ? 'yes' : 'NO'} |`);
}
if (results.lag) {
  const r = results.lag;
  const ratio = r.restore.asOfMedian / r.restore.baseMedian;
  lines.push(`| restore --as-of the last second / the base alone (${(r.baseBytes / 2 ** 20).toFixed(0)} MiB base + ${r.transactions} transactions, ${r.segments} segments) | ${s(r.restore.asOfMedian)} / ${s(r.restore.baseMedian)} = ${ratio.toFixed(2)}x | <= 2x | ${ratio <= 2 ? 'yes' : 'NO'} |`);
}
lines.push('');
for (const r of [results.low, results.lag].filter(Boolean)) {
  const q = s3Requests(r.requests.perHour);
  const c = r.requests.counted;
  lines.push(`requests per hour at ${r.txRate} tx/s (extrapolated from ${r.requests.minutes.toFixed(1)} minutes after the base): PUT ${q.PUT.toFixed(0)}, GET ${q.GET.toFixed(0)}, HEAD ${q.HEAD.toFixed(0)}, LIST ${q.LIST.toFixed(0)}, DELETE ${q.DELETE.toFixed(0)}`
    + ` (counted: put ${c.put}, createExclusive ${c.createExclusive}, get ${c.get}, read ${c.read}, stat ${c.stat}, list ${c.list} pages / ${c.listed} objects, delete ${c.delete}; segments ${r.segments}, ${(r.segmentBytes / 1e6).toFixed(1)} MB stored)`);
}
if (results.overhead) {
  const r = results.overhead.rounds;
  lines.push(`overhead rounds (tx/s): alone ${r.alone.map((x) => x.toFixed(0)).join(', ')}; with replicate ${r.replicated.map((x) => x.toFixed(0)).join(', ')}; with replicate, wal_autocheckpoint = ${QUIET_AUTOCHECKPOINT}: ${r.quiet.map((x) => x.toFixed(0)).join(', ')}`);
}
if (results.lag) lines.push(`restore rounds: --as-of ${results.lag.restore.asOfMs.map(s).join(', ')}; base ${results.lag.restore.baseMs.map(s).join(', ')}; point in time ${JSON.stringify(results.lag.restore.pointInTime)}`);
if (results.distRebuilt) lines.push('WARNING: packages/*/dist was rebuilt during the benchmark');
console.log(lines.join('\n'));
const out = path.join(DATA, `results-pitr-${baseMb}mb.json`);
fs.writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
console.log(`results in ${out}`);
