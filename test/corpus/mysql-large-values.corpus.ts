import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import mysql from 'mysql2/promise';
import { Passphrase, initRepository, isStrataError, openRepository } from '@strata/sdk';
import { privateMariadb } from '../helpers/mysql.js';

/**
 * Corpus (slow, not in `npm test`): a 40 MiB BLOB needs a server whose max_allowed_packet holds
 * it, so this runs on a private MariaDB with a 64 MiB packet. Run with `npm run test:corpus:mysql`.
 */
describe('corpus: MySQL/MariaDB large values', function () {
  this.timeout(300_000);

  it('backs up, restores and verifies a 40 MiB BLOB byte for byte', async function () {
    const server = await privateMariadb(this, ['--max-allowed-packet=64M']);
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-corpus-'));
    const passphrase = new Passphrase('corpus');
    try {
      const admin = await mysql.createConnection({ uri: server.url('mysql'), multipleStatements: true });
      await admin.query('CREATE DATABASE big; USE big; CREATE TABLE b (id INT PRIMARY KEY, data LONGBLOB); INSERT INTO b SELECT 1, REPEAT(RANDOM_BYTES(1024), 40 * 1024);');
      await initRepository(path.join(dir, 'repo'), { encryption: 'compat', passphrase });
      const repo = await openRepository(path.join(dir, 'repo'), { passphrase, tempDir: path.join(dir, 'tmp') });
      try {
        const record = await repo.backup(server.url('big'), { database: 'big' });
        await repo.restore({ id: record.id }, { to: server.url('restored') });
        const digest = async (db: string) => ((await admin.query(`SELECT LENGTH(data) AS n, SHA2(data, 256) AS h FROM \`${db}\`.b`)) as unknown as [unknown[]])[0];
        const restored = await digest('restored');
        assert.equal((restored[0] as { n: number }).n, 40 * 1024 * 1024);
        assert.deepEqual(restored, await digest('big'));
        const [report] = await repo.verify({ id: record.id }, { level: 'full' });
        assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
      } finally {
        await repo.close();
        await admin.end();
      }
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads a value larger than the source server now accepts, and restores it only where it fits, failing loudly elsewhere', async function () {
    const server = await privateMariadb(this, ['--max-allowed-packet=32M']);
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-corpus-'));
    const passphrase = new Passphrase('corpus');
    try {
      const admin = await mysql.createConnection({ uri: server.url('mysql'), multipleStatements: true });
      await admin.query('CREATE DATABASE big; USE big; CREATE TABLE b (id INT PRIMARY KEY, data LONGBLOB); INSERT INTO b SELECT 1, REPEAT(RANDOM_BYTES(1024), 20 * 1024);');
      // The value stays; new sessions get the smaller limit.
      await admin.query('SET GLOBAL max_allowed_packet = 8 * 1024 * 1024');
      await initRepository(path.join(dir, 'repo'), { encryption: 'compat', passphrase });
      const repo = await openRepository(path.join(dir, 'repo'), { passphrase, tempDir: path.join(dir, 'tmp') });
      try {
        const record = await repo.backup(server.url('big'), { database: 'big' });
        await assert.rejects(repo.restore({ id: record.id }, { to: server.url('small') }), (err: unknown) => isStrataError(err, 'RESTORE_FAILED') && /table b column data holds a value of 20971520 bytes/.test(err.message));
        await admin.query('SET GLOBAL max_allowed_packet = 32 * 1024 * 1024');
        await repo.restore({ id: record.id }, { to: server.url('restored') });
        const digest = async (db: string) => ((await admin.query(`SELECT LENGTH(data) AS n, SHA2(data, 256) AS h FROM \`${db}\`.b`)) as unknown as [unknown[]])[0];
        assert.deepEqual(await digest('restored'), await digest('big'));
        assert.equal(((await digest('restored'))[0] as { n: number }).n, 20 * 1024 * 1024);
      } finally {
        await repo.close();
        await admin.end();
      }
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
