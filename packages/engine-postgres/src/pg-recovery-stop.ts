import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { pgProgram, pgProgramFor } from './pg-physical-engine.js';
import { parseLsn } from './pg-wal.js';
import type { RecoveryGoal } from './pg-point-in-time.js';

/** How many segments at the end of the spool are searched for the record a recovery stops at. */
const SEARCHED_SEGMENTS = 8;

/**
 * Whether a recovery to `goal` stops inside the WAL segments already on disk in `dir`: PostgreSQL's
 * own pg_waldump reads the last of `segments` (names in order, contiguous; those of the last
 * timeline among them) looking for the record the server stops at, or a later one that proves it
 * stops before it. For a time, a commit or abort after it (inclusive targets stop before the first
 * one); for an LSN (and `immediate`, the base backup's end), any record starting at or after it; for
 * a transaction its commit or abort; for a restore point its record. `latest` never does. A record
 * pg_waldump prints is whole in those files, so the server needs nothing after them to stop.
 *
 * False whenever it cannot tell (pg_waldump missing or failing, a record it cannot read): a false
 * "no" only costs the caller a shortcut.
 */
export async function stopsWithin(dir: string, segments: readonly string[], goal: RecoveryGoal, options: { major: number; backupEnd: string; signal?: AbortSignal }): Promise<boolean> {
  const wanted = matcher(goal, options.backupEnd);
  if (!wanted || segments.length === 0) return false;
  const last = segments.at(-1)!;
  const timeline = last.slice(0, 8);
  let first = segments.length - 1;
  while (first > 0 && segments.length - first < SEARCHED_SEGMENTS && segments[first - 1]!.slice(0, 8) === timeline) first -= 1;
  const args = ['-p', dir, ...(wanted.rmgr ? ['-r', wanted.rmgr] : []), segments[first]!, last];
  // TZ=UTC: pg_waldump prints commit times in the local zone, named (…34.303792 UTC).
  const child = spawn(pgProgram('pg_waldump', options.major), args, { env: { ...process.env, TZ: 'UTC' }, stdio: ['ignore', 'pipe', 'ignore'], signal: options.signal });
  const ended = new Promise<void>((resolve) => {
    child.once('close', () => resolve());
    child.once('error', () => resolve());
  });
  let found = false;
  try {
    for await (const line of createInterface({ input: child.stdout })) {
      const m = /\btx:\s*(\d+), lsn: ([0-9A-F]+\/[0-9A-F]+), prev [0-9A-F/]+, desc: (.*)$/.exec(line);
      if (m && wanted.test({ xid: m[1]!, lsn: parseLsn(m[2]!), desc: m[3]! })) {
        found = true;
        break;
      }
    }
  } catch {
    found = false;
  } finally {
    if (child.exitCode === null) child.kill();
    await ended;
  }
  return found;
}

interface WalRecord {
  readonly xid: string;
  readonly lsn: bigint;
  readonly desc: string;
}

function matcher(goal: RecoveryGoal, backupEnd: string): { rmgr?: string; test: (r: WalRecord) => boolean } | undefined {
  switch (goal.kind) {
    case 'time': {
      // To the microsecond, as the target is given to PostgreSQL (commit times are in microseconds).
      const target = BigInt(goal.time.getTime()) * 1000n + BigInt(goal.micros ?? 0);
      return { rmgr: 'Transaction', test: (r) => (committedAt(r.desc) ?? -1n) > target };
    }
    case 'lsn':
    case 'immediate': {
      const target = parseLsn(goal.kind === 'lsn' ? goal.lsn : backupEnd);
      return { test: (r) => r.lsn >= target };
    }
    case 'xid':
      return { rmgr: 'Transaction', test: (r) => /^(?:COMMIT|ABORT)(?: |_PREPARED )/.test(r.desc) && endedXid(r) === goal.xid };
    case 'name':
      return { rmgr: 'XLOG', test: (r) => r.desc === `RESTORE_POINT ${goal.name}` };
    case 'latest':
      return undefined;
  }
}

/**
 * The transaction a COMMIT or ABORT record ends: its own, or for a prepared transaction the one it
 * names, since another session's record ends it (`COMMIT_PREPARED 737: ...`).
 */
function endedXid(record: WalRecord): string {
  return /^(?:COMMIT|ABORT)_PREPARED (\d+):/.exec(record.desc)?.[1] ?? record.xid;
}

/**
 * A commit's or abort's time in microseconds since the epoch (`COMMIT 2026-12-02 21:16:34.303792
 * UTC; ...`, and a prepared transaction's `COMMIT_PREPARED 737: 2026-...`), of `kind` only when given.
 */
function committedAt(desc: string, kind?: 'COMMIT' | 'ABORT'): bigint | undefined {
  const m = /^(COMMIT|ABORT)(?:_PREPARED \d+:)? (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\.(\d{6}) UTC\b/.exec(desc);
  if (!m || (kind !== undefined && m[1] !== kind)) return undefined;
  const seconds = Date.parse(`${m[2]}T${m[3]}Z`);
  return Number.isNaN(seconds) ? undefined : BigInt(seconds) * 1000n + BigInt(m[4]!);
}

/** A `CREATE TABLESPACE` in the WAL: the tablespace's OID, its absolute location, where the record is and the one before it. */
export interface TablespaceCreation {
  readonly oid: string;
  readonly location: string;
  readonly lsn: string;
  readonly previousLsn: string;
}

/** A transaction's commit as the WAL records it. */
export interface ArchivedCommit {
  readonly xid: string;
  readonly lsn: string;
  /** Its commit time, to the microsecond (`2026-12-05T14:50:26.155621Z`). */
  readonly time: string;
}

/** What a recovery to a goal would replay, as pg_waldump reads it from the segments on disk. */
export interface ReplayScan {
  /** The `CREATE TABLESPACE` records it replays. */
  readonly tablespaces: TablespaceCreation[];
  /**
   * For a goal that stops at a record (a time, a transaction, a restore point): whether that
   * record (or for a time, the first commit after it) is in the segments read. Undefined for the
   * others.
   */
  readonly stopFound?: boolean;
  /** For the same goals, the last commit read before the stop (or in all of it when there is none). */
  readonly lastCommit?: ArchivedCommit;
}

/**
 * What a recovery to `goal` replays from WAL segments on disk in `dir` (names in order, as it
 * replays them): its `CREATE TABLESPACE` records, and whether the record it stops at is there.
 * PostgreSQL replays a CREATE TABLESPACE at the absolute path the primary gave, writing into what
 * is there: on the primary's machine, the primary's own tablespace. Which are replayed follows
 * where the recovery stops (see matcher()): for a moment, those before the first commit after it;
 * for a transaction or restore point, those before its record; for an LSN, every record up to the
 * first at or past it; for `immediate`, those before the base backup's end. A recovery to a
 * moment, transaction or restore point whose record is in none of the WAL it can fetch replays all
 * of it and then fails ("recovery ended before configured recovery target was reached"), which is
 * why the stop is looked for too. pg_waldump reads each run of segments of one timeline; what it
 * cannot read (the unwritten end of the last segment) ends the run. Undefined when pg_waldump
 * cannot be run.
 */
export async function scanReplay(dir: string, segments: readonly string[], goal: RecoveryGoal, options: { major: number; backupEnd: string; signal?: AbortSignal }): Promise<ReplayScan | undefined> {
  const stop = goal.kind === 'time' || goal.kind === 'xid' || goal.kind === 'name' ? matcher(goal, options.backupEnd) : undefined;
  const replayed = (t: TablespaceCreation): boolean => {
    if (goal.kind === 'lsn') return parseLsn(t.previousLsn) < parseLsn(goal.lsn);
    if (goal.kind === 'immediate') return parseLsn(t.lsn) < parseLsn(options.backupEnd);
    return true;
  };
  const runs: string[][] = [];
  // Only segments: a timeline's history file (00000002.history) shares its first eight
  // characters with the timeline's segments, and in their run pg_waldump reads none of them.
  for (const name of segments.filter((n) => /^[0-9A-F]{24}$/.test(n))) {
    const last = runs.at(-1);
    if (last && last[0]!.slice(0, 8) === name.slice(0, 8)) last.push(name);
    else runs.push([name]);
  }
  // Only this major's pg_waldump reads its WAL; another one found on PATH would read nothing.
  let program: string;
  try {
    program = pgProgramFor('pg_waldump', options.major, 'looking for CREATE TABLESPACE in the WAL', false);
  } catch {
    return undefined;
  }
  const found: TablespaceCreation[] = [];
  let stopped = false;
  let lastCommit: ArchivedCommit | undefined;
  for (const run of runs) {
    // XLOG records (checkpoints, the base backup's end, a timeline's start) are in every run a
    // recovery replays: a run that shows none was not read, and the answer would be a false "none".
    // Transaction records, for a goal with a stop, give the last commit before it.
    const rmgrs = ['-r', 'Tablespace', '-r', 'XLOG', ...(stop ? ['-r', 'Transaction'] : [])];
    // TZ=UTC: pg_waldump prints commit times in the local zone (see stopsWithin).
    const child = spawn(program, ['-p', dir, ...rmgrs, run[0]!, run.at(-1)!], { env: { ...process.env, TZ: 'UTC' }, stdio: ['ignore', 'pipe', 'ignore'], signal: options.signal });
    const ended = new Promise<boolean>((resolve) => {
      child.once('close', () => resolve(true));
      child.once('error', () => resolve(false));
    });
    let read = false;
    for await (const line of createInterface({ input: child.stdout })) {
      const record = /\btx:\s*(\d+), lsn: ([0-9A-F]+\/[0-9A-F]+), prev ([0-9A-F]+\/[0-9A-F]+), desc: (.*)$/.exec(line);
      if (!record) continue;
      if (line.startsWith('rmgr: XLOG ')) read = true;
      if (stopped) continue;
      const created = /^CREATE (\d+) "(.*)"$/.exec(record[4]!);
      if (line.startsWith('rmgr: Tablespace') && created) {
        const t = { lsn: record[2]!, previousLsn: record[3]!, oid: created[1]!, location: created[2]! };
        if (replayed(t)) found.push(t);
      } else if (stop && line.startsWith(`rmgr: ${stop.rmgr} `) && stop.test({ xid: record[1]!, lsn: parseLsn(record[2]!), desc: record[4]! })) {
        stopped = true;
      } else if (line.startsWith('rmgr: Transaction ')) {
        const at = committedAt(record[4]!, 'COMMIT');
        if (at !== undefined) lastCommit = { xid: endedXid({ xid: record[1]!, lsn: parseLsn(record[2]!), desc: record[4]! }), lsn: record[2]!, time: isoMicros(at) };
      }
    }
    if (!(await ended) || !read) return undefined;
    if (stopped) break;
  }
  return { tablespaces: found, ...(stop ? { stopFound: stopped, ...(lastCommit ? { lastCommit } : {}) } : {}) };
}

/** Microseconds since the epoch as ISO 8601 with all six digits. */
function isoMicros(us: bigint): string {
  return new Date(Number(us / 1000n)).toISOString().replace(/\.\d{3}Z$/, `.${(us % 1000000n).toString().padStart(6, '0')}Z`);
}

/**
 * The tablespaces among `created` whose folder exists on this machine: replaying their CREATE
 * TABLESPACE would write into it (on the primary's machine, the primary's own tablespace). A relative
 * location is an in-place tablespace, inside the data directory being recovered.
 */
export async function tablespacesInTheWay(created: readonly TablespaceCreation[]): Promise<TablespaceCreation[]> {
  const exists = await Promise.all(created.map((t) => (path.isAbsolute(t.location) ? access(t.location).then(() => true, () => false) : false)));
  return created.filter((_, i) => exists[i]);
}
