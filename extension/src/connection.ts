import * as vscode from 'vscode';
import { CloseAction, ErrorAction, ErrorCodes, LanguageClient, ResponseError, WorkDoneProgress } from 'vscode-languageclient/node';
import type { LanguageClientOptions, ServerOptions } from 'vscode-languageclient/node';
import { CHANGED_NOTIFICATION, PASSPHRASE_REQUEST, PROTOCOL_VERSION } from '@strata/protocol';
import type { ClientRequestMap, NotificationMap, ParamsOf, RequestMethod, ResultOf, StrataErrorData } from '@strata/protocol';
import { ServerProblem, isCompatible, locateServer, runVersion } from './locate.js';

/** A failure the server reported, with the SDK's code (or SERVER_* when there is no server). */
export class StrataRequestError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'StrataRequestError';
  }
}

/** The codes of failures to reach the server at all (shown with How to Install / Set Path…). */
export const SERVER_PROBLEMS: readonly string[] = ['SERVER_MISSING', 'SERVER_INCOMPATIBLE', 'SERVER_FAILED', 'SERVER_STOPPED'];
/** The code of a request that was under way when the server process ended (try it again). */
export const SERVER_EXITED = 'SERVER_EXITED';

/** Answers the server's questions (the passphrase) on behalf of the user. */
export type PassphraseProvider = (params: ClientRequestMap['strata/passphrase']['params']) => Promise<string | null>;

/** Restarts allowed after unexpected stops within RESTART_WINDOW_MS; one more stop gives up. */
const MAX_RESTARTS = 4;
const RESTART_WINDOW_MS = 3 * 60_000;

export interface ConnectionOptions {
  readonly output: vscode.LogOutputChannel;
  readonly passphrase: PassphraseProvider;
  /** This extension's version: the installed strata must be of the same release line. */
  readonly extensionVersion: string;
  /** The extension's README, whose first section says how to install strata. */
  readonly readme: vscode.Uri;
}

/**
 * The extension's side of the Strata server: finds the installed `strata` command line, checks
 * its version, runs `strata serve --stdio` (under the user's Node, never the editor's own
 * runtime, whose ABI the native database drivers were not built for), restarts it when it
 * stops unexpectedly, and sends typed `strata/...` requests.
 */
export class StrataConnection implements vscode.Disposable {
  readonly #output: vscode.LogOutputChannel;
  readonly #options: ConnectionOptions;
  readonly #onChanged = new vscode.EventEmitter<string>();
  /** Fires with a repository folder whose catalog changed. */
  readonly onChanged = this.#onChanged.event;
  readonly #onRestarted = new vscode.EventEmitter<void>();
  /** Fires when the server is back after an unexpected stop (lists may have changed meanwhile). */
  readonly onRestarted = this.#onRestarted.event;
  #client: LanguageClient | undefined;
  #starting: Promise<LanguageClient> | undefined;
  #serverPid: number | undefined;
  /** The last strata/workspace params: a restarted server is told them before anything else. */
  #workspace: ParamsOf<'strata/workspace'> | undefined;
  /** When the server stopped unexpectedly, for the restart limit. */
  #stops: number[] = [];
  /** Set once the restart limit is reached; requests fail with it until Restart Server. */
  #gaveUp: StrataRequestError | undefined;
  /** The problem last shown in a notification, so that an automatic refresh does not repeat it. */
  #shownProblem: string | undefined;
  #disposed = false;

  constructor(options: ConnectionOptions) {
    this.#options = options;
    this.#output = options.output;
  }

  /** The pid of the running server process, if one runs. */
  get serverPid(): number | undefined {
    return this.#serverPid;
  }

  /** Sends a request; `token` cancels it (the server aborts and leaves everything as it was). */
  async request<M extends RequestMethod>(method: M, params: ParamsOf<M>, token?: vscode.CancellationToken): Promise<ResultOf<M>> {
    if (method === 'strata/workspace') this.#workspace = params as ParamsOf<'strata/workspace'>;
    const client = await this.#ready();
    try {
      // Never pass an undefined token: the client would send it as a second, positional param.
      return (await (token ? client.sendRequest(method, params, token) : client.sendRequest(method, params))) as ResultOf<M>;
    } catch (err) {
      const error = asStrataError(err, method);
      this.#output.error(`${method}: ${error.message}`);
      throw error;
    }
  }

  /**
   * Sends a long request under a cancellable progress notification fed by the server's
   * `$/progress` reports.
   */
  async withProgress<M extends RequestMethod>(title: string, method: M, params: ParamsOf<M>): Promise<ResultOf<M>> {
    const client = await this.#ready();
    return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, token) => {
      const workDoneToken = `strata-${Date.now()}-${Math.random().toString(36).slice(2)}`;
      let reported = 0;
      const listener = client.onProgress(WorkDoneProgress.type, workDoneToken, (value) => {
        if (value.kind === 'end') return;
        const increment = value.percentage !== undefined ? Math.max(0, value.percentage - reported) : undefined;
        if (value.percentage !== undefined) reported = value.percentage;
        progress.report({ ...(value.message ? { message: value.message } : {}), ...(increment !== undefined ? { increment } : {}) });
      });
      try {
        return await this.request(method, { ...params, workDoneToken }, token);
      } finally {
        listener.dispose();
      }
    });
  }

  /**
   * Stops the server and forgets past failures; the next request starts it again (after a
   * settings change, or Strata: Restart Server).
   */
  async restart(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    this.#starting = undefined;
    this.#serverPid = undefined;
    this.#gaveUp = undefined;
    this.#shownProblem = undefined;
    this.#stops = [];
    if (client) await client.stop().catch(() => undefined);
  }

  async dispose(): Promise<void> {
    this.#disposed = true;
    await this.restart();
    this.#onChanged.dispose();
    this.#onRestarted.dispose();
  }

  /**
   * Shows a failure to reach the server with what helps: install strata, set its path, read the
   * log, restart. `again`: also when this very problem was shown before (a command the user
   * ran, rather than a refresh).
   */
  async showProblem(error: StrataRequestError, again: boolean): Promise<void> {
    if (!again && this.#shownProblem === error.message) return;
    this.#shownProblem = error.message;
    const actions =
      error.code === 'SERVER_STOPPED' ? ['Restart Server', 'Show Log'] : error.code === 'SERVER_FAILED' ? ['Show Log', 'Set Path…'] : ['How to Install', 'Set Path…'];
    const choice = await vscode.window.showErrorMessage(`Strata: ${error.message}`, ...actions);
    if (choice === 'How to Install') await this.showInstallHelp();
    else if (choice === 'Set Path…') await vscode.commands.executeCommand('strata.setCliPath');
    else if (choice === 'Restart Server') await vscode.commands.executeCommand('strata.restartServer');
    else if (choice === 'Show Log') this.#output.show(true);
  }

  /** Opens the extension's README, which begins with how to install strata. */
  async showInstallHelp(): Promise<void> {
    await vscode.commands.executeCommand('markdown.showPreview', this.#options.readme);
  }

  #ready(): Promise<LanguageClient> {
    if (this.#gaveUp) return Promise.reject(this.#gaveUp);
    this.#starting ??= this.#start().catch(async (err: unknown) => {
      this.#starting = undefined;
      const code = err instanceof ServerProblem ? err.code : 'SERVER_FAILED';
      this.#output.error(err instanceof Error ? err.message : String(err));
      // The view's welcome text says how to install strata when it is missing or unusable.
      await vscode.commands.executeCommand('setContext', 'strata.serverProblem', code === 'SERVER_FAILED' ? '' : code);
      throw new StrataRequestError(err instanceof Error ? err.message : String(err), code);
    });
    return this.#starting;
  }

  async #start(): Promise<LanguageClient> {
    const settings = vscode.workspace.getConfiguration('strata');
    const launch = await locateServer({
      cliPath: settings.get<string>('cliPath') ?? '',
      nodePath: settings.get<string>('server.nodePath') ?? '',
      legacyServerPath: settings.get<string>('server.path') ?? '',
    });
    const version = await runVersion(launch);
    this.#output.info(`found strata ${version}: ${launch.description}`);
    const wanted = this.#options.extensionVersion;
    if (!isCompatible(version, wanted)) {
      throw new ServerProblem(
        `strata ${version} (${launch.description}) does not work with this extension ${wanted}, which needs strata ${wanted.replace(/\.\d+$/, '.x')}: install that release (How to Install), or set the path of one`,
        'SERVER_INCOMPATIBLE',
      );
    }
    const executable = { command: launch.command, args: [...launch.args], options: { shell: launch.shell } };
    const serverOptions: ServerOptions = { run: executable, debug: executable };
    let client: LanguageClient | undefined;
    const clientOptions: LanguageClientOptions = {
      // No documents: the server only answers strata/... requests.
      documentSelector: [],
      outputChannel: this.#output,
      // The extension restarts the server itself (#stopped): its own limit, its own messages,
      // and never a client left in the stopped state that answers "Client is not running".
      errorHandler: {
        error: (_error, _message, count) => ({ action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown, handled: true }),
        closed: () => {
          if (client && this.#client === client) void this.#stopped();
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
    };
    client = new LanguageClient('strata', 'Strata Server', serverOptions, clientOptions);
    client.onRequest(PASSPHRASE_REQUEST, async (params: ClientRequestMap['strata/passphrase']['params']) => ({ passphrase: await this.#options.passphrase(params) }));
    client.onNotification(CHANGED_NOTIFICATION, (params: NotificationMap['strata/changed']) => this.#onChanged.fire(params.repository));
    try {
      await client.start();
    } catch (err) {
      throw new ServerProblem(`${launch.description} did not start the Strata server (${err instanceof Error ? err.message : String(err)}): see the Strata output`, 'SERVER_FAILED');
    }
    const protocol = (client.initializeResult?.capabilities.experimental as { strata?: { protocol?: number } } | undefined)?.strata?.protocol;
    if (protocol !== PROTOCOL_VERSION) {
      await client.stop().catch(() => undefined);
      throw new ServerProblem(
        `strata ${version} (${launch.description}) speaks protocol ${protocol ?? 'unknown'}, this extension ${PROTOCOL_VERSION}: install the matching release (How to Install)`,
        'SERVER_INCOMPATIBLE',
      );
    }
    // From here on an unexpected end of the process restarts it (see closed() above).
    this.#client = client;
    // vscode-languageclient keeps the child process private; its pid is only for the log.
    this.#serverPid = (client as unknown as { _serverProcess?: { pid?: number } })._serverProcess?.pid;
    this.#output.info(`Strata server running: ${launch.description}, pid ${this.#serverPid ?? 'unknown'}`);
    this.#shownProblem = undefined;
    await vscode.commands.executeCommand('setContext', 'strata.serverProblem', '');
    // A restarted server knows nothing yet: tell it the workspace before any other request.
    if (this.#workspace) await client.sendRequest('strata/workspace', this.#workspace);
    return client;
  }

  /** The server process ended without being asked to: restart it, up to the limit. */
  async #stopped(): Promise<void> {
    if (this.#disposed) return;
    this.#client = undefined;
    this.#starting = undefined;
    this.#serverPid = undefined;
    const now = Date.now();
    this.#stops = [...this.#stops.filter((t) => now - t < RESTART_WINDOW_MS), now];
    if (this.#stops.length > MAX_RESTARTS) {
      this.#gaveUp = new StrataRequestError(
        `the Strata server stopped ${this.#stops.length} times in ${RESTART_WINDOW_MS / 60_000} minutes and is not restarted: see the Strata output, then run Strata: Restart Server`,
        'SERVER_STOPPED',
      );
      this.#output.error(this.#gaveUp.message);
      void this.showProblem(this.#gaveUp, true);
      return;
    }
    this.#output.warn(`the Strata server stopped unexpectedly (${this.#stops.length} of ${MAX_RESTARTS + 1} in ${RESTART_WINDOW_MS / 60_000} minutes); restarting it`);
    try {
      await this.#ready();
      void vscode.window.showWarningMessage('Strata server stopped unexpectedly; restarted.', 'Show Log').then((choice) => choice && this.#output.show(true));
      this.#onRestarted.fire();
    } catch (err) {
      const error = err instanceof StrataRequestError ? err : new StrataRequestError(String(err), 'SERVER_FAILED');
      void this.showProblem(new StrataRequestError(`the Strata server stopped unexpectedly and did not start again: ${error.message}`, error.code), true);
    }
  }
}

function asStrataError(err: unknown, method: string): Error {
  if (err instanceof StrataRequestError) return err;
  if (err instanceof ResponseError && (err.code === ErrorCodes.PendingResponseRejected || err.code === ErrorCodes.ConnectionInactive)) {
    // The server process ended while this request was under way; it is restarted on its own.
    return new StrataRequestError(`the Strata server stopped during ${method}, before it answered: try again`, SERVER_EXITED);
  }
  if (err instanceof ResponseError && err.code === ErrorCodes.MethodNotFound) {
    // An older strata of the same release line, from before this request existed.
    return new StrataRequestError(`the installed strata does not know ${method} (it is older than this extension): update it as in How to Install`, 'SERVER_INCOMPATIBLE');
  }
  if (err instanceof ResponseError && /NODE_MODULE_VERSION/.test(err.message)) {
    return new StrataRequestError(
      `${err.message}\nstrata runs under another Node than the one it was installed with: set strata.server.nodePath to that Node (\`which node\` where you ran npm install -g), or reinstall strata with this Node`,
      'SERVER_FAILED',
    );
  }
  if (err instanceof ResponseError) {
    const data = err.data as StrataErrorData | undefined;
    return new StrataRequestError(err.message, data?.code ?? 'INTERNAL', (data?.details as Record<string, unknown> | undefined) ?? {});
  }
  return err instanceof Error ? err : new Error(String(err));
}
