// Bundles the part of zod that strata.config.json's schema is built from
// (packages/sdk/src/config-zod.ts) into one CommonJS file beside it, dist/config-zod.cjs. Every
// `strata` that reads a config file loads zod; through the package's own hundred modules that cost
// about 110 ms of a command's 300–450, from this one file about 13. config-schema.ts uses it when
// it is there (setup.mjs and `npm run build` make it after compiling; the release's and the
// tests' bundles copy it) and the zod package otherwise.
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

export function compactZod() {
  buildSync({
    entryPoints: [fileURLToPath(new URL('../packages/sdk/dist/config-zod.js', import.meta.url))],
    outfile: fileURLToPath(new URL('../packages/sdk/dist/config-zod.cjs', import.meta.url)),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    // Smaller to read and compile; zod names its classes itself, so nothing depends on the names.
    minify: true,
    logLevel: 'warning',
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) compactZod();
