/**
 * A real VS Code for the extension's end-to-end tests: code-server (the VS Code workbench and
 * its Node extension host) on Node 24, driven by playwright-core with Debian's chromium. The
 * tools are installed by scripts/e2e-setup.mjs and linked from e2e/ (see docs there).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs';
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

/** User settings that keep the workbench quiet (and, for development, point the extension at this checkout's server). */
function userSettings(development: boolean): Record<string, unknown> {
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
    ...(development ? strataSettings() : {}),
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

export interface CodeServerOptions {
  /** Install this .vsix first. */
  readonly vsix?: string;
  /** Let the page's `payload` run extension tests (extensionTestsPath). */
  readonly testDriver?: boolean;
  /**
   * As a user runs it: no strata.* settings, and this environment (PATH with or without an
   * installed `strata`), with code-server's Node 24 kept off PATH like an editor's own runtime.
   * Without it, the settings point the extension at this checkout's server (development).
   */
  readonly userEnvironment?: NodeJS.ProcessEnv;
}

/** Starts code-server on a free port for `workspace`, with its own HOME and user data. */
export async function startCodeServer(root: string, workspace: string, options: CodeServerOptions = {}): Promise<VsCode> {
  const development = options.userEnvironment === undefined;
  for (const dir of ['data/User', 'exts', 'home']) mkdirSync(path.join(root, dir), { recursive: true });
  writeFileSync(path.join(root, 'data/User/settings.json'), JSON.stringify(userSettings(development), null, 2));
  if (development) {
    // An extension-development window does not read those user settings: the workspace says it too.
    mkdirSync(path.join(workspace, '.vscode'), { recursive: true });
    writeFileSync(path.join(workspace, '.vscode/settings.json'), JSON.stringify(strataSettings(), null, 2));
  }
  const env = development
    ? { ...process.env, HOME: path.join(root, 'home'), PATH: `${NODE24_DIR}:${process.env['PATH']}` }
    : { ...options.userEnvironment, HOME: path.join(root, 'home') };
  // code-server runs under Node 24 named explicitly, so that in a user's environment the `node`
  // on PATH (which the installed strata runs with) stays the system's, as in a desktop editor.
  const codeServer = development ? [CODE_SERVER] : [path.join(NODE24_DIR, 'node'), realpathSync(CODE_SERVER)];
  const common = ['--user-data-dir', path.join(root, 'data'), '--extensions-dir', path.join(root, 'exts')];
  if (options.vsix) {
    const installed = spawnSync(codeServer[0]!, [...codeServer.slice(1), ...common, '--install-extension', options.vsix], { env, encoding: 'utf8' });
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
  const child = spawn(codeServer[0]!, [...codeServer.slice(1), ...args], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
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

/** The extension's output channel ("Strata"), as the workbench logged it, for a failed test's report. */
export function extensionLog(vscode: VsCode): string {
  const logs = path.join(vscode.root, 'data/logs');
  if (!existsSync(logs)) return '(no logs)';
  const files = readdirSync(logs, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith(path.join('strata.strata-vscode', 'Strata.log')));
  return files.map((f) => readFileSync(path.join(logs, f), 'utf8').split('\n').slice(-40).join('\n')).join('\n') || '(no Strata log)';
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

/**
 * Makes `page` remember every notification the workbench shows, from its first paint on. A toast
 * can come and go between two polls of a locator (the workbench hides info toasts after a while,
 * and shows at most three at a time), so `toast()` asks this record, not the DOM.
 */
export async function recordNotifications(page: Page): Promise<void> {
  await page.addInitScript(() => {
    type Shown = { text: string; claimed: boolean };
    const shown: Shown[] = [];
    const byElement = new WeakMap<Element, Shown>();
    (window as unknown as { __strataNotifications: Shown[] }).__strataNotifications = shown;
    const collect = (): void => {
      document.querySelectorAll('.notification-list-item-message').forEach((el) => {
        const text = (el.textContent ?? '').trim();
        const known = byElement.get(el);
        if (known) known.text = text;
        else if (text) {
          const entry = { text, claimed: false };
          byElement.set(el, entry);
          shown.push(entry);
        }
      });
    };
    new MutationObserver(collect).observe(document, { childList: true, subtree: true, characterData: true });
  });
}

/** The text of every notification `page` has shown so far (`recordNotifications` must come before `goto`). */
export async function notificationsShown(page: Page): Promise<string[]> {
  return page.evaluate(() => ((window as unknown as { __strataNotifications?: { text: string }[] }).__strataNotifications ?? []).map((n) => n.text));
}

/**
 * The workbench drops a toast (it goes only to the notification centre) when more than three
 * arrive within 0.8 s: its spam protection. A test clicks faster than a person, and a restore's
 * progress and result toasts followed by a backup's could trip it, so after each notification
 * the test lets that window pass, as a person reading it would.
 */
const TOAST_SPAM_WINDOW_MS = 1000;

/**
 * Waits for a notification matching `text` that no earlier call has returned, and returns its
 * text; fails at once with the text of an error notification or a dialog instead.
 */
export async function toast(page: Page, text: string | RegExp, timeout = 60_000): Promise<string> {
  const wanted = typeof text === 'string' ? { source: text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), flags: '' } : { source: text.source, flags: text.flags };
  const error = page.locator('.notification-toast:has(.codicon-error) .notification-list-item-message').first();
  const dialog = page.locator('.monaco-dialog-box').first();
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const claimed = await page.evaluate(({ source, flags }) => {
      const shown = (window as unknown as { __strataNotifications?: { text: string; claimed: boolean }[] }).__strataNotifications ?? [];
      const match = shown.find((n) => !n.claimed && new RegExp(source, flags).test(n.text));
      if (match) match.claimed = true;
      return match?.text;
    }, wanted);
    if (claimed !== undefined) {
      await page.waitForTimeout(TOAST_SPAM_WINDOW_MS);
      return claimed;
    }
    if (await error.isVisible()) throw new Error(`VS Code showed an error: ${(await error.innerText()).replace(/\s+/g, ' ')}`);
    if (await dialog.isVisible()) throw new Error(`VS Code showed a dialog: ${(await dialog.innerText()).replace(/\s+/g, ' ')}`);
    await page.waitForTimeout(100);
  }
  throw new Error(`no notification matching ${String(text)} within ${timeout} ms; shown: ${JSON.stringify(await notificationsShown(page))}`);
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

/**
 * The pids of code-server's descendants whose command line has all of `words` (the Strata
 * server: `node …/bin/strata serve --stdio`).
 */
export function processesOf(vscode: VsCode, words: readonly string[]): number[] {
  const parents = new Map<number, number>();
  const commands = new Map<number, string[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // After the parenthesised name: state, ppid, ...
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      commands.set(Number(entry), readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0'));
    } catch {
      // The process ended while we looked.
    }
  }
  const descends = (pid: number): boolean => {
    for (let p = parents.get(pid); p !== undefined && p > 1; p = parents.get(p)) if (p === vscode.process.pid) return true;
    return false;
  };
  return [...commands].filter(([pid, cmdline]) => descends(pid) && words.every((word) => cmdline.some((arg) => arg.includes(word)))).map(([pid]) => pid);
}
