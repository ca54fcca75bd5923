import { StrataError } from '@strata/core';

/**
 * Write-ahead log names and positions. A segment is named by its timeline and number
 * (`TTTTTTTTXXXXXXXXYYYYYYYY`, 8 hex digits each, the number split in "log id" and segment
 * within it), so which segments a recovery needs, and which are missing, follows from names alone.
 */

/** `0/2000028` → the position as a number of bytes. */
export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn.trim());
  if (!m) throw new StrataError('USAGE', `${JSON.stringify(lsn)} is not a WAL position (LSN) such as 0/3000060`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** The number of the segment holding `lsn`. */
export function segmentOf(lsn: string, segmentBytes: number): bigint {
  return parseLsn(lsn) / BigInt(segmentBytes);
}

const hex8 = (n: bigint | number): string => n.toString(16).toUpperCase().padStart(8, '0');

/** The file name of segment `segno` on `timeline`. */
export function walFileName(timeline: number, segno: bigint, segmentBytes: number): string {
  const perId = 0x100000000n / BigInt(segmentBytes);
  return `${hex8(timeline)}${hex8(segno / perId)}${hex8(segno % perId)}`;
}

/** A segment file's timeline and number, or undefined for other names (history, backup, partial files). */
export function parseWalName(name: string, segmentBytes: number): { timeline: number; segno: bigint } | undefined {
  const m = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/.exec(name);
  if (!m) return undefined;
  const perId = 0x100000000n / BigInt(segmentBytes);
  return { timeline: parseInt(m[1]!, 16), segno: BigInt(`0x${m[2]}`) * perId + BigInt(`0x${m[3]}`) };
}

/** What a walk along the archived segments of a timeline found. */
export interface WalRun {
  /** Segment names from the first to the last looked at, present ones only. */
  readonly present: readonly string[];
  /** Names of segments that should be there and are not. */
  readonly missing: readonly string[];
  /** The last segment number the archive holds on the timeline (undefined when none after `from`). */
  readonly last: bigint | undefined;
}

/**
 * The segments of `timeline` from `from` up to `to` (inclusive; default: the newest one archived
 * on that timeline), and which of them are missing.
 */
export function walRun(names: Iterable<string>, timeline: number, from: bigint, segmentBytes: number, to?: bigint): WalRun {
  const have = new Set<bigint>();
  let last: bigint | undefined;
  for (const name of names) {
    const w = parseWalName(name, segmentBytes);
    if (!w || w.timeline !== timeline || w.segno < from) continue;
    have.add(w.segno);
    if (last === undefined || w.segno > last) last = w.segno;
  }
  const end = to ?? last;
  const present: string[] = [];
  const missing: string[] = [];
  if (end !== undefined) {
    for (let s = from; s <= end; s++) (have.has(s) ? present : missing).push(walFileName(timeline, s, segmentBytes));
  }
  return { present, missing, last };
}
