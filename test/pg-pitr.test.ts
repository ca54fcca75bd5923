import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { describeLogCoverage } from '@strata/protocol/continuity';
import { checkAgainstManifest, stopsWithin } from '@strata/sdk';
import type { LogWindow } from '@strata/sdk';
import { CLI, ROOT, TEST_PASSPHRASE } from './helpers/env.js';
import { asServerUser, BINDIR, client, freePort, isRoot, requireServerPrograms, runSync, sleep, strataAsync, waitFor } from './helpers/pg-cluster.js';
import { Client } from './helpers/server-client.js';
import { recipe } from './helpers/format-recipes.js';

/**
 * Point-in-time recovery of a physical PostgreSQL backup, as pgBackRest and WAL-G test theirs: a
 * cluster of the test's own (initdb, a free port, archive_command through the built CLI) gets a
 * marker row every 50 ms while base backups and archiving run, with a WAL switch and a server
 * restart in between; then recoveries to random times, LSNs and named restore points must each
 * hold exactly the markers committed at or before their target, by the server's own commit
 * timestamps. Root cannot run PostgreSQL: as root, the cluster and every strata command run as
 * the postgres user (as they would in production).
 */

const DB = 'cluster';

interface Marker {
  readonly seq: number;
  /** Commit time in microseconds since the epoch (exact, as PostgreSQL compares it). */
  readonly committedUs: bigint;
}

function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

/**
 * Flips a byte near the end of an archived file (its OpenPGP integrity check fails, the rest reads)
 * and returns what puts it back as it was, its time too: a file's time is when it was archived,
 * which a recovery to a moment plans by, so a file rewritten later would change later tests' plans.
 */
function damage(file: string): () => void {
  const original = readFileSync(file);
  const times = statSync(file);
  const bytes = Buffer.from(original);
  bytes[bytes.length - 40] = bytes[bytes.length - 40]! ^ 0xff;
  writeFileSync(file, bytes);
  return () => {
    writeFileSync(file, original);
    utimesSync(file, times.atime, times.mtime);
  };
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
  const backups: { id: string; endedAt: string; endLsn: string; startWal: string; endWal: string }[] = [];
  const cli = (args: string[]) => strataAsync([...args, '--config', config, '--passphrase-file', passFile]);
  const pgCtl = (args: string[]) => runSync(path.join(BINDIR, 'pg_ctl'), args);

  before(async function () {
    requireServerPrograms(this);
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
      const record = (JSON.parse(r.stdout) as { backup: { id: string; logRange: { endedAt: string; start: { wal: string }; end: { lsn: string; wal: string } } } }).backup;
      backups.push({ id: record.id, endedAt: record.logRange.endedAt, endLsn: record.logRange.end.lsn, startWal: record.logRange.start.wal, endWal: record.logRange.end.wal });
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
    // A commit's own time, to the microsecond (as PostgreSQL prints it): that commit is in, though
    // a target cut to the millisecond would stop before it.
    const exact = markers.filter((m) => m.committedUs / 1000n > BigInt(firstEnd + 100))[Math.floor(markers.length / 4)]!;
    const exactText = new Date(Number(exact.committedUs / 1000n)).toISOString().replace(/\.\d{3}Z$/, `.${(exact.committedUs % 1000000n).toString().padStart(6, '0')}Z`);
    goals.push({ args: ['--as-of', exactText], expect: exact.seq, what: `time ${exactText}, the commit time of marker ${exact.seq}` });
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
      // The first time and the first LSN are proved by --start.
      const withStart = n === 1 || n === 6;
      const r = await cli(['restore', 'latest', '--db', DB, '--to', target, ...goal.args, ...(withStart ? ['--start', '--json'] : [])]);
      assert.equal(r.status, 0, `${goal.what}: ${r.stderr}`);
      if (withStart) {
        const report = JSON.parse(r.stdout) as { reached: { state: string; lastCommit: string | null }; restoreCommand: string };
        assert.equal(report.reached.state, 'paused', `${goal.what}: recovery paused at its target`);
        // Every file the proving server asked for came from the spool (the segment with the first
        // commit after the target among them) or was answered "not needed" at once: each
        // `strata wal-fetch` started would have said so in the server's log.
        const serverLog = readFileSync(path.join(target, 'strata-recovery.log'), 'utf8');
        assert.match(serverLog, /restored log file "[0-9A-F]{24}" from archive/);
        assert.deepEqual(serverLog.split('\n').filter((l) => l.startsWith('strata wal-fetch:')), [], `${goal.what}: no wal-fetch process`);
        assert.match(report.restoreCommand, /^f=strata-wal\/%f; if \[ -f "\$f" \]; then .* elif \[ -f strata-wal\/not-needed\/%f \]; then exit 1; else .* wal-fetch %f %p --db cluster /);
      }
      assert.equal(readFileSync(path.join(target, 'PG_VERSION'), 'utf8').trim(), '15');
      // The segments restore checked wait in the spool the restore_command takes them from (--start cleared what was left).
      assert.equal(existsSync(path.join(target, 'strata-wal')), !withStart, `${goal.what}: the spool ${withStart ? 'is cleared' : 'is there'}`);
      // "Not needed" answers are for the proving server only: one started later may be given a later target.
      assert.equal(existsSync(path.join(target, 'strata-wal', 'not-needed')), false, `${goal.what}: no file is marked not needed`);
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

  it('refuses a recovery from a named base backup that ended after the target, which would give the later state', async function () {
    assert.ok(backups.length >= 2, 'the first test took two base backups');
    const between = new Date(Math.floor((Date.parse(backups[0]!.endedAt) + Date.parse(backups[1]!.endedAt)) / 2)).toISOString();
    const target = path.join(dir, 'refused-named');
    for (const goal of [['--as-of', between], ['--lsn', backups[0]!.endLsn]]) {
      const r = await cli(['restore', backups[1]!.id, '--to', target, ...goal]);
      assert.equal(r.status, 2, `${goal.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${backups[1]!.id} ended at .*, after the target .*a recovery cannot stop before its base backup's end.*Name a base backup that ended before the target, or give \`latest\``));
      assert.equal(existsSync(target), false, 'nothing was written');
    }
    // The older one suits the target, named or chosen.
    const named = await cli(['restore', backups[0]!.id, '--to', target, '--as-of', between]);
    assert.equal(named.status, 0, named.stderr);
    rmSync(target, { recursive: true, force: true });
  });

  it('marks nothing "not needed" unless the record a recovery stops at is among the spooled segments', async function () {
    // A restore to a moment (no --start) leaves its checked segments in the spool.
    const lastMs = Number(markers.at(-1)!.committedUs / 1000n);
    const moment = new Date(Math.floor((Date.parse(backups.at(-1)!.endedAt) + lastMs) / 2));
    const target = path.join(dir, 'restored-spool');
    const r = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', moment.toISOString()]);
    assert.equal(r.status, 0, r.stderr);
    try {
      const spool = path.join(target, 'strata-wal');
      const segments = readdirSync(spool).filter((f) => /^[0-9A-F]{24}$/.test(f)).sort();
      const proved = (goal: Parameters<typeof stopsWithin>[2]): Promise<boolean> => stopsWithin(spool, segments, goal, { major: 15, backupEnd: backups.at(-1)!.endLsn });
      assert.equal(await proved({ kind: 'time', time: moment }), true, 'the first commit after the moment is spooled');
      // Targets the spool does not reach: the server would need later files, which may be archived yet.
      assert.equal(await proved({ kind: 'time', time: new Date(lastMs + 3_600_000) }), false, 'a moment after every commit');
      assert.equal(await proved({ kind: 'lsn', lsn: 'FF/0' }), false, 'an LSN past the spool');
      assert.equal(await proved({ kind: 'xid', xid: '4000000000' }), false, 'a transaction never committed');
      assert.equal(await proved({ kind: 'name', name: 'no such point' }), false, 'a restore point never made');
      assert.equal(await proved({ kind: 'latest' }), false, 'the end of the archive');
    } finally {
      rmSync(target, { recursive: true, force: true });
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

  it('verify checks the archived WAL from each base backup on, and reports a missing and a damaged segment', async function () {
    const good = await cli(['verify', '--all', '--json']);
    assert.equal(good.status, 0, good.stdout + good.stderr);
    const goodReport = JSON.parse(good.stdout) as { outcome: string; reports: { outcome: string }[]; logs: { base: string; outcome: string; files: number; missing: string[]; to: string }[] };
    assert.equal(goodReport.outcome, 'passed');
    assert.deepEqual(goodReport.reports.map((r) => r.outcome), backups.map(() => 'passed'), 'each base backup passes the quick checks');
    assert.deepEqual(goodReport.logs.map((l) => l.base), backups.map((b) => b.id), 'one log report per base backup');
    for (const log of goodReport.logs) {
      assert.equal(log.outcome, 'passed');
      assert.ok(log.files > 1);
      assert.ok(Date.parse(log.to) >= Number(markers.at(-1)!.committedUs / 1000n), `${log.base}: recoverable to the last marker's commit`);
    }
    // The full level recovers the newest base into a scratch data directory from its archived WAL.
    const full = await cli(['verify', backups[1]!.id, '--level', 'full', '--json']);
    assert.equal(full.status, 0, full.stdout + full.stderr);
    const checks = (JSON.parse(full.stdout) as { reports: { checks: { name: string; status: string }[] }[] }).reports[0]!.checks;
    assert.deepEqual(checks.map((c) => c.status), ['passed', 'passed', 'passed', 'passed', 'passed'], JSON.stringify(checks));
    assert.match(JSON.stringify(checks.at(-1)), /every file of the base backup matches the size and checksum PostgreSQL recorded in its backup_manifest/);

    // list and health show the recoverable window and the archive's age.
    const listed = await cli(['list', '--json']);
    assert.equal(listed.status, 0, listed.stderr);
    const windows = (JSON.parse(listed.stdout) as { logWindows: LogWindow[] }).logWindows;
    assert.deepEqual(windows.map((w) => [w.base, w.from]), backups.map((b) => [b.id, b.endedAt]));
    // strata/list gives the editor the same windows, and the tree's line says what list says.
    const server = new Client();
    try {
      await server.start();
      await server.request('strata/workspace', { folders: [dir], databases: [] });
      const answer = await server.request('strata/list', { repository: path.join(dir, 'repo'), database: DB });
      assert.deepEqual(answer.logWindows, windows, 'the server says what list --json says');
    } finally {
      await server.stop();
    }
    const treeLine = describeLogCoverage(windows, Date.now(), (iso) => iso);
    assert.match(treeLine ?? '', new RegExp(`^recoverable to any moment from ${backups[0]!.endedAt} to `));
    const listText = await cli(['list']);
    assert.match(listText.stdout, new RegExp(`${DB}: recoverable to any moment from ${backups[0]!.endedAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z')} to the last commit archived by .* \\(archived log after 2 base backup\\(s\\), newest file archived .* ago\\)`));
    const health = await cli(['health', '--json']);
    const healthChecks = (JSON.parse(health.stdout) as { checks: { check: string; database: string | null; status: string; message: string }[] }).checks;
    const archiveCheck = healthChecks.find((c) => c.check === 'log-archive' && c.database === DB)!;
    assert.equal(archiveCheck.status, 'ok', archiveCheck.message);
    assert.match(archiveCheck.message, /newest file archived .* ago; recoverable to moments from/);
    assert.equal(healthChecks.find((c) => c.check === 'log-gaps')!.status, 'ok');
    const stale = await cli(['health', '--max-archive-age', '1s', '--json']);
    assert.equal(stale.status, 3, 'an archive older than --max-archive-age is unhealthy');
    assert.match((JSON.parse(stale.stdout) as { checks: { check: string; message: string }[] }).checks.find((c) => c.check === 'log-archive')!.message, /is the server still archiving/);

    const logDir = path.join(dir, 'repo', 'backups', DB, 'log');
    const segments = readdirSync(logDir).filter((f) => /^[0-9A-F]{24}_/.test(f)).sort();
    const gone = segments.at(-2)!;
    const damaged = segments.at(-4)!;
    renameSync(path.join(logDir, gone), path.join(dir, gone));
    const repairDamaged = damage(path.join(logDir, damaged));
    try {
      const bad = await cli(['verify', '--all']);
      assert.equal(bad.status, 3, bad.stdout + bad.stderr);
      assert.match(bad.stdout, new RegExp(`archived log after ${backups[1]!.id}: FAILED`));
      assert.match(bad.stdout, new RegExp(`the archive lacks ${gone.slice(0, 24)}: a recovery from ${backups[1]!.id} stops before the first of them`));
      assert.match(bad.stdout, new RegExp(`${damaged.slice(0, 24)} is damaged`));
      const unhealthy = await cli(['health', '--json']);
      assert.equal(unhealthy.status, 3, 'a gap in the archive is unhealthy');
      assert.match((JSON.parse(unhealthy.stdout) as { checks: { check: string; message: string }[] }).checks.find((c) => c.check === 'log-gaps')!.message, new RegExp(`lacks ${gone.slice(0, 24)}`));
      // A single backup's verify checks its log too.
      const one = await cli(['verify', backups[0]!.id, '--json']);
      assert.equal(one.status, 3, one.stdout + one.stderr);
      const report = JSON.parse(one.stdout) as { reports: { outcome: string }[]; logs: { outcome: string; missing: string[]; problems: string[] }[] };
      assert.equal(report.reports[0]!.outcome, 'passed', 'the base backup itself is intact');
      assert.deepEqual(report.logs[0]!.missing, [gone.slice(0, 24)]);
      assert.equal(report.logs[0]!.problems.filter((p) => p.includes(`${damaged.slice(0, 24)} is damaged`)).length, 1);
    } finally {
      renameSync(path.join(dir, gone), path.join(logDir, gone));
      repairDamaged();
    }

    // A segment lost between two base backups: the moments from it until the later base ended are
    // recovered from neither, so it is a failure, not the note a prune's gap gets (see the prune test).
    const segno = (name: string): string => name.slice(8, 24);
    const [b0, b1] = backups as [(typeof backups)[0], (typeof backups)[0]];
    const between = segments.find((f) => segno(f) > segno(b0.endWal) && segno(f) < segno(b1.startWal))!;
    assert.ok(between, `a segment between ${b0.endWal} and ${b1.startWal}`);
    renameSync(path.join(logDir, between), path.join(dir, between));
    try {
      const lost = await cli(['verify', '--all']);
      assert.equal(lost.status, 3, lost.stdout + lost.stderr);
      assert.match(lost.stdout, new RegExp(`the archive lacks ${between.slice(0, 24)}, which no prune removed: a recovery from ${b0.id} reaches moments up to .*, and moments from then until ${b1.id} ended \\(${b1.endedAt}\\) cannot be recovered`));
      const unhealthy = await cli(['health', '--json']);
      assert.equal(unhealthy.status, 3, 'a lost segment between two bases is unhealthy');
      assert.match((JSON.parse(unhealthy.stdout) as { checks: { check: string; message: string }[] }).checks.find((c) => c.check === 'log-gaps')!.message, new RegExp(`lacks ${between.slice(0, 24)}`));
    } finally {
      renameSync(path.join(dir, between), path.join(logDir, between));
    }

    // The newest base's own first segment damaged: it cannot become consistent, so it is no good
    // restore point, whatever its artifact's checks say; verify records it as failed.
    const own = segments.find((f) => f.startsWith(b1.startWal))!;
    const repairOwn = damage(path.join(logDir, own));
    try {
      const bad = await cli(['verify', '--all']);
      assert.equal(bad.status, 3, bad.stdout + bad.stderr);
      assert.match(bad.stdout, new RegExp(`${b1.id}: FAILED.*\\n  failed  file-accessibility: the archived log it needs to become consistent cannot be read: .*${b1.id} cannot be restored`));
      assert.match(bad.stdout, /1 of 2 backup\(s\) passed/);
      const newestGood = (JSON.parse((await cli(['list', '--json'])).stdout) as { newestGood: Record<string, string | null> }).newestGood;
      assert.equal(newestGood[DB], b0.id, 'the older base is the newest good restore point');
    } finally {
      repairOwn();
    }
    const again = await cli(['verify', '--all']);
    assert.equal(again.status, 0, again.stdout + again.stderr);
    assert.equal((JSON.parse((await cli(['list', '--json'])).stdout) as { newestGood: Record<string, string | null> }).newestGood[DB], b1.id);
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
    const repairVictim = damage(path.join(logDir, victim));
    try {
      const damaged = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', lastTime]);
      assert.equal(damaged.status, 1, damaged.stderr);
      assert.match(damaged.stderr, new RegExp(`${victim.slice(0, 24)} of ${DB}, which the recovery replays, is damaged`));
      assert.equal(existsSync(target), false, 'nothing written');
    } finally {
      repairVictim();
    }
  });

  it('a damaged copy of the segment after the target stops no recovery that does not read it; a warning names it', async function () {
    const logDir = path.join(dir, 'repo', 'backups', DB, 'log');
    const archived = readdirSync(logDir).filter((f) => /^[0-9A-F]{24}_/.test(f));
    const hex8 = (n: bigint): string => n.toString(16).toUpperCase().padStart(8, '0');
    // Timeline 1 throughout, 16 MiB segments: 256 to a log id.
    const segmentName = (segno: bigint): string => `00000001${hex8(segno >> 8n)}${hex8(segno & 0xffn)}`;
    const fileOf = (segno: bigint): string | undefined => archived.find((f) => f.startsWith(`${segmentName(segno)}_`));
    const goal = lsnTargets.find((l) => lsnValue(l.lsn) > lsnValue(backups[0]!.endLsn) && fileOf((lsnValue(l.lsn) >> 24n) + 1n) !== undefined);
    assert.ok(goal, 'a target LSN whose next segment is archived');
    const after = fileOf((lsnValue(goal.lsn) >> 24n) + 1n)!;
    const repairAfter = damage(path.join(logDir, after));
    const target = path.join(dir, 'after-target-damaged');
    try {
      const r = await cli(['restore', 'latest', '--db', DB, '--to', target, '--lsn', goal.lsn, '--start', '--json']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`warning: WAL segment ${after.slice(0, 24)} of ${DB}, the one after the target, is damaged`));
      assert.equal((JSON.parse(r.stdout) as { reached: { state: string } }).reached.state, 'paused', 'the recovery reached its target');
    } finally {
      repairAfter();
      rmSync(target, { recursive: true, force: true });
    }
  });

  it('recovers by hand as docs/FORMAT.md says: gpg, zstd and tar into a data directory, a restore_command that decrypts the archived WAL', async function () {
    // A person's own GnuPG home and files, as the server's user.
    const home = path.join(dir, 'by-hand');
    mkdirSync(path.join(home, 'gnupg'), { recursive: true, mode: 0o700 });
    if (isRoot) spawnSync('chown', ['-R', 'postgres', home]);
    const follow = (marker: string, variables: Record<string, string>): string => {
      const env = { GNUPGHOME: path.join(home, 'gnupg'), ...variables };
      const [file, argv] = asServerUser('env', [...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'bash', '-euo', 'pipefail', '-c', recipe(marker)]);
      const r = spawnSync(file, argv, { encoding: 'utf8', env: { ...process.env, ...env } });
      assert.equal(r.status, 0, `${marker} failed:\n${r.stderr}`);
      return r.stdout;
    };
    const keys = path.join(home, 'keys');
    follow('recover-data-keys', { REPO: path.join(dir, 'repo'), PASSFILE: passFile, KEYS: keys });
    const listed = JSON.parse((await cli(['list', '--json'])).stdout) as { backups: { id: string; key: string; encryption: { keyId: string } }[] };
    const base = listed.backups.find((b) => b.id === backups[1]!.id)!;
    const dataKey = path.join(home, 'data-key');
    follow('data-key-file', { KEYS: keys, KEYID: base.encryption.keyId, DATAKEY: dataKey });
    const pgdata = path.join(home, 'pgdata');
    follow('recover-physical', { ARTIFACT: path.join(dir, 'repo', base.key), DATAKEY: dataKey, KEYS: keys, REPO: path.join(dir, 'repo'), DB, PGDATA: pgdata });
    assert.match(readFileSync(path.join(pgdata, 'postgresql.auto.conf'), 'utf8'), /^archive_mode = off$/m);
    // Started as the block's next sentence says: it replays the whole archive, then opens.
    const p = await freePort();
    const [file, argv] = asServerUser('env', [`GNUPGHOME=${path.join(home, 'gnupg')}`, path.join(BINDIR, 'pg_ctl'), '-D', pgdata, '-l', path.join(home, 'server.log'), '-w', '-t', '300', '-o', `-c port=${p} -c unix_socket_directories=${dir}`, 'start']);
    const started = spawnSync(file, argv, { encoding: 'utf8' });
    running.add(pgdata);
    assert.equal(started.status, 0, `${started.stdout}${started.stderr}\n${existsSync(path.join(home, 'server.log')) ? readFileSync(path.join(home, 'server.log'), 'utf8') : ''}`);
    const c = await waitFor('the recovered server', () => client(p));
    try {
      await waitFor('the end of recovery', async () => ((await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r ? undefined : true), 300_000);
      const rows = (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
      assert.deepEqual(rows, markers.map((m) => m.seq), 'every marker committed, from the archived WAL alone');
    } finally {
      await c.end().catch(() => undefined);
      pgCtl(['stop', '-D', pgdata, '-m', 'fast', '-w']);
      running.delete(pgdata);
    }
    assert.match(readFileSync(path.join(home, 'server.log'), 'utf8'), /restored log file "[0-9A-F]{24}" from archive/);
  });

  it('copy and export carry the archived WAL: the copy and the import recover to a moment with exactly the markers committed by then', async function () {
    // A moment after the newest base backup, reached by replaying the archived WAL after it.
    const lastMs = Number(markers.at(-1)!.committedUs / 1000n);
    const moment = Math.floor((Date.parse(backups.at(-1)!.endedAt) + lastMs) / 2);
    const expected = markers.filter((m) => m.committedUs <= BigInt(moment) * 1000n).map((m) => m.seq);
    assert.ok(expected.length > 0 && expected.length < markers.length, 'the moment lies inside the archive');
    const recoveredMarkers = async (repo: string, name: string): Promise<number[]> => {
      const target = path.join(dir, name);
      const r = await strataAsync(['restore', 'latest', '--db', DB, '--repo', repo, '--to', target, '--as-of', new Date(moment).toISOString(), '--passphrase-file', passFile]);
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
      const p = await freePort();
      const started = pgCtl(['start', '-D', target, '-w', '-t', '300', '-l', path.join(dir, `${name}.log`), '-o', `-c port=${p} -c archive_mode=off -c unix_socket_directories=${dir}`]);
      running.add(target);
      assert.equal(started.status, 0, `${name}: ${started.out}\n${readFileSync(path.join(dir, `${name}.log`), 'utf8')}`);
      const c = await waitFor(`the server recovered from ${name}`, () => client(p));
      try {
        await waitFor(`recovery from ${name} to pause`, async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined));
        return (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
      } finally {
        await c.end().catch(() => undefined);
        pgCtl(['stop', '-D', target, '-m', 'fast', '-w']);
        running.delete(target);
        rmSync(target, { recursive: true, force: true });
      }
    };
    const copyRepo = path.join(dir, 'copy-repo');
    const init = await strataAsync(['init', '--repo', copyRepo, '--passphrase-file', passFile]);
    assert.equal(init.status, 0, init.stderr);
    const copied = await cli(['copy', DB, '--to', copyRepo, '--to-passphrase-file', passFile, '--json']);
    assert.equal(copied.status, 0, copied.stderr);
    const copiedLogs = (JSON.parse(copied.stdout) as { logFiles: number }).logFiles;
    assert.ok(copiedLogs > 0, 'the archived WAL was copied');
    const again = await cli(['copy', DB, '--to', copyRepo, '--to-passphrase-file', passFile, '--json']);
    assert.equal((JSON.parse(again.stdout) as { logFiles: number }).logFiles, 0, 'a second copy copies no WAL again');
    assert.deepEqual(await recoveredMarkers(copyRepo, 'from-copy'), expected);

    const file = path.join(dir, 'cluster-export.tar.gz');
    const exported = await cli(['export', DB, '--out', file, '--json']);
    assert.equal(exported.status, 0, exported.stderr);
    const importRepo = path.join(dir, 'import-repo');
    assert.equal((await strataAsync(['init', '--repo', importRepo, '--passphrase-file', passFile])).status, 0);
    const imported = await strataAsync(['import', file, '--repo', importRepo, '--passphrase-file', passFile, '--json']);
    assert.equal(imported.status, 0, imported.stderr);
    // The export holds the newest base backup's chain, so the WAL from its start on (the copy took every base's).
    const exportedLogs = (JSON.parse(exported.stdout) as { logFiles: number }).logFiles;
    assert.ok(exportedLogs > 0 && exportedLogs <= copiedLogs, `the export carries the WAL after its base backup (${exportedLogs} of ${copiedLogs} files)`);
    assert.equal((JSON.parse(imported.stdout) as { logFiles: number }).logFiles, exportedLogs, 'the import brings in every archived file the export carries');
    const verified = await strataAsync(['verify', '--all', '--repo', importRepo, '--passphrase-file', passFile]);
    assert.equal(verified.status, 0, `verify walks the imported archive without a gap: ${verified.stdout}${verified.stderr}`);
    assert.deepEqual(await recoveredMarkers(importRepo, 'from-import'), expected);
    // A repository holding another file under one of the export's log names refuses the import
    // (LOG_CONFLICT) and keeps its file; nothing of the import stays, not even the note of a write
    // (the next open would act on it: a note naming a log key removes that key).
    const conflictRepo = path.join(dir, 'conflict-repo');
    assert.equal((await strataAsync(['init', '--repo', conflictRepo, '--passphrase-file', passFile])).status, 0);
    const logFolder = path.join(importRepo, 'backups', DB, 'log');
    const firstLog = readdirSync(logFolder).sort()[0]!;
    const planted = firstLog.replace(/_[0-9a-f]{64}_/, `_${'0'.repeat(64)}_`);
    const conflictLog = path.join(conflictRepo, 'backups', DB, 'log');
    const plant = runSync('bash', ['-c', `mkdir -p "$1" && cp "$2" "$1/$3"`, 'plant', conflictLog, path.join(logFolder, firstLog), planted]);
    assert.equal(plant.status, 0, plant.out);
    const conflicting = await strataAsync(['import', file, '--repo', conflictRepo, '--passphrase-file', passFile, '--json']);
    assert.equal(conflicting.status, 1, conflicting.stderr);
    assert.equal((JSON.parse(conflicting.stdout) as { error: { code: string } }).error.code, 'LOG_CONFLICT');
    assert.deepEqual(readdirSync(conflictLog), [planted]);
    const pending = path.join(conflictRepo, 'pending');
    assert.deepEqual(existsSync(pending) ? readdirSync(pending) : [], [], 'no note of the failed import is left');
    const listed = await strataAsync(['list', '--repo', conflictRepo, '--passphrase-file', passFile, '--json']);
    assert.deepEqual((JSON.parse(listed.stdout) as { backups: unknown[] }).backups, []);

    // With a mirror in the config, archive_command stores each segment there too, at once.
    const mirrorRepo = path.join(dir, 'mirror-repo');
    assert.equal((await strataAsync(['init', '--repo', mirrorRepo, '--passphrase-file', passFile])).status, 0);
    const plain = readFileSync(config, 'utf8');
    writeFileSync(config, JSON.stringify({ ...(JSON.parse(plain) as object), mirror: { repository: mirrorRepo, passphraseFile: passFile } }));
    const db = await client(port);
    try {
      await db.query('CREATE TABLE after_mirror (id int)');
      const switched = (await db.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
      await waitFor('the archiver to archive the switched segment', async () => {
        const row = (await db.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver')).rows[0]!;
        return row.w !== null && row.w >= switched ? true : undefined;
      });
      const inMirror = readdirSync(path.join(mirrorRepo, 'backups', DB, 'log'));
      assert.ok(inMirror.some((f) => f.startsWith(`${switched}_`)), `the mirror holds ${switched} as soon as it was archived (it holds ${inMirror.join(', ')})`);
    } finally {
      await db.end();
      writeFileSync(config, plain);
    }
  });

  it('restores a table as of a moment into another database, through a scratch cluster recovered to that moment', async function () {
    const admin = await client(port);
    try {
      await admin.query('CREATE DATABASE tables_target');
    } finally {
      await admin.end();
    }
    const target = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'tables_target' });
    await target.connect();
    try {
      await target.query('CREATE TABLE markers (seq int PRIMARY KEY, at timestamptz NOT NULL)');
      await target.query('INSERT INTO markers VALUES (-1, now())');
      const url = `postgres://postgres@127.0.0.1:${port}/tables_target`;
      const firstEnd = Date.parse(backups[0]!.endedAt);
      const lastCommitMs = Number(markers.at(-1)!.committedUs / 1000n);
      const t = Math.floor((firstEnd + lastCommitMs) / 2);
      const expect = markers.filter((m) => m.committedUs <= BigInt(t) * 1000n).length;
      const refused = await cli(['restore', '--db', DB, '--as-of', new Date(t).toISOString(), '--tables', 'public.markers', '--to', url]);
      assert.notEqual(refused.status, 0);
      assert.match(refused.stderr, /exists; pass --force to replace the tables public\.markers in it/);
      // Everything the scratch cluster and repository needed was in the temporary folder, and is gone from it.
      const tmp = path.join(dir, 'tables-tmp');
      mkdirSync(tmp);
      if (isRoot) spawnSync('chown', ['postgres', tmp]);
      const r = await strataAsync(['restore', '--db', DB, '--as-of', new Date(t).toISOString(), '--tables', 'public.markers', '--to', url, '--force', '--yes', '--json', '--config', config, '--passphrase-file', passFile], { STRATA_TMPDIR: tmp });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.deepEqual(readdirSync(tmp), []);
      const report = JSON.parse(r.stdout) as { base: string; tables: string[]; from: string; reached: { state: string } };
      assert.deepEqual([report.tables, report.from, report.reached.state], [['public.markers'], 'postgres', 'promoted']);
      const rows = (await target.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
      assert.deepEqual(rows, Array.from({ length: expect }, (_, i) => i + 1), `markers 1..${expect}, committed by ${new Date(t).toISOString()}`);
    } finally {
      await target.end().catch(() => undefined);
    }
  });

  it("verify --level full checks the restored copy's files against PostgreSQL's backup_manifest: one lost or changed is a difference", async function () {
    const target = path.join(dir, 'restored-files');
    const r = await cli(['restore', backups[1]!.id, '--to', target]);
    assert.equal(r.status, 0, r.stderr);
    const major = Number(readFileSync(path.join(target, 'PG_VERSION'), 'utf8').trim());
    // The restore's recovery settings are not a difference (pg_verifybackup leaves them out; the
    // folder of WAL this restore spooled for its recovery is the CLI's, and never in a verify's copy).
    rmSync(path.join(target, 'strata-wal'), { recursive: true, force: true });
    assert.deepEqual((await checkAgainstManifest(target, major)).problems, []);
    // A table's file, as the manifest PostgreSQL wrote names it.
    const listed = (JSON.parse(readFileSync(path.join(target, 'backup_manifest'), 'utf8')) as { Files: { Path: string; Size: number }[] }).Files;
    const relation = listed.find((f) => /^base\/\d+\/\d+$/.test(f.Path) && f.Size > 0)!.Path;
    rmSync(path.join(target, relation));
    const lost = await checkAgainstManifest(target, major);
    assert.match(lost.problems.join('\n'), new RegExp(`"${relation}" is present in the manifest but not on disk`));
    writeFileSync(path.join(target, 'pg_xact', '0000'), Buffer.alloc(8192, 0x55), { flag: 'r+' });
    assert.match((await checkAgainstManifest(target, major)).problems.join('\n'), /checksum mismatch for file "pg_xact\/0000"/);
    rmSync(target, { recursive: true, force: true });
  });

  it('prune keeps the WAL kept base backups need: a point-in-time window the log after its first base, older bases their own range', async function () {
    const logDir = path.join(dir, 'repo', 'backups', DB, 'log');
    const names = (): string[] => readdirSync(logDir).map((f) => f.slice(0, f.indexOf('_'))).sort();
    const segno = (name: string): string => name.slice(8, 24);
    const [b0, b1] = backups as [(typeof backups)[0], (typeof backups)[0]];
    const before = names();
    // Only the newest base kept: everything before its start goes (dry run first: nothing changes).
    const dry = await cli(['prune', '--dry-run', '--keep-last', '1', '--json']);
    assert.equal(dry.status, 0, dry.stderr);
    const dryPlan = JSON.parse(dry.stdout) as { remove: { id: string }[]; removeLog: { database: string; files: number; first: string; last: string }[] };
    assert.deepEqual(dryPlan.remove.map((d) => d.id), [b0.id]);
    const older = before.filter((n) => /^[0-9A-F]{24}/.test(n) && segno(n) < segno(b1.startWal));
    assert.equal(dryPlan.removeLog.length, 1);
    assert.equal(dryPlan.removeLog[0]!.files, older.length, `the files before ${b1.startWal}: ${older.join(', ')}`);
    assert.deepEqual(names(), before, 'a dry run removes nothing');
    const dryText = await cli(['prune', '--dry-run', '--keep-last', '1']);
    assert.match(dryText.stdout, new RegExp(`would remove ${older.length} archived log file\\(s\\) of ${DB}.*older than the start of ${b1.id}, the oldest kept base backup`));

    // A prune that dies while it removes log files (here the process, through the SDK, right
    // after removing the first file between the bases) has journaled what it was removing: the gap
    // it leaves is a prune's, not log lost, for verify and for the next prune alike.
    const betweenBases = before.filter((n) => /^[0-9A-F]{24}$/.test(n) && segno(n) > segno(b0.endWal) && segno(n) < segno(b1.startWal));
    const script = path.join(dir, 'prune-dies.mjs');
    writeFileSync(
      script,
      `import { readFileSync } from 'node:fs';
      import { LocalStorage, Passphrase, openRepository } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'packages/sdk/dist/index.js')).href)};
      const [repoPath, passFile, between] = process.argv.slice(2);
      const local = new LocalStorage(repoPath);
      const storage = new Proxy(local, {
        get: (target, key) =>
          key === 'delete'
            ? async (name, options) => {
                await target.delete(name, options);
                const file = name.split('/').pop();
                if (JSON.parse(between).includes(file.slice(0, file.indexOf('_')))) { console.log('died after removing ' + name); process.exit(9); }
              }
            : typeof target[key] === 'function' ? target[key].bind(target) : target[key],
      });
      const repo = await openRepository(storage, { passphrase: new Passphrase(readFileSync(passFile, 'utf8')) });
      await repo.prune(() => ({ keepLast: 2, keepWithinPitr: '1s' }));
      console.log('the prune completed');`,
    );
    if (isRoot) spawnSync('chown', ['postgres', script]);
    const died = runSync(process.execPath, [script, path.join(dir, 'repo'), passFile, JSON.stringify(betweenBases)]);
    assert.equal(died.status, 9, died.out);
    assert.deepEqual(before.filter((n) => !names().includes(n)).filter((n) => betweenBases.includes(n)).length, 1, died.out);
    const afterDeath = await cli(['verify', '--all', '--json']);
    assert.equal(afterDeath.status, 0, afterDeath.stdout + afterDeath.stderr);
    assert.deepEqual((JSON.parse(afterDeath.stdout) as { logs: { outcome: string }[] }).logs.map((l) => l.outcome), ['passed', 'passed']);

    // Both bases kept, the point-in-time window only after the second: the first keeps its own range.
    const windowed = await cli(['prune', '--keep-last', '2', '--keep-within-pitr', '1s', '--json']);
    assert.equal(windowed.status, 0, windowed.stderr);
    assert.deepEqual((JSON.parse(windowed.stdout) as { remove: unknown[] }).remove, []);
    const after = names();
    const gone = before.filter((n) => !after.includes(n));
    const between = (n: string): boolean => segno(n) > segno(b0.endWal) && segno(n) < segno(b1.startWal);
    assert.ok(gone.some(between), 'the WAL between the two bases goes');
    for (const n of gone) assert.ok(segno(n) < segno(b0.startWal) || between(n), `${n} lies before ${b0.startWal} or between ${b0.endWal} and ${b1.startWal}`);
    for (const n of before.filter((n) => /^[0-9A-F]{24}$/.test(n) && segno(n) >= segno(b0.startWal) && (segno(n) <= segno(b0.endWal) || segno(n) >= segno(b1.startWal)))) {
      assert.ok(after.includes(n), `${n} stays`);
    }
    const verified = await cli(['verify', '--all', '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    const logs = (JSON.parse(verified.stdout) as { logs: { base: string; outcome: string; notes: string[] }[] }).logs;
    assert.deepEqual(logs.map((l) => l.outcome), ['passed', 'passed']);
    assert.match(logs[0]!.notes.join(' '), new RegExp(`later moments are recovered from ${b1.id}`));

    // The first base goes: so does its range.
    const pruned = await cli(['prune', '--keep-last', '1']);
    assert.equal(pruned.status, 0, pruned.stderr);
    assert.deepEqual(names().filter((n) => /^[0-9A-F]{24}/.test(n) && segno(n) < segno(b1.startWal)), []);
    assert.ok(names().some((n) => n === b1.startWal), 'the newest base keeps its start');
    const last = await cli(['verify', '--all']);
    assert.equal(last.status, 0, last.stdout + last.stderr);
  });

  it('a recovery to the end of the archive, started after more WAL was archived, replays that WAL too', async function () {
    const target = path.join(dir, 'restored-latest');
    const r = await cli(['restore', 'latest', '--db', DB, '--to', target]);
    assert.equal(r.status, 0, r.stderr);
    // The source goes on: a table made after the restore, its segment archived before the copy starts.
    const db = await client(port);
    let switched: string;
    try {
      await db.query('CREATE TABLE after_restore (id int); INSERT INTO after_restore VALUES (42)');
      switched = (await db.query<{ w: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS w')).rows[0]!.w;
      await waitFor('the archiver to archive the switched segment', async () => {
        const row = (await db.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver')).rows[0]!;
        return row.w !== null && row.w >= switched ? true : undefined;
      });
    } finally {
      await db.end();
    }
    const p = await freePort();
    const log = path.join(dir, 'restored-latest.log');
    const started = pgCtl(['start', '-D', target, '-w', '-t', '300', '-l', log, '-o', `-c port=${p} -c archive_mode=off -c unix_socket_directories=${dir}`]);
    running.add(target);
    assert.equal(started.status, 0, `${started.out}\n${readFileSync(log, 'utf8')}`);
    const c = await waitFor('the restored server', () => client(p));
    try {
      await waitFor('the end of recovery', async () => ((await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r ? undefined : true), 300_000);
      assert.deepEqual((await c.query<{ id: number }>('SELECT id FROM after_restore')).rows, [{ id: 42 }], 'the row committed after the restore');
    } finally {
      await c.end().catch(() => undefined);
      pgCtl(['stop', '-D', target, '-m', 'fast', '-w']);
      running.delete(target);
    }
    assert.match(readFileSync(log, 'utf8'), new RegExp(`^strata wal-fetch: ${switched} fetched from the archive of ${DB}$`, 'm'), 'the segment archived after the restore was fetched');
  });
});
