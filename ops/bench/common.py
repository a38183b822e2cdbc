"""What every benchmark under ops/bench shares: the project root on sys.path, the admin URL, a
scratch database, `python -m pipeline` processes, peak RSS, the machine line, and figures
printed side by side with a baseline.

    from common import ROOT, scratch_database, machine_line, side_by_side

Import it first: it puts the project root on sys.path once, so that `pipeline` and the fake
wiki (`tests.fakewiki`, whose public entry points are `FakeWiki`, `FakeWikiServer` and
`tests.fakewiki.enwiki.serve`) import without each benchmark editing sys.path itself.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

ADMIN_URL = os.environ.get("WIKIHASH_TEST_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
USER_AGENT = "wikihash-bench/0.1 (bench@example.org)"


# -- databases ----------------------------------------------------------------------------------

def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name`."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def admin(sql: str, dsn: str = ADMIN_URL) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def scratch_database(dsn: str = ADMIN_URL, *, migrate: bool = True,
                     keep: bool = False) -> Iterator[str]:
    """A new database with the bktree extension (and the ledger's migrations unless
    `migrate=False`), dropped on exit unless `keep`; yields its URL."""
    name = f"wikihash_bench_{uuid.uuid4().hex[:10]}"
    admin(f'CREATE DATABASE "{name}"', dsn)
    url = with_database(dsn, name)
    try:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS bktree")
        conn.close()
        if migrate:
            from pipeline import storage

            storage.migrate(url)
        yield url
    finally:
        if not keep:
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dsn)


def server_line(url: str) -> str:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
            cur.execute("SHOW shared_buffers")
            buffers = cur.fetchone()[0]
    finally:
        conn.close()
    return f"PostgreSQL {version}, shared_buffers {buffers}"


# -- the machine --------------------------------------------------------------------------------

def machine_line() -> str:
    """CPU model, cores, memory, Python: the line every benchmark report starts with."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 ** 2:.1f} GiB RAM"
    load = ""
    with contextlib.suppress(OSError):
        load = ", load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (f"CPU: {model}, nproc {os.cpu_count()}{memory}{load}; "
            f"Python {platform.python_version()}")


def side_by_side(rows: Sequence[tuple[str, object, object]], *,
                 headers: tuple[str, str, str] = ("figure", "baseline", "measured")) -> str:
    """A markdown table of (figure, baseline, measured) rows, with the ratio when numeric."""
    out = [f"| {headers[0]} | {headers[1]} | {headers[2]} | ratio |", "|---|---:|---:|---:|"]
    for label, base, value in rows:
        ratio = ""
        if isinstance(base, int | float) and isinstance(value, int | float) and base:
            ratio = f"{value / base:.2f}x"
        out.append(f"| {label} | {_fmt(base)} | {_fmt(value)} | {ratio} |")
    return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


# -- processes ----------------------------------------------------------------------------------

class Proc:
    """A `python -m pipeline ...` process whose output lines are kept with their arrival time,
    and whose peak RSS (with its children's, e.g. Celery's pool) is sampled."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        env = {**env, "PYTHONPATH": str(ROOT)}
        self.popen = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                                      cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      start_new_session=True)
        self.lines: list[tuple[float, str, str]] = []  # (time, stream, line)
        self.peak_kb: dict[int, int] = {}  # pid -> VmHWM in kB
        self._threads = [threading.Thread(target=self._read, args=(s, n), daemon=True)
                         for s, n in ((self.popen.stdout, "out"), (self.popen.stderr, "err"))]
        self._threads.append(threading.Thread(target=self._sample, daemon=True))
        for t in self._threads:
            t.start()

    def _read(self, stream, name: str) -> None:
        for line in stream:
            self.lines.append((time.perf_counter(), name, line.rstrip("\n")))

    def _sample(self) -> None:
        while self.popen.poll() is None:
            for pid in [self.popen.pid, *children(self.popen.pid)]:
                kb = peak_rss_kb(pid)
                if kb:
                    self.peak_kb[pid] = max(kb, self.peak_kb.get(pid, 0))
            time.sleep(0.5)

    def peak_mb(self) -> dict[str, float]:
        """Peak RSS of the process itself ("main") and of its largest child ("child")."""
        main = self.peak_kb.get(self.popen.pid, 0)
        kids = [kb for pid, kb in self.peak_kb.items() if pid != self.popen.pid]
        return {"main": main / 1024, "child": max(kids, default=0) / 1024}

    def first(self, pattern: str) -> float | None:
        for when, _, line in list(self.lines):
            if re.search(pattern, line):
                return when
        return None

    def wait_for(self, pattern: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            when = self.first(pattern)
            if when is not None:
                return when
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        tail = "\n".join(line for _, _, line in self.lines[-30:])
        raise RuntimeError(f"no line matching {pattern!r} within {timeout} s:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        for t in self._threads:
            t.join(timeout=2)


LEDGER_TABLES = ("pages", "files", "usages")
Keys = tuple[list[tuple[str, str, str]], list[tuple[str, str]]]


def drop_keys(cur, tables: Sequence[str] = LEDGER_TABLES) -> Keys:
    """Before a bulk load: drop every index and key of `tables` (foreign keys first) and turn
    off the user triggers of files and pages (the counters' statement triggers); return the
    definitions for `rebuild_keys`."""
    cur.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
                " AND contype IN ('p', 'u', 'f') AND conrelid::regclass::text = ANY(%s)"
                " ORDER BY contype = 'f' DESC, conname", (list(tables),))
    constraints = cur.fetchall()
    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                " AND tablename = ANY(%s) AND indexname NOT IN (SELECT conname FROM"
                " pg_constraint) ORDER BY indexname", (list(tables),))
    indexes = cur.fetchall()
    for table, name, _ in constraints:
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cur.execute(f'DROP INDEX "{name}"')
    for table in ("files", "pages"):
        cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    return constraints, indexes


def rebuild_keys(cur, keys: Keys, timings: dict | None = None) -> None:
    """After the load: the keys, then the references, then each index (its seconds in
    `timings` as build_NAME_s, when given); the triggers on again."""
    constraints, indexes = keys
    for table, name, definition in reversed(constraints):
        cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for name, definition in indexes:
        began = time.perf_counter()
        cur.execute(definition)
        if timings is not None:
            timings[f"build_{name}_s"] = time.perf_counter() - began
    for table in ("files", "pages"):
        cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def recount_ledger(cur) -> None:
    """The counters (migrations/005) the disabled triggers did not keep, counted once."""
    cur.execute("TRUNCATE ledger_counts")
    cur.execute("INSERT INTO ledger_counts (name, n, at) SELECT 'articles', count(*),"
                " '-infinity' FROM pages")
    cur.execute("INSERT INTO ledger_counts (name, n, at) SELECT state, count(*),"
                " '-infinity' FROM files GROUP BY state")


def children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def peak_rss_kb(pid: int) -> int:
    """The process's high-water RSS (VmHWM) in kB; 0 when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private, non-persistent redis-server on a free 127.0.0.1 port; yields its URL.
    Stopped by the pid it started."""
    import socket
    import tempfile

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="wikihash_bench_redis_")
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
