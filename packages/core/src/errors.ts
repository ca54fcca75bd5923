/**
 * Stable error codes. Scripts, the CLI's exit codes and the server's JSON-RPC errors all key on
 * these strings, so a code is never renamed once released; add new ones instead.
 */
export type StrataErrorCode =
  /** Bad arguments or configuration: the caller must change what it asked for. */
  | 'USAGE'
  /**
   * No repository at the location: the folder or bucket is missing, or it was never initialised
   * with `strata init`.
   */
  | 'REPO_NOT_FOUND'
  /**
   * The storage refused the credentials or the permission (S3's AccessDenied,
   * SignatureDoesNotMatch, InvalidAccessKeyId): check the credentials, the profile and the policy.
   */
  | 'ACCESS_DENIED'
  /** The folder already holds a repository (init refuses to overwrite one). */
  | 'REPO_EXISTS'
  /** The repository was written by a newer Strata (format version we do not understand). */
  | 'REPO_VERSION_UNSUPPORTED'
  /** Another live process holds the repository lock. */
  | 'REPO_LOCKED'
  /** The passphrase does not open the repository's keys or an artifact. */
  | 'PASSPHRASE_WRONG'
  /** The repository is encrypted and no passphrase was given. */
  | 'PASSPHRASE_MISSING'
  /**
   * The passphrase opens a key file, but that key file does not hold the data key an operation
   * needs (an artifact encrypted under it, or the repository's current key for a new backup).
   */
  | 'KEY_MISSING'
  /** A database named by the user does not exist (file, server database). */
  | 'DATABASE_NOT_FOUND'
  /** The thing at the given location is not a database of the expected engine. */
  | 'DATABASE_INVALID'
  /** Another connection holds a lock that keeps us from reading or replacing the database. */
  | 'DATABASE_LOCKED'
  /** The database server cannot be reached (host, port, network, server shutting down). */
  | 'CONNECTION_FAILED'
  /** The database server refused the user or password. */
  | 'AUTH_FAILED'
  /** A program Strata needs (pg_dump) is missing or too old. */
  | 'TOOL_MISSING'
  /** No registered engine understands a database locator (URL or path). */
  | 'ENGINE_UNKNOWN'
  /** No backup with that id, or nothing matches the selection. */
  | 'BACKUP_NOT_FOUND'
  /** A table named by the user is not in the backup (or not in the database). */
  | 'TABLE_NOT_FOUND'
  /** An artifact's bytes do not match the catalog or its own manifest. */
  | 'ARTIFACT_CORRUPT'
  /** An artifact is not a Strata artifact, or one of an unsupported format version. */
  | 'ARTIFACT_FOREIGN'
  /** An artifact tries something a well-formed one never does (path escape, link entries, bombs). */
  | 'ARTIFACT_HOSTILE'
  /**
   * The database holds an object the engine cannot capture exactly (a type, a table kind, a
   * feature). The backup stops and names it rather than leave it out silently.
   */
  | 'UNSUPPORTED_OBJECT'
  /**
   * The restore target refused what the restore asked of it (a failing statement, a constraint,
   * a permission). The artifact itself is fine; the message names the object and the target.
   */
  | 'RESTORE_FAILED'
  /** A restore point needs an ancestor that is missing or unreadable. */
  | 'CHAIN_BROKEN'
  /** A restore target exists and the caller did not allow overwriting it. */
  | 'TARGET_EXISTS'
  /** The storage or target ran out of space. */
  | 'NO_SPACE'
  /** A verification found at least one failed check. */
  | 'VERIFY_FAILED'
  /** The operation was cancelled through its AbortSignal. */
  | 'ABORTED'
  /** A scheduled job's hook failed or timed out (a failing `before` hook stops the job). */
  | 'HOOK_FAILED'
  /** A scheduled health check found a problem. */
  | 'UNHEALTHY'
  /**
   * The log archive already holds a different file under the name being archived (a second
   * server archiving under the same database name); nothing was replaced.
   */
  | 'LOG_CONFLICT'
  /** An I/O or driver failure that is not one of the above. */
  | 'IO'
  /** A bug: something that should be impossible happened. Please report it. */
  | 'INTERNAL';

/** Options for {@link StrataError}: the underlying cause and machine-readable details. */
export interface StrataErrorOptions {
  cause?: unknown;
  /** Extra fields for programs (never secrets): e.g. `{ missing: 'app_full_…' }`. */
  details?: Record<string, unknown>;
}

/**
 * A part of a message that the repository's plaintext files (journal, catalog) must not keep: the
 * name of a table, column, index, trigger or other schema object, SQL, a row value, or a database
 * server's own words (which quote all of those). The terminal and `--json` show `text`; the files
 * keep `standIn`, so an encrypted repository does not give its schema away through its audit trail.
 */
export class Withheld {
  constructor(
    readonly text: string,
    readonly standIn: string,
  ) {}
}

/**
 * Schema object names in a message: one (`named('users', 'table')`, kept as `‹table›`) or a list
 * (shown comma-separated, kept as a count: `‹3 tables›`).
 */
export function named(names: string | readonly string[], noun: string): Withheld {
  if (typeof names === 'string') return new Withheld(names, `‹${noun}›`);
  return new Withheld(names.join(', '), `‹${names.length} ${noun}${names.length === 1 ? '' : 's'}›`);
}

/** SQL, a value or any other text from a database in a message, kept as `‹what›`. */
export function withheld(text: string, what: string): Withheld {
  return new Withheld(text, `‹${what}›`);
}

/** Another error's message inside a message: in files, that error's own redacted form. */
export function errorText(err: unknown): Withheld {
  return new Withheld(err instanceof Error ? err.message : String(err), redactedMessage(err));
}

/** A message with parts marked {@link Withheld}: the whole `text`, and the `redacted` form files keep. */
export interface RedactableMessage {
  readonly text: string;
  readonly redacted: string;
}

/** Text for a message or a message's context: plain, or with parts withheld from files. */
export type MessageText = string | RedactableMessage;

/**
 * Builds a message whose {@link Withheld} parts stay out of plaintext files (a part may also be
 * another message built this way):
 *
 * ```ts
 * throw new StrataError('TABLE_NOT_FOUND', redactable`restore: the backup has no table ${named(t, 'table')}`)
 * ```
 */
export function redactable(strings: TemplateStringsArray, ...values: unknown[]): RedactableMessage {
  let text = strings[0]!;
  let redacted = strings[0]!;
  values.forEach((value, i) => {
    const nested = value instanceof Withheld ? { text: value.text, redacted: value.standIn } : isRedactableMessage(value) ? value : { text: String(value), redacted: String(value) };
    text += nested.text + strings[i + 1]!;
    redacted += nested.redacted + strings[i + 1]!;
  });
  return { text, redacted };
}

function isRedactableMessage(value: unknown): value is RedactableMessage {
  return typeof value === 'object' && value !== null && typeof (value as RedactableMessage).text === 'string' && typeof (value as RedactableMessage).redacted === 'string';
}

/**
 * What a plaintext file may keep of an error's message. A StrataError's message is Strata's own
 * words, with schema names marked where it was built; a system error's names a path and an errno.
 * Any other error (a database driver's or library's) quotes the database, so only its code is kept.
 */
export function redactedMessage(err: unknown): string {
  if (err instanceof StrataError) return redactUrlPasswords(err.redacted);
  if (typeof err === 'object' && err !== null && typeof (err as SystemError).syscall === 'string') return redactUrlPasswords((err as Error).message);
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return `‹message withheld${typeof code === 'string' || typeof code === 'number' ? `: ${code}` : ''}›`;
}

/**
 * `text` with the password of every `scheme://user:password@` in it replaced by `***`. Messages
 * name locations with their secrets taken out where they are built; this catches one that a
 * message quoted as the user wrote it (a mirror or a path given as a URL), anywhere in the text.
 */
export function redactUrlPasswords(text: string): string {
  // The password runs to the last '@' before a space or quote: secrets (an AWS secret key, say) hold '/'.
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/[^\s/?#@:'"]*):[^\s'"]*@/gi, '$1:***@');
}

/**
 * The one error type Strata throws. Messages are lowercase "step: problem" and name what failed
 * (a backup id, a path) but never a passphrase or a password-bearing URL.
 *
 * ```ts
 * throw new StrataError('CHAIN_BROKEN', `restore ${id}: parent ${parent} is missing`)
 * ```
 */
export class StrataError extends Error {
  readonly code: StrataErrorCode;
  readonly details: Record<string, unknown>;
  /**
   * The message as the journal and the catalog keep it: without what {@link redactable} marked
   * (schema names, SQL, values). The same as `message` for a plain string message.
   */
  readonly redacted: string;

  constructor(code: StrataErrorCode, message: string | RedactableMessage, options: StrataErrorOptions = {}) {
    super(typeof message === 'string' ? message : message.text, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StrataError';
    this.code = code;
    this.details = options.details ?? {};
    this.redacted = typeof message === 'string' ? message : message.redacted;
  }
}

/** True when `err` is a {@link StrataError}, optionally with the given code. */
export function isStrataError(err: unknown, code?: StrataErrorCode): err is StrataError {
  return err instanceof StrataError && (code === undefined || err.code === code);
}

/**
 * An artifact of a format or chunking newer than this Strata reads (`details.newerFormat`): the
 * answer is to upgrade, not a repair, and verify records nothing against such a backup.
 */
export function writtenByNewerStrata(err: unknown): err is StrataError {
  return isStrataError(err, 'ARTIFACT_FOREIGN') && err.details['newerFormat'] !== undefined;
}

/** Node's system error shape (`ENOENT`, `ENOSPC`, ...). */
export interface SystemError extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

/** True when `err` is a Node system error with the given `code`. */
export function hasErrno(err: unknown, code: string): err is SystemError {
  return typeof err === 'object' && err !== null && (err as SystemError).code === code;
}

/**
 * Wraps any failure into a StrataError with context, keeping StrataErrors as they are (only
 * prefixing the step) so the original code survives. Out-of-space and abort are recognised here,
 * once, so every layer reports them the same way.
 */
export function wrapError(step: MessageText, err: unknown): StrataError {
  if (err instanceof StrataError) {
    if (err.message.startsWith(typeof step === 'string' ? step : step.text)) return err;
    const wrapped = new StrataError(err.code, redactable`${step}: ${errorText(err)}`, { cause: err.cause, details: err.details });
    return wrapped;
  }
  if (hasErrno(err, 'ENOSPC') || hasErrno(err, 'EDQUOT')) {
    return new StrataError('NO_SPACE', redactable`${step}: no space left on device`, { cause: err });
  }
  if (isAbortError(err)) return new StrataError('ABORTED', redactable`${step}: cancelled`, { cause: err });
  return new StrataError('IO', redactable`${step}: ${errorText(err)}`, { cause: err });
}

/** True for the errors an AbortSignal produces (DOMException AbortError or our own ABORTED). */
export function isAbortError(err: unknown): boolean {
  if (err instanceof StrataError) return err.code === 'ABORTED';
  return typeof err === 'object' && err !== null && ((err as Error).name === 'AbortError' || (err as SystemError).code === 'ABORT_ERR');
}

/** Throws ABORTED if the signal has fired. Call between steps of long operations. */
export function throwIfAborted(signal: AbortSignal | undefined, step: string): void {
  if (signal?.aborted) throw new StrataError('ABORTED', `${step}: cancelled`, { cause: signal.reason });
}

/**
 * Exit statuses, documented in `strata --help` and the README. Scripts rely on them, so each
 * number keeps its meaning forever (restic keeps its codes distinct for the same reason).
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, verifyFailed: 3, passphrase: 4, locked: 5, noRepository: 6, accessDenied: 7 } as const;

/** The one place where an error becomes an exit status. */
export function exitCodeFor(code: StrataErrorCode): number {
  switch (code) {
    case 'USAGE':
      return EXIT.usage;
    case 'VERIFY_FAILED':
      return EXIT.verifyFailed;
    case 'PASSPHRASE_WRONG':
    case 'PASSPHRASE_MISSING':
    case 'KEY_MISSING':
      return EXIT.passphrase;
    case 'REPO_LOCKED':
      return EXIT.locked;
    case 'REPO_NOT_FOUND':
      return EXIT.noRepository;
    case 'ACCESS_DENIED':
      return EXIT.accessDenied;
    default:
      return EXIT.failed;
  }
}

/** Waits `ms`, or less when `signal` aborts first (never rejects): the pause of loops that stop on a signal. */
export function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
