import assert from 'node:assert/strict';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { BackupRecord } from '@strata/sdk';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { TEST_PASSPHRASE, json, sqliteDump, strata, useTempDir } from './helpers/env.js';
import { useTestBucket } from './helpers/s3.js';

// Copies and mirrors between storages of different kinds: a folder and an S3 bucket (the real
// server of scripts/s3/start-s3.sh), each way, under different passphrases.

const OFFSITE_PASSPHRASE = 'the offsite bucket has its own passphrase';
describe('with the S3 test server', function () {
  const testBucket = useTestBucket();

  function listed(repo: string, passphrase: string): BackupRecord[] {
    const result = strata(['list', '--repo', repo, '--json'], { env: { STRATA_PASSPHRASE: passphrase } });
    assert.equal(result.status, 0, result.stderr);
    return json<{ backups: BackupRecord[] }>(result).backups;
  }

  function backup(args: string[], options: { cwd?: string } = {}): string {
    const result = strata(['backup', ...args, '--json'], options);
    assert.equal(result.status, 0, result.stderr);
    return json<{ id: string }>(result).id;
  }

  describe('strata copy between a folder and S3', function () {
    this.timeout(900_000);
    const dir = useTempDir();

    it('copies chains from a folder into a bucket (re-encrypted), restores from the bucket, copies nothing twice, and copies back into a new folder', () => {
      const local = path.join(dir.path, 'local');
      const offsite = `s3://${testBucket.name}/offsite`;
      const db = path.join(dir.path, 'shop.db');
      buildRichDatabase(db, { rows: 60 });
      assert.equal(strata(['init', '--repo', local]).status, 0);
      const init = strata(['init', '--repo', offsite], { env: { STRATA_PASSPHRASE: OFFSITE_PASSPHRASE } });
      assert.equal(init.status, 0, init.stderr);
      const full = backup([db, '--repo', local]);
      mutate(db, 1);
      const incremental = backup([db, '--repo', local, '--type', 'incremental']);

      const toBucket = strata(['copy', '--from', local, '--to', offsite, '--json'], { env: { STRATA_TO_PASSPHRASE: OFFSITE_PASSPHRASE } });
      assert.equal(toBucket.status, 0, toBucket.stderr);
      const copied = json<{ copied: { id: string; mode: string }[] }>(toBucket).copied;
      assert.deepEqual(copied.map((c) => c.id), [full, incremental]);
      assert.ok(copied.every((c) => c.mode === 're-encrypted'));
      const pick = (b: BackupRecord) => [b.id, b.parent, b.createdAt, b.databaseBytes, b.schemaFingerprint];
      assert.deepEqual(listed(offsite, OFFSITE_PASSPHRASE).map(pick), listed(local, TEST_PASSPHRASE).map(pick));

      const restored = path.join(dir.path, 'from-bucket.db');
      const restore = strata(['restore', 'latest', '--db', 'shop', '--repo', offsite, '--to', restored], { env: { STRATA_PASSPHRASE: OFFSITE_PASSPHRASE } });
      assert.equal(restore.status, 0, restore.stderr);
      assert.equal(sqliteDump(restored), sqliteDump(db));
      const verify = strata(['verify', '--all', '--level', 'full', '--repo', offsite], { env: { STRATA_PASSPHRASE: OFFSITE_PASSPHRASE } });
      assert.equal(verify.status, 0, verify.stdout + verify.stderr);

      const again = strata(['copy', '--from', local, '--to', offsite, '--json'], { env: { STRATA_TO_PASSPHRASE: OFFSITE_PASSPHRASE } });
      assert.equal(again.status, 0, again.stderr);
      assert.deepEqual(json<{ copied: unknown[] }>(again).copied, []);

      // The way back, as after losing the machine: from the bucket into a new folder.
      const rebuilt = path.join(dir.path, 'rebuilt');
      assert.equal(strata(['init', '--repo', rebuilt]).status, 0);
      const back = strata(['copy', '--from', offsite, '--to', rebuilt, '--json'], { env: { STRATA_PASSPHRASE: OFFSITE_PASSPHRASE, STRATA_TO_PASSPHRASE: TEST_PASSPHRASE } });
      assert.equal(back.status, 0, back.stderr);
      assert.deepEqual(listed(rebuilt, TEST_PASSPHRASE).map(pick), listed(local, TEST_PASSPHRASE).map(pick));
      const fromRebuilt = path.join(dir.path, 'from-rebuilt.db');
      assert.equal(strata(['restore', 'latest', '--db', 'shop', '--repo', rebuilt, '--to', fromRebuilt]).status, 0);
      assert.equal(sqliteDump(fromRebuilt), sqliteDump(db));
    });

    it('a bucket as the mirror of a folder: backups reach it, health reports it, and a restore falls back on it when the local artifact is gone', () => {
      const db = path.join(dir.path, 'app.db');
      buildRichDatabase(db, { rows: 40 });
      const mirror = `s3://${testBucket.name}/mirror`;
      writeFileSync(
        path.join(dir.path, 'strata.config.json'),
        JSON.stringify({ repository: './primary', mirror: { repository: mirror }, databases: { app: { url: './app.db' } } }),
      );
      assert.equal(strata(['init'], { cwd: dir.path }).status, 0);
      const mirrorInit = strata(['init', '--repo', mirror], { env: { STRATA_PASSPHRASE: OFFSITE_PASSPHRASE } });
      assert.equal(mirrorInit.status, 0, mirrorInit.stderr);
      const env = { STRATA_MIRROR_PASSPHRASE: OFFSITE_PASSPHRASE };
      const first = strata(['backup', 'app'], { cwd: dir.path, env });
      assert.equal(first.status, 0, first.stderr);
      assert.match(first.stdout, /mirror s3:\/\/.*\/mirror: copied 1 backup/);
      mutate(db, 1);
      const second = strata(['backup', 'app', '--type', 'incremental'], { cwd: dir.path, env });
      assert.equal(second.status, 0, second.stderr);
      assert.deepEqual(listed(mirror, OFFSITE_PASSPHRASE).map((b) => b.id), listed(path.join(dir.path, 'primary'), TEST_PASSPHRASE).map((b) => b.id));
      const health = strata(['health', '--max-unverified', '30d'], { cwd: dir.path, env });
      assert.equal(health.status, 0, health.stdout + health.stderr);
      assert.match(health.stdout, /ok +\[mirror\] mirror-lag \(app\): the mirror has all 2 restore point/);

      // The disk loses the full backup's artifact: the restore takes the whole chain from the bucket.
      const folder = path.join(dir.path, 'primary', 'backups', 'app');
      const fullArtifact = readdirSync(folder).find((f) => f.includes('_full_'));
      assert.ok(fullArtifact);
      rmSync(path.join(folder, fullArtifact));
      const out = path.join(dir.path, 'restored.db');
      const restored = strata(['restore', 'latest', '--db', 'app', '--to', out], { cwd: dir.path, env });
      assert.equal(restored.status, 0, restored.stderr);
      assert.match(restored.stderr, /restored from the mirror s3:\/\/.*\/mirror/);
      assert.equal(sqliteDump(out), sqliteDump(db));
    });
  });
});
