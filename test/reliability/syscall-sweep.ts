/**
 * The crash sweep at exact system calls: every rename, unlink, link and fsync (and a spread of
 * writes) that an operation makes is, one run at a time, the moment the process is killed
 * (`strace -f -e inject=SYSCALL:signal=KILL:when=N`). After each kill the repository is checked as
 * a user would find it, then the same command runs again, as cron would run it, and the leftovers
 * are counted. Random kills (scenarios.ts crashSweep) find the common windows; this finds the
 * narrow ones between two system calls.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import type { BackupRecord } from '@strata/sdk';
import { buildRichDatabase, mutate } from '../helpers/databases.js';
import { CLI, TEST_PASSPHRASE, sqliteDump } from '../helpers/env.js';

/** The operations the sweep kills, each with the command that the "next run" repeats. */
export const SWEPT_OPERATIONS = ['backup', 'incremental', 'prune', 'delete', 'restore', 'import'] as const;
export type SweptOperation = (typeof SWEPT_OPERATIONS)[number];
export const SWEPT_SYSCALLS = ['rename', 'unlink', 'link', 'fsync', 'fdatasync', 'pwrite64', 'write'] as const;

export interface SyscallSweepResult {
  readonly scenario: string;
  readonly runs: number;
  /** Runs in which the process really died at the injected call. */
  readonly kills: number;
  readonly lostBackups: number;
  readonly missingTargets: number;
  readonly leftovers: number;
  readonly detected: number;
  readonly problems: string[];
  /** Runs per operation and system call, for docs/RELIABILITY.md. */
  readonly perCase: Record<string, number>;
}

interface Fixture {
  readonly template: string;
  readonly source: string;
  readonly ids: { full1: string; incr1: string; full2: string; incr2: string };
  /** `.dump` of the database each restore point holds, and of the restore target before the restore. */
  readonly dumps: { incr2: string; oldTarget: string };
}

function cli(args: string[], cwd: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE } });
  return { status: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
}

function must(args: string[], cwd: string): string {
  const result = cli(args, cwd);
  if (result.status !== 0) throw new Error(`strata ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

/** A work folder with two chains (full1 ← incr1, full2 ← incr2), a restore target and an export of the newest chain. */
function buildFixture(work: string): Fixture {
  // Built where every run takes place, then moved aside: each run copies it back to the same
  // path, so the sources its catalog recorded are the run's own (an incremental of a database at
  // another path is refused as another database).
  const built = path.join(work, 'run');
  const template = path.join(work, 'template');
  mkdirSync(built, { recursive: true });
  const source = path.join(built, 'app.db');
  buildRichDatabase(source, { rows: 120 });
  must(['init', '--repo', 'repo'], built);
  must(['init', '--repo', 'import-target'], built);
  const ids: string[] = [];
  const times = ['2026-11-01T00:00:00Z', '2026-11-02T00:00:00Z', '2026-11-03T00:00:00Z', '2026-11-04T00:00:00Z'];
  for (const [i, type] of (['full', 'incremental', 'full', 'incremental'] as const).entries()) {
    mutate(source, i + 1);
    if (i === 1) copyFileSync(source, path.join(built, 'target.db'));
    ids.push(JSON.parse(must(['backup', 'app.db', '--repo', 'repo', '--name', 'app', '--type', type, '--time', times[i]!, '--json'], built)).id as string);
  }
  const incr2 = sqliteDump(source);
  must(['export', 'app', '--out', 'bundle.tar.gz', '--repo', 'repo'], built);
  mutate(source, 9);
  const oldTarget = sqliteDump(path.join(built, 'target.db'));
  renameSync(built, template);
  return { template, source: path.join(template, 'app.db'), ids: { full1: ids[0]!, incr1: ids[1]!, full2: ids[2]!, incr2: ids[3]! }, dumps: { incr2, oldTarget } };
}

/** The command of each operation, run in a copy of the template. */
function command(op: SweptOperation, f: Fixture): string[] {
  switch (op) {
    case 'backup':
      return ['backup', 'app.db', '--repo', 'repo', '--name', 'app', '--type', 'full'];
    case 'incremental':
      return ['backup', 'app.db', '--repo', 'repo', '--name', 'app', '--type', 'incremental'];
    case 'prune':
      return ['prune', 'app', '--keep-last', '1', '--repo', 'repo'];
    case 'delete':
      return ['delete', f.ids.full1, '--with-dependents', '--yes', '--repo', 'repo'];
    case 'restore':
      return ['restore', f.ids.incr2, '--to', 'target.db', '--force', '--yes', '--repo', 'repo'];
    case 'import':
      return ['import', 'bundle.tar.gz', '--repo', 'import-target'];
  }
}

/** Backups that must still be listed (and intact) after a kill of `op`, whatever the moment. */
function mustSurvive(op: SweptOperation, f: Fixture): { repo: string; ids: string[] } {
  const all = [f.ids.full1, f.ids.incr1, f.ids.full2, f.ids.incr2];
  if (op === 'prune' || op === 'delete') return { repo: 'repo', ids: [f.ids.full2, f.ids.incr2] };
  if (op === 'import') return { repo: 'import-target', ids: [] };
  return { repo: 'repo', ids: all };
}

/**
 * strace counts `when=N` per thread, and Node runs its asynchronous file operations on a pool of
 * threads: with one pool thread, the Nth rename of the repository code is the Nth of that thread,
 * so N walks through the operation's calls in order.
 */
const TRACED_ENV = { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE, UV_THREADPOOL_SIZE: '1' };

/** How often `op` makes `syscall`, counted over every thread of the process. */
function countCalls(op: SweptOperation, syscall: string, f: Fixture, scratch: string): number {
  rmSync(scratch, { recursive: true, force: true });
  cpSync(f.template, scratch, { recursive: true });
  const log = path.join(scratch, '..', `count-${op}-${syscall}.log`);
  spawnSync('strace', ['-f', '-qq', '-o', log, '-e', `trace=${syscall}`, process.execPath, CLI, ...command(op, f)], { cwd: scratch, env: TRACED_ENV });
  const lines = existsSync(log) ? spawnSync('grep', ['-c', `${syscall}(`, log], { encoding: 'utf8' }).stdout.trim() : '0';
  rmSync(log, { force: true });
  return Number(lines) || 0;
}

/** Which occurrences to kill at: all of them, or for very frequent calls an even spread. */
export function occurrences(count: number, spread: number): number[] {
  if (count <= spread) return Array.from({ length: count }, (_, i) => i + 1);
  return [...new Set(Array.from({ length: spread }, (_, i) => 1 + Math.round((i * (count - 1)) / (spread - 1))))];
}

/** Files a finished operation must not leave in a repository after its next run. */
function repositoryLeftovers(repo: string): string[] {
  if (!existsSync(repo)) return [];
  const files = readdirSync(repo, { recursive: true }).map(String);
  const generations = files.filter((f) => /^catalog\/\d{12}\.json$/.test(f));
  return [
    ...files.filter(
      (f) =>
        (f.startsWith('pending/') && f.endsWith('.json')) ||
        (f.startsWith('staging/') && f !== 'staging/') ||
        f.endsWith('.partial') ||
        /^locks\/(committing-|pending-deletions|takeover-|repository\.lock)/.test(f),
    ),
    // A commit deletes the generations it replaced; one left over is dead weight.
    ...(generations.length > 1 ? generations.slice(0, -1) : []),
  ];
}

/**
 * Runs the sweep. `syscalls` and `operations` narrow it (the bounded version in npm test); `spread`
 * is how many points of the very frequent calls (write, pwrite64) are tried; every other call is.
 */
export function syscallCrashSweep(options: {
  work: string;
  operations?: readonly SweptOperation[];
  syscalls?: readonly string[];
  spread?: number;
  /** Operations whose calls of every kind are tried at an even spread of this many points only (the bounded run's sample). */
  sampled?: Partial<Record<SweptOperation, number>>;
}): SyscallSweepResult {
  const f = buildFixture(options.work);
  const scratch = path.join(options.work, 'run');
  const problems: string[] = [];
  const perCase: Record<string, number> = {};
  let runs = 0;
  let kills = 0;
  let lostBackups = 0;
  let missingTargets = 0;
  let leftovers = 0;
  let detected = 0;
  for (const op of options.operations ?? SWEPT_OPERATIONS) {
    for (const syscall of options.syscalls ?? SWEPT_SYSCALLS) {
      const count = countCalls(op, syscall, f, scratch);
      // Every call of the rarer kinds; an even spread of the very frequent writes.
      const spread = options.sampled?.[op] ?? (syscall === 'write' || syscall === 'pwrite64' ? (options.spread ?? 8) : Number.MAX_SAFE_INTEGER);
      for (const when of occurrences(count, spread)) {
        const where = `${op} killed at ${syscall} #${when}`;
        runs++;
        perCase[`${op}/${syscall}`] = (perCase[`${op}/${syscall}`] ?? 0) + 1;
        rmSync(scratch, { recursive: true, force: true });
        cpSync(f.template, scratch, { recursive: true });
        const killed = spawnSync('strace', ['-f', '-qq', '-o', '/dev/null', '-e', `trace=${syscall}`, '-e', `inject=${syscall}:signal=KILL:when=${when}`, process.execPath, CLI, ...command(op, f)], {
          cwd: scratch,
          encoding: 'utf8',
          env: TRACED_ENV,
        });
        // strace exits with the tracee's status; a tracee killed by a signal makes it 128+9.
        if (killed.status === 137 || killed.signal === 'SIGKILL') kills++;

        // 1. As found right after the kill: nothing that must survive is lost or damaged.
        const survive = mustSurvive(op, f);
        const listed = cli(['list', '--repo', survive.repo, '--json'], scratch);
        if (listed.status !== 0) {
          problems.push(`${where}: list fails afterwards: ${listed.stderr.trim()}`);
          continue;
        }
        const backups = (JSON.parse(listed.stdout) as { backups: BackupRecord[] }).backups;
        for (const id of survive.ids) {
          if (!backups.some((b) => b.id === id)) {
            lostBackups++;
            problems.push(`${where}: backup ${id} is gone from the catalog`);
          }
        }
        if (backups.length > 0) {
          const verify = cli(['verify', '--all', '--level', 'quick', '--repo', survive.repo, '--json'], scratch);
          if (verify.status !== 0) {
            lostBackups++;
            problems.push(`${where}: a listed backup fails verify --level quick: ${verify.stdout.slice(0, 400)}`);
          }
        }
        if (op === 'restore') {
          const target = path.join(scratch, 'target.db');
          if (!existsSync(target)) {
            missingTargets++;
            problems.push(`${where}: the restore target is missing`);
          } else {
            const now = sqliteDump(target);
            if (now !== f.dumps.oldTarget && now !== f.dumps.incr2) {
              missingTargets++;
              problems.push(`${where}: the restore target is neither the old database nor the restored one`);
            } else if (now === f.dumps.oldTarget) detected++;
          }
        }

        // 2. The next run (the same command, as cron would run it) succeeds or is refused cleanly,
        //    and leaves nothing behind.
        const next = cli(command(op, f), scratch);
        if (next.status !== 0 && !/not found|no backup|does not exist/i.test(next.stderr)) {
          problems.push(`${where}: the next run failed: ${next.stderr.trim().slice(0, 300)}`);
        }
        const left = [...repositoryLeftovers(path.join(scratch, 'repo')), ...repositoryLeftovers(path.join(scratch, 'import-target'))];
        if (op === 'restore') left.push(...readdirSync(scratch).filter((n) => n.startsWith('.target.db.strata-')));
        // Every artifact on disk is one the catalog lists (no orphan that a rebuild would resurrect),
        // in the repository the operation works on (the other one is the template's, untouched).
        const listedKeys = new Set((JSON.parse(must(['list', '--repo', survive.repo, '--json'], scratch)) as { backups: BackupRecord[] }).backups.map((b) => b.key));
        const backupsDir = path.join(scratch, survive.repo, 'backups');
        const onDisk = existsSync(backupsDir) ? readdirSync(backupsDir, { recursive: true }).map(String).filter((k) => /\.tar/.test(k)) : [];
        for (const k of onDisk) if (!listedKeys.has(`backups/${k}`)) left.push(`${survive.repo}/backups/${k} (not in the catalog)`);
        if (left.length > 0) {
          leftovers += left.length;
          problems.push(`${where}: left behind after the next run: ${left.join(', ')}`);
        }
      }
    }
  }
  rmSync(scratch, { recursive: true, force: true });
  return { scenario: 'syscall-crash', runs, kills, lostBackups, missingTargets, leftovers, detected, problems, perCase };
}
