// Benchmark: Strata full backup/restore of a SQLite database against the by-hand pipeline
//   backup:  sqlite3 DB ".backup SNAP" && zstd -3 -q -c SNAP | gpg --symmetric AES256 ... && sync OUT
//   restore: gpg --decrypt OUT | zstd -d > T && sync T
//
//   node bench/sqlite-full.mjs [--size-mb 1024] [--rounds 3] [--keep] [--profile]
//
// The database (deterministic, seeded) is built once and cached in bench/.data/. Runs alternate
// Strata and the by-hand pipeline (A B A B ...); medians are reported. Results are also written
// to bench/.data/results-<size>mb.json; when results for another size exist, the peak-RSS
// scaling target (same within 10%) is checked too. --profile instead runs one Strata backup and
// one restore under `node --cpu-prof` and prints the top self-time functions per thread.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DATA, ensureDatabase } from './lib/app-database.mjs';
import { summariseProfile } from './lib/profile.mjs';
import { CLI, benchWorkspace, disturbanceWarning, distFingerprint, fmtMB, fmtS, gitCommit, machineInfo, median, requireTools, run, sh, strataRunner } from './lib/measure.mjs';

const PASSPHRASE = 'strata-bench correct horse battery staple';

const { values: opts } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '3' },
    keep: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node bench/sqlite-full.mjs [--size-mb N (1024)] [--rounds N (3)] [--keep] [--profile]');
  process.exit(0);
}
const SIZE_MB = Number(opts['size-mb']);
const ROUNDS = Number(opts.rounds);
if (!(SIZE_MB >= 1) || !(ROUNDS >= 1)) throw new Error('--size-mb and --rounds must be positive numbers');
const strata = strataRunner(PASSPHRASE);

// ---------------------------------------------------------------------------------------------

async function main() {
  requireTools(['sqlite3', 'zstd', 'gpg', 'gpgconf']);
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);

  const { file: DB, meta, cached } = ensureDatabase(SIZE_MB);
  console.log(`database: ${DB} (${fmtMB(meta.bytes)}, ${cached ? 'cached' : `built in ${meta.buildSeconds} s`}; ` +
    `${Object.entries(meta.rows).map(([k, v]) => `${k} ${v}`).join(', ')}; blobs ${(100 * meta.blobBytes / meta.bytes).toFixed(0)}% of bytes)`);

  const workspace = benchWorkspace(path.join(DATA, `work-${SIZE_MB}mb`), PASSPHRASE);
  const { WORK, REPO, GNUPGHOME, PASSFILE } = workspace;
  const handEnv = { GNUPGHOME, PASSFILE, DB, SNAP: path.join(WORK, 'snap.db'), OUT: path.join(WORK, 'hand.db.zst.gpg'), T: path.join(WORK, 'hand-restored.db') };
  const strataTarget = path.join(WORK, 'strata-restored.db');

  try {
    // Warm the page cache so the first run is not the only one reading from disk.
    await run('sh', ['-c', `cat "$0" > /dev/null`, DB]);
    await strata(['init', '--repo', REPO, '--json']);

    if (opts.profile) return await profile(DB, REPO, WORK, strataTarget);

    const r = { strataBackup: [], handBackup: [], strataRestore: [], handRestore: [] };
    const dist = distFingerprint();
    for (let round = 1; round <= ROUNDS; round++) {
      // A: Strata backup
      const b = await strata(['backup', DB, '--repo', REPO, '--json']);
      const backup = JSON.parse(b.stdout).backup;
      r.strataBackup.push({ wallMs: b.wallMs, bytes: backup.storedBytes, rssKiB: b.rssKiB, cpuSec: b.cpuSec, otherCpu: b.otherCpu, id: backup.id });
      // B: by hand
      const h = await sh(`sqlite3 "$DB" ".backup '$SNAP'"
zstd -3 -q -c "$SNAP" | gpg --batch --yes --quiet --symmetric --cipher-algo AES256 --pinentry-mode loopback --passphrase-fd 3 -z 0 -o "$OUT" 3<"$PASSFILE"
sync "$OUT"`, handEnv);
      r.handBackup.push({ wallMs: h.wallMs, bytes: fs.statSync(handEnv.OUT).size, rssKiB: h.rssKiB, cpuSec: h.cpuSec, otherCpu: h.otherCpu });
      fs.rmSync(handEnv.SNAP, { force: true });
      // A: Strata restore
      fs.rmSync(strataTarget, { force: true });
      const sr = await strata(['restore', backup.id, '--repo', REPO, '--to', strataTarget, '--json']);
      r.strataRestore.push({ wallMs: sr.wallMs, bytes: fs.statSync(strataTarget).size, rssKiB: sr.rssKiB, cpuSec: sr.cpuSec, otherCpu: sr.otherCpu });
      // B: by hand
      fs.rmSync(handEnv.T, { force: true });
      const hr = await sh(`gpg --batch --quiet --pinentry-mode loopback --passphrase-fd 3 --decrypt "$OUT" 3<"$PASSFILE" | zstd -d -q -c > "$T"
sync "$T"`, handEnv);
      r.handRestore.push({ wallMs: hr.wallMs, bytes: fs.statSync(handEnv.T).size, rssKiB: hr.rssKiB, cpuSec: hr.cpuSec, otherCpu: hr.otherCpu });
      console.log(`round ${round}/${ROUNDS}: backup strata ${fmtS(b.wallMs)} / hand ${fmtS(h.wallMs)}; ` +
        `restore strata ${fmtS(sr.wallMs)} / hand ${fmtS(hr.wallMs)}; strata RSS backup ${fmtMB(b.rssKiB * 1024)}, restore ${fmtMB(sr.rssKiB * 1024)}; ` +
        `CPU s strata/hand backup ${b.cpuSec?.toFixed(1)}/${h.cpuSec?.toFixed(1)}, restore ${sr.cpuSec?.toFixed(1)}/${hr.cpuSec?.toFixed(1)}; ` +
        `other processes used ${[b, h, sr, hr].map((x) => x.otherCpu?.toFixed(1)).join('/')} CPU s`);
    }

    if (distFingerprint() !== dist) console.log('WARNING: packages/<pkg>/dist changed while the benchmark ran (someone rebuilt); the Strata runs used different builds');

    // Sanity: both restored files are sound databases with all the rows.
    for (const f of [strataTarget, handEnv.T]) {
      const check = spawnSync('sqlite3', [f, 'PRAGMA quick_check; SELECT count(*) FROM orders;'], { encoding: 'utf8' });
      const [ok, n] = check.stdout.trim().split('\n');
      if (ok !== 'ok' || Number(n) !== meta.rows.orders) throw new Error(`restored ${f} is not sound: ${check.stdout}${check.stderr}`);
    }

    report(r, meta, dist);
  } finally {
    workspace.close(opts.keep);
  }
}

function report(r, meta, dist) {
  const m = (xs, k) => median(xs.map((x) => x[k]));
  const med = Object.fromEntries(Object.entries(r).map(([k, xs]) => [k, {
    wallMs: m(xs, 'wallMs'), bytes: m(xs, 'bytes'), rssKiB: m(xs, 'rssKiB'), maxRssKiB: Math.max(...xs.map((x) => x.rssKiB)),
    cpuSec: m(xs, 'cpuSec'), otherCpuPerSec: Math.max(...xs.map((x) => x.otherCpu / (x.wallMs / 1000))),
  }]));
  const commit = gitCommit();
  const result = {
    date: new Date().toISOString(), commit, dist, sizeMb: SIZE_MB, rounds: ROUNDS, databaseBytes: meta.bytes,
    machine: machineInfo(),
    runs: r, medians: med,
  };
  fs.writeFileSync(path.join(DATA, `results-${SIZE_MB}mb.json`), JSON.stringify(result, null, 2) + '\n');

  const B = med.strataBackup, HB = med.handBackup, R = med.strataRestore, HR = med.handRestore;
  const rows = [
    ['backup wall time', fmtS(B.wallMs), fmtS(HB.wallMs), B.wallMs / HB.wallMs, '<= 0.80', B.wallMs / HB.wallMs <= 0.8, fmtMB(B.maxRssKiB * 1024)],
    ['backup size', fmtMB(B.bytes), fmtMB(HB.bytes), B.bytes / HB.bytes, '<= 1.05', B.bytes / HB.bytes <= 1.05, ''],
    ['restore wall time', fmtS(R.wallMs), fmtS(HR.wallMs), R.wallMs / HR.wallMs, '<= 1.50', R.wallMs / HR.wallMs <= 1.5, fmtMB(R.maxRssKiB * 1024)],
  ];
  const lines = [
    `${SIZE_MB} MiB database (${fmtMB(meta.bytes)}), ${ROUNDS} rounds, medians; Strata peak RSS is the largest of the rounds`,
    '',
    '| case | Strata | by hand | Strata / by hand | target | met | Strata peak RSS |',
    '| --- | ---: | ---: | ---: | --- | --- | ---: |',
    ...rows.map(([c, s, p, ratio, t, ok, rss]) => `| ${c} | ${s} | ${p} | ${ratio.toFixed(2)} | ${t} | ${ok ? 'yes' : 'NO'} | ${rss} |`),
    `| peak RSS backup | ${fmtMB(B.maxRssKiB * 1024)} | | | < 300 MB | ${B.maxRssKiB * 1024 < 300e6 ? 'yes' : 'NO'} | |`,
    `| peak RSS restore | ${fmtMB(R.maxRssKiB * 1024)} | | | < 300 MB | ${R.maxRssKiB * 1024 < 300e6 ? 'yes' : 'NO'} | |`,
  ];
  // Peak RSS should not grow with the database: compare with results for other sizes, if any.
  // (Only sizes of 1 GiB and up: small databases say little about how memory scales.)
  const others = SIZE_MB < 1024 ? [] : fs.readdirSync(DATA).filter((f) => /^results-\d+mb\.json$/.test(f) && f !== `results-${SIZE_MB}mb.json` && Number(f.match(/\d+/)[0]) >= 1024);
  for (const f of others) {
    const other = JSON.parse(fs.readFileSync(path.join(DATA, f), 'utf8'));
    for (const [k, label] of [['strataBackup', 'backup'], ['strataRestore', 'restore']]) {
      const a = other.medians[k].maxRssKiB, b = med[k].maxRssKiB;
      const change = Math.max(a, b) / Math.min(a, b) - 1;
      lines.push(`| peak RSS ${label}: ${other.sizeMb} MiB vs ${SIZE_MB} MiB | ${fmtMB(a * 1024)} vs ${fmtMB(b * 1024)} | | ${(b / a).toFixed(2)} | within 10% | ${change <= 0.1 ? 'yes' : 'NO'} | |`);
    }
  }
  lines.push('', `CPU time (user+system, median): backup Strata ${B.cpuSec.toFixed(1)} s, by hand ${HB.cpuSec.toFixed(1)} s; ` +
    `restore Strata ${R.cpuSec.toFixed(1)} s, by hand ${HR.cpuSec.toFixed(1)} s (commit ${commit})`);
  lines.push(`by-hand peak RSS (largest process in the pipeline): backup ${fmtMB(HB.maxRssKiB * 1024)}, restore ${fmtMB(HR.maxRssKiB * 1024)}`);
  lines.push(...disturbanceWarning(med));
  console.log('\n' + lines.join('\n'));
}

// --profile: one Strata backup and one restore under --cpu-prof; top self time per thread.
async function profile(DB, REPO, WORK, target) {
  for (const [name, args] of [['backup', ['backup', DB, '--repo', REPO, '--json']], ['restore', null]]) {
    const dir = path.join(WORK, `cpuprof-${name}`);
    let a = args;
    if (!a) {
      const list = JSON.parse((await strata(['list', '--repo', REPO, '--json'])).stdout);
      const id = (list.backups ?? list)[0].id;
      fs.rmSync(target, { force: true });
      a = ['restore', id, '--repo', REPO, '--to', target, '--json'];
    }
    const res = await strata(a, { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir] });
    console.log(`\n## ${name} under --cpu-prof: ${fmtS(res.wallMs)} wall, peak RSS ${fmtMB(res.rssKiB * 1024)}`);
    for (const f of fs.readdirSync(dir).sort()) summariseProfile(path.join(dir, f));
  }
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
