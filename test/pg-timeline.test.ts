import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import type pg from 'pg';
import type { LogWindow } from '@strata/sdk';
import { BINDIR, client, freePort, makeCluster, requireServerPrograms, sleep, switchAndArchive, waitFor } from './helpers/pg-cluster.js';
import type { TestCluster } from './helpers/pg-cluster.js';

/**
 * A failover's history in one archive, on real clusters: a base backup of timeline 1, a copy
 * recovered to a moment T1 and promoted (timeline 2, archiving into the same repository under
 * the same name), while the old server goes on writing on timeline 1 (the diverged history a real
 * failover leaves). Recoveries from the one base must follow the timeline asked for: timeline 2
 * by default (PostgreSQL's `latest`), timeline 1 with `--timeline 1`; verify, list and health walk
 * the history across the switch without reporting a gap.
 */

const DB = 'cluster';
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('PostgreSQL point-in-time recovery across a timeline switch (a failover archived into one repository)', function () {
  this.timeout(15 * 60_000);
  let cluster: TestCluster;
  const running = new Set<string>();

  before(async function () {
    requireServerPrograms(this);
    cluster = await makeCluster('strata-timeline-', DB);
  });

  after(function () {
    if (!cluster) return;
    for (const d of running) cluster.pgCtl(['stop', '-D', d, '-m', 'immediate', '-w']);
    rmSync(cluster.dir, { recursive: true, force: true });
  });

  /** Inserts markers `seqs`, one transaction each; returns the moment after the last one returned. */
  const insert = async (db: pg.Client, seqs: number[]): Promise<number> => {
    for (const seq of seqs) {
      await db.query('INSERT INTO markers VALUES ($1, clock_timestamp())', [seq]);
      await sleep(20);
    }
    return Date.now();
  };
  /** A moment between two commits: the previous commit returned before `after`, the next one starts 300 ms later. */
  const gap = async (after: number): Promise<string> => {
    await sleep(300);
    return new Date(after + 120).toISOString();
  };

  /** Restores, starts the copy where its recovery pauses, and returns the markers it holds. */
  const recoverMarkers = async (name: string, args: string[]): Promise<{ seqs: number[]; report: { base: string; timeline?: number }; fetched: string[] }> => {
    const target = path.join(cluster.dir, name);
    const r = await cluster.cli(['restore', 'latest', '--db', DB, '--to', target, ...args, '--json']);
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    // Across the switch too, the WAL it replays was searched for CREATE TABLESPACE (a timeline's
    // .history file among its segments once made pg_waldump read none, and the check was skipped).
    assert.doesNotMatch(r.stderr, /could not look for CREATE TABLESPACE/, `${args.join(' ')}: ${r.stderr}`);
    // What the server of --start fetched with a `strata wal-fetch` process each (it says so in the log).
    const proof = path.join(target, 'strata-recovery.log');
    const fetched = existsSync(proof) ? readFileSync(proof, 'utf8').split('\n').filter((l) => l.startsWith('strata wal-fetch:')) : [];
    const p = await freePort();
    const log = path.join(cluster.dir, `${name}.log`);
    const started = cluster.pgCtl(['start', '-D', target, '-w', '-t', '300', '-l', log, '-o', `-c port=${p} -c archive_mode=off`]);
    running.add(target);
    assert.equal(started.status, 0, `${args.join(' ')}: ${started.out}\n${existsSync(log) ? readFileSync(log, 'utf8') : ''}`);
    const c = await waitFor('the restored server', () => client(p));
    try {
      await waitFor(`recovery to ${args.join(' ')} to pause`, async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined));
      const seqs = (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
      return { seqs, report: JSON.parse(r.stdout) as { base: string; timeline?: number }, fetched };
    } finally {
      await c.end().catch(() => undefined);
      cluster.pgCtl(['stop', '-D', target, '-m', 'fast', '-w']);
      running.delete(target);
      rmSync(target, { recursive: true, force: true });
    }
  };

  it('recovers to moments of either timeline from the one base, and verify, list and health walk both', async function () {
    const { cli, pgCtl, dir, dataDir } = cluster;
    const started = pgCtl(['start', '-D', dataDir, '-l', path.join(dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.out);
    running.add(dataDir);
    const old = await client(cluster.port);
    await old.query('CREATE TABLE markers (seq int PRIMARY KEY, at timestamptz NOT NULL)');
    // Timeline 1 before the failover: markers 1..30 around the base backup.
    await insert(old, range(1, 10));
    const backup = await cli(['backup', DB, '--json']);
    assert.equal(backup.status, 0, backup.stderr);
    const base = (JSON.parse(backup.stdout) as { backup: { id: string } }).backup.id;
    const t1 = await gap(await insert(old, range(11, 30)));
    await switchAndArchive(old);

    // The old server goes on after T1: markers 1001.. exist only on timeline 1. Its scheduled
    // base backup runs too (a base of the diverged history, newer than T1).
    await insert(old, range(1001, 1005));
    await switchAndArchive(old);
    const lateBackup = await cli(['backup', DB, '--json']);
    assert.equal(lateBackup.status, 0, lateBackup.stderr);
    const lateBase = (JSON.parse(lateBackup.stdout) as { backup: { id: string } }).backup.id;

    // The failover: a copy recovered to T1 and promoted, archiving into the same repository (as
    // the cluster that replaces the original: --archive-mode preserve).
    const standby = path.join(dir, 'promoted');
    const restored = await cli(['restore', 'latest', '--db', DB, '--to', standby, '--as-of', t1, '--target-action', 'promote', '--archive-mode', 'preserve']);
    assert.equal(restored.status, 0, restored.stderr);
    const standbyPort = await freePort();
    const promotedStart = pgCtl(['start', '-D', standby, '-w', '-t', '300', '-l', path.join(dir, 'promoted.log'), '-o', `-c port=${standbyPort}`]);
    running.add(standby);
    assert.equal(promotedStart.status, 0, `${promotedStart.out}\n${readFileSync(path.join(dir, 'promoted.log'), 'utf8')}`);
    const promoted = await waitFor('the promoted server', async () => {
      const c = await client(standbyPort);
      if ((await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r) {
        await c.end();
        return undefined;
      }
      return c;
    });
    assert.equal((await promoted.query<{ t: number }>('SELECT timeline_id AS t FROM pg_control_checkpoint()')).rows[0]!.t, 2, 'the promoted copy writes timeline 2');
    assert.deepEqual((await promoted.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((r) => r.seq), range(1, 30), 'the copy holds the markers up to T1');

    // Timeline 2: markers 2001..2020, a moment between 2015 and 2016, an LSN after 2010.
    await insert(promoted, range(2001, 2010));
    const lsn = (await promoted.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0]!.l;
    const t2 = await gap(await insert(promoted, range(2011, 2015)));
    const promotedDone = await insert(promoted, range(2016, 2020));
    await switchAndArchive(promoted);
    await promoted.end();

    // The old server, unaware, writes more on timeline 1 after all of that.
    const oldStart = Date.now();
    const t1late = await gap(await insert(old, range(1006, 1009)));
    await insert(old, [1010]);
    await switchAndArchive(old);
    await old.end();
    const logDir = path.join(dir, 'repo', 'backups', DB, 'log');
    assert.ok(existsSync(logDir));

    // A moment on timeline 2: the history up to T1, then timeline 2's; none of timeline 1's later markers.
    const atT2 = await recoverMarkers('at-t2', ['--as-of', t2, '--start']);
    assert.deepEqual(atT2.seqs, [...range(1, 30), ...range(2001, 2015)], `as of ${t2} (timeline 2)`);
    // Proved by --start from what the restore checked: the history and segments of both timelines
    // from the spool, what lies past the stop answered at once; no wal-fetch process.
    assert.deepEqual(atT2.fetched, [], 'the proving server fetched nothing');
    assert.equal(atT2.report.base, base, 'from the base on timeline 2\'s history, not the old server\'s later one');
    assert.equal(atT2.report.timeline, 2, 'the recovery follows the newest timeline');
    const atLsn = await recoverMarkers('at-lsn', ['--lsn', lsn]);
    assert.deepEqual(atLsn.seqs, [...range(1, 30), ...range(2001, 2010)], `to LSN ${lsn} (timeline 2)`);
    assert.equal(atLsn.report.base, base);

    // A moment on timeline 1 after the switch, asked for by timeline: the old server's history.
    const onOld = await recoverMarkers('at-t1-late', ['--as-of', t1late, '--timeline', '1']);
    assert.deepEqual(onOld.seqs, [...range(1, 30), ...range(1001, 1009)], `as of ${t1late} on timeline 1`);
    assert.deepEqual([onOld.report.timeline, onOld.report.base], [1, lateBase], 'timeline 1, from its newest base before the moment');
    const current = await recoverMarkers('at-t1-current', ['--as-of', t1late, '--timeline', 'current']);
    assert.deepEqual(current.seqs, [...range(1, 30), ...range(1001, 1009)], `as of ${t1late} on the base's timeline (current)`);

    // A timeline the archive does not have: refused before anything is written.
    const nowhere = path.join(dir, 'nowhere');
    const unknown = await cli(['restore', 'latest', '--db', DB, '--to', nowhere, '--as-of', t2, '--timeline', '7']);
    assert.equal(unknown.status, 1, unknown.stderr);
    assert.match(unknown.stderr, /timeline 7/);
    assert.match(unknown.stderr, /00000007\.history/);
    assert.equal(existsSync(nowhere), false, 'nothing written');
    const bad = await cli(['restore', 'latest', '--db', DB, '--to', nowhere, '--timeline', 'newest']);
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /--timeline takes latest, current or a timeline number/);

    // verify reads the log from the base across the switch: no gap, timeline 2's history read.
    const verified = await cli(['verify', '--all', '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    const logs = (JSON.parse(verified.stdout) as { logs: { base: string; outcome: string; missing: string[]; problems: string[]; files: number }[] }).logs;
    assert.deepEqual(
      logs.map((l) => [l.base, l.outcome, l.missing, l.problems]),
      [
        [base, 'passed', [], []],
        [lateBase, 'passed', [], []],
      ],
    );
    // list: the window reaches timeline 2's last archived segment, the moment a default recovery reaches.
    const listed = await cli(['list', '--json']);
    assert.equal(listed.status, 0, listed.stderr);
    const windows = (JSON.parse(listed.stdout) as { logWindows: LogWindow[] }).logWindows;
    assert.deepEqual(windows.map((w) => w.base), [base, lateBase]);
    assert.ok(windows[0]!.to !== undefined && Date.parse(windows[0]!.to) >= promotedDone, `the window (to ${windows[0]!.to}) reaches timeline 2's last markers`);
    assert.ok(Date.parse(windows[0]!.to!) < oldStart, `the window (to ${windows[0]!.to}) does not follow the old server's later timeline-1 segments`);
    // The old server's base is on timeline 1 only: its window is the old server's history.
    assert.ok(windows[1]!.to !== undefined && Date.parse(windows[1]!.to) > oldStart, `the late base's window (to ${windows[1]!.to}) follows timeline 1`);
    const health = await cli(['health', '--json']);
    const checks = (JSON.parse(health.stdout) as { checks: { check: string; database: string | null; status: string; message: string }[] }).checks;
    const gaps = checks.find((c) => c.check === 'log-gaps' && c.database === DB)!;
    assert.equal(gaps.status, 'ok', gaps.message);
    assert.match(checks.find((c) => c.check === 'log-archive' && c.database === DB)!.message, /recoverable to moments from/);

    // A failover proved by --start (the temporary server never archives): the copy, started as
    // the original's replacement, archives its new timeline's history, so its moments are found.
    const replacement = path.join(dir, 'replacement');
    const proved = await cli(['restore', 'latest', '--db', DB, '--to', replacement, '--as-of', t2, '--start', '--target-action', 'promote', '--archive-mode', 'preserve']);
    assert.equal(proved.status, 0, proved.stderr);
    assert.ok(existsSync(path.join(replacement, 'pg_wal', 'archive_status', '00000003.history.ready')), 'timeline 3\'s history is marked for the archiver');
    const replacementPort = await freePort();
    const replacementStart = pgCtl(['start', '-D', replacement, '-w', '-t', '300', '-l', path.join(dir, 'replacement.log'), '-o', `-c port=${replacementPort}`]);
    running.add(replacement);
    assert.equal(replacementStart.status, 0, replacementStart.out);
    await waitFor('timeline 3\'s history in the archive', async () => (readdirSync(logDir).some((f) => f.startsWith('00000003.history')) ? true : undefined));
  });
});
