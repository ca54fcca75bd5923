// The replicator of bench/pitr.mjs, run as a child process beside the writer:
//
//   STRATA_PASSPHRASE=... node bench/lib/pitr-replicator.mjs REPO DB INTERVAL_MS
//
// What `strata replicate DB --repo REPO --interval ...` runs (the SDK's `Repository.replicate`,
// the same core code), with the repository's storage wrapped so every call to it is counted.
// One JSON line per event on stdout, stamped with the time this process saw it:
//   { kind: 'base', t, id, counts }          the base restore point was committed
//   { kind: 'segment', t, transactions, storedBytes }   a segment was committed (the catalog lists it)
//   { kind: 'lost' | 'retry' | 'resumed', t, ... }
//   { kind: 'stopped', t, summary, counts }  after SIGTERM, once everything read was shipped
// `counts` are the storage calls so far, by kind (put, get, read, stat, list, delete,
// createExclusive; `list` counts S3's pages of up to 1,000 objects), and `listed`: how many
// objects the lists returned.
import { openRepository, openStorage, Passphrase } from '../../packages/sdk/dist/index.js';

const [repoPath, db, intervalArg] = process.argv.slice(2);
if (!repoPath || !db || !intervalArg) throw new Error('usage: pitr-replicator REPO DB INTERVAL_MS');
const counts = { put: 0, get: 0, read: 0, stat: 0, list: 0, listed: 0, delete: 0, createExclusive: 0 };

/** The local storage of REPO, every call counted (lists also count the objects they return). */
function counted(storage) {
  return new Proxy(storage, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (prop === 'list') {
        return async function* (...args) {
          // One LIST request per 1,000 objects returned (S3's page), at least one.
          let n = 0;
          try {
            for await (const item of value.apply(target, args)) {
              n++;
              yield item;
            }
          } finally {
            counts.list += Math.max(1, Math.ceil(n / 1000));
            counts.listed += n;
          }
        };
      }
      if (prop in counts) return (...args) => { counts[prop]++; return value.apply(target, args); };
      return value.bind(target);
    },
  });
}

const emit = (event) => process.stdout.write(JSON.stringify({ ...event, t: Date.now() }) + '\n');
const stop = new AbortController();
process.on('SIGTERM', () => stop.abort());
process.on('SIGINT', () => stop.abort());

const repository = await openRepository(counted(openStorage(repoPath)), { passphrase: new Passphrase(process.env.STRATA_PASSPHRASE) });
try {
  const summary = await repository.replicate(db, {
    database: 'app',
    intervalMs: Number(intervalArg),
    signal: stop.signal,
    onEvent: (event) => {
      switch (event.kind) {
        case 'base': emit({ kind: 'base', id: event.base.id, reason: event.reason, counts: { ...counts } }); break;
        case 'segment': emit({ kind: 'segment', sequence: event.segment.sequence, transactions: event.segment.transactions, storedBytes: event.segment.storedBytes }); break;
        case 'resumed': emit({ kind: 'resumed', base: event.base }); break;
        case 'lost': emit({ kind: 'lost', reason: event.reason }); break;
        case 'retry': emit({ kind: 'retry', error: event.error }); break;
      }
    },
  });
  emit({ kind: 'stopped', summary, counts: { ...counts } });
} finally {
  await repository.close();
}
