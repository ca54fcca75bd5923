// Writes strata.config.schema.json (the schema VS Code validates strata.config.json with) from
// the SDK's definition of the config file, so the editor and `strata` never disagree. Needs the
// SDK built (tsc -b). With --check, writes nothing and exits 1 when the committed file is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const sdk = await import(new URL('../../packages/sdk/dist/index.js', import.meta.url).href);
const registry = sdk.createDefaultEngines();
const displays = registry.kinds().map((kind) => registry.get(kind).display);
const text = JSON.stringify(sdk.configJsonSchema(displays), null, 2) + '\n';
const file = fileURLToPath(new URL('strata.config.schema.json', import.meta.url));

if (process.argv.includes('--check')) {
  if (readFileSync(file, 'utf8') !== text) {
    console.error(`${file} differs from the SDK's config definition: run node extension/schemas/generate.mjs`);
    process.exit(1);
  }
} else {
  writeFileSync(file, text);
}
