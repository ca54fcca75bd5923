import { StrataError } from './errors.js';
import type { StreamTarget } from './engine.js';

/**
 * Pieces every engine for a database server needs in the same form: parsing its URL without
 * ever echoing the password, refusing an existing target without force, a sink for streams a
 * table restore skips, and ordering tables so parents load before children.
 */

/** What a server URL names. The password stays in here and is never part of a message. */
export interface ServerTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string | undefined;
  readonly database: string;
  /** The URL without its password: for messages, the catalog and the journal. */
  readonly safe: string;
  readonly raw: string;
}

/** How one engine's URLs look. */
export interface ServerUrlRules {
  /** Engine name used in messages (the engine's `kind`). */
  readonly engine: string;
  /** Accepted URL schemes, without the colon. */
  readonly protocols: readonly string[];
  readonly defaultPort: number;
  readonly defaultUser: string;
  /** Environment variable that may hold the password, as the server's own client tools read it. */
  readonly passwordEnv: string;
}

/** Parses a server URL; a bad one is a usage error that never repeats the password. */
export function parseServerUrl(locator: string, rules: ServerUrlRules): ServerTarget {
  let url: URL;
  try {
    url = new URL(locator);
  } catch {
    throw new StrataError('USAGE', `${rules.engine}: the database URL is not a valid URL (expected ${rules.protocols[0]}://user@host:port/database)`);
  }
  if (!rules.protocols.includes(url.protocol.replace(/:$/, ''))) throw new StrataError('USAGE', `${rules.engine}: ${url.protocol} is not a ${rules.engine} URL`);
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (!database || database.includes('/')) {
    throw new StrataError('USAGE', `${rules.engine}: the URL names no database (expected ${rules.protocols[0]}://user@${url.host || 'host'}/database)`);
  }
  const safe = new URL(locator);
  safe.password = '';
  return {
    host: url.hostname || 'localhost',
    port: url.port ? Number(url.port) : rules.defaultPort,
    user: decodeURIComponent(url.username || rules.defaultUser),
    password: url.password ? decodeURIComponent(url.password) : process.env[rules.passwordEnv],
    database,
    safe: safe.toString().replace(/:@/, '@'),
    raw: locator,
  };
}

/**
 * A locator fit for a message: the password of a `scheme://user:password@host/...` URL replaced
 * by `***`. For locators no engine understood, so it cannot rely on any engine's URL rules; what
 * `URL` cannot parse is cut at the userinfo by pattern.
 */
export function redactLocator(locator: string): string {
  try {
    const url = new URL(locator);
    if (url.password && url.host) {
      url.password = '***';
      return url.toString();
    }
  } catch {
    // Not a URL: fall through to the pattern, which still catches `scheme://user:pw@` prefixes.
  }
  return locator.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]*):[^/?#]*@/i, '$1:***@');
}

/** `text` with every occurrence of `secret` replaced by `***` (driver and tool messages can repeat a password). */
export function redactSecret(text: string, secret: string | undefined): string {
  return secret ? text.replaceAll(secret, '***') : text;
}

/** The same URL with another database. */
export function withServerDatabase(locator: string, database: string): string {
  const url = new URL(locator);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

/** Throws TARGET_EXISTS when a restore would replace a database without `force`. */
export function refuseExistingTarget(target: ServerTarget, exists: boolean, options: { force: boolean; tables?: readonly string[] }): void {
  if (!exists || options.force) return;
  throw new StrataError(
    'TARGET_EXISTS',
    options.tables
      ? `restore: database ${target.database} exists; pass --force to replace the rows of ${options.tables.join(', ')} in it`
      : `restore: database ${target.database} exists on ${target.host}:${target.port}; pass --force to replace it (it stays intact until the new one is complete)`,
  );
}

/** A sink for streams a table restore does not want. */
export const discardSink: StreamTarget = { kind: 'sink', write: async () => undefined, end: async () => undefined };

/** Orders tables so each comes after the tables its foreign keys point to (cycles are broken). */
export function parentsFirst(tables: readonly string[], edges: readonly { child: string; parent: string }[]): string[] {
  const set = new Set(tables);
  const out: string[] = [];
  const visiting = new Set<string>();
  const visit = (t: string): void => {
    if (out.includes(t) || visiting.has(t)) return;
    visiting.add(t);
    for (const e of edges) if (e.child === t && e.parent !== t && set.has(e.parent)) visit(e.parent);
    out.push(t);
  };
  for (const t of tables) visit(t);
  return out;
}
