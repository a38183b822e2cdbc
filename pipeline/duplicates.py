"""Near-duplicate clusters: connected components of "dhash within D bits" over the hashed files.

Two hashed files are linked when their hashes differ in at most D bits; a cluster is a connected
component of that graph. Low-information hashes (`files.low_information`: flat images, stripes)
are left out, since they would join unrelated files into one giant component.

The pure core is `UnionFind` and `clusters_from_edges`; `find_clusters` is the I/O edge. It
streams the files in bounded batches by `file_id` (the primary key), and asks the index for
each batch's neighbours in one SQL call (an array of hashes, one LATERAL radius scan each, the
multi-index-hashing index of pipeline/migrations/003_dhash_indexes.sql); only neighbours with a
larger `file_id` are kept, so each edge is read once. Memory holds only the files that have at
least one neighbour (singletons never enter the union-find), not the whole table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from pipeline import imaging
from pipeline.storage import Connection

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "MAX_DISTANCE",
    "ARTICLES_PER_FILE",
    "Cluster",
    "ClusterFile",
    "UnionFind",
    "clusters_from_edges",
    "edges",
    "find_clusters",
]

DEFAULT_MAX_DISTANCE = 4  # bits; the target of issue 14 is D <= 4
# Bits; past 8 the graph of 64-bit hashes fills with chance links (an unrelated pair is within
# 8 bits with probability 2.9e-11, x 5e13 pairs at 10M files: ~1,400 false edges) and each
# probe enumerates far more index keys.
MAX_DISTANCE = 8
BATCH = 2000  # files probed per SQL call
ARTICLES_PER_FILE = 20  # articles listed per file at most; the count says how many in all


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


# -- I/O edge ----------------------------------------------------------------------------------


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

    def to_dict(self) -> dict:
        return asdict(self)


def _check(max_distance: int, min_size: int) -> None:
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise ValueError(f"max_distance must be within 0..{MAX_DISTANCE}")
    if min_size < 2:
        raise ValueError("min_size must be at least 2")


def edges(conn: Connection, max_distance: int, *, batch: int = BATCH) -> Iterator[tuple[int, int]]:
    """(a, b), a < b, for every pair of informative hashed files within `max_distance` bits.

    Batches by file_id through the primary key; each batch is one SQL call whose LATERAL
    radius scans go through the dhash index (no scan of the table per batch).
    """
    last = 0
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT file_id, dhash FROM files WHERE file_id > %s"
                        " AND dhash IS NOT NULL AND low_information IS NOT TRUE"
                        " ORDER BY file_id LIMIT %s", (last, batch))
            rows = cur.fetchall()
            if not rows:
                return
            last = rows[-1][0]
            cur.execute("SELECT q.id, f.file_id"
                        " FROM unnest(%s::bigint[], %s::bigint[]) AS q (id, h)"
                        " CROSS JOIN LATERAL (SELECT file_id FROM files"
                        "  WHERE dhash <@ (q.h, %s) AND file_id > q.id"
                        "  AND low_information IS NOT TRUE) f",
                        ([r[0] for r in rows], [r[1] for r in rows], max_distance))
            yield from cur.fetchall()


def find_clusters(conn: Connection, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                  min_size: int = 2, limit: int | None = None,
                  articles_per_file: int = ARTICLES_PER_FILE,
                  batch: int = BATCH) -> list[Cluster]:
    """The clusters of at least `min_size` files, largest first (the first `limit` of them)."""
    _check(max_distance, min_size)
    groups = clusters_from_edges(edges(conn, max_distance, batch=batch), min_size)
    if limit is not None:
        groups = groups[:limit]
    return [Cluster(size=len(g), files=_describe(conn, g, articles_per_file)) for g in groups]


def _describe(conn: Connection, ids: list[int], cap: int) -> list[ClusterFile]:
    """The files `ids` with their first `cap` articles (by title) and their article count."""
    with conn.cursor() as cur:
        cur.execute("SELECT f.file_id, f.title, f.repo, f.size, f.sha1, f.dhash,"
                    " (SELECT count(*) FROM usages u WHERE u.file_id = f.file_id),"
                    " ARRAY(SELECT p.title FROM usages u JOIN pages p ON p.page_id = u.page_id"
                    "       WHERE u.file_id = f.file_id ORDER BY p.title LIMIT %s)"
                    " FROM files f WHERE f.file_id = ANY(%s) ORDER BY f.file_id", (cap, ids))
        return [ClusterFile(file_id=fid, title=title, repo=repo, size=size, sha1=sha1,
                            hash=imaging.int64_to_hex(dhash), articles=list(articles),
                            article_count=count)
                for fid, title, repo, size, sha1, dhash, count, articles in cur.fetchall()]
