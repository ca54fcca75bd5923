import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { readTar, tarHeaderBytes, tarPadding, tarTrailer } from '@strata/sdk';
import { createHash } from 'node:crypto';
import type { BackupRecord } from '@strata/sdk';
import { setTimeout as delay } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { bigDatabase } from './helpers/databases.js';
import { CLI, FIXTURE_DB, TEST_PASSPHRASE, copyInto, finished, json, strata, strataAsync, useSuiteDir, useTempDir, catalogPath, removeCatalog } from './helpers/env.js';

interface BackupJson {
  id: string;
  backup: BackupRecord;
}

/** A SQLite database of `count` random (incompressible) 32 KiB blobs. */
function blobDatabase(file: string, count: number): void {
  const db = new Database(file);
  db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)');
  const insert = db.prepare('INSERT INTO blobs(data) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < count; i++) insert.run(randomBytes(32 * 1024));
  })();
  db.close();
}

/** A .tar.gz with exactly these entries, as a hostile party would craft it. */
function tarGz(entries: { name: string; body: Buffer; declaredSize?: number }[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const size = e.declaredSize ?? e.body.length;
    parts.push(Buffer.from(tarHeaderBytes({ name: e.name, size, mtime: new Date() })), e.body, Buffer.from(tarPadding(size)));
  }
  parts.push(Buffer.from(tarTrailer()));
  return zlib.gzipSync(Buffer.concat(parts));
}

describe('hostile input and private data', () => {
  const dir = useTempDir();
  const built = useSuiteDir();
  const repo = (): string => path.join(dir.path, 'repo');
  const fixture = (): string => {
    const file = path.join(dir.path, 'app.db');
    copyFileSync(FIXTURE_DB, file);
    return file;
  };
  const backup = (...extra: string[]): BackupJson => {
    const result = strata(['backup', fixture(), '--repo', repo(), '--json', ...extra]);
    assert.equal(result.status, 0, result.stderr);
    return json<BackupJson>(result);
  };

  // Made once by Strata and copied by each test that needs one, since what these tests attack is
  // not `init` or the first backup: an initialised repository, and one holding one backup of the
  // fixture. (The test of the repository's file modes makes its own, with Strata.)
  let oneBackup: BackupJson;
  before(function () {
    this.timeout(300_000);
    assert.equal(strata(['init', '--repo', path.join(built.path, 'empty')]).status, 0);
    const source = path.join(built.path, 'app.db');
    copyFileSync(FIXTURE_DB, source);
    assert.equal(strata(['init', '--repo', path.join(built.path, 'one')]).status, 0);
    const result = strata(['backup', source, '--repo', path.join(built.path, 'one'), '--json']);
    assert.equal(result.status, 0, result.stderr);
    oneBackup = json<BackupJson>(result);
  });
  /** An initialised, empty repository at `target`. */
  const init = (target = repo()): void => copyInto(path.join(built.path, 'empty'), target);
  /** repo() holding one full backup of the fixture; returns that backup. */
  const withOneBackup = (): BackupJson => {
    copyInto(path.join(built.path, 'one'), repo());
    return oneBackup;
  };

  describe('import of a crafted bundle', () => {
    // A real export of one backup, unpacked into its entries once; each test alters a fresh copy.
    before(function () {
      this.timeout(300_000);
      const exporting = path.join(built.path, 'exporting');
      copyInto(path.join(built.path, 'one'), exporting);
      const out = path.join(built.path, 'real.tar.gz');
      assert.equal(strata(['export', '--all', '--out', out, '--repo', exporting]).status, 0);
      mkdirSync(path.join(built.path, 'unpacked'));
      assert.equal(spawnSync('tar', ['-xzf', out, '-C', path.join(built.path, 'unpacked')]).status, 0);
    });
    const exportEntries = (): { manifest: { backups: BackupRecord[] } & Record<string, unknown>; artifact: { name: string; body: Buffer } } => {
      const unpacked = path.join(built.path, 'unpacked');
      const manifest = JSON.parse(readFileSync(path.join(unpacked, 'strata-export.json'), 'utf8'));
      return { manifest, artifact: { name: oneBackup.backup.key, body: readFileSync(path.join(unpacked, oneBackup.backup.key)) } };
    };

    it('refuses a record whose key points at repository.json, and leaves the repository intact', () => {
      const { manifest, artifact } = exportEntries();
      const target = path.join(dir.path, 'victim');
      init(target);
      const before = readFileSync(path.join(target, 'repository.json'));
      manifest.backups[0] = { ...manifest.backups[0]!, key: 'repository.json' };
      const bundle = path.join(dir.path, 'evil.tar.gz');
      writeFileSync(bundle, tarGz([{ name: 'strata-export.json', body: Buffer.from(JSON.stringify(manifest)) }, { name: 'repository.json', body: artifact.body }]));
      const result = strata(['import', bundle, '--repo', target, '--json']);
      assert.equal(result.status, 1, result.stdout);
      assert.match(json<{ error: { code: string; message: string } }>(result).error.code, /ARTIFACT_HOSTILE/);
      assert.deepEqual(readFileSync(path.join(target, 'repository.json')), before);
      assert.equal(strata(['list', '--repo', target]).status, 0);
    });

    it('refuses database names and ids that would leave backups/<db>/', () => {
      const { manifest, artifact } = exportEntries();
      const target = path.join(dir.path, 'victim');
      init(target);
      for (const evil of [{ database: '../locks' }, { id: '../../repository' }, { parent: '../x' }]) {
        const altered = { ...manifest, backups: [{ ...manifest.backups[0]!, ...evil }] };
        const bundle = path.join(dir.path, 'evil.tar.gz');
        writeFileSync(bundle, tarGz([{ name: 'strata-export.json', body: Buffer.from(JSON.stringify(altered)) }, artifact]));
        const result = strata(['import', bundle, '--repo', target, '--json']);
        assert.equal(result.status, 1, `${JSON.stringify(evil)}: ${result.stdout}`);
        assert.equal(json<{ error: { code: string } }>(result).error.code, 'ARTIFACT_HOSTILE', JSON.stringify(evil));
      }
      const files = readdirSync(dir.path, { recursive: true }).map(String);
      assert.deepEqual(files.filter((f) => f.startsWith('victim/backups/') || f.startsWith('repository') || f === 'locks'), []);
      assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', target, '--json'])).backups.length, 0);
    });

    it('stops a decompression bomb at the size its record states, writing nothing', () => {
      const { manifest, artifact } = exportEntries();
      const target = path.join(dir.path, 'victim');
      init(target);
      // The entry really holds 64 MiB of zeros (a few KiB gzipped); the record says its size.
      const bomb = Buffer.alloc(64 * 1024 * 1024);
      const bundle = path.join(dir.path, 'bomb.tar.gz');
      writeFileSync(bundle, tarGz([{ name: 'strata-export.json', body: Buffer.from(JSON.stringify(manifest)) }, { name: artifact.name, body: bomb }]));
      assert.ok(statSync(bundle).size < 1024 * 1024);
      const result = strata(['import', bundle, '--repo', target, '--json']);
      assert.equal(result.status, 1);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'ARTIFACT_HOSTILE');
      assert.match(error.message, /larger than its record says/);
      const written = spawnSync('du', ['-sb', target], { encoding: 'utf8' }).stdout.split('\t')[0];
      assert.ok(Number(written) < 1024 * 1024, `the repository grew to ${written} bytes`);
    });

    it('refuses a bundle that lists a backup twice or holds an entry twice', () => {
      const { manifest, artifact } = exportEntries();
      const target = path.join(dir.path, 'victim');
      init(target);
      const twice = { ...manifest, backups: [manifest.backups[0]!, manifest.backups[0]!] };
      const bundle = path.join(dir.path, 'twice.tar.gz');
      writeFileSync(bundle, tarGz([{ name: 'strata-export.json', body: Buffer.from(JSON.stringify(twice)) }, artifact]));
      assert.equal(json<{ error: { code: string } }>(strata(['import', bundle, '--repo', target, '--json'])).error.code, 'ARTIFACT_HOSTILE');
      writeFileSync(bundle, tarGz([{ name: 'strata-export.json', body: Buffer.from(JSON.stringify(manifest)) }, artifact, artifact]));
      assert.equal(json<{ error: { code: string } }>(strata(['import', bundle, '--repo', target, '--json'])).error.code, 'ARTIFACT_HOSTILE');
      assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', target, '--json'])).backups.length, 0);
    });

    it('refuses a data key id or a key file entry that Strata never writes, and imports nothing', () => {
      const { manifest, artifact } = exportEntries();
      const target = path.join(dir.path, 'victim');
      init(target);
      const record = manifest.backups[0]!;
      const encryption = manifest['encryption'] as { keyFiles: Record<string, unknown>[] };
      for (const evil of [
        { backups: [{ ...record, encryption: { ...record.encryption, keyId: '\u001b]0;owned\u0007' } }] },
        { encryption: { ...encryption, keyFiles: [{ ...encryption.keyFiles[0], id: '../../repository' }] } },
        { encryption: { ...encryption, keyFiles: [{ ...encryption.keyFiles[0], message: 'x'.repeat(200_000) }] } },
      ]) {
        const bundle = path.join(dir.path, 'evil.tar.gz');
        writeFileSync(bundle, tarGz([{ name: 'strata-export.json', body: Buffer.from(JSON.stringify({ ...manifest, ...evil })) }, artifact]));
        const result = strata(['import', bundle, '--repo', target, '--json']);
        assert.equal(json<{ error: { code: string } }>(result).error.code, 'ARTIFACT_HOSTILE', `${JSON.stringify(evil).slice(0, 200)}: ${result.stdout}`);
      }
      assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', target, '--json'])).backups.length, 0);
      assert.equal(readdirSync(path.join(target, 'keys')).length, 1, 'no key file was added');
    });

    it('refuses a record dated in the future', () => {
      const { manifest, artifact } = exportEntries();
      const target = path.join(dir.path, 'victim');
      init(target);
      const future = { ...manifest, backups: [{ ...manifest.backups[0]!, createdAt: '2099-01-01T00:00:00.000Z' }] };
      const bundle = path.join(dir.path, 'future.tar.gz');
      writeFileSync(bundle, tarGz([{ name: 'strata-export.json', body: Buffer.from(JSON.stringify(future)) }, artifact]));
      const error = json<{ error: { code: string; message: string } }>(strata(['import', bundle, '--repo', target, '--json'])).error;
      assert.equal(error.code, 'ARTIFACT_HOSTILE');
      assert.match(error.message, /in the future/);
    });
  });

  it('refuses a backup recorded in the future, which would blind retention and health', () => {
    init();
    const result = strata(['backup', fixture(), '--repo', repo(), '--time', '2062-01-01T00:00:00Z', '--json']);
    assert.equal(result.status, 2);
    assert.match(json<{ error: { message: string } }>(result).error.message, /in the future/);
    assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo(), '--json'])).backups.length, 0);
  });

  it('prune, delete and export prove the passphrase before they touch anything', () => {
    const b = withOneBackup();
    const wrong = { STRATA_PASSPHRASE: 'wrong' };
    assert.equal(strata(['delete', 'latest', '--yes', '--repo', repo()], { env: wrong }).status, 4);
    assert.equal(strata(['prune', '--keep-last', '1', '--repo', repo()], { env: wrong }).status, 4);
    assert.equal(strata(['export', '--all', '--out', path.join(dir.path, 'x.tar.gz'), '--repo', repo()], { env: wrong }).status, 4);
    assert.equal(existsSync(path.join(dir.path, 'x.tar.gz')), false);
    assert.ok(existsSync(path.join(repo(), b.backup.key)));
    assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo(), '--json'])).backups.length, 1);
  });

  it('labels and tags with control characters are refused, and stored ones are shown escaped', () => {
    init();
    const evil = strata(['backup', fixture(), '--repo', repo(), '--label', 'x\u001b[2J\nforged row', '--json']);
    assert.equal(evil.status, 2);
    assert.match(json<{ error: { message: string } }>(evil).error.message, /control characters/);
    assert.equal(strata(['backup', fixture(), '--repo', repo(), '--tag', 'a\rb']).status, 2);
    // A catalog written by something else (an older Strata, a hand edit) may still hold them.
    const b = backup('--label', 'plain');
    const catalogFile = catalogPath(repo());
    const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
    catalog.backups[0].label = 'x\u001b[2J\nforged row';
    writeFileSync(catalogFile, JSON.stringify(catalog));
    const listed = strata(['list', '--repo', repo()]);
    assert.equal(listed.status, 0);
    assert.doesNotMatch(listed.stdout, /\u001b/);
    assert.match(listed.stdout, /x\\x1b\[2J\\x0aforged row/);
    assert.equal(listed.stdout.split('\n').filter((l) => l.includes(b.id)).length, 1);
  });

  it('the undo command of `strata run` is shell-quoted: a path with $(...) runs nothing when pasted', () => {
    init();
    const odd = path.join(dir.path, "it's $(touch pwned) `x`.db");
    copyFileSync(FIXTURE_DB, odd);
    const result = strata(['run', '--db', odd, '--repo', repo(), '--json', '--', process.execPath, '-e', 'process.exit(0)']);
    assert.equal(result.status, 0, result.stderr);
    const { undo } = json<{ undo: string }>(result);
    // Let a shell parse it exactly as a person pasting it would, and print the words it sees.
    const words = spawnSync('sh', ['-c', `printf '%s\\n' ${undo.replace(/^strata /, '')}`], { cwd: dir.path, encoding: 'utf8' });
    assert.equal(words.status, 0);
    assert.ok(words.stdout.split('\n').includes(`sqlite:${odd}`), words.stdout);
    assert.equal(existsSync(path.join(dir.path, 'pwned')), false);
  });

  it('an empty or garbage lock file does not lock the repository forever, and the message says how to clear it', () => {
    init();
    const lock = path.join(repo(), 'locks', 'repository.lock');
    mkdirSync(path.dirname(lock), { recursive: true });
    writeFileSync(lock, '');
    const young = strata(['backup', fixture(), '--repo', repo(), '--lock-wait', '1', '--json']);
    assert.equal(young.status, 5);
    assert.match(json<{ error: { message: string } }>(young).error.message, /not a Strata lock.*remove it by hand/);
    // Once it is older than its limit it counts as abandoned.
    const old = new Date(Date.now() - 10 * 60_000);
    for (const content of ['', 'garbage', '{}']) {
      writeFileSync(lock, content);
      spawnSync('touch', ['-d', old.toISOString(), lock]);
      const result = strata(['backup', fixture(), '--repo', repo(), '--lock-wait', '1', '--json']);
      assert.equal(result.status, 0, `${JSON.stringify(content)}: ${result.stdout}`);
    }
  });

  it('a damaged repository.json is reported as damaged, not as a wrong passphrase', () => {
    init();
    const file = path.join(repo(), 'repository.json');
    const config = JSON.parse(readFileSync(file, 'utf8'));
    config.encryption.keyCheck = 'not an OpenPGP message';
    writeFileSync(file, JSON.stringify(config));
    const result = strata(['list', '--repo', repo(), '--json']);
    assert.equal(result.status, 1);
    assert.match(json<{ error: { message: string } }>(result).error.message, /repository\.json .* is damaged/);
  });

  it('stats --html and metrics --textfile never write through a link planted at a temporary name, in a folder others can write to', () => {
    withOneBackup();
    const shared = path.join(dir.path, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const victim = path.join(dir.path, 'victim');
    writeFileSync(victim, 'not to be overwritten');
    // Another user plants links at the names a run whose process id they can guess would write
    // through (bash's $$ is the process id strata runs under after exec): the names of a `.tmp`
    // beside the file with that id in them, in the forms Strata used.
    const run = (args: string[], file: string): { status: number; stderr: string } => {
      const base = path.basename(file);
      const cli = [CLI, ...args, '--repo', repo()].map((a) => `'${a}'`).join(' ');
      const script = `ln -s '${victim}' '${shared}/${base}.'$$'.tmp'; ln -s '${victim}' '${shared}/.${base}.'$$'.tmp'; exec '${process.execPath}' ${cli}`;
      const result = spawnSync('bash', ['-c', script], { encoding: 'utf8', env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE } });
      return { status: result.status ?? -1, stderr: result.stderr };
    };
    const report = path.join(shared, 'report.html');
    const stats = run(['stats', '--html', report], report);
    assert.equal(stats.status, 0, stats.stderr);
    const textfile = path.join(shared, 'strata.prom');
    const metrics = run(['metrics', '--textfile', textfile], textfile);
    assert.equal(metrics.status, 0, metrics.stderr);
    assert.equal(readFileSync(victim, 'utf8'), 'not to be overwritten');
    assert.match(readFileSync(report, 'utf8'), /^<!DOCTYPE html>/i);
    assert.match(readFileSync(textfile, 'utf8'), /strata_/);
    assert.equal(statSync(textfile).mode & 0o777, 0o644 & ~process.umask());
    assert.ok(!lstatSync(report).isSymbolicLink() && !lstatSync(textfile).isSymbolicLink());
    // Only the planted links are left beside them: no temporary file of strata's.
    assert.deepEqual(readdirSync(shared).filter((name) => !lstatSync(path.join(shared, name)).isSymbolicLink()).sort(), ['report.html', 'strata.prom']);
  });

  it('repository folders are private to their owner', () => {
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    backup();
    const mode = (p: string): number => statSync(p).mode & 0o777;
    assert.equal(mode(repo()), 0o700);
    for (const sub of readdirSync(repo(), { recursive: true, withFileTypes: true })) {
      const full = path.join(sub.parentPath ?? (sub as unknown as { path: string }).path, sub.name);
      assert.equal(mode(full), sub.isDirectory() ? 0o700 : 0o600, full);
    }
  });

  it('plaintext snapshot copies are private (0700 folder, 0600 file), and the copy of a killed run is swept by the next run', async () => {
    init();
    const temp = path.join(dir.path, 'tmp');
    const source = path.join(dir.path, 'secret.db');
    blobDatabase(source, 2048);
    const child = strataAsync(['backup', source, '--repo', repo()], { env: { STRATA_TMPDIR: temp } });
    const exit = finished(child);
    // Wait for the snapshot copy to appear, then look at it and kill the backup mid-way.
    let copy: string | undefined;
    for (let i = 0; i < 6000 && !copy; i++) {
      const folders = existsSync(temp) ? readdirSync(temp).filter((f) => f.startsWith('strata-')) : [];
      for (const folder of folders) {
        const file = readdirSync(path.join(temp, folder)).find((f) => f.startsWith('snapshot-') && f.endsWith('.db'));
        if (file) copy = path.join(temp, folder, file);
      }
      if (!copy) await delay(10);
    }
    assert.ok(copy, 'the backup made no snapshot copy in STRATA_TMPDIR');
    assert.equal(statSync(path.dirname(copy)).mode & 0o777, 0o700);
    assert.equal(statSync(copy).mode & 0o777, 0o600);
    child.kill('SIGKILL');
    await exit;
    assert.ok(existsSync(path.dirname(copy)), 'the killed backup left its copy (as a SIGKILL must)');
    assert.equal(strata(['list', '--repo', repo()], { env: { STRATA_TMPDIR: temp } }).status, 0);
    assert.deepEqual(readdirSync(temp), [], 'the next run swept the dead process\'s plaintext copy');
  });

  describe('crash recovery never deletes a backup the catalog or a manifest still vouches for', () => {
    const deadPid = (): number => Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());

    it('a prune killed between its deletion note and its catalog write does not arm the next prune', () => {
      init();
      const a = backup();
      const b = backup();
      // What a prune killed at that moment leaves: a note naming a, and a catalog that still lists it.
      writeFileSync(path.join(repo(), 'locks', 'pending-deletions.json'), JSON.stringify([a.backup.key]));
      // The next prune keeps everything; a delete of b then runs the same recovery path.
      assert.equal(strata(['prune', '--keep-last', '10', '--repo', repo()]).status, 0);
      assert.equal(strata(['delete', b.id, '--yes', '--repo', repo()]).status, 0);
      assert.ok(existsSync(path.join(repo(), a.backup.key)), 'the artifact of a listed backup was deleted');
      assert.equal(strata(['verify', a.id, '--level', 'quick', '--repo', repo()]).status, 0);
    });

    it('a dead writer\'s pending note plus a lost catalog: the rebuild leaves its artifact out, the next open removes it, other backups stay', () => {
      const a = withOneBackup();
      const b = backup();
      // What a backup killed before its note was deleted leaves (its run reads FAILED in the journal):
      // without a catalog nobody can tell whether its commit happened, so it counts as not made.
      mkdirSync(path.join(repo(), 'pending'), { recursive: true });
      writeFileSync(path.join(repo(), 'pending', `${b.id}-0a1b2c3d.json`), JSON.stringify({ keys: [b.backup.key], cacheKeys: [], pid: deadPid(), host: hostname(), at: new Date().toISOString() }));
      removeCatalog(repo());
      const listed = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json']));
      assert.deepEqual(listed.backups.map((x) => x.id), [a.id]);
      assert.equal(strata(['list', '--repo', repo()]).status, 0);
      assert.ok(existsSync(path.join(repo(), a.backup.key)));
      assert.ok(!existsSync(path.join(repo(), b.backup.key)), 'the artifact of the unfinished run is removed once a catalog exists');
      assert.deepEqual(readdirSync(path.join(repo(), 'pending')), []);
    });

    it('a dead writer\'s pending note whose backup the catalog lists (killed after its commit) keeps the backup', () => {
      const a = withOneBackup();
      mkdirSync(path.join(repo(), 'pending'), { recursive: true });
      writeFileSync(path.join(repo(), 'pending', `${a.id}-0a1b2c3d.json`), JSON.stringify({ keys: [a.backup.key], cacheKeys: [], pid: deadPid(), host: hostname(), at: new Date().toISOString() }));
      assert.deepEqual(json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups.map((x) => x.id), [a.id]);
      assert.equal(strata(['verify', a.id, '--level', 'quick', '--repo', repo()]).status, 0);
      assert.deepEqual(readdirSync(path.join(repo(), 'pending')), []);
    });

    it('an import killed while it copies leaves nothing that a catalog rebuild would resurrect', async () => {
      init();
      // Two databases, so the kill lands after one artifact is complete and while the next is copied.
      for (const name of ['big1', 'big2']) {
        const big = path.join(dir.path, `${name}.db`);
        blobDatabase(big, 1024);
        assert.equal(strata(['backup', big, '--repo', repo()]).status, 0);
      }
      const bundle = path.join(dir.path, 'big.tar.gz');
      assert.equal(strata(['export', '--all', '--out', bundle, '--repo', repo()]).status, 0);
      const target = path.join(dir.path, 'target');
      init(target);
      const child = strataAsync(['import', bundle, '--repo', target]);
      const exit = finished(child);
      const complete = (): string[] => readdirSync(target, { recursive: true }).map(String).filter((f) => /^(backups|staging)\/.+\.gpg$/.test(f));
      for (let i = 0; i < 6000 && complete().length === 0; i++) await delay(5);
      assert.equal(complete().length, 1, 'the kill came too late to test anything');
      child.kill('SIGKILL');
      await exit;
      const listed = json<{ backups: unknown[] }>(strata(['list', '--repo', target, '--json']));
      assert.equal(listed.backups.length, 0);
      removeCatalog(target);
      assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', target, '--json'])).backups.length, 0, 'a rebuilt catalog found an orphan artifact');
      const leftovers = readdirSync(target, { recursive: true }).map(String).filter((f) => f.startsWith('backups/') || f.startsWith('staging/') || f.startsWith('.tmp/'));
      assert.deepEqual(leftovers.filter((f) => /\.(gpg|zst|gz|partial)$/.test(f)), []);
    });

    it('a journal record that does not parse costs only itself, not the records after it', () => {
      init();
      // Records are whole objects (a put never leaves a prefix); a damaged one came from elsewhere.
      writeFileSync(path.join(repo(), 'journal', '20261201T000000000Z-0123456789.json'), '{"at":"2026-12-01T00:00:00.000Z","op":"backup-torn","kind":"bac');
      const b = backup();
      const stats = strata(['stats', '--since', '1d', '--repo', repo(), '--json']);
      assert.equal(stats.status, 0, stats.stderr);
      const rows = json<{ rows: { type: string; succeeded: number }[] }>(stats).rows;
      assert.deepEqual(rows.map((r) => [r.type, r.succeeded]), [[b.backup.type, 1]], 'the backup after the damaged record is in the journal');
    });

    it('a full temporary disk during verify --level full is an error of this machine, not a failed backup', function () {
      const mount = path.join(dir.path, 'small-tmp');
      mkdirSync(mount);
      assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mount]).status, 0, 'this test needs root to mount a small tmpfs');
      try {
        init();
        const big = path.join(dir.path, 'big.db');
        blobDatabase(big, 128);
        const b = json<BackupJson>(strata(['backup', big, '--repo', repo(), '--json']));
        const result = strata(['verify', b.id, '--level', 'full', '--repo', repo(), '--json'], { env: { STRATA_TMPDIR: mount } });
        assert.equal(result.status, 1, result.stdout);
        assert.equal(json<{ error: { code: string } }>(result).error.code, 'NO_SPACE');
        const listed = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
        assert.equal(listed[0]!.verification, null, 'the good backup was recorded as failing verification');
        assert.equal(strata(['verify', b.id, '--level', 'full', '--repo', repo()]).status, 0);
      } finally {
        spawnSync('umount', [mount]);
      }
    });

    it('the temporary file of a lock create cut short by a kill or a full disk is swept', () => {
      init();
      // The lock's content is written to a temporary file first, then linked into place.
      const leftover = path.join(repo(), 'locks', `.repository.lock.${deadPid()}-0a1b2c3d4e5f.partial`);
      mkdirSync(path.dirname(leftover), { recursive: true });
      writeFileSync(leftover, '');
      assert.equal(strata(['list', '--repo', repo()]).status, 0);
      assert.equal(existsSync(leftover), false);
    });
  });

  describe('restores that respect what they replace', () => {
    it('an in-place restore keeps the replaced file\'s owner, group and mode', () => {
      const b = withOneBackup();
      const target = path.join(dir.path, 'live.db');
      copyFileSync(FIXTURE_DB, target);
      chmodSync(target, 0o640);
      // Root restores a database that belongs to another user (65534 is nobody on Debian).
      if (process.getuid?.() === 0) chownSync(target, 65534, 65534);
      const before = statSync(target);
      assert.equal(strata(['restore', b.id, '--to', target, '--force', '--yes', '--repo', repo()]).status, 0);
      const after = statSync(target);
      assert.notEqual(after.ino, before.ino, 'the file was replaced');
      assert.equal(after.mode & 0o7777, 0o640);
      assert.equal(after.uid, before.uid);
      assert.equal(after.gid, before.gid);
    });

    it('a symbolic link as target is refused, not swapped for a file; a dangling one too', () => {
      const b = withOneBackup();
      const real = path.join(dir.path, 'real.db');
      copyFileSync(FIXTURE_DB, real);
      const link = path.join(dir.path, 'link.db');
      symlinkSync(real, link);
      const forced = strata(['restore', b.id, '--to', link, '--force', '--yes', '--repo', repo(), '--json']);
      assert.equal(forced.status, 2);
      assert.match(json<{ error: { message: string } }>(forced).error.message, /is a symbolic link to .*real\.db/);
      assert.ok(lstatSync(link).isSymbolicLink());
      const dangling = path.join(dir.path, 'dangling.db');
      symlinkSync(path.join(dir.path, 'nowhere.db'), dangling);
      assert.equal(strata(['restore', b.id, '--to', dangling, '--repo', repo()]).status, 2);
      assert.ok(lstatSync(dangling).isSymbolicLink());
    });

    it('a folder as target is named as a folder, not told to use --force', () => {
      const b = withOneBackup();
      const folder = path.join(dir.path, 'somewhere');
      mkdirSync(folder);
      for (const extra of [[], ['--force', '--yes']]) {
        const result = strata(['restore', b.id, '--to', folder, '--repo', repo(), '--json', ...extra]);
        assert.equal(result.status, 2);
        assert.match(json<{ error: { message: string } }>(result).error.message, /is a folder/);
      }
    });

    it('a restore over a database another process holds open is refused, nothing changed, until it lets go', () => {
      const b = withOneBackup();
      const target = path.join(dir.path, 'open.db');
      copyFileSync(FIXTURE_DB, target);
      const before = readFileSync(target);
      // An application's idle connection (this test process): in rollback mode it holds no SQLite lock at all.
      const app = new Database(target);
      app.prepare('SELECT count(*) FROM sqlite_master').get();
      try {
        const refused = strata(['restore', b.id, '--to', target, '--force', '--yes', '--repo', repo(), '--json']);
        assert.equal(refused.status, 1, refused.stderr);
        const error = json<{ error: { code: string; message: string } }>(refused).error;
        assert.equal(error.code, 'DATABASE_LOCKED');
        assert.match(error.message, new RegExp(`is open in pid ${process.pid} \\(.+\\); a program that keeps the database open across the restore goes on using the replaced file.*nothing was changed`));
        assert.deepEqual(readFileSync(target), before, 'the target is as it was');
      } finally {
        app.close();
      }
      const result = strata(['restore', b.id, '--to', target, '--force', '--yes', '--repo', repo()]);
      assert.equal(result.status, 0, result.stderr);
    });

    it('leftovers of a killed in-place restore are removed by the next restore of that target', () => {
      const b = withOneBackup();
      const target = path.join(dir.path, 'live.db');
      copyFileSync(FIXTURE_DB, target);
      const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
      const leftovers = [`.live.db.strata-restore-${dead}-0123456789ab`, `.live.db.strata-old-${dead}-0123456789ab`].map((f) => path.join(dir.path, f));
      for (const f of leftovers) writeFileSync(f, 'x'.repeat(4096));
      assert.equal(strata(['restore', b.id, '--to', target, '--force', '--yes', '--repo', repo()]).status, 0);
      for (const f of leftovers) assert.equal(existsSync(f), false, f);
    });

    it('a table restore killed part way leaves only a private side file, which the next restore of that target removes', async () => {
      init();
      const big = path.join(dir.path, 'big.db');
      bigDatabase(big, 96);
      const b = json<BackupJson>(strata(['backup', big, '--repo', repo(), '--json']));
      const target = path.join(dir.path, 'tables.db');
      const sideFiles = (): string[] => readdirSync(dir.path).filter((f) => f.startsWith('.tables.db.strata-'));
      const child = strataAsync(['restore', b.id, '--to', target, '--tables', 'blobs', '--repo', repo()]);
      const exit = finished(child);
      // Killed while it copies the table into the new file beside the target.
      let seen: string[] = [];
      while (child.exitCode === null && (seen = sideFiles()).length === 0) await delay(5);
      child.kill('SIGKILL');
      await exit;
      if (seen.length > 0) {
        for (const f of sideFiles()) assert.equal(statSync(path.join(dir.path, f)).mode & 0o777, 0o600, `${f} holds the backup's rows in plaintext`);
        assert.match(seen[0]!, new RegExp(`^\\.tables\\.db\\.strata-restore-${child.pid}-[0-9a-f]{12}`));
      }
      // Planted as well: what a killed one leaves, whether or not this machine was quick enough above.
      const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
      writeFileSync(path.join(dir.path, `.tables.db.strata-restore-${dead}-0123456789ab`), 'x'.repeat(4096), { mode: 0o600 });
      const again = strata(['restore', b.id, '--to', target, '--tables', 'blobs', '--repo', repo()]);
      assert.equal(again.status, 0, again.stderr);
      assert.deepEqual(sideFiles(), [], 'the next table restore removed what the killed ones left');
      assert.equal(statSync(target).mode & 0o777, 0o600, 'a new file restored from a backup is private, as a whole restore makes it');
    });

    it('a read-only or full target folder is named as the target, not as a damaged backup', () => {
      init();
      const big = path.join(dir.path, 'big.db');
      blobDatabase(big, 96);
      const b = json<BackupJson>(strata(['backup', big, '--repo', repo(), '--json']));
      const readOnly = path.join(dir.path, 'ro');
      const small = path.join(dir.path, 'small');
      mkdirSync(readOnly);
      mkdirSync(small);
      assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', readOnly]).status, 0, 'this test needs root to mount a tmpfs');
      assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]).status, 0);
      try {
        for (const [folder, code] of [[readOnly, 'IO'], [small, 'NO_SPACE']] as const) {
          const result = strata(['restore', b.id, '--to', path.join(folder, 'restored.db'), '--repo', repo(), '--json']);
          assert.equal(result.status, 1);
          const error = json<{ error: { code: string; message: string } }>(result).error;
          assert.equal(error.code, code, error.message);
          assert.match(error.message, new RegExp(`restore: write ${folder}/`));
          assert.doesNotMatch(error.message, /read backups\//);
          assert.deepEqual(readdirSync(folder), []);
        }
      } finally {
        spawnSync('umount', [readOnly]);
        spawnSync('umount', [small]);
      }
    });
  });

  it('a crafted schema-only artifact that ATTACHes a file is refused before any of it runs, in restore and verify', async () => {
    const plain = path.join(dir.path, 'plain');
    assert.equal(strata(['init', '--repo', plain, '--no-encryption', '--compression', 'gzip']).status, 0);
    const b = json<BackupJson>(strata(['backup', fixture(), '--type', 'schema-only', '--repo', plain, '--json']));
    const file = path.join(plain, b.backup.key);
    const entries: { name: string; body: Buffer }[] = [];
    for await (const entry of readTar((async function* () { yield zlib.gunzipSync(readFileSync(file)); })())) {
      const parts: Buffer[] = [];
      for await (const piece of entry.body) parts.push(Buffer.from(piece));
      entries.push({ name: entry.name, body: Buffer.concat(parts) });
    }
    const outside = path.join(dir.path, 'outside.db');
    const evil = `ATTACH DATABASE '${outside}' AS evil;\nCREATE TABLE evil.planted (x);\nCREATE TABLE t (a);\n`;
    const crafted = entries.map((e) => {
      if (e.name === 'schema.sql') return { ...e, body: Buffer.from(evil) };
      if (e.name !== 'manifest.json') return e;
      // As an artifact of an older Strata would be: the schema as SQL text only.
      const manifest = JSON.parse(e.body.toString('utf8'));
      delete manifest.engineMeta.schemaRows;
      return { ...e, body: Buffer.from(JSON.stringify(manifest)) };
    });
    const tar = Buffer.concat([...crafted.flatMap((e) => [Buffer.from(tarHeaderBytes({ name: e.name, size: e.body.length })), e.body, Buffer.from(tarPadding(e.body.length))]), Buffer.from(tarTrailer())]);
    const artifact = zlib.gzipSync(tar);
    writeFileSync(file, artifact);
    const catalogFile = catalogPath(plain);
    const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
    for (const r of catalog.backups) {
      if (r.id !== b.id) continue;
      r.sha256 = createHash('sha256').update(artifact).digest('hex');
      r.storedBytes = artifact.length;
      r.rawBytes = tar.length;
    }
    writeFileSync(catalogFile, JSON.stringify(catalog));
    const restore = strata(['restore', b.id, '--to', path.join(dir.path, 'r.db'), '--repo', plain, '--json']);
    assert.equal(restore.status, 1);
    assert.equal(json<{ error: { code: string } }>(restore).error.code, 'ARTIFACT_HOSTILE');
    const verify = strata(['verify', b.id, '--level', 'full', '--repo', plain, '--json']);
    assert.equal(verify.status, 3);
    assert.equal(existsSync(outside), false, 'the crafted ATTACH wrote a file outside the restore');
    assert.equal(existsSync(path.join(dir.path, 'r.db')), false);
  });

  it('import of a missing, non-gzip or malformed file is a StrataError with its code, also with --json', () => {
    init();
    const cases: [string, Buffer | undefined, number, string][] = [
      ['missing.tar.gz', undefined, 2, 'USAGE'],
      ['text.tar.gz', Buffer.from('hello\n'), 1, 'ARTIFACT_FOREIGN'],
      ['text.zip', Buffer.from('hello\n'), 1, 'ARTIFACT_FOREIGN'],
    ];
    // A zip end record whose directory size (0xFFFFFFF0) once made the allocation abort the process.
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(1, 10);
    end.writeUInt32LE(0xfffffff0, 12);
    cases.push(['huge-directory.zip', end, 1, 'ARTIFACT_CORRUPT']);
    for (const [name, body, status, code] of cases) {
      const file = path.join(dir.path, name);
      if (body) writeFileSync(file, body);
      const result = strata(['import', file, '--repo', repo(), '--json']);
      assert.equal(result.status, status, `${name}: ${result.stderr}`);
      assert.equal(json<{ error: { code: string } }>(result).error.code, code, name);
      assert.doesNotMatch(result.stderr, /This is a bug|\n\s+at /, `${name} printed a stack trace`);
    }
  });

  it('a backup that meets a held lock waits or fails before it reads the database, not after', () => {
    init();
    mkdirSync(path.join(repo(), 'locks'), { recursive: true });
    // Held by this (live) test process.
    writeFileSync(path.join(repo(), 'locks/repository.lock'), JSON.stringify({ token: 'held', pid: process.pid, host: hostname(), operation: 'prune', acquiredAt: new Date().toISOString() }));
    // The database does not exist: a backup that did its work first would fail on that (exit 1);
    // one that checks the lock first reports the lock (exit 5) without having read anything.
    const result = strata(['backup', path.join(dir.path, 'not-yet.db'), '--repo', repo(), '--lock-wait', '1', '--json']);
    assert.equal(result.status, 5, result.stdout);
    assert.equal(json<{ error: { code: string } }>(result).error.code, 'REPO_LOCKED');
  });

  it('delete --dry-run lists what --with-dependents would remove and warns about the newest good backup', () => {
    init();
    const full = backup();
    const inc = json<BackupJson>(strata(['backup', fixture(), '--type', 'incremental', '--repo', repo(), '--json']));
    assert.equal(strata(['verify', inc.id, '--repo', repo()]).status, 0);
    const dry = strata(['delete', full.id, '--with-dependents', '--dry-run', '--repo', repo()]);
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`would delete 2 backup\\(s\\)`));
    assert.match(dry.stdout, new RegExp(`warning: ${inc.id} is the newest good restore point of app \\(verified`));
    assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo(), '--json'])).backups.length, 2, 'a dry run deleted something');
    const done = strata(['delete', full.id, '--with-dependents', '--yes', '--repo', repo()]);
    assert.equal(done.status, 0);
    assert.match(done.stderr, new RegExp(`warning: deleting ${inc.id} is the newest good restore point`));
  });

  it('a catalog rebuilt after it was deleted keeps every verification result', () => {
    init();
    const a = backup();
    const b = backup();
    assert.equal(strata(['verify', a.id, '--level', 'full', '--repo', repo()]).status, 0);
    assert.equal(strata(['verify', b.id, '--repo', repo()]).status, 0);
    const before = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
    removeCatalog(repo());
    const after = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
    assert.deepEqual(
      after.map((x) => [x.id, x.verification?.outcome, x.verification?.level, x.verification?.checks.length]),
      before.map((x) => [x.id, x.verification?.outcome, x.verification?.level, x.verification?.checks.length]),
    );
    assert.equal(after.find((x) => x.id === a.id)!.verification!.level, 'full');
  });
});
