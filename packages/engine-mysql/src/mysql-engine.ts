import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type mysql from 'mysql2/promise';
import { ServerEngine, StrataError, WorkDatabase, discardSink, isStrataError, named, redactable, rowsInTurns, throwIfAborted, withheld, workDatabaseSession } from '@strata/core';
import type {
  Abortable,
  ReplaceTablesOptions,
  DatabaseFacts,
  EngineCapabilities,
  EngineDisplay,
  EngineRestoreOptions,
  InspectOptions,
  RestoreCommitInfo,
  RestoreSession,
  RestoreWorkNames,
  ServerAdmin,
  SpooledTables,
  TableFilter,
  Snapshot,
  SnapshotOptions,
  StreamSink,
  StreamTarget,
  TableStats,
} from '@strata/core';
import { MYSQL_URL_RULES, connect, connectionError, ident, parseTarget } from './mysql-connection.js';
import type { MysqlTarget } from './mysql-connection.js';
import { RowInserter, emptyFacts, fromClause, listTables, readRows, rowlessTables, statsOf, streamName, tableOfStream as tableOfRowStream } from './mysql-rows.js';
import { autoIncrementCounters, databaseOptions, fingerprint, inDatabase, isDataStatement, parseSchemaText, readSchema, refuseInvalidViews, schemaObjects, schemaText, withEventStatuses } from './mysql-schema.js';
import { CREATE_SESSION, DATABASE_RESTORE_SESSION, RESTORE_SESSION, TABLE_RESTORE_SESSION, dropProgrammable, movableTables, retargetDefaults, runProgrammable, serverMessage } from './mysql-objects.js';
import { finishSwap, saveSwapRecord, savedTrigger, swapPlan, swapTables, tableNames, undoSwap, undoFailed } from './mysql-swap.js';
import type { SavedTrigger, SwapRecord } from './mysql-swap.js';
import type { MysqlSchema } from './mysql-schema.js';
import type { MysqlTable } from './mysql-rows.js';
import { MYSQL_HAND_RECOVERY } from './mysql-recovery.js';
import { MYSQL_IDENTIFIER_LIMIT, mysqlAdmin } from './mysql-admin.js';
import { FACTS_VERSION, hasLegacyRowFormat, hasRowFormatBefore3, legacyFacts, recordedWithFormat3Facts, recordedWithCounters, recordedWithLegacyFacts, recordedWithoutRowlessFacts } from './mysql-legacy-facts.js';

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
 * hex, BIT as numbers, FLOAT widened to DOUBLE, history rows of system-versioned tables with
 * their periods), cut into row-aligned content-defined chunks. Row counts and checksums are
 * computed by the server in the same snapshot, independently of those streams. Restores build a
 * new database, load the rows with foreign key checks off, rehearse routines, views and triggers
 * there, then move the tables and sequences into the target with one atomic RENAME TABLE.
 */
export class MysqlEngine extends ServerEngine {
  readonly kind = 'mysql';
  readonly capabilities: EngineCapabilities = { incrementals: true, tableRestore: true };
  readonly handRecovery = MYSQL_HAND_RECOVERY;
  readonly display: EngineDisplay = { name: 'MySQL/MariaDB', locator: 'url', schemes: ['mysql', 'mariadb'], example: 'mysql://user@host:3306/db', fileExtensions: [], passwordSources: 'MYSQL_PWD' };
  protected readonly urlRules = MYSQL_URL_RULES;
  protected readonly identifierLimit = MYSQL_IDENTIFIER_LIMIT;

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
      await refuseInvalidViews(connection, target.database);
      const schema = await readSchema(connection, target.database);
      const tables = await listTables(connection, target.database);
      const [[size]] = (await connection.query<mysql.RowDataPacket[]>(
        'SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS bytes FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?',
        [target.database],
      )) as unknown as [mysql.RowDataPacket[]];
      const [[version]] = (await connection.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v')) as unknown as [mysql.RowDataPacket[]];
      const streams = options.schemaOnly
        ? []
        : tables.map((table) => ({
            name: streamName(table.name),
            chunking: { kind: 'content-defined' as const, averageSize: AVERAGE_CHUNK },
            open: (opts: Abortable = {}) =>
              (async function* () {
                for await (const chunk of readRows(connection, table)) {
                  throwIfAborted(opts.signal, 'snapshot');
                  yield chunk;
                }
              })(),
          }));
      return {
        schemaFingerprint: fingerprint(schema),
        schemaObjects: schemaObjects(schema),
        // Computed by the server in the same snapshot, not from the streams: a value the stream
        // encoding loses then shows up as a difference when verify recomputes them after a restore.
        // The counters are those the restore's CREATE TABLE sets, so a restore that loses one is caught.
        tableStats: async () =>
          options.schemaOnly
            ? withCounters(connection, target.database, tables, tables.map((t) => emptyFacts(t.name)), schema, { rows: false })
            : withCounters(connection, target.database, tables, await statsOf(connection, tables), schema, { rows: true }),
        streams,
        schemaSql: schemaText(schema),
        databaseBytes: Number(size?.['bytes'] ?? 0),
        engineMeta: {
          // Without it, verify measures a restore the way backups before server-computed facts did.
          factsVersion: FACTS_VERSION,
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

  async inspect(locator: string, options: InspectOptions = {}): Promise<DatabaseFacts & { integrityErrors: string[]; foreignKeysChecked: boolean }> {
    const target = parseTarget(locator);
    const connection = await connect(target);
    try {
      await connection.query('START TRANSACTION WITH CONSISTENT SNAPSHOT');
      const disabledEvents = this.#scratchEvents.get(target.database);
      if (recordedWithLegacyFacts(options.recordedMeta)) {
        // No schemaObjects: such a backup recorded none, and today's would not match its fingerprint's reading.
        return {
          ...(await legacyFacts(connection, target.database, disabledEvents)),
          integrityErrors: await foreignKeyViolations(connection, target.database),
          foreignKeysChecked: true,
        };
      }
      const read = await readSchema(connection, target.database);
      const schema = disabledEvents ? withEventStatuses(read, disabledEvents) : read;
      const tables = await listTables(connection, target.database, { format3: recordedWithFormat3Facts(options.recordedMeta), rowless: !recordedWithoutRowlessFacts(options.recordedMeta) });
      return {
        schemaFingerprint: fingerprint(schema),
        schemaObjects: schemaObjects(schema),
        tables: recordedWithCounters(options.recordedMeta) ? await withCounters(connection, target.database, tables, await statsOf(connection, tables), read, { rows: true }) : await statsOf(connection, tables),
        integrityErrors: await foreignKeyViolations(connection, target.database),
        foreignKeysChecked: true,
      };
    } catch (err) {
      throw isStrataError(err) ? err : connectionError(target, err);
    } finally {
      await connection.query('ROLLBACK').catch(() => undefined);
      await connection.end().catch(() => undefined);
    }
  }

  protected async connectAdmin(server: MysqlTarget): Promise<ServerAdmin> {
    return mysqlAdmin(await connect(server, { useDatabase: false }));
  }

  protected tableOfStream(stream: string): string {
    const table = tableOfRowStream(stream);
    if (!table) throw new StrataError('ARTIFACT_CORRUPT', `restore: a MySQL backup has no stream named ${JSON.stringify(stream)}`);
    return table;
  }

  protected beginDatabaseRestore(target: MysqlTarget, exists: boolean, names: RestoreWorkNames, options: EngineRestoreOptions): Promise<RestoreSession> {
    let disabledEvents: Map<string, string> | undefined;
    if (this.isScratch(target.database)) {
      disabledEvents = new Map();
      this.#scratchEvents.set(target.database, disabledEvents);
    }
    return beginDatabaseRestore(target, exists, names, this.tableFilter(options), disabledEvents, options.signal, options.lockWaitSeconds);
  }

  /**
   * The events a restore into one of verify's scratch databases created disabled, with the status
   * each had in the backup. With the server's event scheduler on (MySQL 8's default), an enabled
   * event in the scratch database runs on its schedule while verify reads it, and one whose body
   * names another database (`INSERT INTO reporting.daily ...`) writes there, into live data. The
   * facts read from the scratch give each back its status, so the comparison with the backup is
   * unchanged.
   */
  readonly #scratchEvents = new Map<string, Map<string, string>>();

  protected override scratchDropped(database: string): void {
    this.#scratchEvents.delete(database);
  }

  protected replaceTables(target: MysqlTarget, tables: readonly string[], spooled: SpooledTables, info: RestoreCommitInfo, names: RestoreWorkNames, options: ReplaceTablesOptions = {}): Promise<void> {
    return replaceTables(target, tables, spooled, info, names, options.signal, options.lockWaitSeconds);
  }
}


/**
 * Table facts with each table's AUTO_INCREMENT counter folded into its checksum: a restore that
 * brought the rows back but not the counter would hand out again the ids of deleted rows. The
 * counter folded in is the one a restore leaves, the stated one or, where the table holds a larger
 * id (a server that did not move the counter when an id was updated past it), that id plus one:
 * loading rows with their ids moves the counter past them. A restore without rows (`rows: false`,
 * a schema-only backup) leaves the stated one.
 */
async function withCounters(
  connection: mysql.Connection,
  database: string,
  tables: readonly MysqlTable[],
  stats: readonly TableStats[],
  schema: MysqlSchema,
  restored: { rows: boolean },
): Promise<TableStats[]> {
  const counters = autoIncrementCounters(schema);
  if (counters.size === 0) return [...stats];
  const [columns] = await connection.query<mysql.RowDataPacket[]>(
    "SELECT TABLE_NAME AS t, COLUMN_NAME AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND EXTRA LIKE '%auto_increment%'",
    [database],
  );
  const autoColumn = new Map(columns.map((r) => [String(r['t']), String(r['c'])]));
  const byName = new Map(tables.map((t) => [t.name, t]));
  const out: TableStats[] = [];
  for (const t of stats) {
    const stated = counters.get(t.name);
    if (stated === undefined) {
      out.push(t);
      continue;
    }
    let counter = BigInt(stated);
    const column = autoColumn.get(t.name);
    const table = byName.get(t.name);
    if (restored.rows && column !== undefined && table !== undefined) {
      const [[row]] = (await connection.query<mysql.RowDataPacket[]>(`SELECT CAST(MAX(${ident(column)}) AS CHAR) AS top FROM ${fromClause(table)}`)) as unknown as [mysql.RowDataPacket[]];
      const top = row?.['top'];
      if (typeof top === 'string' && /^-?\d+$/.test(top) && BigInt(top) + 1n > counter) counter = BigInt(top) + 1n;
    }
    out.push({ ...t, checksum: createHash('sha256').update(`${t.checksum} AUTO_INCREMENT=${counter}`).digest('hex') });
  }
  return out;
}

/** A sink that inserts a stream's rows into a table (`schemaSql` says how the backup encoded them). */
function insertInto(connection: mysql.Connection, database: string, table: string, schemaSql: string): StreamSink {
  const inserter = new RowInserter(connection, table, database, { bitAsHex: hasLegacyRowFormat(schemaSql), format3: !hasRowFormatBefore3(schemaSql) });
  return { kind: 'sink', write: (chunk) => inserter.write(chunk), end: () => inserter.end() };
}

/**
 * Restored events keep the status they were backed up with, so with the server's event scheduler
 * on (MySQL 8's default) the enabled ones run in the target from now on: as they should in a
 * database restored in place, not always in a copy beside the original (an event whose body names
 * another database writes there). Said, not changed.
 */
async function reportRunningEvents(admin: mysql.Connection, database: string): Promise<void> {
  const [[scheduler]] = (await admin.query<mysql.RowDataPacket[]>('SELECT @@GLOBAL.event_scheduler AS state')) as unknown as [mysql.RowDataPacket[]];
  if (String(scheduler?.['state'] ?? '').toUpperCase() !== 'ON') return;
  const [events] = await admin.query<mysql.RowDataPacket[]>("SELECT EVENT_NAME AS name FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND STATUS = 'ENABLED' ORDER BY EVENT_NAME", [database]);
  if (events.length === 0) return;
  process.emitWarning(
    `restore: event(s) ${events.map((e) => String(e['name'])).join(', ')} restored enabled, and this server's event scheduler is on: they run in ${database} on their schedules from now on (ALTER EVENT ... DISABLE in a copy that should not act by itself)`,
    { code: 'STRATA_EVENTS_ENABLED' },
  );
}

/**
 * Restores into a new work database, loads the rows, rehearses the routines, views and triggers
 * there, then moves the tables (and sequences) into the target with one atomic RENAME TABLE and
 * creates views, triggers and events there. An existing target keeps its tables until that
 * rename; if anything fails after it, the original tables are moved back and the original
 * routines, views, triggers and events recreated, so a failed restore leaves the target as it
 * was and no work database behind.
 */
async function beginDatabaseRestore(
  target: MysqlTarget,
  exists: boolean,
  names: RestoreWorkNames,
  wanted: TableFilter | undefined,
  disabledEvents: Map<string, string> | undefined,
  signal: AbortSignal | undefined,
  lockWaitSeconds: number | undefined,
): Promise<RestoreSession> {
  const admin = await connect(target, { useDatabase: false });
  await admin.query(DATABASE_RESTORE_SESSION);
  // Before any row is loaded; checked again just before the swap.
  if (exists) {
    try {
      await refuseReferencesFromOtherDatabases(admin, target.database);
    } catch (err) {
      await admin.end().catch(() => undefined);
      throw err;
    }
  }
  const dropQuietly = async (database: string): Promise<void> => void (await admin.query(`DROP DATABASE IF EXISTS ${ident(database)}`).catch(() => undefined));
  const workDatabase = new WorkDatabase(names, dropQuietly);
  const { name: work, aside } = workDatabase;
  let schema: MysqlSchema | undefined;
  let schemaSql = '';
  // Tables that hold no rows of their own (see ROWLESS_ENGINES): rows a backup made before facts
  // version 5 carries for them would be written through them into the tables under them.
  let rowless = new Set<string>();
  // A second connection: rows load on both at once (rowsInTurns), as the server inserts a
  // statement's rows on one core.
  let second: mysql.Connection | undefined;
  const endSecond = async (): Promise<void> => {
    await second?.end().catch(() => undefined);
    second = undefined;
  };
  const session: RestoreSession = {
    prepare: async (text) => {
      wanted?.prepare(text);
      schemaSql = text;
      schema = parseSchemaText(text);
      await admin.query(`CREATE DATABASE ${ident(work)} ${databaseOptions(schema)}`);
      workDatabase.created();
      await admin.query(`USE ${ident(work)}`);
      second = await connect(target, { useDatabase: false });
      await second.query(DATABASE_RESTORE_SESSION);
      await admin.query(CREATE_SESSION);
      for (const sql of schema.pre.filter(isDataStatement)) {
        try {
          await admin.query(inDatabase(schema, sql, work));
        } catch (err) {
          const name = /^\S+ \S+ (`(?:[^`]|``)+`|\S+)/.exec(sql)?.[1] ?? sql.slice(0, 60);
          throw new StrataError('RESTORE_FAILED', redactable`restore: the target refused ${withheld(name, 'object')} (${serverMessage(err)})`, { cause: err });
        }
      }
      await admin.query(DATABASE_RESTORE_SESSION);
      rowless = await rowlessTables(admin, work);
    },
    streamTarget: async (name) => {
      const table = tableOfRowStream(name);
      if (!table) throw new StrataError('ARTIFACT_CORRUPT', `restore: a MySQL backup has no stream named ${JSON.stringify(name)}`);
      if ((wanted && !wanted.wants(table)) || rowless.has(table)) return discardSink;
      return rowsInTurns([admin, ...(second ? [second] : [])].map((connection) => insertInto(connection, work, table, schemaSql)));
    },
    commit: async (info: RestoreCommitInfo) => {
      let createdTarget = false;
      let record: SwapRecord | undefined;
      let swapped = false;
      try {
        await endSecond();
        if (!schema) throw new StrataError('INTERNAL', 'restore: commit before the schema was applied');
        if (wanted) wanted.check(info.tables);
        // A routine, view or trigger the target refuses fails here, before the target is touched.
        await runProgrammable(admin, work, schema, { events: false });
        await dropProgrammable(admin, work);
        const incoming = await movableTables(admin, work);
        if (exists) {
          await refuseReferencesFromOtherDatabases(admin, target.database);
          await admin.query(`USE ${ident(target.database)}`);
          const before = await readSchema(admin, target.database);
          record = await saveSwapRecord(admin, aside, {
            format: 1,
            database: target.database,
            work,
            ...(await swapPlan(admin, target.database, await movableTables(admin, target.database), [...(await tableNames(admin, target.database)), ...incoming])),
            incoming,
            objects: {
              kind: 'database',
              // Through its text, as a backup would hold it: that splits each object from its session settings.
              before: schemaText(before),
              beforeObjects: Object.keys(before.objects ?? {}).filter((key) => /^(view|trigger|routine|event) /.test(key)),
              after: schemaSql,
            },
          });
          await swapTables(admin, target, record, aside, signal, lockWaitSeconds);
          swapped = true;
          await finishSwap(admin, record, aside, disabledEvents ? { disabledEvents } : {});
        } else {
          await admin.query(`CREATE DATABASE ${ident(target.database)} ${databaseOptions(schema)}`);
          createdTarget = true;
          // One statement: every table moves, or none does.
          if (incoming.length > 0) await admin.query(`RENAME TABLE ${incoming.map((t) => `${ident(work)}.${ident(t)} TO ${ident(target.database)}.${ident(t)}`).join(', ')}`);
          await retargetDefaults(admin, work, target.database);
          await runProgrammable(admin, target.database, schema, { events: true, ...(disabledEvents ? { disabledEvents } : {}) });
        }
        // Advice only: a failure to give it leaves the finished restore as it is.
        if (!disabledEvents) await reportRunningEvents(admin, target.database).catch(() => undefined);
      } catch (err) {
        const failure = isStrataError(err) ? err : connectionError(target, err);
        if (createdTarget) await dropQuietly(target.database);
        else if (record && swapped) {
          try {
            await undoSwap(admin, record, aside);
          } catch (undoErr) {
            // The aside database stays: it holds the target's old tables and the record the next run settles it from.
            throw undoFailed(failure, undoErr, target.database, aside);
          }
          await dropQuietly(aside);
        } else if (exists && !(isStrataError(failure) && failure.details?.['parkedIn'] === aside)) await dropQuietly(aside);
        throw failure;
      }
      if (record) await dropQuietly(aside);
    },
    // Nothing of the target was touched before commit: the work database is all there is to drop.
    abort: endSecond,
  };
  return workDatabaseSession(workDatabase, session, () => admin.end().catch(() => undefined));
}

interface ForeignKey {
  readonly name: string;
  readonly schema: string;
  readonly table: string;
  readonly columns: string[];
  readonly parentSchema: string;
  readonly parent: string;
  readonly parentColumns: string[];
}

/** Foreign keys declared in `database`, or (with `referencing`) those pointing into it from anywhere. */
async function foreignKeysOf(connection: mysql.Connection, database: string, referencing = false): Promise<ForeignKey[]> {
  const [rows] = await connection.query<mysql.RowDataPacket[]>(
    `SELECT CONSTRAINT_NAME AS name, TABLE_SCHEMA AS s, TABLE_NAME AS t, COLUMN_NAME AS c, REFERENCED_TABLE_SCHEMA AS ps, REFERENCED_TABLE_NAME AS pt, REFERENCED_COLUMN_NAME AS pc
     FROM information_schema.KEY_COLUMN_USAGE WHERE ${referencing ? 'REFERENCED_TABLE_SCHEMA' : 'TABLE_SCHEMA'} = ? AND REFERENCED_TABLE_NAME IS NOT NULL
     ORDER BY TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION`,
    [database],
  );
  const keys = new Map<string, ForeignKey>();
  for (const r of rows) {
    const id = `${String(r['s'])}.${String(r['t'])}.${String(r['name'])}`;
    let key = keys.get(id);
    if (!key) {
      key = { name: r['name'] as string, schema: r['s'] as string, table: r['t'] as string, columns: [], parentSchema: r['ps'] as string, parent: r['pt'] as string, parentColumns: [] };
      keys.set(id, key);
    }
    key.columns.push(r['c'] as string);
    key.parentColumns.push(r['pc'] as string);
  }
  return [...keys.values()];
}

/**
 * Refuses (USAGE) a restore over `database` while another database's foreign key refers to one of
 * its tables. The swap renames the old tables out, the server moves such a key with its table, and
 * dropping the old tables then leaves the key referring to nothing: every later insert into the
 * other database's table would fail. Changing another database's tables is not the restore's to do.
 */
async function refuseReferencesFromOtherDatabases(connection: mysql.Connection, database: string): Promise<void> {
  const incoming = (await foreignKeysOf(connection, database, true)).filter((k) => k.schema !== database);
  if (incoming.length === 0) return;
  throw new StrataError(
    'USAGE',
    redactable`restore: foreign keys of other databases refer to tables of ${named(database, 'database')} (${named(incoming.map((k) => `${k.schema}.${k.table} → ${k.parent} (${k.name})`), 'foreign key')}); the restore swaps those tables out, and each key would be left referring to the old table, which is dropped; nothing was changed. Drop those foreign keys, restore, then add them again, or restore into a new database`,
  );
}

/** Child rows whose key (all of its columns set, as MySQL checks it) has no parent row. */
async function orphans(connection: mysql.Connection, key: ForeignKey, childSchema: string, parentSchema: string): Promise<number> {
  const set = key.columns.map((c) => `c.${ident(c)} IS NOT NULL`).join(' AND ');
  const match = key.columns.map((c, i) => `p.${ident(key.parentColumns[i]!)} = c.${ident(c)}`).join(' AND ');
  const [[row]] = (await connection.query<mysql.RowDataPacket[]>(
    `SELECT COUNT(*) AS n FROM ${ident(childSchema)}.${ident(key.table)} c WHERE ${set} AND NOT EXISTS (SELECT 1 FROM ${ident(parentSchema)}.${ident(key.parent)} p WHERE ${match})`,
  )) as unknown as [mysql.RowDataPacket[]];
  return Number(row?.['n'] ?? 0);
}

/** Every foreign key of the database checked row by row (the restore loaded rows with checks off). */
async function foreignKeyViolations(connection: mysql.Connection, database: string): Promise<string[]> {
  const problems: string[] = [];
  for (const key of await foreignKeysOf(connection, database)) {
    const n = await orphans(connection, key, database, key.parentSchema);
    if (n > 0) problems.push(`foreign key ${key.name} of table ${key.table}: ${n} row(s) reference no row of ${key.parent}`);
  }
  return problems;
}

/**
 * The columns whose values a backup's rows carry, in order, from a CREATE TABLE as the server
 * shows it (SHOW CREATE TABLE: one column a line, each line's name first, then its type). Generated
 * columns carry none (the server computes them), as describeTable leaves them out: `generated`
 * names them (in lower case) where the server can say, otherwise each definition tells (see
 * isGeneratedDefinition). Names are compared as the server does, whatever their case. `type` and
 * `charset` are what decide how a
 * value is kept: the type with its length, precision or members and `unsigned`, written alike for
 * equal columns (see comparableType), and a text column's character set, its own or, named by a
 * collation only or not at all, the one that collation or the table's default says.
 */
function valuedColumns(create: string, generated?: ReadonlySet<string>): { name: string; type: string; charset: string | undefined }[] {
  const tableCharset = /\n\)[^\n]*? DEFAULT CHARSET=(\w+)/.exec(create)?.[1];
  return [...create.matchAll(/^ {2}`((?:[^`]|``)+)` (.*)$/gm)]
    .filter((m) => !(generated ? generated.has(m[1]!.replace(/``/g, '`').toLowerCase()) : isGeneratedDefinition(m[2]!)))
    .map((m) => {
      const definition = m[2]!;
      const type = /^\w+(?:\((?:'(?:[^'\\]|\\.|'')*'|[^)'])*\))?(?: unsigned)?(?: zerofill)?/i.exec(definition)?.[0] ?? definition;
      const text = /^(?:char|varchar|tinytext|text|mediumtext|longtext|enum|set)\b/i.test(type);
      // Right after the type, as the server writes them (a comment further on may say anything).
      const after = /^(?: CHARACTER SET (\w+))?(?: COLLATE (\w+))?/i.exec(definition.slice(type.length))!;
      const own = after[1] ?? after[2]?.split('_')[0];
      return { name: m[1]!.replace(/``/g, '`').toLowerCase(), type: comparableType(type), charset: text ? charsetName(own ?? tableCharset) : undefined };
    });
}

/**
 * Whether a column definition as SHOW CREATE TABLE writes it (after the name) is a generated
 * column's: `AS (expr)` with VIRTUAL, STORED or PERSISTENT. Quoted text (a COMMENT, a DEFAULT, a
 * string in the expression) and quoted names may say anything, `computed AS (price * qty),
 * stored by the app`, so they are taken out first.
 */
function isGeneratedDefinition(definition: string): boolean {
  const bare = definition.replace(/'(?:[^'\\]|\\.|'')*'|`(?:[^`]|``)*`/g, "''");
  return /\bAS \(/i.test(bare) && /\b(VIRTUAL|PERSISTENT|STORED)\b/i.test(bare);
}

/**
 * The generated columns of a table (in lower case), as the server describes them. A system
 * period's row start and end columns are generated too, but their values travel with the rows.
 */
async function generatedColumns(connection: mysql.Connection, database: string, table: string): Promise<Set<string>> {
  // MySQL writes '' where MariaDB writes NULL for a column that is not generated.
  const [rows] = await connection.query<mysql.RowDataPacket[]>(
    "SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND IFNULL(GENERATION_EXPRESSION, '') NOT IN ('', 'ROW START', 'ROW END')",
    [database, table],
  );
  return new Set(rows.map((r) => String(r['name']).toLowerCase()));
}

/**
 * A column type as servers of every version write it: without an integer's display width
 * (`int(11)` before MySQL 8.0.19, `int` after; it changes no value) unless ZEROFILL pads to it,
 * and YEAR without its (4).
 */
function comparableType(type: string): string {
  if (/ zerofill$/i.test(type)) return type;
  return type.replace(/^(tinyint|smallint|mediumint|int|integer|bigint)\(\d+\)/i, '$1').replace(/^year\(4\)/i, 'year');
}

/** `utf8` is `utf8mb3` in newer servers' words. */
function charsetName(charset: string | undefined): string | undefined {
  return charset?.toLowerCase() === 'utf8' ? 'utf8mb3' : charset?.toLowerCase();
}

/** Whether SHOW CREATE TABLE's statement makes a system-versioned table (its options, after the column list, say so). */
function systemVersioned(create: string): boolean {
  const options = create.slice(create.lastIndexOf('\n)') + 1);
  return / WITH SYSTEM VERSIONING\b/.test(options.replace(/'(?:[^'\\]|\\.|'')*'/g, "''"));
}

/**
 * A table restore loads the backup's rows, whose values come in the backup's column order, into
 * the target's own definition of the table. Columns reordered, renamed, added or dropped since the
 * backup would put values into other columns without a word (b's into a) or fail half-way with
 * the server's message, so the two must have the same columns in the same order; and of the same
 * types, since a narrower one (DECIMAL(12,1) for DECIMAL(12,4), DATETIME for DATETIME(6), FLOAT for
 * DOUBLE, text of another character set) would round, cut or re-encode the backup's values without
 * a word.
 */
function refuseOtherColumns(table: string, targetCreate: string, targetGenerated: ReadonlySet<string>, backup: MysqlSchema): void {
  const statement = backup.pre.find((sql) => sql.startsWith(`CREATE TABLE ${ident(table)} (`));
  if (!statement) return;
  const theirs = valuedColumns(targetCreate, targetGenerated);
  const ours = valuedColumns(statement);
  // A statement not in the server's one-column-a-line form (written by hand) tells no columns.
  if (ours.length === 0) return;
  if (systemVersioned(targetCreate) !== systemVersioned(statement)) {
    const where = systemVersioned(statement) ? 'in the backup and not in the target' : 'in the target and not in the backup';
    throw new StrataError(
      'USAGE',
      redactable`restore: table ${named(table, 'table')} is system-versioned ${where}; a table restore loads the backup's rows (and history) into the target's own table, which must be versioned as the backup's was. Restore into a new database (--to another database) and copy the rows across; nothing was changed`,
    );
  }
  if (theirs.length !== ours.length || theirs.some((column, i) => column.name !== ours[i]!.name)) {
    throw new StrataError(
      'USAGE',
      redactable`restore: table ${named(table, 'table')} of the target has the columns ${named(theirs.map((c) => c.name).join(', '), 'column')}, the backup's ${named(ours.map((c) => c.name).join(', '), 'column')}; a table restore loads the backup's rows, column by column, into the target's own table, so they must match. Restore into a new database (--to another database), then copy the rows across naming the columns; nothing was changed`,
    );
  }
  const shown = (c: { type: string; charset: string | undefined }): string => (c.charset ? `${c.type} CHARACTER SET ${c.charset}` : c.type);
  const differing = ours
    .map((column, i) => ({ ours: column, theirs: theirs[i]! }))
    .filter((pair) => pair.ours.type !== pair.theirs.type || pair.ours.charset !== pair.theirs.charset)
    .map((pair) => `${pair.ours.name} ${shown(pair.theirs)} (the backup's ${shown(pair.ours)})`);
  if (differing.length === 0) return;
  throw new StrataError(
    'USAGE',
    redactable`restore: table ${named(table, 'table')} of the target has columns of other types than the backup's: ${named(differing.join(', '), 'column')}; a table restore loads the backup's values into the target's own columns, where they would be converted (rounded, cut or re-encoded) without a word. Change the target's columns back to the backup's types, or restore into a new database (--to another database) and copy the rows across; nothing was changed`,
  );
}

/**
 * Replaces some tables of an existing database: each is built beside the target in a work
 * database from the target's own definition and the backup's rows, then all of them swap in with
 * one atomic RENAME TABLE. Nothing is deleted or inserted in the target's tables, so no ON DELETE
 * CASCADE and no trigger runs, and MyISAM/Aria/MEMORY tables are all-or-nothing like InnoDB ones.
 * A replacement that would leave rows of the database without their parents is refused before
 * anything changes.
 */
async function replaceTables(target: MysqlTarget, chosen: readonly string[], files: ReadonlyMap<string, string>, info: RestoreCommitInfo, names: RestoreWorkNames, signal: AbortSignal | undefined, lockWaitSeconds: number | undefined): Promise<void> {
  const wanted = new Set(chosen);
  const connection = await connect(target);
  const db = target.database;
  const { work, aside: old } = names;
  const dropQuietly = async (database: string): Promise<void> => void (await connection.query(`DROP DATABASE IF EXISTS ${ident(database)}`).catch(() => undefined));
  let keepAside = false;
  try {
    const rowless = [...(await rowlessTables(connection, db))].filter((t) => wanted.has(t)).sort();
    if (rowless.length > 0) {
      throw new StrataError(
        'USAGE',
        redactable`restore: ${named(rowless, 'table')} of the target hold no rows of their own (MERGE, FEDERATED and the like show other tables' rows), so a backup holds none for them; name the tables under them in --tables instead; nothing was changed`,
      );
    }
    const present = new Set((await listTables(connection, db)).map((t) => t.name));
    // Names of the target that are no table a restore replaces: views (and sequences).
    const [typed] = await connection.query<mysql.RowDataPacket[]>('SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [db]);
    const others = new Map(typed.filter((r) => !present.has(r['name'] as string)).map((r) => [r['name'] as string, r['type'] === 'SEQUENCE' ? 'sequence' : 'view']));
    for (const t of wanted) {
      const kind = others.get(t);
      if (kind) {
        // A table restore replaces tables and leaves the target's other objects alone; this one is in the way.
        throw new StrataError('USAGE', redactable`restore: ${named(t, 'table')} is a ${kind} in the target database, where the backup has a table; drop the ${kind} first (DROP ${kind.toUpperCase()}), or restore the whole database; nothing was changed`);
      }
      if (!present.has(t)) throw new StrataError('TABLE_NOT_FOUND', redactable`restore: the target database has no table ${named(t, 'table')}`);
    }
    await connection.query(RESTORE_SESSION);
    const tables = [...wanted].sort();
    // Another table's foreign key would follow the old table out of the database in the swap.
    const incoming = (await foreignKeysOf(connection, db, true)).filter((k) => wanted.has(k.parent) && !(k.schema === db && wanted.has(k.table)));
    if (incoming.length > 0) {
      const k = incoming[0]!;
      throw new StrataError(
        'USAGE',
        redactable`restore: table ${named(`${k.schema === db ? '' : `${k.schema}.`}${k.table}`, 'table')} refers to ${named(k.parent, 'table')} (foreign key ${named(k.name, 'constraint')}) and is not restored with it; include ${named(k.table, 'table')} in --tables`,
      );
    }
    const backupSchema = parseSchemaText(info.schemaSql);
    for (const t of tables) {
      const [[row]] = (await connection.query<mysql.RowDataPacket[]>(`SHOW CREATE TABLE ${ident(db)}.${ident(t)}`)) as unknown as [mysql.RowDataPacket[]];
      refuseOtherColumns(t, String(row!['Create Table']), await generatedColumns(connection, db, t), backupSchema);
    }
    await connection.query(`CREATE DATABASE ${ident(work)}`);
    for (const t of tables) {
      const [[row]] = (await connection.query<mysql.RowDataPacket[]>(`SHOW CREATE TABLE ${ident(db)}.${ident(t)}`)) as unknown as [mysql.RowDataPacket[]];
      // References to tables that stay name them in the target; to tables restored alongside, in the work database.
      const create = String(row!['Create Table']).replace(/\bREFERENCES `((?:[^`]|``)+)` \(/g, (whole, parent: string) =>
        wanted.has(parent.replace(/``/g, '`')) ? whole : `REFERENCES ${ident(db)}.\`${parent}\` (`,
      );
      await connection.query(`USE ${ident(work)}`);
      // As a whole restore creates tables (CREATE_SESSION): a definition the target holds is taken.
      await connection.query(CREATE_SESSION);
      await connection.query(create);
      await connection.query(TABLE_RESTORE_SESSION);
      const sink = insertInto(connection, work, t, info.schemaSql);
      if (sink.kind !== 'sink') throw new StrataError('INTERNAL', 'restore: expected a row sink');
      const file = files.get(t);
      if (file) for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) await sink.write(chunk as Buffer);
      await sink.end();
    }
    for (const key of await foreignKeysOf(connection, work)) {
      const parentSchema = key.parentSchema === work ? work : key.parentSchema;
      const n = await orphans(connection, key, work, parentSchema);
      if (n > 0) {
        throw new StrataError('USAGE', redactable`restore: replacing ${named(tables, 'table')} would leave ${n} row(s) of ${named(key.table, 'table')} without their ${named(key.parent, 'table')} row (foreign key ${named(key.name, 'constraint')}); include ${named(key.parent, 'table')} in --tables`);
      }
    }
    // The swap parks the replaced tables in the target with their triggers; those are recreated
    // on the new tables in their action order.
    const [triggerRows] = await connection.query<mysql.RowDataPacket[]>(
      `SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE IN (${tables.map(() => '?').join(', ')}) ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER`,
      [db, ...tables],
    );
    await connection.query(`USE ${ident(db)}`);
    const triggers: SavedTrigger[] = [];
    for (const t of triggerRows) triggers.push(await savedTrigger(connection, t['name'] as string));
    const plan = await swapPlan(connection, db, tables, await tableNames(connection, db));
    const record = await saveSwapRecord(connection, old, { format: 1, database: db, work, ...plan, incoming: tables, objects: { kind: 'tables', triggers } });
    let swapped = false;
    try {
      await swapTables(connection, target, record, old, signal, lockWaitSeconds);
      swapped = true;
      await finishSwap(connection, record, old);
    } catch (err) {
      // The triggers dropped for the swap could not be recreated: the record in it has them.
      if (isStrataError(err) && err.details?.['parkedIn'] === old) keepAside = true;
      if (swapped) {
        try {
          await undoSwap(connection, record, old);
        } catch (undoErr) {
          // The aside database stays: it holds the replaced tables and the record the next run settles it from.
          keepAside = true;
          throw undoFailed(err, undoErr, db, old);
        }
      }
      throw err;
    }
  } catch (err) {
    throw isStrataError(err) ? err : connectionError(target, err);
  } finally {
    await dropQuietly(work);
    if (!keepAside) await dropQuietly(old);
    await connection.end().catch(() => undefined);
  }
}
