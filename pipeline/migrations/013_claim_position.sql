-- pipeline/migrations/013_claim_position.sql: the claim resumes where the last one stopped.
--
-- The producer's claim (ledger.claim_jobs) read files_pending_file_idx from the first pending
-- file every time and skipped the contents in flight only after reading each one's heap row
-- and probing file_sends: with 2,000-10,000 in flight, a claim of 2,000 read 4,600-12,600 rows
-- of a 3 GB heap at 30M usages, one page each (docs/benchmarks.md, 30M-usage ledger). Now:
--
-- * `claim_position` holds the file_id the last claim read up to. The next claim reads the
--   pending files after it (wrapping round to the first when it reaches the end), so a sweep
--   passes each content in flight once, not once per claim.
-- * A file that becomes pending at or before the position (`wikihash retry`, a re-crawl's
--   changed file) moves the position back to just before it (the trigger below), so it is
--   sent at the next claim, as before. The trigger runs when the statement does, not at
--   commit: a file inserted behind the position by a transaction that commits after a claim
--   read past it is found when the sweep wraps round (the reconciler sweeps until nothing
--   is pending).
-- * Contents sent over stale_after seconds ago are found from file_sends itself, oldest first
--   (file_sends_sent_at_idx), wherever the position is: a lost job is sent again on time, and
--   the claim gives it up after MAX_SENDS sends, as before.
--
-- The position is only where to start reading: PostgreSQL's files and file_sends stay the
-- ledger. A missing row reads as 0 (every claim from the first pending file, as before).

CREATE TABLE claim_position (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),  -- a single row
    after_file_id  bigint NOT NULL                                 -- the last file_id read
);
INSERT INTO claim_position (after_file_id) VALUES (0);

-- The overdue contents, oldest first; file_sends holds only what is in flight. `file_id` is
-- the file the last send was for: the claim finds an overdue content's pending file by it (in
-- the small files_pending_file_idx) rather than by a probe of the large files_sha1_idx; NULL
-- for marks made before this migration, found by SHA-1.
CREATE INDEX file_sends_sent_at_idx ON file_sends (sent_at);
ALTER TABLE file_sends ADD COLUMN file_id bigint;

CREATE FUNCTION claim_rewind() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE claim_position p SET after_file_id = n.first - 1
        FROM (SELECT min(file_id) AS first FROM new_rows WHERE state = 'pending') n
        WHERE n.first <= p.after_file_id;
    RETURN NULL;
END $$;

CREATE TRIGGER files_claim_rewind_insert AFTER INSERT ON files
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION claim_rewind();
CREATE TRIGGER files_claim_rewind_update AFTER UPDATE ON files
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION claim_rewind();
