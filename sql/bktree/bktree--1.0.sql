/* sql/bktree/bktree--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION bktree" to load this file. \quit

-- A search area: every hash within Hamming distance "distance" of "center".
-- "hash <@ (123, 3)" resolves to it through the row literal.
CREATE TYPE bktree_area AS (center int8, distance int8);

CREATE FUNCTION hamming_distance(int8, int8)
RETURNS int4
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION hamming_distance(int8, int8) IS
'number of differing bits between two 64-bit hashes';

CREATE FUNCTION bktree_contained(int8, bktree_area)
RETURNS bool
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_area_sel(internal, oid, internal, int4)
RETURNS float8
AS 'MODULE_PATHNAME'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE OPERATOR <@ (
	LEFTARG = int8,
	RIGHTARG = bktree_area,
	FUNCTION = bktree_contained,
	RESTRICT = bktree_area_sel,
	JOIN = contjoinsel
);

CREATE OPERATOR <-> (
	LEFTARG = int8,
	RIGHTARG = int8,
	FUNCTION = hamming_distance,
	COMMUTATOR = <->
);

-- SP-GiST support: a BK-tree
CREATE FUNCTION bktree_spg_config(internal, internal)
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_spg_choose(internal, internal)
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_spg_picksplit(internal, internal)
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_spg_inner_consistent(internal, internal)
RETURNS void
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_spg_leaf_consistent(internal, internal)
RETURNS bool
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR CLASS bktree_ops
FOR TYPE int8 USING spgist AS
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

-- GIN support: multi-index hashing over four 16-bit substrings.
-- GIN requires the query argument of these support functions to be declared
-- as the indexed type; at run time it is the bktree_area of the <@ operator.
CREATE FUNCTION bktree_mih_extract_value(int8, internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_mih_extract_query(int8, internal, int2, internal, internal, internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_mih_consistent(internal, int2, int8, int4, internal, internal, internal, internal)
RETURNS bool
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION bktree_mih_triconsistent(internal, int2, int8, int4, internal, internal, internal)
RETURNS "char"
AS 'MODULE_PATHNAME'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR CLASS bktree_mih_ops
FOR TYPE int8 USING gin AS
	OPERATOR	1	<@ (int8, bktree_area),
	FUNCTION	1	btint4cmp(int4, int4),
	FUNCTION	2	bktree_mih_extract_value(int8, internal, internal),
	FUNCTION	3	bktree_mih_extract_query(int8, internal, int2, internal, internal, internal, internal),
	FUNCTION	4	bktree_mih_consistent(internal, int2, int8, int4, internal, internal, internal, internal),
	FUNCTION	6	bktree_mih_triconsistent(internal, int2, int8, int4, internal, internal, internal),
	STORAGE		int4;
