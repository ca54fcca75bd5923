import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { Passphrase, openRepository } from '@strata/sdk';
import { ROOT, TEST_PASSPHRASE, finished, json, sqliteQuery, strata, strataAsync, useTempDir } from './helpers/env.js';

/**
 * Continuous protection end to end, with real processes: an application process writes marker
 * rows every 10 ms and checkpoints in every way SQLite has, `strata replicate` (the CLI) runs
 * beside it and is SIGKILLed and started again, and restores to random moments must each give
 * exactly the transactions committed by then.
 */

const WRITER = path.join(ROOT, '.build/test/helpers/pitr-writer.js');

interface Commit {
  readonly seq: number;
  /** Just before COMMIT: the transaction cannot have committed earlier. */
  readonly before: number;
  /** Just after COMMIT returned: it had committed by then. */
  readonly after: number;
}

interface PointInTime {
  readonly asOf: string;
  readonly transactions: number;
  readonly segments: number;
  readonly reachedAt: string;
  readonly completeThrough: string;
}

function startWriter(db: string, log: string, durationMs: number): ChildProcess {
  return spawn(process.execPath, [WRITER, db, log, String(durationMs)], { stdio: ['ignore', 'ignore', 'pipe'] });
}

function commits(log: string): Commit[] {
  return readFileSync(log, 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const [seq, before, after] = line.split(' ').map(Number);
      return { seq: seq!, before: before!, after: after! };
    });
}

/** Starts `strata replicate` and resolves once it ships (its base taken or its chain continued). */
async function startReplicator(repo: string, db: string, extra: string[] = []): Promise<{ child: ChildProcess; stderr: () => string; ready: string }> {
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

async function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The marker sequence numbers in a restored database, and its integrity check. */
function markersOf(file: string): { seqs: number[]; integrity: string } {
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
function checkPrefix(label: string, seqs: readonly number[], log: readonly Commit[], asOf: number, completeThrough: number): void {
  seqs.forEach((s, i) => assert.equal(s, i + 1, `${label}: the markers are not a prefix (position ${i} holds ${s})`));
  const k = seqs.length;
  for (const c of log) {
    if (c.before > asOf) assert.ok(c.seq > k, `${label}: transaction ${c.seq} began committing at ${new Date(c.before).toISOString()}, after the target, yet it is restored`);
    if (c.after < completeThrough) assert.ok(c.seq <= k, `${label}: transaction ${c.seq} had committed at ${new Date(c.after).toISOString()}, before ${new Date(completeThrough).toISOString()} which the restore says it is complete through, yet it is missing`);
  }
}

describe('continuous protection: strata replicate and restore --as-of', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it('restores to 21 random moments each give exactly the transactions committed by then, across SIGKILLs, WAL restarts, TRUNCATE checkpoints and VACUUM', async () => {
    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    const log = path.join(dir.path, 'commits.log');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const writer = startWriter(db, log, 120_000);
    const writerDone = finished(writer);
    const startedAt = Date.now();
    await sleep(800);
    const readyLines: string[] = [];
    // Five runs of the replicator, each killed without warning except the last, stopped by SIGTERM.
    // Before the third kill the writer stops checkpointing, so the log still continues the chain
    // when the replicator comes back; the other restarts find it recycled and take a new base.
    for (let run = 0; run < 5; run++) {
      const replicator = await startReplicator(repo, db);
      readyLines.push(replicator.ready);
      if (run === 2) writeFileSync(`${log}.quiet`, '');
      await sleep(run === 4 ? 3000 : run === 2 ? 2000 : 3500 + run * 700);
      if (run === 3) rmSync(`${log}.quiet`, { force: true });
      if (run < 4) {
        replicator.child.kill('SIGKILL');
        await exited(replicator.child);
        await sleep(400 + run * 300);
        continue;
      }
      writer.kill('SIGTERM');
      const writerResult = await writerDone;
      assert.equal(writerResult.status, 0, `the writer failed: ${writerResult.stderr}`);
      // Everything the writer committed is in the log now; SIGTERM must ship it before exiting.
      await sleep(300);
      replicator.child.kill('SIGTERM');
      const stopped = await exited(replicator.child);
      assert.equal(stopped.code, 0, `replicate stopped with ${stopped.code ?? stopped.signal}:\n${replicator.stderr()}`);
      assert.match(replicator.stderr(), /stopped; shipped \d+ transactions/);
    }
    const endedAt = Date.now();
    // The chain was continued at least once (the quiet phase) and a new base was taken at least once.
    assert.ok(readyLines.some((l) => l.includes('continuing the segments')), `no run continued the chain:\n${readyLines.join('\n')}`);
    assert.ok(readyLines.filter((l) => l.includes('as the base')).length >= 2, `no run took a new base:\n${readyLines.join('\n')}`);
    const written = commits(log);
    assert.ok(written.length > 1000, `the writer committed only ${written.length} transactions`);

    // The last moment: everything.
    const targets = [endedAt + 1000];
    // Random moments over the whole run, and some right at commit times.
    for (let i = 0; i < 15; i++) targets.push(startedAt + Math.floor(Math.random() * (endedAt - startedAt)));
    for (let i = 0; i < 5; i++) {
      const c = written[Math.floor(Math.random() * written.length)]!;
      targets.push(i % 2 === 0 ? c.before : c.after);
    }
    let replayed = 0;
    let maxBehind = 0;
    // The random restores go through the SDK in this process (the command line's own restore is
    // tested below): a process and a key-file unlock per restore would make this test slow.
    const repository = await openRepository(repo, { passphrase: new Passphrase(TEST_PASSPHRASE), tempDir: path.join(dir.path, 'tmp') });
    try {
      const firstBase = Date.parse((await repository.list({ database: 'app' }))[0]!.createdAt);
      for (const [i, target] of targets.entries()) {
        const to = path.join(dir.path, `restored-${i}.db`);
        const asOf = new Date(target);
        if (target < firstBase) {
          // Before the first base there is nothing to restore; that must be said plainly.
          await assert.rejects(repository.restore({ database: 'app', asOf }, { to }), /no restore point of app at or before/);
          continue;
        }
        const pit = (await repository.restore({ database: 'app', asOf }, { to })).pointInTime;
        assert.ok(pit, `restore as of ${asOf.toISOString()} reported no point in time`);
        assert.ok(pit.reachedAt <= asOf.toISOString() && pit.completeThrough <= pit.reachedAt, `restore as of ${asOf.toISOString()} reached ${pit.reachedAt}, complete through ${pit.completeThrough}`);
        const { seqs, integrity } = markersOf(to);
        assert.equal(integrity, 'ok', `restore as of ${asOf.toISOString()}: integrity_check says ${integrity}`);
        checkPrefix(`restore as of ${asOf.toISOString()}`, seqs, written, target, Date.parse(pit.completeThrough));
        if (pit.transactions > 0) replayed++;
        maxBehind = Math.max(maxBehind, target - Date.parse(pit.completeThrough));
      }
    } finally {
      await repository.close();
    }
    // The final restore holds every transaction the writer made (SIGTERM shipped the rest).
    assert.deepEqual(markersOf(path.join(dir.path, 'restored-0.db')).seqs.length, written.length);
    assert.ok(replayed >= targets.length / 2, `only ${replayed} of ${targets.length} restores replayed segments`);
    // Not asserted (timing), but worth seeing when it grows: how far behind a target restores were complete.
    console.log(`      ${written.length} transactions, ${targets.length} restores, ${replayed} replayed segments; complete through at most ${(maxBehind / 1000).toFixed(1)} s before the target`);

    // The command line: the newest moment, with what it reached in --json.
    const cli = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', new Date(endedAt + 500).toISOString(), '--to', path.join(dir.path, 'cli.db'), '--json']);
    assert.equal(cli.status, 0, cli.stderr);
    const cliPit = json<{ pointInTime: PointInTime }>(cli).pointInTime;
    assert.ok(cliPit.transactions > 0 && cliPit.segments > 0, JSON.stringify(cliPit));
    assert.equal(markersOf(path.join(dir.path, 'cli.db')).seqs.length, written.length);

    // A table as of a moment: --tables with --as-of, into a new file.
    const middle = written[Math.floor(written.length / 2)]!;
    const tableTarget = path.join(dir.path, 'marker-only.db');
    const tables = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', new Date(middle.after + 2000).toISOString(), '--tables', 'marker', '--to', tableTarget, '--json']);
    assert.equal(tables.status, 0, tables.stderr);
    const pit = json<{ pointInTime: PointInTime }>(tables).pointInTime;
    const restored = markersOf(tableTarget);
    assert.equal(restored.integrity, 'ok');
    checkPrefix('restore --tables marker', restored.seqs, written, middle.after + 2000, Date.parse(pit.completeThrough));
    assert.equal(sqliteQuery(tableTarget, "SELECT count(*) FROM sqlite_schema WHERE name = 'side'"), '0', 'only the table asked for is restored');
  });

  it('SIGTERM ships what the replicator holds before it exits, even long before its interval', async () => {
    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    const log = path.join(dir.path, 'commits.log');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    writeFileSync(`${log}.quiet`, '');
    const writer = startWriter(db, log, 60_000);
    await sleep(500);
    const replicator = await startReplicator(repo, db, ['--interval', '600']);
    await sleep(1500);
    writer.kill('SIGTERM');
    await finished(writer);
    replicator.child.kill('SIGTERM');
    const stopped = await exited(replicator.child);
    assert.equal(stopped.code, 0, replicator.stderr());
    const written = commits(log);
    const to = path.join(dir.path, 'now.db');
    const result = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', new Date().toISOString(), '--to', to, '--json']);
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(markersOf(to).seqs, written.map((c) => c.seq));
    assert.ok(json<{ pointInTime: PointInTime }>(result).pointInTime.transactions > 0, 'the transactions came from the segment written at SIGTERM');
  });

  it('refuses a database that is not in WAL mode, and switches it only when told to', async () => {
    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'rollback.db');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    const setup = new Database(db);
    setup.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1)');
    setup.close();
    const refused = strata(['replicate', db, '--repo', repo]);
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /is in delete journal mode; continuous protection reads SQLite's write-ahead log.*PRAGMA journal_mode=WAL.*--switch-mode/s);
    assert.equal(sqliteQuery(db, 'PRAGMA journal_mode'), 'delete', 'the database is left as it was');
    assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo, '--json'])).backups.length, 0, 'nothing was backed up');

    const replicator = await startReplicator(repo, db, ['--switch-mode']);
    assert.equal(sqliteQuery(db, 'PRAGMA journal_mode'), 'wal');
    replicator.child.kill('SIGTERM');
    assert.equal((await exited(replicator.child)).code, 0, replicator.stderr());
  });
});

describe('continuous protection: damaged segments', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  /** A repository with a base and at least four segments of app.db; returns the segments' files in chain order. */
  async function replicated(): Promise<{ repo: string; segments: string[]; end: string }> {
    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    const log = path.join(dir.path, 'commits.log');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const writer = startWriter(db, log, 60_000);
    await sleep(300);
    const replicator = await startReplicator(repo, db, ['--interval', '0.3']);
    await sleep(2500);
    replicator.child.kill('SIGTERM');
    assert.equal((await exited(replicator.child)).code, 0, replicator.stderr());
    writer.kill('SIGTERM');
    await finished(writer);
    const catalog = JSON.parse(readFileSync(path.join(repo, 'catalog', readdirSorted(path.join(repo, 'catalog')).at(-1)!), 'utf8')) as { segments: { key: string; sequence: number }[] };
    const segments = catalog.segments.sort((a, b) => a.sequence - b.sequence).map((s) => path.join(repo, s.key));
    assert.ok(segments.length >= 4, `only ${segments.length} segments`);
    return { repo, segments, end: new Date(Date.now() + 1000).toISOString() };
  }

  function readdirSorted(folder: string): string[] {
    return (existsSync(folder) ? readdirSync(folder) : []).sort();
  }

  function restoreFails(repo: string, end: string, pattern: RegExp): void {
    const fresh = path.join(dir.path, 'fresh.db');
    const failed = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', end, '--to', fresh]);
    assert.notEqual(failed.status, 0);
    assert.match(failed.stderr, pattern);
    assert.ok(!existsSync(fresh), 'no new target was created');
    // An existing target is left byte for byte as it was.
    const existing = path.join(dir.path, 'existing.db');
    const keep = new Database(existing);
    keep.exec("CREATE TABLE keep (x); INSERT INTO keep VALUES ('mine')");
    keep.close();
    const before = readFileSync(existing);
    const replaced = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', end, '--to', existing, '--force', '--yes']);
    assert.notEqual(replaced.status, 0);
    assert.ok(readFileSync(existing).equals(before), 'the existing target is untouched');
    rmSync(existing);
  }

  it('a corrupted, a missing and a reordered segment are each found before anything is written', async () => {
    const { repo, segments, end } = await replicated();
    // Sanity: the chain restores as it is.
    const good = path.join(dir.path, 'good.db');
    assert.equal(strata(['restore', '--repo', repo, '--db', 'app', '--as-of', end, '--to', good]).status, 0);
    rmSync(good);

    // Corrupted: one byte of the second segment flipped.
    const original = readFileSync(segments[1]!);
    const flipped = Buffer.from(original);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x40;
    writeFileSync(segments[1]!, flipped);
    restoreFails(repo, end, /segment 2 .*SHA-256|segment 2 .*corrupt|segment 2/);
    writeFileSync(segments[1]!, original);

    // Reordered: the second and third segments' files swapped.
    const second = readFileSync(segments[1]!);
    const third = readFileSync(segments[2]!);
    writeFileSync(segments[1]!, third);
    writeFileSync(segments[2]!, second);
    restoreFails(repo, end, /segment 2 /);
    writeFileSync(segments[1]!, second);
    writeFileSync(segments[2]!, third);

    // Missing: the third segment's file deleted.
    rmSync(segments[2]!);
    restoreFails(repo, end, /segment 3 .*is missing from the repository/);
  });
});
