"""Scale benchmark: crawl an enwiki-shaped wiki of N articles end to end, per stage per 1,000 files.

One run, on one machine: serves `tests.fakewiki.enwiki` (N articles, generated on the fly,
docs/scale.md) on 127.0.0.1 from this process, makes a scratch database and a private Redis,
starts `python -m pipeline worker` (real Celery, prefork) and `python -m pipeline crawl`
(the real producer, which drains until nothing is pending), with politeness lifted. Then it
reports, per stage, seconds per 1,000 files:

- walk, imageinfo: the fake server's own time answering allpages / imageinfo requests;
- producer: the rest of the producer's walk (its ledger transactions and client-side parsing):
  launch -> "walked" line, minus the two above;
- download, hash, write: the workers' task times (Celery's "succeeded in" lines);
- reconciler: one reconciling pass (`ledger.counts` + `ledger.claim_jobs`) on the finished
  ledger with 1,000 files made pending again (rolled back), as the producer runs it;

plus API requests per 1,000 articles, peak RSS (VmHWM) of the producer and the workers,
table and index sizes, and whether the ledger equals the generator's truth (streamed page by
page, never a set of every title). Exits 1 when it does not.

Usage: python ops/bench/scale.py --articles 10000 [--json] [--workers 1] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict

import psycopg2  # noqa: E402 - after common, which puts the project root on sys.path
from common import ADMIN_URL, USER_AGENT, Proc, machine_line, redis_server, scratch_database

from pipeline import ledger  # noqa: E402
from tests.fakewiki.enwiki import EnwikiShape, file_bytes, serve  # noqa: E402

TASK_LINE = re.compile(r"Task wikihash\.(\w+)\[[^\]]+\] succeeded in ([0-9.e-]+)s")
STAGES = ("walk", "imageinfo", "producer", "download", "hash", "write", "reconciler")


def crawl(args, url: str, broker: str, api_url: str) -> dict:
    env = dict(os.environ)
    env.update({
        "WIKIHASH_DATABASE_URL": url, "WIKIHASH_BROKER_URL": broker,
        "WIKIHASH_API_URL": api_url, "WIKIHASH_USER_AGENT": USER_AGENT,
        "WIKIHASH_MAX_DOWNLOADS": "64", "WIKIHASH_MAX_MBITS": "100000",
        "WIKIHASH_FETCH_TIMEOUT": "30", "WIKIHASH_REQUEUE_AFTER": "300",
    })
    workers = [Proc(["worker", "-c", str(args.concurrency), "-Q", "fetch,hash,write",
                     "--loglevel", "INFO", "-n", f"scale{i}-{uuid.uuid4().hex[:6]}@%h"], env)
               for i in range(args.workers)]
    try:
        for w in workers:
            w.wait_for(r"ready\.", 120)
        start = time.perf_counter()
        producer = Proc(["crawl", "--job-size", str(args.job_size)], env)
        try:
            walked = producer.wait_for(r"^walked \d+ articles", args.timeout)
            producer.wait_for(r"^nothing pending", args.timeout)
            seconds = time.perf_counter() - start
            if producer.popen.wait(timeout=60) != 0:
                raise RuntimeError("crawl failed:\n" + "\n".join(
                    line for _, _, line in producer.lines[-20:]))
        finally:
            producer.stop()
        time.sleep(1.0)  # the workers' last task lines
    finally:
        for w in workers:
            w.stop()
    tasks: dict[str, float] = defaultdict(float)
    for w in workers:
        for _, _, line in w.lines:
            m = TASK_LINE.search(line)
            if m:
                tasks[m.group(1)] += float(m.group(2))
    return {"seconds": seconds, "walk_wall": walked - start, "tasks": dict(tasks),
            "rss": {"producer": producer.peak_mb()["main"],
                    "worker_main": max(w.peak_mb()["main"] for w in workers),
                    "worker_child": max(w.peak_mb()["child"] for w in workers)}}


def reconciler_pass(url: str, pending: int = 1000, repeat: int = 5) -> dict[str, float]:
    """Seconds of one reconciling pass with `pending` files pending again (rolled back)."""
    conn = psycopg2.connect(url)
    times: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(repeat):
            with conn.cursor() as cur:
                cur.execute("UPDATE files SET state = 'pending', dhash = NULL,"
                            " enqueued_at = NULL WHERE file_id IN (SELECT file_id FROM files"
                            " WHERE state = 'hashed' ORDER BY file_id DESC LIMIT %s)", (pending,))
            began = time.perf_counter()
            ledger.counts(conn)
            times["counts"].append(time.perf_counter() - began)
            began = time.perf_counter()
            jobs = ledger.claim_jobs(conn, limit=2 * pending, stale_after=900)
            times["claim"].append(time.perf_counter() - began)
            conn.rollback()
        times["claimed"] = [len(jobs)]
    finally:
        conn.close()
    return {k: statistics.median(v) for k, v in times.items()}


def sizes(url: str) -> dict[str, int]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c"
                        " WHERE c.relnamespace = 'public'::regnamespace"
                        " AND c.relkind IN ('r', 'i') ORDER BY 2 DESC")
            return dict(cur.fetchall())
    finally:
        conn.close()


def compare_with_truth(url: str, shape: EnwikiShape, sample_every: int = 97) -> dict:
    """Page by page in page-id order against the generator, then every file's state (and a
    sample's SHA-1). Streams both sides: memory does not grow with N."""
    wrong: list[str] = []
    counted = Counter()
    conn = psycopg2.connect(url)
    try:
        with conn:
            cur = conn.cursor(name="truth")
            cur.itersize = 2000
            cur.execute("SELECT p.page_id, p.title, array_remove(array_agg(f.title), NULL)"
                        " FROM pages p LEFT JOIN usages u USING (page_id)"
                        " LEFT JOIN files f USING (file_id) GROUP BY p.page_id ORDER BY 1")
            expected = iter(shape.article_slots())
            for page_id, title, images in cur:
                slot = next(expected, None)
                counted["pages"] += 1
                want = None if slot is None else (shape.page_id(0, slot), shape.title(0, slot),
                                                  sorted(shape.images(0, slot)))
                if want != (page_id, title, sorted(images)):
                    counted["pages_wrong"] += 1
                    if len(wrong) < 5:
                        wrong.append(f"page {page_id} {title!r}: expected {want}")
            cur.close()
            if next(expected, None) is not None:
                counted["pages_wrong"] += 1
                wrong.append("articles missing from the ledger")
        with conn:
            cur = conn.cursor(name="files")
            cur.itersize = 5000
            cur.execute("SELECT title, state, sha1 FROM files ORDER BY file_id")
            for i, (title, state, sha1) in enumerate(cur):
                counted["files"] += 1
                want = shape.expected_state(title)
                if state != want:
                    counted["files_wrong"] += 1
                    if len(wrong) < 10:
                        wrong.append(f"file {title!r}: {state}, expected {want}")
                elif state == "hashed" and i % sample_every == 0:
                    facts = shape.file(shape.file_id(title))
                    data, _ = file_bytes(facts.kind, facts.content, shape.seed)
                    counted["sha1_checked"] += 1
                    if hashlib.sha1(data).hexdigest() != sha1:
                        counted["files_wrong"] += 1
                        wrong.append(f"file {title!r}: sha1 {sha1}")
            cur.close()
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM files f WHERE NOT EXISTS"
                        " (SELECT 1 FROM usages u WHERE u.file_id = f.file_id)")
            counted["files_unused"] = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM usages")
            counted["usages"] = cur.fetchone()[0]
            cur.execute("SELECT state, count(*) FROM files GROUP BY state")
            counted.update({f"state_{k}": v for k, v in cur.fetchall()})
    finally:
        conn.close()
    equal = not counted["pages_wrong"] and not counted["files_wrong"] \
        and not counted["files_unused"] and counted["pages"] == shape.articles
    return {"equal": equal, "counts": dict(counted), "examples": wrong}


def run(args) -> dict:
    shape = EnwikiShape(args.articles, args.seed)
    with serve(shape) as (shared, server), redis_server() as broker, \
            scratch_database(args.dsn) as url:
        run_ = crawl(args, url, broker, server.api_url)
        served: dict[str, tuple[int, float]] = {}
        for srv in (server, shared):
            for kind, (n, sec) in srv.served().items():
                m, s = served.get(kind, (0, 0.0))
                served[kind] = (m + n, s + sec)
        recon = reconciler_pass(url)
        truth = compare_with_truth(url, shape)
        table_sizes = sizes(url)
    files = truth["counts"]["files"]
    api_s = sum(sec for kind, (_, sec) in served.items() if kind != "file")
    stage_s = {
        "walk": served.get("generator:allpages", (0, 0.0))[1],
        "imageinfo": served.get("prop:imageinfo", (0, 0.0))[1],
        "producer": max(0.0, run_["walk_wall"] - api_s),
        "download": run_["tasks"].get("fetch_batch", 0.0),
        "hash": run_["tasks"].get("hash_batch", 0.0),
        "write": run_["tasks"].get("write_batch", 0.0),
    }
    per_1000 = {k: 1000 * v / max(1, files) for k, v in stage_s.items()}
    per_1000["reconciler"] = recon["claim"] + recon["counts"]  # one pass, 1,000 pending
    api = {kind: n for kind, (n, _) in served.items() if kind != "file"}
    return {
        "articles": shape.articles, "files": files, "usages": truth["counts"]["usages"],
        "ledger_equals_truth": truth["equal"],
        "crawl_s": round(run_["seconds"], 2), "walk_wall_s": round(run_["walk_wall"], 2),
        "files_per_s": round(files / run_["seconds"], 1),
        "per_1000_files_s": {k: round(v, 4) for k, v in per_1000.items()},
        "api_requests_per_1000_articles": {k: round(1000 * n / shape.articles, 2)
                                           for k, n in sorted(api.items())},
        "file_requests": served.get("file", (0, 0.0))[0],
        "reconciler_ms": {k: round(1000 * v, 2) for k, v in recon.items() if k != "claimed"},
        "peak_rss_mb": {k: round(v, 1) for k, v in run_["rss"].items()},
        "sizes_mb": {k: round(v / 2 ** 20, 2) for k, v in table_sizes.items()},
        "truth": truth["counts"], "truth_examples": truth["examples"],
        "machine": machine_line(), "workers": args.workers, "concurrency": args.concurrency,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--job-size", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=6 * 3600)
    parser.add_argument("--dsn", default=ADMIN_URL)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tiny", action="store_true", help="CI size: 300 articles")
    args = parser.parse_args(argv)
    if args.tiny:
        args.articles = 300
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"# scale: {result['articles']} articles, {result['files']} files, "
              f"{result['usages']} usages; {result['machine']}")
        print(f"crawl {result['crawl_s']} s ({result['files_per_s']} files/s), "
              f"ledger equals truth: {result['ledger_equals_truth']}")
        for stage in STAGES:
            print(f"  {stage:<11} {result['per_1000_files_s'][stage]:9.4f} s / 1,000 files")
        for key in ("api_requests_per_1000_articles", "reconciler_ms", "peak_rss_mb",
                    "sizes_mb", "truth"):
            print(f"{key}: {json.dumps(result[key])}")
        for line in result["truth_examples"]:
            print("  differs:", line)
    return 0 if result["ledger_equals_truth"] else 1


if __name__ == "__main__":
    sys.exit(main())
