"""`wikihash duplicates`: clusters equal brute-force connected components (real PostgreSQL),
the stored result and its pages, through the CLI and real HTTP."""

from __future__ import annotations

import csv
import io
import json
import random
import time
from itertools import combinations

import numpy as np
import psycopg2
import pytest
from click.testing import CliRunner

from pipeline import duplicates, imaging, storage, web
from pipeline.cli import cli
from tests.liveweb import Live


def _flip(h: int, bits: int, rng: random.Random) -> int:
    for b in rng.sample(range(64), bits):
        h ^= 1 << b
    return h - (1 << 64) if h >= 1 << 63 else h


def _hashes(rng: random.Random) -> list[int]:
    """Random hashes, clusters of near copies, exact duplicates and low-information hashes."""
    out = [rng.getrandbits(64) - (1 << 63) for _ in range(300)]
    for _ in range(40):  # clusters: chains of small flips, some beyond D from the seed
        h = rng.getrandbits(64) - (1 << 63)
        for _ in range(rng.randint(1, 6)):
            h = _flip(h & ((1 << 64) - 1), rng.randint(0, 5), rng)
            out.append(h)
    out += out[:10]  # exact duplicates
    out += [0, 0, -1, -1, 1, 3, -2]  # low information: would join each other
    rng.shuffle(out)
    return out


def _load(url: str, hashes: list[int]) -> dict[int, int]:
    storage.migrate(url)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO pages (page_id, title) SELECT g, 'Page ' || g"
                    " FROM generate_series(1, 30) g")
        ids = {}
        for i, h in enumerate(hashes):
            cur.execute("INSERT INTO files (title, state, dhash, low_information, repo, size,"
                        " sha1) VALUES (%s, 'hashed', %s, %s, 'local', %s, %s)"
                        " RETURNING file_id",
                        (f"F{i}.jpg", h, imaging.is_low_information(h), 100 + i, f"{i:040x}"))
            ids[cur.fetchone()[0]] = h
        cur.execute("INSERT INTO files (title) VALUES ('Pending.jpg')")  # no hash: left out
        first = min(ids)
        cur.execute("INSERT INTO usages (page_id, file_id) SELECT g, %s"
                    " FROM generate_series(1, 25) g", (first,))
    return ids


def _brute(ids: dict[int, int], d: int, min_size: int) -> list[list[int]]:
    good = sorted(i for i, h in ids.items() if not imaging.is_low_information(h))
    pairs = [(a, b) for x, a in enumerate(good) for b in good[x + 1:]
             if ((ids[a] ^ ids[b]) & ((1 << 64) - 1)).bit_count() <= d]
    # independent of UnionFind: a breadth-first walk over an adjacency list
    adj: dict[int, set[int]] = {}
    for a, b in pairs:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    seen: set[int] = set()
    comps = []
    for start in adj:
        if start in seen:
            continue
        comp, todo = [], [start]
        seen.add(start)
        while todo:
            x = todo.pop()
            comp.append(x)
            for y in adj[x] - seen:
                seen.add(y)
                todo.append(y)
        if len(comp) >= min_size:
            comps.append(sorted(comp))
    return sorted(comps, key=lambda c: (-len(c), c[0]))


def test_union_find_components():
    assert duplicates.clusters_from_edges([(1, 2), (3, 4), (2, 3), (7, 8)]) == [[1, 2, 3, 4],
                                                                               [7, 8]]
    assert duplicates.clusters_from_edges([(1, 2), (5, 6), (6, 9)], min_size=3) == [[5, 6, 9]]


@pytest.mark.parametrize("d", range(0, 9))
def test_every_pair_within_d_shares_the_exact_blocks_of_a_table(d):
    """The pigeonhole: for every way of spreading d differing bits over the blocks, some
    table's exact blocks hold none of them (checked on every subset of blocks hit)."""
    for n in (10, 10_000, 10_000_000):
        tables = duplicates.plan_tables(d, n)
        blocks = sorted({b for t in tables for b in t})
        assert sum(w for _, w in blocks) == 64
        exact = [set(t[:len(t) - d]) if d else set(t) for t in tables]
        for hit in combinations(blocks, min(d, len(blocks))):
            assert any(not (e & set(hit)) for e in exact), (d, n, hit)


def _components(hashes: np.ndarray, d: int) -> list[list[int]]:
    unique, _, label = duplicates.clusters_of_hashes(hashes, d)
    groups: dict[int, list[int]] = {}
    for i, root in enumerate(label.tolist()):
        groups.setdefault(root, []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def test_components_of_hashes_match_brute_force_with_edge_values():
    rng = np.random.default_rng(7)
    base = rng.integers(-2 ** 63, 2 ** 63 - 1, 400, dtype=np.int64, endpoint=True)
    extremes = np.array([0, -1, 1, -2 ** 63, 2 ** 63 - 1, -2 ** 63 + 1, 2 ** 63 - 2],
                        dtype=np.int64)
    near = []
    for h in base[:150].view(np.uint64).tolist():  # chains of 1-4 bit flips
        for _ in range(3):
            for b in rng.choice(64, rng.integers(1, 5), replace=False).tolist():
                h ^= 1 << b
            near.append(h)
    hashes = np.concatenate([base, extremes, np.array(near, np.uint64).view(np.int64),
                             base[:20]])
    unique = np.unique(hashes.view(np.uint64))
    close = np.bitwise_count(unique[:, None] ^ unique[None, :])
    for d in range(0, 9):
        a, b = np.nonzero(np.triu(close <= d, 1))
        want = duplicates.clusters_from_edges(zip(a.tolist(), b.tolist(), strict=True))
        assert _components(hashes, d) == want, d
    # the extremes alone, 1 bit apart: 0, 1, INT64_MIN, INT64_MIN + 1 (the sign bit and the
    # lowest); -1, INT64_MAX, INT64_MAX - 1
    assert [len(g) for g in _components(extremes, 1)] == [4, 3]
    assert _components(extremes, 0) == []


def test_clusters_match_brute_force(db_url):
    rng = random.Random(14)
    ids = _load(db_url, _hashes(rng))
    with storage.connection(db_url) as conn:
        for d in (0, 2, 4, 6, 8):
            result = duplicates.find_clusters(conn, max_distance=d)
            for min_size in (2, 3):
                want = _brute(ids, d, min_size)
                assert want, (d, min_size)
                assert list(result.clusters(min_size)) == want, (d, min_size)
        result = duplicates.find_clusters(conn, max_distance=4)
        clusters = list(duplicates.described(conn, result))
    low = {i for i, h in ids.items() if imaging.is_low_information(h)}
    listed = {f.file_id for c in clusters for f in c.files}
    assert listed and not listed & low
    assert [c.rank for c in clusters] == list(range(1, len(clusters) + 1))
    assert [len(c.files) for c in clusters] == [c.size for c in clusters]
    first = min(ids)
    file = next((f for c in clusters for f in c.files if f.file_id == first), None)
    if file is not None:
        assert file.article_count == 25
        assert len(file.articles) == duplicates.ARTICLES_PER_FILE
        assert file.articles == sorted(file.articles)


def test_an_empty_ledger_has_no_clusters(db_url):
    storage.migrate(db_url)
    with storage.connection(db_url) as conn:
        result = duplicates.find_clusters(conn)
        assert result.files == 0 and list(result.clusters()) == []
        duplicates.store(conn, result)
        page = duplicates.stored_page(conn)
    assert page.computed_at is not None and page.total == 0 and page.clusters == []


def test_stored_pages_follow_the_ranks_and_say_when_stale(db_url):
    ids = _load(db_url, _hashes(random.Random(9)))
    want = _brute(ids, 4, 2)
    with storage.connection(db_url) as conn:
        page = duplicates.stored_page(conn)
        assert page.computed_at is None and page.clusters == [] and not page.stale
        duplicates.store(conn, duplicates.find_clusters(conn, max_distance=4))
        duplicates.store(conn, duplicates.find_clusters(conn, max_distance=4))  # replaces
        got, offset = [], 0
        while True:
            page = duplicates.stored_page(conn, offset=offset, limit=7, files_per_cluster=3)
            assert page.total == len(want) and not page.stale
            got += page.clusters
            answer = page.to_dict()
            if answer["next_offset"] is None:
                break
            offset = answer["next_offset"]
        assert [c.rank for c in got] == list(range(1, len(want) + 1))
        assert [c.size for c in got] == [len(g) for g in want]
        assert [[f.file_id for f in c.files] for c in got] == [g[:3] for g in want]
        three = duplicates.stored_page(conn, min_size=3, limit=100)
        assert three.total == len(_brute(ids, 4, 3))
        assert all(c.size >= 3 for c in three.clusters)
        assert duplicates.stored_page(conn, max_distance=2).computed_at is None
        with pytest.raises(ValueError):
            duplicates.stored_page(conn, limit=duplicates.MAX_PAGE + 1)
    with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO files (title, state, dhash, low_information)"
                    " VALUES ('New.jpg', 'hashed', 12345678901, false)")
    with storage.connection(db_url) as conn:
        page = duplicates.stored_page(conn)
    assert page.stale and page.hashed_files_now == page.hashed_files_then + 1


def test_probe_free_plan_reads_the_table_once(db_url):
    """find_clusters reads the hashes by COPY, not by index probes per file: two statements
    over files whatever the ledger's size."""
    storage.migrate(db_url)
    with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO files (title, state, dhash, low_information)"
                    " SELECT 'F' || g, 'hashed', (random() * 2 ^ 62)::bigint * 2 - g % 2, false"
                    " FROM generate_series(1, 20000) g")
        cur.execute("SELECT pg_stat_reset()")
    with storage.connection(db_url) as conn:
        result = duplicates.find_clusters(conn)
    time.sleep(1)  # the statistics collector
    with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables"
                    " WHERE relname = 'files'")
        seq, idx = cur.fetchone()
    assert result.files == 20000
    assert seq == 2 and idx == 0, (seq, idx)


def test_cli_duplicates(db_url):
    ids = _load(db_url, _hashes(random.Random(3)))
    want = _brute(ids, 4, 2)
    runner = CliRunner()
    out = runner.invoke(cli, ["duplicates", "--database-url", db_url, "--json"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.output.splitlines()]
    assert [[f["file_id"] for f in c["files"]] for c in lines] == want
    assert lines[0]["files"][0]["hash"] == imaging.int64_to_hex(ids[want[0][0]])
    out = runner.invoke(cli, ["duplicates", "--database-url", db_url, "--csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert len(rows) == sum(len(c) for c in want)
    assert rows[0]["cluster"] == "1" and rows[0]["sha1"]
    out = runner.invoke(cli, ["duplicates", "--database-url", db_url, "--min-size", "3"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"{len(_brute(ids, 4, 3))} clusters")
    out = runner.invoke(cli, ["duplicates", "--database-url", db_url, "--refresh",
                              "--max-distance", "2"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"{len(_brute(ids, 2, 2)):,} clusters within 2 bits")
    with storage.connection(db_url) as conn:  # both radii stored by the runs above
        assert duplicates.stored_page(conn, max_distance=2).total == len(_brute(ids, 2, 2))
        assert duplicates.stored_page(conn, max_distance=4).total == len(want)
    out = runner.invoke(cli, ["duplicates", "--database-url", db_url, "--max-distance", "9"])
    assert out.exit_code == 2 and "9" in out.output
    out = runner.invoke(cli, ["duplicates", "--database-url", db_url, "--json", "--refresh"])
    assert out.exit_code == 2
    out = runner.invoke(cli, ["duplicates", "--database-url",
                              "postgresql://postgres@127.0.0.1:5432/no_such_db_wikihash"])
    assert out.exit_code == 1 and out.output.startswith("Error:")


def test_api_duplicates_over_http(db_url):
    ids = _load(db_url, _hashes(random.Random(5)))
    want = _brute(ids, 3, 2)
    live = Live(web.create_app(web.WebSettings(database_url=db_url)))
    try:
        status, body = live.get("/api/duplicates?max_distance=3")
        assert status == 200 and body["computed_at"] is None and body["clusters"] == []
        assert CliRunner().invoke(cli, ["duplicates", "--database-url", db_url, "--refresh",
                                        "--max-distance", "3"]).exit_code == 0
        status, body = live.get("/api/duplicates?max_distance=3&limit=5")
        assert status == 200, body
        assert body["computed_at"] and not body["stale"] and body["total"] == len(want)
        assert body["available"] == [3]
        assert [[f["file_id"] for f in c["files"]] for c in body["clusters"]] == want[:5]
        assert body["next_offset"] == 5
        status, body = live.get("/api/duplicates?max_distance=3&limit=5&offset=5")
        assert [c["rank"] for c in body["clusters"]] == list(range(6, 6 + len(body["clusters"])))
        assert [[f["file_id"] for f in c["files"]] for c in body["clusters"]] == want[5:10]
        status, body = live.get(f"/api/duplicates?max_distance=3&offset={len(want) - 1}")
        assert len(body["clusters"]) == 1 and body["next_offset"] is None
        for bad in ("max_distance=9", "limit=x", f"limit={duplicates.MAX_PAGE + 1}",
                    "offset=-1", "min_size=1"):
            status, body = live.get("/api/duplicates?" + bad)
            assert status == 400 and "error" in body, bad
        with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO files (title, state, dhash, low_information)"
                        " VALUES ('New.jpg', 'hashed', 12345678901, false)")
        status, body = live.get("/api/duplicates?max_distance=3")
        assert body["stale"] and body["hashed_files_now"] == body["hashed_files_then"] + 1
        status, page = live.get("/")
        assert 'id="duplicates"' in page and 'id="clusters-more"' in page
        status, script = live.get("/static/app.js")
        assert "/api/duplicates?limit=20&offset=" in script and "next_offset" in script
    finally:
        live.stop()
