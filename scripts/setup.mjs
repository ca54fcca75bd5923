// Installs the workspace and builds it, on a machine that has only Node and npm: pnpm comes
// through npx at the exact version package.json pins. Safe to run again; both steps are
// incremental.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { packageManager } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const pnpmVersion = packageManager.split('@')[1];

function run(cmd, args) {
  const result = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, npm_config_yes: 'true' } });
  if (result.status !== 0) {
    console.error(`setup: ${cmd} ${args.join(' ')} failed (exit ${result.status ?? result.signal})`);
    process.exit(result.status ?? 1);
  }
}

function pnpmOnPath() {
  const probe = spawnSync('pnpm', ['--version'], { encoding: 'utf8' });
  return probe.status === 0 && probe.stdout.trim() === pnpmVersion;
}

const pnpm = pnpmOnPath() ? ['pnpm', []] : ['npx', ['--yes', `pnpm@${pnpmVersion}`]];
const frozen = process.env.CI ? ['--frozen-lockfile'] : [];
run(pnpm[0], [...pnpm[1], 'install', ...frozen, '--reporter=append-only']);
run(process.execPath, [fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url)), '-b']);
// After pnpm install, so esbuild is there to import.
const { compactZod } = await import('./compact-zod.mjs');
compactZod();
