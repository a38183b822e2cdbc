-- pipeline/migrations/005_ledger_counts.sql: counts that `wikihash status` reads without scanning the ledger.
--
-- At 7.5M files, `SELECT state, count(*) FROM files GROUP BY state` reads the whole 2.9 GB heap
-- on every status refresh and every reconciling pass (docs/scale.md). Instead every statement
-- that inserts, updates or deletes files or pages appends its net change per state here (one
-- row per state it changed, from statement-level triggers over the transition tables), and
-- `ledger.counts` sums the rows, folding those older than two minutes into one row per name.
-- Appending, not updating one counter row, keeps concurrent writers from queueing on a hot
-- row. The rows of the last minute also give the rate: files that reached a settled state.

CREATE TABLE ledger_counts (
    name  text NOT NULL,                  -- 'articles', or a files.state
    n     bigint NOT NULL,                -- net change (or, folded, the total)
    at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO ledger_counts (name, n, at) SELECT 'articles', count(*), '-infinity' FROM pages;
INSERT INTO ledger_counts (name, n, at)
    SELECT state, count(*), '-infinity' FROM files GROUP BY state;

CREATE FUNCTION ledger_count_files() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ledger_counts (name, n) SELECT state, count(*) FROM new_rows GROUP BY state;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO ledger_counts (name, n) SELECT state, -count(*) FROM old_rows GROUP BY state;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO ledger_counts (name, n)
            SELECT state, sum(d) FROM (SELECT state, -1 AS d FROM old_rows
                                       UNION ALL SELECT state, 1 FROM new_rows) c
            GROUP BY state HAVING sum(d) <> 0;
    ELSE  -- TRUNCATE
        DELETE FROM ledger_counts WHERE name <> 'articles';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION ledger_count_pages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ledger_counts (name, n) SELECT 'articles', count(*) FROM new_rows
            HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO ledger_counts (name, n) SELECT 'articles', -count(*) FROM old_rows
            HAVING count(*) > 0;
    ELSE  -- TRUNCATE
        DELETE FROM ledger_counts WHERE name = 'articles';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER files_count_insert AFTER INSERT ON files REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_count_files();
CREATE TRIGGER files_count_update AFTER UPDATE ON files
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_count_files();
CREATE TRIGGER files_count_delete AFTER DELETE ON files REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_count_files();
CREATE TRIGGER files_count_truncate AFTER TRUNCATE ON files
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_count_files();
CREATE TRIGGER pages_count_insert AFTER INSERT ON pages REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_count_pages();
CREATE TRIGGER pages_count_delete AFTER DELETE ON pages REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_count_pages();
CREATE TRIGGER pages_count_truncate AFTER TRUNCATE ON pages
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_count_pages();

-- The producer's claim takes pending files in file_id order, a bounded slice (ledger.claim_jobs):
-- at 30M usages with 150,000 pending, choosing 2,000 took 570 ms through files_pending_idx
-- (enqueued_at order: random heap pages) and 24 ms through this one.
CREATE INDEX files_pending_file_idx ON files (file_id) WHERE state = 'pending';
