import type mysql from 'mysql2/promise';
import { sweepAndReport } from '@strata/core';
import type { IdentifierLimit, LeftoverServer } from '@strata/core';
import { connect, ident } from './mysql-connection.js';
import type { MysqlTarget } from './mysql-connection.js';

/** MySQL and MariaDB refuse database names longer than 64 characters. */
export const MYSQL_IDENTIFIER_LIMIT: IdentifierLimit = { max: 64, unit: 'characters' };

/**
 * Removes what killed restores and verifications left on the server of `server`, and says so.
 *
 * An aside database receives the target's tables in the one RENAME TABLE that swaps the restored
 * ones in. Empty, it is only a leftover. Holding tables, it holds the user's old data, and the
 * restore stopped after its swap (the target may lack views, triggers and events): it stays, and
 * the report says what it holds and what to do.
 */
export async function sweepMysqlLeftovers(server: MysqlTarget, operation: string): Promise<void> {
  const admin = await connect(server, { useDatabase: false });
  try {
    const leftovers: LeftoverServer = {
      limit: MYSQL_IDENTIFIER_LIMIT,
      databases: async () => (await admin.query<mysql.RowDataPacket[]>('SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA'))[0].map((r) => r['name'] as string),
      drop: async (name) => void (await admin.query(`DROP DATABASE IF EXISTS ${ident(name)}`)),
      settleAside: async (aside) => {
        const [[row]] = (await admin.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [aside.name])) as unknown as [mysql.RowDataPacket[]];
        const tables = Number(row?.['n'] ?? 0);
        if (tables === 0) {
          await admin.query(`DROP DATABASE IF EXISTS ${ident(aside.name)}`);
          return `removed the empty database ${aside.name} of a restore that did not finish`;
        }
        const target = aside.complete ? aside.prefix : `the database whose name starts with ${aside.prefix}`;
        return `kept ${aside.name}: it holds ${tables} table(s) of ${target} that a restore replaced before it stopped (views, triggers and events may be missing there); restore again, then DROP DATABASE ${ident(aside.name)}`;
      },
    };
    await sweepAndReport(leftovers, operation);
  } finally {
    await admin.end().catch(() => undefined);
  }
}
