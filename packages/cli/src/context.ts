import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { StrataError, isLocationUrl, loadConfig, openRepository, repositoryLocation } from '@strata/sdk';
import type { StorageSettings } from '@strata/sdk';
import type { LoadedConfig, Repository } from '@strata/sdk';
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

  /**
   * The repository from --repo, STRATA_REPO, or strata.config.json, in that order: a folder (made
   * absolute) or a URL such as s3://bucket/prefix (as given).
   */
  repositoryPath(): string {
    const chosen = this.options.repo ?? process.env['STRATA_REPO'] ?? this.loaded.config.repository;
    if (!chosen) {
      throw new StrataError('USAGE', 'no repository given: pass --repo DIR, set STRATA_REPO, or set "repository" in strata.config.json');
    }
    return repositoryLocation(chosen);
  }

  /** The `storage` section of strata.config.json (how an s3:// repository is reached). */
  storageSettings(): StorageSettings {
    return this.loaded.config.storage ?? {};
  }

  /** Opens the repository; the passphrase is read (or prompted for) only when an operation needs it. */
  async repository(): Promise<Repository> {
    if (this.#repository) return this.#repository;
    const location = this.repositoryPath();
    if (!isLocationUrl(location) && !existsSync(location)) {
      throw new StrataError('REPO_NOT_FOUND', `repository: ${location} does not exist; run \`strata init --repo ${location}\` to create it`);
    }
    const prompt = interactive(this.json);
    this.#repository = await openRepository(location, {
      passphrase: async (attempt) => {
        const passphrase = await readPassphrase(this.passphraseSources(prompt), attempt);
        // After a wrong answer, no further source means the wrong passphrase is final.
        if (!passphrase && attempt > 1) return undefined;
        if (!passphrase) {
          throw new StrataError('PASSPHRASE_MISSING', 'the repository is encrypted: set STRATA_PASSPHRASE, pass --passphrase-file FILE, or run on a terminal to be asked');
        }
        return passphrase;
      },
      lock: { waitMs: (this.options.lockWait ?? 60) * 1000 },
      storage: this.storageSettings(),
      ...(process.env['STRATA_TMPDIR'] ? { tempDir: process.env['STRATA_TMPDIR'] } : {}),
    });
    return this.#repository;
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

