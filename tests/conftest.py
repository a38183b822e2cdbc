"""Shared fixtures: real PostgreSQL databases made per test and dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data"  # the images the tests use, with their licences

# The server the tests create their databases on; CI starts one on 127.0.0.1:5432.
ADMIN_URL = os.environ.get(
    "WIKIHASH_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("WIKIHASH_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def database_url(name: str) -> str:
    """ADMIN_URL with its database replaced by `name`."""
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path="/" + name))


def sql_rows(url: str, query: str, args: tuple | dict = ()) -> list[tuple]:
    """Run one statement in its own transaction on `url`; its rows (or [] when it has none)."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def admin_execute(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def make_database() -> Iterator[Callable[..., str]]:
    """A factory: `make_database(extension=True)` creates an empty database and returns its URL."""
    made: list[str] = []

    def make(extension: bool = True) -> str:
        name = f"wikihash_test_{uuid.uuid4().hex[:12]}"
        admin_execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        url = database_url(name)
        if extension:
            conn = psycopg2.connect(url)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION bktree")
            conn.close()
        return url

    yield make
    for name in made:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(make_database: Callable[..., str]) -> str:
    """A fresh database with the bktree extension, dropped after the test."""
    return make_database()


@pytest.fixture
def conn(db_url: str) -> Iterator:
    """A connection to a fresh, migrated ledger (`db_url`), closed after the test."""
    from pipeline import storage

    storage.migrate(db_url)
    conn = psycopg2.connect(db_url)
    yield conn
    conn.close()


@pytest.fixture
def corpus() -> Path:
    """The image corpus shipped in tests/data (images/ and MANIFEST.tsv with their licences)."""
    return CORPUS


@pytest.fixture(scope="session")
def crawled(request: pytest.FixtureRequest):
    """A small fake wiki crawled by real workers, once per session (tests/crawled.py)."""
    from tests.crawled import crawl

    return crawl(request)
