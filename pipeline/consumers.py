"""Is anybody consuming the queues? Asked of the workers themselves (Celery's inspect).

`wikihash crawl` and `wikihash recrawl` wait until nothing is pending; with no worker running
that wait never ended (`pending 1 (0.0 files/s)` forever). `Watch` is called with every
progress reading and stops the wait, naming the command to run, once no worker has answered
for `grace` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from pipeline.errors import WikihashError

STAGES = ("fetch", "hash", "write")


class NoWorkers(WikihashError):
    """Files are pending and no worker consumes a queue they must pass through."""


def consumed_queues(app, timeout: float = 1.0) -> set[str]:
    """The queues some live worker consumes (empty when none answers within `timeout`)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return {queue["name"] for queues in replies.values() for queue in queues or ()}


def missing(consumed: Iterable[str], needed: Iterable[str] = STAGES) -> list[str]:
    consumed = set(consumed)
    return [q for q in needed if q not in consumed]


class Watch:
    """Raises NoWorkers when pending work has had no consumer for `grace` seconds."""

    def __init__(self, ask: Callable[[], set[str]], broker: str, *, grace: float = 20.0,
                 every: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self._ask = ask
        self.broker = broker  # shown in the message, password masked
        self.grace = grace
        self.every = every  # seconds between two questions while workers answer
        self._clock = clock
        self._say = say
        self._asked_at: float | None = None
        self._absent_since: float | None = None
        self._said = False

    def __call__(self, counts: dict) -> None:
        if not counts.get("pending"):
            return
        now = self._clock()
        if self._absent_since is None and self._asked_at is not None \
                and now - self._asked_at < self.every:
            return
        self._asked_at = now
        absent = missing(self._ask())
        if not absent:
            self._absent_since, self._said = None, False
            return
        if self._absent_since is None:
            self._absent_since = now
        queues = ", ".join(absent)
        if now - self._absent_since >= self.grace:
            raise NoWorkers(
                f"{counts['pending']} files pending and no worker consumes the {queues} "
                f"queue{'s' if len(absent) > 1 else ''} at {self.broker}: start one with "
                "`wikihash worker` (or run ops/up); the files stay pending in the ledger")
        if not self._said:
            self._say(f"no worker consumes the {queues} queue at {self.broker} yet; "
                      f"waiting {self.grace:.0f} s for one (`wikihash worker` starts one)")
            self._said = True
