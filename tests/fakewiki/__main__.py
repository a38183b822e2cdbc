"""Serve a fake wiki on 127.0.0.1 until interrupted: `python -m tests.fakewiki --enwiki N`.

Prints one line once it answers, for a benchmark or a person to point `WIKIHASH_API_URL` at:

- `--serve both` (default): `api <url> shared <url>`, api.php and the files of both wikis;
- `--serve api --files-url URL`: the same line, but imageinfo's file URLs name URL;
- `--serve files --port P`: `files <url>`, every file of both repositories and no api.php;
  with `--reuse-port`, several such processes share port P (SO_REUSEPORT) and the kernel
  spreads the connections among them, so that serving files is not one Python process's work.

On SIGTERM or Ctrl-C it prints `tally <json>` (requests, wall and CPU seconds by kind, and the
process's own CPU seconds) and exits: what ops/bench/scale.py adds up.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import threading

from .enwiki import EnwikiShape, files_wiki, serve
from .server import FakeWikiServer


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakewiki", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--enwiki", type=int, required=True, metavar="N",
                        help="serve an enwiki-shaped wiki of N articles (docs/scale.md)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", choices=("both", "api", "files"), default="both")
    parser.add_argument("--files-url", help="with --serve api: where file URLs point")
    parser.add_argument("--port", type=int, default=0, help="with --serve files")
    parser.add_argument("--reuse-port", action="store_true", help="with --serve files")
    args = parser.parse_args(argv)
    shape = EnwikiShape(args.enwiki, args.seed)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    servers: list[FakeWikiServer] = []

    def wait() -> None:
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        tally: dict[str, dict[str, float]] = {}
        for srv in servers:
            for kind, row in srv.tally().items():
                into = tally.setdefault(kind, {"requests": 0, "wall_s": 0.0, "cpu_s": 0.0})
                for key, value in row.items():
                    into[key] += value
        print("tally " + json.dumps({"kinds": tally, "process_cpu_s": _cpu_s()}), flush=True)

    if args.serve == "files":
        with FakeWikiServer(files_wiki(shape), port=args.port, keep_logs=False,
                            reuse_port=args.reuse_port, tcp_nodelay=True) as srv:
            servers.append(srv)
            print(f"files {srv.base_url}", flush=True)
            wait()
        return 0
    files_url = args.files_url if args.serve == "api" else None
    with serve(shape, files_url=files_url, keep_logs=False, tcp_nodelay=True) as (shared, server):
        servers += [shared, server]
        print(f"api {server.api_url} shared {shared.api_url}", flush=True)
        wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
