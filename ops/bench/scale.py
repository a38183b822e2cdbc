"""Scale benchmark: crawl an enwiki-shaped wiki of N articles end to end, per stage per 1,000 files.

One run, on one machine: serves `tests.fakewiki.enwiki` (N articles, generated on the fly,
docs/scale.md) on 127.0.0.1 from processes of its own (api.php in one, files in
`--file-servers` sharing a port), makes a scratch database and a private Redis, starts
`python -m pipeline worker`s (real Celery, prefork; one kind per stage: `--fetch-workers` on
fetch, `--hash-workers` on hash, one on write) and `python -m pipeline crawl` (the real
producer, which drains until nothing is pending), with politeness lifted. With `--window W`
the ledger first gets the first N - W articles by COPY, as a crawl of them would have left it,
and only the last W are crawled: a crawl of W articles on a ledger of N, which is what shows
how a stage's cost grows with N without crawling all of it. It reports, per 1,000 files
crawled:

- wall seconds per stage: walk, imageinfo (the fake server's time answering allpages /
  imageinfo), producer (its walk's wall time minus those), download, hash, write (the
  workers' task times, Celery's "succeeded in" lines), reconciler (one reconciling pass,
  `ledger.counts` + `ledger.claim_jobs`, on the finished ledger with 1,000 files made pending
  again, rolled back);
- CPU seconds, which the machine's load barely changes: the fake server's threads per request
  kind; every process of the run by kind (producer, each stage's workers and their forked
  decoders, the fake wiki, Redis) and this database's PostgreSQL backends by the process that
  opened them, from /proc;
- per statement (pg_stat_statements, where the server loads it): calls, rows and shared
  blocks per call, blocks per 1,000 files;

plus API requests per 1,000 articles, peak RSS (VmHWM) of the producer and the workers,
table and index sizes, and whether the ledger equals the generator's truth (digests per chunk
of pages, in SQL against generated, never a set of every title; scale_ledger.py). Exits 1 when
it does not. The preload and the truth check generate in `--processes` forked processes.
`--check URL` crawls nothing: it compares the ledger at URL with the truth of --articles.

Usage: python ops/bench/scale.py --articles 100000 [--window 2000] [--json]
       [--fetch-workers 2] [--hash-workers 1] [--file-servers 2] [--one-worker] [--in-process]
       [--processes 2] [--check URL]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import psycopg2  # noqa: E402 - after common, which puts the project root on sys.path
from common import (
    ADMIN_URL,
    ROOT,
    USER_AGENT,
    Proc,
    children,
    machine_line,
    peak_rss_kb,
    redis_server,
    scratch_database,
)
from scale_ledger import compare_with_truth, default_processes, preload, reset_peak_rss

from pipeline import ledger  # noqa: E402
from tests.fakewiki.enwiki import EnwikiShape, serve  # noqa: E402

TASK_LINE = re.compile(r"Task wikihash\.(\w+)\[[^\]]+\] succeeded in ([0-9.e-]+)s")
STAGES = ("walk", "imageinfo", "producer", "download", "hash", "write", "reconciler")


# -- processes and their CPU ---------------------------------------------------------------------

def _cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(utime + stime, the same of the children it has waited for) of one process, in clock
    ticks (the hash stage's decodes run in forked children, pipeline/sandbox.py); None when
    it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class CpuMeter:
    """Samples, twice a second, the CPU time of every process of the run, by kind: the
    processes started here and their children (Celery's pool), and this database's PostgreSQL
    backends (by application_name, PGAPPNAME of the process that opened them; autovacuum
    apart). A process's last sample is its CPU time: lost at most the last half second of a
    process that exits, which the benchmark's own processes do only when it stops them (their
    final samples are taken first, `sample()`)."""

    def __init__(self, url: str | None) -> None:
        self.roots: dict[int, str] = {}  # pid -> kind
        self.ticks: dict[int, tuple[str, tuple[int, int]]] = {}  # pid -> (kind, last ticks)
        self.forks_alive: dict[int, tuple[str, int, int]] = {}  # child: kind, ticks, parent
        self.fork_peak_kb: dict[str, int] = {}  # kind -> peak VmHWM of a pool's child
        self.baseline: dict[int, tuple[int, int]] = {}  # pid -> ticks when started
        self.url = url
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def track(self, pid: int, kind: str) -> None:
        with self._lock:
            self.roots[pid] = kind

    def start(self) -> CpuMeter:
        """Start sampling; what the processes already running (Redis, during the preload)
        used before now is not counted."""
        self.sample()
        with self._lock:
            self.baseline = {pid: ticks for pid, (_, ticks) in self.ticks.items()}
        self._thread.start()
        return self

    def _backends(self) -> list[tuple[int, str]]:
        if self.url is None:
            return []
        try:
            if self._conn is None:
                self._conn = psycopg2.connect(self.url, application_name="scale-meter")
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute("SELECT pid, CASE WHEN backend_type = 'client backend'"
                            " THEN 'pg:' || coalesce(nullif(application_name, ''), 'other')"
                            " ELSE 'pg:' || backend_type END FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()")
                return cur.fetchall()
        except psycopg2.Error:
            self._conn = None
            return []

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
        found = [(pid, kind) for pid, kind in roots.items()]
        found += [(pid, "redis") for pid in children(os.getpid()) if _comm(pid) == "redis-server"]
        pool = [(child, kind) for pid, kind in roots.items() for child in children(pid)]
        found += pool + self._backends()
        # The pool processes' own children: a fork per decode (main's sandbox), or long-lived
        # decoder processes, which no one waits for before the last sample.
        forks = {child: (kind, pid) for pid, kind in pool for child in children(pid)}
        sampled = set()
        for pid, kind in found:
            ticks = _cpu_ticks(pid)
            if ticks is not None:
                sampled.add(pid)
                with self._lock:
                    self.ticks[pid] = (kind, ticks)
        with self._lock:  # a parent gone since keeps its children's last sample
            alive = {pid: row for pid, row in self.forks_alive.items() if row[2] not in sampled}
        for pid, (kind, parent) in forks.items():
            ticks = _cpu_ticks(pid)
            if ticks is not None and parent in sampled:
                alive[pid] = (kind, sum(ticks), parent)
                kb = peak_rss_kb(pid)
                with self._lock:
                    self.fork_peak_kb[kind] = max(kb, self.fork_peak_kb.get(kind, 0))
        with self._lock:
            self.forks_alive = alive

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        return self.seconds()

    def seconds(self) -> dict[str, float]:
        hz = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = defaultdict(float)
        with self._lock:
            for pid, (kind, (own, waited)) in self.ticks.items():
                own0, waited0 = self.baseline.get(pid, (0, 0))
                own, waited = own - own0, waited - waited0
                out[kind] += own / hz
                if waited:
                    out[f"{kind} (its forked children)"] += waited / hz
            # Children alive at the last sample are in no one's waited-for time yet; those
            # gone by then are (their parents reaped them), so each is counted once.
            for kind, ticks, _ in self.forks_alive.values():
                out[f"{kind} (its forked children)"] += ticks / hz
        return dict(out)


class FakeWikiProcs:
    """The fake wiki in processes of its own: api.php in one (the producer's requests are
    serial), files in `file_processes` sharing one port (SO_REUSEPORT)."""

    def __init__(self, shape: EnwikiShape, file_processes: int, meter: CpuMeter) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        base = [sys.executable, "-m", "tests.fakewiki", "--enwiki", str(shape.articles),
                "--seed", str(shape.seed)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs: list[tuple[str, subprocess.Popen]] = []
        try:
            for _ in range(file_processes):
                self._start("fakewiki_files", base + ["--serve", "files", "--port", str(port),
                                                      "--reuse-port"], env, meter)
            files_url = f"http://127.0.0.1:{port}"
            line = self._start("fakewiki_api", base + ["--serve", "api", "--files-url",
                                                       files_url], env, meter)
            self.api_url = line.split()[1]
        except BaseException:
            self.stop()
            raise

    def _start(self, kind: str, argv: list[str], env: dict, meter: CpuMeter) -> str:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.procs.append((kind, proc))
        line = proc.stdout.readline()
        if not line.startswith(("api ", "files ")):
            raise RuntimeError(f"the fake wiki did not start: {line!r}")
        meter.track(proc.pid, kind)
        return line

    def stop(self) -> dict[str, dict[str, float]]:
        """Stop them all; their tallies summed: kind -> requests, wall_s, cpu_s."""
        tally: dict[str, dict[str, float]] = {}
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            for line in out.splitlines():
                if line.startswith("tally "):
                    for kind, row in json.loads(line[6:])["kinds"].items():
                        into = tally.setdefault(kind, {"requests": 0, "wall_s": 0.0,
                                                       "cpu_s": 0.0})
                        for key, value in row.items():
                            into[key] += value
        self.procs = []
        return tally


def crawl(args, url: str, broker: str, api_url: str, meter: CpuMeter) -> dict:
    env = dict(os.environ)
    env.update({
        "WIKIHASH_DATABASE_URL": url, "WIKIHASH_BROKER_URL": broker,
        "WIKIHASH_API_URL": api_url, "WIKIHASH_USER_AGENT": USER_AGENT,
        "WIKIHASH_MAX_DOWNLOADS": "64", "WIKIHASH_MAX_MBITS": "100000",
        "WIKIHASH_FETCH_TIMEOUT": "30", "WIKIHASH_REQUEUE_AFTER": "300",
    })
    # One kind of worker per stage, so that each stage's CPU is its processes' own.
    layout = [("fetch", args.fetch_workers, args.concurrency),
              ("hash", args.hash_workers, args.hash_concurrency),
              ("write", 1, 1)]
    if args.one_worker:  # main's layout: one worker on every queue
        layout = [("fetch,hash,write", 1, args.concurrency)]
    workers: list[tuple[str, Proc]] = []
    try:
        for queues, count, concurrency in layout:
            kind = "worker" if "," in queues else queues
            for i in range(count):
                proc = Proc(["worker", "-c", str(concurrency), "-Q", queues, "--loglevel",
                             "INFO", "-n", f"scale-{kind}{i}-{uuid.uuid4().hex[:6]}@%h"],
                            {**env, "PGAPPNAME": f"scale-{kind}"})
                workers.append((kind, proc))
                meter.track(proc.popen.pid, kind)
        for _, w in workers:
            w.wait_for(r"ready\.", 120)
        start = time.perf_counter()
        producer = Proc(["crawl", "--job-size", str(args.job_size)],
                        {**env, "PGAPPNAME": "scale-producer"})
        meter.track(producer.popen.pid, "producer")
        try:
            walked = producer.wait_for(r"^walked \d+ articles", args.timeout)
            meter.sample()
            walk_cpu = meter.seconds()
            producer.wait_for(r"^nothing pending", args.timeout)
            meter.sample()
            seconds = time.perf_counter() - start
            if producer.popen.wait(timeout=60) != 0:
                raise RuntimeError("crawl failed:\n" + "\n".join(
                    line for _, _, line in producer.lines[-20:]))
        finally:
            producer.stop()
        time.sleep(1.0)  # the workers' last task lines
        meter.sample()
    finally:
        for _, w in workers:
            w.stop()
    tasks: dict[str, float] = defaultdict(float)
    for _, w in workers:
        for _, _, line in w.lines:
            m = TASK_LINE.search(line)
            if m:
                tasks[m.group(1)] += float(m.group(2))
    return {"seconds": seconds, "walk_wall": walked - start, "tasks": dict(tasks),
            "walk_cpu": walk_cpu,
            "rss": {"producer": producer.peak_mb()["main"],
                    "worker_main": max(w.peak_mb()["main"] for _, w in workers),
                    "worker_child": max(w.peak_mb()["child"] for _, w in workers)}}


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


# -- what PostgreSQL did (pg_stat_statements, where the server loads it) -------------------------

STATEMENTS = (  # label, a fragment of the statement's text (first match wins)
    ("walk: upsert pages", "INSERT INTO pages"),
    ("walk: unknown files", "SELECT title FROM files WHERE title = ANY"),
    ("walk: insert files", "INSERT INTO files"),
    ("walk: adopt known hashes", "FROM (SELECT DISTINCT ON (sha1) sha1, state, dhash"),
    ("walk: current usages", "INSERT INTO current_usages"),  # main
    ("walk: batch usages", "INSERT INTO batch_usages"),
    ("walk: delete usages", "DELETE FROM usages u WHERE"),
    ("walk: insert usages", "INSERT INTO usages"),
    ("walk: checkpoint", "INSERT INTO crawl_state"),
    ("claim", "WITH candidates AS"),
    ("write: copy", "COPY staged_results"),
    ("write: update", "UPDATE files f SET state = s.state"),
    ("keep alive", "UPDATE files SET enqueued_at = now() WHERE sha1"),
    ("counts", "ledger_counts"),
)


def statements_start(url: str) -> bool:
    """Reset pg_stat_statements; False when the server does not load it."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            # this database's statements only: another run on the same server keeps its own
            cur.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database"
                        " WHERE datname = current_database()), 0)")
        return True
    except psycopg2.Error:
        return False
    finally:
        conn.close()


def statements(url: str, files: int) -> dict[str, dict]:
    """Per labelled statement: calls, rows, shared blocks (hit + read) and execution ms, each
    per call, and blocks per 1,000 files: what a plan reads, which load does not change."""
    conn = psycopg2.connect(url)
    out: dict[str, dict] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT query, calls, rows, shared_blks_hit, shared_blks_read,"
                        " total_exec_time FROM pg_stat_statements"
                        " WHERE dbid = (SELECT oid FROM pg_database"
                        "   WHERE datname = current_database())")
            for query, calls, rows, hit, read, ms in cur.fetchall():
                label = next((lb for lb, frag in STATEMENTS if frag in query), None)
                if label is None:
                    continue
                row = out.setdefault(label, {"calls": 0, "rows": 0, "blocks": 0, "read": 0,
                                             "ms": 0.0})
                row["calls"] += calls
                row["rows"] += rows
                row["blocks"] += hit + read
                row["read"] += read
                row["ms"] += ms
    finally:
        conn.close()
    return {label: {"calls": r["calls"],
                    "rows_per_call": round(r["rows"] / max(1, r["calls"]), 1),
                    "blocks_per_call": round(r["blocks"] / max(1, r["calls"]), 1),
                    "blocks_per_1000_files": round(1000 * r["blocks"] / max(1, files)),
                    "disk_reads_per_1000_files": round(1000 * r["read"] / max(1, files)),
                    "ms_per_call": round(r["ms"] / max(1, r["calls"]), 3)}
            for label, r in sorted(out.items())}


def run(args) -> dict:
    shape = EnwikiShape(args.articles, args.seed)
    with redis_server() as broker, scratch_database(args.dsn) as url:
        window = args.window if args.window and args.window < shape.articles else None
        reset_peak_rss()
        pre = preload(url, shape, shape.articles - window, args.processes) if window else None
        have_statements = statements_start(url)
        meter = CpuMeter(url).start()
        if args.in_process:  # main's way: served from this process, GIL shared with it all
            with serve(shape) as (shared, server):
                run_ = crawl(args, url, broker, server.api_url, meter)
                tally: dict[str, dict[str, float]] = {}
                for srv in (server, shared):
                    for kind, row in srv.tally().items():
                        into = tally.setdefault(kind, {"requests": 0, "wall_s": 0.0,
                                                       "cpu_s": 0.0})
                        for key, value in row.items():
                            into[key] += value
        else:
            wiki = FakeWikiProcs(shape, args.file_servers, meter)
            try:
                run_ = crawl(args, url, broker, wiki.api_url, meter)
                meter.sample()
            finally:
                tally = wiki.stop()
        cpu = meter.stop()
        recon = reconciler_pass(url)
        reset_peak_rss()
        truth = compare_with_truth(url, shape, args.processes)
        # Per 1,000 files crawled (those of the window when the rest was preloaded).
        files = truth["counts"]["files"] - (pre["files"] if pre else 0)
        crawled_articles = window or shape.articles
        pg = statements(url, files) if have_statements else None
        table_sizes = sizes(url)

    def served(kind: str, key: str) -> float:
        return tally.get(kind, {}).get(key, 0.0)

    api_wall = sum(row["wall_s"] for kind, row in tally.items() if kind != "file")
    stage_s = {
        "walk": served("generator:allpages", "wall_s"),
        "imageinfo": served("prop:imageinfo", "wall_s"),
        "producer": max(0.0, run_["walk_wall"] - api_wall),
        "download": run_["tasks"].get("fetch_batch", 0.0),
        "hash": run_["tasks"].get("hash_batch", 0.0),
        "write": run_["tasks"].get("write_batch", 0.0),
    }
    per_1000 = {k: 1000 * v / max(1, files) for k, v in stage_s.items()}
    per_1000["reconciler"] = recon["claim"] + recon["counts"]  # one pass, 1,000 pending
    # CPU seconds per 1,000 files: the fake server's threads on each request kind; each
    # process kind's own (the workers one kind per stage, unless --one-worker); each kind's
    # PostgreSQL backends.
    cpu_s = {"walk (fake api, allpages)": served("generator:allpages", "cpu_s"),
             "imageinfo (fake api)": served("prop:imageinfo", "cpu_s"),
             "fake file server (handlers)": served("file", "cpu_s")}
    cpu_s.update({f"process: {k}": v for k, v in sorted(cpu.items())})
    cpu_1000 = {k: round(1000 * v / max(1, files), 4) for k, v in cpu_s.items()}
    walk_cpu = {k: round(1000 * v / max(1, files), 4) for k, v in
                sorted(run_["walk_cpu"].items()) if k in ("producer", "pg:scale-producer")}
    api = {kind: int(row["requests"]) for kind, row in tally.items() if kind != "file"}
    return {
        "articles": shape.articles, "files": truth["counts"]["files"],
        "usages": truth["counts"]["usages"],
        "crawled": {"articles": crawled_articles, "files": files},
        "preloaded": pre,
        "ledger_equals_truth": truth["equal"],
        "crawl_s": round(run_["seconds"], 2), "walk_wall_s": round(run_["walk_wall"], 2),
        "files_per_s": round(files / run_["seconds"], 1),
        "per_1000_files_s": {k: round(v, 4) for k, v in per_1000.items()},
        "per_1000_files_cpu_s": cpu_1000,
        "walk_phase_cpu_per_1000_files_s": walk_cpu,
        "postgres_statements": pg,
        "api_requests_per_1000_articles": {k: round(1000 * n / crawled_articles, 2)
                                           for k, n in sorted(api.items())},
        "file_requests": int(served("file", "requests")),
        "reconciler_ms": {k: round(1000 * v, 2) for k, v in recon.items() if k != "claimed"},
        "peak_rss_mb": {**{k: round(v, 1) for k, v in run_["rss"].items()},
                        **({"preload": pre["peak_rss_mb"]["parent"],
                            "preload_generator": pre["peak_rss_mb"]["generators"]}
                           if pre else {}),
                        **{f"{kind}_forked_child": round(kb / 1024, 1)
                           for kind, kb in sorted(meter.fork_peak_kb.items())},
                        "truth_check": truth["peak_rss_mb"]["parent"],
                        "truth_generator": truth["peak_rss_mb"]["generators"]},
        "truth_check_s": truth["seconds"], "truth_digests_s": truth["digests_s"],
        "sizes_mb": {k: round(v / 2 ** 20, 2) for k, v in table_sizes.items()},
        "truth": truth["counts"], "truth_examples": truth["examples"],
        "machine": machine_line(),
        "layout": ("one worker (all queues)" if args.one_worker else
                   f"{args.fetch_workers} fetch worker(s), {args.hash_workers} hash, 1 write")
                  + f", -c {args.concurrency}; fake wiki "
                  + ("in the benchmark's process" if args.in_process else
                     f"api 1 process, files {args.file_servers} processes"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fetch-workers", type=int, default=2,
                        help="worker processes on the fetch queue (one more each on hash"
                             " and write)")
    parser.add_argument("--hash-workers", type=int, default=1)
    parser.add_argument("--hash-concurrency", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="pool size of each fetch"
                        " worker (of the one worker with --one-worker)")
    parser.add_argument("--file-servers", type=int, default=2,
                        help="fake wiki processes serving files (one more serves api.php)")
    parser.add_argument("--one-worker", action="store_true",
                        help="main's layout: one worker process on every queue")
    parser.add_argument("--in-process", action="store_true",
                        help="main's layout: the fake wiki served from this process")
    parser.add_argument("--job-size", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=6 * 3600)
    parser.add_argument("--dsn", default=ADMIN_URL)
    parser.add_argument("--window", type=int, metavar="W",
                        help="crawl only the last W articles, on a ledger preloaded with the"
                             " others (COPY), so that a crawl of W articles runs at the cost of"
                             " a ledger of --articles")
    parser.add_argument("--processes", type=int, default=default_processes(),
                        help="processes generating the preload's rows and the truth check's"
                             " digests (default: the cores, at most 4)")
    parser.add_argument("--check", metavar="URL",
                        help="crawl nothing: compare the ledger at URL with the truth of"
                             " --articles (and --seed); exit 1 when it differs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tiny", action="store_true",
                        help="CI size: 2,000 articles, the last 300 crawled (--window 300)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.articles, args.window = 2000, 300
    if args.check:
        truth = compare_with_truth(args.check, EnwikiShape(args.articles, args.seed),
                                   args.processes)
        print(json.dumps({"articles": args.articles, "ledger_equals_truth": truth["equal"],
                          **truth}) if args.json else
              f"ledger equals truth: {truth['equal']}; {json.dumps(truth['counts'])}"
              + "".join(f"\n  differs: {line}" for line in truth["examples"]))
        return 0 if truth["equal"] else 1
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
        print("CPU s / 1,000 files:")
        for key, value in result["per_1000_files_cpu_s"].items():
            print(f"  {key:<32} {value:9.4f}")
        for label, row in (result["postgres_statements"] or {}).items():
            print(f"  pg {label:<24} {json.dumps(row)}")
        for key in ("api_requests_per_1000_articles", "reconciler_ms", "peak_rss_mb",
                    "sizes_mb", "truth", "layout"):
            print(f"{key}: {json.dumps(result[key])}")
        for line in result["truth_examples"]:
            print("  differs:", line)
    return 0 if result["ledger_equals_truth"] else 1


if __name__ == "__main__":
    sys.exit(main())
