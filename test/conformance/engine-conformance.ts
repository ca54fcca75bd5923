import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Passphrase, initRepository, openRepository } from '@strata/sdk';
import type { Engine, EngineRegistry, Repository } from '@strata/sdk';

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

/** The shared engine conformance suite. */
export function describeEngineConformance(name: string, makeFixture: (context: Mocha.Context) => Promise<EngineFixture | undefined>): void {
  describe(`engine conformance: ${name}`, function () {
    let fixture: EngineFixture;
    let work: string;
    let repo: Repository;
    const passphrase = new Passphrase('conformance passphrase');

    before(async function () {
      const made = await makeFixture(this);
      if (!made) this.skip();
      fixture = made!;
    });

    beforeEach(async () => {
      work = mkdtempSync(path.join(tmpdir(), `strata-conf-${name}-`));
      await initRepository(path.join(work, 'repo'), { encryption: 'compat', passphrase });
      repo = await openRepository(path.join(work, 'repo'), { passphrase, engines: fixture.registry, tempDir: path.join(work, 'tmp') });
    });

    afterEach(async () => {
      await fixture?.cleanup?.();
      rmSync(work, { recursive: true, force: true });
    });

    it('restores a full backup to a new target identical to the source', async () => {
      const source = await fixture.createRich(work);
      const record = await repo.backup(source, { database: 'rich', type: 'full' });
      const target = await fixture.newTarget(work, 'restored');
      await repo.restore({ id: record.id }, { to: target });
      assert.equal(await fixture.dump(target), await fixture.dump(source));
    });

    it('restores the database as it was at backup time, not as it is now', async () => {
      const source = await fixture.createRich(work);
      const before = await fixture.dump(source);
      const record = await repo.backup(source, { database: 'rich', type: 'full' });
      await fixture.mutate(source, 3);
      assert.notEqual(await fixture.dump(source), before);
      const target = await fixture.newTarget(work, 'restored');
      await repo.restore({ id: record.id }, { to: target });
      assert.equal(await fixture.dump(target), before);
    });

    it('restores a schema-only backup as the same schema with no rows', async () => {
      const source = await fixture.createRich(work);
      const record = await repo.backup(source, { database: 'rich', type: 'schema-only' });
      assert.equal(record.rowCount, 0);
      const target = await fixture.newTarget(work, 'schema');
      await repo.restore({ id: record.id }, { to: target });
      assert.equal(await fixture.dumpSchema(target), await fixture.dumpSchema(source));
      const facts = await fixture.engine.inspect(target);
      const userTables = facts.tables.filter((t) => !/_(data|idx|content|docsize|config)$/.test(t.name));
      assert.ok(userTables.length > 0);
      for (const t of userTables) assert.equal(t.rows, 0, `table ${t.name} should be empty`);
    });

    it('records facts at backup time that a full verification confirms on the restored copy', async () => {
      const source = await fixture.createRich(work);
      const record = await repo.backup(source, { database: 'rich', type: 'full' });
      assert.ok(record.tableCount > 0);
      assert.ok(record.rowCount > 0);
      const [report] = await repo.verify({ id: record.id }, { level: 'full' });
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
      const source = await fixture.createRich(work);
      const record = await repo.backup(source, { database: 'rich', type: 'full' });
      const target = await fixture.newTarget(work, 'existing');
      await repo.restore({ id: record.id }, { to: target });
      await fixture.mutate(target, 5);
      const changed = await fixture.dump(target);
      await assert.rejects(repo.restore({ id: record.id }, { to: target }), { code: 'TARGET_EXISTS' });
      assert.equal(await fixture.dump(target), changed, 'a refused restore must leave the target as it was');
      await repo.restore({ id: record.id }, { to: target, force: true });
      assert.equal(await fixture.dump(target), await fixture.dump(source));
    });

    it('restores chosen tables into an existing target and leaves its other tables as they are', async () => {
      const source = await fixture.createRich(work);
      await fixture.exec(source, PLAIN_TABLES);
      const record = await repo.backup(source, { database: 'rich', type: 'full' });
      const target = await fixture.newTarget(work, 'tables');
      await repo.restore({ id: record.id }, { to: target });
      await fixture.exec(target, "UPDATE conformance_a SET note = 'changed'; DELETE FROM conformance_a WHERE id = 2; UPDATE conformance_b SET note = 'kept'");
      const other = await fixture.query(target, ROWS_OF('conformance_b'));
      await repo.restore({ id: record.id }, { to: target, tables: ['conformance_a'], force: true });
      assert.equal(await fixture.query(target, ROWS_OF('conformance_a')), await fixture.query(source, ROWS_OF('conformance_a')));
      assert.equal(await fixture.query(target, ROWS_OF('conformance_b')), other);
      assert.deepEqual(await fixture.leftovers(target), []);
    });

    it('a restore that fails leaves the existing target as it was, and nothing beside it', async () => {
      const source = await fixture.createRich(work);
      await fixture.exec(source, PLAIN_TABLES);
      const good = await repo.backup(source, { database: 'rich', type: 'full' });
      const target = await fixture.newTarget(work, 'intact');
      await repo.restore({ id: good.id }, { to: target });
      await fixture.mutate(target, 7);
      const before = await fixture.dump(target);
      await fixture.exec(source, "UPDATE conformance_a SET note = 'newer'");
      const damaged = await repo.backup(source, { database: 'rich-damaged', type: 'full' });
      damage(path.join(work, 'repo'), damaged.key);
      await assert.rejects(repo.restore({ id: damaged.id }, { to: target, force: true }));
      await assert.rejects(repo.restore({ id: damaged.id }, { to: target, tables: ['conformance_a'], force: true }));
      assert.equal(await fixture.dump(target), before);
      assert.deepEqual(await fixture.leftovers(target), []);
    });

    it('an incremental taken after schema changes restores the new schema with its rows', async () => {
      const source = await fixture.createRich(work);
      await fixture.exec(source, PLAIN_TABLES);
      await repo.backup(source, { database: 'rich', type: 'full' });
      await fixture.exec(
        source,
        `ALTER TABLE conformance_a ADD COLUMN extra VARCHAR(10);
         UPDATE conformance_a SET extra = 'x' WHERE id > 1;
         DROP TABLE conformance_b;
         CREATE TABLE conformance_c (id INTEGER PRIMARY KEY, note VARCHAR(40));
         INSERT INTO conformance_c VALUES (10, 'ten')`,
      );
      const incremental = await repo.backup(source, { database: 'rich', type: 'incremental' });
      assert.equal(incremental.type, 'incremental');
      const target = await fixture.newTarget(work, 'after-ddl');
      await repo.restore({ id: incremental.id }, { to: target });
      assert.equal(await fixture.dump(target), await fixture.dump(source));
      assert.equal(await fixture.query(target, ROWS_OF('conformance_c')), await fixture.query(source, ROWS_OF('conformance_c')));
      const [report] = await repo.verify({ id: incremental.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks, null, 2));
    });
  });
}
