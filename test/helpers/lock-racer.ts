// One of several processes racing for the repository lock, round after round. Each round starts
// when the test writes `go-<round>` into MARKERS (after putting a dead process's lock in place), so
// every racer judges the same stale lock at the same moment. While it holds the lock a racer creates
// MARKERS/inside exclusively: a second holder at the same time fails to, and reports it. The markers
// are a local folder: the racers share this host, and the repository may be a bucket.
// Run by test/lock-race.test.ts as `node lock-racer.js LOCATION MARKERS ROUNDS`.
import { closeSync, existsSync, openSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { openStorage, withRepositoryLock } from '@strata/sdk';

const [location, markers, rounds] = [process.argv[2]!, process.argv[3]!, Number(process.argv[4])];
const storage = openStorage(location);
const inside = path.join(markers, 'inside');
let doubles = 0;
for (let round = 0; round < rounds; round++) {
  while (!existsSync(path.join(markers, `go-${round}`))) await delay(2);
  await withRepositoryLock(
    storage,
    'race',
    async () => {
      try {
        closeSync(openSync(inside, 'wx'));
      } catch {
        doubles++;
        return;
      }
      await delay(5);
      rmSync(inside);
    },
    { waitMs: 300_000 },
  );
  writeFileSync(path.join(markers, `done-${round}-${process.pid}`), '');
}
process.stdout.write(String(doubles));
