import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { CLI, TEST_PASSPHRASE } from './helpers/env.js';

/**
 * Point-in-time recovery of a physical PostgreSQL backup, as pgBackRest and WAL-G test theirs: a
 * cluster of the test's own (initdb, a free port, archive_command through the built CLI) gets a
 * marker row every 50 ms while base backups and archiving run, with a WAL switch and a server
 * restart in between; then recoveries to random times, LSNs and named restore points must each
 * hold exactly the markers committed at or before their target, by the server's own commit
 * timestamps. Root cannot run PostgreSQL: as root, the cluster and every strata command run as
 * the postgres user (as they would in production).
 */

const BINDIR = process.env['STRATA_TEST_PG_BINDIR'] ?? '/usr/lib/postgresql/15/bin';
const isRoot = process.getuid?.() === 0;
const DB = 'cluster';

interface Marker {
  readonly seq: number;
  /** Commit time in microseconds since the epoch (exact, as PostgreSQL compares it). */
  readonly committedUs: bigint;
}

function asServerUser(cmd: string, args: string[]): [string, string[]] {
  return isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

function runSync(cmd: string, args: string[]): { status: number; out: string } {
  const [file, argv] = asServerUser(cmd, args);
  const r = spawnSync(file, argv, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** Runs the CLI without blocking the event loop (the writer keeps committing meanwhile). */
function strataAsync(args: string[], env: Record<string, string> = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  const [file, argv] = asServerUser(process.execPath, [CLI, ...args]);
  const child = spawn(file, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr })));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

async function client(port: number): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

describe('PostgreSQL point-in-time recovery (physical backups, WAL archived through strata)', function () {
  this.timeout(15 * 60_000);
  let dir = '';
  let dataDir = '';
  let port = 0;
  let config = '';
  let passFile = '';
  const running = new Set<string>();
  const markers: Marker[] = [];
  const lsnTargets: { lsn: string; seq: number }[] = [];
  const restorePoints: { name: string; seq: number }[] = [];
  const backups: { id: string; endedAt: string; endLsn: string }[] = [];
  const cli = (args: string[]) => strataAsync([...args, '--config', config, '--passphrase-file', passFile]);
  const pgCtl = (args: string[]) => runSync(path.join(BINDIR, 'pg_ctl'), args);

  before(async function () {
    if (!existsSync(path.join(BINDIR, 'initdb'))) this.skip();
    dir = mkdtempSync(path.join(tmpdir(), 'strata-pitr-'));
    chmodSync(dir, 0o755);
    if (isRoot) spawnSync('chown', ['postgres', dir]);
    dataDir = path.join(dir, 'data');
    port = await freePort();
    const init = runSync(path.join(BINDIR, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
    assert.equal(init.status, 0, init.out);
    passFile = path.join(dir, 'passphrase');
    config = path.join(dir, 'strata.config.json');
    writeFileSync(passFile, TEST_PASSPHRASE, { mode: 0o600 });
    writeFileSync(config, JSON.stringify({ repository: path.join(dir, 'repo'), databases: { [DB]: { url: `postgres://postgres@127.0.0.1:${port}/postgres`, method: 'physical' } } }));
    if (isRoot) spawnSync('chown', ['postgres', passFile, config]);
    const archive = `${process.execPath} ${CLI} wal-push %p --db ${DB} --config ${config} --passphrase-file ${passFile}`;
    writeFileSync(
      path.join(dataDir, 'postgresql.auto.conf'),
      [
        `port = ${port}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir}'`,
        'archive_mode = on',
        `archive_command = '${archive}'`,
        'track_commit_timestamp = on',
        'fsync = off',
        '',
      ].join('\n'),
      { flag: 'a' },
    );
    const init2 = await cli(['init']);
    assert.equal(init2.status, 0, init2.stderr);
    const started = pgCtl(['start', '-D', dataDir, '-l', path.join(dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.out);
    running.add(dataDir);
  });

  after(function () {
    for (const d of running) pgCtl(['stop', '-D', d, '-m', 'immediate', '-w']);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('recovers to random times, LSNs and restore points with exactly the markers committed by then', async function () {
    // The writer: one marker per transaction every 50 ms; now and then the WAL position after a
    // commit (a target LSN) or a named restore point.
    let db = await client(port);
    await db.query('CREATE TABLE markers (seq int PRIMARY KEY, at timestamptz NOT NULL)');
    let seq = 0;
    let paused = false;
    let stop = false;
    let writerError: unknown;
    const writer = (async () => {
      while (!stop) {
        if (!paused) {
          try {
            seq += 1;
            await db.query('INSERT INTO markers VALUES ($1, clock_timestamp())', [seq]);
            if (seq % 17 === 0) lsnTargets.push({ lsn: (await db.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0]!.l, seq });
            if (seq % 23 === 0) {
              await db.query('SELECT pg_create_restore_point($1)', [`rp_${seq}`]);
              restorePoints.push({ name: `rp_${seq}`, seq });
            }
          } catch (err) {
            writerError = err;
            stop = true;
          }
        }
        await sleep(50);
      }
    })();
    const backup = async (): Promise<void> => {
      const r = await cli(['backup', DB, '--json']);
      assert.equal(r.status, 0, r.stderr);
      const record = (JSON.parse(r.stdout) as { backup: { id: string; logRange: { endedAt: string; end: { lsn: string } } } }).backup;
      backups.push({ id: record.id, endedAt: record.logRange.endedAt, endLsn: record.logRange.end.lsn });
    };
    const switchWal = async (): Promise<string> => (await db.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;

    await sleep(1500);
    await backup();
    const seqAfterFirstBackup = seq;
    await sleep(2000);
    await switchWal();
    await sleep(1500);
    // A restart in between: the writer waits, the archive goes on where it was.
    paused = true;
    await sleep(100);
    const restarted = pgCtl(['restart', '-D', dataDir, '-m', 'fast', '-w', '-t', '300', '-l', path.join(dir, 'server.log')]);
    assert.equal(restarted.status, 0, restarted.out);
    await db.end().catch(() => undefined);
    db = await client(port);
    paused = false;
    await sleep(1500);
    await backup();
    await sleep(2000);
    await switchWal();
    await sleep(1500);
    stop = true;
    await writer;
    assert.equal(writerError, undefined);
    // Everything committed is archived: the last segment switched out, and the archiver past it.
    const last = await switchWal();
    await waitFor('the archiver to archive the last segment', async () => {
      const row = (await db.query<{ w: string | null; f: string }>('SELECT last_archived_wal AS w, failed_count::text AS f FROM pg_stat_archiver')).rows[0]!;
      return row.w !== null && row.w >= last ? true : undefined;
    });
    assert.equal((await db.query<{ f: string }>('SELECT failed_count::text AS f FROM pg_stat_archiver')).rows[0]!.f, '0', 'no wal-push failed');
    for (const row of (
      await db.query<{ seq: number; us: string }>("SELECT seq, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint::text AS us FROM markers ORDER BY seq")
    ).rows) {
      markers.push({ seq: row.seq, committedUs: BigInt(row.us) });
    }
    await db.end();
    assert.ok(markers.length > 100, `the writer committed ${markers.length} markers`);

    // The targets: after the first base backup ended, before the last marker.
    const firstEnd = Date.parse(backups[0]!.endedAt);
    const lastCommitMs = Number(markers.at(-1)!.committedUs / 1000n);
    let rnd = 0x2f6b;
    const random = (): number => ((rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const goals: { args: string[]; expect: number; what: string }[] = [];
    for (let i = 0; i < 5; i++) {
      const t = Math.floor(firstEnd + 100 + random() * (lastCommitMs - firstEnd - 200));
      const us = BigInt(t) * 1000n;
      goals.push({ args: ['--as-of', new Date(t).toISOString()], expect: markers.filter((m) => m.committedUs <= us).length, what: `time ${new Date(t).toISOString()}` });
    }
    const lsns = lsnTargets.filter((l) => lsnValue(l.lsn) > lsnValue(backups[0]!.endLsn));
    for (let i = 0; i < 3; i++) {
      const l = lsns[Math.floor(random() * lsns.length)]!;
      goals.push({ args: ['--lsn', l.lsn], expect: l.seq, what: `LSN ${l.lsn}` });
    }
    // A restore point is looked for from the oldest base backup on: one made before it ended is never met.
    const laterPoints = restorePoints.filter((rp) => rp.seq > seqAfterFirstBackup);
    for (const rp of [laterPoints[0]!, laterPoints.at(-1)!]) goals.push({ args: ['--name', rp.name], expect: rp.seq, what: `restore point ${rp.name}` });
    assert.ok(goals.length >= 10);

    let n = 0;
    for (const goal of goals) {
      n += 1;
      const target = path.join(dir, `restored-${n}`);
      const withStart = n === 1;
      const r = await cli(['restore', 'latest', '--db', DB, '--to', target, ...goal.args, ...(withStart ? ['--start', '--json'] : [])]);
      assert.equal(r.status, 0, `${goal.what}: ${r.stderr}`);
      if (withStart) {
        const report = JSON.parse(r.stdout) as { reached: { state: string; lastCommit: string | null } };
        assert.equal(report.reached.state, 'paused', `${goal.what}: recovery paused at its target`);
      }
      assert.equal(readFileSync(path.join(target, 'PG_VERSION'), 'utf8').trim(), '15');
      assert.ok(existsSync(path.join(target, 'recovery.signal')));
      // The test starts it itself and reads the markers where recovery paused.
      const p = await freePort();
      const started = pgCtl(['start', '-D', target, '-w', '-t', '300', '-l', path.join(dir, `restored-${n}.log`), '-o', `-c port=${p} -c archive_mode=off -c unix_socket_directories=${dir}`]);
      running.add(target);
      assert.equal(started.status, 0, `${goal.what}: ${started.out}\n${readFileSync(path.join(dir, `restored-${n}.log`), 'utf8')}`);
      const c = await waitFor('the restored server', () => client(p));
      try {
        await waitFor(`recovery to ${goal.what} to pause`, async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined));
        const rows = (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
        assert.deepEqual(rows, Array.from({ length: goal.expect }, (_, i) => i + 1), `${goal.what}: markers 1..${goal.expect}`);
      } finally {
        await c.end().catch(() => undefined);
        pgCtl(['stop', '-D', target, '-m', 'fast', '-w']);
        running.delete(target);
        rmSync(target, { recursive: true, force: true });
      }
    }
  });

  it('archives a segment again idempotently and refuses a different one under the same name', async function () {
    const probe = path.join(dir, 'probe');
    mkdirSync(probe);
    if (isRoot) spawnSync('chown', ['postgres', probe]);
    const logDir = path.join(dir, 'repo', 'backups', DB, 'log');
    const name = readdirSync(logDir).find((f) => /^[0-9A-F]{24}_/.test(f))!.slice(0, 24);
    const file = path.join(probe, name);
    const fetched = await cli(['wal-fetch', name, file, '--db', DB]);
    assert.equal(fetched.status, 0, fetched.stderr);
    const again = await cli(['wal-push', file, '--db', DB, '--json']);
    assert.equal(again.status, 0, again.stderr);
    assert.equal((JSON.parse(again.stdout) as { status: string }).status, 'present');
    const bytes = readFileSync(file);
    bytes[100] = bytes[100]! ^ 0xff;
    writeFileSync(file, bytes);
    const other = await cli(['wal-push', file, '--db', DB]);
    assert.equal(other.status, 1);
    assert.match(other.stderr, new RegExp(`already holds a different ${name}`));
    const missing = await cli(['wal-fetch', '00000009.history', path.join(probe, 'x'), '--db', DB]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /not in the archive/);
    assert.equal(existsSync(path.join(probe, 'x')), false);
  });

  it('refuses a recovery across a missing or damaged segment before writing anything', async function () {
    const logDir = path.join(dir, 'repo', 'backups', DB, 'log');
    const segments = readdirSync(logDir).filter((f) => /^[0-9A-F]{24}_/.test(f)).sort();
    const victim = segments.at(-2)!;
    const lastTime = new Date(Number(markers.at(-1)!.committedUs / 1000n)).toISOString();
    renameSync(path.join(logDir, victim), path.join(dir, victim));
    const target = path.join(dir, 'gap');
    const gap = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', lastTime]);
    assert.equal(gap.status, 1, gap.stderr);
    assert.match(gap.stderr, new RegExp(`lacks ${victim.slice(0, 24)}`));
    assert.equal(existsSync(target), false, 'nothing written');
    renameSync(path.join(dir, victim), path.join(logDir, victim));
    const bytes = readFileSync(path.join(logDir, victim));
    bytes[bytes.length - 40] = bytes[bytes.length - 40]! ^ 0xff;
    writeFileSync(path.join(logDir, victim), bytes);
    const damaged = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', lastTime]);
    assert.equal(damaged.status, 1, damaged.stderr);
    assert.match(damaged.stderr, new RegExp(`${victim.slice(0, 24)} of ${DB}, which the recovery replays, is damaged`));
    assert.equal(existsSync(target), false, 'nothing written');
  });
});
