"""The producer: walks the wiki's articles, writes the ledger, then sends work to the queue.

For each generator batch of the walk (up to 500 articles):
  1. upsert the pages, resolve the file titles not seen before (imageinfo, 50 a request),
     insert those files (pending, missing or unsupported), make the usages exactly the
     article's images, and checkpoint the walk's continuation, all in one transaction;
  2. after that commits, claim pending contents (one per SHA-1) and send them to the `fetch`
     queue in jobs of `job_size` files, no more than the queue has room for.
Once the walk is done it keeps reconciling: contents still pending `stale_after` seconds after
they were sent (their message was lost with Redis, or a worker died) are sent again, until
nothing is pending. PostgreSQL is the ledger; the queue can always be rebuilt from it.

PostgreSQL or the broker going away mid-crawl does not end the crawl: each step (one batch's
transaction, one dispatch, one reconciling pass) is retried with backoff on a new connection
for up to `outage_limit` seconds (docs/reliability.md). A step is one transaction, so a retry
repeats it whole, and every write in it is idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pipeline import ledger, timestamps, wikiowner
from pipeline.errors import StorageError
from pipeline.ledger import LAST_CRAWL, WALK, Job
from pipeline.storage import Connection, transaction
from pipeline.wiki import Article, Wiki

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class ProducerStats:
    articles: int = 0
    new_files: int = 0


class Producer:
    """Walks `wiki` into the ledger at `connect()` and hands jobs to `send`."""

    def __init__(
        self,
        wiki: Wiki,
        connect: Callable[[], Connection],
        send: Callable[[Sequence[Job]], None],
        *,
        thumb_width: int,
        job_size: int = 100,
        queue_room: Callable[[], int] = lambda: 10_000,
        stale_after: float = 900.0,
        transient: tuple[type[BaseException], ...] = (),
        outage_limit: float = 900.0,
    ) -> None:
        self.wiki = wiki
        self._connect = connect
        self._send = send
        self.thumb_width = thumb_width
        self.job_size = job_size  # files per fetch task
        self._queue_room = queue_room  # how many more jobs the queue should take now
        self.stale_after = stale_after  # seconds before a sent job is sent again
        # PostgreSQL away (the ledger's StorageError), or the queue's client (e.g. Redis
        # restarting): waiting may cure them.
        self._transient = (StorageError, *transient)
        self.outage_limit = outage_limit  # seconds one step may keep failing before we give up
        self.stats = ProducerStats()
        self.stopping = False  # set by request_stop(): end at the next batch boundary
        self.conn = self._retry("connect to PostgreSQL", connect)

    def request_stop(self) -> None:
        """End the walk or the reconciling at the next batch boundary (e.g. on SIGTERM).

        Safe from a signal handler: it only sets a flag. Every batch commits its checkpoint
        with its rows, so the next `walk()` resumes after the last batch recorded.
        """
        self.stopping = True

    def close(self) -> None:
        self.conn.close()

    def _retry(self, what: str, step: Callable[[], T]) -> T:
        """`step()`, again with backoff while PostgreSQL or the queue is away."""
        deadline = time.monotonic() + self.outage_limit
        delay = 0.5  # seconds, doubling up to 15
        while True:
            try:
                return step()
            except self._transient as exc:
                refused = isinstance(exc, StorageError) and not exc.retryable
                if refused or time.monotonic() + delay > deadline:
                    raise
                log.warning("%s failed (%s: %s); trying again in %.1f s", what,
                            type(exc).__name__, str(exc).strip()[:120], delay)
                time.sleep(delay)
                delay = min(15.0, delay * 2)
                if isinstance(exc, StorageError) or self.conn.closed:
                    self._reconnect()

    def _reconnect(self) -> None:
        """A new connection if PostgreSQL answers; else keep the dead one for the next try."""
        try:
            conn = self._connect()
        except StorageError as exc:
            log.warning("PostgreSQL still unreachable: %s", str(exc).strip()[:120])
            return
        with contextlib.suppress(Exception):
            self.conn.close()
        self.conn = conn

    # -- the walk ----------------------------------------------------------------------------

    def walk(self, *, limit: int | None = None, restart: bool = False) -> bool:
        """Walk the articles from the checkpoint; True when the whole wiki has been walked."""
        def start() -> tuple[object, str | None]:
            with transaction(self.conn):
                return ledger.get_state(self.conn, WALK), self._record_site()

        state, wiki_time = self._retry("read the walk's checkpoint", start)
        if not restart and isinstance(state, dict) and state.get("done"):
            log.info("the walk started %s is complete", state["started"])
            return True
        if restart or not isinstance(state, dict):
            # The wiki's own clock: the re-crawl reads its change feed from this time on.
            state = {"continue": None, "started": wiki_time or timestamps.now(), "done": False}
        for articles, cont in self.wiki.walk_articles(state["continue"]):
            if limit is not None:
                room = limit - self.stats.articles
                if len(articles) > room:
                    # A trial: take part of the batch, and do not checkpoint past it.
                    self._record(articles[:room], state)
                    return False
            state = {**state, "continue": cont, "done": cont is None}
            self._record(articles, state)
            if limit is not None and self.stats.articles >= limit:
                return state["done"]
            if self.stopping and not state["done"]:
                log.info("stopping at the checkpoint after %d articles", self.stats.articles)
                return False
        def finish() -> None:
            with transaction(self.conn):
                ledger.set_state(self.conn, LAST_CRAWL, state["started"])

        self._retry("record the finished walk", finish)
        return True

    def _record_site(self) -> str | None:
        """Store the wiki's facts; returns the wiki's current time."""
        info = self.wiki.siteinfo()
        wikiowner.check(self.conn, info, self.wiki.api_url)
        ledger.set_wiki_info(self.conn, site_facts(info, self.wiki.api_url))
        return info.get("time")

    def _record(self, articles: list[Article], state: dict) -> None:
        """One batch into the ledger in one transaction, then jobs to the queue."""
        def write() -> list:
            with transaction(self.conn):
                titles = [t for a in articles for t in a.images]
                new = ledger.unknown_files(self.conn, titles)
                infos = self.wiki.file_info(new, self.thumb_width) if new else []
                ledger.upsert_pages(self.conn, articles)
                ledger.insert_files(self.conn, infos)
                ledger.set_usages(self.conn, articles)
                ledger.set_state(self.conn, WALK, state)
            return infos

        infos = self._retry("write a batch to the ledger", write)
        self.stats.articles += len(articles)
        self.stats.new_files += len(infos)
        self.dispatch()

    # -- the queue ---------------------------------------------------------------------------

    def dispatch(self) -> int:
        """Send pending contents not yet sent (or sent too long ago); returns jobs sent."""
        return self._retry("send jobs to the queue", self._dispatch)

    def _dispatch(self) -> int:
        room = self._queue_room()
        if room <= 0:
            return 0
        # Claimed and sent in one transaction: if the broker refuses a send, the claims roll
        # back and the jobs go again (some twice: harmless, every write is idempotent).
        with transaction(self.conn):
            jobs = ledger.claim_jobs(self.conn, limit=room * self.job_size,
                                     stale_after=self.stale_after)
            for i in range(0, len(jobs), self.job_size):
                self._send(jobs[i:i + self.job_size])
        return -(-len(jobs) // self.job_size)

    def _counts(self) -> dict[str, int]:
        def read() -> dict[str, int]:
            with transaction(self.conn):
                return ledger.counts(self.conn)

        return self._retry("count pending files", read)

    def drain(self, *, poll: float = 2.0, timeout: float | None = None,
              progress: Callable[[dict], None] | None = None) -> bool:
        """Reconcile until nothing is pending; False if `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            counts = self._counts()
            if progress:
                progress(counts)
            if counts["pending"] == 0:
                return True
            if self.stopping or (deadline is not None and time.monotonic() > deadline):
                return False
            self.dispatch()
            time.sleep(poll)


def site_facts(info: dict, api_url: str) -> dict[str, str]:
    """The wiki facts the ledger keeps, from siteinfo's general part."""
    facts = {k: str(info[k]) for k in ("sitename", "server", "articlepath", "generator",
                                       "wikiid") if k in info}
    facts["api_url"] = api_url
    return facts
