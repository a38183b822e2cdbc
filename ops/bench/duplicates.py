"""Benchmark `wikihash duplicates` (pipeline/duplicates.py): clustering time, rows/s, peak RSS.

    python ops/bench/duplicates.py --files 100000             # default 100k
    python ops/bench/duplicates.py --tiny                      # CI size (5,000 files)

A scratch ledger gets N hashed files: 90% random hashes, 9% near copies (1-3 bits flipped) of
random earlier files, 1% exact duplicates, and a few low-information hashes. The clustering
(batched index probes + union-find) is timed beside a baseline measured in the same run: one
self-join statement through the same index (`files a JOIN files b ON b.dhash <@ (a.dhash, D)`),
whose connected components must be the same clusters (checked), and, up to --brute-max
files, every pair compared in numpy (checked and timed). Peak RSS is this Python
process's (the client side); the PostgreSQL backend is not counted.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import psycopg2
from common import machine_line, scratch_database, server_line, side_by_side

from pipeline import duplicates, storage

TARGET_10M_S = 30 * 60  # issue 14: all clusters at D <= 4 over 10M files in <= 30 min


def load(url: str, n: int) -> None:
    near, same = n * 9 // 100, n // 100
    random_n = n - near - same
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO files (title, state, dhash, low_information)"
                    " SELECT 'R' || g, 'hashed',"
                    " ((random() * 2 ^ 31)::bigint << 33) # ((random() * 2 ^ 33)::bigint), false"
                    " FROM generate_series(1, %s) g", (random_n,))
        cur.execute("INSERT INTO files (title, state, dhash, low_information)"
                    " SELECT 'N' || file_id, 'hashed', dhash"
                    " # (1::bigint << (random() * 62)::int) # (1::bigint << (random() * 62)::int)"
                    " # (1::bigint << (random() * 62)::int), false"
                    " FROM files WHERE file_id <= %s", (near,))
        cur.execute("INSERT INTO files (title, state, dhash, low_information)"
                    " SELECT 'S' || file_id, 'hashed', dhash, false FROM files"
                    " WHERE file_id > %s ORDER BY file_id LIMIT %s", (near, same))
        cur.execute("INSERT INTO files (title, state, dhash, low_information)"
                    " SELECT 'L' || g, 'hashed', g - 3, true FROM generate_series(1, 5) g")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:  # flushes the GIN pending list, as autovacuum would
        cur.execute("VACUUM ANALYZE files")
    conn.close()


def self_join(conn, d: int) -> list[list[int]]:
    with conn.cursor() as cur:
        cur.execute("SELECT a.file_id, b.file_id FROM files a JOIN files b"
                    " ON b.dhash <@ (a.dhash, %s) AND b.file_id > a.file_id"
                    " WHERE a.low_information IS NOT TRUE AND b.low_information IS NOT TRUE",
                    (d,))
        return duplicates.clusters_from_edges(cur.fetchall())


def brute_force(conn, d: int) -> list[list[int]]:
    """Every pair compared (numpy XOR + popcount, a block of rows at a time), then components."""
    with conn.cursor() as cur:
        cur.execute("SELECT file_id, dhash FROM files WHERE low_information IS NOT TRUE"
                    " ORDER BY file_id")
        rows = cur.fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    hashes = np.array([r[1] for r in rows], dtype=np.int64).view(np.uint64)
    pairs: list[tuple[int, int]] = []
    block = 1000
    for start in range(0, len(ids), block):
        near = np.bitwise_count(hashes[start:start + block, None] ^ hashes[None, :]) <= d
        a, b = np.nonzero(near)
        a += start
        keep = b > a
        pairs += zip(ids[a[keep]].tolist(), ids[b[keep]].tolist(), strict=True)
    return duplicates.clusters_from_edges(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--tiny", action="store_true", help="5,000 files (CI)")
    parser.add_argument("--brute-max", type=int, default=100_000,
                        help="also compare every pair (numpy) when N is at most this")
    parser.add_argument("--max-distance", type=int, default=duplicates.DEFAULT_MAX_DISTANCE)
    args = parser.parse_args()
    n = 5000 if args.tiny else args.files
    d = args.max_distance
    print(machine_line())
    print("note: the machine is shared with other jobs; figures vary with its load")
    with scratch_database() as url:
        print(server_line(url))
        started = time.perf_counter()
        load(url, n)
        print(f"loaded {n:,} files in {time.perf_counter() - started:.1f} s")
        with storage.connection(url) as conn:
            started = time.perf_counter()
            groups = duplicates.clusters_from_edges(duplicates.edges(conn, d))
            ours = time.perf_counter() - started
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            started = time.perf_counter()
            base_groups = self_join(conn, d)
            base = time.perf_counter() - started
            brute = None
            if n <= args.brute_max:
                started = time.perf_counter()
                brute_groups = brute_force(conn, d)
                brute = time.perf_counter() - started
                if groups != brute_groups:
                    raise SystemExit("FAIL: clusters differ from brute force")
    if groups != base_groups:
        raise SystemExit("FAIL: clusters differ from the self-join's components")
    files_in = sum(len(g) for g in groups)
    projected = ours * 10_000_000 / n  # per-file probes: linear in N at a fixed density
    same = "the self-join" + (" and brute force" if brute is not None else "")
    print(f"{len(groups):,} clusters (same as {same}), {files_in:,} files in them,"
          f" largest {len(groups[0]) if groups else 0}; D = {d}")
    print(side_by_side([
        ("clustering time, s", round(base, 2), round(ours, 2)),
        ("files/s", round(n / base), round(n / ours)),
        ("peak RSS of the client, MB", "-", round(rss_mb)),
        ("projected at 10M files, min (linear)", round(base * 1e7 / n / 60, 1),
         round(projected / 60, 1)),
        ("target at 10M, min", 30, 30),
    ], headers=("figure", "self-join (baseline)", "duplicates")))
    if brute is not None:
        print(f"brute force (every pair, numpy): {brute:.2f} s, {n / brute:,.0f} files/s"
              " (quadratic: not a path to 10M)")
    print("target: " + ("met" if projected <= TARGET_10M_S else "MISSED")
          + f" by the linear projection ({projected / 60:.1f} min vs 30)")


if __name__ == "__main__":
    main()
