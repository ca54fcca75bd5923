// Only light modules here: the AWS SDK loads when an S3Storage makes its first request.
export { S3Storage, s3StorageKind } from './lazy.js';
export { DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE, partSizeFor } from './settings.js';
export type { ClaimTiming, S3ClientSettings, S3StorageSettings } from './settings.js';
export { parseS3Location } from './location.js';
export type { S3Location } from './location.js';
