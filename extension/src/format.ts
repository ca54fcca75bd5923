import type { BackupView } from '@strata/protocol';

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 10 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

/** "just now", "5 min ago", "3 h ago", "2 days ago". */
export function formatAge(iso: string, now = Date.now()): string {
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 60) return 'just now';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`;
  const days = Math.floor(seconds / 86_400);
  return days === 1 ? '1 day ago' : `${days} days ago`;
}

/** Local date and time to the second, as people read it: 2026-11-21 10:32:05. */
export function formatTime(iso: string): string {
  const d = new Date(iso);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Markdown with everything a person may want to know about a restore point. */
export function describeBackup(backup: BackupView, location: string): string {
  const v = backup.verification;
  const lines = [
    `### ${backup.database}: ${backup.type} restore point`,
    '',
    `| | |`,
    `| --- | --- |`,
    `| id | \`${backup.id}\` |`,
    `| taken | ${formatTime(backup.createdAt)} (${formatAge(backup.createdAt)}) |`,
    `| database | ${location} (${backup.engine}, ${formatBytes(backup.databaseBytes)}, ${backup.tableCount} tables, ${backup.rowCount} rows) |`,
    `| chain | ${backup.parent ? `parent \`${backup.parent}\`${backup.base && backup.base !== backup.parent ? `, base \`${backup.base}\`` : ''}${backup.incrementalMethod ? ` (${backup.incrementalMethod})` : ''}` : 'self-contained'} |`,
    `| stored | ${formatBytes(backup.storedBytes)} (${backup.compression.codec}${backup.compression.codec === 'none' ? '' : ` level ${backup.compression.level}`}, encryption ${backup.encryption.profile}${backup.encryption.keyId ? `, data key \`${backup.encryption.keyId}\`` : ''}) |`,
    `| label | ${backup.label ?? '—'} |`,
    `| tags | ${backup.tags.length ? backup.tags.join(', ') : '—'} |`,
    `| SHA-256 | \`${backup.sha256}\` |`,
    `| verification | ${v ? `${v.outcome} (${v.level}, ${formatAge(v.at)})` : 'never verified'} |`,
  ];
  if (backup.tier) lines.push(`| retention | ${backup.tier}: ${(backup.reasons ?? []).join('; ')} |`);
  if (v) {
    lines.push('', '#### Checks', '');
    for (const check of v.checks) lines.push(`- ${check.status === 'passed' ? '✓' : check.status === 'failed' ? '✗' : '–'} **${check.name}**: ${check.reason}`);
  }
  return lines.join('\n');
}
