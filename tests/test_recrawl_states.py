"""The re-crawl's state machine (feed -> shared -> done; walk -> done) and its typed checkpoint,
against a real fake wiki and its shared repository over HTTP and real PostgreSQL. The whole
re-crawl with workers is tests/e2e/test_recrawl.py."""

from __future__ import annotations

import datetime as dt

import pytest
from fakewiki import FakeWiki, FakeWikiServer

from pipeline import ledger, storage
from pipeline.ledger import RECRAWL
from pipeline.producer import Producer
from pipeline.recrawl import Checkpoint, Recrawler
from pipeline.wiki import Wiki
from tests.conftest import sql_rows
from tests.wikis import generated_image, sync_clocks

USER_AGENT = "wikihash-test/0.1 (test@example.org)"


def test_the_checkpoint_round_trips_and_refuses_what_is_not_one():
    state = Checkpoint(since="2026-01-01T00:00:00Z", until="2026-01-02T00:00:00Z",
                       stage="shared", cont={"lecontinue": "x"}, repos_done=("shared:upload",),
                       feed_key="shared:delete")
    assert Checkpoint.from_json(state.to_json()) == state
    assert state.to_json()["repos_done"] == ["shared:upload"]  # JSON has no tuples
    assert Checkpoint.from_json(None) is None
    assert Checkpoint.from_json({"done": True}) is None
    assert Checkpoint.from_json([1, 2]) is None
    # A checkpoint written by an older version (fewer keys) still loads.
    old = Checkpoint.from_json({"since": "a", "until": "b", "stage": "feed", "cont": None,
                                "done": False})
    assert old == Checkpoint(since="a", until="b")


@pytest.fixture
def crawled_wiki(db_url):
    """A wiki using local and shared files, crawled into the ledger (no workers needed)."""
    storage.migrate(db_url)
    commons = FakeWiki(name="shared", sitename="Fake Commons")
    wiki = FakeWiki(shared=commons)
    commons.add_file("Shared.png", generated_image(1))
    for i in range(3):
        wiki.add_file(f"Local {i}.png", generated_image(10 + i))
        wiki.add_page(f"Article {i}", images=[f"Local {i}.png", "Shared.png"])
    sync_clocks(wiki, commons)
    with FakeWikiServer(commons) as shared_server, FakeWikiServer(wiki) as server:
        crawl = Producer(Wiki(server.api_url, USER_AGENT), lambda: storage.connect(db_url),
                         lambda jobs: None, thumb_width=120)
        try:
            assert crawl.walk() is True
        finally:
            crawl.close()
        yield wiki, commons, server, shared_server


def recrawler(db_url: str, api_url: str, *, feed_days: float = 30) -> Recrawler:
    return Recrawler(Wiki(api_url, USER_AGENT), storage.connect(db_url), thumb_width=120,
                     feed_max_age=dt.timedelta(days=feed_days),
                     shared_wiki=lambda url: Wiki(url, USER_AGENT))


def stored(db_url: str) -> Checkpoint | None:
    rows = sql_rows(db_url, "SELECT value FROM crawl_state WHERE key = %s", (RECRAWL,))
    return Checkpoint.from_json(rows[0][0]) if rows else None


def test_feed_then_shared_then_done(db_url, crawled_wiki):
    wiki, commons, server, shared_server = crawled_wiki
    wiki.add_file("New.png", generated_image(50))
    wiki.edit_page("Article 1", images=["New.png"])
    commons.upload_file("Shared.png", generated_image(51))
    sync_clocks(wiki, commons)
    server.reset_logs()
    job = recrawler(db_url, server.api_url)
    report = job.run()
    job.conn.close()
    assert report.mode == "feed"
    assert report.pages_updated == ["Article 1"] and report.new_files == 1
    assert report.files_changed == ["Shared.png"]  # from the shared repository's log
    done = stored(db_url)
    assert done is not None and done.done and done.stage == "done"
    assert done.repos_done == ("shared:delete", "shared:upload")
    assert sql_rows(db_url, "SELECT value FROM crawl_state WHERE key = 'last_crawl'") == [
        (done.until,)]
    assert shared_server.api_counts()["list:logevents"] == 2


def test_a_checkpoint_resumes_at_its_stage(db_url, crawled_wiki):
    """A re-crawl killed after the feed goes on with the shared repositories, not the feed."""
    wiki, commons, server, shared_server = crawled_wiki
    commons.upload_file("Shared.png", generated_image(52))
    sync_clocks(wiki, commons)
    last = sql_rows(db_url, "SELECT value FROM crawl_state WHERE key = 'last_crawl'")[0][0]
    conn = storage.connect(db_url)
    with storage.transaction(conn):
        ledger.set_state(conn, RECRAWL, Checkpoint(since=last, until=wiki.clock.strftime(
            "%Y-%m-%dT%H:%M:%SZ"), stage="shared", repos_done=("shared:upload",)).to_json())
    conn.close()
    server.reset_logs()
    shared_server.reset_logs()
    job = recrawler(db_url, server.api_url)
    report = job.run()
    job.conn.close()
    assert server.api_counts()["list:recentchanges"] == 0  # the feed stage is not run again
    # Only the log not done yet is read: the upload (already done) is not, so no change seen.
    assert shared_server.api_counts()["list:logevents"] == 1
    assert report.files_changed == []
    assert stored(db_url).done


def test_an_old_crawl_is_brought_up_to_date_by_a_walk(db_url, crawled_wiki):
    wiki, commons, server, _ = crawled_wiki
    wiki.delete_page("Article 2")
    wiki.add_file("Walked.png", generated_image(60))
    wiki.edit_page("Article 0", images=["Walked.png"])
    sync_clocks(wiki, commons)
    conn = storage.connect(db_url)
    with storage.transaction(conn):
        ledger.set_state(conn, ledger.LAST_CRAWL, "2000-01-01T00:00:00Z")
    conn.close()
    job = recrawler(db_url, server.api_url, feed_days=1)
    report = job.run()
    job.conn.close()
    assert report.mode == "walk"
    assert report.pages_removed == ["Article 2"] and report.pages_updated == ["Article 0"]
    assert sql_rows(db_url, "SELECT title FROM pages ORDER BY title") == [
        ("Article 0",), ("Article 1",)]
    assert stored(db_url).stage == "done"


def test_a_dry_run_changes_nothing(db_url, crawled_wiki):
    wiki, commons, server, _ = crawled_wiki
    wiki.delete_page("Article 0")
    sync_clocks(wiki, commons)
    job = recrawler(db_url, server.api_url)
    report = job.run(dry_run=True)
    job.conn.close()
    assert report.pages_removed == ["Article 0"]
    assert sql_rows(db_url, "SELECT count(*) FROM pages") == [(3,)]
    assert stored(db_url) is None
