import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { StrataError, hasErrno, wrapError } from '@strata/core';
import type { CapturedTransaction, ChangeCapture, ChangeCaptureOptions, ChangeFeed, ChangePosition, ChangeRead, ChangeReadOptions, Snapshot, SnapshotOptions } from '@strata/core';
import { openDatabase } from './driver.js';
import { CLOCK_READ_MS, ClockTap } from './commit-clock.js';
import { type IndexHeader, readIndexHeader } from './wal-index.js';
import { CheckpointLockHold, releaseCapture, reserveCapture } from './checkpoint-lock.js';
import { checkIsSqliteFile, filePath, snapshotThrough, sqliteError, strataCommand } from './sqlite-engine.js';

/**
 * Continuous capture of a SQLite database in WAL mode: the frames of each committed transaction,
 * read from the write-ahead log as other processes write it.
 *
 * The write-ahead log (https://www.sqlite.org/fileformat2.html#walformat) is a 32-byte header and
 * frames of a 24-byte header plus one page; a frame whose header carries a database size ends a
 * transaction. Every frame's header holds the log's two salts and a checksum that runs over every
 * frame of the log so far. A checkpoint copies frames into the database file; once all are copied,
 * the next writer restarts the log from its start with new salts, overwriting frames.
 *
 * The danger is a restart that overwrites frames we have not read. Capture makes that impossible
 * rather than trying to notice it afterwards (a restart leaves no trace of the frames it overwrote):
 *
 * - It holds a read transaction (connection R) at all times. SQLite never checkpoints frames past
 *   the end a reader's snapshot includes (a reader of the database file alone keeps it from
 *   checkpointing at all), and never restarts the log while a reader's snapshot includes frames;
 *   so no frame written after R began is overwritten while R holds, and at most one restart can
 *   happen, only if every frame present when R began was already checkpointed.
 * - R is only ever started while capture holds the write lock (connection W, BEGIN IMMEDIATE) and
 *   has read the log to its end: then no frame can be appended between that read and R's start.
 *   Every `maintain()` does this: takes the write lock, reads to the end, lets go of R, starts R
 *   again, lets go of the lock. For the log to restart, a passive checkpoint (connection C) must
 *   copy every frame while R is let go; the lock is held for only the last of that copying (see
 *   maintain()), since the application's writers wait for as long as capture holds it.
 * - So a restart (new salts) is accepted once per R; a second one, or a log that does not
 *   continue where capture stopped, is "lost" and the caller takes a new snapshot.
 *
 * The end of what is committed is read from the wal-index header in the -shm file (maxFrame,
 * salts, the last frame's checksum; the format of the same page), never from how far the file's
 * frames happen to chain: frames past it may belong to a transaction still being written or rolled
 * back. Capture never writes to the database (C's checkpoint writes pages that are already
 * committed, as any connection's automatic checkpoint would).
 *
 * A position is `{ salt: [s1, s2], frame, checksum: [c1, c2] | null, pageSize }`: the log's salts,
 * how many of its frames are read, and the running checksum after the last of them (null for
 * frame 0 of a log whose header is not written yet).
 */

const WAL_HEADER_BYTES = 32;
const FRAME_HEADER_BYTES = 24;
const WAL_MAGIC = 0x377f0682;
/** How long maintain() waits for the write lock before leaving it for the next time. */
const MAINTAIN_LOCK_WAIT_MS = 200;
/**
 * maintain() checkpoints, so that the log can restart, once it holds this many frames (16 MiB of
 * 4 KiB pages). While capture holds its reader nobody else's checkpoint can restart the log.
 */
const CHECKPOINT_FRAMES = 4000;
/** How many frames one read of the log takes at most. */
const FRAMES_PER_READ = 256;
/**
 * maintain() reads under the write lock only what was committed since the last read; when that is
 * more than this (a VACUUM just committed, say), it lets go of the lock at once and leaves the log
 * to the next unlocked read, so the application's writers never wait on a long read.
 */
const MAINTAIN_MAX_UNREAD_BYTES = 4 * 1024 * 1024;
/**
 * The last turn of a maintain() checkpoints under the write lock the frames appended since the
 * turn before; it is taken once they are at most this many bytes (the copy, and the fsyncs a
 * checkpoint makes, are what the application's writers wait for).
 */
const MAINTAIN_CHECKPOINT_BYTES = 1024 * 1024;
/** How many turns under the lock one maintain() takes at most (see maintain()). */
const MAINTAIN_TURNS = 4;
/** How long the last turn of maintain() waits for another connection's checkpoint to end (see #checkpoint). */
const MAINTAIN_CHECKPOINT_WAIT_MS = 100;
/** How long a capture waits to claim its database (see CheckpointLockHold.claim). */
const CLAIM_WAIT_MS = 30_000;
/** How many times #lock tries the write lock back to back before it pauses between tries. */
const LOCK_SPIN_TRIES = 200;
/** What a synchronous pause of a millisecond waits on (Atomics.wait; nothing ever wakes it). */
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

interface WalPosition {
  readonly salt: readonly [number, number];
  readonly frame: number;
  readonly checksum: readonly [number, number] | null;
  readonly pageSize: number;
}

/**
 * One reading of how far the log was committed (the wal-index header's maxFrame under its salts):
 * `firstAfter`, the end of the first reading that found it there (so every frame up to it was
 * committed by then), and `lastBefore`, the start of the last reading that found it there (so
 * every commit before that moment is at or before it).
 */
interface ClockReading {
  readonly salt: readonly [number, number];
  readonly maxFrame: number;
  readonly firstAfter: number;
  lastBefore: number;
}

/**
 * Readings kept at most (a replicator holding its memory bound reads the clock every poll for as
 * long as its storage is slow): past it every other old one goes. Fewer readings only make the
 * times they give less exact, never wrong: a later reading gives a later `observedAt`, an earlier
 * one an earlier `scannedAt`.
 */
const CLOCK_READINGS = 4096;

function toPosition(p: WalPosition): ChangePosition {
  return { log: 'sqlite-wal', salt: [...p.salt], frame: p.frame, checksum: p.checksum ? [...p.checksum] : null, pageSize: p.pageSize };
}

function fromPosition(p: ChangePosition | undefined): WalPosition | undefined {
  if (!p || p['log'] !== 'sqlite-wal') return undefined;
  const salt = p['salt'];
  const checksum = p['checksum'];
  const pair = (v: unknown): v is [number, number] => Array.isArray(v) && v.length === 2 && v.every((n) => Number.isSafeInteger(n));
  if (!pair(salt) || !(checksum === null || pair(checksum)) || !Number.isSafeInteger(p['frame']) || !Number.isSafeInteger(p['pageSize'])) return undefined;
  return { salt, frame: p['frame'] as number, checksum, pageSize: p['pageSize'] as number };
}

/** Whether this machine stores 32-bit words least significant byte first (as SQLite's little-endian checksums read them). */
const NATIVE_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * SQLite's WAL checksum: two running 32-bit sums over the data as 32-bit words. It runs over every
 * byte capture ships, so it was the replicator's largest cost; over words in the machine's own
 * order (the usual case: SQLite picks the writer's byte order) it reads them through a typed array
 * and adds in 32-bit integers, several times faster than decoding each word from the buffer.
 */
export function walChecksum(data: Buffer, bigEndian: boolean, start: readonly [number, number]): [number, number] {
  return checksumRange(data, wordsOf(data, bigEndian), 0, data.length, bigEndian, start);
}

/** `data` as 32-bit words when the checksum can read them so (see walChecksum), else undefined. */
function wordsOf(data: Buffer, bigEndian: boolean): Int32Array | undefined {
  return bigEndian !== NATIVE_LITTLE_ENDIAN && data.byteOffset % 4 === 0 ? new Int32Array(data.buffer, data.byteOffset, data.length >>> 2) : undefined;
}

/**
 * walChecksum over data[from, to), with `words` from wordsOf(data) made once for a whole read:
 * a view or two per frame (tens of thousands a second) were a visible share of the garbage collector's work.
 */
function checksumRange(data: Buffer, words: Int32Array | undefined, from: number, to: number, bigEndian: boolean, start: readonly [number, number]): [number, number] {
  if ((to - from) % 8 !== 0 || from % 8 !== 0) throw new StrataError('INTERNAL', 'wal checksum over a range that is not in whole 8-byte steps');
  let s0 = start[0] | 0;
  let s1 = start[1] | 0;
  if (words) {
    for (let i = from >>> 2, end = to >>> 2; i < end; i += 2) {
      s0 = (s0 + words[i]! + s1) | 0;
      s1 = (s1 + words[i + 1]! + s0) | 0;
    }
    return [s0 >>> 0, s1 >>> 0];
  }
  for (let i = from; i < to; i += 8) {
    const a = bigEndian ? data.readInt32BE(i) : data.readInt32LE(i);
    const b = bigEndian ? data.readInt32BE(i + 4) : data.readInt32LE(i + 4);
    s0 = (s0 + a + s1) | 0;
    s1 = (s1 + b + s0) | 0;
  }
  return [s0 >>> 0, s1 >>> 0];
}

/**
 * Reads of the log and its index are synchronous: capture holds the database's write lock while it
 * reads the last frames (see maintain()), and an await there would let the event loop run whatever
 * else is queued (encrypting and uploading segments, merging them) while every writer of the
 * application waits. The reads are of the page cache and short; the checksums cost the same either way.
 */
function readAt(file: string, offset: number, length: number): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if (hasErrno(err, 'ENOENT')) return Buffer.alloc(0);
    throw wrapError(`read ${file}`, err);
  }
  try {
    // Only the bytes read are returned (and none of the rest is ever looked at).
    const buffer = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const bytesRead = fs.readSync(fd, buffer, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buffer.subarray(0, done);
  } finally {
    fs.closeSync(fd);
  }
}

interface LogHeader {
  readonly salt: readonly [number, number];
  readonly pageSize: number;
  readonly bigEndian: boolean;
  readonly checksum: readonly [number, number];
}

function readLogHeader(wal: string): LogHeader | undefined {
  const bytes = readAt(wal, 0, WAL_HEADER_BYTES);
  if (bytes.length < WAL_HEADER_BYTES) return undefined;
  const magic = bytes.readUInt32BE(0);
  if ((magic & 0xfffffffe) !== WAL_MAGIC) return undefined;
  const bigEndian = (magic & 1) === 1;
  const checksum = walChecksum(bytes.subarray(0, 24), bigEndian, [0, 0]);
  if (checksum[0] !== bytes.readUInt32BE(24) || checksum[1] !== bytes.readUInt32BE(28)) return undefined;
  return { salt: [bytes.readUInt32BE(16), bytes.readUInt32BE(20)], pageSize: bytes.readUInt32BE(8), bigEndian, checksum };
}

const isBusy = (err: unknown): boolean => /^SQLITE_(BUSY|LOCKED)/.test(String((err as { code?: unknown } | undefined)?.code ?? ''));

const sameSalt = (a: readonly [number, number], b: readonly [number, number]): boolean => a[0] === b[0] && a[1] === b[1];

/** Options for {@link WalCapture}. */
export interface WalCaptureOptions {
  /** How long to wait for the database's write lock when resuming or starting (default 5 s). */
  readonly busyTimeoutMs: number;
}

/** The SQLite engine's {@link ChangeCapture}. */
export class WalCapture implements ChangeCapture {
  readonly #options: WalCaptureOptions;

  constructor(options: WalCaptureOptions) {
    this.#options = options;
  }

  async open(locator: string, options: ChangeCaptureOptions): Promise<ChangeFeed> {
    // Through a symbolic link, the file it points to: SQLite names the -wal and -shm after it.
    const given = filePath(locator);
    const file = fs.existsSync(given) ? fs.realpathSync(given) : given;
    refuseReplacedLog(file);
    // Before any descriptor of the file is opened here: closing one drops every lock this process
    // holds on it, those of a capture already running in it included (see reserveCapture).
    const identity = fs.statSync(file, { throwIfNoEntry: false });
    let reservation = identity ? reserveCapture(identity) : undefined;
    if (identity && !reservation) throw claimRefused(file, 'this process');
    try {
      await checkIsSqliteFile(file);
    } catch (err) {
      if (reservation) releaseCapture(reservation);
      throw err;
    }
    // A file that appeared only since the first look.
    reservation ??= reserveCapture(fs.statSync(file));
    if (!reservation) throw claimRefused(file, 'this process');
    return WalFeed.open(file, options, this.#options.busyTimeoutMs, reservation);
  }

  join(changes: readonly Uint8Array[], at: ChangePosition): Uint8Array {
    const position = fromPosition(at);
    if (!position) throw new StrataError('ARTIFACT_CORRUPT', 'compact: the segments record no position of a SQLite log to read their frames by');
    return joinFrames(changes, FRAME_HEADER_BYTES + position.pageSize);
  }
}

class WalFeed implements ChangeFeed {
  readonly #file: string;
  readonly #reader: Database.Database;
  readonly #writer: Database.Database;
  readonly #checkpointer: Database.Database;
  /** The descriptor of the -shm file, open as long as the connections are (see readIndexHeader). */
  readonly #shm: number;
  #cursor: WalPosition;
  #bigEndian = false;
  /** A restart of the log is accepted once after each start of the read transaction (see above). */
  #restartAllowed = true;
  /** The database file opened (device and inode): one renamed over it or removed is not this one. */
  readonly #identity: { dev: number; ino: number };
  /**
   * The commit clock: readings of the log's committed end, oldest first, from the last one at or
   * before the cursor on (see observe()). SQLite's log records no commit times; a transaction's
   * times come from the readings around its commit frame, not from when its frames were read.
   */
  #clock: ClockReading[];
  /** The clock's readings taken on its own thread (see commit-clock.ts); undefined where it cannot run. */
  #tap: ClockTap | undefined;
  /** The latest start of a reading noted: one from the clock's thread that began before it is stale. */
  #notedBefore = 0;
  #snapshotting = false;
  #closed = false;
  /** Set when another file was renamed over the database: its log beside the new file is the old one's (see close). */
  #replaced = false;
  /** The thread maintain()'s long checkpoints run on (see checkpoint-worker.ts), started at the first. */
  #checkpointThread: { worker: Worker; next: number } | undefined;
  /** Set once that thread could not run: the checkpoints stay on this thread from then on. */
  #checkpointThreadFailed = false;
  /**
   * SQLite's checkpoint lock, held so that the application's connections leave checkpoints to us
   * (see checkpoint-lock.ts), unless they keep them (ChangeCaptureOptions.leaveCheckpoints).
   */
  readonly #checkpointLock: CheckpointLockHold;
  readonly resumed: boolean;
  readonly position: ChangePosition;
  readonly positionAt: number;

  private constructor(
    file: string,
    connections: { reader: Database.Database; writer: Database.Database; checkpointer: Database.Database; shm: number; hold: CheckpointLockHold },
    cursor: WalPosition,
    committedEnd: IndexHeader,
    resumed: boolean,
    identity: { dev: number; ino: number },
  ) {
    this.#file = file;
    this.#identity = identity;
    this.#shm = connections.shm;
    this.#reader = connections.reader;
    this.#writer = connections.writer;
    this.#checkpointer = connections.checkpointer;
    this.#checkpointLock = connections.hold;
    this.#cursor = cursor;
    this.resumed = resumed;
    this.position = toPosition(cursor);
    this.positionAt = Date.now();
    // Opened under the write lock: everything committed before now is at or before the log's
    // committed end. A resumed feed's cursor may be behind that end (what was committed while no
    // replicator ran): those transactions were committed by now, and before which moment
    // everything up to each of them was committed is not known (0: no such promise).
    const behind = sameSalt(committedEnd.salt, cursor.salt) && committedEnd.maxFrame > cursor.frame;
    this.#clock = [{ salt: cursor.salt, maxFrame: cursor.frame, firstAfter: this.positionAt, lastBefore: behind ? 0 : this.positionAt }];
    if (behind) this.#clock.push({ salt: committedEnd.salt, maxFrame: committedEnd.maxFrame, firstAfter: this.positionAt, lastBefore: this.positionAt });
  }

  /** Owns `reservation` (see reserveCapture): given up when the feed closes, or when it cannot open. */
  static async open(file: string, options: ChangeCaptureOptions, busyTimeoutMs: number, reservation: string): Promise<WalFeed> {
    const opened: Database.Database[] = [];
    let shm: number | undefined;
    let hold: CheckpointLockHold | undefined;
    const connect = (): Database.Database => {
      let db: Database.Database;
      try {
        db = openDatabase(file, { fileMustExist: true, timeout: busyTimeoutMs });
      } catch (err) {
        throw sqliteError(`replicate: open ${file}`, err);
      }
      opened.push(db);
      // Our connections never write, but a commit could still trigger a checkpoint of theirs.
      db.pragma('wal_autocheckpoint = 0');
      return db;
    };
    try {
      const writer = connect();
      const mode = String(writer.pragma('journal_mode', { simple: true })).toLowerCase();
      if (mode !== 'wal') {
        if (!options.switchMode) {
          throw new StrataError(
            'USAGE',
            `replicate: ${file} is in ${mode} journal mode; continuous protection reads SQLite's write-ahead log, so the database must be in WAL mode. Switch it once with \`sqlite3 ${file} 'PRAGMA journal_mode=WAL'\` (it stays so; applications keep working), or pass --switch-mode to let strata do it`,
          );
        }
        try {
          writer.pragma('journal_mode = WAL');
        } catch (err) {
          throw sqliteError(`replicate: switch ${file} to WAL mode`, err);
        }
        if (String(writer.pragma('journal_mode', { simple: true })).toLowerCase() !== 'wal') {
          throw new StrataError('DATABASE_LOCKED', `replicate: ${file} could not be switched to WAL mode (another connection holds it); stop its other users for a moment and try again`);
        }
      }
      const pageSize = writer.pragma('page_size', { simple: true }) as number;
      const reader = connect();
      const checkpointer = connect();
      // A read makes SQLite open the log's index, -shm, which a database just switched to WAL
      // mode does not have yet.
      try {
        writer.prepare('SELECT count(*) FROM sqlite_schema').get();
      } catch (err) {
        throw sqliteError(`replicate: read ${file}`, err);
      }
      // Opened while our connections are (see readIndexHeader), closed only after them, by the
      // hold. Read and write: the checkpoint lock is taken through it, exclusively.
      try {
        shm = fs.openSync(`${file}-shm`, 'r+');
      } catch (err) {
        if (!hasErrno(err, 'ENOENT')) throw err;
        throw new StrataError('DATABASE_INVALID', `replicate: ${file} has no ${file}-shm after a read; is it opened in exclusive locking mode by another program?`, { cause: err });
      }
      hold = new CheckpointLockHold(shm, reservation, { checkpoints: !options.leaveCheckpoints });
      // Before any transaction of ours: the claim waits on the thread pool, with nothing pinned.
      const claim = await hold.claim(CLAIM_WAIT_MS);
      if (claim !== 'claimed') throw claimRefused(file, claim);
      try {
        writer.exec('BEGIN IMMEDIATE');
      } catch (err) {
        throw sqliteError(`replicate: lock ${file}`, err);
      }
      // From here to ROLLBACK everything is synchronous: the application's writers wait meanwhile.
      let feed: WalFeed;
      try {
        const { dev, ino } = fs.statSync(file);
        // With the write lock nothing is appended: the index header is the committed end.
        const index = readIndexHeader(shm);
        if (!index) throw new StrataError('DATABASE_INVALID', `replicate: ${file}-shm holds no WAL index; is ${file} opened in exclusive locking mode by another program?`);
        const wanted = fromPosition(options.resume);
        let cursor: WalPosition | undefined;
        if (wanted && wanted.pageSize === pageSize && sameSalt(wanted.salt, index.salt) && wanted.frame <= index.maxFrame) {
          cursor = continuesAt(`${file}-wal`, wanted, pageSize);
        }
        const resumed = cursor !== undefined;
        cursor ??= endOf(`${file}-wal`, index, pageSize);
        // The read transaction starts while the lock holds: it pins everything after `cursor`.
        reader.exec('BEGIN');
        reader.prepare('SELECT count(*) FROM sqlite_schema').get();
        feed = new WalFeed(file, { reader, writer, checkpointer, shm, hold }, cursor, index, resumed, { dev, ino });
        // maintain() tries the write lock briefly and tries again later: a checkpoint that waits
        // for our reader holds that lock meanwhile, and waiting on each other helps nobody.
        // It tries itself (see #lock), so SQLite's own wait is off.
        writer.pragma('busy_timeout = 0');
        feed.#bigEndian = index.bigEndianChecksums;
      } finally {
        writer.exec('ROLLBACK');
      }
      // Only once nothing can fail: a failed open closes the descriptor, which the clock's
      // thread must not be reading then.
      feed.#tap = ClockTap.open(shm);
      feed.#checkpointLock.take();
      return feed;
    } catch (err) {
      for (const db of opened) db.close();
      // The error that stopped the open is the one to report, not one of this cleanup.
      if (hold) await hold.close(false).catch(() => undefined);
      else {
        if (shm !== undefined) fs.closeSync(shm);
        releaseCapture(reservation);
      }
      throw err instanceof StrataError ? err : wrapError(`replicate ${file}`, err);
    }
  }

  async read(options: ChangeReadOptions = {}): Promise<ChangeRead> {
    if (this.#closed) throw new StrataError('INTERNAL', 'replicate: read after close');
    return this.#read(options.maxBytes);
  }

  /**
   * Reads the log's committed end and notes it on the commit clock, without reading any frame.
   * The replicator calls it while it reads nothing (its memory bound reached, a large transaction
   * being shipped): the transactions committed meanwhile, read later, still carry the moment they
   * were committed by, so a restore to a moment after it includes them.
   */
  observe(): void {
    if (this.#closed) return;
    this.#drainClock();
    const before = Date.now();
    const index = readIndexHeader(this.#shm);
    if (index) this.#note(index.salt, index.maxFrame, before, Date.now());
    // While the replicator holds its memory bound nothing else reads the log, and for as long as
    // storage fails the checkpoint lock stays ours.
    else this.#rebuildIndex();
  }

  /**
   * Notes the readings the clock's thread took since the last time, before a reading of this
   * thread's own, so they are noted about in the order they were taken; one that began before the
   * latest noted is left out. Order is not what makes them right: each reading alone is true (the
   * log was committed to its maxFrame by its end, and not past it at its start), so a reading
   * that overlapped another and saw less only makes times less exact.
   */
  #drainClock(): void {
    if (!this.#tap) return;
    for (const sample of this.#tap.drain()) {
      if (sample.before >= this.#notedBefore) this.#note(sample.salt, sample.maxFrame, sample.before, sample.after);
    }
  }

  #note(salt: readonly [number, number], maxFrame: number, before: number, after: number): void {
    this.#notedBefore = Math.max(this.#notedBefore, before);
    const last = this.#clock.at(-1);
    if (last && last.maxFrame === maxFrame && sameSalt(last.salt, salt)) {
      last.lastBefore = Math.max(last.lastBefore, before);
      return;
    }
    // A clock stepped back must not give a later commit an earlier time than an earlier one's.
    this.#clock.push({ salt, maxFrame, firstAfter: Math.max(after, last?.firstAfter ?? after), lastBefore: before });
    if (this.#clock.length > CLOCK_READINGS) this.#clock = this.#clock.filter((_, i) => i === 0 || i >= CLOCK_READINGS / 2 || i % 2 === 1);
  }

  /**
   * A transaction's times by the clock: seen committed at the end of the first reading that
   * reached its commit frame; complete through the start of the last reading that had not gone
   * past it (the one before that first reading, or that reading itself when it ended there).
   */
  #timesOf(salt: readonly [number, number], frame: number, from: { k: number }): { observedAt: number; scannedAt: number } {
    // The transactions of a read come in log order, so the search goes on from the last one's reading.
    let k = from.k;
    while (k < this.#clock.length && !(sameSalt(this.#clock[k]!.salt, salt) && this.#clock[k]!.maxFrame >= frame)) k++;
    from.k = k;
    // Never: every read notes the reading it reads up to. Now is a true (if late) answer.
    if (k >= this.#clock.length) return { observedAt: Date.now(), scannedAt: 0 };
    const reading = this.#clock[k]!;
    const before = reading.maxFrame === frame ? reading.lastBefore : (this.#clock[k - 1]?.lastBefore ?? 0);
    return { observedAt: reading.firstAfter, scannedAt: Math.min(before, reading.firstAfter) };
  }

  /** Drops the readings no transaction still to be read needs: all before the last one at or before the cursor. */
  #forgetReadings(): void {
    let keepFrom = 0;
    for (let i = 0; i < this.#clock.length; i++) {
      const r = this.#clock[i]!;
      if (!sameSalt(r.salt, this.#cursor.salt) || r.maxFrame <= this.#cursor.frame) keepFrom = i;
      else break;
    }
    if (keepFrom > 0) this.#clock = this.#clock.slice(keepFrom);
  }

  /** Reads what was committed after the cursor (up to about `maxBytes`); synchronous (see readAt). */
  #read(maxBytes?: number): ChangeRead {
    // Our connections keep reading the file they opened: one moved over it, or its removal, would
    // otherwise leave capture shipping nothing while the application writes elsewhere.
    const now = fs.statSync(this.#file, { throwIfNoEntry: false });
    if (!now) return { transactions: [], lost: `${this.#file} was removed while strata replicated it` };
    if (now.ino !== this.#identity.ino || now.dev !== this.#identity.dev) {
      this.#replaced = true;
      return { transactions: [], lost: `${this.#file} was replaced by another file (one renamed over it) while strata replicated it` };
    }
    this.#drainClock();
    const before = Date.now();
    const index = readIndexHeader(this.#shm);
    if (!index) {
      this.#rebuildIndex();
      return { transactions: [] };
    }
    this.#note(index.salt, index.maxFrame, before, Date.now());
    const wal = `${this.#file}-wal`;
    let cursor = this.#cursor;
    if (!sameSalt(index.salt, cursor.salt)) {
      if (!this.#restartAllowed) {
        return { transactions: [], lost: `the write-ahead log of ${this.#file} was restarted twice since strata last held it; it cannot prove no transaction was overwritten` };
      }
      // The restart SQLite allows while our read transaction holds: only frames we read were
      // overwritten. Frames of the new log count once its header is written.
      if (index.maxFrame === 0) return { transactions: [] };
      const header = readLogHeader(wal);
      if (!header || !sameSalt(header.salt, index.salt)) return { transactions: [] };
      if (header.pageSize !== cursor.pageSize) return { transactions: [], lost: `the page size of ${this.#file} changed` };
      this.#restartAllowed = false;
      this.#bigEndian = header.bigEndian;
      cursor = { salt: header.salt, frame: 0, checksum: header.checksum, pageSize: cursor.pageSize };
      this.#cursor = cursor;
    }
    if (index.maxFrame < cursor.frame) {
      return { transactions: [], lost: `the write-ahead log of ${this.#file} is shorter than what strata read of it, under the same salts` };
    }
    if (index.maxFrame === cursor.frame) return { transactions: [] };
    if (cursor.checksum === null) {
      // A log whose header was not written when the position was taken: it is now.
      const header = readLogHeader(wal);
      if (!header || !sameSalt(header.salt, cursor.salt)) return { transactions: [] };
      this.#bigEndian = header.bigEndian;
      cursor = { ...cursor, checksum: header.checksum };
    }
    const scanned = scanFrames(wal, cursor, index.maxFrame, this.#bigEndian, maxBytes);
    if ('lost' in scanned) return { transactions: [], lost: scanned.lost };
    this.#cursor = scanned.cursor;
    const more = scanned.cursor.frame < index.maxFrame;
    const transactions: CapturedTransaction[] = new Array(scanned.transactions.length);
    const search = { k: 0 };
    for (let i = 0; i < transactions.length; i++) {
      const t = scanned.transactions[i]!;
      transactions[i] = { bytes: t.bytes, position: t.position, ...this.#timesOf(cursor.salt, t.frame, search) };
    }
    this.#forgetReadings();
    return { transactions, ...(more ? { more: true } : {}) };
  }

  /**
   * Lets the log be recycled up to what was read. The read transaction pins the log, so it must
   * end and start again with nothing appended unread in between: that needs the write lock, which
   * the application's writers wait for. So under the lock capture only reads the frames committed
   * since its last read and restarts its read transaction, synchronously, with no await; and when
   * the log is long enough to checkpoint, it does so in turns: the read transaction restarts at
   * the log's end, the checkpoint copies everything up to there without the lock (the bulk of the
   * work), capture reads what was committed meanwhile without the lock too, and once what the last
   * checkpoint could not copy is short, a last turn reads the few frames committed since, copies
   * just those, and restarts the read transaction once more, now on a log SQLite may restart.
   * Against a writer that commits without pause the frames left after one checkpoint are too many
   * to copy under the lock; each further turn leaves fewer, up to MAINTAIN_TURNS of them.
   */
  async maintain(options: ChangeReadOptions = {}): Promise<ChangeRead> {
    if (this.#snapshotting || this.#closed) return { transactions: [] };
    // Taken again once an interval: a take that met another process's checkpoint failed, and our
    // own connections drop it unseen when one rebuilds a damaged index as it begins a transaction.
    this.#checkpointLock.take();
    const room = options.maxBytes ?? Number.POSITIVE_INFINITY;
    const transactions: CapturedTransaction[] = [];
    let taken = 0;
    const keep = (read: ChangeRead): void => {
      transactions.push(...read.transactions);
      taken += read.transactions.reduce((sum, t) => sum + t.bytes.byteLength, 0);
    };
    // While capture waits for the lock, a writer that never pauses appends more than is read under
    // it: that is read without the lock, and the lock tried again (the log was never recycled at
    // full speed otherwise).
    let first: ChangeRead | 'busy' | 'behind' = 'behind';
    for (let attempt = 0; attempt < MAINTAIN_TURNS && first === 'behind'; attempt++) {
      if (attempt > 0) {
        const caughtUp = this.#read(room - taken);
        keep(caughtUp);
        if (caughtUp.lost) return { transactions, lost: caughtUp.lost };
        if (caughtUp.more) return { transactions };
      }
      first = this.#restartReader(false);
    }
    if (typeof first === 'string') return { transactions };
    keep(first);
    if (first.lost) return { transactions, lost: first.lost };
    if (this.#cursor.frame < CHECKPOINT_FRAMES) return { transactions };
    const frameBytes = FRAME_HEADER_BYTES + this.#cursor.pageSize;
    for (let turn = 1; turn < MAINTAIN_TURNS; turn++) {
      // The reader's snapshot ends where the cursor is now: the checkpoint copies up to there.
      const mark = this.#cursor;
      await this.#checkpointElsewhere();
      // The read transaction is the snapshot's while one is taken; the feed closed meanwhile.
      if (this.#snapshotting || this.#closed) break;
      if (taken >= room) break;
      const caughtUp = this.#read(room - taken);
      transactions.push(...caughtUp.transactions);
      taken += caughtUp.transactions.reduce((sum, t) => sum + t.bytes.byteLength, 0);
      if (caughtUp.lost) return { transactions, lost: caughtUp.lost };
      if (caughtUp.more || !sameSalt(mark.salt, this.#cursor.salt)) break;
      const last = (this.#cursor.frame - mark.frame) * frameBytes <= MAINTAIN_CHECKPOINT_BYTES;
      const next = this.#restartReader(last);
      // Behind: what was appended while capture waited for the lock is caught up by the next turn.
      if (next === 'behind') continue;
      if (next === 'busy') break;
      keep(next);
      if (next.lost) return { transactions, lost: next.lost };
      if (last) break;
    }
    return { transactions };
  }

  /**
   * One turn under the write lock (see maintain()): reads to the log's end, restarts the read
   * transaction there, with a checkpoint in between when asked. 'busy' when the lock was not to
   * be had in time, 'behind' when the log holds too much unread to read under it.
   */
  #restartReader(checkpoint: boolean): ChangeRead | 'busy' | 'behind' {
    // A writer kept the lock: the log grows a little longer until the next attempt.
    if (!this.#lock()) return 'busy';
    try {
      const index = readIndexHeader(this.#shm);
      const frameBytes = FRAME_HEADER_BYTES + this.#cursor.pageSize;
      if (index && sameSalt(index.salt, this.#cursor.salt) && (index.maxFrame - this.#cursor.frame) * frameBytes > MAINTAIN_MAX_UNREAD_BYTES) return 'behind';
      const read = this.#read();
      if (read.lost) return read;
      this.#reader.exec('COMMIT');
      // A short log is left as it is: every restart is a moment where a replicator that crashes
      // before shipping the next transactions cannot continue its chain (the log no longer holds
      // its place) and must take a new base.
      if (checkpoint) this.#checkpoint(MAINTAIN_CHECKPOINT_WAIT_MS);
      this.#reader.exec('BEGIN');
      this.#reader.prepare('SELECT count(*) FROM sqlite_schema').get();
      this.#restartAllowed = true;
      return read;
    } finally {
      this.#writer.exec('ROLLBACK');
    }
  }

  /**
   * Takes the write lock within MAINTAIN_LOCK_WAIT_MS, trying again at once and then every
   * millisecond. SQLite's busy handler sleeps for up to 100 ms between its tries, and against a
   * writer that commits tens of thousands of times a second (holding the lock most of the time,
   * letting go for microseconds) it lost nearly every time: maintain() never ran and the log grew.
   */
  #lock(): boolean {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      try {
        this.#writer.exec('BEGIN IMMEDIATE');
        return true;
      } catch (err) {
        if (!isBusy(err) || Date.now() - started >= MAINTAIN_LOCK_WAIT_MS) return false;
      }
      if (attempt >= LOCK_SPIN_TRIES) Atomics.wait(PAUSE, 0, 0, 1);
    }
  }

  /**
   * A passive checkpoint; with `waitMs`, tried again until no other checkpoint is running. Where
   * the checkpoint lock is not held (see checkpoint-lock.ts: no addon, leaveCheckpoints, or another
   * process's checkpoint had it when we tried), the application's own automatic checkpoint runs after nearly
   * every commit of a writer that never pauses, and a passive checkpoint does not wait for it: the
   * last turn of maintain() found it running every time, so the log was never fully copied and
   * never restarted (it grew to GBs). Under the write lock that checkpoint is the application's
   * writer, which commits nothing until it ends, so waiting for it there holds nobody else up.
   * It ends by letting go of the checkpoint lock, which is taken again.
   */
  #checkpoint(waitMs = 0): void {
    // Where the lock can be held, no application's checkpoint runs to be waited for (one that had
    // it when we last tried ends soon, and the next maintain() checkpoints).
    const until = Date.now() + (this.#checkpointLock.available ? 0 : waitMs);
    for (;;) {
      let busy: boolean;
      try {
        const [result] = this.#checkpointer.pragma('wal_checkpoint(PASSIVE)') as { busy: number }[];
        busy = result?.busy !== 0;
      } catch {
        busy = true;
      }
      if (!busy || Date.now() >= until) break;
      Atomics.wait(PAUSE, 0, 0, 1);
    }
    this.#checkpointLock.dropped();
  }

  /**
   * The wal-index header is damaged (a writer killed while it wrote it): the first connection to
   * read rebuilds it, under the checkpoint lock. While we hold that lock no other process's
   * connection can, and each would retry for about ten seconds and then fail ("locking protocol"),
   * so one of ours reads now, which rebuilds it (the lock is this process's own).
   */
  #rebuildIndex(): void {
    // Under our own write lock the rebuild (which needs it) would wait on us; our BEGIN IMMEDIATE
    // has rebuilt a damaged index by then anyway.
    if (!this.#checkpointLock.held || this.#writer.inTransaction) return;
    try {
      this.#checkpointer.prepare('SELECT count(*) FROM sqlite_schema').get();
    } catch {
      // Still damaged after SQLite's own retries (about ten seconds, while the application's
      // writer holds the write lock): the next read tries again.
    }
    this.#checkpointLock.dropped();
  }

  /**
   * The passive checkpoint of a maintain() turn, without the write lock, on the checkpoint thread:
   * the replicator's thread goes on shipping meanwhile, and the commit clock keeps being read
   * (see observe()), so what the application commits during a long checkpoint keeps its time.
   * Where the thread cannot run, the checkpoint runs here, as it used to.
   */
  async #checkpointElsewhere(): Promise<void> {
    if (this.#checkpointThreadFailed) return this.#checkpoint();
    return this.#checkpointLock.around(() => this.#checkpointOnThread());
  }

  async #checkpointOnThread(): Promise<void> {
    if (!this.#checkpointThread) {
      let worker: Worker;
      try {
        worker = new Worker(new URL('./checkpoint-worker.js', import.meta.url), { workerData: { file: this.#file } });
      } catch {
        this.#checkpointThreadFailed = true;
        return this.#checkpoint();
      }
      worker.unref();
      // Its error reaches the checkpoint waiting on it as the exit that follows.
      worker.on('error', () => undefined);
      const thread = { worker, next: 0 };
      // A thread that ends between checkpoints is not asked again (the next one would wait forever).
      worker.once('exit', () => {
        if (this.#checkpointThread === thread) this.#checkpointThread = undefined;
      });
      this.#checkpointThread = thread;
    }
    const thread = this.#checkpointThread;
    const id = thread.next++;
    // Without the clock's thread (or with one that failed), this one reads the clock meanwhile.
    const clock = this.#tap?.live
      ? undefined
      : setInterval(() => {
          try {
            this.observe();
          } catch {
            // A reading missed: the next one, or the read after the checkpoint, gives later times.
          }
        }, CLOCK_READ_MS);
    try {
      const error = await new Promise<string | undefined>((resolve) => {
        const onMessage = (msg: { id: number; error?: string }): void => {
          if (msg.id !== id) return;
          done();
          resolve(msg.error);
        };
        const onExit = (): void => {
          done();
          resolve('the checkpoint thread stopped');
        };
        const done = (): void => {
          thread.worker.off('message', onMessage);
          thread.worker.off('exit', onExit);
          thread.worker.unref();
        };
        thread.worker.ref();
        thread.worker.on('message', onMessage);
        thread.worker.on('exit', onExit);
        thread.worker.postMessage(id);
      });
      if (error !== undefined) {
        // It failed once (it could not load, or its connection could not checkpoint): the
        // checkpoints run here from now on, as they did before there was a thread.
        this.#checkpointThreadFailed = true;
        if (this.#checkpointThread === thread) this.#checkpointThread = undefined;
        await thread.worker.terminate().catch(() => undefined);
        if (!this.#closed) this.#checkpoint();
      }
    } finally {
      if (clock) clearInterval(clock);
    }
  }

  /**
   * Joins each run of transactions seen committed at the same moment into one (see ChangeFeed.condense):
   * its frames are the newest frame of each page the run wrote. A writer of many small
   * transactions rewrites the same few pages in nearly every one (a table's last page, its
   * parent, the database header), so most frames of a read are superseded within it; every byte
   * kept is hashed, compressed, encrypted, stored and replayed, and at full speed that work was
   * most of the replicator's.
   */
  condense(transactions: readonly CapturedTransaction[]): CapturedTransaction[] {
    const frameBytes = FRAME_HEADER_BYTES + this.#cursor.pageSize;
    const condensed: CapturedTransaction[] = [];
    for (let i = 0; i < transactions.length; ) {
      const first = transactions[i]!;
      let end = i + 1;
      while (end < transactions.length && transactions[end]!.observedAt === first.observedAt) end++;
      condensed.push(end - i === 1 ? first : joinTransactions(transactions.slice(i, end), frameBytes));
      i = end;
    }
    return condensed;
  }

  async snapshot(options: SnapshotOptions): Promise<Snapshot> {
    this.#snapshotting = true;
    try {
      // The read transaction's own snapshot: the database exactly at `position`.
      return await snapshotThrough(this.#file, options, async (copy) => {
        let pages: number;
        let pageSize: number;
        try {
          pages = this.#reader.pragma('page_count', { simple: true }) as number;
          pageSize = this.#reader.pragma('page_size', { simple: true }) as number;
          await this.#reader.backup(copy, { progress: () => Number.MAX_SAFE_INTEGER });
        } catch (err) {
          throw sqliteError(`replicate: snapshot ${this.#file}`, err);
        }
        // As a backup's copy (sqlite-engine.ts): every page the read transaction sees, or none of it is the database.
        const copied = (await fsp.stat(copy)).size / pageSize;
        if (copied !== pages) throw new StrataError('INTERNAL', `replicate: snapshot ${this.#file}: the copy holds ${copied} of its ${pages} page(s); nothing was stored`);
      });
    } finally {
      this.#snapshotting = false;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#checkpointThread?.worker.terminate().catch(() => undefined);
    this.#checkpointThread = undefined;
    // Before the -shm descriptor closes: its number could be another file's next. A thread that
    // could not be stopped keeps it (left open: a descriptor, against reading the wrong file).
    let released = false;
    try {
      released = (await this.#tap?.close()) ?? true;
      for (const db of [this.#reader, this.#writer, this.#checkpointer]) {
        try {
          if (db.inTransaction) db.exec('ROLLBACK');
        } catch {
          // closing anyway
        }
        db.close();
      }
    } finally {
      // Closes the descriptor (a thread that could not be stopped keeps it: only the locks go),
      // and gives up the reservation, whatever failed above.
      await this.#checkpointLock.close(!released);
    }
    if (this.#replaced) REPLACED_LOGS.set(this.#file, this.#cursor.salt);
  }

}

/**
 * The databases another file was renamed over while a feed read them, with the salt of the log the
 * feed read last (see {@link refuseReplacedLog}).
 */
const REPLACED_LOGS = new Map<string, readonly [number, number]>();

/**
 * After another file was renamed over the database, the -wal beside it may still be the replaced
 * database's: a feed's read-only connections kept it when the application closed that database,
 * and SQLite replays a log into whatever database file it finds beside it, so opening the new file
 * (this replicate's new base first) would write the old database's pages into it. Whether it is
 * the old log or one that belongs with the new file (a copy of both put back) only the user can
 * tell, and removing it could lose transactions of either: so replicate stops, saying what to do.
 */
function refuseReplacedLog(file: string): void {
  const salt = REPLACED_LOGS.get(file);
  if (!salt) return;
  REPLACED_LOGS.delete(file);
  const header = readLogHeader(`${file}-wal`);
  if (!header || !sameSalt(header.salt, salt)) return;
  throw new StrataError(
    'DATABASE_INVALID',
    `replicate: ${file} was replaced by another file, and ${file}-wal beside it is still the write-ahead log of the replaced database (the one replicate read); SQLite would replay it into the new file. Stop the application, move ${file}-wal and ${file}-shm away (they hold the replaced database's last transactions; keep them if the new file came with them), then start replicate again, which takes a new base`,
  );
}

/** The position `wanted` if the log still holds it (the frame there carries its checksum), else undefined. */
function continuesAt(wal: string, wanted: WalPosition, pageSize: number): WalPosition | undefined {
  if (wanted.frame === 0) {
    // Taken while there was no log: since then the application may have written, checkpointed
    // and closed (SQLite then removes the log, and a new one starts with the same empty index), and
    // nothing here can tell. Only a new base is sure to hold what was written meanwhile.
    if (wanted.checksum === null) return undefined;
    const header = readLogHeader(wal);
    return header && sameSalt(header.salt, wanted.salt) && header.checksum[0] === wanted.checksum[0] && header.checksum[1] === wanted.checksum[1] ? wanted : undefined;
  }
  const frameBytes = FRAME_HEADER_BYTES + pageSize;
  const head = readAt(wal, WAL_HEADER_BYTES + (wanted.frame - 1) * frameBytes, FRAME_HEADER_BYTES);
  if (head.length < FRAME_HEADER_BYTES || !wanted.checksum) return undefined;
  const ok =
    head.readUInt32BE(8) === wanted.salt[0] &&
    head.readUInt32BE(12) === wanted.salt[1] &&
    head.readUInt32BE(16) === wanted.checksum[0] &&
    head.readUInt32BE(20) === wanted.checksum[1] &&
    head.readUInt32BE(4) !== 0;
  return ok ? wanted : undefined;
}

/** The committed end of the log as the index says. */
function endOf(wal: string, index: IndexHeader, pageSize: number): WalPosition {
  if (index.maxFrame > 0) return { salt: index.salt, frame: index.maxFrame, checksum: index.frameChecksum, pageSize };
  const header = readLogHeader(wal);
  const checksum = header && sameSalt(header.salt, index.salt) ? header.checksum : null;
  return { salt: index.salt, frame: 0, checksum, pageSize };
}

/** A transaction as read from the log: its frames, the position after it, and its commit frame's number. */
type ScannedTransaction = Omit<CapturedTransaction, 'observedAt' | 'scannedAt'> & { readonly frame: number };

/**
 * Reads frames after `cursor` up to `maxFrame` (committed, by the index), checking each frame's
 * salts and running checksum, and cuts them into transactions at commit frames. A transaction's
 * bytes are a view of the read they came from (copied only when a transaction spans two reads):
 * copying every byte of the log once more was a large share of the replicator's time. The views
 * keep their read (FRAMES_PER_READ frames) in memory until the last transaction of it is shipped.
 */
function scanFrames(
  wal: string,
  cursor: WalPosition,
  maxFrame: number,
  bigEndian: boolean,
  maxBytes = Number.POSITIVE_INFINITY,
): { cursor: WalPosition; transactions: ScannedTransaction[] } | { lost: string } {
  const frameBytes = FRAME_HEADER_BYTES + cursor.pageSize;
  const transactions: ScannedTransaction[] = [];
  let checksum = cursor.checksum!;
  let frame = cursor.frame;
  /** Frames of a transaction that began in an earlier read and has not ended yet. */
  let carried: Buffer[] = [];
  let committed = cursor;
  let taken = 0;
  while (frame < maxFrame && taken < maxBytes) {
    const count = Math.min(FRAMES_PER_READ, maxFrame - frame);
    const bytes = readAt(wal, WAL_HEADER_BYTES + frame * frameBytes, count * frameBytes);
    if (bytes.length < count * frameBytes) return { lost: `the write-ahead log ${wal} ends before its committed frame ${maxFrame}` };
    /** Where the transaction being read began in this read. */
    let start = 0;
    const words = wordsOf(bytes, bigEndian);
    for (let i = 0; i < count; i++) {
      const at = i * frameBytes;
      if (bytes.readUInt32BE(at + 8) !== cursor.salt[0] || bytes.readUInt32BE(at + 12) !== cursor.salt[1]) {
        return { lost: `frame ${frame + 1} of ${wal} belongs to another log (its salts differ)` };
      }
      checksum = checksumRange(bytes, words, at + FRAME_HEADER_BYTES, at + frameBytes, bigEndian, checksumRange(bytes, words, at, at + 8, bigEndian, checksum));
      if (checksum[0] !== bytes.readUInt32BE(at + 16) || checksum[1] !== bytes.readUInt32BE(at + 20)) {
        return { lost: `frame ${frame + 1} of ${wal} does not continue the log's checksum` };
      }
      frame++;
      if (bytes.readUInt32BE(at + 4) !== 0) {
        const end = (i + 1) * frameBytes;
        const own = bytes.subarray(start, end);
        const transaction = carried.length > 0 ? Buffer.concat([...carried, own]) : own;
        carried = [];
        start = end;
        committed = { salt: cursor.salt, frame, checksum, pageSize: cursor.pageSize };
        transactions.push({ bytes: transaction, position: toPosition(committed), frame });
        taken += transaction.length;
        // Enough for this read: the frames after stay in the log for the next one.
        if (taken >= maxBytes) return { cursor: committed, transactions };
      }
    }
    if (start < bytes.length) carried.push(bytes.subarray(start));
  }
  if (carried.length > 0) return { lost: `the committed end of ${wal} (frame ${maxFrame}) is not the end of a transaction` };
  return { cursor: committed, transactions };
}

/**
 * One transaction that leaves the database as the given ones, replayed in order, do: the newest
 * frame of each page, in log order. The last frame is the last transaction's commit frame (it is
 * the newest of its page) and carries the database's size after it; every other frame kept gets
 * 0 there, so the joined frames read as one transaction. Their checksums are SQLite's as written
 * and no longer chain (a replay never checks them; the segment's SHA-256 covers the bytes).
 */
function joinTransactions(group: readonly CapturedTransaction[], frameBytes: number): CapturedTransaction {
  const last = group.at(-1)!;
  const commits = group.reduce((sum, t) => sum + (t.commits ?? 1), 0);
  return { bytes: joinFrames(group.map((t) => t.bytes), frameBytes), position: last.position, observedAt: last.observedAt, scannedAt: last.scannedAt, commits };
}

/** The frames of joinTransactions(): the newest of each page, in log order, the last one the commit. */
function joinFrames(changes: readonly Uint8Array[], frameBytes: number): Buffer {
  const frames: Buffer[] = [];
  for (const change of changes) {
    const bytes = Buffer.from(change.buffer, change.byteOffset, change.byteLength);
    if (bytes.length % frameBytes !== 0) throw new StrataError('ARTIFACT_CORRUPT', `a transaction of ${bytes.length} bytes is not whole frames of ${frameBytes}`);
    for (let at = 0; at < bytes.length; at += frameBytes) frames.push(bytes.subarray(at, at + frameBytes));
  }
  const newest = new Map<number, number>();
  for (let k = 0; k < frames.length; k++) newest.set(frames[k]!.readUInt32BE(0), k);
  const kept = [...newest.values()].sort((a, b) => a - b);
  const joined = Buffer.allocUnsafe(kept.length * frameBytes);
  kept.forEach((k, n) => {
    frames[k]!.copy(joined, n * frameBytes);
    if (n < kept.length - 1) joined.writeUInt32BE(0, n * frameBytes + 4);
  });
  return joined;
}

/** Pages held by a replay before they are written: the newest version of each, up to this many bytes. */
const REPLAY_PAGE_BUDGET_BYTES = 64 * 1024 * 1024;

/**
 * Applies captured transactions (their WAL frames, concatenated) to a database file restored from
 * their base: each frame's page goes to its place, and the file takes the size the last commit
 * frame gives. This is what a checkpoint does, and like a checkpoint it writes only the newest
 * version of each page: a busy table's last page is rewritten by nearly every transaction, and
 * writing each version was most of a replay's time. Pages are held until the budget is reached,
 * then written in page order; a later version overwrites an earlier one, so the file ends the same.
 */
export async function applyWalFrames(file: string, changes: AsyncIterable<Uint8Array>, pageSize: number): Promise<void> {
  if (!Number.isSafeInteger(pageSize) || pageSize < 512) throw new StrataError('ARTIFACT_CORRUPT', 'restore: the base restore point records no page size to replay segments with');
  const frameBytes = FRAME_HEADER_BYTES + pageSize;
  const handle = await fsp.open(file, 'r+');
  const held = new Map<number, Buffer>();
  const writeHeld = async (): Promise<void> => {
    const pages = [...held.keys()].sort((a, b) => a - b);
    for (let i = 0; i < pages.length; ) {
      // Consecutive pages go in one write.
      let j = i + 1;
      while (j < pages.length && pages[j] === pages[j - 1]! + 1 && j - i < 256) j++;
      const run = Buffer.concat(pages.slice(i, j).map((p) => held.get(p)!));
      let done = 0;
      while (done < run.length) done += (await handle.write(run, done, run.length - done, (pages[i]! - 1) * pageSize + done)).bytesWritten;
      i = j;
    }
    held.clear();
  };
  try {
    let carry = Buffer.alloc(0);
    let size: number | undefined;
    for await (const chunk of changes) {
      let data = carry.length > 0 ? Buffer.concat([carry, chunk]) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      let at = 0;
      while (data.length - at >= frameBytes) {
        const page = data.readUInt32BE(at);
        const commit = data.readUInt32BE(at + 4);
        if (page === 0) throw new StrataError('ARTIFACT_CORRUPT', 'restore: a replayed frame names page 0');
        // A copy: the chunk it came from is not kept alive by the pages held.
        held.set(page, Buffer.from(data.subarray(at + FRAME_HEADER_BYTES, at + frameBytes)));
        if (held.size * pageSize >= REPLAY_PAGE_BUDGET_BYTES) await writeHeld();
        if (commit !== 0) size = commit;
        at += frameBytes;
      }
      carry = Buffer.from(data.subarray(at));
      data = Buffer.alloc(0);
    }
    if (carry.length > 0) throw new StrataError('ARTIFACT_CORRUPT', 'restore: the replayed changes end in the middle of a frame');
    await writeHeld();
    if (size !== undefined) await handle.truncate(size * pageSize);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A small file's text (a /proc entry), or '' when it cannot be read. */
function readFileOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Why a capture of `file` may not start (see CheckpointLockHold.claim). */
function claimRefused(file: string, claim: 'this process' | 'timeout' | { pid: number | undefined }): StrataError {
  if (claim === 'timeout') {
    return new StrataError('IO', `replicate: ${file}-shm could not be locked within ${CLAIM_WAIT_MS / 1000} s: the thread pool that Node's file locks and file reads share did not answer (is a storage hanging?); try again`);
  }
  const who =
    claim === 'this process'
      ? 'this process (another replicate job of the daemon, or another capture of this program)'
      : `another process${claim.pid === undefined ? '' : ` (pid ${claim.pid}${describeProcess(claim.pid)})`}`;
  return new StrataError(
    'DATABASE_LOCKED',
    `replicate: ${file} is already replicated by ${who}. Two replicators of one database keep each other from checkpointing it, and its log would grow without end: replicate it once, into one repository (a mirror in strata.config.json copies the segments to a second one), or stop the other replicator first`,
    typeof claim === 'object' && claim.pid !== undefined ? { details: { pid: claim.pid } } : {},
  );
}

/** `, strata replicate` when the process is one of Strata's commands, from /proc (else ''). */
function describeProcess(pid: number): string {
  const command = strataCommand(readFileOr(`/proc/${pid}/cmdline`));
  return command ? `, ${command}` : '';
}

