"""One long-lived decoder process: many decodes over a pipe, each under its own limits.

`pipeline.sandbox` owns the policy (how many decoders, when one is replaced, the named reasons);
this module owns one process and its protocol. `Decoder()` forks (`os.fork`: the child has the
caller's modules, so it starts in milliseconds, and a Celery pool process, which is daemonic,
may fork where multiprocessing would refuse it a child). The child then serves requests until
its pipe closes, its parent goes away, or it is killed:

    parent ──(8-byte length, pickle of (func, args, seconds, memory))──> decoder
    parent <──(8-byte length, pickle of (kind, value, clean, vmsize))─── decoder

For each request the decoder sets, on itself, `RLIMIT_AS` at its size then (`VmSize`) plus
`memory` bytes and `RLIMIT_CPU` at the CPU time it has used plus `seconds` (rounded up to
whole seconds, as the kernel counts them: the decode gets between `seconds` and `seconds` + 1 of
CPU; SIGXCPU ends it), calls `func(*args)` and, once the answer is pickled, raises both soft
limits back to what they were, so that reading the next request never runs into the last
decode's limits. The parent's wall deadline is `Decoder.call`'s `deadline`: past it the decoder
is killed (`Overtime`). A decoder that ends without an answer raises `Died(exitcode)`.

Why a long-lived process and not a fork per decode (docs/benchmarks.md, "The
sandbox"): a fork per file cost 16-20 ms of CPU for a small raster in a Celery pool process,
and ~290 ms for an SVG, because a pool process never decodes itself, so each forked child
imported cairosvg or Pillow's plugins again and threw them away when it exited; the rest was
the kernel copying the pool process's page tables and its copy-on-write faults.

Orphans: the decoder exits when the request pipe reaches end of file (the parent closed it,
or exited however it did: its descriptors close with it) or when its parent process changes
(checked once a second while idle, for the case where another process still holds the pipe);
a parent that dies mid-decode leaves it at most that decode's limits, then its answer meets a
closed pipe and it exits. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the process group are
ignored: the parent decides (a warm shutdown lets the decode under way finish).
Every process forked from one that has decoders forgets them (`os.register_at_fork`): a
sibling decoder closes the parent's ends of the others' pipes, so their end of file still
arrives, and a forked child never writes into its parent's decoders.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import pickle
import resource
import select
import signal
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.errors import Corrupt, ImageRejected, TooLarge

__all__ = ["Decoder", "Died", "Overtime", "Reply"]

_HEADER = struct.Struct(">Q")  # the length of the pickle that follows
_IDLE_CHECK = 1.0  # seconds between the idle decoder's checks that its parent still exists
_CHUNK = 1 << 20  # bytes per read or write
_DEFAULT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGALRM, signal.SIGXCPU)
_IGNORED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

_fork_lock = threading.Lock()  # pipes and fork of one decoder at a time (no fd leaks across)
_parent_fds: set[int] = set()  # this process's ends of its decoders' pipes


class Died(Exception):
    """The decoder ended without an answer; `exitcode` as `os.waitstatus_to_exitcode` gives."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"decoder exited ({exitcode})")
        self.exitcode = exitcode


class Overtime(Exception):
    """The wall deadline passed; the decoder was killed."""


class Reply:
    """A decoder's answer: `kind` "ok" (`value` is what `func` returned) or "error" (`value`
    is the `ImageRejected` to raise); `clean` False when the decode ended in a way that may
    have left the decoder's state unsound (MemoryError, an unexpected exception); `vmsize` the
    decoder's address space after it, in bytes."""

    __slots__ = ("clean", "kind", "value", "vmsize")

    def __init__(self, kind: str, value: Any, clean: bool, vmsize: int) -> None:
        self.kind, self.value, self.clean, self.vmsize = kind, value, clean, vmsize


class Decoder:
    """One decoder process, owned by the process that made it; `call` one decode at a time."""

    def __init__(self) -> None:
        with _fork_lock:
            request_r, request_w = os.pipe2(os.O_CLOEXEC)
            reply_r, reply_w = os.pipe2(os.O_CLOEXEC)
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:  # the decoder: never returns into the caller's code
                code = 0
                try:
                    os.close(request_w)
                    os.close(reply_r)
                    _serve(request_r, reply_w, parent)
                except BaseException:  # noqa: BLE001 - e.g. MemoryError pickling an answer
                    code = 3
                finally:
                    os._exit(code)
            os.close(request_r)
            os.close(reply_w)
            _parent_fds.update((request_w, reply_r))
        self.pid = pid
        self.owner = parent
        self.decodes = 0
        self.start_vmsize: int | None = None  # after its first decode
        self._request = request_w
        self._reply = reply_r
        self._closed = False
        os.set_blocking(request_w, False)

    def call(self, func: Callable[..., Any], args: tuple, *, seconds: float, memory: int,
             deadline: float) -> Reply:
        """`func(*args)` in the decoder under `seconds` of CPU and `memory` bytes beyond its
        size; `deadline` is a `time.monotonic()` value. Raises `Overtime` or `Died`; on either,
        or on anything raised into the caller meanwhile (a Celery soft time limit), the decoder
        is gone and this object closed."""
        try:
            self._send(pickle.dumps((func, args, seconds, memory)), deadline)
            payload = self._receive(deadline)
            if payload is None:
                raise Died(self._reap())
            kind, value, clean, vmsize = pickle.loads(payload)
        except BaseException:
            self.kill()
            raise
        self.decodes += 1
        if self.start_vmsize is None:
            self.start_vmsize = vmsize
        return Reply(kind, value, clean, vmsize)

    def _send(self, payload: bytes, deadline: float) -> None:
        view = memoryview(_HEADER.pack(len(payload)) + payload)
        while view:
            _wait(self._request, "w", deadline)
            try:
                sent = os.write(self._request, view[:_CHUNK])
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise Died(self._reap()) from None
            view = view[sent:]

    def _receive(self, deadline: float) -> bytes | None:
        header = self._read_exactly(_HEADER.size, deadline)
        if header is None:
            return None
        return self._read_exactly(_HEADER.unpack(header)[0], deadline)

    def _read_exactly(self, size: int, deadline: float) -> bytes | None:
        chunks: list[bytes] = []
        left = size
        while left:
            _wait(self._reply, "r", deadline)
            chunk = os.read(self._reply, min(left, _CHUNK))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _reap(self) -> int | None:
        """Wait for the decoder's end (it has closed its pipe or is about to); its exit code."""
        self._close_fds()
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> int | None:
        """End the decoder now (SIGKILL) and reap it; its exit code."""
        if self._closed:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        return self._reap()

    def close(self, wait: float = 1.0) -> None:
        """End the decoder: end of file on its pipe, then SIGKILL if it is still there after
        `wait` seconds; reaped either way."""
        if self._closed:
            return
        self._close_fds()
        until = time.monotonic() + wait
        while time.monotonic() < until:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            time.sleep(0.005)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def _close_fds(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (self._request, self._reply):
            _parent_fds.discard(fd)
            with contextlib.suppress(OSError):
                os.close(fd)


def _wait(fd: int, mode: str, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Overtime
    readable, writable, _ = select.select([fd] if mode == "r" else [], [fd] if mode == "w" else [],
                                          [], left)
    if not readable and not writable:
        raise Overtime


# -- inside the decoder --------------------------------------------------------------------------

def _serve(request_fd: int, reply_fd: int, parent: int) -> None:
    """The decoder's loop: one request, one answer, until end of file or an orphaned parent."""
    _keep_only(request_fd, reply_fd)
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write("wikihash-decode")  # what ps and top show
    # The parent's handlers (Celery's, KeyboardInterrupt) are not the decoder's. A signal to
    # the whole process group (Ctrl-C, a warm shutdown by killpg) is the parent's to act on:
    # the decoder finishes the decode under way, and ends when its parent's pipe closes.
    for number in _DEFAULT_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    for number in _IGNORED_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    # A decoder ended by SIGXCPU or a crash in a library leaves no core file of its heap.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    own_as = resource.getrlimit(resource.RLIMIT_AS)
    own_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    while True:
        request = _next_request(request_fd, parent)
        if request is None:
            return
        func, args, seconds, memory = pickle.loads(request)
        del request
        _limit(resource.RLIMIT_AS, own_as, _address_space() + memory)
        _limit(resource.RLIMIT_CPU, own_cpu, math.ceil(_cpu_used()) + max(1, math.ceil(seconds)))
        clean = True
        try:
            outcome: tuple[str, Any] = ("ok", func(*args))
        except ImageRejected as exc:
            outcome = ("error", exc)
        except MemoryError:
            outcome = ("error", TooLarge(f"decoding ran out of memory ({memory >> 20} MB cap)"))
            clean = False
        except Exception as exc:  # noqa: BLE001 - the boundary of the decoder: reported
            outcome = ("error", Corrupt(f"cannot decode: {type(exc).__name__}"))
            clean = False
        del args
        payload = pickle.dumps((*outcome, clean, _address_space()))
        del outcome
        resource.setrlimit(resource.RLIMIT_CPU, own_cpu)
        resource.setrlimit(resource.RLIMIT_AS, own_as)
        os.write(reply_fd, _HEADER.pack(len(payload)))
        view = memoryview(payload)
        while view:
            view = view[os.write(reply_fd, view):]


def _keep_only(*fds: int) -> None:
    """Close every descriptor the decoder inherited but its pipes and stdin/out/err.

    The decoder outlives many decodes: it should not hold, all that time, copies of its
    parent's PostgreSQL, Redis and HTTP sockets and files (a decode that took the decoder over
    could write into them; a socket the parent closes stays open while a copy lives, and an
    epoll set watches the open file, not the number). The objects that owned them are frozen
    first (`gc.freeze`): never collected here, so no finalizer closes a number since reused.
    """
    gc.freeze()
    keep = {0, 1, 2, *fds}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _next_request(fd: int, parent: int) -> bytes | None:
    """The next request's pickle; None at end of file or when the parent is gone."""
    while True:
        readable, _, _ = select.select([fd], [], [], _IDLE_CHECK)
        if readable:
            break
        if os.getppid() != parent:
            return None
    header = _read_all(fd, _HEADER.size)
    if header is None:
        return None
    return _read_all(fd, _HEADER.unpack(header)[0])


def _read_all(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, _CHUNK))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _limit(kind: int, own: tuple[int, int], soft: int) -> None:
    """Set `kind`'s soft limit to `soft`, never above the hard limit the decoder started with
    (e.g. a Celery child's RLIMIT_AS); the hard limit stays, so the soft one can come back."""
    _, hard = own
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def _address_space() -> int:
    """Bytes of address space this process maps now (VmSize)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _cpu_used() -> float:
    """CPU seconds (user + system) this process has used, as RLIMIT_CPU counts them."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _forget_after_fork() -> None:
    """In any child forked from a process with decoders: close the parent's ends of their
    pipes (so that a decoder still sees end of file when its own parent goes)."""
    for fd in list(_parent_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _parent_fds.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
