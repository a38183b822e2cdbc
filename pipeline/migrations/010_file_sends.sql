-- pipeline/migrations/010_file_sends.sql: the queue's sent state in a narrow table of its own.
--
-- The producer marks every content it sends (ledger.claim_jobs). That mark lived on the wide
-- `files` row (enqueued_at, sends), and `enqueued_at` was indexed (files_pending_idx), so every
-- mark was a non-HOT update writing a new entry into each of the seven indexes of `files`, on
-- pages of a 3 GB heap: 268 ms to mark 2,000 files at 30M usages, the claim 189-1,301 ms cold
-- (docs/benchmarks.md, Scale). Here one row per content sent and not yet settled, keyed by
-- SHA-1 as a job is: marking is one upsert into a small table whose only index is its key, and
-- a re-send is a HOT update (fillfactor leaves room on the page). The writer deletes a
-- content's row when it records its result (ledger.write_results), the claim when it gives the
-- content up; so the table holds at most what is in flight, and a file made pending again
-- (retry, re-crawl) is sent at once.
--
-- PostgreSQL stays the ledger: a file is pending until its result commits, whatever this table
-- says; a row here only says when a task for that content was last sent and how many times.
--
-- files.enqueued_at and files.sends are no longer written or read (kept, as NULL / 0, so that
-- scripts that still reset enqueued_at keep working; a later migration may drop them).

CREATE TABLE IF NOT EXISTS file_sends (
    sha1     text PRIMARY KEY,           -- the content (files.sha1) a task was sent for
    sent_at  timestamptz NOT NULL,       -- last time a task for it was sent (or kept alive)
    sends    integer NOT NULL            -- times sent without a result (ledger.MAX_SENDS)
) WITH (fillfactor = 70);

-- What the old columns said about contents still pending.
INSERT INTO file_sends (sha1, sent_at, sends)
    SELECT sha1, max(enqueued_at), greatest(max(sends), 1) FROM files
    WHERE state = 'pending' AND enqueued_at IS NOT NULL AND sha1 IS NOT NULL
    GROUP BY sha1
ON CONFLICT (sha1) DO NOTHING;

-- Read by nothing now (the claim reads files_pending_file_idx in file_id order), written on
-- every pending file.
DROP INDEX IF EXISTS files_pending_idx;
