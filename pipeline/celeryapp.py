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

from collections.abc import Sequence

from celery import Celery
from kombu import Queue

from pipeline.config import Settings

QUEUES = ("fetch", "hash", "write")

# The tasks, by name; their code is in workers/tasks.py.
FETCH_BATCH = "wikihash.fetch_batch"
HASH_BATCH = "wikihash.hash_batch"
WRITE_BATCH = "wikihash.write_batch"
TASK_MODULES = ("workers.tasks",)  # imported by a worker's app only

# Seconds. The soft limit lets a task record what it could not finish; the hard one, 30 s
# later, kills the child (the task's `on_failure` then records the file: workers/base.py).
SOFT_TIME_LIMIT = 600
HARD_TIME_LIMIT = 630
# Redis redelivers a message not acknowledged within this many seconds (a worker killed with
# -9 never acknowledges); longer than any task may run, so nothing runs twice at once.
VISIBILITY_TIMEOUT = 1800
# A pool child whose resident memory passes this (KiB) is replaced after its current task, so
# one huge image cannot leave a bloated child behind (issue 18: 848 MB for one 381 KB PNG).
MAX_MEMORY_PER_CHILD_KIB = 1024 * 1024


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
        task_soft_time_limit=SOFT_TIME_LIMIT,
        task_time_limit=HARD_TIME_LIMIT,
        worker_max_memory_per_child=MAX_MEMORY_PER_CHILD_KIB,
        # Events for Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
    )
    return app


def send_fetch(app: Celery, jobs: Sequence[dict]) -> None:
    """Queue one fetch task for these jobs (`Job.to_message()` dicts)."""
    app.send_task(FETCH_BATCH, args=[list(jobs)])
