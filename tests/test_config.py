"""Settings come from WIKIHASH_* variables; bad values name the variable."""

import pytest
from click.testing import CliRunner

from pipeline import config
from pipeline.cli import cli
from pipeline.errors import ConfigError


def test_defaults_run_on_one_machine():
    settings = config.load({})
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/wikihash"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.api_url == "https://en.wikipedia.org/w/api.php"
    assert settings.thumb_width in config.STANDARD_WIDTHS
    assert settings.max_downloads == 2 and settings.max_mbits == 25


def test_values_are_typed():
    settings = config.load({"WIKIHASH_THUMB_WIDTH": "330", "WIKIHASH_MAX_MBITS": "2.5"})
    assert settings.thumb_width == 330
    assert settings.max_mbits == 2.5


@pytest.mark.parametrize(
    "env, value",
    [
        ("WIKIHASH_THUMB_WIDTH", "300"),
        ("WIKIHASH_THUMB_WIDTH", "wide"),
        ("WIKIHASH_DATABASE_URL", "mysql://x/y"),
        ("WIKIHASH_API_URL", "ftp://example.org/api.php"),
        ("WIKIHASH_MAX_DOWNLOADS", "0"),
    ],
)
def test_bad_value_names_the_variable(env, value):
    with pytest.raises(ConfigError, match=env):
        config.load({env: value})


def test_config_command_masks_secrets(monkeypatch):
    monkeypatch.setenv("WIKIHASH_DATABASE_URL", "postgresql://me:hunter2@db.example/wikihash")
    monkeypatch.setenv("WIKIHASH_BOT_PASSWORD", "s3cret")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "s3cret" not in result.output
    assert "postgresql://me:***@db.example/wikihash" in result.output
    assert "WIKIHASH_BOT_PASSWORD" in result.output


def test_config_command_bad_value_is_one_line(monkeypatch):
    monkeypatch.setenv("WIKIHASH_THUMB_WIDTH", "301")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "Error: WIKIHASH_THUMB_WIDTH='301': must be one of the standard widths "
        "20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840"
    ]
