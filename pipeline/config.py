"""Settings: the only module that reads the environment.

Every setting is declared once in `SETTINGS` (name, variable, type, default, help); `load()` builds
one frozen `Settings` from `os.environ` (and the env file WIKIHASH_ENV_FILE names, under it),
`wikihash config` prints from the same table, and a bad value raises `ConfigError` naming the
variable. An empty value means the default, as Compose's `.env` files leave variables empty.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipeline import __version__, envfile
from pipeline.errors import ConfigError

# Wikimedia's thumbnail steps; the API scales to any width, but only these are pre-rendered and
# cached, and asking for others is discouraged by the robot policy.
STANDARD_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)

DEFAULT_USER_AGENT = f"wikihash/{__version__} (set WIKIHASH_USER_AGENT to add a contact)"


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str
    secret: bool = False


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _thumb_width(raw: str) -> int:
    value = int(raw)
    if value not in STANDARD_WIDTHS:
        widths = ", ".join(map(str, STANDARD_WIDTHS))
        raise ValueError(f"must be one of the standard widths {widths}")
    return value


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ValueError(f"must be a {' or '.join(schemes)} URL")
        return raw

    return parse


def _api_url(raw: str) -> str:
    raw = _url("http", "https")(raw)
    if not urlsplit(raw).path.endswith("/api.php"):
        raise ValueError("must be the wiki's api.php URL, e.g. https://wiki.example.org/w/api.php")
    return raw


def _text(raw: str) -> str:
    return raw


SETTINGS: tuple[Setting, ...] = (
    Setting("database_url", "WIKIHASH_DATABASE_URL", _url("postgresql", "postgres"),
            "postgresql://postgres@127.0.0.1:5432/wikihash", "PostgreSQL ledger", secret=True),
    Setting("broker_url", "WIKIHASH_BROKER_URL", _url("redis", "rediss"),
            "redis://127.0.0.1:6379/0", "Redis: Celery broker and the shared politeness limiter",
            secret=True),
    Setting("api_url", "WIKIHASH_API_URL", _api_url,
            "https://en.wikipedia.org/w/api.php", "the wiki's api.php"),
    Setting("user_agent", "WIKIHASH_USER_AGENT", _text, DEFAULT_USER_AGENT,
            "User-Agent: name/version (contact); a contact is required for Wikimedia wikis"),
    Setting("thumb_width", "WIKIHASH_THUMB_WIDTH", _thumb_width, "250",
            "thumbnail width in px to hash (a standard width; see docs/benchmarks.md)"),
    Setting("max_downloads", "WIKIHASH_MAX_DOWNLOADS", _positive_int, "2",
            "image downloads in flight at once, across all workers"),
    Setting("max_mbits", "WIKIHASH_MAX_MBITS", _positive_float, "25",
            "image download bandwidth in Mbit/s, across all workers"),
    Setting("max_bytes", "WIKIHASH_MAX_BYTES", _positive_int, str(64 * 1024 * 1024),
            "largest file downloaded, in bytes"),
    Setting("fetch_timeout", "WIKIHASH_FETCH_TIMEOUT", _positive_float, "60",
            "seconds for one download, connection and body"),
    Setting("time_limit", "WIKIHASH_TIME_LIMIT", _positive_float, "630",
            "seconds a worker task may run before its process is killed and its files are"
            " split or recorded failed; the soft limit is 30 s earlier (none at 30 s or less)"),
    Setting("requeue_after", "WIKIHASH_REQUEUE_AFTER", _positive_float, "900",
            "seconds after which a file still pending is sent to the queue again"),
    Setting("feed_max_age", "WIKIHASH_FEED_MAX_AGE", _positive_float, "30",
            "days of changes the wiki's change feed keeps ($wgRCMaxAge; 30 on Wikipedia);"
            " an older crawl is brought up to date by a walk instead"),
    Setting("dumps_url", "WIKIHASH_DUMPS_URL", _url("http", "https"),
            "https://dumps.wikimedia.org/", "dump server whose newest complete run"
            " `crawl --from-dumps latest` takes (docs/dumps.md)"),
    Setting("dumps_dir", "WIKIHASH_DUMPS_DIR", _text, "dumps",
            "directory that downloaded dump runs are kept in"),
    Setting("maxlag", "WIKIHASH_MAXLAG", _positive_int, "5", "maxlag sent with every API call"),
    Setting("bot_user", "WIKIHASH_BOT_USER", _text, "", "bot-password user name (optional)"),
    Setting("bot_password", "WIKIHASH_BOT_PASSWORD", _text, "", "bot password (optional)",
            secret=True),
    Setting("flower_auth", "WIKIHASH_FLOWER_AUTH", _text, "",
            "Flower basic auth as user:password; Flower refuses to start without it", secret=True),
    Setting("serve_auth", "WIKIHASH_SERVE_AUTH", _text, "",
            "search page basic auth as user:password; required to serve beyond loopback",
            secret=True),
)


Settings = dataclasses.make_dataclass(
    "Settings",
    [(s.name, Any) for s in SETTINGS],
    frozen=True,
    namespace={"__doc__": "The effective configuration, typed and frozen."},
)
Settings.__module__ = __name__


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `environ` (default `os.environ`); a bad value raises `ConfigError`."""
    environ = envfile.merged(os.environ if environ is None else environ)
    values = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env) or setting.default
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{setting.env}={raw!r}: {exc}") from None
    return Settings(**values)


def credentials_ok(value: str) -> bool:
    """True for "user:password" with both parts non-empty (WIKIHASH_SERVE_AUTH, _FLOWER_AUTH)."""
    user, colon, password = value.partition(":")
    return bool(colon and user.strip() and password.strip())


_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)


def mask(setting: Setting, value: Any) -> str:
    """`value` as `wikihash config` shows it: secrets replaced by ***.

    In any URL-valued setting, secret or not, a password in the authority and the values of
    query parameters that name a secret (`?password=`, `sslpassword`, `token`, ...) are masked;
    a secret that is not a URL is masked whole.
    """
    text = str(value)
    if not text:
        return text
    parts = urlsplit(text)
    if parts.scheme and parts.netloc:
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
        query = urlencode([(key, "***" if _SECRET_PARAMETER.search(key) else val)
                           for key, val in parse_qsl(parts.query, keep_blank_values=True)],
                          safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    return "***" if setting.secret else text


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, shown value, help) for every setting, secrets masked."""
    return [(s.env, mask(s, getattr(settings, s.name)), s.help) for s in SETTINGS]
