import { closeSync, fstatSync as statOf, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * SQLite's checkpoint lock, held by continuous capture so that the application's connections stop
 * trying to checkpoint after every commit (see WalFeed in wal-capture.ts).
 *
 * Why: capture holds a read transaction, so the log stays past the application's automatic
 * checkpoint threshold, and SQLite then tries a passive checkpoint after every commit: the
 * checkpoint lock, each reader slot's lock, the unlock. For a writer of tens of thousands of small
 * transactions a second that cost it 12–29% of its speed (bench/README.md, "The checkpoint lock").
 * Every checkpoint takes this lock first and, when another process holds it, gives up at once with
 * SQLITE_BUSY, without the busy handler: one failed `fcntl` per commit. Capture checkpoints the log
 * itself (maintain()), so holding the lock costs the application nothing but its own attempts; an
 * explicit `wal_checkpoint` of the application's reports "busy" meanwhile.
 *
 * What SQLite's locks are (https://www.sqlite.org/walformat.html#locks): POSIX record locks on
 * bytes of the -shm file from 120 on, the checkpoint lock at 121. They belong to the process, not
 * to a descriptor or a connection, which shapes everything here:
 * - a checkpoint of our own connections (or an index rebuild) takes the same byte and lets it go
 *   when it ends, dropping our hold with it: the hold is taken again after each (`dropped()`);
 * - an application's connection in this same process never conflicts with it (nothing is gained
 *   there, nothing is lost);
 * - closing any descriptor of the -shm file drops every lock the process holds on it, so the hold
 *   is made through the feed's own descriptor, which stays open as long as its connections.
 * We hold it exclusively, as a checkpoint does. A second capture of the same database in another
 * process is refused at its start (see CAPTURE_TOKEN_BYTE), so the only other takers are the
 * application's checkpoints.
 *
 * Node has no byte-range locks of its own (`flock` locks do not meet SQLite's), hence the os-lock
 * addon, an optional dependency built at install. Where it is not installed capture works as it did
 * before it (the application's attempts cost what they cost).
 */

/** SQLite's checkpoint lock: WAL_CKPT_LOCK (1) past the first lock byte of the -shm file (120). */
const CHECKPOINT_LOCK_BYTE = 121;
/**
 * A byte of the -shm file far past anything SQLite stores or locks there (1 TiB; locks past the
 * end of a file are allowed), held by each capture for as long as it runs: a second capture of the
 * same database in another process finds it taken and is refused. Two captures that each held the
 * checkpoint lock in turn would keep each other from checkpointing: only the holder's checkpoints
 * run, while the other's read transaction, which only it moves, keeps the log from restarting,
 * and the log grew without end (test/pitr-capture.test.ts). SQLite never unlocks this byte, so
 * it stays held across our checkpoints; like every lock of ours on the file, closing any descriptor
 * of -shm in this process drops it (which is why reserveCapture() refuses a second capture of this
 * process).
 */
const CAPTURE_TOKEN_BYTE = 2 ** 40;

interface OsLock {
  lock(fd: number, start: number, length: number, options: { exclusive: boolean; immediate: boolean }): Promise<void>;
  unlock(fd: number, start: number, length: number): Promise<void>;
}

const requireLazily = createRequire(import.meta.url);
let addon: OsLock | null | undefined;

function loadAddon(): OsLock | undefined {
  if (addon === undefined) {
    try {
      addon = requireLazily('os-lock') as OsLock;
    } catch {
      addon = null;
    }
  }
  return addon ?? undefined;
}

/** Captures of this process by database file (device and inode): see reserveCapture(). */
const reserved = new Set<string>();

/**
 * Reserves a database file for a capture of this process, before anything of it is opened: the
 * reservation's key, undefined when another capture of this process has it. POSIX locks never conflict within a process, so
 * claim() cannot tell; and the second capture's descriptor of -shm, once closed, would drop every
 * lock the first one holds on it (SQLite's own read locks included).
 */
export function reserveCapture(database: { dev: number; ino: number }): string | undefined {
  const key = `${database.dev}:${database.ino}`;
  if (reserved.has(key)) return undefined;
  reserved.add(key);
  return key;
}

export function releaseCapture(key: string): void {
  reserved.delete(key);
}

/** Whether a capture of this process holds the database file (see reserveCapture()). */
export function capturedHere(database: { dev: number; ino: number }): boolean {
  return reserved.has(`${database.dev}:${database.ino}`);
}

export class CheckpointLockHold {
  readonly #fd: number;
  /** Undefined where locks cannot be held: no addon, or the file system refused a lock (see claim()). */
  #addon: OsLock | undefined;
  /** False when the application keeps its checkpoints (ChangeCaptureOptions.leaveCheckpoints): the claim alone is held. */
  readonly #checkpoints: boolean;
  /** The reservation of the database file (see reserveCapture()), given up at close(). */
  #reservation: string | undefined;
  /** The claim in flight (see close()). */
  #claiming: Promise<unknown> | undefined;
  /** The take in flight: the addon locks on libuv's thread pool. */
  #taking: Promise<void> | undefined;
  /**
   * Asked to take while one was in flight: it may have landed before (or inside) a checkpoint of
   * ours that has dropped it since, so it is taken once more when it lands.
   */
  #again = false;
  /** Checkpoints of our own running on another thread: no take meanwhile (it would be dropped at their end). */
  #paused = 0;
  #closed = false;
  /**
   * Whether the last take succeeded and no checkpoint of ours has ended since. Our connections can
   * still drop it unseen (one that rebuilds a damaged index as it begins a transaction); maintain()
   * takes it again every interval for that.
   */
  held = false;

  constructor(shmDescriptor: number, reservation: string, options: { readonly checkpoints: boolean }) {
    this.#fd = shmDescriptor;
    this.#reservation = reservation;
    this.#checkpoints = options.checkpoints;
    this.#addon = process.platform === 'win32' ? undefined : loadAddon();
  }

  /**
   * Whether the checkpoint lock is held here at all (the addon loaded, and the application does not
   * keep its checkpoints). Where it is not, the application checkpoints after nearly every commit,
   * and a checkpoint of ours waits for its to end.
   */
  get available(): boolean {
    return this.#addon !== undefined && this.#checkpoints;
  }

  /**
   * Claims the database for this capture against other processes: 'claimed' (also where locks
   * cannot be held: then nobody holds the checkpoint lock, and two captures work as they did
   * before it), `{ pid }` when another process has it (see CAPTURE_TOKEN_BYTE; the pid as far as
   * /proc/locks tells), 'timeout' when the thread pool the addon locks on did not answer within
   * `waitMs` (a hung storage can fill it).
   */
  async claim(waitMs: number): Promise<'claimed' | 'timeout' | { pid: number | undefined }> {
    const addon = this.#addon;
    if (!addon) return 'claimed';
    const attempt = addon.lock(this.#fd, CAPTURE_TOKEN_BYTE, 1, { exclusive: true, immediate: true }).then(
      () => 'claimed' as const,
      (err: unknown) => {
        const code = (err as { code?: string }).code;
        if (code === 'EAGAIN' || code === 'EACCES') return { pid: tokenHolder(this.#fd) };
        // A file system without record locks (ENOLCK, say): capture runs as it does without the addon.
        this.#addon = undefined;
        return 'claimed' as const;
      },
    );
    this.#claiming = attempt.finally(() => (this.#claiming = undefined));
    return within(attempt, waitMs, 'timeout' as const);
  }

  /**
   * Takes the lock (again), without waiting: when another process is checkpointing right now the
   * take fails and the next call tries again. Taking a lock the process holds changes nothing.
   */
  take(): void {
    const addon = this.#addon;
    if (!addon || !this.#checkpoints || this.#closed || this.#paused > 0) return;
    if (this.#taking) {
      this.#again = true;
      return;
    }
    this.#taking = addon
      .lock(this.#fd, CHECKPOINT_LOCK_BYTE, 1, { exclusive: true, immediate: true })
      .then(
        () => {
          this.held = true;
        },
        () => {
          this.held = false;
        },
      )
      .finally(() => {
        this.#taking = undefined;
        if (this.#again) {
          this.#again = false;
          this.take();
        }
      });
  }

  /** A checkpoint or index rebuild of our own has ended: it let go of the lock. */
  dropped(): void {
    this.held = false;
    this.take();
  }

  /**
   * Runs a checkpoint of our own on another thread: no take starts meanwhile, and the lock is
   * taken again after it (a take still in flight may land inside it, and its end would drop that
   * one unseen: dropped() then takes once more after it lands). Nothing here waits on the take:
   * the thread pool it runs on is shared with file I/O, which a hung storage can fill.
   */
  async around<T>(checkpoint: () => Promise<T>): Promise<T> {
    this.#paused++;
    try {
      return await checkpoint();
    } finally {
      this.#paused--;
      this.dropped();
    }
  }

  /**
   * Ends the capture's hold, after its connections are closed: closes the descriptor, which lets
   * go of both locks, or where it must stay open (`keepOpen`: another thread still reads through
   * it) lets go of them. Never while a claim or take of ours is in flight, which could land on
   * another file reusing the descriptor's number, or lock again after the unlock: when one is
   * still in flight after `waitMs` (a thread pool stuck behind other I/O) that is done once it
   * lands, and close() returns meanwhile.
   */
  async close(keepOpen: boolean, waitMs = 2000): Promise<void> {
    this.#closed = true;
    this.held = false;
    const addon = this.#addon;
    // The reservation goes last: a capture of this process reserving the file before this
    // descriptor is closed would have its locks dropped by the close.
    const finish = async (): Promise<void> => {
      try {
        if (!keepOpen) closeSync(this.#fd);
        else if (addon) {
          // Never taken when the application keeps its checkpoints: an unlock could let go of one
          // a connection of this process holds this moment (the lock is the process's).
          if (this.#checkpoints) await addon.unlock(this.#fd, CHECKPOINT_LOCK_BYTE, 1).catch(() => undefined);
          await addon.unlock(this.#fd, CAPTURE_TOKEN_BYTE, 1).catch(() => undefined);
        }
      } finally {
        if (this.#reservation) releaseCapture(this.#reservation);
        this.#reservation = undefined;
      }
    };
    const inFlight = (): Promise<unknown> | undefined => this.#claiming ?? this.#taking;
    const settled = async (): Promise<void> => {
      for (let pending = inFlight(); pending; pending = inFlight()) await pending.catch(() => undefined);
    };
    if (!inFlight()) return finish();
    if (await within(settled().then(() => true), waitMs, false)) return finish();
    // Late: done once the call lands, meanwhile the file stays reserved (a new capture of it in
    // this process is refused). A failed close has nobody left to tell.
    void settled()
      .then(finish)
      .catch(() => undefined);
  }
}

/** What `promise` gives, or `otherwise` once `ms` have passed without it (it still runs on). */
async function within<T, U>(promise: Promise<T>, ms: number, otherwise: U): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<U>((resolve) => (timer = setTimeout(resolve, ms, otherwise)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** The process holding CAPTURE_TOKEN_BYTE of the file behind `fd`, from Linux's /proc/locks (undefined elsewhere). */
function tokenHolder(fd: number): number | undefined {
  try {
    // /proc/self/fd/N names the file; its inode is what /proc/locks lists (MAJOR:MINOR:INODE).
    const { ino } = statOf(fd);
    for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
      // "1: POSIX  ADVISORY  WRITE 3824 fe:00:1466568 1099511627776 1099511627776"
      const fields = line.trim().split(/\s+/);
      if (fields[1] !== 'POSIX' || Number(fields[6]) !== CAPTURE_TOKEN_BYTE) continue;
      // A holder in another pid namespace shows as 0 or less.
      if (Number(fields[5]?.split(':')[2]) === ino) return Number(fields[4]) > 0 ? Number(fields[4]) : undefined;
    }
  } catch {
    // Not Linux, or /proc is not mounted: the message does without the process.
  }
  return undefined;
}

