/**
 * Progress of a long operation. Emitted often (many times a second at most) and cheap to ignore.
 *
 * - `snapshot`: the engine copies the database (`doneBytes` of `totalBytes` of the database);
 * - `write`: the backup reads the snapshot and writes the artifact;
 * - `read`: a restore or verification reads an artifact (`totalBytes` is the artifact size);
 * - `check`: the validator runs a check on a restored copy;
 * - `commit`: the work is written and about to be (or was just) recorded in the catalog.
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
