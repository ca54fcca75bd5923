import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { FaultProxy } from './helpers/fault-proxy.js';
import type { FaultRates } from './helpers/fault-proxy.js';

// The proxy the S3 fault tests (test/storage-s3-faults.test.ts, the s3 soak) stand on: each fault
// must do what it claims, seen from both ends, or those tests prove nothing.

interface Seen {
  method: string;
  path: string;
  body: Buffer;
  complete: boolean;
}

/** A plain HTTP server standing in for the object store: it records what reached it. */
async function upstream(): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    const entry: Seen = { method: req.method!, path: req.url!, body: Buffer.alloc(0), complete: false };
    seen.push(entry);
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('close', () => (entry.body = Buffer.concat(chunks)));
    req.on('end', () => {
      entry.complete = true;
      entry.body = Buffer.concat(chunks);
      if (req.method === 'GET') res.writeHead(200, { 'content-length': 100_000, etag: '"x"' }).end(Buffer.alloc(100_000, 0x7a));
      else res.writeHead(200, { etag: '"y"' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

interface Outcome {
  status?: number;
  body?: Buffer;
  error?: string;
}

/** One request through the proxy, on a fresh connection, as an SDK's retry would make it. */
function send(proxy: FaultProxy, method: string, path: string, body?: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = http.request(`${proxy.url}${path}`, { method, agent: false, headers: body ? { 'content-length': body.length } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks) }));
      res.on('error', (err) => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), error: (err as NodeJS.ErrnoException).code ?? err.message }));
    });
    req.on('error', (err) => resolve({ error: (err as NodeJS.ErrnoException).code ?? err.message }));
    req.end(body);
  });
}

describe('the fault-injecting S3 proxy', () => {
  let server: Awaited<ReturnType<typeof upstream>>;
  const proxies: FaultProxy[] = [];
  const proxy = async (faults: FaultRates, seed = 7): Promise<FaultProxy> => {
    const p = await FaultProxy.start({ target: server.url, seed, faults });
    proxies.push(p);
    return p;
  };
  beforeEach(async () => {
    server = await upstream();
  });
  afterEach(async () => {
    for (const p of proxies.splice(0)) await p.stop();
    await server.close();
  });

  it('passes requests and answers through whole when no fault is on', async () => {
    const p = await proxy({});
    const put = await send(p, 'PUT', '/bucket/key', Buffer.alloc(70_000, 1));
    assert.equal(put.status, 200);
    assert.equal(server.seen[0]!.body.length, 70_000);
    const get = await send(p, 'GET', '/bucket/key');
    assert.equal(get.status, 200);
    assert.equal(get.body!.length, 100_000);
    assert.equal(p.failures, 0);
    assert.deepEqual(p.counts.byMethod, { PUT: 1, GET: 1 });
  });

  it('answers 500 or 503 with an S3 error body, before the server sees the request or after it did the work', async () => {
    const before = await proxy({ errorBefore: 1, maxConsecutive: 100 });
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => send(before, 'PUT', `/bucket/k${i}`, Buffer.from('data'))));
    assert.equal(server.seen.length, 0, 'no request reached the server');
    for (const a of answers) {
      assert.ok(a.status === 500 || a.status === 503);
      assert.match(a.body!.toString(), a.status === 503 ? /<Code>SlowDown<\/Code>/ : /<Code>InternalError<\/Code>/);
    }
    const c = before.counts.injected;
    assert.equal(c.error500Before + c.error503Before, 12);
    assert.ok(c.error500Before > 0 && c.error503Before > 0, 'both statuses occur');

    const after = await proxy({ errorAfter: 1 });
    const a = await send(after, 'PUT', '/bucket/done', Buffer.from('written'));
    assert.ok(a.status === 500 || a.status === 503);
    assert.equal(server.seen.at(-1)!.body.toString(), 'written', 'the server did the write the client was told failed');
    assert.equal(server.seen.at(-1)!.complete, true);
  });

  it('resets a connection in the middle of an upload and in the middle of a download', async () => {
    const p = await proxy({ resetUpload: 1, resetDownload: 1, maxConsecutive: 100 });
    const put = await send(p, 'PUT', '/bucket/big', Buffer.alloc(300_000, 2));
    assert.ok(put.error, `the client sees a broken connection (got ${JSON.stringify(put)})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const arrived = server.seen.find((s) => s.method === 'PUT');
    if (arrived) {
      assert.equal(arrived.complete, false, 'the server never got the whole body');
      assert.ok(arrived.body.length < 300_000);
    }
    const get = await send(p, 'GET', '/bucket/big');
    assert.equal(get.status, 200, 'the headers arrived');
    assert.ok(get.error, 'then the body broke off');
    assert.ok(get.body!.length < 100_000, `only part of the body arrived (${get.body!.length} bytes)`);
    assert.equal(p.counts.injected.resetUpload, 1);
    assert.equal(p.counts.injected.resetDownload, 1);
  });

  it('is transient: after maxConsecutive faults on a request, the next attempt passes', async () => {
    const p = await proxy({ errorBefore: 1, maxConsecutive: 2 });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await send(p, 'GET', '/bucket/again')).status!);
    assert.notEqual(statuses[0], 200);
    assert.notEqual(statuses[1], 200);
    assert.equal(statuses[2], 200);
  });

  it('hits the same requests again with the same seed, and other ones with another seed', async () => {
    const pattern = async (seed: number): Promise<string> => {
      const p = await proxy({ errorBefore: 0.3, maxConsecutive: 100 }, seed);
      let out = '';
      for (let i = 0; i < 40; i++) out += (await send(p, 'GET', `/bucket/k${i % 10}`)).status === 200 ? '.' : 'x';
      return out;
    };
    const first = await pattern(11);
    assert.match(first, /x/);
    assert.match(first, /\./);
    assert.equal(await pattern(11), first);
    assert.notEqual(await pattern(12), first);
  });
});
