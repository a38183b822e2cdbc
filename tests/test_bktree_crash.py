"""Crash safety: kill -9 a throwaway PostgreSQL mid-insert; after recovery the bktree
indexes answer exactly what a sequential scan answers.

The test never touches the main server: it runs `initdb` into a temporary directory, starts
its own postmaster on a free port with its socket in that directory, and kills only the
process it started.  It skips when initdb is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from services import PG_BIN, RUN_AS, _as_postgres, require_postgres_binaries
from services import free_port as _free_port


class Cluster:
    """A throwaway cluster: initdb, start, kill -9, restart."""

    def __init__(self, root: Path):
        self.data = root / "data"
        self.port = _free_port()
        self.log = root / "postmaster.log"
        self.proc: subprocess.Popen | None = None
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        args = [
            str(PG_BIN / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.data}",
            "-c",
            "shared_buffers=64MB",
            "-c",
            "max_connections=20",
            "-c",
            "fsync=on",
            "-c",
            "autovacuum=off",
        ]
        for _ in range(50):
            self.proc = subprocess.Popen(_as_postgres(args), stdout=log, stderr=log)
            for _ in range(100):
                if self.proc.poll() is not None:
                    break  # failed to start (old backends still hold the port): retry
                try:
                    psycopg2.connect(self.url, connect_timeout=1).close()
                    return
                except psycopg2.OperationalError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"postmaster did not come up; see {self.log}")
            time.sleep(0.2)
        raise RuntimeError(f"postmaster did not restart; see {self.log}")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def crash(self) -> None:
        """kill -9 our postmaster (only ours, by pid) and wait until its backends exit."""
        pid = self.postmaster_pid()
        os.kill(pid, 9)
        assert self.proc is not None
        self.proc.wait(timeout=30)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.2)  # a backend still holds the port
            except OSError:
                return

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                _as_postgres(
                    [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
            )
            self.proc.wait(timeout=30)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    require_postgres_binaries()
    root = Path(tempfile.mkdtemp(prefix="bktree_crash_"))
    if os.geteuid() == 0:
        shutil.chown(root, RUN_AS, RUN_AS)
    c = Cluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _bulk_insert(url: str, stop: threading.Event, batches: list[int]) -> None:
    """Insert committed batches of near-duplicate and random hashes until the server dies."""
    try:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        while not stop.is_set():
            cur.execute(
                "INSERT INTO hashes (hash)"
                " SELECT CASE WHEN i % 3 = 0 THEN (random() * 2^62)::int8 * 2 - (2^62)::int8"
                "  ELSE 1234567890123 # (1::int8 << (i % 64)) END"
                " FROM generate_series(1, 5000) i"
            )
            batches.append(5000)
    except psycopg2.Error:
        pass  # the crash


def _check_agrees(url: str) -> int:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM hashes")
    total = cur.fetchone()[0]
    points = [1234567890123, 0, -1]
    cur.execute("SELECT hash FROM hashes TABLESAMPLE SYSTEM (1) LIMIT 5")
    points += [row[0] for row in cur.fetchall()]
    for q in points:
        for r in (0, 1, 3, 6, 64):
            counts = []
            for plan in ("seq", "spgist", "gin"):
                cur.execute("RESET ALL")
                if plan == "seq":
                    cur.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
                else:
                    cur.execute("SET enable_seqscan = off")
                    other = "hashes_gin" if plan == "spgist" else "hashes_spgist"
                    cur.execute("BEGIN")
                    cur.execute(f"DROP INDEX {other}")  # rolled back below
                cur.execute("SELECT count(*) FROM hashes WHERE hash <@ (%s, %s)", (q, r))
                counts.append(cur.fetchone()[0])
                if plan != "seq":
                    cur.execute("ROLLBACK")
            assert counts[0] == counts[1] == counts[2], (q, r, counts)
        cur.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        cur.execute("SELECT hash <-> %s FROM hashes ORDER BY hash <-> %s LIMIT 20", (q, q))
        knn = [row[0] for row in cur.fetchall()]
        cur.execute("RESET ALL")
        cur.execute(
            "SET enable_indexscan = off; SET enable_bitmapscan = off;"
            " SELECT hash <-> %s FROM hashes ORDER BY 1 LIMIT 20",
            (q,),
        )
        assert knn == [row[0] for row in cur.fetchall()], q
    conn.close()
    return total


def test_kill_9_mid_insert(cluster: Cluster) -> None:
    conn = psycopg2.connect(cluster.url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION bktree")
        cur.execute("CREATE TABLE hashes (id serial, hash int8)")
        cur.execute("CREATE INDEX hashes_spgist ON hashes USING spgist (hash bktree_ops)")
        cur.execute("CREATE INDEX hashes_gin ON hashes USING gin (hash bktree_mih_ops)")
    conn.close()

    for _round in range(2):
        stop = threading.Event()
        batches: list[int] = []
        workers = [
            threading.Thread(target=_bulk_insert, args=(cluster.url, stop, batches))
            for _ in range(2)
        ]
        for w in workers:
            w.start()
        deadline = time.time() + 20
        while len(batches) < 6 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # mid-batch
        cluster.crash()
        stop.set()
        for w in workers:
            w.join(timeout=30)
        cluster.start()
        committed = sum(batches)
        assert committed > 0, "the inserts never got going before the crash"
        total = _check_agrees(cluster.url)
        assert total >= committed  # every acknowledged batch survived
        assert total % 5000 == 0  # and no half batch
