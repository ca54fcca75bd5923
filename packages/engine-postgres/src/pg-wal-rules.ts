import { StrataError } from '@strata/core';
import type { LogArchiveRules, LogFile, LogRange, LogWalk } from '@strata/core';
import type { PhysicalPosition } from './pg-physical-engine.js';
import { WAL_LONG_HEADER_BYTES, readWalLongHeader, segmentNameOf, walSegmentProblem } from './pg-wal-header.js';
import { parseLsn, parseWalName, segmentOf, walFileName } from './pg-wal.js';

/**
 * How PostgreSQL's archived write-ahead log relates to base backups (core's LogArchiveRules):
 * which segments a recovery from a base replays, across timeline switches as the `.history` files
 * record them, as WAL-G's `wal-verify` and pgBackRest's archive check walk it.
 *
 * A recovery reads segment number `s` from the newest timeline of its history that began at or
 * before `s` (PostgreSQL's own choice in XLogFileReadAnyTLI): the segment holding a switch point
 * comes from the new timeline, the old timeline's copy of it (or its `.partial`) is not read.
 */

const SEGMENT_BYTES_DEFAULT = 16 * 1024 * 1024;
const HISTORY = /^([0-9A-F]{8})\.history$/;

function positionOf(range: LogRange, which: 'start' | 'end'): PhysicalPosition {
  return range[which] as unknown as PhysicalPosition;
}

function segmentBytesOf(range: LogRange): number {
  return Number(positionOf(range, 'start').segmentBytes ?? SEGMENT_BYTES_DEFAULT);
}

/** A timeline of a history, with the segment it began in (0 for the first). */
export interface Branch {
  readonly timeline: number;
  readonly beginSeg: bigint;
}

/**
 * A `.history` file's timelines: `parentTLI <tab> switchpoint <tab> reason` per line, oldest first.
 * Returns the branches it describes plus the file's own timeline, each with where it began.
 */
export function parseHistory(text: string, timeline: number, segmentBytes: number): Branch[] {
  const branches: Branch[] = [];
  let begin = 0n;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/.exec(line);
    if (!m) throw new Error(`unexpected line ${JSON.stringify(line.slice(0, 80))}`);
    branches.push({ timeline: Number(m[1]), beginSeg: begin });
    begin = parseLsn(m[2]!) / BigInt(segmentBytes);
  }
  branches.push({ timeline, beginSeg: begin });
  return branches;
}

/** Which timeline a recovery follows: the newest one descending from the base's, the base's own, or one by number. */
export type TimelineChoice = 'latest' | 'current' | number;

/** The timelines a recovery follows, oldest first, each with the segment it begins in. */
export interface TimelinePath {
  /** The timeline the recovery ends on (PostgreSQL's recovery_target_timeline). */
  readonly timeline: number;
  readonly branches: readonly Branch[];
  /** Why a newer timeline could not be followed (for `latest`): a history file missing or unreadable. */
  readonly problems: readonly string[];
}

/**
 * The branches of `history` from the base's timeline on, or undefined when that timeline does not
 * continue the base: it is not in the history, or the next timeline branched off before the base
 * started (a base taken on the old server after a failover is not part of the new timeline).
 */
function branchesFrom(history: Branch[], baseTimeline: number, startSeg: bigint): Branch[] | undefined {
  const own = history.findIndex((b) => b.timeline === baseTimeline);
  const next = history[own + 1];
  if (own < 0 || !next || next.beginSeg < startSeg) return undefined;
  return history.slice(own).map((b, i) => (i === 0 ? { timeline: b.timeline, beginSeg: 0n } : b));
}

/**
 * The timelines a recovery from the base of `range` follows to the timeline `choice` names, from
 * the archived `.history` files. `latest` is the newest timeline descending from the base's that
 * has archived segments (as PostgreSQL's recovery_target_timeline = latest, but a timeline whose
 * first segment is not archived yet is not followed: the log the archive holds still ends on the
 * older one). A timeline asked for by number that the archive cannot lead to is an error.
 */
export async function followTimeline(range: LogRange, files: readonly LogFile[], read: (file: LogFile) => Promise<Uint8Array>, choice: TimelineChoice): Promise<TimelinePath> {
  const segmentBytes = segmentBytesOf(range);
  const start = positionOf(range, 'start');
  const startSeg = segmentOf(start.lsn, segmentBytes);
  const baseTimeline = start.timeline;
  const own: TimelinePath = { timeline: baseTimeline, branches: [{ timeline: baseTimeline, beginSeg: 0n }], problems: [] };
  if (choice === 'current' || choice === baseTimeline) return own;
  const histories = new Map<number, LogFile>();
  const segmentTimelines = new Set<number>();
  for (const file of files) {
    const h = HISTORY.exec(file.name);
    if (h) histories.set(parseInt(h[1]!, 16), file);
    const w = parseWalName(file.name, segmentBytes);
    if (w && w.segno >= startSeg) segmentTimelines.add(w.timeline);
  }
  if (typeof choice === 'number') {
    const history = histories.get(choice);
    if (!history) {
      throw new StrataError('CHAIN_BROKEN', `restore: the WAL archive holds no ${walTimelineHex(choice)}.history: timeline ${choice} was never archived here (timelines in the archive: ${[...new Set([baseTimeline, ...histories.keys()])].sort((a, b) => a - b).join(', ')}); nothing was written`);
    }
    const branches = branchesFrom(parseHistory(Buffer.from(await read(history)).toString('utf8'), choice, segmentBytes), baseTimeline, startSeg);
    if (!branches) {
      throw new StrataError('CHAIN_BROKEN', `restore: timeline ${choice} does not continue the base backup's timeline ${baseTimeline} from where the base began (${walTimelineHex(choice)}.history); recover from a base backup taken on its history, or choose another --timeline; nothing was written`);
    }
    return { timeline: choice, branches, problems: [] };
  }
  const problems: string[] = [];
  const newer = [...new Set([...segmentTimelines, ...histories.keys()])].filter((t) => t > baseTimeline).sort((a, b) => b - a);
  for (const timeline of newer) {
    const history = histories.get(timeline);
    if (!segmentTimelines.has(timeline)) continue;
    if (!history) {
      problems.push(`timeline ${timeline} has archived segments but no ${walTimelineHex(timeline)}.history, so a recovery cannot follow the log onto it`);
      continue;
    }
    let parsed: Branch[];
    try {
      parsed = parseHistory(Buffer.from(await read(history)).toString('utf8'), timeline, segmentBytes);
    } catch (err) {
      problems.push(`${history.name} cannot be read: ${(err as Error).message}`);
      continue;
    }
    const branches = branchesFrom(parsed, baseTimeline, startSeg);
    if (branches) return { timeline, branches, problems };
  }
  return { ...own, problems };
}

/**
 * The base backups a recovery along `choice` can start from: for a timeline number, or for
 * `latest` the newest timeline the archive holds segments and a history of, those whose start
 * lies on that timeline's history (a base the old server took after a failover is not on the new
 * timeline's). For `current`, or when no base is on that history, all of them (planWal then says
 * why a recovery cannot follow it).
 */
export async function basesOnTimeline<T extends { readonly logRange?: LogRange | undefined }>(
  bases: readonly T[],
  files: readonly LogFile[],
  read: (file: LogFile) => Promise<Uint8Array>,
  choice: TimelineChoice,
): Promise<T[]> {
  if (choice === 'current') return [...bases];
  const histories = new Map<number, LogFile>();
  const segmentTimelines = new Set<number>();
  for (const file of files) {
    const h = HISTORY.exec(file.name);
    if (h) histories.set(parseInt(h[1]!, 16), file);
    const w = /^([0-9A-F]{8})[0-9A-F]{16}$/.exec(file.name);
    if (w) segmentTimelines.add(parseInt(w[1]!, 16));
  }
  const target = typeof choice === 'number' ? choice : Math.max(0, ...[...histories.keys()].filter((t) => segmentTimelines.has(t)));
  if (target === 0) return [...bases];
  const history = histories.get(target);
  let text: string | undefined;
  try {
    text = history ? Buffer.from(await read(history)).toString('utf8') : undefined;
  } catch {
    return [...bases];
  }
  const on = bases.filter((b) => {
    if (!b.logRange) return false;
    const start = positionOf(b.logRange, 'start');
    if (start.timeline === target) return true;
    if (text === undefined) return false;
    const segmentBytes = segmentBytesOf(b.logRange);
    try {
      return branchesFrom(parseHistory(text, target, segmentBytes), start.timeline, segmentOf(start.lsn, segmentBytes)) !== undefined;
    } catch {
      return false;
    }
  });
  return on.length > 0 ? on : [...bases];
}

/** The timeline a recovery along `branches` reads segment `segno` from. */
export function timelineAt(branches: readonly Branch[], segno: bigint): number {
  let timeline = branches[0]!.timeline;
  for (const b of branches) if (b.beginSeg <= segno) timeline = b.timeline;
  return timeline;
}

/** The `.history` files a recovery along `branches` reads (every timeline's but the first one's, which has none). */
export function historiesOf(branches: readonly Branch[], files: readonly LogFile[]): LogFile[] {
  const byName = new Map(files.map((f) => [f.name, f]));
  return branches.filter((b) => b.timeline > 1).flatMap((b) => {
    const file = byName.get(`${walTimelineHex(b.timeline)}.history`);
    return file ? [file] : [];
  });
}

export const PG_LOG_ARCHIVE_RULES: LogArchiveRules = {
  async walk(range, files, read): Promise<LogWalk> {
    const segmentBytes = segmentBytesOf(range);
    const start = positionOf(range, 'start');
    const startSeg = segmentOf(start.lsn, segmentBytes);
    const baseEndSeg = segmentOf(positionOf(range, 'end').lsn, segmentBytes);
    const present = new Map<string, LogFile>();
    for (const file of files) if (parseWalName(file.name, segmentBytes)) present.set(file.name, file);
    // The history a recovery to the latest moment follows.
    const followed = await followTimeline(range, files, read, 'latest');
    const branches = followed.branches;
    const problems = [...followed.problems];
    const timelineFor = (segno: bigint): number => timelineAt(branches, segno);
    let end = baseEndSeg;
    for (const name of present.keys()) {
      const w = parseWalName(name, segmentBytes)!;
      if (w.segno > end && timelineFor(w.segno) === w.timeline) end = w.segno;
    }
    const needed: LogFile[] = historiesOf(branches, files);
    const missing: string[] = [];
    for (let s = startSeg; s <= end; s++) {
      const name = walFileName(timelineFor(s), s, segmentBytes);
      const file = present.get(name);
      if (file) needed.push(file);
      else missing.push(name);
    }
    return { needed, missing, problems };
  },

  position(name, range) {
    // Segments, and the .partial and .backup files named after one.
    const m = /^([0-9A-F]{24})(\.[A-Za-z0-9.]+)?$/.exec(name);
    if (!m) return undefined;
    return parseWalName(m[1]!, segmentBytesOf(range))?.segno;
  },

  span(range) {
    const segmentBytes = segmentBytesOf(range);
    return { first: segmentOf(positionOf(range, 'start').lsn, segmentBytes), last: segmentOf(positionOf(range, 'end').lsn, segmentBytes) };
  },

  inspect(file, bytes, range) {
    // What wal-push checks before storing (pg-wal-header.ts), for segments stored before it did,
    // or by an older Strata. A partial (wal-receive's segment in progress) is zero-padded to full
    // size and holds its first page once it holds anything.
    if (!segmentNameOf(file.name) || (file.partial && file.partial.receivedBytes < WAL_LONG_HEADER_BYTES)) return {};
    const problem = walSegmentProblem(file.name, bytes);
    if (problem) return { problem };
    const header = readWalLongHeader(bytes)!;
    if (header.segmentBytes !== segmentBytesOf(range)) return { problem: `${file.name} is a segment of ${header.segmentBytes} bytes, and the base backup's cluster writes segments of ${segmentBytesOf(range)}` };
    return { identity: `system identifier ${header.systemIdentifier}` };
  },
};

function walTimelineHex(timeline: number): string {
  return timeline.toString(16).toUpperCase().padStart(8, '0');
}
