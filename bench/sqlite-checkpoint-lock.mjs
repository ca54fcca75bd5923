// What an application's writer loses to its own automatic checkpoints while another process keeps
// a read transaction on the database (as `strata replicate` does), and what it would lose if that
// process also held SQLite's checkpoint lock (issue #19's overhead target; bench/README.md,
// "The checkpoint lock").
//
//   node bench/sqlite-checkpoint-lock.mjs [--seconds 15] [--rounds 3]
//
// Four modes per round, in turn: the writer of lib/pitr-writer.mjs as fast as it can (better-sqlite3,
// WAL, synchronous = NORMAL, SQLite's default automatic checkpoints) alone; beside a reader that
// restarts its read transaction every 200 ms; beside the same reader while the same process also
// holds the checkpoint lock (byte 121 of the -shm file, SQLite's WAL_CKPT_LOCK), so that nobody
// checkpoints (an upper bound: the log grows by gigabytes, so give it a temporary folder with
// ~5 GB free); and as the last, with the holder also checkpointing as replicate would, a
// wal_checkpoint(RESTART) between two read transactions once the log holds more than 4,000 frames
// (read from the wal-index header: the file keeps its size when the log starts again), taking the
// lock again after it. At this writer's pace that is every turn. Node has no byte-range file locks (fcntl F_SETLK), which is the
// point of the probe, so the reader is a python3 process (its sqlite3 module and fcntl.lockf);
// Strata itself does not use python. Prints tx/s per mode and round, the medians, and the size the
// log reached.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({ options: { seconds: { type: 'string', default: '15' }, rounds: { type: 'string', default: '3' } } });
const SECONDS = Number(opts.seconds);
const ROUNDS = Number(opts.rounds);
if (!(SECONDS >= 1) || !(ROUNDS >= 1)) throw new Error('--seconds and --rounds must be numbers of at least 1');
for (const tool of ['python3', 'sqlite3']) {
  if (spawnSync(tool, ['--version']).status !== 0) throw new Error(`${tool} is needed (apt-get install ${tool === 'python3' ? 'python3' : 'sqlite3'})`);
}
const WRITER = fileURLToPath(new URL('./lib/pitr-writer.mjs', import.meta.url));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-ckpt-lock-'));

// The reader: a read transaction restarted every 200 ms (replicate restarts its own at each turn).
// HOLD 1: the checkpoint lock taken once and kept; HOLD 2: kept too, and the log checkpointed and
// restarted between two read transactions once past 4,000 frames, the lock taken again after it (SQLite
// lets go of it at the end of a checkpoint, and the lock is this process's either way). It says
// "ready" once in place.
const READER = `
import fcntl, os, sqlite3, sys, time
db, hold = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db, isolation_level=None, timeout=10)
con.execute('SELECT count(*) FROM sqlite_master').fetchall()
shm = os.open(db + '-shm', os.O_RDWR) if hold else None
def take():
    # The writer's own checkpoint may hold it for a moment in between.
    for attempt in range(1000):
        try:
            fcntl.lockf(shm, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 121, 0)
            return
        except BlockingIOError:
            time.sleep(0.001)
    raise SystemExit('could not take the checkpoint lock again')
if hold:
    take()
print('ready', flush=True)
while True:
    con.execute('BEGIN')
    con.execute('SELECT count(*) FROM sqlite_master').fetchall()
    time.sleep(0.2)
    con.execute('COMMIT')
    # The log's length in frames: mxFrame of the wal-index header, in the machine's byte order.
    if hold == 2 and int.from_bytes(os.pread(shm, 4, 16), sys.byteorder) > 4000:
        con.execute('PRAGMA wal_checkpoint(RESTART)').fetchall()
        take()
`;

const HOLD = { alone: 0, reader: 0, 'reader and checkpoint lock': 1, 'reader, lock and its checkpoints': 2 };

async function runMode(mode, round) {
  const db = path.join(work, `${mode.replace(/\W+/g, '-')}-${round}.db`);
  const made = spawnSync('sqlite3', [db, 'PRAGMA journal_mode = WAL; CREATE TABLE bench_marker (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, payload TEXT NOT NULL);'], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`sqlite3 failed: ${made.stderr}`);
  let reader;
  let walBytes = 0;
  let watch;
  try {
    if (mode !== 'alone') {
      reader = spawn('python3', ['-c', READER, db, String(HOLD[mode])], { stdio: ['pipe', 'pipe', 'inherit'] });
      await new Promise((resolve, reject) => {
        reader.stdout.once('data', (d) => (String(d).startsWith('ready') ? resolve() : reject(new Error(`reader: ${d}`))));
        reader.once('exit', (code) => reject(new Error(`the reader exited (${code}) before it was ready`)));
      });
    }
    watch = setInterval(() => {
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
    if (writer.status !== 0) throw new Error(`the writer failed: ${writer.stderr}`);
    // A reader gone before the end would have measured something else.
    if (reader && reader.exitCode !== null) throw new Error(`the reader exited (${reader.exitCode}) while the writer ran`);
    const result = JSON.parse(writer.stdout);
    return { txPerSecond: result.transactions / result.seconds, walMB: walBytes / 1e6 };
  } finally {
    clearInterval(watch);
    reader?.kill('SIGKILL');
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(db + suffix, { force: true });
  }
}

const MODES = Object.keys(HOLD);
const results = Object.fromEntries(MODES.map((m) => [m, []]));
try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of round % 2 ? MODES : [...MODES].reverse()) {
      const r = await runMode(mode, round);
      results[mode].push(r);
      console.log(`round ${round}/${ROUNDS} ${mode.padEnd(33)} ${Math.round(r.txPerSecond).toLocaleString('en')} tx/s, log up to ${r.walMB.toFixed(0)} MB (load ${os.loadavg()[0].toFixed(2)})`);
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
console.log('\n| writer | tx/s, median | against alone | log reached, largest |\n| --- | ---: | ---: | ---: |');
for (const mode of MODES) {
  const m = median(results[mode].map((r) => r.txPerSecond));
  const log = Math.max(...results[mode].map((r) => r.walMB));
  console.log(`| ${mode} | ${Math.round(m).toLocaleString('en')} | ${mode === 'alone' ? '' : `${(((m - alone) / alone) * 100).toFixed(1)}%`} | ${log.toFixed(0)} MB |`);
}
