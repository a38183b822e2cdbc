"""Search benchmark: altered copies of a wiki's images, plain dhash against wikihash search.

A wiki is built straight into a fresh PostgreSQL database (no HTTP, no workers, to save time):
every image of tests/data/images plus `--generated` pictures from `tests/wikis.py`, each used by
one to three articles. The stored hash is what the crawler stores: the canonical hash
(`imaging.hash_bytes`) of a thumbnail `WIKIHASH_THUMB_WIDTH` px wide made with Pillow's LANCZOS
(PNG; JPEG originals as JPEG q80; SVGs rendered by cairosvg at that width; an image no wider is
its own thumbnail, as on Wikimedia).

Each image is then altered as people find it elsewhere (made from the full-size original):
half-size, JPEG q70, a watermark (a logo box and text in the bottom-right corner), +15%
brightness, mirrored, a 5% border (each side; white or black alternately), and a 5% crop (the
central 95% of width and height). Each copy is searched:

- plain: the canonical hash only, `files.dhash <@ (h, r)`;
- wikihash: `pipeline.search` with its query variants (mirror, trimmed border, uncropped...),
  merged per file by best distance, low-information queries capped as the CLI does.

Reported per radius: recall per alteration (an article using the original is among the results)
and the mean number of wrong articles (listed articles not using the original) per query; then,
at the default radius, what each variant adds, and the time per query.

Usage: python ops/bench/search.py [--generated 400] [--radii 4,6,8,10,12] [--out docs/search.md]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
import uuid
from pathlib import Path

import hashing  # noqa: E402 - after common, which puts the project root on sys.path
import psycopg2
from common import ADMIN_URL, ROOT, admin, machine_line
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps
from psycopg2.extras import execute_values

from pipeline import config, imaging, search, storage, variants  # noqa: E402
from tests.fakewiki.media import generated_image  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "images"  # the images the tests ship, with their licences
ALTERATIONS = ("half-size", "jpeg-q70", "watermark", "bright+15%", "mirrored", "border-5%",
               "crop-5%")
TARGETS = {"half-size": 95, "jpeg-q70": 95, "watermark": 95, "bright+15%": 95,
           "mirrored": 50, "border-5%": 50, "crop-5%": 50}
ABLATIONS = (("original",), ("original", "mirror"), ("original", "trimmed"),
             ("original", "uncropped"), ("original", "mirror", "trimmed", "trimmed-mirror"),
             variants.DEFAULT_VARIANTS)


# -- the wiki --------------------------------------------------------------------------------

def images(generated: int, corpus: Path) -> list[tuple[str, bytes]]:
    found = [(p.name, p.read_bytes()) for p in sorted(corpus.iterdir())
             if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")]
    for i in range(generated):
        fmt = "JPEG" if i % 3 else "PNG"
        found.append((f"Generated {i:04d}.{fmt.lower()}", generated_image(9000 + i, fmt)))
    return found


def thumbnail(name: str, data: bytes, width: int) -> bytes:
    """The thumbnail a wiki serves at `width` px, made exactly as ops/bench/hashing.py makes it."""
    lower = name.lower()
    fmt = "SVG" if lower.endswith(".svg") else "JPEG" if lower.endswith((".jpg", ".jpeg")) \
        else "PNG"
    return hashing.thumbnail(data, fmt, width)


def build(url: str, files: list[tuple[str, bytes]], width: int, rnd: random.Random) -> dict:
    """Pages, files and usages straight into the database; returns file title -> its pages."""
    storage.migrate(url)
    conn = psycopg2.connect(url)
    used: dict[str, set[str]] = {}
    with conn, conn.cursor() as cur:
        rows = []
        for name, data in files:
            result = imaging.hash_bytes(thumbnail(name, data, width))
            rows.append((name, result.int64, result.low_information,
                         f"http://wiki.test/thumb/{width}px-{name}"))
        execute_values(cur, "INSERT INTO files (title, state, dhash, low_information, thumb_url,"
                            " hashed_from) SELECT t, 'hashed', d, l, u, 'thumb' FROM (VALUES %s)"
                            " AS v(t, d, l, u)", rows)
        cur.execute("SELECT title, file_id FROM files")
        ids = dict(cur.fetchall())
        pages, usages = [], []
        page_id = 0
        for name, _ in files:
            for _ in range(rnd.randint(1, 3)):
                page_id += 1
                title = f"Article {page_id:05d}"
                pages.append((page_id, title))
                usages.append((page_id, ids[name]))
                used.setdefault(name, set()).add(title)
        # Some articles use a second, random image too (galleries).
        for pid, _title in rnd.sample(pages, len(pages) // 3):
            name = rnd.choice(files)[0]
            if (pid, ids[name]) not in usages:
                usages.append((pid, ids[name]))
                used.setdefault(name, set()).add(f"Article {pid:05d}")
        execute_values(cur, "INSERT INTO pages (page_id, title) VALUES %s", pages)
        execute_values(cur, "INSERT INTO usages (page_id, file_id) VALUES %s", usages)
        cur.execute("INSERT INTO wiki_info VALUES ('server', 'http://wiki.test'),"
                    " ('articlepath', '/wiki/$1')")
        cur.execute("ANALYZE")
    conn.close()
    return used


# -- altered copies --------------------------------------------------------------------------

def altered(image: Image.Image, how: str, index: int) -> bytes:
    image = image.convert("RGB")
    w, h = image.size
    fmt, extra = "PNG", {}
    if how == "half-size":
        image = image.resize((max(1, w // 2), max(1, h // 2)), Image.LANCZOS)
    elif how == "jpeg-q70":
        fmt, extra = "JPEG", {"quality": 70}
    elif how == "watermark":
        image = image.copy()
        draw = ImageDraw.Draw(image, "RGBA")
        box = (int(w * 0.62), int(h * 0.86), int(w * 0.97), int(h * 0.97))
        draw.rectangle(box, fill=(255, 255, 255, 150))
        font = ImageFont.load_default(size=max(8, (box[3] - box[1]) * 2 // 3))
        draw.text((box[0] + 3, box[1] + 1), "© stock.example", fill=(40, 40, 40, 220), font=font)
    elif how == "bright+15%":
        image = ImageEnhance.Brightness(image).enhance(1.15)
    elif how == "mirrored":
        image = ImageOps.mirror(image)
    elif how == "border-5%":
        colour = (255, 255, 255) if index % 2 else (0, 0, 0)
        image = ImageOps.expand(image, border=(round(w * 0.05), round(h * 0.05)), fill=colour)
    elif how == "crop-5%":
        dx, dy = round(w * 0.025), round(h * 0.025)
        image = image.crop((dx, dy, w - dx, h - dy))
    else:
        raise ValueError(how)
    out = io.BytesIO()
    image.save(out, fmt, **extra)
    return out.getvalue()


def evaluate(conn, queries, radii, probes_of) -> dict:
    """{(radius): {alteration: (found, total, wrong articles)}} for one way of probing."""
    table = {}
    for radius in radii:
        per = {how: [0, 0, 0] for how in ALTERATIONS}
        for how, truth, canonical, probes in queries:
            result = search.search_hashes(conn, canonical, probes_of(probes), max_distance=radius)
            listed = {a.title for m in result.matches for a in m.articles}
            per[how][0] += bool(listed & truth)
            per[how][1] += 1
            per[how][2] += len(listed - truth)
        table[radius] = per
    return table


def fmt_row(label: str, per: dict) -> str:
    total = sum(v[1] for v in per.values())
    wrong = sum(v[2] for v in per.values()) / max(1, total)
    cells = [f"{100 * per[h][0] / max(1, per[h][1]):.0f}%" for h in ALTERATIONS]
    return f"| {label} | " + " | ".join(cells) + f" | {wrong:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=400,
                        help="generated images besides the corpus")
    parser.add_argument("--radii", default="2,4,6,8,10,12")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "docs" / "search.md"),
                        help="the Markdown file whose bench:start/bench:end section is rewritten")
    parser.add_argument("--tiny", action="store_true",
                        help="CI size: tests/data's images, 20 generated, radius 8, no --out")
    args = parser.parse_args()
    corpus = CORPUS
    if args.tiny:
        args.generated, args.radii, args.out, corpus = 20, "8", "", CORPUS
    radii = [int(r) for r in args.radii.split(",")]
    width = config.load().thumb_width
    rnd = random.Random(args.seed)
    files = images(args.generated, corpus)
    name = f"wikihash_bench_search_{uuid.uuid4().hex[:8]}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    started = time.monotonic()
    used = build(url, files, width, rnd)
    built = time.monotonic() - started
    try:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        queries = []
        make_times = []
        for index, (fname, data) in enumerate(files):
            if fname.startswith("Generated") and index % 4:
                continue  # a quarter of the generated images are queried; all are distractors
            image, _ = imaging.prepare(data)
            for how in ALTERATIONS:
                copy = altered(image, how, index)
                t0 = time.perf_counter()
                canonical, probes = variants.query_variants(copy, variants.VARIANTS)
                make_times.append(time.perf_counter() - t0)
                queries.append((how, used[fname], canonical.int64, probes))
        def only(names):
            return lambda probes: [p for p in probes if p.name in names]
        plain = evaluate(conn, queries, radii, only(("original",)))
        ours = evaluate(conn, queries, radii, only(variants.DEFAULT_VARIANTS))
        default = search.DEFAULT_MAX_DISTANCE
        ablation = {names: evaluate(conn, queries, [default], only(names))[default]
                    for names in ABLATIONS}
        t0 = time.perf_counter()
        for _how, _truth, canonical, probes in queries[:300]:
            search.search_hashes(conn, canonical, only(variants.DEFAULT_VARIANTS)(probes),
                                 max_distance=default)
        db_time = (time.perf_counter() - t0) / min(300, len(queries))
        conn.close()
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    header = "| | " + " | ".join(ALTERATIONS) + " | wrong articles / query |"
    rule = "|---" * (len(ALTERATIONS) + 2) + "|"
    n_queries = len(queries) // len(ALTERATIONS)
    lines = [
        f"Wiki: {len(files)} images ({len(files) - args.generated} from the corpus,"
        f" {args.generated} generated), {sum(len(v) for v in used.values())} article uses;"
        f" stored hashes from {width} px thumbnails. {n_queries} images queried x"
        f" {len(ALTERATIONS)} alterations = {len(queries)} queries (corpus images and a quarter"
        " of the generated ones). Recall: an article using the original is listed.",
        "",
        "Targets: " + ", ".join(f"{h} >= {t}%" for h, t in TARGETS.items())
        + ", at most 2 wrong articles per query.",
        "",
        header, rule,
    ]
    for radius in radii:
        lines.append(fmt_row(f"plain dhash, r={radius}", plain[radius]))
        lines.append(fmt_row(f"**wikihash, r={radius}**", ours[radius]))
    lines += ["", f"What each query variant adds, at the default radius {default}:", "",
              header.replace("| |", "| variants probed |"), rule]
    for names, per in ablation.items():
        lines.append(fmt_row(" + ".join(names), per))
    lines += [
        "",
        f"Time per query: {1000 * statistics.mean(make_times):.1f} ms to decode and hash all"
        f" variants (mean over {len(make_times)} copies), {1000 * db_time:.1f} ms in PostgreSQL"
        f" for the {len(variants.DEFAULT_VARIANTS)} probes and the article lookup.",
        "",
        f"Machine: {machine_line()}."
        f" Built in {built:.0f} s. Command: `python ops/bench/search.py --generated"
        f" {args.generated} --radii {args.radii}`.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        path = Path(args.out)
        text = path.read_text()
        start = text.index("<!-- bench:start -->") + len("<!-- bench:start -->")
        end = text.index("<!-- bench:end -->")
        path.write_text(text[:start] + "\n" + report + text[end:])


if __name__ == "__main__":
    main()
