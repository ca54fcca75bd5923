import type { BackupRecord } from './catalog.js';
import type { EncryptionProfile } from './encryption.js';
import { StrataError, errorText, redactable } from './errors.js';
import { readArtifact } from './format/artifact-reader.js';
import type { ArtifactContents, ArtifactLocation } from './format/artifact-reader.js';
import { hasDeltas, resolveLayouts } from './format/chunk-index.js';
import type { ChunkLayout, LayoutEntry } from './format/chunk-index.js';
import { resolveFacts } from './format/facts-delta.js';
import type { CompleteFacts } from './format/facts-delta.js';
import type { Manifest } from './format/manifest.js';
import { factsCacheKey, readFactsCache } from './facts-cache.js';
import { layoutCacheKey, readLayoutCache, writeLayoutCache } from './layout-cache.js';
import { parseArtifactKey } from './naming.js';
import type { RepositoryContext } from './repository-context.js';
import { restoreChain } from './chain-restore.js';
import type { RestoreSession } from './engine.js';
import type { ProgressListener } from './progress.js';
import { isNotFound } from './storage.js';

/**
 * Reads what a backup's chain holds without restoring it: where each artifact is and whether it
 * is all there, complete chunk layouts and complete table facts (resolving deltas against the
 * parents, from the cached copies when they match the catalog).
 */
export class ChainReader {
  readonly #ctx: RepositoryContext;

  constructor(ctx: RepositoryContext) {
    this.#ctx = ctx;
  }

  /**
   * A backup's complete chunk layouts. Its layout entries come from the cached copy when that
   * matches the catalog, else from its artifact; see {@link complete} for deltas.
   */
  async layoutsOf(record: BackupRecord, operation: string): Promise<Map<string, ChunkLayout>> {
    return this.complete(record, await this.#layoutEntriesOf(record, operation), operation);
  }

  /**
   * Complete layouts from a backup's layout `entries`: entries stored as deltas are applied to the
   * parent's complete layouts, whose entries are found the same way, back to the nearest
   * complete ones (at worst the full backup's).
   */
  async complete(record: BackupRecord, entries: ReadonlyMap<string, LayoutEntry>, operation: string): Promise<Map<string, ChunkLayout>> {
    const deltas: { record: BackupRecord; entries: ReadonlyMap<string, LayoutEntry> }[] = [];
    let chain: BackupRecord[] | undefined;
    let current = record;
    let currentEntries = entries;
    while (hasDeltas(currentEntries)) {
      deltas.push({ record: current, entries: currentEntries });
      chain ??= await this.#ctx.catalog.chainOf(record);
      const parent = chain[chain.findIndex((r) => r.id === current.id) - 1];
      if (!parent) throw new StrataError('CHAIN_BROKEN', `${operation}: ${current.id} stores its layout as changes against a parent, and the catalog has none; take a full backup`);
      current = parent;
      currentEntries = await this.#layoutEntriesOf(current, operation);
    }
    let layouts = resolveLayouts(currentEntries, undefined, `${operation}: ${current.id}`);
    for (const link of deltas.reverse()) layouts = resolveLayouts(link.entries, layouts, `${operation}: ${link.record.id}`);
    return layouts;
  }

  /** A backup's layout entries as its artifact holds them: from the cached copy when it matches the catalog, else from the artifact. */
  async #layoutEntriesOf(record: BackupRecord, operation: string): Promise<Map<string, LayoutEntry>> {
    const key = layoutCacheKey(record.database, record.id, record.encryption.profile !== 'none');
    const passphrase = this.#ctx.keyFor(record, operation);
    if (record.layoutsSha256) {
      const cached = await readLayoutCache(this.#ctx.storage, key, record.layoutsSha256, passphrase);
      if (cached) return cached;
    }
    try {
      const contents = await readArtifact({ storage: this.#ctx.storage, location: this.location(record), passphrase });
      checkManifestMatches(contents, record);
      const entries = new Map(contents.layouts);
      await writeLayoutCache(this.#ctx.storage, key, entries, { profile: record.encryption.profile as EncryptionProfile, passphrase }).catch(() => undefined);
      return entries;
    } catch (err) {
      throw new StrataError('CHAIN_BROKEN', redactable`${operation}: cannot read the backup ${record.id}: ${errorText(err)}; take a full backup`, { cause: err });
    }
  }

  /**
   * A restore point's complete facts: its own manifest's when they are complete, else its
   * manifest's changes applied to its parent's complete facts (from the cached copy when it
   * matches the catalog, else found the same way from the parent's artifact).
   */
  async factsOf(record: BackupRecord, manifest: Manifest | undefined, operation: string): Promise<CompleteFacts> {
    const passphrase = this.#ctx.keyFor(record, operation);
    if (!manifest && record.factsSha256) {
      const cached = await readFactsCache(this.#ctx.storage, factsCacheKey(record.database, record.id, record.encryption.profile !== 'none'), record.factsSha256, passphrase);
      if (cached) return cached;
    }
    const own = manifest ?? (await readArtifact({ storage: this.#ctx.storage, location: this.location(record), passphrase })).manifest;
    if (!own.factsDelta) return storedFacts(own);
    const chain = await this.#ctx.catalog.chainOf(record);
    const parent = chain.at(-2);
    if (!parent) throw new StrataError('CHAIN_BROKEN', `${operation}: ${record.id} stores its table facts as changes against a parent, and the catalog has none`);
    return resolveFacts(await this.factsOf(parent, undefined, operation), storedFacts(own), own.factsDelta, `${operation}: ${record.id}`);
  }

  location(record: BackupRecord): ArtifactLocation {
    const parsed = parseArtifactKey(record.key);
    if (!parsed) throw new StrataError('ARTIFACT_FOREIGN', `catalog: ${record.key} is not an artifact name Strata writes`);
    return {
      key: record.key,
      codec: parsed.codec,
      encrypted: parsed.encrypted,
      expectedSha256: record.sha256,
      expectedSize: record.storedBytes,
      maxRawBytes: record.rawBytes,
    };
  }

  /**
   * Assembles the streams of `chain`'s last link into `session` (see {@link restoreChain}): every
   * link read with its own key, checked against the catalog, deltas resolved against the parents.
   */
  restore(
    chain: readonly BackupRecord[],
    session: RestoreSession,
    options: { tempDir: string; signal?: AbortSignal; onProgress?: ProgressListener; only?: ReadonlySet<string> },
    operation: string,
  ): Promise<{ contents: ArtifactContents; bytes: number }> {
    const tip = chain.at(-1)!;
    return restoreChain({
      storage: this.#ctx.storage,
      chain: chain.map((record) => ({ record, location: this.location(record), passphrase: this.#ctx.keyFor(record, operation) })),
      session,
      ...options,
      checkManifest: checkManifestMatches,
      completeLayouts: (entries) => this.complete(tip, entries, operation),
    });
  }

  /** Checks that every artifact of a chain exists with its recorded size, before anything is written. */
  async checkPresent(chain: readonly BackupRecord[], target: BackupRecord): Promise<void> {
    for (const link of chain) {
      try {
        const info = await this.#ctx.storage.stat(link.key);
        if (info.size !== link.storedBytes) {
          throw new StrataError(link === target ? 'ARTIFACT_CORRUPT' : 'CHAIN_BROKEN', `restore ${target.id}: artifact of ${link.id} is ${info.size} bytes, the catalog recorded ${link.storedBytes} (truncated or replaced)`, {
            details: { damaged: link.id },
          });
        }
      } catch (err) {
        if (!isNotFound(err)) throw err;
        if (link === target) throw new StrataError('ARTIFACT_CORRUPT', `restore ${target.id}: its artifact ${link.key} is missing`, { details: { missing: link.id } });
        throw new StrataError('CHAIN_BROKEN', `restore ${target.id}: ancestor ${link.id} is missing (${link.key})`, { details: { missing: link.id } });
      }
    }
  }
}

/** The facts a manifest stores: complete, or (with `factsDelta`) its changes against the parent's. */
export function storedFacts(manifest: Manifest): CompleteFacts {
  return { tables: manifest.tables, ...(manifest.schemaObjects ? { schemaObjects: manifest.schemaObjects } : {}) };
}

/** The manifest inside an artifact must describe the backup the catalog says it is. */
export function checkManifestMatches(contents: ArtifactContents, record: BackupRecord): void {
  const m = contents.manifest;
  if (m.id !== record.id || m.database !== record.database || m.type !== record.type || m.parent !== record.parent) {
    throw new StrataError('ARTIFACT_CORRUPT', `artifact ${record.key} holds backup ${m.id} (${m.database}, ${m.type}), not ${record.id}: it was swapped or renamed`);
  }
}
