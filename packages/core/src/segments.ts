import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { readCatalogContents, writeCatalog } from './catalog.js';
import type { BackupRecord, SegmentRecord } from './catalog.js';
import { getCodec } from './compression.js';
import type { CodecName } from './compression.js';
import { decryptStream, encryptStream } from './encryption.js';
import type { CapturedTransaction, ChangePosition } from './engine.js';
import { StrataError, errorText, isStrataError, redactable, wrapError } from './errors.js';
import { readTar, tarHeaderBytes, tarPadding, tarTrailer } from './format/tar.js';
import { withRepositoryLock } from './lock.js';
import { timestampPart } from './naming.js';
import { announceWrite } from './pending-writes.js';
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
/** The transactions' bytes, concatenated in commit order. */
export const SEGMENT_CHANGES_ENTRY = 'changes.bin';
/** The segment's manifest, the archive's last entry. */
export const SEGMENT_MANIFEST_ENTRY = 'segment.json';
const SEGMENT_README_ENTRY = 'README.txt';
/** A segment's manifest is a few KiB (one line per transaction); more is not one of ours. */
const MAX_SEGMENT_MANIFEST_BYTES = 16 * 1024 * 1024;

/** One transaction of a segment, in order: its bytes in `changes.bin` follow the previous one's. */
export interface SegmentTransaction {
  readonly bytes: number;
  /** When capture saw it committed (ISO, ms): never before its commit. */
  readonly observedAt: string;
  /** When the read that found it began (ISO, ms): everything committed before is in it or earlier. */
  readonly scannedAt: string;
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

function parseSegmentKey(key: string): { codec: CodecName; encrypted: boolean } | undefined {
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

/**
 * Writes a segment and commits it: the catalog lists it only if the chain it continues is still
 * the newest of its base (its `previous` is the base's last segment). A kill at any point leaves
 * nothing visible but committed segments (the pending note covers the rest).
 */
export async function writeSegment(ctx: RepositoryContext, draft: SegmentDraft, signal?: AbortSignal): Promise<SegmentRecord> {
  if (draft.transactions.length === 0) throw new StrataError('INTERNAL', 'segment: no transactions to write');
  const now = new Date();
  const id = newSegmentId(draft.database, now);
  const codec = getCodec(ctx.config.compression.codec);
  const profile = ctx.vault.section.profile;
  const dataKey = profile === 'none' ? undefined : ctx.vault.current('replicate');
  const key = segmentKey(draft.database, id, codec.extension, profile !== 'none');
  const changes = Buffer.concat(draft.transactions.map((t) => t.bytes));
  const last = draft.transactions.at(-1)!;
  const manifest: SegmentManifest = {
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
    transactions: draft.transactions.map((t) => ({ bytes: t.bytes.byteLength, observedAt: new Date(t.observedAt).toISOString(), scannedAt: new Date(t.scannedAt).toISOString() })),
    changesBytes: changes.length,
    changesSha256: createHash('sha256').update(changes).digest('hex'),
    ...(dataKey?.id !== undefined ? { keyId: dataKey.id } : {}),
    tool: { name: 'strata', version: STRATA_VERSION },
  };
  const tar = Buffer.concat([
    ...entry(SEGMENT_README_ENTRY, Buffer.from(draft.readme ? `${README}\n${draft.readme}\n` : README), now),
    ...entry(SEGMENT_CHANGES_ENTRY, changes, now),
    ...entry(SEGMENT_MANIFEST_ENTRY, Buffer.from(JSON.stringify(manifest, null, 1) + '\n'), now),
    tarTrailer(),
  ]);
  let bytes: AsyncIterable<Uint8Array> = codec.compress(
    (async function* () {
      yield tar;
    })(),
    ctx.config.compression.level,
    signal,
  );
  if (profile !== 'none') bytes = encryptStream(bytes, dataKey!.secret, profile);
  const sha = createHash('sha256');
  const pending = await announceWrite(ctx.storage, id, [key], []);
  let committed = false;
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
    const record: SegmentRecord = {
      id,
      database: draft.database,
      engine: draft.engine,
      base: draft.base.id,
      sequence: draft.sequence,
      previous: draft.previous,
      from: draft.from,
      to: last.position,
      firstAt: manifest.transactions[0]!.observedAt,
      lastAt: manifest.transactions.at(-1)!.observedAt,
      transactions: draft.transactions.length,
      createdAt: manifest.createdAt,
      key,
      rawBytes: tar.length,
      storedBytes: info.size,
      sha256: sha.digest('hex'),
      compression: { codec: codec.name, level: ctx.config.compression.level },
      encryption: { profile, ...(dataKey?.id !== undefined ? { keyId: dataKey.id } : {}) },
    };
    await withRepositoryLock(
      ctx.storage,
      'replicate',
      async () => {
        const current = await readCatalogContents(ctx.storage);
        if (!current) throw new StrataError('CHAIN_BROKEN', `replicate: the catalog of ${ctx.storage.location} does not read; rebuild it (strata list rebuilds a missing one) and start again`);
        if (!current.backups.some((b) => b.id === draft.base.id)) {
          throw new StrataError('CHAIN_BROKEN', `replicate: the base restore point ${draft.base.id} was removed while segments were being added to it`, { details: { baseRemoved: true } });
        }
        const tip = current.segments.filter((s) => s.base === draft.base.id).at(-1);
        if ((tip?.id ?? null) !== draft.previous || (tip?.sequence ?? 0) + 1 !== draft.sequence) {
          throw new StrataError(
            'CHAIN_BROKEN',
            `replicate: segment ${draft.sequence} of ${draft.database} after ${draft.base.id} does not follow the newest one in the catalog (${tip ? `${tip.id}, sequence ${tip.sequence}` : 'none'}); is another \`strata replicate\` shipping ${draft.database}?`,
          );
        }
        await writeCatalog(ctx.storage, current.backups, [...current.segments, record]);
        committed = true;
      },
      ctx.options.lock,
    );
    await pending.committed().catch(() => undefined);
    return record;
  } catch (err) {
    if (!committed) {
      // As for a backup (catalog-commit.ts): an error does not prove the generation was not written.
      const listed = await readCatalogContents(ctx.storage).then(
        (c) => c?.segments.some((s) => s.key === key) ?? false,
        () => undefined,
      );
      if (listed === true) {
        await pending.committed().catch(() => undefined);
        throw err;
      }
      if (listed === false) await pending.abandon().catch(() => undefined);
    }
    throw isStrataError(err) ? err : wrapError(`replicate ${draft.database}: write segment`, err);
  }
}

/**
 * Checks that `segments` (one base's, sorted by sequence) form one unbroken chain from the base:
 * sequences 1, 2, 3..., each naming the one before and starting where it ended. Returns a sentence
 * naming the first break, or undefined.
 */
export function chainBreak(base: BackupRecord, segments: readonly SegmentRecord[]): string | undefined {
  let previous: SegmentRecord | undefined;
  for (const s of segments) {
    const expected = (previous?.sequence ?? 0) + 1;
    if (s.sequence !== expected) return `segment ${expected} after ${base.id} is missing (the next one listed is ${s.sequence}, ${s.id})`;
    if (s.previous !== (previous?.id ?? null)) return `segment ${s.sequence} (${s.id}) names ${s.previous ?? 'no segment'} before it, not ${previous?.id ?? 'none'}`;
    const start = previous ? previous.to : base.changePosition;
    if (!start || !samePosition(start, s.from)) return `segment ${s.sequence} (${s.id}) does not start where ${previous ? `segment ${previous.sequence}` : `its base ${base.id}`} ended`;
    previous = s;
  }
  return undefined;
}

/** Positions are plain JSON: equal when their keys and values are. */
export function samePosition(a: ChangePosition, b: ChangePosition): boolean {
  const canonical = (p: ChangePosition): string => JSON.stringify(Object.keys(p).sort().map((k) => [k, p[k]]));
  return canonical(a) === canonical(b);
}

/**
 * Reads a segment's artifact whole and checks it: its size and SHA-256 against the catalog, the
 * encryption's integrity, the manifest against the catalog record, the changes against the
 * manifest's SHA-256 and per-transaction sizes. The changes go to `out` (a file in a private
 * folder, created 0600). Any mismatch is ARTIFACT_CORRUPT naming the segment.
 */
export async function readSegment(ctx: RepositoryContext, record: SegmentRecord, out: string, signal?: AbortSignal): Promise<SegmentManifest> {
  const parsed = parseSegmentKey(record.key);
  if (!parsed) throw new StrataError('ARTIFACT_FOREIGN', `catalog: ${record.key} is not a segment name Strata writes`);
  const what = `segment ${record.sequence} (${record.id}) after ${record.base}`;
  const corrupt = (why: string): StrataError => new StrataError('ARTIFACT_CORRUPT', `${what}: ${why}; the chain of segments cannot be replayed past it`);
  const file = await fs.open(out, 'wx', 0o600);
  try {
    let source: AsyncIterable<Uint8Array>;
    try {
      source = await ctx.storage.get(record.key, signal ? { signal } : {});
    } catch (err) {
      throw new StrataError('CHAIN_BROKEN', redactable`${what}: cannot read ${record.key}: ${errorText(err)}`, { cause: err });
    }
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
    if (parsed.encrypted) plain = decryptStream(plain, ctx.vault.keyFor(record, 'restore')!);
    plain = getCodec(parsed.codec).decompress(plain, signal);
    let manifest: SegmentManifest | undefined;
    const changesSha = createHash('sha256');
    let changesBytes = 0;
    let sawChanges = false;
    try {
      for await (const item of readTar(plain)) {
        if (item.name === SEGMENT_CHANGES_ENTRY) {
          sawChanges = true;
          for await (const chunk of item.body) {
            changesSha.update(chunk);
            changesBytes += chunk.length;
            let done = 0;
            while (done < chunk.length) done += (await file.write(chunk, done, chunk.length - done)).bytesWritten;
          }
        } else if (item.name === SEGMENT_MANIFEST_ENTRY) {
          if (item.size > MAX_SEGMENT_MANIFEST_BYTES) throw corrupt('its manifest is too large');
          const parts: Buffer[] = [];
          for await (const chunk of item.body) parts.push(chunk);
          try {
            manifest = JSON.parse(Buffer.concat(parts).toString('utf8')) as SegmentManifest;
          } catch {
            throw corrupt('its manifest is not JSON');
          }
        } else {
          for await (const _ of item.body) void _;
        }
      }
    } catch (err) {
      if (isStrataError(err) && err.message.startsWith(what)) throw err;
      if (isStrataError(err, 'ABORTED')) throw err;
      throw new StrataError(isStrataError(err, 'PASSPHRASE_WRONG') ? 'PASSPHRASE_WRONG' : 'ARTIFACT_CORRUPT', redactable`${what}: ${errorText(err)}`, { cause: err });
    }
    if (stored !== record.storedBytes) throw corrupt(`it has ${stored} bytes, the catalog says ${record.storedBytes}`);
    if (sha.digest('hex') !== record.sha256) throw corrupt("its SHA-256 is not the catalog's");
    if (!manifest || manifest.format !== SEGMENT_FORMAT) throw corrupt('it has no segment manifest');
    if (manifest.version > SEGMENT_VERSION) throw new StrataError('ARTIFACT_FOREIGN', `${what}: segment format version ${manifest.version} is newer than this Strata reads (${SEGMENT_VERSION}); upgrade Strata`);
    if (manifest.id !== record.id || manifest.base !== record.base || manifest.sequence !== record.sequence || manifest.previous !== record.previous) {
      throw corrupt(`its manifest describes segment ${manifest.sequence} (${manifest.id}) after ${manifest.base}, not this one`);
    }
    if (!samePosition(manifest.from, record.from) || !samePosition(manifest.to, record.to)) throw corrupt("its positions are not the catalog's");
    if (!sawChanges || changesBytes !== manifest.changesBytes || changesSha.digest('hex') !== manifest.changesSha256) throw corrupt('its changes do not match its manifest');
    if (!Array.isArray(manifest.transactions) || manifest.transactions.reduce((sum, t) => sum + t.bytes, 0) !== changesBytes || manifest.transactions.length !== record.transactions) {
      throw corrupt('its transactions do not add up to its changes');
    }
    await file.sync();
    return manifest;
  } finally {
    await file.close();
  }
}
