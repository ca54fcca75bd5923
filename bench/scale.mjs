// Benchmark: Strata's everyday commands on a repository with 10,000 backups (issue #8, case 7)
//   strata list --repo R                       (and --json)
//   strata prune --dry-run --repo R            (and --json; the default tiers: daily 7, weekly 8, monthly 12, pre-update 30d)
//   strata verify latest --db app --level quick --repo R   (the newest restore point of app and its chain)
//   strata --version                           (reference: starting node and loading the CLI)
//
//   node bench/scale.mjs [--backups 10000] [--databases 2] [--rounds 3] [--jobs 2] [--rebuild] [--profile] [--keep]
//
// The repository (bench/lib/scale-repository.mjs: real backups of small SQLite databases, one per
// database per hour over simulated dates, daily chains of full, differential and incrementals,
// encrypted like `strata init` makes them) is built once and cached in bench/.data/; each run
// works on a copy, so verify's catalog updates never change the cached one. Each round runs every
// command once, in a rotating order; medians are reported against the target (under 2 s each).
// Results go to bench/.data/results-scale-<N>x<D>.json. --profile instead runs each command once
// under `node --cpu-prof` and prints its top self-time functions.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DATA } from './lib/app-database.mjs';
import { CLI, disturbanceWarning, distFingerprint, fmtS, gitCommit, machineInfo, median, strataRunner } from './lib/measure.mjs';
import { summariseProfile } from './lib/profile.mjs';
import { ensureScaleRepository } from './lib/scale-repository.mjs';

const PASSPHRASE = 'strata-bench correct horse battery staple';
const TARGET_MS = 2000;

const { values: opts } = parseArgs({
  options: {
    backups: { type: 'string', default: '10000' },
    databases: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    jobs: { type: 'string', default: '2' },
    rebuild: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node bench/scale.mjs [--backups N (10000)] [--databases N (2)] [--rounds N (3)] [--jobs N (2, processes building the repository)] [--rebuild] [--profile] [--keep]');
  process.exit(0);
}
const BACKUPS = Number(opts.backups);
const DATABASES = Number(opts.databases);
const ROUNDS = Number(opts.rounds);
if (!(BACKUPS >= 24) || !(DATABASES >= 1 && DATABASES <= 8) || !(ROUNDS >= 1)) throw new Error('--backups must be at least 24, --databases 1 to 8, --rounds at least 1');
const strata = strataRunner(PASSPHRASE);

async function main() {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);
  const started = performance.now();
  const { repo: cachedRepo, meta, cached } = await ensureScaleRepository({ backups: BACKUPS, databases: DATABASES, jobs: Number(opts.jobs), passphrase: PASSPHRASE, rebuild: opts.rebuild });
  console.log(`repository: ${BACKUPS} backups of ${meta.databases.join(', ')} (${Object.entries(meta.types).map(([t, n]) => `${n} ${t}`).join(', ')}; ${meta.labelled} labelled pre-update), ` +
    `${meta.first} to ${meta.last}; catalog ${(meta.catalogBytes / 1e6).toFixed(1)} MB, journal ${(meta.journalBytes / 1e6).toFixed(1)} MB, ` +
    `${meta.files} files, ${(meta.storedBytes / 1e6).toFixed(1)} MB of artifacts; ${cached ? 'cached' : `built in ${meta.buildSeconds} s with ${meta.jobs} processes`}`);

  const WORK = path.join(DATA, `work-scale-${BACKUPS}x${DATABASES}`);
  fs.rmSync(WORK, { recursive: true, force: true });
  fs.mkdirSync(WORK, { recursive: true });
  const REPO = path.join(WORK, 'repo');
  fs.cpSync(cachedRepo, REPO, { recursive: true });
  const db = meta.databases[0];
  const CASES = [
    ['list', ['list', '--repo', REPO]],
    ['list --json', ['list', '--repo', REPO, '--json']],
    ['prune --dry-run', ['prune', '--dry-run', '--repo', REPO]],
    ['prune --dry-run --json', ['prune', '--dry-run', '--repo', REPO, '--json']],
    [`verify latest --db ${db} --level quick`, ['verify', 'latest', '--db', db, '--level', 'quick', '--repo', REPO]],
    ['--version (start-up)', ['--version']],
  ];
  // The commands run in the work folder, where no strata.config.json is found.
  const inWork = (args, extra = {}) => strata(args, { ...extra, cwd: WORK });

  try {
    if (opts.profile) return await profile(CASES, inWork, WORK);
    const dist = distFingerprint();
    const runs = Object.fromEntries(CASES.map(([name]) => [name, []]));
    const facts = {};
    for (let round = 1; round <= ROUNDS; round++) {
      // Rotate the order, so no command always runs right after the same other one.
      const order = CASES.map((_, i) => CASES[(i + round - 1) % CASES.length]);
      const line = [];
      for (const [name, args] of order) {
        const res = await inWork(args);
        runs[name].push({ wallMs: res.wallMs, rssKiB: res.rssKiB, cpuSec: res.cpuSec, otherCpu: res.otherCpu });
        line.push(`${name} ${fmtS(res.wallMs)}`);
        if (round === 1) facts[name] = summary(name, res.stdout);
      }
      console.log(`round ${round}/${ROUNDS}: ${line.join(', ')}`);
    }
    const rebuilt = distFingerprint() !== dist;
    if (rebuilt) console.log('WARNING: packages/<pkg>/dist changed while the benchmark ran (someone rebuilt); the runs used different builds');
    report(runs, facts, meta, { dist, rebuilt, minutes: (performance.now() - started) / 60000 });
  } finally {
    if (!opts.keep) fs.rmSync(WORK, { recursive: true, force: true });
  }
}

/** What a command's output says, to show it did the whole job (and to catch one that did not). */
function summary(name, stdout) {
  if (name === 'list --json') return `${JSON.parse(stdout).backups.length} backups listed`;
  if (name === 'list') return stdout.trim().split('\n').at(-1);
  if (name === 'prune --dry-run --json') { const p = JSON.parse(stdout); return `keep ${p.keep.length}, remove ${p.remove.length}`; }
  if (name === 'prune --dry-run') return stdout.trim().split('\n').at(-1);
  if (name.startsWith('verify')) return `chain of ${/(\d+) artifact\(s\) present/.exec(stdout)?.[1] ?? '?'} artifacts; ${stdout.trim().split('\n').at(-1)}`;
  return stdout.trim();
}

function report(runs, facts, meta, { dist, rebuilt, minutes }) {
  const med = Object.fromEntries(Object.entries(runs).map(([k, xs]) => [k, {
    wallMs: median(xs.map((x) => x.wallMs)), minMs: Math.min(...xs.map((x) => x.wallMs)), maxMs: Math.max(...xs.map((x) => x.wallMs)),
    cpuSec: median(xs.map((x) => x.cpuSec)), maxRssKiB: Math.max(...xs.map((x) => x.rssKiB)), otherCpuPerSec: Math.max(...xs.map((x) => (x.otherCpu ?? 0) / (x.wallMs / 1000))),
  }]));
  const commit = gitCommit();
  const result = { date: new Date().toISOString(), commit, dist, distRebuiltDuringRun: rebuilt, rounds: ROUNDS, repository: meta, machine: machineInfo(), runs, medians: med, facts };
  fs.writeFileSync(path.join(DATA, `results-scale-${BACKUPS}x${DATABASES}.json`), JSON.stringify(result, null, 2) + '\n');
  const lines = [
    `${BACKUPS} backups of ${meta.databases.length} database(s), ${ROUNDS} rounds, medians (min–max)`,
    '',
    '| command | wall time | min–max | CPU s | peak RSS | target | met | output |',
    '| --- | ---: | ---: | ---: | ---: | --- | --- | --- |',
    ...Object.entries(med).map(([name, m]) => {
      const reference = name.startsWith('--version');
      return `| \`strata ${name}\` | ${fmtS(m.wallMs)} | ${(m.minMs / 1000).toFixed(2)}–${(m.maxMs / 1000).toFixed(2)} | ${m.cpuSec.toFixed(2)} | ${(m.maxRssKiB / 1024).toFixed(0)} MiB | ` +
        `${reference ? '' : '< 2 s'} | ${reference ? '' : m.wallMs < TARGET_MS ? 'yes' : 'NO'} | ${facts[name]} |`;
    }),
    '',
    `commit ${commit}, dist ${dist}; ${minutes.toFixed(1)} min in all`,
  ];
  lines.push(...disturbanceWarning(med));
  console.log('\n' + lines.join('\n'));
}

// --profile: each command once under --cpu-prof; top self time of its main thread.
async function profile(cases, inWork, WORK) {
  for (const [name, args] of cases) {
    const dir = path.join(WORK, `cpuprof-${name.replace(/[^a-z]+/g, '-')}`);
    const res = await inWork(args, { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir] });
    console.log(`\n## strata ${name} under --cpu-prof: ${fmtS(res.wallMs)} wall, CPU ${res.cpuSec.toFixed(2)} s, peak RSS ${(res.rssKiB / 1024).toFixed(0)} MiB`);
    for (const f of fs.readdirSync(dir).sort()) summariseProfile(path.join(dir, f), 15);
  }
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
