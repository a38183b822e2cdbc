"""Wiring: builds the producer from settings, with the Celery queue as its sink.

Kept apart from `pipeline.producer` so that the producer stays free of Celery and Redis. Tasks
are sent by name through an app built here from the settings (`pipeline.celeryapp`); the task
code in `workers/` is never imported by the pipeline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import kombu.exceptions
import redis

from pipeline import celeryapp, config, storage
from pipeline.ledger import Job
from pipeline.producer import Producer
from pipeline.recrawl import Recrawler
from pipeline.storage import Connection
from pipeline.wiki import Wiki

# Fetch tasks waiting in Redis before the producer holds back. Kept short on purpose: a job is
# sent again when it is still pending WIKIHASH_REQUEUE_AFTER (900 s) after it was sent, so the
# queue must drain well within that even at the default politeness limits (2 downloads at a
# time, ~20 files/s): 20 jobs of 100 files is ~100 s of work there, seconds without limits.
MAX_QUEUED_JOBS = 20
# The broker restarting or unreachable: the producer waits and tries again (docs/reliability.md).
QUEUE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                kombu.exceptions.OperationalError)


def build_wiki(settings: config.Settings) -> Wiki:
    wiki = Wiki(settings.api_url, settings.user_agent, maxlag=settings.maxlag)
    if settings.bot_user:
        wiki.login(settings.bot_user, settings.bot_password)
    return wiki


def build_producer(settings: config.Settings, database_url: str, *,
                   job_size: int = 100) -> Producer:
    app = celeryapp.create_app(settings)
    broker = redis.Redis.from_url(settings.broker_url)

    def send(jobs: Sequence[Job]) -> None:
        celeryapp.send_fetch(app, [job.to_message() for job in jobs])

    def queue_room() -> int:
        return MAX_QUEUED_JOBS - int(broker.llen("fetch"))

    return Producer(
        build_wiki(settings), lambda: storage.connect(database_url), send,
        thumb_width=settings.thumb_width, job_size=job_size, queue_room=queue_room,
        stale_after=settings.requeue_after, transient=QUEUE_ERRORS,
    )


def build_recrawler(settings: config.Settings, wiki: Wiki, conn: Connection) -> Recrawler:
    """A re-crawler of `wiki` into the ledger at `conn`."""
    return Recrawler(
        wiki, conn, thumb_width=settings.thumb_width,
        feed_max_age=dt.timedelta(days=settings.feed_max_age),
        shared_wiki=lambda api_url: Wiki(api_url, settings.user_agent, maxlag=settings.maxlag),
    )
