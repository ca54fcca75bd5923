import type mysql from 'mysql2/promise';
import type { IdentifierLimit, ServerAdmin } from '@strata/core';
import { ident } from './mysql-connection.js';
import { settleSwap } from './mysql-swap.js';

/** MySQL and MariaDB refuse database names longer than 64 characters. */
export const MYSQL_IDENTIFIER_LIMIT: IdentifierLimit = { max: 64, unit: 'characters' };

/**
 * The shared scaffolding's view of a connection that uses no database.
 *
 * An aside database receives the target's tables after the swap that moves the restored ones in,
 * and holds the record of that swap: the sweep finishes the restore from it, or recreates what
 * the target lacks (see settleSwap). One without a record was made by an older Strata: empty, it
 * is only a leftover; holding tables, it holds the user's old data, and the restore stopped after
 * its swap (the target may lack views, triggers and events): it stays, and the report says what
 * it holds and what to do.
 */
export function mysqlAdmin(admin: mysql.Connection): ServerAdmin {
  const schemas = async (): Promise<string[]> => (await admin.query<mysql.RowDataPacket[]>('SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA'))[0].map((r) => r['name'] as string);
  return {
    databases: schemas,
    exists: async (database) => (await admin.query<mysql.RowDataPacket[]>('SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [database]))[0].length > 0,
    drop: async (name) => void (await admin.query(`DROP DATABASE IF EXISTS ${ident(name)}`)),
    settleAside: async (aside) => {
      const settled = await settleSwap(admin, aside);
      if (settled !== undefined) return settled;
      const [[row]] = (await admin.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [aside.name])) as unknown as [mysql.RowDataPacket[]];
      const tables = Number(row?.['n'] ?? 0);
      if (tables === 0) {
        await admin.query(`DROP DATABASE IF EXISTS ${ident(aside.name)}`);
        return `removed the empty database ${aside.name} of a restore that did not finish`;
      }
      const target = aside.complete ? aside.prefix : `the database whose name starts with ${aside.prefix}`;
      return `kept ${aside.name}: it holds ${tables} table(s) of ${target} that a restore replaced before it stopped (views, triggers and events may be missing there); restore again, then DROP DATABASE ${ident(aside.name)}`;
    },
    close: () => admin.end(),
  };
}
