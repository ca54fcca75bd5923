import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import pg from 'pg';
import { EngineRegistry, Passphrase, PostgresEngine, initRepository, isStrataError, openRepository } from '@strata/sdk';
import type { EngineRestoreOptions, Repository, RestoreSession, TableStats, VerifyReport } from '@strata/sdk';
import { skipOrFail, useTempDir } from './helpers/env.js';
import { Databases, PG_URL, pgDump, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';

/**
 * Row fidelity of the PostgreSQL engine on schemas that broke it (issue 13): keys with INCLUDE
 * columns, inheritance, tables without columns, materialized views over materialized views, NOT
 * VALID constraints, and verification facts that the server computes rather than Strata's stream.
 */

const engine = new PostgresEngine();

/** pg_dump/pg_restore of one database into another: the oracle for what a restore should give. */
function pgDumpRestore(source: string, target: string): void {
  const url = new URL(PG_URL);
  const env = { ...process.env, PGHOST: url.hostname, PGPORT: url.port || '5432', PGUSER: decodeURIComponent(url.username || 'postgres') };
  const dump = spawnSync('pg_dump', ['--no-password', '-Fc', source], { env, maxBuffer: 256 * 1024 * 1024 });
  assert.equal(dump.status, 0, dump.stderr?.toString());
  const restore = spawnSync('pg_restore', ['--no-password', '--exit-on-error', '-d', target], { env, input: dump.stdout, maxBuffer: 64 * 1024 * 1024 });
  assert.equal(restore.status, 0, restore.stderr?.toString());
}

/**
 * Every user table's own rows (`FROM ONLY`), each row as JSON with its columns by name, sorted:
 * equal when the same values sit in the same named columns, whatever the physical column order.
 */
async function rowsByTable(database: string): Promise<Record<string, string[]>> {
  const tables = (await pgQuery(database, `
    SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1`)).rows.map((r) => r.name as string);
  const out: Record<string, string[]> = {};
  for (const table of tables) {
    out[table] = (await pgQuery(database, `SELECT to_jsonb(r)::text AS row FROM ONLY ${table} AS r`)).rows.map((r) => r.row as string).sort();
  }
  return out;
}

/** The facts a backup records, taken straight from the engine. */
async function backupFacts(url: string, tempDir: string): Promise<TableStats[]> {
  const snapshot = await engine.snapshot(url, { schemaOnly: false, tempDir });
  try {
    return [...(await snapshot.tableStats())];
  } finally {
    await snapshot.close();
  }
}

/** A verify report's reasons for one check. */
function reasonOf(report: VerifyReport, check: string): string {
  return report.checks.find((c) => c.name === check)!.reason ?? '';
}

/**
 * The PostgreSQL engine, except that every restore it makes is changed by `doctor` once it is
 * complete: how a test makes verification's scratch database differ from the backup.
 */
class DoctoredRestoreEngine extends PostgresEngine {
  constructor(private readonly doctor: (client: pg.Client) => Promise<unknown>) {
    super();
  }

  override async beginRestore(locator: string, options: EngineRestoreOptions): Promise<RestoreSession> {
    const session = await super.beginRestore(locator, options);
    return {
      ...session,
      commit: async (info) => {
        await session.commit(info);
        const client = new pg.Client({ connectionString: locator });
        await client.connect();
        try {
          await this.doctor(client);
        } finally {
          await client.end();
        }
      },
    };
  }
}

describe('PostgreSQL fidelity', function () {
  const dir = useTempDir();
  const databases = new Databases();
  const passphrase = new Passphrase('postgres fidelity tests');
  const repos: Repository[] = [];

  before(async function () {
    await requirePostgres(this);
  });

  async function repository(registered: PostgresEngine = engine): Promise<Repository> {
    const location = path.join(dir.path, `repo-${repos.length}`);
    await initRepository(location, { encryption: 'compat', passphrase });
    const repo = await openRepository(location, { passphrase, tempDir: path.join(dir.path, 'tmp'), engines: new EngineRegistry().register(registered) });
    repos.push(repo);
    return repo;
  }

  /** Backs `source` up, restores it to a new database and returns that database's name. */
  async function roundTrip(source: string, options: { schemaOnly?: boolean } = {}): Promise<{ target: string; repo: Repository; id: string }> {
    const repo = await repository();
    const record = await repo.backup(pgUrl(source), { database: 'fidelity', ...(options.schemaOnly ? { type: 'schema-only' as const } : {}) });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(target) });
    return { target, repo, id: record.id };
  }

  afterEach(async () => {
    for (const repo of repos.splice(0)) await repo.close();
    await databases.dropAll();
  });

  it('backs up a table whose primary key INCLUDEs columns of types that cannot be sorted', async () => {
    const source = await databases.create(`
      CREATE TABLE shapes (a int, b text, c int, d box, PRIMARY KEY (a, b) INCLUDE (c, d));
      INSERT INTO shapes SELECT i % 7, 'k' || i, i, box(point(i, i), point(i + 1, i + 2)) FROM generate_series(1, 200) i;`);
    const { target, repo, id } = await roundTrip(source);
    assert.equal(pgDump(target), pgDump(source).replaceAll(source, target));
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('a table of several MiB, loaded over two connections in turns, keeps every row: newlines, backslashes, tabs, multibyte text, a value longer than a turn', async () => {
    const source = await databases.create(`
      CREATE TABLE notes (id int PRIMARY KEY, body text, blob bytea, note text);
      INSERT INTO notes SELECT i, 'line ' || i || E'\\nsecond\\\\ line\\t' || repeat('é€😀', i % 50), decode(md5(i::text), 'hex'), CASE WHEN i % 3 = 0 THEN NULL ELSE E'\\\\N' END
        FROM generate_series(1, 30000) i;
      INSERT INTO notes VALUES (0, repeat(E'x\\n', 1500000), decode(repeat('00ff0a5c', 400000), 'hex'), 'long');`);
    assert.ok(Number((await pgQuery(source, `SELECT pg_total_relation_size('notes') AS n`)).rows[0]!.n) > 4 * 1024 * 1024);
    const { target, repo, id } = await roundTrip(source);
    assert.deepEqual(await rowsByTable(target), await rowsByTable(source));
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('a table without a key that has a column named t verifies (rows are ordered by the whole row)', async () => {
    // Many rows share each t. With a small work_mem the sort runs on tapes and merges them, so
    // rows of equal t come out in another order each time: an order by t alone is no order.
    const source = await databases.create(`
      CREATE TABLE marks (t int, u text, v float8);
      INSERT INTO marks SELECT i % 3, md5(i::text), i / 7.0 FROM generate_series(1, 4000) i ORDER BY md5(i::text);
      INSERT INTO marks SELECT 1, 'same', 1.5 FROM generate_series(1, 3);`);
    const saved = process.env['PGOPTIONS'];
    process.env['PGOPTIONS'] = '-c work_mem=64kB';
    try {
      const { target, repo, id } = await roundTrip(source);
      assert.deepEqual(await rowsByTable(target), await rowsByTable(source));
      const [report] = await repo.verify({ id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    } finally {
      if (saved === undefined) delete process.env['PGOPTIONS'];
      else process.env['PGOPTIONS'] = saved;
    }
  });

  it('a table whose rows a policy hides from the backup user fails the backup with an error that names the table', async () => {
    // A non-superuser that owns the table, under a forced row-level-security policy that shows it
    // one row of two: copying what it sees would lose the other without a word.
    const role = `strata_rls_${randomBytes(4).toString('hex')}`;
    await pgQuery('postgres', `CREATE ROLE ${role} LOGIN`);
    try {
      const source = databases.name();
      await pgQuery('postgres', `CREATE DATABASE "${source}" OWNER ${role}`);
      const url = new URL(pgUrl(source));
      url.username = role;
      const client = new pg.Client({ connectionString: url.toString() });
      await client.connect();
      try {
        await client.query(`
          CREATE TABLE fine (x int); INSERT INTO fine VALUES (1);
          CREATE TABLE guarded (a int); INSERT INTO guarded VALUES (1), (2);
          ALTER TABLE guarded ENABLE ROW LEVEL SECURITY; ALTER TABLE guarded FORCE ROW LEVEL SECURITY;
          CREATE POLICY visible_only ON guarded USING (a > 1);`);
      } finally {
        await client.end();
      }
      const repo = await repository();
      await assert.rejects(repo.backup(url.toString(), { database: 'rls' }), (err: unknown) => {
        assert.ok(isStrataError(err), String(err));
        assert.match(err.message, /public\.guarded/);
        assert.match(err.message, /row-level security/);
        return true;
      });
    } finally {
      await databases.dropAll();
      await pgQuery('postgres', `DROP ROLE IF EXISTS ${role}`);
    }
  });

  it('inheritance: parents keep their own rows and children with another column order keep theirs, as pg_dump/pg_restore does', async () => {
    const source = await databases.create(`
      CREATE TABLE vehicle (id int PRIMARY KEY, name text, wheels int);
      -- a child made on its own and attached later keeps its own column order (text columns, so a
      -- value put into the wrong column would not fail, only be wrong)
      CREATE TABLE car (plate text, name text, id int NOT NULL, wheels int);
      ALTER TABLE car INHERIT vehicle;
      CREATE TABLE sports_car (top_speed int) INHERITS (car);
      CREATE TABLE racer (team text, name text, id int NOT NULL, wheels int, plate text, top_speed int);
      ALTER TABLE racer INHERIT sports_car;
      CREATE TABLE truck (load_tons numeric) INHERITS (vehicle);
      CREATE TABLE garage (vehicle_id int REFERENCES vehicle (id), spot int);
      INSERT INTO vehicle SELECT i, 'vehicle ' || i, 4 FROM generate_series(1, 50) i;
      INSERT INTO car (id, name, wheels, plate) SELECT i, 'car ' || i, 4, 'P-' || i FROM generate_series(1001, 1030) i;
      INSERT INTO sports_car (id, name, wheels, plate, top_speed) SELECT i, 'fast ' || i, 4, 'S-' || i, 250 + i % 50 FROM generate_series(2001, 2010) i;
      INSERT INTO racer (id, name, wheels, plate, top_speed, team) SELECT i, 'racer ' || i, 4, 'R-' || i, 300, 'team ' || i % 3 FROM generate_series(3001, 3005) i;
      INSERT INTO truck (id, name, wheels, load_tons) SELECT i, 'truck ' || i, 6, i / 100.0 FROM generate_series(4001, 4020) i;
      INSERT INTO garage SELECT i, i FROM generate_series(1, 50) i;`);
    const { target, repo, id } = await roundTrip(source);
    const oracle = databases.name();
    await pgQuery('postgres', `CREATE DATABASE "${oracle}"`);
    pgDumpRestore(source, oracle);

    const expected = await rowsByTable(oracle);
    assert.deepEqual(await rowsByTable(source), expected, 'pg_dump/pg_restore keeps every table\'s own rows');
    const restored = await rowsByTable(target);
    assert.equal(restored['public.vehicle']!.length, 50);
    assert.equal(restored['public.car']!.length, 30);
    assert.deepEqual(restored, expected);
    assert.equal(pgDump(target, ['--schema-only']), pgDump(oracle, ['--schema-only']).replaceAll(oracle, target));

    // The facts Strata records are the server's: a copy made by pg_dump/pg_restore has the same.
    assert.deepEqual(await backupFacts(pgUrl(oracle), dir.path), await backupFacts(pgUrl(source), dir.path));
    // Every table's rows check out. The schema check passes too: pg_dump recreates a child with its
    // parent's columns first (so does pg_restore above), which verify leaves out of the comparison.
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.checks.find((c) => c.name === 'data-consistency')!.status, 'passed', JSON.stringify(report!.checks));
    assert.match(reasonOf(report!, 'data-consistency'), /^6 table\(s\): row counts and content checksums match/);
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('a child whose text columns are in another order than its parent\'s: values stay in their columns, and verify sees a swap', async () => {
    // Strata's own stream of this child, written in one column order and read back in another,
    // gives the same bytes: only facts taken from the rows themselves can tell.
    const source = await databases.create(`
      CREATE TABLE person (first_name text, last_name text);
      CREATE TABLE employee (last_name text, first_name text);
      ALTER TABLE employee INHERIT person;
      INSERT INTO person VALUES ('Alan', 'Turing');
      INSERT INTO employee VALUES ('Lovelace', 'Ada'), ('Hopper', 'Grace');`);
    const { target, repo, id } = await roundTrip(source);
    assert.deepEqual(
      (await pgQuery(target, 'SELECT first_name, last_name FROM ONLY employee ORDER BY 1')).rows,
      [{ first_name: 'Ada', last_name: 'Lovelace' }, { first_name: 'Grace', last_name: 'Hopper' }],
    );
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.checks.find((c) => c.name === 'data-consistency')!.status, 'passed', JSON.stringify(report!.checks));

    const swapping = await repository(new DoctoredRestoreEngine((client) => client.query('UPDATE ONLY employee SET first_name = last_name, last_name = first_name')));
    const record = await swapping.backup(pgUrl(source), { database: 'fidelity' });
    const [swapped] = await swapping.verify({ id: record.id }, { level: 'full' });
    assert.equal(reasonOf(swapped!, 'data-consistency'), 'table public.employee content checksum differs from the recorded one');
  });

  it('restores the rows of an inheritance parent alone (--tables) without touching its children, and a child alone', async () => {
    const source = await databases.create(`
      CREATE TABLE item (id int, label text);
      CREATE TABLE special (note text, label text, id int);
      ALTER TABLE special INHERIT item;
      INSERT INTO item VALUES (1, 'one'), (2, 'two');
      INSERT INTO special VALUES ('n', 'special', 10);`);
    // The live database is a restored copy, whose child has its parent's columns first.
    const { target: live, repo, id } = await roundTrip(source);
    await pgQuery(live, `DELETE FROM ONLY item; INSERT INTO item VALUES (3, 'three'); INSERT INTO special (note, label, id) VALUES ('m', 'later', 11)`);
    await repo.restore({ id }, { to: pgUrl(live), tables: ['item'], force: true });
    assert.deepEqual((await pgQuery(live, 'SELECT id, label FROM ONLY item ORDER BY id')).rows, [{ id: 1, label: 'one' }, { id: 2, label: 'two' }]);
    assert.deepEqual((await pgQuery(live, 'SELECT id, label, note FROM special ORDER BY id')).rows, [
      { id: 10, label: 'special', note: 'n' },
      { id: 11, label: 'later', note: 'm' },
    ]);
    // The child alone: its values go back into their own columns, whatever their order.
    await repo.restore({ id }, { to: pgUrl(live), tables: ['special'], force: true });
    assert.deepEqual((await pgQuery(live, 'SELECT id, label, note FROM special ORDER BY id')).rows, [{ id: 10, label: 'special', note: 'n' }]);
  });

  it("extensions' configuration rows (pg_partman's part_config, PostGIS's own spatial_ref_sys entries, a topology and its layer) come back as pg_dump/pg_restore brings them, verify counts them, and --tables replaces only the user's", async function () {
    // Real extensions from Debian's packages (scripts/test-tools.mjs installs them).
    const sharedir = spawnSync('pg_config', ['--sharedir'], { encoding: 'utf8' }).stdout.trim() || '/usr/share/postgresql/15';
    const missing = ['pg_partman', 'postgis', 'postgis_topology'].filter((e) => !existsSync(path.join(sharedir, 'extension', `${e}.control`)));
    if (missing.length > 0) skipOrFail(this, `the extensions ${missing.join(', ')} are not installed (apt-get install postgresql-15-partman postgresql-15-postgis-3)`);
    const source = await databases.create(`
      CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman; CREATE EXTENSION postgis; CREATE EXTENSION postgis_topology;
      CREATE TABLE events (id bigint, at timestamptz NOT NULL, v text) PARTITION BY RANGE (at);
      INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) VALUES (990001, 'strata', 990001, 'LOCAL_CS["site grid"]', '+proj=longlat +datum=WGS84');
      CREATE TABLE places (id int PRIMARY KEY, g geometry(Point, 4326), gg geography, local geometry(Point, 990001));
      INSERT INTO places VALUES (1, ST_SetSRID(ST_MakePoint(1.5, 2.5), 4326), 'POINT(3 4)', ST_SetSRID(ST_MakePoint(7, 8), 990001));
      SELECT topology.CreateTopology('city', 4326);
      CREATE TABLE roads (id int PRIMARY KEY);
      SELECT topology.AddTopoGeometryColumn('city', 'public', 'roads', 'topo', 'LINE');`);
    await pgQuery(source, `SELECT partman.create_parent('public.events', 'at', 'native', 'daily', p_premake := 2, p_start_partition := '2026-12-01')`);
    await pgQuery(source, `UPDATE partman.part_config SET retention = '30 days' WHERE parent_table = 'public.events'`);
    // The facts a backup records hold the user's rows of each configuration table, not the extension's own.
    const facts = new Map((await backupFacts(pgUrl(source), path.join(dir.path, 'tmp'))).map((t) => [t.name, t.rows]));
    assert.equal(facts.get('public.spatial_ref_sys'), 1, 'one SRID of the user among the 8,500 PostGIS brings');
    assert.equal(facts.get('partman.part_config'), 1);
    assert.equal(facts.get('topology.topology'), 1);
    // topology.layer's rows refer to topology.topology's and sort before them: a restore loads the parent's first.
    assert.equal(facts.get('topology.layer'), 1);

    const { target, repo, id } = await roundTrip(source);
    const oracle = databases.name();
    await pgQuery('postgres', `CREATE DATABASE "${oracle}"`);
    pgDumpRestore(source, oracle);
    assert.deepEqual(await rowsByTable(target), await rowsByTable(oracle));
    assert.equal(pgDump(target), pgDump(source));
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));

    // A live database whose configuration moved on: --tables puts the user's rows back and leaves the extension's alone.
    await pgQuery(target, `DELETE FROM spatial_ref_sys WHERE srid = 990001; DELETE FROM spatial_ref_sys WHERE srid = 4326;
      INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) VALUES (990002, 'later', 990002, 'LOCAL_CS["later"]', '+proj=longlat');
      UPDATE partman.part_config SET retention = '1 day'`);
    await repo.restore({ id }, { to: pgUrl(target), tables: ['public.spatial_ref_sys', 'partman.part_config', 'partman.part_config_sub'], force: true });
    assert.deepEqual((await pgQuery(target, "SELECT srid FROM spatial_ref_sys WHERE srid >= 990000 OR srid = 4326 ORDER BY srid")).rows, [{ srid: 990001 }], 'the SRID PostGIS owns is not the backup\'s to bring back');
    assert.deepEqual((await pgQuery(target, "SELECT retention FROM partman.part_config")).rows, [{ retention: '30 days' }]);
  });

  it("contrib's and PostGIS's types, operator-class indexes, an exclusion constraint, a foreign table and lo_manage large objects come back as the source has them, and verify", async function () {
    const sharedir = spawnSync('pg_config', ['--sharedir'], { encoding: 'utf8' }).stdout.trim() || '/usr/share/postgresql/15';
    if (!existsSync(path.join(sharedir, 'extension', 'postgis_raster.control'))) skipOrFail(this, 'PostGIS is not installed (apt-get install postgresql-15-postgis-3)');
    const server = new URL(PG_URL);
    const source = await databases.create(`
      CREATE EXTENSION hstore; CREATE EXTENSION citext; CREATE EXTENSION ltree; CREATE EXTENSION cube; CREATE EXTENSION seg; CREATE EXTENSION isn;
      CREATE EXTENSION intarray; CREATE EXTENSION earthdistance; CREATE EXTENSION btree_gist; CREATE EXTENSION pg_trgm; CREATE EXTENSION "uuid-ossp";
      CREATE EXTENSION pgcrypto; CREATE EXTENSION bloom; CREATE EXTENSION lo; CREATE EXTENSION postgres_fdw; CREATE EXTENSION postgis; CREATE EXTENSION postgis_raster;
      CREATE TABLE kv (id int PRIMARY KEY, h hstore, email citext UNIQUE, path ltree, c cube, s seg, i isbn13, arr int[], e earth, u uuid DEFAULT uuid_generate_v4(), pw text);
      CREATE INDEX ON kv USING gist (path); CREATE INDEX ON kv USING gin (email gin_trgm_ops); CREATE INDEX ON kv USING gin (h); CREATE INDEX ON kv USING gist (c);
      CREATE INDEX kv_bloom ON kv USING bloom (id);
      INSERT INTO kv VALUES (1, 'a=>1, "b c"=>NULL', 'Foo@Example.COM', 'top.science.astronomy', '(1,2),(3,4)', '1.5 .. 2.5', '978-0-306-40615-7', '{3,1,2}',
        ll_to_earth(52.5, 13.4), '00000000-0000-0000-0000-000000000001', crypt('secret', '$1$saltsalt'));
      CREATE TABLE bookings (room int, during tsrange, EXCLUDE USING gist (room WITH =, during WITH &&));
      INSERT INTO bookings VALUES (1, '[2026-01-01,2026-01-02)'), (1, '[2026-01-02,2026-01-03)');
      CREATE TABLE rasters (id int PRIMARY KEY, r raster);
      INSERT INTO rasters VALUES (1, ST_AddBand(ST_MakeEmptyRaster(4, 4, 0, 0, 1, -1, 0, 0, 4326), '8BUI'::text, 7, 0));
      CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '${server.hostname}', port '${server.port || '5432'}', dbname 'postgres');
      CREATE USER MAPPING FOR CURRENT_USER SERVER elsewhere;
      CREATE FOREIGN TABLE remote_roles (rolname name) SERVER elsewhere OPTIONS (schema_name 'pg_catalog', table_name 'pg_roles');
      CREATE TABLE blobs (id int PRIMARY KEY, data lo); INSERT INTO blobs VALUES (1, lo_from_bytea(0, 'hello'));
      CREATE TRIGGER blobs_lo BEFORE UPDATE OR DELETE ON blobs FOR EACH ROW EXECUTE FUNCTION lo_manage(data);`);
    const { target, repo, id } = await roundTrip(source);
    assert.equal(pgDump(target), pgDump(source));
    assert.deepEqual(await rowsByTable(target), await rowsByTable(source));
    assert.deepEqual((await pgQuery(target, "SELECT lo_get(data)::text AS data, pw = crypt('secret', pw) AS pw FROM blobs, kv")).rows, [{ data: '\\x68656c6c6f', pw: true }]);
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('a table without columns keeps its rows, in full and schema-only backups', async () => {
    const source = await databases.create(`
      CREATE TABLE nothing (); INSERT INTO nothing DEFAULT VALUES; INSERT INTO nothing DEFAULT VALUES; INSERT INTO nothing DEFAULT VALUES;
      CREATE TABLE something (x int); INSERT INTO something VALUES (1);`);
    const { target, repo, id } = await roundTrip(source);
    assert.equal((await pgQuery(target, 'SELECT count(*)::int AS n FROM nothing')).rows[0].n, 3);
    assert.equal(pgDump(target), pgDump(source).replaceAll(source, target));
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));

    const schemaOnly = await roundTrip(source, { schemaOnly: true });
    assert.equal((await pgQuery(schemaOnly.target, 'SELECT count(*)::int AS n FROM nothing')).rows[0].n, 0);
    const [schemaReport] = await schemaOnly.repo.verify({ id: schemaOnly.id }, { level: 'full' });
    assert.equal(schemaReport!.outcome, 'passed', JSON.stringify(schemaReport!.checks));
  });

  it('refreshes materialized views after those they read, in full and schema-only restores', async () => {
    // a_summary reads m_middle through a plain view, m_middle reads z_base: name order is backwards.
    const source = await databases.create(`
      CREATE TABLE sale (id int PRIMARY KEY, amount int);
      INSERT INTO sale SELECT i, i * 10 FROM generate_series(1, 100) i;
      CREATE MATERIALIZED VIEW z_base AS SELECT id, amount FROM sale WHERE amount > 100;
      CREATE MATERIALIZED VIEW m_middle AS SELECT id % 10 AS bucket, sum(amount) AS total FROM z_base GROUP BY 1;
      CREATE VIEW middle_view AS SELECT bucket, total FROM m_middle;
      CREATE MATERIALIZED VIEW a_summary AS SELECT count(*) AS buckets, sum(total) AS total FROM middle_view;`);
    const { target, repo, id } = await roundTrip(source);
    assert.deepEqual((await pgQuery(target, 'SELECT buckets::int, total::int FROM a_summary')).rows, (await pgQuery(source, 'SELECT buckets::int, total::int FROM a_summary')).rows);
    assert.equal(pgDump(target), pgDump(source).replaceAll(source, target));
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));

    const schemaOnly = await roundTrip(source, { schemaOnly: true });
    assert.deepEqual((await pgQuery(schemaOnly.target, 'SELECT buckets::int, total::int FROM a_summary')).rows, [{ buckets: 0, total: null }]);

    // A view that holds data over one that holds none could not be refreshed by a restore.
    await pgQuery(source, 'REFRESH MATERIALIZED VIEW z_base WITH NO DATA');
    await assert.rejects(repo.backup(pgUrl(source), { database: 'fidelity' }), (err: unknown) => {
      assert.ok(isStrataError(err, 'UNSUPPORTED_OBJECT'), String(err));
      assert.match(err.message, /materialized view public\.m_middle holds data but reads public\.z_base, which holds none/);
      return true;
    });
  });

  it('NOT VALID constraints of the source do not fail verification', async () => {
    const source = await databases.create(`
      CREATE TABLE account (id int PRIMARY KEY);
      CREATE TABLE payment (id int, account_id int, amount int);
      INSERT INTO account VALUES (1);
      INSERT INTO payment VALUES (1, 1, 10), (2, 99, -5);
      ALTER TABLE payment ADD CONSTRAINT positive CHECK (amount > 0) NOT VALID;
      ALTER TABLE payment ADD CONSTRAINT payment_account FOREIGN KEY (account_id) REFERENCES account (id) NOT VALID;`);
    const { target, repo, id } = await roundTrip(source);
    assert.equal(pgDump(target), pgDump(source).replaceAll(source, target));
    const [report] = await repo.verify({ id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    // The old rows were never checked against the NOT VALID foreign key, so verify does not say they were.
    assert.doesNotMatch(reasonOf(report!, 'data-consistency'), /foreign keys check out/);
  });

  describe('verification facts', () => {
    const FACTS_SQL = `
      CREATE TABLE pair (id int PRIMARY KEY, a int, b int, note text);
      INSERT INTO pair SELECT i, i, i * 2, 'n' || i FROM generate_series(1, 500) i;
      CREATE TABLE other (x text); INSERT INTO other VALUES ('a'), ('a'), ('b');`;

    it('come from the server, and differ when a restored value changes, moves between columns or between rows', async () => {
      const source = await databases.create(FACTS_SQL);
      const recorded = await backupFacts(pgUrl(source), dir.path);
      const { target } = await roundTrip(source);
      assert.deepEqual((await engine.inspect(pgUrl(target))).tables, recorded);
      const changes = [
        "UPDATE pair SET note = note || 'x' WHERE id = 7",
        'UPDATE pair SET a = b, b = a WHERE id = 8', // two values trade columns within a row
        'UPDATE pair SET b = CASE id WHEN 9 THEN 20 ELSE 18 END WHERE id IN (9, 10)', // one column's values trade rows
      ];
      for (const change of changes) {
        const copy = databases.name();
        await pgQuery('postgres', `CREATE DATABASE "${copy}" TEMPLATE "${target}"`);
        await pgQuery(copy, change);
        const facts = new Map((await engine.inspect(pgUrl(copy))).tables.map((t) => [t.name, t]));
        assert.equal(facts.get('public.pair')!.rows, 500, change);
        assert.notEqual(facts.get('public.pair')!.checksum, recorded.find((t) => t.name === 'public.pair')!.checksum, change);
        assert.deepEqual(facts.get('public.other'), recorded.find((t) => t.name === 'public.other'), change);
      }
    });

    it('a restore that changed one value fails a full verify, naming the table', async () => {
      const source = await databases.create(FACTS_SQL);
      const repo = await repository(new DoctoredRestoreEngine((client) => client.query(`UPDATE pair SET note = 'changed' WHERE id = 42`)));
      const record = await repo.backup(pgUrl(source), { database: 'fidelity' });
      const [report] = await repo.verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'failed');
      assert.equal(reasonOf(report!, 'data-consistency'), 'table public.pair content checksum differs from the recorded one');
    });
  });

  it('a verify of a restore that lost an index and a trigger names them', async () => {
    const source = await databases.create(`
      CREATE TABLE orders (id int PRIMARY KEY, customer text, total int);
      CREATE INDEX orders_by_customer ON orders (customer);
      CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.total := coalesce(NEW.total, 0); RETURN NEW; END $$;
      CREATE TRIGGER orders_stamp BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION stamp();
      INSERT INTO orders VALUES (1, 'ann', 5);`);
    const repo = await repository(new DoctoredRestoreEngine((client) => client.query('DROP INDEX orders_by_customer; DROP TRIGGER orders_stamp ON orders')));
    const record = await repo.backup(pgUrl(source), { database: 'fidelity' });
    const [report] = await repo.verify({ id: record.id }, { level: 'full' });
    assert.equal(report!.outcome, 'failed');
    assert.equal(
      reasonOf(report!, 'schema-integrity'),
      "the restored schema differs from the backup's: index public.orders_by_customer is missing; trigger public.orders orders_stamp is missing",
    );
  });
});
