"""The query path and every decode under bounds: the bombs of issue 18, generated here.

Memory is measured in a child process whose address space is capped (`RLIMIT_AS`), as in
test_hostile.py; time by the wall clock around a decode whose limit is given small on purpose.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import bombs
import pytest
from PIL import Image

from pipeline import imaging, sandbox, variants
from pipeline.errors import Corrupt, TooLarge

ROOT = Path(__file__).resolve().parent.parent
QUERY_MEMORY = 600 * 1024 * 1024  # bytes of address space for a whole query-path process

CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from pipeline import variants
data = open(sys.argv[1], "rb").read()
start = time.process_time()
canonical, probes = variants.query_variants(data)
print(json.dumps({{"hash": canonical.hex, "probes": len(probes),
                  "cpu_seconds": time.process_time() - start,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


@pytest.mark.parametrize("make", [bombs.gif_screen, bombs.png16], ids=["gif-35-bytes", "png16"])
def test_a_7000_px_query_is_decoded_once_and_scaled_down_early(tmp_path, make):
    """Issue 18 #1: 2.98 GB and 3.2 GB before; now within a 600 MB address space."""
    path = tmp_path / "query"
    path.write_bytes(make())
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CHILD.format(cap=QUERY_MEMORY), str(path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    # CPU seconds, not wall time: a loaded machine stretches the wall clock, not the work done
    # (the whole-image decode this guards against took 15 s of CPU).
    assert outcome["cpu_seconds"] < 5, outcome
    assert outcome["maxrss_kb"] * 1024 < QUERY_MEMORY, outcome


def test_small_queries_keep_the_canonical_hash():
    image = Image.effect_noise((300, 200), 40).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    canonical, probes = variants.query_variants(out.getvalue())
    assert canonical.hex == imaging.hash_bytes(out.getvalue()).hex
    assert probes[0].int64 == canonical.int64


def test_a_large_photo_hashes_near_its_full_size_hash():
    image = Image.radial_gradient("L").resize((2400, 1800)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    canonical, _ = variants.query_variants(out.getvalue())
    full = imaging.hash_bytes(out.getvalue())
    assert (canonical.int64 ^ full.int64).bit_count() <= 4
    assert canonical.width <= variants.CANONICAL_SIDE  # decoded scaled down, not at 2400 px


def _timed(func, *args, **kwargs):
    started = time.monotonic()
    with pytest.raises(TooLarge) as caught:
        func(*args, **kwargs)
    return time.monotonic() - started, caught.value.reason


def test_a_progressive_jpeg_with_thousands_of_scans_is_stopped_with_a_reason():
    """Issue 18 #2: 44.6 s before, no limit in the CLI or the web."""
    elapsed, reason = _timed(sandbox.hash_bytes, bombs.progressive_jpeg(2000, 5000), seconds=2)
    assert "longer than 2 s" in reason
    assert elapsed < 8


def test_a_huge_svg_path_is_stopped_with_a_reason():
    """Issue 18 #2: 91 s and 820 MB before."""
    elapsed, reason = _timed(sandbox.query_variants, bombs.svg_path(), seconds=2)
    assert "longer than 2 s" in reason
    assert elapsed < 8


def test_a_decode_past_its_memory_is_stopped_with_a_reason():
    elapsed, reason = _timed(sandbox.run, bytearray, 2 * 1024**3, memory=128 * 1024 * 1024)
    assert "out of memory (128 MB cap)" in reason


def test_rejections_and_results_come_back_from_the_child():
    with pytest.raises(Corrupt):
        sandbox.hash_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    image = Image.effect_noise((64, 64), 40).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    assert sandbox.hash_bytes(out.getvalue()) == imaging.hash_bytes(out.getvalue())


def test_decodes_at_once_are_limited_and_a_caller_waits_then_gives_up():
    taken = [sandbox._slots.acquire(timeout=5) for _ in range(sandbox.SLOTS)]
    try:
        assert all(taken)
        started = time.monotonic()
        with pytest.raises(sandbox.Busy):
            sandbox.run(len, b"x", queue_wait=0.3)
        assert 0.25 < time.monotonic() - started < 3
        release = threading.Timer(0.3, sandbox._slots.release)
        release.start()
        assert sandbox.run(len, b"abc", queue_wait=5) == 3
        release.join()
    finally:
        for _ in range(sandbox.SLOTS - 1):
            sandbox._slots.release()


@pytest.mark.chaos
def test_wikihash_hash_ends_a_cpu_bomb_with_its_reason(tmp_path):
    """The CLI at its default limit (DECODE_SECONDS): a line naming the limit, exit status 1."""
    bomb = tmp_path / "scans.jpg"
    bomb.write_bytes(bombs.progressive_jpeg(4000, 5000))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "hash", "--json", str(bomb)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    record = json.loads(proc.stdout)
    assert record["error"].startswith("toolarge: decoding took longer than")
    assert time.monotonic() - started < 2 * sandbox.DECODE_SECONDS + 10


def _in_pool_child(data: bytes) -> str:
    return sandbox.hash_bytes(data).hex


def test_a_celery_pool_process_can_decode_in_the_sandbox():
    """Celery's prefork children are daemonic: multiprocessing refuses them children."""
    import billiard

    image = Image.effect_noise((64, 64), 40).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    with billiard.Pool(1) as pool:
        assert pool.map(_in_pool_child, [out.getvalue()]) == [
            imaging.hash_bytes(out.getvalue()).hex]
