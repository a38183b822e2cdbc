"""The Celery application: the only place Celery is configured, built from `Settings`.

The pipeline never imports the task code (`workers/`): it builds the app at start-up from the
settings it was given and sends tasks *by name* (`send_fetch`). Only the worker's app is told
to import the task modules (`create_app(settings, worker=True)`), by module name, when it
starts. The dependency runs one way: `workers` uses `pipeline`, never the reverse
(docs/architecture.md, "The seam").

Queues, one per stage so that each can be scaled on its own:
  fetch  download files (I/O bound, globally limited by pipeline.politeness)
  hash   decode, flatten, dhash (CPU bound)
  write  COPY results into PostgreSQL (one connection per worker process)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery
from celery.worker.consumer import Consumer
from kombu import Queue

from pipeline.config import Settings

QUEUES = ("fetch", "hash", "write")

# The tasks, by name; their code is in workers/tasks.py.
FETCH_BATCH = "wikihash.fetch_batch"
HASH_BATCH = "wikihash.hash_batch"
WRITE_BATCH = "wikihash.write_batch"
TASK_MODULES = ("workers.tasks",)  # imported by a worker's app only

# Seconds. The hard time limit (`Settings.time_limit`, WIKIHASH_TIME_LIMIT) kills the child (the
# task's `on_failure` then splits the batch or records the file: workers/base.py); the soft
# one, SOFT_LIMIT_MARGIN earlier, lets a task record what it could not finish. Celery's prefork
# pool arms the hard limit only once the soft one has fired, so a limit of SOFT_LIMIT_MARGIN or
# less has no soft limit, and a per-message `time_limit` shorter than the soft limit is not
# enforced before the soft limit.
SOFT_LIMIT_MARGIN = 30.0
# Redis redelivers a message not acknowledged within this many seconds (a worker killed with
# -9 never acknowledges); longer than any task may run, so nothing runs twice at once.
VISIBILITY_TIMEOUT = 1800
# A pool child whose resident memory passes this (KiB) is replaced after its current task, so
# one huge image cannot leave a bloated child behind (issue 18: 848 MB for one 381 KB PNG).
MAX_MEMORY_PER_CHILD_KIB = 1024 * 1024


log = logging.getLogger(__name__)


class BrokerLossConsumer(Consumer):
    """Celery's consumer, except that closing the connection lost with the broker cannot end
    the worker.

    Celery 5.7.0 closes the lost connection after `collect()` has detached it from its
    transport; with messages unacknowledged, kombu 5.7.0's Redis channel then rebuilds its pool
    to give them back and fails with `AttributeError: 'NoneType' object has no attribute
    'hostname'`, which Celery does not expect there: the worker logged "Unrecoverable error"
    and exited 0 when Redis restarted mid-crawl (tests/e2e/test_reliability.py). The messages
    are lost with Redis anyway, and the ledger has their files pending (the reconciler sends
    them again), so the close's failure is logged and the reconnect goes on as Celery's does.
    """

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        if connection is not None:
            close = connection.close

            def close_lost() -> None:
                try:
                    close()
                except AttributeError as error:
                    log.warning("broker connection lost; closing it failed in kombu (%r);"
                                " reconnecting", error)

            connection.close = close_lost
        super().on_connection_error_after_connected(exc)


class WikihashCelery(Celery):
    """A Celery app that carries the `Settings` it was built from (tasks read them there)."""

    settings: Settings


def create_app(settings: Settings, *, worker: bool = False) -> WikihashCelery:
    """The app for `settings`; with `worker`, one that imports the task modules when it starts."""
    app = WikihashCelery("wikihash", include=list(TASK_MODULES) if worker else [],
                         set_as_current=worker)
    app.settings = settings
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # Acknowledge after the task ran, and give a task back when its worker died: PostgreSQL
        # only marks a file done once its hash is committed, so a task may run twice, never zero
        # times; every write is idempotent.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_create_missing_queues=False,
        task_default_queue="fetch",
        task_routes={FETCH_BATCH: {"queue": "fetch"}, HASH_BATCH: {"queue": "hash"},
                     WRITE_BATCH: {"queue": "write"}},
        task_soft_time_limit=soft_time_limit(settings.time_limit),
        task_time_limit=settings.time_limit,
        worker_max_memory_per_child=MAX_MEMORY_PER_CHILD_KIB,
        # Events for Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_consumer=f"{__name__}:BrokerLossConsumer",
    )
    return app


def soft_time_limit(hard: float) -> float | None:
    """The soft time limit for a hard one: SOFT_LIMIT_MARGIN before it, or none."""
    return hard - SOFT_LIMIT_MARGIN if hard > SOFT_LIMIT_MARGIN else None


def send_fetch(app: Celery, jobs: Sequence[dict]) -> None:
    """Queue one fetch task for these jobs (`Job.to_message()` dicts)."""
    app.send_task(FETCH_BATCH, args=[list(jobs)])
