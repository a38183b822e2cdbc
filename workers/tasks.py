"""The tasks: fetch a batch of files, hash it, write the results.

fetch_batch --(bytes, base64)--> hash_batch --(results)--> write_batch --COPY--> files

Permanent failures (a rejected image, a 404, a forbidden host) become results at once; transient
ones (timeouts, 5xx, 429) are retried with jittered backoff up to MAX_ATTEMPTS, then recorded.
"""

from __future__ import annotations

import base64
import functools
import logging
import random

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from pipeline import fetch, imaging, ledger, storage
from pipeline.errors import FetchError, HTTPStatusError, ImageRejected, StorageError
from pipeline.ledger import Result
from pipeline.politeness import Bandwidth, DownloadSlots
from workers.app import app, settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # file bytes carried by one hash_batch message


@functools.cache
def _session():
    return fetch.new_session(settings.user_agent)


@functools.cache
def _limiter() -> tuple[DownloadSlots, Bandwidth]:
    client = redis.Redis.from_url(settings.broker_url)
    return (DownloadSlots(client, settings.max_downloads),
            Bandwidth(client, settings.max_mbits * 1_000_000 / 8))


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: exponential, jittered against thundering herds."""
    return min(300.0, 2.0 ** attempt * random.uniform(0.8, 1.2))


def download(job: dict) -> tuple[bytes, str]:
    """The thumbnail where the wiki offers one; else, or if the thumbnailer fails, the original."""
    hosts = {fetch.host_of(u) for u in (job["url"], job.get("thumb_url")) if u}
    slots, bandwidth = _limiter()
    get = functools.partial(fetch.download, _session(), allowed_hosts=hosts,
                            max_bytes=settings.max_bytes, timeout=settings.fetch_timeout,
                            slots=slots, bandwidth=bandwidth)
    if job.get("thumb_url"):
        try:
            return get(job["thumb_url"]).data, "thumb"
        except HTTPStatusError as exc:
            if getattr(exc, "retry_after", None) or exc.status == 429:
                raise  # the server asked us to slow down: not a reason to ask it for more
            log.info("thumbnail of %s failed (%s); fetching the original", job["title"], exc)
    return get(job["url"]).data, "original"


@app.task(name="wikihash.fetch_batch", bind=True)
def fetch_batch(self: Task, jobs: list[dict], attempt: int = 1) -> None:
    """Download each job's file and pass the bytes on to the hash queue."""
    downloaded, results, again = [], [], []
    pause = 0.0  # seconds a server asked us to stay away (Retry-After on 429/503)
    size = 0  # bytes in `downloaded`
    for job in jobs:
        if pause:
            again.append(job)  # the rest of the batch waits too, untried
            continue
        try:
            data, source = download(job)
        except ImageRejected as exc:
            results.append(Result(job["sha1"], exc.state, reason=f"download: {exc.reason}"))
        except FetchError as exc:
            if exc.retryable and attempt < MAX_ATTEMPTS:
                again.append(job)
                pause = getattr(exc, "retry_after", None) or 0.0
            else:
                note = f" (after {attempt} attempts)" if exc.retryable else ""
                results.append(Result(job["sha1"], "failed", reason=f"download: {exc}{note}"))
        else:
            downloaded.append({"sha1": job["sha1"], "title": job["title"], "source": source,
                               "data": base64.b64encode(data).decode("ascii")})
            size += len(data)
            if size > MAX_MESSAGE_BYTES:
                # Originals can be large: keep each message to the hash queue bounded.
                hash_batch.apply_async(args=[downloaded])
                downloaded, size = [], 0
    if downloaded:
        hash_batch.apply_async(args=[downloaded])
    if results:
        write_batch.apply_async(args=[[r.to_message() for r in results]])
    if again:
        fetch_batch.apply_async(args=[again, attempt + 1],
                                countdown=max(pause, backoff(attempt)))
        _keep_alive([job["sha1"] for job in again])


def _keep_alive(sha1s: list[str]) -> None:
    """Tell the ledger these jobs are waiting on purpose; best effort (the reconciler's timeout
    is the fallback, and a job sent twice is harmless, only wasteful)."""
    try:
        conn = _connection()
        with conn:
            ledger.touch_jobs(conn, sha1s)
    except (StorageError, storage.psycopg2.Error) as exc:
        _held.pop("conn", None)
        log.warning("could not mark %d delayed jobs as alive: %s", len(sha1s), exc)


@app.task(name="wikihash.hash_batch", bind=True)
def hash_batch(self: Task, items: list[dict]) -> None:
    """Hash each downloaded file with the canonical hash and pass the results to the writer."""
    if self.request.delivery_info.get("redelivered") and len(items) > 1:
        # This batch was running when its worker died: go on one file per task, so that a
        # file that kills workers takes only itself down.
        for item in items:
            hash_batch.apply_async(args=[[item]])
        return
    if self.request.delivery_info.get("redelivered"):
        item = items[0]
        write_batch.apply_async(args=[[Result(item["sha1"], "failed",
                                              reason="the worker died hashing it").to_message()]])
        return
    results = []
    for index, item in enumerate(items):
        try:
            result = imaging.hash_bytes(base64.b64decode(item["data"]))
        except ImageRejected as exc:
            results.append(Result(item["sha1"], exc.state, reason=exc.reason))
        except SoftTimeLimitExceeded:
            results.append(Result(item["sha1"], "failed", reason="hashing took too long"))
            if items[index + 1:]:
                hash_batch.apply_async(args=[items[index + 1:]])
            break
        else:
            results.append(Result(item["sha1"], "hashed", dhash=result.int64,
                                  low_information=result.low_information,
                                  hashed_from=item["source"], hashed_width=result.width))
    write_batch.apply_async(args=[[r.to_message() for r in results]])


_held: dict = {}  # this worker process's PostgreSQL connection


def _connection():
    conn = _held.get("conn")
    if conn is None or conn.closed:
        conn = _held["conn"] = storage.connect(settings.database_url)
    return conn


@app.task(name="wikihash.write_batch", bind=True, max_retries=None)
def write_batch(self: Task, results: list[dict]) -> int:
    """Write results with one COPY; waits and retries while PostgreSQL is away."""
    try:
        conn = _connection()
        with conn:
            return ledger.write_results(conn, [Result(**r) for r in results])
    except (StorageError, storage.psycopg2.OperationalError, storage.psycopg2.InterfaceError) \
            as exc:
        _held.pop("conn", None)
        raise self.retry(exc=exc, countdown=min(30.0, backoff(self.request.retries))) from exc
