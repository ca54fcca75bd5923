import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { readCatalogContents } from './catalog.js';
import type { BackupRecord, SegmentRecord } from './catalog.js';
import { StrataError, isAbortError, throwIfAborted } from './errors.js';
import { KEYS_PREFIX, hasKeyFiles, keyFileObject, planImportKeys } from './keys.js';
import type { ImportKeyPlan } from './keys.js';
import { checkForeignRecord, checkForeignSegment } from './record-checks.js';
import { newestGoodBackup } from './newest-good.js';
import { exportFormatOf, hashing, readExportContainer, writeExportContainer } from './export-archive.js';
import type { ExportEntry, ExportManifest, ExportedLogFile } from './export-archive.js';
import { LogArchive, describeLogKey } from './log-archive.js';
import { logFilesFor } from './log-retention.js';
import { validateDatabaseName } from './naming.js';
import { recoveryScript, replayScript, restoreInstructions } from './restore-instructions.js';
import { abandonImport, commitImport } from './catalog-commit.js';
import type { WrittenImport, WrittenSegmentImport } from './catalog-commit.js';
import { announceWrite } from './pending-writes.js';
import type { PendingWrite } from './pending-writes.js';
import type { RepositoryContext } from './repository-context.js';
import type { Abortable } from './storage.js';

/**
 * Moves backups between repositories: `export` writes a self-contained archive of each database's
 * newest good chain (see export-archive.ts for the container), `import` checks one and brings its
 * artifacts in through {@link commitImport}.
 */
export class ExportImport {
  readonly #ctx: RepositoryContext;

  constructor(ctx: RepositoryContext) {
    this.#ctx = ctx;
  }

  /**
   * Writes a self-contained archive (`.tar.gz` or `.zip`) holding, for each database, its newest
   * good restore point with its whole chain: the artifacts as they are, their catalog entries,
   * and a RESTORE.md with the exact commands to restore each one with Strata and without it.
   */
  async export(options: { databases?: readonly string[]; out: string; replace?: boolean } & Abortable): Promise<{ file: string; backups: BackupRecord[]; segments: SegmentRecord[]; logFiles: number }> {
    exportFormatOf(options.out);
    await this.#ctx.unlock();
    const op = await this.#ctx.journal.begin('export', { details: { out: options.out } });
    try {
      const all = await this.#ctx.catalog.list();
      const databases = options.databases && options.databases.length > 0 ? [...options.databases] : [...new Set(all.map((b) => b.database))].sort();
      if (databases.length === 0) throw new StrataError('BACKUP_NOT_FOUND', 'export: the repository holds no backups');
      const chosen: BackupRecord[] = [];
      const tips: BackupRecord[] = [];
      for (const database of databases) {
        const mine = all.filter((b) => b.database === database);
        if (mine.length === 0) throw new StrataError('BACKUP_NOT_FOUND', `export: no backups of ${database} (the repository has: ${[...new Set(all.map((b) => b.database))].join(', ')})`);
        const tip = newestGoodBackup(mine);
        if (!tip) throw new StrataError('BACKUP_NOT_FOUND', `export: ${database} has no good restore point with data`);
        const chain = await this.#ctx.catalog.chainOf(tip);
        await this.#ctx.chains.checkPresent(chain, tip);
        tips.push(tip);
        chosen.push(...chain);
      }
      // The segments after the bases among them: a restore as of a time reaches as far after import.
      const chosenIds = new Set(chosen.map((b) => b.id));
      const segments = ((await readCatalogContents(this.#ctx.storage))?.segments ?? []).filter((s) => chosenIds.has(s.base));
      // The archived log those bases replay: a base backup of a server's files cannot become consistent without it.
      const logFiles: ExportedLogFile[] = [];
      const logArchive = new LogArchive(this.#ctx);
      for (const database of databases) {
        const bases = chosen.filter((b) => b.database === database && b.logRange !== undefined);
        const rules = bases.length > 0 ? this.#ctx.options.engines.get(bases[0]!.engine)?.logArchive : undefined;
        if (!rules) continue;
        for (const f of logFilesFor(bases, rules, await logArchive.list(database))) {
          const keyId = describeLogKey(f.key)?.keyId;
          logFiles.push({ database, name: f.name, sha256: f.sha256, key: f.key, storedBytes: f.storedBytes, ...(keyId !== undefined ? { keyId } : {}) });
        }
      }
      // Key files are OpenPGP messages sealed with their passphrases: the export carries those
      // that hold the data keys its backups and segments need, so their passphrases open it anywhere.
      const section = this.#ctx.vault.section;
      const keyFiles = await this.#ctx.keys.forExport([...chosen, ...segments, ...logFiles.map(logFileRecord)]);
      const manifest: ExportManifest = {
        format: 'strata-export',
        version: 1,
        createdAt: new Date().toISOString(),
        encryption: hasKeyFiles(section)
          ? { profile: section.profile, keyFiles }
          : { profile: section.profile, ...(section.keyCheck !== undefined ? { keyCheck: section.keyCheck, keyCheckSha256: section.keyCheckSha256! } : {}) },
        backups: chosen,
        ...(segments.length > 0 ? { segments } : {}),
        ...(logFiles.length > 0 ? { logFiles } : {}),
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
        handRecovery: (kind) => this.#ctx.options.engines.get(kind)?.handRecovery,
        keyFiles: keyFiles.length > 0,
        logFiles: logFiles.length,
        segments,
        replayScript: segments.length > 0 ? await replayScript() : undefined,
      });
      const entries: ExportEntry[] = [
        text('strata-export.json', JSON.stringify(manifest, null, 2) + '\n'),
        text('RESTORE.md', instructions),
        // Also as files, for recovery by hand with gpg (RESTORE.md).
        ...keyFiles.map((f) => text(keyFileObject(f.id), f.message)),
        ...[...chosen, ...segments, ...logFiles].map((b) => ({ name: b.key, size: b.storedBytes, open: (read: Abortable) => this.#ctx.storage.get(b.key, read) })),
      ];
      await writeExportContainer(options.out, entries, { ...(options.signal ? { signal: options.signal } : {}), ...(options.replace === false ? { replace: false } : {}) });
      await op.complete({ details: { out: options.out, backups: chosen.map((b) => b.id), segments: segments.length, logFiles: logFiles.length } });
      return { file: options.out, backups: chosen, segments, logFiles: logFiles.length };
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
  async import(file: string, options: Abortable = {}): Promise<{ imported: BackupRecord[]; skipped: string[]; segments: SegmentRecord[]; logFiles: number }> {
    const op = await this.#ctx.journal.begin('import', { details: { file } });
    try {
      let manifest: ExportManifest | undefined;
      let keyPlan: ImportKeyPlan | undefined;
      const placed: WrittenImport[] = [];
      const placedSegments: WrittenSegmentImport[] = [];
      const announced: PendingWrite[] = [];
      const logArchive = new LogArchive(this.#ctx);
      const placedLogs: { file: ExportedLogFile; pending: PendingWrite }[] = [];
      const seenLogs = new Set<string>();
      let committed = false;
      const skipped: string[] = [];
      const existing = new Set((await this.#ctx.catalog.list()).map((b) => b.id));
      const existingSegments = new Set(((await readCatalogContents(this.#ctx.storage))?.segments ?? []).map((s) => s.id));
      const seenEntries = new Set<string>();
      const { signal } = options;
      const put = signal ? { signal } : {};
      try {
        for await (const entry of readExportContainer(file)) {
          // Interrupted: what was written so far goes again (below), as after any failure.
          throwIfAborted(signal, 'import');
          if (seenEntries.has(entry.name)) throw new StrataError('ARTIFACT_HOSTILE', `import: ${file} holds ${entry.name} twice; it was not made by Strata or was altered, and nothing of it was imported`);
          seenEntries.add(entry.name);
          if (entry.name === 'strata-export.json') {
            const chunks: Buffer[] = [];
            for await (const c of limitBytes(entry.body, MAX_EXPORT_MANIFEST_BYTES, `import: strata-export.json in ${file}`)) chunks.push(Buffer.from(c));
            manifest = parseExportManifest(Buffer.concat(chunks), file);
            keyPlan = await planImportKeys(this.#ctx.vault, manifest.encryption, [...manifest.backups, ...(manifest.segments ?? []), ...(manifest.logFiles ?? []).map(logFileRecord)], file);
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
          const logFile = manifest.logFiles?.find((f) => f.key === entry.name);
          if (logFile) {
            seenLogs.add(logFile.key);
            // Under its own key (its data key's id is part of it, and comes with the key files):
            // announced like an artifact, so a killed import's files are removed by the next open.
            const pending = await announceWrite(this.#ctx.storage, `import-log-${logFile.sha256.slice(0, 16)}`, [logFile.key], []);
            let placedAs: 'stored' | 'present';
            try {
              placedAs = await logArchive.placeAsIs(logFile, limitBytes(entry.body, logFile.storedBytes, `import: ${logFile.key} in ${file}`), put);
            } catch (err) {
              // Nothing was placed (a log file already there is never replaced): only the note goes,
              // which would otherwise make the next open remove that key.
              await pending.committed().catch(() => undefined);
              throw err;
            }
            if (placedAs === 'stored') {
              announced.push(pending);
              placedLogs.push({ file: logFile, pending });
            } else await pending.committed().catch(() => undefined);
            continue;
          }
          const segment = manifest.segments?.find((s) => s.key === entry.name);
          if (segment) {
            if (existingSegments.has(segment.id)) {
              for await (const _ of entry.body) void _;
              continue;
            }
            const sha = createHash('sha256');
            const pending = await announceWrite(this.#ctx.storage, `import-${segment.id}`, [segment.key], []);
            announced.push(pending);
            const info = await this.#ctx.storage.put(segment.key, hashing(limitBytes(entry.body, segment.storedBytes, `import: ${segment.id} in ${file}`), sha), { ...put, sizeHint: segment.storedBytes });
            if (info.size !== segment.storedBytes || sha.digest('hex') !== segment.sha256) {
              throw new StrataError('ARTIFACT_CORRUPT', `import: segment ${segment.id} in ${file} does not match its recorded SHA-256 and size; nothing of the export was kept`);
            }
            const keyId = keyPlan?.keyId !== undefined && segment.encryption.profile !== 'none' ? keyPlan.keyId : undefined;
            placedSegments.push({ record: { ...segment, ...(keyId !== undefined ? { encryption: { ...segment.encryption, keyId } } : {}) }, pending });
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
          // Under its final key (checked against the record's own place when the manifest was
          // read), announced first like a backup's: no backup until the catalog lists it, and
          // removed by the next open if this process dies before.
          const pending = await announceWrite(this.#ctx.storage, `import-${record.id}`, [record.key], []);
          announced.push(pending);
          // The record's size is a limit enforced while reading: a bundle entry that inflates
          // beyond it (a decompression bomb) stops at the first byte too many.
          const info = await this.#ctx.storage.put(record.key, hashing(limitBytes(entry.body, record.storedBytes, `import: ${record.id} in ${file}`), sha), { ...put, sizeHint: record.storedBytes });
          if (info.size !== record.storedBytes || sha.digest('hex') !== record.sha256) {
            throw new StrataError('ARTIFACT_CORRUPT', `import: ${record.id} in ${file} does not match its recorded SHA-256 and size; nothing of it was kept`);
          }
          const keyId = keyPlan?.keyId !== undefined && record.encryption.profile !== 'none' ? keyPlan.keyId : undefined;
          placed.push({ record: { ...record, ...(keyId !== undefined ? { encryption: { ...record.encryption, keyId } } : {}), verification: null }, pending });
        }
        if (!manifest) throw new StrataError('ARTIFACT_FOREIGN', `import: ${file} holds no strata-export.json`);
        const missing = manifest.backups.filter((b) => !existing.has(b.id) && !placed.some((p) => p.record.id === b.id));
        if (missing.length > 0) throw new StrataError('ARTIFACT_CORRUPT', `import: ${file} lacks the artifacts of ${missing.map((b) => b.id).join(', ')}`);
        const missingSegments = (manifest.segments ?? []).filter((s) => !existingSegments.has(s.id) && !placedSegments.some((p) => p.record.id === s.id));
        if (missingSegments.length > 0) throw new StrataError('ARTIFACT_CORRUPT', `import: ${file} lacks the segments ${missingSegments.map((s) => s.id).join(', ')}`);
        const missingLogs = (manifest.logFiles ?? []).filter((f) => !seenLogs.has(f.key));
        if (missingLogs.length > 0) throw new StrataError('ARTIFACT_CORRUPT', `import: ${file} lacks the archived log files ${missingLogs.map((f) => f.name).join(', ')}`);
        // The last moment an interruption stops the import: from here it adds keys and commits.
        throwIfAborted(signal, 'import');
        // The keys first: a catalog must never list a backup that no key file can open.
        if (keyPlan && (placed.length > 0 || placedSegments.length > 0 || placedLogs.length > 0)) await this.#ctx.keys.addDataKeys(keyPlan.add);
        // Each log file read back now that its data key is here: decrypted, decompressed, and its
        // bytes against the SHA-256 its name carries.
        for (const { file: logFile } of placedLogs) await logArchive.read(logFile);
        await commitImport(this.#ctx, placed, placedSegments);
        for (const { pending } of placedLogs) await pending.committed().catch(() => undefined);
        committed = true;
      } catch (err) {
        // Nothing half-imported: what was written goes again (never once cataloged).
        if (!committed) await abandonImport(this.#ctx, announced);
        if (!committed && signal?.aborted && isAbortError(err)) throw new StrataError('ABORTED', `import: interrupted; nothing of ${file} was imported`, { cause: err });
        throw err;
      }
      const imported = placed.map((p) => p.record);
      const segments = placedSegments.map((p) => p.record);
      await op.complete({ details: { file, imported: imported.map((b) => b.id), skipped, segments: segments.length, logFiles: placedLogs.length, ...(keyPlan && keyPlan.add.size > 0 && imported.length > 0 ? { dataKeysAdded: [...keyPlan.add.keys()] } : {}) } });
      return { imported, skipped, segments, logFiles: placedLogs.length };
    } catch (err) {
      await op.fail(err).catch(() => undefined);
      throw err;
    }
  }
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
  if (manifest.segments !== undefined) {
    if (!Array.isArray(manifest.segments)) throw new StrataError('ARTIFACT_HOSTILE', `import: ${file} lists its segments in a shape Strata never writes; nothing of it was imported`);
    const bases = new Map(manifest.backups.map((b) => [b.id, b]));
    for (const segment of manifest.segments) {
      checkForeignSegment(segment, bases, `import: ${file}`);
      if (ids.has(segment.id)) throw new StrataError('ARTIFACT_HOSTILE', `import: ${file} lists ${segment.id} twice; it was not made by Strata or was altered, and nothing of it was imported`);
      ids.add(segment.id);
    }
  }
  if (manifest.logFiles !== undefined) {
    const shape = (what: string): never => {
      throw new StrataError('ARTIFACT_HOSTILE', `import: ${file} ${what}; it was not made by Strata or was altered, and nothing of it was imported`);
    };
    if (!Array.isArray(manifest.logFiles)) shape('lists its archived log in a shape Strata never writes');
    const keys = new Set<string>();
    for (const f of manifest.logFiles) {
      const described = typeof f === 'object' && f !== null && typeof f.key === 'string' ? describeLogKey(f.key) : undefined;
      const ok =
        described !== undefined &&
        described.database === f.database &&
        described.name === f.name &&
        described.sha256 === f.sha256 &&
        described.keyId === f.keyId &&
        Number.isSafeInteger(f.storedBytes) &&
        f.storedBytes >= 0 &&
        manifest.backups.some((b) => b.database === f.database && b.logRange !== undefined);
      if (!ok) shape(`lists an archived log file Strata never writes (${JSON.stringify(String((f as { key?: unknown } | null)?.key ?? '').slice(0, 120))})`);
      validateDatabaseName(f.database);
      if (keys.has(f.key)) shape(`lists ${f.key} twice`);
      keys.add(f.key);
    }
  }
  return manifest;
}

/** A log file as the key functions see records: what it is called, and what it is sealed with. */
function logFileRecord(f: ExportedLogFile): Pick<BackupRecord, 'id' | 'encryption'> {
  return { id: f.name, encryption: f.keyId !== undefined ? { profile: 'compat', keyId: f.keyId } : { profile: 'none' } };
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
