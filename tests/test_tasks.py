"""The task base class and the retry policy (workers/base.py, workers/policy.py), with real
worker processes (`wikihash worker`) on a Redis of their own, real PostgreSQL and real HTTP.

Tasks are sent by name, as the producer sends them, straight to the stage under test.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakewiki import FakeWiki, FakeWikiServer, Faults
from PIL import Image

from pipeline import celeryapp, config, ledger, storage
from pipeline.wiki import FileInfo
from tests.conftest import sql_rows
from tests.services import ThrowawayRedis
from tests.wikis import generated_image
from workers import policy
from workers.policy import Action

pytestmark = pytest.mark.slow


# -- the policy, pure ------------------------------------------------------------------------

def test_the_policy_answers_what_happens_on_each_error():
    from pipeline.errors import Corrupt, FetchTimeout, ForbiddenURL, HTTPStatusError, StorageError

    assert policy.decide_fetch(HTTPStatusError(404, "u"), 1).action is Action.RECORD
    assert policy.decide_fetch(ForbiddenURL("no"), 1).action is Action.RECORD
    assert policy.decide_fetch(Corrupt("bad"), 1).reason == "download: bad"
    retry = policy.decide_fetch(FetchTimeout("slow"), 1)
    assert retry.action is Action.RETRY and 1.6 <= retry.countdown <= 2.4
    last = policy.decide_fetch(FetchTimeout("slow"), policy.MAX_ATTEMPTS)
    assert last.action is Action.RECORD and last.reason.endswith(
        f"(after {policy.MAX_ATTEMPTS} attempts)")
    waited = policy.decide_fetch(HTTPStatusError(429, "u", retry_after=30.0), 1)
    assert waited.action is Action.RETRY and waited.countdown == 30.0
    assert policy.decide_lost(3, "died").action is Action.ISOLATE
    assert policy.decide_lost(1, "died") == policy.Decision(Action.RECORD, reason="died")
    away = policy.decide_write(StorageError("down", retryable=True), 40, 100)
    assert away.action is Action.RETRY and away.countdown <= policy.WRITE_MAX_BACKOFF
    assert policy.decide_write(StorageError("bad", retryable=False), 1, 2).action \
        is Action.ISOLATE
    assert policy.decide_write(StorageError("bad", retryable=False), 1, 1).action \
        is Action.RECORD


# -- real workers ----------------------------------------------------------------------------

def slow_png() -> bytes:
    """A real picture that takes seconds to hash: an SVG of one 10,000-segment path (~2-4 s to
    render here; the worker's limits are what is tested, not this file)."""
    rnd = random.Random(1)
    path = "M 0 0 " + " ".join(f"L {rnd.randint(0, 1000)} {rnd.randint(0, 1000)}"
                               for _ in range(10_000))
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="1000">'
            f'<path d="{path}" stroke="black" stroke-width="9" fill="red"'
            ' fill-rule="evenodd"/></svg>').encode()


def huge_png() -> bytes:
    """49 Mpx (under the pixel cap) in 160 KB: hundreds of MB once decoded."""
    image = Image.linear_gradient("L").resize((7000, 7000)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def quick_png(seed: int) -> bytes:
    return generated_image(seed)


class Workers:
    """`wikihash worker` as a process, with a ledger of files and an app to send tasks."""

    def __init__(self, db_url: str, broker_url: str, log: Path, api_url: str = "") -> None:
        env = {"WIKIHASH_DATABASE_URL": db_url, "WIKIHASH_BROKER_URL": broker_url,
               "WIKIHASH_USER_AGENT": "wikihash-test/0.1 (test@example.org)",
               "WIKIHASH_MAX_MBITS": "1000", "WIKIHASH_FETCH_TIMEOUT": "10"}
        if api_url:
            env["WIKIHASH_API_URL"] = api_url
        self.env = {**os.environ, **env}
        self.db_url = db_url
        self.log = log
        self.app = celeryapp.create_app(config.load(env))
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "worker", "--loglevel", "INFO", *args],
                env=self.env, stdout=out, stderr=out, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def children(self) -> list[int]:
        assert self.proc is not None
        found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                               capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found]

    def add_files(self, files: dict[str, bytes]) -> list[dict]:
        """Pending files in the ledger; returns hash_batch items for them."""
        conn = storage.connect(self.db_url)
        with storage.transaction(conn):
            ledger.insert_files(conn, [
                FileInfo(name, "pending", sha1=f"sha1-{name}", url=f"http://127.0.0.1/{name}",
                         media_type="BITMAP") for name in files])
        conn.close()
        return [{"sha1": f"sha1-{name}", "title": name, "source": "original",
                 "data": base64.b64encode(data).decode("ascii")} for name, data in files.items()]

    def states(self) -> dict[str, tuple[str, str | None]]:
        return {title: (state, reason) for title, state, reason in
                sql_rows(self.db_url, "SELECT title, state, reason FROM files")}

    def wait_settled(self, timeout: float = 120) -> dict[str, tuple[str, str | None]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.states()
            if states and all(state != "pending" for state, _ in states.values()):
                return states
            time.sleep(0.3)
        raise AssertionError(f"still pending after {timeout} s: {self.states()}\n"
                             + self.log.read_text()[-3000:])

    def wait_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the worker's log")


@pytest.fixture
def broker() -> Iterator[str]:
    with ThrowawayRedis() as server:
        yield server.url


@pytest.fixture
def workers(db_url, broker, tmp_path) -> Iterator[Workers]:
    storage.migrate(db_url)
    running = Workers(db_url, broker, tmp_path / "worker.log")
    yield running
    running.stop()


def test_a_redelivered_batch_goes_on_one_file_per_task(workers):
    """The worker died under a batch (its child SIGKILLed): the batch comes back redelivered,
    is split, and a file alone when its worker dies again is recorded, not retried forever."""
    workers.start("-Q", "hash,write", "-c", "1")
    items = workers.add_files({"Slow.svg": slow_png(), "Quick.png": quick_png(2)})
    workers.app.send_task(celeryapp.HASH_BATCH, args=[items])
    workers.wait_log("wikihash.hash_batch[")  # received
    time.sleep(1.0)  # into the slow file's decoding
    for child in workers.children():
        os.kill(child, signal.SIGKILL)
    assert {t: s for t, (s, _) in workers.wait_settled().items()} == {
        "Slow.svg": "hashed", "Quick.png": "hashed"}
    assert "WorkerLostError" in workers.log.read_text() or "exited with" in \
        workers.log.read_text()


def test_a_poison_file_alone_is_recorded_when_its_worker_dies(workers):
    workers.start("-Q", "hash,write", "-c", "1")
    items = workers.add_files({"Poison.svg": slow_png()})
    workers.app.send_task(celeryapp.HASH_BATCH, args=[items])
    workers.wait_log("wikihash.hash_batch[")
    time.sleep(1.0)
    for child in workers.children():
        os.kill(child, signal.SIGKILL)
    assert workers.wait_settled() == {"Poison.svg": ("failed", "the worker died hashing it")}


def test_a_worker_child_over_its_memory_ceiling_records_the_file(workers):
    """Issue 18: one 49 Mpx PNG costs hundreds of MB in a hash child; with the ceiling it is
    recorded as too large and the rest of its batch is hashed."""
    workers.start("-Q", "hash,write", "-c", "1", "--max-memory", "400")
    items = workers.add_files({"Huge.png": huge_png(), "Quick.png": quick_png(3)})
    workers.app.send_task(celeryapp.HASH_BATCH, args=[items])
    states = workers.wait_settled()
    assert states["Quick.png"] == ("hashed", None)
    assert states["Huge.png"][0] == "failed"
    assert states["Huge.png"][1].startswith("too large to decode")


def test_a_429_with_retry_after_is_waited_out(db_url, broker, tmp_path):
    """A 429 on the thumbnail: nothing is asked of that server (not even the original) until
    Retry-After has passed; then the file is hashed."""
    storage.migrate(db_url)
    wiki = FakeWiki()
    wiki.add_file("Held.png", quick_png(4))
    wiki.add_page("Article", images=["Held.png"])
    faults = Faults(file_status_429=1, retry_after=4)
    with FakeWikiServer(wiki, faults=faults) as server:
        running = Workers(db_url, broker, tmp_path / "worker.log", api_url=server.api_url)
        from pipeline.wiki import Wiki

        info = Wiki(server.api_url, "wikihash-test/0.1 (test@example.org)").file_info(
            ["Held.png"], 120)
        conn = storage.connect(db_url)
        with storage.transaction(conn):
            ledger.insert_files(conn, info)
            jobs = ledger.claim_jobs(conn, limit=10, stale_after=600)
        conn.close()
        assert jobs[0].thumb_url, "the fake wiki offers a thumbnail"
        running.start("-c", "2")
        try:
            sent = time.monotonic()
            celeryapp.send_fetch(running.app, [job.to_message() for job in jobs])
            states = running.wait_settled()
            took = time.monotonic() - sent
        finally:
            running.stop()
        requests = list(server.file_requests)
    assert states == {"Held.png": ("hashed", None)}
    assert [status for _, status in requests] == [429, 200]
    assert requests[0][0] == requests[1][0]  # the thumbnail again, not the original
    assert took >= 4 - 0.5


def test_a_batch_killed_at_the_hard_time_limit_is_split_and_its_slow_file_recorded(
        db_url, broker, tmp_path):
    """Issue 18 item 6: a server that drips one file keeps its fetch task past the hard time
    limit (3 s here); the child is killed, the batch goes on one file per task, the quick file
    is hashed and the slow one, killed again alone, is recorded with the limit as its reason.
    Nothing stays pending and nothing is left queued to go round again."""
    import redis

    from tests.httpserver import Reply, Routes, running

    storage.migrate(db_url)
    routes = {"/Quick.png": Reply(headers={"Content-Type": "image/png"}, body=quick_png(5)),
              "/Slow.png": Reply(headers={"Content-Type": "image/png"}, body=quick_png(6),
                                 drip=0.05)}
    with running(Routes, routes) as host:
        conn = storage.connect(db_url)
        with storage.transaction(conn):
            ledger.insert_files(conn, [
                FileInfo(name, "pending", sha1=f"sha1-{name}", url=f"http://{host}/{name}",
                         media_type="BITMAP") for name in ("Slow.png", "Quick.png")])
            jobs = ledger.claim_jobs(conn, limit=10, stale_after=600)
        conn.close()
        workers = Workers(db_url, broker, tmp_path / "worker.log")
        workers.env["WIKIHASH_TIME_LIMIT"] = "3"
        workers.start("-c", "1")
        try:
            started = time.monotonic()
            celeryapp.send_fetch(workers.app, sorted((job.to_message() for job in jobs),
                                                     key=lambda job: job["title"] != "Slow.png"))
            states = workers.wait_settled(timeout=45)
            took = time.monotonic() - started
            time.sleep(1.0)  # anything re-sent by the split would be queued by now
            client = redis.Redis.from_url(broker)
            queued = {name: client.llen(name) for name in celeryapp.QUEUES}
        finally:
            workers.stop()
    assert states == {"Quick.png": ("hashed", None),
                      "Slow.png": ("failed", "killed at the hard time limit (3 s)")}, states
    assert queued == {"fetch": 0, "hash": 0, "write": 0}
    assert took < 45
    assert "Hard time limit (3" in workers.log.read_text()
