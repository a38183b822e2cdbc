"""The ledger's writes are idempotent and keyed by natural keys (design note, invariant 2)."""

import psycopg2
import pytest

from pipeline import ledger, storage
from pipeline.ledger import Result
from pipeline.wiki import Article, FileInfo


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


def true_counts(conn) -> dict[str, int]:
    found = dict(rows(conn, "SELECT state, count(*) FROM files GROUP BY state"))
    out = {s: found.get(s, 0) for s in ("pending", "hashed", "failed", "missing", "unsupported")}
    out["files"] = sum(found.values())
    out["articles"] = rows(conn, "SELECT count(*) FROM pages")[0][0]
    return out


def test_counts_are_the_rows_counts_through_every_kind_of_write(conn):
    """migrations/005's counters against counting the rows, after inserts, upserts, state changes,
    deletes, old deltas folded, and a TRUNCATE."""
    def counted():
        with conn:
            found = ledger.counts(conn)
        return {k: v for k, v in found.items() if k != "last_minute"}

    with conn:
        ledger.insert_files(conn, [info("A.jpg", "a"), info("B.jpg", "b"), info("C.jpg", "a"),
                                   info("Gone.jpg", None, "missing")])
        ledger.upsert_pages(conn, [Article(1, "One", 10, ()), Article(2, "Two", 11, ())])
        ledger.upsert_pages(conn, [Article(1, "One", 12, ())])  # an update, not a new page
    assert counted() == true_counts(conn) == {"pending": 3, "hashed": 0, "failed": 0,
                                              "missing": 1, "unsupported": 0, "files": 4,
                                              "articles": 2}
    with conn:
        ledger.write_results(conn, [Result("a", "hashed", dhash=7, low_information=False),
                                    Result("b", "failed", reason="broken")])
    assert counted() == true_counts(conn)
    assert counted()["hashed"] == 2
    with conn:
        # settled in the last minute: the 3 just hashed or failed and the file found missing
        assert ledger.counts(conn)["last_minute"] == 4
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE ledger_counts SET at = now() - interval '1 hour'")  # fold them
        cur.execute("DELETE FROM files WHERE title = 'B.jpg'")
    ledger.delete_pages(conn, page_ids=[2])
    conn.commit()
    assert counted() == true_counts(conn)
    assert rows(conn, "SELECT count(*) FROM ledger_counts WHERE at = '-infinity'")[0][0] <= 6
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE files, pages CASCADE")
    assert counted() == true_counts(conn) == {"pending": 0, "hashed": 0, "failed": 0,
                                              "missing": 0, "unsupported": 0, "files": 0,
                                              "articles": 0}


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


def test_claiming_marks_the_narrow_sent_table_not_the_files_rows(conn):
    """migrations/010: marking a content sent writes `file_sends` (one row per SHA-1), never
    the wide `files` row with its seven indexes; a result or a give-up removes the mark."""
    with conn:
        ledger.insert_files(conn, [info("A.jpg", "same"), info("A copy.jpg", "same"),
                                   info("B.jpg", "other"), info("C.jpg", "third")])
    before = rows(conn, "SELECT title, xmin::text FROM files ORDER BY title")
    with conn:
        jobs = ledger.claim_jobs(conn, limit=100, stale_after=600)
    assert sorted(j.sha1 for j in jobs) == ["other", "same", "third"]
    assert rows(conn, "SELECT title, xmin::text FROM files ORDER BY title") == before
    assert rows(conn, "SELECT sha1, sends FROM file_sends ORDER BY sha1") == [
        ("other", 1), ("same", 1), ("third", 1)]
    with conn:
        assert ledger.claim_jobs(conn, limit=100, stale_after=600) == []  # in flight
        ledger.write_results(conn, [Result("same", "hashed", dhash=1, low_information=False)])
    sent_at = rows(conn, "SELECT sent_at FROM file_sends WHERE sha1 = 'other'")
    with conn:
        ledger.touch_jobs(conn, ["other"])  # kept alive: a later sent_at
    assert rows(conn, "SELECT sent_at FROM file_sends WHERE sha1 = 'other'") > sent_at
    with conn:
        assert [j.sha1 for j in ledger.claim_jobs(conn, limit=100, stale_after=0)] == [
            "other", "third"]  # both stale now, sent a second time
    assert rows(conn, "SELECT sha1, sends FROM file_sends ORDER BY sha1") == [
        ("other", 2), ("third", 2)]
    with conn:
        ledger.write_results(conn, [Result("other", "failed", reason="corrupt")])
        # A failed file made pending again (wikihash retry) is sent at once.
        with conn.cursor() as cur:
            cur.execute("UPDATE files SET state = 'pending', reason = NULL"
                        " WHERE title = 'B.jpg'")
        assert [j.sha1 for j in ledger.claim_jobs(conn, limit=100, stale_after=600)] == [
            "other"]
    assert rows(conn, "SELECT sha1, sends FROM file_sends ORDER BY sha1") == [
        ("other", 1), ("third", 2)]


def test_claims_in_bounded_slices_skip_what_is_in_flight(conn):
    """Each claim reads a bounded slice of the pending files in file_id order, skipping the
    contents in flight: successive claims take every content once, then nothing."""
    with conn:
        ledger.insert_files(conn, [info(f"F{i}.jpg", f"s{i}") for i in range(300)]
                            + [info("F copy.jpg", "s7")])
    claimed: list[str] = []
    for _ in range(6):
        with conn:
            jobs = ledger.claim_jobs(conn, limit=50, stale_after=600)
        assert len(jobs) == 50
        claimed += [j.sha1 for j in jobs]
    with conn:
        assert ledger.claim_jobs(conn, limit=50, stale_after=600) == []
    assert sorted(claimed) == sorted(f"s{i}" for i in range(300))


def test_the_sent_state_of_an_existing_ledger_moves_to_file_sends(db_url, tmp_path):
    """A ledger made before migration 010 keeps what it knew about the contents in flight."""
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted(storage.SQL_DIR.glob("*.sql")):
        if int(path.name[:3]) < 10:
            (old / path.name).write_text(path.read_text())
    storage.migrate(db_url, sql_dir=old)
    conn = psycopg2.connect(db_url)
    try:
        with conn:
            ledger.insert_files(conn, [info("A.jpg", "same"), info("A copy.jpg", "same"),
                                       info("B.jpg", "never sent")])
            with conn.cursor() as cur:
                cur.execute("UPDATE files SET enqueued_at = now() - interval '1 minute',"
                            " sends = 2 WHERE sha1 = 'same'")
        storage.migrate(db_url)
        assert rows(conn, "SELECT sha1, sends, sent_at < now() FROM file_sends") == [
            ("same", 2, True)]
        with conn:
            assert [j.sha1 for j in ledger.claim_jobs(conn, limit=10, stale_after=600)] == [
                "never sent"]
        assert rows(conn, "SELECT count(*) FROM pg_indexes WHERE indexname ="
                          " 'files_pending_idx'") == [(0,)]
    finally:
        conn.close()
