"""`pipeline.web`'s app on a real uvicorn server (web.server) on 127.0.0.1, in a daemon thread,
for the tests that talk to it over real HTTP (tests/test_web.py, tests/test_duplicates.py)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from pipeline import web
from tests.services import free_port


class Live:
    """The app served on a free port from construction until `stop()`."""

    def __init__(self, app, header_timeout: float = web.HEADER_TIMEOUT) -> None:
        self.port = free_port()
        self.server = web.server(app, "127.0.0.1", self.port, header_timeout=header_timeout)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, dict | str]:
        """GET `path`: the status and the body, parsed when it is JSON."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as answer:
                body = answer.read().decode()
                status = answer.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
