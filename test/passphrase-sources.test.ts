import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { CLI, FIXTURE_DB, TEST_PASSPHRASE, strata, useTempDir } from './helpers/env.js';

/**
 * Runs the CLI on a real pseudo-terminal (util-linux `script`), typing `answers` one by one as a
 * person would at the passphrase prompt, and returns what the terminal showed and the exit status.
 */
function onTerminal(args: string[], answers: string[], cwd: string): Promise<{ status: number; screen: string }> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env['STRATA_PASSPHRASE'];
    delete env['CI'];
    const command = [process.execPath, CLI, ...args].map((w) => `'${w.replaceAll("'", `'\\''`)}'`).join(' ');
    const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    let typed = 0;
    child.stdout.on('data', (d: Buffer) => {
      screen += d.toString();
      // Answer each prompt once it is on the screen.
      const prompts = screen.split('Repository passphrase:').length - 1;
      while (typed < prompts && typed < answers.length) child.stdin.write(`${answers[typed++]}\r`);
      if (typed >= answers.length && prompts > answers.length) child.stdin.end();
    });
    child.on('close', (status) => resolve({ status: status ?? -1, screen }));
  });
}

describe('where the passphrase comes from', () => {
  const dir = useTempDir();
  const repo = (): string => path.join(dir.path, 'repo');
  const setup = (): void => {
    assert.equal(strata(['init', '--repo', repo()]).status, 0);
    const db = path.join(dir.path, 'app.db');
    copyFileSync(FIXTURE_DB, db);
    assert.equal(strata(['backup', db, '--repo', repo()]).status, 0);
  };
  // prune --dry-run reads no artifact but must prove the passphrase first.
  const probe = ['prune', '--dry-run', '--keep-last', '1', '--repo'];

  it('an explicit --passphrase-file wins over STRATA_PASSPHRASE (as with restic)', () => {
    setup();
    const file = path.join(dir.path, 'pass');
    writeFileSync(file, `${TEST_PASSPHRASE}\n`, { mode: 0o600 });
    assert.equal(strata([...probe, repo(), '--passphrase-file', file], { env: { STRATA_PASSPHRASE: 'stale and wrong' } }).status, 0);
    writeFileSync(file, 'wrong\n');
    assert.equal(strata([...probe, repo(), '--passphrase-file', file]).status, 4, 'the file was not read');
  });

  it('--passphrase-command runs a command and uses what it prints; a failing command is a usage error', () => {
    setup();
    const env = { STRATA_PASSPHRASE: undefined };
    assert.equal(strata([...probe, repo(), '--passphrase-command', `printf '%s\\n' '${TEST_PASSPHRASE}'`], { env }).status, 0);
    const failing = strata([...probe, repo(), '--passphrase-command', 'exit 7'], { env });
    assert.equal(failing.status, 2);
    assert.match(failing.stderr, /the passphrase command exited with 7/);
    assert.equal(strata([...probe, repo(), '--passphrase-command', 'true', '--passphrase-file', '/dev/null'], { env }).status, 2);
    // The environment forms of both.
    assert.equal(strata([...probe, repo()], { env: { STRATA_PASSPHRASE: undefined, STRATA_PASSPHRASE_COMMAND: `printf %s '${TEST_PASSPHRASE}'` } }).status, 0);
    const file = path.join(dir.path, 'pass');
    writeFileSync(file, TEST_PASSPHRASE, { mode: 0o600 });
    assert.equal(strata([...probe, repo()], { env: { STRATA_PASSPHRASE: 'wrong', STRATA_PASSPHRASE_FILE: file } }).status, 0);
  });

  it('a prompt on a terminal gives three tries, then exit 4', async function () {
    if (spawnSync('script', ['--version']).status !== 0) assert.fail('this test needs util-linux script(1)');
    setup();
    const third = await onTerminal([...probe, repo()], ['wrong one', 'wrong two', TEST_PASSPHRASE], dir.path);
    assert.equal(third.status, 0, third.screen);
    assert.equal(third.screen.split('wrong passphrase, try again').length - 1, 2);
    const never = await onTerminal([...probe, repo()], ['a', 'b', 'c'], dir.path);
    assert.equal(never.status, 4, never.screen);
    assert.match(never.screen, /wrong passphrase \(3 tries\)/);
    assert.equal(never.screen.split('Repository passphrase:').length - 1, 3);
  });
});
