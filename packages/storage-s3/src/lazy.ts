import { StrataError, schemeOf } from '@strata/core';
import type { Abortable, GetOptions, ObjectInfo, Storage, StorageCapabilities, StorageKind } from '@strata/core';
import { parseS3Location } from './location.js';
import { DEFAULT_TIMING, checkSettings } from './settings.js';
import type { ClaimTiming, S3StorageSettings } from './settings.js';
import type { S3StorageImpl } from './s3-storage.js';

/**
 * A repository in an S3 bucket, under a prefix: `s3://bucket/prefix`.
 *
 * ```ts
 * const storage = new S3Storage('s3://backups/prod', { endpoint: 'https://minio.internal:9000' })
 * ```
 *
 * Puts are multipart uploads (lib-storage's `Upload`): the object appears whole when the upload
 * completes, or not at all. Gets of big objects fetch several ranges at once, in order, with
 * bounded memory. `createExclusive` is a conditional PUT, or a claim protocol on servers without
 * one (docs/RELIABILITY.md). The location and settings are checked here; the AWS SDK is loaded on
 * the first request, so a program that never touches a bucket does not pay for loading it.
 */
export class S3Storage implements Storage {
  readonly capabilities: StorageCapabilities = { space: false };
  readonly location: string;
  readonly #open: () => Promise<S3StorageImpl>;
  #real: Promise<S3StorageImpl> | undefined;

  constructor(location: string, settings: S3StorageSettings = {}, timing: ClaimTiming = DEFAULT_TIMING) {
    this.location = parseS3Location(location).display;
    checkSettings(settings);
    const requestLog = settings.requestLog ?? process.env['STRATA_S3_REQUEST_LOG'];
    const resolved = requestLog ? { ...settings, requestLog } : settings;
    this.#open = async () => {
      const { S3StorageImpl, loadS3Sdk } = await import('./s3-storage.js');
      await loadS3Sdk();
      return new S3StorageImpl(location, resolved, timing);
    };
  }

  #storage(): Promise<S3StorageImpl> {
    this.#real ??= this.#open();
    return this.#real;
  }

  async put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: Abortable): Promise<ObjectInfo> {
    return (await this.#storage()).put(key, body, options);
  }

  async get(key: string, options?: GetOptions): Promise<AsyncIterable<Uint8Array>> {
    return (await this.#storage()).get(key, options);
  }

  async read(key: string, options?: Abortable): Promise<Uint8Array> {
    return (await this.#storage()).read(key, options);
  }

  async stat(key: string, options?: Abortable): Promise<ObjectInfo> {
    return (await this.#storage()).stat(key, options);
  }

  async *list(prefix: string, options?: Abortable): AsyncIterable<ObjectInfo> {
    yield* (await this.#storage()).list(prefix, options);
  }

  async delete(key: string, options?: Abortable): Promise<void> {
    return (await this.#storage()).delete(key, options);
  }

  async createExclusive(key: string, body: Uint8Array, options?: Abortable): Promise<boolean> {
    return (await this.#storage()).createExclusive(key, body, options);
  }

  async sweepTemp(): Promise<number> {
    return (await this.#storage()).sweepTemp();
  }

  async exists(): Promise<boolean> {
    return (await this.#storage()).exists();
  }

  /** Closes the client's connections, if a request was ever made. */
  async close(): Promise<void> {
    if (this.#real) (await this.#real).close();
  }
}

/**
 * The `s3://` kind, with the settings of the `storage` section of strata.config.json.
 * `s3StorageKind()` without settings takes everything from the environment.
 */
export function s3StorageKind(settings: S3StorageSettings = {}): StorageKind {
  return {
    scheme: 's3',
    description: 's3://BUCKET/PREFIX: an S3-compatible bucket (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)',
    open(location: string): Storage {
      if (schemeOf(location) !== 's3') throw new StrataError('USAGE', `storage: ${JSON.stringify(location)} is not an s3:// location`);
      return new S3Storage(location, settings);
    },
  };
}
