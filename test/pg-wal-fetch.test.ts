import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type pg from 'pg';
import { client, freePort, isRoot, makeCluster, requireServerPrograms, strataAsync, switchAndArchive, waitFor } from './helpers/pg-cluster.js';
import type { TestCluster } from './helpers/pg-cluster.js';
import { TEST_PASSPHRASE } from './helpers/env.js';

/**
 * What `strata wal-fetch` tells the server running it as its restore_command. PostgreSQL takes
 * any exit status up to 125 as "the archive does not hold that file": it ends recovery at the last
 * file it has and promotes, so a recovery to the end of the archive silently stops short. Only a
 * file the archive lacks may be 1; a wrong or missing passphrase, a damaged segment, any failure
 * is above 125 (128), which makes the server stop with a fatal error instead. And a restore whose
 * written restore_command could not read the archive (an encrypted repository, the passphrase in
 * STRATA_PASSPHRASE only) is refused before anything is written.
 */

const DB = 'cluster';

describe('strata wal-fetch exit statuses and the passphrase source of the restore_command it runs under', function () {
  this.timeout(10 * 60_000);
  let cluster: TestCluster;
  let db: pg.Client | undefined;
  const running = new Set<string>();
  let wrongFile = '';
  /** The CLI with this cluster's config and the given passphrase flags only (STRATA_PASSPHRASE cleared unless given). */
  const run = (args: string[], flags: string[], env: Record<string, string> = {}) => strataAsync([...args, '--config', cluster.config, ...flags], { STRATA_PASSPHRASE: '', STRATA_PASSPHRASE_FILE: '', STRATA_PASSPHRASE_COMMAND: '', ...env });
  const logDir = (): string => path.join(cluster.dir, 'repo', 'backups', DB, 'log');
  const archived = (): string[] => readdirSync(logDir()).filter((f) => /^[0-9A-F]{24}_/.test(f)).sort();

  before(async function () {
    requireServerPrograms(this);
    cluster = await makeCluster('strata-walfetch-', DB);
    const started = cluster.pgCtl(['start', '-D', cluster.dataDir, '-l', path.join(cluster.dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.out);
    running.add(cluster.dataDir);
    db = await client(cluster.port);
    await db.query('CREATE TABLE markers (seq int PRIMARY KEY)');
    await db.query('INSERT INTO markers VALUES (1)');
    const backup = await cluster.cli(['backup', DB]);
    assert.equal(backup.status, 0, backup.stderr);
    await db.query('INSERT INTO markers VALUES (2)');
    await switchAndArchive(db);
    wrongFile = path.join(cluster.dir, 'wrong-passphrase');
    writeFileSync(wrongFile, `not ${TEST_PASSPHRASE}`, { mode: 0o600 });
    if (isRoot) spawnSync('chown', ['postgres', wrongFile]);
  });

  after(async function () {
    await db?.end().catch(() => undefined);
    if (!cluster) return;
    for (const d of running) cluster.pgCtl(['stop', '-D', d, '-m', 'immediate', '-w']);
    rmSync(cluster.dir, { recursive: true, force: true });
  });

  it('is 1 only for a file the archive lacks, and above 125 for a wrong or missing passphrase and a damaged segment', async function () {
    const name = archived().at(-1)!.slice(0, 24);
    const out = path.join(cluster.dir, 'fetched');
    const good = await run(['wal-fetch', name, out, '--db', DB], ['--passphrase-file', cluster.passFile]);
    assert.equal(good.status, 0, good.stderr);
    rmSync(out);

    // Absent: the next segment, and a timeline history the server probes for.
    for (const absent of ['0000000100000000000000FE', '00000009.history']) {
      const r = await run(['wal-fetch', absent, out, '--db', DB], ['--passphrase-file', cluster.passFile]);
      assert.equal(r.status, 1, `${absent}: ${r.stderr}`);
      assert.match(r.stderr, /not in the archive/);
      assert.equal(existsSync(out), false);
    }

    const wrong = await run(['wal-fetch', name, out, '--db', DB], ['--passphrase-file', wrongFile]);
    assert.equal(wrong.status, 128, `a wrong passphrase: ${wrong.stderr}`);
    assert.match(wrong.stderr, /wrong passphrase|passphrase .*(wrong|does not open)/i);
    assert.equal(existsSync(out), false);
    const missing = await run(['wal-fetch', name, out, '--db', DB], []);
    assert.equal(missing.status, 128, `no passphrase: ${missing.stderr}`);
    assert.match(missing.stderr, /encrypted/);
    const noDb = await run(['wal-fetch', name, out], ['--passphrase-file', cluster.passFile]);
    assert.equal(noDb.status, 128, `no --db: ${noDb.stderr}`);
    // With --json the document says the same status.
    const json = await run(['wal-fetch', name, out, '--db', DB, '--json'], ['--passphrase-file', wrongFile]);
    assert.equal(json.status, 128);
    assert.equal((JSON.parse(json.stdout) as { error: { exitCode: number } }).error.exitCode, 128);

    const file = path.join(logDir(), archived().find((f) => f.startsWith(`${name}_`))!);
    const original = readFileSync(file);
    const bytes = Buffer.from(original);
    bytes[bytes.length - 40] = bytes[bytes.length - 40]! ^ 0xff;
    writeFileSync(file, bytes);
    try {
      const damaged = await run(['wal-fetch', name, out, '--db', DB], ['--passphrase-file', cluster.passFile]);
      assert.equal(damaged.status, 128, `a damaged segment: ${damaged.stderr}`);
      assert.match(damaged.stderr, new RegExp(name));
      assert.equal(existsSync(out), false);
    } finally {
      writeFileSync(file, original);
    }
  });

  it('a recovery whose restore_command cannot read the archive stops with a fatal error instead of promoting short of the archive\'s end', async function () {
    // Its own copy of the passphrase file, which turns wrong after the restore.
    const passCopy = path.join(cluster.dir, 'passphrase-copy');
    copyFileSync(cluster.passFile, passCopy);
    if (isRoot) spawnSync('chown', ['postgres', passCopy]);
    const target = path.join(cluster.dir, 'restored');
    const r = await run(['restore', 'latest', '--db', DB, '--to', target], ['--passphrase-file', passCopy]);
    assert.equal(r.status, 0, r.stderr);
    // Archived after the restore: only wal-fetch has it, and it cannot read it.
    await db!.query('INSERT INTO markers VALUES (3)');
    await switchAndArchive(db!);
    writeFileSync(passCopy, `not ${TEST_PASSPHRASE}`);
    const log = path.join(cluster.dir, 'restored.log');
    const port = await freePort();
    const started = cluster.pgCtl(['start', '-D', target, '-w', '-t', '120', '-l', log, '-o', `-c port=${port} -c archive_mode=off -c unix_socket_directories=${cluster.dir}`]);
    running.add(target);
    const text = readFileSync(log, 'utf8');
    assert.notEqual(started.status, 0, `the server must not start:\n${text}`);
    assert.match(text, /FATAL: +could not restore file "[0-9A-F]{24}" from archive: child process exited with exit code 128/);
    assert.match(text, /strata: .*passphrase/i, 'the reason is in the server log');
    assert.doesNotMatch(text, /selected new timeline ID|archive recovery complete/);
    running.delete(target);
    // Fixed (the right passphrase) and started again, it recovers to the end of the archive.
    copyFileSync(cluster.passFile, passCopy);
    const again = cluster.pgCtl(['start', '-D', target, '-w', '-t', '120', '-l', log, '-o', `-c port=${port} -c archive_mode=off -c unix_socket_directories=${cluster.dir}`]);
    running.add(target);
    assert.equal(again.status, 0, again.out);
    const c = await client(port);
    try {
      await waitFor('the recovery to end', async () => ((await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r ? undefined : true));
      assert.deepEqual((await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq), [1, 2, 3]);
    } finally {
      await c.end().catch(() => undefined);
    }
  });

  it('refuses a restore whose restore_command would have no passphrase source (STRATA_PASSPHRASE only), and carries STRATA_PASSPHRASE_FILE as a flag', async function () {
    const target = path.join(cluster.dir, 'from-env');
    const refused = await run(['restore', 'latest', '--db', DB, '--to', target], [], { STRATA_PASSPHRASE: TEST_PASSPHRASE });
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /encrypted .*STRATA_PASSPHRASE.*Nothing was written\. Pass --passphrase-file FILE or --passphrase-command CMD/);
    assert.equal(existsSync(target), false, 'nothing written');

    const fromFile = await run(['restore', 'latest', '--db', DB, '--to', target, '--json'], [], { STRATA_PASSPHRASE_FILE: cluster.passFile });
    assert.equal(fromFile.status, 0, fromFile.stderr);
    const restoreCommand = (JSON.parse(fromFile.stdout) as { restoreCommand: string }).restoreCommand;
    assert.ok(restoreCommand.includes(`--passphrase-file ${cluster.passFile}`), restoreCommand);
    assert.ok(!restoreCommand.includes(TEST_PASSPHRASE), 'never the passphrase itself');
    assert.doesNotMatch(fromFile.stderr, /is after the newest WAL archived/);
    rmSync(target, { recursive: true, force: true });

    // A moment the archive does not reach yet: written all the same (the archive may catch up before the server starts), with a warning.
    const ahead = new Date(Date.now() + 24 * 3_600_000).toISOString();
    const later = await run(['restore', 'latest', '--db', DB, '--to', target, '--as-of', ahead], [], { STRATA_PASSPHRASE_FILE: cluster.passFile });
    assert.equal(later.status, 0, later.stderr);
    assert.match(later.stderr, new RegExp(`warning: nothing archived for ${DB} committed after ${ahead.replace(/[.]/g, '\\.')}, .*--xid \\d+ recovers through it.*SELECT pg_switch_wal\\(\\)`));
    rmSync(target, { recursive: true, force: true });

    // Strata's own temporary server inherits STRATA_PASSPHRASE, and a copy it promotes never runs its restore_command again.
    const promoted = await run(['restore', 'latest', '--db', DB, '--to', target, '--start', '--target-action', 'promote', '--json'], [], { STRATA_PASSPHRASE: TEST_PASSPHRASE });
    assert.equal(promoted.status, 0, promoted.stderr);
    assert.equal((JSON.parse(promoted.stdout) as { reached: { state: string } }).reached.state, 'promoted');
    rmSync(target, { recursive: true, force: true });
    // Not so when it stops at the target still recovering: a later start recovers on from the archive.
    const paused = await run(['restore', 'latest', '--db', DB, '--to', target, '--start'], [], { STRATA_PASSPHRASE: TEST_PASSPHRASE });
    assert.equal(paused.status, 2, paused.stderr);
    assert.equal(existsSync(target), false, 'nothing written');
  });
  it('refuses, before its server starts, a recovery the archive cannot end: a moment after its last commit, a transaction or restore point it lacks; and names the transaction it can end at', async function () {
    // The last commit, then a moment after it, and only then is its WAL switched and archived: the
    // archive's newest file is stored after the moment, yet holds no commit after it, so the
    // server cannot tell that it reached the moment.
    await db!.query('BEGIN');
    const xid = (await db!.query<{ x: string }>('INSERT INTO markers VALUES (4) RETURNING pg_current_xact_id()::text AS x')).rows[0]!.x;
    await db!.query('COMMIT');
    const moment = new Date(Date.now() + 500).toISOString();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await switchAndArchive(db!);
    const flags = ['--passphrase-file', cluster.passFile];
    const target = path.join(cluster.dir, 'unreachable');

    const refused = await run(['restore', 'latest', '--db', DB, '--to', target, '--as-of', moment, '--start', '--target-action', 'promote'], flags);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, new RegExp(`nothing archived for ${DB} committed after ${moment.replace(/[.]/g, '\\.')}.*recovery ended before configured recovery target was reached.*The archive's last transaction, ${xid}, committed at .*--xid ${xid} recovers through it`));
    assert.equal(existsSync(target), false, 'the restored files were removed');
    // Written without --start (a server started later may find more archived), with the same words as a warning.
    const written = await run(['restore', 'latest', '--db', DB, '--to', target, '--as-of', moment], flags);
    assert.equal(written.status, 0, written.stderr);
    assert.match(written.stderr, new RegExp(`warning: nothing archived for ${DB} committed after .*--xid ${xid} recovers through it`));
    rmSync(target, { recursive: true, force: true });

    for (const [args, said] of [
      [['--xid', '999999'], /transaction 999999 neither commits nor aborts in the WAL archived/],
      [['--name', 'never-made'], /holds no restore point named "never-made"/],
    ] as const) {
      const r = await run(['restore', 'latest', '--db', DB, '--to', target, ...args, '--start'], flags);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, said);
      assert.match(r.stderr, new RegExp(`--xid ${xid} recovers through it`));
      assert.equal(existsSync(target), false, 'the restored files were removed');
    }

    // What it suggests does recover, through that transaction.
    const suggested = await run(['restore', 'latest', '--db', DB, '--to', target, '--xid', xid, '--start', '--target-action', 'promote', '--json'], flags);
    assert.equal(suggested.status, 0, suggested.stderr);
    assert.equal((JSON.parse(suggested.stdout) as { reached: { state: string } }).reached.state, 'promoted');
    const port = await freePort();
    const log = path.join(cluster.dir, 'suggested.log');
    const started = cluster.pgCtl(['start', '-D', target, '-w', '-t', '120', '-l', log, '-o', `-c port=${port} -c unix_socket_directories=${cluster.dir}`]);
    running.add(target);
    assert.equal(started.status, 0, started.out);
    const c = await client(port);
    try {
      assert.deepEqual((await c.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((row) => row.seq), [1, 2, 3, 4]);
    } finally {
      await c.end().catch(() => undefined);
    }
  });
});
