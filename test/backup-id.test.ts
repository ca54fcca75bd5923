import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { LocalStorage, initRepository, openRepository } from '@strata/sdk';
import type { ObjectInfo, Storage } from '@strata/sdk';
import { FIXTURE_DB, useTempDir } from './helpers/env.js';

/**
 * A folder in which, the moment a backup looks whether its new id is taken, an artifact with that
 * id appears: as when an earlier backup of the database in the same second drew the same 2-byte
 * suffix, which no test can make happen at will. It also keeps what the backup's claim of that id
 * said at that moment.
 */
class CollidingStorage extends LocalStorage {
  planted: { key: string; bytes: Buffer } | undefined;
  claimAtListing: { keys: string[]; cacheKeys: string[] } | undefined;

  constructor(
    readonly root: string,
    readonly database: string,
  ) {
    super(root);
  }

  override async *list(prefix: string, options?: { signal?: AbortSignal }): AsyncIterable<ObjectInfo> {
    const proposed = new RegExp(`^backups/${this.database}/(${this.database}_full_\\d{8}_\\d{6}_[0-9a-f]{4})\\.$`).exec(prefix);
    if (this.planted === undefined && proposed) {
      this.claimAtListing = JSON.parse(readFileSync(path.join(this.root, 'pending', `${proposed[1]}.json`), 'utf8'));
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
 * A folder in which, the moment a backup claims its new id, another writer already holds it: as
 * when another process backing up the same database drew the same id in the same second. That
 * writer's artifact is stored while this backup writes its own, as two processes at work at once
 * would; no listing before it could have seen it.
 */
class ClaimedStorage extends LocalStorage {
  other: { key: string; bytes: Buffer } | undefined;

  constructor(
    readonly root: string,
    readonly database: string,
  ) {
    super(root);
  }

  override async createExclusive(key: string, body: Uint8Array, options?: { signal?: AbortSignal }): Promise<boolean> {
    const proposed = new RegExp(`^pending/(${this.database}_full_\\d{8}_\\d{6}_[0-9a-f]{4})\\.json$`).exec(key);
    if (this.other === undefined && proposed) {
      const artifact = `backups/${this.database}/${proposed[1]}.tar.zst`;
      // A live writer of this host (this process), so no open takes its note for a dead one's.
      const note = { keys: [artifact], cacheKeys: [], pid: process.pid, host: hostname(), at: new Date().toISOString() };
      mkdirSync(path.join(this.root, 'pending'), { recursive: true });
      writeFileSync(path.join(this.root, key), JSON.stringify(note) + '\n');
      this.other = { key: artifact, bytes: Buffer.from('the artifact of another backup being written at the same time\n') };
    }
    return super.createExclusive(key, body, options);
  }

  override async put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: { signal?: AbortSignal }): Promise<ObjectInfo> {
    if (this.other && key.startsWith(`backups/${this.database}/`) && !existsSync(path.join(this.root, this.other.key))) {
      mkdirSync(path.dirname(path.join(this.root, this.other.key)), { recursive: true });
      writeFileSync(path.join(this.root, this.other.key), this.other.bytes);
    }
    return super.put(key, body, options);
  }
}

describe('a new backup id', () => {
  const dir = useTempDir();

  /** A full backup of a copy of the fixture, as `database`, into a new unencrypted repository on `storage`; the backup is verified. */
  async function backUpOnce(storage: LocalStorage & { root: string }, database: string): Promise<{ key: string; verified: () => Promise<void> }> {
    const db = path.join(dir.path, `${database}.db`);
    copyFileSync(FIXTURE_DB, db);
    await initRepository(storage as Storage, { encryption: 'none' });
    const repo = await openRepository(storage as Storage, { tempDir: path.join(dir.path, 'tmp') });
    const backup = await repo.backup(db, { database, type: 'full' });
    return {
      key: backup.key,
      verified: async () => {
        const [report] = await repo.verify({ id: backup.id }, { level: 'quick' });
        await repo.close();
        assert.equal(report?.outcome, 'passed', JSON.stringify(report));
      },
    };
  }

  it('is never one whose artifact is already stored: the earlier artifact stays as it was', async () => {
    const storage = new CollidingStorage(path.join(dir.path, 'repo'), 'app');
    const first = await backUpOnce(storage, 'app');
    const planted = storage.planted;
    assert.ok(planted, 'the backup looked whether its id was taken');
    assert.notEqual(first.key, planted.key, 'the backup took another id');
    assert.deepEqual(readFileSync(path.join(dir.path, 'repo', planted.key)), planted.bytes, 'the artifact already there is untouched');
    assert.deepEqual(readdirSync(path.join(dir.path, 'repo', 'pending')), [], 'the claim of the taken id was given back, and the backup\'s own note went at its commit');
    // Had the process died there, a note naming the earlier backup's artifact would have made a
    // catalog rebuild leave that backup out and the next open delete it.
    assert.deepEqual(storage.claimAtListing && [storage.claimAtListing.keys, storage.claimAtListing.cacheKeys], [[], []], 'the claim named nothing while the id might be taken');
    await first.verified();
  });

  it('is never one another writer has claimed and is still writing: that writer\'s artifact stays as it wrote it', async () => {
    const storage = new ClaimedStorage(path.join(dir.path, 'repo-claimed'), 'shop');
    const first = await backUpOnce(storage, 'shop');
    const other = storage.other;
    assert.ok(other, 'the backup claimed its id');
    assert.notEqual(first.key, other.key, 'the backup took another id');
    assert.deepEqual(readFileSync(path.join(dir.path, 'repo-claimed', other.key)), other.bytes, 'the other writer\'s artifact is as it wrote it');
    await first.verified();
  });
});
