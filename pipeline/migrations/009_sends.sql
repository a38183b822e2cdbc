-- How many times each file was sent to the workers without a result yet: the producer records a
-- file as failed instead of sending it a sixth time (ledger.MAX_SENDS), so that a file that
-- kills every worker, or whose messages are always lost, is not sent forever.
ALTER TABLE files ADD COLUMN IF NOT EXISTS sends integer NOT NULL DEFAULT 0;
