"""`python -m pipeline` is `wikihash`."""

from pipeline.cli import main

main()
