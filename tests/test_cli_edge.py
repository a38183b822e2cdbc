"""The CLI's edge (issue 17): project errors become one `Error:` line in one place, and the
bound on results is pipeline.search's, the one the web API uses."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline import search
from pipeline.cli import cli

CLOSED = "postgresql://postgres@127.0.0.1:1/wikihash"  # nothing listens on port 1


@pytest.mark.parametrize("args", [["status"], ["db", "init"], ["files"]])
def test_a_project_error_is_one_line(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--database-url", CLOSED],
                                catch_exceptions=False)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "PostgreSQL" in lines[0]


def test_nearest_is_bounded_by_search_max_results() -> None:
    runner = CliRunner()
    help_text = runner.invoke(cli, ["search", "--help"]).output
    assert f"1..{search.MAX_RESULTS}" in " ".join(help_text.split())
    over = runner.invoke(cli, ["search", "--nearest", str(search.MAX_RESULTS + 1), "x.png"])
    assert over.exit_code == 2
    assert f"more than {search.MAX_RESULTS}" in over.output
    with pytest.raises(ValueError, match=f"1..{search.MAX_RESULTS}"):
        search.search_hashes(None, 0, nearest=search.MAX_RESULTS + 1)


def test_a_missing_query_file_names_it(tmp_path) -> None:
    missing = tmp_path / "absent.png"
    result = CliRunner().invoke(cli, ["search", str(missing), "--database-url", CLOSED])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {missing}: cannot read: No such file or directory"
