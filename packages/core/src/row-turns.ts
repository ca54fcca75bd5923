import type { StreamSink } from './engine.js';

/**
 * How many bytes of rows one connection takes before the next one's turn: large enough that the
 * turns cost nothing, small enough that a table of a few MiB already keeps every connection busy.
 */
export const ROW_TURN_BYTES = 1024 * 1024;

const NEWLINE = 0x0a;

/**
 * One table's rows loaded over several connections at once, each with its own load into the table.
 *
 * On a server engine's restore most of the time is the server's (parsing rows, forming tuples,
 * writing pages), and one load keeps one server core busy; the usual restore tools therefore load
 * several tables at once. A backup holds its tables one after the other in a single stream, so
 * here the rows of one table take turns instead. This works for a stream of one row per line whose
 * values escape the newline byte (so a line's end is a row's end, in any encoding that keeps bytes
 * below 0x80 for ASCII): a turn passes only at a row's end. The bytes go on as they came, never
 * buffered, so a row of any size costs no memory here.
 *
 * The order rows land in is the caller's to allow: the table must get its indexes and constraints
 * only after the rows, or not mind concurrent loads, and the verification facts must be sums over
 * rows.
 */
export function rowsInTurns(lanes: readonly StreamSink[], turnBytes = ROW_TURN_BYTES): StreamSink {
  if (lanes.length === 0) throw new Error('rowsInTurns needs at least one connection');
  const started = new Set<number>([0]);
  let lane = 0;
  let sentThisTurn = 0;
  let atRowStart = true;
  const send = async (bytes: Uint8Array): Promise<void> => {
    if (bytes.length === 0) return;
    started.add(lane);
    sentThisTurn += bytes.length;
    atRowStart = bytes[bytes.length - 1] === NEWLINE;
    await lanes[lane]!.write(bytes);
  };
  const nextTurn = (): void => {
    lane = (lane + 1) % lanes.length;
    sentThisTurn = 0;
  };
  return {
    kind: 'sink',
    write: async (chunk) => {
      let from = 0;
      if (sentThisTurn >= turnBytes) {
        if (!atRowStart) {
          // This connection finishes the row it is in before the turn passes.
          const rowEnd = chunk.indexOf(NEWLINE);
          if (rowEnd < 0) return send(chunk);
          await send(chunk.subarray(0, rowEnd + 1));
          from = rowEnd + 1;
        }
        nextTurn();
      }
      await send(from === 0 ? chunk : chunk.subarray(from));
    },
    end: async () => {
      // Every load that began is finished, even when one fails, so no connection is left inside one.
      const ended = await Promise.allSettled([...started].map((i) => lanes[i]!.end()));
      const failed = ended.find((e): e is PromiseRejectedResult => e.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
}
