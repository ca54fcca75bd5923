import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { Passphrase, PostgresEngine, initRepository, isStrataError, openRepository } from '@strata/sdk';
import type { Repository } from '@strata/sdk';
import { factsAtBackup, json, strata, useTempDir, warningsOf } from './helpers/env.js';
import { Databases, PG_URL, pgDump, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';

const engine = new PostgresEngine();
const server = new URL(PG_URL);
const hostPort = `${server.hostname}:${server.port || '5432'}`;

/** `pg_dump --create --schema-only` with the database's name neutralised: the database's own properties first. */
function dumpWithDatabase(database: string): string {
  return pgDump(database, ['--create', '--schema-only']);
}

/** Databases on the server whose name starts with `prefix` (leftovers of a restore or verify). */
async function databasesLike(prefix: string): Promise<string[]> {
  return (await pgQuery('postgres', "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", [prefix])).rows.map((r) => r.datname as string);
}

describe('PostgreSQL engine: the database itself', function () {
  const dir = useTempDir();
  const databases = new Databases();
  const passphrase = new Passphrase('postgres database tests');
  const roles: string[] = [];
  let repo: Repository;

  const role = async (): Promise<string> => {
    const name = `strata_role_${randomBytes(4).toString('hex')}`;
    await pgQuery('postgres', `CREATE ROLE "${name}"`);
    roles.push(name);
    return name;
  };

  /** A database created with its own CREATE DATABASE options, filled by `sql`. */
  const createDatabase = async (options: string, sql: string): Promise<string> => {
    const name = databases.name();
    await pgQuery('postgres', `CREATE DATABASE "${name}" TEMPLATE template0 ${options}`);
    await pgQuery(name, sql.replaceAll('{{db}}', `"${name}"`));
    return name;
  };

  before(async function () {
    await requirePostgres(this);
  });

  beforeEach(async () => {
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    repo = await openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
  });

  afterEach(async () => {
    await repo.close();
    // PostgreSQL refuses to drop a database that holds a subscription: detach and drop them first.
    for (const { db, sub } of (await pgQuery('postgres', "SELECT d.datname AS db, s.subname AS sub FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE starts_with(s.subname, 'strata_sub_')")).rows) {
      await pgQuery(db, `ALTER SUBSCRIPTION "${sub}" DISABLE; ALTER SUBSCRIPTION "${sub}" SET (slot_name = NONE); DROP SUBSCRIPTION "${sub}"`);
    }
    await databases.dropAll();
    for (const name of roles.splice(0)) await pgQuery('postgres', `DROP ROLE IF EXISTS "${name}"`);
  });

  it('an incremental after a change of schema only (a comment) is not reported as "nothing changed": it holds that schema', async () => {
    const source = await databases.create('CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)');
    const env = { STRATA_PASSPHRASE: 'postgres database tests' };
    const repoPath = path.join(dir.path, 'repo');
    assert.equal(strata(['backup', pgUrl(source), '--repo', repoPath, '--name', 'schema'], { env }).status, 0);
    const same = strata(['backup', pgUrl(source), '--repo', repoPath, '--name', 'schema', '--type', 'incremental', '--json'], { env });
    assert.equal(json<{ unchanged: boolean }>(same).unchanged, true);
    // Data changes that store no new rows: a table emptied, a sequence moved. Not "nothing changed".
    await pgQuery(source, 'CREATE TABLE gone (id int PRIMARY KEY); CREATE SEQUENCE s');
    assert.equal(strata(['backup', pgUrl(source), '--repo', repoPath, '--name', 'schema', '--type', 'incremental'], { env }).status, 0);
    await pgQuery(source, 'INSERT INTO gone VALUES (1), (2)');
    assert.equal(strata(['backup', pgUrl(source), '--repo', repoPath, '--name', 'schema', '--type', 'incremental'], { env }).status, 0);
    for (const change of ['TRUNCATE gone', "SELECT setval('s', 99999)"]) {
      await pgQuery(source, change);
      const changed = strata(['backup', pgUrl(source), '--repo', repoPath, '--name', 'schema', '--type', 'incremental', '--json'], { env });
      assert.equal(changed.status, 0, changed.stderr);
      assert.equal(json<{ unchanged: boolean }>(changed).unchanged, false, `${change}: not "nothing changed"`);
    }
    await pgQuery(source, 'DROP TABLE gone; DROP SEQUENCE s');
    assert.equal(strata(['backup', pgUrl(source), '--repo', repoPath, '--name', 'schema', '--type', 'incremental'], { env }).status, 0);
    await pgQuery(source, "COMMENT ON TABLE t IS 'the one table'");
    const commented = strata(['backup', pgUrl(source), '--repo', repoPath, '--name', 'schema', '--type', 'incremental'], { env });
    assert.equal(commented.status, 0, commented.stderr);
    assert.doesNotMatch(commented.stdout, /nothing changed/);
    assert.match(commented.stdout, /no table's rows changed since schema_incremental_\S+, its schema did: the incremental holds the schema as it is now/);
    const target = databases.name();
    assert.equal(strata(['restore', 'latest', '--db', 'schema', '--repo', repoPath, '--to', pgUrl(target)], { env }).status, 0);
    assert.deepEqual((await pgQuery(target, "SELECT obj_description('t'::regclass) AS c")).rows, [{ c: 'the one table' }]);
  });

  it("a table restore of every partition of a partitioned table brings back its identity sequence with the rows; of some partitions, it leaves it", async () => {
    const schema = `CREATE TABLE ev (id int GENERATED ALWAYS AS IDENTITY, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
      CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
      CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');`;
    const source = await databases.create(`${schema} INSERT INTO ev (d) VALUES ('2024-05-01'), ('2025-05-01'), ('2025-06-01');`);
    const record = await repo.backup(pgUrl(source), { database: 'partitioned' });
    const nextId = async (db: string): Promise<number> => (await pgQuery(db, "INSERT INTO ev (d) VALUES ('2024-07-01') RETURNING id")).rows[0]!.id as number;
    const some = await databases.create(schema);
    await repo.restore({ id: record.id }, { to: pgUrl(some), tables: ['public.ev_2025'], force: true });
    assert.equal(await nextId(some), 1, 'with ev_2024 left as it was, the sequence is too');
    const all = await databases.create(schema);
    await repo.restore({ id: record.id }, { to: pgUrl(all), tables: ['public.ev_2024', 'public.ev_2025'], force: true });
    assert.equal(await nextId(all), 4, 'the next id follows the restored rows');
    // Naming the partitioned table itself means its partitions, into an existing database or a new one.
    const byParent = await databases.create(schema);
    await repo.restore({ id: record.id }, { to: pgUrl(byParent), tables: ['ev'], force: true });
    const days = async (db: string): Promise<string[]> => (await pgQuery(db, 'SELECT d::text AS d FROM ev ORDER BY id')).rows.map((r) => r.d as string);
    assert.deepEqual(await days(byParent), ['2024-05-01', '2025-05-01', '2025-06-01']);
    assert.equal(await nextId(byParent), 4);
    const fresh = databases.name();
    const whole = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(fresh), tables: ['public.ev'] }));
    assert.deepEqual(await days(fresh), ['2024-05-01', '2025-05-01', '2025-06-01']);
    assert.deepEqual(whole.warnings, [], 'every table of the backup was named');
    // A new database gets the whole schema: a table left out is there, empty, and said to be.
    const lacking = databases.name();
    const part = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(lacking), tables: ['public.ev_2025'] }));
    assert.deepEqual(await days(lacking), ['2025-05-01', '2025-06-01']);
    assert.deepEqual(part.warnings, ["restore: the new database has the backup's whole schema and the rows of public.ev_2025 only; public.ev_2024 is there empty (restore without --tables for their rows)"]);
  });

  it('refuses a table restore of a partitioned table whose partitions the target changed since (one detached, one added that holds rows), with nothing changed', async () => {
    // q has no key, so it may have a foreign partition.
    const schema = `CREATE TABLE p (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
      CREATE TABLE p_1 PARTITION OF p FOR VALUES FROM (0) TO (100);
      CREATE TABLE p_2 PARTITION OF p FOR VALUES FROM (100) TO (200);
      CREATE TABLE q (id int, k int) PARTITION BY RANGE (k);
      CREATE TABLE q_1 PARTITION OF q FOR VALUES FROM (0) TO (100);`;
    const source = await databases.create(`${schema} INSERT INTO p SELECT g, g % 200 FROM generate_series(1, 500) g; INSERT INTO q VALUES (1, 1);`);
    const record = await repo.backup(pgUrl(source), { database: 'partitions-changed' });
    const count = async (db: string, table: string): Promise<number> => Number((await pgQuery(db, `SELECT count(*) AS n FROM ${table}`)).rows[0]!.n);

    const detached = await databases.create(`${schema} ALTER TABLE p DETACH PARTITION p_1;`);
    const before = pgDump(detached);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: pgUrl(detached), tables: ['p'], force: true }),
      (err: unknown) => isStrataError(err, 'USAGE') && /public\.p_1 is no longer under the partitioned table public\.p .*nothing was changed/.test(err.message),
    );
    assert.equal(pgDump(detached), before);

    const added = await databases.create(`${schema} CREATE TABLE p_3 PARTITION OF p FOR VALUES FROM (200) TO (300); INSERT INTO p VALUES (1000, 250);`);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: pgUrl(added), tables: ['p'], force: true }),
      (err: unknown) => isStrataError(err, 'USAGE') && /the partitioned table public\.p has rows in public\.p_3, which the backup does not have/.test(err.message),
    );
    assert.equal(await count(added, 'p_3'), 1);
    // An added partition without rows is no reason to refuse (one made ahead for the next month).
    await pgQuery(added, 'DELETE FROM p_3');
    await repo.restore({ id: record.id }, { to: pgUrl(added), tables: ['p'], force: true });
    assert.equal(await count(added, 'p_1') + await count(added, 'p_2'), 500);
    // A foreign partition's rows are on another server (here none answers), never in a backup: not asked for.
    const far = await databases.create(`${schema} CREATE EXTENSION postgres_fdw; CREATE SERVER nowhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '1');
      CREATE FOREIGN TABLE q_far PARTITION OF q FOR VALUES FROM (100) TO (200) SERVER nowhere;`);
    await repo.restore({ id: record.id }, { to: pgUrl(far), tables: ['q'], force: true });
    assert.equal(await count(far, 'q_1'), 1);
    // A partition named by itself is the user's choice, whatever the target made of it since.
    await repo.restore({ id: record.id }, { to: pgUrl(detached), tables: ['p_1'], force: true });
    assert.equal(await count(detached, 'p_1'), await count(source, 'p_1'));
  });

  it('a partitioned table without partitions is one: named alone it is refused as holding no rows, and under another it holds none of its rows', async () => {
    const schema = `CREATE TABLE bare (id int, k int) PARTITION BY RANGE (k);
      CREATE TABLE sub (id int, r text, k int) PARTITION BY LIST (r);
      CREATE TABLE sub_a PARTITION OF sub FOR VALUES IN ('a') PARTITION BY RANGE (k);
      CREATE TABLE sub_b PARTITION OF sub FOR VALUES IN ('b');`;
    const source = await databases.create(`${schema} INSERT INTO sub SELECT g, 'b', g FROM generate_series(1, 30) g;`);
    const record = await repo.backup(pgUrl(source), { database: 'partitioned-empty' });
    const live = await databases.create(schema);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['bare'], force: true }),
      (err: unknown) => isStrataError(err, 'TABLE_NOT_FOUND') && /the partitioned table public\.bare has no partition in the backup that holds rows/.test(err.message),
    );
    await repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['sub'], force: true });
    assert.equal(Number((await pgQuery(live, 'SELECT count(*) AS n FROM sub')).rows[0]!.n), 30);
  });

  it("a table restore of every partition under a partitioned table a level down brings back that table's own sequence; of some of them, it leaves it", async () => {
    // "m EU" was made on its own with a serial column, then attached: inserts into it directly take
    // its own sequence, and inserts through m take m's.
    const schema = `CREATE TABLE m (id int NOT NULL, region text, d date) PARTITION BY LIST (region);
      CREATE TABLE "m EU" (id serial, region text, d date) PARTITION BY RANGE (d);
      CREATE TABLE m_eu_2024 PARTITION OF "m EU" FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
      CREATE TABLE m_eu_2025 PARTITION OF "m EU" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
      ALTER TABLE m ATTACH PARTITION "m EU" FOR VALUES IN ('eu');
      CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');`;
    const source = await databases.create(`${schema} INSERT INTO "m EU" (region, d) VALUES ('eu', '2024-03-01'), ('eu', '2025-03-01'), ('eu', '2025-04-01');`);
    const record = await repo.backup(pgUrl(source), { database: 'level-sequences' });
    const nextId = async (db: string): Promise<number> => (await pgQuery(db, `INSERT INTO "m EU" (region, d) VALUES ('eu', '2024-07-01') RETURNING id`)).rows[0]!.id as number;
    const all = await databases.create(schema);
    await repo.restore({ id: record.id }, { to: pgUrl(all), tables: ['public.m EU'], force: true });
    assert.equal(await nextId(all), 4, 'the next id follows the restored rows');
    const some = await databases.create(schema);
    await repo.restore({ id: record.id }, { to: pgUrl(some), tables: ['public.m_eu_2025'], force: true });
    assert.equal(await nextId(some), 1, 'with m_eu_2024 left as it was, the sequence is too');
  });

  it('a table restore naming a partitioned table that is itself partitioned, or one a level down, brings the rows of the partitions under it', async () => {
    const schema = `CREATE TABLE m (id int, region text, d date) PARTITION BY LIST (region);
      CREATE TABLE "m EU" PARTITION OF m FOR VALUES IN ('eu') PARTITION BY RANGE (d);
      CREATE TABLE m_eu_2024 PARTITION OF "m EU" FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
      CREATE TABLE m_eu_2025 PARTITION OF "m EU" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
      CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');
      CREATE TABLE other (id int PRIMARY KEY);`;
    const source = await databases.create(`${schema} INSERT INTO m VALUES (1, 'eu', '2024-03-01'), (2, 'eu', '2025-03-01'), (3, 'us', '2025-04-01'); INSERT INTO other VALUES (7);`);
    const record = await repo.backup(pgUrl(source), { database: 'levels' });
    const ids = async (db: string, table = 'm'): Promise<number[]> => (await pgQuery(db, `SELECT id FROM ${table} ORDER BY id`)).rows.map((r) => r.id as number);
    const eu = await databases.create(`${schema} INSERT INTO m VALUES (9, 'us', '2025-01-01'); INSERT INTO other VALUES (8);`);
    await repo.restore({ id: record.id }, { to: pgUrl(eu), tables: ['public.m EU'], force: true });
    assert.deepEqual(await ids(eu), [1, 2, 9], 'the EU partitions from the backup, the US one as it was');
    assert.deepEqual(await ids(eu, 'other'), [8]);
    const whole = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(whole), tables: ['m'] });
    assert.deepEqual(await ids(whole), [1, 2, 3]);
    assert.deepEqual(await ids(whole, 'other'), [], 'a table not named stays empty');
  });

  it('a LATIN1 database with the C locale restores with its encoding, locale and text byte for byte', async () => {
    const source = await createDatabase("ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'", `
      CREATE TABLE words (id int PRIMARY KEY, word text DEFAULT 'défaut', note varchar(20));
      COMMENT ON COLUMN words.word IS 'Wörter, ¿qué?';
      INSERT INTO words VALUES (1, 'café', 'naïve'), (2, 'Ångström ÿ ß', NULL), (3, E'tab\\there ½', 'µ');`);
    const record = await repo.backup(pgUrl(source), { database: 'latin' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(target) });
    const props = async (db: string) =>
      (await pgQuery('postgres', 'SELECT pg_encoding_to_char(encoding) AS encoding, datlocprovider, datcollate, datctype, daticulocale FROM pg_database WHERE datname = $1', [db])).rows[0];
    assert.deepEqual(await props(target), await props(source));
    assert.equal((await pgQuery(target, 'SELECT word FROM words WHERE id = 1')).rows[0].word, 'café');
    assert.equal(pgDump(target), pgDump(source));
    assert.equal(dumpWithDatabase(target), dumpWithDatabase(source));
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));

    // A table restore loads the rows in the encoding they were written in, too.
    await pgQuery(target, "UPDATE words SET word = 'changed'");
    await repo.restore({ id: record.id }, { to: pgUrl(target), tables: ['words'], force: true });
    assert.equal(pgDump(target), pgDump(source));
  });

  it('a LATIN1 database whose table and column names are not ASCII backs up, restores, verifies and restores a table', async () => {
    const source = await createDatabase("ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'", `
      CREATE SCHEMA "menú";
      CREATE TABLE "menú"."café" ("prénom" text PRIMARY KEY, "größe" int, "a""quote\\slash" text);
      INSERT INTO "menú"."café" VALUES ('crème', 1, 'x'), ('brûlée', 2, NULL);
      CREATE TABLE "plain" (id int);
      CREATE TABLE "kind" ("naïve" text) INHERITS ("plain");
      INSERT INTO "kind" VALUES (7, 'ça');`);
    const record = await repo.backup(pgUrl(source), { database: 'latin-names' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(target) });
    assert.equal(pgDump(target), pgDump(source));
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));

    await pgQuery(target, 'DELETE FROM "menú"."café"; DELETE FROM "kind"');
    await repo.restore({ id: record.id }, { to: pgUrl(target), tables: ['menú.café', 'kind'], force: true });
    assert.equal(pgDump(target), pgDump(source));
  });

  it('a SQL_ASCII database keeps bytes that are not UTF-8 as they are', async () => {
    const source = await createDatabase("ENCODING 'SQL_ASCII' LOCALE 'C'", `
      CREATE TABLE raw (id int PRIMARY KEY, word text);
      INSERT INTO raw VALUES (1, E'caf\\xe9'), (2, E'\\xff\\xfe mixed \\xc3\\xa9');`);
    const record = await repo.backup(pgUrl(source), { database: 'ascii' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(target) });
    const bytes = async (db: string) => (await pgQuery(db, "SELECT string_agg(encode(word::bytea, 'hex'), ',' ORDER BY id) AS b FROM raw")).rows[0].b as string;
    assert.equal(await bytes(target), '636166e9,fffe206d6978656420c3a9');
    assert.equal(await bytes(source), '636166e9,fffe206d6978656420c3a9');
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('an ICU database restores with its locale provider and ICU locale', async () => {
    const source = await createDatabase("ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C.UTF-8'", `
      CREATE TABLE names (name text PRIMARY KEY); INSERT INTO names VALUES ('Äpfel'), ('Zebra'), ('apfel');`);
    const record = await repo.backup(pgUrl(source), { database: 'icu' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(target) });
    const props = async (db: string) => (await pgQuery('postgres', 'SELECT datlocprovider, daticulocale, datcollate FROM pg_database WHERE datname = $1', [db])).rows[0];
    assert.deepEqual(await props(target), { datlocprovider: 'i', daticulocale: 'de-DE', datcollate: 'C.UTF-8' });
    const order = async (db: string) => (await pgQuery(db, 'SELECT string_agg(name, \',\' ORDER BY name) AS o FROM names')).rows[0].o as string;
    assert.equal(await order(target), await order(source));
    assert.equal(dumpWithDatabase(target), dumpWithDatabase(source));
  });

  it('settings, owner, grants, comment and connection limit of the database come back as pg_dump --create describes them', async () => {
    const owner = await role();
    const reader = await role();
    const source = await createDatabase("ENCODING 'UTF8'", `
      ALTER DATABASE {{db}} SET work_mem = '7MB';
      ALTER DATABASE {{db}} SET search_path = 'app', 'public';
      ALTER ROLE "${reader}" IN DATABASE {{db}} SET statement_timeout = '5s';
      ALTER DATABASE {{db}} OWNER TO "${owner}";
      REVOKE ALL ON DATABASE {{db}} FROM PUBLIC;
      GRANT CONNECT, TEMP ON DATABASE {{db}} TO "${reader}";
      GRANT CREATE ON DATABASE {{db}} TO "${reader}" WITH GRANT OPTION;
      COMMENT ON DATABASE {{db}} IS 'Ünïcode comment; with ''quotes''
and a second line';
      ALTER DATABASE {{db}} CONNECTION LIMIT 17;
      CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);`);
    const record = await repo.backup(pgUrl(source), { database: 'props' });
    // In place over a database with other properties: the restored one has the source's.
    const target = await createDatabase("ENCODING 'UTF8'", "ALTER DATABASE {{db}} SET work_mem = '1MB'; COMMENT ON DATABASE {{db}} IS 'old';");
    await repo.restore({ id: record.id }, { to: pgUrl(target), force: true });
    assert.equal(dumpWithDatabase(target), dumpWithDatabase(source));
    assert.deepEqual(await databasesLike(`${target}__strata_`), []);
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));

    // Losing any of them changes the schema facts, and verify names the object.
    const before = await engine.inspect(pgUrl(target));
    await pgQuery('postgres', `ALTER DATABASE "${target}" RESET work_mem`);
    const after = await engine.inspect(pgUrl(target));
    assert.notEqual(after.schemaFingerprint, before.schemaFingerprint);
    assert.notEqual(after.schemaObjects!['database properties'], before.schemaObjects!['database properties']);
  });

  it('statements for roles the target lacks are left out, with a warning, and the rest is restored', async () => {
    const gone = await role();
    const source = await createDatabase("ENCODING 'UTF8'", `
      ALTER DATABASE {{db}} SET work_mem = '3MB';
      ALTER ROLE "${gone}" IN DATABASE {{db}} SET work_mem = '9MB';
      GRANT CONNECT ON DATABASE {{db}} TO "${gone}";
      COMMENT ON DATABASE {{db}} IS 'kept';`);
    const record = await repo.backup(pgUrl(source), { database: 'roles' });
    await pgQuery('postgres', `REVOKE ALL ON DATABASE "${source}" FROM "${gone}"; DROP ROLE "${gone}"`);
    const target = databases.name();
    const { warnings } = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(target) }));
    assert.ok(warnings.some((w) => w.includes(gone) && w.includes('roles this server does not have')), JSON.stringify(warnings));
    const settings = (await pgQuery('postgres', 'SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1', [target])).rows;
    assert.deepEqual(settings.map((r) => r.setconfig), [['work_mem=3MB']]);
    assert.equal((await pgQuery('postgres', 'SELECT shobj_description(oid, \'pg_database\') AS c FROM pg_database WHERE datname = $1', [target])).rows[0].c, 'kept');
  });

  it("lines of a body or a string that look like psql commands, pg_dump headers, settings or role statements are the user's: restored as they are and counted by verify", async () => {
    const gone = await role();
    const source = await databases.create(`CREATE TABLE t (id int PRIMARY KEY, note text DEFAULT 'a
\\b
c');
      CREATE INDEX t_a ON t (id); CREATE INDEX t_b ON t (note);
      COMMENT ON INDEX t_a IS 'doc:
SET default_tablespace = pg_global;
end';
      COMMENT ON TABLE t IS 'Copied from a dump:
-- Name: t; Type: TABLE; Schema: public; Owner: x
done';
      CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$ SELECT 'x
\\y
-- z
z' $$;
      CREATE FUNCTION f2() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
GRANT SELECT ON t TO "${gone}";
ALTER TABLE t OWNER TO "${gone}";
END $$;
      CREATE POLICY pol ON t TO "${gone}" USING (true);
      GRANT SELECT ON t TO "${gone}" WITH GRANT OPTION;
      ALTER DEFAULT PRIVILEGES FOR ROLE "${gone}" GRANT SELECT ON TABLES TO PUBLIC;
      SET SESSION AUTHORIZATION "${gone}"; GRANT SELECT ON t TO PUBLIC; RESET SESSION AUTHORIZATION;
      COMMENT ON COLUMN t.note IS 'run ALTER x OWNER TO "${gone}";
then';
      CREATE TABLE t2 (id int); COMMENT ON TABLE t2 IS 'x
-- strata: post-data (indexes, constraints, triggers) below; load the rows before running it
y';
      INSERT INTO t (id) VALUES (1);`);
    const definitions = async (db: string): Promise<unknown[]> =>
      (await pgQuery(db, `SELECT g() AS g, pg_get_functiondef('f2'::regproc) AS f2, pg_get_expr(d.adbin, d.adrelid) AS note_default,
          obj_description('t'::regclass) AS t_comment, obj_description('t_a'::regclass) AS t_a_comment,
          col_description('t'::regclass, 2) AS note_comment, obj_description('t2'::regclass) AS t2_comment,
          (SELECT array_agg(coalesce(spcname, '') ORDER BY relname) FROM pg_class c LEFT JOIN pg_tablespace s ON s.oid = c.reltablespace WHERE relname IN ('t_a', 't_b')) AS spaces
        FROM pg_attrdef d WHERE d.adrelid = 't'::regclass`)).rows;
    const record = await repo.backup(pgUrl(source), { database: 'lines' });
    const copy = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(copy) });
    assert.deepEqual(await definitions(copy), await definitions(source));
    assert.equal(pgDump(copy), pgDump(source));
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    // A body that lost such a line is another schema to verify.
    const other = await databases.create(`CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$ SELECT 'x
-- z
z' $$;`);
    const again = await databases.create(`CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$ SELECT 'x
\\y
-- z
z' $$;`);
    const schemaOf = async (db: string): Promise<string> => (await engine.inspect(pgUrl(db))).schemaFingerprint;
    assert.notEqual(await schemaOf(other), await schemaOf(again));

    // Without the role: its statements are left out whole, the bodies and strings that name it stay.
    for (const db of [source, copy]) await pgQuery(db, `REASSIGN OWNED BY "${gone}" TO CURRENT_USER; DROP OWNED BY "${gone}"`);
    await pgQuery('postgres', `DROP ROLE "${gone}"`);
    const target = databases.name();
    const { warnings } = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(target) }));
    const left = warnings.filter((w) => w.includes('roles this server does not have')).join('\n');
    for (const statement of ['CREATE POLICY "pol"', 'WITH GRANT OPTION', 'ALTER DEFAULT PRIVILEGES FOR ROLE', 'SET SESSION AUTHORIZATION']) assert.ok(left.includes(statement), `${statement} in ${left}`);
    assert.doesNotMatch(left, /;;/);
    const restored = await definitions(target);
    assert.deepEqual(restored, await definitions(source));
    assert.match(String((restored[0] as { f2: string }).f2), new RegExp(`GRANT SELECT ON t TO "${gone}";\\nALTER TABLE t OWNER TO "${gone}";`));
    assert.deepEqual((await pgQuery(target, "SELECT polname FROM pg_policy")).rows, []);
  });

  it('a SECURITY DEFINER function whose owner the target lacks is said to run with the restoring user\'s rights now', async () => {
    const gone = await role();
    const source = await databases.create(`CREATE FUNCTION run_sql(q text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN EXECUTE q; END $$;
      CREATE FUNCTION plain() RETURNS int LANGUAGE sql AS 'SELECT 1';
      ALTER FUNCTION run_sql(text) OWNER TO "${gone}"; ALTER FUNCTION plain() OWNER TO "${gone}";`);
    const record = await repo.backup(pgUrl(source), { database: 'definer' });
    await pgQuery(source, `REASSIGN OWNED BY "${gone}" TO CURRENT_USER; DROP OWNED BY "${gone}"`);
    await pgQuery('postgres', `DROP ROLE "${gone}"`);
    const { warnings } = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(databases.name()) }));
    const definer = warnings.filter((w) => w.includes('SECURITY DEFINER'));
    assert.equal(definer.length, 1, JSON.stringify(warnings));
    assert.match(definer[0]!, /^restore: SECURITY DEFINER public\.run_sql\(text\) belonged to roles this server does not have and now belong to \S+, so they run with/);
    assert.doesNotMatch(definer[0]!, /plain/);
  });

  it("an incremental after a change to a function body's comment line is not reported as \"nothing changed\"", async () => {
    const body = (comment: string): string => `CREATE OR REPLACE FUNCTION h() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
-- ${comment}
RETURN 1;
END $$;`;
    const source = await databases.create(body('first'));
    const record = await repo.backup(pgUrl(source), { database: 'body-comment' });
    await pgQuery(source, body('second'));
    const next = await repo.backup(pgUrl(source), { database: 'body-comment', type: 'incremental' });
    assert.notEqual(next.schemaFingerprint, record.schemaFingerprint);
  });

  it('tables, indexes and a database in tablespaces the target lacks are restored into the default tablespace, with a warning naming those tablespaces; a tablespace it has keeps its objects', async function () {
    // Tablespaces of the test server's machine, removed afterwards; the server process must own their folders.
    const folder = (name: string): string => {
      const location = path.join(dir.path, name);
      mkdirSync(location, { mode: 0o700 });
      if (process.getuid?.() === 0) spawnSync('chown', ['postgres', location, dir.path]);
      return location;
    };
    const suffix = randomBytes(3).toString('hex');
    const databaseSpace = `strata_dbspace_${suffix}`;
    const oddSpace = `Strata Odd "${suffix}"`;
    const keptSpace = `strata_kept_${suffix}`;
    const quoted = (name: string): string => `"${name.replaceAll('"', '""')}"`;
    await pgQuery('postgres', `CREATE TABLESPACE ${quoted(databaseSpace)} LOCATION '${folder('db-space')}'`);
    await pgQuery('postgres', `CREATE TABLESPACE ${quoted(oddSpace)} LOCATION '${folder('odd-space')}'`);
    await pgQuery('postgres', `CREATE TABLESPACE ${quoted(keptSpace)} LOCATION '${folder('kept-space')}'`);
    try {
      const source = await createDatabase(`TABLESPACE ${quoted(databaseSpace)}`, `
        CREATE TABLE odd (id int PRIMARY KEY USING INDEX TABLESPACE ${quoted(oddSpace)}, v text) TABLESPACE ${quoted(oddSpace)};
        CREATE INDEX odd_v ON odd (v) TABLESPACE ${quoted(oddSpace)};
        CREATE TABLE kept (id int, v text) TABLESPACE ${quoted(keptSpace)};
        CREATE INDEX kept_v ON kept (v) TABLESPACE ${quoted(keptSpace)};
        CREATE TABLE plain (id int, v text);
        CREATE FUNCTION use_space() RETURNS void LANGUAGE plpgsql AS $body$
BEGIN
SET default_tablespace = ${quoted(databaseSpace)};
END
$body$;
        INSERT INTO odd SELECT g, md5(g::text) FROM generate_series(1, 500) g;
        INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 300) g;
        INSERT INTO plain SELECT g, md5(g::text) FROM generate_series(1, 200) g;`);
      const record = await repo.backup(pgUrl(source), { database: 'spaces' });
      const rows = async (db: string): Promise<string> => JSON.stringify((await pgQuery(db, 'SELECT (SELECT json_agg(o ORDER BY id) FROM odd o) AS odd, (SELECT json_agg(k ORDER BY id) FROM kept k) AS kept, (SELECT json_agg(p ORDER BY id) FROM plain p) AS plain')).rows);
      const expected = await rows(source);
      const bodyOf = async (db: string): Promise<string> => (await pgQuery(db, "SELECT prosrc FROM pg_proc WHERE proname = 'use_space'")).rows[0].prosrc as string;
      const body = await bodyOf(source);
      // The restore goes to a server without two of the three tablespaces.
      await pgQuery('postgres', `DROP DATABASE "${source}"`);
      await pgQuery('postgres', `DROP TABLESPACE ${quoted(databaseSpace)}`);
      await pgQuery('postgres', `DROP TABLESPACE ${quoted(oddSpace)}`);
      const target = databases.name();
      const { warnings } = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(target) }));
      const said = warnings.filter((w) => w.includes('has no tablespace'));
      assert.equal(said.length, 1, JSON.stringify(warnings));
      assert.ok(said[0]!.includes(databaseSpace) && said[0]!.includes(oddSpace) && !said[0]!.includes(keptSpace), said[0]);
      assert.equal(await rows(target), expected);
      assert.equal(await bodyOf(target), body, "a function's body that sets the tablespace is restored as written");
      const placed = (await pgQuery(target, "SELECT c.relname AS name, coalesce(t.spcname, '') AS space FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1")).rows;
      assert.deepEqual(
        placed.map((r) => [r.name, r.space]),
        [['kept', keptSpace], ['kept_v', keptSpace], ['odd', ''], ['odd_pkey', ''], ['odd_v', ''], ['plain', '']],
        'what had a missing tablespace is in the default one; what had the kept one is still there',
      );
      assert.equal((await pgQuery('postgres', 'SELECT t.spcname AS space FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = $1', [target])).rows[0].space, 'pg_default');
    } finally {
      await databases.dropAll();
      for (const name of [databaseSpace, oddSpace, keptSpace]) await pgQuery('postgres', `DROP TABLESPACE IF EXISTS ${quoted(name)}`);
    }
  });

  it('large objects (empty, small with owner, grants and comment, a few MiB) are backed up, restored with their OIDs and checked by verify', async () => {
    const owner = await role();
    const reader = await role();
    const source = await createDatabase("ENCODING 'UTF8'", `
      CREATE TABLE docs (id int PRIMARY KEY, blob oid);
      SELECT lo_create(424242);
      INSERT INTO docs VALUES (1, lo_from_bytea(0, '')), (2, lo_from_bytea(0, '\\x00ff00c3a9')),
        (3, (SELECT lo_from_bytea(0, decode(string_agg(md5(i::text || random()::text), ''), 'hex')) FROM generate_series(1, 131072) i));
      SELECT lo_put(424242, 0, 'sparse start'), lo_put(424242, 100000, 'sparse end');
      ALTER LARGE OBJECT 424242 OWNER TO "${owner}";
      GRANT SELECT ON LARGE OBJECT 424242 TO "${reader}";
      COMMENT ON LARGE OBJECT 424242 IS 'a comment, ünïcode';`);
    const record = await repo.backup(pgUrl(source), { database: 'blobs' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(target) });
    // pg_dump writes every large object, its owner, ACL and comment: the oracle.
    assert.equal(pgDump(target), pgDump(source));
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));

    // The recorded facts are the server's, and they move with any change to a large object.
    const recorded = (await factsAtBackup(engine, pgUrl(source), path.join(dir.path, 'tmp'))).find((t) => t.name === 'pg_largeobject');
    assert.equal(recorded?.rows, 4);
    const facts = async () => (await engine.inspect(pgUrl(target))).tables.find((t) => t.name === 'pg_largeobject');
    assert.deepEqual(await facts(), recorded);
    await pgQuery(target, "SELECT lo_put(blob, 1, '\\x01') FROM docs WHERE id = 2");
    assert.notEqual((await facts())!.checksum, recorded.checksum);
    await pgQuery(target, 'SELECT lo_unlink(424242)');
    assert.equal((await facts())!.rows, 3);

    // An incremental assembles the stream from two artifacts; objects change, appear and vanish.
    await pgQuery(source, "SELECT lo_put(424242, 5, 'CHANGED'), lo_unlink((SELECT blob FROM docs WHERE id = 1)), lo_from_bytea(0, 'new one')");
    const incremental = await repo.backup(pgUrl(source), { database: 'blobs', type: 'incremental' });
    const target2 = databases.name();
    await repo.restore({ id: incremental.id }, { to: pgUrl(target2) });
    assert.equal(pgDump(target2), pgDump(source));
  });

  it("a large object whose owner the target lacks belongs to the restoring user with the owner's privileges, and keeps its grants to roles the target has", async () => {
    const gone = await role();
    const reader = await role();
    const source = await createDatabase('', `SELECT lo_from_bytea(70001, 'x'); ALTER LARGE OBJECT 70001 OWNER TO "${gone}";
      GRANT SELECT ON LARGE OBJECT 70001 TO "${reader}";`);
    const record = await repo.backup(pgUrl(source), { database: 'blob-owner' });
    await pgQuery(source, `REASSIGN OWNED BY "${gone}" TO CURRENT_USER; DROP OWNED BY "${gone}"`);
    await pgQuery('postgres', `DROP ROLE "${gone}"`);
    const target = databases.name();
    const { warnings } = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(target) }));
    const me = (await pgQuery(target, 'SELECT current_user AS me')).rows[0]!.me as string;
    assert.deepEqual((await pgQuery(target, 'SELECT lomacl::text AS acl FROM pg_largeobject_metadata WHERE oid = 70001')).rows, [{ acl: `{${me}=rw/${me},${reader}=r/${me}}` }]);
    const left = warnings.filter((w) => w.includes('roles this server does not have')).join('\n');
    assert.match(left, new RegExp(`ALTER LARGE OBJECT 70001 OWNER TO "${gone}"`));
    assert.doesNotMatch(left, new RegExp(reader));
  });

  it("sequences' positions are recorded as facts and checked by verify; they are not offered as a table", async () => {
    const source = await createDatabase('', `
      CREATE TABLE orders (id serial PRIMARY KEY, note text);
      CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
      CREATE SEQUENCE "Invoice numbers" START 1000;
      CREATE SEQUENCE untouched START 7;
      INSERT INTO orders (note) SELECT 'o' || i FROM generate_series(1, 5) i;
      INSERT INTO events DEFAULT VALUES; INSERT INTO events DEFAULT VALUES;
      DELETE FROM orders WHERE id > 3;
      SELECT nextval('"Invoice numbers"'), nextval('"Invoice numbers"');`);
    // An application's session with a temporary table of its own: not the database's, and not readable by another session.
    const session = new pg.Client({ connectionString: pgUrl(source) });
    await session.connect();
    let record;
    try {
      await session.query('CREATE TEMPORARY TABLE scratch_rows (id serial PRIMARY KEY)');
      record = await repo.backup(pgUrl(source), { database: 'seq' });
    } finally {
      await session.end();
    }
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(target) });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    assert.match(report!.checks.at(-1)!.reason, /^2 table\(s\) and pg_sequences: row counts and content checksums match/);
    // list counts the two tables and their 3 + 2 rows, not the four sequences.
    assert.deepEqual([record.tableCount, record.rowCount], [2, 5]);

    // What the backup recorded is what the restored database holds, and it moves with any position.
    const recorded = (await factsAtBackup(engine, pgUrl(source), path.join(dir.path, 'tmp'))).find((t) => t.name === 'pg_sequences');
    assert.equal(recorded?.rows, 4);
    const facts = async () => (await engine.inspect(pgUrl(target))).tables.find((t) => t.name === 'pg_sequences');
    assert.deepEqual(await facts(), recorded);
    // A restore that left a sequence where it started (the next insert would collide with a kept row).
    await pgQuery(target, "SELECT setval('orders_id_seq', 1, false)");
    assert.notEqual((await facts())!.checksum, recorded.checksum);
    await pgQuery(target, "SELECT setval('orders_id_seq', 5, true)");
    assert.deepEqual(await facts(), recorded);
    // Handed out or not is part of the position: nextval() gives 7 or 8.
    await pgQuery(target, "SELECT setval('untouched', 7, true)");
    assert.notEqual((await facts())!.checksum, recorded.checksum);
    await pgQuery(target, 'DROP SEQUENCE "Invoice numbers"');
    assert.equal((await facts())!.rows, 3);

    // Not a table: not among the restore point's tables, and refused by --tables as any unknown name.
    assert.deepEqual((await repo.tablesOf({ id: record.id })).sort(), ['public.events', 'public.orders']);
    await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(target), tables: ['pg_sequences'], force: true }), (err: unknown) => {
      assert.ok(isStrataError(err, 'TABLE_NOT_FOUND'), String(err));
      assert.match((err as Error).message, /has no table "pg_sequences" \(it has: public\.events, public\.orders\)/);
      return true;
    });
  });

  describe('subscriptions', () => {
    const withSubscription = (subscription: string, slot: string) => `
      CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);
      CREATE PUBLICATION "${subscription}_pub" FOR TABLE t;
      SET client_min_messages = error;
      CREATE SUBSCRIPTION "${subscription}" CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere connect_timeout=1' PUBLICATION "${subscription}_pub"
        WITH (connect = false, enabled = false, create_slot = false, slot_name = ${slot});`;
    const holders = async (subscription: string) =>
      (await pgQuery('postgres', 'SELECT d.datname AS db, s.subenabled AS enabled FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE s.subname = $1 ORDER BY 1', [subscription])).rows;

    it('verify and restore --force leave no database behind, and restored subscriptions stay disabled', async () => {
      const subscription = `strata_sub_${randomBytes(4).toString('hex')}`;
      // A slot name makes a careless DROP SUBSCRIPTION connect to the (unreachable) publisher.
      const source = await createDatabase("ENCODING 'UTF8'", withSubscription(subscription, `'${subscription}_slot'`));
      const record = await repo.backup(pgUrl(source), { database: 'subs' });
      const [report] = await repo.verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
      assert.deepEqual(await holders(subscription), [{ db: source, enabled: false }], 'no scratch database is left holding the subscription');

      const target = databases.name();
      await repo.restore({ id: record.id }, { to: pgUrl(target) });
      const { warnings } = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(target), force: true }));
      assert.ok(warnings.some((w) => w.includes(subscription) && w.includes('disabled')), JSON.stringify(warnings));
      assert.deepEqual(await databasesLike(`${target}__strata_`), []);
      assert.deepEqual(
        await holders(subscription),
        [{ db: source, enabled: false }, { db: target, enabled: false }].sort((a, b) => a.db.localeCompare(b.db)),
      );
      assert.equal(pgDump(target), pgDump(source));

      // An enabled subscription's worker keeps the target open: refused before anything changes.
      await pgQuery(target, `ALTER SUBSCRIPTION "${subscription}" ENABLE`);
      await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(target), force: true }), (err: unknown) => {
        assert.ok(isStrataError(err, 'DATABASE_LOCKED'), String(err));
        assert.match((err as Error).message, new RegExp(`${subscription}.*ALTER SUBSCRIPTION \\.\\.\\. DISABLE`));
        return true;
      });
      assert.deepEqual(await holders(subscription), [{ db: source, enabled: false }, { db: target, enabled: true }].sort((a, b) => a.db.localeCompare(b.db)));
      assert.deepEqual(await databasesLike(`${target}__strata_`), []);
    });
  });

  describe('a target that refuses the restore', () => {
    // A CHECK that reads another table: a restore that loads public.a before public.b fails on
    // a's rows, as pg_restore does.
    const refusing = `
      CREATE TABLE b (x int PRIMARY KEY);
      CREATE FUNCTION in_b(v int) RETURNS boolean LANGUAGE sql STABLE AS 'SELECT EXISTS (SELECT 1 FROM public.b WHERE b.x = v)';
      CREATE TABLE a (id int PRIMARY KEY, x int CHECK (public.in_b(x)));
      INSERT INTO b VALUES (1), (2); INSERT INTO a VALUES (10, 1), (20, 2);`;

    it('a COPY the target refuses is RESTORE_FAILED naming the table and server, and leaves the target as it was', async () => {
      const source = await createDatabase("ENCODING 'UTF8'", refusing);
      const record = await repo.backup(pgUrl(source), { database: 'refused' });
      const target = await createDatabase("ENCODING 'UTF8'", 'CREATE TABLE keep (v text); INSERT INTO keep VALUES (\'mine\');');
      const before = dumpWithDatabase(target) + pgDump(target);
      await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(target), force: true }), (err: unknown) => {
        assert.ok(isStrataError(err, 'RESTORE_FAILED'), String(err));
        assert.match((err as Error).message, /table public\.a/);
        assert.ok((err as Error).message.includes(hostPort), (err as Error).message);
        return true;
      });
      assert.equal(dumpWithDatabase(target) + pgDump(target), before);
      assert.deepEqual(await databasesLike(`${target}__strata_`), []);

      const fresh = databases.name();
      await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(fresh) }), (err: unknown) => isStrataError(err, 'RESTORE_FAILED'));
      assert.deepEqual(await databasesLike(fresh), []);
    });

    it('a schema statement the target refuses is RESTORE_FAILED naming the statement, with nothing left behind', async () => {
      const restorer = await role();
      await pgQuery('postgres', `ALTER ROLE "${restorer}" LOGIN CREATEDB`);
      const source = await createDatabase("ENCODING 'UTF8'", `CREATE TABLE owned (id int); ALTER TABLE owned OWNER TO pg_monitor;`);
      const record = await repo.backup(pgUrl(source), { database: 'refused' });
      const target = databases.name();
      const url = new URL(pgUrl(target));
      url.username = restorer;
      await assert.rejects(repo.restore({ id: record.id }, { to: url.toString() }), (err: unknown) => {
        assert.ok(isStrataError(err, 'RESTORE_FAILED'), String(err));
        assert.match((err as Error).message, /schema statement for TABLE public\.owned/);
        return true;
      });
      assert.deepEqual(await databasesLike(target), []);
    });
  });
});

