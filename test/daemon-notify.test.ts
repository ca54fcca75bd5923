import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { SMTPServer } from 'smtp-server';
import { buildRichDatabase } from './helpers/databases.js';
import { detail, jobOperations, startDaemon, writeConfig } from './helpers/daemon.js';
import { journalFiles, strata, useTempDir } from './helpers/env.js';

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

  it('escalates once failures have lasted the configured duration, before the count is reached', async () => {
    const posts: Record<string, unknown>[] = [];
    const http = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        posts.push(JSON.parse(body) as Record<string, unknown>);
        res.writeHead(200).end('ok');
      });
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    try {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
      buildRichDatabase(path.join(dir.path, 'app.db'), { rows: 10 });
      const config = path.join(dir.path, 'strata.config.json');
      writeConfig(config, {
        repository: './repo',
        databases: { app: { url: './app.db' } },
        schedules: { b: { job: 'backup', cron: '* * * * * *', hooks: { before: 'exit 7' } } },
        notifications: { escalation: { afterFailures: 1000, after: '3s' }, channels: { pager: { type: 'webhook', url: { env: 'TEST_PAGER_URL' }, events: ['escalation'] } } },
      });
      const daemon = startDaemon(config, [], { TEST_PAGER_URL: `http://127.0.0.1:${(http.address() as AddressInfo).port}/pager` });
      try {
        await daemon.waitFor(/escalation notification sent to pager/);
        // A few more failures: no second escalation for the same run of failures.
        const mark = daemon.log().length;
        await daemon.waitFor(/(?:app\/b: failed[\s\S]*){2}/, 60_000, mark);
        daemon.child.kill('SIGTERM');
        assert.equal((await daemon.exit).status, 0);
      } finally {
        if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
      }
      assert.equal(posts.length, 1);
      assert.equal(posts[0]!['event'], 'escalation');
      const failures = posts[0]!['failures'] as number;
      assert.ok(failures >= 2 && failures < 1000, `escalated after ${failures} failures`);
      // `since` is the start of the first failed run; the escalated run ended at least 3 s after it.
      const ops = (await jobOperations(repo)).filter((o) => detail(o, 'skipped') !== true);
      assert.equal(posts[0]!['since'], detail(ops[0]!, 'startedAt'));
      const escalated = ops.filter((o) => detail(o, 'escalated') === true);
      assert.equal(escalated.length, 1);
      assert.ok(Date.parse(escalated[0]!.last.at) - Date.parse(posts[0]!['since'] as string) >= 3000);
    } finally {
      http.close();
    }
  });
});
