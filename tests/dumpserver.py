"""A dump server for tests: serves a directory of dump runs on 127.0.0.1 like Wikimedia's.

GET with Range (206 and Content-Range), directory listings with one link per run, and faults:
`cut[name] = n` ends the next transfer of a file after n bytes (the connection drops), `busy`
answers that many requests with 429 and Retry-After: 1. Every request is logged.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Request:
    path: str
    range: str | None
    user_agent: str
    status: int


@dataclass
class DumpServer:
    root: Path
    cut: dict[str, int] = field(default_factory=dict)
    busy: int = 0
    log: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def __enter__(self) -> DumpServer:
        handler = type("Handler", (_Handler,), {"dump_server": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    def take_busy(self) -> bool:
        with self._lock:
            if self.busy > 0:
                self.busy -= 1
                return True
            return False

    def take_cut(self, name: str) -> int | None:
        with self._lock:
            return self.cut.pop(name, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    dump_server: DumpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.dump_server
        path = unquote(urlsplit(self.path).path)
        ranged = self.headers.get("Range")
        agent = self.headers.get("User-Agent", "")

        def send(status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            srv.record(Request(path, ranged, agent, status))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        if srv.take_busy():
            send(429, b"slow down", {"Retry-After": "1"})
            return
        target = (srv.root / path.lstrip("/")).resolve()
        if not str(target).startswith(str(srv.root.resolve())) or not target.exists():
            send(404, b"not found")
            return
        if target.is_dir():
            links = "".join(f'<a href="{p.name}/">{p.name}/</a>\n' for p in sorted(target.iterdir())
                            if p.is_dir())
            send(200, f"<html><body>{links}</body></html>".encode(), {"Content-Type": "text/html"})
            return
        data = target.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", ranged or "")
        if match:
            start = int(match.group(1))
            if start >= len(data):
                send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
        body = data[start:]
        status = 206 if match else 200
        srv.record(Request(path, ranged, agent, status))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.take_cut(target.name)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)
