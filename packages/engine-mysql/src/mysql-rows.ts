import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type mysql from 'mysql2/promise';
import { StrataError, isStrataError, named, redactable, withheld } from '@strata/core';
import type { TableStats } from '@strata/core';
import { ident } from './mysql-connection.js';

/**
 * How a column's values travel: `binary` as hex (read raw, so a value near max_allowed_packet is
 * not doubled into a NULL by HEX()), `bit` as an unsigned decimal, `float` widened to DOUBLE
 * (exact, where FLOAT's own text keeps 6 digits), `enum` as its member's number (0 for the empty
 * value the server stores for an invalid one outside strict mode, which as text is the same as a
 * member '' and is refused by a strict INSERT), `set` as its members' bits (two members alike but
 * for trailing spaces or case, which the server keeps outside strict mode, read as one text), everything else as the server's text.
 */
export type ColumnKind = 'binary' | 'bit' | 'float' | 'enum' | 'set' | 'text';

export interface MysqlColumn {
  readonly name: string;
  /**
   * Text of a character set whose values do not all come back through utf8mb4 (cp932 has several
   * byte sequences for one character: x'8790' and x'81E0' are both ≒) travels as its bytes, the
   * `binary` kind with `otherCharset`: read as bytes, hashed by HEX(), written back as X'...'.
   */
  readonly kind: ColumnKind;
  readonly otherCharset?: boolean;
  /** TEXT, BLOB, JSON and geometry: hashed one by one in the facts instead of quoted in full. */
  readonly large: boolean;
}

/** A base table whose rows Strata copies. */
export interface MysqlTable {
  readonly name: string;
  /** Columns that take values (generated ones are computed again), in table order. */
  readonly columns: readonly MysqlColumn[];
  /** Every column including generated ones: the facts cover what the server computes too. */
  readonly allColumns: readonly MysqlColumn[];
  readonly primaryKey: readonly string[];
  readonly transactional: boolean;
  /** System-versioned: its row start and end columns (the implicit ones are ROW_START, ROW_END). */
  readonly versioning?: { readonly start: string; readonly end: string };
}

const BINARY_TYPES = new Set(['binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob', 'longblob', 'geometry', 'point', 'linestring', 'polygon', 'multipoint', 'multilinestring', 'multipolygon', 'geometrycollection']);
const LARGE_TYPES = new Set(['tinyblob', 'blob', 'mediumblob', 'longblob', 'tinytext', 'text', 'mediumtext', 'longtext', 'json', 'geometry', 'point', 'linestring', 'polygon', 'multipoint', 'multilinestring', 'multipolygon', 'geometrycollection']);

/** Base tables, system-versioned tables included (sequences travel in the schema). */
export const ROW_TABLE_TYPES = "('BASE TABLE', 'SYSTEM VERSIONED')";

const TEXT_TYPES = new Set(['char', 'varchar', 'tinytext', 'text', 'mediumtext', 'longtext']);
/** Character sets whose every value survives the trip through utf8mb4 and back (latin1 maps each byte to its own character). */
const ROUND_TRIP_CHARSETS = new Set(['utf8mb4', 'utf8mb3', 'utf8', 'ascii', 'latin1', 'ucs2', 'utf16', 'utf16le', 'utf32']);

/**
 * How describeTable reads a table: `format3` false as backups before row format 3 (facts version
 * 4) wrote and hashed values, with text of other character sets as text and ENUM by its text.
 */
export interface DescribeOptions {
  readonly format3?: boolean;
}

function columnOf(name: string, type: string, charset: string | null, options: DescribeOptions): MysqlColumn {
  const t = type.toLowerCase();
  if (options.format3 ?? true) {
    if (TEXT_TYPES.has(t) && charset !== null && !ROUND_TRIP_CHARSETS.has(charset.toLowerCase())) return { name, kind: 'binary', otherCharset: true, large: LARGE_TYPES.has(t) };
    if (t === 'enum' || t === 'set') return { name, kind: t, large: false };
  }
  const kind: ColumnKind = t === 'bit' ? 'bit' : t === 'float' ? 'float' : BINARY_TYPES.has(t) ? 'binary' : 'text';
  return { name, kind, large: LARGE_TYPES.has(t) };
}

/** Stream name of a table: tar-safe and reversible. */
export function streamName(table: string): string {
  return `${[...Buffer.from(table, 'utf8')].map((b) => (/[A-Za-z0-9_-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('')}.rows`;
}

export function tableOfStream(stream: string): string | undefined {
  const match = /^([^.]+)\.rows$/.exec(stream);
  return match ? decodeURIComponent(match[1]!) : undefined;
}

/** One table's columns, key and versioning as the server describes them. */
export async function describeTable(connection: mysql.Connection, database: string, name: string, engine?: string, options: DescribeOptions = {}): Promise<MysqlTable> {
  const [columns] = await connection.query<mysql.RowDataPacket[]>(
    'SELECT COLUMN_NAME AS name, DATA_TYPE AS type, CHARACTER_SET_NAME AS charset, EXTRA AS extra FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION',
    [database, name],
  );
  const [pk] = await connection.query<mysql.RowDataPacket[]>(
    "SELECT COLUMN_NAME AS name FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
    [database, name],
  );
  const [[info]] = (await connection.query<mysql.RowDataPacket[]>(
    'SELECT TABLE_TYPE AS type, ENGINE AS engine FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
    [database, name],
  )) as unknown as [mysql.RowDataPacket[]];
  let versioning: MysqlTable['versioning'];
  let periodColumns: string[] = [];
  if (info?.['type'] === 'SYSTEM VERSIONED') {
    const [[create]] = (await connection.query<mysql.RowDataPacket[]>(`SHOW CREATE TABLE ${ident(database)}.${ident(name)}`)) as unknown as [mysql.RowDataPacket[]];
    const period = /PERIOD FOR SYSTEM_TIME \(`((?:[^`]|``)+)`, `((?:[^`]|``)+)`\)/.exec(String(create?.['Create Table']));
    versioning = period ? { start: period[1]!.replace(/``/g, '`'), end: period[2]!.replace(/``/g, '`') } : { start: 'ROW_START', end: 'ROW_END' };
    periodColumns = period ? [versioning.start, versioning.end] : [];
    const startType = period ? String(columns.find((c) => c['name'] === versioning!.start)?.['type'] ?? '') : 'timestamp';
    if (startType.toLowerCase() !== 'timestamp') {
      throw new StrataError(
        'UNSUPPORTED_OBJECT',
        redactable`mysql: table ${named(name, 'table')} is versioned by transaction id (row start column of type ${startType}); its history refers to the server's transaction registry and cannot be restored elsewhere. Convert it to timestamp versioning or exclude it from the database`,
      );
    }
  }
  const generated = (c: mysql.RowDataPacket): boolean => isGeneratedExtra(String(c['extra']));
  const column = (c: mysql.RowDataPacket): MysqlColumn => columnOf(c['name'] as string, String(c['type']), (c['charset'] as string | null) ?? null, options);
  const all = columns.filter((c) => !periodColumns.includes(c['name'] as string)).map(column);
  const valued = columns.filter((c) => !generated(c)).map(column);
  const period = versioning ? [columnOf(versioning.start, 'timestamp', null, options), columnOf(versioning.end, 'timestamp', null, options)] : [];
  return {
    name,
    columns: [...valued, ...period],
    allColumns: [...all, ...period],
    primaryKey: pk.map((c) => c['name'] as string),
    transactional: String(engine ?? info?.['engine']).toLowerCase() === 'innodb',
    ...(versioning ? { versioning } : {}),
  };
}

/**
 * Whether a column's information_schema EXTRA says it is generated (MariaDB: `VIRTUAL GENERATED`,
 * `STORED GENERATED`, `PERSISTENT`; MySQL 8: `VIRTUAL GENERATED`, `STORED GENERATED`). MySQL 8's
 * `DEFAULT_GENERATED` is a column with an expression default (`DEFAULT CURRENT_TIMESTAMP`), which
 * holds values of its own: taken for a generated one, its values would be left out of the backup.
 */
export function isGeneratedExtra(extra: string): boolean {
  return /(?<![A-Z_])(?:GENERATED|VIRTUAL|PERSISTENT|STORED)(?![A-Z_])/i.test(extra);
}

/**
 * Engines (as information_schema.TABLES names them, in upper case) whose tables hold no rows of
 * their own: a MERGE table's rows are those of the MyISAM tables in its UNION, which may be of
 * another database; FEDERATED (FederatedX), CONNECT and SPIDER tables show a remote server's or an
 * outside file's; OQGRAPH shows a graph over another table; BLACKHOLE keeps nothing. Their rows are
 * not the database's to back up, and rows written through them by a restore land in those other
 * tables: the ones restored beside them a second time, or live data (verify's scratch database
 * lives on the source's server). Such tables travel as schema only: no row stream, no facts.
 */
export const ROWLESS_ENGINES: ReadonlySet<string> = new Set(['MRG_MYISAM', 'MERGE', 'FEDERATED', 'CONNECT', 'SPIDER', 'OQGRAPH', 'BLACKHOLE']);

/** Whether a table of `engine` holds rows of its own (see ROWLESS_ENGINES). */
export function holdsOwnRows(engine: string | null | undefined): boolean {
  return !ROWLESS_ENGINES.has(String(engine ?? '').toUpperCase());
}

/** The tables of `database` whose engine holds no rows of its own (see ROWLESS_ENGINES). */
export async function rowlessTables(connection: mysql.Connection, database: string): Promise<Set<string>> {
  const [tables] = await connection.query<mysql.RowDataPacket[]>(
    `SELECT TABLE_NAME AS name, ENGINE AS engine FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE IN ${ROW_TABLE_TYPES}`,
    [database],
  );
  return new Set(tables.filter((t) => !holdsOwnRows(t['engine'] as string | null)).map((t) => t['name'] as string));
}

/**
 * How listTables lists: `rowless` true also the tables that hold no rows of their own, as
 * backups before facts version 5 recorded facts for them (read through them).
 */
export interface ListOptions extends DescribeOptions {
  readonly rowless?: boolean;
}

/** Tables of the current database whose rows travel, with their value columns and primary keys. */
export async function listTables(connection: mysql.Connection, database: string, options: ListOptions = {}): Promise<MysqlTable[]> {
  const [tables] = await connection.query<mysql.RowDataPacket[]>(
    `SELECT TABLE_NAME AS name, ENGINE AS engine FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE IN ${ROW_TABLE_TYPES} ORDER BY TABLE_NAME`,
    [database],
  );
  const out: MysqlTable[] = [];
  for (const t of tables) {
    if (!options.rowless && !holdsOwnRows(t['engine'] as string | null)) continue;
    out.push(await describeTable(connection, database, t['name'] as string, String(t['engine']), options));
  }
  return out;
}

function columnRef(table: MysqlTable, column: MysqlColumn): string {
  // The implicit period columns are pseudo-columns: quoting them would name a column that does not exist.
  if (table.versioning && table.versioning.start === 'ROW_START' && (column.name === 'ROW_START' || column.name === 'ROW_END')) return column.name;
  return ident(column.name);
}

export function fromClause(table: MysqlTable): string {
  return `${ident(table.name)}${table.versioning ? ' FOR SYSTEM_TIME ALL' : ''}`;
}

/** The SELECT that reads a table in a stable order, history rows included. */
export function selectSql(table: MysqlTable): string {
  const columns = table.columns.map((c) => {
    const ref = columnRef(table, c);
    // Cast: the server would convert other text to the connection's utf8mb4 on the way.
    if (c.kind === 'binary') return c.otherCharset ? `CAST(${ref} AS BINARY)` : ref;
    if (c.kind === 'bit' || c.kind === 'enum' || c.kind === 'set') return `${ref} + 0`;
    if (c.kind === 'float') return `CAST(${ref} AS DOUBLE)`;
    return ref;
  });
  const key = table.primaryKey.length > 0 ? table.primaryKey.map(ident) : table.columns.map((_, i) => String(i + 1));
  const order = table.versioning && table.primaryKey.length > 0 ? [...key, columnRef(table, table.columns.at(-1)!)] : key;
  return `SELECT ${columns.length > 0 ? columns.join(', ') : '1'} FROM ${fromClause(table)}${order.length > 0 ? ` ORDER BY ${order.join(', ')}` : ''}`;
}

/**
 * Per-row SHA-256 of the row's values, each written by the server at least as precisely as it is
 * stored (FLOAT widened to DOUBLE, BIT as a number, long values by their own hash), with NULL
 * distinct from every value. Text in QUOTE() cannot run into its neighbour.
 */
function rowHashSql(table: MysqlTable): string {
  const parts = table.allColumns.map((c) => {
    const ref = columnRef(table, c);
    if (c.large) return `IFNULL(SHA2(${ref}, 256), 'NULL')`;
    const value = c.kind === 'bit' || c.kind === 'enum' || c.kind === 'set' ? `${ref} + 0` : c.kind === 'float' ? `CAST(${ref} AS DOUBLE)` : c.kind === 'binary' ? `HEX(${ref})` : ref;
    return `CAST(QUOTE(${value}) AS BINARY)`;
  });
  return `SHA2(CONCAT_WS(',', ${parts.length > 0 ? parts.join(', ') : "''"}), 256)`;
}

/**
 * Row count and content checksum of a table, computed by the server (not from Strata's stream): an
 * order-independent sum of two 60-bit slices of each row's hash, history rows included.
 */
export async function tableFacts(connection: mysql.Connection, table: MysqlTable): Promise<TableStats> {
  const slice = (from: number): string => `COALESCE(SUM(CAST(CONV(SUBSTR(h, ${from}, 15), 16, 10) AS UNSIGNED)), 0)`;
  const [[row]] = (await connection.query<mysql.RowDataPacket[]>(
    `SELECT COUNT(*) AS n, ${slice(1)} AS a, ${slice(16)} AS b FROM (SELECT ${rowHashSql(table)} AS h FROM ${fromClause(table)}) row_hashes`,
  )) as unknown as [mysql.RowDataPacket[]];
  await failOnWarnings(connection, table.name, 'computing its checksum');
  const summary = `${String(row!['n'])}:${String(row!['a'])}:${String(row!['b'])}`;
  return { name: table.name, rows: Number(row!['n']), checksum: createHash('sha256').update(summary).digest('hex') };
}

/** A warning on a read means the server changed a value on its way out (NULLed, truncated). */
export async function failOnWarnings(connection: mysql.Connection, table: string, doing: string): Promise<void> {
  const [warnings] = await connection.query<mysql.RowDataPacket[]>('SHOW WARNINGS');
  if (warnings.length === 0) return;
  const w = warnings[0]!;
  throw new StrataError(
    'UNSUPPORTED_OBJECT',
    redactable`mysql: reading table ${named(table, 'table')} (${doing}) the server warned: ${withheld(String(w['Message']), 'server message')} (code ${String(w['Code'])}); a value may have been NULLed or truncated, so the backup stops (raise max_allowed_packet on the server if the message names it)`,
  );
}

const SPECIAL = /[\\\t\n\r\0]/;
const SPECIALS = /[\\\t\n\r\0]/g;
const ESCAPE: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0' };
const escapeChar = (c: string): string => ESCAPE[c]!;

/** One row as a line: tab-separated, `\N` for NULL, backslash escapes for tab, newline, CR, NUL, backslash. */
export function encodeRow(values: readonly (string | Buffer | null)[]): string {
  // A loop and a test before the replace: this runs for every value of every row of a backup.
  let line = '';
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (i > 0) line += '\t';
    if (v === null) {
      line += '\\N';
      continue;
    }
    const text = typeof v === 'string' ? v : v.toString('utf8');
    line += SPECIAL.test(text) ? text.replace(SPECIALS, escapeChar) : text;
  }
  return line + '\n';
}

/** The inverse of {@link encodeRow} for one line without its newline. */
export function decodeRow(line: string): (string | null)[] {
  return line.split('\t').map((field) => {
    if (field === '\\N') return null;
    return field.replace(/\\(.)/g, (_, c: string) => ({ '\\': '\\', t: '\t', n: '\n', r: '\r', '0': '\0' })[c] ?? c);
  });
}

/** Streams a table's rows as encoded lines. */
export async function* readRows(connection: mysql.Connection, table: MysqlTable): AsyncGenerator<Uint8Array> {
  // Raw text values as the server sends them: no lossy number or date conversion in between.
  const core = (connection as unknown as { connection: CoreConnection }).connection;
  // Which values go as hex is decided by position, from the table's description: a result
  // column's name is the user's column name, which may be anything (a column named as an alias
  // would be taken for one). The driver casts every value of every row in column order.
  const binary = table.columns.map((c) => c.kind === 'binary');
  let at = 0;
  const typeCast = (field: { string(): string | null; buffer(): Buffer | null }): string | null => {
    const raw = binary[at] ?? false;
    at = at + 1 < binary.length ? at + 1 : 0;
    if (!raw) return field.string();
    const bytes = field.buffer();
    return bytes === null ? null : bytes.toString('hex').toUpperCase();
  };
  const stream = core.query({ sql: selectSql(table), rowsAsArray: true, typeCast }).stream({ highWaterMark: 256 });
  // mysql2 does not end a row stream whose connection dies: without this a backup would wait
  // forever for rows that never come.
  const lost = (err?: Error): void => {
    stream.destroy(Object.assign(new Error(`the connection was lost while reading ${table.name}${err ? ` (${err.message})` : ''}`), { code: 'PROTOCOL_CONNECTION_LOST' }));
  };
  core.once('error', lost);
  core.once('end', lost);
  try {
    yield* encodeStream(stream);
  } finally {
    core.off('error', lost);
    core.off('end', lost);
  }
  await failOnWarnings(connection, table.name, 'reading its rows');
}

interface CoreConnection {
  query(options: object): { stream(o?: object): Readable };
  once(event: string, fn: (err?: Error) => void): void;
  off(event: string, fn: (err?: Error) => void): void;
}

/**
 * The rows of an object-mode stream in batches: every row already buffered at once, so a table
 * of millions of rows does not cost a promise per row. Ends when the stream ends, throws its
 * error, and destroys it when the consumer stops early.
 */
export async function* rowBatches(stream: Readable): AsyncGenerator<unknown[][]> {
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const signal = (): void => {
    wake?.();
    wake = undefined;
  };
  const onEnd = (): void => {
    ended = true;
    signal();
  };
  const onError = (err: Error): void => {
    failure = err;
    signal();
  };
  // A stream destroyed without an error only closes: that is an end without all rows.
  const onClose = (): void => {
    if (!ended && !failure) failure = Object.assign(new Error('the row stream closed before its end'), { code: 'PROTOCOL_CONNECTION_LOST' });
    signal();
  };
  stream.on('readable', signal);
  stream.on('end', onEnd);
  stream.on('error', onError);
  stream.on('close', onClose);
  try {
    for (;;) {
      const rows: unknown[][] = [];
      let row: unknown[] | null;
      while ((row = stream.read() as unknown[] | null) !== null) rows.push(row);
      if (rows.length > 0) {
        yield rows;
        continue;
      }
      if (failure) throw failure;
      if (ended || stream.readableEnded) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    stream.off('readable', signal);
    stream.off('end', onEnd);
    stream.off('error', onError);
    stream.off('close', onClose);
    if (!ended) stream.destroy();
  }
}

/** Encodes rows into lines, yielded in pieces of about 256 KiB. */
async function* encodeStream(stream: Readable): AsyncGenerator<Uint8Array> {
  let batch: string[] = [];
  let size = 0;
  for await (const rows of rowBatches(stream)) {
    for (const row of rows) {
      const line = encodeRow(row as (string | null)[]);
      batch.push(line);
      size += line.length;
      if (size >= 256 * 1024) {
        yield Buffer.from(batch.join(''), 'utf8');
        batch = [];
        size = 0;
      }
    }
  }
  if (batch.length > 0) {
    yield Buffer.from(batch.join(''), 'utf8');
  }
}

/** The facts of a table without rows, as {@link tableFacts} computes them. */
export function emptyFacts(name: string): TableStats {
  return { name, rows: 0, checksum: createHash('sha256').update('0:0:0').digest('hex') };
}

export async function statsOf(connection: mysql.Connection, tables: readonly MysqlTable[]): Promise<TableStats[]> {
  const out: TableStats[] = [];
  for (const table of tables) out.push(await tableFacts(connection, table));
  return out;
}

/** A backslash that is not one of the five escapes of a row line (or ends the field). */
const OTHER_ESCAPE = /\\(?![\\tnr0])/;
const QUOTES = /'/g;

const DIGITS = /^[0-9]+$/;
const HEX_DIGITS = /^[0-9A-Fa-f]+$/;

/**
 * One field of a row line as an SQL literal. The line's escapes (`\\`, `\t`, `\n`, `\r`, `\0`)
 * mean the same inside a MySQL string literal (the restore sessions never set
 * NO_BACKSLASH_ESCAPES), so a field goes in as it is, with its quotes escaped; only a field with
 * any other backslash is decoded and escaped again.
 */
function sqlLiteral(field: string, column: MysqlColumn | undefined, escape: (value: string) => string, bitAsHex = false): string {
  if (field === '\\N') return 'NULL';
  if (column?.kind === 'binary') return field === '' ? "''" : `X'${field}'`;
  // A BIT value is a number: quoted, it would be taken as the bytes of its digits.
  if (column?.kind === 'bit') {
    if (bitAsHex) {
      if (!HEX_DIGITS.test(field)) throw new StrataError('ARTIFACT_CORRUPT', redactable`restore: BIT column ${named(column.name, 'column')} has the value ${withheld(JSON.stringify(field.slice(0, 40)), 'value')}, which is not hexadecimal`);
      return BigInt(`0x${field}`).toString();
    }
    if (!DIGITS.test(field)) throw new StrataError('ARTIFACT_CORRUPT', redactable`restore: BIT column ${named(column.name, 'column')} has the value ${withheld(JSON.stringify(field.slice(0, 40)), 'value')}, which is not a number`);
    return field;
  }
  if (column?.kind === 'enum' || column?.kind === 'set') {
    if (!DIGITS.test(field)) throw new StrataError('ARTIFACT_CORRUPT', redactable`restore: ${column.kind.toUpperCase()} column ${named(column.name, 'column')} has the value ${withheld(JSON.stringify(field.slice(0, 40)), 'value')}, which is not a number`);
    return field;
  }
  if (field.includes('\\') && OTHER_ESCAPE.test(field)) return escape(decodeRow(field)[0]!);
  return field.includes("'") ? `'${field.replace(QUOTES, "\\'")}'` : `'${field}'`;
}

/** Statement text per INSERT; a row too large for it goes alone, its long values in pieces. */
const BATCH_CHARS = 1024 * 1024;
/** Below this, a value goes into the INSERT itself even in a row that is sent alone. */
const PIECE_CHARS = 256 * 1024;

/**
 * Writes encoded lines into a table with multi-row INSERTs of about 1 MiB, one INSERT running on
 * the server while the next is built. Pieces may end anywhere, inside a line or a character.
 * A value longer than a statement may be is assembled in a session variable piece by piece (a
 * hex literal of a 9 MiB BLOB is 18 MiB, past MariaDB's default max_allowed_packet of 16 MiB);
 * a value larger than the target's max_allowed_packet cannot be stored there at all and fails
 * the restore with the table, the column and the setting to raise.
 */
/** The server's warning for a value it changed to fit the column (an ENUM's invalid value stored as 0). */
const WARN_DATA_TRUNCATED = 1265;

/** The ENUM columns (lower case) whose value in a row is the empty value, 0, which only an INSERT outside strict mode stores. */
function emptyEnums(fields: readonly string[], columns: readonly MysqlColumn[]): Set<string> {
  return new Set(columns.filter((c, i) => c.kind === 'enum' && fields[i] === '0').map((c) => c.name.toLowerCase()));
}

/**
 * Rows with an ENUM's empty value go in INSERTs of their own, outside strict mode, each row's
 * warnings checked: at most this many such values per INSERT, well below the warnings a session
 * keeps (max_error_count is raised to MAX_ERROR_COUNT for them), so none goes unseen.
 */
const EMPTY_ENUMS_PER_INSERT = 5000;
const MAX_ERROR_COUNT = 65535;

/** The server's error for a transaction it rolled back to end a deadlock. */
const ER_LOCK_DEADLOCK = 1213;
/** How often one INSERT is sent before a deadlock ends the restore. */
const DEADLOCK_ATTEMPTS = 5;

export class RowInserter {
  readonly #decoder = new StringDecoder('utf8');
  /** Text after the last complete line, in pieces (a long row can span many). */
  #pending: string[] = [];
  #values: string[] = [];
  #size = 0;
  /** Rows with an ENUM's empty value, gathered apart (see EMPTY_ENUMS_PER_INSERT), each with those columns. */
  #emptyEnumRows: { tuple: string; columns: ReadonlySet<string> }[] = [];
  #emptyEnumSize = 0;
  #emptyEnumCount = 0;
  #table: MysqlTable | undefined;
  #maxPacket = 16 * 1024 * 1024;
  #running: Promise<unknown> | undefined;

  /**
   * `bitAsHex`: the stream is of a backup made before row format 2 (see mysql-legacy-facts.ts),
   * whose BIT values are HEX() text; read as decimal they would silently become other numbers.
   * `format3` false: it is of one made before row format 3 (see DescribeOptions).
   */
  constructor(
    readonly connection: mysql.Connection,
    readonly table: string,
    readonly database: string,
    readonly options: { readonly bitAsHex?: boolean; readonly format3?: boolean } = {},
  ) {}

  async #describe(): Promise<MysqlTable> {
    if (!this.#table) {
      this.#table = await describeTable(this.connection, this.database, this.table, undefined, { format3: this.options.format3 ?? true });
      const [[row]] = (await this.connection.query<mysql.RowDataPacket[]>('SELECT @@max_allowed_packet AS p')) as unknown as [mysql.RowDataPacket[]];
      this.#maxPacket = Number(row?.['p'] ?? this.#maxPacket);
    }
    return this.#table;
  }

  #refused(err: unknown): StrataError {
    if (isStrataError(err)) return err;
    const e = err as { message?: string; code?: string };
    return new StrataError('RESTORE_FAILED', redactable`restore: the target refused rows of table ${named(this.table, 'table')}: ${withheld(e.message ?? String(err), `server message ${e.code ?? ''}`.trim())}`, {
      cause: err,
      details: { table: this.table, mysqlCode: e.code },
    });
  }

  async write(chunk: Uint8Array): Promise<void> {
    const text = this.#decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    const last = text.lastIndexOf('\n');
    if (last < 0) {
      if (text.length > 0) this.#pending.push(text);
      return;
    }
    this.#pending.push(text.slice(0, last));
    const lines = this.#pending.join('').split('\n');
    this.#pending = last + 1 < text.length ? [text.slice(last + 1)] : [];
    await this.#add(lines);
  }

  async #add(lines: readonly string[]): Promise<void> {
    const table = await this.#describe();
    const columns = table.columns;
    const escape = (value: string): string => this.connection.escape(value);
    // Characters, and UTF-8 needs at most 3 bytes per UTF-16 unit: below this a row always fits.
    const rowLimit = Math.min(BATCH_CHARS, Math.floor(this.#maxPacket / 8));
    for (const line of lines) {
      const fields = line.split('\t');
      if (line.length > rowLimit) {
        await this.flush();
        await this.#insertLarge(fields);
        continue;
      }
      let tuple = '(';
      for (let i = 0; i < fields.length; i++) tuple += (i > 0 ? ',' : '') + sqlLiteral(fields[i]!, columns[i], escape, this.options.bitAsHex);
      tuple += ')';
      const empty = emptyEnums(fields, columns);
      if (empty.size > 0) {
        this.#emptyEnumRows.push({ tuple, columns: empty });
        this.#emptyEnumSize += tuple.length;
        this.#emptyEnumCount += empty.size;
        if (this.#emptyEnumSize >= rowLimit || this.#emptyEnumCount >= EMPTY_ENUMS_PER_INSERT) await this.#flushEmptyEnums();
        continue;
      }
      this.#values.push(tuple);
      this.#size += tuple.length;
      if (this.#size >= rowLimit) await this.flush();
    }
  }

  #insertSql(): string {
    const table = this.#table!;
    const names = table.columns.map((c) =>
      table.versioning?.start === 'ROW_START' && (c.name === 'ROW_START' || c.name === 'ROW_END') ? c.name : ident(c.name),
    );
    return `INSERT INTO ${ident(this.database)}.${ident(this.table)} (${names.join(', ')}) VALUES `;
  }

  /** One row whose long values are assembled in session variables first. */
  async #insertLarge(fields: readonly string[]): Promise<void> {
    const columns = this.#table!.columns;
    await this.#settle();
    const escape = (value: string): string => this.connection.escape(value);
    const literals: string[] = [];
    const used: string[] = [];
    try {
      for (let i = 0; i < fields.length; i++) {
        const field = fields[i]!;
        const column = columns[i];
        if (field.length <= PIECE_CHARS || field === '\\N' || !column) {
          literals.push(sqlLiteral(field, column, escape, this.options.bitAsHex));
          continue;
        }
        const variable = `@strata_value_${i}`;
        used.push(variable);
        const pieces: string[] = [];
        let bytes: number;
        // Pieces as large as a statement may be: each CONCAT copies the whole value again.
        if (column.kind === 'binary') {
          bytes = field.length / 2;
          const step = Math.max(PIECE_CHARS, 2 * Math.floor((this.#maxPacket - 4096) / 4));
          for (let at = 0; at < field.length; at += step) pieces.push(`X'${field.slice(at, at + step)}'`);
        } else {
          const value = decodeRow(field)[0]!;
          bytes = Buffer.byteLength(value, 'utf8');
          // UTF-8 takes at most 3 bytes per UTF-16 unit, escaping at most doubles them.
          const step = Math.max(PIECE_CHARS, Math.floor((this.#maxPacket - 4096) / 8));
          for (let at = 0; at < value.length; ) {
            let end = Math.min(value.length, at + step);
            // Never between the halves of a surrogate pair.
            if (end < value.length && /[\uD800-\uDBFF]/.test(value[end - 1]!)) end--;
            pieces.push(escape(value.slice(at, end)));
            at = end;
          }
        }
        if (bytes + 1024 > this.#maxPacket) {
          throw new StrataError(
            'RESTORE_FAILED',
            redactable`restore: table ${named(this.table, 'table')} column ${named(column.name, 'column')} holds a value of ${bytes} bytes, more than the target server accepts (max_allowed_packet = ${this.#maxPacket}); raise max_allowed_packet on the target (SET GLOBAL max_allowed_packet = ${Math.ceil((bytes + 1024 * 1024) / 1024) * 1024}, or in its configuration) and restore again`,
            { details: { table: this.table, column: column.name, bytes, maxAllowedPacket: this.#maxPacket } },
          );
        }
        await this.connection.query(`SET ${variable} = ${pieces[0]}`);
        for (const piece of pieces.slice(1)) await this.connection.query(`SET ${variable} = CONCAT(${variable}, ${piece})`);
        literals.push(variable);
      }
      const insert = (): Promise<unknown> => this.#insert(`${this.#insertSql()}(${literals.join(',')})`);
      const empty = emptyEnums(fields, columns);
      await (empty.size > 0 ? this.#outsideStrictMode([empty], insert) : insert());
    } catch (err) {
      throw this.#refused(err);
    } finally {
      if (used.length > 0) await this.connection.query(`SET ${used.map((v) => `${v} = NULL`).join(', ')}`).catch(() => undefined);
    }
  }

  /**
   * One INSERT (of many rows, or of one with long values). Two connections load a table in turns
   * (rowsInTurns), and InnoDB may end their lock waits as a deadlock (seen on a table without a
   * key): it then rolls back the whole transaction of one side, which here is that one statement
   * (the restore's connections autocommit), so the statement is sent again, a few times, before
   * the restore gives up.
   */
  async #insert(sql: string): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.connection.query(sql);
      } catch (err) {
        if ((err as { errno?: number }).errno !== ER_LOCK_DEADLOCK || attempt >= DEADLOCK_ATTEMPTS) throw err;
        await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
      }
    }
  }

  /** Inserts the rows with an ENUM's empty value gathered so far (see #outsideStrictMode). */
  async #flushEmptyEnums(): Promise<void> {
    if (this.#emptyEnumRows.length === 0) return;
    const rows = this.#emptyEnumRows;
    this.#emptyEnumRows = [];
    this.#emptyEnumSize = 0;
    this.#emptyEnumCount = 0;
    await this.flush();
    await this.#settle();
    try {
      await this.#outsideStrictMode(
        rows.map((r) => r.columns),
        () => this.#insert(this.#insertSql() + rows.map((r) => r.tuple).join(',')),
      );
    } catch (err) {
      throw this.#refused(err);
    }
  }

  /**
   * Runs one INSERT of rows with an ENUM's empty value (0) outside strict mode, the only way the
   * server takes it (as when the source stored it), and fails on any warning but those values':
   * `emptyByRow[i]` names the columns of row i+1 that may warn, and no other value of any row may
   * be changed on the way in.
   */
  async #outsideStrictMode(emptyByRow: readonly ReadonlySet<string>[], insert: () => Promise<unknown>): Promise<void> {
    const [[before]] = (await this.connection.query<mysql.RowDataPacket[]>('SELECT @@SESSION.sql_mode AS m, @@SESSION.max_error_count AS n')) as unknown as [mysql.RowDataPacket[]];
    await this.connection.query(
      `SET SESSION sql_mode = REPLACE(REPLACE(@@SESSION.sql_mode, 'STRICT_ALL_TABLES', ''), 'STRICT_TRANS_TABLES', ''), SESSION max_error_count = ${MAX_ERROR_COUNT}`,
    );
    let failed = false;
    try {
      await insert();
      const [warnings] = await this.connection.query<mysql.RowDataPacket[]>('SHOW WARNINGS');
      const expected = (w: mysql.RowDataPacket): boolean => {
        const at = /column '((?:[^']|'')*)' at row (\d+)/.exec(String(w['Message']));
        return Number(w['Code']) === WARN_DATA_TRUNCATED && at !== null && emptyByRow[Number(at[2]) - 1]?.has(at[1]!.toLowerCase()) === true;
      };
      const other = warnings.filter((w) => !expected(w));
      // As many warnings as the session keeps: some may have gone unseen.
      if (other.length === 0 && warnings.length >= MAX_ERROR_COUNT) other.push(warnings[0]!);
      if (other.length > 0) throw new StrataError('RESTORE_FAILED', redactable`restore: the target changed a value of a row of table ${named(this.table, 'table')}: ${withheld(String(other[0]!['Message']), 'server message')}`, { details: { table: this.table } });
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      // Strict mode must be back before the next rows; after a failure (the connection gone, as
      // likely as not) the insert's own error is the one to see.
      const back = this.connection.query('SET SESSION sql_mode = ?, SESSION max_error_count = ?', [String(before?.['m'] ?? ''), Number(before?.['n'] ?? 64)]);
      await (failed ? back.catch(() => undefined) : back);
    }
  }

  /** Waits for the INSERT still running, if any. */
  async #settle(): Promise<void> {
    const running = this.#running;
    this.#running = undefined;
    try {
      await running;
    } catch (err) {
      throw this.#refused(err);
    }
  }

  /** Sends the rows gathered so far (after the INSERT still running, if any, has succeeded). */
  async flush(): Promise<void> {
    if (this.#values.length === 0) return;
    await this.#describe();
    const sql = this.#insertSql() + this.#values.join(',');
    this.#values = [];
    this.#size = 0;
    await this.#settle();
    const running = this.#insert(sql);
    // Its failure is thrown by the next flush or by end(); until then it must not count as unhandled.
    running.catch(() => undefined);
    this.#running = running;
  }

  /** Inserts what is left (a last line without a newline too) and waits until the server has it all. */
  async end(): Promise<void> {
    const rest = this.#pending.join('') + this.#decoder.end();
    this.#pending = [];
    if (rest.length > 0) await this.#add([rest]);
    await this.flush();
    await this.#flushEmptyEnums();
    await this.#settle();
  }
}
