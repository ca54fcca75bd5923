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
import { EngineRegistry, initRepository as initCore, openRepository as openCore } from '@strata/core';
import type { InitOptions, OpenOptions, Repository, Storage } from '@strata/core';
import { SqliteEngine } from '@strata/engine-sqlite';
import { PostgresEngine } from '@strata/engine-postgres';
import { MysqlEngine } from '@strata/engine-mysql';
import { LocalStorage } from '@strata/storage-local';

export * from '@strata/core';
export { SqliteEngine } from '@strata/engine-sqlite';
export { PostgresEngine } from '@strata/engine-postgres';
export { MysqlEngine } from '@strata/engine-mysql';
export { LocalStorage } from '@strata/storage-local';
export { CONFIG_FILE, configJsonSchema, databaseNameFromPath, loadConfig, resolveDatabase, resolveLocator, retentionFor, strataConfigSchema } from './config.js';
export type { DatabaseConfig, LoadedConfig, StrataConfig } from './config.js';

/** Every engine this build of Strata ships, in one visible place. */
export function createDefaultEngines(): EngineRegistry {
  return new EngineRegistry().register(new PostgresEngine()).register(new MysqlEngine()).register(new SqliteEngine());
}

/** A folder path means local storage; anything else must already be a Storage. */
function toStorage(location: string | Storage): Storage {
  return typeof location === 'string' ? new LocalStorage(location) : location;
}

/** Creates a repository (see `initRepository` in @strata/core). */
export async function initRepository(location: string | Storage, options: InitOptions): Promise<void> {
  await initCore(toStorage(location), options);
}

/** Opens a repository with the default engines unless `options.engines` says otherwise. */
export async function openRepository(location: string | Storage, options: Partial<OpenOptions> = {}): Promise<Repository> {
  return openCore(toStorage(location), { ...options, engines: options.engines ?? createDefaultEngines() });
}
