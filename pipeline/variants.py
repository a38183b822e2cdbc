"""Query variants: more than one dhash probed per search, to find altered copies.

People search with copies found elsewhere: mirrored, framed with a border, slightly cropped.
The stored hash stays the canonical one (`pipeline.imaging`); only the query side changes. Each
variant is the canonical preparation (decode, orient, flatten) followed by one cheap geometric
change and `imagehash.dhash`. Search merges the matches of all variants and keeps, per file, the
best distance. Which variants are worth probing was measured by `ops/bench/search.py`; see
docs/search.md.

- ``original``: the canonical hash, exactly `imaging.hash_bytes` (always first);
- ``mirror``: flipped left-right (mirrored copies);
- ``trimmed``: uniform borders (a frame of one colour) cut off, when there is one;
- ``trimmed-mirror``: both;
- ``uncropped``: the edge rows and columns repeated outwards by `UNCROP` of each side, a guess at
  what a slight crop removed.

The query is decoded once, scaled down to `CANONICAL_SIDE` px as it is decoded
(`imaging.prepare(max_side=...)`), and the canonical hash is taken from that image: for an image
within `CANONICAL_SIDE` it is exactly `imaging.hash_bytes`'s (the tutorial's query depends on
it); for a larger one it is the hash of the scaled-down image. The other variants are made from
a copy scaled down to `QUERY_SIDE`: dhash looks at 9x8 pixels, so a few hundred per side keep
their hashes, and a 7000x7000 query costs what a 2048x2048 one does after decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps

from pipeline import imaging
from pipeline.errors import ImageRejected

__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "Variant", "query_variants", "trim_border"]

VARIANTS = ("original", "mirror", "trimmed", "trimmed-mirror", "uncropped")
DEFAULT_VARIANTS = ("original", "mirror", "trimmed", "trimmed-mirror", "uncropped")

BORDER_TOLERANCE = 24  # 0..255: how far a pixel may stray from the border colour and still be frame
MIN_TRIM = 0.01  # fraction of a side; a thinner "border" is left alone
UNCROP = 0.025  # fraction of each side re-created by repeating the edge pixels
CANONICAL_SIDE = 2048  # px: within it, the query's canonical hash is exactly the crawl's
QUERY_SIDE = 512  # px: the longest side a query is scaled down to before any variant is made


@dataclass(frozen=True)
class Variant:
    """One probe of a query: its name, its dhash as a signed 64-bit integer, and the aspect
    ratio (width / height) of the picture it was made from, which search compares with each
    file's to rank near-ties (a crop of the photo has another shape than the photo)."""

    name: str
    int64: int
    aspect: float | None = None


def query_variants(data: bytes, names: tuple[str, ...] = DEFAULT_VARIANTS) -> tuple[
        imaging.HashResult, list[Variant]]:
    """The canonical hash of `data` and the variants named in `names`, distinct hashes only.

    Decodes `data` once; raises `ImageRejected` exactly when `imaging.hash_bytes` would (and
    `TooLarge` for the same caps).
    """
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants: {', '.join(sorted(unknown))}")
    image, info = imaging.prepare(data, max_side=CANONICAL_SIDE)
    try:
        digest = info._hash if info._hash is not None else imagehash.dhash(image)
        value = imaging.hex_to_int64(str(digest))
        canonical = imaging.HashResult(
            hex=str(digest), int64=value, format=info.format, width=info.width,
            height=info.height, mode=info.mode, flattened=info.flattened,
            low_information=imaging.is_low_information(value))
        aspect = info.width / info.height if info.width and info.height else None
        found = [Variant("original", canonical.int64, aspect)]
        extra = [n for n in names if n != "original"]
        if not extra:
            return canonical, found
        image = image.convert("RGB") if image.mode not in ("RGB", "L") else image
        if max(image.size) > QUERY_SIDE:
            image = image.copy()
            image.thumbnail((QUERY_SIDE, QUERY_SIDE), Image.Resampling.LANCZOS)
        trimmed = trim_border(image)
        for name in extra:
            if name == "mirror":
                probe = ImageOps.mirror(image)
            elif name == "trimmed":
                probe = trimmed
            elif name == "trimmed-mirror":
                probe = ImageOps.mirror(trimmed) if trimmed is not None else None
            else:  # "uncropped"
                probe = _uncrop(image)
            if probe is None:
                continue
            value = imaging.hex_to_int64(str(imagehash.dhash(probe)))
            if all(v.int64 != value for v in found):
                found.append(Variant(name, value, probe.width / probe.height))
    except Exception as exc:  # noqa: BLE001 - the boundary: nothing but ImageRejected escapes
        raise ImageRejected(f"cannot make query variants: {type(exc).__name__}") from exc
    return canonical, found


def trim_border(image: Image.Image) -> Image.Image | None:
    """`image` without a uniform frame, or None when it has none (or is all frame).

    The frame colour is the median of the four corners; a row or column belongs to the frame
    while at least 98% of its pixels are within `BORDER_TOLERANCE` of that colour.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)  # integers throughout
    height, width = pixels.shape[:2]
    if height < 8 or width < 8:
        return None
    corners = np.stack([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    colour = np.sort(corners, axis=0)[1:3].sum(axis=0, dtype=np.int16) // 2  # the median
    near = np.abs(pixels - colour).max(axis=2) <= BORDER_TOLERANCE
    rows = near.sum(axis=1, dtype=np.int32) * 50 >= 49 * width  # at least 98% frame
    cols = near.sum(axis=0, dtype=np.int32) * 50 >= 49 * height
    top = _run(rows)
    bottom = _run(rows[::-1])
    left = _run(cols)
    right = _run(cols[::-1])
    if top + bottom >= height - 4 or left + right >= width - 4:
        return None  # all frame: a flat image
    if max(top, bottom) < MIN_TRIM * height and max(left, right) < MIN_TRIM * width:
        return None
    return image.crop((left, top, width - right, height - bottom))


def _run(flags: np.ndarray) -> int:
    """How many leading entries of `flags` are true."""
    false = np.flatnonzero(~flags)
    return int(false[0]) if false.size else int(flags.size)


def _uncrop(image: Image.Image) -> Image.Image:
    """`image` grown by `UNCROP` of each side, the edge pixels repeated outwards."""
    pixels = np.asarray(image)
    pad_y = max(1, round(UNCROP * pixels.shape[0]))
    pad_x = max(1, round(UNCROP * pixels.shape[1]))
    widths = ((pad_y, pad_y), (pad_x, pad_x)) + (((0, 0),) if pixels.ndim == 3 else ())
    return Image.fromarray(np.pad(pixels, widths, mode="edge"))
