import type mysql from 'mysql2/promise';
import { StrataError, redactable, withheld } from '@strata/core';
import type { Withheld } from '@strata/core';
import { ident } from './mysql-connection.js';
import { eventDisabled, inDatabase, isDataStatement, routinesOf, unqualifiedTrigger } from './mysql-schema.js';
import type { MysqlSchema } from './mysql-schema.js';

/**
 * The programmable objects of a MySQL database (routines, views, triggers, events), run and
 * dropped the way a restore needs: by the restore itself, and by the sweep that finishes or
 * undoes the swap of a restore that was killed.
 */

/**
 * Session of every restore: no foreign key checks while tables fill, explicit zero ids kept,
 * strict so that a value the target cannot hold fails instead of being changed, and history rows
 * of system-versioned tables written with their own period. ALLOW_INVALID_DATES takes a DATE or DATETIME
 * with a day its month lacks ('2021-02-31'), which a source under that mode stores and strict
 * mode refuses; it is stored as given (month and day still 1-12 and 1-31, TIMESTAMP still checked),
 * so the restore writes nothing the source did not hold.
 */
export const RESTORE_SESSION =
  "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES,ALLOW_INVALID_DATES', FOREIGN_KEY_CHECKS = 0, UNIQUE_CHECKS = 0, system_versioning_insert_history = 1";

/**
 * Session of a whole-database restore: RESTORE_SESSION without CHECK constraint checks, as without
 * foreign key checks. The constraints are the source's and so are the rows, which may break one
 * that was added with check_constraint_checks = 0; refusing them would make the backup
 * unrestorable, and verify compares every row with the source's. Not for a restore of some tables
 * (--tables): it loads into the target's own definitions, whose constraints may be newer than the
 * backup.
 */
export const DATABASE_RESTORE_SESSION = `${RESTORE_SESSION}, check_constraint_checks = 0`;

/**
 * Session of a restore of some tables (--tables): RESTORE_SESSION with unique and CHECK constraint
 * checks on, whatever the server's defaults, since the rows go into the target's own definitions,
 * which may have gained a UNIQUE key (or a collation that makes two values alike) or a CHECK
 * constraint since the backup: InnoDB then reports a duplicate as one, naming the key, where
 * without unique checks it fails at commit with no word of why.
 */
export const TABLE_RESTORE_SESSION = `${RESTORE_SESSION}, UNIQUE_CHECKS = 1, check_constraint_checks = 1`;

/**
 * Session in which a restore creates tables and sequences: as mysqldump's output creates them,
 * without strict mode, in which the server refuses some definitions it holds (an ENUM whose
 * members differ only in trailing spaces, stored as duplicates: only a warning otherwise). Rows
 * are then loaded under RESTORE_SESSION again. ALLOW_INVALID_DATES, as there: a column's default
 * may be such a date ('2021-02-31').
 */
export const CREATE_SESSION = "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,ALLOW_INVALID_DATES'";

/** Table kinds that RENAME TABLE moves between databases. */
const MOVABLE_TYPES = "('BASE TABLE', 'SYSTEM VERSIONED', 'SEQUENCE')";

export async function movableTables(connection: mysql.Connection, database: string): Promise<string[]> {
  const [rows] = await connection.query<mysql.RowDataPacket[]>(
    `SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE IN ${MOVABLE_TYPES} ORDER BY TABLE_NAME`,
    [database],
  );
  return rows.map((r) => r['name'] as string);
}

/** Groups post-data statements with the SET SESSION of original settings that precedes each. */
function unitsOf(schema: MysqlSchema, statements: readonly string[], database: string): string[][] {
  const units: string[][] = [];
  let context: string | undefined;
  for (const statement of statements) {
    if (/^SET SESSION /i.test(statement)) context = statement;
    else {
      // The statement was read under the settings before it: NO_BACKSLASH_ESCAPES among them changes what ends a string.
      const sql = inDatabase(schema, statement, database, context);
      units.push(context ? [context, sql] : [sql]);
      context = undefined;
    }
  }
  return units;
}

function objectOf(unit: readonly string[]): string {
  const sql = unit.at(-1)!;
  const match = /^CREATE\b[\s\S]*?\b(VIEW|TRIGGER|EVENT|FUNCTION|PROCEDURE|PACKAGE BODY|PACKAGE)\s+((?:`(?:[^`]|``)+`\.)?(?:`(?:[^`]|``)+`|\S+))/i.exec(sql);
  return match ? `${match[1]!.toLowerCase()} ${match[2]!}` : sql.slice(0, 60);
}

/** The server's words about a refused statement: they quote names and values, so files keep only its code. */
export function serverMessage(err: unknown): Withheld {
  const e = err as { message?: string; code?: string };
  return withheld(e.message ?? String(err), `server message ${e.code ?? ''}`.trim());
}

export async function runUnit(connection: mysql.Connection, unit: readonly string[], database: string): Promise<void> {
  try {
    for (const sql of unit) await connection.query(sql);
  } catch (err) {
    throw new StrataError('RESTORE_FAILED', redactable`restore: the target refused ${withheld(objectOf(unit), 'object')} in database ${database}: ${serverMessage(err)}`, { cause: err });
  }
  // Statements restored under their original settings must not leave them to the next one.
  await connection.query(RESTORE_SESSION);
}

/**
 * Runs routines and the post-data statements (views, triggers, events) in `database`. With
 * `disabledEvents`, events are created disabled and their statuses recorded there.
 */
export async function runProgrammable(connection: mysql.Connection, database: string, schema: MysqlSchema, options: { events: boolean; disabledEvents?: Map<string, string> }): Promise<void> {
  await connection.query(`USE ${ident(database)}`);
  for (const unit of unitsOf(schema, schema.pre.filter((s) => !isDataStatement(s)), database)) await runUnit(connection, unit, database);
  // EVENT on the statement's first line before any other kind of object: a trigger's body that
  // mentions events (even a commented-out CREATE EVENT line) is not one.
  const mayBeEvent = (u: readonly string[]): boolean => /^CREATE\b(?:(?!\b(?:TRIGGER|VIEW|PROCEDURE|FUNCTION|TABLE|SEQUENCE)\b)[^\n])*\bEVENT\b/i.test(u.at(-1)!);
  const disable = (unit: string[]): string[] => {
    if (!options.disabledEvents) return unit;
    const disabled = eventDisabled(unit.at(-1)!);
    if (!disabled) {
      // An event this cannot read would be created enabled: refused, since the scratch database
      // lives on the source's server.
      if (mayBeEvent(unit)) throw new StrataError('ARTIFACT_FOREIGN', redactable`restore: cannot tell whether ${withheld(objectOf(unit), 'object')} creates an event (its statement is not as SHOW CREATE EVENT writes one), so it cannot be created disabled in verify's scratch database`);
      return unit;
    }
    options.disabledEvents.set(disabled.name, disabled.status);
    return [...unit.slice(0, -1), disabled.sql];
  };
  const units = unitsOf(schema, schema.post, database)
    .filter((u) => options.events || !mayBeEvent(u))
    .map(disable)
    // Backups from before readSchema dropped it still name the source database in a trigger's head.
    .map((u) => [...u.slice(0, -1), unqualifiedTrigger(u.at(-1)!)]);
  const isView = (u: readonly string[]): boolean => /^CREATE\b[\s\S]*?\bVIEW\b/i.test(u.at(-1)!);
  // A view may name another view created later; retry until no statement makes progress.
  await runUntilNoProgress(connection, units.filter(isView), database);
  // Triggers in the order of the list: that order is their action order. Backups made before
  // that order was recorded list them by name, some with FOLLOWS/PRECEDES naming a trigger later
  // in the list; those are retried once the others exist, as that release restored them.
  await runUntilNoProgress(connection, units.filter((u) => !isView(u)), database);
}

/** Runs the units in order, then those that failed again, until all ran or a round makes no progress. */
async function runUntilNoProgress(connection: mysql.Connection, units: readonly string[][], database: string): Promise<void> {
  let pending = units;
  while (pending.length > 0) {
    const failed: { unit: string[]; err: unknown }[] = [];
    for (const unit of pending) {
      try {
        await runUnit(connection, unit, database);
      } catch (err) {
        failed.push({ unit, err });
      }
    }
    if (failed.length === pending.length) throw failed[0]!.err;
    pending = failed.map((f) => f.unit);
  }
}

/** Column defaults that name the work database (DEFAULT NEXT VALUE FOR a sequence) name the target instead. */
export async function retargetDefaults(connection: mysql.Connection, from: string, to: string): Promise<void> {
  const [columns] = await connection.query<mysql.RowDataPacket[]>(
    'SELECT TABLE_NAME AS t, COLUMN_NAME AS c, COLUMN_DEFAULT AS d FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND INSTR(COLUMN_DEFAULT, ?) > 0',
    [to, `${ident(from)}.`],
  );
  for (const col of columns) {
    const expression = String(col['d']).replaceAll(`${ident(from)}.`, `${ident(to)}.`);
    await connection.query(`ALTER TABLE ${ident(to)}.${ident(col['t'])} ALTER COLUMN ${ident(col['c'])} SET DEFAULT ${expression}`);
  }
}

/** Drops views, routines, triggers and events of a database (before its tables are replaced). */
export async function dropProgrammable(admin: mysql.Connection, database: string): Promise<void> {
  await admin.query(`USE ${ident(database)}`);
  const [views] = await admin.query<mysql.RowDataPacket[]>("SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'VIEW'", [database]);
  for (const v of views) await admin.query(`DROP VIEW IF EXISTS ${ident(v['name'])}`);
  const [triggers] = await admin.query<mysql.RowDataPacket[]>('SHOW TRIGGERS');
  for (const t of triggers) await admin.query(`DROP TRIGGER IF EXISTS ${ident(t['Trigger'])}`);
  const [events] = await admin.query<mysql.RowDataPacket[]>('SHOW EVENTS');
  for (const e of events) await admin.query(`DROP EVENT IF EXISTS ${ident(e['Name'])}`);
  for (const kind of ['FUNCTION', 'PROCEDURE'] as const) {
    for (const name of await routinesOf(admin, kind, database)) await admin.query(`DROP ${kind} IF EXISTS ${ident(name)}`);
  }
  // DROP PACKAGE (which drops its body too) is known only under sql_mode ORACLE, as CREATE PACKAGE is.
  const packages = await routinesOf(admin, 'PACKAGE', database);
  if (packages.length > 0) {
    await admin.query("SET @strata_sql_mode = @@SESSION.sql_mode, SESSION sql_mode = 'ORACLE'");
    try {
      for (const name of packages) await admin.query(`DROP PACKAGE IF EXISTS ${ident(name)}`);
    } finally {
      await admin.query('SET SESSION sql_mode = @strata_sql_mode');
    }
  }
}
