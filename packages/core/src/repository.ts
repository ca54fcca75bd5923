import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { readCatalog, recordFromManifest, redactCheck, sortBackups, writeCatalog } from './catalog.js';
import type { BackupRecord, CheckResult, VerificationRecord } from './catalog.js';
import { getCodec, validateCompression, defaultCompression } from './compression.js';
import type { CompressionConfig } from './compression.js';
import { Passphrase, encryptStream } from './encryption.js';
import type { EncryptionProfile } from './encryption.js';
import { KEYS_PREFIX, KeyVault, RepositoryKeys, checkEncryptionSection, createKeys, hasKeyFiles, keyFileObject, planImportKeys } from './keys.js';
import type { EncryptionSection, ImportKeyPlan, PassphraseSource } from './keys.js';
import { REPOSITORY_CONFIG_KEY } from './repository-config.js';
import type { Engine, EngineDisplay, EngineRegistry } from './engine.js';
import { restoreChain } from './chain-restore.js';
import { describeSchemaDifference, schemaObjectDifferences } from './schema-diff.js';
import { checkForeignRecord, refuseFutureTime } from './record-checks.js';
import { shellCommand } from './shell-quote.js';
import { makePrivateTemp, removePrivateTemp, sweepPrivateTemps } from './private-temp.js';
import { redactLocator } from './server-engine.js';
import { layoutCacheKey, layoutsDigest, readLayoutCache, writeLayoutCache } from './layout-cache.js';
import { hasDeltas, resolveLayouts } from './format/chunk-index.js';
import type { ChunkLayout, LayoutEntry } from './format/chunk-index.js';
import { StrataError, errorText, isStrataError, redactable, redactedMessage, throwIfAborted, wrapError } from './errors.js';
import type { RedactableMessage } from './errors.js';
import { readArtifact } from './format/artifact-reader.js';
import type { ArtifactContents, ArtifactLocation } from './format/artifact-reader.js';
import { writeArchive } from './format/artifact-writer.js';
import { BACKUP_TYPES, PLAIN_FORMAT_VERSION } from './format/manifest.js';
import type { BackupType, Manifest } from './format/manifest.js';
import { factsDigest, resolveFacts } from './format/facts-delta.js';
import type { CompleteFacts } from './format/facts-delta.js';
import { factsCacheKey, readFactsCache, writeFactsCache } from './facts-cache.js';
import { Journal, defaultIsAlive } from './journal.js';
import { hostname } from 'node:os';
import { withRepositoryLock } from './lock.js';
import type { LockOptions } from './lock.js';
import { artifactKey, newBackupId, parseArtifactKey, validateDatabaseName } from './naming.js';
import type { ProgressListener } from './progress.js';
import type { Storage, StorageAccess } from './storage.js';
import { isNotFound } from './storage.js';
import { STRATA_VERSION } from './version.js';
import { planRetention } from './retention.js';
import { newestGoodBackup } from './newest-good.js';
import { exportFormatOf, hashing, readExportContainer, writeExportContainer } from './export-archive.js';
import type { ExportEntry, ExportManifest } from './export-archive.js';
import { recoveryScript, restoreInstructions } from './restore-instructions.js';
import type { RetentionDecision, RetentionPlan, RetentionPolicy } from './retention.js';

export { REPOSITORY_CONFIG_KEY } from './repository-config.js';
/** 2: encrypted with data keys held by key files (see keys.ts); 1: unencrypted, or encrypted with the passphrase itself. */
const REPOSITORY_FORMAT_VERSION = 2;

/** The repository's own settings, fixed at `init` (the encryption section changes with `strata key`). */
interface RepositoryConfigFile {
  format: 'strata-repository';
  version: number;
  id: string;
  createdAt: string;
  encryption: EncryptionSection;
  compression: CompressionConfig;
  /** Absent in repositories made before it existed, which are private. */
  access?: StorageAccess;
}

/** Options for {@link initRepository}. */
export interface InitOptions {
  /** `compat` (gpg can open it), `modern` (AEAD) or `none` (must be asked for explicitly). */
  readonly encryption: EncryptionProfile;
  readonly passphrase?: Passphrase;
  readonly compression?: CompressionConfig;
  /**
   * Let the owner's group read the repository (folders 0750, files 0640), for backup operators
   * who copy or check it under their own account. Recorded in repository.json, so every later
   * process writes with these modes. Default: private to the owner (0700, 0600).
   */
  readonly groupReadable?: boolean;
  /** A label for the first key file (shown by `strata key list`). */
  readonly keyLabel?: string;
}

/** Options for {@link openRepository}. */
export interface OpenOptions {
  readonly engines: EngineRegistry;
  readonly passphrase?: PassphraseSource;
  /** Where snapshots and scratch restores go. Default: the OS temp folder. */
  readonly tempDir?: string;
  readonly lock?: LockOptions;
}

/** Options for {@link Repository.backup}. */
export interface BackupOptions {
  /** The name the backup is filed under; defaults to one derived from the locator. */
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
}

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

/** Options for {@link Repository.verify}. */
export interface VerifyOptions {
  /** `quick`: checks 1–2 (artifacts and hashes). `full`: all five, with a scratch restore. */
  readonly level: 'quick' | 'full';
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
}

/** The validator's report for one backup. */
export interface VerifyReport {
  readonly backupId: string;
  readonly database: string;
  /** The data keys its chain's artifacts need (none for unencrypted ones, or before key files). */
  readonly dataKeys: readonly string[];
  readonly level: 'quick' | 'full';
  readonly outcome: 'passed' | 'failed';
  readonly checks: readonly CheckResult[];
}

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

/**
 * Selects a backup: an id (or a unique prefix of one), `latest`, or the newest restore point with
 * data at or before `asOf`; optionally within one database.
 */
export interface Selector {
  readonly id?: string;
  readonly asOf?: Date;
  readonly database?: string;
}

/**
 * Creates a repository in an empty or missing location.
 *
 * ```ts
 * await initRepository(new LocalStorage('./backups'), { encryption: 'compat', passphrase: new Passphrase(secret) })
 * ```
 */
export async function initRepository(storage: Storage, options: InitOptions): Promise<void> {
  const compression = validateCompression(options.compression ?? defaultCompression());
  getCodec(compression.codec);
  if (options.encryption !== 'none' && !options.passphrase) {
    throw new StrataError('PASSPHRASE_MISSING', 'init: an encrypted repository needs a passphrase (or choose --no-encryption explicitly)');
  }
  if (!['compat', 'modern', 'none'].includes(options.encryption)) {
    throw new StrataError('USAGE', `init: unknown encryption profile ${JSON.stringify(options.encryption)} (use compat, modern or none)`);
  }
  const exists = (): StrataError => new StrataError('REPO_EXISTS', `init: ${storage.location} already holds a Strata repository`);
  if (await storage.stat(REPOSITORY_CONFIG_KEY).then(() => true, () => false)) throw exists();
  const id = randomBytes(8).toString('hex');
  const groupReadable = options.groupReadable === true;
  if (groupReadable && !storage.setAccess) throw new StrataError('USAGE', `init: ${storage.location} has no file permissions to open to a group; leave out --group-readable`);
  // Before the first write (the key file), so it too gets the repository's modes.
  await storage.setAccess?.(groupReadable ? 'group-readable' : 'private', { root: true });
  // The key file first, then the repository.json that lists it: a kill in between leaves a folder
  // that is no repository yet, never a repository no passphrase opens.
  const keys =
    options.encryption === 'none'
      ? undefined
      : await createKeys(storage, { profile: options.encryption, passphrase: options.passphrase!, repositoryId: id, ...(options.keyLabel !== undefined ? { label: options.keyLabel } : {}) });
  const config: RepositoryConfigFile = {
    format: 'strata-repository',
    // Unencrypted repositories stay format 1, which the previous release still reads.
    version: keys ? REPOSITORY_FORMAT_VERSION : 1,
    id,
    createdAt: new Date().toISOString(),
    encryption: keys?.section ?? { profile: 'none' },
    compression,
  };
  if (groupReadable) config.access = 'group-readable';
  const created = await storage.createExclusive(REPOSITORY_CONFIG_KEY, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
  if (!created) {
    if (keys) await storage.delete(keyFileObject(keys.keyFile.id)).catch(() => undefined);
    throw exists();
  }
  await writeCatalog(storage, []);
  const journal = new Journal(storage);
  const op = await journal.begin('init', { details: { encryption: options.encryption, compression, ...(keys ? { keyFile: keys.keyFile.id, dataKey: keys.section.currentKey } : {}) } });
  await op.complete();
}

/**
 * Opens an existing repository.
 *
 * ```ts
 * const repo = await openRepository(new LocalStorage('./backups'), { engines, passphrase })
 * const record = await repo.backup('./app.db', { database: 'app', type: 'full' })
 * ```
 */
export async function openRepository(storage: Storage, options: OpenOptions): Promise<Repository> {
  let bytes: Uint8Array;
  try {
    bytes = await storage.read(REPOSITORY_CONFIG_KEY);
  } catch (err) {
    if (isNotFound(err)) {
      const exists = await storage.exists();
      throw new StrataError(
        'REPO_NOT_FOUND',
        exists
          ? `repository: ${storage.location} is not a Strata repository (no ${REPOSITORY_CONFIG_KEY}); run \`strata init\` first`
          : `repository: ${storage.location} does not exist; run \`strata init\` to create it`,
      );
    }
    throw err;
  }
  let config: RepositoryConfigFile;
  try {
    config = JSON.parse(Buffer.from(bytes).toString('utf8')) as RepositoryConfigFile;
  } catch (err) {
    throw new StrataError('REPO_NOT_FOUND', `repository: ${REPOSITORY_CONFIG_KEY} in ${storage.location} is not valid JSON`, { cause: err });
  }
  if (config.format !== 'strata-repository') throw new StrataError('REPO_NOT_FOUND', `repository: ${storage.location} is not a Strata repository`);
  if (typeof config.version !== 'number' || config.version > REPOSITORY_FORMAT_VERSION) {
    throw new StrataError('REPO_VERSION_UNSUPPORTED', `repository: format version ${config.version} was written by a newer Strata (this one reads up to ${REPOSITORY_FORMAT_VERSION}); upgrade Strata`);
  }
  checkEncryptionSection(config.encryption, storage.location);
  if (config.access !== undefined && config.access !== 'private' && config.access !== 'group-readable') {
    throw new StrataError('ARTIFACT_CORRUPT', `repository: ${REPOSITORY_CONFIG_KEY} in ${storage.location} is damaged (unknown access ${JSON.stringify(config.access)}); put back a copy of it`);
  }
  // Before the first write of this process (the sweeps below delete, later commands write).
  await storage.setAccess?.(config.access ?? 'private');
  await sweepPrivateTemps(options.tempDir);
  await storage.sweepTemp?.();
  await sweepStaging(storage);
  await finishInterruptedCommits(storage);
  await finishInterruptedDeletions(storage, options.lock);
  return new Repository(storage, config, options);
}

/**
 * A repository of backups. Every method is safe to call from several processes at once: catalog
 * changes take the repository lock for a moment, artifacts are written under temporary names.
 */
export class Repository {
  readonly storage: Storage;
  readonly journal: Journal;
  readonly #config: RepositoryConfigFile;
  readonly #options: OpenOptions;
  readonly #vault: KeyVault;
  /** Passphrases and data keys: list, add, remove, passwd, rotate, migrate (see {@link RepositoryKeys}). */
  readonly keys: RepositoryKeys;
  #privateTemp: Promise<string> | undefined;
  #catalogCache: BackupRecord[] | undefined;

  /** Use {@link openRepository}. */
  constructor(storage: Storage, config: RepositoryConfigFile, options: OpenOptions) {
    this.storage = storage;
    this.journal = new Journal(storage);
    this.#config = config;
    this.#options = options;
    this.#vault = new KeyVault(storage, config.encryption, options.passphrase);
    this.keys = new RepositoryKeys({ storage, journal: this.journal, lock: options.lock, repositoryId: config.id, vault: this.#vault, backups: () => this.list() });
  }

  /** The settings chosen at init (never secrets). */
  get settings(): { id: string; encryption: EncryptionProfile; compression: CompressionConfig; location: string; access: StorageAccess } {
    return { id: this.#config.id, encryption: this.#vault.section.profile, compression: this.#config.compression, location: this.storage.location, access: this.#config.access ?? 'private' };
  }

  /** This process's private temporary folder, made on first use (see {@link makePrivateTemp}). */
  async #tempDir(): Promise<string> {
    this.#privateTemp ??= makePrivateTemp(this.#options.tempDir);
    return this.#privateTemp;
  }

  /** Unlocks the keys (asking for the passphrase if needed); true when the repository is encrypted. */
  async #unlock(): Promise<boolean> {
    return (await this.#vault.unlock()) !== undefined;
  }

  /** The OpenPGP password of a record's artifact (see {@link KeyVault.keyFor}); call after {@link #unlock}. */
  #keyFor(record: BackupRecord, what: string): Passphrase | undefined {
    return this.#vault.keyFor(record, what);
  }

  /** Whether a restore target of the given engine exists, how to name it without secrets, and how its engine is shown. */
  async restoreTarget(engineKind: string, target: string): Promise<{ exists: boolean; description: string; display: EngineDisplay }> {
    const engine = this.#options.engines.get(engineKind);
    if (!engine) throw new StrataError('ENGINE_UNKNOWN', `no engine ${engineKind} in this program (known: ${this.#options.engines.kinds().join(', ')})`);
    if (!engine.accepts(target)) {
      // Name the target as the engine it belongs to would (without a password), not as this one would.
      const shown = this.#options.engines.forLocator(target)?.describe(target) ?? 'the target';
      throw new StrataError('USAGE', `restore: ${shown} is not a ${engineKind} target (the backup is of a ${engineKind} database)`);
    }
    return { exists: await engine.targetExists(target), description: engine.describe(target), display: engine.display };
  }

  /** Checks the passphrase now (the CLI does this before touching anything). */
  async unlock(): Promise<void> {
    await this.#unlock();
  }

  /** Every backup, oldest first; rebuilds the catalog from the artifacts if it is missing. */
  async list(filter: { database?: string } = {}): Promise<BackupRecord[]> {
    // Records from before `strata key migrate` name no key; they are shown with the one they need.
    const all = (await this.#catalog()).map((b) => {
      const keyId = b.encryption.keyId === undefined ? this.#vault.keyIdOf(b) : undefined;
      return keyId === undefined ? b : { ...b, encryption: { ...b.encryption, keyId } };
    });
    return filter.database === undefined ? all : all.filter((b) => b.database === filter.database);
  }

  async #catalog(): Promise<BackupRecord[]> {
    const records = await readCatalog(this.storage);
    if (records) {
      this.#catalogCache = records;
      return sortBackups(records);
    }
    return withRepositoryLock(this.storage, 'rebuild-catalog', async () => {
      // Another process may have rebuilt it while we waited for the lock.
      const again = await readCatalog(this.storage);
      if (again) return sortBackups(again);
      const rebuilt = await this.#rebuild();
      this.#catalogCache = rebuilt;
      return rebuilt;
    }, this.#options.lock);
  }

  /** The newest verification result of each backup, as the journal recorded it. */
  async #verificationsFromJournal(): Promise<Map<string, VerificationRecord>> {
    const out = new Map<string, VerificationRecord>();
    const records = await this.journal.records().catch(() => []);
    for (const r of records) {
      if (r.kind !== 'verify' || r.status !== 'COMPLETED' || !r.backupId) continue;
      const v = (r.details as { verification?: VerificationRecord } | undefined)?.verification;
      if (v && typeof v.at === 'string' && (v.outcome === 'passed' || v.outcome === 'failed') && Array.isArray(v.checks)) out.set(r.backupId, v);
      else if (!v && (r.details as { outcome?: string } | undefined)?.outcome) {
        // Journals of older versions have the outcome without the checks.
        const d = r.details as { outcome: 'passed' | 'failed'; level?: 'quick' | 'full' };
        out.set(r.backupId, { at: r.at, level: d.level ?? 'quick', outcome: d.outcome, checks: [] });
      }
    }
    return out;
  }

  /** Reads every artifact's manifest and writes a fresh catalog. Needs the passphrase if encrypted. */
  async rebuildCatalog(options: { signal?: AbortSignal } = {}): Promise<BackupRecord[]> {
    return withRepositoryLock(this.storage, 'rebuild-catalog', () => this.#rebuild(options.signal), this.#options.lock);
  }

  async #rebuild(signal?: AbortSignal): Promise<BackupRecord[]> {
    const op = await this.journal.begin('rebuild-catalog');
    try {
      const previous = (await readCatalog(this.storage)) ?? [];
      // Verification results are not in the artifacts: take them from the old catalog if it is
      // readable, else from the journal, which records each verify's result.
      const verification = new Map<string, VerificationRecord | null>(await this.#verificationsFromJournal());
      for (const b of previous) if (b.verification) verification.set(b.id, b.verification);
      const records: BackupRecord[] = [];
      const skipped: string[] = [];
      const unopened: string[] = [];
      // An artifact names no key outside its encryption: each data key is tried, the current first.
      let candidates: { id: string | undefined; secret: Passphrase }[] | undefined;
      for await (const object of this.storage.list('backups/', { signal })) {
        const parsed = parseArtifactKey(object.key);
        if (!parsed) continue;
        let failure: unknown;
        if (parsed.encrypted && !candidates) {
          await this.#unlock();
          candidates = this.#vault.candidates();
        }
        for (const key of parsed.encrypted ? candidates! : [undefined]) {
          try {
            const contents = await readArtifact({ storage: this.storage, location: { key: object.key, codec: parsed.codec, encrypted: parsed.encrypted }, passphrase: key?.secret, signal });
            const record = recordFromManifest(contents.manifest, {
              key: object.key,
              rawBytes: contents.rawBytes,
              storedBytes: contents.storedBytes,
              sha256: contents.sha256,
              compression: { codec: parsed.codec, level: parsed.codec === this.#config.compression.codec ? this.#config.compression.level : 0 },
              encryption: { profile: parsed.encrypted ? this.#vault.section.profile : 'none', ...(key?.id !== undefined ? { keyId: key.id } : {}) },
            });
            // A delta's digest is that of the complete facts, which is what the cached copy holds.
            const factsSha256 = contents.manifest.factsDelta?.digest ?? factsDigest(storedFacts(contents.manifest));
            records.push({ ...record, layoutsSha256: layoutsDigest(contents.layouts), factsSha256, verification: verification.get(record.id) ?? null });
            failure = undefined;
            break;
          } catch (err) {
            if (isStrataError(err, 'ABORTED')) throw err;
            // A wrong key usually fails at once, but now and then only as garbage further on: any
            // failure sends the next key in.
            failure ??= err;
          }
        }
        if (failure === undefined) continue;
        if (parsed.encrypted && this.#vault.lacksSomeKey()) unopened.push(object.key);
        // The keys opened every key the repository has, so an artifact that does not read is
        // damaged (or foreign). It cannot be listed; the journal says so instead of failing the rebuild.
        else skipped.push(`${object.key}: ${redactedMessage(failure)}`);
      }
      if (unopened.length > 0) {
        // Written now, the catalog would drop backups that only other key files can open.
        throw new StrataError(
          'KEY_MISSING',
          `rebuild-catalog: ${unopened.length} artifact(s) (${unopened.slice(0, 3).join(', ')}${unopened.length > 3 ? ', ...' : ''}) open with none of the data keys your key file holds, and the repository has data keys it does not hold; rebuild with the passphrase of a key file that holds them all (\`strata key list\`)`,
        );
      }
      await writeCatalog(this.storage, records);
      await op.complete({ details: { backups: records.length, skipped } });
      return sortBackups(records);
    } catch (err) {
      await op.fail(err);
      throw err;
    }
  }

  /** Finds one backup by id, unique id prefix, or `latest` (within `database` if given). */
  async resolve(selector: Selector): Promise<BackupRecord> {
    const all = await this.list(selector.database === undefined ? {} : { database: selector.database });
    const single = (what: string): void => {
      const databases = new Set(all.map((b) => b.database));
      if (selector.database === undefined && databases.size > 1) {
        throw new StrataError('USAGE', `${what} is ambiguous: the repository holds ${[...databases].sort().join(', ')}; name one with --db`);
      }
    };
    if (selector.asOf !== undefined) {
      if (selector.id !== undefined) throw new StrataError('USAGE', 'give a backup id or a time (--as-of), not both');
      if (Number.isNaN(selector.asOf.getTime())) throw new StrataError('USAGE', 'the --as-of time is not a valid date');
      single('--as-of');
      const limit = selector.asOf.toISOString();
      // Schema-only backups hold no rows, so they are not what "the database as of" means.
      const candidates = all.filter((b) => b.type !== 'schema-only' && b.createdAt <= limit);
      const chosen = candidates.at(-1);
      if (!chosen) {
        const first = all.find((b) => b.type !== 'schema-only');
        throw new StrataError(
          'BACKUP_NOT_FOUND',
          `no restore point${selector.database ? ` of ${selector.database}` : ''} at or before ${limit}${first ? ` (the oldest is ${first.id} at ${first.createdAt})` : ''}`,
        );
      }
      return chosen;
    }
    const id = selector.id ?? 'latest';
    if (id === 'latest') {
      single('"latest"');
      const newest = all.at(-1);
      if (!newest) throw new StrataError('BACKUP_NOT_FOUND', selector.database ? `no backups of ${selector.database} yet` : 'the repository holds no backups yet');
      return newest;
    }
    const exact = all.find((b) => b.id === id);
    if (exact) return exact;
    const matches = all.filter((b) => b.id.startsWith(id));
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) throw new StrataError('USAGE', `backup id prefix ${id} matches ${matches.length} backups; give more of the id`);
    throw new StrataError('BACKUP_NOT_FOUND', `no backup ${id}${selector.database ? ` of ${selector.database}` : ''} in ${this.storage.location}`);
  }

  #engineFor(locator: string): Engine {
    const engine = this.#options.engines.forLocator(locator);
    if (!engine) {
      throw new StrataError('ENGINE_UNKNOWN', `no engine understands ${JSON.stringify(redactLocator(locator))} (known: ${this.#options.engines.kinds().join(', ')})`);
    }
    return engine;
  }

  /** Takes a backup of the database at `locator` and records it in the catalog. */
  async backup(locator: string, options: BackupOptions): Promise<BackupRecord> {
    let type = options.type ?? 'full';
    if (!BACKUP_TYPES.includes(type)) throw new StrataError('USAGE', `backup: unknown type ${JSON.stringify(type)} (use ${BACKUP_TYPES.join(', ')})`);
    const engine = this.#engineFor(locator);
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
    const op = await this.journal.begin('backup', { database, type });
    let snapshot: Awaited<ReturnType<Engine['snapshot']>> | undefined;
    let staging: string | undefined;
    let moved = false;
    try {
      await this.#unlock();
      // New artifacts are encrypted under the current data key (KEY_MISSING if this passphrase's
      // key file does not hold it: the backup stops here, before any work).
      const dataKey = this.#vault.section.profile === 'none' ? undefined : this.#vault.current('backup');
      // Wait for a held lock now, not after the snapshot: otherwise a backup that meets a long
      // prune reads and compresses the whole database only to fail at its commit with exit 5.
      await withRepositoryLock(this.storage, 'backup', async () => undefined, this.#options.lock);
      let parent: BackupRecord | undefined;
      if (type === 'incremental' || type === 'differential') {
        parent = this.#pickParent(await this.list({ database }), type);
        if (!parent) {
          if (!options.autoFull) {
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
        } else if (time.getTime() < Date.parse(parent.createdAt)) {
          throw new StrataError('USAGE', `backup: ${time.toISOString()} is before ${parent.id} (${parent.createdAt}), which this ${type} would build on; a restore point cannot be older than its parent`);
        }
      }
      const parents = parent ? await this.#layoutsOf(parent, 'backup') : new Map<string, ChunkLayout>();
      // Without the parent's cached facts the new manifest stores its facts whole: correct, only
      // larger, and it needs no decrypting of the parent's chain.
      const parentFacts = parent?.factsSha256
        ? await readFactsCache(this.storage, factsCacheKey(database, parent.id, parent.encryption.profile !== 'none'), parent.factsSha256, this.#keyFor(parent, 'backup'))
        : undefined;
      const id = newBackupId(database, type, time);
      const codec = getCodec(this.#config.compression.codec);
      const profile = this.#vault.section.profile;
      const key = artifactKey(database, id, codec.extension, profile !== 'none');
      const emit = options.onProgress;
      snapshot = await engine.snapshot(locator, {
        schemaOnly: type === 'schema-only',
        tempDir: await this.#tempDir(),
        signal: options.signal,
        onProgress: (done, total) => emit?.({ operation: 'backup', phase: 'snapshot', doneBytes: done, totalBytes: total, backupId: id }),
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
        },
        tables: () => snapshot!.tableStats(),
        streams: snapshot.streams,
        schemaSql: snapshot.schemaSql,
        readme: engine.handRecovery?.layout,
        parents: new Map([...parents].map(([name, layout]) => [name, { layout }])),
        ...(parentFacts ? { parentFacts } : {}),
        signal: options.signal,
        onBytes: (n) => {
          readBytes += n;
          emit?.({ operation: 'backup', phase: 'write', doneBytes: readBytes, totalBytes, backupId: id });
        },
      });
      const raw = { bytes: 0 };
      let bytes: AsyncIterable<Uint8Array> = countBytes(archive, raw);
      bytes = codec.compress(bytes, this.#config.compression.level, options.signal);
      if (profile !== 'none') bytes = encryptStream(bytes, dataKey!.secret, profile);
      const sha = createHash('sha256');
      // Staged outside backups/ (the writer's pid in the name, so a sweep can tell a dead
      // writer's leftovers); it moves into place under the lock, with the catalog write.
      staging = `staging/${process.pid}-${randomBytes(6).toString('hex')}-${key.split('/').pop()}`;
      const info = await this.storage.put(staging, hashBytes(bytes, sha), { signal: options.signal });
      const manifest = result.manifest;
      if (!manifest) throw new StrataError('INTERNAL', 'backup: the archive ended without a manifest');
      const record = recordFromManifest(manifest, {
        key,
        rawBytes: raw.bytes,
        storedBytes: info.size,
        sha256: sha.digest('hex'),
        compression: { codec: codec.name, level: this.#config.compression.level },
        encryption: { profile, ...(dataKey?.id !== undefined ? { keyId: dataKey.id } : {}) },
      });
      const layoutsSha256 = layoutsDigest(result.layoutEntries);
      const cacheKey = layoutCacheKey(database, id, profile !== 'none');
      const factsKey = factsCacheKey(database, id, profile !== 'none');
      const factsSha256 = factsDigest(result.facts!);
      const full: BackupRecord = { ...record, layoutsSha256, factsSha256 };
      emit?.({ operation: 'backup', phase: 'commit', doneBytes: totalBytes, totalBytes, backupId: id });
      // Best effort: without the cached copy the next incremental reads the layouts from the artifact.
      // Caches are encrypted under the artifact's own key, so whoever can open the one opens the other.
      await writeLayoutCache(this.storage, cacheKey, result.layoutEntries, { profile, passphrase: dataKey?.secret }).catch(() => undefined);
      await writeFactsCache(this.storage, factsKey, result.facts!, { profile, passphrase: dataKey?.secret }).catch(() => undefined);
      try {
        await this.#updateCatalog('backup', async (records) => {
          if (parent && !records.some((r) => r.id === parent.id)) {
            throw new StrataError('CHAIN_BROKEN', `backup: its parent ${parent.id} was removed while the backup ran; take the backup again`);
          }
          // If the process dies between the move and the catalog write, this note tells the next
          // open that the artifact was never recorded (the journal says the backup failed).
          await this.storage.put(commitNoteKey(id), Buffer.from(JSON.stringify({ key, cacheKey, pid: process.pid, host: hostname() })));
          await this.storage.rename(staging!, key);
          moved = true;
          return [...records, full];
        });
        await this.storage.delete(commitNoteKey(id));
      } catch (err) {
        await this.storage.delete(commitNoteKey(id)).catch(() => undefined);
        await this.storage.delete(cacheKey).catch(() => undefined);
        await this.storage.delete(factsKey).catch(() => undefined);
        if (!moved) await this.storage.delete(staging).catch(() => undefined);
        // Without a catalog entry the backup did not happen; remove the artifact so the
        // repository and the journal agree.
        await this.storage.delete(key).catch(() => undefined);
        throw err;
      }
      await op.complete({
        backupId: id,
        rawBytes: record.rawBytes,
        storedBytes: record.storedBytes,
        compressionRatio: record.rawBytes > 0 ? record.storedBytes / record.rawBytes : 1,
        details: {
          databaseBytes: record.databaseBytes,
          ...(parent ? { parent: parent.id, unchanged: manifest.streams.every((st) => st.storedChunks === 0) } : {}),
        },
      });
      return full;
    } catch (err) {
      const wrapped = isStrataError(err) ? err : wrapError(`backup ${database}`, err);
      if (staging && !moved) await this.storage.delete(staging).catch(() => undefined);
      await op.fail(wrapped).catch(() => undefined);
      throw wrapped;
    } finally {
      await snapshot?.close().catch(() => undefined);
    }
  }

  /** `derived`, or `derived-<hash of source>` when another source already files its backups under `derived`. */
  async #nameForSource(derived: string, source: string): Promise<string> {
    const mine = (await this.list({ database: derived })).at(-1);
    if (!mine || mine.source === source) return derived;
    return `${derived.slice(0, 56)}-${createHash('sha256').update(source).digest('hex').slice(0, 6)}`;
  }

  /**
   * The restore point a new backup stores its differences against: for an incremental the newest
   * restore point with data (full, differential or incremental), for a differential the newest full.
   */
  #pickParent(records: readonly BackupRecord[], type: 'incremental' | 'differential'): BackupRecord | undefined {
    const candidates = records.filter((r) => (type === 'differential' ? r.type === 'full' : r.type !== 'schema-only'));
    return candidates.at(-1);
  }

  /**
   * A backup's complete chunk layouts. Its layout entries come from the cached copy when that
   * matches the catalog, else from its artifact; see {@link #complete} for deltas.
   */
  async #layoutsOf(record: BackupRecord, operation: string): Promise<Map<string, ChunkLayout>> {
    return this.#complete(record, await this.#layoutEntriesOf(record, operation), operation);
  }

  /**
   * Complete layouts from a backup's layout `entries`: entries stored as deltas are applied to the
   * parent's complete layouts, whose entries are found the same way, back to the nearest
   * complete ones (at worst the full backup's).
   */
  async #complete(record: BackupRecord, entries: ReadonlyMap<string, LayoutEntry>, operation: string): Promise<Map<string, ChunkLayout>> {
    const deltas: { record: BackupRecord; entries: ReadonlyMap<string, LayoutEntry> }[] = [];
    let chain: BackupRecord[] | undefined;
    let current = record;
    let currentEntries = entries;
    while (hasDeltas(currentEntries)) {
      deltas.push({ record: current, entries: currentEntries });
      chain ??= await this.chainOf(record);
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
    const passphrase = this.#keyFor(record, operation);
    if (record.layoutsSha256) {
      const cached = await readLayoutCache(this.storage, key, record.layoutsSha256, passphrase);
      if (cached) return cached;
    }
    try {
      const contents = await readArtifact({ storage: this.storage, location: this.#location(record), passphrase });
      checkManifestMatches(contents, record);
      const entries = new Map(contents.layouts);
      await writeLayoutCache(this.storage, key, entries, { profile: record.encryption.profile as EncryptionProfile, passphrase }).catch(() => undefined);
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
  async #factsOf(record: BackupRecord, manifest: Manifest | undefined, operation: string): Promise<CompleteFacts> {
    const passphrase = this.#keyFor(record, operation);
    if (!manifest && record.factsSha256) {
      const cached = await readFactsCache(this.storage, factsCacheKey(record.database, record.id, record.encryption.profile !== 'none'), record.factsSha256, passphrase);
      if (cached) return cached;
    }
    const own = manifest ?? (await readArtifact({ storage: this.storage, location: this.#location(record), passphrase })).manifest;
    if (!own.factsDelta) return storedFacts(own);
    const chain = await this.chainOf(record);
    const parent = chain.at(-2);
    if (!parent) throw new StrataError('CHAIN_BROKEN', `${operation}: ${record.id} stores its table facts as changes against a parent, and the catalog has none`);
    return resolveFacts(await this.#factsOf(parent, undefined, operation), storedFacts(own), own.factsDelta, `${operation}: ${record.id}`);
  }

  /** Changes the catalog under the repository lock (read, change, write atomically). */
  async #updateCatalog(operation: string, change: (records: BackupRecord[]) => BackupRecord[] | Promise<BackupRecord[]>): Promise<void> {
    await withRepositoryLock(
      this.storage,
      operation,
      async () => {
        const current = (await readCatalog(this.storage)) ?? (await this.#rebuild());
        await writeCatalog(this.storage, await change(current));
      },
      this.#options.lock,
    );
  }

  #location(record: BackupRecord): ArtifactLocation {
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

  /** The restore points a backup needs, oldest first (for a full backup, just itself). */
  async chainOf(record: BackupRecord): Promise<BackupRecord[]> {
    const all = await this.list();
    const byId = new Map(all.map((b) => [b.id, b]));
    const chain: BackupRecord[] = [record];
    let current = record;
    while (current.parent !== null) {
      const parent = byId.get(current.parent);
      if (!parent) {
        throw new StrataError('CHAIN_BROKEN', `restore ${record.id}: ancestor ${current.parent} is missing from the catalog`, { details: { missing: current.parent } });
      }
      // A hand-edited or damaged catalog can link backups in a circle; never walk it forever.
      if (chain.includes(parent)) {
        throw new StrataError('CHAIN_BROKEN', `restore ${record.id}: the catalog's parent links loop through ${parent.id}; the catalog is damaged (delete catalog.json to rebuild it from the artifacts)`);
      }
      chain.unshift(parent);
      current = parent;
    }
    return chain;
  }

  /** Checks that every artifact of a chain exists with its recorded size, before anything is written. */
  async #checkChainPresent(chain: readonly BackupRecord[], target: BackupRecord): Promise<void> {
    for (const link of chain) {
      try {
        const info = await this.storage.stat(link.key);
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
    const record = await this.resolve(selector);
    const op = await this.journal.begin('restore', { database: record.database, backupId: record.id, type: record.type });
    try {
      if (options.tables !== undefined) {
        if (options.tables.length === 0) throw new StrataError('USAGE', 'restore: --tables needs at least one table name');
        if (record.type === 'schema-only') throw new StrataError('USAGE', `restore: ${record.id} is schema-only and holds no rows to restore tables from`);
      }
      const chain = await this.chainOf(record);
      await this.#checkChainPresent(chain, record);
      await this.#unlock();
      // Every key of the chain before any byte of the target is touched.
      for (const link of chain) this.#keyFor(link, 'restore');
      const engine = this.#options.engines.get(record.engine);
      if (!engine) throw new StrataError('ENGINE_UNKNOWN', `restore: backup ${record.id} was made by engine ${record.engine}, which this program does not have`);
      if (options.tables !== undefined && !engine.capabilities.tableRestore) {
        throw new StrataError('USAGE', `restore: the ${record.engine} engine cannot restore single tables`);
      }
      const bytes = await this.#restoreInto(engine, chain, options.to, {
        force: options.force ?? false,
        signal: options.signal,
        onProgress: options.onProgress,
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

  async #restoreInto(
    engine: Engine,
    chain: readonly BackupRecord[],
    target: string,
    options: { force: boolean; tables?: readonly string[]; signal?: AbortSignal; onProgress?: ProgressListener },
  ): Promise<number> {
    const tip = chain.at(-1)!;
    const session = await engine.beginRestore(target, {
      force: options.force,
      tempDir: await this.#tempDir(),
      signal: options.signal,
      ...(options.tables ? { tables: options.tables } : {}),
    });
    try {
      const { contents, bytes } = await restoreChain({
        storage: this.storage,
        chain: chain.map((record) => ({ record, location: this.#location(record), passphrase: this.#keyFor(record, 'restore') })),
        session,
        tempDir: await this.#tempDir(),
        signal: options.signal,
        onProgress: options.onProgress,
        checkManifest: checkManifestMatches,
        completeLayouts: (entries) => this.#complete(tip, entries, 'restore'),
      });
      options.onProgress?.({ operation: 'restore', phase: 'commit', doneBytes: tip.storedBytes, totalBytes: tip.storedBytes, backupId: tip.id });
      await session.commit({
        schemaOnly: tip.type === 'schema-only',
        schemaSql: contents.schemaSql,
        engineMeta: contents.manifest.engineMeta,
        tables: (await this.#factsOf(tip, contents.manifest, 'restore')).tables.map((t) => t.name),
      });
      return bytes;
    } catch (err) {
      await session.abort().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Runs the validator on one backup or on all of them. Findings are collected, never thrown:
   * each check reports passed, failed or skipped with a reason. Results go to the catalog.
   */
  async verify(selector: Selector | 'all', options: VerifyOptions): Promise<VerifyReport[]> {
    const targets = selector === 'all' ? await this.list() : [await this.resolve(selector)];
    const reports: VerifyReport[] = [];
    for (const record of targets) {
      throwIfAborted(options.signal, 'verify');
      const op = await this.journal.begin('verify', { database: record.database, backupId: record.id, details: { level: options.level } });
      let report: VerifyReport;
      try {
        report = await this.#verifyOne(record, options);
      } catch (err) {
        await op.fail(err).catch(() => undefined);
        throw err;
      }
      reports.push(report);
      const verification: VerificationRecord = { at: new Date().toISOString(), level: options.level, outcome: report.outcome, checks: report.checks.map(redactCheck) };
      await this.#updateCatalog('verify', (records) => records.map((r) => (r.id === record.id ? { ...r, verification } : r)));
      // The whole result also goes into the journal, where a rebuild of a lost catalog finds it.
      await op.complete({ details: { level: options.level, outcome: report.outcome, failed: report.checks.filter((c) => c.status === 'failed').map((c) => c.name), verification } });
    }
    return reports;
  }

  async #verifyOne(record: BackupRecord, options: VerifyOptions): Promise<VerifyReport> {
    const checks: CheckResult[] = [];
    const skipRest = (reason: string): void => {
      for (const name of ['checksum-match', 'database-readable', 'schema-integrity', 'data-consistency'] as const) {
        if (!checks.some((c) => c.name === name)) checks.push({ name, status: 'skipped', reason });
      }
    };
    let dataKeys = [this.#vault.keyIdOf(record)];
    const done = (): VerifyReport => ({
      backupId: record.id,
      database: record.database,
      dataKeys: [...new Set(dataKeys.filter((id): id is string => id !== undefined))],
      level: options.level,
      outcome: checks.some((c) => c.status === 'failed') ? 'failed' : 'passed',
      checks,
    });

    // 1. file accessibility: every artifact of the chain is there with its recorded size.
    let chain: BackupRecord[];
    try {
      chain = await this.chainOf(record);
      dataKeys = chain.map((link) => this.#vault.keyIdOf(link));
      await this.#checkChainPresent(chain, record);
      for (const link of chain) {
        const stream = await this.storage.get(link.key);
        const iterator = stream[Symbol.asyncIterator]();
        await iterator.next();
        await iterator.return?.();
      }
      checks.push({ name: 'file-accessibility', status: 'passed', reason: `${chain.length} artifact(s) present, readable, with the recorded sizes` });
    } catch (err) {
      checks.push(failedCheck('file-accessibility', err));
      skipRest('the artifacts are not all accessible');
      return done();
    }

    // 2. checksum match: artifact SHA-256, then every stream and chunk hash inside.
    // A key the passphrase's key file lacks says nothing about the backup: it is an error (exit 4)
    // that names the key, never a failed check recorded against a good backup.
    await this.#unlock();
    for (const link of chain) this.#keyFor(link, 'verify');
    let contents: ArtifactContents | undefined;
    let recorded: CompleteFacts | undefined;
    try {
      for (const link of chain) {
        const read = await readArtifact({
          storage: this.storage,
          location: this.#location(link),
          passphrase: this.#keyFor(link, 'verify'),
          signal: options.signal,
          onBytes: (n) => options.onProgress?.({ operation: 'verify', phase: 'read', doneBytes: n, totalBytes: link.storedBytes, backupId: link.id }),
        });
        checkManifestMatches(read, link);
        if (link === record) contents = read;
        // The facts verify compares with: each manifest's, completed link by link where stored as changes.
        const own = storedFacts(read.manifest);
        if (!read.manifest.factsDelta) recorded = own;
        else if (!recorded) throw new StrataError('ARTIFACT_CORRUPT', `${link.id} stores its table facts as changes, and no older restore point of its chain has them whole`);
        else recorded = resolveFacts(recorded, own, read.manifest.factsDelta, link.id);
      }
      checks.push({ name: 'checksum-match', status: 'passed', reason: 'artifact SHA-256 matches the catalog; every stream and chunk hash matches the manifest' });
    } catch (err) {
      if (isStrataError(err, 'ABORTED')) throw err;
      checks.push(failedCheck('checksum-match', err));
      skipRest('the artifact does not match its checksums');
      return done();
    }
    if (options.level === 'quick') {
      skipRest('level quick runs checks 1 and 2 only; use --level full to restore and compare');
      return done();
    }

    // 3–5 restore into a scratch target and compare with what the backup recorded.
    const engine = this.#options.engines.get(record.engine);
    if (!engine) {
      skipRest(`engine ${record.engine} is not available in this program`);
      return done();
    }
    const scratch = await engine.createScratch({ tempDir: await this.#tempDir(), source: record.source, signal: options.signal });
    try {
      try {
        await this.#restoreInto(engine, chain, scratch.locator, { force: true, signal: options.signal, onProgress: options.onProgress });
        checks.push({ name: 'database-readable', status: 'passed', reason: 'the chain restored into a scratch database' });
      } catch (err) {
        // A full scratch disk says nothing about the backup: it is this machine's problem, reported
        // as an error, never recorded as a failed verification of a good backup.
        if (isStrataError(err, 'ABORTED') || isStrataError(err, 'NO_SPACE') || /database or disk is full|no space left/i.test(messageOf(err))) {
          throw isStrataError(err, 'ABORTED') || isStrataError(err, 'NO_SPACE')
            ? err
            : new StrataError('NO_SPACE', redactable`verify ${record.id}: the scratch restore ran out of space in the temporary folder (${errorText(err)}); set STRATA_TMPDIR to a folder with room for the database`, { cause: err });
        }
        checks.push(failedCheck('database-readable', err));
        skipRest('the backup could not be restored');
        return done();
      }
      let facts: Awaited<ReturnType<Engine['inspect']>>;
      try {
        facts = await engine.inspect(scratch.locator, { signal: options.signal, recordedMeta: contents!.manifest.engineMeta });
      } catch (err) {
        checks.push(failedCheck('database-readable', err, 'restored, but does not open: '));
        skipRest('the restored database does not open');
        return done();
      }
      const manifest = { ...contents!.manifest, tables: recorded!.tables, ...(recorded!.schemaObjects ? { schemaObjects: recorded!.schemaObjects } : {}) };
      const schemaProblems: RedactableMessage[] = [];
      // Objects are compared even when the fingerprints agree: an engine may describe more per
      // object (a database file's header) than its fingerprint, which must stay as older versions made it.
      if (facts.schemaFingerprint !== manifest.schemaFingerprint || schemaObjectDifferences(manifest.schemaObjects, facts.schemaObjects).length > 0) {
        schemaProblems.push(describeSchemaDifference(manifest, facts));
      }
      const integrity = facts.integrityErrors.filter((e) => !e.startsWith('foreign key'));
      if (integrity.length > 0) schemaProblems.push({ text: integrity.slice(0, 5).join('; '), redacted: `${counted(integrity.length, 'integrity check finding')}` });
      checks.push(
        schemaProblems.length === 0
          ? { name: 'schema-integrity', status: 'passed', reason: 'schema fingerprint matches; integrity check ok' }
          : { name: 'schema-integrity', status: 'failed', reason: schemaProblems.map((p) => p.text).join('; '), redacted: schemaProblems.map((p) => p.redacted).join('; ') },
      );
      const dataProblems: string[] = [];
      // The catalog and journal keep counts per kind of problem, never the tables' names.
      const tally = { missing: 0, rows: 0, content: 0 };
      const restored = new Map(facts.tables.map((t) => [t.name, t]));
      for (const table of manifest.tables) {
        const got = restored.get(table.name);
        if (!got) {
          dataProblems.push(`table ${table.name} is missing`);
          tally.missing++;
        } else if (got.rows !== table.rows) {
          dataProblems.push(`table ${table.name} has ${got.rows} rows, the backup recorded ${table.rows}`);
          tally.rows++;
        } else if (got.checksum !== table.checksum) {
          dataProblems.push(`table ${table.name} content checksum differs from the recorded one`);
          tally.content++;
        }
      }
      const foreignKeys = facts.integrityErrors.filter((e) => e.startsWith('foreign key'));
      dataProblems.push(...foreignKeys.slice(0, 5));
      const dataSummary = [
        tally.missing > 0 ? `${counted(tally.missing, 'table')} missing` : '',
        tally.rows > 0 ? `row counts differ in ${counted(tally.rows, 'table')}` : '',
        tally.content > 0 ? `content checksums differ in ${counted(tally.content, 'table')}` : '',
        foreignKeys.length > 0 ? counted(foreignKeys.length, 'foreign key violation') : '',
      ].filter(Boolean);
      checks.push(
        dataProblems.length === 0
          ? { name: 'data-consistency', status: 'passed', reason: `${manifest.tables.length} table(s): row counts and content checksums match${facts.foreignKeysChecked ? '; foreign keys check out' : ''}` }
          : { name: 'data-consistency', status: 'failed', reason: dataProblems.slice(0, 10).join('; '), redacted: `${dataSummary.join('; ')} (of ${counted(manifest.tables.length, 'table')})` },
      );
      return done();
    } finally {
      await scratch.drop().catch(() => undefined);
    }
  }

  /**
   * Applies retention: plans with {@link planRetention} under the repository lock (so the plan
   * sees the catalog as it is), deletes the artifacts and cached layouts of what the plan removes,
   * then drops them from the catalog. Safe to kill at any point: a re-run plans the same removals
   * and finishes them; nothing a kept backup needs is ever touched.
   */
  async prune(policyFor: (database: string) => RetentionPolicy, options: { database?: string; dryRun?: boolean } = {}): Promise<RetentionPlan> {
    const plan = (records: readonly BackupRecord[]): RetentionPlan => {
      const all = options.database === undefined ? records : records.filter((b) => b.database === options.database);
      const keep: RetentionDecision[] = [];
      const remove: RetentionDecision[] = [];
      for (const database of [...new Set(all.map((b) => b.database))].sort()) {
        const part = planRetention(all.filter((b) => b.database === database), policyFor(database));
        keep.push(...part.keep);
        remove.push(...part.remove);
      }
      const newestFirst = (a: RetentionDecision, b: RetentionDecision): number => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id);
      return { keep: keep.sort(newestFirst), remove: remove.sort(newestFirst) };
    };
    // A wrong passphrase must not be able to delete what it cannot read (nor plan to).
    await this.#unlock();
    if (options.dryRun) return plan(await this.list());
    const op = await this.journal.begin('prune', options.database ? { database: options.database } : {});
    try {
      const result = await withRepositoryLock(
        this.storage,
        'prune',
        async () => {
          const records = (await readCatalog(this.storage)) ?? [];
          const decided = plan(records);
          const doomed = new Set(decided.remove.map((d) => d.id));
          await this.#removeLocked(records, doomed);
          return decided;
        },
        this.#options.lock,
      );
      await op.complete({ details: { removed: result.remove.map((d) => d.id), kept: result.keep.length } });
      return result;
    } catch (err) {
      await op.fail(err).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Deletes restore points by id. A backup that others build on (their parent or base) is deleted
   * only with `withDependents`, which deletes those too; otherwise the call fails with
   * CHAIN_BROKEN naming them, and nothing is deleted. Crash-safe like {@link prune}.
   */
  async delete(ids: readonly string[], options: { withDependents?: boolean } = {}): Promise<BackupRecord[]> {
    if (ids.length === 0) throw new StrataError('USAGE', 'delete: name at least one backup');
    await this.#unlock();
    const targets = await Promise.all(ids.map((id) => this.resolve({ id })));
    const op = await this.journal.begin('delete', { details: { requested: targets.map((t) => t.id) } });
    try {
      const removed = await withRepositoryLock(
        this.storage,
        'delete',
        async () => {
          const records = (await readCatalog(this.storage)) ?? [];
          const doomed = withDependentsOf(records, targets.map((t) => t.id));
          const dependents = records.filter((r) => doomed.has(r.id) && !targets.some((t) => t.id === r.id));
          if (dependents.length > 0 && !options.withDependents) {
            throw new StrataError(
              'CHAIN_BROKEN',
              `delete: ${dependents.length} restore point(s) build on what you asked to delete (${dependents.map((d) => d.id).join(', ')}); deleting it would break them. Delete them too (--with-dependents) or keep it`,
              { details: { dependents: dependents.map((d) => d.id) } },
            );
          }
          const gone = records.filter((r) => doomed.has(r.id));
          await this.#removeLocked(records, doomed);
          return gone;
        },
        this.#options.lock,
      );
      await op.complete({ details: { removed: removed.map((r) => r.id) } });
      return removed;
    } catch (err) {
      await op.fail(err).catch(() => undefined);
      throw err;
    }
  }

  /**
   * What {@link delete} would remove, changing nothing: the restore points asked for, those that
   * build on them, and for each database whether its newest good restore point is among them (after
   * which `restore latest` would pick an older one).
   */
  async planDelete(ids: readonly string[]): Promise<{ remove: BackupRecord[]; dependents: BackupRecord[]; newestGood: BackupRecord[] }> {
    if (ids.length === 0) throw new StrataError('USAGE', 'delete: name at least one backup');
    const targets = await Promise.all(ids.map((id) => this.resolve({ id })));
    const records = await this.list();
    const doomed = withDependentsOf(records, targets.map((t) => t.id));
    const remove = records.filter((r) => doomed.has(r.id));
    const newestGood = [...new Set(remove.map((r) => r.database))]
      .map((database) => newestGoodBackup(records.filter((r) => r.database === database)))
      .filter((b): b is BackupRecord => b !== undefined && doomed.has(b.id));
    return { remove, dependents: remove.filter((r) => !targets.some((t) => t.id === r.id)), newestGood };
  }

  /**
   * Drops backups from the catalog and deletes their files; the caller holds the lock. Crash-safe
   * order: note what is about to go, drop it from the catalog (which then only lists complete
   * restore points), delete the files, forget the note. Killed anywhere, it leaves at worst files
   * listed in the note, which the next prune or delete removes.
   */
  async #removeLocked(records: readonly BackupRecord[], doomed: ReadonlySet<string>): Promise<void> {
    const gone = records.filter((r) => doomed.has(r.id));
    const cacheKeys = (r: BackupRecord): string[] => [layoutCacheKey(r.database, r.id, r.encryption.profile !== 'none'), factsCacheKey(r.database, r.id, r.encryption.profile !== 'none')];
    const keys = gone.flatMap((r) => [r.key, ...cacheKeys(r)]);
    // A note left by a killed prune counts only for files the catalog no longer lists: if that
    // prune died before its catalog write, it did not happen, and its note must not delete the
    // artifacts of backups that are still listed (and restorable).
    const kept = new Set(records.filter((r) => !doomed.has(r.id)).flatMap((r) => [r.key, ...cacheKeys(r)]));
    const leftovers = (await readPendingDeletions(this.storage)).filter((key) => !kept.has(key));
    const pending = [...leftovers, ...keys];
    await writePendingDeletions(this.storage, pending);
    await writeCatalog(this.storage, records.filter((r) => !doomed.has(r.id)));
    for (const key of pending) await this.storage.delete(key);
    await writePendingDeletions(this.storage, []);
  }

  /** The tables a restore point holds, read from its artifact's manifest (reads the artifact once). */
  async tablesOf(selector: Selector, options: { signal?: AbortSignal } = {}): Promise<string[]> {
    const record = await this.resolve(selector);
    await this.#unlock();
    const contents = await readArtifact({ storage: this.storage, location: this.#location(record), passphrase: this.#keyFor(record, 'tables'), ...(options.signal ? { signal: options.signal } : {}) });
    return (await this.#factsOf(record, contents.manifest, 'tables')).tables.map((t) => t.name);
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
    const backup = await this.backup(locator, {
      database: options.database,
      type: options.type ?? 'incremental',
      autoFull: true,
      label: options.label ?? 'pre-update',
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    const undo = shellCommand(['strata', 'restore', backup.id, '--to', this.#engineFor(locator).describe(locator), '--force', '--yes', '--repo', this.storage.location]);
    const op = await this.journal.begin('run', { database: options.database, backupId: backup.id, details: { command: options.description ?? 'guarded change', undo } });
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
        await this.restore({ id: backup.id }, { to: locator, force: true });
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

  /**
   * Writes a self-contained archive (`.tar.gz` or `.zip`) holding, for each database, its newest
   * good restore point with its whole chain: the artifacts as they are, their catalog entries,
   * and a RESTORE.md with the exact commands to restore each one with Strata and without it.
   */
  async export(options: { databases?: readonly string[]; out: string }): Promise<{ file: string; backups: BackupRecord[] }> {
    exportFormatOf(options.out);
    await this.#unlock();
    const op = await this.journal.begin('export', { details: { out: options.out } });
    try {
      const all = await this.list();
      const databases = options.databases && options.databases.length > 0 ? [...options.databases] : [...new Set(all.map((b) => b.database))].sort();
      if (databases.length === 0) throw new StrataError('BACKUP_NOT_FOUND', 'export: the repository holds no backups');
      const chosen: BackupRecord[] = [];
      const tips: BackupRecord[] = [];
      for (const database of databases) {
        const mine = all.filter((b) => b.database === database);
        if (mine.length === 0) throw new StrataError('BACKUP_NOT_FOUND', `export: no backups of ${database} (the repository has: ${[...new Set(all.map((b) => b.database))].join(', ')})`);
        const tip = newestGoodBackup(mine);
        if (!tip) throw new StrataError('BACKUP_NOT_FOUND', `export: ${database} has no good restore point with data`);
        const chain = await this.chainOf(tip);
        await this.#checkChainPresent(chain, tip);
        tips.push(tip);
        chosen.push(...chain);
      }
      // Key files are OpenPGP messages sealed with their passphrases: the export carries those
      // that hold the data keys its backups need, so their passphrases open it anywhere.
      const section = this.#vault.section;
      const keyFiles = await this.keys.forExport(chosen);
      const manifest: ExportManifest = {
        format: 'strata-export',
        version: 1,
        createdAt: new Date().toISOString(),
        encryption: hasKeyFiles(section)
          ? { profile: section.profile, keyFiles }
          : { profile: section.profile, ...(section.keyCheck !== undefined ? { keyCheck: section.keyCheck, keyCheckSha256: section.keyCheckSha256! } : {}) },
        backups: chosen,
      };
      const text = (name: string, body: string): ExportEntry => {
        const bytes = Buffer.from(body, 'utf8');
        return { name, size: bytes.length, open: async () => Readable.from([bytes]) };
      };
      const instructions = restoreInstructions({
        tips,
        backups: chosen,
        exportFile: options.out,
        script: await recoveryScript(),
        handRecovery: (kind) => this.#options.engines.get(kind)?.handRecovery,
        keyFiles: keyFiles.length > 0,
      });
      const entries: ExportEntry[] = [
        text('strata-export.json', JSON.stringify(manifest, null, 2) + '\n'),
        text('RESTORE.md', instructions),
        // Also as files, for recovery by hand with gpg (RESTORE.md).
        ...keyFiles.map((f) => text(keyFileObject(f.id), f.message)),
        ...chosen.map((b) => ({ name: b.key, size: b.storedBytes, open: () => this.storage.get(b.key) })),
      ];
      await writeExportContainer(options.out, entries);
      await op.complete({ details: { out: options.out, backups: chosen.map((b) => b.id) } });
      return { file: options.out, backups: chosen };
    } catch (err) {
      await op.fail(err).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Brings an export into this repository: every artifact's SHA-256 and size are checked on the
   * way in, and its catalog entry is added once all of them are in place. The passphrase must open
   * the export's artifacts: with the data keys its key file holds, or by opening one of the key
   * files the export carries (whose keys it then adds to its own key file); an export from before
   * key files needs that repository's passphrase (or both repositories are unencrypted).
   */
  async import(file: string): Promise<{ imported: BackupRecord[]; skipped: string[] }> {
    const op = await this.journal.begin('import', { details: { file } });
    try {
      let manifest: ExportManifest | undefined;
      let keyPlan: ImportKeyPlan | undefined;
      const placed: { record: BackupRecord; staging: string }[] = [];
      const staged: string[] = [];
      const moved: string[] = [];
      let committed = false;
      const skipped: string[] = [];
      const existing = new Set((await this.list()).map((b) => b.id));
      const seenEntries = new Set<string>();
      try {
        for await (const entry of readExportContainer(file)) {
          if (seenEntries.has(entry.name)) throw new StrataError('ARTIFACT_HOSTILE', `import: ${file} holds ${entry.name} twice; it was not made by Strata or was altered, and nothing of it was imported`);
          seenEntries.add(entry.name);
          if (entry.name === 'strata-export.json') {
            const chunks: Buffer[] = [];
            for await (const c of limitBytes(entry.body, MAX_EXPORT_MANIFEST_BYTES, `import: strata-export.json in ${file}`)) chunks.push(Buffer.from(c));
            manifest = parseExportManifest(Buffer.concat(chunks), file);
            keyPlan = await planImportKeys(this.#vault, manifest.encryption, manifest.backups, file);
            continue;
          }
          if (entry.name === 'RESTORE.md') {
            for await (const _ of entry.body) void _;
            continue;
          }
          if (!manifest) throw new StrataError('ARTIFACT_FOREIGN', `import: ${file} does not start with strata-export.json`);
          if (entry.name.startsWith(KEYS_PREFIX)) {
            // The key files strata-export.json carries, as files for people: read from there.
            if (!manifest.encryption.keyFiles?.some((f) => keyFileObject(f.id) === entry.name)) throw new StrataError('ARTIFACT_FOREIGN', `import: ${entry.name} in ${file} is not listed in its strata-export.json`);
            for await (const _ of limitBytes(entry.body, 64 * 1024, `import: ${entry.name} in ${file}`)) void _;
            continue;
          }
          const record = manifest.backups.find((b) => b.key === entry.name);
          if (!record) throw new StrataError('ARTIFACT_FOREIGN', `import: ${entry.name} in ${file} is not listed in its strata-export.json`);
          if (existing.has(record.id)) {
            skipped.push(record.id);
            for await (const _ of entry.body) void _;
            continue;
          }
          const sha = createHash('sha256');
          // Staged like a backup (the pid in the name lets the next open sweep a killed import's
          // files), and moved into backups/ only under the lock, with the catalog write.
          const staging = `staging/${process.pid}-${randomBytes(6).toString('hex')}-${record.key.split('/').pop()}`;
          staged.push(staging);
          // The record's size is a limit enforced while reading: a bundle entry that inflates
          // beyond it (a decompression bomb) stops at the first byte too many.
          const info = await this.storage.put(staging, hashing(limitBytes(entry.body, record.storedBytes, `import: ${record.id} in ${file}`), sha));
          if (info.size !== record.storedBytes || sha.digest('hex') !== record.sha256) {
            throw new StrataError('ARTIFACT_CORRUPT', `import: ${record.id} in ${file} does not match its recorded SHA-256 and size; nothing of it was kept`);
          }
          const keyId = keyPlan?.keyId !== undefined && record.encryption.profile !== 'none' ? keyPlan.keyId : undefined;
          placed.push({ record: { ...record, ...(keyId !== undefined ? { encryption: { ...record.encryption, keyId } } : {}), verification: null }, staging });
        }
        if (!manifest) throw new StrataError('ARTIFACT_FOREIGN', `import: ${file} holds no strata-export.json`);
        const missing = manifest.backups.filter((b) => !existing.has(b.id) && !placed.some((p) => p.record.id === b.id));
        if (missing.length > 0) throw new StrataError('ARTIFACT_CORRUPT', `import: ${file} lacks the artifacts of ${missing.map((b) => b.id).join(', ')}`);
        // The keys first: a catalog must never list a backup that no key file can open.
        if (keyPlan && placed.length > 0) await this.keys.addDataKeys(keyPlan.add);
        const noteKey = commitNoteKey(`import-${randomBytes(6).toString('hex')}`);
        await this.#updateCatalog('import', async (records) => {
          const fresh = placed.filter((p) => !records.some((r) => r.id === p.record.id));
          // Killed between the moves and the catalog write, this note lets the next open remove
          // the moved artifacts, which no catalog entry vouches for (the journal says FAILED).
          await this.storage.put(noteKey, Buffer.from(JSON.stringify({ keys: fresh.map((p) => p.record.key), pid: process.pid, host: hostname() })));
          for (const p of fresh) {
            await this.storage.rename(p.staging, p.record.key);
            moved.push(p.record.key);
          }
          return [...records, ...fresh.map((p) => p.record)];
        });
        committed = true;
        await this.storage.delete(noteKey).catch(() => undefined);
        // Staged copies of backups another process imported meanwhile are not needed.
        for (const p of placed) if (!moved.includes(p.record.key)) await this.storage.delete(p.staging).catch(() => undefined);
      } catch (err) {
        // Nothing half-imported: staged and moved files are removed again (never once cataloged).
        if (!committed) for (const key of [...staged, ...moved]) await this.storage.delete(key).catch(() => undefined);
        throw err;
      }
      const imported = placed.map((p) => p.record);
      await op.complete({ details: { file, imported: imported.map((b) => b.id), skipped, ...(keyPlan && keyPlan.add.size > 0 && imported.length > 0 ? { dataKeysAdded: [...keyPlan.add.keys()] } : {}) } });
      return { imported, skipped };
    } catch (err) {
      await op.fail(err).catch(() => undefined);
      throw err;
    }
  }

  /** Removes the temporary folder this process used for snapshots and scratch restores. */
  async close(): Promise<void> {
    if (this.#privateTemp) await removePrivateTemp(await this.#privateTemp.catch(() => ''));
    this.#privateTemp = undefined;
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A failed check whose reason is an error's message; the catalog keeps the error's redacted one. */
function failedCheck(name: CheckResult['name'], err: unknown, prefix = ''): CheckResult {
  const reason = prefix + messageOf(err);
  const redacted = prefix + redactedMessage(err);
  return { name, status: 'failed', reason, ...(redacted !== reason ? { redacted } : {}) };
}

/** `1 table`, `3 tables`. */
function counted(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** The manifest inside an artifact must describe the backup the catalog says it is. */
/** The facts a manifest stores: complete, or (with `factsDelta`) its changes against the parent's. */
function storedFacts(manifest: Manifest): CompleteFacts {
  return { tables: manifest.tables, ...(manifest.schemaObjects ? { schemaObjects: manifest.schemaObjects } : {}) };
}

function checkManifestMatches(contents: ArtifactContents, record: BackupRecord): void {
  const m = contents.manifest;
  if (m.id !== record.id || m.database !== record.database || m.type !== record.type || m.parent !== record.parent) {
    throw new StrataError('ARTIFACT_CORRUPT', `artifact ${record.key} holds backup ${m.id} (${m.database}, ${m.type}), not ${record.id}: it was swapped or renamed`);
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

/** `ids` and every backup that needs one of them (its parent or base), until nothing more joins. */
function withDependentsOf(records: readonly BackupRecord[], ids: readonly string[]): Set<string> {
  const doomed = new Set(ids);
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of records) {
      if (doomed.has(r.id)) continue;
      if ((r.parent !== null && doomed.has(r.parent)) || (r.base !== null && doomed.has(r.base))) {
        doomed.add(r.id);
        grew = true;
      }
    }
  }
  return doomed;
}

/** strata-export.json is a list of catalog records: a few KiB per backup. */
const MAX_EXPORT_MANIFEST_BYTES = 64 * 1024 * 1024;

/** Parses an export's strata-export.json and checks every record before anything is written. */
function parseExportManifest(bytes: Buffer, file: string): ExportManifest {
  let manifest: ExportManifest;
  try {
    manifest = JSON.parse(bytes.toString('utf8')) as ExportManifest;
  } catch (err) {
    throw new StrataError('ARTIFACT_CORRUPT', `import: strata-export.json in ${file} is not valid JSON`, { cause: err });
  }
  if (typeof manifest !== 'object' || manifest === null || manifest.format !== 'strata-export' || manifest.version !== 1 || !Array.isArray(manifest.backups)) {
    throw new StrataError('ARTIFACT_FOREIGN', `import: ${file} is not a Strata export of a version this Strata reads`);
  }
  if (typeof manifest.encryption !== 'object' || manifest.encryption === null) throw new StrataError('ARTIFACT_CORRUPT', `import: strata-export.json in ${file} does not say how its artifacts are encrypted`);
  const ids = new Set<string>();
  for (const record of manifest.backups) {
    checkForeignRecord(record, `import: ${file}`);
    if (ids.has(record.id)) throw new StrataError('ARTIFACT_HOSTILE', `import: ${file} lists ${record.id} twice; it was not made by Strata or was altered, and nothing of it was imported`);
    ids.add(record.id);
  }
  return manifest;
}

/** Passes `source` through, failing with ARTIFACT_HOSTILE as soon as it yields more than `limit` bytes. */
async function* limitBytes(source: AsyncIterable<Uint8Array>, limit: number, what: string): AsyncGenerator<Uint8Array> {
  let seen = 0;
  for await (const chunk of source) {
    seen += chunk.byteLength;
    if (seen > limit) throw new StrataError('ARTIFACT_HOSTILE', `${what} is larger than its record says (${limit} bytes); it was not made by Strata or was altered, and nothing of it was imported`);
    yield chunk;
  }
}

/** Artifacts a prune dropped from the catalog but may not have deleted yet (it was killed). */
export const PENDING_DELETIONS_KEY = 'locks/pending-deletions.json';

async function readPendingDeletions(storage: Storage): Promise<string[]> {
  try {
    const parsed = JSON.parse(Buffer.from(await storage.read(PENDING_DELETIONS_KEY)).toString('utf8')) as unknown;
    return Array.isArray(parsed) ? parsed.filter((k): k is string => typeof k === 'string' && (k.startsWith('backups/') || k.startsWith('cache/'))) : [];
  } catch (err) {
    if (isNotFound(err)) return [];
    // An unreadable note (torn by a crash): nothing is lost, the files stay until removed by hand.
    return [];
  }
}

async function writePendingDeletions(storage: Storage, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) await storage.delete(PENDING_DELETIONS_KEY);
  else await storage.put(PENDING_DELETIONS_KEY, Buffer.from(JSON.stringify([...new Set(keys)])));
}

/**
 * Finishes what a killed prune or delete left in its note: under the lock (a live prune holds it
 * until it is done), the files the catalog no longer lists are deleted and the note goes. Files the
 * catalog still lists stay: that prune died before its catalog write, so it did not happen.
 */
async function finishInterruptedDeletions(storage: Storage, lock: LockOptions | undefined): Promise<void> {
  if ((await readPendingDeletions(storage)).length === 0) return;
  await withRepositoryLock(
    storage,
    'finish-deletions',
    async () => {
      const pending = await readPendingDeletions(storage);
      const catalog = await readCatalog(storage);
      if (pending.length === 0 || catalog === undefined) return;
      const listed = new Set(catalog.flatMap((r) => [r.key, layoutCacheKey(r.database, r.id, r.encryption.profile !== 'none'), factsCacheKey(r.database, r.id, r.encryption.profile !== 'none')]));
      for (const key of pending) if (!listed.has(key)) await storage.delete(key);
      await writePendingDeletions(storage, []);
    },
    lock,
  );
}

/** Removes staged artifacts of backups whose process is gone (killed before their commit). */
async function sweepStaging(storage: Storage): Promise<void> {
  for await (const object of storage.list('staging/')) {
    const pid = Number(/^staging\/(\d+)-/.exec(object.key)?.[1]);
    if (Number.isInteger(pid) && !defaultIsAlive(pid, hostname())) await storage.delete(object.key).catch(() => undefined);
  }
}

const COMMIT_NOTE_PREFIX = 'locks/committing-';

function commitNoteKey(id: string): string {
  return `${COMMIT_NOTE_PREFIX}${id}.json`;
}

/**
 * A backup killed while committing leaves a note: if its artifact made it into backups/ but not
 * into the catalog, the backup did not happen (its journal entry reads FAILED), so the artifact
 * goes. Notes of live processes are left alone.
 */
async function finishInterruptedCommits(storage: Storage): Promise<void> {
  for await (const object of storage.list(COMMIT_NOTE_PREFIX)) {
    let note: { key?: string; keys?: unknown; cacheKey?: string; pid?: number; host?: string };
    try {
      note = JSON.parse(Buffer.from(await storage.read(object.key)).toString('utf8')) as typeof note;
    } catch {
      continue;
    }
    if (typeof note.pid !== 'number' || defaultIsAlive(note.pid, note.host ?? hostname())) continue;
    const catalog = await readCatalog(storage);
    // Without a catalog there is nothing to tell an uncommitted artifact from a committed one:
    // the artifact is complete (it reached backups/ whole), so it stays and the rebuild lists it.
    // A backup's note names one artifact (and its cached layout); an import's names several.
    const keys = [note.key, ...(Array.isArray(note.keys) ? note.keys : [])].filter((k): k is string => typeof k === 'string' && k.startsWith('backups/'));
    for (const key of keys) {
      const recorded = catalog === undefined || catalog.some((r) => r.key === key);
      if (recorded) continue;
      await storage.delete(key);
      if (key === note.key && typeof note.cacheKey === 'string' && note.cacheKey.startsWith('cache/')) await storage.delete(note.cacheKey);
    }
    await storage.delete(object.key);
  }
}
