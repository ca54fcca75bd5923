import type { BackupRecord } from './catalog.js';

/**
 * What "good" means wherever Strata speaks of a database's newest good backup: `health` measures
 * its age, retention always keeps it, `delete` warns before removing it, `export` ships it, `list`
 * and the editor's status bar show it. One definition, so that they never disagree.
 */

/**
 * A restore point that brings the data back: it holds rows (a schema-only backup restores an
 * empty database) and its last verification, if any, did not fail.
 */
export function isGoodRestorePoint(backup: BackupRecord): boolean {
  return backup.type !== 'schema-only' && backup.verification?.outcome !== 'failed';
}

/** Newest first by creation time, the id breaking ties (ids sort by time within a database). */
export function compareNewestFirst(a: BackupRecord, b: BackupRecord): number {
  return b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id);
}

/** The newest good restore point among one database's backups, in any order. */
export function newestGoodBackup(backups: readonly BackupRecord[]): BackupRecord | undefined {
  return [...backups].sort(compareNewestFirst).find(isGoodRestorePoint);
}

/** Each database's newest good restore point (databases without one are absent). */
export function newestGoodByDatabase(backups: readonly BackupRecord[]): Map<string, BackupRecord> {
  const out = new Map<string, BackupRecord>();
  for (const backup of [...backups].sort(compareNewestFirst)) {
    if (!out.has(backup.database) && isGoodRestorePoint(backup)) out.set(backup.database, backup);
  }
  return out;
}
