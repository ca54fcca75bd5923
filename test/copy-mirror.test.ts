import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Passphrase, initRepository, isStrataError, mirrorAt, openRepository } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { TEST_PASSPHRASE, copyInto, finished, journalLines, json, sqliteDump, strata, strataAsync, useSuiteDir, useTempDir } from './helpers/env.js';

const TARGET_PASSPHRASE = 'a different passphrase for the offsite copy';

/** Flips bytes in the middle of a file, as a failing disk would. */
function flipBytes(file: string): void {
  const bytes = readFileSync(file);
  const middle = Math.floor(bytes.length / 2);
  for (let i = middle; i < middle + 16; i++) bytes.writeUInt8(bytes.readUInt8(i) ^ 0xff, i);
  writeFileSync(file, bytes);
}

function ids(repo: string, passphrase = TEST_PASSPHRASE): string[] {
  const listed = strata(['list', '--repo', repo, '--json'], { env: { STRATA_PASSPHRASE: passphrase } });
  assert.equal(listed.status, 0, listed.stderr);
  return json<{ backups: BackupRecord[] }>(listed).backups.map((b) => b.id).sort();
}

function artifactOf(repo: string, id: string): string {
  const database = id.replace(/_(full|incremental|differential|schema-only)_.*$/, '');
  const file = readdirSync(path.join(repo, 'backups', database)).find((f) => f.startsWith(`${id}.`));
  assert.ok(file, `${id} has an artifact in ${repo}`);
  return path.join(repo, 'backups', database, file);
}

function backup(repo: string, db: string, ...args: string[]): string {
  const result = strata(['backup', db, '--repo', repo, '--json', ...args]);
  assert.equal(result.status, 0, result.stderr);
  return json<{ id: string }>(result).id;
}

describe('strata copy', () => {
  const dir = useTempDir();
  const at = (name: string): string => path.join(dir.path, name);

  const built = useSuiteDir();
  const fixture = { shopIds: [] as string[], blogIds: [] as string[] };

  // A source repository with `shop` (full + 2 incrementals) and `blog` (full), and an empty target
  // with its own passphrase: made once (eight CLI runs), copied by each test.
  before(function () {
    this.timeout(600_000);
    const source = path.join(built.path, 'source');
    const shop = path.join(built.path, 'shop.db');
    const blog = path.join(built.path, 'blog.db');
    buildRichDatabase(shop, { rows: 80 });
    buildRichDatabase(blog, { rows: 20 });
    assert.equal(strata(['init', '--repo', source]).status, 0);
    assert.equal(strata(['init', '--repo', path.join(built.path, 'target')], { env: { STRATA_PASSPHRASE: TARGET_PASSPHRASE } }).status, 0);
    fixture.shopIds = [backup(source, shop, '--time', '2026-11-01T10:00:00Z')];
    mutate(shop, 1);
    fixture.shopIds.push(backup(source, shop, '--type', 'incremental', '--time', '2026-11-02T10:00:00Z'));
    mutate(shop, 2);
    fixture.shopIds.push(backup(source, shop, '--type', 'incremental', '--time', '2026-11-03T10:00:00Z'));
    fixture.blogIds = [backup(source, blog, '--time', '2026-11-02T12:00:00Z')];
  });

  /** This test's copy of the fixture: the source, the empty target, and the databases as last backed up. */
  function twoRepositories(): { source: string; target: string; shop: string; blog: string; shopIds: string[]; blogIds: string[] } {
    copyInto(built.path, dir.path);
    return { source: at('source'), target: at('target'), shop: at('shop.db'), blog: at('blog.db'), shopIds: fixture.shopIds, blogIds: fixture.blogIds };
  }

  const toTarget = { STRATA_TO_PASSPHRASE: TARGET_PASSPHRASE };

  it('copies full and incremental chains under another passphrase, re-encrypted, restorable and verified on the target; a second run copies nothing', () => {
    const { source, target, shop, blog, shopIds, blogIds } = twoRepositories();
    const first = strata(['copy', '--from', source, '--to', target, '--json'], { env: toTarget });
    assert.equal(first.status, 0, first.stderr);
    const copied = json<{ copied: { id: string; mode: string }[] }>(first).copied;
    assert.deepEqual(copied.map((c) => c.id).sort(), [...shopIds, ...blogIds].sort());
    assert.ok(copied.every((c) => c.mode === 're-encrypted'), 'the target has its own data key');
    assert.deepEqual(ids(target, TARGET_PASSPHRASE), ids(source));
    // Ids, parents, times and labels as they were.
    const listed = (repo: string, passphrase: string): BackupRecord[] => json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo, '--json'], { env: { STRATA_PASSPHRASE: passphrase } })).backups;
    const pick = (b: BackupRecord) => [b.id, b.parent, b.base, b.createdAt, b.label, b.tags, b.databaseBytes, b.schemaFingerprint];
    assert.deepEqual(listed(target, TARGET_PASSPHRASE).map(pick), listed(source, TEST_PASSPHRASE).map(pick));
    for (const [db, original] of [['shop', shop], ['blog', blog]] as const) {
      const out = at(`${db}-from-target.db`);
      const restored = strata(['restore', 'latest', '--db', db, '--repo', target, '--to', out], { env: { STRATA_PASSPHRASE: TARGET_PASSPHRASE } });
      assert.equal(restored.status, 0, restored.stderr);
      assert.equal(sqliteDump(out), sqliteDump(original), `${db} restored from the target equals the database`);
    }
    const verified = strata(['verify', '--all', '--level', 'full', '--repo', target], { env: { STRATA_PASSPHRASE: TARGET_PASSPHRASE } });
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    // The source's passphrase opens nothing on the target.
    assert.equal(strata(['restore', 'latest', '--db', 'blog', '--repo', target, '--to', at('nope.db')]).status, 4);

    const again = strata(['copy', '--from', source, '--to', target, '--json'], { env: toTarget });
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(json<{ copied: unknown[]; present: string[] }>(again).copied, []);
    assert.equal(json<{ present: string[] }>(again).present.length, 4);
    const journal = journalLines(target).map((l) => JSON.parse(l) as { kind: string; status: string; details?: { copied?: string[] } });
    const copies = journal.filter((r) => r.kind === 'copy' && r.status === 'COMPLETED');
    assert.deepEqual(copies.map((r) => r.details?.copied?.length), [4, 0], 'the target journals each copy run');
  });

  it('copies only the databases named, and with --since only newer restore points with the chains they need', () => {
    const { source, target, shopIds, blogIds } = twoRepositories();
    const blogOnly = strata(['copy', 'blog', '--from', source, '--to', target, '--json'], { env: toTarget });
    assert.equal(blogOnly.status, 0, blogOnly.stderr);
    assert.deepEqual(ids(target, TARGET_PASSPHRASE), blogIds);
    // Since Nov 3: shop's last incremental, which brings its full and first incremental along.
    const since = strata(['copy', '--from', source, '--to', target, '--since', '2026-11-03T00:00:00Z', '--json'], { env: toTarget });
    assert.equal(since.status, 0, since.stderr);
    assert.deepEqual(json<{ copied: { id: string }[] }>(since).copied.map((c) => c.id), shopIds, 'parents first');
    const unknown = strata(['copy', 'nosuchdb', '--from', source, '--to', target], { env: toTarget });
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /holds no backups of nosuchdb/);
  });

  it('refuses a damaged source artifact: it and what builds on it stay off the target, the rest is copied, and the command fails naming it', () => {
    const { source, target, shopIds, blogIds } = twoRepositories();
    flipBytes(artifactOf(source, shopIds[1]!));
    const result = strata(['copy', '--from', source, '--to', target], { env: toTarget });
    assert.equal(result.status, 1, result.stdout);
    assert.match(result.stderr, new RegExp(`${shopIds[1]}.*damaged and was not copied`));
    assert.deepEqual(ids(target, TARGET_PASSPHRASE), [shopIds[0]!, ...blogIds].sort());
    assert.ok(!existsSync(path.join(target, 'backups', 'shop')) || readdirSync(path.join(target, 'backups', 'shop')).every((f) => f.startsWith(shopIds[0]!)), 'no artifact of the damaged backup or its dependants');
    assert.deepEqual(existsSync(path.join(target, 'pending')) ? readdirSync(path.join(target, 'pending')) : [], []);
  });

  it('refuses clearly: a target that is not a repository, a wrong target passphrase, an encrypted source into an unencrypted target', () => {
    const { source, target } = twoRepositories();
    const missing = strata(['copy', '--from', source, '--to', at('nowhere')], { env: toTarget });
    assert.equal(missing.status, 6, 'no repository there');
    assert.match(missing.stderr, /copy: the target .*nowhere does not exist.*strata init/);
    const wrong = strata(['copy', '--from', source, '--to', target]);
    assert.equal(wrong.status, 4);
    assert.match(wrong.stderr, /target .*wrong passphrase.*--to-passphrase-file/);
    const plain = at('plain');
    assert.equal(strata(['init', '--repo', plain, '--no-encryption']).status, 0);
    const downgrade = strata(['copy', '--from', source, '--to', plain]);
    assert.equal(downgrade.status, 2);
    assert.match(downgrade.stderr, /not encrypted .* plaintext/);
    assert.deepEqual(ids(plain), []);
    const passfile = at('target-passphrase');
    writeFileSync(passfile, TARGET_PASSPHRASE + '\n');
    const withFile = strata(['copy', 'blog', '--from', source, '--to', target, '--to-passphrase-file', passfile]);
    assert.equal(withFile.status, 0, withFile.stderr);
  });

  it('copies bytes as they are between unencrypted repositories, through the SDK', async () => {
    const db = at('app.db');
    buildRichDatabase(db, { rows: 30 });
    await initRepository(at('a'), { encryption: 'none' });
    await initRepository(at('b'), { encryption: 'none' });
    const a = await openRepository(at('a'));
    const b = await openRepository(at('b'));
    try {
      const full = await a.backup(db, { database: 'app' });
      mutate(db, 3);
      await a.backup(db, { database: 'app', type: 'incremental' });
      const result = await a.copyTo(b);
      assert.deepEqual(result.copied.map((c) => c.mode), ['as-is', 'as-is']);
      assert.equal((await b.list())[0]!.sha256, full.sha256, 'the same bytes');
      const restored = await b.restore({ id: 'latest' }, { to: at('out.db') });
      assert.equal(restored.chain.length, 2);
      assert.equal(sqliteDump(at('out.db')), sqliteDump(db));
      assert.deepEqual((await a.copyTo(b)).copied, []);
      await assert.rejects(a.copyTo(a), (err) => isStrataError(err, 'USAGE'));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a backup the source deletes while a copy runs (its retention) is reported as removed, not as a failure, and the rest is copied', async () => {
    const db = at('gone.db');
    buildRichDatabase(db, { rows: 10 });
    await initRepository(at('ga'), { encryption: 'none' });
    await initRepository(at('gb'), { encryption: 'none' });
    const a = await openRepository(at('ga'));
    const b = await openRepository(at('gb'));
    try {
      const first = await a.backup(db, { database: 'one' });
      const second = await a.backup(db, { database: 'two' });
      const third = await a.backup(db, { database: 'three' });
      // Once the first is copied, another process's prune deletes the second from the source.
      const result = await a.copyTo(b, { onCopied: async (c) => void (c.record.id === first.id && (await a.delete([second.id]))) });
      assert.deepEqual(result.removed, [second.id]);
      assert.deepEqual(result.copied.map((c) => c.record.id).sort(), [first.id, third.id].sort());
      assert.deepEqual((await b.list()).map((r) => r.id).sort(), [first.id, third.id].sort());
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('two copies into one target at the same time: each backup lands once, whole, and the target verifies', async () => {
    const { source, target } = twoRepositories();
    const [one, two] = await Promise.all([0, 1].map(() => finished(strataAsync(['copy', '--from', source, '--to', target, '--json'], { env: toTarget }))));
    assert.equal(one!.status, 0, one!.stderr);
    assert.equal(two!.status, 0, two!.stderr);
    const sourceIds = ids(source);
    // A rerun picks up whatever one left to the other while that one was still copying it.
    assert.equal(strata(['copy', '--from', source, '--to', target], { env: toTarget }).status, 0);
    assert.deepEqual(ids(target, TARGET_PASSPHRASE), sourceIds, 'each backup listed once');
    const verified = strata(['verify', '--all', '--repo', target], { env: { STRATA_PASSPHRASE: TARGET_PASSPHRASE } });
    assert.equal(verified.status, 0, verified.stdout);
  });

  it('killed mid-copy (SIGKILL at several points), leaves nothing half-visible; the next run completes and the target verifies', async function () {
    this.timeout(600_000);
    const { source, target } = twoRepositories();
    // Kill points: once an artifact is being written (a pending note exists), once the first
    // backup is committed (a second catalog generation), and once a later artifact is being written.
    const points: ((t: string) => boolean)[] = [
      (t) => existsSync(path.join(t, 'pending')) && readdirSync(path.join(t, 'pending')).length > 0,
      (t) => existsSync(path.join(t, 'backups')) && readdirSync(path.join(t, 'backups')).length > 0,
      (t) => existsSync(path.join(t, 'backups', 'shop')) && readdirSync(path.join(t, 'backups', 'shop')).length >= 2,
    ];
    const sourceIds = ids(source);
    for (const reached of points) {
      rmSync(target, { recursive: true, force: true });
      copyInto(path.join(built.path, 'target'), target);
      const child = strataAsync(['copy', '--from', source, '--to', target], { env: toTarget });
      const done = finished(child);
      const watcher = setInterval(() => {
        if (reached(target)) child.kill('SIGKILL');
      }, 2);
      const ended = await done;
      clearInterval(watcher);
      // Killed, or (on a fast machine) finished before the point was seen: either way the rerun must complete.
      assert.ok(ended.signal === 'SIGKILL' || ended.status === 0, ended.stderr);
      assert.ok(ids(target, TARGET_PASSPHRASE).every((id) => sourceIds.includes(id)), 'only whole copies are listed');
      const rerun = strata(['copy', '--from', source, '--to', target], { env: toTarget });
      assert.equal(rerun.status, 0, rerun.stderr);
      assert.deepEqual(ids(target, TARGET_PASSPHRASE), sourceIds);
      const verified = strata(['verify', '--all', '--repo', target], { env: { STRATA_PASSPHRASE: TARGET_PASSPHRASE } });
      assert.equal(verified.status, 0, verified.stdout);
      assert.deepEqual(readdirSync(path.join(target, 'pending')), [], 'no note of the killed copy is left');
      const artifacts = readdirSync(path.join(target, 'backups')).flatMap((d) => readdirSync(path.join(target, 'backups', d)));
      assert.equal(artifacts.length, sourceIds.length, 'no orphaned artifact');
    }
  });
});

describe('mirror', () => {
  const dir = useTempDir();
  const at = (name: string): string => path.join(dir.path, name);

  /** A config with a repository, a mirror and one SQLite database; both repositories initialised unless told otherwise. */
  function configured(options: { mirrorReady?: boolean } = {}): { db: string; primary: string; mirror: string } {
    const db = at('app.db');
    buildRichDatabase(db, { rows: 40 });
    writeFileSync(at('mirror-passphrase'), 'the mirror passphrase\n');
    writeFileSync(
      at('strata.config.json'),
      JSON.stringify({ repository: './primary', mirror: { repository: './mirror', passphraseFile: './mirror-passphrase' }, databases: { app: { url: './app.db' } } }),
    );
    assert.equal(strata(['init'], { cwd: dir.path }).status, 0);
    if (options.mirrorReady ?? true) assert.equal(strata(['init', '--repo', at('mirror')], { env: { STRATA_PASSPHRASE: 'the mirror passphrase' } }).status, 0);
    return { db, primary: at('primary'), mirror: at('mirror') };
  }

  const run = (args: string[]) => strata(args, { cwd: dir.path });
  const mirrorIds = (mirror: string): string[] => ids(mirror, 'the mirror passphrase');

  it('a backup goes to the repository and then to the mirror; health reports both targets', () => {
    const { db, primary, mirror } = configured();
    const full = run(['backup', 'app']);
    assert.equal(full.status, 0, full.stderr);
    assert.match(full.stdout, /mirror .*mirror: copied 1 backup/);
    mutate(db, 1);
    const incremental = run(['backup', 'app', '--type', 'incremental', '--json']);
    assert.equal(incremental.status, 0, incremental.stderr);
    assert.deepEqual(json<{ mirror: { ok: boolean; copied: string[] } }>(incremental).mirror.ok, true);
    assert.deepEqual(mirrorIds(mirror), ids(primary));
    const health = run(['health', '--max-unverified', '30d']);
    assert.equal(health.status, 0, health.stdout);
    assert.match(health.stdout, /ok +\[primary\] backup-age \(app\)/);
    assert.match(health.stdout, /ok +\[mirror\] mirror-reachable/);
    assert.match(health.stdout, /ok +\[mirror\] backup-age \(app\): the mirror's newest good backup/);
    assert.match(health.stdout, /ok +\[mirror\] mirror-lag \(app\): the mirror has all 2 restore point/);
  });

  it('a mirror that is the repository itself under another name (a link) is refused, and health says there is no second copy', () => {
    const db = at('app.db');
    buildRichDatabase(db, { rows: 10 });
    writeFileSync(at('strata.config.json'), JSON.stringify({ repository: './primary', mirror: './linked', databases: { app: { url: './app.db' } } }));
    assert.equal(strata(['init'], { cwd: dir.path }).status, 0);
    symlinkSync(at('primary'), at('linked'));
    const backup = strata(['backup', 'app'], { cwd: dir.path });
    assert.equal(backup.status, 0, backup.stderr);
    assert.match(backup.stderr, /MIRROR FAILED: .*linked is \S+primary itself, reached by another name .*a copy there is no second copy/);
    const health = strata(['health', '--max-unverified', '30d'], { cwd: dir.path });
    assert.equal(health.status, 3, health.stdout);
    assert.match(health.stdout, /UNHEALTHY +\[mirror\] mirror-sync: MIRROR FAILED/);
    assert.match(health.stdout, /UNHEALTHY +\[mirror\] mirror-reachable: the mirror \S+ cannot be read: it is the repository itself, reached by another name/);
    assert.match(strata(['metrics'], { cwd: dir.path }).stdout, /^strata_mirror_reachable 0$/m);
    const copy = strata(['copy', '--from', at('primary'), '--to', at('linked')], { cwd: dir.path });
    assert.equal(copy.status, 2, copy.stderr);
    assert.match(copy.stderr, /is \S+primary itself, reached by another name/);
    // A copy of the repository made by hand (same id, another folder) is a mirror like any other.
    rmSync(at('linked'));
    cpSync(at('primary'), at('linked'), { recursive: true });
    const again = strata(['backup', 'app', '--type', 'incremental', '--auto-full'], { cwd: dir.path });
    assert.equal(again.status, 0, again.stderr);
    assert.doesNotMatch(again.stderr, /MIRROR FAILED/);
    assert.deepEqual(ids(at('linked')), ids(at('primary')));
  });

  it("a mirror URL's secret is never shown or kept, also one with '/' in it (as about half of AWS secret keys have)", () => {
    const db = at('app.db');
    buildRichDatabase(db, { rows: 10 });
    const secret = 'Sup3r/Secret+q/xYz';
    writeFileSync(at('strata.config.json'), JSON.stringify({ repository: './primary', mirror: `s3://AKIAEXAMPLE:${secret}@strata-mirror/prod`, databases: { app: { url: './app.db' } } }));
    assert.equal(strata(['init'], { cwd: dir.path }).status, 0);
    // Nothing listens there: the mirror fails, and every message about it names the URL.
    const env = { AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined };
    const backup = strata(['backup', 'app'], { cwd: dir.path, env });
    assert.equal(backup.status, 0, backup.stderr);
    assert.match(backup.stderr, /MIRROR FAILED: mirror s3:\/\/AKIAEXAMPLE:\*\*\*@strata-mirror\/prod/);
    const health = strata(['health'], { cwd: dir.path, env });
    assert.match(health.stdout, /AKIAEXAMPLE:\*\*\*@/);
    for (const [what, text] of [['backup', backup.stdout + backup.stderr], ['health', health.stdout + health.stderr], ['journal', journalLines(at('primary')).join('\n')]] as const) {
      assert.ok(!text.includes('Secret+q'), `${what} shows no part of the secret: ${text.slice(0, 2000)}`);
    }
  });

  it('an unreachable mirror: the backup succeeds, MIRROR FAILED is journaled, health exits 3; the next backup catches up', () => {
    const { db, primary, mirror } = configured({ mirrorReady: false });
    // A file where the mirror's folder should be: nothing can be written there.
    writeFileSync(mirror, 'not a folder');
    const first = run(['backup', 'app']);
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stderr, /MIRROR FAILED: mirror .*mirror/);
    const journal = journalLines(primary).map((l) => JSON.parse(l) as { kind: string; status: string; error?: { message: string } });
    assert.ok(journal.some((r) => r.kind === 'mirror' && r.status === 'FAILED' && /mirror/.test(r.error?.message ?? '')));
    const health = run(['health', '--json']);
    assert.equal(health.status, 3);
    const checks = json<{ checks: { check: string; target?: string; status: string; message: string }[] }>(health).checks;
    assert.equal(checks.find((c) => c.check === 'mirror-sync')?.status, 'unhealthy');
    assert.match(checks.find((c) => c.check === 'mirror-sync')!.message, /^MIRROR FAILED/);
    assert.equal(checks.find((c) => c.check === 'mirror-reachable')?.status, 'unhealthy');
    assert.equal(checks.find((c) => c.check === 'backup-age' && c.target === 'primary')?.status, 'ok');

    rmSync(mirror);
    assert.equal(strata(['init', '--repo', mirror], { env: { STRATA_PASSPHRASE: 'the mirror passphrase' } }).status, 0);
    const lagging = run(['health', '--json']);
    assert.equal(lagging.status, 3);
    assert.match(json<{ checks: { check: string; message: string }[] }>(lagging).checks.find((c) => c.check === 'mirror-lag')!.message, /lacks 1 of 1/);
    // strata copy --to the mirror catches it up as a backup would, and health says so.
    assert.equal(run(['copy', '--to', mirror, '--to-passphrase-file', at('mirror-passphrase')]).status, 0);
    const copied = run(['health', '--max-unverified', '30d', '--json']);
    assert.equal(copied.status, 0, copied.stdout);
    assert.match(json<{ checks: { check: string; message: string }[] }>(copied).checks.find((c) => c.check === 'mirror-sync')!.message, /failed at .*, and the mirror has caught up since/);
    mutate(db, 2);
    const second = run(['backup', 'app', '--type', 'incremental']);
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stdout, /copied 1 backup/);
    assert.deepEqual(mirrorIds(mirror), ids(primary));
    const healthy = run(['health', '--max-unverified', '30d']);
    assert.equal(healthy.status, 0, healthy.stdout);
  });

  for (const damage of ['deleted', 'corrupted'] as const) {
    it(`a restore falls back on the mirror when the repository's artifact is ${damage}, and says so; verify still reports the damage`, () => {
      const { db, primary } = configured();
      assert.equal(run(['backup', 'app']).status, 0);
      mutate(db, 1);
      assert.equal(run(['backup', 'app', '--type', 'incremental']).status, 0);
      const [full] = ids(primary).filter((id) => id.includes('_full_'));
      const file = artifactOf(primary, full!);
      if (damage === 'deleted') rmSync(file);
      else flipBytes(file);
      const out = at('restored.db');
      const restored = run(['restore', 'latest', '--db', 'app', '--to', out]);
      assert.equal(restored.status, 0, restored.stderr);
      assert.match(restored.stderr, /restored from the mirror .*mirror: the repository's own copy could not be used/);
      assert.match(restored.stdout, /from the mirror /);
      assert.equal(sqliteDump(out), sqliteDump(db));
      const json2 = run(['restore', 'latest', '--db', 'app', '--to', at('again.db'), '--json']);
      assert.equal(json2.status, 0, json2.stderr);
      assert.equal(json<{ fromMirror: { mirror: string; reason: { code: string } } }>(json2).fromMirror.mirror, at('mirror'));
      const verify = run(['verify', full!]);
      assert.equal(verify.status, 3, 'verify reports the repository as it is');
      // A failed verification of a damaged artifact does not make latest pass it over: the
      // restore finds the damage itself, and the mirror's copy brings back the newest data.
      const afterVerify = run(['restore', 'latest', '--db', 'app', '--to', at('after-verify.db')]);
      assert.equal(afterVerify.status, 0, afterVerify.stderr);
      assert.doesNotMatch(afterVerify.stderr, /passed over/);
      assert.match(afterVerify.stderr, /restored from the mirror /);
      assert.equal(sqliteDump(at('after-verify.db')), sqliteDump(db));
      // The repair it advises, word for word: the mirror opens with its own passphrase (the config's passphraseFile).
      const advice = /strata delete those backups \(--with-dependents\), then strata (copy --from \S+ --to \S+) brings/.exec(afterVerify.stderr);
      assert.ok(advice, afterVerify.stderr);
      assert.equal(run(['delete', full!, '--with-dependents', '--yes']).status, 0);
      const repaired = run(advice[1]!.split(' '));
      assert.equal(repaired.status, 0, repaired.stderr);
      assert.deepEqual(ids(primary), mirrorIds(at('mirror')));
      const clean = run(['restore', 'latest', '--db', 'app', '--to', at('repaired.db')]);
      assert.equal(clean.status, 0, clean.stderr);
      assert.doesNotMatch(clean.stderr, /from the mirror/);
      assert.equal(sqliteDump(at('repaired.db')), sqliteDump(db));
    });
  }

  it('the SDK: backup copies to the mirror, restore reports the fallback in its result', async () => {
    const db = at('app.db');
    buildRichDatabase(db, { rows: 20 });
    const passphrase = new Passphrase(TEST_PASSPHRASE);
    await initRepository(at('p'), { encryption: 'compat', passphrase });
    await initRepository(at('m'), { encryption: 'compat', passphrase: new Passphrase('mirror secret') });
    const repo = await openRepository(at('p'), { passphrase, mirror: mirrorAt(at('m'), { passphrase: new Passphrase('mirror secret') }) });
    try {
      const outcomes: boolean[] = [];
      const record = await repo.backup(db, { database: 'app', onMirror: (m) => outcomes.push(m.ok) });
      assert.deepEqual(outcomes, [true]);
      rmSync(artifactOf(at('p'), record.id));
      const result = await repo.restore({ id: record.id }, { to: at('out.db') });
      assert.equal(result.fromMirror?.mirror, at('m'));
      assert.equal(result.fromMirror?.reason.code, 'ARTIFACT_CORRUPT');
      assert.equal(sqliteDump(at('out.db')), sqliteDump(db));
    } finally {
      await repo.close();
    }
  });
});
