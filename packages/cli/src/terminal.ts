import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import * as readline from 'node:readline';
import { Passphrase, StrataError } from '@strata/sdk';
import type { ProgressEvent } from '@strata/sdk';

/** True when a person is watching stderr (progress bars, prompts make sense). */
export function interactive(json: boolean): boolean {
  return !json && process.stderr.isTTY === true && !process.env['CI'];
}

/** Human-readable byte counts (1000-based, as disks and network rates are usually shown). */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${units[unit]}`;
}

/** "3m ago", "2h ago", "5d ago". */
export function formatAge(iso: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 90) return `${seconds}s ago`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

/**
 * A one-line progress bar on stderr: phase, percentage, bytes, rate and ETA. Redraws at most ten
 * times a second; does nothing unless a person is watching.
 */
export class ProgressBar {
  readonly #enabled: boolean;
  readonly #label: string;
  #lastDraw = 0;
  #started = Date.now();
  #phase = '';
  #drawn = false;

  constructor(label: string, enabled: boolean) {
    this.#label = label;
    this.#enabled = enabled;
  }

  update = (event: ProgressEvent): void => {
    if (!this.#enabled) return;
    if (event.phase !== this.#phase) {
      this.#phase = event.phase;
      this.#started = Date.now();
    }
    const now = Date.now();
    if (now - this.#lastDraw < 100 && event.doneBytes !== event.totalBytes) return;
    this.#lastDraw = now;
    const elapsed = Math.max(0.001, (now - this.#started) / 1000);
    const rate = event.doneBytes / elapsed;
    const total = event.totalBytes ?? 0;
    const fraction = total > 0 ? Math.min(1, event.doneBytes / total) : 0;
    const width = 24;
    const filled = Math.round(fraction * width);
    const bar = total > 0 ? `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%` : '';
    const eta = total > 0 && rate > 0 ? ` ETA ${Math.max(0, Math.round((total - event.doneBytes) / rate))}s` : '';
    const amounts = total > 0 ? `${formatBytes(event.doneBytes)} / ${formatBytes(total)}` : formatBytes(event.doneBytes);
    const line = `${this.#label} ${event.phase.padEnd(8)} ${bar} ${amounts} ${formatBytes(rate)}/s${eta}`;
    process.stderr.write(`\r\x1b[2K${line}`);
    this.#drawn = true;
  };

  done(): void {
    if (this.#drawn) process.stderr.write('\r\x1b[2K');
    this.#drawn = false;
  }
}

/** Where the passphrase may come from, in order: the environment, a file, then a prompt. */
export interface PassphraseSources {
  readonly passphraseFile?: string;
  /** May we ask on the terminal? */
  readonly prompt: boolean;
  /** Ask twice (when setting a new passphrase). */
  readonly confirm?: boolean;
}

/** Reads the passphrase without ever putting it on a command line or in a log. */
export async function readPassphrase(sources: PassphraseSources): Promise<Passphrase | undefined> {
  const env = process.env['STRATA_PASSPHRASE'];
  if (env !== undefined && env !== '') return new Passphrase(env);
  if (sources.passphraseFile) {
    let text: string;
    try {
      text = readFileSync(sources.passphraseFile, 'utf8');
    } catch (err) {
      throw new StrataError('USAGE', `passphrase file ${sources.passphraseFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    // One trailing newline is what editors and `echo` add; it is not part of the passphrase.
    return new Passphrase(text.replace(/\r?\n$/, ''));
  }
  if (!sources.prompt || !process.stdin.isTTY || !process.stderr.isTTY) return undefined;
  const first = await promptHidden('Repository passphrase: ');
  if (sources.confirm) {
    const second = await promptHidden('Repeat the passphrase: ');
    if (first !== second) throw new StrataError('USAGE', 'the two passphrases differ');
  }
  return new Passphrase(first);
}

/** Asks for a line on the terminal without echoing it. */
export function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let muted = false;
    const output = new Writable({
      write(chunk, _encoding, callback) {
        if (!muted) process.stderr.write(chunk);
        callback();
      },
    });
    const rl = readline.createInterface({ input: process.stdin, output, terminal: true });
    rl.on('SIGINT', () => {
      rl.close();
      process.stderr.write('\n');
      reject(new StrataError('ABORTED', 'cancelled at the passphrase prompt'));
    });
    rl.question(question, (answer) => {
      rl.close();
      process.stderr.write('\n');
      resolve(answer);
    });
    muted = true;
  });
}

/** Asks a yes/no question on the terminal; anything but y/yes is no. */
export function confirm(question: string): Promise<boolean> {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    rl.question(`${question} [y/N] `, (answer) => {
      rl.close();
      resolve(/^y(es)?$/i.test(answer.trim()));
    });
  });
}

/**
 * Text from the repository made safe for a terminal: control characters (ESC, CR, LF, TAB, C1)
 * shown as `\xNN` escapes, so stored text can never move the cursor, recolour or clear the screen.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
