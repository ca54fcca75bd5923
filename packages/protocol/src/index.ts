/**
 * The protocol between the Strata server (the SDK behind JSON-RPC) and its clients, first of all
 * the VS Code extension. Methods are namespaced `strata/...`; params and results are plain JSON.
 *
 * Long requests (backup, verify, restore, tables, prune) accept a `workDoneToken`: the server
 * reports `$/progress` on it, and cancelling the request (`$/cancelRequest`) aborts the
 * operation, which leaves the repository and any restore target as they were.
 *
 * Failures are JSON-RPC errors with code {@link STRATA_ERROR} and `data` of type
 * {@link StrataErrorData}: the SDK's string error code, which is what a client should branch on.
 */
import type { BackupRecord, BackupType, ContinuityWindow, EngineDisplay, LogWindow, RetentionDecision, VerifyReport } from '@strata/core';

export type { BackupRecord, BackupType, CheckResult, ContinuityWindow, EngineDisplay, LogWindow, RetentionDecision, VerificationRecord, VerifyReport } from '@strata/core';

/** Bumped when a method changes incompatibly; `initialize` returns it in `serverInfo`. */
export const PROTOCOL_VERSION = 1;

/**
 * The JSON-RPC error code of every Strata failure. It lies outside the ranges JSON-RPC and LSP
 * reserve (-32768 to -32000 and -32899 to -32800); the detail is in `data.code`.
 */
export const STRATA_ERROR = 1;

/** `data` of a Strata error response. */
export interface StrataErrorData {
  /** The SDK's error code: `PASSPHRASE_WRONG`, `CHAIN_BROKEN`, `TARGET_EXISTS`, `ABORTED`, ... */
  readonly code: string;
  /** The exit status the CLI would use for the same failure (2 usage, 3 verify, 4 passphrase, 5 locked). */
  readonly exitCode: number;
  readonly details?: Record<string, unknown>;
}

/** Present on long requests: where `$/progress` goes. */
export interface WorkDone {
  readonly workDoneToken?: string | number;
}

/** A database the user added through the client (kept in the client's settings). */
export interface AddedDatabase {
  readonly name: string;
  /** A file path or a server URL. */
  readonly url: string;
  readonly repository: string;
}

/** One job of strata daemon for a database: what it does, when it runs next, how its last run went. */
export interface ScheduledJobView {
  readonly job: string;
  readonly kind: string;
  /** `backup full`, `verify quick (sample 1)`, `replicate`. */
  readonly what: string;
  /** Absent for a continuous job. */
  readonly cron?: string;
  readonly timezone?: string;
  /** The next due time (ISO). */
  readonly next?: string;
  /** The last run the daemon journaled. */
  readonly last?: { readonly at: string; readonly outcome: 'succeeded' | 'failed' | 'interrupted' | 'running'; readonly error?: string };
}

/** A database the server knows, from a strata.config.json or from the client's settings. */
export interface DatabaseEntry {
  readonly name: string;
  /** The `kind` of its engine: an {@link EngineInfo} of the workspace result describes it. */
  readonly engine: string;
  /** Where the database is, without secrets: a file path, or a server URL without its password. */
  readonly location: string;
  /** The repository folder its backups go to. */
  readonly repository: string;
  readonly repositoryExists: boolean;
  /** The config file that names it, or `settings`. */
  readonly origin: string;
  /** Its jobs for strata daemon ("schedules" of its config file): next run and last outcome. */
  readonly schedule?: readonly ScheduledJobView[];
}

/**
 * An engine the server has: its `kind` (as in {@link DatabaseEntry.engine}) and how its databases
 * are named and shown, so a client can ask for a file or a URL and word its prompts without
 * knowing any engine itself.
 */
export interface EngineInfo extends EngineDisplay {
  readonly kind: string;
}

/** A config file that could not be used, and why. */
export interface ConfigProblem {
  readonly file: string;
  readonly message: string;
}

/** Which repository (a folder) a request is about. */
export interface RepositoryRef {
  readonly repository: string;
}

/** A restore point as a client shows it: the catalog entry, and its retention tier when asked for. */
export interface BackupView extends BackupRecord {
  /** The longest-lived retention rule that keeps it (`daily`, `weekly`, ...), or `not kept`. */
  readonly tier?: string;
  /** Why retention keeps or drops it. */
  readonly reasons?: readonly string[];
  /**
   * True on its database's newest good restore point, the one `strata health` measures and
   * retention always keeps (`newestGoodBackup` of the SDK decides, for every client alike).
   */
  readonly newestGood?: boolean;
}

/** A restore point on the Backup History timeline: what the charts and the table show of it. */
export interface HistoryPoint {
  readonly id: string;
  readonly database: string;
  readonly type: BackupType;
  readonly createdAt: string;
  /** The restore point it builds on (null for a self-contained one). */
  readonly parent: string | null;
  readonly label: string | null;
  /** Bytes of the artifact on storage. */
  readonly storedBytes: number;
  /** Bytes of the uncompressed archive inside the artifact. */
  readonly rawBytes: number;
  /** Bytes of the database when it was backed up. */
  readonly databaseBytes: number;
  /** The outcome of its last verification, or `never`. */
  readonly verification: 'passed' | 'failed' | 'never';
  readonly verifiedAt: string | null;
  readonly verificationLevel: 'quick' | 'full' | null;
  /** `name: reason` of each check its last verification failed. */
  readonly failedChecks: readonly string[];
  /** The longest-lived retention rule that keeps it (`daily`, `weekly`, ...), or `not kept`. */
  readonly tier: string;
  /** Why retention keeps or drops it. */
  readonly reasons: readonly string[];
  /** True on its database's newest good restore point (see {@link BackupView.newestGood}). */
  readonly newestGood: boolean;
}

/** A backup run that failed (or was interrupted): from the journal, so it has no restore point. */
export interface HistoryFailure {
  /** When the run started. */
  readonly at: string;
  readonly database: string;
  readonly type: string;
  readonly durationMs: number | null;
  readonly errorCode: string | null;
  /** The error's redacted message: no schema names, SQL or values. */
  readonly errorMessage: string | null;
}

/** Everything the Backup History view draws, in one answer. */
export interface BackupHistory {
  /** Restore points, oldest first. */
  readonly points: readonly HistoryPoint[];
  /** Failed backup runs, oldest first. */
  readonly failures: readonly HistoryFailure[];
  /** When the server read the repository (the right end of the time axis). */
  readonly at: string;
}

/** Requests the client sends, by method: their params and results. */
/** Whether a backup also reached the repository's mirror. */
export interface MirrorOutcome {
  /** The mirror's location, without secrets. */
  readonly location: string;
  readonly ok: boolean;
  /** Why the mirror was not written, when it was not. */
  readonly error?: string;
}

export interface RequestMap {
  /** Reads the config files of the workspace folders and adds the client's own databases. */
  'strata/workspace': {
    params: { readonly folders: readonly string[]; readonly databases: readonly AddedDatabase[] };
    result: { readonly databases: readonly DatabaseEntry[]; readonly problems: readonly ConfigProblem[]; readonly engines: readonly EngineInfo[] };
  };
  /**
   * Restore points, newest first; with `byTier`, each with its retention tier and reasons.
   * `continuity`: what continuous protection covers, each chain of segments of the databases
   * listed (oldest first within a database); empty when none has segments. `logWindows`: for
   * databases whose restores replay a log archive, what it covers after each base backup.
   */
  'strata/list': {
    params: RepositoryRef & { readonly database?: string; readonly byTier?: boolean };
    result: { readonly backups: readonly BackupView[]; readonly continuity: readonly ContinuityWindow[]; readonly logWindows?: readonly LogWindow[] };
  };
  /**
   * The Backup History of a database (or, without `database`, of the whole repository): restore
   * points with sizes, verification and retention tier, and the failed backup runs of the journal.
   */
  'strata/history': {
    params: RepositoryRef & { readonly database?: string };
    result: BackupHistory;
  };
  'strata/backup': {
    params: RepositoryRef & WorkDone & { readonly database: string; readonly type: BackupType; readonly label?: string };
    /**
     * `mirror` when the repository's config names a mirror: whether the backup reached it too (a
     * failed mirror write leaves the backup complete on the primary; `strata copy` or the next
     * backup catches the mirror up).
     */
    result: { readonly backup: BackupRecord; readonly unchanged: boolean; readonly mirror?: MirrorOutcome };
  };
  'strata/verify': {
    params: RepositoryRef & WorkDone & { readonly id: string; readonly level: 'quick' | 'full' };
    result: VerifyReport;
  };
  /** Whether a restore target exists (so the client can ask before replacing it). */
  'strata/restoreTarget': {
    params: RepositoryRef & { readonly engine: string; readonly target: string };
    result: { readonly exists: boolean; readonly description: string };
  };
  /** Restores by id, or the newest restore point of `database` at or before `asOf` (ISO). */
  'strata/restore': {
    params: RepositoryRef &
      WorkDone & {
        readonly id?: string;
        readonly asOf?: string;
        readonly database?: string;
        readonly to: string;
        readonly tables?: readonly string[];
        readonly force?: boolean;
      };
    result: { readonly backup: BackupRecord; readonly chain: readonly string[]; readonly target: string; readonly bytes: number };
  };
  /** The tables a restore point holds (reads its artifact). */
  'strata/tables': {
    params: RepositoryRef & WorkDone & { readonly id: string };
    result: { readonly tables: readonly string[] };
  };
  /** The retention plan (policy from the config file, else the defaults); applies it unless `dryRun`. */
  'strata/prune': {
    params: RepositoryRef & { readonly database?: string; readonly dryRun: boolean };
    result: { readonly keep: readonly RetentionDecision[]; readonly remove: readonly RetentionDecision[] };
  };
  'strata/delete': {
    params: RepositoryRef & { readonly ids: readonly string[]; readonly withDependents: boolean };
    result: { readonly removed: readonly string[] };
  };
  /** Creates a repository; the passphrase is asked for through `strata/passphrase`. */
  'strata/init': {
    params: RepositoryRef & { readonly encryption: 'compat' | 'modern' | 'none' };
    result: { readonly repository: string; readonly encryption: string };
  };
  /** Checks the passphrase (asking for it); with `forget`, drops the one the server holds first. */
  'strata/unlock': {
    params: RepositoryRef & { readonly forget?: boolean };
    result: { readonly encryption: string };
  };
}

/** Requests the server sends to the client. */
export interface ClientRequestMap {
  /**
   * The passphrase of a repository: from the client's secret storage, or asked of the user.
   * `null` when there is none (the request then fails with PASSPHRASE_MISSING). `purpose` is
   * `init` when a new repository needs one (the client should ask twice).
   */
  'strata/passphrase': {
    params: RepositoryRef & { readonly purpose: 'unlock' | 'init' };
    result: { readonly passphrase: string | null };
  };
}

/** Notifications the server sends: the catalog of a repository changed (refresh views of it). */
export interface NotificationMap {
  'strata/changed': RepositoryRef;
}

export type RequestMethod = keyof RequestMap;
export type ParamsOf<M extends RequestMethod> = RequestMap[M]['params'];
export type ResultOf<M extends RequestMethod> = RequestMap[M]['result'];

/** Every request method, for servers that check they handle them all. */
export const REQUEST_METHODS = [
  'strata/workspace',
  'strata/list',
  'strata/history',
  'strata/backup',
  'strata/verify',
  'strata/restoreTarget',
  'strata/restore',
  'strata/tables',
  'strata/prune',
  'strata/delete',
  'strata/init',
  'strata/unlock',
] as const satisfies readonly RequestMethod[];

export const PASSPHRASE_REQUEST = 'strata/passphrase' satisfies keyof ClientRequestMap;
export const CHANGED_NOTIFICATION = 'strata/changed' satisfies keyof NotificationMap;
