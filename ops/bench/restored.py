"""The restored `hashes.sql` table: the tutorial's query on it, main's extension beside this one.

    python ops/bench/restored.py [--rows 30000000] [--queries 50] [--layouts spgist,both,mih]
        [--dsn URL] [--baseline-dsn URL [--baseline-only]] [--shapes ledger,random] [--json]
    python ops/bench/restored.py --tiny      # CI size (ops/bench/run-all --tiny)

Builds, in SQL, in a scratch database of each server given, the table `wikihash export`'s
hashes.sql restores (`hashes(id integer, hash bigint, url text)`, one row per (article, file)
usage) at about `--rows` rows, inserted in hash order as hashes.sql's COPY is; then, for each
layout in turn on that one table (each index built once, kept while a later layout needs it),
the indexes hashes.sql could end with and ANALYZE: `spgist` (the tutorial's `USING spgist
(hash bktree_ops)`, main's hashes.sql), `mih` (`USING bktree_mih (hash)`, this branch's),
`both`. It measures each build (wall, and the backend's CPU when the server is local), the
index size, and the tutorial's query `SELECT url FROM hashes WHERE hash <@ (q, r)` at r = 3
and 6: client-side median and p90 over `--queries` stored hashes, rows returned, the index the
plan used, and from EXPLAIN (ANALYZE, BUFFERS) the pages the query read (shared hit + read)
and the server's execution time; and a query at the largest icon's hash. Shapes:

- `ledger`: the rows of the `hashes` view over ops/bench/ledger.py's ledger of U usages
  (U = rows / 0.953): U/4 files, 95 % of them hashed, 20 % in near-copy clusters of five (one
  base hash and four one bit away), 100 icon files used by U/100/j articles (icon j; the
  largest 300,000 times at 30M), every other file by 3 or 4 articles; the same formulas as
  ledger.py's LOAD, so the hashes are the ledger's;
- `random`: the same number of rows, each a distinct uniformly random hash (the control).

`--dsn` is the server with this branch's bktree (default WIKIHASH_TEST_ADMIN_URL), and
`--baseline-dsn` one with main's (two clusters, each a relocated copy of the server with its
own build: docs/bktree-benchmarks.md). Where the build was compiled with
-DBKTREE_SPGIST_STATS, the inner and leaf tuples each query visited are reported too.
The query points are the hashes of random hashed files (as ledger.py's view measurement
takes them from `files`), so an icon is as likely as any file; a query that returns more
than 1,000 rows is counted as an icon hit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import psycopg2
from common import ADMIN_URL, machine_line, scratch_database, server_line

HASHED_SHARE = 0.953  # rows of the hashes view per usage in ledger.py's ledger (28,577,809 / 30M)

# ledger.py's file i: its hash when hashed, else NULL (pending, failed, missing, unsupported).
FILE_HASH = """
CREATE FUNCTION pg_temp.file_hash(i bigint, files bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN i > files - 100 OR (i % 100 < 97 AND i % 50 <> 1) THEN
    CASE WHEN i % 5 = 0 OR i % 100 >= 20 THEN hashint8extended(i, 1)
         ELSE hashint8extended(i / 5 * 5, 1) # (1::bigint << ((i % 5) * 13)::int) END
  END $$;
CREATE FUNCTION pg_temp.title(p bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT 'Article_' || p || (ARRAY['', '_(film)', '_–_Île-de-France', ',_Texas', '_Łódź',
         '_São_Paulo', '''s_law'])[p % 7 + 1] $$;
"""

# The hashes view's rows over ledger.py's usages: the icons' first (usages.id 1..), then the
# rest, file (k * 7919) mod (files - 100) + 1 for page k mod pages + 1.
LEDGER_ROWS = """
INSERT INTO hashes (id, hash, url)
SELECT id, hash, pg_temp.title(page) FROM (
  SELECT row_number() OVER (ORDER BY j, p) AS id, pg_temp.file_hash(%(files)s - 100 + j,
         %(files)s) AS hash, p AS page
  FROM generate_series(1, 100) j, generate_series(1, greatest(1, %(icon_top)s / j)) p
  UNION ALL
  SELECT %(icon_total)s + 1 + k, pg_temp.file_hash((k * 7919) %% (%(files)s - 100) + 1,
         %(files)s), k %% %(pages)s + 1
  FROM generate_series(0::bigint, %(rest)s - 1) k) u
WHERE hash IS NOT NULL
ORDER BY hash, id
"""

RANDOM_ROWS = """
INSERT INTO hashes (id, hash, url)
SELECT i, hashint8extended(i, 42), pg_temp.title(i / 5 + 1)
FROM generate_series(1, %(rows)s) i ORDER BY 2, 1
"""

INDEXES = {  # index name -> its CREATE INDEX
    "hashes_hash_idx": "CREATE INDEX hashes_hash_idx ON hashes USING spgist (hash bktree_ops)",
    "hashes_hash_mih_idx": "CREATE INDEX hashes_hash_mih_idx ON hashes USING bktree_mih (hash)",
}
LAYOUTS = {  # what hashes.sql could end with -> its indexes
    "spgist": ("hashes_hash_idx",),  # the tutorial's, main's hashes.sql
    "both": ("hashes_hash_idx", "hashes_hash_mih_idx"),
    "mih": ("hashes_hash_mih_idx",),
}
TUTORIAL = "SELECT url FROM hashes WHERE hash <@ (%s, %s)"
STAT_NAMES = ("inner", "inner_all_the_same", "nodes", "leaf", "leaf_matches")
STATS = ("CREATE FUNCTION pg_temp.bktree_spg_stats() RETURNS int8[]"
         " AS '$libdir/bktree', 'bktree_spg_stats' LANGUAGE C VOLATILE STRICT")


def ledger_parameters(rows: int) -> dict:
    usages = round(rows / HASHED_SHARE)
    icon_top = usages // 100
    icon_total = sum(max(1, icon_top // j) for j in range(1, 101))
    return {"usages": usages, "files": usages // 4, "pages": usages // 5,
            "icon_top": icon_top, "icon_total": icon_total, "rest": usages - icon_total}


def load(cur, shape: str, rows: int) -> dict:
    """The table as hashes.sql's COPY leaves it, rows in hash order."""
    cur.execute(FILE_HASH)
    cur.execute("CREATE TABLE hashes(id integer, hash bigint, url text)")
    cur.execute("SET work_mem = '256MB'")  # the sort into hash order, as the export's
    cpu = backend_cpu_s(cur)
    began = time.perf_counter()
    if shape == "ledger":
        cur.execute(LEDGER_ROWS, ledger_parameters(rows))
    else:
        cur.execute(RANDOM_ROWS, {"rows": rows})
    loaded = time.perf_counter()
    load_cpu = cpu_since(cur, cpu)
    cur.execute("RESET work_mem")
    cur.execute("SELECT count(*), count(DISTINCT hash), pg_relation_size('hashes') FROM hashes")
    count, distinct, heap = cur.fetchone()
    cur.execute("SELECT max(n) FROM (SELECT count(*) n FROM hashes GROUP BY hash) s")
    return {"rows": count, "distinct": distinct, "most_repeated": cur.fetchone()[0],
            "load_s": loaded - began, "load_cpu_s": load_cpu, "heap_mb": heap / 2**20}


def lay_out(cur, layout: str, built: dict, maintenance_work_mem: str | None) -> None:
    """Create the layout's indexes that are missing (timed into built) and drop the others."""
    wanted = LAYOUTS[layout]
    for name in list(built):
        if name not in wanted:
            cur.execute(f"DROP INDEX {name}")  # fixed names
            del built[name]
    for name in wanted:
        if name in built:
            continue
        if maintenance_work_mem:
            cur.execute("SET maintenance_work_mem = %s", (maintenance_work_mem,))
        cpu = backend_cpu_s(cur)
        began = time.perf_counter()
        cur.execute(INDEXES[name])
        seconds = time.perf_counter() - began
        build_cpu = cpu_since(cur, cpu)
        cur.execute("RESET maintenance_work_mem")
        cur.execute("SELECT pg_relation_size(%s::regclass)", (name,))
        built[name] = {"build_s": seconds, "build_cpu_s": build_cpu,
                       "size_mb": cur.fetchone()[0] / 2**20,
                       "load_after": load_average()}
    cur.execute("ANALYZE hashes")


def backend_cpu_s(cur) -> float | None:
    """CPU seconds (user + system) the session's backend has used, when the server is local."""
    cur.execute("SELECT pg_backend_pid()")
    try:
        with open(f"/proc/{cur.fetchone()[0]}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_since(cur, before: float | None) -> float | None:
    now = backend_cpu_s(cur)
    return None if now is None or before is None else now - before


def load_average() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def query_points(cur, shape: str, rows: int, n: int) -> list[int]:
    """Stored hashes of n pseudo-random hashed files (fixed seed: the same in every run)."""
    cur.execute("SELECT setseed(0.11)")
    if shape == "ledger":
        files = ledger_parameters(rows)["files"]
        cur.execute("SELECT h FROM (SELECT pg_temp.file_hash((random() * (%s - 1))::bigint + 1,"
                    " %s) h FROM generate_series(1, %s)) s WHERE h IS NOT NULL LIMIT %s",
                    (files, files, 2 * n, n))
    else:
        cur.execute("SELECT hashint8extended((random() * (%s - 1))::bigint + 1, 42)"
                    " FROM generate_series(1, %s)", (rows, n))
    return [row[0] for row in cur.fetchall()]


def explained(cur, q: int, radius: int) -> dict:
    cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + TUTORIAL, (q, radius))
    found = cur.fetchone()[0][0]
    plan = found["Plan"]
    node = plan
    while node.get("Plans") and "Index Name" not in node:
        node = node["Plans"][0]
    return {"ms": found["Execution Time"], "rows": plan["Actual Rows"],
            "pages": plan["Shared Hit Blocks"] + plan["Shared Read Blocks"],
            "read": plan["Shared Read Blocks"],
            "index_pages": node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0),
            "index": node.get("Index Name", node["Node Type"])}


def pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def icon_query(cur, shape: str, rows: int) -> dict | None:
    """The tutorial's query at the most used icon's hash, r3: what a query that hits one costs."""
    if shape != "ledger":
        return None
    files = ledger_parameters(rows)["files"]
    cur.execute("SELECT pg_temp.file_hash(%s, %s)", (files - 99, files))
    return explained(cur, cur.fetchone()[0], 3)


def measure(cur, points: list[int], stats: bool) -> dict:
    out = {}
    for radius in (3, 6):
        for q in points[:3]:  # warm the cache as a serving database would be
            cur.execute(TUTORIAL, (q, radius))
            cur.fetchall()
        times, rows, visited = [], [], []
        for q in points:
            if stats:
                cur.execute("SELECT pg_temp.bktree_spg_stats()")
            began = time.perf_counter()
            cur.execute(TUTORIAL, (q, radius))
            rows.append(len(cur.fetchall()))
            times.append(1000 * (time.perf_counter() - began))
            if stats:
                cur.execute("SELECT pg_temp.bktree_spg_stats()")
                visited.append(cur.fetchone()[0])
        plans = [explained(cur, q, radius) for q in points]
        out[f"r{radius}"] = {
            "median_ms": statistics.median(times), "p90_ms": pct(times, 0.9),
            "server_median_ms": statistics.median(p["ms"] for p in plans),
            "rows_median": statistics.median(rows), "icon_hits": sum(r > 1000 for r in rows),
            "pages_median": statistics.median(p["pages"] for p in plans),
            "pages_p90": pct([p["pages"] for p in plans], 0.9),
            "index_pages_median": statistics.median(p["index_pages"] for p in plans),
            "read_median": statistics.median(p["read"] for p in plans),
            "index": "/".join(sorted({p["index"] for p in plans}))}
        if stats:  # medians of what the SP-GiST scan visited (zeros when it was not used)
            out[f"r{radius}"]["visited_median"] = dict(zip(
                STAT_NAMES, (statistics.median(v[i] for v in visited)
                             for i in range(len(STAT_NAMES))), strict=True))
    if stats:  # the whole tree: radius 64 visits every inner and leaf tuple
        cur.execute("SELECT pg_temp.bktree_spg_stats()")
        cur.execute("SET enable_bitmapscan = off")
        cur.execute("SET enable_seqscan = off")
        cur.execute("SELECT count(*) FROM hashes WHERE hash <@ (0, 64)")
        cur.execute("RESET enable_bitmapscan")
        cur.execute("RESET enable_seqscan")
        cur.execute("SELECT pg_temp.bktree_spg_stats()")
        out["tree"] = dict(zip(STAT_NAMES, cur.fetchone()[0], strict=True))
    return out


def has_stats(cur) -> bool:
    try:  # autocommit: a failed CREATE leaves nothing behind
        cur.execute(STATS)
    except psycopg2.Error:
        return False
    return True


def run(dsn: str, shape: str, rows: int, layouts: list[str], queries: int,
        maintenance_work_mem: str | None) -> dict:
    with scratch_database(dsn, migrate=False) as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True  # the pg_temp functions live as long as this session
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'bktree'")
                result = {"server": server_line(url), "bktree": cur.fetchone()[0]}
                result.update(load(cur, shape, rows))
                points = query_points(cur, shape, rows, queries)
                stats = has_stats(cur)
                built: dict = {}
                for layout in layouts:
                    lay_out(cur, layout, built, maintenance_work_mem)
                    result[layout] = {"indexes": {k: dict(v) for k, v in built.items()},
                                      **measure(cur, points, stats),
                                      "icon_r3": icon_query(cur, shape, rows)}
        finally:
            conn.close()
    return result


def report(results: dict) -> str:
    lines = ["| server / shape / layout | rows (distinct) | index build s (MB) |"
             " r3 median / p90 ms | r3 pages | r6 median / p90 ms | r6 pages | index r3 / r6 |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, r in results.items():
        for layout in LAYOUTS:
            if layout not in r:
                continue
            m = r[layout]
            r3, r6 = m["r3"], m["r6"]
            builds = ", ".join(f"{v['build_s']:.1f} ({v['size_mb']:.0f})"
                               for v in m["indexes"].values())
            lines.append(
                f"| {key} / {layout} | {r['rows']:,} ({r['distinct']:,}) | {builds} |"
                f" {r3['median_ms']:.2f} / {r3['p90_ms']:.2f} | {r3['pages_median']:.0f} |"
                f" {r6['median_ms']:.2f} / {r6['p90_ms']:.2f} | {r6['pages_median']:.0f} |"
                f" {r3['index']} / {r6['index']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--shapes", default="ledger,random")
    parser.add_argument("--layouts", default="spgist,both,mih",
                        help="the indexes hashes.sql could create, measured in turn on one"
                        f" table: {', '.join(LAYOUTS)}; each index is built once")
    parser.add_argument("--maintenance-work-mem", help="for the index builds (default: the"
                        " server's, what psql restoring hashes.sql gets)")
    parser.add_argument("--dsn", default=ADMIN_URL, help="server with this branch's bktree")
    parser.add_argument("--baseline-dsn", help="server with main's bktree, measured first")
    parser.add_argument("--baseline-only", action="store_true",
                        help="measure only --baseline-dsn (e.g. beside a run of --dsn)")
    parser.add_argument("--tiny", action="store_true", help="CI size: 20,000 rows, 5 queries")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rows, args.queries = 20_000, 5
    servers = ([("main", args.baseline_dsn)] if args.baseline_dsn else [])
    if not args.baseline_only:
        servers.append(("this", args.dsn))
    results: dict = {}
    print(f"# {machine_line()}", file=sys.stderr)
    for shape in args.shapes.split(","):
        for who, dsn in servers:
            key = f"{who} / {shape}"
            results[key] = run(dsn, shape, args.rows, args.layouts.split(","), args.queries,
                               args.maintenance_work_mem)
            results[key]["load_after"] = load_average()
            print(json.dumps({key: results[key]}), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"machine": machine_line(), "results": results}))
    else:
        print(f"# {machine_line()}")
        print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
