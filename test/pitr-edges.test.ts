import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { describeCoverage } from '@strata/protocol/continuity';
import { Passphrase, initRepository, openRepository } from '@strata/sdk';
import type { ReplicationEvent } from '@strata/sdk';
import { DiskFullStorage } from './helpers/faulty-storage.js';
import { TEST_PASSPHRASE, catalogPath, journalLines, json, skipOrFail, strata, strataAsync, useTempDir } from './helpers/env.js';
import { commits, exited, firstCommit, hasLockAddon, markersOf, moreCommits, startReplicator, startWriter } from './helpers/pitr.js';
import type { PointInTime } from './helpers/pitr.js';
import { Client } from './helpers/server-client.js';

/**
 * Continuous protection where it meets the rest of Strata: what `list` and the extension's server
 * show of it, copies, mirrors and exports of segments, deleting a base, and a replicator whose
 * storage keeps failing.
 */

/** Replicates `db` (the writer committing into it) into `repo` until `segments` segments are shipped; the writer keeps going. */
async function replicateFor(repo: string, db: string, log: string, segments: number): Promise<{ stop: () => Promise<void>; stderr: () => string }> {
  const writer = startWriter(db, log, 600_000);
  await firstCommit(log);
  const replicator = await startReplicator(repo, db, ['--interval', '0.3', '--verbose']);
  const pattern = new RegExp(`segment ${segments} \\(`);
  while (!pattern.test(replicator.stderr())) {
    if (replicator.child.exitCode !== null) throw new Error(`replicate exited early:\n${replicator.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    stderr: replicator.stderr,
    stop: async () => {
      replicator.child.kill('SIGTERM');
      const stopped = await exited(replicator.child);
      assert.equal(stopped.code, 0, replicator.stderr());
      writer.kill('SIGTERM');
      await exited(writer);
    },
  };
}

interface Window {
  database: string;
  base: string;
  from: string;
  to: string;
  segments: number;
  transactions: number;
  lastShippedAt: string;
  storedBytes: number;
}

describe('continuous protection: the covered window in list and in the extension', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it('strata list and strata/list say since when a database is continuously protected and when its last change was shipped', async () => {
    const workspace = path.join(dir.path, 'ws');
    mkdirSync(workspace);
    const repo = path.join(workspace, '.backups');
    const db = path.join(workspace, 'app.db');
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db' } } }));
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    const replication = await replicateFor(repo, db, path.join(dir.path, 'commits.log'), 3);
    await replication.stop();

    const listed = strata(['list', '--repo', repo]);
    assert.equal(listed.status, 0, listed.stderr);
    const line = listed.stdout.split('\n').find((l) => l.startsWith('app: continuous since'));
    assert.ok(line, `list names the covered window:\n${listed.stdout}`);
    const listedJson = json<{ backups: { id: string; createdAt: string }[]; continuity: Window[] }>(strata(['list', '--repo', repo, '--json']));
    const [window] = listedJson.continuity;
    assert.equal(listedJson.continuity.length, 1);
    assert.match(line, new RegExp(`^app: continuous since ${window!.from.replace('T', ' ').replace(/\.\d+Z$/, 'Z')} \\(from ${window!.base}, ${window!.segments} segment\\(s\\), ${window!.transactions} transaction\\(s\\), .*\\), last change shipped \\d+\\.\\d s ago$`));
    assert.ok(window!.segments >= 3, `${window!.segments} segments`);
    assert.ok(window!.to > window!.from, 'the window reaches past its base');

    const client = new Client();
    try {
      await client.start();
      await client.request('strata/workspace', { folders: [workspace], databases: [] });
      for (const byTier of [false, true]) {
        const answer = await client.request('strata/list', { repository: repo, database: 'app', byTier });
        assert.deepEqual(answer.continuity, listedJson.continuity, `byTier ${byTier}: the server says what list --json says`);
      }
    } finally {
      await client.stop();
    }
    // The tree's line, as the extension words it (extension/src/tree.ts continuityNode).
    const now = Date.parse(window!.lastShippedAt) + 800;
    assert.equal(describeCoverage(window!, now, (iso) => iso), `continuous since ${window!.from}, last change shipped 0.8 s ago`);
    assert.equal(describeCoverage({ ...window!, broken: 'segment 2 is missing' }, now + 300_000, (iso) => iso), `continuous since ${window!.from}, last change shipped 5 min ago; chain broken, restores stop before it: segment 2 is missing`);
  });
});

describe('continuous protection: a restore over the database replicate ships', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it("is refused while replicate holds it, naming Strata's replicator and what to do", async () => {
    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    const replication = await replicateFor(repo, db, path.join(dir.path, 'commits.log'), 1);
    try {
      const restore = strata(['restore', 'latest', '--db', 'app', '--repo', repo, '--to', db, '--force', '--yes']);
      assert.equal(restore.status, 1, restore.stderr);
      assert.match(restore.stderr, /is open in (pid \d+ \(.+\), )*pid \d+ \(strata replicate\).*nothing was changed\. Strata's own replicator holds it to ship its changes: stop it for the restore and start it again after/);
    } finally {
      await replication.stop();
    }
  });
});

describe('continuous protection: segments in copies, mirrors and exports', function () {
  this.timeout(600_000);
  const dir = useTempDir();
  const at = (name: string): string => path.join(dir.path, name);
  const MIRROR_PASSPHRASE = 'the mirror passphrase';
  const COPY_PASSPHRASE = 'the copy passphrase';

  /** A primary (encrypted, with a mirror of another passphrase in strata.config.json) holding a base of app.db and at least 4 segments; the moment halfway through them. */
  async function replicatedWithMirror(): Promise<{ primary: string; mirror: string; window: Window; middle: string }> {
    writeFileSync(at('mirror-passphrase'), `${MIRROR_PASSPHRASE}\n`);
    writeFileSync(at('strata.config.json'), JSON.stringify({ repository: './primary', mirror: { repository: './mirror', passphraseFile: './mirror-passphrase' }, databases: { app: { url: './app.db' } } }));
    assert.equal(strata(['init'], { cwd: dir.path }).status, 0);
    assert.equal(strata(['init', '--repo', at('mirror')], { env: { STRATA_PASSPHRASE: MIRROR_PASSPHRASE } }).status, 0);
    const replication = await replicateFor(at('primary'), at('app.db'), at('commits.log'), 4);
    await replication.stop();
    const window = json<{ continuity: Window[] }>(strata(['list', '--repo', at('primary'), '--json'])).continuity.at(-1)!;
    // Halfway through the segments' own transactions, not through the window: on a slow machine the
    // base can be taken long before the first segment, and a moment before it replays none.
    const segments = segmentsBySequence(at('primary'));
    const middle = new Date((Date.parse(segments[0]!.firstAt) + Date.parse(segments.at(-1)!.lastAt)) / 2).toISOString();
    return { primary: at('primary'), mirror: at('mirror'), window, middle };
  }

  /** The repository's segments in chain order (their names sort by second only, then by a random part). */
  function segmentsBySequence(repo: string): { key: string; sequence: number; firstAt: string; lastAt: string }[] {
    const listed = (JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { segments: { key: string; sequence: number; firstAt: string; lastAt: string }[] }).segments;
    return [...listed].sort((a, b) => a.sequence - b.sequence);
  }

  /** Restores app as of `asOf` from `repo`; the markers restored, and how many transactions came from segments. */
  function restoredAsOf(repo: string, asOf: string, name: string, passphrase = TEST_PASSPHRASE): { seqs: number[]; transactions: number } {
    const to = at(name);
    const result = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', asOf, '--to', to, '--json'], { env: { STRATA_PASSPHRASE: passphrase } });
    assert.equal(result.status, 0, result.stderr);
    const { seqs, integrity } = markersOf(to);
    assert.equal(integrity, 'ok');
    return { seqs, transactions: json<{ pointInTime: PointInTime }>(result).pointInTime.transactions };
  }

  it('strata copy brings the segments along: the target restores as of a moment between the base and the last segment, as the source does', async () => {
    const { primary, window, middle } = await replicatedWithMirror();
    const reference = restoredAsOf(primary, middle, 'reference.db');
    assert.ok(reference.transactions > 0, 'the moment is reached by replaying segments');
    const target = at('copy');
    assert.equal(strata(['init', '--repo', target], { env: { STRATA_PASSPHRASE: COPY_PASSPHRASE } }).status, 0);
    const toTarget = { STRATA_TO_PASSPHRASE: COPY_PASSPHRASE };
    const first = strata(['copy', '--from', primary, '--to', target], { env: toTarget });
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`copied ${window.segments} segment\\(s\\) of continuous protection`));
    const copied = json<{ continuity: Window[] }>(strata(['list', '--repo', target, '--json'], { env: { STRATA_PASSPHRASE: COPY_PASSPHRASE } })).continuity;
    assert.deepEqual(copied, [{ ...window, storedBytes: copied[0]!.storedBytes }], 'the same window, segment for segment');
    assert.deepEqual(restoredAsOf(target, middle, 'copied.db', COPY_PASSPHRASE), reference);
    assert.deepEqual(restoredAsOf(target, window.to, 'copied-end.db', COPY_PASSPHRASE), restoredAsOf(primary, window.to, 'reference-end.db'));
    const verified = strata(['verify', '--repo', target, '--all'], { env: { STRATA_PASSPHRASE: COPY_PASSPHRASE } });
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    const again = json<{ copied: unknown[]; segments: string[] }>(strata(['copy', '--from', primary, '--to', target, '--json'], { env: toTarget }));
    assert.deepEqual([again.copied.length, again.segments.length], [0, 0], 'a second run copies nothing');
  });

  it('a copy that cannot carry a damaged segment says so, carries the segments before it, and does not count it as a backup that failed', async () => {
    const { primary, window } = await replicatedWithMirror();
    const last = path.join(primary, segmentsBySequence(primary).at(-1)!.key);
    const damaged = readFileSync(last);
    damaged[Math.floor(damaged.length / 2)]! ^= 0x5a;
    writeFileSync(last, damaged);
    const target = at('copy');
    assert.equal(strata(['init', '--repo', target]).status, 0);
    const copy = strata(['copy', '--from', primary, '--to', target]);
    assert.notEqual(copy.status, 0, copy.stdout);
    assert.match(copy.stderr, /the new segments of 1 base\(s\), from the first that could not be copied on, were not copied \(1 backup\(s\) were\)/);
    assert.doesNotMatch(copy.stderr, /backup\(s\) (was|were) not copied/);
    const onTarget = json<{ backups: unknown[]; continuity: Window[] }>(strata(['list', '--repo', target, '--json']));
    assert.equal(onTarget.backups.length, 1, 'the base itself was copied');
    // The intact segments before the damaged one extend the target's window as far as they reach.
    assert.equal(onTarget.continuity.at(-1)!.segments, window.segments - 1);
    assert.equal(strata(['verify', '--all', '--repo', target]).status, 0, 'the target verifies: its chain is whole');
    assert.deepEqual(readdirSync(path.join(target, 'backups', 'app', 'segments')).length, window.segments - 1, 'no object of the damaged one on the target');
  });

  it('the mirror receives the segments with the next backup, and restores as of a moment they cover', async () => {
    const { primary, mirror, window, middle } = await replicatedWithMirror();
    const backup = strata(['backup', 'app', '--json'], { cwd: dir.path });
    assert.equal(backup.status, 0, backup.stderr);
    assert.equal(json<{ mirror: { ok: boolean } }>(backup).mirror.ok, true);
    const mirrored = json<{ continuity: Window[] }>(strata(['list', '--repo', mirror, '--json'], { env: { STRATA_PASSPHRASE: MIRROR_PASSPHRASE } })).continuity;
    assert.deepEqual(
      mirrored.map((w) => [w.base, w.segments, w.transactions, w.to]),
      [[window.base, window.segments, window.transactions, window.to]],
    );
    const reference = restoredAsOf(primary, middle, 'reference.db');
    assert.ok(reference.transactions > 0, 'the moment is reached by replaying segments');
    assert.deepEqual(restoredAsOf(mirror, middle, 'mirrored.db', MIRROR_PASSPHRASE), reference);

    // A damaged segment in the repository, the first, which every restore past the base replays:
    // the restore as of the moment stands in with the mirror's.
    const first = path.join(primary, segmentsBySequence(primary)[0]!.key);
    const damaged = readFileSync(first);
    damaged[Math.floor(damaged.length / 2)]! ^= 0x5a;
    writeFileSync(first, damaged);
    const to = at('fallback.db');
    const restored = strata(['restore', '--db', 'app', '--as-of', middle, '--to', to, '--json'], { cwd: dir.path });
    assert.equal(restored.status, 0, restored.stderr);
    assert.match(restored.stderr, /restored from the mirror/);
    const result = json<{ pointInTime: PointInTime; fromMirror: { reason: { code: string } } }>(restored);
    assert.equal(result.fromMirror.reason.code, 'ARTIFACT_CORRUPT');
    const { seqs, integrity } = markersOf(to);
    assert.equal(integrity, 'ok');
    assert.deepEqual({ seqs, transactions: result.pointInTime.transactions }, reference);
  });

  it('a copy after the source merged segments the target holds unmerged: the merged one takes their place there, and the target restores as the source does', async () => {
    const primary = at('primary');
    const target = at('target');
    assert.equal(strata(['init', '--repo', primary]).status, 0);
    assert.equal(strata(['init', '--repo', target]).status, 0);
    const writer = startWriter(at('app.db'), at('commits.log'), 600_000);
    await firstCommit(at('commits.log'));
    const runUntil = async (extra: string[], done: (stderr: string) => boolean): Promise<void> => {
      const replicator = await startReplicator(primary, at('app.db'), ['--interval', '0.3', '--verbose', ...extra]);
      const deadline = Date.now() + 180_000;
      while (!done(replicator.stderr())) {
        assert.ok(Date.now() < deadline && replicator.child.exitCode === null, `replicate did not get there:\n${replicator.stderr()}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      replicator.child.kill('SIGTERM');
      assert.equal((await exited(replicator.child)).code, 0, replicator.stderr());
    };
    await runUntil(['--compact', 'off'], (e) => /segment 6 \(/.test(e));
    const first = strata(['copy', '--from', primary, '--to', target, '--json']);
    assert.equal(first.status, 0, first.stderr);
    // The same chain goes on with compaction: the closed seconds of the first run are merged.
    await runUntil(['--compact', '1s'], (e) => /merged \d+ segments/.test(e) && (e.split(/merged \d+ segments/).at(-1)!.match(/segment \d+ \(/g)?.length ?? 0) >= 2);
    writer.kill('SIGTERM');
    await exited(writer);
    const second = strata(['copy', '--from', primary, '--to', target, '--json']);
    assert.equal(second.status, 0, second.stderr);
    const windowOf = (repo: string): Window => json<{ continuity: Window[] }>(strata(['list', '--repo', repo, '--json'])).continuity.at(-1)!;
    const source = windowOf(primary);
    const copied = windowOf(target);
    assert.deepEqual([copied.base, copied.transactions, copied.from, copied.to], [source.base, source.transactions, source.from, source.to]);
    const middle = new Date((Date.parse(source.from) + Date.parse(source.to)) / 2).toISOString();
    assert.deepEqual(restoredAsOf(target, middle, 'from-target.db'), restoredAsOf(primary, middle, 'from-primary.db'));
    assert.equal(strata(['verify', '--all', '--repo', target]).status, 0, 'the target verifies: no segment of the chain is missing or extra');
  });

  it('with a mirror configured, replicate copies new segments to it while it runs: the mirror restores as of a moment before any backup ran', async () => {
    writeFileSync(at('mirror-passphrase'), `${MIRROR_PASSPHRASE}\n`);
    writeFileSync(at('strata.config.json'), JSON.stringify({ repository: './primary', mirror: { repository: './mirror', passphraseFile: './mirror-passphrase' }, databases: { app: { url: './app.db' } } }));
    assert.equal(strata(['init'], { cwd: dir.path }).status, 0);
    assert.equal(strata(['init', '--repo', at('mirror')], { env: { STRATA_PASSPHRASE: MIRROR_PASSPHRASE } }).status, 0);
    const writer = startWriter(at('app.db'), at('commits.log'), 600_000);
    await firstCommit(at('commits.log'));
    const replicator = strataAsync(['replicate', 'app', '--interval', '0.3', '--mirror-every', '1'], { cwd: dir.path });
    let stderr = '';
    replicator.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    replicator.stdout!.resume();
    const mirrored = (): Window | undefined => json<{ continuity?: Window[] }>(strata(['list', '--repo', at('mirror'), '--json'], { env: { STRATA_PASSPHRASE: MIRROR_PASSPHRASE } })).continuity?.at(-1);
    // While it runs, with no backup in between: the mirror's window grows.
    let seen: Window | undefined;
    const deadline = Date.now() + 180_000;
    while (!(seen && seen.segments >= 3)) {
      assert.ok(Date.now() < deadline && replicator.exitCode === null, `the mirror received no segments while replicate ran:\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
      seen = mirrored();
    }
    replicator.kill('SIGTERM');
    assert.equal((await exited(replicator)).code, 0, stderr);
    writer.kill('SIGTERM');
    await exited(writer);
    // A clean stop copies what the last interval shipped: the mirror ends where the primary does.
    const primary = json<{ continuity: Window[] }>(strata(['list', '--repo', at('primary'), '--json'])).continuity.at(-1)!;
    const mirror = mirrored()!;
    assert.deepEqual([mirror.base, mirror.segments, mirror.transactions, mirror.to], [primary.base, primary.segments, primary.transactions, primary.to], stderr);
    const middle = new Date((Date.parse(primary.from) + Date.parse(primary.to)) / 2).toISOString();
    assert.deepEqual(restoredAsOf(at('mirror'), middle, 'from-mirror.db', MIRROR_PASSPHRASE), restoredAsOf(at('primary'), middle, 'from-primary.db'));
    // Only the first copy was journaled, not one per second.
    const mirrorLines = journalLines(at('primary')).filter((l) => (JSON.parse(l) as { kind: string }).kind === 'mirror');
    assert.ok(mirrorLines.length >= 1 && mirrorLines.length <= 2, `the first copy to the mirror is journaled, not each one after it:\n${mirrorLines.join('\n')}`);
  });

  it('export carries the segments after the bases it holds, and import brings them in: a restore as of a moment they cover works there', async () => {
    const { primary, window, middle } = await replicatedWithMirror();
    const reference = restoredAsOf(primary, middle, 'reference.db');
    assert.ok(reference.transactions > 0, 'the moment is reached by replaying segments');
    for (const format of ['tar.gz', 'zip']) {
      const file = at(`app.${format}`);
      const exported = strata(['export', 'app', '--repo', primary, '--out', file, '--json']);
      assert.equal(exported.status, 0, exported.stderr);
      assert.equal(json<{ segments: string[] }>(exported).segments.length, window.segments);
      const target = at(`imported-${format}`);
      assert.equal(strata(['init', '--repo', target]).status, 0);
      const imported = strata(['import', file, '--repo', target]);
      assert.equal(imported.status, 0, imported.stderr);
      assert.match(imported.stdout, new RegExp(`and ${window.segments} segment\\(s\\) of continuous protection`));
      const windows = json<{ continuity: Window[] }>(strata(['list', '--repo', target, '--json'])).continuity;
      assert.deepEqual(windows, [window], 'the same window, segment for segment');
      assert.deepEqual(restoredAsOf(target, middle, `imported-${format}.db`), reference);
      const again = json<{ imported: unknown[]; segments: unknown[] }>(strata(['import', file, '--repo', target, '--json']));
      assert.deepEqual([again.imported.length, again.segments.length], [0, 0], 'a second import adds nothing');
    }
    // RESTORE.md's by-hand commands reach the same moment, without Strata: recover-chain.py and
    // replay-segments.py from its appendices, gpg, zstd and sqlite3.
    const work = at('by-hand');
    mkdirSync(work);
    assert.equal(spawnSync('tar', ['-xzf', at('app.tar.gz'), '-C', work]).status, 0);
    const restoreMd = readFileSync(path.join(work, 'RESTORE.md'), 'utf8');
    const extract = /## Without Strata[\s\S]*?```sh\n([\s\S]*?\n)```/.exec(restoreMd);
    const asOf = /#### app as of a moment[\s\S]*?```sh\n([\s\S]*?\n)```/.exec(restoreMd);
    assert.ok(extract && asOf, `RESTORE.md lists the by-hand commands to restore app as of a moment:\n${restoreMd.slice(0, 3000)}`);
    assert.match(asOf[1]!, /UNTIL=\S+/);
    writeFileSync(path.join(work, 'PASSFILE'), TEST_PASSPHRASE);
    const gnupg = at('gnupg');
    mkdirSync(gnupg, { mode: 0o700 });
    const commands = `cp ../app.tar.gz . && ${extract[1]}${asOf[1]!.replace(/UNTIL=\S+/, `UNTIL='${middle}'`)}`;
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', commands], { cwd: work, env: { ...process.env, GNUPGHOME: gnupg }, encoding: 'utf8' });
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME: gnupg } });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^ok$/m, 'PRAGMA integrity_check');
    assert.deepEqual(markersOf(path.join(work, 'app-as-of.db')).seqs, reference.seqs);
  });
});

describe('continuous protection: deleting a base', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it('a base with segments is not deleted unasked: delete names the segments and the window lost, and --with-dependents deletes them with it', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    const replication = await replicateFor(repo, path.join(dir.path, 'app.db'), path.join(dir.path, 'commits.log'), 3);
    await replication.stop();
    const [window] = json<{ continuity: Window[] }>(strata(['list', '--repo', repo, '--json'])).continuity;
    const expected = `${window!.segments} segment\\(s\\) of continuous protection replay onto it \\(app from ${window!.from} to ${window!.to}, ${window!.segments} after ${window!.base}\\)`;

    const refused = strata(['delete', window!.base, '--repo', repo, '--yes']);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, new RegExp(`delete: ${expected}; deleting it loses restores as of those moments\\. Delete them too \\(--with-dependents\\) or keep it`));
    assert.equal(json<{ continuity: Window[] }>(strata(['list', '--repo', repo, '--json'])).continuity[0]!.segments, window!.segments, 'nothing was deleted');

    const dryRun = json<{ remove: string[]; segments: number }>(strata(['delete', window!.base, '--repo', repo, '--dry-run', '--with-dependents', '--json']));
    assert.deepEqual([dryRun.remove, dryRun.segments], [[window!.base], window!.segments]);

    const deleted = strata(['delete', window!.base, '--repo', repo, '--yes', '--with-dependents']);
    assert.equal(deleted.status, 0, deleted.stderr);
    assert.match(deleted.stderr, new RegExp(`warning: deleting ${expected}: restores as of those moments go with it`));
    assert.match(deleted.stdout, new RegExp(`deleted 1 backup\\(s\\): ${window!.base}, and the ${window!.segments} segment\\(s\\) after them`));
    const after = json<{ backups: unknown[]; continuity?: Window[] }>(strata(['list', '--repo', repo, '--json']));
    assert.deepEqual([after.backups.length, after.continuity ?? []], [0, []]);
    const segmentsDir = path.join(repo, 'backups', 'app', 'segments');
    assert.deepEqual(existsSync(segmentsDir) ? readdirSync(segmentsDir) : [], [], 'the segment files are gone');
  });
});

describe('continuous protection: storage that keeps failing', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it("leaveCheckpoints (replicate --no-checkpoint-lock) holds for every feed of the run: after a new base, the application's checkpoints still run", async function () {
    // Without the addon replicate never holds the lock, and this would prove nothing.
    if (!hasLockAddon()) skipOrFail(this, 'the os-lock addon is not installed (its build failed at install?): replicate cannot hold the checkpoint lock here');
    const repoDir = path.join(dir.path, 'repo-left');
    const db = path.join(dir.path, 'left.db');
    const app = spawnSync('sqlite3', [db, "PRAGMA journal_mode=WAL; CREATE TABLE item (body TEXT); INSERT INTO item VALUES ('first');"], { encoding: 'utf8' });
    assert.equal(app.status, 0, app.stderr);
    assert.equal(strata(['init', '--repo', repoDir]).status, 0);
    const repo = await openRepository(repoDir, { passphrase: new Passphrase(TEST_PASSPHRASE), tempDir: path.join(dir.path, 'tmp-left') });
    const events: ReplicationEvent[] = [];
    const stop = new AbortController();
    // A base every 10 s (the shortest allowed): the replicator starts over with a new feed for each.
    const running = repo.replicate(db, { database: 'left', intervalMs: 200, baseEveryMs: 10_000, leaveCheckpoints: true, signal: stop.signal, onEvent: (e) => events.push(e) });
    const outcome = running.then(
      () => 'stopped',
      (err: unknown) => `failed: ${String(err)}`,
    );
    try {
      // A hang detector, not a speed limit.
      const giveUpAt = Date.now() + 180_000;
      let written = 0;
      while (events.filter((e) => e.kind === 'base').length < 2) {
        assert.ok(Date.now() < giveUpAt, `no second base after 3 minutes: ${JSON.stringify(events.slice(-10))}`);
        const settled = await Promise.race([outcome, new Promise((resolve) => setTimeout(resolve, 100, undefined))]);
        assert.equal(settled, undefined, 'replicate ended before its second base');
        spawnSync('sqlite3', ['-cmd', '.timeout 20000', db, `INSERT INTO item VALUES ('row ${written++}')`]);
      }
      // Held, the lock would refuse each of these (1|-1|-1); the feed takes it at its open.
      for (let tries = 0; tries < 10; tries++) {
        const checkpoint = spawnSync('sqlite3', ['-cmd', '.timeout 20000', db, 'PRAGMA wal_checkpoint(PASSIVE)'], { encoding: 'utf8' });
        assert.match(checkpoint.stdout, /^0\|/, `try ${tries} after the second base: the application's checkpoint gave up (${checkpoint.stdout}${checkpoint.stderr})`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      stop.abort();
      await running.catch(() => undefined);
      await repo.close();
    }
    assert.equal(await outcome, 'stopped');
  });

  it('holds at most maxHeldBytes of transactions while every write fails, reads no more meanwhile, ships everything once storage is back, and files what was committed meanwhile at its commit', async () => {
    const repoDir = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    const log = path.join(dir.path, 'commits.log');
    const passphrase = new Passphrase(TEST_PASSPHRASE);
    const storage = new DiskFullStorage(repoDir, Number.MAX_SAFE_INTEGER);
    await initRepository(storage, { encryption: 'compat', passphrase });
    const repo = await openRepository(storage, { passphrase, tempDir: path.join(dir.path, 'tmp') });
    // The writer does not checkpoint: its log keeps what the replicator does not read.
    writeFileSync(`${log}.quiet`, '');
    const writer = startWriter(db, log, 600_000);
    await firstCommit(log);
    const events: ReplicationEvent[] = [];
    const stop = new AbortController();
    const limit = 64 * 1024;
    const notable = (): string => JSON.stringify(events.filter((e) => e.kind !== 'segment' && e.kind !== 'base').slice(-20));
    const waitFor = async (what: string, test: () => boolean): Promise<void> => {
      // A hang detector, not a speed limit: a replicator stuck for minutes is reported with its events.
      const giveUpAt = Date.now() + 180_000;
      while (!test()) {
        if (outcome.settled) throw new Error(`replicate stopped before ${what} (${String(await running.catch((err: unknown) => err))}): ${notable()}`);
        if (Date.now() > giveUpAt) throw new Error(`no ${what} after 3 minutes; the last events: ${notable()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    const outcome: { settled: boolean } = { settled: false };
    let unreadCheck: { seq: number; asOf: number } | undefined;
    const running = repo.replicate(db, { database: 'app', intervalMs: 200, maxHeldBytes: limit, signal: stop.signal, onEvent: (e) => events.push(e) }).finally(() => (outcome.settled = true));
    try {
      await waitFor('its first segment', () => events.some((e) => e.kind === 'segment'));
      const failingFrom = events.length;
      storage.setBudget(0);
      // Holding: a 'holding' event, or, when the replicator already held the limit as storage began
      // to fail (it reads the log a limit's worth at a time while it catches up), a failed attempt
      // that puts the limit's worth back.
      const holds = (e: ReplicationEvent): boolean => e.kind === 'holding' || (e.kind === 'retry' && e.held.bytes >= limit);
      await waitFor('it held the limit', () => events.slice(failingFrom).some(holds));
      const holdingAt = events.findIndex((e, i) => i >= failingFrom && holds(e));
      const holdingSeenAt = Date.now();
      // Storage keeps failing while the writer commits 200 more transactions.
      await moreCommits(log, 200);
      await waitFor('two more failed attempts', () => events.slice(holdingAt).filter((e) => e.kind === 'retry').length >= 2);
      const retries = events.slice(failingFrom).filter((e): e is Extract<ReplicationEvent, { kind: 'retry' }> => e.kind === 'retry');
      const held = events[holdingAt] as Extract<ReplicationEvent, { kind: 'holding' | 'retry' }>;
      assert.ok(held.held.bytes >= limit, 'it held up to the limit before it stopped reading');
      // A read stops at the first transaction's end past the room left: the limit and one transaction at most.
      const most = Math.max(...retries.map((r) => r.held.bytes), held.held.bytes);
      assert.ok(most < limit + 64 * 1024, `held at most ${most} bytes`);
      for (const retry of events.slice(holdingAt).filter((e): e is Extract<ReplicationEvent, { kind: 'retry' }> => e.kind === 'retry')) {
        assert.deepEqual(retry.held, held.held, 'nothing more was read while holding');
        assert.equal(retry.error.code, 'NO_SPACE');
      }
      // A transaction committed while nothing was read, and a moment well after it, but before
      // storage comes back (and the replicator reads it): a restore to that moment must hold it.
      const unread = commits(log).find((c) => c.before > holdingSeenAt)!;
      unreadCheck = { seq: unread.seq, asOf: unread.after + 1500 };
      while (Date.now() < unreadCheck.asOf + 1500) await new Promise((resolve) => setTimeout(resolve, 100));
      // Storage is back: what was held and what the log kept are shipped.
      storage.setBudget(Number.MAX_SAFE_INTEGER);
      const resumedAt = events.length;
      await waitFor('segments after storage came back', () => events.slice(resumedAt).filter((e) => e.kind === 'segment').length >= 2);
    } catch (err) {
      // The replicator stops and the repository closes, or this process would never exit.
      stop.abort();
      await running.catch(() => undefined);
      await repo.close();
      throw err;
    } finally {
      writer.kill('SIGTERM');
      await exited(writer);
      stop.abort();
    }
    try {
      const summary = await running;
      assert.equal(summary.bases.length, 1, 'one base: the chain was never lost');
      const to = path.join(dir.path, 'restored.db');
      const restored = await repo.restore({ asOf: new Date(), database: 'app' }, { to });
      assert.ok((restored.pointInTime?.transactions ?? 0) > 0, 'segments were replayed');
      assert.deepEqual(markersOf(to).seqs, commits(log).map((c) => c.seq), 'every committed transaction was shipped');
      // Read only once storage was back, but seen committed while the replicator held its limit.
      const asOf = path.join(dir.path, 'as-of.db');
      const during = await repo.restore({ asOf: new Date(unreadCheck!.asOf), database: 'app' }, { to: asOf });
      assert.ok(markersOf(asOf).seqs.includes(unreadCheck!.seq), `transaction ${unreadCheck!.seq}, committed 1.5 s before the target, is in the restore (it reached ${during.pointInTime?.reachedAt})`);
      assert.ok(Date.parse(during.pointInTime!.reachedAt) <= unreadCheck!.asOf);
    } finally {
      await running.catch(() => undefined);
      await repo.close();
    }
  });
});
