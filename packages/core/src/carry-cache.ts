import { createHash } from 'node:crypto';
import type { BackupRecord } from './catalog.js';
import { putCacheFile, readCacheFile } from './cache-files.js';
import type { EncryptionProfile, Passphrase } from './encryption.js';
import { factsCacheKey } from './facts-cache.js';
import { layoutCacheKey } from './layout-cache.js';
import type { Storage } from './storage.js';

/**
 * What a backup hands forward to the incremental that will build on it (engine.ts
 * `Snapshot.carryForward`), kept beside the artifacts with the names, sizes and SHA-256 of the
 * backup's streams: an engine whose incrementals need a piece of the parent's own data (a server
 * that sends only the blocks changed since a backup needs that backup's description of itself)
 * then reads a small file instead of the parent's whole artifact. Only a cache, like the layout
 * and facts caches: the catalog keeps its digest, and a copy that is missing or does not match is
 * ignored (the engine then reads the parent's artifact, as it did before the cache).
 *
 * The file (before encryption): a 4-byte little-endian length, that many bytes of JSON
 * (`{"streams": [{"name", "size", "sha256"}]}`), then the engine's bytes to the end.
 */

export interface CarriedForward {
  readonly streams: readonly { readonly name: string; readonly size: number; readonly sha256: string }[];
  readonly bytes: Uint8Array;
}

export function carryCacheKey(database: string, id: string, encrypted: boolean): string {
  return `cache/carry/${database}/${id}.bin${encrypted ? '.gpg' : ''}`;
}

/** Every cached copy a backup may have beside its artifact, which go when it goes. */
export function backupCacheKeys(record: Pick<BackupRecord, 'database' | 'id' | 'encryption'>): string[] {
  const encrypted = record.encryption.profile !== 'none';
  return [layoutCacheKey(record.database, record.id, encrypted), factsCacheKey(record.database, record.id, encrypted), carryCacheKey(record.database, record.id, encrypted)];
}

/** The file's plaintext; its SHA-256 is what the catalog records (`BackupRecord.carrySha256`). */
export function encodeCarry(carried: CarriedForward): Buffer {
  const head = Buffer.from(JSON.stringify({ streams: carried.streams.map((s) => ({ name: s.name, size: s.size, sha256: s.sha256 })) }));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(head.length, 0);
  return Buffer.concat([length, head, carried.bytes]);
}

export function carryDigest(encoded: Uint8Array): string {
  return createHash('sha256').update(encoded).digest('hex');
}

/** Writes the cached copy; failures are ignored by callers (the artifacts stay authoritative). */
export async function writeCarryCache(storage: Storage, key: string, encoded: Buffer, encryption: { profile: EncryptionProfile; passphrase: Passphrase | undefined }): Promise<void> {
  await putCacheFile(storage, key, encoded, encryption);
}

/** The cached file's plaintext if present and matching `digest`, else undefined. */
export async function readCarryFile(storage: Storage, key: string, digest: string, passphrase: Passphrase | undefined): Promise<Buffer | undefined> {
  try {
    const bytes = await readCacheFile(storage, key, passphrase);
    return carryDigest(bytes) === digest ? bytes : undefined;
  } catch {
    return undefined;
  }
}

/** What the file holds, or undefined when it is not one (a digest that matches makes that unlikely). */
export function decodeCarry(encoded: Buffer): CarriedForward | undefined {
  if (encoded.length < 4) return undefined;
  const headBytes = encoded.readUInt32LE(0);
  if (4 + headBytes > encoded.length) return undefined;
  try {
    const head = JSON.parse(encoded.subarray(4, 4 + headBytes).toString('utf8')) as { streams?: unknown };
    if (!Array.isArray(head.streams)) return undefined;
    const streams = head.streams.filter(
      (s): s is CarriedForward['streams'][number] => typeof s === 'object' && s !== null && typeof s.name === 'string' && Number.isSafeInteger(s.size) && typeof s.sha256 === 'string',
    );
    if (streams.length !== head.streams.length) return undefined;
    return { streams, bytes: encoded.subarray(4 + headBytes) };
  } catch {
    return undefined;
  }
}

/** The cached copy, read and checked against `digest`, or undefined. */
export async function readCarryCache(storage: Storage, key: string, digest: string, passphrase: Passphrase | undefined): Promise<CarriedForward | undefined> {
  const encoded = await readCarryFile(storage, key, digest, passphrase);
  return encoded ? decodeCarry(encoded) : undefined;
}
