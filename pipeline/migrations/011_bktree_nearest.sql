-- pipeline/migrations/011_bktree_nearest.sql: bktree 1.2, a faster `bktree_nearest`.
--
-- 1.2 changes only the SQL function `bktree_nearest` (the same results: each radius's rows are
-- returned as found, and the radii searched start near where a table of this size holds k
-- rows; sql/bktree/bktree--1.1--1.2.sql). Needs the 1.2 extension files on the server
-- (`make -C sql/bktree install`). The same build makes `bktree_mih` indexes skip GIN's pending
-- list (fast update off by default, a C change): an index that has one keeps it until the
-- next VACUUM, which autovacuum runs.

ALTER EXTENSION bktree UPDATE TO '1.2';
