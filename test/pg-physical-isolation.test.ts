import assert from 'node:assert/strict';
import { appendFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { BINDIR, makeCluster, requireServerPrograms, runSync, switchAndArchive, waitFor } from './helpers/pg-cluster.js';
import type { TestCluster } from './helpers/pg-cluster.js';
import { skipOrFail } from './helpers/env.js';

/**
 * Strata's own temporary servers on a restored copy (verify --level full, restore --start) run on
 * the machine the backed-up cluster runs on, with that cluster's catalog. A logical replication
 * subscription in it is enabled there as it was on the primary, and a copy that ends recovery as
 * a primary (verify's, or --start with --target-action promote) would start its apply worker:
 * it connects to the publisher and takes the subscription's slot, receiving (and acknowledging)
 * changes meant for the real subscriber while that one is away. Nor may a copy run the primary's
 * recovery_end_command or archive_cleanup_command, which act on its archive. The copies must never
 * reach out.
 */

const DB = 'cluster';
const hasPgCron = existsSync(path.join(BINDIR, '..', 'lib', 'pg_cron.so'));
const SLOT = 'items_sub';

describe('Strata\'s temporary servers on a restored copy never act on its logical replication subscriptions', function () {
  this.timeout(10 * 60_000);
  let cluster: TestCluster;
  let running = false;
  const serverLog = (): string => path.join(cluster.dir, 'server.log');
  const connect = async (database: string): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: cluster.port, user: 'postgres', database });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  /** How often a walsender started decoding for the subscription's slot, by the primary's log. */
  const decodingStarts = (): number => readFileSync(serverLog(), 'utf8').split(`starting logical decoding for slot "${SLOT}"`).length - 1;

  before(async function () {
    requireServerPrograms(this);
    cluster = await makeCluster('strata-isolation-', DB);
    // The primary's own commands for the end of a recovery and a standby's archive cleanup (which
    // it never runs itself): a copy must not run them either.
    const witness = (name: string): string => `touch ${path.join(cluster.dir, name)}`;
    appendFileSync(path.join(cluster.dataDir, 'postgresql.auto.conf'), `wal_level = logical\nrecovery_end_command = '${witness('recovery-end-ran')}'\narchive_cleanup_command = '${witness('cleanup-ran')}'\n`);
    // pg_cron's scheduler starts with the primary (its last test), beside a library the copies keep.
    if (hasPgCron) appendFileSync(path.join(cluster.dataDir, 'postgresql.auto.conf'), `shared_preload_libraries = 'pg_stat_statements, pg_cron'\n`);
    const started = cluster.pgCtl(['start', '-D', cluster.dataDir, '-l', serverLog(), '-w', '-t', '300']);
    assert.equal(started.status, 0, started.out);
    running = true;
  });

  after(function () {
    if (!cluster) return;
    if (running) cluster.pgCtl(['stop', '-D', cluster.dataDir, '-m', 'immediate', '-w']);
    rmSync(cluster.dir, { recursive: true, force: true });
  });

  it('verify --level full and restore --start --target-action promote leave the slot to the real subscriber and run none of the primary\'s recovery commands', async function () {
    const admin = await connect('postgres');
    await admin.query('CREATE DATABASE pub');
    await admin.query('CREATE DATABASE sub');
    const pub = await connect('pub');
    const sub = await connect('sub');
    const count = async (): Promise<number> => Number((await sub.query<{ n: string }>('SELECT count(*) AS n FROM items')).rows[0]!.n);
    try {
      await pub.query('CREATE TABLE items (id int PRIMARY KEY)');
      await pub.query('CREATE PUBLICATION items_pub FOR TABLE items');
      // A subscription to a database of the same cluster needs its slot made beforehand.
      await pub.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [SLOT]);
      await sub.query('CREATE TABLE items (id int PRIMARY KEY)');
      await sub.query(`CREATE SUBSCRIPTION items_sub CONNECTION 'host=127.0.0.1 port=${cluster.port} user=postgres dbname=pub' PUBLICATION items_pub WITH (create_slot = false, slot_name = '${SLOT}')`);
      await pub.query('INSERT INTO items SELECT generate_series(1, 10)');
      await waitFor('the subscriber to receive the first rows', async () => ((await count()) === 10 ? true : undefined));

      const backup = await cluster.cli(['backup', DB]);
      assert.equal(backup.status, 0, backup.stderr);
      // After the backup the real subscriber goes away for a while; in the copies it is still on.
      await sub.query('ALTER SUBSCRIPTION items_sub DISABLE');
      await waitFor('the slot to be released', async () => ((await pub.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [SLOT])).rows[0]!.active ? undefined : true));
      await pub.query('INSERT INTO items SELECT generate_series(11, 20)');
      await switchAndArchive(pub);
      const slotBefore = (await pub.query<{ lsn: string }>('SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [SLOT])).rows[0]!.lsn;
      const startsBefore = decodingStarts();

      const verified = await cluster.cli(['verify', 'latest', '--level', 'full', '--json']);
      assert.equal(verified.status, 0, verified.stdout + verified.stderr);
      const target = path.join(cluster.dir, 'promoted');
      const restored = await cluster.cli(['restore', 'latest', '--db', DB, '--to', target, '--immediate', '--start', '--target-action', 'promote', '--json']);
      assert.equal(restored.status, 0, restored.stderr);
      const reached = (JSON.parse(restored.stdout) as { reached: { state: string; subscriptions: string[] } }).reached;
      assert.equal(reached.state, 'promoted');
      assert.deepEqual(reached.subscriptions, ['sub.items_sub'], 'the report names the subscriptions the directory would start');
      const paused = await cluster.cli(['restore', 'latest', '--db', DB, '--to', path.join(cluster.dir, 'paused'), '--immediate', '--start']);
      assert.equal(paused.status, 0, paused.stderr);
      assert.match(paused.stdout, /enabled logical replication subscription\(s\) sub\.items_sub: started as a primary, it connects to their publishers.*max_logical_replication_workers=0/);

      assert.equal(existsSync(path.join(cluster.dir, 'recovery-end-ran')), false, 'no copy ran the primary\'s recovery_end_command');
      assert.equal(existsSync(path.join(cluster.dir, 'cleanup-ran')), false, 'no copy ran the primary\'s archive_cleanup_command');
      assert.equal(decodingStarts(), startsBefore, 'no copy started decoding from the subscription\'s slot on the primary');
      const slotAfter = (await pub.query<{ lsn: string }>('SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [SLOT])).rows[0]!.lsn;
      assert.equal(slotAfter, slotBefore, 'nothing was acknowledged on the slot while its subscriber was away');
      await sub.query('ALTER SUBSCRIPTION items_sub ENABLE');
      await waitFor('the subscriber to receive what was written while it was away', async () => ((await count()) === 20 ? true : undefined));
    } finally {
      await Promise.all([pub.end(), sub.end(), admin.end()]);
    }
  });
  it("a promoted --start runs none of the source's pg_cron jobs: the scheduler never starts in Strata's temporary servers (verify's and --tables' copies start the same way); a logical backup of pg_cron's database warns that it cannot be restored", async function () {
    if (!hasPgCron) skipOrFail(this, `pg_cron is not installed for ${BINDIR} (apt-get install postgresql-15-cron)`);
    const admin = await connect('postgres');
    try {
      await admin.query('CREATE EXTENSION IF NOT EXISTS pg_cron');
      await admin.query('CREATE TABLE IF NOT EXISTS cron_ticks (at timestamptz)');
      await admin.query("SELECT cron.schedule('tick', '* * * * *', 'INSERT INTO cron_ticks VALUES (now())')");
    } finally {
      await admin.end();
    }
    const started = 'pg_cron scheduler started';
    assert.match(readFileSync(serverLog(), 'utf8'), new RegExp(started), 'the primary runs the scheduler (so its absence below means something)');
    const backup = await cluster.cli(['backup', DB]);
    assert.equal(backup.status, 0, backup.stderr);
    const target = path.join(cluster.dir, 'promoted-cron');
    const restored = await cluster.cli(['restore', 'latest', '--db', DB, '--to', target, '--immediate', '--start', '--target-action', 'promote', '--json']);
    assert.equal(restored.status, 0, restored.stderr);
    assert.equal((JSON.parse(restored.stdout) as { reached: { state: string } }).reached.state, 'promoted');
    const copyLog = readFileSync(path.join(target, 'strata-recovery.log'), 'utf8');
    assert.match(copyLog, /database system is ready to accept connections/);
    assert.doesNotMatch(copyLog, new RegExp(started));
    // The copy keeps the other preloaded library and pg_cron's job list; only the scheduler is left out.
    const shown = runSync(path.join(BINDIR, 'postgres'), ['-D', target, '-C', 'shared_preload_libraries']);
    assert.equal(shown.out.trim(), 'pg_stat_statements, pg_cron', 'the restored directory keeps its configuration for when its owner starts it');
    rmSync(target, { recursive: true, force: true });
    // A logical backup of pg_cron's database says at once what its restore would find out.
    const url = `postgres://postgres@127.0.0.1:${cluster.port}/postgres`;
    const logical = await cluster.cli(['backup', url, '--name', 'cron_logical', '--json']);
    assert.equal(logical.status, 0, logical.stderr);
    assert.match(logical.stderr, /postgres holds the extension pg_cron.*cannot be restored or verified by Strata/);
    const id = (JSON.parse(logical.stdout) as { backup: { id: string } }).backup.id;
    const refused = await cluster.cli(['restore', id, '--to', `postgres://postgres@127.0.0.1:${cluster.port}/cron_copy`]);
    assert.notEqual(refused.status, 0, 'the warning was true: the restore fails');
    assert.match(refused.stderr, /pg_cron/);
    // Said once at the backup is not enough for an operator who watches health: it says so as long
    // as that backup is the newest good one.
    const health = await cluster.cli(['health', '--json']);
    assert.equal(health.status, 3, health.stderr);
    const checks = (JSON.parse(health.stdout) as { checks: { check: string; database: string | null; status: string; message: string }[] }).checks;
    const restorable = checks.filter((c) => c.check === 'restorable');
    assert.deepEqual(restorable.map((c) => [c.database, c.status]), [['cron_logical', 'unhealthy']], 'only the logical backup of the pg_cron database is reported, not the cluster backed up physically');
    assert.match(restorable[0]!.message, new RegExp(`cannot restore the newest good backup ${id}: it holds the extension pg_cron`));
  });
  it("a restored data directory archives nothing once started (a copy beside the original would push its new timeline into the original's archive); --archive-mode preserve keeps the original's archiving", async function () {
    const backup = await cluster.cli(['backup', DB]);
    assert.equal(backup.status, 0, backup.stderr);
    /** What the server would run with, read from the directory's configuration as PostgreSQL reads it. */
    const archiveMode = (dir: string): string => {
      const shown = runSync(path.join(BINDIR, 'postgres'), ['-D', dir, '-C', 'archive_mode']);
      assert.equal(shown.status, 0, shown.out);
      return shown.out.trim();
    };
    assert.equal(archiveMode(cluster.dataDir), 'on', 'the original archives');
    const copy = path.join(cluster.dir, 'copy-not-archiving');
    const restored = await cluster.cli(['restore', 'latest', '--db', DB, '--to', copy]);
    assert.equal(restored.status, 0, restored.stderr);
    assert.match(restored.stdout, new RegExp(`archiving is off in the restored cluster .*push its new timeline into ${DB}'s archive.*--archive-mode preserve`));
    assert.equal(archiveMode(copy), 'off');
    const replacement = path.join(cluster.dir, 'copy-archiving');
    const preserved = await cluster.cli(['restore', 'latest', '--db', DB, '--to', replacement, '--archive-mode', 'preserve', '--json']);
    assert.equal(preserved.status, 0, preserved.stderr);
    assert.equal((JSON.parse(preserved.stdout) as { archiveMode: string }).archiveMode, 'preserve');
    assert.equal(archiveMode(replacement), 'on');
    const wrong = await cluster.cli(['restore', 'latest', '--db', DB, '--to', path.join(cluster.dir, 'never'), '--archive-mode', 'on']);
    assert.equal(wrong.status, 2, wrong.stderr);
    assert.match(wrong.stderr, /--archive-mode takes off \(the default\) or preserve \(got "on"\)/);
    for (const dir of [copy, replacement]) rmSync(dir, { recursive: true, force: true });
  });
});
