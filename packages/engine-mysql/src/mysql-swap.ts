import { createHash } from 'node:crypto';
import type mysql from 'mysql2/promise';
import { StrataError, checkLockWait, errorText, redactable } from '@strata/core';
import type { WorkDatabaseName } from '@strata/core';
import { connect, ident } from './mysql-connection.js';
import type { MysqlTarget } from './mysql-connection.js';
import { RESTORE_SESSION, dropProgrammable, retargetDefaults, runProgrammable, runUnit } from './mysql-objects.js';
import { databaseOptions, parseSchemaText, readSchema, showCreate, withoutTriggerOrder } from './mysql-schema.js';

/**
 * The swap at the end of a restore into an existing MySQL database, made so that a process
 * killed at any point leaves the target whole, or a record from which the next run makes it so.
 *
 * Triggers cannot move between databases with their tables, and the replaced tables must leave
 * the target's names: so one RENAME TABLE parks the target's tables under free names in the
 * target itself (their triggers go with them) and moves the restored ones in. Until it is done,
 * nothing of the target has changed: however long it waits for another session's lock, the live
 * database keeps its tables, triggers, views, routines and events, and a process killed while it
 * waits leaves it as it was. After it, the parked tables lose their triggers and move into the
 * aside database, and the target's routines, views, triggers and events are made what the
 * restore gives it.
 *
 * Before the swap, the aside database is created with a {@link SwapRecord} in it: the names of
 * the parked tables, the definitions of the objects the target has, and those it gets after the
 * swap. The next run's sweep ({@link settleSwap}) reads it: if the restore died after its swap,
 * it finishes it from the record; if before, the target is as it was (whatever of it a failed
 * restore dropped while putting it back is recreated from the record).
 */

/** How long the swap waits for other sessions to let go of the tables it moves (the session's lock_wait_timeout). */
export const SWAP_LOCK_WAIT_SECONDS = 30;

/** The comment that marks the table of an aside database holding its restore's record. */
const RECORD_COMMENT = 'strata: the record of a restore swap (do not edit)';

/**
 * A table of the target that the swap moves out: its name, and the free name it is parked under
 * in the target; without one, it goes straight into the aside database.
 */
export interface ParkedTable {
  readonly table: string;
  readonly as?: string;
}

/** A trigger by name, and the statements (its session settings, its CREATE) that create it. */
export interface SavedTrigger {
  readonly name: string;
  readonly unit: string[];
}

/** What the target's objects were before a whole-database swap, and what the backup gives it after. */
export interface DatabaseObjects {
  readonly kind: 'database';
  /** The target's schema.sql as readSchema read it before the swap. */
  readonly before: string;
  /** The keys (`view v`, `trigger t`, `routine function f`, `event e`) of the objects in `before`. */
  readonly beforeObjects: readonly string[];
  /** The backup's schema.sql: its routines, views, triggers, events and database charset. */
  readonly after: string;
}

/** The triggers of the tables a table restore replaces, in action order: the target's own, recreated on the new tables. */
export interface TableTriggers {
  readonly kind: 'tables';
  readonly triggers: readonly SavedTrigger[];
}

/** What the aside database of a restore holds about its swap. */
export interface SwapRecord {
  readonly format: 1;
  /** The database restored into. */
  readonly database: string;
  /** The restore's work database, where the restored tables wait until the swap. */
  readonly work: string;
  readonly parked: readonly ParkedTable[];
  /** The triggers of the tables that go straight into the aside database, dropped just before the swap (in action order). */
  readonly dropped: readonly SavedTrigger[];
  /** The tables the swap moves from the work database into the target. */
  readonly incoming: readonly string[];
  readonly objects: DatabaseObjects | TableTriggers;
  /** The restore's connection: its id, and when the server it runs on started (seconds since 1970). */
  readonly session: { readonly id: number; readonly serverStarted: number };
}

/** Names in `prefix`, `prefix_1`, ... that are not in `taken` (and then are). */
function freeName(prefix: string, taken: Set<string>): string {
  let name = prefix;
  for (let n = 1; taken.has(name); n++) name = `${prefix}_${n}`;
  taken.add(name);
  return name;
}

/**
 * Where each of `tables` (of `database`) goes in the swap, and the triggers to drop before it.
 * A table with triggers is parked in the target under a short free name, its triggers with it (a
 * foreign key named after its table, `child_ibfk_1`, is renamed with it and must stay within the
 * 64 characters of an identifier). Foreign key names are unique in a database, so a table with a
 * foreign key named otherwise (`CONSTRAINT fk_author`) cannot wait there beside its replacement:
 * like a table without triggers it goes straight into the aside database, and its triggers, which
 * cannot leave the database, are dropped just before the swap.
 */
export async function swapPlan(connection: mysql.Connection, database: string, tables: readonly string[], taken: Iterable<string>): Promise<{ parked: ParkedTable[]; dropped: SavedTrigger[] }> {
  if (tables.length === 0) return { parked: [], dropped: [] };
  const placeholders = tables.map(() => '?').join(', ');
  const [triggerRows] = await connection.query<mysql.RowDataPacket[]>(
    `SELECT TRIGGER_NAME AS name, EVENT_OBJECT_TABLE AS tableName FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE IN (${placeholders}) ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER`,
    [database, ...tables],
  );
  const [keyRows] = await connection.query<mysql.RowDataPacket[]>(
    `SELECT TABLE_NAME AS tableName, CONSTRAINT_NAME AS name FROM information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND CONSTRAINT_TYPE = 'FOREIGN KEY' AND TABLE_NAME IN (${placeholders})`,
    [database, ...tables],
  );
  const withTriggers = new Set(triggerRows.map((r) => r['tableName'] as string));
  const namedKeys = new Set(keyRows.filter((r) => !String(r['name']).startsWith(`${String(r['tableName'])}_ibfk_`)).map((r) => r['tableName'] as string));
  const used = new Set(taken);
  for (const t of tables) used.add(t);
  const parked = tables.map((table) => (withTriggers.has(table) && !namedKeys.has(table) ? { table, as: freeName('__strata_old', used) } : { table }));
  const direct = new Set(parked.filter((p) => p.as === undefined).map((p) => p.table));
  await connection.query(`USE ${ident(database)}`);
  const dropped: SavedTrigger[] = [];
  for (const t of triggerRows.filter((r) => direct.has(r['tableName'] as string))) dropped.push(await savedTrigger(connection, t['name'] as string));
  return { parked, dropped };
}

/** A trigger of the current database, as the statements that recreate it (without FOLLOWS/PRECEDES: triggers are created in their order). */
export async function savedTrigger(connection: mysql.Connection, name: string): Promise<SavedTrigger> {
  const [context, create] = (await showCreate(connection, 'TRIGGER', name, 'SQL Original Statement')).split('\n;;\n');
  return { name, unit: create === undefined ? [withoutTriggerOrder(context!)] : [context!, withoutTriggerOrder(create)] };
}

/**
 * Creates the aside database with the record in it, in one INSERT: a process killed before that
 * leaves an aside database without a record, and a target nothing was done to.
 */
export async function saveSwapRecord(connection: mysql.Connection, aside: string, record: Omit<SwapRecord, 'session'>): Promise<SwapRecord> {
  // The server goes on with a statement whose client died (a RENAME TABLE waiting for a lock runs
  // once it gets it): the sweep ends that session before it looks. Its id names another session
  // after the server restarted, which the server's start time tells.
  const [[id]] = (await connection.query<mysql.RowDataPacket[]>('SELECT CONNECTION_ID() AS id')) as unknown as [mysql.RowDataPacket[]];
  const full: SwapRecord = { ...record, session: { id: Number(id!['id']), serverStarted: await serverStarted(connection) } };
  await connection.query(`CREATE DATABASE ${ident(aside)} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  // The old tables join it under their own names: the record's must differ from all of them.
  const table = freeName('__strata_swap', new Set(record.parked.map((p) => p.table)));
  await connection.query(`CREATE TABLE ${ident(aside)}.${ident(table)} (record LONGTEXT NOT NULL, phase VARCHAR(16) NOT NULL DEFAULT 'prepared') ENGINE=InnoDB COMMENT ${connection.escape(RECORD_COMMENT)}`);
  await connection.query(`INSERT INTO ${ident(aside)}.${ident(table)} (record) VALUES (?)`, [JSON.stringify(full)]);
  return full;
}

/** When the server started, in seconds since 1970 (to within a second or two). */
async function serverStarted(connection: mysql.Connection): Promise<number> {
  const [[uptime]] = (await connection.query<mysql.RowDataPacket[]>("SHOW GLOBAL STATUS LIKE 'Uptime'")) as unknown as [mysql.RowDataPacket[]];
  return Math.floor(Date.now() / 1000) - Number(uptime?.['Value'] ?? 0);
}

/**
 * How far a restore got, as its record says: `prepared` until the restore saw its swap done,
 * then `swapped`; `undoing` once it began to put the target back; `finished` once the target has
 * everything (only the aside database is left to drop).
 */
type SwapPhase = 'prepared' | 'swapped' | 'undoing' | 'finished';

/**
 * How long the steps after the swap wait for a lock (a session reading a restored table): they
 * must not give up as easily as the swap, which changes nothing when it gives up, while these
 * would leave the target without its views, routines, triggers or events.
 */
const FINISH_LOCK_WAIT_SECONDS = 600;

async function setPhase(connection: mysql.Connection, aside: string, phase: SwapPhase): Promise<void> {
  const table = await recordTable(connection, aside);
  if (table !== undefined) await connection.query(`UPDATE ${ident(aside)}.${ident(table)} SET phase = ?`, [phase]);
}

/**
 * Ends the session of the restore that made the record, if the server still runs a statement of
 * it, and waits until it is gone: a RENAME TABLE still waiting for a lock must not swap the
 * tables while (or after) the sweep settles them.
 */
async function endRestoreSession(connection: mysql.Connection, record: SwapRecord): Promise<void> {
  if (Math.abs((await serverStarted(connection)) - record.session.serverStarted) > 5) return;
  const running = async (): Promise<boolean> =>
    (await connection.query<mysql.RowDataPacket[]>('SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = ?', [record.session.id]))[0].length > 0;
  if (!(await running())) return;
  await connection.query(`KILL CONNECTION ${record.session.id}`).catch((err: { errno?: number }) => {
    // 1094: unknown thread, it ended meanwhile.
    if (err.errno !== 1094) throw err;
  });
  for (let waited = 0; await running(); waited += 100) {
    if (waited > SWAP_LOCK_WAIT_SECONDS * 1000) throw new Error(`session ${record.session.id} of that restore still runs on the server after KILL CONNECTION`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The table of an aside database that holds its record, or undefined when it has none (made by an older Strata). */
async function recordTable(connection: mysql.Connection, aside: string): Promise<string | undefined> {
  const [tables] = await connection.query<mysql.RowDataPacket[]>('SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_COMMENT = ?', [aside, RECORD_COMMENT]);
  return tables[0]?.['name'] as string | undefined;
}

/**
 * The record an aside database holds and whether its restore began to undo the swap, with the
 * name of its table; undefined for an aside database without one (an older Strata's).
 */
async function readSwapRecord(connection: mysql.Connection, aside: string): Promise<{ table: string; record: SwapRecord | undefined; phase: SwapPhase } | undefined> {
  const table = await recordTable(connection, aside);
  if (table === undefined) return undefined;
  const [rows] = await connection.query<mysql.RowDataPacket[]>(`SELECT record, phase FROM ${ident(aside)}.${ident(table)}`);
  const text = rows[0]?.['record'] as string | undefined;
  if (text === undefined) return { table, record: undefined, phase: 'prepared' };
  const record = JSON.parse(text) as SwapRecord;
  if (record.format !== 1) throw new StrataError('ARTIFACT_FOREIGN', `the record in ${aside} is of format ${String(record.format)}, which this Strata does not know; settle it with the Strata that made it`);
  return { table, record, phase: rows[0]!['phase'] as SwapPhase };
}

/** The names of the tables, views and sequences of `database`. */
export async function tableNames(connection: mysql.Connection, database: string): Promise<Set<string>> {
  const [rows] = await connection.query<mysql.RowDataPacket[]>('SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [database]);
  return new Set(rows.map((r) => r['name'] as string));
}

/**
 * Whether the swap was done, read from where the tables are (RENAME TABLE moves all or none):
 * the target's old tables parked in the target or moved on into the aside database, or, when
 * the target had none, the restored ones gone from the work database.
 */
async function swapDone(connection: mysql.Connection, record: SwapRecord, aside: string): Promise<boolean> {
  if (record.parked.length > 0) {
    const inTarget = await tableNames(connection, record.database);
    const inAside = await tableNames(connection, aside);
    return record.parked.some((p) => (p.as !== undefined && inTarget.has(p.as)) || inAside.has(p.table));
  }
  const inWork = await tableNames(connection, record.work);
  return !record.incoming.some((t) => inWork.has(t));
}

/** Sessions with an open transaction: those that may hold the locks a swap waits for. */
async function openTransactions(connection: mysql.Connection): Promise<string[]> {
  const [rows] = await connection.query<mysql.RowDataPacket[]>(
    'SELECT DISTINCT trx_mysql_thread_id AS id FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID() ORDER BY trx_mysql_thread_id',
  );
  return rows.map((r) => String(r['id']));
}

/**
 * Runs `sql` on `connection`, bounded by lock_wait_timeout, and stops it when `signal` aborts:
 * a statement waiting for a lock notices nothing on the client side, so another connection
 * tells the server to end it (KILL QUERY), and the statement fails having changed nothing.
 */
async function interruptible(connection: mysql.Connection, server: MysqlTarget, sql: string, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) throw new StrataError('ABORTED', `restore of ${server.database}: cancelled before the swap; ${server.database} was not changed`, { cause: signal.reason });
  let killing: Promise<void> | undefined;
  const kill = (): void => {
    killing = (async () => {
      const other = await connect(server, { useDatabase: false });
      try {
        await other.query(`KILL QUERY ${Number(connection.threadId)}`);
      } finally {
        await other.end().catch(() => undefined);
      }
    })().catch(() => undefined);
  };
  signal?.addEventListener('abort', kill, { once: true });
  try {
    await connection.query(sql);
  } catch (err) {
    if (signal?.aborted) {
      throw new StrataError('ABORTED', `restore of ${server.database}: cancelled while the swap waited for other sessions' locks; ${server.database} was not changed`, { cause: err });
    }
    throw err;
  } finally {
    signal?.removeEventListener('abort', kill);
    // Before the connection runs anything else, which the kill must not reach.
    await killing;
  }
}

/**
 * The swap: one RENAME TABLE that parks the target's tables and moves the restored ones in. It
 * waits at most `lockWaitSeconds` (default SWAP_LOCK_WAIT_SECONDS) for other sessions' locks (the
 * server's default is a day, while every new query on those tables queues behind it) and stops
 * on `signal`: either way the target is as it was.
 */
export async function swapTables(connection: mysql.Connection, server: MysqlTarget, record: SwapRecord, aside: string, signal: AbortSignal | undefined, lockWaitSeconds = SWAP_LOCK_WAIT_SECONDS): Promise<void> {
  const db = ident(record.database);
  const moves = [
    ...record.parked.map((p) => `${db}.${ident(p.table)} TO ${p.as === undefined ? ident(aside) : db}.${ident(p.as ?? p.table)}`),
    ...(await viewsInTheWay(connection, record)).map((v) => `${db}.${ident(v.view)} TO ${db}.${ident(v.as)}`),
    ...record.incoming.map((t) => `${ident(record.work)}.${ident(t)} TO ${db}.${ident(t)}`),
  ];
  await connection.query(`SET SESSION lock_wait_timeout = ${checkLockWait(lockWaitSeconds)}`);
  try {
    // As late as can be: from here until the swap the target lacks these triggers (the record
    // has them, for a sweep after a kill).
    for (const t of record.dropped) await interruptible(connection, server, `DROP TRIGGER IF EXISTS ${db}.${ident(t.name)}`, signal);
    if (moves.length > 0) await interruptible(connection, server, `RENAME TABLE ${moves.join(', ')}`, signal);
    // From here a sweep finishes the restore; before, it puts the target back (the server may
    // do a RENAME whose client died waiting, but that restore did not go on with it).
    await setPhase(connection, aside, 'swapped');
    await connection.query(`SET SESSION lock_wait_timeout = ${FINISH_LOCK_WAIT_SECONDS}`);
  } catch (err) {
    if (record.dropped.length > 0) {
      try {
        await recreateTriggers(connection, record.database, record.dropped);
      } catch (triggerErr) {
        throw new StrataError(
          'RESTORE_FAILED',
          redactable`${errorText(err)}; recreating the triggers dropped for the swap failed too (${errorText(triggerErr)}): they are in the record in database ${aside}, and the next restore or verify on this server recreates them`,
          { cause: err, details: { parkedIn: aside } },
        );
      }
    }
    if ((err as { errno?: number }).errno !== 1205) throw err;
    const sessions = await openTransactions(connection).catch(() => []);
    const holders = sessions.length > 0 ? `session(s) with an open transaction: ${sessions.join(', ')}` : 'see SHOW PROCESSLIST for who holds them';
    throw new StrataError(
      'DATABASE_LOCKED',
      `restore: other sessions kept tables of ${record.database} in use for ${lockWaitSeconds} s (an open transaction that read or wrote them, LOCK TABLES, or a long query), so the restored tables could not be swapped in; ${record.database} was not changed (${holders}); end those transactions (COMMIT or ROLLBACK, or stop the application) and run the restore again`,
      { cause: err, details: { sessions } },
    );
  }
}

/**
 * The target's views named as a table the backup brings (the database had a table there when it
 * was backed up, and a view now): the swap would fail with "already exists". They move aside in
 * the same RENAME (a view can be renamed, within its database) under free names, so the swap
 * stays one statement; the target's views are all dropped after it, and recreated from the
 * record if it is undone, so no record of these names is needed. A table restore brings tables
 * into a database whose views stay, so it is left to fail there, naming the view.
 */
async function viewsInTheWay(connection: mysql.Connection, record: SwapRecord): Promise<{ view: string; as: string }[]> {
  if (record.objects.kind !== 'database' || record.incoming.length === 0) return [];
  const [rows] = await connection.query<mysql.RowDataPacket[]>(
    `SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'VIEW' AND TABLE_NAME IN (${record.incoming.map(() => '?').join(', ')})`,
    [record.database, ...record.incoming],
  );
  if (rows.length === 0) return [];
  const used = await tableNames(connection, record.database);
  for (const name of [...record.incoming, ...record.parked.flatMap((p) => (p.as === undefined ? [] : [p.as]))]) used.add(name);
  return rows.map((r) => ({ view: r['name'] as string, as: freeName('__strata_view', used) }));
}

/** Drops the triggers of the parked tables still in the target, and moves those tables into the aside database. */
async function moveParkedAside(connection: mysql.Connection, record: SwapRecord, aside: string): Promise<void> {
  const inTarget = await tableNames(connection, record.database);
  const parked = record.parked.filter((p): p is Required<ParkedTable> => p.as !== undefined && inTarget.has(p.as));
  if (parked.length === 0) return;
  const [triggers] = await connection.query<mysql.RowDataPacket[]>(
    `SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE IN (${parked.map(() => '?').join(', ')})`,
    [record.database, ...parked.map((p) => p.as)],
  );
  // Triggers cannot leave their database with their table.
  for (const t of triggers) await connection.query(`DROP TRIGGER IF EXISTS ${ident(record.database)}.${ident(t['name'])}`);
  await connection.query(`RENAME TABLE ${parked.map((p) => `${ident(record.database)}.${ident(p.as)} TO ${ident(aside)}.${ident(p.table)}`).join(', ')}`);
}

/** Creates `triggers` in `database` in their order, each replacing one of its name. */
async function recreateTriggers(connection: mysql.Connection, database: string, triggers: readonly SavedTrigger[]): Promise<void> {
  await connection.query(`USE ${ident(database)}`);
  for (const t of triggers) await connection.query(`DROP TRIGGER IF EXISTS ${ident(t.name)}`);
  for (const t of triggers) await runUnit(connection, t.unit, database);
}

/**
 * What follows the swap: the parked tables move into the aside database without their
 * triggers, and the target gets its routines, views, triggers and events (the backup's, or for a
 * table restore the triggers of the restored tables). Each step can be run again: the sweep
 * finishes with it what a killed restore began.
 */
export async function finishSwap(connection: mysql.Connection, record: SwapRecord, aside: string, options: { disabledEvents?: Map<string, string> } = {}): Promise<void> {
  await moveParkedAside(connection, record, aside);
  const db = record.database;
  if (record.objects.kind === 'tables') {
    await recreateTriggers(connection, db, record.objects.triggers);
  } else {
    const schema = parseSchemaText(record.objects.after);
    await connection.query(`ALTER DATABASE ${ident(db)} ${databaseOptions(schema)}`);
    await retargetDefaults(connection, record.work, db);
    // The target's own views, routines and events stayed until now; its tables' triggers left with them.
    await dropProgrammable(connection, db);
    await runProgrammable(connection, db, schema, { events: true, ...(options.disabledEvents ? { disabledEvents: options.disabledEvents } : {}) });
  }
  // A sweep that finds this record later (the restore killed before dropping the aside database)
  // must not do it again: the user may have changed the target's objects since.
  await setPhase(connection, aside, 'finished');
}

/**
 * Puts the target back as it was after a swap that cannot be finished: the restored tables go
 * back into the work database, the old ones back under their names, and the target's own
 * routines, views, triggers and events are recreated from the record.
 */
export async function undoSwap(connection: mysql.Connection, record: SwapRecord, aside: string): Promise<void> {
  const db = ident(record.database);
  // From here the target's objects are dropped and recreated: a sweep after a kill must know to
  // recreate them, where after a kill before the swap it must leave the target alone.
  await setPhase(connection, aside, 'undoing');
  // The restored tables go back where they came from (a sweep may find that database gone).
  await connection.query(`CREATE DATABASE IF NOT EXISTS ${ident(record.work)}`);
  const inTarget = await tableNames(connection, record.database);
  const objects = record.objects;
  if (objects.kind === 'database') await dropProgrammable(connection, record.database);
  else for (const t of objects.triggers) await connection.query(`DROP TRIGGER IF EXISTS ${db}.${ident(t.name)}`);
  const back = [
    ...record.incoming.filter((t) => inTarget.has(t)).map((t) => `${db}.${ident(t)} TO ${ident(record.work)}.${ident(t)}`),
    ...record.parked.map((p) => (p.as !== undefined && inTarget.has(p.as) ? `${db}.${ident(p.as)} TO ${db}.${ident(p.table)}` : `${ident(aside)}.${ident(p.table)} TO ${db}.${ident(p.table)}`)),
  ];
  if (back.length > 0) await connection.query(`RENAME TABLE ${back.join(', ')}`);
  await restoreObjects(connection, record);
}

/** Recreates the target's own routines, views, triggers and events from the record (all of them, so triggers keep their order). */
async function restoreObjects(connection: mysql.Connection, record: SwapRecord): Promise<void> {
  if (record.objects.kind === 'tables') return recreateTriggers(connection, record.database, record.objects.triggers);
  const before = parseSchemaText(record.objects.before);
  await connection.query(`ALTER DATABASE ${ident(record.database)} ${databaseOptions(before)}`);
  await dropProgrammable(connection, record.database);
  await runProgrammable(connection, record.database, before, { events: true });
}

async function triggerNames(connection: mysql.Connection, database: string): Promise<Set<string>> {
  const [rows] = await connection.query<mysql.RowDataPacket[]>('SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?', [database]);
  return new Set(rows.map((r) => r['name'] as string));
}

/** The objects of the target that the record lists and the target lacks (`trigger trg`, `view v`). */
async function missingObjects(connection: mysql.Connection, record: SwapRecord): Promise<string[]> {
  await connection.query(`USE ${ident(record.database)}`);
  const present = new Set(Object.keys((await readSchema(connection, record.database)).objects ?? {}));
  const listed = record.objects.kind === 'database' ? record.objects.beforeObjects : record.objects.triggers.map((t) => `trigger ${t.name}`);
  return listed.filter((key) => !present.has(key));
}

/**
 * Settles the aside database of a restore that did not finish, from the record in it; undefined
 * when it holds none (an older Strata's aside database: the caller settles it as it did).
 *
 * Past the swap, whatever the restore's phase, it is finished from the record and the aside
 * database, holding the tables it replaced, is dropped (as a finished restore would): going back
 * would drop the restored tables and what was written to them since. Before it, nothing of the target
 * was changed and it is left alone, unless the restore was putting it back after a failed swap:
 * then what it had dropped and not yet recreated is recreated. If any of that fails, the aside
 * database stays and the sentence says what the target lacks and what to do.
 */
export async function settleSwap(connection: mysql.Connection, aside: WorkDatabaseName): Promise<string | undefined> {
  // Two runs starting together would both settle it, one dropping what the other recreates: one at a time, the other leaves it.
  const lock = `strata-settle-${createHash('sha256').update(aside.name).digest('hex').slice(0, 40)}`;
  const [[taken]] = (await connection.query<mysql.RowDataPacket[]>('SELECT GET_LOCK(?, 0) AS got', [lock])) as unknown as [mysql.RowDataPacket[]];
  if (Number(taken?.['got']) !== 1) return `left ${aside.name} to another strata run, which is settling it now`;
  try {
    return await settleSwapHeld(connection, aside);
  } finally {
    await connection.query('SELECT RELEASE_LOCK(?)', [lock]).catch(() => undefined);
  }
}

async function settleSwapHeld(connection: mysql.Connection, aside: WorkDatabaseName): Promise<string | undefined> {
  const found = await readSwapRecord(connection, aside.name);
  if (!found) return undefined;
  const { record } = found;
  const drop = async (): Promise<void> => void (await connection.query(`DROP DATABASE IF EXISTS ${ident(aside.name)}`));
  if (!record) {
    await drop();
    return `removed ${aside.name}, the empty database of a restore that stopped before it changed anything`;
  }
  const db = record.database;
  const [[exists]] = (await connection.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [db])) as unknown as [mysql.RowDataPacket[]];
  if (Number(exists?.['n'] ?? 0) === 0) return `kept ${aside.name}: it belongs to a restore of ${db}, which no longer exists; it holds what that restore replaced (see the table ${found.table} in it); drop it yourself once you do not need it`;
  await connection.query(RESTORE_SESSION);
  // The sweep must not wait a day for a lock either.
  await connection.query(`SET SESSION lock_wait_timeout = ${SWAP_LOCK_WAIT_SECONDS}`);
  const what = record.objects.kind === 'tables' ? `table(s) ${record.parked.map((p) => p.table).join(', ')} of ${db}` : db;
  let swapped = false;
  let missing: string[] = [];
  try {
    await endRestoreSession(connection, record);
    if (found.phase === 'finished') {
      await drop();
      return `removed ${aside.name}, left by a restore of ${what} that had finished`;
    }
    swapped = await swapDone(connection, record, aside.name);
    // Past the swap, whatever the phase (the server may have swapped after the restore's process
    // died, or that restore died putting the target back), the restore is finished forward: the
    // restored tables may have taken writes since, and going back would drop them.
    if (swapped) await finishSwap(connection, record, aside.name);
    else if (found.phase === 'undoing') {
      missing = await missingObjects(connection, record);
      if (missing.length > 0) await restoreObjects(connection, record);
    } else if (record.dropped.length > 0) {
      // Killed between dropping these and the swap.
      const present = await triggerNames(connection, db);
      missing = record.dropped.filter((t) => !present.has(t.name)).map((t) => `trigger ${t.name}`);
      if (missing.length > 0) await recreateTriggers(connection, db, record.dropped);
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return swapped
      ? `kept ${aside.name}: a restore of ${what} stopped after swapping in the restored tables, and finishing it failed (${message}); ${db} has the restored rows but may lack views, triggers, routines or events, and ${aside.name} holds the tables it replaced; restore again, then DROP DATABASE ${ident(aside.name)}`
      : `kept ${aside.name}: a restore of ${what} stopped before its swap or while putting ${db} back, and ${db} lacks ${missing.join(', ')}, which recreating from the record in ${aside.name} (table ${found.table}) failed (${message}); create them from there, then DROP DATABASE ${ident(aside.name)}`;
  }
  await drop();
  if (swapped) {
    return record.objects.kind === 'tables'
      ? `finished a restore of ${what} that stopped after swapping in the restored tables: recreated their triggers, and removed ${aside.name} with the tables they replaced`
      : `finished a restore of ${db} that stopped after swapping in the restored tables: created the backup's routines, views, triggers and events in it, and removed ${aside.name} with the tables they replaced`;
  }
  return missing.length > 0
    ? `recreated ${missing.join(', ')} in ${db}, which a restore that did not finish had dropped (it stopped before its swap, or while putting ${db} back), and removed ${aside.name}`
    : `removed ${aside.name}: the restore of ${what} that made it stopped before its swap, so ${db} is as it was`;
}

/** An error naming what failed in a restore and where the replaced tables wait when putting the target back failed too. */
export function undoFailed(failure: unknown, undoError: unknown, database: string, aside: string): StrataError {
  return new StrataError(
    'RESTORE_FAILED',
    redactable`${errorText(failure)}; putting the target back failed too (${errorText(undoError)}): the original tables of ${database} are in database ${aside} (the next restore or verify on this server settles it from the record there)`,
    { cause: failure, details: { parkedIn: aside } },
  );
}
