// The MySQL/MariaDB benchmark database: the application of bench/lib/app-database.mjs (same
// generator, same seed, same row mix) in MySQL types: an ENUM, TIMESTAMP and DATETIME(3), a
// BOOLEAN, DECIMAL, a CHECK constraint, JSON events (LONGTEXT with a json_valid check in MariaDB),
// MEDIUMBLOB attachments (every other one random bytes, the rest log-like text), AUTO_INCREMENT
// keys, 9 secondary indexes (one unique, on scattered e-mail addresses) and 5 foreign keys, all
// InnoDB, utf8mb4. Loaded with LOAD DATA LOCAL INFILE (one connection per table, all in flight
// at once), then the indexes and foreign keys are added (two tables at a time) and the tables
// analyzed.
//
// Built once into the database `strata_bench_app` (its tables are made in
// `strata_bench_app__building` and renamed over when complete). Its table `strata_bench_meta`
// records the generator version and size; a database without it, or of another version or size,
// is built again.
//
//   ensureMysqlDatabase({ server, sizeMb, rebuild }) -> { name, meta, cached }
//   mysql() -> the mysql2/promise module installed for packages/engine-mysql
import { createRequire } from 'node:module';
import { PassThrough } from 'node:stream';
import { PRODUCTS, randomSource, rowWriter, sku } from './app-database.mjs';

export const MYSQL_GENERATOR_VERSION = 1;
export const APP_DB = 'strata_bench_app';
const require = createRequire(new URL('../../packages/engine-mysql/package.json', import.meta.url));
/** mysql2/promise, as installed for packages/engine-mysql. */
export const mysql = () => require('mysql2/promise');

/**
 * Bytes of LOAD DATA text (blobs counted as binary) per byte of the final database
 * (SUM(DATA_LENGTH + INDEX_LENGTH) after ANALYZE TABLE). Measured (generator 1), so the size
 * lands near `sizeMb` without polling the server while loading.
 */
const TEXT_PER_DB_BYTE = 0.71;

const STATUSES = "'pending','paid','shipped','delivered','cancelled','refunded'";
export const MYSQL_SCHEMA = [
  `CREATE TABLE products (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, sku VARCHAR(32) NOT NULL, title VARCHAR(255) NOT NULL,
    price_cents INT NOT NULL, description TEXT) ENGINE=InnoDB`,
  `CREATE TABLE customers (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, email VARCHAR(191) NOT NULL, name VARCHAR(200) NOT NULL,
    country CHAR(2) NOT NULL, city VARCHAR(100), address VARCHAR(255), phone VARCHAR(32), created_at DATETIME NOT NULL,
    marketing_opt_in BOOLEAN NOT NULL DEFAULT FALSE, notes TEXT) ENGINE=InnoDB`,
  `CREATE TABLE orders (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT NOT NULL, status ENUM(${STATUSES}) NOT NULL,
    currency CHAR(3) NOT NULL, total_cents BIGINT NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NULL DEFAULT NULL, shipping_address VARCHAR(255), note TEXT) ENGINE=InnoDB`,
  `CREATE TABLE order_items (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL, product_id BIGINT NOT NULL, sku VARCHAR(32) NOT NULL,
    description TEXT, quantity INT NOT NULL CHECK (quantity > 0), unit_price_cents INT NOT NULL, discount DECIMAL(4,2)) ENGINE=InnoDB`,
  `CREATE TABLE events (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT, type VARCHAR(32) NOT NULL, ts DATETIME(3) NOT NULL,
    payload JSON NOT NULL) ENGINE=InnoDB`,
  `CREATE TABLE attachments (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL, filename VARCHAR(255) NOT NULL, mime VARCHAR(100) NOT NULL,
    size INT UNSIGNED NOT NULL, data MEDIUMBLOB NOT NULL) ENGINE=InnoDB`,
  `CREATE TABLE strata_bench_meta (generator_version INT NOT NULL, size_mb INT NOT NULL, built_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, meta JSON NOT NULL) ENGINE=InnoDB`,
];

const TABLES = ['products', 'customers', 'orders', 'order_items', 'events', 'attachments'];

/** Added after the rows are in, one ALTER per table (InnoDB sorts each index once), two tables at a time. */
const INDEXES = {
  customers: 'ADD UNIQUE KEY customers_email (email), ADD KEY customers_country_created (country, created_at)',
  orders: 'ADD KEY orders_customer_created (customer_id, created_at), ADD KEY orders_status_created (status, created_at)',
  order_items: 'ADD KEY order_items_order (order_id), ADD KEY order_items_product (product_id)',
  events: 'ADD KEY events_customer_ts (customer_id, ts), ADD KEY events_type_ts (type, ts)',
  attachments: 'ADD KEY attachments_order (order_id)',
};
/** With foreign_key_checks off, InnoDB adds these in place without reading the rows. */
const FOREIGN_KEYS = [
  'ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id)',
  'ALTER TABLE order_items ADD CONSTRAINT order_items_order_fk FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE, ' +
    'ADD CONSTRAINT order_items_product_fk FOREIGN KEY (product_id) REFERENCES products (id)',
  'ALTER TABLE events ADD CONSTRAINT events_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE SET NULL',
  'ALTER TABLE attachments ADD CONSTRAINT attachments_order_fk FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE',
];

/** The columns LOAD DATA fills, per table (`@data` is hex, unhexed into the blob). */
const LOAD_COLUMNS = {
  products: '(id, sku, title, price_cents, description)',
  customers: '(id, email, name, country, city, address, phone, created_at, marketing_opt_in, notes)',
  orders: '(id, customer_id, status, currency, total_cents, created_at, updated_at, shipping_address, note)',
  order_items: '(id, order_id, product_id, sku, description, quantity, unit_price_cents, discount)',
  events: '(id, customer_id, type, ts, payload)',
  attachments: '(id, order_id, filename, mime, size, @data) SET data = UNHEX(@data)',
};

// ---------------------------------------------------------------------------------------------
// LOAD DATA text: tab-separated, \N for NULL, backslash escapes (the server's defaults)

const esc = (v) => {
  if (v === null || v === undefined) return '\\N';
  const s = String(v);
  return /[\\\t\n\r\0]/.test(s) ? s.replace(/[\\\t\n\r\0]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\0')) : s;
};
const line = (values) => values.map(esc).join('\t') + '\n';
/** ISO time to DATETIME text: '2023-01-01T10:00:00.000Z' -> '2023-01-01 10:00:00' (UTC; the load session is UTC). */
const dt = (iso, ms = false) => (iso === null ? null : iso.slice(0, ms ? 23 : 19).replace('T', ' '));

/**
 * A stand-in for the better-sqlite3 database that rowWriter() inserts into: each INSERT becomes a
 * line of LOAD DATA text for the same table (ids the SQLite version leaves to the database are counted here).
 */
function loadTextDb() {
  const out = Object.fromEntries(TABLES.map((t) => [t, []]));
  const ids = { order_items: 0, events: 0, attachments: 0 };
  let bytes = 0;
  const rowsOf = {
    customers: (a) => [a[0], a[1], a[2], a[3], a[4], a[5], a[6], dt(a[7]), a[8] ? 1 : 0, a[9]],
    orders: (a) => [a[0], a[1], a[2], a[3], a[4], dt(a[5]), dt(a[6]), a[7], a[8]],
    order_items: (a) => [++ids.order_items, ...a],
    events: ([customerId, type, ts, payload]) => [++ids.events, customerId, type, dt(new Date(ts).toISOString(), true), payload],
    attachments: ([orderId, filename, mime, size, data]) => { bytes -= data.length; return [++ids.attachments, orderId, filename, mime, size, data.toString('hex')]; },
  };
  return {
    out,
    ids,
    /** LOAD DATA bytes so far, blobs counted as binary. */
    get bytes() { return bytes; },
    prepare(sql) {
      const table = /INSERT INTO (\w+)/.exec(sql)[1];
      const rows = rowsOf[table];
      return { run: (...args) => { const l = line(rows(args)); bytes += l.length; out[table].push(l); } };
    },
    /** The LOAD DATA text collected since the last call, per table. */
    take() {
      const chunks = {};
      for (const t of TABLES) { chunks[t] = out[t].join(''); out[t].length = 0; }
      return chunks;
    },
  };
}

// ---------------------------------------------------------------------------------------------

export const ident = (s) => `\`${s.replace(/`/g, '``')}\``;

/** A connection to `server` ({ host, port, user, password? }), optionally selecting `database`, in UTC. */
export async function connect(server, database) {
  const c = await mysql().createConnection({ ...server, ...(database ? { database } : {}), charset: 'UTF8MB4_UNICODE_CI', multipleStatements: false });
  await c.query("SET time_zone = '+00:00'");
  return c;
}

async function buildMysqlDatabase(server, sizeMb, log) {
  const started = performance.now();
  const name = `${APP_DB}__building`;
  const admin = await connect(server);
  const clients = [];
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${ident(name)}`);
    await admin.query(`CREATE DATABASE ${ident(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
    await admin.query(`USE ${ident(name)}`);
    for (const sql of MYSQL_SCHEMA) await admin.query(sql);

    // One connection and one LOAD DATA per table, all in flight at once, fed with back-pressure.
    const loads = {};
    for (const t of TABLES) {
      const c = await connect(server, name);
      clients.push(c);
      await c.query('SET unique_checks = 0, foreign_key_checks = 0');
      const stream = new PassThrough({ highWaterMark: 4 * 1024 * 1024 });
      const done = c.query({
        sql: `LOAD DATA LOCAL INFILE '${t}' INTO TABLE ${ident(t)} CHARACTER SET utf8mb4 ${LOAD_COLUMNS[t]}`,
        infileStreamFactory: () => stream,
      });
      done.catch(() => undefined);
      loads[t] = { client: c, stream, done };
    }
    const write = async (t, text) => {
      const { stream, done } = loads[t];
      // Pieces under 1 MiB: mysql2 sends each piece as one packet.
      for (let at = 0; at < text.length; at += 512 * 1024) {
        if (!stream.write(Buffer.from(text.slice(at, at + 512 * 1024)))) await Promise.race([new Promise((r) => stream.once('drain', r)), done]);
      }
    };

    const db = loadTextDb();
    const source = randomSource(20261121);
    const { int, words } = source;
    // Products first, drawing from the random stream exactly as the SQLite build does.
    for (let id = 1; id <= PRODUCTS; id++) db.out.products.push(line([id, sku(id), words(3 + int(4)), 199 + int(50000), words(10 + int(30))]));
    const writer = rowWriter(db, source, { clock: Date.UTC(2023, 0, 1) / 1000, customers: 0, orders: 0 });
    const s = writer.stats;

    const textTarget = sizeMb * 1048576 * TEXT_PER_DB_BYTE;
    let reported = 0;
    while (db.bytes < textTarget) {
      for (let i = 0; i < 2000; i++) writer.step();
      const chunks = db.take();
      await Promise.all(TABLES.map((t) => write(t, chunks[t])));
      if (db.bytes - reported > 16e6) {
        reported = db.bytes;
        log(`\r  loading ${name}: ${(db.bytes / 1048576).toFixed(0)} / ${(textTarget / 1048576).toFixed(0)} MiB of rows (${s.orders} orders)`);
      }
    }
    for (const t of TABLES) {
      loads[t].stream.end();
      const [result] = await loads[t].done;
      if (result.warningStatus > 0) {
        const [warnings] = await loads[t].client.query('SHOW WARNINGS LIMIT 5');
        throw new Error(`LOAD DATA into ${t}: ${result.warningStatus} warnings, e.g. ${JSON.stringify(warnings)}`);
      }
    }
    const loadSeconds = (performance.now() - started) / 1000;
    log(`\n  rows loaded in ${loadSeconds.toFixed(0)} s; adding indexes and foreign keys\n`);

    // Indexes on two connections, largest tables first, then the foreign keys (not checked: the rows are known good).
    const queue = ['events', 'order_items', 'orders', 'customers', 'attachments'];
    const builders = clients.slice(0, 2);
    await Promise.all(builders.map(async (c) => { while (queue.length) { const t = queue.shift(); await c.query(`ALTER TABLE ${ident(t)} ${INDEXES[t]}`); } }));
    await admin.query('SET foreign_key_checks = 0');
    for (const fk of FOREIGN_KEYS) await admin.query(fk);
    await admin.query('SET foreign_key_checks = 1');
    await admin.query(`ANALYZE TABLE ${TABLES.map(ident).join(', ')}`);

    const rows = { products: PRODUCTS, customers: s.customers, orders: s.orders, order_items: db.ids.order_items, events: db.ids.events, attachments: db.ids.attachments };
    const meta = {
      generatorVersion: MYSQL_GENERATOR_VERSION, sizeMb, rows, blobBytes: s.blobBytes, loadTextBytes: db.bytes,
      buildSeconds: Math.round((performance.now() - started) / 100) / 10, loadSeconds: Math.round(loadSeconds * 10) / 10,
    };
    await admin.query('INSERT INTO strata_bench_meta (generator_version, size_mb, meta) VALUES (?, ?, ?)', [MYSQL_GENERATOR_VERSION, sizeMb, JSON.stringify(meta)]);
    for (const c of clients.splice(0)) await c.end();

    // Into place: MySQL has no RENAME DATABASE, so the tables move (one atomic RENAME TABLE).
    await admin.query(`DROP DATABASE IF EXISTS ${ident(APP_DB)}`);
    await admin.query(`CREATE DATABASE ${ident(APP_DB)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
    const all = [...TABLES, 'strata_bench_meta'];
    await admin.query(`RENAME TABLE ${all.map((t) => `${ident(name)}.${ident(t)} TO ${ident(APP_DB)}.${ident(t)}`).join(', ')}`);
    await admin.query(`DROP DATABASE ${ident(name)}`);
    return meta;
  } catch (err) {
    for (const c of clients) await c.end().catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${ident(name)}`).catch(() => undefined);
    throw err;
  } finally {
    await admin.end().catch(() => undefined);
  }
}

/** What the cached database's marker table says, or null when there is no usable one. */
async function readMeta(server) {
  const c = await connect(server);
  try {
    const [found] = await c.query('SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [APP_DB, 'strata_bench_meta']);
    if (found.length === 0) return null;
    const [rows] = await c.query(`SELECT generator_version, size_mb, meta FROM ${ident(APP_DB)}.strata_bench_meta`);
    const row = rows[0];
    return row ? { ...row, meta: typeof row.meta === 'string' ? JSON.parse(row.meta) : row.meta } : null;
  } finally {
    await c.end();
  }
}

/**
 * The cached benchmark database of about `sizeMb` MiB (data and indexes, as information_schema
 * counts them), built first when missing, of another generator version or size, or when `rebuild`.
 * `server`: { host, port, user, password? } as mysql2 takes them.
 */
export async function ensureMysqlDatabase({ server, sizeMb, rebuild = false, log = (s) => process.stderr.write(s) }) {
  const found = rebuild ? null : await readMeta(server);
  let meta;
  let cached = false;
  if (found && found.generator_version === MYSQL_GENERATOR_VERSION && found.size_mb === sizeMb) {
    meta = found.meta;
    cached = true;
  } else {
    if (found) log(`  ${APP_DB} is of generator ${found.generator_version}, ${found.size_mb} MiB: building it again\n`);
    meta = await buildMysqlDatabase(server, sizeMb, log);
  }
  const c = await connect(server);
  try {
    const [[sizes]] = await c.query(
      'SELECT SUM(DATA_LENGTH) AS tableBytes, SUM(INDEX_LENGTH) AS indexBytes FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [APP_DB]);
    meta.tableBytes = Number(sizes.tableBytes);
    meta.indexBytes = Number(sizes.indexBytes);
    meta.bytes = meta.tableBytes + meta.indexBytes;
  } finally {
    await c.end();
  }
  return { name: APP_DB, meta, cached };
}
