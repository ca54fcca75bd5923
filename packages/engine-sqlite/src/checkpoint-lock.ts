import { fstatSync as statOf, readFileSync } from 'node:fs';
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
 * it stays held across our checkpoints.
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

export class CheckpointLockHold {
  readonly #fd: number;
  readonly #addon: OsLock | undefined;
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

  constructor(shmDescriptor: number) {
    this.#fd = shmDescriptor;
    this.#addon = process.platform === 'win32' ? undefined : loadAddon();
  }

  /**
   * Whether the lock can be held here at all (the addon loaded). Where it cannot, the application
   * checkpoints after nearly every commit, and a checkpoint of ours waits for its to end.
   */
  get available(): boolean {
    return this.#addon !== undefined;
  }

  /**
   * Claims the database for this capture (see CAPTURE_TOKEN_BYTE): undefined when claimed (or
   * where the addon is missing: then nobody holds the checkpoint lock, and two captures work as
   * they did before it), else the process that holds it, as far as /proc/locks tells.
   */
  async claim(): Promise<{ pid: number | undefined } | undefined> {
    const addon = this.#addon;
    if (!addon) return undefined;
    try {
      await addon.lock(this.#fd, CAPTURE_TOKEN_BYTE, 1, { exclusive: true, immediate: true });
      return undefined;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EAGAIN' && code !== 'EACCES') return undefined;
      return { pid: tokenHolder(this.#fd) };
    }
  }

  /**
   * Takes the lock (again), without waiting: when another process is checkpointing right now the
   * take fails and the next call tries again. Taking a lock the process holds changes nothing.
   */
  take(): void {
    const addon = this.#addon;
    if (!addon || this.#closed || this.#paused > 0) return;
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
   * No take after this one. `unlock`: let go now, for a descriptor that stays open (closing it,
   * after the connections, lets go of everything by itself). False when a take is still in flight
   * after `waitMs` (the thread pool is stuck behind other I/O): the descriptor must then stay open,
   * or the take could land on another file that reuses its number.
   */
  async close(unlock: boolean, waitMs = 2000): Promise<boolean> {
    this.#closed = true;
    const taking = this.#taking;
    if (taking) {
      let timer: NodeJS.Timeout | undefined;
      const landed = await Promise.race([taking.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(resolve, waitMs, false)))]);
      clearTimeout(timer);
      if (!landed) return false;
    }
    if (unlock && this.#addon) await this.#addon.unlock(this.#fd, CHECKPOINT_LOCK_BYTE, 1).catch(() => undefined);
    this.held = false;
    return true;
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
      if (Number(fields[5]?.split(':')[2]) === ino) return Number(fields[4]);
    }
  } catch {
    // Not Linux, or /proc is not mounted: the message does without the process.
  }
  return undefined;
}

