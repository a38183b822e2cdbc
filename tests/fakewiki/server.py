"""FakeWikiServer: serves a FakeWiki's api.php, originals and thumbnails on 127.0.0.1.

A ThreadingHTTPServer in a daemon thread on a free port, speaking HTTP/1.1 keep-alive as
MediaWiki's front ends do. Every api.php request is logged (`requests`) and every file
request counted (`file_hits`); `faults` injects rate limits, maxlag and broken downloads.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from . import api, media
from .faults import Faults
from .model import FakeWiki

API_PATH = "/w/api.php"
COOKIE = "fakewiki_session"


class ApiRecord(NamedTuple):
    """One api.php request as the server saw it."""

    path: str
    params: dict[str, str]
    status: int
    method: str = "GET"
    kind: str = ""  # e.g. "generator:allpages", "prop:imageinfo", "meta:siteinfo", "login"
    seconds: float = 0.0  # the server's own time answering it (wall)
    cpu: float = 0.0  # the CPU time of the thread answering it (load barely changes it)


def request_kind(params: dict[str, str]) -> str:
    action = params.get("action", "")
    if action != "query":
        return action
    if params.get("generator"):
        return f"generator:{params['generator']}"
    if params.get("list"):
        return f"list:{params['list']}"
    if params.get("prop") and (params.get("titles") or params.get("pageids")):
        return f"prop:{params['prop']}"
    metas = [m for m in params.get("meta", "").split("|") if m and m != "userinfo"]
    return f"meta:{'|'.join(metas) or 'userinfo'}"


class FakeWikiServer:
    """Serve `wiki` on http://127.0.0.1:PORT (port 0: a free one). Use as a context manager,
    or call start()/stop()."""

    def __init__(self, wiki: FakeWiki, faults: Faults | None = None, port: int = 0,
                 tcp_nodelay: bool = False, keep_logs: bool = True,
                 reuse_port: bool = False) -> None:
        self.wiki = wiki
        # keep_logs=False: counts only (`tally`), no per-request list, so that a benchmark
        # serving millions of requests holds a few numbers, not a record of each.
        self.keep_logs = keep_logs
        # reuse_port: SO_REUSEPORT, so that several processes serving the same wiki share one
        # port and the kernel spreads the connections among them (tests/fakewiki/__main__.py).
        self.reuse_port = reuse_port
        self._tally: dict[str, list[float]] = {}  # kind -> [requests, wall s, cpu s]
        # http.server's default leaves Nagle's algorithm on; production front ends set
        # TCP_NODELAY, which a benchmark asks for.
        self.tcp_nodelay = tcp_nodelay
        self.faults = faults or Faults()
        self.port = port
        self.requests: list[ApiRecord] = []
        self.file_hits: Counter[str] = Counter()
        self.file_requests: list[tuple[str, int]] = []  # (path, status)
        self.file_seconds = 0.0  # the server's own time serving file requests
        self.sessions: dict[str, api.Session] = {}
        self._lock = threading.Lock()
        self._thumbs: dict[str, tuple[bytes, str]] = {}
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeWikiServer:
        handler = type("Handler", (_Handler,), {"server_ref": self,
                                                "disable_nagle_algorithm": self.tcp_nodelay})
        httpd = (_ReusePortServer if self.reuse_port else ThreadingHTTPServer)(
            ("127.0.0.1", self.port), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.wiki.base_url = self.base_url
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,),
                                        name=f"fakewiki-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeWikiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and counts ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """What mwclient.Site takes as host (with scheme='http', path='/w/')."""
        return f"127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PATH

    def api_counts(self) -> Counter[str]:
        """api.php requests by kind (see `request_kind`)."""
        with self._lock:
            return Counter(r.kind for r in self.requests)

    def served(self) -> dict[str, tuple[int, float]]:
        """Requests served and the server's own seconds on them, by kind ("file" for files)."""
        out: dict[str, tuple[int, float]] = {}
        with self._lock:
            for r in self.requests:
                n, sec = out.get(r.kind, (0, 0.0))
                out[r.kind] = (n + 1, sec + r.seconds)
            out["file"] = (len(self.file_requests), self.file_seconds)
        return out

    def tally(self) -> dict[str, dict[str, float]]:
        """Requests, the server's wall seconds and its threads' CPU seconds on them, by kind
        ("file" for files); kept whether or not `keep_logs`."""
        with self._lock:
            return {kind: {"requests": int(n), "wall_s": wall, "cpu_s": cpu}
                    for kind, (n, wall, cpu) in self._tally.items()}

    def reset_logs(self) -> None:
        with self._lock:
            self.requests.clear()
            self.file_seconds = 0.0
            self.file_hits.clear()
            self.file_requests.clear()
            self._tally.clear()

    def _count(self, kind: str, wall: float, cpu: float) -> None:
        with self._lock:
            entry = self._tally.setdefault(kind, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += wall
            entry[2] += cpu

    def _record(self, record: ApiRecord) -> None:
        self._count(record.kind, record.seconds, record.cpu)
        if self.keep_logs:
            with self._lock:
                self.requests.append(record)

    def _record_file(self, path: str, status: int) -> None:
        if self.keep_logs:
            with self._lock:
                self.file_hits[path] += 1
                self.file_requests.append((path, status))

    def thumbnail(self, path: str, version, thumb_name: str) -> tuple[bytes, str]:
        key = f"{path}@{version.sha1}"
        with self._lock:
            cached = self._thumbs.get(key)
        if cached is None:
            cached = media.render(version, thumb_name)
            with self._lock:
                self._thumbs[key] = cached
        return cached


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY every keep-alive response waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_ref: FakeWikiServer
    timeout = 60  # seconds an idle keep-alive connection is held

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None, head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        srv = self.server_ref
        parts = urlsplit(self.path)
        try:
            if parts.path == API_PATH:
                self._api(method, parts.query)
            elif parts.path.startswith("/images/") or parts.path.startswith(media.ICON_DIR):
                began, cpu = time.perf_counter(), time.thread_time()
                self._file(parts.path, method == "HEAD")
                wall = time.perf_counter() - began
                srv._count("file", wall, time.thread_time() - cpu)
                with srv._lock:
                    srv.file_seconds += wall
            elif parts.path.startswith("/wiki/"):
                self._send(200, b"<!DOCTYPE html><title>page</title>", "text/html; charset=UTF-8")
            else:
                self._send(404, b"Not Found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            del srv

    # -- api.php -----------------------------------------------------------------------------

    def _api(self, method: str, query: str) -> None:
        srv, faults = self.server_ref, self.server_ref.faults
        began, cpu = time.perf_counter(), time.thread_time()
        params = dict(parse_qsl(query, keep_blank_values=True))
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            ctype = self.headers.get("Content-Type", "")
            if "multipart/form-data" in ctype:
                params.update(_multipart(body, ctype))
            else:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        kind = request_kind(params)

        def record(status: int) -> None:
            srv._record(ApiRecord(API_PATH, params, status, method, kind,
                                  time.perf_counter() - began, time.thread_time() - cpu))

        if faults.take("drop_connections"):
            record(0)
            self._drop()
            return
        if faults.api_delay:
            time.sleep(faults.api_delay)
        for counter, status, text in (("status_429", 429, "Too Many Requests"),
                                      ("status_503", 503, "Service Unavailable")):
            if faults.take(counter):
                record(status)
                page = (f"<!DOCTYPE html><html><head><title>Wikimedia Error</title></head>"
                        f"<body><p>{status} {text}</p></body></html>").encode()
                self._send(status, page, "text/html; charset=utf-8",
                           {"Retry-After": str(faults.retry_after)})
                return
        maxlag = params.get("maxlag")
        if maxlag is not None and _lagged(maxlag, faults.maxlag_lag) and faults.take(
                "maxlag_responses"):
            record(200)
            lag = faults.maxlag_lag
            retry = faults.maxlag_retry_after
            retry = max(lag, 5) if retry is None else retry
            fv2 = params.get("formatversion") in ("2", "latest")
            error = {"code": "maxlag", "info": f"Waiting for 10.64.48.35: {lag} seconds lagged.",
                     "host": "10.64.48.35", "lag": lag, "type": "db"}
            error["docref" if fv2 else "*"] = f"See {srv.api_url} for API usage."
            body = json.dumps({"error": error, "servedby": "mw-fake1"}).encode()
            self._send(200, body, "application/json; charset=utf-8",
                       {"Retry-After": str(retry), "X-Database-Lag": str(lag),
                        "MediaWiki-API-Error": "maxlag"})
            return

        session, new_cookie = self._session()
        ctx = api.Context(srv.wiki, session, frozenset(faults.error_titles), faults.error_code)
        try:
            result, headers = api.handle(params, ctx, srv.api_url)
        except Exception as exc:  # an internal error, reported as MediaWiki does
            result = {"error": {"code": f"internal_api_error_{type(exc).__name__}",
                                "info": f"[fake] Exception caught: {exc}",
                                "errorclass": type(exc).__name__}}
            headers = {"MediaWiki-API-Error": f"internal_api_error_{type(exc).__name__}"}
        if new_cookie:
            headers["Set-Cookie"] = f"{COOKIE}={session.token}; path=/; HttpOnly"
        body = json.dumps(result, ensure_ascii=params.get("utf8") is None).encode()
        record(200)
        self._send(200, body, "application/json; charset=utf-8", headers, method == "HEAD")

    def _session(self) -> tuple[api.Session, bool]:
        srv = self.server_ref
        cookies = self.headers.get("Cookie", "")
        m = re.search(rf"(?:^|;\s*){COOKIE}=([0-9a-f]+)", cookies)
        with srv._lock:
            if m and m.group(1) in srv.sessions:
                return srv.sessions[m.group(1)], False
            session = api.Session(secrets.token_hex(16))
            srv.sessions[session.token] = session
            return session, True

    # -- files -------------------------------------------------------------------------------

    def _file(self, path: str, head_only: bool) -> None:
        srv, faults = self.server_ref, self.server_ref.faults
        if faults.file_delay:
            time.sleep(faults.file_delay)
        for counter, status in (("file_status_429", 429), ("file_status_503", 503)):
            if faults.take(counter):
                srv._record_file(path, status)
                self._send(status, b"Too many requests", "text/plain",
                           {"Retry-After": str(faults.retry_after)})
                return
        if path.startswith(media.ICON_DIR):
            srv._record_file(path, 200)
            self._send(200, media.icon_png(), "image/png", head_only=head_only)
            return
        thumb = re.fullmatch(r"/images/thumb/[0-9a-f]/[0-9a-f]{2}/([^/]+)/([^/]+)", path)
        orig = re.fullmatch(r"/images/[0-9a-f]/[0-9a-f]{2}/([^/]+)", path)
        match = thumb or orig
        name = unquote(match.group(1)).replace("_", " ") if match else ""
        with srv.wiki.lock:
            record = srv.wiki.files.get(name)
            version = record.current if record else None
        if version is None:
            srv._record_file(path, 404)
            self._send(404, b"404 Not Found", "text/html; charset=utf-8")
            return
        fault = faults.file_fault(name, thumb is not None)
        if fault is not None and fault.kind == "status":
            srv._record_file(path, fault.status)
            self._send(fault.status, f"{fault.status} error".encode(), "text/html")
            return
        if fault is not None and fault.kind == "redirect":
            srv._record_file(path, 302)
            self._send(302, b"", "text/html",
                       {"Location": f"http://127.0.0.2:{srv.port}{path}"})
            return
        if thumb is not None:
            try:
                data, mime = srv.thumbnail(path, version, unquote(thumb.group(2)))
            except Exception:
                srv._record_file(path, 500)
                self._send(500, b"Error generating thumbnail", "text/html")
                return
        else:
            data, mime = version.data, version.mime
        srv._record_file(path, 200)
        if fault is None:
            self._send(200, data, mime, {"Cache-Control": "max-age=31536000"}, head_only)
            return
        self._serve_faulty(fault, data, mime)

    def _serve_faulty(self, fault, data: bytes, mime: str) -> None:
        stopping = self.server_ref._stopping
        if fault.kind == "content_type":
            self._send(200, data, "text/html; charset=utf-8")
            return
        self.send_response(200)
        self.send_header("Content-Type", mime)
        if fault.kind == "endless":
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = (data or b"\0") * max(1, 65536 // max(1, len(data)))
            sent = 0
            while not stopping.is_set() and sent < 1 << 34:  # bytes, stops at 16 GiB
                self.wfile.write(chunk)
                sent += len(chunk)
            return
        if fault.kind == "content_length":
            self.send_header("Content-Length", str(len(data) + fault.length_delta))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True
            return
        # stall: half the body, then silence
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        stopping.wait(fault.stall_seconds)
        self.close_connection = True


class _ReusePortServer(ThreadingHTTPServer):
    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _lagged(maxlag: str, lag: int) -> bool:
    try:
        return lag > int(maxlag)
    except ValueError:
        return True


def _multipart(body: bytes, ctype: str) -> dict[str, str]:
    """Form fields of a multipart POST (file parts are ignored)."""
    m = re.search(r"boundary=\"?([^\";]+)", ctype)
    if not m:
        return {}
    out = {}
    for part in body.split(b"--" + m.group(1).encode()):
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        if name and b"filename=" not in head:
            out[name.group(1).decode()] = value.rstrip(b"\r\n").decode("utf-8", "replace")
    return out
