import { createHash } from 'node:crypto';
import type mysql from 'mysql2/promise';
import { StrataError, named, redactable, withheld } from '@strata/core';
import { ident } from './mysql-connection.js';

/** Statement terminator in schema.sql: a line with only `;;` (what `DELIMITER ;;` expects). */
const END = '\n;;\n';
/** Routines and tables come before the rows; views, triggers and events after. */
export const POST_DATA_MARKER = '-- strata: post-data (views, triggers, events) below';
/**
 * Says how the row streams beside this schema encode values; only its number counts (see
 * rowFormatOf). Format 2 wrote text of every character set as text and ENUM and SET as their text;
 * backups with no such line wrote BIT as HEX().
 */
export const ROW_FORMAT_MARKER = '-- strata: row format 3 (BIT as decimal numbers, FLOAT as DOUBLE, history rows of system-versioned tables, text of character sets other than Unicode, ascii and latin1 as its bytes in hex, ENUM and SET as numbers)';
/** Begins the header line with the database's comment, as a JSON string (one line whatever it holds). */
const COMMENT_MARKER = '-- strata: database comment ';
/** Says that `{{db}}.` stands for the database only outside quoted strings (backups without it put it inside them too). */
export const PLACEHOLDER_MARKER = '-- strata: {{db}}. stands for the database outside quoted strings only';
/** What the statements say `{{db}}.` for: the database they are read from or run in, followed by a dot. */
const PLACEHOLDER = '{{db}}.';

export interface MysqlSchema {
  readonly charset: string;
  readonly collation: string;
  /**
   * The database's COMMENT (MariaDB's SCHEMA_COMMENT), '' for none; undefined where not known: a
   * schema.sql written before it was recorded, or a server without database comments (MySQL).
   */
  readonly comment?: string;
  readonly pre: string[];
  readonly post: string[];
  /** Object key (`table orders`, `trigger trg`) to its normalised definition; only from a live database. */
  readonly objects?: Readonly<Record<string, string>>;
  /**
   * False for a schema.sql written before PLACEHOLDER_MARKER, whose `{{db}}.` may stand inside
   * quoted strings too (where it was the source database's name: a restore then wrote the target's).
   */
  readonly placeholdersOutsideStrings?: boolean;
}

/**
 * A statement of `schema` with `{{db}}.` made `database`'s name, where the schema put it; `settings`
 * the SET SESSION statement that came before it in the schema, if any (see replaceOutsideStrings).
 */
export function inDatabase(schema: MysqlSchema, sql: string, database: string, settings?: string): string {
  const name = `${ident(database)}.`;
  return schema.placeholdersOutsideStrings === false ? sql.replaceAll(PLACEHOLDER, name) : replaceOutsideStrings(sql, PLACEHOLDER, name, settings);
}

/**
 * `sql` with `from` replaced by `to` where it stands in the statement itself, never inside a quoted
 * string, a backquoted name or a comment: a column default, a comment or a view's literal that
 * holds the text (`'see `shop`.parent'`) is the user's data, which a restore must write as it was.
 * A comment is skipped as a whole, so that a quote in it (`-- don't`) opens no string; the code of
 * a versioned comment (`/*!50100 ...`) is read as code. Backslash escapes a quote in a
 * string unless the statement's own settings have NO_BACKSLASH_ESCAPES: the SET SESSION line
 * showCreate puts before it, in `sql` itself as read, or given as `settings` once schema.sql was
 * cut into statements. By hand: the statements are SHOW CREATE output, and no SQL parser among the
 * dependencies reads MariaDB's dialect whole.
 */
export function replaceOutsideStrings(sql: string, from: string, to: string, settings?: string): string {
  const noBackslashEscapes = /^SET SESSION sql_mode = '[^']*\bNO_BACKSLASH_ESCAPES\b/i;
  const backslashEscapes = !noBackslashEscapes.test(sql) && !noBackslashEscapes.test(settings ?? '');
  const parts: string[] = [];
  let copied = 0;
  let at = 0;
  const skipTo = (text: string, fromAt: number): number => {
    const found = sql.indexOf(text, fromAt);
    return found < 0 ? sql.length : found + text.length;
  };
  while (at < sql.length) {
    if (sql.startsWith(from, at)) {
      parts.push(sql.slice(copied, at), to);
      at += from.length;
      copied = at;
      continue;
    }
    const char = sql[at]!;
    if (char === "'" || char === '"' || char === '`') {
      at++;
      while (at < sql.length) {
        if (sql[at] === '\\' && char !== '`' && backslashEscapes) at += 2;
        else if (sql[at] === char && sql[at + 1] === char) at += 2;
        else if (sql[at++] === char) break;
      }
    } else if (char === '#' || (char === '-' && sql[at + 1] === '-' && /^\s?$/.test(sql[at + 2] ?? ''))) {
      at = skipTo('\n', at);
    } else if (char === '/' && sql[at + 1] === '*') {
      const versioned = /^\/\*M?!\d*/.exec(sql.slice(at, at + 12));
      at = versioned ? at + versioned[0].length : skipTo('*/', at + 2);
    } else {
      at++;
    }
  }
  parts.push(sql.slice(copied));
  return parts.join('');
}

/** Statements of `pre` that build data objects in the work database before the rows load. */
export function isDataStatement(sql: string): boolean {
  return /^(CREATE (TABLE|SEQUENCE)\b|SELECT SETVAL\()/i.test(sql);
}

/** A trigger's statement without FOLLOWS/PRECEDES: triggers are recreated in action order instead. */
export function withoutTriggerOrder(sql: string): string {
  return sql.replace(/(\bFOR\s+EACH\s+ROW)\s+(?:FOLLOWS|PRECEDES)\s+(?:`(?:[^`]|``)+`|[\w$]+)/i, '$1');
}

const IDENTIFIER = '(?:`(?:[^`]|``)+`|[^\\s.`(]+)';
/**
 * A trigger statement's head, at its start: CREATE [OR REPLACE] [DEFINER=...] TRIGGER [IF NOT
 * EXISTS] [db.]name BEFORE|AFTER event ON [db.]table. A trigger lives in its table's database,
 * so a database named there can only be the one it was created in.
 */
const TRIGGER_HEAD = new RegExp(
  `^(CREATE\\s+(?:OR\\s+REPLACE\\s+)?(?:DEFINER\\s*=\\s*(?:\`(?:[^\`]|\`\`)*\`|'(?:[^']|'')*'|[^\\s@\`']+)(?:@(?:\`(?:[^\`]|\`\`)*\`|'(?:[^']|'')*'|\\S+))?\\s+)?TRIGGER\\s+(?:IF\\s+NOT\\s+EXISTS\\s+)?)` +
    `(?:${IDENTIFIER}\\s*\\.\\s*)?(${IDENTIFIER}\\s+(?:BEFORE|AFTER)\\s+(?:INSERT|UPDATE|DELETE)(?:\\s+OR\\s+(?:INSERT|UPDATE|DELETE))*\\s+ON\\s+)(?:${IDENTIFIER}\\s*\\.\\s*)?`,
  'i',
);

/**
 * A trigger's statement without the database its head names (`CREATE TRIGGER app.t BEFORE INSERT
 * ON app.items`, as SHOW CREATE TRIGGER keeps what was typed): it then restores into the database
 * it is run in, not into the source (where it failed, "already exists", or would have been made).
 * Other statements unchanged.
 */
export function unqualifiedTrigger(sql: string): string {
  const settings = /^SET SESSION /i.test(sql) ? sql.indexOf(SETTINGS_END) : -1;
  const start = settings < 0 ? 0 : settings + SETTINGS_END.length;
  return sql.slice(0, start) + sql.slice(start).replace(TRIGGER_HEAD, '$1$2');
}

export async function showCreate(connection: mysql.Connection, kind: string, name: string, column: string): Promise<string> {
  const [rows] = await connection.query<mysql.RowDataPacket[]>(`SHOW CREATE ${kind} ${ident(name)}`);
  const row = rows[0]!;
  // Views, routines, triggers and events keep the session settings they were created under
  // (mysqldump shows them too); recreate them under the same ones.
  const context: string[] = [];
  if (row['sql_mode'] !== undefined) context.push(`sql_mode = ${quote(String(row['sql_mode']))}`);
  if (row['time_zone'] !== undefined) context.push(`time_zone = ${quote(String(row['time_zone']))}`);
  if (row['character_set_client'] !== undefined) context.push(`character_set_client = ${String(row['character_set_client'])}`);
  if (row['collation_connection'] !== undefined) context.push(`collation_connection = ${String(row['collation_connection'])}`);
  const create = String(row[column]);
  return context.length > 0 ? `SET SESSION ${context.join(', ')}${END.trimEnd()}\n${create}` : create;
}

function quote(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/**
 * The kinds of stored routines, in the order a restore creates them: MariaDB's packages (made under
 * sql_mode ORACLE) are routines too, a package's body after its specification.
 */
export const ROUTINE_KINDS = ['FUNCTION', 'PROCEDURE', 'PACKAGE', 'PACKAGE BODY'] as const;
const ROUTINE_COLUMNS: Readonly<Record<(typeof ROUTINE_KINDS)[number], string>> = {
  FUNCTION: 'Create Function',
  PROCEDURE: 'Create Procedure',
  PACKAGE: 'Create Package',
  'PACKAGE BODY': 'Create Package Body',
};

/** The names of a database's routines of one kind; none of a kind the server does not have (MySQL has no packages). */
export async function routinesOf(connection: mysql.Connection, kind: (typeof ROUTINE_KINDS)[number], database: string): Promise<string[]> {
  try {
    const [rows] = await connection.query<mysql.RowDataPacket[]>(`SHOW ${kind} STATUS WHERE Db = ?`, [database]);
    return rows.map((r) => String(r['Name']));
  } catch (err) {
    if (kind.startsWith('PACKAGE') && (err as { errno?: number }).errno === ER_PARSE_ERROR) return [];
    throw err;
  }
}

/** The server's error for a statement it cannot parse (SHOW PACKAGE STATUS on a server without packages). */
const ER_PARSE_ERROR = 1064;

/**
 * Reads the DDL of the current database: routines, tables (with charsets and collations), views,
 * triggers and events. View definitions name their database; it is replaced by a placeholder so
 * the schema restores into a database of any name.
 */
export async function readSchema(connection: mysql.Connection, database: string): Promise<MysqlSchema> {
  // Every column: SCHEMA_COMMENT is MariaDB's (10.5 and later), MySQL has none.
  const [[info]] = (await connection.query<mysql.RowDataPacket[]>('SELECT * FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [database])) as unknown as [mysql.RowDataPacket[]];
  const placeholder = (sql: string): string => replaceOutsideStrings(sql, `${ident(database)}.`, PLACEHOLDER);
  const pre: string[] = [];
  const post: string[] = [];
  const objects: Record<string, string> = {};
  const add = (list: string[], key: string, sql: string): void => {
    list.push(sql);
    objects[key] = sql.replace(/ AUTO_INCREMENT=\d+/g, '');
  };
  const [tables] = await connection.query<mysql.RowDataPacket[]>(
    'SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME',
    [database],
  );
  // Sequences first: a table's DEFAULT NEXT VALUE FOR needs its sequence to exist.
  for (const t of tables.filter((t) => t['type'] === 'SEQUENCE')) {
    const name = t['name'] as string;
    const create = await showCreate(connection, 'SEQUENCE', name, 'Create Table');
    const [[state]] = (await connection.query<mysql.RowDataPacket[]>(`SELECT next_not_cached_value AS next, cycle_count AS round FROM ${ident(name)}`)) as unknown as [mysql.RowDataPacket[]];
    // SETVAL(..., 0): the next NEXTVAL returns this value, the first one the source had not handed out.
    add(pre, `sequence ${name}`, `${create}${END.trimEnd()}\nSELECT SETVAL(${ident(name)}, ${String(state!['next'])}, 0, ${String(state!['round'])})`);
  }
  for (const kind of ROUTINE_KINDS) {
    const routines = await routinesOf(connection, kind, database);
    for (const name of routines.sort((a, b) => a.localeCompare(b))) {
      add(pre, `routine ${kind.toLowerCase()} ${name}`, await showCreate(connection, kind, name, ROUTINE_COLUMNS[kind]));
    }
  }
  const views: string[] = [];
  for (const t of tables) {
    if (t['type'] === 'VIEW') views.push(t['name'] as string);
    else if (t['type'] !== 'SEQUENCE') add(pre, `table ${String(t['name'])}`, placeholder(await showCreate(connection, 'TABLE', t['name'] as string, 'Create Table')));
  }
  for (const v of views) add(post, `view ${v}`, placeholder(await showCreate(connection, 'VIEW', v, 'Create View')));
  // Action order is behaviour (which of two BEFORE INSERT triggers runs first); creating them in
  // that order recreates it.
  const [triggers] = await connection.query<mysql.RowDataPacket[]>(
    'SELECT TRIGGER_NAME AS name, ACTION_ORDER AS actionOrder FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER',
    [database],
  );
  for (const t of triggers) {
    const sql = unqualifiedTrigger(withoutTriggerOrder(await showCreate(connection, 'TRIGGER', t['name'] as string, 'SQL Original Statement')));
    post.push(sql);
    objects[`trigger ${String(t['name'])}`] = `${sql}\n-- action order ${String(t['actionOrder'])}`;
  }
  const [events] = await connection.query<mysql.RowDataPacket[]>('SHOW EVENTS');
  for (const e of [...events].sort((a, b) => String(a['Name']).localeCompare(String(b['Name'])))) {
    add(post, `event ${String(e['Name'])}`, placeholder(await showCreate(connection, 'EVENT', e['Name'] as string, 'Create Event')));
  }
  const charset = String(info?.['DEFAULT_CHARACTER_SET_NAME'] ?? 'utf8mb4');
  const collation = String(info?.['DEFAULT_COLLATION_NAME'] ?? 'utf8mb4_general_ci');
  const comment = info?.['SCHEMA_COMMENT'] === undefined || info['SCHEMA_COMMENT'] === null ? undefined : String(info['SCHEMA_COMMENT']);
  // The comment only where there is one: a backup made before comments were recorded has this
  // object without it, and so has the copy its restore makes (which gets none), so it still verifies.
  objects['database'] = `charset ${charset} collate ${collation}${comment ? ` comment ${JSON.stringify(comment)}` : ''}`;
  return { charset, collation, ...(comment !== undefined ? { comment } : {}), pre, post, objects };
}

/**
 * Refuses (UNSUPPORTED_OBJECT) a database with a view the server can no longer open: one whose
 * table, column or function was dropped or renamed after it was created, or whose definer lost
 * the rights to use them. The server keeps such a view and SHOW CREATE VIEW still shows it, but
 * CREATE VIEW refuses its statement, so a backup holding it would complete and never restore
 * (mysqldump refuses it too). For a backup only: a restore over a database with such a view, or
 * verify reading a restored copy, has no reason to refuse it.
 */
export async function refuseInvalidViews(connection: mysql.Connection, database: string): Promise<void> {
  const [views] = await connection.query<mysql.RowDataPacket[]>(
    "SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'VIEW' ORDER BY TABLE_NAME",
    [database],
  );
  const invalid: string[] = [];
  for (const v of views) {
    try {
      // Opens the view as a query of it would, without reading a row.
      await connection.query(`SHOW COLUMNS FROM ${ident(database)}.${ident(v['name'] as string)}`);
    } catch (err) {
      if ((err as { errno?: number }).errno !== ER_VIEW_INVALID) throw err;
      invalid.push(v['name'] as string);
    }
  }
  if (invalid.length === 0) return;
  // What each lacks, in the server's words. CHECK TABLE ends the snapshot's transaction, which no longer matters: the backup stops here.
  const reasons: string[] = [];
  for (const v of invalid) {
    const [rows] = await connection.query<mysql.RowDataPacket[]>(`CHECK TABLE ${ident(database)}.${ident(v)}`);
    const lacks = rows.filter((r) => String(r['Msg_type']).toLowerCase() === 'error' && !/^View '.*' references invalid/.test(String(r['Msg_text'])) && String(r['Msg_text']) !== 'Corrupt');
    reasons.push(`${v}: ${lacks.map((r) => String(r['Msg_text'])).join('; ') || 'no reason given'}`);
  }
  throw new StrataError(
    'UNSUPPORTED_OBJECT',
    redactable`mysql: view(s) ${named(invalid, 'view')} of ${named(database, 'database')} use a table, column or function that no longer exists, or one their definer may not use (${withheld(reasons.join(', '), 'server message')}); a restore could not create them, so nothing was backed up. Drop each such view, or recreate what it lacks (or CREATE OR REPLACE VIEW it to what it should read), then back up again`,
  );
}

/** The server's error for a view that refers to what it cannot use. */
const ER_VIEW_INVALID = 1356;

/** An event's status in SHOW CREATE EVENT, which always prints it, after ON COMPLETION. */
const EVENT_STATUS = /(\bON COMPLETION (?:NOT )?PRESERVE )(ENABLE|DISABLE ON (?:SLAVE|REPLICA)|DISABLE)\b/i;
/**
 * The head of SHOW CREATE EVENT's statement, at its start: CREATE [DEFINER=user@host] EVENT name
 * (a role as definer has no host).
 */
const EVENT_HEAD = /^CREATE\s+(?:DEFINER\s*=\s*(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|[^\s@`']+)(?:@(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|\S+))?\s+)?EVENT\s+(`(?:[^`]|``)+`|[^\s`]+)/i;
/** Between the SET SESSION of a statement's settings and the statement, as showCreate joins them. */
const SETTINGS_END = '\n;;\n';

/** Where the head of the event a statement creates ends, and the event's name (as SHOW EVENTS gives it). */
function eventHead(sql: string): { end: number; name: string } | undefined {
  let start = 0;
  if (/^SET SESSION /i.test(sql)) {
    const at = sql.indexOf(SETTINGS_END);
    if (at < 0) return undefined;
    start = at + SETTINGS_END.length;
  }
  const head = EVENT_HEAD.exec(sql.slice(start));
  if (!head) return undefined;
  const quoted = head[1]!;
  return { end: start + head[0].length, name: quoted.startsWith('`') ? quoted.slice(1, -1).replaceAll('``', '`') : quoted };
}

/** The event a statement creates; undefined for other statements. */
export function eventCreated(sql: string): string | undefined {
  return eventHead(sql)?.name;
}

/**
 * An event's statement made to create it disabled, and the status it had; undefined for other
 * statements. An event statement without the status SHOW CREATE EVENT always prints is refused:
 * it would be created enabled.
 */
export function eventDisabled(sql: string): { sql: string; name: string; status: string } | undefined {
  const head = eventHead(sql);
  if (!head) return undefined;
  const status = EVENT_STATUS.exec(sql.slice(head.end))?.[2];
  if (status === undefined) throw new StrataError('ARTIFACT_FOREIGN', `restore: the backup's statement of event ${head.name} has no ENABLE or DISABLE after ON COMPLETION, as SHOW CREATE EVENT writes it, so it cannot be created disabled in verify's scratch database`);
  return { sql: withEventStatus(sql, 'DISABLE'), name: head.name, status };
}

/** An event's statement with its status set to `status` (ENABLE, DISABLE, DISABLE ON SLAVE); other statements unchanged. */
export function withEventStatus(sql: string, status: string): string {
  const head = eventHead(sql);
  return head ? sql.slice(0, head.end) + sql.slice(head.end).replace(EVENT_STATUS, `$1${status}`) : sql;
}

/** The schema with the events named in `statuses` given back those statuses (see eventDisabled). */
export function withEventStatuses(schema: MysqlSchema, statuses: ReadonlyMap<string, string>): MysqlSchema {
  const restored = (sql: string, name: string | undefined): string => {
    const status = name === undefined ? undefined : statuses.get(name);
    return status === undefined ? sql : withEventStatus(sql, status);
  };
  const objects = schema.objects
    ? Object.fromEntries(Object.entries(schema.objects).map(([key, sql]) => [key, key.startsWith('event ') ? restored(sql, key.slice('event '.length)) : sql]))
    : undefined;
  return { ...schema, post: schema.post.map((sql) => restored(sql, eventCreated(sql))), ...(objects ? { objects } : {}) };
}

/** The schema object by object: key to SHA-256 of its definition, as the validator compares them. */
export function schemaObjects(schema: MysqlSchema): Record<string, string> {
  return Object.fromEntries(Object.entries(schema.objects ?? {}).map(([key, sql]) => [key, createHash('sha256').update(sql).digest('hex')]));
}

/**
 * Says that each statement of schema.sql follows a line giving its length (see STATEMENT_HEAD).
 * Without it (backups before it), statements are told apart by the `;;` lines between them, which
 * a routine's, trigger's or event's body may hold too, in a string or a comment: SHOW CREATE
 * escapes the newlines of a table's or view's text, not of a body.
 */
export const FRAMING_MARKER = '-- strata: statements framed 1 (each after a line giving its length in UTF-8 bytes)';
/** The line before each statement of a framed schema.sql: `-- strata: statement of N bytes`. */
const STATEMENT_HEAD = /^-- strata: statement of (\d+) bytes$/;

/**
 * An entry of a schema's statement list cut where readSchema joined two statements: the SET
 * SESSION of the settings an object was created under (one line, ending at its first SETTINGS_END)
 * and a sequence's SETVAL after its CREATE SEQUENCE. Cut by what readSchema wrote there, not by
 * `;;` lines, which the object's own text may hold.
 */
function statementsOf(entry: string): string[] {
  let rest = entry;
  const out: string[] = [];
  if (/^SET SESSION /i.test(rest)) {
    const at = rest.indexOf(SETTINGS_END);
    if (at >= 0) {
      out.push(rest.slice(0, at));
      rest = rest.slice(at + SETTINGS_END.length);
    }
  }
  const sequence = /^CREATE SEQUENCE (`(?:[^`]|``)+`)/.exec(rest);
  // The name in the SETVAL is the one the head quotes; the SETVAL ends the entry, so its last occurrence is it.
  const setval = sequence ? rest.lastIndexOf(`${END}SELECT SETVAL(${sequence[1]!}, `) : -1;
  if (sequence && setval >= 0) out.push(rest.slice(0, setval), rest.slice(setval + END.length));
  else out.push(rest);
  return out;
}

/**
 * schema.sql: runnable with the mysql client (after replacing {{db}} with the target database).
 * Each statement follows a `-- strata: statement of N bytes` line, so parseSchemaText takes it
 * whole whatever its text holds.
 */
export function schemaText(schema: MysqlSchema): string {
  const framed = (entry: string): string[] => statementsOf(entry).map((sql) => `-- strata: statement of ${Buffer.byteLength(sql, 'utf8')} bytes\n${sql}${END.trimEnd()}`);
  return [
    `-- strata: MySQL/MariaDB schema; database charset ${schema.charset} collate ${schema.collation}`,
    ROW_FORMAT_MARKER,
    PLACEHOLDER_MARKER,
    FRAMING_MARKER,
    ...(schema.comment !== undefined ? [`${COMMENT_MARKER}${JSON.stringify(schema.comment)}`] : []),
    'DELIMITER ;;',
    ...schema.pre.flatMap(framed),
    POST_DATA_MARKER,
    ...schema.post.flatMap(framed),
    'DELIMITER ;',
    '',
  ].join('\n');
}

/**
 * The options of CREATE or ALTER DATABASE that give a database the schema's character set,
 * collation and comment (a comment is left as it is where the schema does not know it).
 */
export function databaseOptions(schema: MysqlSchema): string {
  return `CHARACTER SET ${schema.charset} COLLATE ${schema.collation}${schema.comment === undefined ? '' : ` COMMENT ${quote(schema.comment)}`}`;
}

/** Parses schema.sql back into its parts; a list entry each statement, settings apart from theirs. */
export function parseSchemaText(text: string): MysqlSchema {
  const header = /charset (\S+) collate (\S+)/.exec(text.split('\n')[0] ?? '');
  // The header's lines are Strata's own, up to the first DELIMITER line: a body cannot fake them.
  const start = /^DELIMITER ;;\n/m.exec(text);
  const headerLines = start ? text.slice(0, start.index).split('\n') : [];
  const body = start ? text.slice(start.index + start[0].length) : undefined;
  const parts = body !== undefined && headerLines.includes(FRAMING_MARKER) ? framedStatements(body) : delimitedStatements(text, body);
  const commentLine = headerLines.find((line) => line.startsWith(COMMENT_MARKER));
  let comment: unknown;
  try {
    comment = commentLine === undefined ? undefined : JSON.parse(commentLine.slice(COMMENT_MARKER.length));
  } catch {
    comment = null;
  }
  if (comment !== undefined && typeof comment !== 'string') throw new StrataError('ARTIFACT_CORRUPT', "restore: the backup's schema.sql is damaged: its database comment line holds no JSON string");
  return {
    charset: header?.[1] ?? 'utf8mb4',
    collation: header?.[2] ?? 'utf8mb4_general_ci',
    ...(comment !== undefined ? { comment } : {}),
    ...parts,
    placeholdersOutsideStrings: start ? headerLines.includes(PLACEHOLDER_MARKER) : text.includes(PLACEHOLDER_MARKER),
  };
}

/** The statements of a schema.sql with FRAMING_MARKER: each taken by its length, all of it accounted for. */
function framedStatements(body: string): { pre: string[]; post: string[] } {
  const bytes = Buffer.from(body, 'utf8');
  const corrupt = (what: string): StrataError => new StrataError('ARTIFACT_CORRUPT', `restore: the backup's schema.sql is damaged: ${what} (it says each statement's length, and they do not add up)`);
  const pre: string[] = [];
  const post: string[] = [];
  let list = pre;
  let at = 0;
  for (;;) {
    const lineEnd = bytes.indexOf(0x0a, at);
    if (lineEnd < 0) throw corrupt('it ends without its DELIMITER ; line');
    const line = bytes.toString('utf8', at, lineEnd);
    at = lineEnd + 1;
    if (line === 'DELIMITER ;') {
      if (at !== bytes.length) throw corrupt('text follows its DELIMITER ; line');
      return { pre, post };
    }
    if (line === POST_DATA_MARKER && list === pre) {
      list = post;
      continue;
    }
    const head = STATEMENT_HEAD.exec(line);
    if (!head) throw corrupt(`a line ${JSON.stringify(line.slice(0, 80))} stands where a statement's length should`);
    const end = at + Number(head[1]);
    // Followed by its `;;` line, or the length is not the statement's.
    if (bytes.toString('utf8', end, end + END.length) !== END) throw corrupt(`the statement after ${JSON.stringify(line)} is not followed by a ;; line`);
    list.push(bytes.toString('utf8', at, end));
    at = end + END.length;
  }
}

/**
 * The statements of a schema.sql before FRAMING_MARKER, cut at its `;;` lines. The header (up to
 * `DELIMITER ;;`), the post-data marker and the closing `DELIMITER ;` are where that writer put
 * them; lines inside statements are kept, whatever they say. A `;;` line inside a body cannot be
 * told from the end of a statement in such a file.
 */
function delimitedStatements(text: string, afterHeader: string | undefined): { pre: string[]; post: string[] } {
  // Without a DELIMITER line (not as Strata wrote it): Strata's lines are left out wherever they stand.
  if (afterHeader === undefined) {
    const statements = text
      .split(END)
      .map((s) => s.split('\n').filter((line) => !line.startsWith('-- strata') && !/^DELIMITER /.test(line)).join('\n').trim())
      .filter((s) => s.length > 0 && s !== ';;');
    return { pre: statements, post: [] };
  }
  let body = afterHeader;
  if (body.endsWith('\nDELIMITER ;\n')) body = body.slice(0, -'DELIMITER ;\n'.length);
  else if (body.startsWith('DELIMITER ;\n')) body = '';
  const split = (part: string): string[] =>
    part
      .split(END)
      .map((s) => s.trim())
      .filter((s) => s.length > 0 && s !== ';;');
  const marker = body.startsWith(`${POST_DATA_MARKER}\n`) ? 0 : body.indexOf(`${END}${POST_DATA_MARKER}\n`);
  if (marker < 0) return { pre: split(body), post: [] };
  const after = body.indexOf(`${POST_DATA_MARKER}\n`, marker) + POST_DATA_MARKER.length + 1;
  return { pre: split(body.slice(0, marker) + END), post: split(body.slice(after)) };
}

/**
 * Each table's AUTO_INCREMENT counter as its CREATE TABLE states it (tables whose counter has never
 * moved state none). The counter is read from the table options line, `) ENGINE=... AUTO_INCREMENT=N
 * ...`, so a column comment that happens to contain the words cannot be taken for it.
 */
export function autoIncrementCounters(schema: MysqlSchema): Map<string, string> {
  const counters = new Map<string, string>();
  for (const sql of schema.pre) {
    // Anchored to the statement's start: a routine's body may hold such lines too.
    const table = /^CREATE TABLE `((?:[^`]|``)+)`/.exec(sql);
    const counter = table ? /\n\) ENGINE=[^\n]*? AUTO_INCREMENT=(\d+)/.exec(sql) : null;
    if (table && counter) counters.set(table[1]!.replaceAll('``', '`'), counter[1]!);
  }
  return counters;
}

/** SHA-256 of the schema, without AUTO_INCREMENT counters (they move with the data). */
export function fingerprint(schema: MysqlSchema): string {
  const normal = [...schema.pre, ...schema.post].map((s) => s.replace(/ AUTO_INCREMENT=\d+/g, ''));
  return createHash('sha256').update(JSON.stringify({ charset: schema.charset, collation: schema.collation, statements: normal })).digest('hex');
}
