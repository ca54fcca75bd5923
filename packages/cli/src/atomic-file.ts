import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

/**
 * Writes `text` to `file` whole or not at all: into a temporary file beside it, then renamed over
 * it. The temporary name is random and created exclusively (`wx`), never opened through whatever
 * is already at that name: a predictable name in a folder others can write to lets them plant a
 * symbolic link there and have this process overwrite the link's target. It starts with a dot and
 * ends in `.tmp`, so a reader that picks files by extension (node_exporter's `*.prom`) skips it.
 * `mode` is the new file's (the umask applies, as for any new file). Errors are the system's,
 * for the caller to word; the temporary file is gone after one.
 */
export function writeFileAtomically(file: string, text: string, mode = 0o666): void {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temporary, 'wx', mode);
  try {
    try {
      writeFileSync(fd, text);
      // Durable before it replaces the old file: a crash then leaves the old one or the new one.
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, file);
  } catch (err) {
    rmSync(temporary, { force: true });
    throw err;
  }
}
