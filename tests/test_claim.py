"""The producer's claim resumes where the last one stopped (migrations/013): it reads about what
it returns, whatever is in flight, and still sends every pending content, on time when lost."""

from __future__ import annotations

import psycopg2
from fakewiki import FakeWikiServer

from pipeline import ledger, storage
from pipeline.ledger import Job, Result
from pipeline.producer import Producer
from pipeline.wiki import FileInfo, Wiki
from tests.conftest import sql_rows
from tests.test_producer import USER_AGENT, make_wiki


def add_files(conn, n: int, *, first: int = 0) -> None:
    with conn:
        ledger.insert_files(conn, [FileInfo(f"F{i}.jpg", "pending", sha1=f"s{i}",
                                            url=f"http://127.0.0.1/F{i}.jpg",
                                            media_type="BITMAP")
                                   for i in range(first, first + n)])


def claim(conn, limit: int, stale_after: float = 600) -> list[str]:
    with conn:
        return [j.sha1 for j in ledger.claim_jobs(conn, limit=limit, stale_after=stale_after)]


def claimed_reading(conn, limit: int, stale_after: float = 600) -> tuple[list[str], int]:
    """A claim, and how many rows of `files` it read (by index or by a scan)."""
    with conn, conn.cursor() as cur:
        def read() -> int:
            cur.execute("SELECT seq_tup_read + coalesce(idx_tup_fetch, 0)"
                        " FROM pg_stat_xact_user_tables WHERE relname = 'files'")
            return cur.fetchone()[0]

        before = read()
        jobs = ledger.claim_jobs(conn, limit=limit, stale_after=stale_after)
        return [j.sha1 for j in jobs], read() - before


def scan(limit: int) -> int:
    return ledger.claim_parameters(limit=limit, stale_after=0)["scan"]


def test_a_claim_reads_about_what_it_returns_not_what_is_in_flight(conn):
    """main read every content in flight again on each claim (in file_id order from the first
    pending file, each skipped only after its row was read): 2,000 claimed then 100 more read
    2,100 rows. Here the second claim starts after the first one's slice."""
    add_files(conn, 3000)
    first, read = claimed_reading(conn, 2000)
    assert first == [f"s{i}" for i in range(2000)]
    assert read <= scan(2000)
    second, read = claimed_reading(conn, 100)
    assert second == [f"s{i}" for i in range(2000, 2100)]
    assert read <= scan(100)
    # ... and so on to the end, every content once, then nothing (nothing is stale).
    rest: list[str] = []
    while batch := claim(conn, 100):
        rest += batch
    assert rest == [f"s{i}" for i in range(2100, 3000)]
    none, read = claimed_reading(conn, 100)
    assert none == [] and read <= scan(100)


def test_a_file_made_pending_behind_the_position_is_sent_at_the_next_claim(conn):
    """`wikihash retry` (or a re-crawl's changed file) makes old files pending again: the
    position moves back to them (013's trigger), before the files still ahead."""
    add_files(conn, 500)
    assert len(claim(conn, 300)) == 300
    with conn:
        ledger.write_results(conn, [Result(f"s{i}", "failed", reason="corrupt")
                                    for i in range(300)])
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE files SET state = 'pending', reason = NULL"
                    " WHERE title IN ('F10.jpg', 'F20.jpg')")
    assert claim(conn, 5) == ["s10", "s20", "s300", "s301", "s302"]
    assert claim(conn, 5) == ["s303", "s304", "s305", "s306", "s307"]


def test_the_sweep_wraps_round_to_what_the_position_passed(conn):
    """A pending file behind the position that nothing moved it back for (a file inserted by a
    transaction that committed after a claim read past it) is found when the sweep reaches the
    end and starts again from the first pending file."""
    add_files(conn, 100)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE claim_position SET after_file_id = (SELECT max(file_id) - 40"
                    " FROM files)")
    assert claim(conn, 30) == [f"s{i}" for i in range(60, 90)]
    # the last 10, then round from the first, in one claim
    assert sorted(claim(conn, 30)) == sorted([f"s{i}" for i in range(90, 100)]
                                             + [f"s{i}" for i in range(20)])
    found: list[str] = []
    while batch := claim(conn, 30):
        found += batch
    assert sorted(found) == sorted(f"s{i}" for i in range(20, 60))


def test_a_lost_job_is_sent_again_when_stale_wherever_the_position_is(conn):
    """Jobs lost (Redis restarted, a worker died) are found by their age in file_sends, first,
    however many never-sent files lie ahead; after MAX_SENDS sends they are given up."""
    add_files(conn, 1000)
    lost = claim(conn, 50)
    assert claim(conn, 50) == [f"s{i}" for i in range(50, 100)]
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE file_sends SET sent_at = now() - interval '1 hour'"
                    " WHERE sha1 = ANY(%s)", (lost,))
    assert sorted(claim(conn, 60)) == sorted(lost + [f"s{i}" for i in range(100, 110)])
    for sends in range(3, ledger.MAX_SENDS + 1):
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE file_sends SET sent_at = now() - interval '1 hour'"
                        " WHERE sha1 = ANY(%s)", (lost,))
        assert sorted(claim(conn, 50)) == sorted(lost), sends
    assert sql_rows_conn(conn, "SELECT max(sends) FROM file_sends") == [(ledger.MAX_SENDS,)]
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE file_sends SET sent_at = now() - interval '1 hour'"
                    " WHERE sha1 = ANY(%s)", (lost,))
    # The sixth time: recorded as failed, not sent; then the claims go on ahead.
    assert claim(conn, 50) == []
    assert claim(conn, 50) == [f"s{i}" for i in range(110, 160)]
    assert sql_rows_conn(conn, "SELECT count(*) FROM files WHERE state = 'failed' AND reason"
                               " LIKE 'sent to the workers % times without a result'") == [(50,)]
    assert sql_rows_conn(conn, "SELECT count(*) FROM file_sends WHERE sha1 = ANY(%s)",
                         (lost,)) == [(0,)]


def test_a_sent_mark_whose_content_is_no_longer_pending_goes_when_overdue(conn):
    """A content in flight whose file changed (a re-crawl gave it another SHA-1, or the wiki
    deleted it) leaves a mark no result will clear: the claim removes it once overdue instead
    of reading it again on every claim, and sends the file's new content."""
    add_files(conn, 3)
    assert claim(conn, 10) == ["s0", "s1", "s2"]
    with conn:
        ledger.refresh_files(conn, [FileInfo("F0.jpg", "pending", sha1="new0",
                                             url="http://127.0.0.1/F0.jpg",
                                             media_type="BITMAP"),
                                    FileInfo("F1.jpg", "missing")])
    assert claim(conn, 10) == ["new0"]  # the changed file moved the position back
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE file_sends SET sent_at = now() - interval '1 hour'")
    assert claim(conn, 10) == ["new0", "s2"]
    assert sql_rows_conn(conn, "SELECT sha1, sends FROM file_sends ORDER BY sha1") == [
        ("new0", 2), ("s2", 2)]


def test_an_overdue_content_is_sent_again_through_another_of_its_files(conn):
    """The mark remembers the file it was sent for; when that one is no longer pending (the
    wiki deleted it), the content is sent again through another pending file with it."""
    with conn:
        ledger.insert_files(conn, [
            FileInfo(title, "pending", sha1="same", url=f"http://127.0.0.1/{title}",
                     media_type="BITMAP") for title in ("A.jpg", "A copy.jpg")])
    assert claim(conn, 10) == ["same"]
    assert sql_rows_conn(conn, "SELECT f.title FROM file_sends s JOIN files f"
                               " USING (file_id)") == [("A.jpg",)]
    with conn:
        ledger.refresh_files(conn, [FileInfo("A.jpg", "missing")])
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE file_sends SET sent_at = now() - interval '1 hour'")
    with conn:
        jobs = ledger.claim_jobs(conn, limit=10, stale_after=600)
    assert [(j.title, j.sha1) for j in jobs] == [("A copy.jpg", "same")]
    assert sql_rows_conn(conn, "SELECT s.sends, f.title FROM file_sends s JOIN files f"
                               " USING (file_id)") == [(2, "A copy.jpg")]


def sql_rows_conn(conn, query: str, args: tuple | None = None) -> list[tuple]:
    with conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def test_a_restarted_producer_claims_everything_once(db_url):
    """The position is in the ledger: a producer stopped mid-dispatch and started again goes on
    where the first stopped, sends every file once (nothing is stale), and the contents the
    first one sent are sent again only once they are overdue."""
    storage.migrate(db_url)
    sent: list[list[Job]] = []

    def producer(room: list[int], stale_after: float) -> Producer:
        return Producer(Wiki(server.api_url, USER_AGENT), lambda: storage.connect(db_url),
                        lambda jobs: sent.append(list(jobs)), thumb_width=120, job_size=3,
                        queue_room=lambda: room[0] - len(sent), stale_after=stale_after)

    with FakeWikiServer(make_wiki(articles=6, files_each=4)) as server:
        first = producer([2], 3600)
        try:
            assert first.walk() is True
        finally:
            first.close()
        assert [len(jobs) for jobs in sent] == [3, 3]
        again = producer([100], 3600)
        try:
            while again.dispatch():
                pass
        finally:
            again.close()
        titles = [job.title for jobs in sent for job in jobs]
        assert len(titles) == len(set(titles)) == 24
        # the first producer's jobs were lost with it: overdue after stale_after, sent again
        with psycopg2.connect(db_url) as c, c.cursor() as cur:
            cur.execute("UPDATE file_sends SET sent_at = now() - interval '2 hours'"
                        " WHERE sha1 = ANY(%s)", ([j.sha1 for j in sent[0] + sent[1]],))
        c.close()
        third = producer([100 + len(sent)], 3600)
        try:
            assert third.dispatch() == 2
        finally:
            third.close()
    assert sorted(j.title for jobs in sent[-2:] for j in jobs) == sorted(
        j.title for jobs in sent[:2] for j in jobs)
    assert sql_rows(db_url, "SELECT count(*) FROM files WHERE state = 'pending'") == [(24,)]
