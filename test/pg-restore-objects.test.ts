import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { Passphrase, PostgresEngine } from '@strata/sdk';
import { useRepositoryPerTest, useTempDir, warningsOf } from './helpers/env.js';
import { Databases, pgDump, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';

const engine = new PostgresEngine();

describe('PostgreSQL engine: objects a whole-database restore must bring back as they were', function () {
  const dir = useTempDir();
  const databases = new Databases();
  const passphrase = new Passphrase('postgres restore objects tests');
  const repo = useRepositoryPerTest(dir, passphrase, () => databases.dropAll());

  before(async function () {
    await requirePostgres(this);
  });

  const eventTriggers = async (database: string) =>
    (await pgQuery(database, 'SELECT evtname AS name, evtenabled AS mode FROM pg_event_trigger ORDER BY 1')).rows;

  describe('the public schema', () => {
    const publicSchema = async (database: string) =>
      (await pgQuery(database, "SELECT nspowner::regrole::text AS owner, nspacl::text AS acl, obj_description(oid, 'pg_namespace') AS comment FROM pg_namespace WHERE nspname = 'public'")).rows;

    /** Restores the source's backup into a new database, checks it is the source's and passes verify; returns the new database. */
    const restoresAsItWas = async (source: string): Promise<string> => {
      const record = await repo().backup(pgUrl(source), { database: 'pub' });
      const target = databases.name();
      await repo().restore({ id: record.id }, { to: pgUrl(target) });
      assert.deepEqual(await publicSchema(target), await publicSchema(source));
      assert.equal(pgDump(target, ['--schema-only']), pgDump(source, ['--schema-only']));
      const [report] = await repo().verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
      return target;
    };

    /** The schema objects verify compares, of two databases, that differ (none when their fingerprints agree). */
    const schemaDifference = async (a: string, b: string): Promise<string[]> => {
      const [x, y] = [await engine.inspect(pgUrl(a)), await engine.inspect(pgUrl(b))];
      const keys = new Set([...Object.keys(x.schemaObjects!), ...Object.keys(y.schemaObjects!)]);
      const differing = [...keys].filter((k) => x.schemaObjects![k] !== y.schemaObjects![k]).sort();
      assert.equal(x.schemaFingerprint === y.schemaFingerprint, differing.length === 0);
      return differing;
    };

    it('a database without one is restored without one, and verifies; a restore that brought it back would not', async () => {
      const source = await databases.create("DROP SCHEMA public; CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v text); INSERT INTO app.t VALUES (1, 'one')");
      const target = await restoresAsItWas(source);
      assert.deepEqual(await publicSchema(target), []);
      assert.deepEqual((await pgQuery(target, 'SELECT * FROM app.t')).rows, [{ id: 1, v: 'one' }]);
      assert.deepEqual(await schemaDifference(source, target), []);
      await pgQuery(target, 'CREATE SCHEMA public');
      assert.ok((await schemaDifference(source, target)).includes('schema public'));
    });

    it('a public schema whose comment was removed comes back without it; one with its own comment, owner and grants with them', async () => {
      const source = await databases.create('COMMENT ON SCHEMA public IS NULL; CREATE TABLE t (id int PRIMARY KEY)');
      const target = await restoresAsItWas(source);
      assert.equal((await publicSchema(target))[0].comment, null);
      await pgQuery(target, "COMMENT ON SCHEMA public IS 'standard public schema'");
      assert.ok((await schemaDifference(source, target)).includes('comment SCHEMA "public"'));

      const owner = `strata_role_${randomBytes(4).toString('hex')}`;
      await pgQuery('postgres', `CREATE ROLE "${owner}"`);
      try {
        const own = await databases.create(`ALTER SCHEMA public OWNER TO "${owner}"; REVOKE ALL ON SCHEMA public FROM PUBLIC; COMMENT ON SCHEMA public IS 'ours; with ''quotes'''`);
        const restored = await restoresAsItWas(own);
        assert.equal((await publicSchema(restored))[0].comment, "ours; with 'quotes'");
        await databases.dropAll();
      } finally {
        await pgQuery('postgres', `DROP ROLE IF EXISTS "${owner}"`);
      }
    });
  });

  it('a restore as a role that is not a superuser, of objects owned by others, fails saying which role it ran as and what it needs; nothing is left', async () => {
    const restorer = `strata_restorer_${randomBytes(4).toString('hex')}`;
    await pgQuery('postgres', `CREATE ROLE "${restorer}" LOGIN CREATEDB PASSWORD 'restorer-pw'`);
    try {
      const source = await databases.create("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1); CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'");
      const record = await repo().backup(pgUrl(source), { database: 'others' });
      const target = databases.name();
      const url = new URL(pgUrl(target));
      url.username = restorer;
      url.password = 'restorer-pw';
      await assert.rejects(repo().restore({ id: record.id }, { to: url.toString() }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'RESTORE_FAILED');
        assert.match(err.message, new RegExp(`must be member of role .*; the restore connects as ${restorer}, which lacks that privilege: .*needs a superuser, or a role that is a member of every owning role`));
        assert.doesNotMatch(err.message, /restorer-pw/);
        return true;
      });
      assert.deepEqual((await pgQuery('postgres', 'SELECT datname FROM pg_database WHERE datname = $1', [target])).rows, []);
    } finally {
      await pgQuery('postgres', `DROP ROLE IF EXISTS "${restorer}"`);
    }
  });

  describe('materialized views', () => {
    const populated = async (database: string) =>
      (await pgQuery(database, "SELECT relname AS name, relispopulated AS populated FROM pg_class WHERE relkind = 'm' ORDER BY 1")).rows;

    it("one whose REFRESH fails (a function relying on search_path) is restored without data, named in a warning with the cause and the remedy; the rest is restored; verify fails that restore", async () => {
      const source = await databases.create(`
        CREATE TABLE b (id int PRIMARY KEY, v int);
        INSERT INTO b VALUES (1, 5), (2, 7);
        CREATE FUNCTION total() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT sum(v) FROM b';
        CREATE MATERIALIZED VIEW mv AS SELECT total();
        CREATE MATERIALIZED VIEW mv_of_mv AS SELECT * FROM mv;
        CREATE MATERIALIZED VIEW fine AS SELECT count(*) AS n FROM public.b;`);
      const record = await repo().backup(pgUrl(source), { database: 'mv' });
      const target = databases.name();
      const { warnings } = await warningsOf(() => repo().restore({ id: record.id }, { to: pgUrl(target) }));
      const warning = warnings.find((w) => w.includes('could not be refreshed'));
      assert.ok(warning, JSON.stringify(warnings));
      assert.match(warning, /public\.mv \(relation "b" does not exist\)/);
      assert.match(warning, /public\.mv_of_mv \(materialized view "mv" has not been populated\)/);
      assert.match(warning, /ALTER FUNCTION \.\.\. SET search_path = public/);
      assert.doesNotMatch(warning, /public\.fine/);
      assert.deepEqual(await populated(target), [{ name: 'fine', populated: true }, { name: 'mv', populated: false }, { name: 'mv_of_mv', populated: false }]);
      assert.deepEqual((await pgQuery(target, 'SELECT n FROM fine')).rows, [{ n: '2' }]);
      assert.deepEqual((await pgQuery(target, 'SELECT id, v FROM b ORDER BY id')).rows, [{ id: 1, v: 5 }, { id: 2, v: 7 }]);

      // The restore lacks the two views' data: verify says so, naming them.
      const { result: [report] } = await warningsOf(() => repo().verify({ id: record.id }, { level: 'full' }));
      assert.equal(report!.outcome, 'failed', JSON.stringify(report!.checks));
      const schemaCheck = report!.checks.find((c) => c.name === 'schema-integrity')!;
      assert.equal(schemaCheck.status, 'failed');
      assert.match(schemaCheck.reason, /materialized view public\.mv holds no data and the backup's did.*materialized view public\.mv_of_mv holds no data/);

      // The remedy the warning gives works, in the restored database and for the source's next backups.
      await pgQuery(target, 'ALTER FUNCTION public.total() SET search_path = public; REFRESH MATERIALIZED VIEW public.mv; REFRESH MATERIALIZED VIEW public.mv_of_mv');
      assert.deepEqual((await pgQuery(target, 'SELECT * FROM mv_of_mv')).rows, [{ total: '12' }]);
      await pgQuery(source, 'ALTER FUNCTION public.total() SET search_path = public');
      const fixed = await repo().backup(pgUrl(source), { database: 'mv' });
      const again = databases.name();
      const { warnings: none } = await warningsOf(() => repo().restore({ id: fixed.id }, { to: pgUrl(again) }));
      assert.deepEqual(none, []);
      assert.deepEqual((await pgQuery(again, 'SELECT * FROM mv_of_mv')).rows, [{ total: '12' }]);
      const [passed] = await repo().verify({ id: fixed.id }, { level: 'full' });
      assert.equal(passed!.outcome, 'passed', JSON.stringify(passed!.checks));
    });
  });

  describe('event triggers', () => {
    it("fire on none of the restore's own statements: a trigger that logs DDL logs nothing, and comes back in its mode", async () => {
      // The function names its table unqualified: under pg_dump's empty search_path it would fail.
      const source = await databases.create(`
        CREATE TABLE ddl_log (id serial PRIMARY KEY, tag text);
        CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ddl_log (tag) VALUES (tg_tag); END $$;
        CREATE FUNCTION log_ddl_qualified() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.ddl_log (tag) VALUES (tg_tag || ' (qualified)'); END $$;
        CREATE EVENT TRIGGER et ON ddl_command_end EXECUTE FUNCTION log_ddl();
        CREATE EVENT TRIGGER et_always ON ddl_command_end EXECUTE FUNCTION log_ddl_qualified();
        ALTER EVENT TRIGGER et_always ENABLE ALWAYS;
        CREATE TABLE base (id int PRIMARY KEY, v int);
        INSERT INTO base VALUES (1, 5), (2, 7);
        CREATE MATERIALIZED VIEW mv AS SELECT sum(v) AS total FROM base;`);
      const logged = (await pgQuery(source, 'SELECT id, tag FROM ddl_log ORDER BY id')).rows;
      assert.equal(logged.length, 4);
      const record = await repo().backup(pgUrl(source), { database: 'et' });
      const target = databases.name();
      await repo().restore({ id: record.id }, { to: pgUrl(target) });
      assert.deepEqual((await pgQuery(target, 'SELECT id, tag FROM ddl_log ORDER BY id')).rows, logged);
      assert.deepEqual((await pgQuery(target, 'SELECT total FROM mv')).rows, [{ total: '12' }]);
      assert.deepEqual(await eventTriggers(target), [{ name: 'et', mode: 'O' }, { name: 'et_always', mode: 'A' }]);
      const [report] = await repo().verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    });

    it('a trigger that forbids DDL does not stop the restore, and comes back switched on', async () => {
      const source = await databases.create(`
        CREATE TABLE base (id int PRIMARY KEY, v int);
        INSERT INTO base VALUES (1, 5);
        CREATE MATERIALIZED VIEW mv AS SELECT sum(v) AS total FROM base;
        CREATE FUNCTION no_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no DDL here (%)', tg_tag; END $$;
        CREATE EVENT TRIGGER no_ddl ON ddl_command_start EXECUTE FUNCTION no_ddl();
        ALTER EVENT TRIGGER no_ddl ENABLE REPLICA;
        CREATE EVENT TRIGGER no_ddl_either ON ddl_command_start EXECUTE FUNCTION no_ddl();`);
      const record = await repo().backup(pgUrl(source), { database: 'block' });
      const target = databases.name();
      await repo().restore({ id: record.id }, { to: pgUrl(target) });
      assert.deepEqual((await pgQuery(target, 'SELECT total FROM mv')).rows, [{ total: '5' }]);
      assert.deepEqual(await eventTriggers(target), [{ name: 'no_ddl', mode: 'R' }, { name: 'no_ddl_either', mode: 'O' }]);
      await assert.rejects(pgQuery(target, 'CREATE TABLE t (id int)'), /no DDL here \(CREATE TABLE\)/);
      const [report] = await repo().verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    });
  });
});


