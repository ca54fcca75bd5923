import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import * as path from 'node:path';
import { LocalStorage, initRepository, openRepository } from '@strata/sdk';
import type { Storage } from '@strata/sdk';
import { FIXTURE_DB, useTempDir } from './helpers/env.js';

/**
 * A folder whose deletions happen but are reported as failed, as on an object store whose answer
 * is lost on the way back (test/storage-s3-faults.test.ts shows it through a real network path):
 * the request did its work, the client sees an error.
 */
class LostAnswerStorage extends LocalStorage {
  failing: (key: string) => boolean = () => false;

  override async delete(key: string): Promise<void> {
    await super.delete(key);
    if (this.failing(key)) throw Object.assign(new Error(`storage: delete ${key}: InternalError (HTTP 500)`), { code: 'EIO' });
  }
}

describe('a backup whose commit is followed by a failure', () => {
  const dir = useTempDir();

  // The commit point is the new catalog generation. An error after it (deleting the older
  // generation, releasing the lock) must not undo the backup's objects: the catalog lists them.
  for (const [what, failing] of [
    ['deleting the older catalog generation fails', (key: string) => key.startsWith('catalog/')],
    ['releasing the repository lock fails', (key: string) => key.startsWith('locks/')],
  ] as const) {
    it(`${what}: the backup stays whole (listed and verified) or is gone entirely`, async () => {
      // A copy: a backup opens its source, which leaves SQLite's side files beside it.
      const db = path.join(dir.path, 'app.db');
      copyFileSync(FIXTURE_DB, db);
      const storage = new LostAnswerStorage(path.join(dir.path, 'repo'));
      await initRepository(storage as Storage, { encryption: 'none' });
      const repo = await openRepository(storage as Storage, { tempDir: path.join(dir.path, 'tmp') });
      await repo.backup(db, { database: 'app', type: 'full' });
      storage.failing = failing;
      const outcome = await repo.backup(db, { database: 'app', type: 'full' }).then(
        (record) => ({ id: record.id, error: undefined }),
        (error: unknown) => ({ id: undefined, error }),
      );
      storage.failing = () => false;
      await repo.close();

      const again = await openRepository(storage as Storage, { tempDir: path.join(dir.path, 'tmp') });
      const listed = await again.list();
      assert.ok(listed.length === 1 || listed.length === 2, `one or two backups are listed (${listed.length})`);
      if (outcome.id) assert.ok(listed.some((b) => b.id === outcome.id), 'a backup reported done is listed');
      for (const report of await again.verify('all', { level: 'quick' })) assert.equal(report.outcome, 'passed', `${report.backupId} verifies (${JSON.stringify(report)})`);
      await again.close();
    });
  }
});
