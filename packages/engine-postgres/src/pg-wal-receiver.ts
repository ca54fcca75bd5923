import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { StrataError, isStrataError, processRuns, sleepUnlessAborted as sleep } from '@strata/core';
import type { LogPushResult } from '@strata/core';
import { connect, parseTarget } from './pg-connection.js';
import type { PgTarget } from './pg-connection.js';
import { clusterUrl, libpqEnv, pgProgram } from './pg-physical-engine.js';

/**
 * Continuous WAL streaming (`strata wal-receive NAME`): the cluster's write-ahead log received as
 * it is written, each completed segment archived as `wal-push` archives it, the segment in
 * progress archived as a partial every few seconds, so a lost machine loses seconds of commits
 * rather than up to a segment (or archive_timeout).
 *
 * Why `pg_receivewal` rather than the replication protocol spoken here: it is PostgreSQL's own
 * client of that protocol, of the server's version, and already does what is easy to get subtly
 * wrong: following timeline switches (and fetching their .history files), resuming from the files
 * of its folder, zero-padding the segment in progress to full size, and reporting its flush
 * position to a replication slot. Barman wraps it the same way (its `receive-wal`); WAL-G's
 * `wal-receive` speaks the protocol itself in Go, where a mature client library exists; node-pg
 * has no physical replication mode. What Strata adds around it is what pg_receivewal lacks: the
 * archive (compressed, encrypted, idempotent), partials shipped on a clock, and retries.
 *
 * Its folder (the spool) is private (0700) and persistent, not temporary: pg_receivewal reports a
 * segment flushed to the slot once it is fsynced there, and the server may then remove it, so a
 * segment received and not yet archived when this process is killed exists only in the spool. The
 * next run archives what is left there first, then pg_receivewal resumes from it.
 */

/** Where the archive is: the log archive's push, partial push and partial removal. */
export interface WalArchiveSink {
  push(name: string, bytes: Uint8Array): Promise<LogPushResult>;
  pushPartial(name: string, bytes: Uint8Array, receivedBytes: number): Promise<LogPushResult>;
  dropPartials(name: string): Promise<number>;
}

/** What `wal-receive` tells its operator. */
export type WalReceiveEvent =
  | { readonly kind: 'slot'; readonly slot: string; readonly created: boolean }
  | { readonly kind: 'streaming'; readonly attempt: number }
  | { readonly kind: 'segment'; readonly name: string; readonly status: 'stored' | 'present' }
  | { readonly kind: 'partial'; readonly name: string; readonly receivedBytes: number }
  | { readonly kind: 'disconnected'; readonly reason: string; readonly retryInMs: number }
  | { readonly kind: 'ship-failed'; readonly reason: string; readonly retryInMs: number };

export interface WalReceiveOptions {
  /** The private folder pg_receivewal writes into (created 0700); kept between runs. */
  readonly spool: string;
  /** The physical replication slot (created when missing). */
  readonly slot: string;
  /** How often the segment in progress is archived when it grew (ms). */
  readonly intervalMs: number;
  readonly archive: WalArchiveSink;
  readonly signal: AbortSignal;
  readonly onEvent?: (event: WalReceiveEvent) => void;
  /** The longest wait between reconnections (ms); default 60 s. */
  readonly maxBackoffMs?: number;
}

/** What a run did, when it stopped cleanly. */
export interface WalReceiveSummary {
  readonly slot: string;
  readonly segments: number;
  readonly partials: number;
  readonly reconnections: number;
}

const SEGMENT = /^[0-9A-F]{24}$/;
const HISTORY = /^[0-9A-F]{8}\.history$/;
const PARTIAL = /^([0-9A-F]{24})\.partial$/;
const SLOT = /^[a-z0-9_]{1,63}$/;

/** The default slot of a database entry: `strata_` and its name, as a slot name may be written. */
export function defaultSlotName(database: string): string {
  return `strata_${database.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`.slice(0, 63);
}

/** Checks what the server must allow, and makes the slot; every refusal named with its fix. */
async function prepare(target: PgTarget, slot: string, onEvent: (e: WalReceiveEvent) => void): Promise<{ major: number }> {
  const client = await connect(target, 'strata wal-receive');
  try {
    const row = (
      await client.query<{ allowed: boolean; wal_level: string; senders: string; version: string }>(
        `SELECT (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS allowed,
                current_setting('wal_level') AS wal_level, current_setting('max_wal_senders') AS senders,
                current_setting('server_version_num') AS version`,
      )
    ).rows[0]!;
    if (!row.allowed) {
      throw new StrataError('ACCESS_DENIED', `wal-receive: the user ${JSON.stringify(target.user)} may not stream WAL from ${target.safe}: give it the REPLICATION attribute (ALTER ROLE ${target.user} REPLICATION) and a replication line in pg_hba.conf`);
    }
    if (row.wal_level === 'minimal') throw new StrataError('USAGE', `wal-receive: ${target.safe} has wal_level = minimal, which cannot be streamed; set wal_level = replica and restart the server`);
    if (Number(row.senders) < 1) throw new StrataError('USAGE', `wal-receive: ${target.safe} has max_wal_senders = 0; set it to at least 2 and restart the server`);
    const slotRow = async () => (await client.query<{ slot_type: string; active: boolean }>('SELECT slot_type, active FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows[0];
    let existing = await slotRow();
    // The connection of a run that just ended (killed, or its network gone) may hold the slot a
    // moment longer, until the server notices.
    for (let i = 0; existing?.active && i < 20; i++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      existing = await slotRow();
    }
    if (existing?.slot_type === 'logical') throw new StrataError('USAGE', `wal-receive: the replication slot ${slot} of ${target.safe} is a logical slot; give another name with --slot`);
    if (existing?.active) throw new StrataError('DATABASE_LOCKED', `wal-receive: the replication slot ${slot} of ${target.safe} is in use by another connection (another wal-receive?); stop it, or give another slot with --slot`);
    if (!existing) {
      // Reserving WAL at once: the server keeps everything from this moment until it is received.
      await client.query('SELECT pg_create_physical_replication_slot($1, true)', [slot]);
    }
    onEvent({ kind: 'slot', slot, created: !existing });
    return { major: Math.floor(Number(row.version) / 10000) };
  } catch (err) {
    if (isStrataError(err)) throw err;
    const message = (err as Error).message;
    if (/permission denied|must be superuser/i.test(message)) throw new StrataError('ACCESS_DENIED', `wal-receive: ${target.safe} refused to create the replication slot ${slot}: ${message}`, { cause: err });
    throw new StrataError('IO', `wal-receive: preparing ${target.safe} failed: ${message}`, { cause: err });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** How much of a zero-padded segment holds data: up to its last byte that is not zero. */
export function receivedBytesOf(bytes: Uint8Array): number {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end -= 1;
  return end;
}

/**
 * Archives what the spool holds: completed segments and history files (then removes them, and the
 * partials of those segments), and the segment in progress as a partial when it changed.
 */
class SpoolShipper {
  readonly #options: WalReceiveOptions;
  #lastPartial: { name: string; sha256: string; mtimeMs: number; quiet: boolean } | undefined;
  #read = { mtimeMs: 0, quiet: false };
  segments = 0;
  partials = 0;

  constructor(options: WalReceiveOptions) {
    this.#options = options;
  }

  async ship(): Promise<void> {
    const names = (await fs.readdir(this.#options.spool)).sort();
    for (const name of names) {
      if (!SEGMENT.test(name) && !HISTORY.test(name)) continue;
      const file = path.join(this.#options.spool, name);
      const bytes = await fs.readFile(file);
      const result = await this.#options.archive.push(name, bytes);
      if (SEGMENT.test(name)) {
        await this.#options.archive.dropPartials(name);
        this.segments += 1;
      }
      this.#options.onEvent?.({ kind: 'segment', name, status: result.status });
      // Removed only once archived: a failure above leaves it for the next round (or run).
      await fs.rm(file, { force: true });
    }
    const partial = names.map((n) => PARTIAL.exec(n)).find((m): m is RegExpExecArray => m !== null);
    if (partial) {
      let bytes: Buffer;
      try {
        // Unchanged since a round that read it already quiet (an idle server): not read again. A
        // file written just before that read may be written again within the same coarse mtime
        // tick, so only a modification time well before the read proves nothing came after it.
        const mtimeMs = (await fs.stat(path.join(this.#options.spool, partial[0]))).mtimeMs;
        const last = this.#lastPartial;
        if (last !== undefined && last.name === partial[1] && last.mtimeMs === mtimeMs && last.quiet) return;
        this.#read = { mtimeMs, quiet: Date.now() - mtimeMs > 1000 };
        bytes = await fs.readFile(path.join(this.#options.spool, partial[0]));
      } catch (err) {
        // pg_receivewal renamed it (the segment completed) since the listing: the next round has it.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      if (this.#lastPartial !== undefined && this.#lastPartial.name === partial[1] && this.#lastPartial.sha256 === sha256) {
        this.#lastPartial = { ...this.#lastPartial, ...this.#read };
        return;
      }
      const receivedBytes = receivedBytesOf(bytes);
      if (receivedBytes === 0) return;
      const result = await this.#options.archive.pushPartial(partial[1]!, bytes, receivedBytes);
      this.#lastPartial = { name: partial[1]!, sha256, ...this.#read };
      if (result.status === 'stored') {
        this.partials += 1;
        this.#options.onEvent?.({ kind: 'partial', name: partial[1]!, receivedBytes });
      }
    }
  }
}

/**
 * pg_receivewal, run so that it ends when this process ends however it ends: a small shell holds
 * the read end of a pipe from us, and interrupts pg_receivewal (which then flushes and exits) when
 * the pipe closes, which it does when we exit, are killed, or close it to stop. Node cannot ask
 * Linux to signal a child when its parent dies, and an orphaned pg_receivewal would keep the slot
 * busy, refusing the next run.
 */
const WATCHED = `exec 3<&0
"$0" "$@" </dev/null &
child=$!
( read -r _ <&3; kill -INT "$child" 2>/dev/null ) &
watcher=$!
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"`;

function runReceiver(program: string, args: string[], env: NodeJS.ProcessEnv, signal: AbortSignal): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', WATCHED, program, ...args], { env, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const stop = (): void => {
      child.stdin.end();
    };
    signal.addEventListener('abort', stop, { once: true });
    child.stdin.on('error', () => undefined);
    child.on('error', (err) => {
      signal.removeEventListener('abort', stop);
      reject(new StrataError('TOOL_MISSING', `wal-receive: cannot run sh: ${err.message}`));
    });
    child.on('close', (code) => {
      signal.removeEventListener('abort', stop);
      resolve({ code: code ?? 1, stderr });
    });
  });
}


/** Refusals pg_receivewal reports that no retry mends. */
function permanentFailure(code: number, stderr: string, target: PgTarget): StrataError | undefined {
  // The shell's "command not found".
  if (code === 127 || code === 126) {
    return new StrataError('TOOL_MISSING', `wal-receive: pg_receivewal cannot be run (${stderr.trim().split('\n').at(-1) ?? 'not found'}); install the PostgreSQL client programs of the server's major version, or set STRATA_PG_BINDIR to their folder`);
  }
  if (/no pg_hba\.conf entry for replication connection/i.test(stderr)) {
    return new StrataError('ACCESS_DENIED', `wal-receive: ${target.safe} refuses replication connections from here for ${JSON.stringify(target.user)}: add a "host replication ${target.user} ..." line to pg_hba.conf and reload`);
  }
  if (/password authentication failed|authentication failed/i.test(stderr)) {
    return new StrataError('AUTH_FAILED', `wal-receive: authentication failed for user ${JSON.stringify(target.user)} on ${target.safe} (check the user and password)`);
  }
  if (/must be superuser or replication role|permission denied to start WAL sender/i.test(stderr)) {
    return new StrataError('ACCESS_DENIED', `wal-receive: the user ${JSON.stringify(target.user)} may not stream WAL from ${target.safe}: ALTER ROLE ${target.user} REPLICATION`);
  }
  if (/incompatible server version|could not (?:identify|determine) .*version/i.test(stderr)) {
    return new StrataError('TOOL_MISSING', `wal-receive: pg_receivewal does not fit ${target.safe}'s version: ${stderr.trim().split('\n').at(-1)}`);
  }
  return undefined;
}

/**
 * Streams the cluster's WAL into the archive until `signal` aborts, then archives what it has and
 * returns. A dropped connection is retried with backoff (1 s, doubling, at most `maxBackoffMs`);
 * a refusal that a retry cannot mend (permissions, authentication, a busy slot) throws.
 */
export async function receiveWal(locator: string, options: WalReceiveOptions): Promise<WalReceiveSummary> {
  const target = parseTarget(clusterUrl(locator));
  if (!SLOT.test(options.slot)) throw new StrataError('USAGE', `wal-receive: --slot ${JSON.stringify(options.slot)} is not a replication slot name (lower-case letters, digits and _, at most 63)`);
  const onEvent = options.onEvent ?? (() => undefined);
  await fs.mkdir(options.spool, { recursive: true, mode: 0o700 });
  await fs.chmod(options.spool, 0o700);
  const release = await lockSpool(options.spool);
  try {
    return await receiveInto(target, options, onEvent);
  } finally {
    await release();
  }
}

/** One wal-receive per spool: a pid file, taken over when its process is gone. */
async function lockSpool(spool: string): Promise<() => Promise<void>> {
  const file = path.join(spool, 'wal-receive.pid');
  for (let tries = 0; ; tries++) {
    try {
      await fs.writeFile(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => fs.rm(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || tries > 0) throw err;
      const pid = Number((await fs.readFile(file, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processRuns(pid)) {
        throw new StrataError('DATABASE_LOCKED', `wal-receive: another wal-receive (pid ${pid}) streams into ${spool}; stop it first`);
      }
      await fs.rm(file, { force: true });
    }
  }
}

async function receiveInto(target: PgTarget, options: WalReceiveOptions, onEvent: (e: WalReceiveEvent) => void): Promise<WalReceiveSummary> {
  const { major } = await prepare(target, options.slot, onEvent);
  const program = pgProgram('pg_receivewal', major);
  const shipper = new SpoolShipper(options);
  // What an earlier run received and did not archive goes first.
  await shipper.ship();
  const env: NodeJS.ProcessEnv = { ...libpqEnv(target), PGAPPNAME: `strata wal-receive ${options.slot}` };
  const args = ['--directory', options.spool, '--slot', options.slot, '--no-loop', '--no-password', '--verbose'];
  const maxBackoff = options.maxBackoffMs ?? 60_000;
  let reconnections = 0;
  let backoff = 1000;
  let shipFailures = 0;
  let attempt = 0;
  while (!options.signal.aborted) {
    attempt += 1;
    onEvent({ kind: 'streaming', attempt });
    const stopChild = new AbortController();
    const onAbort = (): void => stopChild.abort();
    options.signal.addEventListener('abort', onAbort, { once: true });
    const started = Date.now();
    let running = true;
    const receiver = runReceiver(program, args, env, stopChild.signal).finally(() => (running = false));
    // Ships on a clock while pg_receivewal runs; a failure to archive is retried, never fatal
    // (the slot keeps the server's WAL, the spool keeps what was received) except a conflict.
    let fatal: unknown;
    const shipping = (async () => {
      while (running && !options.signal.aborted) {
        await Promise.race([sleep(shipFailures > 0 ? Math.min(options.intervalMs * 2 ** shipFailures, maxBackoff) : options.intervalMs, options.signal), receiver.then(() => undefined, () => undefined)]);
        if (!running || options.signal.aborted) break;
        try {
          await shipper.ship();
          shipFailures = 0;
        } catch (err) {
          if (isStrataError(err, 'LOG_CONFLICT') || isStrataError(err, 'PASSPHRASE_WRONG') || isStrataError(err, 'KEY_MISSING')) {
            fatal = err;
            stopChild.abort();
            break;
          }
          shipFailures += 1;
          onEvent({ kind: 'ship-failed', reason: (err as Error).message, retryInMs: Math.min(options.intervalMs * 2 ** shipFailures, maxBackoff) });
        }
      }
    })();
    let outcome: { code: number; stderr: string };
    try {
      outcome = await receiver;
    } finally {
      options.signal.removeEventListener('abort', onAbort);
      await shipping;
    }
    if (fatal) throw fatal;
    if (options.signal.aborted) break;
    const permanent = permanentFailure(outcome.code, outcome.stderr, target);
    if (permanent) throw permanent;
    // A run that streamed for a while ended by a dropped connection: start the backoff again.
    if (Date.now() - started > 30_000) backoff = 1000;
    const reason = outcome.stderr.trim().split('\n').filter((l) => !/^pg_receivewal: (?:starting|finished|switched)/.test(l)).at(-1) ?? `pg_receivewal exited with status ${outcome.code}`;
    onEvent({ kind: 'disconnected', reason: redact(reason, target), retryInMs: backoff });
    reconnections += 1;
    await shipper.ship().catch(() => undefined);
    await sleep(backoff, options.signal);
    backoff = Math.min(backoff * 2, maxBackoff);
    // The slot may have been dropped while the server was away; it is made again (a gap, if the
    // server removed WAL meanwhile, then shows in verify and health).
    if (!options.signal.aborted) {
      try {
        await prepare(target, options.slot, () => undefined);
      } catch (err) {
        if (isStrataError(err, 'ACCESS_DENIED') || isStrataError(err, 'AUTH_FAILED')) throw err;
      }
    }
  }
  // Stopped: what pg_receivewal flushed on its way out is archived before returning.
  await shipper.ship();
  return { slot: options.slot, segments: shipper.segments, partials: shipper.partials, reconnections };
}

function redact(text: string, target: PgTarget): string {
  return target.password ? text.split(target.password).join('***') : text;
}
