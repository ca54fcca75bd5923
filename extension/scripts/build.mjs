// Builds the extension: type-checks it, bundles src/extension.ts (with vscode-languageclient and
// the protocol constants) into out/extension.js, and the in-extension-host tests into out/test/.
// With --package, also packages out/strata.vsix with vsce. Nothing native goes in: the database
// drivers live with the server, which runs under the system's Node.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);

function run(cmd, args) {
  const result = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`extension build: ${[cmd, ...args].join(' ')} failed (exit ${result.status ?? result.signal})`);
    process.exit(result.status ?? 1);
  }
}

// The config file's JSON schema comes from the SDK's definition of it (see schemas/generate.mjs).
run(process.execPath, ['schemas/generate.mjs']);
run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json']);
const common = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', minify: true, external: ['vscode'], sourcemap: true, logLevel: 'warning' };
await esbuild.build({ ...common, entryPoints: ['src/extension.ts'], outfile: 'out/extension.js', absWorkingDir: root });
await esbuild.build({ ...common, entryPoints: ['test-host/index.ts'], outfile: 'out/test/index.js', absWorkingDir: root });

if (process.argv.includes('--package')) {
  mkdirSync(new URL('../out', import.meta.url), { recursive: true });
  // The repository's one LICENSE goes into the .vsix (vsce takes it from the extension's folder).
  copyFileSync(new URL('../../LICENSE', import.meta.url), new URL('../LICENSE', import.meta.url));
  // --no-dependencies: everything the extension runs is in the bundle.
  run(process.execPath, [require.resolve('@vscode/vsce/vsce'), 'package', '--no-dependencies', '--out', 'out/strata.vsix']);
}
