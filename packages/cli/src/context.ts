import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { StrataError, loadConfig, openRepository, schemeOf } from '@strata/sdk';
import type { LoadedConfig, Passphrase, Repository } from '@strata/sdk';
import { interactive, readPassphrase } from './terminal.js';
import type { PassphraseSources } from './terminal.js';

/** Options every command accepts. */
export interface GlobalOptions {
  readonly repo?: string;
  readonly json: boolean;
  readonly config?: string;
  readonly passphraseFile?: string;
  readonly passphraseCommand?: string;
  /** Seconds to wait for a busy repository lock before exit code 5. */
  readonly lockWait?: number;
}

/** What a command gets: its global options, the config, and lazy access to the repository. */
export class CommandContext {
  readonly options: GlobalOptions;
  readonly loaded: LoadedConfig;
  #repository: Repository | undefined;

  constructor(options: GlobalOptions) {
    this.options = options;
    this.loaded = loadConfig(options.config);
  }

  get json(): boolean {
    return this.options.json;
  }

  /** The repository folder from --repo, STRATA_REPO, or strata.config.json, in that order. */
  repositoryPath(): string {
    const chosen = this.options.repo ?? process.env['STRATA_REPO'] ?? this.loaded.config.repository;
    if (!chosen) {
      throw new StrataError('USAGE', 'no repository given: pass --repo DIR, set STRATA_REPO, or set "repository" in strata.config.json');
    }
    return path.resolve(chosen);
  }

  /** Opens the repository; the passphrase is read (or prompted for) only when an operation needs it. */
  async repository(): Promise<Repository> {
    this.#repository ??= await this.openAt(this.repositoryPath(), (attempt) => readPassphrase(this.passphraseSources(interactive(this.json)), attempt));
    return this.#repository;
  }

  /**
   * Opens a repository at `location` (a folder, or a URL of a registered storage), taking its
   * passphrase from `passphrase` when an operation first needs it. The caller closes it.
   * `what` names it in messages ("the target repository").
   */
  async openAt(location: string, passphrase: (attempt: number) => Promise<Passphrase | undefined>, what = 'the repository'): Promise<Repository> {
    if (schemeOf(location) === undefined && !existsSync(location)) {
      throw new StrataError('REPO_NOT_FOUND', `repository: ${location} does not exist; run \`strata init --repo ${location}\` to create it`);
    }
    return openRepository(location, {
      passphrase: async (attempt) => {
        const given = await passphrase(attempt);
        // After a wrong answer, no further source means the wrong passphrase is final.
        if (!given && attempt > 1) return undefined;
        if (!given) {
          throw new StrataError('PASSPHRASE_MISSING', `${what} is encrypted: set STRATA_PASSPHRASE, pass --passphrase-file FILE, or run on a terminal to be asked`);
        }
        return given;
      },
      lock: { waitMs: (this.options.lockWait ?? 60) * 1000 },
      ...(process.env['STRATA_TMPDIR'] ? { tempDir: process.env['STRATA_TMPDIR'] } : {}),
    });
  }

  /** Where this run takes the passphrase from (see readPassphrase for the order). */
  passphraseSources(prompt: boolean, confirm = false): PassphraseSources {
    return {
      ...(this.options.passphraseFile !== undefined ? { passphraseFile: this.options.passphraseFile } : {}),
      ...(this.options.passphraseCommand !== undefined ? { passphraseCommand: this.options.passphraseCommand } : {}),
      prompt,
      confirm,
    };
  }

  /** Prints a command's JSON document: one document, on stdout, nothing else there. */
  printJson(value: unknown): void {
    process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  }

  async close(): Promise<void> {
    await this.#repository?.close();
  }
}
