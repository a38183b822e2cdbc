"""Processes seen through /proc, for the tests of the decoder processes."""

from __future__ import annotations

import time
from pathlib import Path


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process `pid` ends (or is a zombie: exited, its parent has not reaped it yet)
    within `within` seconds."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False
