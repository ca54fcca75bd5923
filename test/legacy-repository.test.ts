import assert from 'node:assert/strict';
import { cpSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { BackupRecord } from '@strata/sdk';
import { ROOT, json, sqliteDump, sqliteQuery, strata, useTempDir } from './helpers/env.js';

const LEGACY = path.join(ROOT, 'fixtures/legacy-v1');

describe('a repository written by the previous release (fixtures/legacy-v1)', () => {
  const dir = useTempDir();

  describe('SQLite', () => {
    const expected = (name: string): string => gunzipSync(readFileSync(path.join(LEGACY, 'sqlite/expected', name))).toString('utf8');

    it('lists, verifies in full and restores every restore point as it was', function () {
      this.timeout(600_000);
      // A copy: opening a repository may sweep and finish things in it; the fixture stays as made.
      const repo = path.join(dir.path, 'repo');
      cpSync(path.join(LEGACY, 'sqlite/repo'), repo, { recursive: true });
      const backups = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups;
      assert.deepEqual(backups.map((b) => b.type).sort(), ['differential', 'full', 'incremental', 'incremental', 'schema-only']);
      assert.ok(backups.some((b) => b.verification?.outcome === 'passed'), 'the verification results that release recorded are still there');
      const verify = strata(['verify', '--all', '--level', 'full', '--repo', repo, '--json']);
      assert.equal(verify.status, 0, verify.stdout);
      for (const file of readdirSync(path.join(LEGACY, 'sqlite/expected'))) {
        const id = file.replace(/\.(dump|schema)\.gz$/, '');
        const target = path.join(dir.path, `${id}.db`);
        const restored = strata(['restore', id, '--to', target, '--repo', repo]);
        assert.equal(restored.status, 0, restored.stderr);
        if (file.endsWith('.schema.gz')) {
          // The same objects; the order of rows in sqlite_schema (FTS shadow tables before or after
          // the tables created after them) is not part of what a schema-only backup promises.
          const lines = (text: string): string[] => text.trim().split('\n').sort();
          assert.deepEqual(lines(sqliteQuery(target, '.schema')), lines(expected(file)));
        } else {
          assert.equal(sqliteDump(target), expected(file), `${id} restores what the database held then`);
        }
      }
    });
  });
});
