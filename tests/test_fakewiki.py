"""The fake MediaWiki behaves as api.php does, driven by mwclient itself and by requests."""

from __future__ import annotations

import io
import time

import mwclient
import pytest
import requests
from fakewiki import FakeWiki, FakeWikiServer
from PIL import Image

UA = "wikihash-test/0 (test@example.org)"
SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50">'
       b'<rect width="100" height="50" fill="red"/></svg>')


def jpeg(width: int, height: int, color=(10, 20, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "JPEG")
    return out.getvalue()


def site_for(server: FakeWikiServer, **kwargs) -> mwclient.Site:
    return mwclient.Site(server.host, path="/w/", scheme="http", clients_useragent=UA,
                         **kwargs)


@pytest.fixture
def wikis():
    commons = FakeWiki(name="shared", sitename="Fake Commons")
    wiki = FakeWiki(shared=commons)
    with FakeWikiServer(commons) as shared_server, FakeWikiServer(wiki) as server:
        yield wiki, server, commons, shared_server


def walk(site: mwclient.Site, **params) -> tuple[list[dict], list[tuple[str, int]]]:
    """Follow 'continue' as a client should; returns responses and (title, image) pairs."""
    responses, pairs = [], []
    cont: dict = {}
    while True:
        result = site.api("query", "GET", generator="allpages", prop="images|revisions",
                          rvprop="ids|timestamp", maxlag=5, **params, **cont)
        responses.append(result)
        for page in result.get("query", {}).get("pages", {}).values():
            for image in page.get("images", ()):
                pairs.append((page["title"], image["title"]))
        if "continue" not in result:
            return responses, pairs
        cont = result["continue"]


def test_site_init_and_what_mwclient_sends(wikis):
    wiki, server, *_ = wikis
    site = site_for(server)
    assert site.version[:2] == (1, 43)
    assert site.namespaces[6] == "File"
    first = server.requests[0]
    assert first.params == {"meta": "siteinfo|userinfo|userinfo", "siprop": "general|namespaces",
                            "uiprop": "groups|rights|blockinfo|hasmsg", "continue": "",
                            "action": "query", "format": "json"}
    assert "maxlag" not in first.params  # mwclient only adds maxlag to index.php calls
    site.api("query", generator="allpages", gaplimit=5)
    last = server.requests[-1]
    assert last.method == "POST"  # Site.api defaults to POST
    assert last.params["meta"] == "userinfo" and last.params["continue"] == ""


def test_walk_returns_every_pair_once(wikis):
    wiki, server, *_ = wikis
    big = [f"Big {i:04d}.jpg" for i in range(1200)]
    wiki.add_page("Big article", images=big)
    expected = {("Big article", f"File:{name}") for name in big}
    for i in range(700):
        images = [f"Small {i}.png", f"Shared {i % 7}.jpg"]
        wiki.add_page(f"Small {i:03d}", images=images)
        expected |= {(f"Small {i:03d}", f"File:{name}") for name in images}
    wiki.add_page("A redirect", redirect="Big article")
    site = site_for(server)
    responses, pairs = walk(site, gapfilterredir="nonredirects", gaplimit="max", imlimit="max")
    assert len(pairs) == len(set(pairs)) and set(pairs) == expected
    # prop continuation repeats a generator batch; batchcomplete marks each batch's end
    first = responses[0]
    assert "batchcomplete" not in first and first["continue"]["imcontinue"]
    assert first["continue"]["continue"].startswith("||")
    assert first["limits"] == {"allpages": 500, "images": 500}
    complete = [r for r in responses if "batchcomplete" in r]
    assert "gapcontinue" in complete[0]["continue"]
    assert complete[-1] is responses[-1] and "continue" not in responses[-1]
    # revisions are given once per batch, with the latest revision only
    revs = [p for r in responses for p in r["query"]["pages"].values() if "revisions" in p]
    assert len(revs) == 701 and all(len(p["revisions"]) == 1 for p in revs)
    assert all(r.params.get("maxlag") == "5" for r in server.requests[1:])


def test_pages_sort_by_dbkey_binary(wikis):
    wiki, server, *_ = wikis
    for title in ["a b", "Ab", "A_c", "Éclair", "Zed"]:
        wiki.add_page(title)
    result = requests.get(server.api_url, params={
        "action": "query", "list": "allpages", "aplimit": "max", "format": "json",
        "formatversion": "2"}).json()
    assert [p["title"] for p in result["query"]["allpages"]] == [
        "A b", "A c", "Ab", "Zed", "Éclair"]


def test_limits_clamp_with_warning(wikis):
    wiki, server, *_ = wikis
    wiki.add_page("One", images=["X.jpg"])
    result = requests.get(server.api_url, params={
        "action": "query", "generator": "allpages", "gaplimit": "600", "prop": "images",
        "imlimit": "9999", "format": "json", "bogus": "1"}).json()
    warnings = result["warnings"]
    assert warnings["allpages"]["*"] == "gaplimit may not be over 500 (set to 600) for users."
    assert warnings["images"]["*"] == "imlimit may not be over 500 (set to 9999) for users."
    assert warnings["main"]["*"] == "Unrecognized parameter: bogus."
    bad = requests.get(server.api_url, params={
        "action": "query", "generator": "allpages", "gapfilterredir": "nope",
        "format": "json"})
    assert bad.json()["error"]["code"] == "badvalue"
    assert bad.headers["MediaWiki-API-Error"] == "badvalue"


def test_imageinfo_batches_thumbs_missing_and_shared(wikis):
    wiki, server, commons, shared_server = wikis
    names = []
    for i in range(120):
        name = f"Img {i:03d}.jpg"
        names.append(name)
        if i % 10 == 0:
            continue  # a red link
        wiki.add_file(name, jpeg(300 + i, 200), repo="shared" if i % 3 == 0 else "local")
    site = site_for(server)
    seen = {}
    for start in range(0, 120, 50):
        batch = "|".join(f"File:{n.replace(' ', '_')}" for n in names[start:start + 50])
        result = site.get("query", prop="imageinfo", titles=batch, iiurlwidth=250,
                          iiprop="sha1|mime|mediatype|size|url|timestamp")
        assert "continue" not in result and "batchcomplete" in result
        assert len(result["query"]["normalized"]) == len(names[start:start + 50])
        for key, page in result["query"]["pages"].items():
            seen[page["title"]] = (key, page)
    assert len(seen) == 120
    for i, name in enumerate(names):
        key, page = seen[f"File:{name}"]
        if i % 10 == 0:
            assert page["missing"] == "" and page["imagerepository"] == ""
            assert int(key) < 0 and "imageinfo" not in page
            continue
        info = page["imageinfo"][0]
        assert info["thumbwidth"] == 250 and info["mediatype"] == "BITMAP"
        assert info["thumburl"].endswith(f"/250px-{name.replace(' ', '_')}")
        if i % 3 == 0:
            assert page["imagerepository"] == "shared" and int(key) < 0
            assert page["known"] == ""
            assert info["url"].startswith(shared_server.base_url + "/images/")
        else:
            assert page["imagerepository"] == "local" and int(key) > 0
            assert info["url"].startswith(server.base_url + "/images/")
    repos = site.get("query", meta="filerepoinfo")["query"]["repos"]
    assert [r["name"] for r in repos] == ["local", "shared"]
    assert repos[0]["local"] == "" and "local" not in repos[1]
    assert repos[1]["apiurl"] == shared_server.api_url


def test_too_many_titles_and_transform_limit(wikis):
    wiki, server, *_ = wikis
    for i in range(60):
        wiki.add_file(f"T{i:02d}.jpg", jpeg(64, 32))
    titles = "|".join(f"File:T{i:02d}.jpg" for i in range(60))
    params = {"action": "query", "prop": "imageinfo", "iiprop": "url|size", "iiurlwidth": "40",
              "titles": titles, "format": "json", "formatversion": "2"}
    anon = requests.get(server.api_url, params=params).json()
    assert anon["warnings"]["main"]["warnings"] == (
        'Too many values supplied for parameter "titles". The limit is 50.')
    assert len(anon["query"]["pages"]) == 50
    # a bot may ask for 500 titles, but only 50 are scaled per request
    wiki.add_user("Crawler@wikihash", "secret")
    site = site_for(server)
    site.login("Crawler@wikihash", "secret")
    assert "bot" in site.groups
    first = site.get("query", **{k: v for k, v in params.items() if k not in ("action",)})
    cont = first["continue"]
    assert cont == {"iicontinue": "T50.jpg|20240101000051", "continue": "||userinfo"}
    scaled = [p for p in first["query"]["pages"] if "imageinfo" in p]
    assert len(scaled) == 50
    rest = site.get("query", **{k: v for k, v in params.items() if k != "action"}, **cont)
    assert sorted(p["title"] for p in rest["query"]["pages"] if "imageinfo" in p) == [
        f"File:T{i}.jpg" for i in range(50, 60)]


def test_thumbnails_download_at_width(wikis):
    wiki, server, *_ = wikis
    wiki.add_file("Wide.jpg", jpeg(1000, 500))
    wiki.add_file("Small.jpg", jpeg(100, 80))
    wiki.add_file("Logo.svg", SVG)
    wiki.add_file("Sound.ogg", b"OggS" + b"\0" * 100)
    result = requests.get(server.api_url, params={
        "action": "query", "prop": "imageinfo", "iiprop": "url|size|mime|mediatype",
        "iiurlwidth": "250", "titles": "File:Wide.jpg|File:Small.jpg|File:Logo.svg|"
        "File:Sound.ogg", "format": "json", "formatversion": "2"}).json()
    info = {p["title"]: p["imageinfo"][0] for p in result["query"]["pages"]}
    wide = requests.get(info["File:Wide.jpg"]["thumburl"])
    assert wide.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(wide.content)).size == (250, 125)
    small = info["File:Small.jpg"]  # never upscaled: the original stands in
    assert small["thumburl"] == small["url"] and small["thumbwidth"] == 100
    svg = info["File:Logo.svg"]
    assert svg["mediatype"] == "DRAWING" and svg["thumburl"].endswith("250px-Logo.svg.png")
    png = requests.get(svg["thumburl"])
    assert png.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (250, 125)
    sound = info["File:Sound.ogg"]
    assert sound["mediatype"] == "AUDIO" and sound["thumbwidth"] == 120
    assert sound["thumburl"].endswith("/file-type-icons/fileicon-ogg.png")
    original = requests.get(info["File:Wide.jpg"]["url"])
    assert int(original.headers["Content-Length"]) == info["File:Wide.jpg"]["size"]
    assert server.file_hits[requests.utils.urlparse(svg["thumburl"]).path] == 1


def test_file_faults(wikis):
    wiki, server, *_ = wikis
    wiki.add_file("Broken.jpg", jpeg(600, 400))
    result = requests.get(server.api_url, params={
        "action": "query", "prop": "imageinfo", "iiprop": "url", "iiurlwidth": "120",
        "titles": "File:Broken.jpg", "format": "json", "formatversion": "2"}).json()
    info = result["query"]["pages"][0]["imageinfo"][0]
    server.faults.fail_file("Broken.jpg", "status", status=500, target="thumb")
    assert requests.get(info["thumburl"]).status_code == 500
    assert requests.get(info["url"]).status_code == 200
    server.faults.fail_file("Broken.jpg", "redirect", target="original", times=1)
    moved = requests.get(info["url"], allow_redirects=False)
    assert moved.status_code == 302 and moved.headers["Location"].startswith("http://127.0.0.2:")
    server.faults.fail_file("Broken.jpg", "content_length", target="original", times=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(info["url"])
    server.faults.file_status_429 = 1
    limited = requests.get(info["url"])
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"


def test_maxlag_and_rate_limits(wikis):
    wiki, server, *_ = wikis
    server.faults.maxlag_responses = 1
    lagged = requests.get(server.api_url, params={"action": "query", "meta": "siteinfo",
                                                  "format": "json", "maxlag": "5"})
    assert lagged.status_code == 200
    assert lagged.headers["Retry-After"] == "7" and lagged.headers["X-Database-Lag"] == "7"
    assert lagged.json()["error"]["code"] == "maxlag"
    server.faults.status_429 = 1
    limited = requests.get(server.api_url, params={"action": "query", "format": "json"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    # mwclient sleeps Retry-After on a maxlag answer and retries by itself (a second
    # retry would sleep max(Retry-After, retry_timeout * 1) = 30 s by default)
    site = site_for(server)
    server.faults.maxlag_responses, server.faults.maxlag_retry_after = 1, 1
    started = time.monotonic()
    result = site.get("query", meta="siteinfo", maxlag=5)
    assert time.monotonic() - started >= 1
    assert result["query"]["general"]["generator"] == "MediaWiki 1.43.0"
    assert [r.params["maxlag"] for r in server.requests[-2:]] == ["5", "5"]
    assert server.faults.maxlag_responses == 0
    # ... but raises at once on 429
    server.faults.status_429 = 1
    with pytest.raises(requests.exceptions.HTTPError):
        site.get("query", meta="siteinfo")


def test_error_titles_and_dropped_connections(wikis):
    wiki, server, *_ = wikis
    wiki.add_file("Poison.jpg", jpeg(10, 10))
    server.faults.error_titles.add("Poison.jpg")
    result = requests.get(server.api_url, params={
        "action": "query", "prop": "imageinfo", "titles": "File:Poison.jpg|File:Other.jpg",
        "format": "json"}).json()
    assert result["error"]["code"].startswith("internal_api_error_")
    server.faults.drop_connections = 1
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.api_url, params={"action": "query", "format": "json"})


def test_recentchanges_and_logevents(wikis):
    wiki, server, *_ = wikis
    wiki.add_file("Pic.jpg", jpeg(20, 20))
    wiki.add_page("Page", images=["Pic.jpg"])
    wiki.edit_page("Page", images=[])
    wiki.move_page("Page", "Moved page")
    wiki.upload_file("Pic.jpg", jpeg(20, 20, (200, 0, 0)))
    wiki.delete_page("Moved page")
    wiki.delete_file("Pic.jpg")
    base = {"action": "query", "list": "recentchanges", "rclimit": "2", "rcdir": "newer",
            "rcprop": "title|ids|timestamp|loginfo|sha1|redirect", "format": "json",
            "formatversion": "2"}
    rows, cont = [], {}
    while True:
        result = requests.get(server.api_url, params={**base, **cont}).json()
        rows += result["query"]["recentchanges"]
        if "continue" not in result:
            break
        cont = result["continue"]
        assert cont["rccontinue"].count("|") == 1
    kinds = [(r["type"], r.get("logtype"), r.get("logaction")) for r in rows]
    assert kinds == [("log", "upload", "upload"), ("new", None, None), ("edit", None, None),
                     ("log", "move", "move"), ("log", "upload", "overwrite"),
                     ("log", "delete", "delete"), ("log", "delete", "delete")]
    assert rows[3]["logparams"] == {"target_ns": 0, "target_title": "Moved page"}
    assert rows[2]["old_revid"] == rows[1]["revid"] and len(rows[2]["sha1"]) == 40
    assert [r["rcid"] for r in rows] == sorted(r["rcid"] for r in rows)
    since = requests.get(server.api_url, params={
        **base, "rcstart": rows[4]["timestamp"], "rctype": "log", "rclimit": "max"}).json()
    assert len(since["query"]["recentchanges"]) == 3
    logs = requests.get(server.api_url, params={
        "action": "query", "list": "logevents", "letype": "upload", "format": "json"}).json()
    assert [e["action"] for e in logs["query"]["logevents"]] == ["overwrite", "upload"]


def test_last_generator_batch_spanning_three_responses_keeps_its_position():
    """Regression: the generator must not start over while its last batch is still listed."""


    wiki = FakeWiki()
    wiki.add_page("Aaa first", images=["A.png"])
    for i in range(3):
        wiki.add_page(f"Zzz {i}", images=[f"Img {i}-{j:04d}.png" for j in range(600)])
    with FakeWikiServer(wiki) as server:
        session = requests.Session()
        session.trust_env = False
        base = {"action": "query", "format": "json", "formatversion": "2",
                "generator": "allpages", "gaplimit": "2", "prop": "images", "imlimit": "500"}
        cont: dict = {"continue": ""}
        seen: list[tuple[str, str]] = []
        for _ in range(20):
            answer = session.get(server.api_url, params={**base, **cont}, timeout=10).json()
            for page in answer["query"]["pages"]:
                seen += [(page["title"], i["title"]) for i in page.get("images", [])]
            if "continue" not in answer:
                break
            cont = answer["continue"]
        else:
            raise AssertionError("the walk did not end")
    assert len(seen) == len(set(seen)) == 1 + 1800
