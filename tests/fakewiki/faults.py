"""Faults a FakeWikiServer injects: rate limits, maxlag, slowness, drops, broken files.

Counters are "the next N responses"; each is consumed under a lock, so tests may change
them while a crawl runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

FILE_FAULT_KINDS = {"stall", "endless", "redirect", "content_type", "content_length", "status"}


@dataclass
class FileFault:
    """A fault served for one file's original, thumbnails or both.

    kind: "stall" (half the body, then silence for `stall_seconds`, then close),
    "endless" (no Content-Length, bytes until the client hangs up), "redirect" (302 to the
    same path on 127.0.0.2), "content_type" (served as text/html), "content_length"
    (declares `length_delta` more bytes than it sends, then closes), "status" (`status`).
    target: "original", "thumb" or "any". times: how many responses, None for all.
    """

    kind: str
    target: str = "any"
    status: int = 500
    times: int | None = None
    stall_seconds: float = 30.0
    length_delta: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in FILE_FAULT_KINDS:
            raise ValueError(f"unknown file fault {self.kind!r}")
        if self.target not in ("original", "thumb", "any"):
            raise ValueError(f"unknown target {self.target!r}")


@dataclass
class Faults:
    """Settable before or while the server runs; counters count down as they fire."""

    status_429: int = 0  # next N api.php responses are HTTP 429
    status_503: int = 0  # next N api.php responses are HTTP 503
    retry_after: int = 1  # seconds, the Retry-After sent with 429/503
    maxlag_responses: int = 0  # next N requests carrying maxlag get the maxlag error
    maxlag_lag: int = 7  # seconds of lag reported
    maxlag_retry_after: int | None = None  # None: max(lag, 5), as MediaWiki sends
    api_delay: float = 0.0  # seconds before every api.php response
    drop_connections: int = 0  # next N api.php requests: socket closed, no response
    error_titles: set[str] = field(default_factory=set)  # file names breaking imageinfo
    error_code: str = "internal_api_error_InvalidArgumentException"
    file_delay: float = 0.0  # seconds before every file response
    file_status_429: int = 0  # next N file responses are HTTP 429 with Retry-After
    file_status_503: int = 0  # next N file responses are HTTP 503 with Retry-After
    files: dict[str, FileFault] = field(default_factory=dict)  # by file name
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, counter: str) -> bool:
        """Consume one of a counter's responses; True when the fault fires."""
        with self._lock:
            left = getattr(self, counter)
            if left > 0:
                setattr(self, counter, left - 1)
                return True
            return False

    def fail_file(self, name: str, kind: str, **kwargs) -> FileFault:
        """Make a file misbehave: `faults.fail_file("Foo.jpg", "status", status=404)`."""
        from .model import file_name

        fault = FileFault(kind, **kwargs)
        with self._lock:
            self.files[file_name(name)] = fault
        return fault

    def file_fault(self, name: str, is_thumb: bool) -> FileFault | None:
        with self._lock:
            fault = self.files.get(name)
            if fault is None or fault.target not in ("any", "thumb" if is_thumb else "original"):
                return None
            if fault.times is not None:
                if fault.times <= 0:
                    return None
                fault.times -= 1
            return fault
