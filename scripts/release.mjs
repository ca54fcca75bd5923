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
// package.json declares stops the release.
//
// The SDK's types are one declaration file made by dts-bundle-generator from the compiled
// declarations, with the @strata/* types inlined; @types/* packages the public types need are
// declared as the SDK's dependencies.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire, isBuiltin } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const typescript = createRequire(import.meta.url)('typescript');
const WORKSPACE_SCOPE = '@strata/';

/** What goes out, and where from. The templates hold the published name, metadata and README. */
const TARGETS = [
  // The systemd unit the README installs: a user without a clone takes it from the package.
  { template: 'packaging/strata-backup', workspace: 'packages/cli', entry: 'dist/main.js', types: false, extra: ['docs/strata-daemon.service'] },
  { template: 'packaging/strata-backup-sdk', workspace: 'packages/sdk', entry: 'dist/index.js', types: true },
];

class ReleaseError extends Error {}

function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** Every workspace package by name: its folder and package.json. */
function workspacePackages() {
  const byName = new Map();
  for (const dir of readdirSync(path.join(root, 'packages'))) {
    const file = path.join(root, 'packages', dir, 'package.json');
    if (existsSync(file)) byName.set(readJson(file).name, { dir: path.join(root, 'packages', dir), manifest: readJson(file) });
  }
  return byName;
}

/** The package name a bare import specifier refers to: `pg`, `@scope/x` (from `@scope/x/sub`). */
function packageNameOf(specifier) {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

/**
 * The workspace packages a target is made of (itself and its `workspace:` dependencies, all the
 * way down) and the third-party dependencies they declare, each at one version.
 */
function closureOf(targetDir, packages) {
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
          if (!member) throw new ReleaseError(`${manifest.name} depends on ${name} (${spec}), which is not a package of this workspace`);
          visit(member.dir, member.manifest);
        } else if (/^(file|link|portal|patch):/.test(spec)) {
          throw new ReleaseError(`${manifest.name} depends on ${name}@${spec}, which an installed package cannot`);
        } else {
          const seen = into.get(name);
          if (seen && seen.spec !== spec) {
            throw new ReleaseError(`${name} is declared at two versions: ${seen.spec} by ${seen.by}, ${spec} by ${manifest.name}; use one`);
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
 * Bundles one entry file. esbuild leaves `new URL('./x', import.meta.url)` alone, but after
 * bundling the code no longer sits where the path was written from, so (as Vite and Parcel do)
 * every such reference is rewritten to a file next to the bundle: a worker script (.js) is
 * bundled there too, any other file is copied there.
 */
async function bundle(entry, outDir, closure, written) {
  const members = [...closure.members.values()];
  const declared = new Set([...closure.dependencies.keys(), ...closure.optionalDependencies.keys()]);
  const references = [];
  const assets = new Map();
  const claim = (base, from) => {
    const owner = written.get(base);
    if (owner && owner !== from) throw new ReleaseError(`two files would both be ${base} in the package: ${owner} and ${from}`);
    written.set(base, from);
  };
  const plugin = {
    name: 'strata-release',
    setup(esb) {
      esb.onResolve({ filter: /^[^./]/ }, (args) => {
        if (isBuiltin(args.path)) return { path: args.path, external: true };
        const name = packageNameOf(args.path);
        if (name.startsWith(WORKSPACE_SCOPE)) {
          if (!closure.members.has(name)) throw new ReleaseError(`${path.relative(root, args.importer)} imports ${name}, which its package.json does not declare`);
          return undefined; // bundled: esbuild resolves it through the workspace's node_modules
        }
        if (!declared.has(name)) throw new ReleaseError(`${path.relative(root, args.importer)} imports ${args.path}, but no package.json of the workspace packages bundled here declares ${name}`);
        return { path: args.path, external: true };
      });
      esb.onLoad({ filter: /\.js$/ }, (args) => {
        if (!members.some((dir) => args.path.startsWith(dir + path.sep))) return undefined;
        const source = readFileSync(args.path, 'utf8');
        const contents = source.replace(URL_REFERENCE, (_match, quote, relative) => {
          const target = path.resolve(path.dirname(args.path), relative);
          if (!existsSync(target)) throw new ReleaseError(`${args.path} refers to ${relative}, which does not exist (${target})`);
          const base = path.basename(target);
          claim(base, target);
          if (target.endsWith('.js')) references.push(target);
          else assets.set(base, target);
          return `new URL(${quote}./${base}${quote}, import.meta.url)`;
        });
        return { contents, loader: 'js' };
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
    // A plugin's ReleaseError arrives wrapped in esbuild's report; say it once, plainly.
    if (!Array.isArray(err?.errors)) throw err;
    throw new ReleaseError(`bundling ${path.relative(root, entry)} failed:\n${err.errors.map((e) => `  ${e.text}`).join('\n')}`);
  }
  for (const warning of result.warnings) console.warn(`release: esbuild: ${warning.text}`);
  for (const [base, from] of assets) copyFileSync(from, path.join(outDir, base));
  for (const worker of references) {
    if (!existsSync(path.join(outDir, path.basename(worker)))) await bundle(worker, outDir, closure, written);
  }
}

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
  console.error(err instanceof ReleaseError ? `release: ${err.message}` : err);
  process.exit(1);
});
