import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type pg from 'pg';
import { ROOT } from './helpers/env.js';
import { RICH_POSTGRES_SQL } from './helpers/rich-postgres.js';
import { pgDump } from './helpers/postgres.js';
import { TestCluster, asServerUser, betweenMarkers, freePort, loadMarkersAndOrders, markerCommitTimes, sleep, waitFor } from './helpers/pg-test-cluster.js';
import { requirePg17 } from './helpers/pg-cluster.js';
import { followExportRestoreMd, recipe } from './helpers/format-recipes.js';

/**
 * PostgreSQL 17's own block-level incremental base backups: with summarize_wal on, an incremental
 * or differential asks the server (pg_basebackup --incremental, given the parent's backup_manifest,
 * which the parent left in the repository's cache) for the blocks changed since its parent, stores that tar as a
 * layer of its own beside its parents' (inherited, nothing read or stored again), and a restore
 * puts the layers together with pg_combinebackup. Where the server cannot (summarize_wal off), the
 * incremental is taken whole by chunk reuse, as on PostgreSQL 15, and list says which.
 *
 * A real PostgreSQL 17 (Debian 13's programs, scripts/pg17/install.sh) in a cluster of the test's own.
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
  readonly databaseBytes: number;
  readonly incrementalMethod?: string;
  readonly logRange: { readonly start: { readonly lsn: string } };
}

describe('PostgreSQL 17 block-level incrementals (pg_basebackup --incremental, pg_combinebackup)', function () {
  this.timeout(15 * 60_000);
  let cluster: TestCluster;
  let db: pg.Client;
  const made: Record<'full' | 'incremental' | 'second' | 'differential' | 'whole', Backup> = {} as never;
  /** Commit times of the markers, in microseconds since the epoch, by sequence number (1-based). */
  const committedUs: bigint[] = [];
  let seq = 0;

  const backup = async (type: string): Promise<Backup> => {
    const r = await cluster.cli(['backup', DB, '--type', type, '--json']);
    assert.equal(r.status, 0, r.stderr);
    return (JSON.parse(r.stdout) as { backup: Backup }).backup;
  };
  const markers = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      seq += 1;
      await db.query('INSERT INTO markers VALUES ($1)', [seq]);
      await sleep(30);
    }
  };
  /** One key range of orders changed: `qty` set to `mark` for ids in [from, to]. */
  const change = async (from: number, to: number, mark: number): Promise<void> => {
    await db.query('UPDATE orders SET qty = $3 WHERE id BETWEEN $1 AND $2', [from, to, mark]);
    await db.query('CHECKPOINT');
  };
  const between = (after: number): Date => betweenMarkers(committedUs, after);
  /** `strata export` of the database into a folder of its own, then its RESTORE.md followed: the newest restore point's data directory. */
  const exportAndFollow = async (name: string, newest: string): Promise<{ restoreMd: string; newdb: string }> => {
    const file = path.join(cluster.dir, name, 'cluster.tar.gz');
    mkdirSync(path.dirname(file), { mode: 0o755 });
    if (isRoot) spawnSync('chown', ['postgres', path.dirname(file)]);
    const exported = await cluster.cli(['export', DB, '--out', file]);
    assert.equal(exported.status, 0, exported.stderr);
    const home = path.join(cluster.dir, `${name}-home`);
    mkdirSync(home, { mode: 0o700 });
    const { restoreMd, folder } = followExportRestoreMd(file, DB, home, { PATH: `${cluster.bindir}:${process.env['PATH']}` });
    assert.match(restoreMd, new RegExp(`Newest restore point: ${newest}`));
    return { restoreMd, newdb: path.join(folder, DB) };
  };
  /**
   * A folder of PostgreSQL's programs whose pg_basebackup makes certain the race an operator can
   * cause: summarization is off for the moment the server is asked for an incremental (after
   * strata found the summaries in place), then on again; it leaves `pg_basebackup.refused` when it
   * did. The refusal is the real server's.
   */
  const racingPrograms = (): string => {
    const racing = path.join(cluster.dir, 'racing-programs');
    rmSync(racing, { recursive: true, force: true });
    mkdirSync(racing, { mode: 0o755 });
    for (const name of readdirSync(cluster.bindir)) if (name !== 'pg_basebackup') symlinkSync(path.join(cluster.bindir, name), path.join(racing, name));
    const summarize = (on: string): string => `"${cluster.bindir}/psql" -X -q -d postgres -c "ALTER SYSTEM SET summarize_wal = ${on}" -c "SELECT pg_reload_conf()" >/dev/null || exit 9`;
    writeFileSync(
      path.join(racing, 'pg_basebackup'),
      ['#!/bin/sh', 'case " $* " in', '  *" --incremental="*)', `    ${summarize('off')}`, '    sleep 1', `    "${cluster.bindir}/pg_basebackup" "$@"`, '    code=$?', `    ${summarize('on')}`, '    touch "$0.refused"', '    exit $code ;;', 'esac', `exec "${cluster.bindir}/pg_basebackup" "$@"`, ''].join('\n'),
      { mode: 0o755 },
    );
    if (isRoot) spawnSync('chown', ['-R', 'postgres', racing]);
    return racing;
  };

  before(async function () {
    const bindir = requirePg17(this);
    cluster = await TestCluster.create(DB, 'strata-pg17-', { bindir, settings: ['summarize_wal = on'] });
    db = await cluster.client();
    assert.match((await db.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v, /^17\./);
    await loadMarkersAndOrders(db, '0');
  });

  after(async function () {
    await db?.end().catch(() => undefined);
    cluster?.stop();
  });

  it('incrementals and differentials store only the changed blocks, and list says they are block-level', async function () {
    made.full = await backup('full');
    await markers(5);
    await change(100001, 104000, 1);
    made.incremental = await backup('incremental');
    await markers(5);
    await change(200001, 204000, 2);
    made.second = await backup('incremental');
    await markers(5);
    await change(300001, 304000, 3);
    made.differential = await backup('differential');
    await markers(5);
    // Without WAL summaries the server cannot say what changed: the next incremental is whole.
    await db.query('ALTER SYSTEM SET summarize_wal = off');
    await db.query('SELECT pg_reload_conf()');
    await change(350001, 354000, 4);
    made.whole = await backup('incremental');
    await markers(5);
    await cluster.archiveCurrentWal(db);
    committedUs.push(...(await markerCommitTimes(db)));
    assert.equal(committedUs.length, 25);

    const { full, incremental, second, differential, whole } = made;
    assert.equal(full.incrementalMethod, undefined);
    assert.equal(incremental.parent, full.id);
    assert.equal(second.parent, incremental.id, 'an incremental builds on the newest restore point');
    assert.equal(differential.parent, full.id, 'a differential builds on the full');
    assert.equal(whole.parent, differential.id);
    for (const b of [incremental, second, differential]) {
      assert.equal(b.incrementalMethod, 'block-level', b.id);
      // 1% of the table's rows in one range: a few hundred blocks, where the full stored ~60 MB.
      assert.ok(b.payloadBytes < full.payloadBytes * 0.1, `${b.id} stored ${b.payloadBytes} bytes, the full ${full.payloadBytes}`);
      assert.ok(b.databaseBytes > full.payloadBytes * 0.5, `${b.id} records the cluster's size (${b.databaseBytes}), not its own tar's`);
    }
    assert.equal(whole.incrementalMethod, 'chunk reuse', 'with summarize_wal off the incremental is whole, stored by chunk reuse');

    const listed = await cluster.cli(['list', DB, '--wide']);
    assert.equal(listed.status, 0, listed.stderr);
    const lineOf = (id: string): string => listed.stdout.split('\n').find((l) => l.includes(id)) ?? '';
    assert.match(lineOf(incremental.id), /incremental \(block-level\)/);
    assert.match(lineOf(differential.id), /differential \(block-level\)/);
    assert.match(lineOf(whole.id), /incremental \(chunk reuse\)/);
  });

  it('a recovery to a moment after each restore point starts from it and holds exactly what was committed by then', async function () {
    const goals = [
      { after: 7, base: made.incremental.id, marks: [1] },
      { after: 12, base: made.second.id, marks: [1, 2] },
      // The differential is on the full alone: the second incremental's change came back through the WAL.
      { after: 17, base: made.differential.id, marks: [1, 2, 3] },
      { after: 22, base: made.whole.id, marks: [1, 2, 3, 4] },
    ];
    for (const goal of goals) {
      const at = between(goal.after);
      const target = path.join(cluster.dir, `restored-${goal.after}`);
      const r = await cluster.cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', at.toISOString(), '--json']);
      assert.equal(r.status, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { base: string }).base, goal.base, `the newest base backup that ended before ${at.toISOString()}`);
      const port = await freePort();
      cluster.start(target, ['-o', `-c port=${port} -c archive_mode=off -c summarize_wal=off -c unix_socket_directories=${cluster.dir}`]);
      const c = await waitFor('the restored server', () => cluster.client(port));
      try {
        await waitFor('recovery to pause at its target', async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined));
        const rows = (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
        assert.deepEqual(rows, Array.from({ length: goal.after }, (_, i) => i + 1));
        const counts = (await c.query<{ qty: number; n: string }>('SELECT qty, count(*)::text AS n FROM orders GROUP BY qty ORDER BY qty')).rows;
        assert.deepEqual(
          counts.map((row) => [row.qty, row.n]),
          [[0, String(400000 - 4000 * goal.marks.length)], ...goal.marks.map((m) => [m, '4000'])],
          `every changed block of the chain is in place as of ${goal.base}`,
        );
      } finally {
        await c.end().catch(() => undefined);
        cluster.stopServer(target);
        rmSync(target, { recursive: true, force: true });
      }
    }
  });

  it('a table as of a moment after the second incremental comes back into the running cluster, the other tables untouched', async function () {
    const at = between(12);
    const r = await cluster.cli(['restore', '--db', DB, '--as-of', at.toISOString(), '--tables', 'public.orders', '--to', `postgres://postgres@127.0.0.1:${cluster.port}/postgres`, '--force', '--yes', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const counts = (await db.query<{ qty: number; n: string }>('SELECT qty, count(*)::text AS n FROM orders GROUP BY qty ORDER BY qty')).rows;
    assert.deepEqual(counts.map((row) => [row.qty, row.n]), [[0, String(400000 - 8000)], [1, '4000'], [2, '4000']], 'orders as of the moment: the first two changes, not the later ones');
    assert.equal((await db.query<{ n: string }>('SELECT count(*)::text AS n FROM markers')).rows[0]!.n, '25', 'markers was not restored');
    // Put the later changes back for the tests after this one.
    await change(300001, 304000, 3);
    await change(350001, 354000, 4);
  });

  it('a logical backup of a PostgreSQL 17 database with every kind of object restores and verifies, as pg_dump 17 sees it', async function () {
    await db.query('CREATE DATABASE strata_pg17_src');
    const rich = await cluster.client(cluster.port, 'strata_pg17_src');
    try {
      await rich.query(RICH_POSTGRES_SQL);
    } finally {
      await rich.end();
    }
    const url = (name: string): string => `postgres://postgres@127.0.0.1:${cluster.port}/${name}`;
    const taken = await cluster.cli(['backup', url('strata_pg17_src'), '--name', 'rich', '--json']);
    assert.equal(taken.status, 0, taken.stderr);
    const restored = await cluster.cli(['restore', 'latest', '--db', 'rich', '--to', url('strata_pg17_copy'), '--json']);
    assert.equal(restored.status, 0, restored.stderr);
    const verified = await cluster.cli(['verify', 'latest', '--db', 'rich', '--level', 'full', '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    // pg_dump 17 itself as the oracle: the copy dumps the same as the original, but for its name.
    const server = { url: url('postgres'), pgDump: path.join(cluster.bindir, 'pg_dump') };
    assert.equal(pgDump('strata_pg17_copy', [], server), pgDump('strata_pg17_src', [], server));
  });

  it('verify passes on the second incremental (full level: recovered, amchecked) and finds a damaged layer under it', async function () {
    const deep = await cluster.cli(['verify', made.second.id, '--level', 'full', '--json']);
    assert.equal(deep.status, 0, deep.stdout + deep.stderr);
    assert.match(deep.stdout, /"outcome": "passed"/);

    // The first incremental's own layer: the second's restore needs it, and nothing else holds it.
    const artifact = path.join(cluster.repo, made.incremental.key);
    const original = readFileSync(artifact);
    const damaged = Buffer.from(original);
    damaged[Math.floor(damaged.length / 2)]! ^= 0x5a;
    writeFileSync(artifact, damaged);
    try {
      const bad = await cluster.cli(['verify', made.second.id]);
      assert.notEqual(bad.status, 0, bad.stdout);
      assert.match(bad.stdout + bad.stderr, new RegExp(made.incremental.id));
      const target = path.join(cluster.dir, 'restored-damaged');
      const refused = await cluster.cli(['restore', made.second.id, '--to', target]);
      assert.notEqual(refused.status, 0, refused.stdout);
      assert.throws(() => readFileSync(path.join(target, 'PG_VERSION')), 'nothing is put in place');
    } finally {
      writeFileSync(artifact, original);
    }
  });

  it("an export's RESTORE.md recovers a block-level incremental with pg_combinebackup, and pg_verifybackup finds every file of the result", async function () {
    await db.query('ALTER SYSTEM SET summarize_wal = on');
    await db.query('SELECT pg_reload_conf()');
    const full = await backup('full');
    await change(1, 4000, 5);
    const incremental = await backup('incremental');
    assert.equal(incremental.parent, full.id);
    assert.equal(incremental.incrementalMethod, 'block-level');
    const { restoreMd, newdb } = await exportAndFollow('export', incremental.id);
    assert.match(restoreMd, /pg_combinebackup/);
    assert.equal(readFileSync(path.join(newdb, 'PG_VERSION'), 'utf8').trim(), '17');
    const verified = spawnSync(path.join(cluster.bindir, 'pg_verifybackup'), ['--no-parse-wal', newdb], { encoding: 'utf8' });
    assert.equal(verified.status, 0, `${verified.stdout}${verified.stderr}`);
    const incrementalFiles = spawnSync('find', [newdb, '-name', 'INCREMENTAL.*'], { encoding: 'utf8' }).stdout.trim();
    assert.equal(incrementalFiles, '', 'every incremental file was combined into a whole one');
    assert.match(readFileSync(path.join(newdb, 'backup_label'), 'utf8'), new RegExp(`^START WAL LOCATION: ${incremental.logRange.start.lsn} `, 'm'), "the label is the incremental's: recovery starts where it did");
  });

  it('a restore without PostgreSQL 17\'s pg_combinebackup says what to install before it reads anything, and leaves nothing behind', async function () {
    const target = path.join(cluster.dir, 'restored-no-tool');
    // An empty folder of programs (nor /usr/lib/postgresql/17/bin nor PATH has one here).
    const empty = path.join(cluster.dir, 'no-programs');
    mkdirSync(empty, { mode: 0o755 });
    const r = await cluster.cli(['restore', made.second.id, '--to', target], { STRATA_PG_BINDIR: empty });
    assert.equal(r.status, 1, r.stderr);
    // Said from the catalog, before the chain's artifacts are read (they name the server's version only at their end).
    assert.match(r.stderr, /restore: \S+_incremental_\S+ is a block-level incremental, which needs pg_combinebackup \(PostgreSQL 17 or later/);
    assert.match(r.stderr, /the client programs of the server's PostgreSQL version \(Debian: postgresql-client-<version>, e\.g\. postgresql-client-17\) or set STRATA_PG_BINDIR/);
    assert.throws(() => readFileSync(path.join(target, 'PG_VERSION')));
    assert.deepEqual(readdirSync(cluster.dir).filter((f) => f.startsWith('restored-no-tool')), [], 'no partial data directory or layer is left');
  });

  it('recovers the second incremental by hand as docs/FORMAT.md says: recover-chain.py, pg_combinebackup, then the WAL', async function () {
    const { home, follow } = cluster.byHand('by-hand');
    const keys = path.join(home, 'keys');
    const pgdata = path.join(home, 'pgdata');
    follow('recover-data-keys', recipe('recover-data-keys'), { REPO: cluster.repo, PASSFILE: cluster.passFile, KEYS: keys });
    const layers = recipe('recover-physical-layers');
    follow('recover-physical-layers', layers, { DOCS: path.join(ROOT, 'docs'), KEYS: keys, REPO: cluster.repo, DB, ID: made.second.id, OUT: path.join(home, 'out'), PGDATA: pgdata, PGBIN: cluster.bindir });
    const whole = recipe('recover-physical');
    const rest = whole.slice(whole.indexOf('mkdir -p "$PGDATA/pg_wal/archive_status"'));
    assert.ok(rest.length < whole.length && rest.includes('restore_command'));
    follow('recover-physical (WAL)', `umask 077\n${rest}\necho "recovery_target_time = '${between(12).toISOString().replace('T', ' ').replace('Z', '+00')}'" >> "$PGDATA/postgresql.auto.conf"\necho "summarize_wal = off" >> "$PGDATA/postgresql.auto.conf"`, { KEYS: keys, REPO: cluster.repo, DB, PGDATA: pgdata });
    const port = await freePort();
    const [file, argv] = asServerUser('env', [`GNUPGHOME=${path.join(home, 'gnupg')}`, path.join(cluster.bindir, 'pg_ctl'), '-D', pgdata, '-l', path.join(home, 'server.log'), '-w', '-t', '300', '-o', `-c port=${port} -c unix_socket_directories=${cluster.dir}`, 'start']);
    const started = spawnSync(file, argv, { encoding: 'utf8' });
    cluster.adopt(pgdata);
    assert.equal(started.status, 0, `${started.stdout}${started.stderr}${readFileSync(path.join(home, 'server.log'), 'utf8').slice(-3000)}`);
    const c = await waitFor('the recovered server', () => cluster.client(port));
    try {
      await waitFor('recovery to pause at its target', async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined), 300_000);
      const rows = (await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq);
      assert.deepEqual(rows, Array.from({ length: 12 }, (_, i) => i + 1));
      const counts = (await c.query<{ qty: number; n: string }>('SELECT qty, count(*)::text AS n FROM orders GROUP BY qty ORDER BY qty')).rows;
      assert.deepEqual(counts.map((row) => [row.qty, row.n]), [[0, String(400000 - 8000)], [1, '4000'], [2, '4000']]);
    } finally {
      await c.end().catch(() => undefined);
      cluster.stopServer(pgdata);
    }
  });

  it('an incremental the server refuses when it starts is taken whole by chunk reuse, and list says so; a block-level one then builds on it and verifies', async function () {
    await db.query('ALTER SYSTEM SET summarize_wal = on');
    await db.query('SELECT pg_reload_conf()');
    const racing = racingPrograms();
    await change(4001, 8000, 6);
    const r = await cluster.cli(['backup', DB, '--type', 'incremental', '--json'], { STRATA_PG_BINDIR: racing });
    assert.equal(r.status, 0, r.stderr);
    const whole = (JSON.parse(r.stdout) as { backup: Backup }).backup;
    assert.ok(readdirSync(racing).includes('pg_basebackup.refused'), 'the server was asked for an incremental first');
    assert.equal(whole.incrementalMethod, 'chunk reuse, the server refused block-level');
    assert.ok(whole.databaseBytes > 0 && whole.payloadBytes < whole.databaseBytes * 0.5, `only the chunks its parent lacks are stored (${whole.payloadBytes} of ${whole.databaseBytes})`);
    const listed = await cluster.cli(['list', DB, '--wide']);
    assert.match(listed.stdout.split('\n').find((l) => l.includes(whole.id)) ?? '', /incremental \(chunk reuse, the server refused block-level\)/);

    await change(8001, 12000, 7);
    const onTop = await backup('incremental');
    assert.equal(onTop.parent, whole.id);
    assert.equal(onTop.incrementalMethod, 'block-level', 'with the summaries back, the next incremental asks for the blocks changed since the whole one');
    assert.ok(onTop.payloadBytes < whole.databaseBytes * 0.1, `${onTop.payloadBytes} bytes stored`);
    const deep = await cluster.cli(['verify', onTop.id, '--level', 'full', '--json']);
    assert.equal(deep.status, 0, deep.stdout + deep.stderr);
    assert.match(deep.stdout, /"outcome": "passed"/);
  });
  it("a cluster with tablespaces takes block-level incrementals too, each layer's tablespaces beside it; the chain restores with every change where --tablespace-map puts them, verifies, and recovers by hand as RESTORE.md and docs/FORMAT.md say", async function () {
    await db.query('ALTER SYSTEM SET summarize_wal = on');
    await db.query('SELECT pg_reload_conf()');
    const first = path.join(cluster.dir, 'pg17-space');
    const later = path.join(cluster.dir, 'pg17-later');
    for (const folder of [first, later]) {
      mkdirSync(folder);
      if (isRoot) spawnSync('chown', ['postgres', folder]);
    }
    await db.query(`CREATE TABLESPACE pg17_space LOCATION '${first}'`);
    try {
      await db.query('CREATE TABLE spaced (n int) TABLESPACE pg17_space');
      await db.query('INSERT INTO spaced SELECT generate_series(1, 200000)');
      await db.query('CREATE INDEX spaced_n ON spaced (n) TABLESPACE pg17_space');
      const full = await backup('full');
      // Changes in the tablespace the full had, and a tablespace it did not have.
      await db.query('UPDATE spaced SET n = -n WHERE n <= 1000');
      await db.query(`CREATE TABLESPACE pg17_later LOCATION '${later}'`);
      await db.query('CREATE TABLE later TABLESPACE pg17_later AS SELECT generate_series(1, 77) AS n');
      await db.query('CHECKPOINT');
      const layer1 = await backup('incremental');
      assert.equal(layer1.parent, full.id);
      assert.equal(layer1.incrementalMethod, 'block-level', 'a cluster with tablespaces takes block-level incrementals');
      await db.query('INSERT INTO spaced SELECT generate_series(200001, 201000)');
      await db.query('DELETE FROM later WHERE n > 70');
      await db.query('CHECKPOINT');
      const layer2 = await backup('incremental');
      assert.equal(layer2.parent, layer1.id);
      assert.equal(layer2.incrementalMethod, 'block-level');
      assert.ok(layer2.payloadBytes < layer2.databaseBytes * 0.1, `only the changed blocks are stored (${layer2.payloadBytes} of ${layer2.databaseBytes} bytes)`);
      const listed = await cluster.cli(['list', DB, '--wide']);
      assert.match(listed.stdout.split('\n').find((l) => l.includes(layer2.id)) ?? '', /incremental \(block-level\)/);
      const expected = {
        spaced: (await db.query<{ n: string; s: string }>('SELECT count(*)::text AS n, sum(n)::text AS s FROM spaced')).rows[0],
        later: (await db.query<{ n: string; s: string }>('SELECT count(*)::text AS n, sum(n)::text AS s FROM later')).rows[0],
      };
      const oids = new Map((await db.query<{ oid: string; spcname: string }>("SELECT oid::text, spcname FROM pg_tablespace WHERE spcname LIKE 'pg17_%'")).rows.map((row) => [row.spcname, row.oid]));

      // What each way of recovering puts in each tablespace's folder, file by file.
      const filesOf = (folder: string): Record<string, string> => {
        const listing = spawnSync('find', [folder, '-type', 'f', '-exec', 'sha256sum', '{}', '+'], { encoding: 'utf8' });
        assert.equal(listing.status, 0, listing.stderr);
        const files = Object.fromEntries(listing.stdout.trim().split('\n').map((line) => [line.slice(66).slice(folder.length), line.slice(0, 64)]));
        assert.ok(Object.keys(files).length > 0 && !Object.keys(files).some((f) => f.includes('INCREMENTAL.')), `${folder} holds whole files, none left incremental`);
        return files;
      };

      // An "=" in the folders: pg_combinebackup's -T OLD=NEW needs it written \=.
      const target = path.join(cluster.dir, 'spaced=restore');
      const moved = { first: path.join(cluster.dir, 'spaced-moved'), later: path.join(cluster.dir, 'later-moved') };
      // Without --tablespace-map the folders are the live cluster's own: refused once the newest
      // layer says where its tablespaces go, nothing written there, nothing left beside the target.
      const live = readdirSync(first, { recursive: true }).sort();
      const refused = await cluster.cli(['restore', layer2.id, '--to', target, '--immediate']);
      assert.equal(refused.status, 1, refused.stderr);
      assert.match(refused.stderr, /was at \S+ when backed up, and \S+ exists and is not empty \(on the machine the backup was taken on, it is the cluster's own tablespace\); nothing was written there\. Give --tablespace-map/);
      assert.deepEqual(readdirSync(first, { recursive: true }).sort(), live);
      assert.deepEqual(readdirSync(cluster.dir).filter((f) => f.startsWith('spaced=restore')), []);

      const r = await cluster.cli(['restore', layer2.id, '--to', target, '--immediate', '--tablespace-map', `${first}=${moved.first}`, '--tablespace-map', `${later}=${moved.later}`, '--json']);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(readdirSync(cluster.dir).filter((f) => f.startsWith('spaced=restore.')), [], 'no layer, partial folder or combined copy is left');
      const restored = { first: filesOf(moved.first), later: filesOf(moved.later) };

      // By hand: an export's RESTORE.md, and docs/FORMAT.md's recipe, put the same files in place.
      const { newdb } = await exportAndFollow('export-spaced', layer2.id);
      assert.deepEqual(filesOf(`${newdb}.tablespaces/${oids.get('pg17_space')}`), restored.first);
      assert.deepEqual(filesOf(`${newdb}.tablespaces/${oids.get('pg17_later')}`), restored.later);
      // tablespace_map names the new folders, not the ones the manifest describes; the files in them are checked.
      const verified = spawnSync(path.join(cluster.bindir, 'pg_verifybackup'), ['--no-parse-wal', '-i', 'tablespace_map', newdb], { encoding: 'utf8' });
      assert.equal(verified.status, 0, `${verified.stdout}${verified.stderr}`);
      assert.match(readFileSync(path.join(newdb, 'tablespace_map'), 'utf8'), new RegExp(`^${oids.get('pg17_space')} ${newdb}\\.tablespaces/${oids.get('pg17_space')}$`, 'm'));

      const { home: byHand, follow } = cluster.byHand('by-hand-spaced');
      const keys = path.join(byHand, 'keys');
      const spaces = path.join(byHand, 'tablespaces');
      follow('recover-data-keys', recipe('recover-data-keys'), { REPO: cluster.repo, PASSFILE: cluster.passFile, KEYS: keys });
      follow('recover-physical-layers', recipe('recover-physical-layers'), { DOCS: path.join(ROOT, 'docs'), KEYS: keys, REPO: cluster.repo, DB, ID: layer2.id, OUT: path.join(byHand, 'out=1'), PGDATA: path.join(byHand, 'pgdata'), PGBIN: cluster.bindir, TABLESPACES: spaces });
      assert.deepEqual(filesOf(path.join(spaces, oids.get('pg17_space')!)), restored.first);
      assert.deepEqual(filesOf(path.join(spaces, oids.get('pg17_later')!)), restored.later);
      const handVerified = spawnSync(path.join(cluster.bindir, 'pg_verifybackup'), ['--no-parse-wal', '-i', 'tablespace_map', path.join(byHand, 'pgdata')], { encoding: 'utf8' });
      assert.equal(handVerified.status, 0, `${handVerified.stdout}${handVerified.stderr}`);

      // Strata's restore starts, every change in place, each tablespace where it was put.
      const port = await freePort();
      cluster.start(target, ['-o', `-c port=${port} -c archive_mode=off -c summarize_wal=off -c unix_socket_directories=${cluster.dir}`]);
      const c = await waitFor('the restored server', () => cluster.client(port));
      try {
        await waitFor('recovery to pause at its target', async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined));
        assert.deepEqual((await c.query('SELECT count(*)::text AS n, sum(n)::text AS s FROM spaced')).rows[0], expected.spaced);
        assert.deepEqual((await c.query('SELECT count(*)::text AS n, sum(n)::text AS s FROM later')).rows[0], expected.later);
        assert.equal((await c.query<{ n: number }>('SELECT count(*)::int AS n FROM spaced WHERE n BETWEEN 150000 AND 150100')).rows[0]!.n, 101, 'the index in the tablespace answers');
        const locations = (await c.query<{ spcname: string; at: string }>("SELECT spcname, pg_tablespace_location(oid) AS at FROM pg_tablespace WHERE spcname LIKE 'pg17_%' ORDER BY spcname")).rows;
        assert.deepEqual(locations, [{ spcname: 'pg17_later', at: moved.later }, { spcname: 'pg17_space', at: moved.first }]);
      } finally {
        await c.end().catch(() => undefined);
        cluster.stopServer(target);
        for (const folder of [target, moved.first, moved.later]) rmSync(folder, { recursive: true, force: true });
      }
      const deep = await cluster.cli(['verify', layer2.id, '--level', 'full', '--json']);
      assert.equal(deep.status, 0, deep.stdout + deep.stderr);
      assert.match(deep.stdout, /"outcome": "passed"/);

      // Refused by the server as it starts (staged: nothing is read before pg_basebackup ends), the
      // incremental is taken whole by chunk reuse, with its tablespaces.
      const racing = racingPrograms();
      const raced = await cluster.cli(['backup', DB, '--type', 'incremental', '--json'], { STRATA_PG_BINDIR: racing });
      assert.equal(raced.status, 0, raced.stderr);
      const whole = (JSON.parse(raced.stdout) as { backup: Backup }).backup;
      assert.ok(readdirSync(racing).includes('pg_basebackup.refused'), 'the server was asked for an incremental first');
      assert.equal(whole.parent, layer2.id);
      assert.equal(whole.incrementalMethod, 'chunk reuse, the server refused block-level');

      // Dropped: the next layer has no tablespaces while the ones under it do; the chain restores.
      await db.query('DROP TABLE spaced');
      await db.query('DROP TABLE later');
      await db.query('DROP TABLESPACE pg17_space');
      await db.query('DROP TABLESPACE pg17_later');
      await change(12001, 16000, 8);
      const afterDrop = await backup('incremental');
      assert.equal(afterDrop.incrementalMethod, 'block-level');
      await change(16001, 20000, 9);
      const onTop = await backup('incremental');
      assert.equal(onTop.parent, afterDrop.id);
      assert.equal(onTop.incrementalMethod, 'block-level');
      const back = await cluster.cli(['restore', onTop.id, '--to', target, '--immediate', '--start', '--json']);
      assert.equal(back.status, 0, back.stderr);
      assert.deepEqual((JSON.parse(back.stdout) as { tablespaces: unknown[] }).tablespaces, []);
      rmSync(target, { recursive: true, force: true });
    } finally {
      await db.query('DROP TABLE IF EXISTS spaced');
      await db.query('DROP TABLE IF EXISTS later');
      await db.query('DROP TABLESPACE IF EXISTS pg17_space');
      await db.query('DROP TABLESPACE IF EXISTS pg17_later');
    }
  });

  it("a block-level incremental reads its parent's backup_manifest from the small file the parent left, not from the parent's artifact; without that file it reads the artifact; both restore", async function () {
    const carried = (b: Backup): string | undefined => {
      const dir = path.join(cluster.repo, 'cache', 'carry', DB);
      const file = readdirSync(dir).find((f) => f.startsWith(`${b.id}.bin`));
      return file && path.join(dir, file);
    };
    await change(20001, 24000, 10);
    const parent = await backup('incremental');
    assert.equal(parent.incrementalMethod, 'block-level');
    assert.ok(carried(parent), `${parent.id} left its backup_manifest beside its artifact`);

    // With the parent's artifact replaced by as many zeros, a backup that read it would fail (one
    // that found it missing, or of another size, must: the chain would not restore).
    const artifact = path.join(cluster.repo, parent.key);
    const original = readFileSync(artifact);
    writeFileSync(artifact, Buffer.alloc(original.length));
    let onTop: Backup;
    try {
      await change(24001, 28000, 11);
      onTop = await backup('incremental');
      writeFileSync(artifact, original.subarray(1));
      const truncated = await cluster.cli(['backup', DB, '--type', 'incremental', '--json']);
      assert.equal(truncated.status, 1, truncated.stderr);
      assert.match(truncated.stderr, /is \d+ bytes, the catalog recorded \d+ \(truncated or replaced\)/);
    } finally {
      writeFileSync(artifact, original);
    }
    assert.equal(onTop.parent, parent.id);
    assert.equal(onTop.incrementalMethod, 'block-level');
    assert.ok(onTop.payloadBytes < onTop.databaseBytes * 0.1, `${onTop.payloadBytes} bytes stored`);

    // With the small file damaged (or missing: a repository from before it, a cache someone
    // cleared) the artifact is read, as before.
    writeFileSync(carried(onTop)!, 'damaged');
    await change(28001, 32000, 12);
    const fallback = await backup('incremental');
    assert.equal(fallback.parent, onTop.id);
    assert.equal(fallback.incrementalMethod, 'block-level');
    const expected = (await db.query<{ qty: number; n: string }>('SELECT qty, count(*)::text AS n FROM orders GROUP BY qty ORDER BY qty')).rows;
    assert.deepEqual(expected.filter((row) => row.qty >= 10).map((row) => [row.qty, row.n]), [[10, '4000'], [11, '4000'], [12, '4000']]);

    const target = path.join(cluster.dir, 'carried-restore');
    const r = await cluster.cli(['restore', fallback.id, '--to', target, '--immediate', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const port = await freePort();
    cluster.start(target, ['-o', `-c port=${port} -c archive_mode=off -c summarize_wal=off -c unix_socket_directories=${cluster.dir}`]);
    const c = await waitFor('the restored server', () => cluster.client(port));
    try {
      await waitFor('recovery to pause at its target', async () => ((await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused' ? true : undefined));
      const counts = (await c.query<{ qty: number; n: string }>('SELECT qty, count(*)::text AS n FROM orders GROUP BY qty ORDER BY qty')).rows;
      assert.deepEqual(counts, expected, 'every block changed under the three incrementals is in place');
    } finally {
      await c.end().catch(() => undefined);
      cluster.stopServer(target);
      rmSync(target, { recursive: true, force: true });
    }
    // The small file goes with its backup.
    assert.ok(carried(fallback));
    const deleted = await cluster.cli(['delete', fallback.id, '--yes']);
    assert.equal(deleted.status, 0, deleted.stderr);
    assert.equal(carried(fallback), undefined, `${fallback.id}'s cached backup_manifest was deleted with it`);
  });
});
