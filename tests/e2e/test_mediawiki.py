"""End to end against real MediaWikis: Debian's MediaWiki 1.39 on SQLite, a wiki and its shared
file repository (ForeignAPIRepo, as Commons serves Wikipedia), thumbnails made by ImageMagick.

The truth comes from the wikis' own databases; the ledger must equal it after `ops/up
--until-done`, and again after `wikihash recrawl` once both wikis have been edited, uploaded
to, re-uploaded to and deleted from.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
from mediawiki import available, build_pair, truth
from mediawiki.content import INFOBOX
from test_crawl import assert_ledger_matches
from wikis import generated_image

from pipeline import config, imaging
from tests.conftest import ROOT, sql_rows

pytestmark = [pytest.mark.slow, pytest.mark.mediawiki]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The wiki pair, built once for this module (about 35 s) and stopped after it."""
    reason = available()
    if reason:
        pytest.skip(reason)
    built = build_pair(tmp_path_factory.mktemp("mediawiki"))
    print(f"MediaWiki pair built in {built.build_seconds:.1f} s")
    yield built
    built.stop()


def ops_up(env, logs) -> subprocess.CompletedProcess:
    up = [str(ROOT / "ops" / "up"), "--until-done", "--workers", "2", "--logs", str(logs),
          "--no-services", "--no-flower"]
    done = subprocess.run(up, env=env.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the crawl is complete" in done.stderr
    return done


def test_crawl_of_a_real_wiki_matches_its_database(pair, db_url, crawl_env, tmp_path):
    expected = truth(pair)
    # What the pair must contain for this test to mean something.
    assert "List of everything" in expected.articles
    assert len(expected.articles["List of everything"]) > 500
    assert "Redirect to article" not in expected.articles
    assert {"Anthem.ogg", "Manual.pdf"} <= expected.unsupported
    assert "Broken.jpg" in expected.corrupt
    used = set().union(*expected.articles.values())
    assert "On both wikis.png" in used and "Copy of Generated 000.png" in used

    env = crawl_env(pair.wiki.api_url)
    ops_up(env, tmp_path)
    assert_ledger_matches(db_url, expected, None)

    # Files come from the wiki that holds them: the local copy shadows the shared one.
    repos = dict(sql_rows(db_url, "SELECT title, repo FROM files WHERE state = 'hashed'"))
    assert repos["On both wikis.png"] == "local"
    assert {repos[n] for n in repos if n.startswith("Generated 00")} == {"local", "sharedwiki"}
    # Thumbnails were MediaWiki's, made on request by its 404 handler.
    thumbs = sql_rows(db_url, "SELECT thumb_url FROM files WHERE state = 'hashed'"
                              " AND thumb_url IS NOT NULL")
    assert thumbs and all("/thumb/" in url for (url,) in thumbs)
    assert any(pair.shared.server in url for (url,) in thumbs)
    # Each hash records the width it was made at: the stored width, or a narrower original's.
    width = config.load(env.env).thumb_width
    for source, hashed, original in sql_rows(db_url, "SELECT hashed_from, hashed_width, width"
                                                     " FROM files WHERE state = 'hashed'"):
        assert hashed == (width if source == "thumb" else original), (source, hashed, original)
    # One content, one download: both copies of Generated 000.png got the same hash.
    copies = sql_rows(db_url, "SELECT DISTINCT dhash FROM files WHERE title IN"
                              " ('Generated 000.png', 'Copy of Generated 000.png',"
                              "  'Copy on shared of Generated 000.png')")
    assert len(copies) == 1 and copies[0][0] is not None

    # A second run finds nothing to do.
    before = sql_rows(db_url, "SELECT title, dhash, state FROM files ORDER BY title")
    ops_up(env, tmp_path)
    assert sql_rows(db_url, "SELECT title, dhash, state FROM files ORDER BY title") == before


def test_rehash_moves_a_ledger_to_another_width_keeping_old_hashes_until_then(pair, db_url,
                                                                              crawl_env,
                                                                              tmp_path):
    env = crawl_env(pair.wiki.api_url, WIKIHASH_THUMB_WIDTH="120")
    ops_up(env, tmp_path)
    old = dict(sql_rows(db_url, "SELECT file_id, dhash FROM files WHERE state = 'hashed'"))
    first = env.wikihash("rehash", "--width", "330", "--limit", "20", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    widths = sql_rows(db_url, "SELECT file_id, dhash, hashed_width, hashed_from FROM files"
                              " WHERE state = 'hashed' ORDER BY file_id")
    # Stopped part-way: files not reached yet keep their 120 px hash.
    untouched = [r for r in widths if r[2] <= 120 and r[3] == "thumb"]
    assert untouched and all(old[r[0]] == r[1] for r in untouched)
    assert any(r[2] == 330 for r in widths)

    rest = env.wikihash("rehash", "--width", "330", timeout=300)
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert rest.stdout.rstrip().endswith("0 left"), rest.stdout
    session = requests.Session()
    session.trust_env = False
    for title, dhash, hashed_width, source, url, thumb in sql_rows(
            db_url, "SELECT title, dhash, hashed_width, hashed_from, url, thumb_url FROM files"
                    " WHERE state = 'hashed'"):
        result = imaging.hash_bytes(session.get(thumb or url, timeout=30).content)
        assert (title, dhash, hashed_width) == (title, result.int64, result.width)
        assert hashed_width == 330 if source == "thumb" else hashed_width <= 330


def change_both_wikis(pair) -> dict[str, str]:
    """Edits, uploads, re-uploads, moves and deletions on the wiki and its repository."""
    wiki, shared = pair.wiki, pair.shared
    used = set().union(*truth(pair).articles.values())
    local = sorted(n.replace("_", " ") for (n,) in wiki.sql("SELECT img_name FROM image"))
    remote = sorted(n.replace("_", " ") for (n,) in shared.sql("SELECT img_name FROM image"))
    plain = lambda n: n in used and n.startswith("Generated")  # noqa: E731
    names = {
        "overwritten": next(n for n in local if plain(n)),
        "deleted_file": [n for n in local if plain(n)][1],
        "shared_overwritten": next(n for n in remote if plain(n)),
        "shared_deleted": [n for n in remote if plain(n)][1],
        "red_link_filled": "Red link 0.jpg",
        "shared_red_link_filled": "Red link 1.jpg",
    }
    wiki.upload("Fresh upload.png", generated_image(99001))
    wiki.edit("Article 0003", "[[File:Fresh upload.png|thumb]] and [[File:Generated 005.jpg]]")
    wiki.edit("Brand new article", f"<gallery>\nFile:Fresh upload.png\nFile:{remote[0]}\n"
                                   "</gallery>")
    wiki.delete("Article 0010")
    wiki.move("Article 0011", "Article eleven")
    wiki.upload(names["overwritten"], picture(99002, names["overwritten"]))
    wiki.delete("File:" + names["deleted_file"])
    shared.upload(names["shared_overwritten"], picture(99003, names["shared_overwritten"]))
    shared.delete("File:" + names["shared_deleted"])
    wiki.upload(names["red_link_filled"], generated_image(99004, "JPEG"))
    shared.upload(names["shared_red_link_filled"], generated_image(99005, "JPEG"))
    wiki.edit("Article 0020", "No pictures any more.")
    wiki.edit("Redirect to article", "Now an article of its own: [[File:Generated 007.jpg]]")
    edit_template(pair, INFOBOX_WITH_FLAG)
    return names


# The infobox of tests/mediawiki/content.py with its {{{image}}} replaced by a new file: every
# article using it loses its infobox image (unless it shows it elsewhere) and gains the flag,
# without a new revision of any of them.
INFOBOX_WITH_FLAG = ('{| class="infobox"\n| [[File:Infobox flag.png|20px]] {{{name|}}}\n'
                     "|}\n")


def edit_template(pair, text: str) -> None:
    """Edit Template:Infobox, then run the wiki's jobs: the articles' imagelinks follow a
    template edit through refreshLinks jobs (Wikipedia's job runners; $wgJobRunRate is 0)."""
    if not pair.wiki.sql("SELECT 1 FROM image WHERE img_name = 'Infobox_flag.png'"):
        pair.wiki.upload("Infobox flag.png", generated_image(99006))
    pair.wiki.edit("Template:Infobox", text)
    pair.wiki.php("runJobs.php")


def revisions_and_images(pair) -> dict[str, tuple[int, set[str]]]:
    latest = dict(pair.wiki.sql("SELECT page_title, page_latest FROM page"
                                " WHERE page_namespace = 0"))
    return {title: (latest[title.replace(" ", "_")], files)
            for title, files in truth(pair).articles.items()}


def assert_template_edit_seen(before, after) -> None:
    """Some article shows other files with no new revision of its own (the case the re-crawl
    must catch from the template's edit), and the ledger (checked by the caller) follows."""
    moved = [t for t in before if t in after and before[t][0] == after[t][0]
             and before[t][1] != after[t][1]]
    assert moved, "no article's images changed through the template alone"


def picture(seed: int, name: str) -> bytes:
    """A new picture in the format `name`'s extension says (MediaWiki refuses a mismatch)."""
    return generated_image(seed, "JPEG" if name.endswith(".jpg") else "PNG")


def test_recrawl_of_real_wikis_applies_every_change(pair, db_url, crawl_env, tmp_path):
    env = crawl_env(pair.wiki.api_url)
    ops_up(env, tmp_path)
    before = dict(sql_rows(db_url, "SELECT title, dhash FROM files"))
    pages_before = revisions_and_images(pair)
    time.sleep(1.1)  # the feed's timestamps have a resolution of one second
    names = change_both_wikis(pair)
    assert_template_edit_seen(pages_before, revisions_and_images(pair))

    started = time.monotonic()
    with env.workers(2):  # the re-crawl waits until the new contents are hashed
        result = env.wikihash("recrawl", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seconds = time.monotonic() - started

    expected = truth(pair)
    assert "Article eleven" in expected.articles and "Article 0010" not in expected.articles
    assert "Redirect to article" in expected.articles
    assert_ledger_matches(db_url, expected, None)
    after = dict(sql_rows(db_url, "SELECT title, dhash FROM files"))
    for name in ("overwritten", "shared_overwritten"):
        assert after[names[name]] not in (None, before[names[name]]), name
    for name in ("deleted_file", "shared_deleted"):
        assert after[names[name]] is None, name
    for name in ("red_link_filled", "shared_red_link_filled"):
        assert before[names[name]] is None and after[names[name]] is not None, name
    urls = {u for (u,) in sql_rows(db_url, "SELECT url FROM hashes")}
    assert not any(u.endswith(("/Article_0020", "/Article_0010")) for u in urls)
    assert any("Infobox flag.png" in files for files in expected.articles.values())
    print(f"re-crawl of {len(names)} kinds of change: {seconds:.1f} s")


def test_recrawl_walk_sees_a_template_edit(pair, db_url, crawl_env, tmp_path):
    """When the feed no longer reaches the last crawl, the walk compares revision ids, which a
    template edit leaves alone; page_touched is what moves."""
    env = crawl_env(pair.wiki.api_url)
    ops_up(env, tmp_path)
    pages_before = revisions_and_images(pair)
    time.sleep(1.1)
    edit_template(pair, INFOBOX_WITH_FLAG if "Infobox flag.png" not in str(pages_before)
                  else INFOBOX)
    assert_template_edit_seen(pages_before, revisions_and_images(pair))
    env.env["WIKIHASH_FEED_MAX_AGE"] = "0.000001"  # days: the last crawl is older than that
    with env.workers(2):
        result = env.wikihash("recrawl", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "walk from" in result.stdout + result.stderr, result.stdout + result.stderr
    assert_ledger_matches(db_url, truth(pair), None)
