import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { ResponseError } from 'vscode-languageserver/node';
import type { CancellationToken, Connection, WorkDoneProgressReporter } from 'vscode-languageserver/node';
import {
  CONFIG_FILE,
  Passphrase,
  StrataError,
  backupRuns,
  continuityWindows,
  createDefaultEngines,
  displayLocation,
  exitCodeFor,
  initRepository,
  isLocationUrl,
  isStrataError,
  loadConfig,
  newestGoodByDatabase,
  mirrorAt,
  openRepository,
  passphraseFromCommand,
  passphraseFromFile,
  repositoryLocation,
  resolveLocator,
  retentionFor,
  scheduleOf,
  tierOf,
  validateDatabaseName,
  ownEntry,
  unchangedSinceParent,
} from '@strata/sdk';
import type { Engine, EngineRegistry, MirrorConfig, MirrorSyncResult, ProgressEvent, Repository, StorageSettings, StrataConfig } from '@strata/sdk';
import { CHANGED_NOTIFICATION, PASSPHRASE_REQUEST, STRATA_ERROR } from '@strata/protocol';
import type { ClientRequestMap, ConfigProblem, DatabaseEntry, EngineInfo, MirrorOutcome, ParamsOf, RequestMethod, ResultOf, StrataErrorData } from '@strata/protocol';
import { backupHistory } from './history.js';

/** A database the server can back up: where it is (with any secret) and where its backups go. */
interface KnownDatabase {
  readonly entry: DatabaseEntry;
  readonly locator: string;
  readonly config: StrataConfig;
}

type Handler<M extends RequestMethod> = (params: ParamsOf<M>, run: Run) => Promise<ResultOf<M>>;

/** What a handler gets besides its params: cancellation as an AbortSignal, and progress. */
interface Run {
  readonly signal: AbortSignal;
  readonly progress: (event: ProgressEvent) => void;
  readonly begin: (title: string) => void;
}

/**
 * The Strata SDK behind JSON-RPC. One instance per connection; repositories stay open between
 * requests (so a passphrase is asked for once per repository and session) and are closed on
 * shutdown.
 */
export class StrataServer {
  readonly #connection: Connection;
  readonly #engines: EngineRegistry = createDefaultEngines();
  readonly #repositories = new Map<string, Promise<Repository>>();
  /** The `storage` section of the config file naming each s3:// repository. */
  readonly #storageSettings = new Map<string, StorageSettings>();
  /** The `mirror` of the config file whose own repository each one is. */
  readonly #mirrors = new Map<string, MirrorConfig>();
  /** The passphrase each repository was unlocked with, offered first to its mirror (as the CLI does). */
  readonly #givenPassphrases = new Map<string, Passphrase>();
  #databases = new Map<string, KnownDatabase>();

  constructor(connection: Connection) {
    this.#connection = connection;
    this.#handle('strata/workspace', (p) => this.#workspace(p));
    this.#handle('strata/list', (p) => this.#list(p));
    this.#handle('strata/history', (p) => this.#history(p));
    this.#handle('strata/backup', (p, run) => this.#backup(p, run));
    this.#handle('strata/verify', (p, run) => this.#verify(p, run));
    this.#handle('strata/restoreTarget', async (p) => {
      const target = await (await this.#repository(p.repository)).restoreTarget(p.engine, p.target);
      return { exists: target.exists, description: displayLocation(target.display, target.description) };
    });
    this.#handle('strata/restore', (p, run) => this.#restore(p, run));
    this.#handle('strata/tables', async (p, run) => {
      run.begin('Reading the table list');
      return { tables: await (await this.#repository(p.repository)).tablesOf({ id: p.id }, { signal: run.signal }) };
    });
    this.#handle('strata/prune', (p, run) => this.#prune(p, run));
    this.#handle('strata/delete', (p, run) => this.#delete(p, run));
    this.#handle('strata/init', (p) => this.#init(p));
    this.#handle('strata/unlock', (p) => this.#unlock(p));
  }

  /** Closes every open repository (releasing nothing it does not hold). */
  async close(): Promise<void> {
    const open = [...this.#repositories.values()];
    this.#repositories.clear();
    for (const repo of open) await repo.then((r) => r.close()).catch(() => undefined);
  }

  /**
   * Registers a handler: turns cancellation into an AbortSignal, the request's workDoneToken
   * into `$/progress`, and every failure into a ResponseError carrying the SDK's code.
   */
  #handle<M extends RequestMethod>(method: M, handler: Handler<M>): void {
    this.#connection.onRequest(method, async (params: ParamsOf<M> & { workDoneToken?: string | number }, token: CancellationToken) => {
      const controller = new AbortController();
      const cancelled = token.onCancellationRequested(() => controller.abort(new StrataError('ABORTED', `${method}: cancelled`)));
      const reporter: WorkDoneProgressReporter | undefined =
        params?.workDoneToken !== undefined ? this.#connection.window.attachWorkDoneProgress(params.workDoneToken) : undefined;
      let begun = false;
      const run: Run = {
        signal: controller.signal,
        begin: (title) => {
          if (begun) return;
          begun = true;
          reporter?.begin(title, 0, undefined, true);
        },
        progress: progressReporter(reporter),
      };
      const started = Date.now();
      try {
        const result = await handler(params, run);
        this.#log(`${method} done in ${Date.now() - started} ms`);
        return result;
      } catch (err) {
        const error = toResponseError(err);
        this.#log(`${method} failed: ${error.data?.code}: ${error.message}`);
        return error;
      } finally {
        cancelled.dispose();
        reporter?.done();
      }
    });
  }

  #log(message: string): void {
    this.#connection.console.info(message);
  }

  #changed(repository: string): void {
    void this.#connection.sendNotification(CHANGED_NOTIFICATION, { repository });
  }

  /** Opens (once) the repository in a folder; the passphrase is asked of the client when needed. */
  #repository(folder: string): Promise<Repository> {
    const location = repositoryLocation(folder);
    let repo = this.#repositories.get(location);
    if (!repo) {
      if (!isLocationUrl(location) && !existsSync(location)) {
        return Promise.reject(new StrataError('REPO_NOT_FOUND', `repository: ${location} does not exist; create it first (Strata: Add Database offers to)`));
      }
      const mirror = this.#mirrors.get(location);
      repo = openRepository(location, {
        engines: this.#engines,
        passphrase: async () => {
          const given = await this.#askPassphrase(location, 'unlock');
          this.#givenPassphrases.set(location, given);
          return given;
        },
        lock: { waitMs: 30_000 },
        storage: this.#storageSettings.get(location) ?? {},
        ...(mirror ? { mirror: this.#mirrorOf(location, mirror) } : {}),
      });
      // A failed open is not cached: the next request tries again (the folder may appear).
      repo.catch(() => this.#repositories.delete(location));
      this.#repositories.set(location, repo);
    }
    return repo;
  }

  /**
   * The mirror of the repository at `location`, opened when a backup first writes to it. Its
   * passphrase comes from the config's passphraseFile or passphraseCommand, else it is the
   * repository's own, else the client is asked for the mirror's.
   */
  #mirrorOf(location: string, mirror: MirrorConfig): ReturnType<typeof mirrorAt> {
    return mirrorAt(mirror.repository, {
      engines: this.#engines,
      lock: { waitMs: 30_000 },
      storage: this.#storageSettings.get(location) ?? {},
      passphrase: async (attempt) => {
        if (attempt === 1) {
          // The server's standard input carries JSON-RPC: a passphrase command must not read it.
          if (mirror.passphraseCommand !== undefined) return passphraseFromCommand(mirror.passphraseCommand, { stdin: 'ignore' });
          if (mirror.passphraseFile !== undefined) return passphraseFromFile(mirror.passphraseFile);
          const own = this.#givenPassphrases.get(location);
          if (own) return own;
        }
        if (attempt > 2 || mirror.passphraseCommand !== undefined || mirror.passphraseFile !== undefined) return undefined;
        return this.#askPassphrase(mirror.repository, 'unlock');
      },
    });
  }

  async #askPassphrase(repository: string, purpose: 'unlock' | 'init'): Promise<Passphrase> {
    const answer = await this.#connection.sendRequest<ClientRequestMap['strata/passphrase']['result']>(PASSPHRASE_REQUEST, { repository, purpose });
    if (!answer?.passphrase) {
      throw new StrataError('PASSPHRASE_MISSING', `repository ${repository} is encrypted and no passphrase was given (Strata: Set Passphrase)`);
    }
    return new Passphrase(answer.passphrase);
  }

  #known(repository: string, database: string): KnownDatabase {
    const known = this.#databases.get(keyOf(repository, database));
    if (!known) {
      throw new StrataError('USAGE', `database ${database} of repository ${repository} is not in the workspace's ${CONFIG_FILE} nor in the strata.databases setting`);
    }
    return known;
  }

  async #workspace(params: ParamsOf<'strata/workspace'>): Promise<ResultOf<'strata/workspace'>> {
    const problems: ConfigProblem[] = [];
    const found = new Map<string, KnownDatabase>();
    this.#mirrors.clear();
    const add = (name: string, locator: string, repository: string, origin: string, config: StrataConfig): void => {
      const engine = this.#engines.forLocator(locator);
      if (!engine) {
        problems.push({ file: origin, message: `database ${name}: no engine understands its url (expected ${expectedLocators(this.#engines)})` });
        return;
      }
      const entry: DatabaseEntry = { name, engine: engine.kind, location: displayLocation(engine.display, engine.describe(locator)), repository, repositoryExists: isLocationUrl(repository) || existsSync(repository), origin };
      // An s3:// repository is reached with the storage settings of the config file that names it.
      if (config.storage) this.#storageSettings.set(repositoryLocation(repository), config.storage);
      // Backups of the config's own repository also go to its mirror (as with the CLI).
      if (config.mirror && config.repository !== undefined && repositoryLocation(config.repository) === repositoryLocation(repository)) {
        this.#mirrors.set(repositoryLocation(repository), config.mirror);
      }
      found.set(keyOf(repository, name), { entry, locator, config });
    };
    for (const folder of params.folders) {
      const file = path.join(folder, CONFIG_FILE);
      if (!existsSync(file)) continue;
      try {
        const { config } = loadConfig(file);
        if (!config.repository) {
          problems.push({ file, message: `no "repository": say which folder the backups of its databases go to` });
          continue;
        }
        for (const [name, db] of Object.entries(config.databases ?? {})) add(name, db.url, config.repository, file, config);
      } catch (err) {
        problems.push({ file, message: err instanceof Error ? err.message : String(err) });
      }
    }
    for (const db of params.databases) {
      try {
        validateDatabaseName(db.name);
        const base = params.folders[0] ?? process.cwd();
        add(db.name, resolveLocator(db.url, base), repositoryLocation(db.repository, base), 'settings', {});
      } catch (err) {
        problems.push({ file: 'settings', message: `strata.databases ${db.name}: ${err instanceof Error ? err.message : String(err)}` });
      }
    }
    // The jobs of strata daemon, with the last outcome from each repository's journal (plaintext:
    // no passphrase needed); a journal that cannot be read leaves the outcomes out.
    const journals = new Map<string, Awaited<ReturnType<Repository['journal']['operations']>>>();
    for (const [key, known] of found) {
      if (Object.keys(known.config.schedules ?? {}).length === 0 && Object.keys(ownEntry(known.config.databases, known.entry.name)?.schedules ?? {}).length === 0) continue;
      let operations = journals.get(known.entry.repository);
      if (operations === undefined && known.entry.repositoryExists) {
        try {
          operations = await (await this.#repository(known.entry.repository)).journal.operations();
        } catch {
          operations = [];
        }
        journals.set(known.entry.repository, operations);
      }
      const schedule = scheduleOf(known.config, known.entry.name, operations ?? []);
      if (schedule.length > 0) found.set(key, { ...known, entry: { ...known.entry, schedule } });
    }
    this.#databases = found;
    const engines: EngineInfo[] = this.#engines.kinds().map((kind) => ({ kind, ...this.#engines.get(kind)!.display }));
    return { databases: [...found.values()].map((k) => k.entry), problems, engines };
  }

  async #list(params: ParamsOf<'strata/list'>): Promise<ResultOf<'strata/list'>> {
    const repo = await this.#repository(params.repository);
    const backups = await repo.list(params.database !== undefined ? { database: params.database } : {});
    const good = new Set([...newestGoodByDatabase(backups).values()].map((b) => b.id));
    const newestFirst = [...backups].reverse().map((b) => (good.has(b.id) ? { ...b, newestGood: true } : b));
    const continuity = continuityWindows(backups, await repo.segments(params.database !== undefined ? { database: params.database } : {}));
    const logs = backups.some((b) => b.logRange) ? await repo.logWindows(params.database !== undefined ? { database: params.database } : {}) : [];
    const logWindows = logs.length > 0 ? { logWindows: logs } : {};
    if (!params.byTier) return { backups: newestFirst, continuity, ...logWindows };
    const plan = await repo.prune((database) => this.#policyFor(params.repository, database), { ...(params.database !== undefined ? { database: params.database } : {}), dryRun: true });
    const decisions = new Map([...plan.keep.map((d) => [d.id, { tier: tierOf(d), reasons: d.reasons }] as const), ...plan.remove.map((d) => [d.id, { tier: 'not kept', reasons: d.reasons }] as const)]);
    return { backups: newestFirst.map((b) => ({ ...b, ...decisions.get(b.id) })), continuity, ...logWindows };
  }

  async #history(params: ParamsOf<'strata/history'>): Promise<ResultOf<'strata/history'>> {
    const repo = await this.#repository(params.repository);
    const only = params.database !== undefined ? { database: params.database } : {};
    const backups = await repo.list(only);
    const plan = await repo.prune((database) => this.#policyFor(params.repository, database), { ...only, dryRun: true });
    const runs = backupRuns(await repo.journal.operations(), backups, new Date(0)).filter((r) => params.database === undefined || r.database === params.database);
    return backupHistory(backups, plan, runs, new Date());
  }

  /** Retention as the config file that names the database says, else the defaults. */
  #policyFor(repository: string, database: string): ReturnType<typeof retentionFor> {
    const known = this.#databases.get(keyOf(repository, database));
    return retentionFor(known?.config ?? {}, database);
  }

  async #backup(params: ParamsOf<'strata/backup'>, run: Run): Promise<ResultOf<'strata/backup'>> {
    const known = this.#known(params.repository, params.database);
    const repo = await this.#repository(params.repository);
    await repo.unlock();
    run.begin(`Backing up ${params.database}`);
    this.#log(`backup ${params.database} (${params.type}) from ${known.entry.location}`);
    let mirrored: MirrorSyncResult | undefined;
    const backup = await repo.backup(known.locator, {
      database: params.database,
      type: params.type,
      autoFull: true,
      ...(params.label ? { label: params.label } : {}),
      signal: run.signal,
      onProgress: run.progress,
      onMirror: (result) => {
        mirrored = result;
        if (!result.ok) this.#log(`MIRROR FAILED: ${result.mirror}: ${result.error?.message ?? 'unknown error'}`);
      },
    });
    this.#changed(params.repository);
    const mirror: MirrorOutcome | undefined = mirrored && {
      location: mirrored.mirror,
      ok: mirrored.ok,
      ...(mirrored.error ? { error: mirrored.error.message } : {}),
    };
    const unchanged = backup.parent !== null && unchangedSinceParent(backup, (await repo.list({ database: backup.database })).find((b) => b.id === backup.parent));
    return { backup, unchanged, ...(mirror ? { mirror } : {}) };
  }

  async #verify(params: ParamsOf<'strata/verify'>, run: Run): Promise<ResultOf<'strata/verify'>> {
    const repo = await this.#repository(params.repository);
    run.begin(`Verifying ${params.id}`);
    const [report] = await repo.verify({ id: params.id }, { level: params.level, signal: run.signal, onProgress: run.progress });
    this.#changed(params.repository);
    return report!;
  }

  async #restore(params: ParamsOf<'strata/restore'>, run: Run): Promise<ResultOf<'strata/restore'>> {
    const repo = await this.#repository(params.repository);
    let asOf: Date | undefined;
    if (params.asOf !== undefined) {
      asOf = new Date(params.asOf);
      if (Number.isNaN(asOf.getTime())) throw new StrataError('USAGE', `restore: ${JSON.stringify(params.asOf)} is not a date and time`);
    }
    const selector = { ...(params.id !== undefined ? { id: params.id } : {}), ...(asOf ? { asOf } : {}), ...(params.database !== undefined ? { database: params.database } : {}) };
    run.begin(`Restoring ${params.id ?? `${params.database} as of ${params.asOf}`}`);
    const result = await repo.restore(selector, {
      to: params.to,
      force: params.force ?? false,
      ...(params.tables ? { tables: params.tables } : {}),
      signal: run.signal,
      onProgress: run.progress,
    });
    return { backup: result.backup, chain: result.chain.map((b) => b.id), target: params.to, bytes: result.bytes };
  }

  async #prune(params: ParamsOf<'strata/prune'>, run: Run): Promise<ResultOf<'strata/prune'>> {
    const repo = await this.#repository(params.repository);
    try {
      return await repo.prune((database) => this.#policyFor(params.repository, database), {
        ...(params.database !== undefined ? { database: params.database } : {}),
        dryRun: params.dryRun,
        signal: run.signal,
      });
    } finally {
      // Also after a failure: one cancelled after its catalog write has removed backups all the same.
      if (!params.dryRun) this.#changed(params.repository);
    }
  }

  async #delete(params: ParamsOf<'strata/delete'>, run: Run): Promise<ResultOf<'strata/delete'>> {
    const repo = await this.#repository(params.repository);
    try {
      const removed = await repo.delete(params.ids, { withDependents: params.withDependents, signal: run.signal });
      return { removed: removed.map((r) => r.id) };
    } finally {
      this.#changed(params.repository);
    }
  }

  async #init(params: ParamsOf<'strata/init'>): Promise<ResultOf<'strata/init'>> {
    const location = repositoryLocation(params.repository);
    const passphrase = params.encryption === 'none' ? undefined : await this.#askPassphrase(location, 'init');
    await initRepository(location, { encryption: params.encryption, ...(passphrase ? { passphrase } : {}), storage: this.#storageSettings.get(location) ?? {} });
    this.#log(`created repository ${location} (encryption ${params.encryption})`);
    this.#changed(location);
    return { repository: location, encryption: params.encryption };
  }

  async #unlock(params: ParamsOf<'strata/unlock'>): Promise<ResultOf<'strata/unlock'>> {
    const location = repositoryLocation(params.repository);
    if (params.forget) {
      const open = this.#repositories.get(location);
      this.#repositories.delete(location);
      await open?.then((r) => r.close()).catch(() => undefined);
    }
    const repo = await this.#repository(location);
    await repo.unlock();
    return { encryption: repo.settings.encryption };
  }
}

/** What the engines accept, for messages (`a ... path, scheme:// or scheme://`), in the engines' own words. */
function expectedLocators(engines: EngineRegistry): string {
  const all = engines.kinds().map((kind) => engines.get(kind)!) as Engine[];
  const files = all.filter((e) => e.display.locator === 'file').map((e) => `a ${e.display.name} path`);
  const urls = all.filter((e) => e.display.locator === 'url').map((e) => `${e.display.schemes[0]}://`);
  const parts = [...files, ...urls];
  return parts.length > 1 ? `${parts.slice(0, -1).join(', ')} or ${parts.at(-1)}` : (parts[0] ?? 'a locator an engine accepts');
}

function keyOf(repository: string, database: string): string {
  return `${repositoryLocation(repository)}\0${database}`;
}

/** Turns the SDK's progress events into `$/progress` reports, at most a few a second. */
function progressReporter(reporter: WorkDoneProgressReporter | undefined): (event: ProgressEvent) => void {
  let last = 0;
  return (event) => {
    if (!reporter) return;
    const now = Date.now();
    if (now - last < 200 && event.phase !== 'commit') return;
    last = now;
    const percentage = event.totalBytes ? Math.min(100, (event.doneBytes / event.totalBytes) * 100) : undefined;
    const what = { snapshot: 'reading the database', write: 'writing the artifact', read: 'reading the backup', check: 'checking the restored copy', commit: 'putting it in place' }[event.phase];
    if (percentage === undefined) reporter.report(`${what} (${formatMiB(event.doneBytes)})`);
    else reporter.report(percentage, `${what} (${formatMiB(event.doneBytes)} of ${formatMiB(event.totalBytes!)})`);
  };
}

function formatMiB(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** Every failure crosses as STRATA_ERROR with the SDK's code in `data`; unknown errors are INTERNAL. */
export function toResponseError(err: unknown): ResponseError<StrataErrorData> {
  if (isStrataError(err)) {
    return new ResponseError<StrataErrorData>(STRATA_ERROR, err.message, { code: err.code, exitCode: exitCodeFor(err.code), ...(Object.keys(err.details).length > 0 ? { details: err.details } : {}) });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ResponseError<StrataErrorData>(STRATA_ERROR, `unexpected error: ${message} (a bug in Strata; the server log has the details)`, { code: 'INTERNAL', exitCode: exitCodeFor('INTERNAL') });
}
