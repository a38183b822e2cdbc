"""The tasks: fetch a batch of files, hash it, write the results.

fetch_batch --(bytes, base64)--> hash_batch --(results)--> write_batch --COPY--> files

Registered with the app that imports this module (`shared_task`): the worker's, built by
`pipeline.celeryapp.create_app(settings, worker=True)`; the producer sends them by name. What
happens on each error is the policy's (workers/policy.py); the resources are the base class's
(workers/base.py).
"""

from __future__ import annotations

import base64
import functools
import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from pipeline import celeryapp, fetch, ledger, sandbox
from pipeline.errors import FetchError, HTTPStatusError, ImageRejected, StorageError
from pipeline.ledger import Result
from workers.base import WikihashTask
from workers.policy import (
    HASH_TOO_LONG,
    Action,
    decide_fetch,
    decide_hash,
    decide_lost,
    decide_write,
)

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # file bytes carried by one hash_batch message


def download(task: WikihashTask, job: dict) -> tuple[bytes, str]:
    """The thumbnail where the wiki offers one; else, or if the thumbnailer fails, the original."""
    hosts = {fetch.host_of(u) for u in (job["url"], job.get("thumb_url")) if u}
    slots, bandwidth = task.limiters()
    settings = task.settings
    get = functools.partial(fetch.download, task.session(), allowed_hosts=hosts,
                            max_bytes=settings.max_bytes, timeout=settings.fetch_timeout,
                            slots=slots, bandwidth=bandwidth)
    if job.get("thumb_url"):
        try:
            return get(job["thumb_url"]).data, "thumb"
        except HTTPStatusError as exc:
            if exc.slow_down:
                raise  # the server asked us to slow down: not a reason to ask it for more
            log.info("thumbnail of %s failed (%s); fetching the original", job["title"], exc)
    return get(job["url"]).data, "original"


@shared_task(name=celeryapp.FETCH_BATCH, bind=True, base=WikihashTask)
def fetch_batch(self: WikihashTask, jobs: list[dict]) -> None:
    """Download each job's file and pass the bytes on to the hash queue."""
    downloaded: list[dict] = []
    results: list[Result] = []
    again: list[dict] = []
    countdown = 0.0  # seconds before `again` is tried
    held = False  # a server asked us to stay away: the rest of the batch waits too, untried
    size = 0  # bytes in `downloaded`
    for job in jobs:
        if held:
            again.append(job)
            continue
        try:
            data, source = download(self, job)
        except (FetchError, ImageRejected) as exc:
            decision = decide_fetch(exc, self.attempt)
            if decision.action is Action.RETRY:
                again.append(job)
                countdown = max(countdown, decision.countdown)
                held = exc.retry_after is not None
            else:
                results.append(Result(job["sha1"], decision.state, reason=decision.reason))
        else:
            downloaded.append({"sha1": job["sha1"], "title": job["title"], "source": source,
                               "data": base64.b64encode(data).decode("ascii")})
            size += len(data)
            if size > MAX_MESSAGE_BYTES:
                # Originals can be large: keep each message to the hash queue bounded.
                self.app.send_task(celeryapp.HASH_BATCH, args=[downloaded])
                downloaded, size = [], 0
    if downloaded:
        self.app.send_task(celeryapp.HASH_BATCH, args=[downloaded])
    self.record(results)
    if again:
        self.keep_alive([job["sha1"] for job in again])
        raise self.retry(args=[again], countdown=countdown)


@shared_task(name=celeryapp.HASH_BATCH, bind=True, base=WikihashTask)
def hash_batch(self: WikihashTask, items: list[dict]) -> None:
    """Hash each downloaded file with the canonical hash and pass the results to the writer."""
    if self.request.delivery_info.get("redelivered"):
        # This batch was running when its worker died.
        self.carry_out(decide_lost(len(items), "the worker died hashing it"), items)
        return
    results = []
    for index, item in enumerate(items):
        try:
            result = sandbox.hash_bytes(base64.b64decode(item["data"]))
        except ImageRejected as exc:
            decision = decide_hash(exc)
            results.append(Result(item["sha1"], decision.state, reason=decision.reason))
        except SoftTimeLimitExceeded:
            results.append(Result(item["sha1"], HASH_TOO_LONG.state,
                                  reason=HASH_TOO_LONG.reason))
            rest = items[index + 1:]
            if rest:
                self.apply_async(args=[rest])  # a new task, with a new time limit
            break
        else:
            results.append(Result(item["sha1"], "hashed", dhash=result.int64,
                                  low_information=result.low_information,
                                  hashed_from=item["source"], hashed_width=result.width))
    self.record(results)


@shared_task(name=celeryapp.WRITE_BATCH, bind=True, base=WikihashTask)
def write_batch(self: WikihashTask, results: list[dict]) -> int:
    """Write results with one COPY; waits and retries while PostgreSQL is away."""
    try:
        return _write(self, [Result(**r) for r in results])
    except StorageError as exc:
        decision = decide_write(exc, self.attempt, len(results))
    if decision.action is Action.RECORD:
        # A lone result PostgreSQL refuses: store that it was refused, without its data.
        log.error("the result for %s was refused: %s", results[0]["sha1"], decision.reason)
        try:
            return _write(self, [Result(results[0]["sha1"], "failed", reason=decision.reason)])
        except StorageError as exc:
            log.error("and so was its failure (%s); the producer's bound will end it", exc)
            return 0
    self.carry_out(decision, results)  # RETRY ends the task here; ISOLATE splits the batch
    return 0


def _write(task: WikihashTask, results: list[Result]) -> int:
    with task.database() as conn:
        return ledger.write_results(conn, results)
