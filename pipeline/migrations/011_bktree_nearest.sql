-- pipeline/migrations/011_bktree_nearest.sql: bktree 1.2, a faster `bktree_nearest`.
--
-- 1.2 changes only the SQL function `bktree_nearest` (the same results: each radius's rows are
-- returned as found, and the radii searched start near where a table of this size holds k
-- rows; sql/bktree/bktree--1.1--1.2.sql). Needs the 1.2 extension files on the server
-- (`make -C sql/bktree install`). The same build gives `bktree_mih` indexes a 256 kB GIN
-- pending list (a C change, no SQL): an index with a longer one keeps it until it is next
-- merged (VACUUM, which autovacuum runs).

ALTER EXTENSION bktree UPDATE TO '1.2';
