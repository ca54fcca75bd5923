import type { BackupRecord } from './catalog.js';
import type { ContinuityWindow } from './continuity.js';
import { durationBefore, durationMs, parseDuration } from './duration.js';
import { StrataError } from './errors.js';
import type { LogRemovalDecision } from './log-retention.js';
import { compareNewestFirst, isGoodRestorePoint, newestGoodBackup } from './newest-good.js';
import { ownEntry } from './own-entry.js';

/**
 * Which restore points to keep. Counts keep the newest good restore point (newest-good.ts) of each
 * of the last N hours/days/weeks/months/years that hold a backup (the newest backup of a period
 * without a good one); `keepWithin` keeps everything within a duration of the newest backup;
 * `keepLabels` keeps backups with a label for their own duration.
 */
export interface RetentionPolicy {
  readonly keepLast?: number;
  readonly keepHourly?: number;
  readonly keepDaily?: number;
  readonly keepWeekly?: number;
  readonly keepMonthly?: number;
  readonly keepYearly?: number;
  /** A duration such as `30d`, `2w`, `12h`, `1y6m`. */
  readonly keepWithin?: string;
  /** Label → how long backups with it are kept (a duration, or `forever`). */
  readonly keepLabels?: Readonly<Record<string, string>>;
  /**
   * The point-in-time window (continuous protection): every base restore point whose segments
   * reach into this duration before the newest moment a restore reaches (the newest moment
   * shipped, or a newer backup taken after replication stopped) is kept, with its segments and the
   * restore points it builds on, so a restore to any moment of the window stays possible. Where
   * no segments cover the window (a database that is not replicated: all of it, counted back from
   * its newest backup), every restore point within it is kept, and the newest good one before it.
   */
  readonly keepWithinPitr?: string;
}

/** The tiers Strata keeps when nothing is configured: daily 7, weekly 8, monthly 12. */
export const DEFAULT_RETENTION: RetentionPolicy = { keepDaily: 7, keepWeekly: 8, keepMonthly: 12, keepLabels: { 'pre-update': '30d' } };

/** Backups carrying this tag are pinned: no policy removes them. */
export const PIN_TAG = 'pinned';

/** One backup's fate and every reason for it. */
export interface RetentionDecision {
  readonly id: string;
  readonly database: string;
  readonly createdAt: string;
  readonly type: string;
  readonly reasons: readonly string[];
}

/** The segments of one chain that go while its base stays (see {@link RetentionPolicy.keepWithinPitr}). */
export interface SegmentsDecision {
  readonly database: string;
  readonly base: string;
  readonly segments: number;
  /** The moments they covered. */
  readonly from: string;
  readonly to: string;
  readonly reason: string;
}

/** The plan: every backup appears exactly once, in keep or in remove. Newest first. */
export interface RetentionPlan {
  readonly keep: readonly RetentionDecision[];
  readonly remove: readonly RetentionDecision[];
  /**
   * Chains of segments that end before the point-in-time window while their base is kept by
   * another rule: the segments go, the base stays. (A removed base takes its segments with it.)
   */
  readonly removeSegments: readonly SegmentsDecision[];
  /** Archived log files no kept base backup needs, per database (set by prune; see log-retention.ts). */
  readonly removeLog?: readonly LogRemovalDecision[];
}

function checkCount(name: string, value: number | undefined): void {
  if (value !== undefined && (!Number.isInteger(value) || value < 0)) throw new StrataError('USAGE', `retention: ${name} must be a whole number ≥ 0 (got ${value})`);
}

/** Throws for malformed policies, and for a policy that would keep nothing by rule. */
export function validatePolicy(policy: RetentionPolicy): void {
  for (const key of ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly'] as const) checkCount(key, policy[key]);
  if (policy.keepWithin !== undefined) parseDuration(policy.keepWithin, 'retention');
  if (policy.keepWithinPitr !== undefined) parseDuration(policy.keepWithinPitr, 'retention');
  for (const [label, duration] of Object.entries(policy.keepLabels ?? {})) {
    if (duration === 'forever') continue;
    try {
      parseDuration(duration, 'retention');
    } catch (err) {
      throw new StrataError('USAGE', `retention: label ${label}: ${(err as Error).message.replace(/^retention: /, '')}`);
    }
  }
  const keepsSomething =
    (policy.keepLast ?? 0) + (policy.keepHourly ?? 0) + (policy.keepDaily ?? 0) + (policy.keepWeekly ?? 0) + (policy.keepMonthly ?? 0) + (policy.keepYearly ?? 0) > 0 ||
    (policy.keepWithin !== undefined && durationMs(parseDuration(policy.keepWithin, 'retention')) > 0) ||
    (policy.keepWithinPitr !== undefined && durationMs(parseDuration(policy.keepWithinPitr, 'retention')) > 0);
  if (!keepsSomething) {
    throw new StrataError('USAGE', 'retention: the policy keeps nothing (every count is 0 and there is no keep-within); refusing rather than deleting every backup');
  }
}

/** ISO week key (`2026-W47`): weeks start on Monday, the week belongs to the year of its Thursday. */
function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = (t.getUTCDay() + 6) % 7;
  t.setUTCDate(t.getUTCDate() - day + 3);
  const firstThursday = new Date(Date.UTC(t.getUTCFullYear(), 0, 4));
  const week = 1 + Math.round(((t.getTime() - firstThursday.getTime()) / 86_400_000 - 3 + ((firstThursday.getUTCDay() + 6) % 7)) / 7);
  return `${t.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

const BUCKETS: { rule: keyof RetentionPolicy; tier: string; key: (d: Date) => string }[] = [
  { rule: 'keepHourly', tier: 'hourly', key: (d) => d.toISOString().slice(0, 13) },
  { rule: 'keepDaily', tier: 'daily', key: (d) => d.toISOString().slice(0, 10) },
  { rule: 'keepWeekly', tier: 'weekly', key: isoWeek },
  { rule: 'keepMonthly', tier: 'monthly', key: (d) => d.toISOString().slice(0, 7) },
  { rule: 'keepYearly', tier: 'yearly', key: (d) => d.toISOString().slice(0, 4) },
];

/**
 * The part of a point-in-time window no chain of segments (or archived log) covers: a restore to
 * a moment there starts from the newest restore point at or before it and goes no further. So
 * every restore point taken in such a gap is kept, and so is the newest good one at or before the
 * gap's start (the one a restore to that moment needs). The window counts back from the newest
 * moment a restore reaches: for a database without segments its newest backup, as for keepWithin,
 * and then the whole window is such a gap; otherwise normally the newest moment shipped, as for
 * the bases' rule in planRetention, to which this only adds. A database that is not replicated
 * under a repository-wide keepWithinPitr is promised the same recovery to any moment of the
 * window as one that is, and must not be left with its newest backup alone.
 */
function keepUncoveredMoments(database: string, newestFirst: readonly BackupRecord[], windows: readonly ContinuityWindow[], duration: string, add: (id: string, reason: string) => void): void {
  const byId = new Map(newestFirst.map((b) => [b.id, b]));
  // A broken chain covers only what a restore reaches, up to its break.
  const covered = windows.filter((w) => w.database === database && byId.has(w.base)).map((w) => ({ from: Date.parse(w.from), to: Date.parse(w.reachable ?? w.to) }));
  const newestBackup = Date.parse(newestFirst[0]!.createdAt);
  const newestShipped = covered.length > 0 ? Math.max(...covered.map((c) => c.to)) : undefined;
  // The newest moment a restore reaches: the newest shipped, or a newer backup (taken after the
  // replication stopped), from which the window counts back.
  const end = Math.max(newestBackup, newestShipped ?? newestBackup);
  const since = durationBefore(end, parseDuration(duration, 'retention')).getTime();
  // The gaps in ms: the moments from `since` to `end` that no window covers. One that ends where a
  // window starts ends before it (that window's base restores its own moment).
  const gaps: { start: number; stop: number; closed: boolean }[] = [];
  let cursor = since;
  for (const c of covered.sort((a, b) => a.from - b.from)) {
    if (c.to < cursor) continue;
    if (c.from > cursor) gaps.push({ start: cursor, stop: c.from, closed: false });
    cursor = Math.max(cursor, c.to);
  }
  // Without any window the whole of it is a gap, even when it is a single moment (one backup).
  if (cursor < end || covered.length === 0) gaps.push({ start: cursor, stop: end, closed: true });
  const at = (b: BackupRecord): number => Date.parse(b.createdAt);
  for (const { start, stop, closed } of gaps) {
    const startIso = new Date(start).toISOString();
    const before = newestFirst.filter((b) => at(b) <= start);
    const needed = before.find((b) => isGoodRestorePoint(b, byId)) ?? before[0];
    if (needed) add(needed.id, `point-in-time window ${duration} (a restore to ${startIso} starts from it)`);
    for (const b of newestFirst) if (at(b) > start && (at(b) < stop || (closed && at(b) === stop))) add(b.id, `point-in-time window ${duration} (within it, where no segments cover)`);
  }
}

/**
 * Where the point-in-time window of a database with segments starts (ISO): `duration` before the
 * newest moment a restore reaches, the newest moment shipped or a newer backup taken after the
 * replication stopped, as {@link keepUncoveredMoments} counts. Counted from the newest moment
 * shipped alone, a replication that stopped while backups went on kept every chain that reached
 * within `duration` of its end, for good (the newest one stays anyway: see planRetention).
 */
function pitrWindowStart(windows: readonly ContinuityWindow[], newestBackup: number, duration: string): string {
  const newestShipped = Math.max(...windows.map((w) => Date.parse(w.to)));
  return durationBefore(Math.max(newestShipped, newestBackup), parseDuration(duration, 'retention')).toISOString();
}

/**
 * Decides, for every backup, keep or remove, with the reasons. Pure: the same backups and policy
 * always give the same plan, and nothing is read or deleted here.
 *
 * - Each database is planned on its own.
 * - Buckets count only if they hold a backup, and windows count back from the newest backup, not
 *   from now: a machine that was off for two weeks keeps its history.
 * - The newest good restore point is always kept: with rows, and no link of its chain known bad.
 * - Pinned backups (tag `pinned`) and labelled backups within their label's duration are kept.
 * - A kept restore point keeps its whole chain (parent, base, and their ancestors).
 */
export function planRetention(backups: readonly BackupRecord[], policy: RetentionPolicy, windows: readonly ContinuityWindow[] = []): RetentionPlan {
  validatePolicy(policy);
  const reasons = new Map<string, string[]>();
  const add = (id: string, reason: string): void => {
    const list = reasons.get(id);
    if (list) {
      if (!list.includes(reason)) list.push(reason);
    } else reasons.set(id, [reason]);
  };
  const byId = new Map(backups.map((b) => [b.id, b]));
  const databases = [...new Set(backups.map((b) => b.database))].sort();
  // The newest chain of segments of each database (see below): never thinned.
  const newestChanges = new Set<ContinuityWindow>();
  for (const database of databases) {
    const newestFirst = backups.filter((b) => b.database === database).sort(compareNewestFirst);
    const newest = Date.parse(newestFirst[0]!.createdAt);
    const good = newestGoodBackup(newestFirst) ?? newestFirst[0]!;
    add(good.id, 'newest good backup (always kept)');
    const mine = windows.filter((w) => w.database === database);
    // As the newest good restore point, the newest chain of segments is always kept, base and all,
    // policy or not: its segments may be the only copy of transactions newer than every good
    // restore point, and a running replicator (of a database idle since, too) goes on adding to
    // it. A prune that removed its base, which no tier need keep, or thinned its segments, would
    // lose those transactions or break the chain it grows. Bounded: one chain per database.
    const reachesFurther = (w: ContinuityWindow, than: ContinuityWindow): boolean => Date.parse(w.to) > Date.parse(than.to) || (w.to === than.to && Date.parse(w.from) > Date.parse(than.from));
    const newestWindow = mine.reduce<ContinuityWindow | undefined>((latest, w) => (latest === undefined || reachesFurther(w, latest) ? w : latest), undefined);
    if (newestWindow && newestWindow.segments > 0 && byId.has(newestWindow.base)) {
      add(newestWindow.base, `newest moment shipped (always kept): segments from ${newestWindow.from} to ${newestWindow.to}`);
      newestChanges.add(newestWindow);
    }
    newestFirst.slice(0, policy.keepLast ?? 0).forEach((b, i) => add(b.id, `last ${i + 1} of ${policy.keepLast}`));
    const isGood = (b: BackupRecord): boolean => isGoodRestorePoint(b, byId);
    for (const bucket of BUCKETS) {
      const count = (policy[bucket.rule] as number | undefined) ?? 0;
      if (count === 0) continue;
      // Periods that hold a backup, newest first, each with its backups newest first.
      const periods: { key: string; members: BackupRecord[] }[] = [];
      for (const b of newestFirst) {
        const key = bucket.key(new Date(b.createdAt));
        if (periods.at(-1)?.key === key) periods.at(-1)!.members.push(b);
        else periods.push({ key, members: [b] });
      }
      // The tier's `count` slots go to the newest periods with a good restore point: a slot is what
      // a restore to that period would use, its newest good restore point, not a schema-only
      // backup (no rows) or one whose chain is known bad taken later the same day, which would send
      // the day's only usable backup to deletion.
      let kept = 0;
      let traces = 0;
      for (const { key, members } of periods) {
        if (kept === count) break;
        const good = members.find(isGood);
        if (good) {
          kept += 1;
          add(good.id, `${bucket.tier} ${kept} of ${count} (${key})`);
          continue;
        }
        // No good one in the period: its newest backup is kept beside the slots, taking none of
        // them (a run of failed days must not leave the tier with fewer good days). It is the only
        // trace of that period (a schema-only backup still records its schema; a damaged artifact
        // may still give up part of its tables by hand, and is the evidence of what went wrong).
        // At most `count` such traces, newest first.
        if (traces < count) {
          traces += 1;
          add(members[0]!.id, `${bucket.tier} (${key}; no good restore point in it, kept beside the ${count} that have one)`);
        }
      }
    }
    if (policy.keepWithin !== undefined) {
      const since = durationBefore(newest, parseDuration(policy.keepWithin, 'retention')).getTime();
      for (const b of newestFirst) if (Date.parse(b.createdAt) >= since) add(b.id, `within ${policy.keepWithin} of the newest backup`);
    }
    if (policy.keepWithinPitr !== undefined && mine.length > 0) {
      const since = pitrWindowStart(mine, newest, policy.keepWithinPitr);
      for (const w of mine) if (w.to >= since && byId.has(w.base)) add(w.base, `point-in-time window ${policy.keepWithinPitr} (segments from ${w.from} to ${w.to})`);
    }
    if (policy.keepWithinPitr !== undefined) keepUncoveredMoments(database, newestFirst, mine, policy.keepWithinPitr, add);
    for (const b of newestFirst) {
      if (b.tags.includes(PIN_TAG)) add(b.id, 'pinned');
      const duration = b.label !== null ? ownEntry(policy.keepLabels, b.label) : undefined;
      if (duration === 'forever') add(b.id, `label ${b.label} (kept forever)`);
      else if (duration !== undefined && Date.parse(b.createdAt) >= durationBefore(newest, parseDuration(duration, 'retention')).getTime()) add(b.id, `label ${b.label} (kept for ${duration})`);
    }
  }
  // Chains: everything a kept restore point needs is kept too. Walk until nothing changes.
  for (const id of [...reasons.keys()]) {
    let current = byId.get(id);
    const seen = new Set<string>([id]);
    while (current?.parent) {
      const parent = byId.get(current.parent);
      // A missing parent, or parent links that loop (a damaged catalog), end the walk.
      if (!parent || seen.has(parent.id)) break;
      seen.add(parent.id);
      add(parent.id, `needed by ${id}`);
      current = parent;
    }
  }
  // Segments of a kept base that end before the point-in-time window: the snapshot tiers keep the
  // base for what it is, a restore point; restoring to moments after it is no longer promised. A
  // chain reaching into the window keeps all its segments, back to its base (they replay in
  // order), and so does the newest chain, whatever its age: the chain a running replicator grows
  // is never touched.
  const removeSegments: SegmentsDecision[] = [];
  for (const database of databases) {
    const policyWindow = policy.keepWithinPitr;
    const mine = windows.filter((w) => w.database === database);
    if (policyWindow === undefined || mine.length === 0) continue;
    const newest = Math.max(...backups.filter((b) => b.database === database).map((b) => Date.parse(b.createdAt)));
    const since = pitrWindowStart(mine, newest, policyWindow);
    for (const w of mine) {
      if (w.segments === 0 || w.to >= since || !reasons.has(w.base) || newestChanges.has(w)) continue;
      removeSegments.push({ database, base: w.base, segments: w.segments, from: w.from, to: w.to, reason: `they end before the point-in-time window ${policyWindow} (from ${since})` });
    }
  }
  const order = [...backups].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id));
  const decision = (b: BackupRecord, why: string[]): RetentionDecision => ({ id: b.id, database: b.database, createdAt: b.createdAt, type: b.type, reasons: why });
  return {
    keep: order.filter((b) => reasons.has(b.id)).map((b) => decision(b, reasons.get(b.id)!)),
    remove: order.filter((b) => !reasons.has(b.id)).map((b) => decision(b, ['no rule keeps it'])),
    removeSegments,
  };
}

/**
 * The tier a kept backup is grouped under in `list --by-tier`: the longest-lived rule that keeps
 * it (a backup kept as both daily and monthly shows as monthly, which is how long it will stay).
 */
export function tierOf(decision: RetentionDecision): string {
  const order = ['pinned', 'label', 'yearly', 'monthly', 'weekly', 'daily', 'hourly', 'within', 'point-in-time', 'last', 'newest', 'needed'];
  const names: Record<string, string> = { label: 'labelled', within: 'within', 'point-in-time': 'point-in-time', last: 'last', newest: 'newest', needed: 'chain' };
  for (const kind of order) {
    if (decision.reasons.some((r) => r.startsWith(kind))) return names[kind] ?? kind;
  }
  return 'other';
}
