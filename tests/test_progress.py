"""The progress display: fits the width, rate and ETA from this crawl, says complete, and in logs
prints only meaningful changes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from pipeline import progress
from tests.conftest import sql_rows


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counts(hashed: int, pending: int, articles: int = 300, **other: int) -> dict:
    found = {"articles": articles, "hashed": hashed, "pending": pending, "failed": 0,
             "missing": 0, "unsupported": 0, **other}
    found["files"] = sum(found[s] for s in ("hashed", "pending", "failed", "missing",
                                           "unsupported"))
    return found


def test_rate_and_eta_come_from_this_crawls_own_progress():
    """The first ETA said 37 minutes for a crawl that ended 50 s later: it counted the last
    minute of the database, not what this crawl did."""
    clock = Clock()
    tracker = progress.Tracker(clock=clock)
    first = tracker.update(counts(0, 1000), walk_done=True)
    assert first.rate is None and first.eta is None
    for step in range(1, 11):
        clock.now += 1
        snap = tracker.update(counts(20 * step, 1000 - 20 * step), walk_done=True)
    assert snap.rate == pytest.approx(20.0)
    assert snap.eta == pytest.approx(800 / 20.0)
    assert "ETA 40s" in progress.line(snap, 120)


@pytest.mark.parametrize("width", [40, 80, 160])
def test_the_line_fits_the_width(width):
    clock = Clock()
    tracker = progress.Tracker(clock=clock)
    tracker.update(counts(0, 123456, failed=12, missing=3456, unsupported=789), False)
    clock.now += 5
    snap = tracker.update(counts(4567, 118889, failed=12, missing=3456, unsupported=789), False)
    text = progress.line(snap, width)
    assert len(text) <= width and "\n" not in text and "\r" not in text
    assert text.startswith("[") or width < 60
    if width >= 160:
        assert "12 failed, 3,456 missing, 789 unsupported" in text


def test_terminal_redraws_one_line_in_place_and_ends_complete():
    out = io.StringIO()
    shown = progress.Terminal(out)
    tracker = progress.Tracker(clock=Clock())
    shown.show(tracker.update(counts(1, 2), walk_done=True))
    shown.show(tracker.update(counts(3, 0), walk_done=True))
    shown.finish()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.count("\x1b[K") == 2 and text.endswith("\n")
    assert "complete: 3 files settled" in text.splitlines()[-1]


def test_log_lines_only_for_meaningful_changes():
    """Not one line every two seconds: the walk ending, a problem, each 10 %, complete."""
    out = io.StringIO()
    clock = Clock()
    shown = progress.LogLines(out, clock=clock)
    tracker = progress.Tracker(clock=clock)
    for hashed in range(0, 1001, 5):  # 200 readings, a second apart
        clock.now += 1
        shown.show(tracker.update(counts(hashed, 1000 - hashed), walk_done=True))
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 13, lines
    assert lines[-1].startswith("complete: 1,000 files")


def test_status_watch_exits_when_the_crawl_is_complete(db_url):
    from pipeline import storage

    storage.migrate(db_url)
    sql_rows(db_url, "INSERT INTO files (title, sha1, state, dhash) VALUES"
                     " ('A.png', 'a', 'hashed', 1), ('B.png', 'b', 'missing', NULL) RETURNING 1")
    sql_rows(db_url, "INSERT INTO crawl_state (key, value) VALUES ('walk', %s) RETURNING 1",
             ('{"done": true, "continue": null, "started": "2026-12-01T00:00:00Z"}',))
    env = {**os.environ, "WIKIHASH_DATABASE_URL": db_url}
    result = subprocess.run([sys.executable, "-m", "pipeline", "status", "--watch"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        "complete: 2 files settled · 0 articles · 1 missing"]
