"""The enwiki-shaped generator: deterministic, ordered, served through the real API walk."""

from __future__ import annotations

import hashlib
from collections import Counter

import requests
from fakewiki import FakeWikiServer
from fakewiki.enwiki import EnwikiShape, files_wiki, serve, unword, word
from fakewiki.model import dbkey

from pipeline.wiki import Wiki

UA = "wikihash-test/0 (test@example.org)"


def test_words_sort_in_index_order_and_read_back():
    words = [word(i) for i in range(0, 70 ** 4, 70 ** 4 // 997)]
    assert [w.encode() for w in words] == sorted(w.encode() for w in words)
    assert all(unword(word(i)) == i for i in (0, 1, 69, 70, 12345, 70 ** 4 - 1))


def test_titles_sort_as_allpages_does_and_parse_back():
    shape = EnwikiShape(3000, seed=7)
    keys = [dbkey(shape.title(0, s)).encode() for s in range(shape.slots)]
    assert keys == sorted(keys)
    assert any(any(ord(c) > 127 for c in shape.title(0, s)) for s in range(50))
    assert all(shape.slot_of(0, shape.title(0, s)) == s for s in range(0, shape.slots, 97))
    assert shape.slot_of(0, shape.title(0, 5) + "x") is None
    assert shape.first_slot(0, keys[1234]) == 1234


def test_same_seed_same_wiki_and_the_shape_is_heavy_tailed():
    a, b = EnwikiShape(2000, seed=3), EnwikiShape(2000, seed=3)
    lists = [a.images(0, s) for s in a.article_slots()]
    assert lists == [b.images(0, s) for s in b.article_slots()]
    assert len(lists) == 2000
    own = [[n for n in names if not n.startswith("Flag of")] for names in lists]
    assert 0.35 < sum(1 for o in own if not o) / len(own) < 0.55
    uses = Counter(n for names in lists for n in names)
    icon_uses = sorted(c for n, c in uses.items() if n.startswith("Flag of"))
    assert 0.005 * 2000 <= icon_uses[len(icon_uses) // 2] <= 0.06 * 2000
    states = Counter(a.expected_state(n) for n in uses)
    assert states["missing"] > 0 and states["unsupported"] > 0 and states["hashed"] > 0
    repos = Counter(a.file(a.file_id(n)).repo for n in uses if a.file_id(n) is not None)
    assert 0.6 < repos["shared"] / sum(repos.values()) < 0.85


def test_the_walk_and_imageinfo_see_exactly_the_generated_wiki():
    shape = EnwikiShape(1200, seed=5)
    commons, wiki = shape.wikis()
    with FakeWikiServer(commons), FakeWikiServer(wiki) as server:
        client = Wiki(server.api_url, UA)
        walked = {a.page_id: list(a.images) for batch, _ in client.walk_articles(None)
                  for a in batch}
        expected = {shape.page_id(0, s): shape.images(0, s) for s in shape.article_slots()}
        assert walked == expected
        names = sorted({n for images in expected.values() for n in images})[:300]
        infos = {i.title: i for i in client.file_info(names, 120)}
        for name in names:
            state = shape.expected_state(name)
            assert infos[name].state == ("pending" if state == "hashed" else state), name
        hashed = [i for i in infos.values() if i.state == "pending"]
        assert {i.repo for i in hashed} == {"local", "shared"}
        # A duplicate (3 % of files) has its source's bytes: one SHA-1 for two names.
        fid = next(f for f in range(shape.file_space) if shape.file(f).content != f
                   and shape.file(f).kind == shape.file(shape.file(f).content).kind)
        pair = [shape.file(fid).name, shape.file(shape.file(fid).content).name]
        sha1s = {i.sha1 for i in client.file_info(pair, 120)}
        assert len(sha1s) == 1 and None not in sha1s


def test_files_from_processes_sharing_a_port_and_counts_without_logs():
    """The benchmark's layout: api.php on its own, files from several servers on one port
    (SO_REUSEPORT), imageinfo naming that port; counts and CPU kept without a log per request."""
    shape = EnwikiShape(600, seed=2)
    first = FakeWikiServer(files_wiki(shape), keep_logs=False, reuse_port=True).start()
    second = FakeWikiServer(files_wiki(shape), port=first.port, keep_logs=False,
                            reuse_port=True).start()
    try:
        assert second.port == first.port
        with serve(shape, files_url=first.base_url, keep_logs=False) as (shared, server):
            client = Wiki(server.api_url, UA)
            articles = [a for batch, _ in client.walk_articles(None) for a in batch]
            names = sorted({n for a in articles for n in a.images})[:120]
            infos = [i for i in client.file_info(names, 120) if i.state == "pending"]
            assert {i.repo for i in infos} == {"local", "shared"}
            session = requests.Session()
            for info in infos[:60]:
                url = info.thumb_url or info.url
                assert url.startswith(first.base_url + "/images/")
                if info.mime == "image/jpeg":  # served as is: the bytes imageinfo hashed
                    body = session.get(info.url, timeout=10).content
                    assert hashlib.sha1(body).hexdigest() == info.sha1
                else:
                    assert session.get(url, timeout=10).status_code == 200
            tally = server.tally()
            assert tally["generator:allpages"]["requests"] >= 1
            assert tally["prop:imageinfo"]["cpu_s"] > 0
            assert not server.requests  # keep_logs=False: counts only
    finally:
        second.stop()
        first.stop()
    served = sum(s.tally().get("file", {}).get("requests", 0) for s in (first, second))
    assert served == 60 and not first.file_requests and not second.file_requests
