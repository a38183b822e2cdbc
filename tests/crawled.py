"""The session's crawled fake wiki, for the tests that search, serve and export it.

The fixture `crawled` (tests/conftest.py, session scope) calls `crawl` once per test session;
the fake wiki keeps serving until the session ends, so thumbnails and URLs stay live.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field

import pytest
import redis
from fakewiki import FakeWiki, FakeWikiServer
from wikis import Truth, build_wiki

from pipeline import storage
from tests.conftest import REDIS_URL, admin_execute, database_url, sql_rows

SEARCH_REDIS_DB = 11  # flushed by the session crawl; nothing else may live there


@dataclass
class Crawled:
    db_url: str
    wiki: FakeWiki
    commons: FakeWiki
    server: FakeWikiServer
    shared: FakeWikiServer
    truth: Truth
    used: dict[str, set[str]] = field(default_factory=dict)  # hashed file -> articles using it

    def data(self, name: str) -> bytes:
        record, _ = self.wiki.find_file(name)
        return record.current.data

    def rows(self, query: str, args=()) -> list[tuple]:
        return sql_rows(self.db_url, query, args)


def crawl(request: pytest.FixtureRequest) -> Crawled:
    """A small fake wiki (the corpus and a few generated images) crawled with real workers."""
    name = f"wikihash_test_search_{uuid.uuid4().hex[:8]}"
    url = database_url(name)
    storage.migrate(url)
    request.session.config.add_cleanup(
        lambda: admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    wiki, commons, truth = build_wiki(articles=60, generated=10, big_article_images=0)
    shared = FakeWikiServer(commons).start()
    server = FakeWikiServer(wiki).start()
    request.session.config.add_cleanup(shared.stop)
    request.session.config.add_cleanup(server.stop)
    broker = f"{REDIS_URL}/{SEARCH_REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    env = dict(os.environ, WIKIHASH_DATABASE_URL=url, WIKIHASH_BROKER_URL=broker,
               WIKIHASH_API_URL=server.api_url,
               WIKIHASH_USER_AGENT="wikihash-test/0.1 (test@example.org)",
               WIKIHASH_MAX_DOWNLOADS="4", WIKIHASH_MAX_MBITS="1000",
               WIKIHASH_FETCH_TIMEOUT="10", WIKIHASH_REQUEUE_AFTER="20")
    try:
        # `--workers 2`: the crawl's own worker processes (pipeline/ownworkers.py), stopped
        # when it ends.
        done = subprocess.run([sys.executable, "-m", "pipeline", "crawl", "--workers", "2"],
                              env=env, capture_output=True, text=True, timeout=240)
    finally:
        redis.Redis.from_url(broker).flushdb()
    assert done.returncode == 0, done.stderr[-3000:]
    result = Crawled(url, wiki, commons, server, shared, truth)
    for page, file in result.rows("SELECT p.title, f.title FROM usages JOIN pages p USING"
                                  " (page_id) JOIN files f USING (file_id)"
                                  " WHERE f.state = 'hashed'"):
        result.used.setdefault(file, set()).add(page)
    return result
