import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { openRepository } from '@strata/sdk';
import type { JournalOperation } from '@strata/sdk';
import { finished, strataAsync } from './env.js';

/** A running `strata daemon`, its stderr collected as it comes. */
export interface RunningDaemon {
  readonly child: ChildProcess;
  readonly exit: ReturnType<typeof finished>;
  /** Everything it logged so far. */
  log(): string;
  /** Waits until its log matches `pattern` (at or after `from` characters), failing after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs?: number, from?: number): Promise<RegExpMatchArray>;
}

export function writeConfig(file: string, config: unknown): void {
  writeFileSync(file, JSON.stringify(config, null, 2));
}

export function startDaemon(config: string, extra: string[] = [], env: Record<string, string> = {}): RunningDaemon {
  const child = strataAsync(['daemon', '--config', config, ...extra], { env });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = finished(child);
  return {
    child,
    exit,
    log: () => stderr,
    async waitFor(pattern, timeoutMs = 120_000, from = 0) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const match = stderr.slice(from).match(pattern);
        if (match) return match;
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the daemon ended before logging ${pattern}:\n${stderr}`);
        if (Date.now() > deadline) throw new Error(`the daemon did not log ${pattern} within ${timeoutMs} ms:\n${stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
  };
}

/** The daemon's job entries in the journal, oldest first. */
export async function jobOperations(repo: string): Promise<JournalOperation[]> {
  const repository = await openRepository(repo);
  try {
    return (await repository.journal.operations()).filter((o) => o.kind === 'job').sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  } finally {
    await repository.close();
  }
}

/** A job entry's detail. */
export function detail<T = unknown>(op: JournalOperation, key: string): T {
  return op.last.details?.[key] as T;
}
