import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { splitChunks } from '@strata/sdk';

/**
 * Content-defined chunk boundaries are part of the format: a restore of a stream stored whole cuts
 * it again and compares every chunk with its layout, and an incremental reuses its parent's chunks
 * only where the boundaries fall in the same places. So they must never depend on how the source
 * happened to hand its bytes over, and never change between versions.
 */
const CHUNKING = { kind: 'content-defined', averageSize: 65536 } as const;

/** Rows of printable text of 0–399 bytes, a row far longer than the average, a run of zeros, and 2 MB without structure; the same bytes every run. */
function sample(): Buffer {
  let x = 0x12345678;
  const next = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  const parts: Buffer[] = [];
  for (let i = 0; i < 30000; i++) {
    const length = next() % 400;
    const row = Buffer.alloc(length + 1);
    for (let j = 0; j < length; j++) row[j] = 32 + (next() % 90);
    row[length] = 10;
    parts.push(row);
    if (i === 10000) parts.push(Buffer.alloc(300000, 65));
    if (i === 20000) parts.push(Buffer.alloc(200000, 0));
  }
  const noise = Buffer.alloc(2_000_000);
  for (let j = 0; j < noise.length; j++) noise[j] = next() & 0xff;
  parts.push(noise);
  return Buffer.concat(parts);
}

/** Chunk sizes of `data` handed over in pieces of `size(i)` bytes (each piece a fresh buffer, as sources give them). */
async function chunkSizes(data: Buffer, size: (i: number) => number): Promise<number[]> {
  async function* pieces(): AsyncGenerator<Uint8Array> {
    for (let at = 0, i = 0; at < data.length; i++) {
      const n = Math.max(1, size(i));
      yield Uint8Array.from(data.subarray(at, at + n));
      at += n;
    }
  }
  const sizes: number[] = [];
  let joined = createHash('sha256');
  for await (const chunk of splitChunks(pieces(), CHUNKING)) {
    sizes.push(chunk.length);
    joined = joined.update(chunk);
  }
  assert.equal(joined.digest('hex'), createHash('sha256').update(data).digest('hex'), 'the chunks put together are the stream');
  return sizes;
}

/** The boundaries Strata has always cut this sample at (recorded from the chunker before it stopped copying). */
const RECORDED = [
    50616, 28072, 58601, 107810, 46766, 262349, 52854, 68238, 25154, 75789, 62878, 79575, 51767, 79893,
    26076, 113621, 19332, 36904, 122062, 199220, 33302, 54920, 40159, 18866, 51524, 111738, 144255,
    300191, 113322, 66255, 33280, 29864, 115648, 92374, 40552, 139460, 85027, 60820, 49945, 41341,
    95103, 35035, 46200, 123676, 46654, 262217, 78990, 50001, 218311, 45519, 47247, 91472, 200396,
    19303, 41196, 29332, 36974, 47288, 36290, 170605, 146152, 83139, 58822, 34983, 20488, 262190,
    129652, 127286, 75938, 112546, 112205, 35131, 21590, 27035, 69482, 90575, 18111, 27073, 16683,
    201657, 238712, 22117, 78307, 92917, 23241, 119483, 132968, 57493, 78896, 87387, 118009, 47770,
    17552, 60120, 129266, 232974, 46894, 72663, 20078, 168339, 108952,
];

describe('content-defined chunk boundaries', function () {
  const data = sample();

  it('are where they have always been', async function () {
    assert.equal(data.length, 8537105);
    assert.deepEqual(await chunkSizes(data, () => data.length), RECORDED);
  });

  it('do not depend on the pieces the stream comes in', async function () {
    for (const size of [1 + 63 * 1024, 65536, 4096, 513]) assert.deepEqual(await chunkSizes(data, () => size), RECORDED, `pieces of ${size} bytes`);
    let seed = 7;
    const random = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    assert.deepEqual(await chunkSizes(data, () => random() % 3000), RECORDED, 'pieces of 1 to 2999 bytes');
    assert.deepEqual(await chunkSizes(data, () => (random() % 8 === 0 ? random() % 400000 : random() % 7)), RECORDED, 'pieces from 1 byte to 400 kB');
  });

  it('cut a stream without any line end into one chunk, and rows split into single bytes like any others', async function () {
    const flat = Buffer.alloc(300000, 7);
    assert.deepEqual(await chunkSizes(flat, () => 1000), [300000]);
    const head = data.subarray(0, 200000);
    assert.deepEqual(await chunkSizes(head, () => 1), await chunkSizes(head, () => head.length));
  });
});
