import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { MysqlEngine } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { ROOT, json, strata, useTempDir } from './helpers/env.js';
import { assertRestoresAsExpected } from './helpers/legacy.js';
import { MYSQL_URL, MysqlDatabases, mysqlDump, mysqlQuery, mysqlUrl, requireMysql } from './helpers/mysql.js';

const LEGACY = path.join(ROOT, 'fixtures/legacy-v1');

describe('a repository written by the previous release (fixtures/legacy-v1)', () => {
  const dir = useTempDir();

  describe('SQLite', () => {

    it('lists, verifies in full and restores every restore point as it was', function () {
      this.timeout(600_000);
      // A copy: opening a repository may sweep and finish things in it; the fixture stays as made.
      const repo = path.join(dir.path, 'repo');
      cpSync(path.join(LEGACY, 'sqlite/repo'), repo, { recursive: true });
      const backups = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups;
      assert.deepEqual(backups.map((b) => b.type).sort(), ['differential', 'full', 'incremental', 'incremental', 'schema-only']);
      assert.ok(backups.some((b) => b.verification?.outcome === 'passed'), 'the verification results that release recorded are still there');
      const verify = strata(['verify', '--all', '--level', 'full', '--repo', repo, '--json']);
      assert.equal(verify.status, 0, verify.stdout);
      assertRestoresAsExpected(repo, path.join(LEGACY, 'sqlite/expected'), dir.path);
    });
  });

  describe('MySQL', () => {
    const databases = new MysqlDatabases();
    const engine = new MysqlEngine();
    const script = (name: string): string => readFileSync(path.join(LEGACY, 'mysql', name), 'utf8');

    before(async function () {
      await requireMysql(this);
    });

    afterEach(() => databases.dropAll());

    /** A copy of the fixture whose records name the test server (they name the one it was made on). */
    function copyRepository(): string {
      const repo = path.join(dir.path, 'repo');
      cpSync(path.join(LEGACY, 'mysql/repo'), repo, { recursive: true });
      const server = new URL(MYSQL_URL);
      if (server.host !== '127.0.0.1:3306' || decodeURIComponent(server.username || 'root') !== 'root') {
        const catalog = path.join(repo, 'catalog.json');
        writeFileSync(catalog, readFileSync(catalog, 'utf8').replaceAll('mysql://root@127.0.0.1:3306/', `mysql://${server.username || 'root'}@${server.host}/`));
      }
      return repo;
    }

    const password = new URL(MYSQL_URL).password;
    const env = password ? { MYSQL_PWD: decodeURIComponent(password) } : {};

    /** Runs one of the fixture's scripts with the `mysql` command line client, as they were run then. */
    function mysqlClient(database: string, file: string): void {
      const server = new URL(MYSQL_URL);
      const args = ['-h', server.hostname, '-P', server.port || '3306', '-u', decodeURIComponent(server.username || 'root'), database];
      const result = spawnSync('mysql', args, { input: script(file), encoding: 'utf8', env: { ...process.env, ...env } });
      if (result.status !== 0) throw new Error(`mysql < ${file} failed: ${result.stderr}`);
    }

    it('lists, verifies in full and restores every restore point as mysqldump shows the source then', async function () {
      this.timeout(600_000);
      const repo = copyRepository();
      const backups = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups;
      assert.deepEqual(backups.map((b) => b.type).sort(), ['full', 'incremental']);
      const verify = strata(['verify', '--all', '--level', 'full', '--repo', repo, '--json'], { env });
      assert.equal(verify.status, 0, verify.stdout + verify.stderr);
      const reports = json<{ reports: { backupId: string; outcome: string; checks: { name: string; status: string; reason: string }[] }[] }>(verify).reports;
      assert.deepEqual(reports.map((r) => [r.backupId, r.outcome]).sort(), backups.map((b) => [b.id, 'passed']).sort());
      for (const report of reports) {
        for (const check of ['schema-integrity', 'data-consistency']) {
          assert.equal(report.checks.find((c) => c.name === check)?.status, 'passed', `${report.backupId} ${check}: ${JSON.stringify(report.checks)}`);
        }
      }

      // The source, made again as the README says: a database of the server's defaults, then the
      // scripts through the mysql client (a view keeps the client's character set as its context).
      const source = databases.name();
      await mysqlQuery(undefined, `CREATE DATABASE \`${source}\``);
      mysqlClient(source, 'setup.sql');
      const expected = new Map<string, string>();
      expected.set(backups.find((b) => b.type === 'full')!.id, mysqlDump(source));
      mysqlClient(source, 'change.sql');
      expected.set(backups.find((b) => b.type === 'incremental')!.id, mysqlDump(source));
      for (const [id, dump] of expected) {
        const target = databases.name();
        const restored = strata(['restore', id, '--to', mysqlUrl(target), '--repo', repo], { env });
        assert.equal(restored.status, 0, restored.stderr);
        assert.equal(mysqlDump(target), dump, `${id} restores what the database held then`);
      }
    });

    it('facts of a restored copy are measured as that release measured them: its fingerprint, and a changed value shows', async function () {
      this.timeout(300_000);
      const repo = copyRepository();
      const [full] = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups.filter((b) => b.type === 'full');
      const target = databases.name();
      const restored = strata(['restore', full!.id, '--to', mysqlUrl(target), '--repo', repo], { env });
      assert.equal(restored.status, 0, restored.stderr);
      // The engineMeta that release recorded: no factsVersion.
      const recordedMeta = { serverVersion: '10.11', nonTransactionalTables: [] };
      const legacy = await engine.inspect(mysqlUrl(target), { recordedMeta });
      assert.equal(legacy.schemaFingerprint, full!.schemaFingerprint, 'the fingerprint that release recorded');
      assert.equal(legacy.tables.reduce((n, t) => n + t.rows, 0), full!.rowCount);
      const current = await engine.inspect(mysqlUrl(target), { recordedMeta: { ...recordedMeta, factsVersion: 2 } });
      assert.notDeepEqual(current.tables, legacy.tables, 'backups of this release are measured the new way');
      await mysqlQuery(target, "UPDATE orders SET payload = X'00FF11' WHERE id = 1");
      const changed = await engine.inspect(mysqlUrl(target), { recordedMeta });
      const checksum = (facts: typeof legacy, table: string): string | undefined => facts.tables.find((t) => t.name === table)?.checksum;
      assert.notEqual(checksum(changed, 'orders'), checksum(legacy, 'orders'));
      assert.equal(checksum(changed, 'customers'), checksum(legacy, 'customers'));
    });

    it("events verify's scratch database holds disabled are measured with their recorded status, as that release and this one measure them", async function () {
      this.timeout(300_000);
      // A database with an enabled event, restored as usual and into a scratch database of verify's.
      const source = await databases.create("CREATE TABLE t (id INT PRIMARY KEY); CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM t;");
      const tempDir = path.join(dir.path, 'tmp');
      const snapshot = await engine.snapshot(mysqlUrl(source), { tempDir, schemaOnly: true });
      const schemaSql = snapshot.schemaSql;
      await snapshot.close?.();
      const restoreInto = async (locator: string): Promise<void> => {
        const session = await engine.beginRestore(locator, { tempDir, force: false });
        await session.prepare?.(schemaSql);
        const sink = await session.streamTarget('t.rows');
        if (sink.kind !== 'sink') throw new Error('expected a row sink');
        await sink.end();
        await session.commit({ schemaOnly: false, schemaSql, engineMeta: { serverVersion: '10.11' }, tables: ['t'] });
      };
      const restored = databases.name();
      await restoreInto(mysqlUrl(restored));
      const scratch = await engine.createScratch({ tempDir, source: mysqlUrl(source) });
      try {
        await restoreInto(scratch.locator);
        const scratchName = new URL(scratch.locator).pathname.slice(1);
        const status = async (database: string): Promise<unknown> => mysqlQuery(undefined, `SELECT STATUS AS status FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '${database}'`);
        assert.deepEqual([await status(restored), await status(scratchName)], [[{ status: 'ENABLED' }], [{ status: 'DISABLED' }]]);
        for (const recordedMeta of [{ serverVersion: '10.11', nonTransactionalTables: [] }, { serverVersion: '10.11', nonTransactionalTables: [], factsVersion: 2 }]) {
          const copy = await engine.inspect(mysqlUrl(restored), { recordedMeta });
          const checked = await engine.inspect(scratch.locator, { recordedMeta });
          assert.equal(checked.schemaFingerprint, copy.schemaFingerprint, `facts version ${recordedMeta.factsVersion ?? 1}`);
        }
      } finally {
        await scratch.drop();
      }
    });

    it("BIT values in that release's row streams (HEX text) restore as the same numbers, whole and with --tables", async function () {
      this.timeout(300_000);
      // schema.sql as that release wrote it: no row format line.
      const schemaSql = [
        '-- strata: MySQL/MariaDB schema; database charset utf8mb4 collate utf8mb4_general_ci',
        'DELIMITER ;;',
        'CREATE TABLE `flags` (`id` int(11) NOT NULL, `b1` bit(1) DEFAULT NULL, `b12` bit(12) DEFAULT NULL, `b64` bit(64) DEFAULT NULL, PRIMARY KEY (`id`)) ENGINE=InnoDB',
        ';;',
        '-- strata: post-data (views, triggers, events) below',
        'DELIMITER ;',
        '',
      ].join('\n');
      // What HEX() of b'1', 0x10 (16) and 2^64-1 gave, and of 0, 0xABC and 2^63.
      const stream = '1\t1\t10\tFFFFFFFFFFFFFFFF\n2\t0\tABC\t8000000000000000\n3\t\\N\t\\N\t\\N\n';
      const expected = [
        { id: 1, b1: '1', b12: '16', b64: '18446744073709551615' },
        { id: 2, b1: '0', b12: '2748', b64: '9223372036854775808' },
        { id: 3, b1: null, b12: null, b64: null },
      ];
      const read = 'SELECT id, CAST(b1 + 0 AS CHAR) AS b1, CAST(b12 + 0 AS CHAR) AS b12, CAST(b64 + 0 AS CHAR) AS b64 FROM flags ORDER BY id';
      const restore = async (target: string, tables?: string[]): Promise<void> => {
        const session = await engine.beginRestore(mysqlUrl(target), { tempDir: path.join(dir.path, 'tmp'), force: tables !== undefined, ...(tables ? { tables } : {}) });
        await session.prepare?.(schemaSql);
        const sink = await session.streamTarget('flags.rows');
        if (sink.kind === 'sink') {
          await sink.write(Buffer.from(stream));
          await sink.end();
        } else writeFileSync(sink.path, stream);
        await session.commit({ schemaOnly: false, schemaSql, engineMeta: { serverVersion: '10.11' }, tables: ['flags'] });
      };
      const whole = databases.name();
      await restore(whole);
      assert.deepEqual(await mysqlQuery(whole, read), expected);
      await mysqlQuery(whole, 'UPDATE flags SET b12 = 1, b64 = 1');
      await restore(whole, ['flags']);
      assert.deepEqual(await mysqlQuery(whole, read), expected);
    });

    it("that release's triggers (listed by name, FOLLOWS naming one later in the list) come back in their action order", async function () {
      this.timeout(300_000);
      const context = "SET SESSION sql_mode = 'STRICT_TRANS_TABLES', time_zone = 'SYSTEM', character_set_client = utf8mb4, collation_connection = utf8mb4_general_ci\n;;";
      const schemaSql = [
        '-- strata: MySQL/MariaDB schema; database charset utf8mb4 collate utf8mb4_general_ci',
        'DELIMITER ;;',
        'CREATE TABLE `t` (`id` int(11) NOT NULL, `v` int(11) DEFAULT NULL, PRIMARY KEY (`id`)) ENGINE=InnoDB',
        ';;',
        '-- strata: post-data (views, triggers, events) below',
        context,
        'CREATE TRIGGER a_plus BEFORE INSERT ON t FOR EACH ROW FOLLOWS z_double SET NEW.v = NEW.v + 1',
        ';;',
        context,
        'CREATE TRIGGER z_double BEFORE INSERT ON t FOR EACH ROW SET NEW.v = NEW.v * 2',
        ';;',
        'DELIMITER ;',
        '',
      ].join('\n');
      const target = databases.name();
      const session = await engine.beginRestore(mysqlUrl(target), { tempDir: path.join(dir.path, 'tmp'), force: false });
      await session.prepare?.(schemaSql);
      const sink = await session.streamTarget('t.rows');
      if (sink.kind !== 'sink') throw new Error('expected a row sink');
      await sink.end();
      await session.commit({ schemaOnly: false, schemaSql, engineMeta: { serverVersion: '10.11' }, tables: ['t'] });
      await mysqlQuery(target, 'INSERT INTO t VALUES (1, 5)');
      // z_double first, then a_plus: (5 * 2) + 1.
      assert.deepEqual(await mysqlQuery(target, 'SELECT v FROM t'), [{ v: 11 }]);
    });
  });
});
