import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { CancellationTokenSource, ResponseError } from 'vscode-jsonrpc/node';
import { STRATA_ERROR } from '@strata/protocol';
import { Passphrase, initRepository, openRepository } from '@strata/sdk';
import type { StrataErrorData } from '@strata/protocol';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { CLI, FIXTURE_DB, TEST_PASSPHRASE, sqliteDump, useTempDir } from './helpers/env.js';
import { Client } from './helpers/server-client.js';

describe('strata-server over JSON-RPC (stdio)', function () {
  this.timeout(300_000);
  const dir = useTempDir();
  let client: Client;
  let workspace: string;
  let repository: string;

  beforeEach(() => {
    client = new Client();
    workspace = path.join(dir.path, 'ws');
    repository = path.join(workspace, '.backups');
    mkdirSync(workspace, { recursive: true });
    buildRichDatabase(path.join(workspace, 'app.db'), { rows: 200 });
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db' } } }));
  });

  afterEach(async () => {
    await client.stop();
  });

  async function initialized(): Promise<void> {
    await client.start();
    await client.request('strata/workspace', { folders: [workspace], databases: [] });
    await client.request('strata/init', { repository, encryption: 'compat' });
  }

  it('initializes with its version and methods, and reads the workspace config and added databases', async () => {
    const init = await client.start();
    assert.equal(init.serverInfo.name, 'strata-server');
    assert.equal(init.capabilities.experimental.strata.protocol, 1);
    assert.ok(init.capabilities.experimental.strata.methods.includes('strata/backup'));
    const extra = path.join(dir.path, 'other.db');
    copyFileSync(FIXTURE_DB, extra);
    const ws = await client.request('strata/workspace', { folders: [workspace], databases: [{ name: 'other', url: extra, repository: path.join(dir.path, 'repo2') }] });
    assert.deepEqual(
      ws.databases.map((d) => [d.name, d.engine, d.origin, d.repositoryExists]),
      [
        ['app', 'sqlite', path.join(workspace, 'strata.config.json'), false],
        ['other', 'sqlite', 'settings', false],
      ],
    );
    assert.deepEqual(ws.problems, []);
    writeFileSync(path.join(workspace, 'strata.config.json'), '{ "repository": 42 }');
    const broken = await client.request('strata/workspace', { folders: [workspace], databases: [] });
    assert.equal(broken.databases.length, 0);
    assert.match(broken.problems[0]!.message, /repository: expected a folder path/);
  });

  it('runs as `strata serve --stdio` (what the extension starts): backs up and lists, and ends when the client exits', async () => {
    await client.stop();
    client = new Client([CLI, 'serve', '--stdio']);
    const init = await client.start();
    assert.equal(init.serverInfo.name, 'strata-server');
    assert.equal(init.capabilities.experimental.strata.protocol, 1);
    await client.request('strata/workspace', { folders: [workspace], databases: [] });
    await client.request('strata/init', { repository, encryption: 'compat' });
    const { backup } = await client.request('strata/backup', { repository, database: 'app', type: 'full' });
    const list = await client.request('strata/list', { repository, database: 'app' });
    assert.deepEqual(list.backups.map((b) => b.id), [backup.id]);
    const exited = new Promise<number | null>((resolve) => client.child.once('exit', resolve));
    await client.stop();
    assert.equal(await exited, 0, 'exit status 0 after shutdown and exit');
    // A client that goes away without shutdown and exit (the editor killed): the server ends
    // when its input closes, as the README says, and does not linger.
    client = new Client([CLI, 'serve', '--stdio']);
    await client.start();
    const ended = new Promise<number | null>((resolve) => client.child.once('exit', resolve));
    client.child.stdin!.end();
    assert.equal(await ended, 1, 'exit status 1 without a shutdown request, as a language server');
  });

  it('backs up, lists, verifies and restores, with $/progress and change notifications', async () => {
    await initialized();
    assert.deepEqual(client.passphraseRequests, [{ repository, purpose: 'init' }]);
    const original = sqliteDump(path.join(workspace, 'app.db'));
    const { backup } = await client.request('strata/backup', { repository, database: 'app', type: 'full', workDoneToken: 'progress-1' });
    assert.equal(backup.type, 'full');
    assert.ok(client.progress.some((p) => (p as { kind: string }).kind === 'begin'), 'progress began');
    assert.ok(client.progress.some((p) => (p as { kind: string }).kind === 'end'), 'progress ended');
    mutate(path.join(workspace, 'app.db'), 1);
    const second = await client.request('strata/backup', { repository, database: 'app', type: 'incremental' });
    assert.equal(second.backup.parent, backup.id);
    const { backups } = await client.request('strata/list', { repository, database: 'app' });
    assert.deepEqual(
      backups.map((b) => b.id),
      [second.backup.id, backup.id],
      'newest first',
    );
    const report = await client.request('strata/verify', { repository, id: second.backup.id, level: 'full' });
    assert.equal(report.outcome, 'passed');
    assert.equal(report.checks.length, 5);
    const verified = await client.request('strata/list', { repository, byTier: true });
    assert.equal(verified.backups[0]!.verification?.outcome, 'passed');
    assert.ok(verified.backups.every((b) => typeof b.tier === 'string' && (b.reasons?.length ?? 0) > 0));
    const target = path.join(dir.path, 'restored.db');
    const restored = await client.request('strata/restore', { repository, id: backup.id, to: target });
    assert.deepEqual(restored.chain, [backup.id]);
    assert.equal(sqliteDump(target), original);
    const tables = await client.request('strata/tables', { repository, id: second.backup.id });
    assert.ok(tables.tables.length > 0);
    assert.ok(client.changed.filter((r) => r === repository).length >= 3, 'init, backups and verify announce a change');
    assert.equal(client.passphraseRequests.length, 2, 'asked once to init and once to unlock; held for the session');
  });

  it('fails with the SDK\'s error code in data, outside the reserved JSON-RPC ranges', async () => {
    await initialized();
    const { backup } = await client.request('strata/backup', { repository, database: 'app', type: 'full' });
    await client.request('strata/backup', { repository, database: 'app', type: 'incremental' });
    const exists = await client.failure('strata/restore', { repository, id: backup.id, to: path.join(workspace, 'app.db') });
    assert.equal(exists.code, STRATA_ERROR);
    assert.ok(exists.code > 0, 'never in -32768..-32000');
    assert.equal(exists.data?.code, 'TARGET_EXISTS');
    const chain = await client.failure('strata/delete', { repository, ids: [backup.id], withDependents: false });
    assert.equal(chain.data?.code, 'CHAIN_BROKEN');
    const unknown = await client.failure('strata/backup', { repository, database: 'nope', type: 'full' });
    assert.equal(unknown.data?.code, 'USAGE');
    assert.equal(unknown.data?.exitCode, 2);
    // A second server (a new session) with the wrong passphrase: refused with exit code 4's meaning.
    const other = new Client();
    try {
      other.passphrase = 'not the passphrase';
      await other.start();
      await other.request('strata/workspace', { folders: [workspace], databases: [] });
      const wrong = await other.failure('strata/backup', { repository, database: 'app', type: 'full' });
      assert.equal(wrong.data?.code, 'PASSPHRASE_WRONG');
      assert.equal(wrong.data?.exitCode, 4);
      other.passphrase = null;
      const missing = await other.failure('strata/unlock', { repository, forget: true });
      assert.equal(missing.data?.code, 'PASSPHRASE_MISSING');
    } finally {
      await other.stop();
    }
    assert.equal((await client.request('strata/list', { repository })).backups.length, 2, 'nothing was lost');
    assert.ok(!client.log.some((line) => line.includes(TEST_PASSPHRASE)), 'the server log never holds the passphrase');
  });

  it('honours cancellation: a cancelled backup fails with ABORTED and leaves no restore point', async () => {
    buildRichDatabase(path.join(workspace, 'app.db.big'), { rows: 40_000 });
    copyFileSync(path.join(workspace, 'app.db.big'), path.join(workspace, 'app.db'));
    await initialized();
    const source = new CancellationTokenSource();
    const pending = client.request('strata/backup', { repository, database: 'app', type: 'full' }, source);
    setTimeout(() => source.cancel(), 30);
    await assert.rejects(pending, (err: unknown) => err instanceof ResponseError && (err.data as StrataErrorData).code === 'ABORTED');
    assert.equal((await client.request('strata/list', { repository })).backups.length, 0);
    const { backup } = await client.request('strata/backup', { repository, database: 'app', type: 'full' });
    assert.equal(backup.type, 'full', 'the next backup runs normally');
  });

  it('honours cancellation of a prune that waits for the repository lock: ABORTED, nothing removed', async () => {
    await initialized();
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db', retention: { keepLast: 1 } } } }));
    await client.request('strata/workspace', { folders: [workspace], databases: [] });
    for (let i = 0; i < 2; i++) {
      mutate(path.join(workspace, 'app.db'), i);
      await client.request('strata/backup', { repository, database: 'app', type: 'full' });
    }
    // A live process (this one) holds the lock; the server would wait 30 s for it, then fail with REPO_LOCKED.
    const lock = path.join(repository, 'locks/repository.lock');
    mkdirSync(path.dirname(lock), { recursive: true });
    writeFileSync(lock, JSON.stringify({ token: 'held', pid: process.pid, host: hostname(), operation: 'backup', acquiredAt: new Date().toISOString() }));
    const source = new CancellationTokenSource();
    const pending = client.request('strata/prune', { repository, dryRun: false }, source);
    setTimeout(() => source.cancel(), 200);
    await assert.rejects(pending, (err: unknown) => err instanceof ResponseError && (err.data as StrataErrorData).code === 'ABORTED' && /waiting for the repository lock/.test(err.message));
    rmSync(lock);
    assert.equal((await client.request('strata/list', { repository })).backups.length, 2, 'nothing was removed');
  });

  it('prunes by the config file\'s retention, with a dry run first', async () => {
    await initialized();
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db', retention: { keepLast: 1 } } } }));
    await client.request('strata/workspace', { folders: [workspace], databases: [] });
    for (let i = 0; i < 3; i++) {
      mutate(path.join(workspace, 'app.db'), i);
      await client.request('strata/backup', { repository, database: 'app', type: 'full' });
    }
    const plan = await client.request('strata/prune', { repository, dryRun: true });
    assert.equal(plan.keep.length, 1);
    assert.equal(plan.remove.length, 2);
    assert.ok(plan.remove.every((d) => d.reasons.includes('no rule keeps it')));
    assert.equal((await client.request('strata/list', { repository })).backups.length, 3, 'a dry run deletes nothing');
    await client.request('strata/prune', { repository, dryRun: false });
    assert.deepEqual(
      (await client.request('strata/list', { repository })).backups.map((b) => b.id),
      plan.keep.map((d) => d.id),
    );
  });

  it("backs up to the config's mirror too, with the mirror's own passphrase file, and reports a mirror it could not write", async () => {
    await initialized();
    const mirror = path.join(workspace, '.mirror');
    writeFileSync(path.join(workspace, 'mirror-passphrase'), 'the mirror passphrase\n');
    await initRepository(mirror, { encryption: 'compat', passphrase: new Passphrase('the mirror passphrase') });
    writeFileSync(
      path.join(workspace, 'strata.config.json'),
      JSON.stringify({ repository: './.backups', mirror: { repository: './.mirror', passphraseFile: './mirror-passphrase' }, databases: { app: { url: './app.db' } } }),
    );
    await client.request('strata/workspace', { folders: [workspace], databases: [] });
    const first = await client.request('strata/backup', { repository, database: 'app', type: 'full' });
    assert.deepEqual(first.mirror, { location: mirror, ok: true });
    const onMirror = await openRepository(mirror, { passphrase: new Passphrase('the mirror passphrase') });
    try {
      assert.deepEqual((await onMirror.list()).map((b) => b.id), [first.backup.id], 'the mirror holds the backup');
    } finally {
      await onMirror.close();
    }
    assert.deepEqual(client.passphraseRequests.map((r) => r.repository), [repository, repository], 'the mirror passphrase came from its file, not the client');

    // A mirror that cannot be written: the backup still succeeds and says so.
    rmSync(mirror, { recursive: true });
    writeFileSync(mirror, 'not a repository');
    mutate(path.join(workspace, 'app.db'), 1);
    await client.stop();
    client = new Client();
    await client.start();
    await client.request('strata/workspace', { folders: [workspace], databases: [] });
    const second = await client.request('strata/backup', { repository, database: 'app', type: 'incremental' });
    assert.equal(second.backup.parent, first.backup.id);
    assert.equal(second.mirror?.ok, false);
    assert.equal(second.mirror?.location, mirror);
    assert.match(second.mirror?.error ?? '', /\.mirror/, 'the error names the mirror');
    assert.deepEqual((await client.request('strata/list', { repository, database: 'app' })).backups.map((b) => b.id), [second.backup.id, first.backup.id]);
  });
});
