"""The exceptions wikihash raises, one tree for the whole pipeline.

    WikihashError                 anything wikihash raises on purpose
    ├── ConfigError               a WIKIHASH_* variable has a bad value
    ├── WikiError                 the MediaWiki API failed us
    │   ├── ApiError              the API answered with an error code
    │   ├── RateLimited           429/503 or maxlag: wait `retry_after` seconds
    │   └── PolitenessError       a crawl of Wikimedia without a contact in the User-Agent
    ├── FetchError                downloading a file failed
    │   ├── FetchTimeout          the connection or the body took too long
    │   ├── HTTPStatusError       the server answered 4xx/5xx
    │   └── ForbiddenURL          a host or address we must not contact
    ├── ImageRejected(reason)     these bytes cannot be hashed (permanent)
    │   ├── Unsupported           not a picture: audio, video, PDF, DjVu...
    │   ├── TooLarge              over a byte, pixel or render cap
    │   ├── Corrupt               truncated, malformed, empty, or not what it claims
    │   └── UnsafeSvg             external entities, entity expansion, remote references
    ├── StorageError              PostgreSQL refused or is unreachable
    └── DumpError                 a dump run we cannot use: corrupt, truncated, another wiki

Each error says whether trying again may help (`retryable`) and, when the other side said how
long to stay away (Retry-After, maxlag), for how many seconds (`retry_after`; None when it did
not say). Lower-layer errors are mapped to these once, at the module that owns the call:
requests and mwclient in `wiki.py` and `fetch.py`, Pillow, cairosvg and the XML parser in
`imaging.py`, psycopg2 in `storage.py` and `ledger.py` (`storage.map_errors`). Nothing above
those modules catches a lower layer's exception.
"""

from __future__ import annotations


class WikihashError(Exception):
    """Base class of every error wikihash raises on purpose."""

    retryable: bool = False
    # Seconds the other side asked us to wait before asking again; None: it did not say.
    retry_after: float | None = None

    def __init__(self, message: str = "", *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(WikihashError):
    """A WIKIHASH_* setting has a value we cannot use."""


class WikiError(WikihashError):
    """The MediaWiki API did not give us what we asked for."""

    retryable = True


class ApiError(WikiError):
    """The API answered with an error object (`code`, `info`)."""

    def __init__(self, code: str, info: str = "", *, retryable: bool | None = None) -> None:
        super().__init__(f"{code}: {info}" if info else code, retryable=retryable)
        self.code = code
        self.info = info


class RateLimited(WikiError):
    """The server asked us to slow down (429, 503 or maxlag) for `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PolitenessError(WikiError):
    """We refuse to crawl in a way the wiki's robot policy forbids."""

    retryable = False


class FetchError(WikihashError):
    """Downloading a file failed."""

    retryable = True


class FetchTimeout(FetchError):
    """The connection or the body took longer than the time limit."""


class HTTPStatusError(FetchError):
    """The server answered with an error status."""

    def __init__(self, status: int, url: str, *, retry_after: float | None = None) -> None:
        # 4xx other than 408/429 will not change by asking again.
        super().__init__(f"HTTP {status} for {url}",
                         retryable=status in (408, 429) or status >= 500)
        self.status = status
        self.url = url
        self.retry_after = retry_after

    @property
    def slow_down(self) -> bool:
        """The server asked us to slow down (429, or a Retry-After): not a time to ask more."""
        return self.status == 429 or self.retry_after is not None


class ForbiddenURL(FetchError):
    """The URL points at a host or an address we must not contact."""

    retryable = False


class ImageRejected(WikihashError):
    """These bytes cannot be hashed; `reason` says why in a few words."""

    retryable = False
    state = "failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unsupported(ImageRejected):
    """Not a picture we hash (audio, video, PDF, DjVu, a file-type icon...)."""

    state = "unsupported"


class TooLarge(ImageRejected):
    """Over a byte, pixel or render-size cap."""


class Corrupt(ImageRejected):
    """Empty, truncated, malformed, or not the format it claims to be."""


class UnsafeSvg(ImageRejected):
    """An SVG that asks for external entities, entity expansion or remote resources."""


class StorageError(WikihashError):
    """PostgreSQL refused a statement or could not be reached."""

    retryable = True


class DumpError(WikihashError):
    """A dump run (docs/dumps.md) that cannot be used: a checksum mismatch, a truncated or
    corrupt file, an unknown schema, another wiki's dumps, or a ledger that holds a crawl."""
