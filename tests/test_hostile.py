"""Hostile input to pipeline.imaging: each case is one typed rejection, in bounded time and memory.

Each case runs `hash_bytes` in a child process whose address space is capped with
`resource.setrlimit(RLIMIT_AS, 500 MB)` (invariant 7: a hostile file costs a recorded failure,
never a dead worker). The child reports the exception, its reason, the seconds spent inside
`hash_bytes` and its peak RSS; the test asserts the type, a reason, that it returned within the
5 s limit (a behaviour: "gives up in time", generous on purpose) and stayed under the memory cap.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image

from pipeline import imaging
from pipeline.errors import Corrupt, TooLarge, UnsafeSvg, Unsupported

ROOT = Path(__file__).resolve().parent.parent
MEMORY_CAP = 500 * 1024 * 1024  # bytes of address space for the child
TIME_LIMIT = 5.0  # seconds inside hash_bytes

CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from pipeline.imaging import hash_bytes
from pipeline.errors import ImageRejected
data = open(sys.argv[1], "rb").read()
start = time.perf_counter()
try:
    result = hash_bytes(data, sys.argv[2] or None)
    outcome = {{"ok": result.hex, "width": result.width, "height": result.height}}
except ImageRejected as exc:
    outcome = {{"error": type(exc).__name__, "reason": exc.reason}}
outcome["seconds"] = time.perf_counter() - start
outcome["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(outcome))
"""


def run_bounded(tmp_path: Path, data: bytes, mime: str = "") -> dict:
    path = tmp_path / "input"
    path.write_bytes(data)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(cap=MEMORY_CAP), str(path), mime],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["seconds"] < TIME_LIMIT, outcome
    assert outcome["maxrss_kb"] * 1024 < MEMORY_CAP, outcome
    return outcome


# -- the cases ------------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 30000) -> bytes:
    """A few KB declaring side x side grey pixels; the IDAT holds the first 10 MB of zeros."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 10_000_000, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND",
                                                                                       b"")


def small(fmt: str, **params) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(out, fmt, **params)
    return out.getvalue()


def gif_bomb() -> bytes:
    """A tiny GIF whose screen and frame descriptors claim 65535 x 65535."""
    data = bytearray(small("GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    frame = data.index(b"\x2c")  # image descriptor: ',' x y w h
    data[frame + 5:frame + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def jpeg_bomb() -> bytes:
    """A small JPEG whose SOF0 claims 65000 x 65000."""
    data = bytearray(small("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def truncated(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(out, fmt)
    data = out.getvalue()
    return data[: len(data) // 2]


def svg(body: str, head: str = "", attrs: str = 'width="100" height="100"') -> bytes:
    return (f'<?xml version="1.0"?>{head}<svg xmlns="http://www.w3.org/2000/svg" '
            f'xmlns:xlink="http://www.w3.org/1999/xlink" {attrs}>{body}</svg>').encode()


BILLION_LAUGHS = svg(
    "<text>&lol9;</text>",
    head='<!DOCTYPE svg [<!ENTITY lol0 "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    + "]>",
)
EXTERNAL_ENTITY = svg("<text>&xxe;</text>",
                      head='<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>')
PARAMETER_ENTITY = svg(
    "", head='<!DOCTYPE svg [<!ENTITY % ext SYSTEM "http://127.0.0.1:9/x"> %ext;]>'
)
DEEP_NESTING = svg("<g>" * 100_000 + "</g>" * 100_000)
USE_AMPLIFICATION = svg(
    '<defs><rect id="u0" width="1" height="1"/>'
    + "".join(
        f'<g id="u{i}">' + f'<use xlink:href="#u{i - 1}"/>' * 10 + "</g>" for i in range(1, 9)
    )
    + '</defs><use xlink:href="#u8"/>'
)
USE_CYCLE = svg('<g id="a"><use xlink:href="#b"/></g><g id="b"><use xlink:href="#a"/></g>')
HUGE_DECLARED = svg('<rect width="50%" height="50%" fill="red"/>',
                    attrs='width="100000000" height="100000000"')
EMBEDDED_BOMB = svg(
    '<image width="10" height="10" href="data:image/png;base64,'
    + __import__("base64").b64encode(png_bomb(12000)).decode() + '"/>'
)

CASES = {
    "empty": (b"", Corrupt, "empty"),
    "png-bomb": (png_bomb(), TooLarge, "pixel"),
    "gif-bomb": (gif_bomb(), TooLarge, "pixel"),
    "jpeg-bomb": (jpeg_bomb(), TooLarge, "pixel"),
    "truncated-png": (truncated("PNG"), Corrupt, ""),
    "truncated-jpeg": (truncated("JPEG"), Corrupt, ""),
    "truncated-gif": (truncated("GIF"), Corrupt, ""),
    "garbage": (os.urandom(4096), Corrupt, "unrecognised"),
    "html": (b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>x</body></html>",
             Corrupt, "not an image: HTML"),
    "html-lowercase": (b"\n<html><body>Error</body></html>", Corrupt, "HTML"),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", Unsupported, "PDF"),
    "djvu": (b"AT&TFORM\x00\x00\x10\x00DJVUINFO", Unsupported, "DjVu"),
    "ogg": (b"OggS\x00\x02" + bytes(100), Unsupported, "Ogg"),
    "webm": (b"\x1a\x45\xdf\xa3" + bytes(100), Unsupported, "video"),
    "wav": (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(100), Unsupported, "audio"),
    "over-byte-cap": (b"\x89PNG\r\n\x1a\n" + bytes(imaging.MAX_INPUT_BYTES), TooLarge, "cap"),
    "svg-billion-laughs": (BILLION_LAUGHS, UnsafeSvg, "Entities"),
    "svg-external-entity": (EXTERNAL_ENTITY, UnsafeSvg, "Entities"),
    "svg-parameter-entity": (PARAMETER_ENTITY, UnsafeSvg, ""),
    "svg-deep-nesting": (DEEP_NESTING, UnsafeSvg, "nested"),
    "svg-use-amplification": (USE_AMPLIFICATION, UnsafeSvg, "<use>"),
    "svg-use-cycle": (USE_CYCLE, UnsafeSvg, "<use>"),
    "svg-embedded-png-bomb": (EMBEDDED_BOMB, TooLarge, "pixel"),
    "svgz-bomb": (gzip.compress(b'<svg xmlns="http://www.w3.org/2000/svg">' + b" " * 40_000_000),
                  TooLarge, "SVGZ"),
    "svg-malformed": (b'<svg xmlns="http://www.w3.org/2000/svg"><rect', Corrupt, "malformed"),
    "svg-no-size": (svg("<rect/>", attrs=""), Corrupt, "size"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_rejected_in_bounds(tmp_path: Path, name: str) -> None:
    data, error, reason = CASES[name]
    outcome = run_bounded(tmp_path, data)
    assert outcome.get("error") == error.__name__, outcome
    assert outcome["reason"] and reason in outcome["reason"], outcome


def test_huge_declared_svg_renders_at_512(tmp_path: Path) -> None:
    outcome = run_bounded(tmp_path, HUGE_DECLARED)
    assert (outcome["width"], outcome["height"]) == (512, 512), outcome


def test_unknown_bytes_with_audio_mime_is_unsupported(tmp_path: Path) -> None:
    outcome = run_bounded(tmp_path, b"\x00\x01 not a known format" * 10, "audio/x-something")
    assert outcome.get("error") == "Unsupported", outcome


# -- remote references are never fetched ----------------------------------------------------------


@pytest.fixture
def listener():
    """A TCP socket on 127.0.0.1 that records whether anything connected to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    connections: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connections
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("attribute", ["href", "xlink:href"])
@pytest.mark.parametrize("scheme", ["http", "file", "relative"])
def test_remote_href_rendered_without_fetching(listener, attribute: str, scheme: str) -> None:
    port, connections = listener
    target = {
        "http": f"http://127.0.0.1:{port}/x.png",
        "file": "file:///etc/passwd",
        "relative": "picture.png",
    }[scheme]
    base = '<rect width="60" height="100" fill="#c81e1e"/><circle cx="70" cy="50" r="20"/>'
    remote = svg(base + f'<image x="0" y="0" width="100" height="100" {attribute}="{target}"/>'
                 + f'<use {attribute}="{target}#frag"/>'
                 + f'<rect width="5" height="5" fill="url({target}#p)"/>')
    plain = svg(base)  # an unresolvable paint server paints nothing
    assert imaging.hash_bytes(remote).hex == imaging.hash_bytes(plain).hex
    assert connections == []


def test_remote_stylesheet_not_fetched(listener) -> None:
    port, connections = listener
    css = f'<?xml-stylesheet href="http://127.0.0.1:{port}/s.css" type="text/css"?>'
    data = svg(f'<style>@import url("http://127.0.0.1:{port}/i.css");</style>'
               '<rect width="50" height="100"/>', head=css)
    imaging.hash_bytes(data)
    assert connections == []
