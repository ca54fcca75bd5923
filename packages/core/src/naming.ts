import { randomBytes } from 'node:crypto';
import { StrataError } from './errors.js';
import type { BackupType } from './format/manifest.js';

/** Database names become folder and file names, so they stay portable and unambiguous. */
const DATABASE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks a database name; the error says exactly what is allowed. */
export function validateDatabaseName(name: string): string {
  if (!DATABASE_NAME.test(name) || name.includes('..')) {
    throw new StrataError(
      'USAGE',
      `database name ${JSON.stringify(name)} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  return name;
}

/** `YYYYMMDD_HHMMSS` in UTC. */
export function timestampPart(time: Date): string {
  const iso = time.toISOString();
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}_${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}`;
}

/**
 * A backup id following `{database}_{type}_{YYYYMMDD_HHMMSS}_{suffix}`: readable in a folder
 * listing, sortable by time within a database, and unique thanks to a short random suffix.
 */
export function newBackupId(database: string, type: BackupType, time: Date): string {
  return `${database}_${type}_${timestampPart(time)}_${randomBytes(2).toString('hex')}`;
}

/** Storage key of an artifact: `backups/{database}/{id}.tar{.zst|.gz}{.gpg}`. */
export function artifactKey(database: string, id: string, compressionExtension: string, encrypted: boolean): string {
  return `backups/${database}/${id}.tar${compressionExtension}${encrypted ? '.gpg' : ''}`;
}

/** What a file name tells about an artifact's layers, for rebuilding a lost catalog. */
export function parseArtifactKey(key: string): { id: string; database: string; codec: 'zstd' | 'gzip' | 'none'; encrypted: boolean } | undefined {
  const match = /^backups\/([^/]+)\/([^/]+)\.tar(\.zst|\.gz)?(\.gpg)?$/.exec(key);
  if (!match) return undefined;
  const codec = match[3] === '.zst' ? 'zstd' : match[3] === '.gz' ? 'gzip' : 'none';
  return { database: match[1]!, id: match[2]!, codec, encrypted: match[4] !== undefined };
}

/**
 * The names of `--tables a,b`. Names are cut at commas and trimmed; a name that holds a comma or
 * begins or ends with spaces is given in double quotes, a quote inside doubled, as in SQL
 * (`--tables '"orders, 2024",customers'`). Only a name quoted as a whole is unquoted; a name
 * whose parts are quoted (`"a.b".c`, `sales."q1, 2024"`: how a table whose name holds a dot is
 * told apart) is passed on as written, as are `public.orders` and names with a quote inside, for
 * the engine to match. By hand because no option parser knows SQL's quoting, and a CSV parser
 * would also take quotes in the middle of a name. {@link tableListArgument} writes a list back
 * this way.
 */
export function parseTableList(text: string, example: string): string[] {
  const names: string[] = [];
  let at = 0;
  while (at <= text.length) {
    while (text[at] === ' ') at++;
    const start = at;
    // The parts of one name: a quoted part (commas and dots inside are the name's) or a plain
    // one, up to the next dot or comma, then another part after a dot.
    let quoted: string | undefined;
    let parts = 0;
    for (;;) {
      parts++;
      if (text[at] === '"') {
        const part = readQuotedPart(text, at);
        if (!part) throw new StrataError('USAGE', `restore: --tables has a quoted name without its closing quote (${JSON.stringify(text.slice(start, start + 60))}); write a quote inside a name as "", e.g. --tables ${example}`);
        quoted = part.value;
        at = part.end;
        if (text[at] === '.') {
          at++;
          continue;
        }
        const comma = text.indexOf(',', at);
        const rest = comma < 0 ? text.slice(at) : text.slice(at, comma);
        if (rest.trim() !== '') {
          throw new StrataError('USAGE', `restore: --tables has ${JSON.stringify(rest.trim().slice(0, 40))} after the quoted name "${quoted}"; quote a name as a whole and put a comma between names, e.g. --tables ${example}`);
        }
        at += rest.length;
        break;
      }
      while (at < text.length && text[at] !== ',' && text[at] !== '.') at++;
      if (text[at] === '.') {
        at++;
        continue;
      }
      break;
    }
    const name = parts === 1 && quoted !== undefined ? quoted : text.slice(start, at).trim();
    if (name !== '') names.push(name);
    at++;
  }
  if (names.length === 0) throw new StrataError('USAGE', `restore: --tables needs table names, e.g. --tables ${example}`);
  return names;
}

/**
 * The double-quoted part of a name that begins at `at` (a quote inside doubled, as in SQL): its
 * value and where the text goes on after its closing quote; undefined when it has none.
 */
export function readQuotedPart(text: string, at: number): { value: string; end: number } | undefined {
  let value = '';
  let from = at + 1;
  for (;;) {
    const quote = text.indexOf('"', from);
    if (quote < 0) return undefined;
    value += text.slice(from, quote);
    if (text[quote + 1] !== '"') return { value, end: quote + 1 };
    value += '"';
    from = quote + 2;
  }
}

/** `--tables` as {@link parseTableList} reads it back, for messages that suggest one. */
export function tableListArgument(names: readonly string[]): string {
  return names.map((name) => (readsBackAs(name) ? name : `"${name.replace(/"/g, '""')}"`)).join(',');
}

/** Whether `--tables` given the name as it is reads it back as that one name. */
function readsBackAs(name: string): boolean {
  try {
    const back = parseTableList(name, '');
    return back.length === 1 && back[0] === name;
  } catch {
    return false;
  }
}
