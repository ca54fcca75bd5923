import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { formatWorkDatabaseName, openRepository, thisHostTag } from '@strata/sdk';
import { detail, jobOperations, startDaemon, writeConfig } from './helpers/daemon.js';
import { strata, useTempDir } from './helpers/env.js';
import { Databases, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';

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

  it("writes what a job's engine warns of into its own log, as JSON with the job, and names the warning in the journal", async () => {
    const name = await databases.create('CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL); INSERT INTO orders (item) SELECT md5(g::text) FROM generate_series(1, 100) g;');
    const repo = path.join(dir.path, 'repo-warnings');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    const config = path.join(dir.path, 'warnings.config.json');
    writeConfig(config, {
      repository: './repo-warnings',
      databases: { shop: { url: pgUrl(name) } },
      schedules: { check: { job: 'verify', level: 'full', cron: '*/2 * * * * *' } },
    });
    const backup = strata(['backup', 'shop', '--config', config]);
    assert.equal(backup.status, 0, backup.stderr);
    // The scratch database of a verification whose process is gone: the next verification removes it, and warns that it did.
    const deadPid = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
    const leftover = formatWorkDatabaseName({ target: name, role: 'scratch', host: thisHostTag(), pid: deadPid, createdAt: new Date(), seq: 0 }, { max: 63, unit: 'bytes' });
    await pgQuery('postgres', `CREATE DATABASE "${leftover}"`);
    const daemon = startDaemon(config, ['--log-format', 'json']);
    try {
      await daemon.waitFor(/"code":"STRATA_LEFTOVER"/);
      await daemon.waitFor(/"level":"info","message":"succeeded: full verification passed/);
      daemon.child.kill('SIGTERM');
      const exit = await daemon.exit;
      assert.equal(exit.status, 0, exit.stderr);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const lines = daemon.log().trim().split('\n');
    const entries = lines.map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        assert.fail(`every line of a JSON log is JSON, not: ${line}`);
      }
    });
    const warning = entries.find((e) => e['code'] === 'STRATA_LEFTOVER');
    assert.ok(warning, daemon.log());
    assert.equal(warning['level'], 'warn');
    assert.equal(warning['database'], 'shop');
    assert.equal(warning['job'], 'check');
    assert.match(String(warning['message']), new RegExp(`^verify: removed the scratch database ${leftover} of a verify that did not finish \\(left by pid ${deadPid}`));
    assert.equal((await pgQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [leftover])).rowCount, 0, 'the leftover is gone');
    const runs = (await jobOperations(repo)).filter((o) => o.status === 'COMPLETED');
    assert.deepEqual(detail(runs[0]!, 'warnings'), ['STRATA_LEFTOVER'], 'the first run, which removed it, names the warning in the journal');
    for (const later of runs.slice(1)) assert.equal(detail(later, 'warnings'), undefined, 'later runs warned of nothing');
  });
});
