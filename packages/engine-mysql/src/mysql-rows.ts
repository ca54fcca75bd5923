import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type mysql from 'mysql2/promise';
import type { TableStats } from '@strata/core';
import { ident } from './mysql-connection.js';

/** A base table whose rows Strata copies. */
export interface MysqlTable {
  readonly name: string;
  /** Columns that take values (generated ones are computed again), in table order. */
  readonly columns: readonly { name: string; binary: boolean }[];
  readonly primaryKey: readonly string[];
  readonly transactional: boolean;
}

const BINARY_TYPES = new Set(['binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob', 'longblob', 'bit', 'geometry', 'point', 'linestring', 'polygon', 'multipoint', 'multilinestring', 'multipolygon', 'geometrycollection']);

/** Stream name of a table: tar-safe and reversible. */
export function streamName(table: string): string {
  return `${[...Buffer.from(table, 'utf8')].map((b) => (/[A-Za-z0-9_-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('')}.rows`;
}

export function tableOfStream(stream: string): string | undefined {
  const match = /^([^.]+)\.rows$/.exec(stream);
  return match ? decodeURIComponent(match[1]!) : undefined;
}

/** Base tables of the current database with their value columns and primary keys. */
export async function listTables(connection: mysql.Connection, database: string): Promise<MysqlTable[]> {
  const [tables] = await connection.query<mysql.RowDataPacket[]>(
    "SELECT TABLE_NAME AS name, ENGINE AS engine FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    [database],
  );
  const out: MysqlTable[] = [];
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
        .filter((c) => !/GENERATED|VIRTUAL|PERSISTENT|STORED/i.test(String(c['extra'])))
        .map((c) => ({ name: c['name'] as string, binary: BINARY_TYPES.has(String(c['type']).toLowerCase()) })),
      primaryKey: pk.map((c) => c['name'] as string),
      transactional: String(t['engine']).toLowerCase() === 'innodb',
    });
  }
  return out;
}

/** The SELECT that reads a table in a stable order; binary columns come as hex. */
export function selectSql(table: MysqlTable): string {
  const columns = table.columns.map((c) => (c.binary ? `HEX(${ident(c.name)})` : ident(c.name)));
  const order = table.primaryKey.length > 0 ? table.primaryKey.map(ident) : table.columns.map((_, i) => String(i + 1));
  return `SELECT ${columns.length > 0 ? columns.join(', ') : '1'} FROM ${ident(table.name)}${order.length > 0 ? ` ORDER BY ${order.join(', ')}` : ''}`;
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

/** Streams a table's rows as encoded lines, counting and hashing them for the validator. */
export async function* readRows(connection: mysql.Connection, table: MysqlTable, stats?: RowStats): AsyncGenerator<Uint8Array> {
  // Raw text values as the server sends them: no lossy number or date conversion in between.
  const core = (connection as unknown as { connection: CoreConnection }).connection;
  const stream = core.query({ sql: selectSql(table), rowsAsArray: true, typeCast: (field: { string(): string | null }) => field.string() }).stream({ highWaterMark: 256 });
  // mysql2 does not end a row stream whose connection dies: without this a backup would wait
  // forever for rows that never come.
  const lost = (err?: Error): void => {
    stream.destroy(Object.assign(new Error(`the connection was lost while reading ${table.name}${err ? ` (${err.message})` : ''}`), { code: 'PROTOCOL_CONNECTION_LOST' }));
  };
  core.once('error', lost);
  core.once('end', lost);
  try {
    yield* encodeStream(stream, stats);
  } finally {
    core.off('error', lost);
    core.off('end', lost);
  }
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
async function* encodeStream(stream: Readable, stats: RowStats | undefined): AsyncGenerator<Uint8Array> {
  let batch: string[] = [];
  let size = 0;
  for await (const rows of rowBatches(stream)) {
    for (const row of rows) {
      const line = encodeRow(row as (string | null)[]);
      batch.push(line);
      size += line.length;
      if (size >= 256 * 1024) {
        const bytes = Buffer.from(batch.join(''), 'utf8');
        stats?.update(bytes, batch.length);
        yield bytes;
        batch = [];
        size = 0;
      }
    }
  }
  if (batch.length > 0) {
    const bytes = Buffer.from(batch.join(''), 'utf8');
    stats?.update(bytes, batch.length);
    yield bytes;
  }
}

/** Row count and SHA-256 of the encoded rows. */
export class RowStats {
  readonly #sha = createHash('sha256');
  rows = 0;

  update(bytes: Uint8Array, rows: number): void {
    this.#sha.update(bytes);
    this.rows += rows;
  }

  finish(name: string): TableStats {
    return { name, rows: this.rows, checksum: this.#sha.digest('hex') };
  }
}

export async function statsOf(connection: mysql.Connection, tables: readonly MysqlTable[]): Promise<TableStats[]> {
  const out: TableStats[] = [];
  for (const table of tables) {
    const stats = new RowStats();
    for await (const _ of readRows(connection, table, stats)) void _;
    out.push(stats.finish(table.name));
  }
  return out;
}

/** A backslash that is not one of the five escapes of a row line (or ends the field). */
const OTHER_ESCAPE = /\\(?![\\tnr0])/;
const QUOTES = /'/g;

/**
 * One field of a row line as an SQL literal. The line's escapes (`\\`, `\t`, `\n`, `\r`, `\0`)
 * mean the same inside a MySQL string literal (the restore sessions never set
 * NO_BACKSLASH_ESCAPES), so a field goes in as it is, with its quotes escaped; only a field with
 * any other backslash is decoded and escaped again.
 */
function sqlLiteral(field: string, binary: boolean | undefined, escape: (value: string) => string): string {
  if (field === '\\N') return 'NULL';
  if (binary) return field === '' ? "''" : `X'${field}'`;
  if (field.includes('\\') && OTHER_ESCAPE.test(field)) return escape(decodeRow(field)[0]!);
  return field.includes("'") ? `'${field.replace(QUOTES, "\\'")}'` : `'${field}'`;
}

/**
 * Writes encoded lines into a table with multi-row INSERTs of about 1 MiB, one INSERT running on
 * the server while the next is built. Pieces may end anywhere, inside a line or a character.
 */
export class RowInserter {
  readonly #decoder = new StringDecoder('utf8');
  /** Text after the last complete line, in pieces (a long row can span many). */
  #pending: string[] = [];
  #values: string[] = [];
  #size = 0;
  #columns: { name: string; binary: boolean }[] | undefined;
  #running: Promise<unknown> | undefined;

  constructor(
    readonly connection: mysql.Connection,
    readonly table: string,
    readonly database: string,
  ) {}

  async #columnsOf(): Promise<{ name: string; binary: boolean }[]> {
    if (!this.#columns) {
      const [rows] = await this.connection.query<mysql.RowDataPacket[]>(
        'SELECT COLUMN_NAME AS name, DATA_TYPE AS type, EXTRA AS extra FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION',
        [this.database, this.table],
      );
      this.#columns = rows
        .filter((c) => !/GENERATED|VIRTUAL|PERSISTENT|STORED/i.test(String(c['extra'])))
        .map((c) => ({ name: c['name'] as string, binary: BINARY_TYPES.has(String(c['type']).toLowerCase()) }));
    }
    return this.#columns;
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
    const columns = await this.#columnsOf();
    const escape = (value: string): string => this.connection.escape(value);
    for (const line of lines) {
      const fields = line.split('\t');
      let tuple = '(';
      for (let i = 0; i < fields.length; i++) tuple += (i > 0 ? ',' : '') + sqlLiteral(fields[i]!, columns[i]?.binary, escape);
      tuple += ')';
      this.#values.push(tuple);
      this.#size += tuple.length;
      if (this.#size >= 1024 * 1024) await this.flush();
    }
  }

  /** Sends the rows gathered so far (after the INSERT still running, if any, has succeeded). */
  async flush(): Promise<void> {
    if (this.#values.length === 0) return;
    const columns = await this.#columnsOf();
    const sql = `INSERT INTO ${ident(this.table)} (${columns.map((c) => ident(c.name)).join(', ')}) VALUES ${this.#values.join(',')}`;
    this.#values = [];
    this.#size = 0;
    await this.#running;
    const running = this.connection.query(sql);
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
    const running = this.#running;
    this.#running = undefined;
    await running;
  }
}
