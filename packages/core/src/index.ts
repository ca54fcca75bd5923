/**
 * Strata's engine-agnostic core. Programs usually import `@strata/sdk`, which wires the engines
 * and the local storage; engine and storage packages implement the interfaces exported here.
 */
export * from './errors.js';
export * from './storage.js';
export * from './engine.js';
export * from './server-engine.js';
export * from './row-turns.js';
export * from './work-databases.js';
export { makeSideFolder, sideFolderPath, sweepSideFolders } from './side-folders.js';
export * from './catalog.js';
export * from './journal.js';
export * from './lock.js';
export * from './naming.js';
export { shellCommand, shellQuote } from './shell-quote.js';
export { MAX_CLOCK_SKEW_MS } from './record-checks.js';
export * from './progress.js';
export * from './compression.js';
export { Passphrase } from './encryption.js';
export type { EncryptionProfile } from './encryption.js';
export * from './repository.js';
export { KEYS_PREFIX, RepositoryKeys, describeKeyUse, keyFileObject } from './keys.js';
export type { DataKeyInfo, EncryptionSection, KeyFileInfo, KeyListing, PassphraseSource, KeyUse, RotateResult } from './keys.js';
export * from './retention.js';
export { describeLostWindows } from './retention-applier.js';
export * from './newest-good.js';
export * from './duration.js';
export * from './operator-reports.js';
export * from './continuity.js';
export { LogArchive, PARTIAL_MARK, logPrefix, partialName } from './log-archive.js';
export type { LogFile, LogPushResult } from './log-archive.js';
export { DEFAULT_MAX_ARCHIVE_AGE_MS, DEFAULT_MAX_ARCHIVE_LAG_BYTES, assessArchiveLag, assessFailedPushes, assessLogArchive, assessLogStreaming, recoverableRange } from './log-coverage.js';
export type { ArchiveLagMeasure, PushFailure } from './log-coverage.js';
export type { LogVerifyReport, LogWindow } from './log-coverage.js';
export { logPitrWindows, planLogRetention } from './log-retention.js';
export type { LogBase, LogRemovalDecision } from './log-retention.js';
export { exportFormatOf } from './export-archive.js';
export type { ExportFormat, ExportManifest } from './export-archive.js';
export { readTar, tarHeaderBytes, tarPadding, tarTrailer, validateEntryName } from './format/tar.js';
export type { TarEntry, TarEntryHeader } from './format/tar.js';
export { ARTIFACT_FORMAT_VERSION, BACKUP_TYPES, MANIFEST_ENTRY, parseManifest } from './format/manifest.js';
export type { BackupType, Manifest, StreamManifest, StreamDescriptor } from './format/manifest.js';
export { readArtifact } from './format/artifact-reader.js';
export { ChunkLayout, LayoutDelta } from './format/chunk-index.js';
export { splitChunks } from './format/chunker.js';
export type { LayoutEntry } from './format/chunk-index.js';
export type { ArtifactContents, ArtifactLocation } from './format/artifact-reader.js';
export { STRATA_VERSION } from './version.js';
