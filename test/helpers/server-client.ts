import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { CancellationTokenSource, ProgressType, ResponseError, StreamMessageReader, StreamMessageWriter, createMessageConnection } from 'vscode-jsonrpc/node';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { CHANGED_NOTIFICATION, PASSPHRASE_REQUEST } from '@strata/protocol';
import type { ParamsOf, RequestMethod, ResultOf, StrataErrorData } from '@strata/protocol';
import { ROOT, TEST_PASSPHRASE } from './env.js';

export const SERVER = path.join(ROOT, 'packages/server/dist/main.js');

/** A client of strata-server over stdio, as the extension is over IPC. */
export class Client {
  readonly child: ChildProcess;
  readonly connection: MessageConnection;
  passphrase: string | null = TEST_PASSPHRASE;
  readonly passphraseRequests: { repository: string; purpose: string }[] = [];
  readonly changed: string[] = [];
  readonly progress: unknown[] = [];
  readonly log: string[] = [];

  /** `command`: the arguments after node that start the server; by default strata-server itself. */
  constructor(command: readonly string[] = [SERVER, '--stdio']) {
    this.child = spawn(process.execPath, command, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.connection = createMessageConnection(new StreamMessageReader(this.child.stdout!), new StreamMessageWriter(this.child.stdin!));
    this.connection.onRequest(PASSPHRASE_REQUEST, (params: { repository: string; purpose: string }) => {
      this.passphraseRequests.push(params);
      return { passphrase: this.passphrase };
    });
    this.connection.onNotification(CHANGED_NOTIFICATION, (params: { repository: string }) => {
      this.changed.push(params.repository);
    });
    this.connection.onNotification('window/logMessage', (params: { message: string }) => {
      this.log.push(params.message);
    });
    this.connection.onProgress(new ProgressType<unknown>(), 'progress-1', (value) => {
      this.progress.push(value);
    });
    this.connection.listen();
  }

  async start(): Promise<{ serverInfo: { name: string; version: string }; capabilities: { experimental: { strata: { protocol: number; methods: string[] } } } }> {
    const init = await this.connection.sendRequest('initialize', { processId: process.pid, rootUri: null, capabilities: { window: { workDoneProgress: true } } });
    await this.connection.sendNotification('initialized', {});
    return init as never;
  }

  request<M extends RequestMethod>(method: M, params: ParamsOf<M>, token?: CancellationTokenSource): Promise<ResultOf<M>> {
    return token ? this.connection.sendRequest(method, params, token.token) : this.connection.sendRequest(method, params);
  }

  /** The Strata error a request fails with. */
  async failure<M extends RequestMethod>(method: M, params: ParamsOf<M>): Promise<ResponseError<StrataErrorData>> {
    try {
      await this.request(method, params);
    } catch (err) {
      assert.ok(err instanceof ResponseError, `expected a ResponseError, got ${String(err)}`);
      return err as ResponseError<StrataErrorData>;
    }
    assert.fail(`${method} succeeded but should have failed`);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    await this.connection.sendRequest('shutdown').catch(() => undefined);
    await this.connection.sendNotification('exit').catch(() => undefined);
    await exited;
    this.connection.dispose();
  }
}

