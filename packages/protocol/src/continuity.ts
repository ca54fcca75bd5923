/**
 * The words for what continuous protection covers, shared by Strata's clients (the VS Code tree
 * and anything else showing a `strata/list` answer): free of any import, like charts.ts, so the
 * extension's bundle takes it as it is.
 */

/** What a client needs of a chain of segments to describe it (a `ContinuityWindow` of the SDK). */
export interface CoveredWindow {
  /** The base restore point's time: restores to any moment from here ... */
  readonly from: string;
  /** ... to the last transaction shipped. */
  readonly to: string;
  readonly segments: number;
  /** When the newest segment (or the base) was written to the repository. */
  readonly lastShippedAt: string;
  /** The first break in the chain, when a segment is missing. */
  readonly broken?: string;
}

/** "0.8 s ago" under a minute (a replicator ships every second or so), then "5 min ago", "3 h ago", "2 days ago". */
export function shippedAgo(iso: string, now: number): string {
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`;
  const days = Math.floor(seconds / 86_400);
  return days === 1 ? '1 day ago' : `${days} days ago`;
}

/**
 * "continuous since 2026-12-02 09:58:01, last change shipped 0.8 s ago" for a database's newest
 * chain of segments; `time` formats the base's time as the client shows times.
 */
export function describeCoverage(window: CoveredWindow, now: number, time: (iso: string) => string): string {
  return `continuous since ${time(window.from)}, last change shipped ${shippedAgo(window.lastShippedAt, now)}${window.broken ? `; chain broken, restores stop before it: ${window.broken}` : ''}`;
}

/** What a client needs of a base backup's archived log to describe it (a `LogWindow` of the SDK). */
export interface CoveredLog {
  readonly base: string;
  /** When the base backup ended: recoveries reach moments from here ... */
  readonly from: string;
  /** ... to when the newest file they can replay was archived (undefined: the base cannot be recovered). */
  readonly to?: string;
  /** When the newest file of the archive was stored. */
  readonly lastArchivedAt?: string;
  /** Why a recovery from the base stops early (gaps, damaged files). */
  readonly problems: readonly string[];
}

/**
 * "recoverable to any moment from 2026-12-02 09:58:01 to the last commit archived by 2026-12-02 10:41:07 (archived log after
 * 2 base backup(s), newest file archived 40 s ago)" for a database whose restores replay a log
 * archive; undefined when it has no such base backup.
 */
export function describeLogCoverage(windows: readonly CoveredLog[], now: number, time: (iso: string) => string): string | undefined {
  if (windows.length === 0) return undefined;
  const usable = windows.filter((w) => w.to !== undefined);
  const from = usable.map((w) => w.from).sort()[0];
  const to = usable.map((w) => w.to!).sort().at(-1);
  const last = windows.find((w) => w.lastArchivedAt)?.lastArchivedAt;
  const broken = windows.filter((w) => w.problems.length > 0);
  // A recovery to a moment ends at the first commit after it: the log archived by `to` proves
  // moments up to its last commit, not the ones between that commit and `to`.
  const reach = from !== undefined && to !== undefined ? `recoverable to ${broken.length > 0 ? 'moments' : 'any moment'} from ${time(from)} to the last commit archived by ${time(to)}` : 'not recoverable: no base backup has the archived log it needs';
  return `${reach} (archived log after ${windows.length} base backup(s)${last ? `, newest file archived ${shippedAgo(last, now)}` : ''})${broken.length > 0 ? `; gaps after ${broken.map((w) => w.base).join(', ')}: strata verify --all says where` : ''}`;
}
