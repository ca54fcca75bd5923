import { StrataError, isAbortError } from '@strata/core';

/** What an SDK error looks like to us: its name (the S3 error code) and HTTP status. */
interface SdkErrorShape {
  readonly name?: string;
  readonly message?: string;
  readonly $metadata?: { readonly httpStatusCode?: number };
}

export function statusOf(err: unknown): number | undefined {
  return typeof err === 'object' && err !== null ? (err as SdkErrorShape).$metadata?.httpStatusCode : undefined;
}

export function nameOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? (err as SdkErrorShape).name : undefined;
}

const DENIED = new Set(['AccessDenied', 'SignatureDoesNotMatch', 'InvalidAccessKeyId', 'InvalidToken', 'ExpiredToken', 'AllAccessDisabled', 'Forbidden']);

/** Where the failing request went, for messages: bucket, key, endpoint. Never a credential. */
export interface ErrorPlace {
  readonly bucket: string;
  /** The full object key in the bucket, when the request named one. */
  readonly key?: string;
  /** `s3://bucket/prefix` of the repository. */
  readonly location: string;
  /** The endpoint the client talks to (`https://s3.amazonaws.com` when none is configured). */
  readonly endpoint: string;
}

/**
 * An SDK failure as a StrataError with a stable code and a message saying what to check. SDK
 * messages quote the server, which never echoes a secret key (a signature mismatch names the
 * access key id at most, which identifies but does not authorize), so they are kept as causes.
 */
export function s3Error(step: string, place: ErrorPlace, err: unknown): StrataError {
  if (err instanceof StrataError) return err;
  const object = place.key === undefined ? `s3://${place.bucket}` : `s3://${place.bucket}/${place.key}`;
  if (isAbortError(err)) return new StrataError('ABORTED', `storage: ${step} ${object}: cancelled`, { cause: err });
  const name = nameOf(err) ?? 'Error';
  const status = statusOf(err);
  if (name === 'NoSuchKey' || (name === 'NotFound' && place.key !== undefined)) {
    return new StrataError('IO', `storage: ${place.key ?? ''} not found in ${place.location}`, { cause: err, details: { notFound: true, key: place.key } });
  }
  if (name === 'NoSuchBucket' || (name === 'NotFound' && place.key === undefined)) {
    return new StrataError('REPO_NOT_FOUND', `storage: bucket ${place.bucket} does not exist at ${place.endpoint} (${step} ${place.location}); check the bucket name and the endpoint (AWS_ENDPOINT_URL, "storage.endpoint"), or create the bucket`, { cause: err, details: { bucket: place.bucket } });
  }
  if (DENIED.has(name) || status === 403) {
    return new StrataError(
      'ACCESS_DENIED',
      `storage: ${step} ${object}: access denied (${name}) at ${place.endpoint}; check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, or the profile in AWS_PROFILE / "storage.profile") and that they may read and write bucket ${place.bucket}`,
      { cause: err, details: { bucket: place.bucket } },
    );
  }
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test((err as SdkErrorShape).message ?? '')) {
    return new StrataError('ACCESS_DENIED', `storage: ${step} ${object}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or "storage.profile") naming a profile in ~/.aws/credentials`, { cause: err, details: { bucket: place.bucket } });
  }
  if (/Region is missing/i.test((err as SdkErrorShape).message ?? '')) {
    return new StrataError('USAGE', `storage: ${step} ${object}: no region; set AWS_REGION or "storage.region" in strata.config.json`, { cause: err });
  }
  const code = (err as { code?: unknown }).code;
  const detail = status !== undefined ? `${name} (HTTP ${status})` : typeof code === 'string' ? `${name} ${code}` : name;
  const said = (err as SdkErrorShape).message;
  return new StrataError('IO', `storage: ${step} ${object} at ${place.endpoint}: ${detail}${said && said !== name ? `: ${said}` : ''}`, { cause: err, details: { s3Error: name, ...(status !== undefined ? { status } : {}) } });
}
