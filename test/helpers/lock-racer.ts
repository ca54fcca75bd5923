// One of several processes racing for the repository lock, round after round. Each round starts
// when the test writes `go-<round>` (after putting a dead process's lock in place), so every racer
// judges the same stale lock at the same moment. While it holds the lock a racer creates `inside`
// exclusively: a second holder at the same time fails to, and reports it.
// Run by test/lock-race.test.ts as `node lock-racer.js REPO ROUNDS`.
import { closeSync, existsSync, openSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { LocalStorage, withRepositoryLock } from '@strata/sdk';

const [repo, rounds] = [process.argv[2]!, Number(process.argv[3])];
const storage = new LocalStorage(repo);
const inside = path.join(repo, 'inside');
let doubles = 0;
for (let round = 0; round < rounds; round++) {
  while (!existsSync(path.join(repo, `go-${round}`))) await delay(2);
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
    { waitMs: 120_000 },
  );
  writeFileSync(path.join(repo, `done-${round}-${process.pid}`), '');
}
process.stdout.write(String(doubles));
