"""`wikihash retry --failed` at the ledger: what a reset does to `files` and `file_sends`, and
the failed API lookups asked of a real fake wiki again, a batch at a time (the whole command
runs end to end in tests/e2e/test_stuck.py)."""

from __future__ import annotations

from fakewiki import FakeWiki, FakeWikiServer, Faults

from pipeline import ledger, retry
from pipeline.ledger import Result
from pipeline.wiki import FileInfo, Wiki
from tests.test_ledger import info as downloadable
from tests.wikis import generated_image

USER_AGENT = "wikihash-test/0.1 (test@example.org)"


def rows(db, query, args=()):
    with db, db.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def fail(db, *titles: str) -> None:
    rows(db, "UPDATE files SET state = 'failed', reason = 'HTTP 503' WHERE title = ANY(%s)"
             " RETURNING 1", (list(titles),))


def test_a_reset_file_is_claimable_at_once_with_a_fresh_count_of_sends(conn):  # noqa: F811
    with conn:
        ledger.insert_files(conn, [downloadable("Left.png", "left"),
                                   downloadable("Flight.png", "flight"),
                                   downloadable("Flight copy.png", "flight"),
                                   FileInfo("Unknown.png", "failed", reason="API error: x")])
    # Left.png: sent 4 times, then marked failed with its sent state left behind (only the
    # writer and the claim clear file_sends; a file made failed elsewhere, or by hand, keeps it).
    rows(conn, "INSERT INTO file_sends VALUES ('left', now(), 4) RETURNING 1")
    with conn:
        # Flight.png: in flight right now; its copy (same content) failed earlier.
        assert [j.title for j in ledger.claim_jobs(conn, limit=10, stale_after=600)
                if j.sha1 == "flight"] == ["Flight.png"]
    fail(conn, "Left.png", "Flight copy.png")
    assert rows(conn, "SELECT title FROM files WHERE state = 'pending'") == [("Flight.png",)]

    with conn:
        assert retry.reset_failed(conn) == 2
    assert rows(conn, "SELECT title, reason FROM files WHERE state = 'failed'") == [
        ("Unknown.png", "API error: x")]  # to be looked up on the wiki, not downloaded
    with conn:
        jobs = ledger.claim_jobs(conn, limit=10, stale_after=600)
    # Claimed at once (stale_after is 10 minutes), sent once since the reset, not 5 times.
    assert [(j.title, j.sha1) for j in jobs] == [("Left.png", "left")]
    assert rows(conn, "SELECT sha1, sends FROM file_sends ORDER BY sha1") == [
        ("flight", 1), ("left", 1)]
    # The content in flight was not sent twice; its result settles the copy too.
    with conn:
        ledger.write_results(conn, [Result("flight", "hashed", dhash=7)])
    assert rows(conn, "SELECT title, state FROM files WHERE sha1 = 'flight' ORDER BY title") == [
        ("Flight copy.png", "hashed"), ("Flight.png", "hashed")]
    with conn:
        assert retry.reset_failed(conn) == 0


def test_failed_lookups_are_asked_again_a_batch_at_a_time(conn):  # noqa: F811
    wiki = FakeWiki()
    names = [f"Pic {i}.png" for i in range(7)]
    for i, name in enumerate(names):
        wiki.add_file(name, generated_image(300 + i))
    wiki.add_page("Gallery", images=names)
    faults = Faults(error_titles={"Pic 1.png", "Pic 3.png", "Pic 4.png", "Pic 6.png"})
    with FakeWikiServer(wiki, faults=faults) as server:
        client = Wiki(server.api_url, USER_AGENT, sleep=lambda s: None)
        with conn:
            ledger.insert_files(conn, client.file_info(names + ["Gone.png"], 120))
        fail(conn, "Gone.png")  # not on the wiki: failed, as an API error leaves it
        assert rows(conn, "SELECT count(*) FROM files WHERE state = 'failed'") == [(5,)]
        assert rows(conn, "SELECT count(*) FROM files WHERE state = 'failed'"
                          " AND sha1 IS NULL") == [(5,)]

        faults.error_titles.discard("Pic 1.png")  # the wiki's error has passed, for three
        faults.error_titles.discard("Pic 3.png")
        faults.error_titles.discard("Pic 4.png")
        with conn:
            assert retry.reset_failed(conn) == 0  # none has a URL to download
        asked: list[list[str]] = []

        def file_info(titles: list[str]) -> list[FileInfo]:
            asked.append(titles)
            return client.file_info(titles, 120)

        looked = retry.look_up_failed(conn, file_info, batch=2)
    assert looked == retry.LookedUp(titles=5, pending=3, failed=1)
    assert sorted(t for batch in asked for t in batch) == sorted(
        ["Gone.png", "Pic 1.png", "Pic 3.png", "Pic 4.png", "Pic 6.png"])
    assert [len(batch) for batch in asked] == [2, 2, 1]
    assert rows(conn, "SELECT title, state FROM files WHERE state <> 'pending'"
                      " ORDER BY title") == [("Gone.png", "missing"), ("Pic 6.png", "failed")]
    assert rows(conn, "SELECT count(*) FROM files WHERE state = 'pending'"
                      " AND sha1 IS NOT NULL AND url IS NOT NULL") == [(6,)]
