import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { ROOT, TEST_PASSPHRASE, catalogPath, finished, json, removeCatalog, strata, useTempDir } from './helpers/env.js';
import { checkPrefix, commits, exited, firstCommit, markersOf, moreCommits, startReplicator, startWriter } from './helpers/pitr.js';
import type { PointInTime } from './helpers/pitr.js';

interface ListedSegment {
  id: string;
  key: string;
  base: string;
  sequence: number;
  merged?: { firstSequence: number; lastId: string; segments: number };
  firstAt: string;
  lastAt: string;
  transactions: number;
}

/**
 * Compaction and the chains' lifetime: the replicator merges the segments of each closed window
 * (short windows here: 2 s, then 6 s) and takes a new base every 10 s, while a writer commits every
 * 10 ms and the replicator is killed once in the middle. Restores inside merged segments (whose
 * transactions are joined within slots of 125 ms) hold exactly what they say, nothing merged away
 * is left behind, and prune's point-in-time window drops the segments of old chains while their
 * bases stay.
 */
describe('continuous protection: compaction and old chains', function () {
  this.timeout(600_000);
  const dir = useTempDir();

  it('merges closed windows, restores exactly inside merged segments, and prunes old chains but not their bases', async () => {
    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    const log = path.join(dir.path, 'commits.log');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const writer = startWriter(db, log, 900_000);
    await firstCommit(log);
    // What the catalog lists, after `strata list` has opened the repository (which finishes what a
    // killed process left, and rebuilds a lost catalog).
    const listed = (): ListedSegment[] => {
      assert.equal(strata(['list', '--repo', repo, '--json']).status, 0);
      return (JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { segments?: ListedSegment[] }).segments ?? [];
    };
    const options = ['--interval', '0.3', '--compact', '2s,6s', '--base-every', '10s', '--verbose'];
    let replicator = await startReplicator(repo, db, options);
    // Until it has merged at the 6 s level at least once, then killed wherever it is (perhaps in
    // the middle of a merge), and started again.
    while (!/merged \d+ segments into one \(sequences 1-/.test(replicator.stderr()) || (replicator.stderr().match(/merged \d+ segments/g) ?? []).length < 3) {
      assert.equal(replicator.child.exitCode, null, replicator.stderr());
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    replicator.child.kill('SIGKILL');
    await exited(replicator.child);
    await moreCommits(log, 50);
    replicator = await startReplicator(repo, db, options);
    // Long enough for two more bases and their merges. Meanwhile restores to moments a few seconds
    // back, whose segments the replicator is merging and deleting while they are read, and verify.
    let during = 0;
    while ((replicator.stderr().match(/as the base of new segments/g) ?? []).length < 2 || during < 3) {
      assert.equal(replicator.child.exitCode, null, replicator.stderr());
      assert.equal(writer.exitCode, null, 'the writer is still writing');
      const asOf = Date.now() - 3000;
      const to = path.join(dir.path, `during-${during}.db`);
      const result = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', new Date(asOf).toISOString(), '--to', to, '--json']);
      assert.equal(result.status, 0, result.stderr);
      checkPrefix(`restore ${during} while merging`, markersOf(to).seqs, commits(log), asOf, Date.parse(json<{ pointInTime: PointInTime }>(result).pointInTime.completeThrough));
      rmSync(to);
      if (during === 1) {
        const verified = strata(['verify', '--all', '--repo', repo, '--json']);
        assert.equal(verified.status, 0, verified.stdout + verified.stderr);
      }
      during++;
      // Lets the replicator's output in (the CLI runs above block this process while they run).
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await moreCommits(log, 800);
    // The writer stops just after a new base, so that its last commits go into that chain's first
    // segments long before the chain is --base-every old. (Commits that come as a chain turns old
    // are shipped to it and a new base taken after them: had the writer stopped then, that base
    // would rightly have no segments.) From then on nothing changes, and the base must stay.
    const basesTaken = (): number => (replicator.stderr().match(/as the base of new segments/g) ?? []).length;
    const basesBefore = basesTaken();
    while (basesTaken() === basesBefore) {
      assert.equal(replicator.child.exitCode, null, replicator.stderr());
      assert.equal(writer.exitCode, null, 'the writer is still writing');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const lastBaseSeen = Date.now();
    await moreCommits(log, 20);
    writer.kill('SIGTERM');
    await finished(writer);
    // The replicator merges every window once it is closed: wait until each 6 s window of the
    // writer's time holds one segment (however long a loaded machine takes).
    // (Read from the catalog file as it is: a `strata list` every half second would load the machine.)
    const sixSecondWindows = (): Map<string, number> => {
      const counts = new Map<string, number>();
      let current: ListedSegment[];
      try {
        current = (JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { segments?: ListedSegment[] }).segments ?? [];
      } catch {
        // The generation just read from the folder was replaced meanwhile: look again.
        return new Map([['replaced', 2]]);
      }
      for (const s of current) counts.set(`${s.base} ${Math.floor(Date.parse(s.lastAt) / 6000)}`, (counts.get(`${s.base} ${Math.floor(Date.parse(s.lastAt) / 6000)}`) ?? 0) + 1);
      return counts;
    };
    // And past the age at which the chain would get a new base if it changed.
    while ([...sixSecondWindows().values()].some((n) => n > 1) || Date.now() - lastBaseSeen < 12_000) {
      assert.equal(replicator.child.exitCode, null, replicator.stderr());
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    assert.equal(basesTaken(), basesBefore + 1, `no base after the writer stopped:\n${replicator.stderr()}`);
    replicator.child.kill('SIGTERM');
    assert.equal((await exited(replicator.child)).code, 0, replicator.stderr());
    const written = commits(log);

    let segments = listed();
    const merged = segments.filter((s) => s.merged);
    assert.ok(merged.length >= 2, `merged segments: ${merged.length}`);
    const held = segments.reduce((sum, s) => sum + (s.merged?.segments ?? 1), 0);
    assert.ok(held > segments.length && merged.some((s) => s.merged!.segments >= 4), `${segments.length} segments hold ${held} shipped ones`);
    assert.deepEqual([...sixSecondWindows().values()].filter((n) => n > 1), [], 'one segment per chain and 6 s window');
    assert.ok(new Set(segments.map((s) => s.base)).size >= 3, 'a new base was taken every 10 s');
    // Once the writer stopped, no new base: a database nobody writes to keeps its base (every
    // replication base has segments, however long the merges above took).
    const windows = json<{ continuity: { base: string; segments: number }[] }>(strata(['list', '--repo', repo, '--json'])).continuity;
    assert.deepEqual(windows.filter((w) => w.segments === 0).map((w) => w.base), [], 'no base without segments');
    // Every segment file in the repository is one the catalog lists: merged-away parts are gone,
    // also those of the merge the kill interrupted (the restart finished or undid it).
    const files = readdirSync(path.join(repo, 'backups/app/segments')).map((f) => `backups/app/segments/${f}`).sort();
    assert.deepEqual(files, segments.map((s) => s.key).sort());
    const verified = strata(['verify', '--all', '--repo', repo, '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);

    // Restores to moments inside merged segments (and elsewhere) hold a prefix: nothing committed
    // after the target, everything committed before the moment they say they are complete through.
    const targets = [
      ...merged.slice(0, 4).map((s) => (Date.parse(s.firstAt) + Date.parse(s.lastAt)) / 2),
      ...Array.from({ length: 4 }, () => {
        const from = Math.min(...segments.map((s) => Date.parse(s.firstAt)));
        return from + Math.random() * (Math.max(...segments.map((s) => Date.parse(s.lastAt))) - from);
      }),
    ];
    for (const [i, asOf] of targets.entries()) {
      const to = path.join(dir.path, `restored-${i}.db`);
      const result = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', new Date(asOf).toISOString(), '--to', to, '--json']);
      assert.equal(result.status, 0, result.stderr);
      const reached = json<{ pointInTime: PointInTime }>(result).pointInTime;
      const { seqs, integrity } = markersOf(to);
      assert.equal(integrity, 'ok');
      checkPrefix(`restore ${i} to ${new Date(asOf).toISOString()}`, seqs, written, asOf, Date.parse(reached.completeThrough));
      rmSync(to);
    }

    // By hand (docs/FORMAT.md): the base restored, then replay-segments.py over the segments'
    // files, into the middle of a merged segment, gives the bytes strata restores.
    const inMerged = merged[0]!;
    const until = new Date((Date.parse(inMerged.firstAt) + Date.parse(inMerged.lastAt)) / 2).toISOString();
    const byStrata = path.join(dir.path, 'by-strata.db');
    const restoredAsOf = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', until, '--to', byStrata, '--json']);
    assert.equal(restoredAsOf.status, 0, restoredAsOf.stderr);
    assert.equal(json<{ pointInTime: PointInTime & { restorePoint: string } }>(restoredAsOf).pointInTime.restorePoint, inMerged.base);
    const byHand = path.join(dir.path, 'by-hand.db');
    assert.equal(strata(['restore', inMerged.base, '--repo', repo, '--to', byHand]).status, 0);
    const home = path.join(dir.path, 'home');
    mkdirSync(path.join(home, '.gnupg'), { recursive: true, mode: 0o700 });
    writeFileSync(path.join(dir.path, 'passphrase'), TEST_PASSPHRASE, { mode: 0o600 });
    const env = { ...process.env, HOME: home, GNUPGHOME: path.join(home, '.gnupg') };
    try {
      const recipe = /```sh\n(# recover-data-keys[:\s][\s\S]*?)```/.exec(readFileSync(path.join(ROOT, 'docs/FORMAT.md'), 'utf8'))![1]!;
      const keys = path.join(dir.path, 'data keys');
      const recovered = spawnSync('bash', ['-euo', 'pipefail', '-c', recipe], { env: { ...env, REPO: repo, PASSFILE: path.join(dir.path, 'passphrase'), KEYS: keys }, encoding: 'utf8' });
      assert.equal(recovered.status, 0, recovered.stderr);
      const files = readdirSync(path.join(repo, 'backups/app/segments')).map((f) => path.join(repo, 'backups/app/segments', f));
      const replayed = spawnSync('python3', [path.join(ROOT, 'docs/replay-segments.py'), '--keys', keys, '--db', byHand, '--base', inMerged.base, '--until', until, ...files], { env, encoding: 'utf8' });
      assert.equal(replayed.status, 0, replayed.stderr);

      // What the merges wrote (segment.json, read as docs/FORMAT.md says): the transactions seen
      // committed in each slot of 125 ms (half the 0.3 s interval, halved from 500 ms) joined into
      // one, so a merged segment lists fewer transactions than it holds commits, and no two of
      // them in one slot.
      const manifests = spawnSync(
        'python3',
        [
          '-c',
          [
            'import importlib.util, json, sys',
            `spec = importlib.util.spec_from_file_location("replay", ${JSON.stringify(path.join(ROOT, 'docs/replay-segments.py'))})`,
            'replay = importlib.util.module_from_spec(spec); spec.loader.exec_module(replay)',
            'keys = replay.recover_chain.read_keys(sys.argv[1])',
            'print(json.dumps([replay.read_segment_with_keys(a, keys)[0] for a in sys.argv[2:]]))',
          ].join('\n'),
          keys,
          ...merged.map((m) => path.join(repo, m.key)),
        ],
        { env, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 },
      );
      assert.equal(manifests.status, 0, manifests.stderr);
      for (const manifest of JSON.parse(manifests.stdout) as { id: string; condensedWithinMs?: number; transactions: { observedAt: string; commits?: number }[] }[]) {
        assert.equal(manifest.condensedWithinMs, 125, manifest.id);
        const slots = manifest.transactions.map((t) => Math.floor(Date.parse(t.observedAt) / 125));
        assert.equal(new Set(slots).size, slots.length, `${manifest.id}: two transactions of one slot were left apart`);
        const held = manifest.transactions.reduce((sum, t) => sum + (t.commits ?? 1), 0);
        assert.ok(manifest.transactions.length * 2 < held, `${manifest.id}: ${manifest.transactions.length} transactions for ${held} commits`);
      }
    } finally {
      spawnSync('gpgconf', ['--kill', 'all'], { env });
    }
    assert.ok(readFileSync(byHand).equals(readFileSync(byStrata)), 'replayed by hand, byte for byte what strata restored');

    // A lost catalog rebuilt from the artifacts lists the same segments (merged ones, not their parts).
    removeCatalog(repo);
    assert.deepEqual(
      listed().map((s) => s.key).sort(),
      segments.map((s) => s.key).sort(),
    );

    // Retention: with a point-in-time window of 5 s (counted back from the newest moment shipped)
    // and every restore point kept by --keep-last, the older chains lose their segments and keep
    // their bases; the newest chain keeps everything.
    const bases = [...new Set(segments.map((s) => s.base))];
    // The window counts back from the newest moment shipped; a chain whose last moment is in it
    // keeps everything, the others lose their segments.
    const newestShipped = Math.max(...segments.map((s) => Date.parse(s.lastAt)));
    const lastOf = (base: string): number => Math.max(...segments.filter((s) => s.base === base).map((s) => Date.parse(s.lastAt)));
    const reaching = bases.filter((b) => lastOf(b) >= newestShipped - 5000).sort();
    const policy = ['--keep-last', '100', '--keep-within-pitr', '5s'];
    const dry = strata(['prune', '--repo', repo, '--dry-run', ...policy]);
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(dry.stdout, /would remove the \d+ segment\(s\) after \S+ \(restores to moments from .* the restore point itself stays\): they end before the point-in-time window 5s/);
    assert.deepEqual(listed().map((s) => s.key).sort(), segments.map((s) => s.key).sort(), 'a dry run removes nothing');
    const backupsBefore = json<{ backups: { id: string }[] }>(strata(['list', '--repo', repo, '--json'])).backups.map((b) => b.id);
    const pruned = strata(['prune', '--repo', repo, ...policy]);
    assert.equal(pruned.status, 0, pruned.stderr);
    segments = listed();
    assert.deepEqual([...new Set(segments.map((s) => s.base))].sort(), reaching, 'only the chains reaching into the window keep segments');
    assert.ok(reaching.length < bases.length, 'older chains lost their segments');
    assert.deepEqual(json<{ backups: { id: string }[] }>(strata(['list', '--repo', repo, '--json'])).backups.map((b) => b.id), backupsBefore, 'every base stays');
    const left = existsSync(path.join(repo, 'backups/app/segments')) ? readdirSync(path.join(repo, 'backups/app/segments')).map((f) => `backups/app/segments/${f}`).sort() : [];
    assert.deepEqual(left, segments.map((s) => s.key).sort(), 'the removed segments\' files are gone');
    // A moment of the newest chain still restores exactly.
    const inNewest = segments.at(-1)!;
    const asOf = Date.parse(inNewest.lastAt);
    const to = path.join(dir.path, 'after-prune.db');
    const result = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', new Date(asOf).toISOString(), '--to', to, '--json']);
    assert.equal(result.status, 0, result.stderr);
    checkPrefix('restore after prune', markersOf(to).seqs, written, asOf, Date.parse(json<{ pointInTime: PointInTime }>(result).pointInTime.completeThrough));
  });

  it('a merge never deletes the files of a backup the catalog lists, whatever a note of pending deletions says', async () => {
    const repo = path.join(dir.path, 'noted-repo');
    const db = path.join(dir.path, 'noted.db');
    const log = path.join(dir.path, 'noted-commits.log');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const writer = startWriter(db, log, 900_000);
    try {
      await firstCommit(log);
      const replicator = await startReplicator(repo, db, ['--interval', '0.3', '--compact', '2s', '--verbose']);
      try {
        // A prune that died (or failed) between its note and its catalog write, after this
        // replicator opened the repository: the note names the base's files, which the catalog
        // still lists, so that prune did not happen and they must stay.
        const [base] = (JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { backups: { key: string }[] }).backups;
        mkdirSync(path.join(repo, 'locks'), { recursive: true });
        writeFileSync(path.join(repo, 'locks', 'pending-deletions.json'), JSON.stringify([base!.key]));
        const merges = (): number => (replicator.stderr().match(/merged \d+ segments/g) ?? []).length;
        const before = merges();
        while (merges() < before + 2) {
          assert.equal(replicator.child.exitCode, null, replicator.stderr());
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        assert.ok(existsSync(path.join(repo, base!.key)), `the base's artifact ${base!.key} is still there after two merges`);
      } finally {
        replicator.child.kill('SIGTERM');
        await exited(replicator.child);
      }
    } finally {
      writer.kill('SIGTERM');
      await finished(writer);
    }
    const verified = strata(['verify', '--all', '--repo', repo, '--json']);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
  });
});
