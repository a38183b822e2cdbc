"""Wiki access against the fake MediaWiki: continuation, batching, isolation, waiting, login."""

from __future__ import annotations

import pytest
from fakewiki import FakeWiki, FakeWikiServer, Faults
from wikis import generated_image

from pipeline.errors import ApiError, PolitenessError
from pipeline.wiki import Wiki

UA = "wikihash-test/0.1 (test@example.org)"


@pytest.fixture(scope="module")
def wiki_model():
    commons = FakeWiki(name="shared", sitename="Commons")
    wiki = FakeWiki(shared=commons)
    for i in range(130):
        wiki.add_file(f"Pic {i:03d}.png", generated_image(i), repo="shared" if i % 2 else "local")
    wiki.add_file("Song.ogg", b"OggS" + bytes(100), mime="audio/ogg", duration=3.0)
    big = [f"Pic {i:03d}.png" for i in range(130)] + [f"Red {i:04d}.png" for i in range(1100)]
    wiki.add_page("Gallery", images=big)
    for i in range(700):
        wiki.add_page(f"Small {i:03d}", images=[f"Pic {i % 130:03d}.png", "Song.ogg"])
    wiki.add_page("Redirect", redirect="Gallery")
    return wiki, commons


def make(server, sleeps=None):
    """A Wiki whose waits are recorded in `sleeps` instead of slept."""
    return Wiki(server.api_url, UA, sleep=sleeps.append if sleeps is not None else lambda s: None)


def test_walk_returns_every_article_and_image_once(wiki_model):
    wiki, commons = wiki_model
    with FakeWikiServer(commons), FakeWikiServer(wiki) as server:
        api = make(server)
        batches = list(api.walk_articles())
    articles = [a for batch, _ in batches for a in batch]
    assert len(articles) == 701  # the redirect is not an article
    assert len({a.page_id for a in articles}) == 701
    gallery = next(a for a in articles if a.title == "Gallery")
    assert len(gallery.images) == 1230  # spread over three responses of 500
    assert all(a.rev_id for a in articles)
    # Resumable: every continuation but the last points further on.
    assert batches[-1][1] is None and all(cont for _, cont in batches[:-1])
    # Near the least the API allows: 3430 image links / 500, plus the generator batches.
    assert api.stats.requests <= 10
    assert all(r.params.get("maxlag") == "5" for r in server.requests)


def test_file_info_batches_of_50_and_isolates_a_breaking_title(wiki_model):
    wiki, commons = wiki_model
    faults = Faults(error_titles={"Pic 017.png"})
    titles = [f"Pic {i:03d}.png" for i in range(120)] + ["Red 0001.png", "Song.ogg"]
    with FakeWikiServer(commons), FakeWikiServer(wiki, faults=faults) as server:
        infos = {i.title: i for i in make(server).file_info(titles, 120)}
        calls = [r for r in server.requests if r.kind == "prop:imageinfo"]
    assert set(infos) == set(titles)
    assert infos["Pic 017.png"].state == "failed" and "API error" in infos["Pic 017.png"].reason
    assert infos["Red 0001.png"].state == "missing"
    assert infos["Song.ogg"].state == "unsupported"
    assert infos["Pic 001.png"].repo == "shared" and infos["Pic 002.png"].repo == "local"
    assert infos["Pic 002.png"].thumb_url and "120px-" in infos["Pic 002.png"].thumb_url
    assert all(len(r.params["titles"].split("|")) <= 50 for r in calls)
    # 3 batches, the broken one split down to its title: about log2(50) more requests.
    assert len(calls) <= 3 + 2 * 6


def test_rate_limits_wait_as_long_as_retry_after_says(wiki_model):
    wiki, commons = wiki_model
    faults = Faults(status_429=1, status_503=1, maxlag_responses=1, maxlag_retry_after=4,
                    retry_after=3, drop_connections=1)
    sleeps: list[float] = []
    with FakeWikiServer(commons), FakeWikiServer(wiki, faults=faults) as server:
        info = make(server, sleeps).siteinfo()
    assert info["sitename"] == wiki.sitename
    assert sorted(sleeps) == [1.0, 3.0, 3.0, 4.0]  # the dropped connection backs off 1 s


def test_a_wikimedia_wiki_needs_a_contact():
    with pytest.raises(PolitenessError):
        Wiki("https://en.wikipedia.org/w/api.php", "wikihash/0.1")


def test_bot_password_login(wiki_model):
    wiki, commons = wiki_model
    wiki.add_user("Crawler@wikihash", "s3cret-bot-password")
    with FakeWikiServer(commons), FakeWikiServer(wiki) as server:
        make(server).login("Crawler@wikihash", "s3cret-bot-password")
        with pytest.raises(ApiError, match="login-failed"):
            make(server).login("Crawler@wikihash", "wrong")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_connection_names_the_host_and_cause_and_gives_up_soon():
    """It was `API busy (attempt N)` for two minutes, then `API unreachable: ConnectionError`."""
    from pipeline.errors import WikiError
    from pipeline.wiki import UNREACHABLE_ATTEMPTS, Wiki

    port = _closed_port()
    sleeps: list[float] = []
    wiki = Wiki(f"http://127.0.0.1:{port}/w/api.php", "wikihash-test/0.1 (t@example.org)",
                sleep=sleeps.append)
    with pytest.raises(WikiError) as caught:
        wiki.siteinfo()
    assert str(caught.value) == (f"cannot reach the wiki at 127.0.0.1:{port} "
                                 f"(http://127.0.0.1:{port}/w/api.php): connection refused")
    assert len(sleeps) == UNREACHABLE_ATTEMPTS - 1 and sum(sleeps) <= 5


def test_a_name_that_does_not_resolve_is_not_retried():
    from pipeline.errors import WikiError
    from pipeline.wiki import Wiki

    sleeps: list[float] = []
    wiki = Wiki("http://no-such-wiki.invalid/w/api.php", "wikihash-test/0.1 (t@example.org)",
                sleep=sleeps.append, timeout=10)
    with pytest.raises(WikiError, match=r"no-such-wiki.invalid .*does not resolve") as caught:
        wiki.siteinfo()
    assert not caught.value.retryable and sleeps == []
