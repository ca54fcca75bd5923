/**
 * The Strata SDK: back up, list, verify and restore databases from a program.
 *
 * ```ts
 * import { openRepository, Passphrase } from '@strata/sdk'
 *
 * const repo = await openRepository('./backups', { passphrase: new Passphrase(process.env.STRATA_PASSPHRASE!) })
 * const backup = await repo.backup('app.db', { database: 'app', type: 'full' })
 * await repo.verify({ id: backup.id }, { level: 'full' })
 * await repo.restore({ id: backup.id }, { to: 'restored.db' })
 * ```
 */
import { EngineRegistry, StorageRegistry, initRepository as initCore, openRepository as openCore } from '@strata/core';
import type { InitOptions, MirrorOptions, OpenOptions, PassphraseSource, Repository, Storage } from '@strata/core';
import { SqliteEngine } from '@strata/engine-sqlite';
import { PostgresEngine } from '@strata/engine-postgres';
import { MysqlEngine } from '@strata/engine-mysql';
import { localStorageKind } from '@strata/storage-local';

export * from '@strata/core';
export { SqliteEngine } from '@strata/engine-sqlite';
export { PostgresEngine } from '@strata/engine-postgres';
export { MysqlEngine } from '@strata/engine-mysql';
export { LocalStorage, localStorageKind } from '@strata/storage-local';
export type { LocalStorageOptions } from '@strata/storage-local';
export { CONFIG_FILE, configJsonSchema, databaseNameFromPath, loadConfig, resolveDatabase, resolveLocator, retentionFor, strataConfigSchema } from './config.js';
export type { DatabaseConfig, LoadedConfig, MirrorConfig, StrataConfig } from './config.js';

/** Every engine this build of Strata ships, in one visible place. */
export function createDefaultEngines(): EngineRegistry {
  return new EngineRegistry().register(new PostgresEngine()).register(new MysqlEngine()).register(new SqliteEngine());
}

/**
 * Every storage this build of Strata ships, by the URL scheme of a repository location, in one
 * visible place. A plain path (no scheme) is a local folder. A new kind is one more `register`.
 */
export function createDefaultStorages(): StorageRegistry {
  return new StorageRegistry().register(localStorageKind, { paths: true });
}

/** The schemes of {@link createDefaultStorages} with a line each, for help texts. */
export function supportedStorages(): { scheme: string; description: string }[] {
  return createDefaultStorages()
    .kinds()
    .map((kind) => ({ scheme: kind.scheme, description: kind.description }));
}

/** The storage a location names (see {@link createDefaultStorages}), or the Storage given. */
export function openStorage(location: string | Storage): Storage {
  return typeof location === 'string' ? createDefaultStorages().open(location) : location;
}

/** Creates a repository (see `initRepository` in @strata/core). */
export async function initRepository(location: string | Storage, options: InitOptions): Promise<void> {
  await initCore(openStorage(location), options);
}

/** Opens a repository with the default engines unless `options.engines` says otherwise. */
export async function openRepository(location: string | Storage, options: Partial<OpenOptions> = {}): Promise<Repository> {
  return openCore(openStorage(location), { ...options, engines: options.engines ?? createDefaultEngines() });
}

/**
 * A mirror for {@link openRepository}'s `mirror` option: the repository at `location` (made with
 * `initRepository`), opened with its own passphrase when first needed.
 *
 * ```ts
 * const repo = await openRepository('./backups', { passphrase, mirror: mirrorAt('/mnt/usb/strata', { passphrase: usbPassphrase }) })
 * await repo.backup('./app.db', { database: 'app', onMirror: (m) => m.ok || console.warn(m.error?.message) })
 * ```
 */
export function mirrorAt(location: string | Storage, options: Partial<Omit<OpenOptions, 'mirror'>> & { readonly passphrase?: PassphraseSource } = {}): MirrorOptions {
  const storage = openStorage(location);
  return { location: storage.location, open: () => openRepository(storage, options) };
}
