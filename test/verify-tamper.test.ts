import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { EngineRegistry, MysqlEngine, PostgresEngine, SqliteEngine, initRepository, openRepository, readTar, tarHeaderBytes, tarPadding, tarTrailer } from '@strata/sdk';
import type { BackupRecord, Engine, Manifest, VerifyReport } from '@strata/sdk';
import { buildRichDatabase } from './helpers/databases.js';
import { useTempDir, catalogPath } from './helpers/env.js';
import { MysqlDatabases, mysqlQuery, mysqlUrl, requireMysql } from './helpers/mysql.js';
import { Databases, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';

/*
 * The validator's promise: a backup whose stored rows were altered fails `verify --level full`,
 * in the data-consistency check, naming the table, although every hash inside the artifact and
 * the catalog's artifact hash were made to match again. Each case opens a full backup's artifact
 * (an unencrypted repository: zstd over tar, docs/FORMAT.md), changes the row data, re-seals it
 * (stream and chunk hashes in the manifest and the layout, the catalog's SHA-256 and sizes) and
 * leaves the table facts the backup recorded alone.
 */

interface Entry {
  name: string;
  body: Buffer;
}

const chunkId = (bytes: Buffer): Buffer => createHash('sha256').update(bytes).digest().subarray(0, 16);

function zstd(args: string[], input: Buffer): Buffer {
  const result = spawnSync('zstd', args, { input, maxBuffer: 1024 * 1024 * 1024 });
  if (result.status !== 0) throw new Error(`zstd ${args.join(' ')} failed: ${result.stderr.toString()}`);
  return result.stdout;
}

async function readEntries(tar: Buffer): Promise<Entry[]> {
  const entries: Entry[] = [];
  for await (const entry of readTar((async function* () { yield tar; })())) {
    const parts: Buffer[] = [];
    for await (const piece of entry.body) parts.push(Buffer.from(piece));
    entries.push({ name: entry.name, body: Buffer.concat(parts) });
  }
  return entries;
}

/** A layout entry, version 1 (complete): "STLAYOUT", version, id length, count, then size + id per chunk. */
function encodeLayout(chunks: Buffer[]): Buffer {
  const head = Buffer.alloc(24);
  head.write('STLAYOUT', 0, 'latin1');
  head.writeUInt32LE(1, 8);
  head.writeUInt32LE(16, 12);
  head.writeBigUInt64LE(BigInt(chunks.length), 16);
  return Buffer.concat([head, ...chunks.flatMap((c) => {
    const size = Buffer.alloc(4);
    size.writeUInt32LE(c.length);
    return [size, chunkId(c)];
  })]);
}

/** A segment index: "STSEGIDX", version, id length, count, then position + size + id per chunk. */
function encodeSegmentIndex(chunks: Buffer[]): Buffer {
  const head = Buffer.alloc(24);
  head.write('STSEGIDX', 0, 'latin1');
  head.writeUInt32LE(1, 8);
  head.writeUInt32LE(16, 12);
  head.writeBigUInt64LE(BigInt(chunks.length), 16);
  return Buffer.concat([head, ...chunks.flatMap((c, position) => {
    const fixed = Buffer.alloc(12);
    fixed.writeBigUInt64LE(BigInt(position), 0);
    fixed.writeUInt32LE(c.length, 8);
    return [fixed, chunkId(c)];
  })]);
}

/**
 * Opens the artifact of a full backup, hands its streams (complete, by name) to `tamper`, and
 * writes the artifact back with every hash recomputed for the new bytes, except the table facts.
 */
async function tamperAndReseal(repoDir: string, record: BackupRecord, tamper: (streams: Map<string, Buffer>) => void): Promise<void> {
  const file = path.join(repoDir, record.key);
  assert.match(record.key, /\.tar\.zst$/, 'the test repository is unencrypted with zstd');
  const entries = await readEntries(zstd(['-d', '-c', '-q'], readFileSync(file)));
  const manifest = JSON.parse(entries.at(-1)!.body.toString('utf8')) as Manifest;
  const streams = new Map<string, Buffer>();
  for (const s of manifest.streams) {
    const whole = entries.find((e) => e.name === `data/${s.name}`);
    const segments = entries.filter((e) => e.name.startsWith(`chunks/${s.name}/`) && e.name.endsWith('.bin')).sort((a, b) => (a.name < b.name ? -1 : 1));
    streams.set(s.name, whole ? whole.body : Buffer.concat(segments.map((e) => e.body)));
    assert.equal(streams.get(s.name)!.length, s.size, `stream ${s.name} reassembles to its recorded size`);
  }
  tamper(streams);
  const out: Entry[] = entries.filter((e) => e.name === 'README.txt' || e.name === 'schema.sql');
  const resealed = manifest.streams.map((s) => {
    const bytes = streams.get(s.name)!;
    const chunks: Buffer[] = [];
    if (s.chunking.kind === 'fixed') for (let at = 0; at < bytes.length; at += s.chunking.size) chunks.push(bytes.subarray(at, at + s.chunking.size));
    else if (bytes.length > 0) chunks.push(bytes);
    out.push({ name: `streams/${s.name}.json`, body: Buffer.from(JSON.stringify({ name: s.name, size: s.payload === 'whole' ? bytes.length : null, chunking: s.chunking, payload: s.payload }) + '\n') });
    if (s.payload === 'whole') {
      out.push({ name: `data/${s.name}`, body: bytes });
    } else if (chunks.length > 0) {
      out.push({ name: `chunks/${s.name}/000000.idx`, body: encodeSegmentIndex(chunks) });
      out.push({ name: `chunks/${s.name}/000000.bin`, body: Buffer.concat(chunks) });
    }
    out.push({ name: s.layoutEntry, body: encodeLayout(chunks) });
    return {
      ...s,
      size: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      chunkCount: chunks.length,
      storedChunks: chunks.length,
      storedBytes: bytes.length,
    };
  });
  out.push({ name: 'manifest.json', body: Buffer.from(JSON.stringify({ ...manifest, streams: resealed }, null, 2) + '\n') });
  const tar = Buffer.concat([...out.flatMap((e) => [tarHeaderBytes({ name: e.name, size: e.body.length }), e.body, tarPadding(e.body.length)]), tarTrailer()]);
  const artifact = zstd(['-q', '-c', '-3'], tar);
  writeFileSync(file, artifact);
  const catalogFile = catalogPath(repoDir);
  const catalog = JSON.parse(readFileSync(catalogFile, 'utf8')) as { backups: Record<string, unknown>[] };
  for (const b of catalog.backups) {
    if (b['id'] !== record.id) continue;
    b['sha256'] = createHash('sha256').update(artifact).digest('hex');
    b['storedBytes'] = artifact.length;
    b['rawBytes'] = tar.length;
  }
  writeFileSync(catalogFile, JSON.stringify(catalog, null, 1) + '\n');
  // Cached copies of the old layouts would only be ignored; remove them so nothing stale is read.
  rmSync(path.join(repoDir, 'cache'), { recursive: true, force: true });
}

/** Checks 1 and 2 pass (the re-sealing is complete), check 5 fails naming the table. */
function assertCaughtInDataConsistency(report: VerifyReport, table: RegExp): void {
  const status = Object.fromEntries(report.checks.map((c) => [c.name, c]));
  assert.equal(status['file-accessibility']!.status, 'passed', status['file-accessibility']!.reason);
  assert.equal(status['checksum-match']!.status, 'passed', `the re-sealed artifact must pass its hashes: ${status['checksum-match']!.reason}`);
  assert.equal(status['database-readable']!.status, 'passed', status['database-readable']!.reason);
  assert.equal(report.outcome, 'failed', `verify passed a backup whose rows were altered: ${JSON.stringify(report.checks)}`);
  assert.equal(status['data-consistency']!.status, 'failed', JSON.stringify(report.checks));
  assert.match(status['data-consistency']!.reason, table);
}

/** Text tampering of one line-per-row stream (PostgreSQL COPY text, MySQL rows): fields split by tabs, `\N` for NULL. */
type RowTamper = (lines: string[]) => string[];

const editField = (lines: string[], row: number, edit: (fields: string[]) => void): string[] =>
  lines.map((line, i) => {
    if (i !== row) return line;
    const fields = line.split('\t');
    edit(fields);
    return fields.join('\t');
  });

/** The cases, on table `ledger (id, account TEXT, amount INTEGER, note TEXT)`. */
const ROW_CASES: { name: string; edit: RowTamper | 'empty' }[] = [
  {
    name: 'a changed byte in a row value',
    edit: (lines) => editField(lines, 3, (f) => (f[2] = f[2]!.replace(/\d$/, (d) => String((Number(d) + 1) % 10)))),
  },
  { name: 'a value NULLed', edit: (lines) => editField(lines, 5, (f) => (f[3] = '\\N')) },
  { name: 'a row dropped', edit: (lines) => lines.filter((_, i) => i !== 7) },
  { name: "two columns' values swapped", edit: (lines) => editField(lines, 2, (f) => ([f[1], f[3]] = [f[3]!, f[1]!])) },
  { name: "the table's stream emptied", edit: 'empty' },
];

function tamperRowStream(streams: Map<string, Buffer>, stream: string, edit: RowTamper | 'empty'): void {
  const bytes = streams.get(stream);
  assert.ok(bytes, `the backup has a stream ${stream} (it has ${[...streams.keys()].join(', ')})`);
  if (edit === 'empty') {
    streams.set(stream, Buffer.alloc(0));
    return;
  }
  const text = bytes.toString('utf8');
  assert.ok(text.endsWith('\n'));
  const lines = text.slice(0, -1).split('\n');
  const changed = edit(lines);
  const out = Buffer.from(changed.join('\n') + '\n', 'utf8');
  assert.notDeepEqual(out, bytes, 'the tamper changed the stream');
  streams.set(stream, out);
}

const LEDGER_ROWS = Array.from({ length: 12 }, (_, i) => [i + 1, `account ${i} é`, 1000 + i * 37, i % 4 === 0 ? null : `note ${i} — ✓`] as const);

describe('verify catches altered rows in a re-sealed artifact', () => {
  const dir = useTempDir();

  async function repository(engine: Engine) {
    const repoDir = path.join(dir.path, 'repo');
    await initRepository(repoDir, { encryption: 'none' });
    return { repoDir, repo: await openRepository(repoDir, { tempDir: path.join(dir.path, 'tmp'), engines: new EngineRegistry().register(engine) }) };
  }

  describe('SQLite', () => {
    const engine = new SqliteEngine();

    function source(): string {
      const file = path.join(dir.path, 'app.db');
      buildRichDatabase(file, { rows: 40 });
      const db = new Database(file);
      db.exec('CREATE TABLE ledger (id INTEGER PRIMARY KEY, account TEXT NOT NULL, amount INTEGER, note TEXT)');
      const insert = db.prepare('INSERT INTO ledger VALUES (?, ?, ?, ?)');
      for (const row of LEDGER_ROWS) insert.run(...row);
      // Values a JavaScript number cannot hold, or holds alike: integers past 2^53 that differ in
      // their lowest bit, and an INTEGER beside a REAL of the same value.
      db.exec(`CREATE TABLE wide (id INTEGER PRIMARY KEY, n INTEGER, v);
        INSERT INTO wide VALUES (1, 9007199254740993, 1), (2, -9223372036854775807, 2.5), (3, 9223372036854775807, 'x');
        CREATE TABLE counted (id INTEGER PRIMARY KEY AUTOINCREMENT, v);
        INSERT INTO counted (v) VALUES (1);
        UPDATE sqlite_sequence SET seq = 9007199254740993 WHERE name = 'counted';
        CREATE TABLE counted_too (id INTEGER PRIMARY KEY AUTOINCREMENT, v);
        INSERT INTO counted_too (v) VALUES (1), (2), (3), (4), (5)`);
      db.close();
      return file;
    }

    /** Alters the database file of the stream: by SQL on a copy, or by flipping one byte. */
    function editDatabase(streams: Map<string, Buffer>, edit: (file: string) => void): void {
      const file = path.join(dir.path, 'tampered.db');
      writeFileSync(file, streams.get('main.db')!);
      edit(file);
      streams.set('main.db', readFileSync(file));
    }

    const cases: { name: string; table?: string; edit: (file: string) => void }[] = [
      {
        name: 'a changed byte in a row value',
        edit: (file) => {
          const bytes = readFileSync(file);
          const at = bytes.indexOf(Buffer.from('account 3 é'));
          assert.ok(at > 0 && bytes.indexOf(Buffer.from('account 3 é'), at + 1) < 0, 'the value is stored once');
          bytes[at + 8] = '7'.charCodeAt(0);
          writeFileSync(file, bytes);
        },
      },
      { name: 'a value NULLed', edit: (file) => sqlEdit(file, 'UPDATE ledger SET note = NULL WHERE id = 6') },
      { name: 'a row dropped', edit: (file) => sqlEdit(file, 'DELETE FROM ledger WHERE id = 8') },
      { name: "two columns' values swapped", edit: (file) => sqlEdit(file, 'UPDATE ledger SET account = note, note = account WHERE id = 3') },
      { name: "the table's rows emptied (SQLite has one stream, the file)", edit: (file) => sqlEdit(file, 'DELETE FROM ledger') },
      { name: 'an integer past 2^53 changed in its lowest bit', table: 'wide', edit: (file) => sqlEdit(file, 'UPDATE wide SET n = 9007199254740992 WHERE id = 1') },
      { name: 'the largest integer changed by one', table: 'wide', edit: (file) => sqlEdit(file, 'UPDATE wide SET n = 9223372036854775806 WHERE id = 3') },
      { name: 'an INTEGER turned into a REAL of the same value', table: 'wide', edit: (file) => sqlEdit(file, 'UPDATE wide SET v = 1.0 WHERE id = 1') },
      { name: "an AUTOINCREMENT counter past 2^53 changed in its lowest bit", table: 'sqlite_sequence', edit: (file) => sqlEdit(file, "UPDATE sqlite_sequence SET seq = 9007199254740992 WHERE name = 'counted'") },
      { name: 'an AUTOINCREMENT counter turned into a REAL of the same value', table: 'sqlite_sequence', edit: (file) => sqlEdit(file, "UPDATE sqlite_sequence SET seq = 5.0 WHERE name = 'counted_too'") },
    ];

    for (const c of cases) {
      it(`fails data consistency for ${c.name}`, async () => {
        const { repoDir, repo } = await repository(engine);
        const record = await repo.backup(source(), { database: 'app' });
        await tamperAndReseal(repoDir, record, (streams) => editDatabase(streams, c.edit));
        const [report] = await repo.verify({ id: record.id }, { level: 'full' });
        const table = c.table ?? 'ledger';
        // The counters are an entry of their own, not a table, and named as such.
        assertCaughtInDataConsistency(report!, table === 'sqlite_sequence' ? /^sqlite_sequence differs/ : new RegExp(`table ${table} `));
        // Only the altered table is named: the others restored as recorded.
        const others = ['books', 'authors', 'tags', 'log', 'ledger', 'wide', 'counted', 'counted_too', 'sqlite_sequence'].filter((t) => t !== table);
        assert.doesNotMatch(report!.checks.find((x) => x.name === 'data-consistency')!.reason, new RegExp(`table (${others.join('|')}) `));
      });
    }

    it('passes the re-sealed artifact when nothing was altered (the re-sealing itself is sound)', async () => {
      const { repoDir, repo } = await repository(engine);
      const record = await repo.backup(source(), { database: 'app' });
      await tamperAndReseal(repoDir, record, () => undefined);
      const [report] = await repo.verify({ id: record.id }, { level: 'full' });
      assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
    });
  });

  describe('PostgreSQL', () => {
    const databases = new Databases();
    before(async function () {
      await requirePostgres(this);
    });
    afterEach(() => databases.dropAll());

    async function source(): Promise<string> {
      const name = await databases.create(`
        CREATE TABLE ledger (id integer PRIMARY KEY, account text NOT NULL, amount integer, note text);
        CREATE TABLE other (id integer PRIMARY KEY, v text);
        INSERT INTO other VALUES (1, 'untouched');`);
      for (const row of LEDGER_ROWS) await pgQuery(name, 'INSERT INTO ledger VALUES ($1, $2, $3, $4)', [...row]);
      return pgUrl(name);
    }

    for (const c of [...ROW_CASES, { name: 'nothing was altered (the re-sealing itself is sound)', edit: null }]) {
      it(c.edit === null ? `passes the re-sealed artifact when ${c.name}` : `fails data consistency for ${c.name}`, async function () {
        this.timeout(120_000);
        const { repoDir, repo } = await repository(new PostgresEngine());
        const record = await repo.backup(await source(), { database: 'pg' });
        await tamperAndReseal(repoDir, record, (streams) => {
          if (c.edit !== null) tamperRowStream(streams, 'public.ledger.copy', c.edit);
        });
        const [report] = await repo.verify({ id: record.id }, { level: 'full' });
        if (c.edit === null) assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
        else assertCaughtInDataConsistency(report!, /ledger/);
      });
    }
  });

  describe('MySQL/MariaDB', () => {
    const databases = new MysqlDatabases();
    before(async function () {
      await requireMysql(this);
    });
    afterEach(() => databases.dropAll());

    async function source(): Promise<string> {
      const name = await databases.create(`
        CREATE TABLE ledger (id INT PRIMARY KEY, account VARCHAR(100) NOT NULL, amount INT, note TEXT);
        CREATE TABLE other (id INT PRIMARY KEY, v TEXT);
        INSERT INTO other VALUES (1, 'untouched');`);
      const values = LEDGER_ROWS.map(([id, account, amount, note]) => `(${id}, '${account}', ${amount}, ${note === null ? 'NULL' : `'${note}'`})`);
      await mysqlQuery(name, `INSERT INTO ledger VALUES ${values.join(', ')}`);
      return mysqlUrl(name);
    }

    for (const c of [...ROW_CASES, { name: 'nothing was altered (the re-sealing itself is sound)', edit: null }]) {
      it(c.edit === null ? `passes the re-sealed artifact when ${c.name}` : `fails data consistency for ${c.name}`, async function () {
        this.timeout(120_000);
        const { repoDir, repo } = await repository(new MysqlEngine());
        const record = await repo.backup(await source(), { database: 'my' });
        await tamperAndReseal(repoDir, record, (streams) => {
          if (c.edit !== null) tamperRowStream(streams, 'ledger.rows', c.edit);
        });
        const [report] = await repo.verify({ id: record.id }, { level: 'full' });
        if (c.edit === null) assert.equal(report!.outcome, 'passed', JSON.stringify(report!.checks));
        else assertCaughtInDataConsistency(report!, /ledger/);
      });
    }
  });
});

function sqlEdit(file: string, sql: string): void {
  const db = new Database(file);
  db.exec(sql);
  // Closing checkpoints a WAL, if the file's header asks for one, back into the file.
  db.close();
}
