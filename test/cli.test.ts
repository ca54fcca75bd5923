import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { FIXTURE_DB, TEST_PASSPHRASE, json, sqliteDump, strata, useTempDir, catalogPath, journalFiles } from './helpers/env.js';

interface BackupJson {
  id: string;
  backup: { id: string; database: string; type: string; parent: string | null; base: string | null; label: string | null; storedBytes: number; rawBytes: number };
}

describe('strata command line', () => {
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');

  function initEncrypted(): void {
    const result = strata(['init', '--repo', repo()]);
    assert.equal(result.status, 0, result.stderr);
  }

  function copyFixture(name = 'app.db'): string {
    const file = path.join(dir.path, name);
    copyFileSync(FIXTURE_DB, file);
    return file;
  }

  describe('init', () => {
    it('creates an encrypted repository by default', () => {
      const result = strata(['init', '--repo', repo(), '--json']);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(json(result)['encryption'], 'compat');
    });

    it('refuses an unencrypted repository unless --no-encryption is given', () => {
      const result = strata(['init', '--repo', repo()], { env: { STRATA_PASSPHRASE: undefined } });
      assert.equal(result.status, 4, result.stderr);
      assert.match(result.stderr, /--no-encryption/);
      const explicit = strata(['init', '--repo', repo(), '--no-encryption', '--json'], { env: { STRATA_PASSPHRASE: undefined } });
      assert.equal(explicit.status, 0, explicit.stderr);
      assert.equal(json(explicit)['encryption'], 'none');
    });

    it('refuses to initialise over an existing repository', () => {
      initEncrypted();
      const again = strata(['init', '--repo', repo()]);
      assert.equal(again.status, 1);
      assert.match(again.stderr, /already holds a Strata repository/);
    });

    it('reads the passphrase from --passphrase-file', () => {
      const file = path.join(dir.path, 'pass.txt');
      writeFileSync(file, 'from a file\n', { mode: 0o600 });
      assert.equal(strata(['init', '--repo', repo(), '--passphrase-file', file], { env: { STRATA_PASSPHRASE: undefined } }).status, 0);
      const db = copyFixture();
      const ok = strata(['backup', db, '--repo', repo(), '--passphrase-file', file], { env: { STRATA_PASSPHRASE: undefined } });
      assert.equal(ok.status, 0, ok.stderr);
      const wrong = strata(['backup', db, '--repo', repo()], { env: { STRATA_PASSPHRASE: 'from a file' + '!' } });
      assert.equal(wrong.status, 4);
    });
  });

  describe('backup, list, restore, verify', () => {
    it('backs up a file path and prints the new id with --json', () => {
      initEncrypted();
      const db = copyFixture();
      const result = strata(['backup', db, '--repo', repo(), '--label', 'before upgrade', '--tag', 'manual', '--json']);
      assert.equal(result.status, 0, result.stderr);
      const out = json<BackupJson>(result);
      assert.match(out.id, /^app_full_\d{8}_\d{6}_[0-9a-f]{4}$/);
      assert.equal(out.backup.label, 'before upgrade');
      assert.ok(out.backup.storedBytes > 0 && out.backup.storedBytes < out.backup.rawBytes);
      assert.equal(result.stderr, '', 'no progress output without a terminal');
    });

    it('names artifacts {database}_{type}_{YYYYMMDD_HHMMSS} and honours --time', () => {
      initEncrypted();
      const db = copyFixture();
      const out = json<BackupJson>(strata(['backup', db, '--repo', repo(), '--time', '2026-03-04T05:06:07Z', '--json']));
      assert.match(out.id, /^app_full_20260304_050607_[0-9a-f]{4}$/);
      const list = json<{ backups: { id: string; createdAt: string; key: string }[] }>(strata(['list', '--repo', repo(), '--json']));
      assert.equal(list.backups[0]!.createdAt, '2026-03-04T05:06:07.000Z');
      assert.match(list.backups[0]!.key, /^backups\/app\/app_full_20260304_050607_[0-9a-f]{4}\.tar\.(zst|gz)\.gpg$/);
    });

    it('uses database names and the repository from strata.config.json', () => {
      copyFixture('shop.db');
      writeFileSync(path.join(dir.path, 'strata.config.json'), JSON.stringify({ repository: './repo', databases: { shop: { url: 'sqlite:./shop.db' } } }));
      assert.equal(strata(['init'], { cwd: dir.path }).status, 0);
      const backup = strata(['backup', 'shop', '--json'], { cwd: dir.path });
      assert.equal(backup.status, 0, backup.stderr);
      assert.equal(json<BackupJson>(backup).backup.database, 'shop');
      const unknown = strata(['backup', 'nosuch'], { cwd: dir.path });
      assert.equal(unknown.status, 2);
      assert.match(unknown.stderr, /not in strata.config.json \(known: shop\)/);
    });

    it('lists backups with id, database, engine, type, time, sizes and chain links', () => {
      initEncrypted();
      const db = copyFixture();
      strata(['backup', db, '--repo', repo()]);
      strata(['backup', db, '--repo', repo(), '--type', 'schema-only']);
      const human = strata(['list', '--repo', repo()]);
      assert.equal(human.status, 0);
      assert.match(human.stdout, /ID\s+DATABASE\s+ENGINE\s+TYPE\s+CREATED/);
      assert.match(human.stdout, /schema-only/);
      const list = json<{ backups: Record<string, unknown>[] }>(strata(['list', 'app', '--repo', repo(), '--json']));
      assert.equal(list.backups.length, 2);
      for (const b of list.backups) {
        for (const field of ['id', 'database', 'engine', 'type', 'createdAt', 'label', 'databaseBytes', 'rawBytes', 'storedBytes', 'parent', 'base', 'sha256']) {
          assert.ok(field in b, `list --json carries ${field}`);
        }
      }
    });

    it('restores to a new file that is identical to the source', () => {
      initEncrypted();
      const db = copyFixture();
      const { id } = json<BackupJson>(strata(['backup', db, '--repo', repo(), '--json']));
      const target = path.join(dir.path, 'restored.db');
      const result = strata(['restore', id, '--repo', repo(), '--to', target, '--json']);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(json(result)['id'], id);
      assert.equal(sqliteDump(target), sqliteDump(db));
    });

    it("carries the warnings it printed into its --json output: a table restore that took an index the backup lacks with the table", () => {
      initEncrypted();
      const db = copyFixture();
      const { id } = json<BackupJson>(strata(['backup', db, '--repo', repo(), '--json']));
      const target = path.join(dir.path, 'target.db');
      copyFileSync(db, target);
      const added = spawnSync('sqlite3', [target, 'CREATE INDEX audit_by_time ON audit(at)'], { encoding: 'utf8' });
      assert.equal(added.status, 0, added.stderr);
      const result = strata(['restore', id, '--repo', repo(), '--to', target, '--tables', 'audit', '--force', '--yes', '--json']);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stderr, /strata: warning: restore: these objects of .* went with the table\(s\) this restore replaced: index audit_by_time on audit/);
      const warnings = json(result)['warnings'] as { code: string; message: string }[];
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      assert.equal(warnings[0]!.code, 'STRATA_TABLES_REPLACED');
      assert.match(warnings[0]!.message, /index audit_by_time on audit \(CREATE INDEX audit_by_time ON audit\(at\)\)/);
      const quiet = strata(['restore', id, '--repo', repo(), '--to', target, '--tables', 'audit', '--force', '--yes', '--json']);
      assert.equal(json(quiet)['warnings'], undefined, 'a restore that warned of nothing has no warnings');
    });

    it('restores "latest" and needs --db when several databases are in the repository', () => {
      initEncrypted();
      strata(['backup', copyFixture('one.db'), '--repo', repo()]);
      strata(['backup', copyFixture('two.db'), '--repo', repo()]);
      const ambiguous = strata(['restore', 'latest', '--repo', repo(), '--to', path.join(dir.path, 'x.db')]);
      assert.equal(ambiguous.status, 2);
      assert.match(ambiguous.stderr, /ambiguous.*one, two/);
      const ok = strata(['restore', 'latest', '--db', 'two', '--repo', repo(), '--to', path.join(dir.path, 'x.db')]);
      assert.equal(ok.status, 0, ok.stderr);
    });

    it('replaces an existing file only with --force, and without a terminal only with --yes', () => {
      initEncrypted();
      const db = copyFixture();
      const { id } = json<BackupJson>(strata(['backup', db, '--repo', repo(), '--json']));
      const target = path.join(dir.path, 'existing.db');
      writeFileSync(target, 'precious');
      assert.equal(strata(['restore', id, '--repo', repo(), '--to', target]).status, 1);
      const noYes = strata(['restore', id, '--repo', repo(), '--to', target, '--force']);
      assert.equal(noYes.status, 2);
      assert.match(noYes.stderr, /--yes/);
      assert.equal(readFileSync(target, 'utf8'), 'precious');
      const ok = strata(['restore', id, '--repo', repo(), '--to', target, '--force', '--yes']);
      assert.equal(ok.status, 0, ok.stderr);
      assert.equal(sqliteDump(target), sqliteDump(db));
    });

    it('verifies at level quick and reports each check by name', () => {
      initEncrypted();
      const db = copyFixture();
      const { id } = json<BackupJson>(strata(['backup', db, '--repo', repo(), '--json']));
      const result = strata(['verify', id, '--repo', repo(), '--level', 'quick', '--json']);
      assert.equal(result.status, 0, result.stderr);
      const out = json<{ outcome: string; reports: { checks: { name: string; status: string; reason: string }[] }[] }>(result);
      assert.equal(out.outcome, 'passed');
      const checks = Object.fromEntries(out.reports[0]!.checks.map((c) => [c.name, c.status]));
      assert.deepEqual(checks, {
        'file-accessibility': 'passed',
        'checksum-match': 'passed',
        'database-readable': 'skipped',
        'schema-integrity': 'skipped',
        'data-consistency': 'skipped',
      });
      const list = json<{ backups: { verification: { outcome: string; level: string } | null }[] }>(strata(['list', '--repo', repo(), '--json']));
      assert.deepEqual({ ...list.backups[0]!.verification, at: undefined, checks: undefined }, { outcome: 'passed', level: 'quick', at: undefined, checks: undefined });
    });

    it('verifies --all at level full', () => {
      initEncrypted();
      const db = copyFixture();
      strata(['backup', db, '--repo', repo()]);
      strata(['backup', db, '--repo', repo(), '--type', 'schema-only']);
      const result = strata(['verify', '--all', '--repo', repo(), '--level', 'full', '--json']);
      assert.equal(result.status, 0, result.stderr);
      const out = json<{ reports: { outcome: string }[] }>(result);
      assert.deepEqual(out.reports.map((r) => r.outcome), ['passed', 'passed']);
    });
  });

  describe('usage and exit codes', () => {
    it('documents the exit codes in --help', () => {
      const help = strata(['--help']);
      assert.equal(help.status, 0);
      for (const line of [/0\s+ok/, /1\s+the operation failed/, /2\s+usage error/, /3\s+verification failed/, /4\s+wrong or missing passphrase/, /5\s+the repository is locked/]) {
        assert.match(help.stdout, line);
      }
    });

    it('exits 2 for unknown commands, unknown options and bad values', () => {
      assert.equal(strata(['frobnicate']).status, 2);
      assert.equal(strata(['list', '--repo', repo(), '--bogus']).status, 2);
      initEncrypted();
      assert.equal(strata(['backup', copyFixture(), '--repo', repo(), '--type', 'weekly']).status, 2);
      assert.equal(strata(['backup', copyFixture(), '--repo', repo(), '--time', 'yesterday']).status, 2);
      assert.equal(strata(['verify', '--repo', repo()]).status, 2);
    });

    it('refuses a second restore point of a database at the same --time, and an incremental not after its parent (which is newer could not be told)', () => {
      initEncrypted();
      const db = copyFixture();
      const at = '2026-02-01T10:00:00Z';
      assert.equal(strata(['backup', db, '--repo', repo(), '--time', at]).status, 0);
      for (const type of ['full', 'incremental']) {
        const again = strata(['backup', db, '--repo', repo(), '--type', type, '--time', at]);
        assert.equal(again.status, 2, again.stderr);
        assert.match(again.stderr, type === 'full' ? /already has a restore point at 2026-02-01T10:00:00\.000Z/ : /already has a restore point at|is not after/);
      }
      const before = strata(['backup', db, '--repo', repo(), '--type', 'incremental', '--time', '2026-01-31T10:00:00Z']);
      assert.equal(before.status, 2, before.stderr);
      assert.match(before.stderr, /is not after .* which this incremental would build on/);
      assert.equal(strata(['backup', db, '--repo', repo(), '--type', 'incremental', '--time', '2026-02-01T10:00:01Z']).status, 0);
    });

    it('prints errors as one JSON document with --json', () => {
      const result = strata(['list', '--repo', path.join(dir.path, 'missing'), '--json']);
      assert.equal(result.status, 6);
      const out = json<{ error: { code: string; message: string; exitCode: number } }>(result);
      assert.equal(out.error.code, 'REPO_NOT_FOUND');
      assert.equal(out.error.exitCode, 6);
    });

    it('never prints the passphrase, even in errors', () => {
      initEncrypted();
      const db = copyFixture();
      const outputs = [
        strata(['backup', db, '--repo', repo(), '--json']),
        strata(['verify', 'latest', '--repo', repo(), '--json']),
        strata(['restore', 'latest', '--repo', repo(), '--to', db]),
        strata(['list', '--repo', repo()], { env: { STRATA_PASSPHRASE: TEST_PASSPHRASE + 'x' } }),
        strata(['verify', 'latest', '--repo', repo()], { env: { STRATA_PASSPHRASE: TEST_PASSPHRASE + 'x' } }),
      ];
      for (const out of outputs) {
        assert.ok(!out.stdout.includes(TEST_PASSPHRASE) && !out.stderr.includes(TEST_PASSPHRASE));
      }
      for (const file of [path.join(repo(), 'repository.json'), catalogPath(repo()), ...journalFiles(repo())]) {
        assert.ok(!readFileSync(file, 'utf8').includes(TEST_PASSPHRASE), `${file} holds no passphrase`);
      }
    });
  });
});
