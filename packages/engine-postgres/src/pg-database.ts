import { createHash } from 'node:crypto';
import type pg from 'pg';
import { StrataError, named, redactable, withheld } from '@strata/core';
import { connect, ident, literal, withDatabase } from './pg-connection.js';
import type { PgTarget } from './pg-connection.js';
import { executableSchema, runPgDump } from './pg-schema.js';

/**
 * Stands for the database's name in recorded statements: a restore creates the database under
 * another name and renames it, and verify restores into a scratch database. It is psql's
 * quoted-variable syntax, so `psql -v db=newname` runs the statements by hand as they are.
 */
export const DATABASE_PLACEHOLDER = ':"db"';

/** Where schema.sql records the database's own properties, as comment lines (so psql skips them). */
const SECTION_START = '-- strata: database properties. A restore creates the database with the first statement and applies the others; by hand, remove the leading "-- " and run them with psql -v db=<new name>';
const SECTION_END = '-- strata: end of database properties';

/** The database itself, as `pg_dump --create` describes it: how to create it, and what is set on it. */
export interface DatabaseDescription {
  /** Server encoding; row streams are COPY text in this encoding, so no conversion can lose a byte. */
  readonly encoding: string;
  readonly localeProvider: 'libc' | 'icu' | 'builtin';
  readonly collate: string;
  readonly ctype: string;
  /** The ICU (or, from PostgreSQL 17, builtin provider's) locale; null for libc. */
  readonly icuLocale: string | null;
  /** `CREATE DATABASE :"db" WITH TEMPLATE = template0 ENCODING = ... LOCALE ...;` */
  readonly create: string;
  /**
   * Owner, comment, connection limit, `ALTER DATABASE ... SET`, `ALTER ROLE ... IN DATABASE ...
   * SET`, grants: pg_dump's statements for them, in its order, the name replaced by the placeholder.
   */
  readonly properties: readonly string[];
}

/**
 * Reads the database's properties inside the exported snapshot: pg_dump --create with every schema
 * excluded prints the database's own entries (and a few schema-less objects, left out here).
 */
export async function describeDatabase(client: pg.Client, pgDump: string, target: PgTarget, snapshot: string | undefined): Promise<DatabaseDescription> {
  const dump = await runPgDump(pgDump, target, ['--create', '--schema-only', '--quote-all-identifiers', '--exclude-schema=*', ...(snapshot ? [`--snapshot=${snapshot}`] : [])]);
  const row = (await client.query<{ encoding: string; provider: string; collate: string; ctype: string; icu: string | null }>(
    // PostgreSQL 17 renamed daticulocale to datlocale (shared by the new builtin provider): the
    // row as JSON reads whichever the server has.
    `SELECT pg_encoding_to_char(encoding) AS encoding, datlocprovider AS provider, datcollate AS collate, datctype AS ctype,
            COALESCE(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale') AS icu
     FROM pg_database d WHERE datname = current_database()`,
  )).rows[0]!;
  const name = ident(target.database);
  let create: string | undefined;
  const properties: string[] = [];
  for (const entry of databaseEntries(dump)) {
    for (const statement of entry) {
      const renamed = renameDatabase(statement, name, DATABASE_PLACEHOLDER);
      if (renamed.startsWith('CREATE DATABASE ')) create = renamed;
      else properties.push(renamed);
    }
  }
  if (!create) throw new StrataError('INTERNAL', `postgres: pg_dump --create printed no CREATE DATABASE for ${target.database}`);
  return { encoding: row.encoding, localeProvider: row.provider === 'i' ? 'icu' : row.provider === 'b' ? 'builtin' : 'libc', collate: row.collate, ctype: row.ctype, icuLocale: row.icu, create, properties };
}

/**
 * The statements of pg_dump's entries about the database itself (types DATABASE, DATABASE
 * PROPERTIES, and COMMENT, ACL, SECURITY LABEL on `DATABASE ...`). Each entry is split into its
 * statements: a line ending in `;` ends one, unless it is inside a quoted literal.
 */
function databaseEntries(dump: string): string[][] {
  const entries: string[][] = [];
  let current: string[] | undefined;
  let statement = '';
  for (const line of dump.split('\n')) {
    const header = /^-- (?:Data for )?Name: (.*); Type: (.*); Schema: /.exec(line);
    if (header) {
      const [, name, type] = header;
      const ours = type === 'DATABASE' || type === 'DATABASE PROPERTIES' || (name!.startsWith('DATABASE ') && ['COMMENT', 'ACL', 'SECURITY LABEL'].includes(type!));
      current = ours ? [] : undefined;
      if (current) entries.push(current);
      statement = '';
      continue;
    }
    if (!current) continue;
    if (statement === '' && (line === '' || line.startsWith('--') || line.startsWith('\\') || line.startsWith('SET ') || line.startsWith('SELECT pg_catalog.set_config('))) continue;
    statement = statement === '' ? line : `${statement}\n${line}`;
    // pg_dump doubles quotes inside literals, so an even count of ' means the statement is not inside one.
    if (line.endsWith(';') && (statement.split("'").length - 1) % 2 === 0) {
      current.push(statement);
      statement = '';
    }
  }
  return entries;
}

/**
 * Replaces the database's name where a statement names the database it acts on, and nowhere else
 * (a comment's text may mention the name and must stay as it is).
 */
export function renameDatabase(statement: string, from: string, to: string): string {
  const name = from.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return statement
    .replace(new RegExp(`^((?:CREATE|ALTER|COMMENT ON) DATABASE |SECURITY LABEL FOR \\S+ ON DATABASE )${name}(?=[ ;])`), (_m, head: string) => `${head}${to}`)
    .replace(new RegExp(`^(ALTER ROLE .+? IN DATABASE )${name}(?= )`), (_m, head: string) => `${head}${to}`)
    .replace(new RegExp(`^((?:GRANT|REVOKE) .+? ON DATABASE )${name}(?= (?:TO|FROM) )`), (_m, head: string) => `${head}${to}`);
}

/** The comment-line section schema.sql starts with: readable by a person, skipped by psql. */
export function databaseSection(database: DatabaseDescription): string {
  const lines = [database.create, ...database.properties].flatMap((s) => s.split('\n')).map((line) => `-- ${line}`);
  return `${SECTION_START}\n${lines.join('\n')}\n${SECTION_END}\n\n`;
}

/**
 * The CREATE DATABASE statement recorded in a schema.sql, or undefined for backups made before
 * database properties were recorded (they were restored as UTF-8 with the server's defaults).
 */
export function recordedCreate(schemaSql: string): { create: string; encoding: string } | undefined {
  if (!schemaSql.startsWith(SECTION_START)) return undefined;
  const line = schemaSql.split('\n', 2)[1] ?? '';
  const create = line.startsWith('-- CREATE DATABASE ') ? line.slice(3) : undefined;
  const encoding = create ? /ENCODING = '([^']+)'/.exec(create)?.[1] : undefined;
  if (!create || !encoding) throw new StrataError('ARTIFACT_CORRUPT', 'restore: the database properties in schema.sql do not start with a CREATE DATABASE statement');
  return { create, encoding };
}

/** The schema fingerprint with the database's properties folded in, so verify notices when they are lost. */
export function withDatabaseProperties(schemaFingerprint: string, database: DatabaseDescription): string {
  return createHash('sha256').update(`${schemaFingerprint}\n${database.create}\n${database.properties.join('\n')}`).digest('hex');
}

/** The `database properties` object of schemaObjects: creation (encoding, locale) and everything set on it. */
export function databaseSchemaObjects(database: DatabaseDescription): Record<string, string> {
  return { 'database properties': createHash('sha256').update(`${database.create}\n${database.properties.join('\n')}`).digest('hex') };
}

/**
 * Applies recorded properties to database `name` (before it is renamed into place: properties
 * follow the database, not its name). Statements that name a role the server lacks are left out,
 * as executableSchema does for objects, and returned so the caller can say so.
 */
export async function applyDatabaseProperties(admin: pg.Client, name: string, properties: readonly string[], roles: ReadonlySet<string>): Promise<string[]> {
  const skipped: string[] = [];
  for (const recorded of properties) {
    const statement = renameDatabase(recorded, DATABASE_PLACEHOLDER, ident(name));
    const roleSetting = /^ALTER ROLE "((?:[^"]|"")+)" IN DATABASE /.exec(statement);
    if (roleSetting && !roles.has(roleSetting[1]!.replace(/""/g, '"'))) {
      skipped.push(recorded);
      continue;
    }
    const grantee = /^(?:GRANT|REVOKE) .+? (?:TO|FROM) "((?:[^"]|"")+)"/.exec(statement);
    if (grantee && !roles.has(grantee[1]!.replace(/""/g, '"'))) {
      skipped.push(recorded);
      continue;
    }
    const runnable = executableSchema(statement, roles);
    if (runnable.skipped.length > 0) {
      skipped.push(recorded);
      continue;
    }
    await admin.query(runnable.sql);
  }
  return skipped;
}

/**
 * Drops a database Strata created or replaced, subscriptions first: PostgreSQL refuses to drop a
 * database that has any, and dropping one that still names a replication slot would connect to
 * the publisher and drop the slot, which belongs to the source's subscription. So each is
 * disabled and detached from its slot before it is dropped.
 */
export async function dropDatabase(admin: pg.Client, server: PgTarget, name: string): Promise<void> {
  const subscriptions = (await admin.query<{ name: string }>(
    'SELECT s.subname AS name FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = $1',
    [name],
  )).rows;
  if (subscriptions.length > 0) {
    const inside = await connect(withDatabase(server, name), 'strata cleanup');
    try {
      for (const { name: sub } of subscriptions) {
        await inside.query(`ALTER SUBSCRIPTION ${ident(sub)} DISABLE`);
        await inside.query(`ALTER SUBSCRIPTION ${ident(sub)} SET (slot_name = NONE)`);
        await inside.query(`DROP SUBSCRIPTION ${ident(sub)}`);
      }
    } finally {
      await inside.end().catch(() => undefined);
    }
  }
  await admin.query(`DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`);
}

/**
 * Runs `work` with the session's client_encoding set to `encoding` (COPY text then passes in the
 * database's own encoding, byte for byte), and back to UTF-8 for the driver's own queries after.
 */
export async function inClientEncoding<T>(client: pg.Client, encoding: string, work: () => Promise<T>): Promise<T> {
  await setClientEncoding(client, encoding);
  try {
    return await work();
  } finally {
    await setClientEncoding(client, 'UTF8').catch(() => undefined);
  }
}

/**
 * An identifier quoted for a statement sent while the session's client_encoding is `encoding`.
 * The driver always sends UTF-8, which a LATIN1 session would read as other characters (the COPY
 * of a table `café` then finds no such table), so names that are not plain ASCII go as Unicode
 * escapes (`U&"caf\00E9"`), which the server converts to its own encoding. SQL_ASCII does no
 * conversion at all, so there the UTF-8 bytes are the name's bytes as the driver read them.
 */
export function identInEncoding(name: string, encoding: string): string {
  if (encoding === 'UTF8' || encoding === 'SQL_ASCII' || /^[\x00-\x7f]*$/.test(name)) return ident(name);
  const escaped = [...name]
    .map((c) => {
      const code = c.codePointAt(0)!;
      if (c === '"') return '""';
      if (c === '\\') return '\\\\';
      if (code < 0x80) return c;
      return code > 0xffff ? `\\+${code.toString(16).toUpperCase().padStart(6, '0')}` : `\\${code.toString(16).toUpperCase().padStart(4, '0')}`;
    })
    .join('');
  return `U&"${escaped}"`;
}

/** Sets the session's client_encoding (see {@link inClientEncoding}). */
export async function setClientEncoding(client: pg.Client, encoding: string): Promise<void> {
  await client.query(`SELECT pg_catalog.set_config('client_encoding', $1, false)`, [encoding]);
}

/**
 * Says what a restore left out. An engine has no channel to the user but the process, so this is
 * a Node warning (stderr in the CLI; `process.on('warning')` in a program).
 */
export function reportSkipped(statements: readonly string[]): void {
  if (statements.length === 0) return;
  const shown = statements.slice(0, 5).map((s) => s.split('\n')[0]!.replace(/;$/, '')).join('; ');
  const more = statements.length > 5 ? `, and ${statements.length - 5} more` : '';
  process.emitWarning(`restore: left out ${statements.length} statement(s) naming roles this server does not have (the objects belong to the restoring user): ${shown}${more}`, { code: 'STRATA_ROLE_MISSING' });
}

/** Says which tablespaces the restore left out (see pg-schema.ts withoutTablespaces). */
export function reportTablespacesMissing(names: readonly string[]): void {
  if (names.length === 0) return;
  process.emitWarning(
    `restore: this server has no tablespace ${names.join(', ')}; the tables, indexes or database the backup had there were created in the default tablespace instead. To keep them apart, CREATE TABLESPACE first and restore again`,
    { code: 'STRATA_TABLESPACE_MISSING' },
  );
}

/**
 * Subscriptions come back as pg_dump restores them: disabled, never connected, with no slot
 * created. Their slot_name still names the source's slot, so enabling one would take it over.
 */
export async function reportSubscriptions(client: pg.Client): Promise<void> {
  const names = (await client.query<{ name: string }>('SELECT subname AS name FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1')).rows.map((r) => r.name);
  if (names.length === 0) return;
  process.emitWarning(
    `restore: subscription(s) ${names.join(', ')} restored disabled and not connected (as pg_dump does); check their slot_name before ALTER SUBSCRIPTION ... ENABLE, since it names the source's replication slot`,
    { code: 'STRATA_SUBSCRIPTION_DISABLED' },
  );
}

/**
 * The source's `public` schema, which pg_dump leaves out of its script where it is as initdb made
 * it, assuming the restore's database (created from template0) has it so: it writes its owner,
 * grants and a comment that is there, but neither that the schema is gone (dropped, the objects
 * kept elsewhere) nor that its comment was removed. A restore that kept template0's then differs
 * from the backup in a way verify rightly reports, and never passes.
 */
export interface PublicSchema {
  readonly exists: boolean;
  /** Its comment, null for none (and when it does not exist). */
  readonly comment: string | null;
}

/** What the database (in the backup's snapshot) has of the `public` schema. */
export async function readPublicSchema(client: pg.Client): Promise<PublicSchema> {
  const row = (await client.query<{ comment: string | null }>("SELECT obj_description(oid, 'pg_namespace') AS comment FROM pg_namespace WHERE nspname = 'public'")).rows[0];
  return { exists: row !== undefined, comment: row?.comment ?? null };
}

/**
 * Makes the restored database's `public` schema what the source's was: dropped when the source had
 * none (template0's is empty; a restore that put something there fails here, named), and with the
 * source's comment, none included. Runs after the pre-data script, which sets owner, grants and a
 * comment the source had.
 */
export async function matchPublicSchema(client: pg.Client, target: PgTarget, recorded: PublicSchema): Promise<void> {
  const restored = await readPublicSchema(client);
  if (!recorded.exists) {
    if (!restored.exists) return;
    try {
      await client.query('DROP SCHEMA public RESTRICT');
    } catch (err) {
      throw new StrataError(
        'RESTORE_FAILED',
        redactable`restore: the source database had no schema public, and the restored one has it with objects in it, so it cannot be dropped (${withheld((err as Error).message, 'server message')}); nothing was changed`,
        { cause: err, details: { pgCode: (err as { code?: string }).code, host: target.host, port: target.port } },
      );
    }
    return;
  }
  if (restored.exists && restored.comment !== recorded.comment) await client.query(`COMMENT ON SCHEMA public IS ${recorded.comment === null ? 'NULL' : literal(recorded.comment)}`);
}

/** An event trigger of a restored database that was switched on, with its mode (O, R or A, as pg_event_trigger.evtenabled). */
export interface EventTriggerSwitch {
  readonly name: string;
  readonly mode: string;
}

/**
 * Switches off the restored database's event triggers, for the statements the restore itself runs
 * after the post-data script created them (pg_dump writes event triggers last but for their
 * owners and comments, which fire none). A REFRESH MATERIALIZED VIEW fires ddl_command_start and
 * ddl_command_end: a trigger that logs DDL would add rows the backup never had (and fail the
 * restore when its function names its table unqualified, under pg_dump's empty search_path), one
 * that forbids DDL would fail every restore. Returns those switched off, for
 * {@link switchOnEventTriggers}; only their owner (a superuser, as for creating them) may.
 */
export async function switchOffEventTriggers(client: pg.Client): Promise<EventTriggerSwitch[]> {
  const enabled = (await client.query<{ name: string; mode: string }>("SELECT evtname AS name, evtenabled::text AS mode FROM pg_event_trigger WHERE evtenabled <> 'D' ORDER BY 1")).rows;
  for (const { name } of enabled) await client.query(`ALTER EVENT TRIGGER ${ident(name)} DISABLE`);
  return enabled;
}

/** Switches the event triggers back on, each in the mode it had (ALTER EVENT TRIGGER fires none). */
export async function switchOnEventTriggers(client: pg.Client, switches: readonly EventTriggerSwitch[]): Promise<void> {
  const how: Record<string, string> = { O: 'ENABLE', R: 'ENABLE REPLICA', A: 'ENABLE ALWAYS' };
  for (const { name, mode } of switches) {
    const action = how[mode];
    if (!action) throw new StrataError('INTERNAL', redactable`restore: event trigger ${named(name, 'event trigger')} had the unknown mode ${mode}`);
    await client.query(`ALTER EVENT TRIGGER ${ident(name)} ${action}`);
  }
}

/**
 * An enabled subscription keeps a worker connected to its database, so the database cannot be
 * renamed away; and disabling it for the user would change the target before the restore is sure
 * to succeed. So the restore refuses up front and says what to do.
 */
export async function refuseEnabledSubscriptions(admin: pg.Client, database: string): Promise<void> {
  const enabled = (await admin.query<{ name: string }>(
    'SELECT s.subname AS name FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = $1 AND s.subenabled ORDER BY 1',
    [database],
  )).rows.map((r) => r.name);
  if (enabled.length === 0) return;
  throw new StrataError(
    'DATABASE_LOCKED',
    redactable`restore: ${database} has enabled subscription(s) ${named(enabled, 'subscription')}, whose workers keep it open; disable them (ALTER SUBSCRIPTION ... DISABLE) and run the restore again (the restored database has them disabled)`,
    { details: { subscriptions: enabled } },
  );
}
