// What a user who never clones the repository gets: the tarballs `npm run release` writes,
// installed with plain npm (no pnpm, no workspace) into folders outside the checkout. The native
// dependencies (better-sqlite3, zstd-napi) compile from source in each install, which is most of
// this file's run time (minutes on a loaded two-core machine); the npm registry must be reachable.
// The release and the CLI's install are the ones the VS Code e2e uses too (installedRelease()): in
// a run of the suite the e2e setup makes them at the start, and this file finds them done.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FIXTURE_DB, ROOT, TEST_PASSPHRASE, sqliteDump, sqliteQuery } from './helpers/env.js';
import { installedRelease, run, succeeded, userEnv } from './helpers/release.js';
import type { RunResult } from './helpers/release.js';

describe('the release tarballs, installed with plain npm', function () {
  // Each install compiles better-sqlite3 and zstd-napi: about 2.5 minutes of CPU, measured at
  // 6 to 8 minutes of wall time at a load of 10 to 18 on two cores (the whole file, when it makes
  // both installs: 16 to 25).
  this.timeout(45 * 60_000);
  let work = '';
  let npmCache = '';
  let sdkTarball = '';
  let cliPrefix = '';

  before(async function () {
    work = mkdtempSync(path.join(tmpdir(), 'strata-install-'));
    // An npm cache of the test's own, as a user's first install would have.
    npmCache = path.join(work, 'npm-cache');
    const release = await installedRelease();
    sdkTarball = release.tarballs.sdk;
    cliPrefix = release.prefix;
  });

  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  describe('strata-backup: `npm install -g` puts strata on PATH', () => {
    let prefix = '';
    let env: NodeJS.ProcessEnv = {};
    let installedVersion = '';
    const strata = async (args: string[], cwd: string): Promise<RunResult> => run('strata', args, { cwd, env });

    before(async function () {
      prefix = cliPrefix;
      env = { ...userEnv([path.join(prefix, 'bin')]), STRATA_PASSPHRASE: TEST_PASSPHRASE };
      installedVersion = (JSON.parse(readFileSync(path.join(prefix, 'lib/node_modules/strata-backup/package.json'), 'utf8')) as { version: string }).version;
    });

    /** A folder that has nothing to do with the checkout or the install, as a user's would be. */
    function userFolder(): string {
      const folder = mkdtempSync(path.join(work, 'somewhere-'));
      copyFileSync(FIXTURE_DB, path.join(folder, 'app.db'));
      return folder;
    }

    it('prints the installed package version with --version', async () => {
      const result = succeeded(await strata(['--version'], work), 'strata --version');
      assert.match(installedVersion, /^\d+\.\d+\.\d+/);
      assert.equal(result.stdout.trim(), installedVersion);
    });

    it('ships the systemd unit the README installs from the package', () => {
      const unit = readFileSync(path.join(prefix, 'lib/node_modules/strata-backup/strata-daemon.service'), 'utf8');
      assert.equal(unit, readFileSync(path.join(ROOT, 'docs/strata-daemon.service'), 'utf8'));
      // The README's line that installs it names the strata npm installed, wherever its prefix put it.
      const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
      const line = readme.split('\n').find((l) => l.startsWith('sed "s#/usr/local/bin/strata #$(command -v strata) #"'));
      assert.ok(line, 'the README installs the unit with sed');
      const command = line.replace(/\| sudo tee .*$/, '').replace('$(npm root -g)', path.join(prefix, 'lib/node_modules'));
      const installed = spawnSync('bash', ['-c', command], { env, encoding: 'utf8' });
      assert.equal(installed.status, 0, installed.stderr);
      assert.match(installed.stdout, new RegExp(`^ExecStart=${path.join(prefix, 'bin', 'strata').replace(/[.]/g, '\\.')} daemon --config `, 'm'));
    });

    it('inits, backs up, verifies and restores a SQLite database, every path relative to the current folder', async () => {
      const folder = userFolder();
      succeeded(await strata(['init', '--repo', 'backups'], folder), 'strata init');
      const backup = succeeded(await strata(['backup', 'app.db', '--repo', 'backups', '--json'], folder), 'strata backup');
      const { id } = JSON.parse(backup.stdout) as { id: string };
      assert.ok(readdirSync(path.join(folder, 'backups', 'backups', 'app')).some((file) => file.startsWith(id)), 'the artifact is in ./backups');
      const verify = succeeded(await strata(['verify', 'latest', '--level', 'full', '--repo', 'backups', '--json'], folder), 'strata verify');
      const reports = JSON.parse(verify.stdout) as { reports: { backupId: string; level: string; outcome: string }[] };
      assert.deepEqual(reports.reports.map((r) => [r.backupId, r.level, r.outcome]), [[id, 'full', 'passed']]);
      succeeded(await strata(['restore', 'latest', '--to', 'restored.db', '--repo', 'backups'], folder), 'strata restore');
      assert.equal(sqliteDump(path.join(folder, 'restored.db')), sqliteDump(path.join(folder, 'app.db')));
      assert.ok(Number(sqliteQuery(path.join(folder, 'restored.db'), 'SELECT count(*) FROM orders')) > 0);
    });

    it('ships the recovery script that export puts into RESTORE.md', async () => {
      const folder = userFolder();
      succeeded(await strata(['init', '--repo', 'backups', '--no-encryption'], folder), 'strata init');
      succeeded(await strata(['backup', 'app.db', '--repo', 'backups'], folder), 'strata backup');
      succeeded(await strata(['export', 'app', '--out', 'app-export.tar.gz', '--repo', 'backups'], folder), 'strata export');
      const listing = succeeded(await run('tar', ['-xzOf', 'app-export.tar.gz', 'RESTORE.md'], { cwd: folder, env }), 'tar');
      const script = readFileSync(path.join(ROOT, 'docs/recover-chain.py'), 'utf8');
      assert.ok(listing.stdout.includes(script.trimEnd()), 'RESTORE.md carries docs/recover-chain.py');
    });
  });

  describe('strata-backup-sdk: `npm install` in a project gives a typed ESM SDK', () => {
    let project = '';
    const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
    const compile = (file: string): Promise<RunResult> =>
      run(process.execPath, [tsc, '--strict', '--module', 'nodenext', '--target', 'es2022', '--outDir', 'out', file], { cwd: project, env: userEnv() });

    before(async function () {
      project = path.join(work, 'project');
      mkdirSync(project);
      writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'a-users-project', private: true, type: 'module' }));
      succeeded(await run('npm', ['install', '--cache', npmCache, '--no-audit', '--no-fund', sdkTarball], { cwd: project, env: userEnv() }), 'npm install');
      copyFileSync(FIXTURE_DB, path.join(project, 'app.db'));
    });

    it('compiles a program with tsc --strict that opens a repository, backs up and lists, and runs it', async () => {
      writeFileSync(path.join(project, 'main.ts'), `
import { initRepository, openRepository, Passphrase } from 'strata-backup-sdk';
import type { BackupRecord } from 'strata-backup-sdk';

const passphrase = new Passphrase(process.env['STRATA_PASSPHRASE'] ?? '');
await initRepository('backups', { encryption: 'compat', passphrase });
const repo = await openRepository('backups', { passphrase });
try {
  const backup = await repo.backup('app.db', { database: 'app', type: 'full' });
  const listed: BackupRecord[] = await repo.list({ database: 'app' });
  console.log(JSON.stringify({ id: backup.id, listed: listed.map((b) => [b.id, b.type]) }));
} finally {
  await repo.close();
}
`);
      succeeded(await compile('main.ts'), 'tsc --strict main.ts');
      const result = succeeded(await run(process.execPath, ['out/main.js'], { cwd: project, env: { ...userEnv(), STRATA_PASSPHRASE: TEST_PASSPHRASE } }), 'node out/main.js');
      const { id, listed } = JSON.parse(result.stdout) as { id: string; listed: [string, string][] };
      assert.deepEqual(listed, [[id, 'full']]);
      assert.ok(readdirSync(path.join(project, 'backups', 'backups', 'app')).some((file) => file.startsWith(id)));
    });

    it('has real types: a wrong backup type does not compile', async () => {
      writeFileSync(path.join(project, 'wrong.ts'), `
import { openRepository } from 'strata-backup-sdk';
const repo = await openRepository('backups');
await repo.backup('app.db', { database: 'app', type: 'weekly' });
`);
      const result = await compile('wrong.ts');
      assert.equal(result.status, 2, result.stdout + result.stderr);
      assert.match(result.stdout, /wrong\.ts\(4,\d+\): error TS2322: Type '"weekly"' is not assignable/);
    });
  });
});
