"""What did not work, and trying it again: `wikihash files --state ...` and `wikihash retry`.

Reads and writes of the ledger only; the CLI sends the reset files to the workers through the
producer, as the crawl does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline import ledger
from pipeline.storage import Connection, mapped, transaction
from pipeline.wiki import FileInfo

LISTED_STATES = ("failed", "missing", "unsupported", "pending")
# Failed files whose API lookup failed, asked of the wiki again this many at a time (each batch
# its own transaction): the titles in memory are one batch, whatever the number failed.
LOOKUP_BATCH = 500

# Failed files the wiki told us where to find become pending, and their content's sent state
# goes (migrations/010), so that the claim takes them at once with a fresh count of sends:
# unless the content is in flight for a file that was already pending, whose result will settle
# the reset file too (ledger.write_results writes every pending file of a content). All three
# parts read the ledger as it was before the statement, so `pending` below means "before".
RESET_SQL = (
    "WITH reset AS (UPDATE files SET state = 'pending', reason = NULL, updated_at = now()"
    "  WHERE state = 'failed' AND sha1 IS NOT NULL AND url IS NOT NULL RETURNING sha1),"
    " forgotten AS (DELETE FROM file_sends s WHERE s.sha1 IN (SELECT sha1 FROM reset)"
    "  AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha1 = s.sha1 AND f.state = 'pending'))"
    " SELECT count(*) FROM reset")


def listing(conn: Connection, state: str, *, limit: int) -> tuple[int, list[dict]]:
    """How many files are in `state`, and the first `limit` of them by title, each with its
    reason, attempts and how many articles use it."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM files WHERE state = %s", (state,))
        total = cur.fetchone()[0]
        cur.execute(
            "SELECT f.title, f.reason, f.attempts, f.mime, f.url,"
            " (SELECT count(*) FROM usages u WHERE u.file_id = f.file_id)"
            " FROM files f WHERE f.state = %s ORDER BY f.title LIMIT %s", (state, limit))
        rows = [dict(title=t, reason=r, attempts=a, mime=m, url=u, articles=n)
                for t, r, a, m, u, n in cur.fetchall()]
    return total, rows


@dataclass(frozen=True)
class LookedUp:
    """What asking the wiki again about failed files did."""

    titles: int = 0  # failed files looked up on the wiki again
    pending: int = 0  # of them, pending now: to be downloaded
    failed: int = 0  # of them, still failed (the rest are missing, unsupported or hashed)


@mapped
def reset_failed(conn: Connection) -> int:
    """Failed files that can be downloaded again become pending, claimable at once (RESET_SQL);
    returns their number. One statement: nothing is read into memory, whatever their number."""
    with conn.cursor() as cur:
        cur.execute(RESET_SQL)
        return cur.fetchone()[0]


@mapped
def failed_after(conn: Connection, file_id: int, *, limit: int) -> list[tuple[int, str]]:
    """The next `limit` failed files after `file_id`, in file_id order: (file_id, title)."""
    with conn.cursor() as cur:
        cur.execute("SELECT file_id, title FROM files WHERE state = 'failed' AND file_id > %s"
                    " ORDER BY file_id LIMIT %s", (file_id, limit))
        return cur.fetchall()


def look_up_failed(conn: Connection, file_info: Callable[[list[str]], Sequence[FileInfo]], *,
                   batch: int = LOOKUP_BATCH) -> LookedUp:
    """Ask the wiki again (`file_info`) about the files still failed, those that failed before
    the wiki told us where their bytes are (an API error): `batch` at a time, each batch
    applied (ledger.refresh_files) and committed before the next is read; no transaction is
    open while the wiki answers. Run after `reset_failed`, so every file still failed is one
    of them."""
    looked = LookedUp()
    last = 0
    while True:
        with transaction(conn):
            rows = failed_after(conn, last, limit=batch)
        if not rows:
            return looked
        last = rows[-1][0]
        infos = file_info([title for _, title in rows])
        with transaction(conn):
            ledger.refresh_files(conn, infos)
            pending, failed = _states(conn, [file_id for file_id, _ in rows])
        looked = LookedUp(looked.titles + len(rows), looked.pending + pending,
                          looked.failed + failed)


@mapped
def _states(conn: Connection, file_ids: list[int]) -> tuple[int, int]:
    """How many of these files are pending, and how many failed."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE state = 'pending'),"
                    " count(*) FILTER (WHERE state = 'failed') FROM files"
                    " WHERE file_id = ANY(%s)", (file_ids,))
        pending, failed = cur.fetchone()
    return pending, failed
