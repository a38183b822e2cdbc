"""Crawl from dumps, the parts: the mysqldump parser (checked against MariaDB's own format),
the staging load into PostgreSQL, and resumable, verified downloads over HTTP on 127.0.0.1."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import uuid
from pathlib import Path

import dumpgen
import psycopg2
import pytest
from dumpserver import DumpServer
from fakewiki import FakeWiki

from pipeline import storage
from pipeline.dumps import download, loader, mysqldump
from pipeline.dumps.download import Downloader
from pipeline.dumps.mysqldump import Want
from pipeline.errors import DumpError
from tests.conftest import sql_rows

AWKWARD = ["Rock 'n' roll", 'Say "cheese"', "Back\\slash", "Ünïcödé ☃ 東京", "Tab less"]
AWKWARD_FILES = ["O'Brien's \"best\".jpg", "C:\\path é.png", "Ōsaka 大阪.png", "Plain.png"]


def awkward_wiki() -> FakeWiki:
    wiki = FakeWiki()
    wiki.add_file("Plain.png", b"\x89PNG")
    for i, title in enumerate(AWKWARD):
        wiki.add_page(title, images=AWKWARD_FILES[: i % 4 + 1])
    wiki.add_page("Redirect here", redirect="Back\\slash")
    wiki.add_page("Talk:Rock 'n' roll", images=["Plain.png"])
    return wiki


def rows_of(path: Path, table: str, columns: tuple[str, ...], strings=()) -> list[tuple]:
    chunks = mysqldump.copy_rows(loader.lines(path), Want(table, columns, frozenset(strings)))
    text = b"".join(chunks).decode()
    return [tuple(line.split("\t")) for line in text.splitlines()]


# -- the parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", ["linktarget", "il_to"])
def test_parser_reads_generated_runs_of_both_schemas(tmp_path, schema):
    wiki = awkward_wiki()
    run = dumpgen.write_run(wiki, tmp_path, schema=schema, line_bytes=120)
    name = f"localwiki-{run.name}"
    page = run / f"{name}-page.sql.gz"
    assert gzip.open(page).read().count(b"INSERT INTO `page` VALUES") >= 3
    pages = rows_of(page, "page", ("page_id", "page_namespace", "page_title", "page_latest"),
                    {"page_title"})
    # COPY text: MySQL's \' and \" stand for themselves, a backslash is doubled.
    titles = {mysqldump.unescape(t.encode()).decode() for _, ns, t, _ in pages if ns == "0"}
    assert set(AWKWARD) <= titles
    links = (rows_of(run / f"{name}-imagelinks.sql.gz", "imagelinks",
                     ("il_from", "il_from_namespace", "il_target_id"))
             if schema == "linktarget" else
             rows_of(run / f"{name}-imagelinks.sql.gz", "imagelinks",
                     ("il_from", "il_to", "il_from_namespace"), {"il_to"}))
    assert len(links) == sum(len(p.images) for p in wiki.pages.values())


def test_parser_refuses_what_is_not_rows():
    good = b"".join(dumpgen.dump_lines("w", "linktarget", dumpgen.CREATE["linktarget"],
                                       [(1, 6, "A_b"), (2, 6, "C")])).splitlines(keepends=True)
    want = Want("linktarget", ("lt_id", "lt_namespace", "lt_title"), frozenset({"lt_title"}))
    assert b"".join(mysqldump.copy_rows(good, want)) == b"1\t6\tA b\n2\t6\tC\n"
    corrupt = [line.replace(b"(2,6,'C')", b"(2,6,'C'") for line in good]
    with pytest.raises(DumpError, match="not a row|do not end"):
        list(mysqldump.copy_rows(corrupt, want))
    with pytest.raises(DumpError, match="truncated"):
        list(mysqldump.copy_rows(good[:-1], want))
    with pytest.raises(DumpError, match="unknown schema, no column lt_title"):
        list(mysqldump.copy_rows([line.replace(b"`lt_title`", b"`lt_name`") for line in good],
                                 want))


def test_exact_path_for_nul_ctrl_z_and_tab():
    line = [b"CREATE TABLE `linktarget` (\n", b"  `lt_id` bigint\n", b"  `lt_namespace` int\n",
            b"  `lt_title` varbinary(255)\n", b") ENGINE=InnoDB;\n",
            b"INSERT INTO `linktarget` VALUES (1,6,'a\\0b\\Zc\td\\\\e');\n",
            b"-- Dump completed on 2026-12-01 10:00:00\n"]
    want = Want("linktarget", ("lt_id", "lt_namespace", "lt_title"), frozenset({"lt_title"}))
    assert b"".join(mysqldump.copy_rows(line, want)) == b"1\t6\tab\x1ac\\td\\\\e\n"


# -- the format, proven by MariaDB -----------------------------------------------------------

def _mariadb(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["mariadb", "-h", "127.0.0.1", "-P", "3306", "-u", "root", *args],
                          input=stdin, capture_output=True, check=True).stdout


@pytest.fixture
def mariadb_database():
    if shutil.which("mariadb") is None or shutil.which("mariadb-dump") is None:
        pytest.skip("the mariadb client is not installed")
    try:
        _mariadb("-e", "SELECT 1")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"no MariaDB on 127.0.0.1:3306 ({exc.stderr.decode()[:80]})")
    name = f"wikihash_dumps_{uuid.uuid4().hex[:10]}"
    _mariadb("-e", f"CREATE DATABASE {name}")
    yield name
    _mariadb("-e", f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.parametrize("schema", ["linktarget", "il_to"])
def test_generated_dumps_load_into_mariadb_and_mariadb_dump_parses(tmp_path, mariadb_database,
                                                                    schema):
    """MariaDB loads what the generator writes and gives the same rows back; our parser reads
    what mariadb-dump itself writes of those tables and gets the same rows as from ours."""
    run = dumpgen.write_run(awkward_wiki(), tmp_path, schema=schema, line_bytes=120)
    for path in sorted(run.glob("*.sql.gz")):
        table = path.name.rsplit("-", 1)[1].split(".")[0]
        _mariadb(mariadb_database, stdin=gzip.open(path).read())
        if table == "page":
            got = _mariadb("--batch", "--raw", "--skip-column-names", mariadb_database, "-e",
                           "SELECT page_title FROM page WHERE page_namespace = 0")
            titles = {t.replace("_", " ") for t in got.decode().splitlines()}
            assert set(AWKWARD) <= titles
        real = tmp_path / f"real-{table}.sql.gz"
        dumped = subprocess.run(["mariadb-dump", "-h", "127.0.0.1", "-u", "root",
                                 "--skip-opt", "--extended-insert",
                                 "--create-options", "--quick", mariadb_database, table],
                                capture_output=True, check=True).stdout
        assert dumped.count(f"INSERT INTO `{table}` VALUES".encode()) >= 1
        real.write_bytes(gzip.compress(dumped))
        keep, strings, _ = loader.KEEP[table]
        _, columns = mysqldump.table_columns(loader.lines(path))
        keep = keep | ({"il_to"} if "il_to" in columns else {"il_target_id"}
                       if table == "imagelinks" else set())
        order = tuple(c for c in columns if c in keep)
        assert sorted(rows_of(real, table, order, strings)) == sorted(
            rows_of(path, table, order, strings))


# -- the staging load --------------------------------------------------------------------------

@pytest.mark.parametrize("schema", ["linktarget", "il_to"])
def test_load_builds_articles_usages_and_titles(tmp_path, db_url, schema):
    wiki = awkward_wiki()
    run = dumpgen.write_run(wiki, tmp_path, schema=schema)
    files = {t: p for t in ("page", "imagelinks", "linktarget")
             if (p := run / f"localwiki-{run.name}-{t}.sql.gz").exists()}
    storage.migrate(db_url)
    conn = psycopg2.connect(db_url)
    with conn:
        loaded = loader.load(conn, files)
    conn.close()
    assert loaded.schema == schema
    articles = {t for (t,) in sql_rows(db_url, "SELECT title FROM dumps_article")}
    assert articles == set(AWKWARD)
    usages = set(sql_rows(db_url, "SELECT a.title, u.title FROM dumps_usage u"
                                  " JOIN dumps_article a USING (page_id)"))
    assert usages == {(p.title, f) for p in wiki.pages.values() if p.ns == 0
                      and not p.is_redirect for f in p.images}
    assert {t for (t,) in sql_rows(db_url, "SELECT title FROM dumps_title")} == set(AWKWARD_FILES)


def test_a_cut_or_corrupt_file_leaves_nothing(tmp_path, db_url):
    run = dumpgen.write_run(awkward_wiki(), tmp_path)
    files = {t: run / f"localwiki-{run.name}-{t}.sql.gz" for t in
             ("page", "imagelinks", "linktarget")}
    data = files["linktarget"].read_bytes()
    storage.migrate(db_url)
    for broken in (data[: len(data) // 2], data[:20] + bytes(len(data) - 20)):
        files["linktarget"].write_bytes(broken)
        conn = psycopg2.connect(db_url)
        with pytest.raises(DumpError, match="corrupt or truncated"):
            with conn:
                loader.load(conn, files)
        conn.close()
        assert sql_rows(db_url, "SELECT tablename FROM pg_tables"
                                " WHERE left(tablename, 6) = 'dumps_'") == []


# -- downloads ---------------------------------------------------------------------------------

def test_download_resumes_waits_and_verifies(tmp_path):
    wiki = awkward_wiki()
    served = tmp_path / "served"
    run = dumpgen.write_run(wiki, served)
    page = f"localwiki-{run.name}-page.sql.gz"
    lines: list[str] = []
    with DumpServer(served, cut={page: 300}, busy=1) as server:
        downloader = Downloader("wikihash-test/0.1 (test@example.org)",
                                progress=lambda t: lines.append(t.line()), sleep=lambda s: None,
                                every=0.0, chunk=100)
        found, files = download.open_run(f"{server.url}localwiki/{run.name}/", dbname="localwiki",
                                         dumps_url=server.url, dumps_dir=tmp_path / "here",
                                         downloader=downloader)
        assert found.name == f"localwiki-{run.name}"
        assert files["page"].read_bytes() == (run / page).read_bytes()
        page_gets = [r for r in server.log if r.path.endswith(page)]
        assert [r.range for r in page_gets] == [None, "bytes=300-"]
        assert page_gets[1].status == 206
        assert server.log[0].status == 429  # waited, then asked again
        assert all(r.user_agent.startswith("wikihash-test/") for r in server.log)
        assert any("MB/s" in line for line in lines)

        # Verified files are not fetched again; `latest` finds the run from the listing.
        server.log.clear()
        latest, _ = download.open_run("latest", dbname="localwiki", dumps_url=server.url,
                                      dumps_dir=tmp_path / "here", downloader=downloader)
        assert latest.date == run.name
        assert not [r for r in server.log if r.path.endswith(".sql.gz")]

        # A file that does not match the checksum list is refused and not kept.
        (tmp_path / "here" / "localwiki" / run.name / page).unlink()
        (run / page).write_bytes(b"\x1f\x8b" + (run / page).read_bytes()[2:-4] + b"XXXX")
        with pytest.raises(DumpError, match="checksum mismatch"):
            download.open_run(f"{server.url}localwiki/{run.name}", dbname="localwiki",
                              dumps_url=server.url, dumps_dir=tmp_path / "here",
                              downloader=downloader)
        assert not (tmp_path / "here" / "localwiki" / run.name / page).exists()
        # Another wiki's dumps are refused before anything is downloaded.
        with pytest.raises(DumpError, match="is a dump of localwiki, but the wiki is enwiki"):
            download.open_run(f"{server.url}localwiki/{run.name}/", dbname="enwiki",
                              dumps_url=server.url, dumps_dir=tmp_path / "other",
                              downloader=downloader)


def test_dump_time_is_no_later_than_the_first_table_taken():
    from pipeline.dumps.source import DumpRun

    def job(updated: str, *names: str) -> dict:
        return {"status": "done", "updated": updated, "files": {n: {} for n in names}}

    run = DumpRun("enwiki", "20261201", "/x", status={"jobs": {
        "sitestatstable": job("2026-12-01 02:00:00"),
        "pagetable": job("2026-12-01 05:00:00", "enwiki-20261201-page.sql.gz"),
        "imagelinkstable": job("2026-12-01 03:00:00", "enwiki-20261201-imagelinks.sql.gz"),
        "categorytable": job("2026-12-01 04:00:00"),  # ended after the first table we use
        "xmlstubsdump": job("2026-12-02 09:00:00"),
    }})
    # imagelinks ended first (03:00); the last job ending before it is sitestats (02:00).
    assert run.dump_time() == "2026-12-01T02:00:00Z"
    assert run.incomplete() == []
    del run.status["jobs"]["sitestatstable"]
    assert run.dump_time() == "2026-12-01T00:00:00Z"  # nothing before: the run's date
    run.status["jobs"]["pagetable"]["status"] = "in-progress"
    assert run.incomplete() == ["enwiki-20261201-page.sql.gz"]
