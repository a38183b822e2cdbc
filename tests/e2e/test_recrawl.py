"""The re-crawl brings an index up to date at a cost proportional to the changes."""

from __future__ import annotations

import signal

import pytest
from fakewiki import FakeWikiServer, Faults
from test_crawl import assert_ledger_matches
from test_crawl_faults import wait_for
from wikis import build_wiki, current_truth, generated_image, sync_clocks

from tests.conftest import sql_rows
from tests.e2e.conftest import stop

pytestmark = pytest.mark.slow


def apply_changes(wiki, commons) -> dict[str, str]:
    """A scripted batch of changes of every kind; returns notable names."""
    sync_clocks(wiki, commons)
    local = sorted(n for n in wiki.files if n.lower().endswith((".png", ".jpg")))
    shared = sorted(n for n in commons.files if n.lower().endswith((".png", ".jpg")))
    used = lambda name: any(name in p.images for p in wiki.pages.values())  # noqa: E731
    overwritten = next(n for n in local if used(n) and not n.startswith(("Copy of", "Broken")))
    deleted_file = next(n for n in local if used(n) and n != overwritten
                        and not n.startswith(("Copy of", "Broken")))
    shared_overwritten = next(n for n in shared if used(n))
    shared_deleted = next(n for n in shared if used(n) and n != shared_overwritten)

    page = wiki.page("Article 0003")
    wiki.edit_page("Article 0003", images=list(page.images[1:]) + ["Fresh upload.png"])
    wiki.add_file("Fresh upload.png", generated_image(99001))
    wiki.add_page("Brand new article", images=["Fresh upload.png", shared[0]])
    wiki.delete_page("Article 0010")
    wiki.move_page("Article 0011", "Article eleven", leave_redirect=True)
    # In the format its extension says: MediaWiki refuses a mismatch (filetype-mime-mismatch).
    fmt = lambda name: "JPEG" if name.endswith(".jpg") else "PNG"  # noqa: E731
    wiki.upload_file(overwritten, generated_image(99002, fmt(overwritten)))
    wiki.delete_file(deleted_file)
    commons.upload_file(shared_overwritten, generated_image(99003, fmt(shared_overwritten)))
    commons.delete_file(shared_deleted)
    wiki.edit_page("Article 0020", images=[])
    sync_clocks(wiki, commons)
    return {"overwritten": overwritten, "deleted_file": deleted_file,
            "shared_overwritten": shared_overwritten, "shared_deleted": shared_deleted}


def test_recrawl_applies_every_kind_of_change(db_url, crawl_env):
    wiki, commons, _ = build_wiki(articles=5000, big_article_images=0, generated=30)
    with FakeWikiServer(commons) as shared_server, FakeWikiServer(wiki) as server:
        env = crawl_env(server.api_url)
        with env.workers(2):
            crawl = env.wikihash("crawl", timeout=300)
            assert crawl.returncode == 0, crawl.stderr[-3000:]
            crawl_requests = len(server.requests)
            before = dict(sql_rows(db_url, "SELECT title, dhash FROM files"))

            names = apply_changes(wiki, commons)
            server.reset_logs()
            shared_server.reset_logs()

            dry = env.wikihash("recrawl", "--dry-run", timeout=120)
            assert dry.returncode == 0, dry.stderr[-3000:]
            assert "article added: Brand new article" in dry.stdout
            assert "article removed: Article 0010" in dry.stdout
            assert f"file changed: {names['overwritten']}" in dry.stdout
            # A dry run changes nothing.
            assert dict(sql_rows(db_url, "SELECT title, dhash FROM files")) == before

            server.reset_logs()
            shared_server.reset_logs()
            result = env.wikihash("recrawl", timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

        truth = current_truth(wiki, corrupt={"Broken.jpg"})
        assert "Article eleven" in truth.articles and "Article 0011" not in truth.articles
        assert_ledger_matches(db_url, truth, server)
        # The moved article kept its page id.
        assert sql_rows(db_url, "SELECT page_id FROM pages WHERE title = 'Article eleven'"
                           ) == [(wiki.page("Article eleven").pageid,)]
        # Replaced contents were hashed again; deleted files no longer match searches.
        after = dict(sql_rows(db_url, "SELECT title, dhash FROM files"))
        for name in (names["overwritten"], names["shared_overwritten"]):
            assert after[name] is not None and after[name] != before[name]
        for name in (names["deleted_file"], names["shared_deleted"]):
            assert after[name] is None
        hashes_urls = {u for (u,) in sql_rows(db_url, "SELECT url FROM hashes")}
        assert "Article_0020" not in hashes_urls and "Article_0010" not in hashes_urls

        # Cost follows the changes: a dozen changes in a wiki of 5,000 articles.
        recrawl_requests = len(server.requests)
        assert recrawl_requests <= 15, [r.kind for r in server.requests]
        assert recrawl_requests < crawl_requests / 2
        assert not [r for r in server.requests if r.kind == "generator:allpages"]
        # The shared repository's own log was read.
        assert any(r.kind == "list:logevents" for r in shared_server.requests)


def test_recrawl_falls_back_to_a_walk_when_the_feed_does_not_reach(db_url, crawl_env):
    wiki, commons, _ = build_wiki(articles=200, big_article_images=0, generated=10)
    with FakeWikiServer(commons), FakeWikiServer(wiki) as server:
        env = crawl_env(server.api_url, WIKIHASH_FEED_MAX_AGE="0.00001")  # under a second
        with env.workers(2):
            assert env.wikihash("crawl", timeout=300).returncode == 0
            names = apply_changes(wiki, commons)
            result = env.wikihash("recrawl", timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "walk from" in result.stdout
        assert_ledger_matches(db_url, current_truth(wiki, corrupt={"Broken.jpg"}), server)
        after = dict(sql_rows(db_url, "SELECT title, dhash FROM files"))
        assert after[names["deleted_file"]] is None and after[names["shared_deleted"]] is None


def test_killed_recrawl_resumes_to_the_same_state(db_url, crawl_env):
    wiki, commons, _ = build_wiki(articles=700, big_article_images=0, generated=10)
    faults = Faults()
    with FakeWikiServer(commons), FakeWikiServer(wiki, faults=faults) as server:
        env = crawl_env(server.api_url)
        with env.workers(2):
            assert env.wikihash("crawl", timeout=300).returncode == 0
            names = apply_changes(wiki, commons)
            # Many more edits, so that the feed spans several pages of 500.
            for i in range(30, 690):
                wiki.edit_page(f"Article {i:04d}" + (" (band)" if i % 7 == 0 else ""),
                               images=["Fresh upload.png"])
            sync_clocks(wiki, commons)
            faults.api_delay = 0.2
            first = env.start("recrawl")
            wait_for(lambda: sql_rows(db_url, "SELECT value->'cont' FROM crawl_state"
                                                 " WHERE key = 'recrawl'") not in ([], [(None,)]),
                     120, "a re-crawl checkpoint")
            stop(first, signal.SIGKILL)
            faults.api_delay = 0.0
            result = env.wikihash("recrawl", timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert_ledger_matches(db_url, current_truth(wiki, corrupt={"Broken.jpg"}), server)
        assert sql_rows(db_url, "SELECT dhash FROM files WHERE title = %s",
                           (names["deleted_file"],)) == [(None,)]
