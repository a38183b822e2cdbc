"""The bktree extension answers exactly what a brute-force scan answers.

Every operator class (`bktree_ops` under SP-GiST and the `bktree` access method,
`bktree_mih_ops` under GIN and `bktree_mih`) is checked against Hamming distances computed in
Python, on random and clustered hashes, for every radius 0..64 and for KNN
(`ORDER BY <->` and `bktree_nearest`), before and after inserts, updates, deletes, VACUUM and
REINDEX; and the batched form (one LATERAL join for many query hashes) against the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import psycopg2
import pytest

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
EDGES = [0, -1, INT64_MIN, INT64_MAX]
MASK = 2**64 - 1
PENDING_SQL = (
    "SELECT n_pending_pages, n_pending_tuples"
    " FROM gin_metapage_info(get_raw_page('hashes_bktree_mih', 0))"
)


def hamming(a: int, b: int) -> int:
    return bin((a ^ b) & MASK).count("1")


def distances(hashes: np.ndarray, q: int) -> np.ndarray:
    """Hamming distance of every hash to q (vectorised; cross-checked against `hamming`)."""
    x = np.bitwise_xor(hashes.view(np.uint64), np.uint64(q & MASK))
    return np.bitwise_count(x).astype(np.int64)


def flip(value: int, nbits: int, rng: random.Random) -> int:
    """value with nbits distinct random bits flipped, as a signed int64."""
    u = value & MASK
    for bit in rng.sample(range(64), nbits):
        u ^= 1 << bit
    return u - 2**64 if u >= 2**63 else u


def signed(u: int) -> int:
    return u - 2**64 if u >= 2**63 else u


def make_hashes(rng: random.Random, n_random: int, n_clusters: int) -> list[int | None]:
    """Random hashes, near-duplicate clusters, exact duplicates, edge values and NULLs."""
    values: list[int | None] = [signed(rng.getrandbits(64)) for _ in range(n_random)]
    for _ in range(n_clusters):
        centre = signed(rng.getrandbits(64))
        values += [flip(centre, rng.randint(0, 5), rng) for _ in range(rng.randint(5, 60))]
    values += [signed(rng.getrandbits(64))] * 2000  # one hash repeated many times
    for edge in EDGES:
        values += [edge] * 300 + [flip(edge, rng.randint(1, 4), rng) for _ in range(200)]
    values += [None] * 50
    rng.shuffle(values)
    return values


class Table:
    """A `hashes(id, hash)` table mirrored in Python, so every answer can be brute-forced."""

    def __init__(self, conn, rows: list[int | None]):
        self.conn = conn
        self.rows: dict[int, int | None] = {}
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE hashes (id serial PRIMARY KEY, hash int8)")
        self.insert(rows)

    def insert(self, values: list[int | None]) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO hashes (hash) SELECT unnest(%s::int8[]) RETURNING id, hash",
                (values,),
            )
            for row_id, value in cur.fetchall():
                self.rows[row_id] = value

    def update(self, changes: dict[int, int | None]) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                "UPDATE hashes SET hash = c.h FROM unnest(%s::int[], %s::int8[]) AS c(i, h)"
                " WHERE id = c.i",
                (list(changes), list(changes.values())),
            )
        self.rows.update(changes)

    def delete(self, ids: list[int]) -> None:
        with self.conn.cursor() as cur:
            cur.execute("DELETE FROM hashes WHERE id = ANY(%s)", (ids,))
        for i in ids:
            del self.rows[i]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, hashes) of the non-NULL rows."""
        pairs = [(i, h) for i, h in self.rows.items() if h is not None]
        ids = np.array([p[0] for p in pairs], dtype=np.int64)
        hashes = np.array([p[1] for p in pairs], dtype=np.int64)
        return ids, hashes


@pytest.fixture
def conn(db_url: str) -> Iterator:
    connection = psycopg2.connect(db_url)
    connection.autocommit = True
    yield connection
    connection.close()


def plan(cur, sql: str, args: tuple) -> str:
    cur.execute("EXPLAIN (COSTS OFF) " + sql, args)
    return "\n".join(r[0] for r in cur.fetchall())


def query_points(rng: random.Random, table: Table, n: int) -> list[int]:
    present = [h for h in table.rows.values() if h is not None]
    points = list(EDGES) + rng.sample(present, n)
    points += [flip(rng.choice(present), 3, rng), signed(rng.getrandbits(64))]
    return points


def check_ranges(cur, table: Table, index: str, points: list[int], radii: list[int]) -> None:
    """Every `hash <@ (q, r)` returns exactly the brute-force ids, through `index` and not."""
    ids, hashes = table.arrays()
    sql = "SELECT id FROM hashes WHERE hash <@ (%s, %s)"
    cur.execute("SET enable_seqscan = off")
    assert index in plan(cur, sql, (points[0], 3)), "the index is not used"
    for use_index in (True, False):
        flag = "off" if use_index else "on"
        cur.execute(f"SET enable_seqscan = {flag}")
        for kind in ("indexscan", "indexonlyscan", "bitmapscan"):
            cur.execute(f"SET enable_{kind} = {'on' if use_index else 'off'}")
        seqscan = flag
        for n, q in enumerate(points):
            d = distances(hashes, q)
            # past radius 12 both classes walk (nearly) everything: sample fewer points
            for r in radii if n < 3 else [r for r in radii if r <= 12]:
                expected = ids[d <= r]
                if r <= 12:
                    cur.execute(sql, (q, r))
                    got = sorted(row[0] for row in cur.fetchall())
                    assert got == sorted(expected.tolist()), (index, seqscan, q, r)
                else:  # large answers: compare count and id sum, cheaper to move
                    cur.execute(
                        "SELECT count(*), coalesce(sum(id), 0) FROM hashes WHERE hash <@ (%s, %s)",
                        (q, r),
                    )
                    assert cur.fetchone() == (len(expected), int(expected.sum())), (
                        index,
                        seqscan,
                        q,
                        r,
                    )
    cur.execute("RESET ALL")


def check_knn(cur, table: Table, points: list[int], index: str = "hashes_spgist") -> None:
    """ORDER BY hash <-> q LIMIT k returns the k smallest distances (ties in any order)."""
    ids, hashes = table.arrays()
    by_id = dict(zip(ids.tolist(), hashes.tolist(), strict=True))
    sql = "SELECT id, hash <-> %s FROM hashes ORDER BY hash <-> %s LIMIT %s"
    cur.execute("SET enable_seqscan = off")
    cur.execute("SET enable_bitmapscan = off")
    assert index in plan(cur, sql, (0, 0, 10))
    for q in points:
        d = np.sort(distances(hashes, q))
        for k in (1, 10, 100):
            cur.execute(sql, (q, q, k))
            got = cur.fetchall()
            assert [row[1] for row in got] == d[:k].tolist(), (q, k)
            assert all(hamming(by_id[i], q) == dist for i, dist in got), (q, k)
    cur.execute("RESET enable_seqscan; RESET enable_bitmapscan")


def check_nearest(cur, table: Table, points: list[int]) -> None:
    """bktree_nearest(NULL::hashes, 'hash', q, k) returns the k smallest distances, in order."""
    ids, hashes = table.arrays()
    by_id = dict(zip(ids.tolist(), hashes.tolist(), strict=True))
    sql = "SELECT id, hash <-> %s FROM bktree_nearest(NULL::hashes, 'hash', %s, %s)"
    for q in points:
        d = np.sort(distances(hashes, q))
        for k in (1, 10, 100, 2500):
            cur.execute(sql, (q, q, k))
            got = cur.fetchall()
            assert [row[1] for row in got] == d[:k].tolist(), (q, k)
            assert len({i for i, _ in got}) == len(got)
            assert all(hamming(by_id[i], q) == dist for i, dist in got), (q, k)
    cur.execute(sql, (None, None, 10))
    assert cur.fetchall() == []
    cur.execute(sql, (0, 0, 0))
    assert cur.fetchall() == []


def check_batched(cur, table: Table, points: list[int], radius: int) -> None:
    """One LATERAL join over an array of query hashes tags each match with its query."""
    ids, hashes = table.arrays()
    cur.execute(
        "SELECT q.i, h.id FROM unnest(%s::int8[]) WITH ORDINALITY AS q (h, i)"
        " CROSS JOIN LATERAL (SELECT id FROM hashes WHERE hash <@ (q.h, %s)) h",
        (points, radius),
    )
    got: dict[int, list[int]] = {}
    for i, row_id in cur.fetchall():
        got.setdefault(i - 1, []).append(row_id)
    for n, q in enumerate(points):
        expected = sorted(ids[distances(hashes, q) <= radius].tolist())
        assert sorted(got.get(n, [])) == expected, (q, radius)


def mutate(rng: random.Random, table: Table) -> None:
    """Inserts, updates and deletes, including NULLs and edge values."""
    present = [h for h in table.rows.values() if h is not None]
    table.insert(
        [flip(rng.choice(present), rng.randint(0, 3), rng) for _ in range(3000)]
        + [signed(rng.getrandbits(64)) for _ in range(2000)]
        + EDGES * 10
        + [None] * 5
    )
    ids = list(table.rows)
    changed = rng.sample(ids, 2000)
    table.update(
        {
            i: (None if j % 97 == 0 else flip(rng.choice(present), 2, rng))
            for j, i in enumerate(changed)
        }
    )
    table.delete(rng.sample(list(table.rows), 3000))


@pytest.mark.parametrize(
    ("opclass", "method"),
    [("bktree_ops", "spgist"), ("bktree_mih_ops", "gin"), ("bktree_ops", "bktree"),
     ("bktree_mih_ops", "bktree_mih")],
)
def test_exact_against_brute_force(conn, opclass: str, method: str) -> None:
    rng = random.Random(20240 + len(opclass))
    table = Table(conn, make_hashes(rng, n_random=20000, n_clusters=300))
    index = f"hashes_{method}"
    cur = conn.cursor()
    cur.execute(f"CREATE INDEX {index} ON hashes USING {method} (hash {opclass})")
    cur.execute("ANALYZE hashes")

    # the vectorised distance agrees with the definition
    ids, hashes = table.arrays()
    for q in EDGES:
        assert distances(hashes[:500], q).tolist() == [hamming(int(h), q) for h in hashes[:500]]

    all_radii = list(range(65))
    small_radii = [0, 1, 2, 3, 4, 5, 6, 8, 11, 12, 16, 33, 64]
    check_ranges(cur, table, index, query_points(rng, table, 4), all_radii)
    ordered = method in ("spgist", "bktree")
    if ordered:
        check_knn(cur, table, query_points(rng, table, 3), index)
    if method.startswith("bktree"):
        check_nearest(cur, table, query_points(rng, table, 3))
        check_batched(cur, table, query_points(rng, table, 8), 6)

    mutate(rng, table)
    check_ranges(cur, table, index, query_points(rng, table, 3), small_radii)
    cur.execute("VACUUM hashes")
    check_ranges(cur, table, index, query_points(rng, table, 3), small_radii)
    if ordered:
        check_knn(cur, table, query_points(rng, table, 2), index)
    if method.startswith("bktree"):
        check_nearest(cur, table, query_points(rng, table, 2))
    cur.execute(f"REINDEX INDEX {index}")
    check_ranges(cur, table, index, query_points(rng, table, 3), small_radii)
    if ordered:
        check_knn(cur, table, query_points(rng, table, 2), index)

    # count(*) agrees whatever the plan
    cur.execute("SET enable_seqscan = off")
    cur.execute("SELECT count(*) FROM hashes")
    assert cur.fetchone()[0] == len(table.rows)
    cur.execute("SELECT count(*) FROM hashes WHERE hash <@ (0, 64)")
    assert cur.fetchone()[0] == sum(h is not None for h in table.rows.values())


@pytest.mark.parametrize(
    ("opclass", "method"),
    [("bktree_ops", "spgist"), ("bktree_ops", "bktree"), ("bktree_mih_ops", "bktree_mih")],
)
def test_duplicate_heavy_index(conn, opclass: str, method: str) -> None:
    """Tens of thousands of identical hashes (flat images hash to 0) stay searchable."""
    rng = random.Random(7)
    values: list[int | None] = [0] * 30000 + [-1] * 10000
    values += [flip(0, rng.randint(1, 6), rng) for _ in range(3000)]
    values += [flip(-1, rng.randint(1, 6), rng) for _ in range(1000)]
    values += [signed(rng.getrandbits(64)) for _ in range(3000)]
    values += [INT64_MIN] * 500 + [INT64_MAX] * 500
    table = Table(conn, values)
    cur = conn.cursor()
    index = f"hashes_{method}"
    cur.execute(f"CREATE INDEX {index} ON hashes USING {method} (hash {opclass})")
    cur.execute("ANALYZE hashes")
    table.insert([0] * 5000 + [flip(0, 1, rng) for _ in range(500)])
    points = [0, -1, 1, 3, INT64_MIN, INT64_MAX, flip(INT64_MAX, 2, rng)]
    check_ranges(cur, table, index, points, [0, 1, 2, 6, 32, 64])
    if method != "bktree_mih":
        check_knn(cur, table, [0, -1, 7, INT64_MIN], index)
    if method.startswith("bktree"):
        check_nearest(cur, table, points)


@pytest.mark.parametrize("options", [None, "gin_pending_list_limit = 4096", "fastupdate = off"])
def test_bulk_load_into_mih_index(conn, options: str | None) -> None:
    """A bulk load into a table that already has its bktree_mih index is searchable and, by
    default (no pending list: fast update is off for bktree_mih), leaves at most 256 kB of GIN
    pending list for searches to read; the index's own options still decide."""
    rng = random.Random(11)
    table = Table(conn, make_hashes(rng, n_random=5000, n_clusters=50))
    cur = conn.cursor()
    with_options = f" WITH ({options})" if options else ""
    cur.execute(f"CREATE INDEX hashes_bktree_mih ON hashes USING bktree_mih (hash){with_options}")
    cur.execute("ANALYZE hashes")
    present = [h for h in table.rows.values() if h is not None]
    # 30k rows: over 256 kB of pending list, under GIN's 4 MB
    table.insert([flip(rng.choice(present), rng.randint(0, 4), rng) for _ in range(15000)]
                 + [signed(rng.getrandbits(64)) for _ in range(15000)] + EDGES * 50)
    cur.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    cur.execute(PENDING_SQL)
    pages, tuples = cur.fetchone()
    if options is None:
        assert pages <= 33 and tuples < 30000
    elif options.startswith("gin_pending"):
        assert tuples >= 30000
    else:
        assert tuples == 0
    points = query_points(rng, table, 4)
    check_ranges(cur, table, "hashes_bktree_mih", points, [0, 1, 3, 4, 6, 8, 10, 12, 16])
    check_nearest(cur, table, points[:6])
    # the default survives a relcache rebuild (ALTER INDEX ... RESET) and a REINDEX
    cur.execute("ALTER INDEX hashes_bktree_mih RESET (fastupdate, gin_pending_list_limit)")
    cur.execute("REINDEX INDEX hashes_bktree_mih")
    table.insert([signed(rng.getrandbits(64)) for _ in range(30000)])
    cur.execute(PENDING_SQL)
    assert cur.fetchone()[0] <= 33
    check_ranges(cur, table, "hashes_bktree_mih", points[:4], [0, 3, 8])


def test_both_indexes_on_one_column(conn) -> None:
    """With `bktree` and `bktree_mih` on one column the planner takes MIH for radius searches,
    the BK-tree for ORDER BY <->, a seqscan for wide radii, and every answer is exact."""
    rng = random.Random(13)
    table = Table(conn, make_hashes(rng, n_random=30000, n_clusters=200))
    cur = conn.cursor()
    cur.execute("CREATE INDEX hashes_bk ON hashes USING bktree (hash)")
    cur.execute("CREATE INDEX hashes_mih ON hashes USING bktree_mih (hash)")
    cur.execute("ANALYZE hashes")
    sql = "SELECT id FROM hashes WHERE hash <@ (%s, %s)"
    for radius in (0, 3, 6, 8):
        assert "hashes_mih" in plan(cur, sql, (12345, radius)), radius
    assert "Seq Scan" in plan(cur, sql, (12345, 30))
    assert "hashes_bk" in plan(cur, "SELECT id FROM hashes ORDER BY hash <-> %s LIMIT 10", (1,))
    points = query_points(rng, table, 4)
    check_ranges(cur, table, "hashes_mih", points, [0, 2, 3, 5, 6, 8, 10, 12, 20, 64])
    check_knn(cur, table, points[:4], "hashes_bk")
    check_nearest(cur, table, points)
    check_batched(cur, table, points, 4)


def test_amvalidate(conn) -> None:
    cur = conn.cursor()
    cur.execute(
        "SELECT opcname, amvalidate(oid) FROM pg_opclass"
        " WHERE opcname IN ('bktree_ops', 'bktree_mih_ops') ORDER BY 1"
    )
    assert cur.fetchall() == [("bktree_mih_ops", True)] * 2 + [("bktree_ops", True)] * 2


def test_operators_and_function(conn) -> None:
    cur = conn.cursor()
    cur.execute(
        "SELECT hamming_distance(0, -1), 0::int8 <-> -1, "
        " pg_typeof(0::int8 <-> 1)::text, 5::int8 <@ (4, 1), 5::int8 <@ (4, 0)"
    )
    assert cur.fetchone() == (64, 64, "integer", True, False)
    cur.execute("SELECT (%s)::int8 <-> (%s)::int8", (INT64_MIN, INT64_MAX))
    assert cur.fetchone()[0] == 64


@pytest.mark.parametrize("method", ["spgist", "gin"])
def test_bad_input(conn, method: str) -> None:
    """NULL or negative radius: nothing; radius > 64: every non-NULL row; bad rows: error."""
    opclass = "bktree_ops" if method == "spgist" else "bktree_mih_ops"
    cur = conn.cursor()
    cur.execute("CREATE TABLE hashes (id serial, hash int8)")
    cur.execute(
        "INSERT INTO hashes (hash) SELECT (random() * 2^62)::int8 FROM generate_series(1, 3000)"
    )
    cur.execute("INSERT INTO hashes (hash) VALUES (NULL), (0), (-1)")
    cur.execute(f"CREATE INDEX ON hashes USING {method} (hash {opclass})")
    cases = {
        "(0, NULL)": 0,
        "(NULL, 3)": 0,
        "NULL::bktree_area": 0,
        "(NULL, NULL)": 0,
        "(0, -1)": 0,
        f"(0, {INT64_MIN})": 0,
        "(0, 65)": 3002,
        "(0, 1000)": 3002,
        f"(0, {INT64_MAX})": 3002,
        f"({INT64_MIN}, 64)": 3002,
    }
    for seqscan in ("on", "off"):
        cur.execute(f"SET enable_seqscan = {seqscan}")
        for area, expected in cases.items():
            cur.execute(f"SELECT count(*) FROM hashes WHERE hash <@ {area}")
            assert cur.fetchone()[0] == expected, (seqscan, area)
        for bad in ("(1, 2, 3)", "('x', 1)", "(1)", "'garbage'::bktree_area"):
            with pytest.raises(psycopg2.Error):
                cur.execute(f"SELECT count(*) FROM hashes WHERE hash <@ {bad}")
        cur.execute("SELECT 1")  # the session survives
        assert cur.fetchone() == (1,)
