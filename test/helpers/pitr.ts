/**
 * Shared by the point-in-time tests: the writer child process (pitr-writer.ts), its commit log,
 * `strata replicate` as a child process, and the check that a restored database holds exactly
 * the transactions committed by the moment it was restored to.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { ROOT, strataAsync } from './env.js';

const WRITER = path.join(ROOT, '.build/test/helpers/pitr-writer.js');

export interface Commit {
  readonly seq: number;
  /** Just before COMMIT: the transaction cannot have committed earlier. */
  readonly before: number;
  /** Just after COMMIT returned: it had committed by then. */
  readonly after: number;
}

export interface PointInTime {
  readonly asOf: string;
  readonly transactions: number;
  readonly segments: number;
  readonly reachedAt: string;
  readonly completeThrough: string;
}

export function startWriter(db: string, log: string, durationMs: number): ChildProcess {
  return spawn(process.execPath, [WRITER, db, log, String(durationMs)], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Resolves once the writer has committed its first marker (the database and its log exist then). */
export async function firstCommit(log: string): Promise<void> {
  while (!existsSync(log) || statSync(log).size === 0) await new Promise((resolve) => setTimeout(resolve, 20));
}

/** Resolves once the writer has committed `n` more markers than it had when called. */
export async function moreCommits(log: string, n: number): Promise<void> {
  const lines = (): number => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').length - 1 : 0);
  const target = lines() + n;
  while (lines() < target) await new Promise((resolve) => setTimeout(resolve, 50));
}

export function commits(log: string): Commit[] {
  return readFileSync(log, 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const [seq, before, after] = line.split(' ').map(Number);
      return { seq: seq!, before: before!, after: after! };
    });
}

/** Starts `strata replicate` and resolves once it ships (its base taken or its chain continued). */
export async function startReplicator(repo: string, db: string, extra: string[] = []): Promise<{ child: ChildProcess; stderr: () => string; ready: string }> {
  const child = strataAsync(['replicate', db, '--repo', repo, '--interval', '1', ...extra]);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.resume();
  const ready = await new Promise<string>((resolve, reject) => {
    const check = (): void => {
      const line = stderr.split('\n').find((l) => /took \S+ \(\w+\) as the base|continuing the segments/.test(l));
      if (line) resolve(line);
    };
    child.stderr!.on('data', check);
    child.once('exit', (code, signal) => reject(new Error(`replicate exited (${code ?? signal}) before it shipped:\n${stderr}`)));
  });
  return { child, stderr: () => stderr, ready };
}

export async function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** The marker sequence numbers in a restored database, and its integrity check. */
export function markersOf(file: string): { seqs: number[]; integrity: string } {
  const db = new Database(file, { readonly: true });
  try {
    const seqs = (db.prepare('SELECT seq FROM marker ORDER BY seq').all() as { seq: number }[]).map((r) => r.seq);
    const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
    return { seqs, integrity };
  } finally {
    db.close();
  }
}

/**
 * What a restore to `asOf` must hold: a prefix 1..k of the writer's transactions, none that began
 * committing after `asOf`, and every one that had committed before the moment the restore says it
 * is complete through (the start of the read of the log that saw its last transaction).
 */
export function checkPrefix(label: string, seqs: readonly number[], log: readonly Commit[], asOf: number, completeThrough: number): void {
  seqs.forEach((s, i) => assert.equal(s, i + 1, `${label}: the markers are not a prefix (position ${i} holds ${s})`));
  const k = seqs.length;
  for (const c of log) {
    if (c.before > asOf) assert.ok(c.seq > k, `${label}: transaction ${c.seq} began committing at ${new Date(c.before).toISOString()}, after the target, yet it is restored`);
    if (c.after < completeThrough) assert.ok(c.seq <= k, `${label}: transaction ${c.seq} had committed at ${new Date(c.after).toISOString()}, before ${new Date(completeThrough).toISOString()} which the restore says it is complete through, yet it is missing`);
  }
}

/**
 * Whether the optional os-lock addon is installed (built from source at install), through which
 * replicate holds SQLite's checkpoint lock and refuses a second replicator of a database.
 */
export function hasLockAddon(): boolean {
  try {
    createRequire(fileURLToPath(new URL('../../../packages/engine-sqlite/package.json', import.meta.url)))('os-lock');
    return true;
  } catch {
    return false;
  }
}

