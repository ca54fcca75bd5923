// Installs the workspace and builds it, on a machine that has only Node and npm: pnpm comes
// through npx at the exact version package.json pins. Safe to run again; both steps are
// incremental.
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { packageManager } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const pnpmVersion = packageManager.split('@')[1];

function run(cmd, args, env = process.env) {
  const result = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...env, npm_config_yes: 'true' } });
  if (result.status !== 0) {
    console.error(`setup: ${cmd} ${args.join(' ')} failed (exit ${result.status ?? result.signal})`);
    process.exit(result.status ?? 1);
  }
}

function pnpmOnPath() {
  const probe = spawnSync('pnpm', ['--version'], { encoding: 'utf8' });
  return probe.status === 0 && probe.stdout.trim() === pnpmVersion;
}

/**
 * With ccache on the machine (.ci/run installs it first) and no compiler chosen by the user, the
 * native addons the install compiles from source (better-sqlite3, zstd-napi; no prebuilt binary
 * can be downloaded here) go through the compiler cache of the test suite's release installs: the
 * same folder and base as userEnv in test/helpers/release.ts. The suite's install of the release,
 * which runs beside the test files, then finds better-sqlite3's compiled files there (about 100 s
 * of CPU on a new machine, checked with `ccache -s`).
 */
function installEnv() {
  const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
  if (process.env.CC || process.env.CXX || process.env.CCACHE_DIR || !['ccache', 'gcc', 'g++'].every(has)) return process.env;
  const dir = path.join(tmpdir(), `strata-test-ccache-${process.getuid?.() ?? 'user'}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // The user's own folder only (not a link to one): entries another user planted would be
    // linked into the addons. Anything else there and the install compiles without the cache.
    const owner = lstatSync(dir);
    if (!owner.isDirectory() || owner.uid !== process.getuid?.() || (owner.mode & 0o077) !== 0) return process.env;
  } catch {
    return process.env;
  }
  return { ...process.env, CC: 'ccache gcc', CXX: 'ccache g++', CCACHE_DIR: dir, CCACHE_BASEDIR: tmpdir() };
}

const pnpm = pnpmOnPath() ? ['pnpm', []] : ['npx', ['--yes', `pnpm@${pnpmVersion}`]];
const frozen = process.env.CI ? ['--frozen-lockfile'] : [];
run(pnpm[0], [...pnpm[1], 'install', ...frozen, '--reporter=append-only'], installEnv());
run(process.execPath, [fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url)), '-b']);
// After pnpm install, so esbuild is there to import.
const { compactZod } = await import('./compact-zod.mjs');
compactZod();
