import { createRequire } from 'node:module';
import type Database from 'better-sqlite3';
import { StrataError } from '@strata/core';

const requireLazily = createRequire(import.meta.url);
let driver: typeof Database | undefined;

/**
 * Opens a database with better-sqlite3, which is loaded at the first open: every strata process
 * loads this engine (for its name, its URLs, its help), and a run that opens no SQLite database
 * (`strata --help`, a PostgreSQL archive_command) goes without the native addon.
 */
export function openDatabase(file: string, options?: Database.Options): Database.Database {
  try {
    driver ??= requireLazily('better-sqlite3') as typeof Database;
    return new driver(file, options);
  } catch (err) {
    if (driverDoesNotLoad(err)) {
      // The addon, not the database: after a Node upgrade without a rebuild, or an install whose
      // build failed. As its own code, so that verify records nothing against a good backup.
      throw new StrataError(
        'TOOL_MISSING',
        `SQLite: the better-sqlite3 addon does not load in this Node ${process.version} (${err instanceof Error ? err.message : String(err)}); run \`npm rebuild better-sqlite3\` where strata is installed (npm root -g), or install strata again with this Node`,
        { cause: err },
      );
    }
    throw err;
  }
}

/** A native addon that is missing, built for another Node, or for another platform. */
function driverDoesNotLoad(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  if (code === 'MODULE_NOT_FOUND' || code === 'ERR_DLOPEN_FAILED') return true;
  const message = err instanceof Error ? err.message : '';
  return /Could not locate the bindings file|NODE_MODULE_VERSION|did not self-register|invalid ELF header|cannot open shared object/.test(message);
}
