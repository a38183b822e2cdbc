"""The host side of ops/compose-smoke: the test wiki the containers crawl, and the checks that
read what they did. Runs in the project's virtual environment (tests/ importable).

  smoke.py serve DIR          the fake wiki and its shared repository on 127.0.0.1 (tests/wikis.py,
                              the small image pool of tests/data), and a control server; writes
                              DIR/wiki.json ({"api_url", "control_url"}) and serves until SIGTERM
  smoke.py get CONTROL PATH   one request to the control server; prints its answer, exits 1 on
                              a refusal. PATH is one of:
      /ledger?db=URL          does the ledger at URL equal the truth (tests/e2e/test_crawl.py)?
      /change                 apply a scripted batch of changes (tests/e2e/test_recrawl.py)
      /faults?api_delay=S&file_delay=S   slow the wiki's API and file responses down (seconds)
      /walks                  the walk's requests: how many started from the first article
  smoke.py flower URL USER:PASSWORD NAME...
                              every NAME is a worker Flower knows and that has succeeded tasks
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
# tests/e2e first: its test_recrawl.py, not the unit tests' tests/test_recrawl.py.
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e"), str(ROOT / "tests")]

import wikis  # noqa: E402
from fakewiki import FakeWikiServer  # noqa: E402
from test_crawl import assert_ledger_matches  # noqa: E402
from test_recrawl import apply_changes  # noqa: E402

from tests.conftest import sql_rows  # noqa: E402

# 1200 articles: three batches of the walk (500 a batch), so that it can be stopped between two.
ARTICLES = 1200
GENERATED = 120


class Control:
    """The wiki, its servers, and what the checks ask of them."""

    def __init__(self) -> None:
        # The small pool of tests/data: the same wiki on every machine, shared/ or not.
        wikis.CORPUS_IMAGES = wikis.SMALL_IMAGES
        self.wiki, self.commons, self.truth = wikis.build_wiki(
            articles=ARTICLES, generated=GENERATED, big_article_images=0)
        self.shared_server = FakeWikiServer(self.commons).start()
        self.server = FakeWikiServer(self.wiki).start()
        self.changed = False
        self.lock = threading.Lock()

    def stop(self) -> None:
        self.server.stop()
        self.shared_server.stop()

    def ledger(self, db: str) -> tuple[bool, str]:
        truth = (wikis.current_truth(self.wiki, corrupt={"Broken.jpg"}) if self.changed
                 else self.truth)
        counts = dict(sql_rows(db, "SELECT state, count(*) FROM files GROUP BY state"))
        pages = sql_rows(db, "SELECT count(*) FROM pages")[0][0]
        summary = (f"{pages} articles (truth {len(truth.articles)}), files "
                   + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        try:
            assert_ledger_matches(db, truth, self.server)
        except AssertionError as exc:
            return False, f"differs from the truth: {summary} {str(exc)[:200]}".strip()
        return True, f"equals the truth: {summary}"

    def change(self) -> tuple[bool, str]:
        with self.lock:
            names = apply_changes(self.wiki, self.commons)
            self.changed = True
        return True, "changed: " + ", ".join(f"{k} {v}" for k, v in sorted(names.items()))

    def faults(self, api_delay: float, file_delay: float) -> tuple[bool, str]:
        for server in (self.server, self.shared_server):
            server.faults.api_delay = api_delay
            server.faults.file_delay = file_delay
        return True, f"api_delay {api_delay} s, file_delay {file_delay} s"

    def walks(self) -> tuple[bool, str]:
        """The crawl's walk (allpages with images; the re-crawl walks revisions only): how many
        times it began at the first article, and how many requests went on from a checkpoint."""
        walk = [r for r in self.server.requests
                if r.kind == "generator:allpages" and "images" in r.params.get("prop", "")]
        fresh = sum(1 for r in walk if r.params.get("continue") == ""
                    and not any(k.endswith("continue") and k != "continue" for k in r.params))
        resumed = sum(1 for r in walk if "gapcontinue" in r.params)
        return True, json.dumps({"requests": len(walk), "from_the_start": fresh,
                                 "from_a_checkpoint": resumed})


def serve(directory: Path) -> None:
    control = Control()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            args = dict(parse_qsl(url.query))
            try:
                if url.path == "/ledger":
                    ok, text = control.ledger(args["db"])
                elif url.path == "/change":
                    ok, text = control.change()
                elif url.path == "/faults":
                    ok, text = control.faults(float(args.get("api_delay", 0)),
                                              float(args.get("file_delay", 0)))
                elif url.path == "/walks":
                    ok, text = control.walks()
                else:
                    ok, text = False, f"unknown path {url.path}"
            except Exception as exc:  # the check reports it; the server goes on
                ok, text = False, f"{type(exc).__name__}: {exc}"
            body = (text + "\n").encode()
            self.send_response(200 if ok else 409)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = {"api_url": control.server.api_url,
             "control_url": f"http://127.0.0.1:{httpd.server_address[1]}"}
    (directory / "wiki.json").write_text(json.dumps(state))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    try:
        httpd.serve_forever(0.2)
    finally:
        httpd.server_close()
        control.stop()


def get(control_url: str, path: str) -> int:
    session = requests.Session()
    session.trust_env = False
    answer = session.get(control_url + path, timeout=300)
    print(answer.text.strip())
    return 0 if answer.ok else 1


def flower(url: str, auth: str, names: list[str]) -> int:
    """Each of `names` is a worker in Flower's /api/workers with succeeded tasks."""
    session = requests.Session()
    session.trust_env = False
    user, _, password = auth.partition(":")
    workers = session.get(url + "/api/workers", params={"refresh": "1"}, auth=(user, password),
                          timeout=60).json()
    done = {}
    for name in names:
        totals = ((workers.get(name) or {}).get("stats") or {}).get("total") or {}
        done[name] = sum(totals.values())
    print(", ".join(f"{name}: {n} tasks" for name, n in done.items())
          + f" ({len(workers)} workers known to Flower)")
    return 0 if len(set(names)) == len(names) and all(done.values()) else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(Path(argv[1]))
        return 0
    if argv[:1] == ["get"] and len(argv) == 3:
        return get(argv[1], argv[2])
    if argv[:1] == ["flower"] and len(argv) >= 4:
        return flower(argv[1], argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
