"""pipeline.imaging: bit-for-bit against an independent reference, edge cases, the int64 encoding.

The reference here never calls pipeline.imaging's flattening: it opens the file with Pillow, takes
the first frame, applies ImageOps.exif_transpose, scales 16-bit grey with numpy and pastes any
alpha onto white with `Image.paste(..., mask=alpha)` (pipeline.imaging uses alpha_composite), then
applies imagehash.dhash. SVGs are rendered with cairosvg.svg2png at 512 px on the longest side.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import cairosvg
import imagehash
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageOps

from pipeline.errors import ImageRejected
from pipeline.imaging import (
    HashResult,
    hash_bytes,
    hex_to_int64,
    int64_to_hex,
    is_low_information,
    prepare,
)

DATA = Path(__file__).resolve().parent / "data"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


# -- the independent reference -------------------------------------------------------------------


def reference_svg(data: bytes) -> Image.Image:
    natural = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data)))
    width, height = natural.size
    if width >= height:
        size = (512, max(1, round(512 * height / width)))
    else:
        size = (max(1, round(512 * width / height)), 512)
    png = cairosvg.svg2png(bytestring=data, output_width=size[0], output_height=size[1])
    return Image.open(io.BytesIO(png))


def reference_flatten(image: Image.Image, background: str = "white") -> Image.Image:
    image.seek(0)
    image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I"):
        pixels = np.asarray(image).astype(np.int64)
        image = Image.fromarray((pixels // 256).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return image
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, background)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def reference_hash(data: bytes, background: str = "white") -> str:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if b"<svg" in data[:4096]:
        image = reference_svg(data)
    else:
        image = Image.open(io.BytesIO(data))
    return str(imagehash.dhash(reference_flatten(image, background)))


def _check_against_reference(path: Path) -> HashResult:
    data = path.read_bytes()
    result = hash_bytes(data)
    expected = reference_hash(data, "black" if result.flattened == "black" else "white")
    assert result.hex == expected, path.name
    assert result.int64 == hex_to_int64(expected)
    assert result.low_information == is_low_information(result.int64)
    return result


# -- bit-for-bit over real files -----------------------------------------------------------------


def _manifest(root: Path) -> list[dict[str, str]]:
    with open(root / "MANIFEST.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.parametrize("row", _manifest(DATA), ids=lambda row: row["file"])
def test_shipped_subset_matches_reference(row: dict[str, str]) -> None:
    result = _check_against_reference(DATA / "images" / row["file"])
    assert result.format == row["format"]


def test_shipped_subset_licences_recorded() -> None:
    rows = _manifest(DATA)
    assert {row["file"] for row in rows} == {p.name for p in (DATA / "images").iterdir()}
    assert all(row["licence"] for row in rows)


def test_shipped_subset_covers_every_kind_of_the_corpus(corpus: Path) -> None:
    """One file at least of each kind the corpus was drawn from, so the reference check above
    covers photos, greyscale, alpha, animation and every kind of SVG."""
    kinds = {row["kind"] for row in _manifest(corpus)}
    assert kinds == {"animated-gif", "photo", "photo-gray", "png-alpha", "raster-art",
                     "raster-gray", "svg-art", "svg-clipart", "svg-emoji", "svg-flag",
                     "svg-icon"}


# -- the int64 encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_digits", "value"),
    [
        ("ffffffffffffffff", -1),
        ("8000000000000000", INT64_MIN),
        ("7fffffffffffffff", INT64_MAX),
        ("0000000000000000", 0),
        ("0000000000000001", 1),
    ],
)
def test_int64_encoding(hex_digits: str, value: int) -> None:
    assert hex_to_int64(hex_digits) == value
    assert int64_to_hex(value) == hex_digits


@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_int64_round_trip(value: int) -> None:
    assert hex_to_int64(int64_to_hex(value)) == value


@pytest.mark.parametrize("bad", ["", "fff", "g" * 16, "0" * 17])
def test_hex_to_int64_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        hex_to_int64(bad)


@pytest.mark.parametrize("bad", [INT64_MAX + 1, INT64_MIN - 1])
def test_int64_to_hex_rejects(bad: int) -> None:
    with pytest.raises(ValueError):
        int64_to_hex(bad)


def test_low_information_threshold() -> None:
    assert is_low_information(0) and is_low_information(-1)
    assert is_low_information(0b1111)  # 4 bits from all zeros
    assert not is_low_information(0b11111)  # 5 bits
    assert is_low_information(hex_to_int64("fffffffffffffff0"))  # 4 bits from all ones
    assert not is_low_information(hex_to_int64("ffffffffffffffe0"))


# -- generated edge cases -------------------------------------------------------------------------


def scene(size: tuple[int, int] = (96, 64), mode: str = "RGB") -> Image.Image:
    """An asymmetric picture with a non-trivial dhash."""
    image = Image.new("RGB", size, (30, 90, 160))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w // 8, h // 8, w // 2, h // 2 + h // 4), fill=(250, 220, 40))
    draw.rectangle((w // 2, h // 3, w - 4, h - 6), fill=(200, 30, 30))
    draw.polygon([(0, h), (w // 3, h // 2), (w // 2, h)], fill=(20, 160, 60))
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def dhash_hex(image: Image.Image) -> str:
    return str(imagehash.dhash(image))


def on_background(rgba: Image.Image, colour: str) -> Image.Image:
    canvas = Image.new("RGB", rgba.size, colour)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def with_hole(image: Image.Image) -> Image.Image:
    """`image` as RGBA with a transparent band across the left part."""
    rgba = image.convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, rgba.width // 3, rgba.height), fill=0)
    rgba.putalpha(alpha)
    return rgba


@pytest.mark.parametrize(
    ("fmt", "params", "expected_format"),
    [
        ("PNG", {}, "PNG"),
        ("JPEG", {"quality": 90}, "JPEG"),
        ("JPEG", {"quality": 90, "progressive": True}, "JPEG"),
        ("TIFF", {}, "TIFF"),
        ("TIFF", {"compression": "tiff_lzw"}, "TIFF"),
        ("BMP", {}, "BMP"),
        ("WEBP", {"quality": 90}, "WEBP"),
        ("WEBP", {"lossless": True}, "WEBP"),
        ("GIF", {}, "GIF"),
    ],
)
def test_opaque_formats(fmt: str, params: dict, expected_format: str) -> None:
    data = encode(scene(), fmt, **params)
    result = hash_bytes(data)
    assert result.format == expected_format
    assert result.hex == dhash_hex(Image.open(io.BytesIO(data)))
    assert (result.width, result.height) == (96, 64)
    assert result.flattened is None
    assert not result.low_information


def test_rgba_flattened_on_white() -> None:
    rgba = with_hole(scene())
    result = hash_bytes(encode(rgba, "PNG"))
    assert result.mode == "RGBA" and result.flattened == "white"
    assert result.hex == dhash_hex(on_background(rgba, "white"))


def test_la_flattened_on_white() -> None:
    la = with_hole(scene()).convert("LA")
    result = hash_bytes(encode(la, "PNG"))
    assert result.mode == "LA" and result.flattened == "white"
    assert result.hex == dhash_hex(on_background(la.convert("RGBA"), "white"))


def test_palette_with_transparent_index() -> None:
    palette = scene().quantize(16)
    pixels = np.asarray(palette).copy()
    pixels[:, :20] = 0  # index 0 becomes the transparent one
    palette = Image.fromarray(pixels, "P")
    palette.putpalette(scene().quantize(16).getpalette())
    data = encode(palette, "PNG", transparency=0)
    result = hash_bytes(data)
    assert result.mode == "P" and result.flattened == "white"
    assert result.hex == dhash_hex(on_background(Image.open(io.BytesIO(data)).convert("RGBA"),
                                                 "white"))


def test_rgb_with_trns_colour() -> None:
    image = scene()
    data = encode(image, "PNG", transparency=(30, 90, 160))  # the background colour
    result = hash_bytes(data)
    assert result.flattened == "white"
    rgba = Image.open(io.BytesIO(data)).convert("RGBA")
    assert rgba.getchannel("A").getextrema() == (0, 255)
    assert result.hex == dhash_hex(on_background(rgba, "white"))


def _sixteen_bit() -> np.ndarray:
    """Values 256..65535 only, so clipping to 8 bits would give a blank white image."""
    base = np.asarray(scene().convert("L")).astype(np.uint32)
    return (base * 255 + 256).astype(np.uint16)


def test_sixteen_bit_grey_scaled_not_clipped() -> None:
    pixels = _sixteen_bit()
    data = encode(Image.fromarray(pixels), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    result = hash_bytes(data)
    assert result.mode == "I;16" and result.flattened is None
    assert result.hex == dhash_hex(Image.fromarray((pixels >> 8).astype(np.uint8)))
    clipped = dhash_hex(Image.open(io.BytesIO(data)).convert("L"))
    assert clipped == "0000000000000000"  # what a naive convert("L") gives
    assert result.hex != clipped and not result.low_information


def test_sixteen_bit_grey_with_transparency() -> None:
    pixels = _sixteen_bit()
    key = int(pixels[0, -1])
    data = encode(Image.fromarray(pixels), "PNG", transparency=key)
    result = hash_bytes(data)
    assert result.flattened == "white"
    grey = np.where(pixels == key, 255, pixels >> 8).astype(np.uint8)
    assert result.hex == dhash_hex(Image.fromarray(grey).convert("RGB"))


def test_cmyk_jpeg() -> None:
    data = encode(scene().convert("CMYK"), "JPEG", quality=95)
    result = hash_bytes(data)
    assert result.mode == "CMYK" and result.format == "JPEG"
    assert result.hex == dhash_hex(Image.open(io.BytesIO(data)).convert("RGB"))
    original = imagehash.dhash(scene())
    assert original - imagehash.hex_to_hash(result.hex) <= 4


def test_exif_orientation_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display by turning 90 degrees clockwise
    data = encode(scene(), "JPEG", quality=95, exif=exif)
    result = hash_bytes(data)
    stored = Image.open(io.BytesIO(data))
    assert (result.width, result.height) == (64, 96)
    assert result.hex == dhash_hex(stored.transpose(Image.Transpose.ROTATE_270))
    assert result.hex != dhash_hex(stored)


def test_animated_gif_first_frame() -> None:
    first, second = scene(), scene().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    result = hash_bytes(data)
    assert result.format == "GIF"
    assert result.hex == dhash_hex(Image.open(io.BytesIO(data)))
    assert result.hex != dhash_hex(second)


def test_animated_webp_first_frame() -> None:
    first, second = scene(), scene().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    data = encode(first, "WEBP", save_all=True, append_images=[second], lossless=True)
    result = hash_bytes(data)
    assert result.hex == dhash_hex(first)


SVG = b"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 200 100">
  <rect width="200" height="100" fill="#1e5aa0"/>
  <circle cx="50" cy="50" r="30" fill="#fadc28"/>
  <rect x="110" y="20" width="70" height="60" fill="#c81e1e"/>
</svg>"""


def test_svg_rendered_at_512() -> None:
    result = hash_bytes(SVG, "image/svg+xml")
    assert (result.format, result.width, result.height) == ("SVG", 512, 256)
    png = cairosvg.svg2png(bytestring=SVG, output_width=512, output_height=256)
    assert result.hex == dhash_hex(Image.open(io.BytesIO(png)).convert("RGB"))
    assert not result.low_information


def test_svgz_same_as_svg() -> None:
    assert hash_bytes(gzip.compress(SVG)) == hash_bytes(SVG)


def test_svg_tall_and_unitless_viewbox_only() -> None:
    tall = SVG.replace(b'width="200" height="100" ', b"").replace(b"0 0 200 100", b"0 0 50 100")
    result = hash_bytes(tall)
    assert (result.width, result.height) == (256, 512)


def test_white_logo_on_transparent_flattened_on_black() -> None:
    logo = Image.new("RGBA", (120, 80), (0, 0, 0, 0))
    draw = ImageDraw.Draw(logo)
    draw.ellipse((10, 10, 60, 70), fill=(255, 255, 255, 255))
    draw.rectangle((70, 30, 110, 50), fill=(255, 255, 255, 255))
    data = encode(logo, "PNG")
    assert dhash_hex(on_background(logo, "white")) == "0000000000000000"
    result = hash_bytes(data)
    assert result.flattened == "black"
    assert result.hex == dhash_hex(on_background(logo, "black"))
    assert not result.low_information


def test_flat_transparent_stripes_stay_on_white() -> None:
    # Low-information on white and on black alike: the black rule does not apply.
    stripes = Image.new("RGBA", (90, 60), (0, 0, 0, 0))
    ImageDraw.Draw(stripes).rectangle((0, 20, 90, 40), fill=(0, 80, 200, 255))
    result = hash_bytes(encode(stripes, "PNG"))
    assert result.flattened == "white" and result.low_information


def test_opaque_alpha_is_not_flattening() -> None:
    result = hash_bytes(encode(scene().convert("RGBA"), "PNG"))
    assert result.flattened is None and result.hex == dhash_hex(scene())


def test_prepare_gives_the_hashed_image() -> None:
    for data in (encode(with_hole(scene()), "PNG"), SVG, encode(scene(), "JPEG")):
        image, info = prepare(data)
        assert dhash_hex(image) == hash_bytes(data).hex
        assert (image.width, image.height) == (info.width, info.height)


def test_declared_mime_does_not_override_bytes() -> None:
    data = encode(scene(), "PNG")
    assert hash_bytes(data, "image/jpeg").format == "PNG"
    assert hash_bytes(data, "audio/ogg").format == "PNG"


# -- nothing but ImageRejected escapes ------------------------------------------------------------

SEEDS = [
    encode(scene((40, 30)), "PNG"),
    encode(with_hole(scene((40, 30))), "PNG"),
    encode(scene((40, 30)), "JPEG"),
    encode(scene((40, 30)), "JPEG", progressive=True),
    encode(scene((40, 30)), "GIF"),
    encode(scene((40, 30)), "WEBP"),
    encode(scene((40, 30)), "TIFF"),
    encode(scene((40, 30)), "BMP"),
    SVG,
    gzip.compress(SVG),
]


def _hash_or_reject(data: bytes, mime: str | None = None) -> None:
    try:
        result = hash_bytes(data, mime)
    except ImageRejected as exc:
        assert exc.reason
    else:
        assert len(result.hex) == 16


MIMES = [None, "image/png", "image/svg+xml", "video/webm"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(MIMES))
def test_random_bytes_only_raise_image_rejected(data: bytes, mime: str | None) -> None:
    _hash_or_reject(data, mime)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8),
    st.one_of(st.none(), st.integers(min_value=0)),
)
def test_mutated_images_only_raise_image_rejected(seed: bytes, edits, cut: int | None) -> None:
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    _hash_or_reject(bytes(data))
