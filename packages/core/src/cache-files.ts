import { decryptStream, encryptStream } from './encryption.js';
import type { EncryptionProfile, Passphrase } from './encryption.js';
import type { Storage } from './storage.js';

/**
 * The files of `cache/` (layouts, facts, what a backup carries forward) are stored alike: one
 * object each, encrypted under the artifact's own data key when the repository is encrypted (the
 * key ends in `.gpg` then), so whoever can open the artifact opens its caches.
 */

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

/** Writes a cache file from its plaintext (whole, or as pieces). */
export async function putCacheFile(
  storage: Storage,
  key: string,
  plaintext: Uint8Array | AsyncIterable<Uint8Array>,
  encryption: { profile: EncryptionProfile; passphrase: Passphrase | undefined },
): Promise<void> {
  const pieces = plaintext instanceof Uint8Array ? once(plaintext) : plaintext;
  await storage.put(key, encryption.profile !== 'none' ? encryptStream(pieces, encryption.passphrase!, encryption.profile) : pieces);
}

/** A cache file's plaintext; throws when it is missing or does not decrypt (callers then ignore the cache). */
export async function readCacheFile(storage: Storage, key: string, passphrase: Passphrase | undefined): Promise<Buffer> {
  const stored = Buffer.from(await storage.read(key));
  if (!key.endsWith('.gpg')) return stored;
  const parts: Buffer[] = [];
  for await (const chunk of decryptStream(once(stored), passphrase!)) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}
