import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { CLI, TEST_PASSPHRASE, skipOrFail } from './env.js';

/**
 * A PostgreSQL cluster of a test's own (initdb in a temporary folder, a free port, WAL archived
 * through the built CLI into a repository beside it), for tests of physical backups. Root cannot
 * run PostgreSQL: as root, the cluster and every strata command run as the postgres user (as they
 * would in production).
 */

export const BINDIR = process.env['STRATA_TEST_PG_BINDIR'] ?? '/usr/lib/postgresql/15/bin';
export const isRoot = process.getuid?.() === 0;

/**
 * Tests that make a cluster of their own need PostgreSQL's server programs (initdb, pg_ctl):
 * without them, skip with one line outside CI, and fail under CI=true, where they are part of the
 * setup (.ci/run installs them).
 */
export function requireServerPrograms(context: Mocha.Context): void {
  if (existsSync(path.join(BINDIR, 'initdb'))) return;
  const message = `PostgreSQL's server programs are not in ${BINDIR} (install postgresql-15, or set STRATA_TEST_PG_BINDIR)`;
  skipOrFail(context, message);
}

/**
 * PostgreSQL 17's programs (for its block-level incrementals), from STRATA_TEST_PG17_BINDIR, which
 * the test command sets after scripts/pg17/install.sh: without them, skip with one line outside
 * CI, and fail under CI=true.
 */
export function requirePg17(context: Mocha.Context): string {
  const bindir = process.env['STRATA_TEST_PG17_BINDIR'];
  if (bindir && existsSync(path.join(bindir, 'pg_combinebackup'))) return bindir;
  const message = `PostgreSQL 17's programs are not in STRATA_TEST_PG17_BINDIR (${bindir ?? 'unset'}); run bash scripts/pg17/install.sh and set it to the folder it prints`;
  skipOrFail(context, message);
}

export function asServerUser(cmd: string, args: readonly string[]): [string, string[]] {
  return isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, [...args]];
}

export function runSync(cmd: string, args: string[]): { status: number; out: string } {
  const [file, argv] = asServerUser(cmd, args);
  const r = spawnSync(file, argv, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** Runs the CLI without blocking the event loop. */
export function strataAsync(args: string[], env: Record<string, string> = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  const [file, argv] = asServerUser(process.execPath, [CLI, ...args]);
  const child = spawn(file, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr })));
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function client(port: number, database = 'postgres'): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** Polls `probe` until it gives a value (errors count as "not yet"); generous, for loaded machines. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 180_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await Promise.resolve().then(probe).catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** Switches the server to a new segment and waits until the archiver stored the one it left (and nothing failed). */
export async function switchAndArchive(db: pg.Client): Promise<string> {
  const last = (await db.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
  await waitFor(`the archiver to archive ${last}`, async () => {
    const row = (await db.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver')).rows[0]!;
    return row.w !== null && row.w >= last ? true : undefined;
  });
  assert.equal((await db.query<{ f: string }>('SELECT failed_count::text AS f FROM pg_stat_archiver')).rows[0]!.f, '0', 'no wal-push failed');
  return last;
}

export interface TestCluster {
  readonly dir: string;
  readonly dataDir: string;
  readonly port: number;
  readonly config: string;
  readonly passFile: string;
  /** The strata CLI with this cluster's config and passphrase file. */
  cli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }>;
  pgCtl(args: string[]): { status: number; out: string };
}

/**
 * initdb in a new temporary folder, a repository initialised beside it, archive_command through
 * the built CLI under the entry name `db` (with `pushArgs` of the folder added to wal-push's); the
 * server is not started.
 */
export async function makeCluster(prefix: string, db: string, options: { pushArgs?: (dir: string) => string[] } = {}): Promise<TestCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  if (isRoot) spawnSync('chown', ['postgres', dir]);
  const dataDir = path.join(dir, 'data');
  const port = await freePort();
  const init = runSync(path.join(BINDIR, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
  assert.equal(init.status, 0, init.out);
  const passFile = path.join(dir, 'passphrase');
  const config = path.join(dir, 'strata.config.json');
  writeFileSync(passFile, TEST_PASSPHRASE, { mode: 0o600 });
  writeFileSync(config, JSON.stringify({ repository: path.join(dir, 'repo'), databases: { [db]: { url: `postgres://postgres@127.0.0.1:${port}/postgres`, method: 'physical' } } }));
  if (isRoot) spawnSync('chown', ['postgres', passFile, config]);
  const archive = [process.execPath, CLI, 'wal-push', '%p', '--db', db, ...(options.pushArgs?.(dir) ?? []), '--config', config, '--passphrase-file', passFile].join(' ');
  writeFileSync(
    path.join(dataDir, 'postgresql.auto.conf'),
    [`port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`, 'archive_mode = on', `archive_command = '${archive}'`, 'track_commit_timestamp = on', 'fsync = off', ''].join('\n'),
    { flag: 'a' },
  );
  const cli = (args: string[]) => strataAsync([...args, '--config', config, '--passphrase-file', passFile]);
  const initRepo = await cli(['init']);
  assert.equal(initRepo.status, 0, initRepo.stderr);
  return { dir, dataDir, port, config, passFile, cli, pgCtl: (args) => runSync(path.join(BINDIR, 'pg_ctl'), args) };
}
