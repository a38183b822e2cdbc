"""A ledger belongs to one wiki: the one whose `wikiid` and `server` its first crawl recorded.

Pointing an existing ledger at another wiki used to rewrite the stored name and server, so
every article link went to the wrong wiki and a re-crawl read the wrong change feed. Now the
crawl and the re-crawl call `check()` with the wiki's siteinfo before writing anything.
"""

from __future__ import annotations

from pipeline.errors import WikihashError
from pipeline.storage import Connection

KEYS = ("wikiid", "server")  # what identifies a wiki; sitename and paths may change


class WrongWiki(WikihashError):
    """The ledger was filled from another wiki."""


def check(conn: Connection, siteinfo: dict, api_url: str) -> None:
    """Raise WrongWiki when the ledger at `conn` holds another wiki than `siteinfo`'s."""
    with conn.cursor() as cur:
        cur.execute("SELECT key, value FROM wiki_info WHERE key = ANY(%s)",
                    (list(KEYS) + ["api_url"],))
        stored = dict(cur.fetchall())
    differs = [k for k in KEYS if stored.get(k) and k in siteinfo
               and str(siteinfo[k]) != stored[k]]
    if differs:
        def name(facts: dict, url: str | None) -> str:
            return f"{facts.get('wikiid', '?')} at {facts.get('server', '?')}" + (
                f" ({url})" if url else "")

        raise WrongWiki(
            f"this ledger holds {name(stored, stored.get('api_url'))}, not "
            f"{name(siteinfo, api_url)}: use another WIKIHASH_DATABASE_URL for that wiki")
