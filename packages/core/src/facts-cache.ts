import { putCacheFile, readCacheFile } from './cache-files.js';
import type { EncryptionProfile, Passphrase } from './encryption.js';
import { factsDigest } from './format/facts-delta.js';
import type { CompleteFacts } from './format/facts-delta.js';
import type { Storage } from './storage.js';

/**
 * A copy of each backup's complete verification facts beside the artifacts, so an incremental can
 * store its facts as changes against its parent's without decrypting the parent's chain. Only a
 * cache, like the layout cache: the catalog keeps the facts' digest, and a copy that is missing or
 * does not match is ignored (the next backup then stores its facts whole).
 */

export function factsCacheKey(database: string, id: string, encrypted: boolean): string {
  return `cache/facts/${database}/${id}.json${encrypted ? '.gpg' : ''}`;
}

/** Writes the cached copy; failures are ignored by callers (the artifacts stay authoritative). */
export async function writeFactsCache(
  storage: Storage,
  key: string,
  facts: CompleteFacts,
  encryption: { profile: EncryptionProfile; passphrase: Passphrase | undefined },
): Promise<void> {
  await putCacheFile(storage, key, Buffer.from(JSON.stringify(facts)), encryption);
}

/** The cached facts if present and matching `digest`, else undefined. */
export async function readFactsCache(storage: Storage, key: string, digest: string, passphrase: Passphrase | undefined): Promise<CompleteFacts | undefined> {
  try {
    const facts = JSON.parse((await readCacheFile(storage, key, passphrase)).toString('utf8')) as CompleteFacts;
    return factsDigest(facts) === digest ? facts : undefined;
  } catch {
    return undefined;
  }
}
