"""Decompression and CPU bombs, generated (never committed): the query-path bounds' test inputs."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image


def gif_screen(side: int = 7000) -> bytes:
    """A 35-byte GIF whose screen declares side x side pixels around a 1x1 frame."""
    lzw = bytes([2, 2, 0x44, 0x01, 0])  # min code size 2, one sub-block: clear, 0, end
    return (b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
            + b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + lzw + b";")


def png16(side: int = 7000) -> bytes:
    """A 16-bit greyscale PNG of side x side (a gradient), compressed row by row (~400 KB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    parts = []
    row = b"".join(struct.pack(">H", x * 65535 // side) for x in range(side))
    for _ in range(side):
        parts.append(packer.compress(b"\0" + row))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def progressive_jpeg(side: int = 2000, scans: int = 5000) -> bytes:
    """A progressive JPEG whose last scan is repeated `scans` times: each costs a pass over
    every block (4000 px and 5000 scans: ~35 s in Pillow on the shared 2-core machine)."""
    out = io.BytesIO()
    Image.new("L", (side, side), 128).save(out, "JPEG", progressive=True, quality=50)
    data = out.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:last] + data[last:-2] * scans + b"\xff\xd9"


def svg_path(segments: int = 300_000) -> bytes:
    """An SVG of one even-odd filled path of `segments` random lines (~2.6 MB; 200 s in cairo)."""
    rnd = random.Random(1)
    d = "M0 0 " + " ".join(f"L{rnd.randint(0, 1000)} {rnd.randint(0, 1000)}"
                           for _ in range(segments))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="1000">'
            f'<path d="{d}" fill="black" fill-rule="evenodd"/></svg>').encode()
