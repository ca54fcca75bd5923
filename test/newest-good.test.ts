import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { StreamMessageReader, StreamMessageWriter, createMessageConnection } from 'vscode-jsonrpc/node';
import { PASSPHRASE_REQUEST } from '@strata/protocol';
import type { BackupView } from '@strata/protocol';
import type { BackupRecord } from '@strata/sdk';
import { sqliteQuery, json, strata, ROOT, TEST_PASSPHRASE, useTempDir } from './helpers/env.js';

/** The backups of `strata.config.json`'s `app`, as strata-server's `strata/list` shows them to the editor. */
async function listedByServer(workspace: string, repository: string): Promise<readonly BackupView[]> {
  const child = spawn(process.execPath, [path.join(ROOT, 'packages/server/dist/main.js'), '--stdio'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const connection = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
  connection.onRequest(PASSPHRASE_REQUEST, () => ({ passphrase: TEST_PASSPHRASE }));
  connection.listen();
  try {
    await connection.sendRequest('initialize', { processId: process.pid, rootUri: null, capabilities: {} });
    await connection.sendNotification('initialized', {});
    await connection.sendRequest('strata/workspace', { folders: [workspace], databases: [] });
    return ((await connection.sendRequest('strata/list', { repository, database: 'app' })) as { backups: BackupView[] }).backups;
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await connection.sendRequest('shutdown').catch(() => undefined);
    await connection.sendNotification('exit').catch(() => undefined);
    await exited;
    connection.dispose();
  }
}

describe('the newest good backup', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it('is the same one for list, health, prune, delete and the editor when the newest backup is schema-only and another failed verification', async () => {
    const workspace = dir.path;
    const repo = path.join(workspace, 'repo');
    const db = path.join(workspace, 'app.db');
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './repo', databases: { app: { url: './app.db' } } }));
    sqliteQuery(db, 'CREATE TABLE t (a); INSERT INTO t VALUES (1)');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const id = (args: string[]): string => json<{ id: string }>(strata(['backup', 'app', '--repo', repo, '--json', ...args], { cwd: workspace })).id;

    const full = id([]);
    assert.equal(strata(['verify', full, '--level', 'quick', '--repo', repo]).status, 0);
    sqliteQuery(db, 'INSERT INTO t VALUES (2)');
    const incremental = id(['--type', 'incremental']);
    // A damaged artifact: its quick verification fails and the catalog records that.
    const records = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'])).backups;
    const artifact = path.join(repo, records.find((b) => b.id === incremental)!.key);
    const bytes = readFileSync(artifact);
    bytes[bytes.length >> 1]! ^= 0xff;
    writeFileSync(artifact, bytes);
    assert.equal(strata(['verify', incremental, '--level', 'quick', '--repo', repo]).status, 3);
    const schemaOnly = id(['--type', 'schema-only']);

    const list = json<{ newestGood: Record<string, string | null> }>(strata(['list', '--repo', repo, '--json']));
    assert.deepEqual(list.newestGood, { app: full });
    const marked = strata(['list', '--repo', repo]).stdout.split('\n').filter((line) => / \* /.test(line));
    assert.equal(marked.length, 1, 'one row is marked');
    assert.match(marked[0]!, new RegExp(`^${full} \\* `));

    const health = json<{ checks: { check: string; message: string }[] }>(strata(['health', '--repo', repo, '--json']));
    assert.match(health.checks.find((c) => c.check === 'backup-age')!.message, new RegExp(`^newest good backup ${full} `));

    const prune = json<{ keep: { id: string; reasons: string[] }[] }>(strata(['prune', '--repo', repo, '--keep-last', '1', '--dry-run', '--json']));
    assert.deepEqual(
      prune.keep.filter((k) => k.reasons.includes('newest good backup (always kept)')).map((k) => k.id),
      [full],
    );

    const deletion = json<{ newestGood: string[] }>(strata(['delete', full, schemaOnly, '--with-dependents', '--dry-run', '--json', '--repo', repo]));
    assert.deepEqual(deletion.newestGood, [full]);

    // The extension's status bar shows the age of the backup the server marks.
    const listed = await listedByServer(workspace, repo);
    assert.deepEqual(listed.filter((b) => b.newestGood).map((b) => b.id), [full]);
    assert.equal(listed[0]!.id, schemaOnly, 'the schema-only backup is the newest');
  });
});
