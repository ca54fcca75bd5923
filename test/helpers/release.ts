// The release tarballs as a user gets them, for the tests that install them with plain npm
// (test/install.test.ts) and for the VS Code e2e test, which needs the installed `strata`.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { lock } from 'proper-lockfile';
import { ROOT } from './env.js';

export interface RunResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end without blocking the event loop, so mocha's timeout still applies. */
export function run(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

export function succeeded(result: RunResult, what: string): RunResult {
  assert.equal(result.status, 0, `${what} failed (exit ${result.status}):\n${result.stdout}\n${result.stderr}`);
  return result;
}

/**
 * The environment of a user's shell: none of the npm_* variables `npm test` sets (they would
 * point npm at this checkout's configuration), no node_modules/.bin of the checkout on PATH,
 * `extraPath` first. JOBS lets node-gyp compile the native addons on every core.
 *
 * With ccache on the machine, the compilers run through it (CC, CXX, which node-gyp's makefiles
 * take): every run of the suite installs the release twice (its `strata`, and the SDK in
 * test/install.test.ts), each compiling the same C and C++ of better-sqlite3 and zstd-napi for two
 * minutes of CPU while the test files need it; scripts/e2e-setup.mjs installs code-server, whose
 * postinstall compiles a dozen more, with this environment too. The compiler still runs on every
 * file the first time, and the cache gives back exactly what it produced; the installs are npm's,
 * as a user's.
 * The cache lives with the installs (tmpdir), and its base folder lets two installs in different
 * folders share entries; scripts/setup.mjs compiles the workspace's own addons through it too.
 */
export function userEnv(extraPath: string[] = []): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!/^npm_/i.test(key)) env[key] = value;
  const systemPath = (process.env['PATH'] ?? '').split(path.delimiter).filter((dir) => dir !== '' && !dir.includes('node_modules'));
  env['PATH'] = [...extraPath, path.dirname(process.execPath), ...systemPath].join(path.delimiter);
  env['JOBS'] = 'max';
  if (hasCcache()) {
    env['CC'] = 'ccache gcc';
    env['CXX'] = 'ccache g++';
    env['CCACHE_DIR'] = ccacheDir();
    env['CCACHE_BASEDIR'] = tmpdir();
  }
  return env;
}

/** The cache: this user's own (0700), so that no other user of the machine can plant entries in it. */
function ccacheDir(): string {
  const dir = path.join(tmpdir(), `strata-test-ccache-${process.getuid?.() ?? 'user'}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const owner = statSync(dir);
  if (owner.uid !== process.getuid?.() || (owner.mode & 0o077) !== 0) throw new Error(`${dir} is not this user's private folder; remove it`);
  return dir;
}

let ccacheFound: boolean | undefined;

function hasCcache(): boolean {
  ccacheFound ??= spawnSync('sh', ['-c', 'command -v ccache && command -v gcc && command -v g++'], { stdio: 'ignore' }).status === 0;
  return ccacheFound;
}

export interface Tarballs {
  readonly cli: string;
  readonly sdk: string;
}

/** `npm run release` into `out`: the CLI's and the SDK's tarballs. */
export async function makeRelease(out: string): Promise<Tarballs> {
  succeeded(await run(process.execPath, [path.join(ROOT, 'scripts/release.mjs'), '--out', out], { cwd: ROOT, env: process.env }), 'npm run release');
  return tarballsIn(out);
}

/** The CLI's and the SDK's tarballs in a folder `npm run release` wrote. */
function tarballsIn(out: string): Tarballs {
  const files = readdirSync(out);
  const find = (pattern: RegExp): string => {
    const matches = files.filter((file) => pattern.test(file));
    assert.equal(matches.length, 1, `one tarball matching ${pattern} expected in ${files.join(', ')}`);
    return path.join(out, matches[0]!);
  };
  return { cli: find(/^strata-backup-\d+\.\d+\.\d+.*\.tgz$/), sdk: find(/^strata-backup-sdk-\d+\.\d+\.\d+.*\.tgz$/) };
}

/** `npm install -g` of a tarball into its own prefix (its commands in `prefix/bin`). */
export async function installGlobally(tarball: string, prefix: string, npmCache: string): Promise<void> {
  succeeded(
    await run('npm', ['install', '--global', '--prefix', prefix, '--cache', npmCache, '--no-audit', '--no-fund', tarball], { cwd: path.dirname(prefix), env: userEnv() }),
    'npm install -g',
  );
}

/**
 * Where installedRelease() keeps its releases and installs: outside the checkout, so that Node's
 * module resolution from the installed package never reaches the checkout's node_modules (a
 * dependency the tarball failed to declare would be found there and the install would seem to
 * work); one folder per checkout.
 */
const INSTALLS = path.join(tmpdir(), `strata-installed-cli-${createHash('sha256').update(ROOT).digest('hex').slice(0, 12)}`);

export interface InstalledRelease {
  /** The release's tarballs (`npm run release`). */
  readonly tarballs: Tarballs;
  /** The prefix the CLI's tarball is installed into with `npm install -g`; `strata` is in its bin/. */
  readonly prefix: string;
}

/**
 * This checkout's release, with its `strata` installed with `npm install -g` into a prefix of its
 * own, for the tests that need a user's installed command: test/install.test.ts and the VS Code
 * e2e. Making the release takes about 15 s of CPU and installing compiles the native addons
 * (minutes), so both are made once and shared: in a run of scripts/test.mjs, once for that run
 * (STRATA_TEST_RUN; its e2e setup makes them at the start while the test files run, so every run of
 * the suite tests a fresh install); otherwise reused while the CLI tarball's content stays the
 * same (npm pack makes identical tarballs for identical files). The test files run in separate processes,
 * so a lock file makes one wait for another's install.
 */
export async function installedRelease(): Promise<InstalledRelease> {
  mkdirSync(INSTALLS, { recursive: true });
  const runId = process.env['STRATA_TEST_RUN'];
  const made = mkdtempSync(path.join(INSTALLS, 'release-'));
  try {
    // Outside a run of the suite, the release's content names the install, so it is made first.
    const key = runId ? `run-${runId}` : digestOf((await makeRelease(made)).cli);
    const folder = path.join(INSTALLS, key);
    // Waits for another process's install (retrying each second for up to 45 minutes); a lock
    // whose process died goes stale after a minute, long enough for a loaded machine to renew it.
    const unlock = await lock(INSTALLS, {
      realpath: false,
      lockfilePath: path.join(INSTALLS, 'install.lock'),
      stale: 60_000,
      retries: { retries: 45 * 60, factor: 1, minTimeout: 1000, maxTimeout: 1000 },
    });
    try {
      if (!existsSync(folder)) {
        for (const stale of readdirSync(INSTALLS)) if (/^(run-\w+|[0-9a-f]{16})(\.partial)?$/.test(stale)) rmSync(path.join(INSTALLS, stale), { recursive: true, force: true });
        // Made aside and renamed when complete, so that an interrupted install is never reused.
        const partial = `${folder}.partial`;
        mkdirSync(partial);
        if (readdirSync(made).length === 0) await makeRelease(made);
        renameSync(made, path.join(partial, 'release'));
        await installGlobally(tarballsIn(path.join(partial, 'release')).cli, path.join(partial, 'prefix'), path.join(INSTALLS, 'npm-cache'));
        renameSync(partial, folder);
      }
      return { tarballs: tarballsIn(path.join(folder, 'release')), prefix: path.join(folder, 'prefix') };
    } finally {
      await unlock();
    }
  } finally {
    rmSync(made, { recursive: true, force: true });
  }
}

/** The `strata` of this checkout's release, installed (installedRelease()); returns the prefix, `strata` is in its bin/. */
export async function installedCli(): Promise<string> {
  return (await installedRelease()).prefix;
}

function digestOf(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 16);
}
