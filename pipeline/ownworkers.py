"""Workers of a command's own, for the duration of one `crawl` or `recrawl --workers N`.

So that a cron line needs nothing else running: the command starts `wikihash worker -c N` as a
child process (its output in a log file, or discarded), and stops it when it ends, however it
ends. The ledger makes stopping safe: work not finished stays pending for the next run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def running(count: int, log: Path | None = None) -> Iterator[subprocess.Popen | None]:
    """`count` worker processes (none when 0) while the block runs."""
    if count <= 0:
        yield None
        return
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker", "-c", str(count), "--loglevel", "WARNING",
         "--hostname", f"own{os.getpid()}@%h"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if log:
            out.close()
