import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type pg from 'pg';
import { describeBackupType } from '@strata/protocol/labels';
import { ROOT, recordContentFailure } from './helpers/env.js';
import { Client } from './helpers/server-client.js';
import { PG_BINDIR, TestCluster, asServerUser, betweenMarkers, freePort, loadMarkersAndOrders, markerCommitTimes, sleep, waitFor } from './helpers/pg-test-cluster.js';
import { requireServerPrograms } from './helpers/pg-cluster.js';
import { recipe } from './helpers/format-recipes.js';

/**
 * Incremental and differential physical base backups of a PostgreSQL 15 cluster (which has no
 * block-level incrementals of its own), stored by chunk reuse: the base tar is cut into
 * content-defined chunks and an incremental stores only those its parent lacks. Each one is still
 * a base backup of its own moment: recoveries to a time after it start from it, and hold exactly
 * the markers committed by then; verify, delete and prune treat it as part of its chain.
 */

const DB = 'cluster';
const isRoot = process.getuid?.() === 0;

interface Backup {
  readonly id: string;
  readonly type: string;
  readonly parent: string | null;
  readonly key: string;
  readonly payloadBytes: number;
  readonly storedBytes: number;
  readonly incrementalMethod?: string;
  readonly logRange: { readonly endedAt: string; readonly start: { readonly wal: string }; readonly end: { readonly wal: string } };
}

describe('PostgreSQL physical incrementals and differentials (chunk reuse on PostgreSQL 15)', function () {
  this.timeout(15 * 60_000);
  let cluster: TestCluster;
  let db: pg.Client;
  let full: Backup;
  let incremental: Backup;
  let differential: Backup;
  /** Commit times of the markers, in microseconds since the epoch, by sequence number (1-based). */
  const committedUs: bigint[] = [];
  let seq = 0;

  const backup = async (type: string): Promise<Backup> => {
    const r = await cluster.cli(['backup', DB, '--type', type, '--json']);
    assert.equal(r.status, 0, r.stderr);
    return (JSON.parse(r.stdout) as { backup: Backup }).backup;
  };
  /** One marker per transaction, a little apart so that a time between two of them exists. */
  const markers = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      seq += 1;
      await db.query('INSERT INTO markers VALUES ($1)', [seq]);
      await sleep(30);
    }
  };
  const between = (after: number): Date => betweenMarkers(committedUs, after);

  before(async function () {
    requireServerPrograms(this);
    cluster = await TestCluster.create(DB, 'strata-pgincr-');
    db = await cluster.client();
    await loadMarkersAndOrders(db, 'g % 1000');
  });

  after(async function () {
    await db?.end().catch(() => undefined);
    cluster?.stop();
  });

  it('an incremental after a 1% change stores a small part of what the full stored, and list says it reused chunks', async function () {
    full = await backup('full');
    await markers(5);
    // 1% of the rows, one range of them, then a checkpoint so the pages are on disk.
    await db.query('UPDATE orders SET qty = qty + 1 WHERE id BETWEEN 200001 AND 204000');
    await db.query('CHECKPOINT');
    incremental = await backup('incremental');
    await markers(10);
    differential = await backup('differential');
    await markers(10);
    await cluster.archiveCurrentWal(db);
    committedUs.push(...(await markerCommitTimes(db)));
    assert.equal(committedUs.length, 25);

    assert.equal(full.type, 'full');
    assert.equal(full.incrementalMethod, undefined, 'a full stores everything: no incremental method');
    assert.equal(incremental.parent, full.id);
    assert.equal(differential.parent, full.id, 'a differential builds on the full');
    for (const b of [incremental, differential]) {
      assert.equal(b.incrementalMethod, 'chunk reuse');
      assert.ok(b.payloadBytes < full.payloadBytes * 0.1, `${b.type} stored ${b.payloadBytes} bytes of chunks, the full ${full.payloadBytes}`);
      assert.ok(b.storedBytes < full.storedBytes * 0.2, `${b.type} is ${b.storedBytes} bytes, the full ${full.storedBytes}`);
    }

    const listed = await cluster.cli(['list', DB, '--wide']);
    assert.equal(listed.status, 0, listed.stderr);
    const lineOf = (id: string): string => listed.stdout.split('\n').find((l) => l.includes(id)) ?? '';
    assert.match(lineOf(incremental.id), /incremental \(chunk reuse\)/);
    assert.match(lineOf(differential.id), /differential \(chunk reuse\)/);
    assert.doesNotMatch(lineOf(full.id), /chunk reuse/);
    const json = await cluster.cli(['list', DB, '--json']);
    const records = (JSON.parse(json.stdout) as { backups: Backup[] }).backups;
    assert.deepEqual(
      records.map((b) => [b.id, b.incrementalMethod ?? null]),
      [
        [full.id, null],
        [incremental.id, 'chunk reuse'],
        [differential.id, 'chunk reuse'],
      ],
    );
    // The editor's tree gets the same records from the server and words their type as list does.
    const server = new Client();
    try {
      await server.start();
      await server.request('strata/workspace', { folders: [cluster.dir], databases: [] });
      const answer = await server.request('strata/list', { repository: cluster.repo, database: DB });
      assert.deepEqual(Object.fromEntries(answer.backups.map((b) => [b.id, describeBackupType(b)])), {
        [full.id]: 'full',
        [incremental.id]: 'incremental (chunk reuse)',
        [differential.id]: 'differential (chunk reuse)',
      });
    } finally {
      await server.stop();
    }
  });

  it('a recovery to a moment after an incremental or a differential starts from it and holds exactly the markers committed by then', async function () {
    const goals = [
      { after: 10, base: incremental.id },
      { after: 20, base: differential.id },
    ];
    for (const goal of goals) {
      const at = between(goal.after);
      const target = path.join(cluster.dir, `restored-${goal.after}`);
      const r = await cluster.cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', at.toISOString(), '--json']);
      assert.equal(r.status, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { base: string }).base, goal.base, `the newest base backup that ended before ${at.toISOString()}`);
      const port = await freePort();
      cluster.start(target, ['-o', `-c port=${port} -c archive_mode=off -c unix_socket_directories=${cluster.dir}`]);
      const c = await waitFor('the restored server', () => cluster.client(port));
      try {
        await waitFor('recovery to pause at its target', async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined));
        const rows = (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
        assert.deepEqual(rows, Array.from({ length: goal.after }, (_, i) => i + 1));
        // The change the incremental carried is there too.
        assert.equal((await c.query<{ n: string }>('SELECT count(*)::text AS n FROM orders WHERE id BETWEEN 200001 AND 204000 AND qty = (id % 1000) + 1')).rows[0]!.n, '4000');
      } finally {
        await c.end().catch(() => undefined);
        cluster.stopServer(target);
        rmSync(target, { recursive: true, force: true });
      }
    }
  });

  it('recovers an incremental by hand as docs/FORMAT.md says: recover-chain.py puts base.tar together from the chain, then the WAL as for a full', async function () {
    const { home, follow } = cluster.byHand('by-hand');
    const keys = path.join(home, 'keys');
    const pgdata = path.join(home, 'pgdata');
    follow('recover-data-keys', recipe('recover-data-keys'), { REPO: cluster.repo, PASSFILE: cluster.passFile, KEYS: keys });
    follow('recover-physical-chain', recipe('recover-physical-chain'), { DOCS: path.join(ROOT, 'docs'), KEYS: keys, REPO: cluster.repo, DB, ID: incremental.id, OUT: path.join(home, 'out'), PGDATA: pgdata });
    // "go on with the lines of recover-physical from mkdir -p ... on"
    const whole = recipe('recover-physical');
    const rest = whole.slice(whole.indexOf('mkdir -p "$PGDATA/pg_wal/archive_status"'));
    assert.ok(rest.length < whole.length && rest.includes('restore_command'));
    follow('recover-physical (WAL)', `umask 077\n${rest}`, { KEYS: keys, REPO: cluster.repo, DB, PGDATA: pgdata });
    assert.match(readFileSync(path.join(pgdata, 'backup_label'), 'utf8'), /LABEL: strata/);
    const port = await freePort();
    const [file, argv] = asServerUser('env', [`GNUPGHOME=${path.join(home, 'gnupg')}`, path.join(PG_BINDIR, 'pg_ctl'), '-D', pgdata, '-l', path.join(home, 'server.log'), '-w', '-t', '300', '-o', `-c port=${port} -c unix_socket_directories=${cluster.dir}`, 'start']);
    const started = spawnSync(file, argv, { encoding: 'utf8' });
    cluster.adopt(pgdata);
    assert.equal(started.status, 0, `${started.stdout}${started.stderr}`);
    const c = await waitFor('the recovered server', () => cluster.client(port));
    try {
      await waitFor('the end of recovery', async () => ((await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r ? undefined : true), 300_000);
      const rows = (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
      assert.deepEqual(rows, Array.from({ length: 25 }, (_, i) => i + 1), 'every marker committed, from the archived WAL alone');
      assert.equal((await c.query<{ n: string }>('SELECT count(*)::text AS n FROM orders')).rows[0]!.n, '400000');
    } finally {
      await c.end().catch(() => undefined);
      cluster.stopServer(pgdata);
    }
  });

  it('verify passes on an incremental (quick and full) and finds a damaged parent', async function () {
    const quick = await cluster.cli(['verify', incremental.id, '--json']);
    assert.equal(quick.status, 0, quick.stdout + quick.stderr);
    const deep = await cluster.cli(['verify', incremental.id, '--level', 'full', '--json']);
    assert.equal(deep.status, 0, deep.stdout + deep.stderr);
    assert.match(deep.stdout, /"outcome": "passed"/);

    // A byte of the full's artifact, whose chunks the incremental reuses, changed on disk.
    const artifact = path.join(cluster.repo, full.key);
    const original = readFileSync(artifact);
    const damaged = Buffer.from(original);
    damaged[Math.floor(damaged.length / 2)]! ^= 0x5a;
    writeFileSync(artifact, damaged);
    try {
      const bad = await cluster.cli(['verify', incremental.id]);
      assert.notEqual(bad.status, 0, bad.stdout);
      assert.match(bad.stdout + bad.stderr, new RegExp(full.id));
      // The restore finds the damage after it began unpacking the incremental's tar: it must stop
      // that tar and exit (it used to wait for it forever), leaving no data directory.
      const target = path.join(cluster.dir, 'restored-damaged');
      const refused = await cluster.cli(['restore', incremental.id, '--to', target]);
      assert.notEqual(refused.status, 0, refused.stdout);
      assert.deepEqual(readdirSync(cluster.dir).filter((f) => f.startsWith('restored-damaged')), [], 'no partial data directory is left');
    } finally {
      writeFileSync(artifact, original);
    }
    // A failed verification of a damaged artifact is not passed over (the restore finds it, or
    // takes a mirror's copy); one that found the incremental's restored data wrong is: a recovery
    // to a moment after it starts from the full instead, and says so.
    recordContentFailure(cluster.repo, incremental.id);
    const target = path.join(cluster.dir, 'restored-passed-over');
    const passedOver = await cluster.cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', between(10).toISOString(), '--json']);
    assert.equal(passedOver.status, 0, passedOver.stderr);
    assert.equal((JSON.parse(passedOver.stdout) as { base: string }).base, full.id);
    assert.match(passedOver.stderr, new RegExp(`passed over ${incremental.id} \\(taken [^)]+\\): it failed verification at .*its restored data was not what the backup recorded; recovering from ${full.id} instead`));
    rmSync(target, { recursive: true, force: true });
  });

  it('a pg_basebackup that fails halfway through its tar leaves no backup behind and says why', async function () {
    // The tar streams straight into the artifact, so a failure comes after part of it was stored.
    // The real pg_basebackup, cut off after 2 MB and exiting 1, as one would when its connection
    // drops or it is killed: no real server fails on cue.
    const bin = path.join(cluster.dir, 'failing-bin');
    mkdirSync(bin, { mode: 0o755 });
    const real = path.join(PG_BINDIR, 'pg_basebackup');
    writeFileSync(path.join(bin, 'pg_basebackup'), `#!/bin/sh\n[ "$1" = --version ] && exec ${real} --version\n${real} "$@" | head -c 2000000\nexit 1\n`, { mode: 0o755 });
    const files = (): string[] => readdirSync(path.join(cluster.repo, 'backups', DB)).filter((f) => f !== 'log').sort();
    const before = files();
    const listed = async (): Promise<string[]> => (JSON.parse((await cluster.cli(['list', DB, '--json'])).stdout) as { backups: Backup[] }).backups.map((b) => b.id);
    const ids = await listed();

    const failed = await cluster.cli(['backup', DB, '--json'], { STRATA_PG_BINDIR: bin });
    assert.notEqual(failed.status, 0, failed.stdout);
    assert.match(failed.stderr, /pg_basebackup failed \(exit 1\)/);
    assert.deepEqual(await listed(), ids, 'no restore point was added');
    assert.deepEqual(files(), before, 'nothing the failed backup wrote is left in the repository');
  });

  it('delete refuses the parent of an incremental, and prune keeps it and the WAL from it on', async function () {
    const refused = await cluster.cli(['delete', full.id, '--yes']);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /build on what you asked to delete/);
    assert.match(refused.stderr, new RegExp(incremental.id));

    // Only the newest restore point by count: the differential, whose chain needs the full.
    const dry = await cluster.cli(['prune', '--dry-run', '--keep-last', '1', '--json']);
    assert.equal(dry.status, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout) as { remove: { id: string }[]; removeLog: { last: string; reason: string }[] };
    assert.deepEqual(plan.remove.map((d) => d.id), [incremental.id]);
    // Only the WAL from before the full (the table's load) goes: the full is the oldest kept base backup.
    for (const d of plan.removeLog) {
      assert.ok(d.last.slice(8) < full.logRange.start.wal.slice(8), `${d.last} lies before ${full.logRange.start.wal}, where ${full.id} starts`);
      assert.match(d.reason, new RegExp(`older than the start of ${full.id}`));
    }
    const pruned = await cluster.cli(['prune', '--keep-last', '1']);
    assert.equal(pruned.status, 0, pruned.stderr);
    const after = await cluster.cli(['verify', '--all', '--json']);
    assert.equal(after.status, 0, after.stdout + after.stderr);
    const left = (JSON.parse((await cluster.cli(['list', DB, '--json'])).stdout) as { backups: Backup[] }).backups.map((b) => b.id);
    assert.deepEqual(left, [full.id, differential.id]);

    // A point-in-time window that holds only the differential: its parent stays (the chain needs
    // its chunks) with the WAL of its own range, and what lies between the two goes. The window
    // ends at the newest archived file, which on a fast machine was stored within a second of the
    // differential's end: one archived later makes the window start after it.
    await sleep(Math.max(0, Date.parse(differential.logRange.endedAt) + 1500 - Date.now()));
    await db.query('CHECKPOINT');
    await cluster.archiveCurrentWal(db);
    const windowed = await cluster.cli(['prune', '--dry-run', '--keep-last', '1', '--keep-within-pitr', '1s', '--json']);
    assert.equal(windowed.status, 0, windowed.stderr);
    const windowPlan = JSON.parse(windowed.stdout) as { remove: { id: string }[]; removeLog: { files: number; first: string; last: string }[] };
    assert.deepEqual(windowPlan.remove, [], 'the differential and the full it builds on are kept');
    const segno = (name: string): string => name.slice(8);
    assert.equal(windowPlan.removeLog.length, 1, windowed.stdout);
    const gone = windowPlan.removeLog[0]!;
    assert.ok(segno(gone.first) > segno(full.logRange.end.wal) && segno(gone.last) < segno(differential.logRange.start.wal), `${gone.first}..${gone.last} lies between ${full.logRange.end.wal} and ${differential.logRange.start.wal}`);
  });
});
