#!/usr/bin/env python3
"""Load test of `wikihash serve` (issue 18): this tree's server and a baseline, same run.

A scratch ledger of `--rows` hashed files (1M by default; built in seconds with
generate_series, no crawl), then, for each server in turn (this tree, then `--baseline`, a
checkout of main by default), `--clients` concurrent clients for `--seconds`:

80% uploads of ordinary photos (tests/data's Grace Hopper portrait, 512x600 JPEG, and a
generated 1600x1200 JPEG photo-like gradient), 20% `GET /api/stats`.

Printed per server: requests, statuses, 5xx other than 503 (target 0), p50/p99 latency of
successful uploads (target p99 <= 1 s), peak RSS of the server and its child processes
(target <= 500 MB), and RSS at the 1,000th and at the `--requests`th request (flat) or at
the end when fewer were made; CPU seconds of the server (and its children) and of the client
over the run, and the load average before and after. The client runs on the same machine,
and on the shared 2-core machine it takes CPU from the server.

    python ops/bench/serve.py                 # 1M rows, 200 clients, 60 s
    python ops/bench/serve.py --tiny          # CI: 10k rows, 20 clients, 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dumps import drop_database, throwaway_database  # noqa: E402 - ops/bench's scratch DB

from pipeline import imaging, storage  # noqa: E402

ADMIN_URL = os.environ.get("WIKIHASH_TEST_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
PHOTO = ROOT / "tests" / "data" / "images" / "mpl_grace_hopper.jpg"


def photos() -> list[bytes]:
    """Two ordinary photos as a user would upload them."""
    rnd = random.Random(7)
    base = Image.radial_gradient("L").resize((1600, 1200))
    noise = Image.effect_noise((1600, 1200), 30)
    rgb = Image.merge("RGB", (base, Image.blend(base, noise, 0.4), noise)).filter(
        ImageFilter.GaussianBlur(2))
    for _ in range(40):
        x, y = rnd.randrange(1500), rnd.randrange(1100)
        rgb.paste((rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)),
                  (x, y, x + rnd.randrange(20, 100), y + rnd.randrange(20, 100)))
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=88)
    return [PHOTO.read_bytes(), out.getvalue()]


def build_ledger(rows: int, queries: list[bytes]) -> tuple[str, str]:
    """A scratch database with `rows` hashed files, a page per 4 files; (url, name)."""
    name, url = throwaway_database(ADMIN_URL)  # the scratch database of ops/bench/dumps.py
    storage.migrate(url, create=False)
    conn = psycopg2.connect(url)
    started = time.monotonic()
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO wiki_info VALUES ('server', 'https://en.wikipedia.org'),"
                    " ('articlepath', '/wiki/$1'), ('sitename', 'bench')")
        cur.execute("INSERT INTO pages (page_id, title) SELECT g, 'Article ' || g"
                    " FROM generate_series(1, %s) g", (max(1, rows // 4),))
        cur.execute("INSERT INTO files (title, state, dhash, thumb_url)"
                    " SELECT 'File ' || g || '.jpg', 'hashed',"
                    " ((random() - 0.5) * 18446744073709551615)::numeric::bigint,"
                    " 'https://upload.wikimedia.org/x/' || g || '.jpg'"
                    " FROM generate_series(1, %s) g", (rows,))
        # the queries themselves and a few near copies, so that searches find something
        for i, data in enumerate(queries):
            value = imaging.hash_bytes(data).int64
            for bit in range(5):
                near = value ^ (1 << (bit * 7)) if bit else value
                near = near - (1 << 64) if near >= 1 << 63 else near
                cur.execute("INSERT INTO files (title, state, dhash) VALUES (%s, 'hashed', %s)",
                            (f"Query {i} copy {bit}.jpg", near))
        cur.execute("INSERT INTO usages (page_id, file_id) SELECT 1 + (file_id %% %s), file_id"
                    " FROM files", (max(1, rows // 4),))
    conn.close()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()
    print(f"ledger: {rows:,} files built in {time.monotonic() - started:.1f} s ({name})",
          flush=True)
    return url, name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree(pid: int) -> Iterator[int]:
    """`pid` and all its descendants alive now."""
    stack = [pid]
    while stack:
        current = stack.pop()
        yield current
        try:
            with open(f"/proc/{current}/task/{current}/children") as children:
                stack.extend(int(c) for c in children.read().split())
        except OSError:
            continue


def tree_rss(pid: int) -> int:
    """Bytes resident in `pid` and all its descendants."""
    total = 0
    for current in tree(pid):
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and its descendants, alive or waited for."""
    ticks = 0
    for current in tree(pid):
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 after the name
        ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, label: str, tree: Path, database_url: str) -> None:
        self.label = label
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(tree), WIKIHASH_DATABASE_URL=database_url)
        env.pop("WIKIHASH_SERVE_AUTH", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "serve", "--port", str(self.port)], cwd=tree,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                httpx.get(self.url + "/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit(f"{label}: server did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


async def load(server: Server, clients: int, seconds: float, requests: int,
               queries: list[bytes], record: dict) -> None:
    """`clients` loops of requests until `seconds` pass."""
    end = time.monotonic() + seconds
    done = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        async def one(rnd: random.Random) -> None:
            nonlocal done
            while time.monotonic() < end:
                upload = rnd.random() < 0.8
                started = time.monotonic()
                try:
                    if upload:
                        data = rnd.choice(queries)
                        response = await client.post("/api/search",
                                                     files={"image": ("q.jpg", data)})
                    else:
                        response = await client.get("/api/stats")
                    status = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.monotonic() - started
                record["statuses"][status] = record["statuses"].get(status, 0) + 1
                if upload and status == 200:
                    record["upload_latency"].append(elapsed)
                done += 1
                if done in (1000, requests):
                    record[f"rss_{done}"] = tree_rss(server.proc.pid)

        await asyncio.gather(*(one(random.Random(i)) for i in range(clients)))


async def sample(server: Server, record: dict, stop: asyncio.Event) -> None:
    while not stop.is_set():
        record["peak_rss"] = max(record["peak_rss"], tree_rss(server.proc.pid))
        await asyncio.sleep(0.25)


async def measure(server: Server, clients: int, seconds: float, requests: int,
                  queries: list[bytes]) -> dict:
    record = {"statuses": {}, "upload_latency": [], "peak_rss": 0, "requests": requests,
              "load_before": os.getloadavg()[0]}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(server, record, stop))
    started, cpu, client_cpu = time.monotonic(), tree_cpu(server.proc.pid), time.process_time()
    await load(server, clients, seconds, requests, queries, record)
    record["elapsed"] = time.monotonic() - started
    record["server_cpu"] = tree_cpu(server.proc.pid) - cpu
    record["client_cpu"] = time.process_time() - client_cpu
    record["load_after"] = os.getloadavg()[0]
    record.setdefault(f"rss_{requests}", tree_rss(server.proc.pid))
    stop.set()
    await sampler
    return record


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def report(label: str, record: dict) -> list[str]:
    statuses = record["statuses"]
    bad = sum(n for s, n in statuses.items() if not (isinstance(s, int) and (s < 500 or s == 503)))
    latency = record["upload_latency"]
    total = sum(statuses.values())
    last = record["rss_" + str(record["requests"])]
    return [
        label,
        f"{total:,} ({total / record['elapsed']:.0f}/s)",
        " ".join(f"{s}:{n}" for s, n in sorted(statuses.items(), key=str)),
        str(bad),
        f"{percentile(latency, 0.5):.2f} / {percentile(latency, 0.99):.2f} s"
        f" ({len(latency):,} ok)",
        f"{record['peak_rss'] / 2**20:.0f} MB",
        f"{record.get('rss_1000', 0) / 2**20:.0f} -> {last / 2**20:.0f} MB",
        f"{record['server_cpu']:.1f} / {record['client_cpu']:.1f} s in {record['elapsed']:.0f} s",
        f"{record['load_before']:.1f} -> {record['load_after']:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--requests", type=int, default=10_000,
                        help="the request at which RSS is read again, for memory over time")
    parser.add_argument("--baseline", type=Path, default=Path("/work/main"),
                        help="a checkout whose server is measured the same way (main)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="CI size")
    args = parser.parse_args()
    if args.tiny:
        args.rows, args.clients, args.seconds, args.requests = 10_000, 20, 5.0, 2_000
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {platform.node()}"
          f" {os.cpu_count()} cores (shared), Python"
          f" {platform.python_version()}; {args.clients} clients x {args.seconds:.0f} s,"
          f" RSS read at request 1,000 and {args.requests:,}", flush=True)
    queries = photos()
    url, name = build_ledger(args.rows, queries)
    trees = [("this tree", ROOT)]
    if not args.no_baseline and (args.baseline / "pipeline").is_dir():
        trees.append((f"baseline {args.baseline}", args.baseline))
    rows = []
    try:
        for label, tree in trees:
            server = Server(label, tree, url)
            try:
                record = asyncio.run(measure(server, args.clients, args.seconds,
                                             args.requests, queries))
            finally:
                server.stop()
            rows.append(report(label, record))
            print(" | ".join(rows[-1]), flush=True)
    finally:
        drop_database(ADMIN_URL, name)
    header = ["server", "requests", "statuses", "5xx not 503, or no answer", "upload p50 / p99",
              "peak RSS", f"RSS at 1k -> {args.requests // 1000}k req (or end)",
              "CPU server / client, wall", "load"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
