import { connect } from 'node:net';
import * as path from 'node:path';
import { exitCodeFor } from '@strata/core/errors';
import type { StrataErrorCode } from '@strata/core/errors';

/**
 * The hand-over of `strata wal-push --socket PATH` to a running `strata wal-daemon` (the warm
 * mode, as WAL-G's daemon): one request per connection, one JSON line each way. The daemon
 * answers only once the segment is stored in the repository as a push of its own would store it,
 * so a success here is as durable as one from the short-lived push. Kept free of everything but
 * node:net so that a push the daemon serves loads nothing else (the process start is what the
 * warm mode saves).
 */

/** What the client sends. */
export interface HandoffRequest {
  readonly op: 'push';
  readonly database: string;
  /** Absolute path of the file (archive_command's %p, resolved against the server's directory). */
  readonly file: string;
}

/** What the daemon answers. */
export type HandoffReply = { readonly ok: true; readonly name: string; readonly status: 'stored' | 'present'; readonly sha256: string; readonly storedBytes: number } | { readonly ok: false; readonly error: string; readonly code: StrataErrorCode };

/**
 * Hands `file` to the daemon listening on `socket`. Undefined when no daemon answered (no socket,
 * nobody listening, or the connection lost before a reply): the caller then pushes the file itself,
 * which is safe even when the daemon did store it (a push of the same bytes is idempotent).
 */
export function handOff(socket: string, database: string, file: string): Promise<HandoffReply | undefined> {
  const request: HandoffRequest = { op: 'push', database, file: path.resolve(file) };
  return new Promise((resolve) => {
    let answer = '';
    let settled = false;
    const done = (reply: HandoffReply | undefined): void => {
      if (settled) return;
      settled = true;
      conn.destroy();
      resolve(reply);
    };
    const conn = connect(socket);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(`${JSON.stringify(request)}\n`));
    conn.on('data', (chunk: string) => {
      answer += chunk;
      const end = answer.indexOf('\n');
      if (end < 0) return;
      try {
        done(JSON.parse(answer.slice(0, end)) as HandoffReply);
      } catch {
        done(undefined);
      }
    });
    conn.on('error', () => done(undefined));
    conn.on('close', () => done(undefined));
  });
}

/**
 * The fast path of `strata wal-push FILE ... --socket PATH` (main.ts calls it before loading the
 * CLI): the exit status when the daemon served the push, undefined when the full command must run
 * (no daemon, or arguments this path does not read).
 */
export async function fastWalPush(args: readonly string[]): Promise<number | undefined> {
  const value = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : args.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
  };
  const socket = value('--socket');
  const database = value('--db');
  const file = args[0];
  if (!socket || !database || !file || file.startsWith('-') || args.includes('--json')) return undefined;
  const reply = await handOff(socket, database, file);
  if (!reply) return undefined;
  if (reply.ok) return 0;
  process.stderr.write(`strata: ${reply.error}\n`);
  return exitCodeFor(reply.code);
}
