// Benchmark: Strata full backup/restore of a PostgreSQL database against pg_dump and pg_restore
//   backups:  strata backup URL --repo R (encrypted, compat, zstd 3)
//             pg_dump -Fc -f OUT.dump DB && sync OUT.dump
//             pg_dump -Fc -Z0 DB | zstd -3 | gpg --symmetric --cipher-algo AES256 -z 0 ... -o OUT.gpg && sync OUT.gpg   (the by-hand pipeline)
//             pg_dump -Fc -Z0 DB > /dev/null                                                                         (the server's ceiling, reference)
//   restores: strata restore ID --repo R --to postgres://.../NEW   (creates NEW)
//             pg_restore -j 2 -d NEW OUT.dump                      (NEW created just before, untimed)
//
//   node bench/postgres-full.mjs [--size-mb 1430] [--rounds 3] [--rebuild] [--keep] [--profile] [--server postgres://postgres@127.0.0.1:5432]
//
// The database (deterministic, seeded; bench/lib/pg-app-database.mjs) is built once into
// `strata_bench_app` and reused while its marker table matches. Each round runs every case once,
// tools alternating; medians are reported. Results go to bench/.data/results-postgres-<size>mb.json.
// --profile instead runs one Strata backup and one restore under `node --cpu-prof` and prints the
// top self-time functions per thread, and how much CPU the server used meanwhile.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DATA } from './lib/app-database.mjs';
import { startCpuSampler, waitQuiet } from './lib/cpu-sampler.mjs';
import { CLI, benchWorkspace, cpuLines, disturbanceWarning, distFingerprint, fmtMB, fmtS, gitCommit, machineInfo, median, requireTools, sh, strataRunner } from './lib/measure.mjs';
import { APP_DB, connect, ensurePgDatabase } from './lib/pg-app-database.mjs';
import { profileBackupRestore } from './lib/profile.mjs';

const PASSPHRASE = 'strata-bench correct horse battery staple';
/** Databases the benchmark restores into; anything named like this is dropped before and after. */
const RESTORE_PREFIX = 'strata_bench_restore';
const STRATA_TARGET = `${RESTORE_PREFIX}_strata`;
const PG_RESTORE_TARGET = `${RESTORE_PREFIX}_pgrestore`;

const { values: opts } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1430' },
    rounds: { type: 'string', default: '3' },
    rebuild: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    server: { type: 'string', default: 'postgres://postgres@127.0.0.1:5432' },
    'quiet-wait': { type: 'string', default: '180' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node bench/postgres-full.mjs [--size-mb N (1430, about 1.5 GB)] [--rounds N (3)] [--rebuild] [--keep] [--profile] [--server postgres://USER@HOST:PORT] [--quiet-wait SECONDS (180)]\n' +
    'Before each run it waits (up to --quiet-wait seconds, 0: not at all) until other processes use under 0.2 cores over 2 s.\n' +
    'A password, if the server needs one, goes in PGPASSWORD, never in --server.');
  process.exit(0);
}
const SIZE_MB = Number(opts['size-mb']);
const ROUNDS = Number(opts.rounds);
if (!(SIZE_MB >= 16) || !(ROUNDS >= 1)) throw new Error('--size-mb must be at least 16 and --rounds at least 1');
const serverUrl = new URL(opts.server);
if (serverUrl.password) throw new Error('put the password in PGPASSWORD, not in --server (it would show in the process list)');
const SERVER = { host: serverUrl.hostname || '127.0.0.1', port: Number(serverUrl.port || 5432), user: decodeURIComponent(serverUrl.username || 'postgres') };
const urlOf = (db) => `postgres://${encodeURIComponent(SERVER.user)}@${SERVER.host}:${SERVER.port}/${db}`;
/** libpq's environment for pg_dump, pg_restore and psql (PGPASSWORD, if set, is inherited). */
const PGENV = { PGHOST: SERVER.host, PGPORT: String(SERVER.port), PGUSER: SERVER.user };
const strataRaw = strataRunner(PASSPHRASE);

// ---------------------------------------------------------------------------------------------
// Running, with the server's CPU counted

const SERVER_DBS = /strata_bench/;

/** Runs `fn` (which runs one measured child) and adds where the machine's CPU went meanwhile. */
async function measured(fn) {
  const sampler = startCpuSampler({ serverDb: SERVER_DBS });
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
const shm = (script, env) => measured(() => sh(script, { ...PGENV, ...env }));

async function withAdmin(fn) {
  const admin = await connect(SERVER, 'postgres', 'strata bench');
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}

/** Drops every database the benchmark restores into (and Strata's half-built work databases for them). */
async function dropRestored() {
  await withAdmin(async (admin) => {
    const names = (await admin.query('SELECT datname FROM pg_database WHERE starts_with(datname, $1)', [RESTORE_PREFIX])).rows.map((r) => r.datname);
    for (const n of names) await admin.query(`DROP DATABASE "${n}" WITH (FORCE)`);
  });
}

/** Between runs: no restored database left, dirty buffers written, the page cache's dirty pages flushed, the machine quiet. */
async function settle() {
  await dropRestored();
  await withAdmin((admin) => admin.query('CHECKPOINT'));
  spawnSync('sync');
  waited += await waitQuiet({ limitSeconds: Number(opts['quiet-wait']), serverDb: SERVER_DBS });
}
let waited = 0;

/** What must be equal after a restore: rows per table, a hash of every row of every table, indexes, constraints, sequences. */
async function fingerprint(db) {
  const c = await connect(SERVER, db, 'strata bench check');
  try {
    const tables = (await c.query(`SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1`)).rows.map((r) => r.relname);
    const out = { tables: {} };
    for (const t of tables) {
      // Row count and an order-independent sum of per-row hashes (md5 of the row's text form).
      const r = (await c.query(`SELECT count(*)::text AS n, coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)::text AS h FROM "${t}" t`)).rows[0];
      out.tables[t] = `${r.n} rows, ${r.h}`;
    }
    out.indexes = (await c.query(`SELECT string_agg(indexdef, '; ' ORDER BY indexname) AS s FROM pg_indexes WHERE schemaname = 'public'`)).rows[0].s;
    out.constraints = (await c.query(`SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname) AS s FROM pg_constraint WHERE connamespace = 'public'::regnamespace`)).rows[0].s;
    out.sequences = (await c.query(`SELECT string_agg(sequencename || '=' || last_value, ', ' ORDER BY sequencename) AS s FROM pg_sequences WHERE schemaname = 'public'`)).rows[0].s;
    return out;
  } finally {
    await c.end();
  }
}

function sameAs(expected, actual, what) {
  const diffs = [];
  for (const k of ['indexes', 'constraints', 'sequences']) if (expected[k] !== actual[k]) diffs.push(`${k}: ${actual[k]} (expected ${expected[k]})`);
  for (const [t, v] of Object.entries(expected.tables)) if (actual.tables[t] !== v) diffs.push(`${t}: ${actual.tables[t]} (expected ${v})`);
  if (diffs.length) throw new Error(`${what} differs from the source:\n  ${diffs.join('\n  ')}`);
}

const version = (cmd) => spawnSync(cmd, ['--version'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];

// ---------------------------------------------------------------------------------------------

async function main() {
  requireTools(['pg_dump', 'pg_restore', 'zstd', 'gpg', 'gpgconf']);
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);

  const started = performance.now();
  const { meta, cached } = await ensurePgDatabase({ server: SERVER, sizeMb: SIZE_MB, rebuild: opts.rebuild });
  const DB = APP_DB;
  console.log(`database: ${DB} (${fmtMB(meta.bytes)}: tables ${fmtMB(meta.tableBytes)}, indexes ${fmtMB(meta.indexBytes)}; ` +
    `${cached ? 'cached' : `built in ${meta.buildSeconds} s`}; ${Object.entries(meta.rows).map(([k, v]) => `${k} ${v}`).join(', ')})`);

  const workspace = benchWorkspace(path.join(DATA, `work-postgres-${SIZE_MB}mb`), PASSPHRASE);
  const { WORK, REPO, GNUPGHOME, PASSFILE } = workspace;
  const env = { GNUPGHOME, PASSFILE, DB, DUMP: path.join(WORK, 'pg_dump.dump'), OUT: path.join(WORK, 'hand.dump.zst.gpg'), PGR: PG_RESTORE_TARGET };

  try {
    await dropRestored();
    await strataRaw(['init', '--repo', REPO, '--json']);
    // Read the whole database once, so every run finds it in the page cache.
    await sh('pg_dump -Fc -Z0 "$DB" > /dev/null', { ...PGENV, DB });

    if (opts.profile) return await profile(DB, REPO, WORK);

    const source = await fingerprint(DB);
    const dist = distFingerprint();
    const r = { strataBackup: [], pgDump: [], handBackup: [], dumpToNull: [], strataRestore: [], pgRestore: [] };
    const rec = (k, res, extra = {}) => { r[k].push({ wallMs: res.wallMs, rssKiB: res.rssKiB, cpuSec: res.cpuSec, cpu: res.cpu, ...extra }); return res; };
    for (let round = 1; round <= ROUNDS; round++) {
      const last = round === ROUNDS;
      // Backups: Strata, pg_dump -Fc, the by-hand pipeline, and pg_dump to /dev/null.
      await settle();
      const b = await strata(['backup', urlOf(DB), '--repo', REPO, '--json']);
      const backup = JSON.parse(b.stdout).backup;
      rec('strataBackup', b, { bytes: backup.storedBytes, id: backup.id });

      await settle();
      fs.rmSync(env.DUMP, { force: true });
      const d = rec('pgDump', await shm('pg_dump -Fc -f "$DUMP" "$DB"\nsync "$DUMP"', env), { bytes: fs.statSync(env.DUMP).size });

      await settle();
      fs.rmSync(env.OUT, { force: true });
      const h = rec('handBackup', await shm(`pg_dump -Fc -Z0 "$DB" | zstd -3 -q -c | gpg --batch --yes --quiet --symmetric --cipher-algo AES256 -z 0 --pinentry-mode loopback --passphrase-fd 3 -o "$OUT" 3<"$PASSFILE"
sync "$OUT"`, env), { bytes: fs.statSync(env.OUT).size });

      await settle();
      const n = rec('dumpToNull', await shm('pg_dump -Fc -Z0 "$DB" > /dev/null', env));

      // Restores: Strata (of this round's backup), then pg_restore -j 2 (of this round's dump).
      await settle();
      const sr = rec('strataRestore', await strata(['restore', backup.id, '--repo', REPO, '--to', urlOf(STRATA_TARGET), '--json']));
      if (last) sameAs(source, await fingerprint(STRATA_TARGET), `the database Strata restored (${STRATA_TARGET})`);

      await settle();
      await withAdmin((admin) => admin.query(`CREATE DATABASE ${PG_RESTORE_TARGET} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`));
      const pr = rec('pgRestore', await shm('pg_restore -j 2 -d "$PGR" "$DUMP"', env));
      if (last) sameAs(source, await fingerprint(PG_RESTORE_TARGET), `the database pg_restore restored (${PG_RESTORE_TARGET})`);
      await dropRestored();

      const srv = (x) => `${x.cpu.server.toFixed(1)}`;
      console.log(`round ${round}/${ROUNDS}: backup strata ${fmtS(b.wallMs)}, pg_dump -Fc ${fmtS(d.wallMs)}, by hand ${fmtS(h.wallMs)}, to /dev/null ${fmtS(n.wallMs)}; ` +
        `restore strata ${fmtS(sr.wallMs)}, pg_restore -j 2 ${fmtS(pr.wallMs)}; strata RSS backup ${fmtMB(b.rssKiB * 1024)}, restore ${fmtMB(sr.rssKiB * 1024)}; ` +
        `server CPU s ${[b, d, h, n, sr, pr].map(srv).join('/')}; other processes ${[b, d, h, n, sr, pr].map((x) => x.cpu.other.toFixed(1)).join('/')} CPU s`);
    }
    const rebuilt = distFingerprint() !== dist;
    if (rebuilt) console.log('WARNING: packages/<pkg>/dist changed while the benchmark ran (someone rebuilt); the Strata runs used different builds');
    console.log('checks: both databases restored in the last round equal the source (rows and row hashes of every table, indexes, constraints, sequences)');

    report(r, meta, { dist, rebuilt, minutes: (performance.now() - started) / 60000, waited });
  } finally {
    await dropRestored().catch((err) => console.error(`could not drop the restored databases: ${err.message}`));
    workspace.close(opts.keep);
  }
}

function report(r, meta, { dist, rebuilt, minutes, waited }) {
  const m = (xs, f) => median(xs.map(f));
  const med = Object.fromEntries(Object.entries(r).map(([k, xs]) => [k, {
    wallMs: m(xs, (x) => x.wallMs), bytes: xs[0].bytes === undefined ? undefined : m(xs, (x) => x.bytes),
    rssKiB: m(xs, (x) => x.rssKiB), maxRssKiB: Math.max(...xs.map((x) => x.rssKiB)),
    cpuSec: m(xs, (x) => x.cpuSec), serverCpu: m(xs, (x) => x.cpu.server), machineCpu: m(xs, (x) => x.cpu.total),
    otherCpuPerSec: Math.max(...xs.map((x) => x.cpu.other / (x.wallMs / 1000))),
  }]));
  const commit = gitCommit();
  const result = {
    date: new Date().toISOString(), commit, dist, distRebuiltDuringRun: rebuilt, waitedForQuietSeconds: waited, sizeMb: SIZE_MB, rounds: ROUNDS, database: meta,
    machine: { ...machineInfo(), pgDump: version('pg_dump'), zstd: version('zstd'), gpg: version('gpg') },
    runs: r, medians: med,
  };
  fs.writeFileSync(path.join(DATA, `results-postgres-${SIZE_MB}mb.json`), JSON.stringify(result, null, 2) + '\n');

  const B = med.strataBackup, R = med.strataRestore;
  const row = (c, s, p, ratio, target, rssS, rssP) => {
    const ok = target === '' ? '' : ratio <= Number(target.replace('<= ', '')) ? 'yes' : 'NO';
    return `| ${c} | ${s} | ${p} | ${ratio.toFixed(2)} | ${target} | ${ok} | ${rssS} | ${rssP} |`;
  };
  const rss = (x) => fmtMB(x.maxRssKiB * 1024);
  const lines = [
    `${SIZE_MB} MiB database (pg_database_size ${fmtMB(meta.bytes)}), ${ROUNDS} rounds, medians; peak RSS is the largest of the rounds (for a pipeline, its largest process)`,
    '',
    '| case | Strata | peer | Strata / peer | target | met | Strata peak RSS | peer peak RSS |',
    '| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |',
    row('backup wall time vs `pg_dump -Fc -Z0 \\| zstd -3 \\| gpg`', fmtS(B.wallMs), fmtS(med.handBackup.wallMs), B.wallMs / med.handBackup.wallMs, '<= 1.00', rss(B), rss(med.handBackup)),
    row('backup wall time vs `pg_dump -Fc`', fmtS(B.wallMs), fmtS(med.pgDump.wallMs), B.wallMs / med.pgDump.wallMs, '', rss(B), rss(med.pgDump)),
    row('backup wall time vs `pg_dump -Fc -Z0 > /dev/null`', fmtS(B.wallMs), fmtS(med.dumpToNull.wallMs), B.wallMs / med.dumpToNull.wallMs, '', rss(B), rss(med.dumpToNull)),
    row('backup size vs the by-hand pipeline', fmtMB(B.bytes), fmtMB(med.handBackup.bytes), B.bytes / med.handBackup.bytes, '', '', ''),
    row('backup size vs `pg_dump -Fc`', fmtMB(B.bytes), fmtMB(med.pgDump.bytes), B.bytes / med.pgDump.bytes, '', '', ''),
    row('restore wall time vs `pg_restore -j 2`', fmtS(R.wallMs), fmtS(med.pgRestore.wallMs), R.wallMs / med.pgRestore.wallMs, '<= 1.00', rss(R), rss(med.pgRestore)),
    '',
    'CPU seconds (median; the tool = the measured process tree, server = PostgreSQL processes working for the benchmark, machine = all CPUs busy):',
    ...cpuLines(med, [['Strata backup', 'strataBackup'], ['pg_dump -Fc', 'pgDump'], ['by-hand pipeline', 'handBackup'], ['pg_dump -Fc -Z0 > /dev/null', 'dumpToNull'], ['Strata restore', 'strataRestore'], ['pg_restore -j 2', 'pgRestore']]),
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
