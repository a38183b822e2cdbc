"""The one command (`ops/up --until-done`) and Flower behind its password."""

from __future__ import annotations

import json
import socket
import subprocess
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


def test_ops_up_until_done_crawls_everything_then_nothing(db_url, crawl_env, tmp_path):
    wiki, commons, truth = build_wiki(articles=150, big_article_images=0)
    with FakeWikiServer(commons) as shared, FakeWikiServer(wiki) as server:
        env = crawl_env(server.api_url)
        up = [str(ROOT / "ops" / "up"), "--until-done", "--workers", "2", "--logs", str(tmp_path),
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


def _up(env: dict, tmp_path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "ops" / "up"), "--until-done", "--workers", "1",
                           "--logs", str(tmp_path), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_ops_up_names_a_configured_service_that_is_absent_in_seconds(crawl_env, tmp_path):
    """It checked 127.0.0.1:6379, printed "Redis answers", and retried without end."""
    env = crawl_env("http://127.0.0.1:9/w/api.php").env
    port = free_port()
    for broker, expected in (
            ("redis://no-such-host.invalid:6380/0", "WIKIHASH_BROKER_URL=redis://no-such-host"
             ".invalid:6380/0: nothing answers at no-such-host.invalid:6380, which is not on "
             "this machine: start it there, or change WIKIHASH_BROKER_URL"),
            (f"redis://127.0.0.1:{port}/0", f"nothing answers at 127.0.0.1:{port} "
             "(and --no-services was given)")):
        started = time.monotonic()
        result = _up({**env, "WIKIHASH_BROKER_URL": broker}, tmp_path, "--no-services")
        assert time.monotonic() - started < 30
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].endswith(expected), result.stderr
        assert "Redis answers" not in result.stderr


def test_ops_up_bad_setting_is_one_line(crawl_env, tmp_path):
    env = crawl_env("http://127.0.0.1:9/w/api.php").env
    result = _up({**env, "WIKIHASH_THUMB_WIDTH": "abc"}, tmp_path, "--no-services")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ops/up: WIKIHASH_THUMB_WIDTH='abc': invalid literal for int() with base 10: 'abc'"]


def test_ops_up_stops_restarting_a_producer_that_keeps_failing(db_url, crawl_env, tmp_path):
    """An unreachable wiki: the producer was restarted every 5 s for ever."""
    port = free_port()  # nothing listens there
    env = crawl_env(f"http://127.0.0.1:{port}/w/api.php").env
    result = _up(env, tmp_path, "--no-services", timeout=180)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ops/up: the producer failed 3 times in a row"), result.stderr
    assert f"cannot reach the wiki at 127.0.0.1:{port}" in last and "connection refused" in last
    assert "Flower: not started: WIKIHASH_FLOWER_AUTH is not set" in result.stderr
    assert "stop worker1" in result.stderr
    # The terminal shows ops/up's own lines; the processes' output is in the files it named.
    assert f"the processes' output goes to {tmp_path}/*.log" in result.stderr
    assert "celery" not in result.stderr.lower()
    assert (tmp_path / "producer.log").read_text().count("cannot reach the wiki") >= 3
