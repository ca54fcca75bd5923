import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { getCodec } from '@strata/sdk';

/** Deterministic bytes that compress about as well as a database: runs of text and random-looking stretches. */
function sample(bytes: number, seed: number): Buffer {
  const noise = createCipheriv('aes-256-ctr', Buffer.alloc(32, seed), Buffer.alloc(16)).update(Buffer.alloc(bytes));
  const out = Buffer.alloc(bytes);
  for (let at = 0; at < bytes; at += 8192) {
    const text = Buffer.from(`row ${at} of sample ${seed}: status=shipped total=${(at % 977) * 3}.50 `.repeat(60));
    text.copy(out, at, 0, Math.min(4096, bytes - at));
    if (at + 4096 < bytes) noise.copy(out, at + 4096, at + 4096, Math.min(at + 8192, bytes));
  }
  return out;
}

async function* pieces(bytes: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of source) parts.push(Buffer.from(piece));
  return Buffer.concat(parts);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** What the standard tool makes of `input` read from a pipe: one frame without a declared content size. */
function zstdCli(input: Buffer): Buffer {
  const run = spawnSync('zstd', ['-3', '-q', '-c', '--no-content-size'], { input, maxBuffer: 1 << 30 });
  assert.equal(run.status, 0, run.stderr?.toString());
  return run.stdout;
}

describe('zstd decompression', () => {
  const zstd = getCodec('zstd');

  it('gives back exactly what was compressed, whatever the sizes of the pieces it reads', async () => {
    const input = sample(19 * 1024 * 1024 + 12345, 1);
    const compressed = await collect(zstd.compress(pieces(input, 1 << 20), 3));
    for (const size of [997, 65536, 3 * 1024 * 1024 + 5]) {
      assert.equal(sha(await collect(zstd.decompress(pieces(compressed, size)))), sha(input), `pieces of ${size} bytes`);
    }
    assert.equal((await collect(zstd.decompress(pieces(Buffer.alloc(0), 1)))).length, 0);
  });

  it('reads what the standard zstd tool writes, alone and after frames of its own', async () => {
    const ours = sample(9 * 1024 * 1024, 2);
    const theirs = sample(5 * 1024 * 1024 + 7, 3);
    const cli = zstdCli(theirs);
    assert.equal(sha(await collect(zstd.decompress(pieces(cli, 100_000)))), sha(theirs));
    const mixed = Buffer.concat([await collect(zstd.compress(pieces(ours, 1 << 20), 3)), cli]);
    assert.equal(sha(await collect(zstd.decompress(pieces(mixed, 100_000)))), sha(Buffer.concat([ours, theirs])));
  });

  // zstd frames carry no checksum here (the artifact's SHA-256 and OpenPGP's MDC guard the bytes),
  // so what the codec itself must catch is a stream that ends early or is not zstd at all.
  it('fails on a truncated stream or on bytes that are not zstd', async () => {
    const input = sample(9 * 1024 * 1024, 4);
    const compressed = await collect(zstd.compress(pieces(input, 1 << 20), 3));
    await assert.rejects(collect(zstd.decompress(pieces(compressed.subarray(0, compressed.length - 1000), 65536))));
    await assert.rejects(collect(zstd.decompress(pieces(Buffer.from('not zstd at all, just text'), 8))));
  });
});
