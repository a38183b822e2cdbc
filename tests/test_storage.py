"""Migrations: applied in order, idempotent, and the schema keeps the tutorial's shape."""

import psycopg2
from click.testing import CliRunner

from pipeline import storage
from pipeline.cli import cli
from tests.conftest import database_url, sql_rows


def test_migrations_are_numbered_and_ordered():
    found = storage.migrations()
    assert found, "no migrations in pipeline/migrations/"
    assert [m.version for m in found] == sorted({m.version for m in found})


def test_db_init_creates_database_and_is_idempotent(make_database):
    # A database that does not exist yet: db init creates it.
    url = make_database(extension=False)
    sql_rows(database_url("postgres"), "SELECT 1")
    name = url.rsplit("/", 1)[1] + "_new"
    new_url = database_url(name)
    try:
        first = CliRunner().invoke(cli, ["db", "init", "--database-url", new_url])
        assert first.exit_code == 0, first.output
        assert "applied 001_initial" in first.output
        second = CliRunner().invoke(cli, ["db", "init", "--database-url", new_url])
        assert second.exit_code == 0, second.output
        assert "up to date" in second.output and "applied" not in second.output
        versions = sql_rows(new_url, "SELECT version FROM schema_migrations ORDER BY 1")
        assert [v for (v,) in versions] == [m.version for m in storage.migrations()]
    finally:
        conn = psycopg2.connect(database_url("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def test_no_create_refuses_missing_database():
    url = database_url("wikihash_test_surely_absent")
    result = CliRunner().invoke(cli, ["db", "init", "--no-create", "--database-url", url])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_hashes_view_has_the_tutorial_shape(db_url):
    storage.migrate(db_url)
    cols = sql_rows(
        db_url,
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'hashes' ORDER BY ordinal_position",
    )
    assert cols == [("id", "integer"), ("hash", "bigint"), ("url", "text")]
    sql_rows(db_url, "INSERT INTO pages (page_id, title, rev_id) VALUES (7, 'Tour Eiffel', 1)"
                   " RETURNING 1")
    sql_rows(db_url, "INSERT INTO files (title, sha1, state, dhash) VALUES"
                   " ('Tour.jpg', 'aa', 'hashed', -1), ('Other.png', 'bb', 'pending', NULL)"
                   " RETURNING 1")
    sql_rows(db_url, "INSERT INTO usages (page_id, file_id) SELECT 7, file_id FROM files"
                   " RETURNING 1")
    rows = sql_rows(db_url, "SELECT hash, url FROM hashes WHERE hash <@ (-2, 3)")
    assert rows == [(-1, "Tour_Eiffel")]


def test_dhash_index_is_used_by_the_tutorial_query(db_url):
    storage.migrate(db_url)
    plan = sql_rows(
        db_url,
        "SET enable_seqscan = off; EXPLAIN SELECT url FROM hashes WHERE hash <@ (0, 3)",
    )
    assert any("files_dhash_idx" in line for (line,) in plan), plan


def test_radius_search_uses_the_mih_index_and_nearest_the_bk_tree(db_url):
    storage.migrate(db_url)
    sql_rows(db_url, "INSERT INTO files (title, sha1, state, dhash) SELECT 'F' || g, 's' || g,"
                     " 'hashed', (g * 2654435761)::bigint FROM generate_series(1, 5000) g")
    sql_rows(db_url, "ANALYZE files")
    # (a table this small would be scanned; the choice between the two indexes is the point)
    radius = "\n".join(r for (r,) in sql_rows(
        db_url, "SET enable_seqscan = off;"
                " EXPLAIN SELECT file_id FROM files WHERE (dhash # 0) <@ (12345, 8)"))
    nearest = "\n".join(r for (r,) in sql_rows(
        db_url, "SET enable_seqscan = off;"
                " EXPLAIN SELECT file_id FROM files ORDER BY dhash <-> 12345 LIMIT 5"))
    assert "files_dhash_mih_idx" in radius, radius
    assert "files_dhash_idx" in nearest, nearest
