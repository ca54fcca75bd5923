import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import * as path from 'node:path';
import { LocalStorage, Passphrase, S3Storage, initRepository, isStrataError, openRepository, partSizeFor, resolveDatabase } from '@strata/sdk';
import type { ObjectInfo, ProgressEvent, PutOptions } from '@strata/sdk';
import { buildRichDatabase } from './helpers/databases.js';
import { sqliteDump, useTempDir } from './helpers/env.js';

describe('the SDK', () => {
  const dir = useTempDir();
  const passphrase = new Passphrase('sdk tests');

  async function setup() {
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    const repo = await openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 2000 });
    return { repo, source };
  }

  it('reports typed progress for backup and restore, ending at the total', async () => {
    const { repo, source } = await setup();
    const events: ProgressEvent[] = [];
    const record = await repo.backup(source, { database: 'app', onProgress: (e) => events.push(e) });
    const phases = [...new Set(events.map((e) => e.phase))];
    assert.deepEqual(phases, ['snapshot', 'write', 'commit']);
    const lastWrite = events.filter((e) => e.phase === 'write').at(-1)!;
    assert.equal(lastWrite.doneBytes, lastWrite.totalBytes);
    assert.ok(events.every((e) => e.operation === 'backup' && e.backupId === record.id));
    const restoreEvents: ProgressEvent[] = [];
    await repo.restore({ id: record.id }, { to: path.join(dir.path, 'out.db'), onProgress: (e) => restoreEvents.push(e) });
    assert.deepEqual([...new Set(restoreEvents.map((e) => e.phase))], ['read', 'commit']);
    assert.equal(restoreEvents.filter((e) => e.phase === 'read').at(-1)!.doneBytes, record.storedBytes);
  });

  it("says what a program must pass: the passphrase to openRepository, the name to backup (plain JavaScript gets no type error)", async () => {
    const { repo, source } = await setup();
    const locked = await openRepository(path.join(dir.path, 'repo'));
    await assert.rejects(locked.backup(source, { database: 'app' }), (err: unknown) => isStrataError(err, 'PASSPHRASE_MISSING') && /openRepository\(path, \{ passphrase: new Passphrase\(\.\.\.\) \}\)/.test(err.message));
    await assert.rejects(repo.backup(source, {} as never), (err: unknown) => isStrataError(err, 'USAGE') && /give the name to file the backup under, e\.g\. repo\.backup\('\.\/app\.db', \{ database: 'app' \}\)/.test(err.message));
    await assert.rejects((repo.backup as (...args: unknown[]) => Promise<unknown>)(), (err: unknown) => isStrataError(err, 'USAGE') && /give the database to back up/.test(err.message));
    assert.deepEqual(await repo.list(), [], 'nothing was backed up');
    // verify's level is recorded and shown by list: only quick and full are taken; restore needs a target.
    const record = await repo.backup(source, { database: 'app' });
    for (const options of [{ level: 'deep' }, {}, undefined]) {
      await assert.rejects((repo.verify as (...args: unknown[]) => Promise<unknown>)({ id: record.id }, options), (err: unknown) => isStrataError(err, 'USAGE') && /verify: the level must be 'quick' or 'full'/.test(err.message));
    }
    assert.equal((await repo.list())[0]!.verification, null, 'nothing was recorded');
    for (const options of [{}, undefined]) {
      await assert.rejects((repo.restore as (...args: unknown[]) => Promise<unknown>)({ id: record.id }, options), (err: unknown) => isStrataError(err, 'USAGE') && /restore: give where to restore to/.test(err.message));
    }
  });

  it("tells the storage a bound of an artifact's size, from which an object store's part size grows past S3's 10,000 parts", async () => {
    // 10,000 parts of 8 MiB are 78 GiB: a 1 TiB database's artifact needs parts of about 117 MiB.
    const MiB = 1024 * 1024;
    assert.equal(partSizeFor(8 * MiB, undefined), 8 * MiB);
    assert.equal(partSizeFor(8 * MiB, 60 * 1024 * MiB), 8 * MiB);
    assert.equal(partSizeFor(8 * MiB, 1024 * 1024 * MiB), 117 * MiB);
    assert.ok(partSizeFor(8 * MiB, 1024 * 1024 * MiB) * 10_000 > 1.05 * 1024 * 1024 * MiB, 'with room for framing');
    assert.equal(partSizeFor(8 * MiB, 1e15), 5 * 1024 * MiB, "at most S3's 5 GiB a part");
    const hints = new Map<string, number | undefined>();
    class Recording extends LocalStorage {
      override async put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: PutOptions): Promise<ObjectInfo> {
        hints.set(key, options?.sizeHint);
        return super.put(key, body, options);
      }
    }
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    const repo = await openRepository(new Recording(path.join(dir.path, 'repo')), { passphrase, tempDir: path.join(dir.path, 'tmp') });
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 2000 });
    const record = await repo.backup(source, { database: 'app' });
    assert.ok((hints.get(record.key) ?? 0) >= statSync(source).size, `the artifact's put was told at least the database's size (${hints.get(record.key)})`);
    assert.ok(record.storedBytes <= hints.get(record.key)!);
  });

  it('an S3 server that stops answering fails a request once its socket stayed silent, never holding the command for ever', async () => {
    // Accepts connections and says nothing, as a frozen server or a link that drops packets.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as AddressInfo).port;
    try {
      const storage = new S3Storage('s3://bucket/prefix', { endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', maxAttempts: 1, idleTimeoutMs: 500 });
      const started = Date.now();
      process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
      process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';
      await assert.rejects(storage.stat('repository.json'), (err: Error) => /timed out|inactivity|socket/i.test(err.message + String((err as { cause?: unknown }).cause)));
      assert.ok(Date.now() - started < 30_000, `failed after ${Date.now() - started} ms`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('stops a backup when its AbortSignal fires, leaving nothing behind and a FAILED journal entry', async () => {
    const { repo, source } = await setup();
    const controller = new AbortController();
    await assert.rejects(
      repo.backup(source, {
        database: 'app',
        signal: controller.signal,
        onProgress: (e) => {
          if (e.phase === 'write') controller.abort();
        },
      }),
      (err: unknown) => isStrataError(err, 'ABORTED'),
    );
    assert.deepEqual(await repo.list(), []);
    assert.deepEqual(readdirSync(path.join(dir.path, 'repo/.tmp')), []);
    const last = (await repo.journal.operations()).at(-1)!;
    assert.equal(last.status, 'FAILED');
    assert.equal(last.last.error!.code, 'ABORTED');
  });

  it('stops a restore when its AbortSignal fires, without creating the target', async () => {
    const { repo, source } = await setup();
    const record = await repo.backup(source, { database: 'app' });
    const controller = new AbortController();
    controller.abort();
    const target = path.join(dir.path, 'out.db');
    await assert.rejects(repo.restore({ id: record.id }, { to: target, signal: controller.signal }), (err: unknown) => isStrataError(err, 'ABORTED'));
    assert.deepEqual(readdirSync(dir.path).filter((f) => f.startsWith('out.db') || f.includes('strata-restore')), []);
    await repo.restore({ id: record.id }, { to: target });
    assert.equal(sqliteDump(target), sqliteDump(source));
  });

  it('restores by time with { asOf, database }', async () => {
    const { repo, source } = await setup();
    const first = await repo.backup(source, { database: 'app', time: new Date('2026-05-01T00:00:00Z') });
    await repo.backup(source, { database: 'app', type: 'incremental', time: new Date('2026-05-03T00:00:00Z') });
    const result = await repo.restore({ asOf: new Date('2026-05-02T00:00:00Z'), database: 'app' }, { to: path.join(dir.path, 'then.db') });
    assert.equal(result.backup.id, first.id);
  });

  it('repo.keys: a passphrase added through the SDK opens the repository, and a process that opened it with that passphrase notices when it is removed', async () => {
    const { repo, source } = await setup();
    const record = await repo.backup(source, { database: 'app' });
    const second = new Passphrase('a second passphrase');
    const added = await repo.keys.add({ passphrase: second, label: 'ci' });
    assert.deepEqual((await repo.keys.list()).keyFiles.map((f) => [f.label, f.opened]), [
      [null, true],
      ['ci', false],
    ]);
    const other = await openRepository(path.join(dir.path, 'repo'), { passphrase: second, tempDir: path.join(dir.path, 'tmp') });
    await other.restore({ id: record.id }, { to: path.join(dir.path, 'by-second.db') });
    assert.equal(sqliteDump(path.join(dir.path, 'by-second.db')), sqliteDump(source));
    await repo.keys.remove(added.id);
    await assert.rejects(other.restore({ id: record.id }, { to: path.join(dir.path, 'after-removal.db') }), (err: unknown) => isStrataError(err, 'PASSPHRASE_WRONG'));
  });
});

describe('the SDK guard()', () => {
  const dir = useTempDir();
  const passphrase = new Passphrase('guard tests');

  it('backs up, runs the change, and with rollbackOnError undoes a change that throws', async () => {
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    const repo = await openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
    const source = path.join(dir.path, 'app.db');
    buildRichDatabase(source, { rows: 40 });
    const before = sqliteDump(source);
    await assert.rejects(
      repo.guard(
        source,
        async () => {
          const { default: Database } = await import('better-sqlite3');
          const db = new Database(source);
          db.exec('DELETE FROM books');
          db.close();
          throw new Error('migration 42 failed');
        },
        { database: 'app', rollbackOnError: true },
      ),
      /migration 42 failed/,
    );
    assert.equal(sqliteDump(source), before);
    const ok = await repo.guard(source, async () => 'done', { database: 'app' });
    assert.deepEqual([ok.value, ok.failed, ok.rolledBack, ok.backup.label], ['done', false, false, 'pre-update']);
    assert.match(ok.undo, /^strata restore app_incremental_/);
    const runs = (await repo.journal.operations()).filter((o) => o.kind === 'run');
    assert.deepEqual(runs.map((o) => o.status), ['FAILED', 'COMPLETED']);
    await repo.close();
  });

});

describe('the SDK config helpers', () => {
  it('name a database given by URL after the database, not the URL\'s query', () => {
    assert.equal(resolveDatabase('postgres://app@db.internal:5432/shop?sslmode=require', {}).name, 'shop');
    assert.equal(resolveDatabase('mysql://root@127.0.0.1:3306/orders#x', {}).name, 'orders');
  });

});
