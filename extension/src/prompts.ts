import * as vscode from 'vscode';

/**
 * Every question the commands ask a person, in one place. The extension uses VS Code's own
 * dialogs; tests that run inside the extension host answer through a scripted implementation,
 * so the command handlers run for real against a real server.
 */
export interface Prompts {
  pick<T extends vscode.QuickPickItem>(items: readonly T[], options: vscode.QuickPickOptions): Promise<T | undefined>;
  pickMany<T extends vscode.QuickPickItem>(items: readonly T[], options: vscode.QuickPickOptions): Promise<readonly T[] | undefined>;
  input(options: vscode.InputBoxOptions): Promise<string | undefined>;
  /** A modal question; resolves to the chosen action, or undefined when dismissed. */
  confirm(message: string, detail: string, ...actions: string[]): Promise<string | undefined>;
  saveFile(options: vscode.SaveDialogOptions): Promise<vscode.Uri | undefined>;
  openFile(options: vscode.OpenDialogOptions): Promise<vscode.Uri | undefined>;
  info(message: string, ...actions: string[]): Promise<string | undefined>;
  error(message: string, ...actions: string[]): Promise<string | undefined>;
}

export const vscodePrompts: Prompts = {
  pick: async (items, options) => vscode.window.showQuickPick([...items], { ...options, ignoreFocusOut: true }),
  pickMany: async (items, options) => vscode.window.showQuickPick([...items], { ...options, canPickMany: true, ignoreFocusOut: true }),
  input: async (options) => vscode.window.showInputBox({ ...options, ignoreFocusOut: true }),
  confirm: async (message, detail, ...actions) => vscode.window.showWarningMessage(message, { modal: true, detail }, ...actions),
  saveFile: async (options) => vscode.window.showSaveDialog(options),
  openFile: async (options) => (await vscode.window.showOpenDialog({ ...options, canSelectMany: false }))?.[0],
  info: async (message, ...actions) => vscode.window.showInformationMessage(message, ...actions),
  error: async (message, ...actions) => vscode.window.showErrorMessage(message, ...actions),
};
