"""Decoding under a time and memory limit: every decode of untrusted bytes goes through here.

`pipeline.imaging` bounds what it can see before decoding (bytes, declared pixels, SVG trees),
but not the time or memory spent inside one C call: a progressive JPEG with thousands of scans,
an SVG with a megabyte-long path. `run(func, *args)` runs `func` in a forked child process
(`os.fork`: the child has the caller's modules loaded and the bytes already in memory, so the
cost is ~a few ms; multiprocessing is not used because a Celery worker's pool processes are
daemonic and may not start children through it) with

- `RLIMIT_AS` at the child's size when it starts plus `memory` bytes (`MemoryError` inside, or
  death, past it),
- `RLIMIT_CPU` at `seconds` (SIGXCPU, then SIGKILL a second later),
- a wall-clock deadline in the parent (`seconds` x 2 + 2, for a loaded machine): the child is
  killed past it,

and at most `SLOTS` of them at once per process (a caller waits up to `queue_wait` seconds for
a slot, else `Busy`). Every way out is a value, an `ImageRejected` with a named reason
(`TooLarge("decoding took longer than 20 s")`, "... ran out of memory ..."), or `Busy`.

`hash_bytes` and `query_variants` are the limited forms of `imaging.hash_bytes` (crawl: CLI
`hash`, the worker) and `variants.query_variants` (search: CLI and web).
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline import imaging, variants
from pipeline.errors import Corrupt, ImageRejected, TooLarge, WikihashError

__all__ = ["DECODE_MEMORY", "DECODE_SECONDS", "SLOTS", "Busy", "hash_bytes", "query_variants",
           "run"]

DECODE_SECONDS = 20.0  # CPU seconds for one decode; the slowest photo of the corpus takes < 1
DECODE_MEMORY = 768 * 1024 * 1024  # bytes of address space beyond the child's size at start
SLOTS = max(1, os.cpu_count() or 1)  # decodes at once in one process (they are CPU bound)
QUEUE_WAIT = 10.0  # seconds a caller waits for a free slot

_slots = threading.BoundedSemaphore(SLOTS)


class Busy(WikihashError):
    """Every decode slot stayed taken for the whole wait: try again later."""

    retryable = True
    retry_after = 2.0  # seconds, for a 503's Retry-After


def _child(write_fd: int, func: Callable, args: tuple, memory: int, seconds: float) -> None:
    """In the forked child: limits first, then `func`; one pickled ("ok"|"error", value)."""
    _lower(resource.RLIMIT_AS, _address_space() + memory)
    cpu = max(1, int(seconds + 0.999))
    _lower(resource.RLIMIT_CPU, cpu, cpu + 1)
    try:
        outcome = ("ok", func(*args))
    except ImageRejected as exc:
        outcome = ("error", exc)
    except MemoryError:
        outcome = ("error", TooLarge(f"decoding ran out of memory ({memory >> 20} MB cap)"))
    except Exception as exc:  # noqa: BLE001 - the boundary of the child: reported, not raised
        outcome = ("error", Corrupt(f"cannot decode: {type(exc).__name__}"))
    payload = pickle.dumps(outcome)
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(payload)


def _lower(kind: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above one already in force (e.g. a Celery child's RLIMIT_AS)."""
    _, current = resource.getrlimit(kind)
    hard = soft if hard is None else hard
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def _address_space() -> int:
    """Bytes of address space this process maps now (VmSize)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def run(func: Callable[..., Any], *args: Any, seconds: float = DECODE_SECONDS,
        memory: int = DECODE_MEMORY, queue_wait: float = QUEUE_WAIT) -> Any:
    """`func(*args)` in a limited child process; its value, or what it raised.

    `func` returns a picklable value (it comes back through a pipe).
    Raises `ImageRejected` (the child's own, or a named limit) or `Busy`.
    """
    if not _slots.acquire(timeout=queue_wait):
        raise Busy(f"all {SLOTS} decode slots busy for {queue_wait:.0f} s; try again")
    try:
        return _run(func, args, seconds, memory)
    finally:
        _slots.release()


def _run(func: Callable, args: tuple, seconds: float, memory: int) -> Any:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 0
        try:
            os.close(read_fd)
            _child(write_fd, func, args, memory, seconds)
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while pickling the answer
            code = 3
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + 2 * seconds + 2
    chunks: list[bytes] = []
    status = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TooLarge(f"decoding took longer than {seconds:.0f} s")
            ready, _, _ = select.select([read_fd], [], [], left)
            if ready:
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = None
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    if not chunks:
        raise _death(code, seconds, memory)
    try:
        kind, value = pickle.loads(b"".join(chunks))
    except Exception:  # noqa: BLE001 - a child cut off mid-answer
        raise _death(code, seconds, memory) from None
    if kind == "error":
        raise value
    return value


def _death(exitcode: int | None, seconds: float, memory: int) -> ImageRejected:
    """The named reason for a child that died without an answer."""
    if exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
        return TooLarge(f"decoding took longer than {seconds:.0f} s of CPU")
    return TooLarge(f"decoding ran out of memory ({memory >> 20} MB cap)"
                    if exitcode in (3, -signal.SIGSEGV, -signal.SIGABRT, 1)
                    else f"the decoder died (exit {exitcode})")


def hash_bytes(data: bytes, mime: str | None = None, **limits: Any) -> imaging.HashResult:
    """`imaging.hash_bytes` under the limits."""
    return run(imaging.hash_bytes, bytes(data), mime, **limits)


def query_variants(data: bytes, names: tuple[str, ...] = variants.DEFAULT_VARIANTS,
                   **limits: Any) -> tuple[imaging.HashResult, list[variants.Variant]]:
    """`variants.query_variants` under the limits."""
    return run(variants.query_variants, bytes(data), tuple(names), **limits)
