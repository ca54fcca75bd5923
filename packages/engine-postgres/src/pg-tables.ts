import { createHash } from 'node:crypto';
import type pg from 'pg';
import { StrataError, isStrataError, named, parentsFirst, readQuotedPart, redactable, withheld } from '@strata/core';
import type { TableStats } from '@strata/core';
import { copyStreams, ident } from './pg-connection.js';
import { identInEncoding } from './pg-database.js';

/** A table whose rows Strata copies: ordinary tables and partitions (partitioned parents hold no rows). */
export interface PgTable {
  readonly schema: string;
  readonly name: string;
  /** Columns that take values (generated columns are computed again on restore), in attnum order. */
  readonly columns: readonly string[];
  /**
   * The primary key's key columns (not its INCLUDE columns), in key order; empty when the table has
   * none or when a key column's type sorts only by a non-default operator class.
   */
  readonly primaryKey: readonly string[];
  /** Every column, generated ones too, in name order: what the server hashes for verification. */
  readonly hashedColumns: readonly string[];
  /**
   * For an extension's configuration table (pg_extension_config_dump), the extension's condition
   * on the rows that are the user's, e.g. `WHERE NOT standard_entry`, or '' when all are: only
   * these rows are copied and counted, as pg_dump does, since CREATE EXTENSION makes the others.
   * Undefined for every other table.
   */
  readonly extensionRows?: string;
}
/**
 * Qualified name as users write it: `schema.table`, the name verify facts, `list` and `--tables`
 * give a table. A part that holds a dot or a double quote is written in double quotes (a quote
 * inside doubled), as SQL writes it: schema `a.b` with table `c` and schema `a` with table `b.c`
 * are `"a.b".c` and `a."b.c"`, two tables that the plain `a.b.c` made one (verify then compared
 * both with the same restored table). Every other name is written as it always was.
 */
export function qualified(table: { schema: string; name: string }): string {
  return `${namePart(table.schema)}.${namePart(table.name)}`;
}

/** A schema's or table's name as {@link qualified} writes it. */
export function namePart(part: string): string {
  return /[."]/.test(part) ? `"${part.replaceAll('"', '""')}"` : part;
}

/**
 * `schema.table` joined plainly, as facts before version 4 named tables and as the server's
 * `nspname || '.' || relname` does: ambiguous when a name holds a dot.
 */
export function joinedName(table: { schema: string; name: string }): string {
  return `${table.schema}.${table.name}`;
}

/**
 * The schema and table a qualified name stands for: quoted parts as {@link qualified} writes
 * them, or two plain parts. Undefined when it cannot tell (a plain name with more than one dot,
 * as older facts wrote dotted names) or the text is no qualified name at all.
 */
export function splitQualified(text: string): { schema: string; name: string } | undefined {
  const parts: string[] = [];
  let at = 0;
  while (parts.length < 2) {
    if (text[at] === '"') {
      const part = readQuotedPart(text, at);
      if (!part) return undefined;
      parts.push(part.value);
      at = part.end;
    } else {
      const dot = text.indexOf('.', at);
      const end = parts.length === 0 ? dot : text.length;
      if (end < 0) return undefined;
      const part = text.slice(at, end);
      if (part.includes('"') || (parts.length === 1 && part.includes('.'))) return undefined;
      parts.push(part);
      at = end;
    }
    if (parts.length === 1) {
      if (text[at] !== '.') return undefined;
      at++;
    }
  }
  if (at !== text.length) return undefined;
  return { schema: parts[0]!, name: parts[1]! };
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

/**
 * User tables with rows, leaving out system schemas and tables that belong to extensions, except
 * (with `extensionConfig`, the default) the configuration tables an extension marked with
 * pg_extension_config_dump, whose rows are the user's (pg_partman's part_config, PostGIS's own
 * spatial_ref_sys entries, pg_cron's jobs): pg_dump dumps them, and a restore without them has the
 * extension but none of its configuration. Facts recorded before they were copied
 * (`factsVersion` 2) leave them out too.
 */
export async function listTables(client: pg.Client, options: { extensionConfig?: boolean } = {}): Promise<PgTable[]> {
  const extensionConfig = options.extensionConfig ?? true;
  // A primary key's opclasses are btree; ORDER BY needs each to be its type's default, which a key
  // built on a unique index (ADD PRIMARY KEY USING INDEX) need not have.
  const result = await client.query<{ schema: string; name: string; columns: string[] | null; pk: string[] | null; pk_sortable: boolean | null; hashed: string[] | null; extension_rows: string | null }>(`
    SELECT n.nspname AS schema, c.relname AS name,
      (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS columns,
      (SELECT array_agg(a.attname::text COLLATE "C" ORDER BY a.attname COLLATE "C") FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS hashed,
      pk.columns AS pk, pk.sortable AS pk_sortable, ext.rows AS extension_rows
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN LATERAL (
      SELECT array_agg(a.attname::text ORDER BY k.position) AS columns, bool_and(oc.opcdefault) AS sortable
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey::int2[], i.indclass::oid[]) WITH ORDINALITY AS k(attnum, opclass, position)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      JOIN pg_opclass oc ON oc.oid = k.opclass
      WHERE i.indrelid = c.oid AND i.indisprimary AND k.position <= i.indnkeyatts
    ) pk ON true
    LEFT JOIN LATERAL (
      -- The extension the table belongs to, and its row condition when it is a configuration table
      -- (NULL when it is not); extensions built into the server (plpgsql) are not dumped, nor are theirs.
      SELECT e.oid AS extension, CASE WHEN e.oid >= 16384 THEN e.extcondition[array_position(e.extconfig, c.oid)] END AS rows
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
    ) ext ON true
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND (ext.extension IS NULL OR ($1 AND ext.rows IS NOT NULL))
    ORDER BY n.nspname, c.relname`, [extensionConfig]);
  return result.rows.map((r) => ({
    schema: r.schema,
    name: r.name,
    columns: r.columns ?? [],
    primaryKey: r.pk && r.pk_sortable ? r.pk : [],
    hashedColumns: r.hashed ?? [],
    ...(r.extension_rows !== null ? { extensionRows: r.extension_rows } : {}),
  }));
}

/**
 * The alias of the table in Strata's queries. Only its `alias.*` and `alias.column` forms are used,
 * which always mean the table, so a column of the same name cannot capture them (a bare `t::text`
 * sorted a table with a column `t` by that column alone).
 */
const ROW_ALIAS = '"strata row"';

/**
 * `ONLY schema.table AS alias`: pg_dump's row selection, without the rows of inheritance children.
 * An extension's configuration table is read through its condition, in a subquery of its own so
 * that the condition may name the table as pg_dump lets it.
 */
function onlyTable(table: PgTable, quote: (name: string) => string = ident): string {
  const only = `ONLY ${quote(table.schema)}.${quote(table.name)}`;
  return table.extensionRows ? `(SELECT * FROM ${only} ${table.extensionRows}) AS ${ROW_ALIAS}` : `${only} AS ${ROW_ALIAS}`;
}

/**
 * The COPY statement that reads a table in a stable order: by primary key, or by the whole row's
 * text where there is no key the server can sort by. Unchanged rows keep their place, so
 * incrementals stay small.
 */
export function copyOutSql(table: PgTable, clientEncoding = 'UTF8'): string {
  const quote = (name: string): string => identInEncoding(name, clientEncoding);
  const columns = table.columns.map((c) => `${ROW_ALIAS}.${quote(c)}`).join(', ');
  const order = table.primaryKey.length > 0 ? table.primaryKey.map((c) => `${ROW_ALIAS}.${quote(c)}`).join(', ') : `(${ROW_ALIAS}.*)::text`;
  return `COPY (SELECT ${columns} FROM ${onlyTable(table, quote)} ORDER BY ${order}) TO STDOUT`;
}

/**
 * The server's own facts about a table's rows, independent of Strata's COPY stream: the row count
 * and the sum of the first 8 bytes of each row text's MD5 (order-independent, and unlike XOR not
 * blind to duplicate rows). The hash is written once in the query: PostgreSQL evaluates every
 * copy of an expression, and MD5 of the row text is most of the cost. Columns are taken by name,
 * not by position, because pg_dump recreates an inheritance child with its parent's columns
 * first; the values must match, wherever they sit. The session's output settings are fixed by
 * `connect()`, so equal values give equal text.
 */
export function rowFactsSql(table: PgTable): string {
  const row = `ROW(${table.hashedColumns.map((c) => `${ROW_ALIAS}.${ident(c)}`).join(', ')})::text`;
  return `SELECT count(*)::text AS rows, coalesce(sum(('x' || left(md5(${row}), 16))::bit(64)::bigint), 0)::text AS hash_sum FROM ${onlyTable(table)}`;
}

/**
 * Runs a table's COPY on `client`, whose client_encoding is `clientEncoding`, and yields its
 * bytes; a server error names the table.
 */
export async function* copyOut(client: pg.Client, table: PgTable, clientEncoding = 'UTF8'): AsyncGenerator<Uint8Array> {
  const stream = client.query((await copyStreams()).to(copyOutSql(table, clientEncoding)));
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) yield chunk;
  } catch (err) {
    throw tableError(table, 'copying', err);
  }
}

/**
 * Row counts and checksums of every table, computed by the server ({@link rowFactsSql}), one query
 * per table, in the caller's transaction.
 */
export async function statsOf(client: pg.Client, tables: readonly PgTable[], nameOf: (table: PgTable) => string = qualified): Promise<TableStats[]> {
  const out: TableStats[] = [];
  for (const table of tables) {
    let facts: { rows: string; hash_sum: string };
    try {
      facts = (await client.query<{ rows: string; hash_sum: string }>(rowFactsSql(table))).rows[0]!;
    } catch (err) {
      throw tableError(table, 'counting and hashing the rows of', err);
    }
    out.push({ ...tableStats(table, facts.rows, facts.hash_sum), name: nameOf(table) });
  }
  return out;
}

/** The facts of a table without rows, equal to what {@link statsOf} computes for one (schema-only backups). */
export function emptyTableStats(table: PgTable): TableStats {
  return tableStats(table, '0', '0');
}

function tableStats(table: PgTable, rows: string, hashSum: string): TableStats {
  return { name: qualified(table), rows: Number(rows), checksum: createHash('sha256').update(`postgres row md5 sum v1 ${rows} ${hashSum}`).digest('hex') };
}

/** A server error while reading one table, with the table's name in front of the server's words. */
export function tableError(table: { schema: string; name: string }, doing: string, err: unknown): unknown {
  if (isStrataError(err)) return err;
  const e = err as { code?: string; message?: string };
  // Lost connections keep their own error (and code) from connectionError; this is about the table.
  if (!e.code || !/^[0-9A-Z]{5}$/.test(e.code) || e.code.startsWith('57P') || e.code.startsWith('08')) return err;
  if (e.code === '42501') {
    // Row-level security that would hide rows is an error, not a smaller table (row_security = off).
    const remedy = /row-level security/i.test(e.message ?? '')
      ? 'back up (and verify) as a superuser or a role with BYPASSRLS (a table owner reads past its policies only without FORCE ROW LEVEL SECURITY)'
      : 'grant the role SELECT on it, or back up (and verify) as its owner or a superuser';
    return new StrataError('ACCESS_DENIED', redactable`postgres: ${doing} table ${named(qualified(table), 'table')} was refused: ${withheld(e.message ?? String(err), `server message ${e.code}`)}; ${remedy}`, {
      cause: err,
      details: { pgCode: e.code, table: qualified(table) },
    });
  }
  return new StrataError('IO', redactable`postgres: ${doing} table ${named(qualified(table), 'table')} failed: ${withheld(e.message ?? String(err), `server message ${e.code}`)}`, {
    cause: err,
    details: { pgCode: e.code, table: qualified(table) },
  });
}

/**
 * Which materialized views read which others, directly or through plain views (pg_depend of their
 * rewrite rules), as `quote_ident(schema).quote_ident(name)` strings.
 */
async function matviewReads(client: pg.Client): Promise<{ child: string; parent: string }[]> {
  return (await client.query<{ child: string; parent: string }>(`
    WITH RECURSIVE reads AS (
      SELECT DISTINCT rw.ev_class AS reader, d.refobjid AS read
      FROM pg_rewrite rw
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rw.ev_class
    ), needs AS (
      SELECT r.reader AS matview, r.read FROM reads r JOIN pg_class m ON m.oid = r.reader AND m.relkind = 'm'
      UNION
      SELECT n.matview, r.read FROM needs n JOIN pg_class v ON v.oid = n.read AND v.relkind = 'v' JOIN reads r ON r.reader = n.read
    )
    SELECT quote_ident(mn.nspname) || '.' || quote_ident(m.relname) AS child, quote_ident(pn.nspname) || '.' || quote_ident(p.relname) AS parent
    FROM needs
    JOIN pg_class m ON m.oid = needs.matview JOIN pg_namespace mn ON mn.oid = m.relnamespace
    JOIN pg_class p ON p.oid = needs.read AND p.relkind = 'm' JOIN pg_namespace pn ON pn.oid = p.relnamespace`)).rows;
}

/** Materialized views in the order they can be refreshed: each after those it reads, otherwise in the given order. */
export async function refreshOrder(client: pg.Client, names: readonly string[]): Promise<string[]> {
  if (names.length < 2) return [...names];
  return parentsFirst(names, await matviewReads(client));
}

/**
 * The populated materialized views of the database in refresh order. One that holds data but
 * reads a materialized view that holds none could not be refreshed by a restore, so it stops the
 * backup, named, rather than come back empty.
 */
export async function populatedMatviews(client: pg.Client): Promise<string[]> {
  const all = (await client.query<{ name: string; populated: boolean }>(
    `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, c.relispopulated AS populated
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' ORDER BY 1`,
  )).rows;
  if (all.length === 0) return [];
  const populated = all.filter((m) => m.populated).map((m) => m.name);
  const reads = await matviewReads(client);
  const empty = new Set(all.filter((m) => !m.populated).map((m) => m.name));
  for (const edge of reads) {
    if (!empty.has(edge.child) && empty.has(edge.parent)) {
      throw new StrataError(
        'UNSUPPORTED_OBJECT',
        redactable`postgres: materialized view ${named(edge.child, 'view')} holds data but reads ${named(edge.parent, 'view')}, which holds none, so a restore could not refresh it; run REFRESH MATERIALIZED VIEW ${named(edge.parent, 'view')} (or REFRESH MATERIALIZED VIEW ${named(edge.child, 'view')} WITH NO DATA) and back up again`,
        { details: { object: edge.child } },
      );
    }
  }
  return parentsFirst(populated, reads);
}

/** A materialized view a restore could not refresh, and the server's reason. */
export interface UnrefreshedMatview {
  readonly view: string;
  readonly cause: string;
}

/**
 * SQLSTATE classes that are the restore's trouble, not one view's: a lost connection (08), a
 * rolled-back transaction such as a deadlock (40), a lack of resources such as a full disk (53), a
 * program limit exceeded (54), an administrator's or a cancel's intervention (57), a system error
 * (58), an internal error (XX). They fail the restore as any other step would.
 */
const RESTORE_TROUBLE = /^(08|40|53|54|57|58|XX)/;

/**
 * Refreshes the views in order (see refreshOrder). One whose REFRESH the server refuses for a
 * reason of its own (most often a function it calls that names tables without their schema, which
 * fails under pg_dump's empty search_path exactly as it does with pg_restore) stays as the schema
 * created it, without data, and so does each view that reads it; the rest of the restore
 * completes, as pg_restore completes and reports such an entry. Failing the whole restore instead
 * would leave a database with such a view no restorable backup at all, while its data is the one
 * part that can be made again from the rest. The caller says which views stayed empty, and verify
 * fails such a restore (see unpopulatedMatviews), so it is never taken for a complete one.
 */
export async function refreshMatviews(client: pg.Client, views: readonly string[]): Promise<UnrefreshedMatview[]> {
  const failed: UnrefreshedMatview[] = [];
  for (const view of views) {
    try {
      await client.query(`REFRESH MATERIALIZED VIEW ${view}`);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string' || RESTORE_TROUBLE.test(code)) throw err;
      failed.push({ view, cause: (err as Error).message });
    }
  }
  return failed;
}

/** Says which materialized views a restore left without data, why, and what to do (a warning: the restore completed). */
export function reportUnrefreshedMatviews(failed: readonly UnrefreshedMatview[]): void {
  if (failed.length === 0) return;
  const each = failed.map((f) => `${f.view} (${f.cause})`).join('; ');
  process.emitWarning(
    `restore: materialized view(s) ${each} could not be refreshed, so they are restored without their data (reading one fails with "has not been populated"; verify, which restores as this does, fails such a restore); everything else is restored. A restore refreshes under an empty search_path, as pg_restore does: a function the view calls that names tables without their schema fails there. Give such a function its search_path (ALTER FUNCTION ... SET search_path = public) or qualify the names, then run REFRESH MATERIALIZED VIEW on each; change the source so too, so its next backups restore whole`,
    { code: 'STRATA_MATVIEW_NOT_REFRESHED' },
  );
}

/**
 * Of the materialized views a backup recorded as holding data (engineMeta.matviews), those that
 * hold none in this database: verify's finding for a restore that could not refresh them.
 */
export async function unpopulatedMatviews(client: pg.Client, recorded: unknown): Promise<string[]> {
  if (!Array.isArray(recorded) || recorded.length === 0) return [];
  const empty = (await client.query<{ name: string }>(
    `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND NOT c.relispopulated ORDER BY 1`,
  )).rows.map((r) => r.name);
  return empty.filter((name) => recorded.includes(name));
}

/** An identifier as pg_dump writes it: lower-case bare, or double-quoted with `""` for a quote. */
const DUMPED_IDENT = String.raw`(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)`;
const DUMPED_NAME = String.raw`(${DUMPED_IDENT})\.(${DUMPED_IDENT})`;

function dumpedName(schema: string, name: string): string {
  const bare = (id: string): string => (id.startsWith('"') ? id.slice(1, -1).replaceAll('""', '"') : id);
  return qualified({ schema: bare(schema), name: bare(name) });
}

/**
 * The tables a pg_dump schema creates (`CREATE TABLE`, not foreign tables) and the partitions it
 * attaches to each partitioned table, by `schema.table`. Read from the statements, which pg_dump
 * writes one a line: `ALTER TABLE ONLY parent ATTACH PARTITION child FOR VALUES ...`.
 */
export function partitionTree(schemaSql: string): { tables: Set<string>; partitions: Map<string, string[]> } {
  const tables = new Set<string>();
  const partitions = new Map<string, string[]>();
  const created = new RegExp(String.raw`^CREATE (?:UNLOGGED )?TABLE ${DUMPED_NAME}`);
  // A partitioned table is one even with no partition attached: pg_dump ends its CREATE TABLE
  // with a line `PARTITION BY ...;`.
  let open: string | undefined;
  for (const line of schemaSql.split('\n')) {
    const m = created.exec(line);
    if (m) {
      open = dumpedName(m[1]!, m[2]!);
      tables.add(open);
    }
    if (open !== undefined && line.startsWith('PARTITION BY ')) partitions.set(open, []);
    if (line.endsWith(';')) open = undefined;
  }
  for (const m of schemaSql.matchAll(new RegExp(String.raw`^ALTER TABLE ONLY ${DUMPED_NAME} ATTACH PARTITION ${DUMPED_NAME} `, 'gm'))) {
    const parent = dumpedName(m[1]!, m[2]!);
    partitions.set(parent, [...(partitions.get(parent) ?? []), dumpedName(m[3]!, m[4]!)]);
  }
  return { tables, partitions };
}

/** The tables under a partitioned table that hold its rows: its partitions, every level down, foreign ones left out. */
export function leafPartitions(parent: string, tree: ReturnType<typeof partitionTree>, seen = new Set<string>()): string[] {
  if (seen.has(parent)) return [];
  seen.add(parent);
  return (tree.partitions.get(parent) ?? []).flatMap((child) => (tree.partitions.has(child) ? leafPartitions(child, tree, seen) : tree.tables.has(child) ? [child] : []));
}
