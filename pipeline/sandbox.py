"""Decoding under a time and memory limit: every decode of untrusted bytes goes through here.

`pipeline.imaging` bounds what it can see before decoding (bytes, declared pixels, SVG trees),
but not the time or memory spent inside one C call: a progressive JPEG with thousands of scans,
an SVG with a megabyte-long path. `run(func, *args)` runs `func` in a decoder process
(`pipeline.decoder`: forked once, then many decodes over a pipe; multiprocessing is not used
because a Celery worker's pool processes are daemonic and may not start children through it),
each decode under its own limits:

- `RLIMIT_AS` at the decoder's size when the decode starts plus `memory` bytes (`MemoryError`
  inside, or death, past it),
- `RLIMIT_CPU` at the decoder's CPU time so far plus `seconds`, rounded up to whole seconds
  (SIGXCPU ends the decoder),
- a wall-clock deadline in the caller (`seconds` x 2 + 2, for a loaded machine): the decoder is
  killed past it,

and at most `SLOTS` of them at once per process (a caller waits up to `queue_wait` seconds for
a slot, else `Busy`). Every way out is a value, an `ImageRejected` with a named reason
(`TooLarge("decoding took longer than 20 s")`, "... ran out of memory ..."), or `Busy`.

A decoder is started on first use, one per slot in use, and replaced: after any decode that did
not end cleanly (killed, dead, out of memory, an exception the decoder did not expect), after
`MAX_DECODES` decodes, and once it has grown `MAX_GROWTH` bytes beyond its size after its first
decode (like Celery's max-tasks- and max-memory-per-child). It ends when this process exits
(its pipe closes) or `close()` is called. Why not a fork per decode, as before: the fork cost
16-20 ms of CPU per small raster inside a Celery pool process and ~290 ms per SVG, since each
child imported again what the pool process had never loaded (docs/benchmarks.md, "The
sandbox").

`hash_bytes` and `query_variants` are the limited forms of `imaging.hash_bytes` (crawl: CLI
`hash`, the worker) and `variants.query_variants` (search: CLI and web).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline import imaging, variants
from pipeline.decoder import Decoder, Died, Overtime, Reply
from pipeline.errors import ImageRejected, TooLarge, WikihashError

__all__ = ["DECODE_MEMORY", "DECODE_SECONDS", "MAX_DECODES", "MAX_GROWTH", "SLOTS", "Busy",
           "close", "hash_bytes", "query_variants", "run"]

DECODE_SECONDS = 20.0  # CPU seconds for one decode; the slowest photo of the corpus takes < 1
DECODE_MEMORY = 768 * 1024 * 1024  # bytes of address space beyond the decoder's size at start
SLOTS = max(1, os.cpu_count() or 1)  # decodes at once in one process (they are CPU bound)
QUEUE_WAIT = 10.0  # seconds a caller waits for a free slot
MAX_DECODES = 1000  # decodes before a decoder is replaced
MAX_GROWTH = 128 * 1024 * 1024  # bytes a decoder may grow beyond its size after its first decode

_slots = threading.BoundedSemaphore(SLOTS)
_idle: list[Decoder] = []  # this process's decoders waiting for a decode
_idle_lock = threading.Lock()


class Busy(WikihashError):
    """Every decode slot stayed taken for the whole wait: try again later."""

    retryable = True
    retry_after = 2.0  # seconds, for a 503's Retry-After


def run(func: Callable[..., Any], *args: Any, seconds: float = DECODE_SECONDS,
        memory: int = DECODE_MEMORY, queue_wait: float = QUEUE_WAIT) -> Any:
    """`func(*args)` in a limited decoder process; its value, or what it raised.

    `func` and its arguments are picklable (by reference for functions), and so is its value
    (they go through a pipe). Raises `ImageRejected` (the decoder's own, or a named limit) or
    `Busy`.
    """
    if not _slots.acquire(timeout=queue_wait):
        raise Busy(f"all {SLOTS} decode slots busy for {queue_wait:.0f} s; try again")
    try:
        return _run(func, args, seconds, memory)
    finally:
        _slots.release()


def _run(func: Callable, args: tuple, seconds: float, memory: int) -> Any:
    decoder = _take()
    deadline = time.monotonic() + 2 * seconds + 2
    try:
        reply = decoder.call(func, args, seconds=seconds, memory=memory, deadline=deadline)
    except Overtime:
        raise TooLarge(f"decoding took longer than {seconds:.0f} s") from None
    except Died as died:
        raise _death(died.exitcode, seconds, memory) from None
    _give_back(decoder, reply)
    if reply.kind == "error":
        raise reply.value
    return reply.value


def _take() -> Decoder:
    """An idle decoder of this process, or a new one."""
    with _idle_lock:
        while _idle:
            decoder = _idle.pop()
            if decoder.owner == os.getpid():
                return decoder
    return Decoder()


def _give_back(decoder: Decoder, reply: Reply) -> None:
    """Keep the decoder for the next decode, or end it if it is spent."""
    grown = reply.vmsize - (decoder.start_vmsize or reply.vmsize)
    if not reply.clean or decoder.decodes >= MAX_DECODES or grown > MAX_GROWTH:
        decoder.close()
        return
    with _idle_lock:
        _idle.append(decoder)


def close() -> None:
    """End this process's idle decoders (and reap them); the next decode starts a new one."""
    with _idle_lock:
        mine = [d for d in _idle if d.owner == os.getpid()]
        _idle.clear()
    for decoder in mine:
        decoder.close()


def _forget_after_fork() -> None:
    """A forked child does not own its parent's decoders (pipeline.decoder closes their fds)."""
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(close)


def _death(exitcode: int | None, seconds: float, memory: int) -> ImageRejected:
    """The named reason for a decoder that died without an answer."""
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
