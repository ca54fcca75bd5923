import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Journal, LocalStorage, compactJournal, readCatalog, writeCatalog } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { useTempDir } from './helpers/env.js';

/** A catalog record with only what these tests look at filled in meaningfully. */
function record(id: string): BackupRecord {
  return {
    id,
    database: 'app',
    engine: 'sqlite',
    type: 'full',
    parent: null,
    base: null,
    createdAt: `2026-12-01T00:00:0${id.length % 10}.000Z`,
    label: null,
    tags: [],
    source: 'sqlite:/app.db',
    key: `backups/app/${id}.tar`,
    databaseBytes: 1,
    payloadBytes: 1,
    rawBytes: 1,
    storedBytes: 1,
    sha256: '0'.repeat(64),
    compression: { codec: 'none', level: 0 },
    encryption: { profile: 'none' },
    schemaFingerprint: 'x',
    tableCount: 1,
    rowCount: 1,
    verification: null,
  };
}

describe('the object layout: catalog generations and journal objects', () => {
  const dir = useTempDir();

  it('each catalog change is a new generation; the older ones go; a damaged newest one is rebuilt, never replaced by an older one', async () => {
    const storage = new LocalStorage(dir.path);
    await writeCatalog(storage, [record('a')]);
    await writeCatalog(storage, [record('a'), record('bb')]);
    assert.deepEqual(readdirSync(path.join(dir.path, 'catalog')), ['000000000002.json']);
    assert.deepEqual((await readCatalog(storage))!.map((r) => r.id), ['a', 'bb']);
    // A generation a kill left behind (its successor was written, it was not deleted yet) is
    // ignored, and the next write of a process that listed the folder since removes it (the
    // process above remembers the newest generation and lists no more).
    writeFileSync(path.join(dir.path, 'catalog/000000000001.json'), readFileSync(path.join(dir.path, 'catalog/000000000002.json')).toString().replace('"bb"', '"old"'));
    const nextProcess = new LocalStorage(dir.path);
    assert.deepEqual((await readCatalog(nextProcess))!.map((r) => r.id), ['a', 'bb']);
    await writeCatalog(nextProcess, [record('ccc')]);
    assert.deepEqual(readdirSync(path.join(dir.path, 'catalog')), ['000000000003.json']);
    writeFileSync(path.join(dir.path, 'catalog/000000000003.json'), '{ "format": "strata-catalog", "backups": [');
    writeFileSync(path.join(dir.path, 'catalog/000000000002.json'), JSON.stringify({ format: 'strata-catalog', version: 1, backups: [record('a')] }));
    assert.equal(await readCatalog(storage), undefined, 'a damaged newest generation means "rebuild", not the older generation');
    assert.equal(await readCatalog(new LocalStorage(dir.path)), undefined, 'the same for a process that lists the folder');
  });

  it('a process that committed the newest generation reads and writes the next ones without listing the catalog folder', async () => {
    const inner = new LocalStorage(dir.path);
    const listed: string[] = [];
    // Every call goes to the folder; lists are counted (on an object store a LIST is the dearest request).
    const storage = new Proxy(inner, {
      get(target, property, receiver) {
        if (property === 'list') {
          return (prefix: string, ...rest: unknown[]) => {
            listed.push(prefix);
            return (target.list as (...args: unknown[]) => unknown)(prefix, ...rest);
          };
        }
        const value = Reflect.get(target, property, receiver) as unknown;
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    await writeCatalog(storage, [record('a')]);
    const first = listed.length;
    assert.ok(first > 0, 'the first write lists the folder: it knows no generation yet');
    const ids = ['a'];
    for (const id of ['bb', 'ccc', 'dddd']) {
      ids.push(id);
      assert.deepEqual((await readCatalog(storage))!.map((r) => r.id), ids.slice(0, -1));
      await writeCatalog(storage, ids.map(record));
    }
    assert.deepEqual(listed.slice(first), [], 'no list after the first write');
    assert.deepEqual(readdirSync(path.join(dir.path, 'catalog')), ['000000000004.json']);
    // Another process wrote meanwhile: the next read finds its generation, not the remembered one.
    await writeCatalog(new LocalStorage(dir.path), ['a', 'eeeee'].map(record));
    assert.deepEqual((await readCatalog(storage))!.map((r) => r.id), ['a', 'eeeee']);
    // And one that wrote twice (the remembered generation is gone): the same.
    const other = new LocalStorage(dir.path);
    await writeCatalog(other, ['a', 'f'].map(record));
    await writeCatalog(other, ['a', 'gg'].map(record));
    assert.deepEqual((await readCatalog(storage))!.map((r) => r.id), ['a', 'gg']);
    await writeCatalog(storage, ['a', 'gg', 'hhh'].map(record));
    assert.deepEqual(readdirSync(path.join(dir.path, 'catalog')), ['000000000008.json']);
    assert.deepEqual((await readCatalog(new LocalStorage(dir.path)))!.map((r) => r.id), ['a', 'gg', 'hhh']);
  });

  it('the journal folds its records into a segment; a compaction killed before it deleted them shows each record once', async () => {
    const storage = new LocalStorage(dir.path);
    const journal = new Journal(storage);
    for (let i = 0; i < 3; i++) await (await journal.begin('verify', { backupId: `b${i}` })).complete();
    // An operation that notes what it is about to do writes RUNNING twice: both are records.
    const noted = await journal.begin('prune');
    await new Promise((resolve) => setTimeout(resolve, 5));
    await noted.note({ details: { logRemoved: [{ database: 'cluster', files: 2, first: 'A', last: 'B' }] } });
    await noted.complete();
    const before = await journal.records();
    assert.equal(before.length, 9);
    assert.deepEqual(before.filter((r) => r.op === noted.op).map((r) => [r.status, r.details?.['logRemoved'] !== undefined]), [['RUNNING', false], ['RUNNING', true], ['COMPLETED', false]]);
    assert.equal(readdirSync(path.join(dir.path, 'journal')).length, 9, 'one object per record');
    const singles = readdirSync(path.join(dir.path, 'journal')).map((f) => [f, readFileSync(path.join(dir.path, 'journal', f))] as const);
    assert.equal(await compactJournal(storage, { minimum: 10 }), 0, 'too few to fold');
    assert.equal(await compactJournal(storage, { minimum: 9 }), 9);
    const after = readdirSync(path.join(dir.path, 'journal'));
    assert.equal(after.length, 1);
    assert.match(after[0]!, /^\d{8}T\d{9}Z-[0-9a-f]{10}\.ndjson$/);
    assert.deepEqual(await journal.records(), before);
    // As if the compaction had been killed before its deletions: the records are there twice.
    for (const [name, bytes] of singles) writeFileSync(path.join(dir.path, 'journal', name), bytes);
    assert.deepEqual(await journal.records(), before);
    assert.deepEqual((await journal.operations()).map((o) => [o.kind, o.status, o.last.backupId]), [...[0, 1, 2].map((i) => ['verify', 'COMPLETED', `b${i}`]), ['prune', 'COMPLETED', undefined]]);
  });
});
