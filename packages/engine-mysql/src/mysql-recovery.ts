import type { HandRecovery } from '@strata/core';

/** Recovering a MySQL/MariaDB backup by hand: the schema around LOAD DATA-shaped row streams. */
export const MYSQL_HAND_RECOVERY: HandRecovery = {
  layout: `MySQL/MariaDB: schema.sql is for the mysql client (DELIMITER ;;, each statement ended by a
line ";;"): routines and tables, then the line "-- strata: post-data ...", then views, triggers
and events; remove "{{db}}." from view definitions before running them. Each base table is one
stream, <table>.rows (bytes other than letters, digits, _ and - as %XX): one line per row in
primary-key order, its non-generated columns in table order separated by tabs, \\N for NULL,
backslash escapes for backslash, tab, newline, carriage return and NUL, and binary columns
(BINARY, VARBINARY, BLOBs, BIT, spatial) as hexadecimal: what LOAD DATA reads with UNHEX() for
the binary columns. Streams are stored as segments under chunks/<stream>/ in every backup (a
full backup's .bin files, in order, concatenate to the stream). recover-chain.py writes a
load.sql that creates the tables, loads the rows and then the views, triggers and events, for
any restore point.`,
  loadCommands: ['mysql -e "CREATE DATABASE \\`$NEWDB\\`"', 'mysql --local-infile=1 "$NEWDB" < "$OUT/load.sql"'],
  tools: ['mysql'],
  exampleTarget: (database) => `mysql://USER@HOST:3306/${database}`,
};
