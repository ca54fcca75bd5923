import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { SqliteEngine } from '@strata/sdk';
import { skipOrFail, useTempDir } from './helpers/env.js';
import { hasLockAddon } from './helpers/pitr.js';

/**
 * The capture under `strata replicate`, next to an application that writes: capture needs the
 * database's write lock for a moment now and then, and an application whose write finds it taken
 * waits (or fails with "database is locked" once its busy timeout is over).
 */
/** What continuous capture of a SQLite database opens. */
type CaptureFeed = Awaited<ReturnType<SqliteEngine['changeCapture']['open']>>;
/** One transaction it read. */
type CapturedTransaction = Awaited<ReturnType<CaptureFeed['read']>>['transactions'][number];

describe('continuous capture beside an application that writes', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  /**
   * The application's database, in WAL mode with an `item` table (or `schema`). `autocheckpoint`
   * is its wal_autocheckpoint (SQLite's default when not given; 0: the log keeps everything until
   * capture checkpoints).
   */
  const appDatabase = (name: string, options: { autocheckpoint?: number; schema?: string } = {}): { file: string; app: Database.Database } => {
    const file = path.join(dir.path, name);
    const app = new Database(file);
    app.pragma('journal_mode = WAL');
    if (options.autocheckpoint !== undefined) app.pragma(`wal_autocheckpoint = ${options.autocheckpoint}`);
    app.exec(options.schema ?? 'CREATE TABLE item (id INTEGER PRIMARY KEY, body BLOB)');
    return { file, app };
  };

  /**
   * One step of a replicator: reads the log to its end in pieces of 2 MB, then maintain() (which
   * checkpoints a long log); the transactions both gave, none lost.
   */
  const readAndMaintain = async (feed: CaptureFeed): Promise<CapturedTransaction[]> => {
    const transactions: CapturedTransaction[] = [];
    for (;;) {
      const got = await feed.read({ maxBytes: 2 * 1024 * 1024 });
      assert.equal(got.lost, undefined, got.lost);
      transactions.push(...got.transactions);
      if (!got.more) break;
    }
    const maintained = await feed.maintain();
    assert.equal(maintained.lost, undefined, maintained.lost);
    return [...transactions, ...maintained.transactions];
  };

  it("never leaves the write lock held while it waits on anything else, and still reads every transaction and lets the log restart", async () => {
    // The application checkpoints on its own, as most do.
    const { file, app } = appDatabase('app.db', { autocheckpoint: 64 });
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    // A second connection of the application that never waits: any moment the lock is held while
    // this process goes on with other work, its BEGIN IMMEDIATE fails at once.
    const impatient = new Database(file, { timeout: 0 });
    let probes = 0;
    const refusals: string[] = [];
    let probing = true;
    const probe = (): void => {
      if (!probing) return;
      probes++;
      try {
        impatient.exec('BEGIN IMMEDIATE');
        impatient.exec('ROLLBACK');
      } catch (err) {
        refusals.push((err as Error).message);
      }
      setImmediate(probe);
    };
    setImmediate(probe);

    const insert = app.prepare('INSERT INTO item (body) VALUES (randomblob(?))');
    let committed = 0;
    let read = 0;
    let largestLog = 0;
    try {
      // About 10,000 frames in all: past the length at which capture checkpoints the log itself,
      // with transactions from one page to several MB (the large ones are what a VACUUM looks like).
      for (let round = 0; round < 60; round++) {
        for (let i = 0; i < 5; i++) {
          insert.run(round % 10 === 9 && i === 0 ? 6_000_000 : 20_000 + ((round * 7 + i) % 13) * 10_000);
          committed++;
        }
        // Let the probe run between the application's writes and capture's steps.
        await new Promise((resolve) => setImmediate(resolve));
        read += (await readAndMaintain(feed)).length;
        largestLog = Math.max(largestLog, statSync(`${file}-wal`).size);
      }
      const last = await feed.read();
      read += last.transactions.length;
    } finally {
      probing = false;
      await feed.close();
      impatient.close();
    }
    app.close();
    assert.ok(probes >= 60, `the application's second connection tried ${probes} times`);
    assert.deepEqual(refusals, [], `the application was refused the write lock ${refusals.length} time(s) while strata held it`);
    assert.equal(read, committed, 'every committed transaction was read once');
    // The log restarted rather than growing with everything written (about 40 MB).
    assert.ok(largestLog < 30 * 1024 * 1024, `the write-ahead log grew to ${largestLog} bytes`);
  });

  it('checkpoints a long log on a thread of its own: the application commits meanwhile, and that commit is read once, with the moment it was seen', async () => {
    // Only capture checkpoints: the log keeps everything until maintain() copies it.
    const { file, app } = appDatabase('long-log.db', { autocheckpoint: 0 });
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    try {
      const insert = app.prepare('INSERT INTO item (body) VALUES (randomblob(?))');
      // 24 MB of log, past the length at which maintain() checkpoints (what a VACUUM leaves).
      for (let i = 0; i < 6; i++) insert.run(4_000_000);
      for (;;) {
        const got = await feed.read({ maxBytes: 8 * 1024 * 1024 });
        assert.equal(got.lost, undefined, got.lost);
        if (!got.more) break;
      }
      let maintaining = true;
      const maintained = feed.maintain().finally(() => (maintaining = false));
      // With the checkpoint on this thread, maintain() ran to its end before any timer fired.
      await new Promise((resolve) => setTimeout(resolve, 0));
      let during: { before: number; after: number } | undefined;
      if (maintaining) {
        const before = Date.now();
        insert.run(100);
        during = { before, after: Date.now() };
      }
      const first = await maintained;
      assert.equal(first.lost, undefined, first.lost);
      assert.ok(during, 'the application committed while maintain() checkpointed');
      const read = [...first.transactions, ...(await feed.read()).transactions];
      assert.equal(read.length, 1, 'the commit made during the checkpoint is read once');
      assert.ok(read[0]!.observedAt >= during.before, 'it was not seen before it was made');
      assert.ok(read[0]!.scannedAt <= read[0]!.observedAt);
      // The checkpoint copied the log: the database file holds the 24 MB now.
      assert.ok(statSync(file).size > 20 * 1024 * 1024, `the database file has ${statSync(file).size} bytes`);
    } finally {
      await feed.close();
      app.close();
    }
  });

  it("keeps a commit's moment while the replicator's thread is busy: the commit clock is read on a thread of its own", async () => {
    const { file, app } = appDatabase('busy.db');
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    try {
      assert.deepEqual((await feed.read()).transactions, []);
      // Time for the clock's thread to start, on a loaded machine too.
      await new Promise((resolve) => setTimeout(resolve, 500));
      app.prepare('INSERT INTO item (body) VALUES (randomblob(100))').run();
      const committedBy = Date.now();
      // This thread busy for 5 s, as behind a large read, a checkpoint or the garbage collector.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5000);
      const read = await feed.read();
      assert.equal(read.transactions.length, 1);
      const late = read.transactions[0]!.observedAt - committedBy;
      assert.ok(late < 4000, `seen committed ${late} ms after it was, when this thread got to read`);
    } finally {
      await feed.close();
      app.close();
    }
  });

  it("a read stopped at its byte limit does not vouch for the commits it left in the log", async () => {
    const { file, app } = appDatabase('limit.db');
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    try {
      const insert = app.prepare('INSERT INTO item (body) VALUES (randomblob(?))');
      const caughtUp = await feed.read();
      assert.deepEqual(caughtUp.transactions, []);
      const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
      await sleep(20);
      insert.run(100_000);
      await sleep(20);
      // The commit clock is also read on a thread of its own, so what a transaction vouches for is
      // checked against the moments the next one was certainly committed by.
      const beforeSecond = Date.now();
      insert.run(100);
      const secondBy = Date.now();
      insert.run(100);
      const thirdBy = Date.now();
      await sleep(20);
      const first = await feed.read({ maxBytes: 1 });
      assert.equal(first.more, true, 'the read stopped at its limit');
      assert.equal(first.transactions.length, 1);
      // A restore that replays only this transaction says it is complete through its scannedAt:
      // the second transaction, committed before this read began, must not be claimed.
      assert.ok(first.transactions[0]!.scannedAt <= secondBy, `scannedAt ${first.transactions[0]!.scannedAt} is not before the next commit (by ${secondBy})`);
      const rest = await feed.read();
      assert.equal(rest.more, undefined);
      assert.equal(rest.transactions.length, 2);
      assert.ok(rest.transactions[0]!.observedAt >= beforeSecond && rest.transactions[1]!.observedAt >= rest.transactions[0]!.observedAt);
      assert.ok(rest.transactions[1]!.scannedAt >= thirdBy, 'a read that reached the end vouches for everything committed before it began');
      assert.ok(rest.transactions[0]!.scannedAt <= thirdBy, 'the one before the last does not vouch for the last');
    } finally {
      await feed.close();
      app.close();
    }
  });

  it('a feed that resumes behind the log\'s end vouches only for the last of what was committed while it was away', async () => {
    const { file, app } = appDatabase('resumed.db', { autocheckpoint: 0 });
    const capture = new SqliteEngine().changeCapture;
    const away = await capture.open(file, {});
    const position = away.position;
    await away.close();
    const insert = app.prepare('INSERT INTO item (body) VALUES (randomblob(?))');
    insert.run(100);
    const secondAt = Date.now();
    insert.run(100);
    insert.run(100);
    const feed = await capture.open(file, { resume: position });
    try {
      assert.equal(feed.resumed, true, 'the log still holds everything after the position');
      const first = await feed.read({ maxBytes: 1 });
      assert.equal(first.transactions.length, 1);
      // A restore that replays only the first may not claim the second, committed before the feed opened.
      assert.ok(first.transactions[0]!.scannedAt < secondAt, `scannedAt ${first.transactions[0]!.scannedAt} is not before the second commit (${secondAt})`);
      assert.ok(first.transactions[0]!.observedAt <= feed.positionAt, 'seen committed by the time the feed opened');
      const rest = await feed.read();
      assert.equal(rest.transactions.length, 2);
      assert.ok(rest.transactions[1]!.scannedAt >= secondAt, 'the last of them vouches for everything committed before the feed opened');
    } finally {
      await feed.close();
      app.close();
    }
  });

  it('condenses the transactions of one read into one that, replayed as docs/FORMAT.md says, gives the same database in fewer bytes', async () => {
    // The database file stays the base: nothing is checkpointed into it while the test writes.
    const { file, app } = appDatabase('condensed.db', { autocheckpoint: 0, schema: 'CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER, note TEXT)' });
    app.exec("WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 200) INSERT INTO counter (n, note) SELECT i, 'start' FROM k");
    app.pragma('wal_checkpoint(TRUNCATE)');
    const base = readFileSync(file);
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    try {
      // Many small transactions on the same few pages, as a busy application's are.
      const bump = app.prepare('UPDATE counter SET n = n + 1, note = ? WHERE id = ?');
      const loopStart = Date.now();
      for (let i = 0; i < 300; i++) bump.run(`bump ${i}`, 1 + (i % 200));
      app.prepare('INSERT INTO counter (n, note) VALUES (?, ?)').run(-1, 'x'.repeat(5000));
      const loopMs = Date.now() - loopStart;
      const read = await feed.read();
      assert.equal(read.transactions.length, 301);
      const engine = new SqliteEngine();
      const condensed = feed.condense!(read.transactions);
      // Compaction's join of the whole read is one transaction with the newest frame of each page:
      // no more bytes than the moments above together.
      const joined = engine.changeCapture.join(read.transactions.map((t) => t.bytes), read.transactions.at(-1)!.position);
      // One transaction for each moment the clock saw: its thread reads every 50 ms, also mid-loop.
      assert.equal(condensed.length, new Set(read.transactions.map((t) => t.observedAt)).size);
      assert.ok(condensed.length <= 2 + Math.ceil(loopMs / 50), `${condensed.length} moments in a loop of 301 commits that took ${loopMs} ms`);
      assert.equal(condensed.reduce((sum, t) => sum + (t.commits ?? 1), 0), 301);
      assert.deepEqual(condensed.at(-1)!.position, read.transactions.at(-1)!.position);
      const readBytes = read.transactions.reduce((sum, t) => sum + t.bytes.byteLength, 0);
      const condensedBytes = condensed.reduce((sum, t) => sum + t.bytes.byteLength, 0);
      assert.ok(condensedBytes * 10 < readBytes, `${condensedBytes} of ${readBytes} bytes`);

      assert.ok(joined.byteLength <= condensedBytes, `joined ${joined.byteLength} bytes, the moments ${condensedBytes}`);

      // The replay docs/FORMAT.md describes: each frame's page at its place, then the size the last frame gives.
      const pageSize = app.pragma('page_size', { simple: true }) as number;
      const frameBytes = 24 + pageSize;
      for (const [name, transactions] of [['condensed', condensed.map((t) => t.bytes)], ['joined', [joined]]] as const) {
        const replayed = path.join(dir.path, `replayed-${name}.db`);
        writeFileSync(replayed, base);
        const fd = openSync(replayed, 'r+');
        let size = 0;
        for (const transaction of transactions) {
          const bytes = Buffer.from(transaction);
          for (let at = 0; at < bytes.length; at += frameBytes) {
            writeSync(fd, bytes, at + 24, pageSize, (bytes.readUInt32BE(at) - 1) * pageSize);
            if (bytes.readUInt32BE(at + 4) !== 0) {
              assert.equal(at + frameBytes, bytes.length, `${name}: only the last frame carries a database size`);
              size = bytes.readUInt32BE(at + 4);
            }
          }
        }
        ftruncateSync(fd, size * pageSize);
        closeSync(fd);
        const check = new Database(replayed, { readonly: true });
        try {
          assert.equal(check.pragma('integrity_check', { simple: true }), 'ok', name);
          assert.deepEqual(check.prepare('SELECT * FROM counter ORDER BY id').all(), app.prepare('SELECT * FROM counter ORDER BY id').all(), name);
        } finally {
          check.close();
        }
      }
    } finally {
      await feed.close();
      app.close();
    }
  });

  /**
   * SQLite's checkpoint lock is a record lock of the process, so only another process sees it held:
   * these tests are the application as the `sqlite3` shell, a process of its own.
   */
  const shell = (file: string, sql: string): string => {
    const result = spawnSync('sqlite3', ['-cmd', '.timeout 20000', file, sql], { encoding: 'utf8' });
    assert.equal(result.status, 0, `sqlite3 ${sql}: ${result.stderr}`);
    return result.stdout.trim();
  };
  /** What the application's checkpoint answers: `busy|log|checkpointed`; busy `1|-1|-1` when it could not start. */
  const applicationCheckpoint = (file: string): string => shell(file, 'PRAGMA wal_checkpoint(PASSIVE)');
  /**
   * The lock needs the optional os-lock addon, which the install builds from source: where it did
   * not build these tests say so and skip (under CI=true they fail).
   */
  const needsLockAddon = (context: Mocha.Context): void => {
    if (!hasLockAddon()) skipOrFail(context, 'the os-lock addon is not installed (its build failed at install?): replicate cannot hold the checkpoint lock here');
  };
  /** Reads on until the application's checkpoint finds the lock held (the hold is taken in the background). */
  const untilHeld = async (file: string, feed: CaptureFeed): Promise<void> => {
    for (let tries = 0; applicationCheckpoint(file) !== '1|-1|-1'; tries++) {
      assert.ok(tries < 600, `the application could still checkpoint a minute after capture started: ${applicationCheckpoint(file)}`);
      assert.equal((await feed.read()).lost, undefined);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  /** A capture of `file` by test/helpers/capture-child.ts, stopped once it opened: its exit code and output. */
  const captureInAnotherProcess = async (file: string): Promise<{ code: number | null; out: string }> => {
    const child = spawn(process.execPath, [fileURLToPath(new URL('./helpers/capture-child.js', import.meta.url)), file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stopped = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d;
      // Once: a second SIGTERM could reach it while it exits, after Node has let go of the handler.
      if (!stopped && out.includes('open')) {
        stopped = true;
        child.kill('SIGTERM');
      }
    });
    child.stderr.on('data', (d: Buffer) => (out += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    return { code, out };
  };

  it("leaves the checkpoints to the application when asked (replicate --no-checkpoint-lock): its explicit checkpoints succeed while capture runs, and a second capture is still refused", async function () {
    needsLockAddon(this);
    const { file, app } = appDatabase('left.db');
    app.close();
    const feed = await new SqliteEngine().changeCapture.open(file, { leaveCheckpoints: true });
    let read = 0;
    try {
      // The hold is taken in the background within a read or two (untilHeld): ten rounds would see it.
      for (let round = 0; round < 10; round++) {
        shell(file, 'INSERT INTO item (body) VALUES (randomblob(1000));');
        read += (await readAndMaintain(feed)).length;
        assert.match(applicationCheckpoint(file), /^0\|/, `round ${round}: the application's checkpoint gave up`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const refused = await captureInAnotherProcess(file);
      assert.equal(refused.code, 3, refused.out);
      assert.match(refused.out, /left\.db is already replicated by another process/);
    } finally {
      await feed.close();
    }
    assert.equal(read, 10, 'every committed transaction was read once');
  });

  it("holds SQLite's checkpoint lock while it runs: the application's checkpoints give up at once, capture's own keep the log short, and once it stops the application checkpoints again", async function () {
    needsLockAddon(this);
    const { file, app } = appDatabase('held.db');
    app.close();
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    let read = 0;
    let largestLog = 0;
    const salts = new Set<string>();
    try {
      await untilHeld(file, feed);
      // About 40 MB of log from another process, a megabyte at a time, with SQLite's automatic
      // checkpoints every 64 pages: those attempts now fail, and only capture's copy the log.
      for (let round = 0; round < 40; round++) {
        shell(file, `PRAGMA wal_autocheckpoint = 64; ${'INSERT INTO item (body) VALUES (randomblob(200000));'.repeat(5)}`);
        const got = await readAndMaintain(feed);
        read += got.length;
        for (const t of got) salts.add(JSON.stringify(t.position['salt']));
        largestLog = Math.max(largestLog, statSync(`${file}-wal`).size);
      }
      read += (await feed.read()).transactions.length;
      // Capture's checkpoints let go of the lock when they end; it was taken again.
      await untilHeld(file, feed);
    } finally {
      await feed.close();
    }
    assert.equal(read, 200, 'every committed transaction was read once');
    assert.ok(salts.size >= 2, 'the log restarted under capture\'s own checkpoints');
    assert.ok(largestLog < 30 * 1024 * 1024, `the write-ahead log grew to ${largestLog} bytes`);
    assert.match(applicationCheckpoint(file), /^0\|/, 'the application checkpoints again once capture has stopped');
  });

  it('rebuilds a damaged wal-index header itself while it holds the checkpoint lock: another process reading the database is not refused', async function () {
    needsLockAddon(this);
    const { file, app } = appDatabase('damaged-index.db');
    app.close();
    shell(file, "INSERT INTO item (body) VALUES ('before')");
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    try {
      await untilHeld(file, feed);
      // A writer killed while it wrote the header leaves its two copies different. The bytes are
      // changed by another process: closing a descriptor of -shm here would drop this process's locks.
      const damage = spawnSync('dd', [`of=${file}-shm`, 'bs=1', 'seek=16', 'count=4', 'conv=notrunc', 'status=none'], { input: Buffer.from([0xde, 0xad, 0xbe, 0xef]) });
      assert.equal(damage.status, 0, String(damage.stderr));
      // The application reads meanwhile; SQLite retries a rebuild it cannot make for about ten
      // seconds, then fails with "locking protocol".
      const reader = spawn('sqlite3', ['-cmd', '.timeout 20000', file, 'SELECT count(*) FROM item'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      reader.stdout.on('data', (d: Buffer) => (out += d));
      reader.stderr.on('data', (d: Buffer) => (out += d));
      let exited: number | null | undefined;
      reader.on('close', (code) => (exited = code));
      while (exited === undefined) {
        assert.equal((await feed.read()).lost, undefined);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(exited, 0, `the application's read failed: ${out}`);
      assert.equal(out.trim(), '1');
      // Capture goes on where it was, and holds the lock again.
      shell(file, "INSERT INTO item (body) VALUES ('after')");
      const after = await feed.read();
      assert.equal(after.lost, undefined, after.lost);
      assert.equal(after.transactions.length, 1);
      await untilHeld(file, feed);
    } finally {
      await feed.close();
    }
  });

  it('refuses a second capture of the same database in another process (into another repository), naming the first; once the first stops, the second starts', async function () {
    needsLockAddon(this);
    const { file, app } = appDatabase('two-captures.db');
    app.close();
    const second = (): Promise<{ code: number | null; out: string }> => captureInAnotherProcess(file);
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    try {
      // Each would hold the checkpoint lock in turn, and the log would never restart.
      const refused = await second();
      assert.equal(refused.code, 3, refused.out);
      assert.match(refused.out, new RegExp(`refused: replicate: .*two-captures\\.db is already replicated by another process \\(pid ${process.pid}\\)`));
      assert.match(refused.out, /a mirror in strata\.config\.json copies the segments to a second one/);
      // In this same process too (a daemon with two replicate jobs of one database): POSIX locks
      // never conflict within a process, so a reservation of the file in the process refuses it,
      // before anything of the file is opened (closing a descriptor of it would drop the first
      // one's locks: another process is still refused after).
      await assert.rejects(new SqliteEngine().changeCapture.open(file, {}), /two-captures\.db is already replicated by this process/);
      assert.equal((await second()).code, 3, 'the first capture still holds its claim');
      // The first goes on as it was.
      shell(file, "INSERT INTO item (body) VALUES ('meanwhile')");
      assert.equal((await readAndMaintain(feed)).length, 1);
      await untilHeld(file, feed);
    } finally {
      await feed.close();
    }
    const started = await second();
    assert.equal(started.code, 0, started.out);
    assert.match(started.out, /^open\nread 0\n$/);
  });

  it("a backup of the database by the process that captures it (a daemon's backup job beside its replicate job) leaves the capture's locks alone: the application closing its last connection does not take the log from under it", async () => {
    const { file, app } = appDatabase('backup-beside.db');
    app.close();
    const feed = await new SqliteEngine().changeCapture.open(file, {});
    try {
      const snapshot = await new SqliteEngine().snapshot(file, { schemaOnly: false, tempDir: dir.path });
      assert.ok(snapshot.databaseBytes > 0);
      // Each shell is the application's only connection, closed after its insert: SQLite then
      // checkpoints and removes the log unless it sees another connection's lock on the file.
      shell(file, "INSERT INTO item (body) VALUES ('one')");
      shell(file, "INSERT INTO item (body) VALUES ('two')");
      const got = await readAndMaintain(feed);
      assert.equal(got.length, 2, 'both transactions were captured');
    } finally {
      await feed.close();
    }
  });
});
