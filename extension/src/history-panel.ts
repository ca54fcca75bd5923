import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import type { BackupHistory } from '@strata/protocol';
import { escapeMarkup } from '@strata/protocol/charts';
import type { StrataConnection } from './connection.js';
import { renderHistoryPage } from './history-view.js';

/** Whose history a panel shows: one database, or every database of a repository. */
export interface HistorySubject {
  readonly repository: string;
  readonly database?: string;
}

/** What a panel does with a click on a restore point: select it in the tree (true when it did). */
export type SelectInTree = (repository: string, id: string) => Promise<boolean>;

/**
 * The Backup History webview panels, one per database (or repository). A panel asks the server
 * for the whole history in one `strata/history` request and draws it again whenever the server
 * reports a change of its repository, keeping what was selected.
 */
export class HistoryPanels implements vscode.Disposable {
  readonly #connection: StrataConnection;
  readonly #select: SelectInTree;
  readonly #panels = new Map<string, HistoryPanel>();

  constructor(connection: StrataConnection, select: SelectInTree) {
    this.#connection = connection;
    this.#select = select;
  }

  /** Opens (or brings forward) the panel of `subject` and returns it once drawn. */
  async show(subject: HistorySubject): Promise<HistoryPanel> {
    const key = `${subject.repository}\0${subject.database ?? ''}`;
    let panel = this.#panels.get(key);
    if (panel) {
      panel.reveal();
    } else {
      panel = new HistoryPanel(this.#connection, subject, this.#select, () => this.#panels.delete(key));
      this.#panels.set(key, panel);
    }
    await panel.refresh();
    return panel;
  }

  /** The repository changed: every panel of it draws again. */
  async changed(repository: string): Promise<void> {
    await Promise.all([...this.#panels.values()].filter((p) => p.subject.repository === repository).map((p) => p.refresh().catch(() => undefined)));
  }

  /** Strata: Refresh: every panel reads its history again (backups made by cron or the CLI announce nothing). */
  async refreshAll(): Promise<void> {
    await Promise.all([...this.#panels.values()].map((p) => p.refresh().catch(() => undefined)));
  }

  /** A restore point was selected in the tree: the panels that show it highlight it. */
  selected(repository: string, id: string): void {
    for (const panel of this.#panels.values()) if (panel.subject.repository === repository) panel.highlight(id);
  }

  dispose(): void {
    for (const panel of [...this.#panels.values()]) panel.dispose();
  }
}

export class HistoryPanel implements vscode.Disposable {
  readonly subject: HistorySubject;
  readonly #connection: StrataConnection;
  readonly #panel: vscode.WebviewPanel;
  readonly #disposables: vscode.Disposable[] = [];
  #selected: string | undefined;
  /** Whether the panel was visible at its last view-state change (only hidden -> shown reads again). */
  #visible = true;
  #history: BackupHistory | undefined;
  /** The last drawing asked for; a refresh that ends after a newer one started is dropped. */
  #generation = 0;

  constructor(connection: StrataConnection, subject: HistorySubject, select: SelectInTree, onDispose: () => void) {
    this.subject = subject;
    this.#connection = connection;
    const title = subject.database !== undefined ? `Backup History: ${subject.database}` : 'Backup History: all databases';
    // No local resources at all: everything the page needs is inline (offline, and nothing to load).
    this.#panel = vscode.window.createWebviewPanel('strata.history', title, vscode.ViewColumn.Active, { enableScripts: true, localResourceRoots: [] });
    this.#panel.webview.html = `<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none';"></head><body>Reading the history…</body></html>`;
    this.#disposables.push(
      this.#panel.webview.onDidReceiveMessage(async (message: { type?: string; id?: string }) => {
        if (message?.type !== 'select' || typeof message.id !== 'string') return;
        this.#selected = message.id;
        try {
          if (!(await select(subject.repository, message.id))) {
            void vscode.window.showInformationMessage(`Strata: ${message.id} is no longer in the repository (deleted or pruned meanwhile).`);
          }
        } catch (err) {
          void vscode.window.showErrorMessage(`Strata: could not select ${message.id} in the Restore Points view: ${err instanceof Error ? err.message : String(err)}`);
        }
      }),
      // Brought back into view: read again, as backups from cron or the CLI announce nothing.
      this.#panel.onDidChangeViewState((e) => {
        const shown = e.webviewPanel.visible && !this.#visible;
        this.#visible = e.webviewPanel.visible;
        if (shown) void this.refresh().catch(() => undefined);
      }),
      this.#panel.onDidDispose(() => {
        onDispose();
        for (const d of this.#disposables) d.dispose();
      }),
    );
  }

  /** The history last drawn (for tests and the command's result). */
  get history(): BackupHistory | undefined {
    return this.#history;
  }

  reveal(): void {
    this.#panel.reveal();
  }

  highlight(id: string): void {
    this.#selected = id;
    void this.#panel.webview.postMessage({ type: 'selected', id });
  }

  /** Asks the server for the history and draws it; a failure is shown in the page and thrown. */
  async refresh(): Promise<void> {
    const generation = ++this.#generation;
    const subject = this.subject.database ?? `all databases in ${this.subject.repository}`;
    try {
      const history = await this.#connection.request('strata/history', {
        repository: this.subject.repository,
        ...(this.subject.database !== undefined ? { database: this.subject.database } : {}),
      });
      if (generation !== this.#generation) return;
      this.#history = history;
      this.#panel.webview.html = renderHistoryPage(history, {
        subject,
        repositoryWide: this.subject.database === undefined,
        nonce: randomBytes(18).toString('base64'),
        ...(this.#selected !== undefined ? { selected: this.#selected } : {}),
      });
    } catch (err) {
      if (generation !== this.#generation) return;
      const message = err instanceof Error ? err.message : String(err);
      this.#panel.webview.html = `<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none';"></head><body><p>The history of ${escapeMarkup(subject)} could not be read: ${escapeMarkup(message)}</p></body></html>`;
      throw err;
    }
  }

  dispose(): void {
    this.#panel.dispose();
  }
}
