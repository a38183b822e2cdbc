"""`wikihash serve`: a JSON API and a small web page for reverse image search.

- `GET /` the page (`pipeline/static/index.html`): drop or pick an image, or paste its URL;
- `POST /api/search`: multipart with an `image` file part or a `url` field (or a JSON body
  `{"url": ...}`); optional `max_distance` / `nearest`. Answers `SearchResult.to_dict()`;
- `GET /api/stats`: what the index holds.

Errors are JSON `{"error": message}` with a status that says whose fault it was: 400 for a bad
request or a refused URL, 413 for an upload over the cap, 422 for bytes that are not an image we
can hash, 502/504 when the remote server failed or was too slow, 503 when PostgreSQL is
unreachable; never a traceback. URLs are fetched by `pipeline.safeurl` (public addresses only,
allow-list for tests), uploads are capped as they stream in by `BodyLimit`.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2.pool import ThreadedConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline import safeurl, search
from pipeline.errors import (
    FetchError,
    FetchTimeout,
    ForbiddenURL,
    ImageRejected,
    StorageError,
    WikihashError,
)

__all__ = ["WebSettings", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # bytes of one request body
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


_CHALLENGE = 'Basic realm="wikihash"'  # what a browser is asked to answer with a password


class BasicAuth:
    """ASGI middleware: 401 unless the request carries the configured user and password."""

    def __init__(self, app, credentials: str) -> None:
        self.app = app
        self.expected = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse({"error": "authentication required"}, status_code=401,
                                        headers={"WWW-Authenticate": _CHALLENGE})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """The request body went past the cap while it streamed in."""


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, declared or streamed."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send)
                return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        response = JSONResponse({"error": f"upload over the limit of {self.limit} bytes"},
                                status_code=413)
        await response(scope, receive, send)


def _status(exc: WikihashError) -> int:
    if isinstance(exc, ImageRejected):
        return 422
    if isinstance(exc, ForbiddenURL):
        return 400
    if isinstance(exc, FetchTimeout):
        return 504
    if isinstance(exc, FetchError):
        return 502
    if isinstance(exc, StorageError):
        return 503
    return 400


def create_app(settings: WebSettings) -> Starlette:
    """The application; one small PostgreSQL pool, opened on first use."""
    pool: dict[str, ThreadedConnectionPool] = {}

    def with_conn(func, *args, **kwargs):
        if "pool" not in pool:
            try:
                pool["pool"] = ThreadedConnectionPool(1, 4, settings.database_url,
                                                      connect_timeout=10)
            except psycopg2.Error as exc:
                raise StorageError("cannot connect to PostgreSQL") from exc
        conn = pool["pool"].getconn()
        try:
            with conn:
                return func(conn, *args, **kwargs)
        except psycopg2.Error as exc:
            raise StorageError("the database failed") from exc
        finally:
            pool["pool"].putconn(conn)

    async def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def api_stats(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(with_conn, search.stats))

    async def api_search(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        upload: bytes | None = None
        fields: dict[str, str] = {}
        if content_type.startswith("multipart/form-data") or content_type.startswith(
                "application/x-www-form-urlencoded"):
            async with request.form(max_files=1, max_fields=10) as form:
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        fields[key] = value.strip()
                    elif key == "image":
                        upload = await value.read()
        elif content_type.startswith("application/json"):
            try:
                body = json.loads(await request.body())
            except ValueError:
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
        if not 0 <= max_distance <= 32 or (nearest is not None and not 1 <= nearest <= 100):
            return _error("max_distance must be 0..32 and nearest 1..100", 400)
        url = fields.get("url", "")
        if upload:
            data, source = upload, "upload"
        elif url:
            fetched = await run_in_threadpool(
                safeurl.fetch, url, max_bytes=settings.max_fetch_bytes,
                timeout=settings.fetch_timeout, allow_hosts=settings.allow_hosts)
            data, source = fetched.data, fetched.url
        else:
            return _error("give an image file (field 'image') or its URL (field 'url')", 400)
        result = await run_in_threadpool(with_conn, search.search_bytes, data,
                                         max_distance=max_distance, nearest=nearest)
        answer = result.to_dict()
        answer["source"] = source
        return JSONResponse(answer)

    async def wikihash_error(request: Request, exc: WikihashError) -> JSONResponse:
        return _error(str(exc), _status(exc))

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.detail, exc.status_code)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error("internal error", 500)

    routes = [
        Route("/", page),
        Route("/api/search", api_search, methods=["POST"]),
        Route("/api/stats", api_stats),
        Route("/favicon.ico", lambda request: FileResponse(STATIC / "favicon.svg",
                                                           media_type="image/svg+xml")),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=([Middleware(BasicAuth, credentials=settings.auth)] if settings.auth else [])
        + [Middleware(BodyLimit, limit=settings.max_upload_bytes)],
        exception_handlers={WikihashError: wikihash_error, HTTPException: http_error,
                            Exception: internal_error},
    )


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
