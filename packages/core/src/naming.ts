import { randomBytes } from 'node:crypto';
import { StrataError } from './errors.js';
import type { BackupType } from './format/manifest.js';

/** Database names become folder and file names, so they stay portable and unambiguous. */
const DATABASE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks a database name; the error says exactly what is allowed. */
export function validateDatabaseName(name: string): string {
  if (!DATABASE_NAME.test(name) || name.includes('..')) {
    throw new StrataError(
      'USAGE',
      `database name ${JSON.stringify(name)} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  return name;
}

/** `YYYYMMDD_HHMMSS` in UTC. */
export function timestampPart(time: Date): string {
  const iso = time.toISOString();
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}_${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}`;
}

/**
 * A backup id following `{database}_{type}_{YYYYMMDD_HHMMSS}_{suffix}`: readable in a folder
 * listing, sortable by time within a database, and unique thanks to a short random suffix.
 */
export function newBackupId(database: string, type: BackupType, time: Date): string {
  return `${database}_${type}_${timestampPart(time)}_${randomBytes(2).toString('hex')}`;
}

/** Storage key of an artifact: `backups/{database}/{id}.tar{.zst|.gz}{.gpg}`. */
export function artifactKey(database: string, id: string, compressionExtension: string, encrypted: boolean): string {
  return `backups/${database}/${id}.tar${compressionExtension}${encrypted ? '.gpg' : ''}`;
}

/** What a file name tells about an artifact's layers, for rebuilding a lost catalog. */
export function parseArtifactKey(key: string): { id: string; database: string; codec: 'zstd' | 'gzip' | 'none'; encrypted: boolean } | undefined {
  const match = /^backups\/([^/]+)\/([^/]+)\.tar(\.zst|\.gz)?(\.gpg)?$/.exec(key);
  if (!match) return undefined;
  const codec = match[3] === '.zst' ? 'zstd' : match[3] === '.gz' ? 'gzip' : 'none';
  return { database: match[1]!, id: match[2]!, codec, encrypted: match[4] !== undefined };
}
