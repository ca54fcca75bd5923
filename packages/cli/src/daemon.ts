import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { Cron } from 'croner';
import {
  DEFAULT_HEALTH,
  StrataError,
  assessContinuity,
  assessLogArchive,
  assessHealth,
  createDefaultEngines,
  defaultSlotName,
  describeJob,
  durationMs,
  isStrataError,
  jobCron,
  parseDuration,
  redactUrlPasswords,
  redactedMessage,
  retentionFor,
  schedulesFor,
  sleepUnlessAborted,
  ownEntry,
  writtenByNewerStrata,
} from '@strata/sdk';
import type { BackupRecord, DaemonConfig, HooksConfig, JobConfig, JournalEntryHandle, ReplicateJobConfig, Repository, ScheduledJobConfig, StrataConfig, VerifyReport } from '@strata/sdk';
import { CommandContext } from './context.js';
import type { GlobalOptions } from './context.js';
import { metricsText, writeTextfile } from './metrics.js';
import { listenForMetrics } from './metrics-listener.js';
import { stateFolder } from './state-folder.js';
import { streamClusterWal } from './wal-receive-command.js';
import type { ListenAddress } from './metrics-listener.js';
import { Notifier, channelSecretVariables, checkChannelSecrets } from './notifier.js';
import type { Delivery, JobFacts } from './notifier.js';
import { environmentWithoutSecrets } from './terminal.js';

/** One job of one database, as the config has it. */
export interface PlannedJob {
  readonly database: string;
  readonly name: string;
  readonly config: JobConfig;
}

/** Every database's jobs, databases and jobs by name. */
export function plannedJobs(config: StrataConfig): PlannedJob[] {
  return Object.keys(config.databases ?? {})
    .sort()
    .flatMap((database) =>
      Object.entries(schedulesFor(config, database))
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([name, job]) => ({ database, name, config: job })),
    );
}

/** The cron of a scheduled job, paused (for computing runs) or calling `onTick`. */
export function cronOf(job: ScheduledJobConfig, onTick?: (self: Cron) => void): Cron {
  if (!onTick) return jobCron(job);
  return new Cron(job.cron, { mode: '5-or-6-parts', ...(job.timezone !== undefined ? { timezone: job.timezone } : {}) }, onTick);
}

export { describeJob };

/**
 * How many runs of each job `jobsDueTogether` looks at: a weekly job's next 200 runs meet an hourly
 * one's schedule, and a per-second job's still cost nothing to compute.
 */
const DUE_TOGETHER_RUNS = 200;

/** Two scheduled jobs of one database that are due at the same instant now and then. */
export interface JobsDueTogether {
  readonly database: string;
  readonly jobs: readonly [string, string];
  /** The first instant both are due. */
  readonly next: Date;
}

/**
 * The pairs of scheduled jobs of one database due at the same instant within their next runs: the
 * daemon runs such jobs one after the other (never two of one database at once), so one of them
 * starts late, after the other.
 */
export function jobsDueTogether(jobs: readonly PlannedJob[], from: Date = new Date()): JobsDueTogether[] {
  const scheduled = jobs.flatMap((j) => {
    if (j.config.job === 'replicate') return [];
    const cron = cronOf(j.config);
    return [{ job: j, cron, runs: cron.nextRuns(DUE_TOGETHER_RUNS, from) }];
  });
  const found: JobsDueTogether[] = [];
  for (const [i, a] of scheduled.entries()) {
    for (const b of scheduled.slice(i + 1)) {
      if (a.job.database !== b.job.database) continue;
      const together = [...a.runs.filter((at) => b.cron.match(at)), ...b.runs.filter((at) => a.cron.match(at))].sort((x, y) => x.getTime() - y.getTime());
      if (together[0]) found.push({ database: a.job.database, jobs: [a.job.name, b.job.name], next: together[0] });
    }
  }
  return found;
}

/**
 * What `strata schedule` and the daemon's start say of the jobs due together: a line per database,
 * the pairs that meet soonest first.
 */
export function describeDueTogether(pairs: readonly JobsDueTogether[]): string[] {
  const databases = [...new Set(pairs.map((p) => p.database))];
  return databases.map((database) => {
    const mine = pairs.filter((p) => p.database === database).sort((a, b) => a.next.getTime() - b.next.getTime());
    return `${database}: jobs due at the same time run one after the other: ${mine.map((p) => `${p.jobs[0]} and ${p.jobs[1]} (next ${p.next.toISOString()})`).join(', ')}`;
  });
}

/**
 * Refuses a config in which a database with jobs has a URL no engine understands (`postgress://`):
 * said at start (exit 2) or at SIGHUP, not hours later when its first job runs. The URL itself is
 * not repeated (it may hold a password); its scheme is what is wrong.
 */
export function checkDatabaseUrls(config: StrataConfig): void {
  const engines = createDefaultEngines();
  // Only backup and replicate jobs open the database; prune, verify, health and copy jobs work on the repository alone.
  for (const database of new Set(plannedJobs(config).filter((j) => j.config.job === 'backup' || j.config.job === 'replicate').map((j) => j.database))) {
    const url = ownEntry(config.databases, database)?.url;
    if (url === undefined || engines.forLocator(url)) continue;
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
    // The schemes written in a config (a physical entry is `method: "physical"` on a postgres:// URL).
    const known = engines.kinds().flatMap((kind) => engines.get(kind)!.display.schemes.filter((s) => !s.includes('+')));
    throw new StrataError(
      'USAGE',
      `databases.${database}.url: no engine understands ${scheme !== undefined ? `the URL scheme "${scheme}:"` : 'this URL'} (known: ${known.join(', ')}, or a SQLite file path); the backup or replicate jobs of ${database} could never run`,
    );
  }
}

/** The job whose work is running, for the process warnings its engines and repository emit. */
interface WarningScope {
  readonly where: { readonly database: string; readonly job: string };
  /** The warnings' codes (`STRATA_NOT_RESTORABLE`), for the journal: a code holds nothing of the data. */
  readonly codes: Set<string>;
}
const warningScope = new AsyncLocalStorage<WarningScope>();

/** A process warning reaches its listeners a tick after it is emitted: this waits for those emitted so far. */
function warningsDelivered(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Log lines on stderr, as text or one JSON object a line. Errors go in as `redactedMessage(err)`, the
 * form the journal keeps: journald and log collectors are files too, so what the journal withholds
 * (passwords in URLs, schema names, driver messages that quote the database) stays out of them.
 * Warnings go in as the command would print them on a terminal, but for passwords in URLs: they
 * have no redacted form, and a warning without its names (the roles a copy lacks) says nothing.
 */
export class DaemonLog {
  readonly #json: boolean;
  constructor(format: 'text' | 'json') {
    this.#json = format === 'json';
  }
  write(level: 'info' | 'warn' | 'error', message: string, fields: Record<string, unknown> = {}): void {
    const time = new Date().toISOString();
    if (this.#json) process.stderr.write(JSON.stringify({ time, level, message, ...fields }) + '\n');
    else {
      const where = fields['database'] !== undefined ? ` ${String(fields['database'])}/${String(fields['job'])}` : '';
      // The code too, at the end (where a pattern for `db/job: failed` still matches), so a line can
      // be matched without its words, which change between releases.
      const code = typeof fields['code'] === 'string' ? ` [${fields['code']}]` : '';
      process.stderr.write(`${time} ${level}${where}: ${message}${code}\n`);
    }
  }
}

/** What one hook did, as the journal keeps it. */
export interface HookOutcome {
  readonly hook: 'before' | 'after' | 'onFailure';
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly durationMs: number;
  /** The end of what it printed (stdout and stderr together), at most HOOK_OUTPUT_LIMIT characters. */
  readonly output: string;
}

const HOOK_OUTPUT_LIMIT = 4000;
const DEFAULT_HOOK_TIMEOUT_MS = 5 * 60_000;
/**
 * How long a hook's output is still read after its shell exited: what the hook started in the
 * background (`helper &`) may hold the output open for as long as it lives.
 */
const HOOK_DRAIN_MS = 1000;

/**
 * Runs one hook with sh -c in a process group of its own (so a timeout or a stop ends what it
 * started too), the job's facts as STRATA_* variables and as JSON on stdin.
 */
export function runHook(hook: HookOutcome['hook'], command: string, facts: Record<string, unknown>, hooks: HooksConfig, signal: AbortSignal, hidden: readonly string[] = []): Promise<HookOutcome> {
  const timeoutMs = hooks.timeout !== undefined ? durationMs(parseDuration(hooks.timeout, 'hooks.timeout')) : DEFAULT_HOOK_TIMEOUT_MS;
  // The daemon's own secrets are not the hook's business, nor are the variables `hidden` names
  // (those the notification channels take their secrets from).
  const env = environmentWithoutSecrets(hidden);
  env['STRATA_HOOK'] = hook;
  for (const [key, value] of Object.entries(facts)) {
    if (value === undefined || value === null) continue;
    env[`STRATA_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', command], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    let output = '';
    const collect = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-HOOK_OUTPUT_LIMIT);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    let timedOut = false;
    const killGroup = (): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutMs);
    signal.addEventListener('abort', killGroup, { once: true });
    // A hook that does not read its stdin closes it early: that is fine.
    child.stdin.on('error', () => undefined);
    child.stdin.end(JSON.stringify({ hook, ...facts }) + '\n');
    let finished = false;
    let drain: NodeJS.Timeout | undefined;
    const finish = (exitCode: number | null, sig: NodeJS.Signals | null, spawnError?: Error): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      clearTimeout(drain);
      signal.removeEventListener('abort', killGroup);
      resolve({ hook, exitCode, signal: sig, timedOut, durationMs: Date.now() - started, output: spawnError ? spawnError.message : output });
    };
    child.on('error', (err) => finish(null, null, err));
    // The hook is done when its shell exits, not when the last process holding its output does:
    // what it left behind gets HOOK_DRAIN_MS to finish printing, then, still holding the output,
    // it is killed with the hook's process group.
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      drain = setTimeout(() => {
        killGroup();
        child.stdout.destroy();
        child.stderr.destroy();
        finish(code, sig);
      }, HOOK_DRAIN_MS);
    });
    child.on('close', (code, sig) => finish(code, sig));
  });
}

/** A hook failed when it did not exit 0, or when it ran out of time (whatever it exited with). */
function hookFailed(outcome: HookOutcome): boolean {
  return outcome.timedOut || outcome.exitCode !== 0;
}

function hookFailure(outcome: HookOutcome): string {
  return outcome.timedOut ? 'timed out' : outcome.exitCode === null ? `ended by ${outcome.signal ?? 'an error'}` : `exited with ${outcome.exitCode}`;
}

/** What runs one job's work: its details for the journal and the log. */
type JobResult = { readonly summary: string; readonly details: Record<string, unknown>; readonly backupId?: string };

/** How a run came about. */
type Trigger = 'schedule' | 'queued' | 'missed' | 'start';

/** A job's latest run as the journal has it, for `missedRuns: "run-once"`. */
interface LastRun {
  readonly startedAt: Date;
  readonly dueAt: Date;
  /** The daemon was killed during it, or stopped it (onStop "abort"). */
  readonly interrupted: boolean;
}

interface DatabaseState {
  busy: boolean;
  /** The run that holds the database (running, or waiting for a concurrency slot). */
  current: { job: PlannedJob; scheduledAt: Date } | undefined;
  /** Queued runs, at most one per job. */
  readonly queue: { job: PlannedJob; scheduledAt: Date }[];
}

export interface DaemonOptions {
  readonly logFormat: 'text' | 'json';
  /** Serve the metrics over HTTP here too (`--metrics-listen`). */
  readonly metricsListen?: ListenAddress;
  /** The options the daemon was started with (reload reads the config again with them). */
  readonly global: GlobalOptions;
}

/**
 * `strata daemon`: runs the jobs of strata.config.json until SIGTERM or SIGINT. Jobs run in this
 * process through the SDK, one repository opened once (so the passphrase is read once, at start).
 */
export class Daemon {
  readonly #log: DaemonLog;
  readonly #options: DaemonOptions;
  #ctx: CommandContext;
  #repo!: Repository;
  /** Set once the repository is open (jobs may run from then on). */
  #opened = false;
  #crons: Cron[] = [];
  #databases = new Map<string, DatabaseState>();
  #slotsFree: number;
  #slotWaiters: (() => void)[] = [];
  /** Jobs in progress, each with its own abort. */
  readonly #running = new Set<{ controller: AbortController; done: Promise<void> }>();
  /** Continuous jobs by `database/job`. */
  readonly #continuous = new Map<string, { controller: AbortController; done: Promise<void>; config: ReplicateJobConfig }>();
  #stopping = false;
  #metricsTimer: NodeJS.Timeout | undefined;
  #notifier: Notifier | undefined;
  /** The metrics being computed (and written), so that two updates never run at once. */
  #metricsWrite: Promise<void> = Promise.resolve();
  /**
   * The reloads asked for, one after the other: SIGHUPs close together must not interleave (each
   * would stop the crons the other has not made yet, then both would add theirs).
   */
  #reloads: Promise<void> = Promise.resolve();
  /** Escalations of overdue failures being sent (a stop waits for them). */
  readonly #overdue = new Set<Promise<void>>();
  /** The latest metrics, for --metrics-listen. */
  #metrics: string | undefined;

  constructor(ctx: CommandContext, options: DaemonOptions) {
    this.#ctx = ctx;
    this.#options = options;
    this.#log = new DaemonLog(options.logFormat);
    this.#slotsFree = this.#settings().concurrency ?? 2;
  }

  #settings(): DaemonConfig {
    return this.#ctx.loaded.config.daemon ?? {};
  }

  /** Runs until `stop` aborts; resolves once every job is finished or aborted. */
  async run(stop: AbortSignal): Promise<void> {
    // The notifications' secrets are read now, so a missing one stops the start (exit 2), not the first report.
    if (this.#ctx.loaded.config.notifications) checkChannelSecrets(this.#ctx.loaded.config.notifications);
    checkDatabaseUrls(this.#ctx.loaded.config);
    const onHangup = (): void => {
      this.#reloads = this.#reloads.then(() => this.#reload()).catch((err: unknown) => this.#log.write('error', `SIGHUP: the reload failed: ${redactedMessage(err)}`));
    };
    // A SIGHUP without a listener ends the process (Node's default). One that comes while the
    // repository opens (a slow passphrase command, a distant bucket) is a reload asked for
    // early, done once the jobs are scheduled.
    let hangupWhileOpening = false;
    const onHangupWhileOpening = (): void => {
      hangupWhileOpening = true;
      this.#log.write('info', 'SIGHUP: the configuration will be read again once the daemon has started');
    };
    process.on('SIGHUP', onHangupWhileOpening);
    // What engines and the repository say as process warnings (a backup that cannot be restored,
    // a role a verification's scratch copy lacks) goes into the daemon's log as its own lines, in
    // its format, with the job it came from, instead of the CLI's plain line among them.
    const cliWarningListeners = process.listeners('warning');
    process.removeAllListeners('warning');
    const onWarning = (warning: Error & { code?: string }): void => {
      const scope = warningScope.getStore();
      const code = typeof warning.code === 'string' ? warning.code : undefined;
      // Only Strata's own codes go into the journal: Node's and libraries' warnings (said once
      // per process) would be pinned on whichever job happened to be running.
      if (code?.startsWith('STRATA_')) scope?.codes.add(code);
      const message = code?.startsWith('STRATA_') ? warning.message : `${warning.name}: ${warning.message}`;
      this.#log.write('warn', redactUrlPasswords(message), { ...scope?.where, ...(code ? { code } : {}) });
    };
    process.on('warning', onWarning);
    let listener: Awaited<ReturnType<typeof listenForMetrics>> | undefined;
    try {
      listener = this.#options.metricsListen ? await listenForMetrics(this.#options.metricsListen, () => this.#metrics) : undefined;
      this.#repo = await this.#ctx.repository();
      // The passphrase is read now, while someone may be watching, not at the first job.
      await this.#repo.unlock();
      this.#opened = true;
      await this.#makeNotifier();
      process.off('SIGHUP', onHangupWhileOpening);
      process.on('SIGHUP', onHangup);
      if (listener) this.#log.write('info', `serving the metrics at ${listener.url}`);
      this.#log.write('info', `started (pid ${process.pid}) with ${this.#ctx.loaded.file ?? 'no config file'}; repository ${this.#ctx.repositoryPath()}`);
      // In the chain of reloads: a SIGHUP while the first start reads the journal waits for it,
      // instead of scheduling beside it (every job would then fire twice).
      const first = this.#start(true);
      this.#reloads = first.catch(() => undefined);
      if (hangupWhileOpening) onHangup();
      await first;
      this.#updateMetrics();
      // Ages in the file grow between jobs too.
      this.#metricsTimer = setInterval(() => this.#updateMetrics(), 60_000);
      await new Promise<void>((resolve) => (stop.aborted ? resolve() : stop.addEventListener('abort', () => resolve(), { once: true })));
    } finally {
      process.off('warning', onWarning);
      for (const cliListener of cliWarningListeners) process.on('warning', cliListener);
      // A SIGHUP without a listener ends the process (Node's default): during the stop, while jobs
      // finish or abort, and until the process exits, one (a reload asked for by then) is ignored.
      process.on('SIGHUP', () => this.#log.write('info', 'SIGHUP ignored: the daemon is stopping'));
      process.off('SIGHUP', onHangup);
      process.off('SIGHUP', onHangupWhileOpening);
      clearInterval(this.#metricsTimer);
      if (this.#opened) {
        await this.#shutdown();
        this.#updateMetrics();
        await this.#metricsWrite;
      }
      await listener?.close();
    }
  }

  /** Schedules the config's jobs, in place of any scheduled before. */
  async #start(initial: boolean): Promise<void> {
    for (const cron of this.#crons) cron.stop();
    this.#crons = [];
    if (this.#stopping) return;
    const jobs = plannedJobs(this.#ctx.loaded.config);
    if (jobs.length === 0) this.#log.write('warn', 'no jobs: add "schedules" to strata.config.json (see strata daemon --help)');
    const missedRuns = this.#settings().missedRuns ?? 'skip';
    const history: Map<string, LastRun> = initial && missedRuns === 'run-once' ? await this.#lastStarts() : new Map();
    for (const job of jobs) {
      if (job.config.job === 'replicate') {
        this.#startContinuous(job, job.config);
        continue;
      }
      const config = job.config;
      // The time each run is due, for the journal (and for judging how late it started): croner
      // calls a little after it, so the due time is the next run as known before the call.
      let dueAt: Date | null = null;
      const cron = cronOf(config, (self) => {
        const scheduledAt = dueAt ?? new Date();
        dueAt = self.nextRun();
        this.#due(job, scheduledAt, 'schedule');
      });
      dueAt = cron.nextRun();
      this.#crons.push(cron);
      const last = history.get(`${job.database}/${job.name}`);
      const missed = last ? cronOf(config).nextRun(last.startedAt) : null;
      if (missed && missed.getTime() < Date.now()) {
        this.#log.write('info', `missed the run due ${missed.toISOString()} while not running; running it now (daemon.missedRuns is run-once)`, { database: job.database, job: job.name });
        this.#due(job, missed, 'missed');
      } else if (last?.interrupted) {
        // Its due time has passed and the next is ahead: without this, a nightly backup cut off by
        // a reboot would wait a whole day.
        this.#log.write('info', `the run due ${last.dueAt.toISOString()} was interrupted (the daemon stopped or was killed during it); running it again now (daemon.missedRuns is run-once)`, { database: job.database, job: job.name });
        this.#due(job, last.dueAt, 'missed');
      }
      this.#log.write('info', `${describeJob(config)} at "${config.cron}"${config.timezone ? ` (${config.timezone})` : ''}; next ${cron.nextRun()?.toISOString() ?? 'never'}`, { database: job.database, job: job.name });
    }
    for (const line of describeDueTogether(jobsDueTogether(jobs))) this.#log.write('info', line);
  }

    /** Each job's latest run in the journal; runs that never started are left out. */
  async #lastStarts(): Promise<Map<string, LastRun>> {
    const starts = new Map<string, LastRun>();
    for (const op of await this.#repo.journal.operations()) {
      if (op.kind !== 'job' || op.last.details?.['skipped'] === true) continue;
      const key = `${op.last.database}/${String(op.last.details?.['job'])}`;
      const startedAt = new Date(op.startedAt);
      const seen = starts.get(key);
      if (seen && seen.startedAt >= startedAt) continue;
      const scheduledAt = op.last.details?.['scheduledAt'];
      const dueAt = typeof scheduledAt === 'string' && !Number.isNaN(Date.parse(scheduledAt)) ? new Date(scheduledAt) : startedAt;
      starts.set(key, { startedAt, dueAt, interrupted: op.interrupted || op.last.details?.['interrupted'] === true });
    }
    return starts;
  }

  async #reload(): Promise<void> {
    if (this.#stopping) return;
    let next: CommandContext;
    try {
      next = new CommandContext(this.#options.global);
      if (next.repositoryPath() !== this.#ctx.repositoryPath()) throw new StrataError('USAGE', 'the repository changed; restart the daemon to use another repository');
      if (next.loaded.config.notifications) checkChannelSecrets(next.loaded.config.notifications);
      checkDatabaseUrls(next.loaded.config);
    } catch (err) {
      this.#log.write('error', `SIGHUP: kept the running configuration: ${redactedMessage(err)}`);
      return;
    }
    for (const cron of this.#crons) cron.stop();
    this.#crons = [];
    // Continuous jobs that are still configured the same keep running; the others stop.
    const wanted = new Map<string, ReplicateJobConfig>(plannedJobs(next.loaded.config).flatMap((j) => (j.config.job === 'replicate' ? [[`${j.database}/${j.name}`, j.config] as [string, ReplicateJobConfig]] : [])));
    for (const [key, running] of this.#continuous) {
      if (JSON.stringify(wanted.get(key)) !== JSON.stringify(running.config)) {
        running.controller.abort(new StrataError('ABORTED', 'removed from the configuration'));
        await running.done;
        this.#continuous.delete(key);
      }
    }
    // Queued runs follow the new configuration: a job the reload removed or changed does not run
    // once more from the queue with its old settings.
    const planned = new Map(plannedJobs(next.loaded.config).map((j) => [`${j.database}/${j.name}`, j]));
    for (const state of this.#databases.values()) {
      const kept = state.queue.flatMap((q) => {
        const now = planned.get(`${q.job.database}/${q.job.name}`);
        return now && JSON.stringify(now.config) === JSON.stringify(q.job.config) ? [{ job: now, scheduledAt: q.scheduledAt }] : [];
      });
      state.queue.splice(0, state.queue.length, ...kept);
    }
    const oldSlots = this.#settings().concurrency ?? 2;
    this.#ctx = next;
    this.#slotsFree += (this.#settings().concurrency ?? 2) - oldSlots;
    this.#wakeSlots();
    await this.#makeNotifier();
    this.#log.write('info', `SIGHUP: reloaded ${next.loaded.file ?? 'the configuration'}`);
    await this.#start(false);
  }

  /**
   * The notifier of the current config, watching its scheduled jobs for overdue failures. At start
   * its failure counts are seeded from the journal; a reload keeps the running one's counts (the
   * journal may not show yet a run that ended a moment ago) and restarts its timers.
   */
  async #makeNotifier(): Promise<void> {
    const config = this.#ctx.loaded.config.notifications;
    if (!config) {
      this.#notifier?.dispose();
      this.#notifier = undefined;
      return;
    }
    let notifier = this.#notifier;
    if (notifier) notifier.reconfigure(config);
    else {
      const created: Notifier = new Notifier(config, await this.#repo.journal.operations(), (facts, streak) => {
        const sending = this.#escalateOverdue(created, facts, streak).finally(() => this.#overdue.delete(sending));
        this.#overdue.add(sending);
      });
      notifier = created;
    }
    notifier.watch(plannedJobs(this.#ctx.loaded.config).flatMap((j) => (j.config.job === 'replicate' ? [] : [`${j.database}/${j.name}`])));
    this.#notifier = notifier;
  }

  /**
   * A job's failures have lasted `notifications.escalation.after` and it has not run since: the
   * escalation goes out now, journaled as a `notification` entry (so a restart knows it went out).
   */
  async #escalateOverdue(notifier: Notifier, facts: JobFacts, streak: { failures: number; since: string }): Promise<void> {
    const where = { database: facts.database, job: facts.job };
    this.#log.write('warn', `failing since ${streak.since} (${streak.failures} failed run${streak.failures === 1 ? '' : 's'}), longer than notifications.escalation.after: escalating`, where);
    try {
      const details = { job: facts.job, jobKind: facts.jobKind, event: 'escalation', escalated: true, failures: streak.failures, since: streak.since };
      const handle = await this.#repo.journal.begin('notification', { database: facts.database, details });
      const deliveries = await notifier.send(facts, ['escalation']);
      for (const d of deliveries) this.#log.write(d.ok ? 'info' : 'error', `${d.event} notification ${d.ok ? `sent to ${d.channel}` : `to ${d.channel} failed: ${d.error}`}`, where);
      await handle.complete({ details: { ...details, notifications: deliveries } });
    } catch (err) {
      this.#log.write('error', `could not escalate: ${redactedMessage(err)}`, where);
    }
  }

  /** Tells the channels about a run; what was sent (or not) goes to the log and the journal. */
  async #notify(facts: JobFacts): Promise<{ notifications?: Delivery[]; escalated?: true }> {
    const notifier = this.#notifier;
    if (!notifier) return {};
    const events = notifier.eventsFor(facts);
    const deliveries = await notifier.send(facts, events);
    for (const d of deliveries) {
      this.#log.write(d.ok ? 'info' : 'error', `${d.event} notification ${d.ok ? `sent to ${d.channel}` : `to ${d.channel} failed: ${d.error}`}`, { database: facts.database, job: facts.job });
    }
    return { ...(deliveries.length > 0 ? { notifications: deliveries } : {}), ...(events.includes('escalation') ? { escalated: true as const } : {}) };
  }

  /**
   * Computes the metrics again, after the update in progress: for daemon.metricsFile (when set)
   * and --metrics-listen, which serves the same text the file holds.
   */
  #updateMetrics(): void {
    const file = this.#settings().metricsFile;
    if (file === undefined && !this.#options.metricsListen) return;
    this.#metricsWrite = this.#metricsWrite.then(async () => {
      let text: string;
      try {
        text = await metricsText(this.#repo);
      } catch (err) {
        this.#log.write('error', `could not compute the metrics: ${redactedMessage(err)}`);
        return;
      }
      this.#metrics = text;
      if (file === undefined) return;
      try {
        writeTextfile(file, text);
      } catch (err) {
        this.#log.write('error', `could not write the metrics file ${file}: ${redactedMessage(err)}`);
      }
    });
  }

  #state(database: string): DatabaseState {
    let state = this.#databases.get(database);
    if (!state) this.#databases.set(database, (state = { busy: false, current: undefined, queue: [] }));
    return state;
  }

  /** A run is due: start it, or queue or skip it when the database is busy. */
  #due(job: PlannedJob, scheduledAt: Date, trigger: Trigger): void {
    if (this.#stopping) return;
    const state = this.#state(job.database);
    if (state.busy) {
      const config = job.config as ScheduledJobConfig;
      const policy = config.overlap ?? this.#settings().overlap ?? 'skip';
      const sameInstant = (other: { job: PlannedJob; scheduledAt: Date } | undefined): boolean => other !== undefined && other.scheduledAt.getTime() === scheduledAt.getTime();
      // A second timer of the same job for the same instant is no second run.
      if ((sameInstant(state.current) && state.current!.job.name === job.name) || state.queue.some((q) => q.job.name === job.name && sameInstant(q))) return;
      const alreadyQueued = state.queue.some((q) => q.job.name === job.name);
      // Jobs due at the same instant (an hourly and a nightly job at 02:00) are not an overlap:
      // whichever timer fired first must not make the others look as if they came while it ran.
      // They run one after the other, whatever the overlap policy; "skip" is for a run in progress.
      const dueWith = state.current !== undefined && state.current.scheduledAt.getTime() === scheduledAt.getTime() ? state.current.job.name : undefined;
      if ((policy === 'queue' || dueWith !== undefined) && !alreadyQueued) {
        state.queue.push({ job, scheduledAt });
        if (dueWith !== undefined) {
          this.#log.write('info', `due at ${scheduledAt.toISOString()} together with ${dueWith}; runs after it`, { database: job.database, job: job.name });
          void this.#recordNotRun(job, scheduledAt, 'queued', `due at the same time as ${job.database}/${dueWith}, which runs first`);
        } else {
          this.#log.write('info', `due at ${scheduledAt.toISOString()} while another job of ${job.database} runs; queued`, { database: job.database, job: job.name });
          void this.#recordNotRun(job, scheduledAt, 'queued', `another job of ${job.database} was running`);
        }
      } else {
        this.#log.write('warn', `due at ${scheduledAt.toISOString()} while another job of ${job.database} runs; skipped${alreadyQueued ? ' (a run of it is already queued)' : ''}`, { database: job.database, job: job.name });
        void this.#recordNotRun(job, scheduledAt, 'skipped', `another job of ${job.database} was running`);
      }
      return;
    }
    state.busy = true;
    state.current = { job, scheduledAt };
    const controller = new AbortController();
    const entry = { controller, done: Promise.resolve() };
    entry.done = this.#runWhenSlot(job, scheduledAt, trigger, controller.signal)
      .catch((err: unknown) => this.#log.write('error', `could not run: ${redactedMessage(err)}`, { database: job.database, job: job.name }))
      .finally(() => {
        this.#updateMetrics();
        this.#running.delete(entry);
        state.busy = false;
        state.current = undefined;
        const next = state.queue.shift();
        if (next) this.#due(next.job, next.scheduledAt, 'queued');
      });
    this.#running.add(entry);
  }

  /** A run that did not start (skipped, or queued behind another job), in the journal. */
  async #recordNotRun(job: PlannedJob, scheduledAt: Date, what: 'skipped' | 'queued', reason: string): Promise<void> {
    try {
      const details = { job: job.name, jobKind: job.config.job, scheduledAt: scheduledAt.toISOString(), [what]: true, reason };
      const handle = await this.#repo.journal.begin('job', { database: job.database, details });
      await handle.complete({ details });
    } catch (err) {
      this.#log.write('error', `could not write to the journal: ${redactedMessage(err)}`, { database: job.database, job: job.name });
    }
  }

  /** Waits for a concurrency slot; a stop ends the wait at once (the run then does not start). */
  async #acquireSlot(): Promise<void> {
    while (this.#slotsFree <= 0 && !this.#stopping) await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
    this.#slotsFree--;
  }

  #releaseSlot(): void {
    this.#slotsFree++;
    this.#wakeSlots();
  }

  #wakeSlots(): void {
    for (const wake of this.#slotWaiters.splice(0)) wake();
  }

  async #runWhenSlot(job: PlannedJob, scheduledAt: Date, trigger: Trigger, signal: AbortSignal): Promise<void> {
    await this.#acquireSlot();
    try {
      // No new job starts once the daemon stops, whether it aborts or finishes the running ones:
      // a run that waited for a slot (daemon.concurrency) until then is journaled as skipped.
      if (signal.aborted || this.#stopping) {
        this.#log.write('info', `due at ${scheduledAt.toISOString()}; not started: the daemon is stopping`, { database: job.database, job: job.name });
        await this.#recordNotRun(job, scheduledAt, 'skipped', 'the daemon was stopping');
        return;
      }
      // Started: it has its slot (a run that waited for one, with daemon.concurrency, starts late).
      await this.#runJob(job, job.config as ScheduledJobConfig, scheduledAt, new Date(), trigger, signal);
    } finally {
      this.#releaseSlot();
    }
  }

  async #runJob(job: PlannedJob, config: ScheduledJobConfig, scheduledAt: Date, startedAt: Date, trigger: Trigger, signal: AbortSignal): Promise<void> {
    const facts: Record<string, unknown> = {
      database: job.database,
      job: job.name,
      jobKind: config.job,
      scheduledAt: scheduledAt.toISOString(),
      startedAt: startedAt.toISOString(),
      trigger,
      ...(config.job === 'backup' ? { backupType: config.type ?? 'full' } : {}),
    };
    const where = { database: job.database, job: job.name };
    const scope: WarningScope = { where, codes: new Set() };
    /** The codes of the warnings the run gave, for its journal entry. */
    const warned = (): Record<string, unknown> => (scope.codes.size > 0 ? { warnings: [...scope.codes] } : {});
    this.#log.write('info', `${describeJob(config)} started (due ${scheduledAt.toISOString()}${trigger !== 'schedule' ? `, ${trigger}` : ''})`, where);
    // Set once the journal took the run: a repository that cannot be written fails the run like
    // any other error (notified, onFailure run), and the journal's own records are best effort.
    let handle: JournalEntryHandle | undefined;
    const writeJournal = async (write: (handle: JournalEntryHandle) => Promise<void>): Promise<void> => {
      if (!handle) return;
      try {
        await write(handle);
      } catch (err) {
        this.#log.write('error', `could not write to the journal: ${redactedMessage(err)}`, where);
      }
    };
    const hooks: HookOutcome[] = [];
    const hooksConfig = config.hooks ?? {};
    const hook = async (which: HookOutcome['hook'], extra: Record<string, unknown>): Promise<HookOutcome | undefined> => {
      const command = hooksConfig[which];
      if (command === undefined) return undefined;
      // The after and onFailure hooks run even when a stop aborted the job (they may undo a before).
      const hidden = channelSecretVariables(this.#ctx.loaded.config.notifications);
      const outcome = await runHook(which, command, { ...facts, ...extra }, hooksConfig, which === 'before' ? signal : new AbortController().signal, hidden);
      hooks.push(outcome);
      this.#log.write(hookFailed(outcome) ? 'warn' : 'info', `${which} hook ${hookFailed(outcome) ? hookFailure(outcome) : 'succeeded'}`, { database: job.database, job: job.name });
      return outcome;
    };
    let result: JobResult;
    try {
      handle = await this.#repo.journal.begin('job', { database: job.database, details: facts });
      const before = await hook('before', {});
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new StrataError('ABORTED', 'interrupted');
      if (before && hookFailed(before)) throw new StrataError('HOOK_FAILED', `the before hook ${hookFailure(before)}; the job did not run`);
      result = await warningScope.run(scope, () => this.#work(job.database, config, signal));
      await warningsDelivered();
    } catch (err) {
      await warningsDelivered();
      const interrupted = signal.aborted;
      await hook('onFailure', { outcome: 'failed', error: redactedMessage(err), ...(interrupted ? { interrupted: true } : {}) });
      // A job stopped with the daemon did not fail on its own: nobody is told.
      const told = interrupted ? {} : await this.#notify({ ...(facts as unknown as JobFacts), outcome: 'failed', error: redactedMessage(err) });
      await writeJournal((h) => h.fail(err, { details: { ...facts, hooks, ...told, ...warned(), ...(interrupted ? { interrupted: true } : {}) } }));
      this.#log.write('error', `${interrupted ? 'interrupted' : 'failed'}: ${redactedMessage(err)}`, { database: job.database, job: job.name, ...(isStrataError(err) ? { code: err.code } : {}) });
      return;
    }
    const made = result.backupId !== undefined ? { backupId: result.backupId } : {};
    const after = await hook('after', { outcome: 'succeeded', ...made });
    if (after && hookFailed(after)) {
      // The job's work is done (a backup made stays), but what the hook was to do afterwards (take
      // the service out of maintenance) is not: a failed run, told and journaled as one.
      const err = new StrataError('HOOK_FAILED', `the after hook ${hookFailure(after)}; the job's own work succeeded: ${result.summary}`);
      await hook('onFailure', { outcome: 'failed', error: redactedMessage(err), ...made });
      const told = await this.#notify({ ...(facts as unknown as JobFacts), outcome: 'failed', error: redactedMessage(err), ...made });
      await writeJournal((h) => h.fail(err, { ...made, details: { ...facts, ...result.details, hooks, ...told, ...warned() } }));
      this.#log.write('error', `failed: ${redactedMessage(err)}`, { database: job.database, job: job.name, code: err.code });
      return;
    }
    const told = await this.#notify({ ...(facts as unknown as JobFacts), outcome: 'succeeded', ...made });
    await writeJournal((h) => h.complete({ ...(result.backupId !== undefined ? { backupId: result.backupId } : {}), details: { ...facts, ...result.details, hooks, ...told, ...warned() } }));
    this.#log.write('info', `succeeded: ${result.summary}`, { database: job.database, job: job.name });
  }

  /** The job's own work, through the SDK. */
  async #work(database: string, config: ScheduledJobConfig, signal: AbortSignal): Promise<JobResult> {
    const repo = this.#repo;
    const locator = ownEntry(this.#ctx.loaded.config.databases, database)?.url;
    switch (config.job) {
      case 'backup': {
        if (locator === undefined) throw new StrataError('USAGE', `${database} is no longer in the configuration`);
        let mirror: string | undefined;
        const record = await repo.backup(locator, {
          database,
          type: config.type ?? 'full',
          autoFull: true,
          tags: ['scheduled'],
          signal,
          onWarning: (message) => this.#log.write('warn', redactUrlPasswords(message), warningScope.getStore()?.where ?? { database }),
          onMirror: (m) => {
            // Its message may quote more than the journal keeps; the log and the journal get what it may.
            mirror = m.ok ? 'ok' : `failed: ${redactUrlPasswords(m.error?.message ?? 'unknown error')}`;
          },
        });
        return {
          summary: `${record.id} (${record.type}, stored ${record.storedBytes} bytes)${mirror ? `; mirror ${mirror}` : ''}`,
          backupId: record.id,
          details: { type: record.type, storedBytes: record.storedBytes, ...(mirror ? { mirror } : {}) },
        };
      }
      case 'verify': {
        const level = config.level ?? 'quick';
        const candidates = (await repo.list({ database })).filter((b) => b.type !== 'schema-only' || level === 'quick');
        if (candidates.length === 0) throw new StrataError('BACKUP_NOT_FOUND', `${database} has no restore point to verify yet`);
        const chosen = config.sample === undefined ? [newest(candidates)] : verificationOrder(candidates, level).slice(0, config.sample);
        const outcomes: { id: string; outcome: string }[] = [];
        const newer: string[] = [];
        for (const record of chosen) {
          let reports: VerifyReport[];
          try {
            reports = await repo.verify({ id: record.id }, { level, signal });
          } catch (err) {
            // A newer Strata wrote it: the others are still verified, and the job fails below, so
            // that the daemon's operator hears it needs upgrading.
            if (writtenByNewerStrata(err)) {
              newer.push(err.message);
              continue;
            }
            // A prune elsewhere (the oldest first, as this samples them) removed it meanwhile.
            if (!isStrataError(err, 'BACKUP_NOT_FOUND') || (await repo.list({ database })).some((b) => b.id === record.id)) throw err;
            outcomes.push({ id: record.id, outcome: 'removed' });
            continue;
          }
          outcomes.push({ id: record.id, outcome: reports.some((r) => r.outcome === 'failed') ? 'failed' : 'passed' });
        }
        const failed = outcomes.filter((o) => o.outcome === 'failed');
        const newerToo = newer.length > 0 ? `; ${newer.length} written by a newer Strata could not be verified: ${newer.join('; ')}` : '';
        if (failed.length > 0) throw new StrataError('VERIFY_FAILED', `${level} verification failed for ${failed.map((f) => f.id).join(', ')}${newerToo}`);
        if (newer.length > 0) throw new StrataError('ARTIFACT_FOREIGN', `${newer.join('; ')}; upgrade this Strata to verify them`);
        const passed = outcomes.filter((o) => o.outcome === 'passed');
        const removed = outcomes.filter((o) => o.outcome === 'removed');
        return {
          summary: `${level} verification passed for ${passed.map((o) => o.id).join(', ') || 'none'}${removed.length > 0 ? `; removed while it ran: ${removed.map((o) => o.id).join(', ')}` : ''}`,
          details: { level, verified: outcomes },
        };
      }
      case 'prune': {
        const plan = await repo.prune((db) => retentionFor(this.#ctx.loaded.config, db), { database, signal });
        const logFiles = (plan.removeLog ?? []).reduce((sum, d) => sum + d.files, 0);
        return {
          summary: `kept ${plan.keep.length}, removed ${plan.remove.length}${logFiles > 0 ? ` and ${logFiles} archived log file(s)` : ''}`,
          details: { kept: plan.keep.length, removed: plan.remove.map((d) => d.id), ...(logFiles > 0 ? { logFilesRemoved: logFiles } : {}) },
        };
      }
      case 'health': {
        const thresholds = {
          ...DEFAULT_HEALTH,
          ...(config.maxAge !== undefined ? { maxAgeMs: durationMs(parseDuration(config.maxAge, 'maxAge')) } : {}),
          ...(config.maxUnverified !== undefined ? { maxUnverifiedMs: durationMs(parseDuration(config.maxUnverified, 'maxUnverified')) } : {}),
        };
        const space = repo.storage.capabilities.space && repo.storage.space ? await repo.storage.space() : undefined;
        const backups = await repo.list();
        const operations = await repo.journal.operations();
        const now = new Date();
        // A check of the whole repository (database null: no backups at all, its disk) concerns every database's job.
        const checks = [...assessHealth(backups, operations, space, thresholds, now).checks, ...assessContinuity(backups, await repo.segments(), operations, thresholds, now), ...assessLogArchive(await repo.logWindows({ database }), thresholds, now)].filter(
          (c) => c.database == null || c.database === database,
        );
        // The report knows only the databases the repository has seen; one never backed up is the
        // unhealthiest of all, not a database with nothing to check.
        if (!checks.some((c) => c.check === 'backup-age')) checks.push({ check: 'backup-age', database, status: 'unhealthy', message: `${database} has no backups at all` });
        const problems = checks.filter((c) => c.status !== 'ok');
        if (problems.length > 0) throw new StrataError('UNHEALTHY', problems.map((c) => `${c.check}: ${c.message}`).join('; '));
        return { summary: `healthy (${checks.length} checks)`, details: { checks: checks.length } };
      }
      case 'copy': {
        const mirror = await repo.mirror();
        if (!mirror) throw new StrataError('USAGE', 'a copy job needs "mirror" in strata.config.json');
        const result = await repo.copyTo(mirror, { databases: [database], signal });
        return { summary: `copied ${result.copied.length} backup(s) to ${result.target}`, details: { copied: result.copied.map((c) => c.record.id), target: result.target } };
      }
    }
  }

  /** A continuous job: runs until stopped, started again `restartAfter` after a failure. */
  #startContinuous(job: PlannedJob, config: ReplicateJobConfig): void {
    const key = `${job.database}/${job.name}`;
    if (this.#continuous.has(key)) return;
    const controller = new AbortController();
    const restartMs = config.restartAfter !== undefined ? durationMs(parseDuration(config.restartAfter, 'restartAfter')) : 30_000;
    const loop = async (): Promise<void> => {
      while (!controller.signal.aborted) {
        const entry = ownEntry(this.#ctx.loaded.config.databases, job.database);
        const locator = entry?.url;
        if (locator === undefined) return;
        if (entry?.method === 'physical') {
          // A cluster's continuous protection is its WAL, streamed as `strata wal-receive` does.
          try {
            await this.#streamWal(job, locator, config, controller.signal);
          } catch (err) {
            if (controller.signal.aborted) break;
            this.#log.write('error', `wal-receive failed: ${redactedMessage(err)}; starting it again in ${restartMs / 1000} s`, { database: job.database, job: job.name });
            await sleepUnlessAborted(restartMs, controller.signal);
          }
          continue;
        }
        this.#log.write('info', `replicate started (every ${config.intervalMs ?? 1000} ms)`, { database: job.database, job: job.name });
        try {
          const summary = await this.#repo.replicate(locator, {
            database: job.database,
            intervalMs: config.intervalMs ?? 1000,
            switchMode: config.switchMode === true,
            ...(config.checkpointLock === false ? { leaveCheckpoints: true } : {}),
            signal: controller.signal,
            onEvent: (event) => {
              if (event.kind === 'base') this.#log.write('info', `replicate took ${event.base.id} as a new base (${event.reason})`, { database: job.database, job: job.name });
              if (event.kind === 'retry') this.#log.write('warn', `replicate could not write a segment (${redactedMessage(event.error)}); trying again`, { database: job.database, job: job.name });
            },
          });
          this.#log.write('info', `replicate stopped: shipped ${summary.transactions} transactions in ${summary.segments} segments`, { database: job.database, job: job.name });
        } catch (err) {
          if (controller.signal.aborted) break;
          this.#log.write('error', `replicate failed: ${redactedMessage(err)}; starting it again in ${restartMs / 1000} s`, { database: job.database, job: job.name });
          await sleepUnlessAborted(restartMs, controller.signal);
        }
      }
    };
    this.#continuous.set(key, { controller, config, done: warningScope.run({ where: { database: job.database, job: job.name }, codes: new Set() }, loop) });
  }

  /** The `replicate` job of a physical entry: its WAL streamed into the repository until stopped. */
  async #streamWal(job: PlannedJob, locator: string, config: ReplicateJobConfig, signal: AbortSignal): Promise<void> {
    const where = { database: job.database, job: job.name };
    const slot = defaultSlotName(job.database);
    const spool = path.join(stateFolder(), 'wal-receive', job.database);
    const intervalMs = config.intervalMs ?? 5000;
    const summary = await streamClusterWal(this.#repo, job.database, locator, {
      spool,
      slot,
      intervalMs,
      signal,
      say: (line) => this.#log.write('warn', `wal-receive: ${line}`, where),
      onEvent: (event) => {
        if (event.kind === 'slot') this.#log.write('info', `wal-receive ${event.created ? 'created' : 'uses'} the replication slot ${event.slot}`, where);
        if (event.kind === 'streaming') this.#log.write('info', event.attempt === 1 ? `wal-receive streaming (the segment in progress archived every ${intervalMs} ms)` : 'wal-receive connected again, streaming', where);
        if (event.kind === 'disconnected') this.#log.write('warn', `wal-receive: the connection ended (${event.reason}); trying again in ${Math.round(event.retryInMs / 1000)} s`, where);
        if (event.kind === 'ship-failed') this.#log.write('warn', `wal-receive could not archive (${event.reason}); trying again in ${Math.round(event.retryInMs / 1000)} s`, where);
      },
    });
    this.#log.write('info', `wal-receive stopped: archived ${summary.segments} segment(s) and ${summary.partials} partial(s)`, where);
  }

  async #shutdown(): Promise<void> {
    this.#stopping = true;
    // Runs waiting for a concurrency slot learn now that they will not start.
    this.#wakeSlots();
    // A reload under way finishes first (it schedules nothing now), so that what it set up is stopped below.
    await this.#reloads;
    // No escalation goes out for failures that outlast the daemon; one being sent is finished.
    this.#notifier?.dispose();
    for (const cron of this.#crons) cron.stop();
    for (const state of this.#databases.values()) state.queue.length = 0;
    const abort = (this.#settings().onStop ?? 'abort') === 'abort';
    const running = [...this.#running];
    if (running.length > 0) this.#log.write('info', `stopping: ${abort ? 'aborting' : 'waiting for'} ${running.length} running job(s)`);
    if (abort) for (const r of running) r.controller.abort(new StrataError('ABORTED', 'the daemon was stopped (SIGTERM)'));
    for (const c of this.#continuous.values()) c.controller.abort(new StrataError('ABORTED', 'the daemon was stopped'));
    await Promise.all([...running.map((r) => r.done), ...[...this.#continuous.values()].map((c) => c.done), ...this.#overdue]);
    this.#log.write('info', 'stopped');
  }
}

function newest(records: readonly BackupRecord[]): BackupRecord {
  return [...records].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id))[0]!;
}

/**
 * The order a sampling verify takes restore points in: never verified at this level first (oldest
 * first), then the ones verified longest ago. A quick verification does not count for a full one.
 */
export function verificationOrder(records: readonly BackupRecord[], level: 'quick' | 'full'): BackupRecord[] {
  const lastAt = (b: BackupRecord): string => (b.verification && (level === 'quick' || b.verification.level === 'full') ? b.verification.at : '');
  return [...records].sort((a, b) => lastAt(a).localeCompare(lastAt(b)) || a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
}
