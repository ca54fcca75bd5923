import { StrataError } from './errors.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';

/** The repository's settings file (docs/FORMAT.md, "repository.json"). */
export const REPOSITORY_CONFIG_KEY = 'repository.json';

/**
 * repository.json as an untyped object, for changes that must keep every field they do not know
 * about (a newer Strata may have added some). Callers have already opened the repository once:
 * missing, the repository went (REPO_NOT_FOUND); unparseable, ARTIFACT_CORRUPT.
 */
export async function readRawConfig(storage: Storage): Promise<Record<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(await storage.read(REPOSITORY_CONFIG_KEY)).toString('utf8'));
  } catch (err) {
    // Read at open and again by every unlock: gone since means the repository itself went (a
    // disk unmounted, the folder moved), not a damaged file.
    if (isNotFound(err)) throw vanished(storage);
    throw new StrataError('ARTIFACT_CORRUPT', `repository: ${REPOSITORY_CONFIG_KEY} in ${storage.location} cannot be read again (${err instanceof Error ? err.message : String(err)}); put back a copy of it`, { cause: err });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new StrataError('ARTIFACT_CORRUPT', `repository: ${REPOSITORY_CONFIG_KEY} in ${storage.location} is not a JSON object; put back a copy of it`);
  }
  return parsed as Record<string, unknown>;
}

/** The error of a repository whose repository.json is gone after it was opened. */
export function vanished(storage: Storage): StrataError {
  return new StrataError(
    'REPO_NOT_FOUND',
    `repository: ${storage.location} no longer holds ${REPOSITORY_CONFIG_KEY}, which it held when it was opened: its disk was unmounted, or the folder was moved or deleted. Mount it or put it back; nothing was written there`,
  );
}

/** Replaces repository.json in one atomic put: readers see the old file or the new one, never a mix. */
export async function writeRawConfig(storage: Storage, config: Record<string, unknown>): Promise<void> {
  await storage.put(REPOSITORY_CONFIG_KEY, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
}
