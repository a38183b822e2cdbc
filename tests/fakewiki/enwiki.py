"""An English-Wikipedia-shaped wiki of N articles, generated on the fly (docs/scale.md).

    shape = EnwikiShape(articles=100_000, seed=1)
    commons, wiki = shape.wikis()          # two FakeWikis: the shared repository and the wiki
    with FakeWikiServer(commons), FakeWikiServer(wiki) as server: ...

Nothing is held per article or per file: every page, image list and file is a pure function
of (seed, index), computed when api.php or a file request asks for it, so serving 10**6
articles costs what serving 10**3 does. Titles are built so that their byte order (what
`allpages` sorts by) is their index order, and each title can be read back to its index:
an `allpages` batch is a slice of indexes, a title lookup is a parse.

The distributions (and why) are in docs/scale.md, "The synthetic wiki".
"""

from __future__ import annotations

import bisect
import hashlib
import io
import math
import random
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from .model import (
    FILE_NS,
    FakeWiki,
    FileRecord,
    FileVersion,
    Page,
    Revision,
    dbkey,
    hash_path,
    url_encode,
)
from .server import FakeWikiServer

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SYLLABLES = sorted(c + v for c in CONSONANTS for v in VOWELS)  # 70, all two letters
WORD = 4  # syllables in a title's ordered prefix: 70**4 = 24M slots
# What follows the prefix: plain, disambiguated, non-ASCII, punctuation (never #<>[]|{}).
SUFFIXES = ("", " (film)", ", Texas", " – Île-de-France", "'s theorem", " São Paulo",
            " (1984 song)", " & Sons", " Łódź", " Ωmega", " Straße", " 東京", " (disambiguation)",
            ": A Novel", " Müller-Lüdenscheidt", " St. Mary's", " Café", " Đorđević", " 100%",
            " Ça va?")
FILE_SUFFIXES = ("", " (cropped)", " – Hôtel", " 2007", " Ñandú", ", detail", " №5", " d'Orsay")
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
PAGE_ID_BASE = {0: 1, 2: 300_000_000, 6: 600_000_000}  # page ids: article slots first


def word(index: int, width: int = WORD) -> str:
    """The fixed-width syllable word of `index`: byte order is index order."""
    out = []
    for _ in range(width):
        index, digit = divmod(index, len(SYLLABLES))
        out.append(SYLLABLES[digit])
    return "".join(reversed(out)).capitalize()


def unword(text: str, width: int = WORD) -> int | None:
    if len(text) < 2 * width:
        return None
    index = 0
    for i in range(width):
        syl = text[2 * i:2 * i + 2].lower()
        pos = bisect.bisect_left(SYLLABLES, syl)
        if pos == len(SYLLABLES) or SYLLABLES[pos] != syl:
            return None
        index = index * len(SYLLABLES) + pos
    return index


def _mix(*values: int) -> int:
    """A 64-bit hash of integers (deterministic across processes, unlike hash())."""
    digest = hashlib.blake2b(b"".join(v.to_bytes(8, "little", signed=True) for v in values),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class FileFacts:
    """What the generator says one file is."""

    name: str
    repo: str  # "local" or "shared"
    kind: str  # "jpeg" | "png" | "svg" | "ogg"
    content: int  # content seed: files with the same seed have the same bytes


class EnwikiShape:
    """The pure description of the wiki: which pages exist, what they use, what files are.

    Slots 0..slots-1 of the main namespace are articles, except every third, which is a
    redirect. `articles` is the number of articles (not redirects).
    """

    REDIRECT_EVERY = 3
    NO_IMAGES = 0.45  # share of articles with no image of their own
    OWN_MEDIAN, OWN_SIGMA = 3.0, 1.0  # lognormal count for the others
    GALLERY = 0.001  # share of list/gallery articles with 100-600 images
    ICONS = 200  # flag/icon files; icon k is used by p_k of articles, p_k in [1 %, 5 %]
    ICON_P = (0.01, 0.05)
    FILES_PER_ARTICLE = 2.5  # file-id space of article images, per article
    RED_LINK = 0.02  # own image references to a file that does not exist
    SHARED = 0.7  # files in the shared repository (Commons)
    DUPLICATE = 0.03  # files whose bytes are another file's
    PNG, OGG = 0.10, 0.01  # the rest are JPEG
    USER_PAGES = 0.1  # user pages per article, each using one file no article uses

    def __init__(self, articles: int, seed: int = 1) -> None:
        if articles < 1:
            raise ValueError("articles must be at least 1")
        self.articles = articles
        self.seed = seed
        # slots with `articles` non-redirects among them
        full, rest = divmod(articles, self.REDIRECT_EVERY - 1)
        self.slots = full * self.REDIRECT_EVERY + rest
        self.file_space = max(10, int(articles * self.FILES_PER_ARTICLE))
        self.user_pages = int(articles * self.USER_PAGES)
        rnd = random.Random(seed)
        lo, hi = (math.log(p) for p in self.ICON_P)
        self.icon_p = [math.exp(rnd.uniform(lo, hi)) for _ in range(self.ICONS)]
        self._icons: list[FileFacts | None] = [None] * self.ICONS
        if self.slots > len(SYLLABLES) ** WORD:
            raise ValueError(f"at most {len(SYLLABLES) ** WORD * 2 // 3} articles")

    # -- pages -------------------------------------------------------------------------------

    def is_redirect(self, slot: int) -> bool:
        return slot % self.REDIRECT_EVERY == self.REDIRECT_EVERY - 1

    def title(self, ns: int, slot: int) -> str:
        suffix = SUFFIXES[_mix(self.seed, ns, slot) % len(SUFFIXES)]
        return word(slot) + suffix

    def count(self, ns: int) -> int:
        return {0: self.slots, 2: self.user_pages}.get(ns, 0)

    def slot_of(self, ns: int, title: str) -> int | None:
        """The slot whose title this is, or None."""
        slot = unword(title)
        if slot is None or slot >= self.count(ns) or self.title(ns, slot) != title:
            return None
        return slot

    def first_slot(self, ns: int, key: bytes) -> int:
        """The first slot whose title's DB key sorts at or after `key`."""
        lo, hi = 0, self.count(ns)
        while lo < hi:
            mid = (lo + hi) // 2
            if dbkey(self.title(ns, mid)).encode() < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def images(self, ns: int, slot: int) -> list[str]:
        """The file names the page uses (MediaWiki's sorted, distinct list), red links too."""
        return sorted(map(self.ref_name, self.image_refs(ns, slot)),
                      key=lambda n: dbkey(n).encode())

    def image_refs(self, ns: int, slot: int) -> set[int]:
        """What the page uses, as integers: a file id (>= 0) or a red link, -1 - r for the
        missing file `red_link_name(r)`. `images` names them; the ledger preload and the truth
        check use the integers (a file's name costs a hash and a format)."""
        if ns == 2:
            return {self.file_space + self.ICONS + slot}
        if ns != 0 or self.is_redirect(slot):
            return set()
        rnd = random.Random(_mix(self.seed, 11, slot))
        refs = {self.file_space + k for k, p in enumerate(self.icon_p) if rnd.random() < p}
        if rnd.random() < self.GALLERY:
            own = int(math.exp(rnd.uniform(math.log(100), math.log(600))))
        elif rnd.random() < self.NO_IMAGES:
            own = 0
        else:
            own = min(500, max(1, round(rnd.lognormvariate(math.log(self.OWN_MEDIAN),
                                                           self.OWN_SIGMA))))
        for _ in range(own):
            if rnd.random() < self.RED_LINK:
                refs.add(-1 - rnd.randrange(self.file_space))
            else:
                refs.add(rnd.randrange(self.file_space))
        return refs

    def ref_name(self, ref: int) -> str:
        return self.file(ref).name if ref >= 0 else red_link_name(-1 - ref)

    def page_id(self, ns: int, slot: int) -> int:
        return PAGE_ID_BASE[ns] + slot

    # -- files -------------------------------------------------------------------------------

    def file(self, fid: int) -> FileFacts:
        """File `fid`: article images below file_space, then icons, then user-page files."""
        if self.file_space <= fid < self.file_space + self.ICONS:
            k = fid - self.file_space  # about 5 of an article's 8 files: made once
            if self._icons[k] is None:
                self._icons[k] = FileFacts(f"Flag of {word(k, 3)} {fid}.svg", "shared", "svg",
                                           fid)
            return self._icons[k]
        h = _mix(self.seed, 23, fid)
        u = (h & 0xFFFF) / 0x10000
        kind = "ogg" if u < self.OGG else "png" if u < self.OGG + self.PNG else "jpeg"
        ext = {"jpeg": "jpg", "png": "png", "ogg": "ogg"}[kind]
        repo = "shared" if ((h >> 16) & 0xFFFF) / 0x10000 < self.SHARED else "local"
        content = fid
        if ((h >> 32) & 0xFFFF) / 0x10000 < self.DUPLICATE and kind != "ogg":
            content = (h >> 48) % self.file_space  # bytes of another file (same kind below)
        suffix = FILE_SUFFIXES[(h >> 8) % len(FILE_SUFFIXES)]
        return FileFacts(f"{word(fid % len(SYLLABLES) ** 3, 3)}{suffix} {fid}.{ext}", repo,
                         kind, content)

    def file_id(self, name: str) -> int | None:
        m = re.search(r" (\d+)\.\w+$", name)
        if not m:
            return None
        fid = int(m.group(1))
        if fid >= self.file_space + self.ICONS + self.user_pages:
            return None
        return fid if self.file(fid).name == name else None

    def wikis(self) -> tuple[FakeWiki, FakeWiki]:
        """(shared repository, wiki) serving this shape; serve both."""
        commons = GeneratedWiki(self, "shared", None, name="shared", sitename="Fake Commons")
        wiki = GeneratedWiki(self, "local", commons)
        return commons, wiki

    # -- the truth ---------------------------------------------------------------------------

    def article_slots(self) -> Iterator[int]:
        return (s for s in range(self.slots) if not self.is_redirect(s))

    def expected_state(self, name: str) -> str:
        """The ledger state a crawl must reach for a file an article uses."""
        fid = self.file_id(name)
        return "missing" if fid is None else self.file_state(self.file(fid))

    @staticmethod
    def file_state(facts: FileFacts) -> str:
        """The ledger state a crawl must reach for an existing file an article uses."""
        return "unsupported" if facts.kind == "ogg" else "hashed"


def red_link_name(r: int) -> str:
    """The name of red link r (0 <= r < file_space): a file that does not exist."""
    return f"Missing {word(r, 5)}.jpg"


# -- bytes ------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def file_bytes(kind: str, content: int, seed: int) -> tuple[bytes, str]:
    """Small deterministic bytes for a file: ~100x75 JPEG/PNG, a flag SVG, an Ogg stub.

    Rasters are narrower than the default thumbnail width (120 px), so the wiki offers the
    original as the thumbnail and nothing is rendered per request; their pictures are a smooth
    colour field with shapes, so their dHashes spread as photos' do."""
    rnd = random.Random(_mix(seed, 31, content))
    if kind == "svg":
        colours = [f"#{rnd.randrange(1 << 24):06x}" for _ in range(3)]
        stripes = "".join(f'<rect y="{i * 20}" width="90" height="20" fill="{c}"/>'
                          for i, c in enumerate(colours))
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="90" height="60">{stripes}'
               f'<circle cx="{rnd.randint(15, 75)}" cy="30" r="12" fill="#fff"/></svg>')
        return svg.encode(), "image/svg+xml"
    if kind == "ogg":
        return b"OggS\x00\x02" + rnd.randbytes(58), "application/ogg"
    from PIL import Image, ImageDraw

    w, h = rnd.randint(90, 110), rnd.randint(60, 80)
    field = Image.new("RGB", (4, 3))
    field.putdata([tuple(rnd.randrange(256) for _ in range(3)) for _ in range(12)])
    img = field.resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(rnd.randint(2, 5)):
        x0, y0 = rnd.randrange(w - 10), rnd.randrange(h - 10)
        box = [x0, y0, x0 + rnd.randint(8, w // 2), y0 + rnd.randint(8, h // 2)]
        draw.ellipse(box, fill=tuple(rnd.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    if kind == "png":
        img.save(out, "PNG")
        return out.getvalue(), "image/png"
    img.save(out, "JPEG", quality=80)
    return out.getvalue(), "image/jpeg"


# -- the wiki, as FakeWiki sees it -------------------------------------------------------------


class GeneratedPages(Mapping):
    """(ns, title) → Page, computed on lookup; `sorted_from` walks a namespace in order."""

    def __init__(self, shape: EnwikiShape, repo: str) -> None:
        self.shape = shape
        self.repo = repo

    def _slot(self, key: tuple[int, str]) -> int | None:
        ns, title = key
        if self.repo != "local" and ns != FILE_NS:
            return None
        if ns == FILE_NS:
            fid = self.shape.file_id(title)
            if fid is None or self.shape.file(fid).repo != self.repo:
                return None
            return fid
        return self.shape.slot_of(ns, title)

    def page(self, ns: int, slot: int) -> Page:
        shape = self.shape
        if ns == FILE_NS:
            title = shape.file(slot).name
            images: list[str] = []
        else:
            title = shape.title(ns, slot)
            images = shape.images(ns, slot)
        redirect = "Main Page" if ns == 0 and shape.is_redirect(slot) else None
        page_id = shape.page_id(ns, slot)
        page = Page(page_id, ns, title, images=images, redirect_to=redirect)
        text = FakeWiki._text(images, redirect)
        page.revisions.append(Revision(page_id * 2 + 7, 0, EPOCH, text))
        return page

    def get(self, key, default=None):
        slot = self._slot(key)
        return default if slot is None else self.page(key[0], slot)

    def __getitem__(self, key):
        page = self.get(key)
        if page is None:
            raise KeyError(key)
        return page

    def __contains__(self, key) -> bool:
        return self._slot(key) is not None

    def __iter__(self):
        for ns in (0, 2):
            for slot in range(self.shape.count(ns) if self.repo == "local" else 0):
                yield ns, self.shape.title(ns, slot)

    def __len__(self) -> int:
        return self.shape.slots + self.shape.user_pages if self.repo == "local" else 0

    def sorted_from(self, ns: int, start: bytes | None, desc: bool) -> Iterator[Page]:
        count = self.shape.count(ns) if self.repo == "local" else 0
        if desc:
            slot = count - 1 if start is None else self.shape.first_slot(ns, start + b"\0") - 1
            step, stop = -1, -1
        else:
            slot = 0 if start is None else self.shape.first_slot(ns, start)
            step, stop = 1, count
        for s in range(slot, stop, step):
            yield self.page(ns, s)


class GeneratedFiles(Mapping):
    """File name → FileRecord for the files of one repository, computed on lookup."""

    def __init__(self, shape: EnwikiShape, repo: str) -> None:
        self.shape = shape
        self.repo = repo

    def get(self, name, default=None):
        fid = self.shape.file_id(name)
        if fid is None:
            return default
        facts = self.shape.file(fid)
        if self.repo is not None and facts.repo != self.repo:
            return default
        data, mime = file_bytes(facts.kind, facts.content, self.shape.seed)
        width, height = _size(data, mime)
        record = FileRecord(facts.name)
        record.versions.append(FileVersion(data, mime, EPOCH, width, height,
                                           duration=2.0 if facts.kind == "ogg" else None))
        return record

    def __getitem__(self, name):
        record = self.get(name)
        if record is None:
            raise KeyError(name)
        return record

    def __contains__(self, name) -> bool:
        fid = self.shape.file_id(name) if isinstance(name, str) else None
        return fid is not None and self.repo in (None, self.shape.file(fid).repo)

    def __iter__(self):
        total = self.shape.file_space + self.shape.ICONS + self.shape.user_pages
        return (f.name for f in map(self.shape.file, range(total))
                if self.repo in (None, f.repo))

    def __len__(self) -> int:
        return sum(1 for _ in self)


@lru_cache(maxsize=4096)
def _size(data: bytes, mime: str) -> tuple[int, int]:
    from .model import measure

    return measure(data, mime)


class GeneratedWiki(FakeWiki):
    """A read-only FakeWiki whose pages and files come from an EnwikiShape.

    `repo` None: every file of the shape (what a file server of both repositories serves).
    `files_base_url`, when set, is where its file URLs point instead of its own server (an
    upload host of its own, as upload.wikimedia.org is for every wiki; see `serve_files`)."""

    def __init__(self, shape: EnwikiShape, repo: str | None, shared: FakeWiki | None,
                 **kwargs) -> None:
        super().__init__(shared=shared, start=EPOCH, **kwargs)
        self.shape = shape
        self.pages = GeneratedPages(shape, repo)  # type: ignore[assignment]
        self.files = GeneratedFiles(shape, repo)  # type: ignore[assignment]
        self.files_base_url: str | None = None

    def file_url(self, name: str) -> str:
        if self.files_base_url is None:
            return super().file_url(name)
        return f"{self.files_base_url}/images/{hash_path(name)}{url_encode(name)}"

    def thumb_url(self, name: str, thumb_name: str) -> str:
        if self.files_base_url is None:
            return super().thumb_url(name, thumb_name)
        return (f"{self.files_base_url}/images/thumb/{hash_path(name)}{url_encode(name)}/"
                f"{url_encode(thumb_name)}")

    def page_by_id(self, pageid: int) -> Page | None:
        for ns, base in sorted(PAGE_ID_BASE.items(), key=lambda kv: -kv[1]):
            if pageid >= base:
                slot = pageid - base
                if ns == FILE_NS:
                    return None  # file description pages are reached by title only
                if slot < self.shape.count(ns):
                    return self.pages.page(ns, slot)
                return None
        return None

    def pages_sorted(self, ns: int, start: bytes | None = None,
                     desc: bool = False) -> Iterator[Page]:
        return self.pages.sorted_from(ns, start, desc)


@contextmanager
def serve(shape: EnwikiShape, *, files_url: str | None = None, keep_logs: bool = True,
          tcp_nodelay: bool = False) -> Iterator[tuple[FakeWikiServer, FakeWikiServer]]:
    """Serve the shape's two wikis on 127.0.0.1: yields (shared server, wiki server).

    With `files_url`, imageinfo's URLs name that server instead (one `serve_files` or several
    sharing its port), and these two serve only api.php."""
    commons, wiki = shape.wikis()
    commons.files_base_url = wiki.files_base_url = files_url
    options = {"keep_logs": keep_logs, "tcp_nodelay": tcp_nodelay}
    with FakeWikiServer(commons, **options) as shared, \
            FakeWikiServer(wiki, **options) as server:
        yield shared, server


def files_wiki(shape: EnwikiShape) -> GeneratedWiki:
    """A wiki that serves every file of the shape (both repositories) and no pages."""
    return GeneratedWiki(shape, None, None, name="files", sitename="Fake upload host")
