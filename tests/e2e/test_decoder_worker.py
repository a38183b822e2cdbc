"""The decoder processes of a real `wikihash worker`: one per pool process, gone with the worker.

The hash stage decodes in a long-lived decoder process per pool process (pipeline/decoder.py).
A crawl through the real worker must hash every file through it, and no decoder may outlive
the pool process that made it: not when the worker shuts down, not when a pool process is
killed with SIGKILL (Celery starts another, which makes its own decoder).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fakewiki import FakeWiki, FakeWikiServer
from wikis import generated_image

from tests.conftest import sql_rows
from tests.e2e.conftest import stop
from tests.processes import gone

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _decoders(worker: int) -> dict[int, int]:
    """decoder pid -> its pool process, for the worker's main process `worker`."""
    return {d: pool for pool in _children(worker) for d in _children(pool)
            if _comm(d) == "wikihash-decode"}


def _crawl(env, db_url: str) -> None:
    result = env.wikihash("crawl", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    states = {t: s for t, s in sql_rows(db_url, "SELECT title, state FROM files")}
    assert states and set(states.values()) == {"hashed"}, states


def test_a_workers_decoders_serve_the_crawl_and_end_with_it(db_url, crawl_env):
    wiki = FakeWiki()
    names = [f"Photo {i}.png" for i in range(6)]
    for i, name in enumerate(names):
        wiki.add_file(name, generated_image(200 + i))
    wiki.add_page("Photos", images=names)
    with FakeWikiServer(wiki) as server:
        env = crawl_env(server.api_url)
        worker = env.start("worker", "-c", "2", "--loglevel", "WARNING")
        try:
            _crawl(env, db_url)
            decoders = _decoders(worker.pid)
            assert decoders, "no decoder process under the worker's pool processes"
            assert len(decoders) <= 2  # at most one per pool process (one slot each in use)

            # A pool process killed outright: its decoder goes with it.
            victim, pool = next(iter(decoders.items()))
            os.kill(pool, signal.SIGKILL)
            assert gone(victim, within=20.0), f"decoder {victim} outlived its pool process {pool}"
        finally:
            stop(worker)
    assert all(gone(pid, within=20.0) for pid in decoders), decoders
