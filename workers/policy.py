"""The retry policy: what happens to a file on each kind of error, declared once.

Pure: the tasks (workers/tasks.py) ask `decide(stage, error, attempt)` and carry out the answer
through one mechanism (`WikihashTask.carry_out`). The whole policy:

  stage  error                                       what happens
  -----  ------------------------------------------  --------------------------------------------
  fetch  permanent: 4xx, not an image, forbidden     RECORD failed (or unsupported), reason
         host, over the byte cap, ImageRejected
  fetch  transient: timeout, 5xx, 408, broken        RETRY the file after jittered backoff
         connection                                  (2, 4, 8, 16 s), at most MAX_ATTEMPTS
                                                     tries; then RECORD failed "(after N
                                                     attempts)"
  fetch  429/503 with Retry-After                    the file and the rest of its batch RETRY
                                                     after max(Retry-After, backoff), marked
                                                     alive in the ledger meanwhile
  hash   ImageRejected (corrupt, too large, over     RECORD its state and reason
         the child's memory ceiling, ...)
  hash   soft time limit                             RECORD failed "hashing took too long"; the
                                                     rest of the batch RETRY at once
  any    the worker died under a batch, or the       ISOLATE: one task per file; a file alone
         hard time limit killed it                   in its task when that happens is RECORDED
                                                     failed with the reason
  write  PostgreSQL unreachable or restarting        RETRY forever, backoff capped at 30 s
                                                     (results are never dropped)
  write  PostgreSQL refused the rows (bad data)      ISOLATE; a lone result it still refuses is
                                                     RECORDED failed with the refusal
  ledger a file sent MAX_SENDS times without a       RECORD failed by the producer
         result (pipeline/ledger.py:claim_jobs)      (`ledger.MAX_SENDS`); never re-sent again

RETRY re-sends the same task with the files that need it (`Task.retry`, so `attempt` is
Celery's own retry count), ISOLATE sends one task per file, RECORD writes a result.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from pipeline.errors import FetchError, ImageRejected, StorageError, WikihashError

MAX_ATTEMPTS = 5  # tries of one download with transient errors
MAX_BACKOFF = 300.0  # seconds
WRITE_MAX_BACKOFF = 30.0  # seconds between tries of a write while PostgreSQL is away


class Action(Enum):
    RECORD = "record"  # write a result for the file: it is done with
    RETRY = "retry"  # try the same files again after `countdown` seconds
    ISOLATE = "isolate"  # one task per file, so that a bad one takes only itself down


@dataclass(frozen=True)
class Decision:
    action: Action
    countdown: float = 0.0  # seconds, for RETRY
    state: str = "failed"  # the result's state, for RECORD
    reason: str = ""  # the result's reason, for RECORD


def backoff(attempt: int, cap: float = MAX_BACKOFF) -> float:
    """Seconds before attempt `attempt + 1`: exponential, jittered against thundering herds."""
    return min(cap, 2.0 ** attempt * random.uniform(0.8, 1.2))


def decide_fetch(exc: WikihashError, attempt: int) -> Decision:
    """A download of one file failed with `exc` on try `attempt` (1-based)."""
    if isinstance(exc, ImageRejected):
        return Decision(Action.RECORD, state=exc.state, reason=f"download: {exc.reason}")
    if isinstance(exc, FetchError) and exc.retryable:
        if attempt < MAX_ATTEMPTS:
            # Where the server said when to come back, not before then.
            return Decision(Action.RETRY,
                            countdown=max(exc.retry_after or 0.0, backoff(attempt)))
        return Decision(Action.RECORD, reason=f"download: {exc} (after {attempt} attempts)")
    return Decision(Action.RECORD, reason=f"download: {exc}")


def decide_hash(exc: ImageRejected) -> Decision:
    return Decision(Action.RECORD, state=exc.state, reason=exc.reason)


HASH_TOO_LONG = Decision(Action.RECORD, reason="hashing took too long")


def decide_lost(batch_size: int, why: str) -> Decision:
    """A task's process died (`why`) under a batch of `batch_size` files."""
    if batch_size > 1:
        return Decision(Action.ISOLATE)
    return Decision(Action.RECORD, reason=why)


def decide_write(exc: StorageError, attempt: int, batch_size: int) -> Decision:
    """Writing a batch of results failed."""
    if exc.retryable:
        return Decision(Action.RETRY, countdown=backoff(attempt, WRITE_MAX_BACKOFF))
    if batch_size > 1:
        return Decision(Action.ISOLATE)
    return Decision(Action.RECORD, reason=f"could not be stored: {exc}")
