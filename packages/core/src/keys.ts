import { createHash } from 'node:crypto';
import type { BackupRecord } from './catalog.js';
import { readCatalog } from './catalog.js';
import { decryptSmall } from './encryption.js';
import type { EncryptionProfile, Passphrase } from './encryption.js';
import { StrataError } from './errors.js';
import type { Journal } from './journal.js';
import { KEYS_PREFIX, KEY_ID, MAX_KEY_FILE_BYTES, checkKeyLabel, describeKeyFile, hasKeyFiles, keyFileObject, newDataKey, newId, openKeyFileText, readKeyFile, readSection, unlistedKeyFiles, writeKeyFile } from './key-file.js';
import type { DataKeyInfo, EncryptionSection, KeyFileInfo } from './key-file.js';
import { Keyring } from './key-vault.js';
import type { KeyVault } from './key-vault.js';
import { withRepositoryLock } from './lock.js';
import type { LockOptions } from './lock.js';
import { writeRawConfig } from './repository-config.js';
import type { Storage } from './storage.js';

/**
 * `repo.keys`: the changes to a repository's passphrases and data keys (add, remove, passwd,
 * rotate, migrate), the keys of a new repository, and what an export's keys mean for an import.
 * The key file format is in key-file.ts, unlocking in key-vault.ts.
 */

export { KEYS_PREFIX, checkEncryptionSection, hasKeyFiles, keyFileObject } from './key-file.js';
export type { DataKeyInfo, EncryptionSection, KeyFileInfo } from './key-file.js';
export { KeyVault, Keyring } from './key-vault.js';
export type { PassphraseSource } from './key-vault.js';

/**
 * The encryption section of a new repository: a data key and a key file holding it, sealed with
 * the passphrase. The key file is written here, before the caller writes repository.json.
 */
export async function createKeys(storage: Storage, options: { profile: Exclude<EncryptionProfile, 'none'>; passphrase: Passphrase; repositoryId: string; label?: string }): Promise<{ section: EncryptionSection; keyFile: KeyFileInfo }> {
  const createdAt = new Date().toISOString();
  const dataKeyId = newId([]);
  const keyFile: KeyFileInfo = { id: newId([]), label: checkKeyLabel(options.label, 'init'), createdAt, dataKeys: [dataKeyId] };
  checkNewPassphrase(options.passphrase, 'init');
  await writeKeyFile(storage, options.repositoryId, keyFile, new Map([[dataKeyId, newDataKey()]]), options.passphrase, undefined);
  return { section: { profile: options.profile, currentKey: dataKeyId, dataKeys: [{ id: dataKeyId, createdAt, origin: 'init' }], keyFiles: [keyFile] }, keyFile };
}

/**
 * A passphrase that will seal a key file must survive the documented recovery by hand: `gpg
 * --passphrase-file` reads only the first line of its file, so a passphrase with a line break in
 * it (a file ending in two newlines, say: one is taken off, the other stays) would open the key
 * file for Strata and never for gpg.
 */
function checkNewPassphrase(passphrase: Passphrase, step: string): void {
  if (/[\r\n]/.test(passphrase.reveal())) {
    throw new StrataError('USAGE', `${step}: the new passphrase contains a line break (a passphrase file with an empty line at its end?), which gpg --passphrase-file would not read, so a recovery by hand could not open the key file; give one without, nothing was changed`);
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
  readonly dataKeys: readonly (DataKeyInfo & { readonly current: boolean; readonly legacy: boolean; readonly backups: number; readonly segments: number; readonly logFiles: number; readonly heldBy: readonly string[] })[];
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
  /** The data key of every other sealed thing a restore needs: the catalog's segments and the archived log files. */
  otherArtifacts(): Promise<readonly { readonly kind: 'segments' | 'logFiles'; readonly keyId: string | undefined }[]>;
}

/** What needs one data key: a key file that is the only holder of a key in use must not go. */
export interface KeyUse {
  backups: number;
  segments: number;
  logFiles: number;
}

/** What needs each data key (keys nothing uses are absent). */
function usesPerKey(backups: readonly BackupRecord[], others: Awaited<ReturnType<KeyHost['otherArtifacts']>>, vault: KeyVault): Map<string, KeyUse> {
  const uses = new Map<string, KeyUse>();
  const count = (id: string | undefined, kind: keyof KeyUse): void => {
    if (id === undefined) return;
    const use = uses.get(id) ?? { backups: 0, segments: 0, logFiles: 0 };
    use[kind]++;
    uses.set(id, use);
  };
  for (const b of backups) count(vault.keyIdOf(b), 'backups');
  for (const o of others) count(o.keyId, o.kind);
  return uses;
}

/** "3 backup(s), 120 segment(s)"; empty when nothing needs it. */
export function describeKeyUse(use: KeyUse | undefined): string {
  if (!use) return '';
  const parts = [[use.backups, 'backup(s)'], [use.segments, 'segment(s) of continuous protection'], [use.logFiles, 'archived log file(s)']] as const;
  return parts.filter(([n]) => n > 0).map(([n, what]) => `${n} ${what}`).join(', ');
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
    const uses = usesPerKey(await this.#host.backups(), await this.#host.otherArtifacts(), vault);
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
        backups: uses.get(k.id)?.backups ?? 0,
        segments: uses.get(k.id)?.segments ?? 0,
        logFiles: uses.get(k.id)?.logFiles ?? 0,
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
    checkNewPassphrase(options.passphrase, 'key add');
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
   *
   * The key file is deleted before repository.json stops listing it. A key file the journal says
   * was removed already (a retry) is returned with `alreadyRemoved`, the time of that removal.
   */
  async remove(id: string, options: { force?: boolean } = {}): Promise<KeyFileInfo & { readonly alreadyRemoved?: string }> {
    // Listed before the lock (a listing of every log folder must not hold up commits): what is
    // stored meanwhile is sealed under the current key, which a removal never strands.
    const others = await this.#host.otherArtifacts();
    return this.#change('remove', async (section, mine, backups, note) => {
      const files = section.keyFiles!;
      const target = files.find((f) => f.id === id);
      if (!target) {
        // A retry of a removal that went through (or was killed after its repository.json write)
        // has nothing left to do: said as such, not as an unknown id.
        const earlier = await this.#removedEarlier(id);
        if (earlier) return { result: earlier, details: { keyFile: id, alreadyRemoved: earlier.alreadyRemoved } };
        const isDataKey = section.dataKeys?.some((k) => k.id === id);
        throw new StrataError('USAGE', `key remove: no key file ${id}${isDataKey ? ` (${id} is a data key; key remove takes a key file id)` : ''}; \`strata key list\` shows them`);
      }
      if (files.length === 1) throw new StrataError('USAGE', `key remove: ${describeKeyFile(target)} is the only key file; without it no passphrase opens the repository. Add another first (\`strata key add\`)`);
      if (target.id === mine.keyFile!.id && !options.force) {
        throw new StrataError('USAGE', `key remove: ${describeKeyFile(target)} is the key file your passphrase opens; after removing it you need another passphrase. Pass --force if that is what you want (to change your passphrase, use \`strata key passwd\`)`);
      }
      const rest = files.filter((f) => f.id !== id);
      // Segments and archived log files are sealed like backups: a key only they need is as much in use.
      const needed = usesPerKey(backups, others, this.#host.vault);
      if (!needed.has(section.currentKey!)) needed.set(section.currentKey!, { backups: 0, segments: 0, logFiles: 0 });
      const stranded = [...needed].filter(([key]) => target.dataKeys.includes(key) && !rest.some((f) => f.dataKeys.includes(key)));
      if (stranded.length > 0) {
        const what = stranded.map(([key, use]) => {
          const users = describeKeyUse(use);
          return key === section.currentKey ? `${key} (the current data key${users ? `, needed by ${users}` : ''})` : `${key} (needed by ${users})`;
        });
        throw new StrataError(
          'USAGE',
          `key remove: ${describeKeyFile(target)} is the only key file holding data key(s) ${what.join(', ')}; without it they could not be ${stranded.some(([, use]) => describeKeyUse(use) !== '') ? 'restored' : 'used'}. ` +
            'First give them to another key file: `strata key add` with the passphrase of this key file makes a new key file holding all of its data keys',
          { details: { stranded: stranded.map(([key]) => key) } },
        );
      }
      // Journaled before anything changes, so a retry after a kill here knows it was removed.
      await note({ keyFile: target.id, label: target.label });
      // The key file goes first, then the record: a kill in between leaves repository.json listing
      // a file that is gone (every other passphrase still opens the repository, and a retry
      // finishes), never the revoked passphrase's file left in keys/ unlisted, where it would still
      // open every backup for whoever holds that passphrase and a copy of the repository.
      await this.#host.storage.delete(keyFileObject(target.id));
      await this.#commit({ ...section, keyFiles: rest }, target.id === mine.keyFile!.id ? undefined : mine);
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
    checkNewPassphrase(options.passphrase, 'key passwd');
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
  async forExport(records: readonly Pick<BackupRecord, 'encryption'>[]): Promise<(KeyFileInfo & { message: string })[]> {
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
    fn: (section: EncryptionSection, mine: Keyring, backups: readonly BackupRecord[], note: (details: Record<string, unknown>) => Promise<void>) => Promise<{ result: T; details: Record<string, unknown> }>,
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
        if (options.keyFiles) await this.#refuseUnlisted(what, section, mine, catalog);
        return fn(section, mine, catalog, (details) => op.note({ details: { action, ...details } }));
      }, !options.keyFiles);
      await op.complete({ details: { action, ...details } });
      return result;
    } catch (err) {
      await op.fail(err, { details: { action } }).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Refuses a change while the unlocking key file holds a data key that the repository's
   * artifacts need and repository.json does not list: every change writes key files from what
   * repository.json lists (Keyring.for), so the key would be left out, and with the old key file
   * deleted (passwd) or the only other holder removed, those artifacts could never be opened
   * again. It happens when an older copy of repository.json was put back (its damage message says
   * a copy will do: it holds no secret) after a rotate. A key only a killed rotate left, which
   * nothing uses, is dropped as before.
   */
  async #refuseUnlisted(what: string, section: EncryptionSection, mine: Keyring, backups: readonly BackupRecord[]): Promise<void> {
    const listed = new Set((section.dataKeys ?? []).map((k) => k.id));
    const unlisted = mine.ids().filter((id) => !listed.has(id));
    if (unlisted.length === 0) return;
    const uses = usesPerKey(backups, await this.#host.otherArtifacts(), this.#host.vault);
    const needed = unlisted.filter((id) => uses.has(id));
    if (needed.length === 0) return;
    throw new StrataError(
      'KEY_MISSING',
      `${what}: your key file holds data key(s) ${needed.map((id) => `${id} (needed by ${describeKeyUse(uses.get(id))})`).join(', ')} that repository.json does not list, so a change of keys would leave them out and those artifacts could never be opened again. ` +
        'repository.json is older than the key file (an older copy put back after a `key rotate`?): put back the newest copy, the one that lists them; nothing was changed',
      { details: { unlisted: needed } },
    );
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

  /**
   * A new passphrase must be new: one that already opens a key file would make two files for one
   * person. Asked of the files as Strata writes them, without openpgp.js: a new passphrase leaves
   * each file undecided 1 time in 128, and openpgp.js would be loaded only to say no.
   */
  async #refuseKnown(section: EncryptionSection, passphrase: Passphrase, mine: Keyring, what: string): Promise<void> {
    if (passphrase.reveal() === mine.passphrase.reveal()) throw new StrataError('USAGE', `${what}: the new passphrase is the one you unlocked with; choose another`);
    const opened = await this.#host.vault.open(section, passphrase, undefined, { strataFilesOnly: true });
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
    for (const key of await unlistedKeyFiles(this.#host.storage, section)) await this.#host.storage.delete(key);
  }

  /** The key file `id` as a completed or killed `key remove` journaled it, if one did. */
  async #removedEarlier(id: string): Promise<(KeyFileInfo & { alreadyRemoved: string }) | undefined> {
    const records = await this.#host.journal.records();
    const removal = records.filter((r) => r.kind === 'key' && r.details?.['action'] === 'remove' && r.details['keyFile'] === id).at(-1);
    if (!removal) return undefined;
    const label = removal.details?.['label'];
    return { id, label: typeof label === 'string' ? label : null, createdAt: removal.at, dataKeys: [], alreadyRemoved: removal.at };
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
export async function planImportKeys(vault: KeyVault, theirs: ExportedEncryption, records: readonly Pick<BackupRecord, 'id' | 'encryption'>[], file: string): Promise<ImportKeyPlan> {
  const ours = vault.section;
  const none: ImportKeyPlan = { keyId: undefined, add: new Map() };
  if (theirs.profile === 'none' && ours.profile !== 'none') {
    throw new StrataError('USAGE', 'import: the export is unencrypted and this repository is encrypted; import it into an unencrypted repository (artifacts are copied as they are)');
  }
  if (theirs.profile !== 'none' && ours.profile === 'none') {
    throw new StrataError('USAGE', 'import: the export is encrypted and this repository is not; import it into an encrypted repository with the same passphrase');
  }
  if (theirs.profile === 'modern' && ours.profile === 'compat') {
    // Imported as they are, they would be the repository's only artifacts gpg cannot open.
    throw new StrataError('USAGE', 'import: the export is encrypted with the modern profile (AEAD), which gpg cannot open, and this repository is compat (gpg opens every artifact in it); import it into a repository made with `strata init --encryption modern`, and `strata copy` from there re-encrypts into this one');
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
