"""Re-hash a ledger at another stored thumbnail width (`wikihash rehash --width W`).

Walks the hashed files in `file_id` order, `batch` at a time: asks the wiki for each file's
thumbnail at the new width, downloads it through the same global download slots and bandwidth
bucket as the workers (so it is as polite as a crawl), hashes it, and in one transaction per
batch writes the new hash and width over the old for every file of that content. A file keeps
its old hash until its new one is committed, and keeps it if the new download or decode fails.
The position is checkpointed in `crawl_state` ("rehash"), so a killed run resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pipeline import imaging, ledger
from pipeline.errors import FetchError, ImageRejected
from pipeline.storage import Connection
from pipeline.wiki import FileInfo, Wiki

log = logging.getLogger(__name__)

REHASH = "rehash"  # crawl_state key
# Files already at the width, or hashed from an original no wider than it, need nothing.
_TODO = ("state = 'hashed' AND hashed_width IS DISTINCT FROM %(w)s"
         " AND NOT (hashed_from = 'original' AND hashed_width <= %(w)s)")


@dataclass
class RehashReport:
    width: int
    rehashed: int = 0
    kept: int = 0  # the new download or decode failed: the old hash stays
    left: int = 0  # files still to do when it ended


Fetch = Callable[[FileInfo], tuple[bytes, str]]  # -> (bytes, 'thumb' or 'original')


def remaining(conn: Connection, width: int) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM files WHERE {_TODO}", {"w": width})
        return cur.fetchone()[0]


def rehash(conn: Connection, wiki: Wiki, width: int, fetch: Fetch, *, batch: int = 50,
           limit: int | None = None) -> RehashReport:
    """Re-hash up to `limit` files (all by default) at `width`, resuming a checkpoint."""
    report = RehashReport(width)
    with conn:
        state = ledger.get_state(conn, REHASH)
    after = state["after"] if isinstance(state, dict) and state.get("width") == width else 0
    done = 0
    reached_end = False
    while limit is None or done < limit:
        with conn.cursor() as cur:
            cur.execute(f"SELECT file_id, title, sha1 FROM files WHERE {_TODO}"
                        " AND file_id > %(after)s ORDER BY file_id LIMIT %(n)s",
                        {"w": width, "after": after, "n": batch})
            rows = cur.fetchall()
        conn.commit()
        if not rows:
            reached_end = True
            break
        infos = {i.title: i for i in wiki.file_info([r[1] for r in rows], width)}
        updates = []
        for _, title, sha1 in rows:
            info = infos.get(title)
            if info is None or info.state != "pending" or info.sha1 != sha1:
                report.kept += 1  # changed on the wiki since: the re-crawl's business
                continue
            try:
                data, source = fetch(info)
                hashed = imaging.hash_bytes(data)
            except (FetchError, ImageRejected) as exc:
                log.warning("%s: kept the old hash (%s)", title, exc)
                report.kept += 1
                continue
            updates.append((hashed.int64, hashed.low_information, source, hashed.width,
                            info.thumb_url, sha1))
        after = rows[-1][0]
        with conn, conn.cursor() as cur:
            for update in updates:
                cur.execute("UPDATE files SET dhash = %s, low_information = %s,"
                            " hashed_from = %s, hashed_width = %s, thumb_url = %s,"
                            " updated_at = now() WHERE sha1 = %s AND state = 'hashed'", update)
            ledger.set_state(conn, REHASH, {"width": width, "after": after})
        report.rehashed += len(updates)
        done += len(rows)
    with conn:
        report.left = remaining(conn, width)
        if reached_end:  # the next run starts over: files kept this time are tried again
            ledger.set_state(conn, REHASH, {"width": width, "after": 0,
                                            "done": report.left == 0})
    return report
