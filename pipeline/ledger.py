"""The ledger's writes and reads: pages, usages, files, crawl state, hash results, counts.

The one owner of the crawl's SQL (the producer, the re-crawl, the workers, search's stats and
the export's manifest all go through it) and the edge where PostgreSQL's errors are mapped:
every public function raises `StorageError` (`storage.mapped`), never psycopg2's own, and text
that PostgreSQL cannot store (a NUL byte from a hostile server or API) is made storable here.

Every write is idempotent and keyed by natural keys (page id, file title, SHA-1), so a batch
applied twice changes nothing the second time. Hash results are written with one COPY per
batch into a temporary table, then one UPDATE keyed by SHA-1: every file with that content gets
the hash, and a file already hashed is not touched again.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

from psycopg2.extras import execute_values

from pipeline.storage import Connection, map_errors, mapped
from pipeline.wiki import Article, FileInfo

# crawl_state keys
WALK = "walk"  # the walk in progress
LAST_CRAWL = "last_crawl"  # when the last complete walk (or re-crawl) started, wiki time
RECRAWL = "recrawl"  # the re-crawl in progress

# A file sent to the workers this many times without a result is recorded as failed instead of
# being sent again (workers/policy.py): nothing is re-sent forever.
MAX_SENDS = 5
STATES = ("pending", "hashed", "failed", "missing", "unsupported")


def storable(text: str | None) -> str | None:
    """`text` as PostgreSQL can store it: a NUL byte (which `text` cannot hold) becomes U+FFFD."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


@dataclass(frozen=True)
class Job:
    """One distinct file content to download and hash."""

    file_id: int
    sha1: str
    title: str
    url: str
    thumb_url: str | None

    def to_message(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Result:
    """The outcome of one job, as the writer stores it."""

    sha1: str
    state: str  # 'hashed', 'failed' or 'unsupported'
    dhash: int | None = None
    low_information: bool | None = None
    reason: str | None = None
    hashed_from: str | None = None  # 'thumb' or 'original'
    hashed_width: int | None = None  # px of the decoded picture the hash was made from

    def to_message(self) -> dict:
        return asdict(self)


# -- the walk -------------------------------------------------------------------------------

@mapped
def upsert_pages(conn: Connection, articles: Sequence[Article]) -> None:
    with conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO pages (page_id, title, rev_id) VALUES %s"
            " ON CONFLICT (page_id) DO UPDATE"
            " SET title = EXCLUDED.title, rev_id = EXCLUDED.rev_id, seen_at = now()",
            [(a.page_id, storable(a.title), a.rev_id) for a in articles],
            page_size=1000,
        )


@mapped
def unknown_files(conn: Connection, titles: Iterable[str]) -> list[str]:
    """The titles that have no row in `files` yet, in the order given."""
    titles = list(dict.fromkeys(storable(t) for t in titles))
    if not titles:
        return []
    with conn.cursor() as cur:
        cur.execute("SELECT title FROM files WHERE title = ANY(%s)", (titles,))
        known = {row[0] for row in cur.fetchall()}
    return [t for t in titles if t not in known]


def _file_rows(infos: Sequence[FileInfo]) -> list[tuple]:
    return [(storable(i.title), i.state, storable(i.reason), storable(i.sha1), storable(i.mime),
             storable(i.media_type), i.size, i.width, i.height, storable(i.repo),
             storable(i.url), storable(i.thumb_url)) for i in infos]


_FILE_COLUMNS = "title, state, reason, sha1, mime, media_type, size, width, height, repo, url," \
                " thumb_url"


@mapped
def insert_files(conn: Connection, infos: Sequence[FileInfo]) -> None:
    """New files; a pending file whose content is already hashed takes that hash at once."""
    if not infos:
        return
    with conn.cursor() as cur:
        execute_values(
            cur,
            f"INSERT INTO files ({_FILE_COLUMNS}) VALUES %s ON CONFLICT (title) DO NOTHING",
            _file_rows(infos), page_size=1000,
        )
    adopt_known_hashes(conn, infos)


@mapped
def refresh_files(conn: Connection, infos: Sequence[FileInfo]) -> list[str]:
    """Apply the wiki's current facts to known files; returns the titles that changed.

    A file changes when its content (SHA-1) or its availability (missing, unsupported...)
    does: it loses its hash, so it stops matching searches, and is pending again if it can be
    hashed; so is a file that failed for want of a URL once the wiki gives one. A file whose
    content is unchanged keeps its hash.
    """
    if not infos:
        return []
    with conn.cursor() as cur:
        changed = execute_values(
            cur,
            "UPDATE files f SET state = i.state, reason = i.reason, sha1 = i.sha1,"
            " mime = i.mime, media_type = i.media_type, size = i.size::bigint,"
            " width = i.width::integer, height = i.height::integer, repo = i.repo, url = i.url,"
            " thumb_url = i.thumb_url, dhash = NULL, low_information = NULL,"
            " hashed_from = NULL, attempts = 0, updated_at = now()"
            f" FROM (VALUES %s) AS i ({_FILE_COLUMNS})"
            " WHERE f.title = i.title AND (f.sha1 IS DISTINCT FROM i.sha1"
            "   OR (i.state IN ('missing', 'unsupported') AND f.state <> i.state)"
            "   OR (i.state = 'pending' AND f.state IN ('missing', 'unsupported'))"
            # Failed for want of a URL (imageinfo without one): fetchable now that it has one.
            "   OR (i.state = 'pending' AND f.state = 'failed' AND f.url IS NULL))"
            " RETURNING f.title",
            _file_rows(infos), page_size=1000, fetch=True,
        )
    adopt_known_hashes(conn, infos)
    return [row[0] for row in changed]


@mapped
def delete_pages(conn: Connection, *, page_ids: Iterable[int] = (),
                 titles: Iterable[str] = (), keep: Iterable[int] = ()) -> list[str]:
    """Remove pages that are no longer articles (with their usages); returns their titles."""
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM pages WHERE (page_id = ANY(%s) OR title = ANY(%s))"
            " AND NOT page_id = ANY(%s) RETURNING title",
            (list(page_ids), [storable(t) for t in titles], list(keep)),
        )
        return [row[0] for row in cur.fetchall()]


@mapped
def page_revisions(conn: Connection, page_ids: Sequence[int]) -> dict[int, int | None]:
    """The revision the ledger has for each of these pages it knows."""
    with conn.cursor() as cur:
        cur.execute("SELECT page_id, rev_id FROM pages WHERE page_id = ANY(%s)", (list(page_ids),))
        return dict(cur.fetchall())


@mapped
def mark_pages_seen(conn: Connection, page_ids: Sequence[int]) -> None:
    """These pages are still articles (a re-crawl's walk saw them)."""
    with conn.cursor() as cur:
        cur.execute("UPDATE pages SET seen_at = now() WHERE page_id = ANY(%s)", (list(page_ids),))


@mapped
def delete_pages_unseen_since(conn: Connection, started: str) -> list[str]:
    """Remove the pages a walk that began at `started` did not see; returns their titles."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM pages WHERE seen_at < %s RETURNING title", (started,))
        return [row[0] for row in cur.fetchall()]


@mapped
def known_files(conn: Connection, titles: Iterable[str], *, repo: str | None = None) -> list[str]:
    """Those of `titles` the ledger has (in `repo`, or a file of unknown repository)."""
    with conn.cursor() as cur:
        cur.execute("SELECT title FROM files WHERE title = ANY(%s)"
                    " AND (%s::text IS NULL OR repo = %s OR repo IS NULL)",
                    ([storable(t) for t in titles], repo, repo))
        return [row[0] for row in cur.fetchall()]


def file_titles(conn: Connection, *, batch: int = 500) -> Iterator[list[str]]:
    """Every file's title, `batch` at a time in file_id order (never all of them at once)."""
    after = 0
    while True:
        with map_errors(), conn.cursor() as cur:
            cur.execute("SELECT file_id, title FROM files WHERE file_id > %s"
                        " ORDER BY file_id LIMIT %s", (after, batch))
            rows = cur.fetchall()
        if not rows:
            return
        after = rows[-1][0]
        yield [title for _, title in rows]


@mapped
def database_now(conn: Connection) -> str:
    """PostgreSQL's clock (the one `seen_at` is written with), ISO 8601."""
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0].isoformat()


@mapped
def adopt_known_hashes(conn: Connection, infos: Sequence[FileInfo]) -> None:
    """Pending files whose content was already hashed (or rejected) take that result."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE files f SET state = h.state, dhash = h.dhash,"
            " low_information = h.low_information, reason = h.reason,"
            " hashed_from = h.hashed_from, updated_at = now()"
            " FROM (SELECT DISTINCT ON (sha1) sha1, state, dhash, low_information, reason,"
            "       hashed_from FROM files WHERE state IN ('hashed', 'failed', 'unsupported')"
            "       AND sha1 = ANY(%s) ORDER BY sha1, state = 'hashed' DESC) h"
            " WHERE f.sha1 = h.sha1 AND f.state = 'pending' AND f.title = ANY(%s)",
            ([storable(i.sha1) for i in infos if i.sha1], [storable(i.title) for i in infos]),
        )


@mapped
def set_usages(conn: Connection, articles: Sequence[Article]) -> None:
    """Make each article's usages exactly its current images (adds and removes)."""
    pairs = list(dict.fromkeys((a.page_id, storable(title)) for a in articles
                               for title in a.images))
    page_ids = [a.page_id for a in articles]
    # Each title is resolved to its file by one probe of files_title_key (a scalar subquery),
    # never by a join, which the planner (blind to the temporary table's size) made a hash of
    # every file (up to ~1M files) or, in the DELETE, a loop over the whole batch per existing
    # usage (docs/scale.md, "What grew"). The batch's pairs are indexed for the anti-join.
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS batch_usages"
                    " (page_id bigint, file_id bigint) ON COMMIT DELETE ROWS")
        cur.execute("CREATE INDEX IF NOT EXISTS batch_usages_idx"
                    " ON batch_usages (page_id, file_id)")
        cur.execute("TRUNCATE batch_usages")
        if pairs:
            cur.execute(
                "INSERT INTO batch_usages (page_id, file_id)"
                " SELECT c.page_id, (SELECT f.file_id FROM files f WHERE f.title = c.title)"
                " FROM unnest(%s::bigint[], %s::text[]) AS c (page_id, title)",
                ([p for p, _ in pairs], [t for _, t in pairs]),
            )
        cur.execute(
            "DELETE FROM usages u WHERE u.page_id = ANY(%s) AND NOT EXISTS ("
            " SELECT 1 FROM batch_usages c"
            " WHERE c.page_id = u.page_id AND c.file_id = u.file_id)",
            (page_ids,),
        )
        cur.execute(
            "INSERT INTO usages (page_id, file_id)"
            " SELECT page_id, file_id FROM batch_usages WHERE file_id IS NOT NULL"
            " ON CONFLICT DO NOTHING"
        )


# -- crawl state ----------------------------------------------------------------------------

@mapped
def get_state(conn: Connection, key: str) -> object | None:
    with conn.cursor() as cur:
        cur.execute("SELECT value FROM crawl_state WHERE key = %s", (key,))
        row = cur.fetchone()
    return row[0] if row else None


@mapped
def set_state(conn: Connection, key: str, value: object) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO crawl_state (key, value) VALUES (%s, %s) ON CONFLICT (key)"
            " DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            (key, json.dumps(value)),
        )


@mapped
def set_wiki_info(conn: Connection, facts: dict[str, str]) -> None:
    with conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO wiki_info (key, value) VALUES %s"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            list(facts.items()),
        )


# -- the queue, rebuilt from the ledger -----------------------------------------------------

_PENDING_COLUMNS = "f.file_id, f.sha1, f.title, f.url, f.thumb_url"

CLAIM_SQL = (
    # Where the last claim stopped (migrations/013); 0 when the row is missing.
    "WITH position AS (SELECT coalesce((SELECT after_file_id FROM claim_position), 0) AS after),"
    # Contents overdue wherever they are, oldest first, each with one pending file: the one
    # the last send was for when it still is (a probe of files_pending_file_idx), else any
    # with that SHA-1 (files_sha1_idx); a nested loop of probes, never a hash of every pending
    # file. A mark whose content has no pending file left (it changed, or was settled
    # otherwise) goes.
    " overdue AS (SELECT s.sha1, s.sends, s.file_id FROM file_sends s"
    "  WHERE s.sent_at < now() - %(stale)s * interval '1 s'"
    "  ORDER BY s.sent_at LIMIT %(limit)s),"
    " overdue_files AS (SELECT o.sha1 AS due, o.sends, f.* FROM overdue o"
    f"  LEFT JOIN LATERAL ((SELECT {_PENDING_COLUMNS} FROM files f WHERE f.file_id = o.file_id"
    "      AND f.state = 'pending' AND f.sha1 = o.sha1)"
    f"    UNION ALL (SELECT {_PENDING_COLUMNS} FROM files f"
    "      WHERE f.sha1 = o.sha1 AND f.state = 'pending') LIMIT 1) f ON true),"
    " resent AS (SELECT 0 AS lap, file_id, sha1, title, url, thumb_url, sends"
    "  FROM overdue_files WHERE file_id IS NOT NULL),"
    " orphaned AS (DELETE FROM file_sends s USING overdue_files o"
    "  WHERE s.sha1 = o.due AND o.file_id IS NULL),"
    # The slice: the next pending files after the position, wrapping round to the first; as
    # many as the overdue leave room for, and a few more for copies of one content.
    f" ahead AS (SELECT 1 AS lap, {_PENDING_COLUMNS} FROM files f"
    "  WHERE f.state = 'pending' AND f.file_id > (SELECT after FROM position)"
    "  ORDER BY f.file_id LIMIT greatest(%(scan)s - (SELECT count(*) FROM overdue), 0)),"
    f" behind AS (SELECT 2 AS lap, {_PENDING_COLUMNS} FROM files f"
    "  WHERE f.state = 'pending' AND f.file_id <= (SELECT after FROM position)"
    "  ORDER BY f.file_id"
    "  LIMIT greatest(%(scan)s - (SELECT count(*) FROM overdue) - (SELECT count(*) FROM ahead),"
    "    0)),"
    " slice AS (SELECT * FROM ahead UNION ALL SELECT * FROM behind),"
    # Those of the slice not in flight: never sent, or sent over `stale` seconds ago.
    " swept AS (SELECT c.*, coalesce(s.sends, 0) AS sends FROM slice c"
    "  LEFT JOIN LATERAL (SELECT s.sends, s.sent_at FROM file_sends s"
    "    WHERE s.sha1 = c.sha1 OFFSET 0) s ON true"
    "  WHERE s.sent_at IS NULL OR s.sent_at < now() - %(stale)s * interval '1 s'),"
    # One file per content, the overdue first, then in the slice's order.
    " picked AS (SELECT * FROM (SELECT DISTINCT ON (sha1) * FROM"
    "    (SELECT * FROM resent UNION ALL SELECT * FROM swept) pool"
    "    ORDER BY sha1, lap, file_id) d"
    "  ORDER BY lap, file_id LIMIT %(limit)s),"
    # The new position: past the whole slice when the claim took all it could of it, else
    # past the last file taken (the slice's rest is read again next time).
    " moved AS (UPDATE claim_position SET after_file_id = coalesce(CASE"
    "    WHEN (SELECT count(*) FROM picked) < %(limit)s"
    "    THEN (SELECT file_id FROM slice ORDER BY lap DESC, file_id DESC LIMIT 1)"
    "    ELSE (SELECT file_id FROM picked WHERE lap > 0"
    "          ORDER BY lap DESC, file_id DESC LIMIT 1) END, after_file_id)),"
    " marked AS (INSERT INTO file_sends (sha1, sent_at, sends, file_id)"
    "  SELECT sha1, now(), sends + 1, file_id FROM picked"
    "  WHERE sends < %(max)s AND sha1 IS NOT NULL"
    "  ON CONFLICT (sha1) DO UPDATE"
    "  SET sent_at = EXCLUDED.sent_at, sends = EXCLUDED.sends, file_id = EXCLUDED.file_id),"
    " given_up AS (UPDATE files f SET state = 'failed', updated_at = now(),"
    "    reason = 'sent to the workers ' || p.sends || ' times without a result'"
    "  FROM picked p WHERE f.sha1 = p.sha1 AND f.state = 'pending'"
    "    AND p.sends >= %(max)s),"
    " forgotten AS (DELETE FROM file_sends s USING picked p"
    "  WHERE s.sha1 = p.sha1 AND p.sends >= %(max)s)"
    " SELECT file_id, sha1, title, url, thumb_url FROM picked WHERE sends < %(max)s"
    " ORDER BY file_id")


# Run before CLAIM_SQL in its transaction. The planner's guess at the overdue contents grows
# with file_sends (what is in flight), and past jit_above_cost it compiled the claim: 200 ms of
# JIT per claim of 2,000 at 30M usages with 4,000 in flight, for a plan that runs in 200-400 ms.
CLAIM_SETTINGS = "SET LOCAL jit = off"


def claim_parameters(*, limit: int, stale_after: float, max_sends: int = MAX_SENDS) -> dict:
    """CLAIM_SQL's parameters: `limit` contents from a slice of at most 1.05 limit + 10 files
    (the surplus for copies of one content; what is not taken is read again next time)."""
    return {"stale": stale_after, "limit": limit, "max": max_sends,
            "scan": limit + limit // 20 + 10}


@mapped
def claim_jobs(conn: Connection, *, limit: int, stale_after: float,
               max_sends: int = MAX_SENDS) -> list[Job]:
    """Pending contents never sent, or sent over `stale_after` seconds ago and still pending.

    One job per SHA-1, marked as sent in `file_sends` (migrations/010), which covers every
    pending file with that SHA-1. A content already sent `max_sends` times without a result is
    recorded as failed instead of sent. Fewer than `limit` when the slice read held contents
    in flight; the next claim goes on from there.
    """
    # A claim reads about what it returns, whatever is pending or in flight: a slice of at
    # most 1.05 limit + 10 entries of files_pending_file_idx (migrations/005) in file_id order,
    # from where the last claim stopped (claim_position, migrations/013), each probed once in
    # file_sends by its key (a LATERAL subquery that OFFSET 0 keeps a nested loop); plus the
    # overdue contents, from file_sends_sent_at_idx, each through the file it was last sent
    # for. So the contents in flight are read once per sweep of the pending files, not once
    # per claim; a file made pending behind the position moves it back (013's trigger), and a
    # lost job is found by its age. Marking writes only the narrow file_sends, never the wide
    # `files` row with its seven indexes. JIT off: see CLAIM_SETTINGS.
    with conn.cursor() as cur:
        cur.execute(CLAIM_SETTINGS)
        cur.execute(CLAIM_SQL, claim_parameters(limit=limit, stale_after=stale_after,
                                                max_sends=max_sends))
        return [Job(*row) for row in cur.fetchall()]


@mapped
def touch_jobs(conn: Connection, sha1s: Sequence[str]) -> None:
    """Mark these jobs as alive (a worker holds them back on purpose), so that the reconciler
    does not take them for lost and send them a second time."""
    with conn.cursor() as cur:
        cur.execute("UPDATE file_sends SET sent_at = now() WHERE sha1 = ANY(%s)",
                    (list(sha1s),))


# -- results --------------------------------------------------------------------------------

_COLUMNS = ("sha1", "state", "dhash", "low_information", "reason", "hashed_from", "hashed_width")
_STAGING_MADE: set[tuple[int, int]] = set()  # (connection, backend pid) with the staging table


@mapped
def write_results(conn: Connection, results: Sequence[Result]) -> int:
    """One COPY of `results` into a staging table, then one UPDATE; returns files updated."""
    if not results:
        return 0
    buffer = io.StringIO()
    for r in results:
        buffer.write("\t".join(_copy_field(getattr(r, c)) for c in _COLUMNS) + "\n")
    buffer.seek(0)
    with conn.cursor() as cur:
        session = (id(conn), conn.info.backend_pid)
        if session not in _STAGING_MADE:
            # Once per session: emptied by every commit, so each batch finds it empty.
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS staged_results (sha1 text, state text,"
                " dhash bigint, low_information boolean, reason text, hashed_from text,"
                " hashed_width integer)"
                " ON COMMIT DELETE ROWS"
            )
            _STAGING_MADE.add(session)
        try:
            cur.copy_from(buffer, "staged_results", columns=_COLUMNS)
            cur.execute(
                "UPDATE files f SET state = s.state, dhash = s.dhash,"
                " low_information = s.low_information, reason = s.reason,"
                " hashed_from = s.hashed_from, hashed_width = s.hashed_width,"
                " attempts = f.attempts + 1, updated_at = now()"
                " FROM (SELECT DISTINCT ON (sha1) * FROM staged_results"
                "       ORDER BY sha1, state = 'hashed' DESC) s"
                " WHERE f.sha1 = s.sha1 AND f.state = 'pending'"
            )
            updated = cur.rowcount
            # Settled: no longer in flight (migrations/010).
            cur.execute("DELETE FROM file_sends s USING staged_results r WHERE s.sha1 = r.sha1")
        except BaseException:
            # The transaction that created the table may be the one failing: make it again.
            _STAGING_MADE.discard(session)
            raise
        return updated


def _copy_field(value: object) -> str:
    if value is None:
        return r"\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    text = storable(str(value))
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


# -- progress -------------------------------------------------------------------------------

@mapped
def files_by_state(conn: Connection) -> dict[str, int]:
    """How many files are in each state (every state listed, 0 when none), from the counters
    of migrations/005_ledger_counts.sql: a few rows, whatever the ledger's size."""
    with conn.cursor() as cur:
        cur.execute("SELECT name, sum(n)::bigint FROM ledger_counts WHERE name <> 'articles'"
                    " GROUP BY name")
        found = dict(cur.fetchall())
    return {state: found.get(state, 0) for state in STATES}


def _count(cur, name: str) -> int:
    cur.execute("SELECT coalesce(sum(n), 0)::bigint FROM ledger_counts WHERE name = %s",
                (name,))
    return cur.fetchone()[0]


@mapped
def counts(conn: Connection) -> dict[str, int]:
    """Articles and files by state, plus files settled in the last minute.

    Exact, from the per-statement changes the triggers of migrations/005_ledger_counts.sql
    append;
    changes older than two minutes are folded into one row per name first, so the read is
    of a few rows whatever the ledger's size."""
    with conn.cursor() as cur:
        if not conn.readonly:  # fold; a read-only snapshot (the export's) sums them all
            cur.execute(
                "WITH old AS (DELETE FROM ledger_counts"
                "  WHERE at < now() - interval '2 minutes' RETURNING name, n)"
                " INSERT INTO ledger_counts (name, n, at)"
                " SELECT name, sum(n), '-infinity' FROM old GROUP BY name"
            )
        cur.execute("SELECT coalesce(sum(n), 0)::bigint FROM ledger_counts"
                    " WHERE at > now() - interval '1 minute' AND n > 0"
                    " AND name NOT IN ('articles', 'pending')")
        last_minute = cur.fetchone()[0]
        found = {"articles": _count(cur, "articles"), "last_minute": last_minute}
    states = files_by_state(conn)
    found.update(states)
    found["files"] = sum(states.values())
    return found


@mapped
def wiki_facts(conn: Connection) -> dict[str, str]:
    """What the crawl recorded about the wiki (sitename, server, articlepath, api_url...)."""
    with conn.cursor() as cur:
        cur.execute("SELECT key, value FROM wiki_info ORDER BY key")
        return dict(cur.fetchall())
