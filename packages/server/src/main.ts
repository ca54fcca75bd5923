#!/usr/bin/env node
/**
 * strata-server: the Strata SDK behind JSON-RPC, for the VS Code extension and other clients.
 * Speaks the Language Server Protocol's base protocol (initialize, shutdown, $/progress,
 * $/cancelRequest) plus the `strata/...` methods of @strata/protocol, over stdio (`--stdio`) or
 * Node IPC (`--node-ipc`). The installed CLI runs the same server as `strata serve --stdio`.
 *
 * It runs under the system's Node, never inside an editor: the database drivers it loads are
 * native modules built for that Node.
 */
import { STRATA_VERSION } from '@strata/sdk';
import { PROTOCOL_VERSION, serve } from './serve.js';

const args = process.argv.slice(2);
if (args.includes('--version')) {
  process.stdout.write(`${STRATA_VERSION} (protocol ${PROTOCOL_VERSION})\n`);
  process.exit(0);
}
const transport = args.includes('--stdio') ? 'stdio' : args.includes('--node-ipc') ? 'node-ipc' : undefined;
if (!transport) {
  process.stderr.write('Usage: strata-server --stdio | --node-ipc\nThe Strata SDK behind JSON-RPC; started by the Strata VS Code extension.\n');
  process.exit(2);
}
serve(transport);
