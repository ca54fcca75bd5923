import { StrataError } from './errors.js';
import type { ChangePosition, LogRange } from './engine.js';
import { countTables } from './format/facts-delta.js';
import type { BackupType, Manifest } from './format/manifest.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';

/**
 * The catalog: immutable generations, `catalog/<generation, 12 digits>.json`, each the whole list.
 * A change creates the next generation with a conditional create (never replacing an object, so
 * an object store needs no rename), then deletes the older ones; readers take the newest.
 */
export const CATALOG_PREFIX = 'catalog/';
/** The catalog of repositories before format 3, replaced in place; read (and migrated), never written. */
export const LEGACY_CATALOG_KEY = 'catalog.json';
const CATALOG_VERSION = 1;
/**
 * Generations that list segments are version 2: a Strata from before segments would read their
 * backups and write the next generation without the segments, orphaning them, so it must refuse.
 */
const SEGMENTS_CATALOG_VERSION = 2;
const GENERATION = /^catalog\/(\d{12})\.json$/;

export type CheckName = 'file-accessibility' | 'checksum-match' | 'database-readable' | 'schema-integrity' | 'data-consistency';
export type CheckStatus = 'passed' | 'failed' | 'skipped';

/** The outcome of one validator check. */
export interface CheckResult {
  readonly name: CheckName;
  readonly status: CheckStatus;
  /** Why it failed or was skipped, or what it proved when it passed. */
  readonly reason: string;
  /**
   * The reason as the catalog and the journal keep it, when `reason` names schema objects or
   * quotes the database: counts instead of names ("rows differ in 1 table"). Absent when `reason`
   * names none.
   */
  readonly redacted?: string;
}

/**
 * The last verification of a backup, as the catalog keeps it. Its checks' reasons are the
 * redacted ones (see {@link redactCheck}): the catalog is plaintext even in an encrypted repository.
 */
export interface VerificationRecord {
  readonly at: string;
  readonly level: 'quick' | 'full';
  readonly outcome: 'passed' | 'failed';
  readonly checks: readonly CheckResult[];
}

/** A check as plaintext files keep it: its redacted reason in place of the reason. */
export function redactCheck(check: CheckResult): CheckResult {
  return { name: check.name, status: check.status, reason: check.redacted ?? check.reason };
}

/** One restore point as the catalog lists it. Everything here can be rebuilt from the artifact. */
export interface BackupRecord {
  readonly id: string;
  readonly database: string;
  readonly engine: string;
  readonly type: BackupType;
  readonly parent: string | null;
  readonly base: string | null;
  readonly createdAt: string;
  readonly label: string | null;
  readonly tags: readonly string[];
  /** Where the database was read from, without secrets. */
  readonly source: string;
  /** Storage key of the artifact. */
  readonly key: string;
  /** Bytes of the database when it was backed up. */
  readonly databaseBytes: number;
  /** Bytes of stream data this artifact holds (all of it for a full; the changes for the others). */
  readonly payloadBytes: number;
  /** Bytes of the uncompressed archive (tar) inside the artifact. */
  readonly rawBytes: number;
  /** Bytes of the artifact on storage. */
  readonly storedBytes: number;
  /** SHA-256 (hex) of the artifact file. */
  readonly sha256: string;
  readonly compression: { readonly codec: string; readonly level: number };
  /**
   * How the artifact is encrypted: the profile, and the id of the data key it needs (absent for
   * unencrypted artifacts and for those encrypted with the passphrase itself, before key files).
   */
  readonly encryption: { readonly profile: string; readonly keyId?: string };
  readonly schemaFingerprint: string;
  readonly tableCount: number;
  readonly rowCount: number;
  readonly verification: VerificationRecord | null;
  /** SHA-256 of the backup's chunk layouts, to validate the cached copy incrementals read. */
  readonly layoutsSha256?: string;
  /** Digest of the backup's complete facts (format/facts-delta.ts), to validate their cached copy. */
  readonly factsSha256?: string;
  /** SHA-256 of what the backup handed forward to its incrementals (carry-cache.ts), to validate the cached copy. */
  readonly carrySha256?: string;
  /**
   * Where the database's log stood at this restore point, for backups that continuous capture
   * took as the base of its segments (absent for all others).
   */
  readonly changePosition?: ChangePosition;
  /** The part of the database's log a snapshot of its files needs (see engine.ts `LogRange`); absent for others. */
  readonly logRange?: LogRange;
  /** On an incremental or differential: how it stores what changed since its parent, in words for `list` (absent when the engine did not say). */
  readonly incrementalMethod?: string;
}

/**
 * One segment of continuously captured transactions, as the catalog lists it. Segments chain:
 * `sequence` 1 starts at its base restore point's `changePosition`, each next one where the one
 * before ended (`from` equals the previous `to`). The transactions' times are in the artifact.
 */
export interface SegmentRecord {
  readonly id: string;
  readonly database: string;
  readonly engine: string;
  /** The restore point the chain of segments starts from. */
  readonly base: string;
  /** 1 for the first segment after the base, then one more for each. */
  readonly sequence: number;
  /** The segment before it (null for sequence 1). */
  readonly previous: string | null;
  /** Where the log stood before its first transaction and after its last (engine-defined). */
  readonly from: ChangePosition;
  readonly to: ChangePosition;
  /**
   * Set on a segment compaction merged from several consecutive ones: the sequence of the first it
   * holds (its own `sequence` is the last's), the id of the last one (the next segment names that
   * id as its previous), and how many original segments it holds.
   */
  readonly merged?: SegmentMerge;
  /** When its first and last transactions were seen committed (ISO). */
  readonly firstAt: string;
  readonly lastAt: string;
  readonly transactions: number;
  /** When it was written (ISO). */
  readonly createdAt: string;
  readonly key: string;
  /** Bytes of the uncompressed archive (tar) inside the artifact. */
  readonly rawBytes: number;
  readonly storedBytes: number;
  /** SHA-256 (hex) of the artifact file. */
  readonly sha256: string;
  readonly compression: { readonly codec: string; readonly level: number };
  readonly encryption: { readonly profile: string; readonly keyId?: string };
}

/** What a merged segment stands for (see {@link SegmentRecord.merged}). */
export interface SegmentMerge {
  readonly firstSequence: number;
  readonly lastId: string;
  readonly segments: number;
}

/** The first sequence a segment holds: its own, unless it was merged from several. */
export function firstSequenceOf(segment: Pick<SegmentRecord, 'sequence' | 'merged'>): number {
  return segment.merged?.firstSequence ?? segment.sequence;
}

/** The id the segment after this one names as its previous: the last original segment it holds. */
export function linkIdOf(segment: Pick<SegmentRecord, 'id' | 'merged'>): string {
  return segment.merged?.lastId ?? segment.id;
}

/** One catalog generation (and the old catalog.json): the list of backups and of segments. */
interface CatalogFile {
  format: 'strata-catalog';
  version: number;
  backups: BackupRecord[];
  segments?: SegmentRecord[];
}

/** A catalog generation as read: backups, and segments (empty in catalogs that have none). */
export interface CatalogContents {
  readonly backups: BackupRecord[];
  readonly segments: SegmentRecord[];
}

/** The key of a catalog generation. */
export function catalogGenerationKey(generation: number): string {
  return `${CATALOG_PREFIX}${String(generation).padStart(12, '0')}.json`;
}

/** The newest catalog generation present, if any. */
export async function newestCatalogGeneration(storage: Storage): Promise<number | undefined> {
  return (await generations(storage))[0];
}

/**
 * The generation this process last found or wrote as the newest, per storage: it lets a reader or
 * writer skip listing the catalog folder (the request a long-running replicator would otherwise
 * make twice per segment, and the dearest on an object store). Since writers delete the generations
 * they replace oldest first, "generation G exists and G+1 does not" means G is the newest: any
 * later writer either deleted G or left G+1 behind (see writeCatalog). Strata before this rule
 * deleted newest first; only a process of such a version killed twice at the wrong moments, between
 * two of this process's commits, could leave a gap after G, and this process would then write G+1
 * behind a newer generation.
 */
const knownNewest = new WeakMap<Storage, { readonly generation: number; readonly older: readonly number[] }>();

async function exists(storage: Storage, key: string): Promise<boolean> {
  return storage.stat(key).then(
    () => true,
    (err: unknown) => {
      if (isNotFound(err)) return false;
      throw err;
    },
  );
}

/**
 * The newest generation as remembered, if it is still the newest (see knownNewest), with the older
 * ones the last list found (a killed writer's leftovers, for the next write to delete); else undefined.
 */
async function stillNewest(storage: Storage): Promise<{ readonly generation: number; readonly older: readonly number[] } | undefined> {
  const known = knownNewest.get(storage);
  if (known === undefined || (await exists(storage, catalogGenerationKey(known.generation + 1)))) return undefined;
  return known;
}

/** Generations present, newest first. */
async function generations(storage: Storage): Promise<number[]> {
  const found: number[] = [];
  for await (const object of storage.list(CATALOG_PREFIX)) {
    const match = GENERATION.exec(object.key);
    if (match) found.push(Number(match[1]));
  }
  return found.sort((a, b) => b - a);
}

/**
 * Reads the catalog: its newest generation (or, before a repository moved to generations, the
 * old catalog.json). Returns undefined when there is none or the newest does not parse: the caller
 * rebuilds it from the artifacts. Never an older generation in place of a damaged newer one: that
 * would hide the backups the newer one added.
 */
export async function readCatalog(storage: Storage): Promise<BackupRecord[] | undefined> {
  return (await readCatalogContents(storage))?.backups;
}

/** {@link readCatalog} with the segments. */
export async function readCatalogContents(storage: Storage): Promise<CatalogContents | undefined> {
  const known = await stillNewest(storage);
  if (known !== undefined) {
    try {
      return parseCatalogContents(await storage.read(catalogGenerationKey(known.generation)));
    } catch (err) {
      // Replaced since: the list below finds the newest.
      if (!isNotFound(err)) throw err;
    }
  }
  // A writer deletes the generation it replaced: a reader that listed it just before reads the list again.
  for (let attempt = 0; ; attempt++) {
    const [newest, ...older] = await generations(storage);
    const key = newest === undefined ? LEGACY_CATALOG_KEY : catalogGenerationKey(newest);
    let bytes: Uint8Array;
    try {
      bytes = await storage.read(key);
    } catch (err) {
      if (isNotFound(err) && newest !== undefined && attempt < 10) continue;
      if (isNotFound(err)) return undefined;
      throw err;
    }
    if (newest === undefined) knownNewest.delete(storage);
    else knownNewest.set(storage, { generation: newest, older });
    return parseCatalogContents(bytes);
  }
}

/** A catalog object's records, or undefined when it is damaged (it is rebuilt like a missing one). */
export function parseCatalog(bytes: Uint8Array): BackupRecord[] | undefined {
  return parseCatalogContents(bytes)?.backups;
}

/** {@link parseCatalog} with the segments. */
export function parseCatalogContents(bytes: Uint8Array): CatalogContents | undefined {
  let parsed: Partial<CatalogFile>;
  try {
    parsed = JSON.parse(Buffer.from(bytes).toString('utf8')) as Partial<CatalogFile>;
  } catch {
    return undefined;
  }
  if (parsed?.format !== 'strata-catalog' || !Array.isArray(parsed.backups)) return undefined;
  if ((parsed.version ?? 0) > SEGMENTS_CATALOG_VERSION) {
    throw new StrataError('REPO_VERSION_UNSUPPORTED', `catalog: version ${parsed.version} was written by a newer Strata; upgrade Strata`);
  }
  const segments = Array.isArray(parsed.segments) ? parsed.segments.filter(isSegmentShaped) : [];
  return { backups: parsed.backups.filter(isRecordShaped), segments: sortSegments(segments) };
}

function isSegmentShaped(r: unknown): r is SegmentRecord {
  const s = r as Partial<SegmentRecord>;
  return typeof s?.id === 'string' && typeof s.key === 'string' && typeof s.base === 'string' && Number.isSafeInteger(s.sequence) && typeof s.firstAt === 'string' && typeof s.lastAt === 'string';
}

/** By database, then base, then sequence. */
export function sortSegments(segments: readonly SegmentRecord[]): SegmentRecord[] {
  return [...segments].sort((a, b) => a.database.localeCompare(b.database) || a.base.localeCompare(b.base) || a.sequence - b.sequence);
}

function isRecordShaped(r: unknown): r is BackupRecord {
  const rec = r as Partial<BackupRecord>;
  return typeof rec?.id === 'string' && typeof rec.key === 'string' && typeof rec.database === 'string' && typeof rec.createdAt === 'string';
}

/**
 * Writes the next catalog generation and then deletes the older ones. Call it holding the
 * repository lock. The conditional create is a second guard: if another process wrote the same
 * generation (a lock taken over from a holder that was not dead after all), this write fails
 * instead of silently replacing that process's change.
 */
export async function writeCatalog(storage: Storage, backups: readonly BackupRecord[], segments?: readonly SegmentRecord[]): Promise<void> {
  const redacted = backups.map((b) => (b.verification ? { ...b, verification: { ...b.verification, checks: b.verification.checks.map(redactCheck) } } : b));
  // The caller holds the lock; a remembered newest generation that still exists needs no list.
  const known = await stillNewest(storage);
  const existing = known !== undefined && (await exists(storage, catalogGenerationKey(known.generation))) ? [known.generation, ...known.older] : await generations(storage);
  // A change of the backups keeps the segments the newest generation lists (the caller holds the
  // lock, so that generation is the one it read), except those whose base is gone: their chain
  // starts nowhere (a prune or delete removes their files with the base's).
  let keptSegments = segments ? [...segments] : undefined;
  if (keptSegments === undefined) {
    if (existing[0] === undefined) keptSegments = [];
    else {
      const current = await storage.read(catalogGenerationKey(existing[0])).then(parseCatalogContents, () => undefined);
      keptSegments = current?.segments ?? [];
    }
  }
  const ids = new Set(backups.map((b) => b.id));
  keptSegments = keptSegments.filter((s) => ids.has(s.base));
  const file: CatalogFile = {
    format: 'strata-catalog',
    version: keptSegments.length > 0 ? SEGMENTS_CATALOG_VERSION : CATALOG_VERSION,
    backups: sortBackups(redacted),
    ...(keptSegments.length > 0 ? { segments: sortSegments(keptSegments) } : {}),
  };
  const next = (existing[0] ?? 0) + 1;
  if (!(await storage.createExclusive(catalogGenerationKey(next), Buffer.from(JSON.stringify(file, null, 1) + '\n')))) {
    throw new StrataError('REPO_LOCKED', `catalog: another process wrote catalog generation ${next} in ${storage.location} while this one held the repository lock; nothing was changed, try again`);
  }
  knownNewest.set(storage, { generation: next, older: [] });
  // Older generations are dead now; a kill before they go leaves them for the next write. Oldest
  // first, so that a kill never leaves an older generation without every newer one (knownNewest).
  for (const generation of [...existing].sort((a, b) => a - b)) await storage.delete(catalogGenerationKey(generation));
}

/** Oldest first, ties broken by id so the order is stable. */
export function sortBackups(backups: readonly BackupRecord[]): BackupRecord[] {
  return [...backups].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
}

/** Builds a catalog record from an artifact's manifest and what we learned writing or reading it. */
export function recordFromManifest(
  manifest: Manifest,
  artifact: { key: string; rawBytes: number; storedBytes: number; sha256: string; compression: { codec: string; level: number }; encryption: { profile: string; keyId?: string } },
): BackupRecord {
  return {
    id: manifest.id,
    database: manifest.database,
    engine: manifest.engine,
    type: manifest.type,
    parent: manifest.parent,
    base: manifest.base,
    createdAt: manifest.createdAt,
    label: manifest.label,
    tags: manifest.tags,
    source: manifest.source,
    key: artifact.key,
    databaseBytes: manifest.databaseBytes,
    payloadBytes: manifest.streams.reduce((sum, s) => sum + s.storedBytes, 0),
    rawBytes: artifact.rawBytes,
    storedBytes: artifact.storedBytes,
    sha256: artifact.sha256,
    compression: artifact.compression,
    encryption: artifact.encryption,
    schemaFingerprint: manifest.schemaFingerprint,
    ...(manifest.factsDelta ? { tableCount: manifest.factsDelta.tableCount, rowCount: manifest.factsDelta.rowCount } : countTables(manifest.tables, manifest.nonTableFacts)),
    verification: null,
    ...(manifest.changePosition ? { changePosition: manifest.changePosition } : {}),
    ...(manifest.logRange ? { logRange: manifest.logRange } : {}),
    ...(manifest.incrementalMethod ? { incrementalMethod: manifest.incrementalMethod } : {}),
  };
}
