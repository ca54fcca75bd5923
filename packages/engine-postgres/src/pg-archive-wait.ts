import { StrataError, durationMs, parseDuration } from '@strata/core';
import type pg from 'pg';
import { connect } from './pg-connection.js';
import type { PgTarget } from './pg-connection.js';

/**
 * How long a base backup may wait for the server to archive its last segment while the server's
 * archive_command keeps failing, before it gives up. The server itself waits for ever (and says
 * so only in its own log and on pg_basebackup's stderr), so a broken archive_command would leave
 * `strata backup`, or a daemon's job, hanging with no word. The default leaves the archiver two
 * retry rounds (it retries a failing segment about once a minute).
 */
const DEFAULT_ARCHIVE_TIMEOUT = '150s';
const POLL_MS = 2_000;

/** The archive timeout from STRATA_ARCHIVE_TIMEOUT (a duration such as 90s or 5min), else the default. */
export function archiveTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const text = env['STRATA_ARCHIVE_TIMEOUT']?.trim() || DEFAULT_ARCHIVE_TIMEOUT;
  const ms = durationMs(parseDuration(text, 'STRATA_ARCHIVE_TIMEOUT'));
  if (ms <= 0) throw new StrataError('USAGE', `STRATA_ARCHIVE_TIMEOUT: ${JSON.stringify(text)} must be longer than zero`);
  return ms;
}

interface ArchiveState {
  readonly phase: string | null;
  readonly failed_count: string;
  readonly last_failed_wal: string | null;
  readonly last_failed_time: Date | null;
  readonly last_archived_wal: string | null;
  readonly last_archived_time: Date | null;
}

export interface ArchiveWait {
  /** Why the backup was stopped, once it was. */
  readonly failure: StrataError | undefined;
  stop(): Promise<void>;
}

/**
 * Watches a running pg_basebackup (found by its application_name) for the one state in which it
 * would never end: waiting for WAL archiving while the archiver fails or archives nothing. When that has lasted
 * `timeoutMs`, the server's side of the backup is ended where the role may, `abandon` is called
 * (it stops pg_basebackup) and `failure` says why. An archiver that is only slow (a backlog, a slow store) is waited
 * for: it is still archiving. A connection that cannot be made or breaks ends the watch, never the
 * backup.
 */
export function watchArchiveWait(target: PgTarget, applicationName: string, timeoutMs: number, abandon: () => void): ArchiveWait {
  let failure: StrataError | undefined;
  let client: pg.Client | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  /** When the backup was first seen waiting for an archiver whose last attempt had failed. */
  let stuckSince: number | undefined;
  let failuresBefore: number | undefined;
  /** The server's last archived segment when the wait began: one archived since means it is archiving. */
  let archivedWhenStuck: string | null = null;

  const poll = async (): Promise<void> => {
    if (!client) {
      const made = await connect(target, 'strata backup archive watch');
      if (stopped) {
        await made.end().catch(() => undefined);
        return;
      }
      client = made;
    }
    const row = (
      await client.query<ArchiveState>(
        `SELECT (SELECT p.phase FROM pg_stat_progress_basebackup p JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1 LIMIT 1) AS phase,
                s.failed_count::text AS failed_count, s.last_failed_wal, s.last_failed_time, s.last_archived_wal, s.last_archived_time
           FROM pg_stat_archiver s`,
        [applicationName],
      )
    ).rows[0]!;
    const failures = Number(row.failed_count);
    failuresBefore ??= failures;
    // Failures counted while this backup ran: one left from before says nothing of this wait.
    const failing = failures > failuresBefore;
    // An archive_command the shell cannot run at all (a wrong path: exit 127) makes the archiver
    // exit before it counts a failure, so pg_stat_archiver shows none: an archiver that archives
    // nothing while the backup waits on it is as stuck as one that fails.
    if (row.phase !== 'waiting for wal archiving to finish' || (stuckSince !== undefined && row.last_archived_wal !== archivedWhenStuck)) {
      stuckSince = undefined;
      return;
    }
    if (stuckSince === undefined) {
      stuckSince = Date.now();
      archivedWhenStuck = row.last_archived_wal;
    }
    if (Date.now() - stuckSince < timeoutMs) return;
    const lastArchived = row.last_archived_wal ? `the last segment it archived was ${row.last_archived_wal} at ${row.last_archived_time!.toISOString()}` : 'it has archived nothing since its statistics were reset';
    const why = failing
      ? `because archive_command keeps failing (${failures - failuresBefore} failure(s) while this backup ran, the last on ${row.last_failed_wal} at ${row.last_failed_time!.toISOString()}; ${lastArchived})`
      : `because the server archived nothing in that time and counted no failure: an archive_command the shell cannot run (a wrong path, exit 127) stops the archiver before it counts one (${lastArchived})`;
    failure = new StrataError(
      'IO',
      `backup: the base backup was stopped after waiting ${Math.round(timeoutMs / 1000)} s for the server to archive its last WAL segment, ${why}. ` +
        `A base backup is usable only with that segment archived. The server's log says why archive_command fails; fix it, then run the backup again ` +
        `(STRATA_ARCHIVE_TIMEOUT sets how long to wait). Nothing was recorded`,
    );
    // The server's side of the backup waits on by itself (it does not notice pg_basebackup going),
    // holding a WAL sender slot until the archiver succeeds: end it where this role may.
    await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [applicationName]).catch(() => undefined);
    abandon();
  };

  const schedule = (delayMs = POLL_MS): void => {
    if (stopped || failure) return;
    timer = setTimeout(() => {
      poll().then(() => schedule(), () => {
        // The watch is an aid: the backup goes on (and fails by itself if the server went away).
        stopped = true;
        void client?.end().catch(() => undefined);
      });
    }, delayMs);
  };
  // The first look at once: the archiver's failures are counted from there.
  schedule(0);

  return {
    get failure() {
      return failure;
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await client?.end().catch(() => undefined);
    },
  };
}
