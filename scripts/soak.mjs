// The long reliability run (issue counts: 200 kills, 100 concurrency rounds, 1,000 corruptions).
//   npm run test:soak -- [--seed N] [--kills N] [--rounds N] [--mutations N] [--fuzz N] [--disk N]
// Builds the workspace first (npm run setup), writes results to test-output/soak-<seed>.json and
// exits 1 if any scenario saw a problem.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    kills: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '100' },
    mutations: { type: 'string', default: '1000' },
    fuzz: { type: 'string', default: '5000' },
    disk: { type: 'string', default: '100' },
  },
});
const seed = Number(values.seed);
const root = fileURLToPath(new URL('..', import.meta.url));
const scenarios = await import(path.join(root, '.build/test/reliability/scenarios.js'));
const base = mkdtempSync(path.join(tmpdir(), 'strata-soak-'));
const results = [];
const run = async (name, fn) => {
  const started = Date.now();
  process.stdout.write(`${name} ... `);
  const result = await fn(scenarios.workDir(base, name));
  results.push({ ...result, seconds: Math.round((Date.now() - started) / 1000) });
  process.stdout.write(`${result.runs} runs, ${result.detected} caught, ${result.problems.length} problem(s), ${Math.round((Date.now() - started) / 1000)} s\n`);
  for (const p of result.problems.slice(0, 20)) process.stdout.write(`    ${p}\n`);
};
console.log(`soak run, seed ${seed}`);
await run('corruption', (work) => scenarios.corruptionSweep({ seed, mutations: Number(values.mutations), work }));
await run('fuzz', () => scenarios.archiveFuzz({ seed, runs: Number(values.fuzz) }));
await run('disk', (work) => scenarios.fullDiskSweep({ seed, runs: Number(values.disk), work }));
await run('crash', (work) => scenarios.crashSweep({ seed, kills: Number(values.kills), work }));
await run('concurrency', (work) => scenarios.concurrencySweep({ seed, rounds: Number(values.rounds), work }));
rmSync(base, { recursive: true, force: true });
mkdirSync(path.join(root, 'test-output'), { recursive: true });
const out = path.join(root, 'test-output', `soak-${seed}.json`);
writeFileSync(out, JSON.stringify({ seed, date: new Date().toISOString(), results }, null, 2) + '\n');
const problems = results.reduce((n, r) => n + r.problems.length, 0);
console.log(`${results.length} scenarios, ${problems} problem(s); results in ${out}`);
process.exit(problems > 0 ? 1 : 0);
