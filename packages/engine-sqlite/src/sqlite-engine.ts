import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type Database from 'better-sqlite3';
import { DEFAULT_TABLE_LOCK_WAIT_SECONDS, StrataError, errorText, hasErrno, named, redactable, sleepUnlessAborted, tableListArgument, throwIfAborted, withheld, wrapError } from '@strata/core';
import type {
  Abortable,
  DatabaseFacts,
  Engine,
  EngineCapabilities,
  EngineDisplay,
  InspectOptions,
  RestoreCommitInfo,
  EngineRestoreOptions,
  RestoreSession,
  SchemaObjects,
  Snapshot,
  SnapshotOptions,
  StreamTarget,
  TableStats,
} from '@strata/core';
import { Worker } from 'node:worker_threads';
import { capturedHere } from './checkpoint-lock.js';
import { openDatabase } from './driver.js';
import { COUNTERS_FACTS, FACTS_VERSION, collectFacts, quoteIdent, schemaFingerprint, schemaObjects, schemaSql } from './sqlite-facts.js';
import { SQLITE_HAND_RECOVERY } from './sqlite-recovery.js';
import { createStoredObjects, storedObjects } from './schema-writer.js';
import { checkSchemaSql } from './schema-check.js';
import { WalCapture, applyWalFrames } from './wal-capture.js';
import type { StoredObject } from './schema-writer.js';

/** The only stream of a SQLite snapshot: the database file itself. */
export const SQLITE_STREAM = 'main.db';
const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');
/** Side files SQLite keeps next to a database; a stale one would be replayed onto a restored file. */
const SIDE_SUFFIXES = ['-wal', '-shm', '-journal'];

/** Options for {@link SqliteEngine}. */
export interface SqliteEngineOptions {
  /** How long to wait for another connection's lock before DATABASE_LOCKED. Default 5 s. */
  readonly busyTimeoutMs?: number;
}

/**
 * SQLite through better-sqlite3.
 *
 * A snapshot is an online-backup copy of the database file, taken in one step inside one read
 * transaction, so it is consistent even while another process writes (WAL or rollback mode). The
 * copy is then read as one stream cut into page-sized chunks: a changed page changes one chunk,
 * which is what keeps incrementals small.
 *
 * Locators: a file path, `sqlite:PATH` or `sqlite://PATH`.
 */
export class SqliteEngine implements Engine {
  readonly kind = 'sqlite';
  readonly capabilities: EngineCapabilities = { incrementals: true, tableRestore: true };
  readonly handRecovery = SQLITE_HAND_RECOVERY;
  readonly display: EngineDisplay = { name: 'SQLite', locator: 'file', schemes: ['sqlite'], example: './app.db', fileExtensions: ['.db', '.sqlite', '.sqlite3', '.db3'] };
  readonly nonTableFacts = [COUNTERS_FACTS];
  readonly changeCapture: WalCapture;
  readonly #busyTimeoutMs: number;

  constructor(options: SqliteEngineOptions = {}) {
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.changeCapture = new WalCapture({ busyTimeoutMs: this.#busyTimeoutMs });
  }

  accepts(locator: string): boolean {
    return locator.startsWith('sqlite:') || !/^[a-z][a-z0-9+.-]*:\/\//i.test(locator);
  }

  describe(locator: string): string {
    // Absolute, as the command line gives it: a program's relative path (`./app.db`) is the same
    // database as the CLI's absolute one, and a recorded source must name it from anywhere.
    return `sqlite:${path.resolve(filePath(locator))}`;
  }

  async snapshot(locator: string, options: SnapshotOptions): Promise<Snapshot> {
    const file = filePath(locator);
    await checkUnlessCaptured(file);
    return snapshotThrough(file, options, (copy) => this.#copyConsistent(file, copy, options));
  }

  async #copyConsistent(file: string, copy: string, options: SnapshotOptions): Promise<void> {
    let source: Database.Database;
    try {
      source = openDatabase(file, { readonly: true, fileMustExist: true, timeout: this.#busyTimeoutMs });
    } catch (err) {
      throw await explainSourceFailure(file, sqliteError(`open ${file}`, err), this.#busyTimeoutMs);
    }
    let reading = false;
    try {
      // A read transaction first, held until the copy is made: it waits for a writer's lock up to
      // the busy timeout (then SQLITE_BUSY, reported as DATABASE_LOCKED), and the copy is read
      // inside it. Without it, a writer taking its lock between that wait and the copy's first step
      // made that step busy, which better-sqlite3 counts as done: an empty copy taken for the
      // database, with facts to match, that verify passed.
      source.exec('BEGIN');
      reading = true;
      source.prepare('SELECT count(*) FROM sqlite_schema').get();
      const pageSize = source.pragma('page_size', { simple: true }) as number;
      const pages = source.pragma('page_count', { simple: true }) as number;
      let total = 0;
      await source.backup(copy, {
        // One step copies every page inside a single read transaction: nothing can change in
        // between, so the copy is consistent and the backup never restarts because of writers.
        progress: ({ totalPages, remainingPages }) => {
          total = totalPages;
          // Progress is in bytes, as everywhere else; SQLite counts pages.
          options.onProgress?.((totalPages - remainingPages) * pageSize, totalPages * pageSize);
          return Number.MAX_SAFE_INTEGER;
        },
      });
      options.onProgress?.(total * pageSize, total * pageSize);
      // The copy holds every page the transaction sees, or it is not the database. An empty file
      // (no page yet) is copied as an empty database, which has its first page.
      const copied = (await fs.stat(copy)).size / pageSize;
      if (pages === 0 ? copied > 1 : total !== pages || copied !== pages) {
        throw new StrataError('INTERNAL', `snapshot ${file}: the copy holds ${copied} of its ${pages} page(s) (the copy reported ${total}); nothing was stored. Run the backup again`);
      }
    } catch (err) {
      throw await explainSourceFailure(file, sqliteError(`snapshot ${file}`, err), this.#busyTimeoutMs);
    } finally {
      if (reading) {
        try {
          source.exec('COMMIT');
        } catch {
          // Closing ends the read transaction anyway.
        }
      }
      source.close();
    }
  }

  async beginRestore(target: string, options: EngineRestoreOptions): Promise<RestoreSession> {
    const file = path.resolve(filePath(target));
    await checkRestoreTarget(file);
    if (options.tables !== undefined) return this.#beginTableRestore(file, options);
    const exists = await fileExists(file);
    if (exists && !options.force) {
      throw new StrataError('TARGET_EXISTS', `restore: ${file} already exists; pass --force to replace it (the old file stays until the new one is complete)`);
    }
    const dir = path.dirname(file);
    if (!(await fileExists(dir))) throw new StrataError('USAGE', `restore: folder ${dir} does not exist`);
    await sweepRestoreLeftovers(file);
    const temp = restoreSideFile(file, 'restore');
    let finished = false;
    const removeTemp = async (): Promise<void> => {
      await Promise.all([temp, ...SIDE_SUFFIXES.map((s) => temp + s)].map((f) => fs.rm(f, { force: true })));
    };
    return {
      streamTarget: async (name: string): Promise<StreamTarget> => {
        if (name !== SQLITE_STREAM) throw new StrataError('ARTIFACT_CORRUPT', `restore: a SQLite backup has no stream named ${JSON.stringify(name)}`);
        return { kind: 'file', path: temp };
      },
      commit: async (info: RestoreCommitInfo) => {
        try {
          if (info.schemaOnly) createFromSchema(temp, info.schemaSql, info.engineMeta);
          if (info.changes) await applyWalFrames(temp, info.changes, info.engineMeta['pageSize'] as number);
          await syncFile(temp);
          await swapIntoPlace(temp, file, options.force, this.#busyTimeoutMs);
          finished = true;
        } catch (err) {
          await removeTemp();
          throw err instanceof StrataError ? err : wrapError(`restore ${file}`, err);
        }
      },
      abort: async () => {
        if (!finished) await removeTemp();
      },
    };
  }

  /**
   * Restores single tables: the whole snapshot is assembled in the temp folder, then the tables
   * are copied into the target with their indexes and triggers. Into an existing database this
   * happens in one transaction (all tables or none) and needs `force`; foreign keys that the
   * replaced rows would break make it roll back with the violations named.
   */
  async #beginTableRestore(file: string, options: EngineRestoreOptions): Promise<RestoreSession> {
    const tables = [...new Set(options.tables!)];
    const exists = await fileExists(file);
    if (exists && !options.force) {
      throw new StrataError('TARGET_EXISTS', redactable`restore: ${file} exists; pass --force to replace the tables ${named(tables, 'table')} in it (nothing else in it changes)`);
    }
    const dir = path.dirname(file);
    if (!(await fileExists(dir))) throw new StrataError('USAGE', `restore: folder ${dir} does not exist`);
    await fs.mkdir(options.tempDir, { recursive: true });
    await sweepRestoreLeftovers(file);
    const snapshot = path.join(options.tempDir, `tables-${randomBytes(6).toString('hex')}.db`);
    // Named like a whole restore's temporary file, so a restore after a kill removes it too.
    const fresh = restoreSideFile(file, 'restore');
    const remove = async (): Promise<void> => {
      await Promise.all([snapshot, fresh].flatMap((f) => [f, ...SIDE_SUFFIXES.map((x) => f + x)]).map((f) => fs.rm(f, { force: true })));
    };
    return {
      streamTarget: async (name: string): Promise<StreamTarget> => {
        if (name !== SQLITE_STREAM) throw new StrataError('ARTIFACT_CORRUPT', `restore: a SQLite backup has no stream named ${JSON.stringify(name)}`);
        return { kind: 'file', path: snapshot };
      },
      commit: async (info: RestoreCommitInfo) => {
        try {
          if (info.changes) await applyWalFrames(snapshot, info.changes, info.engineMeta['pageSize'] as number);
          const source = openDatabase(snapshot, { readonly: true, fileMustExist: true });
          const header = {
            pageSize: source.pragma('page_size', { simple: true }) as number,
            autoVacuum: source.pragma('auto_vacuum', { simple: true }) as number,
            encoding: source.pragma('encoding', { simple: true }) as string,
            applicationId: source.pragma('application_id', { simple: true }) as number,
          };
          source.close();
          if (exists) {
            await copyTables(snapshot, file, tables, header.encoding, { busyTimeoutMs: this.#busyTimeoutMs, lockWaitMs: (options.lockWaitSeconds ?? DEFAULT_TABLE_LOCK_WAIT_SECONDS) * 1000, signal: options.signal });
          } else {
            // Private from its first byte, as a whole restore's file is: it holds the backup's rows in
            // plaintext beside the target (SQLite gives its journal the same mode).
            await fs.writeFile(fresh, '', { mode: 0o600, flag: 'wx' });
            startLike(fresh, header, info.engineMeta['journalMode'] === 'wal');
            await copyTables(snapshot, fresh, tables, header.encoding, { busyTimeoutMs: this.#busyTimeoutMs, lockWaitMs: this.#busyTimeoutMs, signal: options.signal }, true);
            await syncFile(fresh);
            await swapIntoPlace(fresh, file, false, this.#busyTimeoutMs);
          }
        } catch (err) {
          throw err instanceof StrataError ? err : wrapError(`restore tables into ${file}`, err);
        } finally {
          await remove();
        }
      },
      abort: remove,
    };
  }

  async targetExists(target: string): Promise<boolean> {
    const file = path.resolve(filePath(target));
    await checkRestoreTarget(file);
    return fileExists(file);
  }

  async createScratch(options: { tempDir: string }): Promise<{ locator: string; drop(): Promise<void> }> {
    await fs.mkdir(options.tempDir, { recursive: true });
    const file = path.join(options.tempDir, `scratch-${randomBytes(6).toString('hex')}.db`);
    return {
      locator: `sqlite:${file}`,
      drop: async () => {
        await Promise.all([file, ...SIDE_SUFFIXES.map((s) => file + s)].map((f) => fs.rm(f, { force: true })));
      },
    };
  }

  async inspect(locator: string, options: InspectOptions = {}): Promise<DatabaseFacts & { integrityErrors: string[]; foreignKeysChecked: boolean }> {
    const file = filePath(locator);
    // Computed as the restore point being verified computed them (its factsVersion).
    const version = recordedFactsVersion(options.recordedMeta);
    await checkUnlessCaptured(file);
    let db: Database.Database;
    try {
      db = openDatabase(file, { readonly: true, fileMustExist: true, timeout: this.#busyTimeoutMs });
    } catch (err) {
      throw sqliteError(`open ${file}`, err);
    }
    try {
      const facts = collectFacts(db, { withData: true, version });
      const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).filter((m) => m !== 'ok' && !FULL_TEXT_INDEX_CHECK.test(m));
      const { violations, unchecked } = foreignKeyViolations(db, 'main');
      const fk = violations.map((r) => `foreign key violation: ${r.table} rowid ${r.rowid} references missing row in ${r.parent}`);
      return { ...facts, integrityErrors: [...integrity, ...fk], foreignKeysChecked: unchecked === 0 };
    } catch (err) {
      throw sqliteError(`inspect ${file}`, err);
    } finally {
      db.close();
    }
  }
}

/**
 * integrity_check's findings about a full-text table's index (SQLite checks FTS3/4/5 indexes
 * against their content since 3.44): left out of verify's integrity errors. They hold in the
 * source as much as in its copy, which has the same pages (an external-content index left behind
 * its content, a contentless table, compress= functions this process lacks), so they would fail
 * a faithful backup, and the index's own tables are compared row by row with the source's anyway.
 */
const FULL_TEXT_INDEX_CHECK = /\b(?:inverted index|index) for FTS[345] table\b/i;

/**
 * The facts version a restore point's engineMeta records: 1 for backups made before the field.
 * One this release does not know was made by a newer one, whose facts it cannot compute: said so,
 * rather than reported as tables that differ.
 */
function recordedFactsVersion(meta: Readonly<Record<string, unknown>> | undefined): number {
  if (meta === undefined) return FACTS_VERSION;
  const version = meta['factsVersion'];
  if (version === undefined) return 1;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1 || version > FACTS_VERSION) {
    // This machine's shortcoming, not the backup's: verify stops without recording a failure.
    throw new StrataError('TOOL_MISSING', `the backup's facts are of version ${JSON.stringify(version)}, which this Strata cannot compute (it knows 1 to ${FACTS_VERSION}): upgrade Strata here, or verify with the release that made the backup`);
  }
  return version;
}

/**
 * A snapshot from a consistent copy of `file` that `copyInto` makes (the online backup API, in one
 * read transaction): the copy is then read as one stream of page-sized chunks.
 */
export async function snapshotThrough(file: string, options: SnapshotOptions, copyInto: (copy: string) => Promise<void>): Promise<Snapshot> {
  await fs.mkdir(options.tempDir, { recursive: true });
  const copy = path.join(options.tempDir, `snapshot-${randomBytes(6).toString('hex')}.db`);
  const cleanup = async (): Promise<void> => {
    await Promise.all([copy, ...SIDE_SUFFIXES.map((s) => copy + s)].map((f) => fs.rm(f, { force: true })));
  };
  try {
    // The copy is plaintext user data: created 0600 before SQLite writes into it (SQLite keeps
    // an existing file's mode, and its journal files take the same mode).
    await createPrivateFile(copy);
    await copyInto(copy);
    throwIfAborted(options.signal, 'snapshot');
    const { fingerprint, objects, sql, meta } = readSnapshotSchema(copy, options.schemaOnly);
    const size = (await fs.stat(copy)).size;
    const stats = size <= STATS_HERE_BYTES ? tableStatsHere(copy, !options.schemaOnly) : tableStatsInWorker(copy, !options.schemaOnly);
    // Settled by tableStats() or, if nobody asks (an aborted backup), ignored.
    stats.promise.catch(() => undefined);
    const pageSize = meta['pageSize'] as number;
    const streams = options.schemaOnly
      ? []
      : [
          {
            name: SQLITE_STREAM,
            size,
            chunking: { kind: 'fixed' as const, size: pageSize },
            open: (opts: Abortable = {}) => createReadStream(copy, { highWaterMark: 1024 * 1024, signal: opts.signal }),
          },
        ];
    return {
      schemaFingerprint: fingerprint,
      schemaObjects: objects,
      tableStats: () => stats.promise,
      streams,
      schemaSql: sql,
      databaseBytes: size,
      engineMeta: meta,
      close: async () => {
        await stats.stop();
        await cleanup();
      },
    };
  } catch (err) {
    await cleanup();
    // SQLite says "database or disk is full" and the step names the database, which reads as the
    // source's disk; the source is only read, so the full disk is the copy's.
    if (outOfSpace(err)) {
      const bytes = (await fs.stat(file).catch(() => undefined))?.size;
      throw new StrataError(
        'NO_SPACE',
        `snapshot ${file}: the temporary folder ${options.tempDir} ran out of space for the copy of the database${bytes !== undefined ? ` (${bytes} bytes)` : ''}; the database itself is untouched. Free space there, or set STRATA_TMPDIR to a folder with room for a copy of the database`,
        { cause: err },
      );
    }
    throw err instanceof StrataError ? err : wrapError(`snapshot ${file}`, err);
  }
}

/** A full disk, in SQLite's words or the system's, anywhere in the chain of causes. */
function outOfSpace(err: unknown): boolean {
  for (let at: unknown = err, depth = 0; at && depth < 5; at = (at as { cause?: unknown }).cause, depth++) {
    const code = (at as { code?: unknown }).code;
    if (code === 'SQLITE_FULL' || code === 'ENOSPC' || code === 'EDQUOT' || code === 'NO_SPACE') return true;
  }
  return false;
}

/** The file path a locator names. */
export function filePath(locator: string): string {
  if (locator.startsWith('sqlite://')) return locator.slice('sqlite://'.length);
  if (locator.startsWith('sqlite:')) return locator.slice('sqlite:'.length);
  return locator;
}

async function fileExists(file: string): Promise<boolean> {
  try {
    await fs.stat(file);
    return true;
  } catch (err) {
    if (hasErrno(err, 'ENOENT')) return false;
    throw wrapError(`stat ${file}`, err);
  }
}

/**
 * checkIsSqliteFile, except for a database a capture of this process holds (a daemon's backup job
 * beside its replicate job): the capture checked it when it opened it, and this check's descriptor,
 * closed, would drop every lock the process holds on the file. Without the capture's lock on the
 * database file, an application closing its last connection takes SQLite for the only user: it
 * checkpoints the log, ignoring the capture's reader, and removes it and its index, while the
 * capture goes on reading the removed index and ships nothing more (test/pitr-capture.test.ts).
 */
async function checkUnlessCaptured(file: string): Promise<void> {
  const identity = await fs.stat(file).catch(() => undefined);
  if (identity && capturedHere(identity)) return;
  await checkIsSqliteFile(file);
}

export async function checkIsSqliteFile(file: string): Promise<void> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (err) {
    if (hasErrno(err, 'ENOENT')) throw new StrataError('DATABASE_NOT_FOUND', `database file ${file} does not exist`, { cause: err });
    if (hasErrno(err, 'EISDIR')) throw new StrataError('DATABASE_INVALID', `${file} is a folder, not a SQLite database file`, { cause: err });
    throw wrapError(`open ${file}`, err);
  }
  try {
    // Linux opens a folder for reading; only the read fails, with a bare EISDIR.
    if ((await handle.stat()).isDirectory()) throw new StrataError('DATABASE_INVALID', `${file} is a folder, not a SQLite database file`);
    const head = Buffer.alloc(16);
    const { bytesRead } = await handle.read(head, 0, 16, 0);
    // An empty file is a valid empty database to SQLite; anything else must carry the magic.
    if (bytesRead > 0 && !head.subarray(0, bytesRead).equals(SQLITE_MAGIC.subarray(0, bytesRead))) {
      throw new StrataError('DATABASE_INVALID', `${file} is not a SQLite database (its header does not start with "SQLite format 3")`);
    }
    if (bytesRead > 0 && bytesRead < 16) throw new StrataError('DATABASE_INVALID', `${file} is not a SQLite database (file too short)`);
  } finally {
    await handle.close();
  }
}

export function sqliteError(step: string, err: unknown): StrataError {
  if (err instanceof StrataError) return err;
  const code = (err as { code?: string }).code ?? '';
  // SQLite's own words can name schema objects ("malformed database schema (idx_…)").
  const message = errorText(err);
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new StrataError('DATABASE_LOCKED', redactable`${step}: the database is locked by another connection (${message}); retry when the writer is done`, {
      cause: err,
      details: { sqliteCode: code },
    });
  }
  if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') {
    return new StrataError('DATABASE_INVALID', redactable`${step}: not a valid SQLite database (${message})`, { cause: err, details: { sqliteCode: code } });
  }
  if (code === 'SQLITE_CANTOPEN') return new StrataError('DATABASE_NOT_FOUND', redactable`${step}: cannot open the database (${message})`, { cause: err });
  return wrapError(step, err);
}

/**
 * Two states of a source database that SQLite reports in words that mislead, said plainly with
 * what to do: a hot journal left by a writer that crashed mid-transaction (a read-only reader may
 * not roll it back, so SQLite says "attempt to write a readonly database"), and a lock that
 * outlasted the busy timeout (a program holding the database in exclusive mode, as browsers do).
 */
async function explainSourceFailure(file: string, err: StrataError, busyTimeoutMs: number): Promise<StrataError> {
  const sqliteCode = String((err.cause as { code?: string } | undefined)?.code ?? '');
  const journal = await fs.stat(`${file}-journal`).catch(() => undefined);
  if (sqliteCode.startsWith('SQLITE_READONLY') && journal && journal.size > 0) {
    return new StrataError(
      'DATABASE_LOCKED',
      `backup: ${file} has a hot journal (${file}-journal, ${journal.size} bytes) left by a program that crashed in the middle of a write; the database is not consistent until it is rolled back. Open it once with the program that owns it, or run \`sqlite3 ${file} 'PRAGMA integrity_check'\` (which rolls the journal back), then back up again. Strata reads sources read-only and does not change them`,
      { cause: err, details: { sqliteCode } },
    );
  }
  if (err.code === 'DATABASE_LOCKED') {
    return new StrataError(
      'DATABASE_LOCKED',
      `backup: ${file} is locked by another connection, and stayed locked for longer than ${(busyTimeoutMs / 1000).toFixed(1)} s: a program holds the database in exclusive mode (browsers and some apps do while they run), or, in a database not in WAL mode, writers commit one after another without a pause, so a reader never gets in. Close that program, pause the writers, or back up a copy the program made, then try again (a database in WAL mode, PRAGMA journal_mode=WAL, lets backups read beside writers)`,
      { cause: err, details: err.details },
    );
  }
  return err;
}

function readSnapshotSchema(copy: string, schemaOnly: boolean): { fingerprint: string; objects: SchemaObjects; sql: string; meta: Record<string, unknown> } {
  const db = openDatabase(copy, { readonly: true, fileMustExist: true });
  try {
    const meta: Record<string, unknown> = {
      pageSize: db.pragma('page_size', { simple: true }) as number,
      pageCount: db.pragma('page_count', { simple: true }) as number,
      encoding: db.pragma('encoding', { simple: true }) as string,
      userVersion: db.pragma('user_version', { simple: true }) as number,
      applicationId: db.pragma('application_id', { simple: true }) as number,
      autoVacuum: db.pragma('auto_vacuum', { simple: true }) as number,
      journalMode: db.pragma('journal_mode', { simple: true }) as string,
      sqliteVersion: (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v,
      factsVersion: FACTS_VERSION,
    };
    // A schema-only restore recreates sqlite_schema row by row (see createStoredObjects); schema.sql
    // alone cannot be cut into statements reliably, nor run where it uses "double-quoted" strings.
    // Other backups carry the rows inside the database file.
    if (schemaOnly) meta['schemaRows'] = storedObjects(db, 'main');
    return { fingerprint: schemaFingerprint(db), objects: schemaObjects(db), sql: schemaSql(db), meta };
  } finally {
    db.close();
  }
}

/**
 * Up to this size a snapshot's table stats are computed on this thread: reading a database this
 * small costs about what starting a worker thread does (measured: 70 ms of CPU for a 0.55 MB
 * database, 60 to 100 ms for a worker to start and load better-sqlite3), and a small backup then
 * starts no thread at all.
 */
const STATS_HERE_BYTES = 1024 * 1024;

/** Table stats of a small snapshot copy, computed now on this thread (the same facts the worker computes). */
function tableStatsHere(file: string, withData: boolean): { promise: Promise<TableStats[]>; stop(): Promise<void> } {
  let tables: TableStats[];
  try {
    const db = openDatabase(file, { readonly: true, fileMustExist: true });
    try {
      tables = [...collectFacts(db, { withData }).tables];
    } finally {
      db.close();
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { promise: Promise.reject(new StrataError('DATABASE_INVALID', redactable`snapshot: reading table statistics failed: ${withheld(message, 'SQLite message')}`)), stop: async () => undefined };
  }
  return { promise: Promise.resolve(tables), stop: async () => undefined };
}

/** Starts computing table stats of the snapshot copy on a worker thread. */
function tableStatsInWorker(file: string, withData: boolean): { promise: Promise<TableStats[]>; stop(): Promise<void> } {
  const worker = new Worker(new URL('./stats-worker.js', import.meta.url), { workerData: { file, withData, version: FACTS_VERSION } });
  const promise = new Promise<TableStats[]>((resolve, reject) => {
    worker.once('message', (msg: { tables?: TableStats[]; error?: string }) => {
      if (msg.tables) resolve(msg.tables);
      else reject(new StrataError('DATABASE_INVALID', redactable`snapshot: reading table statistics failed: ${withheld(msg.error ?? '', 'SQLite message')}`));
    });
    worker.once('error', (err) => reject(wrapError('snapshot: table statistics', err)));
    worker.once('exit', (code) => reject(new StrataError('INTERNAL', `snapshot: the table statistics worker exited (${code}) without a result`)));
  });
  return {
    promise,
    stop: async () => {
      await worker.terminate();
    },
  };
}


interface ForeignKeyViolation {
  table: string;
  rowid: number | null;
  parent: string;
  fkid: number;
}

/**
 * `PRAGMA foreign_key_check`, table by table: a foreign key to columns without a unique index,
 * which SQLite accepts while foreign keys are off (its default), makes the check of its table
 * fail with "foreign key mismatch"; such tables are counted as unchecked instead of failing the rest.
 */
function foreignKeyViolations(db: Database.Database, schema: string): { violations: ForeignKeyViolation[]; unchecked: number } {
  const q = quoteIdent(schema);
  const tables = (db.prepare(`SELECT name FROM ${q}.sqlite_schema WHERE type = 'table'`).all() as { name: string }[]).map((t) => t.name);
  const violations: ForeignKeyViolation[] = [];
  let unchecked = 0;
  for (const table of tables) {
    try {
      violations.push(...(db.prepare(`PRAGMA ${q}.foreign_key_check(${quoteIdent(table)})`).all() as ForeignKeyViolation[]));
    } catch (err) {
      if (!(err instanceof Error && /foreign key mismatch/.test(err.message))) throw err;
      unchecked++;
    }
  }
  return { violations, unchecked };
}

const violationKey = (v: ForeignKeyViolation): string => JSON.stringify([folded(v.table), v.rowid, folded(v.parent), v.fkid]);

/** SQLite compares identifiers ignoring the case of ASCII letters only (`Foo` is `FOO`, `É` is not `é`). */
function folded(name: string): string {
  return name.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
}

function sameName(a: string, b: string): boolean {
  return folded(a) === folded(b);
}

/**
 * The name that reaches a rowid table's rowid in `INSERT ... SELECT`: `rowid`, unless a column
 * is called that (then it is the column), else `oid` or `_rowid_`; undefined when all three are
 * columns (the rowids are then out of reach, as for SQLite itself, and are renumbered).
 */
function rowidAlias(columns: readonly string[]): string | undefined {
  return ['rowid', 'oid', '_rowid_'].find((alias) => !columns.some((c) => sameName(c, alias)));
}

/** A table that a restored table's triggers (or its external content) name and the schema lacks. */
interface MissingReference {
  readonly table: string;
  readonly missing: string;
  /** What would fail: `INSERT`, `UPDATE`, `DELETE` (its triggers), or `SELECT` (an external-content table). */
  readonly statement: string;
}

/**
 * The tables that `tables`' triggers and external content name and `schema` lacks, found as SQLite
 * finds them: preparing each kind of write compiles the triggers it would fire (nothing runs), and
 * reading one row of a virtual table reads its external content.
 */
function missingReferences(db: Database.Database, schema: string, tables: readonly string[], objects: readonly StoredObject[]): MissingReference[] {
  const found: MissingReference[] = [];
  for (const table of tables) {
    const q = `${quoteIdent(schema)}.${quoteIdent(table)}`;
    const virtual = objects.find((o) => o.type === 'table' && o.name === table)?.storage === 'virtual';
    const columns = (db.prepare(`PRAGMA ${quoteIdent(schema)}.table_xinfo(${quoteIdent(table)})`).all() as { name: string; hidden: number }[]).filter((c) => c.hidden === 0).map((c) => quoteIdent(c.name));
    const statements: [string, () => void][] = virtual
      ? [['SELECT', () => db.prepare(`SELECT * FROM ${q} LIMIT 1`).all()]]
      : [
          ['INSERT', () => db.prepare(`INSERT INTO ${q} DEFAULT VALUES`)],
          ...(columns.length > 0 ? [['UPDATE', () => db.prepare(`UPDATE ${q} SET ${columns.map((c) => `${c} = ${c}`).join(', ')} WHERE 0`)] as [string, () => void]] : []),
          ['DELETE', () => db.prepare(`DELETE FROM ${q} WHERE 0`)],
        ];
    for (const [statement, compile] of statements) {
      try {
        compile();
      } catch (err) {
        // Only a missing table is this check's business; anything else is the restore's to meet.
        const missing = err instanceof Error ? /^no such table: (?:[^.]+\.)?(.+)$/.exec(err.message)?.[1] : undefined;
        if (missing !== undefined) found.push({ table, missing, statement });
      }
    }
  }
  return found;
}

/**
 * What to tell of a table restore whose triggers or external content name a table this restore
 * does not bring back and the target lacks: every such write (or read) fails with "no such table"
 * until that table is there. Said, not refused: the rows are what was asked for (often to look
 * at them in a new file), and only writes that fire the trigger fail. What the backup itself
 * lacked comes back as it was, unsaid.
 */
function missingReferencesWarning(db: Database.Database, tables: readonly string[], objects: readonly StoredObject[]): string | undefined {
  const key = (m: MissingReference): string => JSON.stringify([folded(m.table), folded(m.missing), m.statement]);
  const inBackup = new Set(missingReferences(db, 'strata_backup', tables, objects).map(key));
  const added = missingReferences(db, 'main', tables, objects).filter((m) => !inBackup.has(key(m)));
  if (added.length === 0) return undefined;
  const said = added.map((m) => (m.statement === 'SELECT' ? `${m.table} reads its content from ${m.missing}` : `${m.statement} on ${m.table} fires a trigger that uses ${m.missing}`)).join('; ');
  // Named as the backup names them (a trigger may write `AUDIT` for `audit`), each once.
  const asStored = (name: string): string => objects.find((o) => o.type === 'table' && sameName(o.name, name))?.name ?? name;
  const together = tableListArgument([...new Set([...tables, ...added.map((m) => asStored(m.missing))])]);
  return `restore: ${said}, which this restore did not bring back and the target database lacks: each fails with "no such table" until it is there (restore it too, e.g. --tables ${together})`;
}

/**
 * A table restore's waits: `busyTimeoutMs` for a moment's lock (another connection's commit),
 * `lockWaitMs` for the write lock its transaction needs (another's whole write transaction).
 */
interface TableLockWait {
  readonly busyTimeoutMs: number;
  readonly lockWaitMs: number;
  readonly signal: AbortSignal | undefined;
}

/** How long each try for the write lock lets SQLite's own busy handler wait before the next. */
const WRITE_LOCK_TRY_MS = 100;

/**
 * Begins the table restore's write transaction, waiting until `deadline` for another connection's
 * write transaction (an application's) to end; then DATABASE_LOCKED, with nothing changed.
 *
 * Why in turns: SQLite's busy handler sleeps inside the call, which blocks the process for the
 * whole wait, so Ctrl-C could not end it.
 */
async function beginWriteWithin(db: Database.Database, targetFile: string, tables: readonly string[], deadline: number, wait: TableLockWait): Promise<void> {
  db.pragma(`busy_timeout = ${WRITE_LOCK_TRY_MS}`);
  for (;;) {
    throwIfAborted(wait.signal, 'restore: waiting for the write lock');
    try {
      db.exec('BEGIN IMMEDIATE');
      break;
    } catch (err) {
      const locked = sqliteError(`restore: lock ${targetFile}`, err);
      if (locked.code !== 'DATABASE_LOCKED') throw locked;
      if (performance.now() >= deadline) {
        const holders = await otherProcessesWithOpen(targetFile);
        throw new StrataError(
          'DATABASE_LOCKED',
          redactable`restore: could not replace ${named(tables, 'table')} in ${targetFile}: another connection held its write lock for ${Math.round(wait.lockWaitMs / 1000)} s (${holders.length > 0 ? `open in ${holders.map((p) => `pid ${p.pid} (${p.command})`).join(', ')}` : 'no other process this user can see has it open'}); SQLite locks the whole database for a write transaction until it ends. End it, or give --table-lock-wait longer, then run the restore again; nothing was changed`,
          { cause: err, details: { pids: holders.map((p) => p.pid) } },
        );
      }
      await sleepUnlessAborted(Math.min(WRITE_LOCK_TRY_MS, Math.max(0, deadline - performance.now())), wait.signal ?? new AbortController().signal);
    }
  }
  // The commit may still wait a moment for readers (in rollback-journal mode); inside SQLite, so
  // no longer than any other moment's lock.
  db.pragma(`busy_timeout = ${wait.busyTimeoutMs}`);
}

/**
 * Copies `tables` (with their indexes, triggers and AUTOINCREMENT counters) from the snapshot
 * into `targetFile`, replacing tables of the same names, in one transaction.
 */
async function copyTables(snapshotFile: string, targetFile: string, requested: readonly string[], encoding: string, wait: TableLockWait, fresh = false): Promise<void> {
  const deadline = performance.now() + wait.lockWaitMs;
  let db: Database.Database;
  try {
    db = openDatabase(targetFile, { fileMustExist: true, timeout: wait.busyTimeoutMs });
  } catch (err) {
    throw sqliteError(`restore: open ${targetFile}`, err);
  }
  try {
    // SQLite attaches only databases of the same text encoding. The new file of a restore takes the
    // backup's (SQLite fixes it with the first table, not with the first page, which startLike
    // wrote), and so does an empty file; an existing one keeps its own, also when it has no tables
    // left: its header says its encoding, which a pragma now would contradict.
    if (fresh || db.pragma('page_count', { simple: true }) === 0) db.pragma(`encoding = '${encoding}'`);
    const targetEncoding = db.pragma('encoding', { simple: true }) as string;
    if (targetEncoding !== encoding) {
      throw new StrataError(
        'RESTORE_FAILED',
        `restore: ${targetFile} stores text as ${targetEncoding} and the backup as ${encoding}; SQLite cannot copy tables between databases of different text encodings. Restore into a new file (without --force) or restore the whole database`,
      );
    }
    // Dropping a parent table with foreign keys on would cascade into its children; we check
    // the foreign keys ourselves before committing instead.
    db.pragma('foreign_keys = OFF');
    db.prepare('ATTACH DATABASE ? AS strata_backup').run(snapshotFile);
    const objects = storedObjects(db, 'strata_backup');
    const restorable = objects.filter((o) => o.type === 'table' && !o.name.startsWith('sqlite_') && o.storage !== 'shadow').map((o) => o.name);
    // Names as SQLite reads them (`users` is `Users`); a name that matches two tables in case only
    // (possible through quoting) must be given exactly.
    const tables = requested.map((name) => {
      if (objects.some((o) => o.name === name)) return name;
      const matches = restorable.filter((r) => sameName(r, name));
      return matches.length === 1 ? matches[0]! : name;
    });
    for (const table of tables) {
      if (objects.some((o) => o.name === table && o.storage === 'shadow')) {
        const owner = objects.find((o) => o.storage === 'virtual' && table.startsWith(`${o.name}_`));
        throw new StrataError('USAGE', redactable`restore: ${named(table, 'table')} belongs to the virtual table ${named(owner?.name ?? '(unknown)', 'table')}; restore that table instead`);
      }
      const view = objects.find((o) => o.type === 'view' && sameName(o.name, table));
      if (!restorable.includes(table) && view) {
        throw new StrataError('USAGE', redactable`restore: ${named(view.name, 'table')} is a view, which holds no rows of its own; restore the tables it reads (the backup has: ${named(restorable, 'table')})`);
      }
      if (!restorable.includes(table)) {
        throw new StrataError('TABLE_NOT_FOUND', redactable`restore: the backup has no table ${named(JSON.stringify(table), 'table')} (it has: ${named(restorable, 'table')})`, { details: { table } });
      }
      // A table restore copies rows with INSERT ... SELECT; a contentless full-text table gives
      // back no text to index (NULLs), so its copy would be an empty index.
      const created = objects.find((o) => o.type === 'table' && o.name === table);
      if (created?.storage === 'virtual' && /\busing\s+fts[45]\b/i.test(created.sql ?? '') && /\bcontent\s*=\s*(''|"")/i.test(created.sql ?? '')) {
        throw new StrataError('USAGE', redactable`restore: ${named(table, 'table')} is a contentless full-text table (content=''), which keeps only its index, and a table restore cannot copy an index; restore the whole database instead`);
      }
    }
    const backupSequence = objects.find((o) => o.name === 'sqlite_sequence');
    await beginWriteWithin(db, targetFile, tables, deadline, wait);
    // With the write lock held: what the target has on the tables now, not before the wait.
    const removed = replacedOwnObjects(db, tables, objects);
    const refused: string[] = [];
    try {
      for (const table of tables) {
        const q = quoteIdent(table);
        const created = objects.find((o) => o.type === 'table' && o.name === table)!;
        db.exec(`DROP TABLE IF EXISTS main.${q}`);
        // The table with its automatic (constraint) indexes first, and a sqlite_sequence for an
        // AUTOINCREMENT table that the target lacks (creating the table by its statement would
        // make one); then the rows; then indexes and triggers, so no trigger fires on restored rows.
        const automatic = objects.filter((o) => o.type === 'index' && sameName(o.tblName, table) && o.sql === null);
        // A trigger's tbl_name is the table's name as its CREATE TRIGGER spelled it (`ON FOO` for Foo).
        const later = objects.filter((o) => (o.type === 'index' || o.type === 'trigger') && sameName(o.tblName, table) && o.sql !== null);
        const needsSequence =
          backupSequence !== undefined && /\bAUTOINCREMENT\b/i.test(created.sql ?? '') && !db.prepare("SELECT 1 FROM main.sqlite_schema WHERE name = 'sqlite_sequence'").get();
        createStoredObjects(db, [created, ...automatic, ...(needsSequence ? [backupSequence] : [])]);
        // Before the rows, so that they are indexed under the settings they were indexed under.
        if (created.storage === 'virtual' && /\busing\s+fts5\b/i.test(created.sql ?? '')) refused.push(...carryFullTextSettings(db, table));
        const visible = (db.prepare(`PRAGMA strata_backup.table_xinfo(${q})`).all() as { name: string; hidden: number }[]).filter((c) => c.hidden === 0).map((c) => c.name);
        const language = created.storage === 'virtual' ? ftsLanguageColumn(created.sql) : undefined;
        const columns = language !== undefined && !visible.includes(language) ? [...visible, language] : visible;
        const rowid = rowidAlias(columns);
        const list = created.storage === 'index' || rowid === undefined ? columns : [rowid, ...columns];
        const quoted = list.map(quoteIdent).join(', ');
        db.exec(`INSERT INTO main.${q} (${quoted}) SELECT ${quoted} FROM strata_backup.${q}`);
        createStoredObjects(db, later);
        // The indexes were written empty; REINDEX fills them from the rows, as CREATE INDEX would.
        for (const index of later.filter((o) => o.type === 'index')) db.exec(`REINDEX main.${quoteIdent(index.name)}`);
        const hasSequence = backupSequence && db.prepare("SELECT 1 FROM main.sqlite_schema WHERE name = 'sqlite_sequence'").get();
        if (hasSequence) {
          db.prepare('DELETE FROM main.sqlite_sequence WHERE name = ?').run(table);
          db.prepare('INSERT INTO main.sqlite_sequence (name, seq) SELECT name, seq FROM strata_backup.sqlite_sequence WHERE name = ?').run(table);
        }
      }
      copyPlannerStatistics(db, tables);
      const incomplete = missingReferencesWarning(db, tables, objects);
      // A REFERENCES clause names its parent as it was written, in any case.
      const restored = new Set(tables.map(folded));
      const touches = (v: ForeignKeyViolation): boolean => restored.has(folded(v.table)) || restored.has(folded(v.parent));
      // Rows the backup itself holds in violation (written with foreign keys off, SQLite's default)
      // come back as they were: only a violation the backup did not have refuses the restore.
      const inBackup = new Map<string, number>();
      for (const v of foreignKeyViolations(db, 'strata_backup').violations.filter(touches)) inBackup.set(violationKey(v), (inBackup.get(violationKey(v)) ?? 0) + 1);
      const violations = foreignKeyViolations(db, 'main').violations.filter(touches).filter((v) => {
        const left = inBackup.get(violationKey(v)) ?? 0;
        if (left === 0) return true;
        inBackup.set(violationKey(v), left - 1);
        return false;
      });
      if (violations.length > 0) {
        const sample = violations.slice(0, 5).map((v) => `${v.table} row ${v.rowid} → ${v.parent}`).join('; ');
        const together = tableListArgument([...new Set([...tables, ...violations.flatMap((v) => [v.table, v.parent])])]);
        throw new StrataError(
          'USAGE',
          redactable`restore: the restored rows would break ${violations.length} foreign key reference(s) (${withheld(sample, 'rows')}); restore the related tables together, e.g. --tables ${withheld(together, 'tables')}`,
        );
      }
      db.exec('COMMIT');
      if (incomplete) process.emitWarning(incomplete, { code: 'STRATA_TABLES_INCOMPLETE' });
      if (refused.length > 0) {
        const sqliteVersion = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
        process.emitWarning(
          `restore: SQLite ${sqliteVersion} does not accept these settings of the backup's full-text tables, so the restored tables have its defaults for them: ${refused.join('; ')} (a newer SQLite wrote them; this one ignores them when it reads the tables too)`,
          { code: 'STRATA_TABLES_SETTINGS' },
        );
      }
      if (removed.length > 0) {
        const each = removed.map((o) => `${o.type} ${o.name} on ${o.tblName} (${o.sql})`).join('; ');
        process.emitWarning(
          `restore: these objects of ${targetFile} are not in the backup and went with the table(s) this restore replaced: ${each}. Run a statement again to have its object back`,
          { code: 'STRATA_TABLES_REPLACED' },
        );
      }
    } catch (err) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw err;
    }
  } catch (err) {
    throw err instanceof StrataError ? err : sqliteError(`restore tables into ${targetFile}`, err);
  } finally {
    try {
      db.exec('DETACH DATABASE strata_backup');
    } catch {
      // not attached (the error happened before ATTACH)
    }
    db.close();
  }
}

/**
 * Gives a restored FTS5 table the backup's settings (`rank`, `automerge`, `pgsz`, `secure-delete`,
 * ...), and returns those this SQLite refuses, as `table.key = value`. FTS5 keeps them in the
 * table's `_config` shadow table, which its CREATE statement does not fill: without this the table
 * comes back with the defaults, in a new file and over a target's table alike (DROP TABLE took the
 * target's settings with its shadow tables).
 *
 * Why through FTS5's own command (`INSERT INTO f(f, rank) VALUES (key, value)`) and not by copying
 * the `_config` rows: the command is the documented way, it works the same for a new table and a
 * replaced one and for external-content tables, it checks each value, and it updates the settings
 * the connection holds for the table, so the rows copied next are indexed under them (a copied row
 * would only be read by the next connection). `version` is the module's own: it writes it when it
 * creates the table (and raises it itself at the first delete under `secure-delete`), and refuses
 * it as a command. A setting this SQLite does not know (written by a newer one) is one it ignores
 * when it reads the table too: named, not fatal.
 */
function carryFullTextSettings(db: Database.Database, table: string): string[] {
  const config = `strata_backup.${quoteIdent(`${table}_config`)}`;
  const settings = db.prepare(`SELECT k, v FROM ${config} WHERE k <> 'version' ORDER BY k`).all() as { k: string; v: unknown }[];
  // The hidden column that takes FTS5's commands has the table's name. The value goes from table
  // to table inside SQLite: through JavaScript an integer (`automerge` 2) would come back as a
  // number that binds as a real, which FTS5 refuses.
  const set = db.prepare(`INSERT INTO main.${quoteIdent(table)} (${quoteIdent(table)}, rank) SELECT k, v FROM ${config} WHERE k = ?`);
  const refused: string[] = [];
  for (const { k, v } of settings) {
    try {
      set.run(k);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'SQLITE_ERROR') throw err;
      refused.push(`${table}.${k} = ${String(v)}`);
    }
  }
  return refused;
}

/**
 * The target's own indexes and triggers on `tables` that the backup has no object of the same
 * name for: replacing a table drops them with it, and the restore creates the backup's. An index
 * or an audit trigger added since the backup would otherwise vanish without a word.
 */
function replacedOwnObjects(db: Database.Database, tables: readonly string[], backup: readonly StoredObject[]): StoredObject[] {
  // By name and table: one of that name on another table is not what the restore creates here.
  const inBackup = new Set(backup.filter((o) => o.type === 'index' || o.type === 'trigger').map((o) => `${o.type} ${folded(o.name)} ${folded(o.tblName)}`));
  return storedObjects(db, 'main').filter(
    (o) => (o.type === 'index' || o.type === 'trigger') && o.sql !== null && tables.some((t) => sameName(o.tblName, t)) && !inBackup.has(`${o.type} ${folded(o.name)} ${folded(o.tblName)}`),
  );
}

/**
 * The restored tables' query planner statistics (ANALYZE's rows in sqlite_stat1, and in
 * sqlite_stat4 where both files have it) come from the backup with their rows: DROP TABLE took the
 * target's, and an analyzed database whose restored tables had none would plan every query on them
 * from guesses until someone ran ANALYZE again.
 */
function copyPlannerStatistics(db: Database.Database, tables: readonly string[]): void {
  const has = (schema: 'main' | 'strata_backup', name: string): boolean => db.prepare(`SELECT 1 FROM ${schema}.sqlite_schema WHERE name = ?`).get(name) !== undefined;
  if (!has('strata_backup', 'sqlite_stat1')) return;
  const analyzed = db.prepare('SELECT 1 FROM strata_backup.sqlite_stat1 WHERE tbl = ?');
  if (!tables.some((table) => analyzed.get(table) !== undefined)) return;
  // The documented way to create the statistics tables without analyzing anything.
  if (!has('main', 'sqlite_stat1')) db.exec('ANALYZE main.sqlite_schema');
  const kinds = [{ name: 'sqlite_stat1', columns: 'tbl, idx, stat' }];
  if (has('strata_backup', 'sqlite_stat4') && has('main', 'sqlite_stat4')) kinds.push({ name: 'sqlite_stat4', columns: 'tbl, idx, neq, nlt, ndlt, sample' });
  for (const { name, columns } of kinds) {
    const remove = db.prepare(`DELETE FROM main.${name} WHERE tbl = ?`);
    const copy = db.prepare(`INSERT INTO main.${name} (${columns}) SELECT ${columns} FROM strata_backup.${name} WHERE tbl = ?`);
    for (const table of tables) {
      remove.run(table);
      copy.run(table);
    }
  }
}

/**
 * Starts the new file of a table restore as the backed-up database started: its page size and
 * auto-vacuum mode, its application_id (what tells its application, and tools such as `file`, what
 * the file is), and WAL mode when the backup was in it. Its text encoding is copyTables' to set.
 * Not its user_version: the file holds only the tables named, and a migration tool that read the
 * backup's schema version there would take the file for the whole schema at that version.
 *
 * Why the first page is written here, in a transaction of its own: SQLite fixes page size and
 * auto-vacuum when it writes the file's first page, and a connection that sets them and closes
 * before writing anything (in rollback-journal mode, where nothing else writes that page) forgets
 * them; the tables would then be created under the defaults. Setting the application_id writes
 * that page, whatever its value. Before WAL mode, which would write it too (under whatever was set by then). The
 * encoding is another matter: SQLite fixes it only with the first table, so a pragma here would be
 * forgotten as well.
 */
function startLike(file: string, header: { pageSize: number; autoVacuum: number; applicationId: number }, wal: boolean): void {
  const db = openDatabase(file);
  try {
    db.pragma(`page_size = ${header.pageSize}`);
    db.pragma(`auto_vacuum = ${header.autoVacuum}`);
    db.exec('BEGIN IMMEDIATE');
    db.pragma(`application_id = ${header.applicationId}`);
    db.exec('COMMIT');
    if (wal) db.pragma('journal_mode = WAL');
  } finally {
    db.close();
  }
}

/**
 * Builds an empty database from a schema-only backup, with the original page settings: from the
 * stored sqlite_schema rows where the backup has them, else (older backups) by running its DDL.
 */
function createFromSchema(file: string, sql: string, meta: Readonly<Record<string, unknown>>): void {
  const db = openDatabase(file);
  try {
    // Page size, encoding and auto-vacuum only take effect before the first table exists.
    if (typeof meta['pageSize'] === 'number') db.pragma(`page_size = ${meta['pageSize']}`);
    if (typeof meta['autoVacuum'] === 'number') db.pragma(`auto_vacuum = ${meta['autoVacuum']}`);
    if (meta['encoding'] === 'UTF-16le' || meta['encoding'] === 'UTF-16be') db.pragma(`encoding = '${meta['encoding']}'`);
    const rows = meta['schemaRows'];
    db.exec('BEGIN');
    if (Array.isArray(rows)) {
      createStoredObjects(db, rows.map((row) => checkStoredObject(row)));
      db.pragma(`user_version = ${Number(meta['userVersion'] ?? 0)}`);
      db.pragma(`application_id = ${Number(meta['applicationId'] ?? 0)}`);
    } else {
      checkSchemaSql(sql);
      db.exec(sql);
    }
    db.exec('COMMIT');
    if (meta['journalMode'] === 'wal') db.pragma('journal_mode = WAL');
  } catch (err) {
    throw err instanceof StrataError ? err : new StrataError('ARTIFACT_CORRUPT', redactable`restore: the schema in the backup does not apply: ${errorText(err)}`, { cause: err });
  } finally {
    db.close();
  }
}

/** A schema row from a manifest, checked before it is written into sqlite_schema. */
function checkStoredObject(row: unknown): StoredObject {
  const r = row as Partial<StoredObject> | null;
  const storages = ['rowid', 'index', 'none', 'virtual', 'shadow'];
  const wellFormed =
    typeof r === 'object' &&
    r !== null &&
    typeof r.type === 'string' &&
    typeof r.name === 'string' &&
    typeof r.tblName === 'string' &&
    (r.sql === null || typeof r.sql === 'string') &&
    storages.includes(r.storage as string) &&
    (r.storage !== 'virtual' || typeof r.sql === 'string');
  if (!wellFormed) {
    throw new StrataError('ARTIFACT_CORRUPT', 'restore: the backup\'s schema rows (engineMeta.schemaRows) are malformed');
  }
  return { type: r!.type!, name: r!.name!, tblName: r!.tblName!, sql: r!.sql ?? null, storage: r!.storage! };
}

async function syncFile(file: string): Promise<void> {
  const handle = await fs.open(file, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Names of the files a restore keeps beside its target: `.NAME.strata-<kind>-<pid>-<random>`.
 * The pid lets a later restore of the same target remove what a killed one left.
 */
function restoreSideFile(file: string, kind: 'restore' | 'old'): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.strata-${kind}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** Removes the temporary and set-aside files that killed restores of `file` left beside it. */
async function sweepRestoreLeftovers(file: string): Promise<void> {
  const prefix = `.${path.basename(file)}.strata-`;
  const names = await fs.readdir(path.dirname(file)).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(/^(?:restore|old)-(\d+)-[0-9a-f]{12}/.exec(name.slice(prefix.length))?.[1]);
    if (Number.isInteger(pid) && pid > 0 && !processRuns(pid)) await fs.rm(path.join(path.dirname(file), name), { force: true });
  }
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return hasErrno(err, 'EPERM');
  }
}

/**
 * A restore target must be a plain file path. A symbolic link is refused rather than replaced
 * (replacing it would swap the link for a file and leave the database it points to as it was),
 * and a folder gets a message that says so instead of an advice to use --force.
 */
async function checkRestoreTarget(file: string): Promise<void> {
  const st = await fs.lstat(file).catch((err: unknown) => {
    if (hasErrno(err, 'ENOENT')) return undefined;
    throw wrapError(`restore: look at ${file}`, err);
  });
  if (!st) return;
  if (st.isSymbolicLink()) {
    const to = await fs.readlink(file).catch(() => '?');
    throw new StrataError('USAGE', `restore: ${file} is a symbolic link to ${to}; give the file it points to as --to (Strata does not replace links)`);
  }
  if (st.isDirectory()) throw new StrataError('USAGE', `restore: ${file} is a folder; give the path of the database file to write (e.g. ${path.join(file, 'restored.db')})`);
}

/**
 * Puts the restored file in place so that, killed at any moment, the target is either the old
 * database or the new one, never missing:
 * 1. An exclusive lock on the old database (DATABASE_LOCKED while any connection is mid-
 *    transaction), and in WAL mode a TRUNCATE checkpoint, so the old main file holds everything
 *    and its -wal is empty.
 * 2. The old file is hard-linked aside (its data stays reachable), and its -wal/-shm/-journal are
 *    moved aside, so no stale WAL is ever replayed onto the new file.
 * 3. The new file, already carrying the old one's owner, group and mode, is renamed over the
 *    target: one atomic step.
 * If a step fails, the side files go back; the set-aside link is removed at the end, or by the
 * next restore of this target if the process was killed.
 */
async function swapIntoPlace(temp: string, file: string, force: boolean, busyTimeoutMs: number): Promise<void> {
  const aside = restoreSideFile(file, 'old');
  const old = await fs.stat(file).catch((err: unknown) => {
    if (hasErrno(err, 'ENOENT')) return undefined;
    throw wrapError(`restore: look at ${file}`, err);
  });
  if (old) {
    if (!force) throw new StrataError('TARGET_EXISTS', `restore: ${file} appeared while restoring; pass --force to replace it`);
    const openers = await otherProcessesWithOpen(file);
    if (openers.length > 0) {
      throw new StrataError(
        'DATABASE_LOCKED',
        `restore: ${file} is open in ${openers.map((p) => `pid ${p.pid} (${p.command})`).join(', ')}; a program that keeps the database open across the restore goes on using the replaced file, and what it writes afterwards is lost. Stop it (or let it close the database), then restore again; nothing was changed${
          openers.some((p) => p.command === 'strata replicate' || p.command === 'strata daemon')
            ? ". Strata's own replicator holds it to ship its changes: stop it for the restore and start it again after, and it takes a new base of the restored database"
            : ''
        }`,
        { details: { pids: openers.map((p) => p.pid) } },
      );
    }
    let guard: Database.Database | undefined;
    try {
      guard = openDatabase(file, { fileMustExist: true, timeout: busyTimeoutMs });
      guard.exec('BEGIN EXCLUSIVE');
      guard.exec('ROLLBACK');
      if (String(guard.pragma('journal_mode', { simple: true })).toLowerCase() === 'wal') guard.pragma('wal_checkpoint(TRUNCATE)');
    } catch (err) {
      const wrapped = sqliteError(`restore: lock ${file}`, err);
      // A file that is not (or no longer) a database cannot have SQLite writers to wait for; the
      // caller asked to replace it with --force, which is exactly how a damaged database is fixed.
      if (wrapped.code !== 'DATABASE_INVALID') throw wrapped;
    } finally {
      guard?.close();
    }
    // The replaced database's owner and mode carry over: a database that belonged to another user
    // (restored by root, say) must still open for that user. Only root may give a file away; for
    // anybody else the file is theirs already or chown fails, and the mode still carries over.
    await fs.chmod(temp, old.mode & 0o7777);
    await fs.chown(temp, old.uid, old.gid).catch((err: unknown) => {
      if (!hasErrno(err, 'EPERM')) throw wrapError(`restore: give ${file} its old owner`, err);
    });
  }
  const moved: [string, string][] = [];
  try {
    if (old) await fs.link(file, aside);
    for (const suffix of SIDE_SUFFIXES) {
      try {
        await fs.rename(file + suffix, aside + suffix);
        moved.push([aside + suffix, file + suffix]);
      } catch (err) {
        if (!hasErrno(err, 'ENOENT')) throw err;
      }
    }
    await fs.rename(temp, file);
  } catch (err) {
    for (const [from, to] of moved.reverse()) await fs.rename(from, to).catch(() => undefined);
    await fs.rm(aside, { force: true });
    throw wrapError(`restore: replace ${file}`, err);
  }
  await Promise.all(['', ...SIDE_SUFFIXES].map((s) => fs.rm(aside + s, { force: true })));
  const dirHandle = await fs.open(path.dirname(file), 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

/**
 * Other processes that hold `file` or its -wal open, as far as this process may see (Linux's /proc:
 * all of them for root, its own user's otherwise; nothing elsewhere). A connection that is idle
 * holds no SQLite lock in rollback mode, so the lock taken before a swap cannot see it, yet it
 * would go on reading and writing the file the swap replaces.
 */
async function otherProcessesWithOpen(file: string): Promise<{ pid: number; command: string }[]> {
  if (process.platform !== 'linux') return [];
  const real = await fs.realpath(file).catch(() => file);
  const wanted = new Set([real, `${real}-wal`]);
  const pids = (await fs.readdir('/proc').catch(() => [] as string[])).filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid);
  const found: { pid: number; command: string }[] = [];
  for (const pid of pids) {
    const fds = await fs.readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (!wanted.has(target)) continue;
      const command = strataCommand(await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')) ?? (await fs.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
      found.push({ pid: Number(pid), command });
      break;
    }
  }
  return found;
}

/**
 * `strata replicate` (or another command of Strata) when a process's command line is one, from
 * /proc/PID/cmdline: Node's name alone, `node`, leaves a user looking for a program they did not
 * know held the database, when it is Strata's own replicator.
 */
export function strataCommand(cmdline: string): string | undefined {
  const args = cmdline.split('\0');
  const at = args.findIndex((arg, i) => i > 0 && (path.basename(arg) === 'strata' || /[\\/]cli[\\/]dist[\\/]main\.js$/.test(arg)));
  const command = at > 0 ? args[at + 1] : undefined;
  return command && /^[a-z-]+$/.test(command) ? `strata ${command}` : undefined;
}

/**
 * An FTS3/FTS4 table's language column (`languageid="lid"`): hidden, so table_xinfo's visible
 * columns leave it out, yet each row's value in it is that row's language, which a query must name
 * to find the row. Undefined for other tables.
 */
export function ftsLanguageColumn(sql: string | null): string | undefined {
  if (!sql || !/\busing\s+fts[34]\b/i.test(sql)) return undefined;
  const m = /\blanguageid\s*=\s*(?:"((?:[^"]|"")*)"|'((?:[^']|'')*)'|`((?:[^`]|``)*)`|\[([^\]]*)\]|([A-Za-z_][A-Za-z0-9_$]*))/i.exec(sql);
  if (!m) return undefined;
  if (m[1] !== undefined) return m[1].replaceAll('""', '"');
  if (m[2] !== undefined) return m[2].replaceAll("''", "'");
  if (m[3] !== undefined) return m[3].replaceAll('``', '`');
  return m[4] ?? m[5];
}

/** Creates an empty file readable by its owner only; fails if the name exists. */
export async function createPrivateFile(file: string): Promise<void> {
  await (await fs.open(file, 'wx', 0o600)).close();
}
