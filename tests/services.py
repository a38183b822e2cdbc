"""Throwaway PostgreSQL and Redis servers on 127.0.0.1 that a test may stop, kill and restart.

The shared servers (127.0.0.1:5432 and :6379) are used by every other test and must never be
stopped; fault tests that take a service away start their own with these classes. Each one
listens on a free loopback port, keeps its files in a temporary directory, and is stopped by
the pid it started, never by name.

    with ThrowawayPostgres() as pg, ThrowawayRedis() as broker:
        url = pg.create_database("wikihash")
        pg.stop(); ...; pg.start()
        broker.restart()          # a new, empty Redis on the same port: every queue lost
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest
import redis

PG_BIN = Path(os.environ.get("WIKIHASH_PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"  # initdb refuses to run as root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_closed(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} still answers after {timeout} s")


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv


def require_postgres_binaries() -> None:
    """Skip the calling test where a throwaway cluster cannot be made."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"initdb not found in {PG_BIN}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            pytest.skip(f"running as root and there is no {RUN_AS} user to run initdb")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")


class ThrowawayPostgres:
    """Its own cluster (initdb into a temporary directory), on 127.0.0.1 only, trust auth."""

    def __init__(self) -> None:
        require_postgres_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="wikihash_pg_"))
        if os.geteuid() == 0:
            shutil.chown(self.root, RUN_AS, RUN_AS)
        self.data = self.root / "data"
        self.log = self.root / "postmaster.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U",
                                     "postgres", "--auth=trust", "--no-sync"]),
                       check=True, capture_output=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        argv = [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data}",
                "-c", "shared_buffers=32MB", "-c", "max_connections=40",
                "-c", "fsync=off", "-c", "autovacuum=off"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(_as_postgres(argv), stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postmaster exited; see {self.log}")
            try:
                psycopg2.connect(self.url(), connect_timeout=1).close()
                return
            except psycopg2.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"postmaster did not come up; see {self.log}")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when the server is restarted."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                                         "fast", "-w", "stop"]), capture_output=True)
            self.proc.wait(timeout=60)
        _wait_closed(self.port)

    def create_database(self, name: str) -> str:
        conn = psycopg2.connect(self.url())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        conn = psycopg2.connect(self.url(name))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION bktree")
        conn.close()
        return self.url(name)

    def __enter__(self) -> ThrowawayPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class ThrowawayRedis:
    """A redis-server without persistence on a free loopback port."""

    def __init__(self) -> None:
        require_redis_server()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not come up")

    def stop(self) -> None:
        """SIGKILL: nothing is saved, every queued message is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        _wait_closed(self.port)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> ThrowawayRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
