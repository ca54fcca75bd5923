/**
 * A fault-injecting HTTP proxy for an S3 endpoint: Strata talks to the proxy (AWS_ENDPOINT_URL),
 * the proxy to the real server, and on a seeded share of the requests something goes wrong the
 * way it does on a real network or a busy object store:
 *
 * - `resetUpload`: the connection is reset in the middle of a PUT's body (PutObject, UploadPart);
 *   the server got a prefix of the body and the client an error.
 * - `resetDownload`: the response's headers and part of its body arrive, then the connection is
 *   reset (a GET cut off mid-stream).
 * - `errorBefore`: 500 InternalError or 503 SlowDown (S3 XML bodies) without forwarding: the
 *   request never reached the server.
 * - `errorAfter`: the request is forwarded and done by the server, but the client gets a 500 or
 *   503 instead of the answer: the nasty case, where a retry repeats a write that already
 *   happened (a conditional create then finds its own object).
 * - `delay`: the request waits up to `delayMs` before it is forwarded (a slow server).
 *
 * Whether a request is hit depends only on the seed, the request's method and path, and how often
 * that method and path came before, not on timing, so a run with the same keys repeats its
 * faults. Faults are transient: after `maxConsecutive` faults in a row on the same method and
 * path, the next attempt passes, so a client that retries at least that often always gets
 * through (a fault that never ends is an outage, a different test).
 *
 * Hand-written on node:http and node:net, because what it does (cut a body at a chosen byte,
 * answer after the server has acted) is exactly what proxy libraries exist to avoid.
 *
 * In-process: `const proxy = await FaultProxy.start({ target, seed, faults })`, then `proxy.url`,
 * `proxy.setFaults()`, `proxy.counts`, `await proxy.stop()`. As a child process:
 * `node fault-proxy.js --target URL [--seed N] [--port N] [--faults JSON]` prints
 * `FAULT_PROXY_URL=…` and serves `GET /__fault-proxy/counts` and `PUT /__fault-proxy/faults`
 * (a path no S3 bucket can have), so a test can read and change it while it runs.
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** Rates (0..1) of each fault; absent means never. */
export interface FaultRates {
  readonly resetUpload?: number;
  readonly resetDownload?: number;
  readonly errorBefore?: number;
  readonly errorAfter?: number;
  readonly delay?: number;
  /** The longest delay, in ms (default 2,000). */
  readonly delayMs?: number;
  /** Faults in a row on one method and path before an attempt passes regardless (default 2). */
  readonly maxConsecutive?: number;
  /** Only requests whose method is listed are hit (default: all). */
  readonly methods?: readonly string[];
}

export type FaultKind =
  | 'resetUpload'
  | 'resetDownload'
  | 'error500Before'
  | 'error503Before'
  | 'error500After'
  | 'error503After'
  | 'delay';

/** What the proxy saw and did. */
export interface FaultCounts {
  requests: number;
  byMethod: Record<string, number>;
  /** UploadPart requests (PUT with a partNumber), retries included. */
  uploadParts: number;
  injected: Record<FaultKind, number>;
}

export interface FaultProxyOptions {
  /** The real endpoint, e.g. http://127.0.0.1:18082. */
  readonly target: string;
  readonly seed: number;
  readonly faults?: FaultRates;
  /** 0 (default) picks a free port. */
  readonly port?: number;
}

const CONTROL = '/__fault-proxy/';

const ERRORS = {
  500: { code: 'InternalError', message: 'We encountered an internal error. Please try again.' },
  503: { code: 'SlowDown', message: 'Please reduce your request rate.' },
} as const;

const emptyCounts = (): FaultCounts => ({
  requests: 0,
  byMethod: {},
  uploadParts: 0,
  injected: { resetUpload: 0, resetDownload: 0, error500Before: 0, error503Before: 0, error500After: 0, error503After: 0, delay: 0 },
});

/** Uniform numbers in [0, 1) for one request, from the seed and what identifies the request. */
function draws(seed: number, identity: string): () => number {
  let counter = 0;
  return () => {
    const digest = createHash('sha256').update(`${seed}\0${identity}\0${counter++}`).digest();
    return digest.readUInt32BE(0) / 2 ** 32;
  };
}

/** Ends a connection with a TCP reset, as a dropped network path or a crashed peer does. */
function reset(socket: Socket | null | undefined): void {
  if (!socket || socket.destroyed) return;
  socket.resetAndDestroy();
}

export class FaultProxy {
  readonly #server: http.Server;
  readonly #target: URL;
  readonly #seed: number;
  readonly #agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  readonly #seen = new Map<string, number>();
  readonly #streak = new Map<string, number>();
  readonly #waiters = new Set<{ test: (method: string, url: URL) => boolean; left: number; resolve: () => void }>();
  #faults: FaultRates;
  #counts = emptyCounts();
  readonly url: string;

  private constructor(server: http.Server, options: FaultProxyOptions) {
    this.#server = server;
    this.#target = new URL(options.target);
    this.#seed = options.seed;
    this.#faults = options.faults ?? {};
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const server = http.createServer();
    // A client's keep-alive connection must not outlive a test because the server holds it.
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    const proxy = new FaultProxy(server, options);
    server.on('request', (req, res) => {
      proxy.#handle(req, res).catch((err: unknown) => {
        // A failure of the proxy itself is reported like an upstream that went away.
        process.stderr.write(`fault-proxy: ${String(err)}\n`);
        reset(req.socket);
      });
    });
    return proxy;
  }

  /** Replaces the fault rates from now on (e.g. none while a test sets up, then some). */
  setFaults(faults: FaultRates): void {
    this.#faults = faults;
  }

  get faults(): FaultRates {
    return this.#faults;
  }

  /** A copy of what the proxy saw and injected so far. */
  get counts(): FaultCounts {
    return structuredClone(this.#counts);
  }

  /** The number of faults injected so far, of every kind but delays. */
  get failures(): number {
    const i = this.#counts.injected;
    return i.resetUpload + i.resetDownload + i.error500Before + i.error503Before + i.error500After + i.error503After;
  }

  /**
   * Resolves once `count` more requests matching `test` have arrived (before any fault is applied
   * to them), e.g. `proxy.whenRequests((m, u) => m === 'PUT' && u.searchParams.has('partNumber'), 2)`
   * for "two parts of a multipart upload are in flight".
   */
  whenRequests(test: (method: string, url: URL) => boolean, count = 1): Promise<void> {
    return new Promise((resolve) => this.#waiters.add({ test, left: count, resolve }));
  }

  resetCounts(): void {
    this.#counts = emptyCounts();
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#agent.destroy();
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://proxy');
    if (url.pathname.startsWith(CONTROL)) return this.#control(url.pathname.slice(CONTROL.length), req, res);
    const method = req.method ?? 'GET';
    this.#counts.requests++;
    this.#counts.byMethod[method] = (this.#counts.byMethod[method] ?? 0) + 1;
    if (method === 'PUT' && url.searchParams.has('partNumber')) this.#counts.uploadParts++;
    for (const waiter of this.#waiters) {
      if (waiter.test(method, url) && --waiter.left === 0) {
        this.#waiters.delete(waiter);
        waiter.resolve();
      }
    }

    // The identity leaves out the query's varying parts (an upload id), keeps what names the
    // operation (partNumber, uploads, list-type, prefix, continuation), so reruns repeat.
    const query = [...url.searchParams.keys()].sort().map((k) => (k === 'uploadId' || k === 'X-Amz-Signature' ? k : `${k}=${url.searchParams.get(k)}`));
    const identity = `${method} ${url.pathname}?${query.join('&')}`;
    const nth = this.#seen.get(identity) ?? 0;
    this.#seen.set(identity, nth + 1);
    const draw = draws(this.#seed, `${identity}#${nth}`);
    const f = this.#faults;
    const eligible = !f.methods || f.methods.includes(method);
    const streak = this.#streak.get(identity) ?? 0;
    const mayFail = eligible && streak < (f.maxConsecutive ?? 2);
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;

    // Every draw is made whatever the rates, so changing one rate does not move the others' hits.
    const [dDelay, dDelayLength, dBefore, dAfter, dUpload, dDownload, dStatus, dCut] = Array.from({ length: 8 }, draw) as number[] as [number, number, number, number, number, number, number, number];
    const status: 500 | 503 = dStatus < 0.5 ? 500 : 503;
    let fault: 'before' | 'after' | 'upload' | 'download' | undefined;
    if (mayFail) {
      if (dBefore < (f.errorBefore ?? 0)) fault = 'before';
      else if (hasBody && method === 'PUT' && dUpload < (f.resetUpload ?? 0)) fault = 'upload';
      else if (dAfter < (f.errorAfter ?? 0)) fault = 'after';
      else if (method === 'GET' && dDownload < (f.resetDownload ?? 0)) fault = 'download';
    }
    this.#streak.set(identity, fault ? streak + 1 : 0);

    if (eligible && dDelay < (f.delay ?? 0)) {
      this.#counts.injected.delay++;
      await delay(Math.floor(dDelayLength * (f.delayMs ?? 2_000)));
    }
    if (fault === 'before') {
      this.#counts.injected[status === 500 ? 'error500Before' : 'error503Before']++;
      // Read the body away first, so the client is not cut off while it still sends.
      req.resume();
      await new Promise<void>((resolve) => {
        req.once('end', resolve);
        req.once('error', resolve);
        req.once('close', resolve);
      });
      return sendError(res, status, url.pathname);
    }

    const upstream = http.request({
      host: this.#target.hostname,
      port: this.#target.port,
      method,
      path: req.url,
      // The Host header stays the one the client signed (SigV4 covers it).
      headers: req.headers,
      agent: this.#agent,
    });
    const answer = new Promise<http.IncomingMessage>((resolve, reject) => {
      upstream.once('response', resolve);
      upstream.once('error', reject);
    });
    answer.catch(() => undefined);

    if (fault === 'upload') {
      this.#counts.injected.resetUpload++;
      const length = Number(req.headers['content-length'] ?? 0);
      // Cut somewhere inside the body: at least one byte sent, never all of it.
      const cutAt = length > 1 ? 1 + Math.floor(dCut * (length - 1)) : 1;
      let sent = 0;
      req.on('data', (chunk: Buffer) => {
        if (sent >= cutAt) return;
        const piece = chunk.subarray(0, Math.min(chunk.length, cutAt - sent));
        sent += piece.length;
        upstream.write(piece);
        if (sent >= cutAt) {
          upstream.destroy();
          reset(req.socket);
        }
      });
      req.on('end', () => {
        upstream.destroy();
        reset(req.socket);
      });
      return;
    }

    req.pipe(upstream);
    let response: http.IncomingMessage;
    try {
      response = await answer;
    } catch {
      // The real server went away: the client sees what it would have seen without the proxy.
      reset(req.socket);
      return;
    }

    if (fault === 'after') {
      // Let the server finish what it was doing (its body is read away), then lie about it.
      response.resume();
      await new Promise<void>((resolve) => {
        response.once('end', resolve);
        response.once('error', resolve);
        response.once('close', resolve);
      });
      this.#counts.injected[status === 500 ? 'error500After' : 'error503After']++;
      return sendError(res, status, url.pathname);
    }

    const bodyLength = Number(response.headers['content-length'] ?? 0);
    if (fault === 'download' && (response.statusCode === 200 || response.statusCode === 206) && bodyLength > 1) {
      this.#counts.injected.resetDownload++;
      const cutAt = 1 + Math.floor(dCut * (bodyLength - 1));
      res.writeHead(response.statusCode, response.headers);
      let sent = 0;
      response.on('data', (chunk: Buffer) => {
        if (sent >= cutAt) return;
        const piece = chunk.subarray(0, Math.min(chunk.length, cutAt - sent));
        sent += piece.length;
        if (sent >= cutAt) {
          response.destroy();
          // The part before the cut reaches the client first, then the reset.
          res.write(piece, () => reset(res.socket));
        } else res.write(piece);
      });
      return;
    }

    res.writeHead(response.statusCode ?? 502, response.headers);
    response.pipe(res);
    response.once('error', () => reset(res.socket));
  }

  async #control(what: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method === 'GET' && what === 'counts') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.#counts));
      return;
    }
    if (req.method === 'PUT' && what === 'faults') {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      this.setFaults(JSON.parse(Buffer.concat(chunks).toString()) as FaultRates);
      res.writeHead(204).end();
      return;
    }
    res.writeHead(404).end();
  }
}

function sendError(res: http.ServerResponse, status: 500 | 503, resource: string): void {
  const { code, message } = ERRORS[status];
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><Resource>${resource}</Resource><RequestId>fault-proxy</RequestId></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), ...(status === 503 ? { 'retry-after': '0' } : {}) }).end(body);
}

/** Starts the proxy as this process's only job (see the file's comment for the arguments). */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      seed: { type: 'string', default: '1' },
      port: { type: 'string', default: '0' },
      faults: { type: 'string', default: '{}' },
    },
  });
  if (!values.target) throw new Error('fault-proxy: --target URL is required');
  const proxy = await FaultProxy.start({ target: values.target, seed: Number(values.seed), port: Number(values.port), faults: JSON.parse(values.faults) as FaultRates });
  process.stdout.write(`FAULT_PROXY_URL=${proxy.url}\n`);
  const stop = (): void => {
    process.stdout.write(`${JSON.stringify(proxy.counts)}\n`);
    void proxy.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
