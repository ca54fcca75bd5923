import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initRepository, openRepository } from '@strata/sdk';
import type { Engine, Passphrase, Repository, TableStats } from '@strata/sdk';

/** The repository root (tests run from .build/test/...). */
export const ROOT = path.resolve(fileURLToPath(new URL('../../..', import.meta.url)));
/**
 * The `strata` the tests run: the bundle scripts/test.mjs makes (the release's bundling, and a
 * third less CPU per start), or the compiled packages/cli when a test file is run on its own. A
 * failure only the bundle shows comes back with STRATA_TEST_CLI=.build/cli/dist/main.js after
 * `node -e "import('./scripts/bundle.mjs').then((b) => b.bundleCliForTests())"`.
 */
export const CLI = process.env.STRATA_TEST_CLI ?? path.join(ROOT, 'packages/cli/dist/main.js');
export const FIXTURE_DB = path.join(ROOT, 'fixtures/sample.db');
export const TEST_PASSPHRASE = 'correct horse battery staple';

/**
 * The file of a repository's catalog as Strata reads it: its newest generation (docs/FORMAT.md,
 * `catalog/`). Tests that tamper with the catalog edit this file in place, as a person would.
 */
export function catalogPath(repo: string): string {
  const generations = existsSync(path.join(repo, 'catalog')) ? readdirSync(path.join(repo, 'catalog')).filter((f) => /^\d{12}\.json$/.test(f)).sort() : [];
  if (generations.length === 0) throw new Error(`${repo} has no catalog generation`);
  return path.join(repo, 'catalog', generations.at(-1)!);
}

/**
 * Records in the catalog that a full verification of `backupId` found its restored rows wrong, as
 * the validator records it. No real backup of ours restores wrong rows to make it happen (that
 * would be the very bug verify exists to catch), so the tests of what follows from such a finding
 * write it; `checkName` is the check that failed.
 */
export function recordContentFailure(repo: string, backupId: string, checkName = 'data-consistency'): void {
  const file = catalogPath(repo);
  const catalog = JSON.parse(readFileSync(file, 'utf8')) as { backups: { id: string; verification?: unknown }[] };
  const record = catalog.backups.find((b) => b.id === backupId);
  if (!record) throw new Error(`${backupId} is not in the catalog of ${repo}`);
  record.verification = {
    at: new Date().toISOString(),
    level: 'full',
    outcome: 'failed',
    checks: ['file-accessibility', 'checksum-match', 'database-readable', 'schema-integrity', 'data-consistency'].map((name) =>
      name === checkName ? { name, status: 'failed', reason: 'table t: 2 rows restored, 3 recorded' } : { name, status: 'passed', reason: 'as recorded' },
    ),
  };
  writeFileSync(file, JSON.stringify(catalog));
}

/** Loses a repository's catalog (every generation), as a person deleting it would. */
export function removeCatalog(repo: string): void {
  rmSync(path.join(repo, 'catalog'), { recursive: true, force: true });
}

/** The journal's files (one per record, and segments of several), in the order their names sort. */
export function journalFiles(repo: string): string[] {
  const dir = path.join(repo, 'journal');
  return existsSync(dir) ? readdirSync(dir).sort().map((f) => path.join(dir, f)) : [];
}

/** Every line of the journal: one JSON record each. */
export function journalLines(repo: string): string[] {
  return journalFiles(repo).flatMap((f) => readFileSync(f, 'utf8').split('\n').filter((l) => l.trim()));
}

/**
 * A fresh folder per test, removed afterwards. Call inside a `describe`; the folder of the
 * current test is `dirs.current`.
 */
export function useTempDir(): { readonly path: string } {
  const holder = { path: '' };
  beforeEach(() => {
    holder.path = mkdtempSync(path.join(tmpdir(), 'strata-test-'));
  });
  afterEach(() => {
    rmSync(holder.path, { recursive: true, force: true });
  });
  return holder;
}

/**
 * A folder made once for a whole `describe` and removed after it: for a fixture that costs many
 * CLI runs, built once by the suite's `before` and copied by each test (see `copyInto`) instead of
 * being built again for every test.
 */
export function useSuiteDir(): { readonly path: string } {
  const holder = { path: '' };
  before(() => {
    holder.path = mkdtempSync(path.join(tmpdir(), 'strata-fixture-'));
  });
  after(() => {
    rmSync(holder.path, { recursive: true, force: true });
  });
  return holder;
}

/** Copies everything in `from` into `to` (modes kept), so a test gets its own copy of a built fixture. */
export function copyInto(from: string, to: string): void {
  cpSync(from, to, { recursive: true });
}

/** What a CLI run produced. */
export interface CliResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the real `strata` binary in a child process, with a passphrase in its environment by default. */
export function strata(args: string[], options: { cwd?: string; env?: Record<string, string | undefined>; input?: string } = {}): CliResult {
  const env: Record<string, string | undefined> = { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE, ...options.env };
  for (const key of Object.keys(env)) if (env[key] === undefined) delete env[key];
  const result = spawnSync(process.execPath, [CLI, ...args], {
    cwd: options.cwd ?? ROOT,
    env: env as NodeJS.ProcessEnv,
    encoding: 'utf8',
    input: options.input ?? '',
    maxBuffer: 64 * 1024 * 1024,
  });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** Runs the CLI asynchronously (for kill tests and concurrency). */
export function strataAsync(args: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}): ChildProcess {
  const env = { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE, ...options.env };
  return spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? ROOT, env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Waits for a child to exit and returns its status and output. */
export function finished(child: ChildProcess): Promise<CliResult & { signal: NodeJS.Signals | null }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (status, signal) => resolve({ status: status ?? -1, signal, stdout, stderr })));
}

/** `sqlite3 FILE .dump` with the real sqlite3 command line tool (an oracle independent of Strata). */
export function sqliteDump(file: string): string {
  const result = spawnSync('sqlite3', [file, '.dump'], { encoding: 'utf8', maxBuffer: 1024 * 1024 * 1024 });
  if (result.status !== 0) throw new Error(`sqlite3 .dump ${file} failed: ${result.stderr}`);
  return result.stdout;
}

/** `sqlite3 FILE SQL` output. */
export function sqliteQuery(file: string, sql: string): string {
  const result = spawnSync('sqlite3', [file, sql], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`sqlite3 ${file} failed: ${result.stderr}`);
  return result.stdout.trim();
}

/** Parses the single JSON document a `--json` run printed on stdout. */
export function json<T = Record<string, unknown>>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`stdout is not one JSON document:\n${result.stdout}\nstderr:\n${result.stderr}`);
  }
}

/**
 * Skips a test with one line saying what is missing; under CI=true, where everything the tests
 * need is installed by scripts/test-tools.mjs, it is a failure instead.
 */
export function skipOrFail(context: Mocha.Context, message: string): never {
  if (process.env['CI']) throw new Error(`${message}; under CI=true this is a failure, not a skip`);
  console.log(`      skipping: ${message}`);
  context.skip();
}

/** The table facts a backup of `locator` would record now: a snapshot read to its end, as a backup reads it. */
export async function factsAtBackup(engine: Engine, locator: string, tempDir: string): Promise<readonly TableStats[]> {
  const snapshot = await engine.snapshot(locator, { schemaOnly: false, tempDir });
  try {
    for (const stream of snapshot.streams) for await (const _ of stream.open()) void _;
    return await snapshot.tableStats();
  } finally {
    await snapshot.close();
  }
}

/** Collects the messages of the Node warnings `work` emits (the engines' way of saying what they left out or changed; the CLI prints them on stderr). */
export async function warningsOf<T>(work: () => Promise<T>): Promise<{ result: T; warnings: string[] }> {
  const warnings: string[] = [];
  const listener = (w: Error): void => void warnings.push(w.message);
  process.on('warning', listener);
  try {
    const result = await work();
    // Warnings are delivered on the next turn of the event loop.
    await new Promise((resolve) => setImmediate(resolve));
    return { result, warnings };
  } finally {
    process.off('warning', listener);
  }
}

/**
 * A new encrypted repository in `dir` for each test of the suite, opened with `passphrase` (its
 * temporary folder beside it), closed after the test, then `cleanup` (the test databases dropped).
 * Returns the current test's repository.
 */
export function useRepositoryPerTest(dir: { readonly path: string }, passphrase: Passphrase, cleanup: () => Promise<void> = async () => undefined): () => Repository {
  let repo: Repository | undefined;
  beforeEach(async () => {
    await initRepository(path.join(dir.path, 'repo'), { encryption: 'compat', passphrase });
    repo = await openRepository(path.join(dir.path, 'repo'), { passphrase, tempDir: path.join(dir.path, 'tmp') });
  });
  afterEach(async () => {
    await repo?.close();
    repo = undefined;
    await cleanup();
  });
  return () => {
    if (!repo) throw new Error('the repository is opened for each test, not outside one');
    return repo;
  };
}
