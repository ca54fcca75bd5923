import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './env.js';

/**
 * A script that makes one key change (ACTION add, passwd, remove of ID, else rotate) to the
 * repository REPO opened with passphrase OLD (OTHER: the other passphrase it adds or changes to),
 * through storage that SIGKILLs the process just before its KILL_AT-th write (put, delete, append,
 * exclusive create, rename): what kill -9 or a power cut leaves. Prints how many writes it made.
 */
export const DYING_KEY_CHANGE = `import { LocalStorage, Passphrase, openRepository } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'packages/sdk/dist/index.js')).href)};
const inner = new LocalStorage(process.env.REPO);
let writes = 0;
const storage = new Proxy(inner, {
  get(target, name) {
    const value = Reflect.get(target, name, target);
    if (typeof value !== 'function') return value;
    if (!['put', 'delete', 'append', 'createExclusive', 'rename'].includes(name)) return value.bind(target);
    return (...args) => {
      if (++writes === Number(process.env.KILL_AT)) process.kill(process.pid, 'SIGKILL');
      return value.apply(target, args);
    };
  },
});
const repo = await openRepository(storage, { passphrase: new Passphrase(process.env.OLD) });
// Only the changes that add or change to another passphrase have one.
const other = () => new Passphrase(process.env.OTHER);
if (process.env.ACTION === 'add') await repo.keys.add({ passphrase: other(), label: 'new' });
else if (process.env.ACTION === 'passwd') await repo.keys.passwd({ passphrase: other() });
else if (process.env.ACTION === 'remove') await repo.keys.remove(process.env.ID);
else await repo.keys.rotate({ alsoPassphrases: [other()] });
await repo.close();
process.stdout.write(String(writes));
`;
