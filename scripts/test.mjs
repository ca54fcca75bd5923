// Runs the test suite (compiled by setup.mjs) with mocha. Extra arguments go to mocha, e.g.
//   npm test -- --grep restore
// The VS Code end-to-end tests need code-server and a browser, which e2e-setup.mjs installs (the
// first time: about two minutes). STRATA_SKIP_E2E=1 skips that outside CI; under CI it is never
// skipped, since the extension is part of what CI proves.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ensureE2eTools } from './e2e-setup.mjs';
import { ensureTestTools } from './test-tools.mjs';

ensureTestTools();
if (process.env.STRATA_SKIP_E2E && !process.env.CI) {
  console.log('VS Code e2e: skipped (STRATA_SKIP_E2E is set)');
} else {
  try {
    ensureE2eTools();
  } catch (err) {
    console.error(`VS Code e2e setup: ${err.message}`);
    if (process.env.CI) process.exit(1);
  }
}
const root = fileURLToPath(new URL('..', import.meta.url));
const mocha = fileURLToPath(new URL('../node_modules/mocha/bin/mocha.js', import.meta.url));
const result = spawnSync(process.execPath, [mocha, ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);
