import assert from 'node:assert/strict';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { MysqlEngine, Passphrase, isStrataError } from '@strata/sdk';
import { ROOT, useRepositoryPerTest, useTempDir } from './helpers/env.js';
import { MysqlDatabases, mysqlDump, mysqlQuery, mysqlUrl, requireMysql } from './helpers/mysql.js';

/** What a backup must hold so that its restore gives back what the source had, or be refused when it cannot. */

const engine = new MysqlEngine();

/** A MariaDB string literal of `text`. */
function sqlString(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "''").replace(/\n/g, '\\n')}'`;
}

interface SchemaModule {
  parseSchemaText(text: string): { pre: string[]; post: string[] };
}

async function schemaModule(): Promise<SchemaModule> {
  return (await import(pathToFileURL(path.join(ROOT, 'packages/engine-mysql/dist/mysql-schema.js')).href)) as SchemaModule;
}

describe('MySQL/MariaDB: backups that restore as they were', function () {
  this.timeout(300_000);
  const dir = useTempDir();
  const databases = new MysqlDatabases();
  const passphrase = new Passphrase('mysql restorable');
  const repo = useRepositoryPerTest(dir, passphrase, () => databases.dropAll());

  before(async function () {
    await requireMysql(this);
  });

  it("routine and trigger bodies holding lines like schema.sql's own (-- strata ..., DELIMITER ..., ;;) come back as they were, and verify", async () => {
    const source = await databases.create(`
      CREATE TABLE t (id INT PRIMARY KEY, note TEXT);
      CREATE FUNCTION banner() RETURNS TEXT DETERMINISTIC RETURN 'Welcome\n-- strata maintenance window tonight\nDELIMITER ends here\nbye';
      CREATE FUNCTION semis() RETURNS TEXT DETERMINISTIC RETURN 'a\n;;\nb';
      CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.note = 'header\nDELIMITER line\nfooter';`);
    const record = await repo().backup(mysqlUrl(source), { database: 'bodies' });
    const target = databases.name();
    await repo().restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.equal(mysqlDump(target), mysqlDump(source));
    await mysqlQuery(target, 'INSERT INTO t (id) VALUES (1)');
    assert.deepEqual(await mysqlQuery(target, 'SELECT banner() AS b, semis() AS s, (SELECT note FROM t) AS n'), [
      { b: 'Welcome\n-- strata maintenance window tonight\nDELIMITER ends here\nbye', s: 'a\n;;\nb', n: 'header\nDELIMITER line\nfooter' },
    ]);
    const [report] = await repo().verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('rows that break a CHECK constraint added with check_constraint_checks = 0 come back as the source held them, and verify', async () => {
    const source = await databases.create(`
      CREATE TABLE stock (id INT PRIMARY KEY, qty INT);
      INSERT INTO stock VALUES (1, 5), (2, -3);
      SET SESSION check_constraint_checks = 0;
      ALTER TABLE stock ADD CONSTRAINT pos CHECK (qty >= 0);`);
    const record = await repo().backup(mysqlUrl(source), { database: 'checks' });
    const target = databases.name();
    await repo().restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.deepEqual(await mysqlQuery(target, 'SELECT id, qty FROM stock ORDER BY id'), [{ id: 1, qty: 5 }, { id: 2, qty: -3 }]);
    await assert.rejects(mysqlQuery(target, 'INSERT INTO stock VALUES (3, -1)'), /CONSTRAINT `pos` failed/, 'the constraint holds for new rows');
    const [report] = await repo().verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it("invalid dates stored under sql_mode ALLOW_INVALID_DATES ('2021-02-31') come back as they were, and verify", async () => {
    const source = await databases.create(`
      SET SESSION sql_mode = 'ALLOW_INVALID_DATES';
      CREATE TABLE due (id INT PRIMARY KEY, d DATE DEFAULT '2020-02-30', dt DATETIME);
      INSERT INTO due VALUES (1, '2021-02-31', '2021-04-31 10:00:00'), (2, '2021-03-01', NULL);`);
    const record = await repo().backup(mysqlUrl(source), { database: 'dates' });
    const target = databases.name();
    await repo().restore({ id: record.id }, { to: mysqlUrl(target) });
    const read = 'SELECT id, CAST(d AS CHAR) AS d, CAST(dt AS CHAR) AS dt FROM due ORDER BY id';
    assert.deepEqual(await mysqlQuery(target, read), [{ id: 1, d: '2021-02-31', dt: '2021-04-31 10:00:00' }, { id: 2, d: '2021-03-01', dt: null }]);
    await mysqlQuery(target, 'INSERT INTO due (id) VALUES (3)');
    assert.deepEqual(await mysqlQuery(target, 'SELECT CAST(d AS CHAR) AS d FROM due WHERE id = 3'), [{ d: '2020-02-30' }], "the column's default too");
    await assert.rejects(mysqlQuery(target, "SET SESSION sql_mode = 'STRICT_ALL_TABLES'; INSERT INTO due VALUES (4, '2021-02-31', NULL)"), /Incorrect date value/, 'strict sessions of the target still refuse them');
    const [report] = await repo().verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it("a view whose table was dropped is refused at backup time with UNSUPPORTED_OBJECT naming it and what it lacks, and nothing is stored", async () => {
    const source = await databases.create(`
      CREATE TABLE kept (id INT PRIMARY KEY); CREATE TABLE gone (id INT);
      CREATE VIEW fine AS SELECT id FROM kept; CREATE VIEW stale AS SELECT id FROM gone;
      DROP TABLE gone;`);
    await assert.rejects(
      repo().backup(mysqlUrl(source), { database: 'stale' }),
      (err: unknown) => isStrataError(err, 'UNSUPPORTED_OBJECT') && /view\(s\) stale of /.test(err.message) && /\.gone' doesn't exist/.test(err.message) && /Drop each such view/.test(err.message),
    );
    assert.deepEqual((await repo().list()).map((b) => b.id), []);
  });

  it("the database's COMMENT comes back, also over a database with another one (--force), and verify tells a copy without it apart", async () => {
    const comment = "the shop's data\nsecond line \\ -- strata";
    const source = await databases.create(`ALTER DATABASE COMMENT ${sqlString(comment)}; CREATE TABLE t (id INT PRIMARY KEY);`);
    const commentOf = async (database: string): Promise<unknown> => (await mysqlQuery(undefined, `SELECT SCHEMA_COMMENT AS c FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '${database}'`)) as unknown;
    const record = await repo().backup(mysqlUrl(source), { database: 'commented' });
    const target = databases.name();
    await repo().restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.deepEqual(await commentOf(target), [{ c: comment }]);
    const [report] = await repo().verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    const live = await databases.create("ALTER DATABASE COMMENT 'old words'; CREATE TABLE t (id INT PRIMARY KEY);");
    await repo().restore({ id: record.id }, { to: mysqlUrl(live), force: true });
    assert.deepEqual(await commentOf(live), [{ c: comment }]);
    // What verify compares: the restored copy's facts against the backup's.
    const facts = await engine.inspect(mysqlUrl(target));
    await mysqlQuery(target, "ALTER DATABASE COMMENT ''");
    const without = await engine.inspect(mysqlUrl(target));
    assert.notEqual(without.schemaObjects!['database'], facts.schemaObjects!['database']);
    assert.equal(without.schemaFingerprint, facts.schemaFingerprint);
  });

  it("a backup of a database without a comment clears the target's old one when restored over it (--force)", async () => {
    const source = await databases.create('CREATE TABLE t (id INT PRIMARY KEY);');
    const record = await repo().backup(mysqlUrl(source), { database: 'plain' });
    const live = await databases.create("ALTER DATABASE COMMENT 'old words'; CREATE TABLE t (id INT PRIMARY KEY);");
    await repo().restore({ id: record.id }, { to: mysqlUrl(live), force: true });
    assert.deepEqual(await mysqlQuery(undefined, `SELECT SCHEMA_COMMENT AS c FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '${live}'`), [{ c: '' }]);
  });

  it('a restore over a database where a backed-up table is now a view of that name replaces the view (--force); a table restore there is refused naming it', async () => {
    const source = await databases.create("CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b'); CREATE TABLE u (id INT); INSERT INTO u VALUES (5);");
    const record = await repo().backup(mysqlUrl(source), { database: 'viewed' });
    const live = await databases.create('CREATE TABLE u (id INT); INSERT INTO u VALUES (7); CREATE VIEW t AS SELECT id FROM u; CREATE VIEW w AS SELECT * FROM t;');
    await assert.rejects(repo().restore({ id: record.id }, { to: mysqlUrl(live), force: true, tables: ['t'] }), (err: Error) => {
      assert.ok(isStrataError(err, 'USAGE'), String(err));
      assert.match(err.message, /t is a view in the target database, where the backup has a table; drop the view first.*nothing was changed/);
      return true;
    });
    assert.deepEqual(await mysqlQuery(live, 'SELECT * FROM w'), [{ id: 7 }]);
    const sequenced = await databases.create('CREATE SEQUENCE t');
    await assert.rejects(repo().restore({ id: record.id }, { to: mysqlUrl(sequenced), force: true, tables: ['t'] }), /t is a sequence in the target database, where the backup has a table; drop the sequence first \(DROP SEQUENCE\)/);
    await repo().restore({ id: record.id }, { to: mysqlUrl(live), force: true });
    assert.equal(mysqlDump(live), mysqlDump(source));
    assert.deepEqual(await mysqlQuery(undefined, `SELECT TABLE_NAME AS t, TABLE_TYPE AS k FROM information_schema.TABLES WHERE TABLE_SCHEMA = '${live}' ORDER BY 1`), [
      { t: 't', k: 'BASE TABLE' },
      { t: 'u', k: 'BASE TABLE' },
    ]);
  });

  it('a schema.sql written before statements were framed by length keeps the lines of a body that look like its own', async () => {
    const { parseSchemaText } = await schemaModule();
    const settings = "SET SESSION sql_mode = '', time_zone = 'SYSTEM', character_set_client = utf8mb4, collation_connection = utf8mb4_general_ci";
    const banner = "CREATE DEFINER=`root`@`localhost` FUNCTION `banner`() RETURNS text DETERMINISTIC\nRETURN 'Welcome\n-- strata maintenance window tonight\nDELIMITER ends here\nbye'";
    const text = [
      '-- strata: MySQL/MariaDB schema; database charset utf8mb4 collate utf8mb4_unicode_ci',
      '-- strata: row format 3 (BIT as decimal numbers)',
      '-- strata: {{db}}. stands for the database outside quoted strings only',
      'DELIMITER ;;',
      `${settings}\n;;`,
      `${banner}\n;;`,
      'CREATE TABLE `t` (\n  `id` int(11) NOT NULL\n) ENGINE=InnoDB\n;;',
      '-- strata: post-data (views, triggers, events) below',
      'CREATE VIEW `v` AS select 1 AS `1`\n;;',
      'DELIMITER ;',
      '',
    ].join('\n');
    const schema = parseSchemaText(text);
    assert.deepEqual(schema.pre, [settings, banner, 'CREATE TABLE `t` (\n  `id` int(11) NOT NULL\n) ENGINE=InnoDB']);
    assert.deepEqual(schema.post, ['CREATE VIEW `v` AS select 1 AS `1`']);
  });
});
