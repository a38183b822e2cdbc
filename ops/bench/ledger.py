"""Ledger benchmark: the queries that must stay flat on a 30M-usage ledger, with main's as baseline.

Builds, in a scratch database with the project's migrations, a ledger shaped like English
Wikipedia's (`--usages` U, default 30,000,000): U/5 pages, U/4 files (3 % sharing another's
SHA-1; 20 % in clusters of five near-copies a few bits apart; 1 % failed, missing and
unsupported each; 2 % pending), 100 icon files used by up to U/100 articles each (Zipf:
icon j by U/100/j), the other usages spread over the files. Loaded with INSERT ... SELECT
generate_series with the indexes and constraints dropped, rebuilt after, then VACUUM ANALYZE.

Then, each against its target (docs/scale.md) and beside the baseline measured in the same run
where main had another way:

- status: `ledger.counts` (counters, pipeline/migrations/005) vs main's three scans;
  `wikihash status` wall;
- the tutorial's query through the `hashes` view, r3 and r6, median of `--queries`;
- `wikihash search` (search_hashes of a real image's variants, hashing excluded);
- the producer's claim (`ledger.claim_jobs`) vs main's query, the reconciler pass, the
  re-crawl planning (one page of the files pass vs main's read of every title) and a walk
  batch's ledger writes (500 articles);
- `wikihash export` (time, hashes.sql size), restoring hashes.sql with psql, and the
  tutorial's query on the restored table.

Usage: python ops/bench/ledger.py [--usages 30000000] [--tiny] [--keep] [--json]
       [--skip-export]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2  # noqa: E402 - after common, which puts the project root on sys.path
from common import (
    ADMIN_URL,
    ROOT,
    admin,
    machine_line,
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
BASELINE_CLAIM = (
    "WITH picked AS ("
    "  SELECT DISTINCT ON (sha1) file_id, sha1, title, url, thumb_url FROM files f"
    "  WHERE state = 'pending'"
    "    AND (enqueued_at IS NULL OR enqueued_at < now() - %(stale)s * interval '1 s')"
    "    AND NOT EXISTS (SELECT 1 FROM files g WHERE g.sha1 = f.sha1"
    "      AND g.state = 'pending' AND g.enqueued_at >= now() - %(stale)s * interval '1 s')"
    "  ORDER BY sha1, file_id LIMIT %(limit)s),"
    " marked AS (UPDATE files f SET enqueued_at = now() FROM picked p"
    "  WHERE f.sha1 = p.sha1 AND f.state = 'pending')"
    " SELECT file_id, sha1, title, url, thumb_url FROM picked ORDER BY file_id")
BASELINE_FILES_PASS = "SELECT title FROM files ORDER BY file_id"

LOAD = """
SET LOCAL synchronous_commit = off;
INSERT INTO pages (page_id, title, rev_id, seen_at)
SELECT i, 'Article ' || i || (ARRAY['', ' (film)', ' – Île-de-France', ', Texas', ' Łódź',
        ' São Paulo', '''s law'])[i %% 7 + 1], i * 3 + 11, now() - interval '1 day'
FROM generate_series(1, %(pages)s) i;

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
                md5((CASE WHEN i %% 33 = 0 THEN i - 1 ELSE i END)::text)
                  || left(md5(i::text || 'x'), 8) AS sha1,
                CASE WHEN i > %(files)s - 100 THEN 'hashed'
                     WHEN i %% 100 = 97 THEN 'failed' WHEN i %% 100 = 98 THEN 'missing'
                     WHEN i %% 100 = 99 THEN 'unsupported'
                     WHEN i %% 50 = 1 THEN 'pending' ELSE 'hashed' END AS state) t;
UPDATE files SET sha1 = NULL WHERE state = 'missing';

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
        # Every index and constraint but the NOT NULLs, to rebuild after the load.
        cur.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                    " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
                    " AND contype IN ('p', 'u', 'f') AND conrelid::regclass::text IN"
                    " ('pages', 'files', 'usages') ORDER BY contype = 'f' DESC")
        constraints = cur.fetchall()
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                    " AND tablename IN ('pages', 'files', 'usages') AND indexname NOT IN"
                    " (SELECT conname FROM pg_constraint)")
        indexes = cur.fetchall()
        for table, name, _ in constraints:
            cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        cur.execute("ALTER TABLE files DISABLE TRIGGER USER")
        cur.execute("ALTER TABLE pages DISABLE TRIGGER USER")
        began = time.perf_counter()
        cur.execute("BEGIN")
        cur.execute(LOAD, {"pages": pages, "files": files, "icon_top": icon_top,
                     "rest": usages - icon_total})
        cur.execute("COMMIT")
        out["load_rows_s"] = time.perf_counter() - began
        began = time.perf_counter()
        for table, name, definition in reversed(constraints):  # keys first, then references
            cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in indexes:
            cur.execute(definition)
        out["build_indexes_s"] = time.perf_counter() - began
        cur.execute("ALTER TABLE files ENABLE TRIGGER USER")
        cur.execute("ALTER TABLE pages ENABLE TRIGGER USER")
        # The counters the disabled triggers did not keep.
        cur.execute("TRUNCATE ledger_counts")
        cur.execute("INSERT INTO ledger_counts (name, n, at) SELECT 'articles', count(*),"
                    " '-infinity' FROM pages")
        cur.execute("INSERT INTO ledger_counts (name, n, at) SELECT state, count(*),"
                    " '-infinity' FROM files GROUP BY state")
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

        def baseline_claim():
            with conn.cursor() as cur:
                cur.execute(BASELINE_CLAIM, {"stale": 900, "limit": 2000})
                cur.fetchall()

        out["claim_baseline_ms"] = median_ms(rolled_back(baseline_claim), repeat)
        out["claim_ms"] = median_ms(rolled_back(
            lambda: ledger.claim_jobs(conn, limit=2000, stale_after=900)), repeat)
        out["reconciler_ms"] = median_ms(rolled_back(lambda: (
            ledger.counts(conn), ledger.claim_jobs(conn, limit=2000, stale_after=900))), repeat)

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
        with conn.cursor() as cur:
            cur.execute("EXPLAIN " + BASELINE_CLAIM, {"stale": 900, "limit": 2000})
            out["claim_baseline_plan"] = " / ".join(r[0].strip() for r in cur.fetchall()[:12])
        conn.rollback()
    finally:
        conn.close()
    return out


def status_cli_s(url: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "status", "--database-url", url],
                   cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - began


def export_restore(url: str, dsn: str, points: list[int]) -> dict:
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
        conn = psycopg2.connect(target)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_total_relation_size('hashes'),"
                        " pg_relation_size('hashes_hash_idx'), count(*) FROM hashes")
            total, index, rows = cur.fetchone()
        conn.close()
        out.update(restored_gb=total / 1e9, restored_index_gb=index / 1e9, restored_rows=rows)
        out["restored"] = tutorial_query(target, "hashes", points)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)', dsn)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--usages", type=int, default=30_000_000)
    parser.add_argument("--tiny", action="store_true", help="CI size: 40,000 usages")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", default=ADMIN_URL)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.usages, args.queries, args.repeat = 40_000, 10, 2
    began = time.perf_counter()
    with scratch_database(args.dsn, keep=args.keep) as url:
        result: dict = {"machine": machine_line(), "server": server_line(url), "url": url}
        result["load"] = load(url, args.usages)
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            points = sample_hashes(cur, args.queries)
        conn.close()
        result["view"] = tutorial_query(url, "hashes", points)
        result["search"] = search_ms(url, args.repeat)
        result["producer"] = producer_queries(url, args.repeat)
        result["status_cli_s"] = status_cli_s(url)
        if not args.skip_export:
            result["export"] = export_restore(url, args.dsn, points)
    result["total_s"] = time.perf_counter() - began
    if args.json:
        print(json.dumps(result, default=float))
        return 0
    p, v, s = result["producer"], result["view"], result["search"]
    print(f"# ledger: {args.usages:,} usages; {result['machine']}; {result['server']}")
    print(json.dumps(result["load"]))
    rows = [("status (ms)", p["status_baseline_ms"], p["status_ms"]),
            ("producer claim, 2,000 (ms)", p["claim_baseline_ms"], p["claim_ms"]),
            ("re-crawl files pass: all titles vs one page of 500 (ms)",
             p["recrawl_files_pass_baseline_ms"], p["recrawl_files_page_ms"])]
    print(side_by_side(rows, headers=("figure", "main", "this branch")))
    print(f"reconciler pass {p['reconciler_ms']:.1f} ms; re-crawl revisions batch "
          f"{p['recrawl_revisions_batch_ms']:.1f} ms; walk batch ledger writes "
          f"{p['walk_batch_ledger_ms']:.1f} ms; wikihash status {result['status_cli_s']:.2f} s")
    print(f"hashes view r3 {v['r3_ms']:.1f} ms ({v['r3_rows']:.0f} rows), r6 {v['r6_ms']:.1f} ms"
          f" ({v['r6_rows']:.0f} rows); search {s['search_ms']:.1f} ms over {s['variants']}"
          f" variants, inserted file found: {s['found']}")
    if "export" in result:
        e = result["export"]
        print(f"export {e['export_s']:.1f} s, hashes.sql {e['hashes_sql_gb']:.3f} GB, restore "
              f"{e['restore_s']:.1f} s; restored r3 {e['restored']['r3_ms']:.1f} ms, r6 "
              f"{e['restored']['r6_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
