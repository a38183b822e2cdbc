"""Reading a local file a user named (`wikihash hash`, `wikihash search`), bounded.

Only regular files are read (a FIFO would block, `/dev/zero` never ends), and one over the cap
is refused from its size before a byte is read; a file that grows while it is read is cut at
the cap and refused too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.errors import TooLarge, WikihashError

__all__ = ["NotAFile", "read_bounded"]


class NotAFile(WikihashError):
    """The path is not a regular file (a FIFO, a device, a directory) or cannot be read."""


def read_bounded(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes` of them."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise NotAFile("cannot read: not a regular file")
        if info.st_size > max_bytes:
            raise TooLarge(f"{info.st_size} bytes, over the cap of {max_bytes}")
        # O_NONBLOCK: should the path be swapped for a FIFO after the check, open does not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise NotAFile("cannot read: not a regular file")
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise NotAFile(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise TooLarge(f"over the cap of {max_bytes} bytes")
    return data
