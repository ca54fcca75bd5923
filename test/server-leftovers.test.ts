import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { FOREIGN_LEFTOVER_AGE_MS, Passphrase, formatWorkDatabaseName, initRepository, openRepository, thisHostTag } from '@strata/sdk';
import type { IdentifierLimit, WorkDatabaseFields } from '@strata/sdk';
import { TEST_PASSPHRASE, finished, strata, strataAsync, useTempDir } from './helpers/env.js';
import { Databases, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';
import { MysqlDatabases, mysqlQuery, mysqlUrl, requireMysql } from './helpers/mysql.js';

/**
 * What the tests need of a database server: the two servers differ only in SQL, so every
 * behaviour below is specified once and run against both.
 */
interface Server {
  readonly label: string;
  readonly limit: IdentifierLimit;
  require(context: Mocha.Context): Promise<void>;
  url(database: string): string;
  /** A new database name, dropped (with everything named after it) after the test. */
  name(): string;
  /** Creates a database named `name` with table `big` of `rows` rows of about 100 bytes. */
  createWithRows(name: string, rows: number): Promise<void>;
  rows(database: string): Promise<number>;
  /** Every database on the server whose name starts with `prefix`. */
  databasesLike(prefix: string): Promise<string[]>;
  exists(database: string): Promise<boolean>;
  dropAll(): Promise<void>;
}

function postgresServer(): Server {
  const databases = new Databases();
  return {
    label: 'PostgreSQL',
    limit: { max: 63, unit: 'bytes' },
    require: requirePostgres,
    url: pgUrl,
    name: () => databases.name(),
    createWithRows: async (name, rows) => {
      await pgQuery('postgres', `CREATE DATABASE "${name}"`);
      await pgQuery(name, `CREATE TABLE big (id int PRIMARY KEY, payload text); INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, ${rows}) g`);
    },
    rows: async (database) => Number((await pgQuery(database, 'SELECT count(*) AS n FROM big')).rows[0].n),
    databasesLike: async (prefix) => (await pgQuery('postgres', 'SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1', [prefix])).rows.map((r) => r.datname as string),
    exists: async (database) => (await pgQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount === 1,
    dropAll: () => databases.dropAll(),
  };
}

function mysqlServer(): Server {
  const databases = new MysqlDatabases();
  const like = async (prefix: string): Promise<string[]> =>
    ((await mysqlQuery(undefined, 'SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA ORDER BY 1')) as { name: string }[]).map((r) => r.name).filter((n) => n.startsWith(prefix));
  return {
    label: 'MySQL',
    limit: { max: 64, unit: 'characters' },
    require: requireMysql,
    url: mysqlUrl,
    name: () => databases.name(),
    createWithRows: async (name, rows) => {
      await mysqlQuery(undefined, `CREATE DATABASE \`${name}\``);
      const digits = '(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)';
      await mysqlQuery(
        name,
        `CREATE TABLE big (id int PRIMARY KEY, payload text);
         INSERT INTO big SELECT n, REPEAT(MD5(n), 3) FROM (SELECT 1 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * g.d AS n
           FROM ${digits} a, ${digits} b, ${digits} c, ${digits} e, ${digits} f, ${digits} g) numbers WHERE n <= ${rows}`,
      );
    },
    rows: async (database) => Number(((await mysqlQuery(database, 'SELECT COUNT(*) AS n FROM big')) as { n: number }[])[0]!.n),
    databasesLike: like,
    exists: async (database) => (await like(database)).includes(database),
    dropAll: () => databases.dropAll(),
  };
}

/** A pid that no process has any more: that of a process that has just exited. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
}

/**
 * Polls `leftovers` until it finds some, then stops the child (SIGSTOP, so it cannot finish in
 * between), reads them again, and kills it with SIGKILL. Returns what was there at the kill.
 */
async function killWhileLeftovers(child: ChildProcess, leftovers: () => Promise<string[]>): Promise<string[]> {
  const exit = finished(child);
  for (;;) {
    if ((await leftovers()).length > 0) {
      child.kill('SIGSTOP');
      const atKill = await leftovers();
      child.kill('SIGKILL');
      const { signal } = await exit;
      assert.equal(signal, 'SIGKILL', 'the run was to be killed');
      return atKill;
    }
    if (child.exitCode !== null) throw new Error(`the run ended (status ${child.exitCode}) before it created a database of its own; give the table more rows`);
    await delay(20);
  }
}

/** A name as a Strata process would make it; by default that of a restore's work database, by a process that is gone. */
function nameLike(server: Server, fields: Partial<WorkDatabaseFields> & { target: string }): string {
  return formatWorkDatabaseName({ role: 'work', host: thisHostTag(), pid: deadPid(), createdAt: new Date(), seq: 0, ...fields }, server.limit);
}

/** The work and aside names of one restore by a process that is gone. */
function restoreOfDeadProcess(server: Server, target: string): { work: string; aside: string } {
  const operation = { target, pid: deadPid(), createdAt: new Date(), seq: 7 };
  return { work: nameLike(server, { ...operation, role: 'work' }), aside: nameLike(server, { ...operation, role: 'aside' }) };
}

/** A backup of a small database on `server`, in a new repository under `dir`. */
async function smallBackup(server: Server, dir: string): Promise<{ repoDir: string; backupId: string }> {
  const repoDir = path.join(dir, 'repo');
  const passphrase = new Passphrase(TEST_PASSPHRASE);
  await initRepository(repoDir, { encryption: 'compat', passphrase });
  const repo = await openRepository(repoDir, { passphrase, tempDir: path.join(dir, 'tmp') });
  const source = server.name();
  await server.createWithRows(source, 10);
  const backupId = (await repo.backup(server.url(source), { database: 'small', type: 'full' })).id;
  await repo.close();
  return { repoDir, backupId };
}

const ROWS = 200_000;

for (const server of [postgresServer(), mysqlServer()]) {
  describe(`${server.label}: databases a killed restore or verify left behind`, function () {
    this.timeout(300_000);
    const dir = useTempDir();
    let repoDir: string;
    let source: string;
    let backupId: string;

    before(async function () {
      await server.require(this);
    });

    beforeEach(async () => {
      repoDir = path.join(dir.path, 'repo');
      const passphrase = new Passphrase(TEST_PASSPHRASE);
      await initRepository(repoDir, { encryption: 'compat', passphrase });
      const repo = await openRepository(repoDir, { passphrase, tempDir: path.join(dir.path, 'tmp') });
      source = server.name();
      await server.createWithRows(source, ROWS);
      backupId = (await repo.backup(server.url(source), { database: 'big', type: 'full' })).id;
      await repo.close();
    });

    afterEach(() => server.dropAll());

    it('a restore killed while it loads rows leaves a work database, which the next restore removes and names', async () => {
      const target = server.name();
      const child = strataAsync(['restore', backupId, '--repo', repoDir, '--to', server.url(target)]);
      const left = await killWhileLeftovers(child, () => server.databasesLike(`${target}__strata_`));
      assert.equal(left.length, 1, `expected one work database, found ${left.join(', ')}`);
      assert.deepEqual(await server.databasesLike(`${target}__strata_`), left, 'the killed restore left its work database');

      const again = strata(['restore', backupId, '--repo', repoDir, '--to', server.url(target)]);
      assert.equal(again.status, 0, again.stderr);
      assert.deepEqual(await server.databasesLike(`${target}__strata_`), []);
      assert.match(again.stderr, new RegExp(`removed the work database ${left[0]} of a restore that did not finish \\(left by pid \\d+ on this host, which is no longer running\\)`));
      assert.equal(await server.rows(target), ROWS);
      assert.equal(await server.rows(source), ROWS);
    });

    it('a verify killed while it restores leaves a scratch database, which the next verify removes', async () => {
      const child = strataAsync(['verify', backupId, '--level', 'full', '--repo', repoDir]);
      const left = await killWhileLeftovers(child, () => server.databasesLike(`${source}__strata_`));
      assert.ok(left.length > 0);

      const again = strata(['verify', backupId, '--level', 'full', '--repo', repoDir]);
      assert.equal(again.status, 0, again.stdout + again.stderr);
      assert.deepEqual(await server.databasesLike(`${source}__strata_`), []);
      for (const name of left) assert.match(again.stderr, new RegExp(`removed the (work|scratch) database ${name} `));
      assert.equal(await server.rows(source), ROWS);
    });
  });

  describe(`${server.label}: what the next run removes and what it leaves alone`, function () {
    const dir = useTempDir();
    let repoDir: string;
    let backupId: string;

    before(async function () {
      await server.require(this);
    });

    beforeEach(async () => {
      ({ repoDir, backupId } = await smallBackup(server, dir.path));
    });

    afterEach(() => server.dropAll());

    const named = (fields: Partial<WorkDatabaseFields> & { target: string }): string => nameLike(server, fields);

    const create = async (name: string): Promise<void> => {
      await server.createWithRows(name, 1);
    };

    it('removes those of dead processes here and week-old ones from elsewhere; keeps a live process\'s, a recent one from elsewhere, and a user\'s', async () => {
      const owner = server.name();
      const dead = named({ target: owner });
      const deadScratch = named({ target: owner, role: 'scratch', seq: 1 });
      const live = named({ target: owner, pid: process.pid, seq: 2 });
      const elsewhereRecent = named({ target: owner, host: thisHostTag() === '0badc0de' ? '0badf00d' : '0badc0de', pid: 1, createdAt: new Date(Date.now() - 60 * 60_000), seq: 3 });
      const elsewhereOld = named({ target: owner, host: thisHostTag() === '0badc0de' ? '0badf00d' : '0badc0de', pid: 1, createdAt: new Date(Date.now() - FOREIGN_LEFTOVER_AGE_MS - 60 * 60_000), seq: 4 });
      const users = [`${owner}__strata_notes`, `${owner}__strata_w_12345678`];
      for (const name of [dead, deadScratch, live, elsewhereRecent, elsewhereOld, ...users]) await create(name);

      const result = strata(['restore', backupId, '--repo', repoDir, '--to', server.url(server.name())]);
      assert.equal(result.status, 0, result.stderr);
      assert.deepEqual((await server.databasesLike(owner)).sort(), [live, elsewhereRecent, ...users].sort());
      assert.match(result.stderr, new RegExp(`removed the work database ${dead} `));
      assert.match(result.stderr, new RegExp(`removed the scratch database ${deadScratch} `));
      assert.match(result.stderr, new RegExp(`removed the work database ${elsewhereOld} .*left by a process on another host, 7 days ago`));
      for (const kept of [live, elsewhereRecent, ...users]) assert.ok(!result.stderr.includes(kept), `${kept} is mentioned: ${result.stderr}`);
    });

    it('names fit the server\'s identifier limit however long the target\'s name is', async () => {
      // 62 bytes in PostgreSQL, 48 characters in MySQL: too long to be kept whole in a work database's name.
      const long = `${server.name()}_${'é'.repeat(30)}`.slice(0, server.limit.unit === 'bytes' ? 40 : 64);
      try {
        const result = strata(['restore', backupId, '--repo', repoDir, '--to', server.url(long)]);
        assert.equal(result.status, 0, result.stderr);
        assert.equal(await server.rows(long), 10);
        const leftover = named({ target: long });
        await create(leftover);
        assert.ok(await server.exists(leftover), 'the server keeps the whole name');
        const again = strata(['restore', backupId, '--repo', repoDir, '--to', server.url(long), '--force', '--yes']);
        assert.equal(again.status, 0, again.stderr);
        assert.match(again.stderr, new RegExp(`removed the work database ${leftover} `));
        assert.ok(!(await server.exists(leftover)));
      } finally {
        await (server.label === 'PostgreSQL' ? pgQuery('postgres', `DROP DATABASE IF EXISTS "${long}" WITH (FORCE)`) : mysqlQuery(undefined, `DROP DATABASE IF EXISTS \`${long}\``));
      }
    });
  });
}

describe('PostgreSQL: the old database a killed restore moved aside', function () {
  const server = postgresServer();
  const dir = useTempDir();
  let backup: { repoDir: string; backupId: string };

  before(async function () {
    await server.require(this);
  });

  beforeEach(async () => {
    backup = await smallBackup(server, dir.path);
  });

  afterEach(() => server.dropAll());

  /** Runs a restore of the small backup to a new database: the run that finds the leftovers. */
  const nextRun = (): string => {
    const result = strata(['restore', backup.backupId, '--repo', backup.repoDir, '--to', server.url(server.name())]);
    assert.equal(result.status, 0, result.stderr);
    return result.stderr;
  };

  it('goes back under its name when the restore died between moving it aside and renaming the new one in', async () => {
    const target = server.name();
    const { work, aside } = restoreOfDeadProcess(server, target);
    await server.createWithRows(aside, 3);
    await server.createWithRows(work, 1);
    const said = nextRun();
    assert.ok(await server.exists(target), 'the old database is back');
    assert.equal(await server.rows(target), 3);
    assert.deepEqual(await server.databasesLike(`${target}__strata_`), []);
    assert.match(said, new RegExp(`put database ${target} back under its name: a restore that did not finish had renamed it to ${aside}`));
  });

  it('is removed when the restored database was already in place', async () => {
    const target = server.name();
    const { aside } = restoreOfDeadProcess(server, target);
    await server.createWithRows(target, 10);
    await server.createWithRows(aside, 3);
    const said = nextRun();
    assert.deepEqual(await server.databasesLike(`${target}__strata_`), []);
    assert.equal(await server.rows(target), 10);
    assert.match(said, new RegExp(`removed ${aside}, the database that a restore of ${target} had replaced`));
  });

  it('is kept, and named, when its restore never renamed the work database in and another database has the name', async () => {
    const target = server.name();
    const { work, aside } = restoreOfDeadProcess(server, target);
    await server.createWithRows(target, 1);
    await server.createWithRows(aside, 3);
    await server.createWithRows(work, 2);
    const said = nextRun();
    assert.deepEqual(await server.databasesLike(`${target}__strata_`), [aside]);
    assert.equal(await server.rows(aside), 3);
    assert.equal(await server.rows(target), 1);
    assert.match(said, new RegExp(`kept ${aside}: it holds the old ${target}`));
  });
});

describe('MySQL: the tables a killed restore moved aside', function () {
  const server = mysqlServer();
  const dir = useTempDir();
  let backup: { repoDir: string; backupId: string };

  before(async function () {
    await server.require(this);
  });

  beforeEach(async () => {
    backup = await smallBackup(server, dir.path);
  });

  afterEach(() => server.dropAll());

  it('an aside database that holds tables is kept and named; an empty one is removed', async () => {
    const holding = restoreOfDeadProcess(server, server.name());
    const empty = restoreOfDeadProcess(server, server.name());
    await server.createWithRows(holding.aside, 4);
    await mysqlQuery(undefined, `CREATE DATABASE \`${empty.aside}\``);
    const result = strata(['restore', backup.backupId, '--repo', backup.repoDir, '--to', server.url(server.name())]);
    assert.equal(result.status, 0, result.stderr);
    assert.ok(await server.exists(holding.aside));
    assert.equal(await server.rows(holding.aside), 4);
    assert.ok(!(await server.exists(empty.aside)));
    assert.match(result.stderr, new RegExp(`kept ${holding.aside}: it holds 1 table\\(s\\) of ${holding.aside.slice(0, holding.aside.indexOf('__strata_'))} that a restore replaced before it stopped`));
    assert.match(result.stderr, new RegExp(`removed the empty database ${empty.aside} of a restore that did not finish`));
  });
});
