import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { StreamMessageReader, StreamMessageWriter, createMessageConnection } from 'vscode-jsonrpc/node';
import { PASSPHRASE_REQUEST } from '@strata/protocol';
import type { BackupView } from '@strata/protocol';
import type { BackupRecord } from '@strata/sdk';
import { recordContentFailure, sqliteQuery, json, strata, ROOT, TEST_PASSPHRASE, useTempDir } from './helpers/env.js';

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

  /** A workspace whose config names app.db (a table t holding 1) and a repository; `id` backs app up and gives the backup's id. */
  const appWorkspace = (): { workspace: string; repo: string; db: string; id: (args: string[]) => string } => {
    const workspace = dir.path;
    const repo = path.join(workspace, 'repo');
    const db = path.join(workspace, 'app.db');
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './repo', databases: { app: { url: './app.db' } } }));
    sqliteQuery(db, 'CREATE TABLE t (a); INSERT INTO t VALUES (1)');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const id = (args: string[]): string => json<{ id: string }>(strata(['backup', 'app', '--repo', repo, '--json', ...args], { cwd: workspace })).id;
    return { workspace, repo, db, id };
  };

  it('is the same one for list, health, prune, delete and the editor when the newest backup is schema-only and another failed verification', async () => {
    const { workspace, repo, db, id } = appWorkspace();

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

  it('restore latest and --as-of pass over a newer restore point whose verification found its restored data wrong, and say so', () => {
    const { workspace, repo, db, id } = appWorkspace();
    const full = id([]);
    sqliteQuery(db, 'INSERT INTO t VALUES (2)');
    const incremental = id(['--type', 'incremental']);
    sqliteQuery(db, 'INSERT INTO t VALUES (3)');
    const second = id(['--type', 'incremental']);
    const rows = (file: string): string => sqliteQuery(file, 'SELECT group_concat(a) FROM t').trim();
    // The first incremental's rows came back wrong in a full verification; the second builds on it.
    recordContentFailure(repo, incremental);

    const latest = strata(['restore', 'latest', '--db', 'app', '--to', path.join(workspace, 'latest.db'), '--repo', repo]);
    assert.equal(latest.status, 0, latest.stderr);
    assert.match(latest.stderr, new RegExp(`passed over ${second} \\(taken [^)]+\\): its ancestor ${incremental} failed verification at [^ ]+ \\(data-consistency\\): its restored data was not what the backup recorded`));
    assert.match(latest.stderr, new RegExp(`passed over ${incremental} \\(taken [^)]+\\): it failed verification at `));
    assert.equal(rows(path.join(workspace, 'latest.db')), '1', 'the full backup, the newest restore point without such a link');

    const asOf = strata(['restore', '--db', 'app', '--as-of', new Date().toISOString(), '--to', path.join(workspace, 'as-of.db'), '--repo', repo, '--json']);
    assert.equal(asOf.status, 0, asOf.stderr);
    assert.equal(json<{ id: string }>(asOf).id, full);
    assert.match(asOf.stderr, new RegExp(`passed over ${second} `));
    // A script that reads only the JSON learns it too.
    const passedOver = json<{ warnings: { code: string; message: string }[] }>(asOf).warnings;
    assert.deepEqual(passedOver.map((w) => w.code), ['STRATA_PASSED_OVER', 'STRATA_PASSED_OVER']);
    assert.match(passedOver.map((w) => w.message).join('\n'), new RegExp(`^restore: passed over ${second} `, 'm'));

    // Named by its id, a restore point is restored as asked, with the warning.
    const named = strata(['restore', second, '--to', path.join(workspace, 'named.db'), '--repo', repo]);
    assert.equal(named.status, 0, named.stderr);
    assert.match(named.stderr, new RegExp(`warning: restore: ${second} its ancestor ${incremental} failed verification at .*restoring it as named`));
    assert.equal(rows(path.join(workspace, 'named.db')), '1,2,3');

    // With every restore point's chain found wrong, latest names the newest and says how to go on.
    recordContentFailure(repo, full, 'schema-integrity');
    const none = strata(['restore', 'latest', '--db', 'app', '--to', path.join(workspace, 'none.db'), '--repo', repo]);
    assert.equal(none.status, 3, none.stderr);
    assert.match(none.stderr, new RegExp(`every restore point of app has a link whose verification found its restored data wrong; the newest, ${second}, its ancestor ${incremental} failed verification at .*name it by its id`));
    assert.ok(!existsSync(path.join(workspace, 'none.db')), 'nothing was written');
  });
});
