import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type mysql from 'mysql2/promise';
import { StrataError, discardSink, isStrataError, parentsFirst, refuseExistingTarget, throwIfAborted } from '@strata/core';
import type {
  Abortable,
  DatabaseFacts,
  Engine,
  EngineCapabilities,
  EngineRestoreOptions,
  RestoreCommitInfo,
  RestoreSession,
  Snapshot,
  SnapshotOptions,
  StreamTarget,
  TableStats,
} from '@strata/core';
import { connect, connectionError, ident, parseTarget, withDatabase } from './mysql-connection.js';
import type { MysqlTarget } from './mysql-connection.js';
import { RowInserter, RowStats, listTables, readRows, statsOf, streamName, tableOfStream } from './mysql-rows.js';
import { fingerprint, parseSchemaText, readSchema, schemaText } from './mysql-schema.js';
import type { MysqlSchema } from './mysql-schema.js';
import { MYSQL_HAND_RECOVERY } from './mysql-recovery.js';

const AVERAGE_CHUNK = 64 * 1024;

/**
 * MySQL and MariaDB through mysql2.
 *
 * A snapshot is `START TRANSACTION WITH CONSISTENT SNAPSHOT` on one connection: InnoDB tables are
 * read as of that moment. Non-transactional tables (MyISAM, Aria) cannot be isolated; they are
 * read as they are while the backup runs, and the manifest lists them under
 * `engineMeta.nonTransactionalTables` (mysqldump --single-transaction has the same limit).
 *
 * Each table is one stream of tab-separated text rows in primary-key order (binary columns as
 * hex), cut into row-aligned content-defined chunks. Restores build a new database, load the rows
 * with foreign key checks off, create views, triggers and events after the rows, then move the
 * tables into the target with one atomic RENAME TABLE.
 */
export class MysqlEngine implements Engine {
  readonly kind = 'mysql';
  readonly capabilities: EngineCapabilities = { incrementals: true, tableRestore: true };
  readonly handRecovery = MYSQL_HAND_RECOVERY;

  accepts(locator: string): boolean {
    return /^(mysql|mariadb):\/\//i.test(locator);
  }

  describe(locator: string): string {
    try {
      return parseTarget(locator).safe;
    } catch {
      return 'mysql://(unparseable URL)';
    }
  }

  async snapshot(locator: string, options: SnapshotOptions): Promise<Snapshot> {
    const target = parseTarget(locator);
    const connection = await connect(target);
    let open = true;
    const close = async (): Promise<void> => {
      if (!open) return;
      open = false;
      await connection.query('ROLLBACK').catch(() => undefined);
      await connection.end().catch(() => undefined);
    };
    try {
      await connection.query('SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      await connection.query('START TRANSACTION WITH CONSISTENT SNAPSHOT');
      const schema = await readSchema(connection, target.database);
      const tables = await listTables(connection, target.database);
      const [[size]] = (await connection.query<mysql.RowDataPacket[]>(
        'SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS bytes FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?',
        [target.database],
      )) as unknown as [mysql.RowDataPacket[]];
      const [[version]] = (await connection.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v')) as unknown as [mysql.RowDataPacket[]];
      const stats = new Map<string, TableStats>();
      const streams = options.schemaOnly
        ? []
        : tables.map((table) => ({
            name: streamName(table.name),
            chunking: { kind: 'content-defined' as const, averageSize: AVERAGE_CHUNK },
            open: (opts: Abortable = {}) =>
              (async function* () {
                const counter = new RowStats();
                for await (const chunk of readRows(connection, table, counter)) {
                  throwIfAborted(opts.signal, 'snapshot');
                  yield chunk;
                }
                stats.set(table.name, counter.finish(table.name));
              })(),
          }));
      const empty = new RowStats().finish('');
      return {
        schemaFingerprint: fingerprint(schema),
        tableStats: async () => {
          if (options.schemaOnly) return tables.map((t) => ({ ...empty, name: t.name }));
          for (const s of await statsOf(connection, tables.filter((t) => !stats.has(t.name)))) stats.set(s.name, s);
          return tables.map((t) => stats.get(t.name)!);
        },
        streams,
        schemaSql: schemaText(schema),
        databaseBytes: Number(size?.['bytes'] ?? 0),
        engineMeta: {
          serverVersion: String(version?.['v'] ?? ''),
          nonTransactionalTables: tables.filter((t) => !t.transactional).map((t) => t.name),
        },
        close,
      };
    } catch (err) {
      await close();
      throw isStrataError(err) ? err : connectionError(target, err);
    }
  }

  async targetExists(locator: string): Promise<boolean> {
    const target = parseTarget(locator);
    const admin = await connect(target, { useDatabase: false });
    try {
      const [rows] = await admin.query<mysql.RowDataPacket[]>('SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [target.database]);
      return rows.length > 0;
    } finally {
      await admin.end().catch(() => undefined);
    }
  }

  async beginRestore(locator: string, options: EngineRestoreOptions): Promise<RestoreSession> {
    const target = parseTarget(locator);
    const exists = await this.targetExists(locator);
    refuseExistingTarget(target, exists, options);
    if (options.tables && exists) return beginTableRestore(target, options);
    return beginDatabaseRestore(target, exists, options);
  }

  async createScratch(options: { tempDir: string; source?: string }): Promise<{ locator: string; drop(): Promise<void> }> {
    if (!options.source) throw new StrataError('USAGE', 'mysql: verification needs the server the backup came from');
    const source = parseTarget(options.source);
    const name = `strata_scratch_${randomBytes(6).toString('hex')}`;
    return {
      locator: withDatabase(source, name).raw,
      drop: async () => {
        const admin = await connect(source, { useDatabase: false });
        try {
          await admin.query(`DROP DATABASE IF EXISTS ${ident(name)}`);
        } finally {
          await admin.end().catch(() => undefined);
        }
      },
    };
  }

  async inspect(locator: string): Promise<DatabaseFacts & { integrityErrors: string[] }> {
    const target = parseTarget(locator);
    const connection = await connect(target);
    try {
      await connection.query('START TRANSACTION WITH CONSISTENT SNAPSHOT');
      const schema = await readSchema(connection, target.database);
      const tables = await listTables(connection, target.database);
      return { schemaFingerprint: fingerprint(schema), tables: await statsOf(connection, tables), integrityErrors: [] };
    } catch (err) {
      throw isStrataError(err) ? err : connectionError(target, err);
    } finally {
      await connection.query('ROLLBACK').catch(() => undefined);
      await connection.end().catch(() => undefined);
    }
  }
}

/** A sink that inserts a stream's rows into a table. */
function insertInto(connection: mysql.Connection, database: string, table: string): StreamTarget {
  const inserter = new RowInserter(connection, table, database);
  return { kind: 'sink', write: (chunk) => inserter.write(chunk), end: () => inserter.end() };
}


/** Runs the post-data statements (views, triggers, events) in `database`, views in dependency order. */
async function runPostData(connection: mysql.Connection, database: string, schema: MysqlSchema): Promise<void> {
  await connection.query(`USE ${ident(database)}`);
  // Each object runs together with the SET SESSION of its original settings that precedes it.
  const units: string[][] = [];
  let context: string | undefined;
  for (const sql of schema.post.map((s) => s.replaceAll('{{db}}.', `${ident(database)}.`))) {
    if (/^SET SESSION /i.test(sql)) context = sql;
    else {
      units.push(context ? [context, sql] : [sql]);
      context = undefined;
    }
  }
  // A view may name another view created later; retry until no statement makes progress.
  let pending = units;
  while (pending.length > 0) {
    const failed: { unit: string[]; err: unknown }[] = [];
    for (const unit of pending) {
      try {
        for (const sql of unit) await connection.query(sql);
      } catch (err) {
        failed.push({ unit, err });
      }
    }
    if (failed.length === pending.length) {
      throw new StrataError('ARTIFACT_CORRUPT', `restore: the backup's schema does not apply: ${(failed[0]!.err as Error).message}`, { cause: failed[0]!.err });
    }
    pending = failed.map((f) => f.unit);
  }
}

/**
 * Restores into a new work database (tables and routines only), loads the rows, then moves the
 * tables into the target with one atomic RENAME TABLE and creates views, triggers and events
 * there. An existing target keeps its tables until that rename.
 */
async function beginDatabaseRestore(target: MysqlTarget, exists: boolean, options: EngineRestoreOptions): Promise<RestoreSession> {
  const work = `${target.database.slice(0, 40)}__strata_${randomBytes(4).toString('hex')}`;
  const admin = await connect(target, { useDatabase: false });
  await admin.query("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', FOREIGN_KEY_CHECKS = 0, UNIQUE_CHECKS = 0");
  let created = false;
  let schema: MysqlSchema | undefined;
  const wanted = options.tables ? new Set(options.tables) : undefined;
  const cleanup = async (): Promise<void> => {
    if (created) await admin.query(`DROP DATABASE IF EXISTS ${ident(work)}`).catch(() => undefined);
    created = false;
    await admin.end().catch(() => undefined);
  };
  return {
    prepare: async (schemaSql) => {
      try {
        schema = parseSchemaText(schemaSql);
        await admin.query(`CREATE DATABASE ${ident(work)} CHARACTER SET ${schema.charset} COLLATE ${schema.collation}`);
        created = true;
        await admin.query(`USE ${ident(work)}`);
        for (const sql of schema.pre.filter((s) => /^CREATE TABLE/i.test(s))) await admin.query(sql);
      } catch (err) {
        throw isStrataError(err) ? err : new StrataError('ARTIFACT_CORRUPT', `restore: the schema in the backup does not apply: ${(err as Error).message}`, { cause: err });
      }
    },
    streamTarget: async (name) => {
      const table = tableOfStream(name);
      if (!table) throw new StrataError('ARTIFACT_CORRUPT', `restore: a MySQL backup has no stream named ${JSON.stringify(name)}`);
      if (wanted && !wanted.has(table)) return discardSink;
      return insertInto(admin, work, table);
    },
    commit: async (info: RestoreCommitInfo) => {
      try {
        if (!schema) throw new StrataError('INTERNAL', 'restore: commit before the schema was applied');
        if (wanted) for (const t of wanted) if (!info.tables.includes(t)) throw new StrataError('TABLE_NOT_FOUND', `restore: the backup has no table ${JSON.stringify(t)} (it has: ${info.tables.join(', ')})`);
        const [tables] = await admin.query<mysql.RowDataPacket[]>("SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'", [work]);
        const old = `${target.database.slice(0, 40)}__strata_old_${randomBytes(4).toString('hex')}`;
        if (exists) {
          await admin.query(`CREATE DATABASE ${ident(old)}`);
          await dropProgrammable(admin, target.database);
        } else {
          await admin.query(`CREATE DATABASE ${ident(target.database)} CHARACTER SET ${schema.charset} COLLATE ${schema.collation}`);
        }
        const [current] = exists
          ? await admin.query<mysql.RowDataPacket[]>("SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'", [target.database])
          : [[] as mysql.RowDataPacket[]];
        const moves = [
          ...current.map((t) => `${ident(target.database)}.${ident(t['name'])} TO ${ident(old)}.${ident(t['name'])}`),
          ...tables.map((t) => `${ident(work)}.${ident(t['name'])} TO ${ident(target.database)}.${ident(t['name'])}`),
        ];
        // One statement: every table moves, or none does.
        if (moves.length > 0) await admin.query(`RENAME TABLE ${moves.join(', ')}`);
        if (exists) await admin.query(`ALTER DATABASE ${ident(target.database)} CHARACTER SET ${schema.charset} COLLATE ${schema.collation}`);
        await admin.query(`USE ${ident(target.database)}`);
        for (const sql of schema.pre.filter((s) => !/^CREATE TABLE/i.test(s))) await admin.query(sql);
        await runPostData(admin, target.database, schema);
        if (exists) await admin.query(`DROP DATABASE ${ident(old)}`);
        await admin.query(`DROP DATABASE ${ident(work)}`);
        created = false;
        await admin.end().catch(() => undefined);
      } catch (err) {
        await cleanup();
        throw isStrataError(err) ? err : connectionError(target, err);
      }
    },
    abort: cleanup,
  };
}

/** Drops views, routines, triggers and events of a database (before its tables are replaced). */
async function dropProgrammable(admin: mysql.Connection, database: string): Promise<void> {
  await admin.query(`USE ${ident(database)}`);
  const [views] = await admin.query<mysql.RowDataPacket[]>("SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'VIEW'", [database]);
  for (const v of views) await admin.query(`DROP VIEW IF EXISTS ${ident(v['name'])}`);
  const [triggers] = await admin.query<mysql.RowDataPacket[]>('SHOW TRIGGERS');
  for (const t of triggers) await admin.query(`DROP TRIGGER IF EXISTS ${ident(t['Trigger'])}`);
  const [events] = await admin.query<mysql.RowDataPacket[]>('SHOW EVENTS');
  for (const e of events) await admin.query(`DROP EVENT IF EXISTS ${ident(e['Name'])}`);
  for (const kind of ['FUNCTION', 'PROCEDURE']) {
    const [routines] = await admin.query<mysql.RowDataPacket[]>(`SHOW ${kind} STATUS WHERE Db = ?`, [database]);
    for (const r of routines) await admin.query(`DROP ${kind} IF EXISTS ${ident(r['Name'])}`);
  }
}

/** Replaces the rows of some tables of an existing database in one transaction. */
async function beginTableRestore(target: MysqlTarget, options: EngineRestoreOptions): Promise<RestoreSession> {
  const wanted = new Set(options.tables!);
  await fs.mkdir(options.tempDir, { recursive: true });
  const files = new Map<string, string>();
  const cleanup = async (): Promise<void> => {
    await Promise.all([...files.values()].map((f) => fs.rm(f, { force: true })));
  };
  return {
    streamTarget: async (name) => {
      const table = tableOfStream(name);
      if (!table) throw new StrataError('ARTIFACT_CORRUPT', `restore: a MySQL backup has no stream named ${JSON.stringify(name)}`);
      if (!wanted.has(table)) return discardSink;
      const file = path.join(options.tempDir, `rows-${randomBytes(6).toString('hex')}.tsv`);
      files.set(table, file);
      return { kind: 'file', path: file };
    },
    commit: async (info: RestoreCommitInfo) => {
      const connection = await connect(target);
      try {
        for (const t of wanted) {
          if (!info.tables.includes(t)) throw new StrataError('TABLE_NOT_FOUND', `restore: the backup has no table ${JSON.stringify(t)} (it has: ${info.tables.join(', ')})`);
        }
        const present = new Set((await listTables(connection, target.database)).map((t) => t.name));
        for (const t of wanted) if (!present.has(t)) throw new StrataError('TABLE_NOT_FOUND', `restore: the target database has no table ${t}`);
        const order = parentsFirst([...wanted], await foreignKeys(connection, target.database));
        await connection.query("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'");
        await connection.query('START TRANSACTION');
        try {
          for (const t of [...order].reverse()) await connection.query(`DELETE FROM ${ident(t)}`);
          for (const t of order) {
            const sink = insertInto(connection, target.database, t);
            if (sink.kind !== 'sink') throw new StrataError('INTERNAL', 'restore: expected a row sink');
            const file = files.get(t);
            if (file) for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) await sink.write(chunk as Buffer);
            await sink.end();
          }
          await connection.query('COMMIT');
        } catch (err) {
          await connection.query('ROLLBACK').catch(() => undefined);
          const e = err as { code?: string; message?: string };
          if (e.code === 'ER_ROW_IS_REFERENCED_2' || e.code === 'ER_NO_REFERENCED_ROW_2') {
            throw new StrataError('USAGE', `restore: replacing ${order.join(', ')} would break a foreign key (${e.message}); include the related tables in --tables`, { cause: err });
          }
          throw err;
        }
      } catch (err) {
        throw isStrataError(err) ? err : connectionError(target, err);
      } finally {
        await connection.end().catch(() => undefined);
        await cleanup();
      }
    },
    abort: cleanup,
  };
}

/** Foreign-key edges between tables of the database. */
async function foreignKeys(connection: mysql.Connection, database: string): Promise<{ child: string; parent: string }[]> {
  const [edges] = await connection.query<mysql.RowDataPacket[]>(
    'SELECT TABLE_NAME AS child, REFERENCED_TABLE_NAME AS parent FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND REFERENCED_TABLE_NAME IS NOT NULL',
    [database],
  );
  return edges.map((e) => ({ child: e['child'] as string, parent: e['parent'] as string }));
}
