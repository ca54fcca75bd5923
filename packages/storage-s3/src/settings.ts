import { StrataError } from '@strata/core';

// This module and location.ts are all that loads with the storage kind: the AWS SDK (a second of
// CPU to load on a small machine) is imported only when an s3:// repository is used.

/** Settings of the S3 client: the non-secret `storage` section of strata.config.json. */
export interface S3ClientSettings {
  /** `https://host:port` of an S3-compatible server; default: the SDK's (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS). */
  readonly endpoint?: string;
  /** Default: the SDK's (AWS_REGION, the profile's region); `us-east-1` for a custom endpoint without one. */
  readonly region?: string;
  /** Path-style requests (`host/bucket/key`). Default: on when an endpoint is set, off for AWS. */
  readonly pathStyle?: boolean;
  /** A profile of ~/.aws/config and ~/.aws/credentials; default: AWS_PROFILE, else `default`. */
  readonly profile?: string;
  /** Attempts per request, counting the first (default 5). */
  readonly maxAttempts?: number;
  /** How long a request's socket may stay silent before the request fails (default 120 s); tests make it short. */
  readonly idleTimeoutMs?: number;
  /**
   * A file to append one line per HTTP request to (time, operation, status, key), for measuring
   * what an operation costs. Default: STRATA_S3_REQUEST_LOG, read when the storage is made.
   */
  readonly requestLog?: string;
}

/** Settings of an {@link S3Storage}: the client's, and how it moves data. */
export interface S3StorageSettings extends S3ClientSettings {
  /** Bytes per multipart-upload part and per ranged GET (default 8 MiB; S3's minimum is 5 MiB). */
  readonly partSize?: number;
  /** Parts uploaded, and ranges fetched, at once (default 4). */
  readonly concurrency?: number;
  /**
   * `auto` (default): use `If-None-Match: *` where the server has it, else the claim protocol
   * (safe where PUT and LIST are linearizable; see docs/RELIABILITY.md). `required`: refuse a
   * server without conditional writes.
   */
  readonly conditionalWrites?: 'auto' | 'required';
  /** Keys per ListObjectsV2 page (default and maximum: the server's, 1,000 on S3); tests make it tiny. */
  readonly listPageSize?: number;
}

/** Timing of the claim protocol; only tests change it. */
export interface ClaimTiming {
  /** A claim of another host (or of a live process here) older than this is stale (default 2 min). */
  readonly staleMs: number;
  /** How long createExclusive keeps trying against live rival claims (default 60 s). */
  readonly giveUpMs: number;
}

export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
export const DEFAULT_CONCURRENCY = 4;
export const MIN_PART_SIZE = 5 * 1024 * 1024;
/** S3 takes at most 10,000 parts of at most 5 GiB in one upload. */
const MAX_PARTS = 10_000;
const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;

/**
 * The part size of one upload: the configured one, or larger when the body may hold more than
 * 10,000 of them (at 8 MiB, 78 GiB: a large database's artifact), with a tenth of the parts to
 * spare for a bound that is a little low (compression and encryption framing of data that does
 * not compress). Memory is queueSize of these parts.
 */
export function partSizeFor(configured: number, sizeHint: number | undefined): number {
  if (sizeHint === undefined || !Number.isFinite(sizeHint) || sizeHint <= 0) return configured;
  const needed = Math.ceil(sizeHint / (MAX_PARTS * 0.9) / (1024 * 1024)) * 1024 * 1024;
  return Math.min(MAX_PART_SIZE, Math.max(configured, needed));
}
export const DEFAULT_TIMING: ClaimTiming = { staleMs: 2 * 60 * 1000, giveUpMs: 60 * 1000 };


/** Refuses settings S3 cannot work with, naming the setting. */
export function checkSettings(settings: S3StorageSettings): void {
  if (settings.partSize !== undefined && (!Number.isInteger(settings.partSize) || settings.partSize < MIN_PART_SIZE)) {
    throw new StrataError('USAGE', `storage: partSize ${settings.partSize} is below S3's minimum part size of 5 MiB (${MIN_PART_SIZE} bytes)`);
  }
  if (settings.concurrency !== undefined && (!Number.isInteger(settings.concurrency) || settings.concurrency < 1)) {
    throw new StrataError('USAGE', `storage: concurrency must be a whole number ≥ 1 (got ${settings.concurrency})`);
  }
}
