/**
 * Runs continuous capture's long checkpoints on a thread of their own (see WalFeed.maintain in
 * wal-capture.ts): a checkpoint after a VACUUM of a large database copies the whole database and
 * syncs it, seconds during which the replicator's own thread would see no commit, read no log and
 * ship nothing. One connection of its own, opened once; each message asks for one passive
 * checkpoint and is answered when it has ended.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const { file } = workerData as { file: string };
let db: Database.Database | undefined;
parentPort!.on('message', (id: number) => {
  try {
    if (!db) {
      db = new Database(file, { fileMustExist: true });
      // It never writes, but a commit could still trigger a checkpoint of its own.
      db.pragma('wal_autocheckpoint = 0');
    }
    db.pragma('wal_checkpoint(PASSIVE)');
    parentPort!.postMessage({ id });
  } catch (err) {
    parentPort!.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
});
