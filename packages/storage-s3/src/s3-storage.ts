import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import type * as ClientS3 from '@aws-sdk/client-s3';
import type { GetObjectCommandOutput, S3Client } from '@aws-sdk/client-s3';
import type * as LibStorage from '@aws-sdk/lib-storage';
import { StrataError, defaultIsAlive, isNotFound, throwIfAborted } from '@strata/core';
import type { Abortable, GetOptions, ObjectInfo, PutOptions, Storage, StorageCapabilities } from '@strata/core';
import { DEFAULT_MAX_ATTEMPTS, createS3Client, loadClientSdk } from './client.js';
import { DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE, DEFAULT_TIMING, checkSettings, partSizeFor } from './settings.js';

/** Incomplete multipart uploads older than this belong to a dead writer: no put runs for a day. */
const ABANDONED_UPLOAD_MS = 24 * 60 * 60 * 1000;
/** Claims live here, beside the repository's objects; `list` never yields them. */
const CLAIMS = '.claims/';
/**
 * A multipart put names its key and writer here while it runs (`<key>/<time>-<pid>-<host>`), so
 * that sweepTemp can abort a killed writer's unfinished upload at once: S3 lists uploads without
 * anything that says whose they are. `list` never yields these either.
 */
const UPLOADS = '.uploads/';
/** Where a repository writes objects (docs/FORMAT.md): the sweep of stray uploads looks nowhere else. */
const REPOSITORY_PREFIXES = ['backups/', 'cache/', 'catalog/', 'journal/', 'keys/', 'locks/', 'pending/', 'repository.json', UPLOADS];

// The AWS SDK, imported when the first S3 storage is used (loadS3Sdk), not when Strata starts:
// loading it costs a noticeable part of a second, which commands on a folder should not pay.
let s3: typeof ClientS3;
let libStorage: typeof LibStorage;

/** Loads the AWS SDK; call (and await) it before constructing an {@link S3StorageImpl}. */
export async function loadS3Sdk(): Promise<void> {
  [s3, libStorage] = await Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage'), loadClientSdk()]);
}
import type { ClaimTiming, S3StorageSettings } from './settings.js';
import { nameOf, s3Error, statusOf } from './errors.js';
import type { ErrorPlace } from './errors.js';
import { parseS3Location } from './location.js';
import type { S3Location } from './location.js';

interface ClaimBody {
  readonly pid: number;
  readonly host: string;
  readonly time: string;
}

/**
 * A repository in an S3 bucket, under a prefix (see {@link S3Storage}, which loads this module,
 * and the AWS SDK with it, on first use).
 *
 * Puts are multipart uploads (lib-storage's `Upload`): the object appears whole when the upload
 * completes, or not at all. Gets of big objects fetch several ranges at once, in order, with
 * bounded memory. `createExclusive` is a conditional PUT, or a claim protocol on servers without one.
 */
export class S3StorageImpl implements Storage {
  readonly capabilities: StorageCapabilities = { space: false };
  readonly location: string;
  readonly #client: S3Client;
  readonly #where: S3Location;
  readonly #endpoint: string;
  readonly #partSize: number;
  readonly #concurrency: number;
  /** Attempts at a response body that breaks off (the SDK's own retries end with the headers). */
  readonly #bodyAttempts: number;
  readonly #conditionalWrites: 'auto' | 'required';
  readonly #timing: ClaimTiming;
  readonly #listPageSize: number | undefined;
  /** Set once a conditional PUT came back 501: this server has none, so claims it is from then on. */
  #noConditionalPut = false;

  constructor(location: string, settings: S3StorageSettings = {}, timing: ClaimTiming = DEFAULT_TIMING) {
    this.#where = parseS3Location(location);
    this.location = this.#where.display;
    checkSettings(settings);
    this.#partSize = settings.partSize ?? DEFAULT_PART_SIZE;
    this.#concurrency = settings.concurrency ?? DEFAULT_CONCURRENCY;
    this.#bodyAttempts = settings.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    this.#conditionalWrites = settings.conditionalWrites ?? 'auto';
    this.#timing = timing;
    this.#listPageSize = settings.listPageSize;
    const { client, endpoint } = createS3Client(settings);
    this.#client = client;
    this.#endpoint = endpoint;
  }

  /** The bucket's key for a repository key. */
  #full(key: string): string {
    return this.#where.root + key;
  }

  #place(key?: string): ErrorPlace {
    return { bucket: this.#where.bucket, location: this.location, endpoint: this.#endpoint, ...(key !== undefined ? { key: this.#full(key) } : {}) };
  }

  async exists(): Promise<boolean> {
    try {
      await this.#client.send(new s3.HeadBucketCommand({ Bucket: this.#where.bucket }));
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw s3Error('open', this.#place(), err);
    }
  }

  async put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options: PutOptions = {}): Promise<ObjectInfo> {
    const signal = options.signal;
    const partSize = partSizeFor(this.#partSize, options.sizeHint);
    throwIfAborted(signal, `storage: write ${key}`);
    let size = 0;
    let source: Uint8Array | Readable;
    let marker: string | undefined;
    // Before the multipart upload starts: a body longer than one part is uploaded in parts.
    const mark = async (): Promise<void> => {
      const name = `${this.#where.root}${UPLOADS}${encodeURIComponent(key)}/${Date.now()}-${process.pid}-${encodeURIComponent(hostname())}`;
      await this.#client.send(new s3.PutObjectCommand({ Bucket: this.#where.bucket, Key: name, Body: '', ContentLength: 0 }), this.#sendOptions(options));
      marker = name;
    };
    if (body instanceof Uint8Array) {
      size = body.byteLength;
      source = body;
      if (size > partSize) await mark().catch((err: unknown) => Promise.reject(s3Error('write', this.#place(key), err)));
    } else {
      // The upload is failed through its body rather than Upload.abort(): abort() makes done()
      // reject at once while parts are still in flight, and the multipart upload is aborted only
      // later; a failing body makes done() wait until the multipart upload is gone.
      source = Readable.from(markedBeyond(countedUntilAborted(body, signal, key, (n) => (size += n)), partSize, mark));
    }
    const upload = new libStorage.Upload({
      client: this.#client,
      params: { Bucket: this.#where.bucket, Key: this.#full(key), Body: source },
      partSize,
      queueSize: this.#concurrency,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      if (source instanceof Readable) source.destroy();
      throw s3Error('write', this.#place(key), err);
    } finally {
      // A multipart upload whose creation the server did but whose answer was lost (a 500 after
      // the fact, a reset) was created again by the SDK's retry: the first is unknown to the
      // upload and would hold its parts, unseen, until sweepTemp's day has passed.
      if (size > partSize) await this.#abortStrayUploads(this.#full(key)).catch(() => undefined);
      if (marker) await this.#deleteFull(marker, {}, key).catch(() => undefined);
    }
    return { key, size, modified: new Date() };
  }

  /**
   * Aborts the unfinished multipart uploads of exactly `fullKey`. Core writes each key that is
   * big enough for a multipart upload once, by one process, so any left after its put ended are
   * that put's own strays.
   */
  async #abortStrayUploads(fullKey: string): Promise<void> {
    const page = await this.#client.send(new s3.ListMultipartUploadsCommand({ Bucket: this.#where.bucket, Prefix: fullKey }));
    for (const upload of page.Uploads ?? []) {
      if (upload.Key !== fullKey || !upload.UploadId) continue;
      await this.#client.send(new s3.AbortMultipartUploadCommand({ Bucket: this.#where.bucket, Key: fullKey, UploadId: upload.UploadId }));
    }
  }

  async get(key: string, options: GetOptions = {}): Promise<AsyncIterable<Uint8Array>> {
    const start = options.range?.start ?? 0;
    const end = options.range?.end;
    if (end !== undefined && end <= start) {
      await this.stat(key, options);
      return emptyStream();
    }
    const signal = options.signal;
    // The first range tells the object's size (Content-Range); the rest come in parallel.
    const firstEnd = end === undefined ? start + this.#partSize : Math.min(end, start + this.#partSize);
    let first: GetObjectCommandOutput;
    try {
      first = await this.#client.send(
        new s3.GetObjectCommand({ Bucket: this.#where.bucket, Key: this.#full(key), Range: `bytes=${start}-${firstEnd - 1}` }),
        { ...(signal ? { abortSignal: signal } : {}) },
      );
    } catch (err) {
      // A range past the end: the object exists (or this is a not-found), and holds nothing there.
      if (nameOf(err) === 'InvalidRange' || statusOf(err) === 416) {
        await this.stat(key, options);
        return emptyStream();
      }
      throw s3Error('read', this.#place(key), err);
    }
    const total = totalFromContentRange(first.ContentRange) ?? (first.ContentLength ?? 0) + start;
    const stop = Math.min(end ?? total, total);
    const firstBody = first.Body as Readable;
    if (firstEnd >= stop) return this.#resumable(firstBody, key, first.ETag, start, stop, signal);
    return this.#rangedRest(firstBody, first.ETag, key, start, firstEnd, stop, signal);
  }

  /**
   * A big object in ranges of partSize, `concurrency` of them fetched at once (the one being read
   * included), read in order. Each range is used as its bytes arrive rather than once it is whole:
   * the ranges in flight share the server's bandwidth and finish close together, so waiting for a
   * whole range left the reader idle for much of the time they took. Memory stays
   * concurrency × partSize: a range ahead of the reader holds at most its own bytes.
   */
  async *#rangedRest(firstBody: Readable, etag: string | undefined, key: string, start: number, from: number, stop: number, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    const ranges: [number, number][] = [];
    for (let at = from; at < stop; at += this.#partSize) ranges.push([at, Math.min(at + this.#partSize, stop)]);
    const stopAll = new AbortController();
    const onAbort = (): void => stopAll.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const fetchRange = async function* (this: S3StorageImpl, [a, b]: [number, number]): AsyncGenerator<Uint8Array> {
      let part: GetObjectCommandOutput;
      try {
        part = await this.#client.send(
          // If-Match: a put that replaced the object meanwhile fails the read instead of mixing two objects.
          new s3.GetObjectCommand({ Bucket: this.#where.bucket, Key: this.#full(key), Range: `bytes=${a}-${b - 1}`, ...(etag ? { IfMatch: etag } : {}) }),
          { abortSignal: stopAll.signal },
        );
      } catch (err) {
        if (statusOf(err) === 412) throw this.#changed(key, err);
        throw s3Error('read', this.#place(key), err);
      }
      // A body that breaks off is resumed where it broke (#resumable), pinned to the same object.
      yield* this.#resumable(part.Body as Readable, key, etag, a, b, stopAll.signal);
    };
    const queue: RangeBuffer[] = [new RangeBuffer(this.#resumable(firstBody, key, etag, start, from, stopAll.signal))];
    let next = 0;
    const refill = (): void => {
      while (queue.length < this.#concurrency && next < ranges.length) queue.push(new RangeBuffer(fetchRange.call(this, ranges[next++]!)));
    };
    try {
      refill();
      while (queue.length > 0) {
        const piece = await queue[0]!.take(READ_PIECE).catch((err: unknown) => {
          // A cancelled read says so, not that a range failed because its request was aborted.
          throwIfAborted(signal, `storage: read ${key}`);
          throw err;
        });
        throwIfAborted(signal, `storage: read ${key}`);
        if (piece === undefined) {
          queue.shift();
          refill();
          continue;
        }
        yield piece;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      stopAll.abort();
      firstBody.destroy();
    }
  }

  /**
   * The body of bytes `at` to `stop` of an object, with its errors in Strata's words. A body that
   * breaks off (a reset connection; the SDK's retries end once the headers are in) is resumed
   * where it broke, by a ranged GET pinned to the same object by its ETag.
   */
  async *#resumable(body: Readable, key: string, etag: string | undefined, at: number, stop: number, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    let current = body;
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const chunk of current) {
          at += (chunk as Uint8Array).byteLength;
          yield chunk as Uint8Array;
        }
        return;
      } catch (err) {
        if (at >= stop) return;
        if (attempt >= this.#bodyAttempts || signal?.aborted || !etag) throw s3Error('read', this.#place(key), err);
      } finally {
        current.destroy();
      }
      try {
        const again = await this.#client.send(new s3.GetObjectCommand({ Bucket: this.#where.bucket, Key: this.#full(key), Range: `bytes=${at}-${stop - 1}`, IfMatch: etag }), {
          ...(signal ? { abortSignal: signal } : {}),
        });
        current = again.Body as Readable;
      } catch (err) {
        if (statusOf(err) === 412) throw this.#changed(key, err);
        throw s3Error('read', this.#place(key), err);
      }
    }
  }

  #changed(key: string, cause: unknown): StrataError {
    return new StrataError('IO', `storage: ${key} in ${this.location} changed while it was being read; try again`, { cause });
  }

  async read(key: string, options: Abortable = {}): Promise<Uint8Array> {
    return this.#readFull(this.#full(key), options, () => this.#place(key));
  }

  async #readFull(fullKey: string, options: Abortable, place: () => ErrorPlace): Promise<Uint8Array> {
    for (let attempt = 1; ; attempt++) {
      let out: GetObjectCommandOutput;
      try {
        out = await this.#client.send(new s3.GetObjectCommand({ Bucket: this.#where.bucket, Key: fullKey }), this.#sendOptions(options));
      } catch (err) {
        throw s3Error('read', place(), err);
      }
      try {
        return await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
      } catch (err) {
        // The body broke off (a reset connection): read the object again, whole.
        if (attempt >= this.#bodyAttempts || options.signal?.aborted) throw s3Error('read', place(), err);
      }
    }
  }

  async stat(key: string, options: Abortable = {}): Promise<ObjectInfo> {
    try {
      const out = await this.#client.send(new s3.HeadObjectCommand({ Bucket: this.#where.bucket, Key: this.#full(key) }), this.#sendOptions(options));
      return { key, size: out.ContentLength ?? 0, modified: out.LastModified ?? new Date(0) };
    } catch (err) {
      throw s3Error('stat', this.#place(key), err);
    }
  }

  async *list(prefix: string, options: Abortable = {}): AsyncIterable<ObjectInfo> {
    for await (const object of this.#listRaw(this.#full(prefix), options)) {
      const key = object.key.slice(this.#where.root.length);
      if (key.startsWith(CLAIMS) || key.startsWith(UPLOADS)) continue;
      yield { ...object, key };
    }
  }

  /** Every object under a bucket prefix, page by page (ListObjectsV2, 1,000 keys and a continuation token each). */
  async *#listRaw(fullPrefix: string, options: Abortable): AsyncGenerator<ObjectInfo> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.#client.send(
          new s3.ListObjectsV2Command({ Bucket: this.#where.bucket, Prefix: fullPrefix, ...(token ? { ContinuationToken: token } : {}), ...(this.#listPageSize ? { MaxKeys: this.#listPageSize } : {}) }),
          this.#sendOptions(options),
        );
      } catch (err) {
        throw s3Error('list', { ...this.#place(), key: fullPrefix }, err);
      }
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        yield { key: object.Key, size: object.Size ?? 0, modified: object.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string, options: Abortable = {}): Promise<void> {
    await this.#deleteFull(this.#full(key), options, key);
  }

  async #deleteFull(fullKey: string, options: Abortable, shown: string): Promise<void> {
    try {
      await this.#client.send(new s3.DeleteObjectCommand({ Bucket: this.#where.bucket, Key: fullKey }), this.#sendOptions(options));
    } catch (err) {
      // S3 answers 204 for a missing key; some servers say 404. Either way it is gone.
      if (nameOf(err) === 'NoSuchKey') return;
      throw s3Error('delete', this.#place(shown), err);
    }
  }

  #sendOptions(options: Abortable, timeoutMs?: number): { abortSignal?: AbortSignal } {
    const signals = [options.signal, timeoutMs !== undefined ? AbortSignal.timeout(Math.max(1, timeoutMs)) : undefined].filter((s): s is AbortSignal => s !== undefined);
    if (signals.length === 0) return {};
    return { abortSignal: signals.length === 1 ? signals[0]! : AbortSignal.any(signals) };
  }

  async createExclusive(key: string, body: Uint8Array, options: Abortable = {}): Promise<boolean> {
    if (!this.#noConditionalPut) {
      const answer = await this.#conditionalPut(key, body, options);
      if (answer !== 'unsupported') return answer;
      if (this.#conditionalWrites === 'required') {
        throw new StrataError(
          'USAGE',
          `storage: the S3 server at ${this.#endpoint} does not support conditional writes (If-None-Match: *), and "storage.conditionalWrites" is "required"; use a server that has them, or set it to "auto" to use claims (safe only where listings are immediately consistent: see docs/RELIABILITY.md)`,
        );
      }
      this.#noConditionalPut = true;
    }
    return this.#claimAndCreate(key, body, options);
  }

  /** `PutObject` with `If-None-Match: *`: created, existed, or the server has no conditional writes. */
  async #conditionalPut(key: string, body: Uint8Array, options: Abortable): Promise<boolean | 'unsupported'> {
    for (;;) {
      try {
        await this.#client.send(new s3.PutObjectCommand({ Bucket: this.#where.bucket, Key: this.#full(key), Body: body, IfNoneMatch: '*' }), this.#sendOptions(options));
        return true;
      } catch (err) {
        const status = statusOf(err);
        if (status === 501 || nameOf(err) === 'NotImplemented') return 'unsupported';
        if (status === 412) {
          // A retried PUT may meet its own first attempt: then the object holds our bytes.
          const attempts = (err as { $metadata?: { attempts?: number } }).$metadata?.attempts ?? 1;
          if (attempts > 1) return this.#holds(key, body, options);
          return false;
        }
        // 409 ConditionalRequestConflict: another conditional write to the key was in progress.
        if (status === 409 && nameOf(err) === 'ConditionalRequestConflict') {
          await sleep(50 + Math.random() * 200, options.signal);
          continue;
        }
        throw s3Error('create', this.#place(key), err);
      }
    }
  }

  async #holds(key: string, body: Uint8Array, options: Abortable): Promise<boolean> {
    const there = await this.read(key, options).catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
    return there !== undefined && Buffer.from(there).equals(Buffer.from(body));
  }

  /**
   * The exclusive create on a server without conditional writes (docs/RELIABILITY.md has the
   * safety argument). Each attempt: PUT my claim, LIST the key's claims, and if mine is the only
   * live one, HEAD the key and PUT it; my claim is deleted in every case. About five requests.
   */
  async #claimAndCreate(key: string, body: Uint8Array, options: Abortable): Promise<boolean> {
    const signal = options.signal;
    const claimsPrefix = `${this.#where.root}${CLAIMS}${encodeURIComponent(key)}/`;
    const began = Date.now();
    for (let round = 0; ; round++) {
      throwIfAborted(signal, `storage: create ${key}`);
      // Who claims is in the name too (pid, host), so rivals judge a claim from the listing alone.
      const claimKey = `${claimsPrefix}${Date.now().toString().padStart(15, '0')}-${randomBytes(8).toString('hex')}-${process.pid}-${encodeURIComponent(hostname())}`;
      const claim: ClaimBody = { pid: process.pid, host: hostname(), time: new Date().toISOString() };
      // The window is counted from before the claim was sent: the server may date it any time after.
      const claimSent = Date.now();
      try {
        await this.#client.send(new s3.PutObjectCommand({ Bucket: this.#where.bucket, Key: claimKey, Body: JSON.stringify(claim) }), this.#sendOptions(options));
      } catch (err) {
        throw s3Error('claim', this.#place(key), err);
      }
      let created: boolean | 'contended' | 'first' | 'late';
      try {
        created = await this.#decide(key, body, claimKey, claimsPrefix, claimSent, options);
      } finally {
        await this.#deleteFull(claimKey, {}, key).catch(() => undefined);
      }
      if (created === true || created === false) return created;
      if (created === 'contended' || created === 'first') {
        if (Date.now() - began > this.#timing.giveUpMs) {
          throw new StrataError(
            'REPO_LOCKED',
            `storage: could not create ${key} in ${this.location} within ${Math.round(this.#timing.giveUpMs / 1000)} s: other processes kept claiming it (claims under ${this.location}/${CLAIMS}); try again`,
          );
        }
        // Random and growing, in units of what one attempt took on this server, so rivals that saw
        // each other spread out instead of meeting again in step. The oldest live claimant comes
        // back soonest: the others are still asleep then, so it usually finds itself alone.
        // (Who goes first only shapes the timing; safety rests on "alone in the listing".)
        const unit = Math.max(50, Date.now() - claimSent);
        const pause = created === 'first' ? Math.random() * unit * 0.25 : unit * (1 + Math.random()) * 2 ** Math.min(round, 3);
        await sleep(pause, signal);
        if (await this.#present(key, options)) return false;
      }
      // 'late': this process was too slow to write safely; start over with a fresh claim.
    }
  }

  async #decide(key: string, body: Uint8Array, claimKey: string, claimsPrefix: string, claimSent: number, options: Abortable): Promise<boolean | 'contended' | 'first' | 'late'> {
    const claims: ObjectInfo[] = [];
    for await (const object of this.#listRaw(claimsPrefix, options)) claims.push(object);
    const mine = claims.find((c) => c.key === claimKey);
    if (!mine) throw new StrataError('IO', `storage: the claim for ${key} in ${this.location} is missing from the listing right after it was written: this server's listings lag behind writes, so it cannot hold a repository safely (see docs/RELIABILITY.md)`);
    const live: ObjectInfo[] = [mine];
    for (const other of claims) {
      if (other.key === claimKey) continue;
      if (await this.#stale(other, mine, options)) await this.#deleteFull(other.key, options, key);
      else live.push(other);
    }
    if (live.length > 1) {
      const oldest = live.reduce((a, b) => (b.modified.getTime() < a.modified.getTime() || (b.modified.getTime() === a.modified.getTime() && b.key < a.key) ? b : a));
      return oldest === mine ? 'first' : 'contended';
    }
    if (await this.#present(key, options)) return false;
    // Others judge my claim stale by the server's clock once it is staleMs old. Write only while
    // well inside that: half of it, less what has passed since the claim was sent.
    const left = this.#timing.staleMs / 2 - (Date.now() - claimSent);
    if (left <= 0) return 'late';
    try {
      await this.#client.send(new s3.PutObjectCommand({ Bucket: this.#where.bucket, Key: this.#full(key), Body: body }), this.#sendOptions(options, left));
    } catch (err) {
      if (isAbortError(err) && !options.signal?.aborted) {
        throw new StrataError('IO', `storage: create ${key} in ${this.location}: the write took longer than its safe window (${Math.round(this.#timing.staleMs / 2000)} s) and was given up; try again`, { cause: err });
      }
      throw s3Error('create', this.#place(key), err);
    }
    return true;
  }

  /**
   * A rival claim is stale when its process is known dead (this host, pid gone), or when it is
   * staleMs older than mine by the server's own clock (LastModified of both): no host's clock
   * is compared with another's.
   */
  async #stale(other: ObjectInfo, mine: ObjectInfo, options: Abortable): Promise<boolean> {
    if (mine.modified.getTime() - other.modified.getTime() > this.#timing.staleMs) return true;
    const named = /^-(\d+)-(.+)$/.exec(other.key.slice(other.key.lastIndexOf('/') + 1).replace(/^\d+-[0-9a-f]+/, ''));
    if (named) {
      const host = decodeURIComponent(named[2]!);
      return host === hostname() && !defaultIsAlive(Number(named[1]), host);
    }
    // A claim named otherwise (by hand, or by another tool): its body says who made it.
    let claim: ClaimBody;
    try {
      const bytes = await this.#readFull(other.key, options, () => ({ ...this.#place(), key: other.key }));
      claim = JSON.parse(Buffer.from(bytes).toString('utf8')) as ClaimBody;
    } catch (err) {
      // Gone meanwhile (its owner finished) or unreadable: not a live rival either way once gone.
      if (isNotFound(err)) return true;
      if (err instanceof SyntaxError) return false;
      throw err;
    }
    return claim.host === hostname() && !defaultIsAlive(claim.pid, claim.host);
  }

  async #present(key: string, options: Abortable): Promise<boolean> {
    try {
      await this.stat(key, options);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /**
   * Aborts this repository's multipart uploads that were started over a day ago (their parts cost
   * storage until then, invisibly) and deletes claims of dead claimants that old. Returns how many.
   */
  async sweepTemp(): Promise<number> {
    const before = Date.now() - ABANDONED_UPLOAD_MS;
    let swept = 0;
    let keyMarker: string | undefined;
    let uploadMarker: string | undefined;
    try {
      for (;;) {
        const page = await this.#client.send(
          new s3.ListMultipartUploadsCommand({ Bucket: this.#where.bucket, Prefix: this.#where.root, ...(keyMarker ? { KeyMarker: keyMarker } : {}), ...(uploadMarker ? { UploadIdMarker: uploadMarker } : {}) }),
        );
        for (const upload of page.Uploads ?? []) {
          if (!upload.Key || !upload.UploadId || !upload.Initiated || upload.Initiated.getTime() > before) continue;
          // A repository at the bucket's root lists every upload of the bucket: another program's
          // day-long upload is not this repository's to abort.
          if (!REPOSITORY_PREFIXES.some((prefix) => upload.Key!.startsWith(this.#where.root + prefix))) continue;
          await this.#client.send(new s3.AbortMultipartUploadCommand({ Bucket: this.#where.bucket, Key: upload.Key, UploadId: upload.UploadId }));
          swept++;
        }
        if (!page.IsTruncated) break;
        keyMarker = page.NextKeyMarker;
        uploadMarker = page.NextUploadIdMarker;
      }
    } catch (err) {
      const failure = s3Error('sweep', this.#place(), err);
      // Housekeeping, not the command's work: a policy without s3:ListBucketMultipartUploads or
      // s3:AbortMultipartUpload only means leftovers stay (a bucket lifecycle rule can take them).
      if (failure.code !== 'ACCESS_DENIED') throw failure;
    }
    // Uploads of writers that are gone (this host, pid not running), or whose mark is a day old.
    const uploads = this.#where.root + UPLOADS;
    for await (const mark of this.#listRaw(uploads, {})) {
      const rest = mark.key.slice(uploads.length);
      const slash = rest.lastIndexOf('/');
      const writer = /^\d+-(\d+)-(.+)$/.exec(rest.slice(slash + 1));
      const host = writer ? decodeURIComponent(writer[2]!) : '';
      const gone = writer !== null && host === hostname() && !defaultIsAlive(Number(writer[1]), host);
      if (!gone && mark.modified.getTime() > before) continue;
      try {
        await this.#abortStrayUploads(this.#where.root + decodeURIComponent(rest.slice(0, slash)));
      } catch (err) {
        const failure = s3Error('sweep', this.#place(), err);
        // As above: without the permission, the upload stays for a lifecycle rule to take.
        if (failure.code !== 'ACCESS_DENIED') throw failure;
        continue;
      }
      await this.#deleteFull(mark.key, {}, mark.key.slice(this.#where.root.length));
      swept++;
    }
    for await (const claim of this.#listRaw(this.#where.root + CLAIMS, {})) {
      if (claim.modified.getTime() > before) continue;
      await this.#deleteFull(claim.key, {}, claim.key.slice(this.#where.root.length));
      swept++;
    }
    return swept;
  }

  /** Closes the client's connections (a CLI run ends anyway; long-lived programs call this). */
  close(): void {
    this.#client.destroy();
  }
}

function isAbortError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && ((err as Error).name === 'AbortError' || (err as Error).name === 'TimeoutError');
}

/** `body`, calling `mark` (once, and waiting for it) before the first byte beyond `limit` goes on. */
async function* markedBeyond(body: AsyncIterable<Uint8Array>, limit: number, mark: () => Promise<void>): AsyncGenerator<Uint8Array> {
  let seen = 0;
  let marked = false;
  for await (const chunk of body) {
    seen += chunk.byteLength;
    if (!marked && seen > limit) {
      await mark();
      marked = true;
    }
    yield chunk;
  }
}

/** The body as it streams into the upload: counted, and failing as soon as the signal fires. */
async function* countedUntilAborted(body: AsyncIterable<Uint8Array>, signal: AbortSignal | undefined, key: string, count: (n: number) => void): AsyncGenerator<Uint8Array> {
  const iterator = body[Symbol.asyncIterator]();
  try {
    for (;;) {
      const step = await nextUnlessAborted(iterator, signal, key);
      if (step.done) break;
      count(step.value.byteLength);
      yield step.value;
    }
    throwIfAborted(signal, `storage: write ${key}`);
  } finally {
    await iterator.return?.();
  }
}

/**
 * The iterator's next step, or a rejection as soon as the signal fires (a producer stuck on a slow
 * source must not hold a cancelled upload open). Each step listens to the signal only while it
 * is pending. Racing every step against one promise that lives as long as the upload would not
 * do: each race leaves a reaction on that promise which keeps the step's result, so every chunk
 * of the body stayed reachable until the put ended (memory grew with the size of the upload).
 */
function nextUnlessAborted(iterator: AsyncIterator<Uint8Array>, signal: AbortSignal | undefined, key: string): Promise<IteratorResult<Uint8Array>> {
  if (!signal) return iterator.next();
  return new Promise((resolve, reject) => {
    const fail = (): void => reject(new StrataError('ABORTED', `storage: write ${key}: cancelled`, { cause: signal.reason }));
    if (signal.aborted) return fail();
    signal.addEventListener('abort', fail, { once: true });
    iterator.next().then(
      (step) => {
        signal.removeEventListener('abort', fail);
        resolve(step);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', fail);
        reject(err);
      },
    );
  });
}

async function* emptyStream(): AsyncGenerator<Uint8Array> {}

/**
 * The size of the pieces a ranged read hands on: a response body arrives in pieces of up to
 * 64 KiB, and the decryption and decompression behind a restore took 1.6–2 times the CPU on
 * those that they take on 1 MiB pieces (the size a folder repository reads in).
 */
const READ_PIECE = 1024 * 1024;

/**
 * One range of an object, read ahead of its turn: its bytes are kept as they arrive (at most the
 * range, since the source ends with it) until the reader takes them.
 */
class RangeBuffer {
  readonly #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #failure: { readonly error: unknown } | undefined;
  #wake: (() => void) | undefined;

  constructor(source: AsyncIterable<Uint8Array>) {
    void this.#fill(source);
  }

  async #fill(source: AsyncIterable<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of source) {
        this.#chunks.push(chunk);
        this.#buffered += chunk.byteLength;
        this.#notify();
      }
    } catch (error) {
      this.#failure = { error };
    }
    this.#ended = true;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /**
   * The next bytes of the range: whole chunks as they came, joined until there are at least `min`
   * bytes or the range has ended; undefined once it has ended.
   */
  async take(min: number): Promise<Uint8Array | undefined> {
    while (this.#buffered < min && !this.#ended) await new Promise<void>((resolve) => (this.#wake = resolve));
    if (this.#failure) throw this.#failure.error;
    let count = 0;
    let bytes = 0;
    while (count < this.#chunks.length && bytes < min) bytes += this.#chunks[count++]!.byteLength;
    if (count === 0) return undefined;
    const taken = this.#chunks.splice(0, count);
    this.#buffered -= bytes;
    return count === 1 ? taken[0]! : Buffer.concat(taken, bytes);
  }
}

/** `bytes 0-99/1234` → 1234. */
function totalFromContentRange(header: string | undefined): number | undefined {
  const match = header ? /\/(\d+)\s*$/.exec(header) : null;
  return match ? Number(match[1]) : undefined;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new StrataError('ABORTED', 'storage: cancelled', { cause: signal.reason }));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new StrataError('ABORTED', 'storage: cancelled', { cause: signal?.reason }));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
