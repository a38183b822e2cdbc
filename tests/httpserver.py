"""One local HTTP server for tests: a handler class served on 127.0.0.1 in a daemon thread.

`running(Handler)` yields "127.0.0.1:PORT"; `Routes` is a handler answering from a table
(path -> `Reply`), for tests that only need canned answers, delays and trickles.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds of silence after the first 10 bytes of the body
    drip: float = 0.0  # seconds between single bytes of the body (a slow-drip server)


class Routes(http.server.BaseHTTPRequestHandler):
    """Answers GET from `routes` (set per server by `running(Routes, routes)`); 404 otherwise."""

    routes: dict[str, Reply] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        reply = self.routes.get(self.path.split("?")[0], Reply(404, {}, b"no"))
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        try:
            if reply.drip:
                for byte in reply.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(reply.drip)
                return
            if reply.delay:
                self.wfile.write(reply.body[:10])
                self.wfile.flush()
                time.sleep(reply.delay)
                reply = Reply(body=reply.body[10:])
            self.wfile.write(reply.body)
        except OSError:
            pass


@contextlib.contextmanager
def running(handler: type[http.server.BaseHTTPRequestHandler],
            routes: dict[str, Reply] | None = None) -> Iterator[str]:
    """Serve `handler` (with its own `routes` table, when given) on 127.0.0.1; yields host:port."""
    if routes is not None:
        handler = type(handler.__name__, (handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
