import type { HandRecovery } from '@strata/core';

/** Recovering a MySQL/MariaDB backup by hand: the schema around LOAD DATA-shaped row streams. */
export const MYSQL_HAND_RECOVERY: HandRecovery = {
  layout: `MySQL/MariaDB: schema.sql is for the mysql client (DELIMITER ;;, each statement ended by a
line ";;" and, in backups whose header has the line "-- strata: statements framed 1", preceded by
a line "-- strata: statement of N bytes" that says its length in UTF-8: a ";;" line inside a
routine's body is then not its end): sequences (each CREATE SEQUENCE followed by the SELECT SETVAL of its next value),
routines and tables, then the line "-- strata: post-data ...", then views, triggers (in their
action order) and events; remove "{{db}}." from the statements before running them. Each base
table and each system-versioned table is one stream, <table>.rows (bytes other than letters,
digits, _ and - as %XX): one line per row in primary-key order, its non-generated columns in
table order separated by tabs, \\N for NULL, backslash escapes for backslash, tab, newline,
carriage return and NUL; binary columns (BINARY, VARBINARY, BLOBs, spatial) as hexadecimal, and
so is text of a character set other than utf8mb4, utf8mb3, ascii, latin1, ucs2, utf16, utf16le
and utf32 (its bytes in that character set); BIT columns as unsigned decimal numbers, ENUM
columns as their member's number (0 for an invalid value's empty one) and SET columns as their
members' bits, FLOAT columns as the exact DOUBLE they widen to. A
system-versioned table's stream holds its history rows too, with the row start and row end
(UTC) as the last two fields, loaded with SET SESSION system_versioning_insert_history = 1.
That is what LOAD DATA reads, with UNHEX() for the hexadecimal columns and CAST(... AS UNSIGNED) for
BIT, ENUM and SET. Streams are stored as segments under chunks/<stream>/ in every backup (a full backup's .bin
files, in order, concatenate to the stream). recover-chain.py writes a load.sql that creates the
sequences and tables, loads the rows and history and then the views, triggers and events, for
any restore point.`,
  loadCommands: ['mysql -e "CREATE DATABASE \\`$NEWDB\\`"', 'mysql --local-infile=1 "$NEWDB" < "$OUT/load.sql"'],
  tools: ['mysql'],
  exampleTarget: (database) => `mysql://USER@HOST:3306/${database}`,
};
