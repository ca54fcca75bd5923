// Runs the test suite (compiled by setup.mjs) with mocha. Extra arguments go to mocha, e.g.
//   npm test -- --grep restore
// (with arguments, one mocha runs every file in turn, as .mocharc.cjs says).
//
// Without arguments every file runs in a mocha of its own, a few at once (SLOTS): most tests wait
// on one child process at a time (strata, sqlite3, pg_dump), so one file keeps about half a core
// busy. Files that use the PostgreSQL or MariaDB test server (SERVER_FILES) never run two at once.
// The VS Code end-to-end tests run once their tools (code-server and a browser; e2e-setup.mjs
// installs them the first time, in about two minutes) are installed, which happens beside the
// files, as does the install of the release's `strata` (minutes: npm compiles its native addons),
// which the e2e tests and the install test (test/install.test.ts) then share.
// STRATA_SKIP_E2E=1 skips them outside CI (the install test then installs `strata` itself); under
// CI they are never skipped, since the extension is part of what CI proves.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleCliForTests } from './bundle.mjs';
import { ensurePg17, ensureS3Server, ensureTestTools } from './test-tools.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const mocha = fileURLToPath(new URL('../node_modules/mocha/bin/mocha.js', import.meta.url));
const skipE2e = Boolean(process.env.STRATA_SKIP_E2E && !process.env.CI);

ensureTestTools();
ensureS3Server();
ensurePg17();
// Names this run for its child processes: the e2e setup installs the release's `strata` for the
// run, and test/install.test.ts and the e2e tests use that install (test/helpers/release.ts).
process.env.STRATA_TEST_RUN = `${Date.now().toString(36)}${process.pid.toString(36)}`;
// The tests start `strata` thousands of times; they run it bundled, as the release ships it
// (test/helpers/env.ts reads this; a test file run on its own uses packages/cli/dist).
process.env.STRATA_TEST_CLI = await bundleCliForTests();
const extra = process.argv.slice(2);
if (extra.length > 0) {
  if (skipE2e) console.log('VS Code e2e: skipped (STRATA_SKIP_E2E is set)');
  else setUpE2e();
  const result = spawnSync(process.execPath, [mocha, ...extra], { cwd: root, stdio: 'inherit' });
  process.exit(result.status ?? 1);
}

/** Installs the e2e tools in the foreground (the run of one mocha over every file). */
function setUpE2e() {
  const result = spawnSync(process.execPath, [fileURLToPath(new URL('./e2e-setup.mjs', import.meta.url))], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    console.error('VS Code e2e setup failed');
    if (process.env.CI) process.exit(1);
  }
}

// The test files that talk to the PostgreSQL or MariaDB test server: never two at once.
const SERVER_FILES = new Set([
  'daemon-postgres',
  'legacy-repository',
  'mysql-engine',
  'mysql-fidelity',
  'postgres-database',
  'postgres-engine',
  'postgres-fidelity',
  'postgres-legacy',
  'private-schema',
  'recovery-by-hand',
  'reliability',
  'server-leftovers',
  'verify-tamper',
]);
// Files that need the release's installed `strata`, which the e2e setup makes for the run: they
// start after it, instead of holding a slot while they wait for its install lock.
const AFTER_E2E_SETUP = new Set(['install']);
// The longest files first, from the per-file times a run prints at its end (a fresh-clone CI on
// 2026-12-07, wall seconds on a loaded 2-core machine): started last, one of them would keep the
// run going alone at its end. Files not named here take a minute or less and follow in name order.
const LONGEST_FIRST = [
  'pg17-incremental', // 245 s
  'pg-pitr', // 193
  's3-backup-faults', // 170, mostly waiting on the S3 server
  'pg-physical-layout', // 134
  'reliability', // 105
  'hostile-input', // 98
  'keys', // 96
  'postgres-fidelity', // 87
  'postgres-engine', // 85
  'storage-s3', // 81
  'pg-physical-leftovers', // 81
  'postgres-database', // 80
  'lock-race', // 75
  'daemon', // 74
  'pitr-edges', // 73
  'e2e', // 70–120 s once its tools are installed
  'mysql-fidelity', // 73
  'mysql-engine', // 66
  'pg-wal-receive', // 63
  'pitr-compaction', // 61
  'pg-physical-incremental', // 60
  'install', // 48, once the e2e setup has installed the release
];

const config = createRequire(import.meta.url)(`${root}.mocharc.cjs`);
const built = `${root}.build/test`;
const nameOf = (file) => file.replace(/\.test\.js$/, '');
const rank = (name) => (LONGEST_FIRST.includes(name) ? LONGEST_FIRST.indexOf(name) : LONGEST_FIRST.length);
const testNames = readdirSync(built).filter((f) => f.endsWith('.test.js')).map(nameOf).sort();
const e2eFiles = readdirSync(`${built}/e2e`).filter((f) => f.endsWith('.test.js')).sort().map((f) => `.build/test/e2e/${f}`);

/**
 * How many mochas run at once. Most tests wait on one child process at a time (strata, sqlite3,
 * pg_dump, a server), so a file keeps about half a core busy: one more than the cores keeps the
 * machine busy without starving the database servers and the e2e setup beside them.
 */
const SLOTS = slotsWanted(process.env.STRATA_TEST_SLOTS) ?? availableParallelism() + 1;

function slotsWanted(value) {
  if (value === undefined || value === '') return undefined;
  if (!/^[1-9]\d*$/.test(value)) {
    console.error(`STRATA_TEST_SLOTS=${value}: give a whole number of test files to run at once, 1 or more`);
    process.exit(2);
  }
  return Number(value);
}

/** The options of .mocharc.cjs, for a mocha given its files (with files, mocha must not read the config, or it runs its `spec` too). */
const mochaOptions = [
  '--no-config',
  `--timeout=${config.timeout}`,
  `--slow=${config.slow}`,
  `--reporter=${config.reporter}`,
  ...(config.failZero ? ['--fail-zero'] : []),
  ...(config.forbidOnly ? ['--forbid-only'] : []),
];

/**
 * A mocha that prints nothing for this long is stuck (mocha prints every test as it ends, and no
 * test runs near this long): it is stopped, so that a hang fails the run instead of holding it forever.
 */
const SILENT_MS = 20 * 60_000;

/** The mochas and the e2e setup running: their process groups go with this process when it is interrupted. */
const running = new Set();
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const pid of running) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    process.exit(130);
  });
}

/** Runs a command with each line of its output prefixed by `[name]`; resolves to its exit status and wall time. */
function prefixed(name, args, env = {}) {
  return new Promise((resolve) => {
    const started = Date.now();
    // In a process group of its own, so that stopping a stuck one stops what its tests started too.
    const child = spawn(process.execPath, args, { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: process.stdout.isTTY ? '1' : '0', ...env } });
    let silentSince = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - silentSince < SILENT_MS) return;
      console.error(`[${name}] printed nothing for ${SILENT_MS / 60_000} minutes: stopping it as stuck`);
      clearInterval(watchdog);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, 10_000);
    running.add(child.pid);
    for (const [stream, out] of [[child.stdout, process.stdout], [child.stderr, process.stderr]]) {
      let pending = '';
      stream.on('data', (chunk) => {
        silentSince = Date.now();
        const lines = (pending + chunk.toString()).split('\n');
        pending = lines.pop();
        for (const line of lines) out.write(`[${name}] ${line}\n`);
      });
      stream.on('end', () => pending && out.write(`[${name}] ${pending}\n`));
    }
    child.on('close', (status, signal) => {
      clearInterval(watchdog);
      running.delete(child.pid);
      const seconds = Math.round((Date.now() - started) / 1000);
      console.log(`[${name}] finished: ${status === 0 ? 'passed' : `FAILED (${signal ?? `exit ${status}`})`} in ${seconds} s`);
      resolve({ status: status ?? 1, seconds });
    });
  });
}

// The e2e tests skip themselves, saying why, when STRATA_SKIP_E2E is set or a tool is missing.
const e2eReady = skipE2e ? Promise.resolve({ status: 0 }) : prefixed('e2e setup', [fileURLToPath(new URL('./e2e-setup.mjs', import.meta.url))]);
if (skipE2e) console.log('VS Code e2e: setup skipped (STRATA_SKIP_E2E is set)');
let e2eSetUp = skipE2e;
e2eReady.then(() => (e2eSetUp = true));

// Each file in a mocha of its own, SLOTS at a time, taken in LONGEST_FIRST order as far as the
// rules allow: a server file only while no other server file runs (a restore removes work databases that dead
// processes left on the server, which test/server-leftovers.test.ts plants on purpose), and server
// files first while none runs, since they are the one chain that cannot spread over the slots.
// The e2e tests (one mocha: they share a code-server) and AFTER_E2E_SETUP wait for the e2e setup.
// (sort() is stable: files of equal rank stay in name order)
const queue = [...testNames.map((name) => ({ name, files: [`.build/test/${name}.test.js`] })), { name: 'e2e', files: e2eFiles }].sort((a, b) => rank(a.name) - rank(b.name));
const isServer = (item) => SERVER_FILES.has(item.name);
const waitsForSetup = (item) => item.name === 'e2e' || AFTER_E2E_SETUP.has(item.name);
const resultsFile = path.join(mkdtempSync(path.join(tmpdir(), 'strata-test-times-')), 'times.jsonl');
const outcomes = [];
let serverRunning = false;
const sleepers = [];
const wake = () => sleepers.splice(0).forEach((resolve) => resolve());

function nextItem() {
  const ready = queue.filter((item) => !waitsForSetup(item) || e2eSetUp);
  const pick = (!serverRunning && ready.find(isServer)) || ready.find((item) => !isServer(item));
  if (pick) queue.splice(queue.indexOf(pick), 1);
  return pick;
}

async function slot() {
  for (;;) {
    const item = nextItem();
    if (!item) {
      if (queue.length === 0) return;
      // Something is left that may not start yet: wait until a file ends or the e2e setup does.
      await new Promise((resolve) => sleepers.push(resolve));
      continue;
    }
    if (isServer(item)) serverRunning = true;
    if (item.name === 'e2e') {
      const setup = await e2eReady;
      if (setup.status !== 0) {
        console.error('VS Code e2e setup failed');
        if (process.env.CI) outcomes.push({ name: 'e2e setup', status: 1, seconds: 0 });
      }
    }
    const outcome = await prefixed(item.name, [mocha, ...mochaOptions, ...item.files], { STRATA_TEST_TIMES: resultsFile });
    outcomes.push({ name: item.name, ...outcome });
    if (isServer(item)) serverRunning = false;
    wake();
  }
}
e2eReady.then(() => wake());
const started = Date.now();
await Promise.all(Array.from({ length: SLOTS }, slot));
process.exit(summarize() ? 0 : 1);

/** Prints every file's time and CPU (scripts/spec-with-files.cjs writes them) and what failed; true when all passed. */
function summarize() {
  const times = existsSync(resultsFile) ? readFileSync(resultsFile, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line)) : [];
  const passes = times.reduce((sum, t) => sum + t.passes, 0);
  const failures = times.reduce((sum, t) => sum + t.failures, 0);
  const cpu = times.reduce((sum, t) => sum + t.cpuMs, 0);
  console.log(`\ntime per file, ${SLOTS} at a time (${Math.round((Date.now() - started) / 1000)} s in all; the files' CPU ${Math.round(cpu / 1000)} s):`);
  for (const t of times.sort((a, b) => b.ms - a.ms)) {
    console.log(`  ${String(Math.round(t.ms / 1000)).padStart(6)} s  CPU ${String(Math.round(t.cpuMs / 1000)).padStart(4)} s  ${t.file}`);
  }
  rmSync(path.dirname(resultsFile), { recursive: true, force: true });
  // Every file ran (nothing left in the queue by a mistake in the rules above) or it is a failure.
  for (const item of queue) outcomes.push({ name: item.name, status: 1, seconds: 0, neverRan: true });
  const failed = outcomes.filter((o) => o.status !== 0);
  console.log(`\n${passes} passing, ${failures} failing in ${outcomes.length} mochas`);
  for (const o of failed) console.log(o.neverRan ? `FAILED: ${o.name} never ran` : `FAILED: ${o.name} (see the lines that start with [${o.name}])`);
  return failed.length === 0;
}
