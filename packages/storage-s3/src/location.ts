import { StrataError } from '@strata/core';

/** A repository's place in a bucket: `s3://bucket/prefix`. */
export interface S3Location {
  readonly bucket: string;
  /** Every key of the repository starts with this: `''` or `prefix/` (always with its slash). */
  readonly root: string;
  /** `s3://bucket/prefix` as messages show it (never with credentials: they are refused). */
  readonly display: string;
}

/**
 * Parses `s3://BUCKET/PREFIX`. Credentials in the URL (`s3://KEY:SECRET@bucket`) are refused: a
 * location ends up in shell history, the process list, strata.config.json and messages, so
 * secrets come from the SDK's usual places instead (environment, profile, instance role).
 */
export function parseS3Location(location: string): S3Location {
  const match = /^s3:\/\/([^/]*)(?:\/(.*))?$/i.exec(location);
  if (!match) throw new StrataError('USAGE', `repository location ${JSON.stringify(location.slice(0, 5))}…: an S3 location looks like s3://BUCKET/PREFIX`);
  const authority = match[1]!;
  if (authority.includes('@') || authority.includes(':')) {
    // The message never repeats the authority: it holds the secret.
    throw new StrataError(
      'USAGE',
      'repository location: credentials do not belong in an s3:// location (they would land in shell history, configs and messages); write s3://BUCKET/PREFIX and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE',
    );
  }
  const bucket = authority;
  // Bucket naming rules (S3's, which the compatible servers share): 3-63 of a-z, 0-9, '.', '-'.
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new StrataError('USAGE', `repository location s3://${bucket}: ${JSON.stringify(bucket)} is not a valid bucket name (3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)`);
  }
  const rest = match[2] ?? '';
  if (/[?#]/.test(rest)) throw new StrataError('USAGE', `repository location s3://${bucket}/…: a prefix takes no ? or # (settings go in the "storage" section of strata.config.json)`);
  const parts = rest.split('/').filter((part) => part !== '');
  if (parts.some((part) => part === '.' || part === '..')) throw new StrataError('USAGE', `repository location s3://${bucket}/${rest}: the prefix must not contain . or .. segments`);
  const prefix = parts.join('/');
  return { bucket, root: prefix === '' ? '' : `${prefix}/`, display: prefix === '' ? `s3://${bucket}` : `s3://${bucket}/${prefix}` };
}
