"""Fixtures for end-to-end runs: the project's commands as real processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from pipeline import storage
from tests.conftest import REDIS_URL

E2E_REDIS_DB = 13  # flushed by these tests; nothing else may live there


@pytest.fixture(scope="session")
def broker_base() -> Iterator[str]:
    """A Redis of this test session's own, so that parallel runs cannot take each other's tasks.

    Falls back to the shared Redis (WIKIHASH_TEST_REDIS_URL) when redis-server is not on PATH.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        yield REDIS_URL
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@dataclass
class CrawlEnv:
    env: dict[str, str]
    procs: list[subprocess.Popen]

    def wikihash(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, text=True)
        self.procs.append(proc)
        return proc

    @contextlib.contextmanager
    def workers(self, concurrency: int = 2, queues: str = "fetch,hash,write") -> Iterator[
            subprocess.Popen]:
        proc = self.start("worker", "-c", str(concurrency), "-Q", queues,
                          "--loglevel", "WARNING")
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def environment(database_url: str, broker_url: str, api_url: str, **extra: str) -> CrawlEnv:
    """The crawl's settings for tests: the given services, politeness lifted, short timeouts."""
    env = dict(os.environ)
    env.update({
        "WIKIHASH_DATABASE_URL": database_url,
        "WIKIHASH_BROKER_URL": broker_url,
        "WIKIHASH_API_URL": api_url,
        "WIKIHASH_USER_AGENT": "wikihash-test/0.1 (test@example.org)",
        "WIKIHASH_MAX_DOWNLOADS": "4",
        "WIKIHASH_MAX_MBITS": "1000",
        "WIKIHASH_FETCH_TIMEOUT": "10",
        "WIKIHASH_REQUEUE_AFTER": "20",
        "WIKIHASH_PYTHON": sys.executable,  # ops/up and ops/setup: this environment, no .venv
    })
    env.update(extra)
    return CrawlEnv(env, [])


@pytest.fixture
def crawl_env(db_url, broker_base):
    storage.migrate(db_url)
    broker = f"{broker_base}/{E2E_REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    made: list[CrawlEnv] = []

    def make(api_url: str, **extra: str) -> CrawlEnv:
        crawl = environment(db_url, broker, api_url, **extra)
        made.append(crawl)
        return crawl

    yield make
    for crawl in made:
        for proc in crawl.procs:
            stop(proc, signal.SIGKILL)
    redis.Redis.from_url(broker).flushdb()
