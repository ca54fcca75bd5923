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
 * We hold it shared: SQLite takes it only exclusively (a checkpoint, a rebuild of the index), and
 * a shared lock keeps those out while letting a second holder in.
 *
 * Node has no byte-range locks of its own (`flock` locks do not meet SQLite's), hence the os-lock
 * addon, an optional dependency built at install. Where it is not installed capture works as it did
 * before it (the application's attempts cost what they cost).
 */

/** SQLite's checkpoint lock: WAL_CKPT_LOCK (1) past the first lock byte of the -shm file (120). */
const CHECKPOINT_LOCK_BYTE = 121;

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
  /** Whether the last take succeeded and nothing of ours has dropped it since. */
  held = false;

  constructor(shmDescriptor: number) {
    this.#fd = shmDescriptor;
    this.#addon = process.platform === 'win32' ? undefined : loadAddon();
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
      .lock(this.#fd, CHECKPOINT_LOCK_BYTE, 1, { exclusive: false, immediate: true })
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
   * Runs a checkpoint of our own on another thread: the take in flight lands first (it must not
   * land inside the checkpoint, whose end would drop it unseen), none starts meanwhile, and the
   * lock is taken again after.
   */
  async around<T>(checkpoint: () => Promise<T>): Promise<T> {
    while (this.#taking) await this.#taking;
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
   * after the connections, lets go of everything by itself).
   */
  async close(unlock: boolean): Promise<void> {
    this.#closed = true;
    while (this.#taking) await this.#taking;
    if (unlock && this.held && this.#addon) await this.#addon.unlock(this.#fd, CHECKPOINT_LOCK_BYTE, 1).catch(() => undefined);
    this.held = false;
  }
}
