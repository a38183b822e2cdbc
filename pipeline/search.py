"""Reverse image search: an image's hash to the files near it and the articles that use them.

Step "search" of the flow in docs/architecture.md. The query is hashed with the canonical hash
(`pipeline.imaging`) plus a few variants (`pipeline.variants`: mirror, trimmed border, ...);
all variants ask the bktree indexes in one SQL call for `files.dhash <@ (h, d)` (the planner
takes the multi-index-hashing index, pipeline/migrations/003_dhash_indexes.sql), each row
tagged with its variant, or, one by one, for the K nearest (`bktree_nearest`, exact), and
the matches are merged keeping each file's best distance, ranked (`rank_key`: distance, the
query's own hash before a variant, the query's shape) and grouped (`group`: the same bytes, or
the same pixel size within `SAME_PICTURE_BITS`) into one result per picture. Article URLs are
built from the wiki's own `server` and `articlepath` in `wiki_info`. See docs/search.md.

A low-information query (a striped flag, a flat image: `imaging.is_low_information`) matches
thousands of unrelated files; its results are capped at `LOW_INFORMATION_CAP` with a note.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from urllib.parse import quote

from pipeline import imaging, ledger, variants
from pipeline.storage import Connection

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "MAX_USEFUL_DISTANCE",
    "Article",
    "Match",
    "SearchResult",
    "article_url",
    "search_bytes",
    "search_hashes",
    "stats",
    "wfurlencode",
]

# Bits; chosen from the measurements in docs/search.md (recall of altered copies vs wrong articles).
DEFAULT_MAX_DISTANCE = 8
# Bits; the largest radius a search accepts (CLI and web). An unrelated image's hash is within
# 16 bits of a query with probability 3.9e-5 (binomial, 64 fair bits): ~40 false matches per
# probe at 1M files, every one of them wrong, and each probe costs far more past it (~330 ms at
# 32 bits). Recall stops growing at 10-12 bits (docs/search.md).
MAX_USEFUL_DISTANCE = 16
# Files listed for one query at most; more is noise, not an answer. The one bound on results:
# `wikihash search --nearest` and the web API's `nearest` accept 1..MAX_RESULTS.
MAX_RESULTS = 200
LOW_INFORMATION_CAP = 20  # files listed for a low-information query
# Bits; two files of the same size in pixels whose hashes are this close are one picture saved
# twice, listed as one result (`group`). Chosen by ops/bench/ranking.py (docs/search.md).
SAME_PICTURE_BITS = 2


@dataclass(frozen=True)
class Article:
    title: str  # as the wiki spells it: spaces
    url: str  # the full URL of the article on the wiki


@dataclass(frozen=True)
class Duplicate:
    title: str  # the file's name, without "File:"
    file_url: str | None  # its page on the wiki


@dataclass
class Match:
    file_id: int
    title: str  # the file's name, without "File:"
    distance: int  # bits, the best over the query variants
    variant: str  # which variant of the query gave that distance
    hash: str  # 16 hex digits
    low_information: bool
    thumb_url: str | None
    file_url: str | None  # the file's page on the wiki
    articles: list[Article] = field(default_factory=list)  # of this file and its duplicates
    hashed_width: int | None = None  # px of the picture the stored hash was made from
    # Exact duplicates of this file (same SHA-1, or same hash and pixel size), grouped here.
    duplicates: list[Duplicate] = field(default_factory=list)


@dataclass
class SearchResult:
    hash: str  # the canonical hash of the query, 16 hex digits
    int64: int
    low_information: bool
    max_distance: int | None
    nearest: int | None
    variants: list[str]
    matches: list[Match]
    truncated: bool = False  # more files matched than are listed
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -- article URLs, as MediaWiki builds them ----------------------------------------------------

# wfUrlencode: rawurlencode, then these are put back as they are.
_WF_SAFE = ";@$!*(),/~:"


def wfurlencode(title: str) -> str:
    """A title in URL form as MediaWiki's wfUrlencode writes it: spaces to underscores first."""
    return quote(title.replace(" ", "_"), safe=_WF_SAFE)


def article_url(server: str, articlepath: str, title: str) -> str:
    """The full URL of `title` on a wiki with this `server` and `articlepath` ("/wiki/$1")."""
    if server.startswith("//"):  # Wikimedia's protocol-relative $wgServer
        server = "https:" + server
    return server.rstrip("/") + articlepath.replace("$1", wfurlencode(title))


def wiki_urls(conn: Connection) -> tuple[str, str]:
    """The wiki's `server` and `articlepath` from `wiki_info` ("" and "/wiki/$1" when unknown)."""
    with conn.cursor() as cur:
        cur.execute("SELECT key, value FROM wiki_info WHERE key IN ('server', 'articlepath')")
        info = dict(cur.fetchall())
    server = info.get("server", "")
    if not server.lower().startswith(("http://", "https://", "//")):
        server = ""  # a javascript: or data: "server" from a hostile wiki never becomes a link
    return server, info.get("articlepath", "/wiki/$1")


# -- search ------------------------------------------------------------------------------------


def search_bytes(conn: Connection, data: bytes, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                 nearest: int | None = None,
                 probe: tuple[str, ...] = variants.DEFAULT_VARIANTS) -> SearchResult:
    """Search for the image in `data`; raises `ImageRejected` when it cannot be hashed."""
    canonical, probes = variants.query_variants(data, probe)
    return search_hashes(conn, canonical.int64, probes, max_distance=max_distance,
                         nearest=nearest)


def search_hashes(conn: Connection, int64: int, probes: list[variants.Variant] | None = None, *,
                  max_distance: int = DEFAULT_MAX_DISTANCE,
                  nearest: int | None = None) -> SearchResult:
    """Search for the hash `int64` (and `probes`, its variants); nearest K when `nearest`.

    Matches are ranked (`rank`) and exact duplicates grouped into one match (`group`)."""
    if max_distance < 0 or max_distance > MAX_USEFUL_DISTANCE:
        raise ValueError(f"max_distance must be within 0..{MAX_USEFUL_DISTANCE}")
    if nearest is not None and not 1 <= nearest <= MAX_RESULTS:
        raise ValueError(f"nearest must be within 1..{MAX_RESULTS}")
    probes = probes or [variants.Variant("original", int64)]
    # A variant with almost no information (the trimmed middle of a flag...) floods the list
    # as the query itself would: the note and the cap consider every hash probed.
    low_hashes = [p for p in probes if imaging.is_low_information(p.int64)]
    if imaging.is_low_information(int64) and not any(p.int64 == int64 for p in low_hashes):
        low_hashes.insert(0, variants.Variant("original", int64))
    low = bool(low_hashes)
    cap = LOW_INFORMATION_CAP if low else MAX_RESULTS
    limit = min(nearest, cap) if nearest else cap
    found = candidates(conn, probes, max_distance=max_distance, nearest=limit if nearest else None,
                       per_probe=cap + 1)
    groups = group(rank(found))
    truncated = len(groups) > limit
    groups = groups[:limit]
    matches = _describe(conn, groups)
    note = None
    if low:
        which = ", ".join(f"{imaging.int64_to_hex(p.int64)}"
                          + ("" if p.name == "original" else f" of its {p.name} variant")
                          for p in low_hashes)
        note = ("this image carries little information for dhash (hash"
                f" {which} is nearly all zeros or all ones: flat images,"
                " stripes); it matches many"
                f" unrelated files, so at most {LOW_INFORMATION_CAP} are listed")
    elif truncated and not nearest:  # --nearest K lists K by design: nothing was cut
        note = f"more than {limit} files matched; the {limit} nearest are listed"
    return SearchResult(hash=imaging.int64_to_hex(int64), int64=int64, low_information=low,
                        max_distance=None if nearest else max_distance, nearest=nearest,
                        variants=[p.name for p in probes], matches=matches,
                        truncated=truncated, note=note)


# -- ranking -----------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A file some probe found: its best distance over the probes, and what ranking needs."""

    file_id: int
    distance: int  # bits, the best over the probes
    variant: str  # the probe that gave it (the query's own hash wins a tie)
    aspect_gap: float  # |ln(file aspect / that probe's aspect)|; inf when either is unknown
    sha1: str | None
    dhash: int
    width: int | None
    height: int | None


def candidates(conn: Connection, probes: list[variants.Variant], *, max_distance: int,
               nearest: int | None = None, per_probe: int = MAX_RESULTS + 1) -> list[Candidate]:
    """Every file within `max_distance` of a probe (or among each probe's `nearest`), once,
    with its best distance and the facts ranking compares (shape, SHA-1, size)."""
    with conn.cursor() as cur:
        if nearest:
            tagged = [(i, *row) for i, probe in enumerate(probes)
                      for row in _nearest(cur, probe.int64, nearest)]
            # bktree_nearest breaks ties at the k-th distance arbitrarily: every file as near
            # as the k-th is a candidate, so that ranking, not the index, picks among them.
            nearest_of: dict[int, int] = {}
            for _, file_id, d in tagged:
                nearest_of[file_id] = min(d, nearest_of.get(file_id, d))
            kth = sorted(nearest_of.values())[:nearest][-1] if tagged else None
            if kth is not None and kth <= MAX_USEFUL_DISTANCE:
                tagged += _within(cur, [probe.int64 for probe in probes], kth, per_probe)
        else:
            # One more than listed per probe, to know whether the list was cut.
            tagged = _within(cur, [probe.int64 for probe in probes], max_distance, per_probe)
        best: dict[int, tuple[int, int]] = {}  # file_id -> (distance, probe index)
        for i, file_id, distance in tagged:
            if file_id not in best or (distance, i) < best[file_id]:
                best[file_id] = (distance, i)  # probes[0] is the query's own hash
        if not best:
            return []
        cur.execute("SELECT file_id, sha1, dhash, width, height FROM files"
                    " WHERE file_id = ANY(%s)", (list(best),))
        facts = {row[0]: row[1:] for row in cur.fetchall()}
    found = []
    for file_id, (distance, i) in best.items():
        sha1, dhash, width, height = facts[file_id]
        found.append(Candidate(file_id, distance, probes[i].name,
                               _aspect_gap(probes[i].aspect, width, height), sha1, dhash,
                               width, height))
    return found


def _aspect_gap(aspect: float | None, width: int | None, height: int | None) -> float:
    if not aspect or not width or not height:
        return math.inf
    return abs(math.log(width / height / aspect))


def rank_key(c: Candidate) -> tuple:
    """Nearest first; at the same distance, a match of the query's own hash before one of a
    variant, then the file whose shape (aspect ratio) is the query's, then the older file.
    Chosen by ops/bench/ranking.py on a real MediaWiki (docs/search.md)."""
    return (c.distance, c.variant != "original", round(c.aspect_gap, 3), c.file_id)


def rank(found: list[Candidate]) -> list[Candidate]:
    """`found`, best first (`rank_key`)."""
    return sorted(found, key=rank_key)


def group(ranked: list[Candidate], same_picture_bits: int = SAME_PICTURE_BITS) -> list[
        list[Candidate]]:
    """Duplicates together, in rank order: the same SHA-1 (the same bytes under two names, or
    on two wikis), or the same size in pixels and hashes at most `same_picture_bits` apart
    (the same picture saved again: a JPEG re-encoded at another quality moves the stored
    thumbnail's hash by a bit or two). Each group sits where its best-ranked file was."""
    groups: list[list[Candidate]] = []
    by_sha1: dict[str, int] = {}
    by_size: dict[tuple[int, int], list[tuple[int, int]]] = {}  # size -> [(dhash, group)]
    for c in ranked:
        at = by_sha1.get(c.sha1) if c.sha1 else None
        size = (c.width, c.height) if c.width and c.height else None
        if at is None and size is not None:
            at = next((g for h, g in by_size.get(size, ())
                       if _hamming(h, c.dhash) <= same_picture_bits), None)
        if at is None:
            at = len(groups)
            groups.append([])
            if size is not None:  # compared with a group's first file only: no chains
                by_size.setdefault(size, []).append((c.dhash, at))
        groups[at].append(c)
        if c.sha1:
            by_sha1.setdefault(c.sha1, at)
    return groups


def _hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFF_FFFF_FFFF_FFFF).bit_count()


def _describe(conn: Connection, groups: list[list[Candidate]]) -> list[Match]:
    """Files, their articles and URLs for the ranked groups: one Match per group."""
    if not groups:
        return []
    server, articlepath = wiki_urls(conn)
    ids = [c.file_id for g in groups for c in g]
    with conn.cursor() as cur:
        cur.execute("SELECT f.file_id, f.title, f.dhash, f.low_information, f.thumb_url, p.title,"
                    " f.hashed_width FROM files f LEFT JOIN usages u ON u.file_id = f.file_id"
                    " LEFT JOIN pages p ON p.page_id = u.page_id"
                    " WHERE f.file_id = ANY(%s) ORDER BY p.title", (ids,))
        rows = cur.fetchall()
    files: dict[int, dict] = {}
    for file_id, title, dhash, low, thumb_url, page, hashed_width in rows:
        entry = files.setdefault(file_id, {"title": title, "dhash": dhash, "low": bool(low),
                                           "thumb_url": thumb_url, "width": hashed_width,
                                           "pages": []})
        if page is not None:
            entry["pages"].append(page)
    file_url = (lambda t: article_url(server, articlepath, "File:" + t)) if server else (
        lambda t: None)
    matches = []
    for g in groups:
        first = files[g[0].file_id]
        match = Match(file_id=g[0].file_id, title=first["title"], distance=g[0].distance,
                      variant=g[0].variant, hash=imaging.int64_to_hex(first["dhash"]),
                      low_information=first["low"], thumb_url=first["thumb_url"],
                      file_url=file_url(first["title"]), hashed_width=first["width"])
        pages = sorted({p for c in g for p in files[c.file_id]["pages"]})
        match.articles = [Article(p, article_url(server, articlepath, p)) for p in pages]
        match.duplicates = [Duplicate(files[c.file_id]["title"],
                                      file_url(files[c.file_id]["title"])) for c in g[1:]]
        matches.append(match)
    return matches


def describe_count(found: int, nearest: int | None, max_distance: int) -> str:
    """'1 file within 8 bits', 'the 5 nearest files', '2 files of the 5 nearest asked'."""
    files = "file" if found == 1 else "files"
    if nearest is None:
        return f"{found} {files} within {max_distance} bits"
    if found == nearest:
        return f"the {nearest} nearest {files}" if nearest > 1 else "the nearest file"
    return f"{found} {files} of the {nearest} nearest asked"


def stats(conn: Connection) -> dict:
    """What the index holds: articles, files by state, hashed files, and the wiki."""
    counts = ledger.counts(conn)
    states = {state: counts[state] for state in ledger.STATES}
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM files WHERE low_information")
        low = cur.fetchone()[0]
    info = ledger.wiki_facts(conn)
    return {"articles": counts["articles"], "files": counts["files"],
            "hashed": counts["hashed"], "low_information": low,
            "states": states, "wiki": info.get("sitename"), "server": info.get("server"),
            "last_crawl": ledger.get_state(conn, ledger.LAST_CRAWL)}


def _within(cur, hashes: list[int], radius: int, limit: int) -> list[tuple[int, int, int]]:
    """(query index, file_id, distance) of the files within `radius` of each of `hashes`.

    One round trip for all of them: each query hash is one index scan of a LATERAL join,
    nearest first and at most `limit` rows each.
    """
    cur.execute("SELECT q.i - 1, f.file_id, f.d"
                " FROM unnest(%s::bigint[]) WITH ORDINALITY AS q (h, i)"
                " CROSS JOIN LATERAL (SELECT file_id, dhash <-> q.h AS d FROM files"
                "  WHERE dhash <@ (q.h, %s) ORDER BY d, file_id LIMIT %s) f",
                (hashes, radius, limit))
    return cur.fetchall()


def _nearest(cur, int64: int, k: int) -> list[tuple[int, int]]:
    """(file_id, distance) of the `k` files nearest to `int64`, nearest first.

    Exact: `bktree_nearest` (sql/bktree) widens the radius through the multi-index-hashing
    index until k files are within it, and scans the table beyond 19 bits.
    """
    cur.execute("SELECT file_id, dhash <-> %s FROM bktree_nearest(NULL::files, 'dhash', %s, %s)",
                (int64, int64, k))
    return cur.fetchall()


def query_bytes(source: str, *, max_bytes: int, timeout: float,
                allow_hosts: frozenset[str] = frozenset()) -> bytes:
    """The bytes of a query image: a local file, or an http(s) URL fetched within the crawl's
    limits (`pipeline.safeurl`). A local file's error names the file."""
    if source.startswith(("http://", "https://")):
        from pipeline import safeurl

        return safeurl.fetch(source, max_bytes=max_bytes, timeout=timeout,
                             allow_hosts=allow_hosts).data
    from pipeline import localfile
    from pipeline.errors import WikihashError

    try:
        return localfile.read_bounded(source, max_bytes)
    except WikihashError as exc:
        raise type(exc)(f"{source}: {exc}") from None
