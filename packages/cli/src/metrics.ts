import { attemptedDatabases, continuityWindows, inventory, isSameStorage, newestGoodByDatabase } from '@strata/sdk';
import type { BackupRecord, Repository } from '@strata/sdk';
import { writeFileAtomically } from './atomic-file.js';

/** One metric family: its samples by label set. */
interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: 'gauge' | 'counter';
  readonly samples: { readonly labels: Record<string, string>; readonly value: number }[];
}

/** A label value as the text format wants it: backslash, double quote and newline escaped. */
function labelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function render(families: readonly Family[]): string {
  const lines: string[] = [];
  for (const f of families) {
    lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels);
      lines.push(`${f.name}${labels.length > 0 ? `{${labels.map(([k, v]) => `${k}="${labelValue(v)}"`).join(',')}}` : ''} ${Number.isFinite(s.value) ? String(s.value) : 'NaN'}`);
    }
  }
  return lines.join('\n') + '\n';
}

const seconds = (iso: string): number => Date.parse(iso) / 1000;

/**
 * The repository's state in the Prometheus text format (what node_exporter's textfile collector
 * reads): per database its restore points, the age of the newest good one and of the newest
 * verification, the last backup's duration, size and compression ratio, failures from the journal,
 * replication lag and mirror lag; and the repository's size. Ages are as of `now`; the
 * *_timestamp_seconds gauges do not go stale between two writes of a textfile.
 */
export async function metricsText(repo: Repository, now = new Date()): Promise<string> {
  const backups = await repo.list();
  const segments = await repo.segments();
  const operations = await repo.journal.operations();
  const entries = inventory(backups);
  const good = newestGoodByDatabase(backups);
  const byDatabase = (name: string, help: string, type: Family['type'], values: [string, number | undefined][]): Family => ({
    name,
    help,
    type,
    samples: values.filter((v): v is [string, number] => v[1] !== undefined).map(([database, value]) => ({ labels: { database }, value })),
  });
  const newestOf = (database: string): BackupRecord | undefined => backups.filter((b) => b.database === database).sort((a, b) => a.createdAt.localeCompare(b.createdAt)).at(-1);
  const databases = entries.map((e) => e.database);
  /** The databases health watches: those with restore points, and those whose backup runs reached their source and failed. */
  const watched = [...new Set([...databases, ...attemptedDatabases(operations)])].sort();
  const nowS = now.getTime() / 1000;
  const lastBackupOp = (database: string) =>
    operations.filter((o) => o.kind === 'backup' && o.status === 'COMPLETED' && o.last.database === database).sort((a, b) => a.startedAt.localeCompare(b.startedAt)).at(-1);
  const windows = continuityWindows(backups, segments);
  const families: Family[] = [
    byDatabase('strata_backups', 'Restore points of the database in the repository.', 'gauge', entries.map((e) => [e.database, e.backups])),
    byDatabase('strata_stored_bytes', "Bytes the database's restore points take in the repository.", 'gauge', entries.map((e) => [e.database, e.storedBytes])),
    byDatabase('strata_newest_backup_timestamp_seconds', 'When the newest restore point was taken (Unix time).', 'gauge', entries.map((e) => [e.database, e.latest ? seconds(e.latest.createdAt) : undefined])),
    // Also for a database without a good restore point (every one failed verification, or every
    // run failed): 0, so an alert on the age fires for it rather than finding no series at all.
    byDatabase('strata_newest_good_backup_timestamp_seconds', 'When the newest good restore point (the one health measures) was taken (Unix time); 0 when there is none.', 'gauge', watched.map((d) => [d, good.get(d) ? seconds(good.get(d)!.createdAt) : 0])),
    byDatabase('strata_newest_good_backup_age_seconds', 'How old the newest good restore point was when this was written; since 1970 when there is none.', 'gauge', watched.map((d) => [d, nowS - (good.get(d) ? seconds(good.get(d)!.createdAt) : 0)])),
    byDatabase('strata_last_verification_timestamp_seconds', 'When a restore point of the database was last verified (Unix time).', 'gauge', entries.map((e) => [e.database, e.lastVerified ? seconds(e.lastVerified.at) : undefined])),
    byDatabase('strata_last_verification_age_seconds', 'How long ago the last verification was, when this was written.', 'gauge', entries.map((e) => [e.database, e.lastVerified ? nowS - seconds(e.lastVerified.at) : undefined])),
    byDatabase('strata_last_verification_passed', '1 when the last verification passed, 0 when it failed.', 'gauge', entries.map((e) => [e.database, e.lastVerified ? Number(e.lastVerified.outcome === 'passed') : undefined])),
    byDatabase('strata_last_backup_duration_seconds', 'How long the last completed backup took (from the journal).', 'gauge', databases.map((d) => [d, lastBackupOp(d)?.last.durationMs !== undefined ? lastBackupOp(d)!.last.durationMs! / 1000 : undefined])),
    byDatabase('strata_last_backup_stored_bytes', 'Bytes the newest restore point takes in the repository.', 'gauge', databases.map((d) => [d, newestOf(d)?.storedBytes])),
    byDatabase('strata_last_backup_compression_ratio', 'Stored bytes over raw bytes of the newest restore point (lower is better).', 'gauge', databases.map((d) => {
      const b = newestOf(d);
      return [d, b && b.rawBytes > 0 ? b.storedBytes / b.rawBytes : undefined];
    })),
    byDatabase('strata_backup_failures_total', 'Backups of the database that failed (or were interrupted), from the journal.', 'counter', watched.map((d) => [d, operations.filter((o) => o.kind === 'backup' && o.status === 'FAILED' && o.last.database === d).length])),
    byDatabase(
      'strata_wal_push_failures_total',
      'wal-push calls of the database that failed, as journaled (those the repository could not take are in the state folder, which health reads).',
      'counter',
      [...new Set(operations.filter((o) => o.kind === 'wal-push' && o.last.database).map((o) => o.last.database!))].sort().map((d) => [d, operations.filter((o) => o.kind === 'wal-push' && o.status === 'FAILED' && o.last.database === d).length]),
    ),
    {
      name: 'strata_job_failures_total',
      help: 'Runs of a strata daemon job that failed (or were interrupted), from the journal.',
      type: 'counter',
      samples: [...new Set(operations.filter((o) => o.kind === 'job' && o.last.database).map((o) => `${o.last.database}\u0000${String(o.last.details?.['job'])}`))].sort().map((key) => {
        const [database, job] = key.split('\u0000') as [string, string];
        return { labels: { database, job }, value: operations.filter((o) => o.kind === 'job' && o.status === 'FAILED' && o.last.database === database && String(o.last.details?.['job']) === job).length };
      }),
    },
    byDatabase('strata_replication_lag_seconds', 'How long after its last transaction the newest segment (strata replicate) was shipped.', 'gauge', [...new Set(windows.map((w) => w.database))].sort().map((d) => [d, windows.filter((w) => w.database === d).at(-1)!.lastLagMs / 1000])),
  ];
  const mirrorLocation = repo.mirrorLocation;
  if (mirrorLocation !== undefined) {
    // How far the mirror's newest restore point of each database is behind the repository's.
    let mirrored: BackupRecord[] | undefined;
    try {
      const mirror = (await repo.mirror())!;
      // The repository itself under another name is no mirror (as health says).
      mirrored = mirror.settings.id === repo.settings.id && (await isSameStorage(repo.storage, mirror.storage)) ? undefined : await mirror.list();
    } catch {
      mirrored = undefined;
    }
    families.push({ name: 'strata_mirror_reachable', help: '1 when the mirror could be read.', type: 'gauge', samples: [{ labels: {}, value: Number(mirrored !== undefined) }] });
    if (mirrored) {
      const theirs = mirrored;
      families.push(
        byDatabase('strata_mirror_lag_seconds', "How far the mirror's newest restore point of the database is behind the repository's (0: it has the newest).", 'gauge', databases.map((d) => {
          const ours = newestOf(d)!;
          const newestThere = theirs.filter((b) => b.database === d).sort((a, b) => a.createdAt.localeCompare(b.createdAt)).at(-1);
          return [d, newestThere ? Math.max(0, seconds(ours.createdAt) - seconds(newestThere.createdAt)) : nowS - seconds(backups.filter((b) => b.database === d)[0]!.createdAt)];
        })),
      );
    }
  }
  families.push(
    {
      name: 'strata_repository_stored_bytes',
      help: 'Bytes every restore point and segment takes in the repository.',
      type: 'gauge',
      samples: [{ labels: {}, value: backups.reduce((s, b) => s + b.storedBytes, 0) + segments.reduce((s, x) => s + x.storedBytes, 0) }],
    },
    { name: 'strata_metrics_timestamp_seconds', help: 'When these metrics were computed (Unix time).', type: 'gauge', samples: [{ labels: {}, value: nowS }] },
  );
  return render(families);
}

/**
 * Writes a textfile as node_exporter's textfile collector wants it: the whole text into a temporary
 * file beside it (its name does not end in .prom, so the collector never reads it half-written),
 * then renamed over the old one.
 */
export function writeTextfile(file: string, text: string): void {
  // Readable by node_exporter, which often runs as another user.
  writeFileAtomically(file, text, 0o644);
}
