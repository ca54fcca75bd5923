import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { skipOrFail } from './env.js';

/** The test server: STRATA_TEST_PG_URL, or the machine's PostgreSQL with trust authentication. */
export const PG_URL = process.env['STRATA_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** The server URL with another database. */
export function pgUrl(database: string): string {
  const url = new URL(PG_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

let reachable: boolean | undefined;

/** Whether the test server answers (asked once per process). */
export async function postgresReachable(): Promise<boolean> {
  if (reachable === undefined) {
    const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      reachable = true;
    } catch {
      reachable = false;
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  return reachable;
}

/**
 * Whether the test server answers. Suites call this in `before`: unreachable means skip with one
 * line outside CI, and a failure under CI=true, where a missing server is a broken setup.
 */
export async function requirePostgres(context: Mocha.Context): Promise<void> {
  if (await postgresReachable()) return;
  const message = `PostgreSQL is not reachable at ${new URL(PG_URL).host} (set STRATA_TEST_PG_URL or start the server)`;
  skipOrFail(context, message);
}

/** Runs SQL on a database of the test server. */
export async function pgQuery(database: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: pgUrl(database) });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}

/** Creates throw-away databases and drops them (and any restore leftovers) afterwards. */
export class Databases {
  readonly #created = new Set<string>();

  name(prefix = 'strata_t'): string {
    const name = `${prefix}_${randomBytes(4).toString('hex')}`;
    this.#created.add(name);
    return name;
  }

  async create(sql = ''): Promise<string> {
    const name = this.name();
    await pgQuery('postgres', `CREATE DATABASE "${name}"`);
    if (sql) await pgQuery(name, sql);
    return name;
  }

  async dropAll(): Promise<void> {
    const names = [...this.#created];
    this.#created.clear();
    const existing = (await pgQuery('postgres', 'SELECT datname FROM pg_database')).rows.map((r) => r.datname as string);
    for (const db of existing) {
      if (names.some((n) => db === n || db.startsWith(`${n}__strata_`)) || db.startsWith('strata_scratch_')) {
        await pgQuery('postgres', `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
      }
    }
  }
}

/**
 * `pg_dump` of a database with what differs between two databases of equal content removed:
 * comments, the \restrict lines (they carry a random key), the database's own name, and the
 * physical order of rows: rows inside each COPY block are sorted, since a restore writes them in
 * key order while the source keeps them where updates left them.
 */
export function pgDump(database: string, args: string[] = [], server: { url?: string; pgDump?: string } = {}): string {
  const url = new URL(server.url ?? PG_URL);
  const result = spawnSync(server.pgDump ?? 'pg_dump', ['--no-password', ...args, database], {
    encoding: 'utf8',
    maxBuffer: 1024 * 1024 * 1024,
    env: { ...process.env, PGHOST: url.hostname, PGPORT: url.port || '5432', PGUSER: decodeURIComponent(url.username || 'postgres') },
  });
  if (result.status !== 0) throw new Error(`pg_dump ${database} failed: ${result.stderr}`);
  const out: string[] = [];
  let rows: string[] | undefined;
  for (const line of result.stdout.split('\n')) {
    if (rows) {
      if (line === '\\.') {
        out.push(...rows.sort(), line);
        rows = undefined;
      } else rows.push(line);
      continue;
    }
    if (line.startsWith('--') || line.startsWith('\\restrict') || line.startsWith('\\unrestrict')) continue;
    out.push(line);
    if (line.startsWith('COPY ') && line.endsWith('FROM stdin;')) rows = [];
  }
  return out.join('\n').replaceAll(database, '<db>');
}
