import { randomBytes } from 'node:crypto';
import { writeCatalog } from './catalog.js';
import { getCodec, validateCompression, defaultCompression } from './compression.js';
import type { CompressionConfig } from './compression.js';
import type { Passphrase, EncryptionProfile } from './encryption.js';
import { checkEncryptionSection, createKeys, keyFileObject } from './keys.js';
import type { EncryptionSection, PassphraseSource } from './keys.js';
import { REPOSITORY_CONFIG_KEY } from './repository-config.js';
import type { EngineRegistry } from './engine.js';
import { StrataError } from './errors.js';
import { Journal } from './journal.js';
import type { LockOptions } from './lock.js';
import type { Storage, StorageAccess } from './storage.js';
import { isNotFound } from './storage.js';
import { REPOSITORY_FORMAT_VERSION } from './layout-migration.js';
import type { MirrorOptions } from './mirror-sync.js';

/** The repository's own settings, fixed at `init` (the encryption section changes with `strata key`). */
export interface RepositoryConfigFile {
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
  /**
   * A second repository that gets a copy of every backup this one takes, and that restores fall
   * back on when an artifact here is missing or damaged (see {@link MirrorOptions}).
   */
  readonly mirror?: MirrorOptions;
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
    // The object layout (3) whether encrypted or not: the encryption section says which kind.
    version: REPOSITORY_FORMAT_VERSION,
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

/** Reads and checks repository.json: a Strata repository, of a format version this Strata reads, undamaged. */
export async function readRepositoryConfig(storage: Storage): Promise<RepositoryConfigFile> {
  let bytes: Uint8Array;
  try {
    bytes = await storage.read(REPOSITORY_CONFIG_KEY);
  } catch (err) {
    if (isNotFound(err)) {
      const exists = await storage.exists();
      throw new StrataError(
        'REPO_NOT_FOUND',
        exists
          ? `repository: ${storage.location} is not a Strata repository (no ${REPOSITORY_CONFIG_KEY}); create one first (\`strata init\`, or initRepository() in the SDK)`
          : `repository: ${storage.location} does not exist; create it first (\`strata init\`, or initRepository() in the SDK)`,
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
  return config;
}
