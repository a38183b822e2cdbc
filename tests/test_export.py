"""Export round trip: a crawled fake wiki exported, both dumps restored into fresh databases.

The tutorial's own query on the restored `hashes.sql` must return, for every image used, the same
articles as `wikihash search --plain --max-distance 3`; the restored `wikihash.dump` must search
exactly like the source.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from pipeline import export, imaging, search, storage
from pipeline.cli import cli
from tests.conftest import sql_rows
from tests.crawled import Crawled

pytestmark = pytest.mark.skipif(shutil.which("psql") is None or shutil.which("pg_restore") is None,
                                reason="needs psql and pg_restore (postgresql-client)")




def test_export_round_trip(crawled: Crawled, make_database, tmp_path):  # noqa: F811
    out = tmp_path / "dump"
    result = CliRunner().invoke(cli, ["export", "--out", str(out)],
                                env={"WIKIHASH_DATABASE_URL": crawled.db_url})
    assert result.exit_code == 0, result.output
    assert "hashes.sql" in result.stderr and "pg_dump" in result.stderr  # progress on stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS", "hashes.sql", "manifest.json", "wikihash.dump"]

    # SHA256SUMS in sha256sum format, and it verifies.
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=out, check=True)

    manifest = json.loads((out / "manifest.json").read_text())
    hashes_rows = sql_rows(crawled.db_url, "SELECT count(*) FROM hashes")[0][0]
    assert manifest["rows"]["hashes"] == hashes_rows > 0
    # Exact counts, though only usages is counted (pages and files read the ledger's counters,
    # the hashes view is the rows hashes.sql holds).
    for table in ("pages", "files", "usages"):
        assert manifest["rows"][table] == sql_rows(
            crawled.db_url, f"SELECT count(*) FROM {table}")[0][0] > 0, table
    assert manifest["files_by_state"] == dict(sql_rows(
        crawled.db_url, "SELECT state, count(*) FROM files GROUP BY state"))
    assert manifest["wiki"]["server"] == crawled.server.base_url
    assert manifest["last_crawl"] and manifest["schema_version"] >= 1
    assert "dhash" in manifest["hash"]

    # hashes.sql has the tutorial's shape and loads with psql into a database without bktree.
    text = (out / "hashes.sql").read_text()
    assert "CREATE EXTENSION IF NOT EXISTS bktree;" in text
    assert "CREATE TABLE hashes(id integer, hash bigint, url text);" in text
    assert "COPY hashes (id, hash, url) FROM stdin;" in text
    assert "USING bktree_mih (hash)" in text
    plain = make_database(extension=False)
    with (out / "hashes.sql").open("rb") as sql_file:
        subprocess.run(["psql", "--quiet", "-v", "ON_ERROR_STOP=1", plain], stdin=sql_file,
                       check=True, capture_output=True)
    assert sql_rows(plain, "SELECT count(*) FROM hashes")[0][0] == hashes_rows
    assert sorted(sql_rows(plain, "SELECT id, hash, url FROM hashes")) == sorted(
        sql_rows(crawled.db_url, "SELECT id, hash, url FROM hashes"))
    # In hash order: one hash's rows on adjacent pages of the restored table.
    copied = text.split("FROM stdin;\n", 1)[1].split("\\.\n", 1)[0].splitlines()
    assert [int(row.split("\t")[1]) for row in copied] == sorted(
        int(row.split("\t")[1]) for row in copied)
    assert sql_rows(plain, "SELECT indexname FROM pg_indexes WHERE tablename = 'hashes'") == [
        ("hashes_hash_idx",)]

    # wikihash.dump restores into a fresh database that has the extension.
    full = make_database(extension=True)
    restored = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "--dbname", full,
                               str(out / "wikihash.dump")], capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr
    for table in ("pages", "files", "usages", "wiki_info", "crawl_state", "schema_migrations"):
        assert sql_rows(full, f"SELECT count(*) FROM {table}") == sql_rows(
            crawled.db_url, f"SELECT count(*) FROM {table}")

    # The tutorial's query on hashes.sql == wikihash search (plain, radius 3) on the source,
    # and search on the restored full dump == search on the source, for every image used.
    with storage.connection(crawled.db_url) as source, storage.connection(full) as copy:
        for name in sorted(crawled.used):
            data = crawled.data(name)
            h = imaging.hash_bytes(data).int64
            tutorial = {u for (u,) in sql_rows(plain, "SELECT url FROM hashes"
                                                   " WHERE hash <@ (%s, 3)", (h,))}
            ours = search.search_bytes(source, data, max_distance=3, probe=("original",))
            assert tutorial == {a.title.replace(" ", "_") for m in ours.matches
                                for a in m.articles}, name
            again = search.search_bytes(copy, data, max_distance=3, probe=("original",))
            assert again.to_dict() == ours.to_dict()


def test_export_fails_cleanly_without_a_database(tmp_path):
    result = CliRunner().invoke(cli, ["export", "--out", str(tmp_path / "x"), "--database-url",
                                      "postgresql://postgres@127.0.0.1:1/none"])
    assert result.exit_code == 1
    assert "pg_dump failed" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x" / "wikihash.dump").exists()
    assert export.find_pg_dump()
