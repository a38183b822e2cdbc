"""Thumbnail names, sizes and rendering, following MediaWiki's media handlers.

Rasters are never upscaled (the original stands in for a larger thumbnail); SVG renders
to PNG at any width; PDF/DjVu thumbnails are `page1-NNNpx-Name.pdf.jpg`; video stills are
`NNNpx--Name.webm.jpg`; audio and unknown types get a 120x120 file-type icon.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from .model import FileVersion, media_type

ICON_DIR = "/w/resources/assets/file-type-icons/"
ICON_SIZE = 120  # px, MediaWiki's file-type icons are 120x120


@dataclass(frozen=True)
class Thumb:
    """What imageinfo reports for a scaled request."""

    kind: str  # "original" | "thumb" | "icon" | "error"
    name: str = ""  # thumb file name (kind "thumb"), icon file name (kind "icon")
    width: int = 0
    height: int = 0
    error: str = ""


def scale_height(src_w: int, src_h: int, width: int) -> int:
    """File::scaleHeight: round(srcHeight * dstWidth / srcWidth), at least 1."""
    return max(1, round(src_h * width / src_w))


def thumb_for(name: str, version: FileVersion, width: int) -> Thumb:
    kind = media_type(version.mime)
    if kind in ("AUDIO", "UNKNOWN"):
        icon = "fileicon-ogg.png" if kind == "AUDIO" else "fileicon.png"
        return Thumb("icon", icon, ICON_SIZE, ICON_SIZE)
    if not version.width or not version.height:
        return Thumb("error", error="Error creating thumbnail: Invalid thumbnail parameters")
    if width <= 0:
        return Thumb("error", error="Error creating thumbnail: Invalid thumbnail parameters")
    if kind == "DRAWING":
        w = width
        return Thumb("thumb", f"{w}px-{name}.png", w, scale_height(version.width,
                                                                    version.height, w))
    if width >= version.width:
        return Thumb("original", width=version.width, height=version.height)
    height = scale_height(version.width, version.height, width)
    if kind == "OFFICE":
        return Thumb("thumb", f"page1-{width}px-{name}.jpg", width, height)
    if kind == "VIDEO":
        return Thumb("thumb", f"{width}px--{name}.jpg", width, height)
    if version.mime == "image/tiff":
        return Thumb("thumb", f"lossy-page1-{width}px-{name}.jpg", width, height)
    return Thumb("thumb", f"{width}px-{name}", width, height)


THUMB_NAME = re.compile(r"^(?:lossy-)?(?:page1-)?(\d+)px-(-?)(.+)$")


def thumb_mime(thumb_name: str, version: FileVersion) -> str:
    lower = thumb_name.lower()
    if lower.endswith(".png"):
        return "image/png"
    if lower.endswith((".jpg", ".jpeg")):
        return "image/jpeg"
    return version.mime


def render(version: FileVersion, thumb_name: str) -> tuple[bytes, str]:
    """Render a thumbnail named as `thumb_for` names it; raises ValueError for a bad name."""
    m = THUMB_NAME.match(thumb_name)
    if not m:
        raise ValueError(thumb_name)
    width = int(m.group(1))
    mime = thumb_mime(thumb_name, version)
    kind = media_type(version.mime)
    if not version.width or not version.height:
        raise ValueError("no dimensions")
    height = scale_height(version.width, version.height, width)
    from PIL import Image, ImageOps

    if kind == "DRAWING":
        import cairosvg

        return cairosvg.svg2png(bytestring=version.data, output_width=width,
                                output_height=height, unsafe=False), "image/png"
    if kind in ("OFFICE", "VIDEO"):
        image = Image.new("RGB", (width, height), (128, 128, 128))
    else:
        with Image.open(io.BytesIO(version.data)) as source:
            source.seek(0)
            image = ImageOps.exif_transpose(source)
            if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            image = image.resize((width, height))
    fmt = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
           "image/webp": "WEBP"}.get(mime, "PNG")
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue(), mime


def icon_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (ICON_SIZE, ICON_SIZE), (200, 200, 200, 255)).save(out, "PNG")
    return out.getvalue()


def generated_image(seed: int, fmt: str = "PNG") -> bytes:
    """A picture with structure (shapes on a gradient), different for every seed."""
    import random

    from PIL import Image, ImageDraw

    rnd = random.Random(seed)
    img = Image.new("RGB", (rnd.randint(200, 700), rnd.randint(150, 600)))
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for y in range(0, h, 4):
        shade = int(255 * y / h)
        draw.rectangle([0, y, w, y + 4], fill=(shade, rnd.randint(0, 255), 255 - shade))
    for _ in range(rnd.randint(3, 12)):
        x0, y0 = rnd.randint(0, w - 20), rnd.randint(0, h - 20)
        draw.ellipse([x0, y0, x0 + rnd.randint(10, w // 2), y0 + rnd.randint(10, h // 2)],
                     fill=tuple(rnd.randint(0, 255) for _ in range(3)))
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()
