import { createHash, timingSafeEqual } from 'node:crypto';
import type { BackupRecord } from './catalog.js';
import { readCatalog } from './catalog.js';
import { decryptSmall, messageDamage } from './encryption.js';
import type { Passphrase } from './encryption.js';
import { StrataError, isStrataError } from './errors.js';
import { KEYS_PREFIX, PASSPHRASE_ITSELF, describeKeyFile, hasKeyFiles, markGeneratedKeys, openKeyFileText, openKeyFileTextHere, readKeyFile, readSection } from './key-file.js';
import type { EncryptionSection, KeyFileInfo } from './key-file.js';
import type { Storage } from './storage.js';
import { isNotFound } from './storage.js';

/**
 * Where the passphrase comes from: a value, or a function asked when one is first needed. A
 * function is asked again after a wrong passphrase with the number of the attempt (2, 3) and may
 * return undefined to give up (a prompt asks up to three times; a file or variable cannot change).
 */
export type PassphraseSource = Passphrase | ((attempt: number) => Promise<Passphrase | undefined>);

/** How often a passphrase function is asked before a wrong passphrase is final. */
const MAX_PASSPHRASE_TRIES = 3;

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
  /** Key files found damaged (cut short, a character changed), with what is wrong: no passphrase was tried on them. */
  #damaged = new Map<string, string>();
  /** An unencrypted repository was found to hold no key files and no encrypted backups. */
  #plaintextChecked = false;

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
    // The command line says where it takes a passphrase from before it gets here; a program does not.
    if (!source) throw new StrataError('PASSPHRASE_MISSING', 'repository: it is encrypted; open it with its passphrase: openRepository(path, { passphrase: new Passphrase(...) })');
    for (let attempt = 1; ; attempt++) {
      const passphrase = attempt > MAX_PASSPHRASE_TRIES ? undefined : typeof source === 'function' ? await source(attempt) : attempt === 1 ? source : undefined;
      if (!passphrase) throw this.#wrong(attempt);
      const keyring = await this.open(this.#section, passphrase);
      if (keyring) {
        this.#keyring = keyring;
        return keyring;
      }
      // No key file was readable: the passphrase was not found wrong, and asking again cannot help.
      const { damaged, readable } = this.#condition();
      if (damaged.length > 0 && readable === 0) throw this.#damagedError(damaged);
    }
  }

  /** The listed key files found damaged, and how many were read whole. */
  #condition(): { damaged: KeyFileInfo[]; readable: number } {
    const files = this.#section.keyFiles ?? [];
    const damaged = files.filter((f) => this.#damaged.has(f.id));
    return { damaged, readable: files.filter((f) => !this.#damaged.has(f.id) && !this.#missing.has(f.id)).length };
  }

  /** Names the damaged key files (and missing ones), and how to get a working one back. */
  #damagedError(damaged: readonly KeyFileInfo[]): StrataError {
    const label = (f: KeyFileInfo): string => (f.label ? ` (${JSON.stringify(f.label)})` : '');
    const named =
      damaged.length === 1
        ? `key file ${KEYS_PREFIX}${damaged[0]!.id}.asc${label(damaged[0]!)} is damaged (${this.#damaged.get(damaged[0]!.id)})`
        : `key files ${damaged.map((f) => `${KEYS_PREFIX}${f.id}.asc${label(f)} (${this.#damaged.get(f.id)})`).join(', ')} are damaged`;
    const missing = (this.#section.keyFiles ?? []).filter((f) => this.#missing.has(f.id)).map((f) => `${KEYS_PREFIX}${f.id}.asc`);
    return new StrataError(
      'ARTIFACT_CORRUPT',
      `repository: ${named}${missing.length > 0 ? ` and ${missing.join(', ')} missing` : ''}, so no passphrase could be tried: this says nothing against yours. ` +
        'Put back a copy of the key file (from the mirror, another copy of the repository, or an export that holds it), or open the repository with the passphrase of an intact key file and `strata key add` a new one for this passphrase (then `strata key remove` the damaged one)',
      { details: { damaged: damaged.map((f) => f.id) } },
    );
  }

  /**
   * repository.json alone says whether new artifacts are encrypted, and nothing authenticates it:
   * an edited, damaged or wrong copy saying `none` would have every later backup written in
   * plaintext, with the passphrase given quietly unused. A repository that holds key files or
   * encrypted backups was encrypted, so such a repository.json is refused, once per process
   * (one listing of keys/ and one catalog read, for unencrypted repositories only), before a
   * backup, a segment or a log file is written. `wal-push` is a process per log file, so an
   * unencrypted repository pays those requests (the listing of keys/, and the catalog's listing
   * and read) for each, and again for a mirror: little beside a 16 MiB upload, and the WAL is the
   * data a plaintext archive would expose. The caller reads the profile after this check.
   */
  async refuseUnencryptedOverKeys(): Promise<void> {
    if (this.#section.profile !== 'none') return;
    if (this.#plaintextChecked) return;
    let keyFiles = 0;
    for await (const object of this.#storage.list(KEYS_PREFIX)) if (object.key.endsWith('.asc')) keyFiles++;
    const encrypted = keyFiles > 0 ? [] : ((await readCatalog(this.#storage).catch(() => undefined)) ?? []).filter((b) => b.encryption.profile !== 'none');
    if (keyFiles > 0 || encrypted.length > 0) {
      // A process that runs for days (wal-daemon, wal-receive, replicate) reads repository.json
      // again, so that one put back, as the message asks, is taken without a restart.
      await this.#refresh();
      if (this.#section.profile !== 'none') {
        await this.unlock();
        return;
      }
      throw new StrataError(
        'ARTIFACT_CORRUPT',
        `repository: repository.json in ${this.#storage.location} says the repository is not encrypted, but it holds ${keyFiles > 0 ? `${keyFiles} key file(s)` : `${encrypted.length} encrypted backup(s)`}: it was replaced or edited, and new backups would be written unencrypted. Put back its copy (it holds no secret); nothing was written`,
      );
    }
    this.#plaintextChecked = true;
  }

  #wrong(attempt: number): StrataError {
    const files = this.#section.keyFiles;
    const tries = attempt > 2 ? ` (${attempt - 1} tries)` : '';
    const missing = [...this.#missing].filter((id) => files?.some((f) => f.id === id));
    const { damaged, readable } = this.#condition();
    const which = !files ? '' : damaged.length > 0 ? `: it opens none of the ${readable} readable key file(s) of the repository's ${files.length}` : `: it opens none of the repository's ${files.length} key file(s)`;
    const lost = missing.length > 0 ? `; key file(s) ${missing.join(', ')} are missing from ${KEYS_PREFIX} (put back a copy if your passphrase opened one)` : '';
    const broken =
      damaged.length > 0
        ? `; key file(s) ${damaged.map((f) => `${KEYS_PREFIX}${f.id}.asc (${this.#damaged.get(f.id)})`).join(', ')} are damaged, so your passphrase could not be tried on them (if it opened one, put back a copy of it: from the mirror, another copy of the repository, or an export that holds it)`
        : '';
    return new StrataError('PASSPHRASE_WRONG', `repository: wrong passphrase${tries}${which}${lost}${broken}`);
  }

  /**
   * The keys `passphrase` opens under `section`: the first key file it decrypts (`prefer` first,
   * among the files decided without openpgp.js), or before key files the key check. Undefined when
   * it opens nothing. With `strataFilesOnly`, files only openpgp.js can decide are taken as not
   * opened: a key file Strata wrote is always decided without it for its own passphrase.
   */
  async open(section: EncryptionSection, passphrase: Passphrase, prefer?: string, options: { strataFilesOnly?: boolean } = {}): Promise<Keyring | undefined> {
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
    // Every file is tried without openpgp.js first, and openpgp.js (the largest module a command
    // can load) decides only the files that reader leaves undecided, if none opened: a wrong
    // passphrase leaves a Strata key file undecided about 1 time in 128, while the right one never does.
    const undecided: { info: KeyFileInfo; armored: string }[] = [];
    for (const info of files) {
      let armored: string;
      try {
        armored = await readKeyFile(this.#storage, info.id);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        this.#missing.add(info.id);
        continue;
      }
      // Checked before any passphrase: a damaged file would otherwise refuse every passphrase alike.
      const damage = await messageDamage(armored);
      if (damage !== undefined) {
        this.#damaged.set(info.id, damage);
        continue;
      }
      this.#damaged.delete(info.id);
      this.#missing.delete(info.id);
      const secrets = await openKeyFileTextHere(armored, passphrase, `key file ${info.id}`);
      if (secrets === 'undecided') undecided.push({ info, armored });
      else if (secrets) return new Keyring(markGeneratedKeys(section, secrets), info, passphrase);
    }
    for (const { info, armored } of options.strataFilesOnly ? [] : undecided) {
      const secrets = await openKeyFileText(armored, passphrase, `key file ${info.id}`);
      if (secrets) return new Keyring(markGeneratedKeys(section, secrets), info, passphrase);
    }
    return undefined;
  }

  /** Takes on a section another process wrote; the keyring follows (or is dropped if its key file is gone). */
  async #refresh(): Promise<void> {
    let fresh: EncryptionSection;
    try {
      fresh = (await readSection(this.#storage)).section;
    } catch (err) {
      // The repository gone since it was opened: nothing may be read or written there any more.
      if (isStrataError(err, 'REPO_NOT_FOUND')) throw err;
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
