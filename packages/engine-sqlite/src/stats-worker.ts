/**
 * Computes per-table row counts and checksums of a snapshot copy on a worker thread, so the
 * main thread can stream (hash, compress, encrypt, write) the same copy at the same time.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { collectFacts } from './sqlite-facts.js';

const { file, withData, version } = workerData as { file: string; withData: boolean; version: number };
const db = new Database(file, { readonly: true, fileMustExist: true });
// One sequential pass over every table: a large page cache would only hold pages never read again.
db.pragma('cache_size = -2000');
try {
  parentPort!.postMessage({ tables: collectFacts(db, { withData, version }).tables });
} catch (err) {
  parentPort!.postMessage({ error: err instanceof Error ? err.message : String(err) });
} finally {
  db.close();
}
