import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { BackupRecord, GetOptions } from '@strata/sdk';
import { Passphrase, StrataError, openRepository } from '@strata/sdk';
import { bigDatabase, buildRichDatabase, mutate } from './helpers/databases.js';
import { DiskFullStorage, ReadFaultStorage } from './helpers/faulty-storage.js';
import { CLI, TEST_PASSPHRASE, copyInto, finished, json, sqliteDump, strata, strataAsync, useSuiteDir, useTempDir } from './helpers/env.js';
import type { CliResult } from './helpers/env.js';

describe('strata export and import', () => {
  const dir = useTempDir();
  const built = useSuiteDir();
  const source = (): string => path.join(dir.path, 'source');

  // Two databases: `shop` with a full and two incrementals, `blog` with a full and a schema-only
  // backup. Made once (six CLI runs); each test exports from its own copy.
  before(function () {
    this.timeout(300_000);
    const shop = path.join(built.path, 'shop.db');
    const blog = path.join(built.path, 'blog.db');
    const repo = path.join(built.path, 'source');
    buildRichDatabase(shop, { rows: 60 });
    buildRichDatabase(blog, { rows: 20 });
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const backup = (...args: string[]): void => {
      const result = strata(['backup', ...args, '--repo', repo]);
      assert.equal(result.status, 0, result.stderr);
    };
    backup(shop);
    mutate(shop, 1);
    backup(shop, '--type', 'incremental');
    mutate(shop, 2);
    backup(shop, '--type', 'incremental');
    backup(blog);
    backup(blog, '--type', 'schema-only');
  });

  /** This test's copy of the source repository and of the two databases as they were backed up last. */
  function populated(): { shop: string; blog: string } {
    copyInto(built.path, dir.path);
    return { shop: path.join(dir.path, 'shop.db'), blog: path.join(dir.path, 'blog.db') };
  }

  for (const extension of ['tar.gz', 'zip']) {
    it(`a .${extension} export of several databases, imported into an empty repository, restores each identically`, () => {
      const { shop, blog } = populated();
      const file = path.join(dir.path, `monthly.${extension}`);
      const exported = strata(['export', '--all', '--out', file, '--repo', source(), '--json']);
      assert.equal(exported.status, 0, exported.stderr);
      const ids = json<{ backups: string[] }>(exported).backups;
      assert.equal(ids.length, 4, 'shop: full + 2 incrementals; blog: its full (schema-only backups are not restore points with data)');
      const target = path.join(dir.path, 'target');
      assert.equal(strata(['init', '--repo', target]).status, 0);
      const imported = strata(['import', file, '--repo', target, '--json']);
      assert.equal(imported.status, 0, imported.stderr);
      assert.equal(json<{ imported: string[] }>(imported).imported.length, 4);
      for (const [db, original] of [['shop', shop], ['blog', blog]] as const) {
        const out = path.join(dir.path, `${db}-restored.db`);
        const restore = strata(['restore', 'latest', '--db', db, '--repo', target, '--to', out]);
        assert.equal(restore.status, 0, restore.stderr);
        assert.equal(sqliteDump(out), sqliteDump(original));
      }
      assert.equal(strata(['verify', '--all', '--repo', target, '--level', 'full']).status, 0);
      const again = json<{ imported: string[]; skipped: string[] }>(strata(['import', file, '--repo', target, '--json']));
      assert.deepEqual([again.imported.length, again.skipped.length], [0, 4], 'importing twice adds nothing');
    });
  }

  it('holds a RESTORE.md whose by-hand commands recover a database with gpg, zstd and tar', () => {
    const { blog } = populated();
    const file = path.join(dir.path, 'blog.tar.gz');
    assert.equal(strata(['export', 'blog', '--out', file, '--repo', source()]).status, 0);
    const work = path.join(dir.path, 'by-hand');
    spawnSync('mkdir', ['-p', work]);
    assert.equal(spawnSync('tar', ['-xzf', file, '-C', work]).status, 0);
    const restoreMd = readFileSync(path.join(work, 'RESTORE.md'), 'utf8');
    assert.match(restoreMd, /strata import blog\.tar\.gz --repo \.\/restored-repo/);
    const extract = /## Without Strata[\s\S]*?```sh\n([\s\S]*?\n)```/.exec(restoreMd);
    const block = /### blog \(sqlite\)[\s\S]*?```sh\n([\s\S]*?\n)```/.exec(restoreMd);
    assert.ok(extract && block, RESTORE_MD_HINT);
    writeFileSync(path.join(work, 'PASSFILE'), 'correct horse battery staple');
    const gnupg = path.join(dir.path, 'gnupg');
    spawnSync('mkdir', ['-m', '700', '-p', gnupg]);
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', `cp ../blog.tar.gz . && ${extract[1]}${block[1]}`], { cwd: work, env: { ...process.env, GNUPGHOME: gnupg }, encoding: 'utf8' });
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME: gnupg } });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(sqliteDump(path.join(work, 'blog.db')), sqliteDump(blog));
  });

  it('an import of a file that is no export says so, as import', () => {
    populated();
    const notes = path.join(dir.path, 'notes.txt');
    writeFileSync(notes, 'not an export');
    const result = strata(['import', notes, '--repo', source()]);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /^strata: import: \S+notes\.txt is not an export of Strata \(its name ends neither in \.tar\.gz nor in \.zip\)/);
  });

  it('an export to a folder that does not exist, or onto a full disk, fails saying so, and leaves no file', () => {
    populated();
    const missing = strata(['export', 'blog', '--out', path.join(dir.path, 'no-such-folder', 'blog.tar.gz'), '--repo', source(), '--json']);
    assert.equal(missing.status, 1, missing.stderr);
    assert.equal(json<{ error: { code: string } }>(missing).error.code, 'IO');
    assert.match(missing.stderr, /export: cannot write .*no-such-folder\/blog\.tar\.gz \(ENOENT\); give --out a file in a folder you can write to/);
    // A link planted at a predictable temporary name (as earlier versions used) is never written through.
    const planted = path.join(dir.path, 'planted');
    writeFileSync(planted, 'not to be overwritten');
    symlinkSync(planted, path.join(dir.path, 'linked.tar.gz.partial'));
    assert.equal(strata(['export', 'blog', '--out', path.join(dir.path, 'linked.tar.gz'), '--repo', source()]).status, 0);
    assert.equal(readFileSync(planted, 'utf8'), 'not to be overwritten');
    for (const extension of ['tar.gz', 'zip']) {
      // Files may grow to 64 KiB only (ulimit -f, its signal ignored): the export's writes then
      // fail past that size, as on a full disk.
      const file = path.join(dir.path, `full.${extension}`);
      const cli = ['export', '--all', '--out', file, '--repo', source(), '--json'].map((a) => `'${a}'`).join(' ');
      const run = spawnSync('bash', ['-c', `trap '' XFSZ; ulimit -f 64; exec '${process.execPath}' '${CLI}' ${cli}`], { encoding: 'utf8', env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE } });
      const full = { status: run.status ?? -1, stdout: run.stdout, stderr: run.stderr };
      assert.equal(full.status, 1, full.stderr);
      assert.equal(json<{ error: { code: string } }>(full).error.code, 'IO');
      assert.match(full.stderr, /export: writing .*full\.(tar\.gz|zip) failed \(EFBIG\); nothing was kept/);
      assert.deepEqual(readdirSync(dir.path).filter((name) => name.startsWith('full.')), [], `nothing named full.${extension}* is left`);
    }
  });

  it('two exports to the same --out each write a temporary file of their own: neither breaks the other, and without replace the later one leaves the earlier file alone', async () => {
    populated();
    const passphrase = new Passphrase(TEST_PASSPHRASE);
    const tempDir = path.join(dir.path, 'tmp');
    const names = (file: string): string[] =>
      spawnSync('tar', ['-tzf', file], { encoding: 'utf8' })
        .stdout.split('\n')
        .filter((n) => n.startsWith('backups/'))
        .map((n) => n.split('/')[1]!);
    for (const replace of [true, false]) {
      const out = path.join(dir.path, `both-${replace}.tar.gz`);
      // The first export (of shop) is held at its first artifact, its temporary file made and
      // begun, while a second export (of blog) to the same file runs from start to end.
      let reached!: () => void;
      const held = new Promise<void>((resolve) => (reached = resolve));
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      class HeldStorage extends DiskFullStorage {
        override async get(key: string, options?: GetOptions): Promise<AsyncIterable<Uint8Array>> {
          if (key.startsWith('backups/')) {
            reached();
            await gate;
          }
          return super.get(key, options);
        }
      }
      const first = await openRepository(new HeldStorage(source(), Number.MAX_SAFE_INTEGER), { passphrase, tempDir });
      const firstRun = first.export({ databases: ['shop'], out, replace });
      firstRun.catch(() => undefined);
      await held;
      const second = await openRepository(source(), { passphrase, tempDir });
      await second.export({ databases: ['blog'], out, replace });
      assert.deepEqual([...new Set(names(out))], ['blog']);
      release();
      if (replace) {
        // The later to finish is in place, whole: the file holds what that run reports.
        const result = await firstRun;
        assert.deepEqual([...new Set(result.backups.map((b) => b.database))], ['shop']);
        assert.deepEqual([...new Set(names(out))], ['shop']);
      } else {
        await assert.rejects(firstRun, (err: Error & { code: string }) => {
          assert.equal(err.code, 'TARGET_EXISTS');
          assert.match(err.message, /^export: .*both-false\.tar\.gz appeared while this export ran \(another export or program wrote it\) and was left as it is; give another --out, or --force to replace it$/);
          return true;
        });
        assert.deepEqual([...new Set(names(out))], ['blog'], 'the file is still the one the other run reported');
      }
      assert.deepEqual(readdirSync(dir.path).filter((name) => name.startsWith(`both-${replace}.`)), [path.basename(out)], 'no temporary file is left');
    }
  });

  it('refuses to replace a file already at --out unless --force, which replaces it only with a complete export', () => {
    populated();
    const out = path.join(dir.path, 'keep.tar.gz');
    writeFileSync(out, 'important');
    const refused = strata(['export', 'blog', '--out', out, '--repo', source(), '--json']);
    assert.equal(refused.status, 1, refused.stderr);
    assert.equal(json<{ error: { code: string } }>(refused).error.code, 'TARGET_EXISTS');
    assert.match(refused.stderr, /export: .*keep\.tar\.gz exists; give another --out, or --force to replace it/);
    assert.equal(readFileSync(out, 'utf8'), 'important');
    const forced = strata(['export', 'blog', '--out', out, '--repo', source(), '--force']);
    assert.equal(forced.status, 0, forced.stderr);
    const imported = path.join(dir.path, 'imported');
    assert.equal(strata(['init', '--repo', imported]).status, 0);
    assert.equal(strata(['import', out, '--repo', imported]).status, 0, 'the replacement is a whole export');
  });

  it('a read that fails part way through an export fails it naming the object, leaves no file, and opens nothing after it', async () => {
    populated();
    const passphrase = new Passphrase(TEST_PASSPHRASE);
    for (const extension of ['zip', 'tar.gz']) {
      // The first of shop's backups breaks 1,000 bytes in, as a disk read error or a download cut off would.
      const storage = new ReadFaultStorage(source(), { prefix: 'backups/shop/', afterBytes: 1000 });
      const repository = await openRepository(storage, { passphrase, tempDir: path.join(dir.path, 'tmp') });
      const out = path.join(dir.path, `cut.${extension}`);
      await assert.rejects(repository.export({ out }), (err: Error & { code: string }) => {
        assert.equal(err.code, 'IO');
        assert.match(err.message, /^export: reading backups\/shop\/\S+ failed after 1000 of its \d+ bytes \(EIO\); nothing was kept/);
        return true;
      });
      assert.deepEqual(readdirSync(dir.path).filter((name) => name.startsWith('cut.')), [], `nothing named cut.${extension}* is left`);
      // Each object is opened when its turn comes: none after the one that failed.
      const objects = storage.opened.filter((key) => key.startsWith('backups/'));
      assert.equal(objects.filter((key) => key.startsWith('backups/shop/')).length, 1, objects.join(', '));
      assert.match(objects.at(-1)!, /^backups\/shop\//);
    }
    // An object store's broken download comes as the storage's own error: its words stay, with what it means for the export.
    const storage = new ReadFaultStorage(source(), {
      prefix: 'backups/shop/',
      afterBytes: 1000,
      fault: () => new StrataError('IO', 'storage: read backups/shop/x in s3://bucket failed: socket hang up'),
    });
    const repository = await openRepository(storage, { passphrase, tempDir: path.join(dir.path, 'tmp') });
    await assert.rejects(repository.export({ out: path.join(dir.path, 'cut.zip') }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'IO');
      assert.match(err.message, /^export: reading backups\/shop\/\S+ failed after 1000 of its \d+ bytes: storage: read backups\/shop\/x in s3:\/\/bucket failed: socket hang up; nothing was kept, try the export again$/);
      return true;
    });
    assert.deepEqual(readdirSync(dir.path).filter((name) => name.startsWith('cut.')), []);
    // The same export from the same repository, read without a fault, is whole.
    const whole = strata(['export', '--all', '--out', path.join(dir.path, 'whole.zip'), '--repo', source()]);
    assert.equal(whole.status, 0, whole.stderr);
  });

  it('Ctrl-C stops an export and an import part way: no file is left, nothing is imported, and each says so', async function () {
    this.timeout(300_000);
    // 160 MiB that does not compress: long enough to export and import that each is caught part way.
    const big = path.join(dir.path, 'big.db');
    bigDatabase(big, 160);
    const repo = path.join(dir.path, 'big-repo');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    const backedUp = strata(['backup', big, '--repo', repo]);
    assert.equal(backedUp.status, 0, backedUp.stderr);
    /**
     * Runs strata, holds it still (SIGSTOP) as soon as its work shows on disk, and, if it is seen
     * to be still under way while held, interrupts it (SIGINT) and lets it go: the signal lands part
     * way through however slow the machine. One that got past that point before it was held runs
     * again (each attempt with its own file names), up to three times.
     */
    const interrupted = async (attempt: (n: number) => { args: string[]; started: () => boolean; underWay: () => boolean }): Promise<CliResult> => {
      for (let n = 1; ; n++) {
        const { args, started, underWay } = attempt(n);
        const child = strataAsync(args);
        const result = finished(child);
        const running = (): boolean => child.exitCode === null && child.signalCode === null;
        try {
          while (running() && !started()) await new Promise((resolve) => setTimeout(resolve, 5));
          child.kill('SIGSTOP');
          const caught = running() && underWay();
          if (caught) child.kill('SIGINT');
          child.kill('SIGCONT');
          const outcome = await result;
          if (caught || n === 3) return outcome;
        } finally {
          if (running()) child.kill('SIGKILL');
        }
      }
    };
    for (const extension of ['zip', 'tar.gz']) {
      let out = '';
      const stopped = await interrupted((n) => {
        out = path.join(dir.path, `big-${n}.${extension}`);
        // The export's own temporary file: `<out>.<random>.partial`.
        const partial = (): string | undefined => {
          const name = readdirSync(dir.path).find((f) => f.startsWith(`${path.basename(out)}.`) && f.endsWith('.partial'));
          return name === undefined ? undefined : path.join(dir.path, name);
        };
        return {
          args: ['export', '--all', '--out', out, '--repo', repo],
          started: () => {
            const file = partial();
            return file !== undefined && (statSync(file, { throwIfNoEntry: false })?.size ?? 0) > 0;
          },
          underWay: () => partial() !== undefined && !existsSync(out),
        };
      });
      assert.equal(stopped.status, 1, stopped.stderr);
      assert.match(stopped.stderr, /export: interrupted; nothing was kept/);
      assert.deepEqual(readdirSync(dir.path).filter((name) => name.startsWith(path.basename(out))), [], `nothing named ${path.basename(out)}* is left`);
    }
    const out = path.join(dir.path, 'big.zip');
    const exported = strata(['export', '--all', '--out', out, '--repo', repo]);
    assert.equal(exported.status, 0, exported.stderr);
    let target = '';
    const stopped = await interrupted((n) => {
      target = path.join(dir.path, `big-target-${n}`);
      assert.equal(strata(['init', '--repo', target]).status, 0);
      const uploads = path.join(target, '.tmp');
      // The backup's artifact is being written (a storage write goes through a temporary file).
      const uploading = (): boolean => existsSync(uploads) && readdirSync(uploads).some((name) => name.startsWith('big_full'));
      return { args: ['import', out, '--repo', target], started: uploading, underWay: uploading };
    });
    assert.equal(stopped.status, 1, stopped.stderr);
    assert.match(stopped.stderr, /import: interrupted; nothing of .*big\.zip was imported/);
    assert.deepEqual(json<{ backups: BackupRecord[] }>(strata(['list', '--repo', target, '--json'])).backups, []);
    assert.deepEqual(readdirSync(target, { recursive: true }).filter((name) => String(name).includes('big_full') || String(name).startsWith('pending/')), [], 'no object of the export, and no note of its writes, is left in the repository');
    // Nothing stands in the way of doing it again.
    const again = strata(['import', out, '--repo', target, '--json']);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(json<{ imported: string[] }>(again).imported.length, 1);
  });

  it('refuses a damaged export and imports nothing from it', () => {
    populated();
    const file = path.join(dir.path, 'damaged.zip');
    assert.equal(strata(['export', '--all', '--out', file, '--repo', source()]).status, 0);
    const bytes = readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
    writeFileSync(file, bytes);
    const target = path.join(dir.path, 'target');
    strata(['init', '--repo', target]);
    const result = strata(['import', file, '--repo', target, '--json']);
    assert.equal(result.status, 1);
    assert.equal(json<{ error: { code: string } }>(result).error.code, 'ARTIFACT_CORRUPT');
    assert.deepEqual(json<{ backups: BackupRecord[] }>(strata(['list', '--repo', target, '--json'])).backups, []);
  });

  it('refuses an export whose key files the importing passphrase does not open, and imports nothing', () => {
    populated();
    const file = path.join(dir.path, 'x.tar.gz');
    assert.equal(strata(['export', '--all', '--out', file, '--repo', source()]).status, 0);
    const target = path.join(dir.path, 'target');
    strata(['init', '--repo', target], { env: { STRATA_PASSPHRASE: 'another one' } });
    const result = strata(['import', file, '--repo', target], { env: { STRATA_PASSPHRASE: 'another one' } });
    assert.equal(result.status, 4);
    assert.match(result.stderr, /your passphrase opens none of the 1 key file\(s\) in .*x\.tar\.gz/);
    assert.deepEqual(json<{ backups: BackupRecord[] }>(strata(['list', '--repo', target, '--json'], { env: { STRATA_PASSPHRASE: 'another one' } })).backups, []);
  });
});

const RESTORE_MD_HINT = 'RESTORE.md lists the by-hand commands for blog';
