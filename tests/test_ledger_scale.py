"""The walk's ledger writes cost their batch, not the ledger (docs/scale.md, "What grew")."""


from pipeline import ledger
from pipeline.wiki import Article


def scans_of_files(cur) -> int:
    """Sequential scans of `files` in this transaction so far."""
    cur.execute("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'files'")
    return cur.fetchone()[0]


def test_a_batch_of_usages_probes_files_by_title_and_never_scans_them(conn):
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO files (title, state) SELECT 'F' || i, 'missing'"
                    " FROM generate_series(1, 20000) i")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ANALYZE files")
    conn.autocommit = False
    batch = [Article(i, f"P{i}", 1, (f"F{i}", f"F{i + 1}", f"F{i * 7 % 20000 + 1}"))
             for i in range(1, 501)]
    with conn, conn.cursor() as cur:
        ledger.upsert_pages(conn, batch)
        before = scans_of_files(cur)
        ledger.set_usages(conn, batch)
        # main's join of the batch's titles with files was planned, for a temporary table
        # the planner knows nothing of, as a hash of every file: one scan per batch.
        assert scans_of_files(cur) == before
        cur.execute("SELECT count(*) FROM usages")
        assert cur.fetchone()[0] == 1500
    # and again with a changed batch: removed usages go, kept ones stay, without a scan
    batch = [Article(a.page_id, a.title, 2, a.images[1:]) for a in batch]
    with conn, conn.cursor() as cur:
        before = scans_of_files(cur)
        ledger.set_usages(conn, batch)
        assert scans_of_files(cur) == before
        cur.execute("SELECT count(*) FROM usages u JOIN files f USING (file_id)"
                    " WHERE f.title = 'F1'")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM usages")
        assert cur.fetchone()[0] == 1000
