/**
 * A real VS Code for the extension's end-to-end tests: code-server (the VS Code workbench and
 * its Node extension host) on Node 24, driven by playwright-core with Debian's chromium. The
 * tools are installed by scripts/e2e-setup.mjs into e2e/ (see docs there).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
import type { Browser, Locator, Page } from 'playwright-core';
import { ROOT } from '../helpers/env.js';

export const CODE_SERVER = path.join(ROOT, 'e2e/vscode/node_modules/.bin/code-server');
export const NODE24_DIR = path.join(ROOT, 'e2e/tools/node_modules/node/bin');
export const CHROMIUM = '/usr/bin/chromium';
export const VSIX = path.join(ROOT, 'extension/out/strata.vsix');
export const EXTENSION_DIR = path.join(ROOT, 'extension');
export const SERVER = path.join(ROOT, 'packages/server/dist/main.js');
export const SHOTS = path.join(ROOT, 'test-output/vscode');

/**
 * Skips the suite (one clear line) when the real VS Code is not installed, except under CI,
 * where that is a failure: the e2e suite is part of what CI proves.
 */
export function requireCodeServer(suite: Mocha.Suite): void {
  const missing = [CODE_SERVER, path.join(NODE24_DIR, 'node'), CHROMIUM, VSIX].filter((p) => !existsSync(p));
  suite.beforeAll(function () {
    if (missing.length === 0 && !process.env['STRATA_SKIP_E2E']) return;
    const why = missing.length === 0 ? 'VS Code e2e: STRATA_SKIP_E2E is set' : `VS Code e2e: missing ${missing.join(', ')} (run node scripts/e2e-setup.mjs)`;
    if (process.env['CI']) throw new Error(why);
    console.log(`    skipped: ${why}`);
    this.skip();
  });
}

/** User settings that keep the workbench quiet and point the extension at this checkout's server. */
function userSettings(): Record<string, unknown> {
  return {
    'workbench.startupEditor': 'none',
    'workbench.tips.enabled': false,
    'telemetry.telemetryLevel': 'off',
    'update.mode': 'none',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
    'security.workspace.trust.enabled': false,
    'chat.disableAIFeatures': true,
    'workbench.secondarySideBar.defaultVisibility': 'hidden',
    'files.simpleDialog.enable': true,
    ...strataSettings(),
  };
}

/** The server runs under the system Node (the one better-sqlite3 was built for), not code-server's Node 24. */
function strataSettings(): Record<string, unknown> {
  return { 'strata.server.nodePath': process.execPath, 'strata.server.path': SERVER };
}

export interface VsCode {
  readonly root: string;
  readonly workspace: string;
  url: string;
  readonly process: ChildProcess;
  log: string;
  stop(): Promise<void>;
}

/** Starts code-server on a free port for `workspace`, with its own HOME and user data. */
export async function startCodeServer(root: string, workspace: string, options: { vsix?: string; testDriver?: boolean } = {}): Promise<VsCode> {
  for (const dir of ['data/User', 'exts', 'home']) mkdirSync(path.join(root, dir), { recursive: true });
  writeFileSync(path.join(root, 'data/User/settings.json'), JSON.stringify(userSettings(), null, 2));
  // An extension-development window does not read those user settings: the workspace says it too.
  mkdirSync(path.join(workspace, '.vscode'), { recursive: true });
  writeFileSync(path.join(workspace, '.vscode/settings.json'), JSON.stringify(strataSettings(), null, 2));
  const env = { ...process.env, HOME: path.join(root, 'home'), PATH: `${NODE24_DIR}:${process.env['PATH']}` };
  const common = ['--user-data-dir', path.join(root, 'data'), '--extensions-dir', path.join(root, 'exts')];
  if (options.vsix) {
    const installed = spawnSync(CODE_SERVER, [...common, '--install-extension', options.vsix], { env, encoding: 'utf8' });
    if (installed.status !== 0) throw new Error(`code-server --install-extension failed:\n${installed.stdout}${installed.stderr}`);
  }
  const args = [
    ...common,
    '--bind-addr',
    '127.0.0.1:0',
    '--auth',
    'none',
    '--disable-telemetry',
    '--disable-update-check',
    '--disable-workspace-trust',
    '--disable-getting-started-override',
    ...(options.testDriver ? ['--vscode-option', 'enable-smoke-test-driver'] : []),
    workspace,
  ];
  const child = spawn(CODE_SERVER, args, { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const server: VsCode = {
    root,
    workspace,
    url: '',
    process: child,
    log: '',
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      // The whole group: code-server, its extension host, the Strata server, file watchers.
      process.kill(-child.pid!, 'SIGTERM');
      await gone;
    },
  };
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`code-server did not start in 60 s:\n${server.log}`)), 60_000);
    const collect = (chunk: Buffer): void => {
      server.log += chunk.toString();
      const m = /HTTP server listening on (http:\/\/\S+)/.exec(server.log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`code-server exited with ${code}:\n${server.log}`));
    });
  });
  server.url = url;
  return server;
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** Runs a command from the palette by its title. */
export async function runCommand(page: Page, title: string): Promise<void> {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor({ state: 'visible' });
  await input.fill(`>${title}`);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first().waitFor();
  await page.keyboard.press('Enter');
}

/** Waits for a notification containing `text`; fails at once with the text of an error dialog or error toast instead. */
export async function toast(page: Page, text: string | RegExp, timeout = 60_000): Promise<string> {
  const wanted = page.locator('.notification-toast .notification-list-item-message', { hasText: text }).first();
  const failure = page.locator('.monaco-dialog-box, .notification-toast:has(.codicon-error) .notification-list-item-message').first();
  await Promise.race([wanted.waitFor({ timeout }), failure.waitFor({ timeout })]);
  if (!(await wanted.isVisible()) && (await failure.isVisible())) throw new Error(`VS Code showed an error: ${(await failure.innerText()).replace(/\s+/g, ' ')}`);
  return (await wanted.innerText()).trim();
}

/** Chooses an item of the open quick pick by its label. */
export async function choose(page: Page, label: string): Promise<void> {
  const row = page.locator('.quick-input-widget .quick-input-list .monaco-list-row', { hasText: label }).first();
  await row.waitFor();
  await row.click();
}

/**
 * Runs a context-menu entry of a row. Keyboard, not a click: the workbench's menus ignore a
 * mouse-up that comes right after they open (so the right-click itself cannot choose an entry).
 */
export async function contextMenu(page: Page, row: Locator, entry: string): Promise<void> {
  await row.click({ button: 'right' });
  const item = page.locator('.context-view .monaco-menu .action-item', { hasText: entry }).first();
  await item.waitFor();
  await item.hover();
  await page.keyboard.press('Enter');
  await page.locator('.context-view .monaco-menu').waitFor({ state: 'hidden' });
}
