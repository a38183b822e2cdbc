"""Radius, nearest and batched searches: bktree 1.0's index layout against today's, same run.

    python ops/bench/radius.py [--rows 1000000] [--shape random|clustered] [--queries 15]
    python ops/bench/radius.py --rows 20000 --queries 3 --radii 3,6  # tiny mode for CI

Loads 64-bit hashes (uniformly random, or near-duplicate clusters: ~20 hashes within 6 bits
of a centre, 1% flat images hashing to 0 or -1) into two tables of a scratch database:
- `old`: 1.0's layout, the SP-GiST BK-tree alone (`USING spgist (hash bktree_ops)`);
- `new`: migration 003's: `USING bktree (hash)` and `USING bktree_mih (hash)`, both on `hash`,
  the planner choosing between them (both layouts run on the installed extension, whose
  version, read from pg_extension, heads the columns of `new`).
and times, with the plan each query got:
- `hash <@ (q, r)` (the tutorial's query) on both;
- the k nearest (k = 10, 100): 1.0's `ORDER BY hash <-> q LIMIT k` against `bktree_nearest`;
- 8 and 64 query hashes at radius 4: one round trip each against one LATERAL join.
Needs bktree 1.1 or later on the server (WIKIHASH_TEST_ADMIN_URL). The machine may be shared:
compare columns within one run.
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
RANDOM_HASH = ("((random() - 0.5) * 18446744073709551615)::numeric::bigint"
               " # (random() * 65535)::bigint")
FLIPS = " # ".join(
    ["(CASE WHEN random() < 0.5 THEN 1::int8 << (random() * 63)::int ELSE 0 END)"] * 6)
LAYOUTS = {
    "old": ("CREATE INDEX old_sp ON old USING spgist (hash bktree_ops)",),
    "new": ("CREATE INDEX new_bk ON new USING bktree (hash)",
            "CREATE INDEX new_mih ON new USING bktree_mih (hash)"),
}


def index_used(cur, query: str, args: tuple) -> str:
    cur.execute("EXPLAIN " + query, args)
    plan = " ".join(row[0] for row in cur.fetchall())
    for name, label in (("_sp ", "BK-tree"), ("_bk ", "BK-tree"), ("_mih ", "MIH"),
                        ("bktree_nearest", "bktree_nearest")):
        if name in plan + " ":
            return label
    return "seq scan"


def median_ms(cur, query: str, points: list, extra: tuple = ()) -> float:
    times = []
    for q in points:
        args = tuple(q if a is None else a for a in extra) if extra else (q,)
        started = time.perf_counter()
        cur.execute(query, args)
        cur.fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--radii", default="0,3,4,6,8,10,12,15")
    parser.add_argument("--shape", choices=("random", "clustered"), default="random")
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
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'bktree'")
        version = cur.fetchone()[0]
        cur.execute("SET maintenance_work_mem = '1GB'")
        started = time.monotonic()
        cur.execute("CREATE TABLE old (id serial, hash bigint)")
        if args.shape == "random":
            cur.execute(f"INSERT INTO old (hash) SELECT {RANDOM_HASH}"
                        " FROM generate_series(1, %s)", (args.rows,))
        else:  # a centre per 20 rows, up to 6 bits flipped; 1% flat (0 or -1)
            cur.execute(f"CREATE TEMP TABLE centres AS SELECT g AS c, {RANDOM_HASH} AS h"
                        " FROM generate_series(0, %s) g", (args.rows // 20,))
            cur.execute("CREATE INDEX ON centres (c)")
            cur.execute(f"""INSERT INTO old (hash)
                SELECT CASE WHEN random() < 0.01 THEN (CASE WHEN random() < 0.5 THEN 0 ELSE -1 END)
                            ELSE (SELECT h FROM centres WHERE c = s.c) # {FLIPS} END
                FROM (SELECT (random() * %s)::int AS c FROM generate_series(1, %s)) s""",
                        (args.rows // 20, args.rows))
        cur.execute("ANALYZE old")
        cur.execute("CREATE TABLE new AS SELECT * FROM old")
        print(f"bktree {version}; {args.rows:,} {args.shape} hashes loaded in"
              f" {time.monotonic() - started:.0f} s"
              f" (load {os.getloadavg()[0]:.1f})\n")
        print("| index | build (s) | size (MB) |\n| --- | ---: | ---: |")
        for table, ddls in LAYOUTS.items():
            for ddl in ddls:
                started = time.monotonic()
                cur.execute(ddl)
                index = ddl.split()[2]
                cur.execute("SELECT pg_relation_size(%s)", (index,))
                size = cur.fetchone()[0] / 2**20
                print(f"| {ddl.split(' ON ')[1]} | {time.monotonic() - started:.1f} | {size:.0f} |")
            cur.execute(f"VACUUM ANALYZE {table}")
        step = max(1, args.rows // args.queries)
        cur.execute("SELECT hash FROM old WHERE id %% %s = 0 LIMIT %s", (step, args.queries))
        rnd = random.Random(7)
        stored = [q for (q,) in cur.fetchall()]
        points = [q ^ (1 << rnd.randrange(63)) for q in stored]

        print("\nRadius searches, median ms (index the plan used)\n")
        print(f"| radius | 1.0 layout: `hash <@` | {version}: `hash <@` |\n"
              "| ---: | ---: | ---: |")
        for radius in map(int, args.radii.split(",")):
            cells = []
            for query in ("SELECT id FROM old WHERE hash <@ (%s, %s)",
                          "SELECT id FROM new WHERE hash <@ (%s, %s)"):
                used = index_used(cur, query, (points[0], radius))
                cells.append(f"{median_ms(cur, query, points, (None, radius)):.1f} ({used})")
            print(f"| {radius} | " + " | ".join(cells) + " |")

        print("\nK nearest (random query points: the k-th nearest is 12-16 bits away), median ms\n")
        print(f"| k | 1.0 layout: `ORDER BY <-> LIMIT k` | {version}: `bktree_nearest` |\n"
              "| ---: | ---: | ---: |")
        far = [rnd.getrandbits(63) for _ in points]
        for k in (10, 100):
            knn = median_ms(cur, "SELECT id FROM old ORDER BY hash <-> %s LIMIT %s", far,
                            (None, k))
            nearest = median_ms(cur, "SELECT id FROM bktree_nearest(NULL::new, 'hash', %s, %s)",
                                far, (None, k))
            print(f"| {k} | {knn:.0f} | {nearest:.1f} |")

        print("\nBatched probes at radius 4, ms per batch (median of 5 batches)\n")
        print(f"| hashes | one round trip each ({version} `hash <@`) | one LATERAL call |\n"
              "| ---: | ---: | ---: |")
        for size in (8, 64):
            batches = [[rnd.choice(stored) ^ (1 << rnd.randrange(63)) for _ in range(size)]
                       for _ in range(5)]
            each, batched = [], []
            for batch in batches:
                started = time.perf_counter()
                for q in batch:
                    cur.execute("SELECT id, hash <-> %s FROM new WHERE hash <@ (%s, 4)", (q, q))
                    cur.fetchall()
                each.append(time.perf_counter() - started)
                started = time.perf_counter()
                cur.execute("SELECT q.i, n.id FROM unnest(%s::int8[]) WITH ORDINALITY q (h, i)"
                            " CROSS JOIN LATERAL (SELECT id, hash <-> q.h FROM new"
                            "  WHERE hash <@ (q.h, 4)) n", (batch,))
                cur.fetchall()
                batched.append(time.perf_counter() - started)
            print(f"| {size} | {statistics.median(each) * 1000:.1f} |"
                  f" {statistics.median(batched) * 1000:.1f} |")
        print(f"\nload at the end {os.getloadavg()[0]:.1f}")
        conn.close()
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
