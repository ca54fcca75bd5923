import { StrataError } from '@strata/sdk';
import { Daemon, cronOf, describeDueTogether, describeJob, jobsDueTogether, plannedJobs } from './daemon.js';
import type { CommandContext } from './context.js';
import { printTable } from './table.js';
import { metricsText, writeTextfile } from './metrics.js';
import { parseListenAddress } from './metrics-listener.js';

/** `strata schedule`: every job of strata.config.json with its next runs. */
export function scheduleCommand(ctx: CommandContext, options: { count: number }): number {
  const planned = plannedJobs(ctx.loaded.config);
  const dueTogether = jobsDueTogether(planned);
  const jobs = planned.map((job) => {
    const config = job.config;
    if (config.job === 'replicate') return { database: job.database, job: job.name, kind: config.job, what: describeJob(config), continuous: true, next: [] as string[] };
    const next = cronOf(config).nextRuns(options.count).map((d) => d.toISOString());
    return { database: job.database, job: job.name, kind: config.job, what: describeJob(config), cron: config.cron, ...(config.timezone !== undefined ? { timezone: config.timezone } : {}), next };
  });
  if (ctx.json) {
    ctx.printJson({ config: ctx.loaded.file ?? null, jobs, dueTogether: dueTogether.map((pair) => ({ database: pair.database, jobs: pair.jobs, next: pair.next.toISOString() })) });
    return 0;
  }
  if (jobs.length === 0) {
    process.stdout.write(`no jobs: add "schedules" to ${ctx.loaded.file ?? 'strata.config.json'} (see strata daemon --help)\n`);
    return 0;
  }
  printTable(
    ['DATABASE', 'JOB', 'WHAT', 'WHEN', 'NEXT RUNS'],
    jobs.map((j) => [j.database, j.job, j.what, 'cron' in j ? `${j.cron}${'timezone' in j ? ` (${j.timezone})` : ''}` : 'continuous', j.next.length > 0 ? j.next.join(', ') : 'while the daemon runs']),
  );
  for (const line of describeDueTogether(dueTogether)) process.stdout.write(`${line}\n`);
  return 0;
}

/** `strata daemon`: runs the schedules in the foreground until SIGTERM or SIGINT. */
export async function daemonCommand(ctx: CommandContext, options: { logFormat?: string; metricsListen?: string; metricsAllowRemote?: boolean }, signal: AbortSignal): Promise<number> {
  const logFormat = options.logFormat ?? 'text';
  if (logFormat !== 'text' && logFormat !== 'json') throw new StrataError('USAGE', `daemon: --log-format must be text or json (got ${JSON.stringify(logFormat)})`);
  if (options.metricsAllowRemote && options.metricsListen === undefined) throw new StrataError('USAGE', 'daemon: --metrics-allow-remote goes with --metrics-listen HOST:PORT');
  const metricsListen = options.metricsListen !== undefined ? parseListenAddress(options.metricsListen, options.metricsAllowRemote === true) : undefined;
  if (!ctx.loaded.file) throw new StrataError('USAGE', 'daemon: no strata.config.json found; the daemon runs the "schedules" of a config file (pass --config FILE)');
  await new Daemon(ctx, { logFormat, global: ctx.options, ...(metricsListen ? { metricsListen } : {}) }).run(signal);
  return 0;
}

/** `strata metrics`: the Prometheus text format on stdout, or written to a textfile. */
export async function metricsCommand(ctx: CommandContext, options: { textfile?: string }): Promise<number> {
  if (ctx.json) throw new StrataError('USAGE', 'metrics: the output is the Prometheus text format; for JSON use strata inventory --json or strata health --json');
  if (options.textfile !== undefined && !options.textfile.endsWith('.prom')) throw new StrataError('USAGE', `metrics: --textfile ${JSON.stringify(options.textfile)} must end in .prom (node_exporter's textfile collector reads only those)`);
  const text = await metricsText(await ctx.repository());
  if (options.textfile !== undefined) {
    try {
      writeTextfile(options.textfile, text);
    } catch (err) {
      throw new StrataError('IO', `metrics: cannot write ${options.textfile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); give --textfile a file in a folder you can write to (node_exporter's textfile directory)`, { cause: err });
    }
  }
  else process.stdout.write(text);
  return 0;
}
