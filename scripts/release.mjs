// Writes the packages a user installs with plain npm into one folder (release/ unless --out DIR):
//   strata-backup-<version>.tgz      the `strata` command   (npm install -g ./strata-backup-<version>.tgz)
//   strata-backup-sdk-<version>.tgz  the SDK, ESM, typed    (npm install ./strata-backup-sdk-<version>.tgz)
// Run it after a build (`npm run release` builds first).
//
// Why bundle: the workspace's own packages (@strata/*) are not on a registry and refer to each
// other with pnpm's `workspace:` protocol, which plain npm refuses. Publishing the seven
// workspace packages the CLI and the SDK are made of would freeze the boundaries between them as
// public API; instead esbuild folds the @strata/* code each package needs into it, and every
// third-party package stays a normal dependency at the exact version the workspace declares
// (native addons such as better-sqlite3 and zstd-napi cannot be bundled anyway, and npm can share
// the others with the user's project and report their advisories). Those dependencies are read
// from the workspace's package.json files each time, never copied by hand, and an import that no
// package.json declares stops the release. One exception: the few zod functions strata.config.json's
// schema is built from also ship folded into dist/config-zod.cjs (scripts/compact-zod.mjs, from the
// zod version the SDK declares, which stays a dependency for the SDK's types), because loading zod's
// hundred modules cost every command that reads a config file about 0.1 s.
//
// The SDK's types are one declaration file made by dts-bundle-generator from the compiled
// declarations, with the @strata/* types inlined; @types/* packages the public types need are
// declared as the SDK's dependencies. dts-bundle-generator is patched (patches/, applied by pnpm
// at install): its 9.5.1 spent three minutes of CPU on our program in a search that forgot its
// negative answers; patched, it takes seconds and writes the same file. Its 10.x has such a fix
// but requires Node 24, and the project runs on Node 20.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire, isBuiltin } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { BundleError, WORKSPACE_SCOPE, bundle, closureOf, packageNameOf, readJson, workspacePackages } from './bundle.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const typescript = createRequire(import.meta.url)('typescript');

/** What goes out, and where from. The templates hold the published name, metadata and README. */
const TARGETS = [
  // The systemd unit the README installs: a user without a clone takes it from the package.
  { template: 'packaging/strata-backup', workspace: 'packages/cli', entry: 'dist/main.js', types: false, extra: ['docs/strata-daemon.service'] },
  { template: 'packaging/strata-backup-sdk', workspace: 'packages/sdk', entry: 'dist/index.js', types: true },
];

class ReleaseError extends Error {}

/** The bare packages a declaration file imports or references (TypeScript's own scanner, which skips comments). */
function typeImports(declarations) {
  const { importedFiles, typeReferenceDirectives } = typescript.preProcessFile(declarations, true, true);
  return new Set([...importedFiles, ...typeReferenceDirectives].map((ref) => ref.fileName).filter((name) => !/^[./]/.test(name)));
}

/**
 * The SDK's declarations in one file that names no @strata/* package. Generated with a
 * tsconfig without the DOM lib: with it, dts-bundle-generator renames our `Storage`,
 * `ProgressEvent` and `LockOptions` (which collide with DOM globals) and stops exporting them.
 */
function bundleTypes(workspaceDir, entry, outFile) {
  const scratch = path.join(root, '.build', 'release');
  mkdirSync(scratch, { recursive: true });
  const tsconfig = path.join(scratch, 'tsconfig.types.json');
  const dts = path.join(workspaceDir, entry.replace(/\.js$/, '.d.ts'));
  writeFileSync(tsconfig, JSON.stringify({
    extends: path.join(root, 'tsconfig.base.json'),
    compilerOptions: { lib: ['ES2023'], types: ['node'], composite: false, declarationMap: false, noEmit: true },
    files: [dts],
  }));
  const generator = path.join(root, 'node_modules/dts-bundle-generator/dist/bin/dts-bundle-generator.js');
  // Generated inside the workspace package's node_modules, where the third-party packages its
  // types import (zod, ...) resolve as they will in a user's project: the command line (rather
  // than the API) type-checks the generated file where it writes it, without skipLibCheck.
  const generated = path.join(workspaceDir, 'node_modules', '.strata-release', path.basename(outFile));
  mkdirSync(path.dirname(generated), { recursive: true });
  const result = spawnSync(process.execPath, [generator, '--silent', '--no-banner', '--project', tsconfig, '-o', generated, dts], { encoding: 'utf8' });
  if (result.status !== 0) throw new ReleaseError(`dts-bundle-generator failed:\n${result.stdout}${result.stderr}`);
  // The declarations use Node's globals (Buffer, NodeJS.*) without importing them; say so.
  const declarations = `/// <reference types="node" />\n${readFileSync(generated, 'utf8')}`;
  rmSync(path.dirname(generated), { recursive: true, force: true });
  writeFileSync(outFile, declarations);
  return declarations;
}

/**
 * The @types/* packages the published declarations need, at the workspace's version as a caret
 * range, so npm shares one copy with a project that has a compatible one (two copies of
 * @types/node in one program conflict).
 */
function typePackagesFor(declarations, manifests, ownDependencies) {
  const devVersions = new Map();
  for (const manifest of manifests) {
    for (const [name, spec] of Object.entries({ ...manifest.devDependencies, ...manifest.dependencies })) {
      if (name.startsWith('@types/')) devVersions.set(name, spec);
    }
  }
  const needed = new Map();
  for (const specifier of typeImports(declarations)) {
    const name = packageNameOf(specifier);
    if (name.startsWith(WORKSPACE_SCOPE)) throw new ReleaseError(`the SDK's declarations still import ${specifier}`);
    const typesName = isBuiltin(specifier) || name === 'node' ? '@types/node' : name.startsWith('@types/') ? name : `@types/${name.replace(/^@([^/]+)\//, '$1__')}`;
    if (ownDependencies.has(name) && !devVersions.has(typesName)) continue; // the package ships its own types
    const version = devVersions.get(typesName);
    if (!version) throw new ReleaseError(`the SDK's declarations use ${specifier}, but no workspace package.json declares ${typesName}`);
    needed.set(typesName, `^${version.replace(/^[\^~]/, '')}`);
  }
  return needed;
}

async function releaseTarget(target, packages, outDir, rootManifest) {
  const workspaceDir = path.join(root, target.workspace);
  const workspaceManifest = readJson(path.join(workspaceDir, 'package.json'));
  const template = readJson(path.join(root, target.template, 'package.json'));
  const closure = closureOf(workspaceDir, packages);
  const stage = mkdtempSync(path.join(tmpdir(), `${template.name}-`));
  try {
    const dist = path.join(stage, 'dist');
    mkdirSync(dist);
    await bundle(path.join(workspaceDir, target.entry), dist, closure, new Map());
    const specs = (deps) => Object.fromEntries([...deps].map(([name, { spec }]) => [name, spec]).sort(([a], [b]) => a.localeCompare(b)));
    const dependencies = specs(closure.dependencies);
    const optionalDependencies = specs(closure.optionalDependencies);
    if (target.types) {
      const declarations = bundleTypes(workspaceDir, target.entry, path.join(dist, path.basename(target.entry).replace(/\.js$/, '.d.ts')));
      const manifests = [...closure.members.values()].map((dir) => readJson(path.join(dir, 'package.json')));
      const ownDependencies = new Set([...closure.dependencies.keys(), ...closure.optionalDependencies.keys()]);
      for (const [name, spec] of typePackagesFor(declarations, manifests, ownDependencies)) dependencies[name] = spec;
    }
    const { name, description, ...rest } = template;
    const manifest = {
      name,
      version: workspaceManifest.version,
      description,
      ...rest,
      license: template.license ?? workspaceManifest.license,
      type: 'module',
      engines: rootManifest.engines,
      files: ['dist', ...(target.extra ?? []).map((file) => path.basename(file))],
      dependencies: Object.fromEntries(Object.entries(dependencies).sort(([a], [b]) => a.localeCompare(b))),
      ...(Object.keys(optionalDependencies).length > 0 ? { optionalDependencies } : {}),
    };
    writeFileSync(path.join(stage, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    copyFileSync(path.join(root, target.template, 'README.md'), path.join(stage, 'README.md'));
    copyFileSync(path.join(root, 'LICENSE'), path.join(stage, 'LICENSE'));
    for (const file of target.extra ?? []) copyFileSync(path.join(root, file), path.join(stage, path.basename(file)));
    const packed = spawnSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', outDir, stage], { encoding: 'utf8', cwd: stage });
    if (packed.status !== 0) throw new ReleaseError(`npm pack failed:\n${packed.stderr}`);
    const [{ filename }] = JSON.parse(packed.stdout);
    return path.join(outDir, filename);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

/**
 * `strata --version` prints core's STRATA_VERSION; a tarball whose version differs would make
 * it lie, so the release refuses.
 */
async function checkVersions(packages) {
  const { STRATA_VERSION } = await import(pathToFileURL(path.join(packages.get('@strata/core').dir, 'dist/index.js')).href);
  for (const target of TARGETS) {
    const { name, version } = readJson(path.join(root, target.workspace, 'package.json'));
    if (version !== STRATA_VERSION) {
      throw new ReleaseError(`${name} is version ${version} but @strata/core's STRATA_VERSION is ${STRATA_VERSION}: make them equal`);
    }
  }
}

async function main() {
  const { values } = parseArgs({ options: { out: { type: 'string', default: path.join(root, 'release') } } });
  const outDir = path.resolve(values.out);
  mkdirSync(outDir, { recursive: true });
  const packages = workspacePackages();
  await checkVersions(packages);
  const rootManifest = readJson(path.join(root, 'package.json'));
  // Tarballs of earlier versions would leave two candidates for "the" CLI in the folder.
  const names = TARGETS.map((target) => readJson(path.join(root, target.template, 'package.json')).name);
  for (const file of readdirSync(outDir)) {
    if (names.some((name) => new RegExp(`^${name}-\\d+\\.\\d+\\.\\d+.*\\.tgz$`).test(file))) rmSync(path.join(outDir, file));
  }
  for (const target of TARGETS) {
    const tarball = await releaseTarget(target, packages, outDir, rootManifest);
    console.log(path.relative(process.cwd(), tarball) || tarball);
  }
}

main().catch((err) => {
  console.error(err instanceof ReleaseError || err instanceof BundleError ? `release: ${err.message}` : err);
  process.exit(1);
});
