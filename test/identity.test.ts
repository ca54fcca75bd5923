import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import type { BackupRecord } from '@strata/sdk';
import { FIXTURE_DB, json, sqliteQuery, strata, useTempDir } from './helpers/env.js';

interface BackupJson {
  id: string;
  backup: BackupRecord;
}

describe('one database, one identity', () => {
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');
  /** A copy of the fixture at `relative`, marked so the two copies can be told apart. */
  const profile = (relative: string, marker: string): string => {
    const file = path.join(dir.path, relative);
    mkdirSync(path.dirname(file), { recursive: true });
    copyFileSync(FIXTURE_DB, file);
    const db = new Database(file);
    db.prepare("INSERT INTO settings(key, value) VALUES ('which', ?)").run(marker);
    db.close();
    return file;
  };

  it('two files with the same base name stay two databases, each with its own chain', () => {
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const first = profile('Default/History', 'default');
    const second = profile('Profile 1/History', 'profile one');
    const a = json<BackupJson>(strata(['backup', first, '--repo', repo(), '--json']));
    const b = json<BackupJson>(strata(['backup', second, '--repo', repo(), '--json']));
    assert.equal(a.backup.database, 'History');
    assert.match(b.backup.database, /^History-[0-9a-f]{6}$/);
    // Each keeps its own name on the next run, so incrementals chain to their own database.
    const a2 = json<BackupJson>(strata(['backup', first, '--type', 'incremental', '--repo', repo(), '--json']));
    const b2 = json<BackupJson>(strata(['backup', second, '--type', 'incremental', '--repo', repo(), '--json']));
    assert.equal(a2.backup.parent, a.id);
    assert.equal(b2.backup.parent, b.id);
    for (const [name, marker] of [[a.backup.database, 'default'], [b.backup.database, 'profile one']] as const) {
      const target = path.join(dir.path, `${name}.restored.db`);
      assert.equal(strata(['restore', 'latest', '--db', name, '--to', target, '--repo', repo()]).status, 0);
      assert.equal(sqliteQuery(target, "SELECT value FROM settings WHERE key = 'which'"), marker);
    }
  });

  it('an incremental against a parent from another source is refused, saying why', () => {
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const first = profile('one/app.db', 'one');
    const second = profile('two/app.db', 'two');
    assert.equal(strata(['backup', first, '--name', 'app', '--repo', repo()]).status, 0);
    const result = strata(['backup', second, '--name', 'app', '--type', 'incremental', '--repo', repo(), '--json']);
    assert.equal(result.status, 2);
    assert.match(json<{ error: { message: string } }>(result).error.message, /last backup came from .*one\/app\.db.*different databases/);
  });

  it('a restore point older than its parent is refused', () => {
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const file = profile('app.db', 'x');
    assert.equal(strata(['backup', file, '--repo', repo(), '--time', '2026-11-20T12:00:00Z']).status, 0);
    const result = strata(['backup', file, '--type', 'incremental', '--repo', repo(), '--time', '2026-11-20T11:00:00Z', '--json']);
    assert.equal(result.status, 2);
    assert.match(json<{ error: { message: string } }>(result).error.message, /must be newer than its parent/);
  });
});
