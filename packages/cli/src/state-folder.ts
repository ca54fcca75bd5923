import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * This machine's state of Strata, outside any repository: the spool of `wal-receive` and the
 * failed `wal-push` calls that could not be journaled because the repository itself failed.
 * `STRATA_STATE_DIR`, else `$XDG_STATE_HOME/strata`, else `~/.local/state/strata` (per user: run
 * `health` as the user PostgreSQL's archive_command runs as, or give both the same STRATA_STATE_DIR).
 */
export function stateFolder(): string {
  const explicit = process.env['STRATA_STATE_DIR'];
  if (explicit) return path.resolve(explicit);
  const xdg = process.env['XDG_STATE_HOME'];
  return path.join(xdg ? path.resolve(xdg) : path.join(os.homedir(), '.local', 'state'), 'strata');
}

/** A failed `wal-push` recorded on this machine. */
export interface LocalPushFailure {
  readonly at: string;
  readonly repository: string;
  readonly database: string;
  readonly file: string;
  readonly code: string;
  readonly message: string;
}

const FAILURES = 'failed-wal-pushes.ndjson';

/** Appends one failure (one line, written at once; never a secret: the message is redacted by the caller). */
export function recordLocalPushFailure(failure: LocalPushFailure): void {
  const dir = stateFolder();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  appendFileSync(path.join(dir, FAILURES), `${JSON.stringify(failure)}\n`, { mode: 0o600 });
}

/** The failures recorded on this machine for a repository (unreadable lines skipped). */
export function localPushFailures(repository: string): LocalPushFailure[] {
  let text: string;
  try {
    text = readFileSync(path.join(stateFolder(), FAILURES), 'utf8');
  } catch {
    return [];
  }
  const out: LocalPushFailure[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const f = JSON.parse(line) as LocalPushFailure;
      if (f.repository === repository && typeof f.at === 'string' && typeof f.database === 'string') out.push(f);
    } catch {
      // a torn line of a process killed mid-write
    }
  }
  return out;
}
