"""Near-duplicate clusters: connected components of "dhash within D bits" over the hashed files.

Two hashed files are linked when their hashes differ in at most D bits; a cluster is a connected
component of that graph. Low-information hashes (`files.low_information`: flat images, stripes)
are left out, since they would join unrelated files into one giant component.

How (exact, by the pigeonhole principle; Manku, Jain and Das Sarma, "Detecting near-duplicates
for web crawling", WWW 2007): cut the 64 bits into m blocks, m > D. Two hashes within D bits
differ in at most D blocks, so they agree exactly on at least k = m - D of them. For each of
the C(m, k) choices of k blocks ("tables"), the distinct hashes are permuted so that the chosen
blocks come first and sorted: every pair that agrees on those blocks is then adjacent within a
run of equal leading bits, and only such pairs are compared (XOR + popcount). m is chosen from
a cost model (tables x (n + expected candidate pairs)); at D = 4 and 10M hashes it is 6 blocks,
15 tables, 21-22 exact bits each: a few candidates per hash. No index is used: the hashes are
read by `COPY ... (FORMAT binary)` into a temporary file, then held in memory as numpy arrays
(the distinct hashes, their counts, a permuted copy and the union-find: about 40 bytes per
distinct informative hash); the components are a vectorised union-find over distinct hashes
(files with the same hash are one node).

`find_clusters` gives the clusters (ids only); `describe` adds each file's repository, size and
articles, a bounded batch of files per SQL call. `store` writes a result into the ledger
(migrations/012_duplicates.sql) and `stored_page` reads a page of it back, for the web, with
when it was computed and whether the ledger changed since.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np

from pipeline import imaging
from pipeline.storage import Connection

__all__ = [
    "ARTICLES_PER_FILE",
    "DEFAULT_MAX_DISTANCE",
    "FILES_PER_CLUSTER",
    "MAX_DISTANCE",
    "MAX_PAGE",
    "Cluster",
    "ClusterFile",
    "Result",
    "UnionFind",
    "clusters_from_edges",
    "clusters_of_hashes",
    "describe",
    "find_clusters",
    "plan_tables",
    "store",
    "stored_page",
]

DEFAULT_MAX_DISTANCE = 4  # bits; the target of issue 14 is D <= 4
# Bits; past 8 the graph of 64-bit hashes fills with chance links (an unrelated pair is within
# 8 bits with probability 2.9e-11, x 5e13 pairs at 10M files: ~1,400 false edges) and the
# exact blocks get short (many candidates per hash).
MAX_DISTANCE = 8
ARTICLES_PER_FILE = 20  # articles listed per file at most; the count says how many in all
DESCRIBE_BATCH = 5000  # files described per SQL call
CHUNK = 1 << 20  # hashes handled per numpy step (bounds the temporaries)
MAX_PAGE = 100  # clusters per page of the stored result (the web's bound)
FILES_PER_CLUSTER = 50  # files listed per cluster in a page; `size` says how many in all


# -- pure core ---------------------------------------------------------------------------------


class UnionFind:
    """Disjoint sets over integer ids, with path halving and union by size."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}
        self._size: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self._parent
        if x not in parent:
            parent[x] = x
            self._size[x] = 1
            return x
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size.pop(rb)

    def groups(self) -> list[list[int]]:
        """Every set, its members sorted."""
        out: dict[int, list[int]] = {}
        for x in self._parent:
            out.setdefault(self.find(x), []).append(x)
        return [sorted(members) for members in out.values()]


def clusters_from_edges(pairs: Iterable[tuple[int, int]], min_size: int = 2) -> list[list[int]]:
    """Connected components of the graph of `pairs` with at least `min_size` members.

    Largest first, ties by smallest member; members sorted.
    """
    uf = UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    groups = [g for g in uf.groups() if len(g) >= min_size]
    groups.sort(key=lambda g: (-len(g), g[0]))
    return groups


def _blocks(m: int) -> list[tuple[int, int]]:
    """64 bits cut into m contiguous blocks, as (shift, width), widths differing by at most 1."""
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    shifts = [64 - sum(widths[:i + 1]) for i in range(m)]
    return list(zip(shifts, widths, strict=True))


def plan_tables(d: int, n: int) -> list[list[tuple[int, int]]]:
    """The tables for radius `d` over `n` distinct hashes: each a list of blocks (shift, width),
    the exact ones first. Every pair within `d` bits agrees on all exact blocks of at least one
    table. m (blocks) minimises tables x (n + candidate pairs), the candidates of a table being
    the pairs that agree on its exact bits by chance, n^2 / 2^(bits + 1)."""
    if d == 0:
        return [[(0, 64)]]
    best = None
    for m in range(d + 1, min(64, d + 12) + 1):
        blocks = _blocks(m)
        k = m - d
        exact_bits = sum(sorted(w for _, w in blocks)[:k])  # the fewest a table gets
        tables = len(list(itertools.combinations(range(m), k))) if m <= 20 else 10 ** 9
        cost = tables * (n + n * n / 2.0 ** (exact_bits + 1))
        if best is None or cost < best[0]:
            best = (cost, m, k)
    _, m, k = best
    blocks = _blocks(m)
    return [[blocks[i] for i in chosen] + [blocks[i] for i in range(m) if i not in chosen]
            for chosen in itertools.combinations(range(m), k)]


def _permute(values: np.ndarray, table: list[tuple[int, int]], inverse: bool = False
             ) -> np.ndarray:
    """The bits of `values` (uint64) with the table's blocks moved to the top, in its order
    (or, `inverse`, moved back)."""
    out = np.zeros_like(values)
    top = 64
    for shift, width in table:
        top -= width
        mask = np.uint64((1 << width) - 1)
        src, dst = (top, shift) if inverse else (shift, top)
        out |= ((values >> np.uint64(src)) & mask) << np.uint64(dst)
    return out


def _table_edges(unique: np.ndarray, table: list[tuple[int, int]], d: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j) indices into `unique` (sorted distinct uint64) of the pairs within `d` bits that
    agree on the table's exact bits."""
    exact = sum(w for _, w in table[:len(table) - d]) if d else 64
    shift = np.uint64(64 - exact)
    permuted = np.empty_like(unique)
    for start in range(0, len(unique), CHUNK):
        permuted[start:start + CHUNK] = _permute(unique[start:start + CHUNK], table)
    permuted.sort()
    n = len(permuted)
    for start in range(0, n - 1, CHUNK):
        end = min(start + CHUNK, n - 1)
        a, b = permuted[start:end], permuted[start + 1:end + 1]  # step 1: slices, no gather
        idx = np.flatnonzero(((a ^ b) >> shift) == 0) + start
        a, b = permuted[idx], permuted[idx + 1]
        step = 1
        while idx.size:
            if step > 1:
                a, b = permuted[idx], permuted[idx + step]
                same = ((a ^ b) >> shift) == 0
                idx, a, b = idx[same], a[same], b[same]
            close = np.bitwise_count(a ^ b) <= d
            if close.any():
                i = np.searchsorted(unique, _permute(a[close], table, inverse=True))
                j = np.searchsorted(unique, _permute(b[close], table, inverse=True))
                yield i, j
            step += 1
            idx = idx[idx + step < n]


def _roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    r = parent[x]
    while True:
        up = parent[r]
        if np.array_equal(up, r):
            return r
        r = up


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the sets of a[i] and b[i] for every i; parent[x] <= x always (no cycles)."""
    while a.size:
        ra, rb = _roots(parent, a), _roots(parent, b)
        apart = ra != rb
        a, b = ra[apart], rb[apart]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        parent[hi] = lo  # where one root gets several writes, one wins; the rest loop again


def _flatten(parent: np.ndarray) -> np.ndarray:
    """Every node pointing at its root."""
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            return parent
        parent = up


def clusters_of_hashes(hashes: np.ndarray, d: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Components of the hashes (int64 or uint64, repeats allowed) linked within `d` bits.

    Returns (unique, counts, label): the sorted distinct hashes as uint64, how many times each
    occurs, and for each the smallest index into `unique` of its component.
    """
    values = hashes.view(np.uint64) if hashes.dtype == np.int64 else hashes
    unique, counts = np.unique(values, return_counts=True)
    parent = np.arange(len(unique), dtype=np.int64)
    if d > 0 and len(unique) > 1:
        for table in plan_tables(d, len(unique)):
            for i, j in _table_edges(unique, table, d):
                _union(parent, i, j)
            parent = _flatten(parent)
    return unique, counts, _flatten(parent)


# -- I/O edge ----------------------------------------------------------------------------------

_COPY_HASHES = ("COPY (SELECT dhash FROM files"
                " WHERE dhash IS NOT NULL AND low_information IS NOT TRUE)"
                " TO STDOUT WITH (FORMAT binary)")
_COPY_IDS = ("COPY (SELECT file_id, dhash FROM files"
             " WHERE dhash IS NOT NULL AND low_information IS NOT TRUE)"
             " TO STDOUT WITH (FORMAT binary)")


@contextlib.contextmanager
def _copied(conn: Connection, statement: str, columns: int
            ) -> Iterator[tuple[int, Iterator[np.ndarray]]]:
    """The bigint columns (no NULLs) of a COPY ... (FORMAT binary) `statement`, spooled to a
    temporary file: (rows, chunks), each chunk a record array of at most CHUNK rows with
    big-endian fields `c0`..; only one chunk is in memory at a time."""
    fields = {"names": ["n"], "formats": [">i2"], "offsets": [0]}
    for c in range(columns):
        fields["names"] += [f"l{c}", f"c{c}"]
        fields["formats"] += [">i4", ">i8"]
        fields["offsets"] += [2 + 12 * c, 6 + 12 * c]
    dtype = np.dtype({**fields, "itemsize": 2 + 12 * columns})
    with tempfile.TemporaryFile() as tmp, conn.cursor() as cur:
        cur.copy_expert(statement, tmp)
        rows = (tmp.tell() - 19 - 2) // dtype.itemsize
        tmp.seek(0)
        if tmp.read(11) != b"PGCOPY\n\xff\r\n\x00":
            raise ValueError("not a binary COPY")

        def chunks() -> Iterator[np.ndarray]:
            tmp.seek(19)
            for start in range(0, rows, CHUNK):
                yield np.fromfile(tmp, dtype=dtype, count=min(CHUNK, rows - start))

        yield rows, chunks()


@dataclass
class Result:
    """Every cluster at one radius: `members` file ids, cluster after cluster (largest first,
    ties by smallest file id; file ids ascending within one), `sizes` the clusters' sizes."""

    max_distance: int
    sizes: np.ndarray  # int64, one per cluster
    members: np.ndarray  # int64 file ids, len = sizes.sum()
    files: int  # informative hashed files considered
    seconds: dict[str, float] = field(default_factory=dict)  # time of each phase

    def clusters(self, min_size: int = 2) -> Iterator[list[int]]:
        start = 0
        for size in self.sizes.tolist():
            if size < min_size:
                return
            yield self.members[start:start + size].tolist()
            start += size


def _check(max_distance: int, min_size: int) -> None:
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise ValueError(f"max_distance must be within 0..{MAX_DISTANCE}")
    if min_size < 2:
        raise ValueError("min_size must be at least 2")


def find_clusters(conn: Connection, *, max_distance: int = DEFAULT_MAX_DISTANCE) -> Result:
    """Every cluster of at least two informative hashed files within `max_distance` bits."""
    _check(max_distance, 2)
    seconds = {}
    started = time.perf_counter()
    with _copied(conn, _COPY_HASHES, 1) as (rows, chunks):
        hashes = np.empty(rows, np.int64)
        start = 0
        for chunk in chunks:
            hashes[start:start + len(chunk)] = chunk["c0"]
            start += len(chunk)
    seconds["read hashes"] = time.perf_counter() - started
    started = time.perf_counter()
    unique, counts, label = clusters_of_hashes(hashes, max_distance)
    files = len(hashes)
    del hashes
    per_root = np.bincount(label, weights=counts, minlength=len(unique))
    clustered = per_root[label] >= 2  # nodes whose component has two files or more
    unique, label = unique[clustered], label[clustered]
    seconds["components"] = time.perf_counter() - started
    started = time.perf_counter()
    ids, ours = [], []
    with _copied(conn, _COPY_IDS, 2) as (_, chunks):
        for chunk in chunks:
            h = chunk["c1"].astype(np.int64).view(np.uint64)
            pos = np.minimum(np.searchsorted(unique, h), max(len(unique) - 1, 0))
            hit = unique[pos] == h if len(unique) else np.zeros(len(h), bool)
            ids.append(chunk["c0"][hit].astype(np.int64))
            ours.append(label[pos[hit]])
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    roots = np.concatenate(ours) if ours else np.zeros(0, np.int64)
    # order: cluster size descending, then the cluster's smallest file id, then file id
    order = np.lexsort((ids, roots))
    ids, roots = ids[order], roots[order]
    starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]]) if len(roots) else roots
    sizes = np.diff(np.r_[starts, len(roots)])
    firsts = ids[starts]
    rank = np.lexsort((firsts, -sizes))
    members = np.concatenate([ids[starts[r]:starts[r] + sizes[r]] for r in rank]) \
        if len(rank) else np.zeros(0, np.int64)
    seconds["members"] = time.perf_counter() - started
    return Result(max_distance=max_distance, sizes=sizes[rank].astype(np.int64),
                  members=members, files=files, seconds=seconds)


@dataclass
class ClusterFile:
    file_id: int
    title: str
    repo: str | None
    size: int | None
    sha1: str | None
    hash: str  # 16 hex digits
    articles: list[str] = field(default_factory=list)  # at most ARTICLES_PER_FILE titles
    article_count: int = 0  # how many articles use it in all


@dataclass
class Cluster:
    size: int
    files: list[ClusterFile]
    rank: int = 0  # 1 = the largest

    def to_dict(self) -> dict:
        return asdict(self)


def describe(conn: Connection, ids: list[int], cap: int = ARTICLES_PER_FILE
             ) -> dict[int, ClusterFile]:
    """The files `ids` (those still in the ledger) with their first `cap` articles (by title)
    and their article count."""
    with conn.cursor() as cur:
        cur.execute("SELECT f.file_id, f.title, f.repo, f.size, f.sha1, f.dhash,"
                    " (SELECT count(*) FROM usages u WHERE u.file_id = f.file_id),"
                    " ARRAY(SELECT p.title FROM usages u JOIN pages p ON p.page_id = u.page_id"
                    "       WHERE u.file_id = f.file_id ORDER BY p.title LIMIT %s)"
                    " FROM unnest(%s::bigint[]) AS q (id) JOIN files f ON f.file_id = q.id",
                    (cap, ids))
        return {fid: ClusterFile(file_id=fid, title=title, repo=repo, size=size, sha1=sha1,
                                 hash=imaging.int64_to_hex(dhash), articles=list(articles),
                                 article_count=count)
                for fid, title, repo, size, sha1, dhash, count, articles in cur.fetchall()}


def described(conn: Connection, result: Result, min_size: int = 2,
              cap: int = ARTICLES_PER_FILE) -> Iterator[Cluster]:
    """The clusters of `result` of at least `min_size` files, described, a batch of about
    DESCRIBE_BATCH files per SQL call (memory: one batch)."""
    _check(result.max_distance, min_size)
    batch: list[list[int]] = []
    rank = 0

    def flush() -> Iterator[Cluster]:
        found = describe(conn, [i for g in batch for i in g], cap)
        for g in batch:
            nonlocal rank
            rank += 1
            yield Cluster(size=len(g), files=[found[i] for i in g if i in found], rank=rank)
        batch.clear()

    pending = 0
    for group in result.clusters(min_size):
        batch.append(group)
        pending += len(group)
        if pending >= DESCRIBE_BATCH:
            yield from flush()
            pending = 0
    if batch:
        yield from flush()


# -- the stored result (migrations/012_duplicates.sql) -----------------------------------------


def _hashed_files(conn: Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(n), 0)::bigint FROM ledger_counts WHERE name = 'hashed'")
        return cur.fetchone()[0]


def store(conn: Connection, result: Result, *, hashed_files: int | None = None) -> None:
    """Replace the stored clusters at `result.max_distance` with `result` (one transaction
    when `conn` is in one: readers see the old result or the new, never half)."""
    import io

    if hashed_files is None:
        hashed_files = _hashed_files(conn)
    d = result.max_distance
    with conn.cursor() as cur:
        cur.execute("DELETE FROM duplicate_members WHERE max_distance = %s", (d,))
        cur.execute("DELETE FROM duplicate_clusters WHERE max_distance = %s", (d,))
        cur.execute("DELETE FROM duplicate_runs WHERE max_distance = %s", (d,))
        cur.execute("INSERT INTO duplicate_runs (max_distance, hashed_files, files,"
                    " clusters, clustered_files, seconds) VALUES (%s, %s, %s, %s, %s, %s)",
                    (d, hashed_files, result.files, len(result.sizes),
                     int(result.sizes.sum()), round(sum(result.seconds.values()), 3)))
        ranks = np.arange(1, len(result.sizes) + 1)
        text = "".join(f"{d}\t{r}\t{s}\n" for r, s in zip(ranks.tolist(),
                                                             result.sizes.tolist(),
                                                             strict=True))
        cur.copy_expert("COPY duplicate_clusters (max_distance, cluster, size) FROM STDIN",
                        io.StringIO(text))
        member_rank = np.repeat(ranks, result.sizes)
        for start in range(0, len(member_rank), CHUNK):
            part = zip(member_rank[start:start + CHUNK].tolist(),
                       result.members[start:start + CHUNK].tolist(), strict=True)
            cur.copy_expert("COPY duplicate_members (max_distance, cluster, file_id) FROM STDIN",
                            io.StringIO("".join(f"{d}\t{r}\t{f}\n" for r, f in part)))


@dataclass
class StoredPage:
    """A page of the stored clusters at one radius (`computed_at` None: never computed)."""

    max_distance: int
    min_size: int
    computed_at: datetime | None
    total: int  # clusters of at least min_size files
    offset: int
    clusters: list[Cluster]
    hashed_files_then: int = 0
    hashed_files_now: int = 0
    seconds: float = 0.0
    available: list[int] = field(default_factory=list)  # radii with a stored result

    @property
    def stale(self) -> bool:
        """Whether files were hashed or removed since: the clusters may have changed."""
        return self.computed_at is not None and self.hashed_files_now != self.hashed_files_then

    def to_dict(self) -> dict:
        return {"max_distance": self.max_distance, "min_size": self.min_size,
                "computed_at": self.computed_at.isoformat() if self.computed_at else None,
                "stale": self.stale, "hashed_files_then": self.hashed_files_then,
                "hashed_files_now": self.hashed_files_now, "seconds": self.seconds,
                "total": self.total, "offset": self.offset,
                "next_offset": (self.offset + len(self.clusters)
                                if self.offset + len(self.clusters) < self.total else None),
                "available": self.available,
                "clusters": [c.to_dict() for c in self.clusters]}


def stored_page(conn: Connection, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                min_size: int = 2, offset: int = 0, limit: int = 20,
                files_per_cluster: int = FILES_PER_CLUSTER) -> StoredPage:
    """Clusters offset+1 .. offset+limit (by rank, largest first) of the stored result, each
    with its first `files_per_cluster` files described. A few index reads, whatever the size
    of the ledger or of the result."""
    _check(max_distance, min_size)
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValueError(f"limit must be within 1..{MAX_PAGE} and offset at least 0")
    with conn.cursor() as cur:
        cur.execute("SELECT max_distance FROM duplicate_runs ORDER BY 1")
        available = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT computed_at, hashed_files, seconds FROM duplicate_runs"
                    " WHERE max_distance = %s", (max_distance,))
        run = cur.fetchone()
        now = _hashed_files(conn)
        if run is None:
            return StoredPage(max_distance, min_size, None, 0, offset, [],
                              hashed_files_now=now, available=available)
        computed_at, then, seconds = run
        # sizes fall with the rank: those of at least min_size are ranks 1..total
        cur.execute("SELECT coalesce(max(cluster), 0) FROM duplicate_clusters"
                    " WHERE max_distance = %s AND size >= %s", (max_distance, min_size))
        total = cur.fetchone()[0]
        cur.execute("SELECT c.cluster, c.size, m.ids FROM duplicate_clusters c"
                    " CROSS JOIN LATERAL (SELECT array_agg(file_id ORDER BY file_id) AS ids"
                    "  FROM (SELECT file_id FROM duplicate_members m"
                    "   WHERE m.max_distance = c.max_distance AND m.cluster = c.cluster"
                    "   ORDER BY file_id LIMIT %s) s) m"
                    " WHERE c.max_distance = %s AND c.cluster > %s AND c.cluster <= %s"
                    " ORDER BY c.cluster",
                    (files_per_cluster, max_distance, offset, min(offset + limit, total)))
        rows = cur.fetchall()
    found = describe(conn, [i for _, _, ids in rows for i in ids])
    clusters = [Cluster(size=size, rank=rank, files=[found[i] for i in ids if i in found])
                for rank, size, ids in rows]
    return StoredPage(max_distance, min_size, computed_at, total, offset, clusters,
                      hashed_files_then=then, hashed_files_now=now, seconds=seconds,
                      available=available)
