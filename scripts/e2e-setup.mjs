// Installs what the VS Code extension's end-to-end tests need and builds the extension:
// - Node 24 (npm package `node`) in e2e/tools, only for code-server; the project runs on Node 20;
// - code-server (a real VS Code workbench and extension host) in e2e/vscode, installed with
//   Node 24 first on PATH (its install script checks npm's Node);
// - the extension, bundled, and packaged as extension/out/strata.vsix;
// - the release (`npm run release`) and its `strata` installed with plain npm (installedRelease()
//   of test/helpers/release.ts, compiled by setup.mjs): the e2e UI test and test/install.test.ts
//   share them, and the install compiles the native addons (minutes), so scripts/test.mjs has
//   them made here, while the test files run, rather than by one of them.
// The two tool installs are pinned by their package-lock.json and skipped when already done; the
// strata install is reused while the tarball's content stays the same, except that each run of
// scripts/test.mjs makes a fresh one (STRATA_TEST_RUN). Chromium comes from Debian (see
// test-tools.mjs).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const tools = `${root}e2e/tools`;
const vscode = `${root}e2e/vscode`;
const node24 = `${tools}/node_modules/node/bin`;

function run(what, cmd, args, options = {}) {
  const started = Date.now();
  const result = spawnSync(cmd, args, { stdio: 'inherit', ...options });
  if (result.status !== 0) throw new Error(`${what} failed (exit ${result.status ?? result.signal})`);
  console.log(`e2e setup: ${what} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
}

/**
 * The environment for a nested npm: without the npm_* variables of an outer `npm test`, whose
 * npm_config_user_agent ("node/v20...") would override the inner npm's own and fail
 * code-server's Node version check.
 */
function npmEnv(extraPath) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_')));
  if (extraPath) env.PATH = `${extraPath}:${env.PATH}`;
  return env;
}

export async function ensureE2eTools() {
  const npmCi = ['ci', '--no-audit', '--no-fund', '--loglevel=error'];
  if (!existsSync(`${node24}/node`)) run('Node 24 for code-server', 'npm', npmCi, { cwd: tools, env: npmEnv() });
  if (!existsSync(`${vscode}/node_modules/.bin/code-server`)) {
    // code-server's postinstall compiles a dozen native modules (node-gyp, minutes of CPU beside
    // the test files): through the release install's compiler cache, a later run reuses them.
    const { userEnv } = await import(`${root}.build/test/helpers/release.js`);
    run('code-server', 'npm', npmCi, { cwd: vscode, env: userEnv([node24]) });
  }
  run('extension build and .vsix', process.execPath, [`${root}extension/scripts/build.mjs`, '--package'], { cwd: root });
}

export async function ensureInstalledCli() {
  const started = Date.now();
  const { installedCli } = await import(`${root}.build/test/helpers/release.js`);
  const prefix = await installedCli();
  console.log(`e2e setup: strata installed from the release tarball into ${prefix} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
}

// strata first: test/install.test.ts waits for it too, and needs none of the tools.
if (import.meta.url === `file://${process.argv[1]}`) {
  await ensureInstalledCli();
  await ensureE2eTools();
}
