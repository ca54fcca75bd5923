import type { LogArchiveRules, LogFile, LogRange, LogWalk } from '@strata/core';
import type { PhysicalPosition } from './pg-physical-engine.js';
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
interface Branch {
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

export const PG_LOG_ARCHIVE_RULES: LogArchiveRules = {
  async walk(range, files, read): Promise<LogWalk> {
    const segmentBytes = segmentBytesOf(range);
    const start = positionOf(range, 'start');
    const startSeg = segmentOf(start.lsn, segmentBytes);
    const baseEndSeg = segmentOf(positionOf(range, 'end').lsn, segmentBytes);
    const baseTimeline = start.timeline;
    const problems: string[] = [];
    const present = new Map<string, LogFile>();
    const histories = new Map<number, LogFile>();
    const segmentTimelines = new Set<number>();
    for (const file of files) {
      const h = HISTORY.exec(file.name);
      if (h) histories.set(parseInt(h[1]!, 16), file);
      const w = parseWalName(file.name, segmentBytes);
      if (!w) continue;
      present.set(file.name, file);
      if (w.segno >= startSeg) segmentTimelines.add(w.timeline);
    }
    // The history to follow: that of the newest timeline descending from the base's, as a
    // recovery to the latest moment (recovery_target_timeline = latest) follows it.
    let branches: Branch[] = [{ timeline: baseTimeline, beginSeg: 0n }];
    const newer = [...new Set([...segmentTimelines, ...histories.keys()])].filter((t) => t > baseTimeline).sort((a, b) => b - a);
    for (const timeline of newer) {
      const history = histories.get(timeline);
      // A timeline whose first segment is not archived yet (a server just promoted): the log
      // the archive holds still ends on the older one.
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
      const own = parsed.findIndex((b) => b.timeline === baseTimeline);
      const next = parsed[own + 1];
      // A timeline branching off before the base started does not continue it.
      if (own < 0 || !next || next.beginSeg < startSeg) continue;
      branches = parsed.slice(own).map((b, i) => (i === 0 ? { timeline: b.timeline, beginSeg: 0n } : b));
      break;
    }
    const timelineFor = (segno: bigint): number => {
      let timeline = branches[0]!.timeline;
      for (const b of branches) if (b.beginSeg <= segno) timeline = b.timeline;
      return timeline;
    };
    let end = baseEndSeg;
    for (const name of present.keys()) {
      const w = parseWalName(name, segmentBytes)!;
      if (w.segno > end && timelineFor(w.segno) === w.timeline) end = w.segno;
    }
    const needed: LogFile[] = branches.filter((b) => b.timeline > 1).flatMap((b) => (histories.has(b.timeline) ? [histories.get(b.timeline)!] : []));
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
};

function walTimelineHex(timeline: number): string {
  return timeline.toString(16).toUpperCase().padStart(8, '0');
}
