import { createHash } from 'node:crypto';
import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import type { TableStats } from '@strata/core';
import { ident } from './pg-connection.js';

/** A table whose rows Strata copies: ordinary tables and partitions (partitioned parents hold no rows). */
export interface PgTable {
  readonly schema: string;
  readonly name: string;
  /** Columns that take values (generated columns are computed again on restore), in attnum order. */
  readonly columns: readonly string[];
  /** Primary key columns, in key order; empty when the table has none. */
  readonly primaryKey: readonly string[];
}

/** Qualified name as users write it: `schema.table`. */
export function qualified(table: { schema: string; name: string }): string {
  return `${table.schema}.${table.name}`;
}

/** A tar-safe, reversible stream name: letters, digits, `_` and `-` as they are, the rest %XX. */
export function streamName(table: { schema: string; name: string }): string {
  const enc = (s: string): string =>
    [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9_-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
  return `${enc(table.schema)}.${enc(table.name)}.copy`;
}

/** The table a stream name stands for. */
export function parseStreamName(stream: string): { schema: string; name: string } | undefined {
  const match = /^([^.]+)\.([^.]+)\.copy$/.exec(stream);
  if (!match) return undefined;
  return { schema: decodeURIComponent(match[1]!), name: decodeURIComponent(match[2]!) };
}

/** User tables with rows, leaving out system schemas and tables that belong to extensions. */
export async function listTables(client: pg.Client): Promise<PgTable[]> {
  const result = await client.query<{ schema: string; name: string; columns: string[] | null; pk: string[] | null }>(`
    SELECT n.nspname AS schema, c.relname AS name,
      (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS columns,
      (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
        WHERE i.indrelid = c.oid AND i.indisprimary) AS pk
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY n.nspname, c.relname`);
  return result.rows.map((r) => ({ schema: r.schema, name: r.name, columns: r.columns ?? [], primaryKey: r.pk ?? [] }));
}

/**
 * The COPY statement that reads a table in a stable order: by primary key, or by the whole row's
 * text for tables without one. The same statement runs at backup and at verification, so equal
 * tables produce byte-identical output, and unchanged rows keep their place for incrementals.
 */
export function copyOutSql(table: PgTable): string {
  const from = `${ident(table.schema)}.${ident(table.name)} AS t`;
  const columns = table.columns.length > 0 ? table.columns.map((c) => `t.${ident(c)}`).join(', ') : '';
  const order = table.primaryKey.length > 0 ? table.primaryKey.map((c) => `t.${ident(c)}`).join(', ') : 't::text';
  return `COPY (SELECT ${columns} FROM ${from} ORDER BY ${order}) TO STDOUT`;
}

/** Counts rows (lines) and hashes COPY text as it passes. */
export class CopyStats {
  readonly #sha = createHash('sha256');
  rows = 0;

  update(chunk: Uint8Array): void {
    this.#sha.update(chunk);
    let at = -1;
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while ((at = buf.indexOf(10, at + 1)) >= 0) this.rows++;
  }

  finish(name: string): TableStats {
    return { name, rows: this.rows, checksum: this.#sha.digest('hex') };
  }
}

/** Runs a table's COPY on `client` and yields its bytes. */
export async function* copyOut(client: pg.Client, table: PgTable, stats?: CopyStats): AsyncGenerator<Uint8Array> {
  const stream = client.query(copyTo(copyOutSql(table)));
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    stats?.update(chunk);
    yield chunk;
  }
}

/** Row counts and checksums of every table, reading each with {@link copyOut}. */
export async function statsOf(client: pg.Client, tables: readonly PgTable[]): Promise<TableStats[]> {
  const out: TableStats[] = [];
  for (const table of tables) {
    const stats = new CopyStats();
    for await (const _ of copyOut(client, table, stats)) void _;
    out.push(stats.finish(qualified(table)));
  }
  return out;
}
