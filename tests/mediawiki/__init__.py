"""Real MediaWikis for tests and benchmarks: Debian's package on SQLite, served on 127.0.0.1.

    pair = build_pair(tmp_path)          # a wiki and its shared file repository, filled
    with pair:
        crawl(pair.wiki.api_url)
        assert ledger == truth(pair)     # read from the wikis' own databases

`install_pair` gives the two wikis empty (for benchmarks that upload their own files).
Needs the Debian packages listed in ops/install-deps (mediawiki, php-*, imagemagick, rsvg).
"""

from .content import Pair, build_pair, install_pair, truth
from .wiki import MediaWiki, MediaWikiError, available

__all__ = ["MediaWiki", "MediaWikiError", "Pair", "available", "build_pair", "install_pair",
           "truth"]
