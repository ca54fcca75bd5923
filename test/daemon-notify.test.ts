import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { SMTPServer } from 'smtp-server';
import { openRepository } from '@strata/sdk';
import { buildRichDatabase } from './helpers/databases.js';
import { detail, jobOperations, startDaemon, writeConfig } from './helpers/daemon.js';
import { ROOT, TEST_PASSPHRASE, journalFiles, strata, useTempDir } from './helpers/env.js';

/**
 * Notifications of strata daemon, delivered for real: a webhook receiver on 127.0.0.1 and an SMTP
 * server (smtp-server from npm) started here. A job fails three times (its before hook refuses while
 * a flag file exists), escalates once, then recovers.
 */
describe('strata daemon notifications', function () {
  this.timeout(300_000);
  const dir = useTempDir();

  it('sends failures and the recovery to a webhook, the escalation to Slack-style and email after the configured count, and keeps the secrets out of journal and log', async () => {
    const posts: { path: string; body: Record<string, unknown> }[] = [];
    const http = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        posts.push({ path: req.url ?? '', body: JSON.parse(body) as Record<string, unknown> });
        res.writeHead(204).end();
      });
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const mails: { from: string; to: string[]; text: string; user?: string }[] = [];
    const password = `smtp-${Math.random().toString(36).slice(2)}-secret`;
    const smtp = new SMTPServer({
      disabledCommands: ['STARTTLS'],
      allowInsecureAuth: true,
      onAuth(auth, _session, callback) {
        if (auth.username === 'strata' && auth.password === password) callback(null, { user: auth.username });
        else callback(new Error('bad credentials'));
      },
      onData(stream, session, callback) {
        let text = '';
        stream.on('data', (d: Buffer) => (text += d.toString()));
        stream.on('end', () => {
          mails.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), text, user: session.user as string | undefined });
          callback();
        });
      },
    });
    smtp.listen(0, '127.0.0.1');
    await once(smtp.server, 'listening');
    const httpPort = (http.address() as AddressInfo).port;
    const smtpPort = (smtp.server.address() as AddressInfo).port;
    const token = `T${Math.random().toString(36).slice(2)}`;
    try {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
      buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 10 });
      const flag = path.join(dir.path, 'maintenance');
      writeFileSync(flag, '');
      writeFileSync(path.join(dir.path, 'slack-url'), `http://127.0.0.1:${httpPort}/slack/${token}\n`);
      const config = path.join(dir.path, 'strata.config.json');
      writeConfig(config, {
        repository: './repo',
        databases: { app: { url: './app.db' } },
        schedules: { b: { job: 'backup', cron: '* * * * * *', hooks: { before: `test ! -e '${flag}' || { echo "in maintenance"; exit 1; }` } } },
        notifications: {
          escalation: { afterFailures: 3 },
          channels: {
            ops: { type: 'webhook', url: { env: 'TEST_WEBHOOK_URL' }, events: ['failure', 'recovery'] },
            chat: { type: 'webhook', url: { file: './slack-url' }, format: 'slack', events: ['escalation'] },
            mail: { type: 'email', host: '127.0.0.1', port: smtpPort, user: 'strata', password: { env: 'TEST_SMTP_PASSWORD' }, from: 'strata@example.invalid', to: ['oncall@example.invalid'], events: ['escalation', 'recovery'] },
          },
        },
      });
      let daemonLog = '';
      const daemon = startDaemon(config, [], { TEST_WEBHOOK_URL: `http://127.0.0.1:${httpPort}/ops/${token}`, TEST_SMTP_PASSWORD: password });
      try {
        await daemon.waitFor(/(?:app\/b: failed[\s\S]*){3}/);
        await daemon.waitFor(/escalation notification sent to mail/);
        // Maintenance ends: the next run succeeds.
        rmSync(flag);
        await daemon.waitFor(/recovery notification sent to mail/);
        daemon.child.kill('SIGTERM');
        assert.equal((await daemon.exit).status, 0);
        daemonLog = daemon.log();
      } finally {
        if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
      }
      const ops = await jobOperations(repo);
      const failures = ops.filter((o) => o.status === 'FAILED' && detail(o, 'interrupted') !== true).length;
      assert.ok(failures >= 3);

      const ops_ = posts.filter((p) => p.path === `/ops/${token}`);
      assert.deepEqual(ops_.map((p) => p.body['event']), [...Array(failures).fill('failure'), 'recovery']);
      assert.equal(ops_[0]!.body['database'], 'app');
      assert.equal(ops_[0]!.body['job'], 'b');
      assert.match(String(ops_[0]!.body['error']), /before hook exited with 1/);
      assert.equal(ops_[2]!.body['failures'], 3);
      const chat = posts.filter((p) => p.path === `/slack/${token}`);
      assert.equal(chat.length, 1, 'one escalation per run of failures');
      assert.deepEqual(Object.keys(chat[0]!.body), ['text']);
      assert.match(String(chat[0]!.body['text']), /ESCALATION: app\/b \(backup\) has failed 3 times in a row/);
      assert.equal(mails.length, 2);
      assert.ok(mails.every((m) => m.user === 'strata' && m.from === 'strata@example.invalid' && m.to[0] === 'oncall@example.invalid'));
      assert.match(mails[0]!.text, /Subject: Strata: ESCALATION: app\/b/);
      assert.match(mails[1]!.text, /Subject: Strata: app\/b \(backup\) recovered/);
      // The escalated run says so in the journal, with what was delivered.
      const escalated = ops.find((o) => detail(o, 'escalated') === true)!;
      assert.deepEqual(
        detail<{ channel: string; event: string; ok: boolean }[]>(escalated, 'notifications').map((d) => `${d.channel}:${d.event}:${d.ok}`).sort(),
        ['chat:escalation:true', 'mail:escalation:true', 'ops:failure:true'],
      );
      // Secrets: neither the webhook token nor the SMTP password is in the journal or the log.
      const journal = journalFiles(repo).map((f) => readFileSync(f, 'utf8')).join('\n');
      assert.match(daemonLog, /failure notification sent to ops/);
      for (const secret of [token, password]) {
        assert.ok(!journal.includes(secret), 'a secret leaked into the journal');
        assert.ok(!daemonLog.includes(secret), 'a secret leaked into the log');
      }
    } finally {
      http.close();
      smtp.close();
    }
  });

  it('sends an SMTP password only over TLS: a server on another machine that offers no STARTTLS gets none, and the delivery fails saying so', async () => {
    // A server on this machine's own network address, not loopback (where a local relay may take a password in the clear).
    const address = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    assert.ok(address, 'this machine has no network address besides loopback to listen on');
    let offered = 0;
    const smtp = new SMTPServer({
      disabledCommands: ['STARTTLS'],
      allowInsecureAuth: true,
      onAuth(_auth, _session, callback) {
        offered += 1;
        callback(null, { user: 'strata' });
      },
      onData(stream, _session, callback) {
        stream.resume();
        stream.on('end', () => callback());
      },
    });
    smtp.listen(0, address);
    await once(smtp.server, 'listening');
    process.env['TEST_PLAIN_SMTP_PASSWORD'] = 'plain-smtp-secret';
    try {
      const { Notifier } = (await import(pathToFileURL(path.join(ROOT, 'packages/cli/dist/notifier.js')).href)) as {
        Notifier: new (config: unknown) => { send(facts: unknown, events: string[]): Promise<{ ok: boolean; error?: string }[]> };
      };
      const notifier = new Notifier({
        channels: {
          mail: { type: 'email', host: address, port: (smtp.server.address() as AddressInfo).port, user: 'strata', password: { env: 'TEST_PLAIN_SMTP_PASSWORD' }, from: 'a@b.c', to: ['d@e.f'], events: ['failure'] },
        },
      });
      const facts = { database: 'app', job: 'b', jobKind: 'backup', scheduledAt: new Date().toISOString(), startedAt: new Date().toISOString(), outcome: 'failed', error: 'boom' };
      const [delivery] = await notifier.send(facts, ['failure']);
      assert.equal(delivery!.ok, false);
      assert.match(String(delivery!.error), /STARTTLS/);
      assert.equal(offered, 0, 'the password was offered in the clear');
    } finally {
      delete process.env['TEST_PLAIN_SMTP_PASSWORD'];
      smtp.close();
    }
  });

  it('escalates once failures have lasted escalation.after while the job does not run again; a recovery, a reload that drops the job and a stop cancel it', async () => {
    const posts: { at: number; body: Record<string, unknown> }[] = [];
    const http = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        posts.push({ at: Date.now(), body: JSON.parse(body) as Record<string, unknown> });
        res.writeHead(200).end('ok');
      });
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    // Long enough for the test to act (remove a flag, reload, stop) well within it on a loaded machine.
    const AFTER_MS = 10_000;
    try {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
      for (const db of ['a', 'b', 'c', 'd', 'e']) buildRichDatabase(path.join(dir.path, `${db}.db`), { rows: 5 });
      const flaky = path.join(dir.path, 'flaky-fails');
      const late = path.join(dir.path, 'late-fails');
      writeFileSync(flaky, '');
      const config = path.join(dir.path, 'strata.config.json');
      // Prune jobs: cheap, and the hooks decide the outcome.
      const failing = (extra: Record<string, unknown>) => ({ job: 'prune', hooks: { before: 'exit 7' }, ...extra });
      const base = {
        repository: './repo',
        notifications: { escalation: { afterFailures: 1000, after: `${AFTER_MS / 1000}s` }, channels: { pager: { type: 'webhook', url: { env: 'TEST_PAGER_URL' }, events: ['escalation', 'recovery'] } } },
      };
      const db = (name: string, schedules: Record<string, unknown> = {}) => ({ url: `./${name}.db`, schedules });
      const flakyJob = { job: 'prune', cron: '*/2 * * * * *', hooks: { before: `test ! -e '${flaky}'` } };
      /** A cron (UTC) of one moment a few seconds from now: the job runs once, then not for a day. */
      const onceAt = (at: Date) => ({ cron: `${at.getUTCSeconds()} ${at.getUTCMinutes()} ${at.getUTCHours()} * * *`, timezone: 'UTC' });
      let due = new Date(Math.ceil(Date.now() / 1000) * 1000 + 8000);
      const first = () => ({ ...base, databases: { a: db('a', { once: failing(onceAt(due)) }), b: db('b', { flaky: flakyJob }), c: db('c', { gone: failing(onceAt(due)) }) } });
      writeConfig(config, first());
      const daemon = startDaemon(config, [], { TEST_PAGER_URL: `http://127.0.0.1:${(http.address() as AddressInfo).port}/pager` });
      try {
        // The one-moment jobs must be scheduled before their moment: on a slow start, move it and reload.
        for (let mark = 0; ; ) {
          const next = (await daemon.waitFor(/a\/once: prune at "[^"]*" \(UTC\); next (\S+)/, 120_000, mark))[1]!;
          if (next === due.toISOString()) break;
          due = new Date(Math.ceil(Date.now() / 1000) * 1000 + 8000);
          writeConfig(config, first());
          mark = daemon.log().length;
          daemon.child.kill('SIGHUP');
        }
        // b/flaky fails, then recovers: its timer is cancelled.
        await daemon.waitFor(/b\/flaky: failed/);
        rmSync(flaky);
        await daemon.waitFor(/b\/flaky: succeeded/);
        // c/gone fails once, then a reload drops it (and adds d/witness, failing from now on, and e/late).
        await daemon.waitFor(/c\/gone: failed/);
        writeConfig(config, {
          ...base,
          databases: {
            a: db('a', { once: failing(onceAt(due)) }),
            b: db('b', { flaky: flakyJob }),
            c: db('c'),
            d: db('d', { witness: failing({ cron: '* * * * * *' }) }),
            e: db('e', { late: { job: 'prune', cron: '* * * * * *', hooks: { before: `test ! -e '${late}'` } } }),
          },
        });
        const mark = daemon.log().length;
        daemon.child.kill('SIGHUP');
        await daemon.waitFor(/SIGHUP: reloaded/, 60_000, mark);
        // a/once failed once and does not run again: its escalation comes from the timer.
        await daemon.waitFor(/a\/once: escalation notification sent to pager/);
        // d/witness started failing after every other streak began: once it escalates, the
        // durations of b/flaky's and c/gone's failures have passed too.
        await daemon.waitFor(/d\/witness: escalation notification sent to pager/);
        // e/late starts failing, and the daemon stops before its failures last long enough.
        writeFileSync(late, '');
        await daemon.waitFor(/e\/late: failed/);
        daemon.child.kill('SIGTERM');
        const exit = await daemon.exit;
        assert.equal(exit.status, 0, exit.stderr);
      } finally {
        if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
      }
      const escalations = posts.filter((p) => p.body['event'] === 'escalation');
      assert.deepEqual(escalations.map((p) => `${p.body['database']}/${p.body['job']}`).sort(), ['a/once', 'd/witness']);
      assert.deepEqual(posts.filter((p) => p.body['event'] === 'recovery').map((p) => p.body['job']), ['flaky']);

      const all = await (async () => {
        const r = await openRepository(repo);
        try {
          return await r.journal.operations();
        } finally {
          await r.close();
        }
      })();
      const runsOf = (job: string) => all.filter((o) => o.kind === 'job' && detail(o, 'job') === job && detail(o, 'skipped') !== true);
      // a/once ran once, failed, and escalated AFTER_MS after that run began, with no other run.
      const [onceRun, ...more] = runsOf('once');
      assert.deepEqual(more, []);
      assert.equal(onceRun!.status, 'FAILED');
      const escalation = escalations.find((p) => p.body['job'] === 'once')!;
      assert.equal(escalation.body['failures'], 1);
      assert.equal(escalation.body['since'], detail(onceRun!, 'startedAt'));
      assert.match(String(escalation.body['error']), /the before hook exited with 7/);
      assert.ok(escalation.at - Date.parse(detail<string>(onceRun!, 'startedAt')) >= AFTER_MS, 'escalated before its failures lasted escalation.after');
      // The journal has it, so a restart knows it went out.
      // (d/witness escalated by its timer or by a run, whichever came first.)
      const notices = all.filter((o) => o.kind === 'notification' && o.last.database !== 'd');
      assert.deepEqual(notices.map((o) => `${o.last.database}/${String(detail(o, 'job'))}:${o.status}`), ['a/once:COMPLETED']);
      assert.deepEqual(detail(notices[0]!, 'notifications'), [{ channel: 'pager', event: 'escalation', ok: true }]);
      assert.equal(detail(notices[0]!, 'escalated'), true);
      assert.ok(runsOf('late').some((o) => o.status === 'FAILED'));
    } finally {
      http.close();
    }
  });

  it('refuses to start when a notification secret is missing or unreadable, naming the setting (exit 2); a reload naming one keeps the running configuration', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const config = path.join(dir.path, 'strata.config.json');
    const withChannels = (channels: Record<string, unknown>) => ({ repository: './repo', databases: { app: { url: './app.db' } }, schedules: { p: { job: 'prune', cron: '0 3 * * *' } }, notifications: { channels } });
    const webhook = (url: Record<string, string>) => ({ ops: { type: 'webhook', url, events: ['failure'] } });
    const cases: [Record<string, unknown>, Record<string, string | undefined>, RegExp][] = [
      [webhook({ env: 'TEST_MISSING_WEBHOOK_URL' }), { TEST_MISSING_WEBHOOK_URL: undefined }, /notifications\.channels\.ops\.url: the environment variable TEST_MISSING_WEBHOOK_URL is not set; set it in strata's environment/],
      [webhook({ env: 'TEST_MISSING_WEBHOOK_URL' }), { TEST_MISSING_WEBHOOK_URL: '  ' }, /notifications\.channels\.ops\.url: the environment variable TEST_MISSING_WEBHOOK_URL is empty/],
      [webhook({ env: 'TEST_MISSING_WEBHOOK_URL' }), { TEST_MISSING_WEBHOOK_URL: 'hooks.example.invalid/secret-part' }, /notifications\.channels\.ops\.url: the environment variable TEST_MISSING_WEBHOOK_URL does not hold an http:\/\/ or https:\/\/ URL/],
      [webhook({ env: 'TEST_MISSING_WEBHOOK_URL' }), { TEST_MISSING_WEBHOOK_URL: 'https://user:secret-part@hooks.example.invalid/x' }, /notifications\.channels\.ops\.url: the environment variable TEST_MISSING_WEBHOOK_URL holds a URL with a user name or password in it/],
      [webhook({ file: './no-such-file' }), {}, /notifications\.channels\.ops\.url: cannot read \S+no-such-file \(ENOENT\); create it with the secret in it/],
      [
        { mail: { type: 'email', host: '127.0.0.1', user: 'strata', password: { env: 'TEST_MISSING_SMTP_PASSWORD' }, from: 'a@b.c', to: ['d@e.f'], events: ['failure'] } },
        { TEST_MISSING_SMTP_PASSWORD: undefined },
        /notifications\.channels\.mail\.password: the environment variable TEST_MISSING_SMTP_PASSWORD is not set/,
      ],
    ];
    for (const [channels, env, message] of cases) {
      writeConfig(config, withChannels(channels));
      const daemon = startDaemon(config, [], env as Record<string, string>);
      const exit = await daemon.exit;
      assert.equal(exit.status, 2, exit.stderr);
      assert.match(exit.stderr, message);
      assert.doesNotMatch(exit.stderr, /secret-part/);
    }
    // Nothing ran, nothing was journaled: the start stopped before the repository was opened.
    assert.deepEqual(await jobOperations(repo), []);

    writeConfig(config, withChannels(webhook({ env: 'TEST_PRESENT_WEBHOOK_URL' })));
    const daemon = startDaemon(config, [], { TEST_PRESENT_WEBHOOK_URL: 'http://127.0.0.1:9/present' });
    try {
      await daemon.waitFor(/app\/p: prune at/);
      writeConfig(config, withChannels(webhook({ env: 'TEST_MISSING_WEBHOOK_URL' })));
      daemon.child.kill('SIGHUP');
      await daemon.waitFor(/SIGHUP: kept the running configuration: notifications\.channels\.ops\.url: the environment variable TEST_MISSING_WEBHOOK_URL is not set/);
      daemon.child.kill('SIGTERM');
      const exit = await daemon.exit;
      assert.equal(exit.status, 0, exit.stderr);
      assert.doesNotMatch(exit.stderr, /SIGHUP: reloaded/);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
  });

  it('a run the journal cannot take (the repository cannot be written) fails like any other: its onFailure hook runs and the failure is notified', async () => {
    const posts: Record<string, unknown>[] = [];
    const http = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        posts.push(JSON.parse(body) as Record<string, unknown>);
        res.writeHead(204).end();
      });
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    try {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
      buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
      const hookLog = path.join(dir.path, 'on-failure.log');
      const config = path.join(dir.path, 'strata.config.json');
      writeConfig(config, {
        repository: './repo',
        databases: { app: { url: './app.db' } },
        schedules: { p: { job: 'prune', cron: '*/2 * * * * *', hooks: { onFailure: `echo "onFailure saw: $STRATA_ERROR" >> '${hookLog}'` } } },
        notifications: { channels: { ops: { type: 'webhook', url: { env: 'TEST_WEBHOOK_URL' }, events: ['failure'] } } },
      });
      const daemon = startDaemon(config, [], { TEST_WEBHOOK_URL: `http://127.0.0.1:${(http.address() as AddressInfo).port}/ops` });
      const journal = path.join(repo, 'journal');
      try {
        await daemon.waitFor(/app\/p: prune at/);
        // A file where the journal's folder was: every write to the journal fails, as on a full or read-only disk.
        if (existsSync(journal)) renameSync(journal, `${journal}.away`);
        writeFileSync(journal, '');
        const outcome = (await daemon.waitFor(/app\/p: (?:failed|could not run)[^\n]*/))[0];
        assert.match(outcome, /^app\/p: failed: storage: write journal\//);
        await daemon.waitFor(/app\/p: failure notification sent to ops/);
        daemon.child.kill('SIGTERM');
        assert.equal((await daemon.exit).status, 0);
      } finally {
        if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
      }
      assert.match(readFileSync(hookLog, 'utf8'), /^onFailure saw: storage: write journal\//);
      assert.ok(posts.length >= 1);
      assert.deepEqual([posts[0]!['event'], posts[0]!['database'], posts[0]!['job']], ['failure', 'app', 'p']);
      assert.match(String(posts[0]!['error']), /storage: write journal\//);
    } finally {
      http.close();
    }
  });

  it('runs hooks without the notification secrets or the passphrase in their environment', async () => {
    const repo = path.join(dir.path, 'repo');
    assert.equal(strata(['init', '--repo', repo]).status, 0);
    buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 5 });
    const envFile = path.join(dir.path, 'hook-env');
    const config = path.join(dir.path, 'strata.config.json');
    writeFileSync(path.join(dir.path, 'pager-url'), 'http://127.0.0.1:9/from-a-file\n');
    writeConfig(config, {
      repository: './repo',
      databases: { app: { url: './app.db' } },
      schedules: { b: { job: 'backup', cron: '* * * * * *', hooks: { before: `env > '${envFile}.tmp' && mv '${envFile}.tmp' '${envFile}'` } } },
      notifications: {
        channels: {
          ops: { type: 'webhook', url: { env: 'TEST_HOOK_WEBHOOK_URL' }, events: ['failure'] },
          pager: { type: 'webhook', url: { file: './pager-url' }, events: ['escalation'] },
          mail: { type: 'email', host: '127.0.0.1', user: 'strata', password: { env: 'TEST_HOOK_SMTP_PASSWORD' }, from: 'a@b.c', to: ['d@e.f'], events: ['failure'] },
        },
      },
    });
    const secrets = { TEST_HOOK_WEBHOOK_URL: 'http://127.0.0.1:9/webhook-token-a1b2c3', TEST_HOOK_SMTP_PASSWORD: 'smtp-password-d4e5f6', STRATA_MIRROR_PASSPHRASE: 'mirror-passphrase-g7h8' };
    const daemon = startDaemon(config, [], { ...secrets, TEST_HOOK_UNRELATED: 'passed-on' });
    try {
      await daemon.waitFor(/app\/b: succeeded/);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.exit).status, 0);
    } finally {
      if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    }
    const seen = readFileSync(envFile, 'utf8');
    // What the hook is for is there (the job's facts, the rest of the environment) ...
    assert.match(seen, /^STRATA_DATABASE=app$/m);
    assert.match(seen, /^STRATA_HOOK=before$/m);
    assert.match(seen, /^TEST_HOOK_UNRELATED=passed-on$/m);
    // ... the daemon's secrets are not: neither the variables nor their values.
    for (const [name, value] of Object.entries({ ...secrets, STRATA_PASSPHRASE: TEST_PASSPHRASE })) {
      assert.ok(!seen.includes(name), `the hook saw ${name}`);
      assert.ok(!seen.includes(value), `the hook saw the value of ${name}`);
    }
  });
});
