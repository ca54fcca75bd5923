import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readdirSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { StrataError, makeSideFolder, processRuns, sideFolderPath, sweepSideFolders, throwIfAborted } from '@strata/core';
import type {
  Abortable,
  DataCheck,
  DatabaseFacts,
  Engine,
  EngineCapabilities,
  EngineDisplay,
  EngineRestoreOptions,
  HandRecovery,
  InspectOptions,
  LogRange,
  RestoreSession,
  Snapshot,
  SnapshotOptions,
  SnapshotParent,
  StreamSink,
  SnapshotStream,
} from '@strata/core';
import { connect, parseTarget } from './pg-connection.js';
import type { PgTarget } from './pg-connection.js';
import { segmentOf, walFileName } from './pg-wal.js';
import { PG_LOG_ARCHIVE_RULES } from './pg-wal-rules.js';
import { checkRecoveredCopy, clusterFingerprint } from './pg-physical-check.js';
import { archiveTimeoutMs, watchArchiveWait } from './pg-archive-wait.js';
import { TABLESPACE_STREAM, TAR_END_BYTES, entriesOf, formatTablespaceMap, occupiedError, placeTablespaces, plainLocation, readTablespaceMap, tablespaceDestinations, tablespaceStream, tarMember } from './pg-tablespaces.js';
import type { Tablespace, TablespacePlacement } from './pg-tablespaces.js';

/**
 * PostgreSQL, physically: the whole cluster's files as `pg_basebackup` streams them (one tar),
 * restored into a new data directory that PostgreSQL then recovers from the archived
 * write-ahead log (`strata wal-push` / `wal-fetch`) to a chosen moment (pg-point-in-time.ts).
 *
 * The locator is the cluster's URL with the scheme `postgres+physical://`; strata.config.json's
 * `"method": "physical"` makes it from a `postgres://` URL. A restore target is a folder path.
 */

/** Where a scratch copy's tablespaces go: a folder beside it, removed with it. */
const scratchTablespaces = (dataDir: string): string => `${dataDir}.tablespaces`;
/**
 * What a restore names the folder it unpacks a tablespace into before it commits: a side folder
 * inside the folder the tablespace goes to (the same file system, an empty mount point included,
 * and that folder's owner and mode kept), named as the data directory's are, because it holds
 * decrypted files that the next restore must be able to tell from another's and remove.
 */
const tablespaceUnpackFolder = (to: string): string => path.join(to, 'tablespace');

/** The URL schemes of a physical entry. */
export const PHYSICAL_SCHEMES = ['postgres+physical', 'postgresql+physical'] as const;
/** The one stream of a physical backup: pg_basebackup's tar of the cluster, backup_manifest included. */
export const BASE_STREAM = 'base.tar';
/**
 * The tar is cut into content-defined chunks of about this size, so an incremental or differential
 * stores only the chunks its parent lacks ("chunk reuse"). Fixed blocks over a whole tar would all
 * shift when any earlier file grew or a new file appeared (every tar member moves the rest by a
 * multiple of 512 bytes); content-defined boundaries move only around the change. Measured on a
 * 200 MB table with 1% of its rows (one range) updated: 2.7% of the tar is stored again, against
 * 29% with 4 MiB blocks (docs/FORMAT.md, "PostgreSQL, physical").
 */
const AVERAGE_CHUNK = 64 * 1024;
/** What `list` says of a physical incremental or differential: how it stores its changes. */
export const CHUNK_REUSE = 'chunk reuse';
/** The same, taken so because the server refused a block-level one when it started (its words in the manifest's engineMeta). */
export const CHUNK_REUSE_REFUSED = 'chunk reuse, the server refused block-level';
/**
 * What `list` says of one taken with PostgreSQL 17's own incremental base backup
 * (`pg_basebackup --incremental`): only the blocks changed since the parent, read by the server
 * from its WAL summaries; restored with `pg_combinebackup`.
 */
export const BLOCK_LEVEL = 'block-level';
/**
 * A block-level incremental stores its own tar under this name, numbered by its depth above the
 * full (`incremental.1.tar` on a full, `incremental.2.tar` on that, ...), and lists its parent's
 * tars beside it unchanged (SnapshotStream.inherited): a restore gets every layer, oldest first.
 */
const LAYER = /^incremental\.(\d+)\.tar$/;
export const layerName = (depth: number): string => `incremental.${depth}.tar`;
/**
 * A layer's tablespaces, each a tar of its own beside the layer's: `incremental.<depth>.tablespace-<oid>.tar`
 * (the whole base backup's are `tablespace-<oid>.tar`). pg_combinebackup finds a layer's tablespaces
 * through the links in that layer's pg_tblspc, so a restore unpacks each beside its layer and links it.
 */
const LAYER_TABLESPACE = /^incremental\.(\d+)\.tablespace-(\d+)\.tar$/;
const layerTablespaceStream = (depth: number, oid: string): string => `incremental.${depth}.tablespace-${oid}.tar`;
/** The stream of tablespace `oid` in the layer at `depth` (0: the whole base backup). */
const tablespaceStreamAt = (depth: number, oid: string): string => (depth === 0 ? tablespaceStream(oid) : layerTablespaceStream(depth, oid));
/** The layer (its tar's stream name) that holds a tablespace stream, and the tablespace's OID; undefined for any other stream. */
function tablespaceLayer(name: string): { layer: string; oid: string } | undefined {
  const whole = TABLESPACE_STREAM.exec(name);
  if (whole) return { layer: BASE_STREAM, oid: whole[1]! };
  const layered = LAYER_TABLESPACE.exec(name);
  return layered ? { layer: layerName(Number(layered[1])), oid: layered[2]! } : undefined;
}

/**
 * How pg_basebackup reports a server's refusal to take an incremental (PostgreSQL 17's messages
 * name the WAL summaries, summarization, the manifest or the incremental backup itself).
 */
const BLOCK_LEVEL_REFUSED = /incremental|WAL summar|manifest/i;
/** pg_basebackup's words for a base backup the server never began (the manifest not taken, or the backup not started). */
const NOT_BEGUN = /could not initiate base backup|UPLOAD_MANIFEST|could not upload manifest/i;

/** A stream whose first piece was already read: that piece, then the rest. */
async function* resumed(started: { first: Uint8Array | undefined; rest: AsyncGenerator<Uint8Array> }): AsyncGenerator<Uint8Array> {
  if (started.first) yield started.first;
  yield* started.rest;
}

/** The parent's tars in the order pg_combinebackup takes them: base.tar, then its layers by depth. */
export function layersOf(streams: readonly string[]): string[] {
  const layers = streams.filter((name) => LAYER.test(name)).sort((a, b) => Number(LAYER.exec(a)![1]) - Number(LAYER.exec(b)![1]));
  return [BASE_STREAM, ...layers];
}

/**
 * Every stream of a physical backup, layer by layer as pg_combinebackup takes them, each layer's
 * tablespaces after its own tar: what a block-level incremental lists of its parent's.
 */
function physicalStreams(streams: readonly string[]): string[] {
  const depth = (name: string): number => (name === BASE_STREAM || TABLESPACE_STREAM.test(name) ? 0 : Number((LAYER.exec(name) ?? LAYER_TABLESPACE.exec(name))?.[1] ?? -1));
  const unknown = streams.find((name) => depth(name) < 0);
  if (unknown !== undefined) throw new StrataError('ARTIFACT_FOREIGN', `backup: the parent holds a stream ${JSON.stringify(unknown)}, which this version of Strata does not write into a physical backup; take a full backup`);
  const known = [...streams];
  // Within a layer its own tar comes first, then its tablespaces by OID.
  const order = (name: string): [number, number, number] => {
    const space = tablespaceLayer(name);
    return [depth(name), space ? 1 : 0, space ? Number(space.oid) : 0];
  };
  return known.sort((a, b) => {
    const [x, y] = [order(a), order(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
}

/** A cluster's base backup staged in the private folder (PgPhysicalEngine's #stagedStreams). */
interface StagedBackup {
  readonly streams: SnapshotStream[];
  /** Runs pg_basebackup into the folder now rather than when the first stream is opened. */
  stage(signal: AbortSignal | undefined): Promise<void>;
  remove(): Promise<void>;
}

/** True for a `postgres://` or `postgresql://` URL. */
export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//i.test(url);
}

/** The physical engine's locator of a cluster URL. */
export function physicalLocator(url: string): string {
  return url.replace(/^postgres(ql)?:\/\//i, 'postgres+physical://');
}

/** The libpq URL of a physical locator. */
export function clusterUrl(locator: string): string {
  return locator.replace(/^postgres(ql)?\+physical:\/\//i, 'postgres://');
}

/** The facts a physical backup records about itself (manifest `engineMeta`). */
export interface PhysicalMeta {
  readonly method: 'physical';
  readonly serverVersion: number;
  readonly systemIdentifier: string;
  readonly timeline: number;
  readonly startLsn: string;
  readonly endLsn: string;
  readonly startWal: string;
  readonly endWal: string;
  readonly walSegmentBytes: number;
  readonly backupLabel: string;
  /** The tablespaces outside the data directory, each a stream `tablespace-<oid>.tar` (absent when none). */
  readonly tablespaces?: readonly Tablespace[];
}

/** Where the log stood, as a physical backup's `logRange` records it. */
export interface PhysicalPosition {
  readonly timeline: number;
  readonly lsn: string;
  readonly wal: string;
  /** wal_segment_size of the cluster. */
  readonly segmentBytes: number;
}

const HAND_RECOVERY: HandRecovery = {
  layout: `PostgreSQL, physical: base.tar is pg_basebackup's tar of the whole cluster (backup_label and
backup_manifest inside), its write-ahead log not included: it lives in the log archive
(backups/<database>/log/, one compressed and encrypted file per segment, see docs/FORMAT.md).
An incremental or differential stores only the chunks of base.tar its parent lacks: recover-chain.py
assembles the whole base.tar from the chain. A block-level one (PostgreSQL 17 and later) also has
incremental.1.tar, incremental.2.tar, ...: unpack each into a folder of its own and put them
together, base.tar first, with pg_combinebackup (docs/FORMAT.md, recover-physical-layers). A cluster
with tablespaces also has tablespace-<OID>.tar, one per tablespace: unpack each into a folder of its
own and make tablespace_map (in base.tar) name those folders (docs/FORMAT.md, "Tablespaces"); in a
block-level chain each layer has its own, incremental.<n>.tablespace-<OID>.tar, linked from that
layer's pg_tblspc for pg_combinebackup. To recover: concatenate the chunks of base.tar, untar it into an empty folder (mode 0700), add
recovery.signal and a restore_command that decrypts and decompresses the archived segments,
set a recovery target if you want one, and start PostgreSQL of the major version in
engineMeta.serverVersion on it.`,
  loadCommands: [
    '# a block-level incremental (PostgreSQL 17 and later) has layers above base.tar: incremental.1.tar, ...',
    'layers=(base); for n in $(ls "$OUT/data" | sed -n \'s/^incremental\\.\\([0-9]*\\)\\.tar$/\\1/p\' | sort -n); do layers+=("incremental.$n"); done',
    '# a layer\'s tablespaces (incremental.<n>.tablespace-<OID>.tar; the whole base backup\'s are tablespace-<OID>.tar) are unpacked beside it and linked from its pg_tblspc, where pg_combinebackup looks for them, and the result goes into "$NEWDB.tablespaces/<OID>", linked from "$NEWDB/pg_tblspc"; its tablespace_map, which names the folders they were in, is made to name those',
    'if [ ${#layers[@]} -eq 1 ]; then mkdir -m 0700 "$NEWDB" && tar -x -C "$NEWDB" -f "$OUT/data/base.tar"; else ok=1; dirs=(); maps=(); top="$(cd "$(dirname "$NEWDB")" && pwd)/$(basename "$NEWDB")" || ok=; rm -rf "$OUT/layers"; for l in "${layers[@]}"; do [ -n "$ok" ] || break; d="$(cd "$OUT" && pwd)/layers/$l"; maps=(); mkdir -p "$d/pg_tblspc" && tar -x -C "$d" -f "$OUT/data/$l.tar" && dirs+=("$d") || { ok=; break; }; p="$l."; [ "$l" = base ] && p=""; while read -r oid old; do mkdir -p "$d.tablespaces/$oid" && tar -x -C "$d.tablespaces/$oid" -f "$OUT/data/${p}tablespace-$oid.tar" && ln -sfn "$d.tablespaces/$oid" "$d/pg_tblspc/$oid" && maps+=(-T "${d//=/\\\\=}.tablespaces/$oid=${top//=/\\\\=}.tablespaces/$oid") || { ok=; break 2; }; done < <(cat "$d/tablespace_map" 2>/dev/null); done; if [ -z "$ok" ]; then echo "a layer could not be unpacked: nothing was combined" >&2; false; elif pg_combinebackup -o "$NEWDB" ${maps[@]+"${maps[@]}"} "${dirs[@]}" && { [ ! -s "$NEWDB/tablespace_map" ] || { while read -r oid old; do printf \'%s %s\\n\' "$oid" "$top.tablespaces/$oid"; done < "$NEWDB/tablespace_map" > "$NEWDB/tablespace_map.new" && mv "$NEWDB/tablespace_map.new" "$NEWDB/tablespace_map"; }; }; then rm -r "$OUT/layers"; else echo "pg_combinebackup or the tablespace_map rewrite failed: do not start PostgreSQL on $NEWDB" >&2; false; fi; fi',
    '# a cluster with tablespaces also has tablespace-<OID>.tar files: each goes into "$NEWDB.tablespaces/<OID>", and tablespace_map is made to name those folders (absolute paths) (docs/FORMAT.md, "Tablespaces"); never the folders they were in, on the machine of the cluster they came from',
    'if [ ${#layers[@]} -eq 1 ] && [ -s "$NEWDB/tablespace_map" ]; then mkdir -m 0700 "$NEWDB.tablespaces" && : > "$NEWDB/tablespace_map.new" && while read -r oid old; do mkdir -m 0700 "$NEWDB.tablespaces/$oid" && tar -x -C "$NEWDB.tablespaces/$oid" -f "$OUT/data/tablespace-$oid.tar" && printf \'%s %s\\n\' "$oid" "$(cd "$NEWDB.tablespaces/$oid" && pwd)" >> "$NEWDB/tablespace_map.new" || break; done < "$NEWDB/tablespace_map"; if [ "$(wc -l < "$NEWDB/tablespace_map.new")" = "$(wc -l < "$NEWDB/tablespace_map")" ]; then mv "$NEWDB/tablespace_map.new" "$NEWDB/tablespace_map"; else echo "a tablespace could not be unpacked: do not start PostgreSQL on $NEWDB" >&2; false; fi; fi',
    'touch "$NEWDB/recovery.signal"   # then set restore_command as docs/FORMAT.md shows, and start PostgreSQL on "$NEWDB"',
  ],
  tools: ['tar', 'PostgreSQL server binaries', 'pg_combinebackup (PostgreSQL 17 and later, for block-level incrementals)'],
  logArchive:
    'Recovery reads it through a restore_command that decrypts and decompresses the file of the segment PostgreSQL asks for; docs/FORMAT.md of the Strata project ("Recovering a physical backup by hand") gives that command and the recovery settings. ' +
    'With Strata, the restore above takes `--as-of TIME` (or `--lsn`, `--xid`, `--name`, `--immediate`) to recover to any moment this log reaches.',
  exampleTarget: (database) => `/var/lib/postgresql/restored-${database}`,
};

/** The environment for pg_basebackup: the connection through libpq variables, so no password is on argv. */
export function libpqEnv(target: PgTarget): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PGHOST: target.host, PGPORT: String(target.port), PGUSER: target.user, PGDATABASE: target.database, PGCONNECT_TIMEOUT: '10' };
  if (target.password !== undefined) env['PGPASSWORD'] = target.password;
  else delete env['PGPASSWORD'];
  return env;
}

/** The PostgreSQL programs of a major version: STRATA_PG_BINDIR, then Debian's and the PGDG's folders, then PATH. */
export function pgProgram(name: string, major?: number): string {
  const dirs = [process.env['STRATA_PG_BINDIR'], major ? `/usr/lib/postgresql/${major}/bin` : undefined, major ? `/usr/pgsql-${major}/bin` : undefined].filter((d): d is string => !!d);
  for (const dir of dirs) if (existsSync(path.join(dir, name))) return path.join(dir, name);
  return name;
}

/** The major version a PostgreSQL program reports (`pg_basebackup (PostgreSQL) 15.14`), or undefined when it cannot be run. */
export function programMajor(program: string): number | undefined {
  const r = spawnSync(program, ['--version'], { encoding: 'utf8' });
  const m = /\(PostgreSQL\)\s+(\d+)/.exec(r.stdout ?? '');
  return m ? Number(m[1]) : undefined;
}

/** Entries of pg_basebackup's tar a backup reads whole are small; more than this is not one of them. */
const MAX_CAUGHT_ENTRY = 64 * 1024 * 1024;

/**
 * How much of backup_manifest's end a backup keeps. The manifest lists every file of the cluster
 * (about 150 bytes each: 64 MiB at some 400,000 files) and only its WAL-Ranges are read, which
 * pg_basebackup writes last, before the manifest's own checksum.
 */
export const MANIFEST_TAIL_BYTES = 64 * 1024;

/**
 * A backup_manifest of at most this many bytes (some 200,000 files) is kept whole and handed
 * forward (`carryForward`): the next block-level incremental gives it to `pg_basebackup
 * --incremental` without reading the parent's artifact back. A larger one is read back as before.
 */
export const CARRIED_MANIFEST_BYTES = 32 * 1024 * 1024;

/**
 * Follows a tar as it streams past and keeps the bodies of a few named entries (backup_label
 * whole, the end of backup_manifest), reading only the 512-byte headers of the rest. Written here
 * rather than taken from a tar library: those take the stream over and hand out entries, where a
 * backup must pass every byte on untouched and at once.
 *
 * `wanted` entries are kept whole; `tails` entries only their last so many bytes, unless they
 * are at most `wholeUpTo` bytes long (then whole, and named in `caughtWhole`).
 */
export class TarEntryCatcher {
  readonly caught = new Map<string, Buffer>();
  readonly caughtWhole = new Set<string>();
  #fed = 0;
  #nextHeader = 0;
  readonly #header = Buffer.alloc(512);
  #headerFill = 0;
  #capture: { name: string; start: number; end: number; body: Buffer; whole: boolean } | undefined;
  #ended = false;

  constructor(
    readonly wanted: ReadonlySet<string>,
    readonly tails: ReadonlyMap<string, number> = new Map(),
    readonly wholeUpTo = 0,
  ) {}

  feed(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length && !this.#ended) {
      const at = this.#fed + i;
      if (at < this.#nextHeader) {
        const take = Math.min(chunk.length - i, this.#nextHeader - at);
        const capture = this.#capture;
        if (capture && at < capture.end && at + take > capture.start) {
          const from = Math.max(at, capture.start);
          const to = Math.min(at + take, capture.end);
          capture.body.set(chunk.subarray(i + (from - at), i + (to - at)), from - capture.start);
        }
        i += take;
        continue;
      }
      const take = Math.min(512 - this.#headerFill, chunk.length - i);
      this.#header.set(chunk.subarray(i, i + take), this.#headerFill);
      this.#headerFill += take;
      i += take;
      if (this.#headerFill < 512) continue;
      this.#headerFill = 0;
      // A header follows the previous entry's body, so that body has passed whole.
      this.#keepCapture(true);
      if (this.#header.every((b) => b === 0)) {
        this.#ended = true;
        break;
      }
      const bodyStart = this.#fed + i;
      const name = this.#header.toString('latin1', 0, 100).replace(/\0.*$/s, '');
      const prefix = this.#header.toString('latin1', 345, 500).replace(/\0.*$/s, '');
      const size = parseInt(this.#header.toString('latin1', 124, 136).replace(/\0.*$/s, '').trim() || '0', 8);
      if (!Number.isSafeInteger(size) || size < 0) throw new StrataError('IO', `postgres: pg_basebackup's tar has an unreadable entry header at byte ${bodyStart - 512}`);
      this.#nextHeader = bodyStart + Math.ceil(size / 512) * 512;
      const entry = (prefix ? `${prefix}/${name}` : name).replace(/^\.\//, '');
      const tail = this.tails.get(entry);
      if (tail !== undefined) {
        const kept = size <= this.wholeUpTo ? size : Math.min(size, tail);
        this.#capture = { name: entry, start: bodyStart + size - kept, end: bodyStart + size, body: Buffer.alloc(kept), whole: kept === size };
      } else if (this.wanted.has(entry)) {
        if (size > MAX_CAUGHT_ENTRY) throw new StrataError('IO', `postgres: pg_basebackup's ${entry} is ${size} bytes, far more than one ever is`);
        this.#capture = { name: entry, start: bodyStart, end: bodyStart + size, body: Buffer.alloc(size), whole: true };
      }
    }
    this.#fed += chunk.length;
  }

  /** Call once the stream has ended: keeps an entry that ended with it. */
  end(): void {
    this.#keepCapture(this.#capture !== undefined && this.#fed >= this.#capture.end);
  }

  #keepCapture(whole: boolean): void {
    if (this.#capture && whole) {
      this.caught.set(this.#capture.name, this.#capture.body);
      if (this.#capture.whole) this.caughtWhole.add(this.#capture.name);
    }
    this.#capture = undefined;
  }
}

/**
 * The last of the WAL-Ranges of a backup_manifest, read from the manifest's end alone (see
 * MANIFEST_TAIL_BYTES): the list of files before it is never parsed.
 */
export function lastWalRange(manifestEnd: string): { Timeline: number; 'Start-LSN': string; 'End-LSN': string } {
  // The ranges hold numbers and LSN strings only, so the list ends at its first ']'.
  const list = /"WAL-Ranges"\s*:\s*(\[[^\]]*\])/.exec(manifestEnd);
  let ranges: unknown;
  try {
    ranges = list ? JSON.parse(list[1]!) : undefined;
  } catch {
    ranges = undefined;
  }
  const range = Array.isArray(ranges) ? (ranges.at(-1) as Record<string, unknown> | undefined) : undefined;
  if (!range || typeof range['Timeline'] !== 'number' || typeof range['Start-LSN'] !== 'string' || typeof range['End-LSN'] !== 'string') {
    throw new StrataError('IO', 'postgres: the backup_manifest has no readable WAL-Ranges at its end');
  }
  return range as { Timeline: number; 'Start-LSN': string; 'End-LSN': string };
}

/**
 * Whether the server's WAL summaries cover the log from where `parent` started to where the
 * summarizer has got to, without a gap, on the parent's timeline: then `pg_basebackup
 * --incremental` can name every block changed since. Not when summarize_wal is off, was off for
 * a while since (a gap), the summaries were removed (wal_summary_keep_time), or the server
 * switched timelines since (a restore): that incremental is taken whole, by chunk reuse.
 */
async function summariesCover(client: Awaited<ReturnType<typeof connect>>, parent: SnapshotParent): Promise<boolean> {
  const start = parent.logRange?.start as PhysicalPosition | undefined;
  if (!start || typeof start.lsn !== 'string' || typeof start.timeline !== 'number') return false;
  if ((await client.query<{ on: string }>("SELECT current_setting('summarize_wal') AS on")).rows[0]!.on !== 'on') return false;
  const state = (await client.query<{ tli: number; at: string }>("SELECT summarized_tli::int AS tli, (summarized_lsn - '0/0'::pg_lsn)::text AS at FROM pg_get_wal_summarizer_state()")).rows[0];
  if (!state || state.tli !== start.timeline) return false;
  const summaries = (
    await client.query<{ s: string; e: string }>(
      "SELECT (start_lsn - '0/0'::pg_lsn)::text AS s, (end_lsn - '0/0'::pg_lsn)::text AS e FROM pg_available_wal_summaries() WHERE tli = $1 ORDER BY start_lsn",
      [start.timeline],
    )
  ).rows.map((r) => ({ start: BigInt(r.s), end: BigInt(r.e) }));
  let reached = BigInt((await client.query<{ n: string }>("SELECT ($1::pg_lsn - '0/0'::pg_lsn)::text AS n", [start.lsn])).rows[0]!.n);
  const summarized = BigInt(state.at);
  for (const summary of summaries) {
    if (summary.start > reached) break;
    if (summary.end > reached) reached = summary.end;
  }
  return reached >= summarized;
}

/** Extracts one member of a tar file into `dir` (GNU tar) and returns its path. */
async function extractMember(tarFile: string, tarName: string, member: string, dir: string, signal: AbortSignal | undefined): Promise<string> {
  const child = spawn('tar', ['-x', '-f', tarFile, '-C', dir, member], { stdio: ['ignore', 'ignore', 'pipe'], ...(signal ? { signal } : {}) });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT' ? new StrataError('TOOL_MISSING', 'backup: tar is not installed') : err));
    child.on('close', (c) => resolve(c ?? 1));
  });
  throwIfAborted(signal, 'backup');
  // The parent's tar checked out against its manifest: a member missing from it is damage.
  if (/Not found in archive/i.test(stderr)) throw new StrataError('CHAIN_BROKEN', `backup: the parent's ${tarName} holds no ${member}, which every base backup has; take a full backup`);
  if (code !== 0) throw new StrataError('IO', `backup: tar could not take ${member} out of the parent's ${tarName} into ${dir}: ${stderr.trim() || `exit ${code}`}`);
  return path.join(dir, member);
}

/** How long a backup waits for its end segment to show in the log archive (a slow object store's listing). */
const END_ARCHIVED_WAIT_MS = 5_000;

/**
 * Fails a backup whose end segment is not in the log archive it will be restored from. With
 * archive_mode on, pg_basebackup (-X none) returns only after the server archived that segment,
 * so it is there unless archive_command sends the WAL elsewhere: another entry's name in
 * `--db` (two entries for one cluster), another repository. Such a backup can never be restored
 * (verify says the archive lacks its WAL), and recorded it would pass for a restore point.
 */
async function checkEndArchived(archive: NonNullable<SnapshotOptions['logArchive']>, endWal: string, signal: AbortSignal | undefined): Promise<void> {
  const deadline = Date.now() + END_ARCHIVED_WAIT_MS;
  for (;;) {
    if (await archive.has(endWal, signal ? { signal } : {})) return;
    throwIfAborted(signal, 'backup');
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new StrataError(
    'USAGE',
    `backup: the server archived the backup's last WAL segment ${endWal}, and it is not in the WAL archive of ${archive.database} in this repository: the cluster archives its WAL elsewhere, so this backup could never be restored. Check that archive_command runs strata wal-push %p --db ${archive.database} with this repository (two entries for one cluster share one archive_command: back up the entry it names). Nothing was recorded`,
  );
}

/** `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` and friends. */
function labelField(label: string, field: string): string {
  const m = new RegExp(`^${field}: (.*)$`, 'm').exec(label);
  if (!m) throw new StrataError('IO', `postgres: pg_basebackup's backup_label has no ${field} line`);
  return m[1]!.trim();
}

/** A sink made only when its first bytes (or its end) arrive, by `open`, once. */
function openedOnFirstWrite(open: () => Promise<StreamSink>): StreamSink {
  let opened: Promise<StreamSink> | undefined;
  const sink = (): Promise<StreamSink> => (opened ??= open());
  return { kind: 'sink', write: async (chunk) => (await sink()).write(chunk), end: async () => (await sink()).end() };
}

/**
 * A restore target that unpacks a tar into `folder` as its bytes arrive. GNU tar drops leading
 * slashes and refuses members with "..", so an entry cannot leave the folder.
 */
function untarInto(folder: string, name: string): { sink: StreamSink; done: Promise<void>; stop(): void } {
  const child = spawn('tar', ['-x', '-f', '-', '-C', folder, '--no-same-owner'], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', (err) => reject(new StrataError('TOOL_MISSING', `restore: running tar failed: ${err.message}`)));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new StrataError('RESTORE_FAILED', `restore: tar could not unpack ${name} into ${folder}: ${stderr.trim()}`))));
  });
  done.catch(() => undefined);
  const sink: StreamSink = {
    kind: 'sink',
    write: async (chunk) => {
      if (!child.stdin.write(chunk)) await new Promise<void>((resolve, reject) => {
        // Each wait removes what it added: a restore waits thousands of times, and left-over
        // 'error' listeners pile up (MaxListenersExceededWarning).
        const drained = (): void => {
          child.stdin.off('error', failed);
          resolve();
        };
        const failed = (err: Error): void => {
          child.stdin.off('drain', drained);
          reject(err);
        };
        child.stdin.once('drain', drained);
        child.stdin.once('error', failed);
        done.catch(failed);
      });
    },
    end: async () => {
      child.stdin.end();
      await done;
    },
  };
  const stop = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return { sink, done, stop };
}

/**
 * The PostgreSQL program `name` of the server's `major` version, or TOOL_MISSING saying what to
 * install: `newerWorks` for programs that can read an older server's files (pg_basebackup).
 */
export function pgProgramFor(name: string, major: number, why: string, newerWorks: boolean): string {
  const program = pgProgram(name, major);
  const toolMajor = programMajor(program);
  const install = `install PostgreSQL ${major}'s client programs (Debian: postgresql-client-${major}) or set STRATA_PG_BINDIR to their folder`;
  if (toolMajor === undefined) throw new StrataError('TOOL_MISSING', `${why} needs PostgreSQL ${major}'s ${name}, which is not installed; ${install}`);
  if (newerWorks ? toolMajor < major : toolMajor !== major) {
    throw new StrataError('TOOL_MISSING', `${why} needs PostgreSQL ${major}'s ${name}, and the one found (${program}) is PostgreSQL ${toolMajor}'s; ${install}`);
  }
  return program;
}

/** The numbers in the names of a folder's entries, by `pattern`'s first group (none when it cannot be read). */
function listed(folder: string, pattern: RegExp): number[] {
  try {
    return readdirSync(folder).flatMap((name) => {
      const m = pattern.exec(name);
      return m ? [Number(m[1])] : [];
    });
  } catch {
    return [];
  }
}

/** The first PostgreSQL release with block-level incrementals, and so with pg_combinebackup. */
const FIRST_COMBINING_MAJOR = 17;

/**
 * Refuses, before anything is read, a chain with a block-level incremental when no
 * pg_combinebackup of PostgreSQL 17 or later is to be found: the artifact names the server's
 * version only at its end, so the exact version is checked at commit, and without this a restore
 * of a large cluster downloaded everything before it said the program was missing.
 */
function checkCombineAvailable(chain: readonly { readonly id: string; readonly incrementalMethod?: string }[]): void {
  // A link taken whole (a full, or by chunk reuse) holds all of base.tar: the layers under it are not read.
  const whole = chain.map((link) => link.incrementalMethod !== BLOCK_LEVEL).lastIndexOf(true);
  const blockLevel = chain.slice(Math.max(whole, 0)).find((link) => link.incrementalMethod === BLOCK_LEVEL);
  if (!blockLevel) return;
  // The majors installed where pgProgram looks (Debian's and the PGDG RPMs' folders).
  const majors = [...listed('/usr/lib/postgresql', /^(\d+)$/), ...listed('/usr', /^pgsql-(\d+)$/)].filter((major) => major >= FIRST_COMBINING_MAJOR);
  const candidates = [pgProgram('pg_combinebackup'), ...majors.map((major) => pgProgram('pg_combinebackup', major))];
  if (candidates.some((program) => (programMajor(program) ?? 0) >= FIRST_COMBINING_MAJOR)) return;
  throw new StrataError(
    'TOOL_MISSING',
    `restore: ${blockLevel.id} is a block-level incremental, which needs pg_combinebackup (PostgreSQL ${FIRST_COMBINING_MAJOR} or later, the server's version) and none is installed; install the client programs of the server's PostgreSQL version (Debian: postgresql-client-<version>, e.g. postgresql-client-17) or set STRATA_PG_BINDIR to their folder`,
  );
}

/**
 * pg_combinebackup: the full's data directory and each incremental layer above it, oldest first,
 * into `output`, a whole data directory again (PostgreSQL 17 and later).
 */
async function combineLayers(program: string, folders: readonly string[], output: string, tablespaces: ReadonlyMap<string, string>, signal: AbortSignal | undefined): Promise<void> {
  // -T OLD=NEW: where each tablespace of the newest layer (the folder its pg_tblspc link names) is
  // written; pg_combinebackup reads a backslash before "=" as a literal "=".
  const mapping = [...tablespaces].flatMap(([from, to]) => ['-T', `${from.replaceAll('=', '\\=')}=${to.replaceAll('=', '\\=')}`]);
  const child = spawn(program, ['-o', output, ...mapping, ...folders], { stdio: ['ignore', 'ignore', 'pipe'], ...(signal ? { signal } : {}) });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? 1));
  });
  throwIfAborted(signal, 'restore');
  if (code !== 0) throw new StrataError('RESTORE_FAILED', `restore: pg_combinebackup could not combine the base backup with its ${folders.length - 1} incremental layer(s) (exit ${code}): ${stderr.trim() || 'no message'}`);
}

export class PostgresPhysicalEngine implements Engine {
  readonly kind = 'postgres-physical';
  readonly capabilities: EngineCapabilities = { incrementals: true, tableRestore: false };
  readonly handRecovery = HAND_RECOVERY;
  readonly logArchive = PG_LOG_ARCHIVE_RULES;
  /** The data directories of verify's scratch copies (createScratch), whose tablespaces go beside them. */
  readonly #scratches = new Set<string>();
  readonly display: EngineDisplay = {
    name: 'PostgreSQL cluster (physical)',
    locator: 'url',
    schemes: [...PHYSICAL_SCHEMES],
    example: 'postgres+physical://postgres@host:5432/postgres',
    fileExtensions: [],
    passwordSources: 'PGPASSWORD or ~/.pgpass',
  };

  accepts(locator: string): boolean {
    return /^postgres(ql)?\+physical:\/\//i.test(locator);
  }

  describe(locator: string): string {
    try {
      return physicalLocator(parseTarget(clusterUrl(locator)).safe);
    } catch {
      return 'postgres+physical://(unparseable URL)';
    }
  }

  async snapshot(locator: string, options: SnapshotOptions): Promise<Snapshot> {
    if (options.schemaOnly) throw new StrataError('USAGE', 'backup: a physical backup copies the whole cluster; it has no schema-only form (use a logical entry for that)');
    const target = parseTarget(clusterUrl(locator));
    const client = await connect(target, 'strata physical backup');
    let serverVersion: number;
    let systemIdentifier: string;
    let walSegmentBytes: number;
    let blockLevelOn: SnapshotParent | undefined;
    let clusterBytes = 0;
    let tablespaces: Tablespace[] = [];
    // Whether the server's archive_command archives the WAL: then pg_basebackup returns only once
    // it archived the backup's end segment (finish() checks that it reached this entry's archive).
    let archiving = false;
    try {
      const settings = (await client.query<{ name: string; setting: string }>("SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode', 'archive_command', 'archive_library', 'server_version_num', 'wal_segment_size')")).rows;
      const setting = (name: string): string => settings.find((s) => s.name === name)?.setting ?? '';
      // Without archive_mode, the WAL reaches the archive only through a running wal-receive (its
      // pg_receivewal names itself so); pg_basebackup then does not wait for archiving either.
      const streamed =
        setting('archive_mode') === 'off' &&
        (await client.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name LIKE 'strata wal-receive %' AND state = 'streaming'")).rows[0]!.n > 0;
      // A standby archives itself only with archive_mode = always (with on, its primary does, and
      // pg_basebackup does not wait for that).
      archiving = setting('archive_mode') === 'always' || (setting('archive_mode') === 'on' && !(await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r);
      // An empty archive_command (and no archive_library) with archive_mode on archives nothing and
      // fails nothing: the server would wait for ever at the backup's end. A role that may not see
      // the setting gets no row, and the archive wait's watch is what speaks for it then.
      const visible = (name: string): boolean => settings.some((s) => s.name === name);
      if (archiving && visible('archive_command') && setting('archive_command') === '' && setting('archive_library') === '') {
        throw new StrataError(
          'USAGE',
          `backup: ${target.safe} has archive_mode = ${setting('archive_mode')} and an empty archive_command, so it archives no WAL and a base backup would wait for ever for its last segment: set archive_command = 'strata wal-push %p --db NAME' in postgresql.conf and reload the server (SELECT pg_reload_conf()); nothing was recorded`,
        );
      }
      if (setting('archive_mode') === 'off' && !streamed) {
        throw new StrataError(
          'USAGE',
          `backup: ${target.safe} does not archive its write-ahead log (archive_mode is off), and a physical backup cannot be restored without it: set archive_mode = on and archive_command = 'strata wal-push %p --db NAME' in postgresql.conf and restart the server, or keep strata wal-receive NAME running`,
        );
      }
      // pg_basebackup writes a tar of each tablespace outside the data directory beside base.tar;
      // such a backup is staged (see #stagedStreams) and each tar kept as a stream of its own.
      tablespaces = (
        await client.query<Tablespace>(
          "SELECT oid::text AS oid, spcname AS name, pg_tablespace_location(oid) AS location FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') AND pg_tablespace_location(oid) LIKE '/%' ORDER BY oid",
        )
      ).rows;
      const unreadable = tablespaces.find((t) => !plainLocation(t.location));
      if (unreadable) {
        throw new StrataError('USAGE', `backup: tablespace ${unreadable.name} is at ${JSON.stringify(unreadable.location)}, whose name has a backslash or a line end, which PostgreSQL's tablespace_map does not carry the same way in every version; move it to a folder without them (ALTER TABLE ... SET TABLESPACE into a new tablespace), or back it up with a logical entry`);
      }
      serverVersion = Number(setting('server_version_num'));
      walSegmentBytes = Number(setting('wal_segment_size'));
      systemIdentifier = String((await client.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()')).rows[0]!.id);
      // The summary functions are the superuser's unless granted (README): a role that may not
      // read them gets chunk reuse, as on a server without summaries.
      // The cluster's size, where the role may see it: for list when a block-level incremental's
      // tar holds only the changes, and for the storage to size its upload from before the tar is read.
      clusterBytes = await client
        .query<{ n: string }>('SELECT sum(pg_database_size(oid))::text AS n FROM pg_database WHERE has_database_privilege(oid, \'CONNECT\')')
        .then((r) => Number(r.rows[0]!.n ?? 0))
        .catch(() => 0);
      if (options.parent && serverVersion >= 170000 && (await summariesCover(client, options.parent).catch(() => false))) {
        blockLevelOn = options.parent;
      }
    } finally {
      await client.end().catch(() => undefined);
    }
    // pg_basebackup's tar streams straight into the artifact (a copy staged on disk first doubled
    // the disk traffic and let nothing overlap); the facts it holds at its start (backup_label) and
    // end (backup_manifest) are caught as they pass and reach the manifest through finish().
    const tar = new TarEntryCatcher(new Set(['backup_label']), new Map([['backup_manifest', MANIFEST_TAIL_BYTES]]), CARRIED_MANIFEST_BYTES);
    const run = { opened: false, bytes: 0, endedAt: undefined as string | undefined, stop: undefined as (() => void) | undefined, archiveTimeoutMs: archiving ? archiveTimeoutMs() : undefined };
    const fingerprint = clusterFingerprint(systemIdentifier);
    const known = { method: 'physical', serverVersion, systemIdentifier, walSegmentBytes };
    /** Why the server would not take this incremental block-level, when it refused (kept in the manifest). */
    let refusal: { blockLevelRefused: string } | undefined;
    const chunking = { kind: 'content-defined', averageSize: AVERAGE_CHUNK } as const;
    // A block-level incremental hands pg_basebackup the parent's backup_manifest, read back from
    // the repository into a private folder removed at close().
    let work: string | undefined;
    let streams: SnapshotStream[] = [];
    // This backup's layer above the whole base backup under it (0: it is one), and its tar's name.
    let depth = 0;
    let ownStream = BASE_STREAM;
    const pgBasebackupArgs: string[] = [];
    // A block-level base backup already under way (see below): what it sent first, and the rest.
    let started: { first: Uint8Array | undefined; rest: AsyncGenerator<Uint8Array> } | undefined;
    // A cluster with tablespaces: its backup staged in the private folder (see #stagedStreams).
    let staged: StagedBackup | undefined;
    if (blockLevelOn) {
      const parent = blockLevelOn;
      work = mkdtempSync(path.join(options.tempDir, 'pg-incremental-'));
      try {
        const layers = layersOf(parent.streams);
        const newest = layers.at(-1)!;
        // The parent's backup_manifest as it handed it forward (carryForward below), a small file;
        // else out of the parent's newest tar, read back whole (for a full: decrypting the whole
        // artifact, and the cluster's size in plaintext in the private folder for that long).
        const carried = await parent.carried?.(options);
        let manifest: string;
        let parentStreams: readonly { name: string; size: number; sha256: string }[];
        if (carried) {
          manifest = path.join(work, 'backup_manifest');
          await fs.writeFile(manifest, carried.bytes, { mode: 0o600, flag: 'wx' });
          parentStreams = carried.streams;
        } else {
          const read = await parent.read([newest], work, options);
          const tarFile = read.files.get(newest);
          if (!tarFile) throw new StrataError('CHAIN_BROKEN', `backup: ${parent.id} holds no ${newest}, which its layout names`);
          manifest = await extractMember(tarFile, newest, 'backup_manifest', work, options.signal);
          await fs.rm(tarFile, { force: true });
          parentStreams = read.streams;
        }
        pgBasebackupArgs.push(`--incremental=${manifest}`);
        // The parent's tars, its layers' and their tablespaces', listed as they are (none stored again).
        streams = physicalStreams(parent.streams).map((name) => {
          const stored = parentStreams.find((st) => st.name === name);
          if (!stored) throw new StrataError('CHAIN_BROKEN', `backup: ${parent.id} lists no stream ${name}, which its layout names`);
          return {
            name,
            chunking,
            inherited: { size: stored.size, sha256: stored.sha256 },
            open: () => {
              throw new StrataError('INTERNAL', `backup: ${name} is the parent's and is not read again`);
            },
          };
        });
        depth = layers.length;
        ownStream = layerName(depth);
      } catch (err) {
        await fs.rm(work, { recursive: true, force: true });
        throw err;
      }
      // The server decides at the start whether it can send only the changed blocks, and may
      // refuse what summariesCover allowed (summaries removed or summarize_wal turned off since, or
      // not reaching the new backup's start in time). Started here, so that a refusal makes this a
      // whole base backup by chunk reuse, as when the summaries are seen missing, rather than a
      // failed backup each time until someone notices.
      try {
        if (tablespaces.length > 0) {
          staged = this.#stagedStreams(target, serverVersion, options, tar, run, tablespaces, chunking, { depth, extraArgs: pgBasebackupArgs });
          await staged.stage(options.signal);
        } else {
          const attempt = this.#streamBaseBackup(target, serverVersion, options.signal, tar, run, pgBasebackupArgs);
          const first = await attempt.next();
          started = { first: first.done ? undefined : first.value, rest: attempt };
        }
      } catch (err) {
        // A staged backup reads nothing until it has ended, so run.bytes cannot tell a refusal at
        // the start from a failure late in it (a full disk as backup_manifest is written): only
        // pg_basebackup's words for a backup that never began can.
        const whileStaging = staged !== undefined;
        await staged?.remove();
        staged = undefined;
        const said = err instanceof StrataError && err.code === 'IO' ? /^backup: pg_basebackup failed \(exit \d+\): ([^]*)$/.exec(err.message)?.[1] : undefined;
        if (said === undefined || run.bytes > 0 || !BLOCK_LEVEL_REFUSED.test(said) || (whileStaging && !NOT_BEGUN.test(said))) {
          await fs.rm(work, { recursive: true, force: true });
          throw err;
        }
        refusal = { blockLevelRefused: said.trim() };
        blockLevelOn = undefined;
        streams = [];
        depth = 0;
        ownStream = BASE_STREAM;
        pgBasebackupArgs.length = 0;
        await fs.rm(work, { recursive: true, force: true });
        work = undefined;
      }
    }
    if (tablespaces.length > 0) {
      staged ??= this.#stagedStreams(target, serverVersion, options, tar, run, tablespaces, chunking, { depth: 0, extraArgs: [] });
      streams.push(...staged.streams);
    } else streams.push({
      name: ownStream,
      chunking,
      open: (opts: Abortable = {}) => {
        // pg_basebackup cannot replay its stream, and a second base backup would be another moment.
        if (run.opened) throw new StrataError('INTERNAL', 'backup: the base backup stream was opened twice');
        run.opened = true;
        if (started) return resumed(started);
        return this.#streamBaseBackup(target, serverVersion, opts.signal ?? options.signal, tar, run, pgBasebackupArgs);
      },
    });
    return {
      schemaFingerprint: fingerprint,
      tableStats: async () => [],
      streams,
      schemaSql: '',
      databaseBytes: 0,
      ...(clusterBytes > 0 ? { sizeHint: clusterBytes } : {}),
      engineMeta: { ...known, ...refusal, ...(tablespaces.length > 0 ? { tablespaces } : {}) },
      // PostgreSQL 17 and later send only the blocks changed since the parent when their WAL
      // summaries reach back to its start (summarize_wal = on); otherwise, and on older servers,
      // the incremental is a whole base backup that stores only the chunks its parent lacks.
      incrementalMethod: blockLevelOn ? BLOCK_LEVEL : refusal ? CHUNK_REUSE_REFUSED : CHUNK_REUSE,
      finish: async () => {
        if (run.endedAt === undefined) throw new StrataError('INTERNAL', 'backup: the base backup was not read to its end');
        const labelBytes = tar.caught.get('backup_label');
        const manifestBytes = tar.caught.get('backup_manifest');
        if (!labelBytes || !manifestBytes) throw new StrataError('IO', 'postgres: pg_basebackup wrote no backup_label or backup_manifest (is the server older than PostgreSQL 13?)');
        const label = labelBytes.toString('utf8');
        const range = lastWalRange(manifestBytes.toString('utf8'));
        const start = /^(\S+) \(file ([0-9A-F]{24})\)$/.exec(labelField(label, 'START WAL LOCATION'));
        if (!start) throw new StrataError('IO', "postgres: pg_basebackup's backup_label has an unexpected START WAL LOCATION");
        const timeline = Number(labelField(label, 'START TIMELINE'));
        const endWal = walFileName(range.Timeline, segmentOf(range['End-LSN'], walSegmentBytes), walSegmentBytes);
        if (archiving && options.logArchive) await checkEndArchived(options.logArchive, endWal, options.signal);
        const meta: PhysicalMeta = { ...known, method: 'physical', timeline, startLsn: start[1]!, endLsn: range['End-LSN'], startWal: start[2]!, endWal, backupLabel: label };
        const logRange: LogRange = {
          start: { timeline, lsn: meta.startLsn, wal: meta.startWal, segmentBytes: walSegmentBytes } satisfies PhysicalPosition,
          end: { timeline: range.Timeline, lsn: meta.endLsn, wal: endWal, segmentBytes: walSegmentBytes } satisfies PhysicalPosition,
          endedAt: run.endedAt,
        };
        return { engineMeta: { ...meta, ...refusal, ...(tablespaces.length > 0 ? { tablespaces } : {}) }, logRange, databaseBytes: blockLevelOn ? clusterBytes : run.bytes };
      },
      // The next block-level incremental needs this backup's whole backup_manifest; only servers
      // that take those (17 and later) hand it forward.
      carryForward: () => (serverVersion >= 170000 && tar.caughtWhole.has('backup_manifest') ? tar.caught.get('backup_manifest') : undefined),
      close: async () => {
        run.stop?.();
        if (work) await fs.rm(work, { recursive: true, force: true });
        await staged?.remove();
      },
    };
  }

  /**
   * pg_basebackup -Ft -X none (the WAL left to the archive) into `destination` (`-D -`: one tar on
   * stdout, with backup_manifest), and what waits for its end: that fails if pg_basebackup did.
   */
  #startBaseBackup(
    target: PgTarget,
    serverVersion: number,
    signal: AbortSignal | undefined,
    run: { stop: (() => void) | undefined; readonly archiveTimeoutMs: number | undefined },
    destination: readonly string[],
    extraArgs: readonly string[],
  ): { stdout: AsyncIterable<Buffer>; finished(): Promise<void> } {
    const major = Math.floor(serverVersion / 10000);
    // A newer pg_basebackup copies an older server; an older one cannot.
    const program = pgProgramFor('pg_basebackup', major, `backup: ${target.safe} runs PostgreSQL ${major} and`, true);
    // Its own name, so that the archive watch below finds its progress among the server's sessions.
    const applicationName = `strata backup ${randomBytes(6).toString('hex')}`;
    const child = spawn(program, ['--no-password', '-Ft', ...destination, '-X', 'none', '--checkpoint=fast', '--label=strata', ...extraArgs], {
      env: { ...libpqEnv(target), PGAPPNAME: applicationName },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(signal ? { signal } : {}),
    });
    // A backup that stops reading (an error downstream, an abort) must not leave pg_basebackup
    // holding the server's backup mode.
    run.stop = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    };
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const exited = new Promise<number>((resolve, reject) => {
      child.on('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'ENOENT' ? new StrataError('TOOL_MISSING', "backup: pg_basebackup is not installed; install the PostgreSQL client of the server's major version (Debian: postgresql-client)") : err),
      );
      child.on('close', (code) => resolve(code ?? 1));
    });
    // Observed below; without this, a failure to start would also surface as an unhandled rejection.
    exited.catch(() => undefined);
    // With archiving on, the server ends a base backup only once it archived the last segment,
    // and waits for ever for that: a failing archive_command must end the backup with a reason.
    const archiveWait = run.archiveTimeoutMs !== undefined ? watchArchiveWait(target, applicationName, run.archiveTimeoutMs, () => run.stop?.()) : undefined;
    const endWatch = (): Promise<void> | undefined => archiveWait?.stop();
    exited.then(endWatch, endWatch);
    return {
      stdout: child.stdout,
      finished: async () => {
        const code = await exited;
        if (archiveWait?.failure) throw archiveWait.failure;
        throwIfAborted(signal, 'backup');
        if (code !== 0) {
          const message = (target.password ? stderr.split(target.password).join('***') : stderr).trim();
          throw new StrataError('IO', `backup: pg_basebackup failed (exit ${code}): ${message || 'no message'}`);
        }
      },
    };
  }

  /** pg_basebackup's one tar on stdout, its bytes as they come; fails, after the last one, if pg_basebackup did. */
  async *#streamBaseBackup(
    target: PgTarget,
    serverVersion: number,
    signal: AbortSignal | undefined,
    tar: TarEntryCatcher,
    run: { bytes: number; endedAt: string | undefined; stop: (() => void) | undefined; readonly archiveTimeoutMs: number | undefined },
    extraArgs: readonly string[],
  ): AsyncGenerator<Uint8Array> {
    const started = this.#startBaseBackup(target, serverVersion, signal, run, ['-D', '-'], extraArgs);
    try {
      for await (const piece of started.stdout) {
        tar.feed(piece);
        run.bytes += piece.length;
        yield piece;
      }
      await started.finished();
      tar.end();
      run.endedAt = new Date().toISOString();
    } finally {
      run.stop?.();
    }
  }

  /**
   * The streams of a cluster with tablespaces. pg_basebackup writes one tar per tablespace only
   * into a folder (`-D -` takes one), so the backup is staged in the private temporary folder when
   * the first stream is opened (or `stage` is called), and each tar read from there: base.tar, with
   * backup_manifest added as its last member as `-D -` would have put it, then
   * `tablespace-<oid>.tar` for each. A block-level layer at `depth` names them
   * `incremental.<depth>.tar` and `incremental.<depth>.tablespace-<oid>.tar`.
   */
  #stagedStreams(
    target: PgTarget,
    serverVersion: number,
    options: SnapshotOptions,
    tar: TarEntryCatcher,
    run: { bytes: number; endedAt: string | undefined; stop: (() => void) | undefined; readonly archiveTimeoutMs: number | undefined },
    tablespaces: readonly Tablespace[],
    chunking: SnapshotStream['chunking'],
    layer: { readonly depth: number; readonly extraArgs: readonly string[] },
  ): StagedBackup {
    let folder: string | undefined;
    let staging: Promise<string> | undefined;
    const stage = (signal: AbortSignal | undefined): Promise<string> =>
      (staging ??= (async () => {
        folder = mkdtempSync(path.join(options.tempDir, 'pg-tablespaces-'));
        const started = this.#startBaseBackup(target, serverVersion, signal, run, ['-D', folder, '--no-sync'], layer.extraArgs);
        for await (const piece of started.stdout) void piece;
        await started.finished();
        const made = readdirSync(folder).sort();
        const expected = ['backup_manifest', BASE_STREAM, ...tablespaces.map((t) => `${t.oid}.tar`)].sort();
        if (made.join('\n') !== expected.join('\n')) {
          throw new StrataError('IO', `backup: the cluster's tablespaces changed while the backup ran (pg_basebackup wrote ${made.join(', ')} where ${expected.join(', ')} were expected); run the backup again`);
        }
        run.endedAt = new Date().toISOString();
        return folder;
      })());
    const read = async function* (file: string): AsyncGenerator<Buffer> {
      for await (const piece of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
        run.bytes += (piece as Buffer).length;
        yield piece as Buffer;
      }
    };
    const base: SnapshotStream = {
      name: layer.depth === 0 ? BASE_STREAM : layerName(layer.depth),
      chunking,
      open: (opts: Abortable = {}) =>
        (async function* () {
          const dir = await stage(opts.signal ?? options.signal);
          const file = path.join(dir, BASE_STREAM);
          const size = (await fs.stat(file)).size;
          const end = Buffer.alloc(TAR_END_BYTES);
          const handle = await fs.open(file, 'r');
          try {
            await handle.read(end, 0, TAR_END_BYTES, size - TAR_END_BYTES);
          } finally {
            await handle.close();
          }
          if (size < 2 * TAR_END_BYTES || end.some((b) => b !== 0)) throw new StrataError('IO', `backup: pg_basebackup's base.tar (${size} bytes) does not end as a tar does`);
          for await (const piece of createReadStream(file, { start: 0, end: size - TAR_END_BYTES - 1, highWaterMark: 1024 * 1024 })) {
            tar.feed(piece as Buffer);
            run.bytes += (piece as Buffer).length;
            yield piece as Buffer;
          }
          const manifest = await fs.readFile(path.join(dir, 'backup_manifest'));
          for (const piece of [...tarMember('backup_manifest', manifest), end]) {
            tar.feed(piece);
            run.bytes += piece.length;
            yield piece;
          }
          tar.end();
        })(),
    };
    const spaces = tablespaces.map(
      (t): SnapshotStream => ({
        name: tablespaceStreamAt(layer.depth, t.oid),
        chunking,
        open: (opts: Abortable = {}) =>
          (async function* () {
            yield* read(path.join(await stage(opts.signal ?? options.signal), `${t.oid}.tar`));
          })(),
      }),
    );
    return {
      streams: [base, ...spaces],
      stage: async (signal) => {
        await stage(signal);
      },
      remove: async () => {
        run.stop?.();
        await staging?.catch(() => undefined);
        if (folder) await fs.rm(folder, { recursive: true, force: true });
      },
    };
  }

  async beginRestore(locator: string, options: EngineRestoreOptions): Promise<RestoreSession> {
    if (options.tables) throw new StrataError('USAGE', 'restore: a physical backup restores a whole cluster; single tables are not available from it yet');
    checkCombineAvailable(options.chain ?? []);
    const dir = path.resolve(locator);
    if (await this.targetExists(dir)) {
      if (!options.force) throw new StrataError('TARGET_EXISTS', `restore: ${dir} exists and is not empty; give an empty or new folder (or --force to replace it)`);
      const server = await serverRunningOn(dir);
      if (server !== undefined) {
        throw new StrataError(
          'DATABASE_LOCKED',
          `restore: a PostgreSQL server is running on ${dir} (pid ${server}, in its postmaster.pid): replacing the files under it would destroy that cluster, with the WAL it has not archived yet; stop it first (pg_ctl -D ${dir} stop), then restore; nothing was changed`,
        );
      }
    }
    await fs.mkdir(path.dirname(dir), { recursive: true });
    // The unpacked files are the cluster's, decrypted: a killed restore's are removed by the next
    // restore into this folder (the side folder's name says whose it is; see sweepSideFolders).
    await sweepSideFolders(path.dirname(dir), 'restore');
    const partial = await makeSideFolder(dir, 'partial');
    // base.tar unpacks into the new data directory; the layers of a block-level incremental each
    // into a folder of their own beside it, for pg_combinebackup at commit.
    const unpacked = new Map<string, { folder: string; done: Promise<void>; stop(): void }>();
    // A block-level chain's tablespaces are unpacked beside their layers (pg_combinebackup reads
    // them there and writes the result where they go); a whole base backup's straight where they go.
    const layered = options.chain?.at(-1)?.incrementalMethod === BLOCK_LEVEL;
    // The newest layer's tar, whose tablespace_map says where the tablespaces go: its depth is the
    // number of block-level links above the chain's last whole base backup.
    const newestLayer = layered ? layerName((options.chain ?? []).length - 1 - (options.chain ?? []).map((link) => link.incrementalMethod === BLOCK_LEVEL).lastIndexOf(false)) : undefined;
    /** Each layer's unpacked tablespaces: the layer's tar → OID → folder. */
    const layerTablespaces = new Map<string, Map<string, string>>();
    const scratch: string[] = [partial];
    // Verify's scratch copies put the tablespaces beside themselves, never where the primary has them.
    const relocate = options.relocate ?? (this.#scratches.has(dir) ? { under: scratchTablespaces(dir) } : undefined);
    const baseTar = { ended: false, placed: undefined as Map<string, TablespacePlacement> | undefined };
    // Where each tablespace's tar is unpacked (OID → a folder inside the one it goes to: the same
    // file system, an empty mount point included, and the folder's owner and mode kept).
    const tablespaceFolders = new Map<string, string>();
    // Tablespace folders this restore made, removed if it does not complete.
    const madeFolders: string[] = [];
    let committed = false;
    /**
     * Where the tablespaces go, decided once from base.tar's tablespace_map, as soon as base.tar is
     * unpacked (a tablespace's stream comes after it): a folder in the way is refused then.
     */
    const placement = async (mapOf = partial): Promise<Map<string, TablespacePlacement>> => {
      if (baseTar.placed) return baseTar.placed;
      if (!baseTar.ended) throw new StrataError('ARTIFACT_FOREIGN', `restore: a tablespace's tar comes before ${BASE_STREAM} in this backup, which Strata never writes`);
      const recorded = await readTablespaceMap(mapOf);
      // A killed restore's unpacking folder inside a tablespace's folder (decrypted files, see
      // tablespaceUnpackFolder) would make that folder look taken: removed first, as beside the data directory.
      for (const to of tablespaceDestinations(recorded, relocate)) await sweepSideFolders(to, 'restore');
      baseTar.placed = placeTablespaces(recorded, relocate, dir, options.force);
      return baseTar.placed;
    };
    /** A tablespace's tar of a block-level chain: unpacked into a folder beside its layer's. */
    const layerTablespaceSink = (name: string, layer: string, oid: string): StreamSink => {
      const folder = path.join(`${layer === BASE_STREAM ? partial : `${partial}.${layer}`}.tablespaces`, oid);
      scratch.push(path.dirname(folder));
      return openedOnFirstWrite(async () => {
        await fs.mkdir(folder, { recursive: true, mode: 0o700 });
        const spaces = layerTablespaces.get(layer) ?? new Map<string, string>();
        spaces.set(oid, folder);
        layerTablespaces.set(layer, spaces);
        const untar = untarInto(folder, name);
        unpacked.set(name, { folder, done: untar.done, stop: untar.stop });
        return untar.sink;
      });
    };
    /** A tablespace's tar: unpacked into a private folder inside the one it goes to, once where that is is known. */
    const tablespaceSink = (name: string, oid: string): StreamSink =>
      openedOnFirstWrite(async () => {
        const place = (await placement()).get(oid);
        if (!place) throw new StrataError('ARTIFACT_CORRUPT', `restore: the backup holds ${name}, and its tablespace_map names no tablespace ${oid}`);
        const made = await fs.mkdir(place.to, { recursive: true, mode: 0o700 });
        if (made) madeFolders.push(made);
        const folder = await makeSideFolder(tablespaceUnpackFolder(place.to), 'partial');
        scratch.push(folder);
        tablespaceFolders.set(oid, folder);
        const untar = untarInto(folder, name);
        unpacked.set(name, { folder, done: untar.done, stop: untar.stop });
        return untar.sink;
      });
    const abort = async (): Promise<void> => {
      // A restore that fails before a stream's end (a damaged artifact further down the chain)
      // leaves its tar waiting for more: without this the process never exits. Once it has gone
      // it writes nothing more into the folders removed next.
      for (const { stop, done } of unpacked.values()) {
        stop();
        await done.catch(() => undefined);
      }
      for (const folder of scratch) await fs.rm(folder, { recursive: true, force: true });
      if (!committed) for (const folder of madeFolders) await fs.rm(folder, { recursive: true, force: true });
    };
    return {
      streamTarget: async (name) => {
        const tablespace = tablespaceLayer(name);
        if (tablespace && layered) return layerTablespaceSink(name, tablespace.layer, tablespace.oid);
        if (tablespace) {
          if (tablespace.layer !== BASE_STREAM) throw new StrataError('ARTIFACT_CORRUPT', `restore: the backup holds ${name}, a block-level layer's tablespace, and the catalog does not list it as block-level`);
          return tablespaceSink(name, tablespace.oid);
        }
        let folder = partial;
        if (name !== BASE_STREAM) {
          if (!LAYER.test(name)) throw new StrataError('ARTIFACT_FOREIGN', `restore: a physical backup holds ${BASE_STREAM} and its incremental layers, not ${JSON.stringify(name)}`);
          folder = `${partial}.${name}`;
          scratch.push(folder);
          await fs.mkdir(folder, { mode: 0o700 });
        }
        const { sink, done, stop } = untarInto(folder, name);
        unpacked.set(name, { folder, done, stop });
        if (name === newestLayer) {
          // A tablespace folder in the way is refused now, before the newest layer's tablespaces
          // are read and anything is combined.
          return {
            ...sink,
            end: async () => {
              await sink.end();
              await placement(folder);
            },
          };
        }
        if (name !== BASE_STREAM) return sink;
        return {
          ...sink,
          end: async () => {
            await sink.end();
            baseTar.ended = true;
            // A block-level chain's newest layer says where its tablespaces go, once its own tar is read (above).
            if (!layered) await placement();
          },
        };
      },
      commit: async (info) => {
        const base = unpacked.get(BASE_STREAM);
        if (!base) throw new StrataError('ARTIFACT_CORRUPT', `restore: the backup held no ${BASE_STREAM}`);
        for (const { done } of unpacked.values()) await done;
        let restored = partial;
        const layers = layersOf([...unpacked.keys()]).slice(1);
        if (layers.length > 0) {
          // Told by the catalog (options.chain): a whole base backup's tablespaces went straight into place, not beside their layer.
          if (!layered) throw new StrataError('INTERNAL', `restore: the backup holds block-level layers (${layers.join(', ')}) and the restore was not told it is block-level`);
          restored = sideFolderPath(dir, 'combined');
          scratch.push(restored);
          // Checked only now: the server's version is in the manifest, the artifact's last entry.
          const combine = pgProgramFor('pg_combinebackup', Math.floor(Number(info.engineMeta['serverVersion']) / 10000), 'restore: this block-level incremental', false);
          const folders = [partial, ...layers.map((name) => unpacked.get(name)!.folder)];
          // pg_combinebackup finds each layer's tablespaces through the links in its pg_tblspc (a
          // tar holds tablespace_map instead), and writes the newest layer's where -T says: into
          // a private folder inside the one each goes to, moved into place below.
          for (const [i, layer] of [BASE_STREAM, ...layers].entries()) {
            const wanted = await readTablespaceMap(folders[i]!);
            const spaces = layerTablespaces.get(layer) ?? new Map<string, string>();
            const lacking = [...wanted.keys()].find((oid) => !spaces.has(oid)) ?? [...spaces.keys()].find((oid) => !wanted.has(oid));
            if (lacking !== undefined) throw new StrataError('ARTIFACT_CORRUPT', `restore: ${layer}'s tablespace_map names tablespaces ${[...wanted.keys()].join(', ') || 'none'}, and the backup holds that layer's ${[...spaces.keys()].join(', ') || 'none'}: it is incomplete`);
            if (spaces.size > 0) await fs.mkdir(path.join(folders[i]!, 'pg_tblspc'), { recursive: true, mode: 0o700 });
            for (const [oid, folder] of spaces) await fs.symlink(folder, path.join(folders[i]!, 'pg_tblspc', oid));
          }
          const newest = layerTablespaces.get(layers.at(-1)!) ?? new Map<string, string>();
          const targets = new Map<string, string>();
          for (const [oid, place] of await placement(folders.at(-1))) {
            const made = await fs.mkdir(place.to, { recursive: true, mode: 0o700 });
            if (made) madeFolders.push(made);
            const folder = sideFolderPath(tablespaceUnpackFolder(place.to), 'partial');
            scratch.push(folder);
            tablespaceFolders.set(oid, folder);
            targets.set(newest.get(oid)!, folder);
          }
          await combineLayers(combine, folders, restored, targets, options.signal);
          // The recovering server makes the links from tablespace_map, written below.
          for (const oid of tablespaceFolders.keys()) await fs.rm(path.join(restored, 'pg_tblspc', oid), { force: true });
        }
        if (!existsSync(path.join(restored, 'PG_VERSION'))) throw new StrataError('ARTIFACT_CORRUPT', 'restore: the base backup holds no PG_VERSION: it is not a PostgreSQL data directory');
        // pg_basebackup leaves these out; the server wants them to exist.
        for (const sub of ['pg_wal', 'pg_wal/archive_status']) await fs.mkdir(path.join(restored, sub), { recursive: true, mode: 0o700 });
        const placed = baseTar.ended ? await placement() : new Map<string, TablespacePlacement>();
        for (const oid of placed.keys()) {
          if (!tablespaceFolders.has(oid)) throw new StrataError('ARTIFACT_CORRUPT', `restore: base.tar's tablespace_map names tablespace ${oid}, and the backup holds no ${tablespaceStream(oid)}: it is incomplete`);
        }
        const recorded = (info.engineMeta['tablespaces'] as readonly Tablespace[] | undefined) ?? [];
        if (recorded.map((t) => t.oid).sort().join() !== [...placed.keys()].sort().join()) {
          throw new StrataError('ARTIFACT_CORRUPT', `restore: base.tar's tablespace_map names tablespaces ${[...placed.keys()].join(', ') || 'none'}, and the backup's manifest ${recorded.map((t) => t.oid).join(', ') || 'none'}`);
        }
        // The recovering server links each tablespace from tablespace_map: it names the new folders.
        if (placed.size > 0) await fs.writeFile(path.join(restored, 'tablespace_map'), formatTablespaceMap(new Map([...placed].map(([oid, p]) => [oid, p.to]))), { mode: 0o600 });
        const moved: string[] = [];
        try {
          for (const [oid, place] of placed) {
            const folder = tablespaceFolders.get(oid)!;
            // Looked at again: the folder was free when base.tar was read, which may be long ago.
            const there = entriesOf(place.to, [path.basename(folder)]);
            if (there.length > 0) {
              if (!place.replace) throw occupiedError(oid, recorded.find((t) => t.oid === oid)?.location ?? place.to, place.to);
              for (const name of there) await fs.rm(path.join(place.to, name), { recursive: true, force: true });
            }
            for (const name of await fs.readdir(folder)) {
              await fs.rename(path.join(folder, name), path.join(place.to, name));
              moved.push(path.join(place.to, name));
            }
            await fs.rmdir(folder);
          }
          if (existsSync(dir)) await fs.rm(dir, { recursive: true, force: true });
          await fs.rename(restored, dir);
        } catch (err) {
          for (const entry of moved) await fs.rm(entry, { recursive: true, force: true });
          throw err;
        }
        committed = true;
        await fs.chmod(dir, 0o700);
        await abort();
      },
      abort,
    };
  }

  async targetExists(locator: string): Promise<boolean> {
    const dir = path.resolve(locator);
    if (!existsSync(dir)) return false;
    try {
      return readdirSync(dir).length > 0;
    } catch {
      return true;
    }
  }

  /** A data directory path under the temporary folder; `drop()` stops a server left on it and removes it. */
  async createScratch(options: { tempDir: string }): Promise<{ locator: string; drop(): Promise<void> }> {
    const locator = path.resolve(options.tempDir, `verify-pgdata-${randomBytes(6).toString('hex')}`);
    this.#scratches.add(locator);
    return {
      locator,
      drop: async () => {
        if (existsSync(path.join(locator, 'postmaster.pid'))) {
          const major = Number((await fs.readFile(path.join(locator, 'PG_VERSION'), 'utf8').catch(() => '0')).trim());
          spawnSync(pgProgram('pg_ctl', major || undefined), ['stop', '-D', locator, '-m', 'immediate', '-w'], { stdio: 'ignore' });
        }
        await fs.rm(locator, { recursive: true, force: true });
        await fs.rm(scratchTablespaces(locator), { recursive: true, force: true });
        this.#scratches.delete(locator);
      },
    };
  }

  /**
   * Checks a restored base backup by starting PostgreSQL on it with the archived WAL of its range
   * (pg-physical-check.ts): every file as backup_manifest recorded it, consistent, pg_amcheck
   * clean, the same cluster.
   */
  async inspect(locator: string, options: InspectOptions = {}): Promise<DatabaseFacts & { integrityErrors: string[]; dataCheck: DataCheck }> {
    return checkRecoveredCopy(path.resolve(locator), options);
  }
}

/**
 * The pid of the server running on a data directory, from the first line of its postmaster.pid.
 * A server killed hard leaves the file behind, and its pid may since be another program's: on
 * Linux that program's name tells them apart (elsewhere a live pid counts as the server).
 */
async function serverRunningOn(dir: string): Promise<number | undefined> {
  const text = await fs.readFile(path.join(dir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = Number(text?.split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !processRuns(pid)) return undefined;
  const program = await fs.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => undefined);
  return program === undefined || /^(postgres|postmaster)/.test(program.trim()) ? pid : undefined;
}
