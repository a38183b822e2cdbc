"""Settings come from WIKIHASH_* variables; bad values name the variable."""

import pytest
from click.testing import CliRunner

from pipeline import config
from pipeline.cli import cli
from pipeline.errors import ConfigError
from tests.conftest import ROOT


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


def test_an_empty_value_means_the_default():
    settings = config.load({"WIKIHASH_THUMB_WIDTH": "", "WIKIHASH_DATABASE_URL": ""})
    assert settings.thumb_width == config.load({}).thumb_width == 250
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/wikihash"


@pytest.mark.parametrize("url", ["http://wiki.test/w/nonexistent.php", "http://wiki.test/w/",
                                 "http://wiki.test/index.php"])
def test_api_url_must_be_an_api_php_url(url):
    with pytest.raises(ConfigError, match="WIKIHASH_API_URL=.*api.php URL"):
        config.load({"WIKIHASH_API_URL": url})


def test_env_file_fills_in_what_the_environment_does_not_set(tmp_path):
    env = tmp_path / "wikihash.env"
    env.write_text("# the nightly re-crawl\nWIKIHASH_THUMB_WIDTH=330\n"
                   "export WIKIHASH_MAX_MBITS='2.5'\nWIKIHASH_MAXLAG=7  # seconds\n"
                   "WIKIHASH_BOT_USER=\n")
    settings = config.load({"WIKIHASH_ENV_FILE": str(env), "WIKIHASH_MAXLAG": "3"})
    assert (settings.thumb_width, settings.max_mbits, settings.maxlag) == (330, 2.5, 3)
    with pytest.raises(ConfigError, match="cannot read it"):
        config.load({"WIKIHASH_ENV_FILE": str(tmp_path / "absent.env")})
    env.write_text("not a setting\n")
    with pytest.raises(ConfigError, match="wikihash.env:1: not a KEY=value line"):
        config.load({"WIKIHASH_ENV_FILE": str(env)})


def test_env_file_option_of_the_cli(tmp_path, monkeypatch):
    monkeypatch.delenv("WIKIHASH_THUMB_WIDTH", raising=False)
    monkeypatch.delenv("WIKIHASH_ENV_FILE", raising=False)
    env = tmp_path / "wikihash.env"
    env.write_text("WIKIHASH_THUMB_WIDTH=500\n")
    result = CliRunner().invoke(cli, ["--env-file", str(env), "config"])
    assert result.exit_code == 0, result.output
    assert "WIKIHASH_THUMB_WIDTH" in result.output and "  500" in result.output


@pytest.mark.parametrize("command", [["worker"], ["crawl"], ["status"], ["recrawl"],
                                     ["flower"], ["search", "x.png"]])
def test_a_bad_setting_is_one_line_from_every_command(command):
    """Real processes: `wikihash worker` used to print a 29-line traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WIKIHASH_THUMB_WIDTH": "abc"}
    result = subprocess.run([sys.executable, "-m", "pipeline", *command], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Error: WIKIHASH_THUMB_WIDTH='abc': invalid literal for int() with base 10: 'abc'"]


@pytest.mark.parametrize("command", [["crawl"], ["recrawl"], ["status"],
                                     ["search", "tests/data/images/skimage_text.png"]])
def test_an_unprepared_database_is_one_line_saying_what_to_run(command, make_database):
    """It was a psycopg2 traceback: relation "crawl_state" does not exist."""
    import os
    import subprocess
    import sys

    empty = make_database(extension=False)
    for url, expected in ((empty, "has not been prepared: run `wikihash db init`"),
                          (empty + "_absent", "does not exist: run `wikihash db init`")):
        env = {**os.environ, "WIKIHASH_DATABASE_URL": url,
               "WIKIHASH_API_URL": "http://127.0.0.1:9/w/api.php"}
        result = subprocess.run([sys.executable, "-m", "pipeline", *command], env=env,
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: the database postgresql://")
        assert lines[0].endswith(expected) or expected + " (" in lines[0], lines[0]
