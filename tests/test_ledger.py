"""The ledger's writes are idempotent and keyed by natural keys (design note, invariant 2)."""

import psycopg2
import pytest

from pipeline import ledger, storage
from pipeline.ledger import Result
from pipeline.wiki import Article, FileInfo


@pytest.fixture
def conn(db_url):
    storage.migrate(db_url)
    conn = psycopg2.connect(db_url)
    yield conn
    conn.close()


def info(title, sha1, state="pending"):
    return FileInfo(title, state, sha1=sha1, url=f"http://127.0.0.1/{title}",
                    media_type="BITMAP")


def rows(conn, query):
    with conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def test_usages_follow_the_article(conn):
    with conn:
        ledger.insert_files(conn, [info("A.jpg", "a"), info("B.jpg", "b"), info("C.jpg", "c")])
        ledger.upsert_pages(conn, [Article(1, "One", 10, ("A.jpg", "B.jpg"))])
        ledger.set_usages(conn, [Article(1, "One", 10, ("A.jpg", "B.jpg"))])
    assert rows(conn, "SELECT f.title FROM usages JOIN files f USING (file_id) ORDER BY 1") == [
        ("A.jpg",), ("B.jpg",)]
    # The article now uses B and C: A's usage goes, C's comes, B's stays with its id.
    (b_id,) = rows(conn, "SELECT u.id FROM usages u JOIN files f USING (file_id)"
                         " WHERE f.title = 'B.jpg'")[0]
    with conn:
        ledger.upsert_pages(conn, [Article(1, "One renamed", 11, ("B.jpg", "C.jpg"))])
        ledger.set_usages(conn, [Article(1, "One renamed", 11, ("B.jpg", "C.jpg"))])
    assert rows(conn, "SELECT f.title FROM usages JOIN files f USING (file_id) ORDER BY 1") == [
        ("B.jpg",), ("C.jpg",)]
    assert rows(conn, "SELECT u.id FROM usages u JOIN files f USING (file_id)"
                      " WHERE f.title = 'B.jpg'") == [(b_id,)]
    assert rows(conn, "SELECT title, rev_id FROM pages") == [("One renamed", 11)]


def test_one_job_per_content_and_results_reach_every_copy(conn):
    with conn:
        ledger.insert_files(conn, [info("A.jpg", "same"), info("A copy.jpg", "same"),
                                   info("B.jpg", "other")])
        jobs = ledger.claim_jobs(conn, limit=100, stale_after=600)
    assert sorted(j.sha1 for j in jobs) == ["other", "same"]
    with conn:
        # Just sent: nothing to claim until they are stale.
        assert ledger.claim_jobs(conn, limit=100, stale_after=600) == []
        # Stale (sent over 0 s ago): claimed again, still one per content.
        assert len(ledger.claim_jobs(conn, limit=100, stale_after=0)) == 2
    results = [Result("same", "hashed", dhash=-5, low_information=False, hashed_from="thumb"),
               Result("other", "failed", reason="corrupt")]
    with conn:
        assert ledger.write_results(conn, results) == 3
    with conn:
        # Delivered twice: nothing changes the second time.
        assert ledger.write_results(conn, results) == 0
    assert rows(conn, "SELECT title, state, dhash, attempts FROM files ORDER BY title") == [
        ("A copy.jpg", "hashed", -5, 1), ("A.jpg", "hashed", -5, 1),
        ("B.jpg", "failed", None, 1)]


def test_a_new_file_with_known_content_is_not_hashed_again(conn):
    with conn:
        ledger.insert_files(conn, [info("A.jpg", "s1")])
        ledger.write_results(conn, [Result("s1", "hashed", dhash=42, low_information=False)])
        ledger.insert_files(conn, [info("Duplicate upload.jpg", "s1")])
        assert ledger.claim_jobs(conn, limit=10, stale_after=0) == []
    assert rows(conn, "SELECT state, dhash FROM files WHERE title = 'Duplicate upload.jpg'") == [
        ("hashed", 42)]


def test_copy_escapes_hostile_text(conn):
    reason = "tab\there\nnewline \\N backslash ' quote; DROP TABLE files; --"
    with conn:
        ledger.insert_files(conn, [info("X.png", "x")])
        ledger.write_results(conn, [Result("x", "failed", reason=reason)])
    assert rows(conn, "SELECT reason FROM files") == [(reason,)]


def test_crawl_state_round_trip(conn):
    with conn:
        assert ledger.get_state(conn, "walk") is None
        ledger.set_state(conn, "walk", {"continue": {"gapcontinue": "B"}, "done": False})
        ledger.set_state(conn, "walk", {"continue": {"gapcontinue": "C"}, "done": False})
        assert ledger.get_state(conn, "walk") == {"continue": {"gapcontinue": "C"},
                                                  "done": False}


def test_a_nul_byte_in_a_reason_does_not_lose_the_batch(conn):
    """Issue 18 item 8: a server's `Content-Type: text/\\x00html` in one failure reason made the
    COPY of the whole batch fail, innocent results included."""
    with conn:
        ledger.insert_files(conn, [info("A.jpg", "a"), info("B.jpg", "b")])
    with conn:
        written = ledger.write_results(conn, [
            Result("a", "failed", reason="download: not an image: Content-Type text/\x00html"),
            Result("b", "hashed", dhash=42, low_information=False, hashed_from="thumb")])
    assert written == 2
    assert rows(conn, "SELECT title, state, reason FROM files ORDER BY title") == [
        ("A.jpg", "failed", "download: not an image: Content-Type text/\ufffdhtml"),
        ("B.jpg", "hashed", None)]


def test_postgresql_errors_leave_the_ledger_as_storage_errors(conn):
    """psycopg2's errors are mapped at the ledger: a dead connection may be retried, a refused
    statement not."""
    from pipeline.errors import StorageError

    with conn:
        ledger.insert_files(conn, [info("A.jpg", "a")])
    with pytest.raises(StorageError) as refused:
        # A hashed file without a hash: the schema's CHECK refuses it.
        ledger.write_results(conn, [Result("a", "hashed")])
    assert refused.value.retryable is False
    assert "check constraint" in str(refused.value)
    conn.rollback()
    conn.close()
    with pytest.raises(StorageError) as closed:
        ledger.counts(conn)
    assert closed.value.retryable is True
