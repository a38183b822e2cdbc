"""A Wikipedia-and-Commons pair of real MediaWikis with generated content, and its truth.

`build_pair(root)` installs both wikis under `root`, starts them, uploads files to each and
writes articles that use them the ways Wikipedia does (thumbnails, galleries, an infobox
template, red links, redirects, talk pages). `truth(pair)` reads what a crawl must find from
the wikis' own SQLite databases: articles are `page` rows of namespace 0 that are not
redirects, their files are `imagelinks`, a file is the local wiki's `image` row if it has one
(it shadows the repository's), else the shared repository's, else missing.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from wikis import SMALL_IMAGES, Truth, generated_image

from .wiki import MediaWiki

HASHABLE = ("BITMAP", "DRAWING")
# Bytes a thumbnailer cannot decode: imageinfo with iiurlwidth answers `urlparamnormal`.
BROKEN = "Broken.jpg"
INFOBOX = ('{| class="infobox"\n| [[File:{{{image}}}|220px|{{{caption|}}}]]\n|-\n'
           "| {{{name|}}}\n|}\n")


@dataclass
class Pair:
    """The wiki the crawl walks and the shared repository its files also come from."""

    wiki: MediaWiki
    shared: MediaWiki
    corrupt: set[str] = field(default_factory=set)
    uploaded: dict[str, bytes] = field(default_factory=dict)  # name -> bytes, both wikis
    build_seconds: float = 0.0

    def start(self) -> None:
        self.shared.start()
        self.wiki.start()

    def stop(self) -> None:
        self.wiki.stop()
        self.shared.stop()

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def install_pair(root: Path) -> Pair:
    """Two empty wikis under `root`, started: `shared` is `wiki`'s ForeignAPIRepo."""
    shared = MediaWiki(root / "shared", "sharedwiki", "Test Commons")
    wiki = MediaWiki(root / "wiki", "testwiki", "Test Wikipedia")
    shared.install()
    wiki.install(foreign=shared)
    pair = Pair(wiki, shared)
    pair.start()
    return pair


def build_pair(root: Path, *, articles: int = 120, generated: int = 48, seed: int = 13,
               big_gallery: int = 520) -> Pair:
    """Install, start and fill the pair (see the module docstring); the caller stops it."""
    started = time.monotonic()
    pair = install_pair(root)
    try:
        _fill(pair, articles, generated, seed, big_gallery)
    except BaseException:
        pair.stop()  # the caller gets no pair to stop: leave no php -S behind
        raise
    pair.build_seconds = time.monotonic() - started
    return pair


def _fill(pair: Pair, articles: int, generated: int, seed: int, big_gallery: int) -> None:
    rnd = random.Random(seed)
    wiki, shared = pair.wiki, pair.shared
    names: list[str] = []

    def upload(target: MediaWiki, name: str, data: bytes) -> None:
        target.upload(name, data)
        pair.uploaded[name] = data
        names.append(name)

    for i, path in enumerate(sorted(SMALL_IMAGES.iterdir())):
        name = path.name.replace("_", " ")
        upload(shared if i % 2 else wiki, name[0].upper() + name[1:], path.read_bytes())
    for i in range(generated):
        fmt = "JPEG" if i % 3 else "PNG"
        name = f"Generated {i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        upload(shared if i % 4 else wiki, name, generated_image(seed * 1000 + i, fmt))
    # The same bytes under a second name on each wiki: downloaded and hashed once.
    upload(wiki, "Copy of Generated 000.png", pair.uploaded["Generated 000.png"])
    upload(shared, "Copy on shared of Generated 000.png",
           pair.uploaded["Generated 000.png"])
    # One name on both wikis with different pictures: the local file shadows the shared one.
    upload(shared, "On both wikis.png", generated_image(seed * 1000 + 900))
    upload(wiki, "On both wikis.png", generated_image(seed * 1000 + 901))
    names.remove("On both wikis.png")  # listed twice by the two uploads
    upload(wiki, "Anthem.ogg", b"OggS" + bytes(2000))
    upload(shared, "Manual.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    upload(wiki, BROKEN, b"\xff\xd8\xff\xe0" + bytes(rnd.randrange(256) for _ in range(900)))
    pair.corrupt.add(BROKEN)

    wiki.edit("Template:Infobox", INFOBOX)
    for i in range(articles):
        used = rnd.sample(names, rnd.randint(0, 6))
        if i % 40 == 0:
            used.append(f"Red link {i // 40}.jpg")
        title = f"Article {i:04d}" + (" (band)" if i % 7 == 0 else "")
        wiki.edit(title, article_text(title, used, rnd))
    # More images than one API answer carries (imlimit=max is 500 for anonymous clients).
    if big_gallery:
        gallery = [rnd.choice(names) for _ in range(20)]
        gallery += [f"Gallery filler {i:04d}.png" for i in range(big_gallery - len(gallery))]
        wiki.edit("List of everything", "<gallery>\n" + "\n".join(f"File:{n}" for n in gallery)
                  + "\n</gallery>\n")
    # Not articles: a redirect (with an image on it), a talk page, a file description page.
    wiki.edit("Redirect to article", "#REDIRECT [[Article 0001]]\n[[File:Generated 001.jpg]]")
    wiki.edit("Talk:Article 0001", f"[[File:{names[0]}]]")


def article_text(title: str, files: list[str], rnd: random.Random) -> str:
    """Wikitext using `files` in the ways articles do: infobox, thumbnails, a gallery."""
    parts = [f"'''{title}''' is a test article."]
    rest = list(files)
    if rest and rnd.random() < 0.4:
        parts.insert(0, f"{{{{Infobox|name={title}|image={rest.pop(0)}|caption=It}}}}")
    while rest and rnd.random() < 0.6:
        parts.append(f"[[File:{rest.pop(0)}|thumb|{rnd.choice(['left', 'right'])}|A caption]]")
    if rest:
        parts.append("<gallery>\n" + "\n".join(f"File:{n}|caption {n}" for n in rest)
                     + "\n</gallery>")
    parts.append("[[Article 9999]] is a red link to an article; [[:File:Generated 002.jpg]]"
                 " links to a file without showing it.")
    return "\n\n".join(parts)


def truth(pair: Pair) -> Truth:
    """What a crawl of `pair.wiki` must find, from the two wikis' databases."""
    found = Truth()
    rows = pair.wiki.sql("SELECT page_title, il_to FROM page LEFT JOIN imagelinks"
                         " ON il_from = page_id WHERE page_namespace = 0"
                         " AND page_is_redirect = 0")
    for page, file in rows:
        files = found.articles.setdefault(page.replace("_", " "), set())
        if file:
            files.add(file.replace("_", " "))
    local = dict(pair.wiki.sql("SELECT img_name, img_media_type FROM image"))
    shared = dict(pair.shared.sql("SELECT img_name, img_media_type FROM image"))
    for name in set().union(*found.articles.values()):
        key = name.replace(" ", "_")
        media = local.get(key, shared.get(key))
        if media is None:
            found.missing.add(name)
        elif media not in HASHABLE:
            found.unsupported.add(name)
        elif name in pair.corrupt:
            found.corrupt.add(name)
    return found
