import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { StrataError, named, redactable } from './errors.js';
import type {
  DataCheck,
  DatabaseFacts,
  Engine,
  EngineCapabilities,
  EngineDisplay,
  EngineRestoreOptions,
  InspectOptions,
  RestoreCommitInfo,
  RestoreSession,
  Snapshot,
  SnapshotOptions,
  StreamTarget,
} from './engine.js';
import { checkDatabaseNameFits, scratchDatabaseName, sweepAndReport, workDatabaseNames } from './work-databases.js';
import type { IdentifierLimit, LeftoverServer, RestoreWorkNames } from './work-databases.js';
import type { Abortable } from './storage.js';

/**
 * What every engine for a database server shares: {@link ServerEngine}, the restore scaffolding
 * (a restore builds beside the target and swaps at the end, so a failed one leaves the target as
 * it was and no work database behind; a table restore spools the chosen tables' rows first), and
 * the pieces around it: parsing its URL without ever echoing the password, refusing an existing
 * target without force, a sink for streams a table restore skips, and ordering tables so parents
 * load before children.
 */

/** What a server URL names. The password stays in here and is never part of a message. */
export interface ServerTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string | undefined;
  readonly database: string;
  /** The URL without its password: for messages, the catalog and the journal. */
  readonly safe: string;
  readonly raw: string;
}

/** How one engine's URLs look. */
export interface ServerUrlRules {
  /** Engine name used in messages (the engine's `kind`). */
  readonly engine: string;
  /** Accepted URL schemes, without the colon. */
  readonly protocols: readonly string[];
  readonly defaultPort: number;
  readonly defaultUser: string;
  /** Environment variable that may hold the password, as the server's own client tools read it. */
  readonly passwordEnv: string;
  /**
   * Whether `?host=/folder` names a Unix socket's folder instead of the URL's host, as some
   * servers' client libraries allow (`scheme://user@localhost:5433/db?host=/run/server`).
   */
  readonly socketHostParam?: boolean;
}

/** Parses a server URL; a bad one is a usage error that never repeats the password. */
export function parseServerUrl(locator: string, rules: ServerUrlRules): ServerTarget {
  let url: URL;
  try {
    url = new URL(locator);
  } catch {
    throw new StrataError('USAGE', `${rules.engine}: the database URL is not a valid URL (expected ${rules.protocols[0]}://user@host:port/database)`);
  }
  if (!rules.protocols.includes(url.protocol.replace(/:$/, ''))) throw new StrataError('USAGE', `${rules.engine}: ${url.protocol} is not a ${rules.engine} URL`);
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!database || database.includes('/')) {
    throw new StrataError('USAGE', `${rules.engine}: the URL names no database (expected ${rules.protocols[0]}://user@${url.host || 'host'}/database)`);
  }
  const safe = new URL(locator);
  safe.password = '';
  // libpq also takes a password as a parameter: never shown either.
  if (safe.searchParams.has('password')) safe.searchParams.set('password', '***');
  // Decoded as libpq decodes it (%XX only: URLSearchParams would also turn '+' into a space).
  const hostParam = rules.socketHostParam ? /(?:^\?|&)host=([^&]*)/.exec(url.search)?.[1] : undefined;
  const socketFolder = hostParam === undefined ? undefined : decodeURIComponent(hostParam);
  return {
    host: socketFolder?.startsWith('/') ? socketFolder : url.hostname || 'localhost',
    port: url.port ? Number(url.port) : rules.defaultPort,
    user: decodeURIComponent(url.username || rules.defaultUser),
    password: url.password ? decodeURIComponent(url.password) : process.env[rules.passwordEnv],
    database,
    safe: safe.toString().replace(/:@/, '@'),
    raw: locator,
  };
}

/**
 * A locator fit for a message: the password of a `scheme://user:password@host/...` URL replaced
 * by `***`. For locators no engine understood, so it cannot rely on any engine's URL rules; what
 * `URL` cannot parse is cut at the userinfo by pattern.
 */
export function redactLocator(locator: string): string {
  try {
    const url = new URL(locator);
    if (url.password && url.host) {
      url.password = '***';
      return url.toString();
    }
  } catch {
    // Not a URL: fall through to the pattern, which still catches `scheme://user:pw@` prefixes.
  }
  return locator.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]*):[^/?#]*@/i, '$1:***@');
}

/** `text` with every occurrence of `secret` replaced by `***` (driver and tool messages can repeat a password). */
export function redactSecret(text: string, secret: string | undefined): string {
  return secret ? text.replaceAll(secret, '***') : text;
}

/** The same URL with another database. */
export function withServerDatabase(locator: string, database: string): string {
  const url = new URL(locator);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

/** Throws TARGET_EXISTS when a restore would replace a database without `force`. */
export function refuseExistingTarget(target: ServerTarget, exists: boolean, options: { force: boolean; tables?: readonly string[] }): void {
  if (!exists || options.force) return;
  throw new StrataError(
    'TARGET_EXISTS',
    options.tables
      ? `restore: database ${target.database} exists; pass --force to replace the rows of ${options.tables.join(', ')} in it`
      : `restore: database ${target.database} exists on ${target.host}:${target.port}; pass --force to replace it (it stays intact until the new one is complete)`,
  );
}

/** A sink for streams a table restore does not want. */
export const discardSink: StreamTarget = { kind: 'sink', write: async () => undefined, end: async () => undefined };

/** Orders tables so each comes after the tables its foreign keys point to (cycles are broken). */
export function parentsFirst(tables: readonly string[], edges: readonly { child: string; parent: string }[]): string[] {
  const set = new Set(tables);
  const out: string[] = [];
  const visiting = new Set<string>();
  const visit = (t: string): void => {
    if (out.includes(t) || visiting.has(t)) return;
    visiting.add(t);
    for (const e of edges) if (e.child === t && e.parent !== t && set.has(e.parent)) visit(e.parent);
    out.push(t);
  };
  for (const t of tables) visit(t);
  return out;
}

/**
 * A session with administrative rights on a database server, outside any user database: what the
 * shared restore, verify and sweep steps need. {@link ServerEngine.connectAdmin} opens it; the
 * caller always closes it.
 */
export interface ServerAdmin {
  /** The names of every database on the server. */
  databases(): Promise<string[]>;
  exists(database: string): Promise<boolean>;
  /** Drops a database Strata made, with whatever the server needs first; one already gone is no error. */
  drop(database: string): Promise<void>;
  /** Settles the aside database of a dead restore ({@link LeftoverServer.settleAside}). */
  settleAside: LeftoverServer['settleAside'];
  close(): Promise<void>;
}

/**
 * A whole-database restore of some tables (`--tables` into a database that did not exist): which
 * tables' rows to load, and the check at commit that the backup has every table asked for.
 */
export interface TableFilter {
  /** Called with the backup's schema before the first row arrives (see {@link ServerEngine.tablesNamedBy}). */
  prepare(schemaSql: string): void;
  wants(table: string): boolean;
  /** The backup's tables asked for; TABLE_NOT_FOUND or USAGE (ambiguous) as {@link ServerEngine.requestedTables}. */
  check(inBackup: readonly string[]): string[];
}

/** The rows of the tables a table restore replaces, spooled to files: table (as the backup names it) → file. */
export type SpooledTables = ReadonlyMap<string, string>;

/** What a table restore into a live target is told besides its tables (see EngineRestoreOptions). */
export interface ReplaceTablesOptions extends Abortable {
  /** How long to wait for other sessions' locks on the tables before giving up (default 30 s). */
  readonly lockWaitSeconds?: number;
}

/**
 * The work database of one whole-database restore. The engine says when it `created()` it, and
 * `keep()`s it once it was renamed into place (or must stay, holding what the user needs);
 * until then `discard()` drops it, so a restore that fails or is aborted leaves nothing behind.
 */
export class WorkDatabase {
  readonly name: string;
  /** Where the old database (or what the swap replaces) waits until the restore is done. */
  readonly aside: string;
  readonly #drop: (name: string) => Promise<void>;
  #exists = false;

  constructor(names: RestoreWorkNames, drop: (name: string) => Promise<void>) {
    this.name = names.work;
    this.aside = names.aside;
    this.#drop = drop;
  }

  created(): void {
    this.#exists = true;
  }

  keep(): void {
    this.#exists = false;
  }

  /**
   * Drops it if it is still this restore's to drop. A drop that fails is left to the sweep of a
   * later run (the name says whose it is): the restore's own error is the one to report.
   */
  async discard(): Promise<void> {
    if (!this.#exists) return;
    this.#exists = false;
    await this.#drop(this.name).catch(() => undefined);
  }
}

/**
 * A whole-database restore session around the engine's own steps: after `commit` (whether it
 * succeeded or threw, once the engine put back whatever it had moved) and after `abort`, the work
 * database is discarded unless kept, and `close` releases the engine's connections. Both are
 * idempotent, as the core may abort after a failed commit.
 */
export function workDatabaseSession(work: WorkDatabase, session: RestoreSession, close: () => Promise<void>): RestoreSession {
  let finished = false;
  const finish = async (): Promise<void> => {
    if (finished) return;
    finished = true;
    await work.discard();
    await close();
  };
  return {
    ...(session.prepare ? { prepare: session.prepare.bind(session) } : {}),
    streamTarget: (name) => session.streamTarget(name),
    commit: async (info) => {
      try {
        await session.commit(info);
      } finally {
        await finish();
      }
    },
    abort: async () => {
      try {
        await session.abort();
      } finally {
        await finish();
      }
    },
  };
}

/**
 * The base of engines for database servers. It implements what is the same for every server
 * (URLs, the target check, dispatching a restore, verify's scratch database, the sweep of what
 * killed runs left, the spooling of a table restore) and leaves to the engine what is not:
 * snapshots, facts, building a database, and swapping tables in.
 *
 * Every restore first sweeps the server ({@link sweepAndReport}), then refuses an existing target
 * without force. A table restore into an existing database spools the chosen tables' rows to
 * private files and calls {@link replaceTables} once every byte was verified; anything else is a
 * whole-database restore ({@link beginDatabaseRestore}) into a {@link WorkDatabase} named by
 * {@link workDatabaseNames}, so a later run can tell it is a leftover should this process die.
 */
export abstract class ServerEngine implements Engine {
  /** What a restore's {@link tableFilter} has to say, by the restore's options, said when it is done. */
  readonly #filterNotes = new WeakMap<EngineRestoreOptions, string[]>();
  abstract readonly kind: string;
  abstract readonly capabilities: EngineCapabilities;
  abstract readonly display: EngineDisplay;
  /** How the engine's URLs look. */
  protected abstract readonly urlRules: ServerUrlRules;
  /** The longest database name the server takes, for the names of work databases. */
  protected abstract readonly identifierLimit: IdentifierLimit;

  abstract snapshot(locator: string, options: SnapshotOptions): Promise<Snapshot>;
  abstract inspect(locator: string, options?: InspectOptions): Promise<DatabaseFacts & { integrityErrors: string[]; foreignKeysChecked?: boolean; dataCheck?: DataCheck }>;

  /** Opens an administrative session on the server of `server`; `purpose` (`restore`, `verify`) may show in the server's session list. */
  protected abstract connectAdmin(server: ServerTarget, purpose: string): Promise<ServerAdmin>;

  /**
   * Restores a whole database: builds it in a {@link WorkDatabase} of these `names` (dropped
   * through the engine's own admin connection) and swaps it in at `commit`, leaving an existing
   * target as it was if anything fails. Return the session through {@link workDatabaseSession}.
   * `options.tables`, if set, names the only tables to fill (the target did not exist).
   */
  protected abstract beginDatabaseRestore(target: ServerTarget, exists: boolean, names: RestoreWorkNames, options: EngineRestoreOptions): Promise<RestoreSession>;

  /**
   * Replaces the rows of `tables` (names as the backup has them) in the existing target with the
   * spooled ones, all or nothing: if anything fails, the target is as it was. `work` names are
   * free for databases the swap needs. `options.signal` is the restore's: a swap that waits for
   * the server (another session's lock) stops on it.
   */
  protected abstract replaceTables(target: ServerTarget, tables: readonly string[], spooled: SpooledTables, info: RestoreCommitInfo, work: RestoreWorkNames, options?: ReplaceTablesOptions): Promise<void>;

  /**
   * The table whose rows a stream holds (as `RestoreCommitInfo.tables` names it), or undefined for
   * a stream that holds no table's rows (a table restore skips it). A name the engine never
   * writes is ARTIFACT_CORRUPT.
   */
  protected abstract tableOfStream(stream: string): string | undefined;

  /** Whether `--tables` entry `requested` means the backup's table `table` (by default: the same name). */
  protected namesTable(requested: string, table: string): boolean {
    return requested === table;
  }

  /** Parses a URL of this engine (USAGE, without the password, when it is not one). */
  parseTarget(locator: string): ServerTarget {
    return parseServerUrl(locator, this.urlRules);
  }

  accepts(locator: string): boolean {
    const lower = locator.toLowerCase();
    return this.display.schemes.some((scheme) => lower.startsWith(`${scheme}://`));
  }

  describe(locator: string): string {
    try {
      return this.parseTarget(locator).safe;
    } catch {
      return `${this.display.schemes[0]}://(unparseable URL)`;
    }
  }

  async targetExists(locator: string): Promise<boolean> {
    const target = this.parseTarget(locator);
    return this.#withAdmin(target, 'restore', (admin) => admin.exists(target.database));
  }

  async beginRestore(locator: string, options: EngineRestoreOptions): Promise<RestoreSession> {
    const target = this.parseTarget(locator);
    checkDatabaseNameFits(target.database, this.identifierLimit);
    await this.sweepLeftovers(target, 'restore');
    const exists = await this.targetExists(locator);
    refuseExistingTarget(target, exists, options);
    const names = workDatabaseNames(target.database, this.identifierLimit);
    if (options.tables && exists) return this.#beginTableRestore(target, options.tables, names, options);
    const session = await this.beginDatabaseRestore(target, exists, names, options);
    if (!options.tables) return session;
    // What the table filter found to say is said once the restore is done, not before it may fail.
    return {
      ...(session.prepare ? { prepare: (schemaSql: string) => session.prepare!(schemaSql) } : {}),
      streamTarget: (name) => session.streamTarget(name),
      abort: () => session.abort(),
      commit: async (info) => {
        await session.commit(info);
        for (const note of this.#filterNotes.get(options) ?? []) process.emitWarning(note, { code: 'STRATA_TABLES_EMPTY' });
      },
    };
  }

  async createScratch(options: { tempDir: string; source?: string }): Promise<{ locator: string; drop(): Promise<void> }> {
    if (!options.source) throw new StrataError('USAGE', `${this.kind}: verification needs the server the backup came from`);
    const source = this.parseTarget(options.source);
    await this.sweepLeftovers(source, 'verify');
    const name = scratchDatabaseName(source.database, this.identifierLimit);
    this.#scratches.add(name);
    return {
      locator: withServerDatabase(source.raw, name),
      drop: async () => {
        try {
          await this.#withAdmin(source, 'verify', (admin) => admin.drop(name));
        } finally {
          this.#scratches.delete(name);
          this.scratchDropped(name);
        }
      },
    };
  }

  /** Verify's scratch databases this engine made and has not dropped yet. */
  readonly #scratches = new Set<string>();

  /**
   * Whether `database` is one of verify's scratch databases, made by this engine: a restore into
   * it is checked and dropped, and lives beside the source on the source's server, so whatever in
   * it would act by itself there (a scheduled job) must not.
   */
  protected isScratch(database: string): boolean {
    return this.#scratches.has(database);
  }

  /** Called once one of verify's scratch databases is dropped: what an engine kept about it can go. */
  protected scratchDropped(_database: string): void {}

  /** Removes what killed restores and verifications left on the server, and says so (see {@link sweepAndReport}). */
  protected async sweepLeftovers(server: ServerTarget, operation: string): Promise<void> {
    await this.#withAdmin(server, operation, (admin) =>
      sweepAndReport({ limit: this.identifierLimit, databases: () => admin.databases(), drop: (name) => admin.drop(name), settleAside: (aside, context) => admin.settleAside(aside, context) }, operation),
    );
  }

  /** What `options.tables` asks of a whole-database restore, or undefined when it restores everything. */
  protected tableFilter(options: EngineRestoreOptions): TableFilter | undefined {
    const given = options.tables;
    if (!given) return undefined;
    let requested = given;
    return {
      prepare: (schemaSql) => void (requested = this.tablesNamedBy(given, schemaSql)),
      wants: (table) => this.isRequested(table, requested),
      check: (inBackup) => {
        const chosen = this.requestedTables(requested, inBackup);
        // The new database is built from the backup's whole schema (views, routines and foreign
        // keys may use any table), so the tables left out are there, empty: said, lest an empty
        // table be taken for what the backup held.
        const empty = inBackup.filter((table) => !chosen.includes(table));
        if (empty.length > 0) {
          this.#filterNotes.set(options, [
            `restore: the new database has the backup's whole schema and the rows of ${chosen.join(', ')} only; ${empty.join(', ')} ${empty.length === 1 ? 'is' : 'are'} there empty (restore without --tables for their rows)`,
          ]);
        }
        return chosen;
      },
    };
  }

  /**
   * `--tables` as the backup's schema resolves them, before any row arrives: by default as given.
   * An engine whose tables can hold no rows of their own but have tables under them that do
   * (partitioned ones) names those instead.
   */
  protected tablesNamedBy(requested: readonly string[], _schemaSql: string): readonly string[] {
    return requested;
  }

  /**
   * The backup's tables named as {@link tableOfStream} names them, which `--tables` is matched
   * against both as the rows arrive and at commit: the two must agree, or a table chosen at commit
   * would have had none of its rows kept. By default the names its facts recorded.
   */
  protected backupTables(info: RestoreCommitInfo): readonly string[] {
    return info.tables;
  }

  /** Whether a backup table is one of those `--tables` asked for. */
  protected isRequested(table: string, requested: readonly string[]): boolean {
    return requested.some((name) => this.namesTable(name, table));
  }

  /**
   * The backup's tables that `--tables` names, in the backup's order: TABLE_NOT_FOUND for a name
   * that means none of them, USAGE for one that means several (qualify it).
   */
  protected requestedTables(requested: readonly string[], inBackup: readonly string[]): string[] {
    for (const name of requested) {
      const found = inBackup.filter((table) => this.namesTable(name, table));
      if (found.length === 0) throw new StrataError('TABLE_NOT_FOUND', redactable`restore: the backup has no table ${named(JSON.stringify(name), 'table')} (it has: ${named(inBackup, 'table')})`, { details: { table: name } });
      if (found.length > 1) throw new StrataError('USAGE', redactable`restore: ${named(name, 'table')} is ambiguous (${named(found, 'table')}); name one of them as written here`);
    }
    return inBackup.filter((table) => this.isRequested(table, requested));
  }

  async #withAdmin<T>(server: ServerTarget, purpose: string, work: (admin: ServerAdmin) => Promise<T>): Promise<T> {
    const admin = await this.connectAdmin(server, purpose);
    try {
      return await work(admin);
    } finally {
      await admin.close().catch(() => undefined);
    }
  }

  /**
   * Rows of the chosen tables go to private files as they arrive (the backup delivers tables in
   * name order, while foreign keys may need parents loaded first); the engine replaces the tables
   * from them at commit, when every byte was verified. The files are removed on every path.
   */
  async #beginTableRestore(target: ServerTarget, given: readonly string[], names: RestoreWorkNames, options: EngineRestoreOptions): Promise<RestoreSession> {
    await fs.mkdir(options.tempDir, { recursive: true });
    const spooled = new Map<string, string>();
    const removeFiles = async (): Promise<void> => void (await Promise.all([...spooled.values()].map((file) => fs.rm(file, { force: true }))));
    let requested = given;
    return {
      prepare: async (schemaSql) => void (requested = this.tablesNamedBy(given, schemaSql)),
      streamTarget: async (name) => {
        const table = this.tableOfStream(name);
        if (table === undefined || !this.isRequested(table, requested)) return discardSink;
        const file = path.join(options.tempDir, `rows-${randomBytes(6).toString('hex')}`);
        spooled.set(table, file);
        return { kind: 'file', path: file };
      },
      commit: async (info) => {
        try {
          await this.replaceTables(target, this.requestedTables(requested, this.backupTables(info)), spooled, info, names, {
            ...(options.signal ? { signal: options.signal } : {}),
            ...(options.lockWaitSeconds !== undefined ? { lockWaitSeconds: options.lockWaitSeconds } : {}),
          });
        } finally {
          await removeFiles();
        }
      },
      abort: removeFiles,
    };
  }
}

/**
 * A lock wait is whole seconds from 1 to a day: the servers take it as whole seconds, and 0 would
 * mean "forever" to some. Checked before anything is read; the engines, which write it into SQL,
 * check that it is a whole number again.
 */
export function checkLockWait(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 86_400) {
    throw new StrataError('USAGE', `restore: the lock wait must be whole seconds from 1 to 86400 (a day), not ${seconds}`);
  }
  return seconds;
}
