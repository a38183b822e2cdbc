"""Fetching a URL a user gave us, without letting it reach private addresses (SSRF).

`fetch(url)` is for URLs typed into `wikihash search` or pasted into the web page: unlike the
crawl's `pipeline.fetch`, whose hosts are the ones the wiki named, any public host is allowed, so
every address must be checked:

1. only `http` and `https`, no user:password in the URL;
2. the host is resolved once and every address it resolves to is checked: private, loopback,
   link-local, multicast, reserved and unspecified addresses are refused (IPv4-mapped IPv6 is
   checked as the IPv4 address it carries, and so are 6to4 `2002::/16`, Teredo and NAT64
   `64:ff9b::/96`; site-local `fec0::/10` is refused);
3. the connection goes to the address that was checked (pinned: a second DNS answer cannot
   rebind the name to 127.0.0.1); TLS still verifies the certificate for the host name;
4. redirects are followed by hand, at most `MAX_REDIRECTS`, each hop checked the same way;
5. the whole fetch has one deadline and a byte cap (the crawl's WIKIHASH_FETCH_TIMEOUT and
   WIKIHASH_MAX_BYTES by default): the download itself is `pipeline.fetch.get`'s, the one
   owner of redirects, caps and deadlines; this module is the address policy.

`allow_hosts` ("127.0.0.1:8080", "localhost:8080") lets an operator or a test reach a named
host:port that the address check would refuse; it is matched against the URL as written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pipeline import fetch as downloads
from pipeline.errors import ForbiddenURL

__all__ = ["Fetched", "check_address", "fetch", "normalise_allow"]

USER_AGENT = "wikihash-search/0.1 (reverse image search; fetches one image a user asked for)"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")

Fetched = downloads.Download


def check_address(address: str) -> None:
    """Raise `ForbiddenURL` unless `address` (an IP literal) is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _SITE_LOCAL:
            raise ForbiddenURL(f"refused: {address} is a site-local address")
        for embedded in _embedded_ipv4(ip):
            check_address(str(embedded))
        if ip.ipv4_mapped is not None:
            return
    for flag in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved",
                 "is_private"):
        if getattr(ip, flag):
            kind = flag[3:].replace("_", "-")
            raise ForbiddenURL(f"refused: {address} is a {kind} address")
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, ...
        raise ForbiddenURL(f"refused: {address} is not a public address")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries to be reached through (mapped, 6to4,
    Teredo's client, NAT64)."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.append(ip.teredo[1])
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def normalise_allow(hosts: Iterable[str]) -> frozenset[str]:
    """Allow-list entries as `host:port`, lower case."""
    return frozenset(h.strip().lower() for h in hosts if h.strip())


def fetch(url: str, *, max_bytes: int, timeout: float,
          allow_hosts: frozenset[str] = frozenset(),
          user_agent: str = USER_AGENT) -> Fetched:
    """GET `url` within `timeout` seconds and `max_bytes` bytes, public addresses only."""

    def route(hop: str) -> downloads.Target:
        scheme, host, port, path = downloads.split_url(hop)
        parts = downloads.urlsplit(hop.strip())
        if parts.username is not None or parts.password is not None:
            raise ForbiddenURL("URLs with a user name or password are refused")
        allowed = f"{host}:{port}" in allow_hosts or (
            ":" in host and f"[{host}]:{port}" in allow_hosts)
        addresses = downloads.resolve(host, port)
        if not allowed:
            for address in addresses:
                check_address(address)
        return downloads.Target(scheme, host, port, path, addresses[0])

    session = downloads.Session(user_agent)
    try:
        return downloads.get(session, url, route=route, max_bytes=max_bytes, timeout=timeout)
    finally:
        session.close()
