import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { CLI } from './helpers/env.js';
import { asServerUser, client, isRoot, makeCluster, requireServerPrograms, sleep, strataAsync, switchAndArchive, waitFor } from './helpers/pg-cluster.js';
import type { TestCluster } from './helpers/pg-cluster.js';

/**
 * What a physical restore leaves beside its target, and what a backup checks of the log archive:
 * - the folders a restore works in (the unpacked cluster, the spooled WAL) hold decrypted data:
 *   they are 0700, and those of a restore killed with SIGKILL are removed by the next restore
 *   into the same parent folder, which says so;
 * - a restore with --start whose recovery fails leaves no target behind (a folder that was there
 *   before stays, empty);
 * - a backup of an entry whose WAL the cluster archives under another entry's name fails, and
 *   records nothing: it could never be restored;
 * - a backup while archive_command fails (the server would wait for ever to archive its last
 *   segment) stops with the reason once STRATA_ARCHIVE_TIMEOUT has passed, records nothing and
 *   leaves no server process waiting.
 */

const DB = 'c';
const OTHER = 'c2';

describe('physical PostgreSQL: restore leftovers, and a backup whose WAL goes to another archive', function () {
  this.timeout(10 * 60_000);
  let cluster: TestCluster;
  let running = false;
  let restores: string;
  /** A configuration file the cluster includes, removed after the backups: a restored copy then cannot start. */
  let extra: string;

  before(async function () {
    requireServerPrograms(this);
    cluster = await makeCluster('strata-leftovers-', DB);
    // A second entry for the same cluster; archive_command pushes with --db c only.
    const config = JSON.parse(readFileSync(cluster.config, 'utf8')) as { databases: Record<string, unknown> };
    config.databases[OTHER] = config.databases[DB];
    writeFileSync(cluster.config, JSON.stringify(config));
    extra = path.join(cluster.dir, 'extra.conf');
    writeFileSync(extra, '# read at every start\n');
    appendFileSync(path.join(cluster.dataDir, 'postgresql.conf'), `include '${extra}'\n`);
    const started = cluster.pgCtl(['start', '-D', cluster.dataDir, '-l', path.join(cluster.dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.out);
    running = true;
    restores = path.join(cluster.dir, 'restores');
    mkdirSync(restores);
    if (isRoot) spawnSync('chown', ['postgres', restores]);
    const db = await client(cluster.port);
    try {
      await db.query('CREATE TABLE t AS SELECT generate_series(1, 1000) AS n');
      await switchAndArchive(db);
    } finally {
      await db.end();
    }
    // The entry archive_command names backs up (and the restores below restore it).
    const backup = await cluster.cli(['backup', DB]);
    assert.equal(backup.status, 0, backup.stderr);
  });

  after(function () {
    if (!cluster) return;
    if (running) cluster.pgCtl(['stop', '-D', cluster.dataDir, '-m', 'immediate', '-w']);
    rmSync(cluster.dir, { recursive: true, force: true });
  });

  const sideFolders = (): string[] => readdirSync(restores).filter((name) => name.includes('.strata-'));

  it('fails the backup of an entry whose WAL is archived under another entry, and records nothing', async function () {
    const wrong = await cluster.cli(['backup', OTHER]);
    assert.notEqual(wrong.status, 0, `backup ${OTHER} must fail: ${wrong.stdout}`);
    assert.match(wrong.stderr, /is not in the WAL archive of c2/);
    assert.match(wrong.stderr, /archives its WAL elsewhere/);
    assert.match(wrong.stderr, /--db c2/);
    assert.match(wrong.stderr, /Nothing was recorded/);
    const listed = await cluster.cli(['list', OTHER, '--json']);
    assert.equal(listed.status, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { backups: unknown[] }).backups, [], 'no restore point of c2');
    const own = await cluster.cli(['list', DB, '--json']);
    assert.equal((JSON.parse(own.stdout) as { backups: unknown[] }).backups.length, 1, "c's backup (before) is recorded");
  });

  /**
   * Starts `strata restore latest --to target` and returns, once the restore unpacks the cluster's
   * files, the name of its unpacking folder and the pid of the strata process (under runuser as root).
   */
  const restoreCaughtUnpacking = async (target: string): Promise<{ partial: string; pid: number; exited: Promise<number | null> }> => {
    const [file, argv] = asServerUser(process.execPath, [CLI, 'restore', 'latest', '--db', DB, '--to', target, '--config', cluster.config, '--passphrase-file', cluster.passFile]);
    const child = spawn(file, argv, { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    // Caught while the cluster's files are unpacked (the WAL spool is made before that).
    const prefix = `${path.basename(target)}.strata-partial-`;
    let partial: string | undefined;
    const deadline = Date.now() + 60_000;
    while (!partial && Date.now() < deadline) {
      partial = sideFolders().find((name) => name.startsWith(prefix));
      if (!partial) await sleep(5);
    }
    assert.ok(partial, 'the restore made its unpacking folder');
    const pid = isRoot ? Number(spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.trim().split('\n')[0]) : child.pid!;
    assert.ok(pid > 0, 'the strata process was found');
    return { partial, pid, exited };
  };

  it('removes, at the next restore, the 0700 folders of a restore killed with SIGKILL', async function () {
    const target = path.join(restores, 'r11');
    const { partial, pid, exited } = await restoreCaughtUnpacking(target);
    process.kill(pid, 'SIGKILL');
    await exited;
    assert.match(partial, new RegExp(`-${pid}-[0-9a-f]{8}$`), 'the folder\'s name says whose it is');
    const left = sideFolders();
    const spool = left.find((name) => name.startsWith('r11.strata-wal-'));
    assert.ok(left.includes(partial), `the killed restore left ${partial} (${left.join(', ')})`);
    assert.ok(spool, `the killed restore left its WAL spool (${left.join(', ')})`);
    for (const name of [partial, spool]) assert.equal(statSync(path.join(restores, name)).mode & 0o777, 0o700, `${name} is private`);
    assert.ok(!existsSync(target), 'no target was made');

    const next = await cluster.cli(['restore', 'latest', '--db', DB, '--to', path.join(restores, 'r12')]);
    assert.equal(next.status, 0, next.stderr);
    assert.match(next.stderr, new RegExp(`removed .*${partial}.*left by pid ${pid} on this host, which is no longer running`));
    assert.match(next.stderr, new RegExp(`removed .*${spool}`));
    assert.deepEqual(sideFolders(), [], 'nothing is left beside the targets');
    rmSync(path.join(restores, 'r12'), { recursive: true, force: true });
  });

  it('a table restore killed while its scratch server runs: the next one stops that server and removes its decrypted cluster', async function () {
    const temp = path.join(cluster.dir, 'tables-tmp');
    mkdirSync(temp);
    if (isRoot) spawnSync('chown', ['postgres', temp]);
    const target = `postgres://postgres@127.0.0.1:${cluster.port}/tables_target`;
    const args = ['restore', 'latest', '--db', DB, '--tables', 'public.t', '--to', target, '--config', cluster.config, '--passphrase-file', cluster.passFile];
    const [file, argv] = asServerUser(process.execPath, [CLI, ...args]);
    const child = spawn(file, argv, { stdio: 'ignore', env: { ...process.env, STRATA_TMPDIR: temp } });
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const scratchFolders = (): string[] => readdirSync(temp).filter((name) => name.startsWith('strata-tables.strata-tables-'));
    let running: { folder: string; postmaster: number } | undefined;
    const deadline = Date.now() + 240_000;
    while (!running && Date.now() < deadline) {
      for (const folder of scratchFolders()) {
        const pidFile = path.join(temp, folder, 'pgdata', 'postmaster.pid');
        if (existsSync(pidFile)) running = { folder, postmaster: Number(readFileSync(pidFile, 'utf8').split('\n')[0]) };
      }
      if (!running) await sleep(20);
    }
    assert.ok(running, 'the table restore started its scratch server');
    const strataPid = Number(/-(\d+)-[0-9a-f]{8}$/.exec(running.folder)![1]);
    process.kill(strataPid, 'SIGKILL');
    await exited;
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    assert.ok(alive(running.postmaster), 'the killed restore left its scratch server running');

    const next = await strataAsync(args, { STRATA_TMPDIR: temp });
    assert.equal(next.status, 0, next.stderr);
    assert.match(next.stderr, new RegExp(`removed .*${running.folder}.*left by pid ${strataPid} on this host, which is no longer running`));
    assert.equal(alive(running.postmaster), false, 'that server was stopped');
    assert.deepEqual(scratchFolders(), [], 'no scratch cluster is left');
    const db = await client(cluster.port, 'tables_target');
    try {
      assert.equal((await db.query<{ n: string }>('SELECT count(*)::text AS n FROM t')).rows[0]!.n, '1000');
    } finally {
      await db.end();
    }
  });

  it('a restore stopped with SIGTERM removes its folders and writes no target', async function () {
    const target = path.join(restores, 'r15');
    const { pid, exited } = await restoreCaughtUnpacking(target);
    process.kill(pid, 'SIGTERM');
    assert.notEqual(await exited, 0);
    assert.deepEqual(sideFolders().filter((name) => name.startsWith('r15.')), [], 'nothing is left beside the target');
    assert.ok(!existsSync(target), 'no target was made');
  });

  it('a restore --start whose recovery fails removes the target it made, and empties a folder that was there', async function () {
    // The backed-up configuration includes a file the copy can no longer read: its server cannot start.
    rmSync(extra);
    const target = path.join(restores, 'r13');
    const failed = await cluster.cli(['restore', 'latest', '--db', DB, '--to', target, '--start']);
    assert.notEqual(failed.status, 0, failed.stdout);
    assert.match(failed.stderr, /did not start/);
    assert.match(failed.stderr, /the restored data directory .*r13 was removed/);
    assert.ok(!existsSync(target), 'the target it made is gone');
    assert.deepEqual(sideFolders(), []);
    // A retry needs no --force.
    const again = await cluster.cli(['restore', 'latest', '--db', DB, '--to', target]);
    assert.equal(again.status, 0, again.stderr);
    rmSync(target, { recursive: true, force: true });

    const existing = path.join(restores, 'r14');
    mkdirSync(existing);
    if (isRoot) spawnSync('chown', ['postgres', existing]);
    const failedInto = await cluster.cli(['restore', 'latest', '--db', DB, '--to', existing, '--start']);
    assert.notEqual(failedInto.status, 0, failedInto.stdout);
    assert.match(failedInto.stderr, /the folder was there before and stays, empty/);
    assert.deepEqual(readdirSync(existing), []);
    assert.deepEqual(sideFolders(), []);
  });

  it('a backup while archive_command fails stops after STRATA_ARCHIVE_TIMEOUT with the reason, records nothing and leaves no WAL sender waiting', async function () {
    // The restore test above removed the file the configuration includes: a reload would fail.
    writeFileSync(extra, '# read at every start\n');
    const db = await client(cluster.port);
    const archiveCommand = (await db.query<{ c: string }>("SELECT current_setting('archive_command') AS c")).rows[0]!.c;
    const setArchiveCommand = async (command: string): Promise<void> => {
      await db.query(`ALTER SYSTEM SET archive_command = ${db.escapeLiteral(command)}`);
      await db.query('SELECT pg_reload_conf()');
      await waitFor(`archive_command to become ${command}`, async () => ((await db.query<{ c: string }>("SELECT current_setting('archive_command') AS c")).rows[0]!.c === command ? true : undefined), 30_000);
    };
    try {
      await setArchiveCommand('exit 3');
      const before = (await db.query<{ f: number }>('SELECT failed_count::int AS f FROM pg_stat_archiver')).rows[0]!.f;
      const started = Date.now();
      const stuck = await strataAsync(['backup', DB, '--config', cluster.config, '--passphrase-file', cluster.passFile], { STRATA_ARCHIVE_TIMEOUT: '4s' });
      assert.equal(stuck.status, 1, `the backup must fail: ${stuck.stdout}${stuck.stderr}`);
      assert.match(stuck.stderr, /stopped after waiting 4 s for the server to archive its last WAL segment, because archive_command keeps failing/);
      assert.match(stuck.stderr, /failure\(s\) while this backup ran, the last on [0-9A-F]{24} at /);
      assert.match(stuck.stderr, /Nothing was recorded/);
      assert.ok(Date.now() - started < 120_000, 'it did not wait for the default timeout');
      assert.ok((await db.query<{ f: number }>('SELECT failed_count::int AS f FROM pg_stat_archiver')).rows[0]!.f > before, 'the archiver did fail meanwhile');
      const listed = await cluster.cli(['list', DB, '--json']);
      assert.equal((JSON.parse(listed.stdout) as { backups: unknown[] }).backups.length, 1, 'only the backup of before is recorded');
      // The server's side of the backup does not notice pg_basebackup going; it was ended.
      await waitFor('the WAL sender of the stopped backup to end', async () => ((await db.query('SELECT 1 FROM pg_stat_progress_basebackup')).rowCount === 0 ? true : undefined));

      // A path the shell cannot run (exit 127) stops the archiver before it counts a failure: no
      // failure is counted, nothing is archived, and the backup stops all the same.
      await setArchiveCommand('/nonexistent/strata wal-push %p');
      const failedBefore = (await db.query<{ f: number }>('SELECT failed_count::int AS f FROM pg_stat_archiver')).rows[0]!.f;
      const unrunnable = await strataAsync(['backup', DB, '--config', cluster.config, '--passphrase-file', cluster.passFile], { STRATA_ARCHIVE_TIMEOUT: '4s' });
      assert.equal(unrunnable.status, 1, `the backup must fail: ${unrunnable.stdout}${unrunnable.stderr}`);
      assert.match(unrunnable.stderr, /stopped after waiting 4 s for the server to archive its last WAL segment, because the server archived nothing in that time and counted no failure: an archive_command the shell cannot run/);
      assert.equal((await db.query<{ f: number }>('SELECT failed_count::int AS f FROM pg_stat_archiver')).rows[0]!.f, failedBefore, 'the server counted no failure');
      await waitFor('the WAL sender of the stopped backup to end', async () => ((await db.query('SELECT 1 FROM pg_stat_progress_basebackup')).rowCount === 0 ? true : undefined));

      const bad = await strataAsync(['backup', DB, '--config', cluster.config, '--passphrase-file', cluster.passFile], { STRATA_ARCHIVE_TIMEOUT: 'soon' });
      assert.equal(bad.status, 2, bad.stderr);
      assert.match(bad.stderr, /STRATA_ARCHIVE_TIMEOUT: "soon" is not a duration/);

      // Archiving on with no archive_command archives nothing and fails nothing: refused at once.
      await setArchiveCommand('');
      const unset = await cluster.cli(['backup', DB]);
      assert.equal(unset.status, 2, unset.stderr);
      assert.match(unset.stderr, /archive_mode = on and an empty archive_command, so it archives no WAL/);
    } finally {
      await setArchiveCommand(archiveCommand);
      await db.end();
    }
    // With archive_command working again, the same backup goes through.
    const fixed = await cluster.cli(['backup', DB]);
    assert.equal(fixed.status, 0, fixed.stderr);
  });

  it('a verify --level full that cannot run a PostgreSQL program fails as an error of this machine (exit 1) and records nothing against the backup', async function () {
    const tools = path.join(cluster.dir, 'broken-tools');
    mkdirSync(tools);
    // A pg_waldump that does not work: the check cannot search the WAL it would replay.
    writeFileSync(path.join(tools, 'pg_waldump'), '#!/bin/sh\necho "pg_waldump: broken" >&2\nexit 1\n', { mode: 0o755 });
    const before = (JSON.parse((await cluster.cli(['list', DB, '--json'])).stdout) as { backups: { id: string; verification?: unknown }[] }).backups;
    const verified = await strataAsync(['verify', 'latest', '--db', DB, '--level', 'full', '--config', cluster.config, '--passphrase-file', cluster.passFile], { STRATA_PG_BINDIR: tools });
    assert.equal(verified.status, 1, verified.stdout + verified.stderr);
    assert.match(verified.stderr, /pg_waldump did not run/);
    const after = (JSON.parse((await cluster.cli(['list', DB, '--json'])).stdout) as { backups: { id: string; verification?: unknown }[] }).backups;
    assert.deepEqual(after.map((b) => b.verification), before.map((b) => b.verification), 'no verification was recorded');
  });
});
