import { createRequire } from 'node:module';
import type Database from 'better-sqlite3';

const requireLazily = createRequire(import.meta.url);
let driver: typeof Database | undefined;

/**
 * Opens a database with better-sqlite3, which is loaded at the first open: every strata process
 * loads this engine (for its name, its URLs, its help), and a run that opens no SQLite database
 * (`strata --help`, a PostgreSQL archive_command) goes without the native addon.
 */
export function openDatabase(file: string, options?: Database.Options): Database.Database {
  driver ??= requireLazily('better-sqlite3') as typeof Database;
  return new driver(file, options);
}
