"""`wikihash serve`: a JSON API and a small web page for reverse image search.

- `GET /` the page (`pipeline/static/index.html`): drop or pick an image, or paste its URL;
- `POST /api/search`: multipart with an `image` file part or a `url` field (or a JSON body
  `{"url": ...}`); optional `max_distance` (0..`search.MAX_USEFUL_DISTANCE`) / `nearest`.
  Answers `SearchResult.to_dict()`;
- `GET /api/stats`: what the index holds;
- `GET /api/duplicates`: a page of the stored near-duplicate clusters (`pipeline.duplicates`).

Errors are JSON `{"error": message}` with a status that says whose fault it was: 400 for a bad
request or a refused URL, 403 for a foreign Host or a cross-origin POST, 408 for a body that
trickles, 413 for an upload over the cap, 422 for bytes that are not an image we can hash,
502/504 when the remote server failed or was too slow, 503 with `Retry-After` when PostgreSQL is
unreachable or the server is full; never a traceback. URLs are fetched by `pipeline.safeurl`
(public addresses only, allow-list for tests), uploads are capped as they stream in.

Under load, work goes through three lanes, each a bounded number of threads that a request
waits for at most `queue_wait` seconds (then 503 + Retry-After): `fetch` (outbound URL fetches,
so slow remote servers cannot starve the rest), `decode` (`pipeline.sandbox`, which bounds
time and memory per decode) and `db` (one per pooled PostgreSQL connection; the pool is made
once, under a lock, at start-up or on first use). `serve` runs uvicorn with a header deadline
per connection and a concurrency cap (slowloris); `BodyGuard` puts a deadline on the body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from psycopg2.pool import ThreadedConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline import duplicates, safeurl, sandbox, search, storage
from pipeline.errors import (
    FetchError,
    FetchTimeout,
    ForbiddenURL,
    ImageRejected,
    StorageError,
    WikihashError,
)

__all__ = ["WebSettings", "create_app", "serve"]

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # bytes of one request body
MAX_JSON_DEPTH = 32  # nesting of a JSON body; ours is one flat object
MAX_JSON_BYTES = 1024 * 1024  # bytes of a JSON body (ours: a URL and two numbers)
HEADER_TIMEOUT = 10.0  # seconds for a connection to send a request's headers
BODY_IDLE = 10.0  # seconds without a byte of body before the request is dropped (408)
BODY_TIMEOUT = 60.0  # seconds for a whole body
RETRY_AFTER = 2  # seconds, sent with every 503
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(address: str) -> bool:
    """Whether listening on `address` stays on this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
# The page loads its own script and style only; thumbnails come from the wiki's servers.
SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'self'; img-src 'self' https: http: data: blob:;"
     b" object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
log = logging.getLogger("wikihash.web")


@dataclass(frozen=True)
class WebSettings:
    database_url: str
    max_fetch_bytes: int = 64 * 1024 * 1024  # bytes; WIKIHASH_MAX_BYTES
    fetch_timeout: float = 60.0  # seconds; WIKIHASH_FETCH_TIMEOUT
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    allow_hosts: frozenset[str] = field(default_factory=frozenset)
    max_distance: int = search.DEFAULT_MAX_DISTANCE
    auth: str = ""  # "user:password" for HTTP basic auth; empty: no authentication
    # Host names this server answers to (the Host header, port aside): DNS rebinding guard.
    served_names: frozenset[str] = LOOPBACK_NAMES
    db_connections: int = 4  # pooled PostgreSQL connections
    fetch_lane: int = 16  # outbound URL fetches at once
    decode_lane: int = sandbox.SLOTS  # decodes at once (CPU bound)
    # Seconds a request waits for a lane before a 503: short, so that under overload a client
    # hears "come back in 2 s" at once instead of waiting behind everybody else.
    queue_wait: float = 0.5


_CHALLENGE = 'Basic realm="wikihash"'  # what a browser is asked to answer with a password


class BasicAuth:
    """ASGI middleware: 401 unless the request carries the configured user and password."""

    def __init__(self, app, credentials: str) -> None:
        self.app = app
        self.expected = b"Basic " + base64.b64encode(credentials.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            if not given.isascii():
                await _error("malformed Authorization header", 400)(scope, receive, send)
                return
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse({"error": "authentication required"}, status_code=401,
                                        headers={"WWW-Authenticate": _CHALLENGE})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HostGuard:
    """ASGI middleware: 403 for a Host we do not serve (DNS rebinding) or a cross-origin POST,
    and the security headers on every answer."""

    def __init__(self, app, names: frozenset[str]) -> None:
        self.app = app
        self.names = frozenset(n.lower().strip("[]") for n in names)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        host = headers.get(b"host", b"").decode("latin-1")
        refusal = None
        if _host_name(host) not in self.names:
            refusal = "this server does not answer to that Host"
        elif scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get(b"origin", b"").decode("latin-1")
            site = headers.get(b"sec-fetch-site", b"").decode("latin-1")
            if origin and urlsplit(origin).netloc.lower() != host.lower() or site == "cross-site":
                refusal = "cross-origin requests are refused"

        async def secured(message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []),
                                                 *SECURITY_HEADERS])
            await send(message)

        if refusal:
            await _error(refusal, 403)(scope, receive, secured)
            return
        await self.app(scope, receive, secured)


def _host_name(host: str) -> str:
    """The name in a Host header, without its port, lower case ("[::1]:80" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BodyTooLarge(Exception):
    """The request body went past the cap while it streamed in."""


class BodyTooSlow(Exception):
    """The request body stopped arriving, or took too long as a whole."""


class BodyGuard:
    """ASGI middleware: 413 for a body over `limit` bytes, declared or streamed; 408 for one
    that stalls `idle` seconds or takes longer than `total`."""

    def __init__(self, app, limit: int, idle: float = BODY_IDLE,
                 total: float = BODY_TIMEOUT) -> None:
        self.app = app
        self.limit = limit
        self.idle = idle
        self.total = total

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        deadline = anyio.current_time() + self.total
        done = False

        async def guarded():
            nonlocal seen, done
            if done:  # after the body, receive() waits for the disconnect: no deadline then
                return await receive()
            wait = min(self.idle, deadline - anyio.current_time())
            try:
                with anyio.fail_after(max(0.0, wait)):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow() from None
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge()
            done = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, guarded, send)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)
        except BodyTooSlow:
            await _error("the request body arrived too slowly", 408,
                         {"Connection": "close"})(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        await _error(f"upload over the limit of {self.limit} bytes", 413)(scope, receive, send)


class Lane:
    """At most `size` calls of blocking work at once, each in a thread; a caller waits at most
    `wait` seconds for its turn, then gets `sandbox.Busy` (a 503)."""

    def __init__(self, name: str, size: int, wait: float) -> None:
        self.name = name
        self.size = size
        self.wait = wait
        self._turns: anyio.CapacityLimiter | None = None
        self._threads: anyio.CapacityLimiter | None = None

    async def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._turns is None:  # made in the event loop's thread, on first use
            self._turns = anyio.CapacityLimiter(self.size)
            self._threads = anyio.CapacityLimiter(self.size)
        try:
            with anyio.fail_after(self.wait):
                await self._turns.acquire()
        except TimeoutError:
            raise sandbox.Busy(f"the server is busy ({self.name}); try again") from None
        try:
            return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs),
                                                  limiter=self._threads)
        finally:
            self._turns.release()


class Database:
    """The PostgreSQL pool: made once (under a lock), `size` connections; `call` waits up to
    `wait` seconds for a free one, else `sandbox.Busy`."""

    def __init__(self, url: str, size: int, wait: float) -> None:
        self.url = url
        self.wait = wait
        self._size = size
        self._lock = threading.Lock()
        self._free = threading.BoundedSemaphore(size)
        self._pool: ThreadedConnectionPool | None = None

    def open(self) -> ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                with storage.map_errors("cannot connect to PostgreSQL"):
                    self._pool = ThreadedConnectionPool(1, self._size, self.url,
                                                        connect_timeout=10)
            return self._pool

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        pool = self.open()
        if not self._free.acquire(timeout=self.wait):
            raise sandbox.Busy("every database connection is busy; try again")
        try:
            with storage.map_errors("cannot connect to PostgreSQL"):
                conn = pool.getconn()
            broken = False
            try:
                with storage.transaction(conn):
                    return func(conn, *args, **kwargs)
            except StorageError:
                broken = bool(conn.closed)
                raise
            finally:
                pool.putconn(conn, close=broken)
        finally:
            self._free.release()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


def _status(exc: WikihashError) -> int:
    if isinstance(exc, ImageRejected):
        return 422
    if isinstance(exc, ForbiddenURL):
        return 400
    if isinstance(exc, FetchTimeout):
        return 504
    if isinstance(exc, FetchError):
        return 502
    if isinstance(exc, StorageError | sandbox.Busy):
        return 503
    return 400


def _json_depth(text: str) -> int:
    """How deep the brackets of a JSON text nest (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def create_app(settings: WebSettings) -> Starlette:
    """The application: one PostgreSQL pool and three lanes (see the module's docstring)."""
    database = Database(settings.database_url, settings.db_connections, settings.queue_wait)
    db_lane = Lane("database", settings.db_connections, settings.queue_wait)
    fetch_lane = Lane("fetching URLs", settings.fetch_lane, settings.queue_wait)
    decode_lane = Lane("decoding", settings.decode_lane, settings.queue_wait)

    async def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def api_stats(request: Request) -> JSONResponse:
        return JSONResponse(await db_lane.run(database.call, search.stats))

    async def api_duplicates(request: Request) -> JSONResponse:
        # A page of the clusters `wikihash duplicates` stored (migrations/012): a few index
        # reads, not a recomputation; with when they were computed and whether files were
        # hashed since. ?max_distance=0..8&min_size=2..&offset=0..&limit=1..MAX_PAGE.
        try:
            query = request.query_params
            distance = int(query.get("max_distance", duplicates.DEFAULT_MAX_DISTANCE))
            min_size = int(query.get("min_size", 2))
            offset = int(query.get("offset", 0))
            limit = int(query.get("limit", 20))
        except ValueError:
            return _error("max_distance, min_size, offset and limit must be integers", 400)
        if not (0 <= distance <= duplicates.MAX_DISTANCE and min_size >= 2 and offset >= 0
                and 1 <= limit <= duplicates.MAX_PAGE):
            return _error(f"max_distance must be 0..{duplicates.MAX_DISTANCE}, min_size at least"
                          f" 2, offset at least 0 and limit 1..{duplicates.MAX_PAGE}", 400)
        page = await db_lane.run(database.call, duplicates.stored_page, max_distance=distance,
                                 min_size=min_size, offset=offset, limit=limit)
        return JSONResponse(page.to_dict())

    async def api_search(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "").lower()
        upload: bytes | None = None
        fields: dict[str, str] = {}
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            async with request.form(max_files=1, max_fields=10) as form:
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        fields[key] = value.strip()
                    elif key == "image":
                        upload = await value.read()
        elif content_type.startswith("application/json"):
            try:
                raw = await request.body()
                if len(raw) > MAX_JSON_BYTES:
                    return _error(f"a JSON body is at most {MAX_JSON_BYTES} bytes", 413)
                text = raw.decode("utf-8")
                if _json_depth(text) > MAX_JSON_DEPTH:
                    return _error(f"JSON nested deeper than {MAX_JSON_DEPTH}", 400)
                body = json.loads(text)
            except (ValueError, RecursionError):
                return _error("the body is not valid JSON", 400)
            if not isinstance(body, dict):
                return _error("the body must be a JSON object", 400)
            fields = {k: str(v).strip() for k, v in body.items() if v is not None}
        else:
            return _error("send multipart/form-data with an image or a url", 415)
        try:
            max_distance = int(fields.get("max_distance") or settings.max_distance)
            nearest = int(fields["nearest"]) if fields.get("nearest") else None
        except ValueError:
            return _error("max_distance and nearest must be integers", 400)
        top = search.MAX_USEFUL_DISTANCE
        most = search.MAX_RESULTS
        if not 0 <= max_distance <= top or (nearest is not None and not 1 <= nearest <= most):
            return _error(f"max_distance must be 0..{top} and nearest 1..{most}", 400)
        url = fields.get("url", "")
        if upload:
            data, source = upload, "upload"
        elif url:
            fetched = await fetch_lane.run(
                safeurl.fetch, url, max_bytes=settings.max_fetch_bytes,
                timeout=settings.fetch_timeout, allow_hosts=settings.allow_hosts)
            data, source = fetched.data, fetched.url
        else:
            return _error("give an image file (field 'image') or its URL (field 'url')", 400)
        canonical, probes = await decode_lane.run(sandbox.query_variants, data,
                                                  queue_wait=settings.queue_wait)
        result = await db_lane.run(database.call, search.search_hashes, canonical.int64, probes,
                                   max_distance=max_distance, nearest=nearest)
        answer = result.to_dict()
        answer["source"] = source
        return JSONResponse(answer)

    async def wikihash_error(request: Request, exc: WikihashError) -> JSONResponse:
        status = _status(exc)
        return _error(str(exc), status,
                      {"Retry-After": str(RETRY_AFTER)} if status == 503 else None)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.detail, exc.status_code)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error("internal error", 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            await anyio.to_thread.run_sync(database.open)
        except StorageError as exc:  # served as 503 until PostgreSQL answers
            log.warning("%s; will retry on the first request", exc)
        yield
        database.close()

    routes = [
        Route("/", page),
        Route("/api/search", api_search, methods=["POST"]),
        Route("/api/stats", api_stats),
        Route("/api/duplicates", api_duplicates),
        Route("/favicon.ico", lambda request: FileResponse(STATIC / "favicon.svg",
                                                           media_type="image/svg+xml")),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(HostGuard, names=settings.served_names)]
        + ([Middleware(BasicAuth, credentials=settings.auth)] if settings.auth else [])
        + [Middleware(BodyGuard, limit=settings.max_upload_bytes)],
        exception_handlers={WikihashError: wikihash_error, HTTPException: http_error,
                            Exception: internal_error},
        lifespan=lifespan,
    )


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# -- the server --------------------------------------------------------------------------------


def _guarded_protocol(header_timeout: float):
    """uvicorn's h11 protocol with a deadline for each request's headers: a connection that
    trickles them (slowloris), or opens and sends nothing, is closed after `header_timeout`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _awaited: object = None

        def _arm(self) -> None:
            self._disarm()
            self._awaited = self.cycle
            self._timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self) -> None:
            self._timer = None
            if self.cycle is self._awaited and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._timer is not None and self.cycle is not self._awaited:
                self._disarm()  # a request's headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection gets its own deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11


def server(app: Starlette, host: str, port: int, *, header_timeout: float = HEADER_TIMEOUT,
           max_connections: int = 1000):
    """A uvicorn server for `app`: header deadline, idle keep-alive 5 s, and at most
    `max_connections` connections or requests at once (more get uvicorn's 503)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", proxy_headers=False,
                            http=_guarded_protocol(header_timeout), timeout_keep_alive=5,
                            limit_concurrency=max_connections, lifespan="on")
    return uvicorn.Server(config)


def serve(app: Starlette, host: str, port: int) -> None:
    """Run `app` until interrupted (`wikihash serve`)."""
    server(app, host, port).run()
