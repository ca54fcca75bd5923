import assert from 'node:assert/strict';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { EngineRegistry, MysqlEngine, Passphrase, PostgresEngine, SqliteEngine, openRepository } from '@strata/sdk';
import type { Engine, Snapshot, VerifyReport } from '@strata/sdk';
import { TEST_PASSPHRASE, json, strata, useTempDir, journalLines, removeCatalog } from './helpers/env.js';
import { MysqlDatabases, mysqlQuery, mysqlUrl, requireMysql } from './helpers/mysql.js';
import { Databases, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';

/*
 * An encrypted repository keeps its journal and catalog in plaintext, beside artifacts nobody can
 * read without the passphrase. Those files must not give the schema away: a failing verify,
 * restore or backup shows the user which table failed (terminal, --json), while the files keep
 * the error code, the operation and counts. Every schema object and value of these databases
 * carries MARKER, and no file under the repository may hold it.
 */
const MARKER = 'hushhush';

/** Every file under `dir` (dot-folders, locks and temporary files too) whose name or bytes hold MARKER. */
function filesNamingTheSchema(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const text = readFileSync(file).toString('latin1').toLowerCase();
    if (file.toLowerCase().includes(MARKER) || text.includes(MARKER)) found.push(`${path.relative(dir, file)}: ${excerpt(text)}`);
  }
  return found;
}

function excerpt(text: string): string {
  const at = text.indexOf(MARKER);
  return at < 0 ? '(in the name)' : JSON.stringify(text.slice(Math.max(0, at - 120), at + 60));
}

function assertNoFileNamesTheSchema(repoDir: string, after: string): void {
  assert.deepEqual(filesNamingTheSchema(repoDir), [], `after ${after}, plaintext files of the repository name schema objects or values`);
}

/**
 * The engine with one lie in what its snapshots record, so the backup's facts disagree with its
 * rows or its schema, as they would after someone altered the artifact and re-sealed its hashes.
 */
function recordingWrongly(real: Engine, lie: 'rows' | 'schema'): Engine {
  const snapshot = async (...args: Parameters<Engine['snapshot']>): Promise<Snapshot> => {
    const taken = await real.snapshot(...args);
    const recorded: Snapshot = {
      schemaFingerprint: taken.schemaFingerprint,
      ...(taken.schemaObjects ? { schemaObjects: taken.schemaObjects } : {}),
      tableStats: () => taken.tableStats(),
      streams: taken.streams,
      schemaSql: taken.schemaSql,
      databaseBytes: taken.databaseBytes,
      engineMeta: taken.engineMeta,
      close: () => taken.close(),
    };
    if (lie === 'rows') {
      return {
        ...recorded,
        tableStats: async () => {
          const stats = await taken.tableStats();
          assert.ok(stats.some((t) => t.name.includes(`${MARKER}_ledger`)), `the snapshot has the ledger table (it has ${stats.map((t) => t.name).join(', ')})`);
          return stats.map((t) => (t.name.includes(`${MARKER}_ledger`) ? { ...t, rows: t.rows + 1 } : t));
        },
      };
    }
    const objects = { ...taken.schemaObjects };
    const ledger = Object.keys(objects).find((name) => name.endsWith(`${MARKER}_ledger`));
    assert.ok(ledger, `the snapshot describes the ledger table (it has ${Object.keys(objects).join(', ')})`);
    objects[ledger] = '0'.repeat(64);
    return { ...recorded, schemaObjects: objects };
  };
  return new Proxy(real, {
    get(target, property) {
      if (property === 'snapshot') return snapshot;
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

interface EngineCase {
  readonly title: string;
  readonly engine: () => Engine;
  readonly prepare?: (context: Mocha.Context) => Promise<void>;
  /** A database whose schema and values carry MARKER: a ledger table with an index, and another table. */
  readonly source: () => Promise<string>;
  /** A restore target that does not exist yet. */
  readonly target: () => string;
  /** A database whose backup is refused with an error naming an object of it, when the engine has one. */
  readonly refusedSource?: () => Promise<string>;
  readonly cleanup?: () => Promise<void>;
}

describe('schema names stay out of the repository\'s plaintext files', function () {
  this.timeout(180_000);
  const dir = useTempDir();
  const repoDir = (): string => path.join(dir.path, 'repo');
  const pg = new Databases();
  const my = new MysqlDatabases();

  const cases: EngineCase[] = [
    {
      title: 'SQLite',
      engine: () => new SqliteEngine(),
      source: async () => {
        const file = path.join(dir.path, 'app.db');
        const db = new Database(file);
        db.exec(`CREATE TABLE ${MARKER}_ledger (id INTEGER PRIMARY KEY, ${MARKER}_note TEXT);
          CREATE INDEX ${MARKER}_idx ON ${MARKER}_ledger (${MARKER}_note);
          CREATE TABLE ${MARKER}_other (id INTEGER PRIMARY KEY);
          INSERT INTO ${MARKER}_ledger (${MARKER}_note) VALUES ('${MARKER} one'), ('${MARKER} two');
          INSERT INTO ${MARKER}_other VALUES (1);`);
        db.close();
        return file;
      },
      target: () => path.join(dir.path, 'restored.db'),
    },
    {
      title: 'PostgreSQL',
      engine: () => new PostgresEngine(),
      prepare: requirePostgres,
      source: async () => {
        const name = await pg.create(`CREATE TABLE ${MARKER}_ledger (id integer PRIMARY KEY, ${MARKER}_note text);
          CREATE INDEX ${MARKER}_idx ON ${MARKER}_ledger (${MARKER}_note);
          CREATE TABLE ${MARKER}_other (id integer PRIMARY KEY);
          INSERT INTO ${MARKER}_ledger VALUES (1, '${MARKER} one'), (2, '${MARKER} two');
          INSERT INTO ${MARKER}_other VALUES (1);`);
        return pgUrl(name);
      },
      target: () => pgUrl(pg.name()),
      // A materialized view that holds data over one that holds none could not be refreshed by a restore.
      refusedSource: async () => {
        const name = await pg.create(`CREATE TABLE ${MARKER}_base (id integer);
          INSERT INTO ${MARKER}_base VALUES (1);
          CREATE MATERIALIZED VIEW ${MARKER}_mv_base AS SELECT id FROM ${MARKER}_base;
          CREATE MATERIALIZED VIEW ${MARKER}_mv_top AS SELECT id FROM ${MARKER}_mv_base;`);
        await pgQuery(name, `REFRESH MATERIALIZED VIEW ${MARKER}_mv_base WITH NO DATA`);
        return pgUrl(name);
      },
      cleanup: () => pg.dropAll(),
    },
    {
      title: 'MySQL/MariaDB',
      engine: () => new MysqlEngine(),
      prepare: requireMysql,
      source: async () => {
        const name = await my.create(`CREATE TABLE ${MARKER}_ledger (id INT PRIMARY KEY, ${MARKER}_note VARCHAR(100));
          CREATE INDEX ${MARKER}_idx ON ${MARKER}_ledger (${MARKER}_note);
          CREATE TABLE ${MARKER}_other (id INT PRIMARY KEY);
          INSERT INTO ${MARKER}_ledger VALUES (1, '${MARKER} one'), (2, '${MARKER} two');
          INSERT INTO ${MARKER}_other VALUES (1);`);
        return mysqlUrl(name);
      },
      target: () => mysqlUrl(my.name()),
      // History versioned by transaction id refers to the server's own registry.
      refusedSource: async () => {
        const name = await my.create(`CREATE TABLE ${MARKER}_trx (id INT PRIMARY KEY, s BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE,
          e BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE, PERIOD FOR SYSTEM_TIME (s, e)) ENGINE=InnoDB WITH SYSTEM VERSIONING;`);
        await mysqlQuery(name, `INSERT INTO ${MARKER}_trx (id) VALUES (1)`);
        return mysqlUrl(name);
      },
      cleanup: () => my.dropAll(),
    },
  ];

  for (const c of cases) {
    describe(c.title, () => {
      before(async function () {
        await c.prepare?.(this);
      });
      afterEach(async () => {
        await c.cleanup?.();
      });

      const init = (): void => {
        const result = strata(['init', '--repo', repoDir()]);
        assert.equal(result.status, 0, result.stderr);
      };

      /** A full backup taken through an engine that records one thing wrongly. */
      async function backupRecordedWrongly(lie: 'rows' | 'schema'): Promise<string> {
        init();
        const repo = await openRepository(repoDir(), {
          engines: new EngineRegistry().register(recordingWrongly(c.engine(), lie)),
          passphrase: new Passphrase(TEST_PASSPHRASE),
          tempDir: path.join(dir.path, 'tmp'),
        });
        try {
          return (await repo.backup(await c.source(), { database: 'app' })).id;
        } finally {
          await repo.close();
        }
      }

      /** Runs `verify --level full --json`, which must fail (exit 3), and returns the failed check. */
      function failingVerify(id: string, check: string): VerifyReport['checks'][number] {
        const result = strata(['verify', id, '--level', 'full', '--repo', repoDir(), '--json']);
        assert.equal(result.status, 3, result.stderr + result.stdout);
        const { reports } = json<{ reports: VerifyReport[] }>(result);
        const failed = reports[0]!.checks.find((x) => x.name === check);
        assert.equal(failed?.status, 'failed', JSON.stringify(reports));
        return failed!;
      }

      /** What the journal kept of the failed operations: their kind and error code. */
      function failedOperations(): { kind: string; code: string | undefined }[] {
        return journalLines(repoDir())
          .map((line) => JSON.parse(line) as { kind: string; status: string; error?: { code: string } })
          .filter((r) => r.status === 'FAILED')
          .map((r) => ({ kind: r.kind, code: r.error?.code }));
      }

      /** The catalog lost and rebuilt from the artifacts and the journal (`list` rebuilds it). */
      function rebuildCatalog(): { verification: { outcome: string; checks: { name: string; reason: string }[] } | null }[] {
        removeCatalog(repoDir());
        const listed = strata(['list', '--repo', repoDir(), '--json']);
        assert.equal(listed.status, 0, listed.stderr);
        const out = json<{ backups: { verification: { outcome: string; checks: { name: string; reason: string }[] } | null }[] }>(listed);
        return out.backups;
      }

      it('a verify that finds one table\'s rows changed names the table in its report, and the files keep only counts (also after a catalog rebuild)', async () => {
        const id = await backupRecordedWrongly('rows');
        const failed = failingVerify(id, 'data-consistency');
        assert.match(failed.reason, new RegExp(`${MARKER}_ledger`), 'the user is told which table');
        assertNoFileNamesTheSchema(repoDir(), 'a failing verify');

        const text = strata(['verify', id, '--level', 'full', '--repo', repoDir()]);
        assert.equal(text.status, 3);
        assert.match(text.stdout + text.stderr, new RegExp(`${MARKER}_ledger`), 'the terminal names the table');

        const [rebuilt] = rebuildCatalog();
        assert.equal(rebuilt!.verification?.outcome, 'failed', 'the rebuilt catalog still knows the verification failed');
        const kept = rebuilt!.verification!.checks.find((x) => x.name === 'data-consistency')!;
        assert.match(kept.reason, /row counts differ in 1 table \(of 2 tables\)/);
        assertNoFileNamesTheSchema(repoDir(), 'a catalog rebuild');
      });

      it('a verify that finds a schema difference names the object in its report, and the files keep only counts', async () => {
        const id = await backupRecordedWrongly('schema');
        const failed = failingVerify(id, 'schema-integrity');
        assert.match(failed.reason, new RegExp(`${MARKER}_ledger is defined differently`));
        assertNoFileNamesTheSchema(repoDir(), 'a failing verify');
        const [rebuilt] = rebuildCatalog();
        assert.match(rebuilt!.verification!.checks.find((x) => x.name === 'schema-integrity')!.reason, /differs from the backup's in 1 object \(1 defined differently\)/);
        assertNoFileNamesTheSchema(repoDir(), 'a catalog rebuild');
      });

      it('a restore --tables naming a table the backup lacks names it in the error, and the journal keeps the code', async () => {
        init();
        const backup = strata(['backup', await c.source(), '--repo', repoDir(), '--name', 'app', '--json']);
        assert.equal(backup.status, 0, backup.stderr);
        const { id } = json<{ id: string }>(backup);
        const missing = `${MARKER}_missing`;
        const result = strata(['restore', id, '--to', c.target(), '--tables', missing, '--yes', '--repo', repoDir(), '--json']);
        assert.notEqual(result.status, 0);
        const { error } = json<{ error: { code: string; message: string } }>(result);
        assert.equal(error.code, 'TABLE_NOT_FOUND');
        assert.match(error.message, new RegExp(missing));
        assertNoFileNamesTheSchema(repoDir(), 'a failing restore');
        assert.deepEqual(failedOperations(), [{ kind: 'restore', code: 'TABLE_NOT_FOUND' }]);
        rebuildCatalog();
        assertNoFileNamesTheSchema(repoDir(), 'a catalog rebuild');
      });

      if (c.refusedSource) {
        it('a backup refused for an object it cannot capture names the object in the error, and the journal keeps the code', async () => {
          init();
          const result = strata(['backup', await c.refusedSource!(), '--repo', repoDir(), '--name', 'app', '--json']);
          assert.notEqual(result.status, 0);
          const { error } = json<{ error: { code: string; message: string } }>(result);
          assert.equal(error.code, 'UNSUPPORTED_OBJECT');
          assert.match(error.message, new RegExp(MARKER));
          assertNoFileNamesTheSchema(repoDir(), 'a failing backup');
          assert.deepEqual(failedOperations(), [{ kind: 'backup', code: 'UNSUPPORTED_OBJECT' }]);
        });
      }
    });
  }
});
