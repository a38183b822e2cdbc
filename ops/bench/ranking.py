#!/usr/bin/env python3
"""Ranking benchmark: is the file a query was made from the first result, on a real MediaWiki?

A real MediaWiki 1.39 (tests/mediawiki: Debian's package, SQLite, ImageMagick thumbnails made
on request) is filled with many near-identical files, as Wikipedia has them:

- photo families: a photograph (a crop of tests/data's photographs, or a generated one), two
  crops of it of another shape (the top three quarters, the left 70%), a tight central crop of
  the same shape (every third family), a detail (the central half), the same bytes uploaded
  again under another name (every second family: same SHA-1) and the same pixels saved again
  at JPEG q75 (every third family: same hash and size, another SHA-1);
- flags: a few layouts (tricolours, a Nordic cross, a canton, a disc) in several colourings
  each, the same 3:2 shape;
- tests/data's images and generated pictures (tests/fakewiki's `generated_image`).

Each file is used by its own article; every fourth one is also in a gallery of five. The wiki
is crawled by the real pipeline (`python -m pipeline worker` and `crawl`, a private Redis, a
scratch database, the configured thumbnail width). Every file but the byte copies is then
altered as ops/bench/search.py alters images (half-size, JPEG q70, a watermark, +15%
brightness, a 5% white border, mirrored, a 5% crop) and searched at the default radius, with
today's query variants, by:

- main: main's ranking before this benchmark (commit 8cd97bf), reproduced here: files merged
  by best distance over the probes, sorted by (distance, file id), one result per file;
- wikihash: `pipeline.search.search_hashes` as it is now;
- and the candidate rankings the choice was made from, on the same candidates.

Per alteration: found (an article using the file, or a byte copy of it, is listed), first
right (the first result is that file or groups it), and wrong articles per query (listed
articles that use neither the file nor a byte copy of it).

Usage: python ops/bench/ranking.py [--families 40] [--generated 60] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from common import ROOT, USER_AGENT, Proc, machine_line, redis_server, scratch_database

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

import psycopg2  # noqa: E402
from mediawiki import MediaWiki, available  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from pipeline import config, imaging, search, variants  # noqa: E402
from tests.fakewiki.media import generated_image  # noqa: E402

_spec = importlib.util.spec_from_file_location("search_bench", ROOT / "ops/bench/search.py")
search_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search_bench)

ALTERATIONS = ("half-size", "jpeg-q70", "watermark", "bright+15%", "border-5%", "mirrored",
               "crop-5%")
GEOMETRIC = ("border-5%", "mirrored", "crop-5%")
TARGET_FIRST = {h: (85 if h in GEOMETRIC else 95) for h in ALTERATIONS}
TARGET_WRONG = 1.5
CORPUS = ROOT / "tests" / "data" / "images"
PALETTE = [(206, 17, 38), (0, 56, 147), (255, 255, 255), (0, 122, 61), (252, 209, 22),
           (0, 0, 0), (255, 130, 0), (0, 150, 220)]


# -- the files ---------------------------------------------------------------------------------

def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def photographs() -> list[Image.Image]:
    found = []
    for path in sorted(CORPUS.iterdir()):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
            with Image.open(path) as img:
                if min(img.size) >= 300 and img.mode in ("RGB", "L"):
                    found.append(img.convert("RGB"))
    return found


def family_base(i: int, sources: list[Image.Image], rnd: random.Random) -> Image.Image:
    """A photograph: a crop of a real one (every third family) or a generated one."""
    if i % 3 == 0 and sources:
        src = sources[(i // 3) % len(sources)]
        w, h = src.size
        cw, ch = int(w * rnd.uniform(0.6, 1.0)), int(h * rnd.uniform(0.6, 1.0))
        x, y = rnd.randint(0, w - cw), rnd.randint(0, h - ch)
        img = src.crop((x, y, x + cw, y + ch))
        scale = rnd.uniform(800, 1200) / cw
    else:
        from thumbs import photo

        img = Image.open(io.BytesIO(photo(5000 + i)))
        scale = 1.0
    return img.resize((round(img.width * scale), round(img.height * scale)),
                      Image.Resampling.LANCZOS).convert("RGB")


def family(i: int, sources: list[Image.Image], rnd: random.Random) -> list[tuple[str, bytes]]:
    base = family_base(i, sources, rnd)
    w, h = base.size
    stem = f"Photo {i:03d}"
    data = jpeg(base)
    files = [(f"{stem}.jpg", data),
             (f"{stem} top.jpg", jpeg(base.crop((0, 0, w, round(h * 0.75))))),
             (f"{stem} left.jpg", jpeg(base.crop((0, 0, round(w * 0.7), h)))),
             (f"{stem} detail.jpg", jpeg(base.crop((w // 4, h // 4, w - w // 4, h - h // 4))))]
    if i % 3 == 1:
        dx, dy = round(w * 0.05), round(h * 0.05)
        files.append((f"{stem} tight.jpg", jpeg(base.crop((dx, dy, w - dx, h - dy)))))
    if i % 2 == 0:
        files.append((f"{stem} copy.jpg", data))
    if i % 3 == 0:
        files.append((f"{stem} resaved.jpg", jpeg(base, 75)))
    return files


def flag(layout: str, colours: list[tuple[int, int, int]]) -> Image.Image:
    img = Image.new("RGB", (600, 400), colours[0])
    draw = ImageDraw.Draw(img)
    a, b, c = colours
    if layout == "vertical":
        draw.rectangle([200, 0, 400, 400], fill=b)
        draw.rectangle([400, 0, 600, 400], fill=c)
    elif layout == "horizontal":
        draw.rectangle([0, 133, 600, 266], fill=b)
        draw.rectangle([0, 266, 600, 400], fill=c)
    elif layout == "cross":
        draw.rectangle([160, 0, 240, 400], fill=b)
        draw.rectangle([0, 160, 600, 240], fill=b)
        draw.rectangle([185, 0, 215, 400], fill=c)
        draw.rectangle([0, 185, 600, 215], fill=c)
    elif layout == "canton":
        draw.rectangle([0, 0, 600, 200], fill=b)
        draw.rectangle([0, 0, 260, 200], fill=c)
    else:  # "disc"
        draw.ellipse([180, 80, 420, 320], fill=b)
        draw.ellipse([260, 160, 340, 240], fill=c)
    return img


def flags(count: int, rnd: random.Random) -> list[tuple[str, bytes]]:
    layouts = ("vertical", "horizontal", "cross", "canton", "disc")
    files = []
    for i in range(count):
        layout = layouts[i % len(layouts)]
        colours = rnd.sample(PALETTE, 3)
        files.append((f"Flag {layout} {i:02d}.png", png(flag(layout, colours))))
    return files


def corpus(families: int, flag_count: int, generated: int, seed: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed)
    sources = photographs()
    files: list[tuple[str, bytes]] = []
    for i in range(families):
        files += family(i, sources, rnd)
    files += flags(flag_count, rnd)
    for path in sorted(CORPUS.iterdir()):
        name = path.name.replace("_", " ")
        files.append((name[0].upper() + name[1:], path.read_bytes()))
    for i in range(generated):
        fmt = "JPEG" if i % 3 else "PNG"
        files.append((f"Generated {i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}",
                      generated_image(seed * 1000 + i, fmt)))
    return files


def fill(wiki: MediaWiki, files: list[tuple[str, bytes]]) -> None:
    for name, data in files:
        wiki.upload(name, data)
    names = [n for n, _ in files]
    for name in names:
        wiki.edit(f"About {name.rsplit('.', 1)[0]}", f"[[File:{name}|thumb|{name}]]\nText.")
    gallery = names[::4]
    for i in range(0, len(gallery), 5):
        wiki.edit(f"Gallery {i // 5:03d}", "<gallery>\n" + "\n".join(
            f"File:{n}" for n in gallery[i:i + 5]) + "\n</gallery>\n")


# -- the crawl ---------------------------------------------------------------------------------

def crawl(api_url: str, url: str, broker: str, timeout: float) -> float:
    env = dict(os.environ)
    env.update({"WIKIHASH_DATABASE_URL": url, "WIKIHASH_BROKER_URL": broker,
                "WIKIHASH_API_URL": api_url, "WIKIHASH_USER_AGENT": USER_AGENT,
                "WIKIHASH_MAX_DOWNLOADS": "4", "WIKIHASH_MAX_MBITS": "1000",
                "WIKIHASH_FETCH_TIMEOUT": "60", "WIKIHASH_REQUEUE_AFTER": "120"})
    worker = Proc(["worker", "-c", "2", "--loglevel", "WARNING"], env)
    started = time.monotonic()
    try:
        time.sleep(1)
        done = Proc(["crawl"], env)
        try:
            code = done.popen.wait(timeout)
        finally:
            done.stop()
        if code != 0:
            tail = "\n".join(line for _, _, line in done.lines[-20:])
            raise RuntimeError(f"the crawl failed ({code}):\n{tail}")
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM files WHERE state = 'pending'")
            pending = cur.fetchone()[0]
        conn.close()
        if pending:
            raise RuntimeError(f"{pending} files still pending after the crawl")
    finally:
        worker.stop()
    return time.monotonic() - started


# -- ranking -----------------------------------------------------------------------------------

def main_ranking(found: list[search.Candidate]) -> list[list[search.Candidate]]:
    """Main's order (8cd97bf): each file once at its best distance, (distance, file id)."""
    return [[c] for c in sorted(found, key=lambda c: (c.distance, c.file_id))]


def by(key: Callable, grouped: int | None) -> Callable:
    """Sorted by `key`; grouped (`search.group`, same size within `grouped` bits) unless None."""
    def ranking(found):
        ranked = sorted(found, key=key)
        return [[c] for c in ranked] if grouped is None else search.group(ranked, grouped)
    return ranking


CHOSEN = "distance, own hash, aspect ratio; same size within 2 bits grouped too"
CANDIDATES = {
    "main: distance, file id": main_ranking,
    "distance, own hash first": by(lambda c: (c.distance, c.variant != "original", c.file_id),
                                   None),
    "own hash first, then distance": by(lambda c: (c.variant != "original", c.distance,
                                                   c.file_id), None),
    "distance, aspect ratio": by(lambda c: (c.distance, round(c.aspect_gap, 3), c.file_id),
                                 None),
    "distance, own hash, aspect ratio": by(lambda c: (c.distance, c.variant != "original",
                                                      round(c.aspect_gap, 3), c.file_id), None),
    "distance, own hash, aspect ratio, same SHA-1 or hash and size grouped": by(
        search.rank_key, 0),
    "distance + 2 x aspect gap > 5%, own hash, grouped as that": by(
        lambda c: (c.distance + 2 * (c.aspect_gap > 0.05), c.variant != "original",
                   round(c.aspect_gap, 3), c.file_id), 0),
    "distance, own hash, aspect ratio; same size within 1 bit grouped too": by(
        search.rank_key, 1),
    CHOSEN: by(search.rank_key, 2),
    "distance, own hash, aspect ratio; same size within 3 bits grouped too": by(
        search.rank_key, 3),
}


@contextlib.contextmanager
def connection(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def ledger(url: str) -> tuple[dict[str, int], dict[int, str | None], dict[int, set[str]]]:
    with connection(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT title, file_id, sha1 FROM files WHERE state = 'hashed'")
        rows = cur.fetchall()
        cur.execute("SELECT u.file_id, p.title FROM usages u JOIN pages p USING (page_id)")
        pages: dict[int, set[str]] = defaultdict(set)
        for file_id, title in cur.fetchall():
            pages[file_id].add(title)
    return {t: i for t, i, _ in rows}, {i: s for _, i, s in rows}, pages


class Tally:
    def __init__(self) -> None:
        self.n = defaultdict(int)
        self.found = defaultdict(int)
        self.first = defaultdict(int)
        self.shown = defaultdict(int)
        self.wrong = defaultdict(int)

    def add(self, how: str, groups: list[list[int]], right: set[int],
            pages: dict[int, set[str]]) -> None:
        truth = set().union(*(pages[i] for i in right))
        listed = set().union(*(pages[i] for g in groups for i in g)) if groups else set()
        self.n[how] += 1
        self.found[how] += bool(listed & truth)
        self.first[how] += bool(groups and set(groups[0]) & right)
        self.shown[how] += bool(groups and groups[0][0] in right)
        self.wrong[how] += len(listed - truth)

    def row(self, label: str) -> str:
        cells = [f"{100 * self.found[h] / self.n[h]:.0f}% / {100 * self.first[h] / self.n[h]:.0f}%"
                 f" / {self.wrong[h] / self.n[h]:.2f}" for h in ALTERATIONS]
        total = sum(self.n.values())
        return (f"| {label} | " + " | ".join(cells)
                + f" | {sum(self.found.values()) / total:.1%}"
                + f" | {sum(self.first.values()) / total:.1%}"
                + f" | {sum(self.shown.values()) / total:.1%}"
                + f" | {sum(self.wrong.values()) / total:.2f} |")

    def meets(self) -> bool:
        total = sum(self.n.values())
        return (all(100 * self.first[h] >= TARGET_FIRST[h] * self.n[h] for h in ALTERATIONS)
                and sum(self.wrong.values()) <= TARGET_WRONG * total)


def measure(url: str, files: list[tuple[str, bytes]], radius: int):
    ids, sha1s, pages = ledger(url)
    twins: dict[str, set[int]] = defaultdict(set)
    for file_id, sha1 in sha1s.items():
        twins[sha1].add(file_id)
    seen: set[bytes] = set()
    tallies = {"main": Tally(), "wikihash": Tally(), **{k: Tally() for k in CANDIDATES}}
    seconds = defaultdict(list)
    skipped = 0
    with connection(url) as conn:
        for name, data in files:
            if data in seen:
                continue  # a byte copy: the same queries as its first upload
            seen.add(data)
            if name not in ids:
                skipped += 1  # not hashed (cannot happen on this wiki; counted if it does)
                continue
            right = twins[sha1s[ids[name]]] or {ids[name]}
            if len(seen) % 50 == 0:
                print(f"ranking: {len(seen)} files queried", file=sys.stderr, flush=True)
            image, _ = imaging.prepare(data)
            for how in ALTERATIONS:
                copy = search_bench.altered(image, how, 1)  # index 1: a white border
                canonical, probes = variants.query_variants(copy)
                t0 = time.process_time()
                found = search.candidates(conn, probes, max_distance=radius)
                seconds["candidates"].append(time.process_time() - t0)
                for label, ranking in CANDIDATES.items():
                    t0 = time.process_time()
                    groups = ranking(found)
                    cap = (search.LOW_INFORMATION_CAP
                           if any(imaging.is_low_information(p.int64) for p in probes)
                           else search.MAX_RESULTS)
                    groups = groups[:cap]
                    seconds[label].append(time.process_time() - t0)
                    tallies[label].add(how, [[c.file_id for c in g] for g in groups], right,
                                       pages)
                t0 = time.perf_counter()
                result = search.search_hashes(conn, canonical.int64, probes, max_distance=radius)
                seconds["wikihash wall"].append(time.perf_counter() - t0)
                tallies["wikihash"].add(how, [[m.file_id] + [ids[d.title] for d in m.duplicates]
                                              for m in result.matches], right, pages)
    tallies["main"] = tallies["main: distance, file id"]
    return tallies, seconds, skipped


def report(tallies, seconds, files, crawl_s, width, radius, command) -> str:
    queried = tallies["main"].n[ALTERATIONS[0]]
    header = ("| ranking | " + " | ".join(ALTERATIONS)
              + " | found | first right | first file shown right | wrong articles / query |")
    rule = "|---" * (len(ALTERATIONS) + 5) + "|"
    lines = [
        f"Real MediaWiki 1.39 (ImageMagick thumbnails), {len(files)} files uploaded"
        f" ({len({d for _, d in files})} distinct contents), crawled by the pipeline in"
        f" {crawl_s:.0f} s at {width} px; {queried} files queried x {len(ALTERATIONS)}"
        f" alterations = {queried * len(ALTERATIONS)} queries at r={radius}, today's query"
        " variants. Each cell: found / first result right / wrong articles per query."
        " First file shown right: the first result's own file (not one grouped under it) is"
        " the query's file or a byte copy of it.",
        "",
        "Targets: first right >= 95% (non-geometric), >= 85% (border, mirror, crop);"
        f" <= {TARGET_WRONG} wrong articles per query; found no lower than main.",
        "",
        header, rule,
        tallies["main"].row("main (8cd97bf), baseline"),
        tallies["wikihash"].row("**wikihash now**"),
        "", "Candidate rankings, on the same candidates:", "", header, rule,
    ]
    for label in CANDIDATES:
        lines.append(tallies[label].row(label) + (" meets all" if tallies[label].meets() else ""))
    lines += [
        "",
        f"CPU per query: {1000 * statistics.mean(seconds['candidates']):.2f} ms for the"
        " candidates (client side; PostgreSQL's not counted),"
        f" {1000 * statistics.mean(seconds['main: distance, file id']):.3f} ms to rank as main,"
        f" {1000 * statistics.mean(seconds[CHOSEN]):.3f}"
        " ms to rank and group as now; wall time of the whole search now"
        f" {1000 * statistics.median(seconds['wikihash wall']):.1f} ms (median).",
        "",
        f"Machine: {machine_line()}. Command: `{command}`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", type=int, default=40, help="photo families")
    parser.add_argument("--flags", type=int, default=25, help="flags (5 layouts)")
    parser.add_argument("--generated", type=int, default=60, help="generated pictures")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the crawl")
    parser.add_argument("--keep", action="store_true",
                        help="keep the crawled database (its URL is printed) for --database")
    parser.add_argument("--database", metavar="URL",
                        help="measure a database crawled by an earlier --keep run of the same"
                             " sizes and seed (no wiki, no crawl)")
    parser.add_argument("--tiny", action="store_true", help="CI size: a few files")
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"ranking: {reason}", file=sys.stderr)
        return 1
    if args.tiny:
        args.families, args.flags, args.generated = 2, 5, 3
    command = "python ops/bench/ranking.py" + (" --tiny" if args.tiny else
                                               f" --families {args.families} --flags"
                                               f" {args.flags} --generated {args.generated}")
    files = corpus(args.families, args.flags, args.generated, args.seed)
    width = config.load().thumb_width
    radius = search.DEFAULT_MAX_DISTANCE
    if args.database:
        tallies, seconds, skipped = measure(args.database, files, radius)
        print(report(tallies, seconds, files, 0, width, radius, command))
        return 0
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wikihash-ranking-")))
        wiki = MediaWiki(tmp / "wiki", "rankwiki", "Ranking bench")
        wiki.install()
        stack.enter_context(wiki)
        started = time.monotonic()
        fill(wiki, files)
        print(f"ranking: {len(files)} files uploaded and used in"
              f" {time.monotonic() - started:.0f} s", file=sys.stderr)
        broker = stack.enter_context(redis_server())
        url = stack.enter_context(scratch_database(keep=args.keep))
        if args.keep:
            print(f"ranking: database {url} (kept)", file=sys.stderr)
        crawl_s = crawl(wiki.api_url, url, broker, args.timeout)
        print(f"ranking: crawled in {crawl_s:.0f} s", file=sys.stderr)
        tallies, seconds, skipped = measure(url, files, radius)
    if skipped:
        print(f"ranking: {skipped} files were not hashed", file=sys.stderr)
    print(report(tallies, seconds, files, crawl_s, width, radius, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
