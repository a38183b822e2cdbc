"""End to end: a fake wiki on 127.0.0.1, real PostgreSQL, Redis and Celery worker processes.

The crawl must leave the ledger equal to the wiki's truth: every article and its files, every
file's hash equal to the canonical hash of the bytes served, each content downloaded once,
missing files marked missing.
"""

from __future__ import annotations

import pytest
import requests
from fakewiki import FakeWikiServer, Faults
from wikis import build_wiki

from pipeline import imaging
from tests.conftest import sql_rows

pytestmark = pytest.mark.slow


def assert_ledger_matches(db_url, truth, server):
    """The ledger equals the wiki's truth, and every hash is the canonical hash of its bytes."""
    usages = sql_rows(db_url, "SELECT p.title, f.title FROM pages p"
                                 " LEFT JOIN usages u USING (page_id)"
                                 " LEFT JOIN files f USING (file_id)")
    found: dict[str, set[str]] = {}
    for page, file in usages:
        found.setdefault(page, set())
        if file:
            found[page].add(file)
    assert found == truth.articles

    # Files used by an article; a file no article uses any more is out of the index. The truth's
    # special files count only where the draw put them in an article: which ones it does
    # depends on the image pool (tests/data or the shared corpus).
    used = set().union(*truth.articles.values())
    missing, unsupported = truth.missing & used, truth.unsupported & used
    corrupt = truth.corrupt & used
    states = dict(sql_rows(db_url, "SELECT title, state FROM files f WHERE EXISTS"
                                      " (SELECT 1 FROM usages u WHERE u.file_id = f.file_id)"))
    assert {t for t, s in states.items() if s == "missing"} == missing
    assert {t for t, s in states.items() if s == "unsupported"} == unsupported
    assert {t for t, s in states.items() if s == "failed"} == corrupt
    assert "pending" not in states.values()

    hashed = sql_rows(db_url, "SELECT title, dhash, coalesce(thumb_url, url), hashed_from,"
                                 " low_information FROM files f WHERE state = 'hashed' AND"
                                 " EXISTS (SELECT 1 FROM usages u WHERE u.file_id = f.file_id)")
    assert len(hashed) == len(states) - len(missing | unsupported | corrupt)
    session = requests.Session()
    session.trust_env = False
    for title, dhash, url, source, low in hashed:
        assert source == ("thumb" if "/thumb/" in url else "original")
        result = imaging.hash_bytes(session.get(url, timeout=10).content)
        assert (title, dhash, low) == (title, result.int64, result.low_information)


def test_full_crawl_matches_the_wiki(db_url, crawl_env):
    wiki, commons, truth = build_wiki()
    with FakeWikiServer(commons) as shared, FakeWikiServer(wiki, faults=Faults()) as server:
        env = crawl_env(server.api_url)
        with env.workers(2):
            result = env.wikihash("crawl", timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "nothing pending" in result.stdout

        # Each distinct content was downloaded once, from the wiki's own hosts.
        hits = server.file_hits + shared.file_hits
        assert hits and max(hits.values()) == 1, hits.most_common(3)
        contents = sql_rows(db_url, "SELECT count(DISTINCT sha1) FROM files"
                                       " WHERE state IN ('hashed', 'failed')")[0][0]
        # The thumbnailer cannot scale the corrupt file: its original is tried after the thumb.
        fallbacks = [path for path in hits if "Broken.jpg" in path]
        assert len(fallbacks) == 2
        assert sum(hits.values()) == contents + 1
        # Every API call carried maxlag=5.
        assert server.requests and all(r.params.get("maxlag") == "5" for r in server.requests)

        assert_ledger_matches(db_url, truth, server)

        # The tutorial's query finds an article through its image.
        title, dhash = sql_rows(db_url, "SELECT p.title, f.dhash FROM files f"
                                           " JOIN usages USING (file_id) JOIN pages p"
                                           " USING (page_id) WHERE f.state = 'hashed'"
                                           " LIMIT 1")[0]
        urls = {u for (u,) in sql_rows(db_url, "SELECT url FROM hashes"
                                                  " WHERE hash <@ (%s, 3)", (dhash,))}
        assert title.replace(" ", "_") in urls

        # A second run does nothing new.
        server.reset_logs()
        shared.reset_logs()
        again = env.wikihash("crawl", timeout=60)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "walked 0 articles" in again.stdout
        assert not server.file_hits and not shared.file_hits
