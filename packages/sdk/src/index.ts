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
import * as path from 'node:path';
import { StorageRegistry, initRepository as initCore, openRepository as openCore } from '@strata/core';
import type { InitOptions, MirrorOptions, OpenOptions, PassphraseSource, Repository, Storage } from '@strata/core';
import { createDefaultEngines } from './engines.js';
import { localStorageKind } from '@strata/storage-local';
import { s3StorageKind } from '@strata/storage-s3';
import type { S3StorageSettings } from '@strata/storage-s3';

export * from '@strata/core';
export { SqliteEngine } from '@strata/engine-sqlite';
export {
  PostgresEngine,
  PostgresPhysicalEngine,
  basesOnTimeline,
  checkAgainstManifest,
  chooseBase,
  clusterUrl,
  configureRecovery,
  dataDirTablespaces,
  defaultSlotName,
  receiveWal,
  walArchiveLag,
  describeGoal,
  goalTimeText,
  markHistoryForArchive,
  stopLeftoverServer,
  refuseBaseAfterGoal,
  formatTablespaceMap,
  isPostgresUrl,
  lastWalRange,
  MANIFEST_TAIL_BYTES,
  parseTablespaceMap,
  parseTarget,
  parseWalName,
  pgDumpProgram,
  physicalLocator,
  placeTablespaces,
  planWal,
  proveRecovery,
  readWalLongHeader,
  recoverySettings,
  removeRestoredCluster,
  scanReplay,
  stopsWithin,
  tablespacesInTheWay,
  TarEntryCatcher,
  tarMember,
  walFileCheck,
  walRun,
  walSegmentProblem,
  archiveFileProblem,
} from '@strata/engine-postgres';
export type { ArchiveMode, PhysicalPosition, RecoveryGoal, RecoveryReport, ReplayScan, TargetAction, TimelineChoice, WalArchiveLag, WalPlan, WalReceiveEvent, WalReceiveSummary } from '@strata/engine-postgres';
export { MysqlEngine } from '@strata/engine-mysql';
export { LocalStorage, localStorageKind } from '@strata/storage-local';
export type { LocalStorageOptions } from '@strata/storage-local';
export { S3Storage, s3StorageKind, parseS3Location, partSizeFor } from '@strata/storage-s3';
export type { S3StorageSettings } from '@strata/storage-s3';
export { CONFIG_FILE, databaseNameFromPath, loadConfig, resolveDatabase, readSecret, resolveLocator, retentionFor, schedulesFor } from './config.js';
export { configJsonSchema, strataConfigSchema } from './config-schema.js';
export type {
  BackupJobConfig,
  ChannelConfig,
  EmailChannelConfig,
  NotificationEvent,
  NotificationsConfig,
  SecretSource,
  WebhookChannelConfig,
  CopyJobConfig,
  DaemonConfig,
  DatabaseConfig,
  HealthJobConfig,
  HooksConfig,
  JobConfig,
  LoadedConfig,
  MirrorConfig,
  PruneJobConfig,
  ReplicateJobConfig,
  ScheduledJobConfig,
  StorageConfig,
  StrataConfig,
  VerifyJobConfig,
} from './config.js';
export { describeJob, jobCron, scheduleOf } from './schedule.js';
export type { ScheduledJobView } from './schedule.js';
export { passphraseFromCommand, passphraseFromFile } from './passphrase-files.js';
export type { PassphraseFileOptions } from './passphrase-files.js';

/** Settings of the storages that have any (the `storage` section of strata.config.json). */
export type StorageSettings = S3StorageSettings;

export { createDefaultEngines } from './engines.js';

/**
 * Every storage this build of Strata ships, by the URL scheme of a repository location, in one
 * visible place. A plain path (no scheme) is a local folder. A new kind is one more `register`.
 */
export function createDefaultStorages(settings: StorageSettings = {}): StorageRegistry {
  return new StorageRegistry().register(localStorageKind, { paths: true }).register(s3StorageKind(settings));
}

/**
 * A repository location as given (`s3://bucket/prefix`, `file:///path`) or, for a folder path, made
 * absolute against `base` (a Windows drive letter is a path).
 */
export function repositoryLocation(location: string, base: string = process.cwd()): string {
  return isLocationUrl(location) ? location : path.resolve(base, location);
}

/** True for `scheme://…` (s3://, file://), false for a folder path. */
export function isLocationUrl(location: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]+:\/\//.test(location);
}

/** The schemes of {@link createDefaultStorages} with a line each, for help texts. */
export function supportedStorages(): { scheme: string; description: string }[] {
  return createDefaultStorages()
    .kinds()
    .map((kind) => ({ scheme: kind.scheme, description: kind.description }));
}

/** The storage a location names (see {@link createDefaultStorages}), or the Storage given. */
export function openStorage(location: string | Storage, settings: StorageSettings = {}): Storage {
  return typeof location === 'string' ? createDefaultStorages(settings).open(location) : location;
}

/** Creates a repository (see `initRepository` in @strata/core); `storage` configures an s3:// location. */
export async function initRepository(location: string | Storage, options: InitOptions & { readonly storage?: StorageSettings }): Promise<void> {
  const { storage, ...init } = options;
  await initCore(openStorage(location, storage), init);
}

/**
 * Opens a repository with the default engines unless `options.engines` says otherwise; `storage`
 * configures an s3:// location.
 */
export async function openRepository(location: string | Storage, options: Partial<OpenOptions> & { readonly storage?: StorageSettings } = {}): Promise<Repository> {
  const { storage, ...open } = options;
  return openCore(openStorage(location, storage), { ...open, engines: open.engines ?? createDefaultEngines() });
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
export function mirrorAt(
  location: string | Storage,
  options: Partial<Omit<OpenOptions, 'mirror'>> & { readonly passphrase?: PassphraseSource; readonly storage?: StorageSettings } = {},
): MirrorOptions {
  const { storage: settings, ...open } = options;
  const storage = openStorage(location, settings);
  return { location: storage.location, open: () => openRepository(storage, open) };
}
