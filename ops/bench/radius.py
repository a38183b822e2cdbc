"""Radius searches on one table holding both bktree indexes, as `files` does since migration 002.

    python ops/bench/radius.py [--rows 10000000] [--queries 15] [--radii 3,4,6,8,10]

Loads random 64-bit hashes into a scratch database, builds the SP-GiST BK-tree on `hash` and
the GIN multi-index-hashing index on `hash # 0`, and times the same queries written both ways:
`hash <@ (q, r)` (what the planner does with the tutorial's query) against `(hash # 0) <@ (q, r)`
(what `wikihash search` asks). Prints which index each plan used and the median latency.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid

import psycopg2

ADMIN_URL = os.environ.get("WIKIHASH_TEST_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--radii", default="3,4,6,8,10")
    args = parser.parse_args()
    name = f"wikihash_bench_radius_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        conn = psycopg2.connect(ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION bktree")
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("CREATE TABLE h (id serial, hash bigint)")
        started = time.monotonic()
        cur.execute("INSERT INTO h (hash) SELECT ((random() - 0.5) * 18446744073709551615)"
                    "::numeric::bigint # (random() * 65535)::bigint"
                    " FROM generate_series(1, %s)", (args.rows,))
        print(f"{args.rows} random hashes loaded in {time.monotonic() - started:.0f} s")
        for index, ddl in (("BK-tree", "CREATE INDEX h_sp ON h USING spgist (hash bktree_ops)"),
                           ("MIH", "CREATE INDEX h_gin ON h USING gin"
                                   " ((hash # 0) bktree_mih_ops)")):
            started = time.monotonic()
            cur.execute(ddl)
            print(f"{index} built in {time.monotonic() - started:.0f} s")
        cur.execute("VACUUM ANALYZE h")
        step = max(1, args.rows // args.queries)
        cur.execute("SELECT hash FROM h WHERE id %% %s = 0 LIMIT %s", (step, args.queries))
        rnd = random.Random(7)
        points = [q ^ (1 << rnd.randrange(63)) for (q,) in cur.fetchall()]
        print("\n| radius | `hash <@` | `(hash # 0) <@` |\n| ---: | ---: | ---: |")
        for radius in map(int, args.radii.split(",")):
            cells = []
            for expr in ("hash", "(hash # 0)"):
                query = f"SELECT id FROM h WHERE {expr} <@ (%s, %s)"
                cur.execute("EXPLAIN " + query, (points[0], radius))
                plan = " ".join(row[0] for row in cur.fetchall())
                used = "BK-tree" if "h_sp" in plan else "MIH" if "h_gin" in plan else "seq scan"
                times = []
                for q in points:
                    started = time.perf_counter()
                    cur.execute(query, (q, radius))
                    cur.fetchall()
                    times.append(time.perf_counter() - started)
                cells.append(f"{statistics.median(times) * 1000:.1f} ms ({used})")
            print(f"| {radius} | {cells[0]} | {cells[1]} |")
        conn.close()
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
