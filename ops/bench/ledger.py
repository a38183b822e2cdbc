"""Ledger benchmark: the queries that must stay flat on a 30M-usage ledger, with main's as baseline.

Builds, in a scratch database with the project's migrations, a ledger shaped like English
Wikipedia's (`--usages` U, default 30,000,000): U/5 pages, U/4 files (3 % sharing another's
SHA-1; 20 % in clusters of five near-copies a few bits apart; 1 % failed, missing and
unsupported each; 2 % pending), 100 icon files used by up to U/100 articles each (Zipf:
icon j by U/100/j), the other usages spread over the files. Loaded with INSERT ... SELECT
generate_series with the indexes and constraints dropped, rebuilt after, then VACUUM ANALYZE.
`--keep` keeps it; `--database-url URL` measures a ledger kept so, without loading again.

Then, each against its target (docs/scale.md) and beside the baseline measured in the same run
where main had another way:

- status: `ledger.counts` (counters, pipeline/migrations/005) vs main's three scans;
  `wikihash status` wall;
- the tutorial's query through the `hashes` view, r3 and r6, median of `--queries`;
- `wikihash search` (search_hashes of a real image's variants, hashing excluded);
- the producer's claim: five successive claims in one transaction (rolled back), as a crawl
  claims: each leaves its contents in flight for the next; at 2,000 (twice), 500 and 100
  files, and at 2,000 with 10,000 contents in flight at the front of the pending files, sent a
  minute ago with the claim's position at the end (a sweep just wrapped round: the branch's
  worst case) and an hour ago (lost jobs, sent again). `ledger.claim_jobs` (a slice after the
  last claim's position, migrations/013) beside main's claim at 22b53d3 (a slice from the first
  pending file, skipping what is in flight), alternating; per claim its ms, the rows returned,
  the `files` rows read (pg_stat_xact_user_tables) and the pages EXPLAIN (ANALYZE, BUFFERS)
  reports for the same series run again; the ledger is first migrated to this branch's schema
  (timed);
- the reconciler pass (counts + claim), the re-crawl planning (one page of the files pass vs
  main's read of every title; the revisions of 500 pages) and a walk batch's ledger writes;
- `wikihash export` (time, hashes.sql size and its bytes per field), restoring hashes.sql with
  psql, and the tutorial's query on the restored table beside main's layout of it (rows in id
  order, one SP-GiST index), built from the same rows in the restored database.

Usage: python ops/bench/ledger.py [--usages 30000000] [--tiny] [--keep] [--json]
       [--skip-export] [--parts claims,queries,export] [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2  # noqa: E402 - after common, which puts the project root on sys.path
from common import (
    ADMIN_URL,
    ROOT,
    admin,
    drop_keys,
    machine_line,
    rebuild_keys,
    recount_ledger,
    scratch_database,
    server_line,
    side_by_side,
    with_database,
)

from pipeline import ledger, search, variants  # noqa: E402
from pipeline.wiki import Article  # noqa: E402

QUERY_IMAGE = ROOT / "tests" / "data" / "images" / "mpl_grace_hopper.jpg"

# main's queries at the time this benchmark was written: the baseline.
BASELINE_COUNTS = ("SELECT count(*) FROM pages",
                   "SELECT state, count(*) FROM files GROUP BY state",
                   "SELECT count(*) FROM files WHERE state <> 'pending'"
                   " AND updated_at > now() - interval '1 minute'")
# main's claim at 22b53d3 (sent state in file_sends, migrations/010), which reads the pending
# files from the first one on every claim, each content in flight again: the baseline.
BASELINE_CLAIM = (
    "WITH candidates AS ("
    "  SELECT f.file_id, f.sha1, f.title, f.url, f.thumb_url, coalesce(s.sends, 0) AS sends"
    "  FROM files f LEFT JOIN LATERAL (SELECT s.sends, s.sent_at FROM file_sends s"
    "    WHERE s.sha1 = f.sha1 OFFSET 0) s ON true"
    "  WHERE f.state = 'pending'"
    "    AND (s.sent_at IS NULL OR s.sent_at < now() - %(stale)s * interval '1 s')"
    "  ORDER BY f.file_id LIMIT %(scan)s),"
    " picked AS ("
    "  SELECT DISTINCT ON (sha1) * FROM candidates"
    "  ORDER BY sha1, file_id LIMIT %(limit)s),"
    " marked AS (INSERT INTO file_sends (sha1, sent_at, sends)"
    "  SELECT sha1, now(), sends + 1 FROM picked"
    "  WHERE sends < %(max)s AND sha1 IS NOT NULL"
    "  ON CONFLICT (sha1) DO UPDATE"
    "  SET sent_at = EXCLUDED.sent_at, sends = EXCLUDED.sends),"
    " given_up AS (UPDATE files f SET state = 'failed', updated_at = now(),"
    "    reason = 'sent to the workers ' || p.sends || ' times without a result'"
    "  FROM picked p WHERE f.sha1 = p.sha1 AND f.state = 'pending'"
    "    AND p.sends >= %(max)s),"
    " forgotten AS (DELETE FROM file_sends s USING picked p"
    "  WHERE s.sha1 = p.sha1 AND p.sends >= %(max)s)"
    " SELECT file_id, sha1, title, url, thumb_url FROM picked WHERE sends < %(max)s"
    " ORDER BY file_id")


def baseline_parameters(limit: int) -> dict:
    return {"stale": 900, "limit": limit, "max": ledger.MAX_SENDS,
            "scan": limit + limit // 4 + 100}


CLAIM = 2000  # files a dispatch claims: 20 jobs of 100
CLAIM_SIZES = (2000, 500, 100)  # a dispatch with the queue empty, part full, one job's room
SUCCESSIVE = 5  # claims in one transaction, each skipping what the earlier left in flight
IN_FLIGHT = 10_000  # contents in flight for the wrapped and overdue cases
BASELINE_FILES_PASS = "SELECT title FROM files ORDER BY file_id"

LOAD = """
SET LOCAL synchronous_commit = off;
INSERT INTO pages (page_id, title, rev_id, seen_at)
SELECT i, 'Article ' || i || (ARRAY['', ' (film)', ' – Île-de-France', ', Texas', ' Łódź',
        ' São Paulo', '''s law'])[i %% 7 + 1], i * 3 + 11, now() - interval '1 day'
FROM generate_series(1, %(pages)s) i;

-- A missing file's NULL SHA-1 is set here, not by an UPDATE after: that left HOT chains, so
-- every index built next was marked indcheckxmin, unused while any older snapshot lived (a
-- long index build in another database of the cluster made the claims seq-scan).
INSERT INTO files (title, sha1, mime, media_type, size, width, height, repo, url, thumb_url,
                   state, reason, dhash, low_information, hashed_from, updated_at)
SELECT t.title, t.sha1, 'image/jpeg', 'BITMAP', 40000 + i %% 900000, 800, 600,
       CASE WHEN i %% 10 < 7 THEN 'shared' ELSE 'local' END,
       'https://upload.wikimedia.org/wikipedia/commons/' || left(t.sha1, 1) || '/'
           || left(t.sha1, 2) || '/' || replace(t.title, ' ', '_'),
       'https://upload.wikimedia.org/wikipedia/commons/thumb/' || left(t.sha1, 1) || '/'
           || left(t.sha1, 2) || '/' || replace(t.title, ' ', '_') || '/120px-'
           || replace(t.title, ' ', '_'),
       t.state, CASE WHEN t.state IN ('failed', 'unsupported') THEN 'benchmark' END,
       CASE WHEN t.state = 'hashed' THEN
           CASE WHEN i %% 5 = 0 OR i %% 100 >= 20 THEN hashint8extended(i::bigint, 1)
                ELSE hashint8extended((i / 5 * 5)::bigint, 1) # (1::bigint << ((i %% 5) * 13))
           END END,
       CASE WHEN t.state = 'hashed' THEN false END,
       CASE WHEN t.state = 'hashed' THEN 'thumb' END, now() - interval '1 hour'
FROM generate_series(1, %(files)s) i,
LATERAL (SELECT CASE WHEN i > %(files)s - 100 THEN 'Flag of ' || i || '.svg'
                     ELSE 'Photo ' || i || '.jpg' END AS title,
                CASE WHEN i <= %(files)s - 100 AND i %% 100 = 98 THEN NULL  -- missing
                     ELSE md5((CASE WHEN i %% 33 = 0 THEN i - 1 ELSE i END)::text)
                          || left(md5((CASE WHEN i %% 33 = 0 THEN i - 1 ELSE i END)::text
                                      || 'x'), 8) END AS sha1,
                CASE WHEN i > %(files)s - 100 THEN 'hashed'
                     WHEN i %% 100 = 97 THEN 'failed' WHEN i %% 100 = 98 THEN 'missing'
                     WHEN i %% 100 = 99 THEN 'unsupported'
                     WHEN i %% 50 = 1 THEN 'pending' ELSE 'hashed' END AS state) t;

INSERT INTO usages (page_id, file_id)
SELECT p, %(files)s - 100 + j FROM generate_series(1, 100) j,
       generate_series(1, greatest(1, %(icon_top)s / j)) p;
INSERT INTO usages (page_id, file_id)
SELECT k %% %(pages)s + 1, (k * 7919) %% (%(files)s - 100) + 1
FROM generate_series(0::bigint, %(rest)s - 1) k;
"""


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def load(url: str, usages: int) -> dict:
    pages, files = usages // 5, usages // 4
    icon_top = usages // 100
    icon_total = sum(max(1, icon_top // j) for j in range(1, 101))
    conn = psycopg2.connect(url)
    conn.autocommit = True
    out = {"pages": pages, "files": files, "usages": usages, "icon_usages": icon_total}
    with conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '1GB'")
        keys = drop_keys(cur)  # every index and key but the NOT NULLs
        began = time.perf_counter()
        cur.execute("BEGIN")
        cur.execute(LOAD, {"pages": pages, "files": files, "icon_top": icon_top,
                     "rest": usages - icon_total})
        cur.execute("COMMIT")
        out["load_rows_s"] = time.perf_counter() - began
        began = time.perf_counter()
        rebuild_keys(cur, keys)
        out["build_indexes_s"] = time.perf_counter() - began
        recount_ledger(cur)
        began = time.perf_counter()
        cur.execute("VACUUM ANALYZE")
        out["vacuum_analyze_s"] = time.perf_counter() - began
        cur.execute("SELECT pg_database_size(current_database()),"
                    " (SELECT sum(pg_relation_size(indexrelid)) FROM pg_index i JOIN pg_class c"
                    "  ON c.oid = i.indrelid WHERE c.relnamespace = 'public'::regnamespace)")
        total, index_bytes = cur.fetchone()
        out["database_gb"], out["indexes_gb"] = total / 1e9, float(index_bytes) / 1e9
    conn.close()
    return out


def sample_hashes(cur, n: int) -> list[int]:
    cur.execute("SELECT dhash FROM files TABLESAMPLE SYSTEM (1) WHERE dhash IS NOT NULL"
                " LIMIT %s", (n,))
    found = [row[0] for row in cur.fetchall()]
    if len(found) < n:
        cur.execute("SELECT dhash FROM files WHERE dhash IS NOT NULL ORDER BY random() LIMIT %s",
                    (n,))
        found = [row[0] for row in cur.fetchall()]
    return found


def tutorial_query(url: str, table: str, points: list[int]) -> dict:
    """Median ms of the tutorial's `SELECT url FROM <table> WHERE hash <@ (q, r)`."""
    conn = psycopg2.connect(url)
    out = {}
    try:
        with conn.cursor() as cur:
            for radius in (3, 6):
                sql = f"SELECT url FROM {table} WHERE hash <@ (%s, %s)"  # fixed table names
                for q in points[:3]:  # warm the cache as a serving database would be
                    cur.execute(sql, (q, radius))
                    cur.fetchall()
                times, rows = [], 0
                for q in points:
                    began = time.perf_counter()
                    cur.execute(sql, (q, radius))
                    rows += len(cur.fetchall())
                    times.append(1000 * (time.perf_counter() - began))
                out[f"r{radius}_ms"] = statistics.median(times)
                out[f"r{radius}_rows"] = rows / len(points)
                cur.execute("EXPLAIN " + sql, (points[0], radius))
                out[f"r{radius}_plan"] = " / ".join(r[0].strip() for r in cur.fetchall()[:4])
    finally:
        conn.close()
    return out


def search_ms(url: str, repeat: int) -> dict:
    data = QUERY_IMAGE.read_bytes()
    canonical, probes = variants.query_variants(data)
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:  # the inserted file: one loaded file takes the image's hash
            cur.execute("UPDATE files SET dhash = %s WHERE file_id = (SELECT min(file_id) FROM"
                        " files WHERE state = 'hashed') RETURNING file_id", (canonical.int64,))
            target = cur.fetchone()[0]
        conn.commit()
        result = search.search_hashes(conn, canonical.int64, probes)
        found = any(m.file_id == target for m in result.matches)
        ms = median_ms(lambda: search.search_hashes(conn, canonical.int64, probes), repeat)
        conn.rollback()
    finally:
        conn.close()
    return {"search_ms": ms, "variants": len(probes), "found": found,
            "matches": len(result.matches)}


def _explained(cur, sql: str, params: dict) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS, WAL, TIMING OFF) of one claim: its ms, rows, and the pages
    and WAL it cost, counting the data-modifying CTEs (run after the main query, outside its
    node). TIMING OFF: no clock read per row, so its ms is close to a plain run's."""
    cur.execute("EXPLAIN (ANALYZE, BUFFERS, WAL, TIMING OFF, FORMAT JSON) " + sql, params)
    found = cur.fetchone()[0][0]
    top = found["Plan"]
    nodes = [top] + [n for n in top.get("Plans", ()) if n["Node Type"] == "ModifyTable"]
    total = {key: sum(n.get(field, 0) for n in nodes) for key, field in (
        ("hit", "Shared Hit Blocks"), ("read", "Shared Read Blocks"),
        ("dirtied", "Shared Dirtied Blocks"), ("written", "Shared Written Blocks"),
        ("wal_bytes", "WAL Bytes"))}
    total["ms"] = found["Execution Time"]
    total["rows"] = top["Actual Rows"]
    return total


def _files_rows_read(cur) -> int:
    """Rows of `files` this transaction has read so far, by index or by a scan."""
    cur.execute("SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
                " WHERE relname = 'files'")
    return cur.fetchone()[0]


def claim_series(conn, sql: str, params: dict, *, setup: str | None = None,
                 explain: bool = False, fresh=lambda: None) -> dict:
    """SUCCESSIVE claims in one transaction, then rolled back: each skips what the earlier ones
    left in flight, as a crawl's dispatches do. Per claim: its ms (the counts before it: a
    reconciling pass), the files rows it read, and with `explain` the pages EXPLAIN (ANALYZE,
    BUFFERS) reports, from the same series run again under EXPLAIN. `setup` runs first, in the
    transaction (contents put in flight); `fresh()` before each of the two series."""
    out: dict = {"claims_ms": [], "passes_ms": [], "rows": [], "files_rows_read": []}
    fresh()
    try:
        with conn.cursor() as cur:
            if setup:
                cur.execute(setup)
            for _ in range(SUCCESSIVE):
                began = time.perf_counter()
                ledger.counts(conn)
                counted = time.perf_counter()
                read = _files_rows_read(cur)
                cur.execute(sql, params)
                out["rows"].append(len(cur.fetchall()))
                done = time.perf_counter()
                out["files_rows_read"].append(_files_rows_read(cur) - read)
                out["claims_ms"].append(1000 * (done - counted))
                out["passes_ms"].append(1000 * (done - began))
    finally:
        conn.rollback()
    if explain:
        fresh()
        try:
            with conn.cursor() as cur:
                if setup:
                    cur.execute(setup)
                out["explained"] = [_explained(cur, sql, params) for _ in range(SUCCESSIVE)]
        finally:
            conn.rollback()
    out["first_ms"] = out["claims_ms"][0]
    out["claim_ms"] = statistics.median(out["claims_ms"][1:])
    out["reconciler_ms"] = statistics.median(out["passes_ms"][1:])
    return out


# The wrapped case: IN_FLIGHT contents in flight at the front of the pending files (the first
# ones in file_id order, sent a minute ago), the position at the end (a sweep that has just
# wrapped round: the worst case of the branch's claim, which reads them once).
WRAPPED_SETUP = (
    "INSERT INTO file_sends (sha1, sent_at, sends, file_id) SELECT DISTINCT ON (sha1) sha1,"
    " now() - interval '1 minute', 1, file_id FROM (SELECT sha1, file_id FROM files"
    " WHERE state = 'pending' AND sha1 IS NOT NULL ORDER BY file_id LIMIT {n}) f"
    " ORDER BY sha1, file_id ON CONFLICT DO NOTHING;"
    " UPDATE claim_position SET after_file_id = (SELECT max(file_id) FROM files)")
# The overdue case: the same contents sent an hour ago and lost (Redis restarted): each claim
# sends again what it can of them, the oldest first.
OVERDUE_SETUP = WRAPPED_SETUP.replace("interval '1 minute'", "interval '1 hour'")


def migrate(url: str) -> dict:
    """The ledger brought to this branch's schema (a kept one may be older); timed."""
    from pipeline import storage

    began = time.perf_counter()
    names = [m.name for m in storage.migrate(url)]
    return {"migrated": names, "migrate_s": time.perf_counter() - began}


# Each claim's transaction settings: as ledger.claim_jobs runs (jit off), main's as it ran.
SETTINGS = {"main": None, "branch": ledger.CLAIM_SETTINGS}


def vacuum_file_sends(url: str) -> None:
    """Each rolled-back series leaves its marks in file_sends as dead rows (10,000 a series of
    2,000) that the next series' probes would wade through; autovacuum clears a small busy
    table as fast in a crawl, so every series starts from a vacuumed one."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) file_sends")
    finally:
        conn.close()


def claims(url: str) -> dict:
    """main's claim and this branch's on the same ledger, alternating, at each size."""
    out: dict = {"by_size": {}}
    conn = psycopg2.connect(url)

    def series(sql: str, params: dict, **kwargs) -> dict:
        return claim_series(conn, sql, params, fresh=lambda: vacuum_file_sends(url), **kwargs)

    try:
        for limit in CLAIM_SIZES:
            runs: dict[str, list[dict]] = {"main": [], "branch": []}
            for _ in range(2 if limit == CLAIM else 1):
                for who, sql, params in (
                        ("main", BASELINE_CLAIM, baseline_parameters(limit)),
                        ("branch", ledger.CLAIM_SQL,
                         ledger.claim_parameters(limit=limit, stale_after=900))):
                    runs[who].append(series(sql, params, explain=not runs[who],
                                            setup=SETTINGS[who]))
            out["by_size"][limit] = {who: _summary(r) for who, r in runs.items()}
        for case, setup in (("wrapped", WRAPPED_SETUP), ("overdue", OVERDUE_SETUP)):
            sql_setup = setup.format(n=IN_FLIGHT)
            out[case] = {
                "main": _summary([series(BASELINE_CLAIM, baseline_parameters(CLAIM),
                                         setup=sql_setup, explain=True)]),
                "branch": _summary([series(
                    ledger.CLAIM_SQL, ledger.claim_parameters(limit=CLAIM, stale_after=900),
                    setup=f"{ledger.CLAIM_SETTINGS}; {sql_setup}", explain=True)])}
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM files WHERE state = 'pending'")
            out["pending"] = cur.fetchone()[0]
            cur.execute("EXPLAIN " + ledger.CLAIM_SQL,
                        ledger.claim_parameters(limit=CLAIM, stale_after=900))
            out["plan"] = [r[0] for r in cur.fetchall()]
        conn.rollback()
    finally:
        conn.close()
    return out


def _summary(runs: list[dict]) -> dict:
    """The series of one claim, over its runs: every claim's ms, rows, rows read and pages."""
    return {"claims_ms": [r["claims_ms"] for r in runs],
            "first_ms": [r["first_ms"] for r in runs],
            "claim_ms": statistics.median(c for r in runs for c in r["claims_ms"][1:]),
            "reconciler_ms": statistics.median(r["reconciler_ms"] for r in runs),
            "rows": runs[0]["rows"], "files_rows_read": runs[0]["files_rows_read"],
            "explained": next(r["explained"] for r in runs if "explained" in r)}


def producer_queries(url: str, repeat: int) -> dict:
    conn = psycopg2.connect(url)
    out: dict[str, float] = {}
    try:
        def rolled_back(fn):
            def run():
                try:
                    fn()
                finally:
                    conn.rollback()
            return run

        def baseline_counts():
            with conn.cursor() as cur:
                for sql in BASELINE_COUNTS:
                    cur.execute(sql)
                    cur.fetchall()

        out["status_baseline_ms"] = median_ms(rolled_back(baseline_counts), repeat)
        out["status_ms"] = median_ms(rolled_back(lambda: ledger.counts(conn)), repeat)

        def baseline_files_pass():
            with conn.cursor() as cur:
                cur.execute(BASELINE_FILES_PASS)
                cur.fetchall()

        out["recrawl_files_pass_baseline_ms"] = median_ms(rolled_back(baseline_files_pass), 1)
        with conn.cursor() as cur:
            cur.execute("SELECT max(file_id) / 2 FROM files")
            middle = cur.fetchone()[0]

        def files_page():
            with conn.cursor() as cur:
                cur.execute("SELECT file_id, title FROM files WHERE file_id > %s"
                            " ORDER BY file_id LIMIT 500", (middle,))
                cur.fetchall()

        out["recrawl_files_page_ms"] = median_ms(rolled_back(files_page), repeat)
        with conn.cursor() as cur:
            cur.execute("SELECT max(page_id) / 2 FROM pages")
            first = cur.fetchone()[0]
            cur.execute("SELECT u.page_id, f.title FROM usages u JOIN files f USING (file_id)"
                        " WHERE u.page_id BETWEEN %s AND %s", (first, first + 499))
            images: dict[int, list[str]] = {}
            for page_id, title in cur.fetchall():
                images.setdefault(page_id, []).append(title)
        conn.rollback()
        batch = [Article(page_id=p, title=f"Article {p}", rev_id=p * 3 + 12,
                         images=tuple(images.get(p, ())))
                 for p in range(first, first + 500)]

        def revisions():
            with conn.cursor() as cur:
                cur.execute("SELECT page_id, rev_id FROM pages WHERE page_id = ANY(%s)",
                            ([a.page_id for a in batch],))
                cur.fetchall()

        out["recrawl_revisions_batch_ms"] = median_ms(rolled_back(revisions), repeat)

        def walk_batch():
            titles = [t for a in batch for t in a.images]
            ledger.unknown_files(conn, titles)
            ledger.upsert_pages(conn, batch)
            ledger.set_usages(conn, batch)

        out["walk_batch_ledger_ms"] = median_ms(rolled_back(walk_batch), repeat)
    finally:
        conn.close()
    return out


def status_cli_s(url: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "status", "--database-url", url],
                   cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - began


def export_restore(url: str, dsn: str, points: list[int], *, main_layout: bool = True) -> dict:
    out: dict = {}
    workdir = Path(tempfile.mkdtemp(prefix="wikihash_bench_export_"))
    restored = f"wikihash_bench_restore_{int(time.time())}"
    try:
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline", "export", "--database-url", url,
                        "--out", str(workdir)], cwd=ROOT, check=True, capture_output=True)
        out["export_s"] = time.perf_counter() - began
        out["hashes_sql_gb"] = (workdir / "hashes.sql").stat().st_size / 1e9
        out["dump_gb"] = (workdir / "wikihash.dump").stat().st_size / 1e9
        (workdir / "wikihash.dump").unlink()
        admin(f'CREATE DATABASE "{restored}"', dsn)
        target = with_database(dsn, restored)
        began = time.perf_counter()
        with (workdir / "hashes.sql").open("rb") as sql:
            subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", target], stdin=sql,
                           check=True, capture_output=True)
        out["restore_s"] = time.perf_counter() - began
        (workdir / "hashes.sql").unlink()
        conn = psycopg2.connect(target)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_relation_size('hashes'), count(*),"
                        " avg(length(id::text)), avg(length(hash::text)), avg(octet_length(url))"
                        " FROM hashes")
            heap, rows, *fields = cur.fetchone()
            out.update(restored_heap_gb=heap / 1e9, restored_rows=rows,
                       bytes_per_row={"id": float(fields[0]), "hash": float(fields[1]),
                                      "url": float(fields[2]), "tabs_newline": 3.0})
            cur.execute("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid)"
                        " FROM pg_index WHERE indrelid = 'hashes'::regclass ORDER BY 1")
            out["restored_indexes_gb"] = {name: size / 1e9 for name, size in cur.fetchall()}
        out["restored"] = tutorial_query(target, "hashes", points)
        if not main_layout:
            conn.close()
            return out
        # main's layout of the same rows: id order, the tutorial's one SP-GiST index.
        with conn.cursor() as cur:
            cur.execute("SET maintenance_work_mem = '256MB'")
            began = time.perf_counter()
            cur.execute("CREATE TABLE hashes_main_layout AS SELECT id, hash, url FROM hashes"
                        " ORDER BY id")
            cur.execute("CREATE INDEX ON hashes_main_layout USING spgist (hash bktree_ops)")
            cur.execute("ANALYZE hashes_main_layout")
            out["main_layout_build_s"] = time.perf_counter() - began
        conn.close()
        out["restored_main_layout"] = tutorial_query(target, "hashes_main_layout", points)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)', dsn)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def restored_layouts(url: str, points: list[int]) -> dict:
    """The table hashes.sql restores, built from the view in the ledger's own database (no
    export, no psql): main's row order (id) and this branch's (hash, id), each with the
    tutorial's SP-GiST index, and the tutorial's query on both. Dropped after."""
    out: dict = {}
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET maintenance_work_mem = '256MB'")
            cur.execute("SET work_mem = '256MB'")
            for name, order in (("by_id", "id"), ("by_hash", "hash, id")):
                table = f"restored_{name}"
                cur.execute(f"DROP TABLE IF EXISTS {table}")
                began = time.perf_counter()
                source = "hashes" if name == "by_id" else "restored_by_id"
                cur.execute(f"CREATE TABLE {table} AS SELECT id, hash, url FROM {source}"
                            f" ORDER BY {order}")  # fixed names
                copied = time.perf_counter()
                cur.execute(f"CREATE INDEX {table}_idx ON {table} USING spgist (hash bktree_ops)")
                cur.execute(f"ANALYZE {table}")
                out[name] = {"copy_s": copied - began,
                             "index_s": time.perf_counter() - copied}
                out[name].update(tutorial_query(url, table, points))
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS restored_by_id, restored_by_hash")
        conn.close()
    return out


@contextlib.contextmanager
def ledger_database(args) -> Iterator[tuple[str, dict]]:
    """The ledger to measure: the one at --database-url as it is, or a new one loaded here."""
    if args.database_url:
        yield args.database_url, {"reused": args.database_url}
        return
    with scratch_database(args.dsn, keep=args.keep) as url:
        yield url, load(url, args.usages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--usages", type=int, default=30_000_000)
    parser.add_argument("--tiny", action="store_true", help="CI size: 40,000 usages")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", default=ADMIN_URL)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--database-url", help="measure this ledger (kept by --keep) as it is,"
                        " migrating it to this branch's schema first; no load")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--no-main-layout", action="store_true",
                        help="after the restore, do not also build main's layout of the"
                        " restored rows (id order; 10 min at 30M) to query beside it")
    parser.add_argument("--parts", default="claims,queries,export",
                        help="comma-separated: claims (main's and this branch's), queries"
                        " (view, search, status, re-crawl planning), export (and restore)")
    parser.add_argument("--restored-layouts", action="store_true",
                        help="also build the restored table in main's row order and this"
                        " branch's in the ledger's database and query both (no export)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.usages, args.queries, args.repeat = 40_000, 10, 2
    parts = set(args.parts.split(","))
    if args.skip_export:
        parts.discard("export")
    began = time.perf_counter()
    with ledger_database(args) as (url, loaded):
        result: dict = {"machine": machine_line(), "server": server_line(url), "url": url,
                        "load": loaded}
        def step(name: str, value: object) -> None:  # each part on stderr as it is measured
            result[name] = value
            result.setdefault("loadavg", {})[name] = os.getloadavg()
            print(json.dumps({name: value, "loadavg": os.getloadavg()}, default=float),
                  file=sys.stderr, flush=True)

        step("migrate", migrate(url))
        if "claims" in parts:
            step("claims", claims(url))
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            points = sample_hashes(cur, args.queries)
        conn.close()
        if "queries" in parts:
            step("view", tutorial_query(url, "hashes", points))
            step("search", search_ms(url, args.repeat))
            step("producer", producer_queries(url, args.repeat))
            step("status_cli_s", status_cli_s(url))
        if args.restored_layouts:
            step("restored_layouts", restored_layouts(url, points))
        if "export" in parts:
            step("export", export_restore(url, args.dsn, points,
                                          main_layout=not args.no_main_layout))
    result["total_s"] = time.perf_counter() - began
    if args.json:
        print(json.dumps(result, default=float))
        return 0
    print(f"# ledger: {url}; {result['machine']}; {result['server']}")
    print(json.dumps(result["load"]))
    m = result["migrate"]
    if m["migrated"]:
        print(f"migrations {', '.join(m['migrated'])} applied in {m['migrate_s']:.1f} s")
    if "claims" in result:
        print(claims_table(result["claims"]))
    if "queries" in parts:
        print(queries_report(result))
    if "export" in result:
        e = result["export"]
        if "restored_main_layout" in e:
            print(side_by_side([("restored hashes.sql, r3 (ms): main's layout vs this",
                                 e["restored_main_layout"]["r3_ms"], e["restored"]["r3_ms"]),
                                ("restored hashes.sql, r6 (ms)",
                                 e["restored_main_layout"]["r6_ms"], e["restored"]["r6_ms"])],
                               headers=("figure", "main", "this branch")))
        print(f"restored hashes.sql: r3 {e['restored']['r3_ms']:.1f} ms, r6"
              f" {e['restored']['r6_ms']:.1f} ms")
        print(f"export {e['export_s']:.1f} s, hashes.sql {e['hashes_sql_gb']:.3f} GB"
              f" ({e['restored_rows']:,} rows, bytes per row {e['bytes_per_row']}), restore"
              f" {e['restore_s']:.1f} s")
    return 0


def queries_report(result: dict) -> str:
    p, v, s = result["producer"], result["view"], result["search"]
    rows = [("status (ms)", p["status_baseline_ms"], p["status_ms"]),
            ("re-crawl files pass: all titles vs one page of 500 (ms)",
             p["recrawl_files_pass_baseline_ms"], p["recrawl_files_page_ms"])]
    return "\n".join([
        side_by_side(rows, headers=("figure", "main", "this branch")),
        f"re-crawl revisions batch {p['recrawl_revisions_batch_ms']:.1f} ms; walk batch ledger"
        f" writes {p['walk_batch_ledger_ms']:.1f} ms; wikihash status"
        f" {result['status_cli_s']:.2f} s",
        f"hashes view r3 {v['r3_ms']:.1f} ms ({v['r3_rows']:.0f} rows), r6 {v['r6_ms']:.1f} ms"
        f" ({v['r6_rows']:.0f} rows); search {s['search_ms']:.1f} ms over {s['variants']}"
        f" variants, inserted file found: {s['found']}"])


def claims_table(c: dict) -> str:
    """Per case, main's series beside this branch's: each claim's ms / rows returned / rows
    of files read / pages read+hit / dirtied (EXPLAIN)."""
    def cells(summary: dict) -> str:
        return "<br>".join(
            f"{ms:.1f} ms, {rows} rows, read {read}, pages {e['read'] + e['hit']}"
            f" ({e['read']} read), dirtied {e['dirtied']}"
            for ms, rows, read, e in zip(summary["claims_ms"][0], summary["rows"],
                                         summary["files_rows_read"], summary["explained"],
                                         strict=True))

    out = ["| claims, successive | main | this branch |", "|---|---|---|"]
    cases = [(f"{limit:,}", by) for limit, by in c["by_size"].items()]
    cases += [(f"{CLAIM:,}, {IN_FLIGHT:,} {case}", c[case]) for case in ("wrapped", "overdue")]
    for label, by in cases:
        out.append(f"| {label} | {cells(by['main'])} | {cells(by['branch'])} |")
        out.append(f"| {label}: median of claims 2-{SUCCESSIVE} / reconciler pass (ms) |"
                   f" {by['main']['claim_ms']:.1f} / {by['main']['reconciler_ms']:.1f} |"
                   f" {by['branch']['claim_ms']:.1f} / {by['branch']['reconciler_ms']:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
