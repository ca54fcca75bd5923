import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import * as path from 'node:path';
import { openRepository } from '@strata/sdk';
import type { JournalOperation } from '@strata/sdk';
import { buildRichDatabase } from './helpers/databases.js';
import { detail, jobOperations, startDaemon, writeConfig } from './helpers/daemon.js';
import { catalogPath, journalFiles, json, strata, useTempDir } from './helpers/env.js';
import { Client } from './helpers/server-client.js';

/**
 * `strata daemon` with real SQLite databases and jobs every second or two (six-field cron): the
 * journal's job entries are what is asserted, as an operator would read them.
 */

/** How late a scheduled job may start after its due time. The issue asks for "within a second". */
const ON_TIME_MS = 1000;

function startedLate(op: JournalOperation): number {
  return Date.parse(detail<string>(op, 'startedAt')) - Date.parse(detail<string>(op, 'scheduledAt'));
}

/** The operations that really ran (not the journal records of skipped or queued runs). */
/** A Prometheus text: value by metric name and database label; every value must be a number. */
function metricValues(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const family of parsePrometheusTextFormat(text)) {
    for (const sample of family.metrics) {
      const value = Number(sample.value);
      assert.ok(Number.isFinite(value), `${family.name} ${sample.value}`);
      values.set(`${family.name}${sample.labels?.['database'] !== undefined ? `/${sample.labels['database']}` : ''}${sample.labels?.['job'] !== undefined ? `/${sample.labels['job']}` : ''}`, value);
    }
  }
  return values;
}

/** Waits until one of `files` exists (a hook's mark that it started), failing after a generous deadline. */
async function untilExists(files: readonly string[], timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!files.some((f) => existsSync(f))) {
    if (Date.now() > deadline) throw new Error(`none of ${files.join(', ')} appeared within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const ran = (ops: readonly JournalOperation[]): JournalOperation[] => ops.filter((o) => detail(o, 'skipped') !== true && detail(o, 'queued') !== true);

describe('strata schedule and the schedules of strata.config.json', function () {
  this.timeout(120_000);
  const dir = useTempDir();

  it('prints the next runs of every job, defaults merged with each database\'s own, in the job\'s time zone', () => {
    const config = path.join(dir.path, 'strata.config.json');
    writeConfig(config, {
      repository: './repo',
      databases: { app: { url: './app.db', schedules: { nightly: false, hourly: { job: 'backup', type: 'incremental', cron: '0 * * * *' } } }, orders: { url: './orders.db' } },
      schedules: { nightly: { job: 'backup', cron: '30 2 * * *', timezone: 'Asia/Kolkata' }, check: { job: 'verify', level: 'full', sample: 1, cron: '0 0 4 * * 0' } },
    });
    const out = strata(['schedule', '--config', config, '--count', '2', '--json']);
    assert.equal(out.status, 0, out.stderr);
    const jobs = json<{ jobs: { database: string; job: string; next: string[] }[] }>(out).jobs;
    assert.deepEqual(jobs.map((j) => `${j.database}/${j.job}`), ['app/check', 'app/hourly', 'orders/check', 'orders/nightly']);
    // 02:30 in Kolkata (UTC+5:30) is 21:00 UTC.
    const nightly = jobs.find((j) => j.job === 'nightly')!;
    assert.equal(nightly.next.length, 2);
    for (const at of nightly.next) assert.match(at, /T21:00:00\.000Z$/);
    // Six fields: 04:00:00 on Sundays.
    for (const at of jobs.find((j) => j.job === 'check')!.next) assert.equal(new Date(at).getUTCDay(), 0);
    const text = strata(['schedule', '--config', config]);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /orders\s+nightly\s+backup full\s+30 2 \* \* \* \(Asia\/Kolkata\)/);
  });

  it('refuses a bad cron expression, time zone or job kind, naming the key', () => {
    const config = path.join(dir.path, 'strata.config.json');
    const cases: [unknown, RegExp][] = [
      [{ databases: { app: { url: './a.db', schedules: { b: { job: 'backup', cron: '61 * * * *' } } } } }, /databases\.app\.schedules\.b\.cron: not a cron expression/],
      [{ schedules: { b: { job: 'backup', cron: '0 2 * * *', timezone: 'Mars/Olympus' } } }, /schedules\.b\.timezone: unknown time zone "Mars\/Olympus"/],
      [{ schedules: { b: { job: 'backups', cron: '0 2 * * *' } } }, /schedules\.b\.job: "job" must be one of backup, verify, prune, health, replicate, copy/],
      [{ schedules: { c: { job: 'copy', cron: '0 2 * * *' } } }, /schedules\.c: a copy job copies to the mirror; set "mirror"/],
      [{ daemon: { overlap: 'wait' } }, /daemon\.overlap: expected "skip" or "queue"/],
      [
        { notifications: { channels: { ops: { type: 'webhook', url: 'https://hooks.example.invalid/T0/B0/secret', events: ['failure'] } } } },
        /notifications\.channels\.ops\.url: the webhook URL is a secret: give \{ "env": "VARIABLE" \} or \{ "file": "path" \}, never the value itself/,
      ],
      [
        { notifications: { channels: { m: { type: 'email', host: 'smtp.example.invalid', from: 'a@b.c', to: ['d@e.f'], password: 'hunter2', events: ['failure'] } } } },
        /notifications\.channels\.m\.password: the SMTP password is a secret/,
      ],
      // Continuous replication reads SQLite's WAL: on a server database it is refused at load, at its key.
      [
        { databases: { app: { url: './a.db', schedules: { live: { job: 'replicate' } } }, shop: { url: 'postgres://strata@127.0.0.1:5432/shop', schedules: { live: { job: 'replicate' } } } } },
        /databases\.shop\.schedules\.live: continuous replication \(job "replicate"\) is for PostgreSQL cluster \(physical\) and SQLite databases only for now; shop is a PostgreSQL database\. Schedule an incremental backup job for it instead/,
      ],
      [
        { schedules: { live: { job: 'replicate' } }, databases: { app: { url: './a.db' }, orders: { url: 'mysql://strata@127.0.0.1:3306/orders' } } },
        /schedules\.live \(for databases\.orders\): continuous replication \(job "replicate"\) is for PostgreSQL cluster \(physical\) and SQLite databases only for now; orders is a MySQL\/MariaDB database\. .*drop the job for it with "schedules": \{ "live": false \} in databases\.orders/,
      ],
    ];
    for (const [content, message] of cases) {
      writeConfig(config, content);
      const out = strata(['schedule', '--config', config]);
      assert.equal(out.status, 2, out.stderr);
      assert.match(out.stderr, message);
    }
    // Dropped for the server database, the top-level replicate job is fine.
    writeConfig(config, { schedules: { live: { job: 'replicate' } }, databases: { app: { url: './a.db' }, shop: { url: 'postgres://strata@127.0.0.1:5432/shop', schedules: { live: false } } } });
    const out = strata(['schedule', '--config', config, '--json']);
    assert.equal(out.status, 0, out.stderr);
    assert.deepEqual(json<{ jobs: { database: string; job: string }[] }>(out).jobs.map((j) => `${j.database}/${j.job}`), ['app/live']);
  });
});

describe('strata daemon', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  /** An unencrypted repository and the database app (20 rows) with these schedules in the config, as most tests here start. */
  const appWithSchedules = (schedules: Record<string, unknown>): { repo: string; config: string } => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 20 });
    const config = path.join(dir.path, 'strata.config.json');
    writeConfig(config, { repository: './repo', databases: { app: { url: './app.db' } }, schedules });
    return { repo, config };
  };

  it('runs jobs on time, never two of one database at once, queues or skips, journals hooks, reloads on SIGHUP and ends cleanly on SIGTERM', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 50 });
    buildRichDatabase(path.join(dir.path, 'other.db'), { rows: 20 });
    const config = path.join(dir.path, 'strata.config.json');
    const first = {
      repository: './repo',
      // Whichever of app/b and app/v fires first, the other waits for it.
      daemon: { overlap: 'queue' },
      databases: {
        app: {
          url: './app.db',
          schedules: {
            // Both due every two seconds: one runs, the other is queued behind it.
            b: { job: 'backup', type: 'incremental', cron: '*/2 * * * * *', hooks: { after: 'echo "after $STRATA_JOB $STRATA_BACKUP_ID${STRATA_PASSPHRASE:-}"; cat' } },
            v: { job: 'verify', cron: '*/2 * * * * *' },
          },
        },
        other: { url: './other.db', schedules: { refused: { job: 'backup', cron: '*/2 * * * * *', hooks: { before: 'echo "not now: $STRATA_DATABASE" >&2; exit 3', onFailure: 'echo "failure hook saw $STRATA_ERROR"' } } } },
      },
    };
    writeConfig(config, first);
    const daemon = startDaemon(config);
    try {
      // Three backups of app, each with its queued verification after it.
      for (let n = 1; n <= 3; n++) await daemon.waitFor(new RegExp(`(?:app/v: succeeded[\\s\\S]*){${n}}`));
      await daemon.waitFor(/other\/refused: failed: the before hook exited with 3/);

      // SIGHUP: a changed schedule is picked up (app/b stops, app/r starts; other gets a job that blocks).
      writeConfig(config, {
        ...first,
        databases: {
          app: { url: './app.db', schedules: { r: { job: 'backup', type: 'full', cron: '* * * * * *' } } },
          other: { url: './other.db', schedules: { long: { job: 'backup', cron: '* * * * * *', hooks: { before: 'sleep 60' } } } },
        },
      });
      const mark = daemon.log().length;
      daemon.child.kill('SIGHUP');
      await daemon.waitFor(/SIGHUP: reloaded/, 60_000, mark);
      const reloadedAt = Date.now();
      await daemon.waitFor(/app\/r: succeeded/, 60_000, mark);
      await daemon.waitFor(/other\/long: backup full started/, 60_000, mark);
      daemon.child.kill('SIGTERM');
      const exit = await daemon.exit;
      assert.equal(exit.status, 0, exit.stderr);
      assert.match(exit.stderr, /stopping: aborting 1 running job|stopping: aborting 2 running job/);

      const ops = await jobOperations(repo);
      const byJob = (name: string): JournalOperation[] => ops.filter((o) => detail(o, 'job') === name);
      // Nothing is left RUNNING: every entry was closed by the daemon itself.
      assert.deepEqual(ops.filter((o) => o.status === 'RUNNING'), []);

      // On time: every run started by its schedule began within a second of its due time.
      const scheduled = ran(ops).filter((o) => detail(o, 'trigger') === 'schedule');
      assert.ok(scheduled.length >= 6, `expected several scheduled runs, got ${scheduled.length}`);
      for (const op of scheduled) assert.ok(startedLate(op) >= 0 && startedLate(op) < ON_TIME_MS, `${detail(op, 'job')} due ${detail(op, 'scheduledAt')} started ${detail(op, 'startedAt')}`);

      // Never two jobs of one database at once: the runs of each database, by their journal times, do not overlap.
      for (const database of ['app', 'other']) {
        const runs = ran(ops)
          .filter((o) => o.last.database === database && o.status !== 'RUNNING')
          .map((o) => ({ start: Date.parse(o.startedAt), end: Date.parse(o.last.at), what: `${detail(o, 'job')}@${o.startedAt}` }))
          .sort((a, b) => a.start - b.start);
        for (let i = 1; i < runs.length; i++) assert.ok(runs[i]!.start >= runs[i - 1]!.end, `${runs[i - 1]!.what} and ${runs[i]!.what} overlap`);
      }

      // One of app/b and app/v was queued behind the other (journaled) and then ran.
      assert.ok(ops.some((o) => detail(o, 'queued') === true && o.last.database === 'app'));
      assert.ok(ran(ops).some((o) => detail(o, 'trigger') === 'queued' && o.status === 'COMPLETED'));
      const backups = await (async () => {
        const r = await openRepository(repo);
        try {
          return await r.list();
        } finally {
          await r.close();
        }
      })();
      // Every completed backup job names a backup that exists; its after hook got the facts and the JSON on stdin.
      const bRuns = ran(byJob('b')).filter((o) => o.status === 'COMPLETED');
      assert.ok(bRuns.length >= 3);
      for (const op of bRuns) {
        assert.ok(backups.some((b) => b.id === op.last.backupId), `${op.last.backupId} is in the catalog`);
        const [after] = detail<{ hook: string; exitCode: number; output: string }[]>(op, 'hooks');
        assert.equal(after!.hook, 'after');
        assert.equal(after!.exitCode, 0);
        // The facts, and not the daemon's passphrase (STRATA_PASSPHRASE is set for it).
        assert.ok(after!.output.startsWith(`after b ${op.last.backupId}\n`), after!.output);
        const stdin = JSON.parse(after!.output.split('\n')[1]!) as Record<string, unknown>;
        assert.equal(stdin['database'], 'app');
        assert.equal(stdin['backupId'], op.last.backupId);
      }

      // A failing before hook: the job did not run (no backup of other), the failure and both hooks are journaled.
      const refused = ran(byJob('refused'));
      assert.ok(refused.length >= 1);
      for (const op of refused) {
        assert.equal(op.status, 'FAILED');
        assert.equal(op.last.error?.code, 'HOOK_FAILED');
        const hooks = detail<{ hook: string; exitCode: number; output: string }[]>(op, 'hooks');
        assert.deepEqual(hooks.map((h) => [h.hook, h.exitCode]), [['before', 3], ['onFailure', 0]]);
        assert.equal(hooks[0]!.output, 'not now: other\n');
        assert.match(hooks[1]!.output, /^failure hook saw the before hook exited with 3/);
      }
      assert.equal(backups.filter((b) => b.database === 'other').length, 0);

      // SIGHUP: app/b did not start after the reload, app/r did.
      assert.ok(ran(byJob('b')).every((o) => Date.parse(o.startedAt) < reloadedAt));
      assert.ok(ran(byJob('r')).some((o) => o.status === 'COMPLETED'));
      // SIGTERM aborted other/long in its before hook: its entry says interrupted.
      const long = ran(byJob('long'));
      assert.equal(long.length, 1);
      assert.equal(long[0]!.status, 'FAILED');
      assert.equal(long[0]!.last.error?.code, 'ABORTED');
      assert.equal(detail(long[0]!, 'interrupted'), true);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
  });

  it('runs jobs of one database due at the same instant one after the other, even with overlap "skip"; strata schedule and the start say they coincide', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 10 });
    const config = path.join(dir.path, 'strata.config.json');
    // As README's example: an incremental backup and another job of the same database due together.
    writeConfig(config, {
      repository: './repo',
      daemon: { overlap: 'skip', onStop: 'finish' },
      databases: { app: { url: './app.db' } },
      schedules: { b: { job: 'backup', type: 'incremental', cron: '*/5 * * * * *' }, p: { job: 'prune', cron: '*/5 * * * * *' } },
    });
    const schedule = strata(['schedule', '--config', config]);
    assert.equal(schedule.status, 0, schedule.stderr);
    assert.match(schedule.stdout, /^app: jobs due at the same time run one after the other: b and p \(next \S+\)$/m);
    const listed = json<{ dueTogether: { database: string; jobs: string[]; next: string }[] }>(strata(['schedule', '--config', config, '--json'])).dueTogether;
    assert.deepEqual(listed.map((p) => `${p.database}: ${p.jobs.join(' and ')}`), ['app: b and p']);

    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/app: jobs due at the same time run one after the other: b and p/);
      // Both jobs ran, however slow the first one of an instant was: the journal below says
      // whether they ran for one instant (without the fix, one of each instant was skipped).
      await daemon.waitFor(/app\/b: succeeded[\s\S]*app\/p: succeeded|app\/p: succeeded[\s\S]*app\/b: succeeded/, 120_000);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const ops = await jobOperations(repo);
    const at = (o: JournalOperation): string => `${String(detail(o, 'job'))}@${detail<string>(o, 'scheduledAt')}`;
    // No run was skipped for one due at its own instant (a skip behind a run still in progress
    // from an earlier instant would be right, but the five seconds between instants leave none).
    const started = ran(ops);
    const skippedTogether = ops.filter((o) => detail(o, 'skipped') === true && started.some((r) => detail(r, 'scheduledAt') === detail(o, 'scheduledAt')));
    assert.deepEqual(skippedTogether.map(at), []);
    // The one that came second waited for the first (journaled as queued, saying why) and then ran.
    const queued = ops.filter((o) => detail(o, 'queued') === true);
    assert.ok(queued.length >= 1, ops.map(at).join(', '));
    for (const op of queued) assert.match(detail<string>(op, 'reason'), /^due at the same time as app\/[bp], which runs first$/);
    const completed = started.filter((o) => o.status === 'COMPLETED');
    const both = completed.filter((o) => detail(o, 'job') === 'b' && completed.some((p) => detail(p, 'job') === 'p' && detail(p, 'scheduledAt') === detail(o, 'scheduledAt')));
    assert.ok(both.length >= 1, `b and p never both ran for one instant: ${completed.map(at).join(', ')}`);
  });

  it('a health job fails for a database with no backups: an empty repository, or one that holds only other databases\' backups', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    for (const db of ['a', 'c']) buildRichDatabase(path.join(dir.path, `${db}.db`), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    writeConfig(config, { repository: './repo', databases: { a: { url: './a.db' }, c: { url: './c.db' } }, schedules: { h: { job: 'health', maxAge: '1h', cron: '*/2 * * * * *' } } });
    const daemon = startDaemon(config);
    try {
      const outcome = /c\/h: (?:succeeded|failed)[^\n]*/;
      assert.match((await daemon.waitFor(outcome))[0], /c\/h: failed: backup-age: the repository holds no backups at all/);
      // a gets a backup, c still has none.
      const backup = strata(['backup', path.join(dir.path, 'a.db'), '--repo', repo, '--name', 'a']);
      assert.equal(backup.status, 0, backup.stderr);
      let mark = daemon.log().length;
      const seen = await daemon.waitFor(/a\/h: succeeded: healthy \([1-9]\d* checks\)/, 120_000, mark);
      mark += seen.index! + seen[0].length;
      // A run of c beside a's may have read the repository before the backup: either way, not healthy.
      assert.match((await daemon.waitFor(outcome, 120_000, mark))[0], /c\/h: failed: backup-age: (?:c has no backups at all|the repository holds no backups at all)/);
      await daemon.waitFor(/c\/h: failed: backup-age: c has no backups at all/, 120_000, mark);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    assert.doesNotMatch(daemon.log(), /c\/h: succeeded/);
    const health = ran(await jobOperations(repo)).filter((o) => o.last.database === 'c' && o.status !== 'RUNNING' && detail(o, 'interrupted') !== true);
    assert.ok(health.length >= 2);
    for (const op of health) assert.equal(op.last.error?.code, 'UNHEALTHY');
  });

  it('several SIGHUPs close together reload one after the other: each job still runs once per due time', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    const content = { repository: './repo', databases: { app: { url: './app.db' } }, schedules: { p: { job: 'prune', cron: '*/2 * * * * *' } } };
    writeConfig(config, content);
    const daemon = startDaemon(config, [], { TEST_WEBHOOK_URL: 'http://127.0.0.1:9/unused' });
    try {
      await daemon.waitFor(/app\/p: prune at/);
      // The new config adds notifications: a reload then reads the journal (for the failure counts),
      // and the SIGHUPs after the first come while it waits for that.
      writeConfig(config, { ...content, notifications: { channels: { ops: { type: 'webhook', url: { env: 'TEST_WEBHOOK_URL' }, events: ['failure'] } } } });
      for (let i = 0; i < 4; i++) {
        daemon.child.kill('SIGHUP');
        // Apart, so that the kernel does not merge them into one.
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const mark = daemon.log().length;
      await daemon.waitFor(/SIGHUP: reloaded/, 60_000, mark);
      await daemon.waitFor(/(?:app\/p: (?:succeeded|due at)[\s\S]*){3}/, 120_000, mark);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    // One journal entry per due time: no second timer of the same job ran it again, queued or skipped it.
    const dueTimes = (await jobOperations(repo)).map((o) => detail<string>(o, 'scheduledAt'));
    assert.deepEqual(dueTimes.filter((at, i) => dueTimes.indexOf(at) !== i), []);
  });

  it('a job killed with the daemon (SIGKILL) reads as interrupted in the journal', async () => {
    const pidFile = path.join(dir.path, 'hook.pid');
    const { repo, config } = appWithSchedules({ slow: { job: 'backup', cron: '* * * * * *', hooks: { before: `echo $$ > '${pidFile}'; exec sleep 60` } } });
    const daemon = startDaemon(config, ['--log-format', 'json']);
    try {
      await daemon.waitFor(/"message":"backup full started/);
      // The hook has started once its pid file is there.
      for (let i = 0; i < 600; i++) {
        try {
          if (readFileSync(pidFile, 'utf8').trim()) break;
        } catch {
          // Not yet.
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      daemon.child.kill('SIGKILL');
      await daemon.exit;
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
      try {
        process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    // Every log line is one JSON object.
    for (const line of daemon.log().trim().split('\n')) assert.equal(typeof (JSON.parse(line) as { message: string }).message, 'string');
    const ops = ran(await jobOperations(repo));
    assert.equal(ops.length, 1);
    assert.equal(ops[0]!.interrupted, true);
    assert.equal(ops[0]!.status, 'FAILED');
    assert.equal(detail(ops[0]!, 'job'), 'slow');
  });

  it('a hook that outlives its timeout is killed and fails the job, and says so in the journal', async () => {
    const { repo, config } = appWithSchedules({ stuck: { job: 'backup', cron: '*/2 * * * * *', hooks: { before: 'echo waiting; exec sleep 60', timeout: '1s' } } });
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/app\/stuck: failed: the before hook timed out; the job did not run/);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const failed = ran(await jobOperations(repo)).filter((o) => o.last.error?.code === 'HOOK_FAILED');
    assert.ok(failed.length >= 1);
    const [before] = detail<{ hook: string; timedOut: boolean; signal: string; output: string; durationMs: number }[]>(failed[0]!, 'hooks');
    assert.deepEqual([before!.hook, before!.timedOut, before!.signal, before!.output], ['before', true, 'SIGKILL', 'waiting\n']);
    assert.ok(before!.durationMs < 60_000);
    const repository = await openRepository(repo);
    assert.equal((await repository.list()).length, 0);
    await repository.close();
  });

  it('a failing after hook fails the run (its backup stays), runs onFailure and is journaled as HOOK_FAILED', async () => {
    const cleaned = path.join(dir.path, 'cleaned');
    const { repo, config } = appWithSchedules({ b: { job: 'backup', cron: '*/2 * * * * *', hooks: { after: 'echo still in maintenance; exit 3', onFailure: `touch '${cleaned}'` } } });
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/app\/b: failed: the after hook exited with 3; the job's own work succeeded: app_full_/);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const failed = ran(await jobOperations(repo)).filter((o) => o.last.error?.code === 'HOOK_FAILED');
    assert.ok(failed.length >= 1);
    assert.deepEqual(detail<{ hook: string }[]>(failed[0]!, 'hooks').map((h) => h.hook), ['after', 'onFailure']);
    assert.ok(existsSync(cleaned), 'onFailure ran');
    const repository = await openRepository(repo);
    assert.ok((await repository.list()).some((b) => b.id === failed[0]!.last.backupId), 'the backup the run made stays');
    await repository.close();
  });

  it('a hook is done when its shell exits: what it left running in the background does not hold the job up and is killed', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    const pidFile = path.join(dir.path, 'helper.pid');
    writeConfig(config, {
      repository: './repo',
      databases: { app: { url: './app.db' } },
      // The helper keeps the hook's output open; the timeout is long enough never to be reached by the hook itself.
      schedules: { b: { job: 'backup', cron: '*/2 * * * * *', hooks: { before: `sleep 600 & echo $! > '${pidFile}'; echo started`, timeout: '20s' } } },
    });
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/app\/b: (?:succeeded|failed)/);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const helper = Number(readFileSync(pidFile, 'utf8').trim());
    const [first] = ran(await jobOperations(repo)).filter((o) => o.status !== 'RUNNING' && detail(o, 'interrupted') !== true);
    assert.equal(first!.status, 'COMPLETED');
    const [before] = detail<{ hook: string; exitCode: number | null; timedOut: boolean; output: string }[]>(first!, 'hooks');
    assert.deepEqual([before!.hook, before!.exitCode, before!.timedOut, before!.output], ['before', 0, false, 'started\n']);
    // The helper was killed with the hook's process group (a killed process may linger as a zombie until reaped).
    const alive = (): boolean => {
      try {
        return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${helper}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    for (const deadline = Date.now() + 60_000; alive() && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 100));
    try {
      assert.equal(alive(), false, `the hook's background process ${helper} is still running`);
    } finally {
      if (alive()) process.kill(helper, 'SIGKILL');
    }
  });

  it('with daemon.onStop "finish", SIGTERM lets the running job finish and starts no other', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 20 });
    const config = path.join(dir.path, 'strata.config.json');
    const started = path.join(dir.path, 'started');
    writeConfig(config, {
      repository: './repo',
      daemon: { onStop: 'finish' },
      databases: { app: { url: './app.db' } },
      schedules: { slow: { job: 'backup', cron: '* * * * * *', hooks: { before: `touch '${started}'; sleep 2` } } },
    });
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/app\/slow: backup full started/);
      while (!existsSync(started)) await new Promise((resolve) => setTimeout(resolve, 50));
      daemon.child.kill('SIGTERM');
      const exit = await daemon.exit;
      assert.equal(exit.status, 0, exit.stderr);
      assert.match(exit.stderr, /stopping: waiting for 1 running job/);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const ops = ran(await jobOperations(repo));
    assert.equal(ops.length, 1);
    assert.equal(ops[0]!.status, 'COMPLETED');
    const repository = await openRepository(repo);
    assert.equal((await repository.list()).length, 1);
    await repository.close();
  });

  it('with daemon.onStop "finish", SIGTERM does not start a run that was waiting for a concurrency slot', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    for (const db of ['a', 'b']) buildRichDatabase(path.join(dir.path, `${db}.db`), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    // One slot for two databases due together: one runs (its before hook holds it), the other waits.
    writeConfig(config, {
      repository: './repo',
      daemon: { onStop: 'finish', concurrency: 1 },
      databases: { a: { url: './a.db' }, b: { url: './b.db' } },
      schedules: { s: { job: 'backup', cron: '* * * * * *', hooks: { before: `touch '${dir.path}'/started-"$STRATA_DATABASE"; sleep 2` } } },
    });
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/[ab]\/s: backup full started/);
      await untilExists(['a', 'b'].map((db) => path.join(dir.path, `started-${db}`)));
      daemon.child.kill('SIGTERM');
      const exit = await daemon.exit;
      assert.equal(exit.status, 0, exit.stderr);
      assert.match(exit.stderr, /[ab]\/s: due at \S+; not started: the daemon is stopping/);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const ops = await jobOperations(repo);
    assert.deepEqual(ran(ops).map((o) => o.status), ['COMPLETED']);
    // The run due with the one that ran (waiting for the slot) is the one the stop must not start;
    // runs due later, while that one held its database, may also be skipped for being busy.
    const dueAt = detail(ran(ops)[0]!, 'scheduledAt');
    const notStarted = ops.filter((o) => detail(o, 'skipped') === true && detail(o, 'scheduledAt') === dueAt);
    assert.equal(notStarted.length, 1, JSON.stringify(ops.map((o) => o.last.details)));
    assert.equal(detail(notStarted[0]!, 'reason'), 'the daemon was stopping');
    const repository = await openRepository(repo);
    assert.equal((await repository.list()).length, 1);
    await repository.close();
  });

  it('a SIGHUP while the daemon stops is ignored: the job it waits for finishes and the daemon exits 0', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    const started = path.join(dir.path, 'started');
    const release = path.join(dir.path, 'release');
    // The before hook holds the job until the test releases it (a minute at most).
    writeConfig(config, {
      repository: './repo',
      daemon: { onStop: 'finish' },
      databases: { app: { url: './app.db' } },
      schedules: { slow: { job: 'backup', cron: '* * * * * *', hooks: { before: `touch '${started}'; for i in $(seq 600); do [ -e '${release}' ] && break; sleep 0.1; done` } } },
    });
    const daemon = startDaemon(config);
    try {
      await untilExists([started]);
      daemon.child.kill('SIGTERM');
      await daemon.waitFor(/stopping: waiting for 1 running job/);
      daemon.child.kill('SIGHUP');
      await daemon.waitFor(/SIGHUP ignored: the daemon is stopping/);
      writeFileSync(release, '');
      const exit = await daemon.exit;
      assert.deepEqual([exit.status, exit.signal], [0, null], exit.stderr);
    } finally {
      writeFileSync(release, '');
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const ops = ran(await jobOperations(repo));
    assert.deepEqual(ops.map((o) => o.status), ['COMPLETED']);
  });

  it('a SIGHUP while the repository opens (a slow passphrase command) does not end the daemon: it reloads once started', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo], { env: { STRATA_PASSPHRASE: 'opening passphrase' } }).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    const asked = path.join(dir.path, 'asked');
    const release = path.join(dir.path, 'release');
    writeConfig(config, { repository: './repo', databases: { app: { url: './app.db' } }, schedules: { p: { job: 'prune', cron: '0 3 * * *' } } });
    // The passphrase command answers once the test has sent its SIGHUP (a minute at most).
    const command = `touch '${asked}'; for i in $(seq 600); do [ -e '${release}' ] && break; sleep 0.1; done; echo 'opening passphrase'`;
    const daemon = startDaemon(config, ['--passphrase-command', command]);
    try {
      await untilExists([asked]);
      // The command runs synchronously: the daemon's handler sees the signal once it answers.
      daemon.child.kill('SIGHUP');
      writeFileSync(release, '');
      await daemon.waitFor(/SIGHUP: the configuration will be read again once the daemon has started/);
      await daemon.waitFor(/ info: started \(pid/);
      await daemon.waitFor(/SIGHUP: reloaded/);
      daemon.child.kill('SIGTERM');
      const exit = await daemon.exit;
      assert.deepEqual([exit.status, exit.signal], [0, null], exit.stderr);
    } finally {
      writeFileSync(release, '');
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
  });

  it('with missedRuns run-once, a run cut off by a kill is run again at the next start, though its next due time is a year away', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    const started = path.join(dir.path, 'started');
    const release = path.join(dir.path, 'release');
    const hold = `touch '${started}'; for i in $(seq 600); do [ -e '${release}' ] && break; sleep 0.1; done`;
    const content = (cron: string) => ({
      repository: './repo',
      daemon: { missedRuns: 'run-once' },
      databases: { app: { url: './app.db' } },
      schedules: { nightly: { job: 'backup', cron, hooks: { before: hold } } },
    });
    writeConfig(config, content('* * * * * *'));
    const first = startDaemon(config);
    try {
      await untilExists([started]);
      first.child.kill('SIGKILL');
      await first.exit;
    } finally {
      writeFileSync(release, '');
      if (first.child.exitCode === null) first.child.kill('SIGKILL');
    }
    writeConfig(config, content('0 3 1 1 *'));
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/app\/nightly: the run due \S+ was interrupted \(the daemon stopped or was killed during it\); running it again now/);
      await daemon.waitFor(/app\/nightly: succeeded/);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const ops = ran(await jobOperations(repo));
    assert.deepEqual(ops.map((o) => [o.status, o.interrupted, detail(o, 'trigger')]), [['FAILED', true, 'schedule'], ['COMPLETED', false, 'missed']]);
    assert.equal(detail(ops[1]!, 'scheduledAt'), detail(ops[0]!, 'scheduledAt'), 'the run again is the one that was due');
  });

  it('refuses to start (exit 2) when a database with backup jobs has a URL no engine understands, naming it and the scheme; a reload to such a config keeps the running one', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    // A database whose jobs never open it (prune, health) may have a URL this build cannot read (kept for its retention).
    const good = { repository: './repo', databases: { app: { url: './app.db' }, legacy: { url: 'mssql://db.example/old' } }, schedules: { p: { job: 'prune', cron: '*/2 * * * * *' } } };
    const typo = { ...good, databases: { ...good.databases, shop: { url: 'postgress://backup:hunter2@127.0.0.1:5432/shop', schedules: { nightly: { job: 'backup', cron: '0 2 * * *' } } } } };
    writeConfig(config, typo);
    const attempt = startDaemon(config);
    const ranAnyway = attempt.waitFor(/ info: started \(pid/).then(
      () => true,
      () => false,
    );
    if (await Promise.race([ranAnyway, attempt.exit.then(() => false)])) {
      attempt.child.kill('SIGKILL');
      assert.fail(`the daemon started with a database no engine understands:\n${attempt.log()}`);
    }
    const refused = await attempt.exit;
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /databases\.shop\.url: no engine understands the URL scheme "postgress:" \(known: postgres, postgresql, mysql, mariadb, sqlite, or a SQLite file path\)/);
    assert.doesNotMatch(refused.stderr, /hunter2/);
    assert.deepEqual(await jobOperations(repo), []);

    writeConfig(config, good);
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/app\/p: prune at/);
      writeConfig(config, typo);
      daemon.child.kill('SIGHUP');
      await daemon.waitFor(/SIGHUP: kept the running configuration: databases\.shop\.url: no engine understands the URL scheme "postgress:"/);
      // The running configuration goes on.
      const mark = daemon.log().length;
      await daemon.waitFor(/app\/p: succeeded/, 120_000, mark);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    assert.doesNotMatch(daemon.log(), /SIGHUP: reloaded|shop\/p|hunter2/);
  });

  it('runs every kind of job: sampled verification oldest first, prune, health, copy to the mirror, replication; missed runs once on start', async () => {
    const repo = path.join(dir.path, 'repo');
    const mirror = path.join(dir.path, 'mirror');
    for (const r of [repo, mirror]) assert.equal(strata(['init', '--repo', r, '--no-encryption']).status, 0);
    for (const db of ['app', 'old', 'stale', 'live']) buildRichDatabase(path.join(dir.path, `${db}.db`), { rows: 10 });
    const backup = (db: string, time: string): string => {
      const out = strata(['backup', path.join(dir.path, `${db}.db`), '--repo', repo, '--name', db, '--time', time, '--json']);
      assert.equal(out.status, 0, out.stderr);
      return json<{ id: string }>(out).id;
    };
    const appIds = ['2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z'].map((t) => backup('app', t));
    for (const t of ['2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z']) backup('old', t);
    backup('stale', '2020-01-01T00:00:00Z');
    const config = path.join(dir.path, 'strata.config.json');
    const content = {
      repository: './repo',
      mirror: './mirror',
      // Jobs run every 2 s, so SIGTERM often meets one running: it finishes, so that each job's last
      // outcome below is its own (an aborted run reads as interrupted, which other tests cover).
      daemon: { overlap: 'queue', concurrency: 4, metricsFile: './metrics/strata.prom', onStop: 'finish' },
      databases: {
        app: { url: './app.db', schedules: { v: { job: 'verify', sample: 1, cron: '*/2 * * * * *' }, c: { job: 'copy', cron: '*/2 * * * * *' } } },
        old: { url: './old.db', retention: { keepLast: 1 }, schedules: { p: { job: 'prune', cron: '*/2 * * * * *' } } },
        stale: { url: './stale.db', schedules: { h: { job: 'health', maxAge: '2d', cron: '*/2 * * * * *' } } },
        live: { url: './live.db', schedules: { r: { job: 'replicate', intervalMs: 200, checkpointLock: false } } },
      },
    };
    writeConfig(config, content);
    mkdirSync(path.join(dir.path, 'metrics'));
    let daemon = startDaemon(config);
    try {
      await daemon.waitFor(/(?:app\/v: succeeded[\s\S]*){3}/);
      await daemon.waitFor(/app\/c: succeeded: copied 3 backup/);
      await daemon.waitFor(/old\/p: succeeded: kept 1, removed 2/);
      await daemon.waitFor(/stale\/h: failed: backup-age/);
      await daemon.waitFor(/live\/r: replicate took live_\S+ as a new base/);
      // checkpointLock: false: the application's checkpoint runs (held, the lock makes it give up:
      // 1|-1|-1, every time). One that meets the job's own checkpoint of the moment gives up too,
      // so it has a few tries.
      let checkpoint = '';
      for (let tries = 0; tries < 20 && !/^0\|/.test(checkpoint); tries++) {
        if (tries > 0) await new Promise((resolve) => setTimeout(resolve, 50));
        const answer = spawnSync('sqlite3', ['-cmd', '.timeout 20000', path.join(dir.path, 'live.db'), 'PRAGMA wal_checkpoint(PASSIVE)'], { encoding: 'utf8' });
        checkpoint = `${answer.stdout}${answer.stderr}`;
      }
      assert.match(checkpoint, /^0\|/, `the application's checkpoint beside the replicate job: ${checkpoint}`);
      daemon.child.kill('SIGTERM');
      const exit = await daemon.exit;
      assert.equal(exit.status, 0, exit.stderr);
      assert.match(exit.stderr, /live\/r: replicate stopped/);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    let ops = ran(await jobOperations(repo));
    // Sampling: one restore point a run, the oldest never verified first.
    const verified = ops.filter((o) => detail(o, 'job') === 'v' && o.status === 'COMPLETED').map((o) => detail<{ id: string }[]>(o, 'verified')[0]!.id);
    assert.deepEqual(verified.slice(0, 3), appIds);
    const repository = await openRepository(repo);
    assert.equal((await repository.list({ database: 'old' })).length, 1);
    // The replicate job took a base restore point of live (it had none) to chain its segments to.
    assert.equal((await repository.list({ database: 'live' })).length, 1);
    await repository.close();
    const mirrored = await openRepository(mirror);
    assert.deepEqual((await mirrored.list({ database: 'app' })).map((b) => b.id).sort(), [...appIds].sort());
    await mirrored.close();
    const health = ops.find((o) => detail(o, 'job') === 'h')!;
    assert.equal(health.last.error?.code, 'UNHEALTHY');

    // The metrics file the daemon kept, parsed as Prometheus text, says what inventory says.
    const metrics = metricValues(readFileSync(path.join(dir.path, 'metrics', 'strata.prom'), 'utf8'));
    const inventory = json<{ databases: { database: string; backups: number; storedBytes: number; latest: { createdAt: string }; lastVerified: { at: string } | null }[] }>(
      strata(['inventory', '--json', '--config', config]),
    ).databases;
    assert.deepEqual(inventory.map((e) => e.database), ['app', 'live', 'old', 'stale']);
    for (const entry of inventory) {
      assert.equal(metrics.get(`strata_backups/${entry.database}`), entry.backups, entry.database);
      assert.equal(metrics.get(`strata_stored_bytes/${entry.database}`), entry.storedBytes, entry.database);
      assert.equal(metrics.get(`strata_newest_backup_timestamp_seconds/${entry.database}`), Date.parse(entry.latest.createdAt) / 1000, entry.database);
      assert.equal(metrics.get(`strata_last_verification_timestamp_seconds/${entry.database}`), entry.lastVerified ? Date.parse(entry.lastVerified.at) / 1000 : undefined, entry.database);
    }
    assert.equal(metrics.get('strata_repository_stored_bytes')! >= inventory.reduce((s, e) => s + e.storedBytes, 0), true);
    assert.equal(metrics.get('strata_job_failures_total/stale/h')! >= 1, true);
    assert.equal(metrics.get('strata_job_failures_total/app/v'), 0);
    assert.equal(metrics.get('strata_mirror_lag_seconds/app'), 0);
    assert.equal(metrics.get('strata_last_verification_passed/app'), 1);
    // The stale database's newest good backup is from 2020: years old.
    assert.ok(metrics.get('strata_newest_good_backup_age_seconds/stale')! > 365 * 86_400);
    // strata metrics prints the same (ages, the time of writing, and the lag of the databases the mirror never had aside).
    const printed = strata(['metrics', '--config', config]);
    assert.equal(printed.status, 0, printed.stderr);
    const now = metricValues(printed.stdout);
    for (const [key, value] of metrics) if (!/_age_seconds|strata_metrics_timestamp_seconds|strata_mirror_lag_seconds\/(?!app$)/.test(key)) assert.equal(now.get(key), value, key);

    // What the editor shows: each database's jobs with their next run and last outcome (the server reads the journal).
    const client = new Client();
    try {
      await client.start();
      const { databases } = await client.request('strata/workspace', { folders: [dir.path], databases: [] });
      const scheduleOf = (name: string) => databases.find((d) => d.name === name)!.schedule!;
      const [copyJob, verifyJob] = scheduleOf('app');
      assert.deepEqual([copyJob!.job, copyJob!.what, verifyJob!.job, verifyJob!.what], ['c', 'copy', 'v', 'verify quick (sample 1)']);
      assert.equal(verifyJob!.last?.outcome, 'succeeded');
      assert.ok(Date.parse(verifyJob!.next!) > Date.now() - 2000);
      const [healthJob] = scheduleOf('stale');
      assert.equal(healthJob!.last?.outcome, 'failed');
      assert.match(healthJob!.last!.error!, /backup-age/);
      const [replicateJob] = scheduleOf('live');
      assert.equal(replicateJob!.cron, undefined);
      assert.equal(replicateJob!.what, 'replicate');
    } finally {
      await client.stop();
    }

    // Down for longer than a run's interval: with missedRuns run-once each job runs once on start.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    writeConfig(config, { ...content, daemon: { ...content.daemon, missedRuns: 'run-once' } });
    daemon = startDaemon(config);
    try {
      await daemon.waitFor(/old\/p: missed the run due \S+ while not running; running it now/);
      await daemon.waitFor(/old\/p: succeeded/);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    ops = ran(await jobOperations(repo));
    assert.ok(ops.some((o) => detail(o, 'job') === 'p' && detail(o, 'trigger') === 'missed' && o.status === 'COMPLETED'));
  });

  it('a sampled verify job verifies the other backups and fails naming one a newer Strata wrote, recording nothing against it', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption', '--compression', 'none']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const [newer, current] = ['2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z'].map((time) => {
      const out = strata(['backup', path.join(dir.path, 'app.db'), '--repo', repo, '--name', 'app', '--time', time, '--json']);
      assert.equal(out.status, 0, out.stderr);
      return json<{ id: string }>(out).id;
    }) as [string, string];
    // The older one as a newer Strata would have written it (its catalog entry's SHA-256 to match).
    const listed = json<{ backups: { id: string; key: string }[] }>(strata(['list', '--repo', repo, '--json'])).backups;
    const file = path.join(repo, listed.find((b) => b.id === newer)!.key);
    const tar = readFileSync(file);
    tar.write('"formatVersion": 9', tar.indexOf('"formatVersion": 1'));
    writeFileSync(file, tar);
    const catalog = JSON.parse(readFileSync(catalogPath(repo), 'utf8')) as { backups: { id: string; sha256: string }[] };
    catalog.backups.find((b) => b.id === newer)!.sha256 = createHash('sha256').update(tar).digest('hex');
    writeFileSync(catalogPath(repo), JSON.stringify(catalog));
    const config = path.join(dir.path, 'strata.config.json');
    writeConfig(config, { repository: './repo', databases: { app: { url: './app.db', schedules: { v: { job: 'verify', sample: 2, cron: '*/2 * * * * *' } } } } });
    const daemon = startDaemon(config);
    try {
      await daemon.waitFor(/app\/v: failed: /);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const failed = ran(await jobOperations(repo)).find((o) => detail(o, 'job') === 'v' && o.status === 'FAILED')!;
    assert.equal(failed.last.error?.code, 'ARTIFACT_FOREIGN');
    assert.match(failed.last.error!.message, new RegExp(`verify ${newer}: was written by a newer Strata .*upgrade this Strata to verify them`));
    const repository = await openRepository(repo);
    const verification = new Map((await repository.list({ database: 'app' })).map((b) => [b.id, b.verification?.outcome ?? null]));
    await repository.close();
    assert.deepEqual([verification.get(newer), verification.get(current)], [null, 'passed'], 'the other backup was verified, and nothing was recorded against the newer one');
  });

  it('logs what the journal keeps of an error: a password in a URL never reaches the log (text or JSON) or the journal', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    buildRichDatabase(path.join(dir.path, 'other.db'), { rows: 5 });
    const password = `pw${Math.random().toString(36).slice(2)}`;
    const config = path.join(dir.path, 'strata.config.json');
    // A mirror given as a database URL with its password (a mistake): the backups' copies to it
    // fail and so does the copy job, each saying where. And a "database" that is not one: SQLite's
    // own words about it are what the journal withholds.
    const junk = Buffer.alloc(8192, 0x41);
    junk.write('SQLite format 3\0', 0, 'latin1');
    writeFileSync(path.join(dir.path, 'junk.db'), junk);
    writeConfig(config, {
      repository: './repo',
      mirror: `postgres://app:${password}@127.0.0.1:5432/app`,
      databases: {
        app: { url: './app.db', schedules: { b: { job: 'backup', cron: '*/2 * * * * *' } } },
        other: { url: './other.db', schedules: { c: { job: 'copy', cron: '*/2 * * * * *' } } },
        junk: { url: './junk.db', schedules: { j: { job: 'backup', cron: '*/2 * * * * *' } } },
      },
      daemon: { concurrency: 3 },
    });
    const logs: string[] = [];
    for (const format of ['json', 'text']) {
      const daemon = startDaemon(config, ['--log-format', format]);
      try {
        await daemon.waitFor(/app\/b: succeeded|"database":"app","job":"b"[^\n]*succeeded|succeeded[^\n]*"database":"app","job":"b"/);
        await daemon.waitFor(/other\/c: failed|failed: [^\n]*"database":"other","job":"c"/);
        await daemon.waitFor(/junk\/j: failed|failed: [^\n]*"database":"junk","job":"j"/);
        daemon.child.kill('SIGTERM');
        assert.equal((await daemon.exit).status, 0);
      } finally {
        if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
      }
      logs.push(daemon.log());
    }
    const [jsonLog, textLog] = logs as [string, string];
    const journal = journalFiles(repo).map((f) => readFileSync(f, 'utf8')).join('\n');
    for (const [what, text] of [['the JSON log', jsonLog], ['the text log', textLog], ['the journal', journal]] as const) {
      assert.ok(!text.includes(password), `the password reached ${what}`);
      assert.match(text, /postgres:\/\/app:\*\*\*@127\.0\.0\.1:5432\/app/, what);
    }
    // A failed job's log line says what its journal entry says, no more.
    const lines = jsonLog.trim().split('\n').map((l) => JSON.parse(l) as { level: string; message: string; job?: string; code?: string });
    for (const job of ['c', 'j']) {
      const failed = ran(await jobOperations(repo)).filter((o) => detail(o, 'job') === job && o.status === 'FAILED');
      const logged = lines.filter((l) => l.job === job && l.level === 'error');
      assert.ok(failed.length >= 2 && logged.length >= 1, job);
      // A run the SIGTERM above stopped is journaled as failed with `interrupted`, and logged as "interrupted: ...".
      for (const line of logged) assert.ok(failed.some((o) => line.message === `${detail(o, 'interrupted') === true ? 'interrupted' : 'failed'}: ${o.last.error!.message}` && line.code === o.last.error!.code), line.message);
    }
    const junkRun = ran(await jobOperations(repo)).find((o) => detail(o, 'job') === 'j')!;
    assert.equal(junkRun.last.error?.code, 'DATABASE_INVALID');
    assert.match(junkRun.last.error!.message, /not a valid SQLite database \(‹message withheld: SQLITE_NOTADB›\)/);
    assert.doesNotMatch(jsonLog + textLog, /file is not a database/);
    // The text log ends an error's line with its code, which the JSON log has as `code`.
    assert.match(textLog, /junk\/j: failed: [^\n]*\[DATABASE_INVALID\]$/m);
  });

  it('serves the metrics file\'s text at GET /metrics with --metrics-listen, on a loopback address unless told otherwise', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 10 });
    for (const type of ['full', 'incremental']) assert.equal(strata(['backup', path.join(dir.path, 'app.db'), '--repo', repo, '--name', 'app', '--type', type]).status, 0);
    const config = path.join(dir.path, 'strata.config.json');
    const metricsFile = path.join(dir.path, 'strata.prom');
    writeConfig(config, { repository: './repo', daemon: { metricsFile: './strata.prom' }, databases: { app: { url: './app.db', schedules: { nightly: { job: 'backup', cron: '0 3 * * *' } } } } });

    // Not a loopback address: refused, unless asked for.
    const remote = strata(['daemon', '--config', config, '--metrics-listen', '0.0.0.0:0']);
    assert.equal(remote.status, 2, remote.stderr);
    assert.match(remote.stderr, /--metrics-listen 0\.0\.0\.0:0 is not a loopback address; the metrics are served without authentication, so give 127\.0\.0\.1:0 .* or add --metrics-allow-remote/);
    const bad = strata(['daemon', '--config', config, '--metrics-listen', 'localhost']);
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /--metrics-listen expects HOST:PORT such as 127\.0\.0\.1:9187/);

    const daemon = startDaemon(config, ['--metrics-listen', '127.0.0.1:0']);
    try {
      const url = (await daemon.waitFor(/serving the metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)/))[1]!;
      // A second daemon cannot take the same port: it says so, before opening the repository.
      const taken = strata(['daemon', '--config', config, '--metrics-listen', new URL(url).host]);
      assert.equal(taken.status, 2, taken.stderr);
      assert.match(taken.stderr, /cannot serve the metrics on 127\.0\.0\.1:\d+ \(EADDRINUSE\): another process listens there; pick another port/);

      await daemon.waitFor(/app\/nightly: backup full at/);
      while (!existsSync(metricsFile)) await new Promise((resolve) => setTimeout(resolve, 50));
      const response = await fetch(url);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
      const served = metricValues(await response.text());
      const written = metricValues(readFileSync(metricsFile, 'utf8'));
      // The same metrics (the minute's rewrite may fall between the two reads: ages aside).
      assert.deepEqual([...served.keys()].sort(), [...written.keys()].sort());
      for (const [key, value] of written) if (!/_age_seconds|strata_metrics_timestamp_seconds/.test(key)) assert.equal(served.get(key), value, key);
      assert.equal(served.get('strata_backups/app'), 2);
      assert.equal((await fetch(url.replace(/\/metrics$/, '/'))).status, 404);
      assert.equal((await fetch(url, { method: 'POST', body: '' })).status, 405);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
      // Stopped: nothing listens any more.
      await assert.rejects(fetch(url));
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
  });
});
