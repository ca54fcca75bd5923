#!/usr/bin/env node
/**
 * strata-server: the Strata SDK behind JSON-RPC, for the VS Code extension and other clients.
 * Speaks the Language Server Protocol's base protocol (initialize, shutdown, $/progress,
 * $/cancelRequest) plus the `strata/...` methods of @strata/protocol, over stdio (`--stdio`) or
 * Node IPC (`--node-ipc`).
 *
 * It runs under the system's Node, never inside an editor: the database drivers it loads are
 * native modules built for that Node.
 */
import { STRATA_VERSION } from '@strata/sdk';
import { PROTOCOL_VERSION, REQUEST_METHODS } from '@strata/protocol';
import { ProposedFeatures, TextDocumentSyncKind, createConnection } from 'vscode-languageserver/node';
import { StrataServer } from './server.js';

const args = process.argv.slice(2);
if (args.includes('--version')) {
  process.stdout.write(`${STRATA_VERSION} (protocol ${PROTOCOL_VERSION})\n`);
  process.exit(0);
}
if (!args.some((a) => a === '--stdio' || a === '--node-ipc' || a.startsWith('--socket=') || a.startsWith('--pipe='))) {
  process.stderr.write('Usage: strata-server --stdio | --node-ipc\nThe Strata SDK behind JSON-RPC; started by the Strata VS Code extension.\n');
  process.exit(2);
}

// As in the CLI: the AWS SDK's note that its 2027 releases need Node 22 is not for the person
// whose backups this server runs (it would land in the extension's output on every start).
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

const connection = createConnection(ProposedFeatures.all);
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
connection.onShutdown(() => server.close());
connection.listen();
