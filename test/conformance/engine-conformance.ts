import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Passphrase, initRepository, openRepository } from '@strata/sdk';
import type { BackupRecord, Engine, EngineRegistry, Repository } from '@strata/sdk';

/**
 * What an engine's test file provides to run the shared suite. Every engine passes the same
 * backup → restore → compare specification; only how to make, change and dump a database differs.
 */
export interface EngineFixture {
  readonly engine: Engine;
  readonly registry: EngineRegistry;
  /** Creates a database with every feature the engine supports, returns its locator. */
  createRich(workDir: string): Promise<string>;
  /** Changes some rows. */
  mutate(locator: string, seed: number): Promise<void>;
  /** A locator for a restore target that does not exist yet. */
  newTarget(workDir: string, name: string): Promise<string>;
  /** An engine-independent dump (the engine's own tool: sqlite3 .dump, pg_dump...). */
  dump(locator: string): Promise<string>;
  /** The schema only, in the same form. */
  dumpSchema(locator: string): Promise<string>;
  /** Runs SQL statements (separated by `;`) in the database, with the engine's own client or driver. */
  exec(locator: string, sql: string): Promise<void>;
  /** The result of a query as text (rows in order), with the engine's own client or driver. */
  query(locator: string, sql: string): Promise<string>;
  /** Whether the database at `locator` exists. */
  exists(locator: string): Promise<boolean>;
  /** What a restore into `target` could leave beside it (work databases, temporary files). */
  leftovers(target: string): Promise<string[]>;
  /** Drops databases the suite created (no-op for files in workDir). */
  cleanup?(): Promise<void>;
}

/**
 * Tables every engine can make with the same SQL, added to the rich database for the behaviours
 * that need rows of known values: table restores and changes of schema between backups.
 */
const PLAIN_TABLES = `CREATE TABLE conformance_a (id INTEGER PRIMARY KEY, note VARCHAR(40));
CREATE TABLE conformance_b (id INTEGER PRIMARY KEY, note VARCHAR(40));
INSERT INTO conformance_a VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO conformance_b VALUES (1, 'uno'), (2, 'dos')`;

const ROWS_OF = (table: string): string => `SELECT * FROM ${table} ORDER BY id`;

/** Flips one byte in the middle of a backup's artifact, as a bad disk would. */
function damage(repoDir: string, key: string): void {
  const file = path.join(repoDir, key);
  const bytes = readFileSync(file);
  bytes[bytes.length >> 1]! ^= 0xff;
  writeFileSync(file, bytes);
}

/** Whether an engine's table name (maybe schema-qualified: `public.t`, `db.t`) is `table`. */
const isTable = (name: string, table: string): boolean => name === table || name.endsWith(`.${table}`);

/** The facts entries that are tables, without those an engine records beside them. */
const tablesAmong = <T extends { name: string }>(engine: Engine, facts: readonly T[]): T[] => facts.filter((t) => !(engine.nonTableFacts ?? []).includes(t.name));

/**
 * The shared engine conformance suite. One repository and one source database (the rich one plus
 * PLAIN_TABLES, backed up in full once) serve the whole suite: tests restore that backup into
 * targets of their own, and a test that must change its source works on a restored copy of it.
 */
export function describeEngineConformance(name: string, makeFixture: (context: Mocha.Context) => Promise<EngineFixture | undefined>): void {
  describe(`engine conformance: ${name}`, function () {
    let fixture: EngineFixture;
    let work: string;
    let repo: Repository;
    let source: string;
    let full: BackupRecord;
    let sourceDump: string;
    const passphrase = new Passphrase('conformance passphrase');
    let targets = 0;
    /** A restore target of the test's own, which does not exist yet. */
    const newTarget = (label: string): Promise<string> => fixture.newTarget(work, `${label}-${++targets}`);
    /** A database of the test's own, restored from the suite's full backup, to change and back up under `database`. */
    const workingCopy = async (label: string): Promise<string> => {
      const copy = await newTarget(label);
      await repo.restore({ id: full.id }, { to: copy });
      return copy;
    };

    before(async function () {
      const made = await makeFixture(this);
      if (!made) this.skip();
      fixture = made!;
      work = mkdtempSync(path.join(tmpdir(), `strata-conf-${name}-`));
      await initRepository(path.join(work, 'repo'), { encryption: 'compat', passphrase });
      repo = await openRepository(path.join(work, 'repo'), { passphrase, engines: fixture.registry, tempDir: path.join(work, 'tmp') });
      source = await fixture.createRich(work);
      await fixture.exec(source, PLAIN_TABLES);
      full = await repo.backup(source, { database: 'rich', type: 'full' });
      sourceDump = await fixture.dump(source);
    });

    after(async () => {
      // Tests only read the suite's source: one that changed it could have let others pass by accident.
      if (source) assert.equal(await fixture.dump(source), sourceDump, 'the suite\'s source database is unchanged');
      await repo?.close();
      await fixture?.cleanup?.();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it('restores a full backup to a new target identical to the source', async () => {
      const target = await newTarget('restored');
      await repo.restore({ id: full.id }, { to: target });
      assert.equal(await fixture.dump(target), sourceDump);
      assert.deepEqual(await fixture.leftovers(target), []);
    });

    it('restores the database as it was at backup time, not as it is now', async () => {
      const db = await workingCopy('changing');
      const before = await fixture.dump(db);
      const record = await repo.backup(db, { database: 'changing', type: 'full' });
      await fixture.mutate(db, 3);
      assert.notEqual(await fixture.dump(db), before);
      const target = await newTarget('as-it-was');
      await repo.restore({ id: record.id }, { to: target });
      assert.equal(await fixture.dump(target), before);
    });

    it('restores a schema-only backup as the same schema with no rows', async () => {
      const record = await repo.backup(source, { database: 'rich-schema', type: 'schema-only' });
      assert.equal(record.rowCount, 0);
      const target = await newTarget('schema');
      await repo.restore({ id: record.id }, { to: target });
      assert.equal(await fixture.dumpSchema(target), await fixture.dumpSchema(source));
      const facts = await fixture.engine.inspect(target);
      // A schema-only restore still sets what its engine records beside the tables (sequences' positions).
      const userTables = tablesAmong(fixture.engine, facts.tables).filter((t) => !/_(data|idx|content|docsize|config)$/.test(t.name));
      assert.ok(userTables.some((t) => isTable(t.name, 'conformance_a')), `the restored tables: ${facts.tables.map((t) => t.name).join(', ')}`);
      for (const t of userTables) assert.equal(t.rows, 0, `table ${t.name} should be empty`);
      await assert.rejects(repo.restore({ id: record.id }, { to: await newTarget('schema-tables'), tables: ['conformance_a'] }), { code: 'USAGE' });
    });

    it('records facts at backup time that a full verification confirms on the restored copy', async () => {
      assert.ok(full.tableCount > 0);
      assert.ok(full.rowCount > 0);
      const [report] = await repo.verify({ id: full.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks, null, 2));
      assert.deepEqual(
        report!.checks.map((c) => [c.name, c.status]),
        [
          ['file-accessibility', 'passed'],
          ['checksum-match', 'passed'],
          ['database-readable', 'passed'],
          ['schema-integrity', 'passed'],
          ['data-consistency', 'passed'],
        ],
      );
    });

    it('refuses to overwrite an existing target without force, and replaces it with force', async () => {
      const target = await newTarget('existing');
      await repo.restore({ id: full.id }, { to: target });
      await fixture.mutate(target, 5);
      const changed = await fixture.dump(target);
      await assert.rejects(repo.restore({ id: full.id }, { to: target }), { code: 'TARGET_EXISTS' });
      assert.equal(await fixture.dump(target), changed, 'a refused restore must leave the target as it was');
      await repo.restore({ id: full.id }, { to: target, force: true });
      assert.equal(await fixture.dump(target), sourceDump);
      assert.deepEqual(await fixture.leftovers(target), []);
    });

    it('restores chosen tables into an existing target and leaves its other tables as they are', async () => {
      const target = await newTarget('tables');
      await repo.restore({ id: full.id }, { to: target });
      await fixture.exec(target, "UPDATE conformance_a SET note = 'changed'; DELETE FROM conformance_a WHERE id = 2; UPDATE conformance_b SET note = 'kept'");
      const other = await fixture.query(target, ROWS_OF('conformance_b'));
      await assert.rejects(repo.restore({ id: full.id }, { to: target, tables: ['conformance_a'] }), { code: 'TARGET_EXISTS' });
      await repo.restore({ id: full.id }, { to: target, tables: ['conformance_a'], force: true });
      assert.equal(await fixture.query(target, ROWS_OF('conformance_a')), await fixture.query(source, ROWS_OF('conformance_a')));
      assert.equal(await fixture.query(target, ROWS_OF('conformance_b')), other);
      assert.deepEqual(await fixture.leftovers(target), []);
    });

    it('restores chosen tables into a new target, which then holds the rows of those tables and of no other', async () => {
      const target = await newTarget('only-a');
      await repo.restore({ id: full.id }, { to: target, tables: ['conformance_a'] });
      assert.equal(await fixture.query(target, ROWS_OF('conformance_a')), await fixture.query(source, ROWS_OF('conformance_a')));
      // SQLite makes only the chosen tables; the servers make the whole schema and fill only those.
      const others = tablesAmong(fixture.engine, (await fixture.engine.inspect(target)).tables).filter((t) => !isTable(t.name, 'conformance_a'));
      assert.deepEqual(others.filter((t) => t.rows > 0).map((t) => t.name), [], 'no rows of a table that was not chosen');
      assert.deepEqual(await fixture.leftovers(target), []);
    });

    it('a table the backup does not have is refused with TABLE_NOT_FOUND, and the target stays as it was', async () => {
      const target = await newTarget('missing-table');
      await repo.restore({ id: full.id }, { to: target });
      await fixture.exec(target, "UPDATE conformance_a SET note = 'mine'");
      const before = await fixture.dump(target);
      await assert.rejects(repo.restore({ id: full.id }, { to: target, tables: ['conformance_a', 'no_such_table'], force: true }), { code: 'TABLE_NOT_FOUND' });
      assert.equal(await fixture.dump(target), before);
      assert.deepEqual(await fixture.leftovers(target), []);
    });

    it('a restore that fails leaves the existing target as it was, a new target absent, and nothing beside either', async () => {
      const target = await newTarget('intact');
      await repo.restore({ id: full.id }, { to: target });
      await fixture.mutate(target, 7);
      const before = await fixture.dump(target);
      const damaged = await repo.backup(source, { database: 'rich-damaged', type: 'full' });
      damage(path.join(work, 'repo'), damaged.key);
      await assert.rejects(repo.restore({ id: damaged.id }, { to: target, force: true }));
      await assert.rejects(repo.restore({ id: damaged.id }, { to: target, tables: ['conformance_a'], force: true }));
      assert.equal(await fixture.dump(target), before);
      assert.deepEqual(await fixture.leftovers(target), []);
      const fresh = await newTarget('never-made');
      await assert.rejects(repo.restore({ id: damaged.id }, { to: fresh }));
      assert.equal(await fixture.exists(fresh), false, 'a failed restore into a new target leaves no database there');
      assert.deepEqual(await fixture.leftovers(fresh), []);
    });

    it('incrementals taken after schema changes (column added, table dropped, table created, then column dropped) restore each point with its schema and rows', async () => {
      const db = await workingCopy('ddl');
      await repo.backup(db, { database: 'ddl', type: 'full' });
      await fixture.exec(
        db,
        `ALTER TABLE conformance_a ADD COLUMN extra VARCHAR(10);
         UPDATE conformance_a SET extra = 'x' WHERE id > 1;
         DROP TABLE conformance_b;
         CREATE TABLE conformance_c (id INTEGER PRIMARY KEY, note VARCHAR(40));
         INSERT INTO conformance_c VALUES (10, 'ten')`,
      );
      const first = await repo.backup(db, { database: 'ddl', type: 'incremental' });
      assert.equal(first.type, 'incremental');
      const atFirst = await fixture.dump(db);
      await fixture.exec(
        db,
        `ALTER TABLE conformance_a DROP COLUMN note;
         INSERT INTO conformance_a (id, extra) VALUES (4, 'four');
         INSERT INTO conformance_c VALUES (11, 'eleven')`,
      );
      const second = await repo.backup(db, { database: 'ddl', type: 'incremental' });
      assert.equal(second.parent, first.id);

      const restoredFirst = await newTarget('after-ddl');
      await repo.restore({ id: first.id }, { to: restoredFirst });
      assert.equal(await fixture.dump(restoredFirst), atFirst);
      const restoredSecond = await newTarget('after-drop-column');
      await repo.restore({ id: second.id }, { to: restoredSecond });
      assert.equal(await fixture.dump(restoredSecond), await fixture.dump(db));
      assert.equal(await fixture.query(restoredSecond, ROWS_OF('conformance_a')), await fixture.query(db, ROWS_OF('conformance_a')));
      assert.equal(await fixture.query(restoredSecond, ROWS_OF('conformance_c')), await fixture.query(db, ROWS_OF('conformance_c')));
      for (const record of [first, second]) {
        const [report] = await repo.verify({ id: record.id }, { level: 'full' });
        assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks, null, 2));
      }
    });
  });
}
