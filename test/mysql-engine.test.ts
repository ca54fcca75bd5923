import assert from 'node:assert/strict';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { EngineRegistry, MysqlEngine, Passphrase, initRepository, isStrataError, openRepository } from '@strata/sdk';
import type { Repository } from '@strata/sdk';
import { describeEngineConformance } from './conformance/engine-conformance.js';
import { ROOT, factsAtBackup, finished, json, strata, strataAsync, useTempDir } from './helpers/env.js';
import type { CliResult } from './helpers/env.js';
import { MysqlDatabases, killSessions, mysqlDump, mysqlQuery, mysqlSession, mysqlUrl, requireMysql } from './helpers/mysql.js';
import { waitFor } from './helpers/pg-cluster.js';
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

  it("AUTO_INCREMENT counters are in the verify facts: a restore that lost one is told apart, and backups of the earlier facts still verify", async () => {
    const source = await databases.create(`
      CREATE TABLE orders (id int AUTO_INCREMENT PRIMARY KEY, note text COMMENT 'not ) ENGINE=x AUTO_INCREMENT=7') ENGINE=InnoDB;
      INSERT INTO orders (note) VALUES ('a'), ('b'), ('c'), ('d'), ('e');
      DELETE FROM orders WHERE id > 3;
      CREATE TABLE \`odd\`\`name\` (id bigint AUTO_INCREMENT PRIMARY KEY) ENGINE=Aria AUTO_INCREMENT=1000;
      CREATE TABLE plain (k int PRIMARY KEY); INSERT INTO plain VALUES (1);`);
    const record = await repo.backup(mysqlUrl(source), { database: 'counters' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: mysqlUrl(target) });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    // A schema-only restore makes the tables empty with the counters their CREATE TABLE states.
    const schemaOnly = await repo.backup(mysqlUrl(source), { database: 'counters', type: 'schema-only' });
    const [schemaReport] = await repo.verify({ id: schemaOnly.id }, { level: 'full' });
    assert.equal(schemaReport!.outcome, 'passed', JSON.stringify(schemaReport!.checks));

    const recorded = await factsAtBackup(engine, mysqlUrl(source), path.join(dir.path, 'tmp'));
    const facts = async (recordedMeta?: Record<string, unknown>) => (await engine.inspect(mysqlUrl(target), recordedMeta ? { recordedMeta } : {})).tables;
    assert.deepEqual(await facts(), recorded);
    const earlier = await facts({ factsVersion: 2 });
    // The rows are all there, but the next insert would get id 4 again, the id of a deleted order.
    await mysqlQuery(target, 'ALTER TABLE orders AUTO_INCREMENT = 4');
    const moved = (await facts()).find((t) => t.name === 'orders')!;
    const orders = recorded.find((t) => t.name === 'orders')!;
    assert.equal(moved.rows, orders.rows);
    assert.notEqual(moved.checksum, orders.checksum);
    await mysqlQuery(target, 'ALTER TABLE `odd``name` AUTO_INCREMENT = 1001');
    assert.notEqual((await facts()).find((t) => t.name === 'odd`name')!.checksum, recorded.find((t) => t.name === 'odd`name')!.checksum);
    // A backup that recorded facts version 2 is measured as it was: counters were not in its facts.
    assert.deepEqual(await facts({ factsVersion: 2 }), earlier);
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

  it('a table restore into a table that gained a UNIQUE key the backup\'s rows break names the duplicate and the key, with nothing changed', async () => {
    const source = await databases.create("CREATE TABLE t (id INT PRIMARY KEY, e VARCHAR(20)); INSERT INTO t VALUES (1, 'a@x'), (2, 'a@x');");
    const record = await repo.backup(mysqlUrl(source), { database: 'unique-since' });
    const live = await databases.create("CREATE TABLE t (id INT PRIMARY KEY, e VARCHAR(20), UNIQUE KEY uq_e (e)); INSERT INTO t VALUES (1, 'a@x');");
    await assert.rejects(
      repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['t'], force: true }),
      (err: unknown) => isStrataError(err, 'RESTORE_FAILED') && /Duplicate entry 'a@x' for key 'uq_e'/.test(err.message),
    );
    assert.deepEqual(await mysqlQuery(live, 'SELECT id, e FROM t'), [{ id: 1, e: 'a@x' }]);
  });

  it('a table restore into a table whose system versioning changed since the backup is refused, saying which side is versioned, with nothing changed', async () => {
    const plain = 'CREATE TABLE t (id INT PRIMARY KEY, v INT)';
    for (const [backupSql, targetSql, where] of [
      [`${plain} WITH SYSTEM VERSIONING COMMENT 'x'`, `${plain} COMMENT 'WITH SYSTEM VERSIONING'`, 'in the backup and not in the target'],
      [plain, `${plain} WITH SYSTEM VERSIONING`, 'in the target and not in the backup'],
    ] as const) {
      const source = await databases.create(`${backupSql}; INSERT INTO t VALUES (1, 1);`);
      const record = await repo.backup(mysqlUrl(source), { database: 'versioning-since' });
      const live = await databases.create(`${targetSql}; INSERT INTO t VALUES (1, 2);`);
      await assert.rejects(
        repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['t'], force: true }),
        (err: unknown) => isStrataError(err, 'USAGE') && err.message.includes(`table t is system-versioned ${where};`) && /nothing was changed/.test(err.message),
      );
      assert.deepEqual(await mysqlQuery(live, 'SELECT id, v FROM t'), [{ id: 1, v: 2 }]);
    }
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

  it('refuses a table restore into a table whose columns were reordered, renamed or dropped since the backup, naming both lists, and changes nothing', async () => {
    const source = await databases.create('CREATE TABLE pair (id INT PRIMARY KEY, a INT, b INT); INSERT INTO pair VALUES (1, 10, 20), (2, 11, 21);');
    const record = await repo.backup(mysqlUrl(source), { database: 'pairs' });
    const live = await databases.create('CREATE TABLE pair (id INT PRIMARY KEY, a INT, b INT); INSERT INTO pair VALUES (1, 10, 20), (2, 11, 21), (3, 12, 22);');
    const rows = async (): Promise<unknown> => mysqlQuery(live, 'SELECT * FROM pair ORDER BY id');
    for (const change of ['ALTER TABLE pair MODIFY b INT AFTER id', 'ALTER TABLE pair DROP COLUMN a, ADD COLUMN c INT']) {
      await mysqlQuery(live, change);
      const before = await rows();
      await assert.rejects(
        repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['pair'], force: true }),
        (err: unknown) => isStrataError(err, 'USAGE') && /table pair of the target has the columns id, b, (a|c), the backup's id, a, b; .*nothing was changed/.test((err as Error).message),
      );
      assert.deepEqual(await rows(), before, `after ${change}: the target's rows are as they were`);
    }
    // With the backup's columns again, the rows land in their own columns.
    await mysqlQuery(live, 'ALTER TABLE pair DROP COLUMN c, ADD COLUMN a INT AFTER id, MODIFY b INT AFTER a');
    await repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['pair'], force: true });
    assert.deepEqual(await rows(), [{ id: 1, a: 10, b: 20 }, { id: 2, a: 11, b: 21 }]);
    // A generated column added since carries no value of the backup's: the restore goes on, and computes it.
    await mysqlQuery(live, 'ALTER TABLE pair ADD COLUMN total INT AS (a + b) VIRTUAL AFTER id');
    await repo.restore({ id: record.id }, { to: mysqlUrl(live), tables: ['pair'], force: true });
    assert.deepEqual(await rows(), [{ id: 1, total: 30, a: 10, b: 20 }, { id: 2, total: 32, a: 11, b: 21 }]);
  });

  it("refuses a whole restore over a database another database's foreign keys refer to, before changing anything (they would be left referring to the dropped old tables)", async () => {
    const source = await databases.create(RICH_MYSQL_SQL);
    const record = await repo.backup(mysqlUrl(source), { database: 'shop' });
    const live = await databases.create(RICH_MYSQL_SQL);
    const other = await databases.create(`CREATE TABLE loans (id INT PRIMARY KEY, book_id BIGINT);`);
    await mysqlQuery(other, `ALTER TABLE loans ADD CONSTRAINT loans_book FOREIGN KEY (book_id) REFERENCES \`${live}\`.books (id); INSERT INTO loans SELECT 1, MIN(id) FROM \`${live}\`.books`);
    await mysqlQuery(live, 'DELETE FROM books WHERE id % 2 = 0');
    const before = mysqlDump(live);
    await assert.rejects(repo.restore({ id: record.id }, { to: mysqlUrl(live), force: true }), (err: unknown) => {
      assert.ok(isStrataError(err, 'USAGE'), String(err));
      assert.match(err.message, new RegExp(`foreign keys of other databases refer to tables of ${live} \\(${other}\\.loans → books \\(loans_book\\)\\).*nothing was changed`));
      return true;
    });
    assert.equal(mysqlDump(live), before, 'nothing changed');
    // The other database's key still refers to the live table: a row for a book it lacks is refused.
    await assert.rejects(mysqlQuery(other, 'INSERT INTO loans VALUES (2, -1)'), /foreign key constraint fails/);

    await mysqlQuery(other, 'ALTER TABLE loans DROP FOREIGN KEY loans_book');
    await repo.restore({ id: record.id }, { to: mysqlUrl(live), force: true });
    assert.equal(mysqlDump(live).replaceAll(live, '<db>'), mysqlDump(source));
  });

  describe('a restore whose swap waits for another session', () => {
    // Every kind of object a restore must keep. `parent` sorts after `child`: the swap holds
    // child's lock while it waits for parent's, so a session that then reads child waits behind
    // the swap, and holds the new child once the swap is done.
    const OBJECTS_SQL = `
      CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20));
      CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, note VARCHAR(40), FOREIGN KEY (parent_id) REFERENCES parent (id));
      INSERT INTO parent VALUES (1, 'one'), (2, 'two');
      INSERT INTO child VALUES (10, 1, 'A'), (11, 2, 'B');
      CREATE VIEW v_parent AS SELECT id, name FROM parent;
      CREATE TRIGGER trg BEFORE INSERT ON child FOR EACH ROW SET NEW.note = UPPER(NEW.note);
      CREATE FUNCTION f1(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
      CREATE EVENT ev ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM child WHERE id < 0;`;
    const LOCK_WAIT = 'Waiting for table metadata lock';
    const repoPath = (): string => path.join(dir.path, 'repo');
    const env = { STRATA_PASSPHRASE: 'mysql tests' };

    /** A backup of a database with every kind of object, and a target like it whose rows differ. */
    async function backedUpTarget(): Promise<{ source: string; target: string; before: string }> {
      const source = await databases.create(OBJECTS_SQL);
      await repo.backup(mysqlUrl(source), { database: 'my1' });
      const target = await databases.create(OBJECTS_SQL);
      await mysqlQuery(target, "INSERT INTO parent VALUES (3, 'three'); INSERT INTO child VALUES (12, 3, 'c')");
      return { source, target, before: mysqlDump(target) };
    }

    function restoreInto(target: string, tables: string | undefined, extra: readonly string[] = []): { child: ReturnType<typeof strataAsync>; outcome: ReturnType<typeof finished> } {
      const child = strataAsync(['restore', 'latest', '--db', 'my1', '--to', mysqlUrl(target), '--force', '--yes', '--repo', repoPath(), '--json', ...(tables ? ['--tables', tables] : []), ...extra], { env });
      return { child, outcome: finished(child) };
    }

    /** Polls the server's sessions until one waits for a metadata lock in a statement `statement` matches; fails if the restore ends first. */
    async function lockWaitIn(statement: RegExp, restore: Promise<CliResult>): Promise<void> {
      let ended: CliResult | undefined;
      void restore.then((result) => (ended = result));
      for (const deadline = Date.now() + 300_000; Date.now() < deadline; ) {
        const sessions = (await mysqlQuery(undefined, `SELECT INFO AS info FROM information_schema.PROCESSLIST WHERE STATE = '${LOCK_WAIT}'`)) as { info: string | null }[];
        if (sessions.some((s) => statement.test(s.info ?? ''))) return;
        if (ended) assert.fail(`the restore ended (exit ${ended.status}) before a statement matching ${statement} waited for a lock:\n${ended.stdout}\n${ended.stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.fail(`no statement matching ${statement} waited for a lock within 5 minutes`);
    }

    /** The restore's outcome, or a failure if it has not ended `minutes` after it was told to stop. */
    async function endOf(child: ReturnType<typeof strataAsync>, restore: Promise<CliResult & { signal: NodeJS.Signals | null }>, minutes: number): Promise<CliResult & { signal: NodeJS.Signals | null }> {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), minutes * 60_000)));
      const result = await Promise.race([restore, late]);
      clearTimeout(timer);
      if (result) return result;
      child.kill('SIGKILL');
      await restore;
      return assert.fail(`the restore still ran ${minutes} minute(s) after it was told to stop`);
    }

    /** The next strata run on that server (a restore elsewhere), which settles what a killed one left. */
    function nextRun(): CliResult {
      const result = strata(['restore', 'latest', '--db', 'my1', '--to', mysqlUrl(databases.name()), '--repo', repoPath()], { env });
      assert.equal(result.status, 0, result.stderr);
      return result;
    }

    const leftovers = async (target: string): Promise<string[]> =>
      ((await mysqlQuery(undefined, 'SHOW DATABASES')) as { Database: string }[]).map((r) => r.Database).filter((d) => d.startsWith(`${target}__strata_`));

    for (const tables of [undefined, 'child,parent']) {
      const kind = tables ? `--tables ${tables}` : 'a whole restore';

      it(`${kind}, killed while its swap waits for a lock, leaves the target with all its objects and rows, whether the server then drops that swap or makes it`, async () => {
        const { source, target, before } = await backedUpTarget();
        /** Holds a table of the target, starts the restore, kills it while its swap waits; `beforeRelease` runs while the lock is still held. */
        const killedWaiting = async (beforeRelease: () => void): Promise<void> => {
          const holder = await mysqlSession(target);
          try {
            await holder.query('START TRANSACTION');
            await holder.query('SELECT * FROM parent');
            const { child, outcome } = restoreInto(target, tables);
            await lockWaitIn(/^RENAME TABLE/, outcome);
            child.kill('SIGKILL');
            assert.equal((await outcome).signal, 'SIGKILL');
            beforeRelease();
          } finally {
            await holder.query('ROLLBACK');
            await holder.end();
          }
        };
        // The next run comes while the lock is still held: it ends the dead restore's waiting session, so nothing changes.
        await killedWaiting(() => nextRun());
        assert.equal(mysqlDump(target), before, 'the target after a next run that ended the waiting swap');
        assert.deepEqual(await leftovers(target), []);
        // The lock is let go first: a server that goes on with a dead client's swap has swapped in
        // the restored tables, which may take writes from then on, so the next run finishes that
        // restore rather than drop them; a server that dropped the swap left the target as it was.
        await killedWaiting(() => undefined);
        const next = nextRun();
        const after = mysqlDump(target);
        assert.ok(after === before || after === mysqlDump(source), `the target is neither as it was nor as the backup has it, after the next run, which said:\n${next.stderr}`);
        assert.deepEqual(await leftovers(target), []);
      });

      it(`${kind}, killed after its swap, is finished by the next run: the backup's rows with every view, trigger, routine and event`, async () => {
        const { source, target } = await backedUpTarget();
        const holder = await mysqlSession(target);
        const reader = await mysqlSession(target);
        try {
          await holder.query('START TRANSACTION');
          await holder.query('SELECT * FROM parent');
          const { child, outcome } = restoreInto(target, tables);
          await lockWaitIn(/^RENAME TABLE/, outcome);
          // Queued behind the swap, this read holds the new child once the swap is done: the
          // restore then waits to create child's trigger, after the swap, and is killed there.
          await reader.query('START TRANSACTION');
          const read = reader.query('SELECT COUNT(*) FROM child');
          await lockWaitIn(/^SELECT COUNT\(\*\) FROM child/, outcome);
          await holder.query('ROLLBACK');
          await read;
          await lockWaitIn(/^CREATE\b[\s\S]*\bTRIGGER\b/, outcome);
          child.kill('SIGKILL');
          assert.equal((await outcome).signal, 'SIGKILL');
        } finally {
          await holder.query('ROLLBACK');
          await reader.query('ROLLBACK');
          await holder.end();
          await reader.end();
        }
        const next = nextRun();
        assert.equal(mysqlDump(target), mysqlDump(source), `the target after the next run, which said:\n${next.stderr}`);
        assert.deepEqual(await leftovers(target), []);
      });

      it(`${kind}, interrupted (SIGINT) while its swap waits for a lock, stops at once with ABORTED and leaves the target as it was`, async () => {
        const { target, before } = await backedUpTarget();
        const holder = await mysqlSession(target);
        try {
          await holder.query('START TRANSACTION');
          await holder.query('SELECT * FROM parent');
          const { child, outcome } = restoreInto(target, tables);
          await lockWaitIn(/^RENAME TABLE/, outcome);
          child.kill('SIGINT');
          // The other session still holds its lock: the restore must not wait for it.
          const result = await endOf(child, outcome, 2);
          assert.equal(result.status, 1, result.stderr);
          assert.equal(json<{ error: { code: string } }>(result).error.code, 'ABORTED', result.stdout);
          assert.equal(mysqlDump(target), before, 'the target right after the interrupted restore');
          assert.deepEqual(await leftovers(target), []);
        } finally {
          await holder.query('ROLLBACK');
          await holder.end();
        }
        nextRun();
        assert.equal(mysqlDump(target), before);
        assert.deepEqual(await leftovers(target), []);
      });
    }

    it('a restore whose swap cannot get its tables within its --table-lock-wait fails with DATABASE_LOCKED, naming the session, and changes nothing', async () => {
      const { target, before } = await backedUpTarget();
      const holder = await mysqlSession(target);
      try {
        await holder.query('START TRANSACTION');
        await holder.query('SELECT * FROM parent');
        const { child, outcome } = restoreInto(target, undefined, ['--table-lock-wait', '10s']);
        await lockWaitIn(/^RENAME TABLE/, outcome);
        const result = await endOf(child, outcome, 2);
        assert.equal(result.status, 1, result.stderr);
        const error = json<{ error: { code: string; message: string } }>(result).error;
        assert.equal(error.code, 'DATABASE_LOCKED', error.message);
        assert.match(error.message, new RegExp(`\\b${holder.threadId}\\b`), 'names the session holding the lock');
        assert.match(error.message, /in use for 10 s/);
        assert.match(error.message, /run the restore again/);
        assert.equal(mysqlDump(target), before);
        assert.deepEqual(await leftovers(target), []);
      } finally {
        await holder.query('ROLLBACK');
        await holder.end();
      }
    });
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

describe("MySQL/MariaDB columns' EXTRA", () => {
  it("takes MariaDB's and MySQL 8's generated columns for generated, and MySQL 8's DEFAULT_GENERATED (an expression default) for a column with values", async () => {
    // MySQL 8 is not on the test machines: its information_schema words, as its manual gives them.
    const { isGeneratedExtra } = (await import(pathToFileURL(path.join(ROOT, 'packages/engine-mysql/dist/mysql-rows.js')).href)) as { isGeneratedExtra(extra: string): boolean };
    for (const extra of ['VIRTUAL GENERATED', 'STORED GENERATED', 'PERSISTENT GENERATED', 'virtual generated']) assert.equal(isGeneratedExtra(extra), true, extra);
    for (const extra of ['', 'auto_increment', 'DEFAULT_GENERATED', 'DEFAULT_GENERATED on update CURRENT_TIMESTAMP', 'on update current_timestamp()', 'INVISIBLE']) assert.equal(isGeneratedExtra(extra), false, extra);
  });
});

describe('MySQL/MariaDB restore: an INSERT that InnoDB rolls back to end a deadlock', function () {
  const databases = new MysqlDatabases();

  before(async function () {
    await requireMysql(this);
  });

  after(async () => {
    await databases.dropAll();
  });

  it('is sent again, and the rows arrive once each (the restore does not fail)', async function () {
    // The restore's row writer itself (internal to the engine), on a connection of the test's:
    // the deadlock needs another session's lock timed against its INSERT.
    const rows = (await import(pathToFileURL(path.join(ROOT, 'packages/engine-mysql/dist/mysql-rows.js')).href)) as {
      RowInserter: new (connection: unknown, table: string, database: string) => { write(chunk: Uint8Array): Promise<void>; end(): Promise<void> };
    };
    const db = await databases.create('CREATE TABLE keyed (k INT PRIMARY KEY, v TEXT) ENGINE=InnoDB;');
    const other = await mysqlSession(db);
    const restoring = await mysqlSession(db);
    const watcher = await mysqlSession(db);
    try {
      const [[{ id }]] = (await restoring.query('SELECT CONNECTION_ID() AS id')) as unknown as [[{ id: number }]];
      // The other session has written more rows, so InnoDB makes the restore's INSERT the victim.
      await other.query('BEGIN');
      await other.query('INSERT INTO keyed SELECT seq, NULL FROM seq_1000_to_1200');
      await other.query('INSERT INTO keyed VALUES (1, NULL)');
      const inserter = new rows.RowInserter(restoring, 'keyed', db);
      await inserter.write(Buffer.from('2\trestored\n1\trestored\n'));
      // The restore's INSERT takes row 2, then waits for the other session's row 1.
      const ended = inserter.end().then(
        () => undefined,
        (err: Error) => err,
      );
      await waitFor('the INSERT to wait for the lock on row 1', async () => {
        const [[{ n }]] = (await watcher.query("SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ? AND trx_state = 'LOCK WAIT'", [id])) as unknown as [[{ n: number }]];
        return n > 0 ? true : undefined;
      });
      // Now the other session waits for row 2: a deadlock, which rolls back the restore's INSERT.
      await other.query("INSERT INTO keyed VALUES (2, 'other')");
      await other.query('ROLLBACK');
      assert.equal(await ended, undefined, 'the restore went on');
      const [status] = (await watcher.query('SHOW ENGINE INNODB STATUS')) as unknown as [[{ Status: string }]];
      assert.match(status[0].Status, /LATEST DETECTED DEADLOCK/, 'InnoDB did see a deadlock');
      assert.deepEqual(await mysqlQuery(db, 'SELECT k, v FROM keyed ORDER BY k'), [
        { k: 1, v: 'restored' },
        { k: 2, v: 'restored' },
      ]);
    } finally {
      for (const c of [other, restoring, watcher]) await c.end().catch(() => undefined);
    }
  });
});
