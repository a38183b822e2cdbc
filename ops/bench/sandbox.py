"""Sandbox benchmark: CPU per limited decode, main's fork per file against the long-lived decoder.

Decodes the scale benchmark's files (`tests.fakewiki.enwiki.file_bytes`: ~100 px JPEG and PNG,
flag SVGs, Ogg stubs; the mix of `--mix`) through

- `fork`: a fork per decode with the limits set in the child, as pipeline/sandbox.py did up to
  22b53d3 (kept here, `fork_per_file`, as the reference),
- `decoder`: `pipeline.sandbox.run`, the long-lived decoder process of pipeline/decoder.py,

each in a fresh process of two kinds, in the same run: a plain Python process
(`python ops/bench/sandbox.py --child`) and a pool process of a real Celery prefork worker
(the project's app, `-c 1`, one task per pool process, a task that runs the same loop). Neither
process decodes anything itself before, as neither does in the crawl or the web server. CPU is
`getrusage` of the process itself and of its children once reaped (the decoder is ended and
reaped at the end of the loop, `sandbox.close()`), in CPU seconds per 1,000 files.

Usage: python ops/bench/sandbox.py [--files 1000] [--mix jpeg:87,png:10,svg:2,ogg:1] [--json]
       python ops/bench/sandbox.py --tiny   (CI size: 40 files)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import random
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine_line, redis_server

from pipeline import imaging, sandbox  # noqa: E402 - after common, which puts ROOT on sys.path
from pipeline.errors import Corrupt, ImageRejected, TooLarge  # noqa: E402

MODES = ("fork", "decoder")
DEFAULT_MIX = "jpeg:87,png:10,svg:2,ogg:1"  # per 100 files; the crawled window's rough shares


# -- main's sandbox, one fork per decode (pipeline/sandbox.py at 22b53d3, without its slots) -----

def fork_per_file(func, *args, seconds: float = sandbox.DECODE_SECONDS,
                  memory: int = sandbox.DECODE_MEMORY):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_fd)
            with open("/proc/self/statm") as statm:
                size = int(statm.read().split()[0]) * resource.getpagesize()
            _lower(resource.RLIMIT_AS, size + memory)
            cpu = max(1, int(seconds + 0.999))
            _lower(resource.RLIMIT_CPU, cpu, cpu + 1)
            try:
                outcome = ("ok", func(*args))
            except ImageRejected as exc:
                outcome = ("error", exc)
            except MemoryError:
                outcome = ("error", TooLarge("decoding ran out of memory"))
            except Exception as exc:  # noqa: BLE001 - as main's child did
                outcome = ("error", Corrupt(f"cannot decode: {type(exc).__name__}"))
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(pickle.dumps(outcome))
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + 2 * seconds + 2
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TooLarge("decoding took longer than the limit")
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "error":
        raise value
    return value


def _lower(kind: int, soft: int, hard: int | None = None) -> None:
    _, current = resource.getrlimit(kind)
    hard = soft if hard is None else hard
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


# -- the measured loop ----------------------------------------------------------------------------

def corpus(files: int, mix: str) -> list[bytes]:
    from tests.fakewiki.enwiki import file_bytes

    kinds = []
    for part in mix.split(","):
        kind, share = part.split(":")
        kinds += [kind] * int(share)
    random.Random(11).shuffle(kinds)  # the kinds spread through every 100 files
    return [file_bytes(kinds[i % len(kinds)], i, 11)[0] for i in range(files)]


def measure(mode: str, files: int, mix: str) -> dict:
    """Decode `files` files through `mode` in this process; CPU and wall per 1,000 files."""
    data = corpus(files, mix)
    decode = fork_per_file if mode == "fork" else sandbox.run
    before = (resource.getrusage(resource.RUSAGE_SELF),
              resource.getrusage(resource.RUSAGE_CHILDREN))
    started = time.monotonic()
    outcomes: dict[str, int] = {}
    for item in data:
        try:
            decode(imaging.hash_bytes, item)
            outcome = "hashed"
        except ImageRejected as exc:
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    sandbox.close()  # end and reap the decoder: its CPU is then the children's
    wall = time.monotonic() - started
    after = (resource.getrusage(resource.RUSAGE_SELF),
             resource.getrusage(resource.RUSAGE_CHILDREN))
    own, children = ((b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) * 1000 / files
                     for a, b in zip(before, after, strict=True))
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {"mode": mode, "files": files, "own_cpu_s": round(own, 3),
            "children_cpu_s": round(children, 3), "cpu_s": round(own + children, 3),
            "wall_s": round(wall * 1000 / files, 2), "rss_mb": round(rss / 1024, 1),
            "outcomes": outcomes, "load": round(os.getloadavg()[0], 1)}


# -- the two kinds of process ------------------------------------------------------------------

def in_plain_process(mode: str, files: int, mix: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--files", str(files),
                           "--mix", mix], capture_output=True, text=True, cwd=ROOT, check=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def in_celery_pool(modes: list[str], files: int, mix: str) -> list[dict]:
    """Each mode in a task of its own, in a fresh pool process of one real prefork worker."""
    with redis_server() as broker, tempfile.TemporaryDirectory(prefix="sandbox_bench_") as tmp:
        out = Path(tmp) / "results.jsonl"
        env = dict(os.environ, PYTHONPATH=str(ROOT), WIKIHASH_BROKER_URL=broker)
        worker = subprocess.Popen([sys.executable, __file__, "--worker"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        try:
            app = _app(broker)
            for mode in modes:
                app.send_task("bench.sandbox", args=[mode, files, mix, str(out)], queue="hash")
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                if out.exists() and len(out.read_text().splitlines()) == len(modes):
                    break
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited: {worker.stderr.read()[-2000:]}")
                time.sleep(0.5)
            else:
                raise RuntimeError("the worker's tasks did not finish in an hour")
            return [json.loads(line) for line in out.read_text().splitlines()]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def _app(broker: str):
    from pipeline import celeryapp, config

    app = celeryapp.create_app(config.load({"WIKIHASH_BROKER_URL": broker}), worker=True)
    app.conf.task_routes = {**app.conf.task_routes, "bench.sandbox": {"queue": "hash"}}
    app.conf.worker_max_tasks_per_child = 1  # each measurement in a fresh pool process
    app.conf.worker_child_address_space = 3072 * 1024 * 1024  # as `wikihash worker`

    @app.task(name="bench.sandbox")
    def bench_task(mode: str, files: int, mix: str, out: str) -> None:
        result = measure(mode, files, mix)
        with open(out, "a") as fh:
            fh.write(json.dumps(result) + "\n")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--mix", default=DEFAULT_MIX, help="kind:share,... per 100 files")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tiny", action="store_true", help="CI size: 40 files")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.files = 40
    if args.child:
        print(json.dumps(measure(args.child, args.files, args.mix)))
        return 0
    if args.worker:
        app = _app(os.environ["WIKIHASH_BROKER_URL"])
        app.worker_main(["worker", "-Q", "hash", "-c", "1", "--pool", "prefork",
                         "--loglevel", "WARNING", "--hostname", f"bench-{os.getpid()}@%h"])
        return 0
    modes = args.modes.split(",")
    load_before = os.getloadavg()[0]
    rows = [dict(measure_in="plain process", **in_plain_process(m, args.files, args.mix))
            for m in modes]
    rows += [dict(measure_in="Celery pool process", **r)
             for r in in_celery_pool(modes, args.files, args.mix)]
    result = {"files": args.files, "mix": args.mix, "machine": machine_line(),
              "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1),
              "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"# sandbox: {args.files} files ({args.mix}); {result['machine']}; load "
          f"{result['load_before']} -> {result['load_after']}")
    print("| process | mode | CPU s / 1,000 files (own + children) | wall s / 1,000 | RSS MB |"
          " outcomes |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for row in rows:
        print(f"| {row['measure_in']} | {row['mode']} | {row['cpu_s']:.2f} ({row['own_cpu_s']:.2f}"
              f" + {row['children_cpu_s']:.2f}) | {row['wall_s']:.1f} | {row['rss_mb']} |"
              f" {row['outcomes']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
