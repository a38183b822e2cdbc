"""The web API over the crawled fake wiki, and `pipeline.safeurl` against local HTTP servers.

User-given URLs must never reach private, loopback or link-local addresses, directly, through a
redirect, or through a name that resolves (or re-resolves) to one; the allow-list is the only way
through, and it names host:port as written in the URL.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
import warnings
from collections.abc import Iterator

import pytest

from pipeline import safeurl, web
from pipeline.errors import FetchError, FetchTimeout, ForbiddenURL, TooLarge
from tests.crawled import Crawled

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its test client; httpx works and is what we install.
    warnings.filterwarnings("ignore", message="Using `httpx`")
    from starlette.testclient import TestClient

PNG = b"\x89PNG\r\n\x1a\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        status, headers, body, delay = self.routes.get(self.path, (404, {}, b"no", 0.0))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if delay:
            self.wfile.write(body[:10])
            self.wfile.flush()
            time.sleep(delay)
        try:
            self.wfile.write(body)
        except OSError:
            pass


@pytest.fixture
def local_server() -> Iterator[tuple[str, dict]]:
    routes: dict = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


# -- safeurl ---------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1",
])
def test_private_addresses_are_refused(address):
    with pytest.raises(ForbiddenURL):
        safeurl.check_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    safeurl.check_address(address)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.png", "gopher://x/",
                                 "http://user:pw@example.org/x.png", "http:///x.png",
                                 "http://[::1/"])
def test_bad_urls_are_refused_before_any_connection(url):
    with pytest.raises(ForbiddenURL):
        safeurl.fetch(url, max_bytes=1000, timeout=5)


def test_loopback_is_refused_unless_allow_listed(local_server):
    host, routes = local_server
    routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG + b"x" * 100, 0.0)
    with pytest.raises(ForbiddenURL, match="loopback"):
        safeurl.fetch(f"http://{host}/a.png", max_bytes=10_000, timeout=5)
    port = host.split(":")[1]
    with pytest.raises(ForbiddenURL):  # the allow-list names host:port as written
        safeurl.fetch(f"http://localhost:{port}/a.png", max_bytes=10_000, timeout=5,
                      allow_hosts=frozenset({host}))
    got = safeurl.fetch(f"http://{host}/a.png", max_bytes=10_000, timeout=5,
                        allow_hosts=frozenset({host}))
    assert got.data.startswith(PNG) and got.content_type == "image/png"


def test_every_redirect_hop_is_checked(local_server):
    host, routes = local_server
    port = host.split(":")[1]
    routes["/hop"] = (302, {"Location": f"http://localhost:{port}/a.png"}, b"", 0.0)
    routes["/ok"] = (302, {"Location": "/a.png"}, b"", 0.0)
    routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG, 0.0)
    routes["/loop"] = (302, {"Location": "/loop"}, b"", 0.0)
    allow = frozenset({host})
    with pytest.raises(ForbiddenURL):
        safeurl.fetch(f"http://{host}/hop", max_bytes=1000, timeout=5, allow_hosts=allow)
    assert safeurl.fetch(f"http://{host}/ok", max_bytes=1000, timeout=5,
                         allow_hosts=allow).url.endswith("/a.png")
    with pytest.raises(FetchError, match="redirects"):
        safeurl.fetch(f"http://{host}/loop", max_bytes=1000, timeout=5, allow_hosts=allow)


def test_size_and_time_limits(local_server):
    host, routes = local_server
    allow = frozenset({host})
    routes["/big"] = (200, {"Content-Type": "image/png"}, PNG + bytes(5000), 0.0)
    routes["/slow"] = (200, {"Content-Type": "image/png"}, PNG + bytes(100), 3.0)
    with pytest.raises(TooLarge):
        safeurl.fetch(f"http://{host}/big", max_bytes=1000, timeout=5, allow_hosts=allow)
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        safeurl.fetch(f"http://{host}/slow", max_bytes=10_000, timeout=1, allow_hosts=allow)
    assert time.monotonic() - started < 2.5


def test_a_name_with_any_private_address_is_refused(monkeypatch):
    def resolve(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(ForbiddenURL, match="10.0.0.7"):
        safeurl.fetch("http://images.example/x.png", max_bytes=1000, timeout=5)


def test_the_connection_goes_to_the_checked_address(monkeypatch, local_server):
    """DNS rebinding: the name is resolved once and the socket connects to that address."""
    host, routes = local_server
    port = int(host.split(":")[1])
    routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG, 0.0)
    lookups = []
    real_resolve = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host != "rebind.example":
            return real_resolve(host, *args, **kwargs)  # the IP literal create_connection gets
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "93.184.216.34"  # a rebinding DNS
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    connected = []
    real = socket.create_connection

    def create_connection(address, *args, **kwargs):
        connected.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    got = safeurl.fetch(f"http://rebind.example:{port}/a.png", max_bytes=1000, timeout=5,
                        allow_hosts=frozenset({f"rebind.example:{port}"}))
    assert got.data == PNG
    assert connected == [("127.0.0.1", port)]
    assert lookups == ["rebind.example"]


# -- the API -----------------------------------------------------------------------------------

@pytest.fixture
def client(crawled: Crawled) -> TestClient:  # noqa: F811 - the imported fixture
    allowed = crawled.server.base_url.split("//", 1)[1]
    app = web.create_app(web.WebSettings(database_url=crawled.db_url, fetch_timeout=10,
                                         max_upload_bytes=2_000_000,
                                         allow_hosts=frozenset({allowed})))
    return TestClient(app, raise_server_exceptions=False)


def _a_used_file(crawled: Crawled, on_server) -> tuple[str, str]:  # noqa: F811
    return crawled.rows("SELECT title, coalesce(thumb_url, url) FROM files"
                        " WHERE state = 'hashed' AND url LIKE %s"
                        " AND EXISTS (SELECT 1 FROM usages u WHERE u.file_id = files.file_id)"
                        " ORDER BY title LIMIT 1", (on_server.base_url + "%",))[0]


def test_upload_finds_the_articles(client, crawled):  # noqa: F811
    name, _ = _a_used_file(crawled, crawled.server)
    response = client.post("/api/search", files={"image": ("q.png", crawled.data(name))})
    assert response.status_code == 200, response.text
    answer = response.json()
    match = {m["title"]: m for m in answer["matches"]}[name]
    assert {a["title"] for a in match["articles"]} == crawled.used[name]
    assert all(a["url"].startswith(crawled.server.base_url + "/wiki/") for a in match["articles"])
    assert answer["source"] == "upload"
    assert answer["max_distance"] == 8


def test_url_on_a_private_address_is_refused_and_the_allowed_one_accepted(client, crawled):  # noqa: F811
    _, refused_url = _a_used_file(crawled, crawled.shared)
    response = client.post("/api/search", data={"url": refused_url})
    assert response.status_code == 400
    assert "loopback" in response.json()["error"]
    name, allowed_url = _a_used_file(crawled, crawled.server)
    response = client.post("/api/search", data={"url": allowed_url, "nearest": "3"})
    assert response.status_code == 200, response.text
    assert response.json()["matches"][0]["title"] == name
    assert response.json()["matches"][0]["distance"] == 0
    as_json = client.post("/api/search", json={"url": allowed_url})
    assert as_json.status_code == 200


def test_errors_are_json_with_proper_statuses(client):
    cases = [
        (client.post("/api/search", data={"url": ""}), 400),
        (client.post("/api/search", files={"image": ("x.png", b"not an image")}), 422),
        (client.post("/api/search", files={"image": ("x.png", b"x" * 2_500_000)}), 413),
        (client.post("/api/search", data={"url": "file:///etc/passwd"}), 400),
        (client.post("/api/search", data={"url": "http://169.254.169.254/latest/"}), 400),
        (client.post("/api/search", data={"url": "http://x.test/", "max_distance": "x"}), 400),
        (client.post("/api/search", content=b"{", headers={"Content-Type": "application/json"}),
         400),
        (client.post("/api/search", content=b"raw", headers={"Content-Type": "image/png"}), 415),
        (client.get("/api/nothing"), 404),
        (client.get("/api/search"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert set(response.json()) == {"error"}
        assert "Traceback" not in response.text


def test_a_streamed_body_over_the_cap_is_cut_off(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 100_000

    response = client.post("/api/search", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_database_down_is_503(tmp_path):
    app = web.create_app(web.WebSettings(database_url="postgresql://postgres@127.0.0.1:1/none"))
    response = TestClient(app, raise_server_exceptions=False).get("/api/stats")
    assert response.status_code == 503
    assert set(response.json()) == {"error"}


def test_stats_and_page(client, crawled):  # noqa: F811
    stats = client.get("/api/stats").json()
    assert stats["hashed"] == len(crawled.rows("SELECT 1 FROM files WHERE state = 'hashed'"))
    assert stats["articles"] == len(crawled.rows("SELECT 1 FROM pages"))
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file"' in page.text and 'id="url"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_basic_auth_guards_every_route(tmp_path):
    app = web.create_app(web.WebSettings(database_url="postgresql://postgres@127.0.0.1:1/none",
                                         auth="reader:long-passphrase"))
    anonymous = TestClient(app, raise_server_exceptions=False)
    for path in ("/", "/api/stats"):
        response = anonymous.get(path)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert anonymous.post("/api/search", data={"url": "http://x"}).status_code == 401
    assert anonymous.get("/", auth=("reader", "wrong")).status_code == 401
    assert anonymous.get("/", auth=("reader", "long-passphrase")).status_code == 200


def test_serve_beyond_loopback_needs_a_password(monkeypatch):
    from click.testing import CliRunner

    from pipeline.cli import cli

    monkeypatch.delenv("WIKIHASH_SERVE_AUTH", raising=False)
    refused = CliRunner().invoke(cli, ["serve", "--address", "0.0.0.0"])
    assert refused.exit_code == 1
    assert "WIKIHASH_SERVE_AUTH" in refused.output
