import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { CLI, TEST_PASSPHRASE } from './helpers/env.js';
import { asServerUser, BINDIR, freePort, isRoot, requireServerPrograms, runSync, strataAsync, switchAndArchive } from './helpers/pg-cluster.js';
import { followExportRestoreMd, recipe } from './helpers/format-recipes.js';

/**
 * A physical backup of a cluster laid out the way Debian and Ubuntu lay out every cluster they
 * create: postgresql.conf, pg_hba.conf and pg_ident.conf in a folder of their own (there,
 * /etc/postgresql/VERSION/NAME), outside the data directory, so a base backup holds none of them.
 * The primary's configuration also raises settings a recovering server must match
 * (max_connections, max_prepared_transactions), and its pg_hba.conf wants a password over TCP.
 * Strata's own temporary servers (restore --start, --tables, verify --level full) must still start
 * and be reachable, and restore must say what the directory lacks. A tablespace is carried, and
 * restored only into a folder that holds nothing; a recovery (or verify's copy) that would replay a
 * CREATE TABLESPACE into a folder that exists here (the primary's own, on its machine) before the
 * server can start.
 */

const DB = 'cluster';

/** A tablespace's folder for this server version (PG_15_202209061): what a replayed CREATE TABLESPACE removes. */
function versionFolder(location: string): string {
  const found = readdirSync(location).find((name) => name.startsWith('PG_'));
  assert.ok(found, `${location} holds no PG_ folder`);
  return found;
}
const PASSWORD = 'layout-secret-7Q';

describe('physical backups of a cluster whose configuration lives outside its data directory (Debian\'s layout)', function () {
  this.timeout(10 * 60_000);
  let dir = '';
  let etc = '';
  let port = 0;
  let config = '';
  let passFile = '';
  let running = false;
  const cli = (args: string[]) => strataAsync([...args, '--config', config, '--passphrase-file', passFile]);
  const pgCtl = (args: string[]) => runSync(path.join(BINDIR, 'pg_ctl'), args);
  /** A new folder for a tablespace, owned by the server's user. */
  const tablespaceFolder = (name: string): string => {
    const location = path.join(dir, name);
    mkdirSync(location);
    if (isRoot) spawnSync('chown', ['postgres', location]);
    return location;
  };
  /** A file in the tablespace's version folder, where a replayed CREATE TABLESPACE writes. */
  const witness = (location: string): string => path.join(location, versionFolder(location), 'witness');
  /** DROP TABLESPACE wants nothing but databases' folders in the version folder. */
  const removeWitness = (location: string): void => {
    for (const name of readdirSync(location).filter((n) => n.startsWith('PG_'))) rmSync(path.join(location, name, 'witness'), { force: true });
  };
  const connect = async (database = 'postgres'): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: PASSWORD, database });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  /**
   * A base backup of what `db` holds, then rows 101..150 of `table` committed before the moment it
   * returns and 151..200 after it, archived; database `copies` is made with an empty `table` (as
   * `columns` says), for a table restore to replace.
   */
  const backupAroundMoment = async (db: pg.Client, table: string, insert: (from: number, to: number) => string, copies: string, columns: string): Promise<string> => {
    const backup = await cli(['backup', DB, '--json']);
    assert.equal(backup.status, 0, backup.stderr);
    await db.query(insert(101, 150));
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const moment = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await db.query(insert(151, 200));
    await switchAndArchive(db);
    await db.query(`CREATE DATABASE ${copies}`);
    const empty = await connect(copies);
    await empty.query(`CREATE TABLE ${table} (${columns})`).finally(() => empty.end());
    return moment;
  };

  before(async function () {
    requireServerPrograms(this);
    dir = mkdtempSync(path.join(tmpdir(), 'strata-layout-'));
    chmodSync(dir, 0o755);
    const dataDir = path.join(dir, 'data');
    etc = path.join(dir, 'etc');
    mkdirSync(etc);
    if (isRoot) spawnSync('chown', ['postgres', dir, etc]);
    port = await freePort();
    const init = runSync(path.join(BINDIR, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
    assert.equal(init.status, 0, init.out);
    passFile = path.join(dir, 'passphrase');
    config = path.join(dir, 'strata.config.json');
    writeFileSync(passFile, TEST_PASSPHRASE, { mode: 0o600 });
    writeFileSync(config, JSON.stringify({ repository: path.join(dir, 'repo'), databases: { [DB]: { url: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`, method: 'physical' } } }));
    if (isRoot) spawnSync('chown', ['postgres', passFile, config]);
    for (const file of ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf']) renameSync(path.join(dataDir, file), path.join(etc, file));
    const archive = `${process.execPath} ${CLI} wal-push %p --db ${DB} --config ${config} --passphrase-file ${passFile}`;
    writeFileSync(
      path.join(etc, 'postgresql.conf'),
      [
        `data_directory = '${dataDir}'`,
        `hba_file = '${path.join(etc, 'pg_hba.conf')}'`,
        `ident_file = '${path.join(etc, 'pg_ident.conf')}'`,
        `port = ${port}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir}'`,
        // Higher than PostgreSQL's defaults: a recovering server with the defaults would abort.
        'max_connections = 130',
        'max_prepared_transactions = 7',
        'archive_mode = on',
        `archive_command = '${archive}'`,
        'fsync = off',
        '',
      ].join('\n'),
      { flag: 'a' },
    );
    // The socket for the server's own user (to set the password), a password over TCP for everyone.
    writeFileSync(path.join(etc, 'pg_hba.conf'), ['local all postgres trust', 'host all all 127.0.0.1/32 scram-sha-256', 'local replication all trust', 'host replication all 127.0.0.1/32 scram-sha-256', ''].join('\n'));
    const started = pgCtl(['start', '-D', etc, '-l', path.join(dir, 'server.log'), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.out);
    running = true;
    const psql = runSync(path.join(BINDIR, 'psql'), ['-X', '-q', '-h', dir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-c', `ALTER ROLE postgres PASSWORD '${PASSWORD}'`]);
    assert.equal(psql.status, 0, psql.out);
    const initRepo = await cli(['init']);
    assert.equal(initRepo.status, 0, initRepo.stderr);
  });

  after(function () {
    if (running) pgCtl(['stop', '-D', etc, '-m', 'immediate', '-w']);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('carries a tablespace: restored into the folder --tablespace-map gives (never into its own, which is refused), a table of it as of a moment, verify and an incremental', async function () {
    const location = tablespaceFolder('tablespace');
    const db = await connect();
    let moment = '';
    let oid = '';
    try {
      await db.query(`CREATE TABLESPACE layout_space LOCATION '${location}'`);
      oid = (await db.query<{ oid: string }>("SELECT oid::text FROM pg_tablespace WHERE spcname = 'layout_space'")).rows[0]!.oid;
      // A table and its index in the tablespace, and a whole database whose default it is.
      await db.query('CREATE TABLE spaced (seq int PRIMARY KEY USING INDEX TABLESPACE layout_space, note text) TABLESPACE layout_space');
      await db.query("INSERT INTO spaced SELECT g, 'row ' || g FROM generate_series(1, 100) g");
      await db.query('CREATE DATABASE spaced_db TABLESPACE layout_space');
      const inside = await connect('spaced_db');
      await inside.query('CREATE TABLE notes AS SELECT generate_series(1, 10) AS n').finally(() => inside.end());
      moment = await backupAroundMoment(db, 'spaced', (from, to) => `INSERT INTO spaced SELECT g, 'row ' || g FROM generate_series(${from}, ${to}) g`, 'spaced_copies', 'seq int PRIMARY KEY, note text');
    } finally {
      await db.end();
    }

    // Without a map the tablespace would go back into its own folder, the live cluster's.
    const target = path.join(dir, 'restored-spaced');
    const refused = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', moment]);
    assert.equal(refused.status, 1, refused.stderr);
    assert.match(refused.stderr, new RegExp(`tablespace ${oid} was at ${location} when backed up, and ${location} exists and is not empty \\(on the machine the backup was taken on, it is the cluster's own tablespace\\); nothing was written there\\. Give --tablespace-map ${location}=NEW_FOLDER`));
    assert.equal(existsSync(target), false, 'no data directory was left');
    assert.deepEqual(readdirSync(dir).filter((name) => name.includes('strata-')), [], 'no partial folder was left beside the target or the tablespace');
    // --force over a copy of the live data directory (its links point at the live tablespace)
    // replaces the copy, never the tablespace it links to.
    const copyOfLive = path.join(dir, 'copy-of-live');
    mkdirSync(path.join(copyOfLive, 'pg_tblspc'), { recursive: true });
    writeFileSync(path.join(copyOfLive, 'PG_VERSION'), '15\n');
    symlinkSync(location, path.join(copyOfLive, 'pg_tblspc', oid));
    if (isRoot) spawnSync('chown', ['-R', '-h', 'postgres', copyOfLive]);
    const live = readdirSync(location).sort();
    const forced = await cli(['restore', 'latest', '--db', DB, '--to', copyOfLive, '--as-of', moment, '--force']);
    assert.equal(forced.status, 1, forced.stderr);
    assert.match(forced.stderr, /exists and is not empty \(on the machine the backup was taken on, it is the cluster's own tablespace\)/);
    assert.deepEqual(readdirSync(location).sort(), live, 'the live tablespace is as it was');
    assert.ok(existsSync(path.join(copyOfLive, 'PG_VERSION')), 'the data directory --force would have replaced is still there');
    rmSync(copyOfLive, { recursive: true, force: true });

    const moved = path.join(dir, 'moved-space');
    const restored = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', moment, '--tablespace-map', `${location}=${moved}`, '--start', '--target-action', 'promote', '--json']);
    assert.equal(restored.status, 0, restored.stderr);
    const report = JSON.parse(restored.stdout) as { reached: { state: string }; tablespaces: { oid: string; location: string }[] };
    assert.equal(report.reached.state, 'promoted');
    assert.deepEqual(report.tablespaces, [{ oid, location: moved }]);
    assert.ok(readdirSync(moved).some((name) => name.startsWith('PG_')), 'the tablespace was unpacked into the folder the map gave');
    // Started by hand, the copy reads the table, its index and the database from the moved tablespace.
    writeFileSync(path.join(target, 'postgresql.conf'), `listen_addresses = ''\nunix_socket_directories = '${dir}'\narchive_mode = off\n`);
    writeFileSync(path.join(target, 'pg_hba.conf'), 'local all all trust\n');
    if (isRoot) spawnSync('chown', ['postgres', path.join(target, 'postgresql.conf'), path.join(target, 'pg_hba.conf')]);
    const copyPort = await freePort();
    const started = pgCtl(['start', '-D', target, '-l', path.join(dir, 'spaced.log'), '-w', '-t', '300', '-o', `-c port=${copyPort}`]);
    assert.equal(started.status, 0, started.out);
    try {
      const copy = new pg.Client({ host: dir, port: copyPort, user: 'postgres', database: 'postgres' });
      await copy.connect();
      try {
        const seqs = (await copy.query<{ seq: number }>('SET enable_seqscan = off; SELECT seq FROM spaced WHERE seq > 0 ORDER BY seq')) as unknown as { rows: { seq: number }[] }[];
        assert.deepEqual(seqs[1]!.rows.map((r) => r.seq), Array.from({ length: 150 }, (_, i) => i + 1), 'rows 1..150, read through the index in the tablespace');
        assert.equal((await copy.query<{ at: string }>("SELECT pg_tablespace_location(oid) AS at FROM pg_tablespace WHERE spcname = 'layout_space'")).rows[0]!.at, moved);
      } finally {
        await copy.end();
      }
      const inside = new pg.Client({ host: dir, port: copyPort, user: 'postgres', database: 'spaced_db' });
      await inside.connect();
      try {
        assert.equal((await inside.query<{ n: number }>('SELECT count(*)::int AS n FROM notes')).rows[0]!.n, 10, 'the database whose default is the tablespace');
      } finally {
        await inside.end();
      }
    } finally {
      pgCtl(['stop', '-D', target, '-m', 'fast', '-w']);
    }

    // A table of the tablespace as of the moment, through a scratch cluster whose tablespace is its own.
    const tables = await cli(['restore', '--db', DB, '--as-of', moment, '--tables', 'public.spaced', '--to', `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/spaced_copies`, '--force', '--yes', '--json']);
    assert.equal(tables.status, 0, tables.stderr);
    const copies = await connect('spaced_copies');
    try {
      const seqs = (await copies.query<{ seq: number }>('SELECT seq FROM spaced ORDER BY seq')).rows.map((r) => r.seq);
      assert.deepEqual(seqs, Array.from({ length: 150 }, (_, i) => i + 1), 'the table as of the moment');
    } finally {
      await copies.end();
    }

    // verify's copy puts the tablespace beside itself: with the live folder in the way it could not run at all.
    const verified = await cli(['verify', 'latest', '--level', 'full', '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    const checks = (JSON.parse(verified.stdout) as { reports: { checks: { name: string; status: string }[] }[] }).reports[0]!.checks;
    assert.deepEqual(
      checks.map((c) => `${c.name} ${c.status}`),
      ['file-accessibility passed', 'checksum-match passed', 'database-readable passed', 'schema-integrity passed', 'data-consistency passed'],
    );

    // By hand, as docs/FORMAT.md says: recover-physical, then recover-physical-tablespaces.
    const home = path.join(dir, 'by-hand');
    mkdirSync(path.join(home, 'gnupg'), { recursive: true, mode: 0o700 });
    if (isRoot) spawnSync('chown', ['-R', 'postgres', home]);
    const follow = (marker: string, variables: Record<string, string>): void => {
      const env = { GNUPGHOME: path.join(home, 'gnupg'), ...variables };
      const [file, argv] = asServerUser('env', [...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'bash', '-euo', 'pipefail', '-c', recipe(marker)]);
      const r = spawnSync(file, argv, { encoding: 'utf8' });
      assert.equal(r.status, 0, `${marker} failed:\n${r.stderr}`);
    };
    const keys = path.join(home, 'keys');
    follow('recover-data-keys', { REPO: path.join(dir, 'repo'), PASSFILE: passFile, KEYS: keys });
    const listed = (JSON.parse((await cli(['list', '--json'])).stdout) as { backups: { key: string; encryption: { keyId: string } }[] }).backups;
    assert.equal(listed.length, 1, 'the tablespace\'s base backup is the repository\'s only one so far');
    const base = listed[0]!;
    const dataKey = path.join(home, 'data-key');
    follow('data-key-file', { KEYS: keys, KEYID: base.encryption.keyId, DATAKEY: dataKey });
    const pgdata = path.join(home, 'pgdata');
    const handSpaces = path.join(home, 'tablespaces');
    follow('recover-physical', { ARTIFACT: path.join(dir, 'repo', base.key), DATAKEY: dataKey, KEYS: keys, REPO: path.join(dir, 'repo'), DB, PGDATA: pgdata });
    follow('recover-physical-tablespaces', { ARTIFACT: path.join(dir, 'repo', base.key), DATAKEY: dataKey, PGDATA: pgdata, TABLESPACES: handSpaces });
    // Every file of the tablespace with its SHA-256, as recovered by hand (before a server changes them).
    const filesOf = (folder: string): string => spawnSync('bash', ['-c', 'cd "$0" && find . -type f -print0 | sort -z | xargs -0 sha256sum', folder], { encoding: 'utf8' }).stdout;
    const recovered = filesOf(path.join(handSpaces, oid));
    assert.match(recovered, /PG_15_/);
    writeFileSync(path.join(pgdata, 'postgresql.conf'), `listen_addresses = ''\nunix_socket_directories = '${dir}'\nmax_connections = 130\nmax_prepared_transactions = 7\n`);
    writeFileSync(path.join(pgdata, 'pg_hba.conf'), 'local all all trust\n');
    if (isRoot) spawnSync('chown', ['postgres', path.join(pgdata, 'postgresql.conf'), path.join(pgdata, 'pg_hba.conf')]);
    const handPort = await freePort();
    const handStarted = pgCtl(['start', '-D', pgdata, '-l', path.join(home, 'server.log'), '-w', '-t', '300', '-o', `-c port=${handPort}`]);
    assert.equal(handStarted.status, 0, `${handStarted.out}\n${existsSync(path.join(home, 'server.log')) ? readFileSync(path.join(home, 'server.log'), 'utf8') : ''}`);
    try {
      const c = new pg.Client({ host: dir, port: handPort, user: 'postgres', database: 'postgres' });
      await c.connect();
      try {
        for (let i = 0; i < 600 && (await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r; i++) await new Promise((resolve) => setTimeout(resolve, 500));
        const seqs = (await c.query<{ seq: number }>('SELECT seq FROM spaced ORDER BY seq')).rows.map((r) => r.seq);
        assert.deepEqual(seqs, Array.from({ length: 200 }, (_, i) => i + 1), 'every row archived, read from the tablespace recovered by hand');
        assert.equal((await c.query<{ at: string }>("SELECT pg_tablespace_location(oid) AS at FROM pg_tablespace WHERE spcname = 'layout_space'")).rows[0]!.at, path.join(handSpaces, oid));
      } finally {
        await c.end();
      }
    } finally {
      pgCtl(['stop', '-D', pgdata, '-m', 'fast', '-w']);
      rmSync(home, { recursive: true, force: true });
    }

    // An export's RESTORE.md puts the tablespace beside the data directory it makes, as the recipe did.
    const exportFile = path.join(dir, 'export', 'cluster.tar.gz');
    mkdirSync(path.dirname(exportFile), { mode: 0o700 });
    if (isRoot) spawnSync('chown', ['postgres', path.dirname(exportFile)]);
    const exported = await cli(['export', DB, '--out', exportFile]);
    assert.equal(exported.status, 0, exported.stderr);
    const exportHome = path.join(dir, 'export-home');
    mkdirSync(exportHome, { mode: 0o700 });
    const { folder } = followExportRestoreMd(exportFile, DB, exportHome);
    const newdb = path.join(folder, DB);
    assert.equal(readFileSync(path.join(newdb, 'tablespace_map'), 'utf8'), `${oid} ${newdb}.tablespaces/${oid}\n`);
    assert.equal(filesOf(path.join(`${newdb}.tablespaces`, oid)), recovered, 'the same files as the recipe recovered');
    rmSync(path.dirname(exportFile), { recursive: true, force: true });
    rmSync(exportHome, { recursive: true, force: true });

    // An incremental stores the tablespace's changed chunks; restored over the first copy (--force), its own folder is replaced too.
    const more = await connect();
    try {
      await more.query("INSERT INTO spaced SELECT g, 'row ' || g FROM generate_series(201, 250) g");
    } finally {
      await more.end();
    }
    const incremental = await cli(['backup', DB, '--type', 'incremental', '--json']);
    assert.equal(incremental.status, 0, incremental.stderr);
    const again = await cli(['restore', 'latest', '--db', DB, '--to', target, '--tablespace-map', `${location}=${moved}`, '--force', '--immediate', '--start', '--json']);
    assert.equal(again.status, 0, again.stderr);
    assert.equal((JSON.parse(again.stdout) as { reached: { state: string } }).reached.state, 'paused');
    rmSync(target, { recursive: true, force: true });
    rmSync(moved, { recursive: true, force: true });

    // A restore killed while it unpacks the tablespace leaves that tablespace's files, decrypted, in
    // a private folder inside the folder it goes to: the next restore into it removes them (and is
    // not refused because the folder holds something).
    const killedSpace = path.join(dir, 'killed-space');
    const killedTarget = path.join(dir, 'killed-target');
    const restoreArgs = ['restore', 'latest', '--db', DB, '--to', killedTarget, '--tablespace-map', `${location}=${killedSpace}`];
    let leftover: { name: string; pid: number } | undefined;
    for (let attempt = 1; attempt <= 5 && !leftover; attempt++) {
      const [file, argv] = asServerUser(process.execPath, [CLI, ...restoreArgs, '--config', config, '--passphrase-file', passFile]);
      const child = spawn(file, argv, { stdio: 'ignore' });
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      let done = false;
      void exited.then(() => (done = true));
      let unpacking: string | undefined;
      while (!unpacking && !done) {
        unpacking = (existsSync(killedSpace) ? readdirSync(killedSpace) : []).find((name) => name.includes('.strata-partial-'));
        if (!unpacking) await new Promise((resolve) => setTimeout(resolve, 2));
      }
      if (unpacking) {
        const pid = isRoot ? Number(spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.trim().split('\n')[0]) : child.pid!;
        if (pid > 0) process.kill(pid, 'SIGKILL');
        await exited;
        if (existsSync(path.join(killedSpace, unpacking))) leftover = { name: unpacking, pid };
      } else await exited;
      // Caught too late (the restore had finished): again.
      if (!leftover) for (const folder of [killedTarget, killedSpace]) rmSync(folder, { recursive: true, force: true });
    }
    assert.ok(leftover, 'a restore was caught unpacking the tablespace in one of 5 tries');
    assert.match(leftover.name, new RegExp(`-${leftover.pid}-[0-9a-f]{8}$`), "the folder's name says whose it is");
    assert.equal(statSync(path.join(killedSpace, leftover.name)).mode & 0o777, 0o700, 'it is private');
    const next = await cli(restoreArgs);
    assert.equal(next.status, 0, next.stderr);
    assert.match(next.stderr, new RegExp(`removed ${killedSpace}/${leftover.name.replace(/[.]/g, '\\.')}, .*left by pid ${leftover.pid} on this host, which is no longer running`));
    assert.deepEqual(readdirSync(killedSpace).filter((name) => name.includes('strata-')), [], 'nothing is left in the tablespace folder');
    assert.ok(readdirSync(killedSpace).some((name) => name.startsWith('PG_')), 'the tablespace is restored there');
    rmSync(killedTarget, { recursive: true, force: true });
    rmSync(killedSpace, { recursive: true, force: true });

    const db2 = await connect();
    try {
      await db2.query('DROP DATABASE spaced_db');
      await db2.query('DROP DATABASE spaced_copies');
      await db2.query('DROP TABLE spaced');
      await db2.query('DROP TABLESPACE layout_space');
    } finally {
      await db2.end();
    }
  });

  it('a tablespace made as the backup starts fails it, saying what changed, and files nothing', async function () {
    const first = tablespaceFolder('first-space');
    const second = tablespaceFolder('second-space');
    // pg_basebackup, after Strata read the tablespaces: one more is made first.
    const racing = path.join(dir, 'racing-programs');
    mkdirSync(racing, { mode: 0o755 });
    for (const name of readdirSync(BINDIR)) if (name !== 'pg_basebackup') symlinkSync(path.join(BINDIR, name), path.join(racing, name));
    writeFileSync(
      path.join(racing, 'pg_basebackup'),
      ['#!/bin/sh', `case " $* " in *" --version "*) exec "${BINDIR}/pg_basebackup" "$@" ;; esac`, `"${BINDIR}/psql" -X -q -h "${dir}" -p ${port} -U postgres -d postgres -c "CREATE TABLESPACE second_space LOCATION '${second}'" >/dev/null || exit 9`, `exec "${BINDIR}/pg_basebackup" "$@"`, ''].join('\n'),
      { mode: 0o755 },
    );
    if (isRoot) spawnSync('chown', ['-R', '-h', 'postgres', racing]);
    const db = await connect();
    try {
      await db.query(`CREATE TABLESPACE first_space LOCATION '${first}'`);
      const before = (JSON.parse((await cli(['list', '--json'])).stdout) as { backups: unknown[] }).backups.length;
      const r = await strataAsync(['backup', DB, '--config', config, '--passphrase-file', passFile], { STRATA_PG_BINDIR: racing });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /the cluster's tablespaces changed while the backup ran \(pg_basebackup wrote \d+\.tar, \d+\.tar, backup_manifest, base\.tar where \d+\.tar, backup_manifest, base\.tar were expected\); run the backup again/);
      assert.equal((JSON.parse((await cli(['list', '--json'])).stdout) as { backups: unknown[] }).backups.length, before, 'nothing was filed');
    } finally {
      await db.query('DROP TABLESPACE IF EXISTS first_space');
      await db.query('DROP TABLESPACE IF EXISTS second_space');
      await db.end();
      rmSync(racing, { recursive: true, force: true });
    }
  });

  it('restores with --start, restores a table as of a moment and verifies, with none of the configuration in the backup', async function () {
    const db = await connect();
    let moment = '';
    try {
      await db.query('CREATE TABLE markers (seq int PRIMARY KEY)');
      await db.query('INSERT INTO markers SELECT generate_series(1, 100)');
      moment = await backupAroundMoment(db, 'markers', (from, to) => `INSERT INTO markers SELECT generate_series(${from}, ${to})`, 'copies', 'seq int PRIMARY KEY');
    } finally {
      await db.end();
    }

    const target = path.join(dir, 'restored');
    const restored = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', moment, '--start', '--json']);
    assert.equal(restored.status, 0, restored.stderr);
    const report = JSON.parse(restored.stdout) as { reached: { state: string; lsn: string }; configurationMissing: string[] };
    assert.equal(report.reached.state, 'paused', 'the temporary server started, recovered and paused at the moment');
    assert.deepEqual(report.configurationMissing, ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf']);
    assert.equal(existsSync(path.join(target, 'postgresql.conf')), false, 'restore writes no configuration of its own into the directory');
    rmSync(target, { recursive: true, force: true });
    const text = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', moment]);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /keeps postgresql\.conf, pg_hba\.conf, pg_ident\.conf outside its data directory .*copy yours in first, without data_directory, hba_file and ident_file/);
    assert.match(text.stdout, /then start it with: pg_ctl -D /);
    rmSync(target, { recursive: true, force: true });

    const tables = await cli(['restore', '--db', DB, '--as-of', moment, '--tables', 'public.markers', '--to', `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/copies`, '--force', '--yes', '--json']);
    assert.equal(tables.status, 0, tables.stderr);
    const copies = await connect('copies');
    try {
      const seqs = (await copies.query<{ seq: number }>('SELECT seq FROM markers ORDER BY seq')).rows.map((r) => r.seq);
      assert.deepEqual(seqs, Array.from({ length: 150 }, (_, i) => i + 1), 'the table as of the moment: markers 1..150');
    } finally {
      await copies.end();
    }

    const verified = await cli(['verify', 'latest', '--level', 'full', '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    const checks = (JSON.parse(verified.stdout) as { reports: { checks: { name: string; status: string }[] }[] }).reports[0]!.checks;
    assert.deepEqual(
      checks.map((c) => `${c.name} ${c.status}`),
      ['file-accessibility passed', 'checksum-match passed', 'database-readable passed', 'schema-integrity passed', 'data-consistency passed'],
    );
  });

  it('refuses a recovery that would replay a CREATE TABLESPACE into a folder of this machine, and recovers to the record before it', async function () {
    const location = tablespaceFolder('later-tablespace');
    const db = await connect();
    try {
      // A moment before it, in the same WAL segment: a recovery to it stops before the first
      // commit after it (the marker), so before the CREATE. (A recovery stops at commits only: to
      // a moment between the CREATE's record and its commit, it would replay the CREATE.)
      await db.query('INSERT INTO markers VALUES (1000)');
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const beforeCreate = new Date().toISOString();
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await db.query('INSERT INTO markers VALUES (1001)');
      await db.query(`CREATE TABLESPACE later_space LOCATION '${location}'`);
      await db.query('CREATE TABLE kept TABLESPACE later_space AS SELECT 42 AS answer');
      writeFileSync(witness(location), 'the primary tablespace folder must survive');
      await switchAndArchive(db);
      const target = path.join(dir, 'refused');
      const refused = await cli(['restore', 'latest', '--db', DB, '--to', target]);
      assert.equal(refused.status, 2, refused.stdout + refused.stderr);
      assert.match(refused.stderr, new RegExp(`creates tablespace \\d+ at ${location} \\(at LSN [0-9A-F]+/[0-9A-F]+\\), and that folder exists on this machine.*The restored files were removed`));
      assert.equal(existsSync(target), false, 'nothing is left where the restore was to go');
      assert.equal(existsSync(witness(location)), true, 'the tablespace folder is untouched');
      const before = /--lsn ([0-9A-F]+\/[0-9A-F]+), the record before it/.exec(refused.stderr)?.[1];
      assert.ok(before, refused.stderr);
      const recovered = await cli(['restore', 'latest', '--db', DB, '--to', target, '--lsn', before, '--start', '--json']);
      assert.equal(recovered.status, 0, recovered.stderr);
      assert.equal((JSON.parse(recovered.stdout) as { reached: { state: string } }).reached.state, 'paused');
      rmSync(target, { recursive: true, force: true });
      const earlier = await cli(['restore', 'latest', '--db', DB, '--to', target, '--as-of', beforeCreate, '--start', '--json']);
      assert.equal(earlier.status, 0, `a moment before the CREATE TABLESPACE: ${earlier.stderr}`);
      rmSync(target, { recursive: true, force: true });
    } finally {
      removeWitness(location);
      await db.query('DROP TABLE IF EXISTS kept');
      await db.query('DROP TABLESPACE IF EXISTS later_space');
      await db.end();
    }
  });

  it("refuses --force over the data directory of a running server, which goes on (a restore replaced its files under it)", async function () {
    const backup = await cli(['backup', DB]);
    assert.equal(backup.status, 0, backup.stderr);
    const dataDir = path.join(dir, 'data');
    const refused = await cli(['restore', 'latest', '--db', DB, '--to', dataDir, '--force', '--yes']);
    assert.equal(refused.status, 1, refused.stdout + refused.stderr);
    assert.match(refused.stderr, new RegExp(`a PostgreSQL server is running on ${dataDir} \\(pid \\d+, in its postmaster.pid\\).*stop it first \\(pg_ctl -D ${dataDir} stop\\), then restore; nothing was changed`));
    const db = await connect();
    try {
      assert.equal((await db.query<{ n: string }>('SELECT count(*)::text AS n FROM pg_class')).rows.length, 1, 'the server still reads its own files');
    } finally {
      await db.end();
    }
    assert.deepEqual(readdirSync(dir).filter((name) => name.startsWith('data.strata-')), [], 'nothing left beside it');
  });

  it('verify --level full does not start a copy whose WAL replays a CREATE TABLESPACE into a folder of this machine', async function () {
    const location = tablespaceFolder('during-backup-tablespace');
    let db = await connect();
    try {
      // Enough data that the base backup is still streaming files when the tablespace is made:
      // its CREATE then lies between the backup's start and end, in the WAL a copy replays.
      await db.query("CREATE TABLE bulk AS SELECT g, repeat(md5(g::text), 10) AS filler FROM generate_series(1, 300000) g");
      const backup = cli(['backup', DB]);
      const progress = async (): Promise<{ phase: string; pid: number } | undefined> => (await db.query<{ phase: string; pid: number }>('SELECT phase, pid FROM pg_stat_progress_basebackup')).rows[0];
      let sender: { phase: string; pid: number } | undefined;
      for (let tries = 0; (sender = await progress())?.phase !== 'streaming database files'; tries++) {
        assert.ok(tries < 30_000, 'the base backup never reached its file-streaming phase');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.ok(sender);
      const pid = sender.pid;
      // The server process sending the files is held still meanwhile, however fast the machine.
      process.kill(pid, 'SIGSTOP');
      try {
        await db.query(`CREATE TABLESPACE during_space LOCATION '${location}'`);
        await db.query('CREATE TABLE during_kept TABLESPACE during_space AS SELECT 7 AS answer');
        assert.equal((await progress())?.phase, 'streaming database files', 'the tablespace was made while the backup still streamed its files');
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      writeFileSync(witness(location), 'the primary tablespace folder must survive');
      const taken = await backup;
      assert.equal(taken.status, 0, taken.stderr);
      await switchAndArchive(db);
      // The primary moves on, onto disk: a copy replaying into its folder would put the old page back.
      await db.query('UPDATE during_kept SET answer = 8');
      await db.query('CHECKPOINT');

      const verified = await cli(['verify', 'latest', '--level', 'full', '--json']);
      assert.equal(existsSync(witness(location)), true, 'the tablespace folder is untouched');
      // Read from disk again, not from the primary's buffers.
      const restarted = pgCtl(['restart', '-D', etc, '-m', 'fast', '-w', '-t', '300', '-l', path.join(dir, 'server.log')]);
      assert.equal(restarted.status, 0, restarted.out);
      await db.end().catch(() => undefined);
      db = await connect();
      const answer = await db.query<{ answer: number }>('SELECT answer FROM during_kept');
      assert.deepEqual(answer.rows, [{ answer: 8 }], 'the primary still holds what it wrote in its tablespace');
      assert.notEqual(verified.status, 0, verified.stdout);
      const checks = (JSON.parse(verified.stdout) as { reports: { checks: { name: string; status: string; reason: string }[] }[] }).reports[0]!.checks;
      // The base backup restored (one database-readable passed); the copy was not started (one failed).
      const readable = checks.find((c) => c.name === 'database-readable' && c.status === 'failed');
      assert.ok(readable, JSON.stringify(checks));
      assert.match(readable.reason, new RegExp(`creates tablespace \\d+ at ${location} \\(at LSN [0-9A-F]+/[0-9A-F]+\\), and that folder exists on this machine.*the copy was not started`));
    } finally {
      removeWitness(location);
      await db.query('DROP TABLE IF EXISTS during_kept');
      await db.query('DROP TABLE IF EXISTS bulk');
      await db.query('DROP TABLESPACE IF EXISTS during_space');
      await db.end();
    }
  });

  it('a setting the primary raised after the base backup fails --start with PostgreSQL\'s words, never a pause reported as the target', async function () {
    // A base backup after the tablespace of the test before (its WAL is refused, see there).
    const backup = await cli(['backup', DB]);
    assert.equal(backup.status, 0, backup.stderr);
    const conf = path.join(etc, 'postgresql.conf');
    writeFileSync(conf, 'max_connections = 160\n', { flag: 'a' });
    const restarted = pgCtl(['restart', '-D', etc, '-m', 'fast', '-w', '-t', '300', '-l', path.join(dir, 'server.log')]);
    assert.equal(restarted.status, 0, restarted.out);
    const db = await connect();
    try {
      await db.query('INSERT INTO markers VALUES (2000)');
      await switchAndArchive(db);
    } finally {
      await db.end();
    }
    const target = path.join(dir, 'short');
    // The newest base backup is from before the restart: its pg_control says 130; the WAL after it, 160.
    const r = await cli(['restore', 'latest', '--db', DB, '--to', target, '--start']);
    assert.notEqual(r.status, 0, r.stdout);
    assert.match(r.stderr, /paused short of its target because a setting is lower than on the primary[^]*max_connections = 130 is a lower setting than on the primary server, where its value was 160/);
    rmSync(target, { recursive: true, force: true });
  });
});

