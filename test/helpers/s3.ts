import { randomBytes } from 'node:crypto';
import { S3Client, CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, ListMultipartUploadsCommand, AbortMultipartUploadCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { skipOrFail } from './env.js';

// The SDK's note that its 2027 releases need Node 22 would print in every test process that opens
// an S3 storage (the CLI turns it off the same way).
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

/**
 * The S3 server the tests use: the standard AWS variables (AWS_ENDPOINT_URL, AWS_REGION,
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), as `bash scripts/s3/start-s3.sh` prints them.
 */
export function s3Configured(): boolean {
  return Boolean((process.env['AWS_ENDPOINT_URL'] || process.env['AWS_ENDPOINT_URL_S3']) && process.env['AWS_ACCESS_KEY_ID'] && process.env['AWS_SECRET_ACCESS_KEY']);
}

/**
 * Suites call this in `before`: without a server, skip with one line outside CI, and fail under
 * CI=true, where a missing server is a broken setup.
 */
export function requireS3(context: Mocha.Context): void {
  if (s3Configured()) return;
  const message = 'no S3 server configured (start one with `bash scripts/s3/start-s3.sh` and export what it prints, or `set -a; . /tmp/strata-s3/s3.env; set +a`)';
  skipOrFail(context, message);
}

/** A client for the test server's housekeeping (buckets), path-style as S3-compatible servers want. */
export function adminClient(): S3Client {
  return new S3Client({ forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED', region: process.env['AWS_REGION'] || 'us-east-1' });
}

/** Buckets made for one test file, emptied and deleted by `removeAll` (call it in `after`). */
export class Buckets {
  readonly #client = adminClient();
  readonly #made: string[] = [];

  /** A new empty bucket `strata-test-<random>`. */
  async create(): Promise<string> {
    const bucket = `strata-test-${randomBytes(6).toString('hex')}`;
    await this.#client.send(new CreateBucketCommand({ Bucket: bucket }));
    this.#made.push(bucket);
    return bucket;
  }

  /** Every key in a bucket (for checks that look at what the repository wrote). */
  async keys(bucket: string, prefix = ''): Promise<string[]> {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.#client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
      for (const object of page.Contents ?? []) if (object.Key) out.push(object.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** Unfinished multipart uploads in a bucket, as `key` strings. */
  async uploads(bucket: string): Promise<string[]> {
    const page = await this.#client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    return (page.Uploads ?? []).map((u) => u.Key ?? '?');
  }

  async removeAll(): Promise<void> {
    for (const bucket of this.#made.splice(0)) {
      const uploads = await this.#client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      for (const u of uploads.Uploads ?? []) await this.#client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key!, UploadId: u.UploadId! }));
      for (const key of await this.keys(bucket)) await this.#client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      await this.#client.send(new DeleteBucketCommand({ Bucket: bucket }));
    }
    this.#client.destroy();
  }
}

/**
 * One bucket for the tests of a `describe`: made in its `before` (which skips or, under CI,
 * fails without a server, as {@link requireS3} says) and emptied and deleted in its `after`.
 * Call it inside the `describe`; the bucket's name is `bucket.name` once the hook has run.
 */
export function useTestBucket(): { readonly name: string } {
  const buckets = new Buckets();
  const holder = { name: '' };
  before(async function () {
    requireS3(this);
    holder.name = await buckets.create();
  });
  after(async () => {
    if (holder.name) await buckets.removeAll();
  });
  return holder;
}
