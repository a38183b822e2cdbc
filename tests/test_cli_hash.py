"""`wikihash hash`: the canonical hash of local files, as text or JSON lines."""

import json
from pathlib import Path

from click.testing import CliRunner
from test_imaging import reference_hash

from pipeline import imaging
from pipeline.cli import cli

DATA = Path(__file__).resolve().parent / "data" / "images"


def test_json_lines_match_the_reference_and_failures_do_not_stop_the_rest(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    page = tmp_path / "error.jpg"
    page.write_bytes(b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>")
    images = sorted(DATA.iterdir())
    paths = [str(broken), *map(str, images), str(page), str(tmp_path / "absent.png")]
    result = CliRunner().invoke(cli, ["hash", "--json", *paths])
    assert result.exit_code == 1  # some files could not be hashed
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["path"] for r in records] == paths
    for record in records:
        assert {"path", "hex", "int64", "format", "flattened", "low_information",
                "error"} <= record.keys()
    by_path = {r["path"]: r for r in records}
    for image in images:
        record = by_path[str(image)]
        assert record["error"] is None, record
        data = image.read_bytes()
        if record["flattened"] != "black":
            assert record["hex"] == reference_hash(data)
        assert record["int64"] == imaging.hex_to_int64(record["hex"])
    assert by_path[str(broken)]["error"].startswith("corrupt")
    assert by_path[str(page)]["error"] == "corrupt: not an image: HTML"
    assert by_path[str(tmp_path / "absent.png")]["error"].startswith("cannot read")


def test_text_output_says_what_was_done():
    image = DATA / "adwaita_battery-good-48x48.png"
    result = CliRunner().invoke(cli, ["hash", str(image)])
    assert result.exit_code == 0, result.output
    hexdigest, signed, path, *rest = result.output.split()
    assert hexdigest == imaging.hash_bytes(image.read_bytes()).hex
    assert int(signed) == imaging.hex_to_int64(hexdigest)
    assert path == str(image)
    assert "PNG 48x48" in result.output and "flattened onto" in result.output
