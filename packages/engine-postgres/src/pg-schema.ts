import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, readdirSync, realpathSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { StrataError, redactSecret, redactable, withheld } from '@strata/core';
import type pg from 'pg';
import type { PgTarget } from './pg-connection.js';
import { libpqEnv, pgProgram } from './pg-physical-engine.js';

/** Separates the two halves of schema.sql: restores load rows between them. */
export const POST_DATA_MARKER = '-- strata: post-data (indexes, constraints, triggers) below; load the rows before running it';

/** Where Debian's packages put each major version's programs, as pg_wrapper looks for them. */
const DEBIAN_BINROOT = '/usr/lib/postgresql';

/**
 * The pg_dump to run: STRATA_PG_BINDIR's when it has one (a server newer than the pg_dump on PATH
 * needs its own major's), else the one on PATH. Except that Debian's pg_dump on PATH is
 * pg_wrapper, a Perl script that chooses a version at every call: about 80 ms of CPU each, and a
 * backup calls pg_dump four times, a verify three. So the program it chooses is run directly:
 * with PGHOST in the environment, as Strata always sets it, pg_wrapper consults no cluster,
 * PGCLUSTER or postgresqlrc and runs the newest version installed that has pg_dump. `search` is
 * for the tests.
 */
export function pgDumpProgram(search: { path: string; binroot: string } = { path: process.env['PATH'] ?? '', binroot: DEBIAN_BINROOT }): string {
  const fromBindir = pgProgram('pg_dump');
  if (fromBindir !== 'pg_dump') return fromBindir;
  const onPath = search.path
    .split(path.delimiter)
    .filter((dir) => dir !== '')
    .map((dir) => path.join(dir, 'pg_dump'))
    .find(isExecutableFile);
  let wrapped = false;
  try {
    wrapped = onPath !== undefined && path.basename(realpathSync(onPath)) === 'pg_wrapper';
  } catch {
    // Gone since it was found: spawning it says what is wrong.
  }
  if (!wrapped) return 'pg_dump';
  let newest: number | undefined;
  try {
    // Versions 10 and later; a machine whose newest is 9.x keeps the wrapper, which reads those names.
    for (const entry of readdirSync(search.binroot)) {
      if (/^\d+$/.test(entry) && Number(entry) >= 10 && isExecutableFile(path.join(search.binroot, entry, 'bin', 'pg_dump'))) newest = Math.max(newest ?? 0, Number(entry));
    }
  } catch {
    // No such folder: the wrapper has nothing to choose from either, and says so.
  }
  return newest === undefined ? 'pg_dump' : path.join(search.binroot, String(newest), 'bin', 'pg_dump');
}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The server's major version (15 for 15.14). */
export async function serverMajorOf(client: pg.Client): Promise<number> {
  return Math.floor(Number((await client.query<{ v: string }>('SHOW server_version_num')).rows[0]!.v) / 10000);
}

/** Runs pg_dump (`program`, from {@link pgDumpProgram}) and returns its output; a missing binary or a failure is a clear error. */
export function runPgDump(program: string, target: PgTarget, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    // UTF-8 whatever the database's encoding: the output is decoded as UTF-8 below.
    const child = spawn(program, ['--no-password', '--encoding=UTF8', ...args], { env: libpqEnv(target), stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        reject(new StrataError('TOOL_MISSING', 'postgres: pg_dump is not installed; install the PostgreSQL client (Debian: postgresql-client) of the server\'s major version or newer'));
      } else reject(new StrataError('IO', `postgres: running pg_dump failed: ${e.message}`, { cause: e }));
    });
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else {
        const message = redactSecret(err.trim(), target.password);
        if (/server version mismatch|aborting because of server version mismatch/i.test(message)) {
          reject(new StrataError('TOOL_MISSING', `postgres: pg_dump is older than the server (${message}); install a pg_dump of the server's major version or newer (or set STRATA_PG_BINDIR to the folder of one)`));
        } else reject(new StrataError('IO', redactable`postgres: pg_dump failed (exit ${code}): ${withheld(message, 'pg_dump message')}`));
      }
    });
  });
}

/** Major version of a pg_dump (`program`, from {@link pgDumpProgram}), or a TOOL_MISSING error. */
export async function pgDumpMajor(program: string): Promise<number> {
  const version = await new Promise<string>((resolve, reject) => {
    const child = spawn(program, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'ENOENT'
          ? new StrataError('TOOL_MISSING', 'postgres: pg_dump is not installed; install the PostgreSQL client (Debian: postgresql-client) of the server\'s major version or newer')
          : new StrataError('IO', `postgres: running pg_dump failed: ${e.message}`, { cause: e }),
      ),
    );
    child.on('close', () => resolve(out));
  });
  const match = /(\d+)(?:\.\d+)?/.exec(version);
  if (!match) throw new StrataError('TOOL_MISSING', `postgres: cannot tell the pg_dump version from ${JSON.stringify(version.trim())}`);
  return Number(match[1]);
}

/**
 * The schema of the database as pg_dump sees it in `snapshot` (exported by our transaction, so
 * it matches the rows exactly): pre-data, a marker line, post-data.
 */
export async function dumpSchema(pgDump: string, target: PgTarget, snapshot: string | undefined): Promise<string> {
  const common = ['--schema-only', '--quote-all-identifiers', ...(snapshot ? [`--snapshot=${snapshot}`] : [])];
  const pre = await runPgDump(pgDump, target, [...common, '--section=pre-data']);
  const post = await runPgDump(pgDump, target, [...common, '--section=post-data']);
  return `${pre}\n${POST_DATA_MARKER}\n${post}`;
}

/** The two halves of a schema.sql written by {@link dumpSchema}. */
export function splitSchema(sql: string): { pre: string; post: string } {
  // The marker line dumpSchema wrote between statements: a string or a body may hold its text too.
  let at = 0;
  for (const [line, topLevel] of topLevelLines(sql)) {
    if (topLevel && line === POST_DATA_MARKER) return { pre: sql.slice(0, at), post: sql.slice(at + POST_DATA_MARKER.length) };
    at += line.length + 1;
  }
  return { pre: sql, post: '' };
}

/**
 * How a schema is normalised for its fingerprint: `statements` (facts version 5 on) drops comment
 * lines, blank lines and psql meta-commands only between statements, so a function body or a
 * string keeps every line; `lines` (earlier backups' facts) drops such lines wherever they are,
 * and is kept to compute those backups' facts as they were recorded.
 */
export type Normalisation = 'statements' | 'lines';

/**
 * Makes pg_dump output comparable: drops comments, blank lines and psql meta-commands
 * (`\restrict` lines carry a random key that differs on every run).
 */
export function normaliseSchema(sql: string, how: Normalisation = 'statements'): string {
  const noise = (line: string): boolean => line.startsWith('--') || line.startsWith('\\') || line.trim() === '';
  if (how === 'lines') return sql.split('\n').filter((line) => !noise(line)).join('\n');
  return [...topLevelLines(sql)].filter(([line, topLevel]) => !(topLevel && noise(line))).map(([line]) => line).join('\n');
}

/**
 * The schema as verification compares it: pg_dump's script with the element lines (columns and
 * table constraints) of every `CREATE TABLE ... INHERITS (...)` in sorted order. A child whose
 * columns sit in another order than its parent's (made on its own, then ALTER TABLE ... INHERIT)
 * cannot be recreated so from pg_dump's script, since CREATE TABLE ... INHERITS puts the parent's
 * columns first; pg_dump/pg_restore changes it exactly the same way. Only the physical order is
 * left out: row facts take columns by name, so a value in the wrong column still fails verify.
 */
export function comparableSchema(sql: string): string {
  const lines = sql.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    out.push(line);
    if (!/^CREATE (?:UNLOGGED )?TABLE .* \($/.test(line)) continue;
    const close = lines.findIndex((l, n) => n > i && l.startsWith(')'));
    if (close < 0 || lines[close] !== ')' || !(lines[close + 1] ?? '').startsWith('INHERITS (')) continue;
    const elements = lines.slice(i + 1, close).map((l) => l.replace(/,$/, '')).sort();
    out.push(...elements.map((l, n) => (n < elements.length - 1 ? `${l},` : l)));
    i = close - 1;
  }
  return out.join('\n');
}

/** SHA-256 of the normalised schema. */
export function fingerprint(sql: string, how: Normalisation = 'statements'): string {
  return createHash('sha256').update(normaliseSchema(sql, how)).digest('hex');
}

/** A name as pg_dump writes it (fmtId: in double quotes, doubled inside, unless it need not be). */
const WRITTEN_NAME = '("(?:[^"]|"")*"|[^\\s;\'"]+)';
/** The line pg_dump writes before each table and index whose tablespace differs from the one before. */
const SET_TABLESPACE = new RegExp(`^SET default_tablespace = ${WRITTEN_NAME};$`);
/** The clause of pg_dump --create's CREATE DATABASE for a database whose default tablespace is not pg_default. */
const DATABASE_TABLESPACE = new RegExp(` TABLESPACE = ${WRITTEN_NAME}`);

function nameOf(written: string): string {
  return written.startsWith('"') ? written.slice(1, -1).replaceAll('""', '"') : written;
}

/**
 * Each line of a pg_dump script, with whether it starts between statements (not inside one, a
 * string, a quoted name, a dollar-quoted function body or a comment), so that a line of the same
 * text as pg_dump's `SET default_tablespace` inside a function's body is never taken for it.
 * Written here: what is needed is where statements begin, not a parse of them.
 */
export function* topLevelLines(sql: string): Generator<[line: string, topLevel: boolean]> {
  let inStatement = false;
  /** The quote being read: `'`, `"`, or a dollar quote's tag such as `$body$`. */
  let quote: string | undefined;
  let commentDepth = 0;
  for (const line of sql.split('\n')) {
    const topLevel = !inStatement && quote === undefined && commentDepth === 0;
    yield [line, topLevel];
    // A psql meta-command (`\restrict KEY`) ends with its line.
    if (topLevel && line.startsWith('\\')) continue;
    for (let i = 0; i < line.length; ) {
      if (commentDepth > 0) {
        if (line.startsWith('*/', i)) commentDepth -= 1;
        else if (line.startsWith('/*', i)) commentDepth += 1;
        else {
          i += 1;
          continue;
        }
        i += 2;
      } else if (quote !== undefined) {
        if (!line.startsWith(quote, i)) i += 1;
        else if ((quote === "'" || quote === '"') && line[i + 1] === quote) i += 2;
        else {
          i += quote.length;
          quote = undefined;
        }
      } else if (line.startsWith('--', i)) break;
      else if (line.startsWith('/*', i)) {
        commentDepth = 1;
        i += 2;
      } else {
        const ch = line[i]!;
        const dollar = ch === '$' ? /^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/.exec(line.slice(i))?.[0] : undefined;
        if (ch === "'" || ch === '"' || dollar) quote = dollar ?? ch;
        if (ch === ';') inStatement = false;
        else if (!/\s/.test(ch)) inStatement = true;
        i += dollar?.length ?? 1;
      }
    }
  }
}

/**
 * The tablespaces a schema script (and the CREATE DATABASE recorded with it) puts objects in that
 * the target server does not have. A restore onto another server than the source's meets them.
 */
export function missingTablespaces(create: string | undefined, scripts: readonly string[], existing: ReadonlySet<string>): string[] {
  const named = new Set<string>();
  const clause = create ? DATABASE_TABLESPACE.exec(create)?.[1] : undefined;
  if (clause) named.add(nameOf(clause));
  for (const script of scripts) {
    for (const [line, topLevel] of topLevelLines(script)) {
      const written = topLevel ? SET_TABLESPACE.exec(line)?.[1] : undefined;
      if (written) named.add(nameOf(written));
    }
  }
  return [...named].filter((name) => !existing.has(name)).sort();
}

/**
 * A schema script with the tablespaces in `missing` left out, so that their tables and indexes
 * go to the database's default tablespace: the server refuses `SET default_tablespace` to a
 * tablespace it lacks, and pg_restore, after reporting that, creates the object in the default
 * one. A restore that stopped there instead could never bring a database whose tables had a
 * tablespace onto another server.
 */
export function withoutTablespaces(sql: string, missing: readonly string[]): string {
  if (missing.length === 0) return sql;
  const gone = new Set(missing);
  return [...topLevelLines(sql)]
    .map(([line, topLevel]) => {
      const set = topLevel ? SET_TABLESPACE.exec(line) : null;
      return set && gone.has(nameOf(set[1]!)) ? "SET default_tablespace = '';" : line;
    })
    .join('\n');
}

/** pg_dump's CREATE DATABASE without its TABLESPACE clause when that tablespace is in `missing`. */
export function createWithoutTablespace(create: string, missing: readonly string[]): string {
  const clause = DATABASE_TABLESPACE.exec(create);
  return clause && missing.includes(nameOf(clause[1]!)) ? create.replace(clause[0], '') : create;
}

/** A role as pg_dump writes it: quoted (always, with --quote-all-identifiers), or a bare name. */
const ROLE = '(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)';
/** Roles separated by commas, as a policy's TO lists them. */
const ROLES = `(${ROLE}(?:, ${ROLE})*)`;
/**
 * The statements pg_dump writes that name a role, each with its roles in its groups: owners,
 * privileges given to a role and their grantors, default privileges of or for a role, policies
 * applying to roles, and the session authorization a grantor's privileges are given under.
 */
const ROLE_STATEMENTS = [
  new RegExp(`^ALTER .* OWNER TO ${ROLES};$`),
  new RegExp(`^(?:GRANT|REVOKE) .* (?:TO|FROM) ${ROLES}(?: WITH GRANT OPTION)?(?: GRANTED BY ${ROLES})?;$`),
  new RegExp(`^ALTER DEFAULT PRIVILEGES FOR ROLE ${ROLES} `),
  new RegExp(`^ALTER DEFAULT PRIVILEGES .* (?:TO|FROM) ${ROLES}(?: WITH GRANT OPTION)?;$`),
  new RegExp(`^CREATE POLICY .* TO ${ROLES}(?: USING| WITH CHECK|;$)`),
  new RegExp(`^SET SESSION AUTHORIZATION ${ROLES};$`),
];

/** The roles a statement's first line names where {@link ROLE_STATEMENTS} look, unquoted; PUBLIC and the like are none. */
function rolesNamedBy(line: string): string[] {
  const out: string[] = [];
  for (const pattern of ROLE_STATEMENTS) {
    for (const list of pattern.exec(line)?.slice(1) ?? []) {
      for (const [written] of (list ?? '').matchAll(new RegExp(ROLE, 'g'))) {
        if (['PUBLIC', 'CURRENT_USER', 'SESSION_USER', 'CURRENT_ROLE'].includes(written)) continue;
        out.push(written.startsWith('"') ? written.slice(1, -1).replaceAll('""', '"') : written);
      }
    }
  }
  return out;
}

/**
 * The statements of a schema script that a plain connection can run: psql meta-commands removed,
 * and statements naming roles the target server lacks (owners, privileges, policies) left out
 * whole: the objects are then owned by the restoring user, as pg_restore --no-owner would do.
 * Only lines that start a statement are looked at: a function body or a string may hold a line of
 * the same text, which is the user's and stays as it is.
 */
export function executableSchema(sql: string, roles: ReadonlySet<string>): { sql: string; skipped: string[] } {
  const skipped: string[] = [];
  const kept: string[] = [];
  let leavingOut = false;
  for (const [line, topLevel] of topLevelLines(sql)) {
    if (topLevel) leavingOut = !line.startsWith('\\') && !line.startsWith('--') && rolesNamedBy(line).some((role) => !roles.has(role));
    if (topLevel && line.startsWith('\\')) continue;
    if (!leavingOut) kept.push(line);
    else if (topLevel) skipped.push(line.trim());
    else skipped[skipped.length - 1] += `\n${line}`;
  }
  return { sql: kept.join('\n'), skipped };
}

/**
 * Says which SECURITY DEFINER functions or procedures of `client`'s database lost their owner to
 * {@link executableSchema} (its `skipped` statements): they now belong to the restoring user and
 * run with its rights, most often a superuser's, which whoever may execute them then has.
 */
export async function reportDefinersWithoutOwner(client: pg.Client, skipped: readonly string[]): Promise<void> {
  const names = skipped.flatMap((statement) => {
    const m = /^ALTER (?:FUNCTION|PROCEDURE) ("(?:[^"]|"")+")\.("(?:[^"]|"")+")\(.* OWNER TO /.exec(statement);
    return m ? [[m[1]!.slice(1, -1).replaceAll('""', '"'), m[2]!.slice(1, -1).replaceAll('""', '"')]] : [];
  });
  if (names.length === 0) return;
  const rows = (await client.query<{ routine: string; owner: string; superuser: boolean }>(
    `SELECT p.oid::regprocedure::text AS routine, r.rolname AS owner, r.rolsuper AS superuser
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner
      WHERE p.prosecdef AND r.rolname = current_user AND (n.nspname, p.proname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
      ORDER BY 1`,
    [names.map((n) => n[0]), names.map((n) => n[1])],
  )).rows;
  if (rows.length === 0) return;
  const owner = rows[0]!.owner;
  process.emitWarning(
    `restore: SECURITY DEFINER ${rows.map((r) => r.routine).join(', ')} belonged to roles this server does not have and now belong to ${owner}, so they run with ${owner}'s rights${rows[0]!.superuser ? " (a superuser's)" : ''} for whoever may execute them; ALTER FUNCTION ... OWNER TO a role with the rights they need, or REVOKE EXECUTE, before they are used`,
    { code: 'STRATA_DEFINER_OWNER' },
  );
}

/** pg_dump's header above each object: `-- Name: orders; Type: TABLE; Schema: public; Owner: app`. */
const OBJECT_HEADER = /^-- Name: (.*); Type: ([A-Z][A-Z ]*); Schema: ([^;]*)(?:; Owner: .*)?$/;

/**
 * The schema object by object, from the headers pg_dump writes above each one: a key such as
 * `table public.orders`, `index public.orders_by_name`, `trigger public.orders audit` mapped to the
 * SHA-256 of the object's statements, normalised as for {@link fingerprint}. Owners stay in the
 * statements (`OWNER TO`), not in the key. The statements before the first header of each half
 * (session settings) are objects of their own. Where an object is the database itself, its name is replaced,
 * since a restore is checked under another name.
 */
export function schemaObjects(sql: string, database: string, how: Normalisation = 'statements'): Record<string, string> {
  const out: Record<string, string> = {};
  let key = 'settings';
  let aboutDatabase = false;
  let lines: string[] = [];
  const flush = (): void => {
    let text = normaliseSchema(lines.join('\n'), how);
    lines = [];
    if (text === '') return;
    if (aboutDatabase) text = text.split(`"${database.replace(/"/g, '""')}"`).join('"<database>"');
    let unique = key;
    for (let n = 2; unique in out; n++) unique = `${key} #${n}`;
    out[unique] = createHash('sha256').update(text).digest('hex');
  };
  for (const [line, topLevel] of how === 'lines' ? sql.split('\n').map((l) => [l, true] as const) : topLevelLines(sql)) {
    if (topLevel && line === POST_DATA_MARKER) {
      flush();
      key = 'settings post-data';
      aboutDatabase = false;
      continue;
    }
    const header = topLevel ? OBJECT_HEADER.exec(line) : null;
    if (!header) {
      lines.push(line);
      continue;
    }
    flush();
    const [, name, type, schema] = header as unknown as [string, string, string, string];
    aboutDatabase = /\bDATABASE\b/.test(type) || name.startsWith('DATABASE ');
    key = `${type.toLowerCase()} ${schema === '-' ? '' : `${schema}.`}${aboutDatabase ? name.split(database).join('<database>') : name}`;
  }
  flush();
  return out;
}
