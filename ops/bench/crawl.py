"""Crawl benchmark: end-to-end files/s against a local fake wiki with real Celery workers.

One run of this script, on one machine, against one generated fake wiki (tests/fakewiki):

1. builds a wiki of realistic shape: `--articles` articles with ~`--images-per-article` images
   each, drawn from `--files` distinct generated files (~800x600 JPEG originals, some PNG; a
   share of them in the shared repository, as Commons is to Wikipedia; some duplicated under a
   second name), and serves it on 127.0.0.1 from this process;
2. for each thumbnail width and repeat (interleaved), on a fresh scratch database and Redis
   database: starts `python -m pipeline worker` processes, runs `python -m pipeline crawl`, and
   times launch -> nothing pending (this script polls the ledger every 0.25 s);
3. splits the time between stages from what the real workers report: each worker runs with
   `--loglevel INFO` and Celery logs `Task <name>[id] succeeded in <s>s` for every task, so the
   sum per task name is the worker time of fetch_batch (download), hash_batch (decode + hash) and
   write_batch (database write). The API part is the producer's walk (launch -> its "walked"
   line) and the server's own time per api.php request, measured by wrapping the fake server's
   request handler. The same wrapper measures the fake server's time per file request, to show
   whether the fake server is the bottleneck;
4. compares, on the crawled ledger, the source tutorial's write (one `INSERT INTO hashes (hash,
   url) VALUES (%s, %s)` and `COMMIT` per image into a plain table) with `ledger.write_results`
   (one COPY + UPDATE per batch of `--write-batch`), interleaved, `--write-repeat` times;
5. counts api.php requests and compares them with the least the API allows: image links / 500
   (imlimit) for the walk, plus distinct files / 50 (imageinfo with iiurlwidth) for the files.

Thumbnails are rendered by the fake server once, before timing (Wikimedia serves standard-width
thumbnails from its caches); politeness limits are lifted (WIKIHASH_MAX_DOWNLOADS=64,
WIKIHASH_MAX_MBITS=100000).

Usage: python ops/bench/crawl.py [--articles 3000] [--files 4000] [--widths 120,250]
       [--workers 1] [--concurrency 2] [--repeat 2]
       [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--redis URL --redis-db 11] [--tiny]
       [--output docs/crawl-benchmarks.md]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import io
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis
import requests
from common import ROOT, USER_AGENT, Proc, machine_line, redis_server, scratch_database
from PIL import Image, ImageDraw

from pipeline import ledger, storage  # noqa: E402 - after common, which puts ROOT on sys.path
from pipeline.ledger import Result  # noqa: E402
from pipeline.wiki import Wiki  # noqa: E402
from tests.fakewiki import FakeWiki, FakeWikiServer  # noqa: E402

TARGET_FILES_PER_S = 150
TARGET_WRITE_RATIO = 20
TARGET_API_RATIO = 1.3
WALK_LIMIT = 500  # imlimit=max and gaplimit=max for a client without apihighlimits
IMAGEINFO_LIMIT = 50  # titles per imageinfo request with iiurlwidth
TASK_LINE = re.compile(r"Task (wikihash\.\w+)\[[^\]]+\] succeeded in ([0-9.e-]+)s")


# -- the fake wiki ------------------------------------------------------------------------------

def generated_photo(seed: int, fmt: str) -> bytes:
    """An ~800x600 picture with structure (a smooth field and shapes), different per seed."""
    rnd = random.Random(seed)
    w, h = rnd.randint(700, 900), rnd.randint(500, 700)
    field_ = Image.new("RGB", (4, 3))
    field_.putdata([tuple(rnd.randint(0, 255) for _ in range(3)) for _ in range(12)])
    img = field_.resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(rnd.randint(4, 10)):
        x0, y0 = rnd.randint(0, w - 40), rnd.randint(0, h - 40)
        box = [x0, y0, x0 + rnd.randint(20, w // 2), y0 + rnd.randint(20, h // 2)]
        colour = tuple(rnd.randint(0, 255) for _ in range(3))
        (draw.ellipse if rnd.random() < 0.5 else draw.rectangle)(box, fill=colour)
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 85} if fmt == "JPEG" else {"optimize": False}))
    return out.getvalue()


@dataclass
class Shape:
    articles: int
    files: int  # distinct file names
    contents: int  # distinct SHA-1s among them
    links: int  # (article, image) pairs: what prop=images returns
    shared: int  # files in the shared repository
    bytes_originals: int


def build(articles: int, files: int, per_article: float, seed: int) -> tuple[FakeWiki, FakeWiki,
                                                                            Shape]:
    rnd = random.Random(seed)
    commons = FakeWiki(name="shared", sitename="Fake Commons")
    wiki = FakeWiki(shared=commons)
    names: list[str] = []
    shared = total = 0
    duplicates = files // 50  # 2 %: the same bytes under a second name
    for i in range(files - duplicates):
        fmt = "PNG" if i % 10 == 0 else "JPEG"  # Wikipedia's images are mostly JPEG
        name = f"Photo {i:05d}.{'png' if fmt == 'PNG' else 'jpg'}"
        data = generated_photo(seed * 1_000_003 + i, fmt)
        repo = "shared" if i % 3 else "local"  # most articles' images live on Commons
        wiki.add_file(name, data, repo=repo)
        shared += repo == "shared"
        total += len(data)
        names.append(name)
    for i in range(duplicates):
        source = names[i * 7 % len(names)]
        record = wiki.files.get(source)
        if record is None:  # it lives in the shared repository
            record = commons.files[source]
        name = "Copy of " + source
        wiki.add_file(name, record.current.data)
        names.append(name)
    # Each article uses ~per_article images; popular files (flags, logos) are shared by many
    # articles, the rest are used once or twice, so every name is used at least once.
    links = 0
    order = names[:]
    rnd.shuffle(order)
    cursor = 0
    popular = names[: max(1, files // 100)]
    for a in range(articles):
        count = max(0, round(rnd.gauss(per_article, 1.5)))
        used: set[str] = set()
        if rnd.random() < 0.3:
            used.add(rnd.choice(popular))
        while len(used) < count:
            if cursor < len(order):
                used.add(order[cursor])
                cursor += 1
            else:
                used.add(rnd.choice(names))
        wiki.add_page(f"Article {a:05d}", images=sorted(used))
        links += len(used)
    for name in order[cursor:]:  # names the articles did not reach
        wiki.add_page(f"Gallery {name}", images=[name])
        links += 1
        articles += 1
    return wiki, commons, Shape(articles, len(names), len(names) - duplicates, links, shared,
                                total)


# -- the fake server's own time -----------------------------------------------------------------

def server_time(servers: list[FakeWikiServer]) -> dict[str, tuple[int, float]]:
    """Requests and the fake servers' own seconds on them: "api" (every api.php kind) and
    "file"."""
    out = {"api": (0, 0.0), "file": (0, 0.0)}
    for server in servers:
        for kind, (n, sec) in server.served().items():
            key = "file" if kind == "file" else "api"
            out[key] = (out[key][0] + n, out[key][1] + sec)
    return out


def prewarm(servers: list[FakeWikiServer], api_url: str, titles: list[str], width: int) -> float:
    """Have the servers render every thumbnail at `width` once; returns seconds taken."""
    start = time.perf_counter()
    wiki = Wiki(api_url, USER_AGENT)
    infos = wiki.file_info(titles, width)
    urls = [i.thumb_url or i.url for i in infos if i.url]
    session = requests.Session()
    session.trust_env = False

    def get(url: str) -> None:
        session.get(url, timeout=60).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(get, urls))
    for server in servers:
        server.reset_logs()
    return time.perf_counter() - start


# -- processes ----------------------------------------------------------------------------------

def ledger_counts(url: str) -> dict[str, int]:
    conn = storage.connect(url)
    try:
        with conn:
            return ledger.counts(conn)
    finally:
        conn.close()


# -- one crawl ----------------------------------------------------------------------------------

@dataclass
class CrawlRun:
    width: int
    repeat: int
    seconds: float = 0.0
    walk_seconds: float = 0.0
    files: int = 0  # file rows settled
    contents: int = 0  # distinct SHA-1s hashed or failed (= downloads)
    states: dict[str, int] = field(default_factory=dict)
    api: dict[str, int] = field(default_factory=dict)  # requests by kind
    server: dict[str, tuple[int, float]] = field(default_factory=dict)
    tasks: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (n, seconds)
    write: dict[str, float] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def api_requests(self) -> int:
        return sum(self.api.values())


def crawl_once(args, url: str, broker: str, servers: list[FakeWikiServer], width: int,
               repeat: int) -> tuple[CrawlRun, str]:
    redis.Redis.from_url(broker).flushdb()
    env = dict(os.environ)
    env.update({
        "WIKIHASH_DATABASE_URL": url,
        "WIKIHASH_BROKER_URL": broker,
        "WIKIHASH_API_URL": servers[0].api_url,
        "WIKIHASH_USER_AGENT": USER_AGENT,
        "WIKIHASH_THUMB_WIDTH": str(width),
        "WIKIHASH_MAX_DOWNLOADS": "64",
        "WIKIHASH_MAX_MBITS": "100000",
        "WIKIHASH_FETCH_TIMEOUT": "30",
        "WIKIHASH_REQUEUE_AFTER": "120",
    })
    workers = [Proc(["worker", "-c", str(args.concurrency), "-Q", "fetch,hash,write",
                     "--loglevel", "INFO", "-n", f"bench{i}-{uuid.uuid4().hex[:6]}@%h"], env)
               for i in range(args.workers)]
    run = CrawlRun(width, repeat)
    try:
        for w in workers:
            w.wait_for(r"ready\.", 60)
        for server in servers:
            server.reset_logs()
        crawler = Proc(["crawl", "--job-size", str(args.job_size)], env)
        start = time.perf_counter()
        try:
            walked = crawler.wait_for(r"^walked \d+ articles", args.timeout)
            run.walk_seconds = walked - start
            deadline = time.monotonic() + args.timeout
            while True:
                counts = ledger_counts(url)
                if counts["pending"] == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"crawl not done after {args.timeout} s: {counts}")
                time.sleep(0.25)
            run.seconds = time.perf_counter() - start
            crawler.wait_for(r"^nothing pending", 30)
        finally:
            crawler.stop()
        run.server = server_time(servers)
        time.sleep(0.5)  # the last task lines
    finally:
        for w in workers:
            w.stop()
    run.states = {k: counts[k] for k in ("hashed", "failed", "missing", "unsupported")}
    run.files = counts["files"]
    run.api = dict(sum((s.api_counts() for s in servers), start=Counter()))
    tasks: dict[str, list[float]] = defaultdict(list)
    for w in workers:
        for _, _, line in w.lines:
            m = TASK_LINE.search(line)
            if m:
                tasks[m.group(1)].append(float(m.group(2)))
    run.tasks = {k: (len(v), sum(v)) for k, v in tasks.items()}
    conn = storage.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(DISTINCT sha1) FROM files WHERE state IN ('hashed', 'failed')")
        run.contents = cur.fetchone()[0]
    conn.close()
    log = "\n".join(line for _, _, line in crawler.lines)
    return run, log


# -- the write path: tutorial vs COPY ----------------------------------------------------------

def compare_writes(url: str, batch: int, repeat: int, limit: int) -> dict[str, list[float]]:
    """Rows/s of the tutorial's INSERT-and-COMMIT per image vs write_results per batch."""
    conn = storage.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT f.sha1, f.dhash, f.low_information, f.hashed_from, p.title"
                    " FROM files f JOIN LATERAL (SELECT page_id FROM usages u"
                    "  WHERE u.file_id = f.file_id LIMIT 1) u ON true JOIN pages p USING (page_id)"
                    " WHERE f.state = 'hashed' ORDER BY f.file_id LIMIT %s", (limit,))
        rows = cur.fetchall()
        cur.execute("CREATE TABLE tutorial_hashes (id serial, hash bigint, url text)")
    results = [Result(sha1, "hashed", dhash=dhash, low_information=low, hashed_from=src)
               for sha1, dhash, low, src, _ in rows]
    sha1s = [r.sha1 for r in results]
    rates: dict[str, list[float]] = {"tutorial": [], "write_results": []}
    for _ in range(repeat):
        with conn, conn.cursor() as cur:
            cur.execute("TRUNCATE tutorial_hashes")
        start = time.perf_counter()
        with conn.cursor() as cur:
            for _sha1, dhash, _low, _src, title in rows:
                cur.execute("INSERT INTO tutorial_hashes (hash, url) VALUES (%s, %s)",
                            (dhash, title.replace(" ", "_")))
                conn.commit()
        rates["tutorial"].append(len(rows) / (time.perf_counter() - start))

        with conn, conn.cursor() as cur:
            cur.execute("UPDATE files SET state = 'pending', dhash = NULL WHERE sha1 = ANY(%s)",
                        (sha1s,))
            cur.execute("ANALYZE files")
        start = time.perf_counter()
        updated = 0
        for i in range(0, len(results), batch):
            with conn:
                updated += ledger.write_results(conn, results[i:i + batch])
        rates["write_results"].append(updated / (time.perf_counter() - start))
    with conn, conn.cursor() as cur:
        cur.execute("SHOW synchronous_commit")
        rates["synchronous_commit"] = cur.fetchone()[0]
        cur.execute("SHOW fsync")
        rates["fsync"] = cur.fetchone()[0]
    conn.close()
    return rates


# -- the stages in one process ----------------------------------------------------------------

def profile_stages(url: str, broker: str, sample: int, batch: int) -> dict[str, float]:
    """Milliseconds per file of each stage, run serially in this process on a crawled ledger.

    A quiet single-threaded measurement beside the workers' task times (which include waiting
    for a core): the limiter's Redis calls, the HTTP download alone, base64 both ways (how bytes
    travel from fetch to hash through Redis), the canonical hash, and write_results.
    """
    from pipeline import fetch, imaging
    from pipeline.politeness import Bandwidth, DownloadSlots

    conn = storage.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT sha1, url, thumb_url, dhash, low_information FROM files"
                    " WHERE state = 'hashed' ORDER BY file_id LIMIT %s", (sample,))
        rows = cur.fetchall()
    client = redis.Redis.from_url(broker)
    slots = DownloadSlots(client, 64, key="wikihash:bench-slots")
    bandwidth = Bandwidth(client, 100_000 * 1_000_000 / 8, key="wikihash:bench-bandwidth")
    session = fetch.new_session(USER_AGENT)
    spent: dict[str, float] = defaultdict(float)
    blobs = []
    for _sha1, orig, thumb, _d, _low in rows:
        target = thumb or orig
        start = time.perf_counter()
        with slots.slot():
            bandwidth.throttle(10_000)
        spent["limiter (Redis)"] += time.perf_counter() - start
        start = time.perf_counter()
        data = fetch.download(session, target, allowed_hosts={fetch.host_of(target)},
                              max_bytes=64 << 20, timeout=30).data
        spent["HTTP download"] += time.perf_counter() - start
        start = time.perf_counter()
        data = base64.b64decode(base64.b64encode(data))
        spent["base64 both ways"] += time.perf_counter() - start
        blobs.append(data)
    for data in blobs:
        start = time.perf_counter()
        imaging.hash_bytes(data)
        spent["decode + hash"] += time.perf_counter() - start
    results = [Result(sha1, "hashed", dhash=d, low_information=low, hashed_from="thumb")
               for sha1, _o, _t, d, low in rows]
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE files SET state = 'pending', dhash = NULL WHERE sha1 = ANY(%s)",
                    ([r.sha1 for r in results],))
    start = time.perf_counter()
    for i in range(0, len(results), batch):
        with conn:
            ledger.write_results(conn, results[i:i + batch])
    spent[f"write_results (per {batch})"] += time.perf_counter() - start
    conn.close()
    client.delete("wikihash:bench-slots", "wikihash:bench-bandwidth")
    return {k: 1000 * v / max(1, len(rows)) for k, v in spent.items()} | {"files": len(rows)}


# -- the report ---------------------------------------------------------------------------------

def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def markdown(args, shape: Shape, runs: list[CrawlRun], writes: dict, prewarm_s: dict,
             command: str, pg: str, profiles: dict[int, dict[str, float]]) -> str:
    lines = ["# Crawl benchmarks", "",
             f"Generated by `{command}`.", "",
             f"- {machine_line()}; {pg}",
             f"- fake wiki: {shape.articles} articles, {shape.links} image links, "
             f"{shape.files} files ({shape.contents} distinct contents, {shape.shared} in the "
             f"shared repository), originals ~800x600 (90 % JPEG q85, 10 % PNG), "
             f"{shape.bytes_originals / shape.contents / 1024:.0f} KB mean",
             f"- workers: {args.workers} x `python -m pipeline worker -c {args.concurrency}` "
             f"(prefork), producer `python -m pipeline crawl --job-size {args.job_size}`; "
             "politeness lifted (64 downloads, 100000 Mbit/s); fake server in the bench process",
             "- thumbnails rendered by the fake server before timing: "
             + ", ".join(f"{w} px in {s:.0f} s" for w, s in prewarm_s.items()),
             "", "## End to end", "",
             "Time from launching `wikihash crawl` to no file pending (the ledger polled every "
             "0.25 s); files = file rows settled (hashed, failed, missing, unsupported); "
             "downloads = distinct contents fetched and hashed.", "",
             "| width | run | seconds | files/s | downloads/s | walk s | hashed | failed | "
             "target |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in runs:
        ok = "met" if r.files_per_s >= TARGET_FILES_PER_S else "**missed**"
        lines.append(f"| {r.width} | {r.repeat} | {r.seconds:.1f} | {r.files_per_s:.0f} | "
                     f"{r.contents / r.seconds:.0f} | {r.walk_seconds:.1f} | "
                     f"{r.states['hashed']} | {r.states['failed']} | "
                     f"≥ {TARGET_FILES_PER_S}: {ok} |")
    lines += ["", "## Where the time goes", "",
              "Worker-seconds summed from Celery's own `Task … succeeded in Ns` lines of the real "
              "workers (task body only: the download includes the limiter's Redis calls, base64 "
              "and sending the next task; hashing includes base64 decoding). Utilisation = "
              "worker-seconds / (wall seconds x worker processes). API = the producer's walk "
              "(wall) and the fake server's own time inside api.php handlers.", "",
              "| width | run | API: walk s (server s, requests) | download: tasks, s, ms/file |"
              " decode+hash: tasks, s, ms/file | DB write: tasks, s, ms/file | utilisation |"
              " server ms/file request |",
              "| ---: | ---: | --- | --- | --- | --- | ---: | ---: |"]
    for r in runs:
        cells = []
        busy = 0.0
        for name in ("wikihash.fetch_batch", "wikihash.hash_batch", "wikihash.write_batch"):
            n, s = r.tasks.get(name, (0, 0.0))
            busy += s
            cells.append(f"{n}, {s:.1f}, {1000 * s / max(1, r.contents):.2f}")
        api_n, api_s = r.server.get("api", (0, 0.0))
        file_n, file_s = r.server.get("file", (0, 0.0))
        util = busy / (r.seconds * args.workers * args.concurrency)
        lines.append(f"| {r.width} | {r.repeat} | {r.walk_seconds:.1f} ({api_s:.1f}, {api_n}) | "
                     + " | ".join(cells) + f" | {100 * util:.0f} % | "
                     f"{1000 * file_s / max(1, file_n):.2f} |")
    stages = [k for k in next(iter(profiles.values()), {}) if k != "files"]
    lines += ["", "## The stages alone, in one process", "",
              "Milliseconds per file, serially in the bench process on the crawled ledger "
              f"({next(iter(profiles.values()), {}).get('files', 0)} files): no core sharing, "
              "so these are the pure costs under the workers' task times.", "",
              "| width | " + " | ".join(stages) + " |",
              "| ---: | " + " | ".join("---:" for _ in stages) + " |"]
    for width, prof in sorted(profiles.items()):
        lines.append(f"| {width} | " + " | ".join(f"{prof[k]:.2f}" for k in stages) + " |")
    minimum = -(-shape.links // WALK_LIMIT) + -(-shape.files // IMAGEINFO_LIMIT) + 1
    lines += ["", "## API requests", "",
              f"The least the API allows: image links / {WALK_LIMIT} = "
              f"{-(-shape.links // WALK_LIMIT)} for the walk, plus files / {IMAGEINFO_LIMIT} = "
              f"{-(-shape.files // IMAGEINFO_LIMIT)} for imageinfo, plus 1 siteinfo = "
              f"{minimum} ({1000 * minimum / shape.articles:.1f} per 1,000 articles).", "",
              "| width | run | requests | by kind | per 1,000 articles | / minimum | target |",
              "| ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in runs:
        ratio = r.api_requests / minimum
        ok = "met" if ratio <= TARGET_API_RATIO else "**missed**"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.api.items()))
        lines.append(f"| {r.width} | {r.repeat} | {r.api_requests} | {kinds} | "
                     f"{1000 * r.api_requests / shape.articles:.1f} | {ratio:.2f} | "
                     f"≤ {TARGET_API_RATIO}: {ok} |")
    tut, ours = writes["tutorial"], writes["write_results"]
    ratio = median(ours) / median(tut)
    ok = "met" if ratio >= TARGET_WRITE_RATIO else "**missed**"
    lines += ["", "## Database write: the tutorial's INSERT + COMMIT per image vs COPY batches",
              "",
              f"On the crawled ledger, {writes['rows']} hashed files, interleaved "
              f"{len(tut)} times: the tutorial's `INSERT INTO hashes (hash, url) VALUES (%s, %s)` "
              f"then `COMMIT` per row into a plain table, against `ledger.write_results` "
              f"(COPY into a staging table, one UPDATE of `files` by SHA-1, indexed) in "
              f"batches of {args.write_batch}, one transaction each. "
              f"synchronous_commit={writes['synchronous_commit']}, fsync={writes['fsync']}.", "",
              "| method | rows/s (each pass) | median |", "| --- | --- | ---: |",
              f"| tutorial INSERT + COMMIT per row | {', '.join(f'{v:.0f}' for v in tut)} | "
              f"{median(tut):.0f} |",
              f"| write_results, COPY per {args.write_batch} | "
              f"{', '.join(f'{v:.0f}' for v in ours)} | {median(ours):.0f} |",
              "", f"Ratio {ratio:.1f}x (target ≥ {TARGET_WRITE_RATIO}x: {ok}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=3000)
    parser.add_argument("--files", type=int, default=4000, help="distinct file names")
    parser.add_argument("--images-per-article", type=float, default=5.0)
    parser.add_argument("--widths", default="120,250", help="thumbnail widths to crawl with")
    parser.add_argument("--workers", type=int, default=1, help="worker processes to start")
    parser.add_argument("--concurrency", type=int, default=2, help="-c of each worker")
    parser.add_argument("--job-size", type=int, default=25, help="files per fetch task")
    parser.add_argument("--repeat", type=int, default=2, help="crawls per width, interleaved")
    parser.add_argument("--write-batch", type=int, default=25, help="results per COPY")
    parser.add_argument("--write-repeat", type=int, default=3)
    parser.add_argument("--write-rows", type=int, default=3000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server where a scratch database is created and dropped")
    parser.add_argument("--redis", default="",
                        help="a Redis to use (default: a private redis-server on a free port)")
    parser.add_argument("--redis-db", type=int, default=11,
                        help="with --redis: flushed; nothing else there")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per crawl")
    parser.add_argument("--sample", type=int, default=300, help="files for the stage profile")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--server-nagle", action="store_true",
                        help="leave Nagle's algorithm on in the fake server, as tests do")
    parser.add_argument("--output", default=str(ROOT / "docs" / "crawl-benchmarks.md"))
    parser.add_argument("--tiny", action="store_true",
                        help="CI size: 60 articles, 80 files, width 120, one run, no report file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.articles, args.files, args.widths, args.repeat = 60, 80, "120", 1
        args.write_rows, args.write_repeat, args.sample, args.output = 50, 1, 30, ""
    command = "python ops/bench/crawl.py " + " ".join(sys.argv[1:] if argv is None else argv)
    widths = [int(w) for w in args.widths.split(",")]
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    broker = (f"{args.redis}/{args.redis_db}" if args.redis
              else stack.enter_context(redis_server()))

    t0 = time.perf_counter()
    wiki, commons, shape = build(args.articles, args.files, args.images_per_article, args.seed)
    print(f"built the wiki in {time.perf_counter() - t0:.0f} s: {shape}", file=sys.stderr)
    # http.server leaves Nagle's algorithm on and writes the headers and the body of a response
    # in two sends: on a keep-alive connection the body then waits for the client's delayed ACK
    # (40 ms on Linux). Production front ends (nginx, ATS) set TCP_NODELAY; so do we, unless
    # asked to reproduce the fake server's default.
    nodelay = not args.server_nagle
    runs: list[CrawlRun] = []
    prewarm_s: dict[int, float] = {}
    writes: dict = {}
    profiles: dict[int, dict[str, float]] = {}
    conn = psycopg2.connect(args.dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT version()")
        pg = cur.fetchone()[0].split(" on ")[0]
    conn.close()
    with FakeWikiServer(commons, tcp_nodelay=nodelay) as shared, \
            FakeWikiServer(wiki, tcp_nodelay=nodelay) as server:
        servers = [server, shared]
        titles = sorted(set(wiki.files) | set(commons.files))
        for width in widths:
            prewarm_s[width] = prewarm(servers, server.api_url, titles, width)
            print(f"thumbnails at {width} px rendered in {prewarm_s[width]:.0f} s",
                  file=sys.stderr)
        for repeat in range(1, args.repeat + 1):
            for width in widths if repeat % 2 else widths[::-1]:
                with scratch_database(args.dsn) as url:
                    run, _log = crawl_once(args, url, broker, servers, width, repeat)
                    runs.append(run)
                    print(f"width {width} run {repeat}: {run.files} files in {run.seconds:.1f} s"
                          f" = {run.files_per_s:.0f} files/s; walk {run.walk_seconds:.1f} s; "
                          f"api {run.api}; tasks {run.tasks}; server {run.server}",
                          file=sys.stderr)
                    if run.width not in profiles:
                        profiles[run.width] = profile_stages(url, broker, args.sample,
                                                             args.write_batch)
                        print(f"stages at {run.width} px: {profiles[run.width]}",
                              file=sys.stderr)
                    if not writes:
                        writes = compare_writes(url, args.write_batch, args.write_repeat,
                                                args.write_rows)
                        writes["rows"] = min(args.write_rows, run.states["hashed"])
                        print(f"writes: {writes}", file=sys.stderr)
    redis.Redis.from_url(broker).flushdb()
    report = markdown(args, shape, runs, writes, prewarm_s, command, pg, profiles)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
