import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';

/**
 * A database with every feature a restore must carry across: WITHOUT ROWID, FTS5, triggers,
 * views, generated columns (virtual and stored), BLOBs (empty, large, random), non-ASCII text,
 * NULLs, foreign keys, AUTOINCREMENT, a user_version. `rows` scales the data.
 */
export function buildRichDatabase(file: string, options: { rows?: number; wal?: boolean } = {}): void {
  const rows = options.rows ?? 200;
  const db = new Database(file);
  if (options.wal ?? true) db.pragma('journal_mode = WAL');
  db.exec(`
    PRAGMA user_version = 42;
    CREATE TABLE authors (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, bio TEXT,
      slug TEXT GENERATED ALWAYS AS (lower(replace(name, ' ', '-'))) STORED,
      initials TEXT GENERATED ALWAYS AS (substr(name, 1, 1)) VIRTUAL);
    CREATE TABLE books (id INTEGER PRIMARY KEY, author_id INTEGER NOT NULL REFERENCES authors(id), title TEXT NOT NULL,
      price NUMERIC, cover BLOB, published TEXT);
    CREATE INDEX books_by_author ON books(author_id, title);
    CREATE TABLE tags (book_id INTEGER NOT NULL, tag TEXT NOT NULL, weight REAL, PRIMARY KEY (book_id, tag)) WITHOUT ROWID;
    CREATE TABLE log (id INTEGER PRIMARY KEY, message TEXT);
    CREATE VIEW expensive_books AS SELECT b.title, a.name FROM books b JOIN authors a ON a.id = b.author_id WHERE b.price > 50;
    CREATE TRIGGER books_log AFTER INSERT ON books BEGIN INSERT INTO log(message) VALUES ('added ' || NEW.title); END;
    CREATE VIRTUAL TABLE search USING fts5(title, body, tokenize = 'unicode61');
  `);
  const names = ['Zoë Ångström', '村上 春樹', 'Σαπφώ', 'Лев Толстой', 'Chinua Achebe', 'Ngũgĩ wa Thiong’o', '🐉 Dragon'];
  const addAuthor = db.prepare('INSERT INTO authors(name, bio) VALUES (?, ?)');
  const addBook = db.prepare('INSERT INTO books(author_id, title, price, cover, published) VALUES (?, ?, ?, ?, ?)');
  const addTag = db.prepare('INSERT INTO tags(book_id, tag, weight) VALUES (?, ?, ?)');
  const addSearch = db.prepare('INSERT INTO search(title, body) VALUES (?, ?)');
  db.transaction(() => {
    for (let i = 0; i < names.length; i++) addAuthor.run(names[i], i % 2 ? null : `Biografie ${i} — “quoted”, 'apostrophes', tabs\tand\nnewlines`);
    for (let i = 1; i <= rows; i++) {
      const cover = i % 10 === 0 ? Buffer.alloc(0) : i % 7 === 0 ? null : randomBytes(i % 13 === 0 ? 20000 : 200);
      addBook.run(1 + (i % names.length), `Titel ${i} ✓ ñ`, i % 3 === 0 ? i * 1.25 : i, cover, i % 4 ? `2020-01-${String(1 + (i % 28)).padStart(2, '0')}` : null);
      addTag.run(i, `tag-${i % 5}`, i / 7);
      addSearch.run(`Titel ${i}`, `Der Inhalt von Buch ${i}; 內容 ${i}`);
    }
  })();
  db.close();
}

/** Changes some rows (update, insert, delete) so a later snapshot differs from an earlier one. */
export function mutate(file: string, seed: number): void {
  const db = new Database(file);
  db.transaction(() => {
    db.prepare('UPDATE books SET price = price + ? WHERE id % 11 = ?').run(seed, seed % 11);
    db.prepare('INSERT INTO books(author_id, title, price, cover) VALUES (1, ?, ?, ?)').run(`Neu ${seed}`, seed, randomBytes(300));
    db.prepare('DELETE FROM tags WHERE book_id = ?').run(seed);
  })();
  db.close();
}

/** Builds a database of roughly `mb` megabytes of incompressible blobs. */
export function bigDatabase(file: string, mb: number): void {
  const db = new Database(file);
  db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)');
  const insert = db.prepare('INSERT INTO blobs(data) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < mb * 16; i++) insert.run(randomBytes(64 * 1024));
  })();
  db.close();
}
