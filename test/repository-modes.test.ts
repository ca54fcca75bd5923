import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { CLI, FIXTURE_DB, ROOT, TEST_PASSPHRASE, json, strata, useTempDir } from './helpers/env.js';
import type { CliResult } from './helpers/env.js';

/** Runs `strata` in a shell that first sets `umask`, as a cron job or a login shell would. */
function strataUnder(umask: string, args: string[]): CliResult {
  const result = spawnSync('sh', ['-c', `umask ${umask} && exec "$@"`, 'sh', process.execPath, CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE },
    encoding: 'utf8',
  });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** Every folder and file under `root` (itself included), with its permission bits. */
function modes(root: string): { path: string; folder: boolean; mode: number }[] {
  const out = [{ path: '.', folder: true, mode: statSync(root).mode & 0o777 }];
  for (const entry of readdirSync(root, { recursive: true, withFileTypes: true })) {
    const full = path.join(entry.parentPath, entry.name);
    out.push({ path: path.relative(root, full), folder: entry.isDirectory(), mode: statSync(full).mode & 0o777 });
  }
  return out;
}

const octal = (mode: number): string => `0${mode.toString(8)}`;

describe('repository file modes', function () {
  this.timeout(180_000);
  const dir = useTempDir();

  /**
   * Everything that writes into a repository, each in its own process under `umask`: backups
   * (full, incremental), both verify levels, a prune that removes one, an export imported into the
   * repository again after a delete, and a catalog rebuilt from scratch.
   */
  function exercise(repo: string, umask: string): void {
    const run = (...args: string[]): CliResult => {
      const result = strataUnder(umask, [...args, '--repo', repo]);
      assert.equal(result.status, 0, `strata ${args.join(' ')}: ${result.stderr}`);
      return result;
    };
    const db = path.join(dir.path, 'app.db');
    copyFileSync(FIXTURE_DB, db);
    const first = json<{ id: string }>(run('backup', db, '--json', '--time', '2026-01-01T00:00:00Z')).id;
    run('backup', db, '--type', 'incremental');
    run('backup', db, '--time', '2026-01-02T00:00:00Z');
    run('verify', 'latest', '--level', 'full');
    run('verify', first);
    run('prune', '--keep-last', '1');
    const bundle = path.join(dir.path, 'export.tar.gz');
    run('export', '--all', '--out', bundle);
    run('delete', 'latest', '--with-dependents', '--yes');
    run('import', bundle);
    run('list');
  }

  it('init --group-readable records the choice, and every later command creates folders 0750 and files 0640, under a umask of 077', () => {
    const repo = path.join(dir.path, 'shared');
    const init = strataUnder('077', ['init', '--repo', repo, '--group-readable', '--json']);
    assert.equal(init.status, 0, init.stderr);
    assert.equal(json<{ access: string }>(init).access, 'group-readable');
    assert.equal((JSON.parse(readFileSync(path.join(repo, 'repository.json'), 'utf8')) as { access?: string }).access, 'group-readable');
    exercise(repo, '077');
    const found = modes(repo);
    for (const kind of ['backups', 'cache', 'locks', 'journal', 'catalog', 'repository.json']) {
      assert.ok(found.some((f) => f.path === kind || f.path.startsWith(`${kind}/`)), `the repository has ${kind} (${found.map((f) => f.path).join(', ')})`);
    }
    assert.deepEqual(
      found.filter((f) => f.mode !== (f.folder ? 0o750 : 0o640)).map((f) => `${f.path} ${octal(f.mode)}`),
      [],
      'folders 0750, files 0640',
    );
  });

  it('a default repository stays private (folders 0700, files 0600), even under a umask of 000', () => {
    const repo = path.join(dir.path, 'private');
    const init = strataUnder('000', ['init', '--repo', repo, '--json']);
    assert.equal(init.status, 0, init.stderr);
    assert.equal(json<{ access: string }>(init).access, 'private');
    exercise(repo, '000');
    assert.deepEqual(
      modes(repo).filter((f) => f.mode !== (f.folder ? 0o700 : 0o600)).map((f) => `${f.path} ${octal(f.mode)}`),
      [],
      'folders 0700, files 0600',
    );
  });

  it('init --group-readable into a folder made by hand under umask 077 opens that folder to the group', () => {
    const repo = path.join(dir.path, 'made-by-hand');
    assert.equal(spawnSync('sh', ['-c', `umask 077 && mkdir "${repo}"`]).status, 0);
    assert.equal(statSync(repo).mode & 0o777, 0o700);
    assert.equal(strataUnder('077', ['init', '--repo', repo, '--group-readable']).status, 0);
    assert.equal(statSync(repo).mode & 0o777, 0o750);
  });

  it('strata init --help tells about --group-readable and the modes', () => {
    const help = strata(['init', '--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--group-readable/);
    assert.match(help.stdout, /0750.*0640/s);
  });
});
