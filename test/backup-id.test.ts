import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { LocalStorage, initRepository, openRepository } from '@strata/sdk';
import type { ObjectInfo, Storage } from '@strata/sdk';
import { FIXTURE_DB, useTempDir } from './helpers/env.js';

/**
 * A folder in which, the moment a backup looks whether its new id is taken, an artifact with that
 * id appears: as when an earlier backup of the database in the same second drew the same 2-byte
 * suffix, which no test can make happen at will.
 */
class CollidingStorage extends LocalStorage {
  planted: { key: string; bytes: Buffer } | undefined;

  constructor(
    readonly root: string,
    readonly database: string,
  ) {
    super(root);
  }

  override async *list(prefix: string, options?: { signal?: AbortSignal }): AsyncIterable<ObjectInfo> {
    const proposed = new RegExp(`^backups/${this.database}/${this.database}_full_\\d{8}_\\d{6}_[0-9a-f]{4}\\.$`);
    if (this.planted === undefined && proposed.test(prefix)) {
      const key = `${prefix}tar.zst`;
      const bytes = Buffer.from('the artifact of an earlier backup with this id\n');
      mkdirSync(path.dirname(path.join(this.root, key)), { recursive: true });
      writeFileSync(path.join(this.root, key), bytes);
      this.planted = { key, bytes };
    }
    yield* super.list(prefix, options);
  }
}

describe('a new backup id', () => {
  const dir = useTempDir();

  it('is never one whose artifact is already stored: the earlier artifact stays as it was', async () => {
    const db = path.join(dir.path, 'app.db');
    copyFileSync(FIXTURE_DB, db);
    const storage = new CollidingStorage(path.join(dir.path, 'repo'), 'app');
    await initRepository(storage as Storage, { encryption: 'none' });
    const repo = await openRepository(storage as Storage, { tempDir: path.join(dir.path, 'tmp') });
    const first = await repo.backup(db, { database: 'app', type: 'full' });
    const planted = storage.planted;
    assert.ok(planted, 'the backup looked whether its id was taken');
    assert.notEqual(first.key, planted.key, 'the backup took another id');
    assert.deepEqual(readFileSync(path.join(dir.path, 'repo', planted.key)), planted.bytes, 'the artifact already there is untouched');
    const [report] = await repo.verify({ id: first.id }, { level: 'quick' });
    assert.equal(report?.outcome, 'passed', JSON.stringify(report));
    await repo.close();
  });
});
