import { createHash } from 'node:crypto';
import type * as OpenPgp from 'openpgp';

/**
 * The passphrase's key derivation (OpenPGP's iterated and salted S2K, RFC 4880 3.7.1.3), streamed.
 *
 * Why by hand: openpgp.js builds the whole iterated input in memory before hashing it, 16 MiB for
 * its default count, zero-filled and then copied over itself. That is about 70 ms of CPU each time
 * a strata process opens a key file (every command of an encrypted repository, however short),
 * of which hashing the 16 MiB is a fraction. The same digest fed to node:crypto
 * from one 64 KiB block of the repeated salt and passphrase costs only the hashing. The result is
 * the same bytes, so what it costs to guess a passphrase does not change; only our waste does.
 *
 * Only the case openpgp.js itself writes is replaced: a key no longer than one digest (AES-256 with
 * SHA-256). Any other (a longer key needs a second, zero-prefixed hash; another S2K type; a hash
 * node:crypto lacks) keeps openpgp.js's own derivation.
 */

/** openpgp.js's hash identifiers (RFC 4880 9.4) as node:crypto names them, with their digest length. */
const HASHES: ReadonlyMap<number, { name: string; length: number }> = new Map([
  [2, { name: 'sha1', length: 20 }],
  [8, { name: 'sha256', length: 32 }],
  [9, { name: 'sha384', length: 48 }],
  [10, { name: 'sha512', length: 64 }],
  [11, { name: 'sha224', length: 28 }],
]);

/** The block the iterated input is hashed from: salt and passphrase repeated to about this size. */
const BLOCK_BYTES = 64 * 1024;

/**
 * The first `keyBytes` of the digest of `salt || passphrase` repeated to `count` bytes (at least
 * once whole), or undefined where that is not the whole derivation (see above).
 */
export function iteratedS2k(hash: number, salt: Uint8Array, count: number, passphrase: string, keyBytes: number): Uint8Array | undefined {
  const algorithm = HASHES.get(hash);
  if (!algorithm || keyBytes > algorithm.length) return undefined;
  const unit = Buffer.concat([salt, Buffer.from(passphrase, 'utf8')]);
  const digest = createHash(algorithm.name);
  const repeats = Math.max(1, Math.floor(BLOCK_BYTES / unit.length));
  const block = Buffer.alloc(repeats * unit.length);
  for (let i = 0; i < repeats; i++) unit.copy(block, i * unit.length);
  let left = Math.max(count, unit.length);
  for (; left >= block.length; left -= block.length) digest.update(block);
  digest.update(block.subarray(0, left));
  // The copies of the passphrase here are not zeroed: it lives on as a string (openpgp.js takes it
  // as one) for as long as the process does, so clearing them would hide nothing.
  return digest.digest().subarray(0, keyBytes);
}

/** The part of openpgp.js's S2K object (type/s2k in its sources) a session key packet derives its key with. */
interface IteratedS2kObject {
  type: string;
  algorithm: number;
  salt: Uint8Array | null;
  getCount(): number;
  produceKey(passphrase: string, keyBytes: number, config?: unknown): Promise<Uint8Array>;
}

function isIteratedS2k(s2k: unknown): s2k is IteratedS2kObject {
  const candidate = s2k as Partial<IteratedS2kObject> | null;
  return candidate?.type === 'iterated' && typeof candidate.algorithm === 'number' && candidate.salt instanceof Uint8Array && typeof candidate.getCount === 'function' && typeof candidate.produceKey === 'function';
}

/**
 * Has each passphrase-encrypted session key packet of `message` derive its key with
 * {@link iteratedS2k}, falling back to openpgp.js's own where that does not apply. It reaches into
 * openpgp.js's packet objects (the version is pinned): a release of openpgp.js that shapes them
 * otherwise gets its own derivation back, the same bytes only slower, which bench/ would show.
 */
export function streamIteratedS2kOf(openpgp: typeof OpenPgp, message: { readonly packets: OpenPgp.PacketList<OpenPgp.AnyPacket> }): void {
  for (const packet of message.packets.filterByTag(openpgp.enums.packet.symEncryptedSessionKey)) {
    const s2k = (packet as unknown as { s2k?: unknown }).s2k;
    if (!isIteratedS2k(s2k)) continue;
    const own = s2k.produceKey.bind(s2k);
    s2k.produceKey = async (passphrase, keyBytes, config) => iteratedS2k(s2k.algorithm, s2k.salt!, s2k.getCount(), passphrase, keyBytes) ?? own(passphrase, keyBytes, config);
  }
}
