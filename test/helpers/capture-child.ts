/**
 * A second continuous capture of a SQLite database, in a process of its own, for the tests of the
 * checkpoint lock (test/pitr-capture.test.ts): `node capture-child.js DB` prints `open` and reads and
 * maintains the log every 100 ms until SIGTERM, then closes and prints how many transactions it
 * read; refused, it prints `refused: MESSAGE` and exits 3.
 */
import { SqliteEngine } from '@strata/sdk';

const file = process.argv[2];
if (!file) throw new Error('usage: capture-child DB');
let feed: Awaited<ReturnType<SqliteEngine['changeCapture']['open']>>;
try {
  feed = await new SqliteEngine().changeCapture.open(file, {});
} catch (err) {
  console.log(`refused: ${(err as Error).message}`);
  process.exit(3);
}
let read = 0;
let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
});
console.log('open');
while (!stopping) {
  const got = await feed.read();
  if (got.lost) throw new Error(`lost: ${got.lost}`);
  read += got.transactions.length;
  const maintained = await feed.maintain();
  if (maintained.lost) throw new Error(`lost: ${maintained.lost}`);
  read += maintained.transactions.length;
  await new Promise((resolve) => setTimeout(resolve, 100));
}
await feed.close();
console.log(`read ${read}`);
