// The application of bench/pitr.mjs, run as a child process:
//
//   node bench/lib/pitr-writer.mjs DB LOG RATE SECONDS [BATCH] [AUTOCHECKPOINT]
//
// Commits one transaction at a time into DB (WAL mode, synchronous = NORMAL, SQLite's automatic
// checkpoints at their default of 1000 pages, or at AUTOCHECKPOINT pages; 0 turns them off): a
// row of `bench_marker` (its sequence number, the time just before COMMIT, and a 400-700 byte
// JSON payload, like the benchmark database's events).
// RATE is transactions per second, paced against the clock (transaction i is due at start + i/RATE,
// so a slow commit does not shift the ones after it); RATE 0 means as fast as it can. For every
// commit it appends `seq before after` to LOG (ms since the epoch; `after` is when COMMIT returned,
// the commit time the lag is measured from). BATCH (default 1) rows go into each transaction. It
// stops after SECONDS, or on SIGTERM, and prints { transactions, seconds, commitMs: { p50, p99,
// max }, stalledMs } as JSON on stdout (how long each transaction took; stalledMs: the time spent
// in transactions that took over 50 ms, e.g. waiting for a lock).
import * as fs from 'node:fs';
import { betterSqlite3 } from './app-database.mjs';

const [file, log, rateArg, secondsArg] = process.argv.slice(2);
if (!file || !log || rateArg === undefined || !secondsArg) throw new Error('usage: pitr-writer DB LOG RATE SECONDS [BATCH] [AUTOCHECKPOINT]');
const rate = Number(rateArg);
const batch = Number(process.argv[6] ?? 1);
const autocheckpoint = process.argv[7];
const Database = betterSqlite3();
const db = new Database(file, { timeout: 10_000 });
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
if (autocheckpoint !== undefined) db.pragma(`wal_autocheckpoint = ${Number(autocheckpoint)}`);
db.exec('CREATE TABLE IF NOT EXISTS bench_marker (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, payload TEXT NOT NULL)');
let seq = db.prepare('SELECT max(seq) AS m FROM bench_marker').get().m ?? 0;
const insert = db.prepare('INSERT INTO bench_marker (seq, at, payload) VALUES (?, ?, ?)');
const out = fs.openSync(log, 'a');
let stopping = false;
process.on('SIGTERM', () => { stopping = true; });

const started = Date.now();
const stopAt = started + Number(secondsArg) * 1000;
let written = 0;
let pending = '';
const durations = [];
let stalledMs = 0;
const insertBatch = db.transaction((first, at) => {
  for (let i = 0; i < batch; i++) insert.run(first + i, at, payload(first + i));
});
const payload = (n) => JSON.stringify({ kind: 'page_view', n, path: `/orders/${n % 9973}`, note: 'x'.repeat(380 + (n * 7919) % 300) });

function commitOne() {
  const first = seq + 1;
  seq += batch;
  const before = Date.now();
  if (batch === 1) insert.run(seq, before, payload(seq));
  else insertBatch(first, before);
  const after = Date.now();
  durations.push(after - before);
  if (after - before > 50) stalledMs += after - before;
  written++;
  pending += `${seq} ${before} ${after}\n`;
  if (pending.length > 8192) { fs.writeSync(out, pending); pending = ''; }
}

function finish() {
  fs.writeSync(out, pending);
  fs.closeSync(out);
  db.close();
  durations.sort((a, b) => a - b);
  const at = (p) => durations[Math.min(durations.length - 1, Math.floor(p * durations.length))] ?? 0;
  const commitMs = { p50: at(0.5), p99: at(0.99), max: durations.at(-1) ?? 0 };
  process.stdout.write(JSON.stringify({ transactions: written, seconds: (Date.now() - started) / 1000, commitMs, stalledMs }) + '\n');
}

if (rate === 0) {
  // As fast as it can, yielding to the event loop every 100 commits so SIGTERM is heard.
  const burst = () => {
    for (let i = 0; i < 100; i++) commitOne();
    if (stopping || Date.now() >= stopAt) finish();
    else setImmediate(burst);
  };
  burst();
} else {
  const step = () => {
    if (stopping || Date.now() >= stopAt) return finish();
    // Every transaction due by now, then sleep until the next one is due.
    while (started + (written * 1000) / rate <= Date.now()) {
      commitOne();
      if (written % 16 === 0) fs.writeSync(out, pending), (pending = '');
    }
    setTimeout(step, Math.max(0, started + (written * 1000) / rate - Date.now()));
  };
  step();
}
