import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { TableStats } from '@strata/core';
import { copyStreams, ident } from './pg-connection.js';
import { fingerprint } from './pg-schema.js';
import { tableError } from './pg-tables.js';

/**
 * Verify facts computed exactly as releases before `factsVersion` 2 computed them, so that their
 * backups still verify: the fingerprint of pg_dump's schema alone (no database properties), and
 * per table the line count and SHA-256 of Strata's own COPY text, read without ONLY, ordered by
 * every primary-key column (INCLUDE columns too) or else by `t::text`. These quirks are kept on
 * purpose: the recorded checksums hash those exact bytes in that exact order. Nothing else may use
 * this; new backups get server-computed facts (see statsOf in pg-tables.ts).
 */
export async function legacyFacts(client: pg.Client, schemaSql: string): Promise<{ schemaFingerprint: string; tables: TableStats[] }> {
  const tables = (await client.query<{ schema: string; name: string; columns: string[] | null; pk: string[] | null }>(`
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
    ORDER BY n.nspname, c.relname`)).rows;
  const out: TableStats[] = [];
  for (const table of tables) {
    const columns = (table.columns ?? []).map((c) => `t.${ident(c)}`).join(', ');
    const order = table.pk && table.pk.length > 0 ? table.pk.map((c) => `t.${ident(c)}`).join(', ') : 't::text';
    const sha = createHash('sha256');
    let rows = 0;
    try {
      const stream = client.query((await copyStreams()).to(`COPY (SELECT ${columns} FROM ${ident(table.schema)}.${ident(table.name)} AS t ORDER BY ${order}) TO STDOUT`));
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        sha.update(chunk);
        for (let at = chunk.indexOf(10); at >= 0; at = chunk.indexOf(10, at + 1)) rows++;
      }
    } catch (err) {
      throw tableError(table, 'reading (as earlier releases did) the rows of', err);
    }
    out.push({ name: `${table.schema}.${table.name}`, rows, checksum: sha.digest('hex') });
  }
  return { schemaFingerprint: fingerprint(schemaSql, 'lines'), tables: out };
}
