import { createHash } from 'node:crypto';
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

/** One row as a line: tab-separated, `\N` for NULL, backslash escapes for tab, newline, CR, NUL, backslash. */
export function encodeRow(values: readonly (string | Buffer | null)[]): string {
  return (
    values
      .map((v) => {
        if (v === null) return '\\N';
        const text = typeof v === 'string' ? v : v.toString('utf8');
        return text.replace(/[\\\t\n\r\0]/g, (c) => ({ '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0' })[c]!);
      })
      .join('\t') + '\n'
  );
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
  query(options: object): { stream(o?: object): NodeJS.ReadableStream & AsyncIterable<unknown[]> & { destroy(err?: Error): void } };
  once(event: string, fn: (err?: Error) => void): void;
  off(event: string, fn: (err?: Error) => void): void;
}

/** Encodes rows into lines, yielded in pieces of about 256 KiB. */
async function* encodeStream(stream: AsyncIterable<unknown[]>, stats: RowStats | undefined): AsyncGenerator<Uint8Array> {
  let batch: string[] = [];
  let size = 0;
  for await (const row of stream) {
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

/** Writes encoded lines into a table with multi-row INSERTs of about 1 MiB. */
export class RowInserter {
  #pending = '';
  #values: string[] = [];
  #size = 0;
  #columns: { name: string; binary: boolean }[] | undefined;

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
    this.#pending += Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('utf8');
    let newline: number;
    const columns = await this.#columnsOf();
    while ((newline = this.#pending.indexOf('\n')) >= 0) {
      const line = this.#pending.slice(0, newline);
      this.#pending = this.#pending.slice(newline + 1);
      const fields = decodeRow(line);
      const tuple = `(${fields
        .map((v, i) => (v === null ? 'NULL' : columns[i]?.binary ? (v === '' ? "''" : `X'${v}'`) : this.connection.escape(v)))
        .join(',')})`;
      this.#values.push(tuple);
      this.#size += tuple.length;
      if (this.#size >= 1024 * 1024) await this.flush();
    }
  }

  async flush(): Promise<void> {
    if (this.#values.length === 0) return;
    const columns = await this.#columnsOf();
    const sql = `INSERT INTO ${ident(this.table)} (${columns.map((c) => ident(c.name)).join(', ')}) VALUES ${this.#values.join(',')}`;
    this.#values = [];
    this.#size = 0;
    await this.connection.query(sql);
  }

  async end(): Promise<void> {
    if (this.#pending.length > 0) await this.write(Buffer.from('\n'));
    await this.flush();
  }
}
