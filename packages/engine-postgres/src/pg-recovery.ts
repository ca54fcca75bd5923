import type { HandRecovery } from '@strata/core';

/** Recovering a PostgreSQL backup by hand: pg_dump's schema around COPY text streams. */
export const POSTGRES_HAND_RECOVERY: HandRecovery = {
  layout: `PostgreSQL: schema.sql is pg_dump --schema-only output. It starts with the database's own
properties as comment lines ("-- strata: database properties ..." to "-- strata: end of database
properties"): the CREATE DATABASE with its encoding and locale, then owner, comment, settings
and grants, the database written :"db" (psql -v db=<new name>); then pre-data, the line
"-- strata: post-data ...", then post-data (indexes, constraints, triggers). Each table that
holds rows is one stream, <schema>.<table>.copy (bytes other than letters, digits, _ and - as
%XX): its own rows (FROM ONLY) in COPY text format, in the database's encoding
(engineMeta.database.encoding), one line per row, in primary-key order, its non-generated
columns in the order engineMeta.tables[].columns of manifest.json records (an inheritance child
may have another order than the one pg_dump recreates; a table without columns has none).
Large objects, if any, are the stream large-objects.jsonl: a JSON line per object (oid, owner,
grants, comment), then its content as {"oid","at","hex"} lines. Streams are stored as segments
under chunks/<stream>/ in every backup; in a full backup the .bin files, in order, concatenate to
the stream. To recover, create the database as recorded, run the pre-data part, \\copy each
stream into its table with its recorded column list and client encoding, recreate the large
objects with their OIDs, run the post-data part, set the sequences (engineMeta.sequences),
refresh the materialized views in the order of engineMeta.matviews, then apply the database's
properties; recover-chain.py writes create-database.psql and load.psql that do exactly that,
for any restore point.`,
  loadCommands: ['psql -X -d postgres -v db="$NEWDB" -f "$OUT/create-database.psql"', 'psql -X -d "$NEWDB" -f "$OUT/load.psql"'],
  tools: ['psql'],
  exampleTarget: (database) => `postgres://USER@HOST:5432/${database}`,
};
