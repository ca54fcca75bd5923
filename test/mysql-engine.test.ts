import assert from 'node:assert/strict';
import * as path from 'node:path';
import { EngineRegistry, MysqlEngine, Passphrase, initRepository, isStrataError, openRepository } from '@strata/sdk';
import type { Repository } from '@strata/sdk';
import { describeEngineConformance } from './conformance/engine-conformance.js';
import { json, strata, useTempDir } from './helpers/env.js';
import { MysqlDatabases, killSessions, mysqlDump, mysqlQuery, mysqlUrl, requireMysql } from './helpers/mysql.js';
import { MUTATE_MYSQL_SQL, RICH_MYSQL_SQL } from './helpers/rich-mysql.js';

const engine = new MysqlEngine();
const conformanceDatabases = new MysqlDatabases();
const nameOf = (url: string): string => decodeURIComponent(new URL(url).pathname.slice(1));

describeEngineConformance('mysql', async (context) => {
  await requireMysql(context);
  return {
    engine,
    registry: new EngineRegistry().register(engine),
    createRich: async () => mysqlUrl(await conformanceDatabases.create(RICH_MYSQL_SQL)),
    mutate: async (url, seed) => void (await mysqlQuery(nameOf(url), MUTATE_MYSQL_SQL(seed))),
    newTarget: async () => mysqlUrl(conformanceDatabases.name()),
    dump: async (url) => mysqlDump(nameOf(url)),
    dumpSchema: async (url) => mysqlDump(nameOf(url), ['--no-data']).replace(/ AUTO_INCREMENT=\d+/g, ''),
    exec: async (url, sql) => void (await mysqlQuery(nameOf(url), sql)),
    query: async (url, sql) => JSON.stringify(await mysqlQuery(nameOf(url), sql)),
    exists: async (url) => ((await mysqlQuery(undefined, 'SHOW DATABASES')) as { Database: string }[]).some((r) => r.Database === nameOf(url)),
    leftovers: async (url) => ((await mysqlQuery(undefined, 'SHOW DATABASES')) as { Database: string }[]).map((r) => r.Database).filter((d) => d.startsWith(`${nameOf(url)}__strata_`)),
    cleanup: () => conformanceDatabases.dropAll(),
  };
});

describe('MySQL/MariaDB engine', function () {
  const dir = useTempDir();
  const databases = new MysqlDatabases();
  const passphrase = new Passphrase('mysql tests');
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

  it('oracle: mysqldump --skip-dump-date of the source and of the restored database are identical', async () => {
    const source = await databases.create(RICH_MYSQL_SQL);
    const record = await repo.backup(mysqlUrl(source), { database: 'shop' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    assert.equal(mysqlDump(target), mysqlDump(source));
    assert.deepEqual(record.tableCount, 3);
  });

  it('incrementals and differentials restore exactly, and verify at level full', async () => {
    const source = await databases.create(RICH_MYSQL_SQL);
    const full = await repo.backup(mysqlUrl(source), { database: 'shop' });
    await mysqlQuery(source, MUTATE_MYSQL_SQL(1));
    const inc = await repo.backup(mysqlUrl(source), { database: 'shop', type: 'incremental' });
    const expected = mysqlDump(source);
    await mysqlQuery(source, MUTATE_MYSQL_SQL(2));
    const diff = await repo.backup(mysqlUrl(source), { database: 'shop', type: 'differential' });
    assert.ok(inc.payloadBytes < full.payloadBytes, `incremental stored ${inc.payloadBytes} of ${full.payloadBytes} bytes`);
    const t1 = databases.name();
    await repo.restore({ id: inc.id }, { to: mysqlUrl(t1) });
    assert.equal(mysqlDump(t1), expected);
    const t2 = databases.name();
    await repo.restore({ id: diff.id }, { to: mysqlUrl(t2) });
    assert.equal(mysqlDump(t2), mysqlDump(source));
    const [report] = await repo.verify({ id: diff.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('an incremental restore keeps multi-byte characters that straddle the 1 MiB pieces its streams are read in', async () => {
    // 1,500 rows of 2.7 KB of 2-, 3- and 4-byte characters: a 4 MB stream whose first two 1 MiB
    // pieces end inside a character (the odd rows' 'a' sets where).
    const source = await databases.create(
      "CREATE TABLE t (id INT PRIMARY KEY, s TEXT) CHARACTER SET utf8mb4; INSERT INTO t SELECT seq, CONCAT(REPEAT('a', seq % 2), REPEAT('€🦊ü', 300)) FROM seq_1_to_1500;",
    );
    await repo.backup(mysqlUrl(source), { database: 'multibyte' });
    await mysqlQuery(source, "UPDATE t SET s = CONCAT(s, 'x') WHERE id = 750");
    const inc = await repo.backup(mysqlUrl(source), { database: 'multibyte', type: 'incremental' });
    const target = databases.name();
    await repo.restore({ id: inc.id }, { to: mysqlUrl(target) });
    const differing = (await mysqlQuery(undefined, `SELECT a.id FROM \`${source}\`.t a LEFT JOIN \`${target}\`.t b USING (id) WHERE b.s IS NULL OR BINARY a.s <> BINARY b.s`)) as { id: number }[];
    assert.deepEqual(differing.map((r) => r.id), [], 'rows that differ from the source');
  });

  it('replaces an existing database in place with --force, and only some tables with --tables', async () => {
    const source = await databases.create(RICH_MYSQL_SQL);
    const record = await repo.backup(mysqlUrl(source), { database: 'shop' });
    const live = await databases.create(RICH_MYSQL_SQL);
    await mysqlQuery(live, "DELETE FROM books WHERE id % 2 = 0; INSERT INTO nopk VALUES (999, 'keep me')");
    await assert.rejects(repo.restore({ id: record.id }, { to: mysqlUrl(live) }), (err: unknown) => isStrataError(err, 'TARGET_EXISTS'));
    await repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['books'], force: true });
    const count = async (sql: string) => ((await mysqlQuery(live, sql)) as { n: number }[])[0]!.n;
    assert.equal(await count('SELECT COUNT(*) AS n FROM books'), 600);
    assert.equal(await count('SELECT COUNT(*) AS n FROM nopk WHERE a = 999'), 1, 'other tables keep their rows');
    await assert.rejects(repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['nosuch'], force: true }), (err: unknown) => isStrataError(err, 'TABLE_NOT_FOUND'));
    await repo.restore({ id: record.id }, { to: mysqlUrl(live), force: true });
    assert.equal(mysqlDump(live).replaceAll(live, '<db>'), mysqlDump(source));
  });

  describe('bad input', () => {
    it('names the wrong host, port, database or credentials, and never prints the password', async () => {
      const host = new URL(mysqlUrl('x')).host;
      const cases: [string, string, RegExp][] = [
        ['mysql://root:sekrit-pw@no-such-host.invalid:3306/x', 'CONNECTION_FAILED', /host no-such-host\.invalid cannot be resolved/],
        ['mysql://root:sekrit-pw@127.0.0.1:1/x', 'CONNECTION_FAILED', /nothing accepts connections on 127\.0\.0\.1:1/],
        [`mysql://root@${host}/strata_no_such_db`, 'DATABASE_NOT_FOUND', /database "strata_no_such_db" does not exist/],
        [`mysql://nobody:sekrit-pw@${host}/test`, 'AUTH_FAILED', /access denied for user "nobody"/],
      ];
      for (const [locator, code, message] of cases) {
        const result = strata(['backup', locator, '--repo', path.join(dir.path, 'repo'), '--name', 'x', '--json'], { env: { STRATA_PASSPHRASE: 'mysql tests' } });
        assert.equal(result.status, 1, result.stderr);
        const error = json<{ error: { code: string; message: string } }>(result).error;
        assert.equal(error.code, code, error.message);
        assert.match(error.message, message);
        assert.ok(!result.stdout.includes('sekrit-pw') && !result.stderr.includes('sekrit-pw'));
      }
    });

    it('a server connection that dies mid-backup fails the backup and records nothing', async () => {
      const source = await databases.create(RICH_MYSQL_SQL);
      let killed = false;
      await assert.rejects(
        repo.backup(mysqlUrl(source), {
          database: 'shop',
          onProgress: (e) => {
            if (e.phase === 'write' && !killed) {
              killed = true;
              // Synchronously, so the connection is gone before the backup reads another row.
              killSessions(source);
            }
          },
        }),
        (err: unknown) => isStrataError(err) && ['CONNECTION_FAILED', 'IO'].includes(err.code),
      );
      assert.deepEqual((await repo.list()).map((b) => b.id), []);
      assert.equal((await repo.journal.operations()).at(-1)!.status, 'FAILED');
    });
  });
});
