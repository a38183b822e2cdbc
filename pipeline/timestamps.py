"""Timestamps as MediaWiki writes them (`2026-11-27T08:00:00Z`, UTC), the one format the
ledger's crawl state, the change feed and the export's manifest use."""

from __future__ import annotations

import datetime as dt

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> str:
    """The current time, UTC, to the second."""
    return dt.datetime.now(dt.UTC).strftime(FORMAT)


def parse(timestamp: str) -> dt.datetime:
    """A timestamp in `FORMAT` as an aware datetime."""
    return dt.datetime.strptime(timestamp, FORMAT).replace(tzinfo=dt.UTC)
