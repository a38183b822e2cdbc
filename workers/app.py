"""The Celery application: the only place Celery is configured.

Queues, one per stage so that each can be scaled on its own:
  fetch  download files (I/O bound, globally limited by pipeline.politeness)
  hash   decode, flatten, dhash (CPU bound)
  write  COPY results into PostgreSQL (one connection per worker process)
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from pipeline import config

QUEUES = ("fetch", "hash", "write")

settings = config.load()

app = Celery("wikihash", include=["workers.tasks"])
app.conf.update(
    broker_url=settings.broker_url,
    broker_connection_retry_on_startup=True,
    # Redis redelivers a message not acknowledged within this many seconds (a worker killed
    # with -9 never acknowledges); longer than any task may run, so nothing runs twice at once.
    broker_transport_options={"visibility_timeout": 1800},
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
    task_routes={
        "wikihash.fetch_batch": {"queue": "fetch"},
        "wikihash.hash_batch": {"queue": "hash"},
        "wikihash.write_batch": {"queue": "write"},
    },
    # A batch of downloads waits on the global limiter; decoding is capped per file. The soft
    # limit lets a task record what it could not finish; the hard one, 30 s later, kills it.
    task_soft_time_limit=600,
    task_time_limit=630,
    # Events for Flower.
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
)
