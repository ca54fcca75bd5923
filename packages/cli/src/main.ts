#!/usr/bin/env node
// Only what every start needs, from the modules that hold it: `strata --version` loads nothing
// else, and each command loads its own code (the command table's run functions).
import { EXIT, StrataError, exitCodeFor, isStrataError } from '@strata/core/errors';
import type { StrataErrorCode } from '@strata/core/errors';
import { STRATA_VERSION } from '@strata/core/version';

/** Runs the CLI and returns its exit status (main() sets process.exitCode from it). */
export async function run(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
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
    return await program.parse(argv, controller.signal);
  } catch (err) {
    return report(err, wantsJson);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await program.close().catch(() => undefined);
  }
}

/** Prints an error for people (stderr) and, with --json, as the JSON document on stdout. */
function report(err: unknown, json: boolean): number {
  const known = isStrataError(err);
  const code: StrataErrorCode = known ? err.code : 'INTERNAL';
  const message = known ? err.message : `unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\nThis is a bug in Strata; please report it.`;
  const exit = exitCodeFor(code);
  if (json) process.stdout.write(JSON.stringify({ error: { code, message: known ? err.message : String(err), exitCode: exit } }, null, 2) + '\n');
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
    process.stderr.write(`strata: warning: ${own ? '' : `${warning.name}: `}${warning.message}\n`);
  });
  // `strata list | head`: the reader went away. What is left to print has no reader, but the
  // command itself (a backup, say) finishes as it would have: a closed pipe is no reason to stop it.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
  process.exitCode = await run(process.argv.slice(2));
}
