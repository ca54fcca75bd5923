import assert from 'node:assert/strict';
import { useTempDir } from './helpers/env.js';
import { Databases, PG_URL, postgresReachable } from './helpers/postgres.js';
import { archiveFuzz, concurrencySweep, corruptionSweep, crashSweep, fullDiskSweep, secretsSession, workDir } from './reliability/scenarios.js';
import type { ScenarioResult } from './reliability/scenarios.js';
import { syscallCrashSweep } from './reliability/syscall-sweep.js';

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

  it('crashes at exact system calls: every rename and link of restore --force, and an even spread of those of a full backup, prune and import, killed, loses nothing and leaves nothing', function () {
    this.timeout(1_200_000);
    // Local storage makes every object visible with a rename (put) or a link (exclusive create:
    // catalog generations, the lock), so these are the moments between one visible state and the
    // next. restore --force gets every one (the in-place swap once lost its target between two of
    // them); a backup 3 of each kind, prune and import 2 (the first and the last). `npm run
    // test:soak -- --only syscalls` kills at every rename, unlink, link and fsync of six operations.
    const result = syscallCrashSweep({ work: workDir(dir.path, 'syscalls'), operations: ['backup', 'restore', 'prune', 'import'], syscalls: ['rename', 'link'], sampled: { backup: 3, prune: 2, import: 2 } });
    expectClean(result);
    assert.equal(result.kills, result.runs, `only ${result.kills} of ${result.runs} runs died at the injected call`);
    assert.ok(['backup', 'restore', 'prune', 'import'].every((op) => result.perCase[`${op}/rename`]! >= 2 && result.perCase[`${op}/link`]! >= 1), `kill points: ${JSON.stringify(result.perCase)}`);
  });

  it('concurrency: processes backing up and pruning at once lose nothing', async () => {
    expectClean(await concurrencySweep({ seed: SEED, rounds: 2, work: workDir(dir.path, 'concurrency') }));
  });

  // One session covers both: the PostgreSQL one runs every SQLite step too. Without a server
  // (outside CI; under CI=true it is a failure) it runs on SQLite alone and says so.
  describe('secrets', () => {
    const databases = new Databases();
    after(() => databases.dropAll());

    it('a session (SQLite, and PostgreSQL with a password in the server URL) leaves the passphrase and the password in no file, output or process list', async function () {
      this.timeout(600_000);
      const postgres = await postgresReachable();
      if (!postgres) {
        if (process.env['CI']) throw new Error('PostgreSQL is not reachable; under CI=true this is a failure, not a skip');
        console.log('      PostgreSQL is not reachable (STRATA_TEST_PG_URL): the session runs on SQLite alone');
      }
      const pg = postgres
        ? { server: PG_URL, source: await databases.create("CREATE TABLE secrets_probe (id serial PRIMARY KEY, note text); INSERT INTO secrets_probe (note) VALUES ('first')"), restoreTo: databases.name() }
        : undefined;
      const result = await secretsSession({ work: workDir(dir.path, 'secrets'), ...(pg ? { postgres: pg } : {}) });
      expectClean(result);
      assert.ok(result.snapshots > 5, `only ${result.snapshots} process lists were taken`);
      // Otherwise the snapshots never looked at the one child that is given the server's credentials.
      if (pg) assert.ok(result.sawPgDump, `none of the ${result.snapshots} process lists caught pg_dump running`);
    });
  });
});
