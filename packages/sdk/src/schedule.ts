import { Cron } from 'croner';
import type { JournalOperation } from '@strata/core';
import { schedulesFor } from './config.js';
import type { JobConfig, StrataConfig } from './config.js';

/** One job of a database as a client shows it: what it does, when it runs next, how its last run went. */
export interface ScheduledJobView {
  readonly job: string;
  readonly kind: JobConfig['job'];
  /** `backup full`, `verify quick (sample 1)`, `replicate`. */
  readonly what: string;
  /** Absent for the continuous replicate job. */
  readonly cron?: string;
  readonly timezone?: string;
  /** The next due time (ISO), for a scheduled job. */
  readonly next?: string;
  /** The last run strata daemon journaled (skipped and queued runs aside). */
  readonly last?: { readonly at: string; readonly outcome: 'succeeded' | 'failed' | 'interrupted' | 'running'; readonly error?: string };
}

/** A paused cron of a scheduled job's expression and time zone, as strata daemon reads them. */
export function jobCron(job: Exclude<JobConfig, { job: 'replicate' }>): Cron {
  return new Cron(job.cron, { mode: '5-or-6-parts', paused: true, ...(job.timezone !== undefined ? { timezone: job.timezone } : {}) });
}

/** `backup full`, `verify full (sample 1)`, `replicate`: what a job does, in a few words. */
export function describeJob(job: JobConfig): string {
  switch (job.job) {
    case 'backup':
      return `backup ${job.type ?? 'full'}`;
    case 'verify':
      return `verify ${job.level ?? 'quick'}${job.sample !== undefined ? ` (sample ${job.sample})` : ' (newest)'}`;
    default:
      return job.job;
  }
}

/** The jobs of one database with their next run and, from the journal's `job` operations, their last outcome. */
export function scheduleOf(config: StrataConfig, database: string, operations: readonly JournalOperation[] = [], now = new Date()): ScheduledJobView[] {
  const runs = operations.filter((o) => o.kind === 'job' && o.last.database === database && o.last.details?.['skipped'] !== true && o.last.details?.['queued'] !== true);
  return Object.entries(schedulesFor(config, database))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, job]) => {
      const last = runs.filter((o) => o.last.details?.['job'] === name).sort((a, b) => a.startedAt.localeCompare(b.startedAt)).at(-1);
      const next = job.job === 'replicate' ? null : jobCron(job).nextRun(now);
      return {
        job: name,
        kind: job.job,
        what: describeJob(job),
        ...(job.job !== 'replicate' ? { cron: job.cron, ...(job.timezone !== undefined ? { timezone: job.timezone } : {}) } : {}),
        ...(next ? { next: next.toISOString() } : {}),
        ...(last
          ? {
              last: {
                at: last.last.at,
                outcome: last.interrupted || last.last.details?.['interrupted'] === true ? 'interrupted' : last.status === 'RUNNING' ? 'running' : last.status === 'COMPLETED' ? 'succeeded' : 'failed',
                ...(last.last.error ? { error: last.last.error.message } : {}),
              } as const,
            }
          : {}),
      };
    });
}
