import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
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
  /** Drops databases the suite created (no-op for files in workDir). */
  cleanup?(): Promise<void>;
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
  });
}
