import { printable } from './terminal.js';

/**
 * How a column may give way when a table is wider than the terminal. First columns shrink (in
 * `shrink` order, none below `min`), then whole columns are left out (in `drop` order), as few as
 * needed. Identifiers lose their middle (their start names the database and type, their end the
 * time and suffix); free text loses its end.
 */
export interface ColumnFit {
  /** Lower shrinks first; without it the column keeps its width. */
  readonly shrink?: number;
  readonly min?: number;
  readonly elide?: 'end' | 'middle';
  /** Lower is left out first; without it the column always stays. */
  readonly drop?: number;
}

/** How printTable fits a table: to `width` characters, columns giving way as `fits` says. */
export interface TableFit {
  readonly width: number;
  /** One per column (undefined: never gives way). */
  readonly fits: readonly (ColumnFit | undefined)[];
}

/** How a table is laid out: which columns it shows, how wide each is. */
export interface TableLayout {
  /** Per column: its width, or null when it is left out. */
  readonly widths: readonly (number | null)[];
  /** Some cell is shorter than its text. */
  readonly cut: boolean;
}

const GAP = 2;

/** Text shortened to `width` characters, with … where it was cut. */
export function elide(text: string, width: number, where: 'end' | 'middle'): string {
  if (text.length <= width) return text;
  if (width <= 1) return '…'.slice(0, width);
  if (where === 'end') return `${text.slice(0, width - 1)}…`;
  const head = Math.ceil((width - 1) / 2);
  return `${text.slice(0, head)}…${text.slice(text.length - (width - 1 - head))}`;
}

/**
 * Lays a table out: each column as wide as its widest cell; with `fit`, when the table is wider
 * than fit.width, the fewest columns left out (in drop order) that let the shrinkable ones fit.
 * When even every droppable one gone is not enough, lines are cut at the width.
 */
export function layoutTable(header: readonly string[], rows: readonly (readonly string[])[], fit?: TableFit): TableLayout {
  const natural = header.map((h, i) => rows.reduce((max, r) => Math.max(max, r[i]!.length), h.length));
  if (!fit) return { widths: natural, cut: false };
  const droppable = fit.fits
    .map((f, i) => ({ f, i }))
    .filter((c) => c.f?.drop !== undefined)
    .sort((a, b) => a.f!.drop! - b.f!.drop!)
    .map((c) => c.i);
  let widths: (number | null)[] = natural;
  for (let dropped = 0; dropped <= droppable.length; dropped++) {
    const gone = new Set(droppable.slice(0, dropped));
    widths = shrink(header, natural.map((w, i) => (gone.has(i) ? null : w)), fit);
    if (total(widths) <= fit.width) break;
  }
  return { widths, cut: widths.some((w, i) => w !== null && w < natural[i]!) || total(widths) > fit.width };
}

function total(widths: readonly (number | null)[]): number {
  const shown = widths.filter((w): w is number => w !== null);
  return shown.reduce((a, b) => a + b, 0) + GAP * Math.max(0, shown.length - 1);
}

function shrink(header: readonly string[], start: readonly (number | null)[], fit: TableFit): (number | null)[] {
  const widths = [...start];
  const order = fit.fits
    .map((f, i) => ({ f, i }))
    .filter((c) => c.f?.shrink !== undefined && widths[c.i] !== null)
    .sort((a, b) => a.f!.shrink! - b.f!.shrink!);
  for (const { f, i } of order) {
    const excess = total(widths) - fit.width;
    if (excess <= 0) break;
    // Never narrower than the header, so the header still says what the column is.
    const floor = Math.min(widths[i]!, Math.max(f!.min ?? 1, header[i]!.length));
    widths[i] = Math.max(floor, widths[i]! - excess);
  }
  return widths;
}

/**
 * Prints rows as aligned columns, control characters escaped. With `fit`, the table is laid out
 * to fit fit.width characters (a terminal's width; see layoutTable). Returns the layout it used.
 */
export function printTable(header: string[], rows: string[][], fit?: TableFit): TableLayout {
  // Cells come from the catalog, which an import or an older Strata may have filled with
  // control characters: shown escaped, they cannot repaint the terminal or forge rows.
  rows = rows.map((r) => r.map(printable));
  const layout = layoutTable(header, rows, fit);
  const { widths } = layout;
  const line = (cells: string[]): string => {
    const text = cells
      .flatMap((c, i) => (widths[i] === null ? [] : [elide(c, widths[i]!, fit?.fits[i]?.elide ?? 'end').padEnd(widths[i]!)]))
      .join(' '.repeat(GAP))
      .trimEnd();
    return fit ? elide(text, fit.width, 'end') : text;
  };
  // One write per 64 KiB or so, not one per row: a table can have tens of thousands of rows.
  let text = line(header) + '\n';
  for (const row of rows) {
    text += line(row) + '\n';
    if (text.length >= 65536) {
      process.stdout.write(text);
      text = '';
    }
  }
  process.stdout.write(text);
  return layout;
}
