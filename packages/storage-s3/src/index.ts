export { S3Storage, s3StorageKind, DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE } from './s3-storage.js';
export type { ClaimTiming, S3StorageSettings } from './s3-storage.js';
export { parseS3Location } from './location.js';
export type { S3Location } from './location.js';
