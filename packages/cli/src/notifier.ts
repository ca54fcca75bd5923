import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { StrataError, durationMs, parseDuration, readSecret } from '@strata/sdk';
import type { ChannelConfig, JournalOperation, NotificationEvent, NotificationsConfig } from '@strata/sdk';

/** What a notification says about one run of a job. */
export interface JobFacts {
  readonly database: string;
  readonly job: string;
  readonly jobKind: string;
  readonly scheduledAt: string;
  readonly startedAt: string;
  readonly outcome: 'succeeded' | 'failed';
  readonly error?: string;
  readonly backupId?: string;
}

/** What happened to one notification, for the journal and the log (never the URL or a password). */
export interface Delivery {
  readonly channel: string;
  readonly event: NotificationEvent;
  readonly ok: boolean;
  readonly error?: string;
}

/** A job's current run of failures. */
interface Streak {
  failures: number;
  /** When the first failed run of the streak started (ms). */
  since: number;
  escalated: boolean;
  /** The facts of its latest failed run, for an escalation that its duration brings. */
  last: JobFacts;
  /** Fires the escalation once the failures have lasted `escalation.after`. */
  timer?: NodeJS.Timeout;
}

const DEFAULT_ESCALATE_AFTER_FAILURES = 3;
const SEND_TIMEOUT_MS = 30_000;
/** setTimeout's longest delay; a longer one is waited for in steps. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

function afterMsOf(config: NotificationsConfig): number {
  return config.escalation?.after !== undefined ? durationMs(parseDuration(config.escalation.after, 'notifications.escalation.after')) : Infinity;
}

/**
 * Decides which events a run is (failure, recovery, escalation, success) and sends them to the
 * channels that want them. The failures of each job are counted in memory and seeded from the
 * journal at start, so a restart neither forgets a failing job nor announces a recovery twice.
 *
 * With `escalation.after`, a job's failures escalate once they have lasted that long even if the
 * job does not run again meanwhile: a timer per failing job, from {@link watch} on, calls
 * `onOverdue`; a success, an escalation by count, and {@link dispose} cancel it.
 */
export class Notifier {
  #config: NotificationsConfig;
  readonly #streaks = new Map<string, Streak>();
  #afterMs: number;
  readonly #onOverdue: ((facts: JobFacts, streak: { failures: number; since: string }) => void) | undefined;
  /** The jobs whose overdue failures escalate (those of the running configuration); none before {@link watch}. */
  #watched = new Set<string>();
  #disposed = false;

  constructor(config: NotificationsConfig, history: readonly JournalOperation[] = [], onOverdue?: (facts: JobFacts, streak: { failures: number; since: string }) => void) {
    this.#config = config;
    this.#afterMs = afterMsOf(config);
    this.#onOverdue = onOverdue;
    // Each job's trailing failed runs, oldest first.
    // A run a stop interrupted is no failure of the job (the running daemon does not report one
    // either), so it neither counts towards a streak nor ends one.
    const runs = history.filter(
      (o) =>
        (o.kind === 'job' && o.last.details?.['skipped'] !== true && o.last.details?.['queued'] !== true && o.last.details?.['interrupted'] !== true && o.status !== 'RUNNING') ||
        (o.kind === 'notification' && o.last.details?.['escalated'] === true),
    );
    for (const op of [...runs].sort((a, b) => a.startedAt.localeCompare(b.startedAt))) {
      const key = `${op.last.database}/${String(op.last.details?.['job'])}`;
      if (op.kind === 'notification') {
        // An escalation its duration brought (the daemon journals it apart from the runs).
        const streak = this.#streaks.get(key);
        if (streak) streak.escalated = true;
      } else if (op.status === 'COMPLETED') this.#streaks.delete(key);
      else {
        const details = op.last.details ?? {};
        const startedAt = typeof details['startedAt'] === 'string' ? details['startedAt'] : op.startedAt;
        const last: JobFacts = {
          database: op.last.database ?? '',
          job: String(details['job']),
          jobKind: String(details['jobKind']),
          scheduledAt: typeof details['scheduledAt'] === 'string' ? details['scheduledAt'] : startedAt,
          startedAt,
          outcome: 'failed',
          ...(op.last.error ? { error: op.last.error.message } : {}),
        };
        const streak = this.#streaks.get(key) ?? { failures: 0, since: Date.parse(startedAt), escalated: false, last };
        streak.failures++;
        streak.last = last;
        streak.escalated = streak.escalated || details['escalated'] === true;
        this.#streaks.set(key, streak);
      }
    }
  }

  /**
   * Starts the escalation timers of these jobs (`database/job`) and of no others: a job the
   * configuration no longer has does not escalate. Call again after a reload.
   */
  watch(jobs: Iterable<string>): void {
    this.#watched = new Set(jobs);
    for (const [key, streak] of this.#streaks) {
      if (this.#watched.has(key)) this.#arm(key, streak);
      else this.#disarm(streak);
    }
  }

  /**
   * Takes a reloaded configuration (channels, escalation), keeping the failures counted so far:
   * they are the daemon's own, up to the run that ended a moment ago, which the journal may not
   * show yet. Call {@link watch} after it.
   */
  reconfigure(config: NotificationsConfig): void {
    this.#config = config;
    this.#afterMs = afterMsOf(config);
    for (const streak of this.#streaks.values()) this.#disarm(streak);
  }

  /** Cancels every timer; nothing is sent after this. */
  dispose(): void {
    this.#disposed = true;
    for (const streak of this.#streaks.values()) this.#disarm(streak);
  }

  #arm(key: string, streak: Streak): void {
    if (this.#disposed || streak.escalated || streak.timer || !Number.isFinite(this.#afterMs) || !this.#onOverdue) return;
    const wait = (): void => {
      const left = streak.since + this.#afterMs - Date.now();
      streak.timer = setTimeout(() => {
        streak.timer = undefined;
        if (this.#streaks.get(key) !== streak || streak.escalated || this.#disposed) return;
        if (streak.since + this.#afterMs > Date.now()) return wait();
        streak.escalated = true;
        this.#onOverdue!(streak.last, { failures: streak.failures, since: new Date(streak.since).toISOString() });
      }, Math.min(Math.max(left, 0), LONGEST_TIMER_MS));
    };
    wait();
  }

  #disarm(streak: Streak): void {
    clearTimeout(streak.timer);
    streak.timer = undefined;
  }

  /** The events of this run, in the order they are sent. */
  eventsFor(facts: JobFacts, now = Date.now()): NotificationEvent[] {
    const key = `${facts.database}/${facts.job}`;
    const streak = this.#streaks.get(key);
    if (facts.outcome === 'succeeded') {
      if (streak) this.#disarm(streak);
      this.#streaks.delete(key);
      return streak ? ['recovery', 'success'] : ['success'];
    }
    const current = streak ?? { failures: 0, since: Date.parse(facts.startedAt), escalated: false, last: facts };
    current.failures++;
    current.last = facts;
    this.#streaks.set(key, current);
    const events: NotificationEvent[] = ['failure'];
    const afterFailures = this.#config.escalation?.afterFailures ?? DEFAULT_ESCALATE_AFTER_FAILURES;
    if (!current.escalated && (current.failures >= afterFailures || now - current.since >= this.#afterMs)) {
      current.escalated = true;
      events.push('escalation');
    }
    if (current.escalated) this.#disarm(current);
    else if (this.#watched.has(key)) this.#arm(key, current);
    return events;
  }

  /** The failures in a row of the job, as of the last run seen. */
  failuresOf(database: string, job: string): { failures: number; since?: string } {
    const streak = this.#streaks.get(`${database}/${job}`);
    return streak ? { failures: streak.failures, since: new Date(streak.since).toISOString() } : { failures: 0 };
  }

  /** Sends each event to the channels that want it; a channel that fails does not stop the others. */
  async send(facts: JobFacts, events: readonly NotificationEvent[]): Promise<Delivery[]> {
    const deliveries: Promise<Delivery>[] = [];
    const streak = this.failuresOf(facts.database, facts.job);
    for (const event of events) {
      for (const [name, channel] of Object.entries(this.#config.channels)) {
        if (!channel.events.includes(event)) continue;
        deliveries.push(
          deliver(name, channel, { ...facts, ...streak, event, host: hostname() }).then(
            (): Delivery => ({ channel: name, event, ok: true }),
            (err: unknown): Delivery => ({ channel: name, event, ok: false, error: (err as Error).message }),
          ),
        );
      }
    }
    return Promise.all(deliveries);
  }
}

type Message = JobFacts & { event: NotificationEvent; failures: number; since?: string; host: string };

function headline(m: Message): string {
  const what = `${m.database}/${m.job} (${m.jobKind})`;
  switch (m.event) {
    case 'failure':
      return `Strata: ${what} FAILED${m.failures > 1 ? ` (${m.failures} times in a row)` : ''}: ${m.error ?? 'unknown error'}`;
    case 'escalation':
      return `Strata: ESCALATION: ${what} has failed ${m.failures} time${m.failures === 1 ? '' : 's'} in a row since ${m.since ?? m.startedAt}: ${m.error ?? 'unknown error'}`;
    case 'recovery':
      return `Strata: ${what} recovered: it succeeded again`;
    case 'success':
      return `Strata: ${what} succeeded${m.backupId ? ` (${m.backupId})` : ''}`;
  }
}

async function deliver(name: string, channel: ChannelConfig, message: Message): Promise<void> {
  const where = `notifications.channels.${name}`;
  if (channel.type === 'webhook') {
    const url = readSecret(channel.url, `${where}.url`);
    const body = channel.format === 'slack' ? { text: `${headline(message)}\n(host ${message.host}, due ${message.scheduledAt})` } : { ...message, text: headline(message) };
    let response: Response;
    try {
      response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(SEND_TIMEOUT_MS) });
    } catch (err) {
      // The URL holds the webhook's token: the error says what went wrong, never where to.
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      throw new Error(`the webhook could not be reached (${cause ?? (err as Error).name})`);
    }
    await response.arrayBuffer().catch(() => undefined);
    if (!response.ok) throw new Error(`the webhook answered HTTP ${response.status}`);
    return;
  }
  const password = channel.password ? readSecret(channel.password, `${where}.password`) : undefined;
  // Loaded for the first email: nodemailer is some forty modules that no other run of strata needs.
  const { default: nodemailer } = await import('nodemailer');
  // A password goes only over TLS (from the start, or STARTTLS, which must then be offered: one
  // who can strip STARTTLS from the server's greeting would read it otherwise), except to a relay
  // on this machine, where the connection never leaves it.
  const host = channel.host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  const loopback = host === 'localhost' || host === '::1' || ((isIP(host) === 4 || host.startsWith('::ffff:')) && /^(?:::ffff:)?127\./.test(host));
  const transport = nodemailer.createTransport({
    host: channel.host,
    port: channel.port ?? (channel.secure ? 465 : 587),
    secure: channel.secure === true,
    requireTLS: password !== undefined && channel.secure !== true && !loopback,
    ...(channel.user !== undefined ? { auth: { user: channel.user, ...(password !== undefined ? { pass: password } : {}) } } : {}),
    connectionTimeout: SEND_TIMEOUT_MS,
    greetingTimeout: SEND_TIMEOUT_MS,
    socketTimeout: SEND_TIMEOUT_MS,
  });
  try {
    await transport.sendMail({
      from: channel.from,
      to: [...channel.to],
      subject: headline(message),
      text: `${headline(message)}\n\n${Object.entries(message)
        .filter(([k, v]) => v !== undefined && k !== 'event')
        .map(([k, v]) => `${k}: ${String(v)}`)
        .join('\n')}\n`,
    });
  } catch (err) {
    const text = (err as Error).message;
    throw new Error(password !== undefined ? text.split(password).join('‹redacted›') : text);
  } finally {
    transport.close();
  }
}

/**
 * Reads every secret the channels name, so that a missing variable or an unreadable file stops the
 * daemon at start (or a reload) with the setting named, not at the first failure it should report.
 */
export function checkChannelSecrets(config: NotificationsConfig): void {
  for (const [name, channel] of Object.entries(config.channels)) {
    const where = `notifications.channels.${name}`;
    if (channel.type === 'webhook') {
      const url = readSecret(channel.url, `${where}.url`);
      let protocol: string | undefined;
      let credentials = false;
      try {
        const parsed = new URL(url);
        protocol = parsed.protocol;
        credentials = parsed.username !== '' || parsed.password !== '';
      } catch {
        protocol = undefined;
      }
      const source = channel.url.env !== undefined ? `the environment variable ${channel.url.env}` : channel.url.file;
      // Never quoted: the URL is the secret.
      if (protocol !== 'http:' && protocol !== 'https:') {
        throw new StrataError('USAGE', `${where}.url: ${source} does not hold an http:// or https:// URL`);
      }
      // fetch refuses such a URL at every delivery ("could not be reached"): said at start instead.
      if (credentials) {
        throw new StrataError('USAGE', `${where}.url: ${source} holds a URL with a user name or password in it (user:password@host), which HTTP clients refuse to send; use the webhook's token URL (most services put the token in the path)`);
      }
    } else if (channel.password) readSecret(channel.password, `${where}.password`);
  }
}

/** The environment variables the channels take secrets from (hooks do not get them). */
export function channelSecretVariables(config: NotificationsConfig | undefined): string[] {
  return Object.values(config?.channels ?? {}).flatMap((c) => {
    const source = c.type === 'webhook' ? c.url : c.password;
    return source?.env !== undefined ? [source.env] : [];
  });
}
