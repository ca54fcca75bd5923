import { createHash } from 'node:crypto';
import { putCacheFile, readCacheFile } from './cache-files.js';
import type { EncryptionProfile, Passphrase } from './encryption.js';
import { StrataError } from './errors.js';
import { decodeLayoutEntry } from './format/chunk-index.js';
import type { LayoutEntry } from './format/chunk-index.js';
import type { Storage } from './storage.js';

/**
 * A copy of each backup's layout entries beside the artifacts (complete layouts, or deltas against
 * the parent's, exactly as the artifact holds them), so an incremental learns what its parent
 * holds from a few files instead of decrypting whole artifacts. It is only a cache: the catalog
 * keeps a digest of the entries, and a copy that does not match (or is missing) is ignored and
 * the entries are read from the artifact itself.
 */

export function layoutCacheKey(database: string, id: string, encrypted: boolean): string {
  return `cache/layouts/${database}/${id}.idx${encrypted ? '.gpg' : ''}`;
}

/** SHA-256 over the layout entries in name order; stored in the catalog to validate cached copies. */
export function layoutsDigest(layouts: ReadonlyMap<string, LayoutEntry>): string {
  const sha = createHash('sha256');
  for (const name of [...layouts.keys()].sort()) {
    sha.update(name);
    sha.update('\0');
    sha.update(layouts.get(name)!.encode());
  }
  return sha.digest('hex');
}

/** The cache file's pieces, in order; the entries' own encodings are not copied into one buffer. */
function* encode(layouts: ReadonlyMap<string, LayoutEntry>): Generator<Buffer> {
  for (const name of [...layouts.keys()].sort()) {
    const nameBytes = Buffer.from(name, 'utf8');
    const body = layouts.get(name)!.encode();
    const head = Buffer.alloc(12);
    head.writeUInt32LE(nameBytes.length, 0);
    head.writeBigUInt64LE(BigInt(body.length), 4);
    yield head;
    yield nameBytes;
    yield body;
  }
}

function decode(bytes: Buffer): Map<string, LayoutEntry> {
  const out = new Map<string, LayoutEntry>();
  let at = 0;
  while (at < bytes.length) {
    if (at + 12 > bytes.length) throw new StrataError('ARTIFACT_CORRUPT', 'layout cache: truncated');
    const nameLen = bytes.readUInt32LE(at);
    const bodyLen = Number(bytes.readBigUInt64LE(at + 4));
    at += 12;
    if (at + nameLen + bodyLen > bytes.length) throw new StrataError('ARTIFACT_CORRUPT', 'layout cache: truncated');
    const name = bytes.toString('utf8', at, at + nameLen);
    at += nameLen;
    out.set(name, decodeLayoutEntry(bytes.subarray(at, at + bodyLen), 'layout cache'));
    at += bodyLen;
  }
  return out;
}

async function* each(pieces: Iterable<Buffer>): AsyncGenerator<Uint8Array> {
  yield* pieces;
}

/** Writes the cached copy; failures are ignored by callers (the artifact stays authoritative). */
export async function writeLayoutCache(
  storage: Storage,
  key: string,
  layouts: ReadonlyMap<string, LayoutEntry>,
  encryption: { profile: EncryptionProfile; passphrase: Passphrase | undefined },
): Promise<void> {
  // Streamed, not gathered: a 4 GiB database's layout is 20 MiB, and every whole copy of it
  // showed in a backup's peak memory.
  await putCacheFile(storage, key, each(encode(layouts)), encryption);
}

/** The cached layouts if present and matching `digest`, else undefined. */
export async function readLayoutCache(storage: Storage, key: string, digest: string, passphrase: Passphrase | undefined): Promise<Map<string, LayoutEntry> | undefined> {
  try {
    const layouts = decode(await readCacheFile(storage, key, passphrase));
    return layoutsDigest(layouts) === digest ? layouts : undefined;
  } catch {
    return undefined;
  }
}
