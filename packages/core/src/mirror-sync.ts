import type { CopyResult } from './backup-copier.js';
import { StrataError, errorText, isStrataError, redactable, wrapError } from './errors.js';
import type { Journal } from './journal.js';
import type { Repository } from './repository.js';

/**
 * A second repository that receives a copy of every backup (pgBackRest's repo2, Litestream's
 * replica). A backup is complete once the primary has it; the copy to the mirror follows, and a
 * copy that fails is journaled on the primary (kind `mirror`, FAILED) for `strata health`, and
 * made good by the next sync, which copies everything the mirror lacks.
 */
export interface MirrorOptions {
  /** Where the mirror is, for messages and `strata health` (no secrets). */
  readonly location: string;
  /** Opens it (its storage, its passphrase); called once, when first needed. */
  readonly open: () => Promise<Repository>;
}

/** What one sync of the mirror did. */
export interface MirrorSyncResult {
  readonly mirror: string;
  /** False when the mirror could not be reached or written; `error` says why. */
  readonly ok: boolean;
  /** Backups copied in this sync (parents before dependants). */
  readonly copied: readonly string[];
  readonly error?: { readonly code: string; readonly message: string };
}

/**
 * Copies to the mirror whatever the primary has and it lacks, journaling the run on the primary.
 * Never throws (except for a cancellation): the primary's backups are complete without the mirror,
 * and its failure is reported through the result, the journal and `strata health`.
 */
export async function syncMirror(
  primary: { readonly journal: Journal; copyTo(target: Repository, options: { signal?: AbortSignal }): Promise<CopyResult> },
  mirror: MirrorOptions,
  openMirror: () => Promise<Repository>,
  options: { signal?: AbortSignal; journalSuccess?: boolean } = {},
): Promise<MirrorSyncResult> {
  // Without journalSuccess a run is journaled only when it fails (frequent syncs of `replicate`).
  const op = options.journalSuccess === false ? undefined : await primary.journal.begin('mirror', { details: { mirror: mirror.location } });
  try {
    const target = await openMirror();
    const result = await primary.copyTo(target, options.signal ? { signal: options.signal } : {});
    const copied = result.copied.map((c) => c.record.id);
    await op?.complete({ storedBytes: result.copied.reduce((sum, c) => sum + c.record.storedBytes, 0), details: { mirror: mirror.location, copied, segments: result.segments.length, logFiles: result.logFiles } });
    return { mirror: mirror.location, ok: true, copied };
  } catch (err) {
    const wrapped = isStrataError(err) ? err : wrapError(`mirror ${mirror.location}`, err);
    // The journal keeps the wrapped error's redacted form, not its whole message (which may quote the database).
    const failure = wrapped.message.startsWith(`mirror ${mirror.location}`) ? wrapped : new StrataError(wrapped.code, redactable`mirror ${mirror.location}: ${errorText(wrapped)}`, { cause: wrapped });
    await (op ?? (await primary.journal.begin('mirror', { details: { mirror: mirror.location } }).catch(() => undefined)))?.fail(failure).catch(() => undefined);
    if (failure.code === 'ABORTED') throw failure;
    const copied = Array.isArray(failure.details['copied']) ? (failure.details['copied'] as string[]) : [];
    return { mirror: mirror.location, ok: false, copied, error: { code: failure.code, message: failure.message } };
  }
}
