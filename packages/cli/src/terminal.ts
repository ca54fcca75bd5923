import { Writable } from 'node:stream';
import * as readline from 'node:readline';
import { DATA_PHASES, Passphrase, StrataError, passphraseFromCommand, passphraseFromFile } from '@strata/sdk';
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
 * A one-line progress bar on stderr: phase, percentage, bytes, rate and ETA. Draws every event
 * (the SDK sends at most about ten a second per phase); does nothing unless a person is watching.
 */
export class ProgressBar {
  readonly #enabled: boolean;
  readonly #label: string;
  #started = Date.now();
  #phase = '';
  #drawn = false;

  constructor(label: string, enabled: boolean) {
    this.#label = label;
    this.#enabled = enabled;
  }

  update = (event: ProgressEvent): void => {
    if (!this.#enabled) return;
    process.stderr.write(`\r\x1b[2K${this.render(event)}`);
    this.#drawn = true;
  };

  /**
   * The line for an event. A phase
   * (and, in a chain, each backup's read) has its own clock: the rate is that phase's bytes over
   * its time. A phase that moves no data (commit, check) shows no amounts and no rate, and a rate
   * needs half a second of a phase to mean anything.
   */
  render(event: ProgressEvent, now = Date.now()): string {
    const phase = `${event.phase}\u0000${event.backupId ?? ''}`;
    if (phase !== this.#phase) {
      this.#phase = phase;
      this.#started = now;
    }
    if (!DATA_PHASES.has(event.phase)) return `${this.#label} ${{ commit: 'putting it in place', check: 'checking the restored copy' }[event.phase as 'commit' | 'check'] ?? event.phase}`;
    const elapsed = (now - this.#started) / 1000;
    const rate = elapsed >= 0.5 ? event.doneBytes / elapsed : undefined;
    const total = event.totalBytes ?? 0;
    const fraction = total > 0 ? Math.min(1, event.doneBytes / total) : 0;
    const width = 24;
    const filled = Math.round(fraction * width);
    const bar = total > 0 ? `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ` : '';
    const eta = total > 0 && rate !== undefined && rate > 0 && event.doneBytes < total ? ` ETA ${Math.max(0, Math.round((total - event.doneBytes) / rate))}s` : '';
    const amounts = total > 0 ? `${formatBytes(event.doneBytes)} / ${formatBytes(total)}` : formatBytes(event.doneBytes);
    return `${this.#label} ${event.phase.padEnd(8)} ${bar}${amounts}${rate !== undefined ? ` ${formatBytes(Math.round(rate))}/s` : ''}${eta}`;
  }

  done(): void {
    if (this.#drawn) process.stderr.write('\r\x1b[2K');
    this.#drawn = false;
  }
}

/** Where the passphrase may come from, in order: the environment, a file, then a prompt. */
export interface PassphraseSources {
  readonly passphraseFile?: string;
  /** A command whose standard output is the passphrase (restic's --password-command). */
  readonly passphraseCommand?: string;
  /** May we ask on the terminal? */
  readonly prompt: boolean;
  /** Ask twice (when setting a new passphrase). */
  readonly confirm?: boolean;
  /**
   * Which passphrase: the repository's (default; flags --passphrase-*, variables STRATA_PASSPHRASE*)
   * a new one for `strata key add` and `passwd` (--new-passphrase-*, STRATA_NEW_PASSPHRASE*), or
   * the target repository's of `strata copy` (--to-passphrase-*, STRATA_TO_PASSPHRASE*), or the
   * mirror's ("passphraseFile"/"passphraseCommand" of "mirror" in the config, STRATA_MIRROR_PASSPHRASE*).
   */
  readonly which?: 'repository' | 'new' | 'target' | 'mirror';
}

/**
 * Reads the passphrase without ever putting it on a command line or in a log. What the user
 * named explicitly wins: --passphrase-command or --passphrase-file, then STRATA_PASSPHRASE_COMMAND,
 * STRATA_PASSPHRASE_FILE, STRATA_PASSPHRASE, then the prompt (as restic orders its sources).
 * `attempt` counts tries after a wrong passphrase: only the prompt can give another answer.
 */
export async function readPassphrase(sources: PassphraseSources, attempt = 1): Promise<Passphrase | undefined> {
  const fresh = sources.which === 'new';
  const target = sources.which === 'target';
  const mirror = sources.which === 'mirror';
  const flag = fresh ? '--new-passphrase' : target ? '--to-passphrase' : mirror ? 'mirror.passphrase' : '--passphrase';
  const variable = fresh ? 'STRATA_NEW_PASSPHRASE' : target ? 'STRATA_TO_PASSPHRASE' : mirror ? 'STRATA_MIRROR_PASSPHRASE' : 'STRATA_PASSPHRASE';
  const whose = fresh ? 'new ' : target ? "target repository's " : mirror ? "mirror's " : '';
  if (sources.passphraseCommand !== undefined && sources.passphraseFile !== undefined) {
    throw new StrataError('USAGE', mirror ? 'give the mirror\'s passphrase one way in strata.config.json: passphraseCommand or passphraseFile, not both' : `give the ${whose}passphrase one way: ${flag}-command or ${flag}-file, not both`);
  }
  const { command, file } = chosenSource(sources, variable);
  if (command !== undefined) return attempt === 1 ? passphraseFromCommand(command) : undefined;
  // Asked twice on a terminal means a new passphrase: it seals a key file (init, key add, passwd).
  if (file !== undefined) return attempt === 1 ? passphraseFromFile(file, { sealsKeyFile: sources.confirm === true }) : undefined;
  const value = process.env[variable] === '' ? undefined : process.env[variable];
  if (value !== undefined) return attempt === 1 ? new Passphrase(value) : undefined;
  if (!sources.prompt || !process.stdin.isTTY || !process.stderr.isTTY) return undefined;
  if (attempt > 1) process.stderr.write('wrong passphrase, try again\n');
  const first = await promptHidden(fresh ? 'New passphrase: ' : target ? 'Target repository passphrase: ' : 'Repository passphrase: ');
  if (sources.confirm) {
    const second = await promptHidden(fresh ? 'Repeat the new passphrase: ' : 'Repeat the passphrase: ');
    if (first !== second) throw new StrataError('USAGE', 'the two passphrases differ');
  }
  return new Passphrase(first);
}

/** The command or file readPassphrase reads the passphrase from (flags first, then the variables), if any. */
export function chosenSource(sources: PassphraseSources, variable: string): { command?: string; file?: string } {
  const env = (name: string): string | undefined => (process.env[name] === '' ? undefined : process.env[name]);
  const command = sources.passphraseCommand ?? (sources.passphraseFile === undefined ? env(`${variable}_COMMAND`) : undefined);
  const file = sources.passphraseFile ?? (command === undefined ? env(`${variable}_FILE`) : undefined);
  return { ...(command !== undefined ? { command } : {}), ...(file !== undefined ? { file } : {}) };
}

/**
 * Refuses the repository's passphrase file when it could not seal a key file that gpg opens (see
 * PassphraseFileOptions.sealsKeyFile): for `key migrate`, which seals one with the passphrase that
 * opened the repository.
 */
export function checkPassphraseFileSeals(sources: PassphraseSources): void {
  const { command, file } = chosenSource(sources, 'STRATA_PASSPHRASE');
  if (command === undefined && file !== undefined) passphraseFromFile(file, { sealsKeyFile: true });
}

/** True when a passphrase is available without asking (a flag or one of the variables). */
export function passphraseGiven(sources: PassphraseSources): boolean {
  const set = (name: string): boolean => (process.env[name] ?? '') !== '';
  const variable = { repository: 'STRATA_PASSPHRASE', new: 'STRATA_NEW_PASSPHRASE', target: 'STRATA_TO_PASSPHRASE', mirror: 'STRATA_MIRROR_PASSPHRASE' }[sources.which ?? 'repository'];
  return sources.passphraseFile !== undefined || sources.passphraseCommand !== undefined || set(`${variable}_COMMAND`) || set(`${variable}_FILE`) || set(variable);
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

/**
 * The environment for a command Strata starts on the user's behalf (a `run` command, a daemon's
 * hook): this process's, without the passphrases and their sources (STRATA_PASSPHRASE,
 * STRATA_PASSPHRASE_FILE, STRATA_MIRROR_PASSPHRASE_COMMAND, ...) and the variables `hidden` names.
 * A migration or a notification script has no use for them, and every process it starts would
 * inherit them.
 */
export function environmentWithoutSecrets(hidden: readonly string[] = []): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^STRATA_.*PASSPHRASE/.test(key) && !hidden.includes(key)));
}
