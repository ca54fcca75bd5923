import type { LogFile } from '@strata/core';
import { connect, parseTarget } from './pg-connection.js';
import { clusterUrl } from './pg-physical-engine.js';
import { parseWalName, walFileName } from './pg-wal.js';

/**
 * How far the WAL archive is behind the server (`strata health`): the server's current write
 * position (a standby's received one) against the end of the newest archived segment, or of what
 * a partial of the segment in progress holds.
 */
export interface WalArchiveLag {
  /** The server's position (`0/3000060`). */
  readonly serverLsn: string;
  /** Where the archive ends (`0/3000000`), or undefined when it holds no segment. */
  readonly archivedLsn?: string;
  /** The newest archived segment (or partial) the end was taken from. */
  readonly archivedFile?: string;
  /** Bytes the server wrote past the archive's end. */
  readonly bytesBehind: number;
  /** Segments the server completed that are not archived (the one being written not counted). */
  readonly segmentsBehind: number;
  readonly segmentBytes: number;
}

function formatLsn(position: bigint): string {
  return `${(position >> 32n).toString(16).toUpperCase()}/${(position & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** The end of what the archive holds on the server's timeline and before it: a segment's end, or its partial's received bytes. */
export function archivedEnd(files: readonly LogFile[], timeline: number, segmentBytes: number): { position: bigint; file: string } | undefined {
  let best: { position: bigint; file: string } | undefined;
  for (const file of files) {
    const w = parseWalName(file.name, segmentBytes);
    if (!w || w.timeline > timeline) continue;
    const start = w.segno * BigInt(segmentBytes);
    const position = file.partial ? start + BigInt(file.partial.receivedBytes) : start + BigInt(segmentBytes);
    if (!best || position > best.position) best = { position, file: walFileName(w.timeline, w.segno, segmentBytes) + (file.partial ? ' (partial)' : '') };
  }
  return best;
}

/** Asks the cluster where its WAL stands and compares with the archive's files (throws CONNECTION_FAILED and the like when unreachable). */
export async function walArchiveLag(locator: string, files: readonly LogFile[]): Promise<WalArchiveLag> {
  const client = await connect(parseTarget(clusterUrl(locator)), 'strata health');
  let row: { lsn: string; segment: string; timeline: number };
  try {
    row = (
      await client.query<{ lsn: string; segment: string; timeline: number }>(
        `SELECT (CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) ELSE pg_current_wal_lsn() END)::text AS lsn,
                (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') AS segment,
                (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline`,
      )
    ).rows[0]!;
  } finally {
    await client.end().catch(() => undefined);
  }
  const segmentBytes = Number(row.segment);
  const [hi, lo] = row.lsn.split('/');
  const server = (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
  const end = archivedEnd(files, Number(row.timeline), segmentBytes);
  const archived = end?.position ?? 0n;
  const behind = server > archived ? server - archived : 0n;
  const seg = BigInt(segmentBytes);
  const segmentsBehind = server / seg > archived / seg ? Number(server / seg - archived / seg) : 0;
  return {
    serverLsn: row.lsn,
    ...(end ? { archivedLsn: formatLsn(end.position), archivedFile: end.file } : {}),
    bytesBehind: Number(behind),
    segmentsBehind,
    segmentBytes,
  };
}
