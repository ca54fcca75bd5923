import assert from 'node:assert/strict';
import { rowsInTurns } from '@strata/sdk';

/**
 * The turns a server engine's restore (PostgreSQL's COPY, MySQL's INSERTs) gives its connections
 * while loading one table's rows (issue 22): each connection must see whole rows only, every row
 * exactly once, and every load that began must be finished, whatever fails.
 */

/** A connection's load that records what it was sent; `failOnEnd` makes its end fail as a refused row would. */
class RecordingCopy {
  readonly chunks: Buffer[] = [];
  ended = false;
  constructor(private readonly failOnEnd?: Error) {}
  readonly kind = 'sink' as const;
  write = async (chunk: Uint8Array): Promise<void> => {
    this.chunks.push(Buffer.from(chunk));
  };
  end = async (): Promise<void> => {
    this.ended = true;
    if (this.failOnEnd) throw this.failOnEnd;
  };
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/** Rows as both engines' streams hold them, with the awkward parts of real ones: escaped newlines and tabs, multibyte text. */
function rows(count: number, width: (i: number) => number = () => 40): string[] {
  return Array.from({ length: count }, (_, i) => `${i}\tline one\\nline two\\ttab ${'é€'.repeat(width(i))}\n`);
}

/** Feeds `text` in chunks of the given sizes (cycled), as the restore's stream would. */
async function feed(sink: { write(c: Uint8Array): Promise<void>; end(): Promise<void> }, text: string, sizes: readonly number[]): Promise<void> {
  const bytes = Buffer.from(text, 'utf8');
  for (let at = 0, n = 0; at < bytes.length; n++) {
    const size = sizes[n % sizes.length]!;
    await sink.write(bytes.subarray(at, at + size));
    at += size;
  }
  await sink.end();
}

describe('rows of one table over several connections', () => {
  it('every connection gets whole rows, together every row once, in turns of about the turn size', async () => {
    const input = rows(5000);
    const lanes = [new RecordingCopy(), new RecordingCopy()];
    // Chunks of odd sizes cut rows, and even multibyte characters, anywhere.
    await feed(rowsInTurns(lanes, 16 * 1024), input.join(''), [4093, 1, 65_537, 777]);
    for (const lane of lanes) {
      assert.ok(lane.text().endsWith('\n'), 'a connection was left in the middle of a row');
      assert.ok(lane.text().length > input.join('').length / 4, 'the rows were not shared between the connections');
      assert.ok(lane.ended);
    }
    const received = lanes.flatMap((l) => l.text().split(/(?<=\n)/));
    assert.deepEqual(received.sort(), [...input].sort());
  });

  it('a row longer than a turn stays whole on one connection, without being held in memory', async () => {
    const input = rows(40, (i) => (i === 7 ? 200_000 : 10));
    const lanes = [new RecordingCopy(), new RecordingCopy()];
    await feed(rowsInTurns(lanes, 1024), input.join(''), [8192]);
    const holding = lanes.find((l) => l.text().includes(input[7]!));
    assert.ok(holding, 'the long row was split between connections');
    // Passed on as it came: the long row reached its connection in many writes, not one buffer.
    assert.ok(holding.chunks.length > 50);
    assert.deepEqual(lanes.flatMap((l) => l.text().split(/(?<=\n)/)).sort(), [...input].sort());
  });

  it('a small table uses one connection and starts no load on the others; an empty one still ends the first connection\'s load', async () => {
    const lanes = [new RecordingCopy(), new RecordingCopy()];
    await feed(rowsInTurns(lanes), rows(10).join(''), [100]);
    assert.equal(lanes[1]!.chunks.length, 0);
    assert.equal(lanes[1]!.ended, false);
    const empty = [new RecordingCopy(), new RecordingCopy()];
    await rowsInTurns(empty).end();
    assert.deepEqual(empty.map((l) => l.ended), [true, false]);
  });

  it('when one load fails, the others are still finished and the failure is what end() reports', async () => {
    const refused = new Error('invalid input syntax for type integer');
    const lanes = [new RecordingCopy(refused), new RecordingCopy()];
    await assert.rejects(feed(rowsInTurns(lanes, 1024), rows(500).join(''), [4096]), refused);
    assert.deepEqual(lanes.map((l) => l.ended), [true, true]);
  });
});
