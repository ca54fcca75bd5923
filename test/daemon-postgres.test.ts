import assert from 'node:assert/strict';
import * as path from 'node:path';
import { openRepository } from '@strata/sdk';
import { detail, jobOperations, startDaemon, writeConfig } from './helpers/daemon.js';
import { strata, useTempDir } from './helpers/env.js';
import { Databases, pgUrl, requirePostgres } from './helpers/postgres.js';

describe('strata daemon with the real PostgreSQL', function () {
  this.timeout(300_000);
  const dir = useTempDir();
  const databases = new Databases();

  before(async function () {
    await requirePostgres(this);
  });
  after(async () => {
    await databases.dropAll();
  });

  it('takes scheduled backups of a server database on time, one at a time, and stops cleanly on SIGTERM', async () => {
    const name = await databases.create('CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL); INSERT INTO orders (item) SELECT md5(g::text) FROM generate_series(1, 500) g;');
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    const config = path.join(dir.path, 'strata.config.json');
    writeConfig(config, {
      repository: './repo',
      databases: { shop: { url: pgUrl(name) } },
      schedules: { often: { job: 'backup', type: 'incremental', cron: '*/2 * * * * *' } },
    });
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/(?:shop\/often: succeeded[\s\S]*){3}/);
      daemon.child.kill('SIGTERM');
      const exit = await daemon.exit;
      assert.equal(exit.status, 0, exit.stderr);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const ops = (await jobOperations(repo)).filter((o) => detail(o, 'skipped') !== true);
    const completed = ops.filter((o) => o.status === 'COMPLETED');
    assert.ok(completed.length >= 3);
    const repository = await openRepository(repo);
    const backups = await repository.list({ database: 'shop' });
    await repository.close();
    for (const op of completed) {
      assert.ok(backups.some((b) => b.id === op.last.backupId));
      const late = Date.parse(detail<string>(op, 'startedAt')) - Date.parse(detail<string>(op, 'scheduledAt'));
      assert.ok(late >= 0 && late < 1000, `due ${detail(op, 'scheduledAt')}, started ${detail(op, 'startedAt')}`);
    }
    // One at a time.
    const runs = ops.map((o) => ({ start: Date.parse(o.startedAt), end: Date.parse(o.last.at) })).sort((a, b) => a.start - b.start);
    for (let i = 1; i < runs.length; i++) assert.ok(runs[i]!.start >= runs[i - 1]!.end);
    assert.deepEqual(ops.filter((o) => o.status === 'RUNNING'), []);
  });
});
