"""Fake wikis for crawl tests: articles and files drawn from tests/data/images and generated.

`build_wiki()` returns a wiki (with a shared repository) and the truth the crawl must reach.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from fakewiki import FakeWiki
from fakewiki.media import generated_image  # noqa: F401 - the tests' import
from fakewiki.model import file_name

HERE = Path(__file__).resolve().parent
SMALL_IMAGES = HERE / "data" / "images"


@dataclass
class Truth:
    articles: dict[str, set[str]] = field(default_factory=dict)  # title -> file names used
    missing: set[str] = field(default_factory=set)
    unsupported: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)


def corpus_files() -> list[tuple[str, bytes]]:
    return [(p.name.replace("_", " "), p.read_bytes()) for p in sorted(SMALL_IMAGES.iterdir())
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")]


def build_wiki(*, articles: int = 300, generated: int = 60, seed: int = 7,
               big_article_images: int = 620) -> tuple[FakeWiki, FakeWiki, Truth]:
    rnd = random.Random(seed)
    commons = FakeWiki(name="shared", sitename="Fake Commons")
    wiki = FakeWiki(shared=commons)
    truth = Truth()
    names: list[str] = []
    for i, (name, data) in enumerate(corpus_files()):
        wiki.add_file(name, data, repo="shared" if i % 2 else "local")
        names.append(file_name(name))
    for i in range(generated):
        fmt = "JPEG" if i % 3 else "PNG"
        name = f"Generated {i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        wiki.add_file(name, generated_image(seed * 1000 + i, fmt), repo="shared" if i % 4 else
                      "local")
        names.append(name)
    # The same bytes under a second name: downloaded and hashed once (invariant 3).
    first_local = next(n for n in names if n in wiki.files)
    wiki.add_file("Copy of " + first_local, wiki.files[first_local].current.data)
    names.append("Copy of " + first_local)
    wiki.add_file("Anthem.ogg", b"OggS" + bytes(2000), mime="audio/ogg", duration=12.0)
    truth.unsupported.add("Anthem.ogg")
    wiki.add_file("Broken.jpg", b"\xff\xd8\xff\xe0" + bytes(rnd.randrange(256) for _ in range(900)),
                  mime="image/jpeg", width=640, height=480)
    truth.corrupt.add("Broken.jpg")

    pool = names + sorted(truth.unsupported) + sorted(truth.corrupt)
    for i in range(articles):
        used = set(rnd.sample(pool, rnd.randint(0, 6)))
        if i % 50 == 0:
            used.add(f"Red link {i // 50 % 5}.jpg")
        title = f"Article {i:04d}" + (" (band)" if i % 7 == 0 else "")
        wiki.add_page(title, images=sorted(used))
        truth.articles[title] = used
        truth.missing |= {n for n in used if n.startswith("Red link")}
    # One article using more images than one API response carries (imlimit 500).
    big = {rnd.choice(names) for _ in range(big_article_images)}
    big |= {f"Gallery filler {i:04d}.png" for i in range(big_article_images - len(big))}
    wiki.add_page("List of everything", images=sorted(big))
    truth.articles["List of everything"] = big
    truth.missing |= {n for n in big if n.startswith("Gallery filler")}
    # Not articles: redirects and other namespaces.
    wiki.add_page("Redirect to article", redirect="Article 0001")
    wiki.add_page("Talk:Article 0001", images=[names[0]])
    return wiki, commons, truth


def current_truth(wiki: FakeWiki, corrupt: set[str]) -> Truth:
    """The truth a crawl of `wiki` as it is now must reach (files named in `corrupt` fail)."""
    truth = Truth()
    for (ns, title), page in wiki.pages.items():
        if ns == 0 and not page.is_redirect:
            truth.articles[title] = set(page.images)
    for name in set().union(*truth.articles.values()):
        found = wiki.find_file(name)
        if found is None:
            truth.missing.add(name)
        elif not found[0].current.mime.startswith("image/"):
            truth.unsupported.add(name)
        elif name in corrupt:
            truth.corrupt.add(name)
    return truth


def sync_clocks(*wikis: FakeWiki) -> None:
    """Give the wiki and its shared repository one clock, as real servers share real time."""
    latest = max(w.clock for w in wikis)
    for w in wikis:
        w.clock = latest
