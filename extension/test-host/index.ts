/**
 * Tests that run INSIDE VS Code's extension host (code-server's), against the real Strata
 * server: the tree provider and every command handler. Only the person is scripted: the
 * prompts answer as the test says. Run by test/e2e/vscode-host.test.ts; the workspace it opens
 * holds app.db and a strata.config.json with an encrypted repository (see there).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { BackupHistory } from '@strata/protocol';
import type { StrataExtensionApi } from '../src/extension.js';
import type { Prompts } from '../src/prompts.js';
import type { BackupNode, DatabaseNode, StrataNode, TierNode } from '../src/tree.js';

const PASSPHRASE = process.env['STRATA_E2E_PASSPHRASE'] ?? 'correct horse battery staple';

/** Prompts that answer from a script; anything unscripted fails the test. */
class ScriptedPrompts implements Prompts {
  readonly shown: string[] = [];
  readonly #answers: ((question: string, options: unknown) => unknown)[] = [];

  /** Queues the answers to the next questions, in order. */
  answer(...answers: ((question: string, options: unknown) => unknown)[]): void {
    this.#answers.push(...answers);
  }

  get pending(): number {
    return this.#answers.length;
  }

  /** Drops unused answers (after a failed test, so they do not answer the next one's questions). */
  reset(): void {
    this.#answers.length = 0;
  }

  #next(question: string, options: unknown): unknown {
    const answer = this.#answers.shift();
    if (!answer) throw new Error(`unscripted question: ${question}`);
    return answer(question, options);
  }

  async pick<T extends vscode.QuickPickItem>(items: readonly T[], options: vscode.QuickPickOptions): Promise<T | undefined> {
    return this.#next(`pick: ${options.placeHolder}`, items) as T | undefined;
  }
  async pickMany<T extends vscode.QuickPickItem>(items: readonly T[], options: vscode.QuickPickOptions): Promise<readonly T[] | undefined> {
    return this.#next(`pickMany: ${options.placeHolder}`, items) as T[] | undefined;
  }
  async input(options: vscode.InputBoxOptions): Promise<string | undefined> {
    return this.#next(`input: ${options.title}`, options) as string | undefined;
  }
  async confirm(message: string, detail: string, ...actions: string[]): Promise<string | undefined> {
    return this.#next(`confirm: ${message}`, { detail, actions }) as string | undefined;
  }
  async saveFile(options: vscode.SaveDialogOptions): Promise<vscode.Uri | undefined> {
    return this.#next(`save: ${options.title}`, options) as vscode.Uri | undefined;
  }
  async openFile(options: vscode.OpenDialogOptions): Promise<vscode.Uri | undefined> {
    return this.#next(`open: ${options.title}`, options) as vscode.Uri | undefined;
  }
  async info(message: string): Promise<string | undefined> {
    this.shown.push(`info: ${message}`);
    return undefined;
  }
  async error(message: string): Promise<string | undefined> {
    this.shown.push(`error: ${message}`);
    return undefined;
  }
}

/** Picks the item whose label contains `text`. */
const pickLabel =
  (text: string) =>
  (_question: string, items: unknown): unknown => {
    const found = (items as vscode.QuickPickItem[]).find((i) => i.label.includes(text));
    if (!found) throw new Error(`no item ${text} among ${(items as vscode.QuickPickItem[]).map((i) => i.label).join(', ')}`);
    return found;
  };
const say = (value: unknown) => (): unknown => value;

export async function run(): Promise<void> {
  const workspace = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  assert.ok(workspace, 'a workspace is open');
  const db = path.join(workspace, 'app.db');
  const ext = vscode.extensions.getExtension<StrataExtensionApi>('strata.strata-vscode');
  assert.ok(ext, 'the extension is installed');
  const api = await ext.activate();
  const prompts = new ScriptedPrompts();
  api.setPrompts(prompts);
  const sql = (statement: string): string => execFileSync('sqlite3', [db, statement], { encoding: 'utf8' }).trim();
  const tests: [string, () => Promise<void>][] = [];
  const test = (name: string, body: () => Promise<void>): void => {
    tests.push([name, body]);
  };

  let database: DatabaseNode;
  const children = async (node?: StrataNode): Promise<StrataNode[]> => api.tree.getChildren(node);
  const backups = async (): Promise<BackupNode[]> => (await children(database)).filter((n): n is BackupNode => n.kind === 'backup');

  test('the tree lists the database of strata.config.json, and says it has no restore points yet', async () => {
    await api.tree.reload();
    const roots = await children();
    assert.deepEqual(
      roots.map((n) => (n.kind === 'database' ? n.entry.name : `${n.kind}: ${n.kind === 'message' ? n.text : ''}`)),
      ['app'],
    );
    database = roots[0] as DatabaseNode;
    const item = api.tree.getTreeItem(database);
    assert.equal(item.contextValue, 'strata.database');
    assert.equal(item.description, db);
    const empty = await children(database);
    assert.equal(empty.length, 1);
    assert.match(api.tree.getTreeItem(empty[0]!).label as string, /No restore points yet/);
  });

  test('Back Up Now asks for the type and the passphrase, and the tree shows the restore point', async () => {
    prompts.answer(pickLabel('Incremental'), say(PASSPHRASE));
    const backup = (await vscode.commands.executeCommand('strata.backupNow', database)) as { type: string; id: string; sha256: string };
    assert.equal(backup.type, 'full', 'an incremental without a full falls back to a full');
    const [node] = await backups();
    const item = api.tree.getTreeItem(node!);
    assert.equal(node!.backup.id, backup.id);
    assert.match(item.description as string, /^full · .* · just now$/);
    assert.equal((item.iconPath as vscode.ThemeIcon).id, 'database');
    assert.equal(item.contextValue, 'strata.backup.full');
    assert.equal(item.resourceUri?.query, 'never');
    assert.match((item.tooltip as vscode.MarkdownString).value, new RegExp(backup.sha256));
    assert.ok(prompts.shown.some((m) => m.includes('backed up app: full')));
  });

  test('an incremental after a change builds on it, with its own icon', async () => {
    sql("INSERT INTO authors(name) VALUES ('Added In Test')");
    prompts.answer(pickLabel('Incremental'));
    const backup = (await vscode.commands.executeCommand('strata.backupNow', database)) as { type: string; parent: string };
    assert.equal(backup.type, 'incremental');
    const list = await backups();
    assert.equal(list.length, 2);
    assert.equal(list[1]!.backup.id, backup.parent, 'newest first');
    assert.equal((api.tree.getTreeItem(list[0]!).iconPath as vscode.ThemeIcon).id, 'diff-added');
    assert.equal(prompts.pending, 0, 'the passphrase was not asked again');
  });

  test('Verify runs the full validator and the tree shows the badge', async () => {
    const [newest] = await backups();
    prompts.answer(pickLabel('Full'));
    assert.equal(await vscode.commands.executeCommand('strata.verify', newest), 'passed');
    const [again] = await backups();
    const item = api.tree.getTreeItem(again!);
    assert.equal(item.resourceUri?.query, 'passed');
    assert.match(item.description as string, /verified$/);
    assert.match(api.status.text, /just now/);
  });

  test('Restore to a new file, as of a time, and tables, leave the database alone', async () => {
    const [newest, first] = await backups();
    const copy = path.join(workspace, 'copy.db');
    prompts.answer(pickLabel('To a new file'), say(vscode.Uri.file(copy)));
    assert.equal(await vscode.commands.executeCommand('strata.restore', newest), copy);
    assert.equal(execFileSync('sqlite3', [copy, "SELECT count(*) FROM authors WHERE name = 'Added In Test'"], { encoding: 'utf8' }).trim(), '1');
    const asOf = path.join(workspace, 'as-of.db');
    const between = new Date(Date.parse(first!.backup.createdAt) + 1).toISOString();
    prompts.answer(pickLabel('As of'), say(between), say(vscode.Uri.file(asOf)));
    assert.equal(await vscode.commands.executeCommand('strata.restore', database), asOf);
    assert.equal(execFileSync('sqlite3', [asOf, "SELECT count(*) FROM authors WHERE name = 'Added In Test'"], { encoding: 'utf8' }).trim(), '0', 'as of before the change');
    const tables = path.join(workspace, 'tables.db');
    prompts.answer(pickLabel('Selected tables'), (_q, items) => (items as vscode.QuickPickItem[]).filter((i) => i.label === 'authors'), pickLabel('Into a new'), say(vscode.Uri.file(tables)));
    assert.equal(await vscode.commands.executeCommand('strata.restore', newest), tables);
    assert.equal(execFileSync('sqlite3', [tables, '.tables'], { encoding: 'utf8' }).trim(), 'authors');
    assert.equal(sql("SELECT count(*) FROM authors WHERE name = 'Added In Test'"), '1', 'the database itself is untouched');
  });

  test('Restore in place asks first; declining changes nothing, confirming replaces it', async () => {
    const [, first] = await backups();
    prompts.answer(pickLabel('In place'), say(undefined));
    assert.equal(await vscode.commands.executeCommand('strata.restore', first), undefined);
    assert.equal(sql("SELECT count(*) FROM authors WHERE name = 'Added In Test'"), '1');
    let asked = '';
    prompts.answer(pickLabel('In place'), (question) => {
      asked = question;
      return 'Replace';
    });
    await vscode.commands.executeCommand('strata.restore', first);
    assert.match(asked, /Replace .*app\.db/);
    assert.equal(sql("SELECT count(*) FROM authors WHERE name = 'Added In Test'"), '0', 'back to the first restore point');
  });

  test('grouping by tier shows the tiers that keep each restore point', async () => {
    await vscode.workspace.getConfiguration('strata').update('tree.groupByTier', true, vscode.ConfigurationTarget.Global);
    try {
      await api.tree.loaded;
      const tiers = (await children(database)) as TierNode[];
      assert.ok(tiers.length > 0 && tiers.every((t) => t.kind === 'tier'), 'tier nodes');
      assert.equal(tiers.reduce((sum, t) => sum + t.backups.length, 0), 2);
    } finally {
      await vscode.workspace.getConfiguration('strata').update('tree.groupByTier', false, vscode.ConfigurationTarget.Global);
      await api.tree.loaded;
    }
  });

  test('Show Backup History draws what the server has, and a restore point it names is revealed in the tree, also under its tier', async () => {
    const list = await backups();
    const history = (await vscode.commands.executeCommand('strata.showHistory', database)) as BackupHistory;
    assert.deepEqual(
      history.points.map((p) => p.id),
      list.map((n) => n.backup.id).reverse(),
      'oldest first',
    );
    assert.deepEqual(
      history.points.map((p) => p.verification),
      ['never', 'passed'],
    );
    await vscode.workspace.getConfiguration('strata').update('tree.groupByTier', true, vscode.ConfigurationTarget.Global);
    try {
      await api.tree.loaded;
      const node = await api.tree.backupNode(database.entry.repository, history.points[0]!.id);
      assert.ok(node, 'the tree has it');
      const parent = await api.tree.getParent(node);
      assert.equal(parent?.kind, 'tier');
      assert.equal((parent as TierNode).tier, node.backup.tier);
      await api.view.reveal(node, { select: true, focus: false });
      // The selection comes back from the workbench a moment after reveal settles.
      for (let waited = 0; waited < 10_000 && api.view.selection.length === 0; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(
        api.view.selection.map((n) => (n.kind === 'backup' ? n.backup.id : n.kind)),
        [history.points[0]!.id],
      );
      assert.equal(await api.tree.backupNode(database.entry.repository, 'app_full_19990101_000000_dead'), undefined, 'an id the repository does not have');
    } finally {
      await vscode.workspace.getConfiguration('strata').update('tree.groupByTier', false, vscode.ConfigurationTarget.Global);
      await api.tree.loaded;
      await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    }
  });

  test('Show Details opens the restore point as a document', async () => {
    const [newest] = await backups();
    const document = (await vscode.commands.executeCommand('strata.showDetails', newest)) as vscode.TextDocument;
    assert.match(document.getText(), new RegExp(newest!.backup.id));
    assert.match(document.getText(), /data-consistency/);
    assert.match(document.getText(), new RegExp(`data key \`${newest!.backup.encryption.keyId}\``), 'the data key its artifact needs');
  });

  test('Delete refuses to orphan dependents unless confirmed, then deletes the chain', async () => {
    const [, first] = await backups();
    prompts.answer(say('Delete'), say(undefined));
    assert.equal(await vscode.commands.executeCommand('strata.delete', first), undefined);
    assert.equal((await backups()).length, 2, 'declining the second question deletes nothing');
    prompts.answer(say('Delete'), (question, options) => {
      assert.match(question, /1 restore point\(s\) build on/);
      return (options as { actions: string[] }).actions[0];
    });
    assert.equal(((await vscode.commands.executeCommand('strata.delete', first)) as string[]).length, 2);
    assert.deepEqual(
      (await children(database)).map((n) => n.kind),
      ['message'],
    );
  });

  test('Prune shows what goes and why before deleting', async () => {
    for (let i = 0; i < 3; i++) {
      sql(`INSERT INTO authors(name) VALUES ('Prune ${i}')`);
      prompts.answer(pickLabel('Full'));
      await vscode.commands.executeCommand('strata.backupNow', database);
    }
    let detail = '';
    prompts.answer((_q, options) => {
      detail = (options as { detail: string }).detail;
      return undefined;
    });
    assert.equal(await vscode.commands.executeCommand('strata.prune', database), undefined);
    assert.equal((await backups()).length, 3, 'cancelled: nothing deleted');
    assert.match(detail, /no rule keeps it/);
    prompts.answer((_q, options) => (options as { actions: string[] }).actions[0]);
    const removed = (await vscode.commands.executeCommand('strata.prune', database)) as string[];
    assert.equal(removed.length, 2, 'the config keeps the newest one only');
    assert.equal((await backups()).length, 1);
  });

  test('a wrong passphrase is refused with a clear message and forgotten', async () => {
    prompts.answer(say('definitely wrong'));
    assert.equal(await vscode.commands.executeCommand('strata.setPassphrase', database), undefined);
    assert.match(prompts.shown.at(-1)!, /^error: Strata: .*wrong passphrase/);
    // The right one is asked for again at the next operation, and works.
    prompts.answer(pickLabel('Full'), say(PASSPHRASE));
    const backup = (await vscode.commands.executeCommand('strata.backupNow', database)) as { type: string };
    assert.equal(backup.type, 'full');
  });

  test('Add Database stores it in the settings, creates an encrypted repository, and the tree shows it', async () => {
    const file = path.join(workspace, 'notes.db');
    execFileSync('sqlite3', [file, 'CREATE TABLE note(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO note(body) VALUES (\'hello\');']);
    const repository = path.join(workspace, '.strata-backups');
    const asked: string[] = [];
    prompts.answer(
      pickLabel('SQLite file'),
      say(vscode.Uri.file(file)),
      (_q, options) => {
        assert.equal((options as vscode.InputBoxOptions).value, 'notes', 'the name is suggested from the file');
        return 'notes';
      },
      pickLabel(repository),
      (question) => {
        asked.push(question);
        return 'Create Encrypted Repository';
      },
      (question) => {
        asked.push(question);
        return 'a new passphrase';
      },
      (question) => {
        asked.push(question);
        return 'a new passphrase';
      },
    );
    const entry = (await vscode.commands.executeCommand('strata.addDatabase')) as { name: string; repository: string; repositoryExists: boolean };
    assert.deepEqual([entry.name, entry.repository, entry.repositoryExists], ['notes', repository, true]);
    assert.match(asked.join(' | '), /Create a Strata repository .* \| input: Choose a passphrase .* \| input: Type the passphrase again/);
    const saved = vscode.workspace.getConfiguration('strata').get<{ name: string; url: string }[]>('databases') ?? [];
    assert.deepEqual(saved.map((d) => [d.name, d.url]), [['notes', file]]);
    assert.ok(!JSON.stringify(saved).includes('a new passphrase'), 'the passphrase is not in the settings');
    const names = (await children()).map((n) => (n.kind === 'database' ? n.entry.name : n.kind));
    assert.deepEqual(names, ['app', 'notes']);
    prompts.answer(pickLabel('Full'));
    const notes = (await children()).find((n): n is DatabaseNode => n.kind === 'database' && n.entry.name === 'notes')!;
    const backup = (await vscode.commands.executeCommand('strata.backupNow', notes)) as { database: string; encryption: { profile: string } };
    assert.deepEqual([backup.database, backup.encryption.profile], ['notes', 'compat']);
  });

  test('a database with strata daemon jobs shows them in its tooltip, and a failed run turns the status bar to a warning', async () => {
    const configFile = path.join(workspace, 'strata.config.json');
    const original = readFileSync(configFile, 'utf8');
    const config = JSON.parse(original) as Record<string, unknown>;
    writeFileSync(configFile, JSON.stringify({ ...config, schedules: { nightly: { job: 'backup', cron: '0 2 * * *', timezone: 'UTC' } } }, null, 2));
    // What strata daemon journals for a run whose before hook failed.
    const journal = path.join(workspace, '.backups', 'journal');
    const at = new Date(Date.now() - 60_000).toISOString();
    const record = { at, op: 'job-daemon-test-1', kind: 'job', pid: process.pid, host: 'elsewhere', database: 'app', details: { job: 'nightly', jobKind: 'backup', trigger: 'schedule' } };
    const key = (status: string): string => path.join(journal, `${at.replace(/[-:.]/g, '')}-${status === 'RUNNING' ? 'aaaaaaaaaa' : 'bbbbbbbbbb'}.json`);
    writeFileSync(key('RUNNING'), JSON.stringify({ ...record, status: 'RUNNING' }) + '\n');
    writeFileSync(key('FAILED'), JSON.stringify({ ...record, status: 'FAILED', error: { code: 'HOOK_FAILED', message: 'the before hook exited with 3; the job did not run' } }) + '\n');
    try {
      await api.tree.reload();
      await api.status.update();
      const [node] = await children();
      const tooltip = (api.tree.getTreeItem(node!).tooltip as vscode.MarkdownString).value;
      assert.match(tooltip, /strata daemon\*\* schedule/);
      assert.match(tooltip, /- nightly: backup full, next \S.* \(`0 2 \* \* \*` UTC\); last \*\*failed\*\* .*the before hook exited with 3/);
      assert.match(api.status.text, /^\$\(warning\) /);
    } finally {
      writeFileSync(configFile, original);
      rmSync(key('RUNNING'));
      rmSync(key('FAILED'));
      await api.tree.reload();
      await api.status.update();
    }
    assert.doesNotMatch(api.status.text, /\$\(warning\)/);
  });

  test('strata.config.json gets validation from the contributed JSON schema', async () => {
    const folder = path.join(workspace, 'schema-check');
    mkdirSync(folder, { recursive: true });
    const file = path.join(folder, 'strata.config.json');
    writeFileSync(file, JSON.stringify({ repositry: './.backups', databases: { app: { url: './app.db', retention: { keepDaily: 'seven' } } } }, null, 2));
    const document = await vscode.workspace.openTextDocument(file);
    await vscode.window.showTextDocument(document);
    let diagnostics: vscode.Diagnostic[] = [];
    for (let waited = 0; waited < 30_000 && diagnostics.length < 2; waited += 250) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      diagnostics = vscode.languages.getDiagnostics(document.uri);
    }
    const messages = diagnostics.map((d) => d.message).join(' | ');
    assert.match(messages, /repositry.*not allowed|not allowed.*repositry|Property repositry/i, messages);
    assert.match(messages, /Incorrect type|integer/i, messages);
    await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
  });

  let failed = 0;
  for (const [name, body] of tests) {
    try {
      await body();
      console.log(`TEST ok: ${name}`);
    } catch (err) {
      failed++;
      console.log(`TEST FAILED: ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      if (prompts.pending > 0) console.log(`TEST (${prompts.pending} scripted answers were not used)`);
      prompts.reset();
    }
  }
  assert.ok(existsSync(db));
  if (failed > 0) throw new Error(`${failed} of ${tests.length} extension-host tests failed`);
  console.log(`TEST all ${tests.length} extension-host tests passed`);
}
