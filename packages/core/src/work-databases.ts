import { createHash } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { StrataError } from './errors.js';

/**
 * Names for the databases a server engine creates beside the user's (a restore's work database,
 * the database or tables it moves aside, verify's scratch database), and the sweep that removes
 * those a killed process left behind.
 *
 * A name says whose it is: `<target>__strata_<role>_<host>_<pid>_<time>_<seq>`, where `host`
 * stands for the machine and pid namespace of the process, `pid` and `time` (seconds since
 * 1970, when the name was made) are base 36, and `seq` tells apart the operations of one process.
 * So a later run on the same host can see that the process is gone, and one on another host can
 * see how old the database is. The target's name comes first so that a person listing databases
 * sees what each belongs to; it is cut to fit the server's identifier limit.
 */

/** What a work database is for. */
export type WorkDatabaseRole = 'work' | 'aside' | 'scratch';

/** The longest identifier a server takes, and how it counts (bytes or characters, depending on the server). */
export interface IdentifierLimit {
  readonly max: number;
  readonly unit: 'bytes' | 'characters';
}

/** A database name this module made, read back. */
export interface WorkDatabaseName {
  readonly name: string;
  readonly role: WorkDatabaseRole;
  /** The start of the name of the database it serves: all of it when `complete`. */
  readonly prefix: string;
  /** False when the target's name was cut to fit (or might have been). */
  readonly complete: boolean;
  readonly host: string;
  readonly pid: number;
  readonly createdAt: Date;
  /** Shared by the databases of one operation (a restore's work and aside databases). */
  readonly operation: string;
}

/** The names of one restore's databases. */
export interface RestoreWorkNames {
  /** Where the restore builds the new database. */
  readonly work: string;
  /** Where what the restore replaces (the old database, or its tables) waits until the swap is done. */
  readonly aside: string;
}

/** A database of a process on another host counts as abandoned after this long. */
export const FOREIGN_LEFTOVER_AGE_MS = 7 * 24 * 60 * 60 * 1000;

const ROLE_LETTERS: Readonly<Record<WorkDatabaseRole, string>> = { work: 'w', aside: 'o', scratch: 'v' };
const MARKER = '__strata_';
const PATTERN = /^([\s\S]*)__strata_([wov])_([0-9a-f]{8})_([0-9a-z]{1,7})_([0-9a-z]{1,8})_([0-9a-z]{1,6})$/;

let sequence = 0;
let hostTagCache: string | undefined;

/**
 * This process's host, as names carry it: a hash of the host name and the pid namespace, so that
 * two containers with the same host name do not take each other's pids for their own.
 */
export function thisHostTag(): string {
  if (hostTagCache === undefined) {
    let namespace = '';
    try {
      namespace = readlinkSync('/proc/self/ns/pid');
    } catch {
      // No /proc (macOS, Windows): the host name alone.
    }
    hostTagCache = createHash('sha256').update(`${hostname()}\0${namespace}`).digest('hex').slice(0, 8);
  }
  return hostTagCache;
}

function measure(text: string, unit: IdentifierLimit['unit']): number {
  return unit === 'bytes' ? Buffer.byteLength(text) : [...text].length;
}

/**
 * Refuses a target database name longer than the server keeps: a server that cuts a long name
 * without a word (to its first 63 bytes, say) would take the restore into a database of another
 * name than the one asked for (and reported).
 */
export function checkDatabaseNameFits(name: string, limit: IdentifierLimit): void {
  const length = measure(name, limit.unit);
  if (length > limit.max) {
    throw new StrataError('USAGE', `restore: the database name ${name} is ${length} ${limit.unit} long; the server keeps at most ${limit.max}, so give a shorter one`);
  }
}

/** The longest start of `text` that measures at most `budget`, cut between characters. */
function cut(text: string, budget: number, unit: IdentifierLimit['unit']): string {
  let out = '';
  for (const char of text) {
    if (measure(out + char, unit) > budget) break;
    out += char;
  }
  return out;
}

/**
 * How much shorter than the budget a prefix must be to be whole: cutting between characters can
 * leave up to three bytes of the budget unused, so a prefix that close to it may have been cut.
 */
function isWhole(prefix: string, budget: number, unit: IdentifierLimit['unit']): boolean {
  return measure(prefix, unit) < budget - (unit === 'bytes' ? 3 : 0);
}

/** The parts of a name, for tests and for {@link workDatabaseNames}. */
export interface WorkDatabaseFields {
  readonly target: string;
  readonly role: WorkDatabaseRole;
  readonly host: string;
  readonly pid: number;
  readonly createdAt: Date;
  readonly seq: number;
}

/** Builds a name from its parts, the target cut to fit `limit`. */
export function formatWorkDatabaseName(fields: WorkDatabaseFields, limit: IdentifierLimit): string {
  const suffix = `${MARKER}${ROLE_LETTERS[fields.role]}_${fields.host}_${fields.pid.toString(36)}_${Math.floor(fields.createdAt.getTime() / 1000).toString(36)}_${fields.seq.toString(36)}`;
  const budget = limit.max - measure(suffix, limit.unit);
  const prefix = measure(fields.target, limit.unit) <= budget ? fields.target : cut(fields.target, budget, limit.unit);
  return prefix + suffix;
}

/** The work and aside names of one restore into `target`, made by this process now. */
export function workDatabaseNames(target: string, limit: IdentifierLimit): RestoreWorkNames {
  const fields = { target, host: thisHostTag(), pid: process.pid, createdAt: new Date(), seq: sequence++ };
  return { work: formatWorkDatabaseName({ ...fields, role: 'work' }, limit), aside: formatWorkDatabaseName({ ...fields, role: 'aside' }, limit) };
}

/** A name for verify's scratch database, on the server of database `source`. */
export function scratchDatabaseName(source: string, limit: IdentifierLimit): string {
  return formatWorkDatabaseName({ target: source, role: 'scratch', host: thisHostTag(), pid: process.pid, createdAt: new Date(), seq: sequence++ }, limit);
}

/** Reads a name made by {@link formatWorkDatabaseName}; undefined for every other name. */
export function parseWorkDatabaseName(name: string, limit: IdentifierLimit): WorkDatabaseName | undefined {
  const match = PATTERN.exec(name);
  if (!match) return undefined;
  const [, prefix, letter, host, pid, time, seq] = match as unknown as [string, string, string, string, string, string, string];
  const role = (Object.keys(ROLE_LETTERS) as WorkDatabaseRole[]).find((r) => ROLE_LETTERS[r] === letter)!;
  const budget = limit.max - measure(name.slice(prefix.length), limit.unit);
  return {
    name,
    role,
    prefix,
    complete: isWhole(prefix, budget, limit.unit),
    host,
    pid: parseInt(pid, 36),
    createdAt: new Date(parseInt(time, 36) * 1000),
    operation: `${host}_${pid}_${time}_${seq}`,
  };
}

/** Whether a process of this host is running (a pid of another user's process counts as running). */
export function processRuns(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Why the process that made a database can no longer need it, or undefined while it may: on this
 * host, when its pid is gone; from another host, once the database is older than
 * {@link FOREIGN_LEFTOVER_AGE_MS} (no restore or verify runs that long).
 */
export function abandonment(database: WorkDatabaseName, now: Date = new Date(), isRunning: (pid: number) => boolean = processRuns): string | undefined {
  if (database.host === thisHostTag()) return isRunning(database.pid) ? undefined : `pid ${database.pid} on this host, which is no longer running`;
  const age = now.getTime() - database.createdAt.getTime();
  if (age <= FOREIGN_LEFTOVER_AGE_MS) return undefined;
  return `a process on another host, ${Math.floor(age / (24 * 60 * 60 * 1000))} days ago`;
}

/** What a sweep needs from an engine: its server's databases, and how to remove or settle one. */
export interface LeftoverServer {
  readonly limit: IdentifierLimit;
  /** The names of every database on the server. */
  databases(): Promise<string[]>;
  /** Removes a database; one that is already gone is no error. */
  drop(name: string): Promise<void>;
  /**
   * Settles the aside database of an abandoned restore and says what it did, in a sentence that
   * names the database. It may hold the user's data (the old database, the replaced tables), so
   * an engine keeps or puts it back whenever it cannot tell that the restore got past its swap.
   * `exists` tells which databases the server has; `workLeft` whether the restore's work database
   * is still there (then the restore never renamed it into place).
   */
  settleAside(aside: WorkDatabaseName, context: { exists(name: string): boolean; workLeft: boolean }): Promise<string>;
}

/**
 * Removes the work and scratch databases that abandoned processes left on a server, settles their
 * aside databases, and returns what it did, one sentence per database. Names this module did not
 * make are never touched, nor those of a process that may still run. A database that cannot be
 * removed is reported, not thrown: the operation that sweeps goes on.
 */
export async function sweepLeftovers(server: LeftoverServer, now: Date = new Date()): Promise<string[]> {
  const names = await server.databases();
  const present = new Set(names);
  const abandoned: { database: WorkDatabaseName; why: string }[] = [];
  for (const name of names) {
    const database = parseWorkDatabaseName(name, server.limit);
    const why = database && abandonment(database, now);
    if (database && why) abandoned.push({ database, why });
  }
  const report: string[] = [];
  // Asides first: whether a restore's work database is still there tells how far it got.
  const order = [...abandoned.filter((a) => a.database.role === 'aside'), ...abandoned.filter((a) => a.database.role !== 'aside')];
  for (const { database, why } of order) {
    try {
      if (database.role === 'aside') {
        const workLeft = abandoned.some((a) => a.database.role === 'work' && a.database.operation === database.operation);
        report.push(`${await server.settleAside(database, { exists: (name) => present.has(name), workLeft })} (left by ${why})`);
      } else {
        await server.drop(database.name);
        report.push(`removed ${database.role === 'scratch' ? 'the scratch database' : 'the work database'} ${database.name} of a ${database.role === 'scratch' ? 'verify' : 'restore'} that did not finish (left by ${why})`);
      }
    } catch (err) {
      report.push(`could not ${database.role === 'aside' ? 'settle' : 'remove'} ${database.name}, left by ${why}: ${(err as Error).message}`);
    }
  }
  return report;
}

/**
 * Sweeps, and says what it did as a Node warning (an engine has no other channel to the user:
 * the CLI prints it on stderr, a program sees it with `process.on('warning')`). A sweep that
 * fails is said too, and the operation goes on: its own work does not depend on the sweep.
 */
export async function sweepAndReport(server: LeftoverServer, operation: string): Promise<void> {
  let report: string[];
  try {
    report = await sweepLeftovers(server);
  } catch (err) {
    report = [`could not look for databases that killed restores left behind: ${(err as Error).message}`];
  }
  for (const line of report) process.emitWarning(`${operation}: ${line}`, { code: 'STRATA_LEFTOVER' });
}
