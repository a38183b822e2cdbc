"""Invariants 1, 4 and 7 under fault: services going away, servers pushing back, ops/up.

Each test runs the real `wikihash crawl` and `wikihash worker` processes against a fake wiki on
127.0.0.1, injects one fault mid-crawl, and then requires the ledger a clean crawl reaches
(`assert_ledger_matches`: every article, every file's state and its canonical hash), with each
result applied once. Services a test takes away are its own throwaway ones (tests/services.py),
never the shared PostgreSQL or Redis. docs/reliability.md lists every fault and its result.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from fakewiki import FakeWikiServer, Faults
from test_crawl import assert_ledger_matches
from test_crawl_faults import wait_for
from wikis import build_wiki

from pipeline import storage
from tests.conftest import ROOT, sql_rows
from tests.e2e.conftest import environment, stop
from tests.services import ThrowawayPostgres, ThrowawayRedis


def hashed(db_url: str) -> int:
    return sql_rows(db_url, "SELECT count(*) FROM files WHERE state = 'hashed'")[0][0]


def walk_started(db_url: str) -> bool:
    rows = sql_rows(db_url, "SELECT value FROM crawl_state WHERE key = 'walk'")
    return bool(rows and rows[0][0].get("continue"))


def walk_done(db_url: str) -> bool:
    rows = sql_rows(db_url, "SELECT value FROM crawl_state WHERE key = 'walk'")
    return bool(rows and rows[0][0].get("done"))


def applied_once(db_url: str) -> None:
    """No file's result was written twice (write_results counts attempts per applied result)."""
    assert sql_rows(db_url, "SELECT max(attempts) FROM files WHERE state <> 'pending'"
                       " AND attempts > 0") == [(1,)]


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """Wait for `proc` to end with status 0; returns its stderr."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc, signal.SIGKILL)
        tail = proc.stderr.read()[-3000:]
        raise AssertionError(f"did not finish in {timeout} s: {tail}") from None
    err = proc.stderr.read()
    assert proc.returncode == 0, err[-3000:]
    return err


# -- PostgreSQL and Redis go away ---------------------------------------------------------------


@pytest.mark.chaos
def test_postgres_stopped_for_20_s_mid_crawl():
    """Workers and producer wait for PostgreSQL and go on; nothing lost, nothing twice."""
    wiki, commons, truth = build_wiki(articles=1300, big_article_images=0)
    faults = Faults(api_delay=0.05, file_delay=0.03)
    with ThrowawayPostgres() as pg, ThrowawayRedis() as broker, \
            FakeWikiServer(commons, faults=faults), \
            FakeWikiServer(wiki, faults=faults) as server:
        db_url = pg.create_database("wikihash")
        storage.migrate(db_url)
        env = environment(db_url, broker.url, server.api_url, WIKIHASH_REQUEUE_AFTER="30")
        try:
            worker = env.start("worker", "-c", "2", "--loglevel", "WARNING")
            producer = env.start("crawl")
            # Mid-walk (a checkpoint, not the end) with jobs in the workers' hands.
            wait_for(lambda: walk_started(db_url), 180, "the first checkpoint")
            assert not walk_done(db_url), "the walk ended before the fault: make the wiki larger"
            pg.stop()
            time.sleep(20)
            assert producer.poll() is None, "the producer died while PostgreSQL was away"
            assert worker.poll() is None, "the worker died while PostgreSQL was away"
            pg.start()
            err = finish(producer, 420)
            assert "trying again" in err  # it met the outage and rode it out
            assert worker.poll() is None
        finally:
            for proc in env.procs:
                stop(proc, signal.SIGKILL)
        assert_ledger_matches(db_url, truth, server)
        applied_once(db_url)


@pytest.mark.chaos
def test_redis_restarted_empty_mid_crawl(db_url):
    """The queue is lost with Redis; the reconciler sends the pending files again."""
    wiki, commons, truth = build_wiki(articles=400, big_article_images=0)
    faults = Faults(api_delay=0.02, file_delay=0.05)
    with ThrowawayRedis() as broker, FakeWikiServer(commons, faults=faults), \
            FakeWikiServer(wiki, faults=faults) as server:
        storage.migrate(db_url)
        env = environment(db_url, broker.url, server.api_url, WIKIHASH_REQUEUE_AFTER="8")
        try:
            worker = env.start("worker", "-c", "2", "--loglevel", "WARNING")
            producer = env.start("crawl")
            wait_for(lambda: hashed(db_url) > 10, 180, "some files hashed")
            queued = redis.Redis.from_url(broker.url).llen("fetch")
            broker.restart(down_for=3)  # SIGKILL, no persistence: every message is gone
            assert redis.Redis.from_url(broker.url).llen("fetch") == 0
            err = finish(producer, 420)
            assert worker.poll() is None, "the worker did not survive the broker's restart"
        finally:
            for proc in env.procs:
                stop(proc, signal.SIGKILL)
        assert_ledger_matches(db_url, truth, server)
        applied_once(db_url)
        print(f"fetch jobs lost with Redis: {queued}; producer log tail: {err[-500:]}")


# -- servers that push back ---------------------------------------------------------------------


def _timed_file_log(*servers: FakeWikiServer) -> list[tuple[float, str, int]]:
    """Every file request with the time it was answered."""
    log: list[tuple[float, str, int]] = []
    for server in servers:
        record = server._record_file

        def timed(path: str, status: int, record=record) -> None:
            log.append((time.monotonic(), path, status))
            record(path, status)

        server._record_file = timed
    return log


@pytest.mark.chaos
def test_file_server_retry_after_is_honoured(db_url, crawl_env):
    """429 and 503 from the image server: the file is asked for again only after Retry-After."""
    wiki, commons, truth = build_wiki(articles=40, generated=20, big_article_images=0)
    faults = Faults(file_status_429=2, file_status_503=2, retry_after=7)
    with FakeWikiServer(commons, faults=faults) as shared, \
            FakeWikiServer(wiki, faults=faults) as server:
        log = _timed_file_log(server, shared)
        # One job holds every file here and waits 4 x 7 s, longer than the reconciler's 10 s:
        # each wait marks the job alive, so it is not re-sent meanwhile (a second copy would
        # not know about the first one's Retry-After).
        env = crawl_env(server.api_url, WIKIHASH_REQUEUE_AFTER="10")
        with env.workers(2):
            result = env.wikihash("crawl", timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        pushed_back = [(t, path) for t, path, status in log if status in (429, 503)]
        assert len(pushed_back) == 4
        for when, path in pushed_back:
            again = [t for t, p, _ in log if p == path and t > when]
            assert again, f"{path} was never asked for again"
            # backoff alone would come back after 1.6-2.4 s (first retry) or 3.2-4.8 s
            assert again[0] - when >= 7 - 0.5, (path, again[0] - when)
        assert_ledger_matches(db_url, truth, server)


@pytest.mark.chaos
def test_slow_and_dropping_wiki(db_url, crawl_env):
    """Slow API answers, dropped API connections and slow image servers: all files, once."""
    wiki, commons, truth = build_wiki(articles=120, big_article_images=0)
    faults = Faults(api_delay=0.4, drop_connections=3, file_delay=0.15)
    with FakeWikiServer(commons, faults=faults) as shared, \
            FakeWikiServer(wiki, faults=faults) as server:
        # Sent again only after 5 minutes: a slow server alone must not cause a second download.
        env = crawl_env(server.api_url, WIKIHASH_REQUEUE_AFTER="300")
        with env.workers(2):
            result = env.wikihash("crawl", timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
        assert faults.drop_connections == 0  # all three drops were served, and retried
        hits = server.file_hits + shared.file_hits
        assert max(hits.values()) == 1, hits.most_common(3)
        assert_ledger_matches(db_url, truth, server)


# -- ops/up keeps its workers alive -------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.chaos
def test_ops_up_restarts_a_killed_worker(db_url, crawl_env, tmp_path):
    wiki, commons, truth = build_wiki(articles=300, big_article_images=0)
    faults = Faults(file_delay=0.05)
    with FakeWikiServer(commons, faults=faults), FakeWikiServer(wiki, faults=faults) as server:
        env = crawl_env(server.api_url, WIKIHASH_REQUEUE_AFTER="8")
        up = subprocess.Popen(
            [str(ROOT / "ops" / "up"), "--until-done", "--workers", "2", "--logs", str(tmp_path),
             "--no-services", "--no-flower"],
            env=env.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        env.procs.append(up)
        try:
            wait_for(lambda: hashed(db_url) > 10, 180, "some files hashed")
            workers = [p for p in _children(up.pid) if " worker " in _cmdline(p)]
            assert len(workers) == 2, [_cmdline(p) for p in _children(up.pid)]
            os.killpg(workers[0], signal.SIGKILL)  # the worker and its pool, mid-batch
            err = finish(up, 420)
        finally:
            stop(up, signal.SIGKILL)
        assert "ended with status -9; starting it again" in err, err[-2000:]
        assert "the crawl is complete" in err
        assert_ledger_matches(db_url, truth, server)
        applied_once(db_url)
