import { randomBytes } from 'node:crypto';
import type BetterSqlite3 from 'better-sqlite3';
import { StrataError, errorText, named, redactable } from '@strata/core';

type Database = BetterSqlite3.Database;

/**
 * What storage an object of sqlite_schema owns: `rowid` a table b-tree, `index` an index b-tree
 * (indexes, automatic indexes, WITHOUT ROWID tables), `none` nothing (views, triggers),
 * `virtual` whatever its module builds, `shadow` a virtual table's storage (its module builds it).
 */
export type ObjectStorage = 'rowid' | 'index' | 'none' | 'virtual' | 'shadow';

/** One row of sqlite_schema, as a restore recreates it. */
export interface StoredObject {
  readonly type: string;
  readonly name: string;
  readonly tblName: string;
  readonly sql: string | null;
  readonly storage: ObjectStorage;
}

/** The rows of `schema`.sqlite_schema in creation order, minus ANALYZE statistics (data, not schema). */
export function storedObjects(db: Database, schema: string): StoredObject[] {
  const q = `"${schema.replace(/"/g, '""')}"`;
  const kinds = new Map(
    (db.prepare(`PRAGMA ${q}.table_list`).all() as { name: string; type: string; wr: number }[]).map((t) => [t.name, { type: t.type, withoutRowid: t.wr === 1 }]),
  );
  const rows = db
    .prepare(`SELECT type, name, tbl_name AS tblName, rootpage, sql FROM ${q}.sqlite_schema WHERE name NOT LIKE 'sqlite_stat%' ORDER BY rowid`)
    .all() as { type: string; name: string; tblName: string; rootpage: number | null; sql: string | null }[];
  return rows.map(({ rootpage, ...row }) => {
    const kind = kinds.get(row.name);
    let storage: ObjectStorage;
    if (row.type === 'table' && kind?.type === 'virtual') storage = 'virtual';
    else if (row.type === 'table' && kind?.type === 'shadow') storage = 'shadow';
    else if (!rootpage) storage = 'none';
    else storage = row.type === 'index' || kind?.withoutRowid ? 'index' : 'rowid';
    return { ...row, storage };
  });
}

/**
 * Creates schema objects in the main database of `db` with exactly their stored rows, in the
 * given order, inside the caller's transaction.
 *
 * Why not run their CREATE statements: a schema may use double-quoted string literals
 * (`DEFAULT "x"`, `WHERE a = "y"`), which SQLite accepts when it reads a schema but refuses in new
 * DDL unless the connection enables SQLITE_DBCONFIG_DQS_DDL, and better-sqlite3 is built with
 * SQLITE_DQS=0 and offers no way to enable it. Rewriting the SQL would change the schema. So each
 * object gets its storage from a placeholder of the same shape (a rowid table, a WITHOUT ROWID
 * table for an index b-tree, a view for no storage), and then the placeholder's sqlite_schema row
 * is rewritten, through `writable_schema`, into the stored row: SQLite itself then parses the
 * stored SQL when it reloads the schema, the same way it parses the original database's, and a row
 * it cannot parse fails here. Virtual tables are created by their statement, because their module
 * must build their storage; their shadow tables are skipped for the same reason.
 */
export function createStoredObjects(db: Database, objects: readonly StoredObject[]): void {
  if (objects.length === 0) return;
  // Two rows of one name would leave a schema SQLite refuses to load: say which object clashes.
  const taken = db.prepare('SELECT type FROM main.sqlite_schema WHERE name = ? COLLATE NOCASE');
  for (const object of objects) {
    const existing = object.storage === 'shadow' ? undefined : (taken.get(object.name) as { type: string } | undefined);
    if (existing) {
      const name = named(object.name, object.type);
      throw new StrataError('RESTORE_FAILED', redactable`restore: the target already holds ${existing.type} ${name}, so the backup's ${object.type} ${name} cannot be created; drop or rename it first`);
    }
  }
  const placeholder = `strata_placeholder_${randomBytes(6).toString('hex')}`;
  // Writing sqlite_schema needs the connection's defensive mode off (better-sqlite3 turns it on).
  db.unsafeMode(true);
  db.pragma('writable_schema = ON');
  try {
    const rewrite = db.prepare('UPDATE main.sqlite_schema SET type = ?, name = ?, tbl_name = ?, sql = ? WHERE name = ?');
    for (const [i, object] of objects.entries()) {
      if (object.storage === 'shadow') continue;
      if (object.storage === 'virtual') {
        db.exec(object.sql!);
        continue;
      }
      const name = `${placeholder}_${i}`;
      if (object.storage === 'rowid') db.exec(`CREATE TABLE main.${name} (x)`);
      else if (object.storage === 'index') db.exec(`CREATE TABLE main.${name} (x PRIMARY KEY) WITHOUT ROWID`);
      else db.exec(`CREATE VIEW main.${name} AS SELECT 1`);
      rewrite.run(object.type, object.name, object.tblName, object.sql, name);
    }
  } finally {
    // RESET turns writable_schema off and makes the connection read the schema again.
    db.pragma('writable_schema = RESET');
    db.unsafeMode(false);
  }
  // Reading the schema now surfaces a stored row SQLite cannot parse ("malformed database schema").
  try {
    db.prepare('SELECT count(*) FROM main.sqlite_schema').get();
  } catch (err) {
    throw new StrataError('RESTORE_FAILED', redactable`restore: SQLite does not accept the backup's schema objects (${errorText(err)})`, { cause: err });
  }
}
