import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { EngineRegistry, Passphrase, PostgresEngine, initRepository, isStrataError, openRepository } from '@strata/sdk';
import type { BackupRecord, Repository } from '@strata/sdk';
import { describeEngineConformance } from './conformance/engine-conformance.js';
import { json, strata, useTempDir, warningsOf } from './helpers/env.js';
import { Databases, pgDump, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';
import { MUTATE_POSTGRES_SQL, RICH_POSTGRES_SQL } from './helpers/rich-postgres.js';

const engine = new PostgresEngine();
const conformanceDatabases = new Databases();
const nameOf = (url: string): string => decodeURIComponent(new URL(url).pathname.slice(1));

describeEngineConformance('postgres', async (context) => {
  await requirePostgres(context);
  return {
    engine,
    registry: new EngineRegistry().register(engine),
    createRich: async () => pgUrl(await conformanceDatabases.create(RICH_POSTGRES_SQL)),
    mutate: async (url, seed) => void (await pgQuery(nameOf(url), MUTATE_POSTGRES_SQL(seed))),
    newTarget: async () => pgUrl(conformanceDatabases.name()),
    dump: async (url) => pgDump(nameOf(url)),
    dumpSchema: async (url) => pgDump(nameOf(url), ['--schema-only']),
    exec: async (url, sql) => void (await pgQuery(nameOf(url), sql)),
    query: async (url, sql) => JSON.stringify((await pgQuery(nameOf(url), sql)).rows),
    exists: async (url) => (await pgQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [nameOf(url)])).rowCount === 1,
    leftovers: async (url) => (await pgQuery('postgres', 'SELECT datname FROM pg_database WHERE starts_with(datname, $1)', [`${nameOf(url)}__strata_`])).rows.map((r) => r.datname as string),
    cleanup: () => conformanceDatabases.dropAll(),
  };
});

describe('PostgreSQL engine', function () {
  const dir = useTempDir();
  const databases = new Databases();
  const passphrase = new Passphrase('postgres tests');
  let repo: Repository;

  before(async function () {
    await requirePostgres(this);
  });

  beforeEach(async () => {
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    repo = await openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
  });

  afterEach(async () => {
    await repo.close();
    await databases.dropAll();
  });

  it('oracle: pg_dump of the source and of the restored database are identical (schema and data)', async () => {
    const source = await databases.create(RICH_POSTGRES_SQL);
    const record = await repo.backup(pgUrl(source), { database: 'shop' });
    const target = databases.name();
    await repo.restore({ id: record.id }, { to: pgUrl(target) });
    assert.equal(pgDump(target, ['--schema-only']), pgDump(source, ['--schema-only']));
    assert.equal(pgDump(target), pgDump(source));
    // A name the server would cut to 63 bytes is refused, not restored under the cut name.
    const long = `${target}_${'é'.repeat(30)}`;
    await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(long) }), (err: unknown) => isStrataError(err, 'USAGE') && /is \d+ bytes long; the server keeps at most 63/.test((err as Error).message));
  });

  it('builds indexes and constraints two at a time, each in the tablespace the source had (pg_dump sets it only where it changes)', async () => {
    // A tablespace of the test server's machine, removed afterwards; the server process must own its folder.
    const location = path.join(dir.path, 'ts');
    mkdirSync(location, { mode: 0o700 });
    if (process.getuid?.() === 0) spawnSync('chown', ['postgres', location, dir.path]);
    const tablespace = `strata_ts_${process.pid}`;
    await pgQuery('postgres', `CREATE TABLESPACE ${tablespace} LOCATION '${location}'`);
    try {
      const statements = ['CREATE TABLE parent (id int PRIMARY KEY, code text UNIQUE)', 'INSERT INTO parent SELECT g, g::text FROM generate_series(1, 5000) g'];
      for (let t = 0; t < 4; t++) {
        statements.push(`CREATE TABLE t${t} (id int, parent_id int REFERENCES parent (id), a int, b text)`, `INSERT INTO t${t} SELECT g, 1 + g % 5000, g % 97, md5(g::text) FROM generate_series(1, 20000) g`);
        statements.push(`ALTER TABLE t${t} ADD CONSTRAINT t${t}_pkey PRIMARY KEY (id)${t % 2 === 0 ? ` USING INDEX TABLESPACE ${tablespace}` : ''}`);
        for (let i = 0; i < 4; i++) statements.push(`CREATE INDEX t${t}_i${i} ON t${t} (${i % 2 === 0 ? 'a' : 'b'}, id)${(t + i) % 3 === 0 ? ` TABLESPACE ${tablespace}` : ''}`);
      }
      const source = await databases.create(`${statements.join(';\n')};`);
      const record = await repo.backup(pgUrl(source), { database: 'spaced' });
      const target = databases.name();
      await repo.restore({ id: record.id }, { to: pgUrl(target) });
      const placed = async (db: string): Promise<string> =>
        JSON.stringify((await pgQuery(db, "SELECT indexname, coalesce(tablespace, '') AS ts FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname")).rows);
      assert.equal(await placed(target), await placed(source));
      assert.match(await placed(target), new RegExp(tablespace), 'some indexes are in the tablespace');
      assert.equal(pgDump(target, ['--schema-only']), pgDump(source, ['--schema-only']));
      const [report] = await repo.verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report));
    } finally {
      await databases.dropAll();
      await pgQuery('postgres', `DROP TABLESPACE IF EXISTS ${tablespace}`);
    }
  });

  it('incrementals store only the chunks around changed rows and restore exactly', async () => {
    const source = await databases.create(RICH_POSTGRES_SQL);
    const full = await repo.backup(pgUrl(source), { database: 'shop' });
    await pgQuery(source, MUTATE_POSTGRES_SQL(1));
    const inc = await repo.backup(pgUrl(source), { database: 'shop', type: 'incremental' });
    const expected = pgDump(source);
    await pgQuery(source, MUTATE_POSTGRES_SQL(2));
    const diff = await repo.backup(pgUrl(source), { database: 'shop', type: 'differential' });
    assert.ok(inc.payloadBytes < full.payloadBytes / 4, `incremental stored ${inc.payloadBytes} of ${full.payloadBytes} bytes`);
    const target = databases.name();
    await repo.restore({ id: inc.id }, { to: pgUrl(target) });
    assert.equal(pgDump(target), expected);
    const target2 = databases.name();
    await repo.restore({ id: diff.id }, { to: pgUrl(target2) });
    assert.equal(pgDump(target2), pgDump(source));
    const [report] = await repo.verify({ id: inc.id }, { level: 'full' });
    assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
  });

  it('replaces the rows of chosen tables in one transaction, parents before children', async () => {
    const source = await databases.create(RICH_POSTGRES_SQL);
    const record = await repo.backup(pgUrl(source), { database: 'shop' });
    const live = await databases.create(RICH_POSTGRES_SQL);
    await pgQuery(live, `DELETE FROM shop.orders WHERE id % 2 = 0; UPDATE shop.customers SET name = 'changed'; INSERT INTO public.no_pk VALUES (999, 'keep me')`);
    await repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['shop.orders', 'customers'], force: true });
    const count = async (db: string, sql: string) => (await pgQuery(db, sql)).rows[0].n as string;
    assert.equal(await count(live, 'SELECT count(*) AS n FROM shop.orders'), await count(source, 'SELECT count(*) AS n FROM shop.orders'));
    assert.equal(await count(live, "SELECT count(*) AS n FROM shop.customers WHERE name = 'changed'"), '0');
    assert.equal(await count(live, 'SELECT count(*) AS n FROM public.no_pk WHERE a = 999'), '1', 'other tables keep their rows');
  });

  it('a table restore blocked by another session\'s open transaction stops on an interruption, and gives up after the wait it was given; the rows stay as they were', async function () {
    this.timeout(300_000);
    const source = await databases.create(RICH_POSTGRES_SQL);
    const record = await repo.backup(pgUrl(source), { database: 'shop' });
    const live = await databases.create(RICH_POSTGRES_SQL);
    await pgQuery(live, "UPDATE shop.customers SET name = 'changed'");
    const before = pgDump(live, ['--data-only']);
    // An application's transaction that wrote to the table and was left open.
    const holder = new pg.Client({ connectionString: pgUrl(live), application_name: 'the app' });
    await holder.connect();
    try {
      await holder.query("BEGIN; UPDATE shop.customers SET name = 'changed' WHERE id = 1");
      const waiting = async (): Promise<boolean> => (await pgQuery(live, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name = 'strata restore'")).rowCount! > 0;
      const interruption = new AbortController();
      const restoring = repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['customers'], force: true, signal: interruption.signal });
      const settled = restoring.then(() => undefined, () => undefined);
      for (let i = 0; !(await waiting()); i++) {
        assert.ok(i < 1200, 'the restore never waited for the lock');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      interruption.abort();
      await assert.rejects(restoring, (err: unknown) => isStrataError(err, 'ABORTED') && /restore: interrupted; the rows of shop.customers were not changed/.test((err as Error).message));
      await settled;
      assert.equal(pgDump(live, ['--data-only']), before);

      // Not interrupted: it waits as long as it was told (30 s unless told), then says who holds the table.
      const waitStarted = Date.now();
      await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['customers'], force: true, lockWaitSeconds: 10 }), (err: unknown) => {
        assert.ok(isStrataError(err, 'DATABASE_LOCKED'), String(err));
        assert.match((err as Error).message, /other sessions kept shop.customers locked for 10 s \(pid \d+ \(the app\), idle in transaction since .+\); .*nothing was changed/);
        return true;
      });
      assert.ok(Date.now() - waitStarted >= 10_000, 'the restore waited the 10 s it was given');
      assert.equal(pgDump(live, ['--data-only']), before);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }
    // Once the transaction ended, the restore goes ahead (with the table that refers to customers).
    await repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['shop.orders', 'customers'], force: true });
    assert.equal((await pgQuery(live, "SELECT count(*) AS n FROM shop.customers WHERE name = 'changed'")).rows[0].n, '0');
  });

  it('refuses a table the backup does not have, and one whose replacement would orphan rows elsewhere', async () => {
    const source = await databases.create(RICH_POSTGRES_SQL);
    const record = await repo.backup(pgUrl(source), { database: 'shop' });
    const live = await databases.create(RICH_POSTGRES_SQL);
    await pgQuery(live, `INSERT INTO shop.customers (email, name) VALUES ('only@live.org', 'only live'); INSERT INTO shop.orders (customer_id, total, placed) SELECT max(id), 1, DATE '2026-02-02' FROM shop.customers`);
    const before = pgDump(live);
    await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['nosuch'], force: true }), (err: unknown) => isStrataError(err, 'TABLE_NOT_FOUND'));
    await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['shop.customers'], force: true }), /foreign key.*include the related tables/);
    assert.equal(pgDump(live), before, 'nothing changed');
  });

  it('refuses a table restore when a table outside --tables refers to a chosen one (ON DELETE CASCADE, SET NULL), before changing anything', async () => {
    const sql = `CREATE TABLE parent (id int PRIMARY KEY, name text);
      CREATE TABLE cascading (id int PRIMARY KEY, parent_id int REFERENCES parent ON DELETE CASCADE);
      CREATE TABLE nulling (id int PRIMARY KEY, parent_id int REFERENCES parent ON DELETE SET NULL, self_id int REFERENCES nulling);
      INSERT INTO parent SELECT g, 'parent ' || g FROM generate_series(1, 5) g;
      INSERT INTO cascading SELECT g, 1 + g % 5 FROM generate_series(1, 20) g;
      INSERT INTO nulling SELECT g, 1 + g % 5, NULLIF(g - 1, 0) FROM generate_series(1, 20) g;`;
    const source = await databases.create(sql);
    const record = await repo.backup(pgUrl(source), { database: 'related' });
    const live = await databases.create(sql);
    await pgQuery(live, `UPDATE parent SET name = 'changed'; INSERT INTO cascading VALUES (100, 1); INSERT INTO nulling VALUES (100, 2, 1)`);
    const before = pgDump(live);
    const refused = (children: string[], suggested: string) => (err: unknown) => {
      assert.ok(isStrataError(err, 'USAGE'), String(err));
      for (const child of children) assert.match(err.message, new RegExp(`public\\.${child} → public\\.parent`));
      assert.ok(err.message.endsWith(`include the related tables in --tables: --tables ${suggested}`), err.message);
      return true;
    };
    await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['parent'], force: true }), refused(['cascading', 'nulling'], 'public.parent,public.cascading,public.nulling'));
    await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['parent', 'cascading'], force: true }), refused(['nulling'], 'public.cascading,public.parent,public.nulling'));
    await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['parent', 'nulling'], force: true }), refused(['cascading'], 'public.nulling,public.parent,public.cascading'));
    assert.equal(pgDump(live), before, 'nothing changed: the children keep their rows');
    assert.equal((await pgQuery(live, 'SELECT count(*) AS n FROM cascading')).rows[0].n, '21');

    await repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['parent', 'cascading', 'nulling'], force: true });
    const rows = async (db: string, table: string) => JSON.stringify((await pgQuery(db, `SELECT * FROM ${table} ORDER BY id`)).rows);
    for (const table of ['parent', 'cascading', 'nulling']) assert.equal(await rows(live, table), await rows(source, table), table);
  });

  it("replaces rows without running the tables' triggers or DELETE rules, whose enabled states stay as they were, also when the restore fails", async () => {
    const sql = `CREATE TABLE owners (id int PRIMARY KEY);
      CREATE TABLE items (id int PRIMARY KEY, owner_id int REFERENCES owners, name text, updated_at timestamptz);
      CREATE TABLE audit (what text);
      INSERT INTO owners SELECT generate_series(1, 3);
      INSERT INTO items SELECT g, 1 + g % 3, 'item ' || g, TIMESTAMPTZ '2026-01-01 00:00:00Z' FROM generate_series(1, 30) g;
      CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := upper(NEW.name); NEW.updated_at := now(); RETURN NEW; END $$;
      CREATE FUNCTION audited() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit VALUES (TG_NAME); RETURN NULL; END $$;
      CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'trigger % must not run', TG_NAME; END $$;
      CREATE TRIGGER items_touch BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION touch();
      CREATE TRIGGER items_audit AFTER DELETE ON items FOR EACH ROW EXECUTE FUNCTION audited();
      CREATE TRIGGER items_always AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION audited();
      ALTER TABLE items ENABLE ALWAYS TRIGGER items_always;
      CREATE TRIGGER items_replica AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION audited();
      ALTER TABLE items ENABLE REPLICA TRIGGER items_replica;
      CREATE TRIGGER items_off BEFORE INSERT OR DELETE ON items FOR EACH ROW EXECUTE FUNCTION refuse();
      ALTER TABLE items DISABLE TRIGGER items_off;
      CREATE RULE items_keep AS ON DELETE TO items WHERE OLD.id % 2 = 0 DO INSTEAD NOTHING;
      CREATE RULE items_also AS ON DELETE TO items DO ALSO INSERT INTO audit VALUES ('rule');
      ALTER TABLE items ENABLE ALWAYS RULE items_also;
      CREATE RULE items_off_rule AS ON DELETE TO items DO INSTEAD NOTHING;
      ALTER TABLE items DISABLE RULE items_off_rule;`;
    const source = await databases.create(sql);
    const record = await repo.backup(pgUrl(source), { database: 'triggered' });
    const live = await databases.create(sql);
    await pgQuery(live, `UPDATE items SET name = 'changed' WHERE id <= 10; DELETE FROM items WHERE id > 25`);
    const items = async (db: string) => JSON.stringify((await pgQuery(db, 'SELECT id, owner_id, name, updated_at::text FROM items ORDER BY id')).rows);
    const audited = async () => (await pgQuery(live, 'SELECT count(*) AS n FROM audit')).rows[0].n as string;
    const triggers = async () => JSON.stringify((await pgQuery(live, "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal ORDER BY tgname")).rows);
    const rules = async () => JSON.stringify((await pgQuery(live, "SELECT rulename, ev_enabled FROM pg_rewrite WHERE ev_class = 'items'::regclass ORDER BY rulename")).rows);
    const states = await triggers();
    assert.equal(states, JSON.stringify([
      { tgname: 'items_always', tgenabled: 'A' }, { tgname: 'items_audit', tgenabled: 'O' }, { tgname: 'items_off', tgenabled: 'D' },
      { tgname: 'items_replica', tgenabled: 'R' }, { tgname: 'items_touch', tgenabled: 'O' },
    ]));
    const ruleStates = await rules();
    assert.equal(ruleStates, JSON.stringify([{ rulename: 'items_also', ev_enabled: 'A' }, { rulename: 'items_keep', ev_enabled: 'O' }, { rulename: 'items_off_rule', ev_enabled: 'D' }]));
    const auditedBefore = await audited();
    // The live copy's DELETE of ids 26–30: the DO INSTEAD rule kept the even ones, the trigger
    // wrote for the two deleted, the DO ALSO rule for all five.
    assert.equal(auditedBefore, '7', 'the triggers and rules work outside the restore');
    assert.equal((await pgQuery(live, 'SELECT count(*) AS n FROM items WHERE id > 25')).rows[0].n, '3');

    await repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['items'], force: true });
    assert.equal(await items(live), await items(source), "the backup's rows, as they were");
    assert.equal(await audited(), auditedBefore, 'no trigger or rule wrote to the audit table');
    assert.equal(await triggers(), states);
    assert.equal(await rules(), ruleStates);

    // A failure after the triggers were switched off (the backup's items refer to an owner the
    // target no longer has) rolls everything back, the triggers' states too.
    await pgQuery(live, 'ALTER TABLE items DISABLE RULE items_keep; DELETE FROM items WHERE owner_id = 3; DELETE FROM owners WHERE id = 3; ALTER TABLE items ENABLE RULE items_keep');
    const before = pgDump(live);
    await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['items'], force: true }), (err: unknown) => isStrataError(err, 'USAGE') && /would break a foreign key/.test(err.message));
    assert.equal(pgDump(live), before, 'nothing changed');
    assert.equal(await triggers(), states);
    assert.equal(await rules(), ruleStates);
  });

  it("refuses a table restore into a table whose columns are of other types than the backup's (values would be rounded), naming them, with nothing changed", async () => {
    const sql = `CREATE SCHEMA app; CREATE TYPE app.mood AS ENUM ('sad', 'ok');
      CREATE TABLE money (id int PRIMARY KEY, amt numeric(12,4), f double precision, at timestamp(6), m app.mood);
      INSERT INTO money VALUES (1, 12.3456, 1.0000001, '2024-01-01 10:00:00.987654', 'ok'), (2, -0.0049, 3.14159265358979, '2024-01-01 10:00:00.5', NULL);`;
    const source = await databases.create(sql);
    const record = await repo.backup(pgUrl(source), { database: 'types' });
    const target = await databases.create(sql);
    await pgQuery(target, 'ALTER TABLE money ALTER amt TYPE numeric(12,1), ALTER f TYPE real, ALTER at TYPE timestamp(0)');
    const before = pgDump(target);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: pgUrl(target), tables: ['money'], force: true }),
      (err: unknown) =>
        isStrataError(err, 'USAGE') &&
        /public\.money\.amt numeric\(12,1\) \(the backup's numeric\(12,4\)\), public\.money\.f real \(the backup's double precision\), public\.money\.at timestamp\(0\) without time zone \(the backup's timestamp\(6\) without time zone\);.*nothing was changed/.test(err.message),
    );
    assert.equal(pgDump(target), before);
    // The same types, in a database whose search_path makes app.mood read as mood: restored.
    const same = await databases.create(sql);
    await pgQuery('postgres', `ALTER DATABASE "${same}" SET search_path = app, public`);
    await pgQuery(same, 'DELETE FROM money');
    await repo.restore({ id: record.id }, { to: pgUrl(same), tables: ['money'], force: true });
    const rows = async (db: string) => JSON.stringify((await pgQuery(db, 'SELECT * FROM public.money ORDER BY id')).rows);
    assert.equal(await rows(same), await rows(source));
  });

  it('refuses a table restore into a table that lost a column of the backup (dropped or renamed), and says which columns added since take their defaults', async () => {
    const sql = `CREATE TABLE t (id int PRIMARY KEY, v text, "Odd" int); INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20);`;
    const source = await databases.create(sql);
    const record = await repo.backup(pgUrl(source), { database: 'columns' });
    const renamed = await databases.create(`${sql} ALTER TABLE t RENAME v TO w; ALTER TABLE t DROP "Odd";`);
    const before = pgDump(renamed);
    await assert.rejects(
      repo.restore({ id: record.id }, { to: pgUrl(renamed), tables: ['t'], force: true }),
      (err: unknown) => isStrataError(err, 'USAGE') && /the target's tables lack columns the backup has: public\.t\.v, public\.t\.Odd \(dropped or renamed since the backup\).*nothing was changed/.test(err.message),
    );
    assert.equal(pgDump(renamed), before);
    const added = await databases.create(`${sql} ALTER TABLE t ADD extra int DEFAULT 7, ADD note text; UPDATE t SET extra = 99, note = 'x';`);
    const { warnings } = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(added), tables: ['t'], force: true }));
    assert.deepEqual((await pgQuery(added, 'SELECT id, v, "Odd", extra, note FROM t ORDER BY id')).rows, [
      { id: 1, v: 'a', Odd: 10, extra: 7, note: null },
      { id: 2, v: 'b', Odd: 20, extra: 7, note: null },
    ]);
    assert.deepEqual(warnings, ["restore: public.t.extra, public.t.note are not in the backup (added since): the restored rows have those columns' default"]);
  });

  it("a table restore leaves a sequence another table's default also draws from no further back than it is, and says so", async () => {
    const sql = `CREATE TABLE t1 (id serial PRIMARY KEY, v text);
      CREATE TABLE t2 (id int PRIMARY KEY DEFAULT nextval('t1_id_seq'), v text);
      INSERT INTO t1 (v) VALUES ('a'), ('b'); INSERT INTO t2 (v) VALUES ('c');`;
    const live = await databases.create(sql);
    const record = await repo.backup(pgUrl(live), { database: 'shared-sequence' });
    await pgQuery(live, "INSERT INTO t1 (v) VALUES ('d'); INSERT INTO t2 (v) VALUES ('e')");
    const { warnings } = await warningsOf(() => repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['t1'], force: true }));
    assert.deepEqual(warnings, [
      "restore: sequence public.t1_id_seq is also used by public.t2, which the restore leaves as it is: it stays where it is rather than going back to the backup's position, so those tables' next ids do not come again",
    ]);
    assert.deepEqual((await pgQuery(live, "INSERT INTO t2 (v) VALUES ('f') RETURNING id")).rows, [{ id: 6 }]);
    assert.deepEqual((await pgQuery(live, 'SELECT id, v FROM t1 ORDER BY id')).rows, [{ id: 1, v: 'a' }, { id: 2, v: 'b' }]);
    // Named with it, the other table is restored too, and the sequence goes back with both.
    await repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['t1', 't2'], force: true });
    assert.deepEqual((await pgQuery(live, "INSERT INTO t2 (v) VALUES ('g') RETURNING id")).rows, [{ id: 4 }]);
  });

  it('a backup that row-level security would cut short is refused as access denied (exit 7), naming the table and the role it needs', async () => {
    const owner = `strata_rls_${Date.now().toString(36)}`;
    await pgQuery('postgres', `CREATE ROLE "${owner}" LOGIN`);
    try {
      const source = await databases.create(`CREATE TABLE fr (id int PRIMARY KEY); INSERT INTO fr VALUES (1), (2);
        ALTER TABLE fr OWNER TO "${owner}"; ALTER TABLE fr ENABLE ROW LEVEL SECURITY; ALTER TABLE fr FORCE ROW LEVEL SECURITY;
        CREATE POLICY only_one ON fr USING (id = 1); GRANT CREATE ON SCHEMA public TO "${owner}";`);
      const url = new URL(pgUrl(source));
      url.username = owner;
      const cliRepo = path.join(dir.path, 'rls-repo');
      assert.equal(strata(['init', '--repo', cliRepo]).status, 0);
      const result = strata(['backup', url.toString(), '--repo', cliRepo]);
      assert.equal(result.status, 7, result.stderr);
      assert.match(result.stderr, /copying table public\.fr was refused: .*row-level security.*; back up \(and verify\) as a superuser or a role with BYPASSRLS/);
    } finally {
      await pgQuery('postgres', `DROP OWNED BY "${owner}"`).catch(() => undefined);
      await pgQuery('postgres', `DROP ROLE IF EXISTS "${owner}"`).catch(() => undefined);
    }
  });

  it('restores a table of a schema whose name has a dot', async () => {
    const sql = `CREATE SCHEMA "my.schema"; CREATE TABLE "my.schema".t (id serial PRIMARY KEY, v text); INSERT INTO "my.schema".t (v) SELECT 'v' || g FROM generate_series(1, 10) g`;
    const source = await databases.create(sql);
    const record = await repo.backup(pgUrl(source), { database: 'dotted' });
    const live = await databases.create(sql);
    await pgQuery(live, `DELETE FROM "my.schema".t WHERE id > 5; UPDATE "my.schema".t SET v = 'changed'; INSERT INTO "my.schema".t (v) SELECT 'new' FROM generate_series(1, 20)`);
    await repo.restore({ id: record.id }, { to: pgUrl(live), tables: ['my.schema.t'], force: true });
    const state = async (db: string) => JSON.stringify([(await pgQuery(db, 'SELECT * FROM "my.schema".t ORDER BY id')).rows, (await pgQuery(db, 'SELECT last_value FROM "my.schema".t_id_seq')).rows]);
    assert.equal(await state(live), await state(source));
  });

  it('tells apart tables whose plainly joined names are the same ("a.b".c and a."b.c"): verify checks each, --tables picks one by quoting', async () => {
    const sql = `CREATE SCHEMA "a.b"; CREATE SCHEMA a;
      CREATE TABLE "a.b".c (id serial PRIMARY KEY, v text); INSERT INTO "a.b".c (v) SELECT 'x' || g FROM generate_series(1, 10) g;
      CREATE TABLE a."b.c" (id serial PRIMARY KEY, v text); INSERT INTO a."b.c" (v) SELECT 'y' || g FROM generate_series(1, 3) g;
      CREATE TABLE "say ""hi""" (id int PRIMARY KEY); INSERT INTO "say ""hi""" VALUES (7)`;
    const source = await databases.create(sql);
    const cliRepo = path.join(dir.path, 'cli-repo');
    assert.equal(strata(['init', '--repo', cliRepo]).status, 0);
    const backup = strata(['backup', pgUrl(source), '--repo', cliRepo, '--name', 'joined', '--json']);
    assert.equal(backup.status, 0, backup.stderr);
    const id = json<{ id: string }>(backup).id;
    const names = (await engine.inspect(pgUrl(source))).tables.map((t) => t.name).sort();
    assert.deepEqual(names, ['"a.b".c', 'a."b.c"', 'pg_sequences', 'public."say ""hi"""']);
    // Both tables were `a.b.c` before, and verify compared the one restored table with both records.
    const verify = strata(['verify', id, '--repo', cliRepo, '--level', 'full']);
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);

    const live = await databases.create(sql);
    await pgQuery(live, `UPDATE "a.b".c SET v = 'changed'; UPDATE a."b.c" SET v = 'changed'; INSERT INTO a."b.c" (v) VALUES ('new'); INSERT INTO "a.b".c (v) VALUES ('live only'); DELETE FROM "say ""hi"""`);
    const rows = async (db: string, table: string): Promise<string> => JSON.stringify((await pgQuery(db, `SELECT * FROM ${table} ORDER BY 1`)).rows);
    const sequence = async (db: string, seq: string): Promise<string> => JSON.stringify((await pgQuery(db, `SELECT last_value FROM ${seq}`)).rows);
    const restore = (tables: string): ReturnType<typeof strata> => strata(['restore', id, '--repo', cliRepo, '--to', pgUrl(live), '--tables', tables, '--force', '--yes']);

    const before = pgDump(live);
    const plain = restore('a.b.c');
    assert.equal(plain.status, 2, plain.stderr);
    assert.match(plain.stderr, /a\.b\.c is ambiguous \((a\."b\.c", "a\.b"\.c|"a\.b"\.c, a\."b\.c")\); name one of them as written here/);
    assert.equal(pgDump(live), before, 'nothing changed');

    const quoted = restore('a."b.c"');
    assert.equal(quoted.status, 0, quoted.stderr);
    assert.equal(await rows(live, 'a."b.c"'), await rows(source, 'a."b.c"'));
    assert.equal(await sequence(live, 'a."b.c_id_seq"'), await sequence(source, 'a."b.c_id_seq"'));
    assert.notEqual(await rows(live, '"a.b".c'), await rows(source, '"a.b".c'), 'the other table is left as it was');
    assert.equal(await sequence(live, '"a.b".c_id_seq'), '[{"last_value":"11"}]', "and so is its sequence, whose owner's plainly joined name is the same");

    // The schema quoted, the table alone, and a whole-quoted name with a quote inside each mean one table.
    for (const [tables, table] of [['"a.b".c', '"a.b".c'], ['c', '"a.b".c'], ['"say ""hi"""', '"say ""hi"""']] as const) {
      await pgQuery(live, `DELETE FROM ${table}`);
      const result = restore(tables);
      assert.equal(result.status, 0, `${tables}: ${result.stderr}`);
      assert.equal(await rows(live, table), await rows(source, table), tables);
    }
  });

  describe('bad input', () => {
    it('names the wrong host, port, database or user, and never prints the password', async () => {
      const url = (part: string) => `postgres://nobody:sekrit-pw@${part}`;
      const cases: [string, string, RegExp][] = [
        [url('no-such-host.invalid:5432/x'), 'CONNECTION_FAILED', /host no-such-host\.invalid cannot be resolved/],
        [url('127.0.0.1:1/x'), 'CONNECTION_FAILED', /nothing accepts connections on 127\.0\.0\.1:1/],
        [`postgres://postgres:sekrit-pw@${new URL(pgUrl('x')).host}/strata_no_such_db`, 'DATABASE_NOT_FOUND', /database "strata_no_such_db" does not exist/],
        [url(`${new URL(pgUrl('x')).host}/postgres`), 'AUTH_FAILED', /authentication failed for user "nobody"/],
      ];
      for (const [locator, code, message] of cases) {
        const result = strata(['backup', locator, '--repo', path.join(dir.path, 'repo'), '--name', 'x', '--json'], { env: { STRATA_PASSPHRASE: 'postgres tests' } });
        assert.equal(result.status, 1, result.stderr);
        const error = json<{ error: { code: string; message: string } }>(result).error;
        assert.equal(error.code, code, error.message);
        assert.match(error.message, message);
        assert.ok(!result.stdout.includes('sekrit-pw') && !result.stderr.includes('sekrit-pw'), 'the password is never printed');
      }
      const journal = JSON.stringify(await repo.journal.records());
      assert.ok(!journal.includes('sekrit-pw'));
    });

    it('a server connection that dies mid-backup fails the backup and leaves nothing that looks valid', async () => {
      const source = await databases.create(RICH_POSTGRES_SQL);
      let killed = false;
      await assert.rejects(
        repo.backup(pgUrl(source), {
          database: 'shop',
          onProgress: (e) => {
            if (e.phase === 'write' && !killed) {
              killed = true;
              // Synchronously, so the connection is gone before the backup reads another byte.
              const url = new URL(pgUrl('postgres'));
              spawnSync('psql', ['-h', url.hostname, '-p', url.port || '5432', '-U', decodeURIComponent(url.username || 'postgres'), '-d', 'postgres', '-c',
                `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${source}' AND application_name = 'strata backup'`]);
            }
          },
        }),
        (err: unknown) => isStrataError(err) && ['CONNECTION_FAILED', 'IO'].includes(err.code),
      );
      assert.deepEqual(await repo.list(), []);
      const last = (await repo.journal.operations()).at(-1)!;
      assert.equal(last.status, 'FAILED');
    });

    it('an existing target database without --force', async () => {
      const source = await databases.create(RICH_POSTGRES_SQL);
      const record = await repo.backup(pgUrl(source), { database: 'shop' });
      const existing = await databases.create('CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)');
      await assert.rejects(repo.restore({ id: record.id }, { to: pgUrl(existing) }), (err: unknown) => isStrataError(err, 'TARGET_EXISTS'));
      assert.equal((await pgQuery(existing, 'SELECT x FROM precious')).rows[0].x, 42);
      await repo.restore({ id: record.id }, { to: pgUrl(existing), force: true });
      assert.equal(pgDump(existing), pgDump(source).replaceAll(source, existing));
    });

    it('a missing pg_dump is a clear error', async () => {
      const source = await databases.create('CREATE TABLE t (x int)');
      const result = strata(['backup', pgUrl(source), '--repo', path.join(dir.path, 'repo'), '--json'], { env: { STRATA_PASSPHRASE: 'postgres tests', PATH: '/nonexistent' } });
      assert.equal(result.status, 1);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'TOOL_MISSING');
      assert.match(error.message, /pg_dump is not installed/);
    });
  });

  it('lists PostgreSQL backups with their engine and a source URL without secrets', async () => {
    const source = await databases.create('CREATE TABLE t (x int); INSERT INTO t VALUES (1)');
    const url = new URL(pgUrl(source));
    url.password = 'hidden-pw';
    await repo.backup(url.toString(), { database: 'small' });
    const [b] = (await repo.list()) as BackupRecord[];
    assert.equal(b!.engine, 'postgres');
    assert.ok(!b!.source.includes('hidden-pw'));
  });
});
