// Installs what the VS Code extension's end-to-end tests need and builds the extension:
// - Node 24 (npm package `node`) for e2e/tools, only for code-server; the project runs on Node 20;
// - code-server (a real VS Code workbench and extension host) for e2e/vscode, installed with
//   Node 24 first on PATH (its install script checks npm's Node);
// - the extension, bundled, and packaged as extension/out/strata.vsix;
// - the release (`npm run release`) and its `strata` installed with plain npm (installedRelease()
//   of test/helpers/release.ts, compiled by setup.mjs): the e2e UI test and test/install.test.ts
//   share them, and the install compiles the native addons (minutes), so scripts/test.mjs has
//   them made here, while the test files run, rather than by one of them.
// The two tool installs are pinned by their package-lock.json and made outside the checkout, and
// every clone with the same lock files links its e2e/*/node_modules to them (installCached); the
// strata install is reused while the tarball's content stays the same, except that each run of
// scripts/test.mjs makes a fresh one (STRATA_TEST_RUN). Chromium comes from Debian (see
// test-tools.mjs).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
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
  installCached('Node 24 for code-server', tools, 'node/bin/node', [], npmEnv());
  // code-server's postinstall compiles a dozen native modules (node-gyp, minutes of CPU beside the
  // test files), through the release install's compiler cache; built for the Node 24 above, so
  // that Node's lock file is part of the install's key.
  const { userEnv } = await import(`${root}.build/test/helpers/release.js`);
  installCached('code-server', vscode, '.bin/code-server', [readFileSync(`${tools}/package-lock.json`)], userEnv([node24]));
  run('extension build and .vsix', process.execPath, [`${root}extension/scripts/build.mjs`, '--package'], { cwd: root });
}

/**
 * `npm ci` of one of e2e/'s folders, made once outside the checkout and linked as its
 * node_modules by every clone whose package.json and package-lock.json are the same: code-server
 * is 600 MB, and a CI run starts from a fresh clone, where it took a minute and a half of the
 * machine beside the test files. The cache is this user's own folder (no other user of the
 * machine can plant a program in it, and a link is followed only to the install its lock files
 * name, in that folder), and an install is made aside and renamed into place when complete, so an
 * interrupted one is never used.
 */
function installCached(what, folder, marker, keyParts, env) {
  const key = createHash('sha256');
  for (const part of [readFileSync(path.join(folder, 'package.json')), readFileSync(path.join(folder, 'package-lock.json')), ...keyParts, `${process.platform}-${process.arch}`]) key.update(part).update('\0');
  const cache = privateCacheFolder();
  const name = path.basename(folder);
  const installed = path.join(cache, `${name}-${key.digest('hex').slice(0, 16)}`);
  const link = path.join(folder, 'node_modules');
  const target = path.join(installed, 'node_modules');
  if (!existsSync(path.join(target, marker))) {
    rmSync(installed, { recursive: true, force: true }); // a part of one that lost its node_modules
    const partial = mkdtempSync(path.join(cache, `${name}.partial-`));
    for (const file of ['package.json', 'package-lock.json']) copyFileSync(path.join(folder, file), path.join(partial, file));
    try {
      run(what, 'npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: partial, env });
      renameSync(partial, installed);
    } catch (err) {
      rmSync(partial, { recursive: true, force: true });
      // Another run of the suite made the same install meanwhile: use that one.
      if (!existsSync(path.join(target, marker))) throw err;
    }
  }
  // Marks the install as in use, for the sweep below in other checkouts.
  const now = new Date();
  utimesSync(installed, now, now);
  // Installs of other lock files that no checkout linked for a week go, and so do the halves of
  // installs killed an hour or more ago; one another checkout still uses stays.
  for (const entry of readdirSync(cache)) {
    const at = path.join(cache, entry);
    const age = Date.now() - lstatSync(at).mtimeMs;
    if ((entry.startsWith(`${name}-`) && at !== installed && age > 7 * 86_400_000) || (entry.startsWith(`${name}.partial-`) && age > 3_600_000)) rmSync(at, { recursive: true, force: true });
  }
  const linked = lstatSync(link, { throwIfNoEntry: false });
  if (linked?.isSymbolicLink() && readlinkSync(link) === target) return;
  // What is there instead (a link to an install of other lock files, or to a cache that was
  // removed, or an install made in this folder by an earlier version of this script) is replaced.
  rmSync(link, { recursive: true, force: true });
  symlinkSync(target, link, 'dir');
  console.log(`e2e setup: ${what}: ${link} -> ${target}`);
}

function privateCacheFolder() {
  const dir = path.join(tmpdir(), `strata-e2e-tools-${process.getuid?.() ?? 'user'}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stat = lstatSync(dir);
  if (!stat.isDirectory() || stat.uid !== process.getuid?.() || (stat.mode & 0o077) !== 0) throw new Error(`${dir} is not this user's private folder; remove it`);
  return dir;
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
