import { StrataError } from '@strata/core';
import type { LogFileCheck } from '@strata/core';
import { parseWalName } from './pg-wal.js';

/**
 * What a WAL segment says of itself in its first page's long header, checked before the file is
 * archived under a segment's name. The archive refuses a second, different file under a name it
 * holds (a push must never replace what a recovery replays), so a wrong file accepted once (a
 * truncated copy, a stray file, another cluster's segment) would make the server's real segment
 * of that name fail on every retry: archiving stuck, pg_wal filling the disk, and a recovery
 * stopping at that name. Refusing the wrong file instead leaves the name free for the real one.
 *
 * The long header (XLogLongPageHeaderData in PostgreSQL's src/include/access/xlog_internal.h,
 * unchanged since 9.x; checked against a PostgreSQL 15 segment and pg_controldata):
 *
 *   0  xlp_magic        uint16 (WAL format version: differs per major, so not checked)
 *   2  xlp_info         uint16 (XLP_LONG_HEADER = 0x0002 on a segment's first page)
 *   4  xlp_tli          uint32 (the timeline of the first record on the page)
 *   8  xlp_pageaddr     uint64 (the WAL position of the page: segment number × segment size)
 *  16  xlp_rem_len      uint32, then 4 bytes of padding (the short header is MAXALIGNed to 24)
 *  24  xlp_sysid        uint64 (pg_control's system identifier)
 *  32  xlp_seg_size     uint32 (wal_segment_size)
 *  36  xlp_xlog_blcksz  uint32 (XLOG_BLCKSZ)
 *
 * in the server's own byte order. Only these 40 bytes and the file's length are looked at: the
 * check costs nothing beside compressing the segment.
 */

export const WAL_LONG_HEADER_BYTES = 40;
const XLP_LONG_HEADER = 0x0002;
const MIB = 1024 * 1024;

/** A segment's first page header, as read. */
export interface WalLongHeader {
  readonly info: number;
  readonly timeline: number;
  readonly pageAddress: bigint;
  /** pg_control's system identifier, in decimal (as pg_control_system() gives it). */
  readonly systemIdentifier: string;
  readonly segmentBytes: number;
  readonly blockBytes: number;
}

const powerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
const validSegmentSize = (n: number): boolean => powerOfTwo(n) && n >= MIB && n <= 1024 * MIB;

/**
 * The long header at the start of `bytes`, or undefined when there is none (too short, the long
 * header flag not set, or a segment size PostgreSQL never writes). Read little-endian, then
 * big-endian: the byte order is the server's, and only one of them gives a valid segment size.
 */
export function readWalLongHeader(bytes: Uint8Array): WalLongHeader | undefined {
  if (bytes.length < WAL_LONG_HEADER_BYTES) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, WAL_LONG_HEADER_BYTES);
  for (const little of [true, false]) {
    const info = view.getUint16(2, little);
    const segmentBytes = view.getUint32(32, little);
    if ((info & XLP_LONG_HEADER) === 0 || !validSegmentSize(segmentBytes)) continue;
    return {
      info,
      timeline: view.getUint32(4, little),
      pageAddress: view.getBigUint64(8, little),
      systemIdentifier: view.getBigUint64(24, little).toString(),
      segmentBytes,
      blockBytes: view.getUint32(36, little),
    };
  }
  return undefined;
}

const mib = (n: number): string => (n % MIB === 0 ? `${n / MIB} MiB` : `${n} bytes`);

/**
 * The segment name a file is archived under, when the name is one (`TTTTTTTTLLLLLLLLSSSSSSSS`,
 * or the same with `.partial`: the old timeline's last segment PostgreSQL archives at a
 * promotion, a whole segment file whose first page is written); undefined for history files,
 * backup labels and other names, which have no such header.
 */
export function segmentNameOf(name: string): string | undefined {
  const m = /^([0-9A-F]{24})(?:\.partial)?$/.exec(name);
  return m ? m[1] : undefined;
}

/**
 * What is wrong with `bytes` as the WAL segment `name` (a segment's name, see segmentNameOf), in
 * words naming the file; undefined when it is one: its first page has a long header, its length
 * is the segment size that header declares, its page address is where that name's segment starts,
 * and its timeline is not after the name's (the first segment of a new timeline begins with the
 * old timeline's pages, so it may be before).
 */
export function walSegmentProblem(name: string, bytes: Uint8Array): string | undefined {
  const segment = segmentNameOf(name);
  if (!segment) return undefined;
  const header = readWalLongHeader(bytes);
  if (!header) {
    return bytes.length < WAL_LONG_HEADER_BYTES
      ? `${name} is ${bytes.length} bytes, not a WAL segment (too short for even its first page header)`
      : `${name} is not a WAL segment: its ${bytes.length} bytes do not begin with a WAL page's long header`;
  }
  if (bytes.length !== header.segmentBytes) return `${name} is ${bytes.length} bytes, not a ${mib(header.segmentBytes)} WAL segment as its first page declares (a truncated or padded copy)`;
  const parsed = parseWalName(segment, header.segmentBytes)!;
  const perLogId = 0x100000000 / header.segmentBytes;
  if (parseInt(segment.slice(16), 16) >= perLogId) return `${name} is not a WAL segment name for ${mib(header.segmentBytes)} segments (its last 8 digits go up to ${(perLogId - 1).toString(16).toUpperCase()})`;
  const expected = parsed.segno * BigInt(header.segmentBytes);
  if (header.pageAddress !== expected) {
    const holds = header.pageAddress % BigInt(header.segmentBytes) === 0n ? `segment ${(header.pageAddress / BigInt(header.segmentBytes)).toString(16).toUpperCase()}'s` : 'another';
    return `${name} holds the WAL of ${lsnText(header.pageAddress)} (${holds}), not of ${lsnText(expected)} where the segment of that name starts: a segment renamed or copied under another name`;
  }
  if (header.timeline === 0 || header.timeline > parsed.timeline) return `${name} is a segment of timeline ${header.timeline}, after the timeline ${parsed.timeline} its name gives`;
  return undefined;
}

function lsnText(position: bigint): string {
  return `${(position >> 32n).toString(16).toUpperCase()}/${(position & 0xffffffffn).toString(16).toUpperCase()}`;
}

/**
 * What is wrong with a file archived under a name that is not a segment's: PostgreSQL archives
 * only timeline histories (`00000002.history`: lines of a timeline, the position it ended at and
 * why) and backup history files (`…​.00000028.backup`, starting "START WAL LOCATION:"). Anything
 * else is a stray file given to wal-push by hand or by a wrong archive_command.
 */
export function archiveFileProblem(name: string, bytes: Uint8Array): string | undefined {
  const text = Buffer.from(bytes).toString('utf8');
  if (/^[0-9A-F]{8}\.history$/.test(name)) {
    const lines = text.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('#'));
    if (lines.length === 0 || !lines.every((line) => /^\d+\t[0-9A-F]{1,8}\/[0-9A-F]{1,8}\t/.test(line))) {
      return `${name} is not a timeline history file (each line is a timeline, the WAL position where it ended, and why)`;
    }
    return undefined;
  }
  if (/^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/.test(name)) {
    return text.startsWith('START WAL LOCATION: ') ? undefined : `${name} is not a backup history file (it starts "START WAL LOCATION:")`;
  }
  return `${JSON.stringify(name)} is not a file PostgreSQL archives (a WAL segment, its .partial, a timeline history or a backup history file)`;
}

/**
 * The check the log archive runs on a file before storing it (core's LogFileCheck): a segment's
 * name must hold that segment (walSegmentProblem), of the cluster whose segments the archive
 * already holds (compared with one of them, when it holds any: its system identifier, from the
 * same 40 bytes). Other names (history files, backup labels) pass: nothing in them says which
 * cluster wrote them. A refusal is DATABASE_INVALID (not a segment) or LOG_CONFLICT (another
 * cluster's), both a failed archive_command, so the server keeps the file and tries again.
 */
export const walFileCheck: LogFileCheck = async ({ database, name, bytes }, peer) => {
  if (!segmentNameOf(name)) {
    const problem = archiveFileProblem(name, bytes);
    if (problem) throw new StrataError('DATABASE_INVALID', `WAL archive of ${database}: ${problem}; it was not archived`, { details: { database, name } });
    return;
  }
  const problem = walSegmentProblem(name, bytes);
  if (problem) throw new StrataError('DATABASE_INVALID', `WAL archive of ${database}: ${problem}; it was not archived`, { details: { database, name } });
  const own = readWalLongHeader(bytes)!;
  // Any other segment of the archive says which cluster it holds; one whose header does not read
  // (stored before this check existed) proves nothing either way.
  const other = await peer((n) => segmentNameOf(n) !== undefined && segmentNameOf(n) !== segmentNameOf(name), WAL_LONG_HEADER_BYTES);
  const theirs = other ? readWalLongHeader(other.head) : undefined;
  if (theirs && theirs.systemIdentifier !== own.systemIdentifier) {
    throw new StrataError(
      'LOG_CONFLICT',
      `WAL archive of ${database}: ${name} belongs to another cluster (system identifier ${own.systemIdentifier}; the archive of ${database} holds cluster ${theirs.systemIdentifier}'s, e.g. ${other!.name}); it was not archived. Is another server archiving under the name ${database}, or was the cluster re-created (initdb)? Archive it under a new --db name`,
      { details: { database, name } },
    );
  }
};
