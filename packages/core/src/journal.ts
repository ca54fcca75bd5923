import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { StrataError, redactedMessage } from './errors.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';

/**
 * The journal: one object per record, `journal/<UTC time>-<random>.json`, so writers never
 * rewrite or append to anything (an object store cannot append), and keys sort by time. Records
 * are folded into segments, `journal/<UTC time of the newest>-<random>.ndjson`, under the
 * repository lock (see {@link compactJournal}).
 */
export const JOURNAL_PREFIX = 'journal/';
/** The journal of repositories before format 3, one record per line; read, never written. */
export const LEGACY_JOURNAL_KEY = 'journal.ndjson';
/** Single-record objects that make a compaction worth it. */
const COMPACT_AFTER_RECORDS = 200;

export type OperationKind = 'init' | 'backup' | 'restore' | 'verify' | 'prune' | 'rebuild-catalog' | 'run' | 'export' | 'import' | 'delete' | 'key' | 'copy' | 'mirror' | 'replicate' | 'job' | 'notification' | 'wal-push' | 'wal-receive';
export type OperationStatus = 'RUNNING' | 'COMPLETED' | 'FAILED';

/** One line of the journal. A RUNNING line opens an operation; a COMPLETED or FAILED line closes it. */
export interface JournalRecord {
  readonly at: string;
  /** Unique per operation (random), so two runs never write to the same record. */
  readonly op: string;
  readonly kind: OperationKind;
  readonly status: OperationStatus;
  readonly pid: number;
  readonly host: string;
  readonly database?: string;
  readonly backupId?: string;
  readonly type?: string;
  readonly durationMs?: number;
  readonly rawBytes?: number;
  readonly storedBytes?: number;
  /** storedBytes / rawBytes. */
  readonly compressionRatio?: number;
  /** The error's code and its redacted message ({@link StrataError.redacted}): no schema names, SQL or values. */
  readonly error?: { readonly code: string; readonly message: string };
  /** Anything else worth keeping for the audit trail (never secrets, and no schema names, SQL or values: see {@link redactedMessage}). */
  readonly details?: Record<string, unknown>;
}

/** An operation as read back from the journal: its first and last record folded together. */
export interface JournalOperation {
  readonly op: string;
  readonly kind: OperationKind;
  readonly startedAt: string;
  readonly status: OperationStatus;
  /** True when the operation never closed and its process is gone: it is reported as FAILED. */
  readonly interrupted: boolean;
  readonly last: JournalRecord;
}

/** Outcome fields for closing an operation. */
export type JournalOutcome = Omit<JournalRecord, 'at' | 'op' | 'kind' | 'status' | 'pid' | 'host'>;

/**
 * The audit trail, written once and never changed. Every operation writes RUNNING when it starts and COMPLETED or
 * FAILED when it ends; an operation whose process died shows up as FAILED (interrupted) when read.
 */
export class Journal {
  readonly #storage: Storage;

  constructor(storage: Storage) {
    this.#storage = storage;
  }

  /** Starts an operation and returns a handle that closes it exactly once. */
  async begin(kind: OperationKind, fields: JournalOutcome = {}): Promise<JournalEntryHandle> {
    const op = `${kind}-${Date.now().toString(36)}-${randomBytes(5).toString('hex')}`;
    const started = Date.now();
    await this.#append({ ...fields, at: new Date(started).toISOString(), op, kind, status: 'RUNNING', pid: process.pid, host: hostname() });
    let closed = false;
    const close = async (status: 'COMPLETED' | 'FAILED', outcome: JournalOutcome): Promise<void> => {
      if (closed) return;
      closed = true;
      await this.#append({
        ...fields,
        ...outcome,
        at: new Date().toISOString(),
        op,
        kind,
        status,
        pid: process.pid,
        host: hostname(),
        durationMs: Date.now() - started,
      });
    };
    return {
      op,
      note: async (outcome) => {
        if (closed) return;
        await this.#append({ ...fields, ...outcome, at: new Date().toISOString(), op, kind, status: 'RUNNING', pid: process.pid, host: hostname() });
      },
      complete: (outcome = {}) => close('COMPLETED', outcome),
      completeAfterDone: async (outcome = {}) => {
        try {
          await close('COMPLETED', outcome);
        } catch (err) {
          // The work is done (a backup committed, a restore written): a storage that fails the
          // journal's last write must not turn it into a failure the user would act on.
          process.emitWarning(`${kind}: done, but its journal record could not be written (${redactedMessage(err)}); the journal shows the run as not finished (as interrupted once this process ends)`, { code: 'STRATA_JOURNAL' });
        }
      },
      fail: (err, outcome = {}) =>
        close('FAILED', {
          ...outcome,
          // The journal is plaintext even in an encrypted repository: it keeps the code and the
          // redacted message (no table names, SQL or values); the terminal showed the whole one.
          error: { code: err instanceof StrataError ? err.code : 'INTERNAL', message: redactedMessage(err) },
        }),
    };
  }

  /**
   * Records an operation that failed, in one FAILED record (no RUNNING before it): for operations
   * too frequent to journal when they succeed, such as a `wal-push` per archived file.
   */
  async failed(kind: OperationKind, err: unknown, fields: JournalOutcome = {}): Promise<void> {
    const op = `${kind}-${Date.now().toString(36)}-${randomBytes(5).toString('hex')}`;
    await this.#append({
      ...fields,
      at: new Date().toISOString(),
      op,
      kind,
      status: 'FAILED',
      pid: process.pid,
      host: hostname(),
      error: { code: err instanceof StrataError ? err.code : 'INTERNAL', message: redactedMessage(err) },
    });
  }

  async #append(record: JournalRecord): Promise<void> {
    // A whole object per record: a kill or a full disk leaves the record whole or absent.
    await this.#storage.put(`${JOURNAL_PREFIX}${timeKey(record.at)}-${randomBytes(5).toString('hex')}.json`, Buffer.from(JSON.stringify(record) + '\n'));
  }

  /** Every record, oldest first. Unreadable records and lines (hand edits, torn lines of old journals) are skipped. */
  async records(): Promise<JournalRecord[]> {
    const texts: string[] = [];
    const legacy = await readIfExists(this.#storage, LEGACY_JOURNAL_KEY);
    if (legacy !== undefined) texts.push(legacy);
    for await (const object of this.#storage.list(JOURNAL_PREFIX)) {
      if (!/\.(json|ndjson)$/.test(object.key)) continue;
      const text = await readIfExists(this.#storage, object.key);
      if (text !== undefined) texts.push(text);
    }
    // A compaction killed before it deleted the records it folded leaves them twice, each line as
    // it was written. The line names a record: an operation may write RUNNING more than once (a
    // note of what it is about to do), so op and status alone would drop a note or its opening.
    const seen = new Set<string>();
    const out: JournalRecord[] = [];
    for (const text of texts) {
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        let record: JournalRecord;
        try {
          record = JSON.parse(line) as JournalRecord;
        } catch {
          // A half-written line of an old appended journal; its operation reads as interrupted.
          continue;
        }
        if (typeof record?.op !== 'string' || typeof record.at !== 'string') continue;
        const id = line.trim();
        if (seen.has(id)) continue;
        seen.add(id);
        out.push(record);
      }
    }
    // By time; an operation's opening record before its closing one written in the same millisecond.
    return out.sort((a, b) => a.at.localeCompare(b.at) || Number(a.status !== 'RUNNING') - Number(b.status !== 'RUNNING'));
  }

  /** Operations folded from their records; dead RUNNING operations come back as FAILED (interrupted). */
  async operations(isAlive: (pid: number, host: string) => boolean = defaultIsAlive): Promise<JournalOperation[]> {
    const byOp = new Map<string, { first: JournalRecord; last: JournalRecord }>();
    for (const record of await this.records()) {
      const entry = byOp.get(record.op);
      if (!entry) byOp.set(record.op, { first: record, last: record });
      else if (entry.last.status === 'RUNNING') entry.last = record;
    }
    return [...byOp.values()].map(({ first, last }) => {
      const interrupted = last.status === 'RUNNING' && !isAlive(last.pid, last.host);
      return {
        op: first.op,
        kind: first.kind,
        startedAt: first.at,
        status: interrupted ? 'FAILED' : last.status,
        interrupted,
        last,
      };
    });
  }
}

/**
 * Folds the single-record objects into one segment once there are enough of them, so reading the
 * journal stays a few requests. Call it holding the repository lock (two compactions at once
 * would only fold the same records twice, which readers drop, but would waste the work). The
 * segment is written whole before any record it holds is deleted: a kill in between leaves
 * records twice, never none.
 */
export async function compactJournal(storage: Storage, options: { readonly minimum?: number } = {}): Promise<number> {
  const singles: string[] = [];
  for await (const object of storage.list(JOURNAL_PREFIX)) if (object.key.endsWith('.json')) singles.push(object.key);
  if (singles.length < (options.minimum ?? COMPACT_AFTER_RECORDS)) return 0;
  singles.sort();
  const lines: string[] = [];
  for (const key of singles) {
    const text = await readIfExists(storage, key);
    if (text !== undefined && text.trim()) lines.push(text.trim());
  }
  const newest = /^journal\/(\d{8}T\d{9}Z)-/.exec(singles.at(-1)!)?.[1] ?? timeKey(new Date().toISOString());
  await storage.put(`${JOURNAL_PREFIX}${newest}-${randomBytes(5).toString('hex')}.ndjson`, Buffer.from(lines.join('\n') + '\n'));
  for (const key of singles) await storage.delete(key);
  return singles.length;
}

/** `2026-12-01T22:27:42.634Z` as `20261201T222742634Z`: sorts like the time, safe in any key. */
function timeKey(iso: string): string {
  return iso.replace(/[-:.]/g, '');
}

async function readIfExists(storage: Storage, key: string): Promise<string | undefined> {
  try {
    return Buffer.from(await storage.read(key)).toString('utf8');
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Closes one operation. `complete` and `fail` are no-ops after the first call of either. */
export interface JournalEntryHandle {
  readonly op: string;
  /**
   * Records what the open operation is about to do (another RUNNING record of it), so that the
   * journal keeps it even if the process dies doing it. No-op once closed.
   */
  note(outcome: JournalOutcome): Promise<void>;
  complete(outcome?: JournalOutcome): Promise<void>;
  /** {@link complete} for work already done: a failed write of the record is a warning, not an error. */
  completeAfterDone(outcome?: JournalOutcome): Promise<void>;
  fail(err: unknown, outcome?: JournalOutcome): Promise<void>;
}

/**
 * Whether a process is still running. On this host we can ask the kernel; for another host we
 * cannot know, so its operations count as alive (they show RUNNING rather than a false FAILED).
 */
export function defaultIsAlive(pid: number, host: string): boolean {
  if (host !== hostname()) return true;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
