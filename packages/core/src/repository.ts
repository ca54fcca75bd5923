import type { BackupRecord, CheckResult, VerificationRecord } from './catalog.js';
import { redactCheck } from './catalog.js';
import { updateCatalog } from './catalog-commit.js';
import type { CompressionConfig } from './compression.js';
import type { EncryptionProfile } from './encryption.js';
import type { EngineDisplay } from './engine.js';
import type { Journal } from './journal.js';
import type { RepositoryKeys } from './keys.js';
import type { Storage, StorageAccess } from './storage.js';
import type { RetentionPlan, RetentionPolicy } from './retention.js';
import { readRepositoryConfig } from './repository-setup.js';
import { StrataError, errorText, isStrataError, redactable, wrapError } from './errors.js';
import type { OpenOptions, RepositoryConfigFile } from './repository-setup.js';
import { RepositoryContext } from './repository-context.js';
import { recoverInterruptedWork } from './recovery.js';
import { upgradeLayout } from './layout-migration.js';
import type { Selector } from './backup-catalog.js';
import { BackupWriter } from './backup-writer.js';
import type { BackupOptions } from './backup-writer.js';
import { Restorer } from './restorer.js';
import type { RestoreOptions, RestoreResult } from './restorer.js';
import { Validator } from './validator.js';
import type { SegmentVerifyReport, VerifyOptions, VerifyReport } from './validator.js';
import { RetentionApplier } from './retention-applier.js';
import { ExportImport } from './export-import.js';
import { Guard } from './guard.js';
import { BackupCopier } from './backup-copier.js';
import type { CopyOptions, CopyResult } from './backup-copier.js';
import { syncMirror } from './mirror-sync.js';
import type { MirrorSyncResult } from './mirror-sync.js';
import type { GuardOptions, GuardResult } from './guard.js';
import { Replicator } from './replicator.js';
import { LogArchive } from './log-archive.js';
import { logWindows } from './log-coverage.js';
import type { LogVerifyReport, LogWindow } from './log-coverage.js';
import type { ReplicateOptions, ReplicationSummary } from './replicator.js';
import { readCatalogContents } from './catalog.js';
import type { SegmentRecord } from './catalog.js';
import type { ContinuityWindow } from './continuity.js';
import type { PointInTimePlan } from './point-in-time.js';

// The public surface of @strata/core's repository: the facade below and the types its methods take.
export { REPOSITORY_CONFIG_KEY } from './repository-config.js';
export { initRepository } from './repository-setup.js';
export type { InitOptions, OpenOptions } from './repository-setup.js';
export type { Selector } from './backup-catalog.js';
export type { BackupOptions } from './backup-writer.js';
export type { RestoreOptions, RestoreResult } from './restorer.js';
export type { SegmentVerifyReport, VerifyOptions, VerifyReport } from './validator.js';
export type { GuardOptions, GuardResult } from './guard.js';
export type { CopiedBackup, CopyOptions, CopyResult } from './backup-copier.js';
export type { MirrorOptions, MirrorSyncResult } from './mirror-sync.js';
export type { RestoreFallback } from './restorer.js';
export type { ReplicateOptions, ReplicationEvent, ReplicationSummary } from './replicator.js';
export type { PointInTimePlan, PointInTimeResult } from './point-in-time.js';
export { PENDING_DELETIONS_KEY } from './recovery.js';

/**
 * Opens an existing repository.
 *
 * ```ts
 * const repo = await openRepository(new LocalStorage('./backups'), { engines, passphrase })
 * const record = await repo.backup('./app.db', { database: 'app', type: 'full' })
 * ```
 */
export async function openRepository(storage: Storage, options: OpenOptions): Promise<Repository> {
  const config = await readRepositoryConfig(storage);
  storage.holdRoot?.();
  // Before the first write of this process (the recovery deletes, later commands write).
  await storage.setAccess?.(config.access ?? 'private');
  // A repository of an earlier format moves onto the object layout first, under the lock.
  config.version = await upgradeLayout(storage, config.version, options.lock);
  await recoverInterruptedWork(storage, { ...options, encryption: config.encryption });
  return new Repository(storage, config, options);
}

/**
 * A repository of backups. Every method is safe to call from several processes at once: catalog
 * changes take the repository lock for a moment, artifacts are written under temporary names.
 */
export class Repository {
  readonly storage: Storage;
  readonly journal: Journal;
  /** Passphrases and data keys: list, add, remove, passwd, rotate, migrate (see {@link RepositoryKeys}). */
  readonly keys: RepositoryKeys;
  /** Log files a database server archives one by one (write-ahead log segments), for restores to a moment. */
  readonly logArchive: LogArchive;
  readonly #ctx: RepositoryContext;
  readonly #writer: BackupWriter;
  readonly #restorer: Restorer;
  readonly #validator: Validator;
  readonly #retention: RetentionApplier;
  readonly #transfer: ExportImport;
  readonly #guard: Guard;
  readonly #replicator: Replicator;
  #mirror: Promise<Repository> | undefined;

  /** Use {@link openRepository}. */
  constructor(storage: Storage, config: RepositoryConfigFile, options: OpenOptions) {
    this.#ctx = new RepositoryContext(storage, config, options);
    this.storage = storage;
    this.journal = this.#ctx.journal;
    this.keys = this.#ctx.keys;
    this.logArchive = new LogArchive(this.#ctx);
    this.#writer = new BackupWriter(this.#ctx);
    this.#restorer = new Restorer(this.#ctx, options.mirror ? async () => (await this.mirror())!.#ctx : undefined);
    this.#validator = new Validator(this.#ctx, this.#restorer);
    this.#retention = new RetentionApplier(this.#ctx);
    this.#transfer = new ExportImport(this.#ctx);
    this.#guard = new Guard(this.#ctx, this.#writer, this.#restorer);
    this.#replicator = new Replicator(this.#ctx, this.#writer);
  }

  /** The settings chosen at init (never secrets). */
  get settings(): { id: string; encryption: EncryptionProfile; compression: CompressionConfig; location: string; access: StorageAccess } {
    const { config, vault } = this.#ctx;
    return { id: config.id, encryption: vault.section.profile, compression: config.compression, location: this.storage.location, access: config.access ?? 'private' };
  }

  /** Whether a restore target of the given engine exists, how to name it without secrets, and how its engine is shown. */
  async restoreTarget(engineKind: string, target: string): Promise<{ exists: boolean; description: string; display: EngineDisplay }> {
    return this.#restorer.restoreTarget(engineKind, target);
  }

  /** Checks the passphrase now (the CLI does this before touching anything). */
  async unlock(): Promise<void> {
    await this.#ctx.unlock();
  }

  /** Every backup, oldest first; rebuilds the catalog from the artifacts if it is missing. */
  async list(filter: { database?: string } = {}): Promise<BackupRecord[]> {
    return this.#ctx.catalog.list(filter);
  }

  /** Reads every artifact's manifest and writes a fresh catalog. Needs the passphrase if encrypted. */
  async rebuildCatalog(options: { signal?: AbortSignal } = {}): Promise<BackupRecord[]> {
    return this.#ctx.catalog.rebuild(options);
  }

  /** Every segment of continuously captured transactions, by database, base and sequence (see {@link replicate}). */
  async segments(filter: { database?: string } = {}): Promise<SegmentRecord[]> {
    const contents = await readCatalogContents(this.storage);
    const all = contents?.segments ?? [];
    return filter.database === undefined ? all : all.filter((s) => s.database === filter.database);
  }

  /**
   * Continuous protection: ships the database's committed transactions into the repository as
   * segments, at least once per `intervalMs`, until `options.signal` aborts; then ships what it
   * has and returns. Segments chain from a base restore point (the chain it continues, or one it
   * takes), so that {@link restore} with `asOf` can replay them to any moment they cover.
   *
   * ```ts
   * const stop = new AbortController()
   * process.once('SIGTERM', () => stop.abort())
   * await repo.replicate('./app.db', { database: 'app', signal: stop.signal })
   * ```
   */
  async replicate(locator: string, options: ReplicateOptions): Promise<ReplicationSummary> {
    return this.#replicator.run(locator, options);
  }

  /**
   * What a restore as of `asOf` would restore: the restore point, and the segments after it that
   * reach nearest to that moment. Changes nothing.
   */
  async planAsOf(selector: Selector & { asOf: Date }): Promise<PointInTimePlan> {
    return this.#restorer.planAsOf(selector);
  }

  /** Finds one backup by id, unique id prefix, or `latest` (within `database` if given). */
  async resolve(selector: Selector): Promise<BackupRecord> {
    return this.#ctx.catalog.resolve(selector);
  }

  /**
   * Takes a backup of the database at `locator` and records it in the catalog. With a mirror, the
   * backup is then copied to it, with everything else it lacks; the backup is complete when this
   * repository has it, and a failed copy is only reported (`onMirror`, the journal, `health`).
   */
  async backup(locator: string, options: BackupOptions): Promise<BackupRecord> {
    // A program in plain JavaScript gets no type error: it gets one that says what to pass.
    if (typeof locator !== 'string' || locator === '') throw new StrataError('USAGE', 'backup: give the database to back up (a file path or a URL) as the first argument');
    if (typeof options?.database !== 'string' || options.database === '') {
      throw new StrataError('USAGE', "backup: give the name to file the backup under, e.g. repo.backup('./app.db', { database: 'app' })");
    }
    const record = await this.#writer.backup(locator, options);
    if (this.#ctx.options.mirror && options.mirror !== false) options.onMirror?.(await this.syncMirror({ ...(options.signal ? { signal: options.signal } : {}) }));
    return record;
  }

  /** Where the mirror is (OpenOptions.mirror), or undefined without one. */
  get mirrorLocation(): string | undefined {
    return this.#ctx.options.mirror?.location;
  }

  /** The mirror, opened on first use; undefined without one. Opening fails as openRepository does. */
  async mirror(): Promise<Repository | undefined> {
    const mirror = this.#ctx.options.mirror;
    if (!mirror) return undefined;
    this.#mirror ??= mirror.open().catch((err: unknown) => {
      // A mirror that could not be opened is tried again next time (it may be back by then).
      this.#mirror = undefined;
      throw err;
    });
    return this.#mirror;
  }

  /**
   * Copies to the mirror every restore point it lacks ({@link copyTo}), journaled here as a
   * `mirror` operation. Never fails for the mirror's sake: the result says whether it worked.
   */
  async syncMirror(options: { signal?: AbortSignal; journalSuccess?: boolean } = {}): Promise<MirrorSyncResult> {
    const mirror = this.#ctx.options.mirror;
    if (!mirror) throw new StrataError('USAGE', `${this.storage.location} has no mirror configured`);
    return syncMirror(this, mirror, async () => (await this.mirror())!, options);
  }

  /**
   * Stores one log file a server just handed over in the mirror too (as pgBackRest's archive-push
   * does for every repository), so the mirror can recover to the same moments without waiting
   * for the next backup's sync. `receivedBytes` marks a partial (a segment still being streamed);
   * a complete file removes the mirror's partials of it. Never throws for the mirror's sake: the
   * file is archived once the repository has it; a failure is journaled here (kind `mirror`), for
   * `strata health`, and the next sync copies what the mirror lacks. Does nothing without a mirror.
   */
  async mirrorLog(database: string, name: string, bytes: Uint8Array, options: { signal?: AbortSignal; receivedBytes?: number } = {}): Promise<{ ok: boolean; error?: StrataError } | undefined> {
    const mirror = this.#ctx.options.mirror;
    if (!mirror) return undefined;
    const signal = options.signal ? { signal: options.signal } : {};
    try {
      const target = (await this.mirror())!;
      if (options.receivedBytes !== undefined) await target.logArchive.pushPartial(database, name, bytes, options.receivedBytes, signal);
      else {
        await target.logArchive.push(database, name, bytes, signal);
        await target.logArchive.dropPartials(database, name, signal);
      }
      return { ok: true };
    } catch (err) {
      const wrapped = isStrataError(err) ? err : wrapError(`mirror ${mirror.location}`, err);
      if (wrapped.code === 'ABORTED') throw wrapped;
      const failure = new StrataError(wrapped.code, redactable`mirror ${mirror.location}: archiving ${name} of ${database}: ${errorText(wrapped)}`, { cause: wrapped });
      await this.#ctx.journal.failed('mirror', failure, { database, details: { mirror: mirror.location, file: name } }).catch(() => undefined);
      return { ok: false, error: failure };
    }
  }

  /** The restore points a backup needs, oldest first (for a full backup, just itself). */
  async chainOf(record: BackupRecord): Promise<BackupRecord[]> {
    return this.#ctx.catalog.chainOf(record);
  }

  /**
   * Restores a restore point into `options.to`, assembling its chain. The target is written under
   * a temporary name and put in place only after every hash (artifacts, chunks, streams) and the
   * encryption's integrity check passed; with a wrong passphrase, a damaged artifact or a broken
   * chain the target is never touched.
   *
   * Select by id (`{ id }`, also `latest`), or by time (`{ asOf, database }`): the newest restore
   * point with data at or before that time.
   */
  async restore(selector: Selector, options: RestoreOptions): Promise<RestoreResult> {
    // A program in plain JavaScript (or the editor's server given a request without it) gets an error that says what to pass.
    if (typeof options?.to !== 'string' || options.to === '') throw new StrataError('USAGE', "restore: give where to restore to, e.g. repo.restore({ id }, { to: './restored.db' })");
    return this.#restorer.restore(selector, options);
  }

  /**
   * Runs the validator on one backup or on all of them. Findings are collected, never thrown:
   * each check reports passed, failed or skipped with a reason. Results go to the catalog.
   */
  async verify(selector: Selector | 'all', options: VerifyOptions): Promise<VerifyReport[]> {
    // The level is recorded with the result, and `list` shows it: only the two there are.
    if (options?.level !== 'quick' && options?.level !== 'full') {
      throw new StrataError('USAGE', `verify: the level must be 'quick' or 'full' (got ${JSON.stringify(options?.level)}), e.g. repo.verify({ id }, { level: 'full' })`);
    }
    return this.#validator.verify(selector, options);
  }

  /**
   * Checks every chain of segments (of one database, or all): unbroken, and every segment present,
   * intact and in its place. Findings are collected, never thrown.
   */
  async verifySegments(filter: { database?: string } = {}, options: { signal?: AbortSignal } = {}): Promise<SegmentVerifyReport[]> {
    return this.#validator.verifySegments(filter, options);
  }

  /**
   * What the log archive covers after each base backup whose restores replay it (of one database,
   * or all): the moments a recovery reaches, and the files missing on the way. Reads no segment.
   */
  async logWindows(filter: { database?: string } = {}, options: { signal?: AbortSignal } = {}): Promise<LogWindow[]> {
    const windows = await logWindows(this.#ctx, await this.#ctx.catalog.list(filter), options);
    return windows.map(({ needed: _needed, ...window }) => window);
  }

  /**
   * Verifies the log archive after each base backup (of one database, one backup, or all): no file
   * missing from the base's start to the newest archived one, across the server's history, and
   * every one of them decrypting to the bytes it was stored with (WAL-G's wal-verify), and being
   * what the engine's rules say its name holds (LogArchiveRules.inspect). Findings are
   * collected, never thrown (a file that cannot be read here, the storage failing to answer, is
   * an error, thrown); each base's result goes into the journal.
   */
  async verifyLog(filter: { database?: string; backupId?: string } = {}, options: { signal?: AbortSignal } = {}): Promise<LogVerifyReport[]> {
    await this.#ctx.unlock();
    const records = await this.#ctx.catalog.list(filter.database !== undefined ? { database: filter.database } : {});
    const reports: LogVerifyReport[] = [];
    const checked = new Map<string, string | null>();
    const identities = new Map<string, string>();
    for (const record of records.filter((r) => r.logRange && (filter.backupId === undefined || r.id === filter.backupId))) {
      const op = await this.#ctx.journal.begin('verify', { database: record.database, backupId: record.id, details: { log: true } });
      try {
        const [window] = await logWindows(this.#ctx, records, { ...options, check: true, only: new Set([record.id]), checked, identities });
        if (!window) {
          await op.complete({ details: { log: true, outcome: 'skipped' } });
          continue;
        }
        const { needed: _needed, ...rest } = window;
        const report: LogVerifyReport = { ...rest, outcome: rest.problems.length === 0 ? 'passed' : 'failed' };
        reports.push(report);
        // Journaled too, where a rebuild of a lost catalog finds it.
        const verification = window.to === undefined ? await this.#recordUnrestorable(record, window.problems) : undefined;
        await op.complete({ details: { log: true, outcome: report.outcome, files: report.files, missing: report.missing.length, problems: report.problems.length, ...(verification ? { verification } : {}) } });
      } catch (err) {
        await op.fail(err).catch(() => undefined);
        throw err;
      }
    }
    return reports;
  }

  /**
   * A base backup whose own range of the log is missing or damaged cannot become consistent,
   * however intact its artifact: its verification is recorded as failed (file accessibility), so
   * that `list`, `health` and `restore latest` do not take it for a good restore point.
   */
  async #recordUnrestorable(record: BackupRecord, problems: readonly string[]): Promise<VerificationRecord> {
    const reason = `the archived log it needs to become consistent cannot be read: ${problems.join('; ')}`;
    let verification: VerificationRecord | undefined;
    await updateCatalog(this.#ctx, 'verify', (records) =>
      records.map((r) => {
        if (r.id !== record.id) return r;
        const previous = r.verification;
        const accessible: CheckResult = { name: 'file-accessibility', status: 'failed', reason };
        const checks = previous ? previous.checks.map((c) => (c.name === 'file-accessibility' ? accessible : c)) : [accessible];
        verification = { at: new Date().toISOString(), level: previous?.level ?? 'quick', outcome: 'failed', checks: checks.map(redactCheck) };
        return { ...r, verification };
      }),
    );
    const accessible: CheckResult = { name: 'file-accessibility', status: 'failed', reason };
    return verification ?? { at: new Date().toISOString(), level: 'quick', outcome: 'failed', checks: [redactCheck(accessible)] };
  }

  /**
   * Applies retention: plans with {@link planRetention} under the repository lock (so the plan
   * sees the catalog as it is), deletes the artifacts and cached layouts of what the plan removes,
   * then drops them from the catalog. Safe to kill at any point: a re-run plans the same removals
   * and finishes them; nothing a kept backup needs is ever touched.
   */
  async prune(policyFor: (database: string) => RetentionPolicy, options: { database?: string; dryRun?: boolean; signal?: AbortSignal } = {}): Promise<RetentionPlan> {
    return this.#retention.prune(policyFor, options);
  }

  /**
   * Deletes restore points by id. A backup that others build on (their parent or base) is deleted
   * only with `withDependents`, which deletes those too; otherwise the call fails with
   * CHAIN_BROKEN naming them, and nothing is deleted. Crash-safe like {@link prune}.
   */
  async delete(ids: readonly string[], options: { withDependents?: boolean; signal?: AbortSignal } = {}): Promise<BackupRecord[]> {
    return this.#retention.delete(ids, options);
  }

  /**
   * What {@link delete} would remove, changing nothing: the restore points asked for, those that
   * build on them, for each database whether its newest good restore point is among them (after
   * which `restore latest` would pick an older one), and the windows of continuous protection
   * whose segments would go with their base.
   */
  async planDelete(ids: readonly string[]): Promise<{ remove: BackupRecord[]; dependents: BackupRecord[]; newestGood: BackupRecord[]; lostWindows: ContinuityWindow[] }> {
    return this.#retention.planDelete(ids);
  }

  /** The tables a restore point holds, read from its artifact's manifest (reads the artifact once). */
  async tablesOf(selector: Selector, options: { signal?: AbortSignal } = {}): Promise<string[]> {
    return this.#restorer.tablesOf(selector, options);
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
  async guard<T>(locator: string, change: () => Promise<T>, options: GuardOptions<T>): Promise<GuardResult<T>> {
    return this.#guard.run(locator, change, options);
  }

  /**
   * Writes a self-contained archive (`.tar.gz` or `.zip`) holding, for each database, its newest
   * good restore point with its whole chain: the artifacts as they are, their catalog entries,
   * and a RESTORE.md with the exact commands to restore each one with Strata and without it.
   * `signal` stops it (ABORTED), leaving no file. `replace: false` fails with TARGET_EXISTS,
   * leaving that file as it is, when a file appears at `out` while the export runs (default: it
   * is replaced, once the export is complete).
   */
  async export(options: { databases?: readonly string[]; out: string; replace?: boolean; signal?: AbortSignal }): Promise<{ file: string; backups: BackupRecord[]; segments: SegmentRecord[]; logFiles: number }> {
    return this.#transfer.export(options);
  }

  /**
   * Brings an export into this repository: every artifact's SHA-256 and size are checked on the
   * way in, and its catalog entry is added once all of them are in place. The passphrase must open
   * the export's artifacts: with the data keys its key file holds, or by opening one of the key
   * files the export carries (whose keys it then adds to its own key file); an export from before
   * key files needs that repository's passphrase (or both repositories are unencrypted).
   * `signal` stops it (ABORTED), and nothing of the export stays in the repository.
   */
  async import(file: string, options: { signal?: AbortSignal } = {}): Promise<{ imported: BackupRecord[]; skipped: string[]; segments: SegmentRecord[]; logFiles: number }> {
    return this.#transfer.import(file, options);
  }

  /**
   * Copies restore points into another repository, each with its whole chain (`strata copy`):
   * only what `target` lacks (by backup id), keeping ids, parents, times, labels and tags. Every
   * artifact's SHA-256, size and OpenPGP integrity are checked on the way; each copy is committed
   * on the target like a backup, so a killed copy leaves nothing half-visible and a re-run
   * finishes it. Artifacts are re-encrypted under the target's current data key unless the
   * target's key file holds the one they are encrypted under. A damaged source artifact is not
   * copied (nor what builds on it): the others are, then the call fails naming it.
   *
   * ```ts
   * const offsite = await openRepository('/mnt/offsite', { passphrase: offsitePassphrase })
   * const { copied } = await repo.copyTo(offsite, { databases: ['app'] })
   * ```
   */
  async copyTo(target: Repository, options: CopyOptions = {}): Promise<CopyResult> {
    return new BackupCopier(this.#ctx, target.#ctx).copy(options);
  }

  /** Removes the temporary folder this process used for snapshots and scratch restores. */
  async close(): Promise<void> {
    const mirror = this.#mirror;
    this.#mirror = undefined;
    await mirror?.then((m) => m.close(), () => undefined);
    await this.#ctx.removeTempDir();
  }

}
