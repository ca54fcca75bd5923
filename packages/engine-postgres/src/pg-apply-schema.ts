import type pg from 'pg';
import { StrataError, isStrataError, named, redactSecret, redactable, withheld } from '@strata/core';
import type { MessageText } from '@strata/core';
import { connectionError } from './pg-connection.js';
import type { PgTarget } from './pg-connection.js';
import { normaliseSchema } from './pg-schema.js';

/**
 * The error for something the restore target refused (a statement, a row): RESTORE_FAILED, naming
 * the object and the server, with the server's own message and code. The artifact is fine, so
 * this must never read like a damaged one. Lost connections keep their own codes.
 */
export function restoreFailed(target: PgTarget, what: MessageText, err: unknown): StrataError {
  if (isStrataError(err)) return err;
  const e = err as { code?: string; message?: string; detail?: string; where?: string };
  const asConnection = connectionError(target, err);
  if (asConnection.code !== 'IO') return asConnection;
  const message = redactSecret(e.message ?? String(err), target.password);
  const detail = e.detail ? ` (${redactSecret(e.detail, target.password)})` : '';
  // The server's words quote names and values: the journal keeps its error code instead.
  const said = withheld(`${message}${detail}`, e.code ? `server message ${e.code}` : 'server message');
  return new StrataError('RESTORE_FAILED', redactable`restore: ${target.host}:${target.port} refused ${what}: ${said}`, {
    cause: err,
    details: { pgCode: e.code, host: target.host, port: target.port },
  });
}

/**
 * Runs a pg_dump script entry by entry (pg_dump heads each with `-- Name: ...; Type: ...`), so a
 * statement the target refuses is named in the error, as pg_restore names the entry it was at.
 */
export async function applySchema(client: pg.Client, sql: string, target: PgTarget): Promise<void> {
  for (const entry of schemaEntries(sql)) {
    if (normaliseSchema(entry.sql) === '') continue;
    try {
      await client.query(entry.sql);
    } catch (err) {
      throw restoreFailed(target, redactable`the schema statement for ${named(entry.label, 'object')}`, err);
    }
  }
}

/** The entries of a pg_dump script, each labelled like pg_restore's messages (`TABLE public.orders`). */
function schemaEntries(sql: string): { label: string; sql: string }[] {
  const entries: { label: string; sql: string }[] = [{ label: 'the script header (SET statements)', sql: '' }];
  for (const line of sql.split('\n')) {
    const header = /^-- (?:Data for )?Name: (.*); Type: (.*); Schema: ([^;]*);/.exec(line);
    if (header) {
      const [, name, type, schema] = header;
      entries.push({ label: `${type} ${schema === '-' ? '' : `${schema}.`}${name}`, sql: '' });
      continue;
    }
    const entry = entries.at(-1)!;
    entry.sql = entry.sql === '' ? line : `${entry.sql}\n${line}`;
  }
  return entries;
}
