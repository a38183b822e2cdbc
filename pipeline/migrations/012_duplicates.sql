-- pipeline/migrations/012_duplicates.sql: the near-duplicate clusters, computed once, read by the web.
--
-- `wikihash duplicates` (and `--refresh`) computes every cluster at one radius, minutes on a
-- large ledger, and replaces that radius's rows here in one transaction; `GET /api/duplicates`
-- and the page read a page of them by rank in a few index reads. `hashed_files` is the ledger's
-- count of hashed files at the time (ledger_counts): when it differs now, the result is stale.
-- No foreign key to files: a file deleted since simply drops out of the page that lists it.

CREATE TABLE duplicate_runs (
    max_distance     integer PRIMARY KEY CHECK (max_distance BETWEEN 0 AND 64),
    computed_at      timestamptz NOT NULL DEFAULT now(),
    hashed_files     bigint NOT NULL,   -- hashed files in the ledger then (all, for staleness)
    files            bigint NOT NULL,   -- informative hashed files clustered
    clusters         bigint NOT NULL,
    clustered_files  bigint NOT NULL,
    seconds          real NOT NULL      -- how long the computation took
);

-- One row per cluster; rank 1 is the largest (ties: the smallest file id first).
CREATE TABLE duplicate_clusters (
    max_distance  integer NOT NULL REFERENCES duplicate_runs ON DELETE CASCADE,
    cluster       integer NOT NULL,
    size          integer NOT NULL,
    PRIMARY KEY (max_distance, cluster)
);

CREATE TABLE duplicate_members (
    max_distance  integer NOT NULL,
    cluster       integer NOT NULL,
    file_id       bigint NOT NULL,
    PRIMARY KEY (max_distance, cluster, file_id)  -- no foreign key: store() deletes explicitly
);
