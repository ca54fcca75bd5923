import type mysql from 'mysql2/promise';
import { StrataError, parseServerUrl, redactSecret, redactable, withServerDatabase, withheld } from '@strata/core';
import type { ServerTarget, ServerUrlRules } from '@strata/core';

/** What a mysql:// URL names. */
export type MysqlTarget = ServerTarget;

/** How mysql:// URLs look. */
export const MYSQL_URL_RULES: ServerUrlRules = { engine: 'mysql', protocols: ['mysql', 'mariadb'], defaultPort: 3306, defaultUser: 'root', passwordEnv: 'MYSQL_PWD' };

export function parseTarget(locator: string): MysqlTarget {
  return parseServerUrl(locator, MYSQL_URL_RULES);
}

export function withDatabase(target: MysqlTarget, database: string): MysqlTarget {
  return parseTarget(withServerDatabase(target.raw, database));
}

/** Opens a connection (optionally without selecting a database) with stable session settings. */
export async function connect(target: MysqlTarget, options: { useDatabase?: boolean } = {}): Promise<mysql.Connection> {
  // Loaded on first use: every strata process loads this engine, few talk to MySQL, and mysql2
  // is a fifth of the CPU a CLI run spends starting.
  const { default: driver } = await import('mysql2/promise');
  let connection: mysql.Connection;
  try {
    connection = await driver.createConnection({
      host: target.host,
      port: target.port,
      user: target.user,
      ...(target.password !== undefined ? { password: target.password } : {}),
      ...(options.useDatabase === false ? {} : { database: target.database }),
      charset: 'UTF8MB4_BIN',
      connectTimeout: 10_000,
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
      queryFormat: (sql: string, values: unknown, timezone?: string) => formatQuery(driver.format, sql, values, timezone),
    });
  } catch (err) {
    throw connectionError(target, err);
  }
  // A server that goes away emits 'error'; the pending query rejects with it too.
  connection.on('error', () => undefined);
  // TIMESTAMP values are shown in the session's time zone: UTC at backup, restore and verify. And
  // none of the server's own sql_mode: ANSI_QUOTES and NO_BACKSLASH_ESCAPES change how SHOW CREATE
  // quotes what Strata reads and writes back, PAD_CHAR_TO_FULL_LENGTH the CHAR values it reads; a
  // session that needs a mode of its own (a restore's, see RESTORE_SESSION) sets it.
  await connection.query("SET time_zone = '+00:00', NAMES utf8mb4, sql_mode = ''");
  return connection;
}

/**
 * mysql2's own formatting, except that a statement without values goes out as it is: mysql2
 * scans every statement for `?` placeholders even when there is nothing to put in them, which
 * for the megabyte INSERTs of a restore costs about as much as building them.
 */
function formatQuery(format: typeof mysql.format, sql: string, values: unknown, timezone?: string): string {
  if (values === undefined || values === null || (Array.isArray(values) && values.length === 0)) return sql;
  return format(sql, values as Parameters<typeof mysql.format>[1], false, timezone as Parameters<typeof mysql.format>[3]);
}

export function connectionError(target: MysqlTarget, err: unknown): StrataError {
  const e = err as { code?: string; errno?: number; message?: string };
  const where = `${target.host}:${target.port}`;
  switch (e.code) {
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new StrataError('CONNECTION_FAILED', `mysql: host ${target.host} cannot be resolved`, { cause: err });
    case 'ECONNREFUSED':
      return new StrataError('CONNECTION_FAILED', `mysql: nothing accepts connections on ${where} (is the server running, is the port right?)`, { cause: err });
    case 'ETIMEDOUT':
      return new StrataError('CONNECTION_FAILED', `mysql: connecting to ${where} timed out`, { cause: err });
    case 'ER_BAD_DB_ERROR':
      return new StrataError('DATABASE_NOT_FOUND', `mysql: database ${JSON.stringify(target.database)} does not exist on ${where}`, { cause: err });
    case 'ER_ACCESS_DENIED_ERROR':
    case 'ER_ACCESS_DENIED_NO_PASSWORD_ERROR':
    case 'ER_DBACCESS_DENIED_ERROR':
      return new StrataError('AUTH_FAILED', `mysql: access denied for user ${JSON.stringify(target.user)} on ${where} (check the user and password)`, { cause: err });
    case 'PROTOCOL_CONNECTION_LOST':
    case 'ECONNRESET':
    case 'EPIPE':
      return new StrataError('CONNECTION_FAILED', `mysql: the connection to ${where} was lost`, { cause: err });
    default: {
      const message = redactSecret(e.message ?? String(err), target.password);
      if (e.errno === 1045 || /^Access denied for user/.test(message)) {
        return new StrataError('AUTH_FAILED', `mysql: access denied for user ${JSON.stringify(target.user)} on ${where} (check the user and password)`, { cause: err });
      }
      // The server's words quote names and values: the journal keeps its error code instead.
      return new StrataError('IO', redactable`mysql (${where}/${target.database}): ${withheld(message, `server message ${e.code ?? e.errno ?? ''}`.trim())}`, { cause: err, details: { mysqlCode: e.code } });
    }
  }
}

/** Quotes an identifier. */
export function ident(name: string): string {
  return `\`${name.replace(/`/g, '``')}\``;
}
