import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { initRepository, openRepository, throttleProgress } from '@strata/sdk';
import type { ProgressEvent } from '@strata/sdk';
import { ProgressBar } from '@strata/cli/terminal';
import { useTempDir } from './helpers/env.js';

/** An event as a listener saw it, with when (the SDK's clock: Date.now). */
type Seen = ProgressEvent & { at: number };

function byPhase(events: readonly Seen[]): Map<string, Seen[]> {
  const phases = new Map<string, Seen[]>();
  for (const e of events) {
    const key = `${e.operation} ${e.phase} ${e.backupId}`;
    phases.set(key, [...(phases.get(key) ?? []), e]);
  }
  return phases;
}

/**
 * The bound the SDK promises: the first event of a phase, then at most one per 100 ms, then the
 * last. So n events spanning `span` ms number at most 2 + span / 100.
 */
function assertBounded(events: readonly Seen[]): void {
  for (const [phase, list] of byPhase(events)) {
    const span = list.at(-1)!.at - list[0]!.at;
    assert.ok(list.length <= 2 + Math.floor(span / 100), `${phase}: ${list.length} events in ${span} ms`);
  }
}

describe('progress tells the truth, at a bounded rate', () => {
  const dir = useTempDir();

  /** A database of about 4 MB (no WAL: the file is the whole database). */
  function database(): string {
    const file = path.join(dir.path, 'app.db');
    const db = new Database(file);
    db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)');
    const insert = db.prepare('INSERT INTO blobs (data) VALUES (randomblob(1000))');
    db.transaction(() => {
      for (let i = 0; i < 4000; i++) insert.run();
    })();
    db.close();
    return file;
  }

  it('a backup, a restore and a verify of a 4 MB database: few events, each phase ending at its true totals, in bytes', async () => {
    const source = database();
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'none' });
    const repo = await openRepository(path.join(dir.path, 'repo'), { tempDir: path.join(dir.path, 'tmp') });
    try {
      const events: Seen[] = [];
      const record = await repo.backup(source, { database: 'app', onProgress: (e) => events.push({ ...e, at: Date.now() }) });
      assert.deepEqual([...new Set(events.map((e) => e.phase))], ['snapshot', 'write', 'commit']);
      assertBounded(events);
      // Without a throttle the archive writer alone reports every 4 KiB chunk: about a thousand here.
      assert.ok(events.length < 100, `${events.length} events`);
      const fileSize = statSync(source).size;
      assert.ok(fileSize > 4_000_000);
      const snapshot = events.filter((e) => e.phase === 'snapshot');
      // The snapshot counts bytes of the database (SQLite's pages times the page size), not pages.
      assert.equal(snapshot.at(-1)!.doneBytes, fileSize);
      assert.equal(snapshot.at(-1)!.totalBytes, fileSize);
      assert.ok(snapshot.every((e) => e.totalBytes === fileSize && e.doneBytes % 4096 === 0));
      assert.equal(record.databaseBytes, fileSize);
      const write = events.filter((e) => e.phase === 'write');
      assert.equal(write.at(-1)!.doneBytes, write.at(-1)!.totalBytes);
      assert.equal(write.at(-1)!.totalBytes, fileSize);
      assert.deepEqual(
        events.filter((e) => e.phase === 'commit').map((e) => e.doneBytes),
        [fileSize],
      );

      const restored: Seen[] = [];
      await repo.restore({ id: record.id }, { to: path.join(dir.path, 'out.db'), onProgress: (e) => restored.push({ ...e, at: Date.now() }) });
      assertBounded(restored);
      assert.equal(restored.filter((e) => e.phase === 'read').at(-1)!.doneBytes, record.storedBytes);
      assert.equal(restored.at(-1)!.phase, 'commit');

      // A quick verify ends inside its read phase: the last event still has the totals.
      const verified: Seen[] = [];
      await repo.verify({ id: record.id }, { level: 'quick', onProgress: (e) => verified.push({ ...e, at: Date.now() }) });
      assertBounded(verified);
      const read = verified.filter((e) => e.operation === 'verify' && e.phase === 'read');
      assert.ok(read.length > 0);
      assert.equal(read.at(-1)!.doneBytes, record.storedBytes);
    } finally {
      await repo.close();
    }
  });

  it('throttleProgress: the first and last event of each phase, one per interval between, repeats dropped', () => {
    let clock = 0;
    const seen: ProgressEvent[] = [];
    const progress = throttleProgress((e) => seen.push(e), 100, () => clock);
    const event = (phase: ProgressEvent['phase'], doneBytes: number, totalBytes = 10_000): ProgressEvent => ({ operation: 'backup', phase, doneBytes, totalBytes, backupId: 'b' });
    for (let done = 0; done < 10_000; done += 10) {
      progress.emit(event('write', done));
      clock += 1;
    }
    // 1000 events over 1000 ms: the first, then one per 100 ms.
    assert.deepEqual(seen.map((e) => e.doneBytes), [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]);
    progress.emit(event('write', 9_995));
    progress.emit(event('commit', 10_000));
    assert.deepEqual(seen.slice(-2).map((e) => [e.phase, e.doneBytes]), [['write', 9_995], ['commit', 10_000]], 'the held-back last write comes before the commit');
    seen.length = 0;
    progress.emit(event('read', 0));
    progress.emit(event('read', 5));
    progress.emit(event('read', 10_000));
    progress.emit(event('read', 10_000));
    progress.end();
    assert.deepEqual(seen.map((e) => e.doneBytes), [0, 10_000], 'the total is delivered at once, the repeat and the earlier held event dropped');
    progress.emit(event('read', 10_000));
    progress.end();
    assert.equal(seen.length, 2);
  });

  it('the progress bar shows a rate only for a phase that moves data, and only once it means something', () => {
    const bar = new ProgressBar('backup app', false);
    const at = (phase: ProgressEvent['phase'], doneBytes: number, now: number): string =>
      bar.render({ operation: 'backup', phase, doneBytes, totalBytes: 8_000_000, backupId: 'b' }, now);
    assert.doesNotMatch(at('snapshot', 4096, 1_000), /\/s/, 'no rate from the first event of a phase');
    assert.match(at('snapshot', 8_000_000, 3_000), /8\.00 MB \/ 8\.00 MB 4\.00 MB\/s$/);
    assert.match(at('write', 2_000_000, 4_000), /write\s+\[#+-+\]\s+25% 2\.00 MB \/ 8\.00 MB$/);
    assert.match(at('write', 4_000_000, 6_000), /4\.00 MB \/ 8\.00 MB 2\.00 MB\/s ETA 2s$/);
    const commit = at('commit', 8_000_000, 6_001);
    assert.equal(commit, 'backup app putting it in place');
  });
});
