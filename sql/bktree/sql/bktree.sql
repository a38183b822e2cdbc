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
