import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { buildRichDatabase, mutate } from './helpers/databases.js';
import { ROOT, TEST_PASSPHRASE, json, sqliteDump, sqliteQuery, strata, useTempDir } from './helpers/env.js';
import { MysqlDatabases, mysqlDump, mysqlQuery, mysqlUrl, requireMysql, MYSQL_URL } from './helpers/mysql.js';
import { Databases, PG_URL, pgDump, pgQuery, pgUrl, requirePostgres } from './helpers/postgres.js';
import { MUTATE_MYSQL_SQL, RICH_MYSQL_SQL } from './helpers/rich-mysql.js';
import { MUTATE_POSTGRES_SQL, RICH_POSTGRES_SQL } from './helpers/rich-postgres.js';
import { followExportRestoreMd, recipe } from './helpers/format-recipes.js';

/**
 * Recovery without Strata, the way a person does it: the shell blocks of docs/FORMAT.md, copied
 * word for word, run by bash with real gpg, zstd, python3, sqlite3, psql and mysql. Nothing of
 * Strata's code takes part after the backups are made.
 */

interface ListJson {
  backups: { id: string; key: string; type: string; parent: string | null; encryption: { keyId?: string } }[];
}

describe('recovery by hand of any restore point, following docs/FORMAT.md', function () {
  this.timeout(300_000);
  const dir = useTempDir();
  let home: string;

  beforeEach(() => {
    home = path.join(dir.path, 'home');
    mkdirSync(path.join(home, '.gnupg'), { recursive: true, mode: 0o700 });
    writeFileSync(path.join(dir.path, 'passphrase'), TEST_PASSPHRASE, { mode: 0o600 });
  });

  afterEach(() => {
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME: path.join(home, '.gnupg') } });
  });

  /** Runs a documented block with the person's environment: their own HOME, GnuPG home and client settings. */
  function follow(marker: string, variables: Record<string, string>): string {
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', recipe(marker)], {
      env: { ...process.env, HOME: home, GNUPGHOME: path.join(home, '.gnupg'), ...variables },
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    assert.equal(run.status, 0, `${marker} failed:\n${run.stderr}`);
    return run.stdout;
  }

  /** The data keys the passphrase's key file holds, by recover-data-keys (key file first); returns the file. */
  function dataKeys(repo: string): string {
    const keys = path.join(dir.path, `data keys of ${path.basename(repo)}`);
    if (!existsSync(keys)) follow('recover-data-keys', { REPO: repo, PASSFILE: path.join(dir.path, 'passphrase'), KEYS: keys });
    return keys;
  }

  /** The file gpg opens an artifact with: its data key (data-key-file), or before key files the passphrase. */
  function passwordFile(repo: string, keyId: string | undefined): string {
    if (keyId === undefined) return path.join(dir.path, 'passphrase');
    const file = path.join(dir.path, `data key ${keyId}`);
    follow('data-key-file', { KEYS: dataKeys(repo), KEYID: keyId, DATAKEY: file });
    return file;
  }

  /** recover-chain on every artifact of `database` (recover-chain-passphrase before key files); returns the folder it wrote. */
  function recoverChain(repo: string, database: string, out = path.join(dir.path, "recovered it's $HOME")): string {
    const common = { DOCS: path.join(ROOT, 'docs'), REPO: repo, DB: database, OUT: out };
    if (existsSync(path.join(repo, 'keys'))) follow('recover-chain', { ...common, KEYS: dataKeys(repo) });
    else follow('recover-chain-passphrase', { ...common, PASSFILE: path.join(dir.path, 'passphrase') });
    return out;
  }

  function backup(repo: string, source: string, type: string, database?: string): string {
    const result = strata(['backup', source, '--repo', repo, '--type', type, '--json', ...(database ? ['--name', database] : [])]);
    assert.equal(result.status, 0, result.stderr);
    return json<{ id: string }>(result).id;
  }

  /** One entry of an artifact, extracted with gpg, zstd and tar. */
  function entryOf(repo: string, id: string, entry: string): string {
    const record = json<ListJson>(strata(['list', '--repo', repo, '--json'])).backups.find((b) => b.id === id)!;
    const out = path.join(dir.path, `peek-${id}`);
    mkdirSync(out, { recursive: true });
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', 'gpg --batch --pinentry-mode loopback --passphrase-file "$PASSFILE" --decrypt "$ARTIFACT" | zstd -d | tar -x -C "$OUT" "$ENTRY"'], {
      env: { ...process.env, GNUPGHOME: path.join(home, '.gnupg'), PASSFILE: passwordFile(repo, record.encryption.keyId), ARTIFACT: path.join(repo, record.key), OUT: out, ENTRY: entry },
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, run.stderr);
    return readFileSync(path.join(out, entry), 'utf8');
  }

  function manifestOf(repo: string, id: string): { streams: { storedChunks: number; chunkCount: number }[] } {
    return JSON.parse(entryOf(repo, id, 'manifest.json'));
  }

  /** Writes the client settings a person keeps in ~/.my.cnf, for the mysql command line. */
  function myCnf(): void {
    const url = new URL(MYSQL_URL);
    writeFileSync(
      path.join(home, '.my.cnf'),
      `[client]\nhost=${url.hostname}\nport=${url.port || '3306'}\nuser=${decodeURIComponent(url.username || 'root')}\n${url.password ? `password=${decodeURIComponent(url.password)}\n` : ''}`,
      { mode: 0o600 },
    );
  }

  /**
   * The obvious reading the docs warn against: the full backup's file with every page an
   * incremental stores written at its position, cut to the restore point's size.
   */
  function naiveOverlay(repo: string, ids: readonly string[], size: number): string {
    const file = path.join(dir.path, 'naive.db');
    for (const [n, id] of ids.entries()) {
      const folder = path.join(dir.path, `naive-${n}`);
      mkdirSync(folder);
      const record = json<ListJson>(strata(['list', '--repo', repo, '--json'])).backups.find((b) => b.id === id)!;
      const run = spawnSync('bash', ['-euo', 'pipefail', '-c', 'gpg --batch --pinentry-mode loopback --passphrase-file "$PASSFILE" --decrypt "$ARTIFACT" | zstd -d | tar -x -C "$OUT"'], {
        env: { ...process.env, GNUPGHOME: path.join(home, '.gnupg'), PASSFILE: passwordFile(repo, record.encryption.keyId), ARTIFACT: path.join(repo, record.key), OUT: folder },
      });
      assert.equal(run.status, 0);
      if (n === 0) {
        copyFileSync(path.join(folder, 'data/main.db'), file);
        continue;
      }
      const pageSize = JSON.parse(readFileSync(path.join(folder, 'streams/main.db.json'), 'utf8')).chunking.size as number;
      const bytes = readFileSync(file);
      const grown = Buffer.alloc(Math.max(bytes.length, size));
      bytes.copy(grown);
      for (const name of spawnSync('ls', [path.join(folder, 'chunks/main.db')], { encoding: 'utf8' }).stdout.split('\n').filter((f) => f.endsWith('.idx'))) {
        const index = readFileSync(path.join(folder, 'chunks/main.db', name));
        const data = readFileSync(path.join(folder, 'chunks/main.db', name.replace(/\.idx$/, '.bin')));
        for (let i = 0, at = 0; i < Number(index.readBigUInt64LE(16)); i++) {
          const record = 24 + i * 28;
          const position = Number(index.readBigUInt64LE(record));
          const length = index.readUInt32LE(record + 8);
          data.copy(grown, position * pageSize, at, at + length);
          at += length;
        }
      }
      writeFileSync(file, grown.subarray(0, size));
    }
    return file;
  }

  describe('SQLite', () => {
    function initRepo(): string {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--compression', 'zstd']).status, 0);
      return repo;
    }

    it('full → incremental → incremental after deleting rows and VACUUM: the newest restore point, exactly', () => {
      const repo = initRepo();
      const db = path.join(dir.path, 'app.db');
      buildRichDatabase(db, { rows: 400 });
      const full = backup(repo, db, 'full');
      mutate(db, 1);
      const middle = backup(repo, db, 'incremental');
      const conn = new Database(db);
      conn.exec('DELETE FROM books WHERE id % 3 = 0; DELETE FROM tags WHERE book_id % 2 = 0; VACUUM');
      conn.close();
      const tip = backup(repo, db, 'incremental');
      // The case the obvious reading gets wrong: pages that VACUUM moved are not stored again.
      const stream = manifestOf(repo, tip).streams[0]! as { storedChunks: number; chunkCount: number; size: number };
      assert.ok(stream.storedChunks < stream.chunkCount, `the incremental stores ${stream.storedChunks} of ${stream.chunkCount} pages; the rest come from the chain`);
      const naive = naiveOverlay(repo, [full, middle, tip], stream.size);
      const naiveResult = spawnSync('sqlite3', [naive, 'PRAGMA integrity_check'], { encoding: 'utf8' });
      assert.ok(naiveResult.stdout.trim() !== 'ok' || sqliteDump(naive) !== sqliteDump(db), 'writing stored pages at their positions does not give the database');

      const out = recoverChain(repo, 'app');
      assert.equal(follow('load-sqlite', { OUT: out }).trim(), 'ok');
      assert.equal(sqliteDump(path.join(out, 'data/main.db')), sqliteDump(db));
      assert.equal(sqliteQuery(path.join(out, 'data/main.db'), 'PRAGMA user_version'), '42');

      const readme = entryOf(repo, tip, 'README.txt');
      assert.match(readme, /SQLite: one stream, main\.db/);
      assert.match(readme, /recover-chain\.py/, 'README.txt says how to recover an incremental without Strata');
      assert.doesNotMatch(readme, /PostgreSQL|MySQL/);
    });

    it('full → differential → incremental, with a superseded incremental beside it; an older point on request', () => {
      const repo = initRepo();
      const db = path.join(dir.path, 'shop.db');
      buildRichDatabase(db, { rows: 300 });
      backup(repo, db, 'full');
      mutate(db, 1);
      backup(repo, db, 'incremental');
      mutate(db, 2);
      const differential = backup(repo, db, 'differential');
      const atDifferential = path.join(dir.path, 'at-differential.db');
      copyFileSync(db, atDifferential);
      const conn = new Database(db);
      conn.exec("DELETE FROM books WHERE id % 2 = 1; UPDATE authors SET bio = 'changed'; VACUUM");
      conn.close();
      const tip = backup(repo, db, 'incremental');
      const list = json<ListJson>(strata(['list', '--repo', repo, '--json'])).backups;
      assert.equal(list.find((b) => b.id === tip)!.parent, differential, 'the chain is full → differential → incremental');

      const out = recoverChain(repo, 'shop');
      assert.equal(follow('load-sqlite', { OUT: out }).trim(), 'ok');
      assert.equal(sqliteDump(path.join(out, 'data/main.db')), sqliteDump(db));

      // An older restore point: the same command with --restore-point, as the docs say.
      const older = path.join(dir.path, 'older');
      const run = spawnSync('python3', [path.join(ROOT, 'docs/recover-chain.py'), '--keys', dataKeys(repo), '--out', older, '--restore-point', differential, ...list.map((b) => path.join(repo, b.key))], {
        env: { ...process.env, HOME: home, GNUPGHOME: path.join(home, '.gnupg') },
        encoding: 'utf8',
      });
      assert.equal(run.status, 0, run.stderr);
      assert.equal(sqliteDump(path.join(older, 'data/main.db')), sqliteDump(atDifferential));
    });

    it('stops with a clear message when an artifact of the chain is missing, and when a chunk was altered', () => {
      const repo = initRepo();
      const db = path.join(dir.path, 'app.db');
      buildRichDatabase(db, { rows: 100 });
      backup(repo, db, 'full');
      mutate(db, 1);
      backup(repo, db, 'incremental');
      mutate(db, 2);
      backup(repo, db, 'incremental');
      const list = json<ListJson>(strata(['list', '--repo', repo, '--json'])).backups;
      const script = path.join(ROOT, 'docs/recover-chain.py');
      const env = { ...process.env, HOME: home, GNUPGHOME: path.join(home, '.gnupg') };
      const withoutMiddle = spawnSync('python3', [script, '--keys', dataKeys(repo), '--out', path.join(dir.path, 'a'), path.join(repo, list[0]!.key), path.join(repo, list[2]!.key)], { env, encoding: 'utf8' });
      assert.notEqual(withoutMiddle.status, 0);
      assert.match(withoutMiddle.stderr, new RegExp(`needs ${list[1]!.id}, which is not among the artifacts given`));

      // A plain, unencrypted copy of the newest artifact with one stored page changed.
      const work = path.join(dir.path, 'tamper');
      mkdirSync(work);
      const tampered = path.join(dir.path, path.basename(list[2]!.key).replace(/\.zst\.gpg$/, ''));
      const unpack = spawnSync('bash', ['-euo', 'pipefail', '-c', 'gpg --batch --pinentry-mode loopback --passphrase-file "$PASSFILE" --decrypt "$ARTIFACT" | zstd -d | tar -x -C "$WORK"'], {
        env: { ...env, PASSFILE: passwordFile(repo, list[2]!.encryption.keyId), ARTIFACT: path.join(repo, list[2]!.key), WORK: work },
      });
      assert.equal(unpack.status, 0);
      const bin = spawnSync('bash', ['-c', 'ls "$WORK"/chunks/main.db/*.bin | head -1'], { env: { ...env, WORK: work }, encoding: 'utf8' }).stdout.trim();
      const bytes = readFileSync(bin);
      bytes[100]! ^= 0x01;
      writeFileSync(bin, bytes);
      assert.equal(spawnSync('tar', ['-cf', tampered, '-C', work, 'README.txt', 'schema.sql', 'streams', 'chunks', 'layout', 'manifest.json']).status, 0);
      const damaged = spawnSync('python3', [script, '--keys', dataKeys(repo), '--out', path.join(dir.path, 'b'), path.join(repo, list[0]!.key), path.join(repo, list[1]!.key), tampered], { env, encoding: 'utf8' });
      assert.notEqual(damaged.status, 0);
      assert.match(damaged.stderr, /stream main\.db: chunk \d+ does not match its id/);
    });
  });

  describe('PostgreSQL', () => {
    const databases = new Databases();
    const roles: string[] = [];

    before(async function () {
      await requirePostgres(this);
    });

    afterEach(async () => {
      await databases.dropAll();
      for (const role of roles.splice(0)) await pgQuery('postgres', `DROP ROLE IF EXISTS "${role}"`);
    });

    it('full → incremental → incremental after deleting many rows: the newest restore point, exactly (pg_dump of both)', async () => {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--compression', 'zstd']).status, 0);
      const source = await databases.create(`${RICH_POSTGRES_SQL}
        CREATE TABLE public."Order Lines ""x""" (id int PRIMARY KEY, "the note" text);
        INSERT INTO public."Order Lines ""x""" SELECT g, 'line ' || g FROM generate_series(1, 50) g;
        -- A child attached later keeps its own column order; pg_dump recreates it with its
        -- parent's columns first (text columns: a value in the wrong column would not fail).
        CREATE TABLE public.vehicle (id int PRIMARY KEY, name text, maker text);
        CREATE TABLE public.car (plate text, maker text, id int NOT NULL, name text);
        ALTER TABLE public.car INHERIT public.vehicle;
        INSERT INTO public.vehicle SELECT g, 'vehicle ' || g, 'maker ' || g FROM generate_series(1, 20) g;
        INSERT INTO public.car (id, name, maker, plate) SELECT g, 'car ' || g, 'maker ' || g, 'P-' || g FROM generate_series(101, 130) g;
        CREATE TABLE public.nothing ();
        INSERT INTO public.nothing DEFAULT VALUES; INSERT INTO public.nothing DEFAULT VALUES;
        SELECT lo_from_bytea(424201, '\\x00ff00c3a9'::bytea);
        SELECT lo_from_bytea(424202, decode(repeat('0123456789abcdef', 5000), 'hex'));
        COMMENT ON LARGE OBJECT 424201 IS 'the small one';`);
      await pgQuery(source, `ALTER DATABASE "${source}" SET work_mem = '7MB'; COMMENT ON DATABASE "${source}" IS 'shop''s data'`);
      // A large object owned by another role, readable by everyone: owner and ACL come back too.
      const reader = `strata_reader_${path.basename(dir.path).replace(/\W/g, '').toLowerCase()}`;
      await pgQuery('postgres', `CREATE ROLE "${reader}"`);
      roles.push(reader);
      await pgQuery(source, `ALTER LARGE OBJECT 424202 OWNER TO "${reader}"; GRANT SELECT ON LARGE OBJECT 424202 TO PUBLIC`);
      backup(repo, pgUrl(source), 'full', 'shop');
      await pgQuery(source, MUTATE_POSTGRES_SQL(1));
      backup(repo, pgUrl(source), 'incremental', 'shop');
      await pgQuery(source, `DELETE FROM shop.orders WHERE id % 3 = 0; UPDATE shop.customers SET tags = ARRAY['moved'] WHERE id % 5 = 0; ${MUTATE_POSTGRES_SQL(2)}; SELECT nextval('shop.invoice_no')`);
      await pgQuery(source, "UPDATE public.car SET plate = 'Q-' || id WHERE id % 2 = 0; SELECT lo_put(424202, 10, '\\xffff'::bytea), lo_from_bytea(424203, 'added later')");
      await pgQuery(source, 'VACUUM FULL');
      const tip = backup(repo, pgUrl(source), 'incremental', 'shop');

      const out = recoverChain(repo, 'shop');
      const target = databases.name();
      const url = new URL(PG_URL);
      const client = { PGHOST: url.hostname, PGPORT: url.port || '5432', PGUSER: decodeURIComponent(url.username || 'postgres') };
      follow('load-postgres', { OUT: out, NEWDB: target, ...client });
      // The oracle: pg_dump -Fc and pg_restore of the same database, which also recreates the
      // child with its parent's columns first, and restores large objects with their OIDs.
      const oracle = databases.name();
      await pgQuery('postgres', `CREATE DATABASE "${oracle}"`);
      const dump = spawnSync('bash', ['-euo', 'pipefail', '-c', 'pg_dump --no-password -Fc "$SOURCE" | pg_restore --no-password --exit-on-error -d "$ORACLE"'], {
        env: { ...process.env, ...client, SOURCE: source, ORACLE: oracle },
        encoding: 'utf8',
      });
      assert.equal(dump.status, 0, dump.stderr);
      assert.equal(pgDump(target), pgDump(oracle));
      const ownRows = 'SELECT id, name, maker, plate FROM ONLY public.car ORDER BY id';
      assert.deepEqual((await pgQuery(target, ownRows)).rows, (await pgQuery(source, ownRows)).rows, "the child's values are in their own columns");
      assert.equal((await pgQuery(target, 'SELECT count(*)::int AS n FROM ONLY public.vehicle')).rows[0].n, 20, "the parent holds its own rows, not its child's");
      assert.equal((await pgQuery(target, 'SELECT count(*)::int AS n FROM public.nothing')).rows[0].n, 2, 'a table without columns keeps its rows');
      const objects = `SELECT m.oid::int AS oid, md5(lo_get(m.oid)) AS content, obj_description(m.oid, 'pg_largeobject') AS comment,
        pg_get_userbyid(m.lomowner) AS owner, (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(m.lomacl) a) AS acl FROM pg_largeobject_metadata m ORDER BY 1`;
      const sourceObjects = (await pgQuery(source, objects)).rows;
      assert.equal(sourceObjects.length, 3);
      assert.equal(sourceObjects[1].owner, reader);
      assert.deepEqual((await pgQuery(target, objects)).rows, sourceObjects, 'large objects come back with their OIDs, content, comment, owner and grants');
      // The database itself: encoding, locale, settings and comment as the source has them.
      const properties = `SELECT pg_encoding_to_char(d.encoding) AS encoding, d.datcollate, d.datctype, shobj_description(d.oid, 'pg_database') AS comment,
        (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0) AS settings FROM pg_database d WHERE d.datname = $1`;
      const sourceProperties = (await pgQuery('postgres', properties, [source])).rows;
      assert.deepEqual(sourceProperties[0].settings, ['work_mem=7MB']);
      assert.deepEqual((await pgQuery('postgres', properties, [target])).rows, sourceProperties);

      const readme = entryOf(repo, tip, 'README.txt');
      assert.match(readme, /PostgreSQL: schema\.sql is pg_dump --schema-only output/);
      assert.match(readme, /<schema>\.<table>\.copy/);
      assert.doesNotMatch(readme, /main\.db|MySQL/);
    });
    it('a LATIN1 database with the C locale, full → incremental, and a schema-only backup: encoding, locale and text byte for byte', async () => {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--compression', 'zstd']).status, 0);
      const source = databases.name();
      await pgQuery('postgres', `CREATE DATABASE "${source}" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'`);
      await pgQuery(source, `CREATE TABLE words (id int PRIMARY KEY, word text); INSERT INTO words VALUES (1, 'café'), (2, 'naïve ÿ'), (3, E'tab\\there');`);
      backup(repo, pgUrl(source), 'full', 'latin');
      await pgQuery(source, "INSERT INTO words VALUES (4, 'crème brûlée'); UPDATE words SET word = 'Ærø' WHERE id = 1");
      backup(repo, pgUrl(source), 'incremental', 'latin');

      const url = new URL(PG_URL);
      const client = { PGHOST: url.hostname, PGPORT: url.port || '5432', PGUSER: decodeURIComponent(url.username || 'postgres') };
      const target = databases.name();
      follow('load-postgres', { OUT: recoverChain(repo, 'latin'), NEWDB: target, ...client });
      const database = "SELECT pg_encoding_to_char(encoding) AS encoding, datcollate, datctype FROM pg_database WHERE datname = $1";
      assert.deepEqual((await pgQuery('postgres', database, [target])).rows, [{ encoding: 'LATIN1', datcollate: 'C', datctype: 'C' }]);
      // Bytes as the server stores them: a conversion on the way would change them.
      const bytes = "SELECT id, convert_to(word, 'LATIN1') AS raw FROM words ORDER BY id";
      assert.deepEqual((await pgQuery(target, bytes)).rows, (await pgQuery(source, bytes)).rows);
      assert.equal(pgDump(target), pgDump(source));

      backup(repo, pgUrl(source), 'schema-only', 'latin-schema');
      const schemaOnly = databases.name();
      follow('load-postgres', { OUT: recoverChain(repo, 'latin-schema', path.join(dir.path, 'schema only')), NEWDB: schemaOnly, ...client });
      assert.deepEqual((await pgQuery('postgres', database, [schemaOnly])).rows, [{ encoding: 'LATIN1', datcollate: 'C', datctype: 'C' }]);
      assert.equal(pgDump(schemaOnly, ['--schema-only']), pgDump(source, ['--schema-only']));
    });
  });

  describe('MySQL/MariaDB', () => {
    const databases = new MysqlDatabases();

    before(async function () {
      await requireMysql(this);
    });

    afterEach(async () => {
      await databases.dropAll();
    });

    it('full → incremental → incremental after deleting many rows: the newest restore point, exactly (mysqldump of both)', async () => {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--compression', 'zstd']).status, 0);
      const source = await databases.create(RICH_MYSQL_SQL);
      // Every kind of value the row format writes as hex, and a view that reads a view named after it.
      await mysqlQuery(
        source,
        `CREATE TABLE raw (id INT PRIMARY KEY, b1 BIT(1), b64 BIT(64), vb VARBINARY(16), bn BINARY(4), g POINT, t TEXT);
         INSERT INTO raw VALUES (1, b'1', b'1010', X'00FF0A09', X'5C000D0A', POINT(1.5, -2), 'a\\tb'), (2, b'0', NULL, '', X'00000000', NULL, NULL);
         CREATE TABLE \`odd name's\` (id INT PRIMARY KEY, \`a b\` VARCHAR(10), \`c\`\`d\` BLOB);
         INSERT INTO \`odd name's\` VALUES (1, 'x', X'01'), (2, NULL, NULL);
         CREATE VIEW z_base AS SELECT id FROM raw;
         CREATE VIEW a_top AS SELECT id FROM z_base;
         CREATE TABLE measures (id INT PRIMARY KEY, f FLOAT, b BIT(3));
         INSERT INTO measures VALUES (1, -112.81857, b'101'), (2, 3.4028234663852886e38, b'000');
         CREATE SEQUENCE ticket_ids START WITH 500 INCREMENT BY 5;
         CREATE TABLE tickets (id BIGINT PRIMARY KEY DEFAULT NEXT VALUE FOR ticket_ids, what VARCHAR(20));
         INSERT INTO tickets (what) VALUES ('first'), ('second');
         CREATE TABLE prices (id INT PRIMARY KEY, price INT) WITH SYSTEM VERSIONING;
         INSERT INTO prices VALUES (1, 10), (2, 20);
         UPDATE prices SET price = 11 WHERE id = 1;
         DELETE FROM prices WHERE id = 2;
         CREATE TABLE stock (id INT, qty INT, valid_from TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,
           valid_to TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE, PERIOD FOR SYSTEM_TIME (valid_from, valid_to)) WITH SYSTEM VERSIONING;
         INSERT INTO stock (id, qty) VALUES (1, 3);
         UPDATE stock SET qty = 4;
         CREATE TABLE jp (id INT PRIMARY KEY, v VARCHAR(10), t TEXT CHARACTER SET sjis, u VARCHAR(10) CHARACTER SET utf8mb4) DEFAULT CHARSET=cp932;
         INSERT INTO jp VALUES (1, _cp932 x'8790', _sjis x'8760', 'ok'), (2, _cp932 x'81E0', NULL, NULL);
         SET SESSION sql_mode = ''; CREATE TABLE en (id INT PRIMARY KEY, e ENUM('', 'a'), s SET('x', 'x ', 'y'), c VARCHAR(5) COMMENT 'not CHARACTER SET cp932') DEFAULT CHARSET=utf8mb4; INSERT INTO en VALUES (1, '', 2, 'abc'), (2, 'bogus', 5, NULL), (3, 'a', NULL, 'é');`,
      );
      backup(repo, mysqlUrl(source), 'full', 'shop');
      await mysqlQuery(source, MUTATE_MYSQL_SQL(1));
      backup(repo, mysqlUrl(source), 'incremental', 'shop');
      await mysqlQuery(
        source,
        `DELETE FROM books WHERE id % 3 = 0; ${MUTATE_MYSQL_SQL(2)} UPDATE raw SET vb = X'FFFE', b64 = b'1111111111111111111111111111111111111111111111111111111111111111' WHERE id = 2;
         UPDATE prices SET price = 12 WHERE id = 1; UPDATE stock SET qty = 5; INSERT INTO tickets (what) VALUES ('third');`,
      );
      const tip = backup(repo, mysqlUrl(source), 'incremental', 'shop');

      const out = recoverChain(repo, 'shop');
      const target = databases.name();
      myCnf();
      follow('load-mysql', { OUT: out, NEWDB: target });
      assert.equal(mysqlDump(target), mysqlDump(source));
      // Bytes of other character sets, which mysqldump (in utf8mb4) would show alike.
      const bytes = 'SELECT id, HEX(v) AS v, HEX(t) AS t, u FROM jp ORDER BY id';
      assert.deepEqual(await mysqlQuery(target, bytes), await mysqlQuery(source, bytes));
      const members = 'SELECT id, e + 0 AS e, s + 0 AS s, c FROM en ORDER BY id';
      assert.deepEqual(await mysqlQuery(target, members), await mysqlQuery(source, members));
      // History rows with their row start and end, which a plain mysqldump leaves out.
      assert.equal(mysqlDump(target, ['--dump-history']), mysqlDump(source, ['--dump-history']));
      const history = 'SELECT COUNT(*) AS n FROM prices FOR SYSTEM_TIME ALL';
      assert.deepEqual(await mysqlQuery(target, history), await mysqlQuery(source, history));
      // The sequence is where the source's stands (its first value not handed out), so restored
      // tables take new ids from it, after every id the source gave.
      const state = 'SELECT next_not_cached_value AS next, cycle_count AS round FROM ticket_ids';
      assert.deepEqual(await mysqlQuery(target, state), await mysqlQuery(source, state));
      await mysqlQuery(target, "INSERT INTO tickets (what) VALUES ('next')");
      const [given] = (await mysqlQuery(source, 'SELECT MAX(id) AS id FROM tickets')) as { id: number }[];
      const [taken] = (await mysqlQuery(target, "SELECT id FROM tickets WHERE what = 'next'")) as { id: number }[];
      assert.ok(Number(taken!.id) > Number(given!.id), `the restored table takes id ${taken!.id}, after the source's ${given!.id}`);

      // The layout README.txt describes is the one in the archive: per table <table>.rows segments.
      const readme = entryOf(repo, tip, 'README.txt');
      assert.match(readme, /MySQL\/MariaDB: schema\.sql is for the mysql client/);
      assert.match(readme, /<table>\.rows/);
      assert.doesNotMatch(readme, /main\.db|PostgreSQL|COPY/);
    });
    it('a schema-only backup: load.sql recreates sequences, versioned tables, views and triggers', async () => {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--compression', 'zstd']).status, 0);
      const source = await databases.create(`
        CREATE SEQUENCE ids START WITH 7;
        CREATE TABLE items (id INT PRIMARY KEY DEFAULT NEXT VALUE FOR ids, flags BIT(4), weight FLOAT);
        CREATE TABLE prices (id INT PRIMARY KEY, price INT) WITH SYSTEM VERSIONING;
        CREATE VIEW heavy AS SELECT id FROM items WHERE weight > 1;
        CREATE TRIGGER b_second BEFORE INSERT ON items FOR EACH ROW SET NEW.weight = NEW.weight * 2;
        CREATE TRIGGER a_first BEFORE INSERT ON items FOR EACH ROW PRECEDES b_second SET NEW.weight = NEW.weight + 1;`);
      backup(repo, mysqlUrl(source), 'schema-only', 'shape');
      const target = databases.name();
      myCnf();
      follow('load-mysql', { OUT: recoverChain(repo, 'shape'), NEWDB: target });
      assert.equal(mysqlDump(target, ['--no-data']), mysqlDump(source, ['--no-data']));
      // Trigger order is behaviour: (1 + 1) * 2 in both, not 1 * 2 + 1.
      for (const db of [source, target]) await mysqlQuery(db, 'INSERT INTO items (weight) VALUES (1)');
      const item = 'SELECT id, weight FROM items';
      assert.deepEqual(await mysqlQuery(target, item), await mysqlQuery(source, item));
    });

    it("load.sql keeps routine and trigger bodies with schema.sql-like lines (;;, DELIMITER, -- strata), the database's comment, invalid dates and rows a CHECK constraint refuses", async () => {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--compression', 'zstd']).status, 0);
      const source = await databases.create(`
        ALTER DATABASE COMMENT 'shop\\'s data';
        CREATE TABLE t (id INT PRIMARY KEY, note TEXT, qty INT, d DATE);
        SET SESSION sql_mode = 'ALLOW_INVALID_DATES';
        INSERT INTO t VALUES (1, 'x', -1, '2021-02-31');
        SET SESSION check_constraint_checks = 0;
        ALTER TABLE t ADD CONSTRAINT pos CHECK (qty >= 0);
        CREATE FUNCTION banner() RETURNS TEXT DETERMINISTIC RETURN 'Welcome\n-- strata maintenance\nDELIMITER here\n;;\nbye';
        CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.note = 'header\n;;\nfooter';`);
      backup(repo, mysqlUrl(source), 'full', 'odd');
      const target = databases.name();
      myCnf();
      follow('load-mysql', { OUT: recoverChain(repo, 'odd'), NEWDB: target });
      assert.equal(mysqlDump(target), mysqlDump(source));
      const state = `SELECT banner() AS b, (SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()) AS c, (SELECT CAST(d AS CHAR) FROM t WHERE id = 1) AS d`;
      assert.deepEqual(await mysqlQuery(target, state), [{ b: 'Welcome\n-- strata maintenance\nDELIMITER here\n;;\nbye', c: "shop's data", d: '2021-02-31' }]);
    });

    it('a backup made by the previous release (BIT written in hexadecimal) recovers with its BIT values', async () => {
      // fixtures/legacy-v1/mysql-bit: made by cc33e74, whose row streams wrote BIT like binary columns.
      const legacy = path.join(ROOT, 'fixtures/legacy-v1/mysql-bit');
      const repo = path.join(dir.path, 'legacy-repo');
      cpSync(path.join(legacy, 'repo'), repo, { recursive: true });
      const source = await databases.create(readFileSync(path.join(legacy, 'setup.sql'), 'utf8'));
      const target = databases.name();
      myCnf();
      follow('load-mysql', { OUT: recoverChain(repo, 'bits'), NEWDB: target });
      assert.equal(mysqlDump(target), mysqlDump(source));
      const bits = 'SELECT id, b1 + 0 AS b1, b12 + 0 AS b12, CAST(b64 AS UNSIGNED) AS b64 FROM flags ORDER BY id';
      assert.deepEqual(await mysqlQuery(target, bits), await mysqlQuery(source, bits));
    });
  });

  describe("an export's RESTORE.md", () => {
    const mysqlDatabases = new MysqlDatabases();
    const pgDatabases = new Databases();

    afterEach(async () => {
      await mysqlDatabases.dropAll();
      await pgDatabases.dropAll();
    });

    const followRestoreMd = (exportFile: string, database: string, variables: Record<string, string> = {}) => followExportRestoreMd(exportFile, database, home, variables);

    it("SQLite: a file whose path has a space, exported under a name with a space, a quote, $ and a backtick: the commands run as written", () => {
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo]).status, 0);
      const db = path.join(dir.path, 'my shop.db');
      buildRichDatabase(db, { rows: 100 });
      backup(repo, db, 'full');
      mutate(db, 1);
      backup(repo, db, 'incremental');
      const conn = new Database(db);
      conn.exec('DELETE FROM books WHERE id % 2 = 0; VACUUM');
      conn.close();
      backup(repo, db, 'incremental');
      mkdirSync(path.join(dir.path, 'exported'));
      const file = path.join(dir.path, 'exported', "it's $HOME `date` now.tar.gz");
      const exported = strata(['export', '--all', '--out', file, '--repo', repo]);
      assert.equal(exported.status, 0, exported.stderr);

      const { restoreMd, folder } = followRestoreMd(file, 'my_shop');
      assert.ok(restoreMd.includes("strata import 'it'\\''s $HOME `date` now.tar.gz' --repo ./restored-repo"), restoreMd);
      assert.equal(sqliteDump(path.join(folder, 'my_shop.db')), sqliteDump(db));
    });

    it('MySQL: commands for the mysql client (none for PostgreSQL), which recover the chain', async function () {
      await requireMysql(this);
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo]).status, 0);
      const source = await mysqlDatabases.create(RICH_MYSQL_SQL);
      // Filed under the name the by-hand restore creates, so it is dropped afterwards too.
      const name = mysqlDatabases.name();
      backup(repo, mysqlUrl(source), 'full', name);
      await mysqlQuery(source, MUTATE_MYSQL_SQL(3));
      backup(repo, mysqlUrl(source), 'incremental', name);
      mkdirSync(path.join(dir.path, 'exported'));
      const file = path.join(dir.path, 'exported', 'shop export.tar.gz');
      assert.equal(strata(['export', name, '--out', file, '--repo', repo]).status, 0);

      myCnf();
      const { restoreMd } = followRestoreMd(file, name);
      assert.match(restoreMd, new RegExp(`--to mysql://USER@HOST:3306/${name}`));
      assert.doesNotMatch(restoreMd, /postgres|psql|\\copy/i);
      assert.equal(mysqlDump(name), mysqlDump(source));
    });

    it('PostgreSQL: commands for psql, which recover the chain', async function () {
      await requirePostgres(this);
      const repo = path.join(dir.path, 'repo');
      assert.equal(strata(['init', '--repo', repo, '--no-encryption']).status, 0);
      const source = await pgDatabases.create(RICH_POSTGRES_SQL);
      const name = pgDatabases.name();
      backup(repo, pgUrl(source), 'full', name);
      await pgQuery(source, MUTATE_POSTGRES_SQL(3));
      backup(repo, pgUrl(source), 'differential', name);
      mkdirSync(path.join(dir.path, 'exported'));
      const file = path.join(dir.path, 'exported', 'nightly (pg).zip');
      assert.equal(strata(['export', name, '--out', file, '--repo', repo]).status, 0);

      const url = new URL(PG_URL);
      const { restoreMd } = followRestoreMd(file, name, { PGHOST: url.hostname, PGPORT: url.port || '5432', PGUSER: decodeURIComponent(url.username || 'postgres') });
      assert.match(restoreMd, new RegExp(`--to postgres://USER@HOST:5432/${name}`));
      assert.match(restoreMd, /--no-encryption/);
      assert.doesNotMatch(restoreMd, /mysql|gpg|PASSFILE/);
      assert.equal(pgDump(name), pgDump(source));
    });
  });
});
