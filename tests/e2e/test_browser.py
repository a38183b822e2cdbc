"""The search page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

`wikihash serve` runs as a process over the crawled fake wiki, allow-listing the wiki's own
loopback host; an image uploaded through the page shows the article that uses it; a pasted URL on
another loopback host is refused as private; the allow-listed one is accepted. The page is saved
in the test's temporary directory, or where WIKIHASH_SCREENSHOT says (`ops/screenshot` sets it
to docs/screenshot-search.png: the only way the tracked screenshot is rewritten).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.crawled import Crawled

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(crawled: Crawled):  # noqa: F811
    port = _free_port()
    allowed = crawled.server.base_url.split("//", 1)[1]
    env = dict(os.environ, WIKIHASH_DATABASE_URL=crawled.db_url, WIKIHASH_FETCH_TIMEOUT="10")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--port", str(port),
                             "--allow-host", allowed], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.trust_env = False
    deadline = time.monotonic() + 20
    while True:
        try:
            if session.get(base + "/api/stats", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"wikihash serve did not start: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_search_page_in_chromium(crawled: Crawled, served: str, tmp_path):  # noqa: F811
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    # A corpus picture used by articles on the wiki itself; a shared-repository file for the URL.
    name, = next(r for r in crawled.rows(
        "SELECT f.title FROM files f WHERE state = 'hashed' AND url LIKE %s"
        " AND (title LIKE '%%.jpg' OR title LIKE '%%.png') AND NOT low_information"
        " AND EXISTS (SELECT 1 FROM usages u"
        " WHERE u.file_id = f.file_id) AND title NOT LIKE 'Generated%%'"
        " ORDER BY (SELECT count(*) FROM usages u WHERE u.file_id = f.file_id) DESC, title",
        (crawled.server.base_url + "%",)))
    article = sorted(crawled.used[name])[0]
    upload = tmp_path / name.replace(" ", "_")
    upload.write_bytes(crawled.data(name))
    refused_url, = crawled.rows("SELECT url FROM files WHERE state = 'hashed' AND url LIKE %s"
                                " ORDER BY title LIMIT 1", (crawled.shared.base_url + "%",))[0]
    allowed_name, allowed_url = crawled.rows(
        "SELECT title, coalesce(thumb_url, url) FROM files f WHERE state = 'hashed'"
        " AND url LIKE %s AND sha1 <> (SELECT sha1 FROM files WHERE title = %s)"
        " AND EXISTS (SELECT 1 FROM usages u"
        " WHERE u.file_id = f.file_id) ORDER BY title LIMIT 1",
        (crawled.server.base_url + "%", name))[0]

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.goto(served + "/")
            page.wait_for_selector("#stats:not(:empty)")

            # Upload: the article using the image is listed, with its link on the wiki.
            page.set_input_files("#file", str(upload))
            link = page.locator("a.article", has_text=article).first
            link.wait_for(timeout=20_000)
            assert link.get_attribute("href").startswith(crawled.server.base_url + "/wiki/")
            page.locator(".match img.thumb").first.wait_for()
            page.wait_for_function("() => [...document.querySelectorAll('.match img.thumb')]"
                                   ".filter(i => i.src)"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            screenshot = Path(os.environ.get("WIKIHASH_SCREENSHOT") or tmp_path / "search.png")
            page.screenshot(path=str(screenshot), full_page=False)
            assert screenshot.stat().st_size > 0

            # A URL on a loopback address that is not allow-listed: refused as such.
            page.fill("#url", refused_url)
            page.click("#go")
            message = page.locator("#message.error")
            message.wait_for(timeout=20_000)
            assert "loopback" in message.inner_text()
            assert page.locator(".match").count() == 0

            # An invalid URL, which the browser blocks: the stale error goes (it stayed).
            page.fill("#url", "not a url")
            page.click("#go")
            page.wait_for_selector("#message", state="hidden", timeout=10_000)

            # The allow-listed wiki host: accepted, its file first.
            page.fill("#url", allowed_url)
            page.click("#go")
            page.locator(".match h2", has_text=allowed_name).first.wait_for(timeout=20_000)
            assert page.locator("#message.error").count() == 0
            first = page.locator(".match h2").first.inner_text()
            assert allowed_name in first and "same hash" in first

            # The nearest-count control: exactly that many cards, the summary says so.
            page.fill("#nearest", "3")
            page.click("#go")
            page.wait_for_function("() => document.querySelectorAll('.match').length === 3"
                                   " && document.getElementById('summary')", timeout=20_000)
            assert page.locator("#summary").inner_text().startswith("The 3 nearest files to")
            page.fill("#nearest", "")
            page.fill("#radius", "0")
            page.click("#go")
            page.wait_for_function("() => (document.getElementById('summary') || {})"
                                   ".textContent?.includes('within 0 bits')", timeout=20_000)
        finally:
            browser.close()
