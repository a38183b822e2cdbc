#!/usr/bin/env python3
"""Which stored thumbnail width: real MediaWiki thumbnails against the tutorial's query.

Uploads originals to a real MediaWiki 1.39 (tests/mediawiki: Debian's package, thumbnails by
ImageMagick, made on request by its 404 handler), then for each width asks the API for the
thumbnail URL (imageinfo, iiurlwidth), downloads it and hashes it as the workers do. The
tutorial's query is the canonical hash of the *original* (`pipeline.imaging.hash_bytes`, i.e.
`imagehash.dhash` of the decoded original); a file is found when its stored hash is within
r=3 of it. Three tables:

1. **Per width** (the real wiki's thumbnails): recall at r=3 and exact (r=0) for JPEG
   originals and per other format (PNG, SVG, GIF, WebP), the drift (Hamming distance,
   mean / p95), the mean bytes downloaded, and the crawl time per million files under the
   robot policy: 2 connections sharing 25 Mbit/s, so each connection spends per file the
   request latency plus bytes / 12.5 Mbit/s, and files/s = 2 / (latency + 8 * bytes / 12.5e6).
   The latency is stated (--latency-ms, default 100 ms: docs/scale.md's "thumbnail fetch
   latency, cache hit, keep-alive"; this machine cannot reach Wikimedia), with 50 and 200 ms
   beside it. The wiki's own render time is printed but not charged (Wikimedia serves the
   standard widths cached).
2. **Per cause** (JPEG originals): MediaWiki's exact ImageMagick command
   (BitmapHandler::transformImageMagick: `-quality 80 -define jpeg:size=WxH -thumbnail WxH!
   -depth 8 -sharpen 0x0.4 -sampling-factor 2x2,1x1,1x1`, read from the wiki's debug log) is
   re-run with one part changed at a time: no sharpening, 4:4:4 chroma, quality 95, no JPEG
   at all (PNG output), no DCT-scaled decode, and Pillow's Lanczos (the query's own filter) in
   place of ImageMagick's resize. The reproduction is checked pixel-identical to the wiki's
   own thumbnails first (printed: "identical").
3. **Per correction** (every format, the real wiki's thumbnails): hashing the thumbnail with a
   slight Gaussian blur (to undo the unsharp mask), from the thumbnail scaled back up to the
   original's size, or reduced in two steps, against the plain hash.

Originals: JPEG crops of real photographs (tests/data's and --corpus's), generated
photographs (JPEG q85, with sensor-like noise), PNG drawings, and every file of --corpus.
`--tiny` (CI) uses 16 files and two widths.

Usage: python ops/bench/thumbs.py [--photos 300] [--corpus DIR] [--latency-ms 100] [--tiny]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
import requests
from PIL import Image, ImageChops, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from crawl import generated_photo  # noqa: E402
from mediawiki import MediaWiki, available  # noqa: E402

from pipeline.imaging import hash_bytes, hex_to_int64, prepare  # noqa: E402

# Wikimedia's $wgThumbnailSteps up to 960 (a request between two steps is served the next one
# up), and 300 and 400, which its $wgThumbLimits offers but which cost as 330 and 500 there.
WIDTHS = (120, 250, 300, 330, 400, 500, 960)
CAUSE_WIDTHS = (120, 250, 330, 500)
BASELINE = 120  # the default before issue 13
SLOTS, MBITS = 2, 25.0  # the robot policy: 2 connections sharing 25 Mbit/s
LATENCY_MS = 100.0  # docs/scale.md: thumbnail fetch latency, cache hit, keep-alive
RECALL_TARGET, COST_BUDGET = 0.98, 0.10
RADIUS = 3
MASK = (1 << 64) - 1


# -- originals ----------------------------------------------------------------------------


def photo(seed: int, fmt: str = "JPEG") -> bytes:
    """ops/bench/crawl.py's generated photograph with fine noise on it, as a sensor leaves."""
    rnd = random.Random(seed)
    img = Image.open(io.BytesIO(generated_photo(seed, "PNG"))).convert("RGB")
    noise = Image.effect_noise(img.size, rnd.uniform(3, 10)).convert("RGB")
    img = ImageChops.add(img, noise, scale=1.0, offset=-128)
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return out.getvalue()


def crops(sources: list[Image.Image], count: int, seed: int) -> list[tuple[str, bytes]]:
    """`count` JPEG originals cut from real photographs: a random crop of 40-100% of each side,
    scaled to 500-1600 px wide, saved at quality 80-95 (as cameras and editors do)."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = int(w * rnd.uniform(0.4, 1.0)), int(h * rnd.uniform(0.4, 1.0))
        x, y = rnd.randint(0, w - cw), rnd.randint(0, h - ch)
        img = src.crop((x, y, x + cw, y + ch))
        width = min(cw, rnd.randint(500, 1600))
        img = img.resize((width, max(1, round(ch * width / cw))), Image.Resampling.LANCZOS)
        data = io.BytesIO()
        img.save(data, "JPEG", quality=rnd.randint(80, 95))
        out.append((f"Photo crop {i:04d}.jpg", data.getvalue()))
    return out


def photographs(folder: Path) -> list[Image.Image]:
    """The photographs of `folder`: JPEGs, and PNGs at least 400 px wide in full colour."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        with Image.open(path) as img:
            if img.width >= 400 and img.mode in ("RGB", "L", "RGBA"):
                found.append(img.convert("RGB"))
    return found


def originals(photos: int, drawings: int, corpus: Path | None) -> list[tuple[str, bytes]]:
    """Crops of the real photographs (tests/data's, and --corpus's), generated photographs
    and drawings, and --corpus's own files."""
    sources = photographs(ROOT / "tests" / "data" / "images")
    if corpus is not None:
        sources += photographs(corpus)
    files = crops(sources, photos, 11)
    files += [(f"Generated photo {i:04d}.jpg", photo(7000 + i)) for i in range(photos // 4)]
    files += [(f"Drawing {i:04d}.png", photo(9000 + i, "PNG")) for i in range(drawings)]
    if corpus is not None:
        files += [(p.name[0].upper() + p.name[1:].replace("_", " "), p.read_bytes())
                  for p in sorted(corpus.iterdir())
                  if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif", ".webp", ".svg")]
    return files


def kind(data: bytes) -> str:
    try:
        return hash_bytes(data).format
    except Exception:  # noqa: BLE001 - an original we cannot hash is left out by the caller
        return "?"


# -- hashing a thumbnail, plain and with each correction ----------------------------------


def dhash_int(image: Image.Image) -> int:
    return hex_to_int64(str(imagehash.dhash(image)))


def _blur(sigma: float) -> Callable[[Image.Image, tuple[int, int]], Image.Image]:
    return lambda img, size: img.filter(ImageFilter.GaussianBlur(sigma))


def _upscale(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    return img.resize(size, Image.Resampling.BICUBIC) if size[0] > img.width else img


def _two_steps(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    return img.resize((36, 32), Image.Resampling.LANCZOS)


def _brighter(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The grey image dhash reduces, made with +0.5 level before Pillow's rounding (its own
    L formula, ITU-R 601-2 in 16-bit fixed point): undoes ImageMagick's darkening."""
    rgb = np.asarray(img, dtype=np.int64)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000 + 0x8000)
    return Image.fromarray(np.clip(grey >> 16, 0, 255).astype(np.uint8), "L")


CORRECTIONS: dict[str, Callable[[Image.Image, tuple[int, int]], Image.Image] | None] = {
    "none (as today)": None,
    "Gaussian blur 0.4 px": _blur(0.4),
    "Gaussian blur 0.8 px": _blur(0.8),
    "scaled back up to the original's size": _upscale,
    "reduced via 36x32": _two_steps,
    "+0.5 grey level (ImageMagick's darkening undone)": _brighter,
}


def thumb_hashes(data: bytes, original_size: tuple[int, int],
                 thumbnail: bool = True) -> dict[str, int]:
    """The thumbnail's hash under each correction (the first is what the workers store); an
    original served in place of a thumbnail (no wider than asked) is hashed as it is."""
    plain = hash_bytes(data).int64
    if not thumbnail:
        return dict.fromkeys(CORRECTIONS, plain)
    image, info = prepare(data)
    out = {}
    for name, fix in CORRECTIONS.items():
        out[name] = plain if fix is None else dhash_int(fix(image.convert("RGB"), original_size))
    return out


def distance(a: int, b: int) -> int:
    return ((a ^ b) & MASK).bit_count()


def shares(distances: list[int]) -> tuple[float, float]:
    n = max(1, len(distances))
    return sum(d <= RADIUS for d in distances) / n, sum(d == 0 for d in distances) / n


# -- the crawl-time model -----------------------------------------------------------------


def per_file_seconds(latency: float, size: float) -> float:
    """One connection's time per file: the request's latency plus the bytes at its half of
    the 25 Mbit/s (12.5 Mbit/s)."""
    return latency + 8 * size / (MBITS * 1e6 / SLOTS)


def crawl_hours(latency: float, size: float) -> float:
    return 1e6 * per_file_seconds(latency, size) / SLOTS / 3600


# -- the real wiki --------------------------------------------------------------------------


def thumbnail_infos(wiki: MediaWiki, names: list[str], width: int) -> dict[str, dict]:
    """name -> imageinfo for `width`: url, thumburl (absent when no wider), width, height."""
    infos = {}
    for i in range(0, len(names), 50):
        answer = wiki.call(action="query", prop="imageinfo", iiprop="url|size|mime",
                           iiurlwidth=str(width),
                           titles="|".join("File:" + n for n in names[i:i + 50]))
        for page in answer["query"]["pages"]:
            infos[page["title"].split(":", 1)[1]] = page["imageinfo"][0]
    return infos


def fetch_all(wiki: MediaWiki, files: list[tuple[str, bytes]], width: int,
              ) -> tuple[dict[str, bytes], dict[str, dict], list[float]]:
    session = requests.Session()
    session.trust_env = False
    infos = thumbnail_infos(wiki, [n for n, _ in files], width)
    thumbs, seconds = {}, []
    for name, _ in files:
        info = infos[name]
        started = time.monotonic()
        thumbs[name] = session.get(info.get("thumburl") or info["url"], timeout=120).content
        if info.get("thumburl"):
            seconds.append(time.monotonic() - started)
    return thumbs, infos, seconds


def measure(wiki: MediaWiki, files: list[tuple[str, bytes]], widths: tuple[int, ...],
            latency_ms: float) -> tuple[list[dict], dict[int, dict[str, bytes]]]:
    canonical = {name: hash_bytes(data).int64 for name, data in files}
    kinds = {name: kind(data) for name, data in files}
    rows, kept = [], {}
    for width in widths:
        thumbs, infos, seconds = fetch_all(wiki, files, width)
        kept[width] = thumbs
        per: dict[str, dict[str, list[int]]] = {c: {} for c in CORRECTIONS}
        sizes = []
        for name, _ in files:
            info = infos[name]
            hashes = thumb_hashes(thumbs[name], (info["width"], info["height"]),
                                  thumbnail=bool(info.get("thumburl")))
            sizes.append(len(thumbs[name]))
            for correction, value in hashes.items():
                per[correction].setdefault(kinds[name], []).append(
                    distance(value, canonical[name]))
                per[correction].setdefault("all", []).append(distance(value, canonical[name]))
        plain = per["none (as today)"]
        mean_bytes = statistics.mean(sizes)
        rows.append({
            "width": width, "per": per, "bytes": mean_bytes,
            "render_ms": 1000 * statistics.median(seconds) if seconds else 0.0,
            "mean_d": statistics.mean(plain["all"]),
            "p95_d": sorted(plain["all"])[int(0.95 * (len(plain["all"]) - 1))],
            "r3": shares(plain.get("JPEG", []))[0], "r0": shares(plain.get("JPEG", []))[1],
            "hours": {ms: crawl_hours(ms / 1000, mean_bytes) for ms in (50, latency_ms, 200)},
            "per_file_ms": 1000 * per_file_seconds(latency_ms / 1000, mean_bytes),
        })
    return rows, kept


# -- per cause: MediaWiki's command with one part changed ---------------------------------


def mw_command(src: Path, dst: Path, size: tuple[int, int], src_size: tuple[int, int], *,
               sharpen: bool = True, quality: int = 80, sampling: str | None = "2x2,1x1,1x1",
               hint: bool = True) -> list[str]:
    """BitmapHandler::transformImageMagick's command for a JPEG original (MediaWiki 1.39,
    default settings), as its debug log prints it; `dst`'s suffix picks the output format."""
    w, h = size
    cmd = ["convert", "-quality", str(quality), "-background", "white"]
    if hint:
        cmd += ["-define", f"jpeg:size={w}x{h}"]
    cmd += [str(src), "-thumbnail", f"{w}x{h}!", "+set", "Thumb::URI", "-depth", "8"]
    # $wgSharpenParameter 0x0.4 below $wgSharpenReductionThreshold 0.85 of the size
    if sharpen and (w + h) / (src_size[0] + src_size[1]) < 0.85:
        cmd += ["-sharpen", "0x0.4"]
    cmd += ["-rotate", "-0"]
    if sampling and dst.suffix == ".jpg":
        cmd += ["-sampling-factor", sampling]
    return cmd + [str(dst)]


CAUSES: dict[str, dict] = {
    "MediaWiki's command (reproduced)": {},
    "no sharpening (-sharpen 0x0.4 left out)": {"sharpen": False},
    "4:4:4 chroma (no subsampling)": {"sampling": "1x1,1x1,1x1"},
    "JPEG quality 95 (MediaWiki: 80)": {"quality": 95},
    "no JPEG: lossless PNG output": {"png": True},
    "no JPEG, no sharpening: ImageMagick's resize only": {"png": True, "sharpen": False},
    "... and no DCT-scaled decode (jpeg:size)": {"png": True, "sharpen": False, "hint": False},
    "Pillow's Lanczos resize, lossless (the query's filter)": {"pillow": True},
    "Pillow's Lanczos resize, then JPEG q80 4:2:0": {"pillow": True, "jpeg": True},
}


def render(src: Path, out: Path, size: tuple[int, int], src_size: tuple[int, int],
           opts: dict) -> bytes:
    if opts.get("pillow"):
        with Image.open(src) as img:
            small = img.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=80) if opts.get("jpeg") else small.save(buf, "PNG")
        return buf.getvalue()
    dst = out.with_suffix(".png" if opts.get("png") else ".jpg")
    args = {k: v for k, v in opts.items() if k in ("sharpen", "quality", "sampling", "hint")}
    subprocess.run(mw_command(src, dst, size, src_size, **args), check=True,
                   env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return dst.read_bytes()


def grey_grid(img: Image.Image) -> np.ndarray:
    """The 9x8 grey levels dhash compares, before rounding (Pillow's L, Lanczos, in float)."""
    grey = img.convert("RGB").convert("L").convert("F")
    return np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.float64)


def causes(files: list[tuple[str, bytes]], kept: dict[int, dict[str, bytes]],
           widths: tuple[int, ...], tmp: Path, jobs: int = 2,
           limit: int | None = None) -> tuple[list[dict], dict]:
    jpegs = [(n, d) for n, d in files if d[:3] == b"\xff\xd8\xff" and kind(d) == "JPEG"]
    jpegs = jpegs[::max(1, len(jpegs) // limit)][:limit] if limit else jpegs
    canonical = {n: hash_bytes(d).int64 for n, d in jpegs}
    sources = {}
    for i, (name, data) in enumerate(jpegs):
        path = tmp / f"src{i:04d}.jpg"
        path.write_bytes(data)
        with Image.open(path) as img:
            sources[name] = (path, img.size)
    identical = {}
    rows = []

    grids = {n: grey_grid(Image.open(io.BytesIO(d))) for n, d in jpegs}

    def one(width: int, name: str, label: str, opts: dict,
            ) -> tuple[str, int, bool | None, float | None]:
        path, size = sources[name]
        if width >= size[0]:
            return label, 0, None, None
        thumb_size = (width, max(1, round(size[1] * width / size[0])))
        data = render(path, tmp / f"{path.stem}-{width}-{abs(hash(label))}", thumb_size, size,
                      opts)
        same = None
        if not opts and name in kept.get(width, {}):  # the reproduction against the wiki's own
            with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(kept[width][name])) as b:
                same = a.size == b.size and ImageChops.difference(
                    a.convert("RGB"), b.convert("RGB")).getbbox() is None
        bias = float((grey_grid(Image.open(io.BytesIO(data))) - grids[name]).mean())
        return label, distance(hash_bytes(data).int64, canonical[name]), same, bias

    with ThreadPoolExecutor(jobs) as pool:
        for width in widths:
            futures = [pool.submit(one, width, n, label, opts)
                       for label, opts in CAUSES.items() for n, _ in jpegs]
            found: dict[str, list[int]] = {label: [] for label in CAUSES}
            biases: dict[str, list[float]] = {label: [] for label in CAUSES}
            checks = []
            for future in futures:
                label, d, same, bias = future.result()
                found[label].append(d)
                if bias is not None:
                    biases[label].append(bias)
                if same is not None:
                    checks.append(same)
            identical[width] = (sum(checks), len(checks))
            rows.append({"width": width, "found": found, "bias": biases})
    return rows, identical


# -- the report -----------------------------------------------------------------------------


def choose(rows: list[dict], latency_ms: float) -> tuple[int, bool]:
    """The narrowest Wikimedia step width meeting the recall target within the crawl-time
    budget, else the one of best recall within it; and whether the target was met."""
    base = next(r for r in rows if r["width"] == BASELINE)["hours"][latency_ms]
    steps = [r for r in rows if r["width"] not in (300, 400)]
    within = [r for r in steps if r["hours"][latency_ms] <= base * (1 + COST_BUDGET)]
    for row in within:
        if row["r3"] >= RECALL_TARGET:
            return row["width"], True
    return max(within, key=lambda r: (r["r3"], -r["width"]))["width"], False


def report(rows: list[dict], cause_rows: list[dict], identical: dict,
           files: list[tuple[str, bytes]], latency_ms: float) -> str:
    base = next(r for r in rows if r["width"] == BASELINE)
    counts: dict[str, int] = {}
    for k in rows[0]["per"]["none (as today)"]:
        counts[k] = len(rows[0]["per"]["none (as today)"][k])
    formats = [f for f in ("PNG", "SVG", "GIF", "WEBP") if f in counts]
    lines = [
        f"{len(files)} originals ({', '.join(f'{counts[k]} {k}' for k in counts if k != 'all')})"
        f" on MediaWiki 1.39 (ImageMagick thumbnails). Crawl time: 2 connections sharing"
        f" {MBITS:.0f} Mbit/s, per file latency + bytes / {MBITS / SLOTS:.1f} Mbit/s;"
        f" latency {latency_ms:.0f} ms stated (docs/scale.md), 50 and 200 ms beside it.",
        "",
        "| width | JPEG found r=3 | JPEG exact r=0 | " + " | ".join(f"{f} r=3" for f in formats)
        + " | all r=3 | drift mean / p95 | mean bytes | ms per file | h per 1M files"
        " | vs 120 px | vs 120 at 50 ms | vs 120 at 200 ms | render ms (not charged) |",
        "|---" * (12 + len(formats)) + "|",
    ]
    for r in rows:
        plain = r["per"]["none (as today)"]
        rel = {ms: r["hours"][ms] / base["hours"][ms] - 1 for ms in r["hours"]}
        lines.append(
            f"| {r['width']} px | {r['r3']:.1%} | {r['r0']:.1%} | "
            + " | ".join(f"{shares(plain.get(f, []))[0]:.1%}" for f in formats)
            + f" | {shares(plain['all'])[0]:.1%} | {r['mean_d']:.2f} / {r['p95_d']} |"
            f" {r['bytes'] / 1000:.1f} KB | {r['per_file_ms']:.1f} |"
            f" {r['hours'][latency_ms]:.1f} | {rel[latency_ms]:+.1%} | {rel[50]:+.1%} |"
            f" {rel[200]:+.1%} | {r['render_ms']:.0f} |")
    lines += ["", "Per correction of how a thumbnail is hashed (the query, the original's"
              " hash, unchanged): found at r=3 / exact, JPEG originals; then all formats at r=3",
              "", "| correction | " + " | ".join(f"{r['width']} px JPEG" for r in rows)
              + " | " + " | ".join(f"{r['width']} px all" for r in rows) + " |",
              "|---" * (1 + 2 * len(rows)) + "|"]
    for correction in CORRECTIONS:
        cells = []
        for r in rows:
            r3, r0 = shares(r["per"][correction].get("JPEG", []))
            cells.append(f"{r3:.1%} / {r0:.1%}")
        cells += [f"{shares(r['per'][correction]['all'])[0]:.1%}" for r in rows]
        lines.append(f"| {correction} | " + " | ".join(cells) + " |")
    if cause_rows:
        lines += ["", "Per cause (JPEG originals; MediaWiki's ImageMagick command with one part"
                  " changed): found at r=3 / exact r=0 / mean drift in bits / mean"
                  " grey-level offset of the 9x8 grid from the original's",
                  "reproduction pixel-identical to the wiki's own thumbnails: "
                  + ", ".join(f"{w} px {a}/{n}" for w, (a, n) in identical.items()), "",
                  "| thumbnail made by | " + " | ".join(f"{r['width']} px" for r in cause_rows)
                  + " |", "|---" * (1 + len(cause_rows)) + "|"]
        for label in CAUSES:
            cells = []
            for r in cause_rows:
                d, bias = r["found"][label], r["bias"][label]
                r3, r0 = shares(d)
                cells.append(f"{r3:.1%} / {r0:.1%} / {statistics.mean(d):.2f} /"
                             f" {statistics.mean(bias) if bias else 0:+.2f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    chosen, met = choose(rows, latency_ms)
    lines += ["", f"chosen: {chosen} px" + ("" if met else
              f" (best recall within +{COST_BUDGET:.0%} crawl time at {latency_ms:.0f} ms;"
              f" no width reaches {RECALL_TARGET:.0%} within it)")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=300, help="JPEG crops of photographs")
    parser.add_argument("--drawings", type=int, default=40, help="generated PNG pictures")
    parser.add_argument("--corpus", type=Path, help="a folder of more originals")
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS,
                        help="request latency per thumbnail (docs/scale.md: 100 ms)")
    parser.add_argument("--no-causes", action="store_true", help="skip the per-cause table")
    parser.add_argument("--cause-files", type=int, default=120,
                        help="JPEG originals in the per-cause table (9 renders each per width)")
    parser.add_argument("--tiny", action="store_true", help="16 files, 2 widths (CI)")
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"thumbs: {reason}", file=sys.stderr)
        return 1
    widths, cause_widths = WIDTHS, CAUSE_WIDTHS
    if args.tiny:
        args.photos, args.drawings = 12, 1
        widths = cause_widths = (BASELINE, 250)
    files = [(n, d) for n, d in originals(args.photos, args.drawings, args.corpus)
             if kind(d) != "?"]
    with tempfile.TemporaryDirectory(prefix="wikihash-thumbs-") as tmp:
        wiki = MediaWiki(Path(tmp) / "wiki", "thumbwiki", "Thumbnail bench")
        wiki.install()
        with wiki:
            started = time.monotonic()
            for name, data in files:
                wiki.upload(name, data)
            print(f"uploaded {len(files)} files in {time.monotonic() - started:.0f} s",
                  file=sys.stderr)
            rows, kept = measure(wiki, files, widths, args.latency_ms)
        print(f"measured {len(widths)} widths in {time.monotonic() - started:.0f} s",
              file=sys.stderr)
        cause_rows, identical = ([], {}) if args.no_causes else causes(
            files, kept, cause_widths, Path(tmp), limit=args.cause_files)
    print(report(rows, cause_rows, identical, files, args.latency_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
