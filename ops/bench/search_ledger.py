"""Search benchmark at ledger size: `wikihash search` beyond hashing on a files table of
`--files` N (default 7,500,000, the 30M-usage ledger's) with the ledger's dHash distribution,
with the GIN pending list empty and as a crawl's writes leave it, under each pending-list setting
of the `bktree_mih` index.

The files rows are ops/bench/ledger.py's (its `LOAD`, so the same hashes: uniform, 20 % in
clusters of five one bit apart, 5 % without a hash); pages N/4 and one usage per file (the
ledger's 300k-article icons are left out: search lists only the files it finds). Loaded with
the indexes dropped and rebuilt, as ledger.py does (the MIH index and the BK-tree of migration
003), then VACUUM ANALYZE. `--database-url` measures a database kept by `--keep`.

For each setting of `files_dhash_mih_idx` (the installed build's default; 1.1-1.2's default
set explicitly: fast update on, a 256 kB list; fast update off): VACUUM (no pending list), the
search of tests/data's photo (its variants, radius 8, one loaded file given its hash) and
EXPLAIN (ANALYZE, BUFFERS) of its LATERAL probes; then `--pending-rows` rows updated in a
rolled-back transaction (a crawl's writes: their hash changed, as a worker writes one; every
non-HOT update of a files row queues it in the pending list), timed, and the same search and
EXPLAIN again, plus the tutorial's `hashes` view query at r3 and r6.

Usage: python ops/bench/search_ledger.py [--files 7500000] [--tiny] [--keep] [--json]
       [--database-url URL] [--repeat 5] [--pending-rows 2500] [--queries 20]
       [--settings default,on256,off] [--round 0|1]
Needs pageinspect (contrib) on the server. Prints a table; --json prints the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator

import ledger as ledger_bench  # ops/bench/ledger.py: the ledger's files rows
import psycopg2
from common import (
    ADMIN_URL,
    drop_keys,
    machine_line,
    rebuild_keys,
    recount_ledger,
    scratch_database,
    server_line,
)

from pipeline import search, variants

MIH = "files_dhash_mih_idx"
SETTINGS = {"default": ("installed build's default", None),
            "on256": ("fast update on, 256 kB (1.1-1.2 default)",
                      "fastupdate = on, gin_pending_list_limit = 256"),
            "off": ("fast update off", "fastupdate = off")}
FILES_SQL = next(s for s in ledger_bench.LOAD.split(";\n") if "INSERT INTO files" in s)
REST_SQL = """
UPDATE files SET sha1 = NULL WHERE state = 'missing';
INSERT INTO pages (page_id, title, rev_id, seen_at)
SELECT i, 'Article ' || i, i * 3 + 11, now() FROM generate_series(1, %(pages)s) i;
INSERT INTO usages (page_id, file_id)
SELECT k %% %(pages)s + 1, k FROM generate_series(1, %(files)s) k;
"""
PENDING_SQL = ("SELECT n_pending_tuples, n_pending_pages"
               " FROM gin_metapage_info(get_raw_page('files_dhash_mih_idx', 0))")


def load(url: str, files: int) -> dict:
    """The ledger's files rows (ledger.py's LOAD), N/4 pages, a usage per file; indexes rebuilt."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    out: dict = {"files": files}
    with conn.cursor() as cur:
        keys = drop_keys(cur)
        began = time.perf_counter()
        cur.execute("BEGIN")
        cur.execute("SET LOCAL synchronous_commit = off")
        cur.execute(FILES_SQL, {"files": files})
        cur.execute(REST_SQL, {"files": files, "pages": max(1, files // 4)})
        cur.execute("COMMIT")
        out["load_rows_s"] = time.perf_counter() - began
        rebuild_keys(cur, keys, out)
        recount_ledger(cur)
        cur.execute("VACUUM ANALYZE")
        cur.execute("SELECT count(DISTINCT dhash), pg_relation_size(%s::regclass)"
                    " FROM files", (MIH,))
        out["distinct_hashes"], mih_bytes = cur.fetchone()
        out["mih_index_mb"] = mih_bytes / 2**20
    conn.close()
    return out


@contextlib.contextmanager
def database(args) -> Iterator[tuple[str, dict]]:
    if args.database_url:
        yield args.database_url, {}
        return
    with scratch_database(args.dsn, keep=args.keep) as url:
        if args.keep:
            print(f"kept: {url}", file=sys.stderr)
        yield url, load(url, args.files)


def installed_default_fast_update(cur) -> bool:
    """Whether the installed build queues rows in a pending list for an index without options."""
    cur.execute("CREATE TEMP TABLE probe_default (h int8)")
    cur.execute("CREATE INDEX probe_default_mih ON probe_default USING bktree_mih (h)")
    cur.execute("INSERT INTO probe_default SELECT g FROM generate_series(1, 10) g")
    cur.execute("SELECT n_pending_tuples FROM"
                " gin_metapage_info(get_raw_page('probe_default_mih', 0))")
    pending = cur.fetchone()[0]
    cur.execute("DROP TABLE probe_default")
    return pending > 0


def explain_probes(cur, hashes: list[int], radius: int) -> dict:
    """search's LATERAL query (search._within) under EXPLAIN: its MIH scans' time and pages."""
    cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT q.i - 1, f.file_id, f.d"
                " FROM unnest(%s::bigint[]) WITH ORDINALITY AS q (h, i)"
                " CROSS JOIN LATERAL (SELECT file_id, dhash <-> q.h AS d FROM files"
                "  WHERE dhash <@ (q.h, %s) ORDER BY d, file_id LIMIT %s) f",
                (hashes, radius, search.MAX_RESULTS + 1))
    plan = cur.fetchone()[0][0]
    found: dict = {"execution_ms": plan["Execution Time"]}

    def walk(node: dict) -> None:
        if node.get("Index Name") == MIH:
            loops = node["Actual Loops"]
            found.update(index_ms_per_probe=node["Actual Total Time"],
                         index_pages_per_probe=(node["Shared Hit Blocks"]
                                                + node["Shared Read Blocks"]) / loops,
                         index_read_per_probe=node["Shared Read Blocks"] / loops, probes=loops)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return found


def view_ms(cur, points: list[int]) -> dict:
    out = {}
    for radius in (3, 6):
        sql = "SELECT url FROM hashes WHERE hash <@ (%s, %s)"
        times = []
        for q in points:
            began = time.perf_counter()
            cur.execute(sql, (q, radius))
            cur.fetchall()
            times.append(1000 * (time.perf_counter() - began))
        out[f"view_r{radius}_ms"] = statistics.median(times)
    return out


def measure(conn, canonical: int, probes: list, target: int, args, points: list[int]) -> dict:
    """One pending-list state: the search's median, its EXPLAIN, the view's medians."""
    hashes = [p.int64 for p in probes]
    with conn.cursor() as cur:
        result = search.search_hashes(conn, canonical, probes)
        times = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            search.search_hashes(conn, canonical, probes)
            times.append(1000 * (time.perf_counter() - began))
        out = {"search_ms": statistics.median(times), "search_ms_all": times,
               "found": any(m.file_id == target for m in result.matches)}
        cur.execute(PENDING_SQL)
        out["pending_tuples"], out["pending_pages"] = cur.fetchone()
        out.update(explain_probes(cur, hashes, search.DEFAULT_MAX_DISTANCE))
        out.update(view_ms(cur, points))
    conn.rollback()
    return out


def run_setting(url: str, options: str | None, offset: int, args, points: list[int]) -> dict:
    """VACUUM, measure, update --pending-rows rows (file ids offset, offset + step, ...; each
    setting its own rows), measure again."""
    canonical, probes = variants.query_variants(ledger_bench.QUERY_IMAGE.read_bytes())
    conn = psycopg2.connect(url)
    conn.autocommit = True
    out: dict = {}
    with conn.cursor() as cur:
        cur.execute(f"ALTER INDEX {MIH} RESET (fastupdate, gin_pending_list_limit)")
        if options:
            cur.execute(f"ALTER INDEX {MIH} SET ({options})")
        cur.execute("UPDATE files SET dhash = %s WHERE file_id = (SELECT min(file_id) FROM"
                    " files WHERE state = 'hashed') RETURNING file_id", (canonical.int64,))
        target = cur.fetchone()[0]
        began = time.perf_counter()
        cur.execute("VACUUM files")  # merges any pending list into the entry tree
        out["vacuum_s"] = time.perf_counter() - began
    conn.autocommit = False
    out["empty"] = measure(conn, canonical.int64, probes, target, args, points)
    with conn.cursor() as cur:  # a crawl's writes, rolled back: the queued entries stay
        cur.execute("SELECT max(file_id) FROM files")
        last = cur.fetchone()[0]
        step = max(1, last // args.pending_rows)
        first = 1 + offset * step // len(SETTINGS) + args.round * step // (2 * len(SETTINGS))
        ids = list(range(first, last + 1, step))
        began = time.perf_counter()
        # a changed hash, as a worker's write: an indexed column, so never a HOT update
        cur.execute("UPDATE files SET dhash = dhash # 1, updated_at = now()"
                    " WHERE file_id = ANY(%s)", (ids,))
        out["update_rows"] = cur.rowcount
        out["update_ms_per_row"] = 1000 * (time.perf_counter() - began) / max(1, cur.rowcount)
    conn.rollback()
    out["after_writes"] = measure(conn, canonical.int64, probes, target, args, points)
    out["variants"] = len(probes)
    conn.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=7_500_000)
    parser.add_argument("--tiny", action="store_true", help="CI size: 20,000 files")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pending-rows", type=int, default=2500,
                        help="rows the crawl's writes update before the second measurement")
    parser.add_argument("--queries", type=int, default=20, help="view queries per radius")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="which index settings, in order: " + ", ".join(SETTINGS))
    parser.add_argument("--round", type=int, choices=(0, 1), default=0,
                        help="1 for a second run on a kept database: other rows are updated")
    parser.add_argument("--dsn", default=ADMIN_URL)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--database-url")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.files, args.repeat, args.pending_rows, args.queries = 20_000, 2, 300, 3
    with database(args) as (url, loaded):
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
            default_on = installed_default_fast_update(cur)
            points = ledger_bench.sample_hashes(cur, args.queries)
        conn.commit()
        conn.close()
        result = {"machine": machine_line(), "server": server_line(url), "load": loaded,
                  "installed_default_fast_update": default_on, "settings": {}}
        for key in args.settings.split(","):
            name, options = SETTINGS[key]
            offset = list(SETTINGS).index(key)
            result["settings"][name] = run_setting(url, options, offset, args, points)
            print(json.dumps({name: result["settings"][name]}), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"# {result['machine']}; {result['server']}; load {json.dumps(loaded)}")
    print(f"# installed build: fast update {'on' if default_on else 'off'} by default")
    print("| setting | pending list | rows pending | search ms (median) | MIH ms / probe |"
          " MIH pages / probe (read) | view r3 / r6 ms | update ms / row | found |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for name, s in result["settings"].items():
        for state in ("empty", "after_writes"):
            m = s[state]
            write = f"{s['update_ms_per_row']:.2f}" if state == "after_writes" else ""
            print(f"| {name} | {state.replace('_', ' ')} | {m['pending_tuples']:,} |"
                  f" {m['search_ms']:.1f} | {m.get('index_ms_per_probe', 0):.1f} |"
                  f" {m.get('index_pages_per_probe', 0):.0f}"
                  f" ({m.get('index_read_per_probe', 0):.0f}) |"
                  f" {m['view_r3_ms']:.1f} / {m['view_r6_ms']:.1f} | {write} |"
                  f" {'yes' if m['found'] else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
