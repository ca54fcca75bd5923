import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { buildRichDatabase } from '../helpers/databases.js';
import { TEST_PASSPHRASE, sqliteDump, sqliteQuery, strata } from '../helpers/env.js';
import { installedCli, userEnv } from '../helpers/release.js';
import { SHOTS, VSIX, choose, contextMenu, extensionLog, launchBrowser, notificationsShown, processesOf, recordNotifications, requireCodeServer, runCommand, startCodeServer, toast } from './code-server.js';
import type { VsCode } from './code-server.js';

/**
 * The extension as a person uses it: the packaged .vsix installed into a real VS Code
 * (code-server) with no Strata settings, and the `strata` command line installed from the
 * release tarball with `npm install -g` into a prefix whose bin/ is on the editor's PATH (as the
 * README's Install section says); clicked through in chromium. Screenshots go to
 * test-output/vscode/ for a person to look at.
 */
describe('VS Code extension, end to end in a real VS Code', function () {
  this.timeout(240_000);
  requireCodeServer(this);
  let root: string;
  let workspace: string;
  let vscode: VsCode | undefined;
  let browser: Browser | undefined;
  let page: Page;
  let original: string;

  before(async function () {
    // The first run installs the release (compiling its native addons): minutes.
    this.timeout(45 * 60_000);
    const prefix = await installedCli();
    root = mkdtempSync(path.join(tmpdir(), 'strata-vscode-ui-'));
    workspace = path.join(root, 'ws');
    mkdirSync(workspace);
    buildRichDatabase(path.join(workspace, 'app.db'), { rows: 300 });
    original = sqliteDump(path.join(workspace, 'app.db'));
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db' } } }, null, 2));
    const init = strata(['init', '--repo', path.join(workspace, '.backups')], { env: { STRATA_PASSPHRASE: TEST_PASSPHRASE } });
    assert.equal(init.status, 0, init.stderr);
    // The user's setup for a global prefix of their own, as npm's documentation describes it:
    // ~/.npmrc names the prefix, ~/.profile puts its bin/ on PATH. (The editor's extension host
    // takes PATH from the user's login shell, not from the process that started the editor.)
    const home = path.join(root, 'home');
    mkdirSync(home, { recursive: true });
    writeFileSync(path.join(home, '.npmrc'), `prefix=${prefix}\n`);
    writeFileSync(path.join(home, '.profile'), `export PATH="${path.join(prefix, 'bin')}:$PATH"\n`);
    vscode = await startCodeServer(root, workspace, { vsix: VSIX, userEnvironment: userEnv([path.join(prefix, 'bin')]) });
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
    await recordNotifications(page);
    await page.goto(vscode.url);
    await page.locator('.explorer-folders-view .monaco-list-row').first().waitFor({ timeout: 90_000 });
    // Contributions of remote extensions arrive a moment after the workbench: wait for ours.
    await page.locator('.activitybar a[aria-label="Strata"]').waitFor({ timeout: 60_000 });
    mkdirSync(SHOTS, { recursive: true });
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && page) {
      await page.screenshot({ path: path.join(SHOTS, `failed-${this.currentTest.title.replace(/\W+/g, '-')}.png`) }).catch(() => undefined);
      console.log(`notifications shown: ${JSON.stringify(await notificationsShown(page).catch(() => []))}`);
      await runCommand(page, 'Notifications: Show Notifications').catch(() => undefined);
      await page.waitForTimeout(1000);
      console.log(`notifications in the centre: ${JSON.stringify(await notificationsShown(page).catch(() => []))}`);
      await page.screenshot({ path: path.join(SHOTS, `failed-${this.currentTest.title.replace(/\W+/g, '-')}-centre.png`) }).catch(() => undefined);
      if (vscode) console.log(`the extension's log:\n${extensionLog(vscode)}\ncode-server's log:\n${vscode.log.split('\n').slice(-40).join('\n')}`);
    }
  });

  after(async () => {
    await browser?.close();
    await vscode?.stop();
    if (root && !process.env['STRATA_KEEP_E2E']) rmSync(root, { recursive: true, force: true });
  });

  const sidebarRow = (text: string | RegExp) => page.locator('.part.sidebar .monaco-list-row', { hasText: text }).first();

  it('shows the Strata view with the database from strata.config.json', async () => {
    await page.locator('.activitybar a[aria-label="Strata"]').click();
    // A wider side bar, so the restore points' descriptions show in full (and in the screenshot).
    const sash = await page.locator('.part.sidebar').boundingBox();
    if (sash) {
      await page.mouse.move(sash.x + sash.width + 1, sash.y + sash.height / 2);
      await page.mouse.down();
      await page.mouse.move(sash.x + 560, sash.y + sash.height / 2, { steps: 5 });
      await page.mouse.up();
    }
    await sidebarRow('app').waitFor();
    await sidebarRow('No restore points yet').waitFor();
  });

  it('backs up from the palette, asking for the passphrase once, and shows the new restore point', async () => {
    await runCommand(page, 'Strata: Back Up Now');
    await choose(page, 'Full');
    const passphrase = page.locator('.quick-input-widget input[type="password"]');
    await passphrase.waitFor();
    await passphrase.fill(TEST_PASSPHRASE);
    await page.keyboard.press('Enter');
    assert.match(await toast(page, 'backed up app'), /backed up app: full, .* stored \(app_full_\d{8}_\d{6}/);
    await sidebarRow(/full · .*just now/).waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'after-backup.png') });
  });

  it('verifies the restore point from its context menu and shows the badge', async () => {
    await contextMenu(page, sidebarRow(/full · /), 'Verify…');
    await choose(page, 'Full');
    assert.match(await toast(page, /verified app_full_/), /passed \(5 of 5 checks, full\)/);
    await sidebarRow(/full · .* · verified/).waitFor();
    await page.locator('.statusbar-item', { hasText: 'just now' }).first().waitFor();
  });

  it('restores the restore point to a new file from its context menu', async () => {
    const target = path.join(root, 'restored.db');
    await contextMenu(page, sidebarRow(/full · /), 'Restore…');
    await choose(page, 'To a new file');
    // code-server's save dialog is VS Code's simple file dialog: a path in the quick input.
    const input = page.locator('.quick-input-widget input');
    await page.waitForFunction(() => (document.querySelector('.quick-input-widget input') as HTMLInputElement | null)?.value.includes('app-restored-'));
    await input.fill(target);
    await page.locator('.quick-input-widget .monaco-button', { hasText: 'OK' }).click();
    assert.match(await toast(page, /restored app_full_/), new RegExp(`to ${target.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    assert.ok(existsSync(target));
    assert.equal(sqliteDump(target), original, 'the restored file holds what was backed up');
  });

  it('backs up an incremental from the database row\'s inline button, shown newest first', async () => {
    sqliteQuery(path.join(workspace, 'app.db'), "INSERT INTO authors(name) VALUES ('Written After The Full')");
    const row = sidebarRow('app');
    await row.hover();
    await row.locator('.action-label[aria-label^="Back Up Now"]').click();
    await choose(page, 'Incremental');
    assert.match(await toast(page, /backed up app: incremental/), /stored \(app_incremental_/);
    const rows = page.locator('.part.sidebar .monaco-list-row');
    await rows.filter({ hasText: /incremental · / }).first().waitFor();
    const texts = await rows.allInnerTexts();
    assert.ok(texts.findIndex((t) => t.includes('incremental')) < texts.findIndex((t) => t.includes('full ·')), `newest first: ${texts.join(' | ')}`);
    // The picture for the README: the tree with a verified full backup and an incremental on it.
    await page.locator('.notifications-toasts').evaluate((el) => ((el as HTMLElement).style.visibility = 'hidden'));
    await page.mouse.move(900, 600);
    await page.screenshot({ path: path.join(SHOTS, 'strata-tree.png'), clip: { x: 0, y: 0, width: 760, height: 300 } });
  });

  it('shows the Backup History of the database with the failed run, follows changes, and a click on a restore point selects it in the tree', async () => {
    // A backup run that fails, from the command line: the database file is away for a moment.
    const db = path.join(workspace, 'app.db');
    renameSync(db, `${db}.away`);
    const failed = strata(['backup', 'app', '--type', 'incremental'], { cwd: workspace });
    renameSync(`${db}.away`, db);
    assert.equal(failed.status, 1, `the backup of a missing file fails: ${failed.stderr}`);
    await runCommand(page, 'Strata: Show Backup History');
    // The webview's document, inside the workbench's webview frame.
    const history = page.frameLocator('iframe.webview.ready').frameLocator('iframe#active-frame');
    await history.locator('h1', { hasText: 'Backup History: app' }).waitFor();
    const full = history.locator('.point[data-type="full"]');
    const incremental = history.locator('.point[data-type="incremental"]');
    assert.equal(await history.locator('.point').count(), 2, 'one mark per restore point');
    assert.deepEqual([await full.getAttribute('data-verification'), await incremental.getAttribute('data-verification')], ['passed', 'never']);
    assert.match((await full.getAttribute('aria-label')) ?? '', /app: full restore point of .* verified \(full, /);
    // The retention tier of each, as the tree's Group by Retention Tier shows it.
    const byTier = JSON.parse(strata(['list', 'app', '--by-tier', '--json'], { cwd: workspace }).stdout) as { tiers: Record<string, { id: string }[]> };
    const tierOf = (id: string | null): string | undefined => Object.entries(byTier.tiers).find(([, list]) => list.some((b) => b.id === id))?.[0];
    for (const mark of [full, incremental]) {
      const id = await mark.getAttribute('data-backup-id');
      assert.equal(await mark.getAttribute('data-tier'), tierOf(id), `the tier of ${id}`);
    }
    // The failed run: a cross on the timeline and in the sizes, and a row that names the error.
    assert.equal(await history.locator('svg g.failure').count(), 2);
    assert.match(await history.locator('tr.failed-run').innerText(), /incremental\s+backup failed: DATABASE_NOT_FOUND/);
    assert.equal(await history.locator('rect.bar').count(), 2, 'a stored-size bar per restore point');
    assert.equal(await history.locator('circle.size-dot').count(), 2, 'a database-size dot per restore point');

    const selectedRow = page.locator('.part.sidebar .monaco-list-row.selected');
    await incremental.locator('circle.dot').click();
    await selectedRow.filter({ hasText: /incremental · / }).waitFor();
    await full.locator('circle.dot').click();
    await selectedRow.filter({ hasText: /full · / }).waitFor();
    assert.equal(await selectedRow.count(), 1, 'the clicked restore point is the one selected');
    assert.equal(await full.getAttribute('data-selected'), 'true', 'and the page highlights it');

    // The page follows the repository: a quick verification of the full shows in its row.
    await contextMenu(page, sidebarRow(/full · /), 'Verify…');
    await choose(page, 'Quick');
    assert.match(await toast(page, /verified app_full_/), /passed/);
    await history.locator('tr.restore-point[data-type="full"] .verification', { hasText: /passed \(quick, / }).waitFor();

    // The pictures for the README, in a dark and a light theme (Preferences: Toggle between
    // Light/Dark Themes, as a person switches); then the kind of theme the workbench had.
    const themeKind = async (): Promise<string | undefined> =>
      ((await page.locator('.monaco-workbench').getAttribute('class')) ?? '').split(/\s+/).find((c) => ['vs', 'vs-dark', 'hc-black', 'hc-light'].includes(c));
    const original = await themeKind();
    for (const [workbench, webview, file] of [
      ['vs-dark', 'vscode-dark', 'backup-history-dark.png'],
      ['vs', 'vscode-light', 'backup-history-light.png'],
    ] as const) {
      if ((await themeKind()) !== workbench) await runCommand(page, 'Preferences: Toggle between Light/Dark Themes');
      await page.locator(`.monaco-workbench.${workbench}`).waitFor();
      await history.locator(`body.${webview}`).waitFor();
      await page.mouse.move(1300, 800);
      await page.screenshot({ path: path.join(SHOTS, file) });
    }
    if ((await themeKind()) !== original) await runCommand(page, 'Preferences: Toggle between Light/Dark Themes');
    await page.locator(`.monaco-workbench.${original}`).waitFor();
    await runCommand(page, 'View: Close All Editors');
  });

  it('restarts the server when its process dies, says so, and the next action works', async () => {
    const servers = (): number[] => processesOf(vscode!, [path.join('bin', 'strata'), 'serve', '--stdio']);
    const before = servers();
    assert.equal(before.length, 1, `one strata serve process runs: ${JSON.stringify(before)}`);
    process.kill(before[0]!, 'SIGKILL');
    assert.match(await toast(page, /Strata server stopped unexpectedly; restarted/), /restarted/);
    const after = servers();
    assert.equal(after.length, 1, `one strata serve process runs again: ${JSON.stringify(after)}`);
    assert.notEqual(after[0], before[0]);
    await page.locator('.notifications-toasts').evaluate((el) => ((el as HTMLElement).style.visibility = 'visible'));
    await page.screenshot({ path: path.join(SHOTS, 'server-restarted.png') });
    // The restarted server was told the workspace again: Verify finds the database and its backups.
    await contextMenu(page, sidebarRow(/incremental · /), 'Verify…');
    await choose(page, 'Quick');
    assert.match(await toast(page, /verified app_incremental_/), /passed/);
    await sidebarRow(/incremental · .* · verified/).waitFor();
  });

  it('stops restarting after five stops within three minutes, says so, and Strata: Restart Server starts it again', async () => {
    const servers = (): number[] => processesOf(vscode!, [path.join('bin', 'strata'), 'serve', '--stdio']);
    // The test before stopped it once; three more stops are restarted.
    for (let stop = 2; stop <= 4; stop++) {
      const [pid] = servers();
      assert.ok(pid, `a server runs before stop ${stop}`);
      process.kill(pid, 'SIGKILL');
      await toast(page, /Strata server stopped unexpectedly; restarted/);
    }
    process.kill(servers()[0]!, 'SIGKILL');
    // An error notification, which toast() would take for a failure: wait for it by its text.
    const gaveUp = page.locator('.notification-toast', { hasText: 'the Strata server stopped 5 times in 3 minutes and is not restarted' }).first();
    await gaveUp.waitFor();
    assert.match(await gaveUp.innerText(), /run Strata: Restart Server/);
    await gaveUp.locator('.monaco-button', { hasText: 'Restart Server' }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'server-gave-up.png') });
    await gaveUp.locator('.codicon-notifications-clear').click();
    assert.deepEqual(servers(), []);
    await runCommand(page, 'Strata: Restart Server');
    assert.match(await toast(page, /Strata: server restarted \(pid \d+\)/), /pid/);
    assert.equal(servers().length, 1);
    await sidebarRow(/incremental · /).waitFor();
  });
});

/**
 * The same .vsix where strata is not installed: the view and a notification say how to get it,
 * and name nothing the user cannot install.
 */
describe('VS Code extension without the strata command line', function () {
  this.timeout(240_000);
  requireCodeServer(this);
  let root: string;
  let vscode: VsCode | undefined;
  let browser: Browser | undefined;
  let page: Page;

  before(async () => {
    root = mkdtempSync(path.join(tmpdir(), 'strata-vscode-missing-'));
    const workspace = path.join(root, 'ws');
    mkdirSync(workspace);
    buildRichDatabase(path.join(workspace, 'app.db'), { rows: 10 });
    writeFileSync(path.join(workspace, 'strata.config.json'), JSON.stringify({ repository: './.backups', databases: { app: { url: './app.db' } } }, null, 2));
    // npm's global folder: an empty prefix, so that no strata is found there either.
    const emptyPrefix = path.join(root, 'npm-prefix');
    mkdirSync(path.join(emptyPrefix, 'bin'), { recursive: true });
    vscode = await startCodeServer(root, workspace, { vsix: VSIX, userEnvironment: { ...userEnv(), npm_config_prefix: emptyPrefix } });
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
    await recordNotifications(page);
    await page.goto(vscode.url);
    await page.locator('.explorer-folders-view .monaco-list-row').first().waitFor({ timeout: 90_000 });
    await page.locator('.activitybar a[aria-label="Strata"]').waitFor({ timeout: 60_000 });
    mkdirSync(SHOTS, { recursive: true });
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && page) {
      await page.screenshot({ path: path.join(SHOTS, `failed-${this.currentTest.title.replace(/\W+/g, '-')}.png`) }).catch(() => undefined);
      console.log(`notifications shown: ${JSON.stringify(await notificationsShown(page).catch(() => []))}`);
      if (vscode) console.log(`the extension's log:\n${extensionLog(vscode)}`);
    }
  });

  after(async () => {
    await browser?.close();
    await vscode?.stop();
    if (root && !process.env['STRATA_KEEP_E2E']) rmSync(root, { recursive: true, force: true });
  });

  it('says so in the view and in a notification with How to Install and Set Path…', async () => {
    await page.locator('.activitybar a[aria-label="Strata"]').click();
    await page.locator('.part.sidebar .welcome-view-content', { hasText: 'Strata needs its command line' }).waitFor();
    const message = page.locator('.notification-toast', { hasText: 'Strata command line (strata) was not found' }).first();
    await message.waitFor();
    assert.doesNotMatch(await message.innerText(), /@strata\/server/);
    await message.locator('.monaco-button', { hasText: 'Set Path…' }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'missing-cli.png') });
    await message.locator('.monaco-button', { hasText: 'How to Install' }).click();
    // The extension's README, whose Install section comes first, in the Markdown preview.
    await page.locator('.tabs-container .tab', { hasText: 'README.md' }).first().waitFor();
  });
});
