import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Passphrase, openRepository } from '@strata/sdk';
import { TEST_PASSPHRASE, catalogPath, finished, json, sqliteQuery, strata, strataAsync, useTempDir } from './helpers/env.js';
import { checkPrefix, commits, exited, firstCommit, hasLockAddon, markersOf, moreCommits, startReplicator, startWriter } from './helpers/pitr.js';
import type { PointInTime } from './helpers/pitr.js';

/**
 * Continuous protection end to end, with real processes: an application process writes marker
 * rows every 10 ms and checkpoints in every way SQLite has, `strata replicate` (the CLI) runs
 * beside it and is SIGKILLed and started again, and restores to random moments must each give
 * exactly the transactions committed by then.
 */
/** The replicator's --interval in this test (startReplicator's). */
const INTERVAL_MS = 1000;

describe('continuous protection: strata replicate and restore --as-of', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it('restores to 21 random moments and one inside each run of the replicator each give exactly the transactions committed by then, and every one committed an interval before, across SIGKILLs, WAL restarts, TRUNCATE checkpoints and VACUUM', async () => {
    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    const log = path.join(dir.path, 'commits.log');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const writer = startWriter(db, log, 120_000);
    const writerDone = finished(writer);
    const startedAt = Date.now();
    await firstCommit(log);
    const readyLines: string[] = [];
    // When each killed replicator died, and when the next one was shipping again: the replicator
    // cannot see commits while it is dead (they arrive after the restart, observed later).
    const downs: { killedAt: number; upAt: number }[] = [];
    // Five runs of the replicator, each killed without warning except the last, stopped by SIGTERM.
    // Before the third kill the writer stops checkpointing, so the log still continues the chain
    // when the replicator comes back; the other restarts find it recycled and take a new base.
    for (let run = 0; run < 5; run++) {
      const replicator = await startReplicator(repo, db);
      if (run > 0) downs.at(-1)!.upAt = Date.now();
      readyLines.push(replicator.ready);
      if (run === 2) writeFileSync(`${log}.quiet`, '');
      // Each run ships a few hundred transactions (a few seconds of the writer's), the quiet one fewer.
      await moreCommits(log, run === 2 ? 150 : 250 + run * 50);
      if (run === 3) rmSync(`${log}.quiet`, { force: true });
      if (run < 4) {
        downs.push({ killedAt: Date.now(), upAt: Number.POSITIVE_INFINITY });
        replicator.child.kill('SIGKILL');
        await exited(replicator.child);
        if (run === 0) {
          // A replicator that died is what health must page about.
          const health = strata(['health', '--repo', repo, '--json']);
          assert.equal(health.status, 3, health.stdout);
          const replication = json<{ checks: { check: string; status: string; message: string }[] }>(health).checks.find((c) => c.check === 'replication');
          assert.equal(replication?.status, 'unhealthy');
          assert.match(replication!.message, /replicate died/);
        }
        // While it is down the writer goes on (and, but in the quiet phase, checkpoints and restarts the log).
        await moreCommits(log, 40 + run * 30);
        continue;
      }
      writer.kill('SIGTERM');
      const writerResult = await writerDone;
      assert.equal(writerResult.status, 0, `the writer failed: ${writerResult.stderr}`);
      // Everything the writer committed is in the log now; SIGTERM must ship it before exiting.
      replicator.child.kill('SIGTERM');
      const stopped = await exited(replicator.child);
      assert.equal(stopped.code, 0, `replicate stopped with ${stopped.code ?? stopped.signal}:\n${replicator.stderr()}`);
      assert.match(replicator.stderr(), /stopped; shipped \d+ transactions/);
    }
    const endedAt = Date.now();
    // The chain was continued at least once (the quiet phase) and a new base was taken at least once.
    assert.ok(readyLines.some((l) => l.includes('continuing the segments')), `no run continued the chain:\n${readyLines.join('\n')}`);
    assert.ok(readyLines.filter((l) => l.includes('as the base')).length >= 2, `no run took a new base:\n${readyLines.join('\n')}`);
    // What killed replicators left half-written was removed by the next one to open the
    // repository: every segment file is one the catalog lists, and no pending note is left.
    const listed = new Set((JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { segments: { key: string }[] }).segments.map((s) => s.key));
    const files = readdirSync(path.join(repo, 'backups', 'app', 'segments')).map((f) => `backups/app/segments/${f}`);
    assert.deepEqual(files.filter((f) => !listed.has(f)), [], 'segment files the catalog does not list');
    assert.deepEqual(existsSync(path.join(repo, 'pending')) ? readdirSync(path.join(repo, 'pending')) : [], []);
    const written = commits(log);
    assert.ok(written.length > 1000, `the writer committed only ${written.length} transactions`);
    // Around each kill, the moments a restore cannot reach within the interval: from the last
    // transaction the killed run shipped (what it had read after that died with it) until an
    // interval after the next run was shipping.
    const segmentsListed = (JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { segments: { createdAt: string; lastAt: string }[] }).segments;
    const blind = downs.map(({ killedAt, upAt }) => {
      const shipped = segmentsListed.filter((s) => Date.parse(s.createdAt) <= killedAt).map((s) => Date.parse(s.lastAt));
      return { from: Math.max(startedAt, ...shipped), to: upAt + INTERVAL_MS };
    });

    // The last moment: everything.
    const targets = [endedAt + 1000];
    // Random moments over the whole run, and some right at commit times.
    for (let i = 0; i < 15; i++) targets.push(startedAt + Math.floor(Math.random() * (endedAt - startedAt)));
    for (let i = 0; i < 5; i++) {
      const c = written[Math.floor(Math.random() * written.length)]!;
      targets.push(i % 2 === 0 ? c.before : c.after);
    }
    // And one inside each later run, between an interval after it was shipping and what it last
    // shipped: on a loaded machine the restarts are slow and the runs short, and random moments
    // alone may all fall near a restart, where the interval's promise does not hold.
    for (let run = 1; run < 5; run++) {
      const from = downs[run - 1]!.upAt + INTERVAL_MS;
      const to = run < 4 ? blind[run]!.from : endedAt;
      if (to - from > 100) targets.push(from + Math.floor((to - from) / 2));
    }
    let replayed = 0;
    let maxBehind = 0;
    let bounded = 0;
    // The oldest missing transaction of the restores away from a restart: how long before its target it had committed.
    let maxBehindBounded = 0;
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
        const behind = target - Date.parse(pit.completeThrough);
        maxBehind = Math.max(maxBehind, behind);
        // The promise: every transaction committed at or before the target minus the
        // interval is present, wherever the replicator was running to see it.
        if (!blind.some((b) => target > b.from && target <= b.to)) {
          bounded++;
          const k = seqs.length;
          // How long before the target the oldest missing transaction had committed: under the interval.
          const missing = written.find((c) => c.seq > k && c.after <= target);
          if (missing) maxBehindBounded = Math.max(maxBehindBounded, target - missing.after);
          for (const c of written) {
            if (c.after <= target - INTERVAL_MS) assert.ok(c.seq <= k, `restore as of ${asOf.toISOString()}: transaction ${c.seq} committed at ${new Date(c.after).toISOString()}, more than the interval (${INTERVAL_MS} ms) before the target, yet it is missing (the restore is complete through ${pit.completeThrough}, ${behind} ms before the target)`);
          }
        }
      }
    } finally {
      await repository.close();
    }
    // The final restore holds every transaction the writer made (SIGTERM shipped the rest).
    assert.deepEqual(markersOf(path.join(dir.path, 'restored-0.db')).seqs.length, written.length);
    assert.ok(replayed >= targets.length / 2, `only ${replayed} of ${targets.length} restores replayed segments`);
    assert.ok(bounded >= 3, `only ${bounded} of ${targets.length} targets were away from a restart of the replicator`);
    // Worth seeing when it grows: how far behind a target restores were complete (the bound above is the interval).
    console.log(
      `      ${written.length} transactions, ${targets.length} restores, ${replayed} replayed segments; complete through at most ${(maxBehind / 1000).toFixed(1)} s before the target, the oldest transaction missing from the ${bounded} restores away from a restart had committed ${(maxBehindBounded / 1000).toFixed(2)} s before their target`,
    );

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

  /** Writes with the sqlite3 program, as an application that opens, writes and closes would. */
  function write(db: string, sql: string): void {
    const result = spawnSync('sqlite3', [db, sql], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
  }

  /** Waits until replicate's output matches `pattern`, failing if it exits first. */
  async function untilSaid(replicator: Awaited<ReturnType<typeof startReplicator>>, pattern: RegExp): Promise<void> {
    for (let waited = 0; !pattern.test(replicator.stderr()); waited += 50) {
      if (replicator.child.exitCode !== null) throw new Error(`replicate exited early:\n${replicator.stderr()}`);
      if (waited > 120_000) throw new Error(`replicate never said ${pattern}:\n${replicator.stderr()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async function stop(replicator: Awaited<ReturnType<typeof startReplicator>>): Promise<void> {
    replicator.child.kill('SIGTERM');
    assert.equal((await exited(replicator.child)).code, 0, replicator.stderr());
  }

  it('a replicate started again after the application wrote and closed the database meanwhile (SQLite removed its log) takes a new base, and a restore holds those rows', async () => {
    const repo = path.join(dir.path, 'repo-closed');
    const db = path.join(dir.path, 'closed.db');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    write(db, "PRAGMA journal_mode = WAL; CREATE TABLE a (x); CREATE TABLE b (y); INSERT INTO a VALUES ('a1'); INSERT INTO b VALUES ('b1');");
    // Its base is taken with no log on disk (the last connection closed removed it), and nothing ships.
    await stop(await startReplicator(repo, db));
    write(db, "INSERT INTO b VALUES ('b2, while replicate was stopped');");
    const again = await startReplicator(repo, db, ['--verbose']);
    try {
      assert.match(again.ready, /took \S+ \(\w+\) as the base/, 'the chain is not continued: nothing proves the log still holds what was written meanwhile');
      write(db, "INSERT INTO a VALUES ('a2');");
      await untilSaid(again, /segment 1 \(/);
    } finally {
      await stop(again);
    }
    const target = path.join(dir.path, 'closed-restored.db');
    const restored = strata(['restore', '--db', 'closed', '--as-of', new Date().toISOString(), '--to', target, '--repo', repo]);
    assert.equal(restored.status, 0, restored.stderr);
    assert.equal(sqliteQuery(target, 'SELECT y FROM b ORDER BY rowid'), 'b1\nb2, while replicate was stopped');
    assert.equal(sqliteQuery(target, 'SELECT x FROM a ORDER BY rowid'), 'a1\na2');
  });

  it('a database file renamed over the replicated one is noticed: replicate takes a new base of the new file, and says why; with the replaced database\'s log still beside it, it stops instead of replaying that log into the new file', async () => {
    const repo = path.join(dir.path, 'repo-swapped');
    const db = path.join(dir.path, 'swapped.db');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    write(db, "PRAGMA journal_mode = WAL; CREATE TABLE t (v); INSERT INTO t VALUES ('old-1');");
    const first = await startReplicator(repo, db, ['--interval', '0.3', '--verbose']);
    const fresh = path.join(dir.path, 'fresh.db');
    try {
      write(db, "INSERT INTO t VALUES ('old-2');");
      await untilSaid(first, /segment 1 \(/);
      write(fresh, "PRAGMA journal_mode = WAL; CREATE TABLE t (v); INSERT INTO t VALUES ('new-1');");
      // Moved into place as a user might, with replicate running: the old database's -wal and
      // -shm (kept by replicate's connections when the application closed it) are still beside it.
      renameSync(fresh, db);
      const giveUp = setTimeout(() => first.child.kill('SIGKILL'), 120_000);
      const ended = await exited(first.child);
      clearTimeout(giveUp);
      assert.equal(ended.code, 1, first.stderr());
      assert.match(first.stderr(), /was replaced by another file, and \S+swapped\.db-wal beside it is still the write-ahead log of the replaced database.*move \S+swapped\.db-wal and \S+swapped\.db-shm away/);
    } finally {
      if (first.child.exitCode === null) await stop(first);
    }
    // Replicate left the new file as it was: the log was not replayed into it.
    const untouched = path.join(dir.path, 'swapped-copy.db');
    copyFileSync(db, untouched);
    assert.equal(sqliteQuery(untouched, 'PRAGMA integrity_check'), 'ok');
    assert.equal(sqliteQuery(untouched, 'SELECT group_concat(v) FROM t'), 'new-1');
    // Done as it says, replicate takes a new base of the new file.
    for (const side of ['-wal', '-shm']) rmSync(db + side, { force: true });
    const second = await startReplicator(repo, db, ['--interval', '0.3', '--verbose']);
    try {
      await untilSaid(second, /took \S+ \(\w+\) as the base of new segments/);
      write(db, "INSERT INTO t VALUES ('new-2');");
      await untilSaid(second, /segment 1 \(/);
    } finally {
      await stop(second);
    }
    const target = path.join(dir.path, 'swapped-restored.db');
    const restored = strata(['restore', '--db', 'swapped', '--as-of', new Date().toISOString(), '--to', target, '--repo', repo]);
    assert.equal(restored.status, 0, restored.stderr);
    assert.equal(sqliteQuery(target, 'SELECT group_concat(v) FROM t'), 'new-1,new-2');
  });

  it('replicates a database named through a symbolic link (SQLite keeps its -wal and -shm beside the file the link points to)', async () => {
    const repo = path.join(dir.path, 'repo-linked');
    const real = path.join(dir.path, 'linked-real.db');
    const link = path.join(dir.path, 'linked.db');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    write(real, "PRAGMA journal_mode = WAL; CREATE TABLE t (v); INSERT INTO t VALUES ('one');");
    symlinkSync(real, link);
    const replicator = await startReplicator(repo, link, ['--interval', '0.3', '--verbose']);
    try {
      await untilSaid(replicator, /took \S+ \(\w+\) as the base of new segments/);
      write(link, "INSERT INTO t VALUES ('two');");
      await untilSaid(replicator, /segment 1 \(/);
    } finally {
      await stop(replicator);
    }
    const target = path.join(dir.path, 'linked-restored.db');
    const restored = strata(['restore', '--db', 'linked', '--as-of', new Date().toISOString(), '--to', target, '--repo', repo]);
    assert.equal(restored.status, 0, restored.stderr);
    assert.equal(sqliteQuery(target, 'SELECT group_concat(v) FROM t'), 'one,two');
  });

  it('a replicated database file that is removed stops replicate with exit 1, naming it, and health reports the failure', async () => {
    const repo = path.join(dir.path, 'repo-removed');
    const db = path.join(dir.path, 'removed.db');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    write(db, "PRAGMA journal_mode = WAL; CREATE TABLE t (v); INSERT INTO t VALUES (1);");
    const replicator = await startReplicator(repo, db, ['--interval', '0.3']);
    for (const file of [db, `${db}-wal`, `${db}-shm`]) rmSync(file, { force: true });
    const giveUp = setTimeout(() => replicator.child.kill('SIGKILL'), 120_000);
    const ended = await exited(replicator.child);
    clearTimeout(giveUp);
    assert.equal(ended.code, 1, replicator.stderr());
    assert.match(replicator.stderr(), /removed\.db was removed while strata replicated it/);
    const health = strata(['health', '--repo', repo]);
    assert.equal(health.status, 3, health.stdout);
    assert.match(health.stdout, /UNHEALTHY\s+replication \(removed\): replicate failed: .*removed\.db does not exist/);
  });

  it('a second replicate of the same database, refused while the first ships, does not make health report the running one as failed', async () => {
    const repo = path.join(dir.path, 'repo-second');
    const db = path.join(dir.path, 'second.db');
    const log = path.join(dir.path, 'second-commits.log');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const writer = startWriter(db, log, 120_000);
    try {
      await firstCommit(log);
      const first = await startReplicator(repo, db, ['--interval', '0.3', '--verbose']);
      try {
        await untilSaid(first, /segment 2 \(/);
        const second = strataAsync(['replicate', db, '--repo', repo, '--interval', '0.3']);
        const refused = await finished(second);
        assert.equal(refused.status, 1, refused.stderr);
        // Refused at its start, naming the first, before it ships anything into the catalog; where
        // the os-lock addon did not build, at its first segment, which the catalog does not take.
        assert.match(refused.stderr, hasLockAddon() ? /second\.db is already replicated by another process \(pid \d+, strata replicate\)/ : /another `strata replicate`/);
        const health = strata(['health', '--repo', repo]);
        assert.equal(health.status, 0, health.stdout);
        assert.match(health.stdout, /ok\s+replication \(second\): replicate is running since/);
      } finally {
        await stop(first);
      }
      const afterStop = strata(['health', '--repo', repo]);
      assert.equal(afterStop.status, 0, afterStop.stdout);
      assert.match(afterStop.stdout, /ok\s+replication \(second\): replicate was stopped at/);
    } finally {
      writer.kill('SIGTERM');
      await exited(writer);
    }
  });
});
