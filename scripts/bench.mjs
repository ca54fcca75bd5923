// Runs every benchmark in bench/, one after the other, each with its own defaults (see
// bench/README.md for what each measures and how long it takes: about 4 hours in all, pitr's
// 1.5 hours and pg-pitr's 1.5 hours of them, more the first time, when the databases are built). `npm run bench -- sqlite-full scale` runs only those.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const all = ['sqlite-full', 'sqlite-incremental', 'postgres-full', 'mysql-full', 'server-incremental', 'scale', 's3', 'pitr', 'pg-pitr', 'pg-wal-push'];
const chosen = process.argv.slice(2).length > 0 ? process.argv.slice(2) : all;
const unknown = chosen.filter((name) => !all.includes(name));
if (unknown.length > 0) {
  console.error(`bench: no benchmark ${unknown.join(', ')} (there are: ${all.join(', ')})`);
  process.exit(2);
}
let failed = 0;
for (const name of chosen) {
  console.log(`\n=== bench/${name}.mjs ===`);
  const result = spawnSync(process.execPath, [fileURLToPath(new URL(`../bench/${name}.mjs`, import.meta.url))], { stdio: 'inherit' });
  if (result.status !== 0) {
    failed++;
    console.error(`bench/${name}.mjs failed (exit ${result.status ?? result.signal})`);
  }
}
process.exit(failed > 0 ? 1 : 0);
