import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { byteTicks, timeSpan, timeTicks, ticks, utcTickLabel } from '@strata/protocol/charts';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { useTempDir } from './helpers/env.js';
import { Client } from './helpers/server-client.js';

/**
 * `strata/history`, what the editor's Backup History view draws, from a real server on a real
 * encrypted repository: restore points with their sizes, verification and retention tier, and the
 * backup runs that failed (from the journal: they have no restore point).
 */
describe('strata/history: the Backup History of a database or a repository', function () {
  this.timeout(300_000);
  const dir = useTempDir();
  let client: Client;

  afterEach(async () => {
    await client?.stop();
  });

  it('lists restore points oldest first with sizes, verification and tier, and the failed runs, for one database or the repository', async () => {
    const workspace = path.join(dir.path, 'ws');
    const repository = path.join(workspace, '.backups');
    mkdirSync(workspace, { recursive: true });
    const app = path.join(workspace, 'app.db');
    buildRichDatabase(app, { rows: 200 });
    buildRichDatabase(path.join(workspace, 'other.db'), { rows: 20 });
    writeFileSync(
      path.join(workspace, 'strata.config.json'),
      JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db', retention: { keepLast: 1 } }, other: { url: './other.db' } } }),
    );
    client = new Client();
    await client.start();
    await client.request('strata/workspace', { folders: [workspace], databases: [] });
    await client.request('strata/init', { repository, encryption: 'compat' });

    const first = (await client.request('strata/backup', { repository, database: 'app', type: 'full' })).backup;
    mutate(app, 1);
    const incremental = (await client.request('strata/backup', { repository, database: 'app', type: 'incremental' })).backup;
    // A run that fails: the database file is gone for a moment.
    renameSync(app, `${app}.away`);
    const failure = await client.failure('strata/backup', { repository, database: 'app', type: 'differential' });
    assert.equal(failure.data?.code, 'DATABASE_NOT_FOUND');
    renameSync(`${app}.away`, app);
    for (let i = 2; i < 40; i++) mutate(app, i);
    const second = (await client.request('strata/backup', { repository, database: 'app', type: 'full' })).backup;
    const other = (await client.request('strata/backup', { repository, database: 'other', type: 'full' })).backup;
    assert.equal((await client.request('strata/verify', { repository, id: second.id, level: 'full' })).outcome, 'passed');
    // The incremental's artifact damaged on storage: its quick verification fails and says so.
    const artifact = path.join(repository, incremental.key);
    const bytes = readFileSync(artifact);
    const middle = bytes.length >> 1;
    bytes[middle] = bytes[middle]! ^ 0xff;
    writeFileSync(artifact, bytes);
    assert.equal((await client.request('strata/verify', { repository, id: incremental.id, level: 'quick' })).outcome, 'failed');

    const history = await client.request('strata/history', { repository, database: 'app' });
    assert.deepEqual(
      history.points.map((p) => [p.id, p.type, p.parent, p.verification, p.tier, p.newestGood]),
      [
        [first.id, 'full', null, 'never', 'not kept', false],
        [incremental.id, 'incremental', first.id, 'failed', 'not kept', false],
        [second.id, 'full', null, 'passed', 'last', true],
      ],
    );
    // The sizes are the catalog's: stored (the artifact), raw (its archive) and the database's own.
    const listed = new Map((await client.request('strata/list', { repository, database: 'app' })).backups.map((b) => [b.id, b]));
    for (const p of history.points) {
      const b = listed.get(p.id)!;
      assert.deepEqual([p.storedBytes, p.rawBytes, p.databaseBytes, p.createdAt], [b.storedBytes, b.rawBytes, b.databaseBytes, b.createdAt]);
    }
    assert.ok(history.points[1]!.storedBytes < history.points[0]!.storedBytes, 'an incremental stores less than the full it builds on');
    assert.ok(history.points[2]!.databaseBytes > history.points[0]!.databaseBytes, 'the database grew between the two fulls');
    assert.equal(history.points[2]!.verificationLevel, 'full');
    assert.deepEqual(history.points[0]!.failedChecks, []);
    assert.ok(history.points[1]!.failedChecks.some((c) => /^checksum/i.test(c)), `the failed check is named: ${history.points[1]!.failedChecks.join('; ')}`);
    assert.ok(history.points[0]!.reasons.includes('no rule keeps it'));

    assert.equal(history.failures.length, 1);
    const [failed] = history.failures;
    assert.deepEqual([failed!.database, failed!.type, failed!.errorCode], ['app', 'differential', 'DATABASE_NOT_FOUND']);
    assert.match(failed!.errorMessage ?? '', /does not exist/);
    assert.ok(failed!.at > incremental.createdAt && failed!.at < second.createdAt, 'the failure sits between the two restore points it fell between');
    assert.ok(Date.parse(history.at) >= Date.parse(other.createdAt));

    // The whole repository: both databases' restore points, still oldest first; the failure is app's.
    const all = await client.request('strata/history', { repository });
    assert.deepEqual(
      all.points.map((p) => [p.database, p.id]),
      [
        ['app', first.id],
        ['app', incremental.id],
        ['app', second.id],
        ['other', other.id],
      ],
    );
    assert.equal(all.points[3]!.newestGood, true);
    assert.equal(all.failures.length, 1);
    assert.deepEqual((await client.request('strata/history', { repository, database: 'other' })).failures, []);
  });

  it('fails with REPO_NOT_FOUND, naming the folder, for a repository that does not exist', async () => {
    client = new Client();
    await client.start();
    const missing = path.join(dir.path, 'nowhere');
    const error = await client.failure('strata/history', { repository: missing });
    assert.equal(error.data?.code, 'REPO_NOT_FOUND');
    assert.match(error.message, /nowhere does not exist/);
  });
});

describe('chart axes shared by strata stats --html and Backup History', () => {
  it('labels a value axis with round steps that reach the largest value', () => {
    assert.deepEqual(ticks(7, true), [0, 2, 4, 6, 8]);
    assert.deepEqual(ticks(0.9, false), [0, 0.25, 0.5, 0.75, 1]);
    assert.deepEqual(ticks(3_500_000, false), [0, 1_000_000, 2_000_000, 3_000_000, 4_000_000]);
    assert.deepEqual(ticks(0, true), [0, 1], 'an empty chart still has an axis');
    // Sizes step in the binary unit their labels use: 0, 1, 2, 3, 4 MiB, not 0, 0.95, 1.9 MiB.
    assert.deepEqual(byteTicks(3.5 * 1024 * 1024), [0, 1, 2, 3, 4].map((m) => m * 1024 * 1024));
    assert.deepEqual(byteTicks(700), [0, 200, 400, 600, 800]);
  });

  it('puts at most eight round moments on a time axis, by day past a week', () => {
    const start = Date.parse('2026-11-20T09:07:00Z');
    const hours = timeTicks(start, start + 5 * 3600_000);
    assert.ok(hours.length > 1 && hours.length <= 8);
    assert.ok(hours.every((t) => t.at % 3600_000 === 0 && t.precision === 'minute'), 'on the hour');
    const weeks = timeTicks(start, start + 20 * 86_400_000);
    assert.ok(weeks.length <= 8 && weeks.every((t) => t.precision === 'day' && t.at % 86_400_000 === 0));
    // Backups of the last minute (a first try) get labels to the second.
    const seconds = timeTicks(start, start + 70_000);
    assert.deepEqual(seconds.map(utcTickLabel), ['09:07:00', '09:07:10', '09:07:20', '09:07:30', '09:07:40', '09:07:50', '09:08:00', '09:08:10']);
    assert.equal(utcTickLabel(hours[0]!), '11-20 10:00');
    // One backup a moment ago still gets an axis a minute wide, reaching now.
    const now = Date.parse('2026-11-20T10:00:00Z');
    assert.deepEqual(timeSpan(now - 1000, now), { start: now - 1000 - 3000, end: now + 59_000 });
  });
});
