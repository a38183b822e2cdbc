/* sql/bktree/bktree--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bktree UPDATE TO '1.2'" to load this file. \quit

-- bktree_nearest, faster on large tables:
-- - each radius's rows are returned as they are found, rather than counted first and searched
--   again at the k-th distance (1.1 ran two MIH searches at the last radius): the rows within
--   the radius searched so far are the nearest of all, so a step returns, nearest first, the
--   rows of its ring (searched < d <= radius), up to the number still wanted, and the search
--   stops once k rows are out;
-- - after the cheap steps 0, 3 and 6 it jumps to the radius where a table of uniformly random
--   hashes of this size (pg_class.reltuples) would hold k/2 rows, then goes up one bit at a
--   time: each step re-reads every bucket of its radius, so the steps past 9 bits (308
--   buckets at 9, 2,228 at 14, 10,068 at 19) are what the search costs, and the ones below
--   the k-th distance are wasted. For a view the size is that of the largest table it reads;
--   without a size (never analyzed: reltuples -1) the ladder is 9, 11, 13, 15, 17, 19.
--   Near-duplicate data stops early at 0, 3 or 6 either way.
-- - each step's search is planned apart from its ORDER BY ... LIMIT, so that it takes the MIH
--   index (1.1's counting query took the BK-tree's ordered scan at 19 bits, 10x slower).
-- Past 19 bits: a sequential top-k of the rows further than 19. Same results as 1.1.
CREATE OR REPLACE FUNCTION bktree_nearest(rel anyelement, col name, q int8, k int4)
RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
	src text := pg_typeof(rel)::text;
	-- share of uniformly random hashes within r bits of a point, r = 0..19
	within float8[] := ARRAY[5.421e-20, 3.524e-18, 1.128e-16, 2.371e-15, 3.682e-14,
		4.501e-13, 4.515e-12, 3.819e-11, 2.781e-10, 1.771e-09, 9.982e-09, 5.029e-08,
		2.283e-07, 9.405e-07, 3.535e-06, 1.218e-05, 3.867e-05, 1.134e-04, 3.087e-04,
		7.814e-04];
	ntuples float8;
	expected int4 := 20;
	radii int4[] := ARRAY[0, 3, 6];
	radius int4;
	searched int4 := -1;
	returned int8;
	wanted int8 := k;
BEGIN
	IF q IS NULL OR k IS NULL OR k < 1 THEN
		RETURN;
	END IF;
	SELECT c.reltuples INTO ntuples FROM pg_class c WHERE c.oid = to_regclass(src)
		AND c.relkind IN ('r', 'm');
	IF ntuples IS NULL THEN
		-- a view: the largest table it reads (the hashes view: about one row per usage)
		SELECT max(c.reltuples) INTO ntuples
		FROM pg_rewrite w
		JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
		JOIN pg_class c ON c.oid = d.refobjid AND c.relkind IN ('r', 'm')
		WHERE w.ev_class = to_regclass(src);
	END IF;
	IF coalesce(ntuples, 0) > 0 THEN
		FOR radius IN 0..19 LOOP
			IF ntuples * within[radius + 1] >= k / 2.0 THEN
				expected := radius;
				EXIT;
			END IF;
		END LOOP;
		radii := radii || ARRAY(SELECT generate_series(greatest(7, expected), 19));
	ELSE
		radii := radii || ARRAY[9, 11, 13, 15, 17, 19];
	END IF;
	FOREACH radius IN ARRAY radii LOOP
		-- OFFSET 0 keeps ORDER BY ... LIMIT out of the scan: planned together, the planner
		-- takes the BK-tree's ordered scan for wide radii (it scales the cost by LIMIT / rows,
		-- as if the rows came evenly; 1.5 s instead of 0.1 s at r = 19, 1M hashes)
		RETURN QUERY EXECUTE format('SELECT (s.r).* FROM (SELECT t AS r, t.%1$I <-> $1 AS d'
									' FROM %2$s t WHERE t.%1$I <@ ($1, $2) OFFSET 0) s'
									' WHERE s.d > $3 ORDER BY s.d LIMIT $4', col, src)
		USING q, radius, searched, wanted;
		GET DIAGNOSTICS returned = ROW_COUNT;
		wanted := wanted - returned;
		IF wanted <= 0 THEN
			RETURN;
		END IF;
		searched := radius;
	END LOOP;
	RETURN QUERY EXECUTE format('SELECT * FROM %2$s WHERE %1$I IS NOT NULL'
								' AND hamming_distance(%1$I, $1) > $2'
								' ORDER BY hamming_distance(%1$I, $1) LIMIT $3', col, src)
	USING q, searched, wanted;
END
$$;
