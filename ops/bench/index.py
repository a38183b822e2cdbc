"""Benchmark the bktree extension: 1.0's BK-tree layout against 1.1's two indexes, and a seqscan.

For each table size and data shape (uniformly random hashes, or near-duplicate clusters) it
measures, per layout:
- `bk10`: 1.0's layout, the SP-GiST BK-tree alone (`USING spgist (hash bktree_ops)`);
- `v11`: 1.1's (migration 003), `USING bktree (hash)` and `USING bktree_mih (hash)` on the
  same column, the planner choosing per query (the plan taken is reported);
- `seqscan`: `bit_count((hash # q)::bit(64)) <= d` with indexes disabled (KNN: top-N sort);
index build time and size, the COPY rate of 100k rows into the indexed table (for `v11` with
bktree_mih's 256 kB pending list and with GIN's default 4 MB one, as before this build) and a
radius 3 search right after that COPY, before any VACUUM, the median and p95 latency of
`hash <@ (q, r)` at several radii, and the k nearest (k = 10, 100) by
`ORDER BY hash <-> q LIMIT k` (bk10) and `bktree_nearest` (v11).
Everything runs in a scratch database that is dropped after.

    python ops/bench/index.py --rows 1000000,10000000 --queries 20

The Markdown report goes to stdout, and to a file with --out.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg2

ROOT = Path(__file__).resolve().parents[2]
RADII = [0, 1, 2, 3, 4, 6, 8, 10]
KNN = [10, 100]
COPY_ROWS = 100_000
CHUNK = 1_000_000
PATHS = ("bk10", "v11", "seqscan")
TITLES = {
    "bk10": "1.0: BK-tree alone (spgist `bktree_ops`)",
    "v11": "1.1/1.2: `bktree` + `bktree_mih`, planner's choice",
    "seqscan": "seqscan",
}
INDEX_SQL = {
    "bk10": [("bk", "CREATE INDEX bench_bk ON bench USING spgist (hash bktree_ops)")],
    "v11": [("bk", "CREATE INDEX bench_bk ON bench USING bktree (hash)"),
            ("mih", "CREATE INDEX bench_mih ON bench USING bktree_mih (hash)")],
}


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=n, dtype=np.int64)


def flip_masks(rng: np.random.Generator, n: int, max_bits: int) -> np.ndarray:
    """n 64-bit masks with 0..max_bits random bits set (bits may coincide)."""
    k = rng.integers(0, max_bits + 1, size=n)
    masks = np.zeros(n, dtype=np.uint64)
    for j in range(max_bits):
        bit = rng.integers(0, 64, size=n).astype(np.uint64)
        masks |= np.where(j < k, np.left_shift(np.uint64(1), bit), np.uint64(0))
    return masks


def clustered_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Near-duplicate clusters (about 20 hashes within 6 bits of a centre), plus a flat
    image cluster: 1% of the rows are 0 or -1, as for striped or blank images."""
    centres = random_hashes(rng, max(1, n // 20)).view(np.uint64)
    values = centres[rng.integers(0, len(centres), size=n)] ^ flip_masks(rng, n, 6)
    flat = rng.random(n) < 0.01
    values[flat] = np.where(rng.random(int(flat.sum())) < 0.5, 0, np.uint64(2**64 - 1))
    return values.view(np.int64)


def copy_hashes(conn, values: np.ndarray, first_id: int) -> None:
    with conn.cursor() as cur:
        for start in range(0, len(values), CHUNK):
            part = values[start : start + CHUNK]
            ids = np.arange(first_id + start, first_id + start + len(part))
            buf = io.StringIO()
            np.savetxt(buf, np.column_stack([ids, part]), fmt="%d", delimiter="\t")
            buf.seek(0)
            cur.copy_expert("COPY bench (id, hash) FROM STDIN", buf)


def timed(cur, sql: str, args: tuple) -> float:
    """Milliseconds to run sql and fetch its rows."""
    start = time.perf_counter()
    cur.execute(sql, args)
    cur.fetchall()
    return (time.perf_counter() - start) * 1000


def plan_of(cur, sql: str, args: tuple) -> str:
    """Which index (or none) the plan of sql uses."""
    cur.execute("EXPLAIN " + sql, args)
    plan = " ".join(row[0] for row in cur.fetchall())
    for name, label in (("bench_mih", "MIH"), ("bench_bk", "BK")):
        if name in plan:
            return label
    return "seq" if "Seq Scan" in plan else "func"


def median_p95(cur, sql: str, points: list[int], arg) -> tuple[float, float]:
    timed(cur, sql, (points[0], arg))  # warm the cache
    times = sorted(timed(cur, sql, (q, arg)) for q in points)
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return statistics.median(times), p95


def latency(cur, path: str, points: list[int], far: list[int]) -> dict:
    """{'r0': (median, p95, plan), ..., 'knn10': ...} in milliseconds for one layout.

    Radius searches use points near stored hashes; the k nearest use random points (on
    random data the k-th nearest is then 12-16 bits away, the hard case)."""
    if path == "seqscan":
        cur.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
        range_sql = "SELECT id FROM bench WHERE bit_count((hash # %s)::bit(64)) <= %s"
        knn_sql = "SELECT id FROM bench ORDER BY bit_count((hash # %s)::bit(64)) LIMIT %s"
    elif path == "bk10":
        range_sql = "SELECT id FROM bench WHERE hash <@ (%s, %s)"
        knn_sql = "SELECT id FROM bench ORDER BY hash <-> %s LIMIT %s"
    else:
        range_sql = "SELECT id FROM bench WHERE hash <@ (%s, %s)"
        knn_sql = "SELECT id FROM bktree_nearest(NULL::bench, 'hash', %s, %s)"
    results: dict = {}
    for r in RADII:
        plan = None if path == "seqscan" else plan_of(cur, range_sql, (points[0], r))
        results[f"r{r}"] = (*median_p95(cur, range_sql, points, r), plan)
    for k in KNN:
        results[f"knn{k}"] = (*median_p95(cur, knn_sql, far, k), None)
    cur.execute("RESET ALL")
    return results


def copy_cost(conn, cur, extra: np.ndarray, rows: int, points: list[int]) -> tuple[float, float]:
    """COPY rate of extra into the table (rows/s), and the median radius 3 search right after
    (before any VACUUM); the extra rows are deleted again."""
    start = time.perf_counter()
    copy_hashes(conn, extra, rows + 1)
    rate = len(extra) / (time.perf_counter() - start)
    after = statistics.median(
        timed(cur, "SELECT id FROM bench WHERE hash <@ (%s, 3)", (q,)) for q in points)
    cur.execute(f"DELETE FROM bench WHERE id > {rows}")
    cur.execute("VACUUM bench")
    return rate, after


def run_case(conn, rows: int, shape: str, queries: int, seq_queries: int) -> dict:
    rng = np.random.default_rng(rows + len(shape))
    values = random_hashes(rng, rows) if shape == "random" else clustered_hashes(rng, rows)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS bench")
    cur.execute("CREATE TABLE bench (id int8, hash int8) WITH (autovacuum_enabled = off)")
    start = time.perf_counter()
    copy_hashes(conn, values, 0)
    load_s = time.perf_counter() - start
    cur.execute("VACUUM ANALYZE bench")
    cur.execute("SELECT pg_relation_size('bench')")
    heap_mb = cur.fetchone()[0] / 2**20

    # queries: stored hashes with 0..2 bits flipped, as a search for a re-encoded image
    picks = values[rng.integers(0, rows, size=queries)].view(np.uint64)
    points = (picks ^ flip_masks(rng, queries, 2)).view(np.int64).tolist()
    far = random_hashes(rng, queries).tolist()
    extra = random_hashes(rng, COPY_ROWS)
    result: dict = {"rows": rows, "shape": shape, "load_s": load_s, "heap_mb": heap_mb}

    for path in PATHS:
        entry: dict = {"build_s": {}, "size_mb": {}}
        cur.execute("SET maintenance_work_mem = '512MB'")
        for name, ddl in INDEX_SQL.get(path, []):
            start = time.perf_counter()
            cur.execute(ddl)
            entry["build_s"][name] = time.perf_counter() - start
            cur.execute(f"SELECT pg_relation_size('bench_{name}')")
            entry["size_mb"][name] = cur.fetchone()[0] / 2**20
        cur.execute("RESET maintenance_work_mem")
        cur.execute("ANALYZE bench")
        if path == "seqscan":
            entry["latency"] = latency(cur, path, points[:seq_queries], far[:seq_queries])
        else:
            entry["latency"] = latency(cur, path, points, far)
        entry["copy_rate"], entry["r3_after_copy"] = copy_cost(conn, cur, extra, rows, points)
        if path == "v11":  # the baseline: GIN's default pending list, 4 MB
            cur.execute("ALTER INDEX bench_mih SET (gin_pending_list_limit = 4096)")
            entry["copy_rate_fastupdate"], entry["r3_after_copy_fastupdate"] = copy_cost(
                conn, cur, extra, rows, points)
        cur.execute("DROP INDEX IF EXISTS bench_bk")
        cur.execute("DROP INDEX IF EXISTS bench_mih")
        cur.execute("VACUUM bench")
        result[path] = entry
        print(f"  {rows} {shape} {path}: {entry}", file=sys.stderr, flush=True)
    cur.execute("DROP TABLE bench")
    return result


def fmt_ms(cell) -> str:
    if cell is None:
        return "–"
    median, p95, plan = cell
    text = f"{median:.2f} / {p95:.2f}" if median < 10 else f"{median:.0f} / {p95:.0f}"
    return f"{text} ({plan})" if plan else text


def markdown(results: list[dict], command: str, machine: str, server: str, load: str) -> str:
    lines = [
        "# bktree benchmarks",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine}  ",
        f"Server: {server}  ",
        f"Load (1-minute average) at start / end: {load}",
        "",
        "Latencies are median / p95 in milliseconds, measured from the client (fetching all",
        "rows); in brackets the index the plan used (BK: the BK-tree, MIH: multi-index",
        "hashing). Radius query points are stored hashes with 0–2 bits flipped; k-nearest query",
        "points are random. `seqscan` is `bit_count((hash # q)::bit(64)) <= d` with indexes",
        "disabled (KNN: top-N sort). k nearest: `ORDER BY hash <-> q LIMIT k` for 1.0,",
        "`bktree_nearest(NULL::bench, 'hash', q, k)` for 1.1/1.2. COPY: 100k random rows into the",
        "table with the layout's indexes; 'r3 after' is a radius 3 search right after that COPY,",
        "before any VACUUM ('4 MB pending list': GIN's default, which bktree_mih's 256 kB",
        "replaced).",
        "",
    ]
    for res in results:
        lines += [
            f"## {res['rows']:,} rows, {res['shape']} "
            f"(heap {res['heap_mb']:.0f} MB, loaded in {res['load_s']:.0f} s)",
            "",
            "| | " + " | ".join(TITLES[p] for p in PATHS) + " |",
            "|---|---|---|---|",
        ]

        def row(label: str, key, res=res) -> str:
            return f"| {label} | " + " | ".join(key(res[p]) for p in PATHS) + " |"

        def per_index(field: str, fmt: str):
            def cell(e):
                if not e[field]:
                    return "–"
                return " + ".join(f"{name} {format(v, fmt)}" for name, v in e[field].items())
            return cell

        def copy_cell(e):
            text = f"{e['copy_rate']:,.0f} (r3 after: {e['r3_after_copy']:.2f} ms)"
            if "copy_rate_fastupdate" in e:
                text += (f"; 4 MB pending list: {e['copy_rate_fastupdate']:,.0f}"
                         f" (r3 after: {e['r3_after_copy_fastupdate']:.2f} ms)")
            return text

        lines.append(row("build (s)", per_index("build_s", ".1f")))
        lines.append(row("size (MB)", per_index("size_mb", ".0f")))
        lines.append(row("COPY (rows/s)", copy_cell))
        for label in [f"r{r}" for r in RADII] + [f"knn{k}" for k in KNN]:
            lines.append(
                row(
                    f"{label} (ms)",
                    lambda e, label=label: fmt_ms(e["latency"].get(label)),
                )
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated table sizes")
    parser.add_argument("--shapes", default="random,clustered", help="random and/or clustered")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "WIKIHASH_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin connection; a scratch database is created beside it and dropped",
    )
    parser.add_argument("--queries", type=int, default=20, help="query points per radius")
    parser.add_argument("--seq-queries", type=int, default=5, help="query points for seqscan")
    parser.add_argument("--out", default="",
                        help="also write the Markdown report to this file (e.g. a new run's"
                        " section for docs/bktree-benchmarks.md)")
    args = parser.parse_args(argv)

    load_start = f"{os.getloadavg()[0]:.1f}"
    admin = psycopg2.connect(args.dsn)
    admin.autocommit = True
    name = f"wikihash_bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
        cur.execute("SELECT version()")
        server = cur.fetchone()[0]
    results: list[dict] = []
    machine = machine_info()
    command = "python ops/bench/index.py " + " ".join(
        subprocess.list2cmdline([a]) for a in (argv if argv is not None else sys.argv[1:])
    )
    command = command.strip()
    try:
        conn = psycopg2.connect(with_database(args.dsn, name))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION bktree")
        for rows in (int(r) for r in args.rows.split(",")):
            for shape in args.shapes.split(","):
                results.append(run_case(conn, rows, shape, args.queries, args.seq_queries))
                if args.out:  # keep what is done so far if a long run is cut short
                    load = f"{load_start} / {os.getloadavg()[0]:.1f}"
                    Path(args.out).write_text(markdown(results, command, machine, server, load))
        conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    load = f"{load_start} / {os.getloadavg()[0]:.1f}"
    sys.stdout.write(markdown(results, command, machine, server, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
