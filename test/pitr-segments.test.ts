import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { ROOT, TEST_PASSPHRASE, catalogPath, finished, removeCatalog, json, sqliteQuery, strata, useTempDir } from './helpers/env.js';
import { commits, exited, firstCommit, markersOf, moreCommits, startReplicator, startWriter } from './helpers/pitr.js';
import type { PointInTime } from './helpers/pitr.js';

/**
 * Continuous protection at its edges: SIGTERM ships what is held, a database not in WAL mode is
 * refused, and a damaged, missing or misplaced segment stops a restore before it writes anything
 * (and verify and health say so).
 */
describe('continuous protection: stopping and refusing', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it('SIGTERM ships what the replicator holds before it exits, even long before its interval', async () => {
    const repo = path.join(dir.path, 'repo');
    const db = path.join(dir.path, 'app.db');
    const log = path.join(dir.path, 'commits.log');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    writeFileSync(`${log}.quiet`, '');
    const writer = startWriter(db, log, 60_000);
    await firstCommit(log);
    const replicator = await startReplicator(repo, db, ['--interval', '600']);
    await moreCommits(log, 100);
    const running = json<{ checks: { check: string; status: string; message: string }[] }>(strata(['health', '--repo', repo, '--json'])).checks.find((c) => c.check === 'replication');
    assert.equal(running?.status, 'ok');
    assert.match(running!.message, /replicate is running since/);
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
    await firstCommit(log);
    const replicator = await startReplicator(repo, db, ['--interval', '0.3', '--verbose']);
    // Until it has shipped five segments.
    while (!/segment 5 \(/.test(replicator.stderr())) await new Promise((resolve) => setTimeout(resolve, 50));
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
    // Sanity: the chain restores as it is; and a person following docs/FORMAT.md gets the same
    // database with gpg, zstd, python3 and sqlite3 (recover the base, replay the segments).
    const good = path.join(dir.path, 'good.db');
    const middle = new Date(Date.parse(JSON.parse(readFileSync(catalogPath(repo), 'utf8')).segments[2].lastAt) - 1).toISOString();
    const restored = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', middle, '--to', good, '--json']);
    assert.equal(restored.status, 0, restored.stderr);
    const base = json<{ pointInTime: PointInTime & { restorePoint: string } }>(restored).pointInTime.restorePoint;
    const home = path.join(dir.path, 'home');
    mkdirSync(path.join(home, '.gnupg'), { recursive: true, mode: 0o700 });
    writeFileSync(path.join(dir.path, 'passphrase'), TEST_PASSPHRASE, { mode: 0o600 });
    const env = { ...process.env, HOME: home, GNUPGHOME: path.join(home, '.gnupg') };
    const follow = (marker: string, variables: Record<string, string>): string => {
      const block = new RegExp('```sh\\n(# ' + marker + '[:\\s][\\s\\S]*?)```').exec(readFileSync(path.join(ROOT, 'docs/FORMAT.md'), 'utf8'));
      assert.ok(block, `docs/FORMAT.md has the ${marker} recipe`);
      const run = spawnSync('bash', ['-euo', 'pipefail', '-c', block[1]!], { env: { ...env, ...variables }, encoding: 'utf8' });
      assert.equal(run.status, 0, `${marker} failed:\n${run.stderr}`);
      return run.stdout + run.stderr;
    };
    try {
      const keys = path.join(dir.path, 'data keys');
      follow('recover-data-keys', { REPO: repo, PASSFILE: path.join(dir.path, 'passphrase'), KEYS: keys });
      const out = path.join(dir.path, 'recovered');
      follow('recover-chain', { DOCS: path.join(ROOT, 'docs'), REPO: repo, DB: 'app', OUT: out, KEYS: keys });
      // recover-chain recovers the newest restore point given; the base strata chose is the only one here.
      assert.equal(JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')).id, base);
      const byHand = path.join(dir.path, 'by hand.db');
      const said = follow('replay-segments', { DOCS: path.join(ROOT, 'docs'), REPO: repo, DB: 'app', OUT: out, KEYS: keys, BASE: base, UNTIL: middle, NEWDB: byHand });
      assert.match(said, /replayed \d+ transaction\(s\)/);
      assert.ok(readFileSync(byHand).equals(readFileSync(good)), 'the database replayed by hand is byte for byte the one strata restored');
    } finally {
      spawnSync('gpgconf', ['--kill', 'all'], { env });
    }

    // The catalog is a cache: lost, it is rebuilt with the segments from their own manifests, and
    // the same moment restores to the same bytes.
    const segmentCount = (JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { segments: unknown[] }).segments.length;
    removeCatalog(repo);
    const listed = strata(['list', '--repo', repo, '--json']);
    assert.equal(listed.status, 0, listed.stderr);
    assert.equal(json<{ continuity: { segments: number }[] }>(listed).continuity[0]!.segments, segmentCount);
    const again = path.join(dir.path, 'again.db');
    assert.equal(strata(['restore', '--repo', repo, '--db', 'app', '--as-of', middle, '--to', again]).status, 0);
    assert.ok(readFileSync(again).equals(readFileSync(good)), 'the rebuilt catalog restores the same database');
    rmSync(good);

    // Corrupted: one byte of the second segment flipped.
    const original = readFileSync(segments[1]!);
    const flipped = Buffer.from(original);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x40;
    writeFileSync(segments[1]!, flipped);
    restoreFails(repo, end, /segment 2 .*SHA-256|segment 2 .*corrupt|segment 2/);
    // A byte of its session key packet, at the start: the data key no longer decrypts it, which
    // is damage (exit 1, ARTIFACT_CORRUPT), never a wrong passphrase (exit 4) to go looking for.
    const keyPacket = Buffer.from(original);
    keyPacket[12]! ^= 0x40;
    writeFileSync(segments[1]!, keyPacket);
    const damagedKey = strata(['restore', '--repo', repo, '--db', 'app', '--as-of', end, '--to', path.join(dir.path, 'fresh.db'), '--json']);
    assert.equal(damagedKey.status, 1, damagedKey.stdout);
    const keyError = json<{ error: { code: string; message: string } }>(damagedKey).error;
    assert.deepEqual([keyError.code, /segment 2 /.test(keyError.message)], ['ARTIFACT_CORRUPT', true], keyError.message);
    writeFileSync(segments[1]!, original);

    // Reordered: the second and third segments' files swapped.
    const second = readFileSync(segments[1]!);
    const third = readFileSync(segments[2]!);
    writeFileSync(segments[1]!, third);
    writeFileSync(segments[2]!, second);
    restoreFails(repo, end, /segment 2 /);
    writeFileSync(segments[1]!, second);
    writeFileSync(segments[2]!, third);

    // Missing: the third segment's file deleted; verify names it too.
    rmSync(segments[2]!);
    restoreFails(repo, end, /segment 3 .*is missing from the repository \(\S+\); --as-of \S+ or earlier restores what came before it/);
    const verify = strata(['verify', '--all', '--repo', repo]);
    assert.equal(verify.status, 3, verify.stdout);
    assert.match(verify.stdout, /segments after \S+: FAILED/);
    assert.match(verify.stdout, /segment 3 \(/);
    // health says what that verify found, until a verify finds the chain whole again.
    const continuityCheck = (): { status: string; message: string } =>
      json<{ checks: { check: string; status: string; message: string }[] }>(strata(['health', '--repo', repo, '--json'])).checks.find((c) => c.check === 'continuity')!;
    assert.equal(continuityCheck().status, 'unhealthy');
    assert.match(continuityCheck().message, /the last verify of the segments after \S+ \(.*\) found a segment missing or damaged .*strata verify --all says which/);
    writeFileSync(segments[2]!, third);
    assert.equal(strata(['verify', '--all', '--repo', repo]).status, 0);
    assert.equal(continuityCheck().status, 'ok');

    // A gap in the catalog itself (segment 2 dropped from it): restore and health both say so.
    writeFileSync(segments[2]!, third);
    const catalogFile = catalogPath(repo);
    const catalog = JSON.parse(readFileSync(catalogFile, 'utf8')) as { segments: { sequence: number }[] };
    catalog.segments = catalog.segments.filter((s) => s.sequence !== 2);
    writeFileSync(catalogFile, JSON.stringify(catalog));
    restoreFails(repo, end, /segment 2 after \S+ is missing \(the next one listed is 3/);
    const health = strata(['health', '--repo', repo, '--json']);
    assert.equal(health.status, 3);
    const continuity = json<{ checks: { check: string; status: string; message: string }[] }>(health).checks.find((c) => c.check === 'continuity');
    assert.equal(continuity?.status, 'unhealthy');
    assert.match(continuity!.message, /broken/);
  });
});
