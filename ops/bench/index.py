"""Benchmark the bktree extension: BK-tree (SP-GiST), MIH (GIN) and a sequential scan.

For each table size and data shape (uniformly random hashes, or near-duplicate clusters) it
measures, per access path: index build time and size, the COPY rate of 100k rows into the
indexed table, and the median and p95 latency of `hash <@ (q, r)` at several radii and of
`ORDER BY hash <-> q LIMIT 10`.  Everything runs in a scratch database that is dropped after.

    python ops/bench/index.py --rows 1000000,10000000 --queries 50

The Markdown report goes to stdout and to docs/bktree-benchmarks.md (--out).
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
KNN_K = 10
COPY_ROWS = 100_000
CHUNK = 1_000_000
PATHS = ("bktree", "mih", "seqscan")
INDEX_SQL = {
    "bktree": "CREATE INDEX bench_idx ON bench USING spgist (hash bktree_ops)",
    "mih": "CREATE INDEX bench_idx ON bench USING gin (hash bktree_mih_ops)",
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


def latency(cur, path: str, points: list[int]) -> dict[str, tuple[float, float]]:
    """{'r0': (median, p95), ..., 'knn10': ...} in milliseconds for one access path."""
    if path == "seqscan":
        cur.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
        range_sql = "SELECT id FROM bench WHERE bit_count((hash # %s)::bit(64)) <= %s"
        knn_sql = "SELECT id FROM bench ORDER BY bit_count((hash # %s)::bit(64)) LIMIT %s"
    else:
        cur.execute("SET enable_seqscan = off")
        range_sql = "SELECT id FROM bench WHERE hash <@ (%s, %s)"
        knn_sql = "SELECT id FROM bench ORDER BY hash <-> %s LIMIT %s"
    results: dict[str, tuple[float, float]] = {}
    cases = [(f"r{r}", range_sql, r) for r in RADII]
    if path != "mih":
        cases.append((f"knn{KNN_K}", knn_sql, KNN_K))
    for label, sql, arg in cases:
        timed(cur, sql, (points[0], arg))  # warm the cache
        times = sorted(timed(cur, sql, (q, arg)) for q in points)
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        results[label] = (statistics.median(times), p95)
    cur.execute("RESET ALL")
    return results


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
    extra = random_hashes(rng, COPY_ROWS)
    result: dict = {"rows": rows, "shape": shape, "load_s": load_s, "heap_mb": heap_mb}

    for path in PATHS:
        entry: dict = {}
        if path in INDEX_SQL:
            cur.execute("SET maintenance_work_mem = '512MB'")
            start = time.perf_counter()
            cur.execute(INDEX_SQL[path])
            entry["build_s"] = time.perf_counter() - start
            cur.execute("SELECT pg_relation_size('bench_idx')")
            entry["size_mb"] = cur.fetchone()[0] / 2**20
            cur.execute("ANALYZE bench")
        entry["latency"] = latency(cur, path, points if path != "seqscan" else points[:seq_queries])
        start = time.perf_counter()
        copy_hashes(conn, extra, rows + 1)
        entry["copy_rate"] = COPY_ROWS / (time.perf_counter() - start)
        cur.execute(f"DELETE FROM bench WHERE id > {rows}")
        cur.execute("DROP INDEX IF EXISTS bench_idx")
        cur.execute("VACUUM bench")
        result[path] = entry
        print(f"  {rows} {shape} {path}: {entry}", file=sys.stderr, flush=True)
    cur.execute("DROP TABLE bench")
    return result


def fmt_ms(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "–"
    median, p95 = pair
    return f"{median:.2f} / {p95:.2f}" if median < 10 else f"{median:.0f} / {p95:.0f}"


def markdown(results: list[dict], command: str, machine: str, server: str) -> str:
    lines = [
        "# bktree benchmarks",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine}  ",
        f"Server: {server}",
        "",
        "Latencies are median / p95 in milliseconds, measured from the client (fetching all",
        "rows). Query points are stored hashes with 0–2 bits flipped. `seqscan` is",
        "`bit_count((hash # q)::bit(64)) <= d` with indexes disabled (KNN: top-N sort).",
        "COPY rate: 100k random rows into the table with that index present.",
        "",
    ]
    for res in results:
        lines += [
            f"## {res['rows']:,} rows, {res['shape']} "
            f"(heap {res['heap_mb']:.0f} MB, loaded in {res['load_s']:.0f} s)",
            "",
            "| | BK-tree (spgist `bktree_ops`) | MIH (gin `bktree_mih_ops`) | seqscan |",
            "|---|---|---|---|",
        ]

        def row(label: str, key, res=res) -> str:
            return f"| {label} | " + " | ".join(key(res[p]) for p in PATHS) + " |"

        lines.append(row("build (s)", lambda e: f"{e['build_s']:.1f}" if "build_s" in e else "–"))
        lines.append(row("size (MB)", lambda e: f"{e['size_mb']:.0f}" if "size_mb" in e else "–"))
        lines.append(row("COPY (rows/s)", lambda e: f"{e['copy_rate']:,.0f}"))
        for label in [f"r{r}" for r in RADII] + [f"knn{KNN_K}"]:
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
    parser.add_argument("--queries", type=int, default=50, help="query points per radius")
    parser.add_argument("--seq-queries", type=int, default=5, help="query points for seqscan")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bktree-benchmarks.md"))
    args = parser.parse_args(argv)

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
                    Path(args.out).write_text(markdown(results, command, machine, server))
        conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    sys.stdout.write(markdown(results, command, machine, server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
