import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { StrataError, redactedMessage } from './errors.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';

export const JOURNAL_KEY = 'journal.ndjson';

export type OperationKind = 'init' | 'backup' | 'restore' | 'verify' | 'prune' | 'rebuild-catalog' | 'run' | 'export' | 'import' | 'delete' | 'key';
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
 * The append-only audit trail. Every operation writes RUNNING when it starts and COMPLETED or
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
      complete: (outcome = {}) => close('COMPLETED', outcome),
      fail: (err, outcome = {}) =>
        close('FAILED', {
          ...outcome,
          // The journal is plaintext even in an encrypted repository: it keeps the code and the
          // redacted message (no table names, SQL or values); the terminal showed the whole one.
          error: { code: err instanceof StrataError ? err.code : 'INTERNAL', message: redactedMessage(err) },
        }),
    };
  }

  async #append(record: JournalRecord): Promise<void> {
    // Each record also starts with a newline: a record torn by a full disk or a kill then ends at
    // the next record's first byte, instead of swallowing that record into one unreadable line.
    // (Readers skip the empty lines this makes.)
    const line = Buffer.from('\n' + JSON.stringify(record) + '\n');
    if (this.#storage.capabilities.append && this.#storage.append) {
      await this.#storage.append(JOURNAL_KEY, line);
      return;
    }
    // Storages without append get read-modify-write; callers hold the repository lock for those.
    const existing = await this.#storage.read(JOURNAL_KEY).catch((err: unknown) => {
      if (isNotFound(err)) return new Uint8Array();
      throw err;
    });
    await this.#storage.put(JOURNAL_KEY, Buffer.concat([existing, line]));
  }

  /** Every record, oldest first. A torn last line (a crash mid-append) is skipped. */
  async records(): Promise<JournalRecord[]> {
    let bytes: Uint8Array;
    try {
      bytes = await this.#storage.read(JOURNAL_KEY);
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
    const out: JournalRecord[] = [];
    for (const line of Buffer.from(bytes).toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as JournalRecord);
      } catch {
        // A half-written line from a killed process; the operation it belonged to reads as interrupted.
      }
    }
    return out;
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

/** Closes one operation. Both methods are no-ops after the first call. */
export interface JournalEntryHandle {
  readonly op: string;
  complete(outcome?: JournalOutcome): Promise<void>;
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
