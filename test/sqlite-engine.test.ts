import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import Database from 'better-sqlite3';
import * as path from 'node:path';
import { EngineRegistry, Passphrase, SqliteEngine, initRepository, openRepository } from '@strata/sdk';
import { describeEngineConformance } from './conformance/engine-conformance.js';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { sqliteDump, sqliteQuery, useTempDir } from './helpers/env.js';

const engine = new SqliteEngine({ busyTimeoutMs: 500 });

describeEngineConformance('sqlite', async () => ({
  engine,
  registry: new EngineRegistry().register(engine),
  createRich: async (dir) => {
    const file = path.join(dir, 'rich.db');
    buildRichDatabase(file);
    return file;
  },
  mutate: async (file, seed) => mutate(file, seed),
  newTarget: async (dir, name) => path.join(dir, `${name}.db`),
  dump: async (file) => sqliteDump(file),
  dumpSchema: async (file) => sqliteQuery(file, '.schema'),
}));

describe('SQLite engine', () => {
  const dir = useTempDir();
  const passphrase = new Passphrase('sqlite engine tests');

  async function repository() {
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    return openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
  }

  it('restores a copy that passes PRAGMA integrity_check and keeps user_version', async () => {
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 500 });
    const repo = await repository();
    const record = await repo.backup(source, { database: 'app' });
    const target = path.join(dir.path, 'out.db');
    await repo.restore({ id: record.id }, { to: target });
    assert.equal(sqliteQuery(target, 'PRAGMA integrity_check'), 'ok');
    assert.equal(sqliteQuery(target, 'PRAGMA user_version'), '42');
    assert.equal(sqliteQuery(target, "SELECT count(*) FROM search WHERE search MATCH 'Buch'"), '500');
  });

  it('takes a consistent snapshot of a WAL database while another process writes to it', async function () {
    this.timeout(60_000);
    const source = path.join(dir.path, 'busy.db');
    buildRichDatabase(source, { rows: 50 });
    // The writer inserts batches of 10 rows, each batch in one transaction: any consistent
    // snapshot holds a multiple of 10 of them.
    const writerScript = path.join(dir.path, 'writer.cjs');
    const betterSqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    writeFileSync(
      writerScript,
      `const Database = require(${JSON.stringify(betterSqlite)});
       const db = new Database(process.argv[2], { timeout: 5000 });
       db.exec('CREATE TABLE IF NOT EXISTS batches (n INTEGER, payload BLOB)');
       const insert = db.prepare('INSERT INTO batches VALUES (?, randomblob(2000))');
       const batch = db.transaction((n) => { for (let i = 0; i < 10; i++) insert.run(n); });
       let n = 0; process.send('ready');
       const tick = () => { for (let k = 0; k < 20; k++) batch(n++); setImmediate(tick); };
       tick();`,
    );
    const writer = fork(writerScript, [source], { stdio: 'ignore' });
    await new Promise<void>((resolve) => writer.once('message', () => resolve()));
    try {
      const repo = await repository();
      const records = [];
      for (let i = 0; i < 3; i++) records.push(await repo.backup(source, { database: 'busy' }));
      for (const [i, record] of records.entries()) {
        const target = path.join(dir.path, `snap${i}.db`);
        await repo.restore({ id: record.id }, { to: target });
        assert.equal(sqliteQuery(target, 'PRAGMA integrity_check'), 'ok');
        const count = Number(sqliteQuery(target, 'SELECT count(*) FROM batches'));
        assert.equal(count % 10, 0, `snapshot ${i} holds ${count} rows: a torn transaction`);
      }
    } finally {
      writer.kill();
    }
  });

  it('never replays a stale -wal file onto the restored database', async () => {
    const source = path.join(dir.path, 'src.db');
    buildRichDatabase(source, { rows: 20 });
    const repo = await repository();
    const record = await repo.backup(source, { database: 'src' });
    // A target path with a leftover WAL from some other database that once lived there.
    const target = path.join(dir.path, 'target.db');
    const other = path.join(dir.path, 'other.db');
    buildRichDatabase(other, { rows: 5 });
    const open = new Database(other);
    open.pragma('wal_autocheckpoint = 0');
    open.prepare("INSERT INTO log(message) VALUES ('from the stale wal')").run();
    // Copy while the connection is open, so the committed row exists only in the -wal file.
    copyFileSync(other, target);
    copyFileSync(`${other}-wal`, `${target}-wal`);
    open.close();
    assert.ok(existsSync(`${target}-wal`));
    await repo.restore({ id: record.id }, { to: target, force: true });
    assert.equal(sqliteDump(target), sqliteDump(source));
    assert.equal(sqliteQuery(target, "SELECT count(*) FROM log WHERE message = 'from the stale wal'"), '0');
    assert.deepEqual(
      readdirSync(dir.path).filter((f) => f.includes('strata-')),
      [],
      'no temporary or moved-aside files are left next to the target',
    );
  });
});
