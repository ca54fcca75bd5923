import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Passphrase, StrataError, openRepository } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { buildRichDatabase } from './helpers/databases.js';
import { CLI, TEST_PASSPHRASE, json, sqliteDump, sqliteQuery, strata, useTempDir, catalogPath } from './helpers/env.js';

describe('operator commands', () => {
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');
  const setup = (): string => {
    const db = path.join(dir.path, 'app.db');
    buildRichDatabase(db, { rows: 50 });
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    return db;
  };

  describe('strata run', () => {
    it('backs up first, passes the exit status through, and with --rollback-on-failure leaves the database exactly as before', () => {
      const db = setup();
      const before = sqliteDump(db);
      const result = strata(['run', '--db', db, '--repo', repo(), '--rollback-on-failure', '--', 'sh', '-c', 'sqlite3 "$0" "DELETE FROM books; DROP TABLE tags"; exit 7', db]);
      assert.equal(result.status, 7, result.stderr);
      assert.match(result.stderr, /the command failed \(exit 7\); the database was restored to app_full_/);
      assert.equal(sqliteDump(db), before);
      const list = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
      assert.equal(list[0]!.label, 'pre-update');
    });

    it('without rollback keeps the change and journals the command that undoes it, and the program it ran without its arguments', async () => {
      const db = setup();
      const before = sqliteDump(db);
      // Arguments may hold secrets (here a password in a URL the command never uses): the journal is plain text.
      const result = strata(['run', '--db', db, '--repo', repo(), '--json', '--', 'sh', '-c', 'sqlite3 "$0" "DELETE FROM log"', db, 'postgres://app:TopSecretPw@db.example/shop']);
      assert.equal(result.status, 0, result.stderr);
      const summary = json<{ backupId: string; exitCode: number; undo: string; rolledBack: boolean }>(result);
      assert.equal(summary.exitCode, 0);
      assert.equal(sqliteQuery(db, 'SELECT count(*) FROM log'), '0');
      const r = await openRepository(repo(), { passphrase: new Passphrase(TEST_PASSPHRASE) });
      const op = (await r.journal.operations()).find((o) => o.kind === 'run')!;
      assert.equal(op.status, 'COMPLETED');
      assert.equal((op.last.details as { undo: string }).undo, summary.undo);
      assert.equal((op.last.details as { command: string }).command, 'sh (4 argument(s), not recorded)');
      for (const file of readdirSync(path.join(repo(), 'journal'))) assert.doesNotMatch(readFileSync(path.join(repo(), 'journal', file), 'utf8'), /TopSecretPw/, file);
      // The journalled command really undoes it.
      const undo = spawnSync('sh', ['-c', summary.undo.replace(/^strata /, `${process.execPath} ${CLI} `)], {
        env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE },
        encoding: 'utf8',
      });
      assert.equal(undo.status, 0, undo.stderr);
      assert.equal(sqliteDump(db), before);
    });

    it('the command does not inherit the passphrase or its sources', () => {
      const db = setup();
      const seen = path.join(dir.path, 'env.txt');
      const result = strata(['run', '--db', db, '--repo', repo(), '--', 'sh', '-c', 'env > "$0"', seen], { env: { STRATA_MIRROR_PASSPHRASE_FILE: '/run/mirror-pass', STRATA_TEST_VISIBLE: 'yes' } });
      assert.equal(result.status, 0, result.stderr);
      const env = readFileSync(seen, 'utf8');
      assert.doesNotMatch(env, new RegExp(TEST_PASSPHRASE));
      assert.doesNotMatch(env, /^STRATA_[A-Z_]*PASSPHRASE/m);
      assert.match(env, /^STRATA_TEST_VISIBLE=yes$/m, 'the rest of the environment is passed on');
    });

    it('refuses to run the command when the safety backup fails', () => {
      setup();
      const marker = path.join(dir.path, 'ran');
      const result = strata(['run', '--db', path.join(dir.path, 'missing.db'), '--repo', repo(), '--', 'touch', marker]);
      assert.equal(result.status, 1);
      assert.match(result.stderr, /safety backup failed, so the command was not run/);
      assert.equal(spawnSync('test', ['-e', marker]).status, 1);
    });
  });

  describe('stats, health and inventory', () => {
    it('stats reports count, success rate, time, size and ratio per day and type', () => {
      const db = setup();
      strata(['backup', db, '--repo', repo()]);
      strata(['backup', db, '--repo', repo(), '--type', 'incremental']);
      strata(['backup', path.join(dir.path, 'missing.db'), '--repo', repo(), '--name', 'app', '--type', 'incremental']);
      const rows = json<{ rows: { type: string; count: number; succeeded: number; successRate: number; averageCompressionRatio: number | null }[] }>(strata(['stats', '--repo', repo(), '--json'])).rows;
      const full = rows.find((r) => r.type === 'full')!;
      const inc = rows.find((r) => r.type === 'incremental')!;
      assert.equal(full.count, 1);
      assert.ok(full.averageCompressionRatio! > 0 && full.averageCompressionRatio! < 1);
      assert.deepEqual([inc.count, inc.succeeded, inc.successRate], [2, 1, 0.5]);
    });

    it('health exits 3 when the newest good backup is too old, and 0 when all is well', () => {
      const db = setup();
      strata(['backup', db, '--repo', repo(), '--time', '2020-01-01T00:00:00Z']);
      const old = strata(['health', '--repo', repo(), '--json']);
      assert.equal(old.status, 3);
      const report = json<{ healthy: boolean; checks: { check: string; status: string; message: string }[] }>(old);
      assert.equal(report.checks.find((c) => c.check === 'backup-age')!.status, 'unhealthy');
      strata(['backup', db, '--repo', repo()]);
      // All is well only once a restore point has been proven: a backup never verified since
      // 2020 makes health unhealthy (verification-age) until something passes a verify.
      assert.equal(strata(['verify', 'latest', '--repo', repo()]).status, 0);
      const fresh = strata(['health', '--repo', repo()]);
      assert.equal(fresh.status, 0, fresh.stdout);
      assert.match(fresh.stdout, /^healthy$/m);
      // Mistyped sources (no such file, a folder, a server's port) fail their run and make no database to watch:
      // nothing could ever be pruned or deleted to clear it.
      const typo = strata(['backup', path.join(dir.path, 'apps.db'), '--repo', repo()]);
      assert.equal(typo.status, 1);
      const folder = strata(['backup', dir.path, '--repo', repo(), '--name', 'folder', '--json']);
      assert.equal(folder.status, 1);
      assert.equal(json<{ error: { code: string; message: string } }>(folder).error.code, 'DATABASE_INVALID');
      assert.match(json<{ error: { code: string; message: string } }>(folder).error.message, /is a folder, not a SQLite database file/);
      // A server URL with a mistyped port (nothing listens there) is the same kind of mistake.
      const port = strata(['backup', 'postgres://postgres@127.0.0.1:1/typo', '--repo', repo(), '--json']);
      assert.equal(port.status, 1);
      assert.equal(json<{ error: { code: string } }>(port).error.code, 'CONNECTION_FAILED');
      const stillFresh = strata(['health', '--repo', repo()]);
      assert.equal(stillFresh.status, 0, stillFresh.stdout);
      const tightDisk = strata(['health', '--repo', repo(), '--max-disk', '1']);
      assert.equal(tightDisk.status, 3);
      assert.match(tightDisk.stdout, /UNHEALTHY\s+disk-use/);
    });

    it('health counts a database the config names but nobody backed up, and a scheduled job whose latest run failed', async () => {
      setup();
      const other = path.join(dir.path, 'other.db');
      buildRichDatabase(other, { rows: 5 });
      const config = path.join(dir.path, 'strata.config.json');
      writeFileSync(
        config,
        JSON.stringify({
          repository: './repo',
          schedules: { nightly: { job: 'backup', type: 'full', cron: '0 2 * * *' }, check: { job: 'health', cron: '*/30 * * * *' } },
          databases: { app: { url: './app.db' }, other: { url: './other.db' } },
        }),
      );
      const health = (): { healthy: boolean; checks: { check: string; database: string | null; status: string; message: string }[] } =>
        json(strata(['health', '--config', config, '--json']));
      assert.equal(strata(['backup', 'app', '--config', config]).status, 0);
      const never = health();
      assert.equal(never.healthy, false);
      assert.deepEqual(never.checks.filter((c) => c.status === 'unhealthy').map((c) => [c.check, c.database, c.message]), [['backup-age', 'other', 'other has never been backed up']]);
      // Another repository than the config's is not about the config's databases.
      const elsewhere = path.join(dir.path, 'elsewhere');
      assert.equal(strata(['init', '--repo', elsewhere]).status, 0);
      assert.equal(strata(['backup', path.join(dir.path, 'app.db'), '--repo', elsewhere]).status, 0);
      assert.equal(strata(['health', '--config', config, '--repo', elsewhere]).status, 0);

      assert.equal(strata(['backup', 'other', '--config', config]).status, 0);
      assert.equal(health().healthy, true);
      const r = await openRepository(repo(), { passphrase: new Passphrase(TEST_PASSPHRASE) });
      const journalFailure = async (job: string, jobKind: string): Promise<void> => {
        const entry = await r.journal.begin('job', { database: 'app', details: { job, jobKind } });
        await entry.fail(new StrataError('HOOK_FAILED', `${job} failed`), { details: { job, jobKind } });
      };
      // A job renamed or removed from the config never runs again; a health job fails exactly when a check does.
      await journalFailure('old-name', 'backup');
      await journalFailure('check', 'health');
      assert.equal(health().healthy, true, 'neither counts');
      // What a daemon journals for a job its before hook stopped (the backup itself never ran).
      const facts = { job: 'nightly', jobKind: 'backup' };
      const failed = await r.journal.begin('job', { database: 'app', details: facts });
      await failed.fail(new StrataError('HOOK_FAILED', 'the before hook exited with 7; the job did not run'), { details: facts });
      const failing = health();
      assert.equal(failing.healthy, false);
      const check = failing.checks.find((c) => c.check === 'failed-jobs' && c.database === 'app')!;
      assert.equal(check.status, 'unhealthy');
      assert.match(check.message, /the latest run of job nightly \(.+\) failed: the before hook exited with 7/);
      const ran = await r.journal.begin('job', { database: 'app', details: facts });
      await ran.complete({ details: facts });
      assert.equal(health().healthy, true, 'the next run of the job succeeded');
      await r.close();
    });

    it('health flags two failed verifications in a row and a failed latest backup run', () => {
      const db = setup();
      const id = json<{ id: string }>(strata(['backup', db, '--repo', repo(), '--json'])).id;
      const key = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups[0]!.key;
      const file = path.join(repo(), key);
      const bytes = readFileSync(file);
      bytes[100]! ^= 1;
      writeFileSync(file, bytes);
      strata(['verify', id, '--repo', repo()]);
      strata(['verify', id, '--repo', repo()]);
      strata(['backup', path.join(dir.path, 'gone.db'), '--repo', repo(), '--name', 'app']);
      const result = strata(['health', '--repo', repo(), '--json']);
      assert.equal(result.status, 3);
      const checks = json<{ checks: { check: string; status: string }[] }>(result).checks;
      assert.equal(checks.find((c) => c.check === 'verification')!.status, 'unhealthy');
      assert.equal(checks.find((c) => c.check === 'failed-backups')!.status, 'unhealthy');
      // Metrics say it too: the newest good restore point's series is there, at 0, so an alert on its age fires.
      const metrics = strata(['metrics', '--repo', repo()]);
      assert.equal(metrics.status, 0, metrics.stderr);
      assert.match(metrics.stdout, /^strata_newest_good_backup_timestamp_seconds\{database="app"\} 0$/m);
      assert.match(metrics.stdout, /^strata_newest_good_backup_age_seconds\{database="app"\} \d{10}/m);
    });

    it('health is unhealthy when restore points failed verification, even if the newest is fine, and when none was verified for too long', () => {
      const db = setup();
      const ids = [1, 2, 3].map(() => json<{ id: string }>(strata(['backup', db, '--repo', repo(), '--json'])).id);
      const backups = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
      // Two of three artifacts damaged; the newest is intact.
      for (const b of backups.filter((x) => x.id !== ids[2])) {
        const file = path.join(repo(), b.key);
        const bytes = readFileSync(file);
        bytes[100]! ^= 1;
        writeFileSync(file, bytes);
      }
      assert.equal(strata(['verify', '--all', '--repo', repo()]).status, 3);
      const result = strata(['health', '--repo', repo(), '--json']);
      assert.equal(result.status, 3, result.stdout);
      const check = json<{ checks: { check: string; status: string; message: string }[] }>(result).checks.find((c) => c.check === 'failed-verifications')!;
      assert.equal(check.status, 'unhealthy');
      assert.match(check.message, /^2 of 3 verified restore point\(s\) failed/);
      // Never verified, and older than the limit.
      const other = path.join(dir.path, 'other.db');
      buildRichDatabase(other, { rows: 5 });
      strata(['backup', other, '--repo', repo(), '--time', new Date(Date.now() - 10 * 86_400_000).toISOString()]);
      const unverified = json<{ checks: { check: string; database: string; status: string }[] }>(strata(['health', '--repo', repo(), '--max-age', '1y', '--json'])).checks;
      assert.equal(unverified.find((c) => c.check === 'verification-age' && c.database === 'other')!.status, 'unhealthy');
      const relaxed = json<{ checks: { check: string; database: string; status: string }[] }>(strata(['health', '--repo', repo(), '--max-age', '1y', '--max-unverified', '30d', '--json'])).checks;
      assert.equal(relaxed.find((c) => c.check === 'verification-age' && c.database === 'other')!.status, 'ok');
    });

    it('verify latest checks the newest restore point with rows, and a schema-only backup that passed does not count as the data verified', () => {
      setup();
      const other = path.join(dir.path, 'other.db');
      buildRichDatabase(other, { rows: 5 });
      const full = json<{ id: string }>(strata(['backup', other, '--repo', repo(), '--time', new Date(Date.now() - 10 * 86_400_000).toISOString(), '--json'])).id;
      const schemaOnly = json<{ id: string }>(strata(['backup', other, '--repo', repo(), '--type', 'schema-only', '--json'])).id;
      const ageOfOther = (): { status: string; message: string } =>
        json<{ checks: { check: string; database: string; status: string; message: string }[] }>(strata(['health', '--repo', repo(), '--max-age', '1y', '--json'])).checks.find((c) => c.check === 'verification-age' && c.database === 'other')!;
      assert.equal(strata(['verify', schemaOnly, '--repo', repo()]).status, 0);
      assert.equal(ageOfOther().status, 'unhealthy', 'the data of other was never verified');
      const latest = strata(['verify', 'latest', '--db', 'other', '--repo', repo(), '--json']);
      assert.equal(latest.status, 0, latest.stdout);
      assert.deepEqual(json<{ reports: { backupId: string }[] }>(latest).reports.map((r) => r.backupId), [full]);
      assert.equal(ageOfOther().status, 'ok');
    });

    it('inventory lists each database with its latest backup, count, size and last verification', () => {
      const db = setup();
      const other = path.join(dir.path, 'other.db');
      buildRichDatabase(other, { rows: 5 });
      strata(['backup', db, '--repo', repo()]);
      const id = json<{ id: string }>(strata(['backup', db, '--repo', repo(), '--type', 'incremental', '--json'])).id;
      strata(['backup', other, '--repo', repo()]);
      strata(['verify', id, '--repo', repo()]);
      const entries = json<{ databases: { database: string; backups: number; storedBytes: number; latest: { id: string }; lastVerified: { id: string; outcome: string } | null }[] }>(
        strata(['inventory', '--repo', repo(), '--json']),
      ).databases;
      assert.deepEqual(entries.map((e) => [e.database, e.backups]), [['app', 2], ['other', 1]]);
      assert.equal(entries[0]!.latest.id, id);
      assert.deepEqual(entries[0]!.lastVerified && [entries[0]!.lastVerified.id, entries[0]!.lastVerified.outcome], [id, 'passed']);
      assert.equal(entries[1]!.lastVerified, null);
    });
  });

  describe('the validator', () => {
    it('fails data-consistency, named, when the rows in an artifact differ from what its manifest recorded', () => {
      // An artifact whose bytes are self-consistent (hashes rewritten) but whose rows were altered:
      // only a restore and comparison against the recorded table checksums can catch it.
      const db = setup();
      assert.equal(strata(['init', '--repo', path.join(dir.path, 'plain'), '--no-encryption', '--compression', 'none']).status, 0);
      const plain = path.join(dir.path, 'plain');
      const id = json<{ id: string }>(strata(['backup', db, '--repo', plain, '--json'])).id;
      const record = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', plain, '--json'])).backups[0]!;
      const work = path.join(dir.path, 'unpacked');
      mkdirSync(work);
      assert.equal(spawnSync('tar', ['-xf', path.join(plain, record.key), '-C', work]).status, 0);
      const dataFile = path.join(work, 'data/main.db');
      sqliteQuery(dataFile, "PRAGMA journal_mode=DELETE; UPDATE books SET title = 'tampered' WHERE id = 3");
      const manifest = JSON.parse(readFileSync(path.join(work, 'manifest.json'), 'utf8'));
      const data = readFileSync(dataFile);
      manifest.streams[0].sha256 = createHash('sha256').update(data).digest('hex');
      manifest.streams[0].size = data.length;
      writeFileSync(path.join(work, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      // Rebuild the layout so the chunk check passes too.
      const pageSize = manifest.streams[0].chunking.size;
      const count = Math.ceil(data.length / pageSize);
      const layout = Buffer.alloc(24 + count * 20);
      layout.write('STLAYOUT', 0);
      layout.writeUInt32LE(1, 8);
      layout.writeUInt32LE(16, 12);
      layout.writeBigUInt64LE(BigInt(count), 16);
      for (let i = 0; i < count; i++) {
        const page = data.subarray(i * pageSize, (i + 1) * pageSize);
        layout.writeUInt32LE(page.length, 24 + i * 20);
        createHash('sha256').update(page).digest().copy(layout, 28 + i * 20, 0, 16);
      }
      manifest.streams[0].chunkCount = count;
      writeFileSync(path.join(work, 'layout/main.db.idx'), layout);
      const repacked = path.join(dir.path, 'repacked.tar');
      const tar = spawnSync('tar', ['--format=ustar', '-cf', repacked, '-C', work, 'README.txt', 'schema.sql', 'streams/main.db.json', 'data/main.db', 'layout/main.db.idx', 'manifest.json']);
      assert.equal(tar.status, 0, tar.stderr?.toString());
      const bytes = readFileSync(repacked);
      writeFileSync(path.join(plain, record.key), bytes);
      const catalogFile = catalogPath(plain);
      const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
      Object.assign(catalog.backups[0], { sha256: createHash('sha256').update(bytes).digest('hex'), storedBytes: bytes.length, rawBytes: bytes.length });
      writeFileSync(catalogFile, JSON.stringify(catalog));
      const result = strata(['verify', id, '--repo', plain, '--level', 'full', '--json']);
      assert.equal(result.status, 3, result.stderr);
      const checks = json<{ reports: { checks: { name: string; status: string; reason: string }[] }[] }>(result).reports[0]!.checks;
      assert.deepEqual(checks.map((c) => [c.name, c.status]), [
        ['file-accessibility', 'passed'],
        ['checksum-match', 'passed'],
        ['database-readable', 'passed'],
        ['schema-integrity', 'passed'],
        ['data-consistency', 'failed'],
      ]);
      assert.match(checks[4]!.reason, /table books content checksum differs/);
    });
  });
});
