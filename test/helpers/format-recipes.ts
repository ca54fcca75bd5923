import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { ROOT, TEST_PASSPHRASE } from './env.js';

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

/**
 * Runs an export's RESTORE.md as a person would: its extract block, then the block of `database`,
 * in the export's folder, with `home` as HOME (gpg's keyring goes there). Returns RESTORE.md
 * without its appendix (the scripts it carries) and the folder.
 */
export function followExportRestoreMd(exportFile: string, database: string, home: string, variables: Record<string, string> = {}): { restoreMd: string; folder: string } {
  const folder = path.dirname(exportFile);
  const listing = exportFile.endsWith('.zip')
    ? spawnSync('unzip', ['-p', exportFile, 'RESTORE.md'], { encoding: 'utf8' })
    : spawnSync('tar', ['-xzf', exportFile, '-O', 'RESTORE.md'], { encoding: 'utf8' });
  assert.equal(listing.status, 0, listing.stderr);
  const restoreMd = listing.stdout;
  const without = restoreMd.slice(restoreMd.indexOf('## Without Strata'));
  const extract = /```sh\n([\s\S]*?\n)```/.exec(without);
  const block = new RegExp('### ' + database + ' \\([a-z-]+\\)[\\s\\S]*?```sh\\n([\\s\\S]*?\\n)```').exec(restoreMd);
  assert.ok(extract && block, `RESTORE.md has the extract command and a block for ${database}:\n${restoreMd}`);
  writeFileSync(path.join(folder, 'PASSFILE'), TEST_PASSPHRASE, { mode: 0o600 });
  const run = spawnSync('bash', ['-euo', 'pipefail', '-c', `${extract[1]}\n${block[1]}`], {
    cwd: folder,
    env: { ...process.env, HOME: home, GNUPGHOME: path.join(home, '.gnupg'), ...variables },
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, `RESTORE.md's commands failed:\n${run.stderr}\n${restoreMd}`);
  // The commands, without the script appended to them (which knows every engine).
  const appendix = restoreMd.indexOf('## Appendix: recover-chain.py');
  assert.ok(appendix > 0, 'RESTORE.md carries recover-chain.py, so the export alone is enough');
  return { restoreMd: restoreMd.slice(0, appendix), folder };
}
