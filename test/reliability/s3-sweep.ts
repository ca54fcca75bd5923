/**
 * The SIGKILL sweep on an S3 repository: full and incremental backups and prunes of a repository
 * in a bucket, each killed at a random moment of its run (seeded), the next operation run after
 * every kill, as cron would. It counts what a user would call damage:
 *
 * - corrupt repositories: the catalog does not read (`list` fails), or a listed backup fails
 *   `verify --level quick` (checked every 10 kills and at the end);
 * - lost backups: a backup whose CLI exited 0 is no longer listed, and no prune the sweep ran
 *   planned to remove it (each prune's plan is taken with `--dry-run` just before it runs);
 * - leftovers, after a final uncut backup has recovered the repository: pending notes, lock and
 *   deletion notes, catalog generations a commit should have deleted, artifacts and cached copies
 *   the catalog does not list, and incomplete multipart uploads.
 *
 * Run by `npm run test:soak -- --only s3` (scripts/soak.mjs) and, a few kills, by
 * test/s3-kill-sweep.test.ts.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { openStorage } from '@strata/sdk';
import { CLI, TEST_PASSPHRASE } from '../helpers/env.js';
import { Buckets, s3Configured } from '../helpers/s3.js';
import { rng } from './scenarios.js';
import type { ScenarioResult } from './scenarios.js';

export interface S3SweepResult extends ScenarioResult {
  /** Runs the kill really ended (the others had finished first). */
  readonly kills: number;
  readonly completedBackups: number;
  readonly prunedByPolicy: number;
  readonly lostBackups: number;
  readonly corruptRepositories: number;
  readonly leftovers: number;
  readonly incompleteUploads: number;
  /** How many runs of each operation, and how many of them were killed. */
  readonly perOperation: Record<string, { runs: number; killed: number }>;
}

export interface S3SweepOptions {
  readonly seed: number;
  readonly kills: number;
  /** A local folder for the database and the CLI's working directory. */
  readonly work: string;
  /** `s3://bucket/prefix` of an empty place for the repository. */
  readonly location: string;
  /** The environment the CLI needs for the server (AWS_ENDPOINT_URL and credentials). */
  readonly env: Record<string, string>;
  /** Multipart uploads under the repository's prefix that were started and never completed or aborted. */
  incompleteUploads(): Promise<number>;
  /** The part size the CLI uses (bytes, the storage's "partSize" setting); small, so backups are multipart. */
  readonly partSize?: number;
  /** Prints one line per kill when set. */
  readonly log?: (line: string) => void;
}

type Operation = 'full' | 'incremental' | 'prune';

interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the CLI; with `killAfterMs`, SIGKILLs it then unless it has exited. */
function cli(args: string[], options: S3SweepOptions, killAfterMs?: number): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.work,
    env: { ...process.env, ...options.env, STRATA_PASSPHRASE: TEST_PASSPHRASE },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  return new Promise((resolve) =>
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: Date.now() - started });
    }),
  );
}

interface Listed {
  id: string;
  key: string;
  database: string;
  encryption: { profile: string };
}

const PRUNE_KEEP = ['--keep-last', '3'];

/** The ids a prune's plan removes (its `remove` entries are ids or `{ id }`). */
function removedIds(stdout: string): string[] {
  const plan = JSON.parse(stdout) as { remove?: Array<string | { id: string }> };
  return (plan.remove ?? []).map((r) => (typeof r === 'string' ? r : r.id));
}

export async function s3CrashSweep(options: S3SweepOptions): Promise<S3SweepResult> {
  const random = rng(options.seed);
  const problems: string[] = [];
  const perOperation: Record<string, { runs: number; killed: number }> = {};
  mkdirSync(options.work, { recursive: true });
  if (options.partSize !== undefined) writeFileSync(path.join(options.work, 'strata.config.json'), JSON.stringify({ storage: { partSize: options.partSize } }));

  // 6 MiB of random pages: an artifact of two parts at the smallest part size S3 allows, so a
  // kill often lands while parts are in flight; an incremental changes a few pages.
  const db = path.join(options.work, 's3sweep.db');
  const source = new Database(db);
  source.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)');
  const insert = source.prepare('INSERT INTO blobs(data) VALUES (randomblob(65536))');
  source.transaction(() => {
    for (let i = 0; i < 96; i++) insert.run();
  })();
  source.close();

  const repo = ['--repo', options.location];
  const must = async (args: string[], what: string): Promise<Run> => {
    const run = await cli(args, options);
    if (run.status !== 0) throw new Error(`s3 sweep: ${what} failed (exit ${run.status}): ${run.stderr.trim().slice(0, 500)}`);
    return run;
  };
  await must(['init', ...repo, '--json'], 'init');
  const first = await must(['backup', db, ...repo, '--json'], 'the first backup');

  /** Backups whose CLI exited 0 and that no prune has removed by its policy since. */
  const expected = new Set<string>([(JSON.parse(first.stdout) as { id: string }).id]);
  let completedBackups = 1;
  let prunedByPolicy = 0;
  let lostBackups = 0;
  let corruptRepositories = 0;
  let kills = 0;
  let runs = 0;
  const length = new Map<Operation, number>();

  const listed = async (where: string): Promise<Listed[] | undefined> => {
    const run = await cli(['list', ...repo, '--json'], options);
    if (run.status !== 0) {
      corruptRepositories++;
      problems.push(`${where}: the catalog does not read: ${run.stderr.trim().slice(0, 300)}`);
      return undefined;
    }
    return (JSON.parse(run.stdout) as { backups: Listed[] }).backups;
  };
  const verifyAll = async (where: string): Promise<void> => {
    const run = await cli(['verify', '--all', '--level', 'quick', ...repo, '--json'], options);
    if (run.status !== 0) {
      corruptRepositories++;
      problems.push(`${where}: a listed backup fails verify --level quick (exit ${run.status}): ${(run.stdout + run.stderr).trim().slice(0, 400)}`);
    }
  };

  const maxRuns = options.kills * 4 + 20;
  for (let i = 0; kills < options.kills && i < maxRuns; i++) {
    const draw = random();
    const op: Operation = draw < 0.35 ? 'full' : draw < 0.75 ? 'incremental' : 'prune';
    const where = `run ${i} (${op})`;
    let plan: string[] = [];
    if (op === 'incremental') {
      const w = new Database(db);
      w.prepare('UPDATE blobs SET data = randomblob(65536) WHERE id = ?').run(1 + Math.floor(random() * 96));
      w.close();
    }
    if (op === 'prune') {
      const dry = await cli(['prune', ...repo, ...PRUNE_KEEP, '--dry-run', '--json'], options);
      if (dry.status === 0) plan = removedIds(dry.stdout);
      else problems.push(`${where}: prune --dry-run failed: ${dry.stderr.trim().slice(0, 300)}`);
    }
    const args = op === 'prune' ? ['prune', ...repo, ...PRUNE_KEEP, '--json'] : ['backup', db, ...repo, '--type', op, '--json'];
    // The first run of each operation goes uncut, to learn how long it takes; every later one is
    // killed at a moment drawn from that whole length (so the commit at its end is hit too).
    const measuring = !length.has(op);
    const killAt = measuring ? undefined : Math.floor(random() * length.get(op)!);
    const run = await cli(args, options, killAt);
    runs++;
    const stats = (perOperation[op] ??= { runs: 0, killed: 0 });
    stats.runs++;
    const killed = run.signal === 'SIGKILL';
    if (killed) {
      kills++;
      stats.killed++;
    } else {
      length.set(op, Math.max(run.ms, length.get(op) ?? 0));
      if (run.status === 0 && op !== 'prune') {
        expected.add((JSON.parse(run.stdout) as { id: string }).id);
        completedBackups++;
      } else if (run.status !== 0) {
        // An uncut run must succeed: the kill before it must not have left something in its way.
        problems.push(`${where}: failed after a kill (exit ${run.status}): ${run.stderr.trim().slice(0, 300)}`);
      }
    }
    options.log?.(`${where}: ${killed ? `killed at ${killAt} ms` : `exit ${run.status} in ${run.ms} ms`}`);

    const backups = await listed(where);
    if (!backups) continue;
    const ids = new Set(backups.map((b) => b.id));
    for (const id of [...expected]) {
      if (ids.has(id)) continue;
      expected.delete(id);
      if (op === 'prune' && plan.includes(id)) prunedByPolicy++;
      else {
        lostBackups++;
        problems.push(`${where}: backup ${id} (its CLI exited 0) is no longer listed`);
      }
    }
    if (killed && kills % 10 === 0) await verifyAll(where);
  }
  if (kills < options.kills) problems.push(`only ${kills} of ${runs} runs were ended by the kill; ${options.kills} were asked for`);

  // The next uncut run recovers what the last kill left; then nothing may be left over.
  const last = await cli(['backup', db, ...repo, '--json'], options);
  if (last.status !== 0) problems.push(`the final backup failed: ${last.stderr.trim().slice(0, 300)}`);
  else expected.add((JSON.parse(last.stdout) as { id: string }).id);
  await verifyAll('at the end');
  const backups = (await listed('at the end')) ?? [];
  const ids = new Set(backups.map((b) => b.id));
  for (const id of expected) {
    if (!ids.has(id)) {
      lostBackups++;
      problems.push(`at the end: backup ${id} (its CLI exited 0) is no longer listed`);
    }
  }
  const left = await repositoryLeftovers(options.location, backups);
  const incompleteUploads = await options.incompleteUploads();
  for (const key of left) problems.push(`left behind after recovery: ${key}`);
  if (incompleteUploads > 0) problems.push(`${incompleteUploads} incomplete multipart upload(s) left after recovery`);
  return {
    scenario: 's3 crash (SIGKILL)',
    runs,
    detected: kills,
    kills,
    completedBackups,
    prunedByPolicy,
    lostBackups,
    corruptRepositories,
    leftovers: left.length,
    incompleteUploads,
    perOperation,
    problems,
  };
}

/** Objects a recovered repository must not hold (see the file's comment). */
export async function repositoryLeftovers(location: string, backups: readonly Listed[]): Promise<string[]> {
  const storage = openStorage(location);
  const keys: string[] = [];
  for await (const object of storage.list('')) keys.push(object.key);
  const listedKeys = new Set(backups.map((b) => b.key));
  const listedIds = new Set(backups.map((b) => b.id));
  const generations = keys.filter((k) => /^catalog\/\d{12}\.json$/.test(k)).sort();
  return [
    ...keys.filter((k) => k.startsWith('pending/') || /^locks\/(?!$)/.test(k)),
    ...generations.slice(0, -1),
    ...keys.filter((k) => k.startsWith('backups/') && !listedKeys.has(k)).map((k) => `${k} (not in the catalog)`),
    // cache/layouts/<db>/<id>.idx[.gpg], cache/facts/<db>/<id>.json[.gpg]
    ...keys.filter((k) => k.startsWith('cache/') && !listedIds.has(path.posix.basename(k).replace(/\.(idx|json)(\.gpg)?$/, ''))).map((k) => `${k} (of no listed backup)`),
  ];
}

/**
 * The sweep on the test server the environment names (AWS_ENDPOINT_URL and credentials, as
 * scripts/s3/start-s3.sh prints them), in a bucket of its own that is removed afterwards; with 5 MiB
 * parts, so backups are multipart uploads. Without a server: `skipped` says why.
 */
export async function s3SweepWithServer(options: { seed: number; kills: number; work: string; log?: (line: string) => void }): Promise<(S3SweepResult & { skipped?: undefined }) | { skipped: string }> {
  if (!s3Configured()) return { skipped: 'no S3 server configured (start one with bash scripts/s3/start-s3.sh and export what it prints)' };
  const buckets = new Buckets();
  const bucket = await buckets.create();
  try {
    const env: Record<string, string> = {};
    for (const name of ['AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3', 'AWS_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) if (process.env[name]) env[name] = process.env[name]!;
    return await s3CrashSweep({
      ...options,
      location: `s3://${bucket}/sweep`,
      env,
      partSize: 5 * 1024 * 1024,
      incompleteUploads: async () => (await buckets.uploads(bucket)).filter((key) => key.startsWith('sweep/')).length,
    });
  } finally {
    await buckets.removeAll();
  }
}
