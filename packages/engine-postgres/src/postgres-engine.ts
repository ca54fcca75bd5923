import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { once } from 'node:events';
import type pg from 'pg';
import type { from as copyFrom } from 'pg-copy-streams';
import { DEFAULT_TABLE_LOCK_WAIT_SECONDS, ServerEngine, StrataError, WorkDatabase, checkLockWait, discardSink, isStrataError, named, parentsFirst, redactable, rowsInTurns, tableListArgument, throwIfAborted, withheld, workDatabaseSession } from '@strata/core';
import type {
  Abortable,
  ReplaceTablesOptions,
  DatabaseFacts,
  EngineCapabilities,
  EngineDisplay,
  EngineRestoreOptions,
  InspectOptions,
  RestoreCommitInfo,
  RestoreSession,
  RestoreWorkNames,
  ServerAdmin,
  SpooledTables,
  TableFilter,
  Snapshot,
  SnapshotOptions,
  StreamSink,
  StreamTarget,
  TableStats,
} from '@strata/core';
import { PG_URL_RULES, connect, connectionError, copyStreams, ident, literal, parseTarget, withDatabase } from './pg-connection.js';
import type { PgTarget } from './pg-connection.js';
import { comparableSchema, createWithoutTablespace, dumpSchema, executableSchema, fingerprint, missingTablespaces, pgDumpMajor, pgDumpProgram, reportDefinersWithoutOwner, schemaObjects, serverMajorOf, splitSchema, withoutTablespaces } from './pg-schema.js';
import type { Normalisation } from './pg-schema.js';
import { copyOut, emptyTableStats, joinedName, leafPartitions, listTables, namePart, parseStreamName, partitionTree, populatedMatviews, qualified, refreshMatviews, refreshOrder, reportUnrefreshedMatviews, splitQualified, statsOf, streamName, unpopulatedMatviews } from './pg-tables.js';
import type { PgTable } from './pg-tables.js';
import { POSTGRES_HAND_RECOVERY } from './pg-recovery.js';
import { applySchema, applyScriptHeader, restoreFailed } from './pg-apply-schema.js';
import {
  DATABASE_PLACEHOLDER,
  applyDatabaseProperties,
  databaseSchemaObjects,
  databaseSection,
  describeDatabase,
  dropDatabase,
  identInEncoding,
  matchPublicSchema,
  readPublicSchema,
  recordedCreate,
  renameDatabase,
  reportSkipped,
  reportTablespacesMissing,
  refuseEnabledSubscriptions,
  reportSubscriptions,
  setClientEncoding,
  switchOffEventTriggers,
  switchOnEventTriggers,
  withDatabaseProperties,
} from './pg-database.js';
import type { DatabaseDescription, PublicSchema } from './pg-database.js';
import { legacyFacts } from './pg-legacy-facts.js';
import { PG_IDENTIFIER_LIMIT, pgAdmin } from './pg-admin.js';
import { LARGE_OBJECTS_FACTS, LARGE_OBJECTS_STREAM, countLargeObjects, largeObjectFacts, largeObjectsSink, readLargeObjects } from './pg-large-objects.js';

/**
 * The way this release computes verify facts, recorded as `engineMeta.factsVersion` (see {@link PgMeta}).
 * 3: extensions' configuration tables are among the tables (see listTables).
 * 4: a schema or table name with a dot or a quote is quoted in the table's name (see qualified).
 * 5: the schema is normalised between statements only, keeping every line of a function body or
 *    a string (see normaliseSchema).
 */
const FACTS_VERSION = 5;

/** The name under which verify facts record the sequences' positions, beside the tables. */
const SEQUENCES_FACTS = 'pg_sequences';

/** Row streams are cut into content-defined chunks of about this size (whole rows each). */
const AVERAGE_CHUNK = 64 * 1024;

/** A sequence's position, restored after the rows so new rows continue where the old ones ended. */
interface SequenceState {
  schema: string;
  name: string;
  lastValue: string;
  isCalled: boolean;
  /** `schema.table` that owns the sequence (serial/identity), if any, joined plainly (joinedName). */
  ownedBy: string | null;
  /** The same table by its schema and name (absent in backups made before it was recorded). */
  owner?: TableName | null;
}

/** What a restore needs besides the schema: kept in the manifest's engineMeta. */
interface PgMeta {
  serverVersion: string;
  sequences: SequenceState[];
  /** Materialized views that held data, refreshed after a restore, each after those it reads. */
  matviews: string[];
  /**
   * `columns`: the stream's columns, in order (absent in older backups: then the table's own order);
   * `types`: theirs, as format_type writes them with only pg_catalog on the search path (absent in
   * older backups: a table restore then cannot check them, see checkColumns).
   */
  tables: { stream: string; table: string; columns?: string[]; types?: string[] }[];
  /** Encoding, locale and properties of the database itself (absent in backups of older versions). */
  database?: DatabaseDescription;
  /**
   * Whether the database had a `public` schema, and its comment (see PublicSchema). Absent in
   * backups made before it was recorded: their restores keep template0's, as they always did.
   */
  publicSchema?: PublicSchema;
  /**
   * How the verify facts were computed: 2 = by the server (row count and MD5 sum per table, FROM
   * ONLY) with the database's properties in the fingerprint. Absent in backups of earlier
   * releases, whose facts are SHA-256 of Strata's own COPY text ({@link legacyFacts}).
   */
  factsVersion?: number;
}

/** A logical backup's `unrestorable` reason (Snapshot.unrestorable) when the database holds pg_cron. */
const PG_CRON_UNRESTORABLE =
  'it holds the extension pg_cron, which PostgreSQL creates only in the database cron.database_name names, and a restore builds under a work name first; back the cluster up physically to keep this database';

/**
 * PostgreSQL through `pg` and `pg-copy-streams`, with `pg_dump` for the schema.
 *
 * A snapshot is one REPEATABLE READ, READ ONLY transaction. Its snapshot is exported and handed to
 * pg_dump, so schema and rows are of the same moment. Each table becomes one stream of COPY text in
 * primary-key order, cut into content-defined chunks of whole rows, so a few changed rows make a
 * small incremental. Row counts and checksums are computed by the server in the same transaction,
 * from the rows themselves rather than from Strata's stream, so a value the stream lost is caught.
 *
 * A restore builds a new database next to the target and renames it into place only when it is
 * complete; the old database stays untouched until then.
 */
export class PostgresEngine extends ServerEngine {
  readonly kind = 'postgres';
  readonly capabilities: EngineCapabilities = { incrementals: true, tableRestore: true };
  readonly handRecovery = POSTGRES_HAND_RECOVERY;
  readonly display: EngineDisplay = {
    name: 'PostgreSQL',
    locator: 'url',
    schemes: ['postgres', 'postgresql'],
    example: 'postgres://user@host:5432/db',
    fileExtensions: [],
    passwordSources: 'PGPASSWORD, ~/.pgpass',
  };
  readonly nonTableFacts = [LARGE_OBJECTS_FACTS, SEQUENCES_FACTS];
  protected readonly urlRules = PG_URL_RULES;
  protected readonly identifierLimit = PG_IDENTIFIER_LIMIT;

  async snapshot(locator: string, options: SnapshotOptions): Promise<Snapshot> {
    const target = parseTarget(locator);
    const client = await connect(target, 'strata backup');
    let open = true;
    const close = async (): Promise<void> => {
      if (!open) return;
      open = false;
      await client.query('ROLLBACK').catch(() => undefined);
      await client.end().catch(() => undefined);
    };
    try {
      const serverMajor = await serverMajorOf(client);
      const pgDump = pgDumpProgram();
      const dumpMajor = await pgDumpMajor(pgDump);
      if (dumpMajor < serverMajor) {
        throw new StrataError('TOOL_MISSING', `postgres: pg_dump ${dumpMajor} cannot read a PostgreSQL ${serverMajor} server; install pg_dump ${serverMajor} or newer`);
      }
      // As pg_dump does: a row-level security policy that would hide rows from us is an error, not a smaller table.
      await client.query('SET row_security = off');
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      const exported = (await client.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
      const serverVersion = (await client.query<{ v: string }>('SHOW server_version')).rows[0]!.v;
      const database = await describeDatabase(client, pgDump, target, exported);
      const schemaSql = databaseSection(database) + (await dumpSchema(pgDump, target, exported));
      throwIfAborted(options.signal, 'snapshot');
      // Said at the backup, not first at the restore that needs it: pg_cron's CREATE EXTENSION runs
      // only in its own database, and every restore (and verify's) builds under a work name first.
      const holdsPgCron = ((await client.query("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'")).rowCount ?? 0) > 0;
      if (holdsPgCron) {
        process.emitWarning(
          `backup: ${target.database} holds the extension pg_cron, which PostgreSQL creates only in the database cron.database_name names; a restore builds a database under a work name first, so this backup cannot be restored or verified by Strata (it fails at CREATE EXTENSION pg_cron). Back the cluster up physically ("method": "physical" in strata.config.json) to keep this database`,
          { code: 'STRATA_NOT_RESTORABLE' },
        );
      }
      const tables = await loadOrder(client, await listTables(client));
      const sequences = await readSequences(client);
      const matviews = await populatedMatviews(client);
      const databaseBytes = Number((await client.query<{ size: string }>('SELECT pg_database_size(current_database()) AS size')).rows[0]!.size);
      const meta: PgMeta = {
        serverVersion,
        sequences,
        matviews,
        tables: await withColumnTypes(client, tables),
        database,
        publicSchema: await readPublicSchema(client),
        factsVersion: FACTS_VERSION,
      };
      const largeObjects = await countLargeObjects(client);

      const streams = options.schemaOnly
        ? []
        : tables.map((table) => ({
            name: streamName(table),
            chunking: { kind: 'content-defined' as const, averageSize: AVERAGE_CHUNK },
            open: (opts: Abortable = {}) =>
              (async function* () {
                await setClientEncoding(client, database.encoding);
                try {
                  for await (const chunk of copyOut(client, table, database.encoding)) {
                    throwIfAborted(opts.signal, 'snapshot');
                    yield chunk;
                  }
                } finally {
                  await setClientEncoding(client, 'UTF8').catch(() => undefined);
                }
              })(),
          }));
      if (!options.schemaOnly && largeObjects > 0) {
        streams.push({ name: LARGE_OBJECTS_STREAM, chunking: { kind: 'content-defined' as const, averageSize: AVERAGE_CHUNK }, open: () => readLargeObjects(client) });
      }
      return {
        schemaFingerprint: withDatabaseProperties(fingerprint(comparableSchema(schemaSql)), database),
        schemaObjects: { ...schemaObjects(comparableSchema(schemaSql), target.database), ...databaseSchemaObjects(database) },
        // The same transaction as the streams, so the server counts and hashes the rows they hold.
        // The sequences' positions are those the restore sets (read outside the transaction, as
        // sequences always are), so a restore that loses one is caught; a schema-only backup has none.
        tableStats: async () =>
          options.schemaOnly
            ? tables.map(emptyTableStats)
            : [...(await statsOf(client, tables)), ...(largeObjects > 0 ? [await largeObjectFacts(client)] : []), ...sequenceFacts(sequences)],
        streams,
        schemaSql,
        databaseBytes,
        engineMeta: meta as unknown as Record<string, unknown>,
        ...(holdsPgCron ? { unrestorable: PG_CRON_UNRESTORABLE } : {}),
        close,
      };
    } catch (err) {
      await close();
      throw isStrataError(err) ? err : connectionError(target, err);
    }
  }

  async inspect(locator: string, options: InspectOptions = {}): Promise<DatabaseFacts & { integrityErrors: string[]; foreignKeysChecked: boolean }> {
    const target = parseTarget(locator);
    const client = await connect(target, 'strata verify');
    try {
      // As pg_dump does: a row-level security policy that would hide rows from us is an error, not a smaller table.
      await client.query('SET row_security = off');
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      const exported = (await client.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
      const pgDump = pgDumpProgram();
      const schemaSql = await dumpSchema(pgDump, target, exported);
      const database = await describeDatabase(client, pgDump, target, exported);
      // A backup's facts leave out what its release did not copy.
      const recordedVersion = options.recordedMeta?.['factsVersion'];
      const tables = await listTables(client, { extensionConfig: typeof recordedVersion !== 'number' || recordedVersion >= 3 });
      const how: Normalisation = typeof recordedVersion === 'number' && recordedVersion < 5 ? 'lines' : 'statements';
      // PostgreSQL enforces foreign keys itself, except those added NOT VALID, whose old rows it
      // never checked. Such a constraint is no fault of the restore: pg_dump writes NOT VALID into
      // the schema, so one that differs from the backup's shows in the schema comparison.
      const unchecked = Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM pg_constraint WHERE contype = 'f' AND NOT convalidated`)).rows[0]!.n);
      // The schema says a materialized view exists, not whether it holds data: a restore that could
      // not refresh one the backup recorded as populated lacks its data, which fails verify here.
      const empty = await unpopulatedMatviews(client, options.recordedMeta?.['matviews']);
      const integrityErrors = empty.map((view) => `materialized view ${view} holds no data and the backup's did: the restore could not refresh it (its warning says why)`);
      const checks = { integrityErrors, foreignKeysChecked: unchecked === 0 };
      if (options.recordedMeta && options.recordedMeta['factsVersion'] === undefined) {
        return { ...(await legacyFacts(client, schemaSql)), schemaObjects: schemaObjects(schemaSql, target.database, 'lines'), ...checks };
      }
      return {
        schemaFingerprint: withDatabaseProperties(fingerprint(comparableSchema(schemaSql), how), database),
        schemaObjects: { ...schemaObjects(comparableSchema(schemaSql), target.database, how), ...databaseSchemaObjects(database) },
        // As in snapshot(): large objects have facts only when there are some (a backup that had some
        // and a restore that lost them all then differ by the missing pg_largeobject entry).
        // Backups made before sequences had facts record no entry for them, and so check none.
        tables: [...(await statsOf(client, tables, typeof recordedVersion === 'number' && recordedVersion < 4 ? joinedName : qualified)), ...((await countLargeObjects(client)) > 0 ? [await largeObjectFacts(client)] : []), ...sequenceFacts(await readSequences(client))],
        ...checks,
      };
    } catch (err) {
      throw isStrataError(err) ? err : connectionError(target, err);
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      await client.end().catch(() => undefined);
    }
  }

  protected async connectAdmin(server: PgTarget, purpose: string): Promise<ServerAdmin> {
    return pgAdmin(await connect(withDatabase(server, 'postgres'), `strata ${purpose}`), server);
  }

  protected tableOfStream(stream: string): string | undefined {
    if (stream === LARGE_OBJECTS_STREAM) return undefined;
    const table = parseStreamName(stream);
    if (!table) throw new StrataError('ARTIFACT_CORRUPT', `restore: a PostgreSQL backup has no stream named ${JSON.stringify(stream)}`);
    return qualified(table);
  }

  protected override backupTables(info: RestoreCommitInfo): readonly string[] {
    return backupTables(info);
  }

  /**
   * `--tables orders` means `shop.orders` when one schema has it; `shop.orders` only that one
   * (`table` is always as {@link qualified} writes it, see backupTables). A part with a dot is
   * asked for in double quotes (`"a.b".c`, `a."b.c"`), as the messages write it, or alone
   * (`b.c`, which also means schema `b`'s table `c`); asked for plainly (`a.b.c`, as facts before
   * version 4 wrote it) it means every table whose plainly joined name it is. requestedTables
   * refuses a name that means more than one table.
   */
  protected override namesTable(requested: string, table: string): boolean {
    if (requested === table) return true;
    const parts = splitQualified(table);
    if (!parts) return false;
    if (requested === parts.name || requested === namePart(parts.name)) return true;
    const asked = splitQualified(requested);
    if (asked) return asked.schema === parts.schema && asked.name === parts.name;
    return requested === joinedName(parts);
  }

  /**
   * `--tables` naming a partitioned table means the partitions that hold its rows, every level
   * down (it has none of its own, and no stream). Restoring them all also resets the sequence of
   * its identity column (wholePartitionedTables), as a restore of the table would.
   */
  protected override tablesNamedBy(requested: readonly string[], schemaSql: string): readonly string[] {
    const tree = partitionTree(schemaSql);
    if (tree.partitions.size === 0) return requested;
    return requested.flatMap((name) => {
      const parents = [...tree.partitions.keys()].filter((parent) => this.namesTable(name, parent));
      if (parents.length === 0) return [name];
      const alike = [...tree.tables].filter((table) => this.namesTable(name, table) && !tree.partitions.has(table));
      if (parents.length > 1 || alike.length > 0) {
        throw new StrataError('USAGE', redactable`restore: ${named(name, 'table')} is ambiguous (${named([...parents, ...alike].sort(), 'table')}); name one of them as written here`);
      }
      const leaves = leafPartitions(parents[0]!, tree);
      if (leaves.length === 0) throw new StrataError('TABLE_NOT_FOUND', redactable`restore: the partitioned table ${named(parents[0]!, 'table')} has no partition in the backup that holds rows`, { details: { table: name } });
      return leaves;
    });
  }

  protected beginDatabaseRestore(target: PgTarget, exists: boolean, names: RestoreWorkNames, options: EngineRestoreOptions): Promise<RestoreSession> {
    return beginDatabaseRestore(target, exists, names, options, this.tableFilter(options));
  }

  protected replaceTables(target: PgTarget, tables: readonly string[], spooled: SpooledTables, info: RestoreCommitInfo, _work: RestoreWorkNames, options: ReplaceTablesOptions = {}): Promise<void> {
    return replaceTables(target, tables, spooled, info, options.signal, options.lockWaitSeconds ?? DEFAULT_TABLE_LOCK_WAIT_SECONDS);
  }
}


/**
 * The tables in the order their streams are stored, which is the order a restore loads them: as
 * listed, except that an extension's configuration tables come after those their foreign keys
 * refer to (pg_partman's part_config_sub after part_config). CREATE EXTENSION makes their keys
 * before any row is loaded; every other table gets its keys after its rows.
 */
async function loadOrder(client: pg.Client, tables: PgTable[]): Promise<PgTable[]> {
  const configuration = new Set(tables.filter((t) => t.extensionRows !== undefined).map(tableKey));
  if (configuration.size < 2) return tables;
  const edges = (await foreignKeys(client))
    .map((k) => ({ child: tableKey(k.child), parent: tableKey(k.parent) }))
    .filter((e) => e.child !== e.parent && configuration.has(e.child) && configuration.has(e.parent));
  const byKey = new Map(tables.map((t) => [tableKey(t), t]));
  return parentsFirst([...byKey.keys()], edges).map((key) => byKey.get(key)!);
}

/** The table (`schema`, `name`) that owns the sequence whose oid `sequence` is: a serial's or an identity column's. */
function sequenceOwnerSql(sequence: string): string {
  return `SELECT tn.nspname AS schema, t.relname AS name FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
    WHERE d.classid = 'pg_class'::regclass AND d.objid = ${sequence} AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1`;
}

async function readSequences(client: pg.Client): Promise<SequenceState[]> {
  const seqs = (await client.query<{ schema: string; name: string; owner_schema: string | null; owner_name: string | null }>(`
    SELECT n.nspname AS schema, c.relname AS name, owner.schema AS owner_schema, owner.name AS owner_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN LATERAL (${sequenceOwnerSql('c.oid')}) owner ON true
    WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      -- Another session's temporary sequences are its own (and reading one fails), as its temporary tables are.
      AND c.relpersistence <> 't'
      -- An extension's sequences are its own, except those it marked as configuration (pg_cron's
      -- job ids): as pg_dump does, their position is the user's, or restored jobs' ids come again.
      AND (NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
        OR EXISTS (SELECT 1 FROM pg_extension e WHERE e.oid >= 16384 AND c.oid = ANY (e.extconfig)))
    ORDER BY 1, 2`)).rows;
  const out: SequenceState[] = [];
  for (const s of seqs) {
    const state = (await client.query<{ last_value: string; is_called: boolean }>(`SELECT last_value::text, is_called FROM ${ident(s.schema)}.${ident(s.name)}`)).rows[0]!;
    const owner = s.owner_schema !== null && s.owner_name !== null ? { schema: s.owner_schema, name: s.owner_name } : null;
    out.push({ schema: s.schema, name: s.name, lastValue: state.last_value, isCalled: state.is_called, ownedBy: owner && joinedName(owner), owner });
  }
  return out;
}

/**
 * The sequences' positions as one facts entry: their count, and a SHA-256 over each one's name,
 * value and whether that value was handed out. None when the database has no sequence, as for
 * large objects: a restore that lost every sequence then lacks the entry the backup recorded.
 */
function sequenceFacts(sequences: readonly SequenceState[]): TableStats[] {
  if (sequences.length === 0) return [];
  const lines = sequences.map((s) => JSON.stringify([s.schema, s.name, s.lastValue, s.isCalled])).sort();
  return [{ name: SEQUENCES_FACTS, rows: sequences.length, checksum: createHash('sha256').update(lines.join('\n')).digest('hex') }];
}

async function existingRoles(client: pg.Client): Promise<Set<string>> {
  return new Set((await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname));
}

/** Waits for 'drain' or 'error', removing both listeners afterwards (no listener pile-up). */
function drained(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      stream.off('error', onError);
      resolve();
    };
    const onError = (err: Error): void => {
      stream.off('drain', onDrain);
      reject(err);
    };
    stream.once('drain', onDrain);
    stream.once('error', onError);
  });
}

/**
 * A sink that COPYs rows into a table; `end()` resolves when the server has them all. The COPY
 * starts at the first write, not when the sink is made: the core may ask for every table's sink
 * before it writes any, and one connection runs one COPY at a time. `streamColumns` are the
 * stream's columns as the backup recorded them; without them, the table's own order is assumed.
 */
function copyIntoTable(client: pg.Client, schema: string, table: string, target: PgTarget, encoding: string, streamColumns?: readonly string[]): StreamSink {
  let stream: ReturnType<typeof copyFrom> | undefined;
  let failure: Error | undefined;
  const start = async (): Promise<ReturnType<typeof copyFrom>> => {
    if (stream) return stream;
    const quote = (name: string): string => identInEncoding(name, encoding);
    const columns = streamColumns?.map(quote) ?? (await client.query<{ name: string }>(
      `SELECT a.attname::text AS name FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum`,
      [schema, table],
    )).rows.map((r) => quote(r.name));
    if (columns.length === 0 && (await client.query('SELECT to_regclass($1) AS t', [`${ident(schema)}.${ident(table)}`])).rows[0].t === null) {
      throw new StrataError('ARTIFACT_CORRUPT', redactable`restore: the backup's schema does not create table ${named(`${schema}.${table}`, 'table')}`);
    }
    // A table without columns takes no column list (its rows are empty lines).
    const list = columns.length > 0 ? ` (${columns.join(', ')})` : '';
    await setClientEncoding(client, encoding);
    stream = client.query((await copyStreams()).from(`COPY ${quote(schema)}.${quote(table)}${list} FROM STDIN`));
    stream.on('error', (err: Error) => (failure = restoreFailed(target, redactable`the rows of table ${named(`${schema}.${table}`, 'table')}`, err)));
    return stream;
  };
  return {
    kind: 'sink',
    write: async (chunk) => {
      const s = await start();
      if (failure) throw failure;
      if (!s.write(chunk)) await drained(s).catch((err: unknown) => Promise.reject(failure ?? err));
      if (failure) throw failure;
    },
    end: async () => {
      const s = await start();
      if (failure) throw failure;
      s.end();
      // once() rejects on 'error' too, with the server's raw error: report ours, which names the table.
      await once(s, 'finish').catch((err: unknown) => Promise.reject(failure ?? err));
      await setClientEncoding(client, 'UTF8');
    },
  };
}

/** Restores into a new database, then renames it over the target. */
async function beginDatabaseRestore(target: PgTarget, exists: boolean, names: RestoreWorkNames, options: EngineRestoreOptions, wanted: TableFilter | undefined): Promise<RestoreSession> {
  const admin = await connect(withDatabase(target, 'postgres'), 'strata restore');
  if (exists) {
    await refuseEnabledSubscriptions(admin, target.database).catch(async (err: unknown) => {
      await admin.end().catch(() => undefined);
      throw err;
    });
  }
  const workDatabase = new WorkDatabase(names, (name) => dropDatabase(admin, target, name));
  const { name: workName, aside } = workDatabase;
  let work: pg.Client | undefined;
  // A second connection to the work database: rows load on both at once (rowsInTurns), then the
  // indexes and constraints are built on both.
  let second: pg.Client | undefined;
  const endSecond = async (): Promise<void> => {
    await second?.end().catch(() => undefined);
    second = undefined;
  };
  const endWork = async (): Promise<void> => {
    await endSecond();
    await work?.end().catch(() => undefined);
    work = undefined;
  };
  let post = '';
  // Rows of plain inheritance children wait in files for the column order the backup recorded:
  // pg_dump recreates a child with its parent's columns first, whatever order the source had.
  const children: { table: TableName; file: string }[] = [];
  // The tables whose rows were kept (with --tables), to hold against those chosen at commit.
  const loaded = new Set<string>();
  const removeChildFiles = (): Promise<unknown> => Promise.all(children.map((c) => fs.rm(c.file, { force: true })));
  // Backups from before database properties were recorded hold UTF-8 rows and were restored as UTF-8.
  let copyEncoding = 'UTF8';
  let largeObjects: ReturnType<typeof largeObjectsSink> | undefined;
  const session: RestoreSession = {
    prepare: async (schemaSql) => {
      wanted?.prepare(schemaSql);
      const recorded = recordedCreate(schemaSql);
      copyEncoding = recorded?.encoding ?? 'UTF8';
      const parts = splitSchema(schemaSql);
      const tablespaces = new Set((await admin.query<{ name: string }>('SELECT spcname AS name FROM pg_tablespace')).rows.map((r) => r.name));
      const missing = missingTablespaces(recorded?.create, [parts.pre, parts.post], tablespaces);
      reportTablespacesMissing(missing);
      const create = recorded ? createWithoutTablespace(renameDatabase(recorded.create, DATABASE_PLACEHOLDER, ident(workName)), missing) : `CREATE DATABASE ${ident(workName)} TEMPLATE template0 ENCODING 'UTF8'`;
      try {
        await admin.query(create);
      } catch (err) {
        throw restoreFailed(target, redactable`to create the database as the source was (${withheld(create, 'SQL')})`, err);
      }
      workDatabase.created();
      work = await connect(withDatabase(target, workName), 'strata restore');
      second = await connect(withDatabase(target, workName), 'strata restore');
      post = withoutTablespaces(parts.post, missing);
      const roles = await existingRoles(work);
      const pre = executableSchema(withoutTablespaces(parts.pre, missing), roles);
      reportSkipped(pre.skipped);
      await applySchema(work, pre.sql, target);
      await reportDefinersWithoutOwner(work, pre.skipped);
      await applyScriptHeader(second, pre.sql, target);
    },
    streamTarget: async (name) => {
      if (name === LARGE_OBJECTS_STREAM && work) {
        if (wanted) return discardSink;
        largeObjects = largeObjectsSink(work, await existingRoles(work), (what, err) => restoreFailed(target, what, err));
        return largeObjects;
      }
      const table = parseStreamName(name);
      if (!table) throw new StrataError('ARTIFACT_CORRUPT', `restore: a PostgreSQL backup has no stream named ${JSON.stringify(name)}`);
      if (!work) throw new StrataError('INTERNAL', 'restore: rows arrived before the schema');
      if (wanted && !wanted.wants(qualified(table))) return discardSink;
      loaded.add(qualified(table));
      if (await isInheritanceChild(work, table)) {
        await fs.mkdir(options.tempDir, { recursive: true });
        const file = path.join(options.tempDir, `rows-${randomBytes(6).toString('hex')}.copy`);
        children.push({ table, file });
        return { kind: 'file', path: file };
      }
      const lanes = [work, ...(second ? [second] : [])].map((client) => copyIntoTable(client, table.schema, table.name, target, copyEncoding));
      return rowsInTurns(lanes);
    },
    commit: async (info: RestoreCommitInfo) => {
      try {
        if (!work) throw new StrataError('INTERNAL', 'restore: commit before the schema was applied');
        if (wanted) {
          // A table chosen here whose rows were passed over would stay empty: the two matchings of --tables disagreed.
          const passedOver = wanted.check(backupTables(info)).filter((table) => !loaded.has(table));
          if (passedOver.length > 0) throw new StrataError('INTERNAL', redactable`restore: the rows of ${named(passedOver, 'table')} were not loaded; nothing was restored`);
        }
        const meta = info.engineMeta as unknown as PgMeta;
        // Before the post-data script, whose event triggers would fire on it.
        if (meta.publicSchema) await matchPublicSchema(work, target, meta.publicSchema);
        await loadFiles(work, target, children, meta);
        await removeChildFiles();
        const roles = await existingRoles(work);
        const postData = executableSchema(post, roles);
        reportSkipped(postData.skipped);
        // The indexes and constraints are built two at a time, on the second connection too. It
        // is closed before the rename, which no other session of the database may see.
        try {
          await applySchema(work, postData.sql, target, second ? [second] : []);
        } finally {
          await endSecond();
        }
        // No event trigger of the restored database may fire on the restore's own statements
        // (the REFRESHes below); what runs after them is outside this database (ALTER DATABASE,
        // the rename, from the postgres database), where its event triggers never fire.
        const eventTriggers = await switchOffEventTriggers(work);
        await restoreSequences(work, meta.sequences ?? []);
        // A view whose REFRESH fails stays without data, said in a warning and failed by verify (see refreshMatviews).
        const unrefreshed = await refreshMatviews(work, await refreshOrder(work, meta.matviews ?? []));
        await switchOnEventTriggers(work, eventTriggers);
        reportUnrefreshedMatviews(unrefreshed);
        reportSkipped(largeObjects?.skipped() ?? []);
        await reportSubscriptions(work);
        await work.end();
        work = undefined;
        // Last, so settings such as default_transaction_read_only cannot get in the restore's way.
        if (meta.database) reportSkipped(await applyDatabaseProperties(admin, workName, meta.database.properties, roles).catch((err) => Promise.reject(restoreFailed(target, 'the database properties', err))));
        if (exists) {
          const sessions = Number((await admin.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1', [target.database])).rows[0]!.n);
          if (sessions > 0) {
            throw new StrataError('DATABASE_LOCKED', `restore: ${sessions} session(s) are connected to ${target.database}; close them (stop the application) and run the restore again`);
          }
          await admin.query(`ALTER DATABASE ${ident(target.database)} RENAME TO ${ident(aside)}`);
          try {
            await admin.query(`ALTER DATABASE ${ident(workName)} RENAME TO ${ident(target.database)}`);
          } catch (err) {
            try {
              await admin.query(`ALTER DATABASE ${ident(aside)} RENAME TO ${ident(target.database)}`);
            } catch (backErr) {
              // The work database stays too: while it exists, a later sweep knows the swap never
              // happened and keeps the aside database, which is the user's.
              workDatabase.keep();
              throw new StrataError(
                'RESTORE_FAILED',
                `restore: renaming the restored database into place failed (${(err as Error).message}), and so did renaming the old one back (${(backErr as Error).message}): ${target.database} is now named ${aside}; rename it back with ALTER DATABASE`,
                { cause: err, details: { parkedIn: aside } },
              );
            }
            throw err;
          }
          workDatabase.keep();
          await dropDatabase(admin, target, aside);
        } else {
          await admin.query(`ALTER DATABASE ${ident(workName)} RENAME TO ${ident(target.database)}`);
          workDatabase.keep();
        }
      } catch (err) {
        await endWork();
        await removeChildFiles();
        throw restoreFailed(target, 'the last steps of the restore (sequences, materialized views, the swap)', err);
      }
    },
    abort: async () => {
      await endWork();
      await removeChildFiles();
    },
  };
  return workDatabaseSession(workDatabase, session, () => admin.end().catch(() => undefined));
}

/** Whether a table of the restored schema inherits from another without being a partition. */
async function isInheritanceChild(client: pg.Client, table: { schema: string; name: string }): Promise<boolean> {
  const result = await client.query<{ child: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhrelid = to_regclass($1) AND NOT c.relispartition) AS child`,
    [`${ident(table.schema)}.${ident(table.name)}`],
  );
  return result.rows[0]!.child;
}

/** The columns of a table's stream as the backup recorded them (undefined for older backups). */
function streamColumnsOf(meta: PgMeta, table: TableName): readonly string[] | undefined {
  const stream = streamName(table);
  return meta.tables?.find((t) => t.stream === stream)?.columns;
}

/** COPYs spooled row files into their tables, in this order and the recorded column order (no file: no rows). */
async function loadFiles(client: pg.Client, target: PgTarget, spooled: readonly { table: TableName; file: string | undefined }[], meta: PgMeta): Promise<void> {
  for (const { table, file } of spooled) {
    const sink = copyIntoTable(client, table.schema, table.name, target, meta.database?.encoding ?? 'UTF8', streamColumnsOf(meta, table));
    if (file) for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) await sink.write(chunk as Buffer);
    await sink.end();
  }
}

/**
 * The partitioned tables all of whose partitions are among `tables`, at every level. Their rows
 * are all restored, so their own sequences go back with them: an identity or serial column of a
 * partitioned table is shared by every partition under it, and one a level down can have its own
 * (a partitioned table with a serial column, attached to another), which inserts into it directly
 * use. Otherwise the next insert took a value the restored rows already held. With one partition
 * under it left out, whose rows may be newer than the backup, a table's sequence stays where it is.
 */
async function wholePartitionedTables(client: pg.Client, tables: readonly TableName[]): Promise<TableName[]> {
  if (tables.length === 0) return [];
  const rows = (await client.query<{ schema: string; name: string; leaves: [string, string][] }>(
    `SELECT pn.nspname AS schema, p.relname AS name, json_agg(json_build_array(ln.nspname, l.relname)) AS leaves
       FROM (SELECT DISTINCT a.relid AS parent FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               CROSS JOIN LATERAL pg_partition_ancestors(c.oid) a
               WHERE c.relispartition AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))) parents
       JOIN pg_class p ON p.oid = parents.parent AND p.relkind = 'p' JOIN pg_namespace pn ON pn.oid = p.relnamespace
       CROSS JOIN LATERAL pg_partition_tree(parents.parent) t
       JOIN pg_class l ON l.oid = t.relid JOIN pg_namespace ln ON ln.oid = l.relnamespace
      WHERE t.isleaf
      GROUP BY p.oid, pn.nspname, p.relname`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  )).rows;
  const restored = new Set(tables.map(tableKey));
  return rows.filter((r) => r.leaves.every(([schema, name]) => restored.has(tableKey({ schema, name })))).map((r) => ({ schema: r.schema, name: r.name }));
}

/**
 * Sets the sequences to the backup's positions: all, or those `only` of these tables own. A
 * sequence they own that a table left as it is also takes its defaults from (`DEFAULT
 * nextval('orders_id_seq')` in another table) goes back no further than where it is: going back
 * would hand that table's next rows ids it already holds. Returns what to say about those.
 */
async function restoreSequences(client: pg.Client, sequences: readonly SequenceState[], only?: readonly TableName[]): Promise<string[]> {
  const keys = new Set(only?.map(tableKey));
  const notes: string[] = [];
  for (const s of sequences) {
    const sequence = `${ident(s.schema)}.${ident(s.name)}`;
    if (only) {
      const owner = s.owner !== undefined ? s.owner : await ownerInTarget(client, s);
      if (!owner || !keys.has(tableKey(owner))) continue;
      const sharing = (await client.query<TableName>(
        `SELECT DISTINCT n.nspname AS schema, c.relname AS name FROM pg_depend d
           JOIN pg_attrdef a ON a.oid = d.objid JOIN pg_class c ON c.oid = a.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = to_regclass($1)
          ORDER BY 1, 2`,
        [sequence],
      )).rows.filter((t) => !keys.has(tableKey(t)));
      if (sharing.length > 0) {
        // Compared by the value each would hand out next, in the sequence's direction.
        const { ahead } = (await client.query<{ ahead: boolean }>(
          // In numeric: a sequence at bigint's end plus its increment is past it.
          `SELECT sign(p.seqincrement) * ((CASE WHEN s.is_called THEN s.last_value::numeric + p.seqincrement ELSE s.last_value END)
                 - (CASE WHEN $2::boolean THEN $1::numeric + p.seqincrement ELSE $1::numeric END)) > 0 AS ahead
             FROM ${sequence} s, pg_sequence p WHERE p.seqrelid = to_regclass($3)`,
          [s.lastValue, s.isCalled, sequence],
        )).rows[0]!;
        const users = sharing.map(qualified).join(', ');
        if (ahead) {
          notes.push(`sequence ${qualified(s)} is also used by ${users}, which the restore leaves as it is: it stays where it is rather than going back to the backup's position, so those tables' next ids do not come again`);
          continue;
        }
      }
    }
    await client.query(`SELECT pg_catalog.setval(${literal(sequence)}, ${s.lastValue}, ${s.isCalled})`);
  }
  return notes;
}

/**
 * The table that owns a sequence of a backup made before `owner` was recorded: its `ownedBy`
 * joins the names plainly, which two tables can share (`"a.b".c`, `a."b.c"`), so the target's
 * catalog says which one it is, if that one's plain join is the recorded one.
 */
async function ownerInTarget(client: pg.Client, sequence: SequenceState): Promise<TableName | null> {
  if (sequence.ownedBy === null) return null;
  const row = (await client.query<{ schema: string; name: string }>(sequenceOwnerSql('to_regclass($1)'), [`${ident(sequence.schema)}.${ident(sequence.name)}`])).rows[0];
  return row && joinedName(row) === sequence.ownedBy ? row : null;
}

/** A table by its schema and its name: `a.b.c` alone cannot tell whether the schema is `a` or `a.b`. */
interface TableName {
  schema: string;
  name: string;
}

/** The backup's tables by their names as {@link qualified} writes them, each split as its stream name records it. */
function recordedTables(meta: PgMeta): Map<string, TableName> {
  const out = new Map<string, TableName>();
  for (const t of meta.tables ?? []) {
    const table = parseStreamName(t.stream);
    if (table) out.set(qualified(table), table);
  }
  return out;
}

/**
 * The backup's tables as {@link qualified} names them, whatever naming its facts used: facts
 * before version 4 joined names plainly (two tables could share one), and each recorded table's
 * stream says its schema and name. Tables without a stream keep the name the facts gave them.
 */
function backupTables(info: RestoreCommitInfo): string[] {
  const meta = info.engineMeta as unknown as PgMeta;
  const byRecordedName = new Map<string, string[]>();
  for (const t of meta.tables ?? []) {
    const table = parseStreamName(t.stream);
    if (table) byRecordedName.set(t.table, [...(byRecordedName.get(t.table) ?? []), qualified(table)]);
  }
  return [...new Set(info.tables.flatMap((name) => byRecordedName.get(name) ?? [name]))];
}

/** A key that tells any two tables apart, also when their `schema.table` texts are the same. */
const tableKey = streamName;

/** What a trigger's `tgenabled` or a rule's `ev_enabled` mode is restored with; `D` (disabled) ones are left as they are. */
const SWITCH_ENABLE: Readonly<Record<string, string>> = { O: 'ENABLE', R: 'ENABLE REPLICA', A: 'ENABLE ALWAYS' };

/**
 * Replaces the rows of some tables of an existing database in one transaction, loading parents
 * before children from the rows the shared scaffolding spooled (the backup delivers tables in
 * name order).
 *
 * The rows must end up as the backup has them, and nothing outside the chosen tables may change.
 * So a table outside the set whose foreign key refers to one inside is refused before anything
 * changes (its ON DELETE action would empty or change it, or the DELETE would fail), and the
 * chosen tables' own triggers are switched off while their rows are replaced (a trigger could
 * rewrite the restored rows or write elsewhere), and so are their rules on DELETE (a DO INSTEAD rule
 * would keep the old rows, a DO ALSO rule write elsewhere; COPY runs no rules), then switched back
 * on in the mode each had. The foreign keys' internal triggers stay on, so rows without their
 * parents are still refused.
 */
async function replaceTables(target: PgTarget, chosen: readonly string[], files: ReadonlyMap<string, string>, info: RestoreCommitInfo, signal: AbortSignal | undefined, lockWaitSeconds: number): Promise<void> {
  const meta = info.engineMeta as unknown as PgMeta;
  const recorded = recordedTables(meta);
  const client = await connect(target, 'strata restore');
  // A statement waiting on the server notices nothing of an interruption: another connection cancels it, and the transaction rolls back.
  const backendPid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  let cancelling: Promise<unknown> | undefined;
  const cancel = (): void => {
    cancelling = (async () => {
      const other = await connect(target, 'strata restore (cancel)');
      try {
        await other.query('SELECT pg_cancel_backend($1)', [backendPid]);
      } finally {
        await other.end().catch(() => undefined);
      }
    })().catch(() => undefined);
  };
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    throwIfAborted(signal, 'restore');
    const inTarget = new Map((await listTables(client)).map((t) => [tableKey(t), t]));
    const present = new Set(inTarget.keys());
    const tables = chosen.map((q) => {
      const table = recorded.get(q);
      if (!table || !present.has(tableKey(table))) {
        throw new StrataError('TABLE_NOT_FOUND', redactable`restore: the target database has no table ${named(q, 'table')}; restore the whole backup, or create the table first`);
      }
      return table;
    });
    await client.query('BEGIN');
    try {
      // The lock waits for every open transaction that wrote to these tables: bounded, so a
      // session left idle in a transaction makes the restore fail and say so, not hang.
      await client.query(`SET LOCAL lock_timeout = '${checkLockWait(lockWaitSeconds)}s'`);
      // Held to the end: no foreign key to these tables can be added, and no trigger of theirs
      // changed, between the checks below and the commit.
      await client.query(`LOCK TABLE ONLY ${tables.map((t) => `${ident(t.schema)}.${ident(t.name)}`).join(', ')} IN SHARE ROW EXCLUSIVE MODE`);
      const edges = await foreignKeys(client);
      refuseReferencesFromOutside(tables, edges, recorded);
      await refuseChangedPartitions(client, tables, info.schemaSql);
      const added = await checkColumns(client, tables, meta);
      const byKey = new Map(tables.map((t) => [tableKey(t), t]));
      const order = parentsFirst([...byKey.keys()], edges.map((e) => ({ child: tableKey(e.child), parent: tableKey(e.parent) }))).map((key) => byKey.get(key)!);
      const switches = await enabledTriggersAndRules(client, tables);
      await flipSwitches(client, target, switches, () => 'DISABLE');
      for (const t of [...order].reverse()) {
        // ONLY: an inheritance parent's DELETE would also empty its children, which are not restored.
        // Of an extension's configuration table only the rows its condition gives the user are
        // replaced; the rest are the extension's own, and the backup does not hold them.
        await client.query(`DELETE FROM ONLY ${ident(t.schema)}.${ident(t.name)} ${inTarget.get(tableKey(t))?.extensionRows ?? ''}`);
      }
      const streams = new Set((meta.tables ?? []).map((t) => t.stream));
      const spooled = order.map((t) => {
        const file = files.get(qualified(t));
        // Rows delivered and not kept would leave the table empty: the two matchings of --tables disagreed.
        if (!file && streams.has(streamName(t))) throw new StrataError('INTERNAL', redactable`restore: the rows of table ${named(qualified(t), 'table')} were not kept for the replacement; nothing was changed`);
        return { table: t, file };
      });
      await loadFiles(client, target, spooled, meta);
      // Check deferred foreign keys now: setval() is not transactional, so sequences move
      // only once nothing can fail any more. The server also refuses to change a trigger of a
      // table with checks still pending.
      await client.query('SET CONSTRAINTS ALL IMMEDIATE');
      await flipSwitches(client, target, switches, (t) => SWITCH_ENABLE[t.mode]!);
      const sequenceNotes = await restoreSequences(client, meta.sequences ?? [], [...tables, ...(await wholePartitionedTables(client, tables))]);
      await client.query('COMMIT');
      for (const note of sequenceNotes) process.emitWarning(`restore: ${note}`, { code: 'STRATA_SEQUENCE_SHARED' });
      if (added.length > 0) {
        process.emitWarning(`restore: ${added.join(', ')} ${added.length === 1 ? 'is' : 'are'} not in the backup (added since): the restored rows have ${added.length === 1 ? "that column's" : "those columns'"} default`, { code: 'STRATA_COLUMNS_ADDED' });
      }
    } catch (err) {
      // Also switches the triggers and rules back: ALTER TABLE is part of the transaction.
      await client.query('ROLLBACK').catch(() => undefined);
      const e = (isStrataError(err) && err.cause ? err.cause : err) as { code?: string; table?: string; detail?: string };
      if (signal?.aborted) {
        throw new StrataError('ABORTED', redactable`restore: interrupted; the rows of ${named(chosen, 'table')} were not changed`, { cause: signal.reason });
      }
      if (e.code === '55P03') {
        const holders = await sessionsLocking(client, chosen.map((q) => recorded.get(q)).filter((t): t is TableName => t !== undefined)).catch(() => []);
        throw new StrataError(
          'DATABASE_LOCKED',
          redactable`restore: other sessions kept ${named(chosen, 'table')} locked for ${lockWaitSeconds} s (${withheld(holders.length > 0 ? holders.join('; ') : 'sessions that ended meanwhile', 'sessions')}); an open transaction that wrote to them holds them until it ends. End it, then run the restore again; nothing was changed`,
          { cause: err },
        );
      }
      if (e.code === '23503') {
        throw new StrataError('USAGE', redactable`restore: replacing ${named(chosen, 'table')} would break a foreign key (${withheld(e.detail ?? (err as Error).message, 'server message 23503')}); include the related tables in --tables`, { cause: err });
      }
      throw err;
    }
  } catch (err) {
    throw restoreFailed(target, 'the table restore', err);
  } finally {
    signal?.removeEventListener('abort', cancel);
    await cancelling;
    await client.end().catch(() => undefined);
  }
}

/** The sessions holding locks on `tables`: pid, state and application, for the message that says why the restore gave up. */
async function sessionsLocking(client: pg.Client, tables: readonly TableName[]): Promise<string[]> {
  const rows = (await client.query<{ pid: number; state: string | null; application: string | null; since: string | null }>(
    `SELECT DISTINCT a.pid, a.state, a.application_name AS application, a.xact_start::text AS since
     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN unnest($1::text[], $2::text[]) AS chosen(schema, name) ON chosen.schema = n.nspname AND chosen.name = c.relname
     WHERE l.pid <> pg_backend_pid() ORDER BY a.pid`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  )).rows;
  return rows.map((r) => `pid ${r.pid}${r.application ? ` (${r.application})` : ''}${r.state ? `, ${r.state}` : ''}${r.since ? ` since ${r.since}` : ''}`);
}

/**
 * Refuses (USAGE) when a table outside `tables` has a foreign key to one of them, whatever its ON
 * DELETE action: CASCADE would empty it, SET NULL and SET DEFAULT would change it, NO ACTION and
 * RESTRICT would make the DELETE fail. The message names every table to add, including those that
 * refer to an added one in turn.
 */
function refuseReferencesFromOutside(tables: readonly TableName[], edges: readonly ForeignKey[], recorded: ReadonlyMap<string, TableName>): void {
  const inside = new Set(tables.map(tableKey));
  const added: TableName[] = [];
  const crossing: string[] = [];
  for (let grew = true; grew; ) {
    grew = false;
    for (const e of edges) {
      if (!inside.has(tableKey(e.parent)) || inside.has(tableKey(e.child))) continue;
      inside.add(tableKey(e.child));
      added.push(e.child);
      crossing.push(`${qualified(e.child)} → ${qualified(e.parent)} (${e.constraint})`);
      grew = true;
    }
  }
  if (added.length === 0) return;
  // By key: an older backup names a dotted table as joinedName does, not as qualified does.
  const inBackup = new Set([...recorded.values()].map(tableKey));
  const notInBackup = added.filter((t) => !inBackup.has(tableKey(t))).map(qualified);
  const remedy =
    notInBackup.length > 0
      ? redactable`the backup has no rows for ${named(notInBackup, 'table')}; restore the whole backup instead`
      : redactable`include the related tables in --tables: --tables ${named(tableListArgument([...tables, ...added].map(qualified)), 'table list')}`;
  throw new StrataError(
    'USAGE',
    redactable`restore: replacing the rows of ${named(tables.map(qualified), 'table')} would delete, change or orphan rows of ${named(added.map(qualified), 'table')}, whose foreign keys refer to them (${named(crossing, 'foreign key')}); nothing was changed; ${remedy}`,
  );
}

/**
 * The types of the tables' stream columns, as format_type writes them with only pg_catalog on the
 * search path, so that they read the same in any session (a type of another schema then comes with
 * its schema's name, whatever search_path the database or role sets).
 */
async function columnTypes(client: pg.Client, tables: readonly TableName[]): Promise<Map<string, Map<string, string>>> {
  const out = new Map<string, Map<string, string>>();
  if (tables.length === 0) return out;
  const previous = (await client.query<{ path: string }>("SELECT current_setting('search_path') AS path")).rows[0]!.path;
  await client.query("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)");
  try {
    const rows = (await client.query<{ schema: string; name: string; column: string; type: string }>(
      `SELECT n.nspname AS schema, c.relname AS name, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [tables.map((t) => t.schema), tables.map((t) => t.name)],
    )).rows;
    for (const row of rows) {
      const key = tableKey(row);
      if (!out.has(key)) out.set(key, new Map());
      out.get(key)!.set(row.column, row.type);
    }
  } finally {
    // After a failed query the transaction is aborted and this fails too: the query's error is the one to see.
    await client.query("SELECT pg_catalog.set_config('search_path', $1, true)", [previous]).catch(() => undefined);
  }
  return out;
}

/** engineMeta.tables of a backup: each table's stream, name, columns and their types. */
async function withColumnTypes(client: pg.Client, tables: readonly PgTable[]): Promise<PgMeta['tables']> {
  const types = await columnTypes(client, tables);
  return tables.map((t) => ({ stream: streamName(t), table: qualified(t), columns: [...t.columns], types: t.columns.map((c) => types.get(tableKey(t))?.get(c) ?? '') }));
}

/**
 * A table restore loads the backup's rows into the target's own tables, by column name. A column
 * whose type is another since the backup (numeric(12,1) for numeric(12,4), real for double
 * precision, timestamp(0) for timestamp(6)) would take the values converted, rounded without a
 * word, and one the target no longer has (dropped or renamed) would fail the load: both are
 * refused before anything changes. Backups made before the types were recorded are not checked.
 * Returns the target's columns the backup lacks (added since): the restored rows get their
 * defaults there, which the restore says once it is done.
 */
async function checkColumns(client: pg.Client, tables: readonly TableName[], meta: PgMeta): Promise<string[]> {
  const inTarget = await columnTypes(client, tables);
  const differing: string[] = [];
  const missing: string[] = [];
  const added: string[] = [];
  for (const table of tables) {
    const recorded = meta.tables?.find((t) => t.stream === streamName(table));
    if (!recorded?.columns) continue;
    const theirs = inTarget.get(tableKey(table)) ?? new Map<string, string>();
    const column = (name: string): string => `${qualified(table)}.${namePart(name)}`;
    recorded.columns.forEach((name, i) => {
      const type = theirs.get(name);
      const ours = recorded.types?.[i];
      if (type === undefined) missing.push(column(name));
      else if (ours && type !== ours) differing.push(`${column(name)} ${type} (the backup's ${ours})`);
    });
    for (const name of theirs.keys()) if (!recorded.columns.includes(name)) added.push(column(name));
  }
  if (missing.length > 0) {
    throw new StrataError(
      'USAGE',
      redactable`restore: the target's tables lack columns the backup has: ${named(missing, 'column')} (dropped or renamed since the backup), so their values would have nowhere to go. Add the columns back under those names, or restore into a new database and copy the rows across; nothing was changed`,
    );
  }
  if (differing.length > 0) {
    throw new StrataError(
      'USAGE',
      redactable`restore: the target's tables have columns of other types than the backup's: ${named(differing.join(', '), 'column')}; a table restore loads the backup's values into the target's own columns, where they would be converted (rounded or cut) without a word. Change the target's columns back to the backup's types, or restore into a new database and copy the rows across; nothing was changed`,
    );
  }
  return added;
}

/**
 * A partitioned table restored whole (every partition the backup has under it is chosen, as
 * naming the table does) must have the same partitions in the target, and none besides them that
 * holds rows: a partition detached since would take the backup's rows outside the table, and one
 * attached since would keep rows the backup never had, while the restore said it restored the
 * table. Refused before anything changes; partitions left out of `--tables` are the user's choice.
 */
async function refuseChangedPartitions(client: pg.Client, tables: readonly TableName[], schemaSql: string): Promise<void> {
  const tree = partitionTree(schemaSql);
  if (tree.partitions.size === 0) return;
  const chosen = new Set(tables.map(qualified));
  for (const parent of tree.partitions.keys()) {
    const expected = leafPartitions(parent, tree);
    if (expected.length === 0 || !expected.every((leaf) => chosen.has(leaf))) continue;
    const { schema, name } = splitQualified(parent)!;
    const inTarget = (await client.query<{ schema: string; name: string }>(
      `SELECT n.nspname AS schema, c.relname AS name FROM pg_partition_tree(to_regclass($1)) t
         JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        -- Plain tables only: a foreign partition's rows are on another server, and never in a backup.
        WHERE t.isleaf AND c.relkind = 'r'`,
      [`${ident(schema)}.${ident(name)}`],
    )).rows;
    const leaves = new Set(inTarget.map(qualified));
    const gone = expected.filter((leaf) => !leaves.has(leaf));
    if (gone.length > 0) {
      throw new StrataError(
        'USAGE',
        redactable`restore: in the target, ${named(gone, 'table')} ${gone.length === 1 ? 'is' : 'are'} no longer under the partitioned table ${named(parent, 'table')} (detached, or the table is gone), so the backup's rows of ${named(parent, 'table')} would not end up in it; attach ${gone.length === 1 ? 'it' : 'them'} again, or restore the whole backup; nothing was changed`,
      );
    }
    const added: string[] = [];
    for (const leaf of inTarget) {
      if (expected.includes(qualified(leaf))) continue;
      const holdsRows = (await client.query<{ rows: boolean }>(`SELECT EXISTS (SELECT FROM ONLY ${ident(leaf.schema)}.${ident(leaf.name)}) AS rows`)).rows[0]!.rows;
      if (holdsRows) added.push(qualified(leaf));
    }
    if (added.length > 0) {
      throw new StrataError(
        'USAGE',
        redactable`restore: in the target, the partitioned table ${named(parent, 'table')} has rows in ${named(added, 'table')}, which the backup does not have and the restore would leave there; empty or detach ${added.length === 1 ? 'it' : 'them'}, or restore the whole backup; nothing was changed`,
      );
    }
  }
}

/** A user trigger, or a rule on DELETE, of a chosen table that is switched on, with its mode (O, R or A). */
interface EnabledSwitch {
  kind: 'TRIGGER' | 'RULE';
  table: TableName;
  name: string;
  mode: string;
}

/**
 * The switched-on user triggers and DELETE rules of `tables`. The internal triggers that enforce
 * foreign keys are not listed, nor rules on other events: the rows go in with COPY, which runs no
 * rules.
 */
async function enabledTriggersAndRules(client: pg.Client, tables: readonly TableName[]): Promise<EnabledSwitch[]> {
  const rows = (await client.query<{ kind: 'TRIGGER' | 'RULE'; schema: string; table: string; name: string; mode: string }>(
    `WITH chosen(schema, name) AS (SELECT * FROM unnest($1::text[], $2::text[]))
     SELECT 'TRIGGER' AS kind, n.nspname AS schema, c.relname AS table, t.tgname AS name, t.tgenabled::text AS mode
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN chosen ON chosen.schema = n.nspname AND chosen.name = c.relname
     WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
     UNION ALL
     SELECT 'RULE', n.nspname, c.relname, r.rulename, r.ev_enabled::text
     FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN chosen ON chosen.schema = n.nspname AND chosen.name = c.relname
     WHERE r.ev_type = '4' AND r.ev_enabled <> 'D'
     ORDER BY 1, 2, 3, 4`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  )).rows;
  return rows.map((r) => ({ kind: r.kind, table: { schema: r.schema, name: r.table }, name: r.name, mode: r.mode }));
}

/** Runs `ALTER TABLE … <action> TRIGGER|RULE` for each; only a table's owner may, which the error says. */
async function flipSwitches(client: pg.Client, target: PgTarget, switches: readonly EnabledSwitch[], action: (s: EnabledSwitch) => string): Promise<void> {
  for (const s of switches) {
    try {
      await client.query(`ALTER TABLE ONLY ${ident(s.table.schema)}.${ident(s.table.name)} ${action(s)} ${s.kind} ${ident(s.name)}`);
    } catch (err) {
      if ((err as { code?: string }).code !== '42501') throw err;
      const what = s.kind === 'TRIGGER' ? 'trigger' : 'rule';
      throw new StrataError(
        'RESTORE_FAILED',
        redactable`restore: ${target.host}:${target.port} refused to switch off ${what} ${named(s.name, what)} of table ${named(qualified(s.table), 'table')} (only the table's owner may), and its triggers and rules must not run while the backup's rows go in; restore as the owner of the table, or restore the whole backup; nothing was changed`,
        { cause: err, details: { pgCode: '42501', host: target.host, port: target.port } },
      );
    }
  }
}

/** A foreign key between tables of the database; `child`'s rows refer to `parent`'s. */
interface ForeignKey {
  constraint: string;
  child: TableName;
  parent: TableName;
}

/**
 * The foreign keys between tables that hold rows. A key of or to a partitioned table is listed
 * through the copies the server keeps on each partition.
 */
async function foreignKeys(client: pg.Client): Promise<ForeignKey[]> {
  const rows = (await client.query<{ constraint: string; child_schema: string; child: string; parent_schema: string; parent: string }>(`
    SELECT k.conname AS constraint, cn.nspname AS child_schema, c.relname AS child, pn.nspname AS parent_schema, p.relname AS parent
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
    JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
    WHERE k.contype = 'f' AND c.relkind = 'r' AND p.relkind = 'r'
    ORDER BY 2, 3, 1`)).rows;
  return rows.map((r) => ({ constraint: r.constraint, child: { schema: r.child_schema, name: r.child }, parent: { schema: r.parent_schema, name: r.parent } }));
}
