import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { PostgresEngine, StrataError, basesOnTimeline, contentFault, describeContentFault, makeSideFolder, sweepSideFolders, chooseBase, isStrataError, redactedMessage, clusterUrl, configureRecovery, dataDirTablespaces, describeGoal, goalTimeText, markHistoryForArchive, refuseBaseAfterGoal, stopLeftoverServer, initRepository, isPostgresUrl, openRepository, ownEntry, parseTarget, planWal, proveRecovery, recoverySettings, removeRestoredCluster, shellCommand, scanReplay, stopsWithin, tablespacesInTheWay, validateDatabaseName, walFileCheck } from '@strata/sdk';
import type { ArchiveMode, BackupRecord, Repository, RecoveryGoal, RecoveryReport, ReplayScan, TargetAction, TimelineChoice, WalPlan } from '@strata/sdk';
import type { CommandContext } from './context.js';
import { recordLocalPushFailure, stateFolder } from './state-folder.js';
import { handOff } from './wal-handoff.js';
import { warnOfFailedVerifications } from './restore-choice.js';
import { chosenSource, confirm, formatBytes, interactive } from './terminal.js';

/**
 * The commands a PostgreSQL server runs itself: `archive_command = 'strata wal-push %p --db NAME'`
 * and `restore_command = 'strata wal-fetch %f %p --db NAME'`, and the recovery of a physical
 * backup to a moment (`strata restore ... --as-of/--lsn/--xid/--name/--immediate`).
 */

function databaseOf(ctx: CommandContext, db: string | undefined, command: string): string {
  if (db === undefined) throw new StrataError('USAGE', `${command}: --db NAME is required (the name the cluster's backups are filed under in strata.config.json)`);
  return validateDatabaseName(db);
}

/**
 * `strata wal-push PATH --db NAME`: archives one file the server hands over (archive_command's %p).
 * A failure is recorded for `health` (the server only retries, and logs, where nobody looks): in
 * the repository's journal, or, when the repository is what failed, in this machine's state folder.
 */
export async function walPushCommand(ctx: CommandContext, options: { file: string | undefined; database: string | undefined; socket?: string | undefined }, signal: AbortSignal): Promise<number> {
  if (options.file === undefined) throw new StrataError('USAGE', "wal-push: give the file to archive (archive_command's %p)");
  const database = databaseOf(ctx, options.database, 'wal-push');
  const file = path.resolve(options.file);
  let repo: Repository | undefined;
  try {
    if (options.socket !== undefined) {
      // A wal-daemon on the socket stores it; without one (none started, or it died), this process does.
      const reply = await handOff(options.socket, database, file);
      if (reply?.ok) {
        if (ctx.json) ctx.printJson({ name: reply.name, status: reply.status, sha256: reply.sha256, storedBytes: reply.storedBytes, daemon: true });
        return 0;
      }
      if (reply) throw new StrataError(reply.code, reply.error);
    }
    let bytes: Buffer;
    try {
      bytes = await fs.readFile(file);
    } catch (err) {
      throw new StrataError('USAGE', `wal-push: cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
    repo = await ctx.repository();
    // A segment's name must hold that segment, of this cluster (walFileCheck): a wrong file stored
    // under it would make the server's real one a conflict on every retry.
    const result = await repo.logArchive.push(database, path.basename(file), bytes, { signal, check: walFileCheck });
    // Archived once the repository has it; the mirror's copy follows, and its failure is journaled, not returned.
    const mirrored = await repo.mirrorLog(database, path.basename(file), bytes, { signal });
    if (mirrored && !mirrored.ok) process.stderr.write(`strata wal-push: ${mirrored.error!.message} (archived in the repository; the next backup copies it to the mirror)\n`);
    if (ctx.json) ctx.printJson({ name: result.file.name, status: result.status, sha256: result.file.sha256, storedBytes: result.file.storedBytes, ...(mirrored ? { mirror: { ok: mirrored.ok } } : {}) });
    return 0;
  } catch (err) {
    await recordPushFailure(ctx, repo, database, path.basename(file), err);
    throw err;
  }
}

/** Journals a failed push; records it locally when the journal cannot be written either. */
async function recordPushFailure(ctx: CommandContext, repo: Repository | undefined, database: string, file: string, err: unknown): Promise<void> {
  if (isStrataError(err, 'ABORTED')) return;
  try {
    // Opened here when the push failed before it needed the repository (an unreadable file).
    await (repo ?? (await ctx.repository())).journal.failed('wal-push', err, { database, details: { file } });
    return;
  } catch {
    // The repository is (part of) what failed: recorded where health finds it without it.
  }
  try {
    recordLocalPushFailure({ at: new Date().toISOString(), repository: ctx.repositoryPath(), database, file, code: isStrataError(err) ? err.code : 'INTERNAL', message: redactedMessage(err) });
  } catch (local) {
    process.stderr.write(`strata wal-push: the failure could not be recorded in the journal nor in ${stateFolder()}: ${(local as Error).message}\n`);
  }
}

/**
 * `strata wal-fetch NAME PATH --db NAME`: writes one archived file where the server asks for it
 * (restore_command's %f and %p). A file the archive does not hold is exit 1 with one short line:
 * the server asks for files that may not exist (the next timeline's history) and takes 1 as "no".
 * Only that is 1: any failure (a wrong or missing passphrase, a damaged file, storage) is thrown,
 * and main.ts makes it status 128, which stops the recovery instead of ending it early as "no".
 */
export async function walFetchCommand(ctx: CommandContext, options: { name: string | undefined; file: string | undefined; database: string | undefined }, signal: AbortSignal): Promise<number> {
  if (options.name === undefined || options.file === undefined) throw new StrataError('USAGE', "wal-fetch: give the file's name and where to write it (restore_command's %f %p)");
  const database = databaseOf(ctx, options.database, 'wal-fetch');
  const repo = await ctx.repository();
  const bytes = await repo.logArchive.fetch(database, options.name, { signal });
  if (!bytes) {
    if (!ctx.json) process.stderr.write(`strata wal-fetch: ${options.name} is not in the archive of ${database}\n`);
    else ctx.printJson({ name: options.name, found: false });
    return 1;
  }
  // Written beside the target, then renamed: the server never reads half a segment.
  const file = path.resolve(options.file);
  const partial = `${file}.strata-${randomBytes(4).toString('hex')}`;
  try {
    // Created exclusively: never written through a link or file already at that name.
    await fs.writeFile(partial, bytes, { mode: 0o600, flag: 'wx' });
    await fs.rename(partial, file);
  } catch (err) {
    await fs.rm(partial, { force: true }).catch(() => undefined);
    throw new StrataError('IO', `wal-fetch: cannot write ${file}: ${(err as Error).message}`, { cause: err });
  }
  // One line per process, found or not, in the server's log: which files a recovery had to fetch.
  if (ctx.json) ctx.printJson({ name: options.name, found: true, bytes: bytes.length });
  else process.stderr.write(`strata wal-fetch: ${options.name} fetched from the archive of ${database}\n`);
  return 0;
}

/** What `strata restore` gets for a physical backup. */
export interface PhysicalRestoreOptions {
  readonly id?: string;
  readonly database?: string;
  readonly to: string;
  readonly asOf?: string;
  readonly lsn?: string;
  readonly xid?: string;
  readonly restorePoint?: string;
  readonly immediate: boolean;
  readonly start: boolean;
  readonly targetAction?: string;
  /** latest (default), current or a timeline number. */
  readonly timeline?: string;
  /** off (default) or preserve: whether the restored cluster keeps the backed-up one's archiving. */
  readonly archiveMode?: string;
  readonly force: boolean;
  /** --tablespace-map: a tablespace's folder when backed up → where to restore it. */
  readonly tablespaceMap?: Readonly<Record<string, string>>;
  /** Where tablespaces the map does not name go (the scratch cluster of --tables): a folder each, by OID. */
  readonly tablespacesUnder?: string;
}

/**
 * restore's --timeline: which history to recover along when the archive holds several (a
 * failover's promoted timeline and the old server's). Default latest, as PostgreSQL's own default
 * and pgBackRest's --target-timeline.
 */
export function archiveModeOf(text: string | undefined): ArchiveMode {
  if (text === undefined || text === 'off') return 'off';
  if (text === 'preserve') return 'preserve';
  throw new StrataError('USAGE', `restore: --archive-mode takes off (the default) or preserve (got ${JSON.stringify(text)})`);
}

export function timelineChoice(text: string | undefined): TimelineChoice {
  if (text === undefined || text === 'latest') return 'latest';
  if (text === 'current') return 'current';
  if (/^[1-9][0-9]{0,9}$/.test(text) && Number(text) <= 0xffffffff) return Number(text);
  throw new StrataError('USAGE', `restore: --timeline takes latest, current or a timeline number such as 2 (got ${JSON.stringify(text)})`);
}

/** The recovery goal of restore's flags: at most one of them; none means the end of the archive. */
export function recoveryGoal(options: Pick<PhysicalRestoreOptions, 'asOf' | 'lsn' | 'xid' | 'restorePoint' | 'immediate'>): RecoveryGoal {
  const given = [options.asOf !== undefined && '--as-of', options.lsn !== undefined && '--lsn', options.xid !== undefined && '--xid', options.restorePoint !== undefined && '--name', options.immediate && '--immediate'].filter(Boolean);
  if (given.length > 1) throw new StrataError('USAGE', `restore: ${given.join(' and ')} are different targets; give one`);
  if (options.asOf !== undefined) {
    const time = new Date(options.asOf);
    if (Number.isNaN(time.getTime())) throw new StrataError('USAGE', `restore: --as-of ${JSON.stringify(options.asOf)} is not an ISO date/time`);
    // A Date keeps milliseconds; a time copied from PostgreSQL has microseconds, and the commits
    // of the target's last millisecond belong before it.
    const fraction = /:\d{2}[.,](\d{4,})/.exec(options.asOf)?.[1];
    const micros = fraction ? Number(fraction.slice(3, 6).padEnd(3, '0')) : 0;
    return micros > 0 ? { kind: 'time', time, micros } : { kind: 'time', time };
  }
  if (options.lsn !== undefined) {
    if (!/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(options.lsn)) throw new StrataError('USAGE', `restore: --lsn ${JSON.stringify(options.lsn)} is not a WAL position such as 0/3000060`);
    return { kind: 'lsn', lsn: options.lsn.toUpperCase() };
  }
  if (options.xid !== undefined) {
    if (!/^[0-9]+$/.test(options.xid)) throw new StrataError('USAGE', `restore: --xid ${JSON.stringify(options.xid)} is not a transaction id (a number)`);
    return { kind: 'xid', xid: options.xid };
  }
  if (options.restorePoint !== undefined) {
    if (options.restorePoint.length === 0 || options.restorePoint.length > 63) throw new StrataError('USAGE', 'restore: --name takes the name given to pg_create_restore_point (1 to 63 characters)');
    return { kind: 'name', name: options.restorePoint };
  }
  return options.immediate ? { kind: 'immediate' } : { kind: 'latest' };
}

/**
 * The passphrase source a written restore_command carries: --passphrase-file or
 * --passphrase-command, else this run's STRATA_PASSPHRASE_COMMAND or STRATA_PASSPHRASE_FILE (in
 * the order readPassphrase takes them) made flags, because the server that runs the command later
 * has neither this run's environment nor its terminal. A name or a command, never the passphrase;
 * none when the passphrase can only come from STRATA_PASSPHRASE or a prompt.
 */
function passphraseWords(ctx: CommandContext): string[] {
  const { command, file } = chosenSource(ctx.passphraseSources(false), 'STRATA_PASSPHRASE');
  if (command !== undefined) return ['--passphrase-command', command];
  if (file !== undefined) return ['--passphrase-file', path.resolve(file)];
  return [];
}

/**
 * Refuses, before anything is read or written, a restore of an encrypted repository whose
 * restore_command would carry no passphrase source (it came from STRATA_PASSPHRASE or a prompt):
 * the server started later (pg_ctl, systemd) has no such variable, so every segment it fetches
 * fails. Allowed only when Strata's own temporary server, which inherits this environment, ends
 * the recovery and promotes (--start --target-action promote, and --tables): a promoted copy never
 * runs its restore_command again.
 */
function refuseUnreadableRecovery(ctx: CommandContext, repo: Repository, options: { start: boolean; action: TargetAction; to: string }): void {
  if (repo.settings.encryption === 'none' || passphraseWords(ctx).length > 0) return;
  const inEnvironment = (process.env['STRATA_PASSPHRASE'] ?? '') !== '';
  if (inEnvironment && options.start && options.action === 'promote') return;
  throw new StrataError(
    'USAGE',
    `restore: the repository is encrypted and this run's passphrase comes ${inEnvironment ? 'from STRATA_PASSPHRASE' : 'from no file or command'}, which the restore_command written into ${path.resolve(options.to)} cannot carry (the passphrase itself is never written): the server started on it later has no such variable nor a terminal, so its recovery could not read the archive. Nothing was written. Pass --passphrase-file FILE or --passphrase-command CMD, readable by the server's OS user${inEnvironment ? '; or let Strata finish the recovery with --start --target-action promote (its temporary server inherits STRATA_PASSPHRASE, and the promoted copy needs the archive no more)' : ''}`,
  );
}

/** The command the restored server runs to fetch a segment: this Strata, this repository, this passphrase source (never the passphrase). */
function restoreCommandFor(ctx: CommandContext, database: string): string {
  const words = [process.execPath, path.resolve(process.argv[1] ?? 'strata'), 'wal-fetch', '%f', '%p', '--db', database, '--repo', ctx.repositoryPath()];
  if (ctx.loaded.file) words.push('--config', ctx.loaded.file);
  words.push(...passphraseWords(ctx));
  // PostgreSQL replaces %f and %p before the shell sees the line; quoted, they stay one word each
  // (%f is a WAL file name, hex digits and dots). The segments restore already read and checked
  // wait in the data directory's spool: taking them from there spares a process start per segment
  // (the recovery's time). A timeline's history is copied, not moved: the server reads it more
  // than once (to check the target timeline, then to follow it). A name marked not needed is "no"
  // at once (see markNotNeeded); others are fetched. Exit 1 means "not there" to the server, which
  // then ends its recovery: a spooled file that cannot be copied is 128 (stop), as in wal-fetch.
  return `f=${SPOOL}/%f; if [ -f "$f" ]; then case %f in *.history) cp "$f" %p || exit 128 ;; *) mv "$f" %p || exit 128 ;; esac; elif [ -f ${SPOOL}/${NOT_NEEDED}/%f ]; then exit 1; else ${shellCommand(words)}; fi`;
}

/** The folder of a restored data directory where the checked segments wait for the recovery. */
export const SPOOL = 'strata-wal';
/** The spool's folder of names the restore_command answers "not there" without asking the archive. */
const NOT_NEEDED = 'not-needed';

/**
 * Marks, for the temporary server that proves a recovery (--start, --tables), the segments it
 * reads ahead for past the spool as not there, when pg_waldump finds the record the recovery stops
 * at in the spool: without them, each is a `wal-fetch` process (seconds on a loaded machine) for a
 * file the stop does not need and the archive usually lacks. Two conditions make a "no" harmless
 * even when the file is archived meanwhile (a live server archiving, a restore to the end of the
 * archive): the stop is proven inside the spool, so the server never needs those files to reach
 * its target (a target past the spool, and `latest`, get no marks and fetch as before); and the
 * marks live only while the proof runs (the caller removes them after it, pass or fail), because
 * a server started later may have been given a later target (shutdown at the target, a new
 * recovery_target_time, a restart): then the next segments are needed after all.
 */
async function markNotNeeded(dir: string, plan: WalPlan, goal: RecoveryGoal, base: BackupRecord, signal: AbortSignal): Promise<string | undefined> {
  const spool = path.join(dir, SPOOL);
  // The segment after the target only when it was spooled (a damaged copy was left out).
  const spooledAfter = plan.afterTarget && (await fs.stat(path.join(spool, plan.afterTarget.name)).then(() => true, () => false)) ? [plan.afterTarget] : [];
  const segments = [...plan.needed, ...spooledAfter].map((f) => f.name).filter((name) => /^[0-9A-F]{24}$/.test(name));
  const major = Number((await fs.readFile(path.join(dir, 'PG_VERSION'), 'utf8')).trim());
  const backupEnd = (base.logRange!.end as { lsn?: string }).lsn ?? '0/0';
  if (!(await stopsWithin(spool, segments, goal, { major, backupEnd, signal }))) return undefined;
  const marks = path.join(spool, NOT_NEEDED);
  await fs.mkdir(marks, { mode: 0o700 });
  for (const name of plan.readAhead) await fs.writeFile(path.join(marks, name), '', { mode: 0o600 });
  return marks;
}

/**
 * Restores a physical backup into a new data directory set up to recover to the goal. Everything
 * the recovery needs is checked first: the base backup exists, every archived segment from its
 * start to the target is there and decrypts to the bytes it was stored with. Only then is the
 * target written.
 */
export async function physicalRestore(ctx: CommandContext, options: PhysicalRestoreOptions, signal: AbortSignal): Promise<number> {
  // Said before anything is read: found only at --start, it would cost the whole restore.
  if (options.start && process.getuid?.() === 0) throw new StrataError('USAGE', 'restore --start: PostgreSQL refuses to run as root; run strata as the user that owns the data directory (e.g. postgres), or restore without --start');
  const { base, goal, checked, dir, made, restoreCommand, action, timeline, archiving, notNeeded } = await restorePhysicalInto(ctx, options, signal);
  let report: RecoveryReport | undefined;
  if (options.start) {
    try {
      report = await proveRecovery(dir, { signal });
    } catch (err) {
      // A copy that did not recover (or whose recovery was interrupted) is of no use, and left in
      // place it made the next try need --force. What this restore wrote goes; a folder that was
      // there before (empty, or replaced with --force, its old files gone already) stays, empty.
      await removeRestoredCluster(dir);
      if (!made) await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      const note = made ? `the restored data directory ${dir} was removed` : `the restored files in ${dir} were removed (the folder was there before and stays, empty)`;
      if (isStrataError(err)) throw new StrataError(err.code, `${err.message}\n${note}`, { cause: err });
      throw err;
    } finally {
      if (notNeeded) await fs.rm(notNeeded, { recursive: true, force: true });
    }
    // What the recovery did not take (segments past its target) is no use to the copy.
    await fs.rm(path.join(dir, SPOOL), { recursive: true, force: true });
    // A copy that replaces the original archives its new timeline's history once started.
    if (archiving === 'preserve' && report.state !== 'paused') await markHistoryForArchive(dir);
  }
  // A cluster that keeps its configuration outside its data directory (Debian's and Ubuntu's
  // /etc/postgresql/VERSION/NAME) restores without it: the directory cannot start until it has one.
  const configurationMissing: string[] = [];
  for (const file of ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf']) {
    if (!(await fs.access(path.join(dir, file)).then(() => true, () => false))) configurationMissing.push(file);
  }
  // Where the tablespaces went: the map the recovering server links them from (PostgreSQL renames
  // it to tablespace_map.old once it has, so after --start the links say it).
  const tablespaces = [...dataDirTablespaces(dir)].map(([oid, location]) => ({ oid, location }));
  if (ctx.json) {
    ctx.printJson({ base: base.id, goal: describeGoal(goal), timeline, walSegments: checked, target: dir, restoreCommand, targetAction: action, archiveMode: archiving, configurationMissing, tablespaces, ...(report ? { reached: report } : {}) });
  } else {
    process.stdout.write(`restored ${base.id} (${formatBytes(base.databaseBytes)}) into ${dir}, set to recover to ${describeGoal(goal)} on timeline ${timeline}; ${checked} archived WAL segment(s) from the base backup onwards checked\n`);
    if (tablespaces.length > 0) process.stdout.write(`its tablespace(s) are in ${tablespaces.map((t) => `${t.location} (OID ${t.oid})`).join(', ')}\n`);
    if (report) {
      process.stdout.write(`recovery reached LSN ${report.lsn ?? '?'}${report.lastCommit ? `, last transaction committed ${report.lastCommit}` : ''} (${report.state}); the server was stopped\n`);
    }
    if (report && report.subscriptions.length > 0) {
      process.stdout.write(
        `the restored cluster has enabled logical replication subscription(s) ${report.subscriptions.join(', ')}: started as a primary, it connects to their publishers and consumes their slots, and the real subscribers never get what it acknowledges. Unless it replaces the original, start it with -c max_logical_replication_workers=0 and ALTER SUBSCRIPTION ... DISABLE them first (Strata's temporary server started none)\n`,
      );
    }
    if (configurationMissing.length > 0) {
      process.stdout.write(
        `the backed-up cluster keeps ${configurationMissing.join(', ')} outside its data directory (as Debian and Ubuntu do, in /etc/postgresql/VERSION/NAME), so ${dir} has none: copy yours in first, without data_directory, hba_file and ident_file (they name the original cluster's)\n`,
      );
    }
    if (archiving === 'off') {
      process.stdout.write(
        `archiving is off in the restored cluster (archive_mode = 'off' in its postgresql.auto.conf): started beside the original, it would otherwise push its new timeline into ${base.database}'s archive, and later recoveries of ${base.database} would follow it. For a cluster that replaces the original, restore with --archive-mode preserve (or remove that line)\n`,
      );
    }
    // Its postgresql.conf is the original's, port included: beside a running original it needs a port of its own.
    process.stdout.write(`${configurationMissing.length > 0 ? 'then ' : ''}start it with: pg_ctl -D ${dir} start  (beside the original, on a port of its own: pg_ctl -D ${dir} -o '-c port=5433' start; recovery ${action === 'pause' ? 'pauses at the target: check, then SELECT pg_wal_replay_resume() to promote' : action === 'promote' ? 'ends at the target and promotes' : 'shuts the server down at the target'})\n`);
    if (!report) process.stdout.write(`the checked segments wait in ${path.join(dir, SPOOL)}, where the recovery takes them from; delete what is left there once it is done\n`);
  }
  return 0;
}

/**
 * Looks, before the server can start, at what its recovery would replay (pg_waldump over the
 * checked segments), and refuses two recoveries:
 *
 * - one whose WAL creates a tablespace at a folder that exists on this machine: PostgreSQL replays
 *   a CREATE TABLESPACE at the primary's absolute path and writes into that folder, so on the
 *   primary's machine it would overwrite the primary's own tablespace (PostgreSQL's documented
 *   caveat of point-in-time recovery). A folder that does not exist here harms nothing.
 * - one that cannot reach its target: a moment with no commit after it, or a transaction or
 *   restore point whose record is not there, in WAL that ends with these segments (`atArchiveEnd`:
 *   the archive holds nothing after them). PostgreSQL would replay all of it and then fail with
 *   "recovery ended before configured recovery target was reached". Refused when Strata's own
 *   server would run that recovery now (`start`); otherwise a warning, since the server started
 *   later fetches what was archived meanwhile.
 *
 * The caller removes the restored base when it refuses (its PG_VERSION is what says which
 * pg_waldump reads the WAL). When pg_waldump cannot run, a warning says the check was not made.
 */
async function checkReplay(
  spool: string,
  segments: readonly string[],
  dir: string,
  goal: RecoveryGoal,
  base: BackupRecord,
  options: { start: boolean; atArchiveEnd: boolean; newestStored: string },
  signal: AbortSignal,
): Promise<void> {
  const major = Number((await fs.readFile(path.join(dir, 'PG_VERSION'), 'utf8')).trim());
  const scan = await scanReplay(spool, segments, goal, { major, backupEnd: (base.logRange!.end as { lsn?: string }).lsn ?? '0/0', signal });
  if (scan === undefined) {
    process.stderr.write(`strata: warning: could not look for CREATE TABLESPACE in the WAL to replay (PostgreSQL ${major}'s pg_waldump did not run, or read none of it); a recovery on the primary's machine that replays one would overwrite that tablespace's folder\n`);
    // Without a look at the commits, what the archive's times say: every record it holds was
    // written before its newest file was stored, so a later moment is not there yet.
    if (goal.kind === 'time' && options.newestStored !== '' && Date.parse(options.newestStored) < goal.time.getTime()) {
      process.stderr.write(
        `strata: warning: ${goalTimeText(goal)} is after the newest WAL archived for ${base.database} (stored ${options.newestStored}): a recovery reaches it only once the archive holds WAL written after it, else PostgreSQL stops it with "recovery ended before configured recovery target was reached". Archive the server's current WAL first (SELECT pg_switch_wal()), or give an earlier time\n`,
      );
    }
    return;
  }
  const t = (await tablespacesInTheWay(scan.tablespaces))[0];
  if (t) {
    throw new StrataError(
      'USAGE',
      `restore: the WAL this recovery replays creates tablespace ${t.oid} at ${t.location} (at LSN ${t.lsn}), and that folder exists on this machine: PostgreSQL would replay it there and write into that folder (the original cluster's tablespace, if this is its machine). The restored files were removed. Recover on another machine, or to a moment before it (--lsn ${t.previousLsn}, the record before it)`,
    );
  }
  if (scan.stopFound !== false || !options.atArchiveEnd) return;
  const problem = unreachableTarget(goal, base, scan);
  if (options.start) throw new StrataError('USAGE', `restore: ${problem}. The restored files were removed`);
  process.stderr.write(`strata: warning: ${problem}. Written all the same: the server, started once the archive holds more, fetches that too\n`);
}

/** Why the archived WAL cannot end a recovery at `goal` (the scan found no stop), and which target it can end at. */
function unreachableTarget(goal: RecoveryGoal, base: BackupRecord, scan: Pick<ReplayScan, 'lastCommit'>): string {
  const last = scan.lastCommit;
  const fails = 'PostgreSQL would replay all of it and then fail ("recovery ended before configured recovery target was reached")';
  const instead = last
    ? `The archive's last transaction, ${last.xid}, committed at ${last.time} (LSN ${last.lsn}): --xid ${last.xid} recovers through it`
    : "The archive holds no commit after the base backup: --immediate recovers to the base backup's end";
  switch (goal.kind) {
    case 'time':
      return `nothing archived for ${base.database} committed after ${goalTimeText(goal)}, and a recovery to a moment ends at the first commit after it: without one, ${fails}. ${instead}, which is that moment's state unless something committed in WAL not archived yet; to know, archive the server's current WAL (SELECT pg_switch_wal()) and try again`;
    case 'xid':
      return `transaction ${goal.xid} neither commits nor aborts in the WAL archived for ${base.database} after ${base.id}, so ${fails}: it ended before that base backup, has not ended yet, or its WAL is not archived yet. ${instead}`;
    default:
      return `the WAL archived for ${base.database} after ${base.id} holds no restore point named ${JSON.stringify(goal.kind === 'name' ? goal.name : '')}, so ${fails}: it was made before that base backup or on another server, or its WAL is not archived yet (SELECT pg_switch_wal() archives it). ${instead}`;
  }
}

/** Restores the base backup a goal needs into a data directory set up to recover to it (nothing written when WAL is missing or damaged). */
async function restorePhysicalInto(
  ctx: CommandContext,
  options: PhysicalRestoreOptions,
  signal: AbortSignal,
): Promise<{ base: BackupRecord; goal: RecoveryGoal; checked: number; dir: string; made: boolean; restoreCommand: string; action: TargetAction; timeline: number; archiving: ArchiveMode; notNeeded?: string }> {
  const goal = recoveryGoal(options);
  const choice = timelineChoice(options.timeline);
  const action = (options.targetAction ?? 'pause') as TargetAction;
  if (!['pause', 'promote', 'shutdown'].includes(action)) throw new StrataError('USAGE', `restore: --target-action must be pause, promote or shutdown (got ${JSON.stringify(options.targetAction)})`);
  const archiving = archiveModeOf(options.archiveMode);
  const repo = await ctx.repository();
  refuseUnreadableRecovery(ctx, repo, { start: options.start, action, to: options.to });
  await repo.unlock();
  let base: BackupRecord;
  if (options.id !== undefined && options.id !== 'latest') {
    base = await repo.resolve({ id: options.id });
    if (!base.logRange) throw new StrataError('USAGE', `restore: ${base.id} is not a physical backup; --lsn, --xid, --name, --immediate, --start and --tablespace-map are for physical ones`);
    refuseBaseAfterGoal(base, goal);
    warnOfFailedVerifications(base, await repo.list({ database: base.database }), 'named');
  } else {
    const database = databaseOf(ctx, options.database, 'restore');
    const all = await repo.list({ database });
    // Among the base backups on the history of the timeline recovered along (after a failover,
    // one the old server took later would replay its diverged history).
    const onTimeline = await basesOnTimeline(all, await repo.logArchive.list(database, { signal }), (file) => repo.logArchive.read(file, { signal }), choice);
    base = chooseBase(onTimeline, goal);
    // One whose verification found its restored data wrong is passed over for the one the goal would take among the others.
    const fault = contentFault(base, all);
    if (fault) {
      const wanted = base;
      const trusted = onTimeline.filter((b) => contentFault(b, all) === undefined);
      try {
        base = chooseBase(trusted, goal);
      } catch {
        throw new StrataError(
          'VERIFY_FAILED',
          `restore: ${wanted.id}, the base backup this recovery would start from, ${describeContentFault(wanted, fault)}, and no other base backup suits the target. strata verify ${wanted.id} says what failed; to restore it anyway, name it by its id`,
        );
      }
      process.stderr.write(`strata: warning: restore: passed over ${wanted.id} (taken ${wanted.createdAt}): ${describeContentFault(wanted, fault)}; recovering from ${base.id} instead (a longer replay). To restore it anyway, name it by its id\n`);
    }
  }
  const database = base.database;
  const files = await repo.logArchive.list(database, { signal });
  const plan = await planWal(base, goal, files, (file) => repo.logArchive.read(file, { signal }), choice);
  if (plan.missing.length > 0) {
    const shown = plan.missing.length > 4 ? `${plan.missing.slice(0, 3).join(', ')} … ${plan.missing.at(-1)} (${plan.missing.length} segments)` : plan.missing.join(', ');
    throw new StrataError('CHAIN_BROKEN', `restore: the WAL archive of ${database} lacks ${shown}, which a recovery from ${base.id} to ${describeGoal(goal)} replays (along timeline ${plan.timeline}); nothing was written. Restore to an earlier moment, or from a later base backup`, {
      details: { missing: plan.missing },
    });
  }
  // Every segment is read and checked before the target is touched: a damaged one found by the
  // server halfway would leave a cluster stuck before its target. They wait beside the target,
  // then in its spool, where the restore_command takes them from.
  const dir = path.resolve(options.to);
  await fs.mkdir(path.dirname(dir), { recursive: true });
  // The spool holds the log decrypted: named so that the next restore into this folder removes it
  // should this process be killed (as the engine's own unpacking folder; see sweepSideFolders).
  await sweepSideFolders(path.dirname(dir), 'restore');
  const spool = await makeSideFolder(dir, 'wal');
  // Whether this restore makes the target folder: a failed --start removes only what it made.
  const made = !(await fs.stat(dir).then(() => true, () => false));
  let checked = 0;
  // The recovery replays records of the segment after the target's too, up to where it stops.
  const spooled = plan.needed.map((f) => f.name);
  try {
    for (const file of plan.needed) {
      let bytes: Uint8Array;
      try {
        bytes = await repo.logArchive.read(file, { signal });
      } catch (err) {
        throw new StrataError('ARTIFACT_CORRUPT', `restore: WAL segment ${file.name} of ${database}, which the recovery replays, is damaged (${(err as Error).message}); nothing was written`, { cause: err });
      }
      await fs.writeFile(path.join(spool, file.name), bytes, { mode: 0o600 });
      checked += 1;
    }
    const after = plan.afterTarget;
    if (after) {
      let bytes: Uint8Array | undefined;
      try {
        bytes = await repo.logArchive.read(after, { signal });
      } catch (err) {
        if (signal.aborted) throw err;
        // Left out of the spool, it is asked of the archive (wal-fetch) only if the server reads it.
        process.stderr.write(`strata: warning: WAL segment ${after.name} of ${database}, the one after the target, is damaged (${(err as Error).message}); the recovery reads it only if its target lies past ${plan.needed.at(-1)?.name ?? 'the base backup'}\n`);
      }
      if (bytes) {
        await fs.writeFile(path.join(spool, after.name), bytes, { mode: 0o600 });
        checked += 1;
        spooled.push(after.name);
      }
    }
    const relocate = { ...(options.tablespaceMap && Object.keys(options.tablespaceMap).length > 0 ? { map: options.tablespaceMap } : {}), ...(options.tablespacesUnder ? { under: options.tablespacesUnder } : {}) };
    await repo.restore({ id: base.id }, { to: dir, force: options.force, signal, ...(Object.keys(relocate).length > 0 ? { relocate } : {}) });
    // Nothing archived after the spool: the recovery can replay only what it holds.
    // (A damaged segment after the target, left out of the spool, is not looked at: nor is it the end.)
    const archived = new Set(files.map((f) => f.name));
    const atArchiveEnd = !plan.readAhead.some((name) => archived.has(name)) && (!plan.afterTarget || spooled.includes(plan.afterTarget.name));
    const newestStored = files.reduce((newest, f) => (f.storedAt !== undefined && f.storedAt > newest ? f.storedAt : newest), '');
    try {
      await checkReplay(spool, spooled, dir, goal, base, { start: options.start, atArchiveEnd, newestStored }, signal);
    } catch (err) {
      await removeRestoredCluster(dir);
      throw err;
    }
    await fs.rename(spool, path.join(dir, SPOOL));
  } finally {
    await fs.rm(spool, { recursive: true, force: true });
  }
  const restoreCommand = restoreCommandFor(ctx, database);
  await configureRecovery(dir, recoverySettings(goal, restoreCommand, action, plan.timeline, archiving));
  const notNeeded = options.start ? await markNotNeeded(dir, plan, goal, base, signal) : undefined;
  return { base, goal, checked, dir, made, restoreCommand, action, timeline: plan.timeline, archiving, ...(notNeeded ? { notNeeded } : {}) };
}

/**
 * Tables as of a moment (`restore --db NAME --as-of T --tables a,b --to postgres://.../db`): the
 * cluster recovered to the moment in a scratch data directory, started on a free port, its tables
 * backed up into a scratch repository and restored from there into the target exactly as a
 * logical table restore does (with its checks of foreign keys), then all of it removed. The tables
 * come from the database the entry's URL names.
 */
export async function physicalTableRestore(ctx: CommandContext, options: PhysicalRestoreOptions & { readonly tables: readonly string[]; readonly yes: boolean; readonly lockWaitSeconds?: number }, signal: AbortSignal): Promise<number> {
  if (!isPostgresUrl(options.to)) throw new StrataError('USAGE', `restore: --tables of a physical backup go into a database: give --to postgres://USER@HOST:PORT/DB (got ${JSON.stringify(options.to.slice(0, 80))})`);
  if (process.getuid?.() === 0) throw new StrataError('USAGE', 'restore --tables of a physical backup recovers a scratch cluster, and PostgreSQL refuses to run as root: run strata as the user that owns PostgreSQL (e.g. postgres)');
  const database = databaseOf(ctx, options.database, 'restore --tables');
  const entry = ownEntry(ctx.loaded.config.databases, database);
  // The loaded config holds the physical locator (postgres+physical://); its URL names the database.
  const entryUrl = entry?.url !== undefined ? clusterUrl(entry.url) : undefined;
  if (entry?.method !== 'physical' || !entryUrl || !isPostgresUrl(entryUrl)) throw new StrataError('USAGE', `restore: ${database} is not a physical PostgreSQL entry of strata.config.json; --tables of a physical backup needs its URL (the database the tables come from)`);
  const sourceDatabase = parseTarget(entryUrl).database;
  const logical = new PostgresEngine();
  const target = parseTarget(options.to);
  if (await logical.targetExists(options.to)) {
    if (!options.force) throw new StrataError('TARGET_EXISTS', `restore: ${target.safe} exists; pass --force to replace the tables ${options.tables.join(', ')} in it`);
    if (!options.yes) {
      if (!interactive(ctx.json) || !process.stdin.isTTY) throw new StrataError('USAGE', `restore: replacing tables in ${target.safe} needs confirmation; pass --yes when not on a terminal`);
      if (!(await confirm(`Replace the tables ${options.tables.join(', ')} in ${target.safe} with their state as of ${describeGoal(recoveryGoal(options))}?`))) {
        process.stderr.write('restore cancelled; nothing was changed\n');
        return 1;
      }
    }
  }
  // Named for this process (a side folder), so that after a kill the next table restore stops the
  // scratch server left running and removes the decrypted cluster it held.
  const temp = process.env['STRATA_TMPDIR'] ?? os.tmpdir();
  await sweepSideFolders(temp, 'restore', undefined, stopLeftoverServer);
  const scratch = await makeSideFolder(path.join(temp, 'strata-tables'), 'tables');
  let stop: (() => Promise<void>) | undefined;
  try {
    // start: the scratch cluster is proved right away (and removed after).
    // Its tablespaces, if any, go into the scratch folder too, never where the primary has them.
    const { base, goal, dir, notNeeded } = await restorePhysicalInto(
      ctx,
      { ...options, to: path.join(scratch, 'pgdata'), targetAction: 'promote', start: true, force: false, tablespaceMap: {}, tablespacesUnder: path.join(scratch, 'tablespaces') },
      signal,
    );
    let reached: Awaited<ReturnType<typeof proveRecovery>>;
    try {
      reached = await proveRecovery(dir, { signal, keepRunning: true });
    } finally {
      // The "not needed" answers are for reaching the target only, as in physicalRestore: the
      // scratch server keeps running while its tables are copied.
      if (notNeeded) await fs.rm(notNeeded, { recursive: true, force: true });
    }
    stop = reached.stop;
    const scratchRepo = path.join(scratch, 'repo');
    // Unencrypted, in a folder only this user reads, removed below: the rows never leave this machine's temporary folder.
    await initRepository(scratchRepo, { encryption: 'none' });
    // Its temporary files in the scratch folder too, and closed: an open repository keeps a folder of its own in the temporary folder.
    const repo = await openRepository(scratchRepo, { tempDir: path.join(scratch, 'tmp') });
    let restored: Awaited<ReturnType<typeof repo.restore>>;
    try {
      const copy = await repo.backup(reached.url(sourceDatabase), { database: 'scratch', type: 'full', signal });
      restored = await repo.restore({ id: copy.id }, { to: options.to, tables: options.tables, force: true, signal, ...(options.lockWaitSeconds !== undefined ? { lockWaitSeconds: options.lockWaitSeconds } : {}) });
    } finally {
      await repo.close();
    }
    if (ctx.json) {
      ctx.printJson({ base: base.id, goal: describeGoal(goal), reached, tables: options.tables, from: sourceDatabase, target: target.safe, bytes: restored.bytes });
    } else {
      process.stdout.write(
        `restored ${options.tables.join(', ')} of ${sourceDatabase} as of ${describeGoal(goal)} into ${target.safe} (recovered from ${base.id} to LSN ${reached.lsn ?? '?'}${reached.lastCommit ? `, last transaction committed ${reached.lastCommit}` : ''}); the scratch cluster was removed\n`,
      );
    }
    return 0;
  } finally {
    await stop?.().catch(() => undefined);
    await fs.rm(scratch, { recursive: true, force: true });
  }
}
