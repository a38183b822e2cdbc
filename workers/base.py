"""`WikihashTask`: the base class of every task, and the owner of a worker process's resources.

Each pool child holds one PostgreSQL connection, one HTTP session and the Redis-backed
politeness limiters, opened on first use (never in the parent before the fork: a child that
finds resources opened by another process opens its own) and dropped in one place
(`database()`) when PostgreSQL fails under them. The task's settings are the ones the app was
built from (`pipeline.celeryapp.create_app`): nothing is read from the environment here.

The retry policy's decisions (workers/policy.py) are carried out by `carry_out`, one mechanism
for the three ways a file goes round again: RETRY re-sends the task with `Task.retry` (Celery
counts the attempts), ISOLATE sends one task per file, RECORD writes a result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Callable, Iterator, Sequence

import redis
import requests
from celery import Task, current_app
from celery.exceptions import TimeLimitExceeded
from celery.signals import worker_process_init

from pipeline import celeryapp, fetch, ledger, storage
from pipeline.config import Settings
from pipeline.errors import StorageError
from pipeline.ledger import Result
from pipeline.politeness import Bandwidth, DownloadSlots
from pipeline.storage import Connection
from workers.policy import Action, Decision, decide_lost

log = logging.getLogger(__name__)

@worker_process_init.connect
def _limit_child_memory(**_: object) -> None:
    """Cap a new pool child's address space (`worker_child_address_space`, bytes; set by
    `wikihash worker --max-memory`): past it an allocation fails with MemoryError, which the
    decoder records as `TooLarge`, instead of the kernel's OOM killer taking whatever process
    it picks. Celery's `worker_max_memory_per_child` also replaces a child grown large."""
    size = current_app.conf.get("worker_child_address_space")
    if size:
        resource.setrlimit(resource.RLIMIT_AS, (size, size))


class WikihashTask(Task):
    """A task with this process's resources, opened lazily, and the policy's one mechanism."""

    abstract = True
    max_retries = None  # the limits are the policy's (workers/policy.py), not Celery's

    _pid: int | None = None
    _conn: Connection | None = None
    _session: requests.Session | None = None
    _limiters: tuple[DownloadSlots, Bandwidth] | None = None

    # -- resources -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def _own(self) -> None:
        """Forget resources another process opened (inherited across a fork)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._conn = self._session = self._limiters = None

    @contextlib.contextmanager
    def database(self) -> Iterator[Connection]:
        """This process's connection, in a transaction; dropped when PostgreSQL fails under it.

        Raises `StorageError` (the ledger maps psycopg2's errors: pipeline/storage.py).
        """
        self._own()
        if self._conn is None or self._conn.closed:
            self._conn = storage.connect(self.settings.database_url)
        conn = self._conn
        try:
            with storage.transaction(conn):
                yield conn
        except StorageError as exc:
            if exc.retryable:
                self._conn = None
                with contextlib.suppress(Exception):
                    conn.close()
            raise

    def session(self) -> requests.Session:
        self._own()
        if self._session is None:
            self._session = fetch.new_session(self.settings.user_agent)
        return self._session

    def limiters(self) -> tuple[DownloadSlots, Bandwidth]:
        self._own()
        if self._limiters is None:
            client = redis.Redis.from_url(self.settings.broker_url)
            self._limiters = (DownloadSlots(client, self.settings.max_downloads),
                              Bandwidth(client, self.settings.max_mbits * 1_000_000 / 8))
        return self._limiters

    # -- the policy's one mechanism ----------------------------------------------------------

    @property
    def attempt(self) -> int:
        """This try of the task, from 1 (Celery's retry count plus one)."""
        return self.request.retries + 1

    def record(self, results: Sequence[Result]) -> None:
        """Send results to the writer."""
        if results:
            self.app.send_task(celeryapp.WRITE_BATCH,
                               args=[[r.to_message() for r in results]])

    def carry_out(self, decision: Decision, items: Sequence[dict],
                  resend: Callable[[], None] | None = None) -> None:
        """Do what the policy decided for `items` (jobs, downloads or results: dicts with a
        "sha1").

        RETRY raises Celery's `Retry` (the task ends there): call it last, or give `resend`
        to re-send `items` some other way (e.g. only part of a batch, without ending the task).
        """
        if not items:
            return
        if decision.action is Action.RECORD:
            self.record([Result(item["sha1"], decision.state, reason=decision.reason)
                         for item in items])
        elif decision.action is Action.ISOLATE:
            for item in items:
                self.apply_async(args=[[item]], retries=self.request.retries)
        elif resend is not None:
            resend()
        else:
            raise self.retry(args=[list(items)], countdown=decision.countdown)

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                   einfo: object) -> None:
        """The hard time limit killed the child under this task (runs in the worker's main
        process): the batch is isolated, a lone file recorded, so no file stays pending."""
        if isinstance(exc, TimeLimitExceeded) and args:
            items = list(args[0])
            limit = celeryapp.HARD_TIME_LIMIT
            log.warning("%s: hard time limit on a batch of %d", self.name, len(items))
            self.carry_out(decide_lost(len(items), f"killed at the hard time limit ({limit} s)"),
                           items)
            return
        log.error("%s failed: %r; its files go again when the producer re-sends them",
                  self.name, exc)

    def keep_alive(self, sha1s: Sequence[str]) -> None:
        """Tell the ledger these jobs wait on purpose; best effort (the reconciler's timeout is
        the fallback, and a job sent twice is harmless, only wasteful)."""
        try:
            with self.database() as conn:
                ledger.touch_jobs(conn, sha1s)
        except StorageError as exc:
            log.warning("could not mark %d delayed jobs as alive: %s", len(sha1s), exc)
