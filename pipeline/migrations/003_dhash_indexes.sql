-- pipeline/migrations/003_dhash_indexes.sql: both hash indexes on `dhash` itself, chosen by the planner.
--
-- bktree 1.1 (sql/bktree) adds the access methods `bktree` (the SP-GiST BK-tree) and
-- `bktree_mih` (multi-index hashing with the whole hash in each GIN key), whose cost estimates
-- know what a radius search costs, so the planner takes the MIH index for `dhash <@ (h, d)` up
-- to where a sequential scan wins, and the BK-tree for `ORDER BY dhash <-> h`. That includes
-- the tutorial's query through the `hashes` view. The `dhash # 0` expression index of 002 is
-- dropped. Needs the 1.1 extension files on the server (`make -C sql/bktree install`).
-- Rebuilding both indexes takes about a minute per million hashed files.

-- from 1.0 only: a database created with a newer default version (1.2) has 1.1's objects already
DO $$
BEGIN
	IF (SELECT extversion FROM pg_extension WHERE extname = 'bktree') = '1.0' THEN
		ALTER EXTENSION bktree UPDATE TO '1.1';
	END IF;
END
$$;

DROP INDEX IF EXISTS files_dhash_mih_idx;
DROP INDEX IF EXISTS files_dhash_idx;
CREATE INDEX files_dhash_idx ON files USING bktree (dhash);
CREATE INDEX files_dhash_mih_idx ON files USING bktree_mih (dhash);
