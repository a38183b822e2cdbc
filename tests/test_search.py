"""Search: a fake wiki crawled by real workers, searched with its own images and altered copies.

`crawled` (session scope, tests/conftest.py) is shared with test_web.py, test_export.py and
e2e/test_browser.py: one crawl per test session.
"""

from __future__ import annotations

import io
import json

import psycopg2
import pytest
import requests
from click.testing import CliRunner
from PIL import Image, ImageOps

from pipeline import imaging, search, storage, variants
from pipeline.cli import cli


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _search(db_url: str, data: bytes, **kwargs) -> search.SearchResult:
    with storage.connection(db_url) as conn:
        return search.search_bytes(conn, data, **kwargs)


def _by_title(result: search.SearchResult) -> dict[str, search.Match]:
    """Each listed file's name (a match's own or one of its duplicates') -> its match."""
    return {t: m for m in result.matches for t in [m.title, *(d.title for d in m.duplicates)]}


# -- URLs as MediaWiki writes them -------------------------------------------------------------

@pytest.mark.parametrize(("title", "path"), [
    ("Article 0001", "Article_0001"),
    ("AC/DC", "AC/DC"),
    ("Café (band)", "Caf%C3%A9_(band)"),
    ("Help:Contents", "Help:Contents"),
    ("100% & more?", "100%25_%26_more%3F"),
    ("C++", "C%2B%2B"),
    ("Don't stop", "Don%27t_stop"),
    ("Tom, Dick; Harry!", "Tom,_Dick;_Harry!"),
])
def test_article_urls_follow_wfurlencode(title, path):
    assert search.article_url("https://en.wikipedia.org", "/wiki/$1", title) == (
        "https://en.wikipedia.org/wiki/" + path)


def test_article_urls_use_the_wikis_own_server_and_path():
    assert search.article_url("//fr.wikipedia.org", "/wiki/$1", "Été") == (
        "https://fr.wikipedia.org/wiki/%C3%89t%C3%A9")
    assert search.article_url("http://127.0.0.1:8080", "/index.php?title=$1", "A b") == (
        "http://127.0.0.1:8080/index.php?title=A_b")


# -- the crawled wiki ------------------------------------------------------------------------

def test_every_used_image_finds_its_articles(crawled):
    server, path = crawled.rows("SELECT (SELECT value FROM wiki_info WHERE key = 'server'),"
                                " (SELECT value FROM wiki_info WHERE key = 'articlepath')")[0]
    assert server == crawled.server.base_url
    session = requests.Session()
    session.trust_env = False
    sources = dict(crawled.rows("SELECT title, coalesce(thumb_url, url) FROM files"
                                " WHERE state = 'hashed'"))
    originals_found = 0
    for name, pages in sorted(crawled.used.items()):
        # The image as the wiki shows it (the thumbnail that was hashed): distance 0.
        served = session.get(sources[name], timeout=10).content
        result = _search(crawled.db_url, served, probe=("original",))
        match = _by_title(result).get(name)
        assert match is not None and match.distance == 0, name
        # One result for the file and its exact duplicates, with all their articles.
        grouped = [match.title] + [d.title for d in match.duplicates]
        assert {a.title for a in match.articles} == set().union(
            *(crawled.used.get(t, set()) for t in grouped))
        assert pages <= {a.title for a in match.articles}
        for article in match.articles:
            assert article.url == server + path.replace(
                "$1", search.wfurlencode(article.title))
        assert [m.distance for m in result.matches] == sorted(m.distance for m in result.matches)
        # The full-size original: its hash drifts from the thumbnail's by a few bits.
        original = _search(crawled.db_url, crawled.data(name), probe=("original",))
        originals_found += name in _by_title(original)
    assert originals_found >= 0.9 * len(crawled.used)


def test_altered_copies_are_found_through_variants(crawled):
    name = next(n for n in sorted(crawled.used) if n.startswith("Generated"))
    image, _ = imaging.prepare(crawled.data(name))
    mirrored = _png(ImageOps.mirror(image))
    framed = _png(ImageOps.expand(image, border=image.width // 20, fill=(255, 255, 255)))
    for copy, variant in ((mirrored, "mirror"), (framed, "trimmed")):
        plain = _search(crawled.db_url, copy, probe=("original",), max_distance=4)
        assert name not in {m.title for m in plain.matches}
        found = _by_title(_search(crawled.db_url, copy))
        assert name in found
        assert found[name].variant == variant
        assert crawled.used[name] <= {a.title for a in found[name].articles}


def test_nearest_k_lists_k_files_by_distance(crawled):
    name = sorted(crawled.used)[0]
    result = _search(crawled.db_url, crawled.data(name), nearest=5)
    assert len(result.matches) == 5
    assert result.matches[0].title == name
    assert [m.distance for m in result.matches] == sorted(m.distance for m in result.matches)
    assert result.max_distance is None and result.nearest == 5


def test_cli_search_prints_matches_and_json(crawled, tmp_path):
    name = next(n for n in sorted(crawled.used) if n.startswith("Generated"))
    runner = CliRunner()
    env = {"WIKIHASH_DATABASE_URL": crawled.db_url}
    query = tmp_path / "query.png"
    query.write_bytes(crawled.data(name))
    text = runner.invoke(cli, ["search", str(query)], env=env)
    assert text.exit_code == 0, text.output
    article = sorted(crawled.used[name])[0]
    assert name in text.output
    assert search.wfurlencode(article) in text.output
    as_json = runner.invoke(cli, ["search", str(query), "--json", "--nearest", "3"], env=env)
    assert as_json.exit_code == 0, as_json.output
    answer = json.loads(as_json.output)
    assert answer["matches"][0]["title"] == name and len(answer["matches"]) == 3
    missing = runner.invoke(cli, ["search", str(tmp_path / "nope.png")], env=env)
    assert missing.exit_code == 1 and "cannot read" in missing.output
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    bad = runner.invoke(cli, ["search", str(tmp_path / "bad.png")], env=env)
    assert bad.exit_code == 1 and "Error" in bad.output and "Traceback" not in bad.output


def test_cli_search_fetches_urls_only_from_public_or_allowed_hosts(crawled):
    name, url = crawled.rows("SELECT title, url FROM files WHERE state = 'hashed'"
                             " AND url LIKE %s ORDER BY title LIMIT 1",
                             (crawled.server.base_url + "%",))[0]
    runner = CliRunner()
    env = {"WIKIHASH_DATABASE_URL": crawled.db_url}
    refused = runner.invoke(cli, ["search", url], env=env)
    assert refused.exit_code == 1 and "loopback" in refused.output
    host = crawled.server.base_url.split("//", 1)[1]
    allowed = runner.invoke(cli, ["search", url, "--allow-host", host], env=env)
    assert allowed.exit_code == 0, allowed.output
    assert name in allowed.output


# -- low-information queries -----------------------------------------------------------------

def test_low_information_query_is_capped_with_a_note(db_url, tmp_path):
    storage.migrate(db_url)
    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO wiki_info VALUES ('server', 'http://w.test'),"
                    " ('articlepath', '/wiki/$1')")
        for i in range(60):
            cur.execute("INSERT INTO pages (page_id, title) VALUES (%s, %s)", (i, f"Flag {i}"))
            cur.execute("INSERT INTO files (title, state, dhash, low_information) VALUES"
                        " (%s, 'hashed', %s, true) RETURNING file_id", (f"Flag {i}.png", i % 3))
            cur.execute("INSERT INTO usages (page_id, file_id) VALUES (%s, %s)",
                        (i, cur.fetchone()[0]))
    conn.close()
    flat = _png(Image.new("RGB", (300, 200), (200, 20, 20)))
    stripes = Image.new("RGB", (300, 200), (255, 255, 255))
    for y in range(0, 200, 40):
        stripes.paste((200, 0, 0), (0, y, 300, y + 20))
    for data in (flat, _png(stripes)):
        result = _search(db_url, data)
        assert result.low_information
        assert len(result.matches) == search.LOW_INFORMATION_CAP
        assert result.truncated
        assert "little information" in result.note
    runner = CliRunner()
    (tmp_path / "flat.png").write_bytes(flat)
    printed = runner.invoke(cli, ["search", str(tmp_path / "flat.png")],
                            env={"WIKIHASH_DATABASE_URL": db_url})
    assert printed.exit_code == 0, printed.output
    assert "note: this image carries little information" in printed.output
    assert printed.output.count("http://w.test/wiki/Flag_") == search.LOW_INFORMATION_CAP


def test_variants_are_distinct_and_start_with_the_canonical_hash(corpus):
    data = (corpus / "images").iterdir().__next__().read_bytes()
    canonical, probes = variants.query_variants(data)
    assert probes[0] == variants.Variant("original", canonical.int64,
                                         canonical.width / canonical.height)
    assert canonical == imaging.hash_bytes(data)
    assert len({p.int64 for p in probes}) == len(probes)


def test_trim_border_removes_a_uniform_frame_only():
    inner = Image.new("RGB", (200, 100), (10, 120, 200))
    for x in range(0, 200, 25):
        inner.paste((250, 200, 0), (x, 0, x + 10, 100))
    framed = ImageOps.expand(inner, border=12, fill=(0, 0, 0))
    trimmed = variants.trim_border(framed)
    assert trimmed is not None and trimmed.size == inner.size
    assert variants.trim_border(inner) is None
    assert variants.trim_border(Image.new("RGB", (50, 50), (0, 0, 0))) is None


def test_nearest_is_exact_whichever_index_answers(crawled):
    """K nearest through the MIH index (near copies exist) or the BK-tree walk (none do)."""
    conn = psycopg2.connect(crawled.db_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT dhash FROM files WHERE dhash IS NOT NULL ORDER BY file_id")
            stored = [h for (h,) in cur.fetchall()]
            for query in stored[:5] + [stored[0] ^ 0x0F0F0F0F0F0F0F0F, 0x5555555555555555]:
                for k in (1, 5, 40):
                    truth = sorted(bin((query ^ h) & (2**64 - 1)).count("1") for h in stored)[:k]
                    found = [d for _, d in search._nearest(cur, query, k)]
                    assert found == truth, (query, k)
    finally:
        conn.close()
