import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { CLI, sqliteDump, useTempDir } from './helpers/env.js';
import { useTestBucket } from './helpers/s3.js';
import { Client } from './helpers/server-client.js';

// What the VS Code extension does with a workspace whose strata.config.json names an s3://
// repository: it starts `strata serve --stdio` and sends these requests.

describe('with the S3 test server', function () {
  const testBucket = useTestBucket();

  describe('strata serve with an s3:// repository (what the VS Code extension runs)', function () {
    this.timeout(600_000);
    const dir = useTempDir();

    it("lists the workspace's database, initialises the bucket's repository, backs up, verifies and restores through it", async () => {
      const workspace = path.join(dir.path, 'ws');
      mkdirSync(workspace);
      const db = path.join(workspace, 'app.db');
      buildRichDatabase(db, { rows: 120 });
      const repository = `s3://${testBucket.name}/workspace`;
      // The storage section, as a user writes it next to the repository: nothing secret in it
      // (the endpoint and credentials come from the AWS variables the test server printed).
      writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository, storage: { pathStyle: true }, databases: { app: { url: './app.db' } } }));
      const client = new Client([CLI, 'serve', '--stdio']);
      try {
        await client.start();
        const ws = await client.request('strata/workspace', { folders: [workspace], databases: [] });
        assert.deepEqual(ws.problems, []);
        assert.deepEqual(ws.databases.map((d) => [d.name, d.repository]), [['app', repository]]);
        await client.request('strata/init', { repository, encryption: 'compat' });
        const { backup } = await client.request('strata/backup', { repository, database: 'app', type: 'full' });
        mutate(db, 1);
        const second = await client.request('strata/backup', { repository, database: 'app', type: 'incremental' });
        const { backups } = await client.request('strata/list', { repository, database: 'app' });
        assert.deepEqual(backups.map((b) => b.id), [second.backup.id, backup.id], 'newest first, as the tree shows them');
        const report = await client.request('strata/verify', { repository, id: second.backup.id, level: 'full' });
        assert.equal(report.outcome, 'passed', JSON.stringify(report.checks));
        assert.equal(report.checks.length, 5);
        const target = path.join(dir.path, 'restored.db');
        await client.request('strata/restore', { repository, id: second.backup.id, to: target });
        assert.equal(sqliteDump(target), sqliteDump(db));
        assert.ok(client.changed.includes(repository), 'the tree is told the repository changed');
      } finally {
        await client.stop();
      }
    });
  });
});
