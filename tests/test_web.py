"""The web API over the crawled fake wiki (`pipeline.safeurl` has test_safeurl.py)."""

from __future__ import annotations

import warnings

import pytest

from pipeline import web
from tests.crawled import Crawled

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its test client; httpx works and is what we install.
    warnings.filterwarnings("ignore", message="Using `httpx`")
    from starlette.testclient import TestClient

PNG = b"\x89PNG\r\n\x1a\n"
TEST_NAMES = frozenset({"testserver"})  # the Host Starlette's TestClient sends


# -- the API -----------------------------------------------------------------------------------

@pytest.fixture
def client(crawled: Crawled) -> TestClient:  # noqa: F811 - the imported fixture
    allowed = crawled.server.base_url.split("//", 1)[1]
    app = web.create_app(web.WebSettings(database_url=crawled.db_url, fetch_timeout=10,
                                         max_upload_bytes=2_000_000,
                                         allow_hosts=frozenset({allowed}),
                                         served_names=TEST_NAMES))
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
    # One match for the file and its exact duplicates (same SHA-1), with all their articles.
    grouped = [name] + [d["title"] for d in match["duplicates"]]
    assert {a["title"] for a in match["articles"]} == set().union(
        *(crawled.used.get(t, set()) for t in grouped))
    assert crawled.used[name] <= {a["title"] for a in match["articles"]}
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
    app = web.create_app(web.WebSettings(database_url="postgresql://postgres@127.0.0.1:1/none",
                                         served_names=TEST_NAMES))
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
                                         auth="reader:long-passphrase",
                                         served_names=TEST_NAMES))
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


# -- issue 18: concurrency, overload, slow clients, hostile requests ---------------------------

import io  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import httpx  # noqa: E402
import psycopg2  # noqa: E402
from httpserver import Reply, Routes, running  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline import storage  # noqa: E402
from tests.liveweb import Live  # noqa: E402


@pytest.fixture
def small_index(db_url) -> str:
    """A ledger with a few hashed files and a hostile wiki `server` (javascript:)."""
    storage.migrate(db_url)
    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO wiki_info VALUES"
                    " ('server', 'javascript:alert(document.domain)//'),"
                    " ('articlepath', '/wiki/$1')")
        for i in range(5):
            cur.execute("INSERT INTO pages (page_id, title) VALUES (%s, %s)", (i, f"Page {i}"))
            cur.execute("INSERT INTO files (title, state, dhash) VALUES (%s, 'hashed', %s)"
                        " RETURNING file_id", (f"File {i}.png", _query_hash() ^ i))
            cur.execute("INSERT INTO usages (page_id, file_id) VALUES (%s, %s)",
                        (i, cur.fetchone()[0]))
    conn.close()
    return db_url


def _query_png() -> bytes:
    image = Image.linear_gradient("L").resize((200, 150)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _query_hash() -> int:
    from pipeline import imaging

    return imaging.hash_bytes(_query_png()).int64


@pytest.fixture
def live(small_index):
    started = []

    def start(**settings):
        header_timeout = settings.pop("header_timeout", web.HEADER_TIMEOUT)
        app = web.create_app(web.WebSettings(database_url=small_index, **settings))
        started.append(Live(app, header_timeout))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _together(n: int, call) -> list:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))


def test_simultaneous_first_requests_and_more_than_the_pool_all_succeed(live):
    """Issue 18 #3-4: 5 concurrent searches gave a 500 (pool of 4 errors instead of waiting);
    the first 4 requests after start three 500s (pool made racily)."""
    server = live(db_connections=2, queue_wait=60)
    png = _query_png()

    def search():
        return httpx.post(server.url + "/api/search", files={"image": ("q.png", png)},
                          timeout=60).status_code

    assert _together(12, search) == [200] * 12
    assert _together(12, lambda: httpx.get(server.url + "/api/stats").status_code) == [200] * 12


def test_overload_is_503_with_retry_after_never_500(live, monkeypatch):
    server = live(db_connections=1, queue_wait=0.2)
    monkeypatch.setattr(web.search, "stats", _slow_stats)
    answers = _together(8, lambda: httpx.get(server.url + "/api/stats", timeout=30))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 503}, statuses
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["Retry-After"].isdigit()
    assert "busy" in refused.json()["error"]


def _slow_stats(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_sleep(1)")
    return {}


def test_slow_remote_servers_do_not_starve_other_requests(live):
    """Issue 18 #5: 45 URL searches against a slow server delayed /api/stats by 8.7 s."""
    routes = {"/slow.png": Reply(200, {"Content-Type": "image/png"}, _query_png(), delay=4.0)}
    with running(Routes, routes) as host:
        server = live(allow_hosts=frozenset({host}), fetch_timeout=10)
        with ThreadPoolExecutor(45) as pool:
            pending = [pool.submit(httpx.post, server.url + "/api/search",
                                   data={"url": f"http://{host}/slow.png"}, timeout=60)
                       for _ in range(45)]
            time.sleep(1.0)
            started = time.monotonic()
            assert httpx.get(server.url + "/api/stats", timeout=30).status_code == 200
            assert time.monotonic() - started < 1.0
            statuses = {p.result().status_code for p in pending}
    assert statuses <= {200, 503}, statuses


def test_connections_that_trickle_headers_or_bodies_are_closed(live):
    """Issue 18 #5: 300 slowloris connections were held open indefinitely."""
    server = live(header_timeout=1.0)
    sockets = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        sockets.append(sock)
    idle = socket.create_connection(("127.0.0.1", server.port))  # connects, sends nothing
    time.sleep(2.5)
    for sock in [*sockets, idle]:
        sock.settimeout(2)
        assert sock.recv(100) == b""  # closed by the server
        sock.close()
    # a body that stops arriving: 408, and the connection is closed
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 100\r\n\r\n{\"url\"")
    sock.settimeout(web.BODY_IDLE + 5)
    assert sock.recv(100).startswith(b"HTTP/1.1 408")
    sock.close()
    assert httpx.get(server.url + "/api/stats").status_code == 200


def test_hostile_requests_are_400s_and_links_are_http_only(live):
    """Issue 18 #10, #14, #15, #18, #19."""
    server = live()
    png = _query_png()
    got = httpx.post(server.url + "/api/search", files={"image": ("q.png", png)})
    assert got.status_code == 200, got.text
    for match in got.json()["matches"]:  # a javascript: "server" from the wiki is no link
        assert match["file_url"] is None
        assert all(not a["url"].lower().startswith("javascript") for a in match["articles"])
    headers = got.headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    deep = "[" * 100_000 + "]" * 100_000
    cases = [
        (httpx.post(server.url + "/api/search", content=deep,
                    headers={"Content-Type": "application/json"}), 400),
        (httpx.post(server.url + "/api/search",
                    content=json.dumps({"url": "x", "max_distance": 17}),
                    headers={"Content-Type": "APPLICATION/JSON"}), 400),
        (httpx.get(server.url + "/api/stats", headers={"Host": "rebind.attacker.example"}), 403),
        (httpx.post(server.url + "/api/search", data={"url": "http://x.test/a.png"},
                    headers={"Origin": "http://attacker.example"}), 403),
        (httpx.post(server.url + "/api/search", files={"image": ("q.png", png)},
                    headers={"Content-Type": "Multipart/Form-Data; boundary=x"}), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert set(response.json()) == {"error"}
    same_origin = httpx.post(server.url + "/api/search", files={"image": ("q.png", png)},
                             headers={"Origin": server.url})
    assert same_origin.status_code == 200


def test_a_non_ascii_authorization_header_is_a_400(small_index):
    app = web.create_app(web.WebSettings(database_url=small_index, auth="reader:long-passphrase",
                                         served_names=TEST_NAMES))
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/", headers={"Authorization": "Basic été".encode()})
    assert response.status_code == 400


@pytest.mark.parametrize("variable, command", [("WIKIHASH_SERVE_AUTH", ["serve", "--address",
                                                                         "0.0.0.0"]),
                                                ("WIKIHASH_FLOWER_AUTH", ["flower"])])
@pytest.mark.parametrize("value", [":", "user:", ":password", " : "])
def test_empty_credentials_are_refused(monkeypatch, variable, command, value):
    """Issue 18 #13: ":" let serve bind beyond loopback and started an open Flower."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    monkeypatch.setenv(variable, value)
    refused = CliRunner().invoke(cli, command)
    assert refused.exit_code == 1
    assert variable in refused.output


def test_the_page_links_only_http_urls():
    """Issue 18 #10 in the page itself: app.js's safeUrl, run by node when it is installed."""
    import re
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = (web.STATIC / "app.js").read_text()
    function = re.search(r"function safeUrl\(value\) \{.*?\n\}\n", source, re.DOTALL).group(0)
    script = ("const window = {location: {href: 'http://127.0.0.1:8000/'}};\n" + function +
              "console.log(JSON.stringify(['javascript:alert(1)', ' JavaScript:alert(1)',"
              " 'data:text/html,x', 'https://en.wikipedia.org/wiki/A', '/wiki/B']"
              ".map(safeUrl)));")
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30)
    assert json.loads(out.stdout) == [None, None, None, "https://en.wikipedia.org/wiki/A",
                                      "http://127.0.0.1:8000/wiki/B"]
