import * as vscode from 'vscode';
import type { BackupView, DatabaseEntry } from '@strata/protocol';
import { formatAge, formatTime } from './format.js';
import { NewestRun } from './newest-run.js';
import type { RestorePointsProvider } from './tree.js';

/**
 * The status-bar item: the age of the oldest "newest good backup" among the workspace's
 * databases, i.e. how far back the worst-protected one would lose data. Warning colour when it
 * is older than strata.health.maxAgeHours, when a database has no good backup at all, or when
 * the last run of a strata daemon job failed.
 */
export class BackupAgeStatus implements vscode.Disposable {
  readonly #item = vscode.window.createStatusBarItem('strata.backupAge', vscode.StatusBarAlignment.Left, 50);
  readonly #tree: RestorePointsProvider;
  readonly #timer: NodeJS.Timeout;
  /** The text last shown, for tests. */
  text = '';
  readonly #updates = new NewestRun();

  constructor(tree: RestorePointsProvider) {
    this.#tree = tree;
    this.#item.name = 'Strata Backup Age';
    this.#item.command = 'strata.restorePoints.focus';
    // Ages grow while nothing happens: re-render each minute.
    this.#timer = setInterval(() => void this.update(), 60_000);
  }

  /** Shows what the repositories hold now (once every update started before has ended too). */
  update(): Promise<void> {
    return this.#updates.run((superseded) => this.#render(superseded));
  }

  async #render(superseded: () => boolean): Promise<void> {
    await this.#tree.loaded;
    if (superseded()) return;
    const databases = this.#tree.databases.filter((d) => d.repositoryExists);
    if (databases.length === 0) {
      this.#item.hide();
      return;
    }
    const maxAgeMs = (vscode.workspace.getConfiguration('strata').get<number>('health.maxAgeHours') ?? 25) * 3_600_000;
    const newest: { entry: DatabaseEntry; backup: BackupView | undefined }[] = [];
    for (const entry of databases) {
      try {
        newest.push({ entry, backup: (await this.#tree.backupsOf(entry)).find((b) => b.newestGood) });
      } catch {
        newest.push({ entry, backup: undefined });
      }
    }
    if (superseded()) return;
    const stale = newest.filter(({ backup }) => !backup || Date.now() - Date.parse(backup.createdAt) > maxAgeMs);
    const unprotected = newest.find((n) => !n.backup);
    const oldest = newest.map((n) => n.backup).filter((b): b is BackupView => b !== undefined).sort((a, b) => a.createdAt.localeCompare(b.createdAt))[0];
    this.text = unprotected || !oldest ? `$(database) ${unprotected?.entry.name ?? 'Strata'}: no backup` : `$(database) ${formatAge(oldest.createdAt)}`;
    // A job of strata daemon whose last run failed turns the item to a warning too.
    const failedJobs = databases.flatMap((entry) => (entry.schedule ?? []).filter((j) => j.last?.outcome === 'failed').map((j) => ({ entry, job: j })));
    if (failedJobs.length > 0) this.text = `$(warning) ${this.text}`;
    this.#item.text = this.text;
    this.#item.backgroundColor = stale.length > 0 || failedJobs.length > 0 ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
    const tooltip = new vscode.MarkdownString('**Strata**: newest good backup\n\n');
    for (const { entry, backup } of newest) {
      tooltip.appendMarkdown(`- ${entry.name}: ${backup ? `${formatAge(backup.createdAt)} (${formatTime(backup.createdAt)}, ${backup.type})` : 'none'}${stale.some((s) => s.entry === entry) ? ' ⚠' : ''}\n`);
    }
    if (failedJobs.length > 0) {
      tooltip.appendMarkdown('\n**strata daemon** reports failures:\n\n');
      for (const { entry, job } of failedJobs) tooltip.appendMarkdown(`- ${entry.name}/${job.job} (${job.what}) failed ${formatAge(job.last!.at)}${job.last!.error ? `: ${job.last!.error}` : ''}\n`);
    }
    this.#item.tooltip = tooltip;
    this.#item.show();
  }

  dispose(): void {
    clearInterval(this.#timer);
    this.#item.dispose();
  }
}
