import { createHash } from 'node:crypto';
import { recordFromManifest } from './catalog.js';
import type { BackupRecord } from './catalog.js';
import { getCodec } from './compression.js';
import { encryptStream } from './encryption.js';
import type { ChangePosition, Engine, RestoreSession, Snapshot, SnapshotOptions, SnapshotParent } from './engine.js';
import { StrataError, isStrataError, throwIfAborted, wrapError } from './errors.js';
import { LogArchive } from './log-archive.js';
import { writeArchive } from './format/artifact-writer.js';
import type { ChunkLayout } from './format/chunk-index.js';
import { BACKUP_TYPES, PLAIN_FORMAT_VERSION } from './format/manifest.js';
import type { BackupType } from './format/manifest.js';
import { factsDigest } from './format/facts-delta.js';
import { carryCacheKey, carryDigest, encodeCarry, readCarryCache, writeCarryCache } from './carry-cache.js';
import { factsCacheKey, readFactsCache, writeFactsCache } from './facts-cache.js';
import { layoutCacheKey, layoutsDigest, writeLayoutCache } from './layout-cache.js';
import { withRepositoryLock } from './lock.js';
import { artifactKey, newBackupId, validateDatabaseName } from './naming.js';
import type { ProgressListener } from './progress.js';
import { throttleProgress } from './progress.js';
import { refuseFutureTime } from './record-checks.js';
import { chainFault } from './newest-good.js';
import { STRATA_VERSION } from './version.js';
import { commitBackup } from './catalog-commit.js';
import { claimWrite } from './pending-writes.js';
import type { PendingWrite } from './pending-writes.js';
import type { RepositoryContext } from './repository-context.js';
import type { Storage } from './storage.js';
import type { MirrorSyncResult } from './mirror-sync.js';

/** Options for {@link Repository.backup}. */
export interface BackupOptions {
  /** The name the backup is filed under (the CLI derives one from a file's name; the SDK needs it given). */
  readonly database: string;
  /**
   * The name was derived from the source (a file's base name), not chosen by the user. Two files
   * of the same base name (`Default/History`, `Profile 1/History`) must not become one database:
   * when the name already belongs to another source, this one is filed under the name plus a short
   * hash of its source (`History-3f9a2c`), the same every time.
   */
  readonly nameIsDerived?: boolean;
  readonly type?: BackupType;
  readonly label?: string;
  readonly tags?: readonly string[];
  /** The time the backup is recorded at (imports, tests). Default: now. */
  readonly time?: Date;
  /** For incremental/differential: take a full backup instead when there is none yet (or the engine makes none). */
  readonly autoFull?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
  /** With a mirror (OpenOptions.mirror): copy to it after the backup (default true). */
  readonly mirror?: boolean;
  /** With a mirror: how its copy went (the backup is complete either way). */
  readonly onMirror?: (result: MirrorSyncResult) => void;
  /**
   * Told when the backup is not what was asked for in a way the user must hear of: an incremental
   * or differential whose newest parent is known bad builds on another one, or is a full instead.
   */
  readonly onWarning?: (message: string) => void;
  /**
   * Takes the snapshot instead of the engine's `snapshot()`: continuous capture's snapshot at the
   * exact position its segments start from (see replicator.ts), recorded as `changePosition`.
   */
  readonly snapshotAt?: { readonly take: (options: SnapshotOptions) => Promise<Snapshot>; readonly position: ChangePosition };
}

/**
 * Takes backups: picks the parent an incremental or differential builds on, names the backup
 * (by its source when the name was derived), snapshots the database, writes the artifact under
 * its final key (announced by a pending note first) and hands it to {@link commitBackup}.
 */
export class BackupWriter {
  readonly #ctx: RepositoryContext;

  constructor(ctx: RepositoryContext) {
    this.#ctx = ctx;
  }

  /** Takes a backup of the database at `locator` and records it in the catalog. */
  async backup(locator: string, options: BackupOptions): Promise<BackupRecord> {
    let type = options.type ?? 'full';
    if (!BACKUP_TYPES.includes(type)) throw new StrataError('USAGE', `backup: unknown type ${JSON.stringify(type)} (use ${BACKUP_TYPES.join(', ')})`);
    const engine = this.#ctx.engineFor(locator);
    if ((type === 'incremental' || type === 'differential') && !engine.capabilities.incrementals) {
      // Nothing to build on, as for a database without a full backup yet.
      if (!options.autoFull) throw new StrataError('USAGE', `backup: ${engine.display.name} backups cannot be ${type}; take a full backup (--type full)`);
      type = 'full';
    }
    const database = validateDatabaseName(options.nameIsDerived ? await this.#nameForSource(options.database, engine.describe(locator)) : options.database);
    if (options.label !== undefined) checkTagText(options.label, 'label');
    for (const tag of options.tags ?? []) checkTagText(tag, 'tag');
    const time = options.time ?? new Date();
    if (Number.isNaN(time.getTime())) throw new StrataError('USAGE', 'backup: the time is not a valid date');
    refuseFutureTime(time, 'backup');
    const op = await this.#ctx.journal.begin('backup', { database, type });
    let snapshot: Awaited<ReturnType<Engine['snapshot']>> | undefined;
    let pending: PendingWrite | undefined;
    try {
      await this.#ctx.unlock();
      // New artifacts are encrypted under the current data key (KEY_MISSING if this passphrase's
      // key file does not hold it: the backup stops here, before any work).
      await this.#ctx.vault.refuseUnencryptedOverKeys();
      const dataKey = this.#ctx.vault.section.profile === 'none' ? undefined : this.#ctx.vault.current('backup');
      // Wait for a held lock now, not after the snapshot: otherwise a backup that meets a long
      // prune reads and compresses the whole database only to fail at its commit with exit 5.
      await withRepositoryLock(this.#ctx.storage, 'backup', async () => undefined, this.#ctx.options.lock);
      if (options.time) {
        // Restore points are ordered by their time: two of one database at the same moment would
        // leave which is the newer (what `latest` restores, what retention keeps) to chance.
        const same = (await this.#ctx.catalog.list({ database })).find((r) => r.createdAt === time.toISOString());
        if (same) throw new StrataError('USAGE', `backup: ${database} already has a restore point at ${time.toISOString()} (${same.id}); two at one moment cannot be told apart in time. Give another time`);
      }
      let parent: BackupRecord | undefined;
      if (type === 'incremental' || type === 'differential') {
        const records = await this.#ctx.catalog.list({ database });
        // A replication base is of the moment its position was read; a backup committed since (by
        // cron, say) is newer than that moment and cannot be its parent.
        const picked = this.#pickParent(options.snapshotAt ? records.filter((r) => r.createdAt <= time.toISOString()) : records, records, type);
        parent = picked.parent;
        if (picked.passedOver) {
          // A full is the safe answer to a bad chain, asked for or not: refusing would leave the
          // database without a new restore point just when its newest one is known to be bad.
          options.onWarning?.(`${picked.passedOver}; ${parent ? `this ${type} builds on ${parent.id} instead` : 'this backup is a full instead'}`);
        }
        if (!parent) {
          if (!options.autoFull && !picked.passedOver) {
            throw new StrataError('BACKUP_NOT_FOUND', `backup: ${database} has no full backup yet, so there is nothing to take ${type === 'incremental' ? 'an' : 'a'} ${type} against; take a full backup first (or pass --auto-full)`);
          }
          type = 'full';
        } else if (parent.engine !== engine.kind) {
          throw new StrataError('USAGE', `backup: the last backup of ${database} was made by engine ${parent.engine}, not ${engine.kind}; take a full backup`);
        } else if (parent.source !== engine.describe(locator)) {
          // Two databases under one name would chain into each other: an incremental of one
          // against the other restores neither.
          throw new StrataError(
            'USAGE',
            `backup: ${database}'s last backup came from ${parent.source}, not ${engine.describe(locator)}; these are different databases. Give this one its own name (--name), or take a full backup if the database really moved there`,
          );
        } else if (time.getTime() <= Date.parse(parent.createdAt)) {
          throw new StrataError('USAGE', `backup: ${time.toISOString()} is not after ${parent.id} (${parent.createdAt}), which this ${type} would build on; a restore point must be newer than its parent`);
        }
      }
      const parents = parent ? await this.#ctx.chains.layoutsOf(parent, 'backup') : new Map<string, ChunkLayout>();
      // Without the parent's cached facts the new manifest stores its facts whole: correct, only
      // larger, and it needs no decrypting of the parent's chain.
      const parentFacts = parent?.factsSha256
        ? await readFactsCache(this.#ctx.storage, factsCacheKey(database, parent.id, parent.encryption.profile !== 'none'), parent.factsSha256, this.#ctx.keyFor(parent, 'backup'))
        : undefined;
      const codec = getCodec(this.#ctx.config.compression.codec);
      const profile = this.#ctx.vault.section.profile;
      const encrypted = profile !== 'none';
      const objectsOf = (newId: string) => ({
        key: artifactKey(database, newId, codec.extension, encrypted),
        cacheKey: layoutCacheKey(database, newId, encrypted),
        factsKey: factsCacheKey(database, newId, encrypted),
        carryKey: carryCacheKey(database, newId, encrypted),
      });
      // Claimed before the snapshot (a long read) and held until the commit: the artifact goes
      // under its final key at once (an object store cannot rename), and the note claiming it says
      // it is no backup until the catalog lists it (pending-writes.ts).
      const claimed = await claimBackupId(this.#ctx.storage, database, type, time, options.signal, (newId) => {
        const objects = objectsOf(newId);
        return { keys: [objects.key], cacheKeys: [objects.cacheKey, objects.factsKey, objects.carryKey] };
      });
      const id = claimed.id;
      pending = claimed.pending;
      const { key, cacheKey, factsKey, carryKey } = objectsOf(id);
      // The first and last event of each phase, at most ten a second between: the commit event
      // below, the last one, delivers the last write event held back before it.
      const emit = throttleProgress(options.onProgress).emit;
      snapshot = await (options.snapshotAt ? options.snapshotAt.take.bind(options.snapshotAt) : engine.snapshot.bind(engine, locator))({
        schemaOnly: type === 'schema-only',
        tempDir: await this.#ctx.tempDir(),
        signal: options.signal,
        onProgress: (done, total) => emit({ operation: 'backup', phase: 'snapshot', doneBytes: done, totalBytes: total, backupId: id }),
        ...(parent ? { parent: this.#snapshotParent(parent, [...parents.keys()]) } : {}),
        logArchive: { database, has: (name, o) => new LogArchive(this.#ctx).has(database, name, o?.signal ? { signal: o.signal } : {}) },
      });
      throwIfAborted(options.signal, 'backup');
      const totalBytes = snapshot.streams.reduce((sum, s) => sum + (s.size ?? 0), 0);
      let readBytes = 0;
      const { archive, result } = writeArchive({
        manifest: {
          format: 'strata-artifact',
          // The writer raises it when it stores the facts as a delta.
          formatVersion: PLAIN_FORMAT_VERSION,
          id,
          database,
          engine: engine.kind,
          type,
          createdAt: time.toISOString(),
          parent: parent?.id ?? null,
          base: parent ? (parent.base ?? parent.id) : null,
          label: options.label ?? null,
          tags: [...(options.tags ?? [])],
          source: engine.describe(locator),
          databaseBytes: snapshot.databaseBytes,
          schemaFingerprint: snapshot.schemaFingerprint,
          ...(snapshot.schemaObjects ? { schemaObjects: snapshot.schemaObjects } : {}),
          engineMeta: snapshot.engineMeta,
          tool: { name: 'strata', version: STRATA_VERSION },
          ...(dataKey?.id !== undefined ? { keyId: dataKey.id } : {}),
          ...(options.snapshotAt ? { changePosition: options.snapshotAt.position } : {}),
          ...(snapshot.logRange ? { logRange: snapshot.logRange } : {}),
          ...(parent && snapshot.incrementalMethod ? { incrementalMethod: snapshot.incrementalMethod } : {}),
          ...(engine.nonTableFacts?.length ? { nonTableFacts: [...engine.nonTableFacts] } : {}),
        },
        tables: () => snapshot!.tableStats(),
        ...(snapshot.finish ? { finish: snapshot.finish.bind(snapshot) } : {}),
        streams: snapshot.streams,
        schemaSql: snapshot.schemaSql,
        readme: engine.handRecovery?.layout,
        parents: new Map([...parents].map(([name, layout]) => [name, { layout }])),
        ...(parentFacts ? { parentFacts } : {}),
        signal: options.signal,
        onBytes: (n) => {
          readBytes += n;
          emit({ operation: 'backup', phase: 'write', doneBytes: readBytes, totalBytes, backupId: id });
        },
      });
      const raw = { bytes: 0 };
      let bytes: AsyncIterable<Uint8Array> = countBytes(archive, raw);
      bytes = codec.compress(bytes, this.#ctx.config.compression.level, options.signal);
      if (profile !== 'none') bytes = encryptStream(bytes, dataKey!.secret, profile);
      const sha = createHash('sha256');
      // The raw size bounds the stored one (compressed, with little framing added): an object
      // store sizes its upload parts from it. Streams of unknown size leave the database's own.
      const sizeHint = Math.max(totalBytes, snapshot.databaseBytes ?? 0, snapshot.sizeHint ?? 0);
      const info = await this.#ctx.storage.put(key, hashBytes(bytes, sha), { signal: options.signal, ...(sizeHint > 0 ? { sizeHint } : {}) });
      const manifest = result.manifest;
      if (!manifest) throw new StrataError('INTERNAL', 'backup: the archive ended without a manifest');
      const record = recordFromManifest(manifest, {
        key,
        rawBytes: raw.bytes,
        storedBytes: info.size,
        sha256: sha.digest('hex'),
        compression: { codec: codec.name, level: this.#ctx.config.compression.level },
        encryption: { profile, ...(dataKey?.id !== undefined ? { keyId: dataKey.id } : {}) },
      });
      const layoutsSha256 = layoutsDigest(result.layoutEntries);
      const factsSha256 = factsDigest(result.facts!);
      emit({ operation: 'backup', phase: 'commit', doneBytes: totalBytes, totalBytes, backupId: id });
      // Best effort: without the cached copy the next incremental reads the layouts from the artifact.
      // Caches are encrypted under the artifact's own key, so whoever can open the one opens the other.
      await writeLayoutCache(this.#ctx.storage, cacheKey, result.layoutEntries, { profile, passphrase: dataKey?.secret }).catch(() => undefined);
      await writeFactsCache(this.#ctx.storage, factsKey, result.facts!, { profile, passphrase: dataKey?.secret }).catch(() => undefined);
      const carried = snapshot.carryForward?.();
      let carrySha256: string | undefined;
      if (carried) {
        const encoded = encodeCarry({ streams: manifest.streams, bytes: carried });
        // Recorded only once written: a digest without its file would only cost a failed read.
        carrySha256 = await writeCarryCache(this.#ctx.storage, carryKey, encoded, { profile, passphrase: dataKey?.secret }).then(
          () => carryDigest(encoded),
          () => undefined,
        );
      }
      const full: BackupRecord = { ...record, layoutsSha256, factsSha256, ...(carrySha256 ? { carrySha256 } : {}) };
      // From here the commit owns the written objects: it records them or removes them.
      const written = pending;
      pending = undefined;
      await commitBackup(this.#ctx, { parent, record: full, pending: written });
      await op.completeAfterDone({
        // What was taken, which a missing parent may have made a full where the run began as an
        // incremental: stats and the daemon's history count it as what it is.
        type,
        backupId: id,
        rawBytes: record.rawBytes,
        storedBytes: record.storedBytes,
        compressionRatio: record.rawBytes > 0 ? record.storedBytes / record.rawBytes : 1,
        details: {
          databaseBytes: record.databaseBytes,
          ...(parent ? { parent: parent.id, unchanged: manifest.streams.every((st) => st.storedChunks === 0) } : {}),
          ...(snapshot.unrestorable ? { unrestorable: snapshot.unrestorable } : {}),
        },
      });
      return full;
    } catch (err) {
      const wrapped = isStrataError(err) ? err : wrapError(`backup ${database}`, err);
      // Without a catalog entry the backup did not happen: what it wrote goes (a kill here leaves
      // the note, and the next open removes it).
      await pending?.abandon().catch(() => undefined);
      await op.fail(wrapped).catch(() => undefined);
      throw wrapped;
    } finally {
      await snapshot?.close().catch(() => undefined);
    }
  }

  /** What an engine may learn of, and read from, the restore point a backup builds on. */
  #snapshotParent(parent: BackupRecord, streams: readonly string[]): SnapshotParent {
    return {
      id: parent.id,
      streams,
      ...(parent.logRange ? { logRange: parent.logRange } : {}),
      ...(parent.incrementalMethod ? { incrementalMethod: parent.incrementalMethod } : {}),
      ...(parent.carrySha256
        ? {
            carried: async () => {
              // The small file stands in for reading the parent, not for its chain being there:
              // an incremental on a missing or replaced ancestor would restore nothing.
              await this.#ctx.chains.checkPresent(await this.#ctx.catalog.chainOf(parent), parent);
              return readCarryCache(this.#ctx.storage, carryCacheKey(parent.database, parent.id, parent.encryption.profile !== 'none'), parent.carrySha256!, this.#ctx.keyFor(parent, 'backup'));
            },
          }
        : {}),
      read: async (streams, dir, options = {}) => {
        const chain = await this.#ctx.catalog.chainOf(parent);
        await this.#ctx.chains.checkPresent(chain, parent);
        const files = new Map<string, string>();
        // Each stream asked for goes to a file of its own; nothing is committed anywhere.
        const session: RestoreSession = {
          streamTarget: async (name) => {
            const file = `${dir}/parent-stream-${files.size}`;
            files.set(name, file);
            return { kind: 'file', path: file };
          },
          commit: async () => undefined,
          abort: async () => undefined,
        };
        const { contents } = await this.#ctx.chains.restore(chain, session, { tempDir: dir, ...(options.signal ? { signal: options.signal } : {}), only: new Set(streams) }, 'backup');
        return { streams: contents.manifest.streams.map((s) => ({ name: s.name, size: s.size, sha256: s.sha256 })), files };
      },
    };
  }

  /** `derived`, or `derived-<hash of source>` when another source already files its backups under `derived`. */
  async #nameForSource(derived: string, source: string): Promise<string> {
    const mine = (await this.#ctx.catalog.list({ database: derived })).at(-1);
    if (!mine || mine.source === source) return derived;
    return `${derived.slice(0, 56)}-${createHash('sha256').update(source).digest('hex').slice(0, 6)}`;
  }

  /**
   * The restore point a new backup stores its differences against: for an incremental the newest
   * restore point with data (full, differential or incremental), for a differential the newest full;
   * in both cases the newest whose chain is not known bad (newest-good.ts), since a backup built on
   * a damaged link restores nothing, and retention would keep it as the newest restore point while
   * the intact older ones go. `passedOver` says why the newest candidate was not taken (without a
   * parent left, the backup is a full). `all` are the database's records, to find ancestors in.
   */
  #pickParent(records: readonly BackupRecord[], all: readonly BackupRecord[], type: 'incremental' | 'differential'): { parent?: BackupRecord; passedOver?: string } {
    const candidates = records.filter((r) => (type === 'differential' ? r.type === 'full' : r.type !== 'schema-only'));
    const byId = new Map(all.map((b) => [b.id, b]));
    const newest = candidates.at(-1);
    if (!newest) return {};
    const parent = candidates.findLast((r) => chainFault(r, byId) === undefined);
    if (parent === newest) return { parent };
    const fault = chainFault(newest, byId)!;
    const why =
      'missing' in fault
        ? `${newest.id} needs ${fault.missing}, which is missing from the catalog`
        : fault.link === newest
          ? `${newest.id} failed verification at ${fault.failedAt}`
          : `${newest.id} builds on ${fault.link.id}, which failed verification at ${fault.failedAt}`;
    return { ...(parent ? { parent } : {}), passedOver: why };
  }
}

async function* countBytes(source: AsyncIterable<Uint8Array>, counter: { bytes: number }): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    counter.bytes += chunk.byteLength;
    yield chunk;
  }
}

async function* hashBytes(source: AsyncIterable<Uint8Array>, sha: ReturnType<typeof createHash>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    sha.update(chunk);
    yield chunk;
  }
}

/**
 * Labels and tags are shown in terminals, tree views and reports: control characters (escape
 * sequences, newlines) could repaint a terminal or forge lines of output, so they are refused.
 */
function checkTagText(text: string, what: 'label' | 'tag'): void {
  if (text.length > 200) throw new StrataError('USAGE', `backup: a ${what} is at most 200 characters`);
  if (what === 'tag' && text.length === 0) throw new StrataError('USAGE', 'backup: a tag cannot be empty');
  if (/[\u0000-\u001f\u007f-\u009f]/.test(text)) throw new StrataError('USAGE', `backup: the ${what} ${JSON.stringify(text)} contains control characters (escape sequences, newlines, tabs); use printable text`);
}

/** How many ids a backup draws before it stops: only a repository in a bad state takes them all. */
const ID_DRAWS = 100;

/**
 * A new backup id that no other backup has or is writing, claimed for this one and announced with
 * `keysOf`'s objects. Two backups of a database and type in the same second differ only in their
 * ids' 2-byte random suffix, and an artifact written under a taken id's key replaces the other
 * backup's, which then fails its checksum: a CI run met it once, two backups of a test database
 * a moment apart drawing the same suffix. The claim (a note only one writer can create) keeps out
 * a writer still at work; the listing after it, a backup already committed (whose note goes only
 * once its artifact is stored, so one of the two is always seen), whatever compression or
 * encryption its artifact has.
 */
async function claimBackupId(
  storage: Storage,
  database: string,
  type: BackupType,
  time: Date,
  signal: AbortSignal | undefined,
  keysOf: (id: string) => { keys: string[]; cacheKeys: string[] },
): Promise<{ id: string; pending: PendingWrite }> {
  for (let draw = 0; draw < ID_DRAWS; draw++) {
    const id = newBackupId(database, type, time);
    const claim = await claimWrite(storage, id, signal ? { signal } : {});
    if (!claim) continue;
    try {
      let stored = false;
      for await (const _object of storage.list(`backups/${database}/${id}.`, signal ? { signal } : {})) {
        stored = true;
        break;
      }
      if (!stored) {
        const { keys, cacheKeys } = keysOf(id);
        return { id, pending: await claim.announce(keys, cacheKeys) };
      }
    } catch (err) {
      await claim.withdraw().catch(() => undefined);
      throw err;
    }
    // A note left by a failed delete names nothing, and goes at an open once this process is gone.
    await claim.withdraw().catch(() => undefined);
  }
  throw new StrataError(
    'IO',
    `backup: the ${ID_DRAWS} ids drawn for ${database} were all taken or claimed by other writers; look for stale notes in the repository's pending/ folder (Strata removes only those of this host's writers that are gone), or report this as a bug`,
  );
}
