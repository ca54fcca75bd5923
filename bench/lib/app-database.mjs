// The benchmark database: a deterministic, application-like SQLite database (customers, orders,
// order_items, events, attachments, products; 9 secondary indexes), rows of all tables inserted
// interleaved so table and index pages are mixed in the file. Built once per size and cached in
// bench/.data/app-<N>mb.db (with app-<N>mb.db.json describing it).
//
//   ensureDatabase(sizeMb) -> { file, meta, cached }
//   buildDatabase(file, sizeMb) -> meta
//   appendOrders(db, n, { seed }) -> rows added per table (continues the same generator on an open database)
//   openDatabase(file) -> a better-sqlite3 Database (the engine-sqlite package's copy)
//   rowWriter(db, source, state), randomSource(seed), PRODUCTS, sku(id): the generator itself, also
//   used by bench/lib/pg-app-database.mjs with a stand-in for `db` that writes COPY text
import { createRequire } from 'node:module';
import { createCipheriv, createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const DATA = path.join(BENCH, '.data');
export const GENERATOR_VERSION = 1;

/** better-sqlite3, as installed for packages/engine-sqlite. */
export function betterSqlite3() {
  const require = createRequire(new URL('../../packages/engine-sqlite/package.json', import.meta.url));
  return require('better-sqlite3');
}

// ---------------------------------------------------------------------------------------------
// Deterministic data generation

/** sfc32: small, fast, seedable. Returns a float in [0, 1). */
export function prng(seed) {
  let a = 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = seed >>> 0;
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 20; i++) next();
  return next;
}

const WORDS = ('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore ' +
  'magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure ' +
  'in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui ' +
  'officia deserunt mollit anim id est laborum invoice order shipment delivered returned payment refund customer address street ' +
  'avenue road city postal code warehouse parcel tracking number carrier express standard priority weight dimensions fragile ' +
  'handling instructions signature required gift wrap message thank you for your purchase account balance credit debit tax vat ' +
  'subtotal total discount coupon promotion seasonal clearance new arrival bestseller limited edition colour size small medium large ' +
  'cotton wool leather steel wood glass ceramic plastic recycled organic premium basic deluxe bundle accessory spare part manual ' +
  'warranty support ticket escalated resolved pending review rating stars recommend quality fast slow broken replacement exchange').split(' ');
const FIRST = ['Anna', 'Ben', 'Chloé', 'David', 'Elif', 'Farid', 'Grace', 'Hiro', 'Ines', 'Jonas', 'Kira', 'Liam', 'María', 'Noah', 'Olga', 'Pavel', 'Quinn', 'Rosa', 'Sven', 'Tara', 'Uma', 'Victor', 'Wen', 'Xavier', 'Yara', 'Zoë', 'Émile', 'Søren', 'Łukasz', 'Ngozi'];
const LAST = ['Smith', 'Müller', 'García', 'Rossi', 'Dubois', 'Nowak', 'Kowalski', 'Jensen', 'Silva', 'Tanaka', 'Kim', 'Nguyen', 'Okafor', 'Ivanova', 'Yılmaz', 'Andersson', 'O\'Brien', 'Papadopoulos', 'Novák', 'Haddad'];
const DOMAINS = ['example.com', 'mail.example.org', 'inbox.example.net', 'corp.example', 'post.example.de', 'web.example.fr'];
const COUNTRIES = ['DE', 'FR', 'US', 'GB', 'NL', 'ES', 'IT', 'PL', 'SE', 'JP', 'BR', 'CA', 'AU', 'IN', 'NG', 'TR'];
const CITIES = ['Berlin', 'Paris', 'Austin', 'Leeds', 'Utrecht', 'Valencia', 'Torino', 'Kraków', 'Malmö', 'Osaka', 'Recife', 'Halifax', 'Perth', 'Pune', 'Lagos', 'İzmir'];
const STATUSES = ['pending', 'paid', 'paid', 'shipped', 'shipped', 'shipped', 'delivered', 'delivered', 'delivered', 'delivered', 'cancelled', 'refunded'];
const CURRENCIES = ['EUR', 'EUR', 'USD', 'USD', 'GBP', 'JPY', 'PLN', 'SEK'];
const EVENT_TYPES = ['page_view', 'page_view', 'page_view', 'search', 'add_to_cart', 'remove_from_cart', 'checkout_started', 'payment_attempt', 'login', 'logout', 'email_opened', 'support_message'];
const PATHS = ['/', '/products', '/products/', '/cart', '/checkout', '/account', '/orders/', '/search', '/help/shipping', '/help/returns', '/blog/', '/deals'];
const AGENTS = ['Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36', 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148', 'StrataShopApp/4.2.1 (Android 15; Pixel 8)'];
const MIMES = [['pdf', 'application/pdf'], ['png', 'image/png'], ['jpg', 'image/jpeg'], ['txt', 'text/plain'], ['csv', 'text/csv'], ['json', 'application/json']];

export const SCHEMA = `
  CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, title TEXT NOT NULL, price_cents INTEGER NOT NULL, description TEXT);
  CREATE TABLE customers (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL, country TEXT NOT NULL, city TEXT,
    address TEXT, phone TEXT, created_at TEXT NOT NULL, marketing_opt_in INTEGER NOT NULL DEFAULT 0, notes TEXT);
  CREATE UNIQUE INDEX customers_email ON customers(email);
  CREATE INDEX customers_country_created ON customers(country, created_at);
  CREATE TABLE orders (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), status TEXT NOT NULL,
    currency TEXT NOT NULL, total_cents INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT,
    shipping_address TEXT, note TEXT);
  CREATE INDEX orders_customer_created ON orders(customer_id, created_at);
  CREATE INDEX orders_status_created ON orders(status, created_at);
  CREATE TABLE order_items (
    id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id), product_id INTEGER NOT NULL REFERENCES products(id),
    sku TEXT NOT NULL, description TEXT, quantity INTEGER NOT NULL, unit_price_cents INTEGER NOT NULL, discount REAL);
  CREATE INDEX order_items_order ON order_items(order_id);
  CREATE INDEX order_items_product ON order_items(product_id);
  CREATE TABLE events (id INTEGER PRIMARY KEY, customer_id INTEGER, type TEXT NOT NULL, ts INTEGER NOT NULL, payload TEXT NOT NULL);
  CREATE INDEX events_customer_ts ON events(customer_id, ts);
  CREATE INDEX events_type_ts ON events(type, ts);
  CREATE TABLE attachments (
    id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id), filename TEXT NOT NULL, mime TEXT NOT NULL,
    size INTEGER NOT NULL, data BLOB NOT NULL);
  CREATE INDEX attachments_order ON attachments(order_id);
  PRAGMA user_version = 42;
`;


/** Random helpers over one sfc32 stream; every draw comes from `rnd`, in call order. */
export function randomSource(seed) {
  const rnd = prng(seed);
  const int = (n) => Math.floor(rnd() * n);
  const pick = (a) => a[int(a.length)];
  const words = (n) => { let s = pick(WORDS); for (let i = 1; i < n; i++) s += ' ' + pick(WORDS); return s; };
  const hex = (n) => { let s = ''; while (s.length < n) s += int(0x100000000).toString(16).padStart(8, '0'); return s.slice(0, n); };
  return { rnd, int, pick, words, hex };
}

export const PRODUCTS = 20000;
export const sku = (productId) => `SKU-${(productId * 7919).toString(36).toUpperCase().padStart(6, '0')}`;

/**
 * Inserts customers and orders (each with its items, events and, to keep blobs at ~31% of the
 * bytes, sometimes an attachment) into an open database with the schema above, continuing from
 * `state` ({ clock, customers, orders }: the time in seconds and the highest ids so far).
 * `blobKey` names the AES-CTR key whose keystream makes the random blob bytes.
 */
export function rowWriter(db, source, state, blobKey = 'strata-bench-blobs') {
  const { rnd, int, pick, words, hex } = source;
  // Random blob bytes: AES-256-CTR keystream of a fixed key (deterministic and fast).
  const keystream = createCipheriv('aes-256-ctr', createHash('sha256').update(blobKey).digest(), Buffer.alloc(16));
  const zeros = Buffer.alloc(64 * 1024);

  const ins = {
    customer: db.prepare('INSERT INTO customers (id, email, name, country, city, address, phone, created_at, marketing_opt_in, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    order: db.prepare('INSERT INTO orders (id, customer_id, status, currency, total_cents, created_at, updated_at, shipping_address, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    item: db.prepare('INSERT INTO order_items (order_id, product_id, sku, description, quantity, unit_price_cents, discount) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    event: db.prepare('INSERT INTO events (customer_id, type, ts, payload) VALUES (?, ?, ?, ?)'),
    attachment: db.prepare('INSERT INTO attachments (order_id, filename, mime, size, data) VALUES (?, ?, ?, ?, ?)'),
  };

  const s = { clock: state.clock, customers: state.customers, orders: state.orders, blobBytes: 0, otherBytes: 0, attachments: 0, items: 0, events: 0, newCustomers: 0, newOrders: 0 };
  const iso = (t) => new Date(t * 1000).toISOString();
  const address = () => `${1 + int(300)} ${words(2)} street, ${pick(CITIES)} ${10000 + int(89999)}`;

  const addCustomer = () => {
    const id = ++s.customers;
    s.newCustomers++;
    const first = pick(FIRST), last = pick(LAST);
    // (id * odd constant) mod 2^32 is a bijection: unique, but scattered across the email index.
    const tag = (Math.imul(id, 0x9e3779b1) >>> 0).toString(36);
    const email = `${first.toLowerCase()}.${last.toLowerCase().replace(/'/g, '')}.${tag}@${pick(DOMAINS)}`;
    const notes = rnd() < 0.3 ? words(5 + int(40)) : null;
    const addr = address();
    ins.customer.run(id, email, `${first} ${last}`, pick(COUNTRIES), pick(CITIES), addr, `+${10 + int(89)} ${100000000 + int(899999999)}`, iso(s.clock - int(86400 * 30)), int(2), notes);
    s.otherBytes += 120 + email.length * 2 + addr.length + (notes ? notes.length : 0);
  };

  const addOrder = () => {
    s.clock += 1 + int(120);
    const id = ++s.orders;
    s.newOrders++;
    const customerId = 1 + int(s.customers);
    const nItems = 1 + int(6);
    const lines = [];
    let total = 0;
    for (let i = 0; i < nItems; i++) {
      const productId = 1 + int(PRODUCTS);
      const qty = 1 + int(rnd() < 0.8 ? 2 : 20);
      const price = 199 + int(30000);
      total += qty * price;
      const desc = rnd() < 0.6 ? words(3 + int(10)) : null;
      lines.push([id, productId, sku(productId), desc, qty, price, rnd() < 0.2 ? Math.round(rnd() * 30) / 100 : null]);
      s.otherBytes += 90 + (desc ? desc.length : 0);
    }
    const note = rnd() < 0.25 ? words(4 + int(25)) : null;
    const ship = address();
    ins.order.run(id, customerId, pick(STATUSES), pick(CURRENCIES), total, iso(s.clock), rnd() < 0.7 ? iso(s.clock + int(86400 * 10)) : null, ship, note);
    s.otherBytes += 150 + ship.length + (note ? note.length : 0);
    for (const line of lines) ins.item.run(...line);
    s.items += nItems;

    const nEvents = int(6);
    for (let i = 0; i < nEvents; i++) {
      const type = pick(EVENT_TYPES);
      const ts = s.clock * 1000 - int(3600_000);
      const p = pick(PATHS);
      const payload = JSON.stringify({
        session: hex(16),
        type,
        path: p.endsWith('/') && p.length > 1 ? p + (1 + int(PRODUCTS)) : p,
        referrer: rnd() < 0.4 ? `https://${pick(DOMAINS)}/${words(2).replace(' ', '-')}` : null,
        ua: pick(AGENTS),
        ip: `${int(224)}.${int(256)}.${int(256)}.${int(256)}`,
        props: type === 'search' ? { q: words(1 + int(4)), results: int(200) }
          : type === 'add_to_cart' || type === 'remove_from_cart' ? { product: 1 + int(PRODUCTS), qty: 1 + int(3) }
          : type === 'support_message' ? { ticket: hex(8), text: words(10 + int(60)) }
          : { ms: int(5000), viewport: pick(['1920x1080', '1366x768', '390x844', '2560x1440']) },
        ab: { checkout_v2: rnd() < 0.5, free_shipping_banner: rnd() < 0.3 },
      });
      ins.event.run(rnd() < 0.9 ? 1 + int(s.customers) : null, type, ts, payload);
      s.otherBytes += 80 + payload.length;
      s.events++;
    }

    // Attachments keep blobs at ~30% of the file (the byte estimate above undercounts overhead a little).
    if (s.blobBytes < 0.31 * (s.blobBytes + s.otherBytes)) {
      const size = 2048 + int(60 * 1024 + 1); // 2-62 KiB
      let data;
      if (s.attachments % 2 === 0) {
        data = Buffer.from(keystream.update(zeros.subarray(0, size))); // random: incompressible
      } else {
        let text = '';
        while (text.length < size) text += `${iso(s.clock - int(1e6))} ${pick(['INFO', 'INFO', 'WARN', 'DEBUG'])} ${words(6 + int(14))}\n`;
        data = Buffer.from(text.slice(0, size)); // text-like: compressible
      }
      const [ext, mime] = pick(MIMES);
      ins.attachment.run(id, `${words(2).replace(' ', '_')}_${id}.${ext}`, mime, size, data);
      s.blobBytes += size;
      s.attachments++;
    }
  };

  /** One step of the generator: sometimes a new customer (always for the first 1,000), then an order. */
  const step = () => {
    if (s.customers < 1000 || rnd() < 0.12) addCustomer();
    addOrder();
  };
  return { step, stats: s };
}

export function buildDatabase(file, sizeMb) {
  const Database = betterSqlite3();
  const target = sizeMb * 1024 * 1024;
  const tmp = `${file}.building`;
  for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`]) fs.rmSync(f, { force: true });
  const started = performance.now();
  const db = new Database(tmp);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('cache_size = -2097152'); // 2 GiB page cache while building
  db.exec(SCHEMA);

  const source = randomSource(20261121);
  const { int, words } = source;
  const insProduct = db.prepare('INSERT INTO products (id, sku, title, price_cents, description) VALUES (?, ?, ?, ?, ?)');
  db.transaction(() => {
    for (let id = 1; id <= PRODUCTS; id++) insProduct.run(id, sku(id), words(3 + int(4)), 199 + int(50000), words(10 + int(30)));
  })();

  // The clock is in seconds and advances with every order.
  const writer = rowWriter(db, source, { clock: Date.UTC(2023, 0, 1) / 1000, customers: 0, orders: 0 });
  const s = writer.stats;
  const batch = db.transaction((n) => { for (let i = 0; i < n; i++) writer.step(); });
  const pageSize = db.pragma('page_size', { simple: true });
  let pages = 0;
  while (pages * pageSize < target) {
    // Big transactions (up to 20,000 orders, ~50 MB), smaller near the end so the size lands close.
    const perOrder = s.orders ? (pages * pageSize) / s.orders : 3000;
    batch(Math.max(200, Math.min(20000, Math.ceil((target - pages * pageSize) / perOrder))));
    pages = db.pragma('page_count', { simple: true });
    process.stderr.write(`\r  building ${path.basename(file)}: ${(pages * pageSize / 1048576).toFixed(0)} / ${sizeMb} MiB`);
  }
  process.stderr.write('\n');
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.pragma('optimize');
  db.close();
  fs.renameSync(tmp, file);
  for (const f of [`${tmp}-wal`, `${tmp}-shm`]) fs.rmSync(f, { force: true });
  const meta = {
    generatorVersion: GENERATOR_VERSION, sizeMb, bytes: fs.statSync(file).size, pageSize,
    rows: { products: PRODUCTS, customers: s.customers, orders: s.orders, order_items: s.items, events: s.events, attachments: s.attachments },
    blobBytes: s.blobBytes, buildSeconds: Math.round((performance.now() - started) / 100) / 10,
  };
  fs.writeFileSync(`${file}.json`, JSON.stringify(meta, null, 2) + '\n');
  return meta;
}

/** The cached database of `sizeMb` MiB, built first if missing or made by another generator version. */
export function ensureDatabase(sizeMb) {
  fs.mkdirSync(DATA, { recursive: true });
  const file = path.join(DATA, `app-${sizeMb}mb.db`);
  try {
    const meta = JSON.parse(fs.readFileSync(`${file}.json`, 'utf8'));
    if (meta.generatorVersion === GENERATOR_VERSION && fs.statSync(file).size === meta.bytes) return { file, meta, cached: true };
  } catch { /* build it */ }
  return { file, meta: buildDatabase(file, sizeMb), cached: false };
}

/**
 * Appends `n` orders to an open benchmark database, continuing where it ends (ids, clock), with
 * the same mix as the build (items, events, new customers, attachments keeping blobs at ~31% of
 * the new bytes) but a different random stream and blob keystream. One transaction.
 * Returns the rows added per table.
 */
export function appendOrders(db, n, { seed = 1 } = {}) {
  const last = db.prepare('SELECT (SELECT max(id) FROM customers) AS customers, (SELECT max(id) FROM orders) AS orders, (SELECT max(created_at) FROM orders) AS createdAt').get();
  const writer = rowWriter(db, randomSource(seed), {
    clock: Math.floor(Date.parse(last.createdAt) / 1000), customers: last.customers, orders: last.orders,
  }, `strata-bench-blobs-append-${seed}`);
  db.transaction(() => { for (let i = 0; i < n; i++) writer.step(); })();
  const s = writer.stats;
  return { customers: s.newCustomers, orders: s.newOrders, order_items: s.items, events: s.events, attachments: s.attachments };
}
