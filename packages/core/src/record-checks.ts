import type { BackupRecord, SegmentRecord } from './catalog.js';
import { StrataError } from './errors.js';
import { BACKUP_TYPES, isShortText } from './format/manifest.js';
import { artifactKey, validateDatabaseName } from './naming.js';
import { segmentKey } from './segments.js';

/**
 * How far ahead of this machine's clock a restore point may be dated: clocks of two machines
 * sharing a repository drift by seconds, not minutes. Anything later would sort as "newest" for
 * years, blinding retention (`--keep-within`), `health` and `restore latest`.
 */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;

/** Refuses a time beyond {@link MAX_CLOCK_SKEW_MS} from now, naming what it is for. */
export function refuseFutureTime(time: Date, what: string, now: Date = new Date()): void {
  if (time.getTime() > now.getTime() + MAX_CLOCK_SKEW_MS) {
    throw new StrataError(
      'USAGE',
      `${what}: ${time.toISOString()} is in the future (this machine's clock says ${now.toISOString()}); a restore point from the future would count as the newest for every retention, health and restore decision. Check the clock or the --time you gave`,
    );
  }
}

/** File extensions by codec name, as artifactKey() writes them (the codec itself need not be installed to check a name). */
const CODEC_EXTENSIONS: Readonly<Record<string, string>> = { zstd: '.zst', gzip: '.gz', none: '' };

/** `{database}_{type}_{YYYYMMDD_HHMMSS}_{4 hex}`, the only id shape Strata ever writes. */
function backupIdPattern(database: string): RegExp {
  const escaped = database.replace(/[.]/g, '\\.');
  return new RegExp(`^${escaped}_(${BACKUP_TYPES.join('|')})_\\d{8}_\\d{6}_[0-9a-f]{4}$`);
}

/**
 * Checks a catalog record that came from outside this repository (an export bundle) before any of
 * its fields is used as a storage key or shown to a user: names follow Strata's grammar, the key
 * is exactly where this record's artifact belongs (`backups/<database>/<id>...`), sizes and hashes
 * have their shapes, and the time is not in the future. A hostile bundle gets ARTIFACT_HOSTILE
 * naming the record, and nothing of it is written.
 */
export function checkForeignRecord(record: BackupRecord, where: string, now: Date = new Date()): void {
  const fail = (what: string): never => {
    throw new StrataError('ARTIFACT_HOSTILE', `${where}: a backup record ${what}; the bundle was not made by Strata or was altered, and nothing of it was imported`);
  };
  if (typeof record !== 'object' || record === null) fail('is not an object');
  if (typeof record.database !== 'string') fail('has no database name');
  try {
    validateDatabaseName(record.database);
  } catch {
    fail(`names a database that is not allowed (${JSON.stringify(String(record.database).slice(0, 80))})`);
  }
  const idShape = backupIdPattern(record.database);
  if (typeof record.id !== 'string' || !idShape.test(record.id)) fail(`has an id that is not a Strata backup id of ${record.database}`);
  if (!BACKUP_TYPES.includes(record.type) || !record.id.startsWith(`${record.database}_${record.type}_`)) fail(`(${record.id}) has a type that does not match its id`);
  for (const link of [record.parent, record.base]) {
    if (link !== null && (typeof link !== 'string' || !idShape.test(link))) fail(`(${record.id}) links to a parent or base that is not a backup of ${record.database}`);
  }
  const extension = CODEC_EXTENSIONS[String(record.compression?.codec)];
  if (extension === undefined) fail(`(${record.id}) names an unknown compression`);
  const encrypted = record.encryption?.profile !== 'none';
  if (record.key !== artifactKey(record.database, record.id, extension!, encrypted)) fail(`(${record.id}) points at a file outside its own place (${JSON.stringify(String(record.key).slice(0, 120))})`);
  const keyId = (record.encryption as { keyId?: unknown } | undefined)?.keyId;
  if (keyId !== undefined && (typeof keyId !== 'string' || !/^[0-9a-f]{8}$/.test(keyId))) fail(`(${record.id}) names a data key id Strata never writes`);
  if (typeof record.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(record.sha256)) fail(`(${record.id}) has a malformed SHA-256`);
  if (!Number.isSafeInteger(record.storedBytes) || record.storedBytes < 0) fail(`(${record.id}) has a malformed size`);
  const created = new Date(record.createdAt);
  if (typeof record.createdAt !== 'string' || Number.isNaN(created.getTime())) fail(`(${record.id}) has no valid creation time`);
  if (created.getTime() > now.getTime() + MAX_CLOCK_SKEW_MS) fail(`(${record.id}) is dated ${record.createdAt}, in the future`);
  if (record.incrementalMethod !== undefined && !isShortText(record.incrementalMethod)) fail(`(${record.id}) has an incremental method that is not a few printable words`);
}

/**
 * {@link checkForeignRecord} for a segment's record: its id and key in its own place
 * (`backups/<database>/segments/<id>...`), its base one of the bundle's backups of the same
 * database, its chain fields, sizes and hash of the shapes Strata writes.
 */
export function checkForeignSegment(record: SegmentRecord, bases: ReadonlyMap<string, BackupRecord>, where: string, now: Date = new Date()): void {
  const fail = (what: string): never => {
    throw new StrataError('ARTIFACT_HOSTILE', `${where}: a segment record ${what}; the bundle was not made by Strata or was altered, and nothing of it was imported`);
  };
  if (typeof record !== 'object' || record === null) fail('is not an object');
  const base = typeof record.base === 'string' ? bases.get(record.base) : undefined;
  if (!base || !base.changePosition) fail(`(${String(record.id).slice(0, 80)}) follows no base restore point the bundle holds`);
  if (record.database !== base!.database) fail(`(${String(record.id).slice(0, 80)}) is of another database than its base`);
  const escaped = record.database.replace(/[.]/g, '\\.');
  const idShape = new RegExp(`^${escaped}_segment_\\d{8}_\\d{6}_[0-9a-f]{6}$`);
  if (typeof record.id !== 'string' || !idShape.test(record.id)) fail(`has an id that is not a Strata segment id of ${record.database}`);
  if (!Number.isSafeInteger(record.sequence) || record.sequence < 1) fail(`(${record.id}) has a malformed sequence`);
  if (record.previous !== null && (typeof record.previous !== 'string' || !idShape.test(record.previous))) fail(`(${record.id}) names a previous segment that is not one of ${record.database}`);
  const extension = CODEC_EXTENSIONS[String(record.compression?.codec)];
  if (extension === undefined) fail(`(${record.id}) names an unknown compression`);
  if (record.key !== segmentKey(record.database, record.id, extension!, record.encryption?.profile !== 'none')) fail(`(${record.id}) points at a file outside its own place (${JSON.stringify(String(record.key).slice(0, 120))})`);
  const keyId = (record.encryption as { keyId?: unknown } | undefined)?.keyId;
  if (keyId !== undefined && (typeof keyId !== 'string' || !/^[0-9a-f]{8}$/.test(keyId))) fail(`(${record.id}) names a data key id Strata never writes`);
  if (typeof record.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(record.sha256)) fail(`(${record.id}) has a malformed SHA-256`);
  if (!Number.isSafeInteger(record.storedBytes) || record.storedBytes < 0) fail(`(${record.id}) has a malformed size`);
  for (const time of [record.createdAt, record.firstAt, record.lastAt]) {
    const parsed = new Date(time);
    if (typeof time !== 'string' || Number.isNaN(parsed.getTime())) fail(`(${record.id}) has a time that is not valid`);
    if (parsed.getTime() > now.getTime() + MAX_CLOCK_SKEW_MS) fail(`(${record.id}) is dated ${time}, in the future`);
  }
}
