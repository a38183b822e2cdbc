"""The crawl from dumps end to end: a fake wiki, its dump run served over HTTP on 127.0.0.1,
real PostgreSQL, Redis and Celery workers, `ops/up --until-done --from-dumps URL`.

The ledger must be the walk's, the API must have served only siteinfo and imageinfo (no
allpages walk) within ⌈files ÷ 50⌉ × 1.3 + 30 requests, and a re-crawl afterwards must catch
up with what changed after the dump.
"""

from __future__ import annotations

import math
import subprocess

import dumpgen
import pytest
from dumpserver import DumpServer
from fakewiki import FakeWikiServer
from test_crawl import assert_ledger_matches
from test_recrawl import apply_changes
from wikis import build_wiki, current_truth

from pipeline import storage
from tests.conftest import ROOT, sql_rows
from tests.e2e.conftest import environment

pytestmark = pytest.mark.slow

AWKWARD = {"Rock 'n' roll": 0, 'Say "cheese"': 1, "Back\\slash": 2, "Ünïcödé ☃ 東京": 3}
LEDGER = {
    "pages": "SELECT page_id, title, rev_id FROM pages",
    "files": "SELECT title, state, reason, sha1, mime, media_type, size, width, height, repo,"
             " url, thumb_url, dhash, low_information, hashed_from FROM files",
    "usages": "SELECT p.title, f.title FROM usages JOIN pages p USING (page_id)"
              " JOIN files f USING (file_id)",
}


def dumped_wiki():
    wiki, commons, truth = build_wiki(articles=120, big_article_images=30, generated=20)
    names = sorted(wiki.files)
    for title, i in AWKWARD.items():
        images = {names[i], "O'Brien \"Ōsaka\" \\ 大阪.jpg"}
        wiki.add_page(title, images=sorted(images))
        truth.articles[title] = images
    truth.missing.add("O'Brien \"Ōsaka\" \\ 大阪.jpg")
    return wiki, commons, truth


def ledger(url: str) -> dict[str, set]:
    return {name: set(sql_rows(url, query)) for name, query in LEDGER.items()}


@pytest.mark.parametrize("schema", ["linktarget", "il_to"])
def test_ops_up_from_dumps_gives_the_walks_ledger(tmp_path, db_url, make_database, crawl_env,
                                                  schema):
    wiki, commons, truth = dumped_wiki()
    run = dumpgen.write_run(wiki, tmp_path / "served", schema=schema)
    with FakeWikiServer(commons) as shared, FakeWikiServer(wiki) as server, \
            DumpServer(tmp_path / "served", cut={f"localwiki-{run.name}-page.sql.gz": 2000}) \
            as dumps:
        env = crawl_env(server.api_url, WIKIHASH_DUMPS_URL=dumps.url,
                        WIKIHASH_DUMPS_DIR=str(tmp_path / "downloads"))
        source = "latest" if schema == "il_to" else f"{dumps.url}localwiki/{run.name}/"
        up = [str(ROOT / "ops" / "up"), "--until-done", "--workers", "2", "--logs",
              str(tmp_path / "logs"), "--no-services", "--no-flower", "--from-dumps", source]
        done = subprocess.run(up, env=env.env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "the crawl is complete" in done.stderr
        # The cut transfer was tried again (tests/test_dumps.py shows it resumes by Range).
        assert len([r for r in dumps.log if r.path.endswith("page.sql.gz")]) == 2

        # The API served what the dumps lack, nothing more: no walk, imageinfo 50 a request.
        kinds = server.api_counts()
        assert set(kinds) <= {"meta:siteinfo", "prop:imageinfo"}, kinds
        files = sql_rows(db_url, "SELECT count(*) FROM files")[0][0]
        assert len(server.requests) <= math.ceil(files / 50) * 1.3 + 30
        assert_ledger_matches(db_url, truth, server)

        if schema == "linktarget":
            # The same wiki walked through the API gives the same ledger.
            walked = make_database()
            storage.migrate(walked)
            walk = environment(walked, env.env["WIKIHASH_BROKER_URL"], server.api_url)
            with walk.workers(2):
                result = walk.wikihash("crawl", timeout=300)
            assert result.returncode == 0, result.stderr[-3000:]
            assert ledger(walked) == ledger(db_url)

        # The change feed from the dump's time on brings the ledger up to date.
        cursor = sql_rows(db_url, "SELECT value #>> '{}' FROM crawl_state"
                                  " WHERE key = 'last_crawl'")[0][0]
        assert cursor == run_time(run)
        apply_changes(wiki, commons)
        server.reset_logs()
        with env.workers(2):
            recrawl = env.wikihash("recrawl", timeout=300)
        assert recrawl.returncode == 0, recrawl.stderr[-3000:]
        assert "feed from" in recrawl.stdout
        assert_ledger_matches(db_url, current_truth(wiki, corrupt={"Broken.jpg"}), server)
        del shared


def run_time(run) -> str:
    import json

    status = json.loads((run / "dumpstatus.json").read_text())
    when = status["jobs"]["sitestatstable"]["updated"]
    return when.replace(" ", "T") + "Z"


def test_bad_dumps_are_refused_and_leave_nothing(tmp_path, db_url, crawl_env):
    wiki, commons, _ = dumped_wiki()
    run = dumpgen.write_run(wiki, tmp_path)
    with FakeWikiServer(commons), FakeWikiServer(wiki) as server:
        env = crawl_env(server.api_url, WIKIHASH_DUMPS_DIR=str(tmp_path / "downloads"))

        def crawl(*extra: str) -> subprocess.CompletedProcess:
            return env.wikihash("crawl", "--no-wait", "--from-dumps", str(run), *extra,
                                timeout=120)

        def empty() -> bool:
            return sql_rows(db_url, "SELECT (SELECT count(*) FROM pages) + (SELECT count(*)"
                                    " FROM files) + (SELECT count(*) FROM crawl_state)")[0][0] == 0

        page = run / f"localwiki-{run.name}-page.sql.gz"
        good = page.read_bytes()
        # A checksum mismatch.
        page.write_bytes(good[:-8] + bytes(8))
        refused = crawl()
        assert refused.returncode == 3
        assert "checksum mismatch" in refused.stderr.strip().splitlines()[-1]
        assert empty()
        # A truncated file that matches its (rewritten) checksum list: the parser sees it.
        page.write_bytes(good[: len(good) // 2])
        dumpgen.write_sums(run, "localwiki", run.name)
        refused = crawl()
        assert refused.returncode == 3 and "truncated" in refused.stderr, refused.stderr
        assert empty()
        # An unknown schema.
        import gzip

        page.write_bytes(gzip.compress(gzip.decompress(good).replace(b"`page_latest`",
                                                                       b"`page_newest`")))
        dumpgen.write_sums(run, "localwiki", run.name)
        refused = crawl()
        assert refused.returncode == 3 and "unknown schema" in refused.stderr, refused.stderr
        assert empty()
        # Another wiki's dumps.
        page.write_bytes(good)
        other = tmp_path / "other"
        for path in run.iterdir():
            other.joinpath(path.name.replace("localwiki", "dewiki")).parent.mkdir(exist_ok=True)
            other.joinpath(path.name.replace("localwiki", "dewiki")).write_bytes(
                path.read_bytes())
        dumpgen.write_sums(other, "dewiki", run.name)
        refused = env.wikihash("crawl", "--no-wait", "--from-dumps", str(other), timeout=60)
        assert refused.returncode == 3 and "dewiki" in refused.stderr, refused.stderr

        # A ledger that holds a walk is not overwritten unless told to.
        dumpgen.write_sums(run, "localwiki", run.name)
        walked = env.wikihash("crawl", "--no-wait", "--limit", "5", timeout=60)
        assert walked.returncode == 0, walked.stderr
        refused = crawl()
        assert refused.returncode == 3 and "--replace" in refused.stderr
        assert sql_rows(db_url, "SELECT count(*) FROM pages")[0][0] == 5
        replaced = crawl("--replace")
        assert replaced.returncode == 0, replaced.stderr[-2000:]
        articles = sum(1 for p in wiki.pages.values() if p.ns == 0 and not p.is_redirect)
        assert sql_rows(db_url, "SELECT count(*) FROM pages")[0][0] == articles
        # The same run again: nothing to do.
        again = crawl()
        assert again.returncode == 0 and "already" in again.stderr, again.stderr
