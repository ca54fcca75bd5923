import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { StrataError } from '@strata/sdk';

/** Where `strata daemon --metrics-listen` serves the metrics. */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** What Prometheus expects of a text-format scrape. */
const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Parses `HOST:PORT` (`[::1]:9187` for IPv6). Only a loopback address (127.0.0.0/8, ::1,
 * localhost) is taken unless `allowRemote`: the metrics name every database and are served without
 * authentication, so exposing them beyond the machine is a decision to make explicitly (a
 * Prometheus elsewhere usually reaches them through node_exporter's textfile collector instead).
 */
export function parseListenAddress(given: string, allowRemote: boolean): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(given);
  const port = match ? Number(match[3]) : NaN;
  // Port 0: the system picks a free one (the log says which).
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new StrataError('USAGE', `daemon: --metrics-listen expects HOST:PORT such as 127.0.0.1:9187 (or [::1]:9187), got ${JSON.stringify(given)}`);
  }
  const host = (match[1] ?? match[2])!;
  if (match[1] !== undefined && isIP(host) !== 6) throw new StrataError('USAGE', `daemon: --metrics-listen: ${JSON.stringify(host)} in brackets is not an IPv6 address`);
  if (!allowRemote && !isLoopback(host)) {
    throw new StrataError(
      'USAGE',
      `daemon: --metrics-listen ${given} is not a loopback address; the metrics are served without authentication, so give 127.0.0.1:${port} (and let a local Prometheus or a proxy reach it), or add --metrics-allow-remote to serve them on ${host}`,
    );
  }
  return { host, port };
}

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(host) || /^::ffff:127\./i.test(host);
  return false;
}

/**
 * A read-only HTTP listener: GET (or HEAD) /metrics answers the latest text `current()` returns
 * (503 before there is one); every other path is 404, every other method 405.
 */
export async function listenForMetrics(address: ListenAddress, current: () => string | undefined): Promise<{ readonly url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const pathname = (req.url ?? '/').split('?')[0];
    if (pathname !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: the metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('only GET and HEAD\n');
      return;
    }
    const text = current();
    if (text === undefined) {
      res.writeHead(503, { 'retry-after': '5', 'content-type': 'text/plain; charset=utf-8' }).end('the metrics are being computed\n');
      return;
    }
    res.writeHead(200, { 'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(text) }).end(req.method === 'HEAD' ? undefined : text);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const hint = err.code === 'EADDRINUSE' ? 'another process listens there; pick another port' : err.code === 'EADDRNOTAVAIL' ? 'no interface of this machine has that address' : err.code === 'EACCES' ? 'ports below 1024 need privileges; pick a higher one' : 'check the address';
      reject(new StrataError('USAGE', `daemon: cannot serve the metrics on ${address.host}:${address.port} (${err.code ?? err.message}): ${hint}`));
    });
    server.listen(address.port, address.host, () => resolve());
  });
  // The port the system chose when given 0.
  const bound = server.address() as AddressInfo;
  return {
    url: `http://${address.host.includes(':') ? `[${address.host}]` : address.host}:${bound.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
