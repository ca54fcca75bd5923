import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { createCommands } from './commands.js';
import type { CommandContext } from './commands.js';
import { StrataConnection } from './connection.js';
import { Passphrases } from './passphrases.js';
import { vscodePrompts } from './prompts.js';
import type { Prompts } from './prompts.js';
import { BackupAgeStatus } from './status.js';
import { RestorePointsProvider, VerificationDecorations } from './tree.js';

/** What `activate` returns: the parts tests inside the extension host drive directly. */
export interface StrataExtensionApi {
  readonly connection: StrataConnection;
  readonly tree: RestorePointsProvider;
  readonly status: BackupAgeStatus;
  /** Replaceable so tests can answer the questions a person would. */
  setPrompts(prompts: Prompts): void;
  /** The command handlers, by id (the same the palette and menus run). */
  readonly commands: Record<string, (...args: unknown[]) => Promise<unknown>>;
}

export async function activate(context: vscode.ExtensionContext): Promise<StrataExtensionApi> {
  const output = vscode.window.createOutputChannel('Strata', { log: true });
  const ctx: CommandContext = {
    connection: undefined as unknown as StrataConnection,
    tree: undefined as unknown as RestorePointsProvider,
    passphrases: new Passphrases(context.secrets, () => ctx.prompts),
    output,
    prompts: vscodePrompts,
  };
  const connection = new StrataConnection({
    output,
    passphrase: (params) => ctx.passphrases.provide(params.repository, params.purpose),
    extensionVersion: (context.extension.packageJSON as { version: string }).version,
    // vsce stores the README as readme.md in the package; a development folder has README.md.
    readme: vscode.Uri.joinPath(context.extensionUri, existsSync(path.join(context.extensionPath, 'readme.md')) ? 'readme.md' : 'README.md'),
  });
  const tree = new RestorePointsProvider(connection);
  Object.assign(ctx, { connection, tree });
  const status = new BackupAgeStatus(tree);
  const view = vscode.window.createTreeView('strata.restorePoints', { treeDataProvider: tree, showCollapseAll: true });
  const commands = createCommands(ctx);

  context.subscriptions.push(
    output,
    connection,
    status,
    view,
    vscode.window.registerFileDecorationProvider(new VerificationDecorations()),
    ...Object.entries(commands).map(([id, handler]) => vscode.commands.registerCommand(id, handler)),
    connection.onRestarted(() => refresh()),
    connection.onChanged((repository) => {
      tree.invalidate(repository);
      void status.update();
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration('strata.server') || e.affectsConfiguration('strata.cliPath')) await connection.restart();
      if (e.affectsConfiguration('strata')) await refresh();
    }),
    vscode.workspace.onDidChangeWorkspaceFolders(() => refresh()),
  );
  const watcher = vscode.workspace.createFileSystemWatcher('**/strata.config.json');
  context.subscriptions.push(watcher, watcher.onDidCreate(refresh), watcher.onDidChange(refresh), watcher.onDidDelete(refresh));

  async function refresh(): Promise<void> {
    await tree.reload();
    await status.update();
  }
  void refresh();

  return {
    connection,
    tree,
    status,
    commands,
    setPrompts: (prompts) => {
      ctx.prompts = prompts;
    },
  };
}

export function deactivate(): void {
  // Subscriptions (the server connection among them) are disposed by VS Code.
}
