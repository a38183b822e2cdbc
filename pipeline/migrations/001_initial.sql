-- sql/001_initial.sql: the ledger. See docs/design.md, "What is stored".
-- Applied once by `wikihash db init`, inside a transaction.

CREATE EXTENSION IF NOT EXISTS bktree;

-- One row per article (namespace 0, not a redirect), keyed by the wiki's page id.
CREATE TABLE pages (
    page_id    bigint PRIMARY KEY,
    title      text NOT NULL,             -- as the wiki spells it: spaces, no namespace
    rev_id     bigint,                    -- last revision id seen
    seen_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pages_title_idx ON pages (title);

-- One row per file, keyed by its title; hashed once per distinct SHA-1.
CREATE TABLE files (
    file_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title            text NOT NULL UNIQUE, -- as the wiki spells it: spaces, no "File:" prefix
    sha1             text,                 -- hex, as imageinfo gives it
    mime             text,
    media_type       text,
    size             bigint,
    width            integer,
    height           integer,
    repo             text,                 -- imagerepository: "local", "shared", ...
    url              text,                 -- the original
    thumb_url        text,                 -- the standard-width thumbnail, when the wiki offers one
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'hashed', 'failed', 'missing', 'unsupported')),
    reason           text,                 -- why it is not hashed
    attempts         integer NOT NULL DEFAULT 0,
    dhash            bigint,               -- imagehash.dhash read as a signed 64-bit integer
    low_information  boolean,              -- within a few bits of all zeros or all ones
    hashed_from      text,                 -- 'thumb' or 'original'
    enqueued_at      timestamptz,          -- last time a task for it was sent
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'hashed') = (dhash IS NOT NULL))
);
CREATE INDEX files_dhash_idx ON files USING spgist (dhash bktree_ops);
CREATE INDEX files_sha1_idx ON files (sha1);
CREATE INDEX files_pending_idx ON files (enqueued_at NULLS FIRST) WHERE state = 'pending';

-- Which article uses which file. `id` gives the tutorial-shaped view a stable integer key.
CREATE TABLE usages (
    page_id  bigint NOT NULL REFERENCES pages ON DELETE CASCADE,
    file_id  bigint NOT NULL REFERENCES files ON DELETE CASCADE,
    id       integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (page_id, file_id)
);
CREATE INDEX usages_file_idx ON usages (file_id);

-- Crawl state: the walk's continuation, the last completed crawl, the change-feed cursor.
CREATE TABLE crawl_state (
    key         text PRIMARY KEY,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Wiki facts read once from the API (article path, server, repositories).
CREATE TABLE wiki_info (
    key    text PRIMARY KEY,
    value  text NOT NULL
);

-- The source tutorial's shape: hashes(id integer, hash bigint, url text), one row per article
-- and hashed file, url the article title with underscores. Written so that `hash <@ (h, d)`
-- is pushed down to files_dhash_idx.
CREATE VIEW hashes AS
    SELECT u.id, f.dhash AS hash, replace(p.title, ' ', '_') AS url
    FROM files f
    JOIN usages u ON u.file_id = f.file_id
    JOIN pages p ON p.page_id = u.page_id
    WHERE f.state = 'hashed';
