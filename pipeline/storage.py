"""PostgreSQL access: connections, numbered migrations, and the status counts.

The ledger's rows are written by `pipeline.ledger`; this module owns the schema.
Migrations are the files `pipeline/migrations/NNN_name.sql`, shipped in the package (a wheel
carries them), applied in order, each in its own transaction, under an advisory lock so that
two `wikihash db init` at once cannot race. The bktree extension they need is the server's
(`sql/bktree`, installed with `make install`); where it is missing, `migrate` says so.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from pipeline.errors import StorageError

SQL_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x77696B68  # "wikh": the advisory lock taken while migrating

Connection = psycopg2.extensions.connection
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The numbered migrations in `sql_dir`, in order."""
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.stem, path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StorageError(f"two migrations share a number in {sql_dir}")
    return found


# PostgreSQL unreachable, restarting or shut down under us: waiting and reconnecting may cure it.
# Anything else psycopg2 raises (a refused statement, bad data) will fail the same way again.
_TRANSIENT = (psycopg2.OperationalError, psycopg2.InterfaceError)


def storage_error(exc: psycopg2.Error, what: str = "") -> StorageError:
    """The project's error for one of psycopg2's: the one place that mapping is made."""
    message = f"{what}: {_first_line(exc)}" if what else _first_line(exc)
    return StorageError(message, retryable=isinstance(exc, _TRANSIENT))


@contextlib.contextmanager
def map_errors(what: str = "") -> Iterator[None]:
    """Turn psycopg2's errors raised in the body into `StorageError`."""
    try:
        yield
    except psycopg2.Error as exc:
        raise storage_error(exc, what) from exc


def mapped(func: Callable[P, T]) -> Callable[P, T]:
    """Decorate a function that talks to PostgreSQL so that it raises only `StorageError`."""
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with map_errors():
            return func(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """`conn` in a transaction: committed on success, rolled back on error; psycopg2's errors
    (the commit's included) become `StorageError`."""
    with map_errors(), conn:
        yield conn


def connect(url: str, **kwargs) -> Connection:
    """A psycopg2 connection to `url`; a failure becomes `StorageError`."""
    try:
        return psycopg2.connect(url, connect_timeout=10, **kwargs)
    except psycopg2.Error as exc:
        raise storage_error(exc, "cannot connect to PostgreSQL") from exc


@contextlib.contextmanager
def connection(url: str) -> Iterator[Connection]:
    """A connection that commits on success, rolls back on error, and closes."""
    conn = connect(url)
    try:
        with transaction(conn):
            yield conn
    finally:
        conn.close()


def create_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True if it was created."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise StorageError("the database URL names no database")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = connect(admin)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    except psycopg2.Error as exc:
        raise StorageError(f"cannot create database {name}: {_first_line(exc)}") from exc
    finally:
        conn.close()


def database_exists(url: str) -> bool:
    try:
        connect(url).close()
    except StorageError as exc:
        if "does not exist" in str(exc):
            return False
        raise
    return True


def applied_versions(conn: Connection) -> set[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return set()
        cur.execute("SELECT version FROM schema_migrations")
        return {row[0] for row in cur.fetchall()}


def schema_version(conn: Connection) -> int:
    """The highest migration applied, 0 for an empty database."""
    return max(applied_versions(conn), default=0)


def migrate(url: str, *, create: bool = True, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Bring the database at `url` up to date; returns the migrations it applied.

    Idempotent: a second run applies nothing. With `create`, a missing database is created.
    """
    if create and not database_exists(url):
        create_database(url)
    applied: list[Migration] = []
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for migration in migrations(sql_dir):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                if migration.version in applied_versions(conn):
                    continue
                cur.execute(migration.path.read_text())
                cur.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration)
    except psycopg2.Error as exc:
        if "bktree" in str(exc) and ("control file" in str(exc) or "not available" in str(exc)
                                     or "does not exist" in str(exc)):
            raise StorageError(
                "the bktree extension is not installed on this PostgreSQL server: build and"
                " install it from the source tree (make -C sql/bktree install, as the user"
                " that owns PostgreSQL's directories), then run `wikihash db init` again;"
                f" the server said: {_first_line(exc)}", retryable=False) from exc
        raise StorageError(f"migration failed: {_first_line(exc)}") from exc
    finally:
        conn.close()
    return applied


def require_prepared(url: str) -> None:
    """Raise StorageError in one line, saying what to run, unless `wikihash db init` has
    prepared the database at `url` with every migration this version has."""
    from pipeline.config import SETTINGS, mask

    shown = mask(next(s for s in SETTINGS if s.name == "database_url"), url)
    try:
        conn = connect(url)
    except StorageError as exc:
        if "does not exist" in str(exc):
            raise StorageError(f"the database {shown} does not exist: run `wikihash db init`"
                               " (it creates the database; ops/up runs it)") from None
        raise
    try:
        with conn:
            missing = [m.name for m in migrations() if m.version not in applied_versions(conn)]
    except psycopg2.Error as exc:
        raise StorageError(_first_line(exc)) from exc
    finally:
        conn.close()
    if missing:
        what = "has not been prepared" if len(missing) == len(migrations()) else \
            f"lacks the migration{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        raise StorageError(f"the database {shown} {what}: run `wikihash db init`")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
