// The main job on the embedded default, as a user would run it: back up the SQLite database in
// fixtures/, list, verify, restore it to a new file, and show that the copy matches.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteEngine } from '@strata/sdk';

const root = fileURLToPath(new URL('..', import.meta.url));
const work = path.join(root, 'demo-output');
const cli = path.join(root, 'packages/cli/dist/main.js');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
copyFileSync(path.join(root, 'fixtures/sample.db'), path.join(work, 'app.db'));
writeFileSync(
  path.join(work, 'strata.config.json'),
  JSON.stringify({ repository: './repo', databases: { app: { url: 'sqlite:./app.db' } } }, null, 2) + '\n',
);
// A demo passphrase through the environment, never on a command line.
const env = { ...process.env, STRATA_PASSPHRASE: 'demo passphrase: keep yours somewhere safe' };

function strata(args, { json = false } = {}) {
  console.log(`\n$ strata ${args.join(' ')}`);
  const result = spawnSync(process.execPath, [cli, ...args], { cwd: work, env, encoding: 'utf8' });
  if (!json) process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  if (result.status !== 0) {
    console.error(`demo: strata ${args[0]} exited with ${result.status}`);
    process.exit(1);
  }
  return json ? JSON.parse(result.stdout) : result.stdout;
}

console.log(`demo folder: ${work}`);
strata(['init']);
const { id } = strata(['backup', 'app', '--label', 'demo', '--json'], { json: true });
console.log(`new backup: ${id}`);
strata(['backup', 'app', '--type', 'schema-only']);
strata(['list']);
strata(['verify', id, '--level', 'full']);
strata(['restore', id, '--to', 'restored.db']);

// Compare the restored copy with the original: schema fingerprint, every table's rows and checksum.
const engine = new SqliteEngine();
const original = await engine.inspect(path.join(work, 'app.db'));
const restored = await engine.inspect(path.join(work, 'restored.db'));
const same = JSON.stringify({ ...original, integrityErrors: [] }) === JSON.stringify({ ...restored, integrityErrors: [] });
console.log('\nrestored.db compared with app.db:');
for (const table of original.tables) {
  const other = restored.tables.find((t) => t.name === table.name);
  const ok = other && other.rows === table.rows && other.checksum === table.checksum;
  console.log(`  ${ok ? 'same' : 'DIFFERENT'}  ${table.name}: ${table.rows} rows`);
}
console.log(`  schema fingerprint ${original.schemaFingerprint === restored.schemaFingerprint ? 'same' : 'DIFFERENT'}; integrity check ${restored.integrityErrors.length === 0 ? 'ok' : restored.integrityErrors.join('; ')}`);
const sqlite3 = spawnSync('sqlite3', ['--version'], { encoding: 'utf8' });
if (sqlite3.status === 0) {
  const dump = (f) => spawnSync('sqlite3', [path.join(work, f), '.dump'], { encoding: 'utf8', maxBuffer: 1 << 30 }).stdout;
  console.log(`  sqlite3 .dump of both: ${dump('app.db') === dump('restored.db') ? 'identical' : 'DIFFERENT'}`);
}
if (!same || restored.integrityErrors.length > 0) {
  console.error('demo: the restored database does not match');
  process.exit(1);
}
console.log('\nThe restored database matches the original.');
