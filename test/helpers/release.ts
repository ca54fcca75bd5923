// The release tarballs as a user gets them, for the tests that install them with plain npm
// (test/install.test.ts) and for the VS Code e2e test, which needs the installed `strata`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import * as path from 'node:path';
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
 */
export function userEnv(extraPath: string[] = []): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!/^npm_/i.test(key)) env[key] = value;
  const systemPath = (process.env['PATH'] ?? '').split(path.delimiter).filter((dir) => dir !== '' && !dir.includes('node_modules'));
  env['PATH'] = [...extraPath, path.dirname(process.execPath), ...systemPath].join(path.delimiter);
  env['JOBS'] = 'max';
  return env;
}

export interface Tarballs {
  readonly cli: string;
  readonly sdk: string;
}

/** `npm run release` into `out`: the CLI's and the SDK's tarballs. */
export async function makeRelease(out: string): Promise<Tarballs> {
  succeeded(await run(process.execPath, [path.join(ROOT, 'scripts/release.mjs'), '--out', out], { cwd: ROOT, env: process.env }), 'npm run release');
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
 * The `strata` of this checkout's release, installed with `npm install -g` into a prefix under
 * test-output/installed-cli/, for the tests that need a user's installed command (the VS Code
 * e2e). Installing compiles the native addons (minutes), so an install is kept and reused while
 * the tarball's content is the same (npm pack makes identical tarballs for identical files).
 * Returns the prefix; `strata` is in its bin/.
 */
export async function installedCli(): Promise<string> {
  const base = path.join(ROOT, 'test-output', 'installed-cli');
  const release = path.join(base, 'release');
  rmSync(release, { recursive: true, force: true });
  mkdirSync(release, { recursive: true });
  const { cli } = await makeRelease(release);
  const digest = createHash('sha256').update(readFileSync(cli)).digest('hex').slice(0, 16);
  const prefix = path.join(base, digest);
  if (existsSync(path.join(prefix, 'bin', 'strata'))) return prefix;
  for (const stale of readdirSync(base)) if (/^[0-9a-f]{16}(\.partial)?$/.test(stale)) rmSync(path.join(base, stale), { recursive: true, force: true });
  // Installed aside and renamed when complete, so that an interrupted install is never reused.
  const partial = `${prefix}.partial`;
  await installGlobally(cli, partial, path.join(base, 'npm-cache'));
  renameSync(partial, prefix);
  return prefix;
}
