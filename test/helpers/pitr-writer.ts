/**
 * An application writing to a SQLite database in WAL mode, for the point-in-time tests: run as a
 * child process (`node pitr-writer.js DB LOG DURATION_MS`), it commits one marker row every 10 ms
 * (its sequence number and the time just before the commit) and appends `seq before after` to LOG
 * for every commit (`after`: the time just after COMMIT returned). Meanwhile it checkpoints in
 * every way SQLite offers: PASSIVE, FULL, RESTART and TRUNCATE checkpoints, automatic checkpoints
 * (a small wal_autocheckpoint), and VACUUMs; rows of varying size, whose padding it drops once
 * they are old, so the file grows and shrinks. It VACUUMs as an application that keeps its file
 * small does, when the file has doubled since its last VACUUM (every several seconds; a trimmed
 * row leaves its page sparse, not free, so a share of free pages is never reached). VACUUMing on
 * a fixed count of commits while the table only grew rewrote a database of hundreds of MB every
 * few seconds in an hour soak, about 60 MB/s of log that no application writes.
 * While a file LOG.quiet exists it checkpoints not at all (explicitly or automatically), so that
 * the log keeps everything a stopped replicator has not read yet. It stops after DURATION_MS, or on
 * SIGTERM.
 */
import * as fs from 'node:fs';
import Database from 'better-sqlite3';

const [file, log, duration] = process.argv.slice(2);
if (!file || !log || !duration) throw new Error('usage: pitr-writer DB LOG DURATION_MS');
const db = new Database(file, { timeout: 10_000 });
db.pragma('journal_mode = WAL');
// Automatic checkpoints every 64 pages, so they happen between the explicit ones too.
db.pragma('wal_autocheckpoint = 64');
db.exec('CREATE TABLE IF NOT EXISTS marker (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, pad BLOB)');
db.exec('CREATE TABLE IF NOT EXISTS side (id INTEGER PRIMARY KEY, note TEXT)');
let seq = (db.prepare('SELECT max(seq) AS m FROM marker').get() as { m: number | null }).m ?? 0;
const insert = db.prepare('INSERT INTO marker (seq, at, pad) VALUES (?, ?, randomblob(?))');
/** The newest rows keep their padding; older ones are trimmed to their sequence number and time. */
const KEEP_PADDED = 1000;
const trimPadding = db.prepare('UPDATE marker SET pad = NULL WHERE seq <= ? AND pad IS NOT NULL');
const pageCount = (): number => db.pragma('page_count', { simple: true }) as number;
let pagesAfterVacuum = Math.max(pageCount(), 64);
const out = fs.openSync(log, 'a');
const stopAt = Date.now() + Number(duration);
let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
});

/** A checkpoint that must wait for every reader (RESTART, TRUNCATE) waits briefly, as an app that cannot stall would. */
function impatient(mode: string): void {
  db.pragma('busy_timeout = 100');
  try {
    db.pragma(`wal_checkpoint(${mode})`);
  } finally {
    db.pragma('busy_timeout = 10000');
  }
}

let quiet = false;

function step(): void {
  const wantQuiet = fs.existsSync(`${log}.quiet`);
  if (wantQuiet !== quiet) {
    quiet = wantQuiet;
    db.pragma(`wal_autocheckpoint = ${quiet ? 0 : 64}`);
  }
  if (stopping || Date.now() > stopAt) {
    db.close();
    fs.closeSync(out);
    return;
  }
  seq++;
  const before = Date.now();
  // Rows from 100 bytes to 6 KB: some need overflow pages, so transactions span 1 to 3 pages.
  insert.run(seq, before, 100 + (seq % 13) * 450);
  const after = Date.now();
  fs.writeSync(out, `${seq} ${before} ${after}\n`);
  if (quiet) {
    setTimeout(step, 10);
    return;
  }
  if (seq % 97 === 0) impatient('TRUNCATE');
  else if (seq % 61 === 0) impatient('RESTART');
  else if (seq % 43 === 0) impatient('FULL');
  else if (seq % 29 === 0) db.pragma('wal_checkpoint(PASSIVE)');
  // Old rows lose their padding (one transaction over hundreds of pages) and a deleted side row
  // leaves more free pages; a VACUUM rewrites every page in one transaction and shrinks the file.
  if (seq % 450 === 0) {
    trimPadding.run(seq - KEEP_PADDED);
    db.prepare('INSERT INTO side (note) VALUES (randomblob(200000))').run();
    db.prepare('DELETE FROM side').run();
    if (pageCount() >= 2 * pagesAfterVacuum) {
      db.exec('VACUUM');
      pagesAfterVacuum = pageCount();
    }
  }
  setTimeout(step, 10);
}
step();
