// The raw-SDK baseline of bench/s3.mjs, run as a child process so it is measured like the Strata
// CLI (wall time, peak RSS, CPU): what `aws s3 cp` does, with the AWS SDK that Strata itself uses
// (packages/storage-s3's copy), configured as Strata configures it (path-style, no body checksums).
//
//   node bench/lib/s3-sdk-transfer.mjs upload FILE BUCKET KEY PART_SIZE CONCURRENCY
//       lib-storage's Upload: a multipart upload of FILE, CONCURRENCY parts of PART_SIZE at once
//   node bench/lib/s3-sdk-transfer.mjs download BUCKET KEY FILE
//       one plain GetObject streamed into FILE, then fsync (as a restore makes its file durable)
//
// Prints one JSON line: { bytes, requests: { <operation>: count } } (every HTTP attempt counted).
// The endpoint and credentials come from the standard AWS variables, as for Strata.
import { createReadStream, createWriteStream, fsyncSync, openSync, closeSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pipeline } from 'node:stream/promises';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const require = createRequire(new URL('../../packages/storage-s3/package.json', import.meta.url));
const { S3Client, GetObjectCommand } = require('@aws-sdk/client-s3');
const { Upload } = require('@aws-sdk/lib-storage');

const [mode, ...args] = process.argv.slice(2);
const client = new S3Client({
  forcePathStyle: true,
  region: process.env.AWS_REGION || 'us-east-1',
  // As Strata: Swift refuses the SDK's default aws-chunked CRC32 trailers with 501.
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
});
const requests = {};
client.middlewareStack.add((next, context) => async (a) => {
  const name = String(context.commandName).replace(/Command$/, '');
  requests[name] = (requests[name] ?? 0) + 1;
  return next(a);
}, { step: 'deserialize', name: 'benchRequestCount' });

if (mode === 'upload') {
  const [file, bucket, key, partSize, concurrency] = args;
  const upload = new Upload({
    client,
    params: { Bucket: bucket, Key: key, Body: createReadStream(file, { highWaterMark: 1024 * 1024 }) },
    partSize: Number(partSize),
    queueSize: Number(concurrency),
    leavePartsOnError: false,
  });
  await upload.done();
  console.log(JSON.stringify({ bytes: statSync(file).size, requests }));
} else if (mode === 'download') {
  const [bucket, key, file] = args;
  const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  await pipeline(response.Body, createWriteStream(file));
  const fd = openSync(file, 'r');
  fsyncSync(fd);
  closeSync(fd);
  console.log(JSON.stringify({ bytes: statSync(file).size, requests }));
} else {
  console.error('usage: s3-sdk-transfer.mjs upload FILE BUCKET KEY PART_SIZE CONCURRENCY | download BUCKET KEY FILE');
  process.exit(2);
}
client.destroy();
