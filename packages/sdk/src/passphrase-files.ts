import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Passphrase, StrataError } from '@strata/core';

/**
 * Reads a passphrase from a file: its text less one trailing newline. Shared by the command line
 * (--passphrase-file) and the server (a mirror's "passphraseFile"), so both read it the same way.
 */
export function passphraseFromFile(file: string): Passphrase {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new StrataError('USAGE', `passphrase file ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  // One trailing newline is what editors and `echo` add; it is not part of the passphrase.
  return new Passphrase(text.replace(/\r?\n$/, ''));
}

/**
 * Runs the command through the shell; its standard output, less one trailing newline, is the
 * passphrase. `stdin: 'ignore'` is for callers whose own standard input is not a person's (the
 * server's carries JSON-RPC, which the command must never read).
 */
export function passphraseFromCommand(command: string, options: { readonly stdin?: 'inherit' | 'ignore' } = {}): Passphrase {
  const result = spawnSync('/bin/sh', ['-c', command], { encoding: 'utf8', stdio: [options.stdin ?? 'inherit', 'pipe', 'inherit'], maxBuffer: 1024 * 1024 });
  if (result.error) throw new StrataError('USAGE', `the passphrase command could not run: ${result.error.message}`);
  if (result.status !== 0) throw new StrataError('USAGE', `the passphrase command exited with ${result.status ?? result.signal}; nothing was done`);
  const text = result.stdout.replace(/\r?\n$/, '');
  if (text === '') throw new StrataError('USAGE', 'the passphrase command printed nothing');
  return new Passphrase(text);
}
