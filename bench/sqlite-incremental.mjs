// Benchmark: Strata incrementals of a SQLite database against restic, and against the physical floor
//
//   node bench/sqlite-incremental.mjs [--size-mb 1024] [--rounds 1] [--percent 1] [--patterns append,recent,scattered] [--keep] [--no-restore-check]
//
// For each change pattern, from a fresh copy of the cached benchmark database (bench/lib/app-database.mjs):
//   1. a Strata full backup into a new repository, and a restic initial backup of a
//      `sqlite3 DB ".backup SNAP"` snapshot into a new local restic repository;
//   2. the change, with better-sqlite3, then PRAGMA wal_checkpoint(TRUNCATE):
//        append     1% more rows: new orders with their items, events, customers and attachments
//        recent     1% of the rows of each table updated, the newest ones (highest ids)
//        scattered  1% of the rows of each table updated, chosen at random
//   3. timed: `strata backup DB --repo R --type incremental --json`, then
//      `sqlite3 DB ".backup SNAP" && restic backup SNAP` (same SNAP path, so restic uses the
//      initial snapshot as parent);
//   4. the floor: pages (page size from the header) of the second snapshot that differ from the
//      first or are new, concatenated and compressed with `zstd -3`;
//   5. (unless --no-restore-check) a restore of the incremental, compared page by page with the snapshot.
// Each pattern starts from its own copy, so patterns are independent; with --rounds N every
// pattern is measured N times (same change each time) and medians are reported. Results also go
// to bench/.data/results-incremental-<N>mb.json. Passphrases are random per run and reach Strata
// and restic through the environment only. restic is installed with apt-get when missing (as root).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DATA, appendOrders, betterSqlite3, ensureDatabase, prng } from './lib/app-database.mjs';
import { CLI, disturbanceWarning, distFingerprint, fmtMB, fmtS, gitCommit, machineInfo, median, requireTools, run, sh, strataRunner } from './lib/measure.mjs';

const PATTERNS = ['append', 'recent', 'scattered'];
const { values: opts } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '1' },
    percent: { type: 'string', default: '1' },
    patterns: { type: 'string', default: PATTERNS.join(',') },
    keep: { type: 'boolean', default: false },
    'no-restore-check': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node bench/sqlite-incremental.mjs [--size-mb N (1024)] [--rounds N (1)] [--percent P (1)] [--patterns append,recent,scattered] [--keep] [--no-restore-check]');
  process.exit(0);
}
const SIZE_MB = Number(opts['size-mb']);
const ROUNDS = Number(opts.rounds);
const PERCENT = Number(opts.percent);
const SELECTED = opts.patterns.split(',').map((p) => p.trim()).filter(Boolean);
if (!(SIZE_MB >= 1) || !(ROUNDS >= 1) || !(PERCENT > 0 && PERCENT <= 100)) throw new Error('--size-mb and --rounds must be positive numbers, --percent in (0, 100]');
for (const p of SELECTED) if (!PATTERNS.includes(p)) throw new Error(`--patterns: unknown pattern ${p} (known: ${PATTERNS.join(', ')})`);

// Temporary secrets for this run, passed through the environment only (never argv).
const STRATA_PASSPHRASE = randomBytes(24).toString('base64url');
const RESTIC_PASSWORD = randomBytes(24).toString('base64url');
const strata = strataRunner(STRATA_PASSPHRASE);

const TARGETS = { floor: 1.2, restic: 0.3, time: 1.0 };

// ---------------------------------------------------------------------------------------------
// Tools

function ensureRestic() {
  const have = () => spawnSync('sh', ['-c', 'command -v restic']).status === 0;
  if (have()) return;
  if (process.getuid?.() !== 0) throw new Error('restic is not installed: install it (Debian: sudo apt-get install -y restic) and run again');
  console.log('restic is not installed: apt-get install -y restic');
  const install = () => spawnSync('apt-get', ['install', '-y', '-q', 'restic'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0;
  if (!install()) {
    spawnSync('apt-get', ['update', '-q'], { stdio: 'inherit' });
    if (!install()) throw new Error('apt-get install restic failed');
  }
  if (!have()) throw new Error('restic is still not on the PATH after apt-get install');
}

const toolVersion = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return (r.stdout || r.stderr || '').trim().split('\n')[0];
};

/** Bytes under a folder (`du -sb`). */
const duBytes = (dir) => Number(spawnSync('du', ['-sb', dir], { encoding: 'utf8' }).stdout.split(/\s/)[0]);

/** restic's `--json` output: the summary message (the last line with message_type "summary"). */
function resticSummary(stdout) {
  let summary;
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    try { const m = JSON.parse(line); if (m.message_type === 'summary') summary = m; } catch { /* status line */ }
  }
  if (!summary) throw new Error(`restic backup --json printed no summary:\n${stdout.slice(-2000)}`);
  return summary;
}

// ---------------------------------------------------------------------------------------------
// The changes

/** Distinct ids: the `n` highest of 1..max (recent), or `n` drawn at random (scattered). */
function pickIds(max, n, pattern, rnd) {
  if (pattern === 'recent') return Array.from({ length: n }, (_, i) => max - n + 1 + i);
  const ids = new Set();
  while (ids.size < n) ids.add(1 + Math.floor(rnd() * max));
  return [...ids].sort((a, b) => a - b);
}

/**
 * Applies a pattern to the database file (one transaction), then checkpoints the WAL into it.
 * Returns rows changed per table.
 */
function applyChange(file, pattern) {
  const Database = betterSqlite3();
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    const counts = {};
    if (pattern === 'append') {
      const orders = db.prepare('SELECT count(*) AS n FROM orders').get().n;
      Object.assign(counts, appendOrders(db, Math.round(orders * PERCENT / 100), { seed: 20261122 }));
    } else {
      const rnd = prng(pattern === 'scattered' ? 4242 : 4243);
      const last = db.prepare('SELECT max(created_at) AS t FROM orders').get().t;
      const now = new Date(Date.parse(last) + 86400_000).toISOString(); // a day after the newest order
      const cities = ['Berlin', 'Paris', 'Austin', 'Leeds', 'Utrecht', 'Valencia', 'Torino', 'Kraków'];
      // What an application would change: customers' preferences, order statuses (the status index
      // moves), item quantities, an acknowledgement in event payloads, attachment names (same length,
      // so SQLite overwrites the record in place and leaves the blob's overflow pages alone).
      const updates = {
        customers: [db.prepare('UPDATE customers SET marketing_opt_in = 1 - marketing_opt_in, city = ? WHERE id = ?'), (id) => [cities[id % cities.length], id]],
        orders: [db.prepare(`UPDATE orders SET status = CASE status WHEN 'pending' THEN 'paid' WHEN 'paid' THEN 'shipped' WHEN 'shipped' THEN 'delivered'
          WHEN 'delivered' THEN 'refunded' ELSE 'pending' END, updated_at = ? WHERE id = ?`), (id) => [now, id]],
        order_items: [db.prepare('UPDATE order_items SET quantity = quantity + 1, discount = 0.1 WHERE id = ?'), (id) => [id]],
        events: [db.prepare("UPDATE events SET payload = json_set(payload, '$.ack', ?) WHERE id = ?"), (id) => [now, id]],
        attachments: [db.prepare('UPDATE attachments SET filename = upper(filename) WHERE id = ?'), (id) => [id]],
      };
      db.transaction(() => {
        for (const [table, [stmt, args]] of Object.entries(updates)) {
          const max = db.prepare(`SELECT max(rowid) AS m FROM ${table}`).get().m;
          const ids = pickIds(max, Math.round(max * PERCENT / 100), pattern, rnd);
          let changed = 0;
          for (const id of ids) changed += stmt.run(...args(id)).changes;
          counts[table] = changed;
        }
      })();
    }
    const [cp] = db.pragma('wal_checkpoint(TRUNCATE)');
    if (cp.busy) throw new Error('wal_checkpoint(TRUNCATE) could not complete');
    return counts;
  } finally {
    db.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Page comparison

/** The page size from a SQLite file header (offset 16, big-endian; 1 means 65536). */
function pageSizeOf(file) {
  const fd = fs.openSync(file, 'r');
  try {
    const h = Buffer.alloc(100);
    fs.readSync(fd, h, 0, 100, 0);
    if (h.toString('latin1', 0, 16) !== 'SQLite format 3\0') throw new Error(`${file} is not a SQLite database`);
    const v = h.readUInt16BE(16);
    return v === 1 ? 65536 : v;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Compares `after` with `before` page by page. Calls onPage(buffer) for each page of `after` that
 * differs or is new (the buffer is reused: copy or consume it before returning). Returns counts.
 */
async function comparePages(before, after, pageSize, onPage = async () => {}) {
  const BLOCK = 16 * 1024 * 1024;
  const fa = fs.openSync(before, 'r'), fb = fs.openSync(after, 'r');
  const a = Buffer.alloc(BLOCK), b = Buffer.alloc(BLOCK);
  const pagesBefore = Math.ceil(fs.fstatSync(fa).size / pageSize), pagesAfter = Math.ceil(fs.fstatSync(fb).size / pageSize);
  let changed = 0, added = 0, changedPageNumbers = [];
  try {
    for (let pos = 0; ; pos += BLOCK) {
      const nb = fs.readSync(fb, b, 0, BLOCK, pos);
      if (nb === 0) break;
      const na = fs.readSync(fa, a, 0, BLOCK, pos);
      for (let off = 0; off < nb; off += pageSize) {
        const end = Math.min(off + pageSize, nb);
        const page = b.subarray(off, end);
        if (off >= na) { added++; await onPage(page); continue; }
        if (a.compare(b, off, end, off, Math.min(off + pageSize, na)) !== 0) {
          changed++;
          if (changedPageNumbers.length < 16) changedPageNumbers.push((pos + off) / pageSize + 1);
          await onPage(page);
        }
      }
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
  return { pagesBefore, pagesAfter, changed, added, firstChanged: changedPageNumbers };
}

/** The physical floor: pages of `after` that differ from `before` or are new, concatenated and compressed with `zstd -3`. */
async function floor(before, after) {
  const pageSize = pageSizeOf(after);
  const started = performance.now();
  const zstd = spawn('zstd', ['-3', '-q', '-c'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let compressed = 0;
  zstd.stdout.on('data', (d) => (compressed += d.length));
  const exited = new Promise((resolve, reject) => {
    zstd.on('error', reject);
    zstd.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`zstd exited with ${code}`))));
  });
  const counts = await comparePages(before, after, pageSize, async (page) => {
    if (!zstd.stdin.write(Buffer.from(page))) await new Promise((r) => zstd.stdin.once('drain', r));
  });
  zstd.stdin.end();
  await exited;
  const pages = counts.changed + counts.added;
  return { pageSize, ...counts, pages, rawBytes: pages * pageSize, floorBytes: compressed, fraction: pages / counts.pagesAfter, seconds: (performance.now() - started) / 1000 };
}

// ---------------------------------------------------------------------------------------------

async function measurePattern(pattern, round, DB_BASE, WORK_ROOT) {
  const work = path.join(WORK_ROOT, `${pattern}-${round}`);
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const DB = path.join(work, 'app.db');
  const SNAP = path.join(work, 'snap', 'app.db'); // the same path in both restic backups
  const BASE_SNAP = path.join(work, 'base-snap.db');
  const REPO = path.join(work, 'strata-repo');
  const RREPO = path.join(work, 'restic-repo');
  fs.mkdirSync(path.dirname(SNAP));
  const resticEnv = { RESTIC_REPOSITORY: RREPO, RESTIC_PASSWORD, RESTIC_CACHE_DIR: path.join(work, 'restic-cache'), DB, SNAP };
  const r = { pattern, round };
  const log = (s) => console.log(`  [${pattern} ${round}] ${s}`);

  try {
    fs.copyFileSync(DB_BASE, DB);
    await run('sync', []);

    // Initial backups (recorded, not compared).
    await strata(['init', '--repo', REPO, '--json']);
    const full = await strata(['backup', DB, '--repo', REPO, '--json']);
    const fullRec = JSON.parse(full.stdout).backup;
    r.strataFull = { wallMs: full.wallMs, storedBytes: fullRec.storedBytes, rssKiB: full.rssKiB, cpuSec: full.cpuSec, id: fullRec.id };
    await sh('restic init --quiet', resticEnv);
    const rSnap0 = await sh(`sqlite3 "$DB" ".backup '$SNAP'"`, resticEnv);
    const rFull = await sh('restic backup --json "$SNAP"', resticEnv);
    const rFullSum = resticSummary(rFull.stdout);
    r.resticFull = {
      wallMs: rSnap0.wallMs + rFull.wallMs, snapshotMs: rSnap0.wallMs, resticMs: rFull.wallMs, repoBytes: duBytes(RREPO),
      dataAdded: rFullSum.data_added, dataAddedPacked: rFullSum.data_added_packed, rssKiB: Math.max(rSnap0.rssKiB, rFull.rssKiB), cpuSec: rSnap0.cpuSec + rFull.cpuSec,
    };
    fs.renameSync(SNAP, BASE_SNAP);
    log(`full: strata ${fmtS(full.wallMs)} ${fmtMB(fullRec.storedBytes)}; restic ${fmtS(r.resticFull.wallMs)} repo ${fmtMB(r.resticFull.repoBytes)}`);

    // The change.
    const changeStarted = performance.now();
    r.rowsChanged = applyChange(DB, pattern);
    r.changeMs = performance.now() - changeStarted;
    r.dbBytesAfter = fs.statSync(DB).size;
    await run('sync', []); // the change's writeback should not land in either side's timing
    log(`change: ${Object.entries(r.rowsChanged).map(([k, v]) => `${k} ${v}`).join(', ')} in ${fmtS(r.changeMs)}`);

    // Strata incremental.
    const strataBefore = duBytes(REPO);
    const inc = await strata(['backup', DB, '--repo', REPO, '--type', 'incremental', '--json']);
    const incRec = JSON.parse(inc.stdout).backup;
    if (incRec.type !== 'incremental' || incRec.parent !== fullRec.id) throw new Error(`expected an incremental on ${fullRec.id}, got ${incRec.type} on ${incRec.parent}`);
    r.strata = {
      wallMs: inc.wallMs, storedBytes: incRec.storedBytes, payloadBytes: incRec.payloadBytes, rawBytes: incRec.rawBytes,
      repoGrowth: duBytes(REPO) - strataBefore, rssKiB: inc.rssKiB, cpuSec: inc.cpuSec, otherCpu: inc.otherCpu, id: incRec.id,
    };
    await run('sync', []);

    // restic: snapshot, then backup of the snapshot.
    const resticBefore = duBytes(RREPO);
    const rSnap = await sh(`sqlite3 "$DB" ".backup '$SNAP'"`, resticEnv);
    const rInc = await sh('restic backup --json "$SNAP"', resticEnv);
    const sum = resticSummary(rInc.stdout);
    r.restic = {
      wallMs: rSnap.wallMs + rInc.wallMs, snapshotMs: rSnap.wallMs, resticMs: rInc.wallMs, repoGrowth: duBytes(RREPO) - resticBefore,
      dataAdded: sum.data_added, dataAddedPacked: sum.data_added_packed, filesNew: sum.files_new, filesChanged: sum.files_changed,
      rssKiB: Math.max(rSnap.rssKiB, rInc.rssKiB), cpuSec: rSnap.cpuSec + rInc.cpuSec, otherCpu: rSnap.otherCpu + rInc.otherCpu,
    };
    // restic's added bytes: data_added_packed when this restic reports it (0.17+), else the
    // repository's growth on disk (restic 0.14's data_added counts bytes before compression).
    r.restic.addedBytes = r.restic.dataAddedPacked ?? r.restic.repoGrowth;
    log(`incremental: strata ${fmtS(inc.wallMs)} ${fmtMB(incRec.storedBytes)} (payload ${fmtMB(incRec.payloadBytes)}); ` +
      `restic ${fmtS(r.restic.wallMs)} (snapshot ${fmtS(rSnap.wallMs)} + backup ${fmtS(rInc.wallMs)}) added ${fmtMB(r.restic.addedBytes)} (data_added ${fmtMB(sum.data_added)})`);

    // The floor.
    r.floor = await floor(BASE_SNAP, SNAP);
    log(`floor: ${r.floor.pages} of ${r.floor.pagesAfter} pages changed or new (${(100 * r.floor.fraction).toFixed(1)}%; ${r.floor.added} new), ` +
      `${fmtMB(r.floor.rawBytes)} raw, ${fmtMB(r.floor.floorBytes)} with zstd -3`);

    // Sanity: the incremental restores to the database it backed up.
    if (!opts['no-restore-check']) {
      const target = path.join(work, 'restored.db');
      const rest = await strata(['restore', incRec.id, '--repo', REPO, '--to', target, '--json']);
      const cmp = await comparePages(SNAP, target, pageSizeOf(SNAP));
      const pagesDiffering = cmp.changed + cmp.added + Math.max(0, cmp.pagesBefore - cmp.pagesAfter);
      r.restoreCheck = { wallMs: rest.wallMs, rssKiB: rest.rssKiB, pagesDiffering, firstDiffering: cmp.firstChanged };
      // Strata's snapshot and sqlite3's are both online-backup copies of the same database; only
      // page 1's header (change counter) may differ.
      const ok = pagesDiffering === 0 || (pagesDiffering === 1 && cmp.firstChanged[0] === 1);
      const check = spawnSync('sqlite3', [target, 'PRAGMA quick_check; SELECT count(*) FROM orders;'], { encoding: 'utf8' });
      const [qc, n] = check.stdout.trim().split('\n');
      const expected = spawnSync('sqlite3', [SNAP, 'SELECT count(*) FROM orders;'], { encoding: 'utf8' }).stdout.trim();
      if (!ok || qc !== 'ok' || n !== expected) throw new Error(`restore check failed for ${pattern}: ${pagesDiffering} pages differ from the sqlite3 snapshot (first ${cmp.firstChanged.join(', ')}), quick_check ${qc}, orders ${n} vs ${expected}`);
      log(`restore check: restored the incremental in ${fmtS(rest.wallMs)}; ${pagesDiffering} page(s) differ from the sqlite3 snapshot${pagesDiffering ? ' (page 1, header only)' : ''}; quick_check ok`);
    }
    return r;
  } finally {
    if (!opts.keep) fs.rmSync(work, { recursive: true, force: true });
  }
}

async function main() {
  requireTools(['sqlite3', 'zstd', 'du', 'sync']);
  ensureRestic();
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);

  const { file: DB_BASE, meta, cached } = ensureDatabase(SIZE_MB);
  console.log(`database: ${DB_BASE} (${fmtMB(meta.bytes)}, ${cached ? 'cached' : `built in ${meta.buildSeconds} s`}; ` +
    `${Object.entries(meta.rows).map(([k, v]) => `${k} ${v}`).join(', ')})`);
  const versions = {
    restic: toolVersion('restic', ['version']), sqlite3: toolVersion('sqlite3', ['--version']).split(' ').slice(0, 1).join(''), zstd: toolVersion('zstd', ['--version']),
  };
  console.log(`${versions.restic}; sqlite3 ${versions.sqlite3}; ${versions.zstd}`);

  const WORK_ROOT = path.join(DATA, `work-incremental-${SIZE_MB}mb`);
  fs.rmSync(WORK_ROOT, { recursive: true, force: true });
  fs.mkdirSync(WORK_ROOT, { recursive: true });
  const dist = distFingerprint();
  const runs = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const pattern of SELECTED) {
        console.log(`${pattern}, round ${round}/${ROUNDS}`);
        runs.push(await measurePattern(pattern, round, DB_BASE, WORK_ROOT));
      }
    }
  } finally {
    if (!opts.keep) fs.rmSync(WORK_ROOT, { recursive: true, force: true });
  }
  if (distFingerprint() !== dist) console.log('WARNING: packages/<pkg>/dist changed while the benchmark ran (someone rebuilt); the Strata runs used different builds');
  report(runs, meta, dist, versions);
}

function report(runs, meta, dist, versions) {
  const commit = gitCommit();
  const med = {};
  for (const pattern of SELECTED) {
    const rs = runs.filter((r) => r.pattern === pattern);
    const m = (f) => median(rs.map(f));
    med[pattern] = {
      rowsChanged: rs[0].rowsChanged,
      pages: m((r) => r.floor.pages), pagesAfter: m((r) => r.floor.pagesAfter), fraction: m((r) => r.floor.fraction), floorBytes: m((r) => r.floor.floorBytes), floorRawBytes: m((r) => r.floor.rawBytes),
      strataBytes: m((r) => r.strata.storedBytes), strataPayload: m((r) => r.strata.payloadBytes), strataRepoGrowth: m((r) => r.strata.repoGrowth), strataMs: m((r) => r.strata.wallMs),
      strataRssKiB: Math.max(...rs.map((r) => r.strata.rssKiB)), strataCpu: m((r) => r.strata.cpuSec),
      resticBytes: m((r) => r.restic.addedBytes), resticDataAdded: m((r) => r.restic.dataAdded), resticMs: m((r) => r.restic.wallMs), resticSnapshotMs: m((r) => r.restic.snapshotMs),
      resticCpu: m((r) => r.restic.cpuSec), resticRssKiB: Math.max(...rs.map((r) => r.restic.rssKiB)),
      strataFullBytes: m((r) => r.strataFull.storedBytes), strataFullMs: m((r) => r.strataFull.wallMs), resticFullBytes: m((r) => r.resticFull.repoBytes), resticFullMs: m((r) => r.resticFull.wallMs),
      otherCpuPerSec: Math.max(...rs.flatMap((r) => [r.strata.otherCpu / (r.strata.wallMs / 1000), r.restic.otherCpu / (r.restic.wallMs / 1000)])),
    };
  }
  const result = {
    date: new Date().toISOString(), commit, dist, sizeMb: SIZE_MB, rounds: ROUNDS, percent: PERCENT, databaseBytes: meta.bytes,
    machine: machineInfo(), versions, targets: TARGETS, runs, medians: med,
  };
  fs.writeFileSync(path.join(DATA, `results-incremental-${SIZE_MB}mb.json`), JSON.stringify(result, null, 2) + '\n');

  const yes = (ok) => (ok ? 'yes' : 'NO');
  const lines = [
    `${SIZE_MB} MiB database (${fmtMB(meta.bytes)}), ${PERCENT}% of rows per pattern, ${ROUNDS} round(s), medians (commit ${commit}, ${versions.restic.split(' compiled')[0]})`,
    '',
    '| pattern | pages changed | floor (zstd -3) | Strata stored | Strata / floor | restic added | Strata / restic | Strata time | restic time | Strata / restic time |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const [p, x] of Object.entries(med)) {
    lines.push(`| ${p} | ${x.pages} (${(100 * x.fraction).toFixed(1)}%) | ${fmtMB(x.floorBytes)} | ${fmtMB(x.strataBytes)} | ${(x.strataBytes / x.floorBytes).toFixed(2)} | ` +
      `${fmtMB(x.resticBytes)} | ${(x.strataBytes / x.resticBytes).toFixed(2)} | ${fmtS(x.strataMs)} | ${fmtS(x.resticMs)} | ${(x.strataMs / x.resticMs).toFixed(2)} |`);
  }
  lines.push('', `| pattern | Strata / floor <= ${TARGETS.floor} | Strata / restic <= ${TARGETS.restic} | time <= restic's |`, '| --- | --- | --- | --- |');
  for (const [p, x] of Object.entries(med)) {
    lines.push(`| ${p} | ${yes(x.strataBytes <= TARGETS.floor * x.floorBytes)} (${(x.strataBytes / x.floorBytes).toFixed(2)}) | ` +
      `${yes(x.strataBytes <= TARGETS.restic * x.resticBytes)} (${(x.strataBytes / x.resticBytes).toFixed(2)}) | ${yes(x.strataMs <= TARGETS.time * x.resticMs)} (${(x.strataMs / x.resticMs).toFixed(2)}) |`);
  }
  lines.push('');
  for (const [p, x] of Object.entries(med)) {
    lines.push(`${p}: rows ${Object.entries(x.rowsChanged).map(([k, v]) => `${k} ${v}`).join(', ')}; changed pages raw ${fmtMB(x.floorRawBytes)}; ` +
      `Strata payload (raw changed pages stored) ${fmtMB(x.strataPayload)}, repository growth ${fmtMB(x.strataRepoGrowth)}, peak RSS ${fmtMB(x.strataRssKiB * 1024)}, CPU ${x.strataCpu.toFixed(1)} s; ` +
      `restic data_added ${fmtMB(x.resticDataAdded)}, snapshot ${fmtS(x.resticSnapshotMs)} of its time, CPU ${x.resticCpu.toFixed(1)} s, peak RSS ${fmtMB(x.resticRssKiB * 1024)}; ` +
      `full backups: Strata ${fmtS(x.strataFullMs)} ${fmtMB(x.strataFullBytes)}, restic ${fmtS(x.resticFullMs)} ${fmtMB(x.resticFullBytes)}`);
  }
  lines.push(...disturbanceWarning(med, 'a timed run'));
  console.log('\n' + lines.join('\n'));
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
