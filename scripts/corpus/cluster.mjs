// A PostgreSQL cluster of the corpus's own: initdb in a temporary folder, a free port, listening
// on 127.0.0.1 only. The regression tests create roles, tablespaces and settings cluster-wide,
// which must never reach a shared server. Root cannot run postgres, so as root the server runs
// as the postgres user.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

const isRoot = process.getuid?.() === 0;

function postgresIds() {
  const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('running as root, the corpus needs a postgres user to run its server as (it comes with the postgresql package)');
  return { uid, gid };
}

/** Runs a program as the server's user (postgres when we are root, else ourselves). */
export function runAsServerUser(cmd, args, options = {}) {
  const [file, argv] = isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  return spawnSync(file, argv, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...options });
}

/** Makes a folder the server's user owns (so the server may write there, e.g. COPY TO a file). */
export function serverOwnedDir(dir) {
  mkdirSync(dir, { recursive: true });
  if (isRoot) {
    const { uid, gid } = postgresIds();
    spawnSync('chown', ['-R', `${uid}:${gid}`, dir]);
  }
  chmodSync(dir, 0o755);
}

/** A port nothing listens on now, on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A private cluster under `dir` (a folder the caller removes). */
export class PrivateCluster {
  /** @param {{ bindir: string, dir: string }} options */
  constructor({ bindir, dir }) {
    this.bindir = bindir;
    this.dir = dir;
    this.dataDir = join(dir, 'data');
    this.socketDir = join(dir, 'socket');
    this.logFile = join(dir, 'server.log');
    this.port = 0;
    this.running = false;
  }

  get host() {
    return '127.0.0.1';
  }

  /** A libpq URL of one of the cluster's databases, as the superuser. */
  url(database) {
    return `postgres://postgres@${this.host}:${this.port}/${database}`;
  }

  /** Environment for libpq clients (psql, pg_dump) so they reach this cluster and no other. */
  clientEnv() {
    return { ...process.env, PGHOST: this.host, PGPORT: String(this.port), PGUSER: 'postgres', PGPASSWORD: '', PGDATABASE: 'postgres' };
  }

  /** initdb (trust authentication: the server listens on 127.0.0.1 only, for this run). */
  init() {
    serverOwnedDir(this.dir);
    serverOwnedDir(this.socketDir);
    const result = runAsServerUser(join(this.bindir, 'initdb'), ['-D', this.dataDir, '-U', 'postgres', '-E', 'UTF8', '--locale=C.UTF-8', '-A', 'trust', '--no-sync'], { cwd: this.dir });
    if (result.status !== 0) throw new Error(`initdb failed:\n${result.stdout}${result.stderr}`);
  }

  /** Whether a data folder exists (a cached cluster may have been unpacked into it). */
  hasData() {
    return existsSync(join(this.dataDir, 'PG_VERSION'));
  }

  /** Picks the port the next start() listens on (kept across restarts once picked). */
  async reservePort() {
    if (this.port === 0) this.port = await freePort();
    return this.port;
  }

  /** Starts the server; `settings` (`name=value`) come after the defaults below and override them. */
  async start(settings = []) {
    await this.reservePort();
    // Durability is worthless for a throw-away cluster and costs minutes on a small machine.
    const serverOptions = [
      `-p ${this.port}`,
      `-k ${this.socketDir}`,
      '-c listen_addresses=127.0.0.1',
      '-c fsync=off',
      '-c synchronous_commit=off',
      '-c full_page_writes=off',
      '-c max_prepared_transactions=10',
      ...settings.map((setting) => `-c ${setting}`),
    ].join(' ');
    const result = runAsServerUser(join(this.bindir, 'pg_ctl'), ['-D', this.dataDir, '-l', this.logFile, '-w', '-t', '120', '-o', serverOptions, 'start'], { cwd: this.dir });
    if (result.status !== 0) throw new Error(`pg_ctl start failed on port ${this.port}:\n${result.stdout}${result.stderr}`);
    this.running = true;
  }

  /** Stops the server (fast, then immediate). Safe to call when it is not running. */
  stop() {
    if (!this.running) return;
    const fast = runAsServerUser(join(this.bindir, 'pg_ctl'), ['-D', this.dataDir, '-m', 'fast', '-w', '-t', '60', 'stop'], { cwd: this.dir });
    if (fast.status !== 0) runAsServerUser(join(this.bindir, 'pg_ctl'), ['-D', this.dataDir, '-m', 'immediate', '-w', 'stop'], { cwd: this.dir });
    this.running = false;
  }

  /** Stops the server and deletes its folder. */
  remove() {
    this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
