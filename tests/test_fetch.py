"""Bounded downloads against a real HTTP server on 127.0.0.1 that misbehaves on purpose."""

import time
from http.server import BaseHTTPRequestHandler

import pytest
from httpserver import running

from pipeline import fetch
from pipeline.errors import FetchError, FetchTimeout, ForbiddenURL, HTTPStatusError, TooLarge

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        route = self.path.split("?")[0]
        if route == "/ok.png":
            self._send(200, PNG, "image/png")
        elif route == "/html":
            self._send(200, b"<html>oops</html>", "text/html; charset=utf-8")
        elif route == "/404":
            self._send(404, b"no", "text/plain")
        elif route == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif route == "/endless":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\xff" * 65536)
            except OSError:
                pass
        elif route == "/stall":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(PNG[:50])
            self.wfile.flush()
            time.sleep(5)
        elif route == "/short":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(PNG)
            self.wfile.flush()
            self.close_connection = True
        elif route == "/away":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:9/elsewhere.png")
            self.end_headers()
        elif route == "/drip":  # a slow-drip server: a byte every 0.5 s, each within any timeout
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            try:
                for byte in PNG:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass
        elif route == "/space%20in.png":
            self._send(200, PNG, "IMAGE/PNG")
        elif route == "/here":
            self.send_response(301)
            self.send_header("Location", "/ok.png")
            self.end_headers()

    def _send(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    with running(Handler) as host:
        yield f"http://{host}"


def get(server, path, **kw):
    options = dict(allowed_hosts={server}, max_bytes=1_000_000, timeout=3.0)
    options.update(kw)
    return fetch.download(fetch.new_session("wikihash-test/0 (test@example.org)"),
                          server + path, **options)


def test_ok_and_same_host_redirect(server):
    assert get(server, "/ok.png").data == PNG
    assert get(server, "/here").data == PNG


@pytest.mark.parametrize("path, error, retryable", [
    ("/html", FetchError, False),
    ("/404", HTTPStatusError, False),
    ("/big-declared", TooLarge, False),
    ("/endless", TooLarge, False),
    ("/stall", FetchTimeout, True),
    ("/short", FetchError, True),
    ("/drip", FetchTimeout, True),  # issue 18 #7: returned after 125 s with timeout=5
    ("/away", ForbiddenURL, False),
])
def test_misbehaving_server_ends_in_a_typed_error_in_time(server, path, error, retryable):
    start = time.monotonic()
    with pytest.raises(error) as caught:
        get(server, path)
    assert time.monotonic() - start < 4.5  # the 3 s limit, plus slack
    assert caught.value.retryable is retryable


def test_host_not_named_by_the_wiki_is_refused(server):
    with pytest.raises(ForbiddenURL):
        get(server, "/ok.png", allowed_hosts={"http://127.0.0.1:1"})


def test_a_space_and_an_upper_case_content_type_are_accepted(server):
    assert get(server, "/space in.png").data == PNG


class KeepAlive(Handler):
    protocol_version = "HTTP/1.1"


def test_connections_are_reused_within_a_session():
    session = fetch.new_session("wikihash-test/0 (test@example.org)")
    with running(KeepAlive) as host:
        base = f"http://{host}"
        for _ in range(3):
            got = fetch.download(session, base + "/ok.png", allowed_hosts={base},
                                 max_bytes=10_000, timeout=3)
            assert got.data == PNG
            assert len(session._idle) == 1
        session.close()
