// One of several processes racing to create the same objects with createExclusive, round after
// round, for the storage conformance suite. It opens the storage by its location, as a second
// Strata process would. Round N starts when the object `race/go-N` appears; the racer then tries
// to create `race/key-N` with its own pid as content and reports the outcome in `race/done-N-PID`.
// Run as `node storage-racer.js LOCATION ROUNDS`.
import { setTimeout as delay } from 'node:timers/promises';
import { isNotFound, openStorage } from '@strata/sdk';

const [location, rounds] = [process.argv[2]!, Number(process.argv[3])];
const storage = openStorage(location);
// A local folder answers a stat in microseconds; a remote store is asked less often.
const pollMs = /^s3:/i.test(location) ? 200 : 2;
for (let round = 0; round < rounds; round++) {
  for (;;) {
    try {
      await storage.stat(`race/go-${round}`);
      break;
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await delay(pollMs);
    }
  }
  const won = await storage.createExclusive(`race/key-${round}`, Buffer.from(String(process.pid)));
  await storage.put(`race/done-${round}-${process.pid}`, Buffer.from(won ? 'won' : 'lost'));
}
