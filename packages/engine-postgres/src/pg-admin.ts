import type pg from 'pg';
import type { IdentifierLimit, ServerAdmin } from '@strata/core';
import { ident } from './pg-connection.js';
import type { PgTarget } from './pg-connection.js';
import { dropDatabase } from './pg-database.js';

/** PostgreSQL cuts longer identifiers silently (NAMEDATALEN - 1), so names are made to fit. */
export const PG_IDENTIFIER_LIMIT: IdentifierLimit = { max: 63, unit: 'bytes' };

/**
 * The shared scaffolding's view of a connection to the server's maintenance database.
 *
 * An aside database is the user's old database, renamed out of the way for the swap. If its
 * restore's work database is gone, the new database was renamed into place: the aside was only
 * waiting to be dropped. If the target's name is free, the restore died between the two renames,
 * and the old database goes back under its name. Otherwise (the work database is still there and
 * the name is taken, or the name was too long to be kept whole) it stays, and the report says so.
 */
export function pgAdmin(admin: pg.Client, server: PgTarget): ServerAdmin {
  return {
    databases: async () => (await admin.query<{ name: string }>('SELECT datname AS name FROM pg_database')).rows.map((r) => r.name),
    exists: async (database) => (await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount! > 0,
    drop: (name) => dropDatabase(admin, server, name),
    settleAside: async (aside, { exists, workLeft }) => {
      if (aside.complete && !exists(aside.prefix)) {
        await admin.query(`ALTER DATABASE ${ident(aside.name)} RENAME TO ${ident(aside.prefix)}`);
        return `put database ${aside.prefix} back under its name: a restore that did not finish had renamed it to ${aside.name}`;
      }
      if (!workLeft) {
        await dropDatabase(admin, server, aside.name);
        return `removed ${aside.name}, the database that a restore of ${aside.prefix}${aside.complete ? '' : '...'} had replaced (the restored database was already in place)`;
      }
      return aside.complete
        ? `kept ${aside.name}: it holds the old ${aside.prefix} that a restore moved aside before it stopped, and another database now has that name; rename or drop it yourself`
        : `kept ${aside.name}: it holds the old database (its name starts with ${aside.prefix}) that a restore moved aside before it stopped; rename it back (ALTER DATABASE ... RENAME TO ...)`;
    },
    close: () => admin.end(),
  };
}
