import { strict as assert } from 'node:assert';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { isStrataError, loadConfig } from '@strata/sdk';
import { useTempDir } from './helpers/env.js';

describe('strata.config.json validation', () => {
  const dir = useTempDir();

  /** The usage error a config file with this content gets, without the `config: FILE: ` prefix. */
  function problem(content: unknown): string {
    const file = path.join(dir.path, 'strata.config.json');
    writeFileSync(file, JSON.stringify(content));
    try {
      loadConfig(file);
    } catch (err) {
      assert.ok(isStrataError(err, 'USAGE'), String(err));
      const prefix = `config: ${file}: `;
      assert.ok(err.message.startsWith(prefix), err.message);
      return err.message.slice(prefix.length);
    }
    assert.fail('the config was accepted');
  }

  it('takes a physical PostgreSQL entry, and refuses "physical" for anything but a postgres:// URL', () => {
    const file = path.join(dir.path, 'strata.config.json');
    writeFileSync(file, JSON.stringify({ databases: { cluster: { url: 'postgres://postgres@127.0.0.1:5433/postgres', method: 'physical' }, app: { url: 'postgres://h/app', method: 'logical' } } }));
    const { config } = loadConfig(file);
    assert.equal(config.databases?.['cluster']?.method, 'physical');
    assert.equal(config.databases?.['cluster']?.url, 'postgres+physical://postgres@127.0.0.1:5433/postgres');
    assert.equal(config.databases?.['app']?.url, 'postgres://h/app');
    assert.equal(problem({ databases: { c: { url: 'postgres://h/db', method: 'block' } } }), 'databases.c.method: expected "logical" or "physical" (got "block")');
    assert.match(problem({ databases: { c: { url: './app.db', method: 'physical' } } }), /^databases\.c\.method: "physical" backs up a whole PostgreSQL cluster over the replication protocol, so "url" must be a postgres:\/\/ URL/);
    assert.match(problem({ databases: { c: { url: 'mysql://root@h/db', method: 'physical' } } }), /^databases\.c\.method: "physical" .* other databases are backed up logically/);
  });

  it('names the setting, what is wrong and what is expected', () => {
    assert.equal(problem([]), 'top level: expected an object');
    assert.equal(problem({ repo: './r' }), 'repo: unknown setting (expected repository, storage, mirror, databases, retention, schedules, daemon, notifications)');
    assert.equal(problem({ repository: 42 }), 'repository: expected a folder path (got 42)');
    assert.equal(problem({ databases: [] }), 'databases: expected an object of name → { "url": ... }');
    assert.match(problem({ databases: { 'a b': { url: './a.db' } } }), /^databases\.a b: database name "a b" is not allowed: use 1 to 64 letters/);
    assert.equal(problem({ databases: { app: {} } }), 'databases.app.url: expected a SQLite path or a database URL');
    assert.equal(problem({ databases: { app: { url: './a.db', keep: 1 } } }), 'databases.app.keep: unknown setting (expected url, method, retention, schedules)');
    assert.equal(problem({ retention: { keepDaily: -1 } }), 'retention.keepDaily: must be a whole number ≥ 0 (got -1)');
    assert.equal(problem({ retention: { keepDaily: '7' } }), 'retention.keepDaily: must be a whole number ≥ 0 (got "7")');
    assert.match(problem({ retention: { keepDaily: 7, keepHours: 1 } }), /^retention\.keepHours: unknown rule \(expected keepLast, keepHourly/);
    assert.equal(problem({ retention: { keepWithin: '6m' } }), 'retention.keepWithin: "6m" is ambiguous: write 6min for minutes or 6mo for months');
    assert.match(problem({ databases: { app: { url: './a.db', retention: { keepLabels: { 'pre-update': 'soon' } } } } }), /^databases\.app\.retention\.keepLabels\.pre-update: "soon" is not a duration/);
    assert.match(problem({ retention: { keepLast: 0 } }), /^retention: the policy keeps nothing/);
    assert.equal(problem({ mirror: { repository: './m', passphrase: 'x' } }), 'mirror.passphrase: unknown setting (expected repository, passphraseFile, passphraseCommand)');
    assert.match(problem({ mirror: 42 }), /^mirror: expected the mirror's location, or \{ "repository": \.\.\., "passphraseFile": \.\.\. \} \(got 42\)$/);
    assert.equal(problem({ mirror: {} }), "mirror: expected the mirror's location, a folder path or a URL (got nothing)");
  });

  it('takes a mirror as a location or with its passphrase source, resolving paths against its folder', () => {
    const file = path.join(dir.path, 'strata.config.json');
    writeFileSync(file, JSON.stringify({ repository: './backups', mirror: './usb' }));
    assert.deepEqual(loadConfig(file).config.mirror, { repository: path.join(dir.path, 'usb') });
    writeFileSync(file, JSON.stringify({ repository: './backups', mirror: { repository: 'file:///mnt/usb', passphraseFile: './mirror-pass' } }));
    assert.deepEqual(loadConfig(file).config.mirror, { repository: 'file:///mnt/usb', passphraseFile: path.join(dir.path, 'mirror-pass') });
  });

  it('checks the storage section of an s3:// repository, keeps the location as written, and refuses credentials in the endpoint', () => {
    assert.equal(problem({ storage: { partSize: 1024 } }), 'storage.partSize: must be at least 5 MiB (5242880), the smallest part S3 accepts');
    assert.equal(problem({ storage: { concurrency: 0 } }), 'storage.concurrency: must be at least 1');
    assert.equal(problem({ storage: { conditionalWrites: 'maybe' } }), 'storage.conditionalWrites: expected "auto" or "required"');
    assert.match(problem({ storage: { secretAccessKey: 'x' } }), /^storage\.secretAccessKey: unknown setting \(expected endpoint, region, pathStyle, profile/);
    const leaked = problem({ storage: { endpoint: 'https://AKIA:topsecret@minio.example.com' } });
    assert.match(leaked, /^storage\.endpoint: must not contain credentials/);
    assert.ok(!leaked.includes('topsecret'));
    const file = path.join(dir.path, 'strata.config.json');
    writeFileSync(file, JSON.stringify({ repository: 's3://backups/prod', storage: { endpoint: 'http://127.0.0.1:9000', pathStyle: true, partSize: 16 * 1024 * 1024 } }));
    const { config } = loadConfig(file);
    assert.equal(config.repository, 's3://backups/prod');
    assert.deepEqual(config.storage, { endpoint: 'http://127.0.0.1:9000', pathStyle: true, partSize: 16 * 1024 * 1024 });
  });

  it('accepts a complete file and resolves its paths against its folder', () => {
    const file = path.join(dir.path, 'strata.config.json');
    writeFileSync(
      file,
      JSON.stringify({
        $schema: './schema.json',
        repository: './backups',
        retention: { keepDaily: 7, keepWithin: '30min', keepLabels: { 'pre-update': '30d', release: 'forever' } },
        databases: { app: { url: './data/app.db', retention: { keepLast: 3 } }, shop: { url: 'postgres://app@127.0.0.1:5432/shop' } },
      }),
    );
    const { config } = loadConfig(file);
    assert.equal(config.repository, path.join(dir.path, 'backups'));
    assert.equal(config.databases?.['app']?.url, `sqlite:${path.join(dir.path, 'data/app.db')}`);
    assert.deepEqual(config.databases?.['app']?.retention, { keepLast: 3 });
    assert.equal(config.databases?.['shop']?.url, 'postgres://app@127.0.0.1:5432/shop');
    assert.deepEqual(config.retention, { keepDaily: 7, keepWithin: '30min', keepLabels: { 'pre-update': '30d', release: 'forever' } });
  });
});
