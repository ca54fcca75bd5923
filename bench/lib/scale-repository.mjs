// The scale benchmark's repository: N real backups (default 10,000) of D small SQLite databases
// (default 2: `app` and `billing`), one backup per database per hour over simulated dates that end
// the day before 2026-11-21: every day a full backup at 00:30, a differential at 12:30 and
// incrementals in the other hours, a `pre-update` label now and then (as `strata run` leaves them).
// Each backup is a real artifact made by Repository.backup (tar, zstd 3, OpenPGP compat), of a
// database that changed a little since the hour before, with its catalog record, layout cache
// file and journal lines.
//
// Building 10,000 backups into one repository one after another would take hours: every backup
// rewrites the whole catalog (10 MB at the end), so the build alone is quadratic. So the days are
// cut into segments of ten, each built into a repository of its own by `jobs` child processes at
// once (a segment's chains start with its first day's full backup), and the segments are then
// merged: artifacts and cache files moved, catalogs concatenated, journals appended.
//
// Cached in bench/.data/scale-<N>x<D>/ (repo/ and scale.json); rebuilt when missing, of another
// generator version, or asked to.
//
//   ensureScaleRepository({ backups, databases, jobs, passphrase, rebuild }) -> { repo, meta, cached }
//   node bench/lib/scale-repository.mjs --segment   (a child building the segment it is sent over IPC)
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATA, betterSqlite3 } from './app-database.mjs';

export const SCALE_GENERATOR_VERSION = 2;
const SDK = new URL('../../packages/sdk/dist/index.js', import.meta.url).href;
const NAMES = ['app', 'billing', 'analytics', 'auth', 'search', 'audit', 'mail', 'cms'];
const HOUR = 3_600_000;
const SEGMENT_DAYS = 10;
/** The last simulated day is 2026-11-20; the first is as many days before as the backups need. */
const END = Date.UTC(2026, 10, 21);

/** The schedule: hour h (0-based) of database d. */
export function plan({ backups, databases }) {
  const hours = Math.ceil(backups / databases);
  const days = Math.ceil(hours / 24);
  const start = END - days * 24 * HOUR + 30 * 60_000;
  const at = (h) => new Date(start + h * HOUR);
  const type = (h) => (h % 24 === 0 ? 'full' : h % 24 === 12 ? 'differential' : 'incremental');
  const label = (h, d) => ((h * 7 + d * 31) % 97 === 0 && h % 24 !== 0 ? 'pre-update' : undefined);
  const count = (h, d) => h * databases + d < backups;
  return { hours, days, at, type, label, count, names: NAMES.slice(0, databases) };
}

// ---------------------------------------------------------------------------------------------
// One segment (in a child process)

async function buildSegment({ dir, firstDay, lastDay, backups, databases, passphrase }) {
  const { initRepository, openRepository, Passphrase } = await import(SDK);
  const Database = betterSqlite3();
  const p = plan({ backups, databases });
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const secret = new Passphrase(passphrase);
  await initRepository(path.join(dir, 'repo'), { encryption: 'compat', passphrase: secret });
  const repo = await openRepository(path.join(dir, 'repo'), { passphrase: secret, tempDir: path.join(dir, 'tmp') });
  try {
    // A small application database per name: 300 customers and their orders; every hour one new
    // order and one changed customer.
    const files = p.names.map((name) => {
      const file = path.join(dir, `${name}.db`);
      const db = new Database(file);
      db.exec(`PRAGMA journal_mode = WAL;
        CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, updated_at TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), total_cents INTEGER NOT NULL, created_at TEXT NOT NULL);
        CREATE INDEX orders_customer ON orders(customer_id);`);
      const ins = db.prepare('INSERT INTO customers (id, email, name) VALUES (?, ?, ?)');
      db.transaction(() => { for (let i = 1; i <= 300; i++) ins.run(i, `${name}.${i}@example.com`, `Customer ${i} of ${name}`); })();
      db.close();
      return file;
    });
    let made = 0;
    for (let h = firstDay * 24; h < Math.min((lastDay + 1) * 24, p.hours); h++) {
      for (let d = 0; d < databases; d++) {
        if (!p.count(h, d)) continue;
        const db = new Database(files[d]);
        const time = p.at(h).toISOString();
        db.prepare('INSERT INTO orders (customer_id, total_cents, created_at) VALUES (?, ?, ?)').run(1 + ((h * 13) % 300), 100 + ((h * 7919) % 90000), time);
        db.prepare('UPDATE customers SET updated_at = ? WHERE id = ?').run(time, 1 + ((h * 31) % 300));
        db.close();
        const label = p.label(h, d);
        await repo.backup(files[d], { database: p.names[d], type: p.type(h), time: p.at(h), ...(label ? { label } : {}) });
        made++;
      }
    }
    return made;
  } finally {
    await repo.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The whole repository

function runSegment(args) {
  return new Promise((resolve, reject) => {
    // The segment (with the passphrase) goes over the IPC channel: never in argv, where every
    // process on the machine could read it.
    const child = fork(fileURLToPath(import.meta.url), ['--segment'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.send(args);
    child.on('message', (m) => resolve(m.made));
    child.on('error', reject);
    child.on('exit', (code) => { if (code !== 0) reject(new Error(`segment ${args.dir} exited with ${code}`)); });
  });
}

/** Moves every file under `from` to the same relative path under `to`. */
function moveTree(from, to) {
  if (!fs.existsSync(from)) return 0;
  let n = 0;
  for (const rel of fs.readdirSync(from, { recursive: true })) {
    const src = path.join(from, rel);
    if (!fs.statSync(src).isFile()) continue;
    fs.mkdirSync(path.dirname(path.join(to, rel)), { recursive: true });
    fs.renameSync(src, path.join(to, rel));
    n++;
  }
  return n;
}

async function buildScaleRepository(root, { backups, databases, jobs, passphrase, log }) {
  const { initRepository, openRepository, Passphrase, LocalStorage, readCatalog, writeCatalog } = await import(SDK);
  const started = performance.now();
  const p = plan({ backups, databases });
  fs.rmSync(root, { recursive: true, force: true });
  const segments = [];
  for (let first = 0; first < p.days; first += SEGMENT_DAYS) {
    segments.push({ dir: path.join(root, 'segments', String(segments.length).padStart(3, '0')), firstDay: first, lastDay: Math.min(first + SEGMENT_DAYS, p.days) - 1, backups, databases, passphrase });
  }
  // `jobs` children at a time, each building whole segments.
  let next = 0;
  let made = 0;
  await Promise.all(Array.from({ length: Math.min(jobs, segments.length) }, async () => {
    while (next < segments.length) {
      const segment = segments[next++];
      const n = await runSegment(segment);
      made += n;
      log(`\r  building ${path.basename(root)}: ${made} / ${backups} backups (${((performance.now() - started) / 1000).toFixed(0)} s)`);
    }
  }));
  log('\n');

  // Merge: one repository, its catalog the segments' records, its journal theirs after its own.
  const repoDir = path.join(root, 'repo');
  const secret = new Passphrase(passphrase);
  await initRepository(repoDir, { encryption: 'compat', passphrase: secret });
  const records = [];
  let files = 0;
  for (const s of segments) {
    const from = path.join(s.dir, 'repo');
    records.push(...(await readCatalog(new LocalStorage(from))));
    files += moveTree(path.join(from, 'backups'), path.join(repoDir, 'backups'));
    files += moveTree(path.join(from, 'cache'), path.join(repoDir, 'cache'));
    // Journal records are objects of their own (init's too, which the merged repository has already).
    for (const name of fs.readdirSync(path.join(from, 'journal'))) {
      if (fs.readFileSync(path.join(from, 'journal', name), 'utf8').includes('"kind":"init"')) continue;
      fs.renameSync(path.join(from, 'journal', name), path.join(repoDir, 'journal', name));
    }
  }
  await writeCatalog(new LocalStorage(repoDir), records);
  fs.rmSync(path.join(root, 'segments'), { recursive: true, force: true });

  // Check: the catalog lists every backup, and every artifact is where it says.
  const repo = await openRepository(repoDir, { passphrase: secret });
  const listed = await repo.list();
  await repo.close();
  if (listed.length !== backups) throw new Error(`the merged repository lists ${listed.length} backups, expected ${backups}`);
  for (const r of listed) if (fs.statSync(path.join(repoDir, r.key)).size !== r.storedBytes) throw new Error(`${r.key} does not have the size its record says`);
  const types = {};
  for (const r of listed) types[r.type] = (types[r.type] ?? 0) + 1;
  return {
    generatorVersion: SCALE_GENERATOR_VERSION, backups, databases: p.names, days: p.days, first: listed[0].createdAt, last: listed.at(-1).createdAt,
    types, labelled: listed.filter((r) => r.label).length, files, catalogBytes: fs.readdirSync(path.join(repoDir, 'catalog')).reduce((sum, f) => sum + fs.statSync(path.join(repoDir, 'catalog', f)).size, 0),
    journalBytes: fs.readdirSync(path.join(repoDir, 'journal')).reduce((sum, f) => sum + fs.statSync(path.join(repoDir, 'journal', f)).size, 0),
    storedBytes: listed.reduce((sum, r) => sum + r.storedBytes, 0), buildSeconds: Math.round((performance.now() - started) / 100) / 10, jobs,
  };
}

/** The cached scale repository, built first when missing, of another generator version or shape, or when `rebuild`. */
export async function ensureScaleRepository({ backups = 10000, databases = 2, jobs = 2, passphrase, rebuild = false, log = (s) => process.stderr.write(s) }) {
  const root = path.join(DATA, `scale-${backups}x${databases}`);
  const metaFile = path.join(root, 'scale.json');
  if (!rebuild) {
    try {
      const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8'));
      if (meta.generatorVersion === SCALE_GENERATOR_VERSION && meta.backups === backups && fs.existsSync(path.join(root, 'repo', 'catalog'))) {
        return { repo: path.join(root, 'repo'), meta, cached: true };
      }
    } catch { /* build it */ }
  }
  const meta = await buildScaleRepository(root, { backups, databases, jobs, passphrase, log });
  fs.writeFileSync(metaFile, JSON.stringify(meta, null, 2) + '\n');
  return { repo: path.join(root, 'repo'), meta, cached: false };
}

if (process.argv[2] === '--segment' && process.argv[1] === fileURLToPath(import.meta.url)) {
  process.once('message', async (segment) => {
    const made = await buildSegment(segment);
    process.send({ made });
    process.disconnect();
  });
}
