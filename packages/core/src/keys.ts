import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { BackupRecord } from './catalog.js';
import { readCatalog } from './catalog.js';
import { Passphrase, decryptSmall, encryptSmall } from './encryption.js';
import type { EncryptionProfile } from './encryption.js';
import { StrataError, isStrataError } from './errors.js';
import type { Journal } from './journal.js';
import { withRepositoryLock } from './lock.js';
import type { LockOptions } from './lock.js';
import { readRawConfig, writeRawConfig } from './repository-config.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';

/**
 * Keys (docs/FORMAT.md, "Keys"). Artifacts are encrypted under a random data key, used as the
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

/**
 * Where the passphrase comes from: a value, or a function asked when one is first needed. A
 * function is asked again after a wrong passphrase with the number of the attempt (2, 3) and may
 * return undefined to give up (a prompt asks up to three times; a file or variable cannot change).
 */
export type PassphraseSource = Passphrase | ((attempt: number) => Promise<Passphrase | undefined>);

/** How often a passphrase function is asked before a wrong passphrase is final. */
const MAX_PASSPHRASE_TRIES = 3;

/** Data key and key file ids: 8 hex digits, random. */
const KEY_ID = /^[0-9a-f]{8}$/;
/** The first line of every key file's plaintext. */
const KEY_FILE_HEADER = '# strata-key-file 1';
/** Key files hold a few lines; anything much larger was not written by Strata. */
const MAX_KEY_FILE_BYTES = 64 * 1024;
/** Where key files live in the repository. */
export const KEYS_PREFIX = 'keys/';
/** In memory only: the secret of a repository from before key files, which is its passphrase. */
const PASSPHRASE_ITSELF = 'passphrase';

/** The storage key of a key file. */
export function keyFileObject(id: string): string {
  return `${KEYS_PREFIX}${id}.asc`;
}

function newId(taken: Iterable<string>): string {
  const used = new Set(taken);
  for (;;) {
    const id = randomBytes(4).toString('hex');
    if (!used.has(id)) return id;
  }
}

/** 256 random bits as text (base64url), so gpg takes it from a file as a passphrase. */
function newDataKey(): Passphrase {
  return new Passphrase(randomBytes(32).toString('base64url'));
}

function describeKeyFile(info: KeyFileInfo): string {
  return info.label ? `${info.id} (${JSON.stringify(info.label)})` : info.id;
}

/** Labels are shown in terminals and written into key file comments: printable, one line. */
export function checkKeyLabel(label: string | undefined, what: string): string | null {
  if (label === undefined) return null;
  if (label.length === 0 || label.length > 100) throw new StrataError('USAGE', `${what}: a label is 1 to 100 characters`);
  if (/[\u0000-\u001f\u007f-\u009f]/.test(label)) throw new StrataError('USAGE', `${what}: the label ${JSON.stringify(label)} contains control characters (newlines, tabs, escape sequences); use printable text`);
  return label;
}

/** The data keys a passphrase's key file gave it (or, before key files, the passphrase itself). */
export class Keyring {
  readonly #secrets: ReadonlyMap<string, Passphrase>;
  /** The key file the passphrase opened; undefined in a repository from before key files. */
  readonly keyFile: KeyFileInfo | undefined;
  /** Kept to reopen the key file after another process changed the keys, and to rewrite it. */
  readonly passphrase: Passphrase;

  constructor(secrets: ReadonlyMap<string, Passphrase>, keyFile: KeyFileInfo | undefined, passphrase: Passphrase) {
    this.#secrets = secrets;
    this.keyFile = keyFile;
    this.passphrase = passphrase;
  }

  get(id: string): Passphrase | undefined {
    return this.#secrets.get(id);
  }

  has(id: string): boolean {
    return this.#secrets.has(id);
  }

  /** Data key ids it holds, in the order the key file lists them. */
  ids(): string[] {
    return [...this.#secrets.keys()].filter((id) => id !== PASSPHRASE_ITSELF);
  }

  /**
   * The data keys to write into a key file: those of `section` it holds, plus `more`. A key the
   * file holds but repository.json does not list (left by a rotate killed before its
   * repository.json write) is not carried on.
   */
  for(section: EncryptionSection, more: ReadonlyMap<string, Passphrase> = new Map()): Map<string, Passphrase> {
    const known = new Set((section.dataKeys ?? []).map((k) => k.id));
    const out = new Map([...this.#secrets].filter(([id]) => known.has(id)));
    for (const [id, secret] of more) if (!out.has(id)) out.set(id, secret);
    return out;
  }

  toString(): string {
    return `[keyring of ${this.keyFile?.id ?? 'the passphrase'}]`;
  }

  toJSON(): string {
    return this.toString();
  }
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

async function readKeyFile(storage: Storage, id: string): Promise<string> {
  const bytes = await storage.read(keyFileObject(id));
  if (bytes.byteLength > MAX_KEY_FILE_BYTES) throw new StrataError('ARTIFACT_CORRUPT', `key file ${id}: ${bytes.byteLength} bytes is far more than a key file holds; it was not written by Strata`);
  return Buffer.from(bytes).toString('utf8');
}

async function writeKeyFile(storage: Storage, repositoryId: string, info: KeyFileInfo, secrets: ReadonlyMap<string, Passphrase>, passphrase: Passphrase, legacyKey: string | undefined): Promise<void> {
  await storage.put(keyFileObject(info.id), await sealKeyFile(keyFileText(repositoryId, info, secrets, legacyKey), passphrase));
}

/**
 * The encryption section of a new repository: a data key and a key file holding it, sealed with
 * the passphrase. The key file is written here, before the caller writes repository.json.
 */
export async function createKeys(storage: Storage, options: { profile: Exclude<EncryptionProfile, 'none'>; passphrase: Passphrase; repositoryId: string; label?: string }): Promise<{ section: EncryptionSection; keyFile: KeyFileInfo }> {
  const createdAt = new Date().toISOString();
  const dataKeyId = newId([]);
  const keyFile: KeyFileInfo = { id: newId([]), label: checkKeyLabel(options.label, 'init'), createdAt, dataKeys: [dataKeyId] };
  await writeKeyFile(storage, options.repositoryId, keyFile, new Map([[dataKeyId, newDataKey()]]), options.passphrase, undefined);
  return { section: { profile: options.profile, currentKey: dataKeyId, dataKeys: [{ id: dataKeyId, createdAt, origin: 'init' }], keyFiles: [keyFile] }, keyFile };
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

/** repository.json's encryption section as it is on storage now, checked. */
async function readSection(storage: Storage): Promise<{ raw: Record<string, unknown>; section: EncryptionSection }> {
  const raw = await readRawConfig(storage);
  checkEncryptionSection(raw['encryption'], storage.location);
  return { raw, section: raw['encryption'] };
}

/**
 * The repository's keys as this process holds them: the encryption section, and once unlocked,
 * the data keys the passphrase's key file gave. Before key files the passphrase itself is the
 * only key. Used by {@link Repository}; programs use {@link RepositoryKeys}.
 */
export class KeyVault {
  readonly #storage: Storage;
  readonly #source: PassphraseSource | undefined;
  #section: EncryptionSection;
  #keyring: Keyring | undefined;
  /** Key files repository.json lists that the last unlock did not find on storage. */
  #missing = new Set<string>();

  constructor(storage: Storage, section: EncryptionSection, source: PassphraseSource | undefined) {
    this.#storage = storage;
    this.#section = section;
    this.#source = source;
  }

  get section(): EncryptionSection {
    return this.#section;
  }

  /** The unlocked keys, if {@link unlock} succeeded. */
  get keyring(): Keyring | undefined {
    return this.#keyring;
  }

  /**
   * The data keys of the passphrase, asking the passphrase source when needed; undefined for an
   * unencrypted repository. Each call first looks whether another process changed the keys
   * (rotate, passwd, remove) so a long-lived process never writes under a key that was replaced.
   */
  async unlock(): Promise<Keyring | undefined> {
    if (this.#section.profile === 'none') return undefined;
    await this.#refresh();
    if (this.#keyring) return this.#keyring;
    const source = this.#source;
    if (!source) throw new StrataError('PASSPHRASE_MISSING', 'repository: it is encrypted; give the passphrase with STRATA_PASSPHRASE, --passphrase-file or at the prompt');
    for (let attempt = 1; ; attempt++) {
      const passphrase = attempt > MAX_PASSPHRASE_TRIES ? undefined : typeof source === 'function' ? await source(attempt) : attempt === 1 ? source : undefined;
      if (!passphrase) throw this.#wrong(attempt);
      const keyring = await this.open(this.#section, passphrase);
      if (keyring) {
        this.#keyring = keyring;
        return keyring;
      }
    }
  }

  #wrong(attempt: number): StrataError {
    const files = this.#section.keyFiles;
    const tries = attempt > 2 ? ` (${attempt - 1} tries)` : '';
    const missing = [...this.#missing].filter((id) => files?.some((f) => f.id === id));
    const which = files ? `: it opens none of the repository's ${files.length} key file(s)` : '';
    const lost = missing.length > 0 ? `; key file(s) ${missing.join(', ')} are missing from ${KEYS_PREFIX} (put back a copy if your passphrase opened one)` : '';
    return new StrataError('PASSPHRASE_WRONG', `repository: wrong passphrase${tries}${which}${lost}`);
  }

  /**
   * The keys `passphrase` opens under `section`: the first key file it decrypts (`prefer` first),
   * or before key files the key check. Undefined when it opens nothing.
   */
  async open(section: EncryptionSection, passphrase: Passphrase, prefer?: string): Promise<Keyring | undefined> {
    if (!hasKeyFiles(section)) {
      try {
        const token = await decryptSmall(section.keyCheck ?? '', passphrase);
        const digest = createHash('sha256').update(token).digest();
        if (!section.keyCheckSha256 || !timingSafeEqual(digest, Buffer.from(section.keyCheckSha256, 'hex'))) return undefined;
      } catch (err) {
        if (isStrataError(err, 'PASSPHRASE_WRONG')) return undefined;
        throw err;
      }
      return new Keyring(new Map([[PASSPHRASE_ITSELF, passphrase]]), undefined, passphrase);
    }
    const files = [...section.keyFiles!].sort((a, b) => Number(b.id === prefer) - Number(a.id === prefer));
    for (const info of files) {
      let armored: string;
      try {
        armored = await readKeyFile(this.#storage, info.id);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        this.#missing.add(info.id);
        continue;
      }
      const secrets = await openKeyFileText(armored, passphrase, `key file ${info.id}`);
      if (secrets) return new Keyring(secrets, info, passphrase);
    }
    return undefined;
  }

  /** Takes on a section another process wrote; the keyring follows (or is dropped if its key file is gone). */
  async #refresh(): Promise<void> {
    let fresh: EncryptionSection;
    try {
      fresh = (await readSection(this.#storage)).section;
    } catch {
      // A damaged file appearing mid-session: keep what was checked at open; changes re-read it and fail.
      return;
    }
    if (JSON.stringify(fresh) === JSON.stringify(this.#section)) return;
    const keyring = this.#keyring;
    this.#section = fresh;
    this.#keyring = keyring && fresh.profile !== 'none' ? await this.open(fresh, keyring.passphrase, keyring.keyFile?.id) : undefined;
  }

  /** After this process changed the keys. */
  adopt(section: EncryptionSection, keyring: Keyring | undefined): void {
    this.#section = section;
    this.#keyring = keyring;
  }

  /**
   * The id of the data key a record's artifact needs: its own, or for artifacts from before
   * `strata key migrate` the old passphrase's; undefined when unencrypted or before key files.
   */
  keyIdOf(record: Pick<BackupRecord, 'encryption'>): string | undefined {
    if (record.encryption.profile === 'none') return undefined;
    return record.encryption.keyId ?? this.#section.legacyKey;
  }

  /** The OpenPGP password of a record's artifact (undefined when unencrypted); KEY_MISSING when the key file lacks it. */
  keyFor(record: Pick<BackupRecord, 'encryption' | 'id'>, what: string): Passphrase | undefined {
    if (record.encryption.profile === 'none') return undefined;
    const keyring = this.#unlocked(what);
    const id = this.keyIdOf(record) ?? (hasKeyFiles(this.#section) ? undefined : PASSPHRASE_ITSELF);
    const secret = id === undefined ? undefined : keyring.get(id);
    if (secret) return secret;
    throw this.#missingKey(id, `${what}: ${record.id}`);
  }

  /** The data key a new artifact is encrypted under, and its id (none before key files). */
  current(what: string): { id: string | undefined; secret: Passphrase } {
    const keyring = this.#unlocked(what);
    if (!hasKeyFiles(this.#section)) return { id: undefined, secret: keyring.get(PASSPHRASE_ITSELF)! };
    const id = this.#section.currentKey!;
    const secret = keyring.get(id);
    if (secret) return { id, secret };
    const made = this.#section.dataKeys?.find((k) => k.id === id)?.createdAt;
    const mine = keyring.keyFile!;
    throw new StrataError(
      'KEY_MISSING',
      `${what}: key file ${describeKeyFile(mine)}, the one your passphrase opens, does not hold the repository's current data key ${id}${made ? ` (made ${made})` : ''}, so it cannot make new backups. ` +
        `Someone whose key file holds it can give you a new key file (\`strata key add\`, then \`strata key remove ${mine.id}\`), or run \`strata key rotate --also-passphrase-file\` with your passphrase; \`strata key list\` shows which key files hold it`,
      { details: { keyId: id, keyFile: mine.id } },
    );
  }

  /** Every data key of the unlocked key file, the current one first (ids undefined before key files). */
  candidates(): { id: string | undefined; secret: Passphrase }[] {
    const keyring = this.#unlocked('keys');
    if (!hasKeyFiles(this.#section)) return [{ id: undefined, secret: keyring.get(PASSPHRASE_ITSELF)! }];
    const ids = keyring.ids().sort((a, b) => Number(b === this.#section.currentKey) - Number(a === this.#section.currentKey));
    return ids.map((id) => ({ id, secret: keyring.get(id)! }));
  }

  /** True when the repository has data keys that the unlocked key file does not hold. */
  lacksSomeKey(): boolean {
    const keyring = this.#keyring;
    return hasKeyFiles(this.#section) && (this.#section.dataKeys ?? []).some((k) => !keyring?.has(k.id));
  }

  #unlocked(what: string): Keyring {
    if (!this.#keyring) throw new StrataError('INTERNAL', `${what}: the keys were used before the repository was unlocked`);
    return this.#keyring;
  }

  #missingKey(id: string | undefined, what: string): StrataError {
    const mine = this.#keyring?.keyFile;
    if (id === undefined) {
      return new StrataError('KEY_MISSING', `${what}: it was encrypted with the passphrase of a repository from before key files, which no data key of this repository is`);
    }
    if (!mine) return new StrataError('KEY_MISSING', `${what}: it needs data key ${id}, and this repository has no key files yet (\`strata key migrate\` makes them)`, { details: { keyId: id } });
    const holders = (this.#section.keyFiles ?? []).filter((f) => f.dataKeys.includes(id)).map(describeKeyFile);
    return new StrataError(
      'KEY_MISSING',
      `${what}: it needs data key ${id}, which key file ${describeKeyFile(mine)}, the one your passphrase opens, does not hold; ${
        holders.length > 0 ? `use the passphrase of a key file that holds it (${holders.join(', ')})` : 'no key file of this repository holds it'
      }`,
      { details: { keyId: id, keyFile: mine.id } },
    );
  }
}

/** What `strata key list` shows: nothing here is secret. */
export interface KeyListing {
  /** False for a repository from before key files (encrypted with the passphrase itself) or an unencrypted one. */
  readonly keyed: boolean;
  readonly encryption: EncryptionProfile;
  readonly currentKey: string | null;
  /** The key file this process's passphrase opened, if it was unlocked. */
  readonly opened: string | null;
  readonly keyFiles: readonly (KeyFileInfo & { readonly opened: boolean; readonly holdsCurrent: boolean })[];
  readonly dataKeys: readonly (DataKeyInfo & { readonly current: boolean; readonly legacy: boolean; readonly backups: number; readonly heldBy: readonly string[] })[];
}

/** What {@link RepositoryKeys.rotate} did. */
export interface RotateResult {
  readonly dataKey: string;
  /** Key files that now hold the new key. */
  readonly updated: readonly KeyFileInfo[];
  /** Key files that do not: backups made with their passphrases fail (KEY_MISSING) until they do. */
  readonly stale: readonly KeyFileInfo[];
}

/** What {@link RepositoryKeys} needs of its repository. */
export interface KeyHost {
  readonly storage: Storage;
  readonly journal: Journal;
  readonly lock: LockOptions | undefined;
  readonly repositoryId: string;
  readonly vault: KeyVault;
  /** Every backup in the catalog (rebuilding it if it is missing). */
  backups(): Promise<readonly BackupRecord[]>;
}

/** How many backups need each data key. */
function backupsPerKey(backups: readonly BackupRecord[], vault: KeyVault): Map<string, number> {
  const counts = new Map<string, number>();
  for (const b of backups) {
    const id = vault.keyIdOf(b);
    if (id !== undefined) counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

/**
 * The repository's passphrases and data keys (`repo.keys`). Every change takes the repository
 * lock, journals what it did (ids and labels, never a secret), and writes new key files before the
 * repository.json that lists them, so a process killed at any point leaves a repository that
 * every passphrase which opened it before still opens.
 *
 * ```ts
 * await repo.keys.add({ passphrase: new Passphrase(newSecret), label: 'ops laptop' })
 * await repo.keys.rotate()
 * ```
 */
export class RepositoryKeys {
  readonly #host: KeyHost;

  /** Made by the repository; use `repo.keys`. */
  constructor(host: KeyHost) {
    this.#host = host;
  }

  /** Key files and data keys, from repository.json; needs no passphrase (`opened` is set if one was given before). */
  async list(): Promise<KeyListing> {
    const vault = this.#host.vault;
    const { section } = await readSection(this.#host.storage);
    const keyring = vault.keyring;
    const counts = backupsPerKey(await this.#host.backups(), vault);
    const files = section.keyFiles ?? [];
    const opened = keyring?.keyFile?.id ?? null;
    return {
      keyed: hasKeyFiles(section),
      encryption: section.profile,
      currentKey: section.currentKey ?? null,
      opened,
      keyFiles: files.map((f) => ({ ...f, opened: f.id === opened, holdsCurrent: section.currentKey !== undefined && f.dataKeys.includes(section.currentKey) })),
      dataKeys: (section.dataKeys ?? []).map((k) => ({
        ...k,
        current: k.id === section.currentKey,
        legacy: k.id === section.legacyKey,
        backups: counts.get(k.id) ?? 0,
        heldBy: files.filter((f) => f.dataKeys.includes(k.id)).map((f) => f.id),
      })),
    };
  }

  /**
   * Adds a passphrase: a new key file, sealed with it, holding every data key the unlocking
   * passphrase's key file holds. Refuses a passphrase that already opens a key file.
   */
  async add(options: { passphrase: Passphrase; label?: string }): Promise<KeyFileInfo> {
    const label = checkKeyLabel(options.label, 'key add');
    return this.#change('add', async (section, mine) => {
      await this.#refuseKnown(section, options.passphrase, mine, 'key add');
      const secrets = mine.for(section);
      const info: KeyFileInfo = { id: newId(section.keyFiles!.map((f) => f.id)), label, createdAt: new Date().toISOString(), dataKeys: [...secrets.keys()] };
      await this.#writeKeyFile(section, info, secrets, options.passphrase);
      await this.#commit({ ...section, keyFiles: [...section.keyFiles!, info] }, mine);
      return { result: info, details: { keyFile: info.id, label, dataKeys: info.dataKeys } };
    });
  }

  /**
   * Removes a key file, so its passphrase no longer opens the repository. Refused for the last
   * key file, for the one the unlocking passphrase opened (unless `force`), and when it is the
   * only key file holding a data key that a backup (or the next backup) needs.
   *
   * A copy of the key file, or the data keys someone read from it, still open the artifacts made
   * under those keys: after removing a passphrase that may have leaked, rotate the data key.
   */
  async remove(id: string, options: { force?: boolean } = {}): Promise<KeyFileInfo> {
    return this.#change('remove', async (section, mine, backups) => {
      const files = section.keyFiles!;
      const target = files.find((f) => f.id === id);
      if (!target) {
        const isDataKey = section.dataKeys?.some((k) => k.id === id);
        throw new StrataError('USAGE', `key remove: no key file ${id}${isDataKey ? ` (${id} is a data key; key remove takes a key file id)` : ''}; \`strata key list\` shows them`);
      }
      if (files.length === 1) throw new StrataError('USAGE', `key remove: ${describeKeyFile(target)} is the only key file; without it no passphrase opens the repository. Add another first (\`strata key add\`)`);
      if (target.id === mine.keyFile!.id && !options.force) {
        throw new StrataError('USAGE', `key remove: ${describeKeyFile(target)} is the key file your passphrase opens; after removing it you need another passphrase. Pass --force if that is what you want (to change your passphrase, use \`strata key passwd\`)`);
      }
      const rest = files.filter((f) => f.id !== id);
      const counts = backupsPerKey(backups, this.#host.vault);
      const needed = new Map(counts);
      if (!needed.has(section.currentKey!)) needed.set(section.currentKey!, 0);
      const stranded = [...needed].filter(([key]) => target.dataKeys.includes(key) && !rest.some((f) => f.dataKeys.includes(key)));
      if (stranded.length > 0) {
        const what = stranded.map(([key, n]) => (key === section.currentKey ? `${key} (the current data key${n > 0 ? `, needed by ${n} backup(s)` : ''})` : `${key} (needed by ${n} backup(s))`));
        throw new StrataError(
          'USAGE',
          `key remove: ${describeKeyFile(target)} is the only key file holding data key(s) ${what.join(', ')}; without it they could not be ${stranded.some(([, n]) => n > 0) ? 'restored' : 'used'}. ` +
            'First give them to another key file: `strata key add` with the passphrase of this key file makes a new key file holding all of its data keys',
          { details: { stranded: stranded.map(([key]) => key) } },
        );
      }
      await this.#commit({ ...section, keyFiles: rest }, target.id === mine.keyFile!.id ? undefined : mine);
      // Only now: until repository.json stopped listing it, it had to stay openable.
      await this.#host.storage.delete(keyFileObject(target.id));
      return { result: target, details: { keyFile: target.id, label: target.label, forced: target.id === mine.keyFile!.id } };
    });
  }

  /**
   * Changes the unlocking passphrase: a new key file with the same data keys, sealed with the new
   * passphrase, takes the old one's place in repository.json in one atomic write; the old file is
   * deleted afterwards. Killed before that write, the old passphrase still opens the repository;
   * after it, the new one does.
   */
  async passwd(options: { passphrase: Passphrase }): Promise<{ removed: KeyFileInfo; added: KeyFileInfo }> {
    return this.#change('passwd', async (section, mine) => {
      await this.#refuseKnown(section, options.passphrase, mine, 'key passwd');
      const old = mine.keyFile!;
      const secrets = mine.for(section);
      const info: KeyFileInfo = { id: newId(section.keyFiles!.map((f) => f.id)), label: old.label, createdAt: new Date().toISOString(), dataKeys: [...secrets.keys()] };
      await this.#writeKeyFile(section, info, secrets, options.passphrase);
      await this.#commit({ ...section, keyFiles: section.keyFiles!.map((f) => (f.id === old.id ? info : f)) }, new Keyring(secrets, info, options.passphrase));
      await this.#host.storage.delete(keyFileObject(old.id));
      return { result: { removed: old, added: info }, details: { removed: old.id, added: info.id, label: old.label } };
    });
  }

  /**
   * Makes a new current data key for new artifacts, written into the key file the passphrase
   * opens and into those that `alsoPassphrases` open (which also receive every other data key the
   * first one holds). Nothing is re-encrypted: older artifacts keep needing their keys, which every
   * key file keeps. Other key files are returned as `stale`.
   */
  async rotate(options: { alsoPassphrases?: readonly Passphrase[] } = {}): Promise<RotateResult> {
    return this.#change('rotate', async (section, mine) => {
      const rings: Keyring[] = [mine];
      for (const [n, passphrase] of (options.alsoPassphrases ?? []).entries()) {
        const opened = await this.#host.vault.open(section, passphrase);
        if (!opened) throw new StrataError('PASSPHRASE_WRONG', `key rotate: the ${ordinal(n + 1)} other passphrase opens none of the repository's key files; nothing was changed`);
        if (!rings.some((r) => r.keyFile!.id === opened.keyFile!.id)) rings.push(opened);
      }
      const dataKey = { id: newId(section.dataKeys!.map((k) => k.id)), secret: newDataKey() };
      const createdAt = new Date().toISOString();
      const updated: KeyFileInfo[] = [];
      let mineAfter: Keyring = mine;
      for (const ring of rings) {
        const listed = section.keyFiles!.find((f) => f.id === ring.keyFile!.id)!;
        // The other key files get every key this one holds too: one that missed an earlier rotation
        // would otherwise lack the key the newest backups (the parents of the next ones) need.
        const secrets = ring.for(section, new Map([[dataKey.id, dataKey.secret], ...mine.for(section)]));
        const info: KeyFileInfo = { ...listed, dataKeys: [...secrets.keys()] };
        // In place, atomically: the file holds everything it held plus the new key, so whenever a
        // kill stops the rotation, each passphrase still opens what repository.json says it does.
        await this.#writeKeyFile(section, info, secrets, ring.passphrase);
        updated.push(info);
        if (ring === mine) mineAfter = new Keyring(secrets, info, mine.passphrase);
      }
      const stale = section.keyFiles!.filter((f) => !updated.some((u) => u.id === f.id));
      await this.#commit(
        {
          ...section,
          currentKey: dataKey.id,
          dataKeys: [...section.dataKeys!, { id: dataKey.id, createdAt, origin: 'rotate' }],
          keyFiles: section.keyFiles!.map((f) => updated.find((u) => u.id === f.id) ?? f),
        },
        mineAfter,
      );
      return { result: { dataKey: dataKey.id, updated, stale }, details: { dataKey: dataKey.id, updated: updated.map((f) => f.id), stale: stale.map((f) => f.id) } };
    });
  }

  /**
   * Moves a repository from before key files onto them: a new current data key, and a key file
   * sealed with the passphrase holding it and the passphrase itself (as the data key of every
   * older artifact). repository.json then lists the key file instead of the key check. Killed
   * before that write, nothing changed.
   */
  async migrate(options: { label?: string } = {}): Promise<{ keyFile: KeyFileInfo; dataKey: string; legacyKey: string }> {
    const label = checkKeyLabel(options.label, 'key migrate');
    return this.#change('migrate', async (section, mine) => {
      if (hasKeyFiles(section)) throw new StrataError('USAGE', 'key migrate: the repository already uses key files; `strata key list` shows them');
      if (/[\r\n]/.test(mine.passphrase.reveal())) {
        throw new StrataError('USAGE', 'key migrate: the passphrase contains a line break, which a key file line cannot hold (nor can gpg --passphrase-file read it); the repository stays as it is');
      }
      const legacyKey = newId([]);
      const dataKey = newId([legacyKey]);
      const createdAt = new Date().toISOString();
      const secrets = new Map([
        [dataKey, newDataKey()],
        [legacyKey, mine.passphrase],
      ]);
      const info: KeyFileInfo = { id: newId([]), label, createdAt, dataKeys: [dataKey, legacyKey] };
      const next: EncryptionSection = {
        profile: section.profile,
        currentKey: dataKey,
        legacyKey,
        dataKeys: [
          { id: legacyKey, createdAt, origin: 'legacy' },
          { id: dataKey, createdAt, origin: 'migrate' },
        ],
        keyFiles: [info],
      };
      await writeKeyFile(this.#host.storage, this.#host.repositoryId, info, secrets, mine.passphrase, legacyKey);
      await this.#commit(next, new Keyring(secrets, info, mine.passphrase));
      return { result: { keyFile: info, dataKey, legacyKey }, details: { keyFile: info.id, dataKey, legacyKey } };
    }, { keyFiles: false });
  }

  /**
   * Gives the unlocking passphrase's key file more data keys (an import bringing artifacts under
   * keys it lacks), before the catalog lists anything that needs them. Part of the caller's
   * journaled operation.
   */
  async addDataKeys(keys: ReadonlyMap<string, Passphrase>): Promise<void> {
    if (keys.size === 0) return;
    await this.#locked(async (section, mine) => {
      const fresh = [...keys].filter(([id]) => !mine.has(id));
      if (fresh.length === 0) return;
      const secrets = mine.for(section, new Map(fresh));
      const listed = section.keyFiles!.find((f) => f.id === mine.keyFile!.id)!;
      const info: KeyFileInfo = { ...listed, dataKeys: [...secrets.keys()] };
      await this.#writeKeyFile(section, info, secrets, mine.passphrase);
      const createdAt = new Date().toISOString();
      const known = new Set(section.dataKeys!.map((k) => k.id));
      await this.#commit(
        {
          ...section,
          dataKeys: [...section.dataKeys!, ...fresh.filter(([id]) => !known.has(id)).map(([id]): DataKeyInfo => ({ id, createdAt, origin: 'import' }))],
          keyFiles: section.keyFiles!.map((f) => (f.id === info.id ? info : f)),
        },
        new Keyring(secrets, info, mine.passphrase),
      );
    });
  }

  /** Key files that the export of `records` must carry so its artifacts can be opened, as armored text. */
  async forExport(records: readonly BackupRecord[]): Promise<(KeyFileInfo & { message: string })[]> {
    const section = this.#host.vault.section;
    if (!hasKeyFiles(section)) return [];
    const needed = new Set(records.map((r) => this.#host.vault.keyIdOf(r)).filter((id): id is string => id !== undefined));
    const out: (KeyFileInfo & { message: string })[] = [];
    for (const info of section.keyFiles!) {
      if (!info.dataKeys.some((id) => needed.has(id))) continue;
      out.push({ ...info, message: await readKeyFile(this.#host.storage, info.id) });
    }
    return out;
  }

  /** Runs a change under the lock, journaled, with the unlocking passphrase's keys reopened there. */
  async #change<T>(
    action: 'add' | 'remove' | 'passwd' | 'rotate' | 'migrate',
    fn: (section: EncryptionSection, mine: Keyring, backups: readonly BackupRecord[]) => Promise<{ result: T; details: Record<string, unknown> }>,
    options: { keyFiles: boolean } = { keyFiles: true },
  ): Promise<T> {
    const what = `key ${action}`;
    const vault = this.#host.vault;
    const keyring = await vault.unlock();
    if (!keyring) throw new StrataError('USAGE', `${what}: the repository is not encrypted, so it has no keys`);
    if (options.keyFiles && !keyring.keyFile) {
      throw new StrataError('USAGE', `${what}: this repository is encrypted with its passphrase itself, from before key files; run \`strata key migrate\` first`);
    }
    // Outside the lock: a missing catalog is rebuilt under the same lock.
    const backups = await this.#host.backups();
    const op = await this.#host.journal.begin('key', { details: { action } });
    try {
      const { result, details } = await this.#locked(async (section, mine) => {
        const catalog = (await readCatalog(this.#host.storage)) ?? backups;
        return fn(section, mine, catalog);
      }, !options.keyFiles);
      await op.complete({ details: { action, ...details } });
      return result;
    } catch (err) {
      await op.fail(err, { details: { action } }).catch(() => undefined);
      throw err;
    }
  }

  /** Under the lock: repository.json as it is now, orphaned key files swept, and the unlocking passphrase's keys reopened from it. */
  async #locked<T>(fn: (section: EncryptionSection, mine: Keyring) => Promise<T>, allowLegacy = false): Promise<T> {
    const vault = this.#host.vault;
    const keyring = vault.keyring!;
    return withRepositoryLock(
      this.#host.storage,
      'key',
      async () => {
        const { section } = await readSection(this.#host.storage);
        await this.#sweepOrphans(section);
        const mine = await vault.open(section, keyring.passphrase, keyring.keyFile?.id);
        if (!mine) throw new StrataError('PASSPHRASE_WRONG', 'key: another process changed the keys meanwhile, and your passphrase no longer opens any key file; nothing was changed');
        if (!allowLegacy && !mine.keyFile) throw new StrataError('USAGE', 'key: this repository is encrypted with its passphrase itself, from before key files; run `strata key migrate` first');
        return fn(section, mine);
      },
      this.#host.lock,
    );
  }

  /** A new passphrase must be new: one that already opens a key file would make two files for one person. */
  async #refuseKnown(section: EncryptionSection, passphrase: Passphrase, mine: Keyring, what: string): Promise<void> {
    if (passphrase.reveal() === mine.passphrase.reveal()) throw new StrataError('USAGE', `${what}: the new passphrase is the one you unlocked with; choose another`);
    const opened = await this.#host.vault.open(section, passphrase);
    if (opened) throw new StrataError('USAGE', `${what}: that passphrase already opens key file ${describeKeyFile(opened.keyFile!)}; choose another`);
  }

  async #writeKeyFile(section: EncryptionSection, info: KeyFileInfo, secrets: ReadonlyMap<string, Passphrase>, passphrase: Passphrase): Promise<void> {
    await writeKeyFile(this.#host.storage, this.#host.repositoryId, info, secrets, passphrase, section.legacyKey);
  }

  /** Writes the new section into repository.json (keeping every other field), and makes it this process's. */
  async #commit(section: EncryptionSection, keyring: Keyring | undefined): Promise<void> {
    const { raw } = await readSection(this.#host.storage);
    await writeRawConfig(this.#host.storage, { ...raw, version: Math.max(Number(raw['version']) || 1, 2), encryption: section });
    this.#host.vault.adopt(section, keyring);
  }

  /**
   * Key files repository.json does not list are leftovers of a change that was killed (an add
   * before its repository.json write, a remove or passwd after it). Every change happens under
   * the lock, so none is in progress now.
   */
  async #sweepOrphans(section: EncryptionSection): Promise<void> {
    const listed = new Set((section.keyFiles ?? []).map((f) => keyFileObject(f.id)));
    for await (const object of this.#host.storage.list(KEYS_PREFIX)) {
      if (/^keys\/[0-9a-f]{8}\.asc$/.test(object.key) && !listed.has(object.key)) await this.#host.storage.delete(object.key);
    }
  }
}

/** The encryption section of an export bundle (strata-export.json). */
export interface ExportedEncryption {
  readonly profile: string;
  readonly keyCheck?: string;
  readonly keyCheckSha256?: string;
  readonly keyFiles?: readonly (KeyFileInfo & { readonly message: string })[];
}

/** How an import's artifacts will be opened here. */
export interface ImportKeyPlan {
  /** For an export from before key files: the data key id its records get here. */
  readonly keyId: string | undefined;
  /** Data keys to add to the importing passphrase's key file before the catalog lists the backups. */
  readonly add: ReadonlyMap<string, Passphrase>;
}

/**
 * Decides, before anything of an export is written, how its artifacts will be opened in this
 * repository: with data keys the importing passphrase's key file already holds, or with keys from
 * the export's key file that the passphrase opens (added to its key file here), or for an export
 * from before key files with that repository's passphrase. Refuses clearly when none of it opens.
 */
export async function planImportKeys(vault: KeyVault, theirs: ExportedEncryption, records: readonly BackupRecord[], file: string): Promise<ImportKeyPlan> {
  const ours = vault.section;
  const none: ImportKeyPlan = { keyId: undefined, add: new Map() };
  if (theirs.profile === 'none' && ours.profile !== 'none') {
    throw new StrataError('USAGE', 'import: the export is unencrypted and this repository is encrypted; import it into an unencrypted repository (artifacts are copied as they are)');
  }
  if (theirs.profile !== 'none' && ours.profile === 'none') {
    throw new StrataError('USAGE', 'import: the export is encrypted and this repository is not; import it into an encrypted repository with the same passphrase');
  }
  if (theirs.profile === 'none') return none;
  const keyring = (await vault.unlock())!;
  if (theirs.keyFiles === undefined) {
    // From before key files: its artifacts are encrypted with that repository's passphrase.
    const opens = async (secret: Passphrase): Promise<boolean> => {
      try {
        const token = await decryptSmall(theirs.keyCheck ?? '', secret, "the export's key check");
        return createHash('sha256').update(token).digest('hex') === theirs.keyCheckSha256;
      } catch {
        return false;
      }
    };
    const different = (more: string): StrataError => new StrataError('PASSPHRASE_WRONG', `import: the export was made in a repository with a different passphrase${more}; import it with the passphrase of the repository it came from`);
    if (!hasKeyFiles(ours)) {
      if (await opens(keyring.passphrase)) return none;
      throw different('');
    }
    for (const candidate of vault.candidates()) if (await opens(candidate.secret)) return { keyId: candidate.id, add: new Map() };
    if (!(await opens(keyring.passphrase))) throw different(', and no data key your key file holds opens it');
    if (/[\r\n]/.test(keyring.passphrase.reveal())) throw new StrataError('USAGE', 'import: the passphrase contains a line break, which a key file line cannot hold');
    const id = newId((ours.dataKeys ?? []).map((k) => k.id));
    return { keyId: id, add: new Map([[id, keyring.passphrase]]) };
  }
  if (!hasKeyFiles(ours)) {
    throw new StrataError('USAGE', `import: ${file} comes from a repository with key files, and this one is encrypted with its passphrase itself; run \`strata key migrate\` here first`);
  }
  const hostile = (what: string): never => {
    throw new StrataError('ARTIFACT_HOSTILE', `import: ${file} ${what}; it was not made by Strata or was altered, and nothing of it was imported`);
  };
  if (!Array.isArray(theirs.keyFiles) || theirs.keyFiles.length > 1000) hostile('lists its key files in a shape Strata never writes');
  for (const f of theirs.keyFiles) {
    const ok = typeof f === 'object' && f !== null && typeof f.id === 'string' && KEY_ID.test(f.id) && typeof f.message === 'string' && f.message.length <= MAX_KEY_FILE_BYTES && Array.isArray(f.dataKeys) && (f.dataKeys as unknown[]).every((id) => typeof id === 'string' && KEY_ID.test(id));
    if (!ok) hostile('holds a malformed key file entry');
  }
  const needed = new Map<string, string[]>();
  for (const r of records) {
    if (r.encryption.profile === 'none') continue;
    const id = r.encryption.keyId;
    if (id === undefined) hostile(`lists ${r.id} without the data key it needs`);
    needed.set(id!, [...(needed.get(id!) ?? []), r.id]);
  }
  const lacking = [...needed.keys()].filter((id) => !keyring.has(id));
  if (lacking.length === 0) return none;
  const opened = new Map<string, Passphrase>();
  let openedAny = false;
  for (const f of theirs.keyFiles) {
    const secrets = await openKeyFileText(f.message, keyring.passphrase, `import: key file ${f.id} in ${file}`);
    if (!secrets) continue;
    openedAny = true;
    for (const [id, secret] of secrets) if (!opened.has(id)) opened.set(id, secret);
  }
  if (!openedAny) {
    throw new StrataError(
      'PASSPHRASE_WRONG',
      `import: your passphrase opens none of the ${theirs.keyFiles.length} key file(s) in ${file}, and your key file does not hold data key(s) ${lacking.join(', ')} that its backups need; import with a passphrase that opens one of them (one of the repository the export came from)`,
    );
  }
  const missing = lacking.filter((id) => !opened.has(id));
  if (missing.length > 0) {
    throw new StrataError('KEY_MISSING', `import: backups in ${file} (${missing.flatMap((id) => needed.get(id)!).slice(0, 3).join(', ')}) need data key(s) ${missing.join(', ')}, which neither your key file nor the export's key file your passphrase opens holds`);
  }
  return { keyId: undefined, add: new Map(lacking.map((id) => [id, opened.get(id)!])) };
}

function ordinal(n: number): string {
  return n === 1 ? 'first' : n === 2 ? 'second' : n === 3 ? 'third' : `${n}th`;
}
