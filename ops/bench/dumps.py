#!/usr/bin/env python3
"""Parse-and-load rate of the crawl from dumps, beside baselines measured in the same run.

    ops/bench/dumps.py [--rows 10000000] [--database-url URL]
    ops/bench/dumps.py --rows 20000          # the tiny size CI can run

Writes a generated imagelinks (il_target_id schema) + linktarget pair of --rows rows each in
mysqldump's format (tests/dumpgen.py), then measures, each in a fresh process so that peak RSS
is its own:
  gunzip    baseline: gunzip and read the lines, nothing else (the floor for any parser);
  parse     our parser to COPY text, discarded (pipeline/dumps/mysqldump.py);
  load      parse and COPY into the staging tables of a throwaway database
            (pipeline/dumps/loader.py copy_table), the real path;
  pg-copy   baseline: PostgreSQL's COPY of the same rows from a ready COPY text file;
  build     all of stage 1 (`loader.load`): those two tables and a page table of rows/4 rows,
            then the set-based SQL to articles, usages and distinct titles.
rows/s per core = rows / (CPU seconds of this process + of its PostgreSQL backend). `load` is
also run at a tenth of the rows, to show whether memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import psycopg2  # noqa: E402

TABLES = ("linktarget", "imagelinks")


def generate(directory: Path, rows: int) -> dict[str, Path]:
    """linktarget (lt_id, lt_namespace, lt_title) and imagelinks (il_from, il_from_namespace,
    il_target_id), `rows` each, enwiki-shaped: most targets files, titles with quotes and
    non-ASCII, ~1 MB INSERT lines."""
    import dumpgen

    rnd = random.Random(12)
    words = ["Map", "Flag_of_France", "O'Brien", "Ōsaka_城", "Portrait", "Back\\slash",
             "Logo", "Église", "Москва", "1999_photo"]
    paths = {}
    for table in TABLES:
        path = directory / f"bench-20261201-{table}.sql.gz"

        def rows_of(table: str = table):
            for i in range(1, rows + 1):
                if table == "linktarget":
                    yield (i, 6 if i % 10 else 10,
                           f"{rnd.choice(words)}_{i}{rnd.choice(['.jpg', '.png', '.svg'])}")
                else:
                    yield (i // 4 + 1, 0 if i % 7 else 2, rnd.randrange(1, rows + 1))

        dumpgen.write_table(path, "bench", table, dumpgen.CREATE[
            "imagelinks/linktarget" if table == "imagelinks" else table], rows_of())
        paths[table] = path
    # A page table for the set-based stage (il_from runs to rows / 4 + 1): a tenth not articles.
    pages = ((i, 0 if i % 10 else 1, f"Article_{i}", int(i % 17 == 0), 0, 0.5,
              "20261201000000", None, i + 100, 1000, "wikitext", None)
             for i in range(1, rows // 4 + 2))
    path = directory / "bench-20261201-page.sql.gz"
    dumpgen.write_table(path, "bench", "page", dumpgen.CREATE["page"], pages)
    paths["page"] = path
    return paths


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def backend_cpu(conn) -> float:
    """CPU seconds of this connection's PostgreSQL backend (same machine: /proc)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(mode: str, files: dict[str, Path], database_url: str | None) -> dict:
    from pipeline.dumps import loader, mysqldump

    rows = 0
    every = files
    files = {t: files[t] for t in TABLES}
    started, cpu0 = time.perf_counter(), cpu()
    pg = 0.0
    if mode == "gunzip":
        for path in files.values():
            for _ in loader.lines(path):
                rows += 0
            rows += _rows_in(path)
    elif mode == "parse":
        for table, path in files.items():
            keep, strings, _ = loader.KEEP[table]
            keep = keep | ({"il_target_id"} if table == "imagelinks" else set())
            _, columns = mysqldump.table_columns(loader.lines(path))
            order = tuple(c for c in columns if c in keep)
            progress = mysqldump.Progress()
            for _ in mysqldump.copy_rows(loader.lines(path), mysqldump.Want(
                    table, order, frozenset(strings) & set(order)), progress):
                pass
            rows += progress.rows
    else:
        conn = psycopg2.connect(database_url)
        pg0 = backend_cpu(conn)
        with conn:
            if mode == "load":
                for table, path in files.items():
                    rows += loader.copy_table(conn, table, path, schema="linktarget")
            elif mode == "build":  # all of stage 1: three COPYs, then the set-based SQL
                loaded = loader.load(conn, every)
                rows = sum(loaded.rows.values())
            else:  # pg-copy: the same rows, already COPY text
                with conn.cursor() as cur:
                    for table, path in files.items():
                        text = path.with_suffix(".copy")
                        cols = ("lt_id, lt_namespace, lt_title" if table == "linktarget"
                                else "il_from, il_from_namespace, il_target_id")
                        cur.execute(f"CREATE UNLOGGED TABLE copy_{table} (a bigint, b integer,"
                                    f" c {'text' if table == 'linktarget' else 'bigint'})")
                        with open(text, "rb") as f:
                            cur.copy_expert(f"COPY copy_{table} FROM STDIN WHERE b = "
                                            f"{6 if table == 'linktarget' else 0}", f)
                        rows += _rows_in(path)
                        del cols
            pg = backend_cpu(conn) - pg0
            conn.rollback()
        conn.close()
    wall = time.perf_counter() - started
    ours = cpu() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    return {"mode": mode, "rows": rows, "wall": wall, "cpu": ours, "pg_cpu": pg,
            "rows_per_core_s": rows / max(1e-9, ours + pg), "peak_rss_mib": rss}


def _rows_in(path: Path) -> int:
    return int(path.with_suffix(".count").read_text())


def write_copy_text(files: dict[str, Path]) -> None:
    """The pg-copy baseline's input, and each file's row count, written once."""
    from pipeline.dumps import loader, mysqldump

    for table in TABLES:
        path = files[table]
        keep, strings, _ = loader.KEEP[table]
        keep = keep | ({"il_target_id"} if table == "imagelinks" else set())
        _, columns = mysqldump.table_columns(loader.lines(path))
        order = tuple(c for c in columns if c in keep)
        progress = mysqldump.Progress()
        with open(path.with_suffix(".copy"), "wb") as out:
            for chunk in mysqldump.copy_rows(loader.lines(path), mysqldump.Want(
                    table, order, frozenset(strings) & set(order)), progress):
                out.write(chunk)
        path.with_suffix(".count").write_text(str(progress.rows))


def child(mode: str, files: dict[str, Path], url: str | None) -> dict:
    argv = [sys.executable, __file__, "--child", mode, "--files", json.dumps(
        {k: str(v) for k, v in files.items()})] + (["--database-url", url] if url else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def throwaway_database(admin_url: str) -> tuple[str, str]:
    name = f"wikihash_bench_dumps_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return name, urlunsplit(urlsplit(admin_url)._replace(path="/" + name))


def drop_database(admin_url: str, name: str) -> None:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows per table")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="server to make the throwaway database on")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        files = {k: Path(v) for k, v in json.loads(args.files).items()}
        print(json.dumps(measure(args.child, files, args.database_url)))
        return 0

    admin = args.database_url
    with tempfile.TemporaryDirectory(prefix="wikihash_bench_dumps_") as tmp:
        sizes = {}
        for rows in sorted({max(1, args.rows // 10), args.rows}):
            directory = Path(tmp) / str(rows)
            directory.mkdir()
            t0 = time.perf_counter()
            files = generate(directory, rows)
            write_copy_text(files)
            print(f"generated {rows:,} rows a table in {time.perf_counter() - t0:.0f} s"
                  f" ({sum(p.stat().st_size for p in files.values()) / 1e6:,.1f} MB gzipped)",
                  file=sys.stderr)
            sizes[rows] = files
        name, url = throwaway_database(admin)
        results = []
        try:
            big = sizes[args.rows]
            for mode in ("gunzip", "parse", "load", "pg-copy", "build"):
                results.append(child(mode, big, url))
            small = min(sizes)
            if small != args.rows:
                results.append({**child("load", sizes[small], url), "mode": "load (1/10)"})
        finally:
            drop_database(admin, name)
    print(f"{'mode':<12} {'rows':>12} {'wall s':>8} {'cpu s':>7} {'pg cpu s':>8}"
          f" {'rows/s/core':>12} {'peak RSS MiB':>13}")
    for r in results:
        print(f"{r['mode']:<12} {r['rows']:>12,} {r['wall']:>8.2f} {r['cpu']:>7.2f}"
              f" {r['pg_cpu']:>8.2f} {r['rows_per_core_s']:>12,.0f} {r['peak_rss_mib']:>13.1f}")
    print(f"machine: {os.cpu_count()} cores, shared with other work while measuring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
