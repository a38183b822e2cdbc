"""The search page's own parts: its icon, its radius and nearest-count controls, and a
low-information match that is not called the same image."""

from __future__ import annotations

from starlette.testclient import TestClient

from pipeline import web

STATIC = web.STATIC


def client() -> TestClient:
    app = web.create_app(web.WebSettings(database_url="postgresql://postgres@127.0.0.1:1/none",
                                         served_names=frozenset({"testserver"})))
    return TestClient(app, raise_server_exceptions=False)


def test_favicon_is_served():
    """It was a 404 on every page load."""
    response = client().get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.content.startswith(b"<svg")


def test_page_has_radius_and_nearest_controls_that_the_script_sends():
    page = client().get("/").text
    assert 'id="radius"' in page and 'id="nearest"' in page
    script = (STATIC / "app.js").read_text()
    assert 'body.append("nearest"' in script and 'body.append("max_distance"' in script


def test_a_low_information_match_is_not_badged_same_hash():
    script = (STATIC / "app.js").read_text()
    assert "match.distance === 0 && !match.low_information" in script
    assert "low-information hash" in script
