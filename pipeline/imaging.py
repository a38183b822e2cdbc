"""Bytes of one file to its 64-bit dhash: step "hash" of the flow in docs/architecture.md.

Pure: no network, no files, no settings. The definition followed is "The hash" in the design note:

1. decode with Pillow (PNG, JPEG, GIF, WebP, TIFF, BMP, sniffed from the bytes, not the declared
   mime type); SVG and SVGZ are rendered by cairosvg so that the longest side is 512 px;
   animations use their first frame;
2. apply the EXIF orientation (`ImageOps.exif_transpose`); `width`/`height` are those of the
   oriented image;
3. 16-bit images (I;16, I;16B, I) are scaled to 8 bits by `>> 8` (65535 -> 255), never clipped
   (Pillow's own I;16 -> L conversion clips everything above 255 to white); transparency (RGBA,
   LA, PA, P with a transparent index, L/RGB/I;16 with a tRNS colour) is flattened onto white with
   `Image.alpha_composite`. The black rule: when the white flattening hashes as low-information
   (`is_low_information`) although the alpha channel is not constant, and flattening onto black
   does not, black is used instead (a white logo on a transparent background);
4. `imagehash.dhash(image)`, 8x8: 64 bits, `hex` as imagehash prints it, `int64` the same bits as
   a signed two's-complement integer (the tutorial's `hashes.hash bigint`).

Hostile input is bounded (invariant 7). Every failure is one `ImageRejected` subclass:

- input over `MAX_INPUT_BYTES` or an SVGZ inflating past `MAX_SVG_BYTES` -> `TooLarge`;
- a raster whose header declares more than `MAX_PIXELS` (checked before any pixel is decoded:
  PNG, GIF and JPEG "bombs") -> `TooLarge`;
- empty, truncated or malformed data -> `Corrupt` (Pillow's `LOAD_TRUNCATED_IMAGES` is never
  set here; a caller that sets it globally weakens this check);
- HTML (an error page served in place of an image) -> `Corrupt("not an image: HTML")`;
- PDF, DjVu, audio, video and other known non-pictures -> `Unsupported` naming the kind;
- SVG with a DTD that declares entities (billion laughs, external entities), nesting deeper than
  `MAX_SVG_DEPTH`, or more than `MAX_SVG_NODES` elements once `<use>` references are expanded
  -> `UnsafeSvg`;
- SVG references to anything but `data:` URLs (http:, https:, file:, ftp:, relative paths) are
  never fetched: the SVG is rendered without them, as Wikimedia's own renderer does, so the hash
  matches the thumbnail readers see. Embedded `data:` rasters are held to `MAX_PIXELS` too.

Anything Pillow, cairosvg or the XML parser raises is mapped at `hash_bytes`/`prepare` (the
httpx `map_exceptions` pattern); nothing else escapes. What this module cannot bound is wall time
inside one C call (a pathological SVG path or a progressive JPEG with thousands of scans) and the
memory of the libraries' own work: `pipeline.sandbox` runs a decode in a child process under a
time and memory limit for that.
"""

from __future__ import annotations

import binascii
import io
import re
import urllib.request
import zlib
from dataclasses import dataclass, field
from xml.etree.ElementTree import ParseError

import imagehash
import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import Corrupt, ImageRejected, TooLarge, UnsafeSvg, Unsupported

__all__ = [
    "HashResult",
    "ImageInfo",
    "hash_bytes",
    "hex_to_int64",
    "int64_to_hex",
    "is_low_information",
    "prepare",
]

MAX_INPUT_BYTES = 64 * 1024 * 1024  # bytes; the same as WIKIHASH_MAX_BYTES' default
MAX_PIXELS = 50_000_000  # width x height from the header; ~150 MB as RGB, decoded in well under 5 s
# Bytes of the decoded frame as Pillow stores it (1 byte per pixel for 1/L/P, 2 for I;16, 4 for
# RGB and the rest), from the header, before decoding: the pixel cap measured in memory.
MAX_DECODE_BYTES = 256 * 1024 * 1024
MAX_SVG_BYTES = 32 * 1024 * 1024  # bytes of SVG text, after SVGZ inflation
MAX_SVG_DEPTH = 256  # element nesting; cairosvg recurses once per level
MAX_SVG_NODES = 200_000  # elements, counting each <use> as a copy of what it references
SVG_LONGEST_SIDE = 512  # px of the rendered raster
LOW_INFORMATION_BITS = 4  # a hash within this many bits of all zeros or all ones

# Pillow's format names we decode; MPO is how Pillow names a JPEG with extra pictures.
_PIL_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP")
_FORMAT_NAMES = {"MPO": "JPEG"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

_INT64_MASK = (1 << 64) - 1
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")

# Magic bytes of things that are not pictures we hash, checked before any decoder sees them.
_NOT_PICTURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", "PDF document"),
    (0, b"AT&TFORM", "DjVu document"),
    (0, b"OggS", "Ogg audio/video"),
    (0, b"fLaC", "FLAC audio"),
    (0, b"ID3", "MP3 audio"),
    (0, b"MThd", "MIDI audio"),
    (0, b"\x1a\x45\xdf\xa3", "WebM/Matroska video"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV video"),
    (4, b"ftyp", "MP4/QuickTime/HEIF"),
    (0, b"PK\x03\x04", "ZIP archive"),
    (0, b"8BPS", "Photoshop PSD"),
    (0, b"gimp xcf", "GIMP XCF"),
    (0, b"\x00\x00\x01\x00", "Windows icon"),
)
_RIFF_KINDS = {b"WAVE": "WAV audio", b"AVI ": "AVI video"}
_HTML = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body|title|meta)[\s>]",
                   re.IGNORECASE | re.DOTALL)
_SVG_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?svg[\s>/]")
_MIME_KINDS = (("audio/", "audio"), ("video/", "video"), ("application/pdf", "PDF document"),
               ("image/vnd.djvu", "DjVu document"), ("image/x-djvu", "DjVu document"),
               ("application/ogg", "Ogg audio/video"), ("text/html", "not an image: HTML"))


@dataclass(frozen=True)
class HashResult:
    """The hash of one file and what was decoded to get it."""

    hex: str  # 16 lowercase hex digits, str(imagehash.dhash(img))
    int64: int  # the same 64 bits as a signed two's-complement integer
    format: str  # 'PNG', 'JPEG', 'GIF', 'WEBP', 'TIFF', 'BMP' or 'SVG'
    width: int  # px of the decoded, oriented image (SVG: the rendered raster)
    height: int
    mode: str  # Pillow's mode as decoded, before any conversion (SVG: 'RGBA')
    flattened: str | None  # None (no transparency), 'white' or 'black'
    low_information: bool


@dataclass(frozen=True)
class ImageInfo:
    """What `prepare` learnt about the file besides the image it returns."""

    format: str
    width: int
    height: int
    mode: str
    flattened: str | None
    # The dhash of the returned image when `prepare` had to compute it for the black rule.
    _hash: imagehash.ImageHash | None = field(default=None, repr=False, compare=False)


# -- the int64 encoding ------------------------------------------------------------------------


def hex_to_int64(hex: str) -> int:
    """16 hex digits as the signed 64-bit integer with the same bits ('ff..ff' -> -1)."""
    if not isinstance(hex, str) or not _HEX16.fullmatch(hex):
        raise ValueError(f"not 16 hex digits: {hex!r}")
    value = int(hex, 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def int64_to_hex(value: int) -> str:
    """A signed 64-bit integer as 16 lowercase hex digits (-1 -> 'ffffffffffffffff')."""
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"not a signed 64-bit integer: {value}")
    return f"{value & _INT64_MASK:016x}"


def is_low_information(value: int) -> bool:
    """True when `value` (int64) is within LOW_INFORMATION_BITS bits of all zeros or all ones.

    Flat images and horizontal stripes give 0, an unevenly lit page gives all ones; hashes this
    close to either match thousands of unrelated files, so search should say so.
    """
    ones = (value & _INT64_MASK).bit_count()
    return ones <= LOW_INFORMATION_BITS or ones >= 64 - LOW_INFORMATION_BITS


# -- public entry points -----------------------------------------------------------------------


def hash_bytes(data: bytes, mime: str | None = None) -> HashResult:
    """The dhash of one file's bytes; raises only `ImageRejected` subclasses."""
    image, info = prepare(data, mime)
    try:
        digest = info._hash if info._hash is not None else imagehash.dhash(image)
    except Exception as exc:  # noqa: BLE001 - the boundary: nothing but ImageRejected escapes
        raise _map_exception(exc) from exc
    hex_digits = str(digest)
    value = hex_to_int64(hex_digits)
    return HashResult(
        hex=hex_digits,
        int64=value,
        format=info.format,
        width=info.width,
        height=info.height,
        mode=info.mode,
        flattened=info.flattened,
        low_information=is_low_information(value),
    )


def prepare(data: bytes, mime: str | None = None, *,
            max_side: int | None = None) -> tuple[Image.Image, ImageInfo]:
    """Steps 1-3: the decoded, oriented, flattened image that dhash is applied to, and its info.

    With `max_side`, a larger image is scaled down to fit `max_side` px as soon as it is
    decoded (JPEG: while it is decoded, by Pillow's draft mode), before it is oriented or
    flattened: the query path's bound (`pipeline.variants`). The crawl's canonical hash uses
    the image as decoded (`max_side=None`); an image already within `max_side` is unchanged.
    """
    try:
        return _prepare(data, mime, max_side)
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: nothing but ImageRejected escapes
        raise _map_exception(exc) from exc


def _map_exception(exc: BaseException) -> ImageRejected:
    """The most specific ImageRejected for an error from Pillow, cairosvg or the XML parser."""
    if isinstance(exc, Image.DecompressionBombError | MemoryError):
        return TooLarge(f"too large to decode: {exc}")
    if isinstance(exc, DefusedXmlException):
        return UnsafeSvg(f"unsafe XML: {type(exc).__name__}")
    if isinstance(exc, RecursionError):
        return UnsafeSvg("nesting too deep to render")
    if isinstance(exc, ParseError):
        return Corrupt(f"malformed SVG: {exc}")
    text = str(exc) or type(exc).__name__
    return Corrupt(f"cannot decode: {text[:200]}")


# -- sniffing ----------------------------------------------------------------------------------


def _prepare(data: bytes, mime: str | None,
             max_side: int | None = None) -> tuple[Image.Image, ImageInfo]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Corrupt("not bytes")
    data = bytes(data)
    if not data:
        raise Corrupt("empty file")
    if len(data) > MAX_INPUT_BYTES:
        raise TooLarge(f"{len(data)} bytes is over the {MAX_INPUT_BYTES}-byte cap")
    kind = _not_a_picture(data)
    if kind is not None:
        if kind.startswith("not an image"):
            raise Corrupt(kind)
        raise Unsupported(kind)
    if data[:2] == b"\x1f\x8b":
        return _prepare_svg(_gunzip(data), max_side)
    if _looks_like_svg(data):
        return _prepare_svg(data, max_side)
    return _prepare_raster(data, mime, max_side)


def _not_a_picture(data: bytes) -> str | None:
    """A short name for what `data` is, when its magic bytes say it is not a picture we hash."""
    for offset, magic, kind in _NOT_PICTURES:
        if data[offset:offset + len(magic)] == magic:
            return kind
    if data[:4] == b"RIFF" and data[8:12] in _RIFF_KINDS:
        return _RIFF_KINDS[data[8:12]]
    if data[:3] == b"\xff\xfb" or data[:2] in (b"\xff\xf3", b"\xff\xf2"):
        return "MP3 audio"
    if _HTML.match(data[:4096].lstrip(b"\xef\xbb\xbf")):
        return "not an image: HTML"
    return None


def _looks_like_svg(data: bytes) -> bool:
    head = data[:65536].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<") and _SVG_ROOT.search(head) is not None


def _gunzip(data: bytes) -> bytes:
    """SVGZ: inflate at most MAX_SVG_BYTES, so a gzip bomb costs a TooLarge, not the memory."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        text = inflater.decompress(data, MAX_SVG_BYTES)
    except zlib.error as exc:
        raise Corrupt(f"bad gzip data: {exc}") from None
    if inflater.unconsumed_tail:
        raise TooLarge(f"SVGZ inflates past {MAX_SVG_BYTES} bytes")
    if not _looks_like_svg(text):
        raise Unsupported("gzip data that is not SVG")
    return text


# -- rasters -----------------------------------------------------------------------------------


def _prepare_raster(data: bytes, mime: str | None,
                    max_side: int | None) -> tuple[Image.Image, ImageInfo]:
    try:
        image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except UnidentifiedImageError:
        for prefix, kind in _MIME_KINDS:
            if mime and mime.lower().startswith(prefix):
                raise Unsupported(kind if kind != "audio" and kind != "video" else mime) from None
        raise Corrupt("unrecognised image data") from None
    _check_pixels(image.size, image.mode)
    image_format = _FORMAT_NAMES.get(image.format or "", image.format or "?")
    if max_side is not None and image_format == "JPEG":
        image.draft(image.mode, (max_side, max_side))  # DCT scaling: decode at 1/2..1/8
    image.load()  # the first frame of an animation; raises on truncated data
    mode = image.mode
    if max_side is not None:
        image = _shrink(image, max_side)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: show it as stored, as browsers do
        pass
    flat, flattened, digest = _flatten(image)
    return flat, ImageInfo(image_format, flat.width, flat.height, mode, flattened, digest)


def _check_pixels(size: tuple[int, int], mode: str = "RGB") -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise Corrupt(f"declared size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise TooLarge(f"{width}x{height} is over the {MAX_PIXELS}-pixel cap")
    frame = width * height * _bytes_per_pixel(mode)
    if frame > MAX_DECODE_BYTES:
        raise TooLarge(f"{width}x{height} {mode} takes {frame >> 20} MB decoded, over the"
                       f" {MAX_DECODE_BYTES >> 20} MB cap")


def _bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of Pillow's storage for `mode` (RGB is stored in 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """`image` scaled to fit `max_side` px (a copy), or `image` itself when it already fits.

    Palette and bilevel images are first sampled to twice the size (Pillow only samples those),
    then converted, so the final step averages pixels like every other mode.
    """
    if max(image.size) <= max_side:
        return image
    if image.mode in ("1", "P"):
        scale = 2 * max_side / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            info = dict(image.info)
            image = image.resize(size, Image.Resampling.NEAREST)
            image.info.update(info)  # keep the transparent index for _flatten
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    exif = image.info.get("exif")
    shrunk = image.copy()
    # Pillow's reduce() step has no 16-bit modes; a plain resize has.
    gap = None if image.mode in _SIXTEEN_BIT_MODES else 2.0
    shrunk.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=gap)
    if exif is not None:
        shrunk.info["exif"] = exif  # the orientation, applied next
    return shrunk


def _flatten(
    image: Image.Image,
) -> tuple[Image.Image, str | None, imagehash.ImageHash | None]:
    """Step 3: (image for dhash, 'white'/'black'/None, its dhash when already computed)."""
    alpha: Image.Image | None = None
    if image.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image)
        gray = Image.fromarray((np.clip(pixels, 0, 65535) >> 8).astype(np.uint8), "L")
        key = image.info.get("transparency")
        if isinstance(key, int):
            alpha = Image.fromarray(np.where(pixels == key, 0, 255).astype(np.uint8), "L")
        if alpha is None:
            return gray, None, None
        rgba = gray.convert("RGBA")
        rgba.putalpha(alpha)
    elif image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
    else:
        return image, None, None

    low, high = alpha.getextrema()
    if low == 255:  # an alpha channel, but nothing is transparent
        return rgba.convert("RGB"), None, None
    on_white = _composite(rgba, (255, 255, 255, 255))
    white_hash = imagehash.dhash(on_white)
    if low != high and is_low_information(hex_to_int64(str(white_hash))):
        on_black = _composite(rgba, (0, 0, 0, 255))
        black_hash = imagehash.dhash(on_black)
        if not is_low_information(hex_to_int64(str(black_hash))):
            return on_black, "black", black_hash
    return on_white, "white", white_hash


def _composite(rgba: Image.Image, colour: tuple[int, int, int, int]) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", rgba.size, colour), rgba).convert("RGB")


# -- SVG ---------------------------------------------------------------------------------------


def _prepare_svg(data: bytes, max_side: int | None = None) -> tuple[Image.Image, ImageInfo]:
    if len(data) > MAX_SVG_BYTES:
        raise TooLarge(f"SVG of {len(data)} bytes is over the {MAX_SVG_BYTES}-byte cap")
    _check_svg_tree(data)
    # Imported here: cairocffi loads libcairo, which raster-only callers never need.
    from cairosvg.helpers import node_format, size
    from cairosvg.parser import Tree
    from cairosvg.surface import PNGSurface

    tree = Tree(bytestring=data, unsafe=False, url_fetcher=_data_url_only)
    width, height = _intrinsic_size(tree, node_format, size)
    if width >= height:
        out_w, out_h = SVG_LONGEST_SIDE, max(1, round(SVG_LONGEST_SIDE * height / width))
    else:
        out_w, out_h = max(1, round(SVG_LONGEST_SIDE * width / height)), SVG_LONGEST_SIDE
    output = io.BytesIO()
    surface = PNGSurface(tree, output, 96, output_width=out_w, output_height=out_h)
    surface.finish()
    rendered = Image.open(io.BytesIO(output.getvalue()), formats=["PNG"])
    rendered.load()
    if max_side is not None:
        rendered = _shrink(rendered, max_side)
    flat, flattened, digest = _flatten(rendered)
    return flat, ImageInfo("SVG", flat.width, flat.height, rendered.mode, flattened, digest)


def _intrinsic_size(tree, node_format, size) -> tuple[float, float]:
    """The SVG's own width and height in px (96 dpi), as cairosvg would size it unscaled."""

    class _Units:  # the few attributes cairosvg's unit conversion reads from a surface
        dpi = 96
        context_width = context_height = None
        font_size = 16.0

    units = _Units()
    units.font_size = size(units, "12pt")
    width, height, _ = node_format(units, tree)
    if not (width and height) or width < 0 or height < 0:
        raise Corrupt("SVG size is undefined (no usable width, height or viewBox)")
    if not (width < float("inf") and height < float("inf")):
        raise Corrupt("SVG size is not finite")
    return width, height


def _check_svg_tree(data: bytes) -> None:
    """Reject entity declarations, external entities, deep nesting and <use> amplification."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True,
                                 forbid_external=True)
    except DefusedXmlException as exc:
        raise UnsafeSvg(f"unsafe XML: {type(exc).__name__}") from None
    except ParseError as exc:
        raise Corrupt(f"malformed SVG: {exc}") from None
    if not _local_name(root.tag) == "svg":
        raise Corrupt(f"XML whose root is <{_local_name(root.tag)}>, not <svg>")

    by_id: dict[str, object] = {}
    children: dict[int, list] = {}
    stack = [(root, 1)]
    count = 0
    while stack:
        element, depth = stack.pop()
        count += 1
        if depth > MAX_SVG_DEPTH:
            raise UnsafeSvg(f"elements nested deeper than {MAX_SVG_DEPTH}")
        if count > MAX_SVG_NODES:
            raise UnsafeSvg(f"more than {MAX_SVG_NODES} elements")
        ident = element.get("id")
        if ident:
            by_id.setdefault(ident, element)
        kids = list(element)
        children[id(element)] = kids
        stack.extend((kid, depth + 1) for kid in kids)

    # Each <use> draws a copy of its target: ten <use> of ten <use> of ... is the SVG form of the
    # billion laughs. Count the expanded tree, memoised, giving up past MAX_SVG_NODES.
    expanded: dict[int, int] = {}

    def weight(element, chain: int) -> int:
        key = id(element)
        if key in expanded:
            return expanded[key]
        if chain > MAX_SVG_DEPTH:
            raise UnsafeSvg(f"<use> references nested deeper than {MAX_SVG_DEPTH}")
        expanded[key] = MAX_SVG_NODES + 1  # a reference cycle counts as too many
        total = 1
        for kid in children.get(key, ()):
            total += weight(kid, chain + 1)
            if total > MAX_SVG_NODES:
                break
        if _local_name(element.tag) == "use" and total <= MAX_SVG_NODES:
            href = element.get("href") or element.get("{http://www.w3.org/1999/xlink}href") or ""
            target = by_id.get(href[1:]) if href.startswith("#") else None
            if target is not None:
                total += weight(target, chain + 1)
        expanded[key] = total
        return total

    if weight(root, 1) > MAX_SVG_NODES:
        raise UnsafeSvg(f"more than {MAX_SVG_NODES} elements once <use> references are expanded")


def _local_name(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


_EMPTY_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'


def _data_url_only(url: str, resource_type: str) -> bytes:
    """cairosvg's url_fetcher: `data:` URLs only, size-capped; anything else renders as nothing.

    Never touches the network or the filesystem, whatever the scheme (http:, file:, relative).
    """
    if not url.startswith("data:"):
        return b"" if resource_type == "text/css" else _EMPTY_SVG
    if len(url) > MAX_SVG_BYTES:
        raise TooLarge("data: URL over the SVG byte cap")
    try:
        with urllib.request.urlopen(url) as response:  # noqa: S310 - data: only, checked above
            payload = response.read(MAX_SVG_BYTES + 1)
    except (ValueError, OSError, binascii.Error) as exc:
        raise Corrupt(f"bad data: URL in SVG: {exc}") from None
    if len(payload) > MAX_SVG_BYTES:
        raise TooLarge("data: URL over the SVG byte cap")
    if resource_type.startswith("image/") and not _looks_like_svg(payload):
        try:
            with Image.open(io.BytesIO(payload)) as embedded:
                _check_pixels(embedded.size)
        except ImageRejected:
            raise
        except Exception:  # noqa: BLE001 - let cairosvg report an undecodable embedded image
            pass
    return payload
