import { createHash } from 'node:crypto';
import type { DatabaseFacts, SchemaObjects, TableStats } from '@strata/core';
import type BetterSqlite3 from 'better-sqlite3';

type Database = BetterSqlite3.Database;

/** A row of `PRAGMA table_list`. */
interface TableListRow {
  schema: string;
  name: string;
  type: 'table' | 'view' | 'shadow' | 'virtual';
  wr: number;
}

/** Quotes an identifier for SQL text. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Tables that hold rows we must account for: ordinary and shadow tables (FTS5 keeps its index in
 * shadow tables, so their rows are the virtual table's data). Virtual tables themselves are
 * skipped: their rows live in the shadow tables, and reading them needs the module.
 */
export function dataTables(db: Database): TableListRow[] {
  const rows = db.prepare('PRAGMA main.table_list').all() as TableListRow[];
  return rows
    .filter((r) => r.schema === 'main' && (r.type === 'table' || r.type === 'shadow') && !r.name.startsWith('sqlite_'))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Schema objects as stored in sqlite_schema, minus ANALYZE statistics (they are data, not schema). */
export function schemaRows(db: Database): { type: string; name: string; tbl_name: string; sql: string | null }[] {
  return db
    .prepare("SELECT type, name, tbl_name, sql FROM main.sqlite_schema WHERE name NOT LIKE 'sqlite_stat%' ORDER BY rowid")
    .all() as { type: string; name: string; tbl_name: string; sql: string | null }[];
}

/** SHA-256 of the schema objects, sorted so creation order does not matter. */
export function schemaFingerprint(db: Database): string {
  const rows = schemaRows(db)
    .map((r) => [r.type, r.name, r.tbl_name, r.sql ?? ''])
    .sort((a, b) => (a.join('\0') < b.join('\0') ? -1 : 1));
  return createHash('sha256').update(JSON.stringify(rows)).digest('hex');
}

/**
 * The schema object by object, for verify to name what differs: `table x`, `index y`, `view v`,
 * `trigger t` (each sqlite_schema row, its SQL and the table it belongs to), and `database header`
 * (the settings a restore must carry that live in the file header, not in sqlite_schema).
 */
export function schemaObjects(db: Database): SchemaObjects {
  const sha = (value: unknown): string => createHash('sha256').update(JSON.stringify(value)).digest('hex');
  const objects: Record<string, string> = {};
  for (const row of schemaRows(db)) objects[`${row.type} ${row.name}`] = sha([row.tbl_name, row.sql]);
  objects['database header'] = sha({
    encoding: db.pragma('encoding', { simple: true }),
    pageSize: db.pragma('page_size', { simple: true }),
    autoVacuum: db.pragma('auto_vacuum', { simple: true }),
    userVersion: db.pragma('user_version', { simple: true }),
    applicationId: db.pragma('application_id', { simple: true }),
  });
  return objects;
}

/**
 * The DDL that recreates the schema, in the order the objects were created (sqlite_schema's rowid
 * order), which is an order that worked once and keeps `.schema` output identical. Shadow tables
 * are left out because creating their virtual table creates them; automatic indexes have no SQL.
 */
export function schemaSql(db: Database): string {
  const shadow = new Set((db.prepare('PRAGMA main.table_list').all() as TableListRow[]).filter((r) => r.type === 'shadow').map((r) => r.name));
  const rows = schemaRows(db).filter((r) => r.sql !== null && !shadow.has(r.name) && r.name !== 'sqlite_sequence');
  const lines = rows.map((r) => `${r.sql};`);
  const userVersion = db.pragma('user_version', { simple: true }) as number;
  const applicationId = db.pragma('application_id', { simple: true }) as number;
  const header = [`PRAGMA user_version = ${userVersion};`, `PRAGMA application_id = ${applicationId};`];
  return [...header, ...lines].join('\n') + '\n';
}

function orderBy(db: Database, table: TableListRow): string {
  if (!table.wr) return 'ORDER BY rowid';
  const pk = (db.prepare(`PRAGMA main.table_info(${quoteIdent(table.name)})`).all() as { name: string; pk: number }[])
    .filter((c) => c.pk > 0)
    .sort((a, b) => a.pk - b.pk)
    .map((c) => quoteIdent(c.name));
  return pk.length > 0 ? `ORDER BY ${pk.join(', ')}` : '';
}

const TAG_NULL = 0;
const TAG_INTEGER = 1;
const TAG_NUMBER = 2;
const TAG_TEXT = 3;
const TAG_BLOB = 4;
const FLUSH_AT = 256 * 1024;
const SHORT_TEXT = 16 * 1024;

/**
 * How this release computes a table's checksum, recorded in every snapshot's engineMeta as
 * `factsVersion`. Version 1 (backups without the field) read every number as a JavaScript number:
 * an INTEGER and a REAL of the same value (1 and 1.0) hashed alike, and so did two integers beyond
 * 2^53 that differ only in their low bits, so verify could not notice a restore that changed one
 * into the other. Version 2 reads integers exactly and tags them apart from reals.
 */
export const FACTS_VERSION = 2;

/**
 * Row count and a SHA-256 over every value of every row in a stable order (rowid, or the primary
 * key for WITHOUT ROWID tables). Each value is tagged with its storage class and length, so
 * `'1'` and `1`, `1` and `1.0`, or `NULL` and `''` hash differently (`1` and `1.0` alike in
 * version 1, see {@link FACTS_VERSION}).
 */
export function tableStats(db: Database, table: TableListRow, version = FACTS_VERSION): TableStats {
  const hash = createHash('sha256');
  // Version 2 reads integers as BigInts (exact to 64 bits, and told apart from reals). That costs
  // about a third more per integer than a plain number, which version 1 read, at the price of
  // exactness; version 1 stays only to verify the backups that recorded it.
  const stmt = db.prepare(`SELECT * FROM main.${quoteIdent(table.name)} ${orderBy(db, table)}`).raw(true).safeIntegers(version >= 2);
  let buffer = Buffer.allocUnsafe(FLUSH_AT * 2);
  let used = 0;
  let rows = 0;
  const ensure = (n: number): void => {
    if (used + n <= buffer.length) return;
    hash.update(buffer.subarray(0, used));
    used = 0;
    if (n > buffer.length) buffer = Buffer.allocUnsafe(n * 2);
  };
  for (const row of stmt.iterate() as Iterable<unknown[]>) {
    rows++;
    ensure(4);
    used = buffer.writeUInt32LE(row.length, used);
    for (const value of row) {
      if (value === null) {
        ensure(1);
        buffer[used++] = TAG_NULL;
      } else if (typeof value === 'bigint') {
        ensure(9);
        buffer[used++] = TAG_INTEGER;
        used = buffer.writeBigInt64LE(value, used);
      } else if (typeof value === 'number') {
        ensure(9);
        buffer[used++] = TAG_NUMBER;
        used = buffer.writeDoubleLE(value, used);
      } else if (typeof value === 'string') {
        // A short text is written first and measured by the write (a UTF-16 unit is at most 3
        // UTF-8 bytes), then its tag and length go in front: measuring it first read every string
        // twice. A long one is measured first, so the buffer grows only by what it needs.
        const short = value.length <= SHORT_TEXT;
        const room = short ? value.length * 3 : Buffer.byteLength(value);
        ensure(5 + room);
        const len = buffer.write(value, used + 5, 'utf8');
        buffer[used] = TAG_TEXT;
        buffer.writeUInt32LE(len, used + 1);
        used += 5 + len;
      } else {
        const bytes = value as Buffer;
        ensure(5 + bytes.length);
        buffer[used++] = TAG_BLOB;
        used = buffer.writeUInt32LE(bytes.length, used);
        used += bytes.copy(buffer, used);
      }
    }
    if (used >= FLUSH_AT) {
      hash.update(buffer.subarray(0, used));
      used = 0;
    }
  }
  hash.update(buffer.subarray(0, used));
  return { name: table.name, rows, checksum: hash.digest('hex') };
}

/** Fingerprint and per-table stats of an open database. */
export function collectFacts(db: Database, options: { withData: boolean; version?: number }): DatabaseFacts {
  const version = options.version ?? FACTS_VERSION;
  // A schema-only restore holds every table empty, so that is what a schema-only backup records.
  const empty = createHash('sha256').digest('hex');
  // Shadow tables are left out of a schema-only record: recreating an FTS5 table fills its
  // shadow tables with the module's bookkeeping rows, which are not the user's data.
  const tables = dataTables(db)
    .filter((t) => options.withData || t.type === 'table')
    .map((t) => (options.withData ? tableStats(db, t, version) : { name: t.name, rows: 0, checksum: empty }));
  return { schemaFingerprint: schemaFingerprint(db), schemaObjects: schemaObjects(db), tables: options.withData ? [...tables, ...counterStats(db, version)] : tables };
}

/** The facts entry of AUTOINCREMENT's counters, named after the table SQLite keeps them in (no user table can have its name). */
export const COUNTERS_FACTS = 'sqlite_sequence';

/**
 * AUTOINCREMENT's counters as one facts entry, when the database has them: how many tables have
 * one, and a SHA-256 over each table's name and counter. They are data a restore must bring back
 * (without them the next row reuses a deleted row's id) in a table that is no user's. Backups
 * made before this entry record none, and verify then compares none.
 */
function counterStats(db: Database, version: number): TableStats[] {
  if (!db.prepare(`SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = '${COUNTERS_FACTS}'`).get()) return [];
  const counters = db.prepare(`SELECT name, seq FROM main.${COUNTERS_FACTS}`).raw(true).safeIntegers(version >= 2).all() as unknown[][];
  // Version 2 writes a counter's exact digits where JSON.stringify would round it to a double (or
  // refuse a BigInt): the same text as before up to 2^53, exact beyond; and a REAL always with a
  // decimal point or exponent, so that 5.0 is not 5.
  const exact = (value: unknown): string => {
    if (typeof value === 'bigint') return value.toString();
    if (typeof value !== 'number') return JSON.stringify(value);
    // JSON writes both infinities as null, and -0 as 0.
    if (!Number.isFinite(value)) return String(value);
    const text = Object.is(value, -0) ? '-0' : JSON.stringify(value);
    return /^-?\d+$/.test(text) ? `${text}.0` : text;
  };
  const line = (row: unknown[]): string => (version >= 2 ? `[${row.map(exact).join(',')}]` : JSON.stringify(row));
  const lines = counters.map(line).sort();
  return [{ name: COUNTERS_FACTS, rows: counters.length, checksum: createHash('sha256').update(lines.join('\n')).digest('hex') }];
}
