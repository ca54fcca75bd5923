/**
 * A MySQL/MariaDB database with every object kind a backup must carry: tables with charsets and
 * collations of their own, generated columns, foreign keys, a table without primary key, a
 * MyISAM table, a view, a trigger, a procedure, a function and an event; data with utf8mb4 text
 * including emoji, quotes, backslashes, CR and NUL, BLOBs, JSON, DECIMAL, DATETIME(6) and NULLs.
 */
export const RICH_MYSQL_SQL = `
CREATE TABLE authors (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, bio TEXT, born DATETIME(6), price DECIMAL(12,4),
  meta JSON, photo BLOB, name_len INT AS (CHAR_LENGTH(name)) STORED) ENGINE=InnoDB;
CREATE TABLE books (id BIGINT AUTO_INCREMENT PRIMARY KEY, author_id INT NOT NULL,
  title VARCHAR(200) CHARACTER SET latin1 COLLATE latin1_swedish_ci, cover MEDIUMBLOB, published DATE,
  CONSTRAINT fk_author FOREIGN KEY (author_id) REFERENCES authors(id)) ENGINE=InnoDB;
CREATE INDEX books_by_title ON books (title);
CREATE TABLE nopk (a INT, b VARCHAR(20)) ENGINE=MyISAM;
CREATE VIEW v_books AS SELECT b.id, a.name FROM books b JOIN authors a ON a.id = b.author_id;
CREATE TRIGGER t_books BEFORE INSERT ON books FOR EACH ROW SET NEW.title = CONCAT(NEW.title, '!');
CREATE PROCEDURE p_count() BEGIN SELECT COUNT(*) FROM books; END;
CREATE FUNCTION f_double(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
CREATE EVENT e_nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM nopk WHERE a < 0;
INSERT INTO authors (name, bio, born, price, meta, photo) VALUES
  ('Zoë 🦊', 'tab\\there\\nnewline \\\\ backslash', '2020-01-02 03:04:05.123456', 12.3456, '{"a": [1, 2], "ü": "ß"}', UNHEX('00FF10')),
  ('Null Person', NULL, NULL, NULL, NULL, NULL),
  ('村上 春樹', 'Ελληνικά', '1999-12-31 23:59:59.999999', -0.0001, '[]', ''),
  ('O''Brien \\'q\\' "dq" 50%_off', 'cr\\rnul\\0end \\\\N \\\\t \\\\% trailing\\\\', NULL, 0, NULL, NULL);
INSERT INTO books (author_id, title, cover, published)
  SELECT 1 + (seq % 3), CONCAT('Titel ', seq, ' Ärger'), IF(seq % 4 = 0, NULL, RANDOM_BYTES(200)), DATE_ADD('2020-01-01', INTERVAL seq DAY) FROM seq_1_to_600;
INSERT INTO nopk VALUES (1, 'x'), (1, 'x'), (2, NULL);
`;

export const MUTATE_MYSQL_SQL = (seed: number): string => `
INSERT INTO books (author_id, title, published) VALUES (${1 + (seed % 3)}, 'neu ${seed}', '2026-06-01');
UPDATE authors SET bio = CONCAT(COALESCE(bio, ''), ' *${seed}') WHERE id = ${1 + (seed % 3)};
DELETE FROM books WHERE id % 97 = ${seed % 97};
INSERT INTO nopk VALUES (${seed}, 'mutated');
`;
