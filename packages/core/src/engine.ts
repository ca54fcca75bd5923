import type { LogFile } from './log-archive.js';
import type { Abortable } from './storage.js';

/**
 * How a stream is cut into chunks, the unit that incrementals store or inherit.
 * - `fixed`: equal blocks at stable offsets (database pages). A changed page changes one chunk.
 * - `content-defined`: boundaries chosen by a rolling hash over the bytes, so an inserted row
 *   shifts only the chunks around it (row streams of server engines).
 */
export type Chunking = { readonly kind: 'fixed'; readonly size: number } | { readonly kind: 'content-defined'; readonly averageSize: number };

/** One named byte stream of a snapshot (a database file, one table's ordered rows). */
export interface SnapshotStream {
  /** A plain relative name, unique within the snapshot: `main.db`, `public.orders.copy`. */
  readonly name: string;
  /** Size in bytes when known before reading (a file); undefined for server row streams. */
  readonly size?: number;
  readonly chunking: Chunking;
  /**
   * Opens the stream. It may be opened more than once (e.g. a retry) and yields the same bytes each
   * time. The caller consumes it to the end or calls `return()` on the iterator. Each piece it
   * yields is the caller's to keep: a source never writes into a buffer it has yielded again (the
   * writer holds chunks as views of the pieces instead of copying them).
   */
  open(options?: Abortable): AsyncIterable<Uint8Array>;
  /**
   * Set when this stream is the parent's stream of the same name, unchanged (an engine whose
   * incrementals add a stream of the database's own incremental format beside the parent's,
   * which restore layers on). The writer records it from the parent's layout, with this size and
   * SHA-256 (from {@link SnapshotParent.read}), and never opens it: nothing of it is read or stored.
   */
  readonly inherited?: { readonly size: number; readonly sha256: string };
}

/** Per-table facts recorded at backup time and checked again by the validator after a restore. */
export interface TableStats {
  readonly name: string;
  readonly rows: number;
  /** An engine-defined content checksum over the table's rows in a stable order (hex). */
  readonly checksum: string;
}

/**
 * The schema as named objects: a key a person recognises (`table public.orders`,
 * `index public.orders_pkey`, `trigger shop.t_audit`) mapped to the SHA-256 (hex) of that
 * object's normalised definition. It lets the validator say which objects differ, where the
 * fingerprint alone can only say that something does.
 */
export type SchemaObjects = Readonly<Record<string, string>>;

/** What the validator needs to compare a restored database with the one we backed up. */
export interface DatabaseFacts {
  /** SHA-256 (hex) of the normalised schema: equal schemas have equal fingerprints. */
  readonly schemaFingerprint: string;
  /** The schema object by object; engines that provide it get named differences in verify. */
  readonly schemaObjects?: SchemaObjects;
  readonly tables: readonly TableStats[];
}

/**
 * A consistent, frozen view of one database. The engine takes it in `snapshot()` and releases
 * it in `close()`, which the caller always calls (also after errors).
 */
export interface Snapshot {
  /** SHA-256 (hex) of the normalised schema. */
  readonly schemaFingerprint: string;
  /** The schema object by object, computed the same way `inspect()` computes it. */
  readonly schemaObjects?: SchemaObjects;
  /**
   * Per-table row counts and checksums. The core asks for them after reading the streams, so an
   * engine can compute them alongside (on a worker thread, say).
   */
  tableStats(): Promise<readonly TableStats[]>;
  /** The data streams. Empty for schema-only snapshots. */
  readonly streams: readonly SnapshotStream[];
  /** The DDL that recreates the schema, for schema-only backups and for people reading an artifact. */
  readonly schemaSql: string;
  /** Size of the database as the engine measures it (file size, `pg_database_size`). */
  readonly databaseBytes: number;
  /**
   * About how many bytes the streams hold, when neither their sizes nor `databaseBytes` say it
   * before they are read (a stream of a server's whole files): the storage sizes its upload from it.
   */
  readonly sizeHint?: number;
  /** Engine-specific facts a restore needs (page size, server version). Never secrets. */
  readonly engineMeta: Readonly<Record<string, unknown>>;
  /**
   * For engines whose restores replay an archived log (see {@link LogRange}): the part of the log
   * this snapshot needs. Recorded in the manifest and the catalog, so a restore to a moment can
   * pick its base without opening artifacts.
   */
  readonly logRange?: LogRange;
  /**
   * How an incremental or differential of this snapshot stores what changed since its parent, in
   * a few words people read in `list` (`chunk reuse`, or a database's own incremental format).
   * Core records it on incrementals and differentials only; a full has nothing to say here.
   */
  readonly incrementalMethod?: string;
  /**
   * Why Strata cannot restore this snapshot, when the engine knows at backup time (a database
   * only the server itself can recreate where it is), in words without the data's names. The
   * backup is still taken and kept; its journal entry carries the reason, and `health` reports a
   * database whose newest good restore point has one.
   */
  readonly unrestorable?: string;
  /**
   * For engines that learn some facts only by reading their own stream to its end (a copy made
   * by a tool that reports where it ended in its last bytes): called once every stream has been
   * read, before the manifest is written; what it returns replaces the fields above.
   */
  finish?(): Promise<SnapshotFinish>;
  /**
   * For engines whose incrementals need a piece of the parent's own data: called once the
   * artifact is written, what it returns is kept beside it (carry-cache.ts) and handed to the
   * incremental built on this backup through {@link SnapshotParent.carried}, so that it need not
   * read the whole artifact back. Only a shortcut: without it the engine reads the parent.
   */
  carryForward?(): Uint8Array | undefined;
  close(): Promise<void>;
}

/** What {@link Snapshot.finish} may complete. */
export type SnapshotFinish = Partial<Pick<Snapshot, 'engineMeta' | 'logRange' | 'databaseBytes'>>;

/**
 * The part of a database's own log a snapshot of its files needs: replaying the log from `start`
 * through `end` makes the copied files consistent; replaying further reaches any later moment the
 * log archive (Repository.logArchive) still covers. Positions are engine-defined plain JSON.
 */
export interface LogRange {
  readonly start: ChangePosition;
  readonly end: ChangePosition;
  /** A moment (ISO) at or after the one the log reached `end`: a restore to a moment before it cannot use this snapshot. */
  readonly endedAt: string;
}

/**
 * How the files of an engine's log archive (Repository.logArchive) relate to its base backups,
 * for engines whose snapshots carry a {@link LogRange}. Core verifies, prunes and reports the
 * archive with these rules and never reads a log file's name itself.
 */
export interface LogArchiveRules {
  /**
   * What a recovery from a base backup to the newest archived moment reads, following the log
   * across the server's own history (timeline switches) as far as the archive goes: the files in
   * replay order (companion files it needs, such as timeline histories, included), the names of
   * those the archive lacks, and other problems in words. `read` returns a file's checked bytes
   * (for companion files whose content says where the log goes on); it may throw.
   */
  walk(range: LogRange, files: readonly LogFile[], read: (file: LogFile) => Promise<Uint8Array>): Promise<LogWalk>;
  /**
   * Where a file lies along the log, as a number that grows with it (the same scale as
   * `span`), or undefined for a file retention never removes (small files that say where the log
   * went, such as timeline histories, and names the engine does not know).
   */
  position(name: string, range: LogRange): bigint | undefined;
  /** The positions of the first and the last file a base backup replays to become consistent. */
  span(range: LogRange): { readonly first: bigint; readonly last: bigint };
  /**
   * What an archived file's content says, for verify, which reads each file back anyway: what is
   * wrong with it as the file of its name (`problem`, in words; the stored SHA-256 only says the
   * bytes are the ones pushed, not that the right file was pushed), and which server's log it is
   * of (`identity`, in words; undefined when the file does not say), which every file a recovery
   * reads must share.
   */
  inspect?(file: LogFile, bytes: Uint8Array, range: LogRange): { readonly problem?: string; readonly identity?: string };
}

/** What {@link LogArchiveRules.walk} found. */
export interface LogWalk {
  /** The archived files the recovery reads, in order. */
  readonly needed: readonly LogFile[];
  /** Names of files it would read that the archive lacks, in order. */
  readonly missing: readonly string[];
  /** Other reasons the recovery would stop early, one sentence each. */
  readonly problems: readonly string[];
}

/** What kind of snapshot to take. */
export interface SnapshotOptions extends Abortable {
  /** Only the schema: no data streams, no per-table checksums beyond zero rows. */
  readonly schemaOnly: boolean;
  /** Where the engine may put temporary files (e.g. a snapshot copy of a database file). */
  readonly tempDir: string;
  /** Reports bytes the engine has copied while taking the snapshot. */
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** The restore point an incremental or differential builds on; absent for a full. */
  readonly parent?: SnapshotParent;
  /**
   * The log archive the backup will be restored from, for engines whose snapshots carry a
   * {@link LogRange}: a restore replays the log from there, so a snapshot whose last log file the
   * server sent to another archive (another database's name, another repository) can never be
   * restored, and the engine fails it rather than have it recorded. `has` looks up one file by
   * name (one small listing of its name, never of the whole archive); partials do not count.
   */
  readonly logArchive?: { readonly database: string; has(name: string, options?: Abortable): Promise<boolean> };
}

/**
 * The restore point an incremental or differential builds on, for engines whose incrementals
 * use the database's own incremental format and need something of the parent's (a database that
 * sends only the blocks changed since a backup needs that backup's own description of itself).
 * Engines that only let core reuse the parent's chunks need nothing from it.
 */
export interface SnapshotParent {
  readonly id: string;
  /** The names of the parent's streams, in its manifest's order (known without reading its artifact). */
  readonly streams: readonly string[];
  readonly logRange?: LogRange;
  /** How the parent stores its own changes (`Snapshot.incrementalMethod`), absent on a full. */
  readonly incrementalMethod?: string;
  /**
   * What the parent's snapshot handed forward ({@link Snapshot.carryForward}), with the name,
   * size and SHA-256 of each of its streams, read from a small cached file once the parent's
   * chain is checked to be all there (as `read` checks it); undefined when there is no such file
   * or it does not match the catalog (then `read` is the way).
   */
  carried?(options?: Abortable): Promise<{ readonly streams: readonly { readonly name: string; readonly size: number; readonly sha256: string }[]; readonly bytes: Uint8Array } | undefined>;
  /**
   * Reads the parent from the repository: the name, size and SHA-256 of each of its streams, and
   * the bytes of the `streams` asked for, each in a new file in `dir` (private to the caller,
   * who removes it). Costs a read of the parent's artifact, and of its ancestors' where those
   * streams reuse their chunks.
   */
  read(
    streams: readonly string[],
    dir: string,
    options?: Abortable,
  ): Promise<{ readonly streams: readonly { readonly name: string; readonly size: number; readonly sha256: string }[]; readonly files: ReadonlyMap<string, string> }>;
}

/** Where a restored stream's bytes go. */
export type StreamTarget =
  /** Core writes the stream to this file (creating it); positional writes are allowed. */
  | { readonly kind: 'file'; readonly path: string }
  /** Core pushes the stream's bytes in order, then calls `end()`. */
  | { readonly kind: 'sink'; write(chunk: Uint8Array): Promise<void>; end(): Promise<void> };

/** A {@link StreamTarget} the core pushes bytes into. */
export type StreamSink = Extract<StreamTarget, { kind: 'sink' }>;

/** What a restore is asked to produce. */
export interface EngineRestoreOptions extends Abortable {
  /** Replace an existing target. Without it, an existing target is an error (TARGET_EXISTS). */
  readonly force: boolean;
  /** Restore only these tables (into the target, replacing them). Undefined means everything. */
  readonly tables?: readonly string[];
  readonly tempDir: string;
  /**
   * The restore points being restored, oldest first, as the catalog lists them: what an engine can
   * check before any byte is read (the programs the chain needs, say), where the artifacts tell
   * it only at their end.
   */
  readonly chain?: readonly { readonly id: string; readonly incrementalMethod?: string }[];
  /** Where the parts of a backup that lived outside its target go (see {@link Relocation}). */
  readonly relocate?: Relocation;
  /**
   * How long a restore into a live target waits for other sessions' locks on the tables it
   * replaces before it gives up and changes nothing (DATABASE_LOCKED). Default
   * {@link DEFAULT_TABLE_LOCK_WAIT_SECONDS}.
   */
  readonly lockWaitSeconds?: number;
}

/** How long a restore into a live target waits for other sessions' locks when not told (`--table-lock-wait`). */
export const DEFAULT_TABLE_LOCK_WAIT_SECONDS = 30;

/**
 * Where a restore puts what its backup held outside the target itself (tablespaces, each kept
 * in a folder of its own elsewhere on the machine): `map` from the location recorded at
 * backup to a new one, `under` a folder for every one the map does not name (each in a subfolder
 * named by the engine). Without either, each goes back where it was, and a location that is not
 * empty is refused.
 */
export interface Relocation {
  readonly map?: Readonly<Record<string, string>>;
  readonly under?: string;
}

/** What the artifact said, handed to `commit()` once every byte has been verified. */
export interface RestoreCommitInfo {
  /** True when the restore point holds only a schema: the engine runs `schemaSql`, no streams. */
  readonly schemaOnly: boolean;
  readonly schemaSql: string;
  readonly engineMeta: Readonly<Record<string, unknown>>;
  /** The tables the backup recorded (to tell "not in this backup" from other errors). */
  readonly tables: readonly string[];
  /**
   * A point-in-time restore: transactions captured after the restore point (see
   * {@link ChangeCapture}), their bytes concatenated in commit order, every byte already checked
   * against its segment's checksums. The engine applies them to the restored streams before
   * putting the target in place (and before copying tables out of it).
   */
  readonly changes?: AsyncIterable<Uint8Array>;
}

/**
 * One restore in progress. Core asks for a target per stream, writes the bytes, verifies every
 * hash and the artifact's integrity, and only then calls `commit()`. Until `commit()` the real
 * target is untouched; `abort()` removes whatever was written and is safe to call twice.
 */
export interface RestoreSession {
  /**
   * Called once with the backup's schema before the first `streamTarget()`, so engines that load
   * rows into tables (COPY) can create them first. Engines that restore files ignore it.
   */
  prepare?(schemaSql: string): Promise<void>;
  streamTarget(name: string): Promise<StreamTarget>;
  commit(info: RestoreCommitInfo): Promise<void>;
  abort(): Promise<void>;
}

/** Options for {@link Engine.inspect}. */
export interface InspectOptions extends Abortable {
  /**
   * The engineMeta of the restore point the facts will be compared with. An engine whose way of
   * computing facts changed between versions reads here how the backup computed them (an older
   * artifact lacks the newer marker) and computes them the same way, so a backup made by an older
   * Strata still verifies.
   */
  readonly recordedMeta?: Readonly<Record<string, unknown>>;
  /**
   * For a restore point with a {@link LogRange}: its database's log archive, from which the
   * engine takes the files the restored copy replays to become consistent (read checks each).
   */
  readonly log?: { readonly range: LogRange; readonly files: readonly LogFile[]; read(file: LogFile): Promise<Uint8Array> };
}

/** What an engine can do; core branches on these, never on an engine's name. */
export interface EngineCapabilities {
  /**
   * Incrementals and differentials can reuse unchanged chunks of a parent. Without it, `backup`
   * refuses those types (USAGE) and takes only full and schema-only backups.
   */
  readonly incrementals: boolean;
  /** Restores of single tables (`--tables`). */
  readonly tableRestore: boolean;
}

/**
 * How people see and name an engine's databases. The CLI, the server and the editor extension
 * (which never loads an engine) word their prompts, examples and messages from this, so none of
 * them has to know any engine by name. Plain JSON: the server sends it to its clients as it is.
 */
export interface EngineDisplay {
  /** The database system as people name it, for prompts and messages. */
  readonly name: string;
  /** Whether a database (and a restore target) is a file, named by its path, or lives on a server, named by a URL. */
  readonly locator: 'file' | 'url';
  /** The URL schemes `accepts()` takes, without `:` (for a file engine, the optional prefix of a path). */
  readonly schemes: readonly string[];
  /** A locator to show as an example: `./app.db`, `scheme://user@host:port/db`. */
  readonly example: string;
  /** File name extensions of its databases (`.db`), the first one for new files; empty for server engines. */
  readonly fileExtensions: readonly string[];
  /** Where else than the URL a password can come from (environment variables, files), for prompts that ask for a URL. */
  readonly passwordSources?: string;
}

/**
 * A locator as people know it, from what `describe()` returned: a file engine's path without its
 * scheme prefix (`scheme:/srv/app.db` → `/srv/app.db`), a URL as it is.
 */
export function displayLocation(display: EngineDisplay, described: string): string {
  if (display.locator !== 'file') return described;
  for (const scheme of display.schemes) {
    for (const prefix of [`${scheme}://`, `${scheme}:`]) if (described.startsWith(prefix)) return described.slice(prefix.length);
  }
  return described;
}

/**
 * How a person recovers this engine's backups without Strata (docs/FORMAT.md has the whole
 * recipe, docs/recover-chain.py assembles any restore point's streams). Core writes `layout` into
 * every artifact's README.txt and `loadCommands` into an export's RESTORE.md, so that neither
 * has to know any engine.
 */
export interface HandRecovery {
  /** A short paragraph for README.txt: what the streams hold and how they become a database. */
  readonly layout: string;
  /**
   * Shell lines that make a database of the folder recover-chain.py wrote: they read `$OUT`
   * (that folder) and `$NEWDB` (the name of the database to create; file engines make `$NEWDB.db`).
   */
  readonly loadCommands: readonly string[];
  /** The command-line tools `loadCommands` need, for "you need ..." lines. */
  readonly tools: readonly string[];
  /**
   * A short paragraph for a segment's README.txt: what its captured changes are and how they are
   * replayed onto the restored base (engines with continuous capture).
   */
  readonly changes?: string;
  /**
   * Shell lines that replay segments onto the base recover-chain.py wrote to `$OUT` (engines with
   * continuous capture): they make `$NEWDB` as of `$UNTIL` from the base `$BASE`, with
   * replay-segments.py, `keyArgument` (its key option, e.g. `--keys KEYS`) and `segments` (the
   * shell words naming the segment files).
   */
  replayCommands?(keyArgument: string, segments: string): readonly string[];
  /**
   * For engines whose base backups replay a log archive (see {@link LogArchiveRules}): a short
   * paragraph for RESTORE.md on how a recovery by hand reads the archived files, and the restore
   * options that pick a moment.
   */
  readonly logArchive?: string;
  /** A restore target for `strata restore ... --to <target>` examples. */
  exampleTarget(database: string): string;
}

/**
 * A place in a database's own log of committed transactions, as the engine describes it: plain
 * JSON that core stores and hands back, and only the engine interprets.
 */
export type ChangePosition = Readonly<Record<string, unknown>>;

/** One committed transaction, as continuous capture read it from the database's log. */
export interface CapturedTransaction {
  /** The engine's record of the transaction, replayed by a restore session (`RestoreCommitInfo.changes`). */
  readonly bytes: Uint8Array;
  /** Where the log stands after this transaction. */
  readonly position: ChangePosition;
  /** When capture saw it committed (ms since the epoch): never before its commit. */
  readonly observedAt: number;
  /**
   * A moment (ms since the epoch) before which every committed transaction is this one or an
   * earlier one (for example the start of the last look at the log's committed end that had not
   * gone past this transaction); never after `observedAt`.
   */
  readonly scannedAt: number;
  /**
   * How many of the database's transactions this one stands for (default 1): more than one after
   * `ChangeFeed.condense` (or compaction, through `ChangeCapture.join`) joined transactions no
   * restore can stop between.
   */
  readonly commits?: number;
}

/** What one read of the log found. */
export interface ChangeRead {
  readonly transactions: readonly CapturedTransaction[];
  /**
   * Set when capture can no longer prove that it saw every transaction after its position (the log
   * was recycled behind its back): the transactions above are still good, then the caller must
   * start over from a new snapshot. A sentence saying what happened.
   */
  readonly lost?: string;
  /** True when the read stopped at its `maxBytes`: more committed transactions wait in the log. */
  readonly more?: boolean;
}

/** Options for {@link ChangeFeed.read}. */
export interface ChangeReadOptions {
  /**
   * Stop at the first transaction's end at or past this many bytes (at least one transaction is
   * read): memory stays bounded, and the log keeps the rest for the next read.
   */
  readonly maxBytes?: number;
}

/** Options for {@link ChangeCapture.open}. */
export interface ChangeCaptureOptions {
  /** Continue after this position if the log still holds everything after it. */
  readonly resume?: ChangePosition;
  /** Switch the database into the mode capture needs instead of refusing a database not in it. */
  readonly switchMode?: boolean;
  /**
   * Leave the database's own checkpoints to its applications: an engine whose capture keeps them
   * from running, to do them itself on its own thread, lets them run (for an application that
   * checkpoints explicitly and needs those to run). A writer's commits may then cost it more.
   */
  readonly leaveCheckpoints?: boolean;
}

/**
 * Continuous capture of one database's committed transactions, for point-in-time restores. Open
 * until `close()`; the capture makes sure that the log cannot be recycled past a transaction it
 * has not read, or says so (`lost`).
 */
export interface ChangeFeed {
  /** True when the log continued the position `open()` was given: the caller goes on from it. */
  readonly resumed: boolean;
  /** Where the log stood when `open()` returned (the snapshot below is of exactly this point). */
  readonly position: ChangePosition;
  /** When the database was seen at `position` (ms since the epoch): everything in it committed before. */
  readonly positionAt: number;
  /** The transactions committed since the last read, oldest first (with `maxBytes`, the first of them). */
  read(options?: ChangeReadOptions): Promise<ChangeRead>;
  /**
   * Lets the database recycle its log up to what was read (briefly holding its writers off), and
   * returns what it read while doing so (about `maxBytes` at most, beyond the few transactions
   * it must read while its writers are held off). Called about once per segment.
   */
  maintain(options?: ChangeReadOptions): Promise<ChangeRead>;
  /**
   * Optional: notes how far the log is committed now, without reading it. Called on each poll
   * while nothing is read (the held transactions at their memory bound), so that what is
   * committed meanwhile, read later, still carries the moment it was seen committed (`observedAt`)
   * rather than the moment it was read: a large transaction being shipped then delays the
   * repository, not the times restores go by.
   */
  observe?(): void;
  /** A snapshot of the database at `position`, to be the base the captured transactions apply to. */
  snapshot(options: SnapshotOptions): Promise<Snapshot>;
  /**
   * Optional: the same changes in fewer bytes. Consecutive transactions with the same `observedAt`
   * are one moment to a restore (it replays all of them or none; the last one's `scannedAt` holds for the run), so an engine
   * whose replay keeps only the last write of each place may join them into one transaction that
   * writes each place once, its final version; `commits` says how many it stands for. The replay
   * of the joined transaction must leave the database exactly as replaying them one by one would.
   */
  condense?(transactions: readonly CapturedTransaction[]): CapturedTransaction[];
  close(): Promise<void>;
}

/** An engine's continuous capture (engines whose databases keep a log of committed transactions). */
export interface ChangeCapture {
  /** Starts capturing `locator`; fails with USAGE when the database is not in a mode capture can follow. */
  open(locator: string, options: ChangeCaptureOptions): Promise<ChangeFeed>;
  /**
   * Optional: one transaction's record that leaves the database as replaying `changes` (the
   * records of consecutive transactions of one chain, oldest first) one by one does, in as few
   * bytes as the engine can. Compaction uses it for transactions no restore needs to stop between
   * (see {@link ChangeFeed.condense}); `at` is a position of the same log, for what reading the
   * records takes (a page size, say).
   */
  join?(changes: readonly Uint8Array[], at: ChangePosition): Uint8Array;
}

/**
 * A database engine: turns a database into named streams and back.
 *
 * Contract for implementers (see docs/implementing-an-engine.md):
 * - `snapshot()` returns a view consistent as of one moment, even while others write.
 * - Stream bytes for unchanged data are identical between snapshots, so incrementals stay small.
 * - `inspect()` of a database restored from a snapshot returns the facts the snapshot recorded.
 * - Errors are StrataErrors: DATABASE_NOT_FOUND, DATABASE_INVALID, DATABASE_LOCKED, TARGET_EXISTS.
 * - Secrets in locators (passwords in URLs) never appear in messages: use `describe()`.
 */
export interface Engine {
  /** Short lowercase name stored in manifests and the catalog; never shown as the engine's name (see `display`). */
  readonly kind: string;
  readonly capabilities: EngineCapabilities;
  readonly display: EngineDisplay;
  /** What README.txt and RESTORE.md tell a person recovering without Strata. */
  readonly handRecovery?: HandRecovery;
  /**
   * Continuous capture for point-in-time restores (`strata replicate`). An engine that has it also
   * applies `RestoreCommitInfo.changes` in its restore sessions.
   */
  readonly changeCapture?: ChangeCapture;
  /** For engines whose snapshots carry a {@link LogRange}: how the log archive's files relate to them. */
  readonly logArchive?: LogArchiveRules;
  /**
   * Names of entries in a snapshot's table facts that are not tables (what the database holds
   * beside them, checked by verify the same way): never offered, listed or accepted as tables.
   */
  readonly nonTableFacts?: readonly string[];
  /** True when this engine understands the locator (a path, `scheme:PATH`, `scheme://...`). */
  accepts(locator: string): boolean;
  /** The locator without secrets, for messages and the catalog. */
  describe(locator: string): string;
  snapshot(locator: string, options: SnapshotOptions): Promise<Snapshot>;
  beginRestore(target: string, options: EngineRestoreOptions): Promise<RestoreSession>;
  /** True when the restore target already exists (a file, a database on the server). */
  targetExists(target: string): Promise<boolean>;
  /**
   * A throw-away target for the validator (a temp database file, a temp server database). `drop()`
   * removes it and is safe to call twice.
   */
  createScratch(options: { tempDir: string; source?: string } & Abortable): Promise<{ locator: string; drop(): Promise<void> }>;
  /**
   * Reads the facts of an existing database (used by the validator on a scratch restore).
   * `foreignKeysChecked` is true only when the engine really checked every foreign key (its
   * violations are `integrityErrors` starting with "foreign key"); verify says so only then.
   */
  inspect(locator: string, options?: InspectOptions): Promise<DatabaseFacts & { integrityErrors: string[]; foreignKeysChecked?: boolean; dataCheck?: DataCheck }>;
}

/**
 * How an engine whose backups record no per-table facts (a copy of a database's files) checked
 * the restored copy's data instead, against facts the database itself recorded when it sent the
 * backup: what was checked, in words verify reports, and each difference found.
 */
export interface DataCheck {
  readonly checked: string;
  readonly problems: readonly string[];
}

/**
 * The engines a program knows about. An instance, not a global, so the CLI and the server each
 * build theirs in one visible place.
 */
export class EngineRegistry {
  readonly #engines = new Map<string, Engine>();

  register(engine: Engine): this {
    if (this.#engines.has(engine.kind)) throw new Error(`engine ${engine.kind} is already registered`);
    this.#engines.set(engine.kind, engine);
    return this;
  }

  get(kind: string): Engine | undefined {
    return this.#engines.get(kind);
  }

  /** The first engine that accepts the locator, if any. */
  forLocator(locator: string): Engine | undefined {
    for (const engine of this.#engines.values()) if (engine.accepts(locator)) return engine;
    return undefined;
  }

  kinds(): string[] {
    return [...this.#engines.keys()];
  }
}
