/**
 * Runs the Strata server on this process's stdio or Node IPC channel. Shared by the
 * `strata-server` executable of this package and by `strata serve` (the installed CLI, which
 * is what the VS Code extension starts: it carries the database drivers built for the user's
 * Node).
 */
import { STRATA_VERSION } from '@strata/sdk';
import { PROTOCOL_VERSION, REQUEST_METHODS } from '@strata/protocol';
import { IPCMessageReader, IPCMessageWriter, ProposedFeatures, StreamMessageReader, StreamMessageWriter, TextDocumentSyncKind, createConnection } from 'vscode-languageserver/node';
import { StrataServer } from './server.js';

export type Transport = 'stdio' | 'node-ipc';

export { PROTOCOL_VERSION };

/**
 * Listens until the client says `exit` or the channel closes; vscode-languageserver then ends
 * the process itself (exit status 0 after a `shutdown` request, else 1), so this never returns.
 */
export function serve(transport: Transport): void {
  // As in the CLI: the AWS SDK's note that its 2027 releases need Node 22 is not for the person
  // whose backups this server runs (it would land in the extension's output on every start).
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  const connection =
    transport === 'stdio'
      ? createConnection(ProposedFeatures.all, new StreamMessageReader(process.stdin), new StreamMessageWriter(process.stdout))
      : createConnection(ProposedFeatures.all, new IPCMessageReader(process), new IPCMessageWriter(process));
  const server = new StrataServer(connection);

  connection.onInitialize(() => ({
    capabilities: {
      // No documents: this server answers strata/... requests only.
      textDocumentSync: TextDocumentSyncKind.None,
      experimental: { strata: { protocol: PROTOCOL_VERSION, methods: REQUEST_METHODS } },
    },
    serverInfo: { name: 'strata-server', version: STRATA_VERSION },
  }));
  connection.onInitialized(() => connection.console.info(`strata-server ${STRATA_VERSION} on node ${process.version} (pid ${process.pid})`));
  let shutDown = false;
  connection.onShutdown(() => {
    shutDown = true;
    return server.close();
  });
  connection.listen();
  if (transport === 'stdio') {
    // Given streams of its own, the connection does not watch stdin's end: a client that went
    // away without shutdown and exit (an editor killed) would leave this server running for ever.
    process.stdin.once('end', () => process.exit(shutDown ? 0 : 1));
  }
}
