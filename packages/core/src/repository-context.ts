import type { BackupRecord } from './catalog.js';
import { readCatalogContents } from './catalog.js';
import { describeLogKey, logPrefix } from './log-archive.js';
import type { Passphrase } from './encryption.js';
import type { Engine } from './engine.js';
import { StrataError } from './errors.js';
import { Journal } from './journal.js';
import { KeyVault, RepositoryKeys } from './keys.js';
import { makePrivateTemp, removePrivateTemp } from './private-temp.js';
import { redactLocator } from './server-engine.js';
import type { Storage } from './storage.js';
import type { OpenOptions, RepositoryConfigFile } from './repository-setup.js';
import { BackupCatalog } from './backup-catalog.js';
import { ChainReader } from './chain-reader.js';

/**
 * What the repository's services share: its storage, journal and settings, the open options
 * (engines, lock, temporary folder), the keys, the catalog and the reader of chains. One per
 * open repository; the services hold it, never copies of its parts.
 */
export class RepositoryContext {
  readonly storage: Storage;
  readonly journal: Journal;
  readonly config: RepositoryConfigFile;
  readonly options: OpenOptions;
  readonly vault: KeyVault;
  readonly keys: RepositoryKeys;
  readonly catalog: BackupCatalog;
  readonly chains: ChainReader;
  #privateTemp: Promise<string> | undefined;

  constructor(storage: Storage, config: RepositoryConfigFile, options: OpenOptions) {
    this.storage = storage;
    this.journal = new Journal(storage);
    this.config = config;
    this.options = options;
    this.vault = new KeyVault(storage, config.encryption, options.passphrase);
    this.catalog = new BackupCatalog(this);
    this.chains = new ChainReader(this);
    this.keys = new RepositoryKeys({
      storage,
      journal: this.journal,
      lock: options.lock,
      repositoryId: config.id,
      vault: this.vault,
      backups: () => this.catalog.list(),
      otherArtifacts: async () => {
        const contents = await readCatalogContents(storage);
        const segments = contents?.segments ?? [];
        const out: { kind: 'segments' | 'logFiles'; keyId: string | undefined }[] = segments.map((s) => ({ kind: 'segments', keyId: this.vault.keyIdOf(s) }));
        // The log folders of the catalog's databases: log files only replay onto a listed base.
        for (const database of new Set([...(contents?.backups ?? []).map((b) => b.database), ...segments.map((s) => s.database)])) {
          for await (const object of storage.list(logPrefix(database))) {
            const log = describeLogKey(object.key);
            // One archived before key files names no key and needs the old passphrase's (keyIdOf's fallback).
            if (log?.encrypted) out.push({ kind: 'logFiles', keyId: this.vault.keyIdOf({ encryption: { profile: this.vault.section.profile, ...(log.keyId ? { keyId: log.keyId } : {}) } }) });
          }
        }
        return out;
      },
    });
  }

  /** This process's private temporary folder, made on first use (see {@link makePrivateTemp}). */
  async tempDir(): Promise<string> {
    this.#privateTemp ??= makePrivateTemp(this.options.tempDir);
    return this.#privateTemp;
  }

  /** Removes the temporary folder, if one was made. */
  async removeTempDir(): Promise<void> {
    if (this.#privateTemp) await removePrivateTemp(await this.#privateTemp.catch(() => ''));
    this.#privateTemp = undefined;
  }

  /** Unlocks the keys (asking for the passphrase if needed); true when the repository is encrypted. */
  async unlock(): Promise<boolean> {
    return (await this.vault.unlock()) !== undefined;
  }

  /** The OpenPGP password of a record's artifact (see {@link KeyVault.keyFor}); call after {@link unlock}. */
  keyFor(record: BackupRecord, what: string): Passphrase | undefined {
    return this.vault.keyFor(record, what);
  }

  /** The engine that understands `locator`. */
  engineFor(locator: string): Engine {
    const engine = this.options.engines.forLocator(locator);
    if (!engine) {
      throw new StrataError('ENGINE_UNKNOWN', `no engine understands ${JSON.stringify(redactLocator(locator))} (known: ${this.options.engines.kinds().join(', ')})`);
    }
    return engine;
  }
}
