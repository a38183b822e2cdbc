"""Bounded downloads, the one owner: redirects by hand, a byte cap, one total deadline.

Both kinds of download go through `get`: the crawl's (`download`: hosts the wiki's imageinfo
named, a global slot and bandwidth bucket from `pipeline.politeness`, image content types only)
and a user's URL (`pipeline.safeurl.fetch`: any public address, each checked). They differ only
in `route`, which turns each hop's URL into a `Target` (the address to connect to, checked) or
refuses it.

- Each hop connects to `Target.address` (pinned: what was checked is what is reached; TLS still
  verifies the certificate for the host name) and reuses an idle connection of the `Session`.
- The whole download, every hop and every byte, has one deadline: a watchdog shuts the socket
  down when it passes, whatever the server trickles (a per-read timeout alone lets a server
  that sends a byte every few seconds hold a download for ever).
- A declared `Content-Length` over the cap is refused before the body; the body is counted as
  it arrives; a body shorter than declared is an error, never a truncated image.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from pipeline.errors import FetchError, FetchTimeout, ForbiddenURL, HTTPStatusError, TooLarge
from pipeline.politeness import Bandwidth, DownloadSlots, retry_after

__all__ = ["Download", "Session", "Target", "download", "get", "host_of", "new_session",
           "split_url"]

CHUNK = 64 * 1024  # bytes read at a time
MAX_REDIRECTS = 3
READ_TIMEOUT = 30.0  # seconds without a byte, within the deadline
CONNECT_TIMEOUT = 10.0
MAX_RETRY_AFTER = 600.0  # seconds, below the broker's visibility timeout (workers/app.py)
MAX_IDLE = 8  # idle connections a session keeps
# What an image server may call an image; the bytes are sniffed again when decoded.
ACCEPTED_TYPES = ("image/", "application/octet-stream")
_REDIRECTS = (301, 302, 303, 307, 308)
# Characters left as they are in a request path; anything else (a space, non-ASCII) is
# percent-encoded, as a browser does.
_PATH_SAFE = "/%:@!$&'()*+,;=?~-._"


@dataclass(frozen=True)
class Download:
    url: str  # the last URL, after redirects
    data: bytes
    content_type: str


@dataclass(frozen=True)
class Target:
    """Where one hop goes: the URL's parts and the checked address to connect to."""

    scheme: str
    host: str
    port: int
    path: str  # with the query, percent-encoded
    address: str


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an http(s) URL, or `ForbiddenURL`."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ForbiddenURL(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ForbiddenURL("only http and https URLs can be fetched")
    host = (parts.hostname or "").lower()
    if not host:
        raise ForbiddenURL("the URL names no host")
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    return scheme, host, port or (443 if scheme == "https" else 80), path


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, or `FetchError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host}") from exc
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise FetchError(f"cannot resolve {host}")
    return addresses


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to `address`, whatever the Host header says."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port),
                                             min(self.timeout, CONNECT_TIMEOUT))
        self.sock.settimeout(self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to `address`, the certificate verified for the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port),
                                        min(self.timeout, CONNECT_TIMEOUT))
        sock.settimeout(self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class Session:
    """Request headers and idle connections kept for reuse (one process; not shared between
    threads)."""

    def __init__(self, user_agent: str, accept: str = "image/*") -> None:
        self.headers = {"User-Agent": user_agent, "Accept": accept,
                        "Accept-Encoding": "identity"}
        self._idle: dict[tuple, http.client.HTTPConnection] = {}

    def connection(self, target: Target, timeout: float) -> tuple[http.client.HTTPConnection,
                                                                   bool]:
        """A connection for `target` (reused when one is idle) and whether it was reused."""
        conn = self._idle.pop(_key(target), None)
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(timeout)
            return conn, True
        kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
        return kind(target.host, target.port, target.address, timeout=timeout), False

    def keep(self, target: Target, conn: http.client.HTTPConnection) -> None:
        if len(self._idle) >= MAX_IDLE or _key(target) in self._idle:
            conn.close()
        else:
            self._idle[_key(target)] = conn

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()


def _key(target: Target) -> tuple:
    return (target.scheme, target.host, target.port, target.address)


def new_session(user_agent: str) -> Session:
    """One session per process: connection reuse and our User-Agent."""
    return Session(f"{user_agent} python-http.client".strip())


def get(session: Session, url: str, *, route: Callable[[str], Target], max_bytes: int,
        timeout: float, accept_types: tuple[str, ...] | None = None,
        slot: Callable[[float], contextlib.AbstractContextManager] | None = None,
        throttle: Callable[[int], None] | None = None) -> Download:
    """GET `url` within `timeout` seconds (all hops, all bytes) and `max_bytes` bytes.

    `route` checks each hop's URL and names its address; `slot(seconds)` is held around each
    hop; `throttle(n)` is told of every n bytes read. Raises `FetchError` subclasses only.
    """
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        target = route(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchTimeout(f"timed out: {url}")
        with slot(max(1.0, left)) if slot is not None else contextlib.nullcontext():
            result = _hop(session, url, target, deadline, timeout, max_bytes, accept_types,
                          throttle)
        if isinstance(result, Download):
            return result
        url = result
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


class _Watchdog:
    """Shuts the connection's socket down when the deadline passes (wakes any blocked read)."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn = conn
        self.fired = threading.Event()
        self.timer = threading.Timer(max(0.0, seconds), self._cut)
        self.timer.daemon = True
        self.timer.start()

    def _cut(self) -> None:
        self.fired.set()
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.timer.cancel()


def _hop(session: Session, url: str, target: Target, deadline: float, timeout: float,
         max_bytes: int, accept_types: tuple[str, ...] | None,
         throttle: Callable[[int], None] | None) -> Download | str:
    """One request: the body as a `Download`, or the next URL of a redirect."""
    left = deadline - time.monotonic()
    for attempt in (1, 2):
        conn, reused = session.connection(target, min(left, READ_TIMEOUT))
        watchdog = _Watchdog(conn, deadline - time.monotonic())
        keep = False
        try:
            try:
                conn.request("GET", target.path, headers={**session.headers,
                                                          "Host": _host_header(target)})
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if reused and attempt == 1 and not watchdog.fired.is_set():
                    continue  # the server closed an idle connection: once more, on a new one
                raise
            result, keep = _answer(response, url, deadline, max_bytes, accept_types,
                                   throttle, watchdog)
            return result
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            if watchdog.fired.is_set() or isinstance(exc, TimeoutError):
                what = (f"not finished within {timeout:g} s" if watchdog.fired.is_set()
                        else f"no data for {READ_TIMEOUT:g} s")
                raise FetchTimeout(f"body stalled, {what}: {url}") from exc
            if isinstance(exc, ssl.SSLError):
                raise FetchError(f"TLS failed for {target.host}: {exc.reason or exc}") from exc
            raise FetchError(f"connection failed: {type(exc).__name__}") from exc
        finally:
            watchdog.stop()
            if keep and not watchdog.fired.is_set():
                session.keep(target, conn)
            else:
                conn.close()
    raise AssertionError("unreachable")


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _answer(response: http.client.HTTPResponse, url: str, deadline: float, max_bytes: int,
            accept_types: tuple[str, ...] | None, throttle: Callable[[int], None] | None,
            watchdog: _Watchdog) -> tuple[Download | str, bool]:
    """(the result, whether the connection may be kept) for one response."""
    if response.status in _REDIRECTS:
        location = response.getheader("Location", "")
        if not location:
            raise FetchError(f"redirect without a Location from {url}")
        return urljoin(url, location), False
    if response.status != 200:
        # Invariant 4: on 429 and 503 the server says when to come back; the task waits
        # that long before this host sees the file again (workers/policy.py).
        wait = None
        if response.status in (429, 503):
            wait = retry_after(response.getheader("Retry-After"), 0.0)
            wait = min(MAX_RETRY_AFTER, wait) if wait > 0 else None
        raise HTTPStatusError(response.status, url, retry_after=wait)
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if accept_types is not None and not content_type.startswith(accept_types):
        raise FetchError(f"not an image: Content-Type {content_type or 'missing'}",
                         retryable=False)
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{declared} bytes declared, over the cap of {max_bytes}")
    data = b"".join(_body(response, url, deadline, max_bytes, throttle, watchdog))
    if declared.isdigit() and len(data) != int(declared):
        raise FetchError(f"body broken off: {len(data)} of {declared} bytes")
    keep = not response.will_close
    response.close()  # read to the end: the connection may carry the next request
    return Download(url=url, data=data, content_type=content_type), keep


def _body(response: http.client.HTTPResponse, url: str, deadline: float, max_bytes: int,
          throttle: Callable[[int], None] | None, watchdog: _Watchdog) -> Iterator[bytes]:
    total = 0
    while True:
        chunk = response.read1(CHUNK)
        if watchdog.fired.is_set() or time.monotonic() > deadline:
            raise FetchTimeout(f"body stalled, not finished in time: {url}")
        if not chunk:
            return
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"body over the cap of {max_bytes} bytes")
        yield chunk
        if throttle is not None:
            throttle(len(chunk))


def download(
    session: Session,
    url: str,
    *,
    allowed_hosts: frozenset[str] | set[str],
    max_bytes: int,
    timeout: float,
    slots: DownloadSlots | None = None,
    bandwidth: Bandwidth | None = None,
) -> Download:
    """The crawl's download: hosts the wiki named only, image content types, the global slot
    and bandwidth bucket; `FetchError` otherwise."""

    def route(hop: str) -> Target:
        if host_of(hop) not in allowed_hosts:
            raise ForbiddenURL(f"host not named by the wiki: {host_of(hop)}")
        scheme, host, port, path = split_url(hop)
        return Target(scheme, host, port, path, resolve(host, port)[0])

    slot = (lambda seconds: slots.slot(timeout=seconds)) if slots is not None else None
    return get(session, url, route=route, max_bytes=max_bytes, timeout=timeout,
               accept_types=ACCEPTED_TYPES, slot=slot,
               throttle=bandwidth.throttle if bandwidth is not None else None)
