"""`wikihash duplicates`: clusters equal brute-force connected components (real PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import random

import psycopg2
from click.testing import CliRunner

from pipeline import duplicates, imaging, storage
from pipeline.cli import cli


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


def test_clusters_match_brute_force(db_url):
    rng = random.Random(14)
    ids = _load(db_url, _hashes(rng))
    with storage.connection(db_url) as conn:
        for d in (0, 2, 4, 6):
            for min_size in (2, 3):
                got = duplicates.find_clusters(conn, max_distance=d, min_size=min_size,
                                               batch=37)
                want = _brute(ids, d, min_size)
                assert want, (d, min_size)
                assert [[f.file_id for f in c.files] for c in got] == want, (d, min_size)
        clusters = duplicates.find_clusters(conn, max_distance=4)
    low = {i for i, h in ids.items() if imaging.is_low_information(h)}
    listed = {f.file_id for c in clusters for f in c.files}
    assert not listed & low
    first = min(ids)
    file = next((f for c in clusters for f in c.files if f.file_id == first), None)
    if file is not None:
        assert file.article_count == 25
        assert len(file.articles) == duplicates.ARTICLES_PER_FILE
        assert file.articles == sorted(file.articles)


def test_probe_uses_the_index(db_url):
    storage.migrate(db_url)
    with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO files (title, state, dhash, low_information)"
                    " SELECT 'F' || g, 'hashed', (random() * 2 ^ 62)::bigint * 2 - g % 2, false"
                    " FROM generate_series(1, 50000) g")
        cur.execute("ANALYZE files")
        cur.execute("EXPLAIN SELECT q.id, f.file_id"
                    " FROM unnest(ARRAY[1,2]::bigint[], ARRAY[5,6]::bigint[]) AS q (id, h)"
                    " CROSS JOIN LATERAL (SELECT file_id FROM files"
                    "  WHERE dhash <@ (q.h, 4) AND file_id > q.id"
                    "  AND low_information IS NOT TRUE) f")
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "Index" in plan and "files_dhash" in plan, plan


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
    out = runner.invoke(cli, ["duplicates", "--database-url", db_url, "--max-distance", "9"])
    assert out.exit_code == 2 and "9" in out.output
    out = runner.invoke(cli, ["duplicates", "--database-url",
                              "postgresql://postgres@127.0.0.1:5432/no_such_db_wikihash"])
    assert out.exit_code == 1 and out.output.startswith("Error:")


def test_api_duplicates(db_url):
    from starlette.testclient import TestClient

    from pipeline import web

    ids = _load(db_url, _hashes(random.Random(5)))
    app = web.create_app(web.WebSettings(database_url=db_url,
                                         served_names=frozenset({"testserver"})))
    with TestClient(app, raise_server_exceptions=False) as client:
        got = client.get("/api/duplicates", params={"max_distance": 3, "limit": 5})
        assert got.status_code == 200, got.text
        body = got.json()
        want = _brute(ids, 3, 2)[:5]
        assert [[f["file_id"] for f in c["files"]] for c in body["clusters"]] == want
        bad = client.get("/api/duplicates", params={"max_distance": 9})
        assert bad.status_code == 400 and "max_distance" in bad.json()["error"]
        assert client.get("/api/duplicates?limit=x").status_code == 400
        page = client.get("/").text
        assert 'id="duplicates"' in page and 'id="clusters"' in page
        assert "/api/duplicates" in client.get("/static/app.js").text
