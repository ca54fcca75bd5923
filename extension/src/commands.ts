import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { BackupHistory, BackupType, BackupView, DatabaseEntry, EngineInfo, RetentionDecision } from '@strata/protocol';
import { SERVER_PROBLEMS, StrataRequestError } from './connection.js';
import type { StrataConnection } from './connection.js';
import { describeBackup, formatBytes, formatTime } from './format.js';
import type { HistoryPanels, HistorySubject } from './history-panel.js';
import type { Prompts } from './prompts.js';
import type { BackupNode, DatabaseNode, RestorePointsProvider, StrataNode } from './tree.js';
import type { Passphrases } from './passphrases.js';

/** What the command handlers work with. `prompts` is swappable so tests can answer for a person. */
export interface CommandContext {
  readonly connection: StrataConnection;
  readonly tree: RestorePointsProvider;
  readonly history: HistoryPanels;
  readonly passphrases: Passphrases;
  readonly output: vscode.LogOutputChannel;
  prompts: Prompts;
}

const BACKUP_TYPES: readonly (vscode.QuickPickItem & { type: BackupType })[] = [
  { label: 'Full', type: 'full', detail: 'A self-contained restore point' },
  { label: 'Incremental', type: 'incremental', detail: 'Only what changed since the newest restore point (a full one if there is none yet)' },
  { label: 'Differential', type: 'differential', detail: 'Only what changed since the newest full backup' },
  { label: 'Schema only', type: 'schema-only', detail: 'The tables, indexes and views, no rows' },
];

/** The command handlers, by command id. Each returns what it did (for tests) or undefined when cancelled. */
export function createCommands(ctx: CommandContext): Record<string, (...args: unknown[]) => Promise<unknown>> {
  return {
    'strata.refresh': async () => {
      await ctx.tree.reload();
      await ctx.history.refreshAll();
    },
    'strata.showLog': async () => ctx.output.show(true),
    'strata.restartServer': async () => {
      await ctx.connection.restart();
      await ctx.tree.reload();
      const pid = ctx.connection.serverPid;
      if (pid !== undefined) void ctx.prompts.info(`Strata: server restarted (pid ${pid}).`);
      return pid;
    },
    'strata.installHelp': async () => ctx.connection.showInstallHelp(),
    'strata.setCliPath': async () => setCliPath(),
    'strata.groupByTier': async () => vscode.workspace.getConfiguration('strata').update('tree.groupByTier', true, vscode.ConfigurationTarget.Global),
    'strata.ungroup': async () => vscode.workspace.getConfiguration('strata').update('tree.groupByTier', false, vscode.ConfigurationTarget.Global),
    'strata.addDatabase': (arg) => guarded(ctx, () => addDatabase(ctx, arg as { initRepository?: string } | undefined)),
    'strata.backupNow': (node) => guarded(ctx, () => backupNow(ctx, node as DatabaseNode | undefined)),
    'strata.verify': (node) => guarded(ctx, () => verify(ctx, node as BackupNode | undefined)),
    'strata.restore': (node) => guarded(ctx, () => restore(ctx, node as StrataNode | undefined)),
    'strata.prune': (node) => guarded(ctx, () => prune(ctx, node as DatabaseNode | undefined)),
    'strata.delete': (node) => guarded(ctx, () => deleteBackup(ctx, node as BackupNode | undefined)),
    'strata.showDetails': (node) => guarded(ctx, () => showDetails(ctx, node as BackupNode | undefined)),
    'strata.showHistory': (node) => guarded(ctx, () => showHistory(ctx, node as DatabaseNode | undefined)),
    'strata.setPassphrase': (node) => guarded(ctx, () => setPassphrase(ctx, node as DatabaseNode | undefined)),
  };
}

/** Runs a handler; a failure becomes one clear message with the action that helps, never a throw. */
async function guarded<T>(ctx: CommandContext, work: () => Promise<T>): Promise<T | undefined> {
  try {
    return await work();
  } catch (err) {
    const code = err instanceof StrataRequestError ? err.code : undefined;
    const message = err instanceof Error ? err.message : String(err);
    // The user's own cancel: the server's ABORTED, or the client's cancelled request. A server
    // error whose words say "cancel" (a statement the database administrator cancelled, a
    // statement_timeout) is a failure to show, not a cancel.
    if (code === 'ABORTED' || (!(err instanceof StrataRequestError) && /cancel/i.test(message))) {
      void ctx.prompts.info('Strata: cancelled; nothing was changed.');
      return undefined;
    }
    ctx.output.appendLine(`error: ${code ?? 'unexpected'}: ${message}`);
    if (code === 'PASSPHRASE_WRONG' || code === 'PASSPHRASE_MISSING') {
      // A stored passphrase that failed is of no use: forget it so the next attempt asks.
      await ctx.passphrases.forgetAll();
      if ((await ctx.prompts.error(`Strata: ${message}`, 'Set Passphrase')) === 'Set Passphrase') await vscode.commands.executeCommand('strata.setPassphrase');
      return undefined;
    }
    if (err instanceof StrataRequestError && SERVER_PROBLEMS.includes(err.code)) {
      await ctx.connection.showProblem(err, true);
      return undefined;
    }
    if ((await ctx.prompts.error(`Strata: ${message}`, 'Show Log')) === 'Show Log') ctx.output.show(true);
    return undefined;
  }
}

async function pickDatabase(ctx: CommandContext, placeHolder: string): Promise<DatabaseEntry | undefined> {
  await ctx.tree.loaded;
  const databases = ctx.tree.databases;
  if (databases.length === 0) {
    if ((await ctx.prompts.info('Strata: no databases yet. Add one, or name them in strata.config.json.', 'Add Database')) === 'Add Database') {
      await vscode.commands.executeCommand('strata.addDatabase');
    }
    return undefined;
  }
  if (databases.length === 1) return databases[0];
  const picked = await ctx.prompts.pick(
    databases.map((entry) => ({ label: entry.name, description: entry.location, detail: `backups in ${entry.repository}`, entry })),
    { placeHolder },
  );
  return picked?.entry;
}

async function pickBackup(ctx: CommandContext, entry: DatabaseEntry, placeHolder: string): Promise<BackupView | undefined> {
  const backups = await ctx.tree.backupsOf(entry);
  if (backups.length === 0) {
    void ctx.prompts.info(`Strata: ${entry.name} has no restore points yet.`);
    return undefined;
  }
  const picked = await ctx.prompts.pick(
    backups.map((backup) => ({ label: formatTime(backup.createdAt), description: `${backup.type} · ${formatBytes(backup.storedBytes)}`, detail: backup.id, backup })),
    { placeHolder },
  );
  return picked?.backup;
}

async function backupNode(ctx: CommandContext, node: BackupNode | undefined, placeHolder: string): Promise<BackupNode | undefined> {
  if (node?.kind === 'backup') return node;
  const entry = await pickDatabase(ctx, 'Which database?');
  if (!entry) return undefined;
  const backup = await pickBackup(ctx, entry, placeHolder);
  return backup ? { kind: 'backup', entry, backup } : undefined;
}

async function addDatabase(ctx: CommandContext, arg: { initRepository?: string } | undefined): Promise<DatabaseEntry | string | undefined> {
  if (arg?.initRepository) return initRepository(ctx, arg.initRepository);
  const engines = await knownEngines(ctx);
  const urlEngines = engines.filter((e) => e.locator === 'url');
  const passwords = urlEngines.flatMap((e) => (e.passwordSources ? [e.passwordSources] : [])).join(', ');
  const kind = await ctx.prompts.pick(
    [
      ...engines.filter((e) => e.locator === 'file').map((e) => ({ label: `${e.name} file…`, file: e, detail: 'A database file in or outside the workspace' })),
      ...(urlEngines.length > 0
        ? [{ label: `${urlEngines.map((e) => e.name).join(' or ')} URL…`, file: undefined, detail: `${urlEngines.map((e) => e.example).join(' or ')}${passwords ? ` (keep the password out: ${passwords})` : ''}` }]
        : []),
    ],
    { placeHolder: 'What kind of database?' },
  );
  if (!kind) return undefined;
  let url: string | undefined;
  if (kind.file) {
    url = (await ctx.prompts.openFile({ title: `The ${kind.file.name} database to back up`, openLabel: 'Back Up This Database', ...(workspaceRoot() ? { defaultUri: vscode.Uri.file(workspaceRoot()!) } : {}) }))?.fsPath;
  } else {
    url = await ctx.prompts.input({ title: 'Database URL', placeHolder: urlEngines[0]!.example, validateInput: urlValidator(urlEngines) });
  }
  if (!url) return undefined;
  const suggested = kind.file ? path.basename(url).replace(/\.[^.]+$/, '') : (new URL(url).pathname.replace(/^\//, '') || 'db');
  const name = await ctx.prompts.input({
    title: 'Name its backups are filed under',
    value: suggested.replace(/[^A-Za-z0-9._-]/g, '_'),
    validateInput: (value) => (/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(value) && !value.includes('..') ? undefined : "letters, digits, '.', '_' or '-', starting with a letter or digit"),
  });
  if (!name) return undefined;
  const root = workspaceRoot();
  const defaultRepository = root ? path.join(root, '.strata-backups') : undefined;
  const where = await ctx.prompts.pick(
    [
      ...(defaultRepository ? [{ label: defaultRepository, id: 'default', description: existsSync(defaultRepository) ? 'existing repository' : 'new repository in the workspace' }] : []),
      { label: 'Choose a folder…', id: 'choose', description: '' },
    ],
    { placeHolder: 'Where do its backups go (the repository)?' },
  );
  if (!where) return undefined;
  let repository = where.id === 'default' ? defaultRepository : undefined;
  if (where.id === 'choose') {
    repository = (await ctx.prompts.openFile({ title: 'The repository folder', canSelectFolders: true, canSelectFiles: false, openLabel: 'Use as Repository' }))?.fsPath;
  }
  if (!repository) return undefined;
  const settings = vscode.workspace.getConfiguration('strata');
  const existing = (settings.get<{ name: string; url: string; repository: string }[]>('databases') ?? []).filter((d) => !(d.name === name && d.repository === repository));
  const target = vscode.workspace.workspaceFolders?.length ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
  await settings.update('databases', [...existing, { name, url, repository }], target);
  if (!existsSync(repository)) await initRepository(ctx, repository);
  await ctx.tree.reload();
  return ctx.tree.databases.find((d) => d.name === name && d.repository === repository);
}

/** Creates an encrypted repository (the passphrase is asked twice and kept in secret storage). */
async function initRepository(ctx: CommandContext, repository: string): Promise<string | undefined> {
  const choice = await ctx.prompts.confirm(
    `Create a Strata repository in ${repository}?`,
    'Backups are encrypted with AES-256 (OpenPGP, openable with gpg) under a passphrase you choose now. Without the passphrase no backup can be restored: keep a copy somewhere safe.',
    'Create Encrypted Repository',
  );
  if (choice !== 'Create Encrypted Repository') return undefined;
  await ctx.connection.request('strata/init', { repository, encryption: 'compat' });
  void ctx.prompts.info(`Strata: created the repository ${repository}. Keep the passphrase safe: without it no backup can be restored.`);
  await ctx.tree.reload();
  return repository;
}

/**
 * Opens the Backup History of a database (the row it was run on, or one picked), or of every
 * database of a repository: the palette offers that too when a repository holds several.
 * Returns what the panel drew.
 */
async function showHistory(ctx: CommandContext, node: DatabaseNode | undefined): Promise<BackupHistory | undefined> {
  let subject: HistorySubject | undefined;
  if (node?.kind === 'database') {
    subject = { repository: node.entry.repository, database: node.entry.name };
  } else {
    await ctx.tree.loaded;
    const databases = ctx.tree.databases.filter((d) => d.repositoryExists);
    if (databases.length === 0) {
      void ctx.prompts.info('Strata: no database has a repository yet: add one, then back it up.');
      return undefined;
    }
    const repositories = [...new Set(databases.map((d) => d.repository))];
    const items = [
      ...databases.map((entry) => ({ label: entry.name, description: entry.location, detail: `backups in ${entry.repository}`, subject: { repository: entry.repository, database: entry.name } as HistorySubject })),
      ...repositories
        .filter((repository) => databases.filter((d) => d.repository === repository).length > 1)
        .map((repository) => ({ label: '$(folder-library) All databases', description: repository, detail: 'Every database of this repository on one timeline', subject: { repository } as HistorySubject })),
    ];
    subject = items.length === 1 ? items[0]!.subject : (await ctx.prompts.pick(items, { placeHolder: 'Backup History of which database?' }))?.subject;
  }
  if (!subject) return undefined;
  const panel = await ctx.history.show(subject);
  return panel.history;
}

async function backupNow(ctx: CommandContext, node: DatabaseNode | undefined): Promise<BackupView | undefined> {
  const entry = node?.kind === 'database' ? node.entry : await pickDatabase(ctx, 'Which database to back up?');
  if (!entry) return undefined;
  const type = await ctx.prompts.pick(BACKUP_TYPES, { placeHolder: `Back up ${entry.name}: which type?` });
  if (!type) return undefined;
  const { backup, unchanged, mirror } = await ctx.connection.withProgress(`Strata: backing up ${entry.name} (${type.type})`, 'strata/backup', {
    repository: entry.repository,
    database: entry.name,
    type: type.type,
  });
  const fellBack = backup.type !== type.type ? ' (no full backup existed, so a full one was taken)' : '';
  void ctx.prompts.info(
    unchanged
      ? `Strata: ${entry.name} is unchanged since ${backup.parent}; recorded an empty ${backup.type} restore point.`
      : `Strata: backed up ${entry.name}: ${backup.type}${fellBack}, ${formatBytes(backup.storedBytes)} stored (${backup.id}).`,
  );
  if (mirror && !mirror.ok) {
    void ctx.prompts.error(`Strata: the backup is complete, but the mirror ${mirror.location} was not written: ${mirror.error ?? 'unknown error'}. The next backup (or \`strata copy\`) catches it up.`);
  }
  return backup;
}

async function verify(ctx: CommandContext, node: BackupNode | undefined): Promise<string | undefined> {
  const target = await backupNode(ctx, node, 'Which restore point to verify?');
  if (!target) return undefined;
  const level = await ctx.prompts.pick(
    [
      { label: 'Full', level: 'full' as const, detail: 'Restore into a scratch copy and compare schema, row counts and checksums (all five checks)' },
      { label: 'Quick', level: 'quick' as const, detail: 'Artifacts present and every hash matches' },
    ],
    { placeHolder: `Verify ${target.backup.id}: how thoroughly?` },
  );
  if (!level) return undefined;
  const report = await ctx.connection.withProgress(`Strata: verifying ${target.backup.id}`, 'strata/verify', { repository: target.entry.repository, id: target.backup.id, level: level.level });
  const passed = report.checks.filter((c) => c.status === 'passed').length;
  if (report.outcome === 'passed') {
    void ctx.prompts.info(`Strata: verified ${report.backupId}: passed (${passed} of ${report.checks.length} checks, ${level.level}).`);
  } else {
    const failed = report.checks.filter((c) => c.status === 'failed');
    void ctx.prompts.error(`Strata: verification of ${report.backupId} FAILED: ${failed.map((c) => `${c.name}: ${c.reason}`).join('; ')}`);
  }
  return report.outcome;
}

type RestoreMode = 'new' | 'tables' | 'in-place' | 'as-of';

async function restore(ctx: CommandContext, node: StrataNode | undefined): Promise<string | undefined> {
  let entry: DatabaseEntry | undefined;
  let backup: BackupView | undefined;
  if (node?.kind === 'backup') ({ entry, backup } = node);
  else entry = node?.kind === 'database' ? node.entry : await pickDatabase(ctx, 'Restore which database?');
  if (!entry) return undefined;
  const inFiles = ctx.tree.engineOf(entry)?.locator === 'file';
  const modes: (vscode.QuickPickItem & { mode: RestoreMode })[] = [
    { label: inFiles ? '$(new-file) To a new file…' : '$(new-file) To a new database…', mode: 'new', detail: 'Leaves the database as it is' },
    { label: '$(table) Selected tables…', mode: 'tables', detail: 'Only the tables you pick, into a new target or replacing just them' },
    ...(backup ? [] : [{ label: '$(history) As of a date and time…', mode: 'as-of' as const, detail: 'The newest restore point taken at or before that time' }]),
    { label: `$(warning) In place: replace ${entry.location}`, mode: 'in-place', detail: 'Overwrites the database (after every check passed; asks first)' },
  ];
  const mode = await ctx.prompts.pick(modes, { placeHolder: backup ? `Restore ${backup.id}` : `Restore ${entry.name}` });
  if (!mode) return undefined;
  let asOf: string | undefined;
  if (mode.mode === 'as-of' || !backup) {
    if (mode.mode === 'as-of') {
      const text = await ctx.prompts.input({
        title: 'Restore as of (local time)',
        value: formatTime(new Date().toISOString()),
        validateInput: (value) => (Number.isNaN(new Date(value).getTime()) ? 'a date and time, e.g. 2026-11-21 10:30' : undefined),
      });
      if (!text) return undefined;
      asOf = new Date(text).toISOString();
    } else {
      backup = await pickBackup(ctx, entry, 'Which restore point?');
      if (!backup) return undefined;
    }
  }
  let tables: string[] | undefined;
  if (mode.mode === 'tables') {
    const { tables: available } = await ctx.connection.withProgress(`Strata: reading the tables of ${backup!.id}`, 'strata/tables', { repository: entry.repository, id: backup!.id });
    const picked = await ctx.prompts.pickMany(
      available.map((t) => ({ label: t })),
      { placeHolder: 'Which tables?' },
    );
    if (!picked || picked.length === 0) return undefined;
    tables = picked.map((p) => p.label);
  }
  let to: string | undefined;
  if (mode.mode === 'in-place') {
    to = entry.location;
  } else if (mode.mode === 'tables') {
    const where = await ctx.prompts.pick(
      [
        { label: inFiles ? 'Into a new file…' : 'Into a new database…', id: 'new' },
        { label: `Replace just these tables in ${entry.location}`, id: 'in-place' },
      ],
      { placeHolder: `Restore ${tables!.join(', ')} where?` },
    );
    if (!where) return undefined;
    to = where.id === 'in-place' ? entry.location : await newTarget(ctx, entry, backup?.createdAt ?? asOf!);
  } else {
    to = await newTarget(ctx, entry, backup?.createdAt ?? asOf!);
  }
  if (!to) return undefined;
  const { exists, description } = await ctx.connection.request('strata/restoreTarget', { repository: entry.repository, engine: entry.engine, target: to });
  if (exists) {
    const what = tables ? `the tables ${tables.join(', ')} in ${description}` : description;
    const from = backup ? `restore point ${backup.id} (${formatTime(backup.createdAt)})` : `the newest restore point at or before ${formatTime(asOf!)}`;
    const answer = await ctx.prompts.confirm(
      `Replace ${what}?`,
      `Its current contents are replaced with ${from}. Nothing is written until every checksum passed, but once replaced the current contents are gone unless you back them up first.`,
      'Replace',
    );
    if (answer !== 'Replace') return undefined;
  }
  const result = await ctx.connection.withProgress(`Strata: restoring ${backup?.id ?? `${entry.name} as of ${formatTime(asOf!)}`}`, 'strata/restore', {
    repository: entry.repository,
    ...(backup ? { id: backup.id } : { database: entry.name, asOf: asOf! }),
    to,
    force: exists,
    ...(tables ? { tables } : {}),
  });
  void ctx.prompts.info(`Strata: restored ${result.backup.id}${tables ? ` (${tables.join(', ')})` : ''} to ${description}${result.chain.length > 1 ? ` from a chain of ${result.chain.length}` : ''}.`);
  return to;
}

/** A new file (for a file engine, offered next to the database) or a new database URL. */
async function newTarget(ctx: CommandContext, entry: DatabaseEntry, when: string): Promise<string | undefined> {
  const engine = ctx.tree.engineOf(entry);
  if (engine?.locator === 'file') {
    const stamp = formatTime(when).replace(/[-: ]/g, '').replace(/^(\d{8})(\d{6})$/, '$1-$2');
    const folder = path.dirname(entry.location);
    const file = `${entry.name}-restored-${stamp}${engine.fileExtensions[0] ?? ''}`;
    const uri = await ctx.prompts.saveFile({ title: 'Restore to a new file', saveLabel: 'Restore Here', defaultUri: vscode.Uri.file(path.join(folder, file)) });
    return uri?.fsPath;
  }
  return ctx.prompts.input({
    title: 'Restore to a new database (URL)',
    value: entry.location.replace(/\/([^/?]+)(\?|$)/, `/$1_restored$2`),
    validateInput: urlValidator(engine ? [engine] : ctx.tree.engines.filter((e) => e.locator === 'url')),
  });
}

/** The engines the server has; asks it again if the first workspace request failed. */
async function knownEngines(ctx: CommandContext): Promise<readonly EngineInfo[]> {
  await ctx.tree.loaded;
  if (ctx.tree.engines.length === 0) await ctx.tree.reload();
  if (ctx.tree.engines.length === 0) throw new Error('the Strata server did not say which databases it can back up (is it running? see the log)');
  return ctx.tree.engines;
}

/** Accepts a URL of one of the engines' schemes; otherwise says which schemes are meant. */
function urlValidator(engines: readonly EngineInfo[]): (value: string) => string | undefined {
  const schemes = engines.flatMap((e) => e.schemes);
  const listed = schemes.map((s) => `${s}://`);
  const wanted = listed.length > 1 ? `${listed.slice(0, -1).join(', ')} or ${listed.at(-1)}` : (listed[0] ?? 'database');
  return (value) => (schemes.some((s) => value.toLowerCase().startsWith(`${s}://`)) ? undefined : `a ${wanted} URL`);
}

async function prune(ctx: CommandContext, node: DatabaseNode | undefined): Promise<readonly string[] | undefined> {
  const entry = node?.kind === 'database' ? node.entry : await pickDatabase(ctx, 'Prune the restore points of which database?');
  if (!entry) return undefined;
  const plan = await ctx.connection.request('strata/prune', { repository: entry.repository, database: entry.name, dryRun: true });
  if (plan.remove.length === 0) {
    void ctx.prompts.info(`Strata: nothing to prune in ${entry.name}: the retention policy keeps all ${plan.keep.length} restore points.`);
    return [];
  }
  const line = (d: RetentionDecision): string => `${formatTime(d.createdAt)}  ${d.type}  ${d.id}: ${d.reasons.join('; ')}`;
  const answer = await ctx.prompts.confirm(
    `Prune ${plan.remove.length} of ${plan.keep.length + plan.remove.length} restore points of ${entry.name}?`,
    ['These go (no retention rule keeps them):', ...plan.remove.map(line), '', `These stay (${plan.keep.length}):`, ...plan.keep.slice(0, 15).map(line), ...(plan.keep.length > 15 ? [`… and ${plan.keep.length - 15} more`] : [])].join('\n'),
    `Delete ${plan.remove.length}`,
  );
  if (answer !== `Delete ${plan.remove.length}`) return undefined;
  const done = await ctx.connection.request('strata/prune', { repository: entry.repository, database: entry.name, dryRun: false });
  void ctx.prompts.info(`Strata: pruned ${done.remove.length} restore points of ${entry.name}; ${done.keep.length} kept.`);
  return done.remove.map((d) => d.id);
}

async function deleteBackup(ctx: CommandContext, node: BackupNode | undefined): Promise<readonly string[] | undefined> {
  const target = await backupNode(ctx, node, 'Which restore point to delete?');
  if (!target) return undefined;
  const { backup, entry } = target;
  const answer = await ctx.prompts.confirm(`Delete the restore point ${backup.id}?`, `${backup.type}, taken ${formatTime(backup.createdAt)}. Its artifact is deleted from ${entry.repository}; this cannot be undone.`, 'Delete');
  if (answer !== 'Delete') return undefined;
  try {
    const { removed } = await ctx.connection.request('strata/delete', { repository: entry.repository, ids: [backup.id], withDependents: false });
    void ctx.prompts.info(`Strata: deleted ${removed.join(', ')}.`);
    return removed;
  } catch (err) {
    if (!(err instanceof StrataRequestError && err.code === 'CHAIN_BROKEN')) throw err;
    const dependents = (err.details['dependents'] as string[] | undefined) ?? [];
    const segments = (err.details['segments'] as number | undefined) ?? 0;
    const windows = (err.details['windows'] as { from: string; to: string }[] | undefined) ?? [];
    const all = `Delete All ${dependents.length + 1}`;
    const parts = [...(dependents.length > 0 ? [`${dependents.length} restore point(s) build on ${backup.id}`] : []), ...(segments > 0 ? [`${segments} segment(s) of continuous protection replay onto it`] : [])];
    const again = await ctx.prompts.confirm(
      `${parts.join(', and ')}. Delete them too?`,
      [
        ...(dependents.length > 0 ? [`Without it they cannot be restored:\n${dependents.join('\n')}`] : []),
        ...windows.map((w) => `Restores as of ${formatTime(w.from)} to ${formatTime(w.to)} go with it.`),
      ].join('\n'),
      all,
    );
    if (again !== all) return undefined;
    const { removed } = await ctx.connection.request('strata/delete', { repository: entry.repository, ids: [backup.id], withDependents: true });
    void ctx.prompts.info(`Strata: deleted ${removed.length} restore points.`);
    return removed;
  }
}

async function showDetails(ctx: CommandContext, node: BackupNode | undefined): Promise<vscode.TextDocument | undefined> {
  const target = await backupNode(ctx, node, 'Show which restore point?');
  if (!target) return undefined;
  const document = await vscode.workspace.openTextDocument({ content: describeBackup(target.backup, target.entry.location), language: 'markdown' });
  await vscode.window.showTextDocument(document, { preview: true });
  return document;
}

async function setPassphrase(ctx: CommandContext, node: DatabaseNode | undefined): Promise<string | undefined> {
  let repository = node?.kind === 'database' ? node.entry.repository : undefined;
  if (!repository) {
    await ctx.tree.loaded;
    const repositories = [...new Set(ctx.tree.databases.map((d) => d.repository))];
    if (repositories.length === 0) {
      void ctx.prompts.info('Strata: no repositories in this workspace yet.');
      return undefined;
    }
    repository = repositories.length === 1 ? repositories[0] : (await ctx.prompts.pick(repositories.map((r) => ({ label: r })), { placeHolder: 'The passphrase of which repository?' }))?.label;
  }
  if (!repository) return undefined;
  const passphrase = await ctx.prompts.input({ title: `Passphrase of ${repository}`, password: true, prompt: "Kept in VS Code's secret storage, never in settings" });
  if (!passphrase) return undefined;
  await ctx.passphrases.store(repository, passphrase);
  try {
    await ctx.connection.request('strata/unlock', { repository, forget: true });
  } catch (err) {
    await ctx.passphrases.forget(repository);
    throw err;
  }
  void ctx.prompts.info(`Strata: the passphrase of ${repository} is correct and kept in VS Code's secret storage.`);
  ctx.tree.invalidate(repository);
  return repository;
}

function workspaceRoot(): string | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
}

/** Asks for the strata command and saves it in the user settings (which restarts the server). */
async function setCliPath(): Promise<string | undefined> {
  const current = vscode.workspace.getConfiguration('strata').get<string>('cliPath');
  const picked = await vscode.window.showOpenDialog({
    title: 'The strata command (`which strata` in a terminal prints where it is)',
    openLabel: 'Use This strata',
    canSelectFiles: true,
    canSelectFolders: false,
    canSelectMany: false,
    ...(current ? { defaultUri: vscode.Uri.file(current) } : {}),
  });
  const file = picked?.[0]?.fsPath;
  if (!file) return undefined;
  await vscode.workspace.getConfiguration('strata').update('cliPath', file, vscode.ConfigurationTarget.Global);
  return file;
}
