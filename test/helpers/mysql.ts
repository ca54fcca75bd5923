import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import { skipOrFail } from './env.js';

/** The test server: STRATA_TEST_MYSQL_URL, or the machine's MariaDB (root, no password). */
export const MYSQL_URL = process.env['STRATA_TEST_MYSQL_URL'] ?? 'mysql://root@127.0.0.1:3306/test';

export function mysqlUrl(database: string): string {
  const url = new URL(MYSQL_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

function connectionOptions(database?: string): mysql.ConnectionOptions {
  const url = new URL(MYSQL_URL);
  return {
    host: url.hostname,
    port: Number(url.port || 3306),
    user: decodeURIComponent(url.username || 'root'),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(database ? { database } : {}),
    charset: 'UTF8MB4_BIN',
    multipleStatements: true,
  };
}

let reachable: boolean | undefined;

/** Skips with one line outside CI when the server is unreachable; fails under CI=true. */
export async function requireMysql(context: Mocha.Context): Promise<void> {
  if (reachable === undefined) {
    try {
      const c = await mysql.createConnection({ ...connectionOptions(), connectTimeout: 3000 });
      await c.query('SELECT 1');
      await c.end();
      reachable = true;
    } catch {
      reachable = false;
    }
  }
  if (reachable) return;
  const message = `MySQL/MariaDB is not reachable at ${new URL(MYSQL_URL).host} (set STRATA_TEST_MYSQL_URL or start the server)`;
  skipOrFail(context, message);
}

export async function mysqlQuery(database: string | undefined, sql: string): Promise<unknown> {
  const c = await mysql.createConnection(connectionOptions(database));
  try {
    const [rows] = await c.query(sql);
    return rows;
  } finally {
    await c.end();
  }
}

/** A connection of the test's own, for sessions that must stay open (a transaction holding a lock); end it when done. */
export async function mysqlSession(database?: string): Promise<mysql.Connection> {
  return mysql.createConnection(connectionOptions(database));
}

/** Throw-away databases, dropped (with restore leftovers) afterwards. */
export class MysqlDatabases {
  readonly #created = new Set<string>();

  name(): string {
    const name = `strata_t_${randomBytes(4).toString('hex')}`;
    this.#created.add(name);
    return name;
  }

  async create(sql = ''): Promise<string> {
    const name = this.name();
    await mysqlQuery(undefined, `CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
    if (sql) await mysqlQuery(name, sql);
    return name;
  }

  async dropAll(): Promise<void> {
    const names = [...this.#created];
    this.#created.clear();
    const rows = (await mysqlQuery(undefined, 'SHOW DATABASES')) as { Database: string }[];
    for (const { Database: db } of rows) {
      if (names.some((n) => db === n || db.startsWith(`${n}__strata_`)) || db.startsWith('strata_scratch_')) {
        await mysqlQuery(undefined, `DROP DATABASE IF EXISTS \`${db}\``);
      }
    }
  }
}

/**
 * `mysqldump --skip-dump-date` of a database (schema, data, routines, triggers, events) with its
 * name normalised. Rows are dumped one per line in primary-key order, and consecutive row lines
 * are sorted, because a table without a key keeps rows in whatever physical order its history
 * left them, which is not content.
 */
export function mysqlDump(database: string, args: string[] = []): string {
  const url = new URL(MYSQL_URL);
  const result = spawnSync(
    'mysqldump',
    ['-h', url.hostname, '-P', url.port || '3306', '-u', decodeURIComponent(url.username || 'root'), '--skip-dump-date', '--routines', '--events', '--triggers', '--skip-extended-insert', '--order-by-primary', ...args, database],
    { encoding: 'utf8', maxBuffer: 1024 * 1024 * 1024, env: { ...process.env, ...(url.password ? { MYSQL_PWD: decodeURIComponent(url.password) } : {}) } },
  );
  if (result.status !== 0) throw new Error(`mysqldump ${database} failed: ${result.stderr}`);
  const out: string[] = [];
  let rows: string[] = [];
  for (const line of result.stdout.split('\n')) {
    if (line.startsWith('INSERT INTO ')) {
      rows.push(line);
      continue;
    }
    if (rows.length > 0) out.push(...rows.sort());
    rows = [];
    out.push(line);
  }
  out.push(...rows.sort());
  return out.join('\n').replaceAll(database, '<db>');
}

/** Kills every session using a database, synchronously (for "the server goes away" tests). */
export function killSessions(database: string): void {
  const url = new URL(MYSQL_URL);
  const base = ['-h', url.hostname, '-P', url.port || '3306', '-u', decodeURIComponent(url.username || 'root'), '-N', '-e'];
  const ids = spawnSync('mysql', [...base, `SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '${database}' AND ID <> CONNECTION_ID()`], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.trim());
  for (const id of ids) spawnSync('mysql', [...base, `KILL ${Number(id)}`]);
}

/**
 * A MariaDB server of the test's own (mariadbd in a temporary folder, on a free port) for
 * settings the shared server must keep, e.g. a small max_allowed_packet. Skips with one line
 * when mariadbd is not installed (fails under CI=true); `stop()` ends it and removes its files.
 */
export async function privateMariadb(context: Mocha.Context, settings: string[]): Promise<{ url(database: string): string; stop(): Promise<void> }> {
  const { mkdtempSync, rmSync, readFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { createServer } = await import('node:net');
  const found = spawnSync('sh', ['-c', 'command -v mariadbd && command -v mariadb-install-db'], { encoding: 'utf8' });
  if (found.status !== 0) {
    const message = 'mariadbd and mariadb-install-db are not installed (apt-get install mariadb-server)';
    skipOrFail(context, message);
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-mariadb-'));
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const p = (probe.address() as { port: number }).port;
      probe.close(() => resolve(p));
    });
  });
  const user = spawnSync('whoami', { encoding: 'utf8' }).stdout.trim();
  const init = spawnSync('mariadb-install-db', ['--no-defaults', `--datadir=${dir}/data`, `--user=${user}`, '--auth-root-authentication-method=normal', '--skip-test-db'], { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`mariadb-install-db failed: ${init.stderr}`);
  const server = spawn('mariadbd', [
    '--no-defaults', `--datadir=${dir}/data`, `--user=${user}`, `--port=${port}`, '--bind-address=127.0.0.1', `--socket=${dir}/sock`, `--pid-file=${dir}/pid`,
    '--innodb-buffer-pool-size=16M', `--log-error=${dir}/error.log`, ...settings,
  ], { stdio: 'ignore' });
  const url = (database: string): string => `mysql://root@127.0.0.1:${port}/${database}`;
  const stop = async (): Promise<void> => {
    if (server.exitCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve));
      server.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let attempt = 0; ; attempt++) {
    try {
      const c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root' });
      await c.end();
      return { url, stop };
    } catch (err) {
      if (attempt >= 100 || server.exitCode !== null) {
        let log = '';
        try {
          log = readFileSync(`${dir}/error.log`, 'utf8').slice(-2000);
        } catch {
          // No log yet: the error above says why.
        }
        await stop();
        throw new Error(`the private MariaDB did not start: ${(err as Error).message}\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}
