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

/** The checks that compare a restored copy with what the backup recorded. */
const CONTENT_CHECKS: ReadonlySet<string> = new Set(['schema-integrity', 'data-consistency']);

/**
 * The link of `backup`'s chain whose last verification found its restored data wrong (its schema
 * or rows differed from what the backup recorded), or undefined. What a restore passes over when
 * it chooses for itself: restoring it would bring back wrong data without a word. Other failures
 * are not: a damaged or missing artifact the restore finds itself (and takes a mirror's copy where
 * there is one), and a copy that did not restore or open is most often the verifying machine's
 * doing (a tablespace folder in the way, a setting). A failure recorded without its checks (older
 * journals) counts, its cause unknown.
 */
export function contentFault(backup: BackupRecord, backups: readonly BackupRecord[]): { readonly link: BackupRecord; readonly failedAt: string; readonly checks: readonly string[] } | undefined {
  const byId = new Map(backups.map((b) => [b.id, b]));
  const seen = new Set<string>();
  for (let at: BackupRecord | undefined = backup; at && !seen.has(at.id); at = at.parent === null ? undefined : byId.get(at.parent)) {
    seen.add(at.id);
    const v = at.verification;
    if (v?.outcome !== 'failed') continue;
    const failed = v.checks.filter((c) => c.status === 'failed').map((c) => c.name);
    if (failed.length === 0 || failed.some((name) => CONTENT_CHECKS.has(name))) return { link: at, failedAt: v.at, checks: failed };
  }
  return undefined;
}

/** What {@link contentFault} found against `backup`, said of it: "its ancestor X failed verification at T (data-consistency)". */
export function describeContentFault(backup: BackupRecord, fault: NonNullable<ReturnType<typeof contentFault>>): string {
  const which = fault.checks.length > 0 ? ` (${fault.checks.join(', ')})` : '';
  return `${fault.link.id === backup.id ? 'it' : `its ancestor ${fault.link.id}`} failed verification at ${fault.failedAt}${which}: its restored data was not what the backup recorded`;
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

/**
 * An incremental or differential that stored nothing new against its parent: no row data, the
 * same schema and the same facts. Stored nothing but the schema as of now, one whose schema changed (a column, a
 * comment, a grant, a function) is not "unchanged": said so, a user might delete it, and with it
 * the only copy of that change.
 */
export function unchangedSinceParent(backup: BackupRecord, parent: BackupRecord | undefined): boolean {
  if (backup.parent === null || backup.payloadBytes !== 0 || parent === undefined || parent.schemaFingerprint !== backup.schemaFingerprint) return false;
  // A table emptied stores no new data either, and a sequence moved may be recorded only among
  // the facts: the facts (row counts, checksums, what else the engine records) must agree too.
  if (parent.rowCount !== backup.rowCount || parent.tableCount !== backup.tableCount) return false;
  return parent.factsSha256 === undefined || backup.factsSha256 === undefined || parent.factsSha256 === backup.factsSha256;
}
