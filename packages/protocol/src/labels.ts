/**
 * The words for a restore point's type, shared by `strata list` and the VS Code tree so that both
 * say the same: free of any import, like continuity.ts, so the extension's bundle takes it as it is.
 */

/** What a client needs of a restore point to name its type (a `BackupRecord` of the SDK). */
export interface TypedRestorePoint {
  readonly type: string;
  /** How an incremental or differential stored its changes, when its engine said (`chunk reuse`). */
  readonly incrementalMethod?: string;
}

/** `full`, `incremental`, or with the way it stored its changes: `incremental (chunk reuse)`. */
export function describeBackupType(point: TypedRestorePoint): string {
  return point.incrementalMethod ? `${point.type} (${point.incrementalMethod})` : point.type;
}
