"""The crawl rides out a killed producer, a killed worker and a wiki that pushes back.

Each run must end with the same ledger as a clean crawl of the same wiki.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from fakewiki import FakeWikiServer, Faults
from test_crawl import assert_ledger_matches
from wikis import build_wiki

from tests.conftest import sql_rows
from tests.e2e.conftest import stop

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_producer_resumes_from_its_checkpoint(db_url, crawl_env):
    wiki, commons, truth = build_wiki(articles=1300, big_article_images=0)
    with FakeWikiServer(commons), FakeWikiServer(wiki, faults=Faults(api_delay=0.05)) as server:
        env = crawl_env(server.api_url)
        with env.workers(2):
            producer = env.start("crawl")

            def checkpointed():
                rows = sql_rows(db_url, "SELECT value FROM crawl_state WHERE key = 'walk'")
                return rows and rows[0][0]["continue"] and not rows[0][0]["done"]

            wait_for(checkpointed, 120, "the first checkpoint")
            stop(producer, signal.SIGKILL)
            walked_before = sql_rows(db_url, "SELECT count(*) FROM pages")[0][0]
            assert 0 < walked_before < len(truth.articles)
            server.reset_logs()
            result = env.wikihash("crawl", timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        # It went on from the checkpoint instead of starting over.
        walked_after = int(re.search(r"walked (\d+) articles", result.stdout).group(1))
        assert walked_after <= len(truth.articles) - walked_before + 500
        assert_ledger_matches(db_url, truth, server)


def test_killed_worker_loses_nothing(db_url, crawl_env):
    wiki, commons, truth = build_wiki(articles=400)
    faults = Faults(file_delay=0.05)
    with FakeWikiServer(commons, faults=faults), FakeWikiServer(wiki, faults=faults) as server:
        env = crawl_env(server.api_url, WIKIHASH_REQUEUE_AFTER="5")
        first = env.start("worker", "-c", "2", "--loglevel", "WARNING")
        producer = env.start("crawl")
        wait_for(lambda: sql_rows(db_url, "SELECT count(*) FROM files WHERE state = 'hashed'"
                                     )[0][0] > 10, 120, "some files hashed")
        stop(first, signal.SIGKILL)  # the whole worker, mid-batch
        with env.workers(2):
            producer.wait(timeout=300)
        assert producer.returncode == 0, producer.stderr.read()[-3000:]
        assert_ledger_matches(db_url, truth, server)
        # Hashed once in the ledger: no file's result was applied twice.
        assert sql_rows(db_url, "SELECT max(attempts) FROM files WHERE state = 'hashed'"
                           ) == [(1,)]


def test_api_pushback_is_honoured(db_url, crawl_env):
    wiki, commons, truth = build_wiki(articles=120, big_article_images=0)
    faults = Faults(status_429=2, status_503=2, maxlag_responses=2, maxlag_retry_after=2,
                    drop_connections=1, retry_after=2,
                    error_titles={"Generated 005.jpg"})
    truth.corrupt.add("Generated 005.jpg")  # its imageinfo always fails: isolated, recorded
    with FakeWikiServer(commons), FakeWikiServer(wiki, faults=faults) as server:
        env = crawl_env(server.api_url)
        with env.workers(2):
            started = time.monotonic()
            result = env.wikihash("crawl", timeout=300)
            elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr[-3000:]
        waited = float(re.search(r"waited ([\d.]+) s", result.stdout).group(1))
        # 2 x 429 and 2 x 503 at Retry-After 2 s, 2 maxlag answers at 2 s, one dropped call.
        assert waited >= 12 and elapsed >= 12
        statuses = [r.status for r in server.requests]
        assert statuses.count(429) == 2 and statuses.count(503) == 2
        reason = sql_rows(db_url, "SELECT reason FROM files WHERE title = %s",
                             ("Generated 005.jpg",))
        assert reason and reason[0][0].startswith("API error")
        assert_ledger_matches(db_url, truth, server)
