// Benchmark: Strata full backup/restore of a MySQL/MariaDB database against mysqldump and mysql
//   backups:  strata backup URL --repo R (encrypted, compat, zstd 3)
//             mysqldump --single-transaction DB | zstd -3 > OUT.sql.zst && sync OUT.sql.zst                       (the peer)
//             mysqldump --single-transaction DB | zstd -3 | gpg --symmetric --cipher-algo AES256 -z 0 ... -o OUT.gpg (reference: encrypted like Strata)
//             mysqldump --single-transaction DB > /dev/null                                                         (reference: the dump's ceiling)
//   restores: strata restore ID --repo R --to mysql://.../NEW   (creates NEW)
//             zstd -dc OUT.sql.zst | mysql NEW                   (NEW created just before, untimed)
//
//   node bench/mysql-full.mjs [--size-mb 480] [--rounds 3] [--rebuild] [--keep] [--profile] [--server mysql://root@127.0.0.1:3306]
//
// The database (deterministic, seeded; bench/lib/mysql-app-database.mjs) is built once into
// `strata_bench_app` and reused while its marker table matches. Each round runs every case once,
// Strata and the peer alternating; medians are reported. Results go to
// bench/.data/results-mysql-<size>mb.json. --profile instead runs one Strata backup and one
// restore under `node --cpu-prof` and prints the top self-time functions per thread, and how much
// CPU the server used meanwhile. mysqldump, mysql (Debian: mariadb-client) and zstd are installed
// with apt-get when missing and running as root.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DATA } from './lib/app-database.mjs';
import { startCpuSampler, waitQuiet } from './lib/cpu-sampler.mjs';
import { CLI, benchWorkspace, cpuLines, disturbanceWarning, distFingerprint, ensureDebianTools, fmtMB, fmtS, gitCommit, machineInfo, median, sh, strataRunner } from './lib/measure.mjs';
import { APP_DB, connect, ensureMysqlDatabase, ident } from './lib/mysql-app-database.mjs';
import { profileBackupRestore } from './lib/profile.mjs';

const PASSPHRASE = 'strata-bench correct horse battery staple';
/** Databases the benchmark restores into; anything named like this is dropped before and after. */
const RESTORE_PREFIX = 'strata_bench_restore';
const STRATA_TARGET = `${RESTORE_PREFIX}_strata`;
const MYSQL_TARGET = `${RESTORE_PREFIX}_mysql`;
const TARGET = 1.0;

const { values: opts } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '480' },
    rounds: { type: 'string', default: '3' },
    rebuild: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    server: { type: 'string', default: 'mysql://root@127.0.0.1:3306' },
    'quiet-wait': { type: 'string', default: '180' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node bench/mysql-full.mjs [--size-mb N (480, about 500 MB)] [--rounds N (3)] [--rebuild] [--keep] [--profile] [--server mysql://USER@HOST:PORT] [--quiet-wait SECONDS (180)]\n' +
    'Before each run it waits (up to --quiet-wait seconds, 0: not at all) until other processes, the server included, use under 0.2 cores over 2 s.\n' +
    'A password, if the server needs one, goes in MYSQL_PWD, never in --server.');
  process.exit(0);
}
const SIZE_MB = Number(opts['size-mb']);
const ROUNDS = Number(opts.rounds);
if (!(SIZE_MB >= 16) || !(ROUNDS >= 1)) throw new Error('--size-mb must be at least 16 and --rounds at least 1');
const serverUrl = new URL(opts.server);
if (serverUrl.password) throw new Error('put the password in MYSQL_PWD, not in --server (it would show in the process list)');
const SERVER = {
  host: serverUrl.hostname || '127.0.0.1', port: Number(serverUrl.port || 3306), user: decodeURIComponent(serverUrl.username || 'root'),
  ...(process.env.MYSQL_PWD ? { password: process.env.MYSQL_PWD } : {}),
};
const urlOf = (db) => `mysql://${encodeURIComponent(SERVER.user)}@${SERVER.host}:${SERVER.port}/${db}`;
/** Connection options of mysqldump and mysql (MYSQL_PWD, if set, is inherited). */
const CLIENT_ARGS = `--host=${SERVER.host} --port=${SERVER.port} --user=${SERVER.user} --protocol=TCP`;
const strataRaw = strataRunner(PASSPHRASE);

// ---------------------------------------------------------------------------------------------
// Running, with the server's CPU counted

/** MariaDB and MySQL are one process: all of its CPU counts as the server's, whoever it works for. */
const SERVER_PROCESS = /^(mariadbd|mysqld)$/;

/** Runs `fn` (which runs one measured child) and adds where the machine's CPU went meanwhile. */
async function measured(fn) {
  const sampler = startCpuSampler({ serverProcess: SERVER_PROCESS });
  let res;
  try {
    res = await fn();
  } finally {
    const cpu = sampler.stop();
    if (res) res.cpu = cpu;
  }
  return res;
}
const strata = (args, extra) => measured(() => strataRaw(args, extra));
const shm = (script, env) => measured(() => sh(script, env));

async function withAdmin(fn) {
  const admin = await connect(SERVER);
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}

/** Drops every database the benchmark restores into (and Strata's half-built work databases for them). */
async function dropRestored() {
  await withAdmin(async (admin) => {
    const [rows] = await admin.query('SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?', [`${RESTORE_PREFIX}%`]);
    for (const { name } of rows) await admin.query(`DROP DATABASE ${ident(name)}`);
  });
}

/** Between runs: no restored database left, the page cache's dirty pages flushed, the machine (and the server's page cleaner) quiet. */
async function settle() {
  await dropRestored();
  spawnSync('sync');
  waited += await waitQuiet({ limitSeconds: Number(opts['quiet-wait']), serverProcess: SERVER_PROCESS });
}
let waited = 0;

/** What must be equal after a restore: the tables, their definitions (without AUTO_INCREMENT counters), row counts and CHECKSUM TABLE. */
async function fingerprint(db) {
  return withAdmin(async (c) => {
    const [tables] = await c.query("SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1", [db]);
    const out = {};
    for (const { name } of tables) {
      const [[create]] = await c.query(`SHOW CREATE TABLE ${ident(db)}.${ident(name)}`);
      const [[count]] = await c.query(`SELECT COUNT(*) AS n FROM ${ident(db)}.${ident(name)}`);
      const [[sum]] = await c.query(`CHECKSUM TABLE ${ident(db)}.${ident(name)}`);
      out[name] = `${count.n} rows, checksum ${sum.Checksum}, ${create['Create Table'].replace(/ AUTO_INCREMENT=\d+/, '')}`;
    }
    return out;
  });
}

function sameAs(expected, actual, what) {
  const diffs = [];
  for (const t of new Set([...Object.keys(expected), ...Object.keys(actual)])) {
    if (actual[t] !== expected[t]) diffs.push(`${t}: ${actual[t] ?? 'missing'}\n    (expected ${expected[t] ?? 'no such table'})`);
  }
  if (diffs.length) throw new Error(`${what} differs from the source:\n  ${diffs.join('\n  ')}`);
}

const version = (cmd) => spawnSync(cmd, ['--version'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];

// ---------------------------------------------------------------------------------------------

async function main() {
  ensureDebianTools({ mysqldump: 'mariadb-client', mysql: 'mariadb-client', zstd: 'zstd', gpg: 'gnupg', gpgconf: 'gnupg', '/usr/bin/time': 'time' });
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);

  const started = performance.now();
  const { meta, cached } = await ensureMysqlDatabase({ server: SERVER, sizeMb: SIZE_MB, rebuild: opts.rebuild });
  const DB = APP_DB;
  const serverVersion = await withAdmin(async (c) => (await c.query('SELECT VERSION() AS v'))[0][0].v);
  console.log(`database: ${DB} on ${serverVersion} (${fmtMB(meta.bytes)}: tables ${fmtMB(meta.tableBytes)}, indexes ${fmtMB(meta.indexBytes)}; ` +
    `${cached ? 'cached' : `built in ${meta.buildSeconds} s`}; ${Object.entries(meta.rows).map(([k, v]) => `${k} ${v}`).join(', ')})`);

  const workspace = benchWorkspace(path.join(DATA, `work-mysql-${SIZE_MB}mb`), PASSPHRASE);
  const { WORK, REPO, GNUPGHOME, PASSFILE } = workspace;
  const env = { GNUPGHOME, PASSFILE, DB, DUMP: path.join(WORK, 'mysqldump.sql.zst'), OUT: path.join(WORK, 'hand.sql.zst.gpg'), TARGET: MYSQL_TARGET };

  try {
    await dropRestored();
    await strataRaw(['init', '--repo', REPO, '--json']);
    // Read the whole database once, so the first run does not pay for warming up alone.
    await sh(`mysqldump ${CLIENT_ARGS} --single-transaction "$DB" > /dev/null`, env);

    if (opts.profile) return await profile(DB, REPO, WORK);

    const source = await fingerprint(DB);
    const dist = distFingerprint();
    const r = { strataBackup: [], dumpZstd: [], handBackup: [], dumpToNull: [], strataRestore: [], mysqlRestore: [] };
    const rec = (k, res, extra = {}) => { r[k].push({ wallMs: res.wallMs, rssKiB: res.rssKiB, cpuSec: res.cpuSec, cpu: res.cpu, ...extra }); return res; };
    for (let round = 1; round <= ROUNDS; round++) {
      const last = round === ROUNDS;
      // Backups: Strata, mysqldump | zstd (the peer), then the references.
      await settle();
      const b = await strata(['backup', urlOf(DB), '--repo', REPO, '--json']);
      const backup = JSON.parse(b.stdout).backup;
      rec('strataBackup', b, { bytes: backup.storedBytes, id: backup.id });

      await settle();
      fs.rmSync(env.DUMP, { force: true });
      const d = rec('dumpZstd', await shm(`mysqldump ${CLIENT_ARGS} --single-transaction "$DB" | zstd -3 -q -c > "$DUMP"\nsync "$DUMP"`, env), { bytes: fs.statSync(env.DUMP).size });

      await settle();
      fs.rmSync(env.OUT, { force: true });
      const h = rec('handBackup', await shm(`mysqldump ${CLIENT_ARGS} --single-transaction "$DB" | zstd -3 -q -c | gpg --batch --yes --quiet --symmetric --cipher-algo AES256 -z 0 --pinentry-mode loopback --passphrase-fd 3 -o "$OUT" 3<"$PASSFILE"
sync "$OUT"`, env), { bytes: fs.statSync(env.OUT).size });

      await settle();
      const n = rec('dumpToNull', await shm(`mysqldump ${CLIENT_ARGS} --single-transaction "$DB" > /dev/null`, env));

      // Restores: Strata (of this round's backup), then mysql (of this round's dump).
      await settle();
      const sr = rec('strataRestore', await strata(['restore', backup.id, '--repo', REPO, '--to', urlOf(STRATA_TARGET), '--json']));
      if (last) sameAs(source, await fingerprint(STRATA_TARGET), `the database Strata restored (${STRATA_TARGET})`);

      await settle();
      await withAdmin((admin) => admin.query(`CREATE DATABASE ${ident(MYSQL_TARGET)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`));
      const mr = rec('mysqlRestore', await shm(`zstd -dc "$DUMP" | mysql ${CLIENT_ARGS} "$TARGET"`, env));
      if (last) sameAs(source, await fingerprint(MYSQL_TARGET), `the database mysql restored (${MYSQL_TARGET})`);
      await dropRestored();

      const srv = (x) => `${x.cpu.server.toFixed(1)}`;
      console.log(`round ${round}/${ROUNDS}: backup strata ${fmtS(b.wallMs)}, mysqldump | zstd ${fmtS(d.wallMs)}, | gpg ${fmtS(h.wallMs)}, to /dev/null ${fmtS(n.wallMs)}; ` +
        `restore strata ${fmtS(sr.wallMs)}, mysql ${fmtS(mr.wallMs)}; strata RSS backup ${fmtMB(b.rssKiB * 1024)}, restore ${fmtMB(sr.rssKiB * 1024)}; ` +
        `server CPU s ${[b, d, h, n, sr, mr].map(srv).join('/')}; other processes ${[b, d, h, n, sr, mr].map((x) => x.cpu.other.toFixed(1)).join('/')} CPU s`);
    }
    const rebuilt = distFingerprint() !== dist;
    if (rebuilt) console.log('WARNING: packages/<pkg>/dist changed while the benchmark ran (someone rebuilt); the Strata runs used different builds');
    console.log('checks: both databases restored in the last round equal the source (tables, definitions, row counts, CHECKSUM TABLE)');

    report(r, meta, { dist, rebuilt, minutes: (performance.now() - started) / 60000, waited, serverVersion });
  } finally {
    await dropRestored().catch((err) => console.error(`could not drop the restored databases: ${err.message}`));
    workspace.close(opts.keep);
  }
}

function report(r, meta, { dist, rebuilt, minutes, waited, serverVersion }) {
  const m = (xs, f) => median(xs.map(f));
  const med = Object.fromEntries(Object.entries(r).map(([k, xs]) => [k, {
    wallMs: m(xs, (x) => x.wallMs), bytes: xs[0].bytes === undefined ? undefined : m(xs, (x) => x.bytes),
    rssKiB: m(xs, (x) => x.rssKiB), maxRssKiB: Math.max(...xs.map((x) => x.rssKiB)),
    cpuSec: m(xs, (x) => x.cpuSec), serverCpu: m(xs, (x) => x.cpu.server), machineCpu: m(xs, (x) => x.cpu.total),
    otherCpuPerSec: Math.max(...xs.map((x) => x.cpu.other / (x.wallMs / 1000))),
  }]));
  // Same-round ratios (Strata / peer per round), and their median: what the target is checked against.
  const perRound = (a, b) => r[a].map((x, i) => x.wallMs / r[b][i].wallMs);
  const ratios = { backup: perRound('strataBackup', 'dumpZstd'), restore: perRound('strataRestore', 'mysqlRestore') };
  const commit = gitCommit();
  const result = {
    date: new Date().toISOString(), commit, dist, distRebuiltDuringRun: rebuilt, waitedForQuietSeconds: waited, sizeMb: SIZE_MB, rounds: ROUNDS, database: meta,
    machine: { ...machineInfo(), server: serverVersion, mysqldump: version('mysqldump'), zstd: version('zstd'), gpg: version('gpg') },
    runs: r, medians: med, ratios,
  };
  fs.writeFileSync(path.join(DATA, `results-mysql-${SIZE_MB}mb.json`), JSON.stringify(result, null, 2) + '\n');

  const B = med.strataBackup, R = med.strataRestore;
  const row = (c, s, p, ratio, target, rssS, rssP) => {
    const ok = target === '' ? '' : ratio <= target ? 'yes' : 'NO';
    return `| ${c} | ${s} | ${p} | ${ratio.toFixed(2)} | ${target === '' ? '' : `<= ${target.toFixed(2)}`} | ${ok} | ${rssS} | ${rssP} |`;
  };
  const rss = (x) => fmtMB(x.maxRssKiB * 1024);
  const lines = [
    `${SIZE_MB} MiB database (data + indexes ${fmtMB(meta.bytes)}), ${ROUNDS} rounds, medians; the ratio is the median of the same-round ratios; peak RSS is the largest of the rounds (for a pipeline, its largest process)`,
    '',
    '| case | Strata | peer | Strata / peer | target | met | Strata peak RSS | peer peak RSS |',
    '| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |',
    row('backup wall time vs `mysqldump --single-transaction \\| zstd`', fmtS(B.wallMs), fmtS(med.dumpZstd.wallMs), median(ratios.backup), TARGET, rss(B), rss(med.dumpZstd)),
    row('backup wall time vs `mysqldump --single-transaction \\| zstd \\| gpg`', fmtS(B.wallMs), fmtS(med.handBackup.wallMs), median(perRound('strataBackup', 'handBackup')), '', rss(B), rss(med.handBackup)),
    row('backup wall time vs `mysqldump --single-transaction > /dev/null`', fmtS(B.wallMs), fmtS(med.dumpToNull.wallMs), median(perRound('strataBackup', 'dumpToNull')), '', rss(B), rss(med.dumpToNull)),
    row('backup size vs `mysqldump \\| zstd`', fmtMB(B.bytes), fmtMB(med.dumpZstd.bytes), B.bytes / med.dumpZstd.bytes, '', '', ''),
    row('restore wall time vs `zstd -dc \\| mysql`', fmtS(R.wallMs), fmtS(med.mysqlRestore.wallMs), median(ratios.restore), TARGET, rss(R), rss(med.mysqlRestore)),
    '',
    `same-round ratios: backup ${ratios.backup.map((x) => x.toFixed(2)).join(', ')}; restore ${ratios.restore.map((x) => x.toFixed(2)).join(', ')}`,
    'CPU seconds (median; the tool = the measured process tree, server = the MariaDB/MySQL process, machine = all CPUs busy):',
    ...cpuLines(med, [['Strata backup', 'strataBackup'], ['mysqldump | zstd', 'dumpZstd'], ['mysqldump | zstd | gpg', 'handBackup'], ['mysqldump > /dev/null', 'dumpToNull'], ['Strata restore', 'strataRestore'], ['zstd -dc | mysql', 'mysqlRestore']]),
    '',
    `commit ${commit}, dist ${dist}; ${minutes.toFixed(1)} min in all, ${waited.toFixed(0)} s of it waiting for a quiet machine (2 s at least before each run)`,
  ];
  lines.push(...disturbanceWarning(med));
  console.log('\n' + lines.join('\n'));
}

// --profile: one Strata backup and one restore under --cpu-prof; top self time per thread.
async function profile(DB, REPO, WORK) {
  await profileBackupRestore({
    strata,
    settle,
    work: WORK,
    backupArgs: ['backup', urlOf(DB), '--repo', REPO, '--json'],
    restoreArgs: (id) => ['restore', id, '--repo', REPO, '--to', urlOf(STRATA_TARGET), '--json'],
    fmtS,
    fmtMB,
  });
  await dropRestored();
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
