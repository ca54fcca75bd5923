import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { buildRichDatabase } from '../helpers/databases.js';
import { TEST_PASSPHRASE, strata } from '../helpers/env.js';
import { EXTENSION_DIR, launchBrowser, requireCodeServer, startCodeServer } from './code-server.js';

/**
 * Runs extension/test-host (the tree provider and every command handler, against the real
 * server) inside code-server's extension host, the way @vscode/test-electron runs
 * extensionTestsPath: the workbench loads the extension from its folder, calls run(), and
 * reports its outcome through window.codeAutomationExit.
 */
describe('VS Code extension, inside a real extension host', function () {
  this.timeout(300_000);
  requireCodeServer(this);

  it('passes its command and tree tests against the real server', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'strata-vscode-host-'));
    const workspace = path.join(root, 'ws');
    mkdirSync(workspace);
    buildRichDatabase(path.join(workspace, 'app.db'), { rows: 200 });
    writeFileSync(
      path.join(workspace, 'strata.config.json'),
      JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db', retention: { keepLast: 1 } } } }, null, 2),
    );
    const init = strata(['init', '--repo', path.join(workspace, '.backups')], { env: { STRATA_PASSPHRASE: TEST_PASSPHRASE } });
    assert.equal(init.status, 0, init.stderr);
    const vscode = await startCodeServer(root, workspace, { testDriver: true });
    const browser = await launchBrowser();
    const lines: string[] = [];
    try {
      const authority = new URL(vscode.url).host;
      const remote = (file: string): string => `vscode-remote://${authority}${file}`;
      const payload = [
        ['extensionDevelopmentPath', remote(EXTENSION_DIR)],
        ['extensionTestsPath', remote(path.join(EXTENSION_DIR, 'out/test/index.js'))],
      ];
      const page = await browser.newPage();
      page.on('console', (message) => {
        // The extension host's console arrives styled ("%c INFO color: ..."): keep the text.
        if (message.text().includes('TEST')) lines.push(message.text().replace(/^%c\s*\w+\s*color:\s*\S+\s*/, ''));
      });
      const exitCode = new Promise<number>((resolve) => void page.exposeFunction('codeAutomationExit', (code: number) => resolve(code)));
      await page.goto(`${vscode.url}?folder=${encodeURIComponent(workspace)}&payload=${encodeURIComponent(JSON.stringify(payload))}`);
      const code = await Promise.race([exitCode, new Promise<string>((resolve) => setTimeout(() => resolve('timeout'), 240_000).unref())]);
      for (const line of lines) console.log(`      ${line}`);
      assert.equal(code, 0, `the extension-host tests failed (exit ${code}):\n${lines.join('\n')}`);
      assert.ok(lines.some((l) => /TEST all \d+ extension-host tests passed/.test(l)), 'the tests ran to the end');
    } finally {
      await browser.close();
      await vscode.stop();
      if (!process.env['STRATA_KEEP_E2E']) rmSync(root, { recursive: true, force: true });
    }
  });
});
