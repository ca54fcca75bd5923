import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { json, strata } from '../helpers/env.js';

/**
 * Large (slow, not in `npm test`): a zip export whose artifact is past 4 GiB needs ZIP64 records,
 * or the sizes in the zip wrap around and every other tool reads a truncated file. Run with
 * `npm run test:large`; it needs about 25 GB of free space in STRATA_LARGE_TMPDIR (default: the
 * system temporary folder) and several minutes.
 */
const GIB = 1024 ** 3;
const ROW_BYTES = 1024 * 1024;
const ROWS = 4400; // 4.3 GiB of random blobs: past the 32-bit limit, incompressible

/** The sqlite3 shell's own SHA3 over every row: an oracle that does not go through Strata. */
function contentDigest(file: string): string {
  const result = spawnSync('sqlite3', [file, "SELECT count(*) || ' ' || hex(sha3_query('SELECT id, data FROM blobs ORDER BY id'))"], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout.trim();
}

describe('large: a zip export past 4 GiB', function () {
  this.timeout(3 * 60 * 60 * 1000);
  let dir = '';
  before(() => {
    dir = mkdtempSync(path.join(process.env.STRATA_LARGE_TMPDIR ?? tmpdir(), 'strata-large-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is written with ZIP64 records that unzip checks, and imports and restores byte for byte', () => {
    const database = path.join(dir, 'media.db');
    const build = spawnSync('sqlite3', [database, `PRAGMA journal_mode=OFF; CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB);
      WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${ROWS}) INSERT INTO blobs SELECT i, randomblob(${ROW_BYTES}) FROM n;`], { encoding: 'utf8' });
    assert.equal(build.status, 0, build.stderr);
    const expected = contentDigest(database);

    const source = path.join(dir, 'source');
    const tmp = path.join(dir, 'tmp');
    const env = { STRATA_TMPDIR: tmp };
    assert.equal(strata(['init', '--repo', source], { env }).status, 0);
    const backup = strata(['backup', database, '--name', 'media', '--repo', source, '--json'], { env });
    assert.equal(backup.status, 0, backup.stderr);
    const record = json<{ backup: { storedBytes: number } }>(backup).backup;
    assert.ok(record.storedBytes > 4 * GIB, `the artifact must pass 4 GiB to need ZIP64 (it has ${record.storedBytes} bytes)`);

    const bundle = path.join(dir, 'media.zip');
    const exported = strata(['export', '--all', '--out', bundle, '--repo', source, '--json'], { env });
    assert.equal(exported.status, 0, exported.stderr);
    assert.ok(statSync(bundle).size > 4 * GIB);
    rmSync(source, { recursive: true, force: true });

    // Info-ZIP's unzip reads the central directory and checks every entry's CRC-32 and size; a
    // zip without ZIP64 records past 4 GiB fails here with wrapped sizes or a CRC error.
    const tested = spawnSync('unzip', ['-tq', bundle], { encoding: 'utf8' });
    assert.equal(tested.status, 0, `unzip -t: ${tested.stdout}${tested.stderr}`);
    const listing = spawnSync('zipinfo', ['-l', bundle], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
    assert.equal(listing.status, 0, listing.stderr);
    const sizes = [...listing.stdout.matchAll(/^\S+\s+\S+\s+\S+\s+(\d+)\s+\S+\s+(\d+)\s+stor\s.*\sbackups\/media\//gm)].map((m) => Number(m[1]));
    assert.ok(sizes.some((size) => size > 4 * GIB), `zipinfo shows the artifact entry past 4 GiB:\n${listing.stdout}`);

    const target = path.join(dir, 'target');
    assert.equal(strata(['init', '--repo', target], { env }).status, 0);
    const imported = strata(['import', bundle, '--repo', target, '--json'], { env });
    assert.equal(imported.status, 0, imported.stderr);
    rmSync(bundle, { force: true });
    const restored = path.join(dir, 'restored.db');
    const restore = strata(['restore', 'latest', '--db', 'media', '--repo', target, '--to', restored], { env });
    assert.equal(restore.status, 0, restore.stderr);
    assert.equal(contentDigest(restored), expected);
  });
});
