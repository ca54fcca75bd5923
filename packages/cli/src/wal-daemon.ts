import { lstatSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import * as path from 'node:path';
import { StrataError, isStrataError, validateDatabaseName, walFileCheck } from '@strata/sdk';
import type { LogPushResult } from '@strata/sdk';
import type { CommandContext } from './context.js';
import type { HandoffReply, HandoffRequest } from './wal-handoff.js';

/** A WAL segment's name (not a history, .partial or .backup file, which are only stored when asked for). */
const SEGMENT = /^[0-9A-F]{24}$/;
/** Segments stored ahead of the server's asking, at most (0 turns read-ahead off). */
const DEFAULT_READ_AHEAD = 2;

/**
 * `strata wal-daemon --db NAME --socket PATH`: the warm mode of WAL archiving. A `strata wal-push`
 * costs a Node process start, the CLI's modules, the repository's key unlocked from the passphrase
 * and compression workers started, for every 16 MiB segment; a server writing fast makes segments
 * quicker than that. The daemon does all of it once and then stores each segment that `strata
 * wal-push %p --db NAME --socket PATH` hands it, answering only when the segment is stored (as
 * durable as the push's own). Without a daemon on the socket, wal-push pushes itself.
 *
 * The socket is created mode 0600: only the daemon's user (the server's) can hand it files, and
 * it reads them with that user's rights.
 */
export async function walDaemonCommand(ctx: CommandContext, options: { database: string | undefined; socket: string | undefined; readAhead?: string | undefined }, signal: AbortSignal): Promise<number> {
  if (options.database === undefined) throw new StrataError('USAGE', "wal-daemon: --db NAME is required (the name the cluster's backups are filed under in strata.config.json)");
  if (options.socket === undefined) throw new StrataError('USAGE', 'wal-daemon: --socket PATH is required (the same path archive_command gives wal-push --socket)');
  const database = validateDatabaseName(options.database);
  const readAheadCount = options.readAhead === undefined ? DEFAULT_READ_AHEAD : Number(options.readAhead);
  if (!/^[0-9]{1,2}$/.test(options.readAhead ?? '0')) throw new StrataError('USAGE', `wal-daemon: --read-ahead takes how many segments to store ahead, 0 to 99 (got ${JSON.stringify(options.readAhead)})`);
  const socket = path.resolve(options.socket);
  const repo = await ctx.repository();
  // The passphrase now: a wrong one fails the daemon's start, not the server's first segment.
  await repo.unlock();
  await claimSocket(socket);
  const say = (line: string, json: Record<string, unknown>): void => {
    process.stdout.write(ctx.json ? `${JSON.stringify(json)}\n` : `${line}\n`);
  };
  const pushFile = async (file: string): Promise<LogPushResult> => {
    const bytes = await fs.readFile(file).catch((err: Error) => {
      throw new StrataError('USAGE', `wal-push: cannot read ${file}: ${err.message}`, { cause: err });
    });
    // No signal: a segment being stored when the daemon is told to stop is finished first.
    // Checked as wal-push checks what it stores itself (walFileCheck).
    const result = await repo.logArchive.push(database, path.basename(file), bytes, { check: walFileCheck });
    // The mirror's copy follows the repository's; its failure is journaled there, not the push's.
    const mirrored = await repo.mirrorLog(database, path.basename(file), bytes);
    if (mirrored && !mirrored.ok) process.stderr.write(`strata wal-daemon: ${mirrored.error!.message} (archived in the repository; the next backup copies it to the mirror)\n`);
    return result;
  };
  const working = new Set<Promise<unknown>>();
  const track = <T>(promise: Promise<T>): Promise<T> => {
    working.add(promise);
    void promise.then(
      () => working.delete(promise),
      () => working.delete(promise),
    );
    return promise;
  };
  // Read-ahead, as WAL-G's upload concurrency: the server hands over one segment at a time and
  // waits for each; the segments it has marked ready after the one it handed over are complete
  // and will be asked for next, in name order, so they are stored meanwhile. The server is still
  // answered for each only once that segment is stored.
  const ahead = new Map<string, Promise<LogPushResult>>();
  // The server's own requests being stored: never stored a second time at once by a read-ahead.
  const requested = new Map<string, Promise<LogPushResult>>();
  const readAhead = async (file: string): Promise<void> => {
    const name = path.basename(file);
    if (readAheadCount === 0 || !SEGMENT.test(name)) return;
    let ready: string[];
    try {
      ready = (await fs.readdir(path.join(path.dirname(file), 'archive_status')))
        .filter((f) => f.endsWith('.ready'))
        .map((f) => f.slice(0, -'.ready'.length))
        .filter((n) => SEGMENT.test(n) && n > name)
        .sort();
    } catch {
      return;
    }
    for (const next of ready) {
      if (ahead.size >= readAheadCount) break;
      if (ahead.has(next) || requested.has(next)) continue;
      const early = track(pushFile(path.join(path.dirname(file), next)));
      ahead.set(next, early);
      early.then(
        (r) => say(`${r.status} ${r.file.name} (ahead)`, { name: r.file.name, status: r.status, ahead: true }),
        () => undefined,
      );
    }
  };
  const store = async (request: HandoffRequest): Promise<HandoffReply> => {
    if (request.database !== database) return { ok: false, code: 'USAGE', error: `wal-daemon on ${socket} archives ${database}, not ${request.database}` };
    if (!path.isAbsolute(request.file)) return { ok: false, code: 'USAGE', error: `wal-daemon: ${request.file} is not an absolute path` };
    const name = path.basename(request.file);
    // The server asks in name order: what was read ahead before this name will not be asked for.
    for (const earlier of [...ahead.keys()]) if (earlier < name) ahead.delete(earlier);
    const early = ahead.get(name);
    ahead.delete(name);
    // Looked up and registered in one step: a read-ahead running meanwhile sees it.
    // A read-ahead that failed is tried again, as the server's own request.
    const own = requested.get(name) ?? (early ? early.catch(() => pushFile(request.file)) : pushFile(request.file));
    requested.set(name, own);
    void own.then(
      () => requested.delete(name),
      () => requested.delete(name),
    );
    void readAhead(request.file);
    try {
      const result = await own;
      say(`${result.status} ${result.file.name}`, { name: result.file.name, status: result.status });
      return { ok: true, name: result.file.name, status: result.status, sha256: result.file.sha256, storedBytes: result.file.storedBytes };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      say(`failed ${name}: ${message}`, { name, status: 'failed', error: message });
      return { ok: false, code: isStrataError(err) ? err.code : 'INTERNAL', error: message };
    }
  };
  const serve = (conn: Socket): void => {
    let text = '';
    conn.setEncoding('utf8');
    conn.on('error', () => undefined);
    conn.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\n');
      if (end < 0) {
        if (text.length > 64 * 1024) conn.destroy();
        return;
      }
      conn.removeAllListeners('data');
      let request: HandoffRequest;
      try {
        request = JSON.parse(text.slice(0, end)) as HandoffRequest;
        if (request.op !== 'push' || typeof request.file !== 'string' || typeof request.database !== 'string') throw new Error('not a push');
      } catch {
        conn.end(`${JSON.stringify({ ok: false, code: 'USAGE', error: 'wal-daemon: not a wal-push request' } satisfies HandoffReply)}\n`);
        return;
      }
      void track(store(request)).then((answer) => conn.end(`${JSON.stringify(answer)}\n`));
    });
  };
  const server = createServer(serve);
  // Created 0600 from the start: no moment in which another user could connect.
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new StrataError('IO', `wal-daemon: cannot listen on ${socket}: ${err.message}`, { cause: err })));
      server.listen(socket, () => resolve());
    });
  } finally {
    process.umask(umask);
  }
  say(`wal-daemon: archiving ${database} for wal-push --socket ${socket} (stop with SIGTERM or Ctrl-C)`, { listening: socket, database, pid: process.pid });
  try {
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
    });
  } finally {
    // No new requests; those being stored are finished (and answered) first.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    while (working.size > 0) await Promise.allSettled([...working]);
    await closed;
    await fs.rm(socket, { force: true });
  }
  return 0;
}

/** Makes `socket` free to listen on: a socket file left by a daemon that died goes; a live daemon, or a file that is not a socket, is an error. */
async function claimSocket(socket: string): Promise<void> {
  let stat;
  try {
    stat = lstatSync(socket);
  } catch {
    await fs.mkdir(path.dirname(socket), { recursive: true, mode: 0o700 });
    return;
  }
  if (!stat.isSocket()) throw new StrataError('USAGE', `wal-daemon: ${socket} exists and is not a socket; give another --socket path`);
  if (await answers(socket)) throw new StrataError('USAGE', `wal-daemon: another daemon already listens on ${socket}`);
  await fs.rm(socket, { force: true });
}

/** True when something accepts connections on the socket (a connection opened and closed, nothing sent). */
function answers(socket: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const conn = connect(socket);
    conn.on('connect', () => {
      conn.destroy();
      resolve(true);
    });
    conn.on('error', () => resolve(false));
  });
}
