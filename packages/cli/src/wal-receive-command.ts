import * as path from 'node:path';
import { StrataError, clusterUrl, defaultSlotName, ownEntry, parseTarget, durationMs, parseDuration, receiveWal, resolveDatabase, validateDatabaseName, walFileCheck } from '@strata/sdk';
import type { Repository, WalReceiveEvent, WalReceiveSummary } from '@strata/sdk';
import type { CommandContext } from './context.js';
import { stateFolder } from './state-folder.js';
import { printable } from './terminal.js';

/** Options of `strata wal-receive`. */
export interface WalReceiveCommandOptions {
  readonly database: string | undefined;
  readonly slot?: string;
  readonly interval?: string;
  readonly spool?: string;
  readonly verbose: boolean;
}

/** `--interval`: seconds (`5`, `0.5`), `500ms`, or a duration (`10s`, `1min`); 200 ms to 10 min. */
function parseShipInterval(text: string): number {
  const plain = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text);
  const ms = plain ? Number(plain[1]) * (plain[2] === 'ms' ? 1 : 1000) : durationMs(parseDuration(text, 'wal-receive: --interval'));
  if (!Number.isFinite(ms) || ms < 200 || ms > 600_000) throw new StrataError('USAGE', `wal-receive: --interval ${JSON.stringify(text)} must be between 200ms and 10min (e.g. 5, 0.5, 2s)`);
  return ms;
}

/**
 * `strata wal-receive NAME`: streams a physical cluster's WAL into the repository until SIGINT or
 * SIGTERM (then archives what it received and exits 0). Lines for the operator go to stderr; with
 * --json one document with what the run did is printed on stdout at the end. The run is one
 * journal operation (RUNNING until it stops; a killed run reads as interrupted).
 */
export async function walReceiveCommand(ctx: CommandContext, options: WalReceiveCommandOptions, signal: AbortSignal): Promise<number> {
  if (options.database === undefined) throw new StrataError('USAGE', 'wal-receive: name the physical entry of strata.config.json whose WAL to stream');
  const database = validateDatabaseName(options.database);
  const entry = ownEntry(ctx.loaded.config.databases, database);
  if (!entry || entry.method !== 'physical') {
    throw new StrataError('USAGE', `wal-receive: ${database} is not a physical PostgreSQL entry of strata.config.json (add { "url": "postgres://...", "method": "physical" } under "databases")`);
  }
  const { locator } = resolveDatabase(database, ctx.loaded.config);
  // A URL that is not one is a usage error before anything is opened or journaled.
  parseTarget(clusterUrl(locator));
  const intervalMs = options.interval !== undefined ? parseShipInterval(options.interval) : 5000;
  const slot = options.slot ?? defaultSlotName(database);
  const spool = path.resolve(options.spool ?? path.join(stateFolder(), 'wal-receive', database));
  const repo = await ctx.repository();
  // The passphrase is checked before anything streams: a wrong one is exit 4 at once.
  await repo.unlock();
  const say = (line: string): void => {
    process.stderr.write(`wal-receive ${database}: ${line}\n`);
  };
  const onEvent = (event: WalReceiveEvent): void => {
    switch (event.kind) {
      case 'slot':
        say(`${event.created ? 'created the' : 'using the'} replication slot ${event.slot} (the server keeps its WAL until it is received; drop the slot with pg_drop_replication_slot('${event.slot}') if you stop streaming for good)`);
        break;
      case 'streaming':
        if (event.attempt === 1) say(`streaming into ${spool}; the segment in progress is archived every ${intervalMs / 1000} s when it grew`);
        else say('connected again, streaming');
        break;
      case 'segment':
        if (options.verbose) say(`archived ${event.name}${event.status === 'present' ? ' (already archived)' : ''}`);
        break;
      case 'partial':
        if (options.verbose) say(`archived ${event.receivedBytes} bytes of ${event.name} so far`);
        break;
      case 'disconnected':
        say(`the connection ended (${printable(event.reason)}); trying again in ${(event.retryInMs / 1000).toFixed(0)} s`);
        break;
      case 'ship-failed':
        say(`could not archive (${printable(event.reason)}); the received WAL waits in ${spool}, trying again in ${(event.retryInMs / 1000).toFixed(0)} s`);
        break;
    }
  };
  const summary = await streamClusterWal(repo, database, locator, { spool, slot, intervalMs, signal, onEvent, say });
  say(`stopped; archived ${summary.segments} segment(s) and ${summary.partials} partial(s)${summary.reconnections > 0 ? `, reconnected ${summary.reconnections} time(s)` : ''}; the slot ${slot} stays, so the next run continues where this one stopped`);
  if (ctx.json) ctx.printJson({ database, ...summary, spool });
  return 0;
}

/** What {@link streamClusterWal} needs besides the repository and the entry. */
export interface ClusterWalStreamOptions {
  readonly spool: string;
  readonly slot: string;
  readonly intervalMs: number;
  readonly signal: AbortSignal;
  readonly onEvent: (event: WalReceiveEvent) => void;
  /** A line for the operator (a failing mirror). */
  readonly say: (line: string) => void;
}

/**
 * Streams a physical entry's WAL into the repository (and its mirror) until `signal` fires: the
 * work of `strata wal-receive`, also run by the daemon's `replicate` job for a physical entry. One
 * journal operation for the whole run.
 */
export async function streamClusterWal(repo: Repository, database: string, locator: string, options: ClusterWalStreamOptions): Promise<WalReceiveSummary> {
  const { spool, slot, intervalMs, signal, onEvent, say } = options;
  // The mirror gets each file as the repository does; a failure is said once until it works again.
  let mirrorOk = true;
  const mirrorLog = async (name: string, bytes: Uint8Array, receivedBytes?: number): Promise<void> => {
    const mirrored = await repo.mirrorLog(database, name, bytes, receivedBytes !== undefined ? { receivedBytes } : {});
    if (mirrored && !mirrored.ok && mirrorOk) say(`${mirrored.error!.message}; archiving goes on, the next backup copies what the mirror lacks`);
    if (mirrored) mirrorOk = mirrored.ok;
  };
  const op = await repo.journal.begin('wal-receive', { database, details: { slot } });
  try {
    const summary = await receiveWal(locator, {
      spool,
      slot,
      intervalMs,
      signal,
      onEvent,
      archive: {
        push: async (name, bytes) => {
          // Checked as wal-push checks what it stores (walFileCheck): a segment streamed from
          // another cluster than the archive's (the entry's URL changed) is refused, not stored.
          const result = await repo.logArchive.push(database, name, bytes, { check: walFileCheck });
          await mirrorLog(name, bytes);
          return result;
        },
        pushPartial: async (name, bytes, received) => {
          const result = await repo.logArchive.pushPartial(database, name, bytes, received);
          if (result.status === 'stored') await mirrorLog(name, bytes, received);
          return result;
        },
        dropPartials: (name) => repo.logArchive.dropPartials(database, name),
      },
    });
    await op.complete({ details: { slot, segments: summary.segments, partials: summary.partials, reconnections: summary.reconnections } });
    return summary;
  } catch (err) {
    await op.fail(err).catch(() => undefined);
    throw err;
  }
}
