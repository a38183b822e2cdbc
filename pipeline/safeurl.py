"""Fetching a URL a user gave us, without letting it reach private addresses (SSRF).

`fetch(url)` is for URLs typed into `wikihash search` or pasted into the web page: unlike the
crawl's `pipeline.fetch`, whose hosts are the ones the wiki named, any public host is allowed, so
every address must be checked:

1. only `http` and `https`, no user:password in the URL;
2. the host is resolved once and every address it resolves to is checked: private, loopback,
   link-local, multicast, reserved and unspecified addresses are refused (IPv4-mapped IPv6 is
   checked as the IPv4 address it carries);
3. the connection goes to the address that was checked (pinned: a second DNS answer cannot
   rebind the name to 127.0.0.1); TLS still verifies the certificate for the host name;
4. redirects are followed by hand, at most `MAX_REDIRECTS`, each hop checked the same way;
5. the whole fetch has one deadline and a byte cap (the crawl's WIKIHASH_FETCH_TIMEOUT and
   WIKIHASH_MAX_BYTES by default).

`allow_hosts` ("127.0.0.1:8080", "localhost:8080") lets an operator or a test reach a named
host:port that the address check would refuse; it is matched against the URL as written.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from pipeline.errors import FetchError, FetchTimeout, ForbiddenURL, HTTPStatusError, TooLarge

__all__ = ["Fetched", "check_address", "fetch", "normalise_allow"]

MAX_REDIRECTS = 3
CHUNK = 64 * 1024  # bytes read at a time
USER_AGENT = "wikihash-search/0.1 (reverse image search; fetches one image a user asked for)"


@dataclass(frozen=True)
class Fetched:
    url: str  # the last URL, after redirects
    data: bytes
    content_type: str


def check_address(address: str) -> None:
    """Raise `ForbiddenURL` unless `address` (an IP literal) is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for flag in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved",
                 "is_private"):
        if getattr(ip, flag):
            kind = flag[3:].replace("_", "-")
            raise ForbiddenURL(f"refused: {address} is a {kind} address")
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, ...
        raise ForbiddenURL(f"refused: {address} is not a public address")


def normalise_allow(hosts: Iterable[str]) -> frozenset[str]:
    """Allow-list entries as `host:port`, lower case."""
    return frozenset(h.strip().lower() for h in hosts if h.strip())


def fetch(url: str, *, max_bytes: int, timeout: float,
          allow_hosts: frozenset[str] = frozenset(),
          user_agent: str = USER_AGENT) -> Fetched:
    """GET `url` within `timeout` seconds and `max_bytes` bytes, public addresses only."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        result = _get(url, deadline, max_bytes, allow_hosts, user_agent)
        if isinstance(result, Fetched):
            return result
        url = result
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _target(url: str, allow_hosts: frozenset[str]) -> tuple[str, str, int, str, bool]:
    """(scheme, host, port, path with query, allow-listed) of `url`, or `ForbiddenURL`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ForbiddenURL(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ForbiddenURL("only http and https URLs can be fetched")
    if parts.username is not None or parts.password is not None:
        raise ForbiddenURL("URLs with a user name or password are refused")
    host = (parts.hostname or "").lower()
    if not host:
        raise ForbiddenURL("the URL names no host")
    port = port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    allowed = f"{host}:{port}" in allow_hosts or (
        ":" in host and f"[{host}]:{port}" in allow_hosts)
    return scheme, host, port, path, allowed


def _resolve(host: str, port: int, allowed: bool, deadline: float) -> str:
    """The address to connect to: every address of `host` checked, the first one returned."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host}") from exc
    if time.monotonic() > deadline:
        raise FetchTimeout(f"timed out resolving {host}")
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise FetchError(f"cannot resolve {host}")
    if not allowed:
        for address in addresses:
            check_address(address)
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to `address`, whatever the Host header says."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to `address`, the certificate verified for the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _get(url: str, deadline: float, max_bytes: int, allow_hosts: frozenset[str],
         user_agent: str) -> Fetched | str:
    scheme, host, port, path, allowed = _target(url, allow_hosts)
    address = _resolve(host, port, allowed, deadline)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchTimeout(f"timed out: {url}")
    kind = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    conn = kind(host, port, address, timeout=min(remaining, 30.0))
    try:
        conn.request("GET", path, headers={"User-Agent": user_agent, "Accept": "image/*",
                                           "Accept-Encoding": "identity"})
        response = conn.getresponse()
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location", "")
            if not location:
                raise FetchError(f"redirect without a Location from {url}")
            return urljoin(url, location)
        if response.status != 200:
            raise HTTPStatusError(response.status, url)
        declared = response.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise TooLarge(f"{declared} bytes declared, over the cap of {max_bytes}")
        chunks: list[bytes] = []
        total = 0
        while True:
            if time.monotonic() > deadline:
                raise FetchTimeout(f"body not received in time: {url}")
            chunk = response.read1(CHUNK) if hasattr(response, "read1") else response.read(CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"body over the cap of {max_bytes} bytes")
            chunks.append(chunk)
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        return Fetched(url=url, data=b"".join(chunks), content_type=content_type)
    except TimeoutError as exc:
        raise FetchTimeout(f"timed out: {url}") from exc
    except ssl.SSLError as exc:
        raise FetchError(f"TLS failed for {host}: {exc.reason or exc}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"connection failed: {type(exc).__name__}") from exc
    finally:
        conn.close()
