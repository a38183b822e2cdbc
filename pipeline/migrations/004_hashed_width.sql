-- pipeline/migrations/004_hashed_width.sql: the width, in pixels, of the picture each file's hash was made from.
--
-- The stored thumbnail width is a setting (WIKIHASH_THUMB_WIDTH) and has changed: a ledger
-- may hold hashes made at several widths. The writer records the decoded width of what it
-- hashed (the thumbnail, or the original when it is no wider or had no thumbnail); NULL for
-- files hashed before this column existed (then at 120 px or narrower).

ALTER TABLE files ADD COLUMN IF NOT EXISTS hashed_width integer;
