-- sql/002_dhash_mih.sql: a multi-index-hashing index for radius searches.
--
-- At 10 million random hashes the GIN class bktree_mih_ops answers `<@` 4-18x faster than the
-- SP-GiST BK-tree from radius 3 to 8 (docs/benchmarks.md), but with both on `dhash` the planner
-- always takes the SP-GiST one (GIN's generic cost estimate charges every enumerated key). So
-- this index is on the expression `dhash # 0` (the same bits: XOR with zero), which only a
-- query written against that expression can use: pipeline/search.py asks
-- `(dhash # 0) <@ (h, d)` for radius searches. `dhash <@ ...` (the tutorial's view) and
-- `ORDER BY dhash <-> h` (nearest first) keep using files_dhash_idx.

CREATE INDEX files_dhash_mih_idx ON files USING gin ((dhash # 0) bktree_mih_ops);
