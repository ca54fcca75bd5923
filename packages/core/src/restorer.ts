import type { BackupRecord } from './catalog.js';
import type { Engine, EngineDisplay } from './engine.js';
import { StrataError, isStrataError, wrapError } from './errors.js';
import { restoreChain } from './chain-restore.js';
import { checkManifestMatches } from './chain-reader.js';
import { readArtifact } from './format/artifact-reader.js';
import type { ProgressListener } from './progress.js';
import { throttleProgress } from './progress.js';
import type { Selector } from './backup-catalog.js';
import type { RepositoryContext } from './repository-context.js';

/** Options for {@link Repository.restore}. */
export interface RestoreOptions {
  /** The target: a file path for file engines, a URL for server engines. */
  readonly to: string;
  readonly force?: boolean;
  /** Restore only these tables: into a new target, or replacing just them in an existing one. */
  readonly tables?: readonly string[];
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
}

/**
 * Restores restore points: checks the target, the chain's artifacts and keys before anything is
 * written, then has {@link restoreChain} assemble the chain into the engine's restore session.
 */
export class Restorer {
  readonly #ctx: RepositoryContext;

  constructor(ctx: RepositoryContext) {
    this.#ctx = ctx;
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
    const record = await this.#ctx.catalog.resolve(selector);
    const op = await this.#ctx.journal.begin('restore', { database: record.database, backupId: record.id, type: record.type });
    try {
      if (options.tables !== undefined) {
        if (options.tables.length === 0) throw new StrataError('USAGE', 'restore: --tables needs at least one table name');
        if (record.type === 'schema-only') throw new StrataError('USAGE', `restore: ${record.id} is schema-only and holds no rows to restore tables from`);
      }
      const chain = await this.#ctx.catalog.chainOf(record);
      await this.#ctx.chains.checkPresent(chain, record);
      await this.#ctx.unlock();
      // Every key of the chain before any byte of the target is touched.
      for (const link of chain) this.#ctx.keyFor(link, 'restore');
      const engine = this.#ctx.options.engines.get(record.engine);
      if (!engine) throw new StrataError('ENGINE_UNKNOWN', `restore: backup ${record.id} was made by engine ${record.engine}, which this program does not have`);
      if (options.tables !== undefined && !engine.capabilities.tableRestore) {
        throw new StrataError('USAGE', `restore: the ${record.engine} engine cannot restore single tables`);
      }
      // Ends with the commit event restoreInto emits, which delivers the last read event held back.
      const progress = throttleProgress(options.onProgress);
      const bytes = await this.restoreInto(engine, chain, options.to, {
        force: options.force ?? false,
        signal: options.signal,
        onProgress: progress.emit,
        ...(options.tables !== undefined ? { tables: options.tables } : {}),
      });
      await op.complete({
        rawBytes: chain.reduce((sum, b) => sum + b.rawBytes, 0),
        storedBytes: chain.reduce((sum, b) => sum + b.storedBytes, 0),
        // How many tables, not which: the journal is plaintext even in an encrypted repository.
        details: { target: engine.describe(options.to), chain: chain.map((b) => b.id), ...(options.tables ? { tables: options.tables.length } : {}) },
      });
      return { backup: record, chain, target: options.to, bytes };
    } catch (err) {
      const wrapped = isStrataError(err) ? err : wrapError(`restore ${record.id}`, err);
      await op.fail(wrapped).catch(() => undefined);
      throw wrapped;
    }
  }

  /** Assembles `chain` into `target` through a restore session of `engine` (also the validator's scratch restore). */
  async restoreInto(
    engine: Engine,
    chain: readonly BackupRecord[],
    target: string,
    options: { force: boolean; tables?: readonly string[]; signal?: AbortSignal; onProgress?: ProgressListener },
  ): Promise<number> {
    const tip = chain.at(-1)!;
    const session = await engine.beginRestore(target, {
      force: options.force,
      tempDir: await this.#ctx.tempDir(),
      signal: options.signal,
      ...(options.tables ? { tables: options.tables } : {}),
    });
    try {
      const { contents, bytes } = await restoreChain({
        storage: this.#ctx.storage,
        chain: chain.map((record) => ({ record, location: this.#ctx.chains.location(record), passphrase: this.#ctx.keyFor(record, 'restore') })),
        session,
        tempDir: await this.#ctx.tempDir(),
        signal: options.signal,
        onProgress: options.onProgress,
        checkManifest: checkManifestMatches,
        completeLayouts: (entries) => this.#ctx.chains.complete(tip, entries, 'restore'),
      });
      options.onProgress?.({ operation: 'restore', phase: 'commit', doneBytes: tip.storedBytes, totalBytes: tip.storedBytes, backupId: tip.id });
      await session.commit({
        schemaOnly: tip.type === 'schema-only',
        schemaSql: contents.schemaSql,
        engineMeta: contents.manifest.engineMeta,
        tables: (await this.#ctx.chains.factsOf(tip, contents.manifest, 'restore')).tables.map((t) => t.name),
      });
      return bytes;
    } catch (err) {
      await session.abort().catch(() => undefined);
      throw err;
    }
  }

  /** The tables a restore point holds, read from its artifact's manifest (reads the artifact once). */
  async tablesOf(selector: Selector, options: { signal?: AbortSignal } = {}): Promise<string[]> {
    const record = await this.#ctx.catalog.resolve(selector);
    await this.#ctx.unlock();
    const contents = await readArtifact({ storage: this.#ctx.storage, location: this.#ctx.chains.location(record), passphrase: this.#ctx.keyFor(record, 'tables'), ...(options.signal ? { signal: options.signal } : {}) });
    return (await this.#ctx.chains.factsOf(record, contents.manifest, 'tables')).tables.map((t) => t.name);
  }
}
