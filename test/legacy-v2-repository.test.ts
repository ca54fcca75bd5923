import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import type { BackupRecord } from '@strata/sdk';
import { ROOT, json, sqliteDump, sqliteQuery, strata, useTempDir } from './helpers/env.js';
import { assertRestoresAsExpected } from './helpers/legacy.js';

const LEGACY = path.join(ROOT, 'fixtures/legacy-v2');

describe('a repository written by the release before the object-store layout (fixtures/legacy-v2)', () => {
  const dir = useTempDir();

  it('lists, verifies in full, restores every restore point as it was, keeps its history and takes new backups', function () {
    this.timeout(600_000);
    // A copy: opening the repository moves it onto the new layout; the fixture stays as made.
    const repo = path.join(dir.path, 'repo');
    cpSync(path.join(LEGACY, 'repo'), repo, { recursive: true });

    // What a backup of that release killed mid-way leaves: a staged artifact, and a killed commit's
    // note naming an artifact it had moved into backups/ but not written to catalog.json.
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
    const artifact = path.join(repo, 'backups/app', readdirSync(path.join(repo, 'backups/app')).find((f) => f.startsWith('app_full_'))!);
    mkdirSync(path.join(repo, 'staging'), { recursive: true });
    copyFileSync(artifact, path.join(repo, 'staging', `${dead}-0a1b2c3d4e5f-app_full_20261130_150000_dead.tar.zst.gpg`));
    copyFileSync(artifact, path.join(repo, 'backups/app/app_full_20261130_160000_beef.tar.zst.gpg'));
    mkdirSync(path.join(repo, 'locks'), { recursive: true });
    writeFileSync(path.join(repo, 'locks/committing-app_full_20261130_160000_beef.json'), JSON.stringify({ key: 'backups/app/app_full_20261130_160000_beef.tar.zst.gpg', pid: dead, host: hostname() }));

    const backups = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups;
    assert.deepEqual(backups.map((b) => b.type).sort(), ['differential', 'full', 'incremental', 'schema-only']);
    // Opened once, it is on the object layout, with nothing of the old one or of the killed run left.
    assert.equal((JSON.parse(readFileSync(path.join(repo, 'repository.json'), 'utf8')) as { version: number }).version, 3);
    for (const gone of ['catalog.json', 'journal.ndjson', 'staging', 'backups/app/app_full_20261130_160000_beef.tar.zst.gpg', 'locks/committing-app_full_20261130_160000_beef.json']) {
      assert.ok(!existsSync(path.join(repo, gone)) || (gone === 'staging' && readdirSync(path.join(repo, gone)).length === 0), `${gone} is gone`);
    }
    assert.ok(existsSync(path.join(repo, 'journal/legacy.ndjson')));
    assert.equal(readdirSync(path.join(repo, 'backups/app')).length, 4);
    const full = backups.find((b) => b.type === 'full')!;
    assert.equal(full.verification?.outcome, 'passed', 'the verification that release recorded is still there');
    assert.equal(full.verification?.level, 'full');
    assert.equal(backups.find((b) => b.type === 'incremental')!.verification?.level, 'quick');

    // The journal that release appended to still reads: its four backups and two verifications.
    const stats = json<{ rows: { type: string; succeeded: number }[] }>(strata(['stats', '--since', '36500d', '--repo', repo, '--json'])).rows;
    assert.deepEqual(stats.map((r) => [r.type, r.succeeded]).sort(), [['differential', 1], ['full', 1], ['incremental', 1], ['schema-only', 1]]);

    const verify = strata(['verify', '--all', '--level', 'full', '--repo', repo, '--json']);
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
    const reports = json<{ reports: { backupId: string; outcome: string }[] }>(verify).reports;
    assert.deepEqual(reports.map((r) => [r.backupId, r.outcome]).sort(), backups.map((b) => [b.id, 'passed']).sort());

    assertRestoresAsExpected(repo, path.join(LEGACY, 'expected'), dir.path);

    // The second key file's passphrase opens it too.
    const second = strata(['verify', full.id, '--level', 'quick', '--repo', repo], { env: { STRATA_PASSPHRASE: 'second key file passphrase' } });
    assert.equal(second.status, 0, second.stderr);

    // Writing works afterwards: a full backup of a database at a new path (a different source,
    // so not an incremental of the old chain), then an incremental on top of it.
    const source = path.join(dir.path, 'source.db');
    cpSync(path.join(dir.path, `${backups.find((b) => b.type === 'differential')!.id}.db`), source);
    const first = strata(['backup', source, '--repo', repo, '--name', 'moved', '--type', 'full', '--json']);
    assert.equal(first.status, 0, first.stderr);
    sqliteQuery(source, "INSERT INTO customers(id, name, email) VALUES (1000, 'new customer', 'new@example.org');");
    const made = strata(['backup', source, '--repo', repo, '--name', 'moved', '--type', 'incremental', '--json']);
    assert.equal(made.status, 0, made.stderr);
    const id = json<{ id: string }>(made).id;
    const after = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups;
    assert.equal(after.length, 6);
    const target = path.join(dir.path, 'new.db');
    const restored = strata(['restore', id, '--to', target, '--repo', repo]);
    assert.equal(restored.status, 0, restored.stderr);
    assert.equal(sqliteDump(target), sqliteDump(source));
  });
});
