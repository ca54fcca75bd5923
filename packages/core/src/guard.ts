import type { BackupRecord } from './catalog.js';
import { StrataError, errorText, redactable, redactedMessage } from './errors.js';
import type { BackupType } from './format/manifest.js';
import type { ProgressListener } from './progress.js';
import { shellCommand } from './shell-quote.js';
import type { BackupWriter } from './backup-writer.js';
import type { Restorer } from './restorer.js';
import type { RepositoryContext } from './repository-context.js';

/** Options for {@link Repository.guard}. */
export interface GuardOptions<T> {
  readonly database: string;
  /** The safety backup's type (default incremental, or full when there is none yet). */
  readonly type?: BackupType;
  /** Default `pre-update` (retention keeps those for their own duration). */
  readonly label?: string;
  /** Restore the safety backup in place when the change fails. */
  readonly rollbackOnError?: boolean;
  /** Treats a returned value as failure too (a command's non-zero exit status). */
  readonly isFailure?: (value: T) => boolean;
  /** What the change is, for the journal (`npm run migrate`). */
  readonly description?: string;
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
}

/** What {@link Repository.guard} did. */
export interface GuardResult<T> {
  readonly value: T;
  readonly backup: BackupRecord;
  /** The command that restores the database to its state before the change. */
  readonly undo: string;
  readonly failed: boolean;
  readonly rolledBack: boolean;
}

/** Runs risky changes behind a safety backup (see {@link Guard.run}). */
export class Guard {
  readonly #ctx: RepositoryContext;
  readonly #writer: BackupWriter;
  readonly #restorer: Restorer;

  constructor(ctx: RepositoryContext, writer: BackupWriter, restorer: Restorer) {
    this.#ctx = ctx;
    this.#writer = writer;
    this.#restorer = restorer;
  }

  /**
   * Runs a risky change with a safety net: backs up first (label `pre-update`), refuses to run
   * `change` if that backup failed, runs it, journals the outcome with the command that undoes
   * it, and with `rollbackOnError` restores the backup in place when the change fails.
   *
   * ```ts
   * await repo.guard('./app.db', () => migrate(db), { database: 'app', rollbackOnError: true })
   * ```
   */
  async run<T>(locator: string, change: () => Promise<T>, options: GuardOptions<T>): Promise<GuardResult<T>> {
    const backup = await this.#writer.backup(locator, {
      database: options.database,
      type: options.type ?? 'incremental',
      autoFull: true,
      label: options.label ?? 'pre-update',
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    const undo = shellCommand(['strata', 'restore', backup.id, '--to', this.#ctx.engineFor(locator).describe(locator), '--force', '--yes', '--repo', this.#ctx.storage.location]);
    const op = await this.#ctx.journal.begin('run', { database: options.database, backupId: backup.id, details: { command: options.description ?? 'guarded change', undo } });
    let value: T | undefined;
    let error: unknown;
    try {
      value = await change();
    } catch (err) {
      error = err;
    }
    const failed = error !== undefined || (value !== undefined && (options.isFailure?.(value) ?? false));
    let rolledBack = false;
    if (failed && options.rollbackOnError) {
      try {
        await this.#restorer.restore({ id: backup.id }, { to: locator, force: true });
        rolledBack = true;
      } catch (restoreError) {
        await op.fail(restoreError, { details: { command: options.description ?? 'guarded change', undo, rolledBack: false, rollbackError: redactedMessage(restoreError) } });
        throw new StrataError('IO', redactable`guard: the change failed and the automatic rollback failed too (${errorText(restoreError)}); undo by hand with: ${undo}`, { cause: restoreError });
      }
    }
    const details = { command: options.description ?? 'guarded change', undo, rolledBack, ...(error !== undefined ? { error: redactedMessage(error) } : {}) };
    if (failed) await op.fail(error ?? new StrataError('IO', `${options.description ?? 'the change'} failed`), { details });
    else await op.complete({ details });
    if (error !== undefined) throw error;
    return { value: value as T, backup, undo, failed, rolledBack };
  }
}
