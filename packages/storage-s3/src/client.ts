import { createHash } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import type { S3Client } from '@aws-sdk/client-s3';
import type { StandardRetryStrategy } from '@smithy/core/retry';
import type { S3ClientSettings } from './settings.js';

type RetryToken = Awaited<ReturnType<StandardRetryStrategy['acquireInitialRetryToken']>>;
type RetryErrorInfo = Parameters<StandardRetryStrategy['refreshRetryTokenForRetry']>[1];

let sdk: typeof import('@aws-sdk/client-s3');
let retry: typeof import('@smithy/core/retry');

/** Loads the SDK modules this file uses (see loadS3Sdk in s3-storage.ts). */
export async function loadClientSdk(): Promise<void> {
  [sdk, retry] = await Promise.all([import('@aws-sdk/client-s3'), import('@smithy/core/retry')]);
}

/** Attempts per request by default: the first and four retries with the SDK's backoff. */
export const DEFAULT_MAX_ATTEMPTS = 5;

/** The endpoint the SDK would take from the environment, mirroring its own order (service-specific first). */
export function environmentEndpoint(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env['AWS_ENDPOINT_URL_S3'] || env['AWS_ENDPOINT_URL'] || undefined;
}

/**
 * The SDK's standard retry strategy (backoff with jitter for throttling, 5xx and network errors;
 * never a 4xx other than throttling) less one case: 501 Not Implemented is a missing feature, not
 * a passing fault, and a server without conditional writes answers every conditional PUT with it.
 * Retrying it would only add seconds of backoff before the claim protocol takes over.
 */
class NoRetryOnNotImplemented {
  readonly #inner: StandardRetryStrategy;
  readonly mode = 'standard';

  constructor(maxAttempts: number) {
    this.#inner = new retry.StandardRetryStrategy(maxAttempts);
  }

  acquireInitialRetryToken(scope: string): Promise<RetryToken> {
    return this.#inner.acquireInitialRetryToken(scope);
  }

  refreshRetryTokenForRetry(token: RetryToken, errorInfo: RetryErrorInfo): Promise<RetryToken> {
    const status = (errorInfo.error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
    if (status === 501) return Promise.reject(errorInfo.error);
    return this.#inner.refreshRetryTokenForRetry(token, errorInfo);
  }

  recordSuccess(token: RetryToken): void {
    this.#inner.recordSuccess(token);
  }
}

/**
 * An S3 client for a repository. Credentials are never passed here: the SDK's default chain finds
 * them (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, the profile's files, SSO,
 * web identity, the instance or container role), so no secret passes through Strata's own code.
 */
/** How long a connection may take to open, and a request's socket may stay silent, before the request fails (and is retried). */
const CONNECT_TIMEOUT_MS = 30_000;
const IDLE_TIMEOUT_MS = 120_000;

export function createS3Client(settings: S3ClientSettings): { client: S3Client; endpoint: string } {
  const endpoint = settings.endpoint ?? environmentEndpoint();
  const region = settings.region ?? (process.env['AWS_REGION'] || process.env['AWS_DEFAULT_REGION'] || (endpoint ? 'us-east-1' : undefined));
  const client = new sdk.S3Client({
    ...(settings.endpoint !== undefined ? { endpoint: settings.endpoint } : {}),
    ...(region !== undefined ? { region } : {}),
    ...(settings.profile !== undefined ? { profile: settings.profile } : {}),
    // S3-compatible servers usually answer on one host name; the virtual-hosted style needs a
    // DNS name per bucket (bucket.host), which a MinIO, Ceph or Swift install seldom has (and
    // `bucket.localhost` never resolves). AWS itself prefers the virtual-hosted style.
    forcePathStyle: settings.pathStyle ?? endpoint !== undefined,
    // The SDK's default (a CRC32 of every body, sent as an aws-chunked trailer for streams) is
    // refused by servers that do not speak aws-chunked (Swift answers 501), and Strata checks
    // every artifact's sha256 itself. Checksums are sent where an operation requires one.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    retryStrategy: new NoRetryOnNotImplemented(settings.maxAttempts ?? DEFAULT_MAX_ATTEMPTS),
    // Without these a server that stops answering (frozen, or a network that drops packets)
    // holds a request, and the repository lock a backup or prune took, for ever. An idle
    // socket, not a whole request: a part on a slow link takes as long as it takes while bytes move.
    requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, socketTimeout: settings.idleTimeoutMs ?? IDLE_TIMEOUT_MS },
  });
  // DeleteObjects requires a checksum: the SDK sends a CRC32, older servers (Swift's s3api,
  // older Ceph and MinIO) want the Content-MD5 the S3 API originally required.
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown };
      if (context.commandName === 'DeleteObjectsCommand' && request.headers && (typeof request.body === 'string' || request.body instanceof Uint8Array)) {
        request.headers['content-md5'] = createHash('md5').update(request.body).digest('base64');
      }
      return next(args);
    },
    { step: 'build', name: 'strataContentMd5' },
  );
  if (settings.requestLog) addRequestLog(client, settings.requestLog);
  return { client, endpoint: endpoint ?? 'the AWS endpoint' };
}

/**
 * Appends one line per HTTP request (every attempt, retries included) to `file`:
 * `<time> <operation> <status> <key>`. For measuring what an operation costs; keys are repository
 * object names, never a credential.
 */
function addRequestLog(client: S3Client, file: string): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { Key?: string; Prefix?: string };
      const what = input.Key ?? (input.Prefix !== undefined ? `prefix=${input.Prefix}` : '');
      const write = (status: number | string): void => appendFileSync(file, `${new Date().toISOString()} ${String(context.commandName).replace(/Command$/, '')} ${status} ${what}\n`);
      try {
        const result = await next(args);
        write((result.response as { statusCode?: number }).statusCode ?? '?');
        return result;
      } catch (err) {
        write((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? (err as Error).name);
        throw err;
      }
    },
    // Below the retry step, so each attempt is one line.
    { step: 'deserialize', name: 'strataRequestLog' },
  );
}
