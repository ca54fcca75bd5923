// Runs the test suite (compiled by setup.mjs) with mocha. Extra arguments go to mocha, e.g.
//   npm test -- --grep restore
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ensureTestTools } from './test-tools.mjs';

ensureTestTools();
const root = fileURLToPath(new URL('..', import.meta.url));
const mocha = fileURLToPath(new URL('../node_modules/mocha/bin/mocha.js', import.meta.url));
const result = spawnSync(process.execPath, [mocha, ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);
