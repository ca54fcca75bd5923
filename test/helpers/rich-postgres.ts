/**
 * A PostgreSQL database with every kind of object a backup must carry: schemas, enum, composite
 * and domain types, an extension, identity, serial and generated columns, a partitioned table, a
 * table without primary key, sequences with moved values, views and a materialized view,
 * functions, a procedure, triggers, indexes (btree, GIN), deferrable foreign keys, comments,
 * defaults, row-level security and ownership; data with non-ASCII text, NULLs, bytea, jsonb,
 * arrays and a large row.
 */
export const RICH_POSTGRES_SQL = `
DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'strata_test_owner') THEN CREATE ROLE strata_test_owner; END IF; END $$;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA shop;
CREATE TYPE shop.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE shop.address AS (street text, city text, zip text);
CREATE DOMAIN shop.positive_price AS numeric(12,2) CHECK (VALUE >= 0);
CREATE SEQUENCE shop.invoice_no START 1000;
CREATE TABLE shop.customers (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email citext UNIQUE NOT NULL,
  name text NOT NULL DEFAULT 'anonymous',
  mood shop.mood,
  address shop.address,
  tags text[],
  profile jsonb,
  avatar bytea,
  created_at timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z',
  name_upper text GENERATED ALWAYS AS (upper(name)) STORED
);
COMMENT ON TABLE shop.customers IS 'Kunden — customers ✓';
COMMENT ON COLUMN shop.customers.email IS 'unique, case-insensitive';
CREATE TABLE shop.orders (
  id bigserial PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES shop.customers(id) DEFERRABLE INITIALLY DEFERRED,
  total shop.positive_price NOT NULL,
  invoice integer DEFAULT nextval('shop.invoice_no'),
  placed date NOT NULL,
  note text
);
CREATE TABLE shop.events (id bigint NOT NULL, at date NOT NULL, payload jsonb, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE shop.events_2025 PARTITION OF shop.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE shop.events_2026 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public.no_pk (a integer, b text);
ALTER TABLE public.no_pk OWNER TO strata_test_owner;
CREATE INDEX orders_by_customer ON shop.orders (customer_id, placed DESC);
CREATE INDEX customers_profile ON shop.customers USING gin (profile);
CREATE VIEW shop.big_orders AS SELECT o.id, c.email, o.total FROM shop.orders o JOIN shop.customers c ON c.id = o.customer_id WHERE o.total > 100;
CREATE MATERIALIZED VIEW shop.order_counts AS SELECT customer_id, count(*) AS n FROM shop.orders GROUP BY customer_id;
CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN NEW.note := coalesce(NEW.note, '') || ' (touched)'; RETURN NEW; END $fn$;
CREATE TRIGGER orders_touch BEFORE INSERT ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.touch();
CREATE PROCEDURE shop.reset_mood(m shop.mood) LANGUAGE sql AS $pr$ UPDATE shop.customers SET mood = m $pr$;
ALTER TABLE shop.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_orders ON shop.orders USING (customer_id > 0);

INSERT INTO shop.customers (email, name, mood, address, tags, profile, avatar)
SELECT 'User' || g || '@Example.org',
       (ARRAY['Zoë Ångström', '村上 春樹', 'Σαπφώ', 'Лев Толстой', 'O''Brien', '🦊 Fox'])[1 + g % 6] || ' ' || g,
       CASE WHEN g % 4 = 0 THEN NULL ELSE (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::shop.mood END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE ROW('Hauptstraße ' || g, 'Zürich', lpad(g::text, 4, '0'))::shop.address END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE ARRAY['tag' || g % 3, 'ünï', NULL] END,
       jsonb_build_object('n', g, 'nested', jsonb_build_object('ok', g % 2 = 0), 'text', E'tab\\there "quoted"'),
       CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text) || md5((g * 7)::text), 'hex') END
FROM generate_series(1, 300) g;
INSERT INTO shop.orders (customer_id, total, placed, note)
SELECT 1 + g % 300, (g % 500) * 1.25, DATE '2026-01-01' + g % 300, CASE WHEN g % 9 = 0 THEN NULL ELSE E'Bestellung\\nmit Zeilenumbruch №' || g END
FROM generate_series(1, 2000) g;
INSERT INTO shop.events SELECT g, DATE '2025-06-01' + (g % 400), jsonb_build_object('kind', 'click', 'g', g) FROM generate_series(1, 1000) g;
INSERT INTO public.no_pk SELECT g % 10, 'dup ' || (g % 10) FROM generate_series(1, 50) g;
INSERT INTO shop.customers (email, name, profile) VALUES ('big@example.org', 'Large Row', jsonb_build_object('blob', repeat('x', 1000000)));
REFRESH MATERIALIZED VIEW shop.order_counts;
SELECT setval('shop.invoice_no', 5000);
`;

/** Some inserts, updates and deletes (for "as it was at backup time" and incrementals). */
export const MUTATE_POSTGRES_SQL = (seed: number): string => `
INSERT INTO shop.orders (customer_id, total, placed, note) VALUES (${1 + (seed % 300)}, ${seed}.5, DATE '2026-06-01', 'neu ${seed}');
UPDATE shop.customers SET name = name || ' *' WHERE id % 17 = ${seed % 17};
DELETE FROM shop.events WHERE id % 97 = ${seed % 97};
INSERT INTO public.no_pk VALUES (${seed}, 'mutated');
`;
