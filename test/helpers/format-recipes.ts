import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ROOT } from './env.js';

/**
 * The shell block of docs/FORMAT.md whose first line is `# <marker>`: the by-hand recovery tests
 * run the documentation itself, so a recipe that stops working fails them.
 */
export function recipe(marker: string): string {
  const doc = readFileSync(path.join(ROOT, 'docs/FORMAT.md'), 'utf8');
  const block = new RegExp('```sh\\n(# ' + marker + '[:\\s][\\s\\S]*?)```').exec(doc);
  assert.ok(block, `docs/FORMAT.md has the ${marker} recipe`);
  return block[1]!;
}
