import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { sqliteDump, sqliteQuery, strata } from './env.js';

/**
 * Restores every restore point a legacy fixture has an expected file for (`<id>.dump.gz`, or
 * `<id>.schema.gz` for a schema-only backup) into `workDir` and compares it with that file.
 */
export function assertRestoresAsExpected(repo: string, expectedDir: string, workDir: string): void {
  for (const file of readdirSync(expectedDir)) {
    const expected = gunzipSync(readFileSync(path.join(expectedDir, file))).toString('utf8');
    const id = file.replace(/\.(dump|schema)\.gz$/, '');
    const target = path.join(workDir, `${id}.db`);
    const restored = strata(['restore', id, '--to', target, '--repo', repo]);
    assert.equal(restored.status, 0, restored.stderr);
    if (file.endsWith('.schema.gz')) {
      // The same objects; the order of rows in sqlite_schema (FTS shadow tables before or after
      // the tables created after them) is not part of what a schema-only backup promises.
      const lines = (text: string): string[] => text.trim().split('\n').sort();
      assert.deepEqual(lines(sqliteQuery(target, '.schema')), lines(expected));
    } else {
      assert.equal(sqliteDump(target), expected, `${id} restores what the database held then`);
    }
  }
}
