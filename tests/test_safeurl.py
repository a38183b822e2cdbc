"""`pipeline.safeurl` against local HTTP servers.

User-given URLs must never reach private, loopback or link-local addresses, directly, through a
redirect, or through a name that resolves (or re-resolves) to one; the allow-list is the only way
through, and it names host:port as written in the URL.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from httpserver import Reply, Routes, running

from pipeline import safeurl
from pipeline.errors import FetchError, FetchTimeout, ForbiddenURL, TooLarge

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def local_server() -> Iterator[tuple[str, dict]]:
    routes: dict[str, Reply] = {}
    with running(Routes, routes) as host:
        yield host, routes



@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1",
    # issue 18 #16: 6to4 carrying loopback/private IPv4, site-local, NAT64 and Teredo the same
    "2002:7f00:1::1", "2002:a00:1::1", "2002:a9fe:a9fe::1", "fec0::1", "feff::1",
    "64:ff9b::7f00:1", "2001:0:4136:e378:8000:63bf:80ff:fffe",
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
    routes["/a.png"] = Reply(200, {"Content-Type": "image/png"}, PNG + b"x" * 100)
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
    routes["/hop"] = Reply(302, {"Location": f"http://localhost:{port}/a.png"}, b"", 0.0)
    routes["/ok"] = Reply(302, {"Location": "/a.png"}, b"", 0.0)
    routes["/a.png"] = Reply(200, {"Content-Type": "image/png"}, PNG, 0.0)
    routes["/loop"] = Reply(302, {"Location": "/loop"}, b"", 0.0)
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
    routes["/big"] = Reply(200, {"Content-Type": "image/png"}, PNG + bytes(5000), 0.0)
    routes["/slow"] = Reply(200, {"Content-Type": "image/png"}, PNG + bytes(100), 3.0)
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
    routes["/a.png"] = Reply(200, {"Content-Type": "image/png"}, PNG, 0.0)
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




def test_a_url_with_a_space_is_fetched_as_a_browser_would(local_server):
    """Issue 18 #19: a space in the path was a 502 (http.client refuses it); now encoded."""
    host, routes = local_server
    routes["/a%20b.png"] = Reply(200, {"Content-Type": "image/png"}, PNG)
    got = safeurl.fetch(f"http://{host}/a b.png", max_bytes=1000, timeout=5,
                        allow_hosts=frozenset({host}))
    assert got.data == PNG


def test_a_slow_drip_ends_at_the_deadline(local_server):
    """Issue 18 #7 for user URLs: one byte every 0.2 s must not outlive a 1 s deadline."""
    host, routes = local_server
    routes["/drip"] = Reply(200, {"Content-Type": "image/png"}, PNG + bytes(100), drip=0.2)
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        safeurl.fetch(f"http://{host}/drip", max_bytes=10_000, timeout=1,
                      allow_hosts=frozenset({host}))
    assert time.monotonic() - started < 2
