import type pg from 'pg';
import { StrataError } from '@strata/core';
import type { StreamTarget, TableStats } from '@strata/core';
import { ident, literal } from './pg-connection.js';

/**
 * The stream that holds the database's large objects: one JSON document per line. An object's
 * line `{"oid","owner","grants","comment"}` comes first, then its content as
 * `{"oid","at","hex"}` lines of at most {@link PIECE} bytes each, objects in OID order.
 * The name cannot be a table's: table streams end in `.copy`.
 */
export const LARGE_OBJECTS_STREAM = 'large-objects.jsonl';

/** The name under which verify facts record the large objects, beside the tables. */
export const LARGE_OBJECTS_FACTS = 'pg_largeobject';

/** Bytes per content line: about one chunk of a row stream, so a changed object changes few chunks. */
const PIECE = 32 * 1024;
/** Objects read per query, with their first piece: at most 8 MiB of content in memory. */
const BATCH = 256;

interface Grant {
  grantor: string;
  grantee: string;
  privilege: string;
  grantable: boolean;
}

interface ObjectLine {
  oid: string;
  owner: string;
  /** null: the default privileges (owner only). */
  grants: Grant[] | null;
  comment: string | null;
}

interface PieceLine {
  oid: string;
  at: number;
  hex: string;
}

/** How many large objects the database has (in the transaction's snapshot). */
export async function countLargeObjects(client: pg.Client): Promise<number> {
  return Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM pg_catalog.pg_largeobject_metadata')).rows[0]!.n);
}

/**
 * Reads every large object with lo_get in bounded pieces, in the caller's transaction (so in the
 * same snapshot as the tables), as the lines of {@link LARGE_OBJECTS_STREAM}.
 */
export async function* readLargeObjects(client: pg.Client): AsyncGenerator<Uint8Array> {
  let after = '0';
  for (;;) {
    const batch = (await client.query<ObjectLine & { head: Buffer }>(
      `SELECT m.oid::text AS oid, pg_catalog.pg_get_userbyid(m.lomowner) AS owner, d.description AS comment, pg_catalog.lo_get(m.oid, 0, ${PIECE}) AS head,
        CASE WHEN m.lomacl IS NULL THEN NULL ELSE (SELECT coalesce(json_agg(json_build_object(
          'grantor', pg_catalog.pg_get_userbyid(a.grantor),
          'grantee', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
          'privilege', a.privilege_type, 'grantable', a.is_grantable) ORDER BY a.grantee, a.privilege_type), '[]'::json)
          FROM pg_catalog.aclexplode(m.lomacl) a) END AS grants
       FROM pg_catalog.pg_largeobject_metadata m
       LEFT JOIN pg_catalog.pg_description d ON d.classoid = 'pg_catalog.pg_largeobject'::regclass AND d.objoid = m.oid AND d.objsubid = 0
       WHERE m.oid > $1::oid ORDER BY m.oid LIMIT ${BATCH}`,
      [after],
    )).rows;
    if (batch.length === 0) return;
    for (const object of batch) {
      yield line({ oid: object.oid, owner: object.owner, grants: object.grants, comment: object.comment });
      for (let at = 0; ; at += PIECE) {
        const data = at === 0 ? object.head : (await client.query<{ data: Buffer }>('SELECT pg_catalog.lo_get($1::oid, $2::bigint, $3::int) AS data', [object.oid, at, PIECE])).rows[0]!.data;
        if (data.length > 0) yield line({ oid: object.oid, at, hex: data.toString('hex') });
        if (data.length < PIECE) break;
      }
    }
    after = batch.at(-1)!.oid;
  }
}

function line(value: ObjectLine | PieceLine): Buffer {
  return Buffer.from(`${JSON.stringify(value)}\n`, 'utf8');
}

/**
 * A sink that recreates the large objects of {@link LARGE_OBJECTS_STREAM} with their OIDs, owners,
 * privileges and comments. Owners and grants to a role the server lacks are left out (the object
 * then belongs to the restoring user, which takes the owner's privileges too), the same policy as
 * for schema objects; they are returned by `skipped()`.
 */
export function largeObjectsSink(client: pg.Client, roles: ReadonlySet<string>, refused: (what: string, err: unknown) => Error): StreamTarget & { skipped(): string[] } {
  let carry = '';
  let started = false;
  const skipped: string[] = [];
  // The statements for one line; a chunk's lines go to the server as one script, since a round
  // trip per statement makes many small objects slow.
  const statementsFor = (text: string): { oid: string; sql: string[] } => {
    const value = JSON.parse(text) as ObjectLine | PieceLine;
    if (!/^\d+$/.test(value.oid)) throw new StrataError('ARTIFACT_CORRUPT', `restore: large object line with OID ${JSON.stringify(value.oid)}`);
    const oid = value.oid;
    if ('hex' in value) {
      if (!/^[0-9a-f]*$/.test(value.hex) || !Number.isSafeInteger(value.at)) throw new StrataError('ARTIFACT_CORRUPT', `restore: malformed content line of large object ${oid}`);
      return { oid, sql: [`SELECT pg_catalog.lo_put(${oid}, ${value.at}, '\\x${value.hex}'::bytea);`] };
    }
    const sql = [`SELECT pg_catalog.lo_create(${oid});`];
    const owner = `ALTER LARGE OBJECT ${oid} OWNER TO ${ident(value.owner)};`;
    if (roles.has(value.owner)) sql.push(owner);
    else skipped.push(owner);
    if (value.grants) {
      // The restoring user takes a missing owner's place, its privileges with it (as a table's
      // owner's, whose grants pg_dump writes for the owner to run).
      const ownerRole = roles.has(value.owner) ? ident(value.owner) : 'CURRENT_USER';
      // A recorded ACL replaces the default one, which gives the owner everything.
      sql.push(`REVOKE ALL ON LARGE OBJECT ${oid} FROM ${ownerRole};`);
      for (const g of value.grants) {
        const grantee = g.grantee === 'PUBLIC' ? 'PUBLIC' : g.grantee === value.owner ? ownerRole : ident(g.grantee);
        const grant = `GRANT ${g.privilege} ON LARGE OBJECT ${oid} TO ${grantee}${g.grantable ? ' WITH GRANT OPTION' : ''};`;
        if (g.grantee !== 'PUBLIC' && g.grantee !== value.owner && !roles.has(g.grantee)) skipped.push(grant);
        // The grantor is whoever runs GRANT (the owner when a superuser does): act as the recorded
        // one, unless it is the owner or missing, when the restoring user gives it in its place.
        else if (g.grantor !== value.owner && roles.has(g.grantor)) sql.push(`SET ROLE ${ident(g.grantor)};`, grant, 'RESET ROLE;');
        else sql.push(grant);
      }
    }
    if (value.comment !== null) sql.push(`COMMENT ON LARGE OBJECT ${oid} IS ${literal(value.comment)};`);
    return { oid, sql };
  };
  return {
    kind: 'sink',
    write: async (chunk) => {
      if (!started) {
        started = true;
        // The schema script sets the database's encoding; these statements are the driver's UTF-8.
        await client.query("SELECT pg_catalog.set_config('client_encoding', 'UTF8', false)");
      }
      const text = carry + Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('utf8');
      const lines = text.split('\n');
      carry = lines.pop()!;
      const parts = lines.filter((l) => l !== '').map(statementsFor);
      if (parts.length === 0) return;
      const first = parts[0]!.oid;
      const last = parts.at(-1)!.oid;
      try {
        await client.query(parts.flatMap((p) => p.sql).join('\n'));
      } catch (err) {
        throw refused(first === last ? `large object ${first}` : `large objects ${first} to ${last}`, err);
      }
    },
    end: async () => {
      if (carry !== '') throw new StrataError('ARTIFACT_CORRUPT', 'restore: the large-object stream ends in the middle of a line');
    },
    skipped: () => skipped,
  };
}

/**
 * The verify facts of the large objects, computed by the server: their count, and a SHA-256 over
 * each object's OID, owner, ACL, comment and content (read in 1 MiB pieces), in OID order, so
 * equal sets of objects give equal facts however they are stored.
 */
export async function largeObjectFacts(client: pg.Client): Promise<TableStats> {
  const row = (await client.query<{ n: string; checksum: string }>(`
    SELECT count(*) AS n, encode(sha256(convert_to(coalesce(string_agg(h, E'\\n' ORDER BY oid), ''), 'UTF8')), 'hex') AS checksum
    FROM (
      SELECT m.oid, concat_ws(' ', m.oid::text, pg_catalog.pg_get_userbyid(m.lomowner), m.lomacl::text, quote_nullable(d.description),
        (SELECT string_agg(encode(sha256(pg_catalog.lo_get(m.oid, p * 1048576, 1048576)), 'hex'), '' ORDER BY p)
         FROM generate_series(0::bigint, greatest(s.size - 1, 0) / 1048576) p)) AS h
      FROM pg_catalog.pg_largeobject_metadata m
      CROSS JOIN LATERAL (SELECT pg_catalog.lo_lseek64(pg_catalog.lo_open(m.oid, 262144), 0, 2) AS size) s
      LEFT JOIN pg_catalog.pg_description d ON d.classoid = 'pg_catalog.pg_largeobject'::regclass AND d.objoid = m.oid AND d.objsubid = 0
    ) objects`)).rows[0]!;
  return { name: LARGE_OBJECTS_FACTS, rows: Number(row.n), checksum: row.checksum };
}
