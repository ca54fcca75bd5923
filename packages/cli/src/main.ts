#!/usr/bin/env node
// Only what every start needs, from the modules that hold it: `strata --version` loads nothing
// else, and each command loads its own code (the command table's run functions).
import { EXIT, StrataError, exitCodeFor, isStrataError } from '@strata/core/errors';
import type { StrataErrorCode } from '@strata/core/errors';
import { STRATA_VERSION } from '@strata/core/version';
import { noteWarning, warningsSaid } from './warnings.js';

/**
 * wal-fetch's status for every failure but "the archive does not hold that file" (exit 1): the
 * server running its restore_command takes any status up to 125 as "not there", ends recovery at
 * the last file it has and promotes (a restore to the end of the archive silently loses the rest),
 * while above 125 it stops with a fatal error that can be fixed and restarted from. 128 is no
 * status of another Strata command, nor the shell's 126 (not executable) and 127 (not found).
 */
export const WAL_FETCH_CANNOT_READ = 128;

/** Runs the CLI and returns its exit status (main() sets process.exitCode from it). */
export async function run(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const walFetch = command === 'wal-fetch';
  if (command === '--version') {
    process.stdout.write(`${STRATA_VERSION}\n`);
    return EXIT.ok;
  }
  if (command === 'wal-push' && rest.includes('--socket')) {
    // The warm mode: a running wal-daemon stores the segment; this process loads nothing more.
    const served = await (await import('./wal-handoff.js')).fastWalPush(rest);
    if (served !== undefined) return served;
  }
  const { buildProgram } = await import('./program.js');
  const program = buildProgram();
  if (command === undefined || command === '--help' || command === '-h' || (command === 'help' && rest.length === 0)) {
    process.stdout.write(program.helpText());
    // Without a command it is a usage error (scripts that forget one notice), with --help not.
    return command === undefined ? EXIT.usage : EXIT.ok;
  }
  const wantsJson = rest.includes('--json');
  const controller = new AbortController();
  const onSignal = (): void => controller.abort(new StrataError('ABORTED', 'interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const status = await program.parse(argv, controller.signal);
    // wal-fetch returns 1 itself only for a file the archive lacks; any other non-zero is a failure.
    return walFetch && status !== 0 && status !== 1 ? WAL_FETCH_CANNOT_READ : status;
  } catch (err) {
    // A wrong or missing passphrase, a damaged file, storage, configuration or usage errors:
    // never "not there" for wal-fetch (see WAL_FETCH_CANNOT_READ).
    return report(err, wantsJson, walFetch ? WAL_FETCH_CANNOT_READ : undefined);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // The command is done and has said so: a signal while the repository closes must not turn its
    // status into 130 (Node's default with no listener), nor cut what it printed.
    const done = (): void => undefined;
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
    await program.close().catch(() => undefined);
    process.off('SIGINT', done);
    process.off('SIGTERM', done);
  }
}

/** Prints an error for people (stderr) and, with --json, as the JSON document on stdout. */
function report(err: unknown, json: boolean, exitOverride?: number): number {
  const known = isStrataError(err);
  const code: StrataErrorCode = known ? err.code : 'INTERNAL';
  const message = known ? err.message : `unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\nThis is a bug in Strata; please report it.`;
  const exit = exitOverride ?? exitCodeFor(code);
  const warnings = warningsSaid();
  if (json) process.stdout.write(JSON.stringify({ error: { code, message: known ? err.message : String(err), exitCode: exit }, ...(warnings.length > 0 ? { warnings } : {}) }, null, 2) + '\n');
  process.stderr.write(`strata: ${message}\n`);
  return exit;
}

// Run when executed as a program (not when imported by tests).
const invokedDirectly = process.argv[1] !== undefined && import.meta.url === new URL(`file://${(await import('node:fs')).realpathSync(process.argv[1])}`).href;
if (invokedDirectly) {
  // The AWS SDK warns on every run under Node 20 that its releases after January 2027 need Node 22.
  // That is a note for whoever pins the SDK (we do, in the lockfile), not for someone running a
  // backup; the SDK's documented switch turns it off unless the user set it either way.
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  // Engines say what a restore left out or changed (roles or tablespaces the target lacks,
  // subscriptions left disabled) as process warnings: printed as Strata's own lines, not as Node's
  // `(node:PID) [CODE] Warning: ...` followed by a hint about --trace-warnings.
  process.removeAllListeners('warning');
  process.on('warning', (warning) => {
    const own = 'code' in warning && typeof warning.code === 'string' && warning.code.startsWith('STRATA_');
    if (own) noteWarning({ code: warning.code as string, message: warning.message });
    process.stderr.write(`strata: warning: ${own ? '' : `${warning.name}: `}${warning.message}\n`);
  });
  // `strata list | head`: the reader went away. What is left to print has no reader, but the
  // command itself (a backup, say) finishes as it would have: a closed pipe is no reason to stop it.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
  if (process.argv[2] === 'wal-fetch') {
    // An error no command caught would end Node with status 1, which wal-fetch means for "the
    // archive does not hold that file": the server would end its recovery there.
    const fatal = (err: unknown): void => {
      process.stderr.write(`strata wal-fetch: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(WAL_FETCH_CANNOT_READ);
    };
    process.on('uncaughtException', fatal);
    process.on('unhandledRejection', fatal);
  }
  process.exitCode = await run(process.argv.slice(2));
}
