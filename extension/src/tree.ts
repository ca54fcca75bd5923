import * as vscode from 'vscode';
import type { BackupView, ConfigProblem, ContinuityWindow, DatabaseEntry, EngineInfo, LogWindow } from '@strata/protocol';
import { describeCoverage, describeLogCoverage } from '@strata/protocol/continuity';
import { describeBackupType } from '@strata/protocol/labels';
import { SERVER_PROBLEMS, StrataRequestError } from './connection.js';
import type { StrataConnection } from './connection.js';
import { describeBackup, formatAge, formatBytes, formatTime } from './format.js';
import { NewestRun } from './newest-run.js';

export interface DatabaseNode {
  readonly kind: 'database';
  readonly entry: DatabaseEntry;
}
export interface TierNode {
  readonly kind: 'tier';
  readonly entry: DatabaseEntry;
  readonly tier: string;
  readonly backups: readonly BackupView[];
}
export interface BackupNode {
  readonly kind: 'backup';
  readonly entry: DatabaseEntry;
  readonly backup: BackupView;
}
/** A line that explains something (an error, an empty list) and may offer a command. */
export interface MessageNode {
  readonly kind: 'message';
  readonly text: string;
  readonly detail?: string;
  readonly icon: string;
  readonly command?: vscode.Command;
}
export type StrataNode = DatabaseNode | TierNode | BackupNode | MessageNode;

const TYPE_ICONS: Record<string, string> = { full: 'database', incremental: 'diff-added', differential: 'diff', 'schema-only': 'symbol-structure' };
const TIER_ORDER = ['pinned', 'labelled', 'yearly', 'monthly', 'weekly', 'daily', 'hourly', 'within', 'last', 'newest', 'chain', 'other', 'not kept'];

/** The URI scheme that carries a restore point's verification state to the decoration provider. */
export const BACKUP_SCHEME = 'strata-backup';

/**
 * Databases, then their restore points newest first (or grouped by retention tier). Lists come
 * from the server and are kept per repository until it reports a change or the user refreshes.
 */
export class RestorePointsProvider implements vscode.TreeDataProvider<StrataNode> {
  readonly #connection: StrataConnection;
  readonly #changed = new vscode.EventEmitter<StrataNode | undefined>();
  readonly onDidChangeTreeData = this.#changed.event;
  #databases: readonly DatabaseEntry[] = [];
  #engines: readonly EngineInfo[] = [];
  #problems: readonly ConfigProblem[] = [];
  #workspaceError: string | undefined;
  #lists = new Map<string, Promise<{ readonly backups: readonly BackupView[]; readonly continuity: readonly ContinuityWindow[]; readonly logWindows?: readonly LogWindow[] }>>();
  /** Settles when the databases were (re)loaded; tests and the status bar wait on it. */
  loaded: Promise<void> = Promise.resolve();
  readonly #loads = new NewestRun();

  constructor(connection: StrataConnection) {
    this.#connection = connection;
  }

  get databases(): readonly DatabaseEntry[] {
    return this.#databases;
  }

  /** The engines the server has, as it describes them (empty until the workspace was loaded). */
  get engines(): readonly EngineInfo[] {
    return this.#engines;
  }

  /** The engine of a database; undefined only if the server no longer has it. */
  engineOf(entry: DatabaseEntry): EngineInfo | undefined {
    return this.#engines.find((e) => e.kind === entry.engine);
  }

  /** Re-reads the config files and settings, and forgets every cached list. */
  reload(): Promise<void> {
    this.loaded = this.#loads.run((superseded) => this.#load(superseded));
    return this.loaded;
  }

  async #load(superseded: () => boolean): Promise<void> {
    this.#lists.clear();
    try {
      const folders = (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath);
      const databases = vscode.workspace.getConfiguration('strata').get<{ name: string; url: string; repository: string }[]>('databases') ?? [];
      const result = await this.#connection.request('strata/workspace', { folders, databases });
      // A reload started after this one read the files later: its answer is the one to keep.
      if (superseded()) return;
      this.#databases = result.databases;
      this.#engines = result.engines;
      this.#problems = result.problems;
      this.#workspaceError = undefined;
    } catch (err) {
      if (superseded()) return;
      this.#databases = [];
      this.#problems = [];
      this.#workspaceError = err instanceof Error ? err.message : String(err);
      if (err instanceof StrataRequestError && SERVER_PROBLEMS.includes(err.code)) {
        // The view's welcome text explains a missing or unusable strata; the notification once.
        if (err.code === 'SERVER_MISSING' || err.code === 'SERVER_INCOMPATIBLE') this.#workspaceError = undefined;
        void this.#connection.showProblem(err, false);
      }
    }
    await vscode.commands.executeCommand('setContext', 'strata.hasDatabases', this.#databases.length > 0 || this.#problems.length > 0 || this.#workspaceError !== undefined);
    this.#changed.fire(undefined);
  }

  /** Forgets the lists of one repository (after the server said it changed). */
  invalidate(repository: string): void {
    for (const key of [...this.#lists.keys()]) if (key.startsWith(`${repository}\0`)) this.#lists.delete(key);
    this.#changed.fire(undefined);
  }

  /** Restore points of a database, newest first (from the cache when it has them). */
  async backupsOf(entry: DatabaseEntry): Promise<readonly BackupView[]> {
    return (await this.#listOf(entry)).backups;
  }

  /** What continuous protection covers of a database: its chains of segments, oldest first (none without segments). */
  async continuityOf(entry: DatabaseEntry): Promise<readonly ContinuityWindow[]> {
    return (await this.#listOf(entry)).continuity.filter((w) => w.database === entry.name);
  }

  /** What the archived log covers after each base backup of a database that replays one (none for others). */
  async logWindowsOf(entry: DatabaseEntry): Promise<readonly LogWindow[]> {
    return ((await this.#listOf(entry)).logWindows ?? []).filter((w) => w.database === entry.name);
  }

  #listOf(entry: DatabaseEntry): Promise<{ readonly backups: readonly BackupView[]; readonly continuity: readonly ContinuityWindow[]; readonly logWindows?: readonly LogWindow[] }> {
    const byTier = groupByTier();
    const key = `${entry.repository}\0${entry.name}\0${byTier}`;
    let list = this.#lists.get(key);
    if (!list) {
      list = this.#connection.request('strata/list', { repository: entry.repository, database: entry.name, byTier });
      list.catch(() => this.#lists.delete(key));
      this.#lists.set(key, list);
    }
    return list;
  }

  /**
   * The tree's node of a restore point, by id (as the Backup History names it), or undefined when
   * the repository no longer has it. Reads the list again once when the cached one lacks it.
   */
  async backupNode(repository: string, id: string): Promise<BackupNode | undefined> {
    for (const fresh of [false, true]) {
      if (fresh) this.invalidate(repository);
      for (const entry of this.#databases.filter((d) => d.repository === repository)) {
        const backup = (await this.backupsOf(entry)).find((b) => b.id === id);
        if (backup) return { kind: 'backup', entry, backup };
      }
    }
    return undefined;
  }

  /** For TreeView.reveal: a restore point's parent is its tier group (when grouped) or its database. */
  async getParent(node: StrataNode): Promise<StrataNode | undefined> {
    if (node.kind === 'tier') return { kind: 'database', entry: node.entry };
    if (node.kind !== 'backup') return undefined;
    if (!groupByTier()) return { kind: 'database', entry: node.entry };
    const tier = node.backup.tier ?? 'other';
    const backups = (await this.backupsOf(node.entry)).filter((b) => (b.tier ?? 'other') === tier);
    return { kind: 'tier', entry: node.entry, tier, backups };
  }

  getTreeItem(node: StrataNode): vscode.TreeItem {
    switch (node.kind) {
      case 'database': {
        const item = new vscode.TreeItem(node.entry.name, vscode.TreeItemCollapsibleState.Expanded);
        item.id = `db:${node.entry.repository}:${node.entry.name}`;
        item.description = node.entry.location;
        item.iconPath = new vscode.ThemeIcon('server');
        item.contextValue = 'strata.database';
        item.tooltip = new vscode.MarkdownString(
          `**${node.entry.name}** (${node.entry.engine})\n\n${node.entry.location}\n\nbackups in \`${node.entry.repository}\`\n\nfrom ${node.entry.origin === 'settings' ? 'the strata.databases setting' : `\`${node.entry.origin}\``}${scheduleText(node.entry)}`,
        );
        return item;
      }
      case 'tier': {
        const item = new vscode.TreeItem(node.tier, vscode.TreeItemCollapsibleState.Expanded);
        item.id = `tier:${node.entry.repository}:${node.entry.name}:${node.tier}`;
        item.description = `${node.backups.length}`;
        item.iconPath = new vscode.ThemeIcon(node.tier === 'not kept' ? 'trash' : 'calendar');
        item.tooltip = node.tier === 'not kept' ? 'No retention rule keeps these: the next prune removes them' : `Kept by the ${node.tier} rule`;
        return item;
      }
      case 'backup': {
        const b = node.backup;
        const item = new vscode.TreeItem(formatTime(b.createdAt), vscode.TreeItemCollapsibleState.None);
        item.id = `backup:${b.id}`;
        const verified = b.verification ? (b.verification.outcome === 'passed' ? 'verified' : 'verification failed') : undefined;
        item.description = [describeBackupType(b), formatBytes(b.storedBytes), formatAge(b.createdAt), b.label ?? undefined, verified].filter(Boolean).join(' · ');
        item.iconPath = new vscode.ThemeIcon(TYPE_ICONS[b.type] ?? 'circle-outline', b.verification?.outcome === 'failed' ? new vscode.ThemeColor('testing.iconFailed') : undefined);
        item.resourceUri = vscode.Uri.from({ scheme: BACKUP_SCHEME, path: `/${b.id}`, query: b.verification?.outcome ?? 'never' });
        item.tooltip = new vscode.MarkdownString(describeBackup(b, node.entry.location));
        item.contextValue = `strata.backup.${b.type}`;
        item.command = { command: 'strata.showDetails', title: 'Show Details', arguments: [node] };
        return item;
      }
      case 'message': {
        const item = new vscode.TreeItem(node.text, vscode.TreeItemCollapsibleState.None);
        item.iconPath = new vscode.ThemeIcon(node.icon);
        if (node.detail) item.tooltip = node.detail;
        if (node.command) item.command = node.command;
        item.contextValue = 'strata.message';
        return item;
      }
    }
  }

  async getChildren(node?: StrataNode): Promise<StrataNode[]> {
    if (!node) {
      await this.loaded;
      const nodes: StrataNode[] = this.#databases.map((entry) => ({ kind: 'database', entry }));
      for (const problem of this.#problems) nodes.push({ kind: 'message', text: `${problem.file}: ${problem.message}`, icon: 'warning', detail: problem.message });
      if (this.#workspaceError) {
        nodes.push({ kind: 'message', text: this.#workspaceError, icon: 'error', command: { command: 'strata.showLog', title: 'Show Server Log' } });
      }
      return nodes;
    }
    if (node.kind === 'tier') return node.backups.map((backup) => ({ kind: 'backup', entry: node.entry, backup }));
    if (node.kind !== 'database') return [];
    const entry = node.entry;
    if (!entry.repositoryExists) {
      return [{ kind: 'message', text: `No repository at ${entry.repository} yet: create it`, icon: 'new-folder', command: { command: 'strata.addDatabase', title: 'Create Repository', arguments: [{ initRepository: entry.repository }] } }];
    }
    let backups: readonly BackupView[];
    try {
      backups = await this.backupsOf(entry);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      return [{ kind: 'message', text: message, icon: 'error', command: { command: 'strata.showLog', title: 'Show Server Log' } }];
    }
    if (backups.length === 0) return [{ kind: 'message', text: 'No restore points yet: back up now', icon: 'info', command: { command: 'strata.backupNow', title: 'Back Up Now', arguments: [node] } }];
    // Continuous protection first: the window a restore as of a time can reach, between restore points too.
    const coverage = continuityNode(await this.continuityOf(entry), Date.now());
    const logCoverage = logWindowNode(await this.logWindowsOf(entry), Date.now());
    const above: StrataNode[] = [...(coverage ? [coverage] : []), ...(logCoverage ? [logCoverage] : [])];
    if (!groupByTier()) return [...above, ...backups.map((backup): StrataNode => ({ kind: 'backup', entry, backup }))];
    const tiers = new Map<string, BackupView[]>();
    for (const b of backups) tiers.set(b.tier ?? 'other', [...(tiers.get(b.tier ?? 'other') ?? []), b]);
    return [
      ...above,
      ...[...tiers].sort(([a], [b]) => TIER_ORDER.indexOf(a) - TIER_ORDER.indexOf(b)).map(([tier, list]): StrataNode => ({ kind: 'tier', entry, tier, backups: list })),
    ];
  }
}

/**
 * The line of a database's continuous protection, "continuous since ..., last change shipped 0.8 s
 * ago", from its newest chain of segments; the tooltip says what the chains cover in all.
 */
export function continuityNode(windows: readonly ContinuityWindow[], now: number): MessageNode | undefined {
  const newest = windows.at(-1);
  if (!newest) return undefined;
  const detail = windows.map((w) => `${formatTime(w.from)} to ${formatTime(w.to)}: ${w.segments} segment(s), ${w.transactions} transaction(s), ${formatBytes(w.storedBytes)} after ${w.base}${w.broken ? `; broken: ${w.broken}` : ''}`);
  return { kind: 'message', text: describeCoverage(newest, now, formatTime), icon: newest.broken ? 'warning' : 'pulse', detail: `Restores as of any moment in:\n${detail.join('\n')}` };
}

/** The line of a database whose restores replay a log archive: the moments it recovers to, and the archive's age. */
export function logWindowNode(windows: readonly LogWindow[], now: number): MessageNode | undefined {
  const text = describeLogCoverage(windows, now, formatTime);
  if (!text) return undefined;
  const detail = windows.map((w) => `after ${w.base}: ${w.to ? `${formatTime(w.from)} to ${formatTime(w.to)}` : 'not recoverable'}, ${w.files} file(s), ${formatBytes(w.storedBytes)}${w.problems.length > 0 ? `; ${w.problems.join('; ')}` : ''}`);
  return { kind: 'message', text, icon: windows.some((w) => w.problems.length > 0) ? 'warning' : 'history', detail: `Recovers to any moment in:\n${detail.join('\n')}` };
}

function groupByTier(): boolean {
  return vscode.workspace.getConfiguration('strata').get<boolean>('tree.groupByTier') ?? false;
}

/** The verification badge: ✓ for a passed verification, ✗ for a failed one. */
export class VerificationDecorations implements vscode.FileDecorationProvider {
  provideFileDecoration(uri: vscode.Uri): vscode.FileDecoration | undefined {
    if (uri.scheme !== BACKUP_SCHEME) return undefined;
    if (uri.query === 'passed') return new vscode.FileDecoration('✓', 'verified', new vscode.ThemeColor('testing.iconPassed'));
    if (uri.query === 'failed') return new vscode.FileDecoration('✗', 'verification failed', new vscode.ThemeColor('testing.iconFailed'));
    return undefined;
  }
}

/** The jobs strata daemon runs for a database, for its tooltip: next run and last outcome. */
export function scheduleText(entry: DatabaseEntry): string {
  if (!entry.schedule || entry.schedule.length === 0) return '';
  const lines = entry.schedule.map((j) => {
    const when = j.cron === undefined ? 'continuous' : `next ${j.next ? formatTime(j.next) : 'never'} (\`${j.cron}\`${j.timezone ? ` ${j.timezone}` : ''})`;
    const last = j.last ? `; last ${j.last.outcome === 'failed' ? '**failed**' : j.last.outcome} ${formatAge(j.last.at)}${j.last.error ? `: ${j.last.error}` : ''}` : '; not run yet';
    return `- ${j.job}: ${j.what}, ${when}${last}`;
  });
  return `\n\n**strata daemon** schedule:\n\n${lines.join('\n')}`;
}
