import { escapeMarkup, ticks, timeSpan, timeTicks, utcTickLabel } from '@strata/protocol/charts';
import type { BackupRun } from '@strata/sdk';
import { formatBytes } from './terminal.js';

/**
 * `strata stats --html FILE`: one self-contained HTML page (inline CSS, charts drawn as inline
 * SVG, no script, nothing fetched) that a person can open from a mail or an artifact store offline.
 * The charts are drawn here rather than with a charting library because every such library is
 * either a script from a CDN or hundreds of kB to inline, for a handful of bars and dots; the
 * axis arithmetic is shared with the editor's Backup History (@strata/protocol/charts).
 */

const TYPE_COLOURS: Readonly<Record<string, string>> = { full: '#2f6fb0', incremental: '#5aa469', differential: '#d9a441', 'schema-only': '#8a6fb5' };
const FAILED_COLOUR = '#c8423b';
const colourOf = (type: string): string => TYPE_COLOURS[type] ?? '#888888';

const WIDTH = 760;
const HEIGHT = 220;
const MARGIN = { left: 64, right: 12, top: 12, bottom: 44 };

function days(from: Date, to: Date): string[] {
  const out: string[] = [];
  const d = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate()));
  while (d.getTime() <= to.getTime()) {
    out.push(d.toISOString().slice(0, 10));
    d.setUTCDate(d.getUTCDate() + 1);
  }
  return out;
}

/** Stacked bars: per day, one segment per type of the completed runs, and the failed runs on top in red. */
function runsPerDayChart(runs: readonly BackupRun[], from: Date, to: Date): string {
  const dayList = days(from, to);
  const stacks = dayList.map((day) => {
    const mine = runs.filter((r) => r.day === day);
    const segments: { type: string; outcome: string; count: number }[] = [];
    for (const type of [...Object.keys(TYPE_COLOURS), ...new Set(mine.map((r) => r.type).filter((t) => !(t in TYPE_COLOURS)))]) {
      const count = mine.filter((r) => r.type === type && r.outcome === 'completed').length;
      if (count > 0) segments.push({ type, outcome: 'completed', count });
    }
    for (const type of new Set(mine.filter((r) => r.outcome !== 'completed').map((r) => r.type))) {
      for (const outcome of ['failed', 'running']) {
        const count = mine.filter((r) => r.type === type && r.outcome === outcome).length;
        if (count > 0) segments.push({ type, outcome, count });
      }
    }
    return { day, segments, total: mine.length };
  });
  const yTicks = ticks(Math.max(1, ...stacks.map((s) => s.total)), true);
  const top = yTicks.at(-1)!;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const band = plotW / dayList.length;
  const y = (v: number): number => MARGIN.top + plotH - (v / top) * plotH;
  let svg = axisY(yTicks, y, (v) => String(v));
  stacks.forEach((stack, i) => {
    const x = MARGIN.left + i * band + band * 0.15;
    let base = 0;
    for (const s of stack.segments) {
      const colour = s.outcome === 'completed' ? colourOf(s.type) : s.outcome === 'failed' ? FAILED_COLOUR : '#bbbbbb';
      svg += `<rect class="bar" data-day="${stack.day}" data-type="${escapeMarkup(s.type)}" data-outcome="${s.outcome}" data-count="${s.count}" x="${x.toFixed(1)}" y="${y(base + s.count).toFixed(1)}" width="${(band * 0.7).toFixed(1)}" height="${(y(base) - y(base + s.count)).toFixed(1)}" fill="${colour}"><title>${stack.day}: ${s.count} ${escapeMarkup(s.type)} ${s.outcome}</title></rect>`;
      base += s.count;
    }
    // Label every day when they fit, else every seventh.
    if (dayList.length <= 16 || i % 7 === 0) {
      svg += `<text x="${(MARGIN.left + i * band + band / 2).toFixed(1)}" y="${HEIGHT - MARGIN.bottom + 16}" text-anchor="middle" class="tick">${stack.day.slice(5)}</text>`;
    }
  });
  return figure('backup runs per day, by type and outcome', svg, legend([...Object.entries(TYPE_COLOURS), ['failed', FAILED_COLOUR]]));
}

/** Dots over time, one per run with a value (red for a failed run), joined by a line; a failed run without a value as a red cross on the axis. */
function overTimeChart(title: string, runs: readonly BackupRun[], value: (r: BackupRun) => number | null, format: (v: number) => string, from: Date, to: Date, metric: string): string {
  const points = runs.map((r) => ({ r, v: value(r) }));
  const valued = points.filter((p): p is { r: BackupRun; v: number } => p.v !== null);
  const yTicks = ticks(Math.max(0, ...valued.map((p) => p.v)), false);
  const top = yTicks.at(-1)!;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  // From a little before the first run to now, so that a day of runs is not a dot at the edge of a month.
  const { start, end } = timeSpan(runs.length > 0 ? Date.parse(runs[0]!.at) : from.getTime(), to.getTime(), from.getTime());
  const span = Math.max(1, end - start);
  const x = (at: string | number): number => MARGIN.left + (((typeof at === 'number' ? at : Date.parse(at)) - start) / span) * plotW;
  const y = (v: number): number => MARGIN.top + plotH - (v / top) * plotH;
  let svg = axisY(yTicks, y, format);
  for (const tick of timeTicks(start, end)) {
    const { at } = tick;
    const label = utcTickLabel(tick);
    svg += `<line x1="${x(at).toFixed(1)}" x2="${x(at).toFixed(1)}" y1="${HEIGHT - MARGIN.bottom}" y2="${HEIGHT - MARGIN.bottom + 4}" class="grid"/><text x="${x(at).toFixed(1)}" y="${HEIGHT - MARGIN.bottom + 16}" text-anchor="middle" class="tick">${label}</text>`;
  }
  if (valued.length > 1) svg += `<polyline fill="none" stroke="#999" stroke-width="1" points="${valued.map((p) => `${x(p.r.at).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ')}"/>`;
  for (const p of valued) {
    svg += `<circle class="point" data-metric="${metric}" data-at="${p.r.at}" data-value="${p.v}" cx="${x(p.r.at).toFixed(1)}" cy="${y(p.v).toFixed(1)}" r="3.5" fill="${p.r.outcome === 'failed' ? FAILED_COLOUR : colourOf(p.r.type)}"><title>${p.r.at} ${escapeMarkup(p.r.type)}${p.r.outcome === 'failed' ? ' (failed)' : ''}: ${escapeMarkup(format(p.v))}</title></circle>`;
  }
  // A failed run has no size: a red cross on the axis says it happened.
  for (const p of points.filter((q) => q.r.outcome === 'failed' && q.v === null)) {
    const cx = x(p.r.at);
    const cy = y(0);
    svg += `<path class="failure" data-at="${p.r.at}" d="M${(cx - 4).toFixed(1)},${(cy - 4).toFixed(1)}l8,8m0,-8l-8,8" stroke="${FAILED_COLOUR}" stroke-width="2"><title>${p.r.at} failed${p.r.errorCode ? `: ${escapeMarkup(p.r.errorCode)}` : ''}</title></path>`;
  }
  return figure(title, svg, '');
}

function axisY(values: readonly number[], y: (v: number) => number, format: (v: number) => string): string {
  return values
    .map(
      (v) =>
        `<line x1="${MARGIN.left}" x2="${WIDTH - MARGIN.right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" class="grid"/><text x="${MARGIN.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" class="tick">${escapeMarkup(format(v))}</text>`,
    )
    .join('');
}

function figure(title: string, svg: string, after: string): string {
  return `<figure><figcaption>${escapeMarkup(title)}</figcaption><svg viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}" role="img" aria-label="${escapeMarkup(title)}">${svg}</svg>${after}</figure>`;
}

function legend(entries: readonly (readonly [string, string])[]): string {
  return `<p class="legend">${entries.map(([name, colour]) => `<span><i style="background:${colour}"></i>${escapeMarkup(name)}</span>`).join('')}</p>`;
}

const seconds = (ms: number): string => (ms >= 60_000 ? `${(ms / 60_000).toFixed(1)} min` : `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`);
const percent = (ratio: number): string => `${(ratio * 100).toFixed(0)}%`;

/** What the report covers. */
export interface StatsReportInput {
  readonly repository: string;
  readonly since: Date;
  readonly now: Date;
  readonly runs: readonly BackupRun[];
}

/** The whole page. Every text that comes from the repository goes through escapeMarkup. */
export function renderStatsReport(input: StatsReportInput): string {
  const { runs, since, now } = input;
  const databases = [...new Set(runs.map((r) => r.database))].sort();
  const failed = runs.filter((r) => r.outcome === 'failed').length;
  const summary = databases
    .map((database) => {
      const mine = runs.filter((r) => r.database === database);
      const ok = mine.filter((r) => r.outcome === 'completed');
      const stored = ok.reduce((sum, r) => sum + (r.storedBytes ?? 0), 0);
      return `<tr data-database="${escapeMarkup(database)}" data-runs="${mine.length}" data-completed="${ok.length}" data-failed="${mine.filter((r) => r.outcome === 'failed').length}"><td>${escapeMarkup(database)}</td><td class="n">${mine.length}</td><td class="n">${ok.length}</td><td class="n">${mine.filter((r) => r.outcome === 'failed').length}</td><td class="n">${formatBytes(stored)}</td><td>${escapeMarkup(mine.at(-1)!.at)}</td></tr>`;
    })
    .join('');
  const sections = databases
    .map((database, index) => {
      const mine = runs.filter((r) => r.database === database);
      const rows = [...mine]
        .reverse()
        .map(
          (r) =>
            `<tr class="run ${r.outcome}" data-outcome="${r.outcome}" data-type="${escapeMarkup(r.type)}"${r.backupId ? ` data-backup-id="${escapeMarkup(r.backupId)}"` : ''}${r.storedBytes !== null ? ` data-stored-bytes="${r.storedBytes}"` : ''}${r.rawBytes !== null ? ` data-raw-bytes="${r.rawBytes}"` : ''}${r.durationMs !== null ? ` data-duration-ms="${r.durationMs}"` : ''}><td>${escapeMarkup(r.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'))}</td><td>${escapeMarkup(r.type)}</td><td>${r.outcome}${r.errorCode ? ` (${escapeMarkup(r.errorCode)})` : ''}</td><td class="n">${r.durationMs !== null ? seconds(r.durationMs) : '-'}</td><td class="n">${r.storedBytes !== null ? formatBytes(r.storedBytes) : '-'}</td><td class="n">${r.compressionRatio !== null ? percent(r.compressionRatio) : '-'}</td><td class="id">${r.backupId ? escapeMarkup(r.backupId) : ''}</td><td class="label">${r.label !== null ? escapeMarkup(r.label) : ''}</td></tr>`,
        )
        .join('');
      return `<section id="database-${index}" data-database="${escapeMarkup(database)}"><h2>${escapeMarkup(database)}</h2>
${overTimeChart('duration of each run', mine, (r) => r.durationMs, seconds, since, now, 'duration-ms')}
${overTimeChart('stored size of each backup', mine, (r) => r.storedBytes, (v) => formatBytes(Math.round(v)), since, now, 'stored-bytes')}
${overTimeChart('compression ratio (stored / archive; lower is better)', mine, (r) => r.compressionRatio, percent, since, now, 'compression-ratio')}
<table><thead><tr><th>started</th><th>type</th><th>outcome</th><th>time</th><th>stored</th><th>ratio</th><th>restore point</th><th>label</th></tr></thead><tbody>${rows}</tbody></table></section>`;
    })
    .join('\n');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Strata backups: ${escapeMarkup(input.repository)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:24px auto;max-width:820px;padding:0 16px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.meta{color:#666;margin:0 0 16px}figure{margin:12px 0}figcaption{font-weight:600;margin-bottom:4px}
svg{max-width:100%;height:auto;background:#fcfcfc;border:1px solid #eee}svg .grid{stroke:#e6e6e6}svg .tick{font-size:11px;fill:#666}
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}td.id{font-family:ui-monospace,monospace;font-size:12px}
tr.failed td{color:${FAILED_COLOUR}}.legend span{margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
</style></head><body>
<h1>Strata backups</h1>
<p class="meta">${escapeMarkup(input.repository)} · ${runs.length} backup run(s), ${failed} failed, of ${databases.length} database(s) · ${escapeMarkup(since.toISOString().slice(0, 10))} to ${escapeMarkup(now.toISOString().slice(0, 10))} · made ${escapeMarkup(now.toISOString())}</p>
${runs.length === 0 ? '<p>No backup runs in this period.</p>' : `${runsPerDayChart(runs, since, now)}
<table class="summary"><thead><tr><th>database</th><th>runs</th><th>completed</th><th>failed</th><th>stored (completed runs)</th><th>latest run</th></tr></thead><tbody>${summary}</tbody></table>
${sections}`}
</body></html>
`;
}
