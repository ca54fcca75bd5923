import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { LanguageClient, ResponseError, TransportKind, WorkDoneProgress } from 'vscode-languageclient/node';
import type { LanguageClientOptions, ServerOptions } from 'vscode-languageclient/node';
import { CHANGED_NOTIFICATION, PASSPHRASE_REQUEST } from '@strata/protocol';
import type { ClientRequestMap, NotificationMap, ParamsOf, RequestMethod, ResultOf, StrataErrorData } from '@strata/protocol';

/** A failure the server reported, with the SDK's code. */
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

/** Answers the server's questions (the passphrase) on behalf of the user. */
export type PassphraseProvider = (params: ClientRequestMap['strata/passphrase']['params']) => Promise<string | null>;

/**
 * The extension's side of the Strata server: starts it under the configured Node (never the
 * editor's own runtime, whose ABI the native database drivers were not built for), and sends
 * typed `strata/...` requests.
 */
export class StrataConnection implements vscode.Disposable {
  readonly #output: vscode.LogOutputChannel;
  readonly #passphrase: PassphraseProvider;
  readonly #onChanged = new vscode.EventEmitter<string>();
  /** Fires with a repository folder whose catalog changed. */
  readonly onChanged = this.#onChanged.event;
  #client: LanguageClient | undefined;
  #starting: Promise<LanguageClient> | undefined;

  constructor(output: vscode.LogOutputChannel, passphrase: PassphraseProvider) {
    this.#output = output;
    this.#passphrase = passphrase;
  }

  /** Sends a request; `token` cancels it (the server aborts and leaves everything as it was). */
  async request<M extends RequestMethod>(method: M, params: ParamsOf<M>, token?: vscode.CancellationToken): Promise<ResultOf<M>> {
    const client = await this.#ready();
    try {
      // Never pass an undefined token: the client would send it as a second, positional param.
      return (await (token ? client.sendRequest(method, params, token) : client.sendRequest(method, params))) as ResultOf<M>;
    } catch (err) {
      const error = asStrataError(err);
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

  /** Stops the server; the next request starts it again (after a settings change, say). */
  async restart(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    this.#starting = undefined;
    if (client) await client.stop().catch(() => undefined);
  }

  async dispose(): Promise<void> {
    await this.restart();
    this.#onChanged.dispose();
  }

  #ready(): Promise<LanguageClient> {
    this.#starting ??= this.#start().catch((err) => {
      this.#starting = undefined;
      throw err;
    });
    return this.#starting;
  }

  async #start(): Promise<LanguageClient> {
    const settings = vscode.workspace.getConfiguration('strata.server');
    const nodePath = settings.get<string>('nodePath') || 'node';
    const serverPath = locateServer(settings.get<string>('path') ?? '');
    this.#output.appendLine(`starting ${serverPath} with ${nodePath}`);
    const serverOptions: ServerOptions = {
      run: { module: serverPath, transport: TransportKind.ipc, runtime: nodePath },
      debug: { module: serverPath, transport: TransportKind.ipc, runtime: nodePath },
    };
    const clientOptions: LanguageClientOptions = {
      // No documents: the server only answers strata/... requests.
      documentSelector: [],
      outputChannel: this.#output,
      // A crashed server restarts on the next request; no modal loops.
      connectionOptions: { maxRestartCount: 0 },
    };
    const client = new LanguageClient('strata', 'Strata Server', serverOptions, clientOptions);
    client.onRequest(PASSPHRASE_REQUEST, async (params: ClientRequestMap['strata/passphrase']['params']) => ({ passphrase: await this.#passphrase(params) }));
    client.onNotification(CHANGED_NOTIFICATION, (params: NotificationMap['strata/changed']) => this.#onChanged.fire(params.repository));
    try {
      await client.start();
    } catch (err) {
      throw new StrataRequestError(
        `the Strata server did not start with ${nodePath} (${err instanceof Error ? err.message : String(err)}); check strata.server.nodePath and the server log`,
        'SERVER_FAILED',
      );
    }
    this.#client = client;
    return client;
  }
}

/** Where the server is: the setting, else the workspace's node_modules. */
export function locateServer(configured: string): string {
  const candidates = configured
    ? [configured]
    : (vscode.workspace.workspaceFolders ?? []).map((f) => path.join(f.uri.fsPath, 'node_modules', '@strata', 'server', 'dist', 'main.js'));
  const found = candidates.find((file) => existsSync(file));
  if (!found) {
    throw new StrataRequestError(
      configured
        ? `the Strata server is not at ${configured} (setting strata.server.path)`
        : 'the Strata server was not found: install it in the workspace (npm install --save-dev @strata/server) or set strata.server.path to its dist/main.js',
      'SERVER_MISSING',
    );
  }
  return found;
}

function asStrataError(err: unknown): Error {
  if (err instanceof StrataRequestError) return err;
  if (err instanceof ResponseError) {
    const data = err.data as StrataErrorData | undefined;
    return new StrataRequestError(err.message, data?.code ?? 'INTERNAL', (data?.details as Record<string, unknown> | undefined) ?? {});
  }
  return err instanceof Error ? err : new Error(String(err));
}
