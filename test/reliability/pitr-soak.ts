/**
 * The long version of test/pitr-replicate.test.ts, for `npm run test:soak -- --only pitr
 * [--minutes N]`: an application (test/helpers/pitr-writer.ts) commits a marker row every 10 ms
 * for the whole run while checkpointing in every way SQLite has (automatic; PASSIVE, FULL, RESTART
 * and TRUNCATE; a VACUUM whenever the file has doubled since the last); `strata replicate` (the
 * CLI, --interval 1) runs beside it and is SIGKILLed and started again every few minutes; every
 * 30 s a restore to a random past moment is checked. What a restore to T must hold:
 *   - exactly a prefix 1..k of the writer's transactions, and `PRAGMA integrity_check` ok;
 *   - none that began committing after T;
 *   - every one that had committed before the moment the restore says it is complete through;
 *   - every one that had committed at or before T minus the interval, unless the replicator was
 *     down (killed, or not yet shipping again) around T: then the transactions of the gap are
 *     filed at the moment the replicator saw them, after T, and the check says so (`relaxed`).
 * At the end the writer stops, the replicator is stopped with SIGTERM (it must ship everything and
 * exit 0), and a restore to the end must hold every transaction.
 */
import { AssertionError } from 'node:assert';
import { readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { Passphrase, openRepository } from '@strata/sdk';
import { TEST_PASSPHRASE, catalogPath, finished, strata } from '../helpers/env.js';
import { checkPrefix, commits, exited, firstCommit, markersOf, startReplicator, startWriter } from '../helpers/pitr.js';
import type { Commit } from '../helpers/pitr.js';
import type { ScenarioResult } from './scenarios.js';
import { rng } from './scenarios.js';

export interface PitrSoakResult extends ScenarioResult {
  readonly transactions: number;
  readonly segments: number;
  readonly restarts: number;
  readonly restoresChecked: number;
  /** Restores whose target fell where the replicator was down: checked without the interval rule. */
  readonly relaxed: number;
  /** The most a restore was behind its target: target minus the moment it says it is complete through. */
  readonly maxBehindMs: number;
}

const INTERVAL_MS = 1000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function pitrSoak(options: {
  readonly seed: number;
  readonly minutes: number;
  /** Mean time between SIGKILLs of the replicator (each drawn from half to one and a half of it). */
  readonly killEverySeconds: number;
  readonly restoreEverySeconds: number;
  readonly work: string;
  readonly log: (line: string) => void;
}): Promise<PitrSoakResult> {
  const random = rng(options.seed);
  const repo = path.join(options.work, 'repo');
  const db = path.join(options.work, 'app.db');
  const commitLog = path.join(options.work, 'commits.log');
  const problems: string[] = [];
  const init = strata(['init', '--repo', repo]);
  if (init.status !== 0) throw new Error(`strata init failed: ${init.stderr}`);
  const writer = startWriter(db, commitLog, options.minutes * 60_000);
  const writerDone = finished(writer);
  let writerRunning = true;
  void writerDone.then(() => (writerRunning = false));
  await firstCommit(commitLog);

  let replicator = await startReplicator(repo, db);
  let killing = false;
  /** [killed at, shipping again at]: where a restore may miss what was committed just before its target. */
  const down: [number, number][] = [];
  let restarts = 0;
  let restoresChecked = 0;
  let relaxed = 0;
  let maxBehindMs = 0;
  const nextKillIn = (): number => options.killEverySeconds * 1000 * (0.5 + random());
  let nextKill = Date.now() + nextKillIn();
  let nextRestore = Date.now() + options.restoreEverySeconds * 1000;
  const watch = (r: typeof replicator): void => {
    r.child.once('exit', (code, signal) => {
      if (!killing && r === replicator) problems.push(`strata replicate exited on its own (${code ?? signal}):\n${r.stderr().slice(-2000)}`);
    });
  };
  watch(replicator);

  const repository = await openRepository(repo, { passphrase: new Passphrase(TEST_PASSPHRASE), tempDir: path.join(options.work, 'tmp') });
  try {
    const firstBase = Date.parse((await repository.list({ database: 'app' }))[0]!.createdAt);
    const check = async (label: string, target: number, written: readonly Commit[]): Promise<number | undefined> => {
      const to = path.join(options.work, 'restored.db');
      rmSync(to, { force: true });
      try {
        const pit = (await repository.restore({ database: 'app', asOf: new Date(target) }, { to })).pointInTime;
        if (!pit) throw new AssertionError({ message: `${label}: the restore reported no point in time` });
        maxBehindMs = Math.max(maxBehindMs, target - Date.parse(pit.completeThrough));
        const { seqs, integrity } = markersOf(to);
        if (integrity !== 'ok') throw new AssertionError({ message: `${label}: integrity_check says ${integrity}` });
        // A prefix, nothing begun after the target, everything before what it says it is complete through.
        checkPrefix(label, seqs, written, target, Date.parse(pit.completeThrough));
        const k = seqs.length;
        const gap = down.some(([killedAt, back]) => killedAt <= target && back >= target - INTERVAL_MS - 2000);
        if (gap) relaxed++;
        else {
          const missing = written.find((c) => c.after <= target - INTERVAL_MS && c.seq > k);
          if (missing) throw new AssertionError({ message: `${label}: transaction ${missing.seq} committed at ${new Date(missing.after).toISOString()}, an interval or more before the target, is missing (restored ${k}; complete through ${pit.completeThrough})` });
        }
        return k;
      } catch (err) {
        problems.push(err instanceof AssertionError ? err.message : `${label}: ${String(err)}`);
        return undefined;
      } finally {
        rmSync(to, { force: true });
      }
    };

    while (writerRunning) {
      await sleep(250);
      const now = Date.now();
      if (now >= nextKill && writerRunning) {
        killing = true;
        replicator.child.kill('SIGKILL');
        await exited(replicator.child);
        const killedAt = Date.now();
        // Down for a moment, as a service manager would restart it.
        await sleep(Math.floor(random() * 3000));
        try {
          replicator = await startReplicator(repo, db);
          restarts++;
          options.log(`replicator restarted (${restarts}): ${replicator.ready.replace(/^replicate \S+: /, '')}`);
        } catch (err) {
          problems.push(`strata replicate did not start again: ${String(err)}`);
          writer.kill('SIGTERM');
          break;
        }
        down.push([killedAt, Date.now()]);
        killing = false;
        watch(replicator);
        nextKill = Date.now() + nextKillIn();
      }
      if (now >= nextRestore) {
        nextRestore = now + options.restoreEverySeconds * 1000;
        // Half the targets anywhere in the run, half in its last two minutes (near the restarts);
        // never in the last 5 s, which may not be shipped yet.
        const latest = Date.now() - 5000;
        const earliest = random() < 0.5 ? firstBase : Math.max(firstBase, latest - 120_000);
        const target = Math.floor(earliest + random() * Math.max(0, latest - earliest));
        const written = commits(commitLog);
        const k = await check(`restore #${restoresChecked + 1} as of ${new Date(target).toISOString()}`, target, written);
        restoresChecked++;
        options.log(`restore #${restoresChecked} as of ${new Date(target).toISOString()}: ${k === undefined ? 'FAILED' : `${k} of ${written.length} transactions, ok`}`);
      }
    }
    const writerResult = await writerDone;
    if (writerResult.status !== 0) problems.push(`the writer failed (${writerResult.status ?? writerResult.signal}): ${writerResult.stderr.slice(-2000)}`);
    killing = true;
    replicator.child.kill('SIGTERM');
    const stopped = await exited(replicator.child);
    if (stopped.code !== 0 || !/stopped; shipped \d+ transactions/.test(replicator.stderr())) problems.push(`strata replicate did not stop cleanly on SIGTERM (${stopped.code ?? stopped.signal}):\n${replicator.stderr().slice(-2000)}`);
    const written = commits(commitLog);
    const end = Date.now() + 1000;
    const behindBeforeFinal = maxBehindMs;
    const all = await check(`the final restore as of ${new Date(end).toISOString()}`, end, written);
    restoresChecked++;
    if (all !== undefined && all !== written.length) problems.push(`the final restore holds ${all} of the ${written.length} transactions`);
    const segments = (JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { segments: unknown[] }).segments.length;
    return { scenario: 'continuous protection (SIGKILLed replicator, restores to random moments)', runs: restoresChecked, detected: 0, problems, transactions: written.length, segments, restarts, restoresChecked, relaxed, maxBehindMs: behindBeforeFinal };
  } finally {
    await repository.close();
    if (replicator.child.exitCode === null && replicator.child.signalCode === null) replicator.child.kill('SIGKILL');
    if (writerRunning) writer.kill('SIGKILL');
  }
}
