import assert from 'node:assert/strict';
import { fork, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { EngineRegistry, LocalStorage, Passphrase, SqliteEngine, StrataError, initRepository, openRepository, writeCatalog, readCatalog } from '@strata/sdk';
import type { Abortable, BackupRecord, GetOptions, ObjectInfo } from '@strata/sdk';
import { bigDatabase, buildRichDatabase } from './helpers/databases.js';
import { FIXTURE_DB, TEST_PASSPHRASE, copyInto, finished, json, sqliteDump, strata, strataAsync, useSuiteDir, useTempDir, catalogPath, warningsOf } from './helpers/env.js';
import type { CliResult } from './helpers/env.js';
import { DiskFullStorage } from './helpers/faulty-storage.js';

interface BackupJson {
  id: string;
  backup: BackupRecord;
}

/** One raw ustar header + body, for crafting archives Strata itself would never write. */
function rawTarEntry(name: string, body: Buffer, type = '0', link = ''): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(body.length.toString(8).padStart(11, '0') + '\0', 124);
  header.write('00000000000\0', 136);
  header.write(type, 156);
  header.write(link, 157, 100, 'utf8');
  header.write('ustar\0', 257);
  header.write('00', 263);
  header.fill(' ', 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([header, body, pad]);
}

describe('bad input gets a clear error and nothing is lost', () => {
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');
  const built = useSuiteDir();
  /** A new repository for the test: `strata init` runs once per set of options, each test gets a copy. */
  const init = (...extra: string[]): void => {
    const made = path.join(built.path, extra.join(' ') || 'default');
    if (!existsSync(made)) assert.equal(strata(['init', '--repo', made, ...extra]).status, 0);
    copyInto(made, repo());
  };
  const fixture = (name = 'app.db'): string => {
    const file = path.join(dir.path, name);
    copyFileSync(FIXTURE_DB, file);
    return file;
  };
  const backupId = (db: string): string => {
    const result = strata(['backup', db, '--repo', repo(), '--json']);
    assert.equal(result.status, 0, result.stderr);
    return json<BackupJson>(result).id;
  };
  const artifactOf = (id: string): string => {
    const list = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json']));
    return path.join(repo(), list.backups.find((b) => b.id === id)!.key);
  };
  const leftovers = (): string[] => (existsSync(path.join(repo(), '.tmp')) ? readdirSync(path.join(repo(), '.tmp')) : []);

  describe('databases', () => {
    it('a restore target of another engine is named without its password', () => {
      init();
      const id = backupId(fixture());
      const result = strata(['restore', id, '--repo', repo(), '--to', 'postgres://app:S3cret-In-Url@127.0.0.1:5432/shop']);
      assert.equal(result.status, 2);
      assert.match(result.stderr, /restore: postgres:\/\/app@127\.0\.0\.1:5432\/shop is not a sqlite target/);
      assert.doesNotMatch(result.stderr + result.stdout, /S3cret-In-Url/);
    });

    it('a --table-lock-wait that is not whole seconds from 1s to a day is refused before anything is read', () => {
      init();
      const id = backupId(fixture());
      const target = path.join(dir.path, 'lock-wait.db');
      for (const [wait, message] of [
        ['0s', /whole seconds from 1s to 1d/],
        ['2d', /whole seconds from 1s to 1d/],
        ['1mo', /whole seconds from 1s to 1d/],
        ['1.5s', /is not a duration/],
        ['soon', /is not a duration/],
      ] as const) {
        const result = strata(['restore', id, '--repo', repo(), '--to', target, '--table-lock-wait', wait]);
        assert.equal(result.status, 2, `${wait}: ${result.stderr}`);
        assert.match(result.stderr, /restore: --table-lock-wait/);
        assert.match(result.stderr, message);
        assert.ok(!existsSync(target), `${wait}: nothing was restored`);
      }
      assert.equal(strata(['restore', id, '--repo', repo(), '--to', target, '--table-lock-wait', '1min']).status, 0);
    });

    it('a missing database file', () => {
      init();
      const result = strata(['backup', path.join(dir.path, 'nope.db'), '--repo', repo()]);
      assert.equal(result.status, 1);
      assert.match(result.stderr, /database file .*nope\.db does not exist/);
    });

    it('a file that is not SQLite', () => {
      init();
      const file = path.join(dir.path, 'notes.db');
      writeFileSync(file, 'these are my notes, not a database\n'.repeat(100));
      const result = strata(['backup', file, '--repo', repo(), '--json']);
      assert.equal(result.status, 1);
      assert.equal(json<{ error: { code: string } }>(result).error.code, 'DATABASE_INVALID');
      assert.match(result.stderr, /is not a SQLite database/);
    });

    it('a database name nobody backed up, in prune and verify --all, is refused instead of finding nothing to do', () => {
      init();
      backupId(fixture());
      backupId(fixture());
      for (const args of [['prune', 'ap', '--keep-last', '1'], ['verify', '--all', '--db', 'ap']]) {
        const result = strata([...args, '--repo', repo(), '--json']);
        assert.equal(result.status, 1, `${args.join(' ')}: ${result.stdout}${result.stderr}`);
        const error = json<{ error: { code: string; message: string } }>(result).error;
        assert.equal(error.code, 'BACKUP_NOT_FOUND');
        assert.match(error.message, new RegExp(`^${args[0]}: .* holds no backups of ap, and the config names no such database \\(known: app\\)$`));
      }
      assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo(), '--json'])).backups.length, 2, 'nothing was pruned');
      const pruned = strata(['prune', 'app', '--keep-last', '1', '--repo', repo()]);
      assert.equal(pruned.status, 0, pruned.stderr);
      assert.match(pruned.stdout, /kept 1, removed 1 backup\(s\)/);
    });

    it('a URL no engine understands is named without its password', () => {
      init();
      const result = strata(['backup', 'postgress://app:typo-secret-pw@db.example:5432/shop', '--repo', repo(), '--name', 'shop', '--json']);
      assert.equal(result.status, 1);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'ENGINE_UNKNOWN');
      assert.match(error.message, /postgress:\/\/app:\*\*\*@db\.example:5432\/shop/);
      assert.ok(!(result.stdout + result.stderr).includes('typo-secret-pw'), 'the password is never printed');
    });

    it('a database locked by a writer', async () => {
      const file = path.join(dir.path, 'locked.db');
      buildRichDatabase(file, { rows: 10, wal: false });
      const holder = path.join(dir.path, 'holder.cjs');
      writeFileSync(
        holder,
        `const Database = require(${JSON.stringify(createRequire(import.meta.url).resolve('better-sqlite3'))});
         const db = new Database(process.argv[2]);
         db.exec('BEGIN EXCLUSIVE'); db.exec("INSERT INTO log(message) VALUES ('uncommitted')");
         process.send('locked'); setInterval(() => {}, 1000);`,
      );
      const child = fork(holder, [file], { stdio: 'ignore' });
      await new Promise<void>((resolve) => child.once('message', () => resolve()));
      try {
        const passphrase = new Passphrase('x');
        await initRepository(repo(), { encryption: 'compat', passphrase });
        const engines = new EngineRegistry().register(new SqliteEngine({ busyTimeoutMs: 300 }));
        const r = await openRepository(repo(), { passphrase, engines, tempDir: path.join(dir.path, 'tmp') });
        await assert.rejects(r.backup(file, { database: 'locked' }), (err: Error & { code: string }) => {
          assert.equal(err.code, 'DATABASE_LOCKED');
          assert.match(err.message, /locked by another connection/);
          return true;
        });
        const ops = await r.journal.operations();
        assert.equal(ops.at(-1)!.status, 'FAILED');
        assert.equal(ops.at(-1)!.last.error!.code, 'DATABASE_LOCKED');
      } finally {
        child.kill();
      }
    });
  });

  describe('repositories', () => {
    it('a missing repository', () => {
      const result = strata(['list', '--repo', path.join(dir.path, 'nowhere')]);
      assert.equal(result.status, 6, 'exit 6: no repository there');
      assert.match(result.stderr, /does not exist; if it is on a disk or share that is not mounted, mount it; for a new repository, run `strata init/);
    });

    it('a folder that was never initialised', () => {
      mkdirSync(repo());
      writeFileSync(path.join(repo(), 'unrelated.txt'), 'hello');
      const result = strata(['backup', fixture(), '--repo', repo()]);
      assert.equal(result.status, 6, 'exit 6: no repository there');
      assert.match(result.stderr, /is not a Strata repository/);
      assert.deepEqual(readdirSync(repo()), ['unrelated.txt'], 'nothing was written into the folder');
    });

    it('a repository that goes away while a program has it open (a disk unmounted) is not made again, empty, for writes to go into', async () => {
      init();
      const db = fixture();
      backupId(db);
      const passphrase = new Passphrase(TEST_PASSPHRASE);
      const open = await openRepository(repo(), { passphrase, tempDir: path.join(dir.path, 'tmp') });
      assert.equal((await open.list()).length, 1);
      const unmounted = path.join(dir.path, 'unmounted');
      renameSync(repo(), unmounted);
      const gone = (err: Error & { code?: string }): boolean => {
        assert.equal(err.code, 'REPO_NOT_FOUND', err.message);
        assert.match(err.message, /no longer holds repository\.json, which it held when it was opened: its disk was unmounted, or the folder was moved or deleted/);
        return true;
      };
      // A catalog to rebuild, a lock to take, a backup to write: each would have made the folder.
      await assert.rejects(open.list(), gone);
      await assert.rejects(open.backup(db, { database: 'app', type: 'incremental' }), gone);
      await assert.rejects(open.verify({ database: 'app' }, { level: 'quick' }), gone);
      assert.equal(existsSync(repo()), false, 'the folder was not made again');
      // A repository that is a mount point leaves an empty folder when its disk is unmounted.
      mkdirSync(repo());
      await assert.rejects(open.backup(db, { database: 'app', type: 'incremental' }), gone);
      assert.deepEqual(readdirSync(repo()), [], 'nothing was written into the empty mount point');
      rmSync(repo(), { recursive: true });
      // Back in place, the same program goes on.
      renameSync(unmounted, repo());
      const record = await open.backup(db, { database: 'app', type: 'incremental', autoFull: true });
      assert.equal((await open.list()).at(-1)!.id, record.id);
    });

    it('metrics --textfile into a folder that does not exist says so, without a stack trace', () => {
      init();
      const result = strata(['metrics', '--repo', repo(), '--textfile', path.join(dir.path, 'no-such-folder', 'strata.prom')]);
      assert.equal(result.status, 1);
      assert.match(result.stderr, /^strata: metrics: cannot write .*no-such-folder\/strata\.prom \(ENOENT\); give --textfile a file in a folder you can write to/);
      assert.doesNotMatch(result.stderr, /unexpected error|    at /);
    });

    it('a deleted catalog is rebuilt from the artifacts', () => {
      init();
      const db = fixture();
      const first = backupId(db);
      strata(['verify', first, '--repo', repo()]);
      const second = backupId(db);
      const before = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
      writeFileSync(catalogPath(repo()), '{ this is not json');
      const after = json<{ backups: BackupRecord[] }>(strata(['list', '--repo', repo(), '--json'])).backups;
      const strip = (b: BackupRecord) => ({ ...b, verification: null, compression: null });
      assert.deepEqual(after.map(strip), before.map(strip));
      assert.deepEqual(after.map((b) => b.id), [first, second]);
      const restored = path.join(dir.path, 'r.db');
      assert.equal(strata(['restore', second, '--repo', repo(), '--to', restored]).status, 0);
      assert.equal(sqliteDump(restored), sqliteDump(db));
    });

    it('a repository of a future format version', () => {
      init();
      const config = JSON.parse(readFileSync(path.join(repo(), 'repository.json'), 'utf8'));
      writeFileSync(path.join(repo(), 'repository.json'), JSON.stringify({ ...config, version: 99 }));
      const result = strata(['list', '--repo', repo()]);
      assert.equal(result.status, 1);
      assert.match(result.stderr, /newer Strata/);
    });
  });

  describe('passphrases', () => {
    it('a wrong passphrase is refused before any byte of the target is touched', () => {
      init();
      const db = fixture();
      const id = backupId(db);
      const target = path.join(dir.path, 'target.db');
      writeFileSync(target, 'the current data');
      const result = strata(['restore', id, '--repo', repo(), '--to', target, '--force', '--yes'], { env: { STRATA_PASSPHRASE: 'not the passphrase' } });
      assert.equal(result.status, 4);
      assert.match(result.stderr, /wrong passphrase/);
      assert.equal(readFileSync(target, 'utf8'), 'the current data');
      assert.deepEqual(readdirSync(dir.path).filter((f) => f.startsWith('.target')), []);
    });

    it('a missing passphrase for an encrypted repository', () => {
      init();
      const result = strata(['backup', fixture(), '--repo', repo()], { env: { STRATA_PASSPHRASE: undefined } });
      assert.equal(result.status, 4);
      assert.match(result.stderr, /STRATA_PASSPHRASE/);
    });
  });

  describe('damaged artifacts', () => {
    it('one flipped byte fails checksum-match and the restore writes nothing', () => {
      init();
      const db = fixture();
      const id = backupId(db);
      const file = artifactOf(id);
      const bytes = readFileSync(file);
      bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
      writeFileSync(file, bytes);
      const verify = strata(['verify', id, '--repo', repo(), '--json']);
      assert.equal(verify.status, 3);
      const checks = json<{ reports: { checks: { name: string; status: string; reason: string }[] }[] }>(verify).reports[0]!.checks;
      assert.equal(checks.find((c) => c.name === 'checksum-match')!.status, 'failed');
      assert.equal(checks.find((c) => c.name === 'file-accessibility')!.status, 'passed');
      const target = path.join(dir.path, 'out.db');
      const restore = strata(['restore', id, '--repo', repo(), '--to', target]);
      assert.equal(restore.status, 1);
      assert.match(restore.stderr, /damaged|SHA-256/);
      assert.equal(existsSync(target), false);
      assert.deepEqual(readdirSync(dir.path).filter((f) => f.includes('strata-restore')), []);
    });

    it('a truncated artifact fails file-accessibility and is refused before restoring', () => {
      init();
      const id = backupId(fixture());
      const file = artifactOf(id);
      truncateSync(file, Math.floor(statSync(file).size / 3));
      const verify = strata(['verify', id, '--repo', repo(), '--json']);
      assert.equal(verify.status, 3);
      const checks = json<{ reports: { checks: { name: string; status: string; reason: string }[] }[] }>(verify).reports[0]!.checks;
      assert.equal(checks[0]!.name, 'file-accessibility');
      assert.equal(checks[0]!.status, 'failed');
      assert.match(checks[0]!.reason, /truncated or replaced/);
      const target = path.join(dir.path, 'out.db');
      assert.equal(strata(['restore', id, '--repo', repo(), '--to', target]).status, 1);
      assert.equal(existsSync(target), false);
    });

    it('a truncated artifact is also caught when the catalog was rebuilt from it', () => {
      init('--no-encryption', '--compression', 'gzip');
      const id = backupId(fixture());
      const file = artifactOf(id);
      truncateSync(file, Math.floor(statSync(file).size / 2));
      writeFileSync(catalogPath(repo()), '');
      const listed = strata(['list', '--repo', repo(), '--json']);
      const list = json<{ backups: BackupRecord[] }>(listed);
      assert.deepEqual(list.backups, [], 'an artifact that does not read to its end is not listed as a restore point');
      // Unlisted, it would be out of every verify and health check: the rebuild says so.
      assert.match(listed.stderr, new RegExp(`warning: the catalog was rebuilt without ${path.relative(repo(), file)}: .*; it stays in the repository, unlisted`));
    });

    for (const [label, entry] of [
      ['a ../ path', rawTarEntry('../escaped.txt', Buffer.from('gotcha'))],
      ['an absolute path', rawTarEntry('/tmp/strata-absolute-escape.txt', Buffer.from('gotcha'))],
      ['a symbolic link', rawTarEntry('data/main.db', Buffer.alloc(0), '2', '/etc/passwd')],
      ['a hard link', rawTarEntry('data/main.db', Buffer.alloc(0), '1', '../outside')],
    ] as const) {
      it(`a tar entry with ${label} is refused and nothing is written outside the target`, () => {
        init('--no-encryption', '--compression', 'none');
        const id = backupId(fixture());
        const file = artifactOf(id);
        // A hostile artifact whose hash the catalog agrees with (as after a rebuild from it).
        const hostile = Buffer.concat([entry, rawTarEntry('manifest.json', Buffer.from('{}')), Buffer.alloc(1024)]);
        writeFileSync(file, hostile);
        const catalogFile = catalogPath(repo());
        const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
        catalog.backups[0].sha256 = createHash('sha256').update(hostile).digest('hex');
        catalog.backups[0].storedBytes = hostile.length;
        catalog.backups[0].rawBytes = hostile.length;
        writeFileSync(catalogFile, JSON.stringify(catalog));
        const outDir = path.join(dir.path, 'out');
        mkdirSync(outDir);
        const result = strata(['restore', id, '--repo', repo(), '--to', path.join(outDir, 'x.db'), '--json']);
        assert.equal(result.status, 1);
        assert.equal(json<{ error: { code: string } }>(result).error.code, 'ARTIFACT_HOSTILE');
        assert.deepEqual(readdirSync(outDir), []);
        assert.equal(existsSync(path.join(dir.path, 'escaped.txt')), false);
        assert.equal(existsSync('/tmp/strata-absolute-escape.txt'), false);
        const verify = strata(['verify', id, '--repo', repo()]);
        assert.equal(verify.status, 3);
      });
    }

    for (const [label, entries, message] of [
      ['a manifest that is not JSON', [['manifest.json', Buffer.from('{ "format": "strata-artifact", broken')]], /manifest is not valid JSON/],
      ['a manifest with a giant field', [['manifest.json', Buffer.from(JSON.stringify({ format: 'strata-artifact', formatVersion: 1, id: 'x'.repeat(100_000) }))]], /manifest field id is missing or malformed/],
      ['a foreign archive (no Strata manifest)', [['manifest.json', Buffer.from('{"hello": "world"}')]], /not a Strata artifact/],
    ] as const) {
      it(`${label} fails checksum-match with a clear reason and restores nothing`, () => {
        init('--no-encryption', '--compression', 'none');
        const id = backupId(fixture());
        const file = artifactOf(id);
        const tar = Buffer.concat([...entries.map(([name, body]) => rawTarEntry(name, body)), Buffer.alloc(1024)]);
        writeFileSync(file, tar);
        const catalogFile = catalogPath(repo());
        const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
        Object.assign(catalog.backups[0], { sha256: createHash('sha256').update(tar).digest('hex'), storedBytes: tar.length, rawBytes: tar.length });
        writeFileSync(catalogFile, JSON.stringify(catalog));
        const verify = strata(['verify', id, '--repo', repo(), '--json']);
        assert.equal(verify.status, 3);
        const check = json<{ reports: { checks: { name: string; status: string; reason: string }[] }[] }>(verify).reports[0]!.checks[1]!;
        assert.equal(check.status, 'failed');
        assert.match(check.reason, message);
        const target = path.join(dir.path, 'never.db');
        assert.equal(strata(['restore', id, '--repo', repo(), '--to', target]).status, 1);
        assert.equal(existsSync(target), false);
      });
    }

    it('a decompression bomb is stopped at the size the catalog recorded', () => {
      init('--no-encryption', '--compression', 'gzip');
      const id = backupId(fixture());
      const file = artifactOf(id);
      // 64 MiB of zeros compress to ~64 KiB: far more than the archive the catalog describes.
      const bomb = zlib.gzipSync(Buffer.concat([rawTarEntry('README.txt', Buffer.alloc(64 * 1024 * 1024)), Buffer.alloc(1024)]));
      writeFileSync(file, bomb);
      const catalogFile = catalogPath(repo());
      const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
      Object.assign(catalog.backups[0], { sha256: createHash('sha256').update(bomb).digest('hex'), storedBytes: bomb.length });
      writeFileSync(catalogFile, JSON.stringify(catalog));
      const result = strata(['restore', id, '--repo', repo(), '--to', path.join(dir.path, 'x.db'), '--json']);
      assert.equal(result.status, 1);
      const error = json<{ error: { code: string; message: string } }>(result).error;
      assert.equal(error.code, 'ARTIFACT_HOSTILE');
      assert.match(error.message, /decompresses to more than the \d+ bytes recorded/);
    });

    it('a manifest of a future format version is refused with a clear message', () => {
      init('--no-encryption', '--compression', 'none');
      const id = backupId(fixture());
      const file = artifactOf(id);
      const tar = readFileSync(file);
      const at = tar.indexOf('"formatVersion": 1');
      tar.write('"formatVersion": 9', at);
      writeFileSync(file, tar);
      const catalogFile = catalogPath(repo());
      const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
      catalog.backups[0].sha256 = createHash('sha256').update(tar).digest('hex');
      writeFileSync(catalogFile, JSON.stringify(catalog));
      const result = strata(['restore', id, '--repo', repo(), '--to', path.join(dir.path, 'x.db')]);
      assert.equal(result.status, 1);
      assert.match(result.stderr, /format version 9 is not supported.*upgrade Strata/);
      // A verify by a Strata older than the backup's writer (one machine of a fleet not upgraded
      // yet) is an error, not a failed verification: one recorded would make every later restore
      // pass this good backup over, and health report it.
      const verified = strata(['verify', id, '--repo', repo(), '--json']);
      assert.equal(verified.status, 1, verified.stderr);
      const error = json<{ error: { code: string; message: string } }>(verified).error;
      assert.equal(error.code, 'ARTIFACT_FOREIGN');
      assert.match(error.message, new RegExp(`verify ${id}: was written by a newer Strata \\(.*format version 9 is not supported.*\\); nothing was recorded against it`));
      assert.equal(JSON.parse(readFileSync(catalogPath(repo()), 'utf8')).backups[0].verification, null);
      const health = json<{ checks: { check: string; status: string }[] }>(strata(['health', '--repo', repo(), '--json']));
      assert.equal(health.checks.find((c) => c.check === 'failed-verifications')!.status, 'ok');
      // verify --all goes on past it: a backup of this Strata's format is verified, this one named as not verified.
      const current = backupId(fixture('other.db'));
      const all = strata(['verify', '--all', '--repo', repo(), '--json']);
      assert.equal(all.status, 1, all.stderr);
      const outcome = json<{ outcome: string; reports: { backupId: string; outcome: string }[]; unverified: { backupId: string; code: string }[] }>(all);
      assert.equal(outcome.outcome, 'incomplete');
      assert.deepEqual(outcome.reports.map((r) => [r.backupId, r.outcome]), [[current, 'passed']]);
      assert.deepEqual(outcome.unverified.map((u) => [u.backupId, u.code]), [[id, 'ARTIFACT_FOREIGN']]);
      const text = strata(['verify', '--all', '--repo', repo()]);
      assert.equal(text.status, 1, text.stderr);
      assert.match(text.stdout, /1 of 2 backup\(s\) passed; 1 written by a newer Strata could not be verified \(upgrade Strata\)/);
    });
    it('a chunking this Strata does not know is a newer writer\'s, not damage: verify records nothing', () => {
      init('--no-encryption', '--compression', 'none');
      const id = backupId(fixture());
      const file = artifactOf(id);
      // The same length, so the tar's entries keep their sizes: only the catalog's SHA-256 changes.
      const tar = Buffer.from(readFileSync(file).toString('latin1').replaceAll('"kind":"fixed"', '"kind":"fancy"').replaceAll('"kind": "fixed"', '"kind": "fancy"'), 'latin1');
      assert.ok(tar.includes('"kind":"fancy"'), 'the stream descriptor names the new chunking');
      writeFileSync(file, tar);
      const catalogFile = catalogPath(repo());
      const catalog = JSON.parse(readFileSync(catalogFile, 'utf8'));
      catalog.backups[0].sha256 = createHash('sha256').update(tar).digest('hex');
      writeFileSync(catalogFile, JSON.stringify(catalog));
      const verified = strata(['verify', id, '--repo', repo(), '--json']);
      assert.equal(verified.status, 1, verified.stderr);
      const error = json<{ error: { code: string; message: string } }>(verified).error;
      assert.equal(error.code, 'ARTIFACT_FOREIGN');
      assert.match(error.message, /was written by a newer Strata \(chunking "fancy" is not supported by this version of Strata; upgrade Strata\)/);
      assert.equal(JSON.parse(readFileSync(catalogPath(repo()), 'utf8')).backups[0].verification, null);
    });
  });

  describe('full disks', () => {
    it('a repository disk that fills up mid-backup fails cleanly and keeps earlier backups', async () => {
      const passphrase = new Passphrase(TEST_PASSPHRASE);
      const storage = new DiskFullStorage(repo(), Number.MAX_SAFE_INTEGER);
      await initRepository(storage, { encryption: 'compat', passphrase });
      const r = await openRepository(storage, { passphrase, tempDir: path.join(dir.path, 'tmp') });
      const small = fixture();
      const kept = await r.backup(small, { database: 'app' });
      const big = path.join(dir.path, 'big.db');
      bigDatabase(big, 8);
      storage.setBudget(2 * 1024 * 1024);
      await assert.rejects(r.backup(big, { database: 'big' }), (err: Error & { code: string }) => {
        assert.equal(err.code, 'NO_SPACE');
        assert.match(err.message, /no space left/);
        return true;
      });
      storage.setBudget(Number.MAX_SAFE_INTEGER);
      assert.deepEqual((await r.list()).map((b) => b.id), [kept.id]);
      assert.deepEqual(leftovers(), []);
      assert.deepEqual(readdirSync(path.join(repo(), 'backups')), ['app']);
      const [report] = await r.verify({ id: kept.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed');
      const failed = (await r.journal.operations()).filter((o) => o.kind === 'backup' && o.status === 'FAILED');
      assert.equal(failed.length, 1);
      assert.equal(failed[0]!.last.error!.code, 'NO_SPACE');
    });

    it('a real filesystem that is too small (tmpfs) for the backup or the restore', function () {
      if (process.getuid?.() !== 0) {
        console.log('      skipping: mounting a small tmpfs needs root (the simulated full disk above covers the same paths)');
        this.skip();
      }
      const mount = path.join(dir.path, 'small');
      mkdirSync(mount);
      const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mount]);
      if (mounted.status !== 0) {
        console.log(`      skipping: this machine refuses to mount a tmpfs (${mounted.stderr.toString().trim()})`);
        this.skip();
      }
      try {
        const smallRepo = path.join(mount, 'repo');
        assert.equal(strata(['init', '--repo', smallRepo]).status, 0);
        const kept = json<BackupJson>(strata(['backup', fixture(), '--repo', smallRepo, '--json'])).id;
        const big = path.join(dir.path, 'big.db');
        bigDatabase(big, 6);
        const result = strata(['backup', big, '--repo', smallRepo, '--json']);
        assert.equal(result.status, 1);
        assert.equal(json<{ error: { code: string } }>(result).error.code, 'NO_SPACE');
        assert.deepEqual(readdirSync(path.join(smallRepo, '.tmp')), []);
        assert.equal(strata(['verify', kept, '--repo', smallRepo, '--level', 'full']).status, 0);
        // Restore the big database into the small filesystem: fails, leaves nothing behind.
        const bigRepo = path.join(dir.path, 'bigrepo');
        assert.equal(strata(['init', '--repo', bigRepo]).status, 0);
        const bigId = json<BackupJson>(strata(['backup', big, '--repo', bigRepo, '--json'])).id;
        const restore = strata(['restore', bigId, '--repo', bigRepo, '--to', path.join(mount, 'restored.db'), '--json']);
        assert.equal(restore.status, 1);
        assert.equal(json<{ error: { code: string } }>(restore).error.code, 'NO_SPACE');
        assert.deepEqual(readdirSync(mount).sort(), ['repo']);
        // A temporary folder too small for the copy a backup reads from: SQLite's "database or
        // disk is full" is about the copy, and the message says so, not the source's disk.
        const tempBackup = strata(['backup', big, '--repo', bigRepo], { env: { STRATA_TMPDIR: mount } });
        assert.equal(tempBackup.status, 1);
        assert.match(tempBackup.stderr, new RegExp(`the temporary folder ${mount}/\\S+ ran out of space .*database itself is untouched.*STRATA_TMPDIR`));
        assert.deepEqual(readdirSync(mount).sort(), ['repo']);
      } finally {
        spawnSync('umount', [mount]);
      }
    });
  });

  describe('a process killed in the middle of a backup', () => {
    it('leaves the repository consistent, earlier backups restorable, and the run marked FAILED (interrupted)', async function () {
      this.timeout(300_000);
      init();
      const small = fixture();
      const kept = backupId(small);
      const big = path.join(dir.path, 'big.db');
      bigDatabase(big, 48);
      const child = strataAsync(['backup', big, '--repo', repo()]);
      const done = finished(child);
      // Wait until the artifact is being written (its temporary file, not that of one of the small
      // objects before it, such as the journal's record or the note that claims the backup's id,
      // pending/big_full_….json), then kill without warning.
      const writingArtifact = (): boolean => leftovers().some((f) => /^big_full_.*\.tar\.zst\.gpg\./.test(f));
      let ended: CliResult | undefined;
      void done.then((result) => (ended = result));
      const started = Date.now();
      let writing = false;
      // Polled every few milliseconds rather than in a tight loop, which took a core from the
      // backup it waits for on a loaded machine; the artifact of 48 MiB takes far longer to write.
      while (!(writing = writingArtifact()) && ended === undefined && Date.now() - started < 240_000) await new Promise((r) => setTimeout(r, 5));
      assert.ok(writing, `the backup started writing its artifact (${ended ? `it ended first, exit ${ended.status}: ${ended.stderr}` : 'not within 4 minutes'})`);
      child.kill('SIGKILL');
      const exit = await done;
      assert.equal(exit.signal, 'SIGKILL');

      const passphrase = new Passphrase(TEST_PASSPHRASE);
      const r = await openRepository(repo(), { passphrase, tempDir: path.join(dir.path, 'tmp') });
      assert.deepEqual(leftovers(), [], 'opening the repository sweeps the dead writer\'s temp file');
      assert.deepEqual((await r.list()).map((b) => b.id), [kept]);
      assert.deepEqual(readdirSync(path.join(repo(), 'backups')), ['app']);
      const backups = (await r.journal.operations()).filter((o) => o.kind === 'backup');
      assert.equal(backups.at(-1)!.status, 'FAILED');
      assert.equal(backups.at(-1)!.interrupted, true);
      const [report] = await r.verify({ id: kept }, { level: 'full' });
      assert.equal(report!.outcome, 'passed');
      const again = strata(['backup', big, '--repo', repo()]);
      assert.equal(again.status, 0, again.stderr);
    });
  });

  it('a storage that fails to answer while verify reads (a server error) is an error, recorded against no backup', async () => {
    init();
    const id = backupId(fixture());
    assert.equal(strata(['verify', id, '--repo', repo()]).status, 0);
    const before = JSON.parse(readFileSync(catalogPath(repo()), 'utf8')).backups[0].verification;
    /** Local storage whose reads of artifacts fail as an S3 server's 500 does. */
    class FailingStorage extends LocalStorage {
      override async get(key: string, options?: GetOptions): Promise<AsyncIterable<Uint8Array>> {
        if (key.startsWith('backups/')) throw new StrataError('IO', `storage: read ${key}: InternalError (HTTP 500)`);
        return super.get(key, options);
      }
    }
    const r = await openRepository(new FailingStorage(repo()), { passphrase: new Passphrase(TEST_PASSPHRASE), tempDir: path.join(dir.path, 'tmp') });
    await assert.rejects(r.verify({ id }, { level: 'quick' }), (err: Error & { code?: string }) => err.code === 'IO' && /HTTP 500/.test(err.message));
    assert.deepEqual(JSON.parse(readFileSync(catalogPath(repo()), 'utf8')).backups[0].verification, before);
  });

  it("a backup and a restore whose work is done succeed when the journal's last record cannot be written; a warning says so", async () => {
    init();
    const db = fixture();
    /** Local storage that fails the journal's COMPLETED records, as a server that went away at that moment does. */
    class JournalFailingStorage extends LocalStorage {
      override async put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: Abortable): Promise<ObjectInfo> {
        if (key.startsWith('journal/') && body instanceof Uint8Array && Buffer.from(body).toString('utf8').includes('"status":"COMPLETED"')) {
          throw new StrataError('IO', `storage: write ${key}: InternalError (HTTP 500)`);
        }
        return super.put(key, body, options);
      }
    }
    const r = await openRepository(new JournalFailingStorage(repo()), { passphrase: new Passphrase(TEST_PASSPHRASE), tempDir: path.join(dir.path, 'tmp') });
    const backedUp = await warningsOf(() => r.backup(db, { database: 'app' }));
    assert.deepEqual((await r.list()).map((b) => b.id), [backedUp.result.id]);
    assert.ok(backedUp.warnings.some((w) => /^backup: done, but its journal record could not be written \(.*HTTP 500.*\); the journal shows the run as not finished/.test(w)), JSON.stringify(backedUp.warnings));
    const target = path.join(dir.path, 'restored.db');
    const restored = await warningsOf(() => r.restore({ id: backedUp.result.id }, { to: target }));
    assert.equal(sqliteDump(target), sqliteDump(db));
    assert.ok(restored.warnings.some((w) => /^restore: done, but its journal record could not be written/.test(w)), JSON.stringify(restored.warnings));
  });

  describe('a machine without a native addon', () => {
    /** The environment of a `strata` that cannot load the named packages (as after a Node upgrade without `npm rebuild`). */
    const without = (...packages: string[]): { env: Record<string, string> } => {
      const blocker = path.join(dir.path, `block-${packages.join('-')}.cjs`);
      writeFileSync(
        blocker,
        `const Module = require('node:module');
const load = Module._load;
const blocked = ${JSON.stringify(packages)};
Module._load = function (request, ...rest) {
  if (blocked.includes(request)) throw Object.assign(new Error(\`Cannot find module '\${request}' (blocked in this test)\`), { code: 'MODULE_NOT_FOUND' });
  return load.call(this, request, ...rest);
};
`,
      );
      return { env: { NODE_OPTIONS: `--require=${blocker}` } };
    };
    const verification = (id: string): unknown => json<{ backups: { id: string; verification: unknown }[] }>(strata(['list', '--repo', repo(), '--json'])).backups.find((b) => b.id === id)?.verification;

    it('verify and restore fail as errors of this machine (exit 1, TOOL_MISSING) and record nothing against the good backup', function () {
      if ('zstdCompress' in zlib) {
        console.log('      note: this Node has zstd in node:zlib, so only the SQLite driver is taken away here');
      }
      init();
      const db = fixture();
      const id = backupId(db);
      assert.equal(strata(['verify', id, '--repo', repo(), '--level', 'full']).status, 0);
      const passed = verification(id);

      // A whole SQLite restore writes the file without opening it, so it needs no driver; without
      // the codec nothing can be read.
      const cases: [string[], RegExp, 'restores' | 'fails'][] = [
        [['better-sqlite3'], /the better-sqlite3 addon does not load in this Node v[\d.]+ \(Cannot find module 'better-sqlite3'.*npm rebuild better-sqlite3/, 'restores'],
        ...('zstdCompress' in zlib ? [] : [[['zstd-napi'], /zstd is not available in this runtime .*npm rebuild zstd-napi/, 'fails'] as [string[], RegExp, 'fails']]),
      ];
      for (const [packages, said, restores] of cases) {
        const blocked = without(...packages);
        const verify = strata(['verify', id, '--repo', repo(), '--level', 'full', '--json'], blocked);
        assert.equal(verify.status, 1, `${packages.join()}: ${verify.stderr}`);
        assert.equal(json<{ error: { code: string } }>(verify).error.code, 'TOOL_MISSING');
        assert.match(verify.stdout + verify.stderr, said);
        assert.deepEqual(verification(id), passed, `${packages.join()}: the backup's last verification is still the passed one`);
        const restored = path.join(dir.path, `restored-${packages.join()}.db`);
        const restore = strata(['restore', id, '--repo', repo(), '--to', restored, '--json'], blocked);
        if (restores === 'restores') {
          assert.equal(restore.status, 0, restore.stderr);
          assert.equal(sqliteDump(restored), sqliteDump(db));
        } else {
          assert.equal(restore.status, 1, restore.stderr);
          assert.equal(json<{ error: { code: string } }>(restore).error.code, 'TOOL_MISSING');
          assert.equal(existsSync(restored), false);
        }
      }
    });
  });

  describe('the repository lock', () => {
    it('a lock held by a live process makes a command exit with code 5', () => {
      init();
      const db = fixture();
      mkdirSync(path.join(repo(), 'locks'), { recursive: true });
      // Our own test process is alive, so a lock naming it is not stale.
      writeFileSync(
        path.join(repo(), 'locks/repository.lock'),
        JSON.stringify({ token: 't', pid: process.pid, host: (spawnSync('hostname').stdout.toString().trim()), operation: 'prune', acquiredAt: new Date().toISOString() }),
      );
      const result = strata(['backup', db, '--repo', repo(), '--lock-wait', '0']);
      assert.equal(result.status, 5, result.stderr);
      assert.match(result.stderr, /locked by prune by pid/);
      assert.equal(json<{ backups: unknown[] }>(strata(['list', '--repo', repo(), '--json'])).backups.length, 0);
    });

    it('a lock left by a dead process is taken over', () => {
      init();
      mkdirSync(path.join(repo(), 'locks'), { recursive: true });
      const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
      writeFileSync(
        path.join(repo(), 'locks/repository.lock'),
        JSON.stringify({ token: 't', pid: Number(dead), host: spawnSync('hostname').stdout.toString().trim(), operation: 'backup', acquiredAt: new Date().toISOString() }),
      );
      const result = strata(['backup', fixture(), '--repo', repo(), '--lock-wait', '0']);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(existsSync(path.join(repo(), 'locks/repository.lock')), false);
    });

    it('two processes backing up at once both land in the catalog', async () => {
      init();
      const a = fixture('a.db');
      const b = fixture('b.db');
      const runs = await Promise.all([finished(strataAsync(['backup', a, '--repo', repo()])), finished(strataAsync(['backup', b, '--repo', repo()])), finished(strataAsync(['backup', a, '--repo', repo()]))]);
      for (const run of runs) assert.equal(run.status, 0, run.stderr);
      const catalog = await readCatalog(new (await import('@strata/sdk')).LocalStorage(repo()));
      assert.equal(catalog!.length, 3);
      void writeCatalog;
    });
  });
});
