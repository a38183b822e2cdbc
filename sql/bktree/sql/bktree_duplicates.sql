-- Equal keys, as in the table hashes.sql restores: one row per (article, file) usage, so an
-- icon's hash repeats thousands of times, each file's a few times, and near-copies cluster a
-- bit apart; the rows come in hash order (docs/bktree-benchmarks.md, run 8).  A leaf page of
-- one hash makes picksplit put every tuple at distance 0: an allTheSame inner tuple, which
-- choose must split when a hash at another distance arrives after the build.
CREATE TABLE dup (id serial, hash int8);
CREATE TABLE files (f int4, hash int8, uses int4);
-- 2,000 files: hashes from a fixed mixing, half of them negative; every tenth file the base of
-- a cluster of five (the base and four copies one bit away); used 1-4 times each
INSERT INTO files
SELECT f, CASE WHEN f % 10 BETWEEN 1 AND 4
               THEN h.base # (1::int8 << (13 * (f % 10)))
               ELSE h.base END, 1 + f % 4
FROM generate_series(1, 2000) f,
LATERAL (SELECT ((f / 10 * 10)::int8 * 2654435761) # ((f / 10 * 10)::int8 << 40)
                # CASE WHEN f % 20 < 10 THEN -1 ELSE 0 END AS base) h;
-- the icon: 3,000 uses of one hash
INSERT INTO files VALUES (0, 6148914691236517205, 3000);
INSERT INTO dup (hash)
SELECT hash FROM files, generate_series(1, uses) ORDER BY hash;
SELECT count(*), count(DISTINCT hash), max(n) FROM dup,
	LATERAL (SELECT count(*) n FROM dup d WHERE d.hash = 6148914691236517205) m;

CREATE TABLE dup_mih AS SELECT * FROM dup;
CREATE INDEX dup_sp ON dup USING spgist (hash bktree_ops);
CREATE INDEX dup_mih_idx ON dup_mih USING bktree_mih (hash);

-- After the build: more uses of the icon, and hashes 1, 2, 5 and 40 bits from it (the new
-- rows reach allTheSame inner tuples at distances other than 0)
INSERT INTO dup (hash)
SELECT 6148914691236517205 # x FROM generate_series(1, 500),
	unnest(ARRAY[0, 1, 3, 31, 1099511627775]) x;
INSERT INTO dup_mih (hash)
SELECT 6148914691236517205 # x FROM generate_series(1, 500),
	unnest(ARRAY[0, 1, 3, 31, 1099511627775]) x;

CREATE TABLE probes (q int8);
INSERT INTO probes
SELECT hash FROM files WHERE f % 97 = 0 OR f = 0
UNION ALL SELECT 6148914691236517205 # 7
UNION ALL SELECT hash # (1::int8 << 60) FROM files WHERE f % 211 = 5;
CREATE TABLE truth AS
SELECT q, r, (SELECT count(*) FROM dup WHERE hamming_distance(hash, q) <= r) AS n,
	(SELECT count(*) FROM dup_mih WHERE hamming_distance(hash, q) <= r) AS n_mih
FROM probes, unnest(ARRAY[0, 1, 2, 3, 6, 10]) r;
SELECT count(*) AS cases, sum(n) AS rows, max(n) AS most FROM truth;

SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM dup WHERE hash <@ (1, 3);
EXPLAIN (COSTS OFF) SELECT count(*) FROM dup_mih WHERE hash <@ (1, 3);
-- every probe and radius: each index returns what the sequential scan found
SELECT count(*) FILTER (WHERE n <> (SELECT count(*) FROM dup WHERE hash <@ (q, r)))
	AS spgist_wrong,
	count(*) FILTER (WHERE n_mih <> (SELECT count(*) FROM dup_mih WHERE hash <@ (q, r)))
	AS mih_wrong
FROM truth;
SELECT count(*) FROM dup WHERE hash = 6148914691236517205;
SELECT count(*) FROM dup WHERE hash <@ (6148914691236517205, 2);
-- ordered by distance through the allTheSame tuples: the icon and its copy 3 bits off (1 bit
-- from the point), then the copies 1 and 31 off
SELECT d, count(*) FROM (SELECT hash <-> 6148914691236517207 AS d FROM dup
	ORDER BY hash <-> 6148914691236517207 LIMIT 5000) s GROUP BY d ORDER BY d;
RESET enable_seqscan;
SELECT d, count(*) FROM (SELECT hamming_distance(hash, 6148914691236517207) AS d FROM dup
	ORDER BY 1 LIMIT 5000) s GROUP BY d ORDER BY d;
DROP TABLE dup, dup_mih, files, probes, truth;
