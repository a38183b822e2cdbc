"""A ledger belongs to one wiki: a crawl or re-crawl of another is refused, naming both."""

from __future__ import annotations

import datetime as dt

import pytest
from fakewiki import FakeWiki, FakeWikiServer
from wikis import generated_image

from pipeline import storage
from pipeline.producer import Producer
from pipeline.recrawl import Recrawler
from pipeline.wiki import Wiki
from pipeline.wikiowner import WrongWiki
from tests.conftest import sql_rows

UA = "wikihash-test/0.1 (test@example.org)"


def small_wiki(name: str) -> FakeWiki:
    wiki = FakeWiki(name=name, sitename=name.title())
    wiki.add_file("A.png", generated_image(1))
    wiki.add_page("Article", images=["A.png"])
    return wiki


def crawl(db_url: str, api_url: str) -> None:
    producer = Producer(Wiki(api_url, UA), lambda: storage.connect(db_url), lambda jobs: None,
                        thumb_width=120)
    try:
        producer.walk()
    finally:
        producer.close()


def test_another_wiki_is_refused_and_the_ledger_kept(db_url):
    storage.migrate(db_url)
    with FakeWikiServer(small_wiki("first")) as first, \
            FakeWikiServer(small_wiki("second")) as second:
        crawl(db_url, first.api_url)
        before = sql_rows(db_url, "SELECT key, value FROM wiki_info ORDER BY key")
        assert ("wikiid", "firstwiki") in before
        with pytest.raises(WrongWiki) as caught:
            crawl(db_url, second.api_url)
        message = str(caught.value)
        assert "firstwiki at " + first.base_url in message
        assert "secondwiki at " + second.base_url in message
        assert "\n" not in message
        assert sql_rows(db_url, "SELECT key, value FROM wiki_info ORDER BY key") == before

        conn = storage.connect(db_url)
        try:
            recrawler = Recrawler(Wiki(second.api_url, UA), conn, thumb_width=120,
                                  feed_max_age=dt.timedelta(days=30),
                                  shared_wiki=lambda url: Wiki(url, UA))
            with pytest.raises(WrongWiki):
                recrawler.run()
        finally:
            conn.close()
        crawl(db_url, first.api_url)  # its own wiki is still welcome
