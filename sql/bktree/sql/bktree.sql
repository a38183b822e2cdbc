CREATE EXTENSION bktree;

-- Check whether any of our opclasses fail amvalidate
SELECT amname, opcname
FROM pg_opclass opc LEFT JOIN pg_am am ON am.oid = opcmethod
WHERE opc.oid >= 16384 AND NOT amvalidate(opc.oid);

-- Operators and function
SELECT hamming_distance(0, -1), 0::int8 <-> -1, pg_typeof(0::int8 <-> 1);
SELECT (-9223372036854775808)::int8 <-> 9223372036854775807, 1::int8 <-> 2;
SELECT 5::int8 <@ (4, 1), 5::int8 <@ (4, 0), 5::int8 <@ (4, NULL), 5::int8 <@ (NULL, 64);
SELECT 5::int8 <@ (4, -1), 5::int8 <@ (-6, 1000), 5::int8 <@ NULL::bktree_area;
SELECT 5::int8 <@ (1, 2, 3);
SELECT 5::int8 <@ ('x', 1);

CREATE TABLE hashes (id int4, hash int8);
\copy hashes from 'data/hashes.data'
ANALYZE hashes;

CREATE TABLE queries (q int8, r int8);
INSERT INTO queries VALUES
	(0, 0), (0, 3), (-1, 0), (-1, 5), (-9223372036854775808, 0),
	(-9223372036854775808, 2), (9223372036854775807, 1), (2951234132655331968, 0),
	(2951234132655331968, 2), (2951234132655331968, 4), (2951234132655331968, 12),
	(1, 1), (1, 20), (1, 32), (1, 64), (1, 65), (1, 1000), (1, -1), (1, NULL), (NULL, 3);

-- Sequential scan answers
SELECT q, r, (SELECT count(*) FROM hashes WHERE hash <@ (q, r)) AS n
FROM queries ORDER BY q NULLS FIRST, r NULLS FIRST;
SELECT count(*) FROM hashes WHERE hash = 0;
SELECT hash <-> 2951234132655331968 AS d FROM hashes
ORDER BY hash <-> 2951234132655331968, id LIMIT 5;
SELECT count(*) FROM hashes WHERE hash <@ (0, 64);

-- The same through the BK-tree
CREATE INDEX hashes_bktree ON hashes USING spgist (hash bktree_ops);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT count(*) FROM hashes WHERE hash <@ (2951234132655331968, 4);
SELECT q, r, (SELECT count(*) FROM hashes WHERE hash <@ (q, r)) AS n
FROM queries ORDER BY q NULLS FIRST, r NULLS FIRST;
EXPLAIN (COSTS OFF)
SELECT count(*) FROM hashes WHERE hash = 0;
SELECT count(*) FROM hashes WHERE hash = 0;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF)
SELECT hash <-> 2951234132655331968 AS d FROM hashes
ORDER BY hash <-> 2951234132655331968 LIMIT 5;
SELECT hash <-> 2951234132655331968 AS d FROM hashes
ORDER BY hash <-> 2951234132655331968 LIMIT 5;
SELECT hash <-> -1 AS d FROM hashes ORDER BY hash <-> -1 LIMIT 3;
SELECT count(*) FROM hashes WHERE hash <@ (0, 64);
RESET enable_bitmapscan;
DROP INDEX hashes_bktree;

-- The same through multi-index hashing
CREATE INDEX hashes_mih ON hashes USING gin (hash bktree_mih_ops);
EXPLAIN (COSTS OFF)
SELECT count(*) FROM hashes WHERE hash <@ (2951234132655331968, 4);
SELECT q, r, (SELECT count(*) FROM hashes WHERE hash <@ (q, r)) AS n
FROM queries ORDER BY q NULLS FIRST, r NULLS FIRST;
SELECT count(*) FROM hashes WHERE hash <@ (0, 64);
DROP INDEX hashes_mih;

-- The planner prefers the BK-tree at small radii and a scan at large ones
RESET enable_seqscan;
CREATE INDEX hashes_bktree ON hashes USING spgist (hash bktree_ops);
EXPLAIN (COSTS OFF)
SELECT id FROM hashes WHERE hash <@ (2951234132655331968, 1);
EXPLAIN (COSTS OFF)
SELECT id FROM hashes WHERE hash <@ (2951234132655331968, 40);
DROP INDEX hashes_bktree;

-- 1.1: the access methods bktree and bktree_mih, both on hash
CREATE INDEX hashes_bk ON hashes USING bktree (hash);
CREATE INDEX hashes_mih ON hashes USING bktree_mih (hash);
ANALYZE hashes;
SELECT amname, opcname, opcdefault FROM pg_opclass opc JOIN pg_am am ON am.oid = opcmethod
WHERE amname IN ('bktree', 'bktree_mih') ORDER BY 1;
-- answers through the full-hash MIH keys: the same counts as the sequential scan above
SET enable_seqscan = off;
SELECT q, r, (SELECT count(*) FROM hashes WHERE hash <@ (q, r)) AS n
FROM queries ORDER BY q NULLS FIRST, r NULLS FIRST;
SELECT count(*) FROM hashes WHERE hash <@ (0, 64);
RESET enable_seqscan;
-- the planner's choice: MIH for radius searches, a scan where most rows match, the
-- BK-tree for nearest-first and for =
EXPLAIN (COSTS OFF)
SELECT id FROM hashes WHERE hash <@ (2951234132655331968, 1);
EXPLAIN (COSTS OFF)
SELECT id FROM hashes WHERE hash <@ (2951234132655331968, 6);
EXPLAIN (COSTS OFF)
SELECT id FROM hashes WHERE hash <@ (2951234132655331968, 40);
EXPLAIN (COSTS OFF)
SELECT id FROM hashes ORDER BY hash <-> 2951234132655331968 LIMIT 5;
-- the k nearest, exact: the same distances as a sort of every row
SELECT q, k, (SELECT array_agg(d) FROM (
		SELECT hash <-> q AS d FROM bktree_nearest(NULL::hashes, 'hash', q, k)) s)
	= (SELECT array_agg(d) FROM (
		SELECT hamming_distance(hash, q) AS d FROM hashes
		WHERE hash IS NOT NULL ORDER BY 1 LIMIT k) s) AS exact
FROM (VALUES (2951234132655331968::int8), (2951234132655331968 # 4095), (12345), (-2))
	v (q), (VALUES (1), (12), (150), (1000)) w (k) ORDER BY 1, 2;
SELECT array_agg(hash <-> (2951234132655331968 # 4095)) AS nearest
FROM bktree_nearest(NULL::hashes, 'hash', 2951234132655331968 # 4095, 8);
SELECT q, (SELECT array_agg(hash <-> q) FROM bktree_nearest(NULL::hashes, 'hash', q, 5)) AS nearest
FROM (VALUES (0::int8), (-1), (-9223372036854775808), (9223372036854775807)) v (q);
SELECT count(*) FROM bktree_nearest(NULL::hashes, 'hash', NULL, 5);
SELECT count(*) FROM bktree_nearest(NULL::hashes, 'hash', 1, 0);
SELECT count(*) FROM bktree_nearest(NULL::hashes, 'hash', 1, 100000);
-- through a view (sized by the table it reads) and on a table never analyzed: the same
CREATE VIEW hashes_view AS SELECT id, hash FROM hashes;
CREATE TABLE hashes_fresh AS SELECT id, hash FROM hashes;
SELECT q, k, (SELECT array_agg(hash <-> q) FROM bktree_nearest(NULL::hashes_view, 'hash', q, k))
	= (SELECT array_agg(hash <-> q) FROM bktree_nearest(NULL::hashes, 'hash', q, k)) AS view_same,
	(SELECT array_agg(hash <-> q) FROM bktree_nearest(NULL::hashes_fresh, 'hash', q, k))
	= (SELECT array_agg(hash <-> q) FROM bktree_nearest(NULL::hashes, 'hash', q, k)) AS fresh_same
FROM (VALUES (2951234132655331968::int8), (12345)) v (q), (VALUES (1), (40), (500)) w (k)
ORDER BY 1, 2;
DROP VIEW hashes_view;
DROP TABLE hashes_fresh;
-- batched probes: one LATERAL join, each row tagged with its query; the radius alone sets
-- the cost, so the inner scan takes the MIH index though its center is the outer row's
EXPLAIN (COSTS OFF)
SELECT q.i, h.id FROM unnest(ARRAY[0, -1]::int8[]) WITH ORDINALITY AS q (h, i)
CROSS JOIN LATERAL (SELECT id FROM hashes WHERE hash <@ (q.h, 3)) h;
SELECT q.i, count(h.id)
FROM unnest(ARRAY[0, -1, 2951234132655331968]::int8[]) WITH ORDINALITY AS q (h, i)
LEFT JOIN LATERAL (SELECT id FROM hashes WHERE hash <@ (q.h, 3)) h ON true
GROUP BY q.i ORDER BY q.i;
-- bktree_mih: no pending list unless the index asks for one (a search compares every pending
-- row with each of its bucket entries, 188 at radius 8), and then 256 kB unless it says more
CREATE EXTENSION pageinspect;
CREATE TABLE loaded (hash int8);
CREATE INDEX loaded_default ON loaded USING bktree_mih (hash);
INSERT INTO loaded SELECT g * 7919 FROM generate_series(1, 2000) g;
SELECT n_pending_pages, n_pending_tuples FROM gin_metapage_info(get_raw_page('loaded_default', 0));
DROP INDEX loaded_default;
CREATE INDEX loaded_fast ON loaded USING bktree_mih (hash) WITH (fastupdate = on);
INSERT INTO loaded SELECT g * 7919 FROM generate_series(2001, 20000) g;
SELECT n_pending_pages <= 33 AS small, n_pending_tuples < 20000 AS merged
FROM gin_metapage_info(get_raw_page('loaded_fast', 0));
DROP INDEX loaded_fast;
CREATE INDEX loaded_off ON loaded USING bktree_mih (hash) WITH (fastupdate = off);
INSERT INTO loaded SELECT g * 7919 FROM generate_series(1, 2000) g;
SELECT n_pending_tuples FROM gin_metapage_info(get_raw_page('loaded_off', 0));
DROP INDEX loaded_off;
CREATE INDEX loaded_on ON loaded USING bktree_mih (hash) WITH (gin_pending_list_limit = 4096);
INSERT INTO loaded SELECT g * 7919 FROM generate_series(1, 2000) g;
SELECT n_pending_tuples FROM gin_metapage_info(get_raw_page('loaded_on', 0));
-- without options again: new rows go to the entry tree, the 2000 pending stay until merged
ALTER INDEX loaded_on RESET (gin_pending_list_limit);
INSERT INTO loaded SELECT g * 7907 FROM generate_series(1, 20000) g;
SELECT n_pending_tuples FROM gin_metapage_info(get_raw_page('loaded_on', 0));
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM loaded WHERE hash <@ (7919, 2);
SELECT count(*) FROM loaded WHERE hash <@ (7919, 2);
RESET enable_seqscan;
SELECT count(*) FROM loaded WHERE hamming_distance(hash, 7919) <= 2;
DROP TABLE loaded;
DROP EXTENSION pageinspect;
