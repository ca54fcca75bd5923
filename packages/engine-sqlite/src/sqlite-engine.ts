import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { StrataError, hasErrno, throwIfAborted, wrapError } from '@strata/core';
import type {
  Abortable,
  DatabaseFacts,
  Engine,
  EngineCapabilities,
  RestoreCommitInfo,
  EngineRestoreOptions,
  RestoreSession,
  Snapshot,
  SnapshotOptions,
  StreamTarget,
} from '@strata/core';
import { collectFacts, schemaSql } from './sqlite-facts.js';

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
  readonly capabilities: EngineCapabilities = { incrementals: true, tableRestore: false };
  readonly #busyTimeoutMs: number;

  constructor(options: SqliteEngineOptions = {}) {
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  }

  accepts(locator: string): boolean {
    return locator.startsWith('sqlite:') || !/^[a-z][a-z0-9+.-]*:\/\//i.test(locator);
  }

  describe(locator: string): string {
    return `sqlite:${filePath(locator)}`;
  }

  async snapshot(locator: string, options: SnapshotOptions): Promise<Snapshot> {
    const file = filePath(locator);
    await checkIsSqliteFile(file);
    await fs.mkdir(options.tempDir, { recursive: true });
    const copy = path.join(options.tempDir, `snapshot-${randomBytes(6).toString('hex')}.db`);
    const cleanup = async (): Promise<void> => {
      await Promise.all([copy, ...SIDE_SUFFIXES.map((s) => copy + s)].map((f) => fs.rm(f, { force: true })));
    };
    try {
      await this.#copyConsistent(file, copy, options);
      throwIfAborted(options.signal, 'snapshot');
      const { facts, sql, meta } = readSnapshotFacts(copy, !options.schemaOnly);
      const size = (await fs.stat(copy)).size;
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
      return { ...facts, streams, schemaSql: sql, databaseBytes: size, engineMeta: meta, close: cleanup };
    } catch (err) {
      await cleanup();
      throw err instanceof StrataError ? err : wrapError(`snapshot ${file}`, err);
    }
  }

  async #copyConsistent(file: string, copy: string, options: SnapshotOptions): Promise<void> {
    let source: Database.Database;
    try {
      source = new Database(file, { readonly: true, fileMustExist: true, timeout: this.#busyTimeoutMs });
    } catch (err) {
      throw sqliteError(`open ${file}`, err);
    }
    try {
      // Start a read transaction first: it waits for a writer's lock up to the busy timeout and
      // fails with SQLITE_BUSY after that, which we report as DATABASE_LOCKED.
      source.prepare('SELECT count(*) FROM sqlite_schema').get();
      let total = 0;
      await source.backup(copy, {
        // One step copies every page inside a single read transaction: nothing can change in
        // between, so the copy is consistent and the backup never restarts because of writers.
        progress: ({ totalPages, remainingPages }) => {
          total = totalPages;
          options.onProgress?.(totalPages - remainingPages, totalPages);
          return Number.MAX_SAFE_INTEGER;
        },
      });
      options.onProgress?.(total, total);
    } catch (err) {
      throw sqliteError(`snapshot ${file}`, err);
    } finally {
      source.close();
    }
  }

  async beginRestore(target: string, options: EngineRestoreOptions): Promise<RestoreSession> {
    const file = path.resolve(filePath(target));
    if (options.tables !== undefined) {
      throw new StrataError('USAGE', 'restore: restoring single tables is not supported by this version of the SQLite engine');
    }
    const exists = await fileExists(file);
    if (exists && !options.force) {
      throw new StrataError('TARGET_EXISTS', `restore: ${file} already exists; pass --force to replace it (the old file stays until the new one is complete)`);
    }
    const dir = path.dirname(file);
    if (!(await fileExists(dir))) throw new StrataError('USAGE', `restore: folder ${dir} does not exist`);
    const temp = path.join(dir, `.${path.basename(file)}.strata-restore-${randomBytes(6).toString('hex')}`);
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

  async inspect(locator: string): Promise<DatabaseFacts & { integrityErrors: string[] }> {
    const file = filePath(locator);
    await checkIsSqliteFile(file);
    let db: Database.Database;
    try {
      db = new Database(file, { readonly: true, fileMustExist: true, timeout: this.#busyTimeoutMs });
    } catch (err) {
      throw sqliteError(`open ${file}`, err);
    }
    try {
      const facts = collectFacts(db, { withData: true });
      const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).filter((m) => m !== 'ok');
      const fk = (db.pragma('foreign_key_check') as { table: string; rowid: number; parent: string }[]).map(
        (r) => `foreign key violation: ${r.table} rowid ${r.rowid} references missing row in ${r.parent}`,
      );
      return { ...facts, integrityErrors: [...integrity, ...fk] };
    } catch (err) {
      throw sqliteError(`inspect ${file}`, err);
    } finally {
      db.close();
    }
  }
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

async function checkIsSqliteFile(file: string): Promise<void> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (err) {
    if (hasErrno(err, 'ENOENT')) throw new StrataError('DATABASE_NOT_FOUND', `database file ${file} does not exist`, { cause: err });
    if (hasErrno(err, 'EISDIR')) throw new StrataError('DATABASE_INVALID', `${file} is a folder, not a SQLite database file`, { cause: err });
    throw wrapError(`open ${file}`, err);
  }
  try {
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

function sqliteError(step: string, err: unknown): StrataError {
  if (err instanceof StrataError) return err;
  const code = (err as { code?: string }).code ?? '';
  const message = err instanceof Error ? err.message : String(err);
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new StrataError('DATABASE_LOCKED', `${step}: the database is locked by another connection (${message}); retry when the writer is done`, {
      cause: err,
      details: { sqliteCode: code },
    });
  }
  if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') {
    return new StrataError('DATABASE_INVALID', `${step}: not a valid SQLite database (${message})`, { cause: err, details: { sqliteCode: code } });
  }
  if (code === 'SQLITE_CANTOPEN') return new StrataError('DATABASE_NOT_FOUND', `${step}: cannot open the database (${message})`, { cause: err });
  return wrapError(step, err);
}

function readSnapshotFacts(copy: string, withData: boolean): { facts: DatabaseFacts; sql: string; meta: Record<string, unknown> } {
  const db = new Database(copy, { readonly: true, fileMustExist: true });
  try {
    const facts = collectFacts(db, { withData });
    const meta = {
      pageSize: db.pragma('page_size', { simple: true }) as number,
      pageCount: db.pragma('page_count', { simple: true }) as number,
      encoding: db.pragma('encoding', { simple: true }) as string,
      userVersion: db.pragma('user_version', { simple: true }) as number,
      applicationId: db.pragma('application_id', { simple: true }) as number,
      autoVacuum: db.pragma('auto_vacuum', { simple: true }) as number,
      journalMode: db.pragma('journal_mode', { simple: true }) as string,
      sqliteVersion: (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v,
    };
    return { facts, sql: schemaSql(db), meta };
  } finally {
    db.close();
  }
}

/** Builds an empty database from a schema-only backup's DDL, with the original page settings. */
function createFromSchema(file: string, sql: string, meta: Readonly<Record<string, unknown>>): void {
  const db = new Database(file);
  try {
    // Page size, encoding and auto-vacuum only take effect before the first table exists.
    if (typeof meta['pageSize'] === 'number') db.pragma(`page_size = ${meta['pageSize']}`);
    if (typeof meta['autoVacuum'] === 'number') db.pragma(`auto_vacuum = ${meta['autoVacuum']}`);
    if (meta['encoding'] === 'UTF-16le' || meta['encoding'] === 'UTF-16be') db.pragma(`encoding = '${meta['encoding']}'`);
    db.exec('BEGIN');
    db.exec(sql);
    db.exec('COMMIT');
    if (meta['journalMode'] === 'wal') db.pragma('journal_mode = WAL');
  } catch (err) {
    throw new StrataError('ARTIFACT_CORRUPT', `restore: the schema in the backup does not apply: ${(err as Error).message}`, { cause: err });
  } finally {
    db.close();
  }
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
 * Puts the restored file in place. First we take and release an exclusive lock on the old
 * database, which fails with DATABASE_LOCKED while any connection is mid-transaction. Then the old
 * database moves aside together with its -wal/-shm/-journal (so no stale WAL is ever replayed onto
 * the new file), the new file is renamed in, and only then is the old one deleted. If a rename
 * fails, the old files go back where they were.
 */
async function swapIntoPlace(temp: string, file: string, force: boolean, busyTimeoutMs: number): Promise<void> {
  const aside = path.join(path.dirname(file), `.${path.basename(file)}.strata-old-${randomBytes(6).toString('hex')}`);
  if (await fileExists(file)) {
    if (!force) throw new StrataError('TARGET_EXISTS', `restore: ${file} appeared while restoring; pass --force to replace it`);
    let guard: Database.Database | undefined;
    try {
      guard = new Database(file, { fileMustExist: true, timeout: busyTimeoutMs });
      guard.exec('BEGIN EXCLUSIVE');
      guard.exec('ROLLBACK');
    } catch (err) {
      const wrapped = sqliteError(`restore: lock ${file}`, err);
      // A file that is not (or no longer) a database cannot have SQLite writers to wait for; the
      // caller asked to replace it with --force, which is exactly how a damaged database is fixed.
      if (wrapped.code !== 'DATABASE_INVALID') throw wrapped;
    } finally {
      guard?.close();
    }
  }
  const moved: [string, string][] = [];
  try {
    for (const suffix of ['', ...SIDE_SUFFIXES]) {
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
