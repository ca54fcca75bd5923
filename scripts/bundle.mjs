// Folds the workspace's own packages (@strata/*) that an entry file needs into one bundle with
// esbuild, for the release (scripts/release.mjs) and for the test suite (bundleCliForTests).
// Third-party packages stay outside the bundle: the release declares them as dependencies, while
// the tests' bundle imports each one by the file Node resolves it to in this checkout.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
export const WORKSPACE_SCOPE = '@strata/';

/** A mistake in what is bundled (an undeclared import, a missing file): said plainly, without a stack. */
export class BundleError extends Error {}

export function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** Every workspace package by name: its folder and package.json. */
export function workspacePackages() {
  const byName = new Map();
  for (const dir of readdirSync(path.join(root, 'packages'))) {
    const file = path.join(root, 'packages', dir, 'package.json');
    if (existsSync(file)) byName.set(readJson(file).name, { dir: path.join(root, 'packages', dir), manifest: readJson(file) });
  }
  return byName;
}

/** The package name a bare import specifier refers to: `pg`, `@scope/x` (from `@scope/x/sub`). */
export function packageNameOf(specifier) {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

/**
 * The workspace packages a target is made of (itself and its `workspace:` dependencies, all the
 * way down) and the third-party dependencies they declare, each at one version.
 */
export function closureOf(targetDir, packages) {
  const members = new Map();
  const dependencies = new Map();
  const optionalDependencies = new Map();
  const visit = (dir, manifest) => {
    if (members.has(manifest.name)) return;
    members.set(manifest.name, dir);
    for (const [field, into] of [['dependencies', dependencies], ['optionalDependencies', optionalDependencies]]) {
      for (const [name, spec] of Object.entries(manifest[field] ?? {})) {
        if (spec.startsWith('workspace:')) {
          const member = packages.get(name);
          if (!member) throw new BundleError(`${manifest.name} depends on ${name} (${spec}), which is not a package of this workspace`);
          visit(member.dir, member.manifest);
        } else if (/^(file|link|portal|patch):/.test(spec)) {
          throw new BundleError(`${manifest.name} depends on ${name}@${spec}, which an installed package cannot`);
        } else {
          const seen = into.get(name);
          if (seen && seen.spec !== spec) {
            throw new BundleError(`${name} is declared at two versions: ${seen.spec} by ${seen.by}, ${spec} by ${manifest.name}; use one`);
          }
          into.set(name, { spec, by: manifest.name });
        }
      }
    }
  };
  visit(targetDir, readJson(path.join(targetDir, 'package.json')));
  for (const name of optionalDependencies.keys()) dependencies.delete(name);
  return { members, dependencies, optionalDependencies };
}

const URL_REFERENCE = /new URL\((['"])(\.{1,2}\/[^'"]+)\1,\s*import\.meta\.url\)/g;

/**
 * Where Node itself resolves `specifier` imported from `importer` (a file URL), as Node would at
 * run time: its own resolver (conditions, exports, no probing for extensions), which a script can
 * ask for another file only behind this flag on Node 20. One short process per distinct import.
 */
function resolvedByNode(specifier, importer) {
  const result = spawnSync(process.execPath, ['--experimental-import-meta-resolve', '--no-warnings', '--input-type=module', '-e', 'console.log(import.meta.resolve(process.argv[1], process.argv[2]))', specifier, importer], { encoding: 'utf8' });
  if (result.status !== 0) throw new BundleError(`${fileURLToPath(importer)} imports ${specifier}, which Node does not resolve: ${result.stderr.trim().split('\n').at(-1)}`);
  return result.stdout.trim();
}

/**
 * Bundles one entry file. esbuild leaves `new URL('./x', import.meta.url)` alone, but after
 * bundling the code no longer sits where the path was written from, so (as Vite and Parcel do)
 * every such reference is rewritten to a file next to the bundle: a worker script (.js) is
 * bundled there too, any other file is copied there.
 *
 * Third-party imports stay imports. For the release they stay bare, for npm to install beside the
 * bundle; with `pinExternals` (the tests' bundle) each becomes the file URL Node resolves it to
 * from the workspace file that imports it (pnpm gives each workspace package only its declared
 * dependencies, so nothing would resolve from the bundle's own folder).
 */
export async function bundle(entry, outDir, closure, written, { pinExternals = false } = {}) {
  const members = [...closure.members.values()];
  const declared = new Set([...closure.dependencies.keys(), ...closure.optionalDependencies.keys()]);
  const references = [];
  const assets = new Map();
  const pinned = new Map();
  const claim = (base, from) => {
    const owner = written.get(base);
    if (owner && owner !== from) throw new BundleError(`two files would both be ${base} in the package: ${owner} and ${from}`);
    written.set(base, from);
  };
  const plugin = {
    name: 'strata-bundle',
    setup(esb) {
      esb.onResolve({ filter: /^[^./]/ }, (args) => {
        if (isBuiltin(args.path)) return { path: args.path, external: true };
        const name = packageNameOf(args.path);
        if (name.startsWith(WORKSPACE_SCOPE)) {
          if (!closure.members.has(name)) throw new BundleError(`${path.relative(root, args.importer)} imports ${name}, which its package.json does not declare`);
          return undefined; // bundled: esbuild resolves it through the workspace's node_modules
        }
        if (!declared.has(name)) throw new BundleError(`${path.relative(root, args.importer)} imports ${args.path}, but no package.json of the workspace packages bundled here declares ${name}`);
        if (!pinExternals) return { path: args.path, external: true };
        const importer = pathToFileURL(args.importer).href;
        const key = `${args.path}\0${importer}`;
        if (!pinned.has(key)) pinned.set(key, resolvedByNode(args.path, importer));
        return { path: pinned.get(key), external: true };
      });
      esb.onLoad({ filter: /\.js$/ }, (args) => {
        if (!members.some((dir) => args.path.startsWith(dir + path.sep))) return undefined;
        const source = readFileSync(args.path, 'utf8');
        const contents = source.replace(URL_REFERENCE, (_match, quote, relative) => {
          const target = path.resolve(path.dirname(args.path), relative);
          if (!existsSync(target)) throw new BundleError(`${args.path} refers to ${relative}, which does not exist (${target})`);
          const base = path.basename(target);
          claim(base, target);
          if (target.endsWith('.js')) references.push(target);
          else assets.set(base, target);
          return `new URL(${quote}./${base}${quote}, import.meta.url)`;
        });
        // A require made with createRequire (the optional addons loaded only when needed) finds
        // packages from the file it was written in: in the release, the bundle's own node_modules;
        // pinned, the workspace package's, as the imports above.
        if (!pinExternals) return { contents, loader: 'js' };
        return { contents: contents.replaceAll('createRequire(import.meta.url)', `createRequire(${JSON.stringify(pathToFileURL(args.path).href)})`), loader: 'js' };
      });
    },
  };
  claim(path.basename(entry), entry);
  let result;
  try {
    result = await build({
      entryPoints: [entry],
      // Split at every import(): a module the code loads only when it needs it (a command's
      // code, the S3 client, the language server of `strata serve`) stays out of what every
      // start of `strata` reads, as it does unbundled. The chunks sit next to the entry, so a
      // `new URL('./x', import.meta.url)` means the same file from any of them.
      outdir: outDir,
      entryNames: '[name]',
      chunkNames: '[name]-[hash]',
      splitting: true,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      logLevel: 'silent',
      plugins: [plugin],
    });
  } catch (err) {
    // A plugin's BundleError arrives wrapped in esbuild's report; say it once, plainly.
    if (!Array.isArray(err?.errors)) throw err;
    throw new BundleError(`bundling ${path.relative(root, entry)} failed:\n${err.errors.map((e) => `  ${e.text}`).join('\n')}`);
  }
  for (const warning of result.warnings) console.warn(`bundle: esbuild: ${warning.text}`);
  for (const [base, from] of assets) copyFileSync(from, path.join(outDir, base));
  for (const worker of references) {
    if (!existsSync(path.join(outDir, path.basename(worker)))) await bundle(worker, outDir, closure, written, { pinExternals });
  }
}

/**
 * The command line as one bundle in .build/cli/dist/ (the entry main.js), for the test suite: Strata's
 * own code bundled as the release's `strata` bundles it, and about a third less CPU for each
 * `strata` the tests start than the unbundled packages/cli/dist (Node 20 spends most of a short
 * command resolving and loading the ~150 modules of the workspace one by one). Rebuilt whole by
 * every run of scripts/test.mjs. Returns the entry's path.
 */
export async function bundleCliForTests() {
  // Named as the CLI's own build (cli/dist/main.js), which is how Strata tells its own processes
  // among those that hold a database open.
  const outDir = path.join(root, '.build', 'cli', 'dist');
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const entry = path.join(root, 'packages/cli/dist/main.js');
  await bundle(entry, outDir, closureOf(path.join(root, 'packages/cli'), workspacePackages()), new Map(), { pinExternals: true });
  return path.join(outDir, 'main.js');
}
