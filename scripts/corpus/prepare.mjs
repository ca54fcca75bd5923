// Gets what building PostgreSQL's regression database needs: the server's development files
// (pg_regress, PGXS), a C toolchain, the distribution's source package of the installed server's
// major version, and the tests' C helpers built from it. Everything built lands in a cache
// outside the repository, so only the first run pays for it.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

const isRoot = process.getuid?.() === 0;

/** The cache folder: STRATA_CORPUS_CACHE, else $XDG_CACHE_HOME/strata-corpus, else ~/.cache/strata-corpus. */
export function cacheDir() {
  if (process.env.STRATA_CORPUS_CACHE) return process.env.STRATA_CORPUS_CACHE;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'strata-corpus');
}

function run(cmd, args, options = {}) {
  return spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options });
}

function must(cmd, args, what, options = {}) {
  const result = run(cmd, args, options);
  if (result.status !== 0) {
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim().split('\n').slice(-20).join('\n');
    throw new Error(`${what} failed: ${cmd} ${args.join(' ')} (exit ${result.status ?? result.signal})\n${output}`);
  }
  return result.stdout;
}

/** The newest installed server major (or STRATA_CORPUS_PG_MAJOR), read from Debian's layout. */
function serverMajor() {
  if (process.env.STRATA_CORPUS_PG_MAJOR) return process.env.STRATA_CORPUS_PG_MAJOR;
  const base = '/usr/lib/postgresql';
  const majors = existsSync(base) ? readdirSync(base).filter((m) => existsSync(join(base, m, 'bin', 'postgres'))) : [];
  if (majors.length === 0) throw new Error('no PostgreSQL server found under /usr/lib/postgresql; install one, e.g. apt-get install postgresql-15');
  return majors.sort((a, b) => Number(b) - Number(a))[0];
}

function installedVersion(pkg) {
  const result = run('dpkg-query', ['-W', '-f=${Version}', pkg]);
  return result.status === 0 && result.stdout.trim() !== '' ? result.stdout.trim() : undefined;
}

function aptGet(args, what) {
  // Another process may hold the dpkg lock for a while; apt waits for it when told to.
  must('apt-get', ['-o', 'DPkg::Lock::Timeout=300', ...args], what, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, stdio: ['ignore', 'pipe', 'pipe'] });
}

function sourceVersions(pkg) {
  const result = run('apt-cache', ['showsrc', pkg]);
  if (result.status !== 0) return [];
  const versions = [...result.stdout.matchAll(/^Version: (.+)$/gm)].map((m) => m[1].trim());
  const sorted = [...new Set(versions)].sort((a, b) => (run('dpkg', ['--compare-versions', a, 'gt', b]).status === 0 ? -1 : 1));
  return sorted;
}

/**
 * Turns on source entries for the distribution's deb822 lists (`Types: deb` becomes
 * `Types: deb deb-src`). Running it again changes nothing: entries that already list deb-src
 * are left alone.
 */
function enableSourceLists() {
  const dir = '/etc/apt/sources.list.d';
  const changed = [];
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    if (!name.endsWith('.sources')) continue;
    const file = join(dir, name);
    const text = readFileSync(file, 'utf8');
    const next = text.replace(/^Types:\s*deb\s*$/gm, 'Types: deb deb-src');
    if (next !== text) {
      writeFileSync(file, next);
      changed.push(file);
    }
  }
  const classic = '/etc/apt/sources.list';
  if (existsSync(classic)) {
    const text = readFileSync(classic, 'utf8');
    const lines = text.split('\n');
    const sources = new Set(lines.filter((l) => /^deb-src\s/.test(l)).map((l) => l.replace(/^deb-src/, 'deb')));
    const missing = lines.filter((l) => /^deb\s/.test(l) && !sources.has(l)).map((l) => l.replace(/^deb/, 'deb-src'));
    if (missing.length > 0) {
      writeFileSync(classic, `${text.replace(/\n?$/, '\n')}${missing.join('\n')}\n`);
      changed.push(classic);
    }
  }
  return changed;
}

/** Installs the toolchain and the server's development files when missing (as root, with apt). */
function ensurePackages(major) {
  const needed = [
    ['dpkg-dev', 'dpkg-dev'],
    ['build-essential', 'build-essential'],
    [`postgresql-server-dev-${major}`, `postgresql-server-dev-${major}`],
  ].filter(([, pkg]) => installedVersion(pkg) === undefined);
  if (needed.length === 0) return;
  const pkgs = needed.map(([, pkg]) => pkg);
  if (!isRoot) throw new Error(`the corpus needs these packages: ${pkgs.join(' ')}. Install them, e.g.: sudo apt-get install ${pkgs.join(' ')}`);
  console.log(`corpus: installing ${pkgs.join(' ')} with apt`);
  aptGet(['install', '-y', '-qq', ...pkgs], 'installing build packages');
}

/**
 * Downloads and unpacks the source package into the cache: the installed server's version when
 * the archive still has it, else the newest the archive offers of the same major (the regression
 * tests of a minor release run against any server of its major).
 */
function ensureSource(major, cache) {
  const pkg = `postgresql-${major}`;
  const srcRoot = join(cache, 'src');
  const unpacked = () => (existsSync(srcRoot) ? readdirSync(srcRoot).filter((d) => d.startsWith(`${pkg}-`) && existsSync(join(srcRoot, d, 'src', 'test', 'regress', 'parallel_schedule'))) : []);
  if (unpacked().length > 0) return join(srcRoot, unpacked().sort().at(-1));
  if (sourceVersions(pkg).length === 0) {
    if (!isRoot) throw new Error(`apt has no source entries for ${pkg}: enable deb-src in /etc/apt/sources.list.d and run apt-get update, then run this again`);
    const changed = enableSourceLists();
    console.log(`corpus: enabling deb-src (${changed.join(', ') || 'nothing to change'}) and running apt-get update`);
    aptGet(['update', '-qq'], 'apt-get update');
  }
  if (run('sh', ['-c', 'command -v dpkg-source']).status !== 0) throw new Error('dpkg-source is missing: apt-get install dpkg-dev');
  const installed = installedVersion(pkg);
  const candidates = [...new Set([installed, ...sourceVersions(pkg)].filter(Boolean))];
  if (candidates.length === 0) throw new Error(`apt knows no source package ${pkg}`);
  mkdirSync(srcRoot, { recursive: true });
  const failures = [];
  for (const version of candidates) {
    console.log(`corpus: apt-get source ${pkg}=${version} into ${srcRoot}`);
    const result = run('apt-get', ['source', '-qq', '--only-source', `${pkg}=${version}`], { cwd: srcRoot });
    if (result.status === 0 && unpacked().length > 0) {
      if (installed && version !== installed) console.log(`corpus: the archive no longer has the source of ${installed}; using ${version} (same major)`);
      return join(srcRoot, unpacked().sort().at(-1));
    }
    failures.push(`${version}: ${(result.stderr || result.stdout).trim().split('\n').slice(-2).join(' ')}`);
  }
  throw new Error(`could not download the source of ${pkg}:\n  ${failures.join('\n  ')}`);
}

/**
 * Builds regress.so (the tests' C helper) with PGXS against the installed server, and collects it
 * with the contrib/spi modules the trigger tests load (autoinc, refint; Debian ships them with
 * the server) into one folder for pg_regress --dlpath.
 */
function ensureHelpers(major, sourceDir, cache) {
  const pgConfig = `/usr/lib/postgresql/${major}/bin/pg_config`;
  const serverVersion = must(pgConfig, ['--version'], 'pg_config').trim().replace(/^PostgreSQL\s+/, '').split(/\s/)[0];
  const build = join(cache, 'build', `${major}-${serverVersion}-${sourceDir.split('/').at(-1)}`);
  const lib = join(build, 'lib');
  const pkglibdir = must(pgConfig, ['--pkglibdir'], 'pg_config').trim();
  const modules = ['regress', 'autoinc', 'refint'];
  if (modules.every((m) => existsSync(join(lib, `${m}.so`)))) return { lib, serverVersion };
  console.log(`corpus: building regress.so against PostgreSQL ${serverVersion} in ${build}`);
  rmSync(build, { recursive: true, force: true });
  mkdirSync(lib, { recursive: true });
  copyFileSync(join(sourceDir, 'src', 'test', 'regress', 'regress.c'), join(build, 'regress.c'));
  writeFileSync(join(build, 'Makefile'), `MODULES = regress\nPG_CONFIG = ${pgConfig}\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n`);
  must('make', ['-s', '-C', build], 'building regress.so');
  copyFileSync(join(build, 'regress.so'), join(lib, 'regress.so'));
  for (const m of ['autoinc', 'refint']) {
    const file = join(pkglibdir, `${m}.so`);
    if (!existsSync(file)) throw new Error(`${file} is missing: it comes with postgresql-${major} (contrib/spi)`);
    copyFileSync(file, join(lib, `${m}.so`));
  }
  return { lib, serverVersion };
}

/**
 * Everything the corpus build needs, installed and built if missing.
 * @returns {{ major: string, bindir: string, pgRegress: string, regressDir: string, lib: string, serverVersion: string, sourceVersion: string, cache: string }}
 */
export function prepareCorpusTools() {
  const cache = cacheDir();
  mkdirSync(cache, { recursive: true });
  const major = serverMajor();
  ensurePackages(major);
  const bindir = `/usr/lib/postgresql/${major}/bin`;
  const pgRegress = `/usr/lib/postgresql/${major}/lib/pgxs/src/test/regress/pg_regress`;
  if (!existsSync(pgRegress)) throw new Error(`${pgRegress} is missing: it comes with postgresql-server-dev-${major}`);
  const sourceDir = ensureSource(major, cache);
  const { lib, serverVersion } = ensureHelpers(major, sourceDir, cache);
  return {
    major,
    bindir,
    pgRegress,
    regressDir: join(sourceDir, 'src', 'test', 'regress'),
    lib,
    serverVersion,
    sourceVersion: sourceDir.split('/').at(-1).replace(`postgresql-${major}-`, ''),
    cache,
  };
}
