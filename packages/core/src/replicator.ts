import type { BackupRecord, SegmentRecord } from './catalog.js';
import { linkIdOf, readCatalogContents } from './catalog.js';
import type { BackupWriter } from './backup-writer.js';
import type { CapturedTransaction, ChangeFeed, ChangePosition, ChangeRead, Engine } from './engine.js';
import { StrataError, isStrataError, sleepUnlessAborted as sleep, wrapError } from './errors.js';
import { validateDatabaseName } from './naming.js';
import type { RepositoryContext } from './repository-context.js';
import { chainBreak, commitsIn, mergeSegments, writeSegment } from './segments.js';

/** Options for {@link Repository.replicate}. */
export interface ReplicateOptions {
  /** The name the database's backups and segments are filed under. */
  readonly database: string;
  /** Segments are cut at least this often (ms; default 1000): a crash loses at most about this much. */
  readonly intervalMs?: number;
  /** A segment is cut early when its transactions reach this many bytes (default 16 MiB). */
  readonly maxSegmentBytes?: number;
  /**
   * While storage fails, at most about this many bytes of read transactions are held in memory
   * (default 4 segments' worth, 64 MiB): past it the feed is not read until they are shipped, and
   * the database's own log holds the rest.
   */
  readonly maxHeldBytes?: number;
  /** Switch the database into the mode capture needs instead of refusing it. */
  readonly switchMode?: boolean;
  /** See ChangeCaptureOptions.leaveCheckpoints. */
  readonly leaveCheckpoints?: boolean;
  /**
   * A new base restore point is taken when the chain's is this old (ms; default 24 h), so a restore
   * replays at most this much and retention can drop old chains' segments.
   */
  readonly baseEveryMs?: number;
  /**
   * Compaction: the segments of each closed window of these lengths (ms, shortest first; default a
   * minute, then an hour) are merged into one. An empty list turns compaction off.
   */
  readonly compactionWindowsMs?: readonly number[];
  /** Stops replication: what was captured is shipped, then the call returns. */
  readonly signal: AbortSignal;
  readonly onEvent?: (event: ReplicationEvent) => void;
}

/** What a running replication reports. */
export type ReplicationEvent =
  | { readonly kind: 'resumed'; readonly database: string; readonly base: string; readonly sequence: number }
  | { readonly kind: 'base'; readonly database: string; readonly base: BackupRecord; readonly reason: string }
  | { readonly kind: 'segment'; readonly database: string; readonly segment: SegmentRecord; readonly lagMs: number }
  | { readonly kind: 'retry'; readonly database: string; readonly error: { readonly code: string; readonly message: string }; readonly held: { readonly transactions: number; readonly bytes: number } }
  /** `maxHeldBytes` wait to be shipped (storage fails, or is slower than the log grows): the feed is not read until they are. */
  | { readonly kind: 'holding'; readonly database: string; readonly held: { readonly transactions: number; readonly bytes: number } }
  | { readonly kind: 'compacted'; readonly database: string; readonly segment: SegmentRecord; readonly parts: number }
  | { readonly kind: 'compaction-failed'; readonly database: string; readonly error: { readonly code: string; readonly message: string } }
  | { readonly kind: 'lost'; readonly database: string; readonly reason: string };

/** What a replication did, when it stopped. */
export interface ReplicationSummary {
  readonly database: string;
  readonly segments: number;
  readonly transactions: number;
  /** Merges compaction committed. */
  readonly compactions: number;
  /** Restore points taken as bases (when there was none to continue, or continuity was lost). */
  readonly bases: readonly string[];
}

interface ChainState {
  readonly base: BackupRecord;
  readonly sequence: number;
  readonly previous: string | null;
  readonly from: ChangePosition;
}

/** Errors a later attempt cannot fix: replication stops with them instead of retrying. */
const FATAL = new Set(['CHAIN_BROKEN', 'KEY_MISSING', 'PASSPHRASE_WRONG', 'PASSPHRASE_MISSING', 'USAGE', 'REPO_VERSION_UNSUPPORTED', 'ACCESS_DENIED', 'INTERNAL']);

export const DEFAULT_COMPACTION_WINDOWS_MS: readonly number[] = [60_000, 3_600_000];
export const DEFAULT_BASE_EVERY_MS = 24 * 3_600_000;
/**
 * The slot compaction joins transactions within (SegmentCondensing): at most half the interval,
 * so that a transaction committed an interval before a restore's target, seen committed a little
 * after its commit, is still replayed (its slot ends before the target). From 500 ms halving, so
 * that the slots of a run with a shorter interval nest inside those of a longer one. (A later run
 * with a longer interval merges older segments in its wider slots: restores into them are then
 * exact to its slot, which is still at most half of its interval and 500 ms.)
 */
export function condenseWithinMs(intervalMs: number): number {
  let within = 500;
  while (within > intervalMs / 2) within /= 2;
  return within;
}

/** After a failed merge, compaction waits this long before trying again. */
const COMPACTION_BACKOFF_MS = 60_000;

/**
 * The next segments to merge in one chain (sorted by sequence), or undefined: for each window
 * length, shortest first, the segments whose last transaction falls in the same closed window
 * (one that ended at least `graceMs` before `now`: by then the segment holding its last
 * transactions is written), when there are two or more of them. A segment written later still
 * (a slow store) lands in a merged window and is merged with it the next time.
 * Shorter windows go first, so an hour is merged from its minutes, never from thousands of
 * seconds at once.
 */
export function compactionGroup(segments: readonly SegmentRecord[], windowsMs: readonly number[], now: number, graceMs: number): SegmentRecord[] | undefined {
  for (const window of windowsMs) {
    const closedBefore = Math.floor((now - graceMs) / window) * window;
    let group: SegmentRecord[] = [];
    let groupWindow: number | undefined;
    for (const segment of segments) {
      const last = Date.parse(segment.lastAt);
      if (!(last < closedBefore)) break;
      const slot = Math.floor(last / window);
      if (slot !== groupWindow) {
        if (group.length >= 2) return group;
        group = [];
        groupWindow = slot;
      }
      group.push(segment);
    }
    if (group.length >= 2) return group;
  }
  return undefined;
}


/**
 * Continuous protection of one database: its engine's {@link ChangeFeed} is read every tenth of an
 * interval, the transactions are shipped as segments at least once per interval, each segment
 * committed before the next is written. The chain continues the database's last chain of segments
 * when the log still holds everything after its end; otherwise, and whenever the feed loses its
 * place, a new base restore point is taken (an incremental on the database's chain when it has
 * one) at exactly the position the next segments start from.
 */
export class Replicator {
  readonly #ctx: RepositoryContext;
  readonly #writer: BackupWriter;

  constructor(ctx: RepositoryContext, writer: BackupWriter) {
    this.#ctx = ctx;
    this.#writer = writer;
  }

  async run(locator: string, options: ReplicateOptions): Promise<ReplicationSummary> {
    const engine = this.#ctx.engineFor(locator);
    const capture = engine.changeCapture;
    if (!capture) throw new StrataError('USAGE', `replicate: ${engine.display.name} databases cannot be replicated continuously; schedule \`strata backup --type incremental\` instead`);
    const join = capture.join?.bind(capture);
    const database = validateDatabaseName(options.database);
    const intervalMs = options.intervalMs ?? 1000;
    if (!Number.isFinite(intervalMs) || intervalMs < 50 || intervalMs > 3_600_000) throw new StrataError('USAGE', 'replicate: the interval must be between 0.05 s and 1 hour');
    const maxBytes = options.maxSegmentBytes ?? 16 * 1024 * 1024;
    const maxHeld = options.maxHeldBytes ?? 4 * maxBytes;
    if (!(maxHeld > 0)) throw new StrataError('USAGE', 'replicate: the most bytes held while storage fails must be positive');
    const pollMs = Math.min(250, Math.max(20, Math.floor(intervalMs / 10)));
    const baseEveryMs = options.baseEveryMs ?? DEFAULT_BASE_EVERY_MS;
    if (!(baseEveryMs >= 10_000)) throw new StrataError('USAGE', 'replicate: a new base can be taken at most every 10 s');
    const windowsMs = [...(options.compactionWindowsMs ?? DEFAULT_COMPACTION_WINDOWS_MS)].sort((a, b) => a - b);
    if (windowsMs.some((w) => !(w >= 1000))) throw new StrataError('USAGE', 'replicate: compaction windows must be at least a second long');
    const signal = options.signal;
    const emit = (event: ReplicationEvent): void => options.onEvent?.(event);
    await this.#ctx.unlock();
    // New segments go under the current data key: a passphrase whose key file lacks it stops here.
    if (this.#ctx.vault.section.profile !== 'none') this.#ctx.vault.current('replicate');
    const op = await this.#ctx.journal.begin('replicate', { database });
    const summary = { database, segments: 0, transactions: 0, compactions: 0, bases: [] as string[] };
    let feed: ChangeFeed | undefined;
    let compacting: Promise<void> | undefined;
    const stopCompaction = new AbortController();
    try {
      const continued = await this.#chainToContinue(engine, locator, database);
      // Every feed of this run is opened so, the ones a new base starts over with (startOver) too.
      const openOptions = { ...(options.switchMode ? { switchMode: true } : {}), ...(options.leaveCheckpoints ? { leaveCheckpoints: true } : {}) };
      feed = await capture.open(locator, { ...(continued ? { resume: continued.from } : {}), ...openOptions });

      let chain: ChainState | undefined;
      let buffer: CapturedTransaction[] = [];
      let bufferBytes = 0;
      // Counted as read, before condense: how far the log went on since maintain() last ran.
      let readSinceMaintained = 0;
      // The segment being written: back in the buffer if the write fails, so it counts.
      let inFlight = { transactions: 0, bytes: 0 };
      let failure: unknown;
      // Set when a prune removed the base the chain grows from: the next segment needs a new one.
      let baseGone: string | undefined;
      // One job at a time (a base, or a segment), so that segments are written in order: a cut
      // while one is being written waits, and the next cut takes everything read meanwhile.
      let busy: Promise<void> | undefined;
      // Until the base's snapshot is taken the feed must stay where it is (maintain() moves it on).
      let snapshotTaken = true;
      // The committed segments of the chains this run grows, by base: what compaction merges. Only
      // this process adds to them; a prune that removes some is noticed when a merge is refused.
      const chains = new Map<string, SegmentRecord[]>();
      // Compaction runs beside the cuts (both commit under the repository lock), so a long merge
      // never delays shipping; stopping aborts it, which leaves nothing behind.
      let compactAfter = 0;
      // Chains of earlier runs too: a run killed before it merged its last windows left them.
      for (const [base, segments] of continued?.chains ?? []) chains.set(base, [...segments]);
      const compact = (): void => {
        if (compacting || windowsMs.length === 0 || Date.now() < compactAfter) return;
        const now = Date.now();
        let group: SegmentRecord[] | undefined;
        for (const segments of chains.values()) if ((group = compactionGroup(segments, windowsMs, now, 2 * intervalMs + 1000))) break;
        if (!group) {
          compactAfter = now + 1000;
          return;
        }
        const parts = group;
        compacting = mergeSegments(this.#ctx, parts, {
          ...(engine.handRecovery?.changes ? { readme: engine.handRecovery.changes } : {}),
          ...(join ? { condense: { withinMs: condenseWithinMs(intervalMs), join } } : {}),
          signal: stopCompaction.signal,
        })
          .then((merged) => {
            const list = chains.get(merged.base);
            const first = list?.indexOf(parts[0]!) ?? -1;
            if (list && first >= 0 && list[first + parts.length - 1] === parts.at(-1)) list.splice(first, parts.length, merged);
            summary.compactions++;
            emit({ kind: 'compacted', database, segment: merged, parts: parts.length });
          })
          .catch(async (err: unknown) => {
            if (stopCompaction.signal.aborted) return;
            const e = isStrataError(err) ? err : wrapError(`compact ${database}`, err);
            emit({ kind: 'compaction-failed', database, error: { code: e.code, message: e.message } });
            compactAfter = Date.now() + COMPACTION_BACKOFF_MS;
            // The catalog is the truth: a prune may have removed segments (or the base) meanwhile.
            const contents = await readCatalogContents(this.#ctx.storage).catch(() => undefined);
            if (contents) for (const base of [...chains.keys()]) chains.set(base, contents.segments.filter((seg) => seg.base === base));
          })
          .finally(() => {
            compacting = undefined;
          });
      };

      const run = (job: () => Promise<void>): void => {
        busy = job()
          .catch((err: unknown) => {
            failure ??= err;
          })
          .finally(() => {
            busy = undefined;
          });
      };
      const idle = async (): Promise<void> => {
        while (busy) await busy;
      };
      const takeBase = (current: ChangeFeed, reason: string): void => {
        snapshotTaken = false;
        run(async () => {
          try {
            const base = await this.#writer.backup(locator, {
              database,
              type: 'incremental',
              autoFull: true,
              time: new Date(current.positionAt),
              label: 'replication base',
              mirror: false,
              snapshotAt: {
                position: current.position,
                take: async (snapshotOptions) => {
                  try {
                    return await current.snapshot(snapshotOptions);
                  } finally {
                    snapshotTaken = true;
                  }
                },
              },
            });
            chain = { base, sequence: 0, previous: null, from: current.position };
            chains.set(base.id, []);
            summary.bases.push(base.id);
            emit({ kind: 'base', database, base, reason });
          } finally {
            snapshotTaken = true;
          }
        });
      };
      /** Starts writing what the buffer holds as the next segment, unless a job is running. */
      const cut = (): void => {
        if (busy || buffer.length === 0 || !chain || baseGone) return;
        const transactions = buffer;
        const state = chain;
        inFlight = { transactions: commitsIn(buffer), bytes: bufferBytes };
        buffer = [];
        bufferBytes = 0;
        run(async () => {
          try {
            const segment = await writeSegment(this.#ctx, {
              database,
              engine: engine.kind,
              base: state.base,
              sequence: state.sequence + 1,
              previous: state.previous,
              from: state.from,
              transactions,
              ...(engine.handRecovery?.changes ? { readme: engine.handRecovery.changes } : {}),
            });
            chain = { base: state.base, sequence: segment.sequence, previous: segment.id, from: segment.to };
            chains.get(state.base.id)?.push(segment);
            summary.segments++;
            summary.transactions += commitsIn(transactions);
            emit({ kind: 'segment', database, segment, lagMs: Date.now() - transactions.at(-1)!.observedAt });
          } catch (err) {
            if (isStrataError(err, 'CHAIN_BROKEN') && (err.details as { baseRemoved?: boolean } | undefined)?.baseRemoved) {
              baseGone = err.message;
              return;
            }
            if (!isStrataError(err) || FATAL.has(err.code)) throw err;
            // Storage trouble (a full disk, a network error): the transactions go back ahead of
            // those read since, for the next cut; nothing is lost while the log holds them.
            buffer = [...transactions, ...buffer];
            bufferBytes += transactions.reduce((sum, t) => sum + t.bytes.byteLength, 0);
            emit({ kind: 'retry', database, error: { code: err.code, message: err.message }, held: { transactions: commitsIn(buffer), bytes: bufferBytes } });
          } finally {
            inFlight = { transactions: 0, bytes: 0 };
          }
        });
      };
      /** Ships everything buffered (a few attempts when storage fails), then waits until it is written. */
      const flush = async (): Promise<void> => {
        for (let attempt = 0; attempt < 5 && failure === undefined && !baseGone; attempt++) {
          await idle();
          if (buffer.length === 0 || failure !== undefined || baseGone) break;
          cut();
          await idle();
          if (buffer.length === 0) break;
          await sleep(500 * (attempt + 1), new AbortController().signal);
        }
      };
      const take = (read: readonly CapturedTransaction[]): void => {
        for (const t of read) readSinceMaintained += t.bytes.byteLength;
        // Transactions seen committed at the same moment are one moment to a restore: an engine may ship them in fewer bytes.
        const transactions = read.length > 1 && feed?.condense ? feed.condense(read) : read;
        for (const t of transactions) {
          buffer.push(t);
          bufferBytes += t.bytes.byteLength;
        }
      };
      /**
       * Starts over where the log is now, with a new base: what the buffer holds is in that base.
       * `lost` says why the chain could not go on; without it the chain was complete (a new base
       * on schedule), and ends where it was flushed.
       */
      const startOver = async (reason: string, lost = true): Promise<void> => {
        if (lost) emit({ kind: 'lost', database, reason });
        await idle();
        await feed!.close();
        feed = undefined;
        buffer = [];
        bufferBytes = 0;
        chain = undefined;
        baseGone = undefined;
        // A feed's position and snapshot are where it was opened: a new base needs a new feed.
        feed = await capture.open(locator, openOptions);
        takeBase(feed, reason);
      };

      if (feed.resumed && continued) {
        chain = { base: continued.base, sequence: continued.sequence, previous: continued.previous, from: continued.from };
        emit({ kind: 'resumed', database, base: continued.base.id, sequence: continued.sequence });
      } else {
        takeBase(feed, continued ? 'the database log no longer continues the last segment' : 'no chain of segments to continue');
      }

      let lastCut = Date.now();
      let lastMaintained = Date.now();
      let holding = false;
      while (!signal.aborted && failure === undefined) {
        await sleep(pollMs, signal);
        // Memory stays bounded while storage fails (or the log holds a long backlog): a read takes
        // no more than the room left, and past the limit the feed stays where it is (the log is
        // not recycled past it) until the held transactions are shipped.
        const full = bufferBytes + inFlight.bytes >= maxHeld;
        if (full && !holding) emit({ kind: 'holding', database, held: { transactions: commitsIn(buffer) + inFlight.transactions, bytes: bufferBytes + inFlight.bytes } });
        holding = full;
        if (full) feed.observe?.();
        const read: ChangeRead = full ? { transactions: [] } : await feed.read({ maxBytes: maxHeld - bufferBytes - inFlight.bytes });
        take(read.transactions);
        let lost = read.lost;
        // maintain() reads the rest of the log before it lets it be recycled: only once it was all read.
        // Once per interval, and at each segment's worth read: a busy database cuts segments by size
        // more often than once per interval, and its log would otherwise grow without end (the
        // application's writes then go to a file that keeps growing, which slows them down).
        const maintainDue = Date.now() - lastMaintained >= intervalMs || readSinceMaintained >= maxBytes;
        if (!full && !read.more && !lost && maintainDue && snapshotTaken) {
          lastMaintained = Date.now();
          readSinceMaintained = 0;
          const maintained = await feed.maintain({ maxBytes: maxHeld - bufferBytes - inFlight.bytes });
          take(maintained.transactions);
          lost = maintained.lost;
        }
        if (lost) {
          // What was read is good: it goes to the old chain; then a new base where the log is now.
          await flush();
          if (failure !== undefined) break;
          await startOver(lost);
          lastCut = Date.now();
          continue;
        }
        if (baseGone) {
          await startOver(baseGone);
          lastCut = Date.now();
          continue;
        }
        // The chain is old enough (and has grown since its base): what was read goes to it, then a
        // new base where the log is now. A database nobody writes to keeps its base: the new one
        // waits for the next change (taken when nothing changed since, it would restore the same
        // database as the chain's end, and only move the point-in-time window past the segments).
        if (chain && chain.sequence > 0 && buffer.length > 0 && !busy && snapshotTaken && Date.now() - Date.parse(chain.base.createdAt) >= baseEveryMs) {
          await flush();
          if (failure !== undefined) break;
          if (buffer.length === 0 && !baseGone) {
            await startOver(`the chain's base is older than ${baseEveryMs >= 3_600_000 ? `${+(baseEveryMs / 3_600_000).toFixed(1)} h` : `${Math.round(baseEveryMs / 1000)} s`}`, false);
            lastCut = Date.now();
            continue;
          }
        }
        if (Date.now() - lastCut >= intervalMs || bufferBytes >= maxBytes) {
          lastCut = Date.now();
          cut();
        }
        compact();
      }
      stopCompaction.abort();
      await compacting;
      compacting = undefined;
      if (failure === undefined) {
        // Stopping: what the log holds now goes into last segments, a limit's worth at a time;
        // if storage fails meanwhile, the log keeps the rest for the next run.
        for (;;) {
          const last = await feed.read({ maxBytes: Math.max(1, maxHeld - bufferBytes - inFlight.bytes) });
          take(last.transactions);
          await flush();
          if (!last.more || buffer.length > 0 || failure !== undefined || baseGone) break;
        }
      }
      await idle();
      if (failure !== undefined) throw failure;
      if (buffer.length > 0) throw new StrataError('IO', `replicate ${database}: ${commitsIn(buffer)} transaction(s) could not be shipped before stopping; the database still holds them and the next \`strata replicate\` ships them`);
      await op.complete({ details: { segments: summary.segments, transactions: summary.transactions, bases: summary.bases } });
      return summary;
    } catch (err) {
      const wrapped = isStrataError(err) ? err : wrapError(`replicate ${database}`, err);
      await op.fail(wrapped).catch(() => undefined);
      throw wrapped;
    } finally {
      stopCompaction.abort();
      await compacting;
      await feed?.close().catch(() => undefined);
    }
  }

  /** The database's newest chain of segments from this source, if its base has a position: base, tip and where it ended. */
  async #chainToContinue(engine: Engine, locator: string, database: string): Promise<(ChainState & { chains: Map<string, SegmentRecord[]> }) | undefined> {
    const contents = await readCatalogContents(this.#ctx.storage);
    if (!contents) return undefined;
    const source = engine.describe(locator);
    const bases = contents.backups.filter((b) => b.database === database && b.changePosition && b.engine === engine.kind && b.source === source);
    const base = bases.sort((a, b) => a.createdAt.localeCompare(b.createdAt)).at(-1);
    if (!base) return undefined;
    const segments = contents.segments.filter((s) => s.base === base.id);
    // A chain with a break cannot be continued: what follows the break would be unreachable.
    if (chainBreak(base, segments)) return undefined;
    const tip = segments.at(-1);
    // Every unbroken chain of these bases, for compaction.
    const chains = new Map<string, SegmentRecord[]>();
    for (const b of bases) {
      const mine = contents.segments.filter((s) => s.base === b.id);
      if (b.id === base.id || !chainBreak(b, mine)) chains.set(b.id, mine);
    }
    return { base, chains, sequence: tip?.sequence ?? 0, previous: tip ? linkIdOf(tip) : null, from: tip?.to ?? base.changePosition!, };
  }
}
