import { StrataError } from './errors.js';

/**
 * A span of time as a user writes it: `30min`, `12h`, `7d`, `2w`, `3mo`, `1y`, or combined
 * (`1y6mo`, `1d12h`). Months and years are calendar units (a month back from 31 March is the end of
 * February), the rest fixed lengths, so "keep 1 month" means what a person means by it.
 */
export interface Duration {
  /** As written, for messages. */
  readonly text: string;
  /** Calendar months (a year is 12). */
  readonly months: number;
  /** Fixed milliseconds (seconds, minutes, hours, days, weeks). */
  readonly ms: number;
}

const FIXED: Readonly<Record<string, number>> = { s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };
const CALENDAR: Readonly<Record<string, number>> = { mo: 1, y: 12 };
const EXAMPLES = 'e.g. 30min, 12h, 7d, 2w, 3mo, 1y, 1y6mo';

/**
 * Parses a duration; every command and the config file use this one parser. A bare `m` is refused
 * because it is read both ways (30m was 30 months here while every monitoring tool reads minutes:
 * `health --max-age 30m` silently disabled the alarm).
 */
export function parseDuration(text: string, what = 'duration'): Duration {
  const parts = [...text.matchAll(/(\d+)(min|mo|[smhdwy])/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) {
    throw new StrataError('USAGE', `${what}: ${JSON.stringify(text)} is not a duration (${EXAMPLES})`);
  }
  let months = 0;
  let ms = 0;
  for (const [, amount, unit] of parts) {
    if (unit === 'm') {
      throw new StrataError('USAGE', `${what}: ${JSON.stringify(text)} is ambiguous: write ${amount}min for minutes or ${amount}mo for months`);
    }
    if (unit! in CALENDAR) months += Number(amount) * CALENDAR[unit!]!;
    else ms += Number(amount) * FIXED[unit!]!;
  }
  return { text, months, ms };
}

/** The moment `duration` before `end`: calendar months back first, then the fixed part. */
export function durationBefore(end: Date | number, duration: Duration): Date {
  const at = new Date(end);
  if (duration.months > 0) {
    const day = at.getUTCDate();
    at.setUTCDate(1);
    at.setUTCMonth(at.getUTCMonth() - duration.months);
    // The same day of the month, or the month's last day when it is shorter (31 March → 28/29 Feb).
    const lastDay = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 0)).getUTCDate();
    at.setUTCDate(Math.min(day, lastDay));
  }
  return new Date(at.getTime() - duration.ms);
}

/** How many milliseconds the span ending at `end` covers (months count as the calendar has them). */
export function durationMs(duration: Duration, end: Date | number = Date.now()): number {
  return new Date(end).getTime() - durationBefore(end, duration).getTime();
}
