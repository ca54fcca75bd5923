// Builds the `regression` database the way `make installcheck-parallel` does: pg_regress runs the
// source's parallel_schedule against a running server. What we keep is the database the tests
// leave behind; whether pg_regress's own output comparisons pass does not matter here. The
// finished cluster is cached (stopped, as a tarball) so later runs skip the tests.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { runAsServerUser, serverOwnedDir } from './cluster.mjs';

function tar(args, what) {
  const result = spawnSync('tar', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${what} failed: tar ${args.join(' ')}\n${result.stderr}`);
}

/**
 * Puts the tests' C helpers where the server can load them. The tests create functions with the
 * helper's absolute path (`AS '/.../regress.so'`), and pg_dump and Strata carry that path into
 * every restore, so it must be the same on every run, also for a cached cluster.
 */
export function installHelpers(tools) {
  const lib = join(tmpdir(), `strata-corpus-lib-${basename(dirname(tools.lib))}`);
  cpSync(tools.lib, lib, { recursive: true });
  serverOwnedDir(lib);
  return lib;
}

/** The cached cluster's file, one per server version and regression source. */
export function cachedClusterFile(tools) {
  return join(tools.cache, 'clusters', `regression-pg${tools.serverVersion}-src${tools.sourceVersion}.tar.gz`);
}

/**
 * Runs pg_regress into `cluster` (started, empty), then stops it and caches its data folder.
 * @returns {{ summary: string, seconds: number }}
 */
export async function buildRegressionDatabase(tools, cluster) {
  const work = join(cluster.dir, 'regress');
  // The server reads the tests' data files and writes results (COPY TO) itself, so the test tree
  // must be a copy the server's user owns, not the cache (which may sit in a private home).
  cpSync(tools.regressDir, work, { recursive: true });
  serverOwnedDir(work);
  const lib = installHelpers(tools);
  const args = [
    `--inputdir=${work}`,
    `--outputdir=${work}`,
    `--bindir=${tools.bindir}`,
    `--dlpath=${lib}`,
    `--host=${cluster.host}`,
    `--port=${cluster.port}`,
    '--user=postgres',
    '--max-concurrent-tests=20',
    `--schedule=${join(work, 'parallel_schedule')}`,
  ];
  console.log(`corpus: pg_regress --schedule=parallel_schedule on port ${cluster.port} (PostgreSQL's own regression tests, a few minutes)`);
  const started = Date.now();
  const result = runAsServerUser(tools.pgRegress, args, { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
  const seconds = (Date.now() - started) / 1000;
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  const summary = output.match(/(All \d+ tests passed\.|\d+ of \d+ tests failed(?:, \d+ of these failures ignored)?\.)/)?.[1];
  if (summary === undefined) {
    throw new Error(`pg_regress did not finish its schedule (exit ${result.status ?? result.signal}):\n${output.split('\n').slice(-30).join('\n')}`);
  }
  const failed = [...output.matchAll(/^\s*(\S+)\s+\.\.\. FAILED/gm)].map((m) => m[1]);
  const note = failed.length > 0 ? ` (failed in pg_regress's own comparison: ${failed.join(', ')}; only the database they leave matters here)` : '';
  console.log(`corpus: pg_regress: ${summary}${note} in ${seconds.toFixed(0)} s`);
  return { summary: `${summary}${note}`, seconds };
}

/** Saves the stopped cluster's data folder for the next run, with pg_regress's summary. */
export function cacheCluster(tools, cluster, summary) {
  const file = cachedClusterFile(tools);
  mkdirSync(join(tools.cache, 'clusters'), { recursive: true });
  writeFileSync(`${file}.txt`, `${summary}\n`);
  rmSync(`${file}.partial`, { force: true });
  tar(['-czf', `${file}.partial`, '-C', cluster.dir, 'data'], 'caching the regression cluster');
  spawnSync('mv', [`${file}.partial`, file]);
  return file;
}

/** What pg_regress said when it built the cached cluster. */
export function cachedClusterSummary(tools) {
  const file = `${cachedClusterFile(tools)}.txt`;
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : 'unknown';
}

/** Unpacks the cached cluster into `cluster.dir`; false when there is none. */
export function restoreCachedCluster(tools, cluster) {
  const file = cachedClusterFile(tools);
  if (!existsSync(file)) return false;
  serverOwnedDir(cluster.dir);
  serverOwnedDir(cluster.socketDir);
  // As root, tar keeps the files' owner (postgres); the server refuses a data folder it does not own.
  tar(['-xzf', file, '-C', cluster.dir], 'unpacking the cached regression cluster');
  installHelpers(tools);
  return existsSync(join(cluster.dataDir, 'PG_VERSION')) && readFileSync(join(cluster.dataDir, 'PG_VERSION'), 'utf8').trim() === tools.major;
}

/**
 * Starts `cluster` (not yet initialised) holding the regression database: the cached one, or a new
 * one built by pg_regress (and cached) when there is none or `rebuild` is set. Returns what
 * pg_regress said when it built it.
 */
export async function startRegressionCluster(tools, cluster, { rebuild = false, say = console.log } = {}) {
  if (!rebuild && restoreCachedCluster(tools, cluster)) {
    say(`reusing the regression cluster cached in ${cachedClusterFile(tools)} (--rebuild runs pg_regress again)`);
    await cluster.start();
    return `cached cluster; when built: ${cachedClusterSummary(tools)}`;
  }
  cluster.init();
  await cluster.start();
  const built = await buildRegressionDatabase(tools, cluster);
  cluster.stop();
  say(`caching the cluster in ${cacheCluster(tools, cluster, built.summary)}`);
  await cluster.start();
  return built.summary;
}
