// Judges Strata's restore against pg_dump's. For each compared item (a schema entry, a table's
// rows, a sequence, a large object) there are three versions: the source database's, the oracle's
// (pg_dump -Fc + pg_restore) and Strata's. Strata passes an item when its version equals the
// oracle's, or equals the source's (Strata kept something the round trip through pg_dump lost).
// Anything else is a difference the oracle does not show.

/**
 * @param {Map<string, string>} source
 * @param {Map<string, string>} oracle
 * @param {Map<string, string>} strata
 * @returns {{ failures: Difference[], strataBetter: Difference[], oracleBaseline: Difference[] }}
 * @typedef {{ key: string, source?: string, oracle?: string, strata?: string }} Difference
 */
export function classify(source, oracle, strata) {
  const keys = [...new Set([...source.keys(), ...oracle.keys(), ...strata.keys()])].sort();
  const failures = [];
  const strataBetter = [];
  const oracleBaseline = [];
  for (const key of keys) {
    const item = { key, source: source.get(key), oracle: oracle.get(key), strata: strata.get(key) };
    if (item.oracle !== item.source) oracleBaseline.push(item);
    if (item.strata === item.oracle) continue;
    if (item.strata === item.source) strataBetter.push(item);
    else failures.push(item);
  }
  return { failures, strataBetter, oracleBaseline };
}

/** Lines of `a` missing from `b`, as a multiset difference, keeping `a`'s order. */
function linesMissing(a, b) {
  const counts = new Map();
  for (const line of b) counts.set(line, (counts.get(line) ?? 0) + 1);
  const missing = [];
  for (const line of a) {
    const n = counts.get(line) ?? 0;
    if (n > 0) counts.set(line, n - 1);
    else missing.push(line);
  }
  return missing;
}

/**
 * A readable account of how `actual` differs from `expected` (two texts): the lines only one
 * of them has, `-` for expected, `+` for actual, at most `limit` of each.
 */
export function lineDifference(expected, actual, { limit = 12, expectedName = 'the oracle', actualName = 'Strata' } = {}) {
  if (expected === undefined) return [`  (only ${actualName} has it)`, ...indent(actual, limit)];
  if (actual === undefined) return [`  (missing from ${actualName}; ${expectedName} has it)`, ...indent(expected, limit)];
  const e = expected.split('\n');
  const a = actual.split('\n');
  const removed = linesMissing(e, a);
  const added = linesMissing(a, e);
  if (removed.length === 0 && added.length === 0) return ['  (same lines, in a different order)'];
  const out = [];
  for (const [sign, lines] of [['-', removed], ['+', added]]) {
    for (const line of lines.slice(0, limit)) out.push(`  ${sign} ${line}`);
    if (lines.length > limit) out.push(`  ${sign} ... ${lines.length - limit} more`);
  }
  return out;
}

function indent(text, limit) {
  const lines = text.split('\n');
  const shown = lines.slice(0, limit).map((l) => `    ${l}`);
  if (lines.length > limit) shown.push(`    ... ${lines.length - limit} more lines`);
  return shown;
}
