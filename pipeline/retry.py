"""What did not work, and trying it again: `wikihash files --state ...` and `wikihash retry`.

Reads and writes of the ledger only; the CLI sends the reset files to the workers through the
producer, as the crawl does.
"""

from __future__ import annotations

from pipeline.storage import Connection

LISTED_STATES = ("failed", "missing", "unsupported", "pending")


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


def reset_failed(conn: Connection) -> tuple[int, list[str]]:
    """Failed files that can be downloaded again become pending (to be sent at once); returns
    their number and the titles that failed before the wiki told us where their bytes are (an
    API error), which must be asked of the wiki again."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE files SET state = 'pending', reason = NULL, enqueued_at = NULL,"
            " updated_at = now() WHERE state = 'failed' AND sha1 IS NOT NULL"
            " AND url IS NOT NULL")
        reset = cur.rowcount
        cur.execute("SELECT title FROM files WHERE state = 'failed' ORDER BY title")
        unresolved = [row[0] for row in cur.fetchall()]
    return reset, unresolved
