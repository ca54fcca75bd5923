// The long reliability run (issue counts: 200 kills, 100 concurrency rounds, 1,000 corruptions).
//   npm run test:soak -- [--seed N] [--kills N] [--rounds N] [--mutations N] [--fuzz N] [--disk N]
//                        [--secrets N] [--syscall-spread N] [--s3-kills N] [--histories N]
//                        [--minutes N] [--kill-every S] [--restore-every S]
//                        [--only corruption,fuzz,disk,crash,concurrency,syscalls,keys,secrets,s3,chains,pitr]
// Builds the workspace first (npm run setup), writes results to test-output/soak-<seed>.json and
// exits 1 if any scenario saw a problem. The secrets sessions include PostgreSQL when the test
// server (STRATA_TEST_PG_URL) answers; otherwise they say so and run on SQLite alone.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    kills: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '100' },
    mutations: { type: 'string', default: '1000' },
    fuzz: { type: 'string', default: '5000' },
    disk: { type: 'string', default: '100' },
    secrets: { type: 'string', default: '10' },
    'syscall-spread': { type: 'string', default: '8' },
    's3-kills': { type: 'string', default: '50' },
    // pitr: minutes of writes, mean seconds between SIGKILLs of the replicator, seconds between restore checks.
    minutes: { type: 'string', default: '60' },
    'kill-every': { type: 'string', default: '120' },
    'restore-every': { type: 'string', default: '30' },
    histories: { type: 'string', default: '100' },
    only: { type: 'string' },
  },
});
const seed = Number(values.seed);
/** The commit the run measured, marked when the work tree had changes, so a result names its code. */
const gitCommit = () => {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).stdout.trim();
  return head ? `${head}${dirty ? ' (with uncommitted changes)' : ''}` : 'unknown';
};
const root = fileURLToPath(new URL('..', import.meta.url));
const scenarios = await import(path.join(root, '.build/test/reliability/scenarios.js'));
const { postgresReachable } = await import(path.join(root, '.build/test/helpers/postgres.js'));
const only = values.only ? new Set(values.only.split(',')) : undefined;
const base = mkdtempSync(path.join(tmpdir(), 'strata-soak-'));
const results = [];
const run = async (name, fn) => {
  if (only && !only.has(name)) return;
  const started = Date.now();
  process.stdout.write(`${name} ... `);
  const result = await fn(scenarios.workDir(base, name));
  results.push({ ...result, seconds: Math.round((Date.now() - started) / 1000) });
  process.stdout.write(`${result.runs} runs, ${result.detected} caught, ${result.problems.length} problem(s), ${Math.round((Date.now() - started) / 1000)} s\n`);
  for (const p of result.problems.slice(0, 20)) process.stdout.write(`    ${p}\n`);
};
console.log(`soak run, seed ${seed}, commit ${gitCommit()}`);
await run('corruption', (work) => scenarios.corruptionSweep({ seed, mutations: Number(values.mutations), work }));
await run('fuzz', () => scenarios.archiveFuzz({ seed, runs: Number(values.fuzz) }));
await run('disk', (work) => scenarios.fullDiskSweep({ seed, runs: Number(values.disk), work }));
await run('crash', (work) => scenarios.crashSweep({ seed, kills: Number(values.kills), work }));
await run('concurrency', (work) => scenarios.concurrencySweep({ seed, rounds: Number(values.rounds), work }));
const { syscallCrashSweep } = await import(path.join(root, '.build/test/reliability/syscall-sweep.js'));
// Every rename, unlink, link and fsync of backup, incremental, prune, delete, restore --force and
// import, and --syscall-spread points of their writes, each the moment of a SIGKILL (strace).
await run('syscalls', async (work) => {
  const result = syscallCrashSweep({ work, spread: Number(values['syscall-spread']) });
  process.stdout.write(`(${result.kills} kills; ${result.lostBackups} lost backups, ${result.missingTargets} missing targets, ${result.leftovers} leftovers) `);
  return result;
});
const { keyChangeSweep } = await import(path.join(root, '.build/test/reliability/key-change-sweep.js'));
// `strata key add`, `passwd` and `rotate`, each killed before every one of its writes to storage
// (npm test kills at 3 of them per action).
await run('keys', async (work) => {
  const result = keyChangeSweep({ work });
  process.stdout.write(`(writes per action: ${Object.entries(result.writes).map(([action, n]) => `${action} ${n}`).join(', ')}) `);
  return result;
});
const postgres = !only || only.has('secrets') ? await postgresReachable() : false;
if ((!only || only.has('secrets')) && !postgres) console.log('secrets: PostgreSQL is not reachable (STRATA_TEST_PG_URL); the sessions run on SQLite alone');
await run('secrets', (work) => scenarios.secretsSweep({ sessions: Number(values.secrets), work, postgres }));
// Backups and prunes of an s3:// repository, SIGKILLed at random moments (test/reliability/s3-sweep.ts).
// Needs the S3 test server (bash scripts/s3/start-s3.sh; its variables exported); without one it
// says so and is skipped, except under CI=true.
await run('s3', async (work) => {
  const { s3SweepWithServer } = await import(path.join(root, '.build/test/reliability/s3-sweep.js'));
  // One line per run on stderr: the sweep takes a while on a slow server.
  const result = await s3SweepWithServer({ seed, kills: Number(values['s3-kills']), work, log: (line) => process.stderr.write(`  s3: ${line}\n`) });
  if (result.skipped) {
    process.stdout.write(`skipped: ${result.skipped} `);
    return { scenario: 's3 crash (SIGKILL)', runs: 0, detected: 0, problems: process.env.CI ? [result.skipped] : [] };
  }
  process.stdout.write(
    `(${result.kills} kills; ${result.completedBackups} completed backups, ${result.prunedByPolicy} pruned by policy, ${result.lostBackups} lost, ${result.corruptRepositories} corrupt, ${result.leftovers} leftover objects, ${result.incompleteUploads} incomplete uploads) `,
  );
  return result;
});
// Continuous protection (test/reliability/pitr-soak.ts): a writer committing every 10 ms for
// --minutes, `strata replicate` beside it SIGKILLed and restarted about every --kill-every
// seconds, a restore to a random past moment checked every --restore-every seconds.
await run('pitr', async (work) => {
  const { pitrSoak } = await import(path.join(root, '.build/test/reliability/pitr-soak.js'));
  const result = await pitrSoak({
    seed, work, minutes: Number(values.minutes), killEverySeconds: Number(values['kill-every']), restoreEverySeconds: Number(values['restore-every']),
    log: (line) => process.stderr.write(`  pitr: ${new Date().toISOString().slice(11, 19)} ${line}\n`),
  });
  process.stdout.write(
    `(${result.transactions} transactions written, ${result.segments} segments in the catalog, ${result.restarts} replicator restarts after SIGKILL, ${result.restoresChecked} restores checked, ${result.relaxed} of them with the target where the replicator was down, complete through at most ${(result.maxBehindMs / 1000).toFixed(1)} s before the target, ${result.problems.length} failures) `,
  );
  return result;
});
// The property test of test/chains.test.ts (random histories of full, incremental, differential
// and schema-only backups; every restore point restored and compared), with --histories random
// histories instead of npm test's 4, from this run's seed.
await run('chains', async () => {
  const histories = Number(values.histories);
  const mocha = spawnSync(
    process.execPath,
    [path.join(root, 'node_modules/mocha/bin/mocha.js'), '--no-config', '--timeout', '0', '--grep', 'random history', path.join(root, '.build/test/chains.test.js')],
    { cwd: root, env: { ...process.env, STRATA_PROPERTY_RUNS: String(histories), STRATA_PROPERTY_SEED: String(seed) }, encoding: 'utf8' },
  );
  const failed = mocha.status !== 0;
  return { scenario: 'chains (random histories restored)', runs: histories, detected: 0, problems: failed ? [`chains property failed (exit ${mocha.status ?? mocha.signal}):\n${mocha.stdout}${mocha.stderr}`] : [] };
});
rmSync(base, { recursive: true, force: true });
mkdirSync(path.join(root, 'test-output'), { recursive: true });
// A partial run (--only) gets its own file, so it never overwrites the full run of the same seed.
const out = path.join(root, 'test-output', `soak-${seed}${only ? `-${[...only].join('-')}` : ''}.json`);
writeFileSync(out, JSON.stringify({ seed, date: new Date().toISOString(), commit: gitCommit(), results }, null, 2) + '\n');
const problems = results.reduce((n, r) => n + r.problems.length, 0);
console.log(`${results.length} scenarios, ${problems} problem(s); results in ${out}`);
process.exit(problems > 0 ? 1 : 0);
