import { StrataError, durationMs, parseDuration, resolveDatabase, sleepUnlessAborted } from '@strata/sdk';
import type { ReplicationEvent, ReplicationSummary } from '@strata/sdk';
import type { CommandContext } from './context.js';
import { printable } from './terminal.js';

/** Options of `strata replicate`. */
export interface ReplicateCommandOptions {
  readonly databases: readonly string[];
  readonly interval?: string;
  readonly baseEvery?: string;
  readonly compact?: string;
  readonly mirrorEvery?: string;
  readonly switchMode: boolean;
  /** --no-checkpoint-lock (ChangeCaptureOptions.leaveCheckpoints). */
  readonly leaveCheckpoints?: boolean;
  readonly verbose: boolean;
}

/**
 * The interval as people write it: seconds (`1`, `0.5`), `500ms`, or a duration (`2s`, `1min`).
 * Durations elsewhere have no milliseconds; an interval of a second or less needs them.
 */
export function parseInterval(text: string, option = '--interval'): number {
  const plain = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text);
  const ms = plain ? Number(plain[1]) * (plain[2] === 'ms' ? 1 : 1000) : parseDuration(text, option).ms;
  if (!Number.isFinite(ms) || ms < 50 || ms > 3_600_000) throw new StrataError('USAGE', `replicate: ${option} ${JSON.stringify(text)} must be between 50ms and 1h (e.g. 1, 0.5, 500ms, 5s)`);
  return ms;
}

/**
 * How often new segments go to the mirror. Each copy reads both catalogs, so not every interval:
 * a mirror is the copy that survives losing the primary, and ten seconds behind it is what that
 * costs.
 */
const DEFAULT_MIRROR_EVERY_MS = 10_000;

/** `--compact`: `off`, or window lengths separated by commas (`1min,1h`, `30s`). */
export function parseCompactionWindows(text: string): number[] {
  if (text.trim() === 'off') return [];
  const windows = text.split(',').map((part) => {
    const trimmed = part.trim();
    const plain = /^(\d+)(s)?$/.exec(trimmed);
    const ms = plain ? Number(plain[1]) * 1000 : durationMs(parseDuration(trimmed, '--compact'));
    if (!Number.isFinite(ms) || ms < 1000) throw new StrataError('USAGE', `replicate: --compact ${JSON.stringify(text)}: each window is a length of at least 1 s (e.g. 1min,1h), or write off`);
    return ms;
  });
  return windows.sort((a, b) => a - b);
}

/**
 * `strata replicate <db>...`: ships each database's committed transactions into the repository
 * until SIGINT or SIGTERM, then ships what it has and exits 0. Everything it says goes to stderr;
 * with --json one document with what each replication did is printed on stdout at the end.
 */
export async function replicateCommand(ctx: CommandContext, options: ReplicateCommandOptions, signal: AbortSignal): Promise<number> {
  if (options.databases.length === 0) throw new StrataError('USAGE', 'replicate: name the databases to replicate (see strata replicate --help)');
  const intervalMs = options.interval !== undefined ? parseInterval(options.interval) : 1000;
  const baseEveryMs = options.baseEvery !== undefined ? durationMs(parseDuration(options.baseEvery, '--base-every')) : undefined;
  if (baseEveryMs !== undefined && !(baseEveryMs >= 10_000)) throw new StrataError('USAGE', `replicate: --base-every ${JSON.stringify(options.baseEvery)} must be at least 10s`);
  const compactionWindowsMs = options.compact !== undefined ? parseCompactionWindows(options.compact) : undefined;
  const mirrorEveryMs = options.mirrorEvery === undefined ? DEFAULT_MIRROR_EVERY_MS : options.mirrorEvery.trim() === 'off' ? undefined : parseInterval(options.mirrorEvery, '--mirror-every');
  const targets = options.databases.map((arg) => resolveDatabase(arg, ctx.loaded.config));
  const names = new Set<string>();
  for (const t of targets) {
    if (names.has(t.name)) throw new StrataError('USAGE', `replicate: ${t.name} is named twice`);
    names.add(t.name);
  }
  const repo = await ctx.repository();
  await repo.unlock();
  // One database failing stops the others too: a replicator that runs half its databases would
  // look alive to whoever watches the process.
  const stop = new AbortController();
  const onStop = (): void => stop.abort();
  signal.addEventListener('abort', onStop, { once: true });
  const say = (line: string): void => {
    process.stderr.write(`${line}\n`);
  };
  const onEvent = (event: ReplicationEvent): void => {
    switch (event.kind) {
      case 'resumed':
        say(`replicate ${event.database}: continuing the segments after ${event.base} (${event.sequence} so far); shipping every ${intervalMs / 1000} s`);
        break;
      case 'base':
        say(`replicate ${event.database}: took ${event.base.id} (${event.base.type}) as the base of new segments (${event.reason}); shipping every ${intervalMs / 1000} s`);
        break;
      case 'lost':
        say(`replicate ${event.database}: cannot continue its chain of segments (${printable(event.reason)}); taking a new base`);
        break;
      case 'retry':
        say(`replicate ${event.database}: could not write a segment (${printable(event.error.message)}); trying again with the next one`);
        break;
      case 'compacted':
        if (options.verbose) say(`replicate ${event.database}: merged ${event.parts} segments into one (sequences ${event.segment.merged?.firstSequence}-${event.segment.sequence}, ${event.segment.transactions} transactions)`);
        break;
      case 'compaction-failed':
        say(`replicate ${event.database}: could not merge segments (${printable(event.error.message)}); shipping goes on, merging is tried again in a minute`);
        break;
      case 'holding':
        say(`replicate ${event.database}: ${event.held.transactions} transactions (${(event.held.bytes / 1048576).toFixed(1)} MiB) wait to be shipped, the most it holds; reading no more of the log until they are (the database's log keeps the rest)`);
        break;
      case 'segment':
        mirroring?.shipped();
        if (options.verbose) say(`replicate ${event.database}: segment ${event.segment.sequence} (${event.segment.transactions} transactions, ${event.segment.storedBytes} bytes), shipped ${(event.lagMs / 1000).toFixed(2)} s after the last was seen committed`);
        break;
    }
  };
  const mirroring = repo.mirrorLocation !== undefined && mirrorEveryMs !== undefined ? mirrorSegments(repo, mirrorEveryMs, stop.signal, say) : undefined;
  let results: PromiseSettledResult<ReplicationSummary>[];
  try {
    results = await Promise.allSettled(
      targets.map(async (t) => {
        try {
          return await repo.replicate(t.locator, {
            database: t.name,
            intervalMs,
            ...(baseEveryMs !== undefined ? { baseEveryMs } : {}),
            ...(compactionWindowsMs !== undefined ? { compactionWindowsMs } : {}),
            switchMode: options.switchMode,
            ...(options.leaveCheckpoints ? { leaveCheckpoints: true } : {}),
            signal: stop.signal,
            onEvent,
          });
        } catch (err) {
          stop.abort();
          throw err;
        }
      }),
    );
  } finally {
    signal.removeEventListener('abort', onStop);
    stop.abort();
    await mirroring?.stopped();
  }
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const done = results.filter((r): r is PromiseFulfilledResult<ReplicationSummary> => r.status === 'fulfilled').map((r) => r.value);
  for (const s of done) say(`replicate ${s.database}: stopped; shipped ${s.transactions} transactions in ${s.segments} segments${s.compactions > 0 ? `, merged ${s.compactions} times` : ''}${s.bases.length > 0 ? `, took ${s.bases.length} base(s)` : ''}`);
  if (failed) throw failed.reason;
  if (ctx.json) ctx.printJson({ replicated: done });
  return 0;
}

/**
 * Copies what replication shipped to the mirror every `everyMs` while it runs, and once more when
 * it stops. Only the first copy, failures, and the first copy after a failure are journaled: a
 * `mirror` entry every ten seconds would drown the journal, and `strata health` needs only the
 * newest outcome.
 */
function mirrorSegments(
  repo: { syncMirror(options: { signal?: AbortSignal; journalSuccess?: boolean }): Promise<{ ok: boolean; mirror: string; error?: { message: string } }> },
  everyMs: number,
  stop: AbortSignal,
  say: (line: string) => void,
): { shipped(): void; stopped(): Promise<void> } {
  let pending = false;
  let lastOk: boolean | undefined;
  const sync = async (): Promise<void> => {
    pending = false;
    const result = await repo.syncMirror({ journalSuccess: lastOk !== true });
    if (!result.ok && lastOk !== false) say(`replicate: could not copy to the mirror ${printable(result.mirror)} (${printable(result.error?.message ?? 'unknown error')}); trying again in ${everyMs / 1000} s`);
    if (result.ok && lastOk === false) say(`replicate: the mirror ${printable(result.mirror)} has every segment again`);
    lastOk = result.ok;
  };
  const loop = (async () => {
    while (!stop.aborted) {
      await sleepUnlessAborted(everyMs, stop);
      if (pending && !stop.aborted) await sync().catch(() => undefined);
    }
  })();
  return {
    shipped: () => {
      pending = true;
    },
    stopped: async () => {
      await loop;
      // What the last interval shipped goes too, so a clean stop leaves the mirror complete.
      if (pending) await sync().catch(() => undefined);
    },
  };
}
