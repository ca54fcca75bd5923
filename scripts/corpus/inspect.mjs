// What the corpus compares between databases, read from the server and its own dump tool only
// (never from Strata): the schema as `pg_dump --schema-only` prints it, split into its entries;
// every table's and materialized view's rows FROM ONLY as sorted text (columns in name order);
// sequence states; large objects; and object counts for the report.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import pg from 'pg';

// Every value's text depends on session settings; pin them so that a database-level setting
// (which a pg_restore without --create does not carry over) cannot make equal data look different.
const sessionSettings = [
  "SET DateStyle = 'ISO, MDY'",
  "SET IntervalStyle = 'postgres'",
  "SET TimeZone = 'UTC'",
  'SET extra_float_digits = 3',
  "SET bytea_output = 'hex'",
  "SET lc_monetary = 'C'",
  "SET xmloption = 'content'",
  // reg* values print schema-qualified only when the schema is not on the path.
  'SET search_path = pg_catalog',
];

const userSchemas = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'`;

async function connect(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  for (const statement of sessionSettings) await client.query(statement);
  return client;
}

/**
 * Runs `pg_dump --schema-only` and splits it into entries keyed by their "-- Name: ...; Type:
 * ...; Schema: ..." header (the owner and tablespace stay in the entry's text, so a changed owner
 * shows as a changed entry rather than a missing one). The database's own name becomes
 * `canonicalName` so that dumps of differently named copies compare.
 * @returns {Map<string, string>}
 */
export function schemaEntries(env, database, canonicalName) {
  const result = spawnSync('pg_dump', ['--schema-only', '--no-sync', '-d', database], { env, encoding: 'utf8', maxBuffer: 512 * 1024 * 1024 });
  if (result.status !== 0) throw new Error(`pg_dump --schema-only ${database} failed: ${result.stderr.trim()}`);
  const text = database === canonicalName ? result.stdout : result.stdout.replaceAll(new RegExp(`\\b${database}\\b`, 'g'), canonicalName);
  const entries = new Map();
  let key = 'preamble';
  let lines = [];
  const flush = () => {
    // \restrict and \unrestrict carry a random key per dump (pg_dump 15.14 and later).
    const body = lines.filter((l) => l !== '--' && !l.startsWith('-- Dumped ') && !/^\\(un)?restrict /.test(l)).join('\n').trim();
    let unique = key;
    for (let n = 2; entries.has(unique); n++) unique = `${key} #${n}`;
    entries.set(unique, body);
  };
  for (const line of text.split('\n')) {
    const header = line.match(/^-- (?:Data for )?Name: (.*); Type: (.*?); Schema: (.*?); Owner: (.*?)(?:; Tablespace: (.*))?$/);
    if (header) {
      flush();
      const [, name, type, schema, owner, tablespace] = header;
      key = `${type} ${name}${schema === '-' ? '' : ` in schema ${schema}`}`;
      lines = [`-- owner ${owner}${tablespace ? `, tablespace ${tablespace}` : ''}`];
    } else {
      lines.push(line);
    }
  }
  flush();
  return entries;
}

/**
 * Lists the relations whose rows are compared (tables, also partitioned ones, and materialized
 * views), each with its columns in name order: pg_dump itself recreates an inheritance child with
 * its parent's columns first, so values are compared by column name, and the column order is left
 * to the schema comparison.
 */
async function rowRelations(client, only) {
  const { rows } = await client.query(`
    SELECT format('%I.%I', n.nspname, c.relname) AS name,
           coalesce((SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attname COLLATE "C")
                     FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') AS columns
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm') AND ${userSchemas} ${only ? 'AND c.oid = $1::regclass' : ''}
    ORDER BY 1`, only ? [only] : []);
  return rows;
}

function rowQuery({ name, columns }) {
  return `SELECT ROW(${columns})::text AS line FROM ONLY ${name}`;
}

/**
 * A fingerprint per table and materialized view of its own rows (FROM ONLY) as sorted text, plus
 * sequence states and large objects, each under a key such as `rows public.t`.
 * @returns {Promise<{ fingerprints: Map<string, string>, rowCounts: Map<string, number> }>}
 */
export async function dataFingerprints(url) {
  const client = await connect(url);
  const fingerprints = new Map();
  const rowCounts = new Map();
  try {
    for (const relation of await rowRelations(client)) {
      const { name } = relation;
      try {
        const { rows } = await client.query(`
          SELECT count(*)::bigint AS n, md5(coalesce(string_agg(line, E'\\n' ORDER BY line COLLATE "C"), '')) AS digest
          FROM (${rowQuery(relation)}) s`);
        fingerprints.set(`rows ${name}`, `${rows[0].n} rows, md5 ${rows[0].digest}`);
        rowCounts.set(name, Number(rows[0].n));
      } catch (error) {
        fingerprints.set(`rows ${name}`, `cannot be read: ${error.message}`);
      }
    }
    const sequences = await client.query(`
      SELECT format('%I.%I', n.nspname, c.relname) AS name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'S' AND ${userSchemas} ORDER BY 1`);
    for (const { name } of sequences.rows) {
      const { rows } = await client.query(`SELECT last_value::text, is_called FROM ${name}`);
      fingerprints.set(`sequence ${name}`, `last_value ${rows[0].last_value}, is_called ${rows[0].is_called}`);
    }
    const blobs = await client.query(`
      SELECT l.oid::text AS oid, pg_get_userbyid(l.lomowner) AS owner, coalesce(l.lomacl::text, '') AS acl,
             md5(lo_get(l.oid)) AS digest, length(lo_get(l.oid)) AS bytes,
             coalesce(obj_description(l.oid, 'pg_largeobject'), '') AS comment
      FROM pg_largeobject_metadata l ORDER BY l.oid`);
    for (const b of blobs.rows) {
      fingerprints.set(`large object ${b.oid}`, `${b.bytes} bytes, md5 ${b.digest}, owner ${b.owner}, acl ${b.acl || '-'}, comment ${JSON.stringify(b.comment)}`);
    }
  } finally {
    await client.end();
  }
  return { fingerprints, rowCounts };
}

/** The sorted text lines of one relation's own rows, for showing what differs, and its columns in the lines' order. */
export async function sortedRows(url, name) {
  const client = await connect(url);
  try {
    const [relation] = await rowRelations(client, name);
    if (relation === undefined) return { columns: '', lines: ['(no such table)'] };
    const { rows } = await client.query(`SELECT line FROM (${rowQuery(relation)}) s ORDER BY line COLLATE "C"`);
    return { columns: relation.columns, lines: rows.map((r) => r.line) };
  } catch (error) {
    return { columns: '', lines: [`(cannot be read: ${error.message})`] };
  } finally {
    await client.end();
  }
}

/** Object counts of a database, for the report. */
export async function objectCounts(url) {
  const client = await connect(url);
  try {
    const { rows } = await client.query(`
      SELECT
        (SELECT count(*) FROM pg_namespace n WHERE ${userSchemas}) AS schemas,
        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND ${userSchemas}) AS tables,
        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p' AND ${userSchemas}) AS partitioned_tables,
        (SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind IN ('r', 'p', 'f')) AS inheritance_links,
        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'f' AND ${userSchemas}) AS foreign_tables,
        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('i', 'I') AND ${userSchemas}) AS indexes,
        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'v' AND ${userSchemas}) AS views,
        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND ${userSchemas}) AS materialized_views,
        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND ${userSchemas}) AS sequences,
        (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ${userSchemas}) AS functions,
        (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace LEFT JOIN pg_class c ON c.oid = t.typrelid
          WHERE ${userSchemas} AND t.typtype IN ('b', 'c', 'd', 'e', 'r', 'm') AND (t.typrelid = 0 OR c.relkind = 'c')
            AND NOT (t.typelem <> 0 AND t.typname LIKE '\\_%')) AS types,
        (SELECT count(*) FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace WHERE ${userSchemas}) AS constraints,
        (SELECT count(*) FROM pg_trigger g WHERE NOT g.tgisinternal) AS triggers,
        (SELECT count(*) FROM pg_rewrite r WHERE r.rulename <> '_RETURN' AND r.ev_class >= 16384) AS rules,
        (SELECT count(*) FROM pg_policy) AS policies,
        (SELECT count(*) FROM pg_extension) AS extensions,
        (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects,
        pg_database_size(current_database()) AS bytes`);
    return Object.fromEntries(Object.entries(rows[0]).map(([k, v]) => [k, Number(v)]));
  } finally {
    await client.end();
  }
}

/** A short digest of a text, for keys too long to print. */
export function shortHash(text) {
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}
