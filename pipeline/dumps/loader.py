"""Dump files into staging tables (COPY), then set-based SQL to the ledger's shape.

Stage 1, `load`, in the caller's transaction: each table's file is parsed as it is read and
COPYed into an unlogged staging table, keeping only the rows that matter (COPY ... WHERE):
pages of namespace 0 that are not redirects, image links from namespace 0, link targets in the
File namespace. Then the staging tables become two:

    dumps_article (page_id, title, rev_id)    every article
    dumps_usage   (page_id, title)            which article uses which file title
    dumps_title   (title)                     the distinct file titles, for imageinfo

Stage 2, `swap_in`, also one transaction, once every title's file is in `files`: make `pages`
and `usages` exactly the dump's, and drop the staging tables. A failure in either rolls back
whole: the ledger never holds half a dump.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from pipeline.dumps import mysqldump
from pipeline.dumps.mysqldump import Progress, Want
from pipeline.errors import DumpError
from pipeline.storage import Connection

# What each table's staging keeps: the columns (from whichever schema the file has), the
# string ones, and the rows (a COPY WHERE clause).
KEEP = {
    "page": ({"page_id", "page_namespace", "page_title", "page_is_redirect", "page_latest"},
             {"page_title"}, "page_namespace = 0 AND page_is_redirect = 0"),
    "linktarget": ({"lt_id", "lt_namespace", "lt_title"}, {"lt_title"}, "lt_namespace = 6"),
    "imagelinks": ({"il_from", "il_from_namespace"}, {"il_to"}, "il_from_namespace = 0"),
}
TYPES = {"il_to": "text", "lt_title": "text", "page_title": "text", "page_namespace": "integer",
         "lt_namespace": "integer", "il_from_namespace": "integer",
         "page_is_redirect": "integer"}
STAGING = ("dumps_page", "dumps_linktarget", "dumps_imagelinks", "dumps_article", "dumps_usage",
           "dumps_title")


@dataclass
class Loaded:
    schema: str  # 'linktarget' (imagelinks.il_target_id) or 'il_to' (the older one)
    rows: dict[str, int]  # rows read per table
    articles: int = 0
    usages: int = 0
    titles: int = 0


def lines(path: Path) -> Iterator[bytes]:
    """The decompressed lines of a .sql.gz; a corrupt or cut file is a DumpError."""
    try:
        with gzip.open(path, "rb") as f:
            yield from f
    except (OSError, EOFError, zlib.error) as exc:
        raise DumpError(f"{path.name}: corrupt or truncated gzip ({exc})") from None


def schema_of(files: dict[str, Path]) -> str:
    """Which imagelinks schema the run has; anything else is a DumpError."""
    table, columns = mysqldump.table_columns(lines(files["imagelinks"]))
    if table != "imagelinks":
        raise DumpError(f"{files['imagelinks'].name} is a dump of `{table}`, not `imagelinks`")
    if "il_to" in columns:  # the older schema (also during the migration, beside the new)
        return "il_to"
    if "il_target_id" in columns:
        if "linktarget" not in files:
            raise DumpError("imagelinks has il_target_id but the run has no linktarget dump")
        return "linktarget"
    raise DumpError(f"imagelinks: unknown schema (columns {', '.join(columns)})")


def copy_table(conn: Connection, table: str, path: Path, *, schema: str = "",
               progress: Callable[[str, Progress], None] | None = None) -> int:
    """Parse `path` into a new staging table dumps_TABLE; returns the rows read."""
    keep, strings, where = KEEP[table]
    if table == "imagelinks":
        keep = keep | {"il_target_id" if schema == "linktarget" else "il_to"}
    found, columns = mysqldump.table_columns(lines(path))
    if found != table:
        raise DumpError(f"{path.name} is a dump of `{found}`, not `{table}`")
    order = tuple(c for c in columns if c in keep)
    missing = sorted(keep - set(order))
    if missing:
        raise DumpError(f"{path.name}: unknown schema, no column {', '.join(missing)}")
    want = Want(table, order, frozenset(strings) & set(order))
    with conn.cursor() as cur:
        cur.execute(f"CREATE UNLOGGED TABLE dumps_{table} ("
                    + ", ".join(f"{c} {TYPES.get(c, 'bigint')}" for c in order) + ")")
        counted = Progress()
        stream = _Reader(mysqldump.copy_rows(lines(path), want, counted),
                         lambda: progress(path.name, counted) if progress else None)
        try:
            cur.copy_expert(f"COPY dumps_{table} ({', '.join(order)}) FROM STDIN"
                            f" WHERE {where}", stream)
        except psycopg2.Error as exc:
            if stream.error is not None:  # the parser's, passed through PostgreSQL
                raise stream.error from None
            if isinstance(exc, psycopg2.DataError):
                first = str(exc).strip().splitlines()[0]
                raise DumpError(f"{path.name}: a row PostgreSQL refuses: {first}") from None
            raise
    if progress:
        progress(path.name, counted)
    return counted.rows


class _Reader:
    """A file-like `read()` over chunks of COPY text, for psycopg2's copy_expert."""

    def __init__(self, chunks: Iterator[bytes], tick: Callable[[], None]) -> None:
        self._chunks = chunks
        self._tick = tick
        self._count = 0
        self.error: DumpError | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            for chunk in self._chunks:
                self._count += 1
                if self._count % 64 == 0:
                    self._tick()
                if chunk:
                    return chunk
        except DumpError as exc:
            self.error = exc  # psycopg2 turns it into QueryCanceled: keep ours to raise
            raise
        return b""

    def readline(self, size: int = -1) -> bytes:  # pragma: no cover - copy_expert uses read
        return self.read(size)


def load(conn: Connection, files: dict[str, Path],
         progress: Callable[[str, Progress], None] | None = None) -> Loaded:
    """Stage 1 in the caller's transaction: the run's tables into dumps_article/usage/title."""
    schema = schema_of(files)
    drop_staging(conn)
    rows = {"page": copy_table(conn, "page", files["page"], progress=progress)}
    if schema == "linktarget":
        rows["linktarget"] = copy_table(conn, "linktarget", files["linktarget"],
                                        progress=progress)
    rows["imagelinks"] = copy_table(conn, "imagelinks", files["imagelinks"], schema=schema,
                                    progress=progress)
    loaded = Loaded(schema, rows)
    title = "lt.lt_title" if schema == "linktarget" else "il.il_to"
    join = " JOIN dumps_linktarget lt ON lt.lt_id = il.il_target_id" \
        if schema == "linktarget" else ""
    with conn.cursor() as cur:
        cur.execute("CREATE UNLOGGED TABLE dumps_article AS SELECT DISTINCT ON (page_id)"
                    " page_id, page_title AS title, page_latest AS rev_id FROM dumps_page"
                    " ORDER BY page_id")
        loaded.articles = cur.rowcount
        cur.execute("ALTER TABLE dumps_article ADD PRIMARY KEY (page_id)")
        cur.execute(f"CREATE UNLOGGED TABLE dumps_usage AS SELECT DISTINCT il.il_from AS page_id,"
                    f" {title} AS title FROM dumps_imagelinks il{join}"
                    " JOIN dumps_article a ON a.page_id = il.il_from")
        loaded.usages = cur.rowcount
        cur.execute("CREATE UNLOGGED TABLE dumps_title AS SELECT DISTINCT title FROM dumps_usage")
        loaded.titles = cur.rowcount
        cur.execute("ALTER TABLE dumps_title ADD PRIMARY KEY (title)")
        cur.execute("DROP TABLE dumps_page, dumps_imagelinks"
                    + (", dumps_linktarget" if schema == "linktarget" else ""))
    return loaded


def titles_after(conn: Connection, after: str, limit: int) -> list[str]:
    """The next `limit` distinct file titles in order, after `after` (keyset, no scan)."""
    with conn.cursor() as cur:
        cur.execute("SELECT title FROM dumps_title WHERE title > %s ORDER BY title LIMIT %s",
                    (after, limit))
        return [row[0] for row in cur.fetchall()]


def swap_in(conn: Connection) -> tuple[int, int]:
    """Stage 2 in the caller's transaction: pages and usages become exactly the dump's.

    Returns (pages removed, usages removed): both 0 on a fresh ledger.
    """
    with conn.cursor() as cur:
        cur.execute("DELETE FROM pages p WHERE NOT EXISTS"
                    " (SELECT 1 FROM dumps_article a WHERE a.page_id = p.page_id)")
        removed_pages = cur.rowcount
        cur.execute("INSERT INTO pages (page_id, title, rev_id)"
                    " SELECT page_id, title, rev_id FROM dumps_article"
                    " ON CONFLICT (page_id) DO UPDATE SET title = EXCLUDED.title,"
                    " rev_id = EXCLUDED.rev_id, seen_at = now()")
        cur.execute("CREATE TEMP TABLE dumps_pairs ON COMMIT DROP AS SELECT u.page_id, f.file_id"
                    " FROM dumps_usage u JOIN files f ON f.title = u.title")
        cur.execute("DELETE FROM usages u WHERE NOT EXISTS (SELECT 1 FROM dumps_pairs d"
                    " WHERE d.page_id = u.page_id AND d.file_id = u.file_id)")
        removed_usages = cur.rowcount
        cur.execute("INSERT INTO usages (page_id, file_id) SELECT page_id, file_id"
                    " FROM dumps_pairs ORDER BY page_id, file_id ON CONFLICT DO NOTHING")
    drop_staging(conn)
    return removed_pages, removed_usages


def drop_staging(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS " + ", ".join(STAGING))
