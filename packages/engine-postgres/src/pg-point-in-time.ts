import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { StrataError, shellQuote } from '@strata/core';
import type { BackupRecord, LogFile } from '@strata/core';
import { connect, literal, parseTarget } from './pg-connection.js';
import { pgProgram } from './pg-physical-engine.js';
import type { PhysicalPosition } from './pg-physical-engine.js';
import { parseLsn, parseWalName, segmentOf, walFileName } from './pg-wal.js';
import { followTimeline, historiesOf, timelineAt } from './pg-wal-rules.js';
import type { TimelineChoice } from './pg-wal-rules.js';

/**
 * Recovery of a physical backup to a moment: which base backup, which archived segments it needs,
 * the recovery settings PostgreSQL reads, and a temporary server that proves the recovery.
 */

/** Where a recovery stops. */
export type RecoveryGoal =
  /**
   * `micros`: the microseconds within `time`'s millisecond (0–999) that the target was given with.
   * Commit times are in microseconds: a target cut to the millisecond stops before the commits
   * of its last fraction of a millisecond.
   */
  | { readonly kind: 'time'; readonly time: Date; readonly micros?: number }
  | { readonly kind: 'lsn'; readonly lsn: string }
  | { readonly kind: 'xid'; readonly xid: string }
  | { readonly kind: 'name'; readonly name: string }
  /** As soon as the base backup is consistent. */
  | { readonly kind: 'immediate' }
  /** The end of the archived log. */
  | { readonly kind: 'latest' };

const SEGMENT_BYTES_DEFAULT = 16 * 1024 * 1024;

function segmentBytesOf(record: BackupRecord): number {
  return Number((record.logRange?.start as Partial<PhysicalPosition> | undefined)?.segmentBytes ?? SEGMENT_BYTES_DEFAULT);
}

function position(record: BackupRecord, which: 'start' | 'end'): PhysicalPosition {
  const range = record.logRange;
  if (!range) throw new StrataError('USAGE', `restore: ${record.id} is not a physical backup (it records no WAL range)`);
  return range[which] as unknown as PhysicalPosition;
}

/** A time goal as ISO 8601, to the microsecond when it was given so. */
export function goalTimeText(goal: { readonly time: Date; readonly micros?: number }): string {
  const iso = goal.time.toISOString();
  return goal.micros ? iso.replace(/Z$/, `${String(goal.micros).padStart(3, '0')}Z`) : iso;
}

/**
 * Checks that a recovery from `base` can stop at `goal`: a recovery cannot stop before its base
 * backup's end, so one from a base that ended after the target would give that end's state (a
 * time target's next commit lies past it already; PostgreSQL says nothing) as the target's.
 */
export function refuseBaseAfterGoal(base: BackupRecord, goal: RecoveryGoal): void {
  const range = base.logRange;
  if (!range) return;
  const after =
    goal.kind === 'time'
      ? Date.parse(range.endedAt) > goal.time.getTime()
        ? `ended at ${range.endedAt}, after the target ${goalTimeText(goal)}`
        : undefined
      : goal.kind === 'lsn' && parseLsn(position(base, 'end').lsn) > parseLsn(goal.lsn)
        ? `ended at LSN ${position(base, 'end').lsn}, after the target ${goal.lsn}`
        : undefined;
  if (after) {
    throw new StrataError(
      'USAGE',
      `restore: ${base.id} ${after}; a recovery cannot stop before its base backup's end, so it would give that later state for the target's. Name a base backup that ended before the target, or give \`latest\` (the newest one that did)`,
    );
  }
}

/** Words for a goal, for messages and reports. */
export function describeGoal(goal: RecoveryGoal): string {
  switch (goal.kind) {
    case 'time':
      return `time ${goalTimeText(goal)}`;
    case 'lsn':
      return `LSN ${goal.lsn}`;
    case 'xid':
      return `transaction ${goal.xid}`;
    case 'name':
      return `restore point ${JSON.stringify(goal.name)}`;
    case 'immediate':
      return 'the end of the base backup (--immediate)';
    case 'latest':
      return 'the end of the archived WAL';
  }
}

/**
 * The base backup a recovery to `goal` starts from: the newest one that ended before the target.
 * For a transaction id or a restore point name, whose place in the log only a replay finds, the
 * oldest one (slower, but never after the target).
 */
export function chooseBase(backups: readonly BackupRecord[], goal: RecoveryGoal): BackupRecord {
  const physical = backups.filter((b) => b.logRange).sort((a, b) => (a.logRange!.endedAt < b.logRange!.endedAt ? -1 : 1));
  if (physical.length === 0) throw new StrataError('BACKUP_NOT_FOUND', 'restore: this database has no physical base backup yet; take one with `strata backup NAME`');
  let chosen: BackupRecord | undefined;
  switch (goal.kind) {
    case 'time':
      chosen = physical.filter((b) => Date.parse(b.logRange!.endedAt) <= goal.time.getTime()).at(-1);
      if (!chosen) throw new StrataError('BACKUP_NOT_FOUND', `restore: no base backup ended before ${goalTimeText(goal)}; the oldest ended at ${physical[0]!.logRange!.endedAt}`);
      return chosen;
    case 'lsn': {
      const target = parseLsn(goal.lsn);
      chosen = physical.filter((b) => parseLsn(position(b, 'end').lsn) <= target).at(-1);
      if (!chosen) throw new StrataError('BACKUP_NOT_FOUND', `restore: no base backup ended before LSN ${goal.lsn}; the oldest ended at ${position(physical[0]!, 'end').lsn}`);
      return chosen;
    }
    case 'xid':
    case 'name':
      return physical[0]!;
    case 'immediate':
    case 'latest':
      return physical.at(-1)!;
  }
}

/** What a recovery needs from the log archive, and what of it is missing. */
export interface WalPlan {
  /** The archived files the recovery will read, in order: timeline histories, then segments (the last may hold more than it needs). */
  readonly needed: readonly LogFile[];
  /**
   * The archived segment after the last needed one, when the goal is a target: to stop, the server
   * usually reads the record after the target, often at this segment's start. Worth spooling with
   * the others, but not needed: the target may lie in the segment before, so a damaged copy of it
   * must not stop a restore that does not read it.
   */
  readonly afterTarget?: LogFile;
  /** Names of segments the recovery would need and the archive lacks. */
  readonly missing: readonly string[];
  /** The timeline the recovery follows to its target (recovery_target_timeline). */
  readonly timeline: number;
  /**
   * The names of the two segments after the last one needed, on that timeline: what the server
   * reads ahead for once it holds the record it stops at (whether or not they are archived).
   */
  readonly readAhead: readonly string[];
}

/**
 * The files a recovery from `base` reads along the timeline `choice` names (the newest descending
 * from the base's by default, as after a failover, or the base's own: see followTimeline), each
 * segment from the timeline PostgreSQL reads it from: to the segment of an LSN, to the first
 * segment archived at or after a time (a segment stored before the target holds nothing after
 * it), to the base's end for --immediate, else to the newest segment along the way.
 */
export async function planWal(base: BackupRecord, goal: RecoveryGoal, files: readonly LogFile[], read: (file: LogFile) => Promise<Uint8Array>, choice: TimelineChoice = 'latest'): Promise<WalPlan> {
  const segmentBytes = segmentBytesOf(base);
  const from = segmentOf(position(base, 'start').lsn, segmentBytes);
  const baseEnd = segmentOf(position(base, 'end').lsn, segmentBytes);
  const followed = await followTimeline(base.logRange!, files, read, choice);
  // The segments on the way (a diverged timeline's segments after its switch are not).
  const onPath: { file: LogFile; segno: bigint }[] = [];
  for (const file of files) {
    const w = parseWalName(file.name, segmentBytes);
    if (w && w.segno >= from && timelineAt(followed.branches, w.segno) === w.timeline) onPath.push({ file, segno: w.segno });
  }
  onPath.sort((x, y) => (x.segno < y.segno ? -1 : x.segno > y.segno ? 1 : 0));
  const last = onPath.at(-1)?.segno;
  let to: bigint | undefined;
  if (goal.kind === 'lsn') to = segmentOf(goal.lsn, segmentBytes);
  else if (goal.kind === 'immediate') to = baseEnd;
  else if (goal.kind === 'time') {
    to = onPath.find(({ file }) => file.storedAt !== undefined && Date.parse(file.storedAt) >= goal.time.getTime())?.segno ?? last;
  } else to = last;
  if (to === undefined || to < baseEnd) to = baseEnd;
  const byName = new Map(files.map((f) => [f.name, f]));
  const needed: LogFile[] = historiesOf(followed.branches, files);
  const missing: string[] = [];
  const nameOf = (s: bigint): string => walFileName(timelineAt(followed.branches, s), s, segmentBytes);
  for (let s = from; s <= to; s++) {
    const name = nameOf(s);
    const file = byName.get(name);
    if (file) needed.push(file);
    else missing.push(name);
  }
  // To stop, the server reads the record after its target, often at the start of the next segment
  // (the first commit after a time, the record after an LSN): when archived, it is spooled with
  // the others if it reads cleanly, so the stop needs no fetch (afterTarget). Neither missing when
  // it is not archived nor fatal when damaged: the target may lie in the segment before.
  const afterTarget = goal.kind !== 'latest' ? byName.get(nameOf(to + 1n)) : undefined;
  const end = afterTarget ? to + 1n : to;
  return { needed, ...(afterTarget ? { afterTarget } : {}), missing, timeline: followed.timeline, readAhead: [nameOf(end + 1n), nameOf(end + 2n)] };
}

/** What a recovery does at its target. */
export type TargetAction = 'pause' | 'promote' | 'shutdown';

/** Whether a restored cluster archives its WAL as the backed-up one did (`preserve`) or not at all. */
export type ArchiveMode = 'off' | 'preserve';

/**
 * The recovery settings for postgresql.auto.conf. With archiving `off`, a copy started beside the
 * original does not push its new timeline into the original's archive under the same name, where
 * every later recovery to the latest timeline would follow the copy's history instead.
 */
export function recoverySettings(goal: RecoveryGoal, restoreCommand: string, action: TargetAction, timeline: number, archiving: ArchiveMode = 'off'): Record<string, string> {
  // By number, the timeline planWal checked the segments of (never one archived after the restore).
  const settings: Record<string, string> = { restore_command: restoreCommand, recovery_target_timeline: String(timeline) };
  if (archiving === 'off') settings['archive_mode'] = 'off';
  switch (goal.kind) {
    case 'time':
      // PostgreSQL's timestamptz input, not ISO 8601's T and Z.
      settings['recovery_target_time'] = goalTimeText(goal).replace('T', ' ').replace('Z', '+00');
      break;
    case 'lsn':
      settings['recovery_target_lsn'] = goal.lsn;
      break;
    case 'xid':
      settings['recovery_target_xid'] = goal.xid;
      break;
    case 'name':
      settings['recovery_target_name'] = goal.name;
      break;
    case 'immediate':
      settings['recovery_target'] = 'immediate';
      break;
    case 'latest':
      break;
  }
  if (goal.kind !== 'latest') {
    settings['recovery_target_inclusive'] = 'on';
    settings['recovery_target_action'] = action;
  }
  return settings;
}

/**
 * Makes a restored data directory recover: the settings appended to postgresql.auto.conf (read
 * last, so they win over the copied postgresql.conf), recovery.signal, and no postmaster.pid.
 */
export async function configureRecovery(dataDir: string, settings: Record<string, string>): Promise<void> {
  const lines = ['', `# Added by strata restore (${new Date().toISOString()}): recovery of a physical backup.`, ...Object.entries(settings).map(([k, v]) => `${k} = ${literal(v)}`), ''];
  await fs.appendFile(path.join(dataDir, 'postgresql.auto.conf'), lines.join('\n'), { mode: 0o600 });
  await fs.writeFile(path.join(dataDir, 'recovery.signal'), '', { mode: 0o600 });
  await fs.rm(path.join(dataDir, 'postmaster.pid'), { force: true });
}

/** What a temporary server reached. */
export interface RecoveryReport {
  /** `paused` at the target, `promoted` after it, or `ended` (shut down at the target). */
  readonly state: 'paused' | 'promoted' | 'ended';
  /** The last replayed position, and the time of the last replayed commit (null when none was replayed). */
  readonly lsn: string | null;
  readonly lastCommit: string | null;
  readonly port: number;
  /** A URL of one of the temporary server's databases (through its socket), while it runs. */
  readonly url: (database: string) => string;
  /**
   * The recovered cluster's enabled logical replication subscriptions (`database.subscription`),
   * which connect to their publishers once the directory is started as a primary by anyone but
   * Strata; empty when it has none or once it has shut down.
   */
  readonly subscriptions: readonly string[];
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/**
 * The settings that a hot standby must have at least as high as the primary had: PostgreSQL
 * aborts a recovery with lower ones ("recovery aborted because of insufficient parameter
 * settings"). pg_control records the primary's, under these names.
 */
const RECOVERY_FLOORS: ReadonlyArray<readonly [label: string, setting: string]> = [
  ['max_connections setting', 'max_connections'],
  ['max_worker_processes setting', 'max_worker_processes'],
  ['max_wal_senders setting', 'max_wal_senders'],
  ['max_prepared_xacts setting', 'max_prepared_transactions'],
  ['max_locks_per_xact setting', 'max_locks_per_transaction'],
];

/** A temporary server of Strata's own on a restored data directory (see privateServer). */
export interface PrivateServer {
  readonly port: number;
  /** The folder of its Unix socket (and of the files below), the only way in. */
  readonly socketDir: string;
  /** pg_ctl's -o: how it starts. */
  readonly options: string;
  /** A URL of one of its databases, through the socket. */
  url(database: string): string;
}

/**
 * How Strata's own temporary servers (verify's scratch copy, `restore --start`, `--tables`) start
 * on a restored data directory, whatever the backed-up cluster's configuration was:
 *
 * - Reached only through a Unix socket in a new folder only this user can enter, with its own
 *   pg_hba.conf trusting that socket: the source's pg_hba.conf may demand passwords Strata does not
 *   have, or be missing altogether.
 * - The source's postgresql.conf when the data directory has one; an empty one when it has not
 *   (Debian and Ubuntu keep it, pg_hba.conf and pg_ident.conf in /etc/postgresql/..., outside the
 *   data directory, so a base backup never holds them).
 * - max_connections, max_prepared_transactions and the other settings recovery needs at least as
 *   high as the primary's, raised to the values in the restored pg_control where the data
 *   directory's configuration asks for less: a configuration that is not there (or was given on
 *   the primary's command line) leaves PostgreSQL's defaults, often lower. A value the primary
 *   raised after the backup reaches the WAL only; the server then pauses short of its target, and
 *   proveRecovery says so rather than reporting the pause as the target.
 * - Never archiving (the copy must not write into the archive it reads), and never starting the
 *   apply workers of logical replication subscriptions (the copy must not consume the slots of
 *   the real subscribers), nor the source's recovery_end_command and archive_cleanup_command,
 *   nor its job schedulers (see JOB_SCHEDULERS).
 */
export async function privateServer(dataDir: string, major: number, prefix: string): Promise<PrivateServer> {
  const port = await freePort();
  const socketDir = await socketFolder(prefix, port);
  await fs.writeFile(path.join(socketDir, 'pg_hba.conf'), 'local all all trust\n', { mode: 0o600 });
  await fs.writeFile(path.join(socketDir, 'pg_ident.conf'), '', { mode: 0o600 });
  const settings: [string, string][] = [
    ['port', String(port)],
    ['listen_addresses', ''],
    ['unix_socket_directories', socketDir],
    ['hba_file', path.join(socketDir, 'pg_hba.conf')],
    ['ident_file', path.join(socketDir, 'pg_ident.conf')],
    ['archive_mode', 'off'],
    // A copy that ends recovery as a primary would start the apply workers of its logical
    // replication subscriptions, enabled as on the primary: they connect to the publishers and
    // take the subscriptions' slots, acknowledging changes the real subscriber then never gets
    // (test/pg-physical-isolation.test.ts saw ten rows lost so).
    ['max_logical_replication_workers', '0'],
    // The source's own commands for the end of a recovery and for a standby's archive cleanup act
    // on its archive or machine (removing files, notifying someone); a copy runs neither.
    ['recovery_end_command', ''],
    ['archive_cleanup_command', ''],
  ];
  const hasConfig = await fs.access(path.join(dataDir, 'postgresql.conf')).then(() => true, () => false);
  if (!hasConfig) {
    await fs.writeFile(path.join(socketDir, 'postgresql.conf'), '', { mode: 0o600 });
    settings.push(['config_file', path.join(socketDir, 'postgresql.conf')]);
  }
  const configFile = settings.filter(([name]) => name === 'config_file').flatMap(([name, value]) => ['-c', `${name}=${value}`]);
  const shown = (setting: string): string | undefined => {
    const r = spawnSync(pgProgram('postgres', major), ['-D', dataDir, ...configFile, '-C', setting], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout.trim() : undefined;
  };
  const preload = withoutSchedulers(shown('shared_preload_libraries') ?? '');
  if (preload !== undefined) settings.push(['shared_preload_libraries', preload]);
  const control = spawnSync(pgProgram('pg_controldata', major), ['-D', dataDir], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  // Without pg_controldata (or with a pg_control it doubts) the server starts on the configuration
  // alone, as it did before; a recovery that then needs more says so (see proveRecovery).
  if (control.status === 0 && !/WARNING/.test(control.stdout + control.stderr)) {
    for (const [label, setting] of RECOVERY_FLOORS) {
      const primary = Number(new RegExp(`^${label}:\\s+(\\d+)$`, 'm').exec(control.stdout)?.[1] ?? Number.NaN);
      // Only ever raised: the data directory's own configuration may already ask for more (a
      // value the primary set after this backup, which the WAL replayed here carries too).
      const own = Number(shown(setting) ?? Number.NaN);
      if (Number.isFinite(primary) && !(own >= primary)) settings.push([setting, String(primary)]);
    }
  }
  const user = encodeURIComponent(process.env['PGUSER'] ?? 'postgres');
  return {
    port,
    socketDir,
    // pg_ctl hands -o to a shell: every value is quoted, whatever the temporary folder's name holds.
    options: settings.map(([name, value]) => `-c ${shellQuote(`${name}=${value}`)}`).join(' '),
    url: (database) => `postgres://${user}@localhost:${port}/${encodeURIComponent(database)}?host=${encodeURIComponent(socketDir)}`,
  };
}

/**
 * Libraries whose only work is running the source's scheduled jobs in background workers, which
 * start once a server ends recovery as a primary (verify's copy, `--target-action promote`, the
 * scratch cluster of `--tables`). Their jobs would run in the copy on this machine: a cleanup's
 * DELETE changing the rows `--tables` is about to copy out, a COPY ... TO PROGRAM or a dblink call
 * acting on the world as if from the source. Left out of the copy's shared_preload_libraries, they
 * start nothing; their tables stay readable.
 */
const JOB_SCHEDULERS = new Set(['pg_cron', 'pg_partman_bgw']);

/** `shared_preload_libraries` without {@link JOB_SCHEDULERS}; undefined when it names none. */
function withoutSchedulers(libraries: string): string | undefined {
  const names = libraries.split(',').map((name) => name.trim()).filter((name) => name !== '');
  // A name may be quoted; a library is named by its file's base name, with or without a folder and `.so`.
  const bare = (name: string): string => path.basename(name.replace(/^"(.*)"$/, '$1')).replace(/\.so$/, '');
  const kept = names.filter((name) => !JOB_SCHEDULERS.has(bare(name)));
  return kept.length === names.length ? undefined : kept.join(',');
}

/** A Unix socket's whole path may not pass 107 bytes: a long temporary folder gives way to /tmp. */
async function socketFolder(prefix: string, port: number): Promise<string> {
  const { tmpdir } = await import('node:os');
  const fits = (dir: string): boolean => Buffer.byteLength(path.join(dir, `${prefix}XXXXXX`, `.s.PGSQL.${port}`)) <= 107;
  return fs.mkdtemp(path.join(fits(tmpdir()) ? tmpdir() : '/tmp', prefix));
}

function majorOf(dataDir: string): number {
  return Number(readFileSync(path.join(dataDir, 'PG_VERSION'), 'utf8').trim());
}

/**
 * Starts PostgreSQL on a recovering data directory (see privateServer: its own socket, archiving
 * off, so the copy never writes into the archive it reads), waits until recovery reached its target (paused
 * there, or promoted), reports where it stands, and stops it. The server log is in the data
 * directory (strata-recovery.log) and quoted in errors.
 */
export async function proveRecovery(dataDir: string, options: { signal?: AbortSignal; timeoutMs?: number; keepRunning?: boolean } = {}): Promise<RecoveryReport & { stop?: () => Promise<void> }> {
  if (process.getuid?.() === 0) throw new StrataError('USAGE', 'restore (--start, --tables): PostgreSQL refuses to run as root; run strata as the user that owns the data directory (e.g. postgres)');
  const major = majorOf(dataDir);
  const pgCtl = pgProgram('pg_ctl', major);
  const server = await privateServer(dataDir, major, 'strata-pg-');
  const { port, socketDir } = server;
  const log = path.join(dataDir, 'strata-recovery.log');
  const serverOptions = `${server.options} -c hot_standby=on`;
  const run = (args: string[]): { status: number | null; out: string } => {
    const r = spawnSync(pgCtl, args, { encoding: 'utf8' });
    if (r.error) throw new StrataError('TOOL_MISSING', `restore, on a temporary server: cannot run ${pgCtl}: ${r.error.message} (set STRATA_PG_BINDIR to the PostgreSQL ${major} programs)`);
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };
  const tail = async (): Promise<string> => (await fs.readFile(log, 'utf8').catch(() => '')).split('\n').slice(-15).join('\n');
  const stopServer = async (): Promise<void> => {
    run(['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '600']);
    await fs.rm(socketDir, { recursive: true, force: true });
  };
  let keep = false;
  const started = run(['start', '-D', dataDir, '-l', log, '-w', '-t', '600', '-o', serverOptions]);
  try {
    if (started.status !== 0) throw new StrataError('RESTORE_FAILED', `restore, on a temporary server: PostgreSQL did not start on the recovered data directory:\n${await tail()}`);
    const target = parseTarget(server.url('postgres'));
    const deadline = Date.now() + (options.timeoutMs ?? 30 * 60_000);
    for (;;) {
      if (options.signal?.aborted) throw new StrataError('ABORTED', 'restore: cancelled while the temporary server recovered');
      const client = await connect(target, 'strata recovery check').catch(() => undefined);
      if (client) {
        try {
          const row = (
            await client.query<{ recovering: boolean; paused: string | null; lsn: string | null; last: Date | null }>(
              `SELECT pg_is_in_recovery() AS recovering,
                      CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS paused,
                      (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn,
                      pg_last_xact_replay_timestamp() AS last`,
            )
          ).rows[0]!;
          // A server whose settings are below the primary's also pauses (PostgreSQL 14 and later),
          // short of its target: only the pause at the target is one.
          const pausedShort = row.paused === 'paused' && /insufficient parameter settings/.test(await fs.readFile(log, 'utf8').catch(() => ''));
          if (pausedShort) throw new StrataError('RESTORE_FAILED', `restore, on a temporary server: recovery paused short of its target because a setting is lower than on the primary (set it in the data directory's postgresql.conf):\n${await tail()}`);
          if (!row.recovering || (row.paused === 'paused' && /pausing at the end of recovery/.test(await fs.readFile(log, 'utf8').catch(() => '')))) {
            const subscriptions = (
              await client
                .query<{ name: string }>("SELECT d.datname || '.' || s.subname AS name FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE s.subenabled ORDER BY 1")
                .catch(() => ({ rows: [] as { name: string }[] }))
            ).rows.map((r) => r.name);
            const reached: RecoveryReport = { state: row.recovering ? 'paused' : 'promoted', lsn: row.lsn, lastCommit: row.last ? row.last.toISOString() : null, port, url: server.url, subscriptions };
            if (!options.keepRunning) return reached;
            // The caller uses the server (a table as of a moment), and stops it with stop().
            keep = true;
            return { ...reached, stop: stopServer };
          }
        } finally {
          await client.end().catch(() => undefined);
        }
      } else if (!existsPid(dataDir)) {
        const text = await tail();
        if (/shutting down|database system is shut down/.test(text) && !/FATAL/.test(text)) return { state: 'ended', lsn: null, lastCommit: null, port, url: server.url, subscriptions: [] };
        throw new StrataError('RESTORE_FAILED', `restore, on a temporary server: recovery stopped before reaching its target:\n${text}`);
      }
      if (Date.now() > deadline) throw new StrataError('RESTORE_FAILED', `restore, on a temporary server: recovery did not reach its target in time:\n${await tail()}`);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  } finally {
    if (!keep) await stopServer();
  }
}

function existsPid(dataDir: string): boolean {
  try {
    readFileSync(path.join(dataDir, 'postmaster.pid'));
    return true;
  } catch {
    return false;
  }
}

/**
 * After a temporary server (which never archives) promoted a copy that is to archive as the
 * original did (`--archive-mode preserve`): the new timeline's history file (the newest) is marked ready for
 * the archiver, which the copy runs once started. PostgreSQL marks it only when it writes it with
 * archiving on; unmarked, it would never be archived, and a recovery to a moment of the new
 * timeline would follow the old one. Segments are left alone: the last one is still being
 * written, and PostgreSQL marks each when it completes.
 */
export async function markHistoryForArchive(dataDir: string): Promise<string[]> {
  const wal = path.join(dataDir, 'pg_wal');
  const status = path.join(wal, 'archive_status');
  const marked: string[] = [];
  // The newest timeline's only: the promotion wrote it; older ones came from the archive.
  const newest = (await fs.readdir(wal).catch(() => [] as string[])).filter((name) => /^[0-9A-F]{8}\.history$/.test(name)).sort().at(-1);
  for (const name of newest ? [newest] : []) {
    const known = await Promise.all(['.ready', '.done'].map((suffix) => fs.access(path.join(status, name + suffix)).then(() => true, () => false)));
    if (known.some(Boolean)) continue;
    await fs.mkdir(status, { recursive: true });
    await fs.writeFile(path.join(status, `${name}.ready`), '');
    marked.push(name);
  }
  return marked;
}

/**
 * Stops a server left running on a data directory under `folder` (`folder/pgdata`, or the folder
 * itself) by a strata process that was killed while it used it: immediately, since its files go
 * next. Nothing when none runs there.
 */
export async function stopLeftoverServer(folder: string): Promise<void> {
  for (const dataDir of [path.join(folder, 'pgdata'), folder]) {
    if (!existsPid(dataDir)) continue;
    const pgCtl = pgProgram('pg_ctl', majorOf(dataDir));
    spawnSync(pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '60'], { encoding: 'utf8' });
  }
}
