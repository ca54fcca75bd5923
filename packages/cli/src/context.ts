import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { StrataError, isLocationUrl, loadConfig, openRepository, redactUrlPasswords, repositoryLocation, schedulesFor } from '@strata/sdk';
import type { ConfiguredWork, LoadedConfig, MirrorConfig, MirrorOptions, Passphrase, Repository, StorageSettings } from '@strata/sdk';
import { interactive, readPassphrase } from './terminal.js';
import { warningsSaid } from './warnings.js';
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
    let primary: Passphrase | undefined;
    const passphrase = async (attempt: number): Promise<Passphrase | undefined> => {
      primary = await readPassphrase(this.passphraseSources(interactive(this.json)), attempt);
      return primary;
    };
    const mirror = this.mirrorConfig(location);
    this.#repository = await this.openAt(location, passphrase, 'the repository', mirror && {
      // For messages and the journal: a location written with a password in it does not carry it there.
      location: redactUrlPasswords(mirror.repository),
      // The mirror's own passphrase source, else the repository's passphrase (asked once).
      open: () =>
        this.openAt(
          mirror.repository,
          async (attempt) => {
            if (attempt > 1) return undefined;
            const own = { ...given({ passphraseFile: mirror.passphraseFile, passphraseCommand: mirror.passphraseCommand }), prompt: false, which: 'mirror' as const };
            return (await readPassphrase(own, 1)) ?? primary ?? (await passphrase(1));
          },
          `the mirror ${mirror.repository}`,
        ),
    });
    return this.#repository;
  }

  /**
   * The passphrase sources of the config's mirror when `location` is that mirror (its own
   * passphraseFile or passphraseCommand, or STRATA_MIRROR_PASSPHRASE...): `strata copy` to or from
   * the mirror, as the restore that fell back on it advises, opens it as backups do.
   */
  mirrorPassphraseSources(location: string, prompt: boolean): PassphraseSources | undefined {
    const mirror = this.loaded.config.mirror;
    if (!mirror || repositoryLocation(mirror.repository) !== location) return undefined;
    return { ...given({ passphraseFile: mirror.passphraseFile, passphraseCommand: mirror.passphraseCommand }), prompt, which: 'mirror' };
  }

  /**
   * The config's mirror when the repository in use is the config's own: a --repo or STRATA_REPO
   * naming another repository does not inherit that repository's mirror.
   */
  mirrorConfig(location: string): MirrorConfig | undefined {
    const { repository, mirror } = this.loaded.config;
    return mirror && repository !== undefined && repositoryLocation(repository) === location ? mirror : undefined;
  }

  /**
   * The databases the config file names, when the repository in use is the config's own (a --repo
   * or STRATA_REPO naming another repository is not about them).
   */
  configuredWork(): ConfiguredWork {
    const config = this.loaded.config;
    if (!config.databases || config.repository === undefined || repositoryLocation(config.repository) !== this.repositoryPath()) return { databases: [], jobs: [] };
    const databases = Object.keys(config.databases).sort();
    return { databases, jobs: databases.flatMap((database) => Object.entries(schedulesFor(config, database)).map(([name, job]) => ({ database, name, kind: job.job }))) };
  }

  /**
   * Opens a repository at `location` (a folder, or a URL of a registered storage), taking its
   * passphrase from `passphrase` when an operation first needs it. The caller closes it.
   * `what` names it in messages ("the target repository").
   */
  async openAt(location: string, passphrase: (attempt: number) => Promise<Passphrase | undefined>, what = 'the repository', mirror?: MirrorOptions): Promise<Repository> {
    if (!isLocationUrl(location) && !existsSync(location)) {
      // A disk or share that is not mounted leaves its mount point empty: init there would make a
      // new repository on the wrong disk, which the next backups then fill.
      throw new StrataError('REPO_NOT_FOUND', `repository: ${location} does not exist; if it is on a disk or share that is not mounted, mount it; for a new repository, run \`strata init --repo ${location}\` to create it`);
    }
    const repo = await openRepository(location, {
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
      storage: this.storageSettings(),
      ...(process.env['STRATA_TMPDIR'] ? { tempDir: process.env['STRATA_TMPDIR'] } : {}),
      ...(mirror ? { mirror } : {}),
    });
    // A passphrase asked for on the command line and quietly unused reads as "encrypted".
    const flag = this.options.passphraseFile !== undefined ? '--passphrase-file' : this.options.passphraseCommand !== undefined ? '--passphrase-command' : undefined;
    if (flag && what === 'the repository' && repo.settings.encryption === 'none') {
      process.stderr.write(`strata: warning: ${location} is not encrypted (made with init --no-encryption): the passphrase of ${flag} is not used, and what this command writes is stored unencrypted\n`);
    }
    return repo;
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

  /** Prints a command's JSON document: one document, on stdout, nothing else there, with the warnings the command gave (`warnings`, when any). */
  printJson(value: unknown): void {
    const warnings = warningsSaid();
    const withWarnings = warnings.length > 0 && typeof value === 'object' && value !== null && !Array.isArray(value) ? { ...value, warnings } : value;
    process.stdout.write(JSON.stringify(withWarnings, null, 2) + '\n');
  }

  async close(): Promise<void> {
    await this.#repository?.close();
  }
}

/** Only the entries that are set, so optional properties stay absent. */
function given<T extends Record<string, unknown>>(entries: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: Exclude<T[K], undefined> };
}
