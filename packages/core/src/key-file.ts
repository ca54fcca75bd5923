import { randomBytes } from 'node:crypto';
import { GeneratedKey, Passphrase, decryptSmall, decryptSmallHere, encryptSmall } from './encryption.js';
import type { EncryptionProfile } from './encryption.js';
import { StrataError, isStrataError } from './errors.js';
import { readRawConfig } from './repository-config.js';
import type { Storage } from './storage.js';

/**
 * Key files and the encryption section of repository.json (docs/FORMAT.md, "Keys"). Artifacts are encrypted under a random data key, used as the
 * OpenPGP password, so `gpg --passphrase-file` opens an artifact with it. Each passphrase opens
 * one key file: an OpenPGP message (always SEIPDv1, which gpg reads) holding the data keys it
 * grants as plain `<id> <data key>` lines. Passphrases are added, changed and revoked by writing
 * key files; no artifact is ever re-encrypted. repository.json lists the key files and the data
 * key ids each holds, never a secret, and is the one place a change becomes real: new objects
 * are written first, then repository.json in one atomic put.
 */

/** How a repository's encryption is set up: its `encryption` section of repository.json. */
export interface EncryptionSection {
  readonly profile: EncryptionProfile;
  /** Before key files: a random token encrypted with the passphrase itself (format 1). */
  readonly keyCheck?: string;
  /** SHA-256 of that token, to tell "decrypts" from "decrypts to the right thing". */
  readonly keyCheckSha256?: string;
  /** The data key new artifacts are encrypted under. */
  readonly currentKey?: string;
  /**
   * After `strata key migrate`: the id under which the old passphrase is kept as a data key.
   * Artifacts whose records name no key id were encrypted with it.
   */
  readonly legacyKey?: string;
  readonly dataKeys?: readonly DataKeyInfo[];
  readonly keyFiles?: readonly KeyFileInfo[];
}

/** A data key as repository.json lists it (never its secret). */
export interface DataKeyInfo {
  readonly id: string;
  readonly createdAt: string;
  /** Made at init, by rotate or migrate; the passphrase of a repository from before key files (legacy); or brought by an import. */
  readonly origin: 'init' | 'rotate' | 'migrate' | 'legacy' | 'import';
}

/** A key file as repository.json lists it: readable without any passphrase, never a secret. */
export interface KeyFileInfo {
  readonly id: string;
  readonly label: string | null;
  readonly createdAt: string;
  /** Ids of the data keys it holds. */
  readonly dataKeys: readonly string[];
}

/** Data key and key file ids: 8 hex digits, random. */
export const KEY_ID = /^[0-9a-f]{8}$/;
/** The first line of every key file's plaintext. */
export const KEY_FILE_HEADER = '# strata-key-file 1';
/** Key files hold a few lines; anything much larger was not written by Strata. */
export const MAX_KEY_FILE_BYTES = 64 * 1024;
/** Where key files live in the repository. */
export const KEYS_PREFIX = 'keys/';
/** In memory only: the secret of a repository from before key files, which is its passphrase. */
export const PASSPHRASE_ITSELF = 'passphrase';

/** The storage key of a key file. */
export function keyFileObject(id: string): string {
  return `${KEYS_PREFIX}${id}.asc`;
}

export function newId(taken: Iterable<string>): string {
  const used = new Set(taken);
  for (;;) {
    const id = randomBytes(4).toString('hex');
    if (!used.has(id)) return id;
  }
}

/** 256 random bits as text (base64url), so gpg takes it from a file as a passphrase. */
export function newDataKey(): GeneratedKey {
  return new GeneratedKey(randomBytes(32).toString('base64url'));
}

/** Origins of the data keys newDataKey made; a `legacy` or `import` key can be a person's passphrase. */
const GENERATED_ORIGINS: ReadonlySet<DataKeyInfo['origin']> = new Set(['init', 'rotate', 'migrate']);

/**
 * A key file's data keys, those Strata generated as {@link GeneratedKey} (encrypted without key
 * stretching): by their origin in `section`, and only if they have the shape newDataKey gives.
 */
export function markGeneratedKeys(section: EncryptionSection, secrets: ReadonlyMap<string, Passphrase>): Map<string, Passphrase> {
  const generated = new Set((section.dataKeys ?? []).filter((k) => GENERATED_ORIGINS.has(k.origin) && k.id !== section.legacyKey).map((k) => k.id));
  return new Map([...secrets].map(([id, secret]) => [id, generated.has(id) && GeneratedKey.fits(secret.reveal()) ? new GeneratedKey(secret.reveal()) : secret]));
}

export function describeKeyFile(info: KeyFileInfo): string {
  return info.label ? `${info.id} (${JSON.stringify(info.label)})` : info.id;
}

/** Labels are shown in terminals and written into key file comments: printable, one line. */
export function checkKeyLabel(label: string | undefined, what: string): string | null {
  if (label === undefined) return null;
  if (label.length === 0 || label.length > 100) throw new StrataError('USAGE', `${what}: a label is 1 to 100 characters`);
  if (/[\u0000-\u001f\u007f-\u009f]/.test(label)) throw new StrataError('USAGE', `${what}: the label ${JSON.stringify(label)} contains control characters (newlines, tabs, escape sequences); use printable text`);
  return label;
}

/** The plaintext of a key file: a header a person can read after `gpg --decrypt`, then one line per data key. */
function keyFileText(repositoryId: string, info: KeyFileInfo, secrets: ReadonlyMap<string, Passphrase>, legacyKey: string | undefined): string {
  const lines = [
    KEY_FILE_HEADER,
    `# Strata repository ${repositoryId}, key file ${describeKeyFile(info)}, written ${new Date().toISOString()}.`,
    '# Each line below is a data key id, one space, then the data key: the OpenPGP password of every',
    '# artifact whose catalog entry has that "keyId" (see "Keys" in docs/FORMAT.md). Keep them secret.',
  ];
  if (legacyKey !== undefined && secrets.has(legacyKey)) {
    lines.push(`# ${legacyKey} is the passphrase the repository used before \`strata key migrate\`; artifacts from then need it.`);
  }
  for (const [id, secret] of secrets) if (id !== PASSPHRASE_ITSELF) lines.push(`${id} ${secret.reveal()}`);
  return lines.join('\n') + '\n';
}

/** Parses a decrypted key file; ARTIFACT_CORRUPT names what is wrong (never a secret). */
export function parseKeyFileText(bytes: Uint8Array, where: string): Map<string, Passphrase> {
  const lines = Buffer.from(bytes).toString('utf8').split('\n');
  if (lines[0] !== KEY_FILE_HEADER) throw new StrataError('ARTIFACT_CORRUPT', `${where}: it decrypts, but is not a Strata key file (its first line is not "${KEY_FILE_HEADER}")`);
  const secrets = new Map<string, Passphrase>();
  for (const [n, line] of lines.entries()) {
    if (n === 0 || line === '' || line.startsWith('#')) continue;
    const match = /^([0-9a-f]{8}) (.+)$/.exec(line);
    if (!match) throw new StrataError('ARTIFACT_CORRUPT', `${where}: line ${n + 1} is not "<data key id> <data key>"`);
    if (secrets.has(match[1]!)) throw new StrataError('ARTIFACT_CORRUPT', `${where}: data key ${match[1]} is listed twice`);
    secrets.set(match[1]!, new Passphrase(match[2]!));
  }
  return secrets;
}

/** Seals a key file's plaintext with its passphrase: always SEIPDv1 (gpg reads it), armored. */
async function sealKeyFile(text: string, passphrase: Passphrase): Promise<Buffer> {
  return Buffer.from(await encryptSmall(Buffer.from(text, 'utf8'), passphrase, 'compat'), 'utf8');
}

/** Opens an armored key file: the data keys it holds, or undefined when the passphrase does not open it. */
export async function openKeyFileText(armored: string, passphrase: Passphrase, where: string): Promise<Map<string, Passphrase> | undefined> {
  let plain: Uint8Array;
  try {
    plain = await decryptSmall(armored, passphrase, where);
  } catch (err) {
    if (isStrataError(err, 'PASSPHRASE_WRONG')) return undefined;
    throw err;
  }
  return parseKeyFileText(plain, where);
}

/**
 * {@link openKeyFileText} without openpgp.js: `'undecided'` when only openpgp.js can tell whether
 * the passphrase opens the file (see decryptSmallHere).
 */
export async function openKeyFileTextHere(armored: string, passphrase: Passphrase, where: string): Promise<Map<string, Passphrase> | undefined | 'undecided'> {
  const plain = await decryptSmallHere(armored, passphrase);
  if (plain === undefined) return 'undecided';
  return plain === 'wrong' ? undefined : parseKeyFileText(plain, where);
}

export async function readKeyFile(storage: Storage, id: string): Promise<string> {
  const bytes = await storage.read(keyFileObject(id));
  if (bytes.byteLength > MAX_KEY_FILE_BYTES) throw new StrataError('ARTIFACT_CORRUPT', `key file ${id}: ${bytes.byteLength} bytes is far more than a key file holds; it was not written by Strata`);
  return Buffer.from(bytes).toString('utf8');
}

export async function writeKeyFile(storage: Storage, repositoryId: string, info: KeyFileInfo, secrets: ReadonlyMap<string, Passphrase>, passphrase: Passphrase, legacyKey: string | undefined): Promise<void> {
  await storage.put(keyFileObject(info.id), await sealKeyFile(keyFileText(repositoryId, info, secrets, legacyKey), passphrase));
}

/** True for a section with key files (repository format 2); false before `strata key migrate`. */
export function hasKeyFiles(section: EncryptionSection): boolean {
  return section.profile !== 'none' && section.keyFiles !== undefined;
}

/**
 * A damaged or hand-edited repository.json must not pass for a wrong passphrase: the user would
 * try passphrases against keys that no passphrase can open.
 */
export function checkEncryptionSection(section: unknown, location: string): asserts section is EncryptionSection {
  const damaged = (what: string): never => {
    throw new StrataError('ARTIFACT_CORRUPT', `repository: repository.json in ${location} is damaged (${what}); put back a copy of it (it holds no secret), or run \`strata init\` in a new folder`);
  };
  const enc = section as Partial<EncryptionSection> | undefined;
  if (typeof enc !== 'object' || enc === null) return damaged('it has no encryption section');
  if (!['compat', 'modern', 'none'].includes(enc.profile as string)) return damaged(`unknown encryption profile ${JSON.stringify(enc.profile)}`);
  if (enc.profile === 'none') return;
  if (enc.keyCheck !== undefined || enc.keyFiles === undefined) {
    if (typeof enc.keyCheck !== 'string' || !/^-----BEGIN PGP MESSAGE-----\r?\n[\s\S]+-----END PGP MESSAGE-----\s*$/.test(enc.keyCheck)) return damaged('its key check is not an OpenPGP message');
    if (typeof enc.keyCheckSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(enc.keyCheckSha256)) return damaged('its key check digest is malformed');
    return;
  }
  if (!Array.isArray(enc.dataKeys) || enc.dataKeys.length === 0) return damaged('it lists no data keys');
  const dataKeys = new Set<string>();
  for (const key of enc.dataKeys as unknown[]) {
    const k = key as Partial<DataKeyInfo> | null;
    if (typeof k !== 'object' || k === null || typeof k.id !== 'string' || !KEY_ID.test(k.id) || typeof k.createdAt !== 'string' || dataKeys.has(k.id)) return damaged('a data key entry is malformed');
    dataKeys.add(k.id);
  }
  if (typeof enc.currentKey !== 'string' || !dataKeys.has(enc.currentKey)) return damaged('its current data key is not one of its data keys');
  if (enc.legacyKey !== undefined && (typeof enc.legacyKey !== 'string' || !dataKeys.has(enc.legacyKey))) return damaged('its legacy key is not one of its data keys');
  if (!Array.isArray(enc.keyFiles) || enc.keyFiles.length === 0) return damaged('it lists no key files');
  const files = new Set<string>();
  for (const file of enc.keyFiles as unknown[]) {
    const f = file as Partial<KeyFileInfo> | null;
    const labelOk = f?.label === null || (typeof f?.label === 'string' && f.label.length <= 100 && !/[\u0000-\u001f\u007f-\u009f]/.test(f.label));
    if (typeof f !== 'object' || f === null || typeof f.id !== 'string' || !KEY_ID.test(f.id) || files.has(f.id) || !labelOk || typeof f.createdAt !== 'string') return damaged('a key file entry is malformed');
    if (!Array.isArray(f.dataKeys) || f.dataKeys.some((id) => typeof id !== 'string' || !dataKeys.has(id))) return damaged(`key file ${f.id} lists data keys the repository does not have`);
    files.add(f.id);
  }
}

/**
 * Key files in keys/ that `section` does not list: what a key change killed part way left (a
 * passwd or remove after its repository.json write, an add before it), or one in progress in
 * another process, which holds the repository lock meanwhile.
 */
export async function unlistedKeyFiles(storage: Storage, section: EncryptionSection): Promise<string[]> {
  const listed = new Set((section.keyFiles ?? []).map((f) => keyFileObject(f.id)));
  const unlisted: string[] = [];
  for await (const object of storage.list(KEYS_PREFIX)) {
    if (/^keys\/[0-9a-f]{8}\.asc$/.test(object.key) && !listed.has(object.key)) unlisted.push(object.key);
  }
  return unlisted;
}

/** repository.json's encryption section as it is on storage now, checked. */
export async function readSection(storage: Storage): Promise<{ raw: Record<string, unknown>; section: EncryptionSection }> {
  const raw = await readRawConfig(storage);
  checkEncryptionSection(raw['encryption'], storage.location);
  return { raw, section: raw['encryption'] };
}
