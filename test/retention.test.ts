import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_RETENTION, continuityWindows, planRetention, resolveDatabase, retentionFor, schedulesFor, tierOf } from '@strata/sdk';
import type { BackupRecord, BackupType, ContinuityWindow, RetentionPlan, RetentionPolicy, SegmentRecord, StrataConfig } from '@strata/sdk';
import { ROOT } from './helpers/env.js';

/** Builds catalogs for retention scenarios: `history('app').every('1d', 365, from)` and so on. */
class History {
  readonly backups: BackupRecord[] = [];
  #lastFull: string | null = null;
  #last: string | null = null;

  constructor(readonly database = 'app') {}

  add(at: string, type: BackupType = 'full', extra: Partial<BackupRecord> = {}): this {
    const stamp = at.replace(/[-:]/g, '').replace('T', '_').slice(0, 15);
    const id = `${this.database}_${type}_${stamp}`;
    const parent = type === 'incremental' ? this.#last : type === 'differential' ? this.#lastFull : null;
    this.backups.push({
      id,
      database: this.database,
      engine: 'sqlite',
      type,
      parent,
      base: parent ? (this.#lastFull as string) : null,
      createdAt: new Date(at).toISOString(),
      label: null,
      tags: [],
      source: 'sqlite:/app.db',
      key: `backups/${this.database}/${id}.tar`,
      databaseBytes: 1,
      payloadBytes: 1,
      rawBytes: 1,
      storedBytes: 1,
      sha256: '0',
      compression: { codec: 'none', level: 0 },
      encryption: { profile: 'none' },
      schemaFingerprint: '0',
      tableCount: 1,
      rowCount: 1,
      verification: null,
      ...extra,
    });
    if (type === 'full') this.#lastFull = id;
    if (type !== 'schema-only') this.#last = id;
    return this;
  }

  /** One backup a day at 02:00 UTC for `days` days from `from`; `typeOf(i)` picks each type. */
  daily(from: string, days: number, typeOf: (i: number) => BackupType = () => 'full'): this {
    const start = Date.parse(`${from}T02:00:00Z`);
    for (let i = 0; i < days; i++) this.add(new Date(start + i * 86_400_000).toISOString(), typeOf(i));
    return this;
  }
}

/** Compares a plan with fixtures/retention/<name>.json; UPDATE_GOLDEN=1 rewrites the file. */
function golden(name: string, plan: RetentionPlan): void {
  const file = path.join(ROOT, 'fixtures/retention', `${name}.json`);
  const actual = {
    keep: plan.keep.map((d) => ({ id: d.id, reasons: d.reasons })),
    remove: plan.remove.map((d) => d.id),
  };
  if (process.env['UPDATE_GOLDEN'] || !existsSync(file)) {
    if (process.env['CI'] && !existsSync(file)) throw new Error(`golden file ${file} is missing; run the tests with UPDATE_GOLDEN=1 and commit it`);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify(actual, null, 1) + '\n');
  }
  assert.deepEqual(actual, JSON.parse(readFileSync(file, 'utf8')));
}

const ids = (plan: RetentionPlan, which: 'keep' | 'remove'): string[] => plan[which].map((d) => d.id);

describe('retention planning', () => {
  describe('daily, weekly and monthly tiers over a year of daily backups', () => {
    const year = new History().daily('2025-11-01', 365);
    const plan = planRetention(year.backups, DEFAULT_RETENTION);

    it('matches the golden plan', () => golden('year-daily-default', plan));

    it('keeps the newest of each of the last 7 days, 8 weeks and 12 months that hold a backup', () => {
      const kept = ids(plan, 'keep');
      assert.equal(kept.length, new Set(kept).size);
      // 7 daily + the weekly and monthly ones that are not already among them.
      assert.ok(kept.length >= 12 && kept.length <= 7 + 8 + 12, `kept ${kept.length}`);
      assert.deepEqual(kept.slice(0, 7), year.backups.slice(-7).map((b) => b.id).reverse());
      assert.equal(plan.keep.length + plan.remove.length, 365);
    });
  });

  describe('a machine that was off for two weeks', () => {
    const history = new History().daily('2026-01-01', 20).daily('2026-02-04', 3);
    const plan = planRetention(history.backups, { keepDaily: 7 });

    it('counts only days that hold a backup, back from the newest backup, not from now', () => {
      golden('gap-two-weeks', plan);
      // 3 days after the gap + 4 before it: the gap does not eat the daily tier.
      assert.equal(plan.keep.length, 7);
      assert.ok(ids(plan, 'keep').includes('app_full_20260120_020000'));
    });

    it('keep-within measures from the newest backup, so nothing expires while backups stop', () => {
      const within = planRetention(history.backups, { keepWithin: '3d' });
      assert.deepEqual(ids(within, 'keep'), ['app_full_20260206_020000', 'app_full_20260205_020000', 'app_full_20260204_020000']);
    });
  });

  describe('chains that cross tier boundaries', () => {
    // A full every Monday, incrementals on the other days, a differential on Thursdays.
    const history = new History().daily('2026-03-02', 28, (i) => (i % 7 === 0 ? 'full' : i % 7 === 3 ? 'differential' : 'incremental'));
    const plan = planRetention(history.backups, { keepDaily: 3, keepWeekly: 2 });

    it('keeps every ancestor a kept restore point needs, and says which one needs it', () => {
      golden('chains-weekly-full', plan);
      const byId = new Map(history.backups.map((b) => [b.id, b]));
      const kept = new Set(ids(plan, 'keep'));
      for (const id of kept) {
        let b = byId.get(id)!;
        while (b.parent) {
          assert.ok(kept.has(b.parent), `${b.parent} (needed by ${id}) must be kept`);
          b = byId.get(b.parent)!;
        }
      }
      const chainReasons = plan.keep.filter((d) => d.reasons.some((r) => r.startsWith('needed by')));
      assert.ok(chainReasons.length > 0);
    });
  });

  describe('pins and labels', () => {
    const history = new History().daily('2026-01-01', 60);
    history.backups[5] = { ...history.backups[5]!, tags: ['pinned'] };
    history.backups[40] = { ...history.backups[40]!, label: 'pre-update' };
    history.backups[10] = { ...history.backups[10]!, label: 'pre-update' };
    const plan = planRetention(history.backups, { keepLast: 3, keepLabels: { 'pre-update': '30d' } });

    it('keeps pinned backups forever and labelled ones for their own duration', () => {
      golden('pins-and-labels', plan);
      const reasons = new Map(plan.keep.map((d) => [d.id, d.reasons]));
      assert.deepEqual(reasons.get(history.backups[5]!.id), ['pinned']);
      assert.deepEqual(reasons.get(history.backups[40]!.id), ['label pre-update (kept for 30d)']);
      assert.ok(ids(plan, 'remove').includes(history.backups[10]!.id), 'a label older than its duration no longer protects');
    });
  });

  describe('edge cases', () => {
    it('an empty policy is an error, not "delete everything"', () => {
      const history = new History().daily('2026-01-01', 5);
      assert.throws(() => planRetention(history.backups, {} as RetentionPolicy), /keeps nothing/);
      assert.throws(() => planRetention(history.backups, { keepDaily: 0, keepLast: 0 }), /keeps nothing/);
      assert.throws(() => planRetention(history.backups, { keepWithin: 'a week' }), /not a duration/);
    });

    it('a repository with a single backup keeps it', () => {
      const plan = planRetention(new History().add('2020-01-01T00:00:00Z').backups, { keepLast: 1 });
      golden('single-backup', plan);
      assert.equal(plan.keep.length, 1);
      assert.deepEqual(plan.keep[0]!.reasons, ['newest good backup (always kept)', 'last 1 of 1']);
    });

    it('the newest good backup is kept even when its successors failed verification', () => {
      const history = new History().daily('2026-01-01', 4);
      const failed = { at: '2026-01-05T00:00:00Z', level: 'full' as const, outcome: 'failed' as const, checks: [] };
      history.backups[3] = { ...history.backups[3]!, verification: failed };
      const plan = planRetention(history.backups, { keepLast: 1 });
      assert.deepEqual(ids(plan, 'keep'), [history.backups[3]!.id, history.backups[2]!.id]);
      assert.deepEqual(plan.keep[1]!.reasons, ['newest good backup (always kept)']);
    });

    it('a tier gives its slot to the newest good restore point of the period, not a later schema-only or failed one', () => {
      const failed = { at: '2026-01-05T00:00:00Z', level: 'quick' as const, outcome: 'failed' as const, checks: [] };
      for (const later of ['schema-only', 'failed'] as const) {
        const history = new History().add('2026-01-02T09:00:00Z').add('2026-01-02T11:00:00Z', later === 'schema-only' ? 'schema-only' : 'full', later === 'failed' ? { verification: failed } : {}).add('2026-01-03T09:00:00Z');
        const [dayOne, useless, dayTwo] = history.backups;
        const plan = planRetention(history.backups, { keepDaily: 2 });
        const reasons = new Map(plan.keep.map((d) => [d.id, d.reasons]));
        assert.deepEqual(reasons.get(dayOne!.id), ['daily 2 of 2 (2026-01-02)'], `the 09:00 full keeps the day, not the ${later} one`);
        assert.deepEqual(reasons.get(dayTwo!.id), ['newest good backup (always kept)', 'daily 1 of 2 (2026-01-03)']);
        assert.deepEqual(ids(plan, 'remove'), [useless!.id]);
      }
      // A period without a good restore point keeps its newest backup rather than nothing.
      const bad = new History().add('2026-01-02T09:00:00Z', 'full', { verification: failed }).add('2026-01-02T11:00:00Z', 'schema-only').add('2026-01-03T09:00:00Z');
      const plan = planRetention(bad.backups, { keepDaily: 2 });
      assert.deepEqual(plan.keep.find((d) => d.id === bad.backups[1]!.id)?.reasons, ['daily (2026-01-02; no good restore point in it, kept beside the 2 that have one)']);
      assert.deepEqual(ids(plan, 'remove'), [bad.backups[0]!.id]);
    });

    it('periods without a good restore point take none of a tier\'s slots: a run of failed days still leaves the count of good days', () => {
      const failed = { at: '2026-01-09T00:00:00Z', level: 'full' as const, outcome: 'failed' as const, checks: [] };
      const history = new History().daily('2026-01-01', 8);
      // The two newest days' backups failed verification.
      for (const i of [6, 7]) history.backups[i] = { ...history.backups[i]!, verification: failed };
      const plan = planRetention(history.backups, { keepDaily: 3 });
      const reasons = new Map(plan.keep.map((d) => [d.id, d.reasons.filter((r) => r.startsWith('daily'))]));
      assert.deepEqual(reasons.get(history.backups[5]!.id), ['daily 1 of 3 (2026-01-06)']);
      assert.deepEqual(reasons.get(history.backups[4]!.id), ['daily 2 of 3 (2026-01-05)']);
      assert.deepEqual(reasons.get(history.backups[3]!.id), ['daily 3 of 3 (2026-01-04)']);
      assert.deepEqual(reasons.get(history.backups[7]!.id), ['daily (2026-01-08; no good restore point in it, kept beside the 3 that have one)']);
      assert.deepEqual(reasons.get(history.backups[6]!.id), ['daily (2026-01-07; no good restore point in it, kept beside the 3 that have one)']);
      assert.deepEqual(ids(plan, 'remove').sort(), [0, 1, 2].map((i) => history.backups[i]!.id).sort());
      // At most as many such days as the count: the older ones go.
      for (const i of [3, 4, 5]) history.backups[i] = { ...history.backups[i]!, verification: failed };
      const worse = planRetention(history.backups, { keepDaily: 3 });
      const traces = worse.keep.filter((d) => d.reasons.some((r) => r.includes('no good restore point in it')));
      assert.deepEqual(traces.map((d) => d.id), [7, 6, 5].map((i) => history.backups[i]!.id));
      assert.deepEqual(worse.keep.filter((d) => d.reasons.some((r) => /^daily \d of 3/.test(r))).map((d) => d.id), [2, 1, 0].map((i) => history.backups[i]!.id));
    });

    it('labels, database and job names that objects inherit (constructor, toString, __proto__) are names like any other', () => {
      const names = ['constructor', 'toString', '__proto__', 'valueOf', 'hasOwnProperty'];
      const history = new History().daily('2026-01-01', names.length + 2);
      names.forEach((label, i) => (history.backups[i] = { ...history.backups[i]!, label }));
      const plan = planRetention(history.backups, { keepLast: 1, keepLabels: { toString: '30d' } });
      assert.deepEqual(plan.keep.find((d) => d.id === history.backups[1]!.id)?.reasons, ['label toString (kept for 30d)'], 'a label the policy names is kept');
      for (const i of [0, 2, 3, 4]) assert.ok(ids(plan, 'remove').includes(history.backups[i]!.id), `label ${names[i]} is not in the policy`);
      assert.equal(tierOf(plan.keep[0]!), 'last');
      const config = { databases: { app: { url: 'sqlite:/tmp/app.db' } }, retention: { keepLast: 3 }, schedules: {} } as unknown as StrataConfig;
      assert.throws(() => resolveDatabase('constructor', config), /database "constructor" is not in strata.config.json/);
      assert.deepEqual(retentionFor(config, 'constructor'), { keepLast: 3 });
      assert.deepEqual(schedulesFor(config, 'toString'), {});
    });

    it('plans each database on its own', () => {
      const a = new History('a').daily('2026-01-01', 5);
      const b = new History('b').daily('2025-01-01', 5);
      const plan = planRetention([...a.backups, ...b.backups], { keepLast: 2 });
      assert.equal(plan.keep.length, 4);
      assert.ok(plan.keep.some((d) => d.database === 'b'));
    });
    it('keepWithinPitr keeps every base whose segments reach into the point-in-time window, with the chain it builds on', () => {
      // A full each week, a replication base (incremental) each day; each base's segments run 20 hours.
      const history = new History();
      const windows: ContinuityWindow[] = [];
      for (let day = 1; day <= 10; day++) {
        const at = `2026-03-${String(day).padStart(2, '0')}T00:00:00Z`;
        history.add(at, day % 7 === 1 ? 'full' : 'incremental', { changePosition: { frame: day } });
        const base = history.backups.at(-1)!;
        windows.push({ database: 'app', base: base.id, from: base.createdAt, to: new Date(Date.parse(base.createdAt) + 20 * 3_600_000).toISOString(), segments: 72_000, transactions: 1, lastShippedAt: base.createdAt, lastLagMs: 0, storedBytes: 1 });
      }
      const plan = planRetention(history.backups, { keepLast: 1, keepWithinPitr: '3d' }, windows);
      // The newest moment shipped is 2026-03-10T20:00Z; three days back is the 7th at 20:00, which
      // the 7th's segments reach (to 20:00) and the 6th's do not (to the 6th, 20:00).
      const kept = ids(plan, 'keep');
      for (const day of ['07', '08', '09', '10']) {
        const base = history.backups.find((b) => b.createdAt.startsWith(`2026-03-${day}`))!;
        assert.ok(kept.includes(base.id), `the base of the ${day}th is kept`);
        assert.ok(plan.keep.find((d) => d.id === base.id)!.reasons.some((r) => r.startsWith('point-in-time window 3d')), `the ${day}th is kept for the window`);
      }
      // The 7th is an incremental on the 6th, and so on back to the full of the 1st: those are kept
      // as its chain, not for the window.
      const sixth = history.backups.find((b) => b.createdAt.startsWith('2026-03-06'))!;
      assert.ok(plan.keep.find((d) => d.id === sixth.id)!.reasons.every((r) => r.startsWith('needed by')), 'the 6th is kept only as a link of the chain');
      assert.throws(() => planRetention(history.backups, { keepWithinPitr: 'a week' }, windows), /not a duration/);
      // Without windows (no segments), the window is counted back from the newest backup: the 7th
      // to the 10th are within it, and their chain goes back to the full of the 1st.
      assert.deepEqual(ids(planRetention(history.backups, { keepWithinPitr: '3d' }), 'keep'), history.backups.map((b) => b.id).reverse());
    });

    it('keepWithinPitr on a database without segments keeps every restore point of the window and the newest before it', () => {
      const history = new History().daily('2026-01-01', 60);
      const plan = planRetention(history.backups, { keepWithinPitr: '29d12h' });
      // The newest is day 59 (1 March, 02:00); the window starts 29.5 days before, on day 29 at 14:00.
      assert.deepEqual(ids(plan, 'keep'), history.backups.slice(29).map((b) => b.id).reverse());
      const reasons = new Map(plan.keep.map((d) => [d.id, d.reasons]));
      assert.deepEqual(reasons.get(history.backups[29]!.id), ['point-in-time window 29d12h (a restore to 2026-01-30T14:00:00.000Z starts from it)']);
      assert.deepEqual(reasons.get(history.backups[30]!.id), ['point-in-time window 29d12h (within it, where no segments cover)']);
      assert.equal(plan.remove.length, 29);
      // Four backups within 30 days are all kept (a policy of only keepWithinPitr removed three).
      const four = new History().daily('2026-12-01', 4);
      assert.deepEqual(planRetention(four.backups, { keepWithinPitr: '30d' }).remove, []);
    });

    it('the newest chain of segments is always kept, base and segments, whatever the policy; older chains are not', () => {
      // A full on the 1st; replicate's base (an incremental on it) on the 2nd at 01:00; an ordinary
      // full on the 2nd at 03:00 takes that day's slot; the segments run on to 05:00.
      const history = new History().add('2026-03-01T02:00:00Z').add('2026-03-02T01:00:00Z', 'incremental', { label: 'replication base' }).add('2026-03-02T03:00:00Z');
      const [first, base] = history.backups;
      const windowTo = (to: string): ContinuityWindow[] => [{ database: 'app', base: base!.id, from: base!.createdAt, to, segments: 240, transactions: 240, lastShippedAt: to, lastLagMs: 0, storedBytes: 1 }];
      const plan = planRetention(history.backups, DEFAULT_RETENTION, windowTo('2026-03-02T05:00:00.000Z'));
      assert.deepEqual(plan.keep.find((d) => d.id === base!.id)?.reasons, ['newest moment shipped (always kept): segments from 2026-03-02T01:00:00.000Z to 2026-03-02T05:00:00.000Z']);
      assert.ok(plan.keep.find((d) => d.id === first!.id)!.reasons.includes(`needed by ${base!.id}`));
      assert.deepEqual(plan.remove, []);
      assert.deepEqual(plan.removeSegments, []);
      // Idle since, with backups taken after its last segment, a running replicator's chain is still the newest: kept whole.
      const idle = planRetention(history.backups, { keepLast: 1, keepWithinPitr: '1h' }, windowTo('2026-03-02T02:30:00.000Z'));
      assert.ok(ids(idle, 'keep').includes(base!.id));
      assert.deepEqual(idle.removeSegments, [], 'the chain it grows is not thinned');
      // An older chain has no such claim: the tiers and the window decide.
      const older = new History().add('2026-02-01T02:00:00Z').add('2026-03-01T02:00:00Z').add('2026-03-02T03:00:00Z');
      const windows: ContinuityWindow[] = older.backups.slice(0, 2).map((b, i) => ({ database: 'app', base: b.id, from: b.createdAt, to: i === 0 ? '2026-02-02T00:00:00.000Z' : '2026-03-01T20:00:00.000Z', segments: 10, transactions: 10, lastShippedAt: b.createdAt, lastLagMs: 0, storedBytes: 1 }));
      const thinned = planRetention(older.backups, { keepLast: 1, keepWithinPitr: '1d' }, windows);
      assert.deepEqual(ids(thinned, 'remove'), [older.backups[0]!.id]);
      assert.equal(thinned.keep.find((d) => d.id === older.backups[1]!.id)!.reasons[0], 'newest moment shipped (always kept): segments from 2026-03-01T02:00:00.000Z to 2026-03-01T20:00:00.000Z');
    });

    it('keepWithinPitr counts back from a backup newer than the last segment: a replication that stopped lets its older chains go', () => {
      // Replicated from the 1st (one chain to the 2nd, the next to the 3rd), then only daily fulls until 3 March.
      const history = new History().add('2026-01-01T00:00:00Z').add('2026-01-02T00:00:00Z').daily('2026-01-03', 60);
      const [oldest, last] = history.backups;
      const window = (b: BackupRecord, to: string): ContinuityWindow => ({ database: 'app', base: b.id, from: b.createdAt, to, segments: 40, transactions: 40, lastShippedAt: to, lastLagMs: 0, storedBytes: 1 });
      const windows = [window(oldest!, '2026-01-02T00:00:00.000Z'), window(last!, '2026-01-03T00:00:00.000Z')];
      const plan = planRetention(history.backups, { keepDaily: 7, keepWithinPitr: '7d' }, windows);
      assert.ok(ids(plan, 'remove').includes(oldest!.id), `the older base goes: ${JSON.stringify(plan.keep.find((d) => d.id === oldest!.id)?.reasons)}`);
      assert.deepEqual(plan.keep.find((d) => d.id === last!.id)!.reasons, ['newest moment shipped (always kept): segments from 2026-01-02T00:00:00.000Z to 2026-01-03T00:00:00.000Z'], 'the newest chain stays, and only for that');
      // Kept by a rule of its own (pinned), the older base stays as a restore point, and its segments go.
      history.backups[0] = { ...oldest!, tags: ['pinned'] };
      const pinned = planRetention(history.backups, { keepDaily: 7, keepWithinPitr: '7d' }, windows);
      assert.deepEqual(pinned.keep.find((d) => d.id === oldest!.id)!.reasons, ['pinned']);
      assert.deepEqual(pinned.removeSegments.map((d) => [d.base, d.segments]), [[oldest!.id, 40]]);
    });

    it('keepWithinPitr counts a broken chain of segments as covering only up to its break', () => {
      const history = new History().daily('2026-03-01', 10);
      const at = (day: number, hour = 2): string => new Date(Date.UTC(2026, 2, day, hour)).toISOString();
      // Replicated from the 1st to the 10th at 20:00, but a segment after the 3rd is missing: a
      // restore to a later moment stops at the 3rd.
      const windows: ContinuityWindow[] = [{ database: 'app', base: history.backups[0]!.id, from: at(1), to: at(10, 20), segments: 200, transactions: 200, lastShippedAt: at(10, 20), lastLagMs: 0, storedBytes: 1, broken: 'segment 61 is missing', reachable: at(3) }];
      const plan = planRetention(history.backups, { keepWithinPitr: '5d' }, windows);
      // The window runs from the 5th at 20:00: what restores there are the daily backups, kept.
      assert.deepEqual(ids(plan, 'keep'), [...history.backups.slice(4).map((b) => b.id).reverse(), history.backups[0]!.id]);
      // continuityWindows says where a broken chain stops: the last segment before the break.
      const base = { ...history.backups[0]!, changePosition: { frame: 0 } };
      const segment = (sequence: number, lastAt: string): SegmentRecord => ({
        id: `s${sequence}`, database: 'app', engine: 'sqlite', base: base.id, sequence, previous: sequence === 1 ? null : `s${sequence - 1}`,
        from: { frame: sequence - 1 }, to: { frame: sequence }, firstAt: lastAt, lastAt, transactions: 1, createdAt: lastAt, key: `s${sequence}`,
        rawBytes: 1, storedBytes: 1, sha256: '0', compression: { codec: 'none', level: 0 }, encryption: { profile: 'none' },
      });
      const [listed] = continuityWindows([base], [segment(1, at(2)), segment(2, at(3)), segment(4, at(9))]);
      assert.deepEqual([listed!.to, listed!.reachable, /segment 3 .* is missing/.test(listed!.broken ?? '')], [at(9), at(3), true]);
    });

    it('keepWithinPitr keeps the restore points of the part of the window that segments do not cover', () => {
      const history = new History().daily('2026-03-01', 10);
      const at = (day: number, hour = 2): string => new Date(Date.UTC(2026, 2, day, hour)).toISOString();
      const window = (day: number, to: string): ContinuityWindow => ({ database: 'app', base: history.backups[day - 1]!.id, from: at(day), to, segments: 10, transactions: 1, lastShippedAt: to, lastLagMs: 0, storedBytes: 1 });
      // Only the 9th and the 10th were replicated; the newest moment shipped is the 10th at 20:00.
      const windows = [window(9, at(10)), window(10, at(10, 20))];
      const plan = planRetention(history.backups, { keepWithinPitr: '5d' }, windows);
      // The window starts on the 5th at 20:00: the 5th is where a restore to then starts, the 6th to
      // the 8th are within the part no segments cover, the 9th and 10th are bases of segments.
      assert.deepEqual(ids(plan, 'keep'), history.backups.slice(4).map((b) => b.id).reverse());
      assert.deepEqual(plan.keep.find((d) => d.id === history.backups[8]!.id)!.reasons, [`point-in-time window 5d (segments from ${at(9)} to ${at(10)})`], 'a base is kept for its segments as before');
      assert.deepEqual(plan.keep.find((d) => d.id === history.backups[4]!.id)!.reasons, ['point-in-time window 5d (a restore to 2026-03-05T20:00:00.000Z starts from it)']);
      assert.deepEqual(plan.removeSegments, []);
    });
  });
});
