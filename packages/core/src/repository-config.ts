import { StrataError } from './errors.js';
import type { Storage } from './storage.js';

/** The repository's settings file (docs/FORMAT.md, "repository.json"). */
export const REPOSITORY_CONFIG_KEY = 'repository.json';

/**
 * repository.json as an untyped object, for changes that must keep every field they do not know
 * about (a newer Strata may have added some). Missing or unparseable: ARTIFACT_CORRUPT, because
 * callers have already opened the repository once.
 */
export async function readRawConfig(storage: Storage): Promise<Record<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(await storage.read(REPOSITORY_CONFIG_KEY)).toString('utf8'));
  } catch (err) {
    throw new StrataError('ARTIFACT_CORRUPT', `repository: ${REPOSITORY_CONFIG_KEY} in ${storage.location} cannot be read again (${err instanceof Error ? err.message : String(err)}); put back a copy of it`, { cause: err });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new StrataError('ARTIFACT_CORRUPT', `repository: ${REPOSITORY_CONFIG_KEY} in ${storage.location} is not a JSON object; put back a copy of it`);
  }
  return parsed as Record<string, unknown>;
}

/** Replaces repository.json in one atomic put: readers see the old file or the new one, never a mix. */
export async function writeRawConfig(storage: Storage, config: Record<string, unknown>): Promise<void> {
  await storage.put(REPOSITORY_CONFIG_KEY, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
}
