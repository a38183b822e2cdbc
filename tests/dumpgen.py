"""Dump runs in Wikimedia's format, written from a FakeWiki (or from plain rows) for tests.

Each table is written as mysqldump writes it: the header comments and /*!...*/ settings,
DROP TABLE / CREATE TABLE with one column a line in the table's order, extended INSERT lines
(several per table: a new statement once a line passes `line_bytes`), strings escaped as
mysql_real_escape_string does, and the closing "-- Dump completed on" line. A run directory
also has the sha1sums and md5sums lists and dumpstatus.json, as on Wikimedia's dump server.

    write_run(wiki, path, schema="linktarget")   # or schema="il_to": the older imagelinks
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from fakewiki import FakeWiki

HEADER = """-- MySQL dump 10.19  Distrib 10.3.39-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: 127.0.0.1    Database: {db}
-- ------------------------------------------------------
-- Server version\t10.6.20-MariaDB-log

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Table structure for table `{table}`
--

DROP TABLE IF EXISTS `{table}`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8 */;
"""

MIDDLE = """/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `{table}`
--

/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;
"""

FOOTER = """/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on {when}
"""

# MediaWiki's tables as Wikimedia's databases have them (columns in the tables' real order;
# imagelinks.il_from_namespace was added last, so the older schema has it after il_to).
CREATE = {
    "page": """CREATE TABLE `page` (
  `page_id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `page_namespace` int(11) NOT NULL,
  `page_title` varbinary(255) NOT NULL,
  `page_is_redirect` tinyint(3) unsigned NOT NULL DEFAULT 0,
  `page_is_new` tinyint(3) unsigned NOT NULL DEFAULT 0,
  `page_random` double unsigned NOT NULL,
  `page_touched` binary(14) NOT NULL,
  `page_links_updated` varbinary(14) DEFAULT NULL,
  `page_latest` int(10) unsigned NOT NULL,
  `page_len` int(10) unsigned NOT NULL,
  `page_content_model` varbinary(32) DEFAULT NULL,
  `page_lang` varbinary(35) DEFAULT NULL,
  PRIMARY KEY (`page_id`),
  UNIQUE KEY `page_name_title` (`page_namespace`,`page_title`),
  KEY `page_random` (`page_random`),
  KEY `page_len` (`page_len`),
  KEY `page_redirect_namespace_len` (`page_is_redirect`,`page_namespace`,`page_len`)
) ENGINE=InnoDB DEFAULT CHARSET=binary ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=8;
""",
    "imagelinks/linktarget": """CREATE TABLE `imagelinks` (
  `il_from` int(10) unsigned NOT NULL DEFAULT 0,
  `il_from_namespace` int(11) NOT NULL DEFAULT 0,
  `il_target_id` bigint(20) unsigned NOT NULL,
  PRIMARY KEY (`il_from`,`il_target_id`),
  KEY `il_target_id` (`il_target_id`,`il_from`),
  KEY `il_backlinks_namespace_target_id` (`il_from_namespace`,`il_target_id`,`il_from`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;
""",
    "imagelinks/il_to": """CREATE TABLE `imagelinks` (
  `il_from` int(8) unsigned NOT NULL DEFAULT 0,
  `il_to` varbinary(255) NOT NULL DEFAULT '',
  `il_from_namespace` int(11) NOT NULL DEFAULT 0,
  PRIMARY KEY (`il_from`,`il_to`),
  KEY `il_to` (`il_to`,`il_from`),
  KEY `il_backlinks_namespace` (`il_from_namespace`,`il_to`,`il_from`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;
""",
    "linktarget": """CREATE TABLE `linktarget` (
  `lt_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `lt_namespace` int(11) NOT NULL,
  `lt_title` varbinary(255) NOT NULL,
  PRIMARY KEY (`lt_id`),
  UNIQUE KEY `lt_namespace_title` (`lt_namespace`,`lt_title`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;
""",
}

_ESCAPES = {0: b"\\0", 10: b"\\n", 13: b"\\r", 92: b"\\\\", 39: b"\\'", 34: b'\\"', 26: b"\\Z"}


def escape(value: str | bytes) -> bytes:
    """A MySQL string literal, escaped as mysql_real_escape_string does."""
    data = value.encode() if isinstance(value, str) else value
    if not any(b in _ESCAPES for b in data):
        return b"'" + data + b"'"
    return b"'" + b"".join(_ESCAPES.get(b, bytes((b,))) for b in data) + b"'"


def literal(value: object) -> bytes:
    if value is None:
        return b"NULL"
    if isinstance(value, int | float):
        return repr(value).encode()
    return escape(value)


def dump_lines(db: str, table: str, create: str, rows: Iterable[Sequence[object]], *,
               line_bytes: int = 1_000_000, when: str = "2026-12-01 10:00:00"
               ) -> Iterator[bytes]:
    """The lines of a mysqldump of `table`: a new INSERT once a line passes `line_bytes`."""
    yield HEADER.format(db=db, table=table).encode()
    yield create.encode()
    yield MIDDLE.format(table=table).encode()
    prefix = f"INSERT INTO `{table}` VALUES ".encode()
    line: list[bytes] = []
    size = 0
    for row in rows:
        item = b"(" + b",".join(literal(v) for v in row) + b")"
        line.append(item)
        size += len(item) + 1
        if size >= line_bytes:
            yield prefix + b",".join(line) + b";\n"
            line, size = [], 0
    if line:
        yield prefix + b",".join(line) + b";\n"
    yield FOOTER.format(table=table, when=when).encode()


def write_table(path: Path, db: str, table: str, create: str, rows: Iterable[Sequence[object]],
                **kwargs) -> Path:
    with gzip.open(path, "wb", compresslevel=1) as out:
        for chunk in dump_lines(db, table, create, rows, **kwargs):
            out.write(chunk)
    return path


def dbkey(title: str) -> str:
    return title.replace(" ", "_")


def wiki_rows(wiki: FakeWiki, schema: str) -> dict[str, list[tuple]]:
    """The page, imagelinks (and linktarget) rows of `wiki` as it is now."""
    rnd = random.Random(1)
    pages, links = [], []
    targets: dict[tuple[int, str], int] = {}
    with wiki.lock:
        for page in sorted(wiki.pages.values(), key=lambda p: p.pageid):
            latest = page.latest
            touched = latest.timestamp.strftime("%Y%m%d%H%M%S")
            pages.append((page.pageid, page.ns, dbkey(page.title), int(page.is_redirect),
                          int(len(page.revisions) == 1), rnd.random(), touched, touched,
                          latest.revid, latest.size, "wikitext", None))
            for name in page.images:
                if schema == "linktarget":
                    target = targets.setdefault((6, dbkey(name)), len(targets) + 1)
                    links.append((page.pageid, page.ns, target))
                else:
                    links.append((page.pageid, dbkey(name), page.ns))
            # linktarget also holds the targets of other link tables: other namespaces.
            targets.setdefault((10, f"Infobox_{page.pageid % 3}"), len(targets) + 1)
    rows = {"page": pages, "imagelinks": sorted(links, key=lambda r: (r[0], str(r[1:])))}
    if schema == "linktarget":
        rows["linktarget"] = sorted(((i, ns, t) for (ns, t), i in targets.items()))
    return rows


def write_run(wiki: FakeWiki, directory: Path, *, schema: str = "linktarget",
              dbname: str | None = None, line_bytes: int = 400) -> Path:
    """A dump run of `wiki` as it is now in `directory`/DBNAME/DATE/; returns that directory.

    The run's dump time (the end of the job before the tables) is the wiki's clock now.
    """
    dbname = dbname or f"{wiki.name}wiki"
    now = wiki.clock
    date = now.strftime("%Y%m%d")
    run = directory / dbname / date
    run.mkdir(parents=True, exist_ok=True)
    rows = wiki_rows(wiki, schema)
    write_rows(run, dbname, date, rows, schema=schema, line_bytes=line_bytes, dumped=now)
    return run


def write_rows(run: Path, dbname: str, date: str, rows: dict[str, list[tuple]], *,
               schema: str, line_bytes: int, dumped: dt.datetime) -> None:
    """The table files, checksum lists and dumpstatus.json of a run from `rows`."""
    jobs: dict[str, dict] = {"sitestatstable": {"status": "done",
                                                "updated": _time(dumped), "files": {}}}
    for n, table in enumerate(rows, start=1):
        create = CREATE[f"imagelinks/{schema}" if table == "imagelinks" else table]
        name = f"{dbname}-{date}-{table}.sql.gz"
        write_table(run / name, dbname, table, create, rows[table], line_bytes=line_bytes)
        data = (run / name).read_bytes()
        jobs[f"{table}table"] = {"status": "done",
                                 "updated": _time(dumped + dt.timedelta(minutes=10 * n)),
                                 "files": {name: {"size": len(data),
                                                  "url": f"/{dbname}/{date}/{name}",
                                                  "md5": hashlib.md5(data).hexdigest(),
                                                  "sha1": hashlib.sha1(data).hexdigest()}}}
    write_sums(run, dbname, date)
    (run / "dumpstatus.json").write_text(json.dumps({"jobs": jobs, "version": "0.8"}))


def write_sums(run: Path, dbname: str, date: str) -> None:
    """The checksum lists of the run's .sql.gz files as they are now."""
    for algorithm in ("sha1", "md5"):
        lines = [f"{hashlib.new(algorithm, p.read_bytes()).hexdigest()}  {p.name}\n"
                 for p in sorted(run.glob("*.sql.gz"))]
        (run / f"{dbname}-{date}-{algorithm}sums.txt").write_text("".join(lines))


def _time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
