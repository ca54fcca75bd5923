import * as fs from 'node:fs';

/**
 * The wal-index header in a WAL database's -shm file: how far SQLite's connections agree the log
 * is committed. Both continuous capture (wal-capture.ts) and its commit clock (commit-clock.ts)
 * read it, the clock from a thread of its own.
 */

const SHM_HEADER_BYTES = 48;

/** The wal-index header: what SQLite's connections agree is committed. */
export interface IndexHeader {
  readonly maxFrame: number;
  readonly salt: readonly [number, number];
  readonly frameChecksum: readonly [number, number];
  readonly bigEndianChecksums: boolean;
}

/**
 * Reads the wal-index header from the -shm file, through the one descriptor a feed keeps open for
 * as long as its connections are (descriptors are the process's, so the clock's thread reads
 * through the same one): SQLite's locks on -shm are POSIX record locks, which the kernel
 * drops for the whole process when it closes any descriptor of the file. Opening and closing -shm
 * for each read would silently release our read transaction's lock, and with it the guarantee
 * that the log is not recycled behind us. (The log file itself carries no locks.)
 *
 * Writers update its second copy, then its first; a reader that finds
 * the two equal has a consistent one (SQLite's own readers do the same).
 */
export function readIndexHeader(shm: number): IndexHeader | undefined {
  for (let attempt = 0; attempt < 50; attempt++) {
    const bytes = Buffer.alloc(2 * SHM_HEADER_BYTES);
    const bytesRead = fs.readSync(shm, bytes, 0, bytes.length, 0);
    if (bytesRead < bytes.length) return undefined;
    const first = bytes.subarray(0, SHM_HEADER_BYTES);
    if (!first.equals(bytes.subarray(SHM_HEADER_BYTES))) continue;
    // isInit: SQLite has built the index (a connection has opened the log).
    if (first[12] !== 1) return undefined;
    // The wal-index is in the machine's byte order; the salts are the log header's bytes as they are.
    return {
      maxFrame: first.readUInt32LE(16),
      frameChecksum: [first.readUInt32LE(24), first.readUInt32LE(28)],
      salt: [first.readUInt32BE(32), first.readUInt32BE(36)],
      bigEndianChecksums: first[13] === 1,
    };
  }
  return undefined;
}

