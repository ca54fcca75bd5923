import * as path from 'node:path';
import { StrataError, durationBefore, parseDuration, repositoryLocation, schemeOf } from '@strata/sdk';
import type { Passphrase, Repository } from '@strata/sdk';
import type { CommandContext } from './context.js';
import { ProgressBar, formatBytes, interactive, passphraseGiven, printable, readPassphrase } from './terminal.js';

/** Options of `strata copy`. */
export interface CopyCommandOptions {
  /** The source; default: the repository of --repo, STRATA_REPO or strata.config.json. */
  readonly from?: string;
  readonly to?: string;
  readonly databases: readonly string[];
  /** An ISO time, or a duration back from now (`7d`). */
  readonly since?: string;
  readonly toPassphraseFile?: string;
  readonly toPassphraseCommand?: string;
}

/** A location as given: folders resolved against the current folder, URLs as they are. */
export function resolveRepositoryLocation(location: string): string {
  return schemeOf(location) === undefined ? path.resolve(location) : location;
}

/** `--since`: a duration back from now (`7d`, `12h`) or an ISO time. */
export function parseSince(text: string, what: string): Date {
  if (/^[0-9]/.test(text) && !/^\d{4}-/.test(text)) return durationBefore(Date.now(), parseDuration(text, what));
  const time = new Date(text);
  if (Number.isNaN(time.getTime())) throw new StrataError('USAGE', `${what}: ${JSON.stringify(text)} is neither a duration (7d, 12h) nor an ISO date/time`);
  return time;
}

/**
 * `strata copy --from REPO --to REPO [<db>...] [--since TIME]`: restore points with their chains,
 * only what the target lacks, every checksum checked on the way.
 */
export async function copyCommand(ctx: CommandContext, options: CopyCommandOptions, signal: AbortSignal): Promise<number> {
  if (!options.to) throw new StrataError('USAGE', 'copy: --to REPO is required (the repository to copy into; create it first with strata init)');
  if (options.from !== undefined && ctx.options.repo !== undefined && resolveRepositoryLocation(options.from) !== resolveRepositoryLocation(ctx.options.repo)) {
    throw new StrataError('USAGE', 'copy: --from and --repo name different repositories; give the source once, with --from');
  }
  const since = options.since !== undefined ? parseSince(options.since, 'copy: --since') : undefined;
  const sourceLocation = options.from !== undefined ? resolveRepositoryLocation(options.from) : ctx.repositoryPath();
  const targetLocation = resolveRepositoryLocation(options.to);
  const prompt = interactive(ctx.json);
  // The config's mirror, on either side, is opened with its own passphrase when the config or
  // STRATA_MIRROR_PASSPHRASE gives one (as a backup opens it).
  const sourceMirror = ctx.mirrorPassphraseSources(sourceLocation, prompt);
  const targetMirror = ctx.mirrorPassphraseSources(targetLocation, prompt);
  const sourceSources = ctx.passphraseSources(prompt);
  // The mirror's own first, then the repository's (a mirror may share it).
  const readSource = async (attempt: number): Promise<Passphrase | undefined> =>
    sourceMirror && passphraseGiven(sourceMirror) ? (attempt === 1 ? readPassphrase(sourceMirror, 1) : readPassphrase(sourceSources, attempt - 1)) : readPassphrase(sourceSources, attempt);
  const givenTarget = {
    ...(options.toPassphraseFile !== undefined ? { passphraseFile: options.toPassphraseFile } : {}),
    ...(options.toPassphraseCommand !== undefined ? { passphraseCommand: options.toPassphraseCommand } : {}),
    prompt,
    which: 'target' as const,
  };
  // Back from the mirror into the config's repository (the repair a fallback restore advises):
  // the target takes the repository's own passphrase, as every command on it does.
  const configRepository = ctx.loaded.config.repository !== undefined ? repositoryLocation(ctx.loaded.config.repository) : undefined;
  const intoRepository = sourceMirror !== undefined && targetLocation === configRepository ? ctx.passphraseSources(prompt) : undefined;
  const targetSources = passphraseGiven(givenTarget) ? givenTarget : targetMirror && passphraseGiven(targetMirror) ? targetMirror : intoRepository && passphraseGiven(intoRepository) ? intoRepository : givenTarget;
  // Without a passphrase of its own the target is tried with the source's (one passphrase for
  // both is common); a wrong one is then reported for the target, naming the ways to give its own.
  const ownTarget = passphraseGiven(targetSources);
  let sourcePassphrase: Passphrase | undefined;
  const source = await ctx.openAt(
    sourceLocation,
    async (attempt) => {
      sourcePassphrase = await readSource(attempt);
      return sourcePassphrase;
    },
    `the source repository ${sourceLocation}`,
  );
  let target: Repository | undefined;
  try {
    target = await ctx
      .openAt(
        targetLocation,
        async (attempt) => {
          let given: Passphrase | undefined;
          if (ownTarget) given = await readPassphrase(targetSources, attempt);
          else if (attempt === 1) given = sourcePassphrase ?? (await readPassphrase(sourceSources, 1));
          // The source's passphrase did not open it: on a terminal, ask for the target's own.
          else if (prompt) given = await readPassphrase(targetSources, attempt - 1);
          if (!given && attempt === 1) {
            throw new StrataError('PASSPHRASE_MISSING', 'copy: the target repository is encrypted: give its passphrase with --to-passphrase-file FILE, --to-passphrase-command CMD or STRATA_TO_PASSPHRASE');
          }
          return given;
        },
        `the target repository ${targetLocation}`,
      )
      .catch((err: unknown) => {
        if (err instanceof StrataError && err.code === 'REPO_NOT_FOUND') {
          // The repository's own message already says to run init; said once, with what copy adds.
          const missing = err.message.replace(/^repository: /, '').replace(/; if it is on a disk or share that is not mounted, mount it; for a new repository, run `strata init[^`]*` to create it$/, '');
          throw new StrataError('REPO_NOT_FOUND', `copy: the target ${missing}; if it is on a disk or share that is not mounted, mount it; copy never creates a repository: for a new one, run \`strata init --repo ${targetLocation}\` first, with the passphrase it should have`);
        }
        throw err;
      });
    const bar = new ProgressBar('copy', interactive(ctx.json));
    let result;
    try {
      result = await source
        .copyTo(target, {
          databases: options.databases,
          ...(since ? { since } : {}),
          signal,
          onProgress: bar.update,
          onCopied: (copied) => {
            if (ctx.json) return;
            bar.done();
            const r = copied.record;
            process.stdout.write(`copied ${r.id} (${r.type}${r.parent ? `, on ${r.parent}` : ''}, ${r.createdAt}) ${formatBytes(r.storedBytes)}${copied.mode === 're-encrypted' ? ', re-encrypted under the target\'s data key' : ''}\n`);
          },
        })
        .catch((err: unknown) => {
          if (err instanceof StrataError && /wrong passphrase/.test(err.message) && err.message.includes(targetLocation) && !ownTarget) {
            throw new StrataError(err.code, `${err.message}. The target was tried with the source's passphrase; give its own with --to-passphrase-file FILE, --to-passphrase-command CMD or STRATA_TO_PASSPHRASE`, { cause: err });
          }
          throw err;
        });
    } finally {
      bar.done();
    }
    if (ctx.json) {
      ctx.printJson({
        from: result.source,
        to: result.target,
        copied: result.copied.map((c) => ({ id: c.record.id, database: c.record.database, type: c.record.type, createdAt: c.record.createdAt, mode: c.mode, storedBytes: c.record.storedBytes })),
        present: result.present,
        inProgress: result.inProgress,
        removed: result.removed,
        segments: result.segments,
        logFiles: result.logFiles,
      });
    } else {
      const present = result.present.length > 0 ? ` (${result.present.length} already there)` : '';
      process.stdout.write(
        result.copied.length === 0
          ? `nothing to copy: ${printable(result.target)} has every selected restore point${present}\n`
          : `copied ${result.copied.length} backup(s) from ${printable(result.source)} to ${printable(result.target)}${present}\n`,
      );
      if (result.segments.length > 0) process.stdout.write(`copied ${result.segments.length} segment(s) of continuous protection: restores as of a time reach as far on the target\n`);
      if (result.logFiles > 0) process.stdout.write(`copied ${result.logFiles} archived log file(s): recoveries to a moment reach as far on the target\n`);
      if (result.inProgress.length > 0) process.stdout.write(`${result.inProgress.length} backup(s) were being copied into the target by another process at the same time and were left to it: ${result.inProgress.join(', ')}\n`);
      if (result.removed.length > 0) process.stdout.write(`${result.removed.length} backup(s) were deleted from the source while this copy ran (its retention or a delete) and were not copied: ${result.removed.join(', ')}\n`);
    }
    return 0;
  } finally {
    await target?.close();
    await source.close();
  }
}
