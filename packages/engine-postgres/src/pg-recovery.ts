import type { HandRecovery } from '@strata/core';

/** Recovering a PostgreSQL backup by hand: pg_dump's schema around COPY text streams. */
export const POSTGRES_HAND_RECOVERY: HandRecovery = {
  layout: `PostgreSQL: schema.sql is pg_dump --schema-only output, pre-data, then the line
"-- strata: post-data ...", then post-data (indexes, constraints, triggers). Each table that
holds rows is one stream, <schema>.<table>.copy (bytes other than letters, digits, _ and - as
%XX): its own rows (FROM ONLY) in COPY text format, one line per row, its non-generated columns
in table order, in primary-key order. Streams are stored as segments under chunks/<stream>/ in
every backup; in a full backup the .bin files, in order, concatenate to the stream. To recover,
run the pre-data part, \\copy each stream into its table, run the post-data part, then set the
sequences (engineMeta.sequences) and refresh the materialized views (engineMeta.matviews) from
manifest.json; recover-chain.py writes a load.psql that does exactly that, for any restore point.`,
  loadCommands: ['createdb "$NEWDB"', 'psql -X -d "$NEWDB" -f "$OUT/load.psql"'],
  tools: ['createdb', 'psql'],
  exampleTarget: (database) => `postgres://USER@HOST:5432/${database}`,
};
