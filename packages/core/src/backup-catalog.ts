import { readCatalog, recordFromManifest, sortBackups, writeCatalog } from './catalog.js';
import type { BackupRecord, SegmentRecord, VerificationRecord } from './catalog.js';
import { isSegmentKey, segmentRecordFromArtifact, withoutMergedParts } from './segments.js';
import type { Passphrase } from './encryption.js';
import { contentFault, describeContentFault } from './newest-good.js';
import { StrataError, isStrataError, redactedMessage } from './errors.js';
import { readArtifact } from './format/artifact-reader.js';
import { factsDigest } from './format/facts-delta.js';
import { layoutsDigest } from './layout-cache.js';
import { withRepositoryLock } from './lock.js';
import { parseArtifactKey } from './naming.js';
import { storedFacts } from './chain-reader.js';
import type { RepositoryContext } from './repository-context.js';
import { pendingArtifactKeys } from './pending-writes.js';

/**
 * Selects a backup: an id (or a unique prefix of one), `latest`, or the newest restore point with
 * data at or before `asOf`; optionally within one database.
 */
export interface Selector {
  readonly id?: string;
  readonly asOf?: Date;
  readonly database?: string;
  /**
   * `latest` means the newest restore point with rows: a newer schema-only backup is passed over
   * (it is chosen by its id, or when the database has nothing else). What a restore asks for: a
   * schema-only backup restored by `latest --force` would replace a database with empty tables.
   */
  readonly withRows?: boolean;
  /**
   * `latest` and `asOf` pass over a restore point whose chain holds a link whose last
   * verification found its restored data wrong (see {@link contentFault}), for the newest one
   * without; an id still names any backup. What a restore asks for: such a backup would bring the
   * data back wrong, and nothing in the restore would say so.
   */
  readonly trusted?: boolean;
}

/**
 * The catalog as the repository's services read it: every backup (rebuilt from the artifacts when
 * the catalog is missing), one backup found by a {@link Selector}, a backup's chain. Changes to the
 * catalog go through catalog-commit.ts.
 */
export class BackupCatalog {
  readonly #ctx: RepositoryContext;

  constructor(ctx: RepositoryContext) {
    this.#ctx = ctx;
  }

  /** Every backup, oldest first; rebuilds the catalog from the artifacts if it is missing. */
  async list(filter: { database?: string } = {}): Promise<BackupRecord[]> {
    // Records from before `strata key migrate` name no key; they are shown with the one they need.
    const all = (await this.#records()).map((b) => {
      const keyId = b.encryption.keyId === undefined ? this.#ctx.vault.keyIdOf(b) : undefined;
      return keyId === undefined ? b : { ...b, encryption: { ...b.encryption, keyId } };
    });
    return filter.database === undefined ? all : all.filter((b) => b.database === filter.database);
  }

  async #records(): Promise<BackupRecord[]> {
    const records = await readCatalog(this.#ctx.storage);
    if (records) return sortBackups(records);
    return withRepositoryLock(this.#ctx.storage, 'rebuild-catalog', async () => {
      // Another process may have rebuilt it while we waited for the lock.
      const again = await readCatalog(this.#ctx.storage);
      if (again) return sortBackups(again);
      return this.#rebuild();
    }, this.#ctx.options.lock);
  }

  /** The newest verification result of each backup, as the journal recorded it. */
  async #verificationsFromJournal(): Promise<Map<string, VerificationRecord>> {
    const out = new Map<string, VerificationRecord>();
    const records = await this.#ctx.journal.records().catch(() => []);
    for (const r of records) {
      if (r.kind !== 'verify' || r.status !== 'COMPLETED' || !r.backupId) continue;
      const v = (r.details as { verification?: VerificationRecord } | undefined)?.verification;
      if (v && typeof v.at === 'string' && (v.outcome === 'passed' || v.outcome === 'failed') && Array.isArray(v.checks)) out.set(r.backupId, v);
      else if (!v && (r.details as { outcome?: string } | undefined)?.outcome) {
        // Journals of older versions have the outcome without the checks.
        const d = r.details as { outcome: 'passed' | 'failed'; level?: 'quick' | 'full' };
        out.set(r.backupId, { at: r.at, level: d.level ?? 'quick', outcome: d.outcome, checks: [] });
      }
    }
    return out;
  }

  /** Reads every artifact's manifest and writes a fresh catalog. Needs the passphrase if encrypted. */
  async rebuild(options: { signal?: AbortSignal } = {}): Promise<BackupRecord[]> {
    return withRepositoryLock(this.#ctx.storage, 'rebuild-catalog', () => this.#rebuild(options.signal), this.#ctx.options.lock);
  }

  /** {@link rebuild} for a caller that holds the repository lock. */
  async rebuildHoldingLock(): Promise<BackupRecord[]> {
    return this.#rebuild();
  }

  async #rebuild(signal?: AbortSignal): Promise<BackupRecord[]> {
    const op = await this.#ctx.journal.begin('rebuild-catalog');
    try {
      const previous = (await readCatalog(this.#ctx.storage)) ?? [];
      // Verification results are not in the artifacts: take them from the old catalog if it is
      // readable, else from the journal, which records each verify's result.
      const verification = new Map<string, VerificationRecord | null>(await this.#verificationsFromJournal());
      for (const b of previous) if (b.verification) verification.set(b.id, b.verification);
      const records: BackupRecord[] = [];
      const skipped: string[] = [];
      const unopened: string[] = [];
      // An artifact names no key outside its encryption: each data key is tried, the current first.
      let candidates: { id: string | undefined; secret: Passphrase }[] | undefined;
      // Artifacts a pending note names never committed (or, without a catalog, nobody can tell
      // that they did): they are not backups (pending-writes.ts).
      const uncommitted = await pendingArtifactKeys(this.#ctx.storage);
      const segmentKeys: string[] = [];
      for await (const object of this.#ctx.storage.list('backups/', { signal })) {
        if (isSegmentKey(object.key)) {
          if (!uncommitted.has(object.key)) segmentKeys.push(object.key);
          continue;
        }
        const parsed = parseArtifactKey(object.key);
        if (!parsed || uncommitted.has(object.key)) continue;
        let failure: unknown;
        if (parsed.encrypted && !candidates) {
          await this.#ctx.unlock();
          candidates = this.#ctx.vault.candidates();
        }
        for (const key of parsed.encrypted ? candidates! : [undefined]) {
          try {
            const contents = await readArtifact({ storage: this.#ctx.storage, location: { key: object.key, codec: parsed.codec, encrypted: parsed.encrypted }, passphrase: key?.secret, signal });
            const record = recordFromManifest(contents.manifest, {
              key: object.key,
              rawBytes: contents.rawBytes,
              storedBytes: contents.storedBytes,
              sha256: contents.sha256,
              compression: { codec: parsed.codec, level: parsed.codec === this.#ctx.config.compression.codec ? this.#ctx.config.compression.level : 0 },
              encryption: { profile: parsed.encrypted ? this.#ctx.vault.section.profile : 'none', ...(key?.id !== undefined ? { keyId: key.id } : {}) },
            });
            // A delta's digest is that of the complete facts, which is what the cached copy holds.
            const factsSha256 = contents.manifest.factsDelta?.digest ?? factsDigest(storedFacts(contents.manifest));
            records.push({ ...record, layoutsSha256: layoutsDigest(contents.layouts), factsSha256, verification: verification.get(record.id) ?? null });
            failure = undefined;
            break;
          } catch (err) {
            if (isStrataError(err, 'ABORTED')) throw err;
            // A wrong key usually fails at once, but now and then only as garbage further on: any
            // failure sends the next key in.
            failure ??= err;
          }
        }
        if (failure === undefined) continue;
        if (parsed.encrypted && this.#ctx.vault.lacksSomeKey()) unopened.push(object.key);
        // The keys opened every key the repository has, so an artifact that does not read is
        // damaged (or foreign). It cannot be listed; the journal says so instead of failing the rebuild.
        else skipped.push(`${object.key}: ${redactedMessage(failure)}`);
      }
      if (unopened.length > 0) {
        // Written now, the catalog would drop backups that only other key files can open.
        throw new StrataError(
          'KEY_MISSING',
          `rebuild-catalog: ${unopened.length} artifact(s) (${unopened.slice(0, 3).join(', ')}${unopened.length > 3 ? ', ...' : ''}) open with none of the data keys your key file holds, and the repository has data keys it does not hold; rebuild with the passphrase of a key file that holds them all (\`strata key list\`)`,
        );
      }
      // Segments come back from their own manifests; those whose base is not among the backups
      // replay onto nothing and are left out (writeCatalog drops them).
      const segments: SegmentRecord[] = [];
      for (const key of segmentKeys) {
        if (!candidates && key.endsWith('.gpg')) {
          await this.#ctx.unlock();
          candidates = this.#ctx.vault.candidates();
        }
        try {
          segments.push(await segmentRecordFromArtifact(this.#ctx.storage, key, candidates, this.#ctx.vault.section.profile, signal));
        } catch (err) {
          if (isStrataError(err, 'ABORTED')) throw err;
          // As for backups above: one this key file cannot open may be whole, and left out of the
          // catalog it would be lost to every restore as of its moments.
          if (key.endsWith('.gpg') && this.#ctx.vault.lacksSomeKey()) unopened.push(key);
          else skipped.push(`${key}: ${redactedMessage(err)}`);
        }
      }
      if (unopened.length > 0) {
        throw new StrataError(
          'KEY_MISSING',
          `rebuild-catalog: ${unopened.length} segment(s) of continuous protection (${unopened.slice(0, 3).join(', ')}${unopened.length > 3 ? ', ...' : ''}) open with none of the data keys your key file holds, and the repository has data keys it does not hold; rebuild with the passphrase of a key file that holds them all (\`strata key list\`)`,
        );
      }
      await writeCatalog(this.#ctx.storage, records, withoutMergedParts(segments));
      await op.complete({ details: { backups: records.length, segments: segments.length, skipped } });
      // Left out of the catalog, a damaged artifact is out of every list, verify and health check
      // from now on: said where someone sees it, not only in the journal.
      for (const line of skipped) {
        process.emitWarning(`the catalog was rebuilt without ${line}; it stays in the repository, unlisted: restore that backup from a mirror (strata copy), or delete the file`, { code: 'STRATA_UNREADABLE_ARTIFACT' });
      }
      return sortBackups(records);
    } catch (err) {
      await op.fail(err);
      throw err;
    }
  }

  /** Finds one backup by id, unique id prefix, or `latest` (within `database` if given). */
  async resolve(selector: Selector): Promise<BackupRecord> {
    const all = await this.list(selector.database === undefined ? {} : { database: selector.database });
    const single = (what: string): void => {
      const databases = new Set(all.map((b) => b.database));
      if (selector.database === undefined && databases.size > 1) {
        throw new StrataError('USAGE', `${what} is ambiguous: the repository holds ${[...databases].sort().join(', ')}; name one with --db`);
      }
    };
    if (selector.asOf !== undefined) {
      if (selector.id !== undefined) throw new StrataError('USAGE', 'give a backup id or a time (--as-of), not both');
      if (Number.isNaN(selector.asOf.getTime())) throw new StrataError('USAGE', 'the --as-of time is not a valid date');
      single('--as-of');
      const limit = selector.asOf.toISOString();
      // Schema-only backups hold no rows, so they are not what "the database as of" means.
      const candidates = all.filter((b) => b.type !== 'schema-only' && b.createdAt <= limit);
      const chosen = selector.trusted ? trustedNewest(candidates, all, `at or before ${limit}`) : candidates.at(-1);
      if (!chosen) {
        const first = all.find((b) => b.type !== 'schema-only');
        throw new StrataError(
          'BACKUP_NOT_FOUND',
          `no restore point${selector.database ? ` of ${selector.database}` : ''} at or before ${limit}${first ? ` (the oldest is ${first.id} at ${first.createdAt})` : await this.#otherDatabases(selector, all)}`,
        );
      }
      return chosen;
    }
    const id = selector.id ?? 'latest';
    if (id === 'latest') {
      single('"latest"');
      const withRows = selector.withRows ? all.filter((b) => b.type !== 'schema-only') : [];
      const newest = (selector.trusted && withRows.length > 0 ? trustedNewest(withRows, all, '') : withRows.at(-1)) ?? all.at(-1);
      if (!newest) throw new StrataError('BACKUP_NOT_FOUND', selector.database ? `no backups of ${selector.database} yet${await this.#otherDatabases(selector, all)}` : 'the repository holds no backups yet');
      return newest;
    }
    const exact = all.find((b) => b.id === id);
    if (exact) return exact;
    const matches = all.filter((b) => b.id.startsWith(id));
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) throw new StrataError('USAGE', `backup id prefix ${id} matches ${matches.length} backups; give more of the id`);
    throw new StrataError('BACKUP_NOT_FOUND', `no backup ${id}${selector.database ? ` of ${selector.database}` : ''} in ${this.#ctx.storage.location}`);
  }

  /**
   * For a database with no backups at all, the ones the repository has: most often the name was
   * mistyped (`--db ap`), and "no backups of ap yet" alone reads as if the backups were lost.
   */
  async #otherDatabases(selector: Selector, mine: readonly BackupRecord[]): Promise<string> {
    if (selector.database === undefined || mine.length > 0) return '';
    const others = [...new Set((await this.list()).map((b) => b.database))].sort();
    return others.length > 0 ? ` (the repository holds backups of ${others.join(', ')})` : '';
  }

  /** The restore points a backup needs, oldest first (for a full backup, just itself). */
  async chainOf(record: BackupRecord): Promise<BackupRecord[]> {
    const all = await this.list();
    const byId = new Map(all.map((b) => [b.id, b]));
    const chain: BackupRecord[] = [record];
    let current = record;
    while (current.parent !== null) {
      const parent = byId.get(current.parent);
      if (!parent) {
        throw new StrataError('CHAIN_BROKEN', `restore ${record.id}: ancestor ${current.parent} is missing from the catalog`, { details: { missing: current.parent } });
      }
      // A hand-edited or damaged catalog can link backups in a circle; never walk it forever.
      if (chain.includes(parent)) {
        throw new StrataError('CHAIN_BROKEN', `restore ${record.id}: the catalog's parent links loop through ${parent.id}; the catalog is damaged (delete the catalog/ folder to rebuild it from the artifacts)`);
      }
      chain.unshift(parent);
      current = parent;
    }
    return chain;
  }
}

/**
 * The newest of `candidates` (oldest first) with no link whose restored data a verification found
 * wrong; throws VERIFY_FAILED, naming the newest and its bad link, when every one has such a link.
 */
function trustedNewest(candidates: readonly BackupRecord[], all: readonly BackupRecord[], when: string): BackupRecord | undefined {
  const chosen = candidates.findLast((b) => contentFault(b, all) === undefined);
  const newest = candidates.at(-1);
  if (chosen || !newest) return chosen;
  const why = describeContentFault(newest, contentFault(newest, all)!);
  throw new StrataError(
    'VERIFY_FAILED',
    `restore: every restore point of ${newest.database}${when ? ` ${when}` : ''} has a link whose verification found its restored data wrong; the newest, ${newest.id}, ${why}. To restore one anyway, name it by its id (strata verify ID says what failed)`,
  );
}
