import type pg from 'pg';
import { StrataError, isStrataError, named, redactSecret, redactable, withheld } from '@strata/core';
import type { MessageText } from '@strata/core';
import { connectionError } from './pg-connection.js';
import type { PgTarget } from './pg-connection.js';
import { normaliseSchema, topLevelLines } from './pg-schema.js';

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
  // insufficient_privilege: the backup's objects belong to roles this server has, and giving them
  // to those owners (or creating what only a superuser may) is beyond the restoring role.
  const hint =
    e.code === '42501'
      ? `; the restore connects as ${target.user}, which lacks that privilege: the backup's objects get back the owners and rights they had, which needs a superuser, or a role that is a member of every owning role. Restore as such a role`
      : '';
  return new StrataError('RESTORE_FAILED', redactable`restore: ${target.host}:${target.port} refused ${what}: ${said}${hint}`, {
    cause: err,
    details: { pgCode: e.code, host: target.host, port: target.port },
  });
}

/** One object of a pg_dump script: its type as pg_dump names it, a label like pg_restore's messages (`TABLE public.orders`), its statements. */
interface SchemaEntry {
  readonly type: string;
  readonly label: string;
  sql: string;
}

/**
 * The entries of a pg_dump script; the first is what comes before any object (the session settings).
 * Headers are comment lines between statements: a line of the same text in a string or a function
 * body is part of that statement.
 */
function schemaEntries(sql: string): SchemaEntry[] {
  const entries: SchemaEntry[] = [{ type: '', label: 'the script header (SET statements)', sql: '' }];
  for (const [line, topLevel] of topLevelLines(sql)) {
    const header = topLevel ? /^-- (?:Data for )?Name: (.*); Type: (.*); Schema: ([^;]*);/.exec(line) : null;
    if (header) {
      const [, name, type, schema] = header;
      entries.push({ type: type!, label: `${type} ${schema === '-' ? '' : `${schema}.`}${name}`, sql: '' });
      continue;
    }
    const entry = entries.at(-1)!;
    entry.sql = entry.sql === '' ? line : `${entry.sql}\n${line}`;
  }
  return entries;
}

/**
 * Entry types that build an index or a constraint of one table from that table's rows alone. pg_dump
 * writes them one after the other after the data, none needs another, and they are most of the time
 * of the post-data: two can be built at once, as pg_restore -j builds them.
 */
const BUILDS = new Set(['INDEX', 'CONSTRAINT']);

/**
 * Session settings pg_dump writes only when they change from one object to the next (the tablespace
 * and table access method new objects get): an entry run on another connection, or after entries
 * that ran elsewhere, needs them as the script had them at its place.
 */
const CARRIED_SETTING = /^SET (default_tablespace|default_table_access_method) = .*;$/;

/**
 * Runs a pg_dump script entry by entry (pg_dump heads each with `-- Name: ...; Type: ...`), so a
 * statement the target refuses is named in the error, as pg_restore names the entry it was at.
 *
 * Given `helpers` (more connections to the same database), runs of index and constraint entries
 * are built on `client` and the helpers at once, each connection one statement at a time. Every
 * other entry waits for the builds before it and runs alone on `client`, in the script's order, so
 * whatever depends on an index or a constraint (a foreign key, an index attached to a partitioned
 * one) finds it built. A build the server ends as a deadlock (two statements locking a partitioned
 * table and a partition in opposite orders) runs again once the others are done.
 */
export async function applySchema(client: pg.Client, sql: string, target: PgTarget, helpers: readonly pg.Client[] = []): Promise<void> {
  const entries = schemaEntries(sql);
  const run = async (c: pg.Client, step: { entry: SchemaEntry; sql: string }): Promise<void> => {
    try {
      await c.query(step.sql);
    } catch (err) {
      throw restoreFailed(target, redactable`the schema statement for ${named(step.entry.label, 'object')}`, err);
    }
  };
  for (const c of [client, ...helpers]) await runHeader(c, entries[0]!, target);
  // On one connection the session carries pg_dump's settings from entry to entry; across several,
  // each entry gets those in force at its place in the script, then its own statements.
  const settings = new Map<string, string>();
  const steps = entries.slice(1).flatMap((entry) => {
    const before = [...settings.values()];
    for (const [line, topLevel] of topLevelLines(entry.sql)) {
      const set = topLevel ? CARRIED_SETTING.exec(line) : null;
      if (set) settings.set(set[1]!, line);
    }
    if (normaliseSchema(entry.sql) === '') return [];
    return [{ entry, sql: helpers.length > 0 && before.length > 0 ? `${before.join('\n')}\n${entry.sql}` : entry.sql }];
  });
  for (let at = 0; at < steps.length; ) {
    if (helpers.length === 0 || !BUILDS.has(steps[at]!.entry.type)) {
      await run(client, steps[at]!);
      at += 1;
      continue;
    }
    let end = at;
    while (end < steps.length && BUILDS.has(steps[end]!.entry.type)) end += 1;
    const batch = steps.slice(at, end);
    const again: typeof batch = [];
    let next = 0;
    let failure: unknown;
    // Every connection finishes the statement it is in before the error is thrown: the caller
    // closes them next.
    await Promise.all(
      [client, ...helpers].map(async (c) => {
        while (failure === undefined && next < batch.length) {
          const step = batch[next++]!;
          try {
            await c.query(step.sql);
          } catch (err) {
            if ((err as { code?: string }).code === DEADLOCK) again.push(step);
            else failure ??= restoreFailed(target, redactable`the schema statement for ${named(step.entry.label, 'object')}`, err);
          }
        }
      }),
    );
    if (failure !== undefined) throw failure;
    for (const step of again) await run(client, step);
    at = end;
  }
}

/**
 * Gives a connection the session settings a pg_dump script opens with (search_path, the quoting and
 * encoding rules), as pg_restore gives every connection it opens: rows loaded on another connection
 * than the schema's are read under the same rules.
 */
export async function applyScriptHeader(client: pg.Client, sql: string, target: PgTarget): Promise<void> {
  await runHeader(client, schemaEntries(sql)[0]!, target);
}

async function runHeader(client: pg.Client, header: SchemaEntry, target: PgTarget): Promise<void> {
  if (normaliseSchema(header.sql) === '') return;
  try {
    await client.query(header.sql);
  } catch (err) {
    throw restoreFailed(target, redactable`the schema statement for ${named(header.label, 'object')}`, err);
  }
}

/** SQLSTATE deadlock_detected. */
const DEADLOCK = '40P01';
