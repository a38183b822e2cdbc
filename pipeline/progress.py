"""The crawl's progress as a user sees it: `wikihash status --watch`, ops/up, and the wait at
the end of `wikihash crawl` / `recrawl`.

Pure core: `Tracker` turns successive readings of `ledger.counts` into a `Snapshot` with the rate
and ETA of *this* crawl (files settled per second over what this display has seen, the last
`window` seconds of it), and `line()` writes one that fits a given width. Two thin edges:
`Terminal` redraws one line in place (carriage return and erase-line, cut to the terminal's
width, so it never wraps or stacks), `LogLines` prints a line only when something meaningful
changed (for logs and cron).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

SETTLED = ("hashed", "failed", "missing", "unsupported")


@dataclass(frozen=True)
class Snapshot:
    articles: int
    files: int
    settled: int  # files no longer pending
    pending: int
    failed: int
    missing: int
    unsupported: int
    walk_done: bool
    rate: float | None  # files settled per second, over this crawl's recent progress
    eta: float | None  # seconds until nothing is pending at that rate

    @property
    def complete(self) -> bool:
        return self.walk_done and self.pending == 0

    @property
    def fraction(self) -> float:
        return self.settled / self.files if self.files else (1.0 if self.walk_done else 0.0)


class Tracker:
    """Readings in, snapshots out; the rate comes from readings `window` seconds apart at most."""

    def __init__(self, *, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._seen: deque[tuple[float, int]] = deque()

    def update(self, counts: dict, walk_done: bool) -> Snapshot:
        now = self._clock()
        settled = sum(int(counts.get(s, 0)) for s in SETTLED)
        self._seen.append((now, settled))
        while len(self._seen) > 2 and now - self._seen[1][0] >= self.window:
            self._seen.popleft()
        first_t, first_settled = self._seen[0]
        rate = eta = None
        if now - first_t >= 2.0:  # a rate from less than two seconds says nothing yet
            rate = max(0, settled - first_settled) / (now - first_t)
            if rate > 0:
                eta = counts.get("pending", 0) / rate
        return Snapshot(
            articles=int(counts.get("articles", 0)), files=int(counts.get("files", 0)),
            settled=settled, pending=int(counts.get("pending", 0)),
            failed=int(counts.get("failed", 0)), missing=int(counts.get("missing", 0)),
            unsupported=int(counts.get("unsupported", 0)), walk_done=walk_done,
            rate=rate, eta=eta)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def line(snap: Snapshot, width: int = 80) -> str:
    """One line of at most `width` characters; the less important parts go first."""
    if snap.complete:
        head = f"complete: {plural(snap.settled, 'file')} settled"
    else:
        head = f"{100 * snap.fraction:3.0f}% {snap.settled:,}/{plural(snap.files, 'file')}"
    parts = [head]
    if not snap.complete:
        if snap.rate is None:
            parts.append("measuring the rate")
        else:
            parts.append(f"{snap.rate:.1f} files/s")
            if snap.eta is not None and snap.walk_done:
                parts.append(f"ETA {duration(snap.eta)}")
    parts.append(plural(snap.articles, "article") + ("" if snap.walk_done else " (walking)"))
    problems = [f"{n:,} {label}" for n, label in ((snap.failed, "failed"),
                (snap.missing, "missing"), (snap.unsupported, "unsupported")) if n]
    if problems:
        parts.append(", ".join(problems))
    text = parts[0]
    for part in parts[1:]:
        if len(text) + 3 + len(part) > width:
            break
        text += " · " + part
    room = width - len(text) - 3
    if not snap.complete and room >= 12:
        bar_width = min(30, room)
        filled = int(bar_width * snap.fraction)
        text = "[" + "#" * filled + "-" * (bar_width - filled) + "] " + text
    return text[:width]


class Terminal:
    """Redraws one line in place on a terminal; `finish()` leaves the last one standing."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self._last = ""

    def show(self, snap: Snapshot) -> None:
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        text = line(snap, width)
        if text != self._last:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self._last = text

    def finish(self) -> None:
        if self._last:
            self.stream.write("\n")
            self.stream.flush()
            self._last = ""


class LogLines:
    """For logs and cron: a line when the walk ends, a problem count changes, another 10 % of
    the files is settled, the crawl is complete, and otherwise at most one a `quiet` seconds."""

    def __init__(self, stream: TextIO = sys.stderr, *, quiet: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.quiet = quiet
        self._clock = clock
        self._last: Snapshot | None = None
        self._at = 0.0

    def _meaningful(self, snap: Snapshot) -> bool:
        last = self._last
        if last is None:
            return True
        if (snap.walk_done, snap.complete, snap.failed, snap.missing, snap.unsupported) != \
                (last.walk_done, last.complete, last.failed, last.missing, last.unsupported):
            return True
        if int(10 * snap.fraction) != int(10 * last.fraction):
            return True
        return snap.settled != last.settled and self._clock() - self._at >= self.quiet

    def show(self, snap: Snapshot) -> None:
        if self._meaningful(snap):
            self.stream.write(line(snap, 160) + "\n")
            self.stream.flush()
            self._last, self._at = snap, self._clock()

    def finish(self) -> None:
        pass


def display(stream: TextIO = sys.stderr) -> Terminal | LogLines:
    """A redrawn line on a terminal, meaningful changes only elsewhere."""
    return Terminal(stream) if stream.isatty() else LogLines(stream)
