-- ALTER EXTENSION bktree UPDATE from 1.0 keeps 1.0's indexes and adds 1.1's (and 1.2's bktree_nearest)
DROP EXTENSION bktree CASCADE;
CREATE EXTENSION bktree VERSION '1.0';
CREATE TABLE up (id int4, hash int8);
INSERT INTO up SELECT g, (g * 2654435761)::int8 # (g::int8 << 40) FROM generate_series(1, 3000) g;
CREATE INDEX up_sp ON up USING spgist (hash bktree_ops);
CREATE INDEX up_gin ON up USING gin (hash bktree_mih_ops);
ALTER EXTENSION bktree UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'bktree';
SET enable_seqscan = off;
SELECT count(*) FROM up WHERE hash <@ (2654435761, 20);
DROP INDEX up_sp, up_gin;
CREATE INDEX up_bk ON up USING bktree (hash);
CREATE INDEX up_mih ON up USING bktree_mih (hash);
SELECT count(*) FROM up WHERE hash <@ (2654435761, 20);
SELECT count(*) FROM (SELECT id FROM bktree_nearest(NULL::up, 'hash', 2654435761, 7)) s;
RESET enable_seqscan;
SELECT count(*) FROM up WHERE hamming_distance(hash, 2654435761) <= 20;
DROP TABLE up;
