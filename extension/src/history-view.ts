import type { BackupHistory, HistoryFailure, HistoryPoint } from '@strata/protocol';
import { byteTicks, escapeMarkup as esc, timeSpan, timeTicks } from '@strata/protocol/charts';
import type { TimeTick } from '@strata/protocol/charts';
import { formatBytes, formatTime } from './format.js';

/**
 * The Backup History page: the whole webview document, drawn here (in the extension host, no
 * vscode import) as HTML with inline SVG. Nothing is fetched: the Content-Security-Policy allows
 * only the page's own style and script (by nonce), so it works offline. Colours are VS Code's
 * theme variables (--vscode-charts-*, --vscode-foreground, ...), so light, dark and high-contrast
 * themes all apply, also when the theme changes while the page is open.
 *
 * Every mark of a restore point carries `data-backup-id`; the page's script posts a click (or
 * Enter/Space on a focused mark) to the extension, which selects that restore point in the tree.
 */

/** What the page shows besides the history itself. */
export interface HistoryPageOptions {
  /** What the history is of: a database's name, or "all databases in <repository>". */
  readonly subject: string;
  /** Whether restore points of several databases may appear (the table then has a database column). */
  readonly repositoryWide: boolean;
  /** Nonce of the page's one style element and one script. */
  readonly nonce: string;
  /** The restore point selected in the tree or clicked last, highlighted. */
  readonly selected?: string;
}

/** Types in the order of their lanes, top to bottom: the self-contained ones first. */
const TYPE_ORDER: readonly string[] = ['full', 'differential', 'incremental', 'schema-only'];
/** Tiers in the order of their legend: the longest-lived first. */
const TIER_ORDER: readonly string[] = ['pinned', 'labelled', 'yearly', 'monthly', 'weekly', 'daily', 'hourly', 'within', 'last', 'newest', 'chain', 'other', 'not kept'];

const WIDTH = 900;
const LEFT = 120;
const RIGHT = 24;
const LANE = 30;
const AXIS = 30;

/** A class-safe name for a type or tier ("not kept" -> "not-kept"). */
const slug = (text: string): string => text.toLowerCase().replace(/[^a-z0-9]+/g, '-');

/** The words a mark's tooltip and a screen reader say about a restore point. */
export function describePoint(p: HistoryPoint): string {
  const verification =
    p.verification === 'passed'
      ? `verified (${p.verificationLevel}, ${formatTime(p.verifiedAt!)})`
      : p.verification === 'failed'
        ? `VERIFICATION FAILED (${p.verificationLevel}, ${formatTime(p.verifiedAt!)}${p.failedChecks.length ? `: ${p.failedChecks.join('; ')}` : ''})`
        : 'never verified';
  return [
    `${p.database}: ${p.type} restore point of ${formatTime(p.createdAt)}`,
    `${formatBytes(p.storedBytes)} stored, database ${formatBytes(p.databaseBytes)}`,
    verification,
    `retention: ${p.tier}${p.reasons.length ? ` (${p.reasons.join('; ')})` : ''}`,
    ...(p.label ? [`label ${p.label}`] : []),
    ...(p.newestGood ? ['the newest good restore point'] : []),
    p.id,
  ].join(' · ');
}

function describeFailure(f: HistoryFailure): string {
  return `${f.database}: ${f.type} backup FAILED at ${formatTime(f.at)}${f.errorCode ? ` (${f.errorCode}${f.errorMessage ? `: ${f.errorMessage}` : ''})` : ''}`;
}

/** A tick's label in local time, as the tree shows times. */
function tickLabel(tick: TimeTick): string {
  const time = formatTime(new Date(tick.at).toISOString());
  return tick.precision === 'day' ? time.slice(5, 10) : tick.precision === 'minute' ? time.slice(5, 16) : time.slice(11, 19);
}

/** The x of every moment, shared by the three charts so that one restore point lines up in all of them. */
function timeScale(history: BackupHistory): { x: (iso: string | number) => number; ticks: TimeTick[] } {
  const moments = [...history.points.map((p) => Date.parse(p.createdAt)), ...history.failures.map((f) => Date.parse(f.at))];
  const now = Date.parse(history.at);
  const { start, end } = timeSpan(moments.length ? Math.min(...moments) : now, Math.max(now, ...moments));
  const plot = WIDTH - LEFT - RIGHT;
  return {
    x: (at) => LEFT + (((typeof at === 'number' ? at : Date.parse(at)) - start) / (end - start)) * plot,
    ticks: timeTicks(start, end),
  };
}

function timeAxis(scale: ReturnType<typeof timeScale>, y: number): string {
  return scale.ticks
    .map((t) => {
      const x = scale.x(t.at).toFixed(1);
      return `<line class="grid" x1="${x}" x2="${x}" y1="${y}" y2="${y + 4}"/><text class="tick" x="${x}" y="${y + 16}" text-anchor="middle">${esc(tickLabel(t))}</text>`;
    })
    .join('');
}

/** The attributes that make a mark a restore point: clickable, focusable, described. */
function pointAttributes(p: HistoryPoint, selected: string | undefined): string {
  return `data-backup-id="${esc(p.id)}" data-type="${esc(p.type)}" data-verification="${p.verification}" data-tier="${esc(p.tier)}"${p.id === selected ? ' data-selected="true"' : ''}`;
}

function svg(label: string, height: number, body: string): string {
  return `<svg viewBox="0 0 ${WIDTH} ${height}" role="group" aria-label="${esc(label)}" preserveAspectRatio="xMinYMin meet">${body}</svg>`;
}

/** Lanes by type (and one for failed runs), a mark per restore point with its verification, chains drawn, and the retention tier below. */
function timeline(history: BackupHistory, scale: ReturnType<typeof timeScale>, selected: string | undefined): string {
  const present = new Set<string>(history.points.map((p) => p.type));
  const types = [...TYPE_ORDER.filter((t) => present.has(t)), ...[...present].filter((t) => !TYPE_ORDER.includes(t))];
  const lanes = [...types, ...(history.failures.length ? ['failed runs'] : []), 'retention tier'];
  const laneY = (lane: string): number => 10 + lanes.indexOf(lane) * LANE + LANE / 2;
  const height = 10 + lanes.length * LANE + AXIS;
  let body = lanes
    .map((lane) => `<line class="grid lane" x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${laneY(lane)}" y2="${laneY(lane)}"/><text class="lane-label" x="${LEFT - 10}" y="${laneY(lane) + 4}" text-anchor="end">${esc(lane)}</text>`)
    .join('');
  body += timeAxis(scale, height - AXIS);
  const byId = new Map(history.points.map((p) => [p.id, p]));
  // The chains: each incremental or differential joined to the restore point it builds on.
  for (const p of history.points) {
    const parent = p.parent !== null ? byId.get(p.parent) : undefined;
    if (parent) body += `<line class="chain" x1="${scale.x(parent.createdAt).toFixed(1)}" y1="${laneY(parent.type)}" x2="${scale.x(p.createdAt).toFixed(1)}" y2="${laneY(p.type)}"/>`;
  }
  for (const p of history.points) {
    const x = scale.x(p.createdAt);
    const y = laneY(p.type);
    const mark =
      p.verification === 'passed'
        ? `<path class="verified" d="M${(x + 5).toFixed(1)},${y - 9} l3,3 l6,-6"/>`
        : p.verification === 'failed'
          ? `<circle class="verification-failed" cx="${x.toFixed(1)}" cy="${y}" r="10"/><path class="verification-failed" d="M${(x + 7).toFixed(1)},${y - 16} l7,7 m0,-7 l-7,7"/>`
          : '';
    const description = esc(describePoint(p));
    body += `<g class="point t-${slug(p.type)}" ${pointAttributes(p, selected)} tabindex="0" role="button" aria-label="${description}"><title>${description}</title><circle class="dot" cx="${x.toFixed(1)}" cy="${y}" r="6"/>${mark}</g>`;
    body += `<rect class="tier tier-${slug(p.tier)}" data-backup-id="${esc(p.id)}" x="${(x - 3).toFixed(1)}" y="${laneY('retention tier') - 8}" width="6" height="16"><title>${esc(`${formatTime(p.createdAt)}: ${p.tier}${p.reasons.length ? ` (${p.reasons.join('; ')})` : ''}`)}</title></rect>`;
  }
  for (const f of history.failures) {
    const x = scale.x(f.at);
    const y = laneY('failed runs');
    const description = esc(describeFailure(f));
    body += `<g class="failure" data-at="${esc(f.at)}" role="img" aria-label="${description}"><title>${description}</title><path d="M${(x - 5).toFixed(1)},${y - 5} l10,10 m0,-10 l-10,10"/></g>`;
  }
  return figure('Restore points by type', svg('restore points by type over time, with verification and retention tier', height, body));
}

/** Bars (or dots joined by lines) of a size per restore point, on the shared time axis. */
function sizeChart(
  title: string,
  history: BackupHistory,
  scale: ReturnType<typeof timeScale>,
  value: (p: HistoryPoint) => number,
  style: 'bars' | 'lines',
  selected: string | undefined,
): string {
  const height = 170;
  const top = 10;
  const bottom = height - AXIS;
  const yTicks = byteTicks(Math.max(0, ...history.points.map(value)));
  const y = (v: number): number => bottom - (v / yTicks.at(-1)!) * (bottom - top);
  let body = yTicks
    .map((v) => `<line class="grid" x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/><text class="tick" x="${LEFT - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${esc(formatBytes(Math.round(v)))}</text>`)
    .join('');
  body += timeAxis(scale, bottom);
  if (style === 'lines') {
    const databases = [...new Set(history.points.map((p) => p.database))];
    databases.forEach((database, i) => {
      const mine = history.points.filter((p) => p.database === database);
      if (mine.length > 1) body += `<polyline class="line db-${i % 6}" points="${mine.map((p) => `${scale.x(p.createdAt).toFixed(1)},${y(value(p)).toFixed(1)}`).join(' ')}"><title>${esc(database)}</title></polyline>`;
    });
    for (const p of history.points) {
      body += `<circle class="size-dot db-${databases.indexOf(p.database) % 6}" ${pointAttributes(p, selected)} cx="${scale.x(p.createdAt).toFixed(1)}" cy="${y(value(p)).toFixed(1)}" r="4"><title>${esc(`${p.database} ${formatTime(p.createdAt)}: ${formatBytes(value(p))}`)}</title></circle>`;
    }
  } else {
    for (const p of history.points) {
      const x = scale.x(p.createdAt);
      // A bar at least a pixel tall: an unchanged incremental still stores its manifest.
      const h = Math.max(1, bottom - y(value(p)));
      body += `<rect class="bar t-${slug(p.type)}" ${pointAttributes(p, selected)} data-bytes="${value(p)}" x="${(x - 3).toFixed(1)}" y="${(bottom - h).toFixed(1)}" width="6" height="${h.toFixed(1)}"><title>${esc(`${p.type} ${formatTime(p.createdAt)}: ${formatBytes(value(p))} stored`)}</title></rect>`;
    }
    // A failed run stored nothing: a cross on the axis says it happened.
    for (const f of history.failures) {
      const x = scale.x(f.at);
      body += `<g class="failure" data-at="${esc(f.at)}"><title>${esc(describeFailure(f))}</title><path d="M${(x - 4).toFixed(1)},${bottom - 4} l8,8 m0,-8 l-8,8"/></g>`;
    }
  }
  return figure(title, svg(title, height, body));
}

function figure(title: string, chart: string): string {
  return `<figure><figcaption>${esc(title)}</figcaption>${chart}</figure>`;
}

function legend(history: BackupHistory): string {
  const types = [...new Set(history.points.map((p) => p.type))].sort((a, b) => TYPE_ORDER.indexOf(a) - TYPE_ORDER.indexOf(b));
  const tiers = [...new Set(history.points.map((p) => p.tier))].sort((a, b) => TIER_ORDER.indexOf(a) - TIER_ORDER.indexOf(b));
  const item = (cls: string, text: string): string => `<span class="legend-item"><i class="swatch ${cls}"></i>${esc(text)}</span>`;
  return `<p class="legend">${types.map((t) => item(`t-${slug(t)}`, t)).join('')}<span class="legend-item"><i class="glyph verified">✓</i>verified</span><span class="legend-item"><i class="glyph verification-failed">✗</i>verification failed</span>${history.failures.length ? '<span class="legend-item"><i class="glyph failure">✗</i>failed backup run</span>' : ''}</p><p class="legend">retention tier: ${tiers.map((t) => item(`tier-${slug(t)}`, t)).join('')}</p>`;
}

/** Every restore point and failed run, newest first: what the charts show, for reading and for screen readers. */
function table(history: BackupHistory, options: HistoryPageOptions): string {
  const rows: ({ at: string; point: HistoryPoint } | { at: string; failure: HistoryFailure })[] = [
    ...history.points.map((point) => ({ at: point.createdAt, point })),
    ...history.failures.map((failure) => ({ at: failure.at, failure })),
  ].sort((a, b) => b.at.localeCompare(a.at));
  const database = (name: string): string => (options.repositoryWide ? `<td>${esc(name)}</td>` : '');
  const body = rows
    .map((row) => {
      if ('failure' in row) {
        const f = row.failure;
        return `<tr class="failed-run" data-at="${esc(f.at)}"><td>${esc(formatTime(f.at))}</td>${database(f.database)}<td>${esc(f.type)}</td><td colspan="5" class="error">backup failed${f.errorCode ? `: ${esc(f.errorCode)}` : ''}${f.errorMessage ? ` (${esc(f.errorMessage)})` : ''}</td><td></td></tr>`;
      }
      const p = row.point;
      const verification = p.verification === 'never' ? 'never' : `${p.verification} (${p.verificationLevel}, ${esc(formatTime(p.verifiedAt!))})`;
      return `<tr class="restore-point v-${p.verification}" ${pointAttributes(p, options.selected)}><td><button class="link" data-backup-id="${esc(p.id)}" title="Select ${esc(p.id)} in the Restore Points view">${esc(formatTime(p.createdAt))}</button></td>${database(p.database)}<td>${esc(p.type)}</td><td class="n">${formatBytes(p.storedBytes)}</td><td class="n">${formatBytes(p.rawBytes)}</td><td class="n">${formatBytes(p.databaseBytes)}</td><td class="verification">${verification}</td><td title="${esc(p.reasons.join('; '))}">${esc(p.tier)}</td><td>${esc([p.label, p.newestGood ? 'newest good' : null].filter(Boolean).join(' · '))}</td></tr>`;
    })
    .join('');
  return `<h2>All restore points and failed runs</h2><table><thead><tr><th>taken</th>${options.repositoryWide ? '<th>database</th>' : ''}<th>type</th><th class="n">stored</th><th class="n">archive</th><th class="n">database</th><th>verification</th><th>retention</th><th></th></tr></thead><tbody>${body}</tbody></table>`;
}

function summary(history: BackupHistory): string {
  const count = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
  const points = history.points;
  const failedVerifications = points.filter((p) => p.verification === 'failed').length;
  const newestGood = points.filter((p) => p.newestGood).map((p) => `${p.database} ${formatTime(p.createdAt)}`);
  return [
    count(points.length, 'restore point'),
    count(history.failures.length, 'failed backup run'),
    `${points.filter((p) => p.verification === 'passed').length} verified, ${failedVerifications} failed verification, ${points.filter((p) => p.verification === 'never').length} never verified`,
    `${formatBytes(points.reduce((sum, p) => sum + p.storedBytes, 0))} stored`,
    newestGood.length ? `newest good: ${newestGood.join(', ')}` : 'no good restore point',
  ]
    .map((part) => `<span>${esc(part)}</span>`)
    .join('');
}

/**
 * Theme colours by class. Each type and tier sets --c once; shapes fill with it and legend swatches
 * paint with it, so one rule serves both. Presentation attributes cannot take var(), and inline
 * style attributes are refused by the page's policy, hence classes everywhere.
 */
const STYLE = `
body{color:var(--vscode-foreground);background:var(--vscode-editor-background);font-family:var(--vscode-font-family);font-size:var(--vscode-font-size);padding:0 20px 24px;max-width:1100px}
h1{font-size:1.4em;font-weight:600;margin:16px 0 4px}h2{font-size:1.1em;font-weight:600;margin:24px 0 6px}
.summary{color:var(--vscode-descriptionForeground);margin:0 0 8px}.summary span+span::before{content:" · "}
figure{margin:12px 0}figcaption{font-weight:600;margin-bottom:2px}
svg{width:100%;height:auto;display:block;overflow:visible}
.grid{stroke:var(--vscode-editorWidget-border,rgba(128,128,128,.35));stroke-width:1}
.lane{stroke-dasharray:2 4}
.tick,.lane-label{fill:var(--vscode-descriptionForeground);font-size:11px}
.lane-label{font-size:12px}
.t-full{--c:var(--vscode-charts-blue)}.t-differential{--c:var(--vscode-charts-orange)}.t-incremental{--c:var(--vscode-charts-purple)}.t-schema-only{--c:var(--vscode-charts-yellow)}
.tier-pinned,.tier-labelled{--c:var(--vscode-charts-purple)}.tier-yearly{--c:var(--vscode-charts-blue)}.tier-monthly{--c:var(--vscode-charts-green)}.tier-weekly{--c:var(--vscode-charts-yellow)}.tier-daily{--c:var(--vscode-charts-orange)}
.tier-hourly,.tier-within,.tier-last,.tier-newest,.tier-chain,.tier-other{--c:var(--vscode-descriptionForeground)}.tier-not-kept{--c:var(--vscode-charts-red)}
.dot,.bar,.tier{fill:var(--c,var(--vscode-foreground))}
.tier-not-kept.tier{fill:none;stroke:var(--c);stroke-width:1.5;stroke-dasharray:2 2}
.chain{stroke:var(--vscode-descriptionForeground);stroke-width:1;opacity:.5}
.verified{fill:none;stroke:var(--vscode-charts-green);stroke-width:2.2}
path.verification-failed,.failure path{fill:none;stroke:var(--vscode-charts-red);stroke-width:2.2}
circle.verification-failed{fill:none;stroke:var(--vscode-charts-red);stroke-width:1.5}
.line{fill:none;stroke-width:1.5}.db-0{--c:var(--vscode-foreground)}.db-1{--c:var(--vscode-charts-blue)}.db-2{--c:var(--vscode-charts-orange)}.db-3{--c:var(--vscode-charts-purple)}.db-4{--c:var(--vscode-charts-green)}.db-5{--c:var(--vscode-charts-yellow)}
.line{stroke:var(--c)}.size-dot{fill:var(--c)}
[data-backup-id]{cursor:pointer}
.point:focus{outline:none}.point:focus .dot,[data-selected] .dot,circle[data-selected],rect.bar[data-selected]{stroke:var(--vscode-focusBorder);stroke-width:3}
.legend{margin:2px 0;color:var(--vscode-descriptionForeground)}.legend-item{margin-right:14px;white-space:nowrap}
.swatch{display:inline-block;width:10px;height:10px;margin-right:5px;vertical-align:middle;background:var(--c)}
.swatch.tier-not-kept{background:none;border:1.5px dashed var(--c);box-sizing:border-box}
.glyph{font-style:normal;font-weight:700;margin-right:4px}.glyph.verified{color:var(--vscode-charts-green)}.glyph.verification-failed,.glyph.failure{color:var(--vscode-charts-red)}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid var(--vscode-editorWidget-border,rgba(128,128,128,.25));white-space:nowrap}
th.n,td.n{text-align:right;font-variant-numeric:tabular-nums}td.verification,td.error{white-space:normal}
tr[data-selected]{background:var(--vscode-list-inactiveSelectionBackground)}
tr.v-failed .verification,tr.failed-run .error{color:var(--vscode-errorForeground)}
button.link{background:none;border:none;padding:0;color:var(--vscode-textLink-foreground);font:inherit;cursor:pointer}
button.link:hover{text-decoration:underline}button.link:focus{outline:1px solid var(--vscode-focusBorder)}
.empty{color:var(--vscode-descriptionForeground)}
`;

/**
 * The page's script: a click (or Enter or Space) on a restore point's mark or row asks the
 * extension to select it in the tree; the extension answers with what is selected, which the page
 * highlights.
 */
const SCRIPT = `
const vscode = acquireVsCodeApi();
function mark(id) {
  for (const el of document.querySelectorAll('[data-selected]')) el.removeAttribute('data-selected');
  for (const el of document.querySelectorAll('[data-backup-id]')) if (el.dataset.backupId === id && !el.matches('button')) el.setAttribute('data-selected', 'true');
}
function choose(target) {
  const el = target instanceof Element ? target.closest('[data-backup-id]') : null;
  if (!el) return false;
  mark(el.dataset.backupId);
  vscode.postMessage({ type: 'select', id: el.dataset.backupId });
  return true;
}
document.addEventListener('click', (event) => { if (choose(event.target)) event.preventDefault(); });
document.addEventListener('keydown', (event) => {
  if ((event.key === 'Enter' || event.key === ' ') && event.target instanceof Element && event.target.matches('.point') && choose(event.target)) event.preventDefault();
});
window.addEventListener('message', (event) => { if (event.data && event.data.type === 'selected') mark(event.data.id); });
`;

/** The whole webview document. */
export function renderHistoryPage(history: BackupHistory, options: HistoryPageOptions): string {
  const head = `<meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'nonce-${options.nonce}'; script-src 'nonce-${options.nonce}';"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Backup History: ${esc(options.subject)}</title><style nonce="${options.nonce}">${STYLE}</style>`;
  let main: string;
  if (history.points.length === 0 && history.failures.length === 0) {
    main = `<p class="empty">No restore points yet: back up ${esc(options.subject)} (Strata: Back Up Now) and they appear here.</p>`;
  } else {
    const scale = timeScale(history);
    main = [
      legend(history),
      timeline(history, scale, options.selected),
      sizeChart('Stored size of each backup', history, scale, (p) => p.storedBytes, 'bars', options.selected),
      sizeChart(options.repositoryWide ? 'Database size over time (one line per database)' : 'Database size over time', history, scale, (p) => p.databaseBytes, 'lines', options.selected),
      table(history, options),
    ].join('\n');
  }
  return `<!DOCTYPE html>
<html lang="en"><head>${head}</head><body>
<h1>Backup History: ${esc(options.subject)}</h1>
<p class="summary">${summary(history)}</p>
${main}
<script nonce="${options.nonce}">${SCRIPT}</script>
</body></html>
`;
}
