"""`ledger.refresh_files`: the wiki's current facts reach files the ledger already knows."""


from pipeline import ledger
from pipeline.ledger import Result
from pipeline.wiki import FileInfo


def state(conn, title):
    with conn, conn.cursor() as cur:
        cur.execute("SELECT state, reason, url FROM files WHERE title = %s", (title,))
        return cur.fetchone()


def test_a_file_that_failed_for_want_of_a_url_is_pending_once_it_has_one(conn):
    no_url = FileInfo("A.jpg", "failed", reason="imageinfo without sha1 or url", sha1="s1",
                      media_type="BITMAP")
    with conn:
        ledger.insert_files(conn, [no_url])
    assert state(conn, "A.jpg") == ("failed", "imageinfo without sha1 or url", None)
    answered = FileInfo("A.jpg", "pending", sha1="s1", url="http://127.0.0.1/A.jpg",
                        media_type="BITMAP")
    with conn:
        assert ledger.refresh_files(conn, [answered]) == ["A.jpg"]
    assert state(conn, "A.jpg") == ("pending", None, "http://127.0.0.1/A.jpg")
    with conn:
        assert [job.sha1 for job in ledger.claim_jobs(conn, limit=10, stale_after=600)] == ["s1"]


def test_a_file_that_failed_to_decode_stays_failed_when_its_facts_are_unchanged(conn):
    facts = FileInfo("B.jpg", "pending", sha1="s2", url="http://127.0.0.1/B.jpg",
                     media_type="BITMAP")
    with conn:
        ledger.insert_files(conn, [facts])
        ledger.write_results(conn, [Result("s2", "failed", reason="corrupt")])
    with conn:
        assert ledger.refresh_files(conn, [facts]) == []
    assert state(conn, "B.jpg") == ("failed", "corrupt", "http://127.0.0.1/B.jpg")
