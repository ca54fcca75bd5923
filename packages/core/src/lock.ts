import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { StrataError } from './errors.js';
import { defaultIsAlive } from './journal.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';

export const LOCK_KEY = 'locks/repository.lock';

/** The token of a lock file whose content is not a Strata lock. */
const UNREADABLE = 'unreadable-';
/** How old an unreadable lock file must be before it is taken over. */
const UNREADABLE_STALE_AFTER_MS = 60_000;

/** What the lock file says about its holder; shown to the user when they have to wait. */
interface LockInfo {
  token: string;
  pid: number;
  host: string;
  operation: string;
  acquiredAt: string;
}

/** How long to wait for a busy lock, and when a lock from another host counts as abandoned. */
export interface LockOptions {
  /** Milliseconds to wait for a live holder before failing with REPO_LOCKED. Default 60 s. */
  readonly waitMs?: number;
  /** A lock older than this from another host is taken over. Default 1 hour. */
  readonly staleAfterMs?: number;
  /**
   * Ends a wait for a busy lock with ABORTED (Ctrl-C during a prune that waits for a backup's
   * commit). Given only where giving up changes nothing: a lock that is free is still taken.
   */
  readonly signal?: AbortSignal;
}

/**
 * The repository lock: one holder at a time for everything that changes the catalog. Holders keep
 * it for short critical sections (commit a backup, apply a prune), not for whole backups, so
 * backups from several processes overlap and only their commits take turns.
 *
 * A lock whose holder died on this host (its pid is gone) is stale and taken over at once; a lock
 * from another host is taken over once its holder has given no sign of life for `staleAfterMs`:
 * a holder that keeps the lock for long (a prune removing thousands of objects, a catalog rebuilt
 * from a large bucket) writes one beside it (see {@link keepAlive}).
 */
export async function withRepositoryLock<T>(storage: Storage, operation: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  const release = await acquireLock(storage, operation, options);
  try {
    return await fn();
  } finally {
    await release();
  }
}

async function acquireLock(storage: Storage, operation: string, options: LockOptions): Promise<() => Promise<void>> {
  const waitMs = options.waitMs ?? 60_000;
  const staleAfterMs = options.staleAfterMs ?? 60 * 60_000;
  const info: LockInfo = { token: randomBytes(12).toString('hex'), pid: process.pid, host: hostname(), operation, acquiredAt: '' };
  const deadline = Date.now() + waitMs;
  let backoff = 20;
  /** Why the holder's sign of life could not be read, when that kept this wait going (said at its end). */
  let signUnreadable: unknown;
  for (;;) {
    info.acquiredAt = new Date().toISOString();
    if (await storage.createExclusive(LOCK_KEY, Buffer.from(JSON.stringify(info)))) {
      const alive = keepAlive(storage, info.token, staleAfterMs);
      return async () => {
        await alive.stop();
        try {
          // Only remove the lock if it is still ours (a stale-takeover may have replaced it).
          const current = await readLock(storage);
          if (current?.token === info.token) await storage.delete(LOCK_KEY);
        } finally {
          await alive.remove();
        }
      };
    }
    const holder = await readLock(storage);
    if (holder && (await isStale(storage, holder, staleAfterMs, (err) => (signUnreadable = err)))) {
      await takeOverStale(storage, holder);
      continue;
    }
    if (options.signal?.aborted) {
      // What the operation did before it waited (a copy's earlier backups) is its own to say; here only the lock was not taken.
      throw new StrataError('ABORTED', `${operation}: interrupted while waiting for the repository lock, held by ${describeHolder(holder)}; the lock was not taken`, { cause: options.signal.reason });
    }
    if (Date.now() >= deadline) {
      if (holder?.token.startsWith(UNREADABLE)) {
        throw new StrataError(
          'REPO_LOCKED',
          `repository is locked by ${LOCK_KEY} in ${storage.location}, whose content is not a Strata lock (empty or damaged); it counts as abandoned ${UNREADABLE_STALE_AFTER_MS / 1000} s after it was written, or remove it by hand if no Strata process is running`,
          { details: { holder: null } },
        );
      }
      const unread = signUnreadable === undefined ? '' : ` (its sign of life could not be read, so it counts as alive: ${signUnreadable instanceof Error ? signUnreadable.message : String(signUnreadable)})`;
      throw new StrataError('REPO_LOCKED', `repository is locked by ${describeHolder(holder)}${unread}; try again later`, { details: { holder } });
    }
    // The signal ends the pause too, so an interruption is answered at once, not after the backoff.
    await delay(backoff + Math.random() * backoff, undefined, options.signal ? { signal: options.signal } : {}).catch(() => undefined);
    backoff = Math.min(backoff * 2, 500);
  }
}

function describeHolder(holder: LockInfo | undefined): string {
  if (holder?.token.startsWith(UNREADABLE)) return `${LOCK_KEY}, whose content is not a Strata lock`;
  return holder ? `${holder.operation} by pid ${holder.pid} on ${holder.host} since ${holder.acquiredAt}` : 'another process';
}

async function isStale(storage: Storage, holder: LockInfo, staleAfterMs: number, onUnreadableSign: (err: unknown) => void): Promise<boolean> {
  if (holder.token.startsWith(UNREADABLE)) return Date.now() - Date.parse(holder.acquiredAt) > UNREADABLE_STALE_AFTER_MS;
  if (holder.host === hostname()) return !defaultIsAlive(holder.pid, holder.host);
  if (Date.now() - Date.parse(holder.acquiredAt) <= staleAfterMs) return false;
  // Old by its start: looked for the holder's last sign of life only now, so a lock seen busy
  // costs one read, not two. A sign that cannot be read now (the storage failing) counts as
  // alive: the wait goes on and looks again, rather than taking over a lock that may be in use.
  const lastAlive = await lastSignOfLife(storage, holder.token).catch((err: unknown) => {
    onUnreadableSign(err);
    return Date.now();
  });
  return lastAlive === undefined || Date.now() - lastAlive > staleAfterMs;
}

/** The key beside the lock that its holder rewrites while it keeps the lock (see {@link keepAlive}). */
function aliveKey(token: string): string {
  return `${LOCK_KEY}.alive-${token}`;
}

/** How often a holder says it is alive: four times per stale age, and at least every five minutes (every 5 min at the default hour). */
function aliveEveryMs(staleAfterMs: number): number {
  return Math.max(250, Math.min(staleAfterMs / 4, 5 * 60_000));
}

/**
 * While the lock is held, rewrites its sign of life every {@link aliveEveryMs}. A process on
 * another host judges a lock by its age, and without this would take over a lock whose holder is
 * still at work once the work outlasts the stale age, and two processes would change the catalog
 * at once. The first sign is written only after the first interval, so the short critical
 * sections that nearly every lock is held for cost no extra request. A sign that fails to write is
 * tried again at the next interval: the lock is only taken over after several have failed. A write
 * still under way when the next is due is left to finish (no queue behind a slow storage), and
 * one under way at the release is cut short: letting go of the lock never waits on a sign.
 */
function keepAlive(storage: Storage, token: string, staleAfterMs: number): { stop(): Promise<void>; remove(): Promise<void> } {
  let tried = false;
  let writing: Promise<void> | undefined;
  const stopping = new AbortController();
  const timer = setInterval(() => {
    if (writing) return;
    tried = true;
    const sign = Buffer.from(JSON.stringify({ pid: process.pid, host: hostname(), at: new Date().toISOString() }));
    writing = storage.put(aliveKey(token), sign, { signal: stopping.signal }).then(
      () => undefined,
      () => undefined,
    );
    void writing.then(() => {
      writing = undefined;
    });
  }, aliveEveryMs(staleAfterMs));
  // The work under the lock keeps the process alive; this timer must not outlive it.
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      stopping.abort();
      // A storage that ignores the signal gets a moment to finish, no more; the timer holds the
      // process for that moment (a storage's write may hold nothing), and ends with the write.
      if (writing) {
        const cap = new AbortController();
        await Promise.race([writing, delay(2_000, undefined, { signal: cap.signal }).catch(() => undefined)]);
        cap.abort();
      }
    },
    remove: async () => {
      // Tried, not only written: a write reported failed may still have reached the storage.
      if (!tried) return;
      await storage.delete(aliveKey(token)).catch(() => undefined);
      // One that outlived the release's wait lands later: removed once it has.
      if (writing) void writing.then(() => storage.delete(aliveKey(token)).catch(() => undefined));
    },
  };
}

/** When the holder of the lock with `token` last said it was alive (ms since the epoch), if it ever did. */
async function lastSignOfLife(storage: Storage, token: string): Promise<number | undefined> {
  // Errors but "not found" go to the caller (isStale): a live holder's lock is never judged
  // abandoned because its sign of life could not be read.
  const gone = (err: unknown): undefined => {
    if (isNotFound(err)) return undefined;
    throw err;
  };
  const body = await storage.read(aliveKey(token)).catch(gone);
  if (body === undefined) return undefined;
  try {
    const sign = JSON.parse(Buffer.from(body).toString('utf8')) as { at?: unknown };
    const at = typeof sign?.at === 'string' ? Date.parse(sign.at) : Number.NaN;
    if (!Number.isNaN(at)) return at;
  } catch {
    // Unreadable (a write cut short): its time on the storage still says when it was written.
  }
  return storage.stat(aliveKey(token)).then((info) => info.modified.getTime(), gone);
}

async function readLock(storage: Storage): Promise<LockInfo | undefined> {
  try {
    const parsed = JSON.parse(Buffer.from(await storage.read(LOCK_KEY)).toString('utf8')) as LockInfo;
    // The token becomes part of a storage key (the takeover marker), so only our own shape passes.
    if (typeof parsed?.token !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(parsed.token) || typeof parsed.pid !== 'number' || typeof parsed.host !== 'string') throw new Error('not a Strata lock');
    return parsed;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    // Strata writes a lock's content atomically (createExclusive), so content that does not parse
    // (empty, truncated by a full disk, written by hand) never belongs to a live Strata process.
    // It has no pid to probe (pid -1 would ask kill() about every process and always look alive),
    // so it is judged by its age alone.
    const modified = await storage.stat(LOCK_KEY).then((info) => info.modified, () => new Date());
    // The token names this particular file (by its time), so its takeover marker is its own.
    return { token: `${UNREADABLE}${modified.getTime()}`, pid: 0, host: '', operation: 'unknown', acquiredAt: modified.toISOString() };
  }
}

/**
 * Removes a lock judged stale, such that among processes judging the same lock stale at the same
 * moment exactly one removes it. Re-reading and then deleting is not enough on its own: two
 * processes could both re-read the stale lock, one deletes it and takes the lock anew, and the
 * other then deletes that new, live lock (seen in 4 of 200 race rounds). So the right to remove a
 * given stale lock is itself taken with createExclusive, on a marker named after that lock's
 * token: only its creator re-reads and deletes, and a lock with a new token is never touched. A
 * marker whose creator died before finishing is superseded by the next generation of the marker.
 * Only createExclusive, read and delete are used, so an object store can run the same protocol.
 */
async function takeOverStale(storage: Storage, stale: LockInfo): Promise<void> {
  const mine = Buffer.from(JSON.stringify({ pid: process.pid, host: hostname(), at: new Date().toISOString() }));
  for (let generation = 0; generation < MAX_TAKEOVER_GENERATIONS; generation++) {
    const marker = `${TAKEOVER_PREFIX}${stale.token}-${generation}`;
    if (await storage.createExclusive(marker, mine)) {
      try {
        const again = await readLock(storage);
        if (again?.token === stale.token) {
          await storage.delete(LOCK_KEY);
          await storage.delete(aliveKey(stale.token)).catch(() => undefined);
        }
      } finally {
        for (let g = 0; g <= generation; g++) await storage.delete(`${TAKEOVER_PREFIX}${stale.token}-${g}`).catch(() => undefined);
      }
      return;
    }
    if (!(await takeoverAbandoned(storage, marker))) return; // another process is taking it over: wait and look again
  }
}

/** Markers of lock takeovers in progress: `locks/takeover-<token>-<generation>`. */
const TAKEOVER_PREFIX = 'locks/takeover-';
/** A takeover whose marker no process finishes within this many generations is left to a person. */
const MAX_TAKEOVER_GENERATIONS = 20;
/** A takeover marker from another host counts as abandoned after this long (a takeover takes milliseconds). */
const TAKEOVER_ABANDONED_AFTER_MS = 60_000;

async function takeoverAbandoned(storage: Storage, marker: string): Promise<boolean> {
  try {
    const owner = JSON.parse(Buffer.from(await storage.read(marker)).toString('utf8')) as { pid?: number; host?: string; at?: string };
    if (owner.host === hostname() && typeof owner.pid === 'number') return !defaultIsAlive(owner.pid, owner.host);
    return Date.now() - Date.parse(owner.at ?? '') > TAKEOVER_ABANDONED_AFTER_MS;
  } catch (err) {
    // Gone: its creator finished (the lock was taken over); the caller looks at the lock again.
    if (isNotFound(err)) return false;
    return true;
  }
}

/** A repository's lock options with the wait ending on `signal` as well (see {@link LockOptions.signal}). */
export function lockFor(lock: LockOptions | undefined, signal: AbortSignal | undefined): LockOptions | undefined {
  if (!signal) return lock;
  return { ...lock, signal: lock?.signal ? AbortSignal.any([lock.signal, signal]) : signal };
}
