/**
 * Progress of a long operation. The SDK emits at most about ten events a second per phase (see
 * {@link throttleProgress}), always the first and the last of each phase, and the last carries
 * the phase's exact totals. Cheap to ignore.
 *
 * Every amount is in bytes:
 * - `snapshot`: the engine copies the database (`doneBytes` of `totalBytes` of the database; an
 *   engine that copies pages counts the pages copied times the page size, ending at the
 *   database's size);
 * - `write`: the backup reads the snapshot and writes the artifact (bytes of the snapshot read);
 * - `read`: a restore or verification reads an artifact (`totalBytes` is the artifact size);
 * - `check`: the validator runs a check on a restored copy;
 * - `commit`: the result is put in place (catalog, target). It moves no data: one event whose
 *   amounts repeat the operation's total, so a renderer shows no rate for it.
 *
 * A copy between repositories (`operation: 'copy'`) reports `read` per artifact and `commit` when
 * the target lists it.
 */
export interface ProgressEvent {
  readonly operation: 'backup' | 'restore' | 'verify' | 'rebuild-catalog' | 'copy';
  readonly phase: 'snapshot' | 'write' | 'read' | 'check' | 'commit';
  readonly doneBytes: number;
  readonly totalBytes?: number;
  /** The backup concerned, once known. */
  readonly backupId?: string;
}

/** Receives progress events. */
export type ProgressListener = (event: ProgressEvent) => void;

/** The phases that move data, whose events have a meaningful rate (bytes per second). */
export const DATA_PHASES: ReadonlySet<ProgressEvent['phase']> = new Set(['snapshot', 'write', 'read']);

/** A throttled progress listener: `emit` as often as you like; `end` when the operation is done. */
export interface ThrottledProgress {
  readonly emit: ProgressListener;
  /** Delivers the held-back last event of the current phase, so it ends at its true totals. */
  end(): void;
}

/**
 * Limits a listener to one event per `intervalMs` (default 100 ms: ten a second) for each phase
 * (operation, phase and backup), and never loses a phase's first or last event: an event that
 * comes too soon is held back, and delivered when the next phase starts or `end()` is called (or
 * at once when it reaches the phase's total), so the last event of every phase carries its exact
 * totals. An event repeating the amounts of the one before is dropped. The engines and the archive writer
 * report every chunk (tens of thousands a second): a listener that redraws or sends a JSON-RPC
 * message per event would cost more than the backup.
 */
export function throttleProgress(listener: ProgressListener | undefined, intervalMs = 100, now: () => number = Date.now): ThrottledProgress {
  if (!listener) return { emit: () => undefined, end: () => undefined };
  let phase: string | undefined;
  let lastAt = 0;
  let held: ProgressEvent | undefined;
  let last: ProgressEvent | undefined;
  const deliver = (event: ProgressEvent): void => {
    held = undefined;
    last = event;
    lastAt = now();
    listener(event);
  };
  return {
    emit: (event) => {
      const key = `${event.operation}\u0000${event.phase}\u0000${event.backupId ?? ''}`;
      if (key !== phase) {
        if (held) deliver(held);
        phase = key;
        deliver(event);
        return;
      }
      // The same amounts again tell nothing new.
      if (event.doneBytes === last?.doneBytes && event.totalBytes === last.totalBytes) return;
      // Reaching the total ends the phase: shown at once, not when the next phase starts.
      const complete = event.totalBytes !== undefined && event.doneBytes >= event.totalBytes;
      if (complete || now() - lastAt >= intervalMs) deliver(event);
      else held = event;
    },
    end: () => {
      if (held) deliver(held);
    },
  };
}
