// Runs the test suite (compiled by setup.mjs) with mocha. Extra arguments go to mocha, e.g.
//   npm test -- --grep restore
// (with arguments, one mocha runs every file in turn, as .mocharc.cjs says).
//
// Without arguments the files run in two lanes at once, each one mocha running its files in turn:
// most tests wait on one child process at a time (strata, sqlite3, pg_dump), so one lane keeps
// one core busy and two keep a two-core machine busy. Every file that uses the PostgreSQL or
// MariaDB test server is in the `servers` lane, so no two of them run at once (a restore removes
// work databases that dead processes left on the server, which test/server-leftovers.test.ts
// plants on purpose). The VS Code end-to-end tests run in the `local` lane after its other files;
// their tools (code-server and a browser; e2e-setup.mjs installs them the first time, in about two
// minutes) install meanwhile, and so does the release's `strata` (minutes: npm compiles its native
// addons), which the e2e tests and the install test (test/install.test.ts) then share.
// STRATA_SKIP_E2E=1 skips them outside CI (the install test then installs `strata` itself); under
// CI they are never skipped, since the extension is part of what CI proves.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
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

/** Installs the e2e tools in the foreground (the single-lane run). */
function setUpE2e() {
  const result = spawnSync(process.execPath, [fileURLToPath(new URL('./e2e-setup.mjs', import.meta.url))], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    console.error('VS Code e2e setup failed');
    if (process.env.CI) process.exit(1);
  }
}

// The test files that talk to the PostgreSQL or MariaDB test server.
const SERVER_FILES = new Set([
  'daemon-postgres',
  'legacy-repository',
  'mysql-engine',
  'mysql-fidelity',
  'pg-pitr',
  // Its own cluster, like pg-pitr: in the same lane, so two scratch clusters never run at once.
  'pg-wal-receive',
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
const config = createRequire(import.meta.url)(`${root}.mocharc.cjs`);
const built = `${root}.build/test`;
const testFiles = readdirSync(built).filter((f) => f.endsWith('.test.js')).sort();
// Files that use no database server but run in the `servers` lane, after its own files, to even out the
// lanes: the `local` lane, with the e2e tests after it, is the longer one without them. Each lane
// prints its time per file at its end (scripts/spec-with-files.cjs); a CI run on 2026-12-05 took
// servers 1829 s and local 1894 s, then e2e 85 s after local, with export (63 s) still in the local
// lane; one on 2026-12-07 servers 1604 s and local 1771 s, then e2e 103 s, with s3-backup-faults
// (123 s, mostly waiting on the S3 server) still in the local lane; one at `d78c087` servers 1197 s
// and local 1249 s, then e2e 70 s, with storage-s3 (65 s) still in the local lane. The install test spends minutes
// compiling the SDK's native addons; pg-timeline and pg-wal-daemon run clusters of their own (a
// minute each).
const BALANCING_FILES = new Set(['bad-input', 'chains', 'copy-mirror', 'daemon', 'export', 'install', 'keys', 'pg-timeline', 'pg-wal-daemon', 's3-backup-faults', 'storage-s3']);
const laneOf = (f) => (SERVER_FILES.has(f.replace(/\.test\.js$/, '')) ? 'servers' : BALANCING_FILES.has(f.replace(/\.test\.js$/, '')) ? 'balancing' : 'local');
const inLaneFiles = (lane) => testFiles.filter((f) => laneOf(f) === lane).map((f) => `.build/test/${f}`);
const lanes = {
  servers: [...inLaneFiles('servers'), ...inLaneFiles('balancing')],
  local: inLaneFiles('local'),
};
const e2eFiles = readdirSync(`${built}/e2e`).filter((f) => f.endsWith('.test.js')).sort().map((f) => `.build/test/e2e/${f}`);

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
 * A lane that prints nothing for this long is stuck (mocha prints every test as it ends, and no test
 * runs near this long): it is stopped, so that a hang fails the run instead of holding it forever.
 */
const SILENT_LANE_MS = 20 * 60_000;

/** The lanes running: their process groups go with this process when it is interrupted. */
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

/** Runs a command with each line of its output prefixed by the lane's name; resolves to its exit status. */
function inLane(name, args) {
  return new Promise((resolve) => {
    const started = Date.now();
    // In a process group of its own, so that stopping a stuck lane stops what its tests started too.
    const child = spawn(process.execPath, args, { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: process.stdout.isTTY ? '1' : '0' } });
    let silentSince = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - silentSince < SILENT_LANE_MS) return;
      console.error(`[${name}] printed nothing for ${SILENT_LANE_MS / 60_000} minutes: stopping it as stuck`);
      clearInterval(watchdog);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, 10_000);
    running.add(child.pid);
    child.on('close', () => {
      clearInterval(watchdog);
      running.delete(child.pid);
    });
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
      console.log(`[${name}] finished: ${status === 0 ? 'passed' : `FAILED (${signal ?? `exit ${status}`})`} in ${Math.round((Date.now() - started) / 1000)} s`);
      resolve(status ?? 1);
    });
  });
}

// The e2e tests skip themselves, saying why, when STRATA_SKIP_E2E is set or a tool is missing.
const e2eReady = skipE2e ? Promise.resolve(0) : inLane('e2e setup', [fileURLToPath(new URL('./e2e-setup.mjs', import.meta.url))]);
if (skipE2e) console.log('VS Code e2e: setup skipped (STRATA_SKIP_E2E is set)');
const localLane = (async () => {
  const local = await inLane('local', [mocha, ...mochaOptions, ...lanes.local]);
  const setup = await e2eReady;
  if (setup !== 0) {
    console.error('VS Code e2e setup failed');
    if (process.env.CI) return 1;
  }
  return Math.max(local, await inLane('e2e', [mocha, ...mochaOptions, ...e2eFiles]));
})();
const statuses = await Promise.all([inLane('servers', [mocha, ...mochaOptions, ...lanes.servers]), localLane]);
process.exit(statuses.some((s) => s !== 0) ? 1 : 0);
