import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { CLI, TEST_PASSPHRASE, useTempDir } from './helpers/env.js';
import { archiveFuzz, concurrencySweep, corruptionSweep, crashSweep, fullDiskSweep, processList, secretsScan, workDir } from './reliability/scenarios.js';
import type { ScenarioResult } from './reliability/scenarios.js';

/** The bounded, seeded version of the reliability suite; `npm run test:soak` runs it long. */
const SEED = Number(process.env['STRATA_RELIABILITY_SEED'] ?? 20261121);

function expectClean(result: ScenarioResult): void {
  assert.deepEqual(result.problems, [], `${result.scenario}: ${result.problems.length} problem(s) in ${result.runs} runs`);
}

describe('reliability (bounded; seed ' + SEED + ')', function () {
  this.timeout(240_000);
  const dir = useTempDir();

  it('corruption: every damaged artifact fails verification, nothing restores wrong data, nothing crashes', async () => {
    const result = await corruptionSweep({ seed: SEED, mutations: 40, work: workDir(dir.path, 'corruption') });
    expectClean(result);
    assert.ok(result.detected > 30, `only ${result.detected} of ${result.runs} mutations were caught`);
  });

  it('hostile archives: the reader refuses random and crafted input with clean errors', async () => {
    expectClean(await archiveFuzz({ seed: SEED, runs: 300 }));
  });

  it('full disk: failed backups leave the catalog, earlier backups and the temp folder as they were', async () => {
    expectClean(await fullDiskSweep({ seed: SEED, runs: 8, work: workDir(dir.path, 'disk') }));
  });

  it('crashes: SIGKILL at random moments leaves a consistent repository', async () => {
    expectClean(await crashSweep({ seed: SEED, kills: 8, work: workDir(dir.path, 'crash') }));
  });

  it('concurrency: processes backing up and pruning at once lose nothing', async () => {
    expectClean(await concurrencySweep({ seed: SEED, rounds: 2, work: workDir(dir.path, 'concurrency') }));
  });

  it('secrets: the passphrase is in no repository file, output or process list', async () => {
    const work = workDir(dir.path, 'secrets');
    const repo = path.join(work, 'repo');
    const outputs: string[] = [];
    const lists: string[] = [];
    const run = (args: string[]): Promise<void> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, STRATA_PASSPHRASE: TEST_PASSPHRASE } });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        const timer = setInterval(() => lists.push(processList()), 20);
        child.on('exit', () => {
          clearInterval(timer);
          lists.push(processList());
          outputs.push(out);
          resolve();
        });
      });
    await run(['init', '--repo', repo]);
    await run(['backup', path.join(process.cwd(), 'fixtures/sample.db'), '--repo', repo, '--json']);
    await run(['verify', '--all', '--repo', repo, '--level', 'full']);
    await run(['restore', 'latest', '--repo', repo, '--to', path.join(work, 'out.db')]);
    await run(['list', '--repo', repo]);
    const result = secretsScan({ repos: [repo], outputs, processLists: lists });
    expectClean(result);
    assert.ok(lists.length > 5);
  });
});
