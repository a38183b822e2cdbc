"""The README stays true: every command and every setting is in it, every command has help."""

import re

import click

from pipeline import config
from pipeline.cli import cli
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found += commands(command, prefix + name + " ")
    return found


def test_every_command_is_in_the_readme_with_help():
    for name, command in commands(cli):
        assert f"wikihash {name}" in README, f"`wikihash {name}` is not in README.md"
        assert command.help, f"`wikihash {name}` has no help"


def test_every_setting_is_in_the_readme_with_its_default():
    for setting in config.SETTINGS:
        row = re.search(rf"^\| `{setting.env}`[^|]*\| ([^|]*) \|", README, re.MULTILINE)
        assert row, f"{setting.env} is not in README.md's configuration table"
        if not setting.env.startswith("WIKIHASH_USER_AGENT"):
            shown = row.group(1).strip().strip("`")
            assert shown == (setting.default or "empty"), (setting.env, shown)


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "ops/test" in ci and "ops/test" in README


def test_nothing_tracked_depends_on_a_directory_beside_the_clone():
    """Tests, docs and tools use what the repository holds (tests/data, docs/design.md)."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    shared = "sha" + "red"  # spelt in two so that this file does not match itself
    outside = (f"../{shared}", f'"{shared}" / "corpus"', f"{shared}/corpus", f"{shared}/design")
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".png", ".jpg", ".gif", ".webp", ".data") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for needle in outside:
            assert needle not in text, f"{name} refers to {needle}"


def test_docs_point_at_the_design_note_in_the_repository():
    assert "docs/design.md" in README
    design = (ROOT / "docs" / "design.md").read_text()
    for heading in ("## What is stored", "## What always holds", "## The hash"):
        assert heading in design
