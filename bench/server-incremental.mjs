// Benchmark: a server engine's incremental after 1% of a table's rows, spread over the table, were updated
//
//   node bench/server-incremental.mjs [--engines postgres,mysql] [--rounds 3] [--percent 1] [--quiet-wait 60]
//        [--pg-size-mb 1430] [--mysql-size-mb 480] [--pg-server postgres://postgres@127.0.0.1:5432] [--mysql-server mysql://root@127.0.0.1:3306]
//
// Uses the cached benchmark databases of postgres-full.mjs and mysql-full.mjs (`strata_bench_app`,
// built when missing). Each round, on each engine, into one repository:
//   1. `strata backup URL --json` (a full);
//   2. UPDATE order_items SET quantity = quantity + 1 on the rows whose hashed id falls in this
//      round's 1% (spread over the whole table, different rows each round);
//   3. `strata backup URL --type incremental --json`, timed;
//   4. the update undone (quantity - 1), so the cached database is as it was.
// What is compared is Strata with itself: the incremental's stored bytes and wall time against the
// full's. order_items is the table with the most rows in both databases (short rows, a few hundred
// per 64 KiB chunk). Results go to bench/.data/results-server-incremental.json.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DATA } from './lib/app-database.mjs';
import { waitQuiet } from './lib/cpu-sampler.mjs';
import { CLI, benchWorkspace, fmtMB, fmtS, gitCommit, machineInfo, median, strataRunner } from './lib/measure.mjs';
import * as pgApp from './lib/pg-app-database.mjs';
import * as mysqlApp from './lib/mysql-app-database.mjs';

const PASSPHRASE = 'strata-bench correct horse battery staple';
const TABLE = 'order_items';

const { values: opts } = parseArgs({
  options: {
    engines: { type: 'string', default: 'postgres,mysql' },
    rounds: { type: 'string', default: '3' },
    percent: { type: 'string', default: '1' },
    'pg-size-mb': { type: 'string', default: '1430' },
    'mysql-size-mb': { type: 'string', default: '480' },
    'pg-server': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432' },
    'mysql-server': { type: 'string', default: 'mysql://root@127.0.0.1:3306' },
    'quiet-wait': { type: 'string', default: '60' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node bench/server-incremental.mjs [--engines postgres,mysql] [--rounds N (3)] [--percent P (1)] [--pg-size-mb N] [--mysql-size-mb N] [--pg-server URL] [--mysql-server URL] [--quiet-wait SECONDS (60)]\n' +
    'Passwords go in PGPASSWORD / MYSQL_PWD, never in the URLs.');
  process.exit(0);
}
const ROUNDS = Number(opts.rounds);
const PERCENT = Number(opts.percent);
if (!(ROUNDS >= 1) || !(PERCENT > 0 && PERCENT <= 50)) throw new Error('--rounds must be at least 1 and --percent in (0, 50]');
// Buckets of 0.01%: round r updates the rows whose hashed id lands in [r * width, (r + 1) * width).
const BUCKETS = 10000;
const WIDTH = Math.round(PERCENT * 100);
const strata = strataRunner(PASSPHRASE);

function serverOf(url, defaultPort, defaultUser, passwordVar) {
  const u = new URL(url);
  if (u.password) throw new Error(`put the password in ${passwordVar}, not in the URL (it would show in the process list)`);
  return { host: u.hostname || '127.0.0.1', port: Number(u.port || defaultPort), user: decodeURIComponent(u.username || defaultUser) };
}

/** Per engine: how to get the database, its URL for Strata, and the update of one round's rows (and its undo). */
const ENGINES = {
  postgres: () => {
    const server = serverOf(opts['pg-server'], 5432, 'postgres', 'PGPASSWORD');
    return {
      ensure: () => pgApp.ensurePgDatabase({ server, sizeMb: Number(opts['pg-size-mb']) }),
      url: `postgres://${encodeURIComponent(server.user)}@${server.host}:${server.port}/${pgApp.APP_DB}`,
      async update(round, delta) {
        const c = await pgApp.connect(server, pgApp.APP_DB);
        try {
          const res = await c.query(`UPDATE ${TABLE} SET quantity = quantity + $1 WHERE abs(hashint8(id)) % ${BUCKETS} >= $2 AND abs(hashint8(id)) % ${BUCKETS} < $3`,
            [delta, round * WIDTH, (round + 1) * WIDTH]);
          await c.query('CHECKPOINT');
          return { changed: res.rowCount, total: Number((await c.query(`SELECT count(*) AS n FROM ${TABLE}`)).rows[0].n) };
        } finally {
          await c.end();
        }
      },
    };
  },
  mysql: () => {
    const server = { ...serverOf(opts['mysql-server'], 3306, 'root', 'MYSQL_PWD'), ...(process.env.MYSQL_PWD ? { password: process.env.MYSQL_PWD } : {}) };
    return {
      ensure: () => mysqlApp.ensureMysqlDatabase({ server, sizeMb: Number(opts['mysql-size-mb']) }),
      url: `mysql://${encodeURIComponent(server.user)}@${server.host}:${server.port}/${mysqlApp.APP_DB}`,
      async update(round, delta) {
        const c = await mysqlApp.connect(server, mysqlApp.APP_DB);
        try {
          const [res] = await c.query(`UPDATE ${TABLE} SET quantity = quantity + ? WHERE CRC32(id) % ${BUCKETS} >= ? AND CRC32(id) % ${BUCKETS} < ?`,
            [delta, round * WIDTH, (round + 1) * WIDTH]);
          const [[{ n }]] = await c.query(`SELECT count(*) AS n FROM ${TABLE}`);
          return { changed: res.affectedRows, total: Number(n) };
        } finally {
          await c.end();
        }
      },
    };
  },
};

async function measureEngine(name) {
  const engine = ENGINES[name]();
  const { meta, cached } = await engine.ensure();
  console.log(`${name}: ${meta.bytes ? fmtMB(meta.bytes) : ''} database ${cached ? '(cached)' : `(built in ${meta.buildSeconds} s)`}`);
  const workspace = benchWorkspace(path.join(DATA, `work-server-incremental-${name}`), PASSPHRASE);
  const rounds = [];
  try {
    await strata(['init', '--repo', workspace.REPO, '--json']);
    for (let round = 0; round < ROUNDS; round++) {
      await waitQuiet({ limitSeconds: Number(opts['quiet-wait']) });
      const full = await strata(['backup', engine.url, '--repo', workspace.REPO, '--json']);
      const fullBackup = JSON.parse(full.stdout).backup;
      const { changed, total } = await engine.update(round, 1);
      let incr;
      try {
        await waitQuiet({ limitSeconds: Number(opts['quiet-wait']) });
        incr = await strata(['backup', engine.url, '--repo', workspace.REPO, '--type', 'incremental', '--json']);
      } finally {
        await engine.update(round, -1);
      }
      const incrBackup = JSON.parse(incr.stdout).backup;
      if (incrBackup.parent !== fullBackup.id) throw new Error(`round ${round + 1}: the incremental's parent is ${incrBackup.parent}, not this round's full ${fullBackup.id}`);
      const r = {
        changedRows: changed, tableRows: total,
        full: { wallMs: full.wallMs, cpuSec: full.cpuSec, rssKiB: full.rssKiB, storedBytes: fullBackup.storedBytes },
        incremental: { wallMs: incr.wallMs, cpuSec: incr.cpuSec, rssKiB: incr.rssKiB, storedBytes: incrBackup.storedBytes },
      };
      rounds.push(r);
      console.log(`${name} round ${round + 1}/${ROUNDS}: ${changed} of ${total} ${TABLE} rows updated (${(100 * changed / total).toFixed(2)}%); ` +
        `full ${fmtS(r.full.wallMs)} ${fmtMB(r.full.storedBytes)}, incremental ${fmtS(r.incremental.wallMs)} ${fmtMB(r.incremental.storedBytes)} ` +
        `(${(100 * r.incremental.storedBytes / r.full.storedBytes).toFixed(1)}% of the full's bytes, ${(100 * r.incremental.wallMs / r.full.wallMs).toFixed(0)}% of its time)`);
    }
  } finally {
    workspace.close(false);
  }
  const m = (f) => median(rounds.map(f));
  return {
    engine: name, database: meta, rounds,
    medians: {
      fullWallMs: m((r) => r.full.wallMs), incrementalWallMs: m((r) => r.incremental.wallMs),
      fullBytes: m((r) => r.full.storedBytes), incrementalBytes: m((r) => r.incremental.storedBytes),
      bytesRatio: m((r) => r.incremental.storedBytes / r.full.storedBytes), timeRatio: m((r) => r.incremental.wallMs / r.full.wallMs),
      fullCpuSec: m((r) => r.full.cpuSec), incrementalCpuSec: m((r) => r.incremental.cpuSec),
    },
  };
}

async function main() {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);
  const engines = opts.engines.split(',').map((s) => s.trim()).filter(Boolean);
  for (const e of engines) if (!ENGINES[e]) throw new Error(`unknown engine ${e} (postgres, mysql)`);
  const results = [];
  for (const e of engines) results.push(await measureEngine(e));
  const commit = gitCommit();
  fs.writeFileSync(path.join(DATA, 'results-server-incremental.json'), JSON.stringify({ date: new Date().toISOString(), commit, percent: PERCENT, machine: machineInfo(), results }, null, 2) + '\n');
  console.log(`\n${ROUNDS} rounds, medians; ${PERCENT}% of ${TABLE}'s rows updated, spread over the table (commit ${commit})\n`);
  console.log('| engine | full | incremental | incremental / full, bytes | incremental / full, time | target (bytes) | met |');
  console.log('| --- | ---: | ---: | ---: | ---: | --- | --- |');
  for (const { engine, medians: x } of results) {
    console.log(`| ${engine} | ${fmtS(x.fullWallMs)}, ${fmtMB(x.fullBytes)} | ${fmtS(x.incrementalWallMs)}, ${fmtMB(x.incrementalBytes)} | ${(100 * x.bytesRatio).toFixed(1)}% | ` +
      `${(100 * x.timeRatio).toFixed(0)}% | <= 10% | ${x.bytesRatio <= 0.1 ? 'yes' : 'NO'} |`);
  }
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
