"""The producer's batching and its ledger edge: a real fake wiki over HTTP, real PostgreSQL; the
queue is a list (the producer is free of Celery by design: pipeline/runtime.py wires the real
one, exercised end to end in tests/e2e)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fakewiki import FakeWiki, FakeWikiServer

from pipeline import ledger, storage
from pipeline.ledger import Job
from pipeline.producer import Producer
from pipeline.wiki import Wiki
from tests.conftest import sql_rows
from tests.wikis import generated_image

USER_AGENT = "wikihash-test/0.1 (test@example.org)"


def make_wiki(articles: int, files_each: int) -> FakeWiki:
    wiki = FakeWiki()
    for a in range(articles):
        names = [f"F{a}-{i}.png" for i in range(files_each)]
        for n, name in enumerate(names):
            wiki.add_file(name, generated_image(a * 100 + n))
        wiki.add_page(f"Article {a}", images=names)
    return wiki


@pytest.fixture
def ledger_url(db_url):
    storage.migrate(db_url)
    return db_url


def producer(url: str, api_url: str, sent: list[list[Job]], **kwargs) -> Producer:
    def send(jobs: Sequence[Job]) -> None:
        sent.append(list(jobs))

    return Producer(Wiki(api_url, USER_AGENT), lambda: storage.connect(url), send,
                    thumb_width=120, **kwargs)


def test_jobs_go_in_batches_of_job_size_and_no_more_than_the_queue_takes(ledger_url):
    sent: list[list[Job]] = []
    room = [2]  # jobs the queue takes now
    with FakeWikiServer(make_wiki(articles=4, files_each=4)) as server:
        crawl = producer(ledger_url, server.api_url, sent, job_size=3,
                         queue_room=lambda: room[0] - len(sent), stale_after=3600)
        try:
            assert crawl.walk() is True
            # 16 files, 3 a job, 2 jobs of room: 6 files sent, 10 wait in the ledger.
            assert [len(jobs) for jobs in sent] == [3, 3]
            room[0] = 100
            assert crawl.dispatch() == 4  # 10 files: 3 + 3 + 3 + 1
            assert [len(jobs) for jobs in sent] == [3, 3, 3, 3, 3, 1]
            assert crawl.dispatch() == 0  # nothing is sent twice before it is stale
        finally:
            crawl.close()
    titles = [job.title for jobs in sent for job in jobs]
    assert len(titles) == len(set(titles)) == 16
    assert crawl.stats.articles == 4 and crawl.stats.new_files == 16


def test_a_limited_walk_checkpoints_only_what_it_took(ledger_url):
    sent: list[list[Job]] = []
    with FakeWikiServer(make_wiki(articles=5, files_each=1)) as server:
        crawl = producer(ledger_url, server.api_url, sent)
        try:
            assert crawl.walk(limit=2) is False
            assert sql_rows(ledger_url, "SELECT count(*) FROM pages") == [(2,)]
            walk = sql_rows(ledger_url, "SELECT value FROM crawl_state WHERE key = 'walk'")
            assert walk == [] or walk[0][0]["done"] is False
            assert crawl.walk() is True  # resumes; the two are upserted again, harmlessly
        finally:
            crawl.close()
    assert sql_rows(ledger_url, "SELECT count(*) FROM pages") == [(5,)]
    assert sql_rows(ledger_url, "SELECT value IS NOT NULL FROM crawl_state"
                                " WHERE key = 'last_crawl'") == [(True,)]


def test_a_nul_byte_in_a_title_from_the_api_does_not_stop_the_crawl(ledger_url):
    """Issue 18 item 9: a NUL in a page (or file) title made the batch's INSERT fail, and every
    rerun stopped at the same batch."""
    wiki = make_wiki(articles=3, files_each=1)
    wiki.add_file("Nul\x00file.png", generated_image(999))
    wiki.add_page("Bad\x00title", images=["F0-0.png", "Nul\x00file.png"])
    sent: list[list[Job]] = []
    with FakeWikiServer(wiki) as server:
        crawl = producer(ledger_url, server.api_url, sent)
        try:
            assert crawl.walk() is True
        finally:
            crawl.close()
    assert sql_rows(ledger_url, "SELECT count(*) FROM pages") == [(4,)]
    assert sql_rows(ledger_url, "SELECT title FROM pages WHERE title LIKE %s", ("Bad%",)) == [
        ("Bad\ufffdtitle",)]
    # The file's title is stored as the ledger can hold it, and it is used by its article.
    assert sql_rows(ledger_url, "SELECT f.title FROM files f JOIN usages u USING (file_id)"
                                " JOIN pages p USING (page_id) WHERE p.title LIKE %s"
                                " ORDER BY 1", ("Bad%",)) == [("F0-0.png",), ("Nul\ufffdfile.png",)]


def test_a_file_sent_max_sends_times_without_a_result_is_recorded_failed(ledger_url):
    """Issue 18 item 6: a file whose task never writes a result was re-sent forever."""
    sent: list[list[Job]] = []
    with FakeWikiServer(make_wiki(articles=1, files_each=2)) as server:
        crawl = producer(ledger_url, server.api_url, sent, stale_after=0.0)
        try:
            crawl.walk()
            for _ in range(ledger.MAX_SENDS + 2):
                crawl.dispatch()
        finally:
            crawl.close()
    # Sent MAX_SENDS times (one batch each), then recorded, never sent again.
    assert len(sent) == ledger.MAX_SENDS
    assert sql_rows(ledger_url, "SELECT state, reason FROM files ORDER BY title") == [
        ("failed", f"sent to the workers {ledger.MAX_SENDS} times without a result")] * 2
    # Given up, no longer in flight: the content's sent state (migrations/010) is gone.
    assert sql_rows(ledger_url, "SELECT count(*) FROM file_sends") == [(0,)]
