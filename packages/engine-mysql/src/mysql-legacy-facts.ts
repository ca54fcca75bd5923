import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type mysql from 'mysql2/promise';
import type { DatabaseFacts, TableStats } from '@strata/core';
import { ident } from './mysql-connection.js';
import { encodeRow, isGeneratedExtra, rowBatches } from './mysql-rows.js';
import { withEventStatus } from './mysql-schema.js';

/**
 * Verifying MySQL/MariaDB backups made before facts version 2 (Strata up to cc33e74).
 *
 * Those backups recorded facts computed by Strata itself: each table's checksum was the SHA-256 of
 * its own row stream (binary and BIT columns as HEX(), FLOAT as the server's text, base tables
 * only), and the fingerprint covered a schema read with triggers in name order. Today's facts are
 * computed by the server and the schema is read differently, so the values can never match.
 * A scratch restore of such a backup is therefore measured here exactly as that release measured
 * its source. The algorithm is frozen on purpose: nothing in it may follow later changes of the
 * current facts, or old backups would stop verifying.
 */

/**
 * The `engineMeta.factsVersion` that MySQL backups record since facts come from the server
 * (2; 3 since table checksums include the AUTO_INCREMENT counter; 4 since text of character sets
 * that do not come back through utf8mb4 is hashed by its bytes and ENUM by its member's number,
 * as row format 3 writes them, see DescribeOptions; 5 since tables of engines that hold no rows of
 * their own, MERGE, FEDERATED and the like, have none, see ROWLESS_ENGINES). Bump it whenever snapshot() changes how facts or fingerprint are computed, and keep the old way
 * reachable for backups that recorded the earlier version.
 */
export const FACTS_VERSION = 5;

/**
 * Whether a backup's table checksums include the tables' AUTO_INCREMENT counters (facts version
 * 3). A caller that passes no recorded engineMeta gets today's facts.
 */
export function recordedWithCounters(recordedMeta: Readonly<Record<string, unknown>> | undefined): boolean {
  const version = recordedMeta?.['factsVersion'];
  return recordedMeta === undefined || (typeof version === 'number' && version >= 3);
}

/** Whether a backup's facts hash text of other character sets by its bytes and ENUM by number (facts version 4); none recorded: today's. */
export function recordedWithFormat3Facts(recordedMeta: Readonly<Record<string, unknown>> | undefined): boolean {
  const version = recordedMeta?.['factsVersion'];
  return recordedMeta === undefined || (typeof version === 'number' && version >= 4);
}

/**
 * Whether a backup's facts leave out tables of engines that hold no rows of their own (facts
 * version 5); none recorded: today's. Earlier ones recorded the rows read through them, which a
 * scratch restore shows again by reading through its own copies (it loads no rows into them).
 */
export function recordedWithoutRowlessFacts(recordedMeta: Readonly<Record<string, unknown>> | undefined): boolean {
  const version = recordedMeta?.['factsVersion'];
  return recordedMeta === undefined || (typeof version === 'number' && version >= 5);
}

/**
 * Whether a backup's facts were computed the way of facts version 1. Only a recorded engineMeta
 * without the marker says so: a caller that passes none gets today's facts.
 */
export function recordedWithLegacyFacts(recordedMeta: Readonly<Record<string, unknown>> | undefined): boolean {
  return recordedMeta !== undefined && recordedMeta['factsVersion'] === undefined;
}

/**
 * Whether a backup's row streams carry BIT values as HEX() text, as facts version 1 wrote them.
 * Their streams are otherwise read like today's (binary as hex, everything else as text). The
 * mark is in schema.sql, not in engineMeta, because a restore loads rows before it sees engineMeta.
 */
export function hasLegacyRowFormat(schemaSql: string): boolean {
  return rowFormatOf(schemaSql) < 2;
}

/** Whether a backup's row streams are of a format before 3 (text of every character set as text, ENUM and SET by their text). */
export function hasRowFormatBefore3(schemaSql: string): boolean {
  return rowFormatOf(schemaSql) < 3;
}

/**
 * The number of schema.sql's `-- strata: row format N (...)` line, its second, 1 without one (the
 * words after the number only describe it). Only that line: a routine's body may hold such a line.
 */
function rowFormatOf(schemaSql: string): number {
  const line = /^-- strata: row format (\d+)\b/.exec(schemaSql.split('\n', 2)[1] ?? '');
  return line ? Number(line[1]) : 1;
}

/** Fingerprint and per-table facts of a database, as facts version 1 computed them. */
export async function legacyFacts(connection: mysql.Connection, database: string, eventStatuses?: ReadonlyMap<string, string>): Promise<Pick<DatabaseFacts, 'schemaFingerprint' | 'tables'>> {
  const schemaFingerprint = await legacyFingerprint(connection, database, eventStatuses);
  const tables: TableStats[] = [];
  for (const table of await legacyTables(connection, database)) tables.push(await legacyTableStats(connection, table));
  return { schemaFingerprint, tables };
}

const LEGACY_HEX_TYPES = new Set(['binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob', 'longblob', 'bit', 'geometry', 'point', 'linestring', 'polygon', 'multipoint', 'multilinestring', 'multipolygon', 'geometrycollection']);

interface LegacyTable {
  readonly name: string;
  readonly columns: readonly { name: string; hex: boolean }[];
  readonly primaryKey: readonly string[];
}

/** Base tables only (system-versioned tables and sequences were not backed up then), value columns only. */
async function legacyTables(connection: mysql.Connection, database: string): Promise<LegacyTable[]> {
  const [tables] = await connection.query<mysql.RowDataPacket[]>(
    "SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    [database],
  );
  const out: LegacyTable[] = [];
  for (const t of tables) {
    const [columns] = await connection.query<mysql.RowDataPacket[]>(
      'SELECT COLUMN_NAME AS name, DATA_TYPE AS type, EXTRA AS extra FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION',
      [database, t['name']],
    );
    const [pk] = await connection.query<mysql.RowDataPacket[]>(
      "SELECT COLUMN_NAME AS name FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
      [database, t['name']],
    );
    out.push({
      name: t['name'] as string,
      columns: columns
        .filter((c) => !isGeneratedExtra(String(c['extra'])))
        .map((c) => ({ name: c['name'] as string, hex: LEGACY_HEX_TYPES.has(String(c['type']).toLowerCase()) })),
      primaryKey: pk.map((c) => c['name'] as string),
    });
  }
  return out;
}

/** Row count and SHA-256 of the rows encoded as that release's stream encoded them, in its order. */
async function legacyTableStats(connection: mysql.Connection, table: LegacyTable): Promise<TableStats> {
  const columns = table.columns.map((c) => (c.hex ? `HEX(${ident(c.name)})` : ident(c.name)));
  const order = table.primaryKey.length > 0 ? table.primaryKey.map(ident) : table.columns.map((_, i) => String(i + 1));
  const sql = `SELECT ${columns.length > 0 ? columns.join(', ') : '1'} FROM ${ident(table.name)}${order.length > 0 ? ` ORDER BY ${order.join(', ')}` : ''}`;
  const core = (connection as unknown as { connection: { query(options: object): { stream(o?: object): Readable } } }).connection;
  const stream = core.query({ sql, rowsAsArray: true, typeCast: (field: { string(): string | null }) => field.string() }).stream({ highWaterMark: 256 });
  const sha = createHash('sha256');
  let rows = 0;
  for await (const batch of rowBatches(stream)) {
    for (const row of batch) sha.update(encodeRow(row as (string | null)[]), 'utf8');
    rows += batch.length;
  }
  return { name: table.name, rows, checksum: sha.digest('hex') };
}

/**
 * SHA-256 of the schema as that release read it: routines, tables, views, triggers and events by
 * name (events Strata created disabled with the statuses in `eventStatuses`, see eventDisabled).
 */
async function legacyFingerprint(connection: mysql.Connection, database: string, eventStatuses?: ReadonlyMap<string, string>): Promise<string> {
  const [[info]] = (await connection.query<mysql.RowDataPacket[]>(
    'SELECT DEFAULT_CHARACTER_SET_NAME AS charset, DEFAULT_COLLATION_NAME AS collation FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
    [database],
  )) as unknown as [mysql.RowDataPacket[]];
  const byName = (rows: mysql.RowDataPacket[], column: string): mysql.RowDataPacket[] => [...rows].sort((a, b) => String(a[column]).localeCompare(String(b[column])));
  const statements: string[] = [];
  for (const kind of ['FUNCTION', 'PROCEDURE'] as const) {
    const [routines] = await connection.query<mysql.RowDataPacket[]>(`SHOW ${kind} STATUS WHERE Db = ?`, [database]);
    for (const r of byName(routines, 'Name')) statements.push(await legacyShowCreate(connection, kind, r['Name'] as string, kind === 'FUNCTION' ? 'Create Function' : 'Create Procedure'));
  }
  const [tables] = await connection.query<mysql.RowDataPacket[]>(
    'SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME',
    [database],
  );
  const views: string[] = [];
  for (const t of tables) {
    if (t['type'] === 'VIEW') views.push(t['name'] as string);
    else statements.push(await legacyShowCreate(connection, 'TABLE', t['name'] as string, 'Create Table'));
  }
  const qualified = new RegExp(`${ident(database).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.`, 'g');
  for (const v of views) statements.push((await legacyShowCreate(connection, 'VIEW', v, 'Create View')).replace(qualified, '{{db}}.'));
  const [triggers] = await connection.query<mysql.RowDataPacket[]>('SHOW TRIGGERS');
  for (const t of byName(triggers, 'Trigger')) statements.push(await legacyShowCreate(connection, 'TRIGGER', t['Trigger'] as string, 'SQL Original Statement'));
  const [events] = await connection.query<mysql.RowDataPacket[]>('SHOW EVENTS');
  for (const e of byName(events, 'Name')) {
    const status = eventStatuses?.get(String(e['Name']));
    const sql = await legacyShowCreate(connection, 'EVENT', e['Name'] as string, 'Create Event');
    statements.push(status === undefined ? sql : withEventStatus(sql, status));
  }
  const normal = statements.map((s) => s.replace(/ AUTO_INCREMENT=\d+/g, ''));
  const charset = String(info?.['charset'] ?? 'utf8mb4');
  const collation = String(info?.['collation'] ?? 'utf8mb4_general_ci');
  return createHash('sha256').update(JSON.stringify({ charset, collation, statements: normal })).digest('hex');
}

/** A SHOW CREATE statement preceded by the session settings it was created under, as that release wrote it. */
async function legacyShowCreate(connection: mysql.Connection, kind: string, name: string, column: string): Promise<string> {
  const [rows] = await connection.query<mysql.RowDataPacket[]>(`SHOW CREATE ${kind} ${ident(name)}`);
  const row = rows[0]!;
  const quote = (value: string): string => `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
  const context: string[] = [];
  if (row['sql_mode'] !== undefined) context.push(`sql_mode = ${quote(String(row['sql_mode']))}`);
  if (row['time_zone'] !== undefined) context.push(`time_zone = ${quote(String(row['time_zone']))}`);
  if (row['character_set_client'] !== undefined) context.push(`character_set_client = ${String(row['character_set_client'])}`);
  if (row['collation_connection'] !== undefined) context.push(`collation_connection = ${String(row['collation_connection'])}`);
  const create = String(row[column]);
  return context.length > 0 ? `SET SESSION ${context.join(', ')}\n;;\n${create}` : create;
}
