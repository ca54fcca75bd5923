import type { HandRecovery } from '@strata/core';

/** Recovering a SQLite backup by hand: the one stream is the database file itself. */
export const SQLITE_HAND_RECOVERY: HandRecovery = {
  layout: `SQLite: one stream, main.db, the database file taken with SQLite's online backup API, cut
into chunks of one database page. In a full backup data/main.db is the database file, byte for
byte. An incremental or differential stores only the pages its parent lacks, under
chunks/main.db/; the layout/main.db.idx entries of the chain say which page goes where, so
writing the stored pages at their positions over the full backup is not enough (pages that moved
are not stored again): assemble it with recover-chain.py, then data/main.db is the database.`,
  loadCommands: ['cp "$OUT/data/main.db" "$NEWDB.db"', `sqlite3 "$NEWDB.db" 'PRAGMA integrity_check'`],
  tools: ['sqlite3'],
  changes: `SQLite: changes.bin is the write-ahead-log frames of each transaction as SQLite wrote
them: per frame a 24-byte header (big-endian: page number, database size in pages after the
commit or 0, two salts, two checksums) and one page. An entry of segment.json with "commits"
stands for several transactions seen committed at the same moment (or within one slot of a
merged segment) and holds only the newest frame of each page they wrote (their checksums no
longer chain; the replay does not need them). Replaying them onto the restored base means writing
each frame's page at offset (page number - 1) * page size, in order, and after the last
transaction wanted cutting the file to the size its commit frame gives (docs/replay-segments.py).`,
  replayCommands: (keyArgument, segments) => [
    'cp "$OUT/data/main.db" "$NEWDB.db"',
    `python3 replay-segments.py ${keyArgument} --db "$NEWDB.db" --base "$BASE" --until "$UNTIL" ${segments}`,
    `sqlite3 "$NEWDB.db" 'PRAGMA integrity_check'`,
  ],
  exampleTarget: (database) => `./${database}.db`,
};
