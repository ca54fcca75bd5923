import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import type { BackupRecord, SegmentRecord } from './catalog.js';
import { commitBackup } from './catalog-commit.js';
import { decryptStream, encryptStream } from './encryption.js';
import type { EncryptionProfile, Passphrase } from './encryption.js';
import { StrataError, isStrataError, throwIfAborted, wrapError } from './errors.js';
import { carryCacheKey, readCarryFile, writeCarryCache } from './carry-cache.js';
import { factsCacheKey, readFactsCache, writeFactsCache } from './facts-cache.js';
import { layoutCacheKey, readLayoutCache, writeLayoutCache } from './layout-cache.js';
import { artifactKey, parseArtifactKey } from './naming.js';
import { announceWrite, pendingArtifactKeys } from './pending-writes.js';
import { firstSequenceOf, readCatalog, readCatalogContents, writeCatalog } from './catalog.js';
import { chainBreak, parseSegmentKey, segmentKey } from './segments.js';
import { LogArchive } from './log-archive.js';
import { logFilesFor } from './log-retention.js';
import { lockFor, withRepositoryLock } from './lock.js';
import type { PendingWrite } from './pending-writes.js';
import type { ProgressListener } from './progress.js';
import type { RepositoryContext } from './repository-context.js';
import type { Storage } from './storage.js';
import { isNotFound, isSameStorage } from './storage.js';

/** Options for {@link Repository.copyTo}. */
export interface CopyOptions {
  /** Only these databases (default: every database of the source). */
  readonly databases?: readonly string[];
  /** Only restore points taken at or after this time (their chains come along, however old). */
  readonly since?: Date;
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
  /** Called after each backup is committed on the target. */
  readonly onCopied?: (copied: CopiedBackup) => void | Promise<void>;
}

/** One backup copied: its record on the target, and how its bytes got there. */
export interface CopiedBackup {
  readonly record: BackupRecord;
  /**
   * `as-is`: the artifact's bytes unchanged (the target holds the data key it is encrypted under,
   * or neither side encrypts); `re-encrypted`: decrypted with the source's data key and encrypted
   * under the target's current data key.
   */
  readonly mode: 'as-is' | 're-encrypted';
}

/** What {@link Repository.copyTo} did. */
export interface CopyResult {
  readonly source: string;
  readonly target: string;
  /** Copied in this run, parents before their dependants. */
  readonly copied: readonly CopiedBackup[];
  /** Ids the target held already (from an earlier run, or another copy). */
  readonly present: readonly string[];
  /**
   * Segments copied in this run (ids, chain order): those of every copied or present base
   * restore point that the target lacked, so a restore there reaches the same moments.
   */
  readonly segments: readonly string[];
  /**
   * Log files (a server's archived write-ahead log) copied in this run: those the copied or
   * present base backups replay from their start on that the target lacked, so a recovery there
   * reaches the same moments.
   */
  readonly logFiles: number;
  /**
   * Ids another process was copying into the target at the same moment (and those building on
   * them): left to it, or to the next run.
   */
  readonly inProgress: readonly string[];
  /** Ids the source deleted (its retention, or a delete) while this copy ran: not copied, and not a failure. */
  readonly removed: readonly string[];
}

/** What a copy could not carry: a restore point, the new segments of one base, or one database's archived log. */
interface CopyFailure {
  readonly id: string;
  readonly kind: 'backup' | 'segments' | 'log';
  readonly error: StrataError;
}

/** "2 backup(s) and the archived log of 1 database(s) were", counting each kind by its own name. */
function describeFailures(failed: readonly CopyFailure[]): string {
  const count = (kind: CopyFailure['kind']): number => failed.filter((f) => f.kind === kind).length;
  const parts = [
    count('backup') > 0 ? `${count('backup')} backup(s)` : '',
    count('segments') > 0 ? `the new segments of ${count('segments')} base(s), from the first that could not be copied on,` : '',
    count('log') > 0 ? `the archived log of ${count('log')} database(s)` : '',
  ].filter(Boolean);
  return `${parts.join(' and ')} ${failed.length === 1 && failed[0]!.kind !== 'segments' ? 'was' : 'were'}`;
}

/**
 * Copies restore points from one repository to another, each with its whole chain, like `restic
 * copy`: by backup id, so a re-run copies only what the target lacks, and every record keeps its
 * id, parent, base, time, label, tags and manifest. Each artifact is read once, its SHA-256 and
 * size checked against the source's catalog and its OpenPGP integrity check run, while it is
 * written to the target; a copy is committed on the target exactly as a backup is (pending note,
 * artifact, catalog generation), so a kill leaves nothing half-visible and the next run finishes.
 *
 * When the target's key file holds the data key an artifact is encrypted under, its bytes are
 * copied as they are; otherwise they are decrypted with the source's data key and encrypted under
 * the target's current one, streaming (memory stays flat).
 */
export class BackupCopier {
  readonly #from: RepositoryContext;
  readonly #to: RepositoryContext;

  constructor(from: RepositoryContext, to: RepositoryContext) {
    this.#from = from;
    this.#to = to;
  }

  async copy(options: CopyOptions = {}): Promise<CopyResult> {
    const from = this.#from;
    const to = this.#to;
    if (from.storage.location === to.storage.location) {
      throw new StrataError('USAGE', `copy: the source and the target are the same repository (${from.storage.location})`);
    }
    // The same repository under two names (a link, a path or prefix written differently) has one
    // id; a copy made with cp or rsync has it too, so the storage itself is asked.
    if (from.config.id === to.config.id && (await isSameStorage(to.storage, from.storage))) {
      throw new StrataError(
        'USAGE',
        `copy: ${to.storage.location} is ${from.storage.location} itself, reached by another name (a link, or the same folder or bucket prefix written two ways): a copy there is no second copy. Give the mirror or target another disk or bucket`,
      );
    }
    if (options.since !== undefined && Number.isNaN(options.since.getTime())) throw new StrataError('USAGE', 'copy: the --since time is not a valid date');
    // Both sides' keys before anything is read or written: a wrong passphrase stops here.
    await inRepository('source', from, () => from.unlock());
    await inRepository('target', to, () => to.unlock());
    const all = await from.catalog.list();
    const wanted = options.databases && options.databases.length > 0 ? [...new Set(options.databases)] : undefined;
    const known = new Set(all.map((b) => b.database));
    for (const database of wanted ?? []) {
      if (!known.has(database)) {
        throw new StrataError('BACKUP_NOT_FOUND', `copy: ${from.storage.location} holds no backups of ${database} (it has: ${[...known].sort().join(', ') || 'none'})`);
      }
    }
    const since = options.since?.toISOString();
    const picked = all.filter((b) => (wanted === undefined || wanted.includes(b.database)) && (since === undefined || b.createdAt >= since));
    // Each picked restore point with its chain, parents first, each once.
    const ordered: BackupRecord[] = [];
    const seen = new Set<string>();
    for (const record of picked) {
      for (const link of await from.catalog.chainOf(record)) {
        if (seen.has(link.id)) continue;
        seen.add(link.id);
        ordered.push(link);
      }
    }
    const targetProfile = to.vault.section.profile;
    if (targetProfile === 'none') {
      const encrypted = ordered.find((b) => b.encryption.profile !== 'none');
      if (encrypted) {
        throw new StrataError(
          'USAGE',
          `copy: ${to.storage.location} is not encrypted and the backups of ${from.storage.location} are (${encrypted.id}); copying would store them in plaintext. Copy into an encrypted repository (strata init without --no-encryption)`,
        );
      }
    }
    const op = await to.journal.begin('copy', { details: { from: from.storage.location } });
    const copied: CopiedBackup[] = [];
    const present: string[] = [];
    const failed: CopyFailure[] = [];
    /** Backups deleted from the source (by a prune or delete there) after this copy listed them. */
    const removed = new Set<string>();
    const stillListed = async (id: string): Promise<boolean> => ((await readCatalogContents(from.storage))?.backups ?? []).some((b) => b.id === id);
    const busy = new Set<string>();
    const copiedSegments: string[] = [];
    let logFiles = 0;
    try {
      // The target's current data key: KEY_MISSING now, not after the first artifact was read.
      const targetKey = targetProfile === 'none' ? undefined : inRepositorySync('target', to, () => to.vault.current('copy'));
      const onTarget = new Map((await to.catalog.list()).map((b) => [b.id, b]));
      for (const record of ordered) {
        throwIfAborted(options.signal, 'copy');
        if (onTarget.has(record.id)) {
          present.push(record.id);
          continue;
        }
        const parent = record.parent === null ? undefined : onTarget.get(record.parent);
        if (record.parent !== null && busy.has(record.parent)) {
          busy.add(record.id);
          continue;
        }
        if (record.parent !== null && !parent && removed.has(record.parent) && !(await stillListed(record.id))) {
          removed.add(record.id);
          continue;
        }
        if (record.parent !== null && !parent) {
          // Its parent failed above (or vanished from the source's chain): it cannot be restored
          // on the target without it, so it is not copied either.
          failed.push({ id: record.id, kind: 'backup', error: new StrataError('CHAIN_BROKEN', `copy ${record.id}: its parent ${record.parent} was not copied`) });
          continue;
        }
        try {
          const result = await this.#copyOne(record, parent, targetKey, targetProfile, options);
          if (result === 'present' || result === 'busy') {
            // Another process copied it meanwhile, or is copying it now: its dependants wait
            // for the next run in the second case (they need it committed first).
            if (result === 'present') {
              present.push(record.id);
              onTarget.set(record.id, (await to.catalog.list({ database: record.database })).find((b) => b.id === record.id)!);
            } else busy.add(record.id);
            continue;
          }
          onTarget.set(record.id, result.record);
          copied.push(result);
          await options.onCopied?.(result);
        } catch (err) {
          // A damaged or unreadable source artifact costs its own chain, not every other backup.
          if (!isStrataError(err) || !SKIPPABLE.has(err.code)) throw err;
          // Gone because the source's retention deleted it meanwhile: nothing is lost, nothing failed.
          if (err.details?.['missing'] === record.id && !(await stillListed(record.id))) {
            removed.add(record.id);
            continue;
          }
          failed.push({ id: record.id, kind: 'backup', error: err });
        }
      }
      // Segments follow their bases: a base whose copy failed takes its segments with it.
      const segments = await this.#copySegments(new Set(ordered.map((b) => b.id)), onTarget, targetKey, targetProfile, options, failed);
      copiedSegments.push(...segments);
      logFiles = await this.#copyLogs(ordered.filter((b) => onTarget.has(b.id)), options, failed);
      if (failed.length > 0) {
        const first = failed.find((f) => f.error.code !== 'CHAIN_BROKEN') ?? failed[0]!;
        throw new StrataError(
          first.error.code,
          `copy: ${describeFailures(failed)} not copied (${copied.length} backup(s) were): ${failed.map((f) => f.error.message).join('; ')}`,
          { cause: first.error, details: { failed: failed.map((f) => f.id) } },
        );
      }
      await op.complete({
        storedBytes: copied.reduce((sum, c) => sum + c.record.storedBytes, 0),
        details: { from: from.storage.location, copied: copied.map((c) => c.record.id), segments: copiedSegments.length, logFiles, present: present.length, inProgress: [...busy], removed: [...removed], reencrypted: copied.filter((c) => c.mode === 're-encrypted').length },
      });
    } catch (err) {
      const wrapped = isStrataError(err) ? err : wrapError('copy', err);
      await op.fail(wrapped).catch(() => undefined);
      throw new StrataError(wrapped.code, wrapped.message, { cause: wrapped.cause, details: { ...wrapped.details, copied: copied.map((c) => c.record.id) } });
    }
    return { source: from.storage.location, target: to.storage.location, copied, present, inProgress: [...busy], removed: [...removed], segments: copiedSegments, logFiles };
  }

  /**
   * Copies the segments of the bases in `bases` that the target lists and lacks segments of, one
   * base's at a time: the artifacts (checked like a backup's, as they are or re-encrypted), then
   * one catalog generation listing them, which must leave the base's chain on the target unbroken.
   * A failure costs that base's new segments, not the others'; it is added to `failed`.
   */
  async #copySegments(
    bases: ReadonlySet<string>,
    onTarget: ReadonlyMap<string, BackupRecord>,
    targetKey: { id: string | undefined; secret: Passphrase } | undefined,
    targetProfile: EncryptionProfile,
    options: CopyOptions,
    failed: CopyFailure[],
  ): Promise<string[]> {
    const from = this.#from;
    const to = this.#to;
    const source = (await readCatalogContents(from.storage))?.segments ?? [];
    const targetSegments = (await readCatalogContents(to.storage))?.segments ?? [];
    const already = new Set(targetSegments.map((s) => s.id));
    // Sequences the target holds per base. The source may have merged segments the target holds
    // unmerged (compaction after an earlier copy): a merged one whose parts are all there is not
    // needed; one that covers parts the target lacks replaces the parts it has (below).
    const held = new Map<string, Set<number>>();
    for (const t of targetSegments) {
      const seqs = held.get(t.base) ?? new Set<number>();
      for (let q = firstSequenceOf(t); q <= t.sequence; q++) seqs.add(q);
      held.set(t.base, seqs);
    }
    const covered = (s: SegmentRecord): boolean => {
      const seqs = held.get(s.base);
      if (!seqs) return false;
      for (let q = firstSequenceOf(s); q <= s.sequence; q++) if (!seqs.has(q)) return false;
      return true;
    };
    const byBase = new Map<string, SegmentRecord[]>();
    for (const segment of source) {
      if (!bases.has(segment.base) || !onTarget.has(segment.base) || already.has(segment.id) || covered(segment)) continue;
      byBase.set(segment.base, [...(byBase.get(segment.base) ?? []), segment]);
    }
    const copied: string[] = [];
    for (const [baseId, wanted] of byBase) {
      throwIfAborted(options.signal, 'copy');
      const base = onTarget.get(baseId)!;
      const step = `copy the segments after ${baseId}`;
      const plan = wanted.map((segment) => {
        const parsed = parseSegmentKey(segment.key);
        if (!parsed) throw new StrataError('ARTIFACT_FOREIGN', `${step}: ${segment.key} is not a segment name Strata writes`);
        const sourceKey = from.vault.keyFor(segment, `copy ${segment.id}`);
        const keyId = from.vault.keyIdOf(segment);
        const held = keyId !== undefined ? to.vault.keyring?.get(keyId) : undefined;
        const asIs = sourceKey === undefined ? targetProfile === 'none' : held !== undefined && held.reveal() === sourceKey.reveal() && keepsProfile(segment.encryption.profile, targetProfile);
        const encryptedOut = asIs ? parsed.encrypted : targetProfile !== 'none';
        return { segment, sourceKey, asIs, key: segmentKey(segment.database, segment.id, parsed.codec === 'zstd' ? '.zst' : parsed.codec === 'gzip' ? '.gz' : '', encryptedOut) };
      });
      const claim = await withRepositoryLock(
        to.storage,
        'copy',
        async () => {
          const pendingKeys = await pendingArtifactKeys(to.storage);
          if (plan.some((p) => pendingKeys.has(p.key))) return 'busy' as const;
          return announceWrite(to.storage, `segments-${baseId}`, plan.map((p) => p.key), []);
        },
        lockFor(to.options.lock, options.signal),
      );
      // Another copy into the target is writing them now: left to it, or to the next run.
      if (claim === 'busy') continue;
      let pending: PendingWrite | undefined = claim;
      let superseded: SegmentRecord[] = [];
      try {
        const records: SegmentRecord[] = [];
        // The first segment that cannot be copied (damaged at the source): those before it still
        // extend the target's chain, so they are committed and the rest waits for a repair.
        let stoppedBy: StrataError | undefined;
        for (const { segment, sourceKey, asIs, key } of plan) {
          throwIfAborted(options.signal, 'copy');
          const what = `copy ${segment.id}`;
          try {
            const check: { bytes: number; sha: ReturnType<typeof createHash>; failure?: StrataError } = { bytes: 0, sha: createHash('sha256') };
            const bytes = checked(await readSource(from.storage, segment, what, options.signal), segment, check, what, (done) =>
              options.onProgress?.({ operation: 'copy', phase: 'read', doneBytes: done, totalBytes: segment.storedBytes, backupId: segment.id }),
            );
            const written = createHash('sha256');
            let info;
            try {
              info = await to.storage.put(key, hashing(transfer(bytes, sourceKey, asIs, targetKey, targetProfile), written), { ...(options.signal ? { signal: options.signal } : {}), sizeHint: segment.storedBytes });
            } catch (err) {
              throw check.failure ?? (isStrataError(err) ? err : wrapError(`${what}: write ${key} to ${to.storage.location}`, err));
            }
            if (check.failure) throw check.failure;
            const encryption = asIs ? segment.encryption : targetProfile === 'none' ? { profile: 'none' } : { profile: targetProfile, ...(targetKey!.id !== undefined ? { keyId: targetKey!.id } : {}) };
            // The whole record, as the source lists it: only where its bytes are and how they are sealed differ.
            records.push({ ...segment, key, storedBytes: info.size, sha256: written.digest('hex'), encryption });
          } catch (err) {
            if (records.length === 0 || !isStrataError(err) || !SKIPPABLE.has(err.code)) throw err;
            // Its bytes may have reached the target before the check failed: never listed, they go.
            await to.storage.delete(key).catch(() => undefined);
            stoppedBy = err;
            break;
          }
        }
        await withRepositoryLock(
          to.storage,
          'copy',
          async () => {
            const current = await readCatalogContents(to.storage);
            if (!current?.backups.some((b) => b.id === baseId)) throw new StrataError('CHAIN_BROKEN', `${step}: the base was removed from ${to.storage.location} while they were copied`);
            const listed = new Set(current.segments.map((s) => s.id));
            const fresh = records.filter((r) => !listed.has(r.id));
            // A merged segment replaces the target's segments whose sequences it covers, as it
            // replaced them on the source.
            const within = (t: SegmentRecord): boolean => t.base === baseId && fresh.some((f) => firstSequenceOf(f) <= firstSequenceOf(t) && t.sequence <= f.sequence && f.id !== t.id);
            superseded = current.segments.filter(within);
            const kept = current.segments.filter((t) => !within(t));
            const chain = [...kept.filter((t) => t.base === baseId), ...fresh].sort((a, b) => a.sequence - b.sequence);
            const broken = chainBreak(base, chain);
            if (broken) throw new StrataError('CHAIN_BROKEN', `${step}: on ${to.storage.location} they would not form one chain (${broken}); nothing of them was copied`);
            await writeCatalog(to.storage, current.backups, [...kept, ...fresh]);
          },
          to.options.lock,
        );
        pending = undefined;
        await claim.committed().catch(() => undefined);
        // No catalog lists them any more: their objects go (best effort; an open removes strays).
        for (const gone of superseded) await to.storage.delete(gone.key).catch(() => undefined);
        copied.push(...records.map((r) => r.id));
        if (stoppedBy) failed.push({ id: baseId, kind: 'segments', error: stoppedBy });
      } catch (err) {
        // As for a backup: an error does not prove the catalog was not written; it decides.
        const listed = await readCatalogContents(to.storage).then(
          (c) => new Set(c?.segments.map((s) => s.key) ?? []),
          () => undefined,
        );
        if (listed && plan.every((p) => listed.has(p.key))) {
          await pending?.committed().catch(() => undefined);
          copied.push(...plan.map((p) => p.segment.id));
          continue;
        }
        if (listed) await pending?.abandon(listed).catch(() => undefined);
        if (!isStrataError(err) || !(SKIPPABLE.has(err.code) || err.code === 'CHAIN_BROKEN')) throw err;
        failed.push({ id: baseId, kind: 'segments', error: err });
      }
    }
    return copied;
  }

  /**
   * Copies the log archive the base backups in `bases` (on the target now) replay: per database,
   * every file from the oldest one's start on that the target lacks, plus the files the engine
   * gives no position (timeline histories). Without them a copied base backup of a server could
   * not even become consistent. Each file is read back against its SHA-256 and pushed through the
   * target's own log archive (under its current data key), so a different file under an archived
   * name is refused there as it is for a server's push. Files are not in the catalog and each one
   * stands alone, so a copy killed halfway leaves only files the next run would copy anyway. A
   * failure costs that database's remaining files and is added to `failed`; the others go on.
   */
  async #copyLogs(bases: readonly BackupRecord[], options: CopyOptions, failed: CopyFailure[]): Promise<number> {
    const sourceLog = new LogArchive(this.#from);
    const targetLog = new LogArchive(this.#to);
    let copied = 0;
    for (const database of [...new Set(bases.map((b) => b.database))]) {
      const mine = bases.filter((b) => b.database === database && b.logRange !== undefined);
      const rules = mine.length > 0 ? this.#from.options.engines.get(mine[0]!.engine)?.logArchive : undefined;
      if (!rules) continue;
      const signal = options.signal ? { signal: options.signal } : {};
      const present = new Set((await targetLog.list(database, signal)).map((f) => `${f.name}/${f.sha256}`));
      const wanted = logFilesFor(mine, rules, await sourceLog.list(database, signal)).filter((f) => !present.has(`${f.name}/${f.sha256}`));
      try {
        for (const file of wanted) {
          throwIfAborted(options.signal, 'copy');
          const bytes = await sourceLog.read(file, signal);
          if (file.partial) await targetLog.pushPartial(database, file.name, bytes, file.partial.receivedBytes, signal);
          else {
            await targetLog.push(database, file.name, bytes, signal);
            await targetLog.dropPartials(database, file.name, signal);
          }
          copied += 1;
        }
      } catch (err) {
        if (!isStrataError(err) || !(SKIPPABLE.has(err.code) || err.code === 'LOG_CONFLICT')) throw err;
        failed.push({ id: `${database} log`, kind: 'log', error: new StrataError(err.code, `copy the archived log of ${database}: ${err.message}`, { cause: err }) });
      }
    }
    return copied;
  }

  /** Copies one artifact (and its cached layouts and facts) and commits it on the target. */
  async #copyOne(
    record: BackupRecord,
    parent: BackupRecord | undefined,
    targetKey: { id: string | undefined; secret: Passphrase } | undefined,
    targetProfile: EncryptionProfile,
    options: CopyOptions,
  ): Promise<CopiedBackup | 'present' | 'busy'> {
    const from = this.#from;
    const to = this.#to;
    const parsed = parseArtifactKey(record.key);
    if (!parsed) throw new StrataError('ARTIFACT_FOREIGN', `copy ${record.id}: ${record.key} is not an artifact name Strata writes`);
    const sourceKey = from.keyFor(record, `copy ${record.id}`);
    // The bytes can stay as they are when the target's key file holds the very data key they are
    // encrypted under (same id and same secret), or when neither side encrypts.
    const keyId = from.vault.keyIdOf(record);
    const held = keyId !== undefined ? to.vault.keyring?.get(keyId) : undefined;
    const asIs = sourceKey === undefined ? targetProfile === 'none' : held !== undefined && held.reveal() === sourceKey.reveal() && keepsProfile(record.encryption.profile, targetProfile);
    const encryptedOut = asIs ? parsed.encrypted : targetProfile !== 'none';
    const key = artifactKey(record.database, record.id, parsed.codec === 'zstd' ? '.zst' : parsed.codec === 'gzip' ? '.gz' : '', encryptedOut);
    const layoutKey = layoutCacheKey(record.database, record.id, encryptedOut);
    const factsKey = factsCacheKey(record.database, record.id, encryptedOut);
    const step = `copy ${record.id}`;
    // Checked and announced under the target's lock: two copies into one target at once (two
    // backups syncing one mirror) must not write the same artifact key, or one would commit a
    // record whose bytes the other replaced. The second one leaves it to the first.
    const claim = await withRepositoryLock(
      to.storage,
      'copy',
      async () => {
        if (((await readCatalog(to.storage)) ?? []).some((r) => r.id === record.id)) return 'present' as const;
        if ((await pendingArtifactKeys(to.storage)).has(key)) return 'busy' as const;
        return announceWrite(to.storage, record.id, [key], [layoutKey, factsKey, carryCacheKey(record.database, record.id, encryptedOut)]);
      },
      lockFor(to.options.lock, options.signal),
    );
    if (claim === 'present' || claim === 'busy') return claim;
    let pending: PendingWrite | undefined = claim;
    try {
      const check: { bytes: number; sha: ReturnType<typeof createHash>; failure?: StrataError } = { bytes: 0, sha: createHash('sha256') };
      const source = checked(await readSource(from.storage, record, step, options.signal), record, check, step, (done) =>
        options.onProgress?.({ operation: 'copy', phase: 'read', doneBytes: done, totalBytes: record.storedBytes, backupId: record.id }),
      );
      const body = transfer(source, sourceKey, asIs, targetKey, targetProfile);
      const written = createHash('sha256');
      let info;
      try {
        // Re-encrypted under the target's key, it is about the source's size.
        info = await to.storage.put(key, hashing(body, written), { ...(options.signal ? { signal: options.signal } : {}), sizeHint: record.storedBytes });
      } catch (err) {
        // A failed check inside the stream reaches put wrapped by openpgp or the storage: the
        // check's own error is the one that says what happened.
        throw check.failure ?? (isStrataError(err) ? err : wrapError(`${step}: write ${key} to ${to.storage.location}`, err));
      }
      if (check.failure) throw check.failure;
      const encryption = asIs ? record.encryption : targetProfile === 'none' ? { profile: 'none' } : { profile: targetProfile, ...(targetKey!.id !== undefined ? { keyId: targetKey!.id } : {}) };
      const copy: BackupRecord = {
        ...record,
        key,
        storedBytes: info.size,
        sha256: written.digest('hex'),
        encryption,
        // Nothing was verified on the target yet: its own `verify` says how its copy is.
        verification: null,
      };
      await this.#copyCaches(record, copy, sourceKey, asIs ? sourceKey : targetKey?.secret, asIs);
      const announced = pending;
      pending = undefined;
      await commitBackup(to, { parent, record: copy, pending: announced });
      options.onProgress?.({ operation: 'copy', phase: 'commit', doneBytes: record.storedBytes, totalBytes: record.storedBytes, backupId: record.id });
      return { record: copy, mode: asIs ? 'as-is' : 're-encrypted' };
    } catch (err) {
      await pending?.abandon().catch(() => undefined);
      throw isStrataError(err) ? err : wrapError(step, err);
    }
  }

  /**
   * The cached layouts, facts and what the backup carries forward go along, so the target's next
   * restore or incremental need not decrypt whole chains. Best effort, as at backup time: without
   * them the artifact is read instead.
   */
  async #copyCaches(record: BackupRecord, copy: BackupRecord, sourceKey: Passphrase | undefined, targetSecret: Passphrase | undefined, asIs: boolean): Promise<void> {
    const from = this.#from;
    const to = this.#to;
    const sourceEncrypted = record.encryption.profile !== 'none';
    const targetEncrypted = copy.encryption.profile !== 'none';
    const encryption = { profile: copy.encryption.profile as EncryptionProfile, passphrase: targetSecret };
    if (record.layoutsSha256) {
      const source = layoutCacheKey(record.database, record.id, sourceEncrypted);
      const target = layoutCacheKey(copy.database, copy.id, targetEncrypted);
      if (asIs) await copyObject(from.storage, source, to.storage, target).catch(() => undefined);
      else {
        const layouts = await readLayoutCache(from.storage, source, record.layoutsSha256, sourceKey);
        if (layouts) await writeLayoutCache(to.storage, target, layouts, encryption).catch(() => undefined);
      }
    }
    if (record.factsSha256) {
      const source = factsCacheKey(record.database, record.id, sourceEncrypted);
      const target = factsCacheKey(copy.database, copy.id, targetEncrypted);
      if (asIs) await copyObject(from.storage, source, to.storage, target).catch(() => undefined);
      else {
        const facts = await readFactsCache(from.storage, source, record.factsSha256, sourceKey);
        if (facts) await writeFactsCache(to.storage, target, facts, encryption).catch(() => undefined);
      }
    }
    if (record.carrySha256) {
      const source = carryCacheKey(record.database, record.id, sourceEncrypted);
      const target = carryCacheKey(copy.database, copy.id, targetEncrypted);
      if (asIs) await copyObject(from.storage, source, to.storage, target).catch(() => undefined);
      else {
        const carried = await readCarryFile(from.storage, source, record.carrySha256, sourceKey);
        if (carried) await writeCarryCache(to.storage, target, carried, encryption).catch(() => undefined);
      }
    }
  }
}

/**
 * An artifact's bytes on their way to the target: as they are (their decryption proven on the
 * side), or decrypted with the source's data key and encrypted under the target's current one.
 */
function transfer(
  source: AsyncIterable<Uint8Array>,
  sourceKey: Passphrase | undefined,
  asIs: boolean,
  targetKey: { id: string | undefined; secret: Passphrase } | undefined,
  targetProfile: EncryptionProfile,
): AsyncIterable<Uint8Array> {
  if (asIs) return sourceKey ? withDecryptCheck(source, sourceKey) : source;
  const plain = sourceKey ? decryptStream(source, sourceKey) : source;
  return encryptStream(plain, targetKey!.secret, targetProfile as Exclude<EncryptionProfile, 'none'>);
}

/** Failures of one source artifact: the copy goes on with the other backups, then reports them. */
const SKIPPABLE = new Set(['ARTIFACT_CORRUPT', 'ARTIFACT_FOREIGN', 'ARTIFACT_HOSTILE', 'PASSPHRASE_WRONG', 'KEY_MISSING']);

/** Errors of one side named as that side's: "copy: target /mnt/usb/backups: wrong passphrase ...". */
async function inRepository<T>(side: 'source' | 'target', ctx: RepositoryContext, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw wrapError(`copy: ${side} ${ctx.storage.location}`, err);
  }
}

function inRepositorySync<T>(side: 'source' | 'target', ctx: RepositoryContext, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw wrapError(`copy: ${side} ${ctx.storage.location}`, err);
  }
}

/** The source artifact's bytes; a missing one is named as such. */
async function readSource(storage: Storage, record: Pick<BackupRecord, 'id' | 'key'>, step: string, signal: AbortSignal | undefined): Promise<AsyncIterable<Uint8Array>> {
  try {
    return await storage.get(record.key, signal ? { signal } : {});
  } catch (err) {
    if (isNotFound(err)) throw new StrataError('ARTIFACT_CORRUPT', `${step}: its artifact ${record.key} is missing from ${storage.location}; it was not copied`, { details: { missing: record.id } });
    throw wrapError(`${step}: read ${record.key}`, err);
  }
}

/**
 * Passes the source's bytes through, checking them against the source's catalog: no more than
 * its recorded size while they flow, and the SHA-256 and size at the end, before the last byte is
 * handed on (so the target's put fails, and nothing of a damaged artifact becomes visible).
 */
async function* checked(
  source: AsyncIterable<Uint8Array>,
  record: Pick<BackupRecord, 'id' | 'key' | 'storedBytes' | 'sha256'>,
  state: { bytes: number; sha: ReturnType<typeof createHash>; failure?: StrataError },
  step: string,
  onBytes: (done: number) => void,
): AsyncGenerator<Uint8Array> {
  const damaged = (what: string): StrataError => {
    state.failure = new StrataError('ARTIFACT_CORRUPT', `${step}: the source's artifact ${record.key} ${what}; it is damaged and was not copied (restore it from another copy, or delete the backup)`, {
      details: { damaged: record.id },
    });
    return state.failure;
  };
  for await (const chunk of source) {
    state.bytes += chunk.byteLength;
    if (state.bytes > record.storedBytes) throw damaged(`is larger than the ${record.storedBytes} bytes its catalog records`);
    state.sha.update(chunk);
    onBytes(state.bytes);
    yield chunk;
  }
  if (state.bytes !== record.storedBytes) throw damaged(`has ${state.bytes} bytes, its catalog records ${record.storedBytes}`);
  if (state.sha.digest('hex') !== record.sha256) throw damaged('does not match the SHA-256 its catalog records');
}

/**
 * Passes encrypted bytes through unchanged while decrypting a copy of them on the side, and ends
 * only once the decryption reached the message's end and its integrity check passed: bytes copied
 * as they are are proven to open, like re-encrypted ones.
 */
async function* withDecryptCheck(source: AsyncIterable<Uint8Array>, passphrase: Passphrase): AsyncGenerator<Uint8Array> {
  const tee = new PassThrough();
  const decrypted = (async () => {
    for await (const _ of decryptStream(tee, passphrase)) void _;
  })();
  // Observed below; until then a rejection must not count as unhandled.
  decrypted.catch(() => undefined);
  try {
    for await (const chunk of source) {
      if (!tee.write(chunk)) {
        await Promise.race([new Promise((resolve) => tee.once('drain', resolve)), decrypted]);
      }
      yield chunk;
    }
    tee.end();
    await decrypted;
  } finally {
    tee.destroy();
  }
}

async function* hashing(source: AsyncIterable<Uint8Array>, sha: ReturnType<typeof createHash>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    sha.update(chunk);
    yield chunk;
  }
}

/** Copies a small object between storages when it exists. */
async function copyObject(from: Storage, fromKey: string, to: Storage, toKey: string): Promise<void> {
  const bytes = await from.read(fromKey);
  await to.put(toKey, bytes);
}

/**
 * Whether an artifact sealed under `profile` may go into a repository of `target` as it is: not a
 * modern (AEAD) one into a compat repository, whose promise is that gpg opens every artifact.
 */
function keepsProfile(profile: string, target: EncryptionProfile): boolean {
  return !(profile === 'modern' && target === 'compat');
}
