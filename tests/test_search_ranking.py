"""Ranking (issue 13 #3): the file a query was made from first, exact duplicates as one result.

A ledger in a real PostgreSQL holds the query photograph's near-identical files the way a
wiki does: a crop of it (another shape, the same hash), a mirrored copy (found only by the
mirror variant), the photo itself, the same bytes under a second name, the same pixels saved
again, and a smaller copy. The crop and the mirror are the oldest files, so main's ranking
(distance, then file id) listed the crop first and the photo third, and every duplicate as a
result of its own. Searched through the library, the CLI and a real HTTP server.
"""

from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner
from test_web import Live

from pipeline import imaging, search, storage, variants, web
from pipeline.cli import cli
from tests.conftest import CORPUS, sql_rows

PHOTO = CORPUS / "images" / "mpl_grace_hopper.jpg"


@pytest.fixture
def ledger(db_url) -> str:
    storage.migrate(db_url)
    canonical, probes = variants.query_variants(PHOTO.read_bytes())
    mirror = next(p.int64 for p in probes if p.name == "mirror")
    h, w, hh = canonical.int64, canonical.width, canonical.height
    files = [  # title, dhash, width, height, sha1, article
        ("Hopper crop.jpg", h, round(w * 0.7), hh, "c1", "Crop article"),
        ("Hopper mirrored.jpg", mirror, w, hh, "m1", "Mirror article"),
        ("Hopper.jpg", h, w, hh, "h1", "Hopper article"),
        ("Hopper copy.jpg", h, w, hh, "h1", "Copy article"),
        ("Hopper resaved.jpg", h, w, hh, "r1", "Resaved article"),
        ("Hopper small.jpg", h, w // 2, hh // 2, "s1", "Small article"),
        ("Unrelated.png", h ^ 0x0F0F_0000_0000_00FF, 300, 300, "u1", "Other article"),
    ]
    sql_rows(db_url, "INSERT INTO wiki_info VALUES ('server', 'http://w.test'),"
                     " ('articlepath', '/wiki/$1') RETURNING 1")
    for i, (title, dhash, width, height, sha1, article) in enumerate(files):
        sql_rows(db_url, "INSERT INTO files (title, sha1, state, dhash, width, height) VALUES"
                         " (%s, %s, 'hashed', %s, %s, %s) RETURNING 1",
                 (title, sha1, dhash, width, height))
        sql_rows(db_url, "INSERT INTO pages (page_id, title) VALUES (%s, %s) RETURNING 1",
                 (i + 1, article))
        sql_rows(db_url, "INSERT INTO usages (page_id, file_id) SELECT %s, file_id FROM files"
                         " WHERE title = %s RETURNING 1", (i + 1, title))
    return db_url


EXPECTED = [  # title, duplicates, articles
    ("Hopper.jpg", ["Hopper copy.jpg", "Hopper resaved.jpg"],
     ["Copy article", "Hopper article", "Resaved article"]),
    ("Hopper small.jpg", [], ["Small article"]),  # the query's shape, another size
    ("Hopper crop.jpg", [], ["Crop article"]),  # the same hash, another shape
    ("Hopper mirrored.jpg", [], ["Mirror article"]),  # distance 0 only through a variant
]


def test_the_photo_comes_first_and_its_duplicates_are_one_result(ledger):
    with storage.connection(ledger) as conn:
        result = search.search_bytes(conn, PHOTO.read_bytes())
    got = [(m.title, [d.title for d in m.duplicates], [a.title for a in m.articles])
           for m in result.matches]
    assert got == EXPECTED
    assert [m.distance for m in result.matches] == [0, 0, 0, 0]
    assert result.matches[3].variant == "mirror"
    assert result.matches[0].duplicates[0].file_url == "http://w.test/wiki/File:Hopper_copy.jpg"


def test_nearest_ranks_the_same_way(ledger):
    with storage.connection(ledger) as conn:
        result = search.search_bytes(conn, PHOTO.read_bytes(), nearest=2)
    assert [m.title for m in result.matches] == ["Hopper.jpg", "Hopper small.jpg"]


def test_grouping_needs_the_same_bytes_or_the_same_size_and_a_hash_as_near():
    def c(file_id, sha1, dhash, width, height):
        return search.Candidate(file_id, 0, "original", 0.0, sha1, dhash, width, height)

    assert search.SAME_PICTURE_BITS == 2
    groups = search.group([
        c(1, "a", 5, 10, 10), c(2, "b", 5, 10, 10),  # same hash and size
        c(3, "a", 7, 20, 20),  # same bytes (SHA-1): whatever the facts say
        c(4, "d", 5, 20, 10),  # same hash, another size
        c(5, None, 9, None, None), c(6, None, 9, None, None),  # nothing known to compare
        c(7, "e", 5 ^ 0b11, 10, 10),  # 2 bits from the group's first file
        c(8, "f", 5 ^ 0b111, 10, 10),  # 3 bits from it (1 from file 7: no chains)
        c(9, "g", -1, 10, 10), c(10, "h", -1 ^ (1 << 63), 10, 10),  # the sign bit counts
    ])
    assert [[x.file_id for x in g] for g in groups] == [[1, 2, 3, 7], [4], [5], [6], [8],
                                                        [9, 10]]
    exact = search.group([c(1, "a", 5, 10, 10), c(7, "e", 5 ^ 0b11, 10, 10)], 0)
    assert [[x.file_id for x in g] for g in exact] == [[1], [7]]


def test_the_cli_prints_the_ranked_groups(ledger):
    runner = CliRunner()
    env = {"WIKIHASH_DATABASE_URL": ledger}
    text = runner.invoke(cli, ["search", str(PHOTO)], env=env)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].endswith(": 4 files within 8 bits")
    assert lines[1:6] == [
        "  0  Hopper.jpg",
        "       also uploaded as: Hopper copy.jpg, Hopper resaved.jpg",
        "       Copy article  http://w.test/wiki/Copy_article",
        "       Hopper article  http://w.test/wiki/Hopper_article",
        "       Resaved article  http://w.test/wiki/Resaved_article",
    ]
    assert lines[6] == "  0  Hopper small.jpg"
    assert lines[-2] == "  0  Hopper mirrored.jpg  (as mirror)"
    answer = json.loads(runner.invoke(cli, ["search", str(PHOTO), "--json"], env=env).output)
    assert [(m["title"], [d["title"] for d in m["duplicates"]],
             [a["title"] for a in m["articles"]]) for m in answer["matches"]] == [
        (t, list(d), list(a)) for t, d, a in EXPECTED]


def test_the_api_over_http_answers_the_ranked_groups(ledger):
    server = Live(web.create_app(web.WebSettings(database_url=ledger)))
    try:
        session = requests.Session()
        session.trust_env = False
        response = session.post(server.url + "/api/search",
                                files={"image": ("q.jpg", PHOTO.read_bytes(), "image/jpeg")},
                                timeout=60)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    matches = response.json()["matches"]
    assert [(m["title"], [d["title"] for d in m["duplicates"]],
             [a["title"] for a in m["articles"]]) for m in matches] == [
        (t, list(d), list(a)) for t, d, a in EXPECTED]
    assert matches[0]["duplicates"][1] == {
        "title": "Hopper resaved.jpg", "file_url": "http://w.test/wiki/File:Hopper_resaved.jpg"}


def test_variants_carry_the_shape_of_what_they_were_made_from():
    canonical, probes = variants.query_variants(PHOTO.read_bytes())
    assert canonical == imaging.hash_bytes(PHOTO.read_bytes())
    assert probes[0].aspect == canonical.width / canonical.height
    assert all(p.aspect and abs(p.aspect - probes[0].aspect) < 0.1 for p in probes)
