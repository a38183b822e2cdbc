"""Nothing hangs: commands that would wait on something absent say so and stop, in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from fakewiki import FakeWiki, FakeWikiServer
from wikis import generated_image

from tests.conftest import ROOT, sql_rows

pytestmark = pytest.mark.slow


def small_wiki() -> FakeWiki:
    wiki = FakeWiki()
    for i in range(8):
        wiki.add_file(f"Pic {i}.png", generated_image(700 + i))
        wiki.add_page(f"Article {i}", images=[f"Pic {i}.png"])
    return wiki


def test_crawl_and_recrawl_without_a_worker_stop_with_the_command_to_run(db_url, crawl_env,
                                                                        tmp_path):
    """They waited forever, printing `pending 1 (0.0 files/s)`."""
    with FakeWikiServer(small_wiki()) as server:
        env = crawl_env(server.api_url)
        started = time.monotonic()
        result = env.wikihash("crawl", "--limit", "5", timeout=90)
        assert time.monotonic() - started < 60
        assert result.returncode == 1, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: 5 files pending and no worker consumes the fetch, hash,"
                               " write queues at redis://127.0.0.1:"), last
        assert "`wikihash worker`" in last
        # Nothing lost: the walk is in the ledger, the files pending for when a worker runs.
        assert sql_rows(db_url, "SELECT count(*) FROM files WHERE state = 'pending'") == [(5,)]

        assert env.wikihash("crawl", "--no-wait", timeout=90).returncode == 0
        started = time.monotonic()
        result = env.wikihash("recrawl", timeout=90)
        assert time.monotonic() - started < 60
        assert result.returncode == 1
        assert "no worker consumes" in result.stderr.strip().splitlines()[-1]

        # The README's cron recipe: cron's bare environment, the settings in an env file, and
        # workers of the command's own; it ends once the files are hashed, and stops them.
        settings = tmp_path / "wikihash.env"
        settings.write_text("".join(f"{k}={v}\n" for k, v in env.env.items()
                                    if k.startswith("WIKIHASH_")))
        cron = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pipeline", "--env-file", str(settings),
                                 "recrawl", "--workers", "2"], env=cron, cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert time.monotonic() - started < 90
        assert "nothing pending" in result.stdout
        assert sql_rows(db_url, "SELECT count(*) FROM files WHERE state = 'hashed'") == [(8,)]


def test_files_lists_what_did_not_work_and_retry_tries_it_again(db_url, crawl_env):
    wiki = small_wiki()
    wiki.add_page("Red", images=["Nowhere.png"])
    with FakeWikiServer(wiki) as server:
        env = crawl_env(server.api_url)
        with env.workers():
            assert env.wikihash("crawl", timeout=120).returncode == 0
        # Two downloads that failed for a reason that has passed since.
        sql_rows(db_url, "UPDATE files SET state = 'failed', dhash = NULL, attempts = 3,"
                         " reason = 'HTTP 503 for the thumbnail' WHERE title IN"
                         " ('Pic 1.png', 'Pic 2.png') RETURNING 1")
        listed = env.wikihash("files", "--state", "failed", timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines() == [
            "2 files failed",
            "  Pic 1.png: HTTP 503 for the thumbnail (3 attempts, 1 article)",
            "  Pic 2.png: HTTP 503 for the thumbnail (3 attempts, 1 article)",
            "try them again with: wikihash retry --failed"]
        missing = json.loads(env.wikihash("files", "--state", "missing", "--json").stdout)
        assert missing["total"] == 1 and missing["files"][0]["title"] == "Nowhere.png"
        assert missing["files"][0]["reason"] == "no such file"

        retried = env.wikihash("retry", "--failed", "--workers", "1", timeout=120)
        assert retried.returncode == 0, retried.stderr[-2000:]
        assert retried.stdout.startswith("2 failed files to try again")
    assert sql_rows(db_url, "SELECT title, attempts FROM files WHERE title IN"
                            " ('Pic 1.png', 'Pic 2.png') AND state = 'hashed'"
                            " ORDER BY title") == [("Pic 1.png", 4), ("Pic 2.png", 4)]
