import { contentFault, describeContentFault } from '@strata/sdk';
import type { BackupRecord } from '@strata/sdk';

/** Said as the engines say theirs: on stderr, and in the command's --json output. */
function warn(code: string, message: string): void {
  process.emitWarning(message, { code });
}

/**
 * Says on stderr (in every mode: it is about the data coming back) when the restore point named
 * by its id has a link whose verification found its restored data wrong, or, for `latest` and
 * `--as-of`, which newer restore points were passed over for one (see contentFault).
 */
export function warnOfFailedVerifications(chosen: BackupRecord, backups: readonly BackupRecord[], how: 'named' | { readonly asOf: Date | undefined }): void {
  if (how === 'named') {
    const own = contentFault(chosen, backups);
    if (own) warn('STRATA_VERIFICATION_FAILED', `restore: ${chosen.id} ${describeContentFault(chosen, own)}; restoring it as named (strata verify ${chosen.id} says what failed)`);
    return;
  }
  const limit = how.asOf?.toISOString();
  const passedOver = backups.filter((b) => b.database === chosen.database && b.type !== 'schema-only' && b.createdAt > chosen.createdAt && (limit === undefined || b.createdAt <= limit));
  for (const b of passedOver) {
    const fault = contentFault(b, backups);
    if (!fault) continue;
    warn('STRATA_PASSED_OVER', `restore: passed over ${b.id} (taken ${b.createdAt}): ${describeContentFault(b, fault)}; to restore it anyway, name it by its id`);
  }
}
