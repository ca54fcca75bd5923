import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { firstSequenceOf, linkIdOf, readCatalogContents, writeCatalog } from './catalog.js';
import type { BackupRecord, CatalogContents, SegmentMerge, SegmentRecord } from './catalog.js';
import { getCodec } from './compression.js';
import type { CodecName } from './compression.js';
import { decryptStream, encryptStream } from './encryption.js';
import type { CapturedTransaction, ChangePosition } from './engine.js';
import type { Passphrase } from './encryption.js';
import { isNotFound } from './storage.js';
import { StrataError, errorText, isStrataError, redactable, wrapError } from './errors.js';
import { readTar, tarHeaderBytes, tarPadding, tarTrailer } from './format/tar.js';
import { withRepositoryLock } from './lock.js';
import { timestampPart } from './naming.js';
import { announceWrite } from './pending-writes.js';
import type { PendingWrite } from './pending-writes.js';
import { catalogKeys, readPendingDeletions, writePendingDeletions } from './recovery.js';
import type { RepositoryContext } from './repository-context.js';
import { STRATA_VERSION } from './version.js';

/**
 * Segments: the transactions continuous capture read from a database's log, a second or so of
 * them per artifact, chained to a base restore point (docs/FORMAT.md, "Segments"). An artifact
 * like a backup's, through the same layers (tar, then compression, then encryption), written
 * under its final key after a pending note and committed by the catalog generation that lists it.
 */

export const SEGMENT_FORMAT = 'strata-segment';
export const SEGMENT_VERSION = 1;
/**
 * Merged segments (compaction) are version 2: the same layout with `merged` in the manifest. A
 * Strata that reads only version 1 refuses them instead of seeing a gap in the sequence.
 */
export const MERGED_SEGMENT_VERSION = 2;
/** The transactions' bytes, concatenated in commit order. */
export const SEGMENT_CHANGES_ENTRY = 'changes.bin';
/** The segment's manifest, the archive's last entry. */
export const SEGMENT_MANIFEST_ENTRY = 'segment.json';
const SEGMENT_README_ENTRY = 'README.txt';
/**
 * A manifest has a line per transaction: a few KiB for a segment, tens of MiB for one compaction
 * merged from an hour of a busy database's (about 100 bytes each). More is not one of ours.
 */
const MAX_SEGMENT_MANIFEST_BYTES = 256 * 1024 * 1024;

/** One transaction of a segment, in order: its bytes in `changes.bin` follow the previous one's. */
export interface SegmentTransaction {
  readonly bytes: number;
  /** When capture saw it committed (ISO, ms): never before its commit. */
  readonly observedAt: string;
  /** When the read that found it began (ISO, ms): everything committed before is in it or earlier. */
  readonly scannedAt: string;
  /** How many of the database's transactions it stands for, when more than one (ChangeFeed.condense, or compaction's join). */
  readonly commits?: number;
}

/** How many of the database's transactions a list of segment transactions stands for. */
export function commitsIn(transactions: readonly { readonly commits?: number }[]): number {
  let sum = 0;
  for (const t of transactions) sum += t.commits ?? 1;
  return sum;
}

/** `segment.json`. */
export interface SegmentManifest {
  readonly format: typeof SEGMENT_FORMAT;
  readonly version: number;
  readonly id: string;
  readonly database: string;
  readonly engine: string;
  readonly base: string;
  readonly sequence: number;
  readonly previous: string | null;
  /** Set when compaction merged it from several segments (version 2). */
  readonly merged?: SegmentMerge;
  /** Set when the merge joined the transactions seen committed in each slot of this many ms (SegmentCondensing). */
  readonly condensedWithinMs?: number;
  readonly from: ChangePosition;
  readonly to: ChangePosition;
  readonly createdAt: string;
  readonly transactions: readonly SegmentTransaction[];
  readonly changesBytes: number;
  readonly changesSha256: string;
  readonly keyId?: string;
  readonly tool: { readonly name: 'strata'; readonly version: string };
}

/** What a new segment holds, before it is written. */
export interface SegmentDraft {
  readonly database: string;
  readonly engine: string;
  readonly base: BackupRecord;
  readonly sequence: number;
  readonly previous: string | null;
  readonly from: ChangePosition;
  readonly transactions: readonly CapturedTransaction[];
  /** The engine's words on its changes, for README.txt (HandRecovery.changes). */
  readonly readme?: string;
}

/** `{database}_segment_{YYYYMMDD_HHMMSS}_{6 hex}`: several a second, so a longer suffix than a backup's. */
export function newSegmentId(database: string, time: Date): string {
  return `${database}_segment_${timestampPart(time)}_${randomBytes(3).toString('hex')}`;
}

/** `backups/{database}/segments/{id}.tar{.zst|.gz}{.gpg}`. */
export function segmentKey(database: string, id: string, compressionExtension: string, encrypted: boolean): string {
  return `backups/${database}/segments/${id}.tar${compressionExtension}${encrypted ? '.gpg' : ''}`;
}

export function parseSegmentKey(key: string): { codec: CodecName; encrypted: boolean } | undefined {
  const match = /^backups\/[^/]+\/segments\/[^/]+\.tar(\.zst|\.gz)?(\.gpg)?$/.exec(key);
  if (!match) return undefined;
  return { codec: match[1] === '.zst' ? 'zstd' : match[1] === '.gz' ? 'gzip' : 'none', encrypted: match[2] !== undefined };
}

const README = `A Strata segment: transactions committed to a database after a restore point.
changes.bin holds them, in commit order, as the database engine logged them.
segment.json, the last entry, says which restore point they follow ("base"), where in the
chain this segment is ("sequence", "previous"), and how many bytes of changes.bin each
transaction takes, with the time it was seen committed. docs/FORMAT.md ("Segments") says how
to replay them onto the restored base without Strata.
`;

function entry(name: string, body: Buffer, mtime: Date): Buffer[] {
  return [tarHeaderBytes({ name, size: body.length, mtime }), body, tarPadding(body.length)];
}

/** A segment's artifact as it is about to be written: everything but what its changes hash to. */
interface SegmentToStore {
  readonly id: string;
  readonly database: string;
  readonly time: Date;
  readonly readme: string | undefined;
  /** Bytes of `changes`, known before they are read (the tar header comes first). */
  readonly changesBytes: number;
  readonly changes: AsyncIterable<Uint8Array>;
  readonly manifest: (changesSha256: string, keyId: string | undefined) => SegmentManifest;
}

/** A stored segment, not yet committed: its pending note is still there. */
interface StoredSegment {
  readonly record: SegmentRecord;
  readonly pending: PendingWrite;
}

/** How often a replicator that runs for weeks re-reads the repository's keys (one storage read each time). */
const KEYS_RECHECK_MS = 10_000;
const keysCheckedAt = new WeakMap<RepositoryContext, number>();

/**
 * Re-reads the keys, as every backup does before it writes, but at most every KEYS_RECHECK_MS: a
 * key rotated meanwhile is used from then on, and a revoked passphrase (its key file removed or
 * replaced) or a current key its key file lacks stops the replicator (PASSPHRASE_WRONG,
 * KEY_MISSING) instead of sealing more segments under a key someone meant to retire.
 */
async function recheckKeys(ctx: RepositoryContext): Promise<void> {
  const now = Date.now();
  if (now - (keysCheckedAt.get(ctx) ?? 0) < KEYS_RECHECK_MS) return;
  try {
    await ctx.unlock();
    if (ctx.vault.section.profile !== 'none') ctx.vault.current('replicate');
  } catch (err) {
    // The passphrase opened the repository when this process started: say what changed since, not "wrong passphrase".
    if (isStrataError(err, 'PASSPHRASE_WRONG') || isStrataError(err, 'KEY_MISSING')) {
      throw new StrataError(
        err.code,
        `replicate: the repository's keys changed while it ran, and its passphrase no longer seals new segments (its key file was removed or replaced, or lacks the current data key after a \`strata key rotate\`): ${err.message}. Give it the current key (\`strata key rotate --also-passphrase-file\`) or another passphrase, then start it again`,
        { cause: err, details: err.details },
      );
    }
    throw err;
  }
  keysCheckedAt.set(ctx, now);
}

/**
 * Writes a segment's artifact under its final key after a pending note: tar (README, changes,
 * manifest last, so the changes' SHA-256 is known by then), compressed, encrypted, streamed, so a
 * merged segment of an hour's changes never sits in memory. Nothing is committed here.
 */
async function storeSegment(ctx: RepositoryContext, what: SegmentToStore, signal?: AbortSignal): Promise<StoredSegment> {
  await recheckKeys(ctx);
  const codec = getCodec(ctx.config.compression.codec);
  await ctx.vault.refuseUnencryptedOverKeys();
  const profile = ctx.vault.section.profile;
  const dataKey = profile === 'none' ? undefined : ctx.vault.current('replicate');
  const key = segmentKey(what.database, what.id, codec.extension, profile !== 'none');
  const changesSha = createHash('sha256');
  let changesSeen = 0;
  let manifest: SegmentManifest | undefined;
  let rawBytes = 0;
  const tar = (async function* (): AsyncGenerator<Uint8Array> {
    const emit = function* (parts: Buffer[]): Generator<Buffer> {
      for (const part of parts) {
        rawBytes += part.length;
        yield part;
      }
    };
    yield* emit(entry(SEGMENT_README_ENTRY, Buffer.from(what.readme ? `${README}\n${what.readme}\n` : README), what.time));
    yield* emit([tarHeaderBytes({ name: SEGMENT_CHANGES_ENTRY, size: what.changesBytes, mtime: what.time })]);
    for await (const chunk of what.changes) {
      changesSha.update(chunk);
      changesSeen += chunk.byteLength;
      if (changesSeen > what.changesBytes) break;
      rawBytes += chunk.byteLength;
      yield chunk;
    }
    if (changesSeen !== what.changesBytes) throw new StrataError('INTERNAL', `segment ${what.id}: its changes were ${changesSeen} bytes, not the ${what.changesBytes} announced`);
    manifest = what.manifest(changesSha.digest('hex'), dataKey?.id);
    yield* emit([tarPadding(what.changesBytes), ...entry(SEGMENT_MANIFEST_ENTRY, Buffer.from(JSON.stringify(manifest, null, 1) + '\n'), what.time), tarTrailer()]);
  })();
  let bytes: AsyncIterable<Uint8Array> = codec.compress(tar, ctx.config.compression.level, signal);
  if (profile !== 'none') bytes = encryptStream(bytes, dataKey!.secret, profile);
  const sha = createHash('sha256');
  const pending = await announceWrite(ctx.storage, what.id, [key], []);
  try {
    const info = await ctx.storage.put(
      key,
      (async function* () {
        for await (const chunk of bytes) {
          sha.update(chunk);
          yield chunk;
        }
      })(),
      signal ? { signal } : {},
    );
    const record = segmentRecord(manifest!, {
      key,
      rawBytes,
      storedBytes: info.size,
      sha256: sha.digest('hex'),
      compression: { codec: codec.name, level: ctx.config.compression.level },
      encryption: { profile, ...(dataKey?.id !== undefined ? { keyId: dataKey.id } : {}) },
    });
    return { record, pending };
  } catch (err) {
    await pending.abandon().catch(() => undefined);
    throw err;
  }
}

/**
 * Commits a stored segment: `change` makes the new list of segments from the catalog's (under the
 * repository lock), or throws to refuse. After an error the catalog decides, as for a backup
 * (catalog-commit.ts): an error does not prove the generation was not written.
 */
async function commitSegment(ctx: RepositoryContext, stored: StoredSegment, what: string, change: (current: CatalogContents) => SegmentRecord[], retired: readonly SegmentRecord[] = []): Promise<void> {
  let committed = false;
  try {
    await withRepositoryLock(
      ctx.storage,
      'replicate',
      async () => {
        const current = await readCatalogContents(ctx.storage);
        if (!current) throw new StrataError('CHAIN_BROKEN', `${what}: the catalog of ${ctx.storage.location} does not read; rebuild it (strata list rebuilds a missing one) and start again`);
        const next = change(current);
        if (retired.length === 0) {
          await writeCatalog(ctx.storage, current.backups, next);
          committed = true;
          return;
        }
        // Segments a merge replaces go as a prune's files go (catalog-commit.ts removeBackups): noted,
        // unlisted, deleted. A note left by a kill counts only for keys the catalog no longer lists:
        // its backups' files as well as its segments (a prune that died before its catalog write
        // noted the files of backups the catalog still lists, and did not happen).
        const listed = catalogKeys(current.backups, next);
        const leftovers = (await readPendingDeletions(ctx.storage)).filter((key) => !listed.has(key));
        const doomed = [...leftovers, ...retired.map((s) => s.key)];
        await writePendingDeletions(ctx.storage, doomed);
        await writeCatalog(ctx.storage, current.backups, next);
        committed = true;
        for (const key of doomed) await ctx.storage.delete(key);
        await writePendingDeletions(ctx.storage, []);
      },
      ctx.options.lock,
    );
    await stored.pending.committed().catch(() => undefined);
  } catch (err) {
    if (!committed) {
      const listed = await readCatalogContents(ctx.storage).then(
        (c) => c?.segments.some((s) => s.key === stored.record.key) ?? false,
        () => undefined,
      );
      if (listed === true) {
        await stored.pending.committed().catch(() => undefined);
        throw err;
      }
      if (listed === false) await stored.pending.abandon().catch(() => undefined);
    } else {
      // Committed: what failed came after (deleting the retired segments), and the note finishes it.
      await stored.pending.committed().catch(() => undefined);
      return;
    }
    throw err;
  }
}

/**
 * A time as the manifest writes it. The transactions of one read share their times, and a busy
 * segment lists thousands of them: formatting each anew was a visible part of the replicator's time.
 */
const isoTime = (() => {
  let lastMs = Number.NaN;
  let lastText = '';
  return (ms: number): string => {
    if (ms !== lastMs) {
      lastText = new Date(ms).toISOString();
      lastMs = ms;
    }
    return lastText;
  };
})();

/** How many bytes of small, scattered transactions go into one piece of a segment's changes. */
const CHANGES_PIECE_BYTES = 1024 * 1024;
/** A run of adjacent transactions at least this long goes on as it is, uncopied. */
const CHANGES_RUN_BYTES = 64 * 1024;

/**
 * A segment's changes, in order, in few pieces and with as little copying as can be: captured
 * transactions that lie next to each other in one buffer (an engine that hands out views of what
 * it read) join into one view, and a long run goes on uncopied; short ones are gathered into
 * copies of about CHANGES_PIECE_BYTES. A
 * piece per transaction would cost a turn of every stream stage each (thousands a second), and
 * one copy of the whole was a large share of the replicator's time.
 */
async function* runsOf(parts: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  let gathered: Uint8Array[] = [];
  let gatheredBytes = 0;
  const flush = function* (): Generator<Uint8Array> {
    if (gathered.length > 0) yield gathered.length === 1 ? gathered[0]! : Buffer.concat(gathered, gatheredBytes);
    gathered = [];
    gatheredBytes = 0;
  };
  const place = function* (run: Uint8Array): Generator<Uint8Array> {
    if (run.byteLength >= CHANGES_RUN_BYTES) {
      yield* flush();
      yield run;
      return;
    }
    gathered.push(run);
    gatheredBytes += run.byteLength;
    if (gatheredBytes >= CHANGES_PIECE_BYTES) yield* flush();
  };
  let run: Uint8Array | undefined;
  for (const part of parts) {
    if (run && run.buffer === part.buffer && run.byteOffset + run.byteLength === part.byteOffset) {
      run = new Uint8Array(run.buffer, run.byteOffset, run.byteLength + part.byteLength);
      continue;
    }
    if (run) yield* place(run);
    run = part;
  }
  if (run) yield* place(run);
  yield* flush();
}

/**
 * Writes a segment and commits it: the catalog lists it only if the chain it continues is still
 * the newest of its base (its `previous` is the base's last segment). A kill at any point leaves
 * nothing visible but committed segments (the pending note covers the rest).
 */
export async function writeSegment(ctx: RepositoryContext, draft: SegmentDraft, signal?: AbortSignal): Promise<SegmentRecord> {
  if (draft.transactions.length === 0) throw new StrataError('INTERNAL', 'segment: no transactions to write');
  const now = new Date();
  const id = newSegmentId(draft.database, now);
  const changesBytes = draft.transactions.reduce((sum, t) => sum + t.bytes.byteLength, 0);
  const last = draft.transactions.at(-1)!;
  try {
    const stored = await storeSegment(
      ctx,
      {
        id,
        database: draft.database,
        time: now,
        readme: draft.readme,
        changesBytes,
        changes: runsOf(draft.transactions.map((t) => t.bytes)),
        manifest: (changesSha256, keyId) => ({
          format: SEGMENT_FORMAT,
          version: SEGMENT_VERSION,
          id,
          database: draft.database,
          engine: draft.engine,
          base: draft.base.id,
          sequence: draft.sequence,
          previous: draft.previous,
          from: draft.from,
          to: last.position,
          createdAt: now.toISOString(),
          transactions: draft.transactions.map((t) => ({
            bytes: t.bytes.byteLength,
            observedAt: isoTime(t.observedAt),
            scannedAt: isoTime(t.scannedAt),
            ...(t.commits !== undefined && t.commits > 1 ? { commits: t.commits } : {}),
          })),
          changesBytes,
          changesSha256,
          ...(keyId !== undefined ? { keyId } : {}),
          tool: { name: 'strata', version: STRATA_VERSION },
        }),
      },
      signal,
    );
    await commitSegment(ctx, stored, 'replicate', (current) => {
      if (!current.backups.some((b) => b.id === draft.base.id)) {
        throw new StrataError('CHAIN_BROKEN', `replicate: the base restore point ${draft.base.id} was removed while segments were being added to it`, { details: { baseRemoved: true } });
      }
      const tip = current.segments.filter((s) => s.base === draft.base.id).at(-1);
      if ((tip ? linkIdOf(tip) : null) !== draft.previous || (tip?.sequence ?? 0) + 1 !== draft.sequence) {
        throw new StrataError(
          'CHAIN_BROKEN',
          `replicate: segment ${draft.sequence} of ${draft.database} after ${draft.base.id} does not follow the newest one in the catalog (${tip ? `${tip.id}, sequence ${tip.sequence}` : 'none'}); is another \`strata replicate\` shipping ${draft.database}?`,
        );
      }
      return [...current.segments, stored.record];
    });
    return stored.record;
  } catch (err) {
    throw isStrataError(err) ? err : wrapError(`replicate ${draft.database}: write segment`, err);
  }
}

/** How compaction joins transactions (see {@link mergeSegments}). */
export interface SegmentCondensing {
  /**
   * Consecutive transactions seen committed (`observedAt`) in the same slot of this many ms,
   * counted from the epoch, are joined. Fixed slots, so that merging merged segments again joins
   * nothing across a slot: a transaction never waits longer than this for the ones joined to it.
   */
  readonly withinMs: number;
  /** The engine's join (ChangeCapture.join). */
  readonly join: (changes: readonly Uint8Array[], at: ChangePosition) => Uint8Array;
}

/**
 * Compaction: merges consecutive segments of one chain into one, so that a restore reads a few
 * large objects instead of thousands of small ones and the catalog stays short. Each part is read
 * and checked whole first (a damaged one stops the merge, and is named); the merged segment holds
 * every transaction with its own times, so restores to a moment inside it are as exact as before,
 * except that with `condense` the transactions seen committed within one short slot are joined
 * into one: a restore then stops before or after all of them, a slot earlier at most.
 * It replaces the parts in one catalog generation, then their files are deleted.
 */
export async function mergeSegments(ctx: RepositoryContext, parts: readonly SegmentRecord[], options: { readme?: string; signal?: AbortSignal; condense?: SegmentCondensing } = {}): Promise<SegmentRecord> {
  const signal = options.signal;
  if (parts.length < 2) throw new StrataError('INTERNAL', 'merge segments: fewer than two segments');
  const first = parts[0]!;
  const last = parts.at(-1)!;
  for (const [i, s] of parts.entries()) {
    const before = parts[i - 1];
    if (s.base !== first.base) throw new StrataError('INTERNAL', `merge segments: ${s.id} is not in the chain of ${first.base}`);
    if (before && (firstSequenceOf(s) !== before.sequence + 1 || s.previous !== linkIdOf(before) || !samePosition(before.to, s.from))) {
      throw new StrataError('INTERNAL', `merge segments: ${s.id} does not follow ${before.id}`);
    }
  }
  const dir = path.join(await ctx.tempDir(), `merge-${randomBytes(6).toString('hex')}`);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    const files: string[] = [];
    const manifests: SegmentManifest[] = [];
    for (const [i, part] of parts.entries()) {
      const file = path.join(dir, `${String(i).padStart(6, '0')}.bin`);
      manifests.push(await readSegment(ctx, part, file, signal));
      files.push(file);
    }
    let transactions = manifests.flatMap((m) => m.transactions);
    let changesBytes = manifests.reduce((sum, m) => sum + m.changesBytes, 0);
    let changeFiles = files;
    if (options.condense) {
      const condensedFile = path.join(dir, 'condensed.bin');
      transactions = await condenseTransactions(files, manifests, options.condense, last.to, condensedFile, signal);
      changesBytes = transactions.reduce((sum, t) => sum + t.bytes, 0);
      changeFiles = [condensedFile];
    }
    const now = new Date();
    const id = newSegmentId(first.database, now);
    const merged: SegmentMerge = { firstSequence: firstSequenceOf(first), lastId: linkIdOf(last), segments: parts.reduce((sum, p) => sum + (p.merged?.segments ?? 1), 0) };
    const stored = await storeSegment(
      ctx,
      {
        id,
        database: first.database,
        time: now,
        readme: options.readme,
        changesBytes,
        changes: (async function* () {
          for (const file of changeFiles) yield* createReadStream(file, { highWaterMark: 1024 * 1024 });
        })(),
        manifest: (changesSha256, keyId) => ({
          format: SEGMENT_FORMAT,
          version: MERGED_SEGMENT_VERSION,
          id,
          database: first.database,
          engine: first.engine,
          base: first.base,
          sequence: last.sequence,
          previous: first.previous,
          merged,
          from: first.from,
          to: last.to,
          createdAt: now.toISOString(),
          transactions,
          ...(options.condense ? { condensedWithinMs: options.condense.withinMs } : {}),
          changesBytes,
          changesSha256,
          ...(keyId !== undefined ? { keyId } : {}),
          tool: { name: 'strata', version: STRATA_VERSION },
        }),
      },
      signal,
    );
    await commitSegment(
      ctx,
      stored,
      `compact ${first.database}`,
      (current) => {
        const listed = new Set(current.segments.map((s) => s.key));
        const gone = parts.find((p) => !listed.has(p.key));
        if (gone) throw new StrataError('CHAIN_BROKEN', `compact ${first.database}: segment ${gone.id} left the catalog while it was being merged (a prune or another compaction); nothing was changed`);
        const merging = new Set(parts.map((p) => p.key));
        return [...current.segments.filter((s) => !merging.has(s.key)), stored.record];
      },
      parts,
    );
    return stored.record;
  } catch (err) {
    throw isStrataError(err) ? err : wrapError(`compact ${first.database}: merge segments`, err);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Transactions longer than this are never joined (joining holds them in memory): they stay as they are. */
const MAX_JOINED_BYTES = 16 * 1024 * 1024;
/** How much of a part's changes one read takes. */
const PART_READ_BYTES = 4 * 1024 * 1024;

/**
 * The parts' changes (`files`, one per manifest, in order) written to `out` with each run of
 * consecutive transactions seen committed in one slot of `condense.withinMs` joined by the engine;
 * returns the transactions of `out`. Only the transactions being joined are held in memory.
 */
async function condenseTransactions(
  files: readonly string[],
  manifests: readonly SegmentManifest[],
  condense: SegmentCondensing,
  at: ChangePosition,
  out: string,
  signal?: AbortSignal,
): Promise<SegmentTransaction[]> {
  const output = await fs.open(out, 'wx', 0o600);
  const transactions: SegmentTransaction[] = [];
  const write = async (data: Uint8Array): Promise<void> => {
    let done = 0;
    while (done < data.byteLength) done += (await output.write(data, done, data.byteLength - done)).bytesWritten;
  };
  let run: { slot: number; changes: Buffer[]; entries: SegmentTransaction[]; bytes: number } | undefined;
  const flush = async (): Promise<void> => {
    if (!run) return;
    const { changes, entries } = run;
    run = undefined;
    if (entries.length === 1) {
      await write(changes[0]!);
      transactions.push(entries[0]!);
      return;
    }
    const joined = condense.join(changes, at);
    await write(joined);
    // The latest of their times, not the last one's: a wall clock stepped back within a slot must
    // not let a restore replay a transaction seen after its target.
    const latest = (times: string[]): string => times.reduce((a, b) => (Date.parse(b) > Date.parse(a) ? b : a));
    transactions.push({ bytes: joined.byteLength, observedAt: latest(entries.map((e) => e.observedAt)), scannedAt: latest(entries.map((e) => e.scannedAt)), commits: commitsIn(entries) });
  };
  try {
    for (const [i, file] of files.entries()) {
      const reader = new SequentialReader(await fs.open(file, 'r'));
      try {
        for (const entry of manifests[i]!.transactions) {
          if (signal?.aborted) throw new StrataError('ABORTED', 'compact: stopped');
          const slot = Math.floor(Date.parse(entry.observedAt) / condense.withinMs);
          if (run && (run.slot !== slot || run.bytes + entry.bytes > MAX_JOINED_BYTES)) await flush();
          if (entry.bytes > MAX_JOINED_BYTES) {
            await reader.copy(entry.bytes, write);
            transactions.push(entry);
            continue;
          }
          run ??= { slot, changes: [], entries: [], bytes: 0 };
          run.changes.push(await reader.read(entry.bytes));
          run.entries.push(entry);
          run.bytes += entry.bytes;
        }
      } finally {
        await reader.close();
      }
      // Read: the merge needs only its condensed copy from here on, not twice the disk.
      await fs.rm(file, { force: true });
    }
    await flush();
  } finally {
    await output.close();
  }
  return transactions;
}

/**
 * Reads a file front to back in pieces the caller names, through large reads (a merge of an hour
 * takes hundreds of thousands of transactions of a few KiB from its parts).
 */
class SequentialReader {
  readonly #handle: fs.FileHandle;
  #block = Buffer.alloc(0);
  #at = 0;

  constructor(handle: fs.FileHandle) {
    this.#handle = handle;
  }

  /** The next `n` bytes; a short file is ARTIFACT_CORRUPT (its manifest promised more). */
  async read(n: number): Promise<Buffer> {
    if (this.#block.length - this.#at >= n) {
      const piece = this.#block.subarray(this.#at, this.#at + n);
      this.#at += n;
      return piece;
    }
    const whole = Buffer.allocUnsafe(n);
    let got = 0;
    await this.copy(n, (piece) => {
      got += piece.copy(whole, got);
    });
    return whole;
  }

  /** Hands the next `n` bytes to `sink`, in pieces that are only valid during the call. */
  async copy(n: number, sink: (piece: Buffer) => void | Promise<void>): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.#at >= this.#block.length) {
        // A new block each time: pieces handed out by read() stay valid.
        const block = Buffer.allocUnsafe(PART_READ_BYTES);
        const { bytesRead } = await this.#handle.read(block, 0, block.length, null);
        if (bytesRead === 0) throw new StrataError('ARTIFACT_CORRUPT', 'compact: a segment holds fewer bytes of changes than its manifest says');
        this.#block = block.subarray(0, bytesRead);
        this.#at = 0;
      }
      const take = Math.min(left, this.#block.length - this.#at);
      await sink(this.#block.subarray(this.#at, this.#at + take));
      this.#at += take;
      left -= take;
    }
  }

  close(): Promise<void> {
    return this.#handle.close();
  }
}

/**
 * Checks that `segments` (one base's, sorted by sequence) form one unbroken chain from the base:
 * sequences 1, 2, 3..., each naming the one before and starting where it ended. Returns a sentence
 * naming the first break, or undefined.
 */
export function chainBreak(base: BackupRecord, segments: readonly SegmentRecord[]): string | undefined {
  return chainBreakAt(base, segments)?.reason;
}

/** {@link chainBreak}, with the index of the first segment past the break (those before it replay). */
export function chainBreakAt(base: BackupRecord, segments: readonly SegmentRecord[]): { at: number; reason: string } | undefined {
  let previous: SegmentRecord | undefined;
  for (const [at, s] of segments.entries()) {
    const expected = (previous?.sequence ?? 0) + 1;
    if (firstSequenceOf(s) !== expected) return { at, reason: `segment ${expected} after ${base.id} is missing (the next one listed is ${firstSequenceOf(s)}, ${s.id})` };
    const link = previous ? linkIdOf(previous) : null;
    if (s.previous !== link) return { at, reason: `segment ${s.sequence} (${s.id}) names ${s.previous ?? 'no segment'} before it, not ${link ?? 'none'}` };
    const start = previous ? previous.to : base.changePosition;
    if (!start || !samePosition(start, s.from)) return { at, reason: `segment ${s.sequence} (${s.id}) does not start where ${previous ? `segment ${previous.sequence}` : `its base ${base.id}`} ended` };
    previous = s;
  }
  return undefined;
}

/** Positions are plain JSON: equal when their keys and values are. */
export function samePosition(a: ChangePosition, b: ChangePosition): boolean {
  const canonical = (p: ChangePosition): string => JSON.stringify(Object.keys(p).sort().map((k) => [k, p[k]]));
  return canonical(a) === canonical(b);
}

/** What reading a segment's artifact found, before it is compared with anything. */
interface OpenedSegment {
  readonly manifest: SegmentManifest | undefined;
  readonly storedBytes: number;
  readonly sha256: string;
  /** Bytes of the tar (the artifact decrypted and decompressed). */
  readonly rawBytes: number;
  readonly sawChanges: boolean;
  readonly changesBytes: number;
  readonly changesSha256: string;
}

/**
 * Reads a segment's artifact to its end: decrypted, decompressed, unpacked; `changes.bin` goes to
 * `out` when given. Errors of the layers (a wrong key, damage) are thrown as they are.
 */
async function openSegment(storage: RepositoryContext['storage'], key: string, passphrase: Passphrase | undefined, out: fs.FileHandle | undefined, signal?: AbortSignal): Promise<OpenedSegment> {
  const parsed = parseSegmentKey(key);
  if (!parsed) throw new StrataError('ARTIFACT_FOREIGN', `${key} is not a segment name Strata writes`);
  const source = await storage.get(key, signal ? { signal } : {});
  const sha = createHash('sha256');
  let stored = 0;
  const hashed = (async function* () {
    for await (const chunk of source) {
      sha.update(chunk);
      stored += chunk.byteLength;
      yield chunk;
    }
  })();
  let plain: AsyncIterable<Uint8Array> = hashed;
  if (parsed.encrypted) plain = decryptStream(plain, passphrase!);
  let raw = 0;
  const counted = (async function* () {
    for await (const chunk of getCodec(parsed.codec).decompress(plain, signal)) {
      raw += chunk.byteLength;
      yield chunk;
    }
  })();
  let manifest: SegmentManifest | undefined;
  const changesSha = createHash('sha256');
  let changesBytes = 0;
  let sawChanges = false;
  for await (const item of readTar(counted)) {
    if (item.name === SEGMENT_CHANGES_ENTRY) {
      sawChanges = true;
      for await (const chunk of item.body) {
        changesSha.update(chunk);
        changesBytes += chunk.length;
        if (out) {
          let done = 0;
          while (done < chunk.length) done += (await out.write(chunk, done, chunk.length - done)).bytesWritten;
        }
      }
    } else if (item.name === SEGMENT_MANIFEST_ENTRY) {
      if (item.size > MAX_SEGMENT_MANIFEST_BYTES) throw new StrataError('ARTIFACT_HOSTILE', `${key}: its manifest is too large`);
      const parts: Buffer[] = [];
      for await (const chunk of item.body) parts.push(chunk);
      try {
        manifest = JSON.parse(Buffer.concat(parts).toString('utf8')) as SegmentManifest;
      } catch {
        throw new StrataError('ARTIFACT_CORRUPT', `${key}: its manifest is not JSON`);
      }
    } else {
      for await (const _ of item.body) void _;
    }
  }
  return { manifest, storedBytes: stored, sha256: sha.digest('hex'), rawBytes: raw, sawChanges, changesBytes, changesSha256: changesSha.digest('hex') };
}

/** A manifest's own consistency: its format, and its changes and transactions adding up. */
function manifestProblem(opened: OpenedSegment): string | undefined {
  const manifest = opened.manifest;
  if (!manifest || manifest.format !== SEGMENT_FORMAT) return 'it has no segment manifest';
  if (!opened.sawChanges || opened.changesBytes !== manifest.changesBytes || opened.changesSha256 !== manifest.changesSha256) return 'its changes do not match its manifest';
  if (!Array.isArray(manifest.transactions) || manifest.transactions.length === 0 || manifest.transactions.reduce((sum, t) => sum + t.bytes, 0) !== opened.changesBytes) {
    return 'its transactions do not add up to its changes';
  }
  if (manifest.transactions.some((t) => t.commits !== undefined && !(Number.isSafeInteger(t.commits) && t.commits > 1))) return 'a transaction of it stands for a number of commits that is not a whole number above 1';
  return undefined;
}

/**
 * Reads a segment's artifact whole and checks it: its size and SHA-256 against the catalog, the
 * encryption's integrity, the manifest against the catalog record, the changes against the
 * manifest's SHA-256 and per-transaction sizes. The changes go to `out` (a file in a private
 * folder, created 0600, read back by this process and removed: never synced, which cost a fifth
 * of a restore's segment reading). Any mismatch is ARTIFACT_CORRUPT naming the segment.
 */
export async function readSegment(ctx: RepositoryContext, record: SegmentRecord, out: string, signal?: AbortSignal): Promise<SegmentManifest> {
  if (!parseSegmentKey(record.key)) throw new StrataError('ARTIFACT_FOREIGN', `catalog: ${record.key} is not a segment name Strata writes`);
  const what = `segment ${record.sequence} (${record.id}) after ${record.base}`;
  const corrupt = (why: string): StrataError => new StrataError('ARTIFACT_CORRUPT', `${what}: ${why}; the chain of segments cannot be replayed past it`);
  const file = await fs.open(out, 'wx', 0o600);
  try {
    let opened: OpenedSegment;
    // Outside the try: a key the passphrase's key file lacks is its own error, not damage.
    const dataKey = record.encryption.profile === 'none' ? undefined : ctx.vault.keyFor(record, 'restore');
    try {
      opened = await openSegment(ctx.storage, record.key, dataKey, file, signal);
    } catch (err) {
      if (isStrataError(err, 'ABORTED')) throw err;
      if (isNotFound(err)) throw new StrataError('CHAIN_BROKEN', redactable`${what}: ${record.key} is missing from the repository`, { cause: err });
      // Its data key was opened (keyFor), and data keys are random: one that does not decrypt the
      // segment (its session key packet altered, as a damaged byte of a small segment often is)
      // means damage, never a wrong passphrase, which would send the user looking for another.
      throw new StrataError('ARTIFACT_CORRUPT', redactable`${what}: ${errorText(err)}`, { cause: err });
    }
    if (opened.storedBytes !== record.storedBytes) throw corrupt(`it has ${opened.storedBytes} bytes, the catalog says ${record.storedBytes}`);
    if (opened.sha256 !== record.sha256) throw corrupt("its SHA-256 is not the catalog's");
    const manifest = opened.manifest;
    if (manifest && manifest.version > MERGED_SEGMENT_VERSION) throw new StrataError('ARTIFACT_FOREIGN', `${what}: segment format version ${manifest.version} is newer than this Strata reads (${MERGED_SEGMENT_VERSION}); upgrade Strata`);
    const problem = manifestProblem(opened);
    if (problem) throw corrupt(problem);
    if (
      manifest!.id !== record.id ||
      manifest!.base !== record.base ||
      manifest!.sequence !== record.sequence ||
      manifest!.previous !== record.previous ||
      JSON.stringify(manifest!.merged ?? null) !== JSON.stringify(record.merged ?? null)
    ) {
      throw corrupt(`its manifest describes segment ${manifest!.sequence} (${manifest!.id}) after ${manifest!.base}, not this one`);
    }
    if (!samePosition(manifest!.from, record.from) || !samePosition(manifest!.to, record.to)) throw corrupt("its positions are not the catalog's");
    if (commitsIn(manifest!.transactions) !== record.transactions) throw corrupt('its transactions are not as many as the catalog says');
    return manifest!;
  } finally {
    await file.close();
  }
}

/** True for the key of a segment artifact (backups/<database>/segments/...). */
export function isSegmentKey(key: string): boolean {
  return parseSegmentKey(key) !== undefined;
}

/**
 * A segment's catalog record: what its manifest says, and what only the stored artifact knows
 * (where it is, its sizes and checksum, how it was compressed and encrypted). One function for
 * the record written at commit and the one rebuilt from the artifact, so the two cannot drift.
 */
function segmentRecord(manifest: SegmentManifest, stored: Pick<SegmentRecord, 'key' | 'rawBytes' | 'storedBytes' | 'sha256' | 'compression' | 'encryption'>): SegmentRecord {
  return {
    id: manifest.id,
    database: manifest.database,
    engine: manifest.engine,
    base: manifest.base,
    sequence: manifest.sequence,
    previous: manifest.previous,
    ...(manifest.merged ? { merged: { firstSequence: manifest.merged.firstSequence, lastId: manifest.merged.lastId, segments: manifest.merged.segments } } : {}),
    from: manifest.from,
    to: manifest.to,
    firstAt: manifest.transactions[0]!.observedAt,
    lastAt: manifest.transactions.at(-1)!.observedAt,
    transactions: commitsIn(manifest.transactions),
    createdAt: manifest.createdAt,
    ...stored,
  };
}

/**
 * A segment's catalog record rebuilt from its artifact alone (the catalog was lost): each key in
 * `candidates` is tried until one opens it. Throws when none does or the segment is damaged.
 */
export async function segmentRecordFromArtifact(
  storage: RepositoryContext['storage'],
  key: string,
  candidates: readonly { id: string | undefined; secret: Passphrase }[] | undefined,
  profile: string,
  signal?: AbortSignal,
): Promise<SegmentRecord> {
  const parsed = parseSegmentKey(key)!;
  let failure: unknown;
  for (const candidate of parsed.encrypted ? (candidates ?? []) : [undefined]) {
    try {
      const opened = await openSegment(storage, key, candidate?.secret, undefined, signal);
      const problem = manifestProblem(opened);
      if (problem) throw new StrataError('ARTIFACT_CORRUPT', `${key}: ${problem}`);
      return segmentRecord(opened.manifest!, {
        key,
        rawBytes: opened.rawBytes,
        storedBytes: opened.storedBytes,
        sha256: opened.sha256,
        compression: { codec: parsed.codec, level: 0 },
        encryption: { profile: parsed.encrypted ? profile : 'none', ...(candidate?.id !== undefined ? { keyId: candidate.id } : {}) },
      });
    } catch (err) {
      if (isStrataError(err, 'ABORTED')) throw err;
      failure ??= err;
    }
  }
  throw failure ?? new StrataError('KEY_MISSING', `${key}: no data key to open it`);
}

/**
 * Segments rebuilt from artifacts (the catalog was lost) can include both a merged segment and
 * the parts it replaced, when a compaction was killed between its commit and the parts' deletion
 * (or before its commit). Both hold the same transactions; the widest one stays.
 */
export function withoutMergedParts(segments: readonly SegmentRecord[]): SegmentRecord[] {
  const covers = (m: SegmentRecord, s: SegmentRecord): boolean => m.base === s.base && firstSequenceOf(m) <= firstSequenceOf(s) && s.sequence <= m.sequence;
  const width = (s: SegmentRecord): number => s.sequence - firstSequenceOf(s);
  return segments.filter((s) => !segments.some((m) => m !== s && covers(m, s) && (width(m) > width(s) || m.id < s.id)));
}
