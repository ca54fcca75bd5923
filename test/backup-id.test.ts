import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
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

/**
 * A folder in which, the moment a backup claims its new id, another writer's note already claims
 * it: as when another process backing up the same database drew the same id in the same second and
 * is still writing (its artifact not stored yet, so no listing would show it).
 */
class ClaimedStorage extends LocalStorage {
  planted: { key: string; bytes: Buffer } | undefined;

  constructor(
    readonly root: string,
    readonly database: string,
  ) {
    super(root);
  }

  override async createExclusive(key: string, body: Uint8Array, options?: { signal?: AbortSignal }): Promise<boolean> {
    const proposed = new RegExp(`^pending/${this.database}_full_\\d{8}_\\d{6}_[0-9a-f]{4}\\.json$`);
    if (this.planted === undefined && proposed.test(key)) {
      const id = key.slice('pending/'.length, -'.json'.length);
      // A live writer of this host (this process), so no open takes it for a dead one's.
      const bytes = Buffer.from(JSON.stringify({ keys: [`backups/${this.database}/${id}.tar.zst`], cacheKeys: [], pid: process.pid, host: hostname(), at: new Date().toISOString() }) + '\n');
      mkdirSync(path.dirname(path.join(this.root, key)), { recursive: true });
      writeFileSync(path.join(this.root, key), bytes);
      this.planted = { key, bytes };
    }
    return super.createExclusive(key, body, options);
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
    assert.deepEqual(readdirSync(path.join(dir.path, 'repo', 'pending')), [], 'the claim of the taken id was given back, and the backup\'s own note went at its commit');
    const [report] = await repo.verify({ id: first.id }, { level: 'quick' });
    assert.equal(report?.outcome, 'passed', JSON.stringify(report));
    await repo.close();
  });

  it('is never one another writer has claimed and is still writing: its claim stays, and the backup takes another id', async () => {
    const db = path.join(dir.path, 'shop.db');
    copyFileSync(FIXTURE_DB, db);
    const storage = new ClaimedStorage(path.join(dir.path, 'repo-claimed'), 'shop');
    await initRepository(storage as Storage, { encryption: 'none' });
    const repo = await openRepository(storage as Storage, { tempDir: path.join(dir.path, 'tmp') });
    const first = await repo.backup(db, { database: 'shop', type: 'full' });
    const planted = storage.planted;
    assert.ok(planted, 'the backup claimed its id');
    assert.notEqual(`pending/${first.id}.json`, planted.key, 'the backup took another id');
    assert.deepEqual(readdirSync(path.join(dir.path, 'repo-claimed', 'pending')), [path.basename(planted.key)], 'only the other writer\'s claim is left');
    assert.deepEqual(readFileSync(path.join(dir.path, 'repo-claimed', planted.key)), planted.bytes, 'the other writer\'s claim is untouched');
    const [report] = await repo.verify({ id: first.id }, { level: 'quick' });
    assert.equal(report?.outcome, 'passed', JSON.stringify(report));
    await repo.close();
  });
});
