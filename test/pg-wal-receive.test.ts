import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { CLI, TEST_PASSPHRASE } from './helpers/env.js';
import { BINDIR, client, freePort, isRoot, requireServerPrograms, sleep, waitFor } from './helpers/pg-cluster.js';

/**
 * `strata wal-receive`: a cluster of the test's own (initdb, a free port) streams its WAL through
 * a replication slot into the repository while a writer commits marker rows, beside
 * archive_command (wal-push): a segment both archive is stored once. Then archive_command is
 * emptied, so everything archived is what wal-receive ships: killed and started again, it
 * continues without a gap (the slot kept the WAL, the spool what was received); a recovery to a
 * moment inside the segment still being written (a partial) holds exactly the markers committed
 * by then. Then wal-push is back, and a repository it cannot write makes `health` report the
 * failed pushes and the archive's lag behind the server, until it can write again.
 */

const DB = 'cluster';
const SEGMENT = 16 * 1024 * 1024;

const serverUser = ((): { uid: number; gid: number } | undefined => {
  if (!isRoot) return undefined;
  const id = (flag: string): number => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
  return { uid: id('-u'), gid: id('-g') };
})();

/** Runs a program as the user that owns the cluster (root cannot run PostgreSQL); no fork in between, so signals reach it. */
function spawnAsServerUser(cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(cmd, args, { env: { ...process.env, ...env, ...(isRoot ? { HOME: '/var/lib/postgresql', USER: 'postgres' } : {}) }, stdio: ['ignore', 'pipe', 'pipe'], ...(serverUser ?? {}) });
}

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  const child = spawnAsServerUser(cmd, args, env);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr })));
}

function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

function segno(name: string): bigint {
  return BigInt(`0x${name.slice(8, 16)}`) * 256n + BigInt(`0x${name.slice(16, 24)}`);
}

/** A running `strata wal-receive`, with what it said so far. */
class Receiver {
  readonly child: ChildProcess;
  stderr = '';
  readonly exited: Promise<number | string>;

  constructor(args: string[], env: Record<string, string>) {
    this.child = spawnAsServerUser(process.execPath, [CLI, 'wal-receive', ...args], env);
    this.child.stdout!.resume();
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.child.on('close', (code, signal) => resolve(code ?? signal ?? -1)));
  }

  /** Waits until it said something matching `pattern` (failing at once if it exited first). */
  async said(pattern: RegExp, what: string): Promise<void> {
    let done = false;
    const exit = this.exited.then((code) => {
      if (!done) throw new Error(`wal-receive exited (${code}) before ${what}:\n${this.stderr}`);
    });
    await Promise.race([waitFor(what, () => (pattern.test(this.stderr) ? true : undefined), 300_000), exit]);
    done = true;
  }
}

describe('PostgreSQL WAL streaming (strata wal-receive) and the health of the WAL archive', function () {
  this.timeout(20 * 60_000);
  let dir = '';
  let dataDir = '';
  let port = 0;
  let config = '';
  let passFile = '';
  let repo = '';
  let stateDir = '';
  let db: pg.Client | undefined;
  const running = new Set<string>();
  const receivers: Receiver[] = [];
  const env = (): Record<string, string> => ({ STRATA_STATE_DIR: stateDir });
  const archiveCommand = (): string => `STRATA_STATE_DIR=${stateDir} ${process.execPath} ${CLI} wal-push %p --db ${DB} --config ${config} --passphrase-file ${passFile}`;
  const cli = (args: string[]) => run(process.execPath, [CLI, ...args, '--config', config, '--passphrase-file', passFile], env());
  const pgCtl = (args: string[]) => run(path.join(BINDIR, 'pg_ctl'), args);
  const receive = (args: string[] = []): Receiver => {
    const r = new Receiver([DB, '--config', config, '--passphrase-file', passFile, '--interval', '0.5', '--verbose', ...args], env());
    receivers.push(r);
    return r;
  };
  const logDir = (): string => path.join(repo, 'backups', DB, 'log');
  /** The archive's objects: complete segments by name, and the partials' (segment, bytes received). */
  const archived = (): { complete: Set<string>; partials: { name: string; received: number }[] } => {
    const complete = new Set<string>();
    const partials: { name: string; received: number }[] = [];
    for (const key of existsSync(logDir()) ? readdirSync(logDir()) : []) {
      const m = /^([0-9A-F]{24})(?:\.received-([0-9a-f]+))?_/.exec(key);
      if (!m) continue;
      if (m[2]) partials.push({ name: m[1]!, received: parseInt(m[2], 16) });
      else complete.add(m[1]!);
    }
    return { complete, partials };
  };
  const setArchiveCommand = async (command: string): Promise<void> => {
    await db!.query(`ALTER SYSTEM SET archive_command = ${command === '' ? "''" : `'${command.replace(/'/g, "''")}'`}`);
    await db!.query('SELECT pg_reload_conf()');
  };

  before(async function () {
    requireServerPrograms(this);
    dir = mkdtempSync(path.join(tmpdir(), 'strata-walrecv-'));
    chmodSync(dir, 0o755);
    if (isRoot) spawnSync('chown', ['postgres', dir]);
    dataDir = path.join(dir, 'data');
    stateDir = path.join(dir, 'state');
    repo = path.join(dir, 'repo');
    port = await freePort();
    const init = await run(path.join(BINDIR, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
    assert.equal(init.status, 0, init.stderr);
    passFile = path.join(dir, 'passphrase');
    config = path.join(dir, 'strata.config.json');
    writeFileSync(passFile, TEST_PASSPHRASE, { mode: 0o600 });
    writeFileSync(
      config,
      JSON.stringify({
        repository: repo,
        databases: {
          [DB]: { url: `postgres://postgres@127.0.0.1:${port}/postgres`, method: 'physical' },
          norepl: { url: `postgres://norepl@127.0.0.1:${port}/postgres`, method: 'physical' },
        },
      }),
    );
    if (isRoot) spawnSync('chown', ['postgres', passFile, config]);
    writeFileSync(
      path.join(dataDir, 'postgresql.auto.conf'),
      [`port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`, 'archive_mode = on', `archive_command = '${archiveCommand()}'`, 'track_commit_timestamp = on', 'fsync = off', ''].join('\n'),
      { flag: 'a' },
    );
    const created = await cli(['init']);
    assert.equal(created.status, 0, created.stderr);
    const started = await pgCtl(['start', '-D', dataDir, '-l', path.join(dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.stderr + started.stdout);
    running.add(dataDir);
    db = await client(port);
  });

  after(async function () {
    for (const r of receivers) r.child.kill('SIGKILL');
    await db?.end().catch(() => undefined);
    for (const d of running) await pgCtl(['stop', '-D', d, '-m', 'immediate', '-w']);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a user without the replication attribute (exit 7) and a URL that is not one (exit 2), before streaming anything', async function () {
    await db!.query('CREATE ROLE norepl LOGIN');
    const refused = await run(process.execPath, [CLI, 'wal-receive', 'norepl', '--config', config, '--passphrase-file', passFile], env());
    assert.equal(refused.status, 7, refused.stderr);
    assert.match(refused.stderr, /may not stream WAL.*REPLICATION/);
    const badConfig = path.join(dir, 'bad.config.json');
    writeFileSync(badConfig, JSON.stringify({ repository: repo, databases: { broken: { url: 'postgres://postgres@127.0.0.1:notaport/postgres', method: 'physical' } } }));
    const bad = await run(process.execPath, [CLI, 'wal-receive', 'broken', '--config', badConfig, '--passphrase-file', passFile], env());
    assert.equal(bad.status, 2, bad.stderr);
    const logical = await run(process.execPath, [CLI, 'wal-receive', 'nothere', '--config', config, '--passphrase-file', passFile], env());
    assert.equal(logical.status, 2, logical.stderr);
    assert.match(logical.stderr, /not a physical PostgreSQL entry/);
  });

  it('streams while a writer commits, continues without a gap after being killed, and recovers to a moment inside the partial segment', async function () {
    let receiver = receive();
    await receiver.said(/created the replication slot strata_cluster/, 'the slot to be created');
    await receiver.said(/streaming into/, 'streaming to start');
    assert.ok(!receiver.stderr.includes(TEST_PASSPHRASE));
    const backup = await cli(['backup', DB, '--json']);
    assert.equal(backup.status, 0, backup.stderr);

    await db!.query('CREATE TABLE markers (seq int PRIMARY KEY, at timestamptz NOT NULL)');
    let seq = 0;
    let paused = false;
    let stop = false;
    let writerError: unknown;
    const writer = (async () => {
      while (!stop) {
        if (!paused) {
          try {
            seq += 1;
            await db!.query('INSERT INTO markers VALUES ($1, clock_timestamp())', [seq]);
          } catch (err) {
            writerError = err;
            stop = true;
          }
        }
        await sleep(50);
      }
    })();
    const switchWal = async (): Promise<string> => (await db!.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;

    // A completed segment, archived by wal-receive and by archive_command: stored once, no conflict.
    await sleep(1000);
    const first = await switchWal();
    await receiver.said(new RegExp(`archived ${first}`), `${first} to be archived by wal-receive`);
    const stat = async () => (await db!.query<{ w: string | null; failed: string }>('SELECT last_archived_wal AS w, failed_count::text AS failed FROM pg_stat_archiver')).rows[0]!;
    await waitFor(`${first} to be archived by archive_command`, async () => ((await stat()).w !== null && (await stat()).w! >= first ? true : undefined));
    assert.equal((await stat()).failed, '0', 'wal-push took the segments wal-receive archived as already archived');
    assert.equal(readdirSync(logDir()).filter((k) => k.startsWith(`${first}_`)).length, 1, `one object of ${first}`);
    // From here on, only wal-receive archives.
    await setArchiveCommand('');

    // Killed with no chance to clean up; segments completed meanwhile wait in the slot.
    receiver.child.kill('SIGKILL');
    await receiver.exited;
    await sleep(500);
    // health: a wal-receive that died is unhealthy until one runs again.
    const died = JSON.parse((await cli(['health', '--json'])).stdout) as { checks: { check: string; database: string | null; status: string; message: string }[] };
    const streamingCheck = died.checks.find((c) => c.check === 'log-streaming' && c.database === DB)!;
    assert.equal(streamingCheck.status, 'unhealthy', streamingCheck.message);
    assert.match(streamingCheck.message, /died without stopping/);
    const whileDown = [await switchWal()];
    await sleep(300);
    whileDown.push(await switchWal());
    receiver = receive();
    await receiver.said(/using the replication slot strata_cluster/, 'the slot to be used again');
    for (const name of whileDown) await waitFor(`${name}, completed while wal-receive was down, to be archived`, () => (archived().complete.has(name) ? true : undefined));

    // The server restarts under it: it says so and connects again.
    paused = true;
    await sleep(100);
    const restarted = await pgCtl(['restart', '-D', dataDir, '-m', 'fast', '-w', '-t', '300', '-l', path.join(dir, 'server.log')]);
    assert.equal(restarted.status, 0, restarted.stderr);
    await db!.end().catch(() => undefined);
    db = await client(port);
    paused = false;
    await receiver.said(/the connection ended .*trying again in \d+ s/, 'the dropped connection to be reported');
    await receiver.said(/connected again, streaming/, 'streaming to resume');

    // Markers into the segment in progress, which is shipped as a partial.
    await sleep(2500);
    stop = true;
    await writer;
    assert.equal(writerError, undefined);
    const current = (await db!.query<{ lsn: string; w: string }>('SELECT pg_current_wal_lsn()::text AS lsn, pg_walfile_name(pg_current_wal_lsn()) AS w')).rows[0]!;
    const partial = await waitFor('the segment in progress to be archived as a partial up to the last commit', () => {
      const p = archived().partials.find((x) => x.name === current.w);
      // Received up to the position, but for the zero bytes a record may end with (padding).
      return p && segno(p.name) * BigInt(SEGMENT) + BigInt(p.received) + 64n >= lsnValue(current.lsn) ? p : undefined;
    });
    assert.equal(archived().complete.has(partial.name), false, 'the segment of the target is archived only as a partial');
    // Replaced, not piled up: one partial of it remains.
    await waitFor('older partials to be removed', () => (archived().partials.filter((p) => p.name === current.w).length === 1 ? true : undefined));

    // Stopped cleanly: exit 0, the run journaled.
    receiver.child.kill('SIGTERM');
    assert.equal(await receiver.exited, 0, receiver.stderr);
    assert.match(receiver.stderr, /stopped; archived \d+ segment\(s\) and \d+ partial\(s\)/);

    const markers = (await db!.query<{ seq: number; us: string }>("SELECT seq, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint::text AS us FROM markers ORDER BY seq")).rows.map((r) => ({ seq: r.seq, us: BigInt(r.us) }));
    assert.ok(markers.length > 40, `the writer committed ${markers.length} markers`);
    // Everything from the base on is there (verify walks the archive for gaps), the partial standing for its segment.
    const verified = await cli(['verify', '--all', '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    const logs = (JSON.parse(verified.stdout) as { logs: { outcome: string; missing: string[] }[] }).logs;
    assert.deepEqual(logs.map((l) => [l.outcome, l.missing]), [['passed', []]]);

    // A moment between two markers late in the partial segment.
    const k = markers.length - 4;
    const targetUs = (markers[k - 1]!.us + markers[k]!.us) / 2n;
    const targetMs = Number(targetUs / 1000n);
    const asOf = new Date(targetMs).toISOString();
    const expect = markers.filter((m) => m.us <= BigInt(targetMs) * 1000n).length;
    const target = path.join(dir, 'restored');
    const restored = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', asOf]);
    assert.equal(restored.status, 0, restored.stderr);
    const p = await freePort();
    const started = await pgCtl(['start', '-D', target, '-w', '-t', '300', '-l', path.join(dir, 'restored.log'), '-o', `-c port=${p} -c archive_mode=off -c unix_socket_directories=${dir}`]);
    running.add(target);
    assert.equal(started.status, 0, started.stderr + started.stdout);
    const c = await waitFor('the restored server', () => client(p));
    try {
      await waitFor('recovery to pause at the target', async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined));
      const rows = (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((r) => r.seq);
      assert.deepEqual(rows, Array.from({ length: expect }, (_, i) => i + 1), `markers 1..${expect} at ${asOf}`);
    } finally {
      await c.end().catch(() => undefined);
      await pgCtl(['stop', '-D', target, '-m', 'fast', '-w']);
      running.delete(target);
    }
    // wal-fetch falls back on the partial of a segment archived only so.
    const fetched = path.join(dir, 'fetched-segment');
    const f = await cli(['wal-fetch', partial.name, fetched, '--db', DB, '--json']);
    assert.equal(f.status, 0, f.stderr);
    assert.equal((JSON.parse(f.stdout) as { bytes: number }).bytes, SEGMENT, 'a partial is a whole, zero-padded segment');
  });

  it('runs beside archive_command; health reports failed wal-push calls and the lag behind the server, then is healthy again', async function () {
    await setArchiveCommand(archiveCommand());
    const stat = async () => (await db!.query<{ w: string | null; failed: string }>('SELECT last_archived_wal AS w, failed_count::text AS failed FROM pg_stat_archiver')).rows[0]!;
    const switched = (await db!.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
    // Every segment wal-receive already archived is pushed again by the server: the same bytes, stored once.
    await waitFor('archive_command to catch up', async () => ((await stat()).w !== null && (await stat()).w! >= switched ? true : undefined));
    assert.equal((await stat()).failed, '0', 'no wal-push failed on a segment wal-receive had archived');
    assert.ok(archived().complete.has(switched));
    const health = async (extra: string[] = []) => {
      const r = await cli(['health', '--json', '--max-archive-lag-bytes', '8MB', ...extra]);
      const report = JSON.parse(r.stdout) as { healthy: boolean; checks: { check: string; database: string | null; status: string; message: string }[] };
      const check = (name: string) => report.checks.find((c) => c.check === name && c.database === DB)!;
      return { status: r.status, report, lag: check('archive-lag'), failed: check('failed-pushes') };
    };
    const fine = await health();
    const streaming = fine.report.checks.find((c) => c.check === 'log-streaming' && c.database === DB)!;
    assert.equal(streaming.status, 'ok');
    assert.match(streaming.message, /the last wal-receive stopped cleanly/);
    assert.equal(fine.lag.status, 'ok', fine.lag.message);
    assert.equal(fine.failed.status, 'ok', fine.failed.message);
    assert.equal(fine.status, fine.report.healthy ? 0 : 3);

    // The archive's folder becomes read-only: every push fails, in the journal.
    chmodSync(logDir(), 0o555);
    await db!.query('INSERT INTO markers VALUES (100000, now())');
    await db!.query('SELECT pg_switch_wal()');
    await waitFor('wal-push to fail', async () => (Number((await stat()).failed) > 0 ? true : undefined));
    const failing = await health();
    assert.equal(failing.status, 3, JSON.stringify(failing.report.checks));
    assert.equal(failing.failed.status, 'unhealthy', failing.failed.message);
    assert.match(failing.failed.message, /\d+ wal-push call\(s\) failed since the newest file was archived/);
    assert.equal(failing.lag.status, 'unhealthy', failing.lag.message);
    assert.match(failing.lag.message, /[1-9]\d* completed segment\(s\) behind/);
    const metrics = await cli(['metrics']);
    assert.equal(metrics.status, 0, metrics.stderr);
    assert.match(metrics.stdout, new RegExp(`^strata_wal_push_failures_total\\{database="${DB}"\\} [1-9]\\d*$`, 'm'));

    // The whole repository unreadable: the journal cannot take the failure, the state folder does.
    // The server tries a file three times in a row (NUM_ARCHIVE_RETRIES), a second apart, and counts
    // a failure when the call exits: until all three are counted, a call begun with the repository
    // readable may be the failure counted after the chmod, and the call after it find it readable
    // again, so nothing would ever be recorded on this machine. (It tries again after a minute: a
    // count that is not a multiple of three is such a round under way.)
    await waitFor("the server's three tries of the file to end", async () => {
      const failed = Number((await stat()).failed);
      return failed >= 3 && failed % 3 === 0 ? true : undefined;
    });
    chmodSync(repo, 0o000);
    const before = Number((await stat()).failed);
    // A new segment ready to archive wakes the archiver, which waits a minute after failures.
    await db!.query('INSERT INTO markers VALUES (100001, now())');
    await db!.query('SELECT pg_switch_wal()');
    await waitFor('wal-push to fail with the repository unreadable', async () => (Number((await stat()).failed) > before ? true : undefined));
    chmodSync(repo, 0o755);
    const local = await health();
    assert.equal(local.failed.status, 'unhealthy');
    assert.match(local.failed.message, /recorded on this machine only \(the repository failed\)/);

    // Writable again: the server's next attempt archives everything, and health is green for the archive.
    chmodSync(logDir(), 0o755);
    await db!.query('INSERT INTO markers VALUES (100002, now())');
    const last = (await db!.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
    await waitFor('the archiver to catch up', async () => ((await stat()).w !== null && (await stat()).w! >= last ? true : undefined));
    const recovered = await health();
    assert.equal(recovered.failed.status, 'ok', recovered.failed.message);
    assert.equal(recovered.lag.status, 'ok', recovered.lag.message);

    // The server down: the lag is reported as not measured, not a crash.
    await pgCtl(['stop', '-D', dataDir, '-m', 'fast', '-w']);
    running.delete(dataDir);
    const down = await health();
    assert.equal(down.lag.status, 'ok', 'a server that is down writes no WAL: not counted as lag');
    assert.match(down.lag.message, /the lag was not measured: the server could not be asked where its log stands \(.*nothing accepts connections/);
  });

  it('with archive_mode off, takes a base backup while wal-receive streams, and its WAL is archived', async function () {
    // Left running, and perhaps read-only, by the test before when it failed: a failure here is then this test's own.
    if (running.has(dataDir)) {
      chmodSync(repo, 0o755);
      chmodSync(logDir(), 0o755);
      await pgCtl(['stop', '-D', dataDir, '-m', 'fast', '-w']);
      running.delete(dataDir);
    }
    writeFileSync(path.join(dataDir, 'postgresql.auto.conf'), 'archive_mode = off\n', { flag: 'a' });
    const started = await pgCtl(['start', '-D', dataDir, '-l', path.join(dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.stderr + started.stdout);
    running.add(dataDir);
    await db!.end().catch(() => undefined);
    db = await client(port);
    // Refused while nothing streams: the backup could never be recovered.
    const refused = await cli(['backup', DB]);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /archive_mode is off.*or keep strata wal-receive NAME running/);
    const receiver = receive();
    await waitFor('pg_receivewal to stream', async () => ((await db!.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name LIKE 'strata wal-receive %' AND state = 'streaming'")).rows[0]!.n > 0 ? true : undefined));
    const backup = await cli(['backup', DB, '--json']);
    assert.equal(backup.status, 0, backup.stderr);
    const endLsn = (JSON.parse(backup.stdout) as { backup: { logRange: { end: { lsn: string } } } }).backup.logRange.end.lsn;
    await waitFor("the archive to reach the base backup's end", () => {
      const { complete, partials } = archived();
      const ends = [...[...complete].map((n) => (segno(n) + 1n) * BigInt(SEGMENT)), ...partials.map((p) => segno(p.name) * BigInt(SEGMENT) + BigInt(p.received))];
      return ends.some((e) => e >= lsnValue(endLsn)) ? true : undefined;
    });
    receiver.child.kill('SIGINT');
    assert.equal(await receiver.exited, 0, receiver.stderr);
    const verified = await cli(['verify', '--all', '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    const logs = (JSON.parse(verified.stdout) as { logs: { outcome: string; missing: string[] }[] }).logs;
    assert.equal(logs.length, 2);
    assert.deepEqual(logs.map((l) => l.outcome), ['passed', 'passed']);
  });
  it("strata daemon runs a physical entry's replicate job as wal-receive: the WAL streams in until SIGTERM stops it cleanly", async function () {
    // archive_mode is still off (the test before): what reaches the archive now, the daemon streamed.
    const daemonConfig = path.join(dir, 'daemon.config.json');
    writeFileSync(daemonConfig, JSON.stringify({ repository: repo, databases: { [DB]: { url: `postgres://postgres@127.0.0.1:${port}/postgres`, method: 'physical', schedules: { live: { job: 'replicate', intervalMs: 500 } } } } }));
    if (isRoot) spawnSync('chown', ['postgres', daemonConfig]);
    const daemon = spawnAsServerUser(process.execPath, [CLI, 'daemon', '--config', daemonConfig, '--passphrase-file', passFile], env());
    let log = '';
    daemon.stdout!.resume();
    daemon.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | string>((resolve) => daemon.on('close', (code, signal) => resolve(code ?? signal ?? -1)));
    try {
      await waitFor('the daemon to stream', () => (/cluster\/live: wal-receive streaming/.test(log) ? true : undefined), 300_000);
      const before = archived();
      await db!.query('CREATE TABLE IF NOT EXISTS daemon_marks (n int)');
      await db!.query('INSERT INTO daemon_marks SELECT generate_series(1, 1000)');
      const switched = (await db!.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
      await waitFor(`${switched} to be archived by the daemon`, () => (archived().complete.has(switched) ? true : undefined), 300_000);
      assert.ok(!before.complete.has(switched), 'the segment was not in the archive before');
      // The segment in progress arrives as a partial, as wal-receive sends it.
      await db!.query('INSERT INTO daemon_marks SELECT generate_series(1, 10)');
      const current = (await db!.query<{ w: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS w')).rows[0]!.w;
      await waitFor(`a partial of ${current}`, () => (archived().partials.some((p) => p.name === current) ? true : undefined), 300_000);
    } finally {
      daemon.kill('SIGTERM');
    }
    assert.equal(await exited, 0, log);
    assert.match(log, /wal-receive stopped: archived \d+ segment\(s\)/);
    assert.ok(!log.includes(TEST_PASSPHRASE));
  });
});
