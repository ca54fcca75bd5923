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

/**
 * Every type and object kind of MariaDB 10.11 that a backup must carry exactly, with values at
 * the edges: BIT(1)/BIT(64), DECIMAL(65,30), FLOAT/DOUBLE extremes, DATETIME(6)/TIME(6), TIMESTAMP
 * written from several time zones, YEAR, zero dates, ENUM/SET, JSON, utf8mb4 and latin1 text,
 * binary with NUL bytes, BLOBs of 1 and 9 MiB (9 MiB is past half of the default
 * max_allowed_packet, so its hex does not fit one statement), virtual and stored generated
 * columns, a keyless table with duplicate rows, AUTO_INCREMENT above max(id), MyISAM, Aria and
 * MEMORY tables, partitions, a sequence used as a column default, system-versioned tables (with
 * implicit and with explicit period columns) with history, several triggers per event in an
 * order that differs from their names', an event, routines, and views with algorithm, security
 * and definer; spatial types with a spatial index and an SRID, INET6, INET4 and UUID, a FULLTEXT
 * index, CHECK constraints, COMPRESSED columns, an application-time period WITHOUT OVERLAPS,
 * UNSIGNED ZEROFILL, expression defaults, and ucs2, utf16, utf32, cp1251 and sjis text.
 */
export const FULL_MARIADB_SQL = `
CREATE TABLE numbers (id INT PRIMARY KEY, b1 BIT(1), b7 BIT(7), b64 BIT(64), d DECIMAL(65,30), f FLOAT, dbl DOUBLE, fu FLOAT UNSIGNED,
  ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT, bu BIGINT UNSIGNED) ENGINE=InnoDB;
INSERT INTO numbers VALUES
  (1, b'1', b'1010101', b'1111111111111111111111111111111111111111111111111111111111111111', 99999999999999999999999999999999999.999999999999999999999999999999,
   -112.81857, 1.7976931348623157e308, 3.4028234663852886e38, -128, 65535, -8388608, -9223372036854775808, 18446744073709551615),
  (2, b'0', b'0', b'0', -99999999999999999999999999999999999.999999999999999999999999999999,
   1.17549435e-38, 4.9406564584124654e-324, 1.4e-45, 127, 0, 8388607, 9223372036854775807, 0),
  (3, NULL, NULL, b'1000000000000000000000000000000000000000000000000000000000000001', 0.000000000000000000000000000001,
   -3.4028234663852886e38, -2.2250738585072014e-308, 0.1, 0, 1, 0, 1, 1),
  (4, b'1', b'1', b'101', 1.5, 0.3, 0.30000000000000004, 16777217, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE times (id INT PRIMARY KEY, dt DATETIME(6), ts TIMESTAMP(6) NULL, t TIME(6), y YEAR, d DATE, dt0 DATETIME) ENGINE=InnoDB;
SET time_zone = '+05:30';
INSERT INTO times VALUES (1, '2020-01-02 03:04:05.123456', '2021-03-28 02:30:00.000001', '-838:59:59.000000', 1901, '0000-00-00', '0000-00-00 00:00:00');
SET time_zone = '-08:00';
INSERT INTO times VALUES (2, '9999-12-31 23:59:59.999999', '2038-01-18 19:14:07.999999', '838:59:59.999999', 2155, '1000-01-01', '1000-01-01 00:00:00'),
  (3, '1970-01-01 00:00:00.000000', '1970-01-01 08:00:01.000000', '00:00:00.5', 0, '2024-02-29', NULL);
SET time_zone = 'SYSTEM';
CREATE TABLE texts (id INT AUTO_INCREMENT PRIMARY KEY, u VARCHAR(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, l VARCHAR(50) CHARACTER SET latin1,
  j JSON, e ENUM('a', 'b', 'c d'), s SET('x', 'y', 'z'), bin BINARY(6), vb VARBINARY(20), tt TINYTEXT, lt LONGTEXT,
  ulen INT AS (CHAR_LENGTH(u)) VIRTUAL, uupper VARCHAR(50) AS (UPPER(u)) STORED) ENGINE=InnoDB AUTO_INCREMENT=1000;
INSERT INTO texts (id, u, l, j, e, s, bin, vb, tt, lt) VALUES
  (1, 'Zoë 🦊 \\\\ \\t tab', 'café ÿ', '{"a": [1, 2.50, null], "ü": "ß"}', 'c d', 'x,z', X'000100000000', X'00FF00', '', REPEAT('long ', 1000)),
  (2, '', '', '[]', 'a', '', X'FFFFFFFFFFFF', X'', NULL, NULL),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'x', 'nul\\0in text');
CREATE TABLE blobs (id INT PRIMARY KEY, kind VARCHAR(10), data LONGBLOB) ENGINE=InnoDB;
INSERT INTO blobs VALUES (1, 'empty', ''), (2, 'null', NULL), (3, 'nul', X'0000');
INSERT INTO blobs SELECT 4, '1 MiB', REPEAT(RANDOM_BYTES(1024), 1024);
INSERT INTO blobs SELECT 5, '9 MiB', REPEAT(RANDOM_BYTES(1024), 9 * 1024);
CREATE TABLE dup (a INT, b VARCHAR(10)) ENGINE=InnoDB;
INSERT INTO dup VALUES (1, 'x'), (1, 'x'), (1, 'x'), (NULL, NULL), (NULL, NULL);
CREATE TABLE my (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM;
CREATE TABLE ar (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=Aria;
CREATE TABLE mem (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MEMORY;
INSERT INTO my VALUES (1, 'myisam'), (2, 'two');
INSERT INTO ar VALUES (1, 'aria');
INSERT INTO mem VALUES (1, 'memory'), (2, 'volatile');
CREATE TABLE parts (id INT PRIMARY KEY, v INT) PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN MAXVALUE);
INSERT INTO parts SELECT seq, seq * 2 FROM seq_1_to_30;
CREATE SEQUENCE order_ids START WITH 100 INCREMENT BY 10;
CREATE TABLE orders (id BIGINT PRIMARY KEY DEFAULT NEXT VALUE FOR order_ids, amount INT, note VARCHAR(100) DEFAULT '') ENGINE=InnoDB;
INSERT INTO orders (amount) VALUES (5), (7);
CREATE TABLE prices (id INT PRIMARY KEY, price INT) WITH SYSTEM VERSIONING;
INSERT INTO prices VALUES (1, 10), (2, 20);
UPDATE prices SET price = 11 WHERE id = 1;
DELETE FROM prices WHERE id = 2;
CREATE TABLE stock (id INT, qty INT, valid_from TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,
  valid_to TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE, PERIOD FOR SYSTEM_TIME (valid_from, valid_to)) WITH SYSTEM VERSIONING;
INSERT INTO stock (id, qty) VALUES (1, 3);
UPDATE stock SET qty = 4;
CREATE TABLE audit (n INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(50)) ENGINE=InnoDB;
CREATE TRIGGER zz_first BEFORE INSERT ON orders FOR EACH ROW SET NEW.note = CONCAT(NEW.note, 'first;');
CREATE TRIGGER aa_second BEFORE INSERT ON orders FOR EACH ROW FOLLOWS zz_first SET NEW.note = CONCAT(NEW.note, 'second;');
CREATE TRIGGER mm_zero BEFORE INSERT ON orders FOR EACH ROW PRECEDES zz_first SET NEW.note = CONCAT(NEW.note, 'zero;');
CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('order ', NEW.id));
CREATE ALGORITHM=MERGE DEFINER=CURRENT_USER SQL SECURITY INVOKER VIEW v_orders AS SELECT id, amount FROM orders WHERE amount > 0 WITH CASCADED CHECK OPTION;
CREATE ALGORITHM=TEMPTABLE SQL SECURITY DEFINER VIEW v_totals AS SELECT COUNT(*) AS n, SUM(amount) AS total FROM v_orders;
CREATE FUNCTION f_tax(x DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN x * 1.2;
CREATE PROCEDURE p_add(IN a INT) MODIFIES SQL DATA BEGIN INSERT INTO orders (amount) VALUES (a); END;
CREATE EVENT e_purge ON SCHEDULE EVERY 1 DAY STARTS '2035-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE DO DELETE FROM audit WHERE n < 0;
CREATE TABLE geo (id INT PRIMARY KEY, g GEOMETRY NOT NULL, p POINT, ls LINESTRING, poly POLYGON REF_SYSTEM_ID=4326, gc GEOMETRYCOLLECTION, SPATIAL INDEX (g)) ENGINE=InnoDB;
INSERT INTO geo VALUES (1, ST_GeomFromText('POINT(1 2)'), ST_GeomFromText('POINT(-3.5 4.25)'), ST_GeomFromText('LINESTRING(0 0,1 1,2 5)'),
  ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))', 4326), ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,2 2))')),
  (2, ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 0)),((5 5,6 5,6 6,5 5)))'), NULL, NULL, NULL, NULL);
CREATE TABLE nets (id INT PRIMARY KEY, a INET6, b INET4, u UUID, UNIQUE KEY (u)) ENGINE=InnoDB;
INSERT INTO nets VALUES (1, '2001:db8::ff00:42:8329', '192.168.0.1', '123e4567-e89b-12d3-a456-426655440000'), (2, '::ffff:1.2.3.4', '0.0.0.0', '00000000-0000-0000-0000-000000000000'),
  (3, NULL, NULL, NULL), (4, '::', '255.255.255.255', 'ffffffff-ffff-ffff-ffff-ffffffffffff');
CREATE TABLE docs (id INT PRIMARY KEY, title VARCHAR(200), body TEXT, FULLTEXT KEY ft (title, body)) ENGINE=InnoDB;
INSERT INTO docs VALUES (1, 'backup guide', 'how to restore a database'), (2, 'other', 'nothing here');
CREATE TABLE checked (id INT PRIMARY KEY, qty INT CHECK (qty >= 0), lo INT, hi INT, CONSTRAINT range_ok CHECK (lo <= hi)) ENGINE=InnoDB;
INSERT INTO checked VALUES (1, 5, 1, 2);
CREATE TABLE squeezed (id INT PRIMARY KEY, t TEXT COMPRESSED, b BLOB COMPRESSED, v VARCHAR(500) COMPRESSED) ENGINE=InnoDB;
INSERT INTO squeezed VALUES (1, REPEAT('abc', 1000), REPEAT(X'00FF', 500), REPEAT('x', 400));
CREATE TABLE rooms (id INT, booked_from DATE, booked_to DATE, who VARCHAR(20), PERIOD FOR booking (booked_from, booked_to), PRIMARY KEY (id, booking WITHOUT OVERLAPS)) ENGINE=InnoDB;
INSERT INTO rooms VALUES (1, '2026-01-01', '2026-01-05', 'ann'), (1, '2026-01-05', '2026-01-09', 'bob');
CREATE TABLE unsig (id INT PRIMARY KEY, d DECIMAL(10,2) UNSIGNED ZEROFILL, ti TINYINT UNSIGNED, bi BIGINT UNSIGNED, m MEDIUMINT, fz FLOAT(7,3)) ENGINE=InnoDB;
INSERT INTO unsig VALUES (1, 12.5, 255, 18446744073709551615, -8388608, 1234.567);
CREATE TABLE defaults (id INT PRIMARY KEY, at DATETIME DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, code VARCHAR(10) DEFAULT (UPPER('x')),
  doc JSON DEFAULT '{}' CHECK (JSON_VALID(doc))) ENGINE=InnoDB;
INSERT INTO defaults (id, at) VALUES (1, '2026-01-02 03:04:05');
CREATE TABLE charsets (id INT PRIMARY KEY, a VARCHAR(20) CHARACTER SET ucs2, b VARCHAR(20) CHARACTER SET utf16, c VARCHAR(20) CHARACTER SET utf32,
  d VARCHAR(20) CHARACTER SET cp1251, e VARCHAR(20) CHARACTER SET sjis) ENGINE=InnoDB;
INSERT INTO charsets VALUES (1, 'Ωmega', '😀 smile', 'ᚠ rune', 'Привет', 'ｱｲｳ日本');
`;
