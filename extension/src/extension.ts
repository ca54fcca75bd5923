import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { createCommands } from './commands.js';
import { HistoryPanels } from './history-panel.js';
import type { CommandContext } from './commands.js';
import { StrataConnection } from './connection.js';
import { Passphrases } from './passphrases.js';
import { vscodePrompts } from './prompts.js';
import type { Prompts } from './prompts.js';
import { BackupAgeStatus } from './status.js';
import { RestorePointsProvider, VerificationDecorations } from './tree.js';
import type { StrataNode } from './tree.js';

/** What `activate` returns: the parts tests inside the extension host drive directly. */
export interface StrataExtensionApi {
  readonly connection: StrataConnection;
  readonly tree: RestorePointsProvider;
  readonly status: BackupAgeStatus;
  /** The Backup History panels (Strata: Show Backup History). */
  readonly history: HistoryPanels;
  /** The Restore Points tree view (its selection, for tests). */
  readonly view: vscode.TreeView<StrataNode>;
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
    history: undefined as unknown as HistoryPanels,
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
  const status = new BackupAgeStatus(tree);
  const view = vscode.window.createTreeView('strata.restorePoints', { treeDataProvider: tree, showCollapseAll: true });
  // A click on a restore point in a Backup History selects it in the tree (revealing it: its
  // database expanded, the view shown), without taking the focus from the history.
  const history = new HistoryPanels(connection, async (repository, id) => {
    const node = await tree.backupNode(repository, id);
    if (!node) return false;
    await view.reveal(node, { select: true, focus: false });
    return true;
  });
  Object.assign(ctx, { connection, tree, history });
  const commands = createCommands(ctx);

  context.subscriptions.push(
    output,
    connection,
    status,
    view,
    history,
    view.onDidChangeSelection((e) => {
      const [node] = e.selection;
      if (node?.kind === 'backup') history.selected(node.entry.repository, node.backup.id);
    }),
    vscode.window.registerFileDecorationProvider(new VerificationDecorations()),
    ...Object.entries(commands).map(([id, handler]) => vscode.commands.registerCommand(id, handler)),
    connection.onRestarted(() => refresh()),
    connection.onChanged((repository) => {
      tree.invalidate(repository);
      void status.update();
      void history.changed(repository);
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
  // strata daemon writes to the journal from outside the editor: where databases have jobs, their
  // last outcomes are read again each minute.
  const daemonPoll = setInterval(() => {
    if (tree.databases.some((d) => (d.schedule?.length ?? 0) > 0)) void refresh();
  }, 60_000);
  context.subscriptions.push({ dispose: () => clearInterval(daemonPoll) });

  return {
    connection,
    tree,
    status,
    history,
    view,
    commands,
    setPrompts: (prompts) => {
      ctx.prompts = prompts;
    },
  };
}

export function deactivate(): void {
  // Subscriptions (the server connection among them) are disposed by VS Code.
}
