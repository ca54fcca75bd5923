import type { BackupRecord } from './catalog.js';
import type { Engine, EngineDisplay, Relocation } from './engine.js';
import { StrataError, errorText, isStrataError, redactable, wrapError } from './errors.js';
import { compareNewestFirst, isGoodRestorePoint } from './newest-good.js';
import { readArtifact } from './format/artifact-reader.js';
import type { ProgressListener } from './progress.js';
import { throttleProgress } from './progress.js';
import type { Selector } from './backup-catalog.js';
import type { RepositoryContext } from './repository-context.js';
import { readCatalogContents } from './catalog.js';
import { fetchChanges, planPointInTime } from './point-in-time.js';
import { checkLockWait } from './server-engine.js';
import type { FetchedChanges, PointInTimePlan, PointInTimeResult } from './point-in-time.js';

/** Options for {@link Repository.restore}. */
export interface RestoreOptions {
  /** The target: a file path for file engines, a URL for server engines. */
  readonly to: string;
  readonly force?: boolean;
  /** Restore only these tables: into a new target, or replacing just them in an existing one. */
  readonly tables?: readonly string[];
  /** Where what the backup held outside its target goes (tablespaces kept in folders of their own); see {@link Relocation}. */
  readonly relocate?: Relocation;
  /** How long a restore into a live target waits for other sessions' locks on its tables (see {@link EngineRestoreOptions.lockWaitSeconds}). */
  readonly lockWaitSeconds?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
}

/** What a restore did. */
export interface RestoreResult {
  readonly backup: BackupRecord;
  /** The restore points that were read, oldest first (the full, then differential/incrementals). */
  readonly chain: readonly BackupRecord[];
  readonly target: string;
  readonly bytes: number;
  /**
   * Present when the repository's own copy of the chain could not be read (an artifact missing or
   * damaged) and the chain was restored from its mirror instead: where, and what was wrong here.
   */
  readonly fromMirror?: RestoreFallback;
  /**
   * With `asOf`: the moment the restored database is of, and how it got there (the restore point,
   * and the transactions replayed from segments after it).
   */
  readonly pointInTime?: PointInTimeResult;
}

/** A restore that used the mirror's copy of the chain (see {@link RestoreResult.fromMirror}). */
export interface RestoreFallback {
  /** The mirror's location. */
  readonly mirror: string;
  /** The error the repository's own copy gave (code and message). */
  readonly reason: { readonly code: string; readonly message: string };
}

/**
 * Failures of reading a chain's own artifacts, which a mirror's copy can make good. Not those of
 * the target (RESTORE_FAILED, NO_SPACE, TARGET_EXISTS), a cancellation or a usage error: the
 * mirror would meet them just the same.
 */
const MIRROR_CAN_HELP = new Set(['ARTIFACT_CORRUPT', 'ARTIFACT_FOREIGN', 'ARTIFACT_HOSTILE', 'CHAIN_BROKEN', 'PASSPHRASE_WRONG']);

/**
 * Restores restore points: checks the target, the chain's artifacts and keys before anything is
 * written, then has ChainReader.restore (restoreChain) assemble the chain into the engine's restore session.
 */
export class Restorer {
  readonly #ctx: RepositoryContext;
  readonly #mirror: (() => Promise<RepositoryContext>) | undefined;

  /** `mirror` opens the repository's mirror, whose copy a restore falls back on. */
  constructor(ctx: RepositoryContext, mirror?: () => Promise<RepositoryContext>) {
    this.#ctx = ctx;
    this.#mirror = mirror;
  }

  /** Whether a restore target of the given engine exists, how to name it without secrets, and how its engine is shown. */
  async restoreTarget(engineKind: string, target: string): Promise<{ exists: boolean; description: string; display: EngineDisplay }> {
    const engine = this.#ctx.options.engines.get(engineKind);
    if (!engine) throw new StrataError('ENGINE_UNKNOWN', `no engine ${engineKind} in this program (known: ${this.#ctx.options.engines.kinds().join(', ')})`);
    if (!engine.accepts(target)) {
      // Name the target as the engine it belongs to would (without a password), not as this one would.
      const shown = this.#ctx.options.engines.forLocator(target)?.describe(target) ?? 'the target';
      throw new StrataError('USAGE', `restore: ${shown} is not a ${engineKind} target (the backup is of a ${engineKind} database)`);
    }
    return { exists: await engine.targetExists(target), description: engine.describe(target), display: engine.display };
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
    if (options.lockWaitSeconds !== undefined) checkLockWait(options.lockWaitSeconds);
    const plan = selector.asOf !== undefined ? await this.planAsOf(selector) : undefined;
    const record = plan?.restorePoint ?? (await this.#ctx.catalog.resolve({ ...selector, withRows: true, trusted: true }));
    const op = await this.#ctx.journal.begin('restore', { database: record.database, backupId: record.id, type: record.type });
    try {
      if (options.tables !== undefined) {
        if (options.tables.length === 0) throw new StrataError('USAGE', 'restore: --tables needs at least one table name');
        if (record.type === 'schema-only') throw new StrataError('USAGE', `restore: ${record.id} is schema-only and holds no rows to restore tables from`);
      }
      const engine = this.#ctx.options.engines.get(record.engine);
      if (!engine) throw new StrataError('ENGINE_UNKNOWN', `restore: backup ${record.id} was made by engine ${record.engine}, which this program does not have`);
      if (options.tables !== undefined && !engine.capabilities.tableRestore) {
        throw new StrataError('USAGE', `restore: the ${record.engine} engine cannot restore single tables`);
      }
      // Ends with the commit event restoreInto emits, which delivers the last read event held back.
      const progress = throttleProgress(options.onProgress);
      const restoreOptions = {
        force: options.force ?? false,
        signal: options.signal,
        onProgress: progress.emit,
        ...(options.tables !== undefined ? { tables: options.tables } : {}),
        ...(options.relocate ? { relocate: options.relocate } : {}),
        ...(options.lockWaitSeconds !== undefined ? { lockWaitSeconds: options.lockWaitSeconds } : {}),
      };
      let chain: BackupRecord[];
      let bytes: number;
      let fromMirror: RestoreFallback | undefined;
      let unlocked = false;
      let fetched: FetchedChanges | undefined;
      let pointInTime: PointInTimeResult | undefined;
      try {
        chain = await this.#ctx.catalog.chainOf(record);
        await this.#ctx.chains.checkPresent(chain, record);
        await this.#ctx.unlock();
        unlocked = true;
        // Every key of the chain before any byte of the target is touched.
        for (const link of chain) this.#ctx.keyFor(link, 'restore');
        if (plan && plan.segments.length > 0) {
          if (!engine.changeCapture) throw new StrataError('USAGE', `restore: the ${record.engine} engine of this program cannot replay segments`);
          for (const segment of plan.segments) this.#ctx.vault.keyFor(segment, 'restore');
          // Every segment is read and checked before the restore starts.
          fetched = await fetchChanges(this.#ctx, plan, options.signal);
          pointInTime = fetched.result;
        } else if (plan) {
          pointInTime = withoutSegments(plan);
        }
        bytes = await this.restoreInto(engine, chain, options.to, { ...restoreOptions, ...(fetched ? { changes: fetched.changes() } : {}) });
      } catch (err) {
        // The target was not touched (a failed restore aborts its session): the mirror's copy of
        // the same chain, or of the base and segments for the moment, may still be good.
        if (!this.#mirror || !isStrataError(err) || !MIRROR_CAN_HELP.has(err.code)) throw err;
        // A passphrase that does not open this repository's keys is no damage the mirror repairs.
        if (err.code === 'PASSPHRASE_WRONG' && !unlocked) throw err;
        if (plan && plan.segments.length > 0) ({ chain, bytes, fromMirror, pointInTime } = await this.#asOfFromMirror(plan, engine, options.to, restoreOptions, err));
        else ({ chain, bytes, fromMirror } = await this.#fromMirror(record, engine, options.to, restoreOptions, err));
      } finally {
        await fetched?.remove().catch(() => undefined);
      }
      await op.completeAfterDone({
        rawBytes: chain.reduce((sum, b) => sum + b.rawBytes, 0),
        storedBytes: chain.reduce((sum, b) => sum + b.storedBytes, 0),
        // How many tables, not which: the journal is plaintext even in an encrypted repository.
        details: {
          target: engine.describe(options.to),
          chain: chain.map((b) => b.id),
          ...(options.tables ? { tables: options.tables.length } : {}),
          ...(fromMirror ? { fromMirror: { mirror: fromMirror.mirror, reason: fromMirror.reason.code } } : {}),
          ...(pointInTime ? { pointInTime: { asOf: pointInTime.asOf, segments: pointInTime.segments, transactions: pointInTime.transactions, reachedAt: pointInTime.reachedAt } } : {}),
        },
      });
      return { backup: record, chain, target: options.to, bytes, ...(fromMirror ? { fromMirror } : {}), ...(pointInTime ? { pointInTime } : {}) };
    } catch (err) {
      let wrapped = isStrataError(err) ? err : wrapError(`restore ${record.id}`, err);
      // A damaged segment says nothing of the restore points; a damaged or missing backup does.
      const damaged = typeof wrapped.details['damaged'] === 'string' ? wrapped.details['damaged'] : typeof wrapped.details['missing'] === 'string' ? wrapped.details['missing'] : isStrataError(wrapped, 'ARTIFACT_CORRUPT') && !plan?.segments.length ? record.id : undefined;
      if (damaged !== undefined && (isStrataError(wrapped, 'ARTIFACT_CORRUPT') || isStrataError(wrapped, 'CHAIN_BROKEN'))) {
        wrapped = await this.#withAlternative(wrapped, record, damaged, selector.asOf).catch(() => wrapped);
      }
      await op.fail(wrapped).catch(() => undefined);
      throw wrapped;
    }
  }

  /**
   * `err` with the newest good restore point of the database (at or before `asOf`) whose chain
   * does not need `damaged`: what a person woken by a failed restore needs next, and what `list`
   * would make them work out link by link.
   */
  async #withAlternative(err: StrataError, record: BackupRecord, damaged: string, asOf: Date | undefined): Promise<StrataError> {
    const all = await this.#ctx.catalog.list({ database: record.database });
    const byId = new Map(all.map((b) => [b.id, b]));
    // Walked in the one listing: a damaged full may have hundreds of dependents to pass over.
    const needsDamaged = (b: BackupRecord): boolean => {
      for (let link: BackupRecord | undefined = b, steps = 0; link && steps <= byId.size; link = link.parent ? byId.get(link.parent) : undefined, steps++) {
        if (link.id === damaged) return true;
      }
      return false;
    };
    const limit = asOf?.toISOString();
    const candidate = all
      .filter((b) => b.type !== 'schema-only' && b.id !== record.id && (limit === undefined || b.createdAt <= limit))
      .sort(compareNewestFirst)
      .find((b) => !needsDamaged(b) && isGoodRestorePoint(b, byId));
    if (!candidate) return err;
    const what = limit === undefined ? 'The newest restore point' : `The newest restore point at or before ${limit}`;
    return new StrataError(err.code, redactable`${errorText(err)}. ${what} that does not need ${damaged} is ${candidate.id} (${candidate.createdAt}): restore it by its id`, {
      cause: err.cause,
      details: { ...err.details, alternative: candidate.id },
    });
  }

  /**
   * Restores `record`'s chain from the mirror, which must hold all of it (by backup id). When it
   * cannot, the repository's own error is the one reported, with what the mirror lacked.
   */
  async #fromMirror(
    record: BackupRecord,
    engine: Engine,
    to: string,
    options: { force: boolean; tables?: readonly string[]; relocate?: Relocation; lockWaitSeconds?: number; signal?: AbortSignal; onProgress?: ProgressListener },
    primaryError: StrataError,
  ): Promise<{ chain: BackupRecord[]; bytes: number; fromMirror: RestoreFallback }> {
    let location = 'the mirror';
    try {
      const mirror = await this.#mirror!();
      location = mirror.storage.location;
      const copy = (await mirror.catalog.list({ database: record.database })).find((b) => b.id === record.id);
      if (!copy) throw new StrataError('BACKUP_NOT_FOUND', `the mirror ${location} has no copy of ${record.id} yet`);
      const chain = await mirror.catalog.chainOf(copy);
      await mirror.chains.checkPresent(chain, copy);
      await mirror.unlock();
      for (const link of chain) mirror.keyFor(link, 'restore');
      const bytes = await new Restorer(mirror).restoreInto(engine, chain, to, options);
      return { chain, bytes, fromMirror: { mirror: location, reason: { code: primaryError.code, message: primaryError.message } } };
    } catch (err) {
      throw new StrataError(primaryError.code, `${primaryError.message} (the mirror could not stand in: ${err instanceof Error ? err.message : String(err)})`, {
        cause: primaryError,
        details: primaryError.details,
      });
    }
  }

  /**
   * Restores the database as of `plan`'s moment from the mirror: its own plan (the mirror may hold
   * fewer segments, and the result says how far it reached), base and segments. When it cannot,
   * the repository's own error is the one reported, with what the mirror lacked.
   */
  async #asOfFromMirror(
    primaryPlan: PointInTimePlan,
    engine: Engine,
    to: string,
    options: { force: boolean; tables?: readonly string[]; relocate?: Relocation; lockWaitSeconds?: number; signal?: AbortSignal; onProgress?: ProgressListener },
    primaryError: StrataError,
  ): Promise<{ chain: BackupRecord[]; bytes: number; fromMirror: RestoreFallback; pointInTime: PointInTimeResult }> {
    let location = 'the mirror';
    let fetched: FetchedChanges | undefined;
    try {
      const mirror = await this.#mirror!();
      location = mirror.storage.location;
      const plan = await new Restorer(mirror).planAsOf({ database: primaryPlan.restorePoint.database, asOf: primaryPlan.asOf });
      const chain = await mirror.catalog.chainOf(plan.restorePoint);
      await mirror.chains.checkPresent(chain, plan.restorePoint);
      await mirror.unlock();
      for (const link of chain) mirror.keyFor(link, 'restore');
      for (const segment of plan.segments) mirror.vault.keyFor(segment, 'restore');
      if (plan.segments.length > 0) fetched = await fetchChanges(mirror, plan, options.signal);
      const bytes = await new Restorer(mirror).restoreInto(engine, chain, to, { ...options, ...(fetched ? { changes: fetched.changes() } : {}) });
      return { chain, bytes, fromMirror: { mirror: location, reason: { code: primaryError.code, message: primaryError.message } }, pointInTime: fetched?.result ?? withoutSegments(plan) };
    } catch (err) {
      throw new StrataError(primaryError.code, `${primaryError.message} (the mirror could not stand in: ${err instanceof Error ? err.message : String(err)})`, {
        cause: primaryError,
        details: primaryError.details,
      });
    } finally {
      await fetched?.remove().catch(() => undefined);
    }
  }

  /** Assembles `chain` into `target` through a restore session of `engine` (also the validator's scratch restore). */
  async restoreInto(
    engine: Engine,
    chain: readonly BackupRecord[],
    target: string,
    options: { force: boolean; tables?: readonly string[]; relocate?: Relocation; lockWaitSeconds?: number; signal?: AbortSignal; onProgress?: ProgressListener; changes?: AsyncIterable<Uint8Array> },
  ): Promise<number> {
    const tip = chain.at(-1)!;
    const session = await engine.beginRestore(target, {
      force: options.force,
      tempDir: await this.#ctx.tempDir(),
      signal: options.signal,
      ...(options.tables ? { tables: options.tables } : {}),
      ...(options.relocate ? { relocate: options.relocate } : {}),
      ...(options.lockWaitSeconds !== undefined ? { lockWaitSeconds: options.lockWaitSeconds } : {}),
      chain: chain.map((link) => ({ id: link.id, ...(link.incrementalMethod ? { incrementalMethod: link.incrementalMethod } : {}) })),
    });
    try {
      const { contents, bytes } = await this.#ctx.chains.restore(
        chain,
        session,
        { tempDir: await this.#ctx.tempDir(), ...(options.signal ? { signal: options.signal } : {}), ...(options.onProgress ? { onProgress: options.onProgress } : {}) },
        'restore',
      );
      options.onProgress?.({ operation: 'restore', phase: 'commit', doneBytes: tip.storedBytes, totalBytes: tip.storedBytes, backupId: tip.id });
      await session.commit({
        schemaOnly: tip.type === 'schema-only',
        schemaSql: contents.schemaSql,
        engineMeta: contents.manifest.engineMeta,
        tables: tableNames(engine, await this.#ctx.chains.factsOf(tip, contents.manifest, 'restore')),
        ...(options.changes ? { changes: options.changes } : {}),
      });
      return bytes;
    } catch (err) {
      await session.abort().catch(() => undefined);
      throw err;
    }
  }

  /**
   * What a restore as of `selector.asOf` would use: the restore point and the segments after it
   * that reach nearest to that moment (see point-in-time.ts). Fails as `resolve` does when the
   * database has nothing that old.
   */
  async planAsOf(selector: Selector): Promise<PointInTimePlan> {
    const chosen = await this.#ctx.catalog.resolve({ ...selector, trusted: true });
    const contents = await readCatalogContents(this.#ctx.storage);
    if (!contents || !contents.segments.some((s) => s.database === chosen.database)) return { restorePoint: chosen, segments: [], asOf: selector.asOf! };
    return planPointInTime(contents, chosen.database, selector.asOf!) ?? { restorePoint: chosen, segments: [], asOf: selector.asOf! };
  }

  /** The tables a restore point holds, read from its artifact's manifest (reads the artifact once). */
  async tablesOf(selector: Selector, options: { signal?: AbortSignal } = {}): Promise<string[]> {
    const record = await this.#ctx.catalog.resolve(selector);
    await this.#ctx.unlock();
    const contents = await readArtifact({ storage: this.#ctx.storage, location: this.#ctx.chains.location(record), passphrase: this.#ctx.keyFor(record, 'tables'), ...(options.signal ? { signal: options.signal } : {}) });
    return tableNames(this.#ctx.options.engines.get(record.engine), await this.#ctx.chains.factsOf(record, contents.manifest, 'tables'));
  }
}

/** The tables among a restore point's facts, without the entries its engine records beside them. */
function tableNames(engine: Engine | undefined, facts: { tables: readonly { name: string }[] }): string[] {
  const besides = new Set(engine?.nonTableFacts ?? []);
  return facts.tables.map((t) => t.name).filter((name) => !besides.has(name));
}

/** What a restore as of a moment reached when no segment covers it: the restore point itself. */
function withoutSegments(plan: PointInTimePlan): PointInTimeResult {
  const record = plan.restorePoint;
  return {
    asOf: plan.asOf.toISOString(),
    restorePoint: record.id,
    segments: 0,
    transactions: 0,
    reachedAt: record.createdAt,
    completeThrough: record.createdAt,
    behindMs: plan.asOf.getTime() - Date.parse(record.createdAt),
  };
}
