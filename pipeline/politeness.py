"""Politeness: the User-Agent rule, Retry-After, and the global download limiter.

The limiter lives in Redis so that it is global across every worker process on every machine
(Celery's `rate_limit` is per worker). Two parts:

- `DownloadSlots`: at most N downloads in flight. Each slot is a lease in a sorted set, scored
  by its expiry, so the slot of a worker killed mid-download frees itself when the lease ends.
- `Bandwidth`: a token bucket in bytes shared by all downloads. A reader charges each chunk it
  receives and sleeps for the debt, so the total stays under the rate.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import redis

from pipeline.errors import FetchTimeout, PolitenessError

# Hosts whose robot policy requires a contact in the User-Agent.
WIKIMEDIA_HOSTS = re.compile(
    r"(^|\.)(wikipedia|wikimedia|wikidata|wiktionary|wikibooks|wikinews|wikiquote|wikisource"
    r"|wikiversity|wikivoyage|mediawiki|wikifunctions)\.org$"
)
_CONTACT = re.compile(r"\(([^)]*(@|https?://|tel:)[^)]*)\)")
_UA_SHAPE = re.compile(r"^[\w.-]+/[\w.+-]+ \(.+\)")


def is_wikimedia(url: str) -> bool:
    return bool(WIKIMEDIA_HOSTS.search(urlsplit(url).hostname or ""))


def check_user_agent(user_agent: str, api_url: str) -> None:
    """Refuse to crawl a Wikimedia wiki without `name/version (contact)` in the User-Agent."""
    if not is_wikimedia(api_url):
        return
    if not (_UA_SHAPE.match(user_agent) and _CONTACT.search(user_agent)):
        raise PolitenessError(
            f"{urlsplit(api_url).hostname} requires a User-Agent with a contact, such as "
            "'wikihash/0.1 (https://example.org/you; you@example.org)': "
            "set WIKIHASH_USER_AGENT (https://meta.wikimedia.org/wiki/User-Agent_policy)"
        )


def retry_after(value: str | None, default: float, *, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); `default` if absent."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return default
    return max(0.0, when - (time.time() if now is None else now))


# Both scripts read Redis's own clock, so that workers on machines with skewed clocks agree,
# and so that taking a slot or charging the bucket is one round trip.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

_ACQUIRE = _NOW + """
local key, limit, lease, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now + lease, token)
  return 1
end
return 0
"""

_CHARGE = _NOW + """
local key, rate, burst, cost = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + (now - ts) * rate) - cost
redis.call('HSET', key, 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', key, 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


class DownloadSlots:
    """At most `limit` downloads in flight across all workers sharing `client`."""

    def __init__(self, client: redis.Redis, limit: int, *, lease: float = 300.0,
                 key: str = "wikihash:download-slots", poll: float = 0.05) -> None:
        self._client = client
        self._limit = limit
        self._lease = lease  # seconds: a download longer than this loses its slot
        self._key = key
        self._poll = poll  # seconds between attempts when every slot is taken
        self._acquire = client.register_script(_ACQUIRE)

    @contextlib.contextmanager
    def slot(self, timeout: float = 600.0) -> Iterator[None]:
        """Hold one slot for the body of the `with`; waits up to `timeout` seconds for one."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        while True:
            if self._acquire(keys=[self._key], args=[self._limit, self._lease, token]):
                break
            if time.monotonic() > deadline:
                raise FetchTimeout(f"no download slot free after {timeout:.0f} s")
            time.sleep(self._poll)
        try:
            yield
        finally:
            self._client.zrem(self._key, token)

    def in_use(self) -> int:
        self._client.zremrangebyscore(self._key, "-inf", _redis_time(self._client))
        return int(self._client.zcard(self._key))


class Bandwidth:
    """A token bucket of `bytes_per_second`, shared by all workers through Redis."""

    def __init__(self, client: redis.Redis, bytes_per_second: float, *,
                 burst: float | None = None, key: str = "wikihash:bandwidth") -> None:
        self._client = client
        self._rate = bytes_per_second
        # One second of traffic may pass at once; beyond that readers wait.
        self._burst = bytes_per_second if burst is None else burst
        self._key = key
        self._charge = client.register_script(_CHARGE)

    def charge(self, nbytes: int) -> float:
        """Account for `nbytes` received; returns the seconds the caller must now wait."""
        wait = self._charge(keys=[self._key], args=[self._rate, self._burst, nbytes])
        return float(wait)

    def throttle(self, nbytes: int) -> None:
        wait = self.charge(nbytes)
        if wait > 0:
            time.sleep(wait)


def _redis_time(client: redis.Redis) -> float:
    """Redis's clock."""
    seconds, micros = client.time()
    return seconds + micros / 1e6
