"""Bounded downloads: a timeout, a byte cap, a content-type check, allowed hosts only.

Every download holds one global slot and charges the global bandwidth bucket
(`pipeline.politeness`) when those are given. Redirects are followed by hand so that each hop
is checked against the hosts the wiki's own imageinfo named.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError

from pipeline.errors import FetchError, FetchTimeout, ForbiddenURL, HTTPStatusError, TooLarge
from pipeline.politeness import Bandwidth, DownloadSlots, retry_after

CHUNK = 64 * 1024  # bytes read at a time
MAX_REDIRECTS = 3
MAX_RETRY_AFTER = 600.0  # seconds, below the broker's visibility timeout (workers/app.py)
# What an image server may call an image; the bytes are sniffed again when decoded.
ACCEPTED_TYPES = ("image/", "application/octet-stream")

@dataclass(frozen=True)
class Download:
    url: str
    data: bytes
    content_type: str

def new_session(user_agent: str) -> requests.Session:
    """One session per process: connection reuse and our User-Agent."""
    session = requests.Session()
    session.headers["User-Agent"] = f"{user_agent} requests/{requests.__version__}".strip()
    session.headers["Accept"] = "image/*"
    session.trust_env = False  # never route through a proxy from the environment
    return session

def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()

def download(
    session: requests.Session,
    url: str,
    *,
    allowed_hosts: frozenset[str] | set[str],
    max_bytes: int,
    timeout: float,
    slots: DownloadSlots | None = None,
    bandwidth: Bandwidth | None = None,
) -> Download:
    """Download `url` within `timeout` seconds and `max_bytes` bytes, or raise `FetchError`."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        if host_of(url) not in allowed_hosts:
            raise ForbiddenURL(f"host not named by the wiki: {host_of(url)}")
        if slots is None:
            response = _get(session, url, deadline, max_bytes, bandwidth)
        else:
            with slots.slot(timeout=max(1.0, deadline - time.monotonic())):
                response = _get(session, url, deadline, max_bytes, bandwidth)
        if isinstance(response, Download):
            return response
        url = response  # a redirect
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")

def _get(session: requests.Session, url: str, deadline: float, max_bytes: int,
         bandwidth: Bandwidth | None) -> Download | str:
    """One request: the body as a `Download`, or the next URL of a redirect."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchTimeout(f"timed out: {url}")
    try:
        response = session.get(url, stream=True, allow_redirects=False,
                               timeout=(min(10.0, remaining), min(30.0, remaining)))
    except requests.Timeout as exc:
        raise FetchTimeout(f"timed out: {url}") from exc
    except requests.RequestException as exc:
        raise FetchError(f"connection failed: {type(exc).__name__}") from exc
    with response:
        if response.is_redirect:
            location = response.headers.get("Location", "")
            return urljoin(url, location)
        if response.status_code != 200:
            # Invariant 4: on 429 and 503 the server says when to come back; the task waits
            # that long before this host sees the file again (workers/policy.py).
            wait = None
            if response.status_code in (429, 503):
                wait = retry_after(response.headers.get("Retry-After"), 0.0)
                wait = min(MAX_RETRY_AFTER, wait) if wait > 0 else None
            raise HTTPStatusError(response.status_code, url, retry_after=wait)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not content_type.startswith(ACCEPTED_TYPES):
            raise FetchError(f"not an image: Content-Type {content_type or 'missing'}",
                             retryable=False)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise TooLarge(f"{declared} bytes declared, over the cap of {max_bytes}")
        data = _read(response, url, deadline, max_bytes, bandwidth)
        return Download(url=url, data=data, content_type=content_type)

def _read(response: requests.Response, url: str, deadline: float, max_bytes: int,
          bandwidth: Bandwidth | None) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_content(CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"body over the cap of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise FetchTimeout(f"body not received in time: {url}")
            chunks.append(chunk)
            if bandwidth is not None:
                bandwidth.throttle(len(chunk))
    except requests.RequestException as exc:
        # requests reports a read timeout inside the body as a ConnectionError.
        cause = exc.args[0] if exc.args else None
        if isinstance(exc, requests.Timeout) or isinstance(cause, ReadTimeoutError):
            raise FetchTimeout(f"body stalled: {url}") from exc
        raise FetchError(f"body broken off: {type(exc).__name__}") from exc
    return b"".join(chunks)
