import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import type pg from 'pg';
import { CLI } from './helpers/env.js';
import { asServerUser, BINDIR, client, makeCluster, requireServerPrograms, switchAndArchive, waitFor } from './helpers/pg-cluster.js';
import type { TestCluster } from './helpers/pg-cluster.js';

/**
 * The warm mode of WAL archiving on a real cluster: archive_command = `strata wal-push %p --db
 * NAME --socket PATH`, with `strata wal-daemon` on that socket storing what it is handed. The
 * segments the daemon stores are in the repository; with the daemon killed (its socket file left
 * behind) wal-push stores them itself; a daemon started again takes the stale socket over; a
 * segment the daemon cannot store is a failed archive_command (never a success), and archiving
 * resumes once it can. verify finds the archive whole from the base backup on.
 */

const DB = 'cluster';

interface Daemon {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly lines: string[];
}

describe('PostgreSQL WAL archiving through strata wal-daemon (the warm mode)', function () {
  this.timeout(10 * 60_000);
  let cluster: TestCluster;
  let socket = '';
  const daemons: Daemon[] = [];

  const startDaemon = async (): Promise<Daemon> => {
    const [file, argv] = asServerUser(process.execPath, [CLI, 'wal-daemon', '--db', DB, '--socket', socket, '--config', cluster.config, '--passphrase-file', cluster.passFile, '--json']);
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let stderr = '';
    let partial = '';
    child.stdout!.on('data', (d: Buffer) => {
      partial += d.toString();
      const parts = partial.split('\n');
      partial = parts.pop()!;
      lines.push(...parts);
    });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const pid = await waitFor(`the daemon to listen (${stderr})`, async () => {
      const hello = lines.map((l) => JSON.parse(l) as { listening?: string; pid?: number }).find((l) => l.listening === socket);
      return hello?.pid;
    });
    const daemon = { child, pid, lines };
    daemons.push(daemon);
    return daemon;
  };
  /** What the daemon answered the server: stored now (by this request, or read ahead before it). */
  const answered = (daemon: Daemon): { name: string; status: string }[] =>
    daemon.lines.map((l) => JSON.parse(l) as { name?: string; status?: string; ahead?: boolean }).filter((l) => l.name !== undefined && l.status !== 'failed' && !l.ahead) as { name: string; status: string }[];
  const storedBy = (daemon: Daemon): string[] => answered(daemon).filter((l) => l.status === 'stored').map((l) => l.name);
  const archived = (): string[] => readdirSync(path.join(cluster.dir, 'repo', 'backups', DB, 'log')).map((f) => f.slice(0, f.indexOf('_')));

  before(async function () {
    requireServerPrograms(this);
    cluster = await makeCluster('strata-wal-daemon-', DB, { pushArgs: (dir) => ['--socket', path.join(dir, 'run', 'wal.sock')] });
    socket = path.join(cluster.dir, 'run', 'wal.sock');
  });

  after(function () {
    if (!cluster) return;
    cluster.pgCtl(['stop', '-D', cluster.dataDir, '-m', 'immediate', '-w']);
    for (const d of daemons) {
      try {
        process.kill(d.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    spawnSync('chmod', ['-R', 'u+w', cluster.dir]);
    rmSync(cluster.dir, { recursive: true, force: true });
  });

  it('stores what wal-push hands it; without it wal-push stores by itself; a failed store is a failed archive_command', async function () {
    const { cli, pgCtl, dir, dataDir } = cluster;
    let daemon = await startDaemon();
    assert.equal(lstatSync(socket).mode & 0o777, 0o600, 'only the daemon user may hand it files');
    const started = pgCtl(['start', '-D', dataDir, '-l', path.join(dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.out);
    const db: pg.Client = await client(cluster.port);
    await db.query('CREATE TABLE t (n int)');
    const backup = await cli(['backup', DB, '--json']);
    assert.equal(backup.status, 0, backup.stderr);
    const warm: string[] = [];
    for (let i = 0; i < 3; i++) {
      await db.query('INSERT INTO t SELECT generate_series(1, 20000)');
      warm.push(await switchAndArchive(db));
    }
    for (const name of warm) assert.ok(storedBy(daemon).includes(name), `the daemon stored ${name} (it stored ${storedBy(daemon).join(', ')})`);
    for (const name of warm) assert.ok(archived().includes(name), `${name} is in the repository`);
    // A burst of segments: those the server marked ready behind the one it handed over are
    // stored ahead; each is still answered when the server asks for it.
    await db.query('INSERT INTO t SELECT generate_series(1, 3000000)');
    const burst = await switchAndArchive(db);
    assert.ok(archived().includes(burst));
    const ahead = daemon.lines.map((l) => JSON.parse(l) as { name?: string; ahead?: boolean }).filter((l) => l.ahead).map((l) => l.name!);
    for (const name of ahead) assert.ok(answered(daemon).some((a) => a.name === name), `${name}, stored ahead, was answered when asked for`);

    // The daemon dies (its socket file stays): wal-push stores the segments itself.
    process.kill(daemon.pid, 'SIGKILL');
    await waitFor('the daemon to end', async () => (daemon.child.exitCode !== null || daemon.child.signalCode !== null ? true : undefined));
    assert.ok(lstatSync(socket).isSocket(), 'a stale socket is left behind');
    await db.query('INSERT INTO t SELECT generate_series(1, 20000)');
    const cold = await switchAndArchive(db);
    assert.ok(archived().includes(cold), `${cold} is in the repository without the daemon`);

    // Started again on the stale socket, it takes over.
    daemon = await startDaemon();
    await db.query('INSERT INTO t SELECT generate_series(1, 20000)');
    const again = await switchAndArchive(db);
    assert.deepEqual(storedBy(daemon), [again]);

    // A segment the daemon cannot store: the archive_command fails, nothing is archived under its name.
    const logDir = path.join(dir, 'repo', 'backups', DB, 'log');
    const mode = lstatSync(logDir).mode & 0o777;
    chmodSync(logDir, 0o555);
    let refused = '';
    try {
      await db.query('INSERT INTO t SELECT generate_series(1, 20000)');
      refused = (await db.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
      await waitFor(`the archiver to fail on ${refused}`, async () => {
        const row = (await db.query<{ f: string; w: string | null }>('SELECT failed_count::text AS f, last_failed_wal AS w FROM pg_stat_archiver')).rows[0]!;
        return Number(row.f) > 0 && row.w === refused ? true : undefined;
      });
      const failed = daemon.lines.map((l) => JSON.parse(l) as { name?: string; status?: string; error?: string }).find((l) => l.status === 'failed');
      assert.equal(failed?.name, refused, 'the daemon reported the store that failed');
      assert.ok(!archived().includes(refused), `${refused} is not in the repository`);
      assert.equal((await db.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver')).rows[0]!.w, again, 'the server counts nothing after it as archived');
    } finally {
      chmodSync(logDir, mode);
    }
    // Once it can store again, the server's retry archives it (and the next one).
    await db.query('INSERT INTO t SELECT generate_series(1, 20000)');
    const after = (await db.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
    await waitFor(`the archiver to archive ${after}`, async () => {
      const row = (await db.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver')).rows[0]!;
      return row.w !== null && row.w >= after ? true : undefined;
    }, 240_000);
    assert.ok(storedBy(daemon).includes(refused) && storedBy(daemon).includes(after), `the daemon stored ${refused} and ${after}`);
    await db.end();

    const verified = await cli(['verify', '--all', '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    const logs = (JSON.parse(verified.stdout) as { logs: { outcome: string; missing: string[] }[] }).logs;
    assert.deepEqual(logs.map((l) => [l.outcome, l.missing]), [['passed', []]]);

    // SIGTERM: it stops and removes its socket.
    process.kill(daemon.pid, 'SIGTERM');
    await waitFor('the daemon to stop', async () => (daemon.child.exitCode !== null ? true : undefined));
    assert.equal(daemon.child.exitCode, 0);
    assert.equal(existsSync(socket), false, 'the socket is removed');
  });
});
