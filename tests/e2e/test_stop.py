"""What `docker compose stop` and `--scale worker=N` ask of the processes, checked natively.

- SIGTERM ends `wikihash crawl` at a batch boundary with status 0, and the next crawl goes on
  from that checkpoint to the ledger of an uninterrupted crawl;
- `wikihash recrawl --every` (the compose `recrawl` service) waits for the first crawl itself,
  runs once it is complete, and ends on SIGTERM with status 0;
- workers started without a node name get distinct ones, on one host as in containers on host
  networking (celery@HOST for all of them would make Flower show one).
ops/compose-smoke checks the same through compose.yaml. Issue 15.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from fakewiki import FakeWikiServer, Faults
from test_crawl import assert_ledger_matches
from test_crawl_faults import wait_for
from wikis import build_wiki

from tests.conftest import sql_rows

pytestmark = pytest.mark.slow


def start(env: dict[str, str], out: Path, *args: str) -> subprocess.Popen:
    """`wikihash ARGS` in its own process group, stdout and stderr into the file `out`."""
    with open(out, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                text=True)


def terminate(proc: subprocess.Popen, timeout: float = 60) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"still running {timeout} s after SIGTERM") from None


def walk_state(db_url: str) -> dict | None:
    rows = sql_rows(db_url, "SELECT value FROM crawl_state WHERE key = 'walk'")
    return rows[0][0] if rows else None


def test_sigterm_stops_the_producer_at_a_checkpoint_with_status_0(db_url, crawl_env, tmp_path):
    wiki, commons, truth = build_wiki(articles=1300, big_article_images=0)
    with FakeWikiServer(commons), FakeWikiServer(wiki, faults=Faults(api_delay=0.05)) as server:
        env = crawl_env(server.api_url)
        with env.workers(2):
            producer = start(env.env, tmp_path / "crawl.log", "crawl")
            wait_for(lambda: (walk_state(db_url) or {}).get("continue"), 120,
                     "the first checkpoint")
            assert terminate(producer) == 0, (tmp_path / "crawl.log").read_text()[-3000:]
            output = (tmp_path / "crawl.log").read_text()
            assert "stopped at a checkpoint" in output
            walked_before = int(re.search(r"walked (\d+) articles", output).group(1))
            assert 0 < walked_before < len(truth.articles)
            # At a batch boundary: the ledger holds exactly the batches the walk recorded.
            assert sql_rows(db_url, "SELECT count(*) FROM pages")[0][0] == walked_before
            assert walk_state(db_url)["done"] is False

            result = env.wikihash("crawl", timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        walked_after = int(re.search(r"walked (\d+) articles", result.stdout).group(1))
        assert walked_before + walked_after == len(truth.articles)
        assert_ledger_matches(db_url, truth, server)


def test_recrawl_service_waits_for_the_first_crawl_then_stops_on_sigterm(db_url, crawl_env,
                                                                         tmp_path):
    wiki, commons, truth = build_wiki(articles=40, big_article_images=0, generated=10)
    with FakeWikiServer(commons), FakeWikiServer(wiki) as server:
        env = crawl_env(server.api_url)
        log = tmp_path / "recrawl.log"
        service = start(env.env, log, "recrawl", "--every", "60")
        wait_for(lambda: "waiting for the first crawl" in log.read_text(), 60, "its first word")
        assert "walk not started" in log.read_text()
        assert service.poll() is None
        with env.workers(2):
            crawl = env.wikihash("crawl", timeout=240)
            assert crawl.returncode == 0, crawl.stderr[-3000:]
            # It polls every 10 s; a round applies the (empty) changes since the walk began.
            wait_for(lambda: "applied " in log.read_text(), 60, "its first round")
        assert terminate(service) == 0, log.read_text()[-3000:]
        assert_ledger_matches(db_url, truth, server)


def test_workers_without_a_node_name_get_distinct_ones(crawl_env):
    env = crawl_env("http://127.0.0.1:9/w/api.php")
    first = env.start("worker", "-c", "1", "--loglevel", "WARNING")
    second = env.start("worker", "-c", "1", "--loglevel", "WARNING")
    control = Celery(broker=env.env["WIKIHASH_BROKER_URL"]).control
    names: set[str] = set()
    deadline = time.monotonic() + 90
    while len(names) < 2 and time.monotonic() < deadline:
        assert first.poll() is None and second.poll() is None
        names = {name for reply in control.ping(timeout=1.0) or [] for name in reply}
    assert len(names) == 2, names
    assert all(re.fullmatch(r"worker-[0-9a-f]{6}@.+", name) for name in names), names
