// Benchmark: Strata full backup/restore of a SQLite database against the by-hand pipeline
//   backup:  sqlite3 DB ".backup SNAP" && zstd -3 -q -c SNAP | gpg --symmetric AES256 ... && sync OUT
//   restore: gpg --decrypt OUT | zstd -d > T && sync T
//
//   node bench/sqlite-full.mjs [--size-mb 1024] [--rounds 3] [--keep] [--profile]
//
// The database (deterministic, seeded) is built once and cached in bench/.data/. Runs alternate
// Strata and the by-hand pipeline (A B A B ...); medians are reported. Results are also written
// to bench/.data/results-<size>mb.json; when results for another size exist, the peak-RSS
// scaling target (same within 10%) is checked too. --profile instead runs one Strata backup and
// one restore under `node --cpu-prof` and prints the top self-time functions per thread.
import { createRequire } from 'node:module';
import { spawn, spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH, '..');
const DATA = path.join(BENCH, '.data');
const CLI = path.join(ROOT, 'packages/cli/dist/main.js');
const REPORTER = path.join(BENCH, 'rss-reporter.mjs');
const GENERATOR_VERSION = 1;
const PASSPHRASE = 'strata-bench correct horse battery staple';

const { values: opts } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '3' },
    keep: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (opts.help) {
  console.log('node bench/sqlite-full.mjs [--size-mb N (1024)] [--rounds N (3)] [--keep] [--profile]');
  process.exit(0);
}
const SIZE_MB = Number(opts['size-mb']);
const ROUNDS = Number(opts.rounds);
if (!(SIZE_MB >= 1) || !(ROUNDS >= 1)) throw new Error('--size-mb and --rounds must be positive numbers');

// ---------------------------------------------------------------------------------------------
// Deterministic data generation

/** sfc32: small, fast, seedable. Returns a float in [0, 1). */
function prng(seed) {
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

const SCHEMA = `
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

function buildDatabase(file, sizeMb) {
  const require = createRequire(new URL('../packages/engine-sqlite/package.json', import.meta.url));
  const Database = require('better-sqlite3');
  const target = sizeMb * 1024 * 1024;
  const tmp = `${file}.building`;
  for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`]) fs.rmSync(f, { force: true });
  const started = performance.now();
  const db = new Database(tmp);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('cache_size = -2097152'); // 2 GiB page cache while building
  db.exec(SCHEMA);

  const rnd = prng(20261121);
  const int = (n) => Math.floor(rnd() * n);
  const pick = (a) => a[int(a.length)];
  const words = (n) => { let s = pick(WORDS); for (let i = 1; i < n; i++) s += ' ' + pick(WORDS); return s; };
  const hex = (n) => { let s = ''; while (s.length < n) s += int(0x100000000).toString(16).padStart(8, '0'); return s.slice(0, n); };
  // Random blob bytes: AES-256-CTR keystream of a fixed key (deterministic and fast).
  const keystream = createCipheriv('aes-256-ctr', createHash('sha256').update('strata-bench-blobs').digest(), Buffer.alloc(16));
  const zeros = Buffer.alloc(64 * 1024);

  const ins = {
    product: db.prepare('INSERT INTO products (id, sku, title, price_cents, description) VALUES (?, ?, ?, ?, ?)'),
    customer: db.prepare('INSERT INTO customers (id, email, name, country, city, address, phone, created_at, marketing_opt_in, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    order: db.prepare('INSERT INTO orders (id, customer_id, status, currency, total_cents, created_at, updated_at, shipping_address, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    item: db.prepare('INSERT INTO order_items (order_id, product_id, sku, description, quantity, unit_price_cents, discount) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    event: db.prepare('INSERT INTO events (customer_id, type, ts, payload) VALUES (?, ?, ?, ?)'),
    attachment: db.prepare('INSERT INTO attachments (order_id, filename, mime, size, data) VALUES (?, ?, ?, ?, ?)'),
  };

  const PRODUCTS = 20000;
  db.transaction(() => {
    for (let id = 1; id <= PRODUCTS; id++) {
      ins.product.run(id, `SKU-${(id * 7919).toString(36).toUpperCase().padStart(6, '0')}`, words(3 + int(4)), 199 + int(50000), words(10 + int(30)));
    }
  })();

  let clock = Date.UTC(2023, 0, 1) / 1000; // seconds; advances with every order
  let customers = 0, orders = 0, blobBytes = 0, otherBytes = 0, attachments = 0, items = 0, events = 0;
  const iso = (s) => new Date(s * 1000).toISOString();
  const address = () => `${1 + int(300)} ${words(2)} street, ${pick(CITIES)} ${10000 + int(89999)}`;

  const addCustomer = () => {
    const id = ++customers;
    const first = pick(FIRST), last = pick(LAST);
    // (id * odd constant) mod 2^32 is a bijection: unique, but scattered across the email index.
    const tag = (Math.imul(id, 0x9e3779b1) >>> 0).toString(36);
    const email = `${first.toLowerCase()}.${last.toLowerCase().replace(/'/g, '')}.${tag}@${pick(DOMAINS)}`;
    const notes = rnd() < 0.3 ? words(5 + int(40)) : null;
    const addr = address();
    ins.customer.run(id, email, `${first} ${last}`, pick(COUNTRIES), pick(CITIES), addr, `+${10 + int(89)} ${100000000 + int(899999999)}`, iso(clock - int(86400 * 30)), int(2), notes);
    otherBytes += 120 + email.length * 2 + addr.length + (notes ? notes.length : 0);
  };

  const addOrder = () => {
    clock += 1 + int(120);
    const id = ++orders;
    const customerId = 1 + int(customers);
    const nItems = 1 + int(6);
    const lines = [];
    let total = 0;
    for (let i = 0; i < nItems; i++) {
      const productId = 1 + int(PRODUCTS);
      const qty = 1 + int(rnd() < 0.8 ? 2 : 20);
      const price = 199 + int(30000);
      total += qty * price;
      const desc = rnd() < 0.6 ? words(3 + int(10)) : null;
      lines.push([id, productId, `SKU-${(productId * 7919).toString(36).toUpperCase().padStart(6, '0')}`, desc, qty, price, rnd() < 0.2 ? Math.round(rnd() * 30) / 100 : null]);
      otherBytes += 90 + (desc ? desc.length : 0);
    }
    const note = rnd() < 0.25 ? words(4 + int(25)) : null;
    const ship = address();
    ins.order.run(id, customerId, pick(STATUSES), pick(CURRENCIES), total, iso(clock), rnd() < 0.7 ? iso(clock + int(86400 * 10)) : null, ship, note);
    otherBytes += 150 + ship.length + (note ? note.length : 0);
    for (const line of lines) ins.item.run(...line);
    items += nItems;

    const nEvents = int(6);
    for (let i = 0; i < nEvents; i++) {
      const type = pick(EVENT_TYPES);
      const ts = clock * 1000 - int(3600_000);
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
      ins.event.run(rnd() < 0.9 ? 1 + int(customers) : null, type, ts, payload);
      otherBytes += 80 + payload.length;
      events++;
    }

    // Attachments keep blobs at ~30% of the file (the byte estimate above undercounts overhead a little).
    if (blobBytes < 0.31 * (blobBytes + otherBytes)) {
      const size = 2048 + int(60 * 1024 + 1); // 2-62 KiB
      let data;
      if (attachments % 2 === 0) {
        data = Buffer.from(keystream.update(zeros.subarray(0, size))); // random: incompressible
      } else {
        let s = '';
        while (s.length < size) s += `${iso(clock - int(1e6))} ${pick(['INFO', 'INFO', 'WARN', 'DEBUG'])} ${words(6 + int(14))}\n`;
        data = Buffer.from(s.slice(0, size)); // text-like: compressible
      }
      const [ext, mime] = pick(MIMES);
      ins.attachment.run(id, `${words(2).replace(' ', '_')}_${id}.${ext}`, mime, size, data);
      blobBytes += size;
      attachments++;
    }
  };

  const batch = db.transaction((n) => {
    for (let i = 0; i < n; i++) {
      if (customers < 1000 || rnd() < 0.12) addCustomer();
      addOrder();
    }
  });
  const pageSize = db.pragma('page_size', { simple: true });
  let pages = 0;
  while (pages * pageSize < target) {
    // Big transactions (up to 20,000 orders, ~50 MB), smaller near the end so the size lands close.
    const perOrder = orders ? (pages * pageSize) / orders : 3000;
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
    rows: { products: PRODUCTS, customers, orders, order_items: items, events, attachments },
    blobBytes, buildSeconds: Math.round((performance.now() - started) / 100) / 10,
  };
  fs.writeFileSync(`${file}.json`, JSON.stringify(meta, null, 2) + '\n');
  return meta;
}

function ensureDatabase(sizeMb) {
  fs.mkdirSync(DATA, { recursive: true });
  const file = path.join(DATA, `app-${sizeMb}mb.db`);
  try {
    const meta = JSON.parse(fs.readFileSync(`${file}.json`, 'utf8'));
    if (meta.generatorVersion === GENERATOR_VERSION && fs.statSync(file).size === meta.bytes) return { file, meta, cached: true };
  } catch { /* build it */ }
  return { file, meta: buildDatabase(file, sizeMb), cached: false };
}

// ---------------------------------------------------------------------------------------------
// Running things

const HAVE_GNU_TIME = spawnSync('/usr/bin/time', ['-f', '%M', 'true'], { encoding: 'utf8' }).status === 0;

/** CPU seconds (all cores, user+system+irq) the machine has spent busy since boot, from /proc/stat. */
function machineBusySeconds() {
  try {
    const [, user, nice, system, , , irq, softirq, steal] = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
    return (user + nice + system + irq + softirq + steal) / 100; // USER_HZ is 100 on Linux
  } catch { return NaN; }
}

/**
 * Runs a command; resolves with wall time (ms), stdout, and when measured the peak RSS (KiB) and
 * CPU seconds of the child, plus `otherCpu`: CPU seconds other processes on the machine used
 * meanwhile (machine busy time minus the child's), to see whether a run was disturbed.
 */
function run(cmd, args, { env = process.env, measureRss = false } = {}) {
  let rssFile;
  let argv = [cmd, ...args];
  let childEnv = env;
  if (measureRss) {
    rssFile = path.join(os.tmpdir(), `strata-bench-rss-${process.pid}-${Math.random().toString(36).slice(2)}`);
    if (HAVE_GNU_TIME) argv = ['/usr/bin/time', '-f', '%M %U %S', '-o', rssFile, ...argv];
    else if (cmd === process.execPath) { argv = [cmd, '--import', REPORTER, ...args]; childEnv = { ...env, STRATA_BENCH_RSS_FILE: rssFile }; }
  }
  return new Promise((resolve, reject) => {
    const busy0 = machineBusySeconds();
    const started = performance.now();
    const child = spawn(argv[0], argv.slice(1), { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = performance.now() - started;
      const busy = machineBusySeconds() - busy0;
      let rssKiB, cpuSec, otherCpu;
      if (rssFile) {
        try {
          const [kib, user, sys] = fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
          rssKiB = kib;
          cpuSec = user + sys;
          otherCpu = Math.max(0, busy - cpuSec);
        } catch { /* none */ }
        fs.rmSync(rssFile, { force: true });
      }
      if (code !== 0) reject(new Error(`${argv.join(' ')} exited with ${code}\n${err}${out}`));
      else resolve({ wallMs, stdout: out, stderr: err, rssKiB, cpuSec, otherCpu });
    });
  });
}

const sh = (script, env) => run('bash', ['-c', `set -euo pipefail\n${script}`], { env: { ...process.env, ...env }, measureRss: true });
const strata = (args, extra = {}) => run(process.execPath, [...(extra.nodeArgs ?? []), CLI, ...args], {
  env: { ...process.env, STRATA_PASSPHRASE: PASSPHRASE }, measureRss: true,
});

/** Identifies the built CLI (names, sizes and mtimes of the files in packages/<pkg>/dist), to notice a rebuild mid-benchmark. */
function distFingerprint() {
  const h = createHash('sha256');
  for (const pkg of fs.readdirSync(path.join(ROOT, 'packages')).sort()) {
    const dist = path.join(ROOT, 'packages', pkg, 'dist');
    if (!fs.existsSync(dist)) continue;
    for (const f of fs.readdirSync(dist, { recursive: true }).sort()) {
      const st = fs.statSync(path.join(dist, f));
      if (st.isFile()) h.update(`${pkg}/${f} ${st.size} ${st.mtimeMs}\n`);
    }
  }
  return h.digest('hex').slice(0, 12);
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const fmtS = (ms) => `${(ms / 1000).toFixed(2)} s`;
const fmtMB = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

// ---------------------------------------------------------------------------------------------

async function main() {
  for (const tool of ['sqlite3', 'zstd', 'gpg', 'gpgconf']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is not installed`);
  }
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run setup first`);

  const { file: DB, meta, cached } = ensureDatabase(SIZE_MB);
  console.log(`database: ${DB} (${fmtMB(meta.bytes)}, ${cached ? 'cached' : `built in ${meta.buildSeconds} s`}; ` +
    `${Object.entries(meta.rows).map(([k, v]) => `${k} ${v}`).join(', ')}; blobs ${(100 * meta.blobBytes / meta.bytes).toFixed(0)}% of bytes)`);

  const WORK = path.join(DATA, `work-${SIZE_MB}mb`);
  fs.rmSync(WORK, { recursive: true, force: true });
  fs.mkdirSync(WORK, { recursive: true });
  const GNUPGHOME = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-bench-gnupg-'));
  fs.chmodSync(GNUPGHOME, 0o700);
  const PASSFILE = path.join(GNUPGHOME, 'passphrase');
  fs.writeFileSync(PASSFILE, PASSPHRASE, { mode: 0o600 });
  const REPO = path.join(WORK, 'repo');
  const handEnv = { GNUPGHOME, PASSFILE, DB, SNAP: path.join(WORK, 'snap.db'), OUT: path.join(WORK, 'hand.db.zst.gpg'), T: path.join(WORK, 'hand-restored.db') };
  const strataTarget = path.join(WORK, 'strata-restored.db');

  try {
    // Warm the page cache so the first run is not the only one reading from disk.
    await run('sh', ['-c', `cat "$0" > /dev/null`, DB]);
    await strata(['init', '--repo', REPO, '--json']);

    if (opts.profile) return await profile(DB, REPO, WORK, strataTarget);

    const r = { strataBackup: [], handBackup: [], strataRestore: [], handRestore: [] };
    const dist = distFingerprint();
    for (let round = 1; round <= ROUNDS; round++) {
      // A: Strata backup
      const b = await strata(['backup', DB, '--repo', REPO, '--json']);
      const backup = JSON.parse(b.stdout).backup;
      r.strataBackup.push({ wallMs: b.wallMs, bytes: backup.storedBytes, rssKiB: b.rssKiB, cpuSec: b.cpuSec, otherCpu: b.otherCpu, id: backup.id });
      // B: by hand
      const h = await sh(`sqlite3 "$DB" ".backup '$SNAP'"
zstd -3 -q -c "$SNAP" | gpg --batch --yes --quiet --symmetric --cipher-algo AES256 --pinentry-mode loopback --passphrase-fd 3 -z 0 -o "$OUT" 3<"$PASSFILE"
sync "$OUT"`, handEnv);
      r.handBackup.push({ wallMs: h.wallMs, bytes: fs.statSync(handEnv.OUT).size, rssKiB: h.rssKiB, cpuSec: h.cpuSec, otherCpu: h.otherCpu });
      fs.rmSync(handEnv.SNAP, { force: true });
      // A: Strata restore
      fs.rmSync(strataTarget, { force: true });
      const sr = await strata(['restore', backup.id, '--repo', REPO, '--to', strataTarget, '--json']);
      r.strataRestore.push({ wallMs: sr.wallMs, bytes: fs.statSync(strataTarget).size, rssKiB: sr.rssKiB, cpuSec: sr.cpuSec, otherCpu: sr.otherCpu });
      // B: by hand
      fs.rmSync(handEnv.T, { force: true });
      const hr = await sh(`gpg --batch --quiet --pinentry-mode loopback --passphrase-fd 3 --decrypt "$OUT" 3<"$PASSFILE" | zstd -d -q -c > "$T"
sync "$T"`, handEnv);
      r.handRestore.push({ wallMs: hr.wallMs, bytes: fs.statSync(handEnv.T).size, rssKiB: hr.rssKiB, cpuSec: hr.cpuSec, otherCpu: hr.otherCpu });
      console.log(`round ${round}/${ROUNDS}: backup strata ${fmtS(b.wallMs)} / hand ${fmtS(h.wallMs)}; ` +
        `restore strata ${fmtS(sr.wallMs)} / hand ${fmtS(hr.wallMs)}; strata RSS backup ${fmtMB(b.rssKiB * 1024)}, restore ${fmtMB(sr.rssKiB * 1024)}; ` +
        `CPU s strata/hand backup ${b.cpuSec?.toFixed(1)}/${h.cpuSec?.toFixed(1)}, restore ${sr.cpuSec?.toFixed(1)}/${hr.cpuSec?.toFixed(1)}; ` +
        `other processes used ${[b, h, sr, hr].map((x) => x.otherCpu?.toFixed(1)).join('/')} CPU s`);
    }

    if (distFingerprint() !== dist) console.log('WARNING: packages/<pkg>/dist changed while the benchmark ran (someone rebuilt); the Strata runs used different builds');

    // Sanity: both restored files are sound databases with all the rows.
    for (const f of [strataTarget, handEnv.T]) {
      const check = spawnSync('sqlite3', [f, 'PRAGMA quick_check; SELECT count(*) FROM orders;'], { encoding: 'utf8' });
      const [ok, n] = check.stdout.trim().split('\n');
      if (ok !== 'ok' || Number(n) !== meta.rows.orders) throw new Error(`restored ${f} is not sound: ${check.stdout}${check.stderr}`);
    }

    report(r, meta, dist);
  } finally {
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME } });
    fs.rmSync(GNUPGHOME, { recursive: true, force: true });
    if (!opts.keep) fs.rmSync(WORK, { recursive: true, force: true });
  }
}

function report(r, meta, dist) {
  const m = (xs, k) => median(xs.map((x) => x[k]));
  const med = Object.fromEntries(Object.entries(r).map(([k, xs]) => [k, {
    wallMs: m(xs, 'wallMs'), bytes: m(xs, 'bytes'), rssKiB: m(xs, 'rssKiB'), maxRssKiB: Math.max(...xs.map((x) => x.rssKiB)),
    cpuSec: m(xs, 'cpuSec'), otherCpuPerSec: Math.max(...xs.map((x) => x.otherCpu / (x.wallMs / 1000))),
  }]));
  const commit = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const result = {
    date: new Date().toISOString(), commit, dist, sizeMb: SIZE_MB, rounds: ROUNDS, databaseBytes: meta.bytes,
    machine: { nproc: os.availableParallelism?.() ?? os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, cpu: os.cpus()[0]?.model },
    runs: r, medians: med,
  };
  fs.writeFileSync(path.join(DATA, `results-${SIZE_MB}mb.json`), JSON.stringify(result, null, 2) + '\n');

  const B = med.strataBackup, HB = med.handBackup, R = med.strataRestore, HR = med.handRestore;
  const rows = [
    ['backup wall time', fmtS(B.wallMs), fmtS(HB.wallMs), B.wallMs / HB.wallMs, '<= 0.80', B.wallMs / HB.wallMs <= 0.8, fmtMB(B.maxRssKiB * 1024)],
    ['backup size', fmtMB(B.bytes), fmtMB(HB.bytes), B.bytes / HB.bytes, '<= 1.05', B.bytes / HB.bytes <= 1.05, ''],
    ['restore wall time', fmtS(R.wallMs), fmtS(HR.wallMs), R.wallMs / HR.wallMs, '<= 1.50', R.wallMs / HR.wallMs <= 1.5, fmtMB(R.maxRssKiB * 1024)],
  ];
  const lines = [
    `${SIZE_MB} MiB database (${fmtMB(meta.bytes)}), ${ROUNDS} rounds, medians; Strata peak RSS is the largest of the rounds`,
    '',
    '| case | Strata | by hand | Strata / by hand | target | met | Strata peak RSS |',
    '| --- | ---: | ---: | ---: | --- | --- | ---: |',
    ...rows.map(([c, s, p, ratio, t, ok, rss]) => `| ${c} | ${s} | ${p} | ${ratio.toFixed(2)} | ${t} | ${ok ? 'yes' : 'NO'} | ${rss} |`),
    `| peak RSS backup | ${fmtMB(B.maxRssKiB * 1024)} | | | < 300 MB | ${B.maxRssKiB * 1024 < 300e6 ? 'yes' : 'NO'} | |`,
    `| peak RSS restore | ${fmtMB(R.maxRssKiB * 1024)} | | | < 300 MB | ${R.maxRssKiB * 1024 < 300e6 ? 'yes' : 'NO'} | |`,
  ];
  // Peak RSS should not grow with the database: compare with results for other sizes, if any.
  // (Only sizes of 1 GiB and up: small databases say little about how memory scales.)
  const others = SIZE_MB < 1024 ? [] : fs.readdirSync(DATA).filter((f) => /^results-\d+mb\.json$/.test(f) && f !== `results-${SIZE_MB}mb.json` && Number(f.match(/\d+/)[0]) >= 1024);
  for (const f of others) {
    const other = JSON.parse(fs.readFileSync(path.join(DATA, f), 'utf8'));
    for (const [k, label] of [['strataBackup', 'backup'], ['strataRestore', 'restore']]) {
      const a = other.medians[k].maxRssKiB, b = med[k].maxRssKiB;
      const change = Math.max(a, b) / Math.min(a, b) - 1;
      lines.push(`| peak RSS ${label}: ${other.sizeMb} MiB vs ${SIZE_MB} MiB | ${fmtMB(a * 1024)} vs ${fmtMB(b * 1024)} | | ${(b / a).toFixed(2)} | within 10% | ${change <= 0.1 ? 'yes' : 'NO'} | |`);
    }
  }
  lines.push('', `CPU time (user+system, median): backup Strata ${B.cpuSec.toFixed(1)} s, by hand ${HB.cpuSec.toFixed(1)} s; ` +
    `restore Strata ${R.cpuSec.toFixed(1)} s, by hand ${HR.cpuSec.toFixed(1)} s (commit ${commit})`);
  lines.push(`by-hand peak RSS (largest process in the pipeline): backup ${fmtMB(HB.maxRssKiB * 1024)}, restore ${fmtMB(HR.maxRssKiB * 1024)}`);
  const noisy = Math.max(...Object.values(med).map((x) => x.otherCpuPerSec));
  if (noisy > 0.15) lines.push(`WARNING: other processes kept up to ${noisy.toFixed(2)} cores busy during a run; the timings are disturbed`);
  console.log('\n' + lines.join('\n'));
}

// --profile: one Strata backup and one restore under --cpu-prof; top self time per thread.
async function profile(DB, REPO, WORK, target) {
  for (const [name, args] of [['backup', ['backup', DB, '--repo', REPO, '--json']], ['restore', null]]) {
    const dir = path.join(WORK, `cpuprof-${name}`);
    let a = args;
    if (!a) {
      const list = JSON.parse((await strata(['list', '--repo', REPO, '--json'])).stdout);
      const id = (list.backups ?? list)[0].id;
      fs.rmSync(target, { force: true });
      a = ['restore', id, '--repo', REPO, '--to', target, '--json'];
    }
    const res = await strata(a, { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir] });
    console.log(`\n## ${name} under --cpu-prof: ${fmtS(res.wallMs)} wall, peak RSS ${fmtMB(res.rssKiB * 1024)}`);
    for (const f of fs.readdirSync(dir).sort()) summariseProfile(path.join(dir, f));
  }
}

function summariseProfile(file) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    total += dt;
    const cf = byId.get(p.samples[i]).callFrame;
    const key = `${cf.functionName || '(anonymous)'} ${cf.url ? `${cf.url.replace(/^file:\/\//, '').replace(ROOT + '/', '')}:${cf.lineNumber + 1}` : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12);
  console.log(`\n${path.basename(file)} (${(total / 1e6).toFixed(2)} s sampled)`);
  for (const [k, us] of top) console.log(`  ${(us / 1e3).toFixed(0).padStart(7)} ms ${(100 * us / total).toFixed(1).padStart(5)}%  ${k}`);
}

main().catch((err) => {
  console.error(err.stack ?? err);
  process.exit(1);
});
