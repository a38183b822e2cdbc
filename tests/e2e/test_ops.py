"""The one command (`ops/up --until-done`) and Flower behind its password."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import requests
from fakewiki import FakeWikiServer
from test_crawl import assert_ledger_matches
from wikis import build_wiki

from tests.conftest import ROOT, sql_rows

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ops_up_until_done_crawls_everything_then_nothing(db_url, crawl_env):
    wiki, commons, truth = build_wiki(articles=150, big_article_images=0)
    with FakeWikiServer(commons) as shared, FakeWikiServer(wiki) as server:
        env = crawl_env(server.api_url)
        up = [sys.executable, str(ROOT / "ops" / "up"), "--until-done", "--workers", "2",
              "--no-services", "--no-flower"]
        first = subprocess.run(up, env=env.env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "the crawl is complete" in first.stderr
        assert_ledger_matches(db_url, truth, server)
        # Nothing left running: the workers it started are gone.
        assert "stop worker1" in first.stderr and "stop worker2" in first.stderr

        server.reset_logs()
        shared.reset_logs()
        second = subprocess.run(up, env=env.env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert not server.file_hits and not shared.file_hits
        assert not [r for r in server.requests if r.kind == "prop:imageinfo"]


def test_flower_requires_a_password(crawl_env):
    env = crawl_env("http://127.0.0.1:9/w/api.php")
    refused = env.wikihash("flower", timeout=60)
    assert refused.returncode != 0
    assert "WIKIHASH_FLOWER_AUTH" in refused.stderr

    port = free_port()
    env.env["WIKIHASH_FLOWER_AUTH"] = "admin:correct-horse"
    flower = env.start("flower", "--port", str(port))
    url = f"http://127.0.0.1:{port}/"
    session = requests.Session()
    session.trust_env = False
    deadline = time.monotonic() + 60
    while True:
        try:
            anonymous = session.get(url, timeout=5)
            break
        except requests.ConnectionError:
            assert flower.poll() is None, flower.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "Flower did not start"
            time.sleep(0.5)
    assert anonymous.status_code == 401
    assert session.get(url, auth=("admin", "wrong"), timeout=5).status_code == 401
    assert session.get(url, auth=("admin", "correct-horse"), timeout=5).status_code == 200
    metrics = session.get(url + "metrics", auth=("admin", "correct-horse"), timeout=5)
    assert metrics.status_code == 200 and "flower_" in metrics.text


def test_status_reports_progress(db_url, crawl_env):
    env = crawl_env("http://127.0.0.1:9/w/api.php")
    sql_rows(db_url, "INSERT INTO files (title, sha1, state) VALUES ('A.png', 'a', 'pending'),"
                        " ('B.png', 'b', 'missing') RETURNING 1")
    result = env.wikihash("status", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert (counts["files"], counts["pending"], counts["missing"]) == (2, 1, 1)
    text = env.wikihash("status", timeout=60)
    assert "walk: not started" in text.stdout and "pending 1" in text.stdout
