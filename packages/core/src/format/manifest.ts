import { StrataError } from '../errors.js';
import type { Chunking, LogRange, SchemaObjects, TableStats } from '../engine.js';
import { isFactsDelta } from './facts-delta.js';
import type { FactsDelta } from './facts-delta.js';

/**
 * The newest artifact format this code writes. Readers accept this and older versions. Version 2
 * is written only by backups whose manifest stores its facts as a delta (`factsDelta`); every other
 * artifact is still version 1, which older readers keep reading.
 */
export const ARTIFACT_FORMAT_VERSION = 2;
/** The version of artifacts whose facts are complete: older readers read them. */
export const PLAIN_FORMAT_VERSION = 1;
/** The version of artifacts whose manifest has `factsDelta`. */
export const FACTS_DELTA_FORMAT_VERSION = 2;
/** Name of the manifest entry, the last entry of every artifact's tar. */
export const MANIFEST_ENTRY = 'manifest.json';
/** Name of the schema entry (plain SQL, for people and for schema-only restores). */
export const SCHEMA_ENTRY = 'schema.sql';
/** Hand-restore notes written into every artifact. */
export const README_ENTRY = 'README.txt';
/** Manifests larger than this are refused: ours are a few KiB to a few MiB. */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

export type BackupType = 'full' | 'incremental' | 'differential' | 'schema-only';
export const BACKUP_TYPES: readonly BackupType[] = ['full', 'incremental', 'differential', 'schema-only'];

/** Written as `streams/<name>.json` ahead of a stream's payload, so readers can check chunks as they come. */
export interface StreamDescriptor {
  readonly name: string;
  readonly size: number | null;
  readonly chunking: Chunking;
  readonly payload: 'whole' | 'segments';
}

/** One stream as recorded in a manifest. */
export interface StreamManifest {
  readonly name: string;
  /** Bytes of the complete stream at this restore point. */
  readonly size: number;
  /** SHA-256 (hex) of the complete stream at this restore point. */
  readonly sha256: string;
  readonly chunking: Chunking;
  readonly chunkCount: number;
  /** Chunks whose bytes this artifact holds (all of them for a full backup). */
  readonly storedChunks: number;
  readonly storedBytes: number;
  /**
   * How the bytes are laid out in the tar:
   * - `whole`: one entry `data/<name>` with the complete stream (full backups);
   * - `segments`: pairs `chunks/<name>/<n>.idx` + `chunks/<name>/<n>.bin` with only stored chunks.
   */
  readonly payload: 'whole' | 'segments';
  /** Entry holding the stream's chunk layout, complete or as a delta (`layout/<name>.idx`). */
  readonly layoutEntry: string;
}

/**
 * The manifest: everything a reader needs to understand an artifact, and the facts the validator
 * checks after a restore. It never holds a secret.
 */
export interface Manifest {
  readonly format: 'strata-artifact';
  readonly formatVersion: number;
  readonly id: string;
  readonly database: string;
  readonly engine: string;
  readonly type: BackupType;
  /** ISO time the backup represents (`--time` can set it for imports and tests). */
  readonly createdAt: string;
  /** The restore point this one stores differences against (incremental, differential). */
  readonly parent: string | null;
  /** The full backup at the root of this restore point's chain (null for a full or schema-only). */
  readonly base: string | null;
  readonly label: string | null;
  readonly tags: readonly string[];
  readonly source: string;
  readonly databaseBytes: number;
  readonly schemaFingerprint: string;
  /** The schema object by object (absent in artifacts of older versions and of engines without it). */
  readonly schemaObjects?: SchemaObjects;
  /** Per-table facts: all tables, or with `factsDelta` only those added or changed since the parent. */
  readonly tables: readonly TableStats[];
  /**
   * Present when `tables` and `schemaObjects` hold only changes against the parent's complete
   * facts (format version 2); see format/facts-delta.ts. Absent: they are complete.
   */
  readonly factsDelta?: FactsDelta;
  readonly streams: readonly StreamManifest[];
  readonly engineMeta: Readonly<Record<string, unknown>>;
  readonly tool: { readonly name: 'strata'; readonly version: string };
  /**
   * The id of the data key the artifact was encrypted with (see docs/FORMAT.md, "Keys"); absent
   * when it is not encrypted or was encrypted with the repository's passphrase itself.
   */
  readonly keyId?: string;
  /**
   * Where the database's log stood at this snapshot, when continuous capture took it as the base
   * of a chain of segments (`strata replicate`). Engine-defined; absent in every other backup.
   */
  readonly changePosition?: Readonly<Record<string, unknown>>;
  /** The part of the database's log the snapshot needs (snapshots of files; see engine.ts `LogRange`). */
  readonly logRange?: LogRange;
  /** How this incremental or differential stores its changes, in words for `list` (see engine.ts `Snapshot.incrementalMethod`). */
  readonly incrementalMethod?: string;
  /**
   * Names of `tables` entries that are not tables (engine.ts `Engine.nonTableFacts`), left out of
   * the catalog's table and row counts. Absent in artifacts of older versions, whose counts
   * include them.
   */
  readonly nonTableFacts?: readonly string[];
}


/**
 * A few printable words (at most 100 characters, no control characters): what `list` and the
 * editor show as they are, so an escape sequence in a hostile artifact cannot repaint a terminal.
 */
export function isShortText(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= 100 && !/[\u0000-\u001f\u007f-\u009f]/.test(value);
}

/** Parses and checks a manifest's shape, refusing foreign or future formats with a clear error. */
export function parseManifest(bytes: Uint8Array, where: string): Manifest {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) throw new StrataError('ARTIFACT_HOSTILE', `${where}: manifest of ${bytes.byteLength} bytes is too large`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new StrataError('ARTIFACT_CORRUPT', `${where}: manifest is not valid JSON`, { cause: err });
  }
  const m = value as Partial<Manifest> | null;
  if (typeof m !== 'object' || m === null || m.format !== 'strata-artifact') {
    throw new StrataError('ARTIFACT_FOREIGN', `${where}: not a Strata artifact (manifest has no "format": "strata-artifact")`);
  }
  if (typeof m.formatVersion !== 'number' || m.formatVersion > ARTIFACT_FORMAT_VERSION || m.formatVersion < 1) {
    throw new StrataError(
      'ARTIFACT_FOREIGN',
      `${where}: artifact format version ${String(m.formatVersion)} is not supported by this Strata (reads 1 to ${ARTIFACT_FORMAT_VERSION}); upgrade Strata`,
      // A newer writer's artifact, not a damaged one: verify records nothing against it (validator.ts).
      typeof m.formatVersion === 'number' && m.formatVersion > ARTIFACT_FORMAT_VERSION ? { details: { newerFormat: m.formatVersion } } : {},
    );
  }
  const stringFields = ['id', 'database', 'engine', 'type', 'createdAt', 'schemaFingerprint'] as const;
  for (const field of stringFields) {
    if (typeof m[field] !== 'string' || (m[field] as string).length > 4096) {
      throw new StrataError('ARTIFACT_CORRUPT', `${where}: manifest field ${field} is missing or malformed`);
    }
  }
  if (!BACKUP_TYPES.includes(m.type as BackupType)) throw new StrataError('ARTIFACT_CORRUPT', `${where}: unknown backup type ${JSON.stringify(m.type)}`);
  if (!Array.isArray(m.streams) || !Array.isArray(m.tables)) throw new StrataError('ARTIFACT_CORRUPT', `${where}: manifest lacks streams or tables`);
  for (const s of m.streams) {
    if (typeof s?.name !== 'string' || typeof s.sha256 !== 'string' || !Number.isSafeInteger(s.size) || s.size < 0 || !Number.isSafeInteger(s.chunkCount)) {
      throw new StrataError('ARTIFACT_CORRUPT', `${where}: manifest has a malformed stream`);
    }
  }
  if (m.schemaObjects !== undefined) {
    const objects = m.schemaObjects as unknown;
    if (typeof objects !== 'object' || objects === null || Array.isArray(objects) || Object.entries(objects).some(([k, v]) => k.length > 4096 || typeof v !== 'string' || v.length > 128)) {
      throw new StrataError('ARTIFACT_CORRUPT', `${where}: manifest field schemaObjects is malformed`);
    }
  }
  if (m.nonTableFacts !== undefined && (!Array.isArray(m.nonTableFacts) || m.nonTableFacts.length > 64 || !m.nonTableFacts.every(isShortText))) {
    throw new StrataError('ARTIFACT_CORRUPT', `${where}: manifest field nonTableFacts is malformed`);
  }
  if (m.incrementalMethod !== undefined && !isShortText(m.incrementalMethod)) {
    throw new StrataError('ARTIFACT_CORRUPT', `${where}: manifest field incrementalMethod is malformed`);
  }
  if (m.factsDelta !== undefined && (!isFactsDelta(m.factsDelta) || m.parent === null || m.parent === undefined)) {
    throw new StrataError('ARTIFACT_CORRUPT', `${where}: manifest field factsDelta is malformed`);
  }
  return m as Manifest;
}
