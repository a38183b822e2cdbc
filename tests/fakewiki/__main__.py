"""Serve a fake wiki on 127.0.0.1 until interrupted: `python -m tests.fakewiki --enwiki N`.

Prints one line, `api <url> shared <url>`, once both servers answer, for a benchmark or a
person to point `WIKIHASH_API_URL` at."""

from __future__ import annotations

import argparse
import sys
import threading

from .enwiki import EnwikiShape, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakewiki", description=__doc__)
    parser.add_argument("--enwiki", type=int, required=True, metavar="N",
                        help="serve an enwiki-shaped wiki of N articles (docs/scale.md)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with serve(EnwikiShape(args.enwiki, args.seed)) as (shared, server):
        print(f"api {server.api_url} shared {shared.api_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
