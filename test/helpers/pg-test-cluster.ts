import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { CLI, TEST_PASSPHRASE } from './env.js';
import { BINDIR, asServerUser, freePort, isRoot, sleep, waitFor } from './pg-cluster.js';

/**
 * A PostgreSQL cluster of a test's own, as a class (pg-cluster.ts has the same as functions): initdb in a temporary folder, a free port on 127.0.0.1,
 * its WAL archived through the built CLI (`strata wal-push`) into a repository beside it, and a
 * strata.config.json with it as a physical entry. PostgreSQL refuses to run as root, so as root
 * the cluster and every strata command run as the postgres user, as they would in production.
 */

export { BINDIR as PG_BINDIR, asServerUser, freePort, sleep, waitFor };

export interface CliResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

export class TestCluster {
  readonly dir: string;
  readonly dataDir: string;
  readonly config: string;
  readonly passFile: string;
  readonly repo: string;
  port = 0;
  /** Data directories with a server that the test started and `stop()` stops. */
  readonly #running = new Set<string>();

  private constructor(
    dir: string,
    readonly database: string,
    /** The PostgreSQL programs the cluster runs, and the CLI finds (STRATA_PG_BINDIR) when they are not the default ones. */
    readonly bindir: string,
  ) {
    this.dir = dir;
    this.dataDir = path.join(dir, 'data');
    this.config = path.join(dir, 'strata.config.json');
    this.passFile = path.join(dir, 'passphrase');
    this.repo = path.join(dir, 'repo');
  }

  static available(): boolean {
    return existsSync(path.join(BINDIR, 'initdb'));
  }

  /**
   * initdb, the config and the repository, then the server started with archiving through strata.
   * `bindir`: another PostgreSQL's programs (PostgreSQL 17's); `settings`: more postgresql.conf lines.
   */
  static async create(database: string, prefix: string, options: { bindir?: string; settings?: readonly string[] } = {}): Promise<TestCluster> {
    const dir = mkdtempSync(path.join(tmpdir(), prefix));
    chmodSync(dir, 0o755);
    if (isRoot) spawnSync('chown', ['postgres', dir]);
    const cluster = new TestCluster(dir, database, options.bindir ?? BINDIR);
    cluster.port = await freePort();
    const init = cluster.run(path.join(cluster.bindir, 'initdb'), ['-D', cluster.dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
    if (init.status !== 0) throw new Error(`initdb failed: ${init.out}`);
    writeFileSync(cluster.passFile, TEST_PASSPHRASE, { mode: 0o600 });
    writeFileSync(cluster.config, JSON.stringify({ repository: cluster.repo, databases: { [database]: { url: `postgres://postgres@127.0.0.1:${cluster.port}/postgres`, method: 'physical' } } }));
    if (isRoot) spawnSync('chown', ['postgres', cluster.passFile, cluster.config]);
    const archive = `${process.execPath} ${CLI} wal-push %p --db ${database} --config ${cluster.config} --passphrase-file ${cluster.passFile}`;
    writeFileSync(
      path.join(cluster.dataDir, 'postgresql.auto.conf'),
      [`port = ${cluster.port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`, 'archive_mode = on', `archive_command = '${archive}'`, 'track_commit_timestamp = on', 'fsync = off', 'autovacuum = off', ...(options.settings ?? []), ''].join('\n'),
      { flag: 'a' },
    );
    const initRepo = await cluster.cli(['init']);
    if (initRepo.status !== 0) throw new Error(`strata init failed: ${initRepo.stderr}`);
    cluster.start(cluster.dataDir, []);
    return cluster;
  }

  run(cmd: string, args: readonly string[]): { status: number; out: string } {
    const [file, argv] = asServerUser(cmd, args);
    const r = spawnSync(file, argv, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
  }

  pgCtl(args: readonly string[]): { status: number; out: string } {
    return this.run(path.join(this.bindir, 'pg_ctl'), args);
  }

  /** Starts a server on a data directory (the cluster's own, or a restored copy with `-o` options). */
  start(dataDir: string, options: readonly string[]): void {
    const log = path.join(this.dir, `${path.basename(dataDir)}.log`);
    const started = this.pgCtl(['start', '-D', dataDir, '-w', '-t', '300', '-l', log, ...options]);
    if (started.status !== 0) throw new Error(`pg_ctl start ${dataDir} failed: ${started.out}`);
    this.#running.add(dataDir);
  }

  /** A server the test started on its own (with an environment of its own): `stop()` stops it too. */
  adopt(dataDir: string): void {
    this.#running.add(dataDir);
  }

  stopServer(dataDir: string): void {
    this.pgCtl(['stop', '-D', dataDir, '-m', 'fast', '-w']);
    this.#running.delete(dataDir);
  }

  /** The built CLI as the server's user, with the cluster's config and passphrase; the event loop stays free meanwhile. */
  cli(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
    const [file, argv] = asServerUser(process.execPath, [CLI, ...args, '--config', this.config, '--passphrase-file', this.passFile]);
    const bindir = this.bindir === BINDIR ? {} : { STRATA_PG_BINDIR: this.bindir };
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...bindir, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve) => child.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr })));
  }

  async client(port = this.port, database = 'postgres'): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  }

  /**
   * A folder `name` of the server's user for recovering by hand, with a private GnuPG home, and
   * `follow`, which runs a shell recipe there as that user (bash -euo pipefail) and fails the test
   * with its stderr when it fails.
   */
  byHand(name: string): { home: string; gnupg: string; follow(what: string, script: string, variables: Record<string, string>): void } {
    const home = path.join(this.dir, name);
    const gnupg = path.join(home, 'gnupg');
    mkdirSync(gnupg, { recursive: true, mode: 0o700 });
    if (isRoot) spawnSync('chown', ['-R', 'postgres', home]);
    const follow = (what: string, script: string, variables: Record<string, string>): void => {
      const env = { GNUPGHOME: gnupg, ...variables };
      const [file, argv] = asServerUser('env', [...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'bash', '-euo', 'pipefail', '-c', script]);
      const r = spawnSync(file, argv, { encoding: 'utf8' });
      assert.equal(r.status, 0, `${what} failed:\n${r.stderr}`);
    };
    return { home, gnupg, follow };
  }

  /** Switches to a new WAL segment and waits until the archiver has stored the one it closed. */
  async archiveCurrentWal(db: pg.Client): Promise<void> {
    const last = (await db.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
    await waitFor('the archiver to store the last segment', async () => {
      const row = (await db.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver')).rows[0]!;
      return row.w !== null && row.w >= last ? true : undefined;
    });
  }

  stop(): void {
    for (const d of [...this.#running]) this.pgCtl(['stop', '-D', d, '-m', 'immediate', '-w']);
    this.#running.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The tables of the physical incremental tests: `markers` (one row per transaction) and about
 * 45 MB of `orders` with `qty` from `qty`, frozen and checkpointed, so a full holds them as they stay.
 */
export async function loadMarkersAndOrders(db: pg.Client, qty: string): Promise<void> {
  await db.query('CREATE TABLE markers (seq int PRIMARY KEY)');
  await db.query('CREATE TABLE orders (id int PRIMARY KEY, qty int NOT NULL, note text NOT NULL)');
  await db.query(`INSERT INTO orders SELECT g, ${qty}, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 400000) g`);
  await db.query('VACUUM FREEZE ANALYZE orders');
  await db.query('CHECKPOINT');
}

/** The commit times of the markers (track_commit_timestamp), in microseconds since the epoch, by sequence number (1-based). */
export async function markerCommitTimes(db: pg.Client): Promise<bigint[]> {
  const rows = (await db.query<{ us: string }>('SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint::text AS us FROM markers ORDER BY seq')).rows;
  return rows.map((row) => BigInt(row.us));
}

/** A moment halfway between the commits of marker `after` and the next one. */
export function betweenMarkers(committedUs: readonly bigint[], after: number): Date {
  return new Date(Number((committedUs[after - 1]! + committedUs[after]!) / 2n / 1000n));
}
