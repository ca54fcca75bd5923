import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { LayoutDelta, Passphrase, initRepository, openRepository, readArtifact } from '@strata/sdk';
import type { BackupRecord, BackupType, Repository } from '@strata/sdk';
import { buildRichDatabase } from './helpers/databases.js';
import { copyInto, json, sqliteDump, sqliteQuery, strata, useSuiteDir, useTempDir } from './helpers/env.js';

const passphrase = new Passphrase('chains');

async function openFresh(dir: string, encryption: 'compat' | 'none' = 'compat'): Promise<Repository> {
  await initRepository(path.join(dir, 'repo'), encryption === 'none' ? { encryption } : { encryption, passphrase });
  return openRepository(path.join(dir, 'repo'), { passphrase, tempDir: path.join(dir, 'tmp') });
}

/** A write a user's application might make; each one changes a few pages. */
type Write = { kind: 'insert'; n: number } | { kind: 'update'; mod: number } | { kind: 'delete'; mod: number } | { kind: 'blob'; size: number } | { kind: 'ddl'; n: number };

function apply(file: string, write: Write): void {
  const db = new Database(file);
  try {
    db.transaction(() => {
      switch (write.kind) {
        case 'insert':
          for (let i = 0; i < write.n; i++) db.prepare('INSERT INTO books(author_id, title, price) VALUES (1, ?, ?)').run(`ins ${write.n}-${i} ✓`, i);
          break;
        case 'update':
          db.prepare('UPDATE books SET price = coalesce(price, 0) + 1 WHERE id % ? = 0').run(write.mod);
          break;
        case 'delete':
          db.prepare('DELETE FROM books WHERE id % ? = 1').run(write.mod);
          break;
        case 'blob':
          db.prepare('INSERT INTO books(author_id, title, cover) VALUES (2, ?, ?)').run('blob', randomBytes(write.size));
          break;
        case 'ddl':
          db.exec(`CREATE TABLE IF NOT EXISTS extra_${write.n} (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO extra_${write.n}(v) VALUES ('x')`);
          break;
      }
    })();
  } finally {
    db.close();
  }
}

const writeArb: fc.Arbitrary<Write> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), n: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ kind: fc.constant('update' as const), mod: fc.integer({ min: 2, max: 9 }) }),
  fc.record({ kind: fc.constant('delete' as const), mod: fc.integer({ min: 5, max: 30 }) }),
  fc.record({ kind: fc.constant('blob' as const), size: fc.integer({ min: 1, max: 30000 }) }),
  fc.record({ kind: fc.constant('ddl' as const), n: fc.integer({ min: 1, max: 3 }) }),
);

const typeArb = fc.constantFrom<BackupType>('full', 'incremental', 'incremental', 'differential', 'schema-only');

describe('incremental and differential chains', () => {
  const dir = useTempDir();

  it('any restore point of a random history restores exactly the database as it was then (property)', async function () {
    // Generous for the soak's hundred histories on a loaded machine; npm test's few take seconds.
    this.timeout(Number(process.env['STRATA_PROPERTY_RUNS'] ?? 4) * 60_000);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.array(writeArb, { maxLength: 3 }), typeArb), { minLength: 1, maxLength: 7 }), async (steps) => {
        const work = path.join(dir.path, `run${run++}`);
        const repo = await openFresh(work);
        const source = path.join(work, 'app.db');
        buildRichDatabase(source, { rows: 60 });
        const expected = new Map<string, { dump: string; schema: string; type: BackupType }>();
        for (const [writes, type] of steps) {
          for (const w of writes) apply(source, w);
          const record = await repo.backup(source, { database: 'app', type, autoFull: true });
          expected.set(record.id, { dump: sqliteDump(source), schema: sqliteQuery(source, '.schema'), type: record.type });
        }
        for (const [id, want] of expected) {
          const target = path.join(work, `${id}.db`);
          await repo.restore({ id }, { to: target });
          if (want.type === 'schema-only') assert.equal(sqliteQuery(target, '.schema'), want.schema, `${id} schema`);
          else assert.equal(sqliteDump(target), want.dump, `restore of ${id} differs from the database at that time`);
        }
        await repo.close();
        rmSync(work, { recursive: true, force: true });
      }),
      // 4 random histories in `npm test`; `npm run test:soak` runs many more (--histories, 100).
      { numRuns: Number(process.env['STRATA_PROPERTY_RUNS'] ?? 4), seed: Number(process.env['STRATA_PROPERTY_SEED'] ?? 20261121), endOnFailure: true },
    );
  });

  it('records parent and base: incrementals chain to the newest restore point, differentials to the newest full', async () => {
    const repo = await openFresh(dir.path);
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 50 });
    const full = await repo.backup(source, { database: 'app', type: 'full' });
    apply(source, { kind: 'insert', n: 3 });
    const inc1 = await repo.backup(source, { database: 'app', type: 'incremental' });
    apply(source, { kind: 'update', mod: 3 });
    const inc2 = await repo.backup(source, { database: 'app', type: 'incremental' });
    const diff = await repo.backup(source, { database: 'app', type: 'differential' });
    const schema = await repo.backup(source, { database: 'app', type: 'schema-only' });
    const inc3 = await repo.backup(source, { database: 'app', type: 'incremental' });
    assert.deepEqual([inc1.parent, inc1.base], [full.id, full.id]);
    assert.deepEqual([inc2.parent, inc2.base], [inc1.id, full.id]);
    assert.deepEqual([diff.parent, diff.base], [full.id, full.id]);
    assert.deepEqual([schema.parent, schema.base], [null, null]);
    assert.deepEqual([inc3.parent, inc3.base], [diff.id, full.id], 'a schema-only backup is never a parent');
    assert.deepEqual((await repo.chainOf(inc3)).map((b) => b.id), [full.id, diff.id, inc3.id]);
    assert.ok(diff.payloadBytes >= inc2.payloadBytes, 'a differential holds every change since the full');
  });

  it('a small change makes a small incremental', async () => {
    const repo = await openFresh(dir.path);
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 3000 });
    const full = await repo.backup(source, { database: 'app', type: 'full' });
    sqliteQuery(source, "UPDATE books SET title = 'changed' WHERE id = 1500");
    const inc = await repo.backup(source, { database: 'app', type: 'incremental' });
    const pageSize = Number(sqliteQuery(source, 'PRAGMA page_size'));
    assert.ok(full.payloadBytes > 100 * pageSize);
    assert.ok(inc.payloadBytes <= 6 * pageSize, `a one-row update stored ${inc.payloadBytes} bytes of pages`);
    assert.ok(inc.storedBytes < full.storedBytes / 10);
  });

  it('stores an incremental\'s chunk layout as changes against its parent, so its size follows the change, not the database', async () => {
    // Unencrypted: the test reads the artifact's entries itself, and the data key that would open an
    // encrypted one is something the SDK never hands out.
    const repo = await openFresh(dir.path, 'none');
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 40000 });
    const full = await repo.backup(source, { database: 'app', type: 'full' });
    sqliteQuery(source, "UPDATE books SET title = 'changed' WHERE id = 20000");
    const inc = await repo.backup(source, { database: 'app', type: 'incremental' });
    const pages = full.databaseBytes / Number(sqliteQuery(source, 'PRAGMA page_size'));
    const contents = await readArtifact({ storage: repo.storage, location: { key: inc.key, codec: 'zstd', encrypted: false } });
    const layout = contents.layouts.get('main.db');
    assert.ok(layout instanceof LayoutDelta, 'the layout entry is a delta');
    assert.equal(layout.count, pages);
    assert.ok(layout.changed > 0 && layout.changed <= 6, `a one-row update changed ${layout.changed} of ${pages} layout positions`);
    // A complete layout would be 20 bytes of (incompressible) chunk id and size per page.
    assert.ok(inc.storedBytes < (pages * 20) / 4, `the incremental stored ${inc.storedBytes} bytes for a ${pages}-page database`);
    // Restoring needs the parent's layout too: from the artifacts alone when the cache is gone.
    rmSync(path.join(dir.path, 'repo/cache'), { recursive: true });
    const target = path.join(dir.path, 'out.db');
    await repo.restore({ id: inc.id }, { to: target });
    assert.equal(sqliteDump(target), sqliteDump(source));
    assert.ok(existsSync(path.join(dir.path, 'repo/cache/layouts/app')), 'the restore put the layouts it read back in the cache');
  });

  it('an incremental with no changes is recorded, and says so', () => {
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 20 });
    const repo = path.join(dir.path, 'repo');
    strata(['init', '--repo', repo]);
    strata(['backup', source, '--repo', repo]);
    const human = strata(['backup', source, '--repo', repo, '--type', 'incremental']);
    assert.equal(human.status, 0);
    assert.match(human.stdout, /nothing changed since app_full_/);
    const again = json<{ unchanged: boolean; backup: BackupRecord }>(strata(['backup', source, '--repo', repo, '--type', 'incremental', '--json']));
    assert.equal(again.unchanged, true);
    assert.equal(again.backup.payloadBytes, 0);
    assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo, '--json'])).backups.length, 3);
  });

  it('an incremental without any full backup says so, or takes a full with --auto-full', () => {
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 5 });
    const repo = path.join(dir.path, 'repo');
    strata(['init', '--repo', repo]);
    const refused = strata(['backup', source, '--repo', repo, '--type', 'differential']);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /has no full backup yet.*--auto-full/);
    const auto = json<{ backup: BackupRecord }>(strata(['backup', source, '--repo', repo, '--type', 'incremental', '--auto-full', '--json']));
    assert.equal(auto.backup.type, 'full');
    // Counted as what it became, not as what was asked for.
    const rows = json<{ rows: { type: string; count: number; succeeded: number }[] }>(strata(['stats', '--repo', repo, '--json'])).rows;
    assert.deepEqual(
      rows.filter((r) => r.succeeded > 0).map((r) => [r.type, r.succeeded]),
      [['full', 1]],
    );
  });

  it("a program's relative path and an absolute one are one database: the incremental builds on the full", async () => {
    const repo = await openFresh(dir.path);
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 5 });
    const cwd = process.cwd();
    process.chdir(dir.path);
    let full: BackupRecord;
    try {
      full = await repo.backup('./app.db', { database: 'app' });
    } finally {
      process.chdir(cwd);
    }
    assert.equal(full.source, `sqlite:${source}`, 'recorded by its absolute path');
    // As the command line names it (the CLI makes every path absolute).
    const record = await repo.backup(source, { database: 'app', type: 'incremental' });
    assert.deepEqual([record.database, record.type, record.parent], ['app', 'incremental', full.id]);
  });

  it('restores through a chain of 30 incrementals', async function () {
    this.timeout(300_000);
    const repo = await openFresh(dir.path);
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 400 });
    await repo.backup(source, { database: 'app', type: 'full' });
    const dumps = new Map<string, string>();
    for (let i = 0; i < 30; i++) {
      apply(source, i % 3 === 0 ? { kind: 'blob', size: 5000 + i } : i % 3 === 1 ? { kind: 'update', mod: 2 + (i % 7) } : { kind: 'delete', mod: 10 + i });
      const inc = await repo.backup(source, { database: 'app', type: 'incremental' });
      if (i === 14 || i === 29) dumps.set(inc.id, sqliteDump(source));
    }
    for (const [id, dump] of dumps) {
      const target = path.join(dir.path, `${id}.db`);
      const result = await repo.restore({ id }, { to: target });
      assert.equal(sqliteDump(target), dump);
      assert.equal(sqliteQuery(target, 'PRAGMA integrity_check'), 'ok');
      assert.ok(result.chain.length === 16 || result.chain.length === 31);
    }
  });

  it('still makes correct incrementals when the cached layouts are missing or damaged', async () => {
    const repo = await openFresh(dir.path);
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 100 });
    await repo.backup(source, { database: 'app', type: 'full' });
    const cache = path.join(dir.path, 'repo/cache/layouts/app');
    for (const f of readdirSync(cache)) writeFileSync(path.join(cache, f), 'garbage');
    apply(source, { kind: 'insert', n: 5 });
    const inc1 = await repo.backup(source, { database: 'app', type: 'incremental' });
    rmSync(path.join(dir.path, 'repo/cache'), { recursive: true });
    apply(source, { kind: 'update', mod: 4 });
    const inc2 = await repo.backup(source, { database: 'app', type: 'incremental' });
    assert.ok(inc1.payloadBytes < inc1.databaseBytes / 2 && inc2.payloadBytes < inc2.databaseBytes / 2);
    const target = path.join(dir.path, 'out.db');
    await repo.restore({ id: inc2.id }, { to: target });
    assert.equal(sqliteDump(target), sqliteDump(source));
  });

  describe('a broken chain', () => {
    // Built once; each test breaks its own copy.
    const built = useSuiteDir();
    let ids: string[] = [];
    before(() => {
      const source = path.join(built.path, 'app.db');
      buildRichDatabase(source, { rows: 100 });
      const repo = path.join(built.path, 'repo');
      assert.equal(strata(['init', '--repo', repo]).status, 0);
      ids = [];
      for (const type of ['full', 'incremental', 'incremental']) {
        apply(source, { kind: 'insert', n: 2 });
        ids.push(json<{ id: string }>(strata(['backup', source, '--repo', repo, '--type', type, '--json'])).id);
      }
    });
    function chainRepo(): { repo: string; source: string; ids: string[] } {
      copyInto(built.path, dir.path);
      return { repo: path.join(dir.path, 'repo'), source: path.join(dir.path, 'app.db'), ids };
    }

    it('with a deleted ancestor fails to restore, names the missing backup and writes nothing', () => {
      const { repo, ids } = chainRepo();
      const list = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups;
      rmSync(path.join(repo, list.find((b) => b.id === ids[1])!.key));
      const target = path.join(dir.path, 'out.db');
      const result = strata(['restore', ids[2]!, '--repo', repo, '--to', target, '--json']);
      assert.notEqual(result.status, 0);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'CHAIN_BROKEN');
      assert.match(error.message, new RegExp(`ancestor ${ids[1]} is missing`));
      // What to restore instead: the newest restore point whose chain does not need it.
      assert.match(error.message, new RegExp(`\\. The newest restore point that does not need ${ids[1]} is ${ids[0]} \\(.*\\): restore it by its id$`));
      assert.equal(existsSync(target), false);
      assert.deepEqual(readdirSync(dir.path).filter((f) => f.includes('strata-restore')), []);
      const verify = strata(['verify', ids[2]!, '--repo', repo]);
      assert.equal(verify.status, 3);
      assert.match(verify.stdout, /failed\s+file-accessibility: .*ancestor/);
    });

    it('with a damaged ancestor fails to restore, naming the ancestor, and leaves an existing target untouched; verify names it too', () => {
      const { repo, ids } = chainRepo();
      const list = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups;
      const file = path.join(repo, list.find((b) => b.id === ids[0])!.key);
      const bytes = readFileSync(file);
      bytes[bytes.length - 200]! ^= 0xff;
      writeFileSync(file, bytes);
      const target = path.join(dir.path, 'current.db');
      writeFileSync(target, 'current contents');
      const result = strata(['restore', ids[2]!, '--repo', repo, '--to', target, '--force', '--yes', '--json']);
      assert.equal(result.status, 1, result.stderr);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'CHAIN_BROKEN');
      assert.match(error.message, new RegExp(`^restore ${ids[2]}: ancestor ${ids[0]} is damaged: .*SHA-256 differs`));
      assert.doesNotMatch(error.message, /newest restore point that does not need/, 'every restore point needs the full');
      assert.equal(readFileSync(target, 'utf8'), 'current contents');
      const verify = strata(['verify', ids[2]!, '--repo', repo]);
      assert.equal(verify.status, 3);
      assert.match(verify.stdout, new RegExp(`failed\\s+checksum-match: ancestor ${ids[0]} is damaged: `));
    });
  });

  describe('restore --as-of', () => {
    it('restores the newest restore point at or before the time and says which', () => {
      const source = path.join(dir.path, 'app.db');
      buildRichDatabase(source, { rows: 30 });
      const repo = path.join(dir.path, 'repo');
      strata(['init', '--repo', repo]);
      const dumps: string[] = [];
      for (const [i, type] of ['full', 'incremental', 'incremental'].entries()) {
        apply(source, { kind: 'insert', n: 1 + i });
        strata(['backup', source, '--repo', repo, '--type', type, '--time', `2026-01-0${i + 1}T12:00:00Z`]);
        dumps.push(sqliteDump(source));
      }
      strata(['backup', source, '--repo', repo, '--type', 'schema-only', '--time', '2026-01-02T18:00:00Z']);
      const target = path.join(dir.path, 'asof.db');
      const result = strata(['restore', '--as-of', '2026-01-02T23:59:59Z', '--repo', repo, '--to', target]);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stderr, /chose app_incremental_20260102_120000_/);
      assert.equal(sqliteDump(target), dumps[1]);
      const early = strata(['restore', '--as-of', '2025-12-31T00:00:00Z', '--repo', repo, '--to', path.join(dir.path, 'x.db')]);
      assert.equal(early.status, 1);
      assert.match(early.stderr, /no restore point of|at or before 2025-12-31.*oldest is app_full_20260101/);
      // A mistyped database name is told which databases there are, not only that it has no backups.
      const typo = strata(['restore', 'latest', '--db', 'ap', '--repo', repo, '--to', path.join(dir.path, 'y.db')]);
      assert.equal(typo.status, 1);
      assert.match(typo.stderr, /no backups of ap yet \(the repository holds backups of app\)/);
      const typoAsOf = strata(['restore', '--as-of', '2026-01-02T23:59:59Z', '--db', 'ap', '--repo', repo, '--to', path.join(dir.path, 'y.db')]);
      assert.match(typoAsOf.stderr, /no restore point of ap at or before .* \(the repository holds backups of app\)/);
    });
  });

  describe('restore latest', () => {
    it('passes over a newer schema-only backup (it would empty the tables); its id still restores it', () => {
      const source = path.join(dir.path, 'app.db');
      buildRichDatabase(source, { rows: 30 });
      const repo = path.join(dir.path, 'repo');
      strata(['init', '--repo', repo]);
      assert.equal(strata(['backup', source, '--repo', repo]).status, 0);
      const withRows = sqliteDump(source);
      const schemaOnly = json<{ backup: { id: string } }>(strata(['backup', source, '--repo', repo, '--type', 'schema-only', '--json'])).backup.id;
      const latest = path.join(dir.path, 'latest.db');
      const result = strata(['restore', 'latest', '--repo', repo, '--to', latest]);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(sqliteDump(latest), withRows);
      const byId = path.join(dir.path, 'schema.db');
      assert.equal(strata(['restore', schemaOnly, '--repo', repo, '--to', byId]).status, 0);
      assert.equal(sqliteQuery(byId, 'SELECT count(*) FROM books'), '0');
      assert.equal(sqliteQuery(byId, '.schema'), sqliteQuery(source, '.schema'));
    });
  });

  describe('restore --tables', () => {
    // Built once; each test restores from its own copy.
    const built = useSuiteDir();
    let id = '';
    before(() => {
      const source = path.join(built.path, 'app.db');
      buildRichDatabase(source, { rows: 80 });
      const repo = path.join(built.path, 'repo');
      assert.equal(strata(['init', '--repo', repo]).status, 0);
      assert.equal(strata(['backup', source, '--repo', repo]).status, 0);
      apply(source, { kind: 'insert', n: 3 });
      id = json<{ id: string }>(strata(['backup', source, '--repo', repo, '--type', 'incremental', '--json'])).id;
    });
    function tablesRepo(): { repo: string; source: string; id: string } {
      copyInto(built.path, dir.path);
      return { repo: path.join(dir.path, 'repo'), source: path.join(dir.path, 'app.db'), id };
    }

    it('restores only the named tables, with their indexes and triggers, into a new file', () => {
      const { repo, source, id } = tablesRepo();
      const target = path.join(dir.path, 'only.db');
      const result = strata(['restore', id, '--repo', repo, '--to', target, '--tables', 'books,authors']);
      assert.equal(result.status, 0, result.stderr);
      // books_log writes to log, which stays behind: the restore says so.
      assert.match(result.stderr, /^strata: warning: restore: INSERT on books fires a trigger that uses log, which this restore did not bring back and the target database lacks: .*--tables books,authors,log\)$/m);
      assert.equal(sqliteQuery(target, "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name)"), 'authors,books');
      assert.equal(sqliteQuery(target, "SELECT count(*) FROM sqlite_schema WHERE name IN ('books_by_author', 'books_log')"), '2');
      for (const t of ['books', 'authors']) assert.equal(sqliteQuery(target, `SELECT count(*) FROM ${t}`), sqliteQuery(source, `SELECT count(*) FROM ${t}`));
      assert.equal(sqliteQuery(target, 'SELECT group_concat(slug) FROM authors'), sqliteQuery(source, 'SELECT group_concat(slug) FROM authors'), 'generated columns recomputed');
    });

    it('replaces only those tables in an existing database, in one transaction', () => {
      const { repo, source, id } = tablesRepo();
      const live = path.join(dir.path, 'live.db');
      buildRichDatabase(live, { rows: 10 });
      sqliteQuery(live, "INSERT INTO log(message) VALUES ('keep me'); DELETE FROM tags; INSERT INTO search(title, body) VALUES ('live', 'live row')");
      const logBefore = sqliteQuery(live, 'SELECT group_concat(message) FROM log');
      const result = strata(['restore', id, '--repo', repo, '--to', live, '--tables', 'tags,search', '--force', '--yes']);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(sqliteQuery(live, 'SELECT count(*) FROM tags'), sqliteQuery(source, 'SELECT count(*) FROM tags'));
      assert.equal(sqliteQuery(live, "SELECT count(*) FROM search WHERE search MATCH 'Inhalt'"), sqliteQuery(source, "SELECT count(*) FROM search WHERE search MATCH 'Inhalt'"));
      assert.equal(sqliteQuery(live, "SELECT count(*) FROM search WHERE title = 'live'"), '0');
      assert.equal(sqliteQuery(live, 'SELECT group_concat(message) FROM log'), logBefore, 'other tables are untouched');
      assert.equal(sqliteQuery(live, 'PRAGMA integrity_check'), 'ok');
    });

    it('refuses a table the backup does not have, naming those it has, and changes nothing', () => {
      const { repo, id } = tablesRepo();
      const live = path.join(dir.path, 'live.db');
      buildRichDatabase(live, { rows: 10 });
      const before = sqliteDump(live);
      const result = strata(['restore', id, '--repo', repo, '--to', live, '--tables', 'books,nosuch', '--force', '--yes', '--json']);
      assert.equal(result.status, 1);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'TABLE_NOT_FOUND');
      assert.match(error.message, /no table "nosuch" \(it has: authors, books, tags, log, search\)/);
      assert.equal(sqliteDump(live), before);
      // A view is named as one: it has no rows to restore, the tables it reads do.
      const view = strata(['restore', id, '--repo', repo, '--to', live, '--tables', 'expensive_books', '--force', '--yes']);
      assert.equal(view.status, 2);
      assert.match(view.stderr, /expensive_books is a view, which holds no rows of its own; restore the tables it reads \(the backup has: authors, books, tags, log, search\)/);
      assert.equal(sqliteDump(live), before);
    });

    it('takes names with commas or edge spaces in double quotes, and quotes them where it suggests a --tables', () => {
      const source = path.join(dir.path, 'odd-names.db');
      const db = new Database(source);
      db.exec(`CREATE TABLE "orders, 2024" (id INTEGER PRIMARY KEY, total REAL); INSERT INTO "orders, 2024" (total) VALUES (9.5), (12);
        CREATE TABLE " padded " (id INTEGER PRIMARY KEY, note TEXT); INSERT INTO " padded " (note) VALUES ('kept');
        CREATE TABLE "say ""hi""" (id INTEGER PRIMARY KEY); INSERT INTO "say ""hi""" VALUES (7);
        CREATE TABLE "log, old" (at TEXT);
        CREATE TRIGGER logged AFTER INSERT ON " padded " BEGIN INSERT INTO "log, old" VALUES (datetime()); END;`);
      db.close();
      const repo = path.join(dir.path, 'odd-repo');
      assert.equal(strata(['init', '--repo', repo]).status, 0);
      const id = json<{ id: string }>(strata(['backup', source, '--repo', repo, '--json'])).id;
      const target = path.join(dir.path, 'odd-out.db');
      const result = strata(['restore', id, '--repo', repo, '--to', target, '--tables', '"orders, 2024", " padded ","say ""hi"""']);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(sqliteQuery(target, 'SELECT group_concat(total) FROM "orders, 2024"'), '9.5,12.0');
      assert.equal(sqliteQuery(target, 'SELECT note FROM " padded "'), 'kept');
      assert.equal(sqliteQuery(target, 'SELECT id FROM "say ""hi"""'), '7');
      // The suggestion is one a user can paste back (a quote inside a name needs no quoting).
      assert.match(result.stderr, /INSERT on {2}padded  fires a trigger that uses log, old, .*e\.g\. --tables "orders, 2024"," padded ",say "hi","log, old"\)$/m);
      const unclosed = strata(['restore', id, '--repo', repo, '--to', path.join(dir.path, 'odd-2.db'), '--tables', '"orders, 2024']);
      assert.equal(unclosed.status, 2);
      assert.match(unclosed.stderr, /--tables has a quoted name without its closing quote/);
      const trailing = strata(['restore', id, '--repo', repo, '--to', path.join(dir.path, 'odd-2.db'), '--tables', '"orders", 2024']);
      assert.equal(trailing.status, 1, 'two names: "orders" and "2024", neither in the backup');
      assert.match(trailing.stderr, /no table "orders"/);
      assert.equal(existsSync(path.join(dir.path, 'odd-2.db')), false);
    });

    it('rolls back when the restored rows would break foreign keys, and names the related tables', () => {
      const { repo, id } = tablesRepo();
      const live = path.join(dir.path, 'live.db');
      buildRichDatabase(live, { rows: 10 });
      sqliteQuery(live, "INSERT INTO authors(name) VALUES ('only in live'); INSERT INTO books(author_id, title) VALUES ((SELECT max(id) FROM authors), 'orphan-to-be')");
      const before = sqliteDump(live);
      const result = strata(['restore', id, '--repo', repo, '--to', live, '--tables', 'authors', '--force', '--yes']);
      assert.equal(result.status, 2);
      assert.match(result.stderr, /break 1 foreign key reference.*--tables authors,books/);
      assert.equal(sqliteDump(live), before);
    });
  });
});
