"""What `wikihash search` prints: plurals, --nearest without a wrong note, a cue for results
that are not similar, the low-information note over the variants, and --allow-host."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageOps

from pipeline import imaging, storage
from pipeline.cli import cli
from tests.conftest import CORPUS, sql_rows

PHOTO = CORPUS / "images" / "mpl_grace_hopper.jpg"


def framed_stripes() -> bytes:
    """Not low-information itself; its trimmed variant (the stripes alone) hashes to zeros."""
    img = Image.new("RGB", (300, 200))
    draw = ImageDraw.Draw(img)
    for i, colour in enumerate([(200, 0, 0), (255, 255, 255), (0, 0, 200), (255, 255, 0)]):
        draw.rectangle([0, i * 50, 300, i * 50 + 50], fill=colour)
    out = io.BytesIO()
    ImageOps.expand(img, border=30, fill=(0, 0, 0)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def index(db_url):
    """One file that is the photo, one 24 bits away, and a flat one, each used by an article."""
    storage.migrate(db_url)
    photo = imaging.hash_bytes(PHOTO.read_bytes()).int64
    far = photo ^ 0x000F_00FF_0F00_F00F  # 24 bits flipped
    sql_rows(db_url, "INSERT INTO wiki_info VALUES ('server', 'http://w.test'),"
                     " ('articlepath', '/wiki/$1') RETURNING 1")
    for i, (title, dhash) in enumerate([("Hopper.jpg", photo), ("Far.png", far),
                                        ("Flat.png", 0)]):
        sql_rows(db_url, "INSERT INTO files (title, sha1, state, dhash) VALUES"
                         " (%s, %s, 'hashed', %s) RETURNING 1", (title, f"s{i}", dhash))
        sql_rows(db_url, "INSERT INTO pages (page_id, title) VALUES (%s, %s) RETURNING 1",
                 (i + 1, f"Article {i}"))
        sql_rows(db_url, "INSERT INTO usages (page_id, file_id) SELECT %s, file_id FROM files"
                         " WHERE title = %s RETURNING 1", (i + 1, title))
    return db_url


def search(db_url: str, *args: str):
    return CliRunner().invoke(cli, ["search", *args], env={"WIKIHASH_DATABASE_URL": db_url})


def test_one_file_is_one_file(index):
    result = search(index, str(PHOTO), "--plain")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith(": 1 file within 8 bits")  # was "1 files"


def test_nearest_counts_and_cues_far_results(index):
    result = search(index, str(PHOTO), "--plain", "--nearest", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(": the 2 nearest files")  # was "2 files the 2 nearest"
    assert not any(line.startswith("note:") for line in lines)  # was "more than 2 matched"
    assert lines[1] == "  0  Hopper.jpg"
    assert lines[3] == " 24  Far.png  (not similar: 24 bits apart)"


def test_low_information_note_considers_the_variants(db_url, tmp_path):
    storage.migrate(db_url)
    query = tmp_path / "flag.png"
    query.write_bytes(framed_stripes())
    assert not imaging.hash_bytes(query.read_bytes()).low_information
    result = search(db_url, str(query))
    assert result.exit_code == 0, result.output
    assert "note: this image carries little information for dhash (hash" in result.output
    assert "0000000000000000 of its trimmed variant" in result.output


def test_a_loopback_url_is_refused_with_a_pointer_at_allow_host(db_url):
    result = search(db_url, "http://127.0.0.1:9/picture.png")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: refused: 127.0.0.1 is a loopback address; to search a server of your own "
        "there, add --allow-host 127.0.0.1:9"]
