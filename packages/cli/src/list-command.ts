import { BACKUP_TYPES, StrataError, continuityWindows, durationBefore, newestGoodByDatabase, parseDuration } from '@strata/sdk';
import type { BackupRecord, BackupType, ContinuityWindow } from '@strata/sdk';
import { describeLogCoverage } from '@strata/protocol/continuity';
import { describeBackupType } from '@strata/protocol/labels';
import { DEFAULT_ROWS_PER_DATABASE } from './command-table.js';
import type { CommandContext } from './context.js';
import { printTable } from './table.js';
import type { ColumnFit, TableFit } from './table.js';
import { formatAge, formatBytes, printable } from './terminal.js';

/** Options of `strata list`. */
export interface ListCommandOptions {
  readonly database?: string;
  /** At most this many restore points per database, the newest. */
  readonly limit?: number;
  /** Only restore points taken at or after this moment. */
  readonly since?: Date;
  /** Only these types (any of them). */
  readonly types?: readonly BackupType[];
  /** Only restore points carrying one of these tags. */
  readonly tags?: readonly string[];
  /** Only restore points with exactly this label. */
  readonly label?: string;
  /** Every restore point, even on a terminal. */
  readonly all?: boolean;
  /** Columns at full width, even on a terminal. */
  readonly wide?: boolean;
}

/**
 * Reads `--since`: an ISO date or time (`2026-11-01`, `2026-11-01T12:00:00Z`), or a duration
 * back from now (`7d`, `12h`, the durations of duration.ts).
 */
export function parseSince(text: string, now = Date.now()): Date {
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const at = new Date(text);
    if (!Number.isNaN(at.getTime())) return at;
  } else if (/^\d/.test(text)) {
    return durationBefore(now, parseDuration(text, 'list: --since'));
  }
  throw new StrataError('USAGE', `list: --since ${JSON.stringify(text)} is neither an ISO date/time (2026-11-01, 2026-11-01T12:00:00Z) nor a duration back from now (12h, 7d, 2w)`);
}

/** Reads `--type` values; `schema` is short for `schema-only`. */
export function parseTypes(values: readonly string[]): BackupType[] {
  return values.flatMap((v) => v.split(',')).map((v) => {
    const type = (v.trim() === 'schema' ? 'schema-only' : v.trim()) as BackupType;
    if (!BACKUP_TYPES.includes(type)) throw new StrataError('USAGE', `list: --type must be one of full, incremental, differential, schema (got ${JSON.stringify(v)})`);
    return type;
  });
}

/** The restore points that match every filter given (a filter not given matches everything). */
export function matchBackups(backups: readonly BackupRecord[], options: ListCommandOptions): BackupRecord[] {
  return backups.filter(
    (b) =>
      (options.since === undefined || Date.parse(b.createdAt) >= options.since.getTime()) &&
      (options.types === undefined || options.types.length === 0 || options.types.includes(b.type)) &&
      (options.tags === undefined || options.tags.length === 0 || options.tags.some((t) => b.tags.includes(t))) &&
      (options.label === undefined || b.label === options.label),
  );
}

/**
 * The newest `limit` restore points of each database (by creation time), in catalog order, and
 * how many of each database were left out.
 */
export function newestPerDatabase(backups: readonly BackupRecord[], limit: number): { shown: BackupRecord[]; omitted: Map<string, number> } {
  const byDatabase = new Map<string, BackupRecord[]>();
  for (const b of backups) byDatabase.set(b.database, [...(byDatabase.get(b.database) ?? []), b]);
  const kept = new Set<BackupRecord>();
  const omitted = new Map<string, number>();
  for (const [database, list] of byDatabase) {
    const newest = [...list].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id)).slice(0, limit);
    for (const b of newest) kept.add(b);
    if (list.length > newest.length) omitted.set(database, list.length - newest.length);
  }
  return { shown: backups.filter((b) => kept.has(b)), omitted };
}

export async function listCommand(ctx: CommandContext, options: ListCommandOptions): Promise<number> {
  const repo = await ctx.repository();
  const all = await repo.list(options.database === undefined ? {} : { database: options.database });
  // The newest good restore point is a fact of the database, not of the filter: a listing of
  // schema-only backups must not name one of them the newest good.
  const good = newestGoodByDatabase(all);
  const matched = matchBackups(all, options);
  const databases = [...new Set(matched.map((b) => b.database))].sort();
  // A person on a terminal gets a screenful; a pipe, a script and --json get everything asked for.
  const onTerminal = process.stdout.isTTY === true && !ctx.json;
  const limit = options.limit ?? (onTerminal && !options.all ? DEFAULT_ROWS_PER_DATABASE : undefined);
  const { shown: backups, omitted } = limit === undefined ? { shown: matched, omitted: new Map<string, number>() } : newestPerDatabase(matched, limit);
  // Continuous protection: what the chains of segments cover, per database listed.
  const continuity = continuityWindows(all, await repo.segments(options.database === undefined ? {} : { database: options.database })).filter((w) => databases.includes(w.database));
  // Base backups that replay a log archive: what the archive lets them reach.
  const logWindows = all.some((b) => b.logRange) ? (await repo.logWindows(options.database === undefined ? {} : { database: options.database })).filter((w) => databases.includes(w.database)) : [];
  if (ctx.json) {
    ctx.printJson({
      repository: repo.settings.location,
      backups,
      ...(continuity.length > 0 ? { continuity } : {}),
      ...(logWindows.length > 0 ? { logWindows } : {}),
      newestGood: Object.fromEntries(databases.map((d) => [d, good.get(d)?.id ?? null])),
      // Restore points that matched but --limit left out, per database; empty without --limit.
      omitted: Object.fromEntries(omitted),
    });
    return 0;
  }
  if (backups.length === 0) {
    const filtered = matched.length !== all.length;
    if (all.length === 0 && options.database !== undefined) {
      const known = [...new Set((await repo.list()).map((b) => b.database))].sort();
      process.stdout.write(`no backups of ${printable(options.database)}${known.length > 0 ? ` (this repository has backups of ${known.map(printable).join(', ')})` : ''}\n`);
    } else process.stdout.write(filtered ? `no backups match (${all.length} without the filters)\n` : 'no backups yet\n');
    return 0;
  }
  // With key files, which data key each artifact needs (after a rotation they differ).
  const keyed = backups.some((b) => b.encryption.keyId !== undefined);
  const columns: { header: string; fit?: ColumnFit; cell: (b: BackupRecord, depth: number) => string }[] = [
    { header: 'ID', cell: (b, depth) => `${depth > 0 ? `${'  '.repeat(depth - 1)}└ ` : ''}${b.id}${good.get(b.database) === b ? ' *' : ''}` },
    { header: 'DATABASE', fit: { drop: 5, shrink: 5, min: 8, elide: 'end' }, cell: (b) => b.database },
    { header: 'ENGINE', fit: { drop: 2 }, cell: (b) => b.engine },
    // An incremental says how it stores its changes when its engine has more than one way.
    { header: 'TYPE', cell: (b) => printable(describeBackupType(b)) },
    { header: 'CREATED', cell: (b) => b.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z') },
    { header: 'AGE', fit: { drop: 1 }, cell: (b) => formatAge(b.createdAt) },
    { header: 'DB SIZE', fit: { drop: 4 }, cell: (b) => formatBytes(b.databaseBytes) },
    { header: 'STORED', fit: { drop: 9 }, cell: (b) => formatBytes(b.storedBytes) },
    ...(keyed ? [{ header: 'DATA KEY', fit: { drop: 3 }, cell: (b: BackupRecord) => b.encryption.keyId ?? '-' }] : []),
    { header: 'CHAIN', fit: { drop: 8, shrink: 2, min: 14, elide: 'middle' }, cell: (b) => (b.parent ? `← ${b.parent}` : '') },
    { header: 'VERIFIED', fit: { drop: 7, shrink: 3, min: 10, elide: 'end' }, cell: (b) => (b.verification ? `${b.verification.outcome} (${b.verification.level}, ${formatAge(b.verification.at)})` : 'never') },
    { header: 'LABEL', fit: { drop: 6, shrink: 1, min: 12, elide: 'end' }, cell: (b) => b.label ?? '' },
  ];
  const rows = chainOrder(backups).map(({ backup, depth }) => columns.map((c) => c.cell(backup, depth)));
  const fit: TableFit | undefined = onTerminal && !options.wide && process.stdout.columns ? { width: process.stdout.columns, fits: columns.map((c) => c.fit) } : undefined;
  const layout = printTable(
    columns.map((c) => c.header),
    rows,
    fit,
  );
  const hidden = [...omitted.values()].reduce((a, b) => a + b, 0);
  if (hidden === 0) process.stdout.write(`${backups.length} backup(s)\n`);
  else {
    const which = [...omitted].map(([d, n]) => `${n} older of ${printable(d)}`).join(', ');
    process.stdout.write(
      options.limit === undefined
        ? `${backups.length} of ${matched.length} backup(s): the newest ${limit} of each database (${which} not shown; --all lists every one, --limit N the newest N, --since 7d those of the last 7 days)\n`
        : `${backups.length} of ${matched.length} backup(s): the newest ${limit} of each database, as --limit asked (${which} not shown)\n`,
    );
  }
  if (good.size > 0 && backups.some((b) => good.get(b.database) === b)) {
    process.stdout.write('* the newest good restore point of its database (what health measures and retention always keeps)\n');
  }
  for (const database of databases) {
    if (!good.has(database)) process.stdout.write(`${printable(database)} has no good restore point (none with data whose last verification did not fail)\n`);
  }
  for (const line of continuityLines(continuity, Date.now())) process.stdout.write(`${line}\n`);
  for (const database of databases) {
    const line = describeLogCoverage(logWindows.filter((w) => w.database === database), Date.now(), (iso) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'));
    if (line) process.stdout.write(`${printable(database)}: ${line}\n`);
  }
  const left = columns.filter((_, i) => layout.widths[i] === null).map((c) => c.header);
  if (left.length > 0 || layout.cut) {
    const what = [...(left.length > 0 ? [`left out ${left.join(', ')}`] : []), ...(layout.cut ? ['cut long cells (…)'] : [])].join(' and ');
    process.stdout.write(`to fit the terminal, ${what}: --wide shows every column whole\n`);
  }
  return 0;
}

/**
 * Newest chains first; within a chain the full backup, then each restore point under the one it
 * depends on, so a person sees what a restore will need. A restore point is indented one step
 * deeper than its parent only where the chain branches (or under the chain's first): a run of
 * hourly incrementals, each on the one before, stays at one depth instead of marching off the
 * screen, and the CHAIN column names each one's parent.
 */
export function chainOrder(backups: readonly BackupRecord[]): { backup: BackupRecord; depth: number }[] {
  const children = new Map<string, BackupRecord[]>();
  const roots: BackupRecord[] = [];
  const ids = new Set(backups.map((b) => b.id));
  for (const b of backups) {
    if (b.parent && ids.has(b.parent)) {
      const siblings = children.get(b.parent);
      if (siblings) siblings.push(b);
      else children.set(b.parent, [b]);
    } else roots.push(b);
  }
  // Linear in the number of backups (a repository can hold tens of thousands), and without
  // recursion, so a chain of any length cannot overflow the stack.
  const out: { backup: BackupRecord; depth: number }[] = [];
  const listed = new Set<BackupRecord>();
  const visit = (root: BackupRecord): void => {
    // Depth first, each backup before its dependants, newest dependants first (like the roots):
    // children go on the stack oldest first, so the newest comes off first.
    const stack: { backup: BackupRecord; depth: number }[] = [{ backup: root, depth: 0 }];
    for (let next = stack.pop(); next; next = stack.pop()) {
      if (listed.has(next.backup)) continue;
      listed.add(next.backup);
      out.push(next);
      const mine = children.get(next.backup.id) ?? [];
      const step = next.depth === 0 || mine.length > 1 ? 1 : 0;
      for (const child of mine) stack.push({ backup: child, depth: next.depth + step });
    }
  };
  for (const root of [...roots].reverse()) visit(root);
  // Backups whose parent links loop (a damaged catalog) have no root; list them anyway.
  for (const b of [...backups].reverse()) {
    if (listed.has(b)) continue;
    listed.add(b);
    out.push({ backup: b, depth: 0 });
  }
  return out;
}

/**
 * Per database with segments: the window its newest chain covers ("continuous since ..., last
 * change shipped 0.8 s ago") and how many older chains there are, each a window of its own.
 */
export function continuityLines(windows: readonly ContinuityWindow[], now: number): string[] {
  const lines: string[] = [];
  for (const database of [...new Set(windows.map((w) => w.database))].sort()) {
    const mine = windows.filter((w) => w.database === database);
    const newest = mine.at(-1)!;
    const ago = (now - Date.parse(newest.lastShippedAt)) / 1000;
    const shipped = ago < 60 ? `${ago.toFixed(1)} s ago` : formatAge(newest.lastShippedAt);
    lines.push(
      `${printable(database)}: continuous since ${newest.from.replace('T', ' ').replace(/\.\d+Z$/, 'Z')} (from ${newest.base}, ${newest.segments} segment(s), ${newest.transactions} transaction(s), ${formatBytes(newest.storedBytes)}), last change shipped ${shipped}${newest.broken ? `; BROKEN: ${newest.broken}` : ''}` +
        (mine.length > 1 ? `; ${mine.length - 1} earlier window(s) back to ${mine[0]!.from.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}` : ''),
    );
  }
  return lines;
}
