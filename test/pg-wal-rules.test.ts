import assert from 'node:assert/strict';
import { PostgresPhysicalEngine, basesOnTimeline, planLogRetention, planWal, recoverySettings } from '@strata/sdk';
import type { BackupRecord, LogFile, LogRange, RetentionDecision } from '@strata/sdk';

/**
 * Which archived WAL files a recovery from a base backup reads, and which ones prune may remove:
 * by names alone (and the .history files' text), as PostgreSQL names and follows them. The whole
 * path with a real cluster is in pg-pitr.test.ts; these are the timeline cases a single cluster
 * does not make, and the retention rules with several base backups.
 */

const rules = new PostgresPhysicalEngine().logArchive;
const MB16 = 16 * 1024 * 1024;

/** A segment's LSN: `0/N000000` for segment N (16 MiB segments). */
const lsn = (segno: number, offset = 0x28): string => `0/${(segno * MB16 + offset).toString(16).toUpperCase()}`;
const seg = (timeline: number, segno: number): string => `${timeline.toString(16).toUpperCase().padStart(8, '0')}00000000${segno.toString(16).toUpperCase().padStart(8, '0')}`;

function range(startSeg: number, endSeg: number, timeline = 1, endedAt = `2026-12-02T10:0${startSeg % 10}:00.000Z`): LogRange {
  const at = (s: number) => ({ timeline, lsn: lsn(s), wal: seg(timeline, s), segmentBytes: MB16 });
  return { start: at(startSeg), end: at(endSeg), endedAt };
}

/** Archived files by name, stored a second apart in name order; `.history` files get `text`. */
function archive(names: string[], histories: Record<string, string> = {}): { files: LogFile[]; read: (f: LogFile) => Promise<Uint8Array> } {
  const files = names.map((name, i) => ({ name, sha256: '0'.repeat(64), key: `backups/c/log/${name}_x_plain.zst`, storedBytes: 100, storedAt: new Date(Date.UTC(2026, 11, 2, 11, 0, i)).toISOString() }));
  return { files, read: async (f) => Buffer.from(histories[f.name] ?? '') };
}

describe('PostgreSQL WAL archive rules', function () {
  it('reads every segment from the base start to the newest archived one, and names the missing ones', async function () {
    const { files, read } = archive([seg(1, 1), seg(1, 2), seg(1, 3), seg(1, 5), seg(1, 6), `${seg(1, 2)}.00000028.backup`]);
    const walk = await rules.walk(range(2, 3), files, read);
    assert.deepEqual(walk.needed.map((f) => f.name), [seg(1, 2), seg(1, 3), seg(1, 5), seg(1, 6)]);
    assert.deepEqual(walk.missing, [seg(1, 4)]);
    assert.deepEqual(walk.problems, []);
  });

  it('follows a timeline switch by its .history file: the switch segment and those after it come from the new timeline', async function () {
    const history = '1\t0/4000100\tno recovery target specified\n';
    const { files, read } = archive([seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), '00000002.history', seg(2, 4), seg(2, 5), seg(2, 6)], { '00000002.history': history });
    const walk = await rules.walk(range(2, 2), files, read);
    assert.deepEqual(walk.needed.map((f) => f.name), ['00000002.history', seg(1, 2), seg(1, 3), seg(2, 4), seg(2, 5), seg(2, 6)]);
    assert.deepEqual(walk.missing, []);
    // A lost segment of the new timeline is a gap, even where the old timeline has one of that number.
    const gap = archive([seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), '00000002.history', seg(2, 4), seg(2, 6)], { '00000002.history': history });
    assert.deepEqual((await rules.walk(range(2, 2), gap.files, gap.read)).missing, [seg(2, 5)]);
  });

  it('stays on the old timeline while the new one has only its history, and when the new one forked before the base began', async function () {
    const promoted = archive([seg(1, 2), seg(1, 3), '00000002.history'], { '00000002.history': '1\t0/3000100\tpromoted\n' });
    assert.deepEqual((await rules.walk(range(2, 2), promoted.files, promoted.read)).needed.map((f) => f.name), [seg(1, 2), seg(1, 3)]);
    const earlier = archive([seg(1, 5), seg(1, 6), '00000002.history', seg(2, 3), seg(2, 4), seg(2, 7)], { '00000002.history': '1\t0/3000100\tpromoted\n' });
    const walk = await rules.walk(range(5, 5), earlier.files, earlier.read);
    assert.deepEqual(walk.needed.map((f) => f.name), [seg(1, 5), seg(1, 6)]);
    assert.deepEqual(walk.missing, []);
  });

  it('plans a recovery along the timeline asked for: the newest by default, the base\'s own, or one by number', async function () {
    // A failover at 0/4000100: timeline 2 from segment 4 on, the old server's timeline 1 going on to 5.
    const history = '1\t0/4000100\tno recovery target specified\n';
    const { files, read } = archive([seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), '00000002.history', seg(2, 4), seg(2, 5), seg(2, 6)], { '00000002.history': history });
    const base = { id: 'b2', database: 'c', engine: 'postgres-physical', logRange: range(2, 2) } as unknown as BackupRecord;
    const latest = await planWal(base, { kind: 'latest' }, files, read);
    assert.deepEqual([latest.timeline, latest.needed.map((f) => f.name)], [2, ['00000002.history', seg(1, 2), seg(1, 3), seg(2, 4), seg(2, 5), seg(2, 6)]]);
    const lsnOnTwo = await planWal(base, { kind: 'lsn', lsn: lsn(5, 0x100) }, files, read);
    // The segment after the target's apart: the server usually reads the record after the target
    // to stop, but the target may lie before it, so it is spooled only when it reads cleanly.
    assert.deepEqual(lsnOnTwo.needed.map((f) => f.name), ['00000002.history', seg(1, 2), seg(1, 3), seg(2, 4), seg(2, 5)]);
    assert.equal(lsnOnTwo.afterTarget?.name, seg(2, 6));
    assert.deepEqual(lsnOnTwo.readAhead, [seg(2, 7), seg(2, 8)]);
    // Not archived yet: nothing after the target, and nothing missing.
    const atTheEnd = await planWal(base, { kind: 'lsn', lsn: lsn(6, 0x100) }, files, read);
    assert.deepEqual([atTheEnd.afterTarget, atTheEnd.missing, atTheEnd.readAhead], [undefined, [], [seg(2, 7), seg(2, 8)]]);
    for (const choice of ['current', 1] as const) {
      const old = await planWal(base, { kind: 'latest' }, files, read, choice);
      assert.deepEqual([old.timeline, old.needed.map((f) => f.name)], [1, [seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5)]], `--timeline ${choice}`);
    }
    await assert.rejects(planWal(base, { kind: 'latest' }, files, read, 3), /holds no 00000003\.history: timeline 3 was never archived here \(timelines in the archive: 1, 2\)/);
    // A base taken on the old server after the switch is not on timeline 2's history.
    const late = { ...base, logRange: range(5, 5) } as unknown as BackupRecord;
    await assert.rejects(planWal(late, { kind: 'latest' }, files, read, 2), /timeline 2 does not continue the base backup's timeline 1/);
    assert.equal((await planWal(late, { kind: 'latest' }, files, read)).timeline, 1);
    assert.equal(recoverySettings({ kind: 'latest' }, 'true', 'pause', 2)['recovery_target_timeline'], '2');
    // Choosing the base: the old server's later base is not on timeline 2's history.
    const ids = async (choice: 'latest' | 'current' | number): Promise<string[]> => (await basesOnTimeline([base, { ...late, id: 'b5' }], files, read, choice)).map((b) => b.id);
    assert.deepEqual(await ids('latest'), ['b2']);
    assert.deepEqual(await ids(2), ['b2']);
    assert.deepEqual(await ids(1), ['b2', 'b5']);
    assert.deepEqual(await ids('current'), ['b2', 'b5']);
  });

  it('reports segments of a newer timeline whose .history file is missing', async function () {
    const { files, read } = archive([seg(1, 2), seg(1, 3), seg(2, 3), seg(2, 4)]);
    const walk = await rules.walk(range(2, 2), files, read);
    assert.equal(walk.problems.length, 1);
    assert.match(walk.problems[0]!, /timeline 2 has archived segments but no 00000002\.history/);
  });

  it('places segments, .backup and .partial files along the log, never a history file', function () {
    const r = range(2, 3);
    assert.equal(rules.position(seg(1, 7), r), 7n);
    assert.equal(rules.position(`${seg(1, 7)}.00000028.backup`, r), 7n);
    assert.equal(rules.position(`${seg(1, 7)}.partial`, r), 7n);
    assert.equal(rules.position('00000002.history', r), undefined);
    assert.deepEqual(rules.span(r), { first: 2n, last: 3n });
  });
});

describe('retention of the archived WAL', function () {
  const base = (id: string, startSeg: number, endSeg: number): { record: BackupRecord; rules: typeof rules } => ({
    record: { id, database: 'c', engine: 'postgres-physical', logRange: range(startSeg, endSeg, 1, `2026-12-02T10:${String(startSeg).padStart(2, '0')}:00.000Z`) } as unknown as BackupRecord,
    rules,
  });
  const kept = (id: string, ...reasons: string[]): RetentionDecision => ({ id, database: 'c', createdAt: '', type: 'full', reasons });
  const names = [...Array.from({ length: 12 }, (_, i) => seg(1, i + 1)), `${seg(1, 2)}.00000028.backup`, `${seg(1, 8)}.00000028.backup`, '00000002.history'];
  const files = archive(names).files;
  const bases = [base('b2', 2, 3), base('b8', 8, 9)];

  it('removes the WAL before the oldest kept base backup, and keeps everything when no base is kept', function () {
    const onlyNewest = planLogRetention('c', bases, [kept('b8', 'newest good backup (always kept)')], files, undefined);
    assert.deepEqual(onlyNewest.remove.map((f) => f.name).sort(), [seg(1, 1), seg(1, 2), `${seg(1, 2)}.00000028.backup`, seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 6), seg(1, 7)].sort());
    assert.match(onlyNewest.decision!.reason, /older than the start of b8, the oldest kept base backup/);
    const both = planLogRetention('c', bases, [kept('b8', 'last 1 of 2'), kept('b2', 'last 2 of 2')], files, undefined);
    assert.deepEqual(both.remove.map((f) => f.name), [seg(1, 1)]);
    assert.deepEqual(planLogRetention('c', bases, [], files, undefined).remove, []);
  });

  it('with a point-in-time window, an older base kept by the tiers keeps only its own range', function () {
    const plan = planLogRetention('c', bases, [kept('b8', 'newest good backup (always kept)', 'point-in-time window 1h (segments from a to b)'), kept('b2', 'monthly 1 of 12 (2026-12)')], files, '1h');
    assert.deepEqual(plan.remove.map((f) => f.name).sort(), [seg(1, 1), seg(1, 4), seg(1, 5), seg(1, 6), seg(1, 7)].sort());
    // Both in the window: the log after the first of them stays whole.
    const window = planLogRetention('c', bases, [kept('b8', 'point-in-time window 1h'), kept('b2', 'point-in-time window 1h')], files, '1h');
    assert.deepEqual(window.remove.map((f) => f.name), [seg(1, 1)]);
  });
});
