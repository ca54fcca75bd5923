import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { StrataError } from '@strata/core';
import type { Relocation } from '@strata/core';

/**
 * A cluster's tablespaces in a physical backup. pg_basebackup in tar format leaves the links in
 * pg_tblspc out of base.tar and writes `tablespace_map` into it instead (one line per tablespace:
 * its OID and the folder it was in), and one more tar per tablespace holding that folder's
 * contents. At the start of recovery PostgreSQL makes the links from tablespace_map. So a restore
 * unpacks each tablespace's tar into the folder it is to live in and rewrites tablespace_map to
 * name those folders: the data directory needs nothing else.
 */

/** The stream of one tablespace's tar, named by its OID. */
export const TABLESPACE_STREAM = /^tablespace-(\d+)\.tar$/;
export const tablespaceStream = (oid: string): string => `tablespace-${oid}.tar`;

/** A tablespace outside the data directory, as the backup found it. */
export interface Tablespace {
  readonly oid: string;
  readonly name: string;
  readonly location: string;
}

/**
 * tablespace_map's lines: `OID PATH`, where PostgreSQL (read_tablespace_map) takes a backslash
 * to mean "the next character as it is", so a path may hold a newline.
 */
export function parseTablespaceMap(text: string): Map<string, string> {
  const map = new Map<string, string>();
  let line = '';
  let escaped = false;
  const take = (): void => {
    if (line === '') return;
    const m = /^(\d+) (.+)$/s.exec(line);
    if (!m) throw new StrataError('ARTIFACT_CORRUPT', `restore: base.tar's tablespace_map has a line PostgreSQL would not read: ${JSON.stringify(line)}`);
    map.set(m[1]!, m[2]!);
    line = '';
  };
  for (const ch of text) {
    if (!escaped && (ch === '\n' || ch === '\r')) take();
    else if (!escaped && ch === '\\') escaped = true;
    else {
      line += ch;
      escaped = false;
    }
  }
  take();
  return map;
}

/** tablespace_map for `map` (OID → folder), escaped as PostgreSQL reads it. */
export function formatTablespaceMap(map: ReadonlyMap<string, string>): string {
  return [...map].map(([oid, folder]) => `${oid} ${folder.replace(/[\\\n\r]/g, (c) => `\\${c}`)}\n`).join('');
}

/** The tablespace_map of a data directory being restored (none when the cluster had no tablespaces). */
export async function readTablespaceMap(dataDir: string): Promise<Map<string, string>> {
  const file = path.join(dataDir, 'tablespace_map');
  if (!existsSync(file)) return new Map();
  return parseTablespaceMap(await fs.readFile(file, 'utf8'));
}

/**
 * `folder` with its symbolic links resolved, as far as it exists (the rest appended as given), so
 * that two spellings of one folder compare equal.
 */
function realFolder(folder: string): string {
  const absolute = path.resolve(folder);
  let existing = absolute;
  const rest: string[] = [];
  while (!existsSync(existing) && path.dirname(existing) !== existing) {
    rest.unshift(path.basename(existing));
    existing = path.dirname(existing);
  }
  try {
    return path.join(realpathSync(existing), ...rest);
  } catch {
    return absolute;
  }
}

/** True when `inner` is `outer` or inside it, symbolic links resolved. */
function within(inner: string, outer: string): boolean {
  const rel = path.relative(realFolder(outer), realFolder(inner));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The entries of a folder, but for those named (none when it does not exist; a folder that cannot be read holds something). */
export function entriesOf(folder: string, except: readonly string[] = []): string[] {
  if (!existsSync(folder)) return [];
  try {
    return readdirSync(folder).filter((name) => !except.includes(name));
  } catch {
    return ['(unreadable)'];
  }
}

/**
 * OID → folder of each tablespace of a data directory: its links (pg_tblspc), and for one no server
 * has started yet, its tablespace_map (PostgreSQL links the tablespaces from it at startup and
 * renames it tablespace_map.old). Where both name an OID, the map's folder, which the next start uses.
 */
export function dataDirTablespaces(dataDir: string): Map<string, string> {
  const found = new Map<string, string>();
  const links = path.join(dataDir, 'pg_tblspc');
  let names: string[] = [];
  try {
    names = readdirSync(links);
  } catch {
    names = [];
  }
  for (const oid of names) {
    try {
      found.set(oid, path.resolve(links, readlinkSync(path.join(links, oid))));
    } catch {
      // Not a link: nothing PostgreSQL would follow.
    }
  }
  try {
    for (const [oid, location] of parseTablespaceMap(readFileSync(path.join(dataDir, 'tablespace_map'), 'utf8'))) found.set(oid, location);
  } catch {
    // No map (or an unreadable one): the links are all there is.
  }
  return found;
}

/** Where one tablespace is restored, and whether what that folder holds may be replaced (--force). */
export interface TablespacePlacement {
  readonly to: string;
  readonly replace: boolean;
}

/**
 * A folder PostgreSQL reads back from tablespace_map as written (PostgreSQL 13 and 14 escape only
 * line ends there, 15 and later backslashes too): one with neither reads the same everywhere.
 */
export function plainLocation(folder: string): boolean {
  return !/[\\\n\r]/.test(folder);
}

/**
 * Decides where each tablespace of a backup is restored (`recorded`: OID → the folder it was in),
 * and refuses, naming the tablespace and what to give, a plan that would write into a folder that
 * holds something: on the machine the backup was taken on, the recorded folder is the live
 * cluster's own tablespace. With `force`, a folder of the data directory being replaced (its links,
 * or its tablespace_map before it was started) may be replaced too, but never the folder a
 * tablespace was in when backed up: a copy of the live data directory links to the live ones.
 */
export function placeTablespaces(recorded: ReadonlyMap<string, string>, relocate: Relocation | undefined, target: string, force: boolean): Map<string, TablespacePlacement> {
  const map = relocationMap(relocate);
  const known = new Set([...recorded.values()].map((location) => path.resolve(location)));
  const unknown = [...map.keys()].filter((from) => !known.has(from));
  if (unknown.length > 0) {
    const has = recorded.size === 0 ? 'no tablespaces' : `its tablespaces were at ${[...recorded.values()].join(', ')}`;
    throw new StrataError('USAGE', `restore: --tablespace-map names ${unknown.join(', ')}, where this backup had no tablespace (${has}); give OLD as the folder the tablespace was in when the backup was taken`);
  }
  const originals = new Set([...known].map(realFolder));
  const replaceable = force ? [...dataDirTablespaces(target).values()].map(realFolder).filter((folder) => !originals.has(folder)) : [];
  const placed = new Map<string, TablespacePlacement>();
  for (const [oid, location] of recorded) {
    const to = destination(oid, location, map, relocate);
    if (!plainLocation(to)) throw new StrataError('USAGE', `restore: tablespace ${oid} would be restored into ${JSON.stringify(to)}, whose name has a backslash or a line end that PostgreSQL's tablespace_map cannot carry; give --tablespace-map ${location}=FOLDER with another name`);
    if (within(to, target) || within(target, to)) {
      throw new StrataError('USAGE', `restore: tablespace ${oid} (at ${location} when backed up) would be restored into ${to}, which is inside the data directory ${target} or holds it; give --tablespace-map ${location}=FOLDER outside it`);
    }
    const twin = [...placed].find(([, other]) => within(to, other.to) || within(other.to, to));
    if (twin) throw new StrataError('USAGE', `restore: tablespaces ${twin[0]} and ${oid} would both be restored into ${to}; give each a folder of its own with --tablespace-map`);
    const replace = replaceable.includes(realFolder(to));
    if (entriesOf(to).length > 0 && !replace) throw occupiedError(oid, location, to);
    placed.set(oid, { to, replace });
  }
  return placed;
}

/** --tablespace-map's OLD → NEW, both absolute. */
function relocationMap(relocate: Relocation | undefined): Map<string, string> {
  return new Map(Object.entries(relocate?.map ?? {}).map(([from, to]) => [path.resolve(from), path.resolve(to)]));
}

function destination(oid: string, location: string, map: ReadonlyMap<string, string>, relocate: Relocation | undefined): string {
  const from = path.resolve(location);
  return map.get(from) ?? (relocate?.under ? path.join(path.resolve(relocate.under), oid) : from);
}

/** The folders the tablespaces of `recorded` (OID → folder when backed up) would be restored into, unchecked. */
export function tablespaceDestinations(recorded: ReadonlyMap<string, string>, relocate: Relocation | undefined): string[] {
  const map = relocationMap(relocate);
  return [...recorded].map(([oid, location]) => destination(oid, location, map, relocate));
}

/** The refusal of a tablespace folder that holds something. */
export function occupiedError(oid: string, location: string, to: string): StrataError {
  return new StrataError(
    'TARGET_EXISTS',
    `restore: tablespace ${oid} was at ${location} when backed up, and ${to} exists and is not empty${path.resolve(to) === path.resolve(location) ? " (on the machine the backup was taken on, it is the cluster's own tablespace)" : ''}; nothing was written there. Give --tablespace-map ${location}=NEW_FOLDER with an empty or new folder`,
  );
}

/** Removes a data directory a restore wrote and its tablespaces' folders. */
export async function removeRestoredCluster(dataDir: string): Promise<void> {
  for (const folder of new Set(dataDirTablespaces(dataDir).values())) await fs.rm(folder, { recursive: true, force: true });
  await fs.rm(dataDir, { recursive: true, force: true });
}

const TAR_BLOCK = 512;
/** The two empty blocks that end a tar (pg_basebackup writes exactly these). */
export const TAR_END_BYTES = 2 * TAR_BLOCK;

/**
 * One regular file as tar blocks (a ustar header, the body, padding). Written here rather than
 * taken from a tar library: it is the one member a backup adds (backup_manifest to base.tar,
 * where pg_basebackup puts it when it writes to a pipe), and a library would take over the stream.
 */
export function tarMember(name: string, body: Uint8Array, mtime = Math.floor(Date.now() / 1000)): Buffer[] {
  if (Buffer.byteLength(name) > 100) throw new StrataError('INTERNAL', `backup: tar member name ${name} is too long`);
  const header = Buffer.alloc(TAR_BLOCK);
  const field = (offset: number, length: number, value: string): void => void header.write(value, offset, length, 'latin1');
  const octal = (offset: number, length: number, value: number): void => field(offset, length - 1, value.toString(8).padStart(length - 1, '0'));
  field(0, 100, name);
  octal(100, 8, 0o600);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, body.length);
  octal(136, 12, mtime);
  field(156, 1, '0');
  field(257, 6, 'ustar');
  field(263, 2, '00');
  // The checksum is the sum of the header's bytes with its own field read as eight spaces.
  header.fill(0x20, 148, 156);
  const sum = header.reduce((total, byte) => total + byte, 0);
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  const padding = Buffer.alloc((TAR_BLOCK - (body.length % TAR_BLOCK)) % TAR_BLOCK);
  return [header, Buffer.from(body.buffer, body.byteOffset, body.byteLength), padding];
}
