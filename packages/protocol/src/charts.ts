/**
 * Axis arithmetic and escaping for the charts Strata's clients draw as inline SVG: `strata stats
 * --html` and the VS Code extension's Backup History. Both draw by hand rather than with a
 * charting library (each library is a script from a CDN or hundreds of kB to inline, for a few
 * bars, dots and lines); what they share is here, free of any import, so that the extension's
 * bundle and the CLI take it alike.
 */

/** Text for HTML or SVG, content and attribute values alike: database names and labels are anyone's. */
export function escapeMarkup(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Round values for a value axis: 0, then steps of 1, 2, 2.5 or 5 times a power of ten up to at least `max` (at most five steps). */
export function ticks(max: number, whole: boolean): number[] {
  if (max <= 0) return [0, 1];
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough)!;
  if (whole) step = Math.max(1, Math.ceil(step));
  const out = [0];
  while (out.at(-1)! < max) out.push(Number((out.at(-1)! + step).toPrecision(12)));
  return out;
}

/**
 * Round byte counts for a size axis, in the binary unit (KiB, MiB, ...) the labels are written in,
 * so that they read 0, 2 MiB, 4 MiB rather than 0, 1.9 MiB, 3.8 MiB.
 */
export function byteTicks(max: number): number[] {
  const unit = max >= 1024 ? 1024 ** Math.floor(Math.log(max) / Math.log(1024)) : 1;
  return ticks(max / unit, unit === 1).map((v) => v * unit);
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const DAY = 1440 * MINUTE;
const TIME_STEPS = [10 * SECOND, 30 * SECOND, MINUTE, 5 * MINUTE, 15 * MINUTE, 60 * MINUTE, 3 * 60 * MINUTE, 6 * 60 * MINUTE, 12 * 60 * MINUTE, DAY, 7 * DAY, 28 * DAY];

/** A moment on a time axis, and how precisely its label must say it: by day, to the minute, or to the second. */
export interface TimeTick {
  readonly at: number;
  readonly precision: 'day' | 'minute' | 'second';
}

/** Round moments (multiples of the step since the epoch) between `start` and `end`, in ms, at most eight. */
export function timeTicks(start: number, end: number): TimeTick[] {
  const step = TIME_STEPS.find((s) => (end - start) / s <= 8) ?? TIME_STEPS.at(-1)!;
  const precision = step >= DAY ? 'day' : step >= MINUTE ? 'minute' : 'second';
  const out: TimeTick[] = [];
  for (let at = Math.ceil(start / step) * step; at <= end; at += step) out.push({ at, precision });
  return out;
}

/** A tick's label in UTC: `MM-DD`, `MM-DD hh:mm`, or `hh:mm:ss` below a minute. */
export function utcTickLabel(tick: TimeTick): string {
  const iso = new Date(tick.at).toISOString();
  return tick.precision === 'day' ? iso.slice(5, 10) : tick.precision === 'minute' ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, 19);
}

/**
 * The span a time axis shows for events from `first` to `last` (ms) drawn at `now`: to now, from a
 * little before the first event, so that a day of backups is not a dot at the edge of a month,
 * and at least a minute wide.
 */
export function timeSpan(first: number, now: number, notBefore = Number.NEGATIVE_INFINITY): { start: number; end: number } {
  const end = Math.max(now, first + MINUTE);
  return { start: Math.max(notBefore, first - (end - first) * 0.05), end };
}
