import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { json, strata } from '../helpers/env.js';
import { exited, startReplicator } from '../helpers/pitr.js';
import type { PointInTime } from '../helpers/pitr.js';

/**
 * Large (slow, not in `npm test`): continuous protection of a database that grows past 1 GiB.
 * SQLite never uses the page at byte offset 2^30 (the lock-byte page), so the write-ahead log a
 * replicator ships never holds it, and a replay must leave it alone while writing the pages on
 * both sides of it. Run with `npm run test:large`; it needs about 6 GB of free space in
 * STRATA_LARGE_TMPDIR (default: the system temporary folder) and a few minutes.
 */
const GIB = 1024 ** 3;
const ROW_BYTES = 1024 * 1024;
/** 960 MiB of random blobs to start with: under the lock page. */
const FIRST_ROWS = 960;
/** Then 16 MiB per transaction, 16 of them: the file ends past 1.2 GiB. */
const ROWS_PER_TRANSACTION = 16;
const GROWTH_TRANSACTIONS = 16;

/** Rows, total bytes and the sqlite3 shell's own SHA3 over every row: an oracle that does not go through Strata. */
function contentOf(file: string): string {
  const result = spawnSync('sqlite3', [file, "SELECT (SELECT count(*) || ' ' || sum(length(data)) FROM blobs) || ' ' || hex(sha3_query('SELECT id, data FROM blobs ORDER BY id'))"], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout.trim();
}

describe('large: continuous protection of a database growing past the 1 GiB lock page', function () {
  this.timeout(60 * 60 * 1000);
  let dir = '';
  before(() => {
    dir = mkdtempSync(path.join(process.env.STRATA_LARGE_TMPDIR ?? tmpdir(), 'strata-large-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('replicates the growth from under to over 1 GiB, and restores as of a time after it with integrity_check ok and every row', async () => {
    const database = path.join(dir, 'media.db');
    const build = spawnSync('sqlite3', [database, `PRAGMA journal_mode=OFF; CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB);
      WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${FIRST_ROWS}) INSERT INTO blobs SELECT i, randomblob(${ROW_BYTES}) FROM n;
      PRAGMA journal_mode=WAL;`], { encoding: 'utf8' });
    assert.equal(build.status, 0, build.stderr);
    assert.ok(statSync(database).size < GIB, 'the database starts under the lock page');

    const repo = path.join(dir, 'repo');
    const env = { STRATA_TMPDIR: path.join(dir, 'tmp') };
    assert.equal(strata(['init', '--repo', repo, '--no-encryption'], { env }).status, 0);
    const replicator = await startReplicator(repo, database, ['--verbose']);
    assert.match(replicator.ready, /as the base/);

    // The application: 16 MiB transactions, each shipped by the running replicator, until the file is past 1 GiB.
    const app = new Database(database);
    const insert = app.prepare('INSERT INTO blobs (data) VALUES (randomblob(?))');
    const grow = app.transaction(() => {
      for (let i = 0; i < ROWS_PER_TRANSACTION; i++) insert.run(ROW_BYTES);
    });
    for (let t = 0; t < GROWTH_TRANSACTIONS; t++) {
      grow();
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const pages = (app.pragma('page_count', { simple: true }) as number) * (app.pragma('page_size', { simple: true }) as number);
    const grownAt = Date.now();
    app.close();
    assert.ok(pages > GIB + 64 * 1024 * 1024, `the database grew past the lock page (${pages} bytes)`);
    const expected = contentOf(database);

    // Stopped by SIGTERM, the replicator ships what the log holds before it exits.
    replicator.child.kill('SIGTERM');
    const stopped = await exited(replicator.child);
    assert.equal(stopped.code, 0, replicator.stderr());

    // A moment after the growth and after the replicator caught up with it (16 MiB transactions
    // are seen committed a while after they are: the lag is not what this test is about).
    const restored = path.join(dir, 'restored.db');
    const asOf = new Date().toISOString();
    assert.ok(Date.parse(asOf) > grownAt);
    const result = strata(['restore', '--repo', repo, '--db', 'media', '--as-of', asOf, '--to', restored, '--json'], { env });
    assert.equal(result.status, 0, result.stderr);
    const pit = json<{ pointInTime: PointInTime }>(result).pointInTime;
    assert.ok(pit.transactions >= GROWTH_TRANSACTIONS, `the growth was replayed from segments (${JSON.stringify(pit)})`);
    assert.ok(statSync(restored).size > GIB, 'the restored file is past the lock page too');
    const check = spawnSync('sqlite3', [restored, 'PRAGMA integrity_check'], { encoding: 'utf8' });
    assert.equal(check.stdout.trim(), 'ok', check.stderr);
    assert.equal(contentOf(restored), expected);
    assert.match(expected, new RegExp(`^${FIRST_ROWS + ROWS_PER_TRANSACTION * GROWTH_TRANSACTIONS} `));
  });
});
