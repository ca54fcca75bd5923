import type { BackupRecord } from './catalog.js';

/**
 * What "good" means wherever Strata speaks of a database's newest good backup: `health` measures
 * its age, retention always keeps it (and fills its tiers with it), `delete` warns before removing
 * it, `export` ships it, `list` and the editor's status bar show it, and a new incremental or
 * differential builds on it. One definition, so that they never disagree.
 */

/**
 * Why a restore point's chain cannot be relied on, or undefined when nothing is known against it:
 * a link (the point itself or an ancestor) whose last verification failed, or an ancestor absent
 * from `backups` (the catalog lost it, or links loop). A restore reads every link, so one bad
 * ancestor makes every restore point built on it bad, however well its own artifact verifies.
 */
export function chainFault(backup: BackupRecord, backups: readonly BackupRecord[] | ReadonlyMap<string, BackupRecord>): { readonly link: BackupRecord; readonly failedAt: string } | { readonly missing: string } | undefined {
  const byId = backups instanceof Map ? (backups as ReadonlyMap<string, BackupRecord>) : new Map((backups as readonly BackupRecord[]).map((b) => [b.id, b]));
  const seen = new Set<string>();
  for (let at: BackupRecord | undefined = backup; at; ) {
    if (at.verification?.outcome === 'failed') return { link: at, failedAt: at.verification.at };
    seen.add(at.id);
    if (at.parent === null) return undefined;
    const parent = byId.get(at.parent);
    if (!parent || seen.has(parent.id)) return { missing: at.parent };
    at = parent;
  }
  return undefined;
}

/** What {@link chainFault} found against `backup`, said of it: "its ancestor X failed verification at T". */
export function describeChainFault(backup: BackupRecord, fault: NonNullable<ReturnType<typeof chainFault>>): string {
  if ('missing' in fault) return `its ancestor ${fault.missing} is missing from the catalog`;
  return `${fault.link.id === backup.id ? 'it' : `its ancestor ${fault.link.id}`} failed verification at ${fault.failedAt}`;
}

/**
 * A restore point that brings the data back: it holds rows (a schema-only backup restores an
 * empty database), and no link of its chain is known bad (see {@link chainFault}). `backups` are
 * the records its ancestors are looked up in (its database's, or the whole catalog).
 */
export function isGoodRestorePoint(backup: BackupRecord, backups: readonly BackupRecord[] | ReadonlyMap<string, BackupRecord>): boolean {
  return backup.type !== 'schema-only' && chainFault(backup, backups) === undefined;
}

/** Newest first by creation time, the id breaking ties (ids sort by time within a database). */
export function compareNewestFirst(a: BackupRecord, b: BackupRecord): number {
  return b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id);
}

/** The newest good restore point among one database's backups, in any order. */
export function newestGoodBackup(backups: readonly BackupRecord[]): BackupRecord | undefined {
  const byId = new Map(backups.map((b) => [b.id, b]));
  return [...backups].sort(compareNewestFirst).find((b) => isGoodRestorePoint(b, byId));
}

/** Each database's newest good restore point (databases without one are absent). */
export function newestGoodByDatabase(backups: readonly BackupRecord[]): Map<string, BackupRecord> {
  const byId = new Map(backups.map((b) => [b.id, b]));
  const out = new Map<string, BackupRecord>();
  for (const backup of [...backups].sort(compareNewestFirst)) {
    if (!out.has(backup.database) && isGoodRestorePoint(backup, byId)) out.set(backup.database, backup);
  }
  return out;
}
