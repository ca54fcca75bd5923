import assert from 'node:assert/strict';
import { fork, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import Database from 'better-sqlite3';
import * as path from 'node:path';
import { EngineRegistry, Passphrase, SqliteEngine, StrataError, initRepository, isStrataError, openRepository, readArtifact } from '@strata/sdk';
import type { Engine, EngineRestoreOptions, RestoreSession } from '@strata/sdk';
import { describeEngineConformance } from './conformance/engine-conformance.js';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { ROOT, factsAtBackup, sqliteDump, sqliteQuery, useTempDir } from './helpers/env.js';

const engine = new SqliteEngine({ busyTimeoutMs: 500 });

describeEngineConformance('sqlite', async () => ({
  engine,
  registry: new EngineRegistry().register(engine),
  createRich: async (dir) => {
    const file = path.join(dir, 'rich.db');
    buildRichDatabase(file);
    return file;
  },
  mutate: async (file, seed) => mutate(file, seed),
  newTarget: async (dir, name) => path.join(dir, `${name}.db`),
  dump: async (file) => sqliteDump(file),
  dumpSchema: async (file) => sqliteQuery(file, '.schema'),
  exec: async (file, sql) => void sqliteQuery(file, sql),
  query: async (file, sql) => sqliteQuery(file, sql),
  exists: async (file) => existsSync(file),
  leftovers: async (file) => readdirSync(path.dirname(file)).filter((f) => f.startsWith(`.${path.basename(file)}.strata-`)),
}));

/** The messages of the process warnings with `code` that `work` emits (the CLI prints them on stderr). */
async function warningsDuring(code: string, work: () => Promise<unknown>): Promise<string[]> {
  const said: string[] = [];
  const listener = (warning: Error & { code?: string }): void => {
    if (warning.code === code) said.push(warning.message);
  };
  process.on('warning', listener);
  try {
    await work();
    // Warnings are delivered on the next turn of the event loop.
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', listener);
  }
  return said;
}

describe('SQLite engine', () => {
  const dir = useTempDir();
  const passphrase = new Passphrase('sqlite engine tests');

  async function repository() {
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    return openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
  }

  it('restores a copy that passes PRAGMA integrity_check and keeps user_version', async () => {
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 500 });
    const repo = await repository();
    const record = await repo.backup(source, { database: 'app' });
    const target = path.join(dir.path, 'out.db');
    await repo.restore({ id: record.id }, { to: target });
    assert.equal(sqliteQuery(target, 'PRAGMA integrity_check'), 'ok');
    assert.equal(sqliteQuery(target, 'PRAGMA user_version'), '42');
    assert.equal(sqliteQuery(target, "SELECT count(*) FROM search WHERE search MATCH 'Buch'"), '500');
  });

  it("AUTOINCREMENT's counters are in the verify facts: a copy that lost one is told apart, and they are not offered as a table", async () => {
    const source = path.join(dir.path, 'counters.db');
    const db = new Database(source);
    db.exec(`CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT);
      CREATE TABLE "odd ""name""" (id INTEGER PRIMARY KEY AUTOINCREMENT);
      CREATE TABLE plain (k INTEGER PRIMARY KEY);
      INSERT INTO orders (note) VALUES ('a'), ('b'), ('c'), ('d'), ('e'); DELETE FROM orders WHERE id > 3;
      INSERT INTO "odd ""name""" DEFAULT VALUES; INSERT INTO plain VALUES (1);`);
    db.close();
    const repo = await repository();
    const record = await repo.backup(source, { database: 'counters' });
    const target = path.join(dir.path, 'counters-out.db');
    await repo.restore({ id: record.id }, { to: target });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    assert.match(report!.checks.at(-1)!.reason, /^3 table\(s\) and sqlite_sequence: row counts and content checksums match/);
    const recorded = (await factsAtBackup(engine, source, path.join(dir.path, 'tmp'))).find((t) => t.name === 'sqlite_sequence');
    assert.equal(recorded?.rows, 2);
    const facts = async () => (await engine.inspect(target)).tables.find((t) => t.name === 'sqlite_sequence');
    assert.deepEqual(await facts(), recorded);
    // Every row still there, but the next order would get id 4 again, a deleted order's.
    sqliteQuery(target, "UPDATE sqlite_sequence SET seq = 3 WHERE name = 'orders'");
    assert.notEqual((await facts())!.checksum, recorded.checksum);
    sqliteQuery(target, "DELETE FROM sqlite_sequence WHERE name = 'orders'");
    assert.equal((await facts())!.rows, 1);
    assert.deepEqual((await repo.tablesOf({ id: record.id })).sort(), ['odd "name"', 'orders', 'plain']);
    // What list and the editor show counts the tables and their rows alone (3 + 1 + 1), in a full,
    // in an incremental that stores its facts as changes, and in a catalog rebuilt from the artifacts.
    assert.deepEqual([record.tableCount, record.rowCount], [3, 5]);
    sqliteQuery(source, "INSERT INTO orders (note) VALUES ('f')");
    const incremental = await repo.backup(source, { database: 'counters', type: 'incremental' });
    assert.deepEqual([incremental.tableCount, incremental.rowCount], [3, 6]);
    const rebuilt = await repo.rebuildCatalog();
    assert.deepEqual(
      rebuilt.map((b) => [b.id, b.tableCount, b.rowCount]),
      [
        [record.id, 3, 5],
        [incremental.id, 3, 6],
      ],
    );
    await repo.close();
  });

  it('takes a consistent snapshot of a WAL database while another process writes to it', async function () {
    // Generous: three backups and restores beside a busy writer, on a machine that may be loaded.
    this.timeout(240_000);
    const source = path.join(dir.path, 'busy.db');
    buildRichDatabase(source, { rows: 50 });
    // The writer inserts batches of 10 rows, each batch in one transaction: any consistent
    // snapshot holds a multiple of 10 of them.
    const writerScript = path.join(dir.path, 'writer.cjs');
    const betterSqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    writeFileSync(
      writerScript,
      `const Database = require(${JSON.stringify(betterSqlite)});
       const db = new Database(process.argv[2], { timeout: 5000 });
       db.exec('CREATE TABLE IF NOT EXISTS batches (n INTEGER, payload BLOB)');
       const insert = db.prepare('INSERT INTO batches VALUES (?, randomblob(2000))');
       const batch = db.transaction((n) => { for (let i = 0; i < 10; i++) insert.run(n); });
       let n = 0; process.send('ready');
       // A pause between rounds keeps the writer busy throughout the backups without letting the
       // database grow without bound (on a slow machine each backup would then copy more).
       const tick = () => { for (let k = 0; k < 20; k++) batch(n++); setTimeout(tick, 2); };
       tick();`,
    );
    const writer = fork(writerScript, [source], { stdio: 'ignore' });
    await new Promise<void>((resolve) => writer.once('message', () => resolve()));
    try {
      const repo = await repository();
      const records = [];
      for (let i = 0; i < 3; i++) records.push(await repo.backup(source, { database: 'busy' }));
      for (const [i, record] of records.entries()) {
        const target = path.join(dir.path, `snap${i}.db`);
        await repo.restore({ id: record.id }, { to: target });
        assert.equal(sqliteQuery(target, 'PRAGMA integrity_check'), 'ok');
        const count = Number(sqliteQuery(target, 'SELECT count(*) FROM batches'));
        assert.equal(count % 10, 0, `snapshot ${i} holds ${count} rows: a torn transaction`);
      }
    } finally {
      writer.kill();
    }
  });

  it('a copy that comes out short (better-sqlite3 takes a busy first step for the end) fails the backup, storing nothing', async () => {
    // A writer taking its lock just as the copy starts made better-sqlite3 finish at once, with an
    // empty copy (seen beside rollback-journal writers, about one backup in twelve). The race
    // cannot be timed from outside; its outcome is what the library's backup() did then.
    const source = path.join(dir.path, 'short.db');
    buildRichDatabase(source, { rows: 20 });
    const driver = createRequire(path.join(ROOT, 'packages/engine-sqlite/package.json'))('better-sqlite3') as typeof Database;
    const original = driver.prototype.backup;
    driver.prototype.backup = async function (this: Database.Database) {
      return { totalPages: 0, remainingPages: 0 };
    } as typeof original;
    const repo = await repository();
    try {
      await assert.rejects(repo.backup(source, { database: 'short' }), (err: unknown) => isStrataError(err, 'INTERNAL') && /the copy holds 0 of its \d+ page\(s\).*nothing was stored/.test((err as Error).message));
    } finally {
      driver.prototype.backup = original;
    }
    assert.deepEqual(await repo.list({ database: 'short' }), []);
    // With the library's own backup() the same database backs up whole.
    const record = await repo.backup(source, { database: 'short' });
    assert.equal(record.tableCount > 0 && record.rowCount > 0, true);
    // An empty file (an application's database before its first table) is an empty database: its copy has the one page SQLite gives it.
    const empty = path.join(dir.path, 'empty.db');
    writeFileSync(empty, '');
    const none = await repo.backup(empty, { database: 'empty' });
    assert.deepEqual([none.tableCount, none.rowCount], [0, 0]);
    const restored = path.join(dir.path, 'empty-restored.db');
    await repo.restore({ id: none.id }, { to: restored });
    assert.equal(sqliteQuery(restored, 'SELECT count(*) FROM sqlite_schema'), '0');
    await repo.close();
  });

  it('never replays a stale -wal file onto the restored database', async () => {
    const source = path.join(dir.path, 'src.db');
    buildRichDatabase(source, { rows: 20 });
    const repo = await repository();
    const record = await repo.backup(source, { database: 'src' });
    // A target path with a leftover WAL from some other database that once lived there.
    const target = path.join(dir.path, 'target.db');
    const other = path.join(dir.path, 'other.db');
    buildRichDatabase(other, { rows: 5 });
    const open = new Database(other);
    open.pragma('wal_autocheckpoint = 0');
    open.prepare("INSERT INTO log(message) VALUES ('from the stale wal')").run();
    // Copy while the connection is open, so the committed row exists only in the -wal file.
    copyFileSync(other, target);
    copyFileSync(`${other}-wal`, `${target}-wal`);
    open.close();
    assert.ok(existsSync(`${target}-wal`));
    await repo.restore({ id: record.id }, { to: target, force: true });
    assert.equal(sqliteDump(target), sqliteDump(source));
    assert.equal(sqliteQuery(target, "SELECT count(*) FROM log WHERE message = 'from the stale wal'"), '0');
    assert.deepEqual(
      readdirSync(dir.path).filter((f) => f.includes('strata-')),
      [],
      'no temporary or moved-aside files are left next to the target',
    );
  });

  /** Builds a database with the real sqlite3 tool, which (unlike better-sqlite3) accepts legacy syntax. */
  function sqlite3Script(file: string, script: string): void {
    const result = spawnSync('sqlite3', [file], { input: script, encoding: 'utf8' });
    assert.equal(result.status, 0, `sqlite3 failed: ${result.stderr}`);
    assert.equal(result.stderr, '', `sqlite3 complained: ${result.stderr}`);
  }

  // Double-quoted strings in a schema: SQLite reads them in an existing schema, but a connection
  // built with SQLITE_DQS=0 (better-sqlite3) refuses them in new DDL.
  const LEGACY_QUOTES = `
    CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, a TEXT DEFAULT "x", b TEXT CHECK (b <> "bad"),
      c TEXT AS (a || "-g"), code TEXT UNIQUE);
    CREATE INDEX items_y ON items(a) WHERE a = "y";
    CREATE INDEX items_z ON items(a || "z");
    CREATE VIEW items_q AS SELECT a, b FROM items WHERE a = "q";
    CREATE TRIGGER items_mark AFTER INSERT ON items BEGIN UPDATE items SET b = "marked" WHERE id = new.id; END;
    CREATE TABLE other (id INTEGER PRIMARY KEY, note TEXT DEFAULT "none");
    INSERT INTO items(a, code) VALUES ('y', 'c1'), ('q', 'c2'), ('zz', 'c3');
    INSERT INTO other(note) VALUES ('kept');
    PRAGMA user_version = 9;
  `;

  it('restores a schema-only backup of a schema that uses double-quoted string literals', async () => {
    const source = path.join(dir.path, 'legacy.db');
    sqlite3Script(source, LEGACY_QUOTES);
    const repo = await repository();
    const record = await repo.backup(source, { database: 'legacy', type: 'schema-only' });
    const target = path.join(dir.path, 'schema.db');
    await repo.restore({ id: record.id }, { to: target });
    assert.equal(sqliteQuery(target, '.schema'), sqliteQuery(source, '.schema'));
    assert.equal(sqliteQuery(target, 'PRAGMA integrity_check'), 'ok');
    assert.equal(sqliteQuery(target, 'PRAGMA user_version'), '9');
    assert.equal(sqliteQuery(target, 'SELECT count(*) FROM items'), '0');
    // The restored schema behaves like the original: the default, the check and the trigger.
    sqlite3Script(target, "INSERT INTO items(code) VALUES ('n1');");
    assert.equal(sqliteQuery(target, 'SELECT a, b, c FROM items'), 'x|marked|x-g');
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('restores single tables of a schema that uses double-quoted string literals', async () => {
    const source = path.join(dir.path, 'legacy.db');
    sqlite3Script(source, LEGACY_QUOTES);
    const repo = await repository();
    const record = await repo.backup(source, { database: 'legacy' });
    // Into a new file.
    const fresh = path.join(dir.path, 'fresh.db');
    await repo.restore({ id: record.id }, { to: fresh, tables: ['items'] });
    assert.equal(sqliteQuery(fresh, '.dump items'), sqliteQuery(source, '.dump items'));
    assert.equal(sqliteQuery(fresh, 'PRAGMA integrity_check'), 'ok');
    // Into an existing database whose table was changed since: only that table comes back.
    const existing = path.join(dir.path, 'existing.db');
    await repo.restore({ id: record.id }, { to: existing });
    sqlite3Script(existing, "DELETE FROM items; DROP INDEX items_y; UPDATE other SET note = 'changed';");
    await repo.restore({ id: record.id }, { to: existing, tables: ['items'], force: true });
    assert.equal(sqliteQuery(existing, '.dump items'), sqliteQuery(source, '.dump items'));
    assert.equal(sqliteQuery(existing, 'SELECT note FROM other'), 'changed');
    assert.equal(sqliteQuery(existing, 'PRAGMA integrity_check'), 'ok');
    // The partial index holds what the original's holds (it was rebuilt, not left empty).
    assert.equal(sqliteQuery(existing, "SELECT count(*) FROM items INDEXED BY items_y WHERE a = 'y'"), '1');
  });

  for (const encoding of ['UTF-16le', 'UTF-16be']) {
    it(`restores single tables of a ${encoding} database`, async () => {
      const source = path.join(dir.path, 'wide.db');
      sqlite3Script(
        source,
        `PRAGMA encoding = '${encoding}';
         CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT);
         CREATE INDEX people_name ON people(name);
         CREATE TABLE places (id INTEGER PRIMARY KEY, city TEXT);
         INSERT INTO people(name, note) VALUES ('Zoë Ångström', '村上 春樹'), ('Σαπφώ', '🐉 dragon'), ('Лев', NULL);
         INSERT INTO places(city) VALUES ('Zürich'), ('東京');`,
      );
      const repo = await repository();
      const record = await repo.backup(source, { database: 'wide' });
      const fresh = path.join(dir.path, 'fresh.db');
      await repo.restore({ id: record.id }, { to: fresh, tables: ['people'] });
      assert.equal(sqliteQuery(fresh, 'PRAGMA encoding'), encoding);
      assert.equal(sqliteQuery(fresh, '.dump people'), sqliteQuery(source, '.dump people'));
      const existing = path.join(dir.path, 'existing.db');
      await repo.restore({ id: record.id }, { to: existing });
      sqlite3Script(existing, "UPDATE people SET name = 'gone'; DELETE FROM places WHERE id = 1;");
      await repo.restore({ id: record.id }, { to: existing, tables: ['people'], force: true });
      assert.equal(sqliteQuery(existing, '.dump people'), sqliteQuery(source, '.dump people'));
      assert.equal(sqliteQuery(existing, 'SELECT count(*) FROM places'), '1');
      // A target in another encoding cannot take the tables: a clear refusal, the target untouched.
      const utf8 = path.join(dir.path, 'utf8.db');
      sqlite3Script(utf8, "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, note TEXT); INSERT INTO people(name) VALUES ('mine');");
      await assert.rejects(
        repo.restore({ id: record.id }, { to: utf8, tables: ['people'], force: true }),
        (err: unknown) => err instanceof StrataError && err.code === 'RESTORE_FAILED' && /different text encodings/.test(err.message),
      );
      assert.equal(sqliteQuery(utf8, 'SELECT name FROM people'), 'mine');
    });
  }

  it('names the schema object a restore lost when verify compares the schema', async () => {
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 30 });
    // An engine whose restores lose an index and a user_version: what verify must catch and name.
    const doctoring: Engine = {
      kind: engine.kind,
      capabilities: engine.capabilities,
      display: engine.display,
      accepts: (locator) => engine.accepts(locator),
      describe: (locator) => engine.describe(locator),
      snapshot: (locator, options) => engine.snapshot(locator, options),
      targetExists: (target) => engine.targetExists(target),
      createScratch: (options) => engine.createScratch(options),
      inspect: (locator) => engine.inspect(locator),
      beginRestore: async (target: string, options: EngineRestoreOptions): Promise<RestoreSession> => {
        const session = await engine.beginRestore(target, options);
        return {
          ...session,
          commit: async (info) => {
            await session.commit(info);
            const db = new Database(target.replace(/^sqlite:/, ''));
            db.exec('DROP INDEX books_by_author; PRAGMA user_version = 41');
            db.close();
          },
        };
      },
    };
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'none' });
    const repo = await openRepository(path.join(dir.path, 'repo'), { engines: new EngineRegistry().register(doctoring), tempDir: path.join(dir.path, 'tmp') });
    const record = await repo.backup(source, { database: 'app' });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    const schema = report!.checks.find((c) => c.name === 'schema-integrity')!;
    assert.equal(schema.status, 'failed');
    assert.match(schema.reason, /index books_by_author is missing/);
    assert.match(schema.reason, /database header is defined differently/);
  });

  it('keeps incrementals of a database with 5,000 tables small, and restores and verifies them', async function () {
    this.timeout(240_000);
    const source = path.join(dir.path, 'many.db');
    const db = new Database(source);
    db.transaction(() => {
      for (let i = 0; i < 5000; i++) {
        db.exec(`CREATE TABLE t${i} (id INTEGER PRIMARY KEY, v TEXT)`);
        db.prepare(`INSERT INTO t${i}(v) VALUES (?)`).run(`row of table ${i}`);
      }
    })();
    db.close();
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'none' });
    const repo = await openRepository(path.join(dir.path, 'repo'), { tempDir: path.join(dir.path, 'tmp'), engines: new EngineRegistry().register(engine) });
    await repo.backup(source, { database: 'many' });
    sqlite3Script(source, "UPDATE t4321 SET v = 'changed' WHERE id = 1;");
    const first = await repo.backup(source, { database: 'many', type: 'incremental' });
    // One changed page: what a user sees in `strata list` must be kilobytes, not the 200 KB of
    // 5,000 tables' checksums and schema objects repeated.
    assert.ok(first.storedBytes < 20_000, `the incremental stores ${first.storedBytes} bytes`);
    assert.equal(first.tableCount, 5000);
    sqlite3Script(source, "DROP TABLE t17; CREATE TABLE added (x TEXT); INSERT INTO added VALUES ('new'); UPDATE t3 SET v = 'again';");
    const second = await repo.backup(source, { database: 'many', type: 'incremental' });
    assert.ok(second.storedBytes < 20_000, `the second incremental stores ${second.storedBytes} bytes`);
    assert.equal(second.tableCount, 5000);
    const expected = sqliteDump(source);
    const target = path.join(dir.path, 'restored.db');
    await repo.restore({ id: second.id }, { to: target });
    assert.equal(sqliteDump(target), expected);
    // Verifying the second completes its facts through the first's and the full's.
    const [report] = await repo.verify({ id: second.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    assert.match(report!.checks.find((c) => c.name === 'data-consistency')!.reason, /^5000 table\(s\)/);
    assert.deepEqual((await repo.tablesOf({ id: second.id })).filter((t) => t === 'added' || t === 't17'), ['added']);
  });

  it('restores and verifies incrementals whose facts are changes when the cached facts are gone', async function () {
    this.timeout(300_000);
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 60 });
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'none' });
    const repo = await openRepository(path.join(dir.path, 'repo'), { tempDir: path.join(dir.path, 'tmp'), engines: new EngineRegistry().register(engine) });
    await repo.backup(source, { database: 'app' });
    mutate(source, 1);
    const first = await repo.backup(source, { database: 'app', type: 'incremental' });
    const manifestOf = async (key: string) => (await readArtifact({ storage: repo.storage, location: { key, codec: 'zstd', encrypted: false } })).manifest;
    assert.ok((await manifestOf(first.key)).factsDelta, 'the incremental stores its facts as changes');
    const atFirst = sqliteDump(source);
    rmSync(path.join(dir.path, 'repo/cache/facts'), { recursive: true });
    mutate(source, 2);
    // Without its parent's cached facts an incremental stores its facts whole (nothing decrypted to find them).
    const second = await repo.backup(source, { database: 'app', type: 'incremental' });
    assert.equal((await manifestOf(second.key)).factsDelta, undefined);
    rmSync(path.join(dir.path, 'repo/cache'), { recursive: true });
    const target = path.join(dir.path, 'first.db');
    await repo.restore({ id: first.id }, { to: target });
    assert.equal(sqliteDump(target), atFirst);
    assert.deepEqual(await repo.tablesOf({ id: first.id }), ['authors', 'books', 'log', 'search_config', 'search_content', 'search_data', 'search_docsize', 'search_idx', 'tags']);
    for (const record of [first, second]) {
      const [report] = await repo.verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    }
  });

  it('refuses a table restore whose index name another table of the target uses, and changes nothing', async () => {
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 20 });
    const repo = await repository();
    const record = await repo.backup(source, { database: 'app' });
    const target = path.join(dir.path, 'target.db');
    await repo.restore({ id: record.id }, { to: target });
    sqlite3Script(target, 'DROP INDEX books_by_author; CREATE INDEX books_by_author ON log(message); DELETE FROM books WHERE id > 10;');
    const before = sqliteDump(target);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: target, tables: ['books'], force: true }),
      (err: unknown) => err instanceof StrataError && err.code === 'RESTORE_FAILED' && /index books_by_author/.test(err.message),
    );
    assert.equal(sqliteDump(target), before);
  });

  it('a table restore keeps the triggers and checks the foreign keys that name the table in another case (ON FOO, REFERENCES FOO for Foo)', async () => {
    const source = path.join(dir.path, 'cases.db');
    sqlite3Script(
      source,
      `CREATE TABLE Foo (id INTEGER PRIMARY KEY, x TEXT);
       CREATE TABLE audit (m TEXT);
       CREATE TRIGGER foo_upd AFTER UPDATE ON FOO BEGIN INSERT INTO audit VALUES ('updated ' || new.id); END;
       CREATE TABLE kid (id INTEGER PRIMARY KEY, fid INT REFERENCES FOO(id));
       INSERT INTO Foo VALUES (1, 'a'); INSERT INTO kid VALUES (1, 1);`,
    );
    const repo = await repository();
    const record = await repo.backup(source, { database: 'cases' });
    const fresh = path.join(dir.path, 'cases-fresh.db');
    // Named as SQLite reads names, in any case.
    await repo.restore({ id: record.id }, { to: fresh, tables: ['foo'] });
    assert.equal(sqliteQuery(fresh, "SELECT name FROM sqlite_schema WHERE type = 'table'"), 'Foo');
    assert.equal(sqliteQuery(fresh, "SELECT name FROM sqlite_schema WHERE type = 'trigger'"), 'foo_upd');
    // Into the live database: the rows of kid point at a Foo row the backup lacks.
    const live = path.join(dir.path, 'cases-live.db');
    copyFileSync(source, live);
    sqlite3Script(live, "INSERT INTO Foo VALUES (5, 'z'); UPDATE kid SET fid = 5;");
    const before = sqliteDump(live);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: live, tables: ['Foo'], force: true }),
      (err: unknown) => err instanceof StrataError && err.code === 'USAGE' && /break 1 foreign key reference/.test(err.message),
    );
    assert.equal(sqliteDump(live), before);
    assert.equal(sqliteQuery(live, "SELECT name FROM sqlite_schema WHERE type = 'trigger'"), 'foo_upd');
  });

  it('refuses a table restore of a contentless full-text table, whose rows would come back unindexed', async () => {
    const source = path.join(dir.path, 'contentless.db');
    sqlite3Script(source, "CREATE VIRTUAL TABLE fc USING fts5(body, content=''); INSERT INTO fc (rowid, body) VALUES (1, 'alpha beta'), (2, 'gamma delta'); CREATE VIRTUAL TABLE c4 USING fts4(body, content=\"\");");
    const repo = await repository();
    const record = await repo.backup(source, { database: 'contentless' });
    for (const table of ['fc', 'c4']) {
      const target = path.join(dir.path, `contentless-${table}.db`);
      await assert.rejects(
        repo.restore({ id: record.id }, { to: target, tables: [table] }),
        (err: unknown) => err instanceof StrataError && err.code === 'USAGE' && /contentless full-text table .*restore the whole database/.test(err.message),
      );
      assert.equal(existsSync(target), false, 'nothing is written');
    }
    const whole = path.join(dir.path, 'contentless-whole.db');
    await repo.restore({ id: record.id }, { to: whole });
    assert.equal(sqliteQuery(whole, "SELECT rowid FROM fc WHERE fc MATCH 'alpha'"), '1');
  });

  it('says when a restored table\'s triggers or external content use a table the restore leaves out and the target lacks, unless the backup lacked it too', async () => {
    const source = path.join(dir.path, 'references.db');
    sqlite3Script(
      source,
      [
        'CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL, note TEXT)',
        'CREATE TABLE audit (order_id INTEGER, at TEXT)',
        'CREATE TRIGGER orders_deleted AFTER DELETE ON orders BEGIN INSERT INTO audit VALUES (old.id, 1); END',
        'CREATE TRIGGER orders_noted AFTER UPDATE OF note ON orders BEGIN INSERT INTO AUDIT VALUES (new.id, 2); END',
        'CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT)',
        "CREATE VIRTUAL TABLE docs_fts USING fts5(body, content='docs', content_rowid='id')",
        "INSERT INTO orders VALUES (1, 9.5, 'a'), (2, 3.25, 'b'); INSERT INTO docs VALUES (1, 'alpha'); INSERT INTO docs_fts (rowid, body) VALUES (1, 'alpha')",
        // A trigger that the source itself cannot fire (its table is long gone): restored as it was.
        'CREATE TABLE legacy (x); INSERT INTO legacy VALUES (1)',
        'CREATE TRIGGER legacy_gone AFTER INSERT ON legacy BEGIN DELETE FROM dropped_long_ago; END',
      ].join(';\n') + ';',
    );
    const repo = await repository();
    const record = await repo.backup(source, { database: 'references' });
    /** The warnings a table restore emits (the CLI prints them on stderr). */
    const restoreSaying = (tables: string[], name: string, force = false): Promise<string[]> =>
      warningsDuring('STRATA_TABLES_INCOMPLETE', () => repo.restore({ id: record.id }, { to: path.join(dir.path, name), tables, force }));
    assert.deepEqual(await restoreSaying(['orders'], 'references-orders.db'), [
      'restore: UPDATE on orders fires a trigger that uses AUDIT; DELETE on orders fires a trigger that uses audit, which this restore did not bring back and the target database lacks: each fails with "no such table" until it is there (restore it too, e.g. --tables orders,audit)',
    ]);
    assert.equal(sqliteQuery(path.join(dir.path, 'references-orders.db'), 'SELECT count(*) FROM orders'), '2', 'the rows asked for are restored');
    assert.deepEqual(await restoreSaying(['docs_fts'], 'references-fts.db'), [
      'restore: docs_fts reads its content from docs, which this restore did not bring back and the target database lacks: each fails with "no such table" until it is there (restore it too, e.g. --tables docs_fts,docs)',
    ]);
    // With what they use, or into a database that has it, nothing is said, and they work.
    assert.deepEqual(await restoreSaying(['orders', 'audit', 'docs_fts', 'docs'], 'references-together.db'), []);
    const together = path.join(dir.path, 'references-together.db');
    sqliteQuery(together, 'DELETE FROM orders WHERE id = 2');
    assert.equal(sqliteQuery(together, 'SELECT order_id FROM audit'), '2');
    assert.equal(sqliteQuery(together, "SELECT rowid FROM docs_fts WHERE docs_fts MATCH 'alpha'"), '1');
    const existing = path.join(dir.path, 'references-existing.db');
    sqlite3Script(existing, 'CREATE TABLE audit (order_id INTEGER, at TEXT);');
    assert.deepEqual(await restoreSaying(['orders'], 'references-existing.db', true), []);
    // What the source itself lacked is not this restore's doing.
    assert.deepEqual(await restoreSaying(['legacy'], 'references-legacy.db'), []);
    assert.equal(sqliteQuery(path.join(dir.path, 'references-legacy.db'), "SELECT name FROM sqlite_schema WHERE type = 'trigger'"), 'legacy_gone');
  });

  it('a table restore over an existing database says which of its indexes and triggers on the replaced tables the backup lacks, with their statements', async () => {
    const source = path.join(dir.path, 'own-objects.db');
    sqlite3Script(source, 'CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); CREATE INDEX customers_name ON customers (name); CREATE TABLE kv (k, v); CREATE TRIGGER moved AFTER INSERT ON kv BEGIN SELECT 1; END; INSERT INTO customers VALUES (1, \'a\');');
    const repo = await repository();
    const record = await repo.backup(source, { database: 'own-objects' });
    const target = path.join(dir.path, 'own-objects-target.db');
    copyFileSync(source, target);
    const audit = "CREATE TRIGGER audit_kv AFTER DELETE ON customers BEGIN INSERT INTO kv VALUES ('deleted ' || old.id, 1); END";
    // `moved`: the backup's trigger of that name is on another table, so the restore does not bring it back here.
    const moved = 'CREATE TRIGGER moved AFTER INSERT ON customers BEGIN SELECT 2; END';
    sqlite3Script(target, `CREATE INDEX idx_name_id ON customers (name, id); ${audit}; CREATE INDEX kv_k ON kv (k); DROP TRIGGER moved; ${moved};`);
    const said = await warningsDuring('STRATA_TABLES_REPLACED', () => repo.restore({ id: record.id }, { to: target, tables: ['customers'], force: true }));
    assert.deepEqual(said, [
      `restore: these objects of ${target} are not in the backup and went with the table(s) this restore replaced: index idx_name_id on customers (CREATE INDEX idx_name_id ON customers (name, id)); trigger audit_kv on customers (${audit}); trigger moved on customers (${moved}). Run a statement again to have its object back`,
    ]);
    // The backup's own index is back, and the other table's index was never touched.
    assert.equal(sqliteQuery(target, "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema WHERE type IN ('index', 'trigger') ORDER BY name)"), 'customers_name,kv_k');
  });

  it("a table restore brings the table's query planner statistics back with its rows, and keeps the other tables'", async () => {
    const source = path.join(dir.path, 'analyzed.db');
    const build = new Database(source);
    build.exec(`CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, customer INT);
      CREATE INDEX orders_status ON orders (status);
      WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 3000)
      INSERT INTO orders (status, customer) SELECT CASE WHEN value % 50 = 0 THEN 'open' ELSE 'done' END, value % 300 FROM n;
      CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); CREATE INDEX notes_body ON notes (body);
      INSERT INTO notes (body) SELECT 'n' || id FROM orders WHERE id <= 200;
      ANALYZE;`);
    const statsOf = (file: string, table: string): unknown[] => {
      const db = new Database(file, { readonly: true });
      try {
        const one = db.prepare('SELECT idx, stat FROM sqlite_stat1 WHERE tbl = ? ORDER BY idx').all(table);
        const four = db.prepare('SELECT idx, neq, nlt, ndlt, hex(sample) AS sample FROM sqlite_stat4 WHERE tbl = ? ORDER BY idx, sample').all(table);
        return [one, four];
      } finally {
        db.close();
      }
    };
    const backedUp = statsOf(source, 'orders');
    assert.equal((backedUp[0] as unknown[]).length, 1, 'the source was analyzed');
    build.close();
    const repo = await repository();
    const record = await repo.backup(source, { database: 'analyzed' });

    // An analyzed target whose orders table holds other rows: its statistics become the backup's, notes' stay.
    const target = path.join(dir.path, 'analyzed-target.db');
    const other = new Database(target);
    other.exec(`CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, customer INT); CREATE INDEX orders_status ON orders (status);
      INSERT INTO orders (status) VALUES ('done'), ('done');
      CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); CREATE INDEX notes_body ON notes (body); INSERT INTO notes (body) VALUES ('x'), ('y');
      ANALYZE;`);
    other.close();
    const notesBefore = statsOf(target, 'notes');
    await repo.restore({ id: record.id }, { to: target, tables: ['orders'], force: true });
    assert.deepEqual(statsOf(target, 'orders'), backedUp);
    assert.deepEqual(statsOf(target, 'notes'), notesBefore);

    // A target that was never analyzed gets the statistics tables, holding the restored table's rows only.
    const fresh = path.join(dir.path, 'analyzed-fresh.db');
    await repo.restore({ id: record.id }, { to: fresh, tables: ['orders'] });
    assert.deepEqual(statsOf(fresh, 'orders'), backedUp);
    assert.equal(sqliteQuery(fresh, 'SELECT count(*) FROM sqlite_stat1 WHERE tbl <> \'orders\''), '0');
    assert.equal(sqliteQuery(fresh, 'PRAGMA integrity_check'), 'ok');
  });

  it("a table restore keeps each row's language of an FTS4 table with a languageid column (a hidden column, which queries name to find the row)", async () => {
    const source = path.join(dir.path, 'fts4-language.db');
    const build = new Database(source);
    build.exec(`CREATE VIRTUAL TABLE g USING fts4(body, languageid="lid"); INSERT INTO g (body, lid) VALUES ('hello', 1), ('world', 2);
      CREATE VIRTUAL TABLE h USING fts4(body, languageid=lang); INSERT INTO h (body, lang) VALUES ('bonjour', 7);`);
    build.close();
    const repo = await repository();
    const record = await repo.backup(source, { database: 'fts4-language' });
    const target = path.join(dir.path, 'fts4-language-restored.db');
    await repo.restore({ id: record.id }, { to: target, tables: ['g', 'h'] });
    assert.equal(sqliteQuery(target, 'SELECT docid, lid FROM g ORDER BY docid'), '1|1\n2|2');
    assert.equal(sqliteQuery(target, "SELECT body FROM g WHERE g MATCH 'hello' AND lid = 1"), 'hello');
    assert.equal(sqliteQuery(target, 'SELECT body, lang FROM h'), 'bonjour|7');
    await repo.close();
  });

  it("verify passes a faithful backup of FTS4 tables whose index SQLite's integrity check faults in the source too (contentless, external content changed since)", async () => {
    const source = path.join(dir.path, 'fts4-check.db');
    const build = new Database(source);
    build.exec(`CREATE VIRTUAL TABLE cl USING fts4(content='', a); INSERT INTO cl (docid, a) VALUES (1, 'x y');
      CREATE TABLE docs (id INTEGER PRIMARY KEY, b TEXT); CREATE VIRTUAL TABLE ext4 USING fts4(content='docs', b);
      INSERT INTO docs VALUES (1, 'alpha'); INSERT INTO ext4 (docid, b) VALUES (1, 'alpha'); UPDATE docs SET b = 'beta';`);
    // The source's own check says what verify's would say of the copy.
    assert.notDeepEqual(build.pragma('integrity_check'), [{ integrity_check: 'ok' }]);
    build.close();
    const repo = await repository();
    const record = await repo.backup(source, { database: 'fts4-check' });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    await repo.close();
  });

  it("a table restore brings an FTS5 table's settings (rank, automerge, ...) back with it, into a new file and over the target's own, for external-content tables too", async () => {
    const source = path.join(dir.path, 'fts-settings.db');
    const build = new Database(source);
    build.exec(`CREATE VIRTUAL TABLE f USING fts5(t, tokenize='porter ascii', prefix='2 3');
      INSERT INTO f (f, rank) VALUES ('rank', 'bm25(10.0)'), ('automerge', 2), ('crisismerge', 20), ('usermerge', 5), ('pgsz', 2000), ('secure-delete', 1);
      INSERT INTO f VALUES ('running runners'), ('jumped'), ('runs and jumps');
      CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT);
      CREATE VIRTUAL TABLE docs_fts USING fts5(body, content='docs', content_rowid='id');
      INSERT INTO docs_fts (docs_fts, rank) VALUES ('rank', 'bm25(2.5)'), ('deletemerge', 25);
      INSERT INTO docs VALUES (1, 'alpha beta'), (2, 'beta gamma');
      INSERT INTO docs_fts (rowid, body) SELECT id, body FROM docs;`);
    build.close();
    /** A table's settings as FTS5 stored them, each with its SQL type (FTS5 refuses `automerge` as a real). */
    const settingsOf = (file: string, table: string): unknown[] => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare(`SELECT k, v, typeof(v) AS type FROM "${table}_config" ORDER BY k`).all();
      } finally {
        db.close();
      }
    };
    const backedUp = { f: settingsOf(source, 'f'), docs_fts: settingsOf(source, 'docs_fts') };
    assert.equal(backedUp.f.length, 7, 'the six settings and the version');
    const repo = await repository();
    const record = await repo.backup(source, { database: 'fts-settings' });
    const fresh = path.join(dir.path, 'fts-settings-fresh.db');
    await repo.restore({ id: record.id }, { to: fresh, tables: ['f', 'docs_fts', 'docs'] });
    // A fresh table of the module starts with only `version`: the settings must come from the backup.
    assert.deepEqual(settingsOf(fresh, 'f'), backedUp.f);
    assert.deepEqual(settingsOf(fresh, 'docs_fts'), backedUp.docs_fts);
    // The rank function takes effect: the query uses the restored table's bm25 weights, as the source's does.
    const ranked = "SELECT rowid, round(rank, 6) FROM f WHERE f MATCH 'run' ORDER BY rank";
    assert.equal(sqliteQuery(fresh, ranked), sqliteQuery(source, ranked));
    sqliteQuery(fresh, "INSERT INTO f (f) VALUES ('integrity-check'); INSERT INTO docs_fts (docs_fts) VALUES ('integrity-check')");
    // Over an existing database whose tables have settings of their own: the backup's replace them.
    const existing = path.join(dir.path, 'fts-settings-existing.db');
    copyFileSync(source, existing);
    sqliteQuery(existing, "INSERT INTO f (f, rank) VALUES ('rank', 'bm25(1.0)'); INSERT INTO f (f, rank) VALUES ('automerge', 8); INSERT INTO f (f, rank) VALUES ('pgsz', 4000); INSERT INTO docs_fts (docs_fts, rank) VALUES ('rank', 'bm25(7.0)');");
    assert.notDeepEqual(settingsOf(existing, 'f'), backedUp.f);
    await repo.restore({ id: record.id }, { to: existing, tables: ['f', 'docs_fts'], force: true });
    assert.deepEqual(settingsOf(existing, 'f'), backedUp.f);
    assert.deepEqual(settingsOf(existing, 'docs_fts'), backedUp.docs_fts);
    assert.equal(sqliteQuery(existing, ranked), sqliteQuery(source, ranked));
    assert.equal(sqliteQuery(existing, 'PRAGMA integrity_check'), 'ok');
  });

  it('a table restore names the FTS5 settings of the backup that this SQLite does not accept, and carries the others', async () => {
    const source = path.join(dir.path, 'fts-unknown-setting.db');
    // The sqlite3 tool lets a shadow table be written, as a newer SQLite with a setting this one lacks would write it.
    sqlite3Script(source, "CREATE VIRTUAL TABLE f USING fts5(t); INSERT INTO f (f, rank) VALUES ('rank', 'bm25(3.0)'); INSERT INTO f_config VALUES ('from-the-future', 1); INSERT INTO f VALUES ('alpha');");
    const repo = await repository();
    const record = await repo.backup(source, { database: 'fts-unknown-setting' });
    const fresh = path.join(dir.path, 'fts-unknown-setting-fresh.db');
    const said = await warningsDuring('STRATA_TABLES_SETTINGS', () => repo.restore({ id: record.id }, { to: fresh, tables: ['f'] }));
    assert.equal(said.length, 1);
    assert.match(said[0]!, /^restore: SQLite [\d.]+ does not accept these settings of the backup's full-text tables, so the restored tables have its defaults for them: f\.from-the-future = 1 \(/);
    assert.equal(sqliteQuery(fresh, 'SELECT k, v FROM f_config ORDER BY k'), 'rank|bm25(3.0)\nversion|4');
    assert.equal(sqliteQuery(fresh, "SELECT count(*) FROM f WHERE f MATCH 'alpha'"), '1');
  });

  for (const [journal, encoding] of [['delete', 'UTF-16be'], ['wal', 'UTF-16le']] as const) {
    it(`a table restore into a new file keeps the backup's page size, auto-vacuum mode, text encoding and application_id, not its user_version (a ${journal === 'wal' ? 'WAL' : 'rollback-journal'} database)`, async () => {
      const source = path.join(dir.path, `header-${journal}.db`);
      // None of them SQLite's defaults (4096, NONE, UTF-8, 0, 0), so a restore that forgets them is seen.
      sqlite3Script(
        source,
        `PRAGMA page_size = 1024; PRAGMA auto_vacuum = INCREMENTAL; PRAGMA encoding = '${encoding}'; PRAGMA journal_mode = ${journal.toUpperCase()};
         CREATE TABLE t (x); CREATE TABLE other (y); INSERT INTO t VALUES (1), (2); INSERT INTO other VALUES (3);
         PRAGMA user_version = 17; PRAGMA application_id = 1234567;`,
      );
      const header = 'PRAGMA page_size; PRAGMA auto_vacuum; PRAGMA encoding; PRAGMA user_version; PRAGMA application_id; PRAGMA journal_mode';
      assert.equal(sqliteQuery(source, header), `1024\n2\n${encoding}\n17\n1234567\n${journal}`);
      const repo = await repository();
      const record = await repo.backup(source, { database: `header-${journal}` });
      const fresh = path.join(dir.path, `header-${journal}-fresh.db`);
      await repo.restore({ id: record.id }, { to: fresh, tables: ['t'] });
      // user_version 0: the file holds only t, not the schema that version 17 names.
      assert.equal(sqliteQuery(fresh, header), `1024\n2\n${encoding}\n0\n1234567\n${journal}`);
      assert.equal(sqliteQuery(fresh, 'SELECT x FROM t ORDER BY x'), '1\n2');
      assert.equal(sqliteQuery(fresh, 'PRAGMA integrity_check'), 'ok');
      // An existing database keeps its own: a table restore replaces tables, not the file's settings.
      const existing = path.join(dir.path, `header-${journal}-existing.db`);
      sqlite3Script(existing, `PRAGMA encoding = '${encoding}'; CREATE TABLE t (x); PRAGMA user_version = 3;`);
      await repo.restore({ id: record.id }, { to: existing, tables: ['t'], force: true });
      assert.equal(sqliteQuery(existing, header), `4096\n0\n${encoding}\n3\n0\ndelete`);
      assert.equal(sqliteQuery(existing, 'SELECT x FROM t ORDER BY x'), '1\n2');
      // A UTF-8 file whose tables were all dropped still says UTF-8 in its header: refused, not written in the backup's encoding.
      const emptied = path.join(dir.path, `header-${journal}-emptied.db`);
      sqlite3Script(emptied, 'CREATE TABLE z (a); DROP TABLE z;');
      const before = readFileSync(emptied);
      await assert.rejects(repo.restore({ id: record.id }, { to: emptied, tables: ['t'], force: true }), (err: unknown) => isStrataError(err) && /UTF-8/.test(err.message));
      assert.deepEqual(readFileSync(emptied), before);
    });
  }

  describe('a table restore into a database another connection is writing to', () => {
    /**
     * A sqlite3 process holding `file`'s write lock for `seconds` (an application's open write
     * transaction, adding a row to log), then committing it; resolves once it holds the lock.
     */
    async function holdWriteLock(file: string, seconds: number): Promise<{ holder: ChildProcess; exited: Promise<number | null> }> {
      // In a process group of its own, so that stopping it stops its sleep too.
      const holder = spawn('sqlite3', [file], { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
      const exited = new Promise<number | null>((resolve) => holder.on('exit', (code) => resolve(code)));
      holder.stdin!.end(`BEGIN IMMEDIATE;\nINSERT INTO log (message) VALUES ('written beside the restore');\n.print holding\n.shell sleep ${seconds}\nCOMMIT;\n`);
      let said = '';
      holder.stderr!.on('data', (d: Buffer) => (said += d.toString()));
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.on('data', (d: Buffer) => d.toString().includes('holding') && resolve());
        void exited.then((code) => reject(new Error(`sqlite3 ended (${code}) before it held the lock: ${said}`)));
      });
      return { holder, exited };
    }

    const stop = (holder: ChildProcess): void => {
      if (holder.exitCode === null) process.kill(-holder.pid!, 'SIGKILL');
    };

    async function backedUp(wal = true): Promise<{ repo: Awaited<ReturnType<typeof repository>>; id: string; target: string; books: string }> {
      const source = path.join(dir.path, 'app.db');
      buildRichDatabase(source, { rows: 20, wal });
      const repo = await repository();
      const record = await repo.backup(source, { database: 'app' });
      const target = path.join(dir.path, 'target.db');
      await repo.restore({ id: record.id }, { to: target });
      const books = sqliteQuery(target, 'SELECT * FROM books ORDER BY id');
      sqlite3Script(target, 'DELETE FROM books WHERE id > 10;');
      return { repo, id: record.id, target, books };
    }

    it('waits for the write transaction to end, longer than a moment (--table-lock-wait), and keeps what it wrote', async function () {
      this.timeout(120_000);
      const { repo, id, target, books } = await backedUp();
      // Longer than the engine's own 5 s wait for a moment's lock, which is all a table restore
      // waited before, with time to spare for the restore's own work before it asks for the lock.
      const { holder, exited } = await holdWriteLock(target, 12);
      try {
        await repo.restore({ id }, { to: target, tables: ['books'], force: true, lockWaitSeconds: 60 });
        assert.equal(await exited, 0, "the application's transaction committed");
      } finally {
        stop(holder);
      }
      assert.equal(sqliteQuery(target, 'SELECT * FROM books ORDER BY id'), books, 'the table is the backup\'s');
      assert.equal(sqliteQuery(target, "SELECT count(*) FROM log WHERE message = 'written beside the restore'"), '1', 'the row the application wrote meanwhile is kept');
      assert.equal(sqliteQuery(target, 'PRAGMA integrity_check'), 'ok');
    });

    it('gives up after --table-lock-wait with DATABASE_LOCKED naming the process that holds it, and changes nothing (a rollback-journal database)', async function () {
      this.timeout(120_000);
      const { repo, id, target } = await backedUp(false);
      assert.equal(sqliteQuery(target, 'PRAGMA journal_mode'), 'delete');
      const before = sqliteDump(target);
      const { holder } = await holdWriteLock(target, 600);
      try {
        await assert.rejects(repo.restore({ id }, { to: target, tables: ['books'], force: true, lockWaitSeconds: 1 }), (err: unknown) => {
          assert.ok(err instanceof StrataError && err.code === 'DATABASE_LOCKED', String(err));
          assert.match(err.message, new RegExp(`held its write lock for 1 s \\(open in pid ${holder.pid} \\(sqlite3\\)\\).*--table-lock-wait.*nothing was changed`));
          return true;
        });
      } finally {
        stop(holder);
      }
      assert.equal(sqliteDump(target), before);
    });

    it('a cancelled restore stops waiting at once and changes nothing', async function () {
      this.timeout(120_000);
      const { repo, id, target } = await backedUp();
      const before = sqliteDump(target);
      const { holder } = await holdWriteLock(target, 600);
      const cancel = new AbortController();
      try {
        const restoring = repo.restore({ id }, { to: target, tables: ['books'], force: true, lockWaitSeconds: 3600, signal: cancel.signal });
        // Late enough that the restore is waiting for the lock by then, on all but a very slow machine.
        setTimeout(() => cancel.abort(), 5000);
        await assert.rejects(restoring, (err: unknown) => err instanceof StrataError && err.code === 'ABORTED');
      } finally {
        stop(holder);
      }
      assert.equal(sqliteDump(target), before);
    });
  });

  it('a table restore keeps the rowids of a table that has a column named rowid', async () => {
    const source = path.join(dir.path, 'rowid-column.db');
    sqlite3Script(source, "CREATE TABLE rr (rowid TEXT, x TEXT); INSERT INTO rr (oid, rowid, x) VALUES (10, 'r10', 'a'), (20, 'r20', 'b');");
    const repo = await repository();
    const record = await repo.backup(source, { database: 'rowid-column' });
    const target = path.join(dir.path, 'rowid-column-out.db');
    await repo.restore({ id: record.id }, { to: target, tables: ['rr'] });
    assert.equal(sqliteQuery(target, 'SELECT oid, rowid, x FROM rr ORDER BY oid'), '10|r10|a\n20|r20|b');
  });

  it('rows the source holds in violation of its foreign keys (written with them off) pass verify and restore as tables, as they were', async () => {
    const source = path.join(dir.path, 'violations.db');
    sqlite3Script(
      source,
      `CREATE TABLE p (id INTEGER PRIMARY KEY);
       CREATE TABLE c (id INTEGER PRIMARY KEY, pid INT REFERENCES p(id));
       INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1), (2, 99);
       CREATE TABLE loose (id, name);
       CREATE TABLE tied (id INTEGER PRIMARY KEY, name REFERENCES loose(name));
       INSERT INTO loose VALUES (1, 'a'); INSERT INTO tied VALUES (1, 'a');`,
    );
    const repo = await repository();
    const record = await repo.backup(source, { database: 'violations' });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    const data = report!.checks.find((c) => c.name === 'data-consistency')!;
    assert.match(data.reason ?? '', /1 foreign key violation, as the backed-up rows had/);
    const target = path.join(dir.path, 'violations-out.db');
    await repo.restore({ id: record.id }, { to: target, tables: ['c', 'p'] });
    assert.equal(sqliteQuery(target, 'SELECT id, pid FROM c ORDER BY id'), '1|1\n2|99');
    // A foreign key to a column without a unique index cannot be checked: the tables still restore.
    await repo.restore({ id: record.id }, { to: target, tables: ['tied', 'loose'], force: true });
    assert.equal(sqliteQuery(target, 'SELECT tied.id, loose.name FROM tied JOIN loose USING (name)'), '1|a');
    // A restore that would add a violation the backup lacks is still refused.
    const live = path.join(dir.path, 'violations-live.db');
    copyFileSync(source, live);
    sqlite3Script(live, 'INSERT INTO p VALUES (7); INSERT INTO c VALUES (3, 7);');
    await assert.rejects(
      repo.restore({ id: record.id }, { to: live, tables: ['p'], force: true }),
      (err: unknown) => err instanceof StrataError && err.code === 'USAGE' && /break 1 foreign key reference/.test(err.message),
    );
  });
});
