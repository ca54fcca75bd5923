import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { LocalStorage, Passphrase, PostgresPhysicalEngine, initRepository, isStrataError, openRepository, planWal } from '@strata/sdk';
import type { Abortable, BackupRecord, ObjectInfo, Repository } from '@strata/sdk';
import { TEST_PASSPHRASE, useTempDir } from './helpers/env.js';

/**
 * Partials in the log archive (what `wal-receive` ships of the segment still being written), on a
 * real encrypted repository: replaced by each newer one, used only while the complete file is
 * absent, standing for their segment in a restore's plan and verify's walk, removed once the
 * complete one is archived; pushes of complete files keep their rules (idempotent, no conflict).
 */

const SEG = '000000010000000000000003';
const NEXT = '000000010000000000000004';

/** A zero-padded segment holding `filled` bytes of `fill`. */
function segment(filled: number, fill = 7, size = 64 * 1024): Uint8Array {
  const bytes = new Uint8Array(size);
  bytes.fill(fill, 0, filled);
  return bytes;
}

describe('log archive partials', function () {
  this.timeout(60_000);
  const dir = useTempDir();
  let repo: Repository;
  const DB = 'cluster';
  const objects = (): string[] => readdirSync(path.join(dir.path, 'repo', 'backups', DB, 'log')).sort();

  beforeEach(async function () {
    const passphrase = new Passphrase(TEST_PASSPHRASE);
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    repo = await openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
  });

  it('a newer partial replaces the older one; fetch returns the newest while the complete file is absent', async function () {
    assert.equal(await repo.logArchive.fetch(DB, SEG), undefined);
    const first = await repo.logArchive.pushPartial(DB, SEG, segment(100), 100);
    assert.equal(first.status, 'stored');
    assert.deepEqual(await repo.logArchive.fetch(DB, SEG), Buffer.from(segment(100)));
    // The same bytes again: nothing written.
    assert.equal((await repo.logArchive.pushPartial(DB, SEG, segment(100), 100)).status, 'present');
    await repo.logArchive.pushPartial(DB, SEG, segment(5000), 5000);
    assert.equal(objects().length, 1, `one partial remains: ${objects().join(', ')}`);
    assert.match(objects()[0]!, new RegExp(`^${SEG}\\.received-00001388_[0-9a-f]{64}_`));
    assert.deepEqual(await repo.logArchive.fetch(DB, SEG), Buffer.from(segment(5000)));
    const listed = await repo.logArchive.list(DB);
    assert.deepEqual(listed.map((f) => [f.name, f.partial?.receivedBytes]), [[SEG, 5000]]);
  });

  it('the complete file wins over partials, which are then dropped; a partial after it writes nothing', async function () {
    await repo.logArchive.pushPartial(DB, SEG, segment(100), 100);
    const complete = segment(64 * 1024, 9);
    assert.equal((await repo.logArchive.push(DB, SEG, complete)).status, 'stored');
    assert.deepEqual(await repo.logArchive.fetch(DB, SEG), Buffer.from(complete), 'fetch prefers the complete file');
    const listed = await repo.logArchive.list(DB);
    assert.deepEqual(new Map(listed.map((f) => [f.name, f])).get(SEG)!.partial, undefined, 'by name, the complete file stands last');
    assert.equal(await repo.logArchive.dropPartials(DB, SEG), 1);
    assert.equal(objects().length, 1);
    assert.equal((await repo.logArchive.pushPartial(DB, SEG, segment(200), 200)).status, 'present');
    assert.equal(objects().length, 1);
    // A partial never stands in the way of the complete file, nor makes a conflict.
    assert.equal((await repo.logArchive.push(DB, SEG, complete)).status, 'present');
    await assert.rejects(repo.logArchive.push(DB, SEG, segment(64 * 1024, 8)), (err: Error & { code?: string }) => err.code === 'LOG_CONFLICT');
  });

  it('a partial stands for its segment in a restore plan and in the walk verify makes', async function () {
    await repo.logArchive.push(DB, SEG, segment(64 * 1024));
    await repo.logArchive.pushPartial(DB, NEXT, segment(300), 300);
    const files = await repo.logArchive.list(DB);
    const base = {
      id: 'cluster_full_x',
      logRange: {
        start: { timeline: 1, lsn: '0/3000028', wal: SEG, segmentBytes: 16 * 1024 * 1024 },
        end: { timeline: 1, lsn: '0/3000100', wal: SEG, segmentBytes: 16 * 1024 * 1024 },
        endedAt: '2026-12-02T10:00:00.000Z',
      },
    } as unknown as BackupRecord;
    const plan = await planWal(base, { kind: 'latest' }, files, (f) => repo.logArchive.read(f));
    assert.deepEqual(plan.missing, []);
    assert.deepEqual(plan.needed.map((f) => [f.name, f.partial?.receivedBytes]), [[SEG, undefined], [NEXT, 300]]);
    const walk = await new PostgresPhysicalEngine().logArchive.walk(base.logRange!, files, (f) => repo.logArchive.read(f));
    assert.deepEqual(walk.missing, []);
    assert.deepEqual(walk.needed.map((f) => f.name), [SEG, NEXT]);
    // Read through its own key, it gives the zero-padded segment back.
    assert.deepEqual(await repo.logArchive.read(plan.needed[1]!), Buffer.from(segment(300)));
  });
  it('a file altered in its last bytes (OpenPGP\'s integrity check, the data intact) is damaged, never a wrong passphrase', async function () {
    const complete = segment(64 * 1024, 5);
    assert.equal((await repo.logArchive.push(DB, SEG, complete)).status, 'stored');
    const [name] = objects();
    assert.match(name!, /_[0-9a-f]+\.zst\.gpg$/, 'the file names its data key');
    const file = path.join(dir.path, 'repo', 'backups', DB, 'log', name!);
    const bytes = readFileSync(file);
    // The last byte belongs to the modification detection code: zstd's frame before it is untouched.
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0x01;
    writeFileSync(file, bytes);
    const [listed] = await repo.logArchive.list(DB);
    await assert.rejects(repo.logArchive.read(listed!), (err: unknown) => isStrataError(err, 'ARTIFACT_CORRUPT') && /was altered: its data key opened/.test((err as Error).message));
    await assert.rejects(repo.logArchive.fetch(DB, SEG), (err: unknown) => isStrataError(err, 'ARTIFACT_CORRUPT'));
  });
});

/**
 * Two pushes of different files under one name at the same moment (a promoted copy and the old
 * server archiving): each found none before storing. The second push's store is made to happen
 * in the middle of the first one's, between its check and its write, through a storage that runs
 * the rival push just before writing the first file's object.
 */
describe('log archive: two different files pushed under one name at once', function () {
  this.timeout(60_000);
  const dir = useTempDir();
  const DB = 'cluster';
  const root = (): string => path.join(dir.path, 'repo');
  const objects = (): string[] => readdirSync(path.join(root(), 'backups', DB, 'log')).sort();

  /** Local storage that, once armed, runs `rival` before writing the first object of `name`. */
  class RacingStorage extends LocalStorage {
    rival: (() => Promise<unknown>) | undefined;
    override async put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: Abortable): Promise<ObjectInfo> {
      const rival = this.rival;
      if (rival && key.includes(`/log/${SEG}_`)) {
        this.rival = undefined;
        await rival();
      }
      return super.put(key, body, options);
    }
  }

  it('the push that finds the other file after storing its own removes it and fails with LOG_CONFLICT; fetch gives the one kept', async function () {
    const passphrase = new Passphrase(TEST_PASSPHRASE);
    await initRepository(root(), { encryption: 'compat', passphrase });
    const racing = new RacingStorage(root());
    const repo = await openRepository(racing, { passphrase, tempDir: path.join(dir.path, 'tmp') });
    const other = await openRepository(root(), { passphrase, tempDir: path.join(dir.path, 'tmp2') });
    let rivalResult: unknown;
    racing.rival = async () => (rivalResult = await other.logArchive.push(DB, SEG, segment(64 * 1024, 1)).catch((err: unknown) => err));
    const pushed = await repo.logArchive.push(DB, SEG, segment(64 * 1024, 7)).catch((err: unknown) => err);
    assert.equal((rivalResult as { status?: string }).status, 'stored', 'the rival stored first and, looking before this push stored, found no other');
    assert.ok(isStrataError(pushed, 'LOG_CONFLICT'), String(pushed));
    assert.match((pushed as Error).message, new RegExp(`another push stored a different ${SEG} for ${DB} at the same moment .*this one was removed again`));
    assert.equal(objects().length, 1, objects().join(', '));
    assert.deepEqual(await repo.logArchive.fetch(DB, SEG), Buffer.from(segment(64 * 1024, 1)));
    // The server's retry of the refused file is refused as any different file under a held name.
    await assert.rejects(repo.logArchive.push(DB, SEG, segment(64 * 1024, 7)), (err: unknown) => isStrataError(err, 'LOG_CONFLICT') && /already holds a different/.test((err as Error).message));
  });
});
