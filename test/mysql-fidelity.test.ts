import assert from 'node:assert/strict';
import { cpSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { MysqlEngine, Passphrase, initRepository, isStrataError, openRepository } from '@strata/sdk';
import type { Repository } from '@strata/sdk';
import { ROOT, json, strata, useTempDir } from './helpers/env.js';
import { MysqlDatabases, mysqlDump, mysqlQuery, mysqlUrl, privateMariadb, requireMysql } from './helpers/mysql.js';
import { FULL_MARIADB_SQL } from './helpers/rich-mysql.js';

const engine = new MysqlEngine();

/** CHECKSUM TABLE of every table with rows (the server's own checksum, independent of Strata and mysqldump). */
async function checksums(database: string): Promise<Record<string, string>> {
  const tables = (await mysqlQuery(
    undefined,
    `SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = '${database}' AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME`,
  )) as { t: string }[];
  const out: Record<string, string> = {};
  for (const { t } of tables) {
    const [row] = (await mysqlQuery(database, `CHECKSUM TABLE \`${t}\` EXTENDED`)) as { Checksum: string | number | null }[];
    out[t] = String(row!.Checksum);
  }
  return out;
}

async function rows(database: string | undefined, sql: string): Promise<unknown[]> {
  return (await mysqlQuery(database, sql)) as unknown[];
}

describe('MySQL/MariaDB fidelity', function () {
  const dir = useTempDir();
  const databases = new MysqlDatabases();
  const passphrase = new Passphrase('mysql fidelity');
  let repo: Repository;

  before(async function () {
    await requireMysql(this);
  });

  beforeEach(async () => {
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    repo = await openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
  });

  afterEach(async () => {
    await repo.close();
    await databases.dropAll();
  });

  it('oracle: every type and object kind of MariaDB 10.11 comes back as mysqldump, CHECKSUM TABLE and the history show it, and verifies', async function () {
    this.timeout(300_000);
    const source = await databases.create(FULL_MARIADB_SQL);
    const record = await repo.backup(mysqlUrl(source), { database: 'full' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.equal(mysqlDump(target), mysqlDump(source));
    assert.deepEqual(await checksums(target), await checksums(source));
    for (const [table, period] of [['prices', 'ROW_START, ROW_END'], ['stock', 'valid_from, valid_to']] as const) {
      const history = `SELECT *, ${period} FROM ${table} FOR SYSTEM_TIME ALL ORDER BY 1, ${period}`;
      assert.deepEqual(await rows(target, history), await rows(source, history), `history of ${table}`);
    }
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    assert.match(report!.checks.find((c) => c.name === 'data-consistency')!.reason ?? '', /foreign keys check out/);
  });

  it("MariaDB's packages (sql_mode ORACLE) come back with their bodies, replace the target's, and count in verify's schema", async function () {
    const body = (value: number): string => `SET SESSION sql_mode = 'ORACLE';
      CREATE PACKAGE pkg AS FUNCTION f RETURN INT; END;
      CREATE PACKAGE BODY pkg AS FUNCTION f RETURN INT AS BEGIN RETURN ${value}; END; END;`;
    const source = await databases.create(`CREATE TABLE t (id INT PRIMARY KEY); ${body(42)}`);
    const record = await repo.backup(mysqlUrl(source), { database: 'packages' });
    const call = async (db: string): Promise<unknown[]> => rows(db, "SET SESSION sql_mode = 'ORACLE'; SELECT pkg.f() AS v");
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.deepEqual((await call(target)).at(-1), [{ v: 42 }]);
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    // Over a database whose package is another: the backup's replaces it.
    const other = await databases.create(`CREATE TABLE t (id INT PRIMARY KEY); ${body(7)}`);
    await repo.restore({ id: record.id }, { to: mysqlUrl(other), force: true });
    assert.deepEqual((await call(other)).at(-1), [{ v: 42 }]);
    // A body that differs, or none, is another schema to verify.
    const objects = async (db: string) => (await engine.inspect(mysqlUrl(db))).schemaObjects;
    const changed = await databases.create(`CREATE TABLE t (id INT PRIMARY KEY); ${body(43)}`);
    const none = await databases.create('CREATE TABLE t (id INT PRIMARY KEY)');
    assert.notDeepEqual(await objects(changed), await objects(source));
    assert.notDeepEqual(await objects(none), await objects(source));
  });

  it('tables of several MiB, loaded over two connections in turns, keep every row: tabs, newlines, backslashes, NUL, multibyte text, binary, history, a table without a key', async function () {
    this.timeout(300_000);
    const source = await databases.create(`
      CREATE TABLE notes (id INT PRIMARY KEY, body TEXT, raw VARBINARY(64), note VARCHAR(20));
      INSERT INTO notes SELECT seq, CONCAT('line ', seq, '\\nsecond\\\\ line\\t', REPEAT('é€😀', seq % 50), '\\0'), RANDOM_BYTES(16 + seq % 40), IF(seq % 3 = 0, NULL, '\\\\N')
        FROM seq_1_to_30000;
      INSERT INTO notes VALUES (0, REPEAT('x\\n', 30000), UNHEX('00FF0A5C09'), 'long');
      CREATE TABLE loose (a INT, b VARCHAR(200));
      INSERT INTO loose SELECT seq % 7, REPEAT(CHAR(65 + seq % 26), 100 + seq % 90) FROM seq_1_to_40000;
      CREATE TABLE prices (id INT PRIMARY KEY, price DECIMAL(10, 2), label VARCHAR(100)) WITH SYSTEM VERSIONING;
      INSERT INTO prices SELECT seq, seq / 100, REPEAT('p', 80) FROM seq_1_to_20000;
      UPDATE prices SET price = price + 1 WHERE id % 2 = 0;`);
    const record = await repo.backup(mysqlUrl(source), { database: 'turns' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.equal(mysqlDump(target), mysqlDump(source));
    assert.deepEqual(await checksums(target), await checksums(source));
    const loose = 'SELECT a, b, COUNT(*) AS n FROM loose GROUP BY a, b ORDER BY a, b';
    assert.deepEqual(await rows(target, loose), await rows(source, loose));
    const history = 'SELECT *, ROW_START, ROW_END FROM prices FOR SYSTEM_TIME ALL ORDER BY id, ROW_START';
    assert.deepEqual(await rows(target, history), await rows(source, history));
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('a 9 MiB BLOB (past half of max_allowed_packet) is backed up, restored and verified byte for byte, not as NULL', async function () {
    this.timeout(300_000);
    const source = await databases.create('CREATE TABLE b (id INT PRIMARY KEY, data LONGBLOB, txt LONGTEXT); INSERT INTO b SELECT 1, REPEAT(RANDOM_BYTES(1024), 9 * 1024), REPEAT(\'€\', 3 * 1024 * 1024);');
    const record = await repo.backup(mysqlUrl(source), { database: 'blob' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    const digest = 'SELECT LENGTH(data) AS n, SHA2(data, 256) AS h, SHA2(txt, 256) AS t FROM b';
    const [restored] = (await rows(target, digest)) as { n: number }[];
    assert.equal(restored!.n, 9 * 1024 * 1024);
    assert.deepEqual(restored, (await rows(source, digest))[0]);
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('a value larger than the target server accepts fails the restore loudly, naming table, column and max_allowed_packet, and leaves nothing', async function () {
    this.timeout(300_000);
    const source = await databases.create("CREATE TABLE docs (id INT PRIMARY KEY, body LONGBLOB); INSERT INTO docs VALUES (1, 'small'), (2, REPEAT(RANDOM_BYTES(1024), 5 * 1024));");
    const record = await repo.backup(mysqlUrl(source), { database: 'big' });
    const small = await privateMariadb(this, ['--max-allowed-packet=4M']);
    try {
      await assert.rejects(
        repo.restore({ id: record.id }, { to: small.url('restored') }),
        (err: unknown) => isStrataError(err, 'RESTORE_FAILED') && /table docs column body/.test(err.message) && /max_allowed_packet = 4194304/.test(err.message) && /SET GLOBAL max_allowed_packet/.test(err.message),
      );
      const left = (await engine.targetExists(small.url('restored'))) ? ['restored'] : [];
      const session = await import('mysql2/promise').then((m) => m.default.createConnection(small.url('mysql')));
      const [dbs] = await session.query("SHOW DATABASES LIKE 'restored%'");
      await session.end();
      assert.deepEqual([left, dbs], [[], []], 'no target and no work database left on the target server');
    } finally {
      await small.stop();
    }
  });

  it("a server whose global sql_mode quotes and pads otherwise (ANSI_QUOTES, NO_BACKSLASH_ESCAPES, PAD_CHAR_TO_FULL_LENGTH) is backed up, verified and restored as any other", async function () {
    this.timeout(300_000);
    const server = await privateMariadb(this, ['--sql-mode=ANSI_QUOTES,NO_BACKSLASH_ESCAPES,PAD_CHAR_TO_FULL_LENGTH,STRICT_TRANS_TABLES']);
    const session = await import('mysql2/promise').then((m) => m.default.createConnection({ uri: server.url('mysql'), multipleStatements: true }));
    const read = async (sql: string): Promise<unknown> => (await session.query(sql))[0];
    try {
      // Written under the server's mode: 'C:\' is three characters, "x" a name.
      await session.query(
        `CREATE DATABASE app; CREATE TABLE app.paths ("id" INT PRIMARY KEY, p VARCHAR(20) DEFAULT 'C:\\', c CHAR(5), note VARCHAR(20) COMMENT 'it''s "quoted"');
         INSERT INTO app.paths (id, c, note) VALUES (1, 'ab', 'x\\y'), (2, NULL, '');
         CREATE VIEW app.v AS SELECT CONCAT(p, '\\') AS q FROM app.paths;`,
      );
      const record = await repo.backup(server.url('app'), { database: 'modes' });
      const [report] = await repo.verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
      await repo.restore({ id: record.id }, { to: server.url('copy') });
      const state = (db: string): string => `SELECT id, p, HEX(c) AS c, note FROM ${db}.paths ORDER BY id`;
      assert.deepEqual(await read(state('copy')), await read(state('app')));
      const defaults = (db: string): string => `SELECT COLUMN_NAME AS c, COLUMN_DEFAULT AS d, COLUMN_COMMENT AS m FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '${db}' ORDER BY 1`;
      assert.deepEqual(await read(defaults('copy')), await read(defaults('app')));
      assert.deepEqual(await read('SELECT q FROM copy.v'), await read('SELECT q FROM app.v'));
    } finally {
      await session.end();
      await server.stop();
    }
  });

  it('verify creates events disabled in its scratch database, where the scheduler would run them against other databases, and restore keeps them enabled and says they run', async function () {
    this.timeout(300_000);
    const server = await privateMariadb(this, ['--event-scheduler=ON']);
    const session = await import('mysql2/promise').then((m) => m.default.createConnection({ uri: server.url('mysql'), multipleStatements: true }));
    const ticks = async (): Promise<string[]> => {
      const [found] = await session.query<import('mysql2/promise').RowDataPacket[]>('SELECT DISTINCT db FROM elsewhere.ticks ORDER BY db');
      return found.map((r) => String(r['db']));
    };
    try {
      // The application's event writes into another database, naming the database it runs in.
      await session.query(
        'CREATE DATABASE app; CREATE DATABASE elsewhere; CREATE TABLE elsewhere.ticks (db VARCHAR(200), at DATETIME(6));' +
          'CREATE TABLE app.items (id INT PRIMARY KEY, body VARCHAR(200));' +
          'INSERT INTO app.items SELECT seq, REPEAT(MD5(seq), 5) FROM seq_1_to_200000;' +
          "CREATE EVENT app.tick ON SCHEDULE EVERY 1 SECOND DO INSERT INTO elsewhere.ticks VALUES (DATABASE(), NOW(6));" +
          // A role as definer (no @host), a name with a space and a comment that reads like a status.
          'CREATE ROLE app_role; GRANT ALL ON *.* TO app_role;' +
          "CREATE DEFINER = app_role EVENT app.`role tick` ON SCHEDULE EVERY 1 SECOND COMMENT 'ON COMPLETION PRESERVE ENABLE' DO INSERT INTO elsewhere.ticks VALUES (CONCAT(DATABASE(), ' as role'), NOW(6));" +
          // A trigger whose body holds a line that starts like an event's statement.
          'USE app; CREATE TRIGGER items_bi BEFORE INSERT ON items FOR EACH ROW /*\nCREATE EVENT not_one\n*/ SET NEW.body = NEW.body;',
      );
      const deadline = Date.now() + 60_000;
      while ((await ticks()).join() !== 'app,app as role') {
        assert.ok(Date.now() < deadline, 'the event scheduler never ran the application\'s event');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const record = await repo.backup(server.url('app'), { database: 'app' });
      const [report] = await repo.verify({ id: record.id }, { level: 'full' });
      assert.deepEqual(report!.checks.map((c) => `${c.name} ${c.status}`), ['file-accessibility passed', 'checksum-match passed', 'database-readable passed', 'schema-integrity passed', 'data-consistency passed'], JSON.stringify(report!.checks));
      // A scratch event that ran would have written its own database's name.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.deepEqual(await ticks(), ['app', 'app as role'], 'only the application\'s own events ran');

      const warnings: Error[] = [];
      const keep = (w: Error): number => warnings.push(w);
      process.on('warning', keep);
      try {
        await repo.restore({ id: record.id }, { to: server.url('app_restored') });
        await new Promise((resolve) => setImmediate(resolve));
      } finally {
        process.off('warning', keep);
      }
      const said = warnings.filter((w) => (w as Error & { code?: string }).code === 'STRATA_EVENTS_ENABLED').map((w) => w.message);
      assert.deepEqual(said, ["restore: event(s) role tick, tick restored enabled, and this server's event scheduler is on: they run in app_restored on their schedules from now on (ALTER EVENT ... DISABLE in a copy that should not act by itself)"]);
      const [events] = await session.query<import('mysql2/promise').RowDataPacket[]>('SELECT EVENT_SCHEMA AS db, EVENT_NAME AS name, STATUS AS status FROM information_schema.EVENTS ORDER BY 1, 2');
      assert.deepEqual(
        events.map((e) => `${String(e['db'])}.${String(e['name'])} ${String(e['status'])}`),
        ['app.role tick ENABLED', 'app.tick ENABLED', 'app_restored.role tick ENABLED', 'app_restored.tick ENABLED'],
        'a restore keeps the events as the backup had them',
      );
    } finally {
      await session.end().catch(() => undefined);
      await server.stop();
    }
  });

  it('triggers created with their database named (CREATE TRIGGER db.t ... ON db.items) restore into the target and verify, leaving the source alone', async function () {
    this.timeout(300_000);
    const source = await databases.create('CREATE TABLE items (id INT PRIMARY KEY, v INT)');
    // As migration tools write them: the database named, quoted or not.
    await mysqlQuery(source, `CREATE TRIGGER \`${source}\`.plus_one BEFORE INSERT ON \`${source}\`.items FOR EACH ROW SET NEW.v = NEW.v + 1`);
    await mysqlQuery(source, `CREATE TRIGGER ${source}.times_two BEFORE UPDATE ON ${source}.items FOR EACH ROW SET NEW.v = NEW.v * 2`);
    const triggersOf = async (database: string): Promise<string[]> =>
      ((await rows(undefined, `SELECT TRIGGER_NAME AS t FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '${database}' ORDER BY 1`)) as { t: string }[]).map((r) => r.t);
    const record = await repo.backup(mysqlUrl(source), { database: 'qualified' });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.deepEqual(report!.checks.map((c) => `${c.name} ${c.status}`), ['file-accessibility passed', 'checksum-match passed', 'database-readable passed', 'schema-integrity passed', 'data-consistency passed'], JSON.stringify(report!.checks));
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.deepEqual(await triggersOf(target), ['plus_one', 'times_two']);
    assert.deepEqual(await triggersOf(source), ['plus_one', 'times_two'], 'the source keeps its own triggers, and gains none');
    await mysqlQuery(target, 'INSERT INTO items VALUES (1, 1)');
    await mysqlQuery(target, 'UPDATE items SET v = v + 1');
    assert.deepEqual(await rows(target, 'SELECT id, v FROM items'), [{ id: 1, v: 6 }], 'the restored triggers act on the restored table: (1 + 1 + 1) * 2');
    assert.deepEqual(await rows(source, 'SELECT id, v FROM items'), [], 'and the source saw nothing');
  });

  it("text that names the source database inside quoted strings (a default, a comment, a view's literal) comes back as it was, beside names that are the database's and follow it", async function () {
    this.timeout(300_000);
    const source = await databases.create('CREATE TABLE parent (id INT PRIMARY KEY)');
    const named = `\`${source}\`.`;
    await mysqlQuery(source, `CREATE SEQUENCE seq START WITH 10;
      CREATE TABLE lc (id INT PRIMARY KEY DEFAULT (NEXT VALUE FOR ${named}seq), c VARCHAR(30) DEFAULT 'x${named}y' COMMENT 'see ${named}parent');
      INSERT INTO lc (c) VALUES ('row');
      CREATE VIEW v_lit AS SELECT 'from ${named}parent' AS note, (SELECT count(*) FROM ${named}parent) AS n;`);
    const record = await repo.backup(mysqlUrl(source), { database: 'literals' });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    const column = async (database: string): Promise<unknown[]> =>
      rows(undefined, `SELECT COLUMN_NAME AS c, COLUMN_DEFAULT AS d, COLUMN_COMMENT AS comment FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '${database}' AND TABLE_NAME = 'lc' ORDER BY 1`);
    assert.deepEqual(await column(target), [
      { c: 'c', d: `'x${named}y'`, comment: `see ${named}parent` },
      { c: 'id', d: `nextval(\`${target}\`.\`seq\`)`, comment: '' },
    ], 'the text default and the comment keep the source name; the sequence default follows the database');
    assert.deepEqual(await rows(target, 'SELECT * FROM v_lit'), [{ note: `from ${named}parent`, n: 0 }]);
    await mysqlQuery(target, "INSERT INTO lc () VALUES ()");
    assert.deepEqual(await rows(target, 'SELECT c FROM lc ORDER BY id'), [{ c: 'row' }, { c: `x${named}y` }], 'a new row takes the default as the source wrote it');
  });

  it('a table whose ENUM members differ only in trailing spaces (which the server keeps as duplicates, created outside strict mode) is restored and verified', async function () {
    this.timeout(300_000);
    const source = await databases.create(`SET SESSION sql_mode = ''; CREATE TABLE sets (id INT PRIMARY KEY, e ENUM('', ' ', 'x y')); INSERT INTO sets VALUES (1, 'x y'), (2, '')`);
    const record = await repo.backup(mysqlUrl(source), { database: 'enum-spaces' });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.equal(mysqlDump(target), mysqlDump(source));
    assert.deepEqual(await checksums(target), await checksums(source));
    // And a table restore, which builds the table from the target's own definition.
    await mysqlQuery(target, 'DELETE FROM sets');
    await repo.restore({ id: record.id }, { to: mysqlUrl(target), tables: ['sets'], force: true });
    assert.deepEqual(await checksums(target), await checksums(source));
  });

  it("text of character sets with several byte sequences for one character (cp932's x'8790' and x'81E0', both ≒) comes back byte for byte, and the facts tell them apart", async () => {
    const sql = `CREATE TABLE jp (id INT PRIMARY KEY, v VARCHAR(10), t MEDIUMTEXT CHARACTER SET eucjpms, k CHAR(3) CHARACTER SET latin1) DEFAULT CHARSET=cp932;
      INSERT INTO jp VALUES (1, _cp932 x'8790', _eucjpms x'ADE2', 'abc'), (2, _cp932 x'FA58', NULL, NULL), (3, _cp932 x'EEF9', _eucjpms x'A2E2', '');`;
    const source = await databases.create(sql);
    const record = await repo.backup(mysqlUrl(source), { database: 'cp932' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    const bytes = 'SELECT id, HEX(v) AS v, HEX(t) AS t, k FROM jp ORDER BY id';
    assert.deepEqual(await rows(target, bytes), await rows(source, bytes));
    assert.deepEqual(await checksums(target), await checksums(source));
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    // The same characters in their other byte sequences are other facts (they were one before).
    const other = await databases.create(sql.replace("_cp932 x'8790'", "_cp932 x'81E0'"));
    const facts = async (db: string) => (await engine.inspect(mysqlUrl(db))).tables;
    assert.notDeepEqual(await facts(other), await facts(source));
  });

  it("an ENUM's empty value (stored for an invalid one outside strict mode) comes back as itself, not as a member '' and not as a refused row, a SET's second of two alike members as itself, and the facts tell them apart", async () => {
    // s: two members alike but for a trailing space, which the server keeps (as 'a' twice) outside strict mode.
    const sql = `SET SESSION sql_mode = ''; CREATE TABLE e (id INT PRIMARY KEY, e ENUM('a', 'b'), f ENUM('', 'x y') NOT NULL, note VARCHAR(5), s SET('a', 'a ', 'c'));
      INSERT INTO e VALUES (1, 'a', 'x y', 'ok', 5), (2, 'bogus', '', 'one', 2), (3, 'b', 'bogus', 'two', 0), (4, NULL, 2, NULL, NULL);`;
    // Thousands of such rows among others: they go in INSERTs of many rows, more than one.
    const many = "INSERT INTO e SELECT seq, IF(seq % 3 = 0, 'a', 'bogus'), IF(seq % 5 = 0, 'bogus', 'x y'), NULL, NULL FROM seq_10_to_12009;";
    const source = await databases.create(`${sql} ${many}`);
    const record = await repo.backup(mysqlUrl(source), { database: 'enum-empty' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    const numbers = 'SELECT id, e + 0 AS e, f + 0 AS f, note, s + 0 AS s FROM e ORDER BY id';
    assert.deepEqual(await rows(source, numbers.replace('ORDER BY', 'WHERE id < 10 ORDER BY')), [
      { id: 1, e: 1, f: 2, note: 'ok', s: 5 },
      { id: 2, e: 0, f: 1, note: 'one', s: 2 },
      { id: 3, e: 2, f: 0, note: 'two', s: 0 },
      { id: 4, e: null, f: 2, note: null, s: null },
    ]);
    assert.deepEqual(await rows(target, numbers), await rows(source, numbers));
    assert.deepEqual(await checksums(target), await checksums(source));
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    // The member '' (1) where the source has the empty value (0), and the first 'a' where it has the second, are other facts.
    const facts = async (db: string) => (await engine.inspect(mysqlUrl(db))).tables;
    for (const [from, to] of [["(3, 'b', 'bogus', 'two', 0)", "(3, 'b', '', 'two', 0)"], ["'one', 2)", "'one', 1)"]] as const) {
      const other = await databases.create(sql.replace(from, to));
      assert.notDeepEqual(await facts(other), await facts(source), to);
    }
  });

  it("the database named after a comment with a quote in it (-- don't), or after a backslash that ends a string under NO_BACKSLASH_ESCAPES, still follows the restore", async function () {
    this.timeout(300_000);
    const source = await databases.create('CREATE TABLE log (id INT PRIMARY KEY)');
    await mysqlQuery(source, `CREATE EVENT cleanup ON SCHEDULE EVERY 1 DAY DISABLE DO BEGIN
        -- don't keep rows of the future
        # nor these ('old')
        DELETE FROM \`${source}\`.log WHERE id < 0; /* it's done */ DELETE FROM \`${source}\`.log WHERE id > 1000000;
      END`);
    await mysqlQuery(source, `SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'; CREATE VIEW paths AS SELECT 'C:\\' AS p, (SELECT count(*) FROM \`${source}\`.log) AS n;
      CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY DISABLE DO BEGIN SET @dir = 'C:\\'; DELETE FROM \`${source}\`.log WHERE id < -1; END`);
    const record = await repo.backup(mysqlUrl(source), { database: 'comments' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    const definitions = async (database: string): Promise<string> =>
      JSON.stringify(await rows(undefined, `SELECT EVENT_DEFINITION AS d FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '${database}' UNION ALL SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '${database}'`));
    const restored = await definitions(target);
    assert.doesNotMatch(restored, new RegExp(source), 'nothing of the restore names the source database');
    assert.equal(restored, (await definitions(source)).replaceAll(source, target));
    assert.deepEqual(await rows(target, 'SELECT * FROM paths'), [{ p: 'C:\\', n: 0 }]);
  });

  it('system-versioned tables come back with their current and history rows, and the history keeps working', async () => {
    const source = await databases.create(
      'CREATE TABLE p (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING; INSERT INTO p VALUES (1, 1), (2, 2); UPDATE p SET v = 10 WHERE id = 1; DELETE FROM p WHERE id = 2;',
    );
    const record = await repo.backup(mysqlUrl(source), { database: 'versioned' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    const all = 'SELECT id, v, ROW_START AS s, ROW_END AS e FROM p FOR SYSTEM_TIME ALL ORDER BY id, ROW_END';
    assert.equal((await rows(source, all)).length, 3);
    assert.deepEqual(await rows(target, all), await rows(source, all));
    assert.deepEqual(await rows(target, 'SELECT id, v FROM p'), [{ id: 1, v: 10 }]);
    await mysqlQuery(target, 'UPDATE p SET v = 11');
    assert.equal((await rows(target, all)).length, 4, 'the restored table is still versioned');
  });

  it('a table versioned by transaction id is refused at backup time with UNSUPPORTED_OBJECT naming it', async () => {
    const source = await databases.create(`CREATE TABLE ok (id INT PRIMARY KEY);
      CREATE TABLE trx (id INT PRIMARY KEY, s BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE, e BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE,
        PERIOD FOR SYSTEM_TIME (s, e)) ENGINE=InnoDB WITH SYSTEM VERSIONING;`);
    await assert.rejects(repo.backup(mysqlUrl(source), { database: 'trx' }), (err: unknown) => isStrataError(err, 'UNSUPPORTED_OBJECT') && /table trx is versioned by transaction id/.test(err.message));
    assert.deepEqual((await repo.list()).map((b) => b.id), []);
  });

  it('sequences come back with their next value, and restored tables take ids from the restored sequence', async () => {
    const source = await databases.create(
      'CREATE SEQUENCE ids START WITH 100 INCREMENT BY 10 CACHE 5; CREATE TABLE t (id INT PRIMARY KEY DEFAULT NEXT VALUE FOR ids, v INT); INSERT INTO t (v) VALUES (1), (2), (3);',
    );
    const record = await repo.backup(mysqlUrl(source), { database: 'seq' });
    const state = 'SELECT next_not_cached_value AS next FROM ids';
    const before = await rows(source, state);
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.deepEqual(await rows(target, state), before);
    await mysqlQuery(target, 'INSERT INTO t (v) VALUES (4)');
    assert.deepEqual(await rows(source, state), before, "the source's sequence is not touched by the restored table");
    const [row] = (await rows(target, 'SELECT id FROM t WHERE v = 4')) as { id: number }[];
    assert.ok(row!.id >= Number((before[0] as { next: number }).next), `id ${row!.id} comes after every id the source handed out`);
  });

  it('BIT(1)..BIT(64), FLOAT and DOUBLE come back exactly, extremes included', async () => {
    const source = await databases.create(`
      CREATE TABLE n (id INT PRIMARY KEY, b1 BIT(1), b2 BIT(2), b9 BIT(9), b63 BIT(63), b64 BIT(64), f FLOAT, d DOUBLE);
      INSERT INTO n VALUES (1, 1, 3, 511, 9223372036854775807, 18446744073709551615, -112.81857, 0.1),
        (2, 0, 0, 256, 1, 9223372036854775808, 3.4028234663852886e38, 1.7976931348623157e308),
        (3, NULL, 1, 1, 0, 1, 1.4e-45, 4.9406564584124654e-324), (4, 1, 2, 0, 4611686018427387904, 0, -1.17549435e-38, -0.30000000000000004);`);
    const record = await repo.backup(mysqlUrl(source), { database: 'numbers' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    const exact = 'SELECT id, BIN(b1) AS b1, BIN(b2) AS b2, BIN(b9) AS b9, BIN(b63) AS b63, BIN(b64) AS b64, CAST(CAST(f AS DOUBLE) AS CHAR) AS f, CAST(d AS CHAR) AS d FROM n ORDER BY id';
    const expected = await rows(source, exact);
    assert.equal((expected[0] as { f: string }).f, '-112.81857299804688');
    assert.deepEqual(await rows(target, exact), expected);
  });

  it('a column named strata_raw (once the alias of binary columns in the backup\'s SELECT) comes back as its value, not as its hex, beside binary columns', async () => {
    const source = await databases.create(`
      CREATE TABLE t (id INT PRIMARY KEY, strata_raw VARCHAR(40), n INT, b VARBINARY(8)); INSERT INTO t VALUES (1, 'hello', 1, x'00FF'), (2, NULL, 2, NULL);
      CREATE TABLE u (id INT PRIMARY KEY, strata_raw INT); INSERT INTO u VALUES (1, 5), (2, 12);
      CREATE TABLE v (strata_raw VARBINARY(8) PRIMARY KEY, note VARCHAR(10)); INSERT INTO v VALUES (x'0A09', 'tab');`);
    const record = await repo.backup(mysqlUrl(source), { database: 'raw' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    for (const sql of ['SELECT id, strata_raw, n, HEX(b) AS b FROM t ORDER BY id', 'SELECT * FROM u ORDER BY id', 'SELECT HEX(strata_raw) AS r, note FROM v']) {
      assert.deepEqual(await rows(target, sql), await rows(source, sql), sql);
    }
    assert.deepEqual(await rows(target, 'SELECT strata_raw FROM u ORDER BY id'), [{ strata_raw: 5 }, { strata_raw: 12 }]);
  });

  it('a MERGE table is backed up and restored as its definition only: its MyISAM tables keep their rows exactly, and verify passes without writing through it', async function () {
    this.timeout(120_000);
    const source = await databases.create(`CREATE TABLE t1 (id INT NOT NULL, v VARCHAR(10), KEY (id)) ENGINE=MyISAM; CREATE TABLE t2 (id INT NOT NULL, v VARCHAR(10), KEY (id)) ENGINE=MyISAM;
      CREATE TABLE m (id INT NOT NULL, v VARCHAR(10), KEY (id)) ENGINE=MRG_MyISAM UNION=(t1, t2) INSERT_METHOD=LAST;
      INSERT INTO t1 VALUES (1, 'a'), (2, 'b'); INSERT INTO t2 VALUES (3, 'c');`);
    const record = await repo.backup(mysqlUrl(source), { database: 'merge' });
    const all = { t1: 'SELECT * FROM t1 ORDER BY id', t2: 'SELECT * FROM t2 ORDER BY id', m: 'SELECT * FROM m ORDER BY id' };
    const expected: Record<string, unknown[]> = {};
    for (const [t, sql] of Object.entries(all)) expected[t] = await rows(source, sql);
    assert.equal(expected['m']!.length, 3);
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    for (const [t, sql] of Object.entries(all)) assert.deepEqual(await rows(target, sql), expected[t], `restored ${t}`);
    assert.equal(mysqlDump(target, ['--no-data']), mysqlDump(source, ['--no-data']));
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    for (const [t, sql] of Object.entries(all)) assert.deepEqual(await rows(source, sql), expected[t], `source ${t} after verify`);

    // A backup made before facts version 5 carries the rows read through m and its facts: the
    // restore leaves that stream out, and a restored copy is measured with m's facts for it.
    const snapshot = await engine.snapshot(mysqlUrl(source), { schemaOnly: false, tempDir: path.join(dir.path, 'tmp') });
    const old = databases.name();
    try {
      assert.deepEqual(snapshot.streams.map((s) => s.name).sort(), ['t1.rows', 't2.rows']);
      const session = await engine.beginRestore(mysqlUrl(old), { force: false, tempDir: path.join(dir.path, 'tmp') });
      await session.prepare!(snapshot.schemaSql);
      const streams = [...snapshot.streams.map((s) => ({ name: s.name, chunks: s.open() })), { name: 'm.rows', chunks: (async function* () { yield Buffer.from('1\ta\n2\tb\n3\tc\n'); })() }];
      for (const { name, chunks } of streams) {
        const sink = await session.streamTarget(name);
        if (sink.kind !== 'sink') continue;
        for await (const chunk of chunks) await sink.write(chunk);
        await sink.end();
      }
      await session.commit({ schemaOnly: false, schemaSql: snapshot.schemaSql, engineMeta: { ...snapshot.engineMeta, factsVersion: 4 }, tables: ['m', 't1', 't2'] });
    } finally {
      await snapshot.close();
    }
    for (const [t, sql] of Object.entries(all)) assert.deepEqual(await rows(old, sql), expected[t], `${t} restored from a backup of facts version 4`);
    const names = async (factsVersion?: number) => (await engine.inspect(mysqlUrl(old), factsVersion ? { recordedMeta: { factsVersion } } : {})).tables.map((t) => `${t.name}:${t.rows}`);
    assert.deepEqual(await names(4), ['m:3', 't1:2', 't2:1']);
    assert.deepEqual(await names(), ['t1:2', 't2:1']);
    // --tables naming m, which such a backup lists, is refused: its rows are t1's and t2's.
    const tableRestore = await engine.beginRestore(mysqlUrl(old), { force: true, tables: ['m'], tempDir: path.join(dir.path, 'tmp') });
    await tableRestore.prepare!(snapshot.schemaSql);
    const sink = await tableRestore.streamTarget('m.rows');
    if (sink.kind === 'sink') {
      await sink.write(Buffer.from('1\ta\n'));
      await sink.end();
    }
    await assert.rejects(
      tableRestore.commit({ schemaOnly: false, schemaSql: snapshot.schemaSql, engineMeta: { ...snapshot.engineMeta, factsVersion: 4 }, tables: ['m', 't1', 't2'] }),
      (err: unknown) => isStrataError(err, 'USAGE') && /m of the target hold no rows of their own/.test(err.message),
    );
    await tableRestore.abort();
    for (const [t, sql] of Object.entries(all)) assert.deepEqual(await rows(old, sql), expected[t], `${t} after the refused --tables m`);
  });

  it("a MERGE table over another database's table: verify and restore leave that table alone", async function () {
    this.timeout(120_000);
    const other = await databases.create("CREATE TABLE live (id INT NOT NULL, v VARCHAR(10)) ENGINE=MyISAM; INSERT INTO live VALUES (1, 'live'), (2, 'data');");
    const source = await databases.create(`CREATE TABLE m (id INT NOT NULL, v VARCHAR(10)) ENGINE=MRG_MyISAM UNION=(\`${other}\`.live) INSERT_METHOD=LAST;
      CREATE TABLE own (id INT PRIMARY KEY); INSERT INTO own VALUES (7);`);
    const record = await repo.backup(mysqlUrl(source), { database: 'merge-other' });
    const live = 'SELECT * FROM live ORDER BY id';
    const before = await rows(other, live);
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    assert.deepEqual(await rows(other, live), before, 'verify wrote nothing through the MERGE table');
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.deepEqual(await rows(other, live), before, 'the restore wrote nothing through the MERGE table');
    assert.deepEqual(await rows(target, 'SELECT * FROM m ORDER BY id'), before);
    assert.deepEqual(await rows(target, 'SELECT * FROM own'), [{ id: 7 }]);
    // --tables naming it is refused: the backup holds no rows for it.
    await assert.rejects(repo.restore({ id: record.id }, { to: mysqlUrl(target), tables: ['m'], force: true }), (err: unknown) => isStrataError(err, 'TABLE_NOT_FOUND') && /no table "m"/.test(err.message));
  });

  it('a row the target refuses fails the restore with RESTORE_FAILED naming the table', async () => {
    const target = databases.name();
    const session = await engine.beginRestore(mysqlUrl(target), { tempDir: path.join(dir.path, 'tmp'), force: false });
    await session.prepare!('-- strata: MySQL/MariaDB schema; database charset utf8mb4 collate utf8mb4_general_ci\nDELIMITER ;;\nCREATE TABLE `orders` (`id` int NOT NULL PRIMARY KEY, `n` tinyint)\n;;\nDELIMITER ;\n');
    const sink = await session.streamTarget('orders.rows');
    assert.equal(sink.kind, 'sink');
    if (sink.kind !== 'sink') return;
    await sink.write(Buffer.from('1\t5\n2\t100000\n'));
    await assert.rejects(sink.end(), (err: unknown) => isStrataError(err, 'RESTORE_FAILED') && /table orders/.test(err.message) && /Out of range/i.test(err.message));
    await session.abort();
    assert.deepEqual(await rows(undefined, `SHOW DATABASES LIKE '${target}%'`), [], 'nothing left behind');
  });

  it('triggers come back in their action order, and a different order is a named schema difference', async () => {
    const sql = `CREATE TABLE t (id INT PRIMARY KEY, v INT);
      CREATE TRIGGER z_double BEFORE INSERT ON t FOR EACH ROW SET NEW.v = NEW.v * 2;
      CREATE TRIGGER a_plus BEFORE INSERT ON t FOR EACH ROW FOLLOWS z_double SET NEW.v = NEW.v + 1;`;
    const source = await databases.create(sql);
    const record = await repo.backup(mysqlUrl(source), { database: 'triggers' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    for (const db of [source, target]) await mysqlQuery(db, 'INSERT INTO t VALUES (1, 5)');
    assert.deepEqual(await rows(target, 'SELECT v FROM t'), [{ v: 11 }]);
    // The same triggers created in name order compute something else; the facts must tell them apart.
    const alphabetical = await databases.create(`CREATE TABLE t (id INT PRIMARY KEY, v INT);
      CREATE TRIGGER a_plus BEFORE INSERT ON t FOR EACH ROW SET NEW.v = NEW.v + 1;
      CREATE TRIGGER z_double BEFORE INSERT ON t FOR EACH ROW SET NEW.v = NEW.v * 2; INSERT INTO t VALUES (1, 5);`);
    assert.deepEqual(await rows(alphabetical, 'SELECT v FROM t'), [{ v: 12 }]);
    const [a, b, c] = await Promise.all([source, target, alphabetical].map((db) => engine.inspect(mysqlUrl(db))));
    assert.equal(b!.schemaFingerprint, a!.schemaFingerprint);
    assert.notEqual(c!.schemaFingerprint, a!.schemaFingerprint);
    const differing = Object.keys(a!.schemaObjects!).filter((k) => a!.schemaObjects![k] !== c!.schemaObjects![k]).sort();
    assert.deepEqual(differing, ['trigger a_plus', 'trigger z_double']);
  });

  it('the facts are computed by the server: a FLOAT rounded to 6 digits, a BIT flipped or a BLOB NULLed changes them', async () => {
    const sql = `CREATE TABLE t (id INT PRIMARY KEY, f FLOAT, b BIT(1), data LONGBLOB);
      INSERT INTO t VALUES (1, -112.81857, 1, REPEAT('x', 100000)), (2, 1.5, 0, NULL);`;
    const source = await databases.create(sql);
    const same = await databases.create(sql);
    const facts = async (db: string) => (await engine.inspect(mysqlUrl(db))).tables;
    const original = await facts(source);
    assert.deepEqual(await facts(same), original);
    for (const change of ['UPDATE t SET f = -112.819 WHERE id = 1', 'UPDATE t SET b = 0 WHERE id = 1', 'UPDATE t SET data = NULL WHERE id = 1', "UPDATE t SET data = '' WHERE id = 1"]) {
      const copy = await databases.create(sql);
      await mysqlQuery(copy, change);
      const changed = await facts(copy);
      assert.equal(changed[0]!.rows, original[0]!.rows);
      assert.notEqual(changed[0]!.checksum, original[0]!.checksum, change);
    }
    // Rows in another order are the same content.
    const reordered = await databases.create(sql.replace('(1, -112.81857, 1, REPEAT(\'x\', 100000)), (2, 1.5, 0, NULL)', "(2, 1.5, 0, NULL), (1, -112.81857, 1, REPEAT('x', 100000))"));
    assert.deepEqual(await facts(reordered), original);
  });

  it('restore --tables into a table whose columns are of narrower types than the backup\'s is refused, naming them, before anything changes', async () => {
    const source = await databases.create(`CREATE TABLE money (id INT PRIMARY KEY, amt DECIMAL(12,4), at DATETIME(6), note VARCHAR(20), f DOUBLE);
      INSERT INTO money VALUES (1, 12.3456, '2024-01-01 10:00:00.987654', 'hello', 1.0000001), (2, -0.0049, '2024-01-01 10:00:00.5', 'x', 3.14159265358979);`);
    const record = await repo.backup(mysqlUrl(source), { database: 'narrower' });
    const target = await databases.create(`CREATE TABLE money (id INT PRIMARY KEY, amt DECIMAL(12,1), at DATETIME, note VARCHAR(20), f FLOAT);
      INSERT INTO money VALUES (9, 1.5, '2020-01-01 00:00:00', 'live', 2);`);
    const before = mysqlDump(target);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: mysqlUrl(target), tables: ['money'], force: true }),
      (err: unknown) =>
        isStrataError(err, 'USAGE') &&
        /money of the target has columns of other types than the backup's: amt decimal\(12,1\) \(the backup's decimal\(12,4\)\), at datetime \(the backup's datetime\(6\)\), f float \(the backup's double\);.*nothing was changed/.test(err.message),
    );
    assert.equal(mysqlDump(target), before);
    // With the backup's types it goes ahead, also where only the collations differ (the server then
    // writes each column's character set out) and an integer's display width is written.
    await mysqlQuery(target, 'ALTER TABLE money MODIFY id INT(4) NOT NULL, MODIFY amt DECIMAL(12,4), MODIFY at DATETIME(6), MODIFY f DOUBLE, DEFAULT COLLATE utf8mb4_bin');
    await repo.restore({ id: record.id }, { to: mysqlUrl(target), tables: ['money'], force: true });
    assert.deepEqual(await checksums(target), await checksums(source));
    // Another character set is another type: the text would be re-encoded.
    await mysqlQuery(target, 'ALTER TABLE money MODIFY note VARCHAR(20) CHARACTER SET latin1');
    await assert.rejects(
      repo.restore({ id: record.id }, { to: mysqlUrl(target), tables: ['money'], force: true }),
      (err: unknown) => isStrataError(err, 'USAGE') && /note varchar\(20\) CHARACTER SET latin1 \(the backup's varchar\(20\) CHARACTER SET utf8mb4\)/.test(err.message),
    );
  });

  it('restore --tables into a table whose column was moved is refused, also where its comment reads like a generated column\'s (AS (...) STORED) and the column with it is one', async () => {
    const comment = "COMMENT 'computed AS (price * qty), stored by the app'";
    const source = await databases.create(`CREATE TABLE orders (id INT PRIMARY KEY, total INT ${comment}, qty INT, twice INT AS (qty * 2) VIRTUAL COMMENT 'it''s \`x\` AS (y)');
      INSERT INTO orders (id, total, qty) VALUES (1, 500, 5), (2, 90, 3);`);
    const record = await repo.backup(mysqlUrl(source), { database: 'moved' });
    await mysqlQuery(source, `ALTER TABLE orders MODIFY total INT ${comment} AFTER qty`);
    const before = mysqlDump(source);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: mysqlUrl(source), tables: ['orders'], force: true }),
      (err: unknown) => isStrataError(err, 'USAGE') && /orders of the target has the columns id, qty, total, the backup's id, total, qty;.*nothing was changed/.test(err.message),
    );
    assert.equal(mysqlDump(source), before);
    // Put back in place, the generated column still out of the rows, the restore goes ahead.
    await mysqlQuery(source, `ALTER TABLE orders MODIFY total INT ${comment} AFTER id; UPDATE orders SET total = 0`);
    await repo.restore({ id: record.id }, { to: mysqlUrl(source), tables: ['orders'], force: true });
    assert.deepEqual(await rows(source, 'SELECT * FROM orders ORDER BY id'), [{ id: 1, total: 500, qty: 5, twice: 10 }, { id: 2, total: 90, qty: 3, twice: 6 }]);
  });

  it('inspect checks every foreign key row by row and names the orphans', async () => {
    const db = await databases.create(`CREATE TABLE p (id INT PRIMARY KEY); CREATE TABLE c (id INT PRIMARY KEY, a INT, b INT, FOREIGN KEY fk_c (a) REFERENCES p (id));
      INSERT INTO p VALUES (1); SET FOREIGN_KEY_CHECKS = 0; INSERT INTO c VALUES (1, 1, 0), (2, NULL, 0), (3, 7, 0), (4, 8, 0);`);
    const facts = await engine.inspect(mysqlUrl(db));
    assert.equal(facts.foreignKeysChecked, true);
    assert.deepEqual(facts.integrityErrors, ['foreign key fk_c of table c: 2 row(s) reference no row of p']);
    await mysqlQuery(db, 'DELETE FROM c WHERE id > 2');
    assert.deepEqual((await engine.inspect(mysqlUrl(db))).integrityErrors, []);
  });

  it('restore --tables swaps in the named tables: no cascade, no trigger fires, other tables untouched', async () => {
    const sql = `CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB;
      CREATE TABLE b (id INT PRIMARY KEY, a_id INT, FOREIGN KEY (a_id) REFERENCES a (id) ON DELETE CASCADE) ENGINE=InnoDB;
      CREATE TABLE m (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=MyISAM;
      CREATE TABLE log (n INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40)) ENGINE=InnoDB;
      CREATE TRIGGER a_ins AFTER INSERT ON a FOR EACH ROW INSERT INTO log (what) VALUES (CONCAT('ins ', NEW.id));
      CREATE TRIGGER a_del AFTER DELETE ON a FOR EACH ROW INSERT INTO log (what) VALUES (CONCAT('del ', OLD.id));
      CREATE TRIGGER a_ins2 AFTER INSERT ON a FOR EACH ROW PRECEDES a_ins INSERT INTO log (what) VALUES ('first');
      INSERT INTO a VALUES (1, 'one'), (2, 'two'); INSERT INTO b VALUES (1, 1), (2, 2); INSERT INTO m VALUES (1, 'm1');
      DELETE FROM log;`;
    const source = await databases.create(sql);
    const record = await repo.backup(mysqlUrl(source), { database: 'tables' });
    const live = await databases.create(sql);
    await mysqlQuery(live, "UPDATE a SET v = 'changed'; DELETE FROM b WHERE id = 2; INSERT INTO m VALUES (2, 'm2'); INSERT INTO log (what) VALUES ('kept')");
    await repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['a', 'b', 'm'], force: true });
    assert.deepEqual(await rows(live, 'SELECT * FROM a ORDER BY id'), [{ id: 1, v: 'one' }, { id: 2, v: 'two' }]);
    assert.deepEqual(await rows(live, 'SELECT * FROM b ORDER BY id'), [{ id: 1, a_id: 1 }, { id: 2, a_id: 2 }]);
    assert.deepEqual(await rows(live, 'SELECT * FROM m ORDER BY id'), [{ id: 1, v: 'm1' }]);
    assert.deepEqual(await rows(live, 'SELECT what FROM log'), [{ what: 'kept' }], 'no trigger fired into another table');
    // Triggers and foreign keys are those of the live database, in their order, and still work.
    assert.equal(mysqlDump(live, ['--no-data']).replace(/ AUTO_INCREMENT=\d+/g, ''), mysqlDump(source, ['--no-data']).replace(/ AUTO_INCREMENT=\d+/g, ''));
    await mysqlQuery(live, "INSERT INTO a VALUES (3, 'three'); DELETE FROM a WHERE id = 1");
    assert.deepEqual(await rows(live, 'SELECT what FROM log ORDER BY n'), [{ what: 'kept' }, { what: 'first' }, { what: 'ins 3' }, { what: 'del 1' }]);
    assert.deepEqual(await rows(live, 'SELECT id FROM b ORDER BY id'), [{ id: 2 }], 'the restored foreign key cascades again');
    assert.deepEqual(await rows(undefined, `SHOW DATABASES LIKE '${live}\\_\\_strata%'`), []);
  });

  it('restore --tables of every kind of table (versioned, partitioned, MEMORY, Aria, generated columns, sequence defaults, spatial, INET6/UUID, an application-time period, compressed columns, other character sets) brings back their rows and history', async function () {
    this.timeout(300_000);
    const source = await databases.create(FULL_MARIADB_SQL);
    const record = await repo.backup(mysqlUrl(source), { database: 'full' });
    const live = await databases.create(FULL_MARIADB_SQL);
    await mysqlQuery(live, "UPDATE numbers SET f = 1; DELETE FROM texts WHERE id = 1; UPDATE prices SET price = 99; DELETE FROM parts WHERE id > 5; DELETE FROM mem; UPDATE ar SET v = 'x'; INSERT INTO orders (amount) VALUES (1); UPDATE stock SET qty = 0; DELETE FROM blobs WHERE id = 5");
    await mysqlQuery(live, "DELETE FROM geo WHERE id = 2; UPDATE nets SET u = NULL; DELETE FROM rooms; UPDATE squeezed SET t = 'short'; UPDATE charsets SET e = 'x'");
    const tables = ['ar', 'blobs', 'charsets', 'geo', 'mem', 'nets', 'numbers', 'orders', 'parts', 'prices', 'rooms', 'squeezed', 'stock', 'texts'];
    await repo.restore({ id: record.id }, { to: mysqlUrl(live), tables, force: true });
    const sorted = (dump: string) => dump.replace(/ AUTO_INCREMENT=\d+/g, '').replace(/^SELECT SETVAL.*$/gm, '');
    const others = (db: string) => ['audit', 'dup', 'my'].map((t) => `--ignore-table=${db}.${t}`);
    assert.equal(sorted(mysqlDump(live, others(live))), sorted(mysqlDump(source, others(source))));
    const expected = await checksums(source);
    const got = await checksums(live);
    for (const t of tables) assert.equal(got[t], expected[t], `CHECKSUM TABLE ${t}`);
    for (const [table, period] of [['prices', 'ROW_START, ROW_END'], ['stock', 'valid_from, valid_to']] as const) {
      const history = `SELECT *, ${period} FROM ${table} FOR SYSTEM_TIME ALL ORDER BY 1, ${period}`;
      assert.deepEqual(await rows(live, history), await rows(source, history), `history of ${table}`);
    }
  });

  it('restore --tables of a parent whose children stay is refused before anything changes, instead of cascading', async () => {
    const sql = `CREATE TABLE a (id INT PRIMARY KEY) ENGINE=InnoDB; CREATE TABLE b (id INT PRIMARY KEY, a_id INT, FOREIGN KEY (a_id) REFERENCES a (id) ON DELETE CASCADE) ENGINE=InnoDB;
      INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES (1, 1), (2, 2);`;
    const source = await databases.create(sql);
    const record = await repo.backup(mysqlUrl(source), { database: 'parent' });
    const live = await databases.create(sql);
    await mysqlQuery(live, 'INSERT INTO a VALUES (3)');
    const before = mysqlDump(live);
    await assert.rejects(repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['a'], force: true }), (err: unknown) => isStrataError(err, 'USAGE') && /table b refers to a/.test(err.message));
    assert.equal(mysqlDump(live), before);
  });

  it('a failed restore --tables leaves MyISAM, Aria and InnoDB tables as they were (the MyISAM and Aria ones were loaded before the failure)', async () => {
    const sql = `CREATE TABLE m (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM; CREATE TABLE ar (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=Aria; CREATE TABLE z (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;
      INSERT INTO m VALUES (1, 'long enough'); INSERT INTO ar VALUES (1, 'aria'); INSERT INTO z VALUES (1, 'long enough');`;
    const source = await databases.create(sql);
    const record = await repo.backup(mysqlUrl(source), { database: 'nontx' });
    const live = await databases.create(sql);
    // z's rows load last and fail: the target's z has since gained a check its backed-up rows break.
    await mysqlQuery(live, "INSERT INTO m VALUES (2, 'live'); INSERT INTO ar VALUES (2, 'live'); DELETE FROM z; ALTER TABLE z ADD CONSTRAINT short CHECK (CHAR_LENGTH(v) <= 4); INSERT INTO z VALUES (2, 'live')");
    const before = mysqlDump(live);
    await assert.rejects(repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['ar', 'm', 'z'], force: true }), (err: unknown) => isStrataError(err, 'RESTORE_FAILED') && /table z\b/.test(err.message));
    assert.equal(mysqlDump(live), before);
    assert.deepEqual(await rows(undefined, `SHOW DATABASES LIKE '${live}\\_\\_strata%'`), []);
  });

  it('a restore --force that fails after the swap (an event the target refuses) moves the original tables back and recreates their objects', async () => {
    const live = await databases.create(`CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB; CREATE TABLE m (x INT) ENGINE=MyISAM; INSERT INTO t VALUES (5); INSERT INTO m VALUES (9);
      CREATE VIEW v2 AS SELECT x FROM m; CREATE TRIGGER tr BEFORE INSERT ON m FOR EACH ROW SET NEW.x = NEW.x + 1;
      CREATE TRIGGER tr0 BEFORE INSERT ON m FOR EACH ROW PRECEDES tr SET NEW.x = NEW.x * 10;
      CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 1; CREATE EVENT ev ON SCHEDULE EVERY 1 DAY STARTS '2035-01-01 00:00:00' DISABLE DO DELETE FROM m;
      CREATE SEQUENCE s START WITH 7;`);
    const before = mysqlDump(live);
    const session = await engine.beginRestore(mysqlUrl(live), { tempDir: path.join(dir.path, 'tmp'), force: true });
    // As a backup from a newer server could hold it: an event statement this server does not accept.
    await session.prepare!(
      [
        '-- strata: MySQL/MariaDB schema; database charset utf8mb4 collate utf8mb4_general_ci',
        'DELIMITER ;;',
        'CREATE TABLE `t` (`id` int NOT NULL PRIMARY KEY, `v` int) ENGINE=InnoDB',
        ';;',
        '-- strata: post-data (views, triggers, events) below',
        'CREATE EVENT `e_new` ON SCHEDULE EVERY 1 FORTNIGHT DO DELETE FROM t',
        ';;',
        'DELIMITER ;',
        '',
      ].join('\n'),
    );
    const sink = await session.streamTarget('t.rows');
    if (sink.kind !== 'sink') throw new Error('expected a sink');
    await sink.write(Buffer.from('1\t2\n'));
    await sink.end();
    await assert.rejects(session.commit({ tables: ['t'], schemaOnly: false, schemaSql: '', engineMeta: {} }), (err: unknown) => isStrataError(err, 'RESTORE_FAILED') && /event `e_new`/.test(err.message));
    assert.equal(mysqlDump(live), before);
    await mysqlQuery(live, 'INSERT INTO m VALUES (1)');
    assert.deepEqual(await rows(live, 'SELECT x FROM m ORDER BY x'), [{ x: 9 }, { x: 11 }], 'the triggers are back, in their order');
    assert.deepEqual(await rows(undefined, `SHOW DATABASES LIKE '${live}\\_\\_strata%'`), []);
  });

  it('a failed restore --force leaves the target exactly as it was, with nothing left behind', async () => {
    const other = await databases.create('CREATE TABLE ext (id INT)');
    const source = await databases.create(`CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1); CREATE VIEW v AS SELECT id FROM \`${other}\`.ext;`);
    const record = await repo.backup(mysqlUrl(source), { database: 'fails' });
    await mysqlQuery(undefined, `DROP DATABASE \`${other}\``);
    const live = await databases.create("CREATE TABLE t (id INT PRIMARY KEY); CREATE TABLE mine (x INT) ENGINE=MyISAM; INSERT INTO t VALUES (5); INSERT INTO mine VALUES (9); CREATE VIEW v2 AS SELECT x FROM mine; CREATE TRIGGER tr BEFORE INSERT ON mine FOR EACH ROW SET NEW.x = NEW.x + 1;");
    const before = mysqlDump(live);
    await assert.rejects(repo.restore({ id: record.id }, { to: mysqlUrl(live), force: true }), (err: unknown) => isStrataError(err, 'RESTORE_FAILED') && /view `v`/.test(err.message));
    assert.equal(mysqlDump(live), before);
    assert.deepEqual(await rows(undefined, `SHOW DATABASES LIKE '${live}\\_\\_strata%'`), []);
  });
});

describe('MySQL/MariaDB: a backup in row format 2 with facts version 3 (fixtures/legacy-mysql-format2)', function () {
  this.timeout(300_000);
  const dir = useTempDir();
  const databases = new MysqlDatabases();
  const fixture = path.join(ROOT, 'fixtures/legacy-mysql-format2');
  before(async function () {
    await requireMysql(this);
  });
  afterEach(() => databases.dropAll());

  it('verifies in full, and restores whole and table by table, its cp932 text, ENUMs and SETs as the source had them', async () => {
    const sourceSql = readFileSync(path.join(fixture, 'source.sql'), 'utf8');
    const source = await databases.create(sourceSql);
    const repo = path.join(dir.path, 'repository');
    cpSync(path.join(fixture, 'repo'), repo, { recursive: true });
    // Verify makes its scratch databases on the server the backup came from: the test server here.
    for (const file of readdirSync(path.join(repo, 'catalog'))) {
      const catalogFile = path.join(repo, 'catalog', file);
      const catalog = JSON.parse(readFileSync(catalogFile, 'utf8')) as { backups: { source: string }[] };
      for (const backup of catalog.backups) backup.source = mysqlUrl(source);
      writeFileSync(catalogFile, `${JSON.stringify(catalog, null, 1)}\n`);
    }
    const verified = strata(['verify', '--all', '--level', 'full', '--repo', repo, '--json']);
    const reports = json<{ reports: { backupId: string; checks: { name: string; status: string; reason: string }[] }[] }>(verified).reports;
    assert.deepEqual(reports.flatMap((r) => r.checks.filter((c) => c.status !== 'passed').map((c) => `${c.name}: ${c.reason}`)), []);
    assert.equal(reports.length, 1);
    const id = reports[0]!.backupId;
    const state = 'SELECT id, HEX(v) AS v, HEX(t) AS t FROM jp ORDER BY id';
    const members = 'SELECT id, e, e + 0 AS n, s, s + 0 AS bits FROM en ORDER BY id';
    const target = databases.name();
    const restored = strata(['restore', id, '--repo', repo, '--to', mysqlUrl(target)]);
    assert.equal(restored.status, 0, restored.stderr);
    assert.deepEqual(await rows(target, state), await rows(source, state));
    assert.deepEqual(await rows(target, members), await rows(source, members));
    const live = await databases.create(sourceSql);
    await mysqlQuery(live, "DELETE FROM jp WHERE id = 1; UPDATE en SET e = 'a', s = 'x'");
    const replaced = strata(['restore', id, '--repo', repo, '--to', mysqlUrl(live), '--tables', 'jp,en', '--force', '--yes']);
    assert.equal(replaced.status, 0, replaced.stderr);
    assert.deepEqual(await rows(live, state), await rows(source, state));
    assert.deepEqual(await rows(live, members), await rows(source, members));
  });
});
