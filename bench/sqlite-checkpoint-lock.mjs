// What an application's writer loses to its own automatic checkpoints while another process keeps
// a read transaction on the database (as `strata replicate` does), and what it would lose if that
// process also held SQLite's checkpoint lock (issue #19's overhead target; bench/README.md,
// "The checkpoint lock").
//
//   node bench/sqlite-checkpoint-lock.mjs [--seconds 15] [--rounds 3]
//
// Three modes per round, in turn: the writer of lib/pitr-writer.mjs as fast as it can (better-sqlite3,
// WAL, synchronous = NORMAL, SQLite's default automatic checkpoints) alone; beside a reader that
// restarts its read transaction every 200 ms; beside the same reader while the same process also
// holds the checkpoint lock (byte 121 of the -shm file, SQLite's WAL_CKPT_LOCK). Node has no
// byte-range file locks (fcntl F_SETLK), which is the point of the probe, so the reader is a
// python3 process (its sqlite3 module and fcntl.lockf); Strata itself does not use python.
// Prints tx/s per mode and round, the medians, and the size the log reached.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({ options: { seconds: { type: 'string', default: '15' }, rounds: { type: 'string', default: '3' } } });
const SECONDS = Number(opts.seconds);
const ROUNDS = Number(opts.rounds);
if (!(SECONDS >= 1) || !(ROUNDS >= 1)) throw new Error('--seconds and --rounds must be numbers of at least 1');
for (const tool of ['python3', 'sqlite3']) {
  if (spawnSync(tool, ['--version']).status !== 0) throw new Error(`${tool} is needed (apt-get install ${tool === 'python3' ? 'python3' : 'sqlite3'})`);
}
const WRITER = new URL('./lib/pitr-writer.mjs', import.meta.url).pathname;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-ckpt-lock-'));

// The reader: a read transaction restarted every 200 ms (replicate restarts its own at each turn),
// and with HOLD=1 the checkpoint lock taken once and kept; it says "ready" once both are in place.
const READER = `
import fcntl, os, sqlite3, sys, time
db, hold = sys.argv[1], sys.argv[2] == '1'
con = sqlite3.connect(db, isolation_level=None)
con.execute('SELECT count(*) FROM sqlite_master').fetchall()
if hold:
    shm = os.open(db + '-shm', os.O_RDWR)
    fcntl.lockf(shm, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 121, 0)
print('ready', flush=True)
while True:
    con.execute('BEGIN')
    con.execute('SELECT count(*) FROM sqlite_master').fetchall()
    time.sleep(0.2)
    con.execute('COMMIT')
`;

async function runMode(mode, round) {
  const db = path.join(work, `${mode}-${round}.db`);
  const made = spawnSync('sqlite3', [db, 'PRAGMA journal_mode = WAL; CREATE TABLE bench_marker (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, payload TEXT NOT NULL);'], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`sqlite3 failed: ${made.stderr}`);
  let reader;
  if (mode !== 'alone') {
    reader = spawn('python3', ['-c', READER, db, mode === 'reader and checkpoint lock' ? '1' : '0'], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise((resolve, reject) => {
      reader.stdout.once('data', (d) => (String(d).startsWith('ready') ? resolve() : reject(new Error(`reader: ${d}`))));
      reader.once('exit', (code) => reject(new Error(`the reader exited (${code}) before it was ready`)));
    });
  }
  let walBytes = 0;
  const watch = setInterval(() => {
    try {
      walBytes = Math.max(walBytes, fs.statSync(`${db}-wal`).size);
    } catch {
      // Not there yet, or removed as the writer closed.
    }
  }, 200);
  // Not spawnSync: the log's size is sampled meanwhile.
  const writer = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, db, path.join(work, 'log'), '0', String(SECONDS)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
  clearInterval(watch);
  reader?.kill('SIGKILL');
  if (writer.status !== 0) throw new Error(`the writer failed: ${writer.stderr}`);
  const result = JSON.parse(writer.stdout);
  fs.rmSync(db, { force: true });
  for (const suffix of ['-wal', '-shm']) fs.rmSync(db + suffix, { force: true });
  return { txPerSecond: result.transactions / result.seconds, walMB: walBytes / 1e6 };
}

const MODES = ['alone', 'reader', 'reader and checkpoint lock'];
const results = Object.fromEntries(MODES.map((m) => [m, []]));
try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of round % 2 ? MODES : [...MODES].reverse()) {
      const r = await runMode(mode, round);
      results[mode].push(r);
      console.log(`round ${round}/${ROUNDS} ${mode.padEnd(28)} ${Math.round(r.txPerSecond).toLocaleString('en')} tx/s, log up to ${r.walMB.toFixed(0)} MB (load ${os.loadavg()[0].toFixed(2)})`);
    }
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const alone = median(results.alone.map((r) => r.txPerSecond));
console.log('\n| writer | tx/s, median | against alone |\n| --- | ---: | ---: |');
for (const mode of MODES) {
  const m = median(results[mode].map((r) => r.txPerSecond));
  console.log(`| ${mode} | ${Math.round(m).toLocaleString('en')} | ${mode === 'alone' ? '' : `${(((m - alone) / alone) * 100).toFixed(1)}%`} |`);
}
