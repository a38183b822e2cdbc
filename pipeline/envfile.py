"""Settings files: `KEY=value` lines, as in Compose's `.env` and systemd's EnvironmentFile.

`wikihash --env-file FILE` or `WIKIHASH_ENV_FILE=FILE` names one; its values fill in what the
environment does not set (a variable set in the environment wins), so a cron line needs only
the file. Pure parsing here; `pipeline.config` decides how the values are used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import ConfigError

ENV_FILE = "WIKIHASH_ENV_FILE"
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def parse(text: str, source: str = "env file") -> dict[str, str]:
    """The variables of an env file: blank lines and `#` comments skipped, quotes removed."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"{source}:{number}: not a KEY=value line: {line[:60]!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)  # a comment after an unquoted value
        found[key] = value
    return found


def read(path: str | Path) -> dict[str, str]:
    """The variables of the env file at `path`; a missing or unreadable file is a ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{ENV_FILE}={str(path)!r}: cannot read it: "
                          f"{exc.strerror or exc}") from None
    return parse(text, str(path))


def merged(environ: Mapping[str, str]) -> Mapping[str, str]:
    """`environ` with the env file it names (WIKIHASH_ENV_FILE) filled in under it."""
    path = environ.get(ENV_FILE)
    if not path:
        return environ
    values = read(path)
    values.update({k: v for k, v in environ.items() if v != "" or k not in values})
    return values
