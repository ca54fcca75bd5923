/**
 * The reliability scenarios: seeded, counted, and run twice: bounded in the normal test suite
 * (test/reliability.test.ts) and long by `npm run test:soak` (scripts/soak.mjs). Each returns
 * how often it ran and every problem it saw; a problem is anything a user would call data loss,
 * a silent failure, a crash, or a leaked secret.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import fc from 'fast-check';
import Database from 'better-sqlite3';
import { Passphrase, initRepository, isStrataError, openRepository, readTar, LocalStorage } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { buildRichDatabase, mutate } from '../helpers/databases.js';
import { CLI, ROOT, TEST_PASSPHRASE, sqliteDump, catalogPath } from '../helpers/env.js';
import { Databases, PG_URL, pgDump, pgQuery } from '../helpers/postgres.js';
import { DiskFullStorage } from '../helpers/faulty-storage.js';

export interface ScenarioResult {
  readonly scenario: string;
  readonly runs: number;
  /** Runs in which Strata caught the fault (verify failed, restore refused, a clean error). */
  readonly detected: number;
  readonly problems: string[];
}

/** mulberry32: small, seeded, good enough to pick mutations reproducibly. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const passphrase = new Passphrase(TEST_PASSPHRASE);
const pick = <T>(random: () => number, xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;

/** A repository with a full, two incrementals, a differential and a schema-only backup, and the dump each should restore. */
async function pristineRepository(work: string): Promise<{ repo: string; expected: Map<string, string> }> {
  const db = path.join(work, 'source.db');
  buildRichDatabase(db, { rows: 150 });
  const repo = path.join(work, 'pristine');
  await initRepository(repo, { encryption: 'compat', passphrase });
  const r = await openRepository(repo, { passphrase, tempDir: path.join(work, 'tmp') });
  const expected = new Map<string, string>();
  for (const [i, type] of (['full', 'incremental', 'incremental', 'differential', 'schema-only'] as const).entries()) {
    mutate(db, i + 1);
    const b = await r.backup(db, { database: 'app', type });
    if (type !== 'schema-only') expected.set(b.id, sqliteDump(db));
  }
  await r.close();
  return { repo, expected };
}

/**
 * Corruption: flip a byte, truncate, delete or swap artifacts, or edit the catalog, then verify
 * everything and restore one backup. Every artifact change must fail verification; nothing may
 * restore wrong data; nothing may throw anything but a StrataError.
 */
export async function corruptionSweep(options: { seed: number; mutations: number; work: string }): Promise<ScenarioResult> {
  const random = rng(options.seed);
  const problems: string[] = [];
  let detected = 0;
  const { repo: pristine, expected } = await pristineRepository(options.work);
  const catalog = JSON.parse(readFileSync(catalogPath(pristine), 'utf8')) as { backups: BackupRecord[] };
  const records = catalog.backups;
  for (let i = 0; i < options.mutations; i++) {
    const repo = path.join(options.work, 'mutated');
    rmSync(repo, { recursive: true, force: true });
    cpSync(pristine, repo, { recursive: true });
    const victim = pick(random, records);
    const file = path.join(repo, victim.key);
    const kind = pick(random, ['flip', 'flip', 'truncate', 'delete', 'swap', 'catalog-sha', 'catalog-size', 'catalog-parent', 'catalog-garbage'] as const);
    let label: string = kind;
    switch (kind) {
      case 'flip': {
        const bytes = readFileSync(file);
        const at = Math.floor(random() * bytes.length);
        bytes[at]! ^= 1 + Math.floor(random() * 255);
        writeFileSync(file, bytes);
        label = `flip byte ${at} of ${victim.id}`;
        break;
      }
      case 'truncate': {
        const size = statSync(file).size;
        const to = Math.floor(random() * size);
        truncateSync(file, to);
        label = `truncate ${victim.id} to ${to} of ${size}`;
        break;
      }
      case 'delete':
        rmSync(file);
        label = `delete ${victim.id}`;
        break;
      case 'swap': {
        const other = pick(random, records.filter((r) => r.id !== victim.id));
        const a = readFileSync(file);
        writeFileSync(file, readFileSync(path.join(repo, other.key)));
        writeFileSync(path.join(repo, other.key), a);
        label = `swap ${victim.id} and ${other.id}`;
        break;
      }
      default: {
        const cat = JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { backups: Record<string, unknown>[] };
        const entry = cat.backups.find((b) => b['id'] === victim.id)!;
        if (kind === 'catalog-sha') entry['sha256'] = '0'.repeat(64);
        if (kind === 'catalog-size') entry['storedBytes'] = Number(entry['storedBytes']) + 1;
        if (kind === 'catalog-parent') entry['parent'] = pick(random, records).id;
        const text = kind === 'catalog-garbage' ? JSON.stringify(cat).slice(0, Math.floor(random() * 200)) : JSON.stringify(cat);
        writeFileSync(catalogPath(repo), text);
        label = `${kind} of ${victim.id}`;
      }
    }
    try {
      const r = await openRepository(repo, { passphrase, tempDir: path.join(options.work, 'tmp') });
      const reports = await r.verify('all', { level: 'quick' });
      const failed = new Set(reports.filter((x) => x.outcome === 'failed').map((x) => x.backupId));
      const artifactChanged = ['flip', 'truncate', 'delete', 'swap'].includes(kind);
      if (artifactChanged && !failed.has(victim.id) && !(kind === 'swap' && failed.size > 0)) {
        problems.push(`${label}: verify did not fail ${victim.id}`);
      }
      let restoreFailed = false;
      const target = path.join(options.work, `restored-${i}.db`);
      const wanted = pick(random, [...expected.keys()]);
      try {
        await r.restore({ id: wanted }, { to: target });
        if (sqliteDump(target) !== expected.get(wanted)) problems.push(`${label}: restore of ${wanted} succeeded with wrong data`);
      } catch (err) {
        restoreFailed = true;
        if (!isStrataError(err)) problems.push(`${label}: restore threw a non-Strata error: ${String(err)}`);
        if (existsSync(target)) problems.push(`${label}: a failed restore left ${target}`);
      }
      if (failed.size > 0 || restoreFailed) detected++;
      await r.close();
    } catch (err) {
      if (!isStrataError(err)) problems.push(`${label}: threw a non-Strata error: ${String(err)}`);
      else detected++;
    }
    rmSync(path.join(options.work, `restored-${i}.db`), { force: true });
  }
  return { scenario: 'corruption', runs: options.mutations, detected, problems };
}

/** Hostile input: random and mutated archives fed to the tar reader. Only StrataErrors may come out. */
export async function archiveFuzz(options: { seed: number; runs: number }): Promise<ScenarioResult> {
  const problems: string[] = [];
  let detected = 0;
  const header = (name: string, size: number, type = '0'): Buffer => {
    const h = Buffer.alloc(512);
    h.write(name, 0, 100);
    h.write('0000644\0', 100);
    h.write(size.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write(type, 156);
    h.write('ustar\0', 257);
    h.fill(' ', 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    return h;
  };
  const valid = Buffer.concat([header('manifest.json', 2), Buffer.from('{}'), Buffer.alloc(510), Buffer.alloc(1024)]);
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 4096 }),
        fc.tuple(fc.nat({ max: valid.length - 1 }), fc.integer({ min: 1, max: 255 })).map(([at, x]) => {
          const b = Buffer.from(valid);
          b[at]! ^= x;
          return new Uint8Array(b);
        }),
        fc.tuple(fc.constantFrom('../x', '/etc/passwd', 'a/../../b', 'ok', 'C:\\x'), fc.constantFrom('0', '1', '2', '5', 'x'), fc.nat({ max: 2 ** 40 })).map(
          ([name, type, size]) => new Uint8Array(Buffer.concat([header(name, size, type), Buffer.alloc(1024)])),
        ),
      ),
      async (bytes) => {
        try {
          const source = (async function* () {
            yield bytes;
          })();
          for await (const entry of readTar(source)) for await (const _ of entry.body) void _;
        } catch (err) {
          if (!isStrataError(err)) {
            problems.push(`non-Strata error ${String(err)} for input ${Buffer.from(bytes).subarray(0, 64).toString('hex')}`);
            return false;
          }
          detected++;
        }
        return true;
      },
    ),
    { numRuns: options.runs, seed: options.seed },
  ).catch((err) => problems.push(String(err).split('\n').slice(0, 3).join(' ')));
  return { scenario: 'archive fuzz', runs: options.runs, detected, problems };
}

/** Full disk: the repository's storage fails with ENOSPC after a random number of bytes. */
export async function fullDiskSweep(options: { seed: number; runs: number; work: string }): Promise<ScenarioResult> {
  const random = rng(options.seed);
  const problems: string[] = [];
  let detected = 0;
  const db = path.join(options.work, 'disk.db');
  buildRichDatabase(db, { rows: 300 });
  const repoDir = path.join(options.work, 'disk-repo');
  const storage = new DiskFullStorage(repoDir, Number.MAX_SAFE_INTEGER);
  await initRepository(storage, { encryption: 'compat', passphrase });
  const r = await openRepository(storage, { passphrase, tempDir: path.join(options.work, 'tmp') });
  const first = await r.backup(db, { database: 'app' });
  for (let i = 0; i < options.runs; i++) {
    mutate(db, i + 10);
    const before = (await r.list()).map((b) => b.id);
    storage.setBudget(Math.floor(random() * (first.storedBytes + 20_000)));
    try {
      await r.backup(db, { database: 'app', type: random() < 0.5 ? 'full' : 'incremental' });
    } catch (err) {
      if (!isStrataError(err)) problems.push(`run ${i}: non-Strata error ${String(err)}`);
      else if (err.code !== 'NO_SPACE' && err.code !== 'IO') problems.push(`run ${i}: unexpected ${err.code}: ${err.message}`);
      else detected++;
      storage.setBudget(Number.MAX_SAFE_INTEGER);
      const after = (await r.list()).map((b) => b.id);
      if (JSON.stringify(after) !== JSON.stringify(before)) problems.push(`run ${i}: a failed backup changed the catalog`);
    }
    storage.setBudget(Number.MAX_SAFE_INTEGER);
    const leftovers = existsSync(path.join(repoDir, '.tmp')) ? readdirSync(path.join(repoDir, '.tmp')) : [];
    if (leftovers.length > 0) problems.push(`run ${i}: temporary files left: ${leftovers.join(', ')}`);
  }
  for (const report of await r.verify('all', { level: 'quick' })) if (report.outcome !== 'passed') problems.push(`after the sweep ${report.backupId} fails verification`);
  await r.close();
  return { scenario: 'full disk', runs: options.runs, detected, problems };
}

/** Runs the CLI and kills it with SIGKILL after `delayMs` (never, if undefined); resolves when it is gone, with how long it ran. */
function killAfter(args: string[], delayMs: number | undefined): Promise<{ killed: boolean; status: number | null; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE }, stdio: 'ignore' });
    let killed = false;
    const timer = delayMs === undefined ? undefined : setTimeout(() => {
      killed = child.kill('SIGKILL');
    }, delayMs);
    child.on('exit', (status) => {
      clearTimeout(timer);
      resolve({ killed: killed && status === null, status, ms: Date.now() - started });
    });
  });
}

/** The repository is consistent: every cataloged artifact is there at its size, and every artifact is cataloged (or awaiting a prune). */
function consistency(repo: string): string[] {
  const out: string[] = [];
  const catalog = JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { backups: BackupRecord[] };
  const pendingFile = path.join(repo, 'locks/pending-deletions.json');
  const pending = new Set(existsSync(pendingFile) ? (JSON.parse(readFileSync(pendingFile, 'utf8')) as string[]) : []);
  const keys = new Set(catalog.backups.map((b) => b.key));
  for (const b of catalog.backups) {
    const file = path.join(repo, b.key);
    if (!existsSync(file)) out.push(`catalog lists ${b.id} but its artifact is missing`);
    else if (statSync(file).size !== b.storedBytes) out.push(`${b.id} has the wrong size`);
  }
  const dir = path.join(repo, 'backups');
  for (const db of existsSync(dir) ? readdirSync(dir) : []) {
    for (const f of readdirSync(path.join(dir, db))) {
      const key = `backups/${db}/${f}`;
      if (!keys.has(key) && !pending.has(key)) out.push(`artifact ${key} is not in the catalog`);
    }
  }
  return out;
}

/**
 * Crash consistency: backup, incremental, prune and restore run as child processes and are
 * killed with SIGKILL at random moments. Afterwards the repository must be consistent, every
 * backup must verify, the run must read as FAILED (interrupted), and a restore target must be
 * absent or complete.
 *
 * `kills` counts runs the kill really ended: the sweep goes on until that many have been (a kill
 * that comes after the run finished still gets the checks, but is not counted). Each kill moment
 * is drawn from the whole length of its operation, as measured by an uninterrupted run of it, so
 * that the commit at the end is hit as often as the start, however fast or loaded the machine.
 */
export async function crashSweep(options: { seed: number; kills: number; work: string }): Promise<ScenarioResult> {
  const random = rng(options.seed);
  const problems: string[] = [];
  let detected = 0;
  const db = path.join(options.work, 'crash.db');
  const big = new Database(db);
  big.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)');
  const insert = big.prepare('INSERT INTO blobs(data) VALUES (randomblob(65536))');
  big.transaction(() => {
    for (let i = 0; i < 160; i++) insert.run();
  })();
  big.close();
  const repo = path.join(options.work, 'crash-repo');
  await initRepository(repo, { encryption: 'compat', passphrase });
  spawnSync(process.execPath, [CLI, 'backup', db, '--repo', repo], { env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE } });
  const ops = ['backup', 'incremental', 'prune', 'restore'] as const;
  // How long each operation runs uncut; grows when a later run takes longer.
  const length = new Map<(typeof ops)[number], number>();
  const maxRuns = options.kills * 4 + 20;
  let runs = 0;
  for (let i = 0; detected < options.kills && i < maxRuns; i++) {
    const op = pick(random, ops);
    const target = path.join(options.work, `crash-restore-${i}.db`);
    const args =
      op === 'backup'
        ? ['backup', db, '--repo', repo]
        : op === 'incremental'
          ? ['backup', db, '--repo', repo, '--type', 'incremental']
          : op === 'prune'
            ? ['prune', '--repo', repo, '--keep-last', '2']
            : ['restore', 'latest', '--repo', repo, '--to', target];
    if (op === 'incremental') {
      const w = new Database(db);
      w.prepare('UPDATE blobs SET data = randomblob(65536) WHERE id = ?').run(1 + Math.floor(random() * 160));
      w.close();
    }
    const measuring = !length.has(op);
    const { killed, ms } = await killAfter(args, measuring ? undefined : Math.floor(random() * length.get(op)!));
    if (!killed) length.set(op, Math.max(ms, length.get(op) ?? 0));
    runs++;
    if (killed) detected++;
    // Recovery is opening the repository (it sweeps what dead writers left); then it must agree.
    const r = await openRepository(repo, { passphrase, tempDir: path.join(options.work, 'tmp') });
    const found = consistency(repo);
    for (const f of found) problems.push(`kill ${i} (${op}): ${f}`);
    const last = (await r.journal.operations()).at(-1);
    if (killed && last && last.status === 'RUNNING') problems.push(`kill ${i} (${op}): the journal still shows ${last.op} RUNNING`);
    if (op === 'restore' && existsSync(target)) {
      const latest = (await r.list()).filter((b) => b.type !== 'schema-only').at(-1);
      if (latest) {
        try {
          const check = new Database(target, { readonly: true });
          const ok = (check.pragma('integrity_check', { simple: true }) as string) === 'ok';
          check.close();
          if (!ok) problems.push(`kill ${i} (restore): the target exists but is damaged`);
        } catch (err) {
          problems.push(`kill ${i} (restore): the target exists but does not open: ${String(err)}`);
        }
      }
      rmSync(target, { force: true });
    }
    if (i % 5 === 4 || detected === options.kills) {
      for (const report of await r.verify('all', { level: 'quick' })) if (report.outcome !== 'passed') problems.push(`kill ${i} (${op}): ${report.backupId} fails verification`);
    }
    await r.close();
    const leftovers = readdirSync(options.work).filter((f) => f.includes('strata-restore'));
    for (const f of leftovers) {
      // Temp files of a killed restore: harmless but worth counting; clean them for the next run.
      rmSync(path.join(options.work, f), { force: true });
    }
  }
  if (detected < options.kills) problems.push(`only ${detected} of ${runs} runs were ended by the kill; ${options.kills} were asked for`);
  await new LocalStorage(repo).sweepTemp();
  if (readdirSync(path.join(repo, '.tmp')).length > 0) problems.push('temporary files of killed writers survived a sweep');
  return { scenario: 'crash (SIGKILL)', runs, detected, problems };
}

/**
 * Concurrency: rounds of 2–4 processes backing up different databases and the same one while a
 * prune runs. Every backup that reported success must be in the catalog unless that prune
 * removed it, the catalog must be consistent, and no lock may be left behind.
 */
export async function concurrencySweep(options: { seed: number; rounds: number; work: string }): Promise<ScenarioResult> {
  const random = rng(options.seed);
  const problems: string[] = [];
  const dbs = ['a', 'b'].map((n) => {
    const file = path.join(options.work, `${n}.db`);
    buildRichDatabase(file, { rows: 40 });
    return file;
  });
  const repo = path.join(options.work, 'busy-repo');
  await initRepository(repo, { encryption: 'compat', passphrase });
  const run = (args: string[]): Promise<{ status: number | null; stdout: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args, '--repo', repo, '--json'], { env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE } });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.on('exit', (status) => resolve({ status, stdout }));
    });
  for (let round = 0; round < options.rounds; round++) {
    const jobs: string[][] = [];
    const n = 2 + Math.floor(random() * 3);
    for (let j = 0; j < n; j++) {
      const choice = random();
      if (choice < 0.7) jobs.push(['backup', pick(random, dbs), '--type', random() < 0.5 ? 'full' : 'incremental', '--auto-full']);
      else jobs.push(['prune', '--keep-last', '3']);
    }
    const results = await Promise.all(jobs.map(run));
    const made: string[] = [];
    const removed = new Set<string>();
    results.forEach((res, j) => {
      if (res.status !== 0) {
        problems.push(`round ${round}: ${jobs[j]!.join(' ')} exited ${res.status}: ${res.stdout.slice(0, 200)}`);
        return;
      }
      const doc = JSON.parse(res.stdout) as { id?: string; remove?: { id: string }[] };
      if (doc.id) made.push(doc.id);
      for (const d of doc.remove ?? []) removed.add(d.id);
    });
    const catalog = JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { backups: BackupRecord[] };
    const listed = new Set(catalog.backups.map((b) => b.id));
    for (const id of made) if (!listed.has(id) && !removed.has(id)) problems.push(`round ${round}: backup ${id} reported success but is not in the catalog`);
    for (const f of consistency(repo)) problems.push(`round ${round}: ${f}`);
    if (existsSync(path.join(repo, 'locks/repository.lock'))) problems.push(`round ${round}: a lock was left behind`);
  }
  const r = await openRepository(repo, { passphrase, tempDir: path.join(options.work, 'tmp') });
  for (const report of await r.verify('all', { level: 'quick' })) if (report.outcome !== 'passed') problems.push(`${report.backupId} fails verification after the rounds`);
  await r.close();
  return { scenario: 'concurrency', runs: options.rounds, detected: 0, problems };
}

/** One command of a secrets session and what it printed. */
interface SessionRun {
  readonly args: readonly string[];
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A PostgreSQL server for the secrets session: its URL, a database with rows, and a free name to restore into. */
export interface SecretsPostgres {
  /** The server, as the tests reach it (`postgres://user@host:port/db`); its password, if any, is the secret. */
  readonly server: string;
  readonly source: string;
  readonly restoreTo: string;
}

/**
 * Secrets: a whole CLI session with a fresh passphrase and, given a PostgreSQL server, a fresh
 * password in the server's URL, written in strata.config.json as an operator would, so that only
 * Strata could put it anywhere else. The session inits, backs up SQLite (and PostgreSQL: full and
 * incremental), verifies at level full, restores, lists, reads stats, health and inventory,
 * exports, and fails on purpose in ways whose messages name the URL (an unknown scheme, a missing
 * database). Neither secret may appear in any file the session wrote (the config file aside), any
 * stdout or stderr, or any `ps` snapshot, taken back to back while each command runs.
 *
 * The trust-authenticated test server accepts and ignores the password; where
 * STRATA_TEST_PG_URL carries a real one, that password is the secret instead.
 */
export async function secretsSession(options: { work: string; postgres?: SecretsPostgres }): Promise<ScenarioResult & { snapshots: number; sawPgDump: boolean }> {
  const { work, postgres } = options;
  const problems: string[] = [];
  const passphrase = `pass-${randomBytes(12).toString('hex')}`;
  const server = postgres ? new URL(postgres.server) : undefined;
  // Characters a URL must encode around a random core: the scan looks for the core, so it finds
  // the password however it was written (decoded, percent-encoded, escaped).
  const core = randomBytes(12).toString('hex');
  const password = server?.password ? decodeURIComponent(server.password) : `pw/${core}@:`;
  const passwordMark = server?.password ? password : core;
  const withPassword = (database: string, protocol = 'postgres:'): string => {
    const url = new URL(server?.toString() ?? 'postgres://postgres@127.0.0.1:5432/postgres');
    url.password = encodeURIComponent(password);
    url.pathname = `/${database}`;
    return url.toString().replace(/^postgres:/, protocol);
  };
  const databases: Record<string, { url: string }> = {
    app: { url: path.join(work, 'app.db') },
    // An unknown scheme: the error names the URL, and must mask its password.
    typo: { url: withPassword('shop', 'postgress:') },
  };
  if (postgres) {
    databases['shop'] = { url: withPassword(postgres.source) };
    databases['missing'] = { url: withPassword(`${postgres.source}_missing`) };
  }
  cpSync(path.join(ROOT, 'fixtures/sample.db'), path.join(work, 'app.db'));
  const configFile = path.join(work, 'strata.config.json');
  writeFileSync(configFile, JSON.stringify({ repository: 'repo', databases }, null, 2));
  mkdirSync(path.join(work, 'tmp'));

  const snapshots: string[] = [];
  const runs: SessionRun[] = [];
  const run = async (args: string[], expected: readonly number[], env: Record<string, string> = {}): Promise<SessionRun> => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: work,
      env: { ...process.env, STRATA_PASSPHRASE: passphrase, STRATA_TMPDIR: path.join(work, 'tmp'), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let running = true;
    const exited = new Promise<number | null>((resolve) => child.on('close', (status) => ((running = false), resolve(status))));
    // Back to back rather than on a timer, so short-lived children such as pg_dump are seen.
    while (running) snapshots.push(await processListAsync());
    const result = { args, status: await exited, stdout, stderr };
    runs.push(result);
    if (!expected.includes(result.status ?? -1)) problems.push(`strata ${args.join(' ')} exited ${result.status}, expected ${expected.join(' or ')}: ${stderr.slice(0, 300)}`);
    return result;
  };
  // Restores to a server and verification's scratch databases take the password the libpq way;
  // the config's URL is what backups use.
  const pgEnv = { PGPASSWORD: password };

  await run(['init'], [0]);
  await run(['backup', 'app', '--json'], [0]);
  await run(['backup', 'typo'], [1]);
  if (postgres) {
    await run(['backup', 'shop', '--json'], [0]);
    await pgQuery(postgres.source, 'INSERT INTO secrets_probe (note) SELECT md5(g::text) FROM generate_series(1, 50) g');
    await run(['backup', 'shop', '--type', 'incremental', '--json'], [0]);
    await run(['backup', 'missing', '--json'], [1]);
  }
  await run(['verify', '--all', '--level', 'full'], [0], pgEnv);
  await run(['restore', 'latest', '--db', 'app', '--to', path.join(work, 'restored.db')], [0]);
  if (postgres) {
    const target = new URL(withPassword(postgres.restoreTo));
    target.password = '';
    await run(['restore', 'latest', '--db', 'shop', '--to', target.toString(), '--json'], [0], pgEnv);
    if (pgDump(postgres.restoreTo) !== pgDump(postgres.source)) problems.push('the PostgreSQL restore does not match the source database');
  }
  await run(['list'], [0]);
  await run(['list', '--json'], [0]);
  await run(['stats'], [0]);
  // Unhealthy (3) is expected: the failed backups above are the latest runs of their databases.
  await run(['health'], [0, 3]);
  await run(['inventory', '--json'], [0]);
  const exported = path.join(work, 'export.tar.gz');
  await run(['export', '--all', '--out', exported], [0]);

  const scan = secretsScan({
    secrets: { passphrase, 'PostgreSQL password': passwordMark },
    folders: [work],
    skip: [configFile],
    outputs: [
      ...runs.map((r) => ({ label: `strata ${r.args.join(' ')}`, text: r.stdout + r.stderr })),
      // The file scan sees the export only compressed; its catalog and notes are plain inside.
      ...(existsSync(exported) ? [{ label: 'the export, decompressed', text: gunzipSync(readFileSync(exported)).toString('latin1') }] : []),
    ],
    processLists: snapshots,
  });
  return {
    ...scan,
    problems: [...problems, ...scan.problems],
    snapshots: snapshots.length,
    sawPgDump: snapshots.some((s) => /^\S*pg_dump /m.test(s)),
  };
}

/**
 * The secrets session, `sessions` times over with fresh secrets each time; with `postgres`, each
 * session also backs up, verifies and restores a fresh database of that server.
 */
export async function secretsSweep(options: { sessions: number; work: string; postgres: boolean }): Promise<ScenarioResult & { scanned: number; snapshots: number }> {
  const problems: string[] = [];
  let scanned = 0;
  let snapshots = 0;
  const databases = new Databases();
  try {
    for (let i = 0; i < options.sessions; i++) {
      const work = workDir(options.work, `session-${i}`);
      const postgres = options.postgres
        ? { server: PG_URL, source: await databases.create("CREATE TABLE secrets_probe (id serial PRIMARY KEY, note text); INSERT INTO secrets_probe (note) VALUES ('first')"), restoreTo: databases.name() }
        : undefined;
      const result = await secretsSession({ work, ...(postgres ? { postgres } : {}) });
      scanned += result.runs;
      snapshots += result.snapshots;
      problems.push(...result.problems.map((p) => `session ${i}: ${p}`));
      if (postgres && !result.sawPgDump) problems.push(`session ${i}: none of the ${result.snapshots} process lists caught pg_dump running`);
      if (postgres) await databases.dropAll();
      rmSync(work, { recursive: true, force: true });
    }
  } finally {
    if (options.postgres) await databases.dropAll();
  }
  // runs: sessions; scanned: files, outputs and process lists looked through, snapshots among them.
  return { scenario: options.postgres ? 'secrets (SQLite and PostgreSQL)' : 'secrets (SQLite only)', runs: options.sessions, detected: 0, problems, scanned, snapshots };
}

/**
 * Looks for each secret in every file under `folders` (but `skip`), in each output and in each
 * process list. The secrets are named by what they are, so a problem says which one leaked.
 */
export function secretsScan(options: {
  secrets: Readonly<Record<string, string>>;
  folders: readonly string[];
  skip?: readonly string[];
  outputs: readonly { label: string; text: string }[];
  processLists: readonly string[];
}): ScenarioResult {
  const problems: string[] = [];
  const secrets = Object.entries(options.secrets);
  let files = 0;
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (options.skip?.includes(full)) continue;
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) {
        files++;
        const bytes = readFileSync(full);
        for (const [name, secret] of secrets) if (bytes.includes(secret)) problems.push(`the ${name} is in ${full}`);
      }
    }
  };
  for (const folder of options.folders) if (existsSync(folder)) walk(folder);
  for (const { label, text } of options.outputs) for (const [name, secret] of secrets) if (text.includes(secret)) problems.push(`the ${name} is in the output of ${label}`);
  for (const [i, text] of options.processLists.entries()) {
    for (const [name, secret] of secrets) {
      if (text.includes(secret)) problems.push(`the ${name} is in process list ${i}: ${text.split('\n').find((l) => l.includes(secret))!.replaceAll(secret, '<secret>')}`);
    }
  }
  return { scenario: 'secrets', runs: files + options.outputs.length + options.processLists.length, detected: 0, problems };
}

/**
 * Every process's full command line (`ps`), to check no secret is on one; asynchronous, so the
 * children being watched keep running meanwhile.
 */
function processListAsync(): Promise<string> {
  return new Promise((resolve) => {
    const ps = spawn('ps', ['-ww', '-eo', 'args'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    ps.stdout.on('data', (d: Buffer) => (out += d.toString()));
    ps.on('close', () => resolve(out));
  });
}

/** Makes a fresh work folder. */
export function workDir(base: string, name: string): string {
  const dir = path.join(base, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}
