import type pg from 'pg';
import { StrataError, parseServerUrl, redactSecret, redactable, withServerDatabase, withheld } from '@strata/core';
import type { ServerTarget, ServerUrlRules } from '@strata/core';

/** What a postgres:// URL names. */
export type PgTarget = ServerTarget;

/** How postgres:// URLs look. */
export const PG_URL_RULES: ServerUrlRules = { engine: 'postgres', protocols: ['postgres', 'postgresql'], defaultPort: 5432, defaultUser: process.env['PGUSER'] ?? 'postgres', passwordEnv: 'PGPASSWORD', socketHostParam: true };

/** Parses a postgres:// or postgresql:// URL; a bad one is a usage error that never echoes a password. */
export function parseTarget(locator: string): PgTarget {
  return parseServerUrl(locator, PG_URL_RULES);
}

/** The same server and credentials, another database (for CREATE/DROP/RENAME DATABASE). */
export function withDatabase(target: PgTarget, database: string): PgTarget {
  return parseTarget(withServerDatabase(target.raw, database));
}

/** Session settings that make COPY text output identical between backup and verification. */
const STABLE_OUTPUT = [
  "SET DateStyle = 'ISO, YMD'",
  "SET IntervalStyle = 'postgres'",
  'SET extra_float_digits = 3',
  "SET bytea_output = 'hex'",
  "SET TimeZone = 'UTC'",
  "SET client_encoding = 'UTF8'",
];

/** pg-copy-streams, loaded at the first COPY, as pg is at the first connection. */
export function copyStreams(): Promise<typeof import('pg-copy-streams')> {
  return import('pg-copy-streams');
}

/** Opens a connection, turning every way it can fail into a message that names what was wrong. */
export async function connect(target: PgTarget, application = 'strata'): Promise<pg.Client> {
  // Loaded on first use: every strata process loads this engine, few talk to PostgreSQL.
  const { default: driver } = await import('pg');
  const client = new driver.Client({
    host: target.host,
    port: target.port,
    user: target.user,
    ...(target.password !== undefined ? { password: target.password } : {}),
    database: target.database,
    application_name: application,
    connectionTimeoutMillis: 10_000,
  });
  // A server that goes away mid-operation emits 'error' on the client; the pending query rejects
  // with it as well, so this listener only keeps the process from crashing.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw connectionError(target, err);
  }
  for (const statement of STABLE_OUTPUT) await client.query(statement);
  return client;
}

/** Maps driver and server errors to StrataErrors that name host, port, user or database. */
export function connectionError(target: PgTarget, err: unknown): StrataError {
  const e = err as { code?: string; message?: string };
  const where = `${target.host}:${target.port}`;
  switch (e.code) {
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new StrataError('CONNECTION_FAILED', `postgres: host ${target.host} cannot be resolved`, { cause: err, details: { host: target.host } });
    case 'ECONNREFUSED':
      return new StrataError('CONNECTION_FAILED', `postgres: nothing accepts connections on ${where} (is the server running, is the port right?)`, { cause: err });
    case 'ETIMEDOUT':
      return new StrataError('CONNECTION_FAILED', `postgres: connecting to ${where} timed out`, { cause: err });
    case '3D000':
      return new StrataError('DATABASE_NOT_FOUND', `postgres: database ${JSON.stringify(target.database)} does not exist on ${where}`, { cause: err, details: { pgCode: e.code } });
    case '28P01':
    case '28000':
      return new StrataError('AUTH_FAILED', `postgres: authentication failed for user ${JSON.stringify(target.user)} on ${where} (check the user and password)`, {
        cause: err,
        details: { pgCode: e.code },
      });
    case '57P01':
    case '57P02':
    case '57P03':
      return new StrataError('CONNECTION_FAILED', `postgres: the server on ${where} shut down or is not accepting connections`, { cause: err, details: { pgCode: e.code } });
    default: {
      const message = redactSecret(e.message ?? String(err), target.password);
      if (/Connection terminated|ECONNRESET|EPIPE|terminating connection/i.test(message)) {
        return new StrataError('CONNECTION_FAILED', `postgres: the connection to ${where} was lost (${message})`, { cause: err });
      }
      // The server's words quote names and values: the journal keeps its error code instead.
      return new StrataError('IO', redactable`postgres (${where}/${target.database}): ${withheld(message, e.code ? `server message ${e.code}` : 'server message')}`, { cause: err, details: { pgCode: e.code } });
    }
  }
}

/** Quotes an identifier. */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Quotes a literal. */
export function literal(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
