import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Passphrase, StrataError } from '@strata/core';

/** How a passphrase file is read. */
export interface PassphraseFileOptions {
  /**
   * The passphrase will seal a new key file (init, key add, passwd, migrate). Recovery by hand opens a
   * key file with `gpg --passphrase-file`, which takes the file's first line up to its LF: from a
   * file saved with Windows line ends (CR LF) it takes the CR too, and the key file never opens
   * (gpg says "Bad session key"), while Strata, dropping the whole line end, opens it every day.
   * Such a file is refused for a new key file, rather than found out in a recovery; so is one that
   * is not UTF-8.
   */
  readonly sealsKeyFile?: boolean;
}

/**
 * Reads a passphrase from a file: its text less one trailing newline. Shared by the command line
 * (--passphrase-file) and the server (a mirror's "passphraseFile"), so both read it the same way.
 */
export function passphraseFromFile(file: string, options: PassphraseFileOptions = {}): Passphrase {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new StrataError('USAGE', `passphrase file ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const text = bytes.toString('utf8');
  if (options.sealsKeyFile) {
    // gpg takes the file's bytes as they are; Strata reads UTF-8, where a byte that is not (a
    // Windows-1252 "ä", a UTF-16 file) becomes U+FFFD: the two would seal and open different keys.
    // (Where the bytes are UTF-8, the strict decoder, keeping a byte order mark, reads `text`.)
    try {
      new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    } catch {
      throw new StrataError(
        'USAGE',
        `passphrase file ${file} is not UTF-8 text (saved as Windows-1252, Latin-1 or UTF-16?): gpg --passphrase-file, which a recovery by hand uses, reads its bytes as they are, so it would not open the key file Strata seals; save it as UTF-8 and run this again; nothing was changed`,
      );
    }
    if (text.endsWith('\r\n')) {
      throw new StrataError(
        'USAGE',
        `passphrase file ${file} ends its line with CR LF (a Windows line end): gpg --passphrase-file, which a recovery by hand uses, would read the CR as part of the passphrase and could not open the key file; save it with a plain LF line end (sed -i 's/\\r$//' FILE) and run this again; nothing was changed`,
      );
    }
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
