import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { LocalStorage, Passphrase, initRepository, openRepository } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { catalogPath, copyInto, json, strata, useSuiteDir, useTempDir } from './helpers/env.js';

describe('strata prune', () => {
  const dir = useTempDir();
  const built = useSuiteDir();
  const repo = (): string => path.join(dir.path, 'repo');

  // Ten days of backups: a full on day 1 and 6, incrementals in between. Made once (eleven CLI
  // runs); every test prunes its own copy.
  before(function () {
    this.timeout(300_000);
    const db = path.join(built.path, 'app.db');
    const builtRepo = path.join(built.path, 'repo');
    buildRichDatabase(db, { rows: 30 });
    assert.equal(strata(['init', '--repo', builtRepo]).status, 0);
    for (let day = 1; day <= 10; day++) {
      mutate(db, day);
      const type = day === 1 || day === 6 ? 'full' : 'incremental';
      const result = strata(['backup', db, '--repo', builtRepo, '--type', type, '--time', `2026-04-${String(day).padStart(2, '0')}T03:00:00Z`]);
      assert.equal(result.status, 0, result.stderr);
    }
  });

  /** This test's copy of the ten days: the repository and the database as of day 10. */
  function tenDays(): string {
    copyInto(built.path, dir.path);
    return path.join(dir.path, 'app.db');
  }

  it('--dry-run lists every backup with keep or remove and the reasons, and deletes nothing', () => {
    tenDays();
    const result = strata(['prune', '--repo', repo(), '--keep-daily', '2', '--dry-run', '--json']);
    assert.equal(result.status, 0, result.stderr);
    const plan = json<{ keep: { id: string; reasons: string[] }[]; remove: { id: string; reasons: string[] }[] }>(result);
    assert.equal(plan.keep.length + plan.remove.length, 10);
    assert.deepEqual(plan.keep.map((d) => d.id.slice(0, 20)), ['app_incremental_2026', 'app_incremental_2026', 'app_incremental_2026', 'app_incremental_2026', 'app_full_20260406_03']);
    assert.match(plan.keep.at(-1)!.reasons.join(), /needed by app_incremental_20260410/);
    assert.ok(plan.remove.every((d) => d.reasons.includes('no rule keeps it')));
    assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo(), '--json'])).backups.length, 10);
    const human = strata(['prune', '--repo', repo(), '--keep-daily', '2', '--dry-run']);
    assert.match(human.stdout, /dry run: would keep 5 and remove 5 backup\(s\); nothing was deleted/);
  });

  it('removes what the plan removes, and every kept restore point still restores', () => {
    const db = tenDays();
    const result = strata(['prune', '--repo', repo(), '--keep-daily', '2', '--json']);
    assert.equal(result.status, 0, result.stderr);
    const list = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
    assert.equal(list.length, 5);
    const files = readdirSync(path.join(repo(), 'backups/app'));
    assert.equal(files.length, 5, 'the removed artifacts are gone from disk');
    const verify = strata(['verify', '--all', '--repo', repo(), '--level', 'full']);
    assert.equal(verify.status, 0, verify.stdout);
    const target = path.join(dir.path, 'latest.db');
    assert.equal(strata(['restore', 'latest', '--repo', repo(), '--to', target]).status, 0);
    assert.ok(existsSync(target) && existsSync(db));
  });

  for (const damage of ['damaged', 'missing'] as const) {
    it(`on a ${damage} catalog plans on the catalog rebuilt from the artifacts, as --dry-run does, and leaves the kept backups listed`, () => {
      tenDays();
      const dryRun = json<{ keep: { id: string }[]; remove: { id: string }[] }>(strata(['prune', '--repo', repo(), '--keep-daily', '2', '--dry-run', '--json']));
      const catalog = catalogPath(repo());
      if (damage === 'damaged') writeFileSync(catalog, '{garbage');
      else rmSync(path.dirname(catalog), { recursive: true });
      const result = strata(['prune', '--repo', repo(), '--keep-daily', '2', '--json']);
      assert.equal(result.status, 0, result.stderr);
      const pruned = json<{ keep: { id: string }[]; remove: { id: string }[] }>(result);
      assert.deepEqual([pruned.keep.map((d) => d.id), pruned.remove.map((d) => d.id)], [dryRun.keep.map((d) => d.id), dryRun.remove.map((d) => d.id)]);
      const listed = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
      assert.deepEqual(listed.map((b) => b.id).sort(), dryRun.keep.map((d) => d.id).sort(), 'what prune kept is what the catalog lists');
      assert.equal(readdirSync(path.join(repo(), 'backups/app')).length, 5);
      assert.equal(strata(['restore', 'latest', '--repo', repo(), '--to', path.join(dir.path, 'latest.db')]).status, 0);
    });
  }

  it('refuses an empty policy, and uses the config file\'s retention when no flags are given', () => {
    tenDays();
    const empty = strata(['prune', '--repo', repo(), '--keep-daily', '0']);
    assert.equal(empty.status, 2);
    assert.match(empty.stderr, /keeps nothing/);
    writeFileSync(path.join(dir.path, 'strata.config.json'), JSON.stringify({ repository: './repo', retention: { keepLast: 1 } }));
    const plan = json<{ keep: unknown[] }>(strata(['prune', '--dry-run', '--json'], { cwd: dir.path }));
    assert.equal(plan.keep.length, 5, 'keep-last 1 keeps the newest incremental and its chain');
  });

  it('finishes the job when re-run after being interrupted halfway', async () => {
    tenDays();
    const passphrase = new Passphrase('correct horse battery staple');
    // A storage that fails on the third delete, as if the process died there.
    class Interrupted extends LocalStorage {
      deletes = 0;
      override async delete(key: string): Promise<void> {
        if (key.startsWith('backups/') && ++this.deletes === 3) throw new Error('killed');
        return super.delete(key);
      }
    }
    const storage = new Interrupted(repo());
    const first = await openRepository(storage, { passphrase, tempDir: path.join(dir.path, 'tmp') });
    await assert.rejects(first.prune(() => ({ keepDaily: 2 })), /killed/);
    const again = await openRepository(repo(), { passphrase, tempDir: path.join(dir.path, 'tmp') });
    const plan = await again.prune(() => ({ keepDaily: 2 }));
    assert.equal(plan.keep.length, 5);
    assert.equal((await again.list()).length, 5);
    for (const report of await again.verify('all', { level: 'quick' })) assert.equal(report.outcome, 'passed');
    void initRepository;
  });

  it('an interruption part way through a prune stops its deletions; what it removed is out of the catalog, and the next command deletes the rest', async () => {
    tenDays();
    const passphrase = new Passphrase('correct horse battery staple');
    const interruption = new AbortController();
    // The interruption arrives while the second artifact is deleted, as a Ctrl-C would (the CLI
    // turns SIGINT and SIGTERM into this signal).
    class Interrupting extends LocalStorage {
      deletes = 0;
      override async delete(key: string): Promise<void> {
        if (key.startsWith('backups/') && ++this.deletes === 2) interruption.abort();
        return super.delete(key);
      }
    }
    const first = await openRepository(new Interrupting(repo()), { passphrase, tempDir: path.join(dir.path, 'tmp') });
    await assert.rejects(first.prune(() => ({ keepDaily: 2 }), { signal: interruption.signal }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'ABORTED');
      assert.match(err.message, /^prune: interrupted after removing 5 backup\(s\) from the catalog and deleting \d+ of their \d+ files; the next strata command on this repository deletes the rest$/);
      return true;
    });
    assert.equal((await first.list()).length, 5, 'the catalog lists only what the prune keeps');
    const entry = (await first.journal.operations()).find((o) => o.kind === 'prune');
    assert.equal(entry?.status, 'FAILED');
    assert.equal((entry?.last.details?.['removed'] as string[] | undefined)?.length, 5, 'its journal entry names what it removed');
    assert.ok(readdirSync(path.join(repo(), 'backups/app')).length > 5, 'files of pruned backups are still there');
    const list = strata(['list', '--repo', repo(), '--json']);
    assert.equal(json<{ backups: BackupRecord[] }>(list).backups.length, 5);
    assert.equal(readdirSync(path.join(repo(), 'backups/app')).length, 5, 'the next command deleted them');
    const verify = strata(['verify', '--all', '--repo', repo(), '--level', 'full']);
    assert.equal(verify.status, 0, verify.stdout);
  });

  it('an interruption while a prune waits for the repository lock ends the wait and changes nothing', async () => {
    tenDays();
    // A live process (this one) holds the lock, as a backup committing at that moment would.
    mkdirSync(path.join(repo(), 'locks'), { recursive: true });
    writeFileSync(path.join(repo(), 'locks/repository.lock'), JSON.stringify({ token: 'held', pid: process.pid, host: hostname(), operation: 'backup', acquiredAt: new Date().toISOString() }));
    const interruption = new AbortController();
    const repository = await openRepository(repo(), { passphrase: new Passphrase('correct horse battery staple'), tempDir: path.join(dir.path, 'tmp'), lock: { waitMs: 600_000 } });
    const pruning = repository.prune(() => ({ keepDaily: 2 }), { signal: interruption.signal });
    // Without the signal reaching the wait, the prune would wait the whole ten minutes, then fail with REPO_LOCKED.
    setTimeout(() => interruption.abort(), 200);
    await assert.rejects(pruning, (err: Error & { code: string }) => {
      assert.equal(err.code, 'ABORTED');
      assert.match(err.message, /^prune: interrupted while waiting for the repository lock, held by backup by pid \d+ on .+; the lock was not taken$/);
      return true;
    });
    assert.equal(readFileSync(path.join(repo(), 'locks/repository.lock'), 'utf8').includes('"held"'), true, 'the holder\'s lock is untouched');
    rmSync(path.join(repo(), 'locks/repository.lock'));
    assert.equal((await repository.list()).length, 10, 'the catalog still lists every backup');
    await repository.close();
  });

  it('list --by-tier groups restore points under the rule that keeps them', () => {
    tenDays();
    const result = strata(['list', '--by-tier', '--repo', repo(), '--keep-daily', '2', '--keep-monthly', '1', '--json']);
    assert.equal(result.status, 0, result.stderr);
    const tiers = json<{ tiers: Record<string, { id: string }[]> }>(result).tiers;
    assert.deepEqual(Object.keys(tiers).sort(), ['chain', 'daily', 'monthly', 'not kept (the next prune removes these)']);
    assert.equal(tiers['monthly']!.length, 1);
  });
});

describe('strata delete', () => {
  const dir = useTempDir();
  const built = useSuiteDir();
  const repo = (): string => path.join(dir.path, 'repo');
  const ids: string[] = [];

  // A full, two incrementals on it, then a second full: made once, and each test deletes from
  // its own copy.
  before(function () {
    this.timeout(300_000);
    const db = path.join(built.path, 'app.db');
    const builtRepo = path.join(built.path, 'repo');
    buildRichDatabase(db, { rows: 20 });
    assert.equal(strata(['init', '--repo', builtRepo]).status, 0);
    for (const [day, type] of [[1, 'full'], [2, 'incremental'], [3, 'incremental'], [4, 'full']] as const) {
      mutate(db, day);
      const result = strata(['backup', db, '--repo', builtRepo, '--type', type, '--time', `2026-05-0${day}T03:00:00Z`, '--json']);
      assert.equal(result.status, 0, result.stderr);
      ids.push(json<{ id: string }>(result).id);
    }
  });

  /** This test's copy of the four backups; returns their ids, oldest first. */
  function chainOfFour(): string[] {
    copyInto(built.path, dir.path);
    return [...ids];
  }

  it('refuses to delete a backup others build on, names them, and deletes nothing', () => {
    const [full, inc1, inc2] = chainOfFour();
    const result = strata(['delete', full!, '--repo', repo(), '--yes']);
    assert.equal(result.status, 1);
    assert.match(result.stderr, new RegExp(`${inc1}.*${inc2}|${inc2}.*${inc1}`));
    assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo(), '--json'])).backups.length, 4);
    assert.equal(readdirSync(path.join(repo(), 'backups/app')).length, 4);
  });

  it('deletes the tip of a chain, or a whole chain with --with-dependents, and what stays still verifies', () => {
    const [full, inc1, inc2, full2] = chainOfFour();
    const tip = json<{ removed: string[] }>(strata(['delete', inc2!, '--repo', repo(), '--yes', '--json']));
    assert.deepEqual(tip.removed, [inc2]);
    const chain = json<{ removed: string[] }>(strata(['delete', full!, '--with-dependents', '--repo', repo(), '--yes', '--json']));
    assert.deepEqual([...chain.removed].sort(), [full, inc1].sort());
    const left = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
    assert.deepEqual(left.map((b) => b.id), [full2]);
    assert.equal(readdirSync(path.join(repo(), 'backups/app')).length, 1, 'the deleted artifacts are gone from disk');
    assert.equal(strata(['verify', '--all', '--repo', repo(), '--level', 'full']).status, 0);
  });

  it('asks for --yes when not on a terminal', () => {
    const [, , inc2] = chainOfFour();
    const result = strata(['delete', inc2!, '--repo', repo()]);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /pass --yes/);
  });
});

describe('retention that must not delete what a restore needs', () => {
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');
  const list = (): BackupRecord[] => json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;

  /** Damages a backup's artifact and records a failed verification of it. */
  function damage(id: string): void {
    const file = path.join(repo(), list().find((b) => b.id === id)!.key);
    const bytes = readFileSync(file);
    bytes[bytes.length >> 1]! ^= 1;
    writeFileSync(file, bytes);
    assert.equal(strata(['verify', id, '--repo', repo(), '--level', 'quick']).status, 3);
  }

  function twoFulls(): { db: string; older: string; newer: string } {
    const db = path.join(dir.path, 'app.db');
    buildRichDatabase(db, { rows: 20 });
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const backup = (time: string): string => json<{ id: string }>(strata(['backup', db, '--repo', repo(), '--time', time, '--json'])).id;
    return { db, older: backup('2026-11-20T10:00:00Z'), newer: backup('2026-11-21T10:00:00Z') };
  }

  it('an incremental is not built on a full that failed verification, and the intact older full survives keep-last 1', () => {
    const { db, older, newer } = twoFulls();
    damage(newer);
    mutate(db, 1);
    const incremental = strata(['backup', db, '--repo', repo(), '--type', 'incremental', '--json']);
    assert.equal(incremental.status, 0, incremental.stderr);
    assert.match(incremental.stderr, new RegExp(`strata: warning: ${newer} failed verification at .*; this incremental builds on ${older} instead`));
    const made = json<{ backup: BackupRecord }>(incremental).backup;
    assert.equal(made.type, 'incremental');
    assert.equal(made.parent, older, 'it builds on the intact full');
    assert.deepEqual(json<{ newestGood: Record<string, string> }>(strata(['list', '--repo', repo(), '--json'])).newestGood, { app: made.id });
    assert.equal(strata(['prune', '--repo', repo(), '--keep-last', '1', '--json']).status, 0);
    assert.deepEqual(list().map((b) => b.id).sort(), [older, made.id].sort(), 'the damaged full goes; the incremental and the full it needs stay');
    const target = path.join(dir.path, 'out.db');
    const restored = strata(['restore', 'latest', '--repo', repo(), '--to', target]);
    assert.equal(restored.status, 0, restored.stderr);
  });

  it('an incremental whose every possible parent is known bad is a full instead, and says so', () => {
    const { db, older, newer } = twoFulls();
    damage(newer);
    damage(older);
    mutate(db, 1);
    const result = strata(['backup', db, '--repo', repo(), '--type', 'incremental', '--json']);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stderr, new RegExp(`strata: warning: ${newer} failed verification at .*; this backup is a full instead`));
    const made = json<{ backup: BackupRecord }>(result).backup;
    assert.equal(made.type, 'full');
    assert.equal(made.parent, null);
  });

  it('a restore point built on a link that failed verification is not the newest good one, so keep-last 1 does not lose the intact chain', () => {
    // Made before anything is known to be bad (as a nightly incremental is): the incremental builds
    // on the newer full, whose verification fails later.
    const { db, older, newer } = twoFulls();
    mutate(db, 1);
    const incremental = json<{ id: string }>(strata(['backup', db, '--repo', repo(), '--type', 'incremental', '--time', '2026-11-22T10:00:00Z', '--json'])).id;
    damage(newer);
    const listed = json<{ newestGood: Record<string, string> }>(strata(['list', '--repo', repo(), '--json']));
    assert.deepEqual(listed.newestGood, { app: older });
    const plan = json<{ keep: { id: string; reasons: string[] }[] }>(strata(['prune', '--repo', repo(), '--keep-last', '1', '--dry-run', '--json']));
    assert.deepEqual(plan.keep.filter((k) => k.reasons.includes('newest good backup (always kept)')).map((k) => k.id), [older]);
    assert.ok(plan.keep.some((k) => k.id === incremental), 'keep-last still keeps what it names');
    const health = json<{ checks: { check: string; message: string }[] }>(strata(['health', '--repo', repo(), '--json']));
    assert.match(health.checks.find((c) => c.check === 'backup-age')!.message, new RegExp(`^newest good backup ${older} `));
  });

  it('a daily slot goes to the day\'s full, not to a schema-only backup taken after it', () => {
    const db = path.join(dir.path, 'app.db');
    buildRichDatabase(db, { rows: 20 });
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const day = (back: number): string => new Date(Date.now() - back * 86_400_000).toISOString().slice(0, 10);
    const backup = (time: string, type = 'full'): string => json<{ id: string }>(strata(['backup', db, '--repo', repo(), '--time', time, '--type', type, '--json'])).id;
    const full = backup(`${day(2)}T09:00:00Z`);
    const schema = backup(`${day(2)}T11:00:00Z`, 'schema-only');
    const next = backup(`${day(1)}T09:00:00Z`);
    const plan = json<{ keep: { id: string; reasons: string[] }[]; remove: { id: string }[] }>(strata(['prune', '--repo', repo(), '--keep-daily', '2', '--dry-run', '--json']));
    assert.deepEqual(plan.keep.map((k) => [k.id, k.reasons]), [
      [next, ['newest good backup (always kept)', `daily 1 of 2 (${day(1)})`]],
      [full, [`daily 2 of 2 (${day(2)})`]],
    ]);
    assert.deepEqual(plan.remove.map((r) => r.id), [schema]);
  });

  it('--keep-within-pitr on a database that is not replicated keeps every backup of the window', () => {
    const db = path.join(dir.path, 'app.db');
    buildRichDatabase(db, { rows: 20 });
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const made = ['01', '02', '03', '04'].map((d) => json<{ id: string }>(strata(['backup', db, '--repo', repo(), '--time', `2026-12-${d}T10:00:00Z`, '--json'])).id);
    const dry = strata(['prune', '--repo', repo(), '--keep-within-pitr', '30d', '--dry-run']);
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(dry.stdout, /point-in-time window 30d \(within it, where no segments cover\)/);
    const result = strata(['prune', '--repo', repo(), '--keep-within-pitr', '30d', '--json']);
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(list().map((b) => b.id).sort(), [...made].sort());
  });

  it('a backup labelled constructor (or any name every object inherits) is planned, not a crash', () => {
    const db = path.join(dir.path, 'app.db');
    buildRichDatabase(db, { rows: 20 });
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const labelled = json<{ id: string }>(strata(['backup', db, '--repo', repo(), '--label', 'constructor', '--time', '2026-12-01T10:00:00Z', '--json'])).id;
    assert.equal(strata(['backup', db, '--repo', repo(), '--label', '__proto__', '--time', '2026-12-02T10:00:00Z']).status, 0);
    const dry = strata(['prune', '--repo', repo(), '--dry-run', '--json']);
    assert.equal(dry.status, 0, dry.stderr);
    assert.ok(json<{ keep: { id: string }[] }>(dry).keep.some((k) => k.id === labelled), 'the default daily tier keeps it');
    const tiers = strata(['list', '--by-tier', '--repo', repo(), '--json']);
    assert.equal(tiers.status, 0, tiers.stderr);
    const kept = strata(['prune', '--repo', repo(), '--keep-last', '1', '--keep-label', 'constructor=forever', '--dry-run', '--json']);
    assert.equal(kept.status, 0, kept.stderr);
    assert.deepEqual(json<{ keep: { id: string; reasons: string[] }[] }>(kept).keep.find((k) => k.id === labelled)?.reasons, ['label constructor (kept forever)']);
  });
});
