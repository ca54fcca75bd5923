import type { BackupRecord, CheckResult, VerificationRecord } from './catalog.js';
import { redactCheck } from './catalog.js';
import type { Engine } from './engine.js';
import { StrataError, errorText, isStrataError, redactable, redactedMessage, throwIfAborted, writtenByNewerStrata } from './errors.js';
import type { RedactableMessage, StrataErrorCode } from './errors.js';
import { readArtifact } from './format/artifact-reader.js';
import type { ArtifactContents } from './format/artifact-reader.js';
import type { Manifest } from './format/manifest.js';
import { resolveFacts } from './format/facts-delta.js';
import type { CompleteFacts } from './format/facts-delta.js';
import type { ProgressListener } from './progress.js';
import { throttleProgress } from './progress.js';
import { describeSchemaDifference, schemaObjectDifferences } from './schema-diff.js';
import type { Selector } from './backup-catalog.js';
import { updateCatalog } from './catalog-commit.js';
import { checkManifestMatches, storedFacts } from './chain-reader.js';
import type { RepositoryContext } from './repository-context.js';
import type { Restorer } from './restorer.js';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { readCatalogContents } from './catalog.js';
import { continuityWindows } from './continuity.js';
import { readSegment } from './segments.js';
import { LogArchive } from './log-archive.js';
import type { LogFile } from './log-archive.js';

/** Options for {@link Repository.verify}. */
export interface VerifyOptions {
  /** `quick`: checks 1–2 (artifacts and hashes). `full`: all five, with a scratch restore. */
  readonly level: 'quick' | 'full';
  readonly signal?: AbortSignal;
  readonly onProgress?: ProgressListener;
}

/** The validator's report for one backup. */
export interface VerifyReport {
  readonly backupId: string;
  readonly database: string;
  /** The data keys its chain's artifacts need (none for unencrypted ones, or before key files). */
  readonly dataKeys: readonly string[];
  readonly level: 'quick' | 'full';
  readonly outcome: 'passed' | 'failed';
  readonly checks: readonly CheckResult[];
}

/** What `verify` found about one chain of segments (see {@link Validator.verifySegments}). */
export interface SegmentVerifyReport {
  readonly database: string;
  readonly base: string;
  readonly segments: number;
  readonly outcome: 'passed' | 'failed';
  /** What is wrong, one sentence each: a break in the chain, a segment missing, damaged or misplaced. */
  readonly problems: readonly string[];
}

/**
 * The validator: five checks per backup (file accessibility, checksum match, database readable,
 * schema integrity, data consistency). Findings are collected as check results, never thrown at
 * the first one; a check that cannot run is skipped with its reason.
 */
export class Validator {
  readonly #ctx: RepositoryContext;
  readonly #restorer: Restorer;

  constructor(ctx: RepositoryContext, restorer: Restorer) {
    this.#ctx = ctx;
    this.#restorer = restorer;
  }

  /**
   * Checks every chain of segments (of one database, or all): the chain unbroken, and every
   * segment's artifact present, of the catalog's size and SHA-256, decrypting and decompressing
   * cleanly, its manifest the catalog's and its changes its manifest's. Collects what is wrong.
   */
  async verifySegments(filter: { database?: string }, options: { signal?: AbortSignal } = {}): Promise<SegmentVerifyReport[]> {
    const contents = await readCatalogContents(this.#ctx.storage);
    if (!contents) return [];
    const windows = continuityWindows(contents.backups, contents.segments).filter((w) => filter.database === undefined || w.database === filter.database);
    if (windows.length === 0) return [];
    await this.#ctx.unlock();
    const dir = path.join(await this.#ctx.tempDir(), `verify-segments-${randomBytes(6).toString('hex')}`);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const reports: SegmentVerifyReport[] = [];
    try {
      for (const window of windows) {
        throwIfAborted(options.signal, 'verify');
        const op = await this.#ctx.journal.begin('verify', { database: window.database, backupId: window.base, details: { segments: window.segments } });
        const problems: string[] = window.broken ? [window.broken] : [];
        const segments = contents.segments.filter((s) => s.base === window.base).sort((a, b) => a.sequence - b.sequence);
        for (const segment of segments) {
          const out = path.join(dir, `${segment.sequence}.bin`);
          try {
            await readSegment(this.#ctx, segment, out, options.signal);
          } catch (err) {
            if (isStrataError(err, 'ABORTED')) throw err;
            // A replicator running beside verify merges segments and deletes them (compaction):
            // one gone that the catalog no longer lists was merged, not lost.
            if (isStrataError(err, 'CHAIN_BROKEN')) {
              const now = await readCatalogContents(this.#ctx.storage).catch(() => undefined);
              if (now && !now.segments.some((s) => s.key === segment.key)) continue;
            }
            problems.push(err instanceof Error ? err.message : String(err));
          } finally {
            await fs.rm(out, { force: true });
          }
        }
        const report: SegmentVerifyReport = { database: window.database, base: window.base, segments: segments.length, outcome: problems.length === 0 ? 'passed' : 'failed', problems };
        reports.push(report);
        await op.complete({ details: { segments: segments.length, outcome: report.outcome, problems: problems.length } });
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
    return reports;
  }

  /**
   * Runs the validator on one backup or on all of them. Findings are collected, never thrown:
   * each check reports passed, failed or skipped with a reason. Results go to the catalog.
   */
  async verify(selector: Selector | 'all', options: VerifyOptions): Promise<VerifyReport[]> {
    // `latest` is what a restore of `latest` would use, the newest restore point with rows: a newer
    // schema-only backup passing verification says nothing of the data a nightly `verify latest` is for.
    const targets = selector === 'all' ? await this.#ctx.catalog.list() : [await this.#ctx.catalog.resolve({ ...selector, withRows: true })];
    const reports: VerifyReport[] = [];
    for (const record of targets) {
      throwIfAborted(options.signal, 'verify');
      const op = await this.#ctx.journal.begin('verify', { database: record.database, backupId: record.id, details: { level: options.level } });
      let report: VerifyReport;
      const progress = throttleProgress(options.onProgress);
      try {
        report = await this.#verifyOne(record, { ...options, onProgress: progress.emit });
        // A quick verify ends in the middle of a read phase: its last event, with the totals.
        progress.end();
      } catch (err) {
        await op.fail(err).catch(() => undefined);
        throw err;
      }
      reports.push(report);
      const verification: VerificationRecord = { at: new Date().toISOString(), level: options.level, outcome: report.outcome, checks: report.checks.map(redactCheck) };
      await updateCatalog(this.#ctx, 'verify', (records) => records.map((r) => (r.id === record.id ? { ...r, verification } : r)));
      // The whole result also goes into the journal, where a rebuild of a lost catalog finds it.
      await op.complete({ details: { level: options.level, outcome: report.outcome, failed: report.checks.filter((c) => c.status === 'failed').map((c) => c.name), verification } });
    }
    return reports;
  }

  async #verifyOne(record: BackupRecord, options: VerifyOptions): Promise<VerifyReport> {
    const checks: CheckResult[] = [];
    const skipRest = (reason: string): void => {
      for (const name of ['checksum-match', 'database-readable', 'schema-integrity', 'data-consistency'] as const) {
        if (!checks.some((c) => c.name === name)) checks.push({ name, status: 'skipped', reason });
      }
    };
    let dataKeys = [this.#ctx.vault.keyIdOf(record)];
    const done = (): VerifyReport => ({
      backupId: record.id,
      database: record.database,
      dataKeys: [...new Set(dataKeys.filter((id): id is string => id !== undefined))],
      level: options.level,
      outcome: checks.some((c) => c.status === 'failed') ? 'failed' : 'passed',
      checks,
    });

    // 1. file accessibility: every artifact of the chain is there with its recorded size.
    let chain: BackupRecord[];
    try {
      chain = await this.#ctx.catalog.chainOf(record);
      dataKeys = chain.map((link) => this.#ctx.vault.keyIdOf(link));
      await this.#ctx.chains.checkPresent(chain, record);
      for (const link of chain) {
        const stream = await this.#ctx.storage.get(link.key);
        const iterator = stream[Symbol.asyncIterator]();
        await iterator.next();
        await iterator.return?.();
      }
      checks.push({ name: 'file-accessibility', status: 'passed', reason: `${chain.length} artifact(s) present, readable, with the recorded sizes` });
    } catch (err) {
      // The storage failing to answer (a server error, throttling, a network cut, access taken
      // away) says nothing of the artifacts: an error, not a failure recorded against a good
      // backup that `health` and retention would then pass over. Missing or short artifacts
      // are findings (their own codes). Only here: a read that decodes data (below) may report a
      // damaged artifact in words no code tells apart from the storage's.
      if (ofThisMachine(err) || isStrataError(err, 'IO') || isStrataError(err, 'ACCESS_DENIED') || isStrataError(err, 'REPO_NOT_FOUND')) throw err;
      checks.push(failedCheck('file-accessibility', err));
      skipRest('the artifacts are not all accessible');
      return done();
    }

    // 2. checksum match: artifact SHA-256, then every stream and chunk hash inside.
    // A key the passphrase's key file lacks says nothing about the backup: it is an error (exit 4)
    // that names the key, never a failed check recorded against a good backup.
    await this.#ctx.unlock();
    for (const link of chain) this.#ctx.keyFor(link, 'verify');
    let contents: ArtifactContents | undefined;
    let recorded: CompleteFacts | undefined;
    let reading: BackupRecord | undefined;
    try {
      for (const link of chain) {
        reading = link;
        const read = await readArtifact({
          storage: this.#ctx.storage,
          location: this.#ctx.chains.location(link),
          passphrase: this.#ctx.keyFor(link, 'verify'),
          signal: options.signal,
          onBytes: (n) => options.onProgress?.({ operation: 'verify', phase: 'read', doneBytes: n, totalBytes: link.storedBytes, backupId: link.id }),
        });
        checkManifestMatches(read, link);
        if (link === record) contents = read;
        // The facts verify compares with: each manifest's, completed link by link where stored as changes.
        const own = storedFacts(read.manifest);
        if (!read.manifest.factsDelta) recorded = own;
        else if (!recorded) throw new StrataError('ARTIFACT_CORRUPT', `${link.id} stores its table facts as changes, and no older restore point of its chain has them whole`);
        else recorded = resolveFacts(recorded, own, read.manifest.factsDelta, link.id);
      }
      checks.push({ name: 'checksum-match', status: 'passed', reason: 'artifact SHA-256 matches the catalog; every stream and chunk hash matches the manifest' });
    } catch (err) {
      // A codec this machine lacks (or a full disk) says nothing about the backup, as below.
      if (ofThisMachine(err)) throw err;
      // Written by a newer Strata (a format or chunking this one does not know): this program can
      // judge nothing of it, and a failure recorded now would make every restore pass the backup
      // over and health report it, on a fleet where one machine was not upgraded yet.
      if (writtenByNewerStrata(err)) {
        throw new StrataError('ARTIFACT_FOREIGN', `verify ${record.id}: ${reading !== undefined && reading !== record ? `its ancestor ${reading.id} ` : ''}was written by a newer Strata (${err.message}); nothing was recorded against it`, { cause: err, details: err.details });
      }
      // Which restore point of the chain is damaged is what the user needs to repair or replace.
      const ancestor = reading !== undefined && reading !== record && isStrataError(err, 'ARTIFACT_CORRUPT');
      checks.push(failedCheck('checksum-match', err, ancestor ? `ancestor ${reading!.id} is damaged: ` : ''));
      skipRest(ancestor ? 'an artifact of its chain does not match its checksums' : 'the artifact does not match its checksums');
      return done();
    }
    if (options.level === 'quick') {
      skipRest('level quick runs checks 1 and 2 only; use --level full to restore and compare');
      return done();
    }

    // 3–5 restore into a scratch target and compare with what the backup recorded.
    const engine = this.#ctx.options.engines.get(record.engine);
    if (!engine) {
      skipRest(`engine ${record.engine} is not available in this program`);
      return done();
    }
    const scratch = await engine.createScratch({ tempDir: await this.#ctx.tempDir(), source: record.source, signal: options.signal });
    try {
      try {
        await this.#restorer.restoreInto(engine, chain, scratch.locator, { force: true, signal: options.signal, onProgress: options.onProgress });
        checks.push({ name: 'database-readable', status: 'passed', reason: 'the chain restored into a scratch database' });
      } catch (err) {
        // A full scratch disk, a missing program or a server out of reach says nothing about the
        // backup: it is this machine's problem, reported as an error, never recorded as a failed
        // verification of a good backup (which a restore would then pass over).
        if (ofThisMachine(err)) throw err;
        if (/database or disk is full|no space left/i.test(messageOf(err))) {
          throw new StrataError('NO_SPACE', redactable`verify ${record.id}: the scratch restore ran out of space in the temporary folder (${errorText(err)}); set STRATA_TMPDIR to a folder with room for the database`, { cause: err });
        }
        checks.push(failedCheck('database-readable', err));
        skipRest('the backup could not be restored');
        return done();
      }
      let facts: Awaited<ReturnType<Engine['inspect']>>;
      try {
        // A copy of files that replays its log to become consistent gets the archived log.
        const archive = engine.logArchive && record.logRange ? new LogArchive(this.#ctx) : undefined;
        const log = archive
          ? { range: record.logRange!, files: await archive.list(record.database, options.signal ? { signal: options.signal } : {}), read: (file: LogFile) => archive.read(file, options.signal ? { signal: options.signal } : {}) }
          : undefined;
        facts = await engine.inspect(scratch.locator, { signal: options.signal, recordedMeta: contents!.manifest.engineMeta, ...(log ? { log } : {}) });
      } catch (err) {
        if (ofThisMachine(err)) throw err;
        // The restore's own "passed" gives way: one check, one outcome.
        const failed = failedCheck('database-readable', err, 'restored, but does not open: ');
        const restored = checks.findIndex((c) => c.name === 'database-readable');
        if (restored >= 0) checks[restored] = failed;
        else checks.push(failed);
        skipRest('the restored database does not open');
        return done();
      }
      const manifest = { ...contents!.manifest, tables: recorded!.tables, ...(recorded!.schemaObjects ? { schemaObjects: recorded!.schemaObjects } : {}) };
      checks.push(...compareWithRecorded(manifest, facts, engine.nonTableFacts));
      return done();
    } finally {
      await scratch.drop().catch(() => undefined);
    }
  }
}

/** Errors of the machine a scratch restore runs on, not findings about the backup. */
function ofThisMachine(err: unknown): boolean {
  const codes: readonly StrataErrorCode[] = ['ABORTED', 'NO_SPACE', 'TOOL_MISSING', 'CONNECTION_FAILED', 'AUTH_FAILED'];
  return codes.some((code) => isStrataError(err, code));
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A failed check whose reason is an error's message; the catalog keeps the error's redacted one. */
function failedCheck(name: CheckResult['name'], err: unknown, prefix = ''): CheckResult {
  const reason = prefix + messageOf(err);
  const redacted = prefix + redactedMessage(err);
  return { name, status: 'failed', reason, ...(redacted !== reason ? { redacted } : {}) };
}

/** `1 table`, `3 tables`. */
function counted(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/**
 * Checks 4 and 5: the restored database's schema and integrity, and each table's rows and content,
 * against what the backup recorded (`recorded`: its manifest, with the chain's complete facts).
 */
export function compareWithRecorded(
  recorded: Pick<Manifest, 'schemaFingerprint' | 'schemaObjects' | 'tables'>,
  facts: Awaited<ReturnType<Engine['inspect']>>,
  besideTables: readonly string[] = [],
): [schema: CheckResult, data: CheckResult] {
  const schemaProblems: RedactableMessage[] = [];
  // Objects are compared even when the fingerprints agree: an engine may describe more per
  // object (a database file's header) than its fingerprint, which must stay as older versions made it.
  if (facts.schemaFingerprint !== recorded.schemaFingerprint || schemaObjectDifferences(recorded.schemaObjects, facts.schemaObjects).length > 0) {
    schemaProblems.push(describeSchemaDifference(recorded, facts));
  }
  const integrity = facts.integrityErrors.filter((e) => !e.startsWith('foreign key'));
  if (integrity.length > 0) schemaProblems.push({ text: integrity.slice(0, 5).join('; '), redacted: `${counted(integrity.length, 'integrity check finding')}` });
  const schema: CheckResult =
    schemaProblems.length === 0
      ? { name: 'schema-integrity', status: 'passed', reason: 'schema fingerprint matches; integrity check ok' }
      : { name: 'schema-integrity', status: 'failed', reason: schemaProblems.map((p) => p.text).join('; '), redacted: schemaProblems.map((p) => p.redacted).join('; ') };
  const dataProblems: string[] = [];
  // The catalog and journal keep counts per kind of problem, never the tables' names.
  const tally = { missing: 0, rows: 0, content: 0 };
  // Tables recorded under one name (facts an engine wrote before it told them apart) are
  // compared in the order both lists give them, each with its own.
  const restored = new Map<string, (typeof facts.tables)[number][]>();
  for (const t of facts.tables) restored.set(t.name, [...(restored.get(t.name) ?? []), t]);
  // Entries beside the tables (what the database holds besides its tables' rows) are named as themselves.
  const beside = (name: string): boolean => besideTables.includes(name);
  const tableCount = recorded.tables.filter((t) => !beside(t.name)).length;
  const besides = recorded.tables.filter((t) => beside(t.name)).map((t) => t.name);
  for (const table of recorded.tables) {
    const got = restored.get(table.name)?.shift();
    const what = beside(table.name) ? table.name : `table ${table.name}`;
    if (!got) {
      dataProblems.push(`${what} is missing`);
      tally.missing++;
    } else if (got.rows !== table.rows) {
      dataProblems.push(`${what} has ${got.rows} ${beside(table.name) ? 'entries' : 'rows'}, the backup recorded ${table.rows}`);
      tally.rows++;
    } else if (got.checksum !== table.checksum) {
      dataProblems.push(beside(table.name) ? `${what} differs from what the backup recorded` : `${what} content checksum differs from the recorded one`);
      tally.content++;
    }
  }
  const dataCheckProblems = facts.dataCheck?.problems ?? [];
  dataProblems.push(...dataCheckProblems);
  const foreignKeys = facts.integrityErrors.filter((e) => e.startsWith('foreign key'));
  // Rows in violation with every table's rows and content as recorded are the source's own (an
  // engine that lets foreign keys be switched off keeps such rows): they come back as they were,
  // which is what a faithful restore must do. Only beside a difference do they say something.
  const sourceViolations = dataProblems.length === 0 ? foreignKeys.length : 0;
  if (sourceViolations === 0) dataProblems.push(...foreignKeys.slice(0, 5));
  const dataSummary = [
    tally.missing > 0 ? `${counted(tally.missing, 'table')} missing` : '',
    tally.rows > 0 ? `row counts differ in ${counted(tally.rows, 'table')}` : '',
    tally.content > 0 ? `content checksums differ in ${counted(tally.content, 'table')}` : '',
    foreignKeys.length > 0 ? counted(foreignKeys.length, 'foreign key violation') : '',
    dataCheckProblems.length > 0 ? `${counted(dataCheckProblems.length, 'difference')} from what the database recorded of its files` : '',
  ].filter(Boolean);
  const foreignKeyNote =
    sourceViolations > 0
      ? `; ${counted(sourceViolations, 'foreign key violation')}, as the backed-up rows had (their content matches)`
      : facts.foreignKeysChecked
        ? '; foreign keys check out'
        : '';
  const data: CheckResult =
    dataProblems.length === 0
      ? {
          name: 'data-consistency',
          status: 'passed',
          reason:
            facts.dataCheck && recorded.tables.length === 0
              ? facts.dataCheck.checked
              : `${tableCount} table(s)${besides.length > 0 ? ` and ${besides.join(', ')}` : ''}: row counts and content checksums match${foreignKeyNote}`,
        }
      : {
          name: 'data-consistency',
          status: 'failed',
          reason: dataProblems.slice(0, 10).join('; '),
          redacted: `${dataSummary.join('; ')}${recorded.tables.length > 0 ? ` (of ${counted(tableCount, 'table')}${besides.length > 0 ? ` and ${besides.length} other entr${besides.length === 1 ? 'y' : 'ies'}` : ''})` : ''}`,
        };
  return [schema, data];
}
