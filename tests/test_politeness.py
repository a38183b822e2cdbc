"""The global limiter holds across processes because it lives in Redis; User-Agent rules."""

import threading
import time
import uuid

import pytest
import redis

from pipeline.errors import PolitenessError
from pipeline.politeness import Bandwidth, DownloadSlots, check_user_agent, retry_after
from tests.conftest import REDIS_URL


@pytest.fixture
def client():
    client = redis.Redis.from_url(REDIS_URL + "/15")
    client.ping()
    return client


def test_at_most_n_slots_at_once(client):
    key = f"test:slots:{uuid.uuid4().hex}"
    # Two limiters on one key stand for two worker processes.
    limiters = [DownloadSlots(client, 2, key=key, poll=0.01) for _ in range(2)]
    inside, peak, lock = [0], [0], threading.Lock()

    def work(limiter):
        with limiter.slot(timeout=10):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(limiters[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    assert limiters[0].in_use() == 0
    client.delete(key)


def test_a_dead_holders_slot_expires(client):
    key = f"test:slots:{uuid.uuid4().hex}"
    limiter = DownloadSlots(client, 1, key=key, lease=0.3, poll=0.01)
    held = limiter.slot()
    held.__enter__()  # and never leaves, like a worker killed mid-download
    start = time.monotonic()
    with limiter.slot(timeout=5):
        waited = time.monotonic() - start
    assert 0.2 < waited < 2
    client.delete(key)


def test_bandwidth_is_shared(client):
    key = f"test:bw:{uuid.uuid4().hex}"
    a = Bandwidth(client, 100_000, burst=10_000, key=key)
    b = Bandwidth(client, 100_000, burst=10_000, key=key)
    assert a.charge(10_000) == 0
    # The bucket is empty for both: 20 kB more costs about 0.2 s whoever asks.
    assert b.charge(20_000) == pytest.approx(0.2, abs=0.05)
    client.delete(key)


@pytest.mark.parametrize("ua", ["wikihash/0.1", "wikihash/0.1 (no contact here)",
                                "python-requests/2.31"])
def test_wikimedia_needs_a_contact(ua):
    with pytest.raises(PolitenessError, match="WIKIHASH_USER_AGENT"):
        check_user_agent(ua, "https://en.wikipedia.org/w/api.php")


def test_contacts_accepted_and_other_wikis_free():
    check_user_agent("wikihash/0.1 (me@example.org)", "https://commons.wikimedia.org/w/api.php")
    check_user_agent("wikihash/0.1 (https://example.org/bot)", "https://en.wikipedia.org/w/api.php")
    check_user_agent("wikihash/0.1", "http://127.0.0.1:8080/w/api.php")


def test_retry_after_forms():
    assert retry_after("7", 1.0) == 7.0
    assert retry_after(None, 3.0) == 3.0
    assert retry_after("garbage", 3.0) == 3.0
    assert retry_after("Fri, 27 Nov 2026 10:00:30 GMT", 0.0,
                       now=1795773600.0) == pytest.approx(30.0)
