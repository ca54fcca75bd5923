import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { StrataError } from './errors.js';
import { defaultIsAlive } from './journal.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';

export const LOCK_KEY = 'locks/repository.lock';

/** The token of a lock file whose content is not a Strata lock. */
const UNREADABLE = 'unreadable';
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
  readonly signal?: AbortSignal;
}

/**
 * The repository lock: one holder at a time for everything that changes the catalog. Holders keep
 * it for short critical sections (commit a backup, apply a prune), not for whole backups, so
 * backups from several processes overlap and only their commits take turns.
 *
 * A lock whose holder died on this host (its pid is gone) is stale and taken over at once; a lock
 * from another host is taken over once it is older than `staleAfterMs`.
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
  for (;;) {
    info.acquiredAt = new Date().toISOString();
    if (await storage.createExclusive(LOCK_KEY, Buffer.from(JSON.stringify(info)))) {
      return async () => {
        // Only remove the lock if it is still ours (a stale-takeover may have replaced it).
        const current = await readLock(storage);
        if (current?.token === info.token) await storage.delete(LOCK_KEY);
      };
    }
    const holder = await readLock(storage);
    if (holder && isStale(holder, staleAfterMs)) {
      await takeOverStale(storage, holder);
      continue;
    }
    if (Date.now() >= deadline || options.signal?.aborted) {
      if (holder?.token === UNREADABLE) {
        throw new StrataError(
          'REPO_LOCKED',
          `repository is locked by ${LOCK_KEY} in ${storage.location}, whose content is not a Strata lock (empty or damaged); it counts as abandoned ${UNREADABLE_STALE_AFTER_MS / 1000} s after it was written, or remove it by hand if no Strata process is running`,
          { details: { holder: null } },
        );
      }
      const who = holder ? `${holder.operation} by pid ${holder.pid} on ${holder.host} since ${holder.acquiredAt}` : 'another process';
      throw new StrataError('REPO_LOCKED', `repository is locked by ${who}; try again later`, { details: { holder } });
    }
    await delay(backoff + Math.random() * backoff);
    backoff = Math.min(backoff * 2, 500);
  }
}

function isStale(holder: LockInfo, staleAfterMs: number): boolean {
  if (holder.token === UNREADABLE) return Date.now() - Date.parse(holder.acquiredAt) > UNREADABLE_STALE_AFTER_MS;
  if (holder.host === hostname()) return !defaultIsAlive(holder.pid, holder.host);
  return Date.now() - Date.parse(holder.acquiredAt) > staleAfterMs;
}

async function readLock(storage: Storage): Promise<LockInfo | undefined> {
  try {
    const parsed = JSON.parse(Buffer.from(await storage.read(LOCK_KEY)).toString('utf8')) as LockInfo;
    if (typeof parsed?.token !== 'string' || typeof parsed.pid !== 'number' || typeof parsed.host !== 'string') throw new Error('not a Strata lock');
    return parsed;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    // Strata writes a lock's content atomically (createExclusive), so content that does not parse
    // (empty, truncated by a full disk, written by hand) never belongs to a live Strata process.
    // It has no pid to probe (pid -1 would ask kill() about every process and always look alive),
    // so it is judged by its age alone.
    const modified = await storage.stat(LOCK_KEY).then((info) => info.modified, () => new Date());
    return { token: UNREADABLE, pid: 0, host: '', operation: 'unknown', acquiredAt: modified.toISOString() };
  }
}

async function takeOverStale(storage: Storage, stale: LockInfo): Promise<void> {
  // Two processes may both decide the lock is stale. Re-read right before deleting so we only
  // remove the exact stale file we judged; whoever then wins createExclusive holds the lock.
  const again = await readLock(storage);
  if (again?.token === stale.token) await storage.delete(LOCK_KEY);
}
