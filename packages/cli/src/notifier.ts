import { hostname } from 'node:os';
import { durationMs, parseDuration, readSecret } from '@strata/sdk';
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
  since: number;
  escalated: boolean;
}

const DEFAULT_ESCALATE_AFTER_FAILURES = 3;
const SEND_TIMEOUT_MS = 30_000;

/**
 * Decides which events a run is (failure, recovery, escalation, success) and sends them to the
 * channels that want them. The failures of each job are counted in memory and seeded from the
 * journal at start, so a restart neither forgets a failing job nor announces a recovery twice.
 */
export class Notifier {
  readonly #config: NotificationsConfig;
  readonly #streaks = new Map<string, Streak>();

  constructor(config: NotificationsConfig, history: readonly JournalOperation[] = []) {
    this.#config = config;
    // Each job's trailing failed runs, oldest first.
    // A run a stop interrupted is no failure of the job (the running daemon does not report one
    // either), so it neither counts towards a streak nor ends one.
    const runs = history.filter(
      (o) => o.kind === 'job' && o.last.details?.['skipped'] !== true && o.last.details?.['queued'] !== true && o.last.details?.['interrupted'] !== true && o.status !== 'RUNNING',
    );
    for (const op of [...runs].sort((a, b) => a.startedAt.localeCompare(b.startedAt))) {
      const key = `${op.last.database}/${String(op.last.details?.['job'])}`;
      if (op.status === 'COMPLETED') this.#streaks.delete(key);
      else {
        const streak = this.#streaks.get(key) ?? { failures: 0, since: Date.parse(op.startedAt), escalated: false };
        streak.failures++;
        streak.escalated = streak.escalated || op.last.details?.['escalated'] === true;
        this.#streaks.set(key, streak);
      }
    }
  }

  /** The events of this run, in the order they are sent. */
  eventsFor(facts: JobFacts, now = Date.now()): NotificationEvent[] {
    const key = `${facts.database}/${facts.job}`;
    const streak = this.#streaks.get(key);
    if (facts.outcome === 'succeeded') {
      this.#streaks.delete(key);
      return streak ? ['recovery', 'success'] : ['success'];
    }
    const current = streak ?? { failures: 0, since: Date.parse(facts.startedAt), escalated: false };
    current.failures++;
    this.#streaks.set(key, current);
    const events: NotificationEvent[] = ['failure'];
    const afterFailures = this.#config.escalation?.afterFailures ?? DEFAULT_ESCALATE_AFTER_FAILURES;
    const afterMs = this.#config.escalation?.after !== undefined ? durationMs(parseDuration(this.#config.escalation.after, 'notifications.escalation.after')) : Infinity;
    if (!current.escalated && (current.failures >= afterFailures || now - current.since >= afterMs)) {
      current.escalated = true;
      events.push('escalation');
    }
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
      return `Strata: ESCALATION: ${what} has failed ${m.failures} times in a row since ${m.since ?? m.startedAt}: ${m.error ?? 'unknown error'}`;
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
  const transport = nodemailer.createTransport({
    host: channel.host,
    port: channel.port ?? (channel.secure ? 465 : 587),
    secure: channel.secure === true,
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
