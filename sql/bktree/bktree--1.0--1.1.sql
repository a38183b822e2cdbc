/* sql/bktree/bktree--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bktree UPDATE TO '1.1'" to load this file. \quit

-- Access methods "bktree" (SP-GiST) and "bktree_mih" (GIN) with a cost
-- estimate for Hamming radius searches (bktree_am.c), so that with both
-- indexes on one column the planner takes the faster one for each radius.
-- The operator classes are those of 1.0 (which stay, for existing indexes),
-- and the default ones of their access methods:
--   CREATE INDEX ON t USING bktree (hash);       -- <@, =, ORDER BY <->
--   CREATE INDEX ON t USING bktree_mih (hash);   -- <@
CREATE FUNCTION bktree_handler(internal)
RETURNS index_am_handler
AS 'MODULE_PATHNAME'
LANGUAGE C;

CREATE FUNCTION bktree_mih_handler(internal)
RETURNS index_am_handler
AS 'MODULE_PATHNAME'
LANGUAGE C;

CREATE ACCESS METHOD bktree TYPE INDEX HANDLER bktree_handler;
COMMENT ON ACCESS METHOD bktree IS 'SP-GiST BK-tree with a Hamming radius cost estimate';

CREATE ACCESS METHOD bktree_mih TYPE INDEX HANDLER bktree_mih_handler;
COMMENT ON ACCESS METHOD bktree_mih IS 'GIN multi-index hashing with a Hamming radius cost estimate';

CREATE OPERATOR CLASS bktree_ops
DEFAULT FOR TYPE int8 USING bktree AS
	OPERATOR	1	<@ (int8, bktree_area),
	OPERATOR	2	<-> (int8, int8) FOR ORDER BY pg_catalog.integer_ops,
	OPERATOR	3	= (int8, int8),
	OPERATOR	3	= (int8, int4),
	OPERATOR	3	= (int8, int2),
	FUNCTION	1	bktree_spg_config(internal, internal),
	FUNCTION	2	bktree_spg_choose(internal, internal),
	FUNCTION	3	bktree_spg_picksplit(internal, internal),
	FUNCTION	4	bktree_spg_inner_consistent(internal, internal),
	FUNCTION	5	bktree_spg_leaf_consistent(internal, internal),
	STORAGE		int8;

-- Multi-index hashing with the whole hash in each key (bktree_mih.c); the
-- distance is computed in the index, and radius 15 is still enumerated.
CREATE FUNCTION bktree_mihx_extract_value(int8, internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_mihx_extract_query(int8, internal, int2, internal, internal, internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_mihx_consistent(internal, int2, int8, int4, internal, internal, internal, internal)
RETURNS bool
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_mihx_compare_partial(int8, int8, int2, internal)
RETURNS int4
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_mihx_triconsistent(internal, int2, int8, int4, internal, internal, internal)
RETURNS "char"
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR CLASS bktree_mih_ops
DEFAULT FOR TYPE int8 USING bktree_mih AS
	OPERATOR	1	<@ (int8, bktree_area),
	FUNCTION	1	btint8cmp(int8, int8),
	FUNCTION	2	bktree_mihx_extract_value(int8, internal, internal),
	FUNCTION	3	bktree_mihx_extract_query(int8, internal, int2, internal, internal, internal, internal),
	FUNCTION	4	bktree_mihx_consistent(internal, int2, int8, int4, internal, internal, internal, internal),
	FUNCTION	5	bktree_mihx_compare_partial(int8, int8, int2, internal),
	FUNCTION	6	bktree_mihx_triconsistent(internal, int2, int8, int4, internal, internal, internal),
	STORAGE		int8;

-- The k rows of a table or view nearest to q in the int8 column col, nearest
-- first: SELECT * FROM bktree_nearest(NULL::hashes, 'hash', 123, 10).
--
-- Exact.  It asks "col <@ (q, r)" (the MIH index) for widening r, keeping
-- only the k nearest; once k rows are within r, no other row can be nearer
-- than the k-th of them, and a second search at that distance returns the
-- rows.  Where the k-th nearest is further than 19 bits (the widest radius
-- the MIH index enumerates) it falls back to a sequential top-k by
-- hamming_distance (on
-- uniform hashes the BK-tree walk opens most of the tree and is 2-10x slower
-- than a parallel sequential scan; docs/bktree-benchmarks.md).
CREATE FUNCTION bktree_nearest(rel anyelement, col name, q int8, k int4)
RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
	src text := pg_typeof(rel)::text;
	radius int4;
	found int8;
	kth int4;
BEGIN
	IF q IS NULL OR k IS NULL OR k < 1 THEN
		RETURN;
	END IF;
	FOREACH radius IN ARRAY ARRAY[0, 3, 6, 9, 12, 15, 19] LOOP
		EXECUTE format('SELECT count(*), max(d) FROM (SELECT %1$I <-> $1 AS d'
					   ' FROM %2$s WHERE %1$I <@ ($1, $2) ORDER BY 1 LIMIT $3) s',
					   col, src)
		INTO found, kth USING q, radius, k;
		IF found >= k THEN
			RETURN QUERY EXECUTE format('SELECT * FROM %2$s WHERE %1$I <@ ($1, $2)'
										' ORDER BY %1$I <-> $1 LIMIT $3', col, src)
			USING q, kth, k;
			RETURN;
		END IF;
	END LOOP;
	RETURN QUERY EXECUTE format('SELECT * FROM %2$s WHERE %1$I IS NOT NULL'
								' ORDER BY hamming_distance(%1$I, $1) LIMIT $2', col, src)
	USING q, k;
END
$$;

COMMENT ON FUNCTION bktree_nearest(anyelement, name, int8, int4) IS
'the k rows of a table or view nearest to q in an int8 column, nearest first (exact)';
