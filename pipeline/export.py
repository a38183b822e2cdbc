"""`wikihash export`: the index as files others can load. Step "export" in docs/architecture.md.

Into one directory:

1. `wikihash.dump`: `pg_dump -Fc` of the whole database, for `pg_restore` into a database that
   has the bktree extension installed;
2. `hashes.sql`: plain SQL shaped exactly like the source tutorial's distribution: the extension,
   `CREATE TABLE hashes(id integer, hash bigint, url text)`, the rows of the `hashes` view
   streamed through `COPY ... FROM stdin`, then the multi-index hashing index (bktree's
   `bktree_mih`, the one the ledger's view answers the tutorial's query with);
   `psql DB < hashes.sql`. The rows come in hash order, so that the rows of one hash (an
   icon's: up to hundreds of thousands; a file's: each article using it) lie on adjacent pages
   of the restored table and the index is built from sorted input;
3. `manifest.json`: exact row counts (as `_manifest` says), the wiki, the crawl time, the hash
   definition, schema version;
4. `SHA256SUMS`: `sha256sum -c` format, over the three files above.

Files are written under a temporary name and renamed when complete, so a killed export leaves no
file that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pipeline import __version__, ledger, storage, timestamps
from pipeline.errors import StorageError, WikihashError

__all__ = ["HASH_DEFINITION", "ExportResult", "export", "find_pg_dump"]

HASH_DEFINITION = (
    "imagehash.dhash (8x8, 64 bits) of the file's thumbnail (or original when no thumbnail),"
    " decoded with Pillow (SVG rendered by cairosvg, longest side 512 px), EXIF-oriented,"
    " transparency flattened onto white (onto black when white leaves a blank image), 16-bit"
    " scaled to 8; stored as the signed 64-bit integer of its 16 hex digits"
)
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
               "/usr/lib/postgresql/17/bin")
COPY_CHUNK = 1 << 20  # bytes per progress step while streaming COPY
# The end of hashes.sql: multi-index hashing, as the ledger's view. The tutorial's SP-GiST
# BK-tree opens a share of its tree that grows with the rows (one per usage), not the distinct
# hashes: at 30M rows r3 24 ms and r6 481 ms against 0.27 and 0.88 ms here; the build costs
# 143 s of CPU against 125 s (docs/bktree-benchmarks.md, run 8). bktree_mih needs bktree 1.1.
INDEX_SQL = (b"CREATE INDEX hashes_hash_idx ON hashes USING bktree_mih (hash);\n"
             b"ANALYZE hashes;\n")


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    files: dict[str, int]  # file name -> bytes
    manifest: dict


def find_pg_dump() -> str:
    """pg_dump from PATH, else from the usual Debian directories."""
    found = shutil.which("pg_dump")
    if found:
        return found
    for directory in PG_BIN_DIRS:
        candidate = Path(directory) / "pg_dump"
        if candidate.exists():
            return str(candidate)
    raise WikihashError("pg_dump not found: install postgresql-client")


def export(database_url: str, out: Path,
           progress: Callable[[str], None] = lambda _: None) -> ExportResult:
    """Write the four files into `out` (created if needed); `progress` gets one line per step."""
    out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}

    progress("pg_dump -Fc of the whole database -> wikihash.dump")
    _pg_dump(database_url, out / "wikihash.dump")
    sizes["wikihash.dump"] = (out / "wikihash.dump").stat().st_size
    progress(f"wikihash.dump: {sizes['wikihash.dump']:,} bytes")

    with storage.connection(database_url) as conn:
        # One snapshot for the counts and the rows, while a crawl may be writing.
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        manifest = _manifest(conn)
        usages = manifest["rows"]["usages"]
        progress(f"hashes.sql: a row per usage of a hashed file (of {usages:,} usages)")
        manifest["rows"]["hashes"] = _hashes_sql(conn, out / "hashes.sql", usages, progress)
    sizes["hashes.sql"] = (out / "hashes.sql").stat().st_size

    _write_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    sizes["manifest.json"] = (out / "manifest.json").stat().st_size
    sums = "".join(f"{_sha256(out / name)}  {name}\n"
                   for name in ("wikihash.dump", "hashes.sql", "manifest.json"))
    _write_atomic(out / "SHA256SUMS", sums)
    sizes["SHA256SUMS"] = (out / "SHA256SUMS").stat().st_size
    progress("SHA256SUMS and manifest.json written")
    return ExportResult(out, sizes, manifest)


def without_password(database_url: str) -> tuple[str, dict[str, str]]:
    """`database_url` without its password (authority or `?password=`), and the environment
    that carries it to libpq instead (PGPASSWORD): a command line is readable by every local
    user in /proc, a process's environment only by its owner."""
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    password = unquote(parts.password) if parts.password is not None else None
    kept = [(key, value) for key, value in query if key != "password"]
    if len(kept) != len(query):
        password = dict(query)["password"]
    netloc = parts.netloc
    if parts.password is not None:
        user, host = netloc.rsplit("@", 1)
        netloc = user.split(":", 1)[0] + "@" + host
    clean = urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept)))
    return clean, ({"PGPASSWORD": password} if password is not None else {})


def _pg_dump(database_url: str, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    url, secret = without_password(database_url)
    command = [find_pg_dump(), "--format=custom", "--no-owner", "--no-privileges",
               f"--file={partial}", f"--dbname={url}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=24 * 3600,
                              env={**os.environ, **secret})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StorageError(f"pg_dump failed: {exc}") from exc
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise StorageError(f"pg_dump failed: {last}")
    os.replace(partial, target)


def _manifest(conn) -> dict:
    """The manifest but for `rows.hashes`, which `export` sets to the rows the COPY of hashes.sql
    wrote (one line each in COPY's text format, which escapes newlines in values). Every count
    is exact, in the export's snapshot: pages and files from the ledger's counters
    (migrations/005: a few rows), usages by count(*) (no counter: one index or heap scan), the
    hashes view by its COPY (the view joins the three: counting it too ran that join twice)."""
    by_state = ledger.files_by_state(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(n), 0)::bigint FROM ledger_counts"
                    " WHERE name = 'articles'")
        pages = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM usages")
        usages = cur.fetchone()[0]
    rows = {"pages": pages, "files": sum(by_state.values()), "usages": usages}
    return {
        "format": 1,
        "exported_at": timestamps.now(),
        "wikihash_version": __version__,
        "schema_version": storage.schema_version(conn),
        "wiki": ledger.wiki_facts(conn),
        "last_crawl": ledger.get_state(conn, ledger.LAST_CRAWL),
        "rows": rows,
        "files_by_state": {k: v for k, v in sorted(by_state.items()) if v},
        "hash": HASH_DEFINITION,
        "files": {
            "wikihash.dump": "pg_dump -Fc of the whole database; pg_restore into a database"
                             " with the bktree extension",
            "hashes.sql": "the tutorial's hashes(id, hash, url) table; psql DB < hashes.sql",
        },
    }


class _Progress:
    """A file-like sink for copy_expert that reports every COPY_CHUNK bytes."""

    def __init__(self, file, total: int, progress: Callable[[str], None]) -> None:
        self.file = file
        self.total = total
        self.progress = progress
        self.rows = 0
        self.bytes = 0
        self.next_report = COPY_CHUNK

    def write(self, data) -> int:
        if isinstance(data, str):
            data = data.encode()
        self.file.write(data)
        self.rows += data.count(b"\n")
        self.bytes += len(data)
        if self.bytes >= self.next_report:
            self.next_report += COPY_CHUNK
            share = f" ({100 * self.rows / self.total:.0f}%)" if self.total else ""
            self.progress(f"hashes.sql: {self.rows:,} rows{share}")
        return len(data)


def _hashes_sql(conn, target: Path, total: int, progress: Callable[[str], None]) -> int:
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as file:
        file.write(
            b"-- wikihash export: the source tutorial's hashes table.\n"
            b"-- Load with: psql DBNAME < hashes.sql (needs the bktree extension, 1.1 or later)\n"
            b"-- url is the article title with underscores; hash is dhash as a signed int64.\n"
            b"SET client_encoding = 'UTF8';\n"
            b"CREATE EXTENSION IF NOT EXISTS bktree;\n"
            b"CREATE TABLE hashes(id integer, hash bigint, url text);\n"
            b"COPY hashes (id, hash, url) FROM stdin;\n")
        sink = _Progress(file, total, progress)
        with conn.cursor() as cur:
            cur.execute("SET LOCAL work_mem = '256MB'")  # the sort by hash
            cur.copy_expert("COPY (SELECT id, hash, url FROM hashes ORDER BY hash, id)"
                            " TO STDOUT", sink)
        file.write(b"\\.\n\n" + INDEX_SQL)
    os.replace(partial, target)
    progress(f"hashes.sql: {sink.rows:,} rows, {target.stat().st_size:,} bytes")
    return sink.rows


def _write_atomic(target: Path, text: str) -> None:
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text)
    os.replace(partial, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
